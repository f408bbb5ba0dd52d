//! `fleetlog serve`: one process, one node, the API and peer traffic on one address.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use fleetlog_api::auth::Tokens;
use fleetlog_api::gate::GateOptions;
use fleetlog_api::state::ApiOptions;
use fleetlog_api::tls::ServerConfig;
use fleetlog_raft::consensus::node::{Bootstrap, Node, NodeConfig};

use crate::cli::ServeArgs;
use crate::cluster::parse_node_addresses;

/// `peer_ca` is the CA (PEM) a member with TLS checks its peers' certificates against.
pub async fn serve(args: ServeArgs, peer_ca: Option<Vec<u8>>) -> Result<()> {
    let address: SocketAddr =
        args.listen.parse().with_context(|| format!("--listen {:?} is not HOST:PORT", args.listen))?;
    let mut config = node_config(&args)?;
    let tls = tls_config(&args, &mut config, peer_ca)?;
    let tokens = access(&args, address, &config)?;
    let open = tokens.is_none();
    let options = api_options(&args, tokens, tls.clone())?;
    let listener = fleetlog_api::bind(address).with_context(|| format!("cannot listen on {address}"))?;
    let node = Node::start(config.clone())
        .await
        .with_context(|| format!("cannot start a node with data in {}", args.data.display()))?;
    let authentication = if open { "none: every caller is admin" } else { "bearer tokens" };
    let transport = if tls.is_some() { "TLS" } else { "plain HTTP" };
    match config.bootstrap {
        Bootstrap::SingleNode => {
            tracing::info!(%address, data = %args.data.display(), authentication, transport, "fleetlog serving (single node)")
        }
        Bootstrap::AwaitMembership => tracing::info!(
            %address,
            node = config.node_id,
            advertise = %config.advertise,
            data = %args.data.display(),
            peer_secret = config.cluster_secret.is_some(),
            authentication,
            transport,
            "fleetlog serving as a cluster member"
        ),
    }
    if open {
        tracing::warn!(%address, "no --token-file: anyone who can reach this address may do anything");
    }
    let served = fleetlog_api::serve(node.clone(), listener, options, shutdown_signal()).await;
    tracing::info!("stopped accepting; shutting down raft");
    node.shutdown().await;
    served.context("the HTTP server failed")
}

/// The TLS configuration when a certificate and key are given; a member serving TLS dials its
/// peers with https, checking them against `peer_ca`.
fn tls_config(
    args: &ServeArgs,
    config: &mut NodeConfig,
    peer_ca: Option<Vec<u8>>,
) -> Result<Option<Arc<ServerConfig>>> {
    let (certificate, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => (certificate, key),
        (None, None) => return Ok(None),
        // clap checks the pair on the command line; a config file's values are defaults, which it
        // does not check, and half a pair must not serve plain HTTP.
        _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
    };
    let tls = fleetlog_api::tls::server_config(certificate, key).map_err(anyhow::Error::msg)?;
    if config.bootstrap == Bootstrap::AwaitMembership && peer_ca.is_none() {
        bail!("a cluster member serving TLS needs --tls-ca: the CA its peers' certificates are checked against");
    }
    // Members of one cluster serve TLS alike, so a member with TLS dials its peers with https.
    config.peer_ca_pem = peer_ca;
    Ok(Some(tls))
}

