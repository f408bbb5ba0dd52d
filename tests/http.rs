//! End-to-end tests over HTTP against a real `fleetlog serve` process.

mod common;

use std::time::Duration;

use common::{deploy_fully, deployment_until, seed_fleet, verify_chain, Server};
use fleetlog_api::client::Client;
use serde_json::{json, Value};

/// A release goes out in three waves; each wave moves exactly the hosts it selects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_goes_out_in_three_waves() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    server
        .ok(
            "/v1/deployments",
            &json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0", "waves": [
                {"name": "canary", "group": "canary"},
                {"name": "half", "percent": 50},
                {"name": "rest", "percent": 100},
            ]}),
        )
        .await;
    let expected_on_new = [("canary", 2), ("half", 3), ("rest", 6)];
    for (wave, on_new) in expected_on_new {
        let started = server.ok(&format!("/v1/deployments/d-2/waves/{wave}/start"), &json!({})).await;
        assert_eq!(started["event"]["type"], "wave.started");
        assert_eq!(started["event"]["release"], "2.0", "the ledger fills the deployment's release");
        let desired = server.desired("service=shop&env=prod").await;
        let moved = desired.iter().filter(|(_, release)| *release == "2.0").count();
        assert_eq!(moved, on_new, "after wave {wave}: {desired:?}");
        // Waves start in order: the next one is refused until this one completes.
        if wave != "rest" {
            let (status, error) = server.post("/v1/deployments/d-2/waves/rest/start", &json!({})).await;
            assert_eq!((status, error["error"]["code"].as_str()), (409, Some("wave_out_of_order")));
        }
        server.ok(&format!("/v1/deployments/d-2/waves/{wave}/complete"), &json!({})).await;
    }
    server.ok("/v1/deployments/d-2/complete", &json!({})).await;
    let (_, deployment) = server.get("/v1/deployments/d-2").await;
    assert_eq!(deployment["state"], "completed");
    let selected: Vec<u64> =
        deployment["waves"].as_array().unwrap().iter().map(|w| w["hosts"]["selected"].as_u64().unwrap()).collect();
    assert_eq!(selected, vec![2, 1, 3]);
    verify_chain(&server.all_events().await);
}

/// A rollback is one appended event that changes every host's desired release, and the fleet
/// before it can still be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_one_event_that_moves_every_host() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    deploy_fully(&server, "d-2", "2.0").await;
    let before_rollback = server.head().await;
    let before_time = server.all_events().await.last().unwrap()["time"].as_str().unwrap().to_string();

    let response = server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "reason": "errors"})).await;
    assert_eq!(response["event"]["release"], "1.0", "the target the ledger chose is in the event");
    assert_eq!(server.head().await, before_rollback + 1, "exactly one event");
    for (host, desired) in server.desired("service=shop&env=prod").await {
        assert_eq!(desired, "1.0", "host {host}");
    }
    // The fleet as it was just before the rollback, by seq and by time.
    for query in [format!("at_seq={before_rollback}"), format!("at_time={before_time}")] {
        let view = server.fleet(&format!("service=shop&env=prod&{query}")).await;
        assert_eq!(view["as_of_seq"], before_rollback);
        assert_eq!(view["summary"]["desired"], json!({"2.0": 6}), "{query}");
    }
    let (_, history) = server.get("/v1/events?type=rollback").await;
    assert_eq!(history["events"].as_array().unwrap().len(), 1);
}

/// A retried append with the same id returns the original seq and writes nothing; the same id
/// with another body is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_idempotent() {
    let server = Server::start().await;
    let append = json!({"events": [{"id": "evt-1", "type": "app.deployed", "data": {"n": 1}}]});
    let (status, first) = server.post("/v1/events", &append).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = server.post("/v1/events", &append).await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["first_seq"], first["first_seq"]);
    assert_eq!(again["events"][0]["hash"], first["events"][0]["hash"]);
    assert_eq!(server.head().await, 1);
    let other = json!({"events": [{"id": "evt-1", "type": "app.deployed", "data": {"n": 2}}]});
    let (status, error) = server.post("/v1/events", &other).await;
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("id_conflict")));
}

