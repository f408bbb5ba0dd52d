//! CloudEvents carrying CDEvents, as other tools send them to `POST /v1/cdevents`, read into
//! what fleetlog records.
//!
//! The HTTP binding's three modes are read: structured (`application/cloudevents+json`, the
//! envelope and the CDEvent in one JSON object), batched (`application/cloudevents-batch+json`,
//! an array of those) and binary (the envelope in `ce-` headers, the CDEvent as the body). A
//! structured envelope sent as plain `application/json` is read too: some senders label it so.
//!
//! Service events (`service.deployed`, `.upgraded`, `.rolledback`, `.removed`) are recorded as
//! `cdevents.service.<predicate>` events of the (service, env) they name, with the release read
//! from the artifact's package URL when it is a valid release name; the whole CDEvent is kept in
//! `data.cdevent`. Incidents (`incident.detected`, `.resolved`) become alerts, as Alertmanager's
//! do. Any other type is refused, and so is a request with one bad event in it: nothing is
//! written unless every event in it is understood.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, StatusCode};
use fleetlog_raft::domain::event::ProposedEvent;
use fleetlog_raft::domain::ledger::validate::{check_name, is_name_char, is_release_char};
use fleetlog_raft::domain::limits::{ANNOTATION_CHARS_MAX, BATCH_EVENTS_MAX, LABEL_VALUE_CHARS_MAX, NAME_CHARS_MAX};
use serde_json::{json, Map, Value};
use sha2::Digest;

use super::{artifact_version, CLOUDEVENTS_VERSION};
use crate::error::{ApiError, ApiResult};
use crate::input::canonical_data;

/// Types of the events recorded from CDEvents start with this; nothing else does.
pub const RECORDED_TYPE_PREFIX: &str = "cdevents.";
/// The alert source of incidents that came in as CDEvents.
pub const INCIDENT_SOURCE: &str = "cdevents";
/// Characters of a CloudEvent's `id`, `source` and `type`, and of a CDEvent's timestamp.
const ATTRIBUTE_CHARS_MAX: usize = 1_024;
/// The CDEvents types taken in, as `<subject>.<predicate>`.
pub const ACCEPTED_TYPES: [&str; 6] = [
    "service.deployed",
    "service.upgraded",
    "service.rolledback",
    "service.removed",
    "incident.detected",
    "incident.resolved",
];

/// One CloudEvent's envelope and its CDEvent.
#[derive(Debug)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub time: Option<String>,
    pub cdevent: Map<String, Value>,
}

/// What one CloudEvent asks fleetlog to record.
#[derive(Debug)]
pub enum Intake {
    /// A service event, as the event to append.
    Service(ProposedEvent),
    /// An incident, to become an alert.
    Incident(Incident),
}

/// An incident as an alert: `fingerprint` is the incident's subject id.
#[derive(Debug)]
pub struct Incident {
    pub firing: bool,
    pub fingerprint: String,
    pub service: Option<String>,
    pub env: Option<String>,
    /// The CDEvent's timestamp (RFC 3339).
    pub timestamp: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

fn invalid_envelope(field: &str, what: &str) -> ApiError {
    let mut error = ApiError::invalid("invalid_cloudevent", format!("{field} {what}"));
    error.field = Some(field.to_string());
    error
}

fn invalid_cdevent(field: &str, what: &str) -> ApiError {
    let mut error = ApiError::invalid("invalid_cdevent", format!("{field} {what}"));
    error.field = Some(field.to_string());
    error
}

/// The CloudEvents of a request, every one checked as a CloudEvent carrying a CDEvent.
pub fn read_request(headers: &HeaderMap, body: &[u8]) -> ApiResult<Vec<CloudEvent>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    if headers.contains_key("ce-specversion") {
        if !(content_type.is_empty() || is_json(&content_type)) {
            return Err(unsupported(&content_type));
        }
        return Ok(vec![binary(headers, parse_json(body)?)?]);
    }
    match content_type.as_str() {
        "application/cloudevents+json" | "application/json" => Ok(vec![structured(parse_json(body)?, "body")?]),
        "application/cloudevents-batch+json" => {
            let Value::Array(items) = parse_json(body)? else {
                return Err(invalid_envelope("body", "must be a JSON array of CloudEvents (batched mode)"));
            };
            if items.is_empty() || items.len() > BATCH_EVENTS_MAX {
                return Err(invalid_envelope("body", &format!("must hold 1 to {BATCH_EVENTS_MAX} CloudEvents")));
            }
            items.into_iter().enumerate().map(|(index, item)| structured(item, &format!("[{index}]"))).collect()
        }
        other => Err(unsupported(other)),
    }
}

