//! Freeze calendars: `GET /v1/calendars` lists them with the windows open now and, for one
//! (service, env), whether a deployment there may start a wave now and why not.
//! `PUT /v1/calendars` (in `commands`) sets one.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use fleetlog_raft::domain::calendar::freeze_reason;
use fleetlog_raft::domain::records::{self, CalendarRecord};
use fleetlog_types as types;

use crate::error::{ApiError, ApiResult};
use crate::input::Params;
use crate::routes::views::name_param;
use crate::state::AppState;
use crate::wire;
use fleetlog_raft::domain::event::format_time;

pub async fn list(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::CalendarList>> {
    let params = Params::new(raw, &["service", "env"])?;
    let scope = match (name_param(&params, "service")?, name_param(&params, "env")?) {
        (Some(service), Some(env)) => Some((service, env)),
        (None, None) => None,
        _ => return Err(ApiError::bad_request("invalid_parameter", "give service and env together, or neither")),
    };
    let asked = scope.clone();
    let (calendars, manual_freeze) = app
        .read(params.linearizable(), move |kv| {
            Ok(match &asked {
                Some((service, env)) => {
                    let environment = records::environment(kv, service, env)?;
                    (records::calendars_for(kv, service, env)?, environment.freeze.map(|freeze| freeze.reason))
                }
                None => (records::all_calendars(kv)?, None),
            })
        })
        .await?;
    // Evaluated at this node's clock: what a deployment appended now would meet, to within the
    // clock difference to the leader that stamps it.
    let now = chrono::Utc::now().timestamp_micros();
    let scope = scope.map(|(service, env)| {
        let why = match manual_freeze {
            Some(reason) => Some(format!("frozen: {reason}")),
            None => freeze_reason(&calendars, now).map(|why| format!("in a freeze window: {why}")),
        };
        types::FreezeScope { service, env, frozen: why.is_some(), why }
    });
    Ok(Json(types::CalendarList {
        now: format_time(now),
        calendars: calendars.iter().map(|record| calendar(record, now)).collect::<ApiResult<_>>()?,
        scope,
    }))
}

fn calendar(record: &CalendarRecord, now: i64) -> ApiResult<types::CalendarView> {
    let open_now = record
        .calendar
        .windows
        .iter()
        .enumerate()
        .filter_map(|(index, window)| {
            window.open_until(now).map(|until| types::OpenWindow { window: index as u64, until: format_time(until) })
        })
        .collect();
    Ok(types::CalendarView {
        scope: record.scope(),
        service: record.service.clone(),
        env: record.env.clone(),
        windows: wire::windows(&record.calendar)?,
        open_now,
        set: wire::step(&record.set),
    })
}
