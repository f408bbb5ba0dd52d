//! Property test: random command sequences applied to the ledger agree with a small, obviously
//! correct model of the rules (same accept/refuse decisions, same views), and the chain verifies.
//!
//! The model keeps every host's desired release the naive way, writing each host a wave or a
//! rollback reaches, while the ledger resolves it at read time from one layer per environment:
//! the two must agree at the head, at every past seq, and in the directives an agent is sent.

use std::collections::BTreeMap;

use fleetlog_raft::domain::event::{
    AppendOutcome, AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent, GENESIS_HASH,
};
use fleetlog_raft::domain::kv::{MemoryKv, Overlay};
use fleetlog_raft::domain::ledger::apply_command;
use fleetlog_raft::domain::records::{self, DeploymentState, WaveState};
use fleetlog_raft::domain::views;
use proptest::prelude::*;
use serde_json::json;

const HOSTS: [&str; 7] = ["h1", "h2", "h3", "h4", "h5", "h6", "h7"];
const RELEASES: [&str; 3] = ["r1", "r2", "r3"];
const DEPLOYMENTS: [&str; 4] = ["d1", "d2", "d3", "d4"];
const STATUSES: [&str; 3] = ["applying", "running", "failed"];

#[derive(Clone, Debug)]
enum Op {
    CreateRelease(usize),
    Block(usize, bool),
    Register(usize, usize),
    Deregister(usize),
    /// The last field of each: the event carries a force reason, overriding the guards.
    Start(usize, usize, usize, bool),
    StartWave(usize, usize, bool),
    CompleteWave(usize, usize, bool),
    Complete(usize, bool),
    Abort(usize),
    Rollback(Option<usize>),
    Report(usize, usize, usize),
    Freeze(bool),
}

/// Weighted so that sequences often get deep: hosts registered, deployments with several waves
/// started, reports on the releases being deployed.
fn op() -> impl Strategy<Value = Op> {
    let hosts = HOSTS.len();
    prop_oneof![
        2 => (0..3usize).prop_map(Op::CreateRelease),
        1 => (0..3usize, any::<bool>()).prop_map(|(r, b)| Op::Block(r, b)),
        5 => (0..hosts, 0..2usize).prop_map(|(h, g)| Op::Register(h, g)),
        1 => (0..hosts).prop_map(Op::Deregister),
        3 => (0..4usize, 0..3usize, 0..4usize, any::<bool>()).prop_map(|(d, r, t, f)| Op::Start(d, r, t, f)),
        5 => (0..4usize, 0..3usize, any::<bool>()).prop_map(|(d, w, f)| Op::StartWave(d, w, f)),
        4 => (0..4usize, 0..3usize, any::<bool>()).prop_map(|(d, w, f)| Op::CompleteWave(d, w, f)),
        2 => (0..4usize, any::<bool>()).prop_map(|(d, f)| Op::Complete(d, f)),
        1 => (0..4usize).prop_map(Op::Abort),
        1 => proptest::option::of(0..3usize).prop_map(Op::Rollback),
        4 => (0..hosts, 0..3usize, 0..3usize).prop_map(|(h, r, s)| Op::Report(h, r, s)),
        1 => any::<bool>().prop_map(Op::Freeze),
    ]
}

/// Wave templates: (name, selector) lists.
fn template(index: usize) -> Vec<(&'static str, serde_json::Value)> {
    match index {
        0 => vec![("all", json!({"percent": 100}))],
        1 => vec![
            ("canary", json!({"group": "g0"})),
            ("half", json!({"percent": 50})),
            ("rest", json!({"percent": 100})),
        ],
        2 => vec![("pick", json!({"hosts": ["h2", "h4"]})), ("rest", json!({"percent": 100}))],
        _ => vec![
            ("third", json!({"percent": 34})),
            ("two-thirds", json!({"percent": 67})),
            ("rest", json!({"group": "g1"})),
        ],
    }
}

