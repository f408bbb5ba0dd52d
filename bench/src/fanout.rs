//! `fleetlog bench fanout`: many simulated agents watch their hosts, one rollback is appended,
//! and the time until each agent received its directive is measured. The agents are tasks of
//! this process, each on its own TCP connection, reading the raw SSE stream (no client library
//! in the way). The same measurement runs against etcd watchers when etcd is available.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fleetlog_api::client::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::cli::BenchFanoutArgs;
use crate::{etcd, floor};

/// How long one round may take before the bench gives up on missing agents.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after connecting, so the memory reading is of idle watchers.
const SETTLE: Duration = Duration::from_secs(2);

/// When each simulated agent received the change of one round.
pub struct Round {
    pub acknowledged: Duration,
    /// Delays since the write was sent, one per agent that received it, sorted.
    pub received: Vec<Duration>,
}

impl Round {
    fn at(&self, quantile: f64) -> Duration {
        if self.received.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.received.len() - 1) as f64 * quantile).round() as usize;
        self.received[index]
    }

    pub fn first(&self) -> Duration {
        self.at(0.0)
    }

    pub fn median(&self) -> Duration {
        self.at(0.5)
    }

    pub fn last(&self) -> Duration {
        self.at(1.0)
    }
}

/// When each watcher last received a change: one slot per watcher, written by the watcher, so
/// recording costs no allocation or channel (the bench shares the machine with the server).
pub struct Receipts {
    base: Instant,
    /// Nanoseconds after `base`, per watcher.
    slots: Vec<AtomicU64>,
    count: AtomicUsize,
    complete: tokio::sync::Notify,
}

impl Receipts {
    pub fn new(watchers: usize) -> Arc<Receipts> {
        Arc::new(Receipts {
            base: Instant::now(),
            slots: (0..watchers).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
            complete: tokio::sync::Notify::new(),
        })
    }

    pub fn record(&self, watcher: usize, at: Instant) {
        let nanos = at.saturating_duration_since(self.base).as_nanos() as u64;
        self.slots[watcher].store(nanos, Ordering::Relaxed);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.slots.len() {
            self.complete.notify_one();
        }
    }

    /// Starts a round: forgets the previous one.
    pub fn reset(&self) {
        self.count.store(0, Ordering::Release);
    }

    /// Waits until every watcher received the round's change (or the round times out), and
    /// returns the delays since `sent`, sorted.
    pub async fn collect(&self, sent: Instant) -> Vec<Duration> {
        let expected = self.slots.len();
        let waited = tokio::time::timeout(ROUND_TIMEOUT, async {
            while self.count.load(Ordering::Acquire) < expected {
                let _ = tokio::time::timeout(Duration::from_millis(5), self.complete.notified()).await;
            }
        })
        .await;
        if waited.is_err() {
            eprintln!(
                "round timed out: {} of {expected} watchers received the change",
                self.count.load(Ordering::Acquire)
            );
        }
        let sent = sent.saturating_duration_since(self.base).as_nanos() as u64;
        let mut delays: Vec<Duration> = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|at| *at >= sent)
            .map(|at| Duration::from_nanos(at - sent))
            .collect();
        delays.sort();
        delays
    }
}

/// One system's whole run.
pub struct Measurement {
    pub system: String,
    pub watchers: usize,
    pub connect_time: Duration,
    pub memory_per_watcher: Option<f64>,
    pub rounds: Vec<Round>,
}

impl Measurement {
    /// The median over rounds of a per-round figure.
    pub fn median_of(&self, figure: impl Fn(&Round) -> Duration) -> Duration {
        let mut values: Vec<Duration> = self.rounds.iter().map(figure).collect();
        values.sort();
        values.get(values.len() / 2).copied().unwrap_or_default()
    }

