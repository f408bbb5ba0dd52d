//! An event as a receiver is sent it, in its webhook's format: the one place a format is chosen.

use fleetlog_raft::domain::event::Event;
use fleetlog_raft::domain::webhooks::Format;

/// The request body for `event`, or None when the format has no rendering of it (the event is
/// then not delivered to that webhook, and not waited for).
pub fn body(format: Format, event: &Event) -> Option<Vec<u8>> {
    match format {
        // The canonical text, the bytes the event's hash and the Merkle tree cover.
        Format::Fleetlog => Some(event.canonical_json().into_bytes()),
        Format::Cdevents => render_cdevents(event).map(|document| document.to_string().into_bytes()),
    }
}

/// The content type of a format's bodies: a CDEvent goes as a CloudEvent in structured mode.
pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::Fleetlog => "application/json",
        Format::Cdevents => "application/cloudevents+json",
    }
}

/// The CDEvents document of `event`: the CloudEvent the subscribe stream's `format=cdevents`
/// sends too, so a receiver reads the same thing from either.
pub fn render_cdevents(event: &Event) -> Option<serde_json::Value> {
    crate::cdevents::outgoing::cloud_event(event)
}
