//! Real `fleetlog agent` processes for end-to-end tests, and raw stream connections.
//!
//! Every agent runs the same command: it appends a `start` line to the agent's runs file, waits
//! while a hold file for the directive's release exists (so a test decides when a command ends),
//! and appends a `done` line, or, while the release's fail file counts failures still to come,
//! counts one down, appends a `failed` line and exits 1. A test reads exactly what each agent
//! ran, with which variables, in which order. Each agent runs in its own process group and dies
//! with the test process.
//!
//! Declared by the tests that use it (`#[path = "common/agents.rs"] mod agents;`), next to
//! `mod common;`.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common::{binary, parse_raw_message, RawMessage};

/// Longest a test waits for agents to act, or for the fleet view to converge.
pub const WAIT: Duration = Duration::from_secs(30);
/// Longest one command waits on a hold file, so a forgotten command does not outlive the test.
const HOLD_MAX: Duration = Duration::from_secs(60);
/// Lines of each agent's log in a failure message.
const LOG_TAIL_LINES: usize = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Start,
    Done,
    /// The command exited 1 as its fail file asked ([`Agents::fail`]).
    Failed,
}

/// One line of an agent's runs file: a command starting or finishing for one directive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub seq: u64,
    pub release: String,
    pub cause: String,
    /// `FLEETLOG_DEPLOYMENT`, None when empty (a rollback).
    pub deployment: Option<String>,
    pub host: String,
    /// `FLEETLOG_SERVICE/FLEETLOG_ENV`.
    pub environment: String,
    /// Process id of the command's shell, which leads its own process group.
    pub pid: i32,
    pub phase: Phase,
}

impl Run {
    fn parse(line: &str) -> Option<Run> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [seq, release, cause, deployment, host, environment, pid, phase] = fields[..] else { return None };
        Some(Run {
            seq: seq.parse().ok()?,
            release: release.to_string(),
            cause: cause.to_string(),
            deployment: (deployment != "-").then(|| deployment.to_string()),
            host: host.to_string(),
            environment: environment.to_string(),
            pid: pid.parse().ok()?,
            phase: match phase {
                "start" => Phase::Start,
                "done" => Phase::Done,
                "failed" => Phase::Failed,
                _ => return None,
            },
        })
    }
}

/// Directives whose command ran to the end, in order, checking that runs never overlap and that
/// every start was followed by its own end: `Err` describes the first run that breaks that.
pub fn completed(runs: &[Run]) -> Result<Vec<(u64, String)>, String> {
    let mut completed = Vec::new();
    for pair in runs.chunks(2) {
        match pair {
            [start, done]
                if start.phase == Phase::Start
                    && done.phase == Phase::Done
                    && (start.seq, start.pid) == (done.seq, done.pid) =>
            {
                completed.push((start.seq, start.release.clone()));
            }
            _ => return Err(format!("runs are not start/done pairs of one command: {pair:?}")),
        }
    }
    Ok(completed)
}

/// One `fleetlog agent` process (restartable) with its runs file, state directory and log.
pub struct Agent {
    pub host: String,
    servers: String,
    service: String,
    env: String,
    directory: PathBuf,
    holds: PathBuf,
    fails: PathBuf,
    /// Further arguments of `fleetlog agent`.
    extra: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    pub fn runs_path(&self) -> PathBuf {
        self.directory.join("runs")
    }

    pub fn state_directory(&self) -> PathBuf {
        self.directory.join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.directory.join("agent.log")
    }

    /// The command: one line before and one after, holding in between while the release's hold
    /// file exists, and failing (exit 1, a `failed` line) while the release's fail file holds a
    /// count above zero, which each failure lowers by one. `$$` is the shell's pid; the agent
    /// starts it as leader of its own group.
    fn command(&self) -> String {
        let runs = quote(&self.runs_path());
        let holds = quote(&self.holds);
        let fails = quote(&self.fails);
        let polls = HOLD_MAX.as_millis() / 50;
        format!(
            "line=\"$FLEETLOG_SEQ $FLEETLOG_RELEASE $FLEETLOG_CAUSE ${{FLEETLOG_DEPLOYMENT:--}} $FLEETLOG_HOST \
             $FLEETLOG_SERVICE/$FLEETLOG_ENV $$\"; echo \"$line start\" >> {runs}; n=0; \
             while [ -e {holds}/\"$FLEETLOG_RELEASE\" ] && [ $n -lt {polls} ]; do sleep 0.05; n=$((n+1)); done; \
             fail={fails}/\"$FLEETLOG_RELEASE\"; left=$(cat \"$fail\" 2>/dev/null || echo 0); \
             if [ \"$left\" -gt 0 ]; then echo $((left-1)) > \"$fail\"; echo \"$line failed\" >> {runs}; \
             echo \"failing as asked, $((left-1)) more to come\" >&2; exit 1; fi; \
             echo \"$line done\" >> {runs}"
        )
    }

