//! fleetlog-sim: a deterministic simulation of a whole fleetlog cluster.
//!
//! Three to five nodes of the real code (openraft 0.10 and the ledger's rules, applied by the
//! same function the RocksDB state machine uses) run in one process on one thread, over a
//! simulated network ([`network`]), clock (tokio's paused clock: time moves only when every task
//! waits, straight to the next timer) and disk ([`disk`]). Every choice (network delays and
//! losses, faults, the workload, openraft's election timeouts) is drawn from one seed, so a run
//! is a function of its seed: the same seed writes the same trace, byte for byte.
//!
//! - [`disk`]: what a node stores, synced or not; crash, power loss and disk faults.
//! - [`storage`]: openraft's log store and state machine over that disk.
//! - [`runtime`]: the type config and runtime: tokio, seeded, with ordered watch channels.
//! - [`network`]: delays, loss, duplication, reordering, partitions and one-way cuts.
//! - [`cluster`]: starting, crashing and restarting nodes.
//! - [`workload`]: clients appending and reading, retrying unknown outcomes; subscribers.
//! - [`agents`]: one agent per host, following its directives and reporting.
//! - [`watch_stream`]: a live watch stream of one host on one node, over the node's feed.
//! - [`policy`]: the leader's policy evaluator, deciding deployments' next steps.
//! - [`faults`]: the fault schedule.
//! - [`checker`]: the invariants, during the run and after it settles.
//! - [`views_model`]: the ledger's views against the independent model of its rules.
//! - [`trace`]: what happened, in simulated time.

pub mod agents;
pub mod checker;
pub mod cluster;
pub mod disk;
pub mod faults;
pub mod kv;
pub mod network;
pub mod policy;
pub mod runtime;
pub mod storage;
pub mod trace;
pub mod views_model;
pub mod watch_stream;
pub mod workload;

use std::time::Duration;

use fleetlog_raft::consensus::types::NodeId;
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ClusterIdentity, ExpectedVersion, LedgerCommand};
use fleetlog_raft::domain::records;
use fleetlog_raft::domain::views::{self, EventFilter};
use fleetlog_raft::storage::apply::compute;
use openraft::async_runtime::WatchReceiver;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::agents::Agent;
use crate::checker::Checker;
use crate::cluster::{raft_config, Cluster};
use crate::faults::{calm, initial_members, rejoin, Faults, SnapshotRaces};
use crate::kv::SharedKv;
use crate::network::Fabric;
use crate::policy::PolicyEvaluator;
use crate::runtime::seed_this_thread;
pub use crate::storage::Bug;
use crate::trace::Trace;
pub use crate::workload::Workload;
use crate::workload::{Client, Subscriber, EPOCH_MICROS, HOSTS};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    /// Simulated time of faults and workload, before the cluster is left to settle.
    pub duration: Duration,
    /// Keep the trace's lines (to print them); its digest is always computed.
    pub keep_trace: bool,
    /// A known bug to put back, to see the simulator find it.
    pub bug: Option<Bug>,
    pub workload: Workload,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: usize,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub trace_lines: u64,
    pub trace_digest: String,
    /// Simulated time the run took, settling included.
    pub simulated: Duration,
    pub appends_acknowledged: usize,
    pub reads_answered: usize,
    pub head_seq: u64,
    /// Directives the agents heard, one by one, after their first state.
    pub directives_heard: usize,
    /// Decisions the policy evaluator appended.
    pub policy_decisions: usize,
}

/// How long the cluster may take to agree again once faults stop.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

