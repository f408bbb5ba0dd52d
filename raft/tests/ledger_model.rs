//! Property test: random command sequences applied to the ledger agree with a small, obviously
//! correct model of the rules (same accept/refuse decisions, same views), and the chain verifies.

use std::collections::{BTreeMap, BTreeSet};

use fleetlog_raft::event::{AppendOutcome, AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent, GENESIS_HASH};
use fleetlog_raft::kv::{MemoryKv, Overlay};
use fleetlog_raft::ledger::apply_command;
use fleetlog_raft::records::{self, DeploymentState, WaveState};
use fleetlog_raft::views;
use proptest::prelude::*;
use serde_json::json;

const HOSTS: [&str; 5] = ["h1", "h2", "h3", "h4", "h5"];
const RELEASES: [&str; 3] = ["r1", "r2", "r3"];
const DEPLOYMENTS: [&str; 4] = ["d1", "d2", "d3", "d4"];
const STATUSES: [&str; 3] = ["applying", "running", "failed"];

#[derive(Clone, Debug)]
enum Op {
    CreateRelease(usize),
    Block(usize, bool),
    Register(usize, usize),
    Deregister(usize),
    Start(usize, usize, usize),
    StartWave(usize, usize),
    CompleteWave(usize, usize),
    Complete(usize),
    Abort(usize),
    Rollback(Option<usize>),
    Report(usize, usize, usize),
    Freeze(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize).prop_map(Op::CreateRelease),
        (0..3usize, any::<bool>()).prop_map(|(r, b)| Op::Block(r, b)),
        (0..5usize, 0..2usize).prop_map(|(h, g)| Op::Register(h, g)),
        (0..5usize).prop_map(Op::Deregister),
        (0..4usize, 0..3usize, 0..3usize).prop_map(|(d, r, t)| Op::Start(d, r, t)),
        (0..4usize, 0..3usize).prop_map(|(d, w)| Op::StartWave(d, w)),
        (0..4usize, 0..3usize).prop_map(|(d, w)| Op::CompleteWave(d, w)),
        (0..4usize).prop_map(Op::Complete),
        (0..4usize).prop_map(Op::Abort),
        proptest::option::of(0..3usize).prop_map(Op::Rollback),
        (0..5usize, 0..3usize, 0..3usize).prop_map(|(h, r, s)| Op::Report(h, r, s)),
        any::<bool>().prop_map(Op::Freeze),
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
        _ => vec![("pick", json!({"hosts": ["h2", "h4"]})), ("rest", json!({"percent": 100}))],
    }
}

