//! `fleetlog serve`: one process, one node, the API and peer traffic on one address.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use fleetlog_api::state::ApiOptions;
use fleetlog_raft::node::{Bootstrap, Node, NodeConfig};

use crate::cli::ServeArgs;
use crate::cluster::parse_node_addresses;

pub async fn serve(args: ServeArgs) -> Result<()> {
    let address: SocketAddr =
        args.listen.parse().with_context(|| format!("--listen {:?} is not HOST:PORT", args.listen))?;
    let config = node_config(&args)?;
    if args.max_subscribers == 0 {
        bail!("--max-subscribers must be at least 1");
    }
    let options = ApiOptions { subscribers_max: args.max_subscribers };
    let listener = fleetlog_api::bind(address).with_context(|| format!("cannot listen on {address}"))?;
    let node = Node::start(config.clone())
        .await
        .with_context(|| format!("cannot start a node with data in {}", args.data.display()))?;
    match config.bootstrap {
        Bootstrap::SingleNode => {
            tracing::info!(%address, data = %args.data.display(), "fleetlog serving (single node, no authentication)")
        }
        Bootstrap::AwaitMembership => tracing::info!(
            %address,
            node = config.node_id,
            advertise = %config.advertise,
            data = %args.data.display(),
            peer_secret = config.cluster_secret.is_some(),
            "fleetlog serving as a cluster member (no client authentication)"
        ),
    }
    let served = fleetlog_api::serve(node.clone(), listener, options, shutdown_signal()).await;
    tracing::info!("stopped accepting; shutting down raft");
    node.shutdown().await;
    served.context("the HTTP server failed")
}

fn node_config(args: &ServeArgs) -> Result<NodeConfig> {
    let mut config =
        NodeConfig::single(args.data.clone(), args.advertise.clone().unwrap_or_else(|| args.listen.clone()));
    config.snapshot_every = args.snapshot_every;
    config.cluster_secret = args.cluster_secret.clone().filter(|secret| !secret.is_empty());
    config.peer_routes = parse_node_addresses(&args.peer_routes, "--peer-route")?.into_iter().collect();
    if args.snapshot_every == 0 {
        bail!("--snapshot-every must be at least 1 (Raft log entries between snapshots)");
    }
    if let Some(node_id) = args.node_id {
        if node_id == 0 {
            bail!("--node-id must be a positive integer");
        }
        config.node_id = node_id;
        config.bootstrap = Bootstrap::AwaitMembership;
    } else if args.advertise.is_some() || !args.peer_routes.is_empty() {
        bail!("--advertise and --peer-route are for cluster members: add --node-id");
    }
    Ok(config)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
