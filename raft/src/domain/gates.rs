//! What a deployment's policy says should happen next, from the deployment as the ledger holds
//! it and the time: nothing yet, the next step of a hands-off rollout, or a tripped gate.
//!
//! Pure: the leader's evaluator calls it on its applied state and appends what it returns as
//! events whose ids derive from the decision (see [`Decision::event_id`]), so a new leader that
//! evaluates the same state again writes nothing twice. The ledger checks those events like any
//! other, so a decision made on a state that moved on meanwhile is refused, not applied.

use serde_json::{json, Value};

use crate::domain::calendar::freeze_reason;
use crate::domain::event::ProposedEvent;
use crate::domain::keys::{Key, RecordTag};
use crate::domain::kv::KvRead;
use crate::domain::policy::{NoData, OnTrip, Policy};
use crate::domain::records::{self, AlertRecord, DeploymentRecord, DeploymentState, EnvironmentRecord, WaveState};

/// The actor of every event the cluster appends by itself.
pub const POLICY_ACTOR: &str = "system:policy";

/// Which gate tripped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    MaxFailed,
    MinHealthy,
    ConvergeDeadline,
    NoData,
    Alert,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::MaxFailed => "max_failed",
            Gate::MinHealthy => "min_healthy",
            Gate::ConvergeDeadline => "converge_deadline",
            Gate::NoData => "no_data",
            Gate::Alert => "alert",
        }
    }
}

/// What should happen to one deployment now.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing: a wave is converging or baking, or the policy leaves the next step to a person.
    Wait,
    /// The hands-off rollout moves on: complete the wave that baked green (if any), then start the
    /// next one, or complete the deployment after its last wave.
    Advance { complete: Option<usize>, start: Option<usize>, finish: bool, inputs: Value },
    /// A gate tripped on a wave: roll back, halt, or (policy `none`) only say so.
    Trip { wave: usize, gate: Gate, action: OnTrip, inputs: Value },
}

impl Decision {
    /// The id of the event a decision appends, derived from what was decided, so deciding the
    /// same thing twice is a duplicate. A trip also names the last resume, because a halted
    /// deployment that was resumed may trip again on the same wave.
    pub fn event_id(deployment: &DeploymentRecord, step: &str) -> String {
        let id = format!("policy/{}/{step}", deployment.id);
        if id.chars().count() <= crate::domain::limits::ID_CHARS_MAX {
            return id;
        }
        use sha2::Digest;
        format!("policy/{}", hex::encode(sha2::Sha256::digest(id.as_bytes())))
    }
}

/// The firing alerts of the deployment's environment that count against it: fired after it
/// started (an alert already firing then is not the release's doing) and matched by one of the
/// policy's matchers (every alert when the policy names none).
pub fn counted_alerts<'a>(
    deployment: &DeploymentRecord,
    policy: &Policy,
    alerts: &'a [AlertRecord],
) -> Vec<&'a AlertRecord> {
    alerts
        .iter()
        .filter(|alert| alert.firing)
        .filter(|alert| alert.fired.as_ref().is_some_and(|fired| fired.seq > deployment.started.seq))
        .filter(|alert| match &policy.alerts {
            None => true,
            Some(matchers) => matchers
                .iter()
                .any(|matcher| matcher.iter().all(|(label, value)| alert.labels.get(label) == Some(value))),
        })
        .collect()
}

