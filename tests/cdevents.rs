//! CDEvents in and out against a real `fleetlog serve`, checked with the CDEvents specification
//! v0.5.1's own JSON schemas and conformance examples (kept unchanged in
//! `tests/cdevents-spec-0.5.1/`).
//!
//! - In: every conformance example of a type fleetlog takes is posted as a CloudEvent (structured,
//!   batched and binary modes) and recorded once; types it does not take, and requests with one
//!   bad event, are refused and write nothing.
//! - Out: a deployment's whole life (waves, agents' reports, a halt, a freeze, alerts, a
//!   rollback) is read back from the subscribe stream as CDEvents, each of which must validate
//!   against the schema of its type.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{seed_fleet, Server};
use fleetlog_api::client::Client;
use serde_json::{json, Value};

fn spec_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cdevents-spec-0.5.1")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Validators of the specification's schemas, with the link schemas they refer to.
struct Schemas {
    registry: &'static jsonschema::Registry<'static>,
}

impl Schemas {
    fn load() -> Schemas {
        let mut registry = jsonschema::Registry::new();
        for entry in std::fs::read_dir(spec_directory().join("schemas/links")).unwrap() {
            let schema = read_json(&entry.unwrap().path());
            let id = schema["$id"].as_str().expect("a link schema names itself").to_string();
            registry = registry.add(id, schema).expect("a link schema");
        }
        // The validators refer to the registry for as long as the test runs.
        Schemas { registry: Box::leak(Box::new(registry.prepare().expect("the link schemas"))) }
    }

    /// The schema a CDEvent of `cdevent_type` must match: the specification's own for its core
    /// types, the custom event schema for `dev.cdeventsx.` types.
    fn file_of(cdevent_type: &str) -> PathBuf {
        if cdevent_type.starts_with("dev.cdeventsx.") {
            return spec_directory().join("custom/schema.json");
        }
        let name: String = cdevent_type
            .strip_prefix("dev.cdevents.")
            .and_then(|rest| rest.rsplitn(4, '.').nth(3).map(str::to_string).or(Some(rest.to_string())))
            .unwrap()
            .replace('.', "");
        spec_directory().join(format!("schemas/{name}.json"))
    }

    /// The schema's complaints about `cdevent` (none when it conforms).
    fn errors(&self, cdevent: &Value) -> Vec<String> {
        let cdevent_type = cdevent["context"]["type"].as_str().expect("a CDEvent has a context type");
        let schema = read_json(&Self::file_of(cdevent_type));
        let validator = jsonschema::options()
            .with_registry(self.registry)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|error| panic!("the schema of {cdevent_type}: {error}"));
        validator.iter_errors(cdevent).map(|error| format!("{} at {}", error, error.instance_path())).collect()
    }
}

#[test]
fn the_schemas_accept_their_examples_and_refuse_a_broken_one() {
    let schemas = Schemas::load();
    for entry in std::fs::read_dir(spec_directory().join("conformance")).unwrap() {
        let example = read_json(&entry.unwrap().path());
        assert_eq!(schemas.errors(&example), Vec::<String>::new(), "{example}");
    }
    // The checks can fail: an example without its artifact, or with a type of another version.
    let mut broken = read_json(&spec_directory().join("conformance/service_deployed.json"));
    broken["subject"]["content"].as_object_mut().unwrap().remove("artifactId");
    assert!(!schemas.errors(&broken).is_empty());
    let mut custom = read_json(&spec_directory().join("custom/conformance.json"));
    assert!(schemas.errors(&custom).is_empty());
    custom["context"]["type"] = json!("dev.cdeventsx.fleetlog-wave.started.0.1.0-draft");
    assert!(!schemas.errors(&custom).is_empty(), "a custom type's version is three numbers");
}

fn example(name: &str) -> Value {
    read_json(&spec_directory().join(format!("conformance/{name}.json")))
}

/// `cdevent` in a structured-mode CloudEvent.
fn structured(cdevent: &Value) -> Value {
    let context = &cdevent["context"];
    json!({
        "specversion": "1.0", "id": context["id"], "source": context["source"], "type": context["type"],
        "time": context["timestamp"], "datacontenttype": "application/json", "data": cdevent,
    })
}