/// `expected_version` guards a stream: a stale writer gets 409 and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_version_conflicts_write_nothing() {
    let server = Server::start().await;
    let event = |n: u64| json!({"type": "app.note", "stream": "orders/42", "data": {"n": n}});
    let (status, _) = server.post("/v1/events", &json!({"events": [event(0)], "expected_version": "no_stream"})).await;
    assert_eq!(status, 201);
    let (status, _) = server.post("/v1/events", &json!({"events": [event(1), event(2)], "expected_version": 0})).await;
    assert_eq!(status, 201);
    let (status, error) = server.post("/v1/events", &json!({"events": [event(3)], "expected_version": 0})).await;
    assert_eq!((status, error["error"]["code"].as_str()), (409, Some("wrong_expected_version")));
    let (status, stream) = server.get("/v1/streams/orders/42").await;
    assert_eq!(status, 200);
    assert_eq!(stream["last_version"], 2);
    let versions: Vec<u64> =
        stream["events"].as_array().unwrap().iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, vec![0, 1, 2]);
    assert_eq!(server.head().await, 3);
}

/// A subscriber that disconnects and resumes with Last-Event-ID sees every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_resumes_without_gap_or_duplicate() {
    let server = Server::start().await;
    let client = Client::new(&server.url).unwrap();
    let note = |n: u64| json!({"events": [{"type": "app.note", "data": {"n": n}}]});
    for n in 0..5 {
        server.ok("/v1/events", &note(n)).await;
    }
    let mut seen: Vec<u64> = Vec::new();
    let mut stream = client.stream("/v1/subscribe", &[("from_seq", "1".into())], None).await.unwrap();
    while seen.len() < 5 {
        let message = stream.next().await.unwrap().unwrap();
        if let Some(id) = message.id {
            seen.push(id.parse().unwrap());
        }
    }
    // Live: events appended while connected arrive too.
    for n in 5..8 {
        server.ok("/v1/events", &note(n)).await;
    }
    while seen.len() < 8 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        if let Some(id) = message.id {
            seen.push(id.parse().unwrap());
        }
    }
    drop(stream);
    // Events appended while disconnected.
    for n in 8..20 {
        server.ok("/v1/events", &note(n)).await;
    }
    let last = *seen.last().unwrap();
    let mut stream = client.stream("/v1/subscribe", &[], Some(last)).await.unwrap();
    server.ok("/v1/events", &note(20)).await;
    while seen.len() < 21 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        if let Some(id) = message.id {
            seen.push(id.parse().unwrap());
            assert_eq!(message.event.as_deref(), Some("app.note"));
            let event: Value = serde_json::from_str(&message.data).unwrap();
            assert_eq!(event["seq"].as_u64(), Some(*seen.last().unwrap()));
        }
    }
    assert_eq!(seen, (1..=21).collect::<Vec<u64>>());
}

/// A filtered subscription sends only matching events, and a heartbeat names the head. Read off
/// the wire, since heartbeats are comments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_filters_by_type_prefix() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let head = server.head().await;
    let mut response =
        server.http.get(format!("{}/v1/subscribe?from_seq=1&type=wave.", server.url)).send().await.unwrap();
    let mut pending = Vec::new();
    let mut types = Vec::new();
    let mut heads = Vec::new();
    while !heads.contains(&format!("head {head}")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.unwrap().unwrap().unwrap();
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.windows(2).position(|pair| pair == b"\n\n") {
            let message = common::parse_raw_message(&pending[..end]);
            pending.drain(..end + 2);
            match (message.event, message.comment) {
                (Some(event_type), _) => types.push(event_type),
                (None, Some(comment)) => heads.push(comment),
                _ => {}
            }
        }
    }
    assert_eq!(types, vec!["wave.started", "wave.completed"]);
}