/// Decides for `deployment` under `policy` at log time `now_micros`, given the alerts of its
/// environment.
pub fn evaluate(
    deployment: &DeploymentRecord,
    policy: &Policy,
    policy_seq: u64,
    alerts: &[AlertRecord],
    now_micros: i64,
) -> Decision {
    if deployment.state != DeploymentState::Active || deployment.halted.is_some() {
        return Decision::Wait;
    }
    let waves = &deployment.waves;
    let Some(current) = waves.iter().rposition(|wave| wave.state != WaveState::Pending) else {
        // Nothing started yet: a hands-off rollout starts its first wave at once.
        return match policy.auto_advance && !waves.is_empty() {
            true => Decision::Advance {
                complete: None,
                start: Some(0),
                finish: false,
                inputs: json!({"policy_seq": policy_seq, "step": "first wave"}),
            },
            false => Decision::Wait,
        };
    };
    let wave = &waves[current];
    if wave.state == WaveState::Completed {
        // Completed by a person (or an earlier decision) without the next step following, for
        // instance held by a freeze. An alert that fired meanwhile still counts: a window that
        // opens does not forget it.
        if let Some(trip) = alert_trip(deployment, policy, policy_seq, alerts, current, now_micros) {
            return trip;
        }
        if !policy.auto_advance {
            return Decision::Wait;
        }
        let next = current + 1;
        let inputs = json!({"policy_seq": policy_seq, "step": "after a completed wave", "wave": wave.name});
        return Decision::Advance {
            complete: None,
            start: (next < waves.len()).then_some(next),
            finish: next >= waves.len(),
            inputs,
        };
    }

    let gates = policy.gates(&wave.name);
    let started_micros = wave.started.as_ref().map_or(now_micros, |step| step.time_micros);
    let observed = json!({
        "selected": wave.selected, "converged": wave.converged, "unhealthy": wave.unhealthy, "failed": wave.failed,
        "wave_started_seq": wave.started.as_ref().map(|step| step.seq),
        "wave_started": micros_text(started_micros),
        "settled_since": wave.settled_micros.map(micros_text),
        "now": micros_text(now_micros),
    });
    let trip = |gate: Gate, action: OnTrip, threshold: Value| Decision::Trip {
        wave: current,
        gate,
        action,
        inputs: json!({
            "gate": gate.as_str(), "wave": wave.name, "observed": observed, "threshold": threshold,
            "policy_seq": policy_seq,
        }),
    };

    let allowed_failed = gates.max_failed.map_or(0, |amount| amount.of(wave.selected));
    if wave.failed > allowed_failed {
        return trip(Gate::MaxFailed, policy.on_trip, json!({ "max_failed": allowed_failed }));
    }
    if let Some(trip) = alert_trip(deployment, policy, policy_seq, alerts, current, now_micros) {
        return trip;
    }
    let Some(settled_micros) = wave.settled_micros else {
        if let Some(deadline) = gates.converge_deadline_seconds {
            if elapsed_seconds(started_micros, now_micros) >= deadline {
                return trip(Gate::ConvergeDeadline, policy.on_trip, json!({ "converge_deadline_seconds": deadline }));
            }
        }
        return Decision::Wait;
    };
    // Healthy: running the release and not failing its own health check.
    let required_healthy = gates.min_healthy.map_or(0, |amount| amount.of(wave.selected));
    if wave.converged.saturating_sub(wave.unhealthy) < required_healthy {
        return trip(Gate::MinHealthy, policy.on_trip, json!({ "min_healthy": required_healthy }));
    }
    let extra = if current == 0 { policy.first_wave_extra_bake_seconds } else { 0 };
    let bake = gates.bake_seconds + extra;
    if elapsed_seconds(settled_micros, now_micros) < bake {
        return Decision::Wait;
    }
    // Baked. A wave that selected nobody has nothing to show for it: no data.
    if wave.selected == 0 && policy.no_data == NoData::Halt {
        return trip(Gate::NoData, OnTrip::Halt, json!({ "no_data": "halt" }));
    }
    if !policy.auto_advance {
        return Decision::Wait;
    }
    let next = current + 1;
    Decision::Advance {
        complete: Some(current),
        start: (next < waves.len()).then_some(next),
        finish: next >= waves.len(),
        inputs: json!({
            "gate": "bake", "wave": wave.name, "observed": observed,
            "threshold": {"bake_seconds": bake, "min_healthy": required_healthy, "max_failed": allowed_failed},
            "policy_seq": policy_seq,
        }),
    }
}

