//! Faults of one run, each drawn from the seed: crashes and power losses with restarts,
//! partitions and one-way cuts, lossy and slow networks, slow and failing disks, snapshots
//! forced at any moment, a member replaced by an empty machine, and clock skew.

use std::collections::BTreeSet;
use std::time::Duration;

use fleetlog_raft::consensus::membership::handover_target;
use fleetlog_raft::consensus::types::NodeId;
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::network::Conditions;
use crate::network::Raft;

/// The kinds of fault, with how often each is drawn.
const KINDS: [(Kind, u32); 13] = [
    (Kind::Crash, 10),
    (Kind::PowerLoss, 10),
    (Kind::ClusterPowerLoss, 3),
    (Kind::Partition, 10),
    (Kind::OneWayCut, 6),
    (Kind::BadNetwork, 5),
    (Kind::SlowDisk, 6),
    (Kind::FailingSync, 3),
    (Kind::FailingWrite, 3),
    (Kind::Snapshot, 10),
    (Kind::ReplaceMember, 3),
    (Kind::ClockSkew, 4),
    (Kind::Nothing, 10),
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Crash,
    PowerLoss,
    /// Every node loses power at once (a data centre's power cut).
    ClusterPowerLoss,
    Partition,
    OneWayCut,
    BadNetwork,
    SlowDisk,
    FailingSync,
    FailingWrite,
    Snapshot,
    ReplaceMember,
    ClockSkew,
    Nothing,
}

/// Network conditions without faults.
pub fn calm() -> Conditions {
    Conditions {
        delay_min: Duration::from_micros(200),
        delay_max: Duration::from_millis(3),
        loss: 0.0,
        duplication: 0.0,
    }
}

pub struct Faults {
    pub random: StdRng,
    pub cluster: Cluster,
    pub until: Instant,
    /// Mean time between two faults.
    pub gap: Duration,
    /// The disks' sync latency without faults.
    pub sync_latency: Duration,
}

fn address(node: NodeId) -> BasicNode {
    BasicNode { addr: format!("sim-{node}") }
}

impl Faults {
    pub async fn run(mut self) {
        let total: u32 = KINDS.iter().map(|(_, weight)| weight).sum();
        while Instant::now() < self.until {
            let gap = self.random.gen_range(Duration::ZERO..=self.gap * 2);
            tokio::time::sleep(gap).await;
            let mut draw = self.random.gen_range(0..total);
            let kind = KINDS
                .iter()
                .find(|(_, weight)| {
                    if draw < *weight {
                        return true;
                    }
                    draw -= weight;
                    false
                })
                .map(|(kind, _)| *kind)
                .unwrap_or(Kind::Nothing);
            self.inject(kind).await;
        }
    }

    fn pick(&mut self, nodes: &[NodeId]) -> Option<NodeId> {
        nodes.choose(&mut self.random).copied()
    }

    fn running(&self) -> Vec<NodeId> {
        self.cluster.fabric.running().into_iter().map(|(node, _)| node).collect()
    }

