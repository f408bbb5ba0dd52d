//! What each domain event does to the views, and the rules it must pass against the state at its
//! seq (SPEC section 2, "Domain event types").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::selection::select_hosts;
use super::validate::{Command, HostStatus};
use super::{reject, Step};
use crate::event::ProposedEvent;
use crate::invariant;
use crate::kv::{Overlay, Space};
use crate::records::{
    self, deployment_by_environment_key, deployment_by_seq_key, deployment_key, environment_key, host_environment_key,
    host_key, release_key, timeline_key, Block, DeploymentRecord, DeploymentState, Desired, EnvironmentRecord,
    HostRecord, Observed, ReleaseRecord, TimelineEntry, WaveRecord, WaveState,
};
use crate::rejection::{Rejection, RejectionCode};

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
    pub directives: Vec<Directive>,
}

/// A change of one host's desired release, sent to the agent watching that host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    pub host: String,
    pub service: String,
    pub env: String,
    pub release: String,
    pub seq: u64,
    pub cause: String,
    pub deployment: Option<String>,
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
        directives: Vec::new(),
    };
    match command {
        Command::ReleaseCreated => release_created(state, context)?,
        Command::ReleaseBlocked { reason } => release_blocking(state, context, true, reason)?,
        Command::ReleaseUnblocked { reason } => release_blocking(state, context, false, reason)?,
        Command::TargetRegistered { group, labels } => target_registered(state, context, group, labels)?,
        Command::TargetDeregistered => target_deregistered(state, context)?,
        Command::DeploymentStarted { waves } => deployment_started(state, context, waves)?,
        Command::WaveStarted { wave } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            effect.directives = wave_started(state, context, deployment, wave)?;
        }
        Command::WaveCompleted { wave } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            wave_completed(state, context, deployment, wave)?;
        }
        Command::DeploymentCompleted => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            deployment_ended(state, context, deployment, None)?;
        }
        Command::DeploymentAborted { reason } => {
            let deployment = active_deployment(state, context, &mut effect.envelope)?;
            deployment_ended(state, context, deployment, Some(reason.clone()))?;
        }
        Command::Rollback { reason } => effect.directives = rollback(state, context, reason, &mut effect.envelope)?,
        Command::HostReported { status, applied_seq } => host_reported(state, context, *status, *applied_seq)?,
        Command::FreezeStarted { reason } => freeze(state, context, Some(reason))?,
        Command::FreezeEnded { .. } => freeze(state, context, None)?,
        Command::Custom => {}
    }
    Ok(effect)
}

fn release_created(state: &mut Overlay<'_>, context: &Context<'_>) -> Step<()> {
    let service = context.field(&context.proposal.service, "service")?;
    let release = context.field(&context.proposal.release, "release")?;
    if records::release(state, &service, &release)?.is_some() {
        return reject(RejectionCode::ReleaseExists, format!("release {service}@{release} already exists"));
    }
    let record =
        ReleaseRecord { service: service.clone(), release: release.clone(), created: context.step(), blocked: None };
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

fn target_registered(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    group: &Option<String>,
    labels: &BTreeMap<String, String>,
) -> Step<()> {
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
        changed_seq: context.seq,
    });
    if !record.registered {
        record.registered_seq = context.seq;
    }
    record.registered = true;
    record.group = group.clone();
    record.labels = labels.clone();
    if previous.is_none() {
        state.put(Space::State, host_environment_key(&host, &service, &env).into_bytes(), Vec::new());
    }
    let mut counters = Counters::default();
    save_host(state, &mut counters, previous.as_ref(), record, context.seq)?;
    counters.flush(state, context.seq)
}

fn target_deregistered(state: &mut Overlay<'_>, context: &Context<'_>) -> Step<()> {
    let (service, env, host) = host_address(context)?;
    let previous = registered_host(state, &service, &env, &host)?;
    let mut record = previous.clone();
    record.registered = false;
    let mut counters = Counters::default();
    save_host(state, &mut counters, Some(&previous), record, context.seq)?;
    counters.flush(state, context.seq)
}