/// A watching agent gets its host's state, then a directive for each wave and rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_state_then_directives() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let client = Client::new(&server.url).unwrap();
    let mut watch = client.stream("/v1/watch/web-1", &[], None).await.unwrap();
    let state = watch.next().await.unwrap().unwrap();
    assert_eq!(state.event.as_deref(), Some("state"));
    let state: Value = serde_json::from_str(&state.data).unwrap();
    assert_eq!(state["targets"][0]["desired_release"], "1.0");
    deploy_fully(&server, "d-2", "2.0").await;
    server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "reason": "errors"})).await;
    let mut directives = Vec::new();
    while directives.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
        if message.event.as_deref() == Some("directive") {
            let directive: Value = serde_json::from_str(&message.data).unwrap();
            directives.push((
                directive["release"].as_str().unwrap().to_string(),
                directive["cause"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(directives, vec![("2.0".into(), "wave.started".into()), ("1.0".into(), "rollback".into())]);
    // Resuming from a seq replays the directives since then from disk.
    let first_directive_seq = {
        let (_, events) = server.get("/v1/events?type=wave.started&deployment=d-2").await;
        events["events"][0]["seq"].as_u64().unwrap()
    };
    let mut resumed =
        client.stream("/v1/watch/web-1", &[("from_seq", first_directive_seq.to_string())], None).await.unwrap();
    let mut releases = Vec::new();
    while releases.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), resumed.next()).await.unwrap().unwrap().unwrap();
        if message.event.as_deref() == Some("directive") {
            let directive: Value = serde_json::from_str(&message.data).unwrap();
            releases.push(directive["release"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(releases, vec!["2.0", "1.0"]);
}

/// Acknowledged events survive kill -9 and come back with the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let mut server = Server::start().await;
    seed_fleet(&server).await;
    let before = server.all_events().await;
    server.kill_and_restart().await;
    let after = server.all_events().await;
    assert_eq!(after, before);
    verify_chain(&after);
    let fleet = server.fleet("service=shop&env=prod").await;
    assert_eq!(fleet["summary"]["desired"], json!({"1.0": 6}));
}

/// SIGTERM ends open streams, stops the node and exits cleanly; the data is intact after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_with_open_streams() {
    let mut server = Server::start().await;
    seed_fleet(&server).await;
    let client = Client::new(&server.url).unwrap();
    let mut stream = client.stream("/v1/subscribe", &[("from_seq", "1".into())], None).await.unwrap();
    assert!(stream.next().await.unwrap().is_some());
    let before = server.all_events().await;
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status}: {}", server.log());
    // The stream ended instead of holding the shutdown open.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("stream ended") {}
    server.kill_and_restart().await;
    assert_eq!(server.all_events().await, before);
}

/// A typed wave command takes its wave from the path only, and a deployment started again with
/// the same Idempotency-Key and no id is the same deployment (a replay, not a conflict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_commands_take_the_path_and_replay_by_key() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let start = json!({"service": "shop", "env": "prod", "release": "2.0",
                       "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]});
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(format!("{}/v1/deployments", server.url))
            .header("idempotency-key", "release-2.0-prod")
            .json(&start)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        answers.push((status, response.json::<Value>().await.unwrap()));
    }
    assert_eq!((answers[0].0, answers[1].0), (201, 200), "{answers:?}");
    assert_eq!(answers[1].1["duplicate"], true);
    let id = answers[0].1["event"]["deployment"].as_str().unwrap().to_string();
    assert_eq!(answers[1].1["event"]["deployment"], id.as_str());

    let (status, error) =
        server.post(&format!("/v1/deployments/{id}/waves/canary/start"), &json!({"wave": "rest"})).await;
    assert_eq!((status, error["error"]["code"].as_str()), (422, Some("field_not_allowed")), "{error}");
    let started = server.ok(&format!("/v1/deployments/{id}/waves/canary/start"), &json!({})).await;
    assert_eq!(started["event"]["data"]["wave"], "canary");
    // A freeze's end still takes a reason from the body in place of the default.
    server.ok("/v1/freezes", &json!({"service": "shop", "env": "prod", "reason": "sale"})).await;
    let (status, ended) =
        server.send(reqwest::Method::DELETE, "/v1/freezes/shop/prod", Some(&json!({"reason": "sale over"}))).await;
    assert_eq!(status, 201, "{ended}");
    assert_eq!(ended["event"]["data"]["reason"], "sale over");
}

