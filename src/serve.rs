//! `fleetlog serve`: one process, one node, the API on one address.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use fleetlog_raft::node::{Node, NodeConfig};

use crate::cli::ServeArgs;

/// Node id of the embedded single-node cluster.
const SINGLE_NODE_ID: u64 = 1;

pub async fn serve(args: ServeArgs) -> Result<()> {
    let address: SocketAddr =
        args.listen.parse().with_context(|| format!("--listen {:?} is not HOST:PORT", args.listen))?;
    let config = NodeConfig { node_id: SINGLE_NODE_ID, data_dir: args.data.clone(), advertise: args.listen.clone() };
    let listener = fleetlog_api::bind(address).with_context(|| format!("cannot listen on {address}"))?;
    let node = Node::start_single(config)
        .await
        .with_context(|| format!("cannot start a node with data in {}", args.data.display()))?;
    tracing::info!(%address, data = %args.data.display(), "fleetlog serving (single node, no authentication)");
    let served = fleetlog_api::serve(node.clone(), listener, shutdown_signal()).await;
    tracing::info!("stopped accepting; shutting down raft");
    node.shutdown().await;
    served.context("the HTTP server failed")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}