    pub fn max_of(&self, figure: impl Fn(&Round) -> Duration) -> Duration {
        self.rounds.iter().map(figure).max().unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "{}: {} watchers connected in {:.1} s{}",
            self.system,
            self.watchers,
            self.connect_time.as_secs_f64(),
            match self.memory_per_watcher {
                Some(bytes) => format!(", server memory {:.1} KiB per idle watcher", bytes / 1024.0),
                None => String::new(),
            }
        );
        println!("  round  ack ms  first ms  median ms  last ms  received");
        for (index, round) in self.rounds.iter().enumerate() {
            println!(
                "  {:>5}  {:>6.1}  {:>8.1}  {:>9.1}  {:>7.1}  {:>8}",
                index + 1,
                milliseconds(round.acknowledged),
                milliseconds(round.first()),
                milliseconds(round.median()),
                milliseconds(round.last()),
                round.received.len()
            );
        }
        println!(
            "  last agent: p50 {:.1} ms, max {:.1} ms; median agent p50 {:.1} ms",
            milliseconds(self.median_of(Round::last)),
            milliseconds(self.max_of(Round::last)),
            milliseconds(self.median_of(Round::median)),
        );
    }

    fn json(&self) -> Value {
        json!({
            "system": self.system,
            "watchers": self.watchers,
            "connect_seconds": self.connect_time.as_secs_f64(),
            "memory_bytes_per_watcher": self.memory_per_watcher,
            "last_ms": {"p50": milliseconds(self.median_of(Round::last)), "max": milliseconds(self.max_of(Round::last))},
            "median_ms": {"p50": milliseconds(self.median_of(Round::median))},
            "first_ms": {"p50": milliseconds(self.median_of(Round::first))},
            "rounds": self.rounds.iter().map(|round| json!({
                "ack_ms": milliseconds(round.acknowledged),
                "first_ms": milliseconds(round.first()),
                "median_ms": milliseconds(round.median()),
                "last_ms": milliseconds(round.last()),
                "received": round.received.len(),
            })).collect::<Vec<_>>(),
        })
    }
}

