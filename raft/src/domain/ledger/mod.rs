//! The ledger's rules as a deterministic function of (state, command): no IO of its own, no
//! clock, no randomness. State is read through [`KvRead`]; changes are gathered in an
//! [`Overlay`] that the caller commits atomically. The leader decided time and ids before
//! proposing, so every replica computes the same events, hashes and views.

mod effects;
mod selection;
pub mod validate;

use sha2::Digest;

use crate::domain::codec;
use crate::domain::event::{
    AppendOutcome, AppendRequest, AppendedEvent, ClusterIdentity, Event, ExpectedVersion, LedgerCommand,
};
use crate::domain::keys::{decode_u64, seq_key, time_key, IndexField, Key, META_CLUSTER, META_HEAD, META_LAYOUT};
use crate::domain::kv::{KvRead, Overlay, Space};
use crate::domain::merkle;
use crate::domain::records::{self, Head, IdRecord, LayerRecord};
use crate::domain::rejection::{Rejection, RejectionCode};
use crate::error::{Error, Result};

pub use crate::domain::desired::Directive;

/// Why applying a request stopped: the request was refused (a value), or storage failed.
pub(crate) enum Stop {
    Reject(Rejection),
    Fail(Error),
}

impl From<Rejection> for Stop {
    fn from(rejection: Rejection) -> Stop {
        Stop::Reject(rejection)
    }
}

impl From<Error> for Stop {
    fn from(error: Error) -> Stop {
        Stop::Fail(error)
    }
}

pub(crate) type Step<T> = std::result::Result<T, Stop>;

pub(crate) fn reject<T>(code: RejectionCode, message: impl Into<String>) -> Step<T> {
    Err(Stop::Reject(Rejection::new(code, message)))
}

/// What one Raft entry did.
#[derive(Debug, Default)]
pub struct Applied {
    /// One outcome per request of the command, in order.
    pub outcomes: Vec<AppendOutcome>,
    /// Events written, in seq order.
    pub events: Vec<Event>,
    /// The canonical JSON of each event (same order): rendered once for the Merkle leaf, then
    /// reused by whoever serves the event.
    pub rendered: Vec<String>,
    /// Environments whose desired layer changed, in seq order.
    pub layers: Vec<LayerChange>,
    /// Hosts whose registration began, changed group or ended, in seq order: their desired
    /// release may change without their layer changing.
    pub registrations: Vec<RegistrationChange>,
}

/// An environment's desired layer as one event left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerChange {
    pub service: String,
    pub env: String,
    pub seq: u64,
    pub layer: LayerRecord,
}

/// A host whose registration in (service, env) one event began, moved or ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationChange {
    pub host: String,
    pub seq: u64,
}

/// Applies one command on top of `state`. Rejected requests leave no trace in `state`.
pub fn apply_command(state: &mut Overlay<'_>, command: &LedgerCommand) -> Result<Applied> {
    let mut applied = Applied::default();
    for request in &command.requests {
        let (outcome, writes) = {
            let mut scratch = Overlay::new(&*state);
            match apply_request(&mut scratch, command.time_micros, request) {
                Ok(RequestDone { duplicate: Some(original), .. }) => {
                    (AppendOutcome::Appended { events: original, duplicate: true }, None)
                }
                Ok(done) => {
                    let outcome = AppendOutcome::Appended {
                        events: done.events.iter().map(appended).collect(),
                        duplicate: false,
                    };
                    applied.events.extend(done.events);
                    applied.rendered.extend(done.rendered);
                    applied.layers.extend(done.layers);
                    applied.registrations.extend(done.registrations);
                    (outcome, Some(scratch.into_writes()))
                }
                Err(Stop::Reject(rejection)) => (AppendOutcome::Rejected(rejection), None),
                Err(Stop::Fail(error)) => return Err(error),
            }
        };
        if let Some(writes) = writes {
            state.absorb(writes);
        }
        applied.outcomes.push(outcome);
    }
    if let Some(identity) = &command.identity {
        // Two leaders may each propose an identity before seeing the other's: the first applied wins.
        if state.get(Space::Meta, META_CLUSTER)?.is_none() {
            state.put(Space::Meta, META_CLUSTER.to_vec(), codec::encode(identity)?);
            state.put(Space::Meta, META_LAYOUT.to_vec(), codec::encode(&LAYOUT_VERSION)?);
        }
    }
    Ok(applied)
}

/// The layout of the state machine's records this build writes and reads, recorded with the
/// cluster identity. 2: desired releases resolved at read time from per-environment layers.
/// 3: hosts keep the release they run apart from a failed install; deployments keep the guards
/// they overrode. 4: deployments can be halted; release-safety policies per (service, env).
/// 5: hosts keep their health; waves and environments count unhealthy hosts.
pub const LAYOUT_VERSION: u64 = 5;