/// A host's history as of a past seq holds the newest versions up to that seq, however many
/// came after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_history_at_a_past_seq_is_not_cut_by_later_versions() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let then = server.head().await;
    for _ in 0..10 {
        let report = json!({"host": "web-1", "service": "shop", "env": "prod", "release": "1.0",
                            "status": "running", "applied_seq": 1});
        server.ok("/v1/reports", &report).await;
    }
    let (status, view) = server.get(&format!("/v1/hosts/web-1?at_seq={then}&limit=2")).await;
    assert_eq!(status, 200, "{view}");
    let seqs: Vec<u64> =
        view["history"].as_array().unwrap().iter().map(|version| version["changed_seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 2, "two versions at or before seq {then}: {view}");
    assert!(seqs.iter().all(|seq| *seq <= then), "{seqs:?}");
}

/// A policy is set and read back over HTTP, as of now and of a past seq; a malformed one is
/// refused with the field to blame and writes nothing. A halted deployment starts no wave until
/// it is resumed, and the view says why it is halted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_halts_over_http() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let (status, missing) = server.get("/v1/policies/shop/prod").await;
    assert_eq!((status, missing["error"]["code"].as_str()), (404, Some("policy_not_found")), "{missing}");

    let policy = json!({"bake_seconds": 300, "min_healthy": {"percent": 90}, "max_failed": {"count": 1},
                        "waves": {"canary": {"max_failed": {"count": 0}}}, "auto_advance": false});
    let (status, set) =
        server.send(reqwest::Method::PUT, "/v1/policies/shop/prod", Some(&json!({"policy": policy}))).await;
    assert_eq!(status, 201, "{set}");
    assert_eq!(set["event"]["type"], "policy.set");
    let first_seq = set["seq"].as_u64().unwrap();
    let (status, shown) = server.get("/v1/policies/shop/prod").await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["policy"]["min_healthy"], json!({"percent": 90}));
    assert_eq!(shown["policy"]["on_trip"], "rollback", "defaults are filled in");
    assert_eq!(shown["set"]["seq"], first_seq);

    let head = server.head().await;
    let malformed = json!({"policy": {"bake_seconds": 300, "max_failed": {"ratio": 2}}});
    let (status, error) = server.send(reqwest::Method::PUT, "/v1/policies/shop/prod", Some(&malformed)).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "invalid_policy");
    assert_eq!(error["error"]["field"], "data.policy.max_failed.ratio");
    assert_eq!(server.head().await, head, "a refused policy wrote nothing");

    let replaced = json!({"policy": {"bake_seconds": 60}});
    let (status, _) = server.send(reqwest::Method::PUT, "/v1/policies/shop/prod", Some(&replaced)).await;
    assert_eq!(status, 201);
    let (_, now) = server.get("/v1/policies/shop/prod").await;
    assert_eq!(now["policy"]["bake_seconds"], 60);
    let (_, then) = server.get(&format!("/v1/policies/shop/prod?at_seq={first_seq}")).await;
    assert_eq!(then["policy"]["bake_seconds"], 300, "{then}");

    start_canary_then_rest(&server, "d-2", "2.0").await;
    server.ok("/v1/deployments/d-2/halt", &json!({"reason": "latency up"})).await;
    let (_, deployment) = server.get("/v1/deployments/d-2").await;
    assert_eq!(deployment["halted"]["reason"], "latency up", "{deployment}");
    let (status, refused) = server.post("/v1/deployments/d-2/waves/canary/start", &json!({})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("deployment_halted")), "{refused}");
    let resumed = server.ok("/v1/deployments/d-2/resume", &json!({})).await;
    assert_eq!(resumed["event"]["data"]["reason"], "resumed");
    server.ok("/v1/deployments/d-2/waves/canary/start", &json!({})).await;
    let (_, deployment) = server.get("/v1/deployments/d-2").await;
    assert_eq!(deployment["halted"], Value::Null);
    verify_chain(&server.all_events().await);
}

