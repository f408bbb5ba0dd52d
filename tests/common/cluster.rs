//! A real cluster of `fleetlog serve --node-id` processes on 127.0.0.1, every directed peer link
//! i→j through its own [`Proxy`] (given to node i as `--peer-route j=PROXY`), so a test can cut
//! links, kill -9 and restart nodes, and wipe a node and re-add it under a new id.
//!
//! Node ids 1..=voters form the initial cluster; a few more ids are reserved (with their proxies
//! and routes already given to every node) for nodes re-added later. Each node's stderr and stdout
//! go to `node-N.log` in the cluster's directory; failure messages carry the tail of every log.
//! Set `FLEETLOG_KEEP_CLUSTER=1` to keep the directory (data and logs) after the test.
//!
//! Cluster tests of one test binary run one at a time (a process-wide lock): a 3-node cluster
//! under load is already more than a 2-core machine runs comfortably twice.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::OwnedMutexGuard;

use super::history::{Endpoints, History, Summary};
use super::proxy::Proxy;
use super::{binary, Server};

/// Ids reserved beyond the initial voters, for nodes re-added after a wipe.
const SPARE_IDS: u64 = 2;
/// Longest the harness waits for a node to listen, a leader to emerge, replicas to converge.
const WAIT: Duration = Duration::from_secs(45);
/// Lines of each node's log in a failure message.
const LOG_TAIL_LINES: usize = 60;

pub struct Options {
    pub voters: u64,
    /// `--snapshot-every` for every node (None: the server's default).
    pub snapshot_every: Option<u64>,
    /// Initialise with `fleetlog cluster init` instead of `POST /v1/cluster/init`.
    pub cli_init: bool,
    /// `--cluster-secret` for every node.
    pub cluster_secret: Option<String>,
    /// Directory that holds every node's data directory (`node-N`); None: the cluster's own
    /// temporary directory. The caller owns it. Node logs stay in the cluster's directory.
    pub data_root: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options { voters: 3, snapshot_every: None, cli_init: false, cluster_secret: None, data_root: None }
    }
}

struct Node {
    id: u64,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Removed from the membership (and stopped for good).
    removed: bool,
    /// Started at least once (a reserved id is not, until it is re-added).
    started: bool,
}

impl Node {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub struct Cluster {
    nodes: BTreeMap<u64, Node>,
    /// (from, to) → the proxy node `from` dials to reach node `to`.
    proxies: BTreeMap<(u64, u64), Proxy>,
    /// Current voters, in the order they joined.
    voters: Vec<u64>,
    snapshot_every: Option<u64>,
    cluster_secret: Option<String>,
    /// `FLEETLOG_CRASH_POINT` for a node's next starts (see `fleetlog_raft::storage::crash_point`).
    crash_points: BTreeMap<u64, String>,
    pub http: reqwest::Client,
    directory: Option<tempfile::TempDir>,
    pub started: Instant,
    _serial: OwnedMutexGuard<()>,
}

fn serial_lock() -> Arc<tokio::sync::Mutex<()>> {
    static LOCK: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();
    LOCK.get_or_init(|| Arc::new(tokio::sync::Mutex::new(()))).clone()
}

/// A free port below the kernel's ephemeral range, so that no outgoing connection (of the
/// proxies, the clients, the nodes) can be holding it when a killed node binds it again.
fn node_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|low| low.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 12_000 { (10_000, ephemeral_low - 1) } else { (0, 0) };
    if high > low {
        for _ in 0..1_000 {
            let port = rand::Rng::gen_range(&mut rand::thread_rng(), low..high);
            if handed_out.lock().unwrap().contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.lock().unwrap().insert(port);
                return port;
            }
        }
    }
    super::free_port()
}

