//! Table-driven tests of every domain rule, run on the pure ledger over an in-memory store.

use serde_json::{json, Value};

use super::*;
use crate::domain::event::{ProposedEvent, GENESIS_HASH};
use crate::domain::kv::MemoryKv;
use crate::domain::records::{DeploymentState, HostRecord, WaveState};
use crate::domain::views;

/// A ledger over plain memory with a controllable clock.
struct Bench {
    kv: MemoryKv,
    time_micros: i64,
    next_id: u64,
}

impl Bench {
    fn new() -> Bench {
        Bench { kv: MemoryKv::new(), time_micros: 1_000_000, next_id: 0 }
    }

    fn request(&mut self, events: Vec<ProposedEvent>, expected: ExpectedVersion) -> AppendOutcome {
        let command = LedgerCommand {
            time_micros: self.time_micros,
            requests: vec![AppendRequest { events, expected_version: expected, actor: "alice".into() }],
            identity: None,
        };
        self.time_micros += 1_000;
        let mut overlay = Overlay::new(&self.kv);
        let applied = apply_command(&mut overlay, &command).expect("no storage failure in memory");
        let writes = overlay.into_writes();
        self.kv.apply(writes);
        applied.outcomes.into_iter().next().unwrap()
    }

    fn append(&mut self, events: Vec<ProposedEvent>) -> AppendOutcome {
        self.request(events, ExpectedVersion::Any)
    }

    fn ok(&mut self, event: ProposedEvent) -> u64 {
        match self.append(vec![event.clone()]) {
            AppendOutcome::Appended { events, duplicate: false } => events[0].seq,
            other => panic!("{} should be appended, got {other:?}", event.event_type),
        }
    }

    fn refused(&mut self, event: ProposedEvent) -> RejectionCode {
        let before = self.kv.len();
        match self.append(vec![event.clone()]) {
            AppendOutcome::Rejected(rejection) => {
                assert_eq!(self.kv.len(), before, "a rejected {} wrote something", event.event_type);
                rejection.code
            }
            other => panic!("{} should be refused, got {other:?}", event.event_type),
        }
    }

    fn event(&mut self, event_type: &str, fields: &[(&str, &str)], data: Value) -> ProposedEvent {
        self.next_id += 1;
        let mut event = ProposedEvent::new(format!("id-{}", self.next_id), event_type);
        for (name, value) in fields {
            let slot = match *name {
                "service" => &mut event.service,
                "env" => &mut event.env,
                "host" => &mut event.host,
                "release" => &mut event.release,
                "deployment" => &mut event.deployment,
                "stream" => &mut event.stream,
                other => panic!("unknown field {other}"),
            };
            *slot = Some(value.to_string());
        }
        event.data = crate::domain::canonical::to_canonical_string(&data).unwrap();
        event
    }

    /// The host in web/prod, its desired release resolved as every read does.
    fn host(&self, host: &str) -> HostRecord {
        let states = views::host_state(&self.kv, host, None).unwrap();
        states.into_iter().find(|state| state.service == "web" && state.env == "prod").expect("host exists")
    }

    fn desired(&self, host: &str) -> Option<String> {
        self.host(host).desired.map(|desired| desired.release)
    }

    fn deployment(&self, id: &str) -> records::DeploymentRecord {
        records::deployment(&self.kv, id).unwrap().expect("deployment exists")
    }

    // Builders for the common events of service "web", env "prod".

    fn release(&mut self, release: &str) -> ProposedEvent {
        self.event("release.created", &[("service", "web"), ("release", release)], json!({}))
    }

    fn register(&mut self, host: &str, group: &str) -> ProposedEvent {
        self.event("target.registered", &[("host", host), ("service", "web"), ("env", "prod")], json!({"group": group}))
    }

    fn start(&mut self, deployment: &str, release: &str, waves: Value) -> ProposedEvent {
        self.event(
            "deployment.started",
            &[("deployment", deployment), ("service", "web"), ("env", "prod"), ("release", release)],
            json!({ "waves": waves }),
        )
    }

    fn wave(&mut self, kind: &str, deployment: &str, wave: &str) -> ProposedEvent {
        self.event(kind, &[("deployment", deployment)], json!({ "wave": wave }))
    }

    fn complete(&mut self, deployment: &str) -> ProposedEvent {
        self.event("deployment.completed", &[("deployment", deployment)], json!({}))
    }

    fn rollback(&mut self, release: Option<&str>) -> ProposedEvent {
        let mut fields = vec![("service", "web"), ("env", "prod")];
        if let Some(release) = release {
            fields.push(("release", release));
        }
        self.event("rollback", &fields, json!({"reason": "errors up"}))
    }

    fn report(&mut self, host: &str, release: &str, status: &str) -> ProposedEvent {
        self.event(
            "host.reported",
            &[("host", host), ("service", "web"), ("env", "prod"), ("release", release)],
            json!({"status": status, "applied_seq": 1}),
        )
    }

    fn freeze(&mut self, kind: &str) -> ProposedEvent {
        self.event(kind, &[("service", "web"), ("env", "prod")], json!({"reason": "holiday"}))
    }

    /// Releases 1.0 and 2.0, hosts a..d (a, b in group "canary"), and 1.0 fully deployed.
    fn fleet() -> Bench {
        let mut bench = Bench::new();
        for release in ["1.0", "2.0"] {
            let event = bench.release(release);
            bench.ok(event);
        }
        for (host, group) in [("a", "canary"), ("b", "canary"), ("c", "main"), ("d", "main")] {
            let event = bench.register(host, group);
            bench.ok(event);
        }
        bench.deploy_fully("d1", "1.0");
        bench
    }

    /// Deploys `release` to every host and completes, with no host reporting anything.
    fn deploy_unreported(&mut self, deployment: &str, release: &str) {
        for event in [
            self.start(deployment, release, json!([{"name": "all", "percent": 100}])),
            self.wave("wave.started", deployment, "all"),
            self.wave("wave.completed", deployment, "all"),
            self.complete(deployment),
        ] {
            self.ok(event);
        }
    }

    fn deploy_fully(&mut self, deployment: &str, release: &str) {
        let event = self.start(deployment, release, json!([{"name": "all", "percent": 100}]));
        self.ok(event);
        let event = self.wave("wave.started", deployment, "all");
        self.ok(event);
        // Every host runs it, so it is a release a rollback may go back to.
        let hosts = views::fleet(&self.kv, Some("web"), Some("prod"), None).unwrap().hosts;
        for host in hosts {
            let event = self.report(&host.host, release, "running");
            self.ok(event);
        }
        let event = self.wave("wave.completed", deployment, "all");
        self.ok(event);
        let event = self.complete(deployment);
        self.ok(event);
    }
}

