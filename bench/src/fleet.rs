//! `fleetlog-bench fleet`: the fleet view of many registered hosts, timed now and at a past seq.

use std::time::Instant;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cli::BenchFleetArgs;

/// An HTTP client for the benches' own requests, keeping `connections` idle connections.
pub fn http_client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(connections).tcp_nodelay(true).build()?)
}

/// Registers `--registered` targets (in batches; `--hosts` of them in the environment timed),
/// deploys a release to every host of that environment, lets each host report it running, then
/// times `GET /v1/fleet` of that environment now and as of a seq halfway through the reports.
pub async fn run(server: &str, args: BenchFleetArgs) -> Result<()> {
    let http = http_client(4)?;
    let base = server.trim_end_matches('/').to_string();
    let service = format!("bench{}", std::process::id());
    let registered = args.registered.unwrap_or(args.hosts);
    if args.hosts == 0 || registered < args.hosts {
        anyhow::bail!("--hosts must be at least 1 and --registered at least --hosts");
    }
    let append = |events: Vec<Value>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let response = http.post(format!("{base}/v1/events")).json(&json!({ "events": events })).send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                anyhow::bail!("append refused ({status}): {body}");
            }
            body["first_seq"].as_u64().context("an append answer without first_seq")
        }
    };
    // Host i lives in environment i / hosts: "prod" for the first `--hosts`, "env-K" after.
    let env_of = |index: usize| match index / args.hosts {
        0 => "prod".to_string(),
        other => format!("env-{other}"),
    };
    for chunk_start in (0..registered).step_by(1_000) {
        let events: Vec<Value> = (chunk_start..(chunk_start + 1_000).min(registered))
            .map(|index| json!({"type": "target.registered", "host": format!("host-{index:07}"), "service": service, "env": env_of(index), "data": {"group": format!("g{}", index % 10)}}))
            .collect();
        append(events).await.context("register hosts")?;
    }
    append(vec![json!({"type": "release.created", "service": service, "release": "1.0"})]).await?;
    let deployment = format!("{service}-d1");
    append(vec![json!({"type": "deployment.started", "service": service, "env": "prod", "release": "1.0", "deployment": deployment, "data": {"waves": [{"name": "all", "percent": 100}]}})]).await?;
    append(vec![json!({"type": "wave.started", "deployment": deployment, "data": {"wave": "all"}})]).await?;
    let mut report_seqs = Vec::new();
    for chunk_start in (0..args.hosts).step_by(1_000) {
        let events: Vec<Value> = (chunk_start..(chunk_start + 1_000).min(args.hosts))
            .map(|index| json!({"type": "host.reported", "host": format!("host-{index:07}"), "service": service, "env": "prod", "release": "1.0", "data": {"status": "running", "applied_seq": 1}}))
            .collect();
        report_seqs.push(append(events).await.context("report hosts")?);
    }
    let middle_seq = report_seqs[report_seqs.len() / 2];
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
    report.insert("registered".into(), json!(registered));
    report.insert("past_seq".into(), json!(middle_seq));
    println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}
