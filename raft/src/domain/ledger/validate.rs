//! Static checks of a proposed event: names, required and allowed fields, the shape of `data`.
//! Runs on the leader before proposing (fast 4xx) and again inside apply, so a malformed command
//! that reaches the log is rejected as a value on every replica alike.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::domain::calendar::{self, Calendar};
use crate::domain::event::{AppendRequest, ProposedEvent};
use crate::domain::limits::*;
use crate::domain::policy::Policy;
use crate::domain::rejection::{Rejection, RejectionCode};
use crate::domain::webhooks;

/// What a proposed event means to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ReleaseCreated {
        artifact: Option<String>,
        notes: Option<String>,
        /// `data.committed_at`, in microseconds since the epoch.
        committed_micros: Option<i64>,
    },
    ReleaseBlocked {
        reason: String,
    },
    ReleaseUnblocked {
        reason: String,
    },
    TargetRegistered {
        group: Option<String>,
        labels: BTreeMap<String, String>,
    },
    TargetDeregistered,
    DeploymentStarted {
        waves: Vec<WaveSpec>,
        force: Option<String>,
        /// Break-glass: starts it even in a scheduled freeze window, for this reason.
        freeze_override: Option<String>,
    },
    WaveStarted {
        wave: String,
        force: Option<String>,
        freeze_override: Option<String>,
    },
    WaveCompleted {
        wave: String,
        force: Option<String>,
    },
    DeploymentCompleted {
        force: Option<String>,
    },
    DeploymentAborted {
        reason: String,
    },
    /// No wave of the deployment starts until it is resumed.
    DeploymentHalted {
        reason: String,
    },
    DeploymentResumed {
        reason: String,
    },
    /// Replaces the release-safety policy of a (service, env).
    PolicySet {
        policy: Policy,
    },
    /// An alert from an alert source started or stopped firing.
    Alert {
        firing: bool,
        alert: AlertFacts,
    },
    Rollback {
        reason: String,
    },
    HostReported {
        status: HostStatus,
        applied_seq: u64,
        message: Option<String>,
        /// The host's own health check: Some(true) healthy, Some(false) unhealthy.
        health: Option<bool>,
    },
    FreezeStarted {
        reason: String,
    },
    FreezeEnded {
        reason: String,
    },
    /// Replaces the freeze calendar of a (service, env), or the global one.
    CalendarSet {
        calendar: Calendar,
    },
    /// A webhook's registration (decision 102); checked here, kept in the log only.
    WebhookAdded,
    WebhookRemoved,
    /// The last seq a webhook's receiver acknowledged; only the cluster itself records it.
    WebhookProgressed,
    /// A client type outside the domain namespaces: stored and served as-is.
    Custom,
}

/// What an `alert.fired` or `alert.resolved` event says about its alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertFacts {
    pub source: String,
    pub fingerprint: String,
    /// RFC 3339, as the source sent it: with the fingerprint, it names one firing of the alert.
    pub starts_at: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveSpec {
    pub name: String,
    pub selector: Selector,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Selector {
    Hosts(Vec<String>),
    Group(String),
    Percent(u8),
}

/// Status an agent reports for its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum HostStatus {
    Applying,
    Running,
    Failed,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Applying => "applying",
            HostStatus::Running => "running",
            HostStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<HostStatus> {
        match text {
            "applying" => Some(HostStatus::Applying),
            "running" => Some(HostStatus::Running),
            "failed" => Some(HostStatus::Failed),
            _ => None,
        }
    }
}

/// Type prefixes owned by fleetlog; a client type may not start with one.
pub const DOMAIN_PREFIXES: &[&str] = &[
    "release.",
    "target.",
    "deployment.",
    "wave.",
    "rollback.",
    "host.",
    "freeze.",
    "fleetlog.",
    "policy.",
    "alert.",
    "webhook.",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Service,
    Env,
    Host,
    Release,
    Deployment,
}

impl Field {
    const ALL: [Field; 5] = [Field::Service, Field::Env, Field::Host, Field::Release, Field::Deployment];