    /// Restarts `node` after a pause drawn now, unless it is running by then.
    fn restart_later(&mut self, node: NodeId) {
        let pause = self.random.gen_range(Duration::from_millis(200)..=Duration::from_secs(8));
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            if !cluster.is_running(node) {
                cluster.start(node).await;
            }
        });
    }

    /// Undoes something after a pause drawn now.
    fn later(&mut self, longest: Duration, undo: impl FnOnce(Cluster) + Send + 'static) {
        let pause = self.random.gen_range(Duration::from_millis(100)..=longest);
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            undo(cluster);
        });
    }

    async fn inject(&mut self, kind: Kind) {
        let trace = self.cluster.trace.clone();
        let nodes = self.cluster.nodes();
        let running = self.running();
        match kind {
            Kind::Nothing => {}
            Kind::Crash => {
                let Some(node) = self.pick(&running) else { return };
                self.cluster.crash(node, None).await;
                self.restart_later(node);
            }
            Kind::PowerLoss => {
                let Some(node) = self.pick(&running) else { return };
                let unsynced = self.cluster.disk(node).unsynced_len();
                let kept = self.random.gen_range(0..=unsynced);
                self.cluster.crash(node, Some(kept)).await;
                self.restart_later(node);
            }
            Kind::ClusterPowerLoss => {
                trace.line("the whole cluster loses power");
                for node in running {
                    let unsynced = self.cluster.disk(node).unsynced_len();
                    let kept = self.random.gen_range(0..=unsynced);
                    self.cluster.crash(node, Some(kept)).await;
                    self.restart_later(node);
                }
            }
            Kind::Partition => {
                let mut shuffled = nodes.clone();
                shuffled.shuffle(&mut self.random);
                let side: BTreeSet<NodeId> =
                    shuffled.iter().take(self.random.gen_range(1..=nodes.len() / 2)).copied().collect();
                for from in &nodes {
                    for to in &nodes {
                        if side.contains(from) != side.contains(to) {
                            self.cluster.fabric.cut(*from, *to);
                        }
                    }
                }
                trace.line(format!("partition {side:?} from the rest"));
                self.later(Duration::from_secs(10), |cluster| {
                    cluster.fabric.heal();
                    cluster.trace.line("network healed");
                });
            }
            Kind::OneWayCut => {
                let (Some(from), Some(to)) = (self.pick(&nodes), self.pick(&nodes)) else { return };
                if from == to {
                    return;
                }
                self.cluster.fabric.cut(from, to);
                trace.line(format!("link {from} -> {to} cut"));
                self.later(Duration::from_secs(10), |cluster| {
                    cluster.fabric.heal();
                    cluster.trace.line("network healed");
                });
            }
            Kind::BadNetwork => {
                let conditions = Conditions {
                    delay_min: Duration::from_millis(self.random.gen_range(0..20)),
                    delay_max: Duration::from_millis(self.random.gen_range(20..400)),
                    loss: self.random.gen_range(0.0..0.3),
                    duplication: self.random.gen_range(0.0..0.2),
                };
                trace.line(format!(
                    "network degraded: delay {:?}..{:?}, loss {:.2}, duplication {:.2}",
                    conditions.delay_min, conditions.delay_max, conditions.loss, conditions.duplication
                ));
                self.cluster.fabric.set_conditions(conditions);
                self.later(Duration::from_secs(15), |cluster| {
                    cluster.fabric.set_conditions(calm());
                    cluster.trace.line("network calm again");
                });
            }
            Kind::SlowDisk => {
                let Some(node) = self.pick(&nodes) else { return };
                let latency = Duration::from_millis(self.random.gen_range(20..500));
                self.cluster.disk(node).set_faults(|faults| faults.sync_latency = latency);
                trace.line(format!("node {node}'s disk syncs in {latency:?}"));
                let normal = self.sync_latency;
                self.later(Duration::from_secs(15), move |cluster| {
                    cluster.disk(node).set_faults(|faults| faults.sync_latency = normal);
                    cluster.trace.line(format!("node {node}'s disk is fast again"));
                });
            }
            Kind::FailingSync | Kind::FailingWrite => {
                let Some(node) = self.pick(&running) else { return };
                self.cluster.disk(node).set_faults(|faults| match kind {
                    Kind::FailingSync => faults.failing_syncs += 1,
                    _ => faults.failing_writes += 1,
                });
                trace.line(format!(
                    "node {node}'s next {} fails",
                    if matches!(kind, Kind::FailingSync) { "fsync" } else { "write" }
                ));
            }
            Kind::Snapshot => {
                let Some(node) = self.pick(&running) else { return };
                if let Some(raft) = self.cluster.fabric.raft(node) {
                    trace.line(format!("node {node} told to build a snapshot"));
                    let _ = raft.trigger().snapshot().await;
                }
            }
            Kind::ClockSkew => {
                let Some(node) = self.pick(&nodes) else { return };
                let skew = self.random.gen_range(-3_000_000..=3_000_000);
                self.cluster.with_node(node, |sim| sim.skew_micros = skew);
                trace.line(format!("node {node}'s clock is off by {skew} µs"));
            }
            Kind::ReplaceMember => {
                let Some((leader, _)) = self.cluster.leader() else { return };
                let others: Vec<NodeId> = nodes.iter().copied().filter(|node| *node != leader).collect();
                let Some(node) = self.pick(&others) else { return };
                let cluster = self.cluster.clone();
                // Runs beside the other faults: each step waits for the cluster.
                tokio::spawn(async move { replace_member(cluster, node).await });
            }
        }
    }
}

/// Snapshot builds racing installs, staged: a follower is cut off from the leader until the
/// leader has purged the log it lacks, so that it can only catch up by a snapshot; then it is
/// told to build one of its own on a disk whose syncs are slow, and the links are mended, so
/// that the leader's snapshot arrives while its build waits. Seeds without a schedule of
/// these run exactly as if they did not exist: the schedule has its own stream.
pub struct SnapshotRaces {
    pub random: StdRng,
    pub cluster: Cluster,
    pub until: Instant,
    /// The disks' sync latency without faults.
    pub sync_latency: Duration,
}

impl SnapshotRaces {
    pub async fn run(mut self) {
        while Instant::now() < self.until {
            let gap = self.random.gen_range(Duration::from_secs(10)..=Duration::from_secs(60));
            tokio::time::sleep(gap).await;
            self.stage().await;
        }
    }

