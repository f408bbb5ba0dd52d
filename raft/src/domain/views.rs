//! Read-side queries over the stored log and views. Every query takes a [`KvRead`] that the
//! caller pins to one consistent point (a RocksDB snapshot), so a response never mixes two
//! heads. "As of seq N" reads use the `History` space: one seek per record, independent of the
//! length of history.

use std::collections::{BTreeMap, HashMap};

use crate::domain::codec;
use crate::domain::desired;
use crate::domain::event::Event;
use crate::domain::keys::{
    decode_u64, leading_text, prefix_end, seq_key, time_key, trailing_u64, IndexField, Key, RecordTag,
};
use crate::domain::kv::{Direction, KvRead, Space};
use crate::domain::ledger::Directive;
use crate::domain::records::{
    self, DeploymentRecord, DeploymentState, EnvironmentRecord, Head, HostRecord, LayerRecord, ReleaseRecord,
    TimelineEntry,
};
use crate::error::{Error, Result};

/// Events visited per log read before the page is cut short (the reply's `next_seq` resumes).
pub const SCAN_BUDGET_EVENTS: usize = 100_000;
pub use crate::domain::limits::READ_PAGE_BUDGET_BYTES;

/// Filters of a log read; all given filters must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Exact type, or a prefix when it ends with a dot (`wave.`).
    pub event_type: Option<String>,
    pub stream: Option<String>,
    pub service: Option<String>,
    pub env: Option<String>,
    pub host: Option<String>,
    pub release: Option<String>,
    pub deployment: Option<String>,
    pub actor: Option<String>,
    pub since_micros: Option<i64>,
    pub until_micros: Option<i64>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        let type_matches = match &self.event_type {
            None => true,
            Some(wanted) if wanted.ends_with('.') => event.event_type.starts_with(wanted.as_str()),
            Some(wanted) => event.event_type == *wanted,
        };
        let optional = |wanted: &Option<String>, actual: &Option<String>| match wanted {
            None => true,
            Some(wanted) => actual.as_deref() == Some(wanted.as_str()),
        };
        let exact = |wanted: &Option<String>, actual: &str| wanted.as_deref().is_none_or(|wanted| wanted == actual);
        type_matches
            && exact(&self.stream, &event.stream)
            && exact(&self.actor, &event.actor)
            && optional(&self.service, &event.service)
            && optional(&self.env, &event.env)
            && optional(&self.host, &event.host)
            && optional(&self.release, &event.release)
            && optional(&self.deployment, &event.deployment)
            && self.since_micros.is_none_or(|since| event.time_micros >= since)
            && self.until_micros.is_none_or(|until| event.time_micros <= until)
    }

    /// The most selective index to drive a read with, if any filter has one.
    fn driving_index(&self) -> Option<(IndexField, &str)> {
        let candidates = [
            (IndexField::Host, &self.host),
            (IndexField::Deployment, &self.deployment),
            (IndexField::Release, &self.release),
            (IndexField::Stream, &self.stream),
            (IndexField::Env, &self.env),
            (IndexField::Service, &self.service),
            (IndexField::Type, &self.event_type),
            (IndexField::Actor, &self.actor),
        ];
        candidates.into_iter().find_map(|(field, value)| value.as_deref().map(|value| (field, value)))
    }
}

/// A page of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the next read continues; `head + 1` once the reader has seen everything.
    pub next_seq: u64,
    pub head_seq: u64,
}

pub fn event(kv: &dyn KvRead, seq: u64) -> Result<Option<Event>> {
    match kv.get(Space::Events, &seq_key(seq))? {
        Some(bytes) => Ok(Some(check_event(seq, codec::decode(&bytes)?)?)),
        None => Ok(None),
    }
}

/// Refuses an event whose stored seq disagrees with its key: storage is damaged.
fn check_event(seq: u64, event: Event) -> Result<Event> {
    if event.seq != seq {
        return Err(Error::Corrupt(format!("event stored at seq {seq} says seq {}", event.seq)));
    }
    Ok(event)
}

/// Bytes of an event's served JSON, estimated from its fields (exact but for escapes and the
/// digits of numbers): what a page's byte budget counts.
pub fn served_bytes(event: &Event) -> usize {
    let optional = [&event.service, &event.env, &event.host, &event.release, &event.deployment];
    let texts = event.data.len() + event.id.len() + event.stream.len() + event.event_type.len() + event.actor.len();
    // Two hashes in hex, the member names, quotes and numbers.
    texts + optional.iter().map(|field| field.as_ref().map_or(0, String::len)).sum::<usize>() + 2 * 64 + 256
}