    fn name(self) -> &'static str {
        match self {
            Field::Service => "service",
            Field::Env => "env",
            Field::Host => "host",
            Field::Release => "release",
            Field::Deployment => "deployment",
        }
    }

    fn get(self, event: &ProposedEvent) -> Option<&str> {
        match self {
            Field::Service => event.service.as_deref(),
            Field::Env => event.env.as_deref(),
            Field::Host => event.host.as_deref(),
            Field::Release => event.release.as_deref(),
            Field::Deployment => event.deployment.as_deref(),
        }
    }
}

/// Envelope fields a domain type requires and the ones it may carry besides.
struct Envelope {
    required: &'static [Field],
    optional: &'static [Field],
}

use Field::*;

const SERVICE_RELEASE: Envelope = Envelope { required: &[Service, Release], optional: &[] };
const TARGET: Envelope = Envelope { required: &[Host, Service, Env], optional: &[] };
const DEPLOYMENT_START: Envelope = Envelope { required: &[Deployment, Service, Env, Release], optional: &[] };
// Steps of a deployment name only the deployment; the ledger fills service, env and release.
const DEPLOYMENT_STEP: Envelope = Envelope { required: &[Deployment], optional: &[Service, Env, Release] };
const ROLLBACK: Envelope = Envelope { required: &[Service, Env], optional: &[Release] };
const REPORT: Envelope = Envelope { required: &[Host, Service, Env, Release], optional: &[] };
const SERVICE_ENV: Envelope = Envelope { required: &[Service, Env], optional: &[] };
// An alert may name no environment (it is kept as unmapped) and may name a host.
const ALERT: Envelope = Envelope { required: &[], optional: &[Service, Env, Host] };
// A calendar of one (service, env), or with neither the global one.
const CALENDAR: Envelope = Envelope { required: &[], optional: &[Service, Env] };
// Webhooks belong to no environment.
const NO_FIELDS: Envelope = Envelope { required: &[], optional: &[] };

/// Checks the whole request statically and returns the meaning of each event.
pub fn check_request(request: &AppendRequest) -> Result<Vec<Command>, Rejection> {
    if request.events.is_empty() {
        return Err(Rejection::new(RejectionCode::EmptyBatch, "a batch needs at least one event"));
    }
    if request.events.len() > BATCH_EVENTS_MAX {
        return Err(Rejection::new(
            RejectionCode::BatchTooLarge,
            format!("a batch holds at most {BATCH_EVENTS_MAX} events, this one has {}", request.events.len()),
        ));
    }
    check_name("actor", &request.actor, NAME_CHARS_MAX, is_actor_char)?;
    let mut ids = std::collections::HashSet::with_capacity(request.events.len());
    let mut commands = Vec::with_capacity(request.events.len());
    for (index, event) in request.events.iter().enumerate() {
        if !ids.insert(event.id.as_str()) {
            return Err(Rejection::new(
                RejectionCode::DuplicateIdInBatch,
                format!("event id {:?} appears twice in the batch", event.id),
            )
            .at(index));
        }
        commands.push(check_event(event).map_err(|rejection| rejection.at(index))?);
    }
    Ok(commands)
}

