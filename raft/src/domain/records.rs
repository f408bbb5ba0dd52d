//! The view records derived from the log, and typed access to them over any [`KvRead`].
//!
//! Versioned records are written twice: the current value in `Space::State` and the same value
//! under `key ++ seq` in `Space::History`, so "as of seq N" is one reverse seek per record instead
//! of a replay.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::calendar::Calendar;
use crate::domain::codec;
use crate::domain::keys::{prefix_end, Key, RecordTag, META_HEAD};
use crate::domain::kv::{Direction, KvRead, Overlay, Space};
use crate::domain::ledger::validate::{HostStatus, Selector};
use crate::domain::policy::Policy;
use crate::error::Result;

/// The last event of the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
    pub time_micros: i64,
}

/// Durable idempotency: where the event with this id went and what it asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRecord {
    pub seq: u64,
    pub fingerprint: [u8; 32],
    pub hash: [u8; 32],
}

/// One host in one (service, env): its registration and what it last reported. Only the host's
/// own events (registered, deregistered, reported) write it. Its desired release is not stored:
/// views resolve it from the environment's [`LayerRecord`] as of the same seq (see
/// [`crate::domain::desired`]) and fill in `desired`, so a rollback costs the same for 10 hosts as for
/// 1,000,000.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    pub service: String,
    pub env: String,
    pub registered: bool,
    pub group: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Seq at which the current registration began: the host registered anew, or came back
    /// after a deregistration, or moved to another group. Only assignments after it apply.
    pub registered_seq: u64,
    /// Resolved at read time; never stored.
    #[serde(skip)]
    pub desired: Option<Desired>,
    /// The newest report, whatever its status.
    pub observed: Option<Observed>,
    /// The release of the newest `running` report: what the host runs, even after a failed
    /// install of another.
    pub running: Option<String>,
    /// The newest failed install since the host last reported `running`.
    pub failure: Option<Failure>,
    /// What the host's own health check said last (agents with `--check` report changes only);
    /// None: never said.
    pub health: Option<Health>,
    /// Seq of the event that last changed this record.
    pub changed_seq: u64,
}

impl HostRecord {
    /// Observed equals desired and the host says it runs it.
    pub fn converged(&self) -> bool {
        match (&self.desired, &self.observed) {
            (Some(desired), Some(observed)) => {
                observed.release == desired.release && observed.status == HostStatus::Running
            }
            _ => false,
        }
    }
}

/// The last health a host's agent reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub message: Option<String>,
    /// The report that said so, and its log time.
    pub reported_seq: u64,
    pub reported_micros: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub release: String,
    pub seq: u64,
    /// Type of the event that set it: `wave.started` or `rollback`.
    pub cause: String,
    pub deployment: Option<String>,
    pub wave: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub release: String,
    pub status: HostStatus,
    pub applied_seq: u64,
    pub reported_seq: u64,
    pub reported_micros: i64,
    pub message: Option<String>,
}

/// A failed install: the release, what the host said, and how many failed reports in a row
/// the host sent for that release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub release: String,
    pub message: Option<String>,
    pub attempt: u32,
    pub reported_seq: u64,
    pub reported_micros: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentState {
    Active,
    Completed,
    Aborted,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Active => "active",
            DeploymentState::Completed => "completed",
            DeploymentState::Aborted => "aborted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaveState {
    Pending,
    Started,
    Completed,
}

impl WaveState {
    pub fn as_str(self) -> &'static str {
        match self {
            WaveState::Pending => "pending",
            WaveState::Started => "started",
            WaveState::Completed => "completed",
        }
    }
}

