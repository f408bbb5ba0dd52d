//! Every JSON shape of the API against a real `fleetlog serve`: each answer is read into its
//! `fleetlog_types` type and written back, and the text must be the one the server sent (members,
//! their order, nulls, numbers). A member the type lacks, renames or writes differently fails.

mod common;

use std::time::Duration;

use common::Server;
use fleetlog_api::client::Client;
use fleetlog_types as types;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// The answer to a request: its status and its body's text.
async fn exchange(server: &Server, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut request = server.http.request(method, format!("{}{}", server.url, path));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    (response.status().as_u16(), response.text().await.expect("body"))
}

/// `text` read into `T` and written back must be `text` (as JSON: the same members in the same
/// order with the same values).
fn round_trip<T: Serialize + DeserializeOwned>(what: &str, text: &str) -> T {
    let sent: Value = serde_json::from_str(text).unwrap_or_else(|error| panic!("{what}: not JSON ({error}): {text}"));
    let typed: T = serde_json::from_str(text)
        .unwrap_or_else(|error| panic!("{what}: does not read as {} ({error}): {text}", std::any::type_name::<T>()));
    let written = serde_json::to_string(&typed).unwrap();
    assert_eq!(written, serde_json::to_string(&sent).unwrap(), "{what}: the type writes back another shape");
    shapes::record(what, &sent);
    typed
}