/// Checks one event statically and returns its meaning.
pub fn check_event(event: &ProposedEvent) -> Result<Command, Rejection> {
    check_id(&event.id)?;
    check_type_name(&event.event_type)?;
    if let Some(stream) = &event.stream {
        check_stream_name(stream)?;
    }
    for field in Field::ALL {
        if let Some(value) = field.get(event) {
            check_field_value(field, value)?;
        }
    }
    if event.data.len() > EVENT_DATA_BYTES_MAX {
        return Err(Rejection::new(
            RejectionCode::EventTooLarge,
            format!("data is {} bytes encoded; the limit is {EVENT_DATA_BYTES_MAX}", event.data.len()),
        ));
    }
    let data = parse_data(&event.data)?;
    let mut data = DataFields::new(&event.event_type, data);
    let command = match event.event_type.as_str() {
        "release.created" => {
            envelope(event, &SERVICE_RELEASE)?;
            let artifact = data.optional_text("artifact", REASON_CHARS_MAX)?;
            let notes = data.optional_text("notes", REASON_CHARS_MAX)?;
            data.optional_text_list("commits")?;
            let committed_micros = match data.optional_text("committed_at", 40)? {
                None => None,
                Some(text) => match chrono::DateTime::parse_from_rfc3339(&text) {
                    Ok(time) => Some(time.timestamp_micros()),
                    Err(_) => return Err(data.wrong("committed_at", "an RFC 3339 time").on("data.committed_at")),
                },
            };
            Command::ReleaseCreated { artifact, notes, committed_micros }
        }
        "release.blocked" => {
            envelope(event, &SERVICE_RELEASE)?;
            Command::ReleaseBlocked { reason: data.reason()? }
        }
        "release.unblocked" => {
            envelope(event, &SERVICE_RELEASE)?;
            Command::ReleaseUnblocked { reason: data.reason()? }
        }
        "target.registered" => {
            envelope(event, &TARGET)?;
            let group = data.optional_text("group", NAME_CHARS_MAX)?;
            if let Some(group) = &group {
                check_name("data.group", group, NAME_CHARS_MAX, is_name_char)?;
            }
            Command::TargetRegistered { group, labels: data.labels()? }
        }
        "target.deregistered" => {
            envelope(event, &TARGET)?;
            data.optional_text("reason", REASON_CHARS_MAX)?;
            Command::TargetDeregistered
        }
        "deployment.started" => {
            envelope(event, &DEPLOYMENT_START)?;
            data.optional_text("description", REASON_CHARS_MAX)?;
            let freeze_override = data.optional_text("override_reason", REASON_CHARS_MAX)?;
            Command::DeploymentStarted { waves: data.waves()?, force: data.force_reason()?, freeze_override }
        }
        "wave.started" => {
            envelope(event, &DEPLOYMENT_STEP)?;
            data.decision()?;
            let freeze_override = data.optional_text("override_reason", REASON_CHARS_MAX)?;
            Command::WaveStarted { wave: data.wave()?, force: data.force_reason()?, freeze_override }
        }
        "wave.completed" => {
            envelope(event, &DEPLOYMENT_STEP)?;
            data.decision()?;
            Command::WaveCompleted { wave: data.wave()?, force: data.force_reason()? }
        }
        "deployment.completed" => {
            envelope(event, &DEPLOYMENT_STEP)?;
            data.optional_text("notes", REASON_CHARS_MAX)?;
            data.decision()?;
            Command::DeploymentCompleted { force: data.force_reason()? }
        }
        "deployment.aborted" => {
            envelope(event, &DEPLOYMENT_STEP)?;
            Command::DeploymentAborted { reason: data.reason()? }
        }
        "deployment.halted" => {
            envelope(event, &DEPLOYMENT_STEP)?;
            data.decision()?;
            Command::DeploymentHalted { reason: data.reason()? }
        }
        "deployment.resumed" => {
            envelope(event, &DEPLOYMENT_STEP)?;
            Command::DeploymentResumed { reason: data.reason()? }
        }
        "policy.set" => {
            envelope(event, &SERVICE_ENV)?;
            let policy = data.take("policy").ok_or_else(|| data.missing("policy").on("data.policy"))?;
            Command::PolicySet { policy: crate::domain::policy::parse(policy)? }
        }
        "rollback" => {
            envelope(event, &ROLLBACK)?;
            data.decision()?;
            Command::Rollback { reason: data.reason()? }
        }
        "host.reported" => {
            envelope(event, &REPORT)?;
            let status_text = data.required_text("status", 16)?;
            let status = HostStatus::parse(&status_text).ok_or_else(|| {
                Rejection::new(
                    RejectionCode::InvalidField,
                    format!("data.status must be applying, running or failed, not {status_text:?}"),
                )
            })?;
            let applied_seq = data.required_u64("applied_seq")?;
            let message = data.optional_text("message", MESSAGE_CHARS_MAX)?;
            let health = match data.optional_text("health", 16)?.as_deref() {
                None => None,
                Some("healthy") => Some(true),
                Some("unhealthy") => Some(false),
                Some(other) => {
                    return Err(Rejection::new(
                        RejectionCode::InvalidField,
                        format!("data.health must be healthy or unhealthy, not {other:?}"),
                    )
                    .on("data.health"))
                }
            };
            Command::HostReported { status, applied_seq, message, health }
        }
        "freeze.started" => {
            envelope(event, &SERVICE_ENV)?;
            Command::FreezeStarted { reason: data.reason()? }
        }
        "freeze.ended" => {
            envelope(event, &SERVICE_ENV)?;
            Command::FreezeEnded { reason: data.reason()? }
        }
        "freeze.calendar.set" => {
            envelope(event, &CALENDAR)?;
            if event.service.is_some() != event.env.is_some() {
                return Err(Rejection::new(
                    RejectionCode::MissingField,
                    "a calendar names both service and env, or neither (the global calendar)",
                ));
            }
            let windows = data.take("windows").ok_or_else(|| data.missing("windows").on("data.windows"))?;
            Command::CalendarSet { calendar: calendar::parse(windows)? }
        }
        "alert.fired" | "alert.resolved" => {
            envelope(event, &ALERT)?;
            if event.env.is_some() && event.service.is_none() {
                return Err(Rejection::new(
                    RejectionCode::MissingField,
                    "an alert that names an env names its service too",
                ));
            }
            let source = data.required_text("source", NAME_CHARS_MAX)?;
            check_name("data.source", &source, NAME_CHARS_MAX, is_name_char)?;
            let fingerprint = data.required_text("fingerprint", NAME_CHARS_MAX)?;
            let starts_at = data.required_text("starts_at", 64)?;
            if chrono::DateTime::parse_from_rfc3339(&starts_at).is_err() {
                return Err(data.wrong("starts_at", "an RFC 3339 time"));
            }
            let labels = data.labels()?;
            data.optional_labels("annotations", ANNOTATION_CHARS_MAX)?;
            let firing = event.event_type == "alert.fired";
            Command::Alert { firing, alert: AlertFacts { source, fingerprint, starts_at, labels } }
        }
        "webhook.added" => {
            envelope(event, &NO_FIELDS)?;
            webhooks::check_id(&data.required_text("webhook", webhooks::ID_CHARS_MAX)?)?;
            webhooks::check_url(&data.required_text("url", webhooks::URL_CHARS_MAX)?)?;
            webhooks::check_filters(&data.text_list("events")?)?;
            let format = data.required_text("format", 16)?;
            if webhooks::Format::parse(&format).is_none() {
                return Err(Rejection::new(
                    RejectionCode::InvalidField,
                    format!("data.format must be fleetlog or cdevents, not {format:?}"),
                )
                .on("data.format"));
            }
            Command::WebhookAdded
        }
        "webhook.removed" => {
            envelope(event, &NO_FIELDS)?;
            webhooks::check_id(&data.required_text("webhook", webhooks::ID_CHARS_MAX)?)?;
            Command::WebhookRemoved
        }
        "webhook.progressed" => {
            envelope(event, &NO_FIELDS)?;
            webhooks::check_id(&data.required_text("webhook", webhooks::ID_CHARS_MAX)?)?;
            data.required_u64("seq")?;
            Command::WebhookProgressed
        }
        other => {
            if DOMAIN_PREFIXES.iter().any(|prefix| other.starts_with(prefix)) {
                return Err(Rejection::new(
                    RejectionCode::UnknownType,
                    format!("{other:?} is in a fleetlog namespace but is not a fleetlog event type"),
                ));
            }
            if !other.contains('.') {
                return Err(Rejection::new(
                    RejectionCode::InvalidType,
                    format!("client event types need a namespace, e.g. \"myapp.{other}\""),
                ));
            }
            return Ok(Command::Custom);
        }
    };
    data.finish()?;
    Ok(command)
}