/// Where the deployment's current wave stands against each gate of its policy at a moment, with
/// the thresholds [`evaluate`] applies: what the operator's page shows beside the wave. Times are
/// microseconds; the API writes them as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateStatus {
    pub wave: String,
    pub wave_state: &'static str,
    pub auto_advance: bool,
    pub allowed_failed: u64,
    pub failed: u64,
    pub max_failed_passing: bool,
    pub required_healthy: u64,
    pub healthy: u64,
    /// Judged once the wave has settled, as the evaluator judges it.
    pub min_healthy_passing: bool,
    pub bake_seconds: u64,
    pub settled_micros: Option<i64>,
    /// None until the wave has settled.
    pub bake_remaining_seconds: Option<u64>,
    pub converge_deadline: Option<DeadlineStatus>,
    pub alerts_counted: u64,
    pub now_micros: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadlineStatus {
    pub seconds: u64,
    pub elapsed_seconds: u64,
    pub passing: bool,
}

/// The gates of the deployment's current wave at `now_micros`; `None` when no wave has started
/// or the deployment is over.
pub fn status(
    deployment: &DeploymentRecord,
    policy: &Policy,
    alerts: &[AlertRecord],
    now_micros: i64,
) -> Option<GateStatus> {
    if deployment.state != DeploymentState::Active {
        return None;
    }
    let current = deployment.waves.iter().rposition(|wave| wave.state != WaveState::Pending)?;
    let wave = &deployment.waves[current];
    let gates = policy.gates(&wave.name);
    let allowed_failed = gates.max_failed.map_or(0, |amount| amount.of(wave.selected));
    let required_healthy = gates.min_healthy.map_or(0, |amount| amount.of(wave.selected));
    let healthy = wave.converged.saturating_sub(wave.unhealthy);
    let extra = if current == 0 { policy.first_wave_extra_bake_seconds } else { 0 };
    let bake = gates.bake_seconds + extra;
    let baked = wave.settled_micros.map(|settled| elapsed_seconds(settled, now_micros));
    let started_micros = wave.started.as_ref().map_or(now_micros, |step| step.time_micros);
    let counted = counted_alerts(deployment, policy, alerts).len() as u64;
    Some(GateStatus {
        wave: wave.name.clone(),
        wave_state: wave.state.as_str(),
        auto_advance: policy.auto_advance,
        allowed_failed,
        failed: wave.failed,
        max_failed_passing: wave.failed <= allowed_failed,
        required_healthy,
        healthy,
        min_healthy_passing: wave.settled_micros.is_none() || healthy >= required_healthy,
        bake_seconds: bake,
        settled_micros: wave.settled_micros,
        bake_remaining_seconds: baked.map(|baked| bake.saturating_sub(baked)),
        converge_deadline: gates.converge_deadline_seconds.map(|deadline| DeadlineStatus {
            seconds: deadline,
            elapsed_seconds: elapsed_seconds(started_micros, now_micros),
            passing: wave.settled_micros.is_some() || elapsed_seconds(started_micros, now_micros) < deadline,
        }),
        alerts_counted: counted,
        now_micros,
    })
}

/// The alert gate of wave `current`: a trip naming every counted alert, if there is one.
fn alert_trip(
    deployment: &DeploymentRecord,
    policy: &Policy,
    policy_seq: u64,
    alerts: &[AlertRecord],
    current: usize,
    now_micros: i64,
) -> Option<Decision> {
    let counted = counted_alerts(deployment, policy, alerts);
    if counted.is_empty() {
        return None;
    }
    let seen: Vec<Value> = counted
        .iter()
        .map(|alert| {
            json!({
                "fingerprint": alert.fingerprint, "source": alert.source, "starts_at": alert.starts_at,
                "labels": alert.labels, "fired_seq": alert.fired.as_ref().map(|fired| fired.seq),
            })
        })
        .collect();
    let wave = &deployment.waves[current];
    let matchers = policy.alerts.clone().map_or(Value::String("every alert".into()), |list| json!(list));
    let observed = json!({
        "selected": wave.selected, "converged": wave.converged, "unhealthy": wave.unhealthy, "failed": wave.failed,
        "wave_started_seq": wave.started.as_ref().map(|step| step.seq),
        "wave_started": wave.started.as_ref().map(|step| micros_text(step.time_micros)),
        "settled_since": wave.settled_micros.map(micros_text),
        "now": micros_text(now_micros),
    });
    Some(Decision::Trip {
        wave: current,
        gate: Gate::Alert,
        action: policy.on_trip,
        inputs: json!({
            "gate": Gate::Alert.as_str(), "wave": wave.name, "observed": observed,
            "threshold": {"alerts": matchers}, "alerts": seen, "policy_seq": policy_seq,
        }),
    })
}