/// Reads up to `limit` events with seq ≥ `from_seq` that match `filter`, and no more than
/// [`READ_PAGE_BUDGET_BYTES`] of them (the page then stops early; `next_seq` continues it).
pub fn read_events(kv: &dyn KvRead, filter: &EventFilter, from_seq: u64, limit: usize) -> Result<EventPage> {
    read_events_within(kv, filter, from_seq, limit, READ_PAGE_BUDGET_BYTES)
}

/// [`read_events`] with a byte budget of its own: the page stops after the event that brings its
/// served JSON (see [`served_bytes`]) to `budget_bytes` or beyond; it always holds at least one
/// event when one matches.
pub fn read_events_within(
    kv: &dyn KvRead,
    filter: &EventFilter,
    from_seq: u64,
    limit: usize,
    budget_bytes: usize,
) -> Result<EventPage> {
    let head = records::head(kv)?;
    let mut lower = from_seq.max(1);
    let mut upper = head.seq;
    if let Some(since) = filter.since_micros {
        lower = lower.max(first_seq_at_or_after(kv, since)?.unwrap_or(head.seq + 1));
    }
    if let Some(until) = filter.until_micros {
        upper = upper.min(seq_at_time(kv, until)?.unwrap_or(0));
    }
    let mut page = EventPage { events: Vec::new(), next_seq: head.seq + 1, head_seq: head.seq };
    if lower > upper || limit == 0 {
        page.next_seq = if limit == 0 { lower } else { head.seq.max(lower.saturating_sub(1)) + 1 };
        return Ok(page);
    }
    let mut scanned = 0usize;
    let mut bytes = 0usize;
    let mut last_visited = lower - 1;
    let mut take = |seq: u64, event: Event, page: &mut EventPage| -> bool {
        scanned += 1;
        last_visited = seq;
        if filter.matches(&event) {
            bytes += served_bytes(&event);
            page.events.push(event);
        }
        page.events.len() < limit && scanned < SCAN_BUDGET_EVENTS && bytes < budget_bytes
    };
    match filter.driving_index() {
        Some((field, value)) => {
            let start = Key::index(field).text(value).number(lower).into_bytes();
            let end = Key::index(field).text(value).number(upper + 1).into_bytes();
            kv.scan(Space::EventIndex, &start, &end, Direction::Forward, &mut |key, _| {
                let seq = trailing_u64(key).ok_or_else(|| Error::Corrupt("event index key without seq".into()))?;
                let found =
                    event(kv, seq)?.ok_or_else(|| Error::Corrupt(format!("index names missing event {seq}")))?;
                Ok(take(seq, found, &mut page))
            })?;
        }
        None => {
            kv.scan(Space::Events, &seq_key(lower), &seq_key(upper + 1), Direction::Forward, &mut |key, value| {
                let seq = decode_u64(key).ok_or_else(|| Error::Corrupt("event key is not 8 bytes".into()))?;
                Ok(take(seq, check_event(seq, codec::decode(value)?)?, &mut page))
            })?;
        }
    }
    let cut_short = page.events.len() >= limit || scanned >= SCAN_BUDGET_EVENTS || bytes >= budget_bytes;
    page.next_seq = if cut_short { last_visited + 1 } else { upper.max(last_visited) + 1 };
    if !cut_short && filter.until_micros.is_none() {
        page.next_seq = head.seq + 1;
    }
    Ok(page)
}

/// Events of one stream by version: up to `limit`, and no more than [`READ_PAGE_BUDGET_BYTES`]
/// of them (at least one); the caller continues after the last version returned.
pub fn read_stream(
    kv: &dyn KvRead,
    stream: &str,
    from_version: u64,
    limit: usize,
) -> Result<(Vec<Event>, Option<u64>)> {
    let prefix = Key::empty().text(stream);
    let start = prefix.clone().number(from_version).into_bytes();
    let mut seqs = Vec::new();
    kv.scan(Space::StreamVersions, &start, &prefix_end(prefix.bytes()), Direction::Forward, &mut |_, value| {
        seqs.push(value.to_vec());
        Ok(seqs.len() < limit)
    })?;
    let mut events = Vec::with_capacity(seqs.len());
    let mut served = 0usize;
    for bytes in seqs {
        if served >= READ_PAGE_BUDGET_BYTES {
            break;
        }
        let seq = decode_u64(&bytes).ok_or_else(|| Error::Corrupt("stream position is not 8 bytes".into()))?;
        let found = event(kv, seq)?.ok_or_else(|| Error::Corrupt(format!("stream names missing event {seq}")))?;
        served += served_bytes(&found);
        events.push(found);
    }
    let last_version = match kv.get(Space::StreamHeads, stream.as_bytes())? {
        Some(bytes) => Some(decode_u64(&bytes).ok_or_else(|| Error::Corrupt("stream head is not 8 bytes".into()))?),
        None => None,
    };
    Ok((events, last_version))
}