/// Parses `data`, which must be a JSON object already in canonical form (the leader
/// canonicalises it; the hash covers these exact bytes).
fn parse_data(text: &str) -> Result<Map<String, Value>, Rejection> {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(value) => value,
        Err(error) => {
            return Err(Rejection::new(RejectionCode::InvalidField, format!("data is not valid JSON: {error}")))
        }
    };
    let canonical = crate::domain::canonical::to_canonical_string(&value)
        .map_err(|error| Rejection::new(RejectionCode::UnsafeNumber, format!("data: {error}")))?;
    if canonical != text {
        return Err(Rejection::new(RejectionCode::InvalidField, "data is not in canonical (RFC 8785) form"));
    }
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Rejection::new(RejectionCode::DataNotObject, "data must be a JSON object")),
    }
}

fn envelope(event: &ProposedEvent, envelope: &Envelope) -> Result<(), Rejection> {
    for field in Field::ALL {
        let present = field.get(event).is_some();
        if envelope.required.contains(&field) {
            if !present {
                return Err(Rejection::new(
                    RejectionCode::MissingField,
                    format!("{} needs the field {:?}", event.event_type, field.name()),
                ));
            }
        } else if present && !envelope.optional.contains(&field) {
            return Err(Rejection::new(
                RejectionCode::FieldNotAllowed,
                format!("{} does not take the field {:?}", event.event_type, field.name()),
            ));
        }
    }
    Ok(())
}