/// Who did something, when, at which seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub seq: u64,
    pub time_micros: i64,
    pub actor: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveRecord {
    pub name: String,
    pub selector: Selector,
    pub state: WaveState,
    pub started: Option<Step>,
    pub completed: Option<Step>,
    pub selected: u64,
    /// Hosts running the release, the unhealthy ones included.
    pub converged: u64,
    /// Of the converged hosts, those whose health check fails.
    pub unhealthy: u64,
    pub failed: u64,
    /// Log time since which every selected host has reported an outcome (converged or failed),
    /// while the wave is started: when its bake began.
    pub settled_micros: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub service: String,
    pub env: String,
    pub release: String,
    pub state: DeploymentState,
    pub waves: Vec<WaveRecord>,
    pub started: Step,
    pub ended: Option<Step>,
    pub end_reason: Option<String>,
    /// Seq of the rollback that aborted it, if one did.
    pub rolled_back_by: Option<u64>,
    /// Hosts selected by all waves so far, each counted when its wave started.
    pub selected_total: u64,
    /// Of those, the hosts whose desired release this deployment still sets: registered, and
    /// registered since before the wave that selected them. Kept while the deployment is active.
    pub selected_now: u64,
    /// Guards its events overrode with `data.force_reason`, oldest first.
    pub overrides: Vec<Override>,
    /// Set while the deployment is halted: no wave starts until it is resumed.
    pub halted: Option<Block>,
    /// Seq of the last `deployment.resumed`: decisions after it are new ones.
    pub resumed_seq: Option<u64>,
}

/// A guard an event overrode, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub seq: u64,
    /// The rejection code the event would otherwise have met, e.g. `hosts_failed`.
    pub guard: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub service: String,
    pub release: String,
    pub created: Step,
    pub blocked: Option<Block>,
    /// What `release.created` said the release is made of, and its notes.
    pub artifact: Option<String>,
    pub notes: Option<String>,
    /// When its newest commit was made (`data.committed_at`), where change lead time starts;
    /// without it, lead time starts at the release's creation.
    pub committed_micros: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub reason: String,
    pub step: Step,
}

/// One line of a release's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub step: Step,
    /// `created`, `blocked`, `unblocked`, `deployment.started`, `wave.started`, `wave.completed`,
    /// `deployment.completed`, `deployment.aborted`, `rolled_back` (away from it), `rollback_target`.
    pub kind: String,
    pub env: Option<String>,
    pub deployment: Option<String>,
    pub wave: Option<String>,
    pub detail: Option<String>,
}

/// One (service, env).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub service: String,
    pub env: String,
    pub active_deployment: Option<String>,
    pub freeze: Option<Block>,
    /// Release most recently assigned to the hosts (by a wave or a rollback).
    pub desired_release: Option<String>,
    /// A failure being recovered from: set by a rollback, cleared when every registered host
    /// runs its target (a [`RecoveryRecord`] is written) or when a new deployment starts.
    pub recovering: Option<Recovering>,
}

/// A failure of a (service, env) not yet recovered from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovering {
    /// The first decision that the deployment failed: its halt, or else the rollback.
    pub failure: Step,
    pub deployment: Option<String>,
    /// The release the rollback sent every host to.
    pub target: String,
}

/// A failure and the moment every registered host ran the rollback's target again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    pub service: String,
    pub env: String,
    pub deployment: Option<String>,
    pub failure: Step,
    pub target: String,
    pub recovered: Step,
}

/// What decides the desired release of every host of one (service, env), versioned by seq.
///
/// A host's desired release is that of the newest assignment that applies to it: a rollback
/// applies to every host registered before it; a deployment's wave to the hosts its rule selects
/// among those registered before the wave started (the first wave of a deployment that selects a
/// host wins). The list keeps only what can still decide a host: everything from the newest
/// barrier on, a barrier being a rollback or a deployment one of whose waves selected every
/// host registered then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Oldest first.
    pub assignments: Vec<Assignment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Assignment {
    Rollback { release: String, seq: u64 },
    Deployment { id: String, release: String, waves: Vec<StartedWave> },
}

/// A wave of a deployment that has started, and which hosts it selected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedWave {
    pub index: u32,
    pub seq: u64,
    pub rule: WaveRule,
}

