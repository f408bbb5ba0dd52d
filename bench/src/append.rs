//! `fleetlog bench append`: closed-loop appends against any running fleetlog (one node or a
//! cluster), with latency percentiles, throughput and the servers' CPU time per event.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::cli::BenchAppendArgs;
use crate::fanout::socket_address;
use crate::load::{self, CpuProbe, LoadReport, LoadShape, Sender};

pub async fn run(server: &str, args: BenchAppendArgs) -> Result<()> {
    let server = server.split(',').next().unwrap_or(server).trim().trim_end_matches('/').to_string();
    let shape = LoadShape {
        clients: args.clients,
        connections: args.connections.unwrap_or(args.clients),
        batch: args.batch,
        payload_bytes: args.payload_bytes,
        total: Some(args.total),
        duration: args.seconds.map(|seconds| load::duration("--seconds", seconds)).transpose()?,
    };
    let sender = Arc::new(FleetlogSender::new(&server, &shape)?);
    let cpu = CpuProbe::new(metrics_urls(&server).await?);
    let report = load::run(sender, &shape, &cpu).await?;
    println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    Ok(())
}

/// Runs one load against a fleetlog whose API is at `server`.
pub async fn measure(server: &str, shape: &LoadShape) -> Result<LoadReport> {
    let sender = Arc::new(FleetlogSender::new(server, shape)?);
    let cpu = CpuProbe::new(metrics_urls(server).await?);
    load::run(sender, shape, &cpu).await
}

/// The `/metrics` of every node of the cluster `server` belongs to (just `server` when it names
/// no nodes), so CPU time is counted on followers too.
async fn metrics_urls(server: &str) -> Result<Vec<String>> {
    let status: Value = reqwest::get(format!("{server}/v1/cluster"))
        .await
        .with_context(|| format!("cannot reach {server}"))?
        .json()
        .await
        .context("GET /v1/cluster did not answer JSON")?;
    Ok(metrics_urls_of(&status, server))
}

fn metrics_urls_of(status: &Value, server: &str) -> Vec<String> {
    let mut urls: Vec<String> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|member| member["addr"].as_str())
        .map(|address| format!("http://{address}/metrics"))
        .collect();
    if urls.is_empty() {
        urls.push(format!("{server}/metrics"));
    }
    urls
}

/// One keep-alive HTTP/1.1 connection, opened on first use. HTTP/1.1 carries one request at a
/// time, so clients sharing a connection take turns; a client with its own connection never
/// waits here. The protocol is written by hand: a general client costs several times the CPU,
/// and this load generator shares the machine with the servers it measures (the etcd side is
/// raw HTTP/2 for the same reason).
struct Connection {
    turn: Mutex<Option<BufReader<TcpStream>>>,
}

impl Connection {
    /// Sends one POST and returns the status code and body of the answer.
    async fn post(&self, address: SocketAddr, path: &str, body: &str) -> Result<(u16, Vec<u8>)> {
        let mut stream = self.turn.lock().await;
        if stream.is_none() {
            let tcp = TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
            tcp.set_nodelay(true)?;
            *stream = Some(BufReader::new(tcp));
        }
        let reader = stream.as_mut().expect("connected above");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let exchanged = exchange(reader, &head, body).await;
        if exchanged.is_err() {
            // The connection's state is unknown: the next request opens a new one.
            *stream = None;
        }
        exchanged
    }
}

async fn exchange(reader: &mut BufReader<TcpStream>, head: &str, body: &str) -> Result<(u16, Vec<u8>)> {
    let socket = reader.get_mut();
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("the server closed the connection mid-answer");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
    }
    let mut answer = vec![0; length.context("an answer without content-length")?];
    reader.read_exact(&mut answer).await?;
    Ok((status, answer))
}

struct FleetlogSender {
    connections: Vec<Connection>,
    address: SocketAddr,
    batch: usize,
    /// The `data` of every event, sized so that it is about `--payload-bytes` long.
    data: String,
    /// Event ids of different runs must differ, or the ledger answers them as replays.
    run_id: String,
}

impl FleetlogSender {
    fn new(server: &str, shape: &LoadShape) -> Result<FleetlogSender> {
        let connections = (0..shape.connections).map(|_| Connection { turn: Mutex::new(None) }).collect();
        // `{"pad":""}` is 10 bytes.
        let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(shape.payload_bytes.saturating_sub(10)));
        let run_id = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_micros());
        Ok(FleetlogSender { connections, address: socket_address(server)?, batch: shape.batch, data, run_id })
    }

    /// The request body, written directly: the generator shares the CPU with the servers.
    fn body(&self, request: u64) -> String {
        let mut body = String::with_capacity(16 + self.batch * (self.data.len() + 80));
        body.push_str("{\"events\":[");
        for index in 0..self.batch {
            if index > 0 {
                body.push(',');
            }
            let _ = write!(
                body,
                "{{\"id\":\"bench-{}-{request}-{index}\",\"type\":\"bench.append\",\"data\":{}}}",
                self.run_id, self.data
            );
        }
        body.push_str("]}");
        body
    }
}

impl Sender for FleetlogSender {
    async fn send(&self, connection: usize, request: u64) -> Result<()> {
        let body = self.body(request);
        let (status, answer) = self.connections[connection].post(self.address, "/v1/events", &body).await?;
        if status != 201 {
            bail!("append answered HTTP {status}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_from_every_node_the_cluster_status_lists() {
        // The shape `GET /v1/cluster` answers (tests/cluster.rs checks the real document).
        let status = serde_json::json!({
            "leader_id": 1,
            "nodes": [
                {"id": 1, "addr": "127.0.0.1:7401", "role": "leader"},
                {"id": 2, "addr": "127.0.0.1:7402", "role": "follower"},
                {"id": 3, "addr": "127.0.0.1:7403", "role": "follower"},
            ],
        });
        assert_eq!(
            metrics_urls_of(&status, "http://127.0.0.1:7401"),
            vec!["http://127.0.0.1:7401/metrics", "http://127.0.0.1:7402/metrics", "http://127.0.0.1:7403/metrics"]
        );
        let single = serde_json::json!({"leader_id": null, "nodes": []});
        assert_eq!(metrics_urls_of(&single, "http://127.0.0.1:7070"), vec!["http://127.0.0.1:7070/metrics"]);
    }
}