/// The layout recorded in `state` (`None` before the cluster identity, or by builds before 2).
pub fn layout(state: &dyn KvRead) -> Result<Option<u64>> {
    state.get(Space::Meta, META_LAYOUT)?.map(|bytes| codec::decode(&bytes)).transpose()
}

/// The cluster's identity, once a leader has recorded it.
pub fn cluster_identity(state: &dyn KvRead) -> Result<Option<ClusterIdentity>> {
    state.get(Space::Meta, META_CLUSTER)?.map(|bytes| codec::decode(&bytes)).transpose()
}

fn appended(event: &Event) -> AppendedEvent {
    AppendedEvent { seq: event.seq, id: event.id.clone(), hash: event.hash }
}

struct RequestDone {
    events: Vec<Event>,
    rendered: Vec<String>,
    layers: Vec<LayerChange>,
    registrations: Vec<RegistrationChange>,
    /// Set when the whole request replays known ids: their original positions.
    duplicate: Option<Vec<AppendedEvent>>,
}

fn apply_request(state: &mut Overlay<'_>, time_micros: i64, request: &AppendRequest) -> Step<RequestDone> {
    let commands = validate::check_request(request)?;
    if let Some(original) = replayed(state, request)? {
        return Ok(RequestDone {
            events: Vec::new(),
            rendered: Vec::new(),
            layers: Vec::new(),
            registrations: Vec::new(),
            duplicate: Some(original),
        });
    }

    let mut head = records::head(state)?;
    // The leader's clock may step back (or leadership may move to a node whose clock is
    // behind); time never decreases along seq.
    let time_micros = time_micros.max(head.time_micros);
    let mut events = Vec::with_capacity(request.events.len());
    let mut rendered = Vec::with_capacity(request.events.len());
    let mut layers = Vec::new();
    let mut registrations = Vec::new();
    let mut batch_stream: Option<String> = None;

    for (index, (proposal, command)) in request.events.iter().zip(&commands).enumerate() {
        let seq = head.seq + 1;
        let context = effects::Context { seq, time_micros, actor: &request.actor, proposal };
        let outcome = effects::apply(state, &context, command).map_err(|stop| match stop {
            Stop::Reject(rejection) => Stop::Reject(rejection.at(index)),
            failure => failure,
        })?;
        let enriched = outcome.envelope;
        let stream = proposal
            .stream
            .clone()
            .unwrap_or_else(|| validate::default_stream(enriched.service.as_deref(), enriched.env.as_deref()));
        let stream_head = stream_head(state, &stream)?;
        match &batch_stream {
            None => {
                check_expected_version(request.expected_version, &stream, stream_head).map_err(|stop| match stop {
                    Stop::Reject(rejection) => Stop::Reject(rejection.at(index)),
                    failure => failure,
                })?;
                batch_stream = Some(stream.clone());
            }
            Some(first) if *first != stream && request.expected_version != ExpectedVersion::Any => {
                return Err(Stop::Reject(
                    Rejection::new(
                        RejectionCode::ExpectedVersionMultipleStreams,
                        format!("expected_version applies to one stream; this batch writes {first:?} and {stream:?}"),
                    )
                    .at(index),
                ));
            }
            Some(_) => {}
        }
        let version = stream_head.map_or(0, |last| last + 1);

        let mut event = Event {
            seq,
            id: proposal.id.clone(),
            stream,
            version,
            event_type: proposal.event_type.clone(),
            time_micros,
            actor: request.actor.clone(),
            service: enriched.service,
            env: enriched.env,
            host: proposal.host.clone(),
            release: enriched.release,
            deployment: enriched.deployment,
            data: proposal.data.clone(),
            prev_hash: head.hash,
            hash: [0; 32],
        };
        event.hash = sha2::Sha256::digest(event.canonical_without_hash().as_bytes()).into();
        rendered.push(write_event(state, &event, proposal.fingerprint())?);
        head = Head { seq, hash: event.hash, time_micros };
        records::write(state, Space::Meta, META_HEAD.to_vec(), &head)?;
        if let Some(layer) = outcome.layer {
            let (service, env) = (event.service.clone().unwrap_or_default(), event.env.clone().unwrap_or_default());
            layers.push(LayerChange { service, env, seq, layer });
        }
        if let Some(host) = outcome.registration {
            registrations.push(RegistrationChange { host, seq });
        }
        events.push(event);
    }
    Ok(RequestDone { events, rendered, layers, registrations, duplicate: None })
}

