//! The etcd side of the benches, speaking etcd's native gRPC (HTTP/2, hand-encoded protobuf: the
//! messages are tiny). For `bench fanout`: the same number of watchers, each on its own
//! connection, all watching one key; each round one put changes it. For `bench compare`:
//! closed-loop puts ([`PutSender`]). By default a local 3-member etcd cluster is started for the
//! run, with etcd's default durability (fsync before acknowledging).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use serde_json::json;
use tokio::net::TcpStream;

use fleetlog_api::metrics::resident_bytes;

use crate::cli::BenchFanoutArgs;
use crate::fanout::{connect_watchers, socket_address, Measurement, Round, WatcherSlot};
use crate::load::{self, CpuProbe, LoadReport, LoadShape, Sender};

const WATCHED_KEY: &[u8] = b"fleetlog-bench/fanout";
const MEMBERS: usize = 3;

/// Where the etcd side runs.
pub enum Target {
    /// A cluster this run starts and stops.
    Local,
    /// Client URLs of a running cluster.
    Remote(Vec<String>),
}

impl Target {
    /// `auto`: a local cluster when `etcd` is on PATH; `off`: none; else a list of client URLs.
    pub fn choose(setting: &str) -> Result<Option<Target>> {
        Ok(match setting {
            "off" => None,
            "auto" => etcd_installed().then_some(Target::Local),
            urls => {
                Some(Target::Remote(urls.split(',').map(|url| url.trim().trim_end_matches('/').to_string()).collect()))
            }
        })
    }
}