    /// Starts the agent process (again, with the same state directory after a crash).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent {} is running", self.host);
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let _ = writeln!(log, "==== harness: starting agent {}", self.host);
        let mut command = Command::new(binary());
        command
            .args(["agent", "--server", &self.servers, "--host", &self.host, "--service", &self.service])
            .args(["--env", &self.env, "--exec", &self.command(), "--state-dir"])
            .arg(self.state_directory())
            .args(&self.extra)
            .env("FLEETLOG_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own group, so a crash can be simulated by killing the group.
            .process_group(0);
        // If the test process dies without running Drop, so does the agent.
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(command.spawn().expect("spawn fleetlog agent"));
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// A crash: SIGKILL to the agent's process group, and to the group of the command it was
    /// running, if any (the agent starts each command in a group of its own, which an agent
    /// killed alone would leave running).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling a process group this harness created; no memory is involved.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        // Only the last run can still be going: an agent runs one command at a time.
        if let Some(run) = self.runs().last().filter(|run| run.phase == Phase::Start) {
            // SAFETY: as above; the group is the command's, named by its own start line.
            unsafe { libc::kill(-run.pid, libc::SIGKILL) };
        }
        self.note("crashed (SIGKILL to the agent and its command)");
    }

    /// SIGTERM, then waits for the agent to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent is running");
        // SAFETY: `child` is our own child, not yet waited for.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent {} did not exit after SIGTERM\n{}", self.host, self.describe());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn note(&self, text: &str) {
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(self.log_path()) {
            let _ = writeln!(log, "==== harness: {text}");
        }
    }

    /// Every line of the runs file so far.
    pub fn runs(&self) -> Vec<Run> {
        let text = std::fs::read_to_string(self.runs_path()).unwrap_or_default();
        text.lines()
            .map(|line| Run::parse(line).unwrap_or_else(|| panic!("agent {}: bad runs line {line:?}", self.host)))
            .collect()
    }

    /// Commands that started and have not finished.
    pub fn unfinished(&self) -> Vec<Run> {
        let runs = self.runs();
        let finished: Vec<i32> = runs.iter().filter(|run| run.phase != Phase::Start).map(|run| run.pid).collect();
        runs.into_iter().filter(|run| run.phase == Phase::Start && !finished.contains(&run.pid)).collect()
    }

    pub fn has(&self, seq: u64, phase: Phase) -> bool {
        self.runs().iter().any(|run| run.seq == seq && run.phase == phase)
    }

    /// The saved state (`state.json`), or Null before the first save.
    pub fn state(&self) -> Value {
        std::fs::read(self.state_directory().join("state.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    }

    /// The agent's log since it was last started.
    pub fn log_since_start(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = text.rfind("==== harness: starting agent").unwrap_or(0);
        text[start..].to_string()
    }

    /// Times the agent (since it was last started) has opened its watch stream.
    pub fn watches_opened(&self) -> usize {
        self.log_since_start().lines().filter(|line| line.contains(" watching ")).count()
    }

    /// Runs, state and log tail, for failure messages.
    pub fn describe(&self) -> String {
        let mut text = format!("---- agent {}:\n  runs:\n", self.host);
        for line in std::fs::read_to_string(self.runs_path()).unwrap_or_default().lines() {
            let _ = writeln!(text, "    {line}");
        }
        let _ = writeln!(text, "  state.json: {}", self.state());
        let _ = writeln!(text, "  log (last {LOG_TAIL_LINES} lines):");
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
            let shown: String = line.chars().take(300).collect();
            let _ = writeln!(text, "    {shown}");
        }
        text
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.crash();
        }
    }
}

/// Agents of one (service, env), one per host, sharing the hold and fail files.
pub struct Agents {
    pub agents: Vec<Agent>,
    holds: PathBuf,
    fails: PathBuf,
    directory: Option<tempfile::TempDir>,
}

