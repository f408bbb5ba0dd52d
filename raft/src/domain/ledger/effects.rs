//! What each domain event does to the views, and the rules it must pass against the state at its
//! seq (SPEC section 2, "Domain event types").

use std::collections::BTreeMap;

use super::selection;
use super::validate::{AlertFacts, Command, HostStatus, Selector, WaveSpec};
use super::{reject, Step};
use crate::domain::calendar::{self, Calendar};
use crate::domain::desired::{self, Mark};
use crate::domain::event::ProposedEvent;
use crate::domain::invariant;
use crate::domain::kv::{KvRead, Overlay, Space};
use crate::domain::policy::Policy;
use crate::domain::records::{
    self, alert_key, calendar_key, deployment_by_environment_key, deployment_by_seq_key, deployment_key,
    environment_key, host_environment_key, host_group_key, host_key, layer_key, policy_key, release_key, tally_key,
    timeline_key, AlertRecord, Assignment, Block, CalendarRecord, DeploymentRecord, DeploymentState, EnvironmentRecord,
    Failure, Health, HostRecord, LayerRecord, Observed, Override, PolicyRecord, ReleaseCounts, ReleaseRecord,
    StartedWave, Tally, TimelineEntry, WaveRecord, WaveRule, WaveState,
};
use crate::domain::rejection::{Rejection, RejectionCode};

/// The event being applied.
pub(crate) struct Context<'a> {
    pub seq: u64,
    pub time_micros: i64,
    pub actor: &'a str,
    pub proposal: &'a ProposedEvent,
}

impl Context<'_> {
    fn step(&self) -> records::Step {
        records::Step { seq: self.seq, time_micros: self.time_micros, actor: self.actor.to_string() }
    }

    /// A field the static check guaranteed present for this type.
    fn field(&self, value: &Option<String>, name: &str) -> Step<String> {
        match value {
            Some(value) => Ok(value.clone()),
            None => reject(RejectionCode::MissingField, format!("{} needs {name}", self.proposal.event_type)),
        }
    }
}

/// Envelope fields as committed: the ledger fills the ones it derives (the service, env and
/// release of a deployment's steps; the target and aborted deployment of a rollback).
#[derive(Clone, Debug, Default)]
pub(crate) struct Envelope {
    pub service: Option<String>,
    pub env: Option<String>,
    pub release: Option<String>,
    pub deployment: Option<String>,
}

pub(crate) struct Effect {
    pub envelope: Envelope,
    /// The environment's desired layer, when this event changed it.
    pub layer: Option<LayerRecord>,
    /// The host whose registration this event began, changed or ended.
    pub registration: Option<String>,
}

pub(crate) fn apply(state: &mut Overlay<'_>, context: &Context<'_>, command: &Command) -> Step<Effect> {
    let proposal = context.proposal;
    let mut effect = Effect {
        envelope: Envelope {
            service: proposal.service.clone(),
            env: proposal.env.clone(),
            release: proposal.release.clone(),
            deployment: proposal.deployment.clone(),
        },
        layer: None,
        registration: None,
    };
    match command {
        Command::ReleaseCreated { artifact, notes, committed_micros } => {
            release_created(state, context, artifact, notes, *committed_micros)?
        }
        Command::ReleaseBlocked { reason } => release_blocking(state, context, true, reason)?,
        Command::ReleaseUnblocked { reason } => release_blocking(state, context, false, reason)?,
        Command::TargetRegistered { group, labels } => {
            effect.registration = target_registered(state, context, group, labels)?;
        }
        Command::TargetDeregistered => effect.registration = Some(target_deregistered(state, context)?),
        Command::DeploymentStarted { waves, force, freeze_override } => {
            effect.layer = Some(deployment_started(state, context, waves, force, freeze_override)?);
        }
        Command::WaveStarted { wave, force, freeze_override } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            effect.layer = Some(wave_started(state, context, deployment, wave, force, freeze_override)?);
        }
        Command::WaveCompleted { wave, force } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            wave_completed(state, context, deployment, wave, force)?;
        }
        Command::DeploymentCompleted { force } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            effect.layer = deployment_ended(state, context, deployment, Ending::Completed { force })?;
        }
        Command::DeploymentAborted { reason } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            effect.layer = deployment_ended(state, context, deployment, Ending::Aborted { reason })?;
        }
        Command::DeploymentHalted { reason } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            halt(state, context, deployment, true, reason)?;
        }
        Command::DeploymentResumed { reason } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            halt(state, context, deployment, false, reason)?;
        }
        Command::PolicySet { policy } => policy_set(state, context, policy)?,
        Command::Alert { firing, alert } => alert_changed(state, context, *firing, alert)?,
        Command::Rollback { reason } => effect.layer = Some(rollback(state, context, reason, &mut effect.envelope)?),
        Command::HostReported { status, applied_seq, message, health } => {
            host_reported(state, context, *status, *applied_seq, message, *health)?
        }
        Command::FreezeStarted { reason } => freeze(state, context, Some(reason))?,
        Command::FreezeEnded { .. } => freeze(state, context, None)?,
        Command::CalendarSet { calendar } => calendar_set(state, context, calendar)?,
        Command::WebhookAdded | Command::WebhookRemoved => {}
        Command::WebhookProgressed => {
            if context.actor != crate::domain::webhooks::WEBHOOK_ACTOR {
                return reject(
                    RejectionCode::ReservedForSystem,
                    format!("only {} records a webhook's progress", crate::domain::webhooks::WEBHOOK_ACTOR),
                );
            }
        }
        Command::Custom => {}
    }
    Ok(effect)
}

