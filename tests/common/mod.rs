//! Shared harness for end-to-end tests: real `fleetlog serve` processes on free ports.

#![allow(dead_code)]

pub mod cluster;
pub mod history;
pub mod lossy_fs;
pub mod proxy;
pub mod rfc9162;
pub mod webdriver;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A `fleetlog serve` process with its own data directory.
pub struct Server {
    pub url: String,
    pub address: String,
    pub data: PathBuf,
    child: Option<Child>,
    _directory: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `fleetlog` binary the tests run: cargo's build of this checkout, or `FLEETLOG_TEST_BINARY`
/// when set. Checkouts sharing one target directory share `debug/fleetlog`, which every cargo run
/// links to its own checkout's build, so a test running while another checkout builds may find a
/// different binary there; `FLEETLOG_TEST_BINARY` can name this checkout's `debug/deps/fleetlog-*`.
pub fn binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var("FLEETLOG_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleetlog").to_string())
    })
}

impl Server {
    /// Starts a server on a free port with a fresh data directory and waits until it is ready.
    pub async fn start() -> Server {
        let directory = tempfile::TempDir::new().unwrap();
        let data = directory.path().join("data");
        let mut server = Server::spawn(&data, free_port());
        server._directory = Some(directory);
        server.wait_ready().await;
        server
    }

    /// Starts a server on a free port with data in `data` and extra `serve` flags; waits until
    /// it is ready. The caller owns the directory.
    pub async fn start_with(data: &Path, extra: &[&str]) -> Server {
        let server = Server::spawn_with(data, free_port(), extra);
        server.wait_ready().await;
        server
    }

    fn spawn(data: &Path, port: u16) -> Server {
        Server::spawn_with(data, port, &[])
    }

    fn spawn_with(data: &Path, port: u16, extra: &[&str]) -> Server {
        let address = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let child = Command::new(binary())
            .args(["serve", "--listen", &address, "--data"])
            .arg(data)
            .args(extra)
            .env("FLEETLOG_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fleetlog serve");
        Server {
            url: format!("http://{address}"),
            address,
            data: data.to_path_buf(),
            child: Some(child),
            _directory: None,
            http: reqwest::Client::new(),
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.url)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} never became ready; log: {}", self.url, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL, then start again on the same port and data.
    pub async fn kill_and_restart(&mut self) {
        self.kill_and_restart_with(&[]).await;
    }

    /// SIGKILL, then start again on the same port and data with `extra` `serve` flags.
    pub async fn kill_and_restart_with(&mut self, extra: &[&str]) {
        self.kill();
        let port: u16 = self.address.rsplit(':').next().unwrap().parse().unwrap();
        let mut restarted = Server::spawn_with(&self.data, port, extra);
        self.child = restarted.child.take();
        self.wait_ready().await;
    }

    /// SIGTERM, then waits (up to a minute) for the process to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = child.id() as i32;
        // SAFETY: `pid` is our own child, which has not been waited for yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit after SIGTERM; log: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// POST that must succeed (201 or 200).
    pub async fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, response) = self.post(path, body).await;
        assert!(status == 201 || status == 200, "POST {path} {body} → {status} {response}");
        response
    }

    /// Every event of the ledger.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = 1;
        loop {
            let (status, page) = self.get(&format!("/v1/events?from_seq={from}&limit=10000")).await;
            assert_eq!(status, 200, "{page}");
            let batch = page["events"].as_array().unwrap().clone();
            let next = page["next_seq"].as_u64().unwrap();
            events.extend(batch);
            if next > page["head_seq"].as_u64().unwrap() {
                return events;
            }
            from = next;
        }
    }

    pub async fn head(&self) -> u64 {
        let (_, page) = self.get("/v1/events?limit=1").await;
        page["head_seq"].as_u64().unwrap()
    }

    pub async fn fleet(&self, query: &str) -> Value {
        let (status, view) = self.get(&format!("/v1/fleet?{query}")).await;
        assert_eq!(status, 200, "{view}");
        view
    }

    /// Desired release of every host of a fleet view, by host.
    pub async fn desired(&self, query: &str) -> Vec<(String, Value)> {
        let view = self.fleet(query).await;
        view["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|host| (host["host"].as_str().unwrap().to_string(), host["desired_release"].clone()))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Recomputes every hash and link of a list of served events.
pub fn verify_chain(events: &[Value]) {
    let mut previous = "0".repeat(64);
    for (position, event) in events.iter().enumerate() {
        assert_eq!(event["seq"].as_u64().unwrap(), position as u64 + 1, "gapless seqs");
        assert_eq!(event["prev_hash"].as_str().unwrap(), previous, "link at seq {}", position + 1);
        let mut hashed = event.as_object().unwrap().clone();
        let hash = hashed.remove("hash").unwrap();
        let canonical = fleetlog_raft::domain::canonical::to_canonical_string(&Value::Object(hashed)).unwrap();
        let computed = sha256_hex(canonical.as_bytes());
        assert_eq!(hash.as_str().unwrap(), computed, "hash of seq {}", position + 1);
        previous = computed;
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Releases 1.0 and 2.0 of "shop", six hosts of shop/prod (two canaries), 1.0 deployed and
/// running everywhere.
pub async fn seed_fleet(server: &Server) {
    for release in ["1.0", "2.0"] {
        server.ok("/v1/releases", &json!({"service": "shop", "release": release})).await;
    }
    for index in 1..=6 {
        let group = if index <= 2 { "canary" } else { "main" };
        server
            .ok(
                "/v1/targets",
                &json!({"host": format!("web-{index}"), "service": "shop", "env": "prod", "group": group}),
            )
            .await;
    }
    deploy_fully(server, "d-1", "1.0").await;
}

pub async fn deploy_fully(server: &Server, deployment: &str, release: &str) {
    server
        .ok(
            "/v1/deployments",
            &json!({"deployment": deployment, "service": "shop", "env": "prod", "release": release,
                     "waves": [{"name": "all", "percent": 100}]}),
        )
        .await;
    server.ok(&format!("/v1/deployments/{deployment}/waves/all/start"), &json!({})).await;
    // Every host runs it, so a later rollback may go back to it.
    let fleet = server.fleet("service=shop&env=prod").await;
    for host in fleet["hosts"].as_array().into_iter().flatten() {
        let report = json!({"host": host["host"], "service": "shop", "env": "prod", "release": release,
                            "status": "running", "applied_seq": 1});
        server.ok("/v1/reports", &report).await;
    }
    server.ok(&format!("/v1/deployments/{deployment}/waves/all/complete"), &json!({})).await;
    server.ok(&format!("/v1/deployments/{deployment}/complete"), &json!({})).await;
}

/// Waits until `check` finds what it looks for in the deployment view, or fails the test.
pub async fn deployment_until(server: &Server, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, deployment) = server.get(&format!("/v1/deployments/{id}")).await;
        if check(&deployment) {
            return deployment;
        }
        assert!(std::time::Instant::now() < deadline, "waited 20 s for {what}: {deployment}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One SSE message as the server wrote it, comments included: tests that check the wire itself
/// read it with this (the client's reader passes comments over).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

/// The fields of one message's text (without the blank line that ends it). The server ends
/// lines with LF only.
pub fn parse_raw_message(raw: &[u8]) -> RawMessage {
    let text = String::from_utf8_lossy(raw);
    let mut message = RawMessage::default();
    let mut data = Vec::new();
    for line in text.split('\n') {
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "" => message.comment = Some(value.to_string()),
            "id" => message.id = Some(value.to_string()),
            "event" => message.event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    message.data = data.join("\n");
    message
}