/// `decision` while no wave may start (a freeze, scheduled or not): a green wave still completes
/// and a finished deployment still completes, but the next wave waits for the freeze to end,
/// when the gates are evaluated afresh.
pub fn hold_starts(decision: Decision) -> Decision {
    match decision {
        Decision::Advance { complete, start: Some(_), finish, inputs } => match complete.is_some() || finish {
            true => Decision::Advance { complete, start: None, finish, inputs },
            false => Decision::Wait,
        },
        other => other,
    }
}

/// The events that carry out `decision`, in the order they apply.
pub fn events_of(deployment: &DeploymentRecord, decision: Decision) -> Vec<ProposedEvent> {
    let step_event = |step: String, event_type: &str, data: Value| {
        let mut event = ProposedEvent::new(Decision::event_id(deployment, &step), event_type);
        event.deployment = Some(deployment.id.clone());
        event.data = crate::domain::canonical::to_canonical_string(&data).unwrap_or_else(|_| "{}".into());
        event
    };
    match decision {
        Decision::Wait => Vec::new(),
        Decision::Advance { complete, start, finish, inputs } => {
            let mut events = Vec::new();
            if let Some(index) = complete {
                let wave = &deployment.waves[index].name;
                events.push(step_event(
                    format!("{wave}/complete"),
                    "wave.completed",
                    json!({"wave": wave, "decision": inputs}),
                ));
            }
            if let Some(index) = start {
                let wave = &deployment.waves[index].name;
                events.push(step_event(
                    format!("{wave}/start"),
                    "wave.started",
                    json!({"wave": wave, "decision": inputs}),
                ));
            }
            if finish {
                events.push(step_event("complete".into(), "deployment.completed", json!({"decision": inputs})));
            }
            events
        }
        Decision::Trip { wave, gate, action, inputs } => {
            let name = &deployment.waves[wave].name;
            let since = deployment.resumed_seq.unwrap_or(0);
            let reason = format!("policy: {} tripped on wave {name}", gate.as_str());
            match action {
                OnTrip::Nothing => Vec::new(),
                OnTrip::Halt => vec![step_event(
                    format!("{name}/trip/{since}"),
                    "deployment.halted",
                    json!({"reason": reason, "decision": inputs}),
                )],
                OnTrip::Rollback => {
                    let mut event = step_event(
                        format!("{name}/trip/{since}"),
                        "rollback",
                        json!({"reason": reason, "decision": inputs}),
                    );
                    // A rollback names the environment; the ledger fills in the deployment it aborts.
                    event.deployment = None;
                    event.service = Some(deployment.service.clone());
                    event.env = Some(deployment.env.clone());
                    vec![event]
                }
            }
        }
    }
}