pub fn etcd_installed() -> bool {
    Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A local etcd cluster, stopped and deleted when dropped.
pub struct LocalCluster {
    members: Vec<Child>,
    directory: PathBuf,
    pub urls: Vec<String>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    pub async fn start() -> Result<LocalCluster> {
        let directory = std::env::temp_dir().join(format!("fleetlog-bench-etcd-{}", std::process::id()));
        std::fs::create_dir_all(&directory)?;
        let client_ports = (0..MEMBERS).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let peer_ports = (0..MEMBERS).map(|_| free_port()).collect::<Result<Vec<_>>>()?;
        let initial_cluster = (0..MEMBERS)
            .map(|member| format!("e{member}=http://127.0.0.1:{}", peer_ports[member]))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster { members: Vec::new(), directory: directory.clone(), urls: Vec::new() };
        for member in 0..MEMBERS {
            let client_url = format!("http://127.0.0.1:{}", client_ports[member]);
            let peer_url = format!("http://127.0.0.1:{}", peer_ports[member]);
            let log = std::fs::File::create(directory.join(format!("e{member}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", &format!("e{member}")])
                .args(["--data-dir", &directory.join(format!("e{member}")).display().to_string()])
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "fleetlog-bench", "--log-level", "warn", "--logger", "zap"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting etcd")?;
            cluster.members.push(child);
            cluster.urls.push(client_url);
        }
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &cluster.urls {
            loop {
                let healthy = match http.get(format!("{url}/health")).send().await {
                    Ok(response) => response.text().await.unwrap_or_default().contains("\"true\""),
                    Err(_) => false,
                };
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd at {url} did not become healthy; see {}", directory.display());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(cluster)
    }

    fn resident_memory(&self) -> u64 {
        self.members.iter().map(|member| resident_bytes(&member.id().to_string())).sum()
    }
}

pub async fn measure(target: Target, args: &BenchFanoutArgs) -> Result<Measurement> {
    let (local, urls) = match target {
        Target::Local => {
            let cluster = LocalCluster::start().await?;
            let urls = cluster.urls.clone();
            (Some(cluster), urls)
        }
        Target::Remote(urls) => (None, urls),
    };
    let memory_before = local.as_ref().map(LocalCluster::resident_memory);
    let addresses = urls.iter().map(|url| socket_address(url)).collect::<Result<Vec<_>>>()?;
    let mut watchers = connect_watchers("etcd", &addresses, args.agents, args.connect_parallel, watch).await?;
    let memory_per_watcher = match (memory_before, local.as_ref().map(LocalCluster::resident_memory)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / args.agents as f64),
        _ => None,
    };

    let http = reqwest::Client::new();
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let body = json!({"key": encode(WATCHED_KEY), "value": encode(format!("r{round}").as_bytes())});
        watchers.receipts.reset();
        let sent = Instant::now();
        let response = http.post(format!("{}/v3/kv/put", urls[0])).json(&body).send().await?;
        if !response.status().is_success() {
            bail!("etcd refused the put: HTTP {}", response.status());
        }
        let acknowledged = sent.elapsed();
        let received = watchers.receipts.collect(sent).await;
        rounds.push(Round { acknowledged, received });
    }
    watchers.tasks.abort_all();
    drop(local);
    Ok(Measurement {
        system: format!("etcd ({} member{})", urls.len(), if urls.len() == 1 { "" } else { "s" }),
        watchers: args.agents,
        connect_time: watchers.connect_time,
        memory_per_watcher,
        rounds,
    })
}

/// One watcher: its own connection and one gRPC watch stream on [`WATCHED_KEY`].
async fn watch(mut slot: WatcherSlot) -> Result<()> {
    let address = slot.address;
    let tcp = TcpStream::connect(address).await.with_context(|| format!("connecting to etcd at {address}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut sender = sender.ready().await?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{address}/etcdserverpb.Watch/Watch"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut outbound) = sender.send_request(request, false)?;
    outbound.send_data(grpc_frame(&watch_create_request(WATCHED_KEY)), false)?;
    let mut body = response.await?.into_body();
    let mut pending = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let now = Instant::now();
        let _ = body.flow_control().release_capacity(chunk.len());
        pending.extend_from_slice(&chunk);
        while let Some(message) = next_grpc_message(&mut pending) {
            let fields = top_level_fields(&message).context("etcd sent a message that is not protobuf")?;
            // WatchResponse: created = 3, events = 11.
            if fields.contains(&3) {
                slot.established();
            }
            if fields.contains(&11) {
                slot.receipts.record(slot.index, now);
            }
        }
    }
    // Keep the request stream open for as long as the watch runs.
    drop(outbound);
    bail!("etcd ended the watch stream")
}

/// The client URL of the member that leads, from each member's `/v3/maintenance/status` (etcd
/// 3.4's JSON gateway prints 64-bit ids as strings).
pub async fn leader_url(urls: &[String]) -> Result<String> {
    let http = reqwest::Client::new();
    for url in urls {
        let status: serde_json::Value =
            http.post(format!("{url}/v3/maintenance/status")).body("{}").send().await?.json().await?;
        if status["leader"].is_string() && status["leader"] == status["header"]["member_id"] {
            return Ok(url.clone());
        }
    }
    bail!("no etcd member says it leads")
}

/// Runs one closed-loop put load against the etcd member at `url`, counting the CPU time of
/// every member in `all_urls`.
pub async fn measure_puts(url: &str, all_urls: &[String], shape: &LoadShape) -> Result<LoadReport> {
    if shape.batch != 1 {
        bail!("the etcd load sends single puts only (batch 1)");
    }
    let sender = Arc::new(PutSender::connect(url, shape).await?);
    let cpu = CpuProbe::new(all_urls.iter().map(|url| format!("{url}/metrics")).collect());
    load::run(sender, shape, &cpu).await
}

/// Closed-loop `KV.Put`s, each of a new key with a `payload_bytes` value, over HTTP/2
/// connections that the clients share as gRPC streams.
pub struct PutSender {
    connections: Vec<h2::client::SendRequest<Bytes>>,
    address: SocketAddr,
    value: Vec<u8>,
}

impl PutSender {
    pub async fn connect(url: &str, shape: &LoadShape) -> Result<PutSender> {
        let address = socket_address(url)?;
        let mut connections = Vec::with_capacity(shape.connections);
        for _ in 0..shape.connections {
            let tcp = TcpStream::connect(address).await.with_context(|| format!("connecting to etcd at {address}"))?;
            tcp.set_nodelay(true)?;
            let (sender, connection) = h2::client::handshake(tcp).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            connections.push(sender);
        }
        Ok(PutSender { connections, address, value: vec![b'x'; shape.payload_bytes] })
    }
}

impl Sender for PutSender {
    async fn send(&self, connection: usize, request: u64) -> Result<()> {
        let mut sender = self.connections[connection].clone().ready().await?;
        let grpc_request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{}/etcdserverpb.KV/Put", self.address))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (response, mut outbound) = sender.send_request(grpc_request, false)?;
        let key = format!("fleetlog-bench/{request:016x}");
        outbound.send_data(grpc_frame(&put_request(key.as_bytes(), &self.value)), true)?;
        let response = response.await?;
        let (parts, mut body) = response.into_parts();
        while let Some(chunk) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk?.len());
        }
        // gRPC reports failure in the trailers (or, for an immediate error, in the headers).
        let trailers = body.trailers().await?.unwrap_or_default();
        let status = trailers.get("grpc-status").or_else(|| parts.headers.get("grpc-status"));
        match status.map(|value| value.as_bytes()) {
            Some(b"0") => Ok(()),
            other => bail!("etcd refused a put: grpc-status {:?}", other.map(String::from_utf8_lossy)),
        }
    }
}

