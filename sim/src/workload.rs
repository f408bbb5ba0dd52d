//! Clients of one run, every choice drawn from the seed: appends of the ledger's own events
//! (releases, hosts, deployments and their waves, rollbacks, reports) and of client events on
//! streams with an expected version, retried with the same ids when the answer is unknown, and
//! linearizable reads of the head, on the leader or on a follower; and subscribers that read the
//! log in order from one node and resume on another.

use std::time::Duration;

use fleetlog_raft::consensus::types::NodeId;
use fleetlog_raft::domain::canonical::to_canonical_string;
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent};
use fleetlog_raft::domain::records;
use fleetlog_raft::domain::views::{self, EventFilter};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ReadPolicy;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::checker::{AckedAppend, AnsweredRead};
use crate::cluster::Cluster;

pub const HOSTS: [&str; 6] = ["h1", "h2", "h3", "h4", "h5", "h6"];
const RELEASES: [&str; 3] = ["r1", "r2", "r3"];
const DEPLOYMENTS: [&str; 8] = ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"];
const STREAMS: [&str; 3] = ["notes-a", "notes-b", "notes-c"];
const WAVES: [&str; 2] = ["canary", "rest"];

/// The (service, env) every host registers in, deployed to and watched by the agents.
pub const ENVIRONMENT: (&str, &str) = ("svc", "prod");

/// The reason of a rollback that names no release: the ledger then chooses the target and
/// writes it into the event, so the model check knows by this that it should choose it too.
pub const ROLLBACK_TO_PREVIOUS: &str = "simulated, to the previous release";
/// The time alerts say they started at (any valid time: only their labels count).
const ALERT_STARTS_AT: &str = "2026-01-01T00:00:00Z";

/// 2026-01-01T00:00:00Z: simulated clocks start here.
pub const EPOCH_MICROS: i64 = 1_767_225_600_000_000;

/// How long a client waits for one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one append before the client gives up (its outcome then stays unknown).
const ATTEMPTS_MAX: u32 = 6;

/// What a run's traffic holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Clients, subscribers, an agent per host, the leader's policy evaluator; clients also set
    /// policies and fire alerts.
    Fleet,
    /// Clients and subscribers only, as the simulator ran before it had agents and policies: the
    /// seeds that found bugs then replay the schedules that found them.
    ClientsOnly,
}

/// One client: its own random numbers, drawn from the run's seed.
pub struct Client {
    pub id: usize,
    pub random: StdRng,
    pub cluster: Cluster,
    pub started: Instant,
    /// Stops at this moment.
    pub until: Instant,
    /// Mean pause between two operations.
    pub pause: Duration,
    next_id: u64,
    /// The node it believes leads.
    leader_guess: Option<NodeId>,
    workload: Workload,
}

impl Client {
    pub fn new(
        id: usize,
        random: StdRng,
        cluster: Cluster,
        started: Instant,
        until: Instant,
        pause: Duration,
        workload: Workload,
    ) -> Client {
        Client { id, random, cluster, started, until, pause, next_id: 0, leader_guess: None, workload }
    }

    pub async fn run(mut self) {
        while Instant::now() < self.until {
            let pause = self.random.gen_range(Duration::ZERO..=self.pause * 2);
            tokio::time::sleep(pause).await;
            if self.random.gen_bool(0.15) {
                self.read().await;
            } else {
                let request = self.request();
                self.append(request).await;
            }
        }
    }

    fn event(&mut self, event_type: &str, fields: &[(&str, &str)], data: serde_json::Value) -> ProposedEvent {
        self.next_id += 1;
        let mut event = ProposedEvent::new(format!("c{}-{}", self.id, self.next_id), event_type);
        for (name, value) in fields {
            let value = Some(value.to_string());
            match *name {
                "service" => event.service = value,
                "env" => event.env = value,
                "host" => event.host = value,
                "release" => event.release = value,
                "stream" => event.stream = value,
                _ => event.deployment = value,
            }
        }
        event.data = to_canonical_string(&data).expect("workload data is JSON");
        event
    }