fn is_json(content_type: &str) -> bool {
    content_type == "application/json" || content_type.ends_with("+json")
}

fn unsupported(content_type: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "content type {content_type:?} is not a CloudEvent: send application/cloudevents+json, \
             application/cloudevents-batch+json, or the binary mode's ce- headers with a JSON body"
        ),
    )
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|error| ApiError::bad_request("invalid_utf8", format!("the body is not UTF-8: {error}")))?;
    serde_json::from_str(text)
        .map_err(|error| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {error}")))
}

/// An attribute that must be a non-empty string of bounded length.
fn attribute(value: Option<&Value>, field: &str) -> ApiResult<String> {
    match value.and_then(Value::as_str) {
        Some(text) if !text.is_empty() && text.chars().count() <= ATTRIBUTE_CHARS_MAX => Ok(text.to_string()),
        _ => Err(invalid_envelope(field, &format!("must be a string of 1 to {ATTRIBUTE_CHARS_MAX} characters"))),
    }
}

fn check_spec_version(version: &str, field: &str) -> ApiResult<()> {
    if version != CLOUDEVENTS_VERSION {
        return Err(invalid_envelope(field, &format!("must be \"{CLOUDEVENTS_VERSION}\"")));
    }
    Ok(())
}

fn structured(value: Value, path: &str) -> ApiResult<CloudEvent> {
    let field = |name: &str| if path == "body" { name.to_string() } else { format!("{path}.{name}") };
    let Value::Object(mut envelope) = value else { return Err(invalid_envelope(path, "must be a JSON object")) };
    check_spec_version(&attribute(envelope.get("specversion"), &field("specversion"))?, &field("specversion"))?;
    let id = attribute(envelope.get("id"), &field("id"))?;
    let source = attribute(envelope.get("source"), &field("source"))?;
    let event_type = attribute(envelope.get("type"), &field("type"))?;
    let time = envelope.get("time").map(|time| attribute(Some(time), &field("time"))).transpose()?;
    if let Some(content_type) = envelope.get("datacontenttype") {
        if !content_type.as_str().is_some_and(is_json) {
            return Err(invalid_envelope(&field("datacontenttype"), "must be application/json: a CDEvent is JSON"));
        }
    }
    if envelope.contains_key("data_base64") {
        return Err(invalid_envelope(&field("data_base64"), "is not read: send the CDEvent as JSON in data"));
    }
    let Some(Value::Object(cdevent)) = envelope.remove("data") else {
        return Err(invalid_envelope(&field("data"), "must be the CDEvent, a JSON object"));
    };
    Ok(CloudEvent { id, source, event_type, time, cdevent })
}

fn binary(headers: &HeaderMap, body: Value) -> ApiResult<CloudEvent> {
    let header = |name: &str| -> ApiResult<Option<String>> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => match value.to_str() {
                Ok(text) => Ok(Some(text.to_string())),
                Err(_) => Err(invalid_envelope(name, "must be text")),
            },
        }
    };
    let required = |name: &str| -> ApiResult<String> {
        let value = header(name)?.map(Value::String);
        attribute(value.as_ref(), name)
    };
    check_spec_version(&required("ce-specversion")?, "ce-specversion")?;
    let Value::Object(cdevent) = body else {
        return Err(invalid_envelope("body", "must be the CDEvent, a JSON object"));
    };
    Ok(CloudEvent {
        id: required("ce-id")?,
        source: required("ce-source")?,
        event_type: required("ce-type")?,
        time: header("ce-time")?,
        cdevent,
    })
}