/// Reads the fields of one event's `data`, remembering which were consumed so leftovers can be
/// refused as unknown.
struct DataFields<'a> {
    event_type: &'a str,
    map: Map<String, Value>,
}

impl<'a> DataFields<'a> {
    fn new(event_type: &'a str, map: Map<String, Value>) -> Self {
        DataFields { event_type, map }
    }

    fn finish(self) -> Result<(), Rejection> {
        match self.map.keys().next() {
            Some(name) => Err(Rejection::new(
                RejectionCode::UnknownField,
                format!("{} has no data field {name:?}", self.event_type),
            )),
            None => Ok(()),
        }
    }

    /// Takes a field whatever its shape, for a parser of its own.
    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|value| !value.is_null())
    }

    fn missing(&self, name: &str) -> Rejection {
        Rejection::new(RejectionCode::MissingField, format!("{} needs data.{name}", self.event_type))
    }

    fn wrong(&self, name: &str, expected: &str) -> Rejection {
        Rejection::new(RejectionCode::InvalidField, format!("data.{name} must be {expected}"))
    }

    fn optional_text(&mut self, name: &str, chars_max: usize) -> Result<Option<String>, Rejection> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => {
                let length = text.chars().count();
                if length == 0 || length > chars_max {
                    return Err(self.wrong(name, &format!("a string of 1 to {chars_max} characters")));
                }
                Ok(Some(text))
            }
            Some(_) => Err(self.wrong(name, "a string")),
        }
    }

    fn required_text(&mut self, name: &str, chars_max: usize) -> Result<String, Rejection> {
        self.optional_text(name, chars_max)?.ok_or_else(|| self.missing(name))
    }

    fn reason(&mut self) -> Result<String, Rejection> {
        self.required_text("reason", REASON_CHARS_MAX)
    }

    /// Why a deployer overrides a guard (`data.force_reason`): recorded with the event.
    fn force_reason(&mut self) -> Result<Option<String>, Rejection> {
        self.optional_text("force_reason", REASON_CHARS_MAX)
    }

    /// What a decision the cluster made by itself looked at (`data.decision`): an object, kept
    /// as sent for `deploy why`; any event may carry one, but only the policy evaluator does.
    fn decision(&mut self) -> Result<(), Rejection> {
        match self.map.remove("decision") {
            None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(self.wrong("decision", "an object")),
        }
    }

    fn wave(&mut self) -> Result<String, Rejection> {
        let wave = self.required_text("wave", NAME_CHARS_MAX)?;
        check_name("data.wave", &wave, NAME_CHARS_MAX, is_name_char)?;
        Ok(wave)
    }

    fn required_u64(&mut self, name: &str) -> Result<u64, Rejection> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Err(self.missing(name)),
            Some(Value::Number(number)) => number.as_u64().ok_or_else(|| self.wrong(name, "a whole number ≥ 0")),
            Some(_) => Err(self.wrong(name, "a whole number ≥ 0")),
        }
    }

    /// A required array of strings (empty allowed: the caller checks the count).
    fn text_list(&mut self, name: &str) -> Result<Vec<String>, Rejection> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Err(self.missing(name)),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text),
                    _ => Err(self.wrong(name, "an array of strings").on(&format!("data.{name}"))),
                })
                .collect(),
            Some(_) => Err(self.wrong(name, "an array of strings").on(&format!("data.{name}"))),
        }
    }

    fn optional_text_list(&mut self, name: &str) -> Result<(), Rejection> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
            Some(_) => Err(self.wrong(name, "an array of strings")),
        }
    }

    /// An object of strings up to `value_chars_max` each, kept as sent (alert annotations).
    fn optional_labels(&mut self, name: &str, value_chars_max: usize) -> Result<(), Rejection> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Object(map))
                if map.len() <= LABELS_MAX
                    && map
                        .values()
                        .all(|value| value.as_str().is_some_and(|text| text.chars().count() <= value_chars_max)) =>
            {
                Ok(())
            }
            Some(_) => Err(self.wrong(
                name,
                &format!("an object of at most {LABELS_MAX} strings of at most {value_chars_max} characters"),
            )),
        }
    }

    fn labels(&mut self) -> Result<BTreeMap<String, String>, Rejection> {
        let mut labels = BTreeMap::new();
        match self.map.remove("labels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                if map.len() > LABELS_MAX {
                    return Err(self.wrong("labels", &format!("an object of at most {LABELS_MAX} labels")));
                }
                for (key, value) in map {
                    check_name("data.labels key", &key, NAME_CHARS_MAX, is_stream_char)?;
                    match value {
                        Value::String(text) if text.chars().count() <= LABEL_VALUE_CHARS_MAX => {
                            labels.insert(key, text);
                        }
                        _ => {
                            return Err(self.wrong(
                                "labels",
                                &format!("an object of strings of at most {LABEL_VALUE_CHARS_MAX} characters"),
                            ))
                        }
                    }
                }
            }
            Some(_) => return Err(self.wrong("labels", "an object of strings")),
        }
        Ok(labels)
    }

    fn waves(&mut self) -> Result<Vec<WaveSpec>, Rejection> {
        let invalid = |message: String| Rejection::new(RejectionCode::InvalidWaves, message);
        let items = match self.map.remove("waves") {
            None | Some(Value::Null) => return Err(self.missing("waves")),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(invalid("data.waves must be an array of waves".into())),
        };
        if items.is_empty() || items.len() > WAVES_MAX {
            return Err(invalid(format!("a deployment has 1 to {WAVES_MAX} waves")));
        }
        let mut waves: Vec<WaveSpec> = Vec::with_capacity(items.len());
        for (position, item) in items.into_iter().enumerate() {
            let Value::Object(mut wave) = item else {
                return Err(invalid(format!("wave {position} must be an object")));
            };
            let name = match wave.remove("name") {
                Some(Value::String(name)) => name,
                _ => return Err(invalid(format!("wave {position} needs a name (a string)"))),
            };
            check_name("wave name", &name, NAME_CHARS_MAX, is_name_char)?;
            if waves.iter().any(|earlier| earlier.name == name) {
                return Err(invalid(format!("wave name {name:?} is used twice")));
            }
            let mut selectors = Vec::new();
            if let Some(hosts) = wave.remove("hosts") {
                let Value::Array(hosts) = hosts else {
                    return Err(invalid(format!("wave {name:?}: hosts must be an array of host names")));
                };
                if hosts.is_empty() || hosts.len() > WAVE_HOSTS_MAX {
                    return Err(invalid(format!("wave {name:?}: hosts lists 1 to {WAVE_HOSTS_MAX} hosts")));
                }
                let mut names = Vec::with_capacity(hosts.len());
                for host in hosts {
                    let Value::String(host) = host else {
                        return Err(invalid(format!("wave {name:?}: hosts must be strings")));
                    };
                    check_name("host", &host, NAME_CHARS_MAX, is_name_char)?;
                    names.push(host);
                }
                selectors.push(Selector::Hosts(names));
            }
            if let Some(group) = wave.remove("group") {
                let Value::String(group) = group else {
                    return Err(invalid(format!("wave {name:?}: group must be a string")));
                };
                check_name("group", &group, NAME_CHARS_MAX, is_name_char)?;
                selectors.push(Selector::Group(group));
            }
            if let Some(percent) = wave.remove("percent") {
                match percent.as_u64() {
                    Some(percent @ 1..=100) => selectors.push(Selector::Percent(percent as u8)),
                    _ => return Err(invalid(format!("wave {name:?}: percent must be a whole number 1 to 100"))),
                }
            }
            if let Some(field) = wave.keys().next() {
                return Err(Rejection::new(
                    RejectionCode::UnknownField,
                    format!("wave {name:?} has an unknown field {field:?}"),
                ));
            }
            if selectors.len() != 1 {
                return Err(invalid(format!("wave {name:?} needs exactly one of hosts, group or percent")));
            }
            waves.push(WaveSpec { name, selector: selectors.remove(0) });
        }
        Ok(waves)
    }
}