/// Starts `deployment` of `release` to shop/prod in two waves: the canary group, then the rest.
async fn start_canary_then_rest(server: &Server, deployment: &str, release: &str) {
    let body = json!({"deployment": deployment, "service": "shop", "env": "prod", "release": release,
                      "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]});
    server.ok("/v1/deployments", &body).await;
}

async fn report(server: &Server, host: &str, release: &str, status: &str) {
    let body = json!({"host": host, "service": "shop", "env": "prod", "release": release, "status": status,
                      "applied_seq": 1});
    server.ok("/v1/reports", &body).await;
}

/// With `auto_advance`, the policy starts the first wave, completes each wave once its hosts
/// converged and baked, starts the next and completes the deployment: no person between the
/// start and the end. Then a failed host trips `max_failed` and the policy rolls back, once,
/// with the gate and what it saw in the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_rolls_out_hands_off_and_rolls_back_once_on_a_tripped_gate() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let policy = json!({"policy": {"bake_seconds": 1, "auto_advance": true}});
    server.send(reqwest::Method::PUT, "/v1/policies/shop/prod", Some(&policy)).await;
    start_canary_then_rest(&server, "d-2", "2.0").await;
    deployment_until(&server, "d-2", "the first wave to start by itself", |d| d["waves"][0]["state"] == "started")
        .await;
    for host in ["web-1", "web-2"] {
        report(&server, host, "2.0", "running").await;
    }
    deployment_until(&server, "d-2", "the second wave", |d| d["waves"][1]["state"] == "started").await;
    for index in 3..=6 {
        report(&server, &format!("web-{index}"), "2.0", "running").await;
    }
    let done = deployment_until(&server, "d-2", "the deployment to complete", |d| d["state"] == "completed").await;
    assert_eq!(done["waves"][1]["completed"]["actor"], "system:policy", "{done}");

    // Release 3.0 goes out the same way, and a canary fails on it.
    server.ok("/v1/releases", &json!({"service": "shop", "release": "3.0"})).await;
    start_canary_then_rest(&server, "d-3", "3.0").await;
    deployment_until(&server, "d-3", "the canary wave", |d| d["waves"][0]["state"] == "started").await;
    report(&server, "web-1", "3.0", "running").await;
    report(&server, "web-2", "3.0", "failed").await;
    let aborted = deployment_until(&server, "d-3", "the policy's rollback", |d| d["state"] == "aborted").await;
    assert!(aborted["end_reason"].as_str().unwrap_or("").contains("max_failed"), "{aborted}");
    // Give a second decision every chance to happen, then count.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let events = server.all_events().await;
    let rollbacks: Vec<&Value> = events.iter().filter(|event| event["type"] == "rollback").collect();
    assert_eq!(rollbacks.len(), 1, "exactly one rollback: {rollbacks:?}");
    let rollback = rollbacks[0];
    assert_eq!(rollback["actor"], "system:policy");
    assert_eq!(rollback["release"], "2.0", "back to the release that ran");
    assert_eq!(rollback["data"]["decision"]["gate"], "max_failed");
    assert_eq!(rollback["data"]["decision"]["observed"]["failed"], 1);
    assert_eq!(rollback["data"]["decision"]["threshold"]["max_failed"], 0);
    verify_chain(&events);

    let (status, decisions) = server.get("/v1/deployments/d-3/decisions").await;
    assert_eq!(status, 200, "{decisions}");
    let types: Vec<&str> =
        decisions["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["wave.started", "rollback"], "the policy started the canaries, then rolled back");
    // `deploy why` answers from the log alone.
    let why = std::process::Command::new(common::binary())
        .args(["--server", &server.url, "deploy", "why", "d-3"])
        .output()
        .expect("run fleetlog deploy why");
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(why.status.success(), "{text}{}", String::from_utf8_lossy(&why.stderr));
    assert!(text.contains("rollback") && text.contains("gate: \"max_failed\""), "{text}");
}

/// An Alertmanager webhook payload (version 4) with the given alerts.
fn alertmanager_payload(alerts: Value) -> Value {
    json!({"version": "4", "groupKey": "{}:{alertname=\"Errors\"}", "status": "firing", "receiver": "fleetlog",
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
           "truncatedAlerts": 0, "alerts": alerts})
}

fn alert(status: &str, fingerprint: &str, labels: Value) -> Value {
    json!({"status": status, "labels": labels, "annotations": {"summary": "errors up"},
           "startsAt": "2026-12-07T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
           "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint})
}

/// Alertmanager's payload becomes one event per alert; a retried payload writes nothing; an
/// alert naming no environment is kept and listed as unmapped; a resolution ends the firing; a
/// malformed payload is refused with the field to blame and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_payloads_become_alert_events_once() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let firing = alertmanager_payload(json!([
        alert("firing", "a1", json!({"alertname": "Errors", "service": "shop", "env": "prod", "severity": "critical"})),
        alert("firing", "b2", json!({"alertname": "DiskFull", "instance": "db-1"})),
    ]));
    let answer = server.ok("/v1/alerts/alertmanager", &firing).await;
    assert_eq!((answer["written"].as_u64(), answer["unmapped"].as_u64()), (Some(2), Some(1)), "{answer}");
    let head = server.head().await;
    let again = server.ok("/v1/alerts/alertmanager", &firing).await;
    assert_eq!((again["written"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(2)), "{again}");
    assert_eq!(server.head().await, head, "a retried webhook wrote nothing");
    // Sent again with a changed annotation (a current value in a template): still nothing new.
    let mut changed = firing.clone();
    changed["alerts"][0]["annotations"]["summary"] = json!("errors up 5x");
    let again = server.ok("/v1/alerts/alertmanager", &changed).await;
    assert_eq!(again["written"].as_u64(), Some(0), "{again}");
    assert_eq!(server.head().await, head, "a changed annotation wrote nothing");

    let (_, listed) = server.get("/v1/alerts").await;
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 2, "{listed}");
    let (_, unmapped) = server.get("/v1/alerts?state=unmapped").await;
    assert_eq!(unmapped["alerts"][0]["fingerprint"], "b2", "{unmapped}");
    let (_, mapped) = server.get("/v1/alerts?service=shop&env=prod").await;
    assert_eq!(mapped["alerts"][0]["labels"]["severity"], "critical", "{mapped}");

    let resolved = alertmanager_payload(json!([alert("resolved", "a1", json!({"service": "shop", "env": "prod"}))]));
    server.ok("/v1/alerts/alertmanager", &resolved).await;
    let (_, still) = server.get("/v1/alerts").await;
    let fingerprints: Vec<&str> =
        still["alerts"].as_array().unwrap().iter().map(|a| a["fingerprint"].as_str().unwrap()).collect();
    assert_eq!(fingerprints, ["b2"], "a1 is resolved: {still}");

    let head = server.head().await;
    for (payload, field) in [
        (json!({"version": "3", "alerts": []}), "version"),
        (
            alertmanager_payload(json!([alert("firing", "c3", json!({})), {"status": "firing"}])),
            "alerts[1].fingerprint",
        ),
        (
            alertmanager_payload(json!([{"status": "firing", "fingerprint": "d4", "startsAt": "yesterday"}])),
            "alerts[0].startsAt",
        ),
        // A valid first alert, then one whose time is longer than the ledger keeps: neither is written.
        (
            alertmanager_payload(json!([
                alert("firing", "e5", json!({})),
                {"status": "firing", "fingerprint": "e6", "startsAt": format!("2026-12-07T03:00:00.{}Z", "1".repeat(80))},
            ])),
            "alerts[1].startsAt",
        ),
    ] {
        let (status, error) = server.post("/v1/alerts/alertmanager", &payload).await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(
            (error["error"]["code"].as_str(), error["error"]["field"].as_str()),
            (Some("invalid_alert"), Some(field))
        );
    }
    assert_eq!(server.head().await, head, "a refused payload wrote nothing");
}