/// Which of the hosts registered before a wave started, and not selected by an earlier wave of
/// its deployment, the wave selected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaveRule {
    /// These hosts (sorted).
    Hosts(Vec<String>),
    /// Hosts of this group.
    Group(String),
    /// Hosts whose name sorts at or before this one (a percent selector, resolved to the last
    /// host it took in name order).
    UpTo(String),
    /// Every host: the deployment becomes a barrier.
    All,
    /// Nobody new.
    Nobody,
}

/// The latest firing of one alert, by its source's fingerprint, in the (service, env) its labels
/// named, or in none (an unmapped alert, kept and listed all the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub source: String,
    pub fingerprint: String,
    /// When this firing began, as the source said (RFC 3339).
    pub starts_at: String,
    pub service: Option<String>,
    pub env: Option<String>,
    pub host: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub firing: bool,
    /// The `alert.fired` of this firing, if it arrived.
    pub fired: Option<Step>,
    pub resolved: Option<Step>,
}

/// The release-safety policy of one (service, env), versioned by seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub policy: Policy,
    pub set: Step,
}

/// Registered hosts of one (service, env) reporting one release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCounts {
    pub running: u64,
    pub failed: u64,
    /// Of the running ones, those whose health check fails.
    pub unhealthy: u64,
}

/// The freeze calendar of one (service, env), or the global one (both None), versioned by seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarRecord {
    pub service: Option<String>,
    pub env: Option<String>,
    pub calendar: Calendar,
    pub set: Step,
}

impl CalendarRecord {
    /// Whose calendar it is: `service/env`, or `global`.
    pub fn scope(&self) -> String {
        match (&self.service, &self.env) {
            (Some(service), Some(env)) => format!("{service}/{env}"),
            _ => "global".to_string(),
        }
    }
}

/// Counts of one (service, env) that wave starts need without visiting hosts: registered hosts,
/// and by release the registered hosts reporting it running or failed. Current value only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub registered: u64,
    /// Release → counts of the hosts reporting it.
    pub observed: BTreeMap<String, ReleaseCounts>,
}

// ---- keys ----

pub fn host_key(service: &str, env: &str, host: &str) -> Key {
    Key::record(RecordTag::Host).text(service).text(env).text(host)
}

pub fn host_environment_key(host: &str, service: &str, env: &str) -> Key {
    Key::record(RecordTag::HostEnvironment).text(host).text(service).text(env)
}

pub fn deployment_key(id: &str) -> Key {
    Key::record(RecordTag::Deployment).text(id)
}

pub fn release_key(service: &str, release: &str) -> Key {
    Key::record(RecordTag::Release).text(service).text(release)
}

pub fn timeline_key(service: &str, release: &str, seq: u64) -> Key {
    Key::record(RecordTag::Timeline).text(service).text(release).number(seq)
}

pub fn environment_key(service: &str, env: &str) -> Key {
    Key::record(RecordTag::Environment).text(service).text(env)
}

pub fn layer_key(service: &str, env: &str) -> Key {
    Key::record(RecordTag::Layer).text(service).text(env)
}

pub fn tally_key(service: &str, env: &str) -> Key {
    Key::record(RecordTag::Tally).text(service).text(env)
}

pub fn ran_key(service: &str, env: &str, release: &str) -> Key {
    Key::record(RecordTag::Ran).text(service).text(env).text(release)
}

pub fn policy_key(service: &str, env: &str) -> Key {
    Key::record(RecordTag::Policy).text(service).text(env)
}

pub fn alert_key(service: Option<&str>, env: Option<&str>, fingerprint: &str) -> Key {
    Key::record(RecordTag::Alert).text(service.unwrap_or("")).text(env.unwrap_or("")).text(fingerprint)
}

pub fn recovery_key(service: &str, env: &str, failure_seq: u64) -> Key {
    Key::record(RecordTag::Recovery).text(service).text(env).number(failure_seq)
}