#[derive(Clone, Debug, PartialEq)]
struct ModelDeployment {
    release: String,
    waves: Vec<(&'static str, serde_json::Value, WaveState)>,
    state: DeploymentState,
    selected: BTreeSet<String>,
    /// Hosts each wave selected when it started, by wave index.
    wave_selected: BTreeMap<usize, u64>,
}

/// What a host should run, and the deployment wave that set it (`None` after a rollback).
type ModelDesired = (String, Option<(String, usize)>);

#[derive(Default)]
struct Model {
    releases: BTreeMap<String, bool>,
    hosts: BTreeMap<String, (bool, String)>,
    desired: BTreeMap<String, ModelDesired>,
    observed: BTreeMap<String, (String, String)>,
    deployments: BTreeMap<String, ModelDeployment>,
    completed: Vec<String>,
    active: Option<String>,
    frozen: bool,
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
    /// desired release this wave set, those running it (converged) and those that failed it.
    fn wave_counts(&self, deployment: &str, wave: usize) -> (u64, u64, u64) {
        let selected = self.deployments[deployment].wave_selected.get(&wave).copied().unwrap_or(0);
        let (mut converged, mut failed) = (0, 0);
        for (host, (release, set_by)) in &self.desired {
            if set_by.as_ref() != Some(&(deployment.to_string(), wave)) {
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

    fn registered(&self) -> Vec<String> {
        self.hosts.iter().filter(|(_, (registered, _))| *registered).map(|(host, _)| host.clone()).collect()
    }

    fn apply(&mut self, op: &Op) -> Verdict {
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
                self.hosts.insert(HOSTS[*h].to_string(), (true, format!("g{g}")));
            }
            Op::Deregister(h) => match self.hosts.get_mut(HOSTS[*h]) {
                Some((registered @ true, _)) => *registered = false,
                _ => return Err("unknown_host"),
            },
            Op::Start(d, r, t) => {
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
                let waves =
                    template(*t).into_iter().map(|(name, selector)| (name, selector, WaveState::Pending)).collect();
                self.deployments.insert(
                    id.clone(),
                    ModelDeployment {
                        release: RELEASES[*r].into(),
                        waves,
                        state: DeploymentState::Active,
                        selected: BTreeSet::new(),
                        wave_selected: BTreeMap::new(),
                    },
                );
                self.active = Some(id);
            }
            Op::StartWave(d, w) => {
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
                let registered = self.registered();
                let fresh: Vec<String> =
                    registered.iter().filter(|host| !deployment.selected.contains(*host)).cloned().collect();
                let selector = &deployment.waves[index].1;
                let chosen: Vec<String> = if let Some(group) = selector.get("group") {
                    fresh.iter().filter(|host| self.hosts[*host].1 == group.as_str().unwrap()).cloned().collect()
                } else if let Some(percent) = selector.get("percent") {
                    let wanted = (registered.len() as u64 * percent.as_u64().unwrap()).div_ceil(100);
                    let missing = wanted.saturating_sub(deployment.selected.len() as u64) as usize;
                    fresh.into_iter().take(missing).collect()
                } else {
                    let names: Vec<String> =
                        selector["hosts"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
                    if names.iter().any(|name| !registered.contains(name)) {
                        return Err("unknown_host");
                    }
                    names.into_iter().filter(|name| !deployment.selected.contains(name)).collect()
                };
                let deployment = self.deployments.get_mut(id).unwrap();
                deployment.waves[index].2 = WaveState::Started;
                deployment.wave_selected.insert(index, chosen.len() as u64);
                for host in chosen {
                    self.desired.insert(host.clone(), (deployment.release.clone(), Some((id.to_string(), index))));
                    deployment.selected.insert(host);
                }
            }
            Op::CompleteWave(d, w) => {
                let deployment = self.deployments.get_mut(DEPLOYMENTS[*d]).ok_or("unknown_deployment")?;
                if deployment.state != DeploymentState::Active {
                    return Err("deployment_not_active");
                }
                let name = wave_name(deployment, *w);
                let wave = deployment.waves.iter_mut().find(|wave| wave.0 == name).ok_or("unknown_wave")?;
                match wave.2 {
                    WaveState::Pending => return Err("wave_not_started"),
                    WaveState::Completed => return Err("wave_already_completed"),
                    WaveState::Started => wave.2 = WaveState::Completed,
                }
            }
            Op::Complete(d) | Op::Abort(d) => {
                let id = DEPLOYMENTS[*d].to_string();
                let deployment = self.deployments.get_mut(&id).ok_or("unknown_deployment")?;
                if deployment.state != DeploymentState::Active {
                    return Err("deployment_not_active");
                }
                if matches!(op, Op::Complete(_)) {
                    if deployment.waves.iter().any(|wave| wave.2 != WaveState::Completed) {
                        return Err("waves_incomplete");
                    }
                    deployment.state = DeploymentState::Completed;
                    self.completed.push(id);
                } else {
                    deployment.state = DeploymentState::Aborted;
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
                        self.completed
                            .iter()
                            .rev()
                            .map(|id| self.deployments[id].release.clone())
                            .find(|release| *release != from && !self.releases[release])
                            .ok_or("no_rollback_target")?
                    }
                };
                if let Some(id) = self.active.take() {
                    self.deployments.get_mut(&id).unwrap().state = DeploymentState::Aborted;
                }
                for host in self.registered() {
                    self.desired.insert(host, (target.clone(), None));
                }
            }
            Op::Report(h, r, s) => {
                let host = HOSTS[*h].to_string();
                if !self.hosts.get(&host).is_some_and(|(registered, _)| *registered) {
                    return Err("unknown_host");
                }
                let status = STATUSES[*s];
                self.observed.insert(host, (RELEASES[*r].to_string(), status.to_string()));
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
        event.data = fleetlog_raft::canonical::to_canonical_string(&data).unwrap();
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
        Op::Start(d, r, t) => {
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
                json!({ "waves": waves }),
            )
        }
        Op::StartWave(d, w) | Op::CompleteWave(d, w) => {
            let name =
                model.deployments.get(DEPLOYMENTS[*d]).map(|deployment| wave_name(deployment, *w)).unwrap_or("all");
            let event_type = if matches!(op, Op::StartWave(..)) { "wave.started" } else { "wave.completed" };
            event(event_type, &[("deployment", DEPLOYMENTS[*d])], json!({ "wave": name }))
        }
        Op::Complete(d) => event("deployment.completed", &[("deployment", DEPLOYMENTS[*d])], json!({})),
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

fn check_views(kv: &MemoryKv, model: &Model) {
    for host in HOSTS {
        let record = records::host(kv, "svc", "prod", host).unwrap();
        match model.hosts.get(host) {
            None => assert!(record.is_none(), "host {host} should not exist"),
            Some((registered, group)) => {
                let record = record.expect("host exists");
                assert_eq!(record.registered, *registered, "host {host} registration");
                assert_eq!(record.group.as_deref(), Some(group.as_str()));
                let desired = record.desired.map(|d| (d.release, d.deployment.zip(d.wave.map(|wave| wave as usize))));
                assert_eq!(desired, model.desired.get(host).cloned(), "host {host} desired release and wave");
                assert_eq!(
                    record.observed.map(|o| (o.release, o.status.as_str().to_string())),
                    model.observed.get(host).cloned(),
                    "host {host} observed"
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
        assert_eq!(record.selected_total, expected.selected.len() as u64, "deployment {id} selected");
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
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn ledger_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut kv = MemoryKv::new();
        let mut model = Model::default();
        let mut appended = 0u64;
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
            let verdict = model.apply(op);
            match (&outcome, verdict) {
                (AppendOutcome::Appended { .. }, Ok(())) => {
                    kv.apply(writes);
                    appended += 1;
                }
                (AppendOutcome::Rejected(rejection), Err(code)) => {
                    prop_assert_eq!(rejection.code.as_str(), code, "op {:?}", op);
                }
                (outcome, verdict) => prop_assert!(false, "op {:?}: ledger said {:?}, model said {:?}", op, outcome, verdict),
            }
            check_views(&kv, &model);
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