#[test]
fn every_domain_rule_refuses_what_it_should() {
    type Setup = fn(&mut Bench);
    type Make = fn(&mut Bench) -> ProposedEvent;
    let nothing: Setup = |_| {};
    let cases: Vec<(&str, Setup, Make, RejectionCode)> = vec![
        ("release exists", nothing, |b| b.release("1.0"), RejectionCode::ReleaseExists),
        (
            "block unknown release",
            nothing,
            |b| b.event("release.blocked", &[("service", "web"), ("release", "9")], json!({"reason": "bad"})),
            RejectionCode::UnknownRelease,
        ),
        (
            "block twice",
            |b| {
                let e = b.event("release.blocked", &[("service", "web"), ("release", "2.0")], json!({"reason": "bad"}));
                b.ok(e);
            },
            |b| b.event("release.blocked", &[("service", "web"), ("release", "2.0")], json!({"reason": "bad"})),
            RejectionCode::ReleaseAlreadyBlocked,
        ),
        (
            "unblock unblocked",
            nothing,
            |b| b.event("release.unblocked", &[("service", "web"), ("release", "2.0")], json!({"reason": "ok"})),
            RejectionCode::ReleaseNotBlocked,
        ),
        (
            "deregister unknown host",
            nothing,
            |b| b.event("target.deregistered", &[("host", "zz"), ("service", "web"), ("env", "prod")], json!({})),
            RejectionCode::UnknownHost,
        ),
        (
            "deploy unknown release",
            nothing,
            |b| b.start("d2", "9.9", json!([{"name": "all", "percent": 100}])),
            RejectionCode::UnknownRelease,
        ),
        (
            "deploy blocked release",
            |b| {
                let e = b.event("release.blocked", &[("service", "web"), ("release", "2.0")], json!({"reason": "cve"}));
                b.ok(e);
            },
            |b| b.start("d2", "2.0", json!([{"name": "all", "percent": 100}])),
            RejectionCode::ReleaseBlocked,
        ),
        (
            "second active deployment",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
                b.ok(e);
            },
            |b| b.start("d3", "2.0", json!([{"name": "all", "percent": 100}])),
            RejectionCode::DeploymentActive,
        ),
        (
            "deployment id reused",
            nothing,
            |b| b.start("d1", "2.0", json!([{"name": "all", "percent": 100}])),
            RejectionCode::DeploymentExists,
        ),
        (
            "deploy while frozen",
            |b| {
                let e = b.freeze("freeze.started");
                b.ok(e);
            },
            |b| b.start("d2", "2.0", json!([{"name": "all", "percent": 100}])),
            RejectionCode::Frozen,
        ),
        (
            "wave while frozen",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
                b.ok(e);
                let e = b.freeze("freeze.started");
                b.ok(e);
            },
            |b| b.wave("wave.started", "d2", "all"),
            RejectionCode::Frozen,
        ),
        (
            "wave of unknown deployment",
            nothing,
            |b| b.wave("wave.started", "nope", "all"),
            RejectionCode::UnknownDeployment,
        ),
        (
            "wave out of order",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 50}, {"name": "two", "percent": 100}]));
                b.ok(e);
            },
            |b| b.wave("wave.started", "d2", "two"),
            RejectionCode::WaveOutOfOrder,
        ),
        (
            "next wave before previous completed",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 50}, {"name": "two", "percent": 100}]));
                b.ok(e);
                let e = b.wave("wave.started", "d2", "one");
                b.ok(e);
            },
            |b| b.wave("wave.started", "d2", "two"),
            RejectionCode::WaveOutOfOrder,
        ),
        (
            "wave started twice",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 100}]));
                b.ok(e);
                let e = b.wave("wave.started", "d2", "one");
                b.ok(e);
            },
            |b| b.wave("wave.started", "d2", "one"),
            RejectionCode::WaveOutOfOrder,
        ),
        (
            "unknown wave",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 100}]));
                b.ok(e);
            },
            |b| b.wave("wave.started", "d2", "zzz"),
            RejectionCode::UnknownWave,
        ),
        (
            "wave names unregistered host",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "hosts": ["a", "ghost"]}]));
                b.ok(e);
            },
            |b| b.wave("wave.started", "d2", "one"),
            RejectionCode::UnknownHost,
        ),
        (
            "wave of completed deployment",
            nothing,
            |b| b.wave("wave.started", "d1", "all"),
            RejectionCode::DeploymentNotActive,
        ),
        (
            "complete unstarted wave",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 100}]));
                b.ok(e);
            },
            |b| b.wave("wave.completed", "d2", "one"),
            RejectionCode::WaveNotStarted,
        ),
        (
            "complete wave twice",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 100}]));
                b.ok(e);
                let e = b.wave("wave.started", "d2", "one");
                b.ok(e);
                let e = b.wave("wave.completed", "d2", "one");
                b.ok(e);
            },
            |b| b.wave("wave.completed", "d2", "one"),
            RejectionCode::WaveAlreadyCompleted,
        ),
        (
            "complete deployment with open wave",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 100}]));
                b.ok(e);
                let e = b.wave("wave.started", "d2", "one");
                b.ok(e);
            },
            |b| b.complete("d2"),
            RejectionCode::WavesIncomplete,
        ),
        (
            "abort without reason",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 100}]));
                b.ok(e);
            },
            |b| b.event("deployment.aborted", &[("deployment", "d2")], json!({})),
            RejectionCode::MissingField,
        ),
        (
            "step names the wrong service",
            |b| {
                let e = b.start("d2", "2.0", json!([{"name": "one", "percent": 100}]));
                b.ok(e);
            },
            |b| b.event("wave.started", &[("deployment", "d2"), ("service", "api")], json!({"wave": "one"})),
            RejectionCode::FieldMismatch,
        ),
        (
            "rollback to blocked release",
            |b| {
                let e = b.event("release.blocked", &[("service", "web"), ("release", "2.0")], json!({"reason": "cve"}));
                b.ok(e);
            },
            |b| b.rollback(Some("2.0")),
            RejectionCode::ReleaseBlocked,
        ),
        ("rollback to unknown release", nothing, |b| b.rollback(Some("7.7")), RejectionCode::UnknownRelease),
        (
            "rollback with only one release ever deployed",
            nothing,
            |b| b.rollback(None),
            RejectionCode::NoRollbackTarget,
        ),
        ("report from unregistered host", nothing, |b| b.report("ghost", "1.0", "running"), RejectionCode::UnknownHost),
        ("report with bad status", nothing, |b| b.report("a", "1.0", "sleeping"), RejectionCode::InvalidField),
        (
            "report from deregistered host",
            |b| {
                let e =
                    b.event("target.deregistered", &[("host", "a"), ("service", "web"), ("env", "prod")], json!({}));
                b.ok(e);
            },
            |b| b.report("a", "1.0", "running"),
            RejectionCode::UnknownHost,
        ),
        (
            "freeze twice",
            |b| {
                let e = b.freeze("freeze.started");
                b.ok(e);
            },
            |b| b.freeze("freeze.started"),
            RejectionCode::AlreadyFrozen,
        ),
        ("end missing freeze", nothing, |b| b.freeze("freeze.ended"), RejectionCode::NotFrozen),
        (
            "unknown domain type",
            nothing,
            |b| b.event("release.deleted", &[("service", "web"), ("release", "1.0")], json!({})),
            RejectionCode::UnknownType,
        ),
        ("client type without namespace", nothing, |b| b.event("thing", &[], json!({})), RejectionCode::InvalidType),
        ("type not lowercase", nothing, |b| b.event("App.Thing", &[], json!({})), RejectionCode::InvalidType),
        (
            "unknown data field",
            nothing,
            |b| b.event("release.created", &[("service", "web"), ("release", "3.0")], json!({"colour": "red"})),
            RejectionCode::UnknownField,
        ),
        (
            "field the type does not take",
            nothing,
            |b| b.event("release.created", &[("service", "web"), ("release", "3.0"), ("host", "a")], json!({})),
            RejectionCode::FieldNotAllowed,
        ),
        (
            "missing envelope field",
            nothing,
            |b| b.event("release.created", &[("service", "web")], json!({})),
            RejectionCode::MissingField,
        ),
        (
            "wrong data type",
            nothing,
            |b| {
                b.event("target.registered", &[("host", "e"), ("service", "web"), ("env", "prod")], json!({"group": 5}))
            },
            RejectionCode::InvalidField,
        ),
        (
            "invalid name",
            nothing,
            |b| b.event("release.created", &[("service", "we b"), ("release", "3.0")], json!({})),
            RejectionCode::InvalidName,
        ),
        (
            "invalid stream",
            nothing,
            |b| b.event("app.note", &[("stream", "a b")], json!({})),
            RejectionCode::InvalidName,
        ),
        (
            "wave without selector",
            nothing,
            |b| b.start("d2", "2.0", json!([{"name": "one"}])),
            RejectionCode::InvalidWaves,
        ),
        (
            "wave with two selectors",
            nothing,
            |b| b.start("d2", "2.0", json!([{"name": "one", "percent": 5, "group": "x"}])),
            RejectionCode::InvalidWaves,
        ),
        (
            "percent above 100",
            nothing,
            |b| b.start("d2", "2.0", json!([{"name": "one", "percent": 101}])),
            RejectionCode::InvalidWaves,
        ),
        (
            "duplicate wave names",
            nothing,
            |b| b.start("d2", "2.0", json!([{"name": "one", "percent": 5}, {"name": "one", "percent": 100}])),
            RejectionCode::InvalidWaves,
        ),
        ("no waves", nothing, |b| b.start("d2", "2.0", json!([])), RejectionCode::InvalidWaves),
        (
            "data too large",
            nothing,
            |b| b.event("app.blob", &[], json!({"x": "y".repeat(70_000)})),
            RejectionCode::EventTooLarge,
        ),
    ];
    for (name, setup, make, expected) in cases {
        let mut bench = Bench::fleet();
        setup(&mut bench);
        let event = make(&mut bench);
        assert_eq!(bench.refused(event), expected, "case: {name}");
    }
}