fn deployment_started(state: &mut Overlay<'_>, context: &Context<'_>, waves: &[super::validate::WaveSpec]) -> Step<()> {
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
                failed: 0,
            })
            .collect(),
        started: context.step(),
        ended: None,
        end_reason: None,
        rolled_back_by: None,
        selected_total: 0,
    };
    records::write_versioned(state, &deployment_key(&id), context.seq, &record)?;
    state.put(
        Space::State,
        deployment_by_environment_key(&service, &env, context.seq).into_bytes(),
        id.as_bytes().to_vec(),
    );
    state.put(Space::State, deployment_by_seq_key(context.seq).into_bytes(), id.as_bytes().to_vec());
    environment.active_deployment = Some(id.clone());
    records::write_versioned(state, &environment_key(&service, &env), context.seq, &environment)?;
    timeline(state, context, &service, &release, "deployment.started", Some(&env), Some(&id), None, None)
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

fn wave_started(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    mut deployment: DeploymentRecord,
    wave_name: &str,
) -> Step<Vec<Directive>> {
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
    let environment = records::environment(state, &deployment.service, &deployment.env)?;
    refuse_if_frozen(&environment)?;
    deployable(state, &deployment.service, &deployment.release)?;

    let hosts = records::hosts_of(state, &deployment.service, &deployment.env)?;
    let selected = select_hosts(&deployment, index, &hosts)?;
    let wave = &mut deployment.waves[index];
    wave.state = WaveState::Started;
    wave.started = Some(context.step());
    wave.selected = selected.len() as u64;
    deployment.selected_total += selected.len() as u64;
    records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;

    let mut counters = Counters::default();
    let mut directives = Vec::with_capacity(selected.len());
    for position in selected {
        let previous = &hosts[position];
        let mut record = previous.clone();
        let changes = previous.desired.as_ref().map(|desired| desired.release != deployment.release).unwrap_or(true);
        record.desired = Some(Desired {
            release: deployment.release.clone(),
            seq: context.seq,
            cause: context.proposal.event_type.clone(),
            deployment: Some(deployment.id.clone()),
            wave: Some(index as u32),
        });
        // Like a replay from history: a directive only when the desired release changes.
        if changes {
            directives.push(directive(&record, context));
        }
        save_host(state, &mut counters, Some(previous), record, context.seq)?;
    }
    counters.flush(state, context.seq)?;

    let mut environment = environment;
    environment.desired_release = Some(deployment.release.clone());
    records::write_versioned(state, &environment_key(&deployment.service, &deployment.env), context.seq, &environment)?;
    timeline(
        state,
        context,
        &deployment.service,
        &deployment.release,
        "wave.started",
        Some(&deployment.env),
        Some(&deployment.id),
        Some(wave_name),
        None,
    )?;
    Ok(directives)
}

fn wave_completed(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    mut deployment: DeploymentRecord,
    wave_name: &str,
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
    deployment.waves[index].state = WaveState::Completed;
    deployment.waves[index].completed = Some(context.step());
    records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
    timeline(
        state,
        context,
        &deployment.service,
        &deployment.release,
        "wave.completed",
        Some(&deployment.env),
        Some(&deployment.id),
        Some(wave_name),
        None,
    )
}

/// Completes (`abort_reason` = None) or aborts a deployment.
fn deployment_ended(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    mut deployment: DeploymentRecord,
    abort_reason: Option<String>,
) -> Step<()> {
    let kind = match &abort_reason {
        None => {
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
            deployment.state = DeploymentState::Completed;
            "deployment.completed"
        }
        Some(_) => {
            deployment.state = DeploymentState::Aborted;
            "deployment.aborted"
        }
    };
    deployment.ended = Some(context.step());
    deployment.end_reason = abort_reason.clone();
    records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
    let mut environment = records::environment(state, &deployment.service, &deployment.env)?;
    environment.active_deployment = None;
    records::write_versioned(state, &environment_key(&deployment.service, &deployment.env), context.seq, &environment)?;
    timeline(
        state,
        context,
        &deployment.service,
        &deployment.release,
        kind,
        Some(&deployment.env),
        Some(&deployment.id),
        None,
        abort_reason,
    )
}