/// During a wave's bake, an Alertmanager alert that the policy counts makes the policy roll back,
/// once, and the decision names the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_during_the_bake_rolls_back_once_and_is_named() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let policy = json!({"policy": {"bake_seconds": 60, "auto_advance": true, "alerts": [{"severity": "critical"}]}});
    server.send(reqwest::Method::PUT, "/v1/policies/shop/prod", Some(&policy)).await;
    start_canary_then_rest(&server, "d-2", "2.0").await;
    deployment_until(&server, "d-2", "the canary wave", |d| d["waves"][0]["state"] == "started").await;
    for host in ["web-1", "web-2"] {
        report(&server, host, "2.0", "running").await;
    }
    // A warning does not count; a critical one does.
    let warning = alertmanager_payload(json!([alert(
        "firing",
        "w1",
        json!({"service": "shop", "env": "prod", "severity": "warning"})
    )]));
    server.ok("/v1/alerts/alertmanager", &warning).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, deployment) = server.get("/v1/deployments/d-2").await;
    assert_eq!(deployment["state"], "active", "a warning does not trip the policy: {deployment}");
    let critical = alertmanager_payload(json!([alert(
        "firing",
        "c1",
        json!({"service": "shop", "env": "prod", "severity": "critical"})
    )]));
    server.ok("/v1/alerts/alertmanager", &critical).await;
    deployment_until(&server, "d-2", "the policy's rollback", |d| d["state"] == "aborted").await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let events = server.all_events().await;
    let rollbacks: Vec<&Value> = events.iter().filter(|event| event["type"] == "rollback").collect();
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    let decision = &rollbacks[0]["data"]["decision"];
    assert_eq!(decision["gate"], "alert");
    assert_eq!(decision["alerts"][0]["fingerprint"], "c1", "{decision}");
    assert_eq!(rollbacks[0]["release"], "1.0");
}

/// A deny window open every minute of every day: frozen whenever the test looks.
fn always_denied(reason: &str) -> Value {
    json!([{"kind": "deny", "cron": "* * * * *", "duration": "1m", "time_zone": "Europe/Berlin", "reason": reason}])
}