impl Agents {
    /// Starts one agent per host, each given every URL of `servers`.
    pub fn start(servers: &[impl AsRef<str>], service: &str, env: &str, hosts: &[&str]) -> Agents {
        Agents::start_with(servers, service, env, hosts, &[])
    }

    /// Starts one agent per host as [`Agents::start`] does, each with the `extra` arguments.
    pub fn start_with(servers: &[impl AsRef<str>], service: &str, env: &str, hosts: &[&str], extra: &[&str]) -> Agents {
        Agents::start_each(servers, service, env, hosts, |_| {
            extra.iter().map(|argument| argument.to_string()).collect()
        })
    }

    /// Starts one agent per host as [`Agents::start`] does, each with the arguments `extra` gives
    /// for its host (such as `--group canary` for some of them).
    pub fn start_each(
        servers: &[impl AsRef<str>],
        service: &str,
        env: &str,
        hosts: &[&str],
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Agents {
        let servers: Vec<&str> = servers.iter().map(AsRef::as_ref).collect();
        let directory = tempfile::TempDir::with_prefix("fleetlog-agents-").unwrap();
        let holds = directory.path().join("holds");
        std::fs::create_dir_all(&holds).unwrap();
        let fails = directory.path().join("fails");
        std::fs::create_dir_all(&fails).unwrap();
        let agents = hosts
            .iter()
            .map(|host| {
                let agent_directory = directory.path().join(host);
                std::fs::create_dir_all(&agent_directory).unwrap();
                let mut agent = Agent {
                    host: host.to_string(),
                    servers: servers.join(","),
                    service: service.to_string(),
                    env: env.to_string(),
                    directory: agent_directory,
                    holds: holds.clone(),
                    fails: fails.clone(),
                    extra: extra(host),
                    child: None,
                };
                agent.spawn();
                agent
            })
            .collect();
        Agents { agents, holds, fails, directory: Some(directory) }
    }

    /// The next `times` commands for `release` (of any agent) fail.
    pub fn fail(&self, release: &str, times: u32) {
        std::fs::write(self.fails.join(release), format!("{times}\n")).unwrap();
    }

    /// Commands for `release` wait until [`Agents::let_go`] (or [`HOLD_MAX`]).
    pub fn hold(&self, release: &str) {
        std::fs::write(self.holds.join(release), b"").unwrap();
    }

    pub fn let_go(&self, release: &str) {
        std::fs::remove_file(self.holds.join(release)).unwrap();
    }

    /// Waits until `condition` holds for every agent; fails with every agent's runs and log.
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&Agent) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !self.agents.iter().all(&condition) {
            if Instant::now() > deadline {
                panic!("agents did not reach \"{what}\" within {WAIT:?}\n{}", self.describe());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every agent's command for the directive at `seq` has finished.
    pub async fn wait_done(&self, seq: u64) {
        self.wait_until(&format!("seq {seq} done"), |agent| agent.has(seq, Phase::Done)).await;
    }

    pub fn describe(&self) -> String {
        self.agents.iter().map(Agent::describe).collect()
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            if agent.child.is_some() {
                agent.crash();
            }
        }
        if std::env::var_os("FLEETLOG_KEEP_AGENTS").is_some() {
            if let Some(directory) = self.directory.take() {
                eprintln!("agents directory kept: {}", directory.keep().display());
            }
        }
    }
}

fn quote(path: &Path) -> String {
    let text = path.to_str().expect("a UTF-8 temporary path");
    assert!(!text.contains('\''), "a path the command can quote: {text}");
    format!("'{text}'")
}

/// Posts and gets against several servers, moving on to the next one when a server does not
/// answer or answers 503 (dead, electing, shutting down). Every body a test posts carries an
/// event id, so a retry after an unknown outcome is answered with the original event.
pub struct Writer {
    urls: Vec<String>,
    http: reqwest::Client,
    current: std::sync::atomic::AtomicUsize,
}

impl Writer {
    pub fn new(urls: &[impl AsRef<str>]) -> Writer {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Writer { urls: urls.iter().map(|url| url.as_ref().to_string()).collect(), http, current: 0.into() }
    }

