//! Webhooks end to end (decision 102, docs/webhooks.md): real `fleetlog serve` processes and a
//! real HTTP receiver on 127.0.0.1 that checks every signature, records every attempt, and can be
//! told to fail, to hang past the delivery timeout, or to stop and start again on its port.
//!
//! What every run asserts of the attempts the receiver saw: each event the filters match after
//! the webhook was added is acknowledged, first deliveries come in seq order with no gap, a
//! repeated delivery carries the same delivery id as before, nothing else is delivered (progress
//! events included), and every signature is valid.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::cluster::{Cluster, Options};
use common::{binary, Server};
use fleetlog_raft::domain::webhooks::hmac_sha256;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// `--webhook-timeout-seconds` and `--webhook-retry-max-seconds` of the servers under test.
const FAST_DELIVERY: [&str; 4] = ["--webhook-timeout-seconds", "1", "--webhook-retry-max-seconds", "1"];
/// How long a hanging receiver holds a request: well past the timeout above.
const HANG: Duration = Duration::from_millis(2_500);
/// Longest a test waits for deliveries to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);

/// What the receiver does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Acknowledge,
    Fail,
    Hang,
}

/// One request the receiver saw.
#[derive(Clone, Debug)]
struct Attempt {
    delivery: String,
    seq: u64,
    event_type: String,
    signature_valid: bool,
    /// It answered 2xx in time.
    acknowledged: bool,
    /// The test's phase when it arrived.
    phase: u32,
}

#[derive(Default)]
struct Seen {
    secret: Option<String>,
    mode: Option<Mode>,
    phase: u32,
    attempts: Vec<Attempt>,
}