fn rollback(
    state: &mut Overlay<'_>,
    context: &Context<'_>,
    reason: &str,
    envelope: &mut Envelope,
) -> Step<Vec<Directive>> {
    let service = context.field(&context.proposal.service, "service")?;
    let env = context.field(&context.proposal.env, "env")?;
    let mut environment = records::environment(state, &service, &env)?;
    let active = match &environment.active_deployment {
        Some(id) => records::deployment(state, id)?,
        None => None,
    };
    // The release being rolled back: the active deployment's, else the last completed one's.
    let rolled_back_release = match &active {
        Some(deployment) => Some(deployment.release.clone()),
        None => last_completed(state, &service, &env, |_| Ok(true))?.map(|deployment| deployment.release),
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
                let release = records::release(state, &service, &deployment.release)?;
                Ok(release.is_some_and(|release| release.blocked.is_none()))
            })?;
            match candidate {
                Some(deployment) => deployment.release,
                None => {
                    return reject(
                        RejectionCode::NoRollbackTarget,
                        format!(
                            "{service}/{env} has no earlier completed release other than {from} that is not blocked"
                        ),
                    )
                }
            }
        }
    };
    envelope.release = Some(target.clone());

    if let Some(mut deployment) = active {
        envelope.deployment = Some(deployment.id.clone());
        deployment.state = DeploymentState::Aborted;
        deployment.ended = Some(context.step());
        deployment.end_reason = Some(format!("rolled back: {reason}"));
        deployment.rolled_back_by = Some(context.seq);
        records::write_versioned(state, &deployment_key(&deployment.id), context.seq, &deployment)?;
        environment.active_deployment = None;
    }

    let hosts = records::hosts_of(state, &service, &env)?;
    let mut counters = Counters::default();
    let mut directives = Vec::new();
    // Every host of the environment is rewritten: records are taken, not cloned (10,000 hosts).
    for mut record in hosts.into_iter().filter(|host| host.registered) {
        let previous_mark = mark(&record);
        let changes = record.desired.as_ref().map(|desired| desired.release != target).unwrap_or(true);
        record.desired = Some(Desired {
            release: target.clone(),
            seq: context.seq,
            cause: context.proposal.event_type.clone(),
            deployment: None,
            wave: None,
        });
        if changes {
            directives.push(directive(&record, context));
        }
        save_marked_host(state, &mut counters, previous_mark, record, context.seq)?;
    }
    counters.flush(state, context.seq)?;
    environment.desired_release = Some(target.clone());
    records::write_versioned(state, &environment_key(&service, &env), context.seq, &environment)?;
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
            Some(format!("to {target}: {reason}")),
        )?;
    }
    timeline(state, context, &service, &target, "rollback_target", Some(&env), None, None, Some(reason.to_string()))?;
    Ok(directives)
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

fn host_reported(state: &mut Overlay<'_>, context: &Context<'_>, status: HostStatus, applied_seq: u64) -> Step<()> {
    let (service, env, host) = host_address(context)?;
    let release = context.field(&context.proposal.release, "release")?;
    let previous = registered_host(state, &service, &env, &host)?;
    let mut record = previous.clone();
    record.observed = Some(Observed {
        release,
        status,
        applied_seq,
        reported_seq: context.seq,
        reported_micros: context.time_micros,
    });
    let mut counters = Counters::default();
    save_host(state, &mut counters, Some(&previous), record, context.seq)?;
    counters.flush(state, context.seq)
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

fn wave_index(deployment: &DeploymentRecord, wave_name: &str) -> Step<usize> {
    deployment.waves.iter().position(|wave| wave.name == wave_name).ok_or_else(|| {
        super::Stop::Reject(Rejection::new(
            RejectionCode::UnknownWave,
            format!("deployment {:?} has no wave {wave_name:?}", deployment.id),
        ))
    })
}

fn directive(record: &HostRecord, context: &Context<'_>) -> Directive {
    let desired = record.desired.as_ref().expect("directive follows a desired release");
    Directive {
        host: record.host.clone(),
        service: record.service.clone(),
        env: record.env.clone(),
        release: desired.release.clone(),
        seq: context.seq,
        cause: desired.cause.clone(),
        deployment: desired.deployment.clone(),
    }
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

/// How a host counts toward the wave that last set its desired release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Converged,
    Failed,
}

fn mark(record: &HostRecord) -> Option<((String, u32), Mark)> {
    let desired = record.desired.as_ref()?;
    let wave = (desired.deployment.clone()?, desired.wave?);
    let observed = record.observed.as_ref()?;
    if observed.release != desired.release {
        return None;
    }
    match observed.status {
        HostStatus::Running => Some((wave, Mark::Converged)),
        HostStatus::Failed => Some((wave, Mark::Failed)),
        HostStatus::Applying => None,
    }
}

/// How much one wave's counters move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CounterDelta {
    converged: i64,
    failed: i64,
}

