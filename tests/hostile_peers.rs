//! Hostile peers and clients against real `fleetlog serve` processes (docs/security.md, "Limits"
//! and "Slow and silent clients"): a peer call without the cluster secret is refused from its
//! headers before its body is read, an append stream is switched to only with it and closes on a
//! bad frame; a stream whose client stopped reading is closed after the
//! send timeout and resumes with `Last-Event-ID`; a page of the log stops at its byte budget and
//! continues where it says; shutdown drops a stuck client after its grace period; connections
//! beyond the cap get 503 `too_many_connections`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest a test waits for one answer.
const WAIT: Duration = Duration::from_secs(30);
/// What an event's data holds in the tests that need large events: close to the 64 KiB limit.
const LARGE_DATA_BYTES: usize = 60 * 1024;

/// A `fleetlog serve` process with its own data directory.
struct Node {
    url: String,
    address: String,
    child: Option<Child>,
    log: PathBuf,
    _directory: tempfile::TempDir,
    http: reqwest::Client,
}

/// A client that keeps no idle connection (the connection-cap test counts connections).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(WAIT).build().unwrap()
}

impl Node {
    async fn start(extra: &[&str]) -> Node {
        let directory = tempfile::TempDir::new().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let log = directory.path().join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_fleetlog"))
            .args(["serve", "--listen", &address, "--data"])
            .arg(directory.path().join("data"))
            .args(extra)
            .env("FLEETLOG_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn fleetlog serve");
        let node = Node {
            url: format!("http://{address}"),
            address,
            child: Some(child),
            log,
            _directory: directory,
            http: http_client(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = node.http.get(format!("{}/readyz", node.url)).send().await {
                if response.status().is_success() {
                    return node;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready; log: {}", node.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Resident memory of the server, from `/proc/PID/status`.
    fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kibibytes = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        kibibytes * 1024
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.url)).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A gauge or counter of `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }

    /// Appends `count` notes to stream "notes", each with `data_bytes` of data, ten per request;
    /// returns the last seq.
    async fn append_notes(&self, count: usize, data_bytes: usize) -> u64 {
        let mut last = 0;
        for first in (0..count).step_by(10) {
            let events: Vec<Value> = (first..count.min(first + 10))
                .map(|_| json!({"type": "app.note", "stream": "notes", "data": {"text": "x".repeat(data_bytes)}}))
                .collect();
            let response = self
                .http
                .post(format!("{}/v1/events", self.url))
                .json(&json!({"events": events}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 201, "{body}");
            last = body["last_seq"].as_u64().unwrap();
        }
        last
    }

    /// SIGTERM; how long the process took to exit, or None if it still runs after `limit`.
    async fn terminate_within(&mut self, limit: Duration) -> Option<Duration> {
        let child = self.child.as_mut().expect("server is running");
        // SAFETY: the pid is our own child, which has not been waited for yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let began = Instant::now();
        while began.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return Some(began.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads an HTTP response head (through the blank line) from `connection`; None if the
/// connection ends first.
async fn read_head(connection: &mut (impl AsyncReadExt + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match connection.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn status_of(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or(0)
}

// ---- peer routes ----

/// What happened to a request that announced a huge body.
struct HugeBody {
    /// Status of the answer, 0 if none came.
    status: u16,
    /// Bytes of the body sent when the answer arrived (all of them if it never did early).
    sent_at_answer: u64,
    /// Largest growth of the server's resident memory while the request was under way.
    rss_growth: u64,
}

/// POSTs `body_bytes` of zeros to `path` on a raw connection, reading the answer while sending;
/// stops sending once the answer is in (or the server stops taking bytes).
async fn send_huge_body(node: &Node, path: &str, secret: Option<&str>, body_bytes: u64) -> HugeBody {
    let connection = TcpStream::connect(&node.address).await.unwrap();
    let (mut reader, mut writer) = connection.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));

    let baseline = node.resident_bytes();
    let pid = node.pid();
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while !done.load(Ordering::SeqCst) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024;
                peak = peak.max(rss);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let answer = {
        let (sent, answered) = (sent.clone(), answered.clone());
        tokio::spawn(async move {
            let head = read_head(&mut reader).await;
            let at = sent.load(Ordering::SeqCst);
            answered.store(true, Ordering::SeqCst);
            (head, at)
        })
    };

    let secret_line =
        secret.map(|secret| format!("{}: {secret}\r\n", fleetlog_raft::consensus::peer::client::SECRET_HEADER));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\n{}content-length: {body_bytes}\r\n\r\n",
        secret_line.unwrap_or_default()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0u8; 256 * 1024];
    let began = Instant::now();
    while sent.load(Ordering::SeqCst) < body_bytes && !answered.load(Ordering::SeqCst) && began.elapsed() < WAIT {
        let left = (body_bytes - sent.load(Ordering::SeqCst)).min(chunk.len() as u64) as usize;
        // A server that stopped reading leaves this write waiting: check for the answer meanwhile.
        match tokio::time::timeout(Duration::from_millis(200), writer.write_all(&chunk[..left])).await {
            Ok(Ok(())) => {
                sent.fetch_add(left as u64, Ordering::SeqCst);
            }
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    let (head, sent_at_answer) = tokio::time::timeout(WAIT, answer).await.expect("an answer").unwrap();
    done.store(true, Ordering::SeqCst);
    let peak = sampler.await.unwrap();
    HugeBody { status: head.as_deref().map_or(0, status_of), sent_at_answer, rss_growth: peak.saturating_sub(baseline) }
}

/// Runs `fleetlog token create` and returns its token-file line.
fn token_file_line(role: &str, name: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fleetlog"))
        .args(["token", "create", "--role", role, "--name", name])
        .output()
        .expect("run fleetlog token create");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().nth(1).expect("a token-file line").to_string()
}

/// A caller without the cluster secret that announces 100 MiB to a peer route is refused from its
/// headers alone: the answer arrives while it is still sending, and the server's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_call_without_the_secret_is_refused_before_its_body_is_read() {
    const BODY_BYTES: u64 = 100 * 1024 * 1024;
    let with_secret = Node::start(&["--cluster-secret", "the-right-secret"]).await;
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), format!("{}\n", token_file_line("admin", "ops"))).unwrap();
    // A single node with tokens and no secret takes no peer calls at all (403).
    let without_secret = Node::start(&["--token-file", tokens.path().to_str().unwrap()]).await;
    let cases = [
        (&with_secret, fleetlog_raft::consensus::peer::client::path::APPEND_ENTRIES, None, 401),
        (&with_secret, fleetlog_raft::consensus::peer::client::path::INSTALL_SNAPSHOT, Some("a-wrong-secret"), 401),
        (&without_secret, fleetlog_raft::consensus::peer::client::path::FORWARD_APPEND, None, 403),
    ];
    for (node, path, secret, expected) in cases {
        let outcome = send_huge_body(node, path, secret, BODY_BYTES).await;
        let what = format!("POST {path} with secret {secret:?}");
        eprintln!(
            "{what}: {} after {} KiB of the body, resident memory +{} KiB",
            outcome.status,
            outcome.sent_at_answer / 1024,
            outcome.rss_growth / 1024
        );
        assert_eq!(outcome.status, expected, "{what}");
        // Socket buffers on both sides hold a few MiB; the server read nothing past them.
        assert!(
            outcome.sent_at_answer < 32 * 1024 * 1024,
            "{what}: the answer came only after {} MiB of the body",
            outcome.sent_at_answer / (1024 * 1024)
        );
        assert!(
            outcome.rss_growth < 20 * 1024 * 1024,
            "{what}: the server's memory grew by {} MiB",
            outcome.rss_growth / (1024 * 1024)
        );
    }
    // Refusing hurt neither node.
    assert_eq!(with_secret.get("/readyz").await.0, 200);
    assert_eq!(without_secret.get("/readyz").await.0, 200);
}

/// Sends the request that opens an append stream on a new connection and returns the connection
/// with the status of its answer.
async fn open_append_stream(node: &Node, secret: Option<&str>, protocol: &str) -> (TcpStream, u16) {
    let mut connection = TcpStream::connect(&node.address).await.unwrap();
    let secret_line =
        secret.map(|secret| format!("{}: {secret}\r\n", fleetlog_raft::consensus::peer::client::SECRET_HEADER));
    let head = format!(
        "GET {} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n{}\r\n",
        fleetlog_raft::consensus::peer::client::path::APPEND_STREAM,
        secret_line.unwrap_or_default()
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    let status = tokio::time::timeout(WAIT, read_head(&mut connection)).await.unwrap().as_deref().map_or(0, status_of);
    (connection, status)
}

/// Whether the server closes `connection` within a few seconds, reading and dropping whatever it
/// still sends.
async fn closed_by_server(connection: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), connection.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

/// The append stream is switched to only for a caller with the secret and the protocol; once
/// switched, a frame that claims more than the frame limit, or one that does not decode, closes
/// the stream without the server reserving the memory it claims, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_stream_needs_the_secret_and_closes_on_a_bad_frame() {
    let node = Node::start(&["--cluster-secret", "the-right-secret"]).await;
    let protocol = fleetlog_raft::consensus::peer::append_stream::UPGRADE_PROTOCOL;
    assert_eq!(open_append_stream(&node, None, protocol).await.1, 401, "no secret");
    assert_eq!(open_append_stream(&node, Some("a-wrong-secret"), protocol).await.1, 401, "a wrong secret");
    assert_eq!(open_append_stream(&node, Some("the-right-secret"), "websocket").await.1, 426, "another protocol");

    let baseline = node.resident_bytes();
    let (mut oversized, status) = open_append_stream(&node, Some("the-right-secret"), protocol).await;
    assert_eq!(status, 101);
    // A length of 4 GiB - 1, and then bytes that never add up to it.
    oversized.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let _ = oversized.write_all(&[7u8; 4096]).await;
    assert!(closed_by_server(&mut oversized).await, "a frame over the limit closes the stream");
    let growth = node.resident_bytes().saturating_sub(baseline);
    assert!(growth < 64 * 1024 * 1024, "the server's memory grew by {} MiB", growth / (1024 * 1024));

    let (mut garbage, status) = open_append_stream(&node, Some("the-right-secret"), protocol).await;
    assert_eq!(status, 101);
    let mut frame = 16u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xAB; 16]);
    garbage.write_all(&frame).await.unwrap();
    assert!(closed_by_server(&mut garbage).await, "an undecodable request closes the stream");

    assert_eq!(node.get("/readyz").await.0, 200);
}

// ---- streams whose client stopped reading ----

/// How a stream request reaches the server.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// As the connection's first request: served straight on the socket.
    Direct,
    /// After another request on the same connection: served by the router.
    Router,
}

/// Opens `GET /v1/subscribe` on a connection with a small receive buffer and returns it unread.
async fn stalled_subscriber(node: &Node, route: Route) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    let mut connection = socket.connect(node.address.parse().unwrap()).await.unwrap();
    if let Route::Router = route {
        connection.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let head = read_head(&mut connection).await.expect("an answer to /healthz");
        let length: usize = head
            .lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .and_then(|length| length.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        connection.read_exact(&mut body).await.unwrap();
    }
    connection.write_all(b"GET /v1/subscribe HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    connection
}

/// The id of the last complete SSE message in `received` (any framing around it is skipped).
fn last_complete_id(received: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(received);
    let parts: Vec<&str> = text.split("\n\n").collect();
    // Everything but the last part ended with a blank line: complete.
    parts[..parts.len().saturating_sub(1)]
        .iter()
        .rev()
        .find_map(|message| message.lines().find_map(|line| line.strip_prefix("id: ")?.trim().parse::<u64>().ok()))
}

/// The id of the first message of a stream resumed after `last_event_id`.
async fn first_id_after(node: &Node, last_event_id: u64) -> u64 {
    let mut connection = TcpStream::connect(&node.address).await.unwrap();
    let request = format!("GET /v1/subscribe HTTP/1.1\r\nhost: x\r\nlast-event-id: {last_event_id}\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let began = Instant::now();
    loop {
        if let Some(position) = received.windows(4).position(|window| window == b"id: ") {
            let rest = &received[position + 4..];
            if let Some(end) = rest.iter().position(|byte| *byte == b'\n') {
                return String::from_utf8_lossy(&rest[..end]).trim().parse().unwrap();
            }
        }
        assert!(began.elapsed() < WAIT, "no message after resuming from {last_event_id}");
        let read = tokio::time::timeout(WAIT, connection.read(&mut buffer)).await.unwrap().unwrap();
        assert!(read > 0, "the resumed stream ended before its first message");
        received.extend_from_slice(&buffer[..read]);
    }
}

/// A stream whose client stops reading is closed within the send timeout once the socket is full,
/// on both of the server's stream paths, which frees its subscriber slot; the client resumes
/// with Last-Event-ID and gets exactly the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_that_never_reads_is_dropped_after_the_send_timeout() {
    const SEND_TIMEOUT_SECONDS: u64 = 2;
    let timeout = SEND_TIMEOUT_SECONDS.to_string();
    let node = Node::start(&["--send-timeout-seconds", &timeout, "--max-subscribers", "1"]).await;
    node.append_notes(1, 10).await;
    for route in [Route::Direct, Route::Router] {
        let mut stalled = stalled_subscriber(&node, route).await;
        let began = Instant::now();
        while node.metric("fleetlog_subscribers").await != 1.0 {
            assert!(began.elapsed() < WAIT, "{route:?}: the stream never opened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // About 12 MiB of events: far more than the socket buffers on both sides hold.
        let head = node.append_notes(200, LARGE_DATA_BYTES).await;
        let appended = Instant::now();
        let limit = Duration::from_secs(SEND_TIMEOUT_SECONDS + 5);
        while node.metric("fleetlog_subscribers").await != 0.0 {
            assert!(
                appended.elapsed() < limit,
                "{route:?}: a stream nobody reads still holds its slot {:?} after the socket filled",
                appended.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("{route:?}: the stalled stream ended {:?} after the appends", appended.elapsed());
        assert!(node.metric("fleetlog_send_timeouts_total").await >= 1.0);

        // The client finds its connection closed after what it was sent, and resumes.
        let mut received = Vec::new();
        let _ = tokio::time::timeout(WAIT, stalled.read_to_end(&mut received)).await.expect("the connection ends");
        let last = last_complete_id(&received).unwrap_or(head - 200);
        eprintln!("{route:?}: the client had {} bytes, complete up to seq {last} of {head}", received.len());
        assert!(last < head, "{route:?}: a client that read nothing got every event");
        assert_eq!(first_id_after(&node, last).await, last + 1, "{route:?}: resuming after {last}");
        let began = Instant::now();
        while node.metric("fleetlog_subscribers").await != 0.0 {
            assert!(began.elapsed() < WAIT, "the resumed stream never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- pages of the log ----

/// A log page that would pass its byte budget (4 MiB) stops early, and its `next_seq` (or a
/// stream page's `next_version`) continues exactly where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_over_the_byte_budget_is_cut_and_next_continues_it() {
    let node = Node::start(&[]).await;
    // About 6 MiB of events.
    let head = node.append_notes(100, LARGE_DATA_BYTES).await;
    let budget = fleetlog_raft::domain::limits::READ_PAGE_BUDGET_BYTES;

    let mut seqs = Vec::new();
    let mut from = 1;
    let mut pages = 0;
    loop {
        let response =
            node.http.get(format!("{}/v1/events?from_seq={from}&limit=10000", node.url)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body = response.bytes().await.unwrap();
        assert!(body.len() < budget + 2 * LARGE_DATA_BYTES, "a page of {} bytes", body.len());
        let page: Value = serde_json::from_slice(&body).unwrap();
        let events = page["events"].as_array().unwrap();
        let next = page["next_seq"].as_u64().unwrap();
        pages += 1;
        seqs.extend(events.iter().map(|event| event["seq"].as_u64().unwrap()));
        if next > page["head_seq"].as_u64().unwrap() {
            break;
        }
        assert_eq!(next, events.last().unwrap()["seq"].as_u64().unwrap() + 1, "next_seq follows the page");
        from = next;
    }
    assert!(pages >= 2, "6 MiB of events came in one page");
    assert_eq!(seqs, (1..=head).collect::<Vec<u64>>(), "every event once, in order");

    let mut versions = Vec::new();
    let mut from = 0;
    loop {
        let (status, page) = node.get(&format!("/v1/streams/notes?from_version={from}&limit=10000")).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        versions.extend(events.iter().map(|event| event["version"].as_u64().unwrap()));
        from = page["next_version"].as_u64().unwrap();
    }
    assert_eq!(versions, (0..100).collect::<Vec<u64>>(), "every version once, in order");
}

// ---- shutdown ----

/// SIGTERM with a client stuck in the middle of a request body (its body timeout two minutes
/// away) ends the server within the shutdown grace period, not when the client gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_stuck_client_ends_within_the_grace_period() {
    const GRACE_SECONDS: u64 = 2;
    let grace = GRACE_SECONDS.to_string();
    let mut node = Node::start(&["--client-timeout-seconds", "120", "--shutdown-grace-seconds", &grace]).await;
    let mut stuck = TcpStream::connect(&node.address).await.unwrap();
    stuck
        .write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ev")
        .await
        .unwrap();
    // The request is in flight once the server waits for the rest of its body.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let limit = Duration::from_secs(GRACE_SECONDS + 8);
    let took = node.terminate_within(limit).await;
    eprintln!("SIGTERM with a stuck client: exited after {took:?}");
    assert!(took.is_some(), "the server still ran {limit:?} after SIGTERM with a stuck client; log: {}", node.log());
    drop(stuck);
}

// ---- the connection cap ----

/// Beyond `--max-connections` a connection is answered 503 `too_many_connections` (a raw one and
/// an ordinary HTTP client alike), and once a connection closes the next one is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_cap_gets_503() {
    const MAX_CONNECTIONS: usize = 4;
    let cap = MAX_CONNECTIONS.to_string();
    let node = Node::start(&["--max-connections", &cap]).await;
    // Fill every slot with idle connections. A connection over the cap is answered at once and
    // closed, while an admitted idle one hears nothing: one refused because the connection of an
    // earlier request (the readiness probes') was still counted is replaced until all are in.
    let began = Instant::now();
    let mut idle = Vec::new();
    while idle.len() < MAX_CONNECTIONS {
        let mut connection = TcpStream::connect(&node.address).await.unwrap();
        let mut first = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), connection.read(&mut first)).await {
            Err(_) => idle.push(connection),
            Ok(_) => {
                assert!(began.elapsed() < WAIT, "connections of finished requests stay counted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    let mut over = TcpStream::connect(&node.address).await.unwrap();
    over.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, over.read_to_end(&mut answer)).await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.contains("\"too_many_connections\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");

    let response = http_client().get(format!("{}/healthz", node.url)).send().await.expect("an answer");
    assert_eq!(response.status().as_u16(), 503);

    // One connection closes: its slot is free again.
    drop(idle.pop());
    let began = Instant::now();
    loop {
        match http_client().get(format!("{}/healthz", node.url)).send().await {
            Ok(response) if response.status().as_u16() == 200 => break,
            _ => assert!(began.elapsed() < WAIT, "a freed connection slot was never reused"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection of the request just served may still be counted for a moment.
    let began = Instant::now();
    let metrics = loop {
        if let Ok(response) = http_client().get(format!("{}/metrics", node.url)).send().await {
            if response.status().as_u16() == 200 {
                break response.text().await.unwrap();
            }
        }
        assert!(began.elapsed() < WAIT, "/metrics never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("fleetlog_connections_refused_total ")?.trim().parse().ok())
        .expect("fleetlog_connections_refused_total");
    assert!(refused >= 2.0, "{refused} refusals counted");
    drop(idle);
}