/// The recoveries of (service, env), or of every environment of a service, or of all.
pub fn recoveries(kv: &dyn KvRead, service: Option<&str>, env: Option<&str>) -> Result<Vec<RecoveryRecord>> {
    let mut prefix = Key::record(RecordTag::Recovery);
    if let Some(service) = service {
        prefix = prefix.text(service);
        if let Some(env) = env {
            prefix = prefix.text(env);
        }
    }
    let records = scan_records::<RecoveryRecord>(kv, &prefix)?.into_iter().map(|(_, record)| record);
    Ok(records.filter(|record| env.is_none_or(|env| record.env == env)).collect())
}

pub fn calendar_key(service: Option<&str>, env: Option<&str>) -> Key {
    Key::record(RecordTag::Calendar).text(service.unwrap_or("")).text(env.unwrap_or(""))
}

/// The calendars that apply to (service, env): the global one and its own, those that exist.
pub fn calendars_for(kv: &dyn KvRead, service: &str, env: &str) -> Result<Vec<CalendarRecord>> {
    let mut found = Vec::new();
    for key in [calendar_key(None, None), calendar_key(Some(service), Some(env))] {
        if let Some(record) = read::<CalendarRecord>(kv, Space::State, key.bytes())? {
            found.push(record);
        }
    }
    Ok(found)
}

/// Every calendar, the global one first.
pub fn all_calendars(kv: &dyn KvRead) -> Result<Vec<CalendarRecord>> {
    let records = scan_records::<CalendarRecord>(kv, &Key::record(RecordTag::Calendar))?;
    Ok(records.into_iter().map(|(_, record)| record).collect())
}

/// The alerts of (service, env), or the unmapped ones with (None, None), by fingerprint.
pub fn alerts_of(kv: &dyn KvRead, service: Option<&str>, env: Option<&str>) -> Result<Vec<AlertRecord>> {
    let prefix = Key::record(RecordTag::Alert).text(service.unwrap_or("")).text(env.unwrap_or(""));
    Ok(scan_records::<AlertRecord>(kv, &prefix)?.into_iter().map(|(_, record)| record).collect())
}

/// Every alert, unmapped ones first.
pub fn all_alerts(kv: &dyn KvRead) -> Result<Vec<AlertRecord>> {
    Ok(scan_records::<AlertRecord>(kv, &Key::record(RecordTag::Alert))?.into_iter().map(|(_, record)| record).collect())
}

pub fn host_group_key(service: &str, env: &str, group: &str, host: &str) -> Key {
    Key::record(RecordTag::HostGroup).text(service).text(env).text(group).text(host)
}

pub fn deployment_by_environment_key(service: &str, env: &str, seq: u64) -> Key {
    Key::record(RecordTag::DeploymentByEnvironment).text(service).text(env).number(seq)
}

pub fn deployment_by_seq_key(seq: u64) -> Key {
    Key::record(RecordTag::DeploymentBySeq).number(seq)
}

// ---- generic access ----