fn release_created(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    artifact: &Option<String>,
    notes: &Option<String>,
    committed_micros: Option<i64>,
) -> Step<()> {
    let service = context.field(&context.proposal.service, "service")?;
    let release = context.field(&context.proposal.release, "release")?;
    if records::release(state, &service, &release)?.is_some() {
        return reject(RejectionCode::ReleaseExists, format!("release {service}@{release} already exists"));
    }
    let record = ReleaseRecord {
        service: service.clone(),
        release: release.clone(),
        created: context.step(),
        blocked: None,
        artifact: artifact.clone(),
        notes: notes.clone(),
        committed_micros,
    };
    records::write_versioned(state, &release_key(&service, &release), context.seq, &record)?;
    timeline(state, context, &service, &release, "created", None, None, None, None)
}

/// Blocks or unblocks a release.
fn release_blocking(state: &mut Overlay<'_>, context: &Context<'_>, block: bool, reason: &str) -> Step<()> {
    let service = context.field(&context.proposal.service, "service")?;
    let release = context.field(&context.proposal.release, "release")?;
    let Some(mut record) = records::release(state, &service, &release)? else {
        return reject(RejectionCode::UnknownRelease, format!("release {service}@{release} does not exist"));
    };
    match (block, &record.blocked) {
        (true, Some(_)) => {
            return reject(
                RejectionCode::ReleaseAlreadyBlocked,
                format!("release {service}@{release} is already blocked"),
            )
        }
        (false, None) => {
            return reject(RejectionCode::ReleaseNotBlocked, format!("release {service}@{release} is not blocked"))
        }
        _ => {}
    }
    record.blocked = block.then(|| Block { reason: reason.to_string(), step: context.step() });
    records::write_versioned(state, &release_key(&service, &release), context.seq, &record)?;
    let kind = if block { "blocked" } else { "unblocked" };
    timeline(state, context, &service, &release, kind, None, None, None, Some(reason.to_string()))
}

/// Registers a host, or updates its registration. Returns the host when its registration began
/// (new, back after a deregistration, or moved to another group): its desired release changes.
fn target_registered(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    group: &Option<String>,
    labels: &BTreeMap<String, String>,
) -> Step<Option<String>> {
    let (service, env, host) = host_address(context)?;
    let previous = records::host(state, &service, &env, &host)?;
    let mut record = previous.clone().unwrap_or_else(|| HostRecord {
        host: host.clone(),
        service: service.clone(),
        env: env.clone(),
        registered: false,
        group: None,
        labels: BTreeMap::new(),
        registered_seq: context.seq,
        desired: None,
        observed: None,
        running: None,
        failure: None,
        health: None,
        changed_seq: context.seq,
    });
    // Waves select by group among the hosts registered before them: a host that moves to
    // another group starts a new registration, as one coming back after a deregistration does.
    let begins = !record.registered || record.group != *group;
    if begins {
        if record.registered {
            remove_from_group(state, &record);
        }
        record.registered_seq = context.seq;
        if let Some(group) = group {
            state.put(Space::State, host_group_key(&service, &env, group, &host).into_bytes(), Vec::new());
        }
    }
    record.registered = true;
    record.group = group.clone();
    record.labels = labels.clone();
    if previous.is_none() {
        state.put(Space::State, host_environment_key(&host, &service, &env).into_bytes(), Vec::new());
    }
    save_host(state, context, previous.as_ref(), record)?;
    Ok(begins.then_some(host))
}

fn target_deregistered(state: &mut Overlay<'_>, context: &Context<'_>) -> Step<String> {
    let (service, env, host) = host_address(context)?;
    let previous = registered_host(state, &service, &env, &host)?;
    let mut record = previous.clone();
    record.registered = false;
    remove_from_group(state, &record);
    save_host(state, context, Some(&previous), record)?;
    Ok(host)
}

fn remove_from_group(state: &mut Overlay<'_>, record: &HostRecord) {
    if let Some(group) = &record.group {
        state.delete(Space::State, host_group_key(&record.service, &record.env, group, &record.host).into_bytes());
    }
}

