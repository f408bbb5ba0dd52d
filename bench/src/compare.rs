//! `fleetlog bench compare`: a fresh 3-node fleetlog cluster and a fresh 3-member etcd cluster
//! on this machine, the same closed-loop load against each leader (single-event appends / single
//! puts of the same payload), runs alternating A/B so that drift of the machine hits both, and
//! one table with both and their ratio.
//!
//! Durability is the same on both sides: each acknowledges a write only after a majority has
//! fsynced it (etcd by default, fleetlog always).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cli::BenchCompareArgs;
use crate::load::{self, LoadReport, LoadShape};
use crate::{append, etcd};
use fleetlog::dev::LocalCluster;

const MEMBERS: u64 = 3;
/// A short load before measuring: connections, caches and the first WAL files.
const WARM_UP: Duration = Duration::from_secs(2);

pub async fn run(fleetlog_executable: &Path, args: BenchCompareArgs) -> Result<()> {
    let client_counts = parse_counts(&args.clients)?;
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let run_length = load::duration("--seconds", args.seconds)?;
    ensure_etcd_installed()?;
    println!("starting a 3-node fleetlog cluster and a 3-member etcd cluster on 127.0.0.1 …");
    let fleetlog = LocalFleetlog::start(fleetlog_executable).await?;
    let etcd_cluster = etcd::LocalCluster::start().await?;
    let fleetlog_leader = fleetlog.leader_url().await?;
    let etcd_leader = etcd::leader_url(&etcd_cluster.urls).await?;
    let shape = |clients: usize, duration: Duration| LoadShape {
        clients,
        connections: args.connections.unwrap_or(clients),
        batch: 1,
        payload_bytes: args.payload_bytes,
        total: None,
        duration: Some(duration),
    };
    append::measure(&fleetlog_leader, &shape(16, WARM_UP)).await.context("fleetlog warm-up")?;
    etcd::measure_puts(&etcd_leader, &etcd_cluster.urls, &shape(16, WARM_UP)).await.context("etcd warm-up")?;

    let mut rows = Vec::new();
    for &clients in &client_counts {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for round in 0..args.rounds {
            let load = shape(clients, run_length);
            // A then B, then B then A: neither always runs on a machine the other just warmed.
            for fleetlog_first in [round % 2 == 0, round % 2 != 0] {
                if fleetlog_first {
                    let report = append::measure(&fleetlog_leader, &load).await?;
                    print_run("fleetlog", round, &report);
                    ours.push(report);
                } else {
                    let report = etcd::measure_puts(&etcd_leader, &etcd_cluster.urls, &load).await?;
                    print_run("etcd", round, &report);
                    theirs.push(report);
                }
            }
        }
        rows.push((clients, Combined::of(&ours)?, Combined::of(&theirs)?));
    }
    print_table(&args, &rows);
    if args.json {
        let json: Vec<Value> = rows
            .iter()
            .map(|(clients, ours, theirs)| {
                json!({"clients": clients, "fleetlog": ours.json(), "etcd": theirs.json(),
                       "ratio_events_per_second": ours.events_per_second() / theirs.events_per_second()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

fn parse_counts(list: &str) -> Result<Vec<usize>> {
    list.split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(count) if count > 0 => Ok(count),
            _ => bail!("--clients takes positive counts separated by commas, not {item:?}"),
        })
        .collect()
}

/// Installs Debian's etcd when it is missing (the comparison needs it; this machine may lack it).
fn ensure_etcd_installed() -> Result<()> {
    if etcd::etcd_installed() {
        return Ok(());
    }
    println!("etcd is not installed; installing Debian's etcd-server …");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "etcd-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !installed.success() || !etcd::etcd_installed() {
        bail!("could not install etcd-server; install it (apt-get install etcd-server) and run again");
    }
    Ok(())
}

fn print_run(system: &str, round: usize, report: &LoadReport) {
    println!(
        "  {system:<8} round {round}: {:>3} clients {:>9.0} events/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms",
        report.shape.clients,
        report.events_per_second(),
        report.latency_ms(0.50),
        report.latency_ms(0.99),
        report.latency_ms(0.999),
    );
}

fn print_table(args: &BenchCompareArgs, rows: &[(usize, Combined, Combined)]) {
    println!();
    println!(
        "single-event appends (fleetlog) vs single puts (etcd), {} B payloads, 3 replicas each, fsync on a majority before the ack; {} run(s) of {} s each",
        args.payload_bytes, args.rounds, args.seconds
    );
    println!(
        "{:>7} | {:>30} | {:>30} | {:>9} | {:>15}",
        "clients", "fleetlog events/s (p50/p99 ms)", "etcd puts/s (p50/p99 ms)", "ratio", "CPU µs/event f/e"
    );
    for (clients, ours, theirs) in rows {
        let cpu = |combined: &Combined| {
            combined.cpu_micros_per_event().map_or("?".to_string(), |micros| format!("{micros:.0}"))
        };
        println!(
            "{clients:>7} | {:>9.0} ({:>6.2} / {:>6.2}) | {:>9.0} ({:>6.2} / {:>6.2}) | {:>8.2}x | {:>7}/{:<7}",
            ours.events_per_second(),
            ours.latency_ms(0.5),
            ours.latency_ms(0.99),
            theirs.events_per_second(),
            theirs.latency_ms(0.5),
            theirs.latency_ms(0.99),
            ours.events_per_second() / theirs.events_per_second(),
            cpu(ours),
            cpu(theirs),
        );
    }
}

/// The runs of one system at one client count, taken together.
struct Combined {
    events: u64,
    seconds: f64,
    latencies: Histogram<u64>,
    server_cpu_seconds: Option<f64>,
}

impl Combined {
    fn of(reports: &[LoadReport]) -> Result<Combined> {
        let mut latencies = Histogram::<u64>::new(3)?;
        for report in reports {
            latencies.add(&report.latencies)?;
        }
        Ok(Combined {
            events: reports.iter().map(LoadReport::events).sum(),
            seconds: reports.iter().map(|report| report.seconds).sum(),
            latencies,
            server_cpu_seconds: reports.iter().map(|report| report.server_cpu_seconds).sum(),
        })
    }

    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn cpu_micros_per_event(&self) -> Option<f64> {
        self.server_cpu_seconds.map(|seconds| seconds * 1e6 / self.events.max(1) as f64)
    }

    fn json(&self) -> Value {
        json!({
            "events": self.events,
            "seconds": self.seconds,
            "events_per_second": self.events_per_second(),
            "latency_ms": {"p50": self.latency_ms(0.5), "p99": self.latency_ms(0.99), "p99.9": self.latency_ms(0.999)},
            "server_cpu_micros_per_event": self.cpu_micros_per_event(),
        })
    }
}

/// A fresh fleetlog cluster of this very binary on free ports: the nodes stop, then their
/// directory is deleted, when dropped.
struct LocalFleetlog {
    // Field order is drop order: the nodes stop before their directory goes.
    cluster: LocalCluster,
    _directory: RemovedOnDrop,
}

struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl LocalFleetlog {
    async fn start(executable: &Path) -> Result<LocalFleetlog> {
        let directory =
            RemovedOnDrop(std::env::temp_dir().join(format!("fleetlog-bench-compare-{}", std::process::id())));
        let members = (1..=MEMBERS)
            .map(|id| Ok((id, format!("127.0.0.1:{}", TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))))
            .collect::<Result<Vec<_>>>()?;
        let cluster = LocalCluster::start(executable, &directory.0, members).await?;
        Ok(LocalFleetlog { cluster, _directory: directory })
    }

    async fn leader_url(&self) -> Result<String> {
        let urls = self.cluster.urls();
        let status: Value = reqwest::get(format!("{}/v1/cluster", urls[0])).await?.json().await?;
        let leader = status["leader_id"].as_u64().context("the cluster has no leader")?;
        let position = self.cluster.members.iter().position(|(id, _)| *id == leader);
        position.map(|index| urls[index].clone()).context("the leader is not one of the nodes started")
    }
}