pub fn read<T: DeserializeOwned>(kv: &dyn KvRead, space: Space, key: &[u8]) -> Result<Option<T>> {
    match kv.get(space, key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

pub fn write<T: Serialize>(overlay: &mut Overlay<'_>, space: Space, key: Vec<u8>, value: &T) -> Result<()> {
    overlay.put(space, key, codec::encode(value)?);
    Ok(())
}

/// Writes the current value and its version at `seq`.
pub fn write_versioned<T: Serialize>(overlay: &mut Overlay<'_>, key: &Key, seq: u64, value: &T) -> Result<()> {
    let bytes = codec::encode(value)?;
    overlay.put(Space::History, key.clone().number(seq).into_bytes(), bytes.clone());
    overlay.put(Space::State, key.bytes().to_vec(), bytes);
    Ok(())
}

/// The version of a record as of `seq` (the last one written at or before it).
pub fn read_at<T: DeserializeOwned>(kv: &dyn KvRead, key: &Key, seq: u64) -> Result<Option<T>> {
    let start = key.clone().number(0).into_bytes();
    let end = match seq.checked_add(1) {
        Some(next) => key.clone().number(next).into_bytes(),
        None => prefix_end(key.bytes()),
    };
    match kv.last_in(Space::History, &start, &end)? {
        Some((_, bytes)) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Current value, or the value as of `at_seq` when given.
pub fn read_current_or_at<T: DeserializeOwned>(kv: &dyn KvRead, key: &Key, at_seq: Option<u64>) -> Result<Option<T>> {
    match at_seq {
        Some(seq) => read_at(kv, key, seq),
        None => read(kv, Space::State, key.bytes()),
    }
}

/// Decodes every record of `Space::State` whose key starts with `prefix`, in key order.
pub fn scan_records<T: DeserializeOwned>(kv: &dyn KvRead, prefix: &Key) -> Result<Vec<(Vec<u8>, T)>> {
    let mut records = Vec::new();
    kv.scan(Space::State, prefix.bytes(), &prefix_end(prefix.bytes()), Direction::Forward, &mut |key, value| {
        records.push((key.to_vec(), codec::decode(value)?));
        Ok(true)
    })?;
    Ok(records)
}

pub fn head(kv: &dyn KvRead) -> Result<Head> {
    Ok(read(kv, Space::Meta, META_HEAD)?.unwrap_or_default())
}

pub fn host(kv: &dyn KvRead, service: &str, env: &str, host: &str) -> Result<Option<HostRecord>> {
    read(kv, Space::State, host_key(service, env, host).bytes())
}

pub fn deployment(kv: &dyn KvRead, id: &str) -> Result<Option<DeploymentRecord>> {
    read(kv, Space::State, deployment_key(id).bytes())
}

pub fn release(kv: &dyn KvRead, service: &str, release: &str) -> Result<Option<ReleaseRecord>> {
    read(kv, Space::State, release_key(service, release).bytes())
}

pub fn environment(kv: &dyn KvRead, service: &str, env: &str) -> Result<EnvironmentRecord> {
    Ok(read(kv, Space::State, environment_key(service, env).bytes())?.unwrap_or_else(|| EnvironmentRecord {
        service: service.to_string(),
        env: env.to_string(),
        ..EnvironmentRecord::default()
    }))
}

pub fn layer(kv: &dyn KvRead, service: &str, env: &str) -> Result<LayerRecord> {
    Ok(read(kv, Space::State, layer_key(service, env).bytes())?.unwrap_or_default())
}

/// The layer of (service, env) as of `seq`.
pub fn layer_at(kv: &dyn KvRead, service: &str, env: &str, seq: u64) -> Result<LayerRecord> {
    Ok(read_at(kv, &layer_key(service, env), seq)?.unwrap_or_default())
}

/// The policy of (service, env), current or as of `at_seq`.
pub fn policy(kv: &dyn KvRead, service: &str, env: &str, at_seq: Option<u64>) -> Result<Option<PolicyRecord>> {
    read_current_or_at(kv, &policy_key(service, env), at_seq)
}

pub fn tally(kv: &dyn KvRead, service: &str, env: &str) -> Result<Tally> {
    Ok(read(kv, Space::State, tally_key(service, env).bytes())?.unwrap_or_default())
}

/// Every host ever registered in (service, env), registered or not, ordered by host name.
pub fn hosts_of(kv: &dyn KvRead, service: &str, env: &str) -> Result<Vec<HostRecord>> {
    let prefix = Key::record(RecordTag::Host).text(service).text(env);
    Ok(scan_records::<HostRecord>(kv, &prefix)?.into_iter().map(|(_, record)| record).collect())
}

/// Deployment ids of (service, env), newest first, visited until `visit` returns false.
pub fn deployments_of_newest_first(
    kv: &dyn KvRead,
    service: &str,
    env: &str,
    visit: &mut dyn FnMut(&str) -> Result<bool>,
) -> Result<()> {
    let prefix = Key::record(RecordTag::DeploymentByEnvironment).text(service).text(env);
    kv.scan(Space::State, prefix.bytes(), &prefix_end(prefix.bytes()), Direction::Reverse, &mut |_, value| {
        let id = std::str::from_utf8(value)
            .map_err(|_| crate::Error::Corrupt("deployment index holds a non-UTF-8 id".into()))?;
        visit(id)
    })
}
