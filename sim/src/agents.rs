//! The fleet's agents: one per host, each following its host's directives from one node and
//! resuming on another, deciding what to apply next by the product's own rules
//! ([`AgentState`]), running commands that take time and sometimes fail, restarting from what it
//! saved, and reporting what its commands did.
//!
//! A simulated agent reads from the node it watches what the server's watch stream is made of:
//! the host's state on a fresh watch ([`views::watch_state`]), then the host's directives. Half
//! of its watches that resume read them from the node's disk as they come
//! ([`views::directives_between`]), as a stream catching up does; the other half are live
//! streams ([`LiveWatch`]): caught up from disk, then resolved from the node's feed by the
//! product's `HostFollower`, as the server's stream does once it has caught up.
//!
//! Checked while it runs: a directive sent again is the one sent before, none arrives out of
//! order, and the agent never starts an older directive after a newer one (resumes now and then
//! start before the agent's position, so the agent's rule for stale directives is exercised). Checked at the end ([`Agent::final_checks`]): the
//! directives it heard are exactly those the ledger holds for its host after its first state, and
//! it runs its host's desired release.

use std::time::Duration;

use fleetlog_raft::consensus::types::NodeId;
use fleetlog_raft::domain::agent_state::{AgentState, Directive, Outcome};
use fleetlog_raft::domain::canonical::to_canonical_string;
use fleetlog_raft::domain::desired;
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, ProposedEvent};
use fleetlog_raft::domain::kv::KvRead;
use fleetlog_raft::domain::records::{self, HostRecord};
use fleetlog_raft::domain::views;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::storage::Bug;
use crate::watch_stream::LiveWatch;
use crate::workload::{append_on_leader, ENVIRONMENT};

/// Directives read at once, as the server's catch-up reads them.
const DIRECTIVES_PER_READ: usize = 1_000;

/// The command an agent is running: which directive, when it ends, and how.
struct Command {
    directive: Directive,
    ends: Instant,
    outcome: Outcome,
}

pub struct Agent {
    pub host: &'static str,
    random: StdRng,
    cluster: Cluster,
    started: Instant,
    until: Instant,
    state: AgentState,
    /// The node watched, and the seq its stream reads from next.
    watch: Option<(NodeId, u64)>,
    /// The watch's live stream, when it has one.
    live: Option<LiveWatch>,
    running: Option<Command>,
    /// The seq of the first state the agent took in: every directive after it reaches the agent
    /// one by one.
    first_state: Option<u64>,
    /// Every directive heard after the first state, as (seq, release), in the order heard.
    heard: Vec<(u64, String)>,
    /// The seq of the newest directive whose command was started.
    newest_started: u64,
    /// The newest report not yet acknowledged: sent again, with the same id, until it is.
    report: Option<ProposedEvent>,
    reports_made: u64,
}

impl Agent {
    pub fn new(host: &'static str, random: StdRng, cluster: Cluster, started: Instant, until: Instant) -> Agent {
        let (service, env) = ENVIRONMENT;
        Agent {
            host,
            random,
            cluster,
            started,
            until,
            state: AgentState::new(host, service, env),
            watch: None,
            live: None,
            running: None,
            first_state: None,
            heard: Vec::new(),
            newest_started: 0,
            report: None,
            reports_made: 0,
        }
    }

    pub async fn run(mut self) -> Agent {
        while Instant::now() < self.until {
            let pause = self.random.gen_range(Duration::from_millis(100)..=Duration::from_millis(500));
            tokio::time::sleep(pause).await;
            if self.random.gen_bool(0.01) {
                self.restart();
            }
            self.follow();
            self.step_commands(true);
            self.send_report().await;
        }
        self.live = None;
        self
    }

    fn trace(&self, text: impl AsRef<str>) {
        self.cluster.trace.line(format!("agent {}: {}", self.host, text.as_ref()));
    }