/// Changes of wave counters gathered over one event, written once per deployment. Keyed by
/// deployment, then wave index, so each deployment record is read and written once.
#[derive(Default)]
struct Counters {
    deltas: BTreeMap<String, BTreeMap<u32, CounterDelta>>,
}

impl Counters {
    fn add(&mut self, marked: Option<((String, u32), Mark)>, sign: i64) {
        if let Some(((deployment, wave), mark)) = marked {
            let delta = self.deltas.entry(deployment).or_default().entry(wave).or_default();
            match mark {
                Mark::Converged => delta.converged += sign,
                Mark::Failed => delta.failed += sign,
            }
        }
    }

    /// Writes the counters. A host that names a deployment or wave that does not exist, or a
    /// counter going below zero, means the rules broke their own bookkeeping: a bug, not a
    /// damaged disk, so it stops the apply loudly (on every build) instead of returning an error.
    fn flush(self, state: &mut Overlay<'_>, seq: u64) -> Step<()> {
        for (id, waves) in self.deltas {
            if waves.values().all(|delta| *delta == CounterDelta::default()) {
                continue;
            }
            let Some(mut deployment) = records::deployment(state, &id)? else {
                invariant::violated(format!("event seq {seq}: a host names deployment {id:?}, which does not exist"));
            };
            for (wave, delta) in waves {
                let Some(record) = deployment.waves.get_mut(wave as usize) else {
                    invariant::violated(format!(
                        "event seq {seq}: a host names wave {wave} of {id:?}, which does not exist"
                    ));
                };
                let converged = record.converged.checked_add_signed(delta.converged);
                let failed = record.failed.checked_add_signed(delta.failed);
                let (Some(converged), Some(failed)) = (converged, failed) else {
                    invariant::violated(format!(
                        "event seq {seq}: wave counters of {id:?} wave {wave} go below zero (converged {} {:+}, failed {} {:+})",
                        record.converged, delta.converged, record.failed, delta.failed
                    ));
                };
                record.converged = converged;
                record.failed = failed;
            }
            records::write_versioned(state, &deployment_key(&id), seq, &deployment)?;
        }
        Ok(())
    }
}

/// Writes a host record and notes how its wave counters move.
fn save_host(
    state: &mut Overlay<'_>,
    counters: &mut Counters,
    previous: Option<&HostRecord>,
    record: HostRecord,
    seq: u64,
) -> Step<()> {
    save_marked_host(state, counters, previous.and_then(mark), record, seq)
}

/// [`save_host`] for a caller that took the previous record's mark before changing it in place.
fn save_marked_host(
    state: &mut Overlay<'_>,
    counters: &mut Counters,
    previous_mark: Option<((String, u32), Mark)>,
    mut record: HostRecord,
    seq: u64,
) -> Step<()> {
    counters.add(previous_mark, -1);
    counters.add(mark(&record), 1);
    record.changed_seq = seq;
    let key = host_key(&record.service, &record.env, &record.host);
    records::write_versioned(state, &key, seq, &record)?;
    Ok(())
}