/// Seq of the last event with time ≤ `time_micros`.
pub fn seq_at_time(kv: &dyn KvRead, time_micros: i64) -> Result<Option<u64>> {
    let end = match time_micros.checked_add(1) {
        Some(next) => time_key(next, 0).to_vec(),
        None => vec![0xFF; 17],
    };
    Ok(kv.last_in(Space::Times, &[], &end)?.and_then(|(key, _)| trailing_u64(&key)))
}

/// Seq of the first event with time ≥ `time_micros`.
pub fn first_seq_at_or_after(kv: &dyn KvRead, time_micros: i64) -> Result<Option<u64>> {
    let mut found = None;
    kv.scan(Space::Times, &time_key(time_micros, 0), &[0xFF; 17], Direction::Forward, &mut |key, _| {
        found = trailing_u64(key);
        Ok(false)
    })?;
    Ok(found)
}

/// Hosts of the fleet as of a seq, and counts by release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetView {
    pub as_of_seq: u64,
    pub hosts: Vec<HostRecord>,
    pub desired: BTreeMap<String, u64>,
    /// Hosts by the release they run.
    pub observed: BTreeMap<String, u64>,
    pub converged: u64,
    /// Hosts whose newest install failed (and that have not reported running since).
    pub failing: u64,
}

/// Layers of the environments a read visits, each read once, as of one seq.
struct Layers<'a> {
    kv: &'a dyn KvRead,
    at_seq: Option<u64>,
    read: HashMap<(String, String), LayerRecord>,
}