thread_local! {
    /// The last panic on this thread while it ran a seed, as the panic hook wrote it.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Whether this thread is running a seed now.
    static RUNNING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While a thread runs a seed, each panic on it is kept (message and place) for the run to
/// report as a violation, instead of printed: a panicking task of openraft's can leave its node
/// looking alive. Panics elsewhere (a failing test's assertion) go to the hook as before.
fn capture_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if RUNNING.with(|running| running.get()) {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// The message of the last panic on this thread, if any since the last call.
pub fn take_last_panic() -> Option<String> {
    LAST_PANIC.with(|last| last.borrow_mut().take())
}

/// Runs one seed on this thread, in a runtime of its own with a paused clock.
pub fn run(options: &RunOptions) -> RunReport {
    capture_panics();
    take_last_panic();
    RUNNING.with(|running| running.set(true));
    // openraft's own random draws (election timeouts) follow the seed too.
    seed_this_thread(options.seed ^ 0x005e_ed0f_f1ee_7106);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(simulate(options.clone()))));
    drop(runtime);
    RUNNING.with(|running| running.set(false));
    match report {
        Ok(report) => report,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A generator for one part of the run: parts draw independently, so adding a draw to one
/// part does not change what the others do.
fn stream(seed: u64, part: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ part.wrapping_mul(0xbf58_476d_1ce4_e5b9))
}

async fn simulate(options: RunOptions) -> RunReport {
    let started = Instant::now();
    let trace = Trace::new(options.keep_trace);
    let checker = Checker::new(trace.clone());
    let mut setup = stream(options.seed, 0);
    let node_count = setup.gen_range(3..=5usize);
    // Half the seeds get fast disks, half disks whose syncs take tens of milliseconds, which
    // leaves writes unsynced for longer, for power losses to find.
    let sync_latency = match setup.gen_bool(0.5) {
        true => Duration::from_micros(setup.gen_range(200..3_000)),
        false => Duration::from_micros(setup.gen_range(5_000..60_000)),
    };
    let snapshot_every = setup.gen_range(50..400);
    let fabric = Fabric::new(calm(), stream(options.seed, 1));
    let config = raft_config(snapshot_every);
    let cluster = Cluster::new(fabric, checker.clone(), trace.clone(), config, sync_latency, options.bug);
    let nodes: Vec<NodeId> = (1..=node_count as NodeId).collect();
    trace.line(format!(
        "seed {} with {node_count} nodes, syncs of {sync_latency:?}, a snapshot every {snapshot_every} entries",
        options.seed
    ));
    for node in &nodes {
        cluster.add(*node);
        cluster.start(*node).await;
    }
    if let Some(raft) = cluster.fabric.raft(1) {
        if let Err(error) = raft.initialize(initial_members(&nodes)).await {
            checker.violation(format!("the cluster could not be initialised: {error}"));
        }
    }
    let mut identity_seed = [0u8; 32];
    setup.fill(&mut identity_seed);
    let identity = ClusterIdentity { cluster_id: format!("sim-{}", options.seed), signing_seed: identity_seed };
    write_until_acknowledged(&cluster, Some(identity), "identity").await;

    let until = Instant::now() + options.duration;
    let monitor = tokio::spawn(monitor(cluster.clone(), stream(options.seed, 2), until));
    let faults = Faults {
        random: stream(options.seed, 3),
        cluster: cluster.clone(),
        until,
        gap: Duration::from_secs(setup.gen_range(2..8)),
        sync_latency,
    };
    let faults = tokio::spawn(faults.run());
    // A quarter of the seeds also stage snapshot builds racing installs, from a stream of their
    // own: the other seeds run as they would without them.
    let mut races = stream(options.seed, 4);
    let snapshot_races = races.gen_bool(0.25).then(|| {
        trace.line("this seed stages snapshot races");
        tokio::spawn(SnapshotRaces { random: races, cluster: cluster.clone(), until, sync_latency }.run())
    });
    let client_count = setup.gen_range(2..=4usize);
    // Each client pauses 0.1-0.8 s on average between operations: a few to twenty appends a
    // second in all, enough to keep every fault meeting writes in flight.
    let pause = Duration::from_millis(setup.gen_range(100..800));
    let clients: Vec<_> = (0..client_count)
        .map(|id| {
            let random = stream(options.seed, 10 + id as u64);
            let client = Client::new(id, random, cluster.clone(), started, until, pause, options.workload);
            tokio::spawn(client.run())
        })
        .collect();
    let subscribers: Vec<_> = (0..2)
        .map(|id| tokio::spawn(Subscriber::new(id, stream(options.seed, 20 + id as u64), cluster.clone(), until).run()))
        .collect();
    // The fleet: an agent per host, and the leader deciding what deployments' policies say.
    let fleet = options.workload == Workload::Fleet;
    let agent_hosts: &[&'static str] = if fleet { &HOSTS } else { &[] };
    let agents: Vec<_> = agent_hosts
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let agent = Agent::new(host, stream(options.seed, 30 + index as u64), cluster.clone(), started, until);
            tokio::spawn(agent.run())
        })
        .collect();
    let policy = fleet.then(|| tokio::spawn(PolicyEvaluator { cluster: cluster.clone(), started, until }.run()));
    for task in clients.into_iter().chain(subscribers) {
        if task.await.is_err() {
            checker.violation("a client task panicked");
        }
    }
    let policy_decisions = match policy {
        Some(policy) => policy.await.unwrap_or_else(|_| {
            checker.violation("the policy evaluator panicked");
            0
        }),
        None => 0,
    };
    let mut finished_agents = Vec::new();
    for task in agents {
        match task.await {
            Ok(agent) => finished_agents.push(agent),
            Err(_) => checker.violation("an agent task panicked"),
        }
    }
    if faults.await.is_err() {
        checker.violation("the fault task panicked");
    }
    if let Some(races) = snapshot_races {
        if races.await.is_err() {
            checker.violation("the snapshot race task panicked");
        }
    }
    let _ = monitor.await;

    settle(&cluster).await;
    // The nodes in service now: replaced machines have left.
    let (head_seq, directives_heard) = final_checks(&cluster, &cluster.nodes(), finished_agents);
    let (appends_acknowledged, reads_answered) = checker.counts();
    let simulated = started.elapsed();
    trace.line(format!("done: head {head_seq}, {appends_acknowledged} appends acknowledged, {reads_answered} reads"));
    for (node, raft) in cluster.fabric.running() {
        cluster.fabric.down(node);
        let _ = raft.shutdown().await;
    }
    let (lines, trace_lines, trace_digest) = trace.finish();
    RunReport {
        seed: options.seed,
        nodes: node_count,
        violations: checker.violations(),
        trace: lines,
        trace_lines,
        trace_digest,
        simulated,
        appends_acknowledged,
        reads_answered,
        head_seq,
        directives_heard,
        policy_decisions,
    }
}

