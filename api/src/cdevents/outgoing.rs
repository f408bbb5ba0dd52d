//! Committed events as CDEvents, each in a CloudEvents 1.0 envelope (structured JSON mode).
//!
//! What maps to the specification's own events does: a completed deployment is
//! `service.deployed` (the release now runs in the environment), a rollback is
//! `service.rolledback`, an alert firing or resolved in an environment is `incident.detected` /
//! `incident.resolved`. The rest of a deployment's life has no event in CDEvents 0.5.1, so it
//! goes out as custom events (`dev.cdeventsx.fleetlog-<subject>.<predicate>.0.1.0`, the form the
//! specification sets for tools' own events): deployments started, aborted, halted and resumed,
//! waves started and finished, freezes. Agents converging are `fleetlog-reconciliation.started` /
//! `.finished`, marked `"draft": true`: the specification has no reconciliation events yet.
//!
//! Every CDEvent carries the fleetlog event in `customData.fleetlog` (seq, id, type, actor,
//! stream, data), so a decision's inputs travel with it. Events recorded from CDEvents that
//! other tools sent are not sent back out, nor are alerts that came in as incidents: two tools
//! relaying each other's events would echo forever.

use fleetlog_raft::domain::event::{format_time, Event};
use serde_json::{json, Map, Value};

use super::{artifact_id, CLOUDEVENTS_VERSION, SPEC_VERSION};
use crate::cdevents::incoming::{INCIDENT_SOURCE, RECORDED_TYPE_PREFIX};

/// The version of fleetlog's custom event types.
const CUSTOM_VERSION: &str = "0.1.0";