impl<'a> Layers<'a> {
    /// Layers as they are now (`None`) or as of a seq.
    fn new(kv: &'a dyn KvRead, at_seq: Option<u64>) -> Layers<'a> {
        Layers { kv, at_seq, read: HashMap::new() }
    }

    fn of(&mut self, service: &str, env: &str) -> Result<&LayerRecord> {
        let key = (service.to_string(), env.to_string());
        if !self.read.contains_key(&key) {
            let layer = match self.at_seq {
                Some(seq) => records::layer_at(self.kv, service, env, seq)?,
                None => records::layer(self.kv, service, env)?,
            };
            self.read.insert(key.clone(), layer);
        }
        Ok(&self.read[&key])
    }

    /// `host` with its desired release resolved. A host that left keeps, in the views, the
    /// desired release it had when it deregistered (the event that last changed its record).
    fn resolve(&mut self, mut host: HostRecord) -> Result<HostRecord> {
        if !host.registered {
            let layer = records::layer_at(self.kv, &host.service, &host.env, host.changed_seq)?;
            host.desired = desired::resolve_registration(&layer, &host);
            return Ok(host);
        }
        let layer = self.of(&host.service, &host.env)?;
        Ok(desired::with_desired(layer, host))
    }
}

/// The host records under `prefix` as of `at_seq` (now when `None`), registered or not: the
/// current record when the host has not changed since, else its version then.
fn hosts_as_of(kv: &dyn KvRead, prefix: &Key, at_seq: Option<u64>) -> Result<Vec<HostRecord>> {
    let mut hosts = Vec::new();
    for (key, record) in records::scan_records::<HostRecord>(kv, prefix)? {
        match at_seq {
            Some(seq) if record.changed_seq > seq => {
                if let Some(record) = records::read_at::<HostRecord>(kv, &Key::record_from_bytes(key), seq)? {
                    hosts.push(record);
                }
            }
            _ => hosts.push(record),
        }
    }
    Ok(hosts)
}

fn hosts_prefix(service: Option<&str>, env: Option<&str>) -> Key {
    match (service, env) {
        (Some(service), Some(env)) => Key::record(RecordTag::Host).text(service).text(env),
        (Some(service), None) => Key::record(RecordTag::Host).text(service),
        _ => Key::record(RecordTag::Host),
    }
}

/// The registered hosts of `service` (and `env`), now or as of `at_seq`, with their desired
/// releases resolved from their environments' layers as of the same seq.
pub fn fleet(kv: &dyn KvRead, service: Option<&str>, env: Option<&str>, at_seq: Option<u64>) -> Result<FleetView> {
    let head = records::head(kv)?;
    let as_of_seq = at_seq.map_or(head.seq, |seq| seq.min(head.seq));
    let at_seq = at_seq.map(|_| as_of_seq);
    let mut layers = Layers::new(kv, at_seq);
    let mut hosts = Vec::new();
    for record in hosts_as_of(kv, &hosts_prefix(service, env), at_seq)? {
        if record.registered && env.is_none_or(|env| record.env == env) {
            hosts.push(layers.resolve(record)?);
        }
    }
    let mut view = FleetView {
        as_of_seq,
        hosts: Vec::new(),
        desired: BTreeMap::new(),
        observed: BTreeMap::new(),
        converged: 0,
        failing: 0,
    };
    for host in &hosts {
        if let Some(desired) = &host.desired {
            *view.desired.entry(desired.release.clone()).or_default() += 1;
        }
        if let Some(running) = &host.running {
            *view.observed.entry(running.clone()).or_default() += 1;
        }
        if host.converged() {
            view.converged += 1;
        }
        if host.failure.is_some() {
            view.failing += 1;
        }
    }
    view.hosts = hosts;
    Ok(view)
}

/// One host in every (service, env) it belongs to, now or as of `at_seq`, with its desired
/// release resolved.
pub fn host_state(kv: &dyn KvRead, host: &str, at_seq: Option<u64>) -> Result<Vec<HostRecord>> {
    // As of the head is now: current records, without a history seek each.
    let head = records::head(kv)?.seq;
    let at_seq = at_seq.filter(|seq| *seq < head);
    let mut layers = Layers::new(kv, at_seq);
    let mut states = Vec::new();
    for (service, env) in environments_of_host(kv, host)? {
        let key = records::host_key(&service, &env, host);
        if let Some(record) = records::read_current_or_at::<HostRecord>(kv, &key, at_seq)? {
            states.push(layers.resolve(record)?);
        }
    }
    Ok(states)
}

/// The (service, env) pairs a host was ever registered in.
pub fn environments_of_host(kv: &dyn KvRead, host: &str) -> Result<Vec<(String, String)>> {
    let prefix = Key::record(RecordTag::HostEnvironment).text(host);
    let mut pairs = Vec::new();
    kv.scan(Space::State, prefix.bytes(), &prefix_end(prefix.bytes()), Direction::Forward, &mut |key, _| {
        let rest = &key[prefix.bytes().len()..];
        let (service, rest) = leading_text(rest).ok_or_else(|| malformed_host_index(host))?;
        let (env, _) = leading_text(rest).ok_or_else(|| malformed_host_index(host))?;
        pairs.push((service.to_string(), env.to_string()));
        Ok(true)
    })?;
    Ok(pairs)
}

fn malformed_host_index(host: &str) -> Error {
    Error::Corrupt(format!("host index of {host:?} is malformed"))
}

/// The newest `limit` versions of a host's records across its environments, newest first, each
/// with its desired release as of its own seq.
pub fn host_history(kv: &dyn KvRead, host: &str, up_to_seq: Option<u64>, limit: usize) -> Result<Vec<HostRecord>> {
    let mut versions = Vec::new();
    for (service, env) in environments_of_host(kv, host)? {
        let prefix = records::host_key(&service, &env, host);
        // Versions written after `up_to_seq` are not read at all, so `limit` counts only the
        // versions the answer may hold.
        let end = match up_to_seq.and_then(|seq| seq.checked_add(1)) {
            Some(next) => prefix.clone().number(next).into_bytes(),
            None => prefix_end(prefix.bytes()),
        };
        let mut taken = 0;
        kv.scan(Space::History, prefix.bytes(), &end, Direction::Reverse, &mut |_, value| {
            versions.push(codec::decode::<HostRecord>(value)?);
            taken += 1;
            Ok(taken < limit)
        })?;
    }
    versions.sort_by_key(|version| std::cmp::Reverse(version.changed_seq));
    versions.truncate(limit);
    versions.into_iter().map(|version| Layers::new(kv, Some(version.changed_seq)).resolve(version)).collect()
}

/// The host's desired releases as of now, and the seq they are as of.
pub fn watch_state(kv: &dyn KvRead, host: &str) -> Result<(u64, Vec<HostRecord>)> {
    let head = records::head(kv)?;
    Ok((head.seq, host_state(kv, host, None)?))
}

/// Changes of `host`'s desired release at seqs in `[from_seq, until_seq]`, in seq order: at most
/// about `limit` of them, and the seq to continue from (`until_seq + 1` when all were read).
///
/// A host's desired release changes only where its environment's layer does (its own events can
/// only take a desired release away), so this visits the layer's versions in the range and
/// resolves the host at each, against its release just before.
pub fn directives_between(
    kv: &dyn KvRead,
    host: &str,
    from_seq: u64,
    until_seq: u64,
    limit: usize,
) -> Result<(Vec<Directive>, u64)> {
    let mut directives = Vec::new();
    // When an environment's scan stops at the limit, only seqs up to its last one are complete.
    let mut complete_until = until_seq;
    for (service, env) in environments_of_host(kv, host)? {
        let host_key = records::host_key(&service, &env, host);
        let key = records::layer_key(&service, &env);
        let mut found = 0;
        let start = key.clone().number(from_seq).into_bytes();
        let end = match until_seq.checked_add(1) {
            Some(next) => key.clone().number(next).into_bytes(),
            None => prefix_end(key.bytes()),
        };
        // The layer just before the version being visited.
        let mut before_layer = match from_seq.checked_sub(1) {
            Some(before) => records::layer_at(kv, &service, &env, before)?,
            None => LayerRecord::default(),
        };
        kv.scan(Space::History, &start, &end, Direction::Forward, &mut |stored_key, value| {
            let seq = trailing_u64(stored_key).ok_or_else(|| Error::Corrupt("layer version without seq".into()))?;
            let layer = codec::decode::<LayerRecord>(value)?;
            // An event changes a layer or a host, never both: the host is the same just before.
            let Some(record) = records::read_at::<HostRecord>(kv, &host_key, seq)? else {
                before_layer = layer;
                return Ok(true);
            };
            let before = desired::resolve(&before_layer, &record);
            let directive = desired::directive_at(&layer, &record, seq, before.as_ref().map(|d| d.release.as_str()));
            before_layer = layer;
            if let Some(directive) = directive {
                directives.push(directive);
                found += 1;
                if found == limit {
                    complete_until = complete_until.min(seq);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
    }
    directives.retain(|directive| directive.seq <= complete_until);
    directives.sort_by_key(|directive| directive.seq);
    Ok((directives, complete_until.saturating_add(1)))
}

pub fn deployment(kv: &dyn KvRead, id: &str, at_seq: Option<u64>) -> Result<Option<DeploymentRecord>> {
    records::read_current_or_at(kv, &records::deployment_key(id), at_seq)
}

/// How many failed hosts a deployment view lists.
pub const DEPLOYMENT_FAILURES_MAX: usize = 100;

/// The hosts that count as failed toward `deployment`'s waves, as of `at_seq` (the head when
/// `None`), in name order, at most [`DEPLOYMENT_FAILURES_MAX`]. An ended deployment's are those
/// of the seq it ended at, as its counters are.
pub fn deployment_failures(
    kv: &dyn KvRead,
    deployment: &DeploymentRecord,
    at_seq: Option<u64>,
) -> Result<Vec<HostRecord>> {
    if deployment.waves.iter().all(|wave| wave.failed == 0) {
        return Ok(Vec::new());
    }
    let seq = match (&deployment.ended, at_seq) {
        (Some(ended), Some(at_seq)) => Some(ended.seq.min(at_seq)),
        (Some(ended), None) => Some(ended.seq),
        (None, at_seq) => at_seq,
    };
    let view = fleet(kv, Some(&deployment.service), Some(&deployment.env), seq)?;
    let mut failed: Vec<HostRecord> = view
        .hosts
        .into_iter()
        .filter(|host| {
            desired::mark(host, host.desired.as_ref())
                .is_some_and(|((id, _), mark)| id == deployment.id && mark == desired::Mark::Failed)
        })
        .collect();
    failed.sort_by(|a, b| a.host.cmp(&b.host));
    failed.truncate(DEPLOYMENT_FAILURES_MAX);
    Ok(failed)
}

/// Filters of a deployment listing.
#[derive(Clone, Debug, Default)]
pub struct DeploymentFilter {
    pub service: Option<String>,
    pub env: Option<String>,
    pub state: Option<DeploymentState>,
    pub release: Option<String>,
}

/// Deployments newest first.
pub fn deployments(kv: &dyn KvRead, filter: &DeploymentFilter, limit: usize) -> Result<Vec<DeploymentRecord>> {
    let prefix = Key::record(RecordTag::DeploymentBySeq);
    let mut ids = Vec::new();
    kv.scan(Space::State, prefix.bytes(), &prefix_end(prefix.bytes()), Direction::Reverse, &mut |_, value| {
        ids.push(value.to_vec());
        Ok(ids.len() < SCAN_BUDGET_EVENTS)
    })?;
    let mut found = Vec::new();
    for id in ids {
        let id = String::from_utf8(id).map_err(|_| Error::Corrupt("deployment id is not UTF-8".into()))?;
        let Some(record) = records::deployment(kv, &id)? else {
            return Err(Error::Corrupt(format!("deployment index names missing deployment {id:?}")));
        };
        let keep = filter.service.as_ref().is_none_or(|service| *service == record.service)
            && filter.env.as_ref().is_none_or(|env| *env == record.env)
            && filter.release.as_ref().is_none_or(|release| *release == record.release)
            && filter.state.is_none_or(|state| state == record.state);
        if keep {
            found.push(record);
            if found.len() >= limit {
                break;
            }
        }
    }
    Ok(found)
}

/// A release and its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseView {
    pub record: ReleaseRecord,
    pub timeline: Vec<TimelineEntry>,
}

/// Releases of a service with their timelines (oldest first), and its environments.
pub fn releases(kv: &dyn KvRead, service: &str) -> Result<(Vec<ReleaseView>, Vec<EnvironmentRecord>)> {
    let release_records: Vec<(Vec<u8>, ReleaseRecord)> =
        records::scan_records(kv, &Key::record(RecordTag::Release).text(service))?;
    let mut views = Vec::with_capacity(release_records.len());
    for (_, record) in release_records {
        let prefix = Key::record(RecordTag::Timeline).text(service).text(&record.release);
        let timeline =
            records::scan_records::<TimelineEntry>(kv, &prefix)?.into_iter().map(|(_, entry)| entry).collect();
        views.push(ReleaseView { record, timeline });
    }
    views.sort_by_key(|view| view.record.created.seq);
    let environments =
        records::scan_records::<EnvironmentRecord>(kv, &Key::record(RecordTag::Environment).text(service))?
            .into_iter()
            .map(|(_, record)| record)
            .collect();
    Ok((views, environments))
}

pub fn head(kv: &dyn KvRead) -> Result<Head> {
    records::head(kv)
}

/// Visits the events with seq in `[from_seq, until_seq]` in order until `visit` returns false.
pub fn visit_events(
    kv: &dyn KvRead,
    from_seq: u64,
    until_seq: u64,
    visit: &mut dyn FnMut(Event) -> Result<bool>,
) -> Result<()> {
    let Some(end) = until_seq.checked_add(1) else {
        return Err(Error::Corrupt("seq range ends at u64::MAX".into()));
    };
    kv.scan(Space::Events, &seq_key(from_seq.max(1)), &seq_key(end), Direction::Forward, &mut |key, value| {
        let seq = decode_u64(key).ok_or_else(|| Error::Corrupt("event key is not 8 bytes".into()))?;
        visit(check_event(seq, codec::decode(value)?)?)
    })
}

/// One host whose registration, desired or observed release differs between two seqs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostChange {
    /// The record as of the first seq (`None`: not registered yet).
    pub before: Option<HostRecord>,
    /// The record as of the second seq.
    pub after: HostRecord,
}

/// Hosts of `service` (and `env`) whose registration, desired release or observed release as of
/// `to_seq` differs from what it was as of `from_seq` (`from_seq` ≤ `to_seq` ≤ head). Desired
/// releases are resolved from the layers as of each seq; a host untouched since `from_seq` costs
/// no history read.
pub fn fleet_diff(
    kv: &dyn KvRead,
    service: Option<&str>,
    env: Option<&str>,
    from_seq: u64,
    to_seq: u64,
) -> Result<Vec<HostChange>> {
    let prefix = hosts_prefix(service, env);
    let (mut from_layers, mut to_layers) = (Layers::new(kv, Some(from_seq)), Layers::new(kv, Some(to_seq)));
    let mut changes = Vec::new();
    for (key, current) in records::scan_records::<HostRecord>(kv, &prefix)? {
        if env.is_some_and(|env| current.env != env) {
            continue;
        }
        let key = Key::record_from_bytes(key);
        let at = |seq: u64, current: &HostRecord| -> Result<Option<HostRecord>> {
            if seq == 0 {
                return Ok(None);
            }
            if current.changed_seq <= seq {
                return Ok(Some(current.clone()));
            }
            records::read_at::<HostRecord>(kv, &key, seq)
        };
        let Some(after) = at(to_seq, &current)? else { continue };
        let after = to_layers.resolve(after)?;
        let before = match at(from_seq, &current)? {
            Some(before) => Some(from_layers.resolve(before)?),
            None => None,
        };
        let release = |record: Option<&HostRecord>| {
            (
                record.is_some_and(|record| record.registered),
                record.and_then(|record| record.desired.as_ref().map(|desired| desired.release.clone())),
                record.and_then(|record| record.running.clone()),
            )
        };
        if release(before.as_ref()) != release(Some(&after)) {
            changes.push(HostChange { before, after });
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent};
    use crate::domain::kv::{MemoryKv, Overlay};

    /// A ledger of `count` notes in stream "notes", each with `data_bytes` of data.
    fn notes(count: usize, data_bytes: usize) -> MemoryKv {
        let mut kv = MemoryKv::new();
        for index in 0..count {
            let mut event = ProposedEvent::new(format!("n{index}"), "app.note");
            event.stream = Some("notes".into());
            event.data = format!("{{\"text\":\"{}\"}}", "x".repeat(data_bytes));
            let command = LedgerCommand {
                time_micros: 1_000_000 + index as i64,
                requests: vec![AppendRequest {
                    events: vec![event],
                    expected_version: ExpectedVersion::Any,
                    actor: "a".into(),
                }],
                identity: None,
            };
            let mut overlay = Overlay::new(&kv);
            crate::domain::ledger::apply_command(&mut overlay, &command).unwrap();
            let writes = overlay.into_writes();
            kv.apply(writes);
        }
        kv
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_and_next_seq_continues_it() {
        let kv = notes(20, 1_000);
        let one = served_bytes(&event(&kv, 1).unwrap().unwrap());
        // A budget three and a half events wide: pages of four (the fourth reaches it).
        let budget = one * 7 / 2;
        let mut seen = Vec::new();
        let mut from = 1;
        loop {
            let page = read_events_within(&kv, &EventFilter::default(), from, 10_000, budget).unwrap();
            assert!(page.events.len() <= 4, "a page of {} events", page.events.len());
            seen.extend(page.events.iter().map(|event| event.seq));
            if page.next_seq > page.head_seq {
                break;
            }
            assert_eq!(page.next_seq, page.events.last().unwrap().seq + 1);
            from = page.next_seq;
        }
        assert_eq!(seen, (1..=20).collect::<Vec<u64>>(), "every event once, in order");
        // Each served event is about as long as counted.
        let served = event(&kv, 1).unwrap().unwrap().canonical_json().len();
        assert!(one.abs_diff(served) < 300, "estimated {one}, served {served}");
        // A budget smaller than one event still yields one event per page.
        let page = read_events_within(&kv, &EventFilter::default(), 5, 10_000, 1).unwrap();
        assert_eq!((page.events.len(), page.next_seq), (1, 6));
    }

    #[test]
    fn the_default_budget_cuts_a_page_of_large_events() {
        let kv = notes(100, 60 * 1024);
        let page = read_events(&kv, &EventFilter::default(), 1, 10_000).unwrap();
        let bytes: usize = page.events.iter().map(served_bytes).sum();
        assert!(page.events.len() < 100 && bytes >= READ_PAGE_BUDGET_BYTES, "{} events", page.events.len());
        assert!(bytes < READ_PAGE_BUDGET_BYTES + 70 * 1024);
        assert_eq!(page.next_seq, page.events.len() as u64 + 1);
        let (events, last_version) = read_stream(&kv, "notes", 0, 10_000).unwrap();
        assert_eq!(events.len(), page.events.len(), "stream pages have the same budget");
        assert_eq!(last_version, Some(99));
    }
}
