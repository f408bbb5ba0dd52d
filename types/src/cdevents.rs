//! CDEvents taken in.

use serde::{Deserialize, Serialize};

use crate::event::AppendedEvent;

/// `POST /v1/cdevents`: how many CloudEvents the request held, how many were already recorded
/// (a sender retrying), and where the new ones were written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CdEventsAnswer<'a> {
    pub received: u64,
    pub duplicates: u64,
    pub written: Vec<AppendedEvent<'a>>,
}
