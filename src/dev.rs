//! `fleetlog dev --nodes 3`: a local cluster for trying fleetlog out. Each node is a child
//! `fleetlog serve --node-id N` process with its own data directory and log file; the cluster is
//! formed on first start and kept across restarts. Ctrl-C stops every node gracefully.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fleetlog_api::client::{Client, ClientError};
use reqwest::Method;
use serde_json::json;

use crate::cli::{DevArgs, Output};
use crate::cluster::render_status;
use crate::output::print;

/// Stops the children when dropped, so an error on the way never leaves them running.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: the pid is our own child, not yet waited for.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

pub async fn run(output: Output, args: DevArgs) -> Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    let executable = std::env::current_exe().context("cannot find the fleetlog executable")?;
    std::fs::create_dir_all(&args.data).with_context(|| format!("cannot create {}", args.data.display()))?;
    let members: Vec<(u64, String)> =
        (1..=args.nodes).map(|id| (id, format!("127.0.0.1:{}", args.base_port as u64 + id - 1))).collect();
    let mut children = Children(Vec::new());
    for (id, address) in &members {
        let log_path = args.data.join(format!("node-{id}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(&executable)
            .args(["serve", "--node-id", &id.to_string(), "--listen", address, "--data"])
            .arg(args.data.join(format!("node-{id}")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start a node")?;
        children.0.push(child);
        eprintln!("node {id}: http://{address} (log: {})", log_path.display());
    }
    let first = Client::new(&format!("http://{}", members[0].1))?;
    for (_, address) in &members {
        wait_until_ok(&Client::new(&format!("http://{address}"))?, "/healthz", "did not start listening").await?;
    }
    let body = json!({ "members": members.iter().cloned().collect::<BTreeMap<u64, String>>() });
    match first.call(Method::POST, "/v1/cluster/init", Some(&body), Duration::from_secs(60)).await {
        Ok(_) => eprintln!("formed a new {}-node cluster", args.nodes),
        Err(ClientError::Api { code, .. }) if code == "already_initialized" => eprintln!("cluster already formed"),
        Err(error) => return Err(error.into()),
    }
    wait_until_ok(&first, "/readyz", "has no leader").await?;
    print(output, &first.get("/v1/cluster", &[]).await?, render_status);
    eprintln!("try: fleetlog --server http://{} cluster status; Ctrl-C stops the cluster", members[0].1);
    crate::serve::shutdown_signal().await;
    eprintln!("stopping {} nodes", args.nodes);
    drop(children);
    Ok(())
}

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