pub fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub async fn run(servers: &str, args: BenchFanoutArgs) -> Result<()> {
    if args.agents == 0 || args.rounds == 0 {
        bail!("--agents and --rounds must be at least 1");
    }
    let urls: Vec<String> = servers.split(',').map(|url| url.trim().trim_end_matches('/').to_string()).collect();
    let fleetlog = measure_fleetlog(&urls, &args).await?;
    fleetlog.print();
    let etcd = match etcd::Target::choose(&args.etcd)? {
        Some(target) => {
            let measured = etcd::measure(target, &args).await?;
            measured.print();
            Some(measured)
        }
        None => {
            println!("etcd: not measured (--etcd off, or no etcd binary on PATH)");
            None
        }
    };
    if let Some(etcd) = &etcd {
        let ratio = |ours: Duration, theirs: Duration| theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9);
        println!(
            "ratio (etcd / fleetlog, above 1 means fleetlog is faster): last agent p50 {:.2}x, max {:.2}x, median agent {:.2}x",
            ratio(fleetlog.median_of(Round::last), etcd.median_of(Round::last)),
            ratio(fleetlog.max_of(Round::last), etcd.max_of(Round::last)),
            ratio(fleetlog.median_of(Round::median), etcd.median_of(Round::median)),
        );
        if let (Some(ours), Some(theirs)) = (fleetlog.memory_per_watcher, etcd.memory_per_watcher) {
            println!("memory per idle watcher: fleetlog {:.1} KiB, etcd {:.1} KiB", ours / 1024.0, theirs / 1024.0);
        }
    }
    // The machine's own floor, in the same run: the watchers above are closed by now.
    let connections = floor::connections_possible(args.agents);
    let floor_rounds = if args.no_floor { Vec::new() } else { floor::measure(connections, args.rounds).await? };
    let floor_last = (!floor_rounds.is_empty()).then(|| floor::median_of(&floor_rounds, |round| round.last));
    if let Some(floor_last) = floor_last {
        println!(
            "loopback floor ({connections} connections, one 200-byte write each): last p50 {:.1} ms, median p50 {:.1} ms, first p50 {:.1} ms",
            milliseconds(floor_last),
            milliseconds(floor::median_of(&floor_rounds, |round| round.median)),
            milliseconds(floor::median_of(&floor_rounds, |round| round.first)),
        );
        println!(
            "fleetlog last agent p50 / loopback floor: {:.2}x",
            fleetlog.median_of(Round::last).as_secs_f64() / floor_last.as_secs_f64().max(1e-9)
        );
    }
    if args.json {
        let report = json!({
            "fleetlog": fleetlog.json(),
            "etcd": etcd.as_ref().map(Measurement::json),
            "floor_last_ms_p50": floor_last.map(milliseconds),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// Socket address of a `http://HOST:PORT` URL.
pub fn socket_address(url: &str) -> Result<SocketAddr> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let host = parsed.host_str().context("a server URL without host")?;
    let port = parsed.port_or_known_default().context("a server URL without port")?;
    format!("{host}:{port}").parse().with_context(|| format!("{url:?} must name an IP address and port"))
}

/// Sum over the servers of their resident memory, read from `/metrics`.
async fn resident_memory(clients: &[reqwest::Client], urls: &[String]) -> Option<u64> {
    let mut total = 0;
    for (client, url) in clients.iter().zip(urls) {
        let text = client.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
        let line = text.lines().find(|line| line.starts_with("process_resident_memory_bytes "))?;
        total += line.split_whitespace().nth(1)?.parse::<f64>().ok()? as u64;
    }
    Some(total)
}

async fn measure_fleetlog(urls: &[String], args: &BenchFanoutArgs) -> Result<Measurement> {
    let writer = Client::new(&urls[0])?;
    let run = format!("fanout{}", std::process::id());
    let (service, env) = (run.as_str(), "bench");
    for release in ["r1", "r2"] {
        writer.post("/v1/releases", &json!({"service": service, "release": release})).await?;
    }
    let registered = args.hosts.unwrap_or(args.agents);
    if registered < args.agents {
        bail!("--hosts ({registered}) must be at least --agents ({})", args.agents);
    }
    let mut hosts: Vec<String> = (0..registered).map(|index| format!("{run}-h{index:07}")).collect();
    for chunk in hosts.chunks(1_000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|host| json!({"type": "target.registered", "host": host, "service": service, "env": env}))
            .collect();
        writer.post("/v1/events", &json!({ "events": events })).await.context("registering the hosts")?;
    }
    hosts.truncate(args.agents);
    let metrics_clients: Vec<reqwest::Client> = urls.iter().map(|_| reqwest::Client::new()).collect();
    let memory_before = resident_memory(&metrics_clients, urls).await;

    let addresses = urls.iter().map(|url| socket_address(url)).collect::<Result<Vec<_>>>()?;
    let hosts = Arc::new(hosts);
    let mut watchers = connect_watchers("fleetlog", &addresses, args.agents, args.connect_parallel, move |slot| {
        let host = hosts[slot.index].clone();
        watch_host(slot, host)
    })
    .await?;
    let memory_after = resident_memory(&metrics_clients, urls).await;
    let memory_per_watcher = match (memory_before, memory_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / args.agents as f64),
        _ => None,
    };

    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let release = if round % 2 == 0 { "r2" } else { "r1" };
        let body = json!({"service": service, "env": env, "release": release, "reason": "bench fanout"});
        watchers.receipts.reset();
        let sent = Instant::now();
        writer.post("/v1/rollbacks", &body).await.context("appending the rollback")?;
        let acknowledged = sent.elapsed();
        let received = watchers.receipts.collect(sent).await;
        rounds.push(Round { acknowledged, received });
    }
    watchers.tasks.abort_all();
    Ok(Measurement {
        system: format!(
            "fleetlog ({registered} hosts; watchers on {} node{})",
            urls.len(),
            if urls.len() == 1 { "" } else { "s" }
        ),
        watchers: args.agents,
        connect_time: watchers.connect_time,
        memory_per_watcher,
        rounds,
    })
}

/// One simulated agent: the raw watch stream of its host on its own connection.
pub async fn watch_host(mut slot: WatcherSlot, host: String) -> Result<()> {
    let address = slot.address;
    let request = format!("GET /v1/watch/{host} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n");
    let mut stream = TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes()).await?;
    let mut counter = PatternCounter::new(b"event: state");
    let mut buffer = [0u8; 2048];
    while counter.count == 0 {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            bail!("{address} closed the watch before its first message");
        }
        if buffer[..read].starts_with(b"HTTP/1.1 ") && !buffer[..read].starts_with(b"HTTP/1.1 200") {
            bail!("{address} refused the watch: {}", String::from_utf8_lossy(&buffer[..read.min(200)]));
        }
        counter.feed(&buffer[..read]);
    }
    slot.established();
    let mut directives = PatternCounter::new(b"event: directive");
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let before = directives.count;
        directives.feed(&buffer[..read]);
        if directives.count > before {
            slot.receipts.record(slot.index, now);
        }
    }
}