/// The events each active deployment's policy decides at `now_micros`, by deployment: what the
/// leader's evaluator appends (the simulator calls it the same way on its leader's state).
pub fn pending_decisions(kv: &dyn KvRead, now_micros: i64) -> crate::Result<Vec<(String, Vec<ProposedEvent>)>> {
    let environments: Vec<EnvironmentRecord> = records::scan_records(kv, &Key::record(RecordTag::Environment))?
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    let mut pending = Vec::new();
    for environment in environments {
        let Some(id) = &environment.active_deployment else { continue };
        let Some(policy) = records::policy(kv, &environment.service, &environment.env, None)? else { continue };
        let Some(deployment) = records::deployment(kv, id)? else { continue };
        let alerts = records::alerts_of(kv, Some(&environment.service), Some(&environment.env))?;
        let mut decision = evaluate(&deployment, &policy.policy, policy.set.seq, &alerts, now_micros);
        // A freeze holds the next wave (the ledger would refuse it); the gates are evaluated afresh
        // on every look, so the wave starts at the first look after the window closes, unless
        // something tripped meanwhile.
        let calendars = records::calendars_for(kv, &environment.service, &environment.env)?;
        if environment.freeze.is_some() || freeze_reason(&calendars, now_micros).is_some() {
            decision = hold_starts(decision);
        }
        let events = events_of(&deployment, decision);
        if !events.is_empty() {
            pending.push((deployment.id.clone(), events));
        }
    }
    Ok(pending)
}

fn elapsed_seconds(from_micros: i64, to_micros: i64) -> u64 {
    (to_micros.saturating_sub(from_micros).max(0) / 1_000_000) as u64
}