/// What one event becomes.
enum Shape {
    /// One of the specification's service events.
    Service(&'static str),
    /// One of its incident events.
    Incident(&'static str),
    /// A fleetlog custom event: subject and predicate of its type.
    Custom { subject: &'static str, predicate: &'static str, draft: bool },
}

fn shape(event: &Event, data: &Map<String, Value>) -> Option<Shape> {
    let custom = |subject, predicate| Some(Shape::Custom { subject, predicate, draft: false });
    match event.event_type.as_str() {
        "deployment.completed" => Some(Shape::Service("dev.cdevents.service.deployed.0.3.0")),
        "rollback" => Some(Shape::Service("dev.cdevents.service.rolledback.0.3.0")),
        "alert.fired" | "alert.resolved" if event.env.is_some() && from_elsewhere(data).is_none() => {
            Some(Shape::Incident(if event.event_type == "alert.fired" {
                "dev.cdevents.incident.detected.0.3.0"
            } else {
                "dev.cdevents.incident.resolved.0.3.0"
            }))
        }
        "deployment.started" => custom("deployment", "started"),
        "deployment.aborted" => custom("deployment", "aborted"),
        "deployment.halted" => custom("deployment", "halted"),
        "deployment.resumed" => custom("deployment", "resumed"),
        "wave.started" => custom("wave", "started"),
        "wave.completed" => custom("wave", "finished"),
        "freeze.started" => custom("freeze", "started"),
        "freeze.ended" => custom("freeze", "ended"),
        "host.reported" => {
            let predicate = match data.get("status").and_then(Value::as_str)? {
                "applying" => "started",
                "running" | "failed" => "finished",
                _ => return None,
            };
            Some(Shape::Custom { subject: "reconciliation", predicate, draft: true })
        }
        _ => None,
    }
}

/// The source of an alert that came in as a CDEvents incident (None for other alerts).
fn from_elsewhere(data: &Map<String, Value>) -> Option<&str> {
    data.get("source").and_then(Value::as_str).filter(|source| *source == INCIDENT_SOURCE)
}

/// The CloudEvent carrying `event` as a CDEvent, or None when it has no CDEvents form (a release
/// created, a target registered, a client's own event type, an event that came in as a CDEvent).
pub fn cloud_event(event: &Event) -> Option<Value> {
    if event.event_type.starts_with(RECORDED_TYPE_PREFIX) {
        return None;
    }
    let data = match serde_json::from_str::<Value>(&event.data) {
        Ok(Value::Object(data)) => data,
        _ => Map::new(),
    };
    let shape = shape(event, &data)?;
    let source = format!("/fleetlog/{}", event.stream);
    let environment = event.env.as_ref().map(|env| json!({ "id": env }));
    let artifact = match (&event.service, &event.release) {
        (Some(service), Some(release)) => Some(artifact_id(service, release)),
        _ => None,
    };
    let (cdevent_type, subject, draft) = match shape {
        Shape::Service(cdevent_type) => {
            let content = json!({ "environment": environment?, "artifactId": artifact? });
            (
                cdevent_type.to_string(),
                json!({ "id": event.service.as_ref()?, "source": source, "content": content }),
                false,
            )
        }
        Shape::Incident(cdevent_type) => {
            let mut content = Map::new();
            content.insert("environment".into(), environment?);
            if let Some(service) = &event.service {
                content.insert("service".into(), json!({ "id": service }));
            }
            if let Some(description) = incident_description(&data) {
                content.insert("description".into(), Value::String(description));
            }
            let fingerprint = data.get("fingerprint").and_then(Value::as_str)?;
            (cdevent_type.to_string(), json!({ "id": fingerprint, "source": source, "content": content }), false)
        }
        Shape::Custom { subject, predicate, draft } => {
            let cdevent_type = format!("dev.cdeventsx.fleetlog-{subject}.{predicate}.{CUSTOM_VERSION}");
            (cdevent_type, custom_subject(event, &data, subject, &source, environment, artifact), draft)
        }
    };
    let time = format_time(event.time_micros);
    let mut custom_data = Map::new();
    if draft {
        custom_data.insert("draft".into(), Value::Bool(true));
    }
    custom_data.insert(
        "fleetlog".into(),
        json!({
            "seq": event.seq, "id": event.id, "type": event.event_type, "actor": event.actor,
            "stream": event.stream, "data": data,
        }),
    );
    let cdevent = json!({
        "context": {
            "specversion": SPEC_VERSION, "id": event.id, "source": source, "type": cdevent_type,
            "timestamp": time,
        },
        "subject": subject,
        "customData": custom_data,
        "customDataContentType": "application/json",
    });
    Some(json!({
        "specversion": CLOUDEVENTS_VERSION,
        "id": event.id,
        "source": source,
        "type": cdevent_type,
        "time": time,
        "datacontenttype": "application/json",
        // A CloudEvents extension attribute: the event's place in the ledger.
        "fleetlogseq": event.seq,
        "data": cdevent,
    }))
}

/// What an alert says of itself, from the annotations sources usually fill.
fn incident_description(data: &Map<String, Value>) -> Option<String> {
    let annotations = data.get("annotations")?.as_object()?;
    ["description", "summary", "message"]
        .iter()
        .find_map(|name| annotations.get(*name).and_then(Value::as_str))
        .map(str::to_string)
}

/// The subject of a custom event: who it is about, and the fleetlog fields that say where.
fn custom_subject(
    event: &Event,
    data: &Map<String, Value>,
    subject: &str,
    source: &str,
    environment: Option<Value>,
    artifact: Option<String>,
) -> Value {
    let wave = data.get("wave").and_then(Value::as_str);
    let id = match subject {
        "reconciliation" => event.host.clone(),
        "wave" => event.deployment.as_ref().map(|deployment| format!("{deployment}/{}", wave.unwrap_or(""))),
        "freeze" => Some(event.stream.clone()),
        _ => event.deployment.clone(),
    };
    let mut content = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            content.insert(name.to_string(), value);
        }
    };
    put("service", event.service.clone().map(Value::String));
    put("environment", environment);
    put("release", event.release.clone().map(Value::String));
    put("artifactId", artifact.map(Value::String));
    put("deployment", event.deployment.clone().map(Value::String));
    put("wave", wave.map(|wave| Value::String(wave.to_string())));
    put("host", event.host.clone().map(Value::String));
    put("reason", data.get("reason").cloned());
    if subject == "reconciliation" {
        let outcome = match data.get("status").and_then(Value::as_str) {
            Some("running") => Some("success"),
            Some("failed") => Some("failure"),
            _ => None,
        };
        put("outcome", outcome.map(|outcome| Value::String(outcome.to_string())));
        put("health", data.get("health").cloned());
    }
    json!({ "id": id.unwrap_or_else(|| event.stream.clone()), "source": source, "content": content })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: Value) -> Event {
        Event {
            seq: 7,
            id: "e-7".into(),
            stream: "web/prod".into(),
            version: 3,
            event_type: event_type.into(),
            time_micros: 1_700_000_000_000_000,
            actor: "alice".into(),
            service: Some("web".into()),
            env: Some("prod".into()),
            host: None,
            release: Some("1.2.0".into()),
            deployment: Some("d-1".into()),
            data: data.to_string(),
            prev_hash: [0; 32],
            hash: [1; 32],
        }
    }

    #[test]
    fn completed_deployments_are_services_deployed_with_their_artifact() {
        let cloud = cloud_event(&event("deployment.completed", json!({}))).unwrap();
        assert_eq!(cloud["type"], "dev.cdevents.service.deployed.0.3.0");
        assert_eq!(cloud["fleetlogseq"], 7);
        let cdevent = &cloud["data"];
        assert_eq!(cdevent["context"]["type"], cloud["type"]);
        assert_eq!(cdevent["subject"]["id"], "web");
        assert_eq!(cdevent["subject"]["content"]["environment"]["id"], "prod");
        assert_eq!(cdevent["subject"]["content"]["artifactId"], "pkg:generic/web@1.2.0");
        assert_eq!(cdevent["customData"]["fleetlog"]["type"], "deployment.completed");
    }

    #[test]
    fn reports_are_draft_reconciliation_events_with_an_outcome() {
        let mut report = event("host.reported", json!({ "status": "failed", "applied_seq": 5 }));
        report.host = Some("h1".into());
        let cloud = cloud_event(&report).unwrap();
        assert_eq!(cloud["type"], "dev.cdeventsx.fleetlog-reconciliation.finished.0.1.0");
        assert_eq!(cloud["data"]["subject"]["id"], "h1");
        assert_eq!(cloud["data"]["subject"]["content"]["outcome"], "failure");
        assert_eq!(cloud["data"]["customData"]["draft"], true);
        report.data = json!({ "status": "applying" }).to_string();
        assert_eq!(cloud_event(&report).unwrap()["type"], "dev.cdeventsx.fleetlog-reconciliation.started.0.1.0");
    }

    #[test]
    fn what_has_no_cdevents_form_or_came_from_cdevents_is_not_sent() {
        assert!(cloud_event(&event("release.created", json!({}))).is_none());
        assert!(cloud_event(&event("acme.build.finished", json!({}))).is_none());
        assert!(cloud_event(&event("cdevents.service.deployed", json!({}))).is_none());
        let incident = json!({ "source": INCIDENT_SOURCE, "fingerprint": "i-1" });
        assert!(cloud_event(&event("alert.fired", incident)).is_none());
        let alert = json!({ "source": "alertmanager", "fingerprint": "f1", "annotations": { "summary": "slow" } });
        let cloud = cloud_event(&event("alert.fired", alert)).unwrap();
        assert_eq!(cloud["type"], "dev.cdevents.incident.detected.0.3.0");
        assert_eq!(cloud["data"]["subject"]["content"]["description"], "slow");
    }
}