    /// One request: one to three events of one kind, as deployers, agents and other clients send.
    fn request(&mut self) -> AppendRequest {
        let random = &mut self.random;
        let host = *HOSTS.choose(random).expect("hosts");
        let release = *RELEASES.choose(random).expect("releases");
        let fleet = self.workload == Workload::Fleet;
        // Without the fleet, the four deployments the simulator had before it.
        let deployments = if fleet { &DEPLOYMENTS[..] } else { &DEPLOYMENTS[..4] };
        let deployment = *deployments.choose(random).expect("deployments");
        let wave = *WAVES.choose(random).expect("waves");
        let stream = *STREAMS.choose(random).expect("streams");
        let count = random.gen_range(1..=3);
        let kind = random.gen_range(0..100);
        let expected = match random.gen_range(0..10) {
            0 => ExpectedVersion::NoStream,
            1 => ExpectedVersion::Exists,
            2 => ExpectedVersion::Exact(random.gen_range(0..20)),
            _ => ExpectedVersion::Any,
        };
        let status = *["applying", "running", "running", "failed"].choose(random).expect("statuses");
        let group = format!("g{}", random.gen_range(0..2));
        let env = [("service", ENVIRONMENT.0), ("env", ENVIRONMENT.1)];
        let (events, expected_version) = match kind {
            0..=7 => {
                (vec![self.event("release.created", &[env[0], ("release", release)], json!({}))], ExpectedVersion::Any)
            }
            8..=17 => (
                vec![self.event("target.registered", &[env[0], env[1], ("host", host)], json!({ "group": group }))],
                ExpectedVersion::Any,
            ),
            18..=22 => {
                let waves = json!([{"name": "canary", "group": "g0"}, {"name": "rest", "percent": 100}]);
                let fields = [env[0], env[1], ("deployment", deployment), ("release", release)];
                (vec![self.event("deployment.started", &fields, json!({ "waves": waves }))], ExpectedVersion::Any)
            }
            23..=32 => {
                let event_type = if kind % 2 == 0 { "wave.started" } else { "wave.completed" };
                (
                    vec![self.event(event_type, &[("deployment", deployment)], json!({ "wave": wave }))],
                    ExpectedVersion::Any,
                )
            }
            33..=35 => (
                vec![self.event("deployment.completed", &[("deployment", deployment)], json!({}))],
                ExpectedVersion::Any,
            ),
            36..=37 => (
                vec![self.event("deployment.aborted", &[("deployment", deployment)], json!({"reason": "simulated"}))],
                ExpectedVersion::Any,
            ),
            38..=40 => {
                let mut fields = env.to_vec();
                let mut reason = ROLLBACK_TO_PREVIOUS;
                if kind != 40 {
                    fields.push(("release", release));
                    reason = "simulated";
                }
                (vec![self.event("rollback", &fields, json!({ "reason": reason }))], ExpectedVersion::Any)
            }
            41..=65 => {
                let fields = [env[0], env[1], ("host", host), ("release", release)];
                let reports = (0..count)
                    .map(|_| self.event("host.reported", &fields, json!({"status": status, "applied_seq": 0})));
                (reports.collect(), ExpectedVersion::Any)
            }
            66..=67 if fleet => {
                let policy = self.policy();
                (vec![self.event("policy.set", &env, json!({ "policy": policy }))], ExpectedVersion::Any)
            }
            68..=69 if fleet => {
                let event_type = if kind == 68 { "alert.fired" } else { "alert.resolved" };
                let severity = *["critical", "warning"].choose(&mut self.random).expect("severities");
                let data = json!({"source": "sim", "fingerprint": format!("f{}", count), "starts_at": ALERT_STARTS_AT,
                                  "labels": {"severity": severity}});
                (vec![self.event(event_type, &env, data)], ExpectedVersion::Any)
            }
            _ => {
                let notes =
                    (0..count).map(|index| self.event("sim.note", &[("stream", stream)], json!({ "n": index })));
                (notes.collect(), expected)
            }
        };
        AppendRequest { events, expected_version, actor: format!("client-{}", self.id) }
    }

    /// A release-safety policy for the environment: short bakes and deadlines, so that runs of
    /// minutes see waves advance, gates trip and deployments roll back or halt by themselves.
    fn policy(&mut self) -> serde_json::Value {
        let random = &mut self.random;
        let mut policy = json!({
            "bake_seconds": random.gen_range(0..10),
            "on_trip": *["rollback", "rollback", "halt", "none"].choose(random).expect("trip actions"),
            "auto_advance": random.gen_bool(0.8),
            "no_data": *["ignore", "halt"].choose(random).expect("no-data actions"),
        });
        if random.gen_bool(0.5) {
            policy["min_healthy"] = json!({"percent": random.gen_range(25..=100)});
        }
        if random.gen_bool(0.5) {
            policy["max_failed"] = json!({"count": random.gen_range(0..3)});
        }
        if random.gen_bool(0.5) {
            policy["converge_deadline_seconds"] = json!(random.gen_range(5..60));
        }
        if random.gen_bool(0.3) {
            policy["alerts"] = json!([{"severity": "critical"}]);
        }
        policy
    }