/// `PutRequest { key (1), value (2) }`.
fn put_request(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut message = length_delimited(1, key);
    message.extend_from_slice(&length_delimited(2, value));
    message
}

/// `WatchRequest { create_request (1): WatchCreateRequest { key (1): key } }`.
fn watch_create_request(key: &[u8]) -> Vec<u8> {
    let create = length_delimited(1, key);
    length_delimited(1, &create)
}

fn length_delimited(field: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, field << 3 | 2);
    put_varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// Takes one whole length-prefixed gRPC message off the front of `pending`.
fn next_grpc_message(pending: &mut BytesMut) -> Option<Bytes> {
    if pending.len() < 5 {
        return None;
    }
    let length = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
    if pending.len() < 5 + length {
        return None;
    }
    pending.advance(5);
    Some(pending.split_to(length).freeze())
}

/// Field numbers at the top level of a protobuf message; `None` if it does not parse.
fn top_level_fields(mut message: &[u8]) -> Option<Vec<u64>> {
    let mut fields = Vec::new();
    while !message.is_empty() {
        let key = take_varint(&mut message)?;
        fields.push(key >> 3);
        match key & 7 {
            0 => {
                take_varint(&mut message)?;
            }
            1 => message = message.get(8..)?,
            2 => {
                let length = take_varint(&mut message)? as usize;
                message = message.get(length..)?;
            }
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(fields)
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_watch_request_and_walks_a_response() {
        assert_eq!(watch_create_request(b"k"), vec![0x0a, 0x03, 0x0a, 0x01, b'k']);
        // header (1) as a nested message, watch_id (2) = 0, created (3) = true, events (11).
        let response = [0x0a, 0x02, 0x08, 0x01, 0x10, 0x00, 0x18, 0x01, 0x5a, 0x00];
        assert_eq!(top_level_fields(&response), Some(vec![1, 2, 3, 11]));
        assert_eq!(top_level_fields(&[0x0a, 0x05, 0x00]), None);
        let mut pending = BytesMut::from(&grpc_frame(&response)[..]);
        pending.extend_from_slice(&[0, 0, 0]);
        assert_eq!(next_grpc_message(&mut pending).as_deref(), Some(&response[..]));
        assert!(next_grpc_message(&mut pending).is_none());
    }

    #[test]
    fn encodes_a_put_request() {
        assert_eq!(put_request(b"k", b"vv"), vec![0x0a, 0x01, b'k', 0x12, 0x02, b'v', b'v']);
    }
}
