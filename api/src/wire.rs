//! JSON shapes of the views. Events are served as their canonical JSON text (see
//! `fleetlog_raft::domain::event::Event::canonical_json`), never re-serialised.

use fleetlog_raft::domain::event::format_time;
use fleetlog_raft::domain::ledger::validate::Selector;
use fleetlog_raft::domain::ledger::Directive;
use fleetlog_raft::domain::records::{DeploymentRecord, EnvironmentRecord, HostRecord, Step, TimelineEntry};
use fleetlog_raft::domain::views::{FleetView, ReleaseView};
use serde::Serialize;
use serde_json::{json, Value};

pub fn step(step: &Step) -> Value {
    json!({ "seq": step.seq, "time": format_time(step.time_micros), "actor": step.actor })
}

fn optional_step(value: &Option<Step>) -> Value {
    value.as_ref().map(step).unwrap_or(Value::Null)
}

/// One host in one (service, env), as served. Serialised straight from the record: a fleet view
/// of ten thousand hosts must not build ten thousand JSON trees.
#[derive(Serialize)]
pub struct HostView<'a> {
    host: &'a str,
    service: &'a str,
    env: &'a str,
    group: Option<&'a str>,
    labels: &'a std::collections::BTreeMap<String, String>,
    registered: bool,
    desired_release: Option<&'a str>,
    desired_seq: Option<u64>,
    desired_cause: Option<&'a str>,
    deployment: Option<&'a str>,
    /// The release the host runs: a failed install leaves the previous one.
    observed_release: Option<&'a str>,
    /// The newest report: its status, the release it was about, its message.
    status: Option<&'static str>,
    reported_release: Option<&'a str>,
    message: Option<&'a str>,
    applied_seq: Option<u64>,
    reported_seq: Option<u64>,
    reported_at: Option<String>,
    failure: Option<FailureView<'a>>,
    /// What the host's own health check said last (agents with `--check`); null: never said.
    health: Option<HealthView<'a>>,
    converged: bool,
    changed_seq: u64,
}

#[derive(Serialize)]
pub struct HealthView<'a> {
    state: &'static str,
    message: Option<&'a str>,
    seq: u64,
    time: String,
}

/// The newest failed install of a host that has not reported running since.
#[derive(Serialize)]
pub struct FailureView<'a> {
    release: &'a str,
    message: Option<&'a str>,
    attempt: u32,
    seq: u64,
    time: String,
}

pub fn host(record: &HostRecord) -> HostView<'_> {
    let desired = record.desired.as_ref();
    let observed = record.observed.as_ref();
    HostView {
        host: &record.host,
        service: &record.service,
        env: &record.env,
        group: record.group.as_deref(),
        labels: &record.labels,
        registered: record.registered,
        desired_release: desired.map(|d| d.release.as_str()),
        desired_seq: desired.map(|d| d.seq),
        desired_cause: desired.map(|d| d.cause.as_str()),
        deployment: desired.and_then(|d| d.deployment.as_deref()),
        observed_release: record.running.as_deref(),
        status: observed.map(|o| o.status.as_str()),
        reported_release: observed.map(|o| o.release.as_str()),
        message: observed.and_then(|o| o.message.as_deref()),
        applied_seq: observed.map(|o| o.applied_seq),
        reported_seq: observed.map(|o| o.reported_seq),
        reported_at: observed.map(|o| format_time(o.reported_micros)),
        failure: record.failure.as_ref().map(|failure| FailureView {
            release: &failure.release,
            message: failure.message.as_deref(),
            attempt: failure.attempt,
            seq: failure.reported_seq,
            time: format_time(failure.reported_micros),
        }),
        health: record.health.as_ref().map(|health| HealthView {
            state: if health.healthy { "healthy" } else { "unhealthy" },
            message: health.message.as_deref(),
            seq: health.reported_seq,
            time: format_time(health.reported_micros),
        }),
        converged: record.converged(),
        changed_seq: record.changed_seq,
    }
}

#[derive(Serialize)]
pub struct FleetSummary<'a> {
    desired: &'a std::collections::BTreeMap<String, u64>,
    observed: &'a std::collections::BTreeMap<String, u64>,
    converged: u64,
    failing: u64,
    total: usize,
}

#[derive(Serialize)]
pub struct FleetDocument<'a> {
    as_of_seq: u64,
    hosts: Vec<HostView<'a>>,
    summary: FleetSummary<'a>,
}

pub fn fleet(view: &FleetView) -> FleetDocument<'_> {
    FleetDocument {
        as_of_seq: view.as_of_seq,
        hosts: view.hosts.iter().map(host).collect(),
        summary: FleetSummary {
            desired: &view.desired,
            observed: &view.observed,
            converged: view.converged,
            failing: view.failing,
            total: view.hosts.len(),
        },
    }
}