async fn post_cdevents(server: &Server, content_type: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = server
        .http
        .post(format!("{}/v1/cdevents", server.url))
        .header("content-type", content_type)
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn the_specification_examples_are_recorded_once_and_other_types_refused() {
    let server = Server::start().await;

    // Structured mode, one by one; each sent twice is recorded once.
    for name in ["service_deployed", "service_upgraded", "service_rolledback", "service_removed"] {
        let cloud = structured(&example(name));
        let (status, answer) = post_cdevents(&server, "application/cloudevents+json", &cloud, &[]).await;
        assert_eq!((status, answer["written"].as_array().map(Vec::len)), (201, Some(1)), "{name}: {answer}");
        let (status, again) = post_cdevents(&server, "application/cloudevents+json", &cloud, &[]).await;
        assert_eq!((status, again["duplicates"].as_u64()), (200, Some(1)), "{name} again: {again}");
    }
    let recorded: Vec<Value> =
        server.all_events().await.into_iter().filter(|event| event["stream"] == "mySubject123/test123").collect();
    let types: Vec<&str> = recorded.iter().map(|event| event["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "cdevents.service.deployed",
            "cdevents.service.upgraded",
            "cdevents.service.rolledback",
            "cdevents.service.removed"
        ]
    );
    // The artifact's version is a digest, not a release name: kept in the CDEvent, no release.
    assert_eq!(recorded[0]["release"], Value::Null);
    assert_eq!(recorded[0]["data"]["cdevent"], example("service_deployed"));
    assert_eq!(recorded[0]["data"]["cloudevent"]["source"], "/event/source/123");

    // Binary mode: the envelope in headers, the CDEvent as the body; a release that is a name.
    let mut deployed = example("service_deployed");
    deployed["context"]["id"] = json!("binary-1");
    deployed["subject"]["content"]["artifactId"] = json!("pkg:generic/checkout@2.4.1");
    let context = deployed["context"].clone();
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "binary-1"),
        ("ce-source", context["source"].as_str().unwrap()),
        ("ce-type", context["type"].as_str().unwrap()),
        ("ce-time", context["timestamp"].as_str().unwrap()),
    ];
    let (status, answer) = post_cdevents(&server, "application/json", &deployed, &headers).await;
    assert_eq!(status, 201, "{answer}");
    let seq = answer["written"][0]["seq"].as_u64().unwrap();
    let (_, event) = server.get(&format!("/v1/events/{seq}")).await;
    assert_eq!((event["service"].as_str(), event["release"].as_str()), (Some("mySubject123"), Some("2.4.1")));

    // Incidents are alerts of the service and environment they name, resolved by their id.
    let batch = json!([structured(&example("incident_detected"))]);
    let (status, answer) = post_cdevents(&server, "application/cloudevents-batch+json", &batch, &[]).await;
    assert_eq!(status, 201, "{answer}");
    let (_, alerts) = server.get("/v1/alerts?service=myApp&env=prod1").await;
    assert_eq!(alerts["alerts"].as_array().map(Vec::len), Some(1), "{alerts}");
    assert_eq!(alerts["alerts"][0]["fingerprint"], "incident-123");
    let (status, answer) =
        post_cdevents(&server, "application/cloudevents+json", &structured(&example("incident_resolved")), &[]).await;
    assert_eq!(status, 201, "{answer}");
    let (_, firing) = server.get("/v1/alerts?service=myApp&env=prod1").await;
    assert_eq!(firing["alerts"], json!([]), "the incident is resolved: {firing}");

    // Refusals write nothing.
    let head = server.head().await;
    let refused = [
        (
            "an unknown type",
            "application/cloudevents+json",
            structured(&example("incident_reported")),
            422,
            "unknown_cdevent_type",
        ),
        (
            "a batch with one unknown type",
            "application/cloudevents-batch+json",
            json!([structured(&example("service_deployed")), structured(&example("service_published"))]),
            422,
            "unknown_cdevent_type",
        ),
        (
            "a custom type",
            "application/cloudevents+json",
            structured(&read_json(&spec_directory().join("custom/conformance.json"))),
            422,
            "unknown_cdevent_type",
        ),
        ("no CloudEvent", "application/cloudevents+json", json!({"specversion": "1.0"}), 422, "invalid_cloudevent"),
        ("plain text", "text/plain", json!("hello"), 415, "unsupported_media_type"),
    ];
    for (what, content_type, body, status, code) in refused {
        let (got, answer) = post_cdevents(&server, content_type, &body, &[]).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{what}: {answer}");
    }
    let mut wrong = structured(&example("service_deployed"));
    wrong["id"] = json!("another");
    wrong["data"]["subject"]["content"].as_object_mut().unwrap().remove("environment");
    let (status, answer) = post_cdevents(&server, "application/cloudevents+json", &wrong, &[]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_cdevent")), "{answer}");
    assert_eq!(server.head().await, head, "a refused request wrote nothing");
}

