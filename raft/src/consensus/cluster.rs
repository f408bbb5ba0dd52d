//! Membership and status: forming a cluster, adding learners, changing voters, and the status
//! document gathered from every member. Changes run on the leader; elsewhere they report
//! [`MembershipError::NotLeader`] and the API layer passes the request on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use crate::consensus::membership::handover_target;
use crate::consensus::node::Node;
use crate::consensus::peer::client::{path, NodeStatus};
use crate::consensus::types::{NodeId, TypeConfig};

/// How long membership changes may take (a learner catching up included).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `status` waits for each member's own report.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("the cluster is already initialised")]
    AlreadyInitialized,
    #[error("{0}")]
    Invalid(String),
    #[error("the membership change did not finish within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "this leader is not a voter of the membership an interrupted change left; leadership is moving to node \
         {successor}: retry the change"
    )]
    HandingOver { successor: NodeId },
}

/// One member as `GET /v1/cluster` shows it.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    /// The member's own report; `None` when it did not answer.
    pub report: Option<NodeStatus>,
}

#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub cluster_id: Option<String>,
    /// Verifier string of the key that signs checkpoints (what auditors pin).
    pub checkpoint_key: Option<String>,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
    pub this_node: NodeStatus,
}

impl Node {
    /// Forms a new cluster of `members` (this node among them).
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), MembershipError> {
        if !members.contains_key(&self.id()) {
            return Err(MembershipError::Invalid(format!(
                "the members must include the node that receives the request (node {})",
                self.id()
            )));
        }
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        match self.raft().initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(MembershipError::AlreadyInitialized),
            Err(RaftError::APIError(InitializeError::NotInMembers(error))) => {
                Err(MembershipError::Invalid(error.to_string()))
            }
            Err(error) => Err(MembershipError::Unavailable(error.to_string())),
        }
    }

    /// Adds a non-voting member and waits until it has caught up with the log.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), MembershipError> {
        if self.metrics().membership_config.membership().get_node(&id).is_some() {
            return Err(MembershipError::Invalid(format!("node {id} is already a member; node ids are never reused")));
        }
        self.check_never_a_member(id)?;
        self.check_newcomer(id, &addr).await?;
        self.ensure_inside_membership().await?;
        let change = self.raft().add_learner(id, BasicNode { addr }, false);
        self.finish_change(change).await?;
        self.wait_replicated(id).await
    }

    /// A machine that was a member once and comes back empty under the same id would have
    /// forgotten the vote it gave; a leader of an older term that never heard of its removal
    /// could count that vote again.
    fn check_never_a_member(&self, id: NodeId) -> Result<(), MembershipError> {
        let ever = crate::storage::apply::members_ever(&self.database().reader())
            .map_err(|error| MembershipError::Unavailable(format!("cannot read the past members: {error}")))?;
        if ever.contains(&id) {
            return Err(MembershipError::Invalid(format!(
                "node id {id} belonged to this cluster before; node ids are never reused: start the new machine \
                 with an id the cluster has not had"
            )));
        }
        Ok(())
    }

    /// A leader an interrupted change left outside the membership's newest configuration hands
    /// leadership to a voter of it, which then takes the change (see
    /// [`handover_target`]); elsewhere openraft answers with the leader to go to.
    async fn ensure_inside_membership(&self) -> Result<(), MembershipError> {
        let metrics = self.metrics();
        if metrics.current_leader != Some(self.id()) {
            return Ok(());
        }
        let matched = |node| metrics.replication.as_ref()?.get(&node)?.as_ref().map(|log_id| log_id.index);
        let Some(successor) = handover_target(metrics.membership_config.membership(), self.id(), matched) else {
            return Ok(());
        };
        tracing::warn!(successor, "leading outside the membership an interrupted change left: handing over");
        self.raft().trigger().transfer_leader(successor).await.map_err(|error| {
            MembershipError::Unavailable(format!("cannot hand leadership to node {successor}: {error}"))
        })?;
        Err(MembershipError::HandingOver { successor })
    }

    /// A mistyped address or id would otherwise leave a member nobody can reach and a caller
    /// waiting for it to catch up; a node with a log of its own belongs to another cluster.
    async fn check_newcomer(&self, id: NodeId, addr: &str) -> Result<(), MembershipError> {
        let report = self
            .peers()
            .call::<_, NodeStatus>(id, addr, path::STATUS, &(), STATUS_TIMEOUT)
            .await
            .map_err(|error| MembershipError::Invalid(format!("cannot add node {id}: {error}")))?;
        if report.id != id {
            return Err(MembershipError::Invalid(format!(
                "the node at {addr} runs as node {}, not node {id}",
                report.id
            )));
        }
        if report.last_log_index.is_some() {
            return Err(MembershipError::Invalid(format!(
                "node {id} at {addr} already holds a Raft log; a new member starts with an empty data directory"
            )));
        }
        Ok(())
    }

    /// Waits until `id` holds the whole log as it stands now. (openraft's own blocking
    /// `add_learner` settles for "within `replication_lag_threshold` entries", which with large
    /// entries can be most of a ledger.)
    async fn wait_replicated(&self, id: NodeId) -> Result<(), MembershipError> {
        let target = self.metrics().last_log_index;
        let caught_up = self
            .raft()
            .wait(Some(MEMBERSHIP_TIMEOUT))
            .metrics(
                |metrics| match &metrics.replication {
                    // No longer leading: the new leader replicates to the learner instead.
                    None => true,
                    Some(replication) => {
                        replication.get(&id).is_some_and(|matched| matched.map(|log_id| log_id.index) >= target)
                    }
                },
                "learner has the whole log",
            )
            .await;
        caught_up.map(|_| ()).map_err(|_| MembershipError::Timeout(MEMBERSHIP_TIMEOUT))
    }

    /// Makes exactly `voters` the voting members. Voters left out leave the cluster; learners
    /// stay learners.
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), MembershipError> {
        if voters.is_empty() {
            return Err(MembershipError::Invalid("a cluster needs at least one voter".into()));
        }
        self.ensure_inside_membership().await?;
        let change = self.raft().change_membership(ChangeMembers::ReplaceAllVoters(voters), false);
        self.finish_change(change).await
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, id: NodeId) -> Result<(), MembershipError> {
        self.ensure_inside_membership().await?;
        let change = self.raft().change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false);
        self.finish_change(change).await
    }

    /// Removes a member, voter or learner.
    pub async fn remove(&self, id: NodeId) -> Result<(), MembershipError> {
        let membership = self.metrics().membership_config.membership().clone();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::Invalid(format!("node {id} is not a member")));
        }
        self.ensure_inside_membership().await?;
        if membership.voter_ids().any(|voter| voter == id) {
            let change = self.raft().change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false);
            self.finish_change(change).await?;
        }
        let change = self.raft().change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false);
        self.finish_change(change).await
    }

    async fn finish_change<T>(
        &self,
        change: impl std::future::Future<Output = Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>>,
    ) -> Result<(), MembershipError> {
        match tokio::time::timeout(MEMBERSHIP_TIMEOUT, change).await {
            Err(_) => Err(MembershipError::Timeout(MEMBERSHIP_TIMEOUT)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(MembershipError::NotLeader {
                    leader: forward.leader_id.zip(forward.leader_node.map(|node| node.addr)),
                })
            }
            // The change's entry was cut from the log (a new leader): whether it took is unknown.
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                Err(MembershipError::Unavailable("the change was overtaken by a new leader; look and retry".into()))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error)))) => Err(match error {
                ChangeMembershipError::InProgress(_) => MembershipError::Unavailable(error.to_string()),
                _ => MembershipError::Invalid(error.to_string()),
            }),
            Ok(Err(error)) => Err(MembershipError::Unavailable(error.to_string())),
        }
    }

    /// What this node knows about itself.
    pub fn local_status(&self) -> NodeStatus {
        let metrics = self.metrics();
        NodeStatus {
            id: self.id(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
        }
    }

    /// The membership as this node knows it, with every member's own report (asked in parallel).
    pub async fn cluster_status(&self) -> ClusterStatus {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let reports = membership.nodes().map(|(&id, node)| {
            let address = node.addr.clone();
            async move {
                if id == self.id() {
                    return Some(self.local_status());
                }
                self.peers().call::<_, NodeStatus>(id, &address, path::STATUS, &(), STATUS_TIMEOUT).await.ok()
            }
        });
        let reports = futures::future::join_all(reports).await;
        let members = membership
            .nodes()
            .zip(reports)
            .map(|((&id, node), report)| MemberStatus {
                id,
                addr: node.addr.clone(),
                voter: voters.contains(&id),
                report,
            })
            .collect();
        let identity = self.identity().ok().flatten();
        ClusterStatus {
            checkpoint_key: identity.as_ref().map(|identity| identity.signer().verifier().to_string()),
            cluster_id: identity.map(|identity| identity.cluster_id),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            members,
            this_node: self.local_status(),
        }
    }
}
