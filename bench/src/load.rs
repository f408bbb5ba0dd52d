//! The closed-loop load engine shared by `bench append` and `bench compare`: C clients, each
//! sending one request, waiting for its answer and sending the next, over K connections. The
//! systems under load (fleetlog over HTTP/1.1, etcd over gRPC) plug in as [`Sender`]s.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use fleetlog_api::metrics::cpu_seconds;

/// How much load, and of what shape.
#[derive(Clone, Debug)]
pub struct LoadShape {
    pub clients: usize,
    pub connections: usize,
    /// Events per request.
    pub batch: usize,
    pub payload_bytes: usize,
    /// Stop after this many events (rounded up to whole requests)…
    pub total: Option<u64>,
    /// …or once this much time has passed, whichever comes first.
    pub duration: Option<Duration>,
}

/// A positive, finite number of seconds from the command line (`Duration` would panic on the rest).
pub fn duration(flag: &str, seconds: f64) -> Result<Duration> {
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => bail!("{flag} takes a positive number of seconds, not {seconds}"),
    }
}

impl LoadShape {
    pub fn check(&self) -> Result<()> {
        if self.clients == 0 || self.connections == 0 || self.batch == 0 {
            bail!("--clients, --connections and --batch must be at least 1");
        }
        if self.total == Some(0) || (self.total.is_none() && self.duration.is_none()) {
            bail!("the load needs a positive --total or a duration");
        }
        Ok(())
    }
}

/// One system under load: sends request number `request` of `batch` events on connection
/// `connection` and returns once the system has acknowledged it.
pub trait Sender: Send + Sync + 'static {
    fn send(&self, connection: usize, request: u64) -> impl Future<Output = Result<()>> + Send;
}

/// What one run measured.
pub struct LoadReport {
    pub shape: LoadShape,
    pub requests: u64,
    pub seconds: f64,
    /// Request latency in microseconds, from sending to the last byte of the answer.
    pub latencies: Histogram<u64>,
    /// CPU seconds the server processes used during the run, when they could be read.
    pub server_cpu_seconds: Option<f64>,
    /// CPU seconds this load generator used (it shares the machine with the servers).
    pub client_cpu_seconds: f64,
}

impl LoadReport {
    pub fn events(&self) -> u64 {
        self.requests * self.shape.batch as u64
    }

    pub fn events_per_second(&self) -> f64 {
        self.events() as f64 / self.seconds
    }

    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn to_json(&self) -> Value {
        json!({
            "clients": self.shape.clients,
            "connections": self.shape.connections,
            "batch": self.shape.batch,
            "payload_bytes": self.shape.payload_bytes,
            "requests": self.requests,
            "events": self.events(),
            "seconds": self.seconds,
            "requests_per_second": self.requests as f64 / self.seconds,
            "events_per_second": self.events_per_second(),
            "latency_ms": {
                "p50": self.latency_ms(0.50),
                "p99": self.latency_ms(0.99),
                "p99.9": self.latency_ms(0.999),
                "max": self.latencies.max() as f64 / 1000.0,
            },
            "server_cpu_seconds": self.server_cpu_seconds,
            "server_cpu_seconds_per_event": self.server_cpu_seconds.map(|seconds| seconds / self.events().max(1) as f64),
            "client_cpu_seconds": self.client_cpu_seconds,
        })
    }
}

/// Reads the servers' total CPU seconds (`process_cpu_seconds_total` of each one's `/metrics`).
pub struct CpuProbe {
    http: reqwest::Client,
    metrics_urls: Vec<String>,
}

impl CpuProbe {
    pub fn new(metrics_urls: Vec<String>) -> CpuProbe {
        CpuProbe { http: reqwest::Client::new(), metrics_urls }
    }

    /// The sum over every server, or `None` when one of them does not say.
    pub async fn read(&self) -> Option<f64> {
        let mut total = 0.0;
        for url in &self.metrics_urls {
            let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
            total += text
                .lines()
                .find_map(|line| line.strip_prefix("process_cpu_seconds_total "))
                .and_then(|value| value.trim().parse::<f64>().ok())?;
        }
        Some(total)
    }
}

/// Runs the load: `shape.clients` closed-loop clients, client `c` on connection `c % connections`.
pub async fn run<S: Sender>(sender: Arc<S>, shape: &LoadShape, cpu: &CpuProbe) -> Result<LoadReport> {
    shape.check()?;
    let requests_total = shape.total.map_or(u64::MAX, |total| total.div_ceil(shape.batch as u64));
    let next_request = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu.read().await;
    let client_cpu_before = cpu_seconds("self");
    let started = Instant::now();
    let deadline = shape.duration.map(|duration| started + duration);
    let mut clients = Vec::with_capacity(shape.clients);
    for client in 0..shape.clients {
        let (sender, next_request) = (sender.clone(), next_request.clone());
        let connection = client % shape.connections;
        clients.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram bounds are valid");
            loop {
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let request = next_request.fetch_add(1, Ordering::Relaxed);
                if request >= requests_total {
                    return Ok(latencies);
                }
                let sent = Instant::now();
                sender.send(connection, request).await?;
                latencies.record(sent.elapsed().as_micros() as u64)?;
            }
        }));
    }
    let mut latencies = Histogram::<u64>::new(3)?;
    for client in clients {
        latencies.add(client.await.context("a load client panicked")??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu.read().await;
    let requests = latencies.len();
    Ok(LoadReport {
        shape: shape.clone(),
        requests,
        seconds,
        latencies,
        server_cpu_seconds: cpu_before.zip(cpu_after).map(|(before, after)| after - before),
        client_cpu_seconds: cpu_seconds("self") - client_cpu_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_command_line_are_positive_and_finite() {
        assert_eq!(duration("--seconds", 2.5).unwrap(), Duration::from_millis(2_500));
        for refused in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = duration("--seconds", refused).unwrap_err().to_string();
            assert!(error.contains("--seconds takes a positive number of seconds"), "{refused}: {error}");
        }
    }
}