fn deployment_started(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    waves: &[WaveSpec],
    force: &Option<String>,
    freeze_override: &Option<String>,
) -> Step<LayerRecord> {
    let proposal = context.proposal;
    let id = context.field(&proposal.deployment, "deployment")?;
    let service = context.field(&proposal.service, "service")?;
    let env = context.field(&proposal.env, "env")?;
    let release = context.field(&proposal.release, "release")?;
    if records::deployment(state, &id)?.is_some() {
        return reject(RejectionCode::DeploymentExists, format!("deployment {id:?} already exists"));
    }
    deployable(state, &service, &release)?;
    let mut environment = records::environment(state, &service, &env)?;
    if let Some(active) = &environment.active_deployment {
        return reject(
            RejectionCode::DeploymentActive,
            format!("deployment {active:?} is still active for {service}/{env}; complete or abort it first"),
        );
    }
    refuse_if_frozen(&environment)?;
    let mut overrides = Vec::new();
    scheduled_freeze(state, context, &service, &env, freeze_override, &mut overrides)?;
    if records::tally(state, &service, &env)?.registered == 0 {
        let refusal = Rejection::new(
            RejectionCode::NoHosts,
            format!("{service}/{env} has no registered host, so this deployment would reach nobody (a misspelt env?)"),
        );
        guard(context, refusal, force, &mut overrides)?;
    } else if let Some(refusal) = waves.iter().find_map(|wave| empty_group(state, &service, &env, wave).transpose()) {
        guard(context, refusal?, force, &mut overrides)?;
    }
    let record = DeploymentRecord {
        id: id.clone(),
        service: service.clone(),
        env: env.clone(),
        release: release.clone(),
        state: DeploymentState::Active,
        waves: waves
            .iter()
            .map(|wave| WaveRecord {
                name: wave.name.clone(),
                selector: wave.selector.clone(),
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
        started: context.step(),
        ended: None,
        end_reason: None,
        rolled_back_by: None,
        selected_total: 0,
        selected_now: 0,
        overrides,
        halted: None,
        resumed_seq: None,
    };
    records::write_versioned(state, &deployment_key(&id), context.seq, &record)?;
    state.put(
        Space::State,
        deployment_by_environment_key(&service, &env, context.seq).into_bytes(),
        id.as_bytes().to_vec(),
    );
    state.put(Space::State, deployment_by_seq_key(context.seq).into_bytes(), id.as_bytes().to_vec());
    environment.active_deployment = Some(id.clone());
    // A recovery not finished by now is abandoned: the hosts are sent somewhere else.
    environment.recovering = None;
    records::write_versioned(state, &environment_key(&service, &env), context.seq, &environment)?;
    let mut layer = records::layer(state, &service, &env)?;
    layer.assignments.push(Assignment::Deployment { id: id.clone(), release: release.clone(), waves: Vec::new() });
    records::write_versioned(state, &layer_key(&service, &env), context.seq, &layer)?;
    let detail = forced(&record.overrides, context.seq);
    timeline(state, context, &service, &release, "deployment.started", Some(&env), Some(&id), None, detail)?;
    Ok(layer)
}

/// Loads the deployment a step names, checks it is active, and fills the envelope from it.
fn active_deployment(state: &Overlay<'_>, context: &Context<'_>, envelope: &mut Envelope) -> Step<DeploymentRecord> {
    let id = context.field(&context.proposal.deployment, "deployment")?;
    let Some(deployment) = records::deployment(state, &id)? else {
        return reject(RejectionCode::UnknownDeployment, format!("deployment {id:?} does not exist"));
    };
    let derived = [
        ("service", &mut envelope.service, &deployment.service),
        ("env", &mut envelope.env, &deployment.env),
        ("release", &mut envelope.release, &deployment.release),
    ];
    for (name, given, actual) in derived {
        match given {
            Some(value) if value != actual => {
                return reject(
                    RejectionCode::FieldMismatch,
                    format!("deployment {id:?} has {name} {actual:?}, the event says {value:?}"),
                )
            }
            _ => *given = Some(actual.clone()),
        }
    }
    if deployment.state != DeploymentState::Active {
        return reject(
            RejectionCode::DeploymentNotActive,
            format!("deployment {id:?} is {}", deployment.state.as_str()),
        );
    }
    Ok(deployment)
}

/// Starts a wave: its selector becomes a rule in the environment's layer, whatever the number of
/// hosts it selects; no host record is written.
fn wave_started(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    mut deployment: DeploymentRecord,
    wave_name: &str,
    force: &Option<String>,
    freeze_override: &Option<String>,
) -> Step<LayerRecord> {
    let index = wave_index(&deployment, wave_name)?;
    if let Some(previous) = deployment.waves[..index].iter().find(|wave| wave.state != WaveState::Completed) {
        return reject(
            RejectionCode::WaveOutOfOrder,
            format!("wave {wave_name:?} cannot start before wave {:?} has completed", previous.name),
        );
    }
    if deployment.waves[index].state != WaveState::Pending {
        return reject(RejectionCode::WaveOutOfOrder, format!("wave {wave_name:?} has already started"));
    }
    if let Some(halt) = &deployment.halted {
        return reject(
            RejectionCode::DeploymentHalted,
            format!("deployment {:?} is halted ({}); resume it before starting a wave", deployment.id, halt.reason),
        );
    }
    let mut environment = records::environment(state, &deployment.service, &deployment.env)?;
    refuse_if_frozen(&environment)?;
    scheduled_freeze(state, context, &deployment.service, &deployment.env, freeze_override, &mut deployment.overrides)?;
    deployable(state, &deployment.service, &deployment.release)?;
    let spec = WaveSpec { name: wave_name.to_string(), selector: deployment.waves[index].selector.clone() };
    if let Some(refusal) = empty_group(state, &deployment.service, &deployment.env, &spec)? {
        guard(context, refusal, force, &mut deployment.overrides)?;
    }

    let mut layer = records::layer(state, &deployment.service, &deployment.env)?;
    // The active deployment is always the newest assignment: nothing else is added while it runs.
    let Some(Assignment::Deployment { id, waves: started, .. }) = layer.assignments.last_mut() else {
        invariant::violated(format!(
            "event seq {}: active deployment {:?} is not the newest assignment of its layer",
            context.seq, deployment.id
        ));
    };
    if *id != deployment.id {
        invariant::violated(format!(
            "event seq {}: the layer's newest deployment is {id:?}, the active one {:?}",
            context.seq, deployment.id
        ));
    }
    let tally = records::tally(state, &deployment.service, &deployment.env)?;
    let selection = selection::select(state, &deployment, index, started, &tally)?;
    let barrier = selection.rule == WaveRule::All;
    started.push(StartedWave { index: index as u32, seq: context.seq, rule: selection.rule });
    if barrier {
        // Every host registered now is this deployment's: nothing older can reach a host again.
        let newest = layer.assignments.len() - 1;
        layer.assignments.drain(..newest);
    }
    records::write_versioned(state, &layer_key(&deployment.service, &deployment.env), context.seq, &layer)?;

    let wave = &mut deployment.waves[index];
    wave.state = WaveState::Started;
    wave.started = Some(context.step());
    wave.selected = selection.selected;
    wave.converged = selection.converged;
    wave.unhealthy = selection.unhealthy;
    wave.failed = selection.failed;
    settle(wave, context.time_micros);
    deployment.selected_total += selection.selected;
    deployment.selected_now += selection.selected;
    records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;

    environment.desired_release = Some(deployment.release.clone());
    records::write_versioned(state, &environment_key(&deployment.service, &deployment.env), context.seq, &environment)?;
    deployment_timeline(
        state,
        context,
        &deployment,
        "wave.started",
        Some(wave_name),
        forced(&deployment.overrides, context.seq),
    )?;
    Ok(layer)
}

fn wave_completed(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    mut deployment: DeploymentRecord,
    wave_name: &str,
    force: &Option<String>,
) -> Step<()> {
    let index = wave_index(&deployment, wave_name)?;
    match deployment.waves[index].state {
        WaveState::Pending => {
            return reject(RejectionCode::WaveNotStarted, format!("wave {wave_name:?} has not started"))
        }
        WaveState::Completed => {
            return reject(RejectionCode::WaveAlreadyCompleted, format!("wave {wave_name:?} has already completed"))
        }
        WaveState::Started => {}
    }
    let allowed = failures_allowed(state, &deployment)?;
    let wave = &deployment.waves[index];
    if wave.failed > allowed[index] {
        let refusal = Rejection::new(
            RejectionCode::HostsFailed,
            format!(
                "wave {wave_name:?} has {} failed on {} (of {} selected; the policy allows {}); roll back, abort, or wait for a retry to succeed",
                hosts(wave.failed),
                deployment.release,
                wave.selected,
                allowed[index]
            ),
        );
        guard(context, refusal, force, &mut deployment.overrides)?;
    }
    deployment.waves[index].state = WaveState::Completed;
    deployment.waves[index].completed = Some(context.step());
    deployment.waves[index].settled_micros = None;
    records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
    deployment_timeline(
        state,
        context,
        &deployment,
        "wave.completed",
        Some(wave_name),
        forced(&deployment.overrides, context.seq),
    )
}

/// How a deployment ends.
enum Ending<'a> {
    /// Every wave completed; `force` overrides the failed-hosts guard.
    Completed {
        force: &'a Option<String>,
    },
    Aborted {
        reason: &'a str,
    },
}

/// Completes or aborts a deployment. Its counters are final from here on. Returns the layer
/// when the deployment started no wave and leaves it.
fn deployment_ended(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    mut deployment: DeploymentRecord,
    ending: Ending<'_>,
) -> Step<Option<LayerRecord>> {
    let (kind, abort_reason) = match ending {
        Ending::Completed { force } => {
            if let Some(open) = deployment.waves.iter().find(|wave| wave.state != WaveState::Completed) {
                return reject(
                    RejectionCode::WavesIncomplete,
                    format!(
                        "wave {:?} is {}; complete every wave or abort the deployment",
                        open.name,
                        open.state.as_str()
                    ),
                );
            }
            let allowed = failures_allowed(state, &deployment)?;
            let failed: u64 = deployment.waves.iter().map(|wave| wave.failed).sum();
            let over = deployment.waves.iter().zip(&allowed).any(|(wave, allowed)| wave.failed > *allowed);
            if over {
                let refusal = Rejection::new(
                    RejectionCode::HostsFailed,
                    format!(
                        "deployment {:?} has {} failed on {}; roll back or abort it",
                        deployment.id,
                        hosts(failed),
                        deployment.release
                    ),
                );
                guard(context, refusal, force, &mut deployment.overrides)?;
            }
            deployment.state = DeploymentState::Completed;
            ("deployment.completed", None)
        }
        Ending::Aborted { reason } => {
            deployment.state = DeploymentState::Aborted;
            ("deployment.aborted", Some(reason.to_string()))
        }
    };
    deployment.ended = Some(context.step());
    deployment.end_reason = abort_reason.clone();
    records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
    let mut environment = records::environment(state, &deployment.service, &deployment.env)?;
    environment.active_deployment = None;
    records::write_versioned(state, &environment_key(&deployment.service, &deployment.env), context.seq, &environment)?;
    deployment_timeline(
        state,
        context,
        &deployment,
        kind,
        None,
        abort_reason.or_else(|| forced(&deployment.overrides, context.seq)),
    )?;
    // A deployment that started no wave decides nothing: the layer lets go of it.
    let mut layer = records::layer(state, &deployment.service, &deployment.env)?;
    let unused = matches!(
        layer.assignments.last(),
        Some(Assignment::Deployment { id, waves, .. }) if *id == deployment.id && waves.is_empty()
    );
    if !unused {
        return Ok(None);
    }
    layer.assignments.pop();
    records::write_versioned(state, &layer_key(&deployment.service, &deployment.env), context.seq, &layer)?;
    Ok(Some(layer))
}

fn rollback(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    reason: &str,
    envelope: &mut Envelope,
) -> Step<LayerRecord> {
    let service = context.field(&context.proposal.service, "service")?;
    let env = context.field(&context.proposal.env, "env")?;
    let mut environment = records::environment(state, &service, &env)?;
    let active = match &environment.active_deployment {
        Some(id) => records::deployment(state, id)?,
        None => None,
    };
    // The release being rolled back: the active deployment's, else the last completed one's.
    let last = match &active {
        Some(_) => None,
        None => last_completed(state, &service, &env, |_| Ok(true))?,
    };
    let rolled_back_release = match (&active, &last) {
        (Some(deployment), _) | (None, Some(deployment)) => Some(deployment.release.clone()),
        (None, None) => None,
    };
    let target = match &context.proposal.release {
        Some(release) => {
            deployable(state, &service, release)?;
            release.clone()
        }
        None => {
            let Some(from) = &rolled_back_release else {
                return reject(
                    RejectionCode::NoRollbackTarget,
                    format!("{service}/{env} has no completed deployment to roll back to; name a release"),
                );
            };
            let candidate = last_completed(state, &service, &env, |deployment| {
                if deployment.release == *from {
                    return Ok(false);
                }
                // A release no host there ever reported running is no safe place to go back to.
                if state.get(Space::State, records::ran_key(&service, &env, &deployment.release).bytes())?.is_none() {
                    return Ok(false);
                }
                let release = records::release(state, &service, &deployment.release)?;
                Ok(release.is_some_and(|release| release.blocked.is_none()))
            })?;
            match candidate {
                Some(deployment) => deployment.release,
                None => {
                    return reject(
                        RejectionCode::NoRollbackTarget,
                        format!(
                            "{service}/{env} has no earlier completed release other than {from} that ran on a host there and is not blocked; name a release"
                        ),
                    )
                }
            }
        }
    };
    envelope.release = Some(target.clone());

    // The failure recovered from: the deployment's halt if it was halted, else this rollback;
    // a rollback during a recovery keeps the first failure and changes only the target.
    let failed_deployment = active.as_ref().or(last.as_ref()).map(|deployment| deployment.id.clone());
    let failure = active.as_ref().and_then(|deployment| deployment.halted.as_ref()).map(|halt| halt.step.clone());
    environment.recovering = Some(match environment.recovering.take() {
        Some(earlier) => records::Recovering { target: target.clone(), ..earlier },
        None => records::Recovering {
            failure: failure.unwrap_or_else(|| context.step()),
            deployment: failed_deployment,
            target: target.clone(),
        },
    });
    // A completed deployment rolled back failed too (change fail rate counts it).
    if let Some(mut deployment) = last.filter(|deployment| deployment.rolled_back_by.is_none()) {
        deployment.rolled_back_by = Some(context.seq);
        records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
    }
    if let Some(mut deployment) = active {
        envelope.deployment = Some(deployment.id.clone());
        deployment.state = DeploymentState::Aborted;
        deployment.ended = Some(context.step());
        deployment.end_reason = Some(format!("rolled back: {reason}"));
        deployment.rolled_back_by = Some(context.seq);
        records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
        environment.active_deployment = None;
    }

    // One record decides every host: the rollback reaches each host registered now, whatever
    // their number, and nothing older can reach a host again.
    let layer = LayerRecord { assignments: vec![Assignment::Rollback { release: target.clone(), seq: context.seq }] };
    records::write_versioned(state, &layer_key(&service, &env), context.seq, &layer)?;
    environment.desired_release = Some(target.clone());
    settle_recovery(state, context, &mut environment)?;
    records::write_versioned(state, &environment_key(&service, &env), context.seq, &environment)?;
    let during_freeze = freeze_in_force(state, context, &environment)?;
    if let Some(from) = &rolled_back_release {
        let deployment = envelope.deployment.as_deref();
        timeline(
            state,
            context,
            &service,
            from,
            "rolled_back",
            Some(&env),
            deployment,
            None,
            Some(match &during_freeze {
                Some(freeze) => format!("to {target}: {reason} (allowed while {freeze})"),
                None => format!("to {target}: {reason}"),
            }),
        )?;
    }
    timeline(state, context, &service, &target, "rollback_target", Some(&env), None, None, Some(reason.to_string()))?;
    Ok(layer)
}

/// The newest completed deployment of (service, env) that `accept` takes.
fn last_completed(
    state: &Overlay<'_>,
    service: &str,
    env: &str,
    mut accept: impl FnMut(&DeploymentRecord) -> crate::Result<bool>,
) -> Step<Option<DeploymentRecord>> {
    let mut found = None;
    records::deployments_of_newest_first(state, service, env, &mut |id| match records::deployment(state, id)? {
        Some(deployment) if deployment.state == DeploymentState::Completed && accept(&deployment)? => {
            found = Some(deployment);
            Ok(false)
        }
        _ => Ok(true),
    })?;
    Ok(found)
}

fn host_reported(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    status: HostStatus,
    applied_seq: u64,
    message: &Option<String>,
    health: Option<bool>,
) -> Step<()> {
    let (service, env, host) = host_address(context)?;
    let release = context.field(&context.proposal.release, "release")?;
    let previous = registered_host(state, &service, &env, &host)?;
    let mut record = previous.clone();
    match status {
        // What the host runs changes only when it says it runs something; a failed install
        // leaves the previous release running, with the attempt kept beside it.
        HostStatus::Running => {
            record.running = Some(release.clone());
            record.failure = None;
            // The first host running a release there makes it a place a rollback may go back to.
            let ran = records::ran_key(&service, &env, &release);
            if state.get(Space::State, ran.bytes())?.is_none() {
                records::write(state, Space::State, ran.into_bytes(), &context.seq)?;
            }
        }
        HostStatus::Failed => {
            let attempt = match &previous.failure {
                Some(failure) if failure.release == release => failure.attempt.saturating_add(1),
                _ => 1,
            };
            record.failure = Some(Failure {
                release: release.clone(),
                message: message.clone(),
                attempt,
                reported_seq: context.seq,
                reported_micros: context.time_micros,
            });
        }
        HostStatus::Applying => {}
    }
    // A report without health leaves the last one said; one that changes it keeps its message as
    // the reason (agents attach their health to every report once they have said one).
    if let Some(healthy) = health {
        if record.health.as_ref().map(|health| health.healthy) != Some(healthy) {
            record.health = Some(Health {
                healthy,
                message: message.clone(),
                reported_seq: context.seq,
                reported_micros: context.time_micros,
            });
        }
    }
    record.observed = Some(Observed {
        release,
        status,
        applied_seq,
        reported_seq: context.seq,
        reported_micros: context.time_micros,
        message: message.clone(),
    });
    save_host(state, context, Some(&previous), record)
}

/// A line in the timeline of `deployment`'s release about one of its steps.
fn deployment_timeline(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    deployment: &DeploymentRecord,
    kind: &str,
    wave: Option<&str>,
    detail: Option<String>,
) -> Step<()> {
    let (service, release) = (&deployment.service, &deployment.release);
    timeline(state, context, service, release, kind, Some(&deployment.env), Some(&deployment.id), wave, detail)
}

/// Halts (`halting`) or resumes an active deployment.
fn halt(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    mut deployment: DeploymentRecord,
    halting: bool,
    reason: &str,
) -> Step<()> {
    match (halting, &deployment.halted) {
        (true, Some(_)) => {
            return reject(RejectionCode::DeploymentHalted, format!("deployment {:?} is already halted", deployment.id))
        }
        (false, None) => {
            return reject(RejectionCode::DeploymentNotHalted, format!("deployment {:?} is not halted", deployment.id))
        }
        _ => {}
    }
    deployment.halted = halting.then(|| Block { reason: reason.to_string(), step: context.step() });
    if !halting {
        deployment.resumed_seq = Some(context.seq);
    }
    records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
    let kind = if halting { "deployment.halted" } else { "deployment.resumed" };
    deployment_timeline(state, context, &deployment, kind, None, Some(reason.to_string()))
}

fn policy_set(state: &mut Overlay<'_>, context: &Context<'_>, policy: &Policy) -> Step<()> {
    let service = context.field(&context.proposal.service, "service")?;
    let env = context.field(&context.proposal.env, "env")?;
    let record = PolicyRecord { policy: policy.clone(), set: context.step() };
    records::write_versioned(state, &policy_key(&service, &env), context.seq, &record)?;
    Ok(())
}

/// Keeps the latest firing of an alert. A resolution of an older firing than the one kept changes
/// nothing; one that arrives before its firing is kept as resolved.
fn alert_changed(state: &mut Overlay<'_>, context: &Context<'_>, firing: bool, facts: &AlertFacts) -> Step<()> {
    let proposal = context.proposal;
    let (service, env) = (proposal.service.as_deref(), proposal.env.as_deref());
    let key = alert_key(service, env, &facts.fingerprint);
    let kept: Option<AlertRecord> = records::read(state, Space::State, key.bytes())?;
    let starts = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
    if let Some(kept) = &kept {
        if starts(&facts.starts_at) < starts(&kept.starts_at) {
            return Ok(());
        }
    }
    let same_firing = kept.as_ref().is_some_and(|kept| kept.starts_at == facts.starts_at);
    let mut record = match kept {
        Some(kept) if same_firing => kept,
        _ => AlertRecord {
            source: facts.source.clone(),
            fingerprint: facts.fingerprint.clone(),
            starts_at: facts.starts_at.clone(),
            service: service.map(str::to_string),
            env: env.map(str::to_string),
            host: proposal.host.clone(),
            labels: facts.labels.clone(),
            firing,
            fired: None,
            resolved: None,
        },
    };
    record.firing = firing;
    if firing {
        record.fired = Some(context.step());
        record.resolved = None;
    } else {
        record.resolved = Some(context.step());
    }
    records::write_versioned(state, &key, context.seq, &record)?;
    Ok(())
}

/// How many failed hosts each wave of `deployment` may have: its policy's `max_failed`, else
/// none.
fn failures_allowed(state: &Overlay<'_>, deployment: &DeploymentRecord) -> Step<Vec<u64>> {
    let policy = records::policy(state, &deployment.service, &deployment.env, None)?;
    Ok(deployment
        .waves
        .iter()
        .map(|wave| {
            let limit = policy.as_ref().and_then(|record| record.policy.gates(&wave.name).max_failed);
            limit.map_or(0, |limit| limit.of(wave.selected))
        })
        .collect())
}

/// Starts (`reason` given) or ends a freeze.
fn freeze(state: &mut Overlay<'_>, context: &Context<'_>, start_reason: Option<&String>) -> Step<()> {
    let service = context.field(&context.proposal.service, "service")?;
    let env = context.field(&context.proposal.env, "env")?;
    let mut environment = records::environment(state, &service, &env)?;
    match (start_reason, &environment.freeze) {
        (Some(_), Some(_)) => {
            return reject(RejectionCode::AlreadyFrozen, format!("{service}/{env} is already frozen"))
        }
        (None, None) => return reject(RejectionCode::NotFrozen, format!("{service}/{env} is not frozen")),
        _ => {}
    }
    environment.freeze = start_reason.map(|reason| Block { reason: reason.clone(), step: context.step() });
    records::write_versioned(state, &environment_key(&service, &env), context.seq, &environment)?;
    Ok(())
}

fn host_address(context: &Context<'_>) -> Step<(String, String, String)> {
    let proposal = context.proposal;
    Ok((
        context.field(&proposal.service, "service")?,
        context.field(&proposal.env, "env")?,
        context.field(&proposal.host, "host")?,
    ))
}

fn registered_host(state: &Overlay<'_>, service: &str, env: &str, host: &str) -> Step<HostRecord> {
    match records::host(state, service, env, host)? {
        Some(record) if record.registered => Ok(record),
        _ => reject(RejectionCode::UnknownHost, format!("host {host:?} is not registered for {service}/{env}")),
    }
}

/// A release that exists and is not blocked.
fn deployable(state: &Overlay<'_>, service: &str, release: &str) -> Step<()> {
    match records::release(state, service, release)? {
        None => reject(RejectionCode::UnknownRelease, format!("release {service}@{release} does not exist")),
        Some(record) if record.blocked.is_some() => reject(
            RejectionCode::ReleaseBlocked,
            format!(
                "release {service}@{release} is blocked: {}",
                record.blocked.map(|block| block.reason).unwrap_or_default()
            ),
        ),
        Some(_) => Ok(()),
    }
}

fn refuse_if_frozen(environment: &EnvironmentRecord) -> Step<()> {
    match &environment.freeze {
        Some(freeze) => reject(
            RejectionCode::Frozen,
            format!("{}/{} is frozen: {}", environment.service, environment.env, freeze.reason),
        ),
        None => Ok(()),
    }
}

/// Refuses a start inside a scheduled freeze window (a calendar's, at the event's log time)
/// unless the event breaks the freeze with a reason, which is then kept with the deployment.
fn scheduled_freeze(
    state: &Overlay<'_>,
    context: &Context<'_>,
    service: &str,
    env: &str,
    freeze_override: &Option<String>,
    overrides: &mut Vec<Override>,
) -> Step<()> {
    let calendars = records::calendars_for(state, service, env)?;
    let Some(why) = calendar::freeze_reason(&calendars, context.time_micros) else { return Ok(()) };
    match freeze_override {
        Some(reason) => {
            overrides.push(Override { seq: context.seq, guard: FREEZE_WINDOW.to_string(), reason: reason.clone() });
            Ok(())
        }
        None => reject(
            RejectionCode::Frozen,
            format!(
                "{service}/{env} is in a freeze window ({why}). Rollbacks are allowed; to start anyway, give a break-glass reason: --override REASON (data.override_reason)"
            ),
        ),
    }
}

/// The guard name a broken freeze window is kept under in a deployment's overrides.
pub(crate) const FREEZE_WINDOW: &str = "freeze_window";

/// What freezes (service, env) at the rollback's time, if anything: a rollback goes ahead all the
/// same, and says so.
fn freeze_in_force(
    state: &Overlay<'_>,
    context: &Context<'_>,
    environment: &EnvironmentRecord,
) -> Step<Option<String>> {
    if let Some(freeze) = &environment.freeze {
        return Ok(Some(format!("frozen: {}", freeze.reason)));
    }
    let calendars = records::calendars_for(state, &environment.service, &environment.env)?;
    Ok(calendar::freeze_reason(&calendars, context.time_micros).map(|why| format!("in a freeze window: {why}")))
}

fn calendar_set(state: &mut Overlay<'_>, context: &Context<'_>, calendar: &Calendar) -> Step<()> {
    let proposal = context.proposal;
    let (service, env) = (proposal.service.clone(), proposal.env.clone());
    let key = calendar_key(service.as_deref(), env.as_deref());
    let record = CalendarRecord { service, env, calendar: calendar.clone(), set: context.step() };
    records::write_versioned(state, &key, context.seq, &record)?;
    Ok(())
}

/// A guard against a silent mistake: `refusal` stands unless the event carries a force reason,
/// which is then kept with the deployment beside the guard it overrode.
fn guard(context: &Context<'_>, refusal: Rejection, force: &Option<String>, overrides: &mut Vec<Override>) -> Step<()> {
    match force {
        Some(reason) => {
            overrides.push(Override {
                seq: context.seq,
                guard: refusal.code.as_str().to_string(),
                reason: reason.clone(),
            });
            Ok(())
        }
        None => Err(super::Stop::Reject(Rejection::new(
            refusal.code,
            format!("{}. To go ahead anyway, give a reason: --force REASON (data.force_reason)", refusal.message),
        ))),
    }
}

/// The timeline's note of the guards the event at `seq` overrode, if any.
fn forced(overrides: &[Override], seq: u64) -> Option<String> {
    let notes: Vec<String> = overrides
        .iter()
        .filter(|item| item.seq == seq)
        .map(|item| format!("forced past {}: {}", item.guard, item.reason))
        .collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// The refusal of a wave whose group has no registered host in (service, env).
fn empty_group(state: &Overlay<'_>, service: &str, env: &str, wave: &WaveSpec) -> Step<Option<Rejection>> {
    let Selector::Group(group) = &wave.selector else { return Ok(None) };
    if selection::group_has_members(state, service, env, group)? {
        return Ok(None);
    }
    Ok(Some(Rejection::new(
        RejectionCode::SelectorMatchesNobody,
        format!("wave {:?}: group {group:?} matches no host registered for {service}/{env}", wave.name),
    )))
}

fn hosts(count: u64) -> String {
    if count == 1 {
        "1 host".to_string()
    } else {
        format!("{count} hosts")
    }
}

fn wave_index(deployment: &DeploymentRecord, wave_name: &str) -> Step<usize> {
    deployment.waves.iter().position(|wave| wave.name == wave_name).ok_or_else(|| {
        super::Stop::Reject(Rejection::new(
            RejectionCode::UnknownWave,
            format!("deployment {:?} has no wave {wave_name:?}", deployment.id),
        ))
    })
}

#[allow(clippy::too_many_arguments)]
fn timeline(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    service: &str,
    release: &str,
    kind: &str,
    env: Option<&str>,
    deployment: Option<&str>,
    wave: Option<&str>,
    detail: Option<String>,
) -> Step<()> {
    let entry = TimelineEntry {
        step: context.step(),
        kind: kind.to_string(),
        env: env.map(str::to_string),
        deployment: deployment.map(str::to_string),
        wave: wave.map(str::to_string),
        detail,
    };
    records::write(state, Space::State, timeline_key(service, release, context.seq).into_bytes(), &entry)?;
    Ok(())
}

/// Writes a host record changed by the host's own event, and keeps what counts hosts in step:
/// the active deployment's wave counters and held hosts, and the environment's tally. A
/// deployment that has ended keeps its counters as they were.
///
/// A counter going below zero, or a host counted toward a wave that does not exist, means the
/// rules broke their own bookkeeping: a bug, not a damaged disk, so it stops the apply loudly
/// (on every build) instead of returning an error.
fn save_host(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    previous: Option<&HostRecord>,
    mut record: HostRecord,
) -> Step<()> {
    let seq = context.seq;
    record.changed_seq = seq;
    record.desired = None;
    let (service, env) = (record.service.clone(), record.env.clone());
    let layer = records::layer(state, &service, &env)?;
    let before = previous.and_then(|previous| desired::resolve(&layer, previous));
    let after = desired::resolve(&layer, &record);
    let active = match records::environment(state, &service, &env)?.active_deployment {
        Some(id) => records::deployment(state, &id)?,
        None => None,
    };
    if let Some(mut deployment) = active {
        let held = |desired: &Option<records::Desired>| {
            desired.as_ref().and_then(|desired| desired.deployment.as_deref()) == Some(deployment.id.as_str())
        };
        let mut changed = false;
        if held(&before) && !held(&after) {
            deployment.selected_now = deployment.selected_now.checked_sub(1).unwrap_or_else(|| {
                invariant::violated(format!(
                    "event seq {seq}: deployment {:?} holds no host, yet {:?} leaves it",
                    deployment.id, record.host
                ))
            });
            changed = true;
        }
        let marked = |host: Option<&HostRecord>, desired: &Option<records::Desired>| {
            host.and_then(|host| desired::mark(host, desired.as_ref()))
                .filter(|((id, _), _)| *id == deployment.id)
                .map(|((_, wave), mark)| (wave, mark))
        };
        let (was, is) = (marked(previous, &before), marked(Some(&record), &after));
        if was != is {
            count(&mut deployment, seq, was, -1);
            count(&mut deployment, seq, is, 1);
            for (wave, _) in [was, is].into_iter().flatten() {
                if let Some(wave) = deployment.waves.get_mut(wave as usize) {
                    settle(wave, context.time_micros);
                }
            }
            changed = true;
        }
        if changed {
            records::write_versioned(state, &deployment_key(&deployment.id), seq, &deployment)?;
        }
    }
    update_tally(state, seq, previous, &record)?;
    let mut environment = records::environment(state, &service, &env)?;
    if environment.recovering.is_some() && settle_recovery(state, context, &mut environment)? {
        records::write_versioned(state, &environment_key(&service, &env), seq, &environment)?;
    }
    let key = host_key(&service, &env, &record.host);
    records::write_versioned(state, &key, seq, &record)?;
    Ok(())
}

/// Ends the environment's recovery if every registered host runs its target now (by the
/// environment's tallies, in constant time): the recovery is written down and cleared. Returns
/// whether it ended.
fn settle_recovery(state: &mut Overlay<'_>, context: &Context<'_>, environment: &mut EnvironmentRecord) -> Step<bool> {
    let Some(recovering) = &environment.recovering else { return Ok(false) };
    let tally = records::tally(state, &environment.service, &environment.env)?;
    let running = tally.observed.get(&recovering.target).map_or(0, |counts| counts.running);
    if running < tally.registered {
        return Ok(false);
    }
    let record = records::RecoveryRecord {
        service: environment.service.clone(),
        env: environment.env.clone(),
        deployment: recovering.deployment.clone(),
        failure: recovering.failure.clone(),
        target: recovering.target.clone(),
        recovered: context.step(),
    };
    let key = records::recovery_key(&environment.service, &environment.env, recovering.failure.seq);
    records::write(state, Space::State, key.into_bytes(), &record)?;
    environment.recovering = None;
    Ok(true)
}

/// Moves one wave counter of `deployment` by `sign`.
/// Starts a started wave's bake clock when every host it selected has reported an outcome, and
/// stops it when one has not.
fn settle(wave: &mut WaveRecord, time_micros: i64) {
    let settled = wave.state == WaveState::Started && wave.converged + wave.failed >= wave.selected;
    match (settled, wave.settled_micros) {
        (true, None) => wave.settled_micros = Some(time_micros),
        (false, Some(_)) => wave.settled_micros = None,
        _ => {}
    }
}

fn count(deployment: &mut DeploymentRecord, seq: u64, marked: Option<(u32, Mark)>, sign: i64) {
    let Some((wave, mark)) = marked else { return };
    let id = deployment.id.clone();
    let Some(record) = deployment.waves.get_mut(wave as usize) else {
        invariant::violated(format!(
            "event seq {seq}: a host counts toward wave {wave} of {id:?}, which does not exist"
        ));
    };
    // An unhealthy host counts as converged (it runs the release) and as unhealthy.
    let counters = match mark {
        Mark::Converged => vec![&mut record.converged],
        Mark::Unhealthy => vec![&mut record.converged, &mut record.unhealthy],
        Mark::Failed => vec![&mut record.failed],
    };
    for counter in counters {
        *counter = counter.checked_add_signed(sign).unwrap_or_else(|| {
            invariant::violated(format!(
                "event seq {seq}: wave counters of {id:?} wave {wave} go below zero ({} {:?} {sign:+})",
                counter, mark
            ))
        });
    }
}

/// Keeps the environment's counts of registered hosts and of their reports in step with one
/// host's change.
fn update_tally(state: &mut Overlay<'_>, seq: u64, previous: Option<&HostRecord>, record: &HostRecord) -> Step<()> {
    // What a host adds to the tally: one registered host, and its report if it names a status
    // that counts.
    fn share(host: &HostRecord) -> Option<Option<(String, Mark)>> {
        host.registered.then(|| {
            host.observed.as_ref().and_then(|observed| {
                desired::observed_mark(host, &observed.release).map(|mark| (observed.release.clone(), mark))
            })
        })
    }
    let (was, is) = (previous.and_then(share), share(record));
    if was == is {
        return Ok(());
    }
    let key = tally_key(&record.service, &record.env);
    let mut tally: Tally = records::tally(state, &record.service, &record.env)?;
    let mut apply = |share: Option<Option<(String, Mark)>>, sign: i64| {
        let Some(report) = share else { return };
        tally.registered = moved(tally.registered, sign, seq, "registered hosts");
        if let Some((release, mark)) = report {
            let counts = tally.observed.entry(release.clone()).or_default();
            match mark {
                Mark::Converged => counts.running = moved(counts.running, sign, seq, "hosts running a release"),
                Mark::Unhealthy => {
                    counts.running = moved(counts.running, sign, seq, "hosts running a release");
                    counts.unhealthy = moved(counts.unhealthy, sign, seq, "unhealthy hosts running a release");
                }
                Mark::Failed => counts.failed = moved(counts.failed, sign, seq, "hosts failed on a release"),
            }
            if *counts == ReleaseCounts::default() {
                tally.observed.remove(&release);
            }
        }
    };
    apply(was, -1);
    apply(is, 1);
    records::write(state, Space::State, key.into_bytes(), &tally)?;
    Ok(())
}

fn moved(value: u64, sign: i64, seq: u64, what: &str) -> u64 {
    value
        .checked_add_signed(sign)
        .unwrap_or_else(|| invariant::violated(format!("event seq {seq}: the count of {what} goes below zero")))
}
