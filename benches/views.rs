//! The fleet view as the ledger keeps it: applying `target.registered`, `host.reported` and
//! `wave.started` events through `ledger::apply_command` on a fleet of 1,000 registered hosts
//! (the host records, wave counters and deployment records they rewrite), and reading the fleet
//! view of those hosts with `views::fleet`, now and as of a past seq. Registrations and reports
//! carry 256 bytes of `data`.
//!
//! Run: `cargo bench --profile dev --bench views`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetlog_raft::domain::canonical::to_canonical_string;
use fleetlog_raft::domain::event::{AppendOutcome, LedgerCommand, ProposedEvent};
use fleetlog_raft::domain::kv::{MemoryKv, Overlay};
use fleetlog_raft::domain::ledger::apply_command;
use fleetlog_raft::domain::records;
use fleetlog_raft::domain::views;
use serde_json::json;

use common::{command_of, padded};

/// Hosts registered in the one environment before anything is measured.
const HOSTS: usize = 1_000;
/// Events in each measured command of registrations or reports.
const EVENTS_PER_COMMAND: usize = 100;

const SERVICE: &str = "web";
const ENV: &str = "prod";
const RELEASE_OLD: &str = "1.0.0";
const RELEASE_NEW: &str = "2.0.0";
const DEPLOYMENT: &str = "web-prod-2";

fn host_name(number: usize) -> String {
    format!("web-{number:04}")
}

fn release_created(release: &str) -> ProposedEvent {
    let mut event = ProposedEvent::new(format!("release-{release}"), "release.created");
    event.service = Some(SERVICE.into());
    event.release = Some(release.into());
    event
}

fn target_registered(number: usize) -> ProposedEvent {
    let mut event = ProposedEvent::new(format!("register-{number}"), "target.registered");
    event.service = Some(SERVICE.into());
    event.env = Some(ENV.into());
    event.host = Some(host_name(number));
    event.data = padded(r#"{"group":"main","labels":{"note":""#, r#""}}"#);
    event
}

fn deployment_started() -> ProposedEvent {
    let mut event = ProposedEvent::new("deployment-started", "deployment.started");
    event.service = Some(SERVICE.into());
    event.env = Some(ENV.into());
    event.release = Some(RELEASE_NEW.into());
    event.deployment = Some(DEPLOYMENT.into());
    let waves = json!({"waves": [{"name": "all", "percent": 100}]});
    event.data = to_canonical_string(&waves).expect("the waves are canonicalisable");
    event
}

fn wave_started() -> ProposedEvent {
    let mut event = ProposedEvent::new("wave-started", "wave.started");
    event.deployment = Some(DEPLOYMENT.into());
    event.data = r#"{"wave":"all"}"#.into();
    event
}

/// The agent of host `number` reports it runs the new release; `round` keeps ids unique.
fn host_reported(number: usize, round: usize) -> ProposedEvent {
    let mut event = ProposedEvent::new(format!("report-{round}-{number}"), "host.reported");
    event.service = Some(SERVICE.into());
    event.env = Some(ENV.into());
    event.host = Some(host_name(number));
    event.release = Some(RELEASE_NEW.into());
    event.data = padded(r#"{"applied_seq":1,"message":""#, r#"","status":"running"}"#);
    event
}

/// Applies `command` to `kv` and checks that every request was appended.
fn commit(kv: &mut MemoryKv, command: &LedgerCommand) {
    let mut overlay = Overlay::new(&*kv);
    let applied = apply_command(&mut overlay, command).expect("no storage failure in memory");
    for outcome in &applied.outcomes {
        assert!(matches!(outcome, AppendOutcome::Appended { duplicate: false, .. }), "setup refused: {outcome:?}");
    }
    let writes = overlay.into_writes();
    kv.apply(writes);
}

/// Times applying `command` to `kv`, which never changes: every iteration does the same work.
fn bench_apply(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    kv: &MemoryKv,
    command: &LedgerCommand,
) {
    // Checked once, untimed: a refused command would measure the rejection instead.
    commit(&mut kv.clone(), command);
    group.bench_function(name, |bench| {
        bench.iter(|| {
            let mut overlay = Overlay::new(kv);
            apply_command(&mut overlay, command).expect("no storage failure in memory");
            overlay.into_writes().len()
        })
    });
}

fn fleet(criterion: &mut Criterion) {
    // Two releases and 1,000 registered hosts, then a deployment of the new release whose one
    // wave selects every host.
    let mut pending = MemoryKv::new();
    commit(&mut pending, &command_of(vec![release_created(RELEASE_OLD), release_created(RELEASE_NEW)]));
    commit(&mut pending, &command_of((0..HOSTS).map(target_registered).collect()));
    commit(&mut pending, &command_of(vec![deployment_started()]));
    let seq_before_wave = records::head(&pending).expect("the head reads").seq;
    let mut started = pending.clone();
    commit(&mut started, &command_of(vec![wave_started()]));
    // Every host has reported the new release: the converged fleet the reads look at.
    let mut converged = started.clone();
    commit(&mut converged, &command_of((0..HOSTS).map(|number| host_reported(number, 0)).collect()));

    let mut group = criterion.benchmark_group("views");

    group.throughput(Throughput::Elements(EVENTS_PER_COMMAND as u64));
    let registrations = command_of((HOSTS..HOSTS + EVENTS_PER_COMMAND).map(target_registered).collect());
    bench_apply(&mut group, "register 100 new hosts in a fleet of 1,000 (per command)", &started, &registrations);
    // Each report moves the wave's converged counter, so it rewrites the deployment record too.
    let reports = command_of((0..EVENTS_PER_COMMAND).map(|number| host_reported(number, 1)).collect());
    bench_apply(&mut group, "report 100 hosts running in a fleet of 1,000 (per command)", &started, &reports);

    // One event that rewrites every host: elements here are hosts, not events.
    group.throughput(Throughput::Elements(HOSTS as u64));
    bench_apply(
        &mut group,
        "start a wave of 1,000 hosts (per wave event)",
        &pending,
        &command_of(vec![wave_started()]),
    );

    let now = views::fleet(&converged, Some(SERVICE), Some(ENV), None).expect("the fleet reads");
    assert_eq!((now.hosts.len(), now.converged), (HOSTS, HOSTS as u64), "every host is registered and converged");
    group.bench_function("read the fleet view of 1,000 hosts (per read)", |bench| {
        bench.iter(|| views::fleet(&converged, Some(SERVICE), Some(ENV), None).expect("the fleet reads"))
    });
    // Every host changed after that seq, so each one is read from its history.
    let past = views::fleet(&converged, Some(SERVICE), Some(ENV), Some(seq_before_wave)).expect("the fleet reads");
    assert_eq!((past.hosts.len(), past.converged), (HOSTS, 0), "before the wave no host had a release");
    group.bench_function("read the fleet view of 1,000 hosts as of a past seq (per read)", |bench| {
        bench.iter(|| {
            views::fleet(&converged, Some(SERVICE), Some(ENV), Some(seq_before_wave)).expect("the fleet reads")
        })
    });
    group.finish();
}

criterion_group!(benches, fleet);
criterion_main!(benches);
