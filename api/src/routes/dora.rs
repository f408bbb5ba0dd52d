//! `GET /v1/dora`: the four keys of software delivery for a service, an environment or all,
//! over a window, each with its band in the 2024 Accelerate State of DevOps report (see
//! `fleetlog_raft::domain::dora` for what each counts).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use fleetlog_raft::domain::dora::{self, Band, Dora};
use fleetlog_raft::domain::event::format_time;
use fleetlog_raft::domain::records;
use fleetlog_raft::domain::views::{self, DeploymentFilter};
use fleetlog_types as types;

use crate::error::{ApiError, ApiResult};
use crate::input::Params;
use crate::routes::views::name_param;
use crate::state::AppState;
use crate::wire;

/// The window when `since` is not given: the 30 days before `until`.
const DEFAULT_DAYS: i64 = 30;
/// Most deployments and recoveries listed one by one (the figures count them all).
const LISTED_MAX: usize = 1_000;

pub async fn dora(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::DoraReport>> {
    let params = Params::new(raw, &["service", "env", "since", "until"])?;
    let (service, env) = (name_param(&params, "service")?, name_param(&params, "env")?);
    if env.is_some() && service.is_none() {
        return Err(ApiError::bad_request("invalid_parameter", "env needs service"));
    }
    let until = params.time("until")?.unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
    let since = params.time("since")?.unwrap_or(until - DEFAULT_DAYS * 86_400_000_000);
    if since >= until {
        return Err(ApiError::bad_request("invalid_parameter", "since must be before until"));
    }
    let filter = DeploymentFilter { service: service.clone(), env: env.clone(), state: None, release: None };
    let (asked_service, asked_env) = (service.clone(), env.clone());
    let figures = app
        .read(params.linearizable(), move |kv| {
            let deployments = views::deployments(kv, &filter, usize::MAX)?;
            let mut releases = HashMap::new();
            for deployment in &deployments {
                let key = (deployment.service.clone(), deployment.release.clone());
                if let std::collections::hash_map::Entry::Vacant(slot) = releases.entry(key) {
                    slot.insert(records::release(kv, &deployment.service, &deployment.release)?);
                }
            }
            let recoveries = records::recoveries(kv, asked_service.as_deref(), asked_env.as_deref())?;
            let release_of = |service: &str, release: &str| {
                releases.get(&(service.to_string(), release.to_string())).cloned().flatten()
            };
            Ok(dora::compute(&deployments, release_of, &recoveries, since, until))
        })
        .await?;
    Ok(Json(dora_json(&figures, service, env, since, until)))
}

fn dora_json(
    figures: &Dora,
    service: Option<String>,
    env: Option<String>,
    since: i64,
    until: i64,
) -> types::DoraReport {
    let band = |band: Option<Band>| band.map(|band| band.as_str().to_string());
    let deployments = figures
        .deployments
        .iter()
        .take(LISTED_MAX)
        .map(|facts| types::DoraDeployment {
            deployment: facts.id.clone(),
            service: facts.service.clone(),
            env: facts.env.clone(),
            release: facts.release.clone(),
            started_seq: facts.started_seq,
            ended_seq: facts.ended_seq,
            completed_in_window: facts.completed,
            failed: facts.failed,
            lead_seconds: facts.lead_seconds,
            lead_from: facts
                .lead_seconds
                .map(|_| if facts.lead_from_commit { "commit" } else { "creation" }.to_string()),
        })
        .collect();
    let recoveries = figures
        .recoveries
        .iter()
        .take(LISTED_MAX)
        .map(|recovery| types::DoraRecovery {
            service: recovery.service.clone(),
            env: recovery.env.clone(),
            deployment: recovery.deployment.clone(),
            target: recovery.target.clone(),
            failure: wire::step(&recovery.failure),
            recovered: wire::step(&recovery.recovered),
            seconds: (recovery.recovered.time_micros - recovery.failure.time_micros) as f64 / 1e6,
        })
        .collect();
    types::DoraReport {
        service,
        env,
        since: format_time(since),
        until: format_time(until),
        days: figures.days,
        bands_from: "Accelerate State of DevOps report 2024".to_string(),
        deployment_frequency: types::dora::DeploymentFrequency {
            completed: figures.completed,
            per_day: figures.per_day,
            per_week: figures.per_day * 7.0,
            band: figures.frequency_band.as_str().to_string(),
        },
        change_lead_time: types::dora::MedianDuration {
            median_seconds: figures.lead_median_seconds,
            samples: figures.lead_samples,
            band: band(figures.lead_band),
        },
        change_fail_rate: types::dora::ChangeFailRate {
            started: figures.started,
            failed: figures.failed,
            rate: figures.fail_rate,
            band: band(figures.fail_band),
        },
        failed_deployment_recovery_time: types::dora::MedianDuration {
            median_seconds: figures.recovery_median_seconds,
            samples: figures.recovery_samples,
            band: band(figures.recovery_band),
        },
        deployments,
        recoveries,
    }
}
