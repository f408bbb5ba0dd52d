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

/// The CDEvents document of `event`.
// Wired to the CDEvents converter when merged; until then no event has a CDEvents rendering,
// so a `cdevents` webhook is registered and resumes like any other but receives nothing.
pub fn render_cdevents(_event: &Event) -> Option<serde_json::Value> {
    None
}
