//! `GET /v1/whoami`: the caller's name and role, so a client (the operator's page) shows only
//! the actions its token may take. It grants nothing: every action is checked again when taken.

use axum::extract::State;
use axum::{Extension, Json};
use fleetlog_types as types;

use crate::auth::{Permission, Principal};
use crate::state::AppState;

pub async fn whoami(State(app): State<AppState>, Extension(principal): Extension<Principal>) -> Json<types::WhoAmI> {
    Json(types::WhoAmI {
        name: principal.name,
        role: principal.role.as_str().to_string(),
        may_write: Permission::Write.allows(principal.role),
        tokens_required: !app.gate.is_open(),
    })
}
