//! The simulated network between the nodes of one run.
//!
//! A request waits a delay drawn from the seed, then reaches the target's Raft directly; its
//! answer waits another delay on the way back. Faults, all drawn from the seed: a request may be
//! lost (the sender hears nothing until its timeout), delivered twice, or overtaken by a later
//! one (delays differ); a link may be cut in one direction or both (a partition). A node that is
//! down refuses connections at once; a cut link answers nothing until the sender's timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleetlog_raft::consensus::types::NodeId;
use openraft::error::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::BasicNode;
use rand::rngs::StdRng;
use rand::Rng;

use crate::runtime::SimConfig;
use crate::storage::{SnapshotData, StateMachine};

pub type Raft = openraft::Raft<SimConfig, StateMachine>;

/// How the network behaves when no partition is in the way.
#[derive(Clone, Debug)]
pub struct Conditions {
    /// One-way delay of a message, drawn uniformly.
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Chance that a message is lost.
    pub loss: f64,
    /// Chance that a request is delivered twice.
    pub duplication: f64,
}

/// Every node's Raft (while it runs) and the links between them. Clones share it.
#[derive(Clone)]
pub struct Fabric {
    inner: Arc<Mutex<FabricInner>>,
}

struct FabricInner {
    running: BTreeMap<NodeId, Raft>,
    /// Directed links that carry nothing: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    conditions: Conditions,
    random: StdRng,
}

/// What the seed decided for one message.
struct Fate {
    delay: Duration,
    lost: bool,
    duplicated: bool,
}

impl Fabric {
    pub fn new(conditions: Conditions, random: StdRng) -> Fabric {
        Fabric {
            inner: Arc::new(Mutex::new(FabricInner {
                running: BTreeMap::new(),
                cut: BTreeSet::new(),
                conditions,
                random,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FabricInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn up(&self, node: NodeId, raft: Raft) {
        self.lock().running.insert(node, raft);
    }

    /// Takes the node off the network; its Raft, to shut it down.
    pub fn down(&self, node: NodeId) -> Option<Raft> {
        self.lock().running.remove(&node)
    }

    pub fn raft(&self, node: NodeId) -> Option<Raft> {
        self.lock().running.get(&node).cloned()
    }

    pub fn running(&self) -> Vec<(NodeId, Raft)> {
        self.lock().running.iter().map(|(node, raft)| (*node, raft.clone())).collect()
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Heals the one link `from` -> `to`.
    pub fn mend(&self, from: NodeId, to: NodeId) {
        self.lock().cut.remove(&(from, to));
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    pub fn set_conditions(&self, conditions: Conditions) {
        self.lock().conditions = conditions;
    }

    pub fn conditions(&self) -> Conditions {
        self.lock().conditions.clone()
    }

    fn fate(&self) -> Fate {
        let mut inner = self.lock();
        let FabricInner { conditions, random, .. } = &mut *inner;
        let delay = random.gen_range(conditions.delay_min..=conditions.delay_max);
        let lost = random.gen_bool(conditions.loss);
        let duplicated = random.gen_bool(conditions.duplication);
        Fate { delay, lost, duplicated }
    }

    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().cut.contains(&(from, to))
    }
}

/// The network of one node: how openraft on `from` reaches the others.
pub struct Network {
    from: NodeId,
    fabric: Fabric,
}

impl Network {
    pub fn new(from: NodeId, fabric: Fabric) -> Network {
        Network { from, fabric }
    }
}

impl RaftNetworkFactory<SimConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection { from: self.from, to: target, fabric: self.fabric.clone() }
    }
}

pub struct Connection {
    from: NodeId,
    to: NodeId,
    fabric: Fabric,
}

/// Why a message got no answer.
enum Failure {
    /// The target is down: the connection is refused at once.
    Refused,
    /// Nothing came back before the sender's timeout.
    Silent,
}

impl Connection {
    /// Carries one request and its answer. `send` calls the target; it runs twice when the
    /// request is duplicated.
    async fn carry<Answer, Send, Sent>(
        &self,
        option: &RPCOption,
        duplicable: bool,
        send: Send,
    ) -> Result<Answer, Failure>
    where
        Send: Fn(Raft) -> Sent,
        Sent: Future<Output = Answer>,
    {
        let going = self.fabric.fate();
        tokio::time::sleep(going.delay).await;
        let Some(target) = self.fabric.raft(self.to) else {
            return Err(Failure::Refused);
        };
        if going.lost || self.fabric.is_cut(self.from, self.to) {
            return Err(self.silence(option, going.delay).await);
        }
        let mut answer = send(target.clone()).await;
        if duplicable && going.duplicated {
            answer = send(target).await;
        }
        let coming = self.fabric.fate();
        tokio::time::sleep(coming.delay).await;
        if coming.lost || self.fabric.is_cut(self.to, self.from) {
            return Err(self.silence(option, going.delay + coming.delay).await);
        }
        Ok(answer)
    }

    /// Waits out the rest of the sender's timeout.
    async fn silence(&self, option: &RPCOption, spent: Duration) -> Failure {
        tokio::time::sleep(option.hard_ttl().saturating_sub(spent)).await;
        Failure::Silent
    }
}

fn rpc_error(failure: Failure) -> RPCError<SimConfig> {
    match failure {
        Failure::Refused => RPCError::Unreachable(Unreachable::new(&std::io::Error::other("connection refused"))),
        Failure::Silent => RPCError::Network(NetworkError::new(&std::io::Error::other("no answer"))),
    }
}

impl Connection {
    /// One request that may be delivered twice, and its answer or why there is none.
    async fn request<Request, Answer, Sent>(
        &self,
        option: &RPCOption,
        request: Request,
        send: impl Fn(Raft, Request) -> Sent,
    ) -> Result<Answer, RPCError<SimConfig>>
    where
        Request: Clone,
        Sent: Future<Output = Result<Answer, RaftError<SimConfig>>>,
    {
        let answer = self.carry(option, true, |raft| send(raft, request.clone())).await.map_err(rpc_error)?;
        // A target whose Raft has stopped answers with its error: to the sender, a network failure.
        answer.map_err(|error| RPCError::Network(NetworkError::new(&error)))
    }
}

impl RaftNetworkV2<SimConfig> for Connection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<SimConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<SimConfig>, RPCError<SimConfig>> {
        self.request(&option, request, |raft, request| async move { raft.append_entries(request).await }).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<SimConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<SimConfig>, RPCError<SimConfig>> {
        self.request(&option, request, |raft, request| async move { raft.vote(request).await }).await
    }

    async fn pre_vote(
        &mut self,
        request: VoteRequest<SimConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<SimConfig>, RPCError<SimConfig>> {
        self.request(&option, request, |raft, request| async move { raft.pre_vote(request).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<SimConfig>,
        snapshot: SnapshotOf<SimConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<SimConfig>, StreamingError<SimConfig>> {
        let meta = snapshot.meta;
        let data = snapshot.snapshot;
        let send = self.carry(&option, false, |raft| {
            let snapshot = openraft::storage::Snapshot { meta: meta.clone(), snapshot: data.clone() };
            async move { raft.install_full_snapshot(vote, snapshot).await }
        });
        // Biased: with both ready, the choice must not depend on tokio's own random numbers.
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = send => match sent {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(fatal)) => Err(StreamingError::Network(NetworkError::new(&fatal))),
                Err(Failure::Refused) => Err(StreamingError::Unreachable(Unreachable::new(&std::io::Error::other("connection refused")))),
                Err(Failure::Silent) => Err(StreamingError::Network(NetworkError::new(&std::io::Error::other("no answer")))),
            },
        }
    }
}