    /// A crash of the agent: the command it ran is gone, and it starts again from what it saved
    /// (its state as JSON, read back as the agent's state file is).
    fn restart(&mut self) {
        let saved = serde_json::to_string(&self.state).expect("an agent state is JSON");
        let mut state: AgentState = serde_json::from_str(&saved).expect("a saved agent state reads back");
        state.resume_failed();
        self.state = state;
        self.running = None;
        self.watch = None;
        self.live = None;
        self.trace(format!("restarted at position {}", self.state.position));
    }

    /// Reads what the watched node has for the host since the watch's position, moving to
    /// another node when its own is down or now and then by choice.
    fn follow(&mut self) {
        let staying = self.watch.filter(|(node, _)| self.cluster.is_running(*node) && !self.random.gen_bool(0.03));
        // A live stream ends with its node's incarnation.
        let live_ended = |live: &LiveWatch, node: NodeId| {
            self.cluster.feed(node).is_none_or(|(incarnation, _)| incarnation != live.incarnation)
        };
        let staying = staying.filter(|(node, _)| self.live.as_ref().is_none_or(|live| !live_ended(live, *node)));
        if staying.is_none() {
            self.live = None;
            let running: Vec<NodeId> = self.cluster.fabric.running().into_iter().map(|(node, _)| node).collect();
            let Some(node) = running.choose(&mut self.random).copied() else {
                self.watch = None;
                return;
            };
            let from = self.resume_from(node);
            self.watch = Some((node, from));
            let live = self.state.position > 0 && self.random.gen_bool(0.5);
            if let (true, Some((incarnation, feed))) = (live, self.cluster.feed(node)) {
                match LiveWatch::start(self.cluster.disk(node), incarnation, feed, self.host, from) {
                    Ok(stream) => self.live = Some(stream),
                    // A node behind the agent refuses the position; the next poll tries again.
                    Err(refused) => {
                        self.trace(format!("node {node} refuses a live watch: {refused}"));
                        self.watch = None;
                        return;
                    }
                }
            }
            let how = if self.live.is_some() { "live" } else { "from disk" };
            self.trace(format!("watches node {node} {how} from seq {from} (position {})", self.state.position));
        }
        let Some((node, from)) = self.watch else { return };
        if let Some(live) = &mut self.live {
            let mut sent = Vec::new();
            while let Ok(batch) = live.receiver.try_recv() {
                sent.push(batch);
            }
            for (directives, next) in sent {
                self.take(node, Read::Directives { directives, next });
            }
            return;
        }
        let read = self.cluster.disk(node).inspect(|stored| -> fleetlog_raft::Result<Option<Read>> {
            let kv: &dyn KvRead = &stored.state;
            let head = records::head(kv)?.seq;
            if self.state.position == 0 {
                let (seq, hosts) = views::watch_state(kv, self.host)?;
                return Ok(Some(Read::State { seq, directive: ours(&hosts) }));
            }
            if head < from {
                return Ok(None);
            }
            let (directives, next) = views::directives_between(kv, self.host, from, head, DIRECTIVES_PER_READ)?;
            Ok(Some(Read::Directives { directives, next }))
        });
        match read {
            Ok(Some(read)) => self.take(node, read),
            Ok(None) => {}
            Err(error) => self
                .cluster
                .checker
                .violation(format!("node {node} cannot serve host {}'s watch from seq {from}: {error}", self.host)),
        }
    }

    /// Where a new watch of `node` reads from: after the last seq the agent took in. A third of
    /// the resumes start up to 500 seqs earlier, as a server resending what the agent already
    /// has would: the older directives sent again must change nothing.
    fn resume_from(&mut self, node: NodeId) -> u64 {
        let position = self.state.position;
        if position > 0 && self.cluster.bug() == Some(Bug::WatchResumesAtHead) {
            let head = self.cluster.disk(node).inspect(|stored| records::head(&stored.state).map(|head| head.seq));
            return head.unwrap_or(position) + 1;
        }
        if position > 0 && self.random.gen_bool(0.3) {
            return position.saturating_sub(self.random.gen_range(0..500)).max(1);
        }
        position + 1
    }