fn selector(selector: &Selector) -> Value {
    match selector {
        Selector::Hosts(hosts) => json!({ "hosts": hosts }),
        Selector::Group(group) => json!({ "group": group }),
        Selector::Percent(percent) => json!({ "percent": percent }),
    }
}

pub fn deployment(record: &DeploymentRecord) -> Value {
    json!({
        "deployment": record.id,
        "service": record.service,
        "env": record.env,
        "release": record.release,
        "state": record.state.as_str(),
        "started": step(&record.started),
        "ended": optional_step(&record.ended),
        "end_reason": record.end_reason,
        "rolled_back_by": record.rolled_back_by,
        "selected_total": record.selected_total,
        "halted": record.halted.as_ref().map(|halt| json!({ "reason": halt.reason, "since": step(&halt.step) })),
        "overrides": record.overrides.iter().map(|item| json!({
            "seq": item.seq,
            "guard": item.guard,
            "reason": item.reason,
        })).collect::<Vec<_>>(),
        "waves": record.waves.iter().map(|wave| {
            let mut value = json!({
                "name": wave.name,
                "state": wave.state.as_str(),
                "started": optional_step(&wave.started),
                "completed": optional_step(&wave.completed),
                "settled": wave.settled_micros.map(format_time),
                "hosts": { "selected": wave.selected, "converged": wave.converged, "unhealthy": wave.unhealthy,
                           "failed": wave.failed },
            });
            value["selector"] = selector(&wave.selector);
            value
        }).collect::<Vec<_>>(),
    })
}

/// A host that failed a deployment's install, for the deployment view.
pub fn host_failure(deployment: &DeploymentRecord, record: &HostRecord) -> Value {
    let failure = record.failure.as_ref();
    let wave = record.desired.as_ref().and_then(|desired| desired.wave);
    json!({
        "host": record.host,
        "wave": wave.and_then(|index| deployment.waves.get(index as usize)).map(|wave| &wave.name),
        "observed_release": record.running,
        "message": failure.and_then(|failure| failure.message.as_deref()),
        "attempt": failure.map(|failure| failure.attempt),
        "seq": failure.map(|failure| failure.reported_seq),
        "time": failure.map(|failure| format_time(failure.reported_micros)),
    })
}

pub fn timeline_entry(entry: &TimelineEntry) -> Value {
    json!({
        "kind": entry.kind,
        "seq": entry.step.seq,
        "time": format_time(entry.step.time_micros),
        "actor": entry.step.actor,
        "env": entry.env,
        "deployment": entry.deployment,
        "wave": entry.wave,
        "detail": entry.detail,
    })
}

pub fn release(view: &ReleaseView) -> Value {
    json!({
        "service": view.record.service,
        "release": view.record.release,
        "created": step(&view.record.created),
        "blocked": view.record.blocked.is_some(),
        "blocked_reason": view.record.blocked.as_ref().map(|block| block.reason.clone()),
        "artifact": view.record.artifact,
        "committed_at": view.record.committed_micros.map(format_time),
        "notes": view.record.notes,
        "timeline": view.timeline.iter().map(timeline_entry).collect::<Vec<_>>(),
    })
}

pub fn environment(record: &EnvironmentRecord) -> Value {
    json!({
        "service": record.service,
        "env": record.env,
        "desired_release": record.desired_release,
        "active_deployment": record.active_deployment,
        "frozen": record.freeze.is_some(),
        "freeze_reason": record.freeze.as_ref().map(|freeze| freeze.reason.clone()),
    })
}

#[derive(Serialize)]
struct DirectiveView<'a> {
    seq: u64,
    host: &'a str,
    service: &'a str,
    env: &'a str,
    release: &'a str,
    cause: &'a str,
    deployment: Option<&'a str>,
}

/// A watch directive as one line of JSON. Rendered once per watcher of a changed host, so it
/// goes straight to text without building a `Value`.
pub fn directive_json(directive: &Directive) -> String {
    let view = DirectiveView {
        seq: directive.seq,
        host: &directive.host,
        service: &directive.service,
        env: &directive.env,
        release: &directive.release,
        cause: &directive.cause,
        deployment: directive.deployment.as_deref(),
    };
    serde_json::to_string(&view).unwrap_or_default()
}

/// `{"events":[…],…}` built from already-rendered event JSON texts plus extra members.
pub fn events_document(events: &[String], extra: &[(&str, Value)]) -> String {
    let total: usize = events.iter().map(String::len).sum();
    let mut text = String::with_capacity(total + events.len() + 64);
    text.push_str("{\"events\":[");
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(event);
    }
    text.push(']');
    for (name, value) in extra {
        text.push_str(&format!(",\"{name}\":{value}"));
    }
    text.push('}');
    text
}