    /// A node to send to: the leader it believes in, or any running node.
    fn target(&mut self) -> Option<NodeId> {
        if let Some(guess) = self.leader_guess {
            if self.cluster.is_running(guess) {
                return Some(guess);
            }
        }
        let running: Vec<NodeId> = self.cluster.fabric.running().into_iter().map(|(node, _)| node).collect();
        running.choose(&mut self.random).copied()
    }

    fn micros_at(&self, node: NodeId) -> i64 {
        micros_at(&self.cluster, self.started, node)
    }

    async fn append(&mut self, request: AppendRequest) {
        let ids = request.events.iter().map(|event| event.id.clone()).collect::<Vec<_>>().join(",");
        let invoked = Instant::now();
        for attempt in 1..=ATTEMPTS_MAX {
            if attempt > 1 {
                let pause = self.random.gen_range(Duration::from_millis(100)..=Duration::from_millis(600));
                tokio::time::sleep(pause).await;
            }
            let Some(node) = self.target() else { continue };
            let Some(raft) = self.cluster.fabric.raft(node) else { continue };
            // The leader stamps the entry with its own clock, skew and all.
            let command =
                LedgerCommand { time_micros: self.micros_at(node), requests: vec![request.clone()], identity: None };
            let written = tokio::time::timeout(ATTEMPT_TIMEOUT, raft.client_write(command)).await;
            match written {
                Ok(Ok(response)) => {
                    let completed = Instant::now();
                    match response.data.outcomes.into_iter().next() {
                        Some(AppendOutcome::Appended { events, duplicate }) => {
                            let first = events.first().map_or(0, |event| event.seq);
                            let trace = &self.cluster.trace;
                            trace.line(format!(
                                "client {} appended {ids} at seq {first} via node {node}{}",
                                self.id,
                                if duplicate { " (duplicate)" } else { "" }
                            ));
                            self.cluster.checker.acked_append(AckedAppend {
                                client: self.id,
                                invoked,
                                completed,
                                events: events.into_iter().map(|event| (event.seq, event.id, event.hash)).collect(),
                                duplicate,
                            });
                        }
                        Some(AppendOutcome::Rejected(rejection)) => {
                            self.cluster.trace.line(format!(
                                "client {} refused {ids}: {}",
                                self.id,
                                rejection.code.as_str()
                            ));
                        }
                        None => self.cluster.checker.violation(format!("client {} got no outcome for {ids}", self.id)),
                    }
                    self.leader_guess = Some(node);
                    return;
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    self.leader_guess = forward.leader_id;
                }
                Ok(Err(error)) => {
                    self.cluster
                        .trace
                        .line(format!("client {} attempt {attempt} of {ids} on node {node}: {error}", self.id));
                    self.leader_guess = None;
                }
                Err(_) => {
                    self.cluster
                        .trace
                        .line(format!("client {} attempt {attempt} of {ids} on node {node} timed out", self.id));
                    self.leader_guess = None;
                }
            }
        }
        self.cluster.trace.line(format!("client {} gave up on {ids}: outcome unknown", self.id));
    }

    /// A linearizable read of the head on a node: the leader confirms the read index, the node
    /// waits until it has applied it, then reads its own state.
    async fn read(&mut self) {
        let Some(node) = self.target_any() else { return };
        let invoked = Instant::now();
        let Some((leader, leader_raft)) = self.cluster.leader() else { return };
        let read_index =
            tokio::time::timeout(ATTEMPT_TIMEOUT, leader_raft.get_read_log_id(ReadPolicy::ReadIndex)).await;
        let Ok(Ok((read_log_id, _))) = read_index else { return };
        let Some(raft) = self.cluster.fabric.raft(node) else { return };
        let disk = self.cluster.disk(node);
        let incarnation = disk.incarnation();
        let index = read_log_id.log_id().index;
        if raft.wait(Some(ATTEMPT_TIMEOUT)).applied_index_at_least(Some(index), "read").await.is_err() {
            return;
        }
        // A node that crashed meanwhile lost what it had applied: this read has no answer.
        if disk.incarnation() != incarnation {
            return;
        }
        let head = disk.inspect(|stored| records::head(&stored.state).map(|head| head.seq));
        let Ok(head_seq) = head else {
            self.cluster.checker.violation(format!("node {node} cannot read its head"));
            return;
        };
        self.cluster.trace.line(format!("client {} read head {head_seq} on node {node} (leader {leader})", self.id));
        self.cluster.checker.answered_read(AnsweredRead {
            client: self.id,
            invoked,
            completed: Instant::now(),
            head_seq,
        });
    }

