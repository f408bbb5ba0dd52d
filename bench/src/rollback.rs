//! `fleetlog bench rollback`: what applying a rollback, and the start of a wave that selects
//! every host, costs at N registered hosts. In-process, without a server or network: for each N a
//! fresh single-node Raft (the same storage and state machine a node opens) in a temporary
//! directory, fed one ledger command per Raft entry with `Raft::client_write`, so every entry
//! goes through the real log store and the real `RaftStateMachine::apply`.
//!
//! Set-up per N: releases 1.0 and 2.0 of one service, N hosts registered in one (service, env)
//! (`--registrations-per-entry` to an entry, as the batcher gathers them), and a deployment of
//! 1.0 with one `percent: 100` wave, started, completed, the deployment completed. Then, for each
//! round: `deployment.started` of 2.0, its wave started (timed), and a `rollback` to 1.0 (timed),
//! which aborts that deployment and leaves every host where the round began.
//!
//! The apply time and the keys written are what the state machine itself reports in its debug
//! events (`elapsed` of "applied", `keys` of "computed; announcing to watchers"): the bench runs
//! the ledger on a thread of its own with a subscriber that reads them. The round trip of
//! `client_write` (log append and fsync, commit, apply, answer) is printed beside it.

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fleetlog_raft::consensus::node::{now_micros, Node, NodeConfig};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent};
use fleetlog_raft::domain::limits::BATCH_EVENTS_MAX;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

use crate::cli::BenchRollbackArgs;

const SERVICE: &str = "bench";
const ENV: &str = "prod";
/// The module whose debug events carry the apply figures.
const APPLY_TARGET: &str = "fleetlog_raft::storage::state_machine";
/// Far beyond any run: a snapshot (a dump of the whole ledger) must not start while timing.
const SNAPSHOT_EVERY: u64 = 1 << 40;

pub async fn run(args: BenchRollbackArgs) -> Result<()> {
    let counts = parse_host_counts(&args.hosts)?;
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.registrations_per_entry == 0 {
        bail!("--registrations-per-entry must be at least 1");
    }
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    if !parent.is_dir() {
        bail!("--dir {} is not a directory", parent.display());
    }
    let worker = std::thread::Builder::new()
        .name("bench-rollback".into())
        .spawn(move || measure_all(&counts, &args, &parent))
        .context("start the bench thread")?;
    tokio::task::spawn_blocking(move || worker.join()).await?.map_err(|_| anyhow!("the bench thread panicked"))?
}

fn parse_host_counts(list: &str) -> Result<Vec<usize>> {
    if list.trim().is_empty() {
        bail!("--hosts needs at least one host count, e.g. --hosts 1000,10000");
    }
    list.split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(count) if count > 0 => Ok(count),
            _ => bail!("--hosts takes host counts of at least 1 separated by commas, not {item:?}"),
        })
        .collect()
}

/// One line of the table.
struct Row {
    hosts: usize,
    wave: Samples,
    rollback: Samples,
    setup: Duration,
}

/// What the timed entries of one kind measured, one value per round.
#[derive(Default)]
struct Samples {
    apply: Vec<Duration>,
    round_trip: Vec<Duration>,
    keys: Vec<u64>,
}

impl Samples {
    fn add(&mut self, applied: &Applied) {
        if let Some(apply) = applied.apply {
            self.apply.push(apply);
        }
        if let Some(keys) = applied.keys {
            self.keys.push(keys);
        }
        self.round_trip.push(applied.round_trip);
    }
}