/// Appends one note until a leader acknowledges it (bounded by [`SETTLE_LIMIT`]); with an
/// identity, the entry records the cluster's identity as a real leader's first entry does.
async fn write_until_acknowledged(cluster: &Cluster, identity: Option<ClusterIdentity>, what: &str) -> bool {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut note = fleetlog_raft::domain::event::ProposedEvent::new(format!("sim-{what}"), "sim.marker");
    note.stream = Some("sim-markers".into());
    while Instant::now() < deadline {
        if let Some((_, raft)) = cluster.leader() {
            let command = LedgerCommand {
                time_micros: EPOCH_MICROS,
                requests: vec![AppendRequest {
                    events: vec![note.clone()],
                    expected_version: ExpectedVersion::Any,
                    actor: "sim".into(),
                }],
                identity: identity.clone(),
            };
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(3), raft.client_write(command)).await {
                if matches!(response.data.outcomes.first(), Some(AppendOutcome::Appended { .. })) {
                    cluster.trace.line(format!("{what} written"));
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.checker.violation(format!("no leader acknowledged the {what} within {SETTLE_LIMIT:?}"));
    false
}

/// Watches the nodes: notes leader changes, and restarts a node that stopped on an injected
/// storage fault (a node that stops on anything else is a violation).
async fn monitor(cluster: Cluster, mut random: StdRng, until: Instant) {
    let mut last_leader = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let leader = cluster.leader().map(|(node, raft)| (node, raft.metrics().borrow_watched().current_term));
        if leader != last_leader {
            match leader {
                Some((node, term)) => cluster.trace.line(format!("node {node} leads in term {term}")),
                None => cluster.trace.line("no leader"),
            }
            last_leader = leader;
        }
        restart_stopped(&cluster, &mut random).await;
        check_snapshots(&cluster);
    }
}

/// Every node's kept snapshot covers the log it purged: a follower further behind can only be
/// caught up from that snapshot.
fn check_snapshots(cluster: &Cluster) {
    for node in cluster.nodes() {
        let (purged, snapshot) = cluster
            .disk(node)
            .inspect(|stored| (stored.purged, stored.snapshot.as_ref().and_then(|snapshot| snapshot.meta.last_log_id)));
        if purged > snapshot {
            cluster.checker.violation(format!(
                "node {node} purged its log up to {purged:?} but its snapshot stops at {snapshot:?}"
            ));
        }
    }
}

async fn restart_stopped(cluster: &Cluster, random: &mut StdRng) {
    // A panicking task of openraft's may leave its node's metrics as they were: the panic hook
    // is what sees every panic, wherever it happened.
    if let Some(panic) = take_last_panic() {
        cluster.checker.violation(format!("a task panicked: {panic}"));
    }
    for (node, raft) in cluster.fabric.running() {
        let stopped = raft.metrics().borrow_watched().running_state.clone();
        let Err(fatal) = stopped else { continue };
        let panicked = matches!(fatal, openraft::error::Fatal::Panicked);
        if cluster.disk(node).injected_failure_hit() && !panicked {
            cluster.trace.line(format!("node {node} stopped on its injected storage fault; restarting it"));
            // What the failed sync should have made durable is in doubt: treat it as a power loss.
            let unsynced = cluster.disk(node).unsynced_len();
            cluster.crash(node, Some(random.gen_range(0..=unsynced))).await;
            cluster.start(node).await;
        } else {
            cluster.checker.violation(format!("node {node} stopped: {fatal}"));
            cluster.crash(node, None).await;
            cluster.start(node).await;
        }
    }
}

/// Ends the faults and waits until every node has applied the same log: all links healed, the
/// disks fast and sound, every node running and a voter, a marker appended in the final term.
async fn settle(cluster: &Cluster) {
    let trace = &cluster.trace;
    trace.line("faults end; settling");
    cluster.fabric.heal();
    cluster.fabric.set_conditions(calm());
    for node in cluster.nodes() {
        cluster.disk(node).set_faults(|faults| {
            faults.failing_syncs = 0;
            faults.failing_writes = 0;
        });
    }
    let mut random = StdRng::seed_from_u64(0);
    let deadline = Instant::now() + SETTLE_LIMIT;
    // Pending restarts happen within eight seconds; then every node is started.
    tokio::time::sleep(Duration::from_secs(9)).await;
    restart_stopped(cluster, &mut random).await;
    for node in cluster.nodes() {
        if !cluster.is_running(node) {
            cluster.start(node).await;
        }
    }
    loop {
        // Read each time: a replacement under way when the faults ended may still add a node.
        let nodes = cluster.nodes();
        let voters: Vec<NodeId> = match cluster.leader() {
            Some((_, raft)) => raft.metrics().borrow_watched().membership_config.voter_ids().collect(),
            None => Vec::new(),
        };
        let missing: Vec<NodeId> = nodes.iter().copied().filter(|node| !voters.contains(node)).collect();
        if !voters.is_empty() && missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            cluster
                .checker
                .violation(format!("nodes {missing:?} are still not voters {SETTLE_LIMIT:?} after the faults ended"));
            return;
        }
        for node in missing {
            if !voters.is_empty() {
                rejoin(cluster, node, Duration::from_secs(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !write_until_acknowledged(cluster, None, "final marker").await {
        return;
    }
    loop {
        let nodes = cluster.nodes();
        let positions: Vec<(NodeId, Option<u64>, Option<u64>)> = cluster
            .fabric
            .running()
            .iter()
            .map(|(node, raft)| {
                let metrics = raft.metrics().borrow_watched().clone();
                (*node, metrics.last_applied.map(|log_id| log_id.index), metrics.last_log_index)
            })
            .collect();
        let leader_last = cluster.leader().and_then(|(_, raft)| raft.metrics().borrow_watched().last_log_index);
        if leader_last.is_some()
            && positions.len() == nodes.len()
            && positions.iter().all(|(_, applied, _)| *applied == leader_last)
        {
            trace.line(format!("settled: every node applied index {}", leader_last.unwrap_or_default()));
            return;
        }
        if Instant::now() > deadline {
            cluster
                .checker
                .violation(format!("the nodes did not converge: (node, applied, last log index) {positions:?}"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_digest(state: &SharedKv) -> String {
    let mut digest = Sha256::new();
    for (space, key, value) in state.iter() {
        digest.update([space.tag()]);
        digest.update((key.len() as u64).to_be_bytes());
        digest.update(key);
        digest.update((value.len() as u64).to_be_bytes());
        digest.update(value);
    }
    hex::encode(&digest.finalize()[..8])
}

/// Once settled: every replica's state (events, chain, Merkle tree, indexes, views) equals every
/// other's and equals a replay of the applied log on an empty state; then the clients' answers
/// and the agents are checked against the ledger. Returns the head seq and the directives the
/// agents heard.
fn final_checks(cluster: &Cluster, nodes: &[NodeId], agents: Vec<Agent>) -> (u64, usize) {
    let checker = &cluster.checker;
    check_snapshots(cluster);
    let mut replayed = SharedKv::new();
    for chunk in checker.applied_entries().chunks(64) {
        match compute(&replayed, chunk.to_vec()) {
            Ok(mut computed) => replayed.apply(computed.writes.take().unwrap_or_default()),
            Err(error) => {
                checker.violation(format!("replaying the applied log failed: {error}"));
                return (0, 0);
            }
        }
    }
    let expected = state_digest(&replayed);
    for node in nodes {
        // Compared key by key; hashed only to name a state that differs.
        let differs = cluster.disk(*node).inspect(|stored| !stored.state.iter().eq(replayed.iter()));
        if differs {
            let digest = cluster.disk(*node).inspect(|stored| state_digest(&stored.state));
            checker.violation(format!("node {node}'s state ({digest}) differs from a replay of the log ({expected})"));
        }
    }
    cluster.trace.line(format!("every replica's state equals a replay of the log ({expected})"));
    let head = match records::head(&replayed) {
        Ok(head) => head.seq,
        Err(error) => {
            checker.violation(format!("the replayed ledger has no head: {error}"));
            return (0, 0);
        }
    };
    let mut events = Vec::new();
    let mut from = 1;
    while from <= head {
        match views::read_events(&replayed, &EventFilter::default(), from, 10_000) {
            Ok(page) if page.next_seq > from => {
                from = page.next_seq;
                events.extend(page.events);
            }
            Ok(_) => break,
            Err(error) => {
                checker.violation(format!("reading the replayed ledger failed: {error}"));
                return (head, 0);
            }
        }
    }
    if events.len() as u64 != head {
        checker.violation(format!("the ledger's head is {head} but it holds {} events", events.len()));
    }
    checker.check_history(&events);
    let differences = views_model::differences(&replayed, &events);
    match differences.is_empty() {
        true => cluster.trace.line("the ledger's views agree with the model's"),
        false => differences.into_iter().for_each(|difference| checker.violation(difference)),
    }
    let heard = agents.into_iter().map(|agent| agent.final_checks(&replayed)).sum();
    (head, heard)
}