/// `<subject>.<predicate>` of a CDEvents core type `dev.cdevents.<subject>.<predicate>.<version>`
/// of major version 0 (the only one there is), or None.
fn core_type(event_type: &str) -> Option<String> {
    let rest = event_type.strip_prefix("dev.cdevents.")?;
    let mut parts = rest.splitn(3, '.');
    let (subject, predicate, version) = (parts.next()?, parts.next()?, parts.next()?);
    let mut numbers = version.split('.');
    let major = numbers.next()?;
    let well_formed = numbers.count() == 2
        && version.split('.').all(|number| !number.is_empty() && number.bytes().all(|byte| byte.is_ascii_digit()));
    (well_formed && major == "0").then(|| format!("{subject}.{predicate}"))
}

/// What `cloud` asks for, or why it cannot be taken.
pub fn intake(cloud: &CloudEvent) -> ApiResult<Intake> {
    let context = cloud.cdevent.get("context").and_then(Value::as_object);
    let Some(context) = context else { return Err(invalid_cdevent("data.context", "must be an object")) };
    let Some(context_type) = context.get("type").and_then(Value::as_str) else {
        return Err(invalid_cdevent("data.context.type", "must be a string"));
    };
    if context_type != cloud.event_type {
        return Err(invalid_cdevent(
            "data.context.type",
            &format!("is {context_type:?}, not the CloudEvent's type {:?}", cloud.event_type),
        ));
    }
    let kind = core_type(context_type).filter(|kind| ACCEPTED_TYPES.contains(&kind.as_str()));
    let Some(kind) = kind else {
        return Err(ApiError::invalid(
            "unknown_cdevent_type",
            format!(
                "fleetlog does not take {context_type:?}: it takes the CDEvents (version 0) types {}",
                ACCEPTED_TYPES.join(", ")
            ),
        ));
    };
    let Some(subject) = cloud.cdevent.get("subject").and_then(Value::as_object) else {
        return Err(invalid_cdevent("data.subject", "must be an object"));
    };
    let Some(subject_id) = subject.get("id").and_then(Value::as_str) else {
        return Err(invalid_cdevent("data.subject.id", "must be a string"));
    };
    let content = match subject.get("content") {
        Some(Value::Object(content)) => content.clone(),
        None => Map::new(),
        Some(_) => return Err(invalid_cdevent("data.subject.content", "must be an object")),
    };
    let nested_id = |name: &str| content.get(name).and_then(|value| value.get("id")).and_then(Value::as_str);
    let timestamp = match context.get("timestamp").and_then(Value::as_str) {
        Some(text) if text.len() <= ATTRIBUTE_CHARS_MAX && chrono::DateTime::parse_from_rfc3339(text).is_ok() => text,
        _ => return Err(invalid_cdevent("data.context.timestamp", "must be an RFC 3339 time")),
    };
    if let Some(("incident", predicate)) = kind.split_once('.') {
        return incident(
            predicate == "detected",
            subject_id,
            nested_id("service"),
            nested_id("environment"),
            &content,
            timestamp,
        );
    }
    let name = |field: &str, value: &str| {
        check_name(field, value, NAME_CHARS_MAX, is_name_char)
            .map_err(|rejection| invalid_cdevent(field, &rejection.message))
    };
    name("data.subject.id", subject_id)?;
    let Some(env) = nested_id("environment") else {
        return Err(invalid_cdevent(
            "data.subject.content.environment.id",
            "is required: fleetlog records a service's events per environment",
        ));
    };
    name("data.subject.content.environment.id", env)?;
    let artifact = content.get("artifactId").and_then(Value::as_str);
    let release = artifact
        .and_then(artifact_version)
        .filter(|version| check_name("release", version, NAME_CHARS_MAX, is_release_char).is_ok());

    let mut event = ProposedEvent::new(event_id(cloud), format!("{RECORDED_TYPE_PREFIX}{kind}"));
    event.service = Some(subject_id.to_string());
    event.env = Some(env.to_string());
    event.release = release;
    let mut envelope = json!({ "id": cloud.id, "source": cloud.source, "type": cloud.event_type });
    if let Some(time) = &cloud.time {
        envelope["time"] = Value::String(time.clone());
    }
    event.data = canonical_data(&json!({ "cloudevent": envelope, "cdevent": cloud.cdevent }))?;
    Ok(Intake::Service(event))
}