/// Runs every host count on this thread, which gets the subscriber that reads the apply figures.
fn measure_all(counts: &[usize], args: &BenchRollbackArgs, parent: &Path) -> Result<()> {
    let probe = ApplyProbe::default();
    let subscriber = tracing_subscriber::registry()
        .with(probe.clone().with_filter(filter_fn(|metadata| metadata.target() == APPLY_TARGET)))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(LevelFilter::WARN));
    let _default = tracing::subscriber::set_default(subscriber);
    println!(
        "{:>9} | {:>23} | {:>23} | {:>21} | {:>25} | {:>9}",
        "hosts",
        "wave start ms p50 / max",
        "rollback ms p50 / max",
        "keys wave / rollback",
        "round trip ms wave / rb",
        "set-up s"
    );
    for &hosts in counts {
        let dir = parent.join(format!("fleetlog-bench-rollback-{}-{hosts}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        // A runtime per host count: dropping it ends Raft's tasks and closes the database.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let result = runtime.block_on(measure(hosts, args, &dir, &probe));
        drop(runtime);
        if !fleetlog_raft::storage::db::wait_until_closed(Duration::from_secs(30)) {
            eprintln!("warning: the database of {hosts} hosts was still open after 30 s");
        }
        let removed = std::fs::remove_dir_all(&dir);
        let row = result?;
        removed.with_context(|| format!("remove {}", dir.display()))?;
        print_row(&row);
    }
    Ok(())
}

fn print_row(row: &Row) {
    let pair = |samples: &[Duration]| match (median(samples), samples.iter().max()) {
        (Some(median), Some(max)) => format!("{:.1} / {:.1}", millis(median), millis(*max)),
        _ => "-".to_string(),
    };
    let keys = |samples: &[u64]| median(samples).map_or("-".to_string(), |keys| keys.to_string());
    let round_trips = match (median(&row.wave.round_trip), median(&row.rollback.round_trip)) {
        (Some(wave), Some(rollback)) => format!("{:.1} / {:.1}", millis(wave), millis(rollback)),
        _ => "-".to_string(),
    };
    println!(
        "{:>9} | {:>23} | {:>23} | {:>21} | {:>25} | {:>9.1}",
        row.hosts,
        pair(&row.wave.apply),
        pair(&row.rollback.apply),
        format!("{} / {}", keys(&row.wave.keys), keys(&row.rollback.keys)),
        round_trips,
        row.setup.as_secs_f64()
    );
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The lower median.
fn median<T: Copy + Ord>(samples: &[T]) -> Option<T> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

async fn measure(hosts: usize, args: &BenchRollbackArgs, dir: &Path, probe: &ApplyProbe) -> Result<Row> {
    let setup_started = Instant::now();
    let mut config = NodeConfig::single(dir.to_path_buf(), "127.0.0.1:0".into());
    config.snapshot_every = SNAPSHOT_EVERY;
    let node = Node::start(config).await.context("start the in-process node")?;
    let mut ledger = Ledger { node, next_id: 0, probe: probe.clone() };
    ledger.wait_for_identity().await?;

    let releases = ["1.0", "2.0"].map(|release| ledger.event("release.created", None, Some(release), None, "{}"));
    ledger.propose("release.created", releases.into()).await?;
    let mut registered = 0;
    let mut reported = Instant::now();
    while registered < hosts {
        let chunk = args.registrations_per_entry.min(hosts - registered);
        let events = (registered..registered + chunk)
            .map(|index| {
                let data = format!("{{\"group\":\"g{}\"}}", index % 16);
                let mut event = ledger.event("target.registered", Some(ENV), None, None, &data);
                event.host = Some(format!("host-{index:07}"));
                event
            })
            .collect();
        ledger.propose("target.registered", events).await?;
        registered += chunk;
        if reported.elapsed() >= Duration::from_secs(5) || registered == hosts {
            eprintln!("{hosts} hosts: registered {registered}");
            reported = Instant::now();
        }
    }
    ledger.start_deployment("base", "1.0").await?;
    ledger.step("wave.started", "base", r#"{"wave":"all"}"#).await?;
    ledger.step("wave.completed", "base", r#"{"wave":"all"}"#).await?;
    ledger.step("deployment.completed", "base", "{}").await?;
    let setup = setup_started.elapsed();
    eprintln!("{hosts} hosts: set up in {:.1} s", setup.as_secs_f64());

    let mut wave = Samples::default();
    let mut rollback = Samples::default();
    for round in 0..args.rounds {
        let deployment = format!("round-{round}");
        ledger.start_deployment(&deployment, "2.0").await?;
        let started = ledger.step("wave.started", &deployment, r#"{"wave":"all"}"#).await?;
        wave.add(&started);
        let event = ledger.event("rollback", Some(ENV), Some("1.0"), None, r#"{"reason":"bench"}"#);
        let rolled_back = ledger.propose("rollback", vec![event]).await?;
        rollback.add(&rolled_back);
        eprintln!(
            "{hosts} hosts, round {}: wave start {}, rollback {}",
            round + 1,
            started.describe(),
            rolled_back.describe()
        );
    }
    ledger.node.shutdown().await;
    Ok(Row { hosts, wave, rollback, setup })
}

/// What one entry cost.
struct Applied {
    round_trip: Duration,
    /// As the state machine timed its apply step (compute and write of the batch).
    apply: Option<Duration>,
    keys: Option<u64>,
}

impl Applied {
    fn describe(&self) -> String {
        let apply = self.apply.map_or("-".to_string(), |apply| format!("{:.1} ms", millis(apply)));
        let keys = self.keys.map_or("-".to_string(), |keys| keys.to_string());
        format!("{apply} ({keys} keys, round trip {:.1} ms)", millis(self.round_trip))
    }
}

/// Proposes commands to the in-process node, one Raft entry each.
struct Ledger {
    node: Node,
    next_id: u64,
    probe: ApplyProbe,
}

impl Ledger {
    /// The first entry a new single-node cluster applies is its identity; waiting for it keeps
    /// it out of the entries measured.
    async fn wait_for_identity(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.node.identity()?.is_none() {
            if Instant::now() > deadline {
                bail!("the in-process node did not record its cluster identity within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// An event of the bench's service with a fresh id; `data` is canonical JSON.
    fn event(
        &mut self,
        event_type: &str,
        env: Option<&str>,
        release: Option<&str>,
        deployment: Option<&str>,
        data: &str,
    ) -> ProposedEvent {
        self.next_id += 1;
        let mut event = ProposedEvent::new(format!("bench-rollback-{}", self.next_id), event_type);
        event.service = Some(SERVICE.into());
        event.env = env.map(str::to_string);
        event.release = release.map(str::to_string);
        event.deployment = deployment.map(str::to_string);
        event.data = data.to_string();
        event
    }

    async fn start_deployment(&mut self, id: &str, release: &str) -> Result<Applied> {
        let waves = r#"{"waves":[{"name":"all","percent":100}]}"#;
        let event = self.event("deployment.started", Some(ENV), Some(release), Some(id), waves);
        self.propose("deployment.started", vec![event]).await
    }

    /// A step of a deployment (its service, env and release come from the deployment).
    async fn step(&mut self, event_type: &str, deployment: &str, data: &str) -> Result<Applied> {
        let mut event = self.event(event_type, None, None, Some(deployment), data);
        event.service = None;
        self.propose(event_type, vec![event]).await
    }

    /// One command, as its own Raft entry, of requests of at most [`BATCH_EVENTS_MAX`] events
    /// (as the batcher gathers them); fails unless every event was appended.
    async fn propose(&mut self, what: &str, events: Vec<ProposedEvent>) -> Result<Applied> {
        let requests = events
            .chunks(BATCH_EVENTS_MAX)
            .map(|events| AppendRequest {
                events: events.to_vec(),
                expected_version: ExpectedVersion::Any,
                actor: "bench".into(),
            })
            .collect();
        let command = LedgerCommand { time_micros: now_micros(), requests, identity: None };
        self.probe.reset();
        let started = Instant::now();
        let response = self.node.raft().client_write(command).await.map_err(|error| anyhow!("{what}: {error}"))?;
        let round_trip = started.elapsed();
        for outcome in &response.data.outcomes {
            match outcome {
                AppendOutcome::Appended { duplicate: false, .. } => {}
                AppendOutcome::Appended { duplicate: true, .. } => bail!("{what}: the ledger took it for a retry"),
                AppendOutcome::Rejected(rejection) => bail!("{what} was rejected: {rejection}"),
            }
        }
        let (apply, keys) = self.probe.take();
        Ok(Applied { round_trip, apply, keys })
    }
}

/// Reads the state machine's debug events on the bench thread: the apply time of the last entry
/// and, when it changed a layer or a registration, the keys it wrote.
#[derive(Clone, Default)]
struct ApplyProbe {
    seen: Arc<Mutex<(Option<Duration>, Option<u64>)>>,
}

impl ApplyProbe {
    fn reset(&self) {
        *self.lock() = (None, None);
    }

    fn take(&self) -> (Option<Duration>, Option<u64>) {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Duration>, Option<u64>)> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S: tracing::Subscriber> Layer<S> for ApplyProbe {
    fn on_event(&self, event: &tracing::Event<'_>, _context: LayerContext<'_, S>) {
        let mut fields = ApplyFields::default();
        event.record(&mut fields);
        let mut seen = self.lock();
        match fields.message.as_str() {
            "applied" => seen.0 = fields.elapsed.or(seen.0),
            "computed; announcing to watchers" => seen.1 = fields.keys.or(seen.1),
            _ => {}
        }
    }
}

#[derive(Default)]
struct ApplyFields {
    message: String,
    elapsed: Option<Duration>,
    keys: Option<u64>,
}

impl Visit for ApplyFields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "elapsed" => self.elapsed = parse_duration(&format!("{value:?}")),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "keys" {
            self.keys = Some(value);
        }
    }
}

/// A `Duration` from its `Debug` text ("812.5µs", "12.345ms", "1.5s", "100ns").
fn parse_duration(text: &str) -> Option<Duration> {
    let units = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    let (number, scale) = units.iter().find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))?;
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value * scale))
}
