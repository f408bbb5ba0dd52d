//! The server's side of the JSON shapes: `fleetlog_types`, filled from the ledger's records.
//! Events are served as their canonical JSON text (see
//! `fleetlog_raft::domain::event::Event::canonical_json`), never re-serialised.

use std::borrow::Cow;

use fleetlog_raft::domain::event::format_time;
use fleetlog_raft::domain::gates::{self, micros_text};
use fleetlog_raft::domain::ledger::validate;
use fleetlog_raft::domain::ledger::Directive;
use fleetlog_raft::domain::records::{
    AlertRecord, DeploymentRecord, EnvironmentRecord, HostRecord, Step, TimelineEntry,
};
use fleetlog_raft::domain::views::{FleetView, ReleaseView};
use fleetlog_types as types;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

pub fn step(step: &Step) -> types::Step {
    types::Step { seq: step.seq, time: format_time(step.time_micros), actor: step.actor.clone() }
}

fn text(value: &str) -> Cow<'_, str> {
    Cow::Borrowed(value)
}

/// One host in one (service, env), borrowing the record: a fleet view of ten thousand hosts must
/// not copy ten thousand hosts' text.
pub fn host(record: &HostRecord) -> types::HostView<'_> {
    let desired = record.desired.as_ref();
    let observed = record.observed.as_ref();
    types::HostView {
        host: text(&record.host),
        service: text(&record.service),
        env: text(&record.env),
        group: record.group.as_deref().map(text),
        labels: Cow::Borrowed(&record.labels),
        registered: record.registered,
        desired_release: desired.map(|d| text(&d.release)),
        desired_seq: desired.map(|d| d.seq),
        desired_cause: desired.map(|d| text(d.cause.as_str())),
        deployment: desired.and_then(|d| d.deployment.as_deref()).map(text),
        observed_release: record.running.as_deref().map(text),
        status: observed.map(|o| text(o.status.as_str())),
        reported_release: observed.map(|o| text(&o.release)),
        message: observed.and_then(|o| o.message.as_deref()).map(text),
        applied_seq: observed.map(|o| o.applied_seq),
        reported_seq: observed.map(|o| o.reported_seq),
        reported_at: observed.map(|o| format_time(o.reported_micros)),
        failure: record.failure.as_ref().map(|failure| types::FailureView {
            release: text(&failure.release),
            message: failure.message.as_deref().map(text),
            attempt: failure.attempt,
            seq: failure.reported_seq,
            time: format_time(failure.reported_micros),
        }),
        health: record.health.as_ref().map(|health| types::HealthView {
            state: text(if health.healthy { "healthy" } else { "unhealthy" }),
            message: health.message.as_deref().map(text),
            seq: health.reported_seq,
            time: format_time(health.reported_micros),
        }),
        converged: record.converged(),
        changed_seq: record.changed_seq,
    }
}

pub fn fleet(view: &FleetView) -> types::FleetView<'_> {
    types::FleetView {
        as_of_seq: view.as_of_seq,
        hosts: view.hosts.iter().map(host).collect(),
        summary: types::FleetSummary {
            desired: Cow::Borrowed(&view.desired),
            observed: Cow::Borrowed(&view.observed),
            converged: view.converged,
            failing: view.failing,
            total: view.hosts.len() as u64,
        },
    }
}

fn selector(selector: &validate::Selector) -> types::Selector {
    match selector {
        validate::Selector::Hosts(hosts) => types::Selector::Hosts(hosts.clone()),
        validate::Selector::Group(group) => types::Selector::Group(group.clone()),
        validate::Selector::Percent(percent) => types::Selector::Percent(*percent),
    }
}

pub fn deployment(record: &DeploymentRecord) -> types::Deployment {
    types::Deployment {
        deployment: record.id.clone(),
        service: record.service.clone(),
        env: record.env.clone(),
        release: record.release.clone(),
        state: record.state.as_str().to_string(),
        started: step(&record.started),
        ended: record.ended.as_ref().map(step),
        end_reason: record.end_reason.clone(),
        rolled_back_by: record.rolled_back_by,
        selected_total: record.selected_total,
        halted: record.halted.as_ref().map(|halt| types::Halt { reason: halt.reason.clone(), since: step(&halt.step) }),
        overrides: record
            .overrides
            .iter()
            .map(|item| types::Override { seq: item.seq, guard: item.guard.clone(), reason: item.reason.clone() })
            .collect(),
        waves: record
            .waves
            .iter()
            .map(|wave| types::Wave {
                name: wave.name.clone(),
                state: wave.state.as_str().to_string(),
                started: wave.started.as_ref().map(step),
                completed: wave.completed.as_ref().map(step),
                settled: wave.settled_micros.map(format_time),
                hosts: types::WaveHosts {
                    selected: wave.selected,
                    converged: wave.converged,
                    unhealthy: wave.unhealthy,
                    failed: wave.failed,
                },
                selector: selector(&wave.selector),
            })
            .collect(),
    }
}

/// A host that failed a deployment's install, for the deployment view.
pub fn host_failure(deployment: &DeploymentRecord, record: &HostRecord) -> types::DeploymentFailure {
    let failure = record.failure.as_ref();
    let wave = record.desired.as_ref().and_then(|desired| desired.wave);
    types::DeploymentFailure {
        host: record.host.clone(),
        wave: wave.and_then(|index| deployment.waves.get(index as usize)).map(|wave| wave.name.clone()),
        observed_release: record.running.clone(),
        message: failure.and_then(|failure| failure.message.clone()),
        attempt: failure.map(|failure| failure.attempt),
        seq: failure.map(|failure| failure.reported_seq),
        time: failure.map(|failure| format_time(failure.reported_micros)),
    }
}

