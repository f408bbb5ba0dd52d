//! Every kind of bad input gets its 4xx with a stable code, and the ledger is unchanged after all
//! of them: same head, same chain.

mod common;

use common::{seed_fleet, verify_chain, Server};
use serde_json::{json, Value};

async fn raw_post(server: &Server, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = server
        .http
        .post(format!("{}{}", server.url, path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let before = server.all_events().await;
    let big_text = "x".repeat(70 * 1024);
    let many: Vec<Value> = (0..1_001).map(|_| json!({"type": "app.note"})).collect();

    let bodies: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"events\": [".to_vec(), 400, "malformed_json"),
        ("not an object", b"[1, 2]".to_vec(), 400, "malformed_json"),
        ("invalid UTF-8", b"{\"events\": [{\"type\": \"app.\xff\"}]}".to_vec(), 400, "invalid_utf8"),
        (
            "oversized body",
            format!("{{\"events\": [], \"pad\": \"{}\"}}", "y".repeat(1_100_000)).into_bytes(),
            413,
            "body_too_large",
        ),
        // Far beyond the limit: the client must still read the 413, not a broken pipe.
        (
            "body three times the limit",
            format!("{{\"events\": [], \"pad\": \"{}\"}}", "z".repeat(3_200_000)).into_bytes(),
            413,
            "body_too_large",
        ),
    ];
    for (name, body, status, code) in bodies {
        let (got, error) = raw_post(&server, "/v1/events", body).await;
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "case: {name}: {error}");
    }

    let appends: Vec<(&str, Value, u16, &str)> = vec![
        ("no events field", json!({}), 422, "missing_field"),
        ("events not an array", json!({"events": {}}), 422, "invalid_field"),
        ("empty batch", json!({"events": []}), 422, "empty_batch"),
        ("too many events", json!({"events": many}), 413, "batch_too_large"),
        ("unknown top-level field", json!({"events": [{"type": "app.note"}], "colour": 1}), 422, "unknown_field"),
        ("unknown event field", json!({"events": [{"type": "app.note", "colour": 1}]}), 422, "unknown_field"),
        ("missing type", json!({"events": [{"data": {}}]}), 422, "missing_field"),
        ("type of wrong kind", json!({"events": [{"type": 5}]}), 422, "invalid_field"),
        ("data not an object", json!({"events": [{"type": "app.note", "data": [1]}]}), 422, "data_not_object"),
        (
            "oversized event",
            json!({"events": [{"type": "app.note", "data": {"text": big_text}}]}),
            413,
            "event_too_large",
        ),
        (
            "unsafe number",
            json!({"events": [{"type": "app.note", "data": {"n": 9007199254740993u64}}]}),
            422,
            "unsafe_number",
        ),
        ("invalid stream", json!({"events": [{"type": "app.note", "stream": "no spaces"}]}), 422, "invalid_name"),
        ("stream too long", json!({"events": [{"type": "app.note", "stream": "s".repeat(201)}]}), 422, "invalid_name"),
        (
            "bad expected_version",
            json!({"events": [{"type": "app.note"}], "expected_version": "soon"}),
            422,
            "invalid_field",
        ),
        (
            "unknown domain type",
            json!({"events": [{"type": "release.deleted", "service": "shop", "release": "1.0"}]}),
            422,
            "unknown_type",
        ),
        (
            "unknown domain data field",
            json!({"events": [{"type": "release.created", "service": "shop", "release": "3.0", "data": {"colour": "red"}}]}),
            422,
            "unknown_field",
        ),
        (
            "missing domain field",
            json!({"events": [{"type": "release.created", "service": "shop"}]}),
            422,
            "missing_field",
        ),
        (
            "wrong domain data type",
            json!({"events": [{"type": "host.reported", "host": "web-1", "service": "shop", "env": "prod", "release": "1.0", "data": {"status": "running", "applied_seq": "one"}}]}),
            422,
            "invalid_field",
        ),
        (
            "duplicate id in batch",
            json!({"events": [{"id": "a", "type": "app.note"}, {"id": "a", "type": "app.note"}]}),
            422,
            "duplicate_id_in_batch",
        ),
        (
            "batch failing a rule at its end",
            json!({"events": [{"type": "app.note"}, {"type": "release.created", "service": "shop", "release": "1.0"}]}),
            409,
            "release_exists",
        ),
    ];
    for (name, body, status, code) in appends {
        let (got, error) = server.post("/v1/events", &body).await;
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "case: {name}: {error}");
    }

    let typed: Vec<(&str, &str, Value, u16, &str)> = vec![
        ("rollback without reason", "/v1/rollbacks", json!({"service": "shop", "env": "prod"}), 422, "missing_field"),
        (
            "report from unknown host",
            "/v1/reports",
            json!({"host": "ghost", "service": "shop", "env": "prod", "release": "1.0", "status": "running", "applied_seq": 1}),
            409,
            "unknown_host",
        ),
        (
            "deployment of unknown release",
            "/v1/deployments",
            json!({"service": "shop", "env": "prod", "release": "9.9", "waves": [{"name": "a", "percent": 100}]}),
            409,
            "unknown_release",
        ),
        (
            "deployment without waves",
            "/v1/deployments",
            json!({"service": "shop", "env": "prod", "release": "2.0"}),
            422,
            "missing_field",
        ),
        ("wave of unknown deployment", "/v1/deployments/nope/waves/a/start", json!({}), 409, "unknown_deployment"),
        (
            "target with bad name",
            "/v1/targets",
            json!({"host": "web 1", "service": "shop", "env": "prod"}),
            422,
            "invalid_name",
        ),
    ];
    for (name, path, body, status, code) in typed {
        let (got, error) = server.post(path, &body).await;
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "case: {name}: {error}");
    }

    let head = server.head().await;
    let reads: Vec<(&str, String, u16, &str)> = vec![
        ("from_seq beyond head", format!("/v1/events?from_seq={}", head + 2), 404, "seq_beyond_head"),
        ("from_seq not a number", "/v1/events?from_seq=abc".into(), 400, "invalid_parameter"),
        ("limit too large", "/v1/events?limit=10001".into(), 400, "invalid_parameter"),
        ("unknown parameter", "/v1/events?colour=red".into(), 400, "invalid_parameter"),
        ("bad since", "/v1/events?since=yesterday".into(), 400, "invalid_parameter"),
        ("event beyond head", format!("/v1/events/{}", head + 1), 404, "seq_beyond_head"),
        ("event zero", "/v1/events/0".into(), 400, "invalid_parameter"),
        ("at_time before first event", "/v1/fleet?at_time=2001-01-01T00:00:00Z".into(), 404, "before_first_event"),
        ("at_seq beyond head", format!("/v1/fleet?at_seq={}", head + 1), 404, "seq_beyond_head"),
        ("both at_seq and at_time", "/v1/fleet?at_seq=1&at_time=2030-01-01T00:00:00Z".into(), 400, "invalid_parameter"),
        ("subscribe beyond head", format!("/v1/subscribe?from_seq={}", head + 2), 404, "seq_beyond_head"),
        ("unknown deployment", "/v1/deployments/nope".into(), 404, "deployment_not_found"),
        ("unknown host", "/v1/hosts/ghost".into(), 404, "host_not_found"),
        ("unknown stream", "/v1/streams/none/here".into(), 404, "stream_not_found"),
        ("unknown endpoint", "/v1/nothing".into(), 404, "not_found"),
        ("bad consistency", "/v1/fleet?consistency=eventual".into(), 400, "invalid_parameter"),
        ("control character in a host name", "/v1/hosts/web%00one".into(), 400, "invalid_parameter"),
        ("control character in a watched host", "/v1/watch/web%00one".into(), 400, "invalid_parameter"),
        ("control character in a filter", "/v1/events?host=web%00one".into(), 400, "invalid_parameter"),
        ("invalid UTF-8 in a path", "/v1/hosts/%ff".into(), 400, "invalid_parameter"),
        ("invalid UTF-8 in a seq", "/v1/events/%ff".into(), 400, "invalid_parameter"),
    ];
    for (name, path, status, code) in reads {
        let (got, error) = server.get(&path).await;
        assert_eq!((got, error["error"]["code"].as_str()), (status, Some(code)), "case: {name}: {error}");
    }

    let after = server.all_events().await;
    assert_eq!(after, before, "bad input changed the ledger");
    verify_chain(&after);
    assert!(server.log().find("panicked").is_none(), "the server panicked: {}", server.log());
}