/// A moment as RFC 3339 with microseconds, as decisions and gate statuses write it.
pub fn micros_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::validate::Selector;
    use crate::domain::policy::parse;
    use crate::domain::records::{Block, Step, WaveRecord};

    const SECOND: i64 = 1_000_000;

    fn step(seq: u64, seconds: i64) -> Step {
        Step { seq, time_micros: seconds * SECOND, actor: "ci".into() }
    }

    fn deployment(waves: usize) -> DeploymentRecord {
        DeploymentRecord {
            id: "d-1".into(),
            service: "shop".into(),
            env: "prod".into(),
            release: "2.0".into(),
            state: DeploymentState::Active,
            waves: (0..waves)
                .map(|index| WaveRecord {
                    name: format!("w{index}"),
                    selector: Selector::Percent(100),
                    state: WaveState::Pending,
                    started: None,
                    completed: None,
                    selected: 0,
                    converged: 0,
                    unhealthy: 0,
                    failed: 0,
                    settled_micros: None,
                })
                .collect(),
            started: step(1, 0),
            ended: None,
            end_reason: None,
            rolled_back_by: None,
            selected_total: 0,
            selected_now: 0,
            overrides: Vec::new(),
            halted: None,
            resumed_seq: None,
        }
    }

    /// Wave `index` started at second 10 with `selected` hosts, `converged` and `failed` of them
    /// reported, settled at second 20 when every host has reported.
    fn started(
        mut deployment: DeploymentRecord,
        index: usize,
        selected: u64,
        converged: u64,
        failed: u64,
    ) -> DeploymentRecord {
        for earlier in &mut deployment.waves[..index] {
            earlier.state = WaveState::Completed;
        }
        let wave = &mut deployment.waves[index];
        wave.state = WaveState::Started;
        wave.started = Some(step(2, 10));
        (wave.selected, wave.converged, wave.failed) = (selected, converged, failed);
        wave.settled_micros = (converged + failed >= selected).then_some(20 * SECOND);
        deployment
    }

    fn policy(text: Value) -> Policy {
        parse(text).unwrap()
    }

    fn at(seconds: i64) -> i64 {
        seconds * SECOND
    }

    #[test]
    fn the_gate_status_shows_the_thresholds_the_evaluator_applies() {
        let policy =
            policy(json!({"bake_seconds": 60, "first_wave_extra_bake_seconds": 30, "max_failed": {"count": 1},
                                   "min_healthy": {"percent": 75}, "converge_deadline_seconds": 300}));
        assert_eq!(status(&deployment(2), &policy, &[], at(5)), None, "no wave has started");

        let converging = status(&started(deployment(2), 0, 4, 2, 1), &policy, &[], at(70)).unwrap();
        assert_eq!(converging.wave, "w0");
        assert_eq!((converging.allowed_failed, converging.failed, converging.max_failed_passing), (1, 1, true));
        assert_eq!((converging.required_healthy, converging.healthy), (3, 2));
        assert!(converging.min_healthy_passing, "not settled yet");
        assert_eq!(converging.bake_seconds, 90, "the first wave bakes 60 + 30 s");
        assert_eq!(converging.bake_remaining_seconds, None, "the bake starts once settled");
        let deadline = DeadlineStatus { seconds: 300, elapsed_seconds: 60, passing: true };
        assert_eq!(converging.converge_deadline, Some(deadline));
        assert_eq!(converging.alerts_counted, 0);

        let baking = status(&started(deployment(2), 0, 4, 4, 0), &policy, &[], at(20 + 50)).unwrap();
        assert_eq!(baking.bake_remaining_seconds, Some(40));
        assert!(baking.min_healthy_passing);
        assert_eq!(evaluate(&started(deployment(2), 0, 4, 4, 0), &policy, 5, &[], at(20 + 50)), Decision::Wait);

        let second = status(&started(deployment(2), 1, 4, 3, 1), &policy, &[], at(20 + 10)).unwrap();
        assert_eq!(second.bake_seconds, 60, "later waves bake without the extra");
        assert_eq!((second.required_healthy, second.healthy, second.min_healthy_passing), (3, 3, true));
        let failing = started(deployment(2), 1, 4, 2, 2);
        let tripped = status(&failing, &policy, &[], at(30)).unwrap();
        assert!(!tripped.max_failed_passing);
        assert!(matches!(evaluate(&failing, &policy, 5, &[], at(30)), Decision::Trip { gate: Gate::MaxFailed, .. }));

        let mut over = started(deployment(1), 0, 4, 4, 0);
        over.state = DeploymentState::Completed;
        assert_eq!(status(&over, &policy, &[], at(500)), None, "a deployment that ended has no gates");
    }

    #[test]
    fn a_hands_off_rollout_starts_bakes_and_advances() {
        let policy = policy(json!({"bake_seconds": 60, "first_wave_extra_bake_seconds": 30, "auto_advance": true}));
        let fresh = deployment(2);
        assert!(matches!(
            evaluate(&fresh, &policy, 5, &[], at(1)),
            Decision::Advance { start: Some(0), complete: None, .. }
        ));
        let converging = started(fresh.clone(), 0, 4, 3, 0);
        assert_eq!(evaluate(&converging, &policy, 5, &[], at(500)), Decision::Wait, "not every host reported");
        let baking = started(fresh.clone(), 0, 4, 4, 0);
        assert_eq!(evaluate(&baking, &policy, 5, &[], at(20 + 89)), Decision::Wait, "the first wave bakes 60 + 30 s");
        match evaluate(&baking, &policy, 5, &[], at(20 + 90)) {
            Decision::Advance { complete: Some(0), start: Some(1), finish: false, inputs } => {
                assert_eq!(inputs["gate"], "bake");
                assert_eq!(inputs["policy_seq"], 5);
            }
            other => panic!("expected the next wave, got {other:?}"),
        }
        let last = started(fresh, 1, 4, 4, 0);
        assert!(matches!(
            evaluate(&last, &policy, 5, &[], at(20 + 60)),
            Decision::Advance { complete: Some(1), start: None, finish: true, .. }
        ));
    }

    #[test]
    fn without_auto_advance_a_green_bake_waits_for_a_person() {
        let policy = policy(json!({"bake_seconds": 60}));
        assert_eq!(evaluate(&deployment(2), &policy, 5, &[], at(1)), Decision::Wait);
        assert_eq!(evaluate(&started(deployment(2), 0, 4, 4, 0), &policy, 5, &[], at(1_000)), Decision::Wait);
    }

    #[test]
    fn each_gate_trips_with_what_it_saw() {
        let policy = policy(json!({"max_failed": {"count": 1}, "min_healthy": {"percent": 75},
                                   "converge_deadline_seconds": 120, "on_trip": "halt", "auto_advance": true}));
        let gate_of = |decision: Decision| match decision {
            Decision::Trip { gate, action, inputs, .. } => {
                assert_eq!(action, OnTrip::Halt);
                assert_eq!(inputs["gate"], gate.as_str());
                gate
            }
            other => panic!("expected a trip, got {other:?}"),
        };
        assert_eq!(gate_of(evaluate(&started(deployment(2), 0, 10, 5, 2), &policy, 5, &[], at(11))), Gate::MaxFailed);
        assert_eq!(
            evaluate(&started(deployment(2), 0, 10, 5, 1), &policy, 5, &[], at(10 + 119)),
            Decision::Wait,
            "one failure is allowed, and the deadline is not up"
        );
        assert_eq!(
            gate_of(evaluate(&started(deployment(2), 0, 10, 5, 1), &policy, 5, &[], at(10 + 120))),
            Gate::ConvergeDeadline
        );
        // Settled with 7 of 8 converged, 1 failed: 87% ≥ 75%. With 2 of 4 converged: 50%.
        assert!(matches!(
            evaluate(&started(deployment(2), 0, 8, 7, 1), &policy, 5, &[], at(21)),
            Decision::Advance { .. }
        ));
        let policy_two_failures = parse(json!({"max_failed": {"count": 2}, "min_healthy": {"percent": 75}})).unwrap();
        assert_eq!(
            gate_of_any(evaluate(&started(deployment(2), 0, 4, 2, 2), &policy_two_failures, 5, &[], at(21))),
            Gate::MinHealthy
        );
    }

    #[test]
    fn unhealthy_hosts_do_not_count_as_healthy() {
        let policy = policy(json!({"min_healthy": {"percent": 75}, "auto_advance": true}));
        let mut wave = started(deployment(2), 0, 4, 4, 0);
        assert!(matches!(evaluate(&wave, &policy, 5, &[], at(21)), Decision::Advance { .. }));
        wave.waves[0].unhealthy = 2;
        match evaluate(&wave, &policy, 5, &[], at(21)) {
            Decision::Trip { gate: Gate::MinHealthy, inputs, .. } => assert_eq!(inputs["observed"]["unhealthy"], 2),
            other => panic!("expected min_healthy to trip, got {other:?}"),
        }
    }

    fn gate_of_any(decision: Decision) -> Gate {
        match decision {
            Decision::Trip { gate, .. } => gate,
            other => panic!("expected a trip, got {other:?}"),
        }
    }

    #[test]
    fn a_wave_that_selected_nobody_halts_for_no_data_unless_told_to_ignore_it() {
        let halting = policy(json!({"auto_advance": true, "on_trip": "rollback"}));
        match evaluate(&started(deployment(2), 0, 0, 0, 0), &halting, 5, &[], at(21)) {
            Decision::Trip { gate: Gate::NoData, action: OnTrip::Halt, .. } => {}
            other => panic!("expected a no-data halt, got {other:?}"),
        }
        let ignoring = policy(json!({"auto_advance": true, "no_data": "ignore"}));
        assert!(matches!(
            evaluate(&started(deployment(2), 0, 0, 0, 0), &ignoring, 5, &[], at(21)),
            Decision::Advance { .. }
        ));
    }

    fn alert(fingerprint: &str, labels: &[(&str, &str)], fired_seq: Option<u64>, firing: bool) -> AlertRecord {
        AlertRecord {
            source: "alertmanager".into(),
            fingerprint: fingerprint.into(),
            starts_at: "2026-12-07T00:00:00Z".into(),
            service: Some("shop".into()),
            env: Some("prod".into()),
            host: None,
            labels: labels.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
            firing,
            fired: fired_seq.map(|seq| step(seq, 15)),
            resolved: None,
        }
    }

    #[test]
    fn a_matching_alert_fired_during_the_wave_trips_it() {
        let matching = policy(json!({"alerts": [{"severity": "critical"}], "bake_seconds": 600}));
        let baking = started(deployment(2), 0, 4, 4, 0);
        let critical = alert("f1", &[("severity", "critical"), ("alertname", "Errors")], Some(9), true);
        match evaluate(&baking, &matching, 5, std::slice::from_ref(&critical), at(30)) {
            Decision::Trip { gate: Gate::Alert, action: OnTrip::Rollback, inputs, .. } => {
                assert_eq!(inputs["alerts"][0]["fingerprint"], "f1");
                assert_eq!(inputs["alerts"][0]["fired_seq"], 9);
            }
            other => panic!("expected an alert trip, got {other:?}"),
        }
        let others = [
            alert("f2", &[("severity", "warning")], Some(9), true),
            // Firing before the deployment started (seq 1): not the release's doing.
            alert("f3", &[("severity", "critical")], Some(1), true),
            alert("f4", &[("severity", "critical")], Some(9), false),
        ];
        assert_eq!(evaluate(&baking, &matching, 5, &others, at(30)), Decision::Wait, "none of these counts");
        let every_alert = policy(json!({"bake_seconds": 600}));
        assert!(matches!(
            evaluate(&baking, &every_alert, 5, &others[..1], at(30)),
            Decision::Trip { gate: Gate::Alert, .. }
        ));
    }

    #[test]
    fn a_freeze_completes_a_green_wave_but_holds_the_next_start() {
        let policy = policy(json!({"bake_seconds": 60, "auto_advance": true}));
        assert_eq!(hold_starts(evaluate(&deployment(2), &policy, 5, &[], at(1))), Decision::Wait);
        match hold_starts(evaluate(&started(deployment(2), 0, 4, 4, 0), &policy, 5, &[], at(100))) {
            Decision::Advance { complete: Some(0), start: None, finish: false, .. } => {}
            other => panic!("expected the wave completed and nothing started, got {other:?}"),
        }
        let mut completed = started(deployment(2), 0, 4, 4, 0);
        completed.waves[0].state = WaveState::Completed;
        assert_eq!(hold_starts(evaluate(&completed, &policy, 5, &[], at(200))), Decision::Wait);
        // The last wave finishing completes the deployment, which starts nothing.
        assert!(matches!(
            hold_starts(evaluate(&started(deployment(2), 1, 4, 4, 0), &policy, 5, &[], at(100))),
            Decision::Advance { complete: Some(1), start: None, finish: true, .. }
        ));
    }

    #[test]
    fn an_alert_fired_while_the_next_wave_waited_trips_when_it_could_start() {
        let policy = policy(json!({"bake_seconds": 60, "auto_advance": true}));
        let mut completed = started(deployment(2), 0, 4, 4, 0);
        completed.waves[0].state = WaveState::Completed;
        let fired = alert("f9", &[("alertname", "Latency")], Some(12), true);
        match evaluate(&completed, &policy, 5, std::slice::from_ref(&fired), at(500)) {
            Decision::Trip { wave: 0, gate: Gate::Alert, inputs, .. } => {
                assert_eq!(inputs["alerts"][0]["fingerprint"], "f9")
            }
            other => panic!("expected the alert to trip, got {other:?}"),
        }
    }

    #[test]
    fn a_halted_or_ended_deployment_gets_no_decision() {
        let policy = policy(json!({"auto_advance": true}));
        let mut halted = deployment(2);
        halted.halted = Some(Block { reason: "looking".into(), step: step(3, 5) });
        assert_eq!(evaluate(&halted, &policy, 5, &[], at(100)), Decision::Wait);
        let mut ended = started(deployment(2), 0, 4, 0, 4);
        ended.state = DeploymentState::Aborted;
        assert_eq!(evaluate(&ended, &policy, 5, &[], at(100)), Decision::Wait);
    }

    #[test]
    fn decision_ids_are_stable_and_short() {
        let mut record = deployment(1);
        assert_eq!(Decision::event_id(&record, "w0/trip/0"), "policy/d-1/w0/trip/0");
        record.id = "d".repeat(128);
        let long = Decision::event_id(&record, "w0/trip/0");
        assert!(long.len() <= 128 && long.starts_with("policy/"), "{long}");
        assert_eq!(long, Decision::event_id(&record, "w0/trip/0"));
    }
}
