//! Views derived from the log: fleet, hosts, deployments, releases. Every one can be asked
//! `at_seq` or `at_time`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleetlog_raft::domain::gates::{self, POLICY_ACTOR};
use fleetlog_raft::domain::kv::KvRead;
use fleetlog_raft::domain::records::{self, DeploymentState};
use fleetlog_raft::domain::views::{self, DeploymentFilter};
use fleetlog_types as types;

use crate::error::{ApiError, ApiResult};
use crate::input::{Params, PathParams};
use crate::routes::events::beyond_head;
use crate::state::AppState;
use crate::wire;

const HOST_HISTORY_DEFAULT: u64 = 20;
const DEPLOYMENT_LIST_MAX: u64 = 1_000;

/// The moment a view is asked about: `at_seq`, `at_time`, or now.
#[derive(Clone, Copy, Debug)]
enum Moment {
    Now,
    Seq(u64),
    Time(i64),
}

fn moment(params: &Params) -> ApiResult<Moment> {
    match (params.number("at_seq")?, params.time("at_time")?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("invalid_parameter", "give at_seq or at_time, not both")),
        (Some(seq), None) => Ok(Moment::Seq(seq)),
        (None, Some(time)) => Ok(Moment::Time(time)),
        (None, None) => Ok(Moment::Now),
    }
}

/// Resolves a moment to `Some(seq)` (or `None` for now), refusing moments the ledger never had.
fn resolve(kv: &dyn KvRead, moment: Moment) -> fleetlog_raft::Result<Result<Option<u64>, ApiError>> {
    let head = views::head(kv)?.seq;
    Ok(match moment {
        Moment::Now => Ok(None),
        Moment::Seq(seq) if seq > head => Err(beyond_head(seq, head)),
        Moment::Seq(seq) => Ok(Some(seq)),
        Moment::Time(time) => match views::seq_at_time(kv, time)? {
            Some(seq) => Ok(Some(seq)),
            None => Err(ApiError::not_found(
                "before_first_event",
                format!("{} is before the first event of the ledger", fleetlog_raft::domain::event::format_time(time)),
            )),
        },
    })
}

pub fn name_param(params: &Params, name: &str) -> ApiResult<Option<String>> {
    match params.text(name) {
        Some(value) => {
            path_name(name, &value)?;
            Ok(Some(value))
        }
        None => Ok(None),
    }
}

/// A name taken from the path, checked before it becomes part of a storage key.
fn path_name(what: &str, value: &str) -> ApiResult<()> {
    fleetlog_raft::domain::ledger::validate::check_name(
        what,
        value,
        fleetlog_raft::domain::limits::NAME_CHARS_MAX,
        fleetlog_raft::domain::ledger::validate::is_release_char,
    )
    .map_err(|rejection| ApiError::bad_request("invalid_parameter", rejection.message))
}