/// The id of the event recorded for a CloudEvent: a CloudEvent is identified by its source and
/// id, so one sent again is a duplicate, written once. The type is part of it too: senders that
/// reuse an id for events of different types (the specification's own examples do) still have
/// each one recorded.
fn event_id(cloud: &CloudEvent) -> String {
    let digest = sha2::Sha256::digest(format!("{}\n{}\n{}", cloud.source, cloud.id, cloud.event_type).as_bytes());
    format!("cdevents/{}", &hex::encode(digest)[..40])
}

fn incident(
    firing: bool,
    subject_id: &str,
    service: Option<&str>,
    env: Option<&str>,
    content: &Map<String, Value>,
    timestamp: &str,
) -> ApiResult<Intake> {
    if subject_id.is_empty() || subject_id.chars().count() > NAME_CHARS_MAX {
        return Err(invalid_cdevent("data.subject.id", &format!("must be 1 to {NAME_CHARS_MAX} characters")));
    }
    // Names that are not fleetlog names map the incident nowhere: it is kept as an unmapped
    // alert, as Alertmanager's are.
    let usable = |value: Option<&str>| {
        value.filter(|value| check_name("name", value, NAME_CHARS_MAX, is_name_char).is_ok()).map(str::to_string)
    };
    let (service, env) = match (usable(service), usable(env)) {
        (Some(service), Some(env)) => (Some(service), Some(env)),
        _ => (None, None),
    };
    let mut labels = BTreeMap::new();
    labels.insert("incident".to_string(), cut(subject_id, LABEL_VALUE_CHARS_MAX));
    if let (Some(service), Some(env)) = (&service, &env) {
        labels.insert("service".to_string(), service.clone());
        labels.insert("env".to_string(), env.clone());
    }
    let mut annotations = BTreeMap::new();
    for (name, value) in [("description", content.get("description")), ("artifact", content.get("artifactId"))] {
        if let Some(text) = value.and_then(Value::as_str) {
            annotations.insert(name.to_string(), cut(text, ANNOTATION_CHARS_MAX));
        }
    }
    Ok(Intake::Incident(Incident {
        firing,
        fingerprint: subject_id.to_string(),
        service,
        env,
        timestamp: timestamp.to_string(),
        labels,
        annotations,
    }))
}