#[derive(Clone, Debug, PartialEq)]
struct ModelDeployment {
    release: String,
    waves: Vec<(&'static str, serde_json::Value, WaveState)>,
    state: DeploymentState,
    /// Hosts selected by its waves so far, each counted when its wave started.
    selected_total: u64,
    /// Hosts each wave selected when it started, by wave index.
    wave_selected: BTreeMap<usize, u64>,
    /// Converged and failed counts of each wave, as they were when the deployment ended.
    ended_counts: Option<BTreeMap<usize, (u64, u64)>>,
    /// The guards its events overrode, in order.
    overrides: Vec<&'static str>,
}

/// What a host should run, the deployment wave that set it (`None` after a rollback), and the
/// seq of the event that set it.
type ModelDesired = (String, Option<(String, usize)>, u64);

#[derive(Default)]
struct Model {
    releases: BTreeMap<String, bool>,
    hosts: BTreeMap<String, (bool, String)>,
    desired: BTreeMap<String, ModelDesired>,
    observed: BTreeMap<String, (String, String)>,
    /// The release each host last reported running.
    running: BTreeMap<String, String>,
    /// Each host's failed install since it last reported running: release and attempt.
    failures: BTreeMap<String, (String, u32)>,
    /// Releases some host reported running.
    ran: std::collections::BTreeSet<String>,
    deployments: BTreeMap<String, ModelDeployment>,
    completed: Vec<String>,
    active: Option<String>,
    frozen: bool,
    /// (host, seq, release): each change of a host's desired release to another release.
    directives: Vec<(String, u64, String)>,
}

type Verdict = Result<(), &'static str>;

impl Model {
    fn deployable(&self, release: &str) -> Verdict {
        match self.releases.get(release) {
            None => Err("unknown_release"),
            Some(true) => Err("release_blocked"),
            Some(false) => Ok(()),
        }
    }

    /// A wave's counters as the model defines them: the hosts it selected, and of the hosts whose
    /// desired release this wave sets, those running it (converged) and those that failed it;
    /// once the deployment has ended, what they were then.
    fn wave_counts(&self, deployment: &str, wave: usize) -> (u64, u64, u64) {
        let selected = self.deployments[deployment].wave_selected.get(&wave).copied().unwrap_or(0);
        if let Some(ended) = &self.deployments[deployment].ended_counts {
            let (converged, failed) = ended.get(&wave).copied().unwrap_or_default();
            return (selected, converged, failed);
        }
        let (mut converged, mut failed) = (0, 0);
        for (host, (release, set_by, _)) in &self.desired {
            // Only registered hosts count.
            if set_by.as_ref() != Some(&(deployment.to_string(), wave)) || !self.hosts[host].0 {
                continue;
            }
            match self.observed.get(host) {
                Some((observed, status)) if observed == release && status == "running" => converged += 1,
                Some((observed, status)) if observed == release && status == "failed" => failed += 1,
                _ => {}
            }
        }
        (selected, converged, failed)
    }

    /// A guard: `Err(code)` unless forced, in which case the override is noted.
    fn guard(overrides: &mut Vec<&'static str>, code: &'static str, force: bool) -> Verdict {
        if !force {
            return Err(code);
        }
        overrides.push(code);
        Ok(())
    }

    /// Whether a wave's selector is a group no registered host belongs to.
    fn empty_group(&self, selector: &serde_json::Value) -> bool {
        selector.get("group").is_some_and(|group| {
            !self.hosts.values().any(|(registered, of)| *registered && of == group.as_str().unwrap())
        })
    }

    fn registered(&self) -> Vec<String> {
        self.hosts.iter().filter(|(_, (registered, _))| *registered).map(|(host, _)| host.clone()).collect()
    }

    /// Freezes the counters of deployment `id` as it ends.
    fn end(&mut self, id: &str, state: DeploymentState) {
        let waves = self.deployments[id].waves.len();
        let counts = (0..waves)
            .map(|wave| {
                let (_, converged, failed) = self.wave_counts(id, wave);
                (wave, (converged, failed))
            })
            .collect();
        let deployment = self.deployments.get_mut(id).unwrap();
        deployment.ended_counts = Some(counts);
        deployment.state = state;
    }