    fn take(&mut self, node: NodeId, read: Read) {
        match read {
            Read::State { seq, directive } => {
                // A node that has applied nothing yet answers with an empty state at seq 0: the
                // agent's position stays 0, and its next watch starts afresh with a state again.
                if seq > 0 {
                    self.first_state.get_or_insert(seq);
                }
                self.state.take(seq, directive);
                self.watch = Some((node, seq + 1));
            }
            Read::Directives { directives, next } => {
                for directive in directives {
                    let heard = (directive.seq, directive.release.clone());
                    let first_state = self.first_state.unwrap_or(0);
                    let last = self.heard.last().map_or(first_state, |(seq, _)| *seq);
                    if heard.0 > last {
                        self.heard.push(heard);
                    } else if heard.0 > first_state && self.heard.binary_search(&heard).is_err() {
                        // Sent again, it must be what was sent the first time.
                        self.cluster.checker.violation(format!(
                            "agent {} heard directive seq {} ({}) from node {node} after seq {last}, \
                             and not before",
                            self.host, heard.0, heard.1
                        ));
                    }
                    let seq = directive.seq;
                    self.state.take(seq, Some(agent_directive(directive)));
                }
                self.watch = Some((node, next));
            }
        }
    }

    /// Ends the command whose time is up (with its outcome, or successfully when `may_fail` is
    /// off), and starts the directive that is due.
    fn step_commands(&mut self, may_fail: bool) {
        let now = Instant::now();
        if let Some(command) = self.running.take_if(|command| command.ends <= now || !may_fail) {
            let outcome = if may_fail { command.outcome } else { Outcome::Running };
            self.trace(format!(
                "{} of seq {} ended {}",
                command.directive.release,
                command.directive.seq,
                outcome.as_str()
            ));
            self.state.finish(command.directive.clone(), outcome);
            self.make_report(&command.directive, outcome);
        }
        if self.running.is_some() {
            return;
        }
        // No retry is ever deferred here, so the clock `due` is given does not matter.
        let Some(directive) = self.state.due(std::time::Instant::now()).cloned() else { return };
        if directive.seq < self.newest_started {
            self.cluster.checker.violation(format!(
                "agent {} started directive seq {} after seq {}",
                self.host, directive.seq, self.newest_started
            ));
        }
        self.newest_started = self.newest_started.max(directive.seq);
        let attempt = self.state.start();
        let length = self.random.gen_range(Duration::from_millis(200)..=Duration::from_millis(3_000));
        let outcome = if self.random.gen_bool(0.15) { Outcome::Failed } else { Outcome::Running };
        self.trace(format!("starts {} of seq {} (attempt {attempt})", directive.release, directive.seq));
        self.running = Some(Command { directive, ends: now + length, outcome });
    }

    fn make_report(&mut self, directive: &Directive, outcome: Outcome) {
        self.reports_made += 1;
        let mut report = ProposedEvent::new(format!("agent-{}-{}", self.host, self.reports_made), "host.reported");
        let (service, env) = ENVIRONMENT;
        report.service = Some(service.into());
        report.env = Some(env.into());
        report.host = Some(self.host.into());
        report.release = Some(directive.release.clone());
        let health = if self.random.gen_bool(0.1) { "unhealthy" } else { "healthy" };
        let data = serde_json::json!({"status": outcome.as_str(), "applied_seq": directive.seq, "health": health});
        report.data = to_canonical_string(&data).expect("a report is JSON");
        self.report = Some(report);
    }

    async fn send_report(&mut self) {
        let Some(report) = self.report.clone() else { return };
        let request =
            AppendRequest { events: vec![report], expected_version: ExpectedVersion::Any, actor: self.host.into() };
        match append_on_leader(&self.cluster, self.started, request).await {
            Some(AppendOutcome::Appended { .. }) => self.report = None,
            Some(AppendOutcome::Rejected(rejection)) => {
                self.trace(format!("report refused: {}: {}", rejection.code.as_str(), rejection.message));
                self.report = None;
            }
            None => {}
        }
    }