fn check_field_value(field: Field, value: &str) -> Result<(), Rejection> {
    let allowed: fn(char) -> bool = match field {
        Field::Release => is_release_char,
        _ => is_name_char,
    };
    check_name(field.name(), value, NAME_CHARS_MAX, allowed)
}

/// Service, env, host, deployment, wave and group names: `[A-Za-z0-9._-]`.
pub fn is_name_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-')
}

/// Release names also allow `+` (semver build metadata).
pub fn is_release_char(character: char) -> bool {
    is_name_char(character) || character == '+'
}

/// Stream names also allow `/`.
pub fn is_stream_char(character: char) -> bool {
    is_name_char(character) || character == '/'
}

/// Token names also allow `@`.
pub fn is_token_name_char(character: char) -> bool {
    is_name_char(character) || character == '@'
}

/// Actors are token names, or `system:…` for what the cluster does by itself; no token name
/// holds a `:`, so no token can act as the system.
pub fn is_actor_char(character: char) -> bool {
    is_token_name_char(character) || character == ':'
}

pub fn check_name(what: &str, value: &str, chars_max: usize, allowed: fn(char) -> bool) -> Result<(), Rejection> {
    let length = value.chars().count();
    if length == 0 || length > chars_max || !value.chars().all(allowed) {
        return Err(Rejection::new(
            RejectionCode::InvalidName,
            format!("{what} {value:?} must be 1 to {chars_max} characters of the allowed set"),
        ));
    }
    Ok(())
}

