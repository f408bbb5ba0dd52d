//! `fleetlog bench`: load generators that measure a running server over real HTTP, and
//! `bench rollback`, which times the apply step in-process.

mod append;
mod catchup;
mod compare;
mod etcd;
mod fanout;
mod load;
mod proofs;
mod rollback;

use std::time::Instant;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cli::{BenchCommand, BenchFleetArgs};

pub async fn run(server: &str, command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Append(args) => append::run(server, args).await,
        BenchCommand::Compare(args) => compare::run(args).await,
        BenchCommand::Catchup(args) => catchup::run(server, args).await,
        BenchCommand::Fleet(args) => fleet(server, args).await,
        BenchCommand::Fanout(args) => fanout::run(server, args).await,
        BenchCommand::Proofs(args) => proofs::run(server, args).await,
        BenchCommand::Rollback(args) => rollback::run(args).await,
    }
}

fn http_client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(connections).tcp_nodelay(true).build()?)
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