async fn get<T: Serialize + DeserializeOwned>(server: &Server, path: &str) -> T {
    let (status, text) = exchange(server, reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {text}");
    round_trip(&format!("GET {path}"), &text)
}

async fn send<T: Serialize + DeserializeOwned>(server: &Server, method: reqwest::Method, path: &str, body: Value) -> T {
    let (status, text) = exchange(server, method.clone(), path, Some(&body)).await;
    assert!(status == 200 || status == 201, "{method} {path} {body}: {status} {text}");
    round_trip(&format!("{method} {path}"), &text)
}

async fn post<T: Serialize + DeserializeOwned>(server: &Server, path: &str, body: Value) -> T {
    send(server, reqwest::Method::POST, path, body).await
}

async fn command(server: &Server, path: &str, body: Value) -> types::CommandAnswer {
    post(server, path, body).await
}

/// An error answer: its status and body, read as the error type.
async fn error(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, types::ErrorBody) {
    let (status, text) = exchange(server, method.clone(), path, body.as_ref()).await;
    assert!(status >= 400, "{method} {path}: {status} {text}");
    (status, round_trip(&format!("{method} {path} ({status})"), &text))
}

/// Reads the deployment until `check` holds (the policy evaluator acts on its own).
async fn deployment_until(
    server: &Server,
    id: &str,
    check: impl Fn(&types::DeploymentDetail) -> bool,
) -> types::DeploymentDetail {
    for _ in 0..200 {
        let detail: types::DeploymentDetail = get(server, &format!("/v1/deployments/{id}")).await;
        if check(&detail) {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deployment {id} never got there");
}

async fn report(server: &Server, host: &str, env: &str, release: &str, status: &str, extra: Value) {
    let mut body = json!({"host": host, "service": "shop", "env": env, "release": release, "status": status,
                          "applied_seq": 1});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    command(server, "/v1/reports", body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_reads_into_its_type_and_writes_back_unchanged() {
    let server = Server::start().await;

    // Releases, hosts in two environments, what they run.
    let created = command(
        &server,
        "/v1/releases",
        json!({"service": "shop", "release": "1.0", "artifact": "registry/shop:1.0", "notes": "first"}),
    )
    .await;
    assert_eq!(created.event.event_type, "release.created");
    command(
        &server,
        "/v1/releases",
        json!({"service": "shop", "release": "2.0", "commits": ["abc"], "committed_at": "2026-01-01T00:00:00Z"}),
    )
    .await;
    command(&server, "/v1/releases", json!({"service": "shop", "release": "3.0"})).await;
    command(&server, "/v1/services/shop/releases/3.0/block", json!({"reason": "bad build"})).await;
    for (host, group) in [("web-1", "canary"), ("web-2", "canary"), ("web-3", "main"), ("web-4", "main")] {
        command(
            &server,
            "/v1/targets",
            json!({"host": host, "service": "shop", "env": "prod", "group": group, "labels": {"zone": "a"}}),
        )
        .await;
        report(&server, host, "prod", "1.0", "running", json!({})).await;
    }
    command(&server, "/v1/targets", json!({"host": "web-9", "service": "shop", "env": "staging"})).await;

    // A completed deployment in staging, then a manual freeze and a calendar there.
    command(
        &server,
        "/v1/deployments",
        json!({"deployment": "d-s", "service": "shop", "env": "staging", "release": "2.0",
               "waves": [{"name": "all", "percent": 100}]}),
    )
    .await;
    command(&server, "/v1/deployments/d-s/waves/all/start", json!({})).await;
    report(&server, "web-9", "staging", "2.0", "running", json!({"health": "healthy"})).await;
    command(&server, "/v1/deployments/d-s/waves/all/complete", json!({})).await;
    command(&server, "/v1/deployments/d-s/complete", json!({"notes": "done"})).await;
    command(&server, "/v1/freezes", json!({"service": "shop", "env": "staging", "reason": "holidays"})).await;
    let windows = json!([
        {"kind": "deny", "cron": "0 18 * * fri", "duration": "2d15h", "time_zone": "Europe/Berlin", "reason": "weekend"},
        {"kind": "deny", "start": "2001-01-01T00:00:00Z", "end": "2001-01-02T00:00:00Z"},
    ]);
    send::<types::CommandAnswer>(
        &server,
        reqwest::Method::PUT,
        "/v1/calendars",
        json!({"service": "shop", "env": "staging", "windows": windows}),
    )
    .await;

    // A policy on prod that halts on a failed host.
    let policy = json!({"bake_seconds": 1, "min_healthy": {"percent": 50}, "max_failed": {"count": 0},
                        "converge_deadline_seconds": 600, "waves": {"canary": {"bake_seconds": 2}},
                        "alerts": [{"severity": "critical"}], "on_trip": "halt", "no_data": "ignore"});
    send::<types::CommandAnswer>(&server, reqwest::Method::PUT, "/v1/policies/shop/prod", json!({"policy": policy}))
        .await;
    let view: types::PolicyView = get(&server, "/v1/policies/shop/prod").await;
    assert_eq!(view.policy.on_trip, "halt");

    // A deployment whose canary fails: the policy halts it, a guard is overridden, a rollback ends it.
    let started = command(
        &server,
        "/v1/deployments",
        json!({"deployment": "d-1", "service": "shop", "env": "prod", "release": "2.0", "waves": [
            {"name": "canary", "group": "canary"}, {"name": "half", "percent": 50},
            {"name": "rest", "hosts": ["web-3", "web-4"]}]}),
    )
    .await;
    assert_eq!(started.event.deployment.as_deref(), Some("d-1"));
    command(&server, "/v1/deployments/d-1/waves/canary/start", json!({})).await;
    report(&server, "web-1", "prod", "2.0", "running", json!({"health": "unhealthy", "message": "disk slow"})).await;
    let with_gates = deployment_until(&server, "d-1", |detail| detail.gates.is_some()).await;
    assert_eq!(with_gates.gates.unwrap().wave, "canary");
    report(&server, "web-2", "prod", "2.0", "failed", json!({"message": "healthcheck timed out"})).await;
    let halted = deployment_until(&server, "d-1", |detail| detail.deployment.halted.is_some()).await;
    assert_eq!(halted.failures.len(), 1);
    command(&server, "/v1/deployments/d-1/waves/canary/complete", json!({"force_reason": "web-2's disk is full"}))
        .await;
    let rolled = command(
        &server,
        "/v1/rollbacks",
        json!({"service": "shop", "env": "prod", "release": "1.0", "reason": "errors"}),
    )
    .await;
    assert_eq!(rolled.event.release.as_deref(), Some("1.0"));
    for host in ["web-1", "web-2"] {
        report(&server, host, "prod", "1.0", "running", json!({"health": "healthy"})).await;
    }
    let ended: types::DeploymentDetail = get(&server, "/v1/deployments/d-1").await;
    assert_eq!((ended.deployment.state.as_str(), ended.deployment.overrides.len()), ("aborted", 1));

    // Alerts, mapped and not.
    let alerts = json!({"version": "4", "status": "firing", "receiver": "fleetlog", "groupKey": "g", "alerts": [
        {"status": "firing", "fingerprint": "f1", "startsAt": "2026-12-07T03:00:00Z",
         "labels": {"alertname": "Errors", "service": "shop", "env": "prod", "host": "web-1", "severity": "critical"},
         "annotations": {"summary": "errors up"}},
        {"status": "firing", "fingerprint": "f2", "startsAt": "2026-12-07T03:00:00Z", "labels": {"alertname": "Disk"}}]});
    let answer: types::AlertmanagerAnswer = post(&server, "/v1/alerts/alertmanager", alerts).await;
    assert_eq!((answer.written, answer.unmapped), (2, 1));
    let listed: types::AlertList = get(&server, "/v1/alerts?state=all").await;
    assert_eq!(listed.alerts.len(), 2);
    let cdevent = json!({
        "context": {"specversion": "0.5.1", "id": "c-1", "source": "/ci", "type": "dev.cdevents.service.deployed.0.3.0",
                    "timestamp": "2026-12-07T03:00:00Z"},
        "subject": {"id": "shop", "content": {"environment": {"id": "prod"}, "artifactId": "pkg:generic/shop@1.0"}}});
    let cloud = json!({"specversion": "1.0", "id": "c-1", "source": "/ci", "type": "dev.cdevents.service.deployed.0.3.0",
                       "data": cdevent});
    let answer: types::CdEventsAnswer = post(&server, "/v1/cdevents", cloud).await;
    assert_eq!((answer.received, answer.written.len()), (1, 1));

    // Appends, pages and streams of events.
    let appended: types::AppendAnswer = post(
        &server,
        "/v1/events",
        json!({"events": [{"id": "cfg-1", "type": "myapp.config.changed", "service": "shop", "env": "prod",
                           "data": {"key": "timeout", "value": 30, "ratio": 0.5, "nested": {"list": [1, "two", null]}}}]}),
    )
    .await;
    assert_eq!(appended.events.len(), 1);
    let page: types::EventPage = get(&server, "/v1/events?limit=10000").await;
    assert_eq!(page.next_seq, page.head_seq + 1);
    let head = page.head_seq;
    get::<types::StreamPage>(&server, "/v1/streams/shop/prod?limit=3").await;
    let decisions: types::DecisionList = get(&server, "/v1/deployments/d-1/decisions").await;
    let halt = decisions.events.iter().find(|event| event.event_type == "deployment.halted").expect("the halt");
    let data: types::PolicyEventData = serde_json::from_value(Value::Object(halt.data.clone())).unwrap();
    assert_eq!(data.decision.and_then(|decision| decision.gate).as_deref(), Some("max_failed"));
    round_trip::<types::Event>(
        "GET /v1/events/1",
        &exchange(&server, reqwest::Method::GET, "/v1/events/1", None).await.1,
    );

    // Views.
    get::<types::FleetView>(&server, "/v1/fleet").await;
    get::<types::FleetView>(&server, "/v1/fleet?at_seq=3").await;
    get::<types::HostDocument>(&server, "/v1/hosts/web-2").await;
    get::<types::DeploymentList>(&server, "/v1/deployments").await;
    get::<types::ReleasesView>(&server, "/v1/services/shop/releases").await;
    get::<types::FleetDiff>(&server, "/v1/fleet/diff?from=5").await;
    get::<types::DoraReport>(&server, "/v1/dora").await;
    get::<types::CalendarList>(&server, "/v1/calendars").await;
    let scoped: types::CalendarList = get(&server, "/v1/calendars?service=shop&env=staging").await;
    assert!(scoped.scope.expect("the scope asked about").frozen);

    // Audit, cluster, health.
    get::<types::InclusionProof>(&server, &format!("/v1/proofs/inclusion?seq=3&tree_size={head}")).await;
    get::<types::ConsistencyProof>(&server, "/v1/proofs/consistency?from_size=2").await;
    let cluster: types::ClusterStatus = get(&server, "/v1/cluster").await;
    assert_eq!(cluster.nodes.len(), 1);
    get::<types::WhoAmI>(&server, "/v1/whoami").await;
    get::<types::Health>(&server, "/healthz").await;
    get::<types::Ready>(&server, "/readyz").await;

    // The watch stream's messages.
    let client = Client::new(&server.url).unwrap();
    let mut watch = client.stream("/v1/watch/web-1", &[], None).await.unwrap();
    let state = watch.next().await.unwrap().unwrap();
    assert_eq!(state.event.as_deref(), Some("state"));
    round_trip::<types::WatchState>("watch state", &state.data);
    let mut resumed = client.stream("/v1/watch/web-1", &[("from_seq", "1".to_string())], None).await.unwrap();
    let directive = resumed.next().await.unwrap().unwrap();
    assert_eq!(directive.event.as_deref(), Some("directive"));
    round_trip::<types::Directive>("watch directive", &directive.data);

    // Errors: plain, with the event to blame, with the field to blame.
    let (status, missing) = error(&server, reqwest::Method::GET, "/v1/deployments/nope", None).await;
    assert_eq!((status, missing.error.code.as_str()), (404, "deployment_not_found"));
    let batch = json!({"events": [{"type": "myapp.ok"}, {"type": "nodot"}]});
    let (_, blamed) = error(&server, reqwest::Method::POST, "/v1/events", Some(batch)).await;
    assert_eq!(blamed.error.event_index, Some(1));
    let bad_policy = json!({"policy": {"min_healthy": {"percent": 500}}});
    let (_, field) = error(&server, reqwest::Method::PUT, "/v1/policies/shop/prod", Some(bad_policy)).await;
    assert!(field.error.field.is_some(), "{field:?}");
}

/// `FLEETLOG_SHAPES_DIR=DIR` writes the shape of each answer (member names, order, nulls, kinds
/// of value) to DIR, one file per request, so two builds' wire formats can be compared with
/// `diff -r`.
mod shapes {
    use serde_json::Value;

    pub fn record(what: &str, value: &Value) {
        let Ok(directory) = std::env::var("FLEETLOG_SHAPES_DIR") else { return };
        let name: String =
            what.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        let text = serde_json::to_string_pretty(&shape(value)).unwrap();
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(std::path::Path::new(&directory).join(format!("{name}.json")), text).unwrap();
    }

    fn shape(value: &Value) -> Value {
        match value {
            Value::String(_) => Value::String("string".into()),
            Value::Number(number) if number.is_f64() => Value::String("float".into()),
            Value::Number(_) => Value::String("integer".into()),
            Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
            Value::Object(members) => {
                Value::Object(members.iter().map(|(name, value)| (name.clone(), shape(value))).collect())
            }
            other => other.clone(),
        }
    }
}