#[test]
fn waves_select_by_percent_group_and_hosts_in_host_order() {
    let mut bench = Bench::fleet();
    let start = bench.start(
        "d2",
        "2.0",
        json!([{"name": "canary", "group": "canary"}, {"name": "first", "hosts": ["d", "a"]}, {"name": "half", "percent": 75}, {"name": "rest", "percent": 100}]),
    );
    bench.ok(start);
    let steps = [("canary", vec!["a", "b"]), ("first", vec!["d"]), ("half", vec![]), ("rest", vec!["c"])];
    let mut moved: Vec<&str> = Vec::new();
    for (wave, newly) in steps {
        let started = bench.wave("wave.started", "d2", wave);
        bench.ok(started);
        moved.extend(newly.iter().copied());
        for host in ["a", "b", "c", "d"] {
            let expected = if moved.contains(&host) { "2.0" } else { "1.0" };
            assert_eq!(bench.desired(host).as_deref(), Some(expected), "after wave {wave}, host {host}");
        }
        let record = bench.deployment("d2");
        let wave_record = record.waves.iter().find(|w| w.name == wave).unwrap();
        assert_eq!(wave_record.selected, newly.len() as u64, "wave {wave} selected");
        let completed = bench.wave("wave.completed", "d2", wave);
        bench.ok(completed);
    }
    let done = bench.complete("d2");
    bench.ok(done);
    assert_eq!(bench.deployment("d2").state, DeploymentState::Completed);
}