/// The receiver: an axum server that can be stopped and started again on the same port.
struct Receiver {
    address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut receiver = Receiver { address, seen: Arc::default(), stop: None };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new().route("/hook", post(receive)).with_state(self.seen.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.stop = Some(stop);
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Stops listening: deliveries meanwhile cannot connect.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Until the port refuses connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.address).await.is_ok() {
            assert!(Instant::now() < deadline, "the receiver did not stop listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {error}", self.address);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot listen on {} again: {error}", self.address),
            }
        };
        self.serve(listener);
    }

    fn set_secret(&self, secret: &str) {
        self.seen.lock().unwrap().secret = Some(secret.to_string());
    }

    fn set_mode(&self, mode: Mode) {
        self.seen.lock().unwrap().mode = Some(mode);
    }

    fn set_phase(&self, phase: u32) {
        self.seen.lock().unwrap().phase = phase;
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.seen.lock().unwrap().attempts.clone()
    }

    fn acknowledged(&self) -> BTreeSet<u64> {
        self.attempts().iter().filter(|attempt| attempt.acknowledged).map(|attempt| attempt.seq).collect()
    }

    /// Waits until every seq of `wanted` was acknowledged.
    async fn wait_acknowledged(&self, wanted: &BTreeSet<u64>, context: &dyn Fn() -> String) {
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let acknowledged = self.acknowledged();
            if wanted.is_subset(&acknowledged) {
                return;
            }
            if Instant::now() > deadline {
                let missing: Vec<&u64> = wanted.difference(&acknowledged).collect();
                panic!("seqs {missing:?} were never acknowledged within {CATCH_UP:?}\n{}", context());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (mode, signature_valid) = {
        let seen = seen.lock().unwrap();
        let timestamp = header("fleetlog-timestamp");
        let fresh =
            timestamp.parse::<i64>().is_ok_and(|seconds| (chrono::Utc::now().timestamp() - seconds).abs() < 300);
        let expected = seen.secret.as_ref().map(|secret| {
            format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", &body])))
        });
        (seen.mode.unwrap_or(Mode::Acknowledge), fresh && expected == Some(header("fleetlog-signature")))
    };
    if mode == Mode::Hang {
        tokio::time::sleep(HANG).await;
    }
    let mut seen = seen.lock().unwrap();
    let phase = seen.phase;
    seen.attempts.push(Attempt {
        delivery: header("fleetlog-delivery"),
        seq: event["seq"].as_u64().unwrap_or(0),
        event_type: header("fleetlog-event"),
        signature_valid: signature_valid && event["type"].as_str() == Some(header("fleetlog-event").as_str()),
        acknowledged: mode == Mode::Acknowledge,
        phase,
    });
    match mode {
        Mode::Acknowledge => StatusCode::NO_CONTENT,
        // A hanging answer arrives after the sender gave up; its status does not matter.
        Mode::Fail | Mode::Hang => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The filters of the webhooks under test, and which types they match.
const FILTERS: &str = "shop.deploy.,shop.rollback";

fn wanted_type(event_type: &str) -> bool {
    event_type.starts_with("shop.deploy.") || event_type == "shop.rollback"
}

/// Types appended in turn: two the filters match, two they do not (one shares a prefix's start).
const TYPES: [&str; 4] = ["shop.deploy.started", "shop.audit", "shop.rollback", "shop.deployment.noted"];

/// Runs the CLI against `server`: its standard output, which must be a success.
async fn cli(server: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(binary())
        .args(["--server", server])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "fleetlog {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Adds a webhook with the CLI; (id, secret, added seq).
async fn add_webhook(server: &str, receiver: &Receiver) -> (String, String, u64) {
    let text =
        cli(server, &["--output", "json", "webhook", "add", "--url", &receiver.url(), "--events", FILTERS]).await;
    let created: Value = serde_json::from_str(&text).unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    // People are told to keep it, since it is shown once.
    let human = cli(server, &["webhook", "list"]).await;
    assert!(!human.contains(&secret), "the list shows the secret: {human}");
    (created["webhook"]["id"].as_str().unwrap().to_string(), secret, created["webhook"]["added_seq"].as_u64().unwrap())
}

/// Appends `count` events of [`TYPES`] in turn, numbered from `first`, one request each, to
/// `server` (retried on the same id while the cluster has no leader).
async fn append(http: &reqwest::Client, servers: &[String], first: u64, count: u64) {
    for number in first..first + count {
        let event_type = TYPES[(number % TYPES.len() as u64) as usize];
        let body =
            json!({"events": [{"id": format!("event-{number}"), "type": event_type, "data": {"number": number}}]});
        let deadline = Instant::now() + CATCH_UP;
        'retry: loop {
            for server in servers {
                let answer =
                    http.post(format!("{server}/v1/events")).json(&body).timeout(Duration::from_secs(10)).send().await;
                if let Ok(answer) = answer {
                    if answer.status().is_success() {
                        break 'retry;
                    }
                }
            }
            assert!(Instant::now() < deadline, "event {number} could not be appended");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The seqs after `added_seq` whose type the filters match, from the log itself.
fn matching_seqs(log: &[Value], added_seq: u64) -> BTreeSet<u64> {
    log.iter()
        .filter(|event| event["seq"].as_u64().unwrap() > added_seq && wanted_type(event["type"].as_str().unwrap()))
        .map(|event| event["seq"].as_u64().unwrap())
        .collect()
}

/// What a failed wait prints: the attempts and the server's log.
fn describe(receiver: &Receiver, log: &std::path::Path) -> String {
    format!("attempts: {:?}\nserver log:\n{}", receiver.attempts(), std::fs::read_to_string(log).unwrap_or_default())
}

/// The assertions every run makes of what the receiver saw.
fn check_attempts(attempts: &[Attempt], webhook: &str, wanted: &BTreeSet<u64>) {
    assert!(!attempts.is_empty());
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for attempt in attempts {
        assert!(attempt.signature_valid, "a bad signature: {attempt:?}");
        assert_eq!(attempt.delivery, format!("{webhook}:{}", attempt.seq), "{attempt:?}");
        assert!(wanted.contains(&attempt.seq), "delivered an event the filters do not match: {attempt:?}");
        assert!(wanted_type(&attempt.event_type), "{attempt:?}");
        if seen.insert(attempt.seq) {
            first_seen.push(attempt.seq);
        }
    }
    let in_order: Vec<u64> = wanted.iter().copied().collect();
    assert_eq!(first_seen, in_order, "first deliveries out of seq order, or with a gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_failures_timeouts_a_stopped_receiver_and_a_restarted_server() {
    let directory = tempfile::TempDir::new().unwrap();
    let mut server = Server::start_with(&directory.path().join("data"), &FAST_DELIVERY).await;
    let servers = vec![server.url.clone()];
    let mut receiver = Receiver::start().await;
    // Events before the webhook exists are not its business.
    append(&server.http, &servers, 0, 4).await;
    let (webhook, secret, added_seq) = add_webhook(&server.url, &receiver).await;
    receiver.set_secret(&secret);
    let log = directory.path().join("data.log");

    // 1: a receiver that acknowledges.
    receiver.set_phase(1);
    append(&server.http, &servers, 4, 12).await;
    let wanted = matching_seqs(&server.all_events().await, added_seq);
    receiver.wait_acknowledged(&wanted, &|| describe(&receiver, &log)).await;

    // 2: a receiver answering 500 for a while: retried, nothing skipped.
    receiver.set_phase(2);
    receiver.set_mode(Mode::Fail);
    append(&server.http, &servers, 16, 8).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(receiver.attempts().iter().any(|attempt| attempt.phase == 2 && !attempt.acknowledged));
    receiver.set_mode(Mode::Acknowledge);
    let wanted = matching_seqs(&server.all_events().await, added_seq);
    receiver.wait_acknowledged(&wanted, &|| describe(&receiver, &log)).await;

    // 3: a receiver that hangs past the timeout.
    receiver.set_phase(3);
    receiver.set_mode(Mode::Hang);
    append(&server.http, &servers, 24, 4).await;
    tokio::time::sleep(HANG + Duration::from_millis(500)).await;
    receiver.set_mode(Mode::Acknowledge);
    let wanted = matching_seqs(&server.all_events().await, added_seq);
    receiver.wait_acknowledged(&wanted, &|| describe(&receiver, &log)).await;
    let (_, listed) = server.get("/v1/webhooks").await;
    assert!(!listed.to_string().contains(&secret), "the list shows the secret: {listed}");

    // 4: a receiver that is down, then back on the same port.
    receiver.set_phase(4);
    receiver.stop().await;
    append(&server.http, &servers, 28, 8).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, listed) = server.get("/v1/webhooks").await;
    let error = listed["webhooks"][0]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("cannot reach"), "the list should say why deliveries wait: {listed}");
    receiver.restart().await;
    let wanted = matching_seqs(&server.all_events().await, added_seq);
    receiver.wait_acknowledged(&wanted, &|| describe(&receiver, &log)).await;

    // The progress is in the log once deliveries are idle for a second.
    let settled = *wanted.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) =
            server.get(&format!("/v1/streams/webhooks/{webhook}/progress?from_version=0&limit=10000")).await;
        let recorded =
            page["events"].as_array().and_then(|events| events.last()).map(|event| event["data"]["seq"].clone());
        if recorded == Some(json!(settled)) {
            assert!(page["events"].as_array().unwrap().iter().all(|event| event["actor"] == "system:webhooks"));
            break;
        }
        assert!(Instant::now() < deadline, "progress {recorded:?} never reached {settled}: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 5: the server killed mid-stream and started again: it resumes from the recorded progress.
    receiver.set_phase(5);
    append(&server.http, &servers, 36, 40).await;
    let deadline = Instant::now() + CATCH_UP;
    while !receiver.attempts().iter().any(|attempt| attempt.phase == 5) {
        assert!(Instant::now() < deadline, "no delivery in phase 5\n{}", describe(&receiver, &log));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill_and_restart_with(&FAST_DELIVERY).await;
    receiver.set_phase(6);
    append(&server.http, &servers, 76, 8).await;
    let wanted = matching_seqs(&server.all_events().await, added_seq);
    receiver.wait_acknowledged(&wanted, &|| describe(&receiver, &log)).await;

    let attempts = receiver.attempts();
    check_attempts(&attempts, &webhook, &wanted);
    // What was recorded before the kill is not sent again: only the unrecorded tail is.
    let resent: Vec<&Attempt> =
        attempts.iter().filter(|attempt| attempt.phase == 6 && attempt.seq <= settled).collect();
    assert!(resent.is_empty(), "events acknowledged and recorded before the restart were sent again: {resent:?}");
    for phase in [2, 3, 4] {
        assert!(attempts.iter().any(|attempt| attempt.phase == phase), "phase {phase} saw no attempt");
    }

    // Removed: nothing more is sent.
    cli(&server.url, &["webhook", "remove", &webhook]).await;
    let (_, listed) = server.get("/v1/webhooks").await;
    assert_eq!(listed["webhooks"], json!([]), "{listed}");
    let before = receiver.attempts().len();
    append(&server.http, &servers, 84, 4).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.attempts().len(), before, "a removed webhook still receives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_resumes_deliveries_with_the_same_delivery_ids() {
    // Every node reads these (the harness starts nodes without extra flags).
    std::env::set_var("FLEETLOG_WEBHOOK_TIMEOUT_SECONDS", "1");
    std::env::set_var("FLEETLOG_WEBHOOK_RETRY_MAX_SECONDS", "1");
    let mut cluster = Cluster::start(Options::default()).await;
    let leader = cluster.wait_leader().await;
    let receiver = Receiver::start().await;
    let (webhook, secret, added_seq) = add_webhook(&cluster.url(leader), &receiver).await;
    receiver.set_secret(&secret);
    let all: Vec<String> = cluster.endpoints().into_iter().map(|(_, url)| url).collect();

    receiver.set_phase(1);
    append(&cluster.http, &all, 0, 20).await;
    // Kill the leader while it is delivering.
    let deadline = Instant::now() + CATCH_UP;
    while receiver.acknowledged().is_empty() {
        assert!(Instant::now() < deadline, "no delivery before the kill\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(leader);
    receiver.set_phase(2);
    let others: Vec<String> =
        cluster.endpoints().into_iter().filter(|(id, _)| *id != leader).map(|(_, url)| url).collect();
    append(&cluster.http, &others, 20, 20).await;
    let survivors: Vec<u64> = cluster.voters().into_iter().filter(|id| *id != leader).collect();
    let new_leader = cluster.wait_leader_among(&survivors).await;
    assert_ne!(new_leader, leader);
    let log = cluster.server(new_leader).all_events().await;
    let wanted = matching_seqs(&log, added_seq);
    receiver.wait_acknowledged(&wanted, &|| format!("{:?}\n{}", receiver.attempts(), cluster.logs())).await;

    // The old leader comes back as a follower; deliveries go on from the new leader.
    cluster.restart(leader).await;
    receiver.set_phase(3);
    append(&cluster.http, &all, 40, 8).await;
    let log = cluster.server(new_leader).all_events().await;
    let wanted = matching_seqs(&log, added_seq);
    receiver.wait_acknowledged(&wanted, &|| format!("{:?}\n{}", receiver.attempts(), cluster.logs())).await;
    check_attempts(&receiver.attempts(), &webhook, &wanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_with_a_code_and_write_nothing() {
    let server = Server::start().await;
    let head = server.head().await;
    for (body, code, field) in [
        (json!({"url": "ftp://example.com/x", "events": ["wave."]}), "invalid_field", Some("data.url")),
        (json!({"url": "not a url", "events": ["wave."]}), "invalid_field", None),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["wave."], "format": "xml"}),
            "invalid_field",
            Some("data.format"),
        ),
        (json!({"url": "http://127.0.0.1:9/x", "events": []}), "invalid_field", Some("data.events")),
        (json!({"url": "http://127.0.0.1:9/x", "events": ["Wave."]}), "invalid_type", Some("data.events[0]")),
        (json!({"url": "http://127.0.0.1:9/x", "events": "wave."}), "invalid_field", Some("data.events")),
        (json!({"events": ["wave."]}), "missing_field", None),
        (json!({"url": "http://127.0.0.1:9/x", "events": ["wave."], "secret": "mine"}), "unknown_field", None),
    ] {
        let (status, answer) = server.post("/v1/webhooks", &body).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
        }
    }
    // Webhook events take their own paths: not appended by hand, progress not forged.
    for event_type in ["webhook.added", "webhook.progressed"] {
        let body = json!({"events": [{"type": event_type, "data": {"webhook": "wh-1", "seq": 1}}]});
        let (status, answer) = server.post("/v1/events", &body).await;
        assert_eq!((status, answer["error"]["code"].clone()), (422, json!("reserved_type")), "{answer}");
    }
    let (status, answer) = server.send(reqwest::Method::DELETE, "/v1/webhooks/wh-none", None).await;
    assert_eq!((status, answer["error"]["code"].clone()), (404, json!("unknown_webhook")), "{answer}");
    assert_eq!(server.head().await, head, "a refused webhook wrote something");
    let (status, listed) = server.get("/v1/webhooks").await;
    assert_eq!((status, listed), (200, json!({"webhooks": []})));
}