#[tokio::test]
async fn a_deployments_life_goes_out_as_cdevents_that_match_the_schemas() {
    let server = Server::start().await;
    seed_fleet(&server).await;
    server
        .ok(
            "/v1/deployments",
            &json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0",
                     "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]}),
        )
        .await;
    server.ok("/v1/deployments/d-2/waves/canary/start", &json!({})).await;
    let applying = json!({"host": "web-1", "service": "shop", "env": "prod", "release": "2.0", "status": "applying", "applied_seq": 1});
    server.ok("/v1/reports", &applying).await;
    let failed = json!({"host": "web-1", "service": "shop", "env": "prod", "release": "2.0", "status": "failed", "applied_seq": 1});
    server.ok("/v1/reports", &failed).await;
    server.ok("/v1/deployments/d-2/halt", &json!({"reason": "web-1 failed"})).await;
    server.ok("/v1/deployments/d-2/resume", &json!({"reason": "looked at it"})).await;
    let alert = |status: &str| {
        json!({"version": "4", "alerts": [{"status": status, "fingerprint": "f-1", "startsAt": "2026-12-07T10:00:00Z",
               "labels": {"service": "shop", "env": "prod", "alertname": "Errors"},
               "annotations": {"summary": "error rate above 5%"}}]})
    };
    server.ok("/v1/alerts/alertmanager", &alert("firing")).await;
    server.ok("/v1/alerts/alertmanager", &alert("resolved")).await;
    server.ok("/v1/freezes", &json!({"service": "shop", "env": "prod", "reason": "incident"})).await;
    let rollback = server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "reason": "bad canary"})).await;
    let last_seq = rollback["seq"].as_u64().expect("the rollback's seq");

    let client = Client::new(&server.url).unwrap();
    let query = [("from_seq", "1".to_string()), ("format", "cdevents".to_string())];
    let mut stream = client.stream("/v1/subscribe", &query, None).await.expect("subscribe");
    let schemas = Schemas::load();
    let mut seen = BTreeSet::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the stream goes on")
            .expect("a message")
            .expect("the stream is open");
        if message.data.is_empty() {
            continue;
        }
        let cloud: Value = serde_json::from_str(&message.data).expect("a CloudEvent in JSON");
        let cdevent = &cloud["data"];
        assert_eq!(cloud["specversion"], "1.0");
        assert_eq!(cloud["type"], cdevent["context"]["type"], "{cloud}");
        assert_eq!(message.event.as_deref(), cloud["type"].as_str());
        let seq: u64 = message.id.as_deref().and_then(|id| id.parse().ok()).expect("the message's id is its seq");
        assert_eq!(cloud["fleetlogseq"], seq);
        assert_eq!(schemas.errors(cdevent), Vec::<String>::new(), "{cdevent}");
        seen.insert(cloud["type"].as_str().unwrap().to_string());
        if seq == last_seq {
            break;
        }
    }
    let expected = [
        "dev.cdevents.service.deployed.0.3.0",
        "dev.cdevents.service.rolledback.0.3.0",
        "dev.cdevents.incident.detected.0.3.0",
        "dev.cdevents.incident.resolved.0.3.0",
        "dev.cdeventsx.fleetlog-deployment.started.0.1.0",
        "dev.cdeventsx.fleetlog-deployment.halted.0.1.0",
        "dev.cdeventsx.fleetlog-deployment.resumed.0.1.0",
        "dev.cdeventsx.fleetlog-wave.started.0.1.0",
        "dev.cdeventsx.fleetlog-wave.finished.0.1.0",
        "dev.cdeventsx.fleetlog-freeze.started.0.1.0",
        "dev.cdeventsx.fleetlog-reconciliation.started.0.1.0",
        "dev.cdeventsx.fleetlog-reconciliation.finished.0.1.0",
    ];
    let missing: Vec<&&str> = expected.iter().filter(|kind| !seen.contains(**kind)).collect();
    assert!(missing.is_empty(), "no CDEvent of {missing:?}; seen {seen:?}");
}

/// What a `cdevents` webhook's receiver saw: each request's content type, signature check and
/// body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, bool, Value)>>>;

#[tokio::test]
async fn a_cdevents_webhook_receives_signed_cloudevents_that_match_the_schemas() {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::HeaderMap;

    async fn receive(State((received, secret)): State<(Received, String)>, headers: HeaderMap, body: Bytes) {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("").to_string();
        let expected = fleetlog_raft::domain::webhooks::signature(&secret, &header("fleetlog-timestamp"), &body);
        let document = serde_json::from_slice(&body).unwrap_or(Value::Null);
        received.lock().unwrap().push((header("content-type"), header("fleetlog-signature") == expected, document));
    }

    let server = Server::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let registration = json!({"url": format!("http://{address}/hook"), "events": ["deployment.", "wave.", "rollback"],
                              "format": "cdevents"});
    let (status, created) = server.post("/v1/webhooks", &registration).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().expect("the secret, shown once").to_string();
    let received: Received = Default::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state((received.clone(), secret));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    seed_fleet(&server).await;
    server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "release": "1.0", "reason": "drill"})).await;

    let schemas = Schemas::load();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let types: Vec<String> =
            received.lock().unwrap().iter().map(|(_, _, cloud)| cloud["type"].to_string()).collect();
        if types.iter().any(|kind| kind.contains("service.rolledback")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no rollback delivered within 30 s; got {types:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.lock().unwrap().clone();
    let types: Vec<&str> = received.iter().map(|(_, _, cloud)| cloud["type"].as_str().unwrap_or("")).collect();
    assert_eq!(
        types,
        [
            "dev.cdeventsx.fleetlog-deployment.started.0.1.0",
            "dev.cdeventsx.fleetlog-wave.started.0.1.0",
            "dev.cdeventsx.fleetlog-wave.finished.0.1.0",
            "dev.cdevents.service.deployed.0.3.0",
            "dev.cdevents.service.rolledback.0.3.0",
        ],
        "in seq order, one each"
    );
    for (content_type, signed, cloud) in &received {
        assert_eq!(content_type, "application/cloudevents+json");
        assert!(signed, "a valid signature: {cloud}");
        assert_eq!(schemas.errors(&cloud["data"]), Vec::<String>::new(), "{cloud}");
    }
}
