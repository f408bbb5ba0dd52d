//! Property test: random command sequences applied to the ledger agree with a small, obviously
//! correct model of the rules (`fleetlog_raft::model`: same accept/refuse decisions, same views),
//! and the chain verifies.
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
use fleetlog_raft::domain::views;
use fleetlog_raft::model::{resolved_desired, LedgerModel};
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
    /// Halt (true) or resume (false) a deployment.
    Halt(usize, bool),
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
        1 => (0..4usize, any::<bool>()).prop_map(|(d, h)| Op::Halt(d, h)),
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

/// Wave `w` of the deployment's template, or a name the deployment lacks (to exercise
/// `unknown_wave`).
fn wave_name(model: &LedgerModel, deployment: usize, w: usize) -> String {
    match model.deployments.get(DEPLOYMENTS[deployment]) {
        Some(deployment) => deployment.waves.get(w).map(|wave| wave.0.clone()).unwrap_or_else(|| "nope".into()),
        None => "all".into(),
    }
}

fn proposal(op: &Op, model: &LedgerModel, counter: usize) -> ProposedEvent {
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
            let name = wave_name(model, *d, *w);
            let event_type = if matches!(op, Op::StartWave(..)) { "wave.started" } else { "wave.completed" };
            event(event_type, &[("deployment", DEPLOYMENTS[*d])], with_force(json!({ "wave": name }), *force))
        }
        Op::Complete(d, force) => {
            event("deployment.completed", &[("deployment", DEPLOYMENTS[*d])], with_force(json!({}), *force))
        }
        Op::Abort(d) => event("deployment.aborted", &[("deployment", DEPLOYMENTS[*d])], json!({"reason": "test"})),
        Op::Halt(d, halting) => event(
            if *halting { "deployment.halted" } else { "deployment.resumed" },
            &[("deployment", DEPLOYMENTS[*d])],
            json!({"reason": "test"}),
        ),
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

fn check_views(kv: &MemoryKv, model: &LedgerModel) {
    let differences = model.differences(kv, &HOSTS).unwrap();
    assert!(differences.is_empty(), "the ledger's views differ from the model's: {differences:#?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn ledger_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut kv = MemoryKv::new();
        let mut model = LedgerModel::new("svc", "prod");
        let mut appended = 0u64;
        // The model's desired releases after each appended event, by seq.
        let mut past = vec![BTreeMap::new()];
        for (counter, op) in ops.iter().enumerate() {
            let event = proposal(op, &model, counter);
            let command = LedgerCommand {
                time_micros: 1_000 + counter as i64,
                requests: vec![AppendRequest { events: vec![event.clone()], expected_version: ExpectedVersion::Any, actor: "prop".into() }],
                identity: None,
            };
            let mut overlay = Overlay::new(&kv);
            let outcome = apply_command(&mut overlay, &command).unwrap().outcomes.remove(0);
            let writes = overlay.into_writes();
            let verdict = model.apply(&event, appended + 1);
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
            prop_assert_eq!(&resolved_desired(&kv, &HOSTS, Some(seq as u64)).unwrap(), desired, "as of seq {}", seq);
        }
        // The directives an agent catching up from disk gets, from any seq on.
        for host in HOSTS {
            let expected = model.directives_of(host);
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