/// The policy's gates of a deployment's current wave.
pub fn gate_status(status: &gates::GateStatus) -> types::GateStatus {
    types::GateStatus {
        wave: status.wave.clone(),
        wave_state: status.wave_state.to_string(),
        auto_advance: status.auto_advance,
        max_failed: types::deployment::MaxFailedGate {
            allowed: status.allowed_failed,
            failed: status.failed,
            passing: status.max_failed_passing,
        },
        min_healthy: types::deployment::MinHealthyGate {
            required: status.required_healthy,
            healthy: status.healthy,
            passing: status.min_healthy_passing,
        },
        bake: types::deployment::BakeGate {
            seconds: status.bake_seconds,
            settled_since: status.settled_micros.map(micros_text),
            remaining_seconds: status.bake_remaining_seconds,
        },
        converge_deadline: status.converge_deadline.map(|deadline| types::deployment::DeadlineGate {
            seconds: deadline.seconds,
            elapsed_seconds: deadline.elapsed_seconds,
            passing: deadline.passing,
        }),
        alerts: types::deployment::AlertGate { counted: status.alerts_counted, passing: status.alerts_counted == 0 },
        now: micros_text(status.now_micros),
    }
}

/// A stored policy in the shape `policy.set` takes. That shape is the domain's (its parser and
/// `Policy::to_json` are tested to round-trip); it is read into the API's type here, so a
/// difference between the two is a 500 naming it rather than a silent change on the wire.
pub fn policy(policy: &fleetlog_raft::domain::policy::Policy) -> ApiResult<types::Policy> {
    serde_json::from_value(policy.to_json()).map_err(|error| ApiError::internal(format!("the stored policy: {error}")))
}

/// A stored calendar's windows in the shape `freeze.calendar.set` takes (the domain's, as for
/// [`policy`]).
pub fn windows(calendar: &fleetlog_raft::domain::calendar::Calendar) -> ApiResult<Vec<types::Window>> {
    serde_json::from_value(calendar.windows_json())
        .map_err(|error| ApiError::internal(format!("the stored calendar: {error}")))
}

pub fn timeline_entry(entry: &TimelineEntry) -> types::TimelineEntry {
    types::TimelineEntry {
        kind: entry.kind.clone(),
        seq: entry.step.seq,
        time: format_time(entry.step.time_micros),
        actor: entry.step.actor.clone(),
        env: entry.env.clone(),
        deployment: entry.deployment.clone(),
        wave: entry.wave.clone(),
        detail: entry.detail.clone(),
    }
}

pub fn release(view: &ReleaseView) -> types::ReleaseView {
    types::ReleaseView {
        service: view.record.service.clone(),
        release: view.record.release.clone(),
        created: step(&view.record.created),
        blocked: view.record.blocked.is_some(),
        blocked_reason: view.record.blocked.as_ref().map(|block| block.reason.clone()),
        artifact: view.record.artifact.clone(),
        committed_at: view.record.committed_micros.map(format_time),
        notes: view.record.notes.clone(),
        timeline: view.timeline.iter().map(timeline_entry).collect(),
    }
}

pub fn environment(record: &EnvironmentRecord) -> types::EnvironmentView {
    types::EnvironmentView {
        service: record.service.clone(),
        env: record.env.clone(),
        desired_release: record.desired_release.clone(),
        active_deployment: record.active_deployment.clone(),
        frozen: record.freeze.is_some(),
        freeze_reason: record.freeze.as_ref().map(|freeze| freeze.reason.clone()),
    }
}

pub fn alert(alert: &AlertRecord) -> types::AlertView {
    types::AlertView {
        source: alert.source.clone(),
        fingerprint: alert.fingerprint.clone(),
        starts_at: alert.starts_at.clone(),
        service: alert.service.clone(),
        env: alert.env.clone(),
        host: alert.host.clone(),
        labels: alert.labels.clone(),
        state: if alert.firing { "firing" } else { "resolved" }.to_string(),
        fired: alert.fired.as_ref().map(step),
        resolved: alert.resolved.as_ref().map(step),
    }
}

/// A watch directive as one line of JSON. Rendered once per watcher of a changed host, so it
/// borrows the directive and goes straight to text.
pub fn directive_json(directive: &Directive) -> String {
    let view = types::Directive {
        seq: directive.seq,
        host: Cow::Borrowed(&directive.host),
        service: Cow::Borrowed(&directive.service),
        env: Cow::Borrowed(&directive.env),
        release: Cow::Borrowed(&directive.release),
        cause: Cow::Borrowed(&directive.cause),
        deployment: directive.deployment.as_deref().map(Cow::Borrowed),
    };
    serde_json::to_string(&view).unwrap_or_default()
}

/// The text of `document`, a page type whose first member is `events`, serialised with no events,
/// with the already-rendered event texts spliced into that array: the canonical texts are served
/// as they are, never parsed or re-serialised, and every other member's name comes from the type.
pub fn events_document(events: &[String], document: &impl Serialize) -> ApiResult<String> {
    const EMPTY_EVENTS: &str = "{\"events\":[]";
    let rest = serde_json::to_string(document).map_err(ApiError::internal)?;
    let Some(tail) = rest.strip_prefix(EMPTY_EVENTS) else {
        return Err(ApiError::internal(format!("an event page must start with an empty events array: {rest}")));
    };
    let total: usize = events.iter().map(String::len).sum();
    let mut text = String::with_capacity(total + events.len() + rest.len());
    text.push_str("{\"events\":[");
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(event);
    }
    text.push(']');
    text.push_str(tail);
    Ok(text)
}