    /// Once the cluster settled on `ledger`: the agent catches up, its commands end well, and
    /// what it heard and runs is compared with the ledger. Returns how many directives it heard.
    pub fn final_checks(mut self, ledger: &dyn KvRead) -> usize {
        let head = match records::head(ledger) {
            Ok(head) => head.seq,
            Err(error) => return self.fail(format!("the ledger has no head: {error}")),
        };
        let mut reads = 0;
        loop {
            let from = self.watch.map_or(self.state.position + 1, |(_, from)| from);
            let read = if self.state.position == 0 {
                views::watch_state(ledger, self.host).map(|(seq, hosts)| Read::State { seq, directive: ours(&hosts) })
            } else if from > head {
                break;
            } else {
                views::directives_between(ledger, self.host, from, head, DIRECTIVES_PER_READ)
                    .map(|(directives, next)| Read::Directives { directives, next })
            };
            match read {
                Ok(read) => self.take(0, read),
                Err(error) => return self.fail(format!("host {}'s watch: {error}", self.host)),
            }
            reads += 1;
            if reads > 10_000 {
                return self.fail(format!("agent {} never caught up", self.host));
            }
        }
        while self.running.is_some() || self.state.pending().is_some() {
            self.step_commands(false);
        }
        let first_state = self.first_state.unwrap_or(0);
        let expected: Vec<(u64, String)> =
            match views::directives_between(ledger, self.host, first_state + 1, head, usize::MAX) {
                Ok((directives, _)) => {
                    directives.into_iter().map(|directive| (directive.seq, directive.release)).collect()
                }
                Err(error) => return self.fail(format!("host {}'s directives: {error}", self.host)),
            };
        if self.heard != expected {
            let missing: Vec<_> = expected.iter().filter(|directive| !self.heard.contains(directive)).collect();
            let extra: Vec<_> = self.heard.iter().filter(|directive| !expected.contains(directive)).collect();
            self.cluster.checker.violation(format!(
                "agent {} heard {} directives after seq {first_state}, the ledger holds {}: missing {missing:?}, \
                 not in the ledger {extra:?}",
                self.host,
                self.heard.len(),
                expected.len()
            ));
        }
        let desired = match views::host_state(ledger, self.host, None) {
            Ok(hosts) => ours(&hosts),
            Err(error) => return self.fail(format!("host {}'s state: {error}", self.host)),
        };
        let runs = self.state.current.as_ref().filter(|applied| applied.outcome == Outcome::Running);
        if let Some(desired) = desired {
            if runs.map(|applied| applied.directive.release.as_str()) != Some(desired.release.as_str()) {
                self.cluster.checker.violation(format!(
                    "agent {} runs {:?} but its desired release is {} (seq {})",
                    self.host,
                    runs.map(|applied| &applied.directive.release),
                    desired.release,
                    desired.seq
                ));
            }
        }
        self.cluster.trace.line(format!(
            "agent {}: heard {} directives after seq {first_state}, runs {:?}",
            self.host,
            self.heard.len(),
            runs.map(|applied| &applied.directive.release)
        ));
        self.heard.len()
    }

    fn fail(&self, text: String) -> usize {
        self.cluster.checker.violation(text);
        self.heard.len()
    }
}

enum Read {
    State { seq: u64, directive: Option<Directive> },
    Directives { directives: Vec<desired::Directive>, next: u64 },
}

/// The desired release of the agents' environment among a host's records, as the state message
/// gives it.
fn ours(hosts: &[HostRecord]) -> Option<Directive> {
    let (service, env) = ENVIRONMENT;
    let record = hosts.iter().find(|record| record.service == service && record.env == env)?;
    let desired = record.desired.as_ref()?;
    Some(Directive {
        seq: desired.seq,
        release: desired.release.clone(),
        cause: desired.cause.clone(),
        deployment: desired.deployment.clone(),
    })
}

fn agent_directive(directive: desired::Directive) -> Directive {
    Directive {
        seq: directive.seq,
        release: directive.release,
        cause: directive.cause,
        deployment: directive.deployment,
    }
}