fn cut(text: &str, chars_max: usize) -> String {
    text.chars().take(chars_max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structured_request(body: Value) -> ApiResult<Vec<CloudEvent>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/cloudevents+json; charset=utf-8".parse().unwrap());
        read_request(&headers, body.to_string().as_bytes())
    }

    fn deployed(subject: &str, env: &str, artifact: &str) -> Value {
        let cdevent = json!({
            "context": {
                "specversion": "0.5.1", "id": "c-1", "source": "/ci", "type": "dev.cdevents.service.deployed.0.3.0",
                "timestamp": "2026-12-07T10:00:00Z",
            },
            "subject": { "id": subject, "content": { "environment": { "id": env }, "artifactId": artifact } },
        });
        json!({
            "specversion": "1.0", "id": "c-1", "source": "/ci", "type": "dev.cdevents.service.deployed.0.3.0",
            "data": cdevent,
        })
    }

    #[test]
    fn service_events_are_recorded_for_their_service_and_environment() {
        let clouds = structured_request(deployed("web", "prod", "pkg:generic/web@1.4.2")).unwrap();
        let Intake::Service(event) = intake(&clouds[0]).unwrap() else { panic!("not a service event") };
        assert_eq!(event.event_type, "cdevents.service.deployed");
        assert_eq!((event.service.as_deref(), event.env.as_deref()), (Some("web"), Some("prod")));
        assert_eq!(event.release.as_deref(), Some("1.4.2"));
        // A digest is no release name: the event is kept, without a release.
        let clouds = structured_request(deployed("web", "prod", "pkg:oci/web@sha256%3Aab12")).unwrap();
        let Intake::Service(event) = intake(&clouds[0]).unwrap() else { panic!("not a service event") };
        assert_eq!(event.release, None);
    }

    #[test]
    fn the_same_cloudevent_sent_again_has_the_same_event_id() {
        let first = structured_request(deployed("web", "prod", "pkg:generic/web@1")).unwrap();
        let again = structured_request(deployed("web", "prod", "pkg:generic/web@1")).unwrap();
        assert_eq!(event_id(&first[0]), event_id(&again[0]));
    }

    #[test]
    fn unknown_types_and_bad_envelopes_are_refused_with_their_code() {
        let mut unknown = deployed("web", "prod", "pkg:generic/web@1");
        unknown["type"] = json!("dev.cdevents.build.finished.0.2.0");
        unknown["data"]["context"]["type"] = unknown["type"].clone();
        let error = intake(&structured_request(unknown).unwrap()[0]).unwrap_err();
        assert_eq!((error.status, error.code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_cdevent_type"));

        let mut mismatched = deployed("web", "prod", "pkg:generic/web@1");
        mismatched["type"] = json!("dev.cdevents.service.upgraded.0.3.0");
        assert_eq!(intake(&structured_request(mismatched).unwrap()[0]).unwrap_err().code, "invalid_cdevent");

        let mut old = deployed("web", "prod", "pkg:generic/web@1");
        old["specversion"] = json!("0.3");
        assert_eq!(structured_request(old).unwrap_err().code, "invalid_cloudevent");

        let bad_name = deployed("team/web", "prod", "pkg:generic/web@1");
        assert_eq!(intake(&structured_request(bad_name).unwrap()[0]).unwrap_err().code, "invalid_cdevent");

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(read_request(&headers, b"{}").unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn binary_mode_reads_the_envelope_from_headers() {
        let structured = deployed("web", "prod", "pkg:generic/web@2");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        for (name, value) in [("ce-specversion", "1.0"), ("ce-id", "c-1"), ("ce-source", "/ci")] {
            headers.insert(name, value.parse().unwrap());
        }
        headers.insert("ce-type", "dev.cdevents.service.deployed.0.3.0".parse().unwrap());
        let clouds = read_request(&headers, structured["data"].to_string().as_bytes()).unwrap();
        assert_eq!((clouds[0].id.as_str(), clouds[0].source.as_str()), ("c-1", "/ci"));
        assert!(matches!(intake(&clouds[0]).unwrap(), Intake::Service(_)));
        headers.remove("ce-id");
        assert_eq!(read_request(&headers, b"{}").unwrap_err().code, "invalid_cloudevent");
    }

    #[test]
    fn core_types_need_a_dotted_numeric_version() {
        assert_eq!(core_type("dev.cdevents.service.deployed.0.3.0").as_deref(), Some("service.deployed"));
        assert_eq!(core_type("dev.cdevents.service.deployed.1.0.0"), None);
        assert_eq!(core_type("dev.cdevents.service.deployed.0.3"), None);
        assert_eq!(core_type("dev.cdeventsx.acme-thing.done.0.1.0"), None);
    }
}