    async fn stage(&mut self) {
        let cluster = self.cluster.clone();
        let Some((leader, _)) = cluster.leader() else { return };
        let followers: Vec<NodeId> =
            cluster.fabric.running().into_iter().map(|(node, _)| node).filter(|node| *node != leader).collect();
        let Some(node) = followers.choose(&mut self.random).copied() else { return };
        let cut_off = self.random.gen_range(Duration::from_secs(5)..=Duration::from_secs(20));
        let latency = Duration::from_millis(self.random.gen_range(100..800));
        let mended_after = Duration::from_micros(self.random.gen_range(0..50_000));
        cluster.fabric.cut(leader, node);
        cluster.fabric.cut(node, leader);
        cluster.trace.line(format!("snapshot race: node {node} cut off from leader {leader}"));
        tokio::time::sleep(cut_off).await;
        // The leader snapshots, and purges by its policy (keeping half a snapshot interval of
        // log): a follower cut off for longer than that lacks purged entries. (Not
        // `trigger().purge_log`, which fleetlog never calls: in openraft 0.10.0-alpha.37 a
        // snapshot built before that purge has run trips an assertion on the purge position.)
        if let Some(raft) = cluster.fabric.raft(leader) {
            let _ = raft.trigger().snapshot().await;
            // Building takes about 20 µs a key of simulated time.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        cluster.disk(node).set_faults(|faults| faults.sync_latency = latency);
        if let Some(raft) = cluster.fabric.raft(node) {
            let _ = raft.trigger().snapshot().await;
        }
        tokio::time::sleep(mended_after).await;
        cluster.fabric.mend(leader, node);
        cluster.fabric.mend(node, leader);
        cluster.trace.line(format!(
            "snapshot race: node {node} builds a snapshot on a disk syncing in {latency:?}; its links to {leader} mended"
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let normal = self.sync_latency;
        cluster.disk(node).set_faults(|faults| faults.sync_latency = normal);
    }
}

/// Replaces the machine of `node`: out of the voters and the cluster, stopped for good, and a
/// machine with an empty disk and a new id added in its place: a learner first (it catches up,
/// by a snapshot if the log was purged), then a voter.
async fn replace_member(cluster: Cluster, node: NodeId) {
    let step = Duration::from_secs(10);
    // Out of the voters, then out of the cluster: a leader must not keep replicating to the
    // node, whose log is about to vanish with its machine.
    for change in
        [ChangeMembers::RemoveVoters(BTreeSet::from([node])), ChangeMembers::RemoveNodes(BTreeSet::from([node]))]
    {
        let Some(raft) = leader_for_change(&cluster) else { return };
        let removed = tokio::time::timeout(step, raft.change_membership(change, false)).await;
        if let Some(why) = failure(removed) {
            cluster.trace.line(format!("node {node} could not be removed now: {why}"));
            return;
        }
    }
    let successor = cluster.replace(node);
    cluster.trace.line(format!("node {node} removed from the cluster; node {successor} replaces its machine"));
    cluster.crash(node, None).await;
    cluster.start(successor).await;
    rejoin(&cluster, successor, step).await;
}

/// The leader, if it may change the membership now. A leader an interrupted change left out of
/// the configuration the next change starts from hands leadership to a voter of it instead,
/// as the node's own membership commands do.
fn leader_for_change(cluster: &Cluster) -> Option<Raft> {
    let (leader, raft) = cluster.leader()?;
    let metrics = raft.metrics().borrow_watched().clone();
    let matched = |node| metrics.replication.as_ref()?.get(&node)?.as_ref().map(|log_id| log_id.index);
    let Some(successor) = handover_target(metrics.membership_config.membership(), leader, matched) else {
        return Some(raft);
    };
    cluster.trace.line(format!("node {leader} leads outside the membership; handing leadership to node {successor}"));
    let trigger = raft.clone();
    tokio::spawn(async move { trigger.trigger().transfer_leader(successor).await });
    None
}

/// Why a membership change did not happen, if it did not.
fn failure<T, E: std::fmt::Display>(outcome: Result<Result<T, E>, tokio::time::error::Elapsed>) -> Option<String> {
    match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("no answer in time".to_string()),
    }
}

/// Adds `node` back as a learner, then as a voter; true once it is a voter.
pub async fn rejoin(cluster: &Cluster, node: NodeId, step: Duration) -> bool {
    let Some(raft) = leader_for_change(cluster) else { return false };
    let learner = tokio::time::timeout(step, raft.add_learner(node, address(node), true)).await;
    if let Some(why) = failure(learner) {
        cluster.trace.line(format!("node {node} could not be added as a learner now: {why}"));
        return false;
    }
    let Some(raft) = leader_for_change(cluster) else { return false };
    let voter =
        tokio::time::timeout(step, raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false))
            .await;
    if let Some(why) = failure(voter) {
        cluster.trace.line(format!("node {node} could not be made a voter now: {why}"));
        return false;
    }
    cluster.trace.line(format!("node {node} is a voter"));
    true
}

/// The members all running nodes start with.
pub fn initial_members(nodes: &[NodeId]) -> std::collections::BTreeMap<NodeId, BasicNode> {
    nodes.iter().map(|node| (*node, address(*node))).collect()
}
