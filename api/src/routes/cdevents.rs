//! `POST /v1/cdevents`: CDEvents from other tools (see [`crate::cdevents::incoming`]).
//!
//! Every CloudEvent of the request is read and checked before the first is appended, so a
//! request with one event fleetlog cannot take writes nothing. Each is then appended on its
//! own: the ones already in the ledger (a sender retrying) are duplicates and the others are
//! written.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, ProposedEvent};
use fleetlog_raft::domain::ledger::validate::check_event;
use fleetlog_raft::domain::records;
use fleetlog_raft::domain::rejection::RejectionCode;
use fleetlog_types as types;

use crate::auth::Principal;
use crate::cdevents::incoming::{self, Incident, Intake, INCIDENT_SOURCE};
use crate::error::{ApiError, ApiResult};
use crate::input::{read_body, BODY_BYTES_MAX};
use crate::routes::alerts::{alert_event, AlertFacts};
use crate::state::AppState;

pub async fn receive(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, body, BODY_BYTES_MAX, app.client_timeout).await?;
    let clouds = incoming::read_request(&parts.headers, &bytes)?;
    let mut events: Vec<ProposedEvent> = Vec::with_capacity(clouds.len());
    for (index, cloud) in clouds.iter().enumerate() {
        let event = match incoming::intake(cloud).map_err(|error| error.at(index))? {
            Intake::Service(event) => event,
            Intake::Incident(incident) => incident_event(&app, incident).await.map_err(|error| error.at(index))?,
        };
        if let Err(rejection) = check_event(&event) {
            return Err(ApiError::from(rejection).at(index));
        }
        if !events.iter().any(|earlier| earlier.id == event.id) {
            events.push(event);
        }
    }
    let received = clouds.len() as u64;
    let mut written = Vec::new();
    for event in events {
        let request = AppendRequest {
            events: vec![event],
            expected_version: ExpectedVersion::Any,
            actor: principal.name.clone(),
        };
        match app.append(request).await? {
            AppendOutcome::Appended { duplicate: false, events } => {
                written.extend(events.iter().map(|event| types::AppendedEvent {
                    seq: event.seq,
                    id: event.id.clone().into(),
                    hash: hex::encode(event.hash).into(),
                }));
            }
            AppendOutcome::Appended { duplicate: true, .. } => {}
            // The same CloudEvent (source and id) sent again with another body: CloudEvents
            // makes (source, id) unique, so it is the one recorded already.
            AppendOutcome::Rejected(rejection) if rejection.code == RejectionCode::IdConflict => {}
            AppendOutcome::Rejected(rejection) => return Err(rejection.into()),
        }
    }
    let status = if written.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
    let answer = types::CdEventsAnswer { received, duplicates: received - written.len() as u64, written };
    Ok((status, Json(answer)).into_response())
}

/// The alert event of an incident. A resolution names the firing it ends by the firing's start,
/// which a CDEvent does not carry: it is read from the alert as the ledger keeps it.
async fn incident_event(app: &AppState, incident: Incident) -> ApiResult<ProposedEvent> {
    let mut starts_at = incident.timestamp.clone();
    if !incident.firing {
        let (service, env, fingerprint) =
            (incident.service.clone(), incident.env.clone(), incident.fingerprint.clone());
        let firing = app
            .read(true, move |kv| {
                let alerts = records::alerts_of(kv, service.as_deref(), env.as_deref())?;
                Ok(alerts.into_iter().find(|alert| alert.source == INCIDENT_SOURCE && alert.fingerprint == fingerprint))
            })
            .await?;
        if let Some(alert) = firing {
            starts_at = alert.starts_at;
        }
    }
    alert_event(AlertFacts {
        source: INCIDENT_SOURCE,
        firing: incident.firing,
        fingerprint: &incident.fingerprint,
        starts_at: &starts_at,
        service: incident.service,
        env: incident.env,
        host: None,
        labels: incident.labels,
        annotations: incident.annotations,
    })
}