/// What one watcher task is given: which it is, where to connect, where to record receipts, and
/// its turn in the connection gate.
pub struct WatcherSlot {
    pub index: usize,
    pub address: SocketAddr,
    pub receipts: Arc<Receipts>,
    connected: Arc<AtomicUsize>,
    turn: Option<OwnedSemaphorePermit>,
}

impl WatcherSlot {
    /// The watch is in place: count it and let the next watcher connect.
    pub fn established(&mut self) {
        if self.turn.take().is_some() {
            self.connected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connected watchers, idle until a change comes.
pub struct Watchers {
    pub tasks: JoinSet<Result<()>>,
    pub receipts: Arc<Receipts>,
    pub connect_time: Duration,
}

/// Starts `agents` watcher tasks spread over `addresses`, at most `connect_parallel`
/// connecting at once, and waits until all are established and then idle for a moment.
pub async fn connect_watchers<F, Watch>(
    system: &str,
    addresses: &[SocketAddr],
    agents: usize,
    connect_parallel: usize,
    watcher: F,
) -> Result<Watchers>
where
    F: Fn(WatcherSlot) -> Watch + Send + Sync + 'static,
    Watch: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let receipts = Receipts::new(agents);
    let connected = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(connect_parallel.max(1)));
    let watcher = Arc::new(watcher);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..agents {
        let address = addresses[index % addresses.len()];
        let (receipts, connected, gate, watcher) = (receipts.clone(), connected.clone(), gate.clone(), watcher.clone());
        tasks.spawn(async move {
            let turn = gate.acquire_owned().await.expect("the gate is never closed");
            watcher(WatcherSlot { index, address, receipts, connected, turn: Some(turn) }).await
        });
    }
    wait_connected(&connected, agents, &mut tasks, system).await?;
    let connect_time = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    Ok(Watchers { tasks, receipts, connect_time })
}

/// Waits until `expected` watchers are connected; a watcher that failed fails the bench.
async fn wait_connected(
    connected: &AtomicUsize,
    expected: usize,
    watchers: &mut JoinSet<Result<()>>,
    system: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while connected.load(Ordering::Relaxed) < expected {
        if let Some(Ok(Err(error))) =
            tokio::time::timeout(Duration::from_millis(50), watchers.join_next()).await.ok().flatten()
        {
            bail!("a {system} watcher failed: {error:#}");
        }
        if Instant::now() > deadline {
            bail!("only {} of {expected} {system} watchers connected", connected.load(Ordering::Relaxed));
        }
    }
    Ok(())
}

/// Counts occurrences of a pattern in a byte stream read in pieces.
pub struct PatternCounter {
    pattern: &'static [u8],
    /// The end of the previous piece, in case the pattern straddles two reads.
    carry: Vec<u8>,
    pub count: usize,
}

impl PatternCounter {
    pub fn new(pattern: &'static [u8]) -> PatternCounter {
        PatternCounter { pattern, carry: Vec::new(), count: 0 }
    }

    pub fn feed(&mut self, piece: &[u8]) {
        let joined;
        let text = if self.carry.is_empty() {
            piece
        } else {
            joined = [std::mem::take(&mut self.carry).as_slice(), piece].concat();
            joined.as_slice()
        };
        let mut start = 0;
        while let Some(at) = find(&text[start..], self.pattern) {
            self.count += 1;
            start += at + self.pattern.len();
        }
        // Keep the longest tail that could begin the pattern (rarely any: messages end with a
        // blank line), without reusing bytes of a match already counted.
        let keep = (1..self.pattern.len())
            .rev()
            .find(|&length| length <= text.len() - start && text.ends_with(&self.pattern[..length]))
            .unwrap_or(0);
        self.carry = text[text.len() - keep..].to_vec();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_pattern_split_across_reads() {
        let mut counter = PatternCounter::new(b"event: directive");
        counter.feed(b"id: 1\nevent: dir");
        counter.feed(b"ective\ndata: {}\n\nid: 2\nevent: directive\n");
        counter.feed(b"event: directiv");
        assert_eq!(counter.count, 2);
        counter.feed(b"e");
        assert_eq!(counter.count, 3);
    }
}
