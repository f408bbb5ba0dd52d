//! Webhooks: registering one (`POST /v1/webhooks`), the list with each one's delivery progress.

use serde::{Deserialize, Serialize};

/// The body of `POST /v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookRequest {
    /// Where deliveries are POSTed: an http:// or https:// URL.
    pub url: String,
    /// Event types, or prefixes ending with a dot (`wave.`), the receiver is sent.
    pub events: Vec<String>,
    /// `fleetlog` (the event's JSON) or `cdevents`; `fleetlog` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// `POST /v1/webhooks` (201): the webhook and its secret, which is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookCreated {
    pub webhook: WebhookView,
    /// The HMAC key of `Fleetlog-Signature`, as text. Not stored anywhere readable: removing
    /// the webhook and adding it again is how it is rotated.
    pub secret: String,
}

/// `GET /v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// One webhook, never with its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub format: String,
    /// Seq of its `webhook.added`: deliveries are of the events after it.
    pub added_seq: u64,
    pub added_by: String,
    /// The last seq its receiver acknowledged: what the leader delivering knows, or else what
    /// the log recorded (at most about a second behind).
    pub acknowledged_seq: u64,
    /// Why the last attempt failed, while deliveries are being retried; known to the leader.
    pub last_error: Option<String>,
}

/// `DELETE /v1/webhooks/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookRemoved {
    pub id: String,
    /// Seq of its `webhook.removed`.
    pub seq: u64,
}