    fn target_any(&mut self) -> Option<NodeId> {
        let running: Vec<NodeId> = self.cluster.fabric.running().into_iter().map(|(node, _)| node).collect();
        running.choose(&mut self.random).copied()
    }
}

/// The time on `node`'s clock, skew and all, in a run started at `started`.
pub fn micros_at(cluster: &Cluster, started: Instant, node: NodeId) -> i64 {
    let skew = cluster.with_node(node, |sim| sim.skew_micros);
    EPOCH_MICROS + started.elapsed().as_micros() as i64 + skew
}

/// One attempt to append `request` on the node that leads now, stamped with its clock: the
/// outcome, or None when there is no leader or no answer in time (the outcome is then unknown,
/// and a retry with the same ids is answered with the original).
pub async fn append_on_leader(cluster: &Cluster, started: Instant, request: AppendRequest) -> Option<AppendOutcome> {
    let (node, raft) = cluster.leader()?;
    let command =
        LedgerCommand { time_micros: micros_at(cluster, started, node), requests: vec![request], identity: None };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, raft.client_write(command)).await {
        Ok(Ok(response)) => response.data.outcomes.into_iter().next(),
        _ => None,
    }
}

/// A reader of the log that follows it from one node, and resumes from where it was on another
/// when its node goes down or it chooses to move: every replica must hand it the next seq, and
/// each event must be the one the chain holds at that seq.
pub struct Subscriber {
    pub id: usize,
    pub random: StdRng,
    pub cluster: Cluster,
    pub until: Instant,
    node: Option<NodeId>,
    next_seq: u64,
}

/// Events a subscriber reads at once.
const SUBSCRIBER_PAGE: usize = 200;

impl Subscriber {
    pub fn new(id: usize, random: StdRng, cluster: Cluster, until: Instant) -> Subscriber {
        Subscriber { id, random, cluster, until, node: None, next_seq: 1 }
    }

    pub async fn run(mut self) {
        while Instant::now() < self.until {
            let pause = self.random.gen_range(Duration::from_millis(100)..=Duration::from_millis(1_000));
            tokio::time::sleep(pause).await;
            let staying = self.node.filter(|node| self.cluster.is_running(*node) && !self.random.gen_bool(0.05));
            if staying.is_none() {
                let running: Vec<NodeId> = self.cluster.fabric.running().into_iter().map(|(node, _)| node).collect();
                self.node = running.choose(&mut self.random).copied();
                if let Some(node) = self.node {
                    self.cluster
                        .trace
                        .line(format!("subscriber {} resumes at seq {} on node {node}", self.id, self.next_seq));
                }
            }
            let Some(node) = self.node else { continue };
            let from = self.next_seq;
            let page = self
                .cluster
                .disk(node)
                .inspect(|stored| views::read_events(&stored.state, &EventFilter::default(), from, SUBSCRIBER_PAGE));
            let events = match page {
                Ok(page) => page.events,
                Err(error) => {
                    self.cluster.checker.violation(format!("node {node} cannot serve events from seq {from}: {error}"));
                    continue;
                }
            };
            for event in events {
                if event.seq != self.next_seq {
                    self.cluster.checker.violation(format!(
                        "subscriber {} on node {node} expected seq {} and got seq {}",
                        self.id, self.next_seq, event.seq
                    ));
                    return;
                }
                if let Some(known) = self.cluster.checker.chain_hash(event.seq) {
                    if known != event.hash {
                        self.cluster.checker.violation(format!(
                            "subscriber {} got seq {} from node {node} with another hash than the chain's",
                            self.id, event.seq
                        ));
                    }
                }
                self.next_seq += 1;
            }
        }
        self.cluster.trace.line(format!("subscriber {} read up to seq {}", self.id, self.next_seq - 1));
    }
}