pub fn check_stream_name(stream: &str) -> Result<(), Rejection> {
    check_name("stream", stream, STREAM_CHARS_MAX, is_stream_char)
}

pub fn check_id(id: &str) -> Result<(), Rejection> {
    let length = id.chars().count();
    if length == 0 || length > ID_CHARS_MAX || id.chars().any(char::is_control) {
        return Err(Rejection::new(
            RejectionCode::InvalidId,
            format!("an event id is 1 to {ID_CHARS_MAX} characters without control characters"),
        ));
    }
    Ok(())
}

/// Dotted lowercase: segments of `[a-z0-9_-]` joined by single dots.
pub fn check_type_name(event_type: &str) -> Result<(), Rejection> {
    let well_formed = !event_type.is_empty()
        && event_type.len() <= TYPE_CHARS_MAX
        && event_type.split('.').all(|segment| {
            !segment.is_empty()
                && segment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        });
    if !well_formed {
        return Err(Rejection::new(
            RejectionCode::InvalidType,
            format!("event type {event_type:?} must be dotted lowercase, e.g. \"myapp.config.changed\""),
        ));
    }
    Ok(())
}

/// The stream an event lands in when the client names none.
pub fn default_stream(service: Option<&str>, env: Option<&str>) -> String {
    match (service, env) {
        (Some(service), Some(env)) => format!("{service}/{env}"),
        _ => "_global".to_string(),
    }
}