impl Cluster {
    /// Starts `options.voters` nodes, initialises the cluster through node 1 and waits until
    /// every node is ready.
    pub async fn start(options: Options) -> Cluster {
        let serial = serial_lock().lock_owned().await;
        let directory = tempfile::TempDir::with_prefix("fleetlog-cluster-").unwrap();
        let all_ids: Vec<u64> = (1..=options.voters + SPARE_IDS).collect();
        let data_root = options.data_root.clone().unwrap_or_else(|| directory.path().to_path_buf());
        let mut nodes = BTreeMap::new();
        for &id in &all_ids {
            let port = if id <= options.voters { node_port() } else { 0 };
            nodes.insert(
                id,
                Node {
                    id,
                    port,
                    data: data_root.join(format!("node-{id}")),
                    log: directory.path().join(format!("node-{id}.log")),
                    child: None,
                    removed: false,
                    started: false,
                },
            );
        }
        let mut proxies = BTreeMap::new();
        for &from in &all_ids {
            for &to in &all_ids {
                if from != to {
                    // A reserved node has no port yet; its proxies get their target when it starts.
                    proxies.insert((from, to), Proxy::start(&nodes[&to].address()));
                }
            }
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut cluster = Cluster {
            nodes,
            proxies,
            voters: (1..=options.voters).collect(),
            snapshot_every: options.snapshot_every,
            cluster_secret: options.cluster_secret.clone(),
            crash_points: BTreeMap::new(),
            http,
            directory: Some(directory),
            started: Instant::now(),
            _serial: serial,
        };
        for id in 1..=options.voters {
            cluster.spawn(id);
        }
        for id in 1..=options.voters {
            cluster.wait_healthy(id).await;
        }
        if options.cli_init {
            let members: Vec<String> =
                (1..=options.voters).map(|id| format!("{id}={}", cluster.nodes[&id].address())).collect();
            let server = cluster.url(1);
            let (ok, output) =
                cluster.cli(&["cluster", "init", "--server", &server, "--members", &members.join(",")]).await;
            if !ok {
                cluster.fail(&format!("fleetlog cluster init failed: {output}"));
            }
        } else {
            let members: serde_json::Map<String, Value> =
                (1..=options.voters).map(|id| (id.to_string(), Value::from(cluster.nodes[&id].address()))).collect();
            let init = json!({"members": members});
            let (status, body) = cluster.request(1, reqwest::Method::POST, "/v1/cluster/init", Some(&init)).await;
            if status != 200 {
                cluster.fail(&format!("POST /v1/cluster/init {init} → {status} {body}"));
            }
        }
        cluster.wait_leader().await;
        cluster.wait_ready_all().await;
        cluster
    }

    // ----- processes ---------------------------------------------------------------------------

    fn spawn(&mut self, id: u64) {
        let node = &self.nodes[&id];
        let address = node.address();
        let mut command = Command::new(binary());
        command
            .args(["serve", "--node-id", &id.to_string(), "--listen", &address, "--advertise", &address, "--data"])
            .arg(&node.data);
        for (&(from, to), proxy) in &self.proxies {
            if from == id {
                command.args(["--peer-route", &format!("{to}={}", proxy.address())]);
            }
        }
        if let Some(every) = self.snapshot_every {
            command.args(["--snapshot-every", &every.to_string()]);
        }
        if let Some(secret) = &self.cluster_secret {
            command.args(["--cluster-secret", secret]);
        }
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("open node log");
        let _ = writeln!(
            log,
            "==== harness: starting node {id} on {address} at +{:?}: {:?}",
            self.started.elapsed(),
            command.get_args().collect::<Vec<_>>()
        );
        // If the test process dies without running Drop (killed by a CI timeout), so do its nodes.
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if let Some(point) = self.crash_points.get(&id) {
            command.env(fleetlog_raft::storage::crash_point::VARIABLE, point);
        }
        let child = command
            .env("FLEETLOG_LOG", std::env::var("FLEETLOG_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn fleetlog serve");
        let node = self.nodes.get_mut(&id).unwrap();
        node.child = Some(child);
        node.started = true;
    }

    /// Waits until node `id` answers /healthz; fails with its log if the process exits first.
    async fn wait_healthy(&mut self, id: u64) {
        let url = format!("{}/healthz", self.url(id));
        let deadline = Instant::now() + WAIT;
        let mut address_in_use_retries = 0;
        loop {
            let exited = self.nodes.get_mut(&id).unwrap().child.as_mut().and_then(|child| child.try_wait().unwrap());
            if let Some(status) = exited {
                let tail = self.log_tail(id, 20);
                // The port may briefly be held by a connection of someone else: try again.
                if tail.contains("ddress already in use") && address_in_use_retries < 20 {
                    address_in_use_retries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.spawn(id);
                    continue;
                }
                self.fail(&format!("node {id} exited ({status}) before answering /healthz"));
            }
            if let Ok(response) = self.http.get(&url).timeout(Duration::from_secs(2)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("node {id} did not answer /healthz within {WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u64) {
        let elapsed = self.started.elapsed();
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&node.log) {
                let _ = writeln!(log, "==== harness: killed node {id} (SIGKILL) at +{elapsed:?}");
            }
        }
    }

    /// Makes node `id` abort at a crash point (`name:step`) from its next start on; `None` clears it.
    pub fn set_crash_point(&mut self, id: u64, point: Option<String>) {
        match point {
            Some(point) => self.crash_points.insert(id, point),
            None => self.crash_points.remove(&id),
        };
    }

    /// Starts a killed node again without waiting for it to answer: it may be meant to crash.
    pub fn start_unwatched(&mut self, id: u64) {
        assert!(self.nodes[&id].child.is_none(), "node {id} is running");
        self.spawn(id);
    }

    /// Waits at most `within` for node `id`'s process to exit; its status, if it did.
    pub async fn wait_exited(&mut self, id: u64, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let exited = node.child.as_mut().and_then(|child| child.try_wait().unwrap());
            if let Some(status) = exited {
                node.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a killed node again: same port, same data, same routes; waits for /healthz.
    pub async fn restart(&mut self, id: u64) {
        assert!(self.nodes[&id].child.is_none(), "node {id} is running");
        assert!(!self.nodes[&id].removed, "node {id} was removed");
        self.spawn(id);
        self.wait_healthy(id).await;
    }

    /// Starts a removed node's machine again (its data as it is, wiped or not), outside the
    /// membership; waits for /healthz.
    pub async fn start_removed(&mut self, id: u64) {
        assert!(self.nodes[&id].removed, "node {id} was not removed");
        assert!(self.nodes[&id].child.is_none(), "node {id} is running");
        self.spawn(id);
        self.wait_healthy(id).await;
    }

    /// Kills every running node, starts them all again, waits for a leader and readiness.
    pub async fn restart_all(&mut self) {
        let running = self.members();
        for &id in &running {
            self.kill(id);
        }
        for &id in &running {
            self.spawn(id);
        }
        for &id in &running {
            self.wait_healthy(id).await;
        }
        self.wait_leader().await;
        self.wait_ready_all().await;
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|node| node.child.is_some())
    }

    // ----- links -------------------------------------------------------------------------------

    /// Cuts every link to and from node `id` and waits until the connections on them are closed.
    pub async fn isolate(&self, id: u64) {
        let links: Vec<&Proxy> =
            self.proxies.iter().filter(|((from, to), _)| *from == id || *to == id).map(|(_, proxy)| proxy).collect();
        for proxy in &links {
            proxy.cut();
        }
        for proxy in &links {
            if !proxy.wait_drained(Duration::from_secs(2)).await {
                self.fail(&format!("a cut link of node {id} still has {} open connections", proxy.active()));
            }
        }
    }

    /// Cuts the one directed link from → to.
    pub fn cut(&self, from: u64, to: u64) {
        self.proxies[&(from, to)].cut();
    }

    pub fn heal_all(&self) {
        for proxy in self.proxies.values() {
            proxy.heal();
        }
    }

    // ----- membership --------------------------------------------------------------------------

    /// Current voters.
    pub fn voters(&self) -> Vec<u64> {
        self.voters.clone()
    }

    /// Every node that is a member (whether running or killed).
    pub fn members(&self) -> Vec<u64> {
        self.nodes.values().filter(|node| node.started && !node.removed).map(|node| node.id).collect()
    }

    pub fn url(&self, id: u64) -> String {
        self.nodes[&id].url()
    }

    pub fn address(&self, id: u64) -> String {
        self.nodes[&id].address()
    }

    /// (id, url) of every member, for clients.
    pub fn endpoints(&self) -> Vec<(u64, String)> {
        self.members().into_iter().map(|id| (id, self.url(id))).collect()
    }

    pub fn shared_endpoints(&self) -> Endpoints {
        Endpoints::new(self.endpoints())
    }

    /// Removes node `id` from the membership, kills it, deletes its data, and adds a fresh node
    /// under the next reserved id (a new port, the same kind of routes): first as a learner that
    /// catches up, then as a voter. Returns the new id.
    pub async fn wipe_and_readd(&mut self, id: u64) -> u64 {
        self.remove(id).await;
        self.wipe(id);
        let new_id = self.start_spare().await;
        self.add_learner(new_id).await;
        let mut voters = self.voters.clone();
        voters.push(new_id);
        self.change_voters(voters).await;
        self.wait_ready(new_id).await;
        new_id
    }

    /// Removes node `id` from the membership through the API (sent to the leader, or to another
    /// voter if `id` leads), then kills it.
    pub async fn remove(&mut self, id: u64) {
        let leader = self.wait_leader().await;
        let via = if leader == id { *self.voters.iter().find(|&&other| other != id).unwrap() } else { leader };
        let path = format!("/v1/cluster/members/{id}");
        let (status, body) = self.retry_503(via, reqwest::Method::DELETE, &path, None).await;
        if status != 200 {
            self.fail(&format!("DELETE {path} via node {via} → {status} {body}"));
        }
        self.mark_removed(id);
        self.kill(id);
    }

    /// Records that node `id` left the membership (by other means than [`Cluster::remove`]).
    pub fn mark_removed(&mut self, id: u64) {
        self.voters.retain(|&voter| voter != id);
        self.nodes.get_mut(&id).unwrap().removed = true;
    }

    /// Deletes the data of a killed node.
    pub fn wipe(&self, id: u64) {
        assert!(!self.is_running(id), "node {id} is running");
        let data = &self.nodes[&id].data;
        if data.exists() {
            std::fs::remove_dir_all(data).unwrap_or_else(|error| panic!("delete {}: {error}", data.display()));
        }
    }

    /// Starts a fresh node (empty data, a new port) under the next reserved id, not yet a member;
    /// the links to it, already routed on every node, now lead to it. Returns its id.
    pub async fn start_spare(&mut self) -> u64 {
        let Some(new_id) = self.nodes.values().find(|node| !node.started).map(|node| node.id) else {
            self.fail("no reserved node id left");
        };
        self.nodes.get_mut(&new_id).unwrap().port = node_port();
        let address = self.address(new_id);
        for ((_, to), proxy) in &self.proxies {
            if *to == new_id {
                proxy.set_target(&address);
            }
        }
        self.spawn(new_id);
        self.wait_healthy(new_id).await;
        new_id
    }

    /// Adds a started spare node as a learner (the call returns once it caught up).
    pub async fn add_learner(&self, id: u64) {
        let leader = self.wait_leader().await;
        let learner = json!({"node_id": id, "addr": self.address(id)});
        let (status, body) =
            self.retry_503(leader, reqwest::Method::POST, "/v1/cluster/learners", Some(&learner)).await;
        if status != 200 {
            self.fail(&format!("POST /v1/cluster/learners {learner} via node {leader} → {status} {body}"));
        }
    }

    /// Makes exactly `voters` the voters (PUT /v1/cluster/members) and waits for a leader.
    pub async fn change_voters(&mut self, voters: Vec<u64>) {
        let leader = self.wait_leader().await;
        let change = json!({"voters": voters});
        let (status, body) = self.retry_503(leader, reqwest::Method::PUT, "/v1/cluster/members", Some(&change)).await;
        if status != 200 {
            self.fail(&format!("PUT /v1/cluster/members {change} via node {leader} → {status} {body}"));
        }
        self.set_voters(voters);
        self.wait_leader().await;
    }

    /// Records the voters (after a change made by other means than the harness).
    pub fn set_voters(&mut self, voters: Vec<u64>) {
        for id in self.voters.clone() {
            if !voters.contains(&id) {
                self.nodes.get_mut(&id).unwrap().removed = true;
            }
        }
        self.voters = voters;
    }

    // ----- status ------------------------------------------------------------------------------

    /// Waits until the leader has purged some of its log behind a snapshot: from then on a node
    /// starting from an empty log can only catch up by installing a snapshot. Returns the purged
    /// index.
    pub async fn wait_purged(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.wait_leader().await;
            let status = self.status(leader).await.unwrap_or(Value::Null);
            let purged = status["this_node"]["purged_index"].as_u64().unwrap_or(0);
            if purged > 0 {
                return purged;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "leader {leader} purged nothing with --snapshot-every {:?}: {status}",
                    self.snapshot_every
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A text answer of node `id` to GET `path`, waiting while the node answers 503 (no identity
    /// or no leader yet) or not at all (starting); any other status fails the test.
    pub async fn text_when_ready(&self, id: u64, path: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let response = self.http.get(format!("{}{path}", self.url(id))).send().await;
            let (status, text) = match response {
                Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
                Err(error) => (0, error.to_string()),
            };
            if status == 200 {
                return text;
            }
            if (status != 503 && status != 0) || Instant::now() > deadline {
                self.fail(&format!("GET {path} on node {id} → {status} {text}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/cluster` from node `id`, if it answers in time.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let response =
            self.http.get(format!("{}/v1/cluster", self.url(id))).timeout(Duration::from_secs(2)).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// The leader once one is established: a running voter that says it leads, and a majority
    /// of the voters (running ones answering) name it as leader in the same term.
    pub async fn wait_leader(&self) -> u64 {
        self.wait_leader_among(&self.voters.clone()).await
    }

    /// Like [`Cluster::wait_leader`], asking only the given voters (e.g. the majority side of a
    /// partition); the majority counted is of all voters.
    pub async fn wait_leader_among(&self, asked: &[u64]) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut views: BTreeMap<u64, (Option<u64>, u64)> = BTreeMap::new();
            for &id in asked {
                if !self.is_running(id) {
                    continue;
                }
                if let Some(status) = self.status(id).await {
                    views.insert(id, (status["leader_id"].as_u64(), status["term"].as_u64().unwrap_or(0)));
                }
            }
            for (&candidate, &(leader, term)) in &views {
                if leader != Some(candidate) {
                    continue;
                }
                let agreeing = views.values().filter(|view| **view == (Some(candidate), term)).count();
                if agreeing * 2 > self.voters.len() {
                    return candidate;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("no leader among {asked:?} within {WAIT:?}; (leader_id, term) by node: {views:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` answers /readyz with 200.
    pub async fn wait_ready(&self, id: u64) {
        let url = format!("{}/readyz", self.url(id));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = self.http.get(&url).timeout(Duration::from_secs(2)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("node {id} not ready within {WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready_all(&self) {
        for id in self.members() {
            if self.is_running(id) {
                self.wait_ready(id).await;
            }
        }
    }

    /// Runs the `fleetlog` CLI: (success, stdout then stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String) {
        let run = tokio::process::Command::new(binary()).args(args).stdin(Stdio::null()).output();
        let output = match tokio::time::timeout(WAIT, run).await {
            Ok(output) => output.expect("run fleetlog"),
            Err(_) => self.fail(&format!("fleetlog {args:?} did not finish within {WAIT:?}")),
        };
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    // ----- requests ----------------------------------------------------------------------------

    /// One request to node `id`: (status, JSON body or Null). A transport error is status 0.
    pub async fn request(&self, id: u64, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.url(id), path));
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
            }
            Err(error) => (0, Value::String(error.to_string())),
        }
    }

    pub async fn get(&self, id: u64, path: &str) -> (u16, Value) {
        self.request(id, reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, id: u64, path: &str, body: &Value) -> (u16, Value) {
        self.request(id, reqwest::Method::POST, path, Some(body)).await
    }

    /// Retries a request (same body) while it gets a 503 or no answer, for up to [`WAIT`].
    async fn retry_503(&self, id: u64, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, answer) = self.request(id, method.clone(), path, body).await;
            if (status != 503 && status != 0) || Instant::now() > deadline {
                return (status, answer);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A [`Server`] handle on node `id` (not owning the process), to reuse the single-node
    /// helpers (`ok`, `all_events`, `fleet`, `seed_fleet`…) against one member.
    pub fn server(&self, id: u64) -> Server {
        let node = &self.nodes[&id];
        Server {
            url: node.url(),
            address: node.address(),
            data: node.data.clone(),
            child: None,
            _directory: None,
            http: self.http.clone(),
        }
    }

    /// Head seq as node `id` has applied it (consistency=local).
    pub async fn local_head(&self, id: u64) -> Option<u64> {
        let (status, page) = self.get(id, "/v1/events?limit=1&consistency=local").await;
        if status == 200 {
            page["head_seq"].as_u64()
        } else {
            None
        }
    }

    /// Every event node `id` has applied, read with consistency=local.
    pub async fn local_events(&self, id: u64) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = 1;
        loop {
            let path = format!("/v1/events?from_seq={from}&limit=10000&consistency=local");
            let (status, page) = self.get(id, &path).await;
            if status != 200 {
                self.fail(&format!("GET {path} on node {id} → {status} {page}"));
            }
            events.extend(page["events"].as_array().cloned().unwrap_or_default());
            let next = page["next_seq"].as_u64().unwrap_or(u64::MAX);
            if next > page["head_seq"].as_u64().unwrap_or(0) {
                return events;
            }
            from = next;
        }
    }

    /// Waits until every running member has applied the leader's (linearizable) head, then reads
    /// every replica's log with consistency=local, checks each hash chain and that all are
    /// identical, and returns the log.
    pub async fn converged_log(&self) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let running: Vec<u64> = self.members().into_iter().filter(|&id| self.is_running(id)).collect();
        loop {
            let leader = self.wait_leader().await;
            let (status, page) = self.get(leader, "/v1/events?limit=1").await;
            let target = if status == 200 { page["head_seq"].as_u64() } else { None };
            let mut heads = BTreeMap::new();
            for &id in &running {
                heads.insert(id, self.local_head(id).await);
            }
            if target.is_some() && heads.values().all(|head| *head == target) {
                break;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "replicas did not converge within {WAIT:?}: leader {leader} head {target:?} ({status}), local \
                     heads {heads:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut reference: Option<(u64, Vec<Value>)> = None;
        for &id in &running {
            let events = self.local_events(id).await;
            if let Some(problem) = chain_problem(&events) {
                self.fail(&format!("node {id}: the hash chain does not verify: {problem}"));
            }
            match &reference {
                None => reference = Some((id, events)),
                Some((first, expected)) => {
                    if let Some(difference) = first_difference(expected, &events) {
                        self.fail(&format!("nodes {first} and {id} hold different logs: {difference}"));
                    }
                }
            }
        }
        reference.map(|(_, events)| events).unwrap_or_default()
    }

    /// Checks a history against the converged log; fails with every violation and the node logs.
    pub async fn check_history(&self, history: &History) -> (Summary, Vec<Value>) {
        let log = self.converged_log().await;
        let (summary, violations) = history.check(&log);
        if !violations.is_empty() {
            let mut text = format!("{} history violation(s); {summary}\n", violations.len());
            for violation in violations.iter().take(40) {
                let _ = writeln!(text, "  - {violation}");
            }
            self.fail(&text);
        }
        eprintln!("history checked: {summary}");
        (summary, log)
    }

    // ----- failure reports ---------------------------------------------------------------------

    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let mut tail = String::new();
        for line in &all[all.len().saturating_sub(lines)..] {
            let shown: String = strip_ansi(line).chars().take(400).collect();
            let _ = writeln!(tail, "    {shown}");
        }
        tail
    }

    /// Every node's log tail.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for node in self.nodes.values().filter(|node| node.started) {
            let state = match (&node.child, node.removed) {
                (_, true) => "removed",
                (Some(_), _) => "running",
                (None, _) => "killed",
            };
            let _ = writeln!(text, "---- node {} ({state}, {}) last {LOG_TAIL_LINES} lines:", node.id, node.address());
            text.push_str(&self.log_tail(node.id, LOG_TAIL_LINES));
        }
        text
    }

    /// Panics with `message`, the time since the cluster started and every node's log tail.
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n(at +{:?} since the cluster started)\n{}", self.started.elapsed(), self.logs());
    }

    /// `assert!` with the node logs in the message.
    pub fn check(&self, condition: bool, message: impl FnOnce() -> String) {
        if !condition {
            self.fail(&message());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os("FLEETLOG_KEEP_CLUSTER").is_some() {
            if let Some(directory) = self.directory.take() {
                eprintln!("cluster directory kept: {}", directory.keep().display());
            }
        }
    }
}

/// A log line without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(character) = chars.next() {
        if character == '\u{1b}' {
            // ESC [ parameters… final letter
            for code in chars.by_ref() {
                if code.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(character);
        }
    }
    plain
}

/// Recomputes every hash and link; the first problem found, if any.
pub fn chain_problem(events: &[Value]) -> Option<String> {
    use sha2::Digest;
    let mut previous = "0".repeat(64);
    for (position, event) in events.iter().enumerate() {
        let expected_seq = position as u64 + 1;
        if event["seq"].as_u64() != Some(expected_seq) {
            return Some(format!("position {expected_seq} holds seq {}", event["seq"]));
        }
        if event["prev_hash"].as_str() != Some(previous.as_str()) {
            return Some(format!("seq {expected_seq}: prev_hash {} is not {previous}", event["prev_hash"]));
        }
        let mut hashed = event.as_object().cloned().unwrap_or_default();
        let Some(hash) = hashed.remove("hash") else {
            return Some(format!("seq {expected_seq} has no hash"));
        };
        let canonical = match fleetlog_raft::domain::canonical::to_canonical_string(&Value::Object(hashed)) {
            Ok(canonical) => canonical,
            Err(error) => return Some(format!("seq {expected_seq}: cannot canonicalise: {error}")),
        };
        let computed: String =
            sha2::Sha256::digest(canonical.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
        if hash.as_str() != Some(computed.as_str()) {
            return Some(format!("seq {expected_seq}: hash {hash} but the event hashes to {computed}"));
        }
        previous = computed;
    }
    None
}

/// Where two logs first differ, if they do.
pub fn first_difference(expected: &[Value], actual: &[Value]) -> Option<String> {
    for (position, (left, right)) in expected.iter().zip(actual).enumerate() {
        if left != right {
            return Some(format!("seq {}: {left} vs {right}", position + 1));
        }
    }
    if expected.len() != actual.len() {
        return Some(format!("lengths {} vs {}", expected.len(), actual.len()));
    }
    None
}
