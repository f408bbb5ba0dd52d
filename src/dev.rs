//! `fleetlog dev --nodes 3`: a local cluster for trying fleetlog out. Each node is a child
//! `fleetlog serve --node-id N` process with its own data directory and log file; the cluster is
//! formed on first start and kept across restarts. Ctrl-C stops every node gracefully.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fleetlog_api::client::{Client, ClientError};
use reqwest::Method;
use serde_json::json;

use crate::cli::{DevArgs, Output};
use crate::cluster::render_status;
use crate::output::print;

/// A local cluster of child `fleetlog serve` processes, each with a data directory and a log
/// file under one parent directory. Stops every node (SIGTERM, then waits) when dropped, so an
/// error on the way never leaves them running. `fleetlog dev` and `fleetlog-bench compare` use it.
pub struct LocalCluster {
    children: Vec<Child>,
    /// Positions in `children` of the nodes already reported as exited.
    reported: Vec<usize>,
    /// Node id and `HOST:PORT`, in id order.
    pub members: Vec<(u64, String)>,
    /// Whether this start formed the cluster (false: it had been formed before).
    pub formed: bool,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SAFETY: the pid is our own child, not yet waited for.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

impl LocalCluster {
    /// Starts one node per member (`executable serve`, data in `data/node-N`, log in
    /// `data/node-N.log`), forms the cluster unless it already is, and returns once every node is
    /// ready.
    pub async fn start(executable: &Path, data: &Path, members: Vec<(u64, String)>) -> Result<LocalCluster> {
        std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
        let mut cluster = LocalCluster { children: Vec::new(), reported: Vec::new(), members, formed: false };
        for (id, address) in &cluster.members {
            let log_path = data.join(format!("node-{id}.log"));
            let log =
                std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
            let child = Command::new(executable)
                .args(["serve", "--node-id", &id.to_string(), "--listen", address, "--data"])
                .arg(data.join(format!("node-{id}")))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("cannot start a node")?;
            cluster.children.push(child);
        }
        for url in cluster.urls() {
            wait_until_ok(&Client::new(&url)?, "/healthz", "did not start listening").await?;
        }
        let first = Client::new(&cluster.urls()[0])?;
        let body = json!({ "members": cluster.members.iter().cloned().collect::<BTreeMap<u64, String>>() });
        match first.call(Method::POST, "/v1/cluster/init", Some(&body), Duration::from_secs(60)).await {
            Ok(_) => cluster.formed = true,
            Err(ClientError::Api { code, .. }) if code == "already_initialized" => {}
            Err(error) => return Err(error.into()),
        }
        for url in cluster.urls() {
            wait_until_ok(&Client::new(&url)?, "/readyz", "is not ready").await?;
        }
        Ok(cluster)
    }

    /// Nodes that exited since the last call, with how they ended (each reported once).
    pub fn newly_exited(&mut self) -> Vec<(u64, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        for (index, child) in self.children.iter_mut().enumerate() {
            if self.reported.contains(&index) {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.reported.push(index);
                exited.push((self.members[index].0, status));
            }
        }
        exited
    }

    /// `http://HOST:PORT` of each node, in id order.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(|(_, address)| format!("http://{address}")).collect()
    }
}

pub async fn run(output: Output, args: DevArgs) -> Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    let members: Vec<(u64, String)> =
        (1..=args.nodes).map(|id| (id, format!("127.0.0.1:{}", args.base_port as u64 + id - 1))).collect();
    for (id, address) in &members {
        eprintln!("node {id}: http://{address} (log: {})", args.data.join(format!("node-{id}.log")).display());
    }
    let executable = std::env::current_exe().context("cannot find the fleetlog executable")?;
    let cluster = LocalCluster::start(&executable, &args.data, members).await?;
    if cluster.formed {
        eprintln!("formed a new {}-node cluster", args.nodes);
    } else {
        eprintln!("cluster already formed");
    }
    let mut cluster = cluster;
    let first = Client::new(&cluster.urls()[0])?;
    print(output, &first.get("/v1/cluster", &[]).await?, render_status)?;
    eprintln!("try: fleetlog --server {} cluster status; Ctrl-C stops the cluster", cluster.urls().join(","));
    let shutdown = crate::serve::shutdown_signal();
    tokio::pin!(shutdown);
    let mut check = tokio::time::interval(NODE_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = check.tick() => {
                // A node that dies is said at once, with where to look; the others keep running.
                for (id, status) in cluster.newly_exited() {
                    let log = args.data.join(format!("node-{id}.log"));
                    eprintln!("node {id} exited ({status}); its log: {}; the other nodes keep running", log.display());
                }
            }
        }
    }
    eprintln!("stopping {} nodes", args.nodes);
    drop(cluster);
    Ok(())
}

/// How often `fleetlog dev` looks for nodes that exited.
const NODE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Polls `path` on `client` until it answers 2xx, for up to a minute.
async fn wait_until_ok(client: &Client, path: &str, failure: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client.get(path, &[]).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} {failure} within a minute; see the node logs", client.base())
}