    /// Sets a host's desired release the naive way, noting a directive when the release changes.
    fn assign(&mut self, host: &str, desired: ModelDesired) {
        let before = self.desired.get(host).map(|(release, _, _)| release.clone());
        if before.as_deref() != Some(desired.0.as_str()) {
            self.directives.push((host.to_string(), desired.2, desired.0.clone()));
        }
        self.desired.insert(host.to_string(), desired);
    }

    /// Applies `op` as the event at `seq` (if it is accepted).
    fn apply(&mut self, op: &Op, seq: u64) -> Verdict {
        match op {
            Op::CreateRelease(r) => {
                let release = RELEASES[*r].to_string();
                if self.releases.contains_key(&release) {
                    return Err("release_exists");
                }
                self.releases.insert(release, false);
            }
            Op::Block(r, block) => {
                let blocked = self.releases.get_mut(RELEASES[*r]).ok_or("unknown_release")?;
                match (*block, *blocked) {
                    (true, true) => return Err("release_already_blocked"),
                    (false, false) => return Err("release_not_blocked"),
                    _ => *blocked = *block,
                }
            }
            Op::Register(h, g) => {
                let host = HOSTS[*h].to_string();
                let group = format!("g{g}");
                // A registration that begins anew (new host, back after a deregistration, or
                // another group) is reached only by what comes after it.
                if self.hosts.get(&host) != Some(&(true, group.clone())) {
                    self.desired.remove(&host);
                }
                self.hosts.insert(host, (true, group));
            }
            // A host that leaves keeps, in the views, the desired release it had then.
            Op::Deregister(h) => match self.hosts.get_mut(HOSTS[*h]) {
                Some((registered @ true, _)) => *registered = false,
                _ => return Err("unknown_host"),
            },
            Op::Start(d, r, t, force) => {
                let id = DEPLOYMENTS[*d].to_string();
                if self.deployments.contains_key(&id) {
                    return Err("deployment_exists");
                }
                self.deployable(RELEASES[*r])?;
                if self.active.is_some() {
                    return Err("deployment_active");
                }
                if self.frozen {
                    return Err("frozen");
                }
                let mut overrides = Vec::new();
                if self.registered().is_empty() {
                    Self::guard(&mut overrides, "no_hosts", *force)?;
                } else if template(*t).iter().any(|(_, selector)| self.empty_group(selector)) {
                    Self::guard(&mut overrides, "selector_matches_nobody", *force)?;
                }
                let waves =
                    template(*t).into_iter().map(|(name, selector)| (name, selector, WaveState::Pending)).collect();
                self.deployments.insert(
                    id.clone(),
                    ModelDeployment {
                        release: RELEASES[*r].into(),
                        waves,
                        state: DeploymentState::Active,
                        selected_total: 0,
                        wave_selected: BTreeMap::new(),
                        ended_counts: None,
                        overrides,
                    },
                );
                self.active = Some(id);
            }
            Op::StartWave(d, w, force) => {
                let id = DEPLOYMENTS[*d];
                let deployment = self.deployments.get(id).ok_or("unknown_deployment")?.clone();
                if deployment.state != DeploymentState::Active {
                    return Err("deployment_not_active");
                }
                let name = wave_name(&deployment, *w);
                let index = deployment.waves.iter().position(|wave| wave.0 == name).ok_or("unknown_wave")?;
                if deployment.waves[..index].iter().any(|wave| wave.2 != WaveState::Completed)
                    || deployment.waves[index].2 != WaveState::Pending
                {
                    return Err("wave_out_of_order");
                }
                if self.frozen {
                    return Err("frozen");
                }
                self.deployable(&deployment.release)?;
                let mut overrides = deployment.overrides.clone();
                if self.empty_group(&deployment.waves[index].1) {
                    Self::guard(&mut overrides, "selector_matches_nobody", *force)?;
                }
                let registered = self.registered();
                // Hosts whose desired release an earlier wave of this deployment sets are not
                // selected again.
                // (Only registered hosts are candidates: what a host that left keeps does not count.)
                let held = |host: &String| {
                    self.desired.get(host).and_then(|(_, set_by, _)| set_by.as_ref()).is_some_and(|(by, _)| by == id)
                };
                let fresh: Vec<String> = registered.iter().filter(|host| !held(host)).cloned().collect();
                let selector = &deployment.waves[index].1;
                let chosen: Vec<String> = if let Some(group) = selector.get("group") {
                    fresh.iter().filter(|host| self.hosts[*host].1 == group.as_str().unwrap()).cloned().collect()
                } else if let Some(100) = selector.get("percent").and_then(|percent| percent.as_u64()) {
                    fresh
                } else if let Some(percent) = selector.get("percent") {
                    let wanted = (registered.len() as u64 * percent.as_u64().unwrap()).div_ceil(100);
                    let missing = wanted.saturating_sub(deployment.selected_total) as usize;
                    fresh.into_iter().take(missing).collect()
                } else {
                    let names: Vec<String> =
                        selector["hosts"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
                    if names.iter().any(|name| !registered.contains(name)) {
                        return Err("unknown_host");
                    }
                    let mut names: Vec<String> = names.into_iter().filter(|name| !held(name)).collect();
                    names.sort();
                    names.dedup();
                    names
                };
                let deployment = self.deployments.get_mut(id).unwrap();
                deployment.overrides = overrides;
                deployment.waves[index].2 = WaveState::Started;
                deployment.wave_selected.insert(index, chosen.len() as u64);
                deployment.selected_total += chosen.len() as u64;
                let release = deployment.release.clone();
                for host in chosen {
                    self.assign(&host, (release.clone(), Some((id.to_string(), index)), seq));
                }
            }
            Op::CompleteWave(d, w, force) => {
                let id = DEPLOYMENTS[*d];
                let deployment = self.deployments.get(id).ok_or("unknown_deployment")?;
                if deployment.state != DeploymentState::Active {
                    return Err("deployment_not_active");
                }
                let name = wave_name(deployment, *w);
                let index = deployment.waves.iter().position(|wave| wave.0 == name).ok_or("unknown_wave")?;
                match deployment.waves[index].2 {
                    WaveState::Pending => return Err("wave_not_started"),
                    WaveState::Completed => return Err("wave_already_completed"),
                    WaveState::Started => {}
                }
                let mut overrides = deployment.overrides.clone();
                if self.wave_counts(id, index).2 > 0 {
                    Self::guard(&mut overrides, "hosts_failed", *force)?;
                }
                let deployment = self.deployments.get_mut(id).unwrap();
                deployment.overrides = overrides;
                deployment.waves[index].2 = WaveState::Completed;
            }
            Op::Complete(d, _) | Op::Abort(d) => {
                let id = DEPLOYMENTS[*d].to_string();
                let deployment = self.deployments.get(&id).ok_or("unknown_deployment")?;
                if deployment.state != DeploymentState::Active {
                    return Err("deployment_not_active");
                }
                if let Op::Complete(_, force) = op {
                    if deployment.waves.iter().any(|wave| wave.2 != WaveState::Completed) {
                        return Err("waves_incomplete");
                    }
                    let failed: u64 = (0..deployment.waves.len()).map(|wave| self.wave_counts(&id, wave).2).sum();
                    let mut overrides = deployment.overrides.clone();
                    if failed > 0 {
                        Self::guard(&mut overrides, "hosts_failed", *force)?;
                    }
                    self.deployments.get_mut(&id).unwrap().overrides = overrides;
                    self.end(&id, DeploymentState::Completed);
                    self.completed.push(id);
                } else {
                    self.end(&id, DeploymentState::Aborted);
                }
                self.active = None;
            }
            Op::Rollback(release) => {
                let from = match &self.active {
                    Some(id) => Some(self.deployments[id].release.clone()),
                    None => self.completed.last().map(|id| self.deployments[id].release.clone()),
                };
                let target = match release {
                    Some(r) => {
                        self.deployable(RELEASES[*r])?;
                        RELEASES[*r].to_string()
                    }
                    None => {
                        let from = from.ok_or("no_rollback_target")?;
                        // Only a release some host reported running.
                        self.completed
                            .iter()
                            .rev()
                            .map(|id| self.deployments[id].release.clone())
                            .filter(|release| self.ran.contains(release))
                            .find(|release| *release != from && !self.releases[release])
                            .ok_or("no_rollback_target")?
                    }
                };
                if let Some(id) = self.active.take() {
                    self.end(&id, DeploymentState::Aborted);
                }
                for host in self.registered() {
                    self.assign(&host, (target.clone(), None, seq));
                }
            }
            Op::Report(h, r, s) => {
                let host = HOSTS[*h].to_string();
                if !self.hosts.get(&host).is_some_and(|(registered, _)| *registered) {
                    return Err("unknown_host");
                }
                let (status, release) = (STATUSES[*s], RELEASES[*r].to_string());
                match status {
                    "running" => {
                        self.ran.insert(release.clone());
                        self.running.insert(host.clone(), release.clone());
                        self.failures.remove(&host);
                    }
                    "failed" => {
                        let attempt = match self.failures.get(&host) {
                            Some((failed, attempt)) if *failed == release => attempt + 1,
                            _ => 1,
                        };
                        self.failures.insert(host.clone(), (release.clone(), attempt));
                    }
                    _ => {}
                }
                self.observed.insert(host, (release, status.to_string()));
            }
            Op::Freeze(start) => match (*start, self.frozen) {
                (true, true) => return Err("already_frozen"),
                (false, false) => return Err("not_frozen"),
                _ => self.frozen = *start,
            },
        }
        Ok(())
    }
}

/// Wave `w` of the template, or a name the deployment lacks (to exercise `unknown_wave`).
fn wave_name(deployment: &ModelDeployment, w: usize) -> &'static str {
    deployment.waves.get(w).map(|wave| wave.0).unwrap_or("nope")
}

fn proposal(op: &Op, model: &Model, counter: usize) -> ProposedEvent {
    let id = format!("e{counter}");
    let event = |event_type: &str, fields: &[(&str, &str)], data: serde_json::Value| {
        let mut event = ProposedEvent::new(id.clone(), event_type);
        for (name, value) in fields {
            let value = Some(value.to_string());
            match *name {
                "service" => event.service = value,
                "env" => event.env = value,
                "host" => event.host = value,
                "release" => event.release = value,
                _ => event.deployment = value,
            }
        }
        event.data = fleetlog_raft::domain::canonical::to_canonical_string(&data).unwrap();
        event
    };
    let env = [("service", "svc"), ("env", "prod")];
    match op {
        Op::CreateRelease(r) => event("release.created", &[("service", "svc"), ("release", RELEASES[*r])], json!({})),
        Op::Block(r, block) => event(
            if *block { "release.blocked" } else { "release.unblocked" },
            &[("service", "svc"), ("release", RELEASES[*r])],
            json!({"reason": "test"}),
        ),
        Op::Register(h, g) => {
            event("target.registered", &[env[0], env[1], ("host", HOSTS[*h])], json!({"group": format!("g{g}")}))
        }
        Op::Deregister(h) => event("target.deregistered", &[env[0], env[1], ("host", HOSTS[*h])], json!({})),
        Op::Start(d, r, t, force) => {
            let waves: Vec<serde_json::Value> = template(*t)
                .into_iter()
                .map(|(name, selector)| {
                    let mut wave = selector.as_object().unwrap().clone();
                    wave.insert("name".into(), json!(name));
                    serde_json::Value::Object(wave)
                })
                .collect();
            event(
                "deployment.started",
                &[env[0], env[1], ("deployment", DEPLOYMENTS[*d]), ("release", RELEASES[*r])],
                with_force(json!({ "waves": waves }), *force),
            )
        }
        Op::StartWave(d, w, force) | Op::CompleteWave(d, w, force) => {
            let name =
                model.deployments.get(DEPLOYMENTS[*d]).map(|deployment| wave_name(deployment, *w)).unwrap_or("all");
            let event_type = if matches!(op, Op::StartWave(..)) { "wave.started" } else { "wave.completed" };
            event(event_type, &[("deployment", DEPLOYMENTS[*d])], with_force(json!({ "wave": name }), *force))
        }
        Op::Complete(d, force) => {
            event("deployment.completed", &[("deployment", DEPLOYMENTS[*d])], with_force(json!({}), *force))
        }
        Op::Abort(d) => event("deployment.aborted", &[("deployment", DEPLOYMENTS[*d])], json!({"reason": "test"})),
        Op::Rollback(release) => {
            let mut fields = env.to_vec();
            if let Some(r) = release {
                fields.push(("release", RELEASES[*r]));
            }
            event("rollback", &fields, json!({"reason": "test"}))
        }
        Op::Report(h, r, s) => event(
            "host.reported",
            &[env[0], env[1], ("host", HOSTS[*h]), ("release", RELEASES[*r])],
            json!({"status": STATUSES[*s], "applied_seq": 0}),
        ),
        Op::Freeze(start) => {
            event(if *start { "freeze.started" } else { "freeze.ended" }, &env, json!({"reason": "test"}))
        }
    }
}

/// `data` with a force reason when `force`.
fn with_force(mut data: serde_json::Value, force: bool) -> serde_json::Value {
    if force {
        data["force_reason"] = json!("known flaky host");
    }
    data
}

/// Every host's desired release as the ledger resolves it as of `seq` (now when `None`).
fn resolved(kv: &MemoryKv, at_seq: Option<u64>) -> BTreeMap<String, ModelDesired> {
    let mut desired = BTreeMap::new();
    for host in HOSTS {
        for record in views::host_state(kv, host, at_seq).unwrap() {
            if let Some(d) = record.desired {
                desired
                    .insert(host.to_string(), (d.release, d.deployment.zip(d.wave.map(|wave| wave as usize)), d.seq));
            }
        }
    }
    desired
}

fn check_views(kv: &MemoryKv, model: &Model) {
    assert_eq!(resolved(kv, None), model.desired, "desired releases, waves and seqs of every host");
    for host in HOSTS {
        let record = records::host(kv, "svc", "prod", host).unwrap();
        match model.hosts.get(host) {
            None => assert!(record.is_none(), "host {host} should not exist"),
            Some((registered, group)) => {
                let record = record.expect("host exists");
                assert_eq!(record.registered, *registered, "host {host} registration");
                assert_eq!(record.group.as_deref(), Some(group.as_str()));
                assert_eq!(
                    record.observed.map(|o| (o.release, o.status.as_str().to_string())),
                    model.observed.get(host).cloned(),
                    "host {host} observed"
                );
                assert_eq!(record.running.as_ref(), model.running.get(host), "host {host} runs");
                assert_eq!(
                    record.failure.map(|failure| (failure.release, failure.attempt)),
                    model.failures.get(host).cloned(),
                    "host {host} failed install"
                );
            }
        }
    }
    for (id, expected) in &model.deployments {
        let record = records::deployment(kv, id).unwrap().expect("deployment exists");
        assert_eq!(record.state, expected.state, "deployment {id} state");
        let waves: Vec<WaveState> = record.waves.iter().map(|wave| wave.state).collect();
        let expected_waves: Vec<WaveState> = expected.waves.iter().map(|wave| wave.2).collect();
        assert_eq!(waves, expected_waves, "deployment {id} waves");
        assert_eq!(record.selected_total, expected.selected_total, "deployment {id} selected");
        let overrides: Vec<&str> = record.overrides.iter().map(|item| item.guard.as_str()).collect();
        assert_eq!(overrides, expected.overrides, "deployment {id} guards overridden");
        for (index, wave) in record.waves.iter().enumerate() {
            let counts = (wave.selected, wave.converged, wave.failed);
            assert_eq!(
                counts,
                model.wave_counts(id, index),
                "deployment {id} wave {index}: selected, converged, failed"
            );
        }
    }
    for (release, blocked) in &model.releases {
        let record = records::release(kv, "svc", release).unwrap().expect("release exists");
        assert_eq!(record.blocked.is_some(), *blocked, "release {release} blocked");
    }
    let environment = records::environment(kv, "svc", "prod").unwrap();
    assert_eq!(environment.freeze.is_some(), model.frozen);
    assert_eq!(environment.active_deployment, model.active);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn ledger_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut kv = MemoryKv::new();
        let mut model = Model::default();
        let mut appended = 0u64;
        // The model's desired releases after each appended event, by seq.
        let mut past = vec![BTreeMap::new()];
        for (counter, op) in ops.iter().enumerate() {
            let event = proposal(op, &model, counter);
            let command = LedgerCommand {
                time_micros: 1_000 + counter as i64,
                requests: vec![AppendRequest { events: vec![event], expected_version: ExpectedVersion::Any, actor: "prop".into() }],
                identity: None,
            };
            let mut overlay = Overlay::new(&kv);
            let outcome = apply_command(&mut overlay, &command).unwrap().outcomes.remove(0);
            let writes = overlay.into_writes();
            let verdict = model.apply(op, appended + 1);
            match (&outcome, verdict) {
                (AppendOutcome::Appended { .. }, Ok(())) => {
                    kv.apply(writes);
                    appended += 1;
                    past.push(model.desired.clone());
                }
                (AppendOutcome::Rejected(rejection), Err(code)) => {
                    prop_assert_eq!(rejection.code.as_str(), code, "op {:?}", op);
                }
                (outcome, verdict) => prop_assert!(false, "op {:?}: ledger said {:?}, model said {:?}", op, outcome, verdict),
            }
            check_views(&kv, &model);
        }
        // As of every past seq, every host as the model had it then.
        for (seq, desired) in past.iter().enumerate() {
            prop_assert_eq!(&resolved(&kv, Some(seq as u64)), desired, "as of seq {}", seq);
        }
        // The directives an agent catching up from disk gets, from any seq on.
        for host in HOSTS {
            let expected: Vec<(u64, String)> = model
                .directives
                .iter()
                .filter(|(name, _, _)| name == host)
                .map(|(_, seq, release)| (*seq, release.clone()))
                .collect();
            let (directives, next) = views::directives_between(&kv, host, 1, appended, 10_000).unwrap();
            prop_assert_eq!(next, appended + 1);
            let got: Vec<(u64, String)> = directives.into_iter().map(|d| (d.seq, d.release)).collect();
            prop_assert_eq!(&got, &expected, "directives of {}", host);
            let from = appended / 2 + 1;
            let (later, _) = views::directives_between(&kv, host, from, appended, 10_000).unwrap();
            let later: Vec<u64> = later.into_iter().map(|d| d.seq).collect();
            let expected_later: Vec<u64> = expected.iter().map(|(seq, _)| *seq).filter(|seq| *seq >= from).collect();
            prop_assert_eq!(later, expected_later, "directives of {} from seq {}", host, from);
        }
        let page = views::read_events(&kv, &views::EventFilter::default(), 1, 10_000).unwrap();
        prop_assert_eq!(page.events.len() as u64, appended);
        let mut previous = GENESIS_HASH;
        for event in &page.events {
            prop_assert_eq!(event.prev_hash, previous);
            prop_assert_eq!(event.hash, event.compute_hash());
            previous = event.hash;
        }
    }
}