/// `Some(original positions)` when every id of the request is already in the ledger with the
/// same body; a rejection when some ids are known and the request is not an exact replay.
fn replayed(state: &dyn KvRead, request: &AppendRequest) -> Step<Option<Vec<AppendedEvent>>> {
    let mut original = Vec::new();
    let mut first_new: Option<usize> = None;
    for (index, proposal) in request.events.iter().enumerate() {
        match records::read::<IdRecord>(state, Space::EventIds, proposal.id.as_bytes())? {
            Some(known) => {
                if known.fingerprint != proposal.fingerprint() {
                    return Err(Stop::Reject(
                        Rejection::new(
                            RejectionCode::IdConflict,
                            format!(
                                "event id {:?} was appended at seq {} with a different body",
                                proposal.id, known.seq
                            ),
                        )
                        .at(index),
                    ));
                }
                original.push(AppendedEvent { seq: known.seq, id: proposal.id.clone(), hash: known.hash });
            }
            None => {
                first_new.get_or_insert(index);
            }
        }
    }
    match (original.is_empty(), first_new) {
        (_, None) => Ok(Some(original)),
        (true, Some(_)) => Ok(None),
        (false, Some(index)) => Err(Stop::Reject(
            Rejection::new(
                RejectionCode::PartialReplay,
                format!(
                    "event id {:?} is already in the ledger (seq {}) but {:?} is new: a batch is either all new or an exact replay",
                    original[0].id, original[0].seq, request.events[index].id
                ),
            )
            .at(index),
        )),
    }
}

fn stream_head(state: &dyn KvRead, stream: &str) -> Result<Option<u64>> {
    match state.get(Space::StreamHeads, stream.as_bytes())? {
        Some(bytes) => decode_u64(&bytes)
            .map(Some)
            .ok_or_else(|| Error::Corrupt(format!("stream head of {stream:?} is not 8 bytes"))),
        None => Ok(None),
    }
}

fn check_expected_version(expected: ExpectedVersion, stream: &str, current: Option<u64>) -> Step<()> {
    let matches = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current.is_none(),
        ExpectedVersion::Exists => current.is_some(),
        ExpectedVersion::Exact(version) => current == Some(version),
    };
    if matches {
        return Ok(());
    }
    let current_text = match current {
        Some(version) => format!("is at version {version}"),
        None => "does not exist".to_string(),
    };
    reject(
        RejectionCode::WrongExpectedVersion,
        format!("stream {stream:?} {current_text}; the append expected {expected:?}"),
    )
}

/// Writes the event and everything that finds it: id, stream position, indexes, time. Returns
/// the event's canonical JSON.
fn write_event(state: &mut Overlay<'_>, event: &Event, fingerprint: [u8; 32]) -> Result<String> {
    state.put(Space::Events, seq_key(event.seq).to_vec(), codec::encode(event)?);
    // The Merkle leaf is the event exactly as served, so an export line hashes as it is.
    let json = event.canonical_json();
    merkle::store::append(state, event.seq - 1, merkle::leaf_hash(json.as_bytes()))?;
    let id_record = IdRecord { seq: event.seq, fingerprint, hash: event.hash };
    records::write(state, Space::EventIds, event.id.as_bytes().to_vec(), &id_record)?;
    state.put(
        Space::StreamVersions,
        Key::empty().text(&event.stream).number(event.version).into_bytes(),
        event.seq.to_be_bytes().to_vec(),
    );
    state.put(Space::StreamHeads, event.stream.as_bytes().to_vec(), event.version.to_be_bytes().to_vec());
    state.put(Space::Times, time_key(event.time_micros, event.seq).to_vec(), Vec::new());
    for (field, value) in index_entries(event) {
        state.put(Space::EventIndex, Key::index(field).text(&value).number(event.seq).into_bytes(), Vec::new());
    }
    Ok(json)
}

/// The index entries of an event. A type is indexed under its full name and under every dotted
/// prefix (`wave.started` also under `wave.`), so a prefix filter is one index lookup.
pub fn index_entries(event: &Event) -> Vec<(IndexField, String)> {
    let mut entries = vec![
        (IndexField::Type, event.event_type.clone()),
        (IndexField::Actor, event.actor.clone()),
        (IndexField::Stream, event.stream.clone()),
    ];
    for (position, _) in event.event_type.match_indices('.') {
        entries.push((IndexField::Type, event.event_type[..=position].to_string()));
    }
    let optional = [
        (IndexField::Service, &event.service),
        (IndexField::Env, &event.env),
        (IndexField::Host, &event.host),
        (IndexField::Release, &event.release),
        (IndexField::Deployment, &event.deployment),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            entries.push((field, value.clone()));
        }
    }
    entries
}

#[cfg(test)]
mod tests;
