//! `fleetlog bench`: load generators that measure a running server over real HTTP.

mod etcd;
mod fanout;
mod proofs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cli::{BenchAppendArgs, BenchCommand, BenchFleetArgs};

pub async fn run(server: &str, command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Append(args) => append(server, args).await,
        BenchCommand::Fleet(args) => fleet(server, args).await,
        BenchCommand::Fanout(args) => fanout::run(server, args).await,
        BenchCommand::Proofs(args) => proofs::run(server, args).await,
    }
}

fn http_client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(connections).tcp_nodelay(true).build()?)
}

/// Closed loop: each client sends one request, waits for its answer, sends the next.
async fn append(server: &str, args: BenchAppendArgs) -> Result<()> {
    if args.clients == 0 || args.batch == 0 || args.total == 0 {
        bail!("--clients, --batch and --total must be at least 1");
    }
    let http = http_client(args.clients)?;
    let url = format!("{}/v1/events", server.trim_end_matches('/'));
    let payload = "x".repeat(args.payload_bytes.saturating_sub(12));
    let requests_total = args.total.div_ceil(args.batch as u64);
    let next_request = Arc::new(AtomicU64::new(0));
    let run_id = std::process::id();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.clients {
        let (http, url, payload, next_request) = (http.clone(), url.clone(), payload.clone(), next_request.clone());
        let batch = args.batch;
        workers.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let request = next_request.fetch_add(1, Ordering::Relaxed);
                if request >= requests_total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let events: Vec<Value> = (0..batch)
                    .map(|index| json!({"id": format!("bench-{run_id}-{request}-{index}"), "type": "bench.append", "data": {"pad": payload}}))
                    .collect();
                let sent = Instant::now();
                let response = http.post(&url).json(&json!({ "events": events })).send().await?;
                let status = response.status();
                let _ = response.bytes().await?;
                if !status.is_success() {
                    bail!("append failed with HTTP {status}");
                }
                latencies.record(sent.elapsed().as_micros() as u64)?;
            }
        }));
    }
    let mut latencies = Histogram::<u64>::new(3)?;
    for worker in workers {
        latencies.add(worker.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = requests_total * args.batch as u64;
    let report = json!({
        "clients": args.clients,
        "batch": args.batch,
        "payload_bytes": args.payload_bytes,
        "requests": requests_total,
        "events": events,
        "seconds": elapsed,
        "requests_per_second": requests_total as f64 / elapsed,
        "events_per_second": events as f64 / elapsed,
        "latency_us": {
            "p50": latencies.value_at_quantile(0.50),
            "p99": latencies.value_at_quantile(0.99),
            "p999": latencies.value_at_quantile(0.999),
            "max": latencies.max(),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Registers `--hosts` targets (in batches), then times `GET /v1/fleet` now and at a past seq.
async fn fleet(server: &str, args: BenchFleetArgs) -> Result<()> {
    let http = http_client(4)?;
    let base = server.trim_end_matches('/').to_string();
    let service = format!("bench{}", std::process::id());
    let mut first_seq = None;
    for chunk_start in (0..args.hosts).step_by(1_000) {
        let events: Vec<Value> = (chunk_start..(chunk_start + 1_000).min(args.hosts))
            .map(|index| json!({"type": "target.registered", "host": format!("host-{index:05}"), "service": service, "env": "prod", "data": {"group": format!("g{}", index % 10)}}))
            .collect();
        let response: Value =
            http.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await?.json().await?;
        first_seq.get_or_insert(response["first_seq"].as_u64().context("register hosts")?);
    }
    let middle_seq = first_seq.unwrap_or(1) + args.hosts as u64 / 2;
    let queries = [
        ("now", format!("service={service}&env=prod")),
        ("past", format!("service={service}&env=prod&at_seq={middle_seq}")),
    ];
    let mut report = serde_json::Map::new();
    for (name, query) in queries {
        let mut latencies = Histogram::<u64>::new(3)?;
        let mut last_body = None;
        for _ in 0..args.repeat {
            // Timed to the last byte received; parsing the answer is the client's cost, not the server's.
            let started = Instant::now();
            let body = http.get(format!("{base}/v1/fleet?{query}")).send().await?.error_for_status()?.bytes().await?;
            latencies.record(started.elapsed().as_micros() as u64)?;
            last_body = Some(body);
        }
        let view: Value = serde_json::from_slice(last_body.as_deref().unwrap_or(b"{}"))?;
        let hosts = view["hosts"].as_array().map_or(0, Vec::len);
        report.insert(
            name.to_string(),
            json!({"hosts": hosts, "p50_ms": latencies.value_at_quantile(0.5) as f64 / 1000.0, "max_ms": latencies.max() as f64 / 1000.0}),
        );
    }
    report.insert("registered".into(), json!(args.hosts));
    println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}