pub async fn fleet(State(app): State<AppState>, Query(raw): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let params = Params::new(raw, &["service", "env", "at_seq", "at_time"])?;
    let service = name_param(&params, "service")?;
    let env = name_param(&params, "env")?;
    let moment = moment(&params)?;
    let view = app
        .read(params.linearizable(), move |kv| {
            Ok(match resolve(kv, moment)? {
                Ok(at_seq) => Ok(views::fleet(kv, service.as_deref(), env.as_deref(), at_seq)?),
                Err(error) => Err(error),
            })
        })
        .await??;
    // Sized up front: a large fleet is megabytes, and growing the buffer by doubling copies it.
    let mut body = Vec::with_capacity(256 + view.hosts.len() * 400);
    serde_json::to_writer(&mut body, &wire::fleet(&view)).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn host(
    State(app): State<AppState>,
    PathParams(host): PathParams<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    path_name("host", &host)?;
    let params = Params::new(raw, &["at_seq", "at_time", "limit"])?;
    let moment = moment(&params)?;
    let limit = params.limit(HOST_HISTORY_DEFAULT, 1_000)?;
    let name = host.clone();
    let (as_of_seq, states, history) = app
        .read(params.linearizable(), move |kv| {
            let at_seq = match resolve(kv, moment)? {
                Ok(at_seq) => at_seq,
                Err(error) => return Ok(Err(error)),
            };
            let as_of_seq = at_seq.unwrap_or(views::head(kv)?.seq);
            let states = views::host_state(kv, &name, at_seq)?;
            let history = views::host_history(kv, &name, Some(as_of_seq), limit)?;
            Ok(Ok((as_of_seq, states, history)))
        })
        .await??;
    if states.is_empty() && history.is_empty() {
        return Err(ApiError::not_found("host_not_found", format!("host {host:?} was never registered")));
    }
    Ok(Json(types::HostDocument {
        host: host.as_str().into(),
        as_of_seq,
        targets: states.iter().map(wire::host).collect(),
        history: history.iter().map(wire::host).collect(),
    })
    .into_response())
}

pub async fn deployment(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::DeploymentDetail>> {
    path_name("deployment", &id)?;
    let params = Params::new(raw, &["at_seq", "at_time"])?;
    let moment = moment(&params)?;
    let name = id.clone();
    let record = app
        .read(params.linearizable(), move |kv| {
            Ok(match resolve(kv, moment)? {
                Ok(at_seq) => {
                    let record = views::deployment(kv, &name, at_seq)?;
                    let failures = match &record {
                        Some(record) => views::deployment_failures(kv, record, at_seq)?,
                        None => Vec::new(),
                    };
                    // Gates are shown for now only: alerts are kept as they stand, not by seq.
                    let gates = match (&record, at_seq) {
                        (Some(record), None) => match records::policy(kv, &record.service, &record.env, None)? {
                            Some(policy) => {
                                let alerts = records::alerts_of(kv, Some(&record.service), Some(&record.env))?;
                                let now = chrono::Utc::now().timestamp_micros();
                                gates::status(record, &policy.policy, &alerts, now).as_ref().map(wire::gate_status)
                            }
                            None => None,
                        },
                        _ => None,
                    };
                    Ok((at_seq, record.map(|record| (record, failures, gates))))
                }
                Err(error) => Err(error),
            })
        })
        .await??;
    match record {
        (_, Some((record, failures, gates))) => Ok(Json(types::DeploymentDetail {
            deployment: wire::deployment(&record),
            failures: failures.iter().map(|host| wire::host_failure(&record, host)).collect(),
            gates,
        })),
        (None, None) => Err(ApiError::not_found("deployment_not_found", format!("deployment {id:?} does not exist"))),
        (Some(seq), None) => Err(ApiError::not_found(
            "deployment_not_found",
            format!("deployment {id:?} did not exist yet at seq {seq}"),
        )),
    }
}

/// The release-safety policy of (service, env), now or at a past seq.
pub async fn policy(
    State(app): State<AppState>,
    PathParams((service, env)): PathParams<(String, String)>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::PolicyView>> {
    path_name("service", &service)?;
    path_name("env", &env)?;
    let params = Params::new(raw, &["at_seq", "at_time"])?;
    let moment = moment(&params)?;
    let (service_name, env_name) = (service.clone(), env.clone());
    let (at_seq, record) = app
        .read(params.linearizable(), move |kv| {
            Ok(match resolve(kv, moment)? {
                Ok(at_seq) => Ok((at_seq, records::policy(kv, &service_name, &env_name, at_seq)?)),
                Err(error) => Err(error),
            })
        })
        .await??;
    match record {
        Some(record) => Ok(Json(types::PolicyView {
            service,
            env,
            policy: wire::policy(&record.policy)?,
            set: wire::step(&record.set),
            as_of_seq: at_seq,
        })),
        None => Err(ApiError::not_found(
            "policy_not_found",
            match at_seq {
                Some(seq) => format!("{service}/{env} had no policy at seq {seq}"),
                None => format!("{service}/{env} has no policy; set one with PUT /v1/policies/{service}/{env}"),
            },
        )),
    }
}

/// Most decisions one answer lists; a deployment has a few per wave.
const DECISIONS_MAX: usize = 1_000;

/// The events the policy evaluator appended for one deployment (actor `system:policy`), oldest
/// first: what `fleetlog deploy why` shows.
pub async fn decisions(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    path_name("deployment", &id)?;
    let params = Params::new(raw, &[])?;
    let name = id.clone();
    let events = app
        .read(params.linearizable(), move |kv| {
            if records::deployment(kv, &name)?.is_none() {
                return Ok(None);
            }
            let filter = views::EventFilter {
                deployment: Some(name),
                actor: Some(POLICY_ACTOR.to_string()),
                ..views::EventFilter::default()
            };
            let mut events = Vec::new();
            let mut from_seq = 1;
            loop {
                let page = views::read_events(kv, &filter, from_seq, DECISIONS_MAX - events.len())?;
                events.extend(page.events.iter().map(|event| event.canonical_json()));
                if events.len() >= DECISIONS_MAX || page.next_seq <= from_seq || page.next_seq > page.head_seq {
                    return Ok(Some(events));
                }
                from_seq = page.next_seq;
            }
        })
        .await?;
    match events {
        Some(events) => {
            let body = wire::events_document(
                &events,
                &types::DecisionList { events: Vec::<types::Event>::new(), deployment: id },
            )?;
            Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        None => Err(ApiError::not_found("deployment_not_found", format!("deployment {id:?} does not exist"))),
    }
}

pub async fn deployments(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::DeploymentList>> {
    let params = Params::new(raw, &["service", "env", "state", "release", "limit"])?;
    let state = match params.text("state").as_deref() {
        None => None,
        Some("active") => Some(DeploymentState::Active),
        Some("completed") => Some(DeploymentState::Completed),
        Some("aborted") => Some(DeploymentState::Aborted),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("state is active, completed or aborted, not {other:?}"),
            ))
        }
    };
    let filter = DeploymentFilter {
        service: name_param(&params, "service")?,
        env: name_param(&params, "env")?,
        release: name_param(&params, "release")?,
        state,
    };
    let limit = params.limit(100, DEPLOYMENT_LIST_MAX)?;
    let records = app.read(params.linearizable(), move |kv| views::deployments(kv, &filter, limit)).await?;
    Ok(Json(types::DeploymentList { deployments: records.iter().map(wire::deployment).collect() }))
}

pub async fn releases(
    State(app): State<AppState>,
    PathParams(service): PathParams<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::ReleasesView>> {
    path_name("service", &service)?;
    let params = Params::new(raw, &[])?;
    let name = service.clone();
    let (releases, environments) = app.read(params.linearizable(), move |kv| views::releases(kv, &name)).await?;
    Ok(Json(types::ReleasesView {
        service,
        releases: releases.iter().map(wire::release).collect(),
        environments: environments.iter().map(wire::environment).collect(),
    }))
}