#[tokio::test]
async fn freeze_calendars_refuse_starts_hold_hands_off_waves_and_let_rollbacks_through() {
    let server = Server::start().await;
    seed_fleet(&server).await;

    // Malformed calendars are refused naming the field, and write nothing.
    let head = server.head().await;
    for (windows, code, field) in [
        (
            json!([{"kind": "deny", "cron": "0 18 * * funday", "duration": "1h", "time_zone": "UTC"}]),
            "invalid_cron",
            "data.windows[0].cron",
        ),
        (
            json!([{"kind": "deny", "cron": "0 18 * * fri", "duration": "1h", "time_zone": "Europe/Atlantis"}]),
            "invalid_time_zone",
            "data.windows[0].time_zone",
        ),
        (
            json!([{"kind": "sometimes", "start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z"}]),
            "invalid_calendar",
            "data.windows[0].kind",
        ),
    ] {
        let body = json!({"service": "shop", "env": "prod", "windows": windows});
        let (status, error) = server.send(reqwest::Method::PUT, "/v1/calendars", Some(&body)).await;
        assert_eq!(
            (status, error["error"]["code"].as_str(), error["error"]["field"].as_str()),
            (422, Some(code), Some(field)),
            "{error}"
        );
    }
    let (status, error) =
        server.send(reqwest::Method::PUT, "/v1/calendars", Some(&json!({"service": "shop", "windows": []}))).await;
    assert_eq!((status, error["error"]["code"].as_str()), (422, Some("missing_field")), "{error}");
    assert_eq!(server.head().await, head, "refused calendars wrote nothing");

    // A hands-off deployment started before the freeze: its first wave waits for the window.
    let policy = json!({"policy": {"bake_seconds": 0, "auto_advance": true}});
    server.send(reqwest::Method::PUT, "/v1/policies/shop/prod", Some(&policy)).await;
    let body = json!({"service": "shop", "env": "prod", "windows": always_denied("change freeze")});
    let (status, set) = server.send(reqwest::Method::PUT, "/v1/calendars", Some(&body)).await;
    assert_eq!(status, 201, "{set}");
    let (status, refused) = server
        .post("/v1/deployments", &json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0",
                                         "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]}))
        .await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("frozen")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap_or("").contains("change freeze"), "{refused}");
    let (_, shown) = server.get("/v1/calendars?service=shop&env=prod").await;
    assert_eq!(shown["frozen"], true, "{shown}");
    assert_eq!(shown["calendars"][0]["open_now"][0]["window"], 0, "{shown}");

    // Break glass: the deployment starts, the reason is kept; the policy still may not start a wave.
    let glass = server
        .ok("/v1/deployments", &json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0",
                                        "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}],
                                        "override_reason": "INC-42 hotfix"}))
        .await;
    assert_eq!(glass["event"]["data"]["override_reason"], "INC-42 hotfix");
    let (_, deployment) = server.get("/v1/deployments/d-2").await;
    assert_eq!(deployment["overrides"][0]["guard"], "freeze_window", "{deployment}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (_, deployment) = server.get("/v1/deployments/d-2").await;
    assert_eq!(deployment["waves"][0]["state"], "pending", "the policy started a wave in a freeze: {deployment}");

    // The window closes (the calendar is cleared): the policy starts the wave by itself.
    let body = json!({"service": "shop", "env": "prod", "windows": []});
    assert_eq!(server.send(reqwest::Method::PUT, "/v1/calendars", Some(&body)).await.0, 201);
    deployment_until(&server, "d-2", "the canary wave once the window closed", |d| d["waves"][0]["state"] == "started")
        .await;

    // A global freeze: a rollback still goes through, and its timeline says it was allowed.
    let global = json!({"windows": always_denied("year end")});
    assert_eq!(server.send(reqwest::Method::PUT, "/v1/calendars", Some(&global)).await.0, 201);
    let (_, shown) = server.get("/v1/calendars?service=shop&env=prod").await;
    assert!(shown["why"].as_str().unwrap_or("").contains("global calendar"), "{shown}");
    let rollback = server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "reason": "errors"})).await;
    assert_eq!(rollback["event"]["release"], "1.0");
    let (_, releases) = server.get("/v1/services/shop/releases").await;
    let text = releases.to_string();
    assert!(text.contains("allowed while in a freeze window") && text.contains("year end"), "{releases}");
    let (_, all) = server.get("/v1/calendars").await;
    let scopes: Vec<&str> = all["calendars"].as_array().unwrap().iter().map(|c| c["scope"].as_str().unwrap()).collect();
    assert_eq!(scopes, ["global", "shop/prod"]);
    verify_chain(&server.all_events().await);
}

