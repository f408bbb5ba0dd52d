//! The nodes of one run: each a disk that outlives crashes, and, while it runs, an openraft
//! instance over that disk and the simulated network.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleetlog_raft::consensus::types::NodeId;
use fleetlog_raft::storage::feed::Feed;
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, SnapshotPolicy};

use crate::checker::Checker;
use crate::disk::Disk;
use crate::network::{Fabric, Network, Raft};
use crate::storage::{Bug, LogStore, StateMachine};
use crate::trace::Trace;

/// One node: its disk, and what the simulation knows of it.
pub struct SimNode {
    pub disk: Disk,
    /// Microseconds its clock is ahead of simulated time (negative: behind).
    pub skew_micros: i64,
    /// Replaced by a machine with a new id: never started again. (Node ids are never reused:
    /// a wiped machine that came back under its old id would have forgotten its vote, and an
    /// old leader that never heard of the removal could count it again.)
    pub retired: bool,
    /// The running incarnation and its feed, for live watch streams.
    pub feed: Option<(u64, Feed)>,
}

/// Clones share the cluster.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Mutex<BTreeMap<NodeId, SimNode>>>,
    pub fabric: Fabric,
    pub checker: Checker,
    pub trace: Trace,
    config: Arc<Config>,
    sync_latency: Duration,
    /// A storage bug put back on purpose, if any.
    bug: Option<Bug>,
}

/// openraft's configuration for the simulated nodes: the real node's timing, with snapshots
/// every few hundred entries so that runs of minutes build, send and install many of them.
pub fn raft_config(snapshot_every: u64) -> Arc<Config> {
    let config = Config {
        cluster_name: "fleetlog-sim".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 600,
        install_snapshot_timeout: 2_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: snapshot_every / 2,
        max_payload_entries: 100,
        enable_leader_restore: Some(false),
        ..Config::default()
    };
    Arc::new(config.validate().expect("the simulation's Raft configuration is valid"))
}

impl Cluster {
    pub fn new(
        fabric: Fabric,
        checker: Checker,
        trace: Trace,
        config: Arc<Config>,
        sync_latency: Duration,
        bug: Option<Bug>,
    ) -> Cluster {
        Cluster { inner: Arc::default(), fabric, checker, trace, config, sync_latency, bug }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, SimNode>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a node with an empty disk (not started).
    pub fn add(&self, node: NodeId) {
        let disk = Disk::new(self.sync_latency);
        self.lock().insert(node, SimNode { disk, skew_micros: 0, retired: false, feed: None });
    }

    /// Takes `node` out of service for good (it has left the membership) and adds its
    /// replacement, a machine with an empty disk under the next unused id (not started).
    pub fn replace(&self, node: NodeId) -> NodeId {
        let mut nodes = self.lock();
        if let Some(sim) = nodes.get_mut(&node) {
            sim.retired = true;
        }
        let successor = nodes.keys().max().copied().unwrap_or_default() + 1;
        nodes.insert(
            successor,
            SimNode { disk: Disk::new(self.sync_latency), skew_micros: 0, retired: false, feed: None },
        );
        successor
    }

    /// The nodes in service (retired ones left out).
    pub fn nodes(&self) -> Vec<NodeId> {
        self.lock().iter().filter(|(_, sim)| !sim.retired).map(|(node, _)| *node).collect()
    }

    fn is_retired(&self, node: NodeId) -> bool {
        self.lock().get(&node).is_none_or(|sim| sim.retired)
    }

    pub fn disk(&self, node: NodeId) -> Disk {
        self.lock()[&node].disk.clone()
    }

    pub fn with_node<T>(&self, node: NodeId, change: impl FnOnce(&mut SimNode) -> T) -> T {
        change(self.lock().get_mut(&node).expect("a known node"))
    }

    /// The bug put back in this run, if any.
    pub fn bug(&self) -> Option<Bug> {
        self.bug
    }

    /// The running incarnation of `node` and its feed.
    pub fn feed(&self, node: NodeId) -> Option<(u64, Feed)> {
        self.lock().get(&node).and_then(|sim| sim.feed.clone())
    }

    pub fn is_running(&self, node: NodeId) -> bool {
        self.fabric.raft(node).is_some()
    }

    /// Starts the node over its disk. Starting reads the disk and may apply entries: an injected
    /// failure met there stops the start, as it would stop the process, and it starts again.
    pub async fn start(&self, node: NodeId) {
        if self.is_retired(node) {
            return;
        }
        for _ in 0..3 {
            let disk = self.disk(node);
            disk.recover();
            let log_store = LogStore::open(disk.clone(), self.bug);
            let state_machine = StateMachine::open(node, disk.clone(), self.checker.clone(), self.bug);
            let feed = (disk.incarnation(), state_machine.feed());
            let network = Network::new(node, self.fabric.clone());
            match Raft::new(node, self.config.clone(), network, log_store, state_machine).await {
                Ok(raft) => {
                    self.with_node(node, |sim| sim.feed = Some(feed));
                    self.fabric.up(node, raft);
                    self.trace.line(format!("node {node} started"));
                    return;
                }
                Err(error) if disk.injected_failure_hit() => {
                    self.trace.line(format!("node {node} failed to start on its injected fault: {error}"));
                    disk.crash();
                }
                Err(error) => {
                    self.checker.violation(format!("node {node} could not start: {error}"));
                    return;
                }
            }
        }
        self.checker.violation(format!("node {node} could not start three times in a row"));
    }

    /// Stops the node as a crash would: off the network at once, its disk's incarnation ended
    /// (keeping `kept` unsynced writes on a power loss, all of them otherwise).
    pub async fn crash(&self, node: NodeId, power_loss: Option<usize>) {
        let raft = self.fabric.down(node);
        self.with_node(node, |sim| sim.feed = None);
        let disk = self.disk(node);
        match power_loss {
            Some(kept) => {
                let unsynced = disk.unsynced_len();
                disk.lose_power(kept);
                self.trace.line(format!(
                    "node {node} lost power, {} of {unsynced} unsynced writes survived",
                    kept.min(unsynced)
                ));
            }
            None => {
                disk.crash();
                self.trace.line(format!("node {node} crashed"));
            }
        }
        if let Some(raft) = raft {
            // Its storage now fails every call; this only ends its tasks.
            let _ = raft.shutdown().await;
        }
    }

    /// The node each running node takes for the leader, if they agree on one that runs.
    pub fn leader(&self) -> Option<(NodeId, Raft)> {
        let running = self.fabric.running();
        let mut leaders = running.iter().filter_map(|(node, raft)| {
            let metrics = raft.metrics().borrow_watched().clone();
            (metrics.current_leader == Some(*node)).then_some((*node, raft.clone(), metrics.current_term))
        });
        let first = leaders.next()?;
        // Two nodes may both think they lead (an old leader not yet told): take the newer term.
        let newest = leaders.fold(first, |best, other| if other.2 > best.2 { other } else { best });
        Some((newest.0, newest.1))
    }
}