/// The HTTP layer's settings, with the limits checked.
fn api_options(args: &ServeArgs, tokens: Option<Tokens>, tls: Option<Arc<ServerConfig>>) -> Result<ApiOptions> {
    if args.max_subscribers == 0 {
        bail!("--max-subscribers must be at least 1");
    }
    if args.requests_per_second_per_token == 0 || args.max_subscribers_per_token == 0 {
        bail!("--requests-per-second-per-token and --max-subscribers-per-token must be at least 1");
    }
    if args.client_timeout_seconds == 0 {
        bail!("--client-timeout-seconds must be at least 1");
    }
    if args.send_timeout_seconds == 0 {
        bail!("--send-timeout-seconds must be at least 1");
    }
    if args.webhook_timeout_seconds == 0 || args.webhook_retry_max_seconds == 0 {
        bail!("--webhook-timeout-seconds and --webhook-retry-max-seconds must be at least 1");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    warn_if_few_open_files(args.max_connections);
    let gate = GateOptions {
        tokens,
        requests_per_second_per_token: args.requests_per_second_per_token,
        subscribers_per_token: args.max_subscribers_per_token,
    };
    Ok(ApiOptions {
        subscribers_max: args.max_subscribers,
        gate,
        client_timeout: std::time::Duration::from_secs(args.client_timeout_seconds),
        connections_max: args.max_connections,
        send_timeout: std::time::Duration::from_secs(args.send_timeout_seconds),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
        tls,
        alert_labels: alert_labels(&args.alert_labels)?,
        webhooks: fleetlog_api::webhooks::WebhookOptions {
            timeout: std::time::Duration::from_secs(args.webhook_timeout_seconds),
            retry_pause_max: std::time::Duration::from_secs(args.webhook_retry_max_seconds),
        },
    })
}

/// `--alert-labels service=app,env=stage,host=instance`: the label names incoming alerts are
/// mapped by; those not given keep their default.
fn alert_labels(text: &Option<String>) -> Result<fleetlog_api::state::AlertLabels> {
    let mut labels = fleetlog_api::state::AlertLabels::default();
    let Some(text) = text else { return Ok(labels) };
    for pair in text.split(',') {
        let Some((field, label)) = pair.split_once('=') else {
            bail!("--alert-labels: {pair:?} is not FIELD=LABEL (e.g. service=app,env=stage,host=instance)");
        };
        let (field, label) = (field.trim(), label.trim());
        if label.is_empty() {
            bail!("--alert-labels: the label for {field} is empty");
        }
        match field {
            "service" => labels.service = label.to_string(),
            "env" => labels.env = label.to_string(),
            "host" => labels.host = label.to_string(),
            other => bail!("--alert-labels: {other:?} is not service, env or host"),
        }
    }
    Ok(labels)
}

/// Open files the process needs besides its connections: RocksDB's tables and logs, outgoing
/// peer connections, the rest.
const OTHER_OPEN_FILES: u64 = 2_000;

/// Warns when the open-file limit cannot hold `max_connections` and the node's own files: past
/// it, accepting fails (the listener backs off) and RocksDB may fail to open a table.
fn warn_if_few_open_files(max_connections: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let needed = max_connections as u64 + OTHER_OPEN_FILES;
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            needed,
            "the open-file limit is below --max-connections plus the node's own files; lower --max-connections or raise the limit"
        );
    }
}

/// The tokens to require, or None to run open. Open is the default only on a loopback address;
/// a server with tokens that joins a cluster needs a cluster secret, or the peer routes would be a
/// way around its tokens.
fn access(args: &ServeArgs, address: SocketAddr, config: &NodeConfig) -> Result<Option<Tokens>> {
    let Some(path) = &args.token_file else {
        if !address.ip().is_loopback() && !args.insecure_open {
            bail!(
                "--listen {address} is not a loopback address: give --token-file (see `fleetlog token create`), \
                 or --insecure-open to let anyone who reaches it do anything"
            );
        }
        return Ok(None);
    };
    let tokens = Tokens::load(path).map_err(|error| anyhow::anyhow!(error))?;
    if tokens.is_empty() {
        bail!("the token file {} holds no tokens: nobody could call this server", path.display());
    }
    if config.bootstrap == Bootstrap::AwaitMembership && config.cluster_secret.is_none() {
        bail!("a cluster member with --token-file needs --cluster-secret too, or peer calls would bypass the tokens");
    }
    Ok(Some(tokens))
}

fn node_config(args: &ServeArgs) -> Result<NodeConfig> {
    let mut config =
        NodeConfig::single(args.data.clone(), args.advertise.clone().unwrap_or_else(|| args.listen.clone()));
    config.snapshot_every = args.snapshot_every;
    config.disk_reserve_bytes = args.min_free_mib.saturating_mul(1024 * 1024);
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