#[tokio::test]
async fn dora_figures_come_exactly_from_the_ledger() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    let two_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    server.ok("/v1/releases", &json!({"service": "shop", "release": "3.0", "committed_at": two_hours_ago})).await;
    deploy_fully(&server, "d-3", "3.0").await;
    // 4.0 fails on its canaries and is rolled back by hand; the hosts come back to 3.0.
    server.ok("/v1/releases", &json!({"service": "shop", "release": "4.0"})).await;
    start_canary_then_rest(&server, "d-4", "4.0").await;
    server.ok("/v1/deployments/d-4/waves/canary/start", &json!({})).await;
    for host in ["web-1", "web-2"] {
        report(&server, host, "4.0", "running").await;
    }
    let rollback = server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "reason": "errors up"})).await;
    assert_eq!(rollback["event"]["release"], "3.0");
    let (_, before) = server.get("/v1/dora?service=shop&env=prod").await;
    assert_eq!(before["failed_deployment_recovery_time"]["samples"], 0, "not every host runs 3.0 yet: {before}");
    for host in ["web-1", "web-2"] {
        report(&server, host, "3.0", "running").await;
    }

    let (status, dora) = server.get("/v1/dora?service=shop&env=prod").await;
    assert_eq!(status, 200, "{dora}");
    assert_eq!(dora["deployment_frequency"]["completed"], 2, "d-1 and d-3: {dora}");
    assert_eq!(dora["deployment_frequency"]["band"], "medium", "2 in 30 days: less than weekly: {dora}");
    assert_eq!(dora["change_lead_time"]["samples"], 2);
    let d3 = dora["deployments"].as_array().unwrap().iter().find(|d| d["deployment"] == "d-3").unwrap().clone();
    assert_eq!(d3["lead_from"], "commit", "{d3}");
    assert!(d3["lead_seconds"].as_f64().unwrap() >= 7_200.0, "from the commit two hours ago: {d3}");
    assert_eq!(
        (dora["change_fail_rate"]["started"].as_u64(), dora["change_fail_rate"]["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(dora["change_fail_rate"]["band"], "low", "1 of 3 is nearest the 40% cluster: {dora}");
    let recovery = &dora["failed_deployment_recovery_time"];
    assert_eq!((recovery["samples"].as_u64(), recovery["band"].as_str()), (Some(1), Some("elite")), "{dora}");
    assert_eq!(dora["recoveries"][0]["deployment"], "d-4");
    assert_eq!(dora["recoveries"][0]["failure"]["seq"], rollback["seq"]);

    // Bad windows are refused.
    let (status, error) = server.get("/v1/dora?env=prod").await;
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_parameter")), "{error}");
    let (status, _) = server.get("/v1/dora?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z").await;
    assert_eq!(status, 400);
    // A name with a NUL byte is refused before it reaches a storage key.
    for path in ["/v1/dora?service=shop%00x", "/v1/calendars?service=shop%00x&env=prod"] {
        let (status, error) = server.get(path).await;
        assert_eq!((status, error["error"]["code"].as_str()), (400, Some("invalid_parameter")), "{path}: {error}");
    }
    // The CLI prints the same figures.
    let output = std::process::Command::new(common::binary())
        .args(["--server", &server.url, "dora", "--service", "shop", "--env", "prod"])
        .output()
        .expect("run fleetlog dora");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.contains("change fail rate") && text.contains("33.3%"), "{text}");
}

/// With `serve --alert-labels`, alerts are mapped by the labels a site already uses.
#[tokio::test]
async fn alert_labels_are_configurable() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), &["--alert-labels", "service=app,env=stage,host=instance"]).await;
    seed_fleet(&server).await;
    let payload = alertmanager_payload(json!([
        alert("firing", "c1", json!({"alertname": "Errors", "app": "shop", "stage": "prod", "instance": "web-3"})),
        alert("firing", "c2", json!({"alertname": "Errors", "service": "shop", "env": "prod"})),
    ]));
    let answer = server.ok("/v1/alerts/alertmanager", &payload).await;
    assert_eq!((answer["written"].as_u64(), answer["unmapped"].as_u64()), (Some(2), Some(1)), "{answer}");
    let (_, mapped) = server.get("/v1/alerts?service=shop&env=prod").await;
    let alerts = mapped["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{mapped}");
    assert_eq!((alerts[0]["fingerprint"].as_str(), alerts[0]["host"].as_str()), (Some("c1"), Some("web-3")));
    let (_, unmapped) = server.get("/v1/alerts?state=unmapped").await;
    assert_eq!(unmapped["alerts"][0]["fingerprint"], "c2", "the default labels no longer map: {unmapped}");

    let refused = std::process::Command::new(common::binary())
        .args(["serve", "--listen", "127.0.0.1:1", "--alert-labels", "team=owner"])
        .arg("--data")
        .arg(data.path().join("unused"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && text.contains("not service, env or host"), "{text}");
}

/// The operator's page is one self-contained file: served at `/` to anyone (it holds no data),
/// with a policy that forbids any other origin, and under 300 KiB.
#[tokio::test]
async fn the_dashboard_page_is_served_self_contained() {
    let server = Server::start().await;
    let response = reqwest::get(format!("{}/", server.url)).await.unwrap();
    assert_eq!(response.status(), 200);
    let header =
        |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).unwrap_or("").to_string();
    assert!(header("content-type").starts_with("text/html"), "{}", header("content-type"));
    let policy = header("content-security-policy");
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{policy}");
    let page = response.text().await.unwrap();
    assert!(page.len() < 300 * 1024, "{} bytes", page.len());
    assert!(!page.contains("http://") && !page.contains("https://"), "the page refers to another origin");
    assert!(
        page.contains("id=\"fleet-viewport\"") && page.contains("/v1/fleet"),
        "the fleet grid reads the fleet view"
    );
    assert!(page.contains("new EventSource("), "the page follows the log");
}