    /// One request with failover: the first answer that is neither a transport error nor a 503.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + WAIT;
        let mut failures = Vec::new();
        loop {
            let index = self.current.load(Ordering::Relaxed) % self.urls.len();
            let mut request = self.http.request(method.clone(), format!("{}{path}", self.urls[index]));
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) if response.status().as_u16() != 503 => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.unwrap_or_default();
                    return (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                }
                Ok(response) => {
                    failures.push(format!("{}: 503 {}", self.urls[index], response.text().await.unwrap_or_default()))
                }
                Err(error) => failures.push(format!("{}: {error}", self.urls[index])),
            }
            if Instant::now() > deadline {
                panic!("{method} {path}: no server answered within {WAIT:?}: {failures:?}");
            }
            self.current.store(index + 1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A typed command that must succeed (201, or 200 for the replay of a retried attempt).
    pub async fn command(&self, path: &str, body: &Value) -> Value {
        assert!(body.get("id").is_some(), "a command retried across servers needs an event id: {body}");
        let (status, answer) = self.request(reqwest::Method::POST, path, Some(body)).await;
        assert!(status == 201 || status == 200, "POST {path} {body} → {status} {answer}");
        answer
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, answer) = self.request(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path} → {answer}");
        answer
    }

    /// Waits until the fleet view of (service, env) has `count` registered hosts.
    pub async fn wait_registered(&self, service: &str, env: &str, count: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let view = self.get(&format!("/v1/fleet?service={service}&env={env}")).await;
            let registered = view["hosts"].as_array().map_or(0, |hosts| hosts.len());
            if registered == count {
                return;
            }
            assert!(Instant::now() < deadline, "{registered} of {count} hosts registered within {WAIT:?}: {view}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every host of (service, env) runs `release` as asked by the directive at
    /// `seq`: desired == observed, status running, converged. Returns the view.
    pub async fn wait_converged(&self, service: &str, env: &str, release: &str, seq: u64, agents: &Agents) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let view = self.get(&format!("/v1/fleet?service={service}&env={env}")).await;
            let hosts = view["hosts"].as_array().cloned().unwrap_or_default();
            let on_release = |host: &Value| {
                host["desired_release"] == release
                    && host["desired_seq"] == seq
                    && host["observed_release"] == release
                    && host["applied_seq"] == seq
                    && host["status"] == "running"
                    && host["converged"] == true
            };
            if hosts.len() == agents.agents.len() && hosts.iter().all(on_release) {
                return view;
            }
            if Instant::now() > deadline {
                panic!(
                    "the fleet did not converge on {release} (seq {seq}) within {WAIT:?}: {view:#}\n{}",
                    agents.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A `fleetlog serve` process started with extra arguments (the common [`crate::common::Server`]
/// takes none), on a free port with a fresh data directory.
pub struct Serve {
    pub url: String,
    pub address: String,
    child: Child,
    log: PathBuf,
    _directory: tempfile::TempDir,
}

impl Serve {
    pub async fn start(extra: &[&str]) -> Serve {
        let directory = tempfile::TempDir::new().unwrap();
        let address = format!("127.0.0.1:{}", crate::common::free_port());
        let log = directory.path().join("serve.log");
        let child = Command::new(binary())
            .args(["serve", "--listen", &address, "--data"])
            .arg(directory.path().join("data"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn fleetlog serve");
        let serve = Serve { url: format!("http://{address}"), address, child, log, _directory: directory };
        let http = http();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(format!("{}/readyz", serve.url)).send().await {
                if response.status().is_success() {
                    return serve;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready; log: {}", serve.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client for the test's own requests to local servers.
fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

/// A gauge or counter of a server's `/metrics`.
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = http().get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// How a stream request reaches the server's stream code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// On a fresh connection: the server serves it straight on the socket.
    Direct,
    /// On a connection that already carried a request: through the HTTP router.
    Router,
}

/// An SSE stream read over a plain TCP connection, so a test can leave it unread while the
/// server keeps producing, and see how much the kernel holds for it.
pub struct RawStream {
    reader: BufReader<tokio::net::TcpStream>,
    chunked: bool,
    /// Body bytes not yet split into messages.
    pending: Vec<u8>,
    /// Messages split off and not yet returned.
    messages: std::collections::VecDeque<RawMessage>,
    local_port: u16,
    server_port: u16,
}

/// Status code, and the status line and headers of a response with the headers' names
/// lowercased (their values stay as sent).
pub async fn read_response_head(reader: &mut BufReader<tokio::net::TcpStream>) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some((name, value)) => head.push_str(&format!("{}:{value}", name.to_ascii_lowercase())),
            None => head.push_str(&line),
        }
    }
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, head)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

impl RawStream {
    /// Sends `GET path` by `route` and reads the response head: the stream when it is 200, else
    /// the status and JSON body. The connection's receive buffer is set to
    /// `receive_buffer_bytes` so it fills quickly.
    pub async fn open(
        address: &str,
        path: &str,
        route: Route,
        receive_buffer_bytes: u32,
    ) -> Result<RawStream, (u16, Value)> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(receive_buffer_bytes).unwrap();
        let server: std::net::SocketAddr = address.parse().unwrap();
        let stream = socket.connect(server).await.unwrap();
        let local_port = stream.local_addr().unwrap().port();
        let mut reader = BufReader::new(stream);
        if route == Route::Router {
            let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");
            reader.get_mut().write_all(request.as_bytes()).await.unwrap();
            let (status, head) = read_response_head(&mut reader).await;
            assert_eq!(status, 200, "GET /healthz → {head}");
            let length: usize = header(&head, "content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).await.unwrap();
        }
        let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n");
        reader.get_mut().write_all(request.as_bytes()).await.unwrap();
        let (status, head) = read_response_head(&mut reader).await;
        let chunked = header(&head, "transfer-encoding") == Some("chunked");
        if status != 200 {
            let length: usize = header(&head, "content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).await.unwrap();
            return Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        }
        assert_eq!(header(&head, "content-type"), Some("text/event-stream"), "GET {path} → {head}");
        Ok(RawStream {
            reader,
            chunked,
            pending: Vec::new(),
            messages: Default::default(),
            local_port,
            server_port: server.port(),
        })
    }

    /// Whether the body is chunked (served by the router) rather than delimited by the close
    /// of the connection (served straight on the socket).
    pub fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// The next SSE message, or None at the end of the body.
    pub async fn next(&mut self) -> Option<RawMessage> {
        loop {
            if let Some(message) = self.messages.pop_front() {
                return Some(message);
            }
            if !self.read_body().await {
                return None;
            }
            // Every complete message at once: a stream catching up brings thousands per read.
            let mut start = 0;
            while let Some(end) = self.pending[start..].windows(2).position(|pair| pair == b"\n\n") {
                let message = &self.pending[start..start + end];
                self.messages.push_back(parse_raw_message(message));
                start += end + 2;
            }
            self.pending.drain(..start);
        }
    }

    /// Reads more of the body into `pending`; false at its end.
    async fn read_body(&mut self) -> bool {
        if !self.chunked {
            let mut buffer = [0u8; 64 * 1024];
            let read = self.reader.read(&mut buffer).await.unwrap();
            self.pending.extend_from_slice(&buffer[..read]);
            return read > 0;
        }
        let mut size_line = String::new();
        if self.reader.read_line(&mut size_line).await.unwrap() == 0 {
            return false;
        }
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16).unwrap_or_else(|_| panic!("chunk size {size_line:?}"));
        if size == 0 {
            return false;
        }
        let start = self.pending.len();
        self.pending.resize(start + size, 0);
        self.reader.read_exact(&mut self.pending[start..]).await.unwrap();
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf).await.unwrap();
        assert_eq!(&crlf, b"\r\n", "chunk framing");
        true
    }

    /// Bytes the kernel holds for this connection: the server socket's send queue plus this
    /// socket's receive queue (from /proc/net/tcp).
    pub fn kernel_queued_bytes(&self) -> u64 {
        let server_send = tcp_queue(self.server_port, self.local_port).map_or(0, |(send, _)| send);
        let own_receive = tcp_queue(self.local_port, self.server_port).map_or(0, |(_, receive)| receive);
        server_send + own_receive
    }
}

/// (send queue, receive queue) of the IPv4 loopback socket local_port → remote_port.
fn tcp_queue(local_port: u16, remote_port: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || port(fields[1])? != local_port || port(fields[2])? != remote_port {
            return None;
        }
        let (send, receive) = fields[4].split_once(':')?;
        Some((u64::from_str_radix(send, 16).ok()?, u64::from_str_radix(receive, 16).ok()?))
    })
}

/// `{"id": …}` merged into a body, for commands that must be retried safely.
pub fn with_id(id: &str, mut body: Value) -> Value {
    body["id"] = json!(id);
    body
}