#[test]
fn percent_rounds_up_and_counts_earlier_waves() {
    let mut bench = Bench::fleet();
    let start = bench.start("d2", "2.0", json!([{"name": "one", "percent": 30}, {"name": "two", "percent": 60}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "one");
    bench.ok(wave);
    // 30% of 4 hosts rounded up is 2: hosts a and b, in name order.
    assert_eq!(bench.deployment("d2").waves[0].selected, 2);
    let wave = bench.wave("wave.completed", "d2", "one");
    bench.ok(wave);
    let wave = bench.wave("wave.started", "d2", "two");
    bench.ok(wave);
    // 60% of 4 rounded up is 3: one more host.
    assert_eq!(bench.deployment("d2").waves[1].selected, 1);
    assert_eq!(bench.desired("c").as_deref(), Some("2.0"));
    assert_eq!(bench.desired("d").as_deref(), Some("1.0"));
}

#[test]
fn rollback_is_one_event_that_moves_every_host_and_aborts_the_deployment() {
    let mut bench = Bench::fleet();
    let start = bench.start("d2", "2.0", json!([{"name": "one", "percent": 50}, {"name": "two", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "one");
    bench.ok(wave);
    assert_eq!(bench.desired("a").as_deref(), Some("2.0"));
    let rollback = bench.rollback(None);
    let outcome = bench.append(vec![rollback]);
    let AppendOutcome::Appended { events, .. } = outcome else { panic!("rollback refused: {outcome:?}") };
    assert_eq!(events.len(), 1, "a rollback is a single event");
    for host in ["a", "b", "c", "d"] {
        assert_eq!(bench.desired(host).as_deref(), Some("1.0"), "host {host}");
        assert_eq!(bench.host(host).desired.unwrap().cause, "rollback");
    }
    let deployment = bench.deployment("d2");
    assert_eq!(deployment.state, DeploymentState::Aborted);
    assert_eq!(deployment.rolled_back_by, Some(events[0].seq));
    let stored = views::event(&bench.kv, events[0].seq).unwrap().unwrap();
    assert_eq!(stored.release.as_deref(), Some("1.0"), "the ledger records the target it chose");
    assert_eq!(stored.deployment.as_deref(), Some("d2"));
    // The environment is free for a new deployment.
    let next = bench.start("d3", "2.0", json!([{"name": "all", "percent": 100}]));
    bench.ok(next);
}

#[test]
fn rollback_after_completed_deployments_skips_blocked_and_same_release() {
    let mut bench = Bench::fleet();
    bench.deploy_fully("d2", "2.0");
    let created = bench.release("3.0");
    bench.ok(created);
    bench.deploy_fully("d3", "3.0");
    let block = bench.event("release.blocked", &[("service", "web"), ("release", "2.0")], json!({"reason": "cve"}));
    bench.ok(block);
    // Rolling back 3.0: 2.0 is blocked, so the target is 1.0.
    let rollback = bench.rollback(None);
    bench.ok(rollback);
    assert_eq!(bench.desired("c").as_deref(), Some("1.0"));
}

#[test]
fn rollback_skips_a_completed_release_that_never_ran_on_a_host() {
    let mut bench = Bench::fleet();
    // 2.0 completes without a single host reporting it running.
    bench.deploy_unreported("d2", "2.0");
    let created = bench.release("3.0");
    bench.ok(created);
    bench.deploy_fully("d3", "3.0");
    // Rolling back 3.0: 2.0 is the newer completed release, but only 1.0 ever ran.
    let rollback = bench.rollback(None);
    bench.ok(rollback);
    assert_eq!(bench.desired("a").as_deref(), Some("1.0"));
}

#[test]
fn a_release_reported_running_after_its_deployment_ended_is_a_rollback_target() {
    let mut bench = Bench::fleet();
    bench.deploy_unreported("d2", "2.0");
    // An agent's report may land after the deployment completed: 2.0 did run.
    let report = bench.report("a", "2.0", "running");
    bench.ok(report);
    let created = bench.release("3.0");
    bench.ok(created);
    bench.deploy_fully("d3", "3.0");
    let rollback = bench.rollback(None);
    bench.ok(rollback);
    assert_eq!(bench.desired("a").as_deref(), Some("2.0"));
}

/// An event with `data.force_reason` added.
fn forced(mut event: ProposedEvent, reason: &str) -> ProposedEvent {
    let mut data: Value = serde_json::from_str(&event.data).unwrap();
    data["force_reason"] = json!(reason);
    event.data = crate::domain::canonical::to_canonical_string(&data).unwrap();
    event
}

#[test]
fn guards_refuse_silent_mistakes_until_forced_and_keep_the_reason() {
    let mut bench = Bench::fleet();
    // A deployment to an environment without hosts (a misspelt env).
    let typo = bench.event(
        "deployment.started",
        &[("deployment", "d2-typo"), ("service", "web"), ("env", "prdo"), ("release", "2.0")],
        json!({"waves": [{"name": "all", "percent": 100}]}),
    );
    assert_eq!(bench.refused(typo.clone()), RejectionCode::NoHosts);
    // A group nobody belongs to.
    let nosuch = bench.start("d2", "2.0", json!([{"name": "a", "group": "nosuch"}]));
    assert_eq!(bench.refused(nosuch.clone()), RejectionCode::SelectorMatchesNobody);
    bench.ok(forced(nosuch, "hosts of nosuch register next"));
    assert_eq!(bench.deployment("d2").overrides[0].guard, "selector_matches_nobody");
    // Still nobody in the group when the wave starts.
    let wave = bench.wave("wave.started", "d2", "a");
    assert_eq!(bench.refused(wave.clone()), RejectionCode::SelectorMatchesNobody);
    bench.ok(forced(wave, "start it anyway"));
    let abort = bench.event("deployment.aborted", &[("deployment", "d2")], json!({"reason": "typo"}));
    bench.ok(abort);

    // A failed host blocks completing its wave, and then the deployment.
    let start = bench.start("d3", "2.0", json!([{"name": "canary", "group": "canary"}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d3", "canary");
    bench.ok(wave);
    for (host, status) in [("a", "running"), ("b", "failed")] {
        let report = bench.report(host, "2.0", status);
        bench.ok(report);
    }
    let complete_wave = bench.wave("wave.completed", "d3", "canary");
    assert_eq!(bench.refused(complete_wave.clone()), RejectionCode::HostsFailed);
    bench.ok(forced(complete_wave, "b's disk is full"));
    let complete = bench.complete("d3");
    assert_eq!(bench.refused(complete.clone()), RejectionCode::HostsFailed);
    let seq = bench.ok(forced(complete, "b's disk is full"));
    let guards: Vec<(String, String)> =
        bench.deployment("d3").overrides.into_iter().map(|item| (item.guard, item.reason)).collect();
    assert_eq!(
        guards,
        vec![("hosts_failed".to_string(), "b's disk is full".to_string()); 2],
        "each override is kept with its reason"
    );
    assert_eq!(bench.deployment("d3").overrides[1].seq, seq);
    // The typo, forced, is kept as an override of `no_hosts`.
    bench.ok(forced(typo, "hosts register after the start"));
    assert_eq!(bench.deployment("d2-typo").overrides[0].guard, "no_hosts");
}

#[test]
fn a_failed_install_leaves_the_running_release_and_counts_attempts() {
    let mut bench = Bench::fleet();
    let start = bench.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "all");
    bench.ok(wave);
    for status in ["applying", "failed", "applying", "failed"] {
        let report = bench.report("a", "2.0", status);
        bench.ok(report);
    }
    let host = bench.host("a");
    assert_eq!(host.running.as_deref(), Some("1.0"), "a still runs 1.0");
    let failure = host.failure.expect("the failed install is kept");
    assert_eq!((failure.release.as_str(), failure.attempt), ("2.0", 2));
    let report = bench.report("a", "2.0", "running");
    bench.ok(report);
    let host = bench.host("a");
    assert_eq!((host.running.as_deref(), host.failure), (Some("2.0"), None));
}

#[test]
fn rollback_is_allowed_during_a_freeze() {
    let mut bench = Bench::fleet();
    bench.deploy_fully("d2", "2.0");
    let freeze = bench.freeze("freeze.started");
    bench.ok(freeze);
    let rollback = bench.rollback(None);
    bench.ok(rollback);
    assert_eq!(bench.desired("a").as_deref(), Some("1.0"));
}

#[test]
fn reports_move_observed_state_and_wave_counters() {
    let mut bench = Bench::fleet();
    let start = bench.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "all");
    bench.ok(wave);
    for (host, status) in [("a", "running"), ("b", "failed"), ("c", "applying")] {
        let report = bench.report(host, "2.0", status);
        bench.ok(report);
    }
    let wave = &bench.deployment("d2").waves[0];
    assert_eq!((wave.selected, wave.converged, wave.failed), (4, 1, 1));
    assert!(bench.host("a").converged());
    assert!(!bench.host("c").converged());
    // b recovers: failed → running moves it from failed to converged.
    let report = bench.report("b", "2.0", "running");
    bench.ok(report);
    let wave = &bench.deployment("d2").waves[0];
    assert_eq!((wave.converged, wave.failed), (2, 0));
    assert_eq!(wave.state, WaveState::Started);
}

#[test]
fn registering_twice_is_idempotent_for_the_view() {
    let mut bench = Bench::fleet();
    let before = bench.host("a");
    let again = bench.register("a", "canary");
    bench.ok(again);
    let after = bench.host("a");
    assert_eq!((after.registered, after.group, after.desired), (before.registered, before.group, before.desired));
}

#[test]
fn same_id_same_body_returns_the_original_seq_and_writes_nothing() {
    let mut bench = Bench::new();
    let event = bench.event("app.note", &[], json!({"text": "hi"}));
    let first = bench.ok(event.clone());
    let size = bench.kv.len();
    match bench.append(vec![event.clone()]) {
        AppendOutcome::Appended { events, duplicate: true } => assert_eq!(events[0].seq, first),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(bench.kv.len(), size);
    let mut changed = event.clone();
    changed.data = r#"{"text":"other"}"#.into();
    assert_eq!(bench.refused(changed), RejectionCode::IdConflict);
    let fresh = bench.event("app.note", &[], json!({}));
    assert_eq!(bench.refused_batch(vec![event.clone(), fresh]), RejectionCode::PartialReplay);
    assert_eq!(bench.refused_batch(vec![event.clone(), event]), RejectionCode::DuplicateIdInBatch);
}

impl Bench {
    fn refused_batch(&mut self, events: Vec<ProposedEvent>) -> RejectionCode {
        let before = self.kv.len();
        match self.append(events) {
            AppendOutcome::Rejected(rejection) => {
                assert_eq!(self.kv.len(), before);
                rejection.code
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

#[test]
fn expected_version_guards_the_stream() {
    let mut bench = Bench::new();
    let note = |bench: &mut Bench| bench.event("app.note", &[("stream", "notes")], json!({}));
    let first = note(&mut bench);
    assert!(
        matches!(bench.request(vec![first], ExpectedVersion::Exists), AppendOutcome::Rejected(r) if r.code == RejectionCode::WrongExpectedVersion)
    );
    let first = note(&mut bench);
    assert!(matches!(bench.request(vec![first], ExpectedVersion::NoStream), AppendOutcome::Appended { .. }));
    let second = note(&mut bench);
    assert!(
        matches!(bench.request(vec![second], ExpectedVersion::NoStream), AppendOutcome::Rejected(r) if r.code == RejectionCode::WrongExpectedVersion)
    );
    let (second, third) = (note(&mut bench), note(&mut bench));
    assert!(matches!(bench.request(vec![second, third], ExpectedVersion::Exact(0)), AppendOutcome::Appended { .. }));
    let stale = note(&mut bench);
    assert!(
        matches!(bench.request(vec![stale], ExpectedVersion::Exact(0)), AppendOutcome::Rejected(r) if r.code == RejectionCode::WrongExpectedVersion)
    );
    let (events, _) = views::read_stream(&bench.kv, "notes", 0, 10).unwrap();
    assert_eq!(events.iter().map(|event| event.version).collect::<Vec<_>>(), vec![0, 1, 2]);
    let other = bench.event("app.note", &[("stream", "elsewhere")], json!({}));
    let mine = note(&mut bench);
    assert!(
        matches!(bench.request(vec![mine, other], ExpectedVersion::Exact(2)), AppendOutcome::Rejected(r) if r.code == RejectionCode::ExpectedVersionMultipleStreams)
    );
}

#[test]
fn a_batch_is_atomic_even_when_a_later_event_fails_a_rule() {
    let mut bench = Bench::fleet();
    let before = bench.kv.len();
    let good = bench.release("5.0");
    let bad = bench.start("d9", "no-such-release", json!([{"name": "all", "percent": 100}]));
    match bench.append(vec![good, bad]) {
        AppendOutcome::Rejected(rejection) => {
            assert_eq!(rejection.code, RejectionCode::UnknownRelease);
            assert_eq!(rejection.event_index, Some(1));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(bench.kv.len(), before);
    assert!(records::release(&bench.kv, "web", "5.0").unwrap().is_none());
}

#[test]
fn later_events_of_a_batch_see_earlier_ones() {
    let mut bench = Bench::fleet();
    let release = bench.release("5.0");
    let start = bench.start("d9", "5.0", json!([{"name": "all", "percent": 100}]));
    let wave = bench.wave("wave.started", "d9", "all");
    let AppendOutcome::Appended { events, .. } = bench.append(vec![release, start, wave]) else { panic!("refused") };
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, vec![seqs[0], seqs[0] + 1, seqs[0] + 2], "consecutive seqs");
    assert_eq!(bench.desired("a").as_deref(), Some("5.0"));
}

#[test]
fn the_chain_links_every_event_and_time_never_goes_back() {
    let mut bench = Bench::fleet();
    bench.time_micros -= 500_000; // the leader's clock steps back
    let event = bench.event("app.note", &[], json!({}));
    bench.ok(event);
    let page = views::read_events(&bench.kv, &views::EventFilter::default(), 1, 1_000).unwrap();
    let mut previous_hash = GENESIS_HASH;
    let mut previous_time = i64::MIN;
    for (position, event) in page.events.iter().enumerate() {
        assert_eq!(event.seq, position as u64 + 1);
        assert_eq!(event.prev_hash, previous_hash);
        assert_eq!(event.hash, event.compute_hash());
        assert!(event.time_micros >= previous_time);
        previous_hash = event.hash;
        previous_time = event.time_micros;
    }
    assert_eq!(page.next_seq, page.events.len() as u64 + 1);
}

#[test]
fn wave_events_carry_the_deployment_s_service_env_and_release() {
    let mut bench = Bench::fleet();
    let page = views::read_events(
        &bench.kv,
        &views::EventFilter { event_type: Some("wave.".into()), ..Default::default() },
        1,
        100,
    )
    .unwrap();
    assert_eq!(page.events.len(), 2);
    for event in &page.events {
        assert_eq!(
            (event.service.as_deref(), event.env.as_deref(), event.release.as_deref()),
            (Some("web"), Some("prod"), Some("1.0"))
        );
        assert_eq!(event.stream, "web/prod");
    }
    let note = bench.event("app.note", &[], json!({}));
    let seq = bench.ok(note);
    assert_eq!(views::event(&bench.kv, seq).unwrap().unwrap().stream, "_global");
}

#[test]
fn fleet_as_of_a_past_seq_shows_the_state_then() {
    let mut bench = Bench::fleet();
    let before_second = records::head(&bench.kv).unwrap().seq;
    bench.deploy_fully("d2", "2.0");
    let late = bench.register("e", "main");
    bench.ok(late);
    let now = views::fleet(&bench.kv, Some("web"), Some("prod"), None).unwrap();
    assert_eq!(now.hosts.len(), 5);
    assert_eq!(now.desired.get("2.0"), Some(&4));
    let then = views::fleet(&bench.kv, Some("web"), Some("prod"), Some(before_second)).unwrap();
    assert_eq!(then.as_of_seq, before_second);
    assert_eq!(then.hosts.len(), 4, "host e did not exist yet");
    assert!(then.hosts.iter().all(|host| host.desired.as_ref().unwrap().release == "1.0"));
    let at_start = views::fleet(&bench.kv, Some("web"), Some("prod"), Some(0)).unwrap();
    assert!(at_start.hosts.is_empty());
}

#[test]
fn directives_from_history_match_the_live_ones() {
    let mut bench = Bench::fleet();
    let start = bench.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "all");
    let wave_seq = bench.ok(wave);
    let rollback = bench.rollback(None);
    let rollback_seq = bench.ok(rollback);
    let (directives, next) = views::directives_between(&bench.kv, "a", wave_seq, rollback_seq, 100).unwrap();
    let summary: Vec<(u64, &str, &str)> =
        directives.iter().map(|d| (d.seq, d.release.as_str(), d.cause.as_str())).collect();
    assert_eq!(summary, vec![(wave_seq, "2.0", "wave.started"), (rollback_seq, "1.0", "rollback")]);
    assert_eq!(next, rollback_seq + 1);
    // Paged: one at a time, each page says where the next starts.
    let (first, next) = views::directives_between(&bench.kv, "a", wave_seq, rollback_seq, 1).unwrap();
    assert_eq!((first.len(), first[0].seq, next), (1, wave_seq, wave_seq + 1));
    let (second, next) = views::directives_between(&bench.kv, "a", next, rollback_seq, 1).unwrap();
    assert_eq!((second[0].seq, next), (rollback_seq, rollback_seq + 1));
}

/// Requests gathered into one entry behave as if proposed one after another: each has its own
/// outcome, a replay inside the entry is a duplicate with the original seq, `expected_version`
/// sees the requests before it, and a rejected request leaves no gap in the seqs.
#[test]
fn requests_gathered_into_one_entry_keep_their_own_outcomes() {
    let bench = Bench::new();
    let note = |id: &str| {
        let mut event = ProposedEvent::new(id, "test.note");
        event.stream = Some("notes".into());
        event
    };
    let request = |events: Vec<ProposedEvent>, expected_version: ExpectedVersion| AppendRequest {
        events,
        expected_version,
        actor: "alice".into(),
    };
    let command = LedgerCommand {
        time_micros: bench.time_micros,
        requests: vec![
            request(vec![note("a")], ExpectedVersion::NoStream),
            request(vec![note("a")], ExpectedVersion::Any),
            request(vec![note("b")], ExpectedVersion::NoStream),
            request(vec![note("c"), note("d")], ExpectedVersion::Exact(0)),
        ],
        identity: None,
    };
    let mut overlay = Overlay::new(&bench.kv);
    let applied = apply_command(&mut overlay, &command).unwrap();
    let seqs = |outcome: &AppendOutcome| match outcome {
        AppendOutcome::Appended { events, duplicate } => {
            (events.iter().map(|event| event.seq).collect::<Vec<_>>(), *duplicate)
        }
        AppendOutcome::Rejected(rejection) => panic!("unexpected rejection {rejection:?}"),
    };
    assert_eq!(applied.outcomes.len(), 4);
    assert_eq!(seqs(&applied.outcomes[0]), (vec![1], false));
    assert_eq!(seqs(&applied.outcomes[1]), (vec![1], true), "a replay inside the entry");
    assert!(
        matches!(&applied.outcomes[2], AppendOutcome::Rejected(rejection) if rejection.code == RejectionCode::WrongExpectedVersion),
        "the stream exists by then: {:?}",
        applied.outcomes[2]
    );
    assert_eq!(seqs(&applied.outcomes[3]), (vec![2, 3], false), "no gap after the rejected request");
    assert_eq!(applied.events.iter().map(|event| event.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    // The text the feed serves is rendered once, at apply: one per written event, in order, and
    // exactly each event's canonical JSON (a replay and a rejection add none).
    let rendered: Vec<String> = applied.events.iter().map(|event| event.canonical_json()).collect();
    assert_eq!(applied.rendered, rendered);
}

#[test]
fn the_merkle_tree_holds_every_event_as_served() {
    let mut bench = Bench::fleet();
    bench.deploy_fully("d2", "2.0");
    let event = bench.rollback(None);
    bench.ok(event);
    let head = records::head(&bench.kv).unwrap().seq;
    let mut roots = crate::domain::merkle::RootBuilder::new();
    for seq in 1..=head {
        let event = views::event(&bench.kv, seq).unwrap().unwrap();
        roots.push(crate::domain::merkle::leaf_hash(event.canonical_json().as_bytes()));
    }
    let root = |bench: &Bench, size| crate::domain::merkle::store::StoredTree::new(&bench.kv).root(size);
    assert_eq!(root(&bench, head).unwrap(), roots.root());
    // A rejected request leaves the tree as it was.
    let refused = bench.start("d9", "9.9", json!([{"name": "all", "percent": 100}]));
    bench.refused(refused);
    assert_eq!(root(&bench, head).unwrap(), roots.root());
    assert!(root(&bench, head + 1).is_err(), "no leaf beyond the head");
}

#[test]
fn fleet_diff_lists_hosts_whose_releases_changed_between_two_seqs() {
    let mut bench = Bench::fleet();
    let before_rollout = records::head(&bench.kv).unwrap().seq;
    let event = bench.start("d2", "2.0", json!([{"name": "canary", "group": "canary"}]));
    bench.ok(event);
    let event = bench.wave("wave.started", "d2", "canary");
    bench.ok(event);
    let event = bench.report("a", "2.0", "running");
    bench.ok(event);
    let after_canary = records::head(&bench.kv).unwrap().seq;
    let event = bench.register("e", "main");
    bench.ok(event);
    let now = records::head(&bench.kv).unwrap().seq;

    let changed = |from, to| -> Vec<(String, Option<String>, Option<String>)> {
        views::fleet_diff(&bench.kv, Some("web"), Some("prod"), from, to)
            .unwrap()
            .into_iter()
            .map(|change| {
                let release =
                    |record: Option<&HostRecord>| record.and_then(|r| r.desired.as_ref()).map(|d| d.release.clone());
                (change.after.host.clone(), release(change.before.as_ref()), release(Some(&change.after)))
            })
            .collect()
    };
    // The canary hosts moved to 2.0; hosts c and d did not change.
    assert_eq!(
        changed(before_rollout, after_canary),
        vec![
            ("a".to_string(), Some("1.0".to_string()), Some("2.0".to_string())),
            ("b".into(), Some("1.0".into()), Some("2.0".into()))
        ]
    );
    // Host e registered later: it appears only in a range that covers its registration, with no
    // earlier version.
    let later = views::fleet_diff(&bench.kv, Some("web"), None, after_canary, now).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].after.host, "e");
    assert!(later[0].before.is_none());
    assert!(changed(now, now).is_empty());
    // From the empty ledger every registered host is a change.
    assert_eq!(views::fleet_diff(&bench.kv, None, None, 0, now).unwrap().len(), 5);
}

/// A wave counter that would go below zero is a broken invariant, not a storage error: the
/// apply panics, naming the invariant, the event and the deployment, instead of returning
/// `Error::Corrupt` as a damaged disk would.
#[test]
fn a_counter_below_zero_stops_the_apply_as_a_bug() {
    let mut bench = Bench::fleet();
    let start = bench.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "all");
    bench.ok(wave);
    let report = bench.report("a", "2.0", "running");
    bench.ok(report);
    // Damage the bookkeeping as only a bug could: host a counts as converged, its wave says 0.
    let mut deployment = bench.deployment("d2");
    deployment.waves[0].converged = 0;
    let mut overlay = Overlay::new(&bench.kv);
    records::write_versioned(&mut overlay, &records::deployment_key("d2"), 99, &deployment).unwrap();
    let writes = overlay.into_writes();
    bench.kv.apply(writes);

    let report = bench.report("a", "2.0", "failed");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bench.append(vec![report])))
        .expect_err("the apply must stop on a broken invariant");
    let message = crate::domain::invariant::panic_text(&*panic);
    let full = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(full.starts_with(crate::domain::invariant::PREFIX), "not reported as an invariant: {full}");
    assert!(full.contains("not a storage failure"), "not told apart from a storage failure: {full}");
    assert!(message.contains("\"d2\" wave 0") && message.contains("below zero"), "names neither: {message}");
    assert!(message.contains("event seq"), "does not name the event: {message}");
}

/// A rollback and a wave selecting every host write the same keys whatever the number of hosts:
/// no host record is touched (the fleet view still shows every host moved).
#[test]
fn a_rollback_and_a_full_wave_write_as_many_keys_for_3_hosts_as_for_300() {
    let keys_written = |hosts: usize| {
        let mut bench = Bench::new();
        for release in ["1.0", "2.0"] {
            let event = bench.release(release);
            bench.ok(event);
        }
        for index in 0..hosts {
            let event = bench.register(&format!("h{index:03}"), "main");
            bench.ok(event);
        }
        bench.deploy_fully("d1", "1.0");
        let start = bench.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
        bench.ok(start);
        let mut written = Vec::new();
        // Records and their versions (the Merkle nodes an event adds depend on its seq alone).
        let records = |kv: &MemoryKv| {
            let mut count = 0;
            for space in [crate::domain::kv::Space::State, crate::domain::kv::Space::History] {
                kv.scan(space, &[], &[0xFF; 64], crate::domain::kv::Direction::Forward, &mut |_, _| {
                    count += 1;
                    Ok(true)
                })
                .unwrap();
            }
            count
        };
        for event in [bench.wave("wave.started", "d2", "all"), bench.rollback(Some("1.0"))] {
            let before = records(&bench.kv);
            bench.ok(event);
            // Records added (each here is new or a new version), and the fleet moved.
            written.push(records(&bench.kv) - before);
            let fleet = views::fleet(&bench.kv, Some("web"), Some("prod"), None).unwrap();
            assert_eq!(fleet.hosts.len(), hosts);
        }
        let fleet = views::fleet(&bench.kv, Some("web"), Some("prod"), None).unwrap();
        assert_eq!(fleet.desired.get("1.0"), Some(&(hosts as u64)), "every host rolled back");
        written
    };
    assert_eq!(keys_written(3), keys_written(300));
}

#[test]
fn a_halted_deployment_starts_no_wave_until_resumed() {
    let mut bench = Bench::fleet();
    let start =
        bench.start("d2", "2.0", json!([{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]));
    bench.ok(start);
    let resume_early = bench.event("deployment.resumed", &[("deployment", "d2")], json!({"reason": "go"}));
    assert_eq!(bench.refused(resume_early), RejectionCode::DeploymentNotHalted);
    let halt = bench.event("deployment.halted", &[("deployment", "d2")], json!({"reason": "latency up"}));
    bench.ok(halt);
    let halted = bench.deployment("d2").halted.expect("halted");
    assert_eq!((halted.reason.as_str(), halted.step.actor.as_str()), ("latency up", "alice"));
    let again = bench.event("deployment.halted", &[("deployment", "d2")], json!({"reason": "still"}));
    assert_eq!(bench.refused(again), RejectionCode::DeploymentHalted);
    let wave = bench.wave("wave.started", "d2", "canary");
    assert_eq!(bench.refused(wave.clone()), RejectionCode::DeploymentHalted);
    // A halt is not a guard a force reason gets past: resuming is the way on.
    assert_eq!(bench.refused(forced(wave.clone(), "hurry")), RejectionCode::DeploymentHalted);
    let resume = bench.event("deployment.resumed", &[("deployment", "d2")], json!({"reason": "a noisy neighbour"}));
    bench.ok(resume);
    assert_eq!(bench.deployment("d2").halted, None);
    bench.ok(wave);
    assert_eq!(bench.desired("a").as_deref(), Some("2.0"));
    let halt_without_reason = bench.event("deployment.halted", &[("deployment", "d2")], json!({}));
    assert_eq!(bench.refused(halt_without_reason), RejectionCode::MissingField);
}

fn policy(bench: &mut Bench, policy: Value) -> ProposedEvent {
    bench.event("policy.set", &[("service", "web"), ("env", "prod")], json!({ "policy": policy }))
}

#[test]
fn a_policy_is_versioned_and_malformed_ones_write_nothing() {
    let mut bench = Bench::fleet();
    let first = policy(&mut bench, json!({"bake_seconds": 60}));
    let first_seq = bench.ok(first);
    let second = policy(&mut bench, json!({"bake_seconds": 300, "on_trip": "halt"}));
    bench.ok(second);
    let now = records::policy(&bench.kv, "web", "prod", None).unwrap().expect("a policy");
    assert_eq!(now.policy.defaults.bake_seconds, 300);
    let then = records::policy(&bench.kv, "web", "prod", Some(first_seq)).unwrap().expect("a policy then");
    assert_eq!((then.policy.defaults.bake_seconds, then.set.seq), (60, first_seq));
    assert_eq!(records::policy(&bench.kv, "web", "prod", Some(first_seq - 1)).unwrap(), None);

    let malformed = policy(&mut bench, json!({"min_healthy": {"percent": 250}}));
    assert_eq!(bench.refused(malformed), RejectionCode::InvalidPolicy);
    let missing = bench.event("policy.set", &[("service", "web"), ("env", "prod")], json!({}));
    assert_eq!(bench.refused(missing), RejectionCode::MissingField);
    let no_env = bench.event("policy.set", &[("service", "web")], json!({"policy": {}}));
    assert_eq!(bench.refused(no_env), RejectionCode::MissingField);
}

#[test]
fn the_failed_hosts_guard_allows_what_the_policy_s_max_failed_allows() {
    let mut bench = Bench::fleet();
    let canary_may_lose_one = policy(&mut bench, json!({"waves": {"canary": {"max_failed": {"count": 1}}}}));
    bench.ok(canary_may_lose_one);
    let start =
        bench.start("d2", "2.0", json!([{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "canary");
    bench.ok(wave);
    for (host, status) in [("a", "running"), ("b", "failed")] {
        let report = bench.report(host, "2.0", status);
        bench.ok(report);
    }
    // One failed host of two: the canary's allowance.
    let complete_canary = bench.wave("wave.completed", "d2", "canary");
    bench.ok(complete_canary);
    assert!(bench.deployment("d2").overrides.is_empty(), "nothing was forced");
    let rest = bench.wave("wave.started", "d2", "rest");
    bench.ok(rest);
    for (host, status) in [("c", "running"), ("d", "failed")] {
        let report = bench.report(host, "2.0", status);
        bench.ok(report);
    }
    // The other waves keep the default: no failed host.
    let complete_rest = bench.wave("wave.completed", "d2", "rest");
    let message = match bench.append(vec![complete_rest]) {
        AppendOutcome::Rejected(rejection) => {
            assert_eq!(rejection.code, RejectionCode::HostsFailed);
            rejection.message
        }
        other => panic!("completing the rest should be refused, got {other:?}"),
    };
    assert!(message.contains("the policy allows 0"), "{message}");
}

/// Appends what the policy decides for `deployment` at `now_micros`, as its evaluator would,
/// and returns the outcome.
fn decide(bench: &mut Bench, deployment: &str, now_micros: i64) -> Option<AppendOutcome> {
    use crate::domain::gates::{evaluate, events_of, POLICY_ACTOR};
    let record = bench.deployment(deployment);
    let policy = records::policy(&bench.kv, "web", "prod", None).unwrap().expect("a policy");
    let events = events_of(&record, evaluate(&record, &policy.policy, policy.set.seq, &[], now_micros));
    if events.is_empty() {
        return None;
    }
    let request = AppendRequest { events, expected_version: ExpectedVersion::Any, actor: POLICY_ACTOR.into() };
    let command = LedgerCommand { time_micros: bench.time_micros, requests: vec![request], identity: None };
    bench.time_micros += 1_000;
    let mut overlay = Overlay::new(&bench.kv);
    let applied = apply_command(&mut overlay, &command).unwrap();
    let writes = overlay.into_writes();
    bench.kv.apply(writes);
    applied.outcomes.into_iter().next()
}

/// Two evaluations of the same state (a new leader repeating its predecessor's, at another
/// time, so with other inputs) append one rollback: the second is refused by its id.
#[test]
fn a_decision_taken_twice_is_written_once() {
    let mut bench = Bench::fleet();
    let event = policy(&mut bench, json!({"auto_advance": true}));
    bench.ok(event);
    let start =
        bench.start("d2", "2.0", json!([{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]));
    bench.ok(start);
    let now = bench.time_micros;
    assert!(matches!(decide(&mut bench, "d2", now), Some(AppendOutcome::Appended { duplicate: false, .. })));
    // The same step decided again is a duplicate: the first wave started once.
    assert!(matches!(decide(&mut bench, "d2", now), None | Some(AppendOutcome::Appended { duplicate: true, .. })));
    assert_eq!(bench.deployment("d2").waves[0].state, WaveState::Started);
    let report = bench.report("b", "2.0", "failed");
    bench.ok(report);
    let first = decide(&mut bench, "d2", now + 1_000_000);
    assert!(matches!(first, Some(AppendOutcome::Appended { duplicate: false, .. })), "{first:?}");
    assert_eq!(bench.deployment("d2").state, DeploymentState::Aborted);
    // A second leader that saw the same failure before the rollback applied decides again.
    let mut stale = bench.deployment("d2");
    stale.state = DeploymentState::Active;
    let policy = records::policy(&bench.kv, "web", "prod", None).unwrap().unwrap();
    let again = crate::domain::gates::events_of(
        &stale,
        crate::domain::gates::evaluate(&stale, &policy.policy, policy.set.seq, &[], now + 5_000_000),
    );
    assert_eq!(again.len(), 1, "the stale state trips again");
    match bench.append(again) {
        AppendOutcome::Rejected(rejection) => assert_eq!(rejection.code, RejectionCode::IdConflict),
        AppendOutcome::Appended { duplicate, .. } => assert!(duplicate, "a second rollback was written"),
    }
    let filter = views::EventFilter { event_type: Some("rollback".into()), ..views::EventFilter::default() };
    let rollbacks = views::read_events(&bench.kv, &filter, 1, 1_000).unwrap().events;
    assert_eq!(rollbacks.len(), 1, "one rollback in the log");
    assert_eq!(rollbacks[0].actor, "system:policy");
}

fn alert_event(bench: &mut Bench, kind: &str, fingerprint: &str, starts_at: &str, mapped: bool) -> ProposedEvent {
    let fields: &[(&str, &str)] = if mapped { &[("service", "web"), ("env", "prod")] } else { &[] };
    let data = json!({"source": "alertmanager", "fingerprint": fingerprint, "starts_at": starts_at,
                      "labels": {"severity": "critical"}});
    bench.event(kind, fields, data)
}

#[test]
fn alerts_keep_their_latest_firing_mapped_or_not() {
    let mut bench = Bench::fleet();
    let fired = alert_event(&mut bench, "alert.fired", "a1", "2026-12-07T03:00:00Z", true);
    let fired_seq = bench.ok(fired);
    let alerts = records::alerts_of(&bench.kv, Some("web"), Some("prod")).unwrap();
    assert_eq!(
        (alerts.len(), alerts[0].firing, alerts[0].fired.as_ref().map(|step| step.seq)),
        (1, true, Some(fired_seq))
    );
    // The resolution of an older firing changes nothing.
    let stale = alert_event(&mut bench, "alert.resolved", "a1", "2026-12-07T02:00:00Z", true);
    bench.ok(stale);
    assert!(records::alerts_of(&bench.kv, Some("web"), Some("prod")).unwrap()[0].firing);
    let resolved = alert_event(&mut bench, "alert.resolved", "a1", "2026-12-07T03:00:00Z", true);
    bench.ok(resolved);
    let alert = &records::alerts_of(&bench.kv, Some("web"), Some("prod")).unwrap()[0];
    assert!(!alert.firing && alert.resolved.is_some() && alert.fired.is_some());
    // Unmapped alerts are kept too, apart.
    let unmapped = alert_event(&mut bench, "alert.fired", "b2", "2026-12-07T03:00:00Z", false);
    bench.ok(unmapped);
    assert_eq!(records::alerts_of(&bench.kv, None, None).unwrap()[0].fingerprint, "b2");
    assert_eq!(records::all_alerts(&bench.kv).unwrap().len(), 2);
    let bad_time = alert_event(&mut bench, "alert.fired", "c3", "yesterday", true);
    assert_eq!(bench.refused(bad_time), RejectionCode::InvalidField);
    let env_only = bench.event(
        "alert.fired",
        &[("env", "prod")],
        json!({"source": "x", "fingerprint": "d", "starts_at": "2026-12-07T03:00:00Z"}),
    );
    assert_eq!(bench.refused(env_only), RejectionCode::MissingField);
}

fn calendar(bench: &mut Bench, fields: &[(&str, &str)], windows: Value) -> ProposedEvent {
    bench.event("freeze.calendar.set", fields, json!({ "windows": windows }))
}

fn micros(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
}

#[test]
fn a_freeze_window_refuses_starts_at_log_time_allows_rollbacks_and_keeps_a_break_glass_reason() {
    let mut bench = Bench::fleet();
    bench.time_micros = micros("2026-12-11T12:00:00Z"); // a Friday
    let weekend = calendar(
        &mut bench,
        &[("service", "web"), ("env", "prod")],
        json!([{"kind": "deny", "cron": "0 18 * * fri", "duration": "2d15h", "time_zone": "UTC", "reason": "weekend"}]),
    );
    bench.ok(weekend);
    let waves = json!([{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]);
    let start = bench.start("d2", "2.0", waves.clone());
    bench.ok(start);

    // Friday 18:00 by the event's own time: the weekend window is open.
    bench.time_micros = micros("2026-12-11T18:00:00Z");
    let wave = bench.wave("wave.started", "d2", "canary");
    assert_eq!(bench.refused(wave), RejectionCode::Frozen);
    let glass = bench.event(
        "wave.started",
        &[("deployment", "d2")],
        json!({"wave": "canary", "override_reason": "fix for INC-7"}),
    );
    bench.ok(glass);
    let kept = bench.deployment("d2").overrides;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!((kept[0].guard.as_str(), kept[0].reason.as_str()), ("freeze_window", "fix for INC-7"));

    // A rollback goes ahead in the window, and its timeline entry says it was allowed there.
    let rollback = bench.rollback(None);
    bench.ok(rollback);
    assert_eq!(bench.desired("a").as_deref(), Some("1.0"));
    let releases = views::releases(&bench.kv, "web").unwrap().0;
    let rolled_back = releases.iter().find(|release| release.record.release == "2.0").expect("2.0");
    let entry = rolled_back.timeline.iter().find(|entry| entry.kind == "rolled_back").expect("a rolled_back entry");
    assert!(entry.detail.as_deref().unwrap_or("").contains("weekend"), "{entry:?}");

    // Monday: the weekend is over, but a global one-off window freezes every environment.
    bench.time_micros = micros("2026-12-14T09:00:00Z");
    let global = calendar(
        &mut bench,
        &[],
        json!([{"kind": "deny", "start": "2026-12-14T08:00:00Z", "end": "2026-12-14T10:00:00Z"}]),
    );
    bench.ok(global);
    let start = bench.start("d3", "2.0", waves.clone());
    assert_eq!(bench.refused(start), RejectionCode::Frozen);
    bench.time_micros = micros("2026-12-14T10:00:00Z");
    let start = bench.start("d3", "2.0", waves);
    bench.ok(start);

    // A calendar names both service and env or neither; a bad cron writes nothing.
    let half = calendar(&mut bench, &[("service", "web")], json!([]));
    assert_eq!(bench.refused(half), RejectionCode::MissingField);
    let bad = calendar(
        &mut bench,
        &[],
        json!([{"kind": "deny", "cron": "0 18 * * funday", "duration": "1h", "time_zone": "UTC"}]),
    );
    assert_eq!(bench.refused(bad), RejectionCode::InvalidCron);
    let records = records::all_calendars(&bench.kv).unwrap();
    assert_eq!(records.iter().map(|record| record.scope()).collect::<Vec<_>>(), ["global", "web/prod"]);
}

impl Bench {
    fn health(&mut self, host: &str, release: &str, health: &str) -> ProposedEvent {
        self.event(
            "host.reported",
            &[("host", host), ("service", "web"), ("env", "prod"), ("release", release)],
            json!({"status": "running", "applied_seq": 1, "health": health, "message": format!("check said {health}")}),
        )
    }
}

#[test]
fn health_reports_count_unhealthy_hosts_in_their_wave_and_in_later_ones() {
    let mut bench = Bench::fleet();
    let start =
        bench.start("d2", "2.0", json!([{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "canary");
    bench.ok(wave);
    let counts = |bench: &Bench, wave: usize| {
        let wave = &bench.deployment("d2").waves[wave];
        (wave.converged, wave.unhealthy, wave.failed)
    };
    let sick = bench.health("a", "2.0", "unhealthy");
    bench.ok(sick);
    assert_eq!(counts(&bench, 0), (1, 1, 0), "running but unhealthy");
    let health = bench.host("a").health.expect("health kept");
    assert_eq!((health.healthy, health.message.as_deref()), (false, Some("check said unhealthy")));
    // A report without health leaves it as it was.
    let plain = bench.report("a", "2.0", "running");
    bench.ok(plain);
    assert_eq!(counts(&bench, 0), (1, 1, 0));
    let well = bench.health("a", "2.0", "healthy");
    bench.ok(well);
    assert_eq!(counts(&bench, 0), (1, 0, 0), "healthy again");
    let plain = bench.report("b", "2.0", "running");
    bench.ok(plain);
    let complete = bench.wave("wave.completed", "d2", "canary");
    bench.ok(complete);

    // c installed 2.0 by itself and is unhealthy before the last wave selects it: the wave,
    // which counts from the environment's tallies, starts with it counted.
    let early = bench.health("c", "2.0", "unhealthy");
    bench.ok(early);
    let rest = bench.wave("wave.started", "d2", "rest");
    bench.ok(rest);
    assert_eq!(counts(&bench, 1), (1, 1, 0));
    let recovered = bench.health("c", "2.0", "healthy");
    bench.ok(recovered);
    assert_eq!(counts(&bench, 1), (1, 0, 0));

    let typo = bench.event(
        "host.reported",
        &[("host", "d"), ("service", "web"), ("env", "prod"), ("release", "2.0")],
        json!({"status": "running", "applied_seq": 1, "health": "poorly"}),
    );
    assert_eq!(bench.refused(typo), RejectionCode::InvalidField);
}

#[test]
fn a_rollback_is_recovered_from_when_every_host_runs_its_target() {
    let mut bench = Bench::fleet();
    let start = bench.start("d2", "2.0", json!([{"name": "all", "percent": 100}]));
    bench.ok(start);
    let wave = bench.wave("wave.started", "d2", "all");
    bench.ok(wave);
    for host in ["a", "b"] {
        let report = bench.report(host, "2.0", "running");
        bench.ok(report);
    }
    let halt = bench.event("deployment.halted", &[("deployment", "d2")], json!({"reason": "errors"}));
    let halted_seq = bench.ok(halt);
    let rollback = bench.rollback(None);
    let rollback_seq = bench.ok(rollback);
    let recovering = records::environment(&bench.kv, "web", "prod").unwrap().recovering.expect("recovering");
    assert_eq!((recovering.failure.seq, recovering.target.as_str()), (halted_seq, "1.0"), "the halt was the failure");
    assert!(records::recoveries(&bench.kv, Some("web"), Some("prod")).unwrap().is_empty());
    // c and d never left 1.0; a and b come back to it: then every host runs the target.
    let report = bench.report("a", "1.0", "running");
    bench.ok(report);
    assert!(records::recoveries(&bench.kv, Some("web"), Some("prod")).unwrap().is_empty(), "b still runs 2.0");
    let report = bench.report("b", "1.0", "running");
    let last_seq = bench.ok(report);
    let recoveries = records::recoveries(&bench.kv, Some("web"), Some("prod")).unwrap();
    assert_eq!(recoveries.len(), 1);
    assert_eq!((recoveries[0].failure.seq, recoveries[0].recovered.seq), (halted_seq, last_seq));
    assert_eq!(recoveries[0].deployment.as_deref(), Some("d2"));
    assert_eq!(records::environment(&bench.kv, "web", "prod").unwrap().recovering, None);
    assert_eq!(bench.deployment("d2").rolled_back_by, Some(rollback_seq));

    // Rolling back a completed deployment marks it as rolled back too.
    bench.deploy_fully("d3", "2.0");
    let rollback = bench.rollback(None);
    let rollback_seq = bench.ok(rollback);
    assert_eq!(bench.deployment("d3").rolled_back_by, Some(rollback_seq));
    let recovering = records::environment(&bench.kv, "web", "prod").unwrap().recovering.expect("recovering");
    assert_eq!((recovering.failure.seq, recovering.deployment.as_deref()), (rollback_seq, Some("d3")));
    // A new deployment abandons the recovery.
    let start = bench.start("d4", "2.0", json!([{"name": "all", "percent": 100}]));
    bench.ok(start);
    assert_eq!(records::environment(&bench.kv, "web", "prod").unwrap().recovering, None);
}

#[test]
fn webhooks_are_checked_in_apply_listed_and_progress_is_the_system_s() {
    use crate::domain::webhooks;
    let mut bench = Bench::new();
    let added = |bench: &mut Bench, data: Value| bench.event("webhook.added", &[("stream", "webhooks/wh-1")], data);
    let good = json!({"webhook": "wh-1", "url": "http://127.0.0.1:9000/hook", "events": ["wave.", "rollback"], "format": "fleetlog"});
    for (change, code) in [
        (json!({"url": "ftp://example.com"}), RejectionCode::InvalidField),
        (json!({"events": []}), RejectionCode::InvalidField),
        (json!({"events": ["Wave."]}), RejectionCode::InvalidType),
        (json!({"format": "xml"}), RejectionCode::InvalidField),
        (json!({"webhook": "no/slashes"}), RejectionCode::InvalidName),
        (json!({"secret": "mine"}), RejectionCode::UnknownField),
    ] {
        let mut data = good.clone();
        for (name, value) in change.as_object().unwrap() {
            data[name] = value.clone();
        }
        let event = added(&mut bench, data);
        assert_eq!(bench.refused(event), code, "{change}");
    }
    let event = added(&mut bench, good.clone());
    let added_seq = bench.ok(event);
    let listed = webhooks::list(&bench.kv).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].added_seq, listed[0].acknowledged_seq), (added_seq, added_seq));
    assert_eq!(listed[0].events, vec!["wave.".to_string(), "rollback".to_string()]);

    // Progress only from the cluster itself.
    let progress = |bench: &mut Bench, seq: u64| {
        let mut event = bench.event(
            "webhook.progressed",
            &[("stream", "webhooks/wh-1/progress")],
            json!({"webhook": "wh-1", "seq": seq}),
        );
        event.id = webhooks::progress_event_id("wh-1", seq);
        event
    };
    let forged = progress(&mut bench, 99);
    assert_eq!(bench.refused(forged), RejectionCode::ReservedForSystem);
    let command = LedgerCommand {
        time_micros: bench.time_micros,
        requests: vec![AppendRequest {
            events: vec![progress(&mut bench, 7)],
            expected_version: ExpectedVersion::Any,
            actor: webhooks::WEBHOOK_ACTOR.into(),
        }],
        identity: None,
    };
    let mut overlay = Overlay::new(&bench.kv);
    let applied = apply_command(&mut overlay, &command).unwrap();
    assert!(matches!(applied.outcomes[0], AppendOutcome::Appended { .. }), "{:?}", applied.outcomes[0]);
    bench.kv.apply(overlay.into_writes());
    assert_eq!(webhooks::recorded_progress(&bench.kv, "wh-1").unwrap(), Some(7));
    assert_eq!(webhooks::list(&bench.kv).unwrap()[0].acknowledged_seq, 7);

    let removed = bench.event("webhook.removed", &[], json!({"webhook": "wh-1"}));
    bench.ok(removed);
    assert!(webhooks::list(&bench.kv).unwrap().is_empty());
}
