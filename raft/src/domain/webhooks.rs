//! Webhooks as the ledger knows them (decision 102): their events, the rules of their data, the
//! secret every node derives for one, the signature of a delivery, which event types one
//! receives, and the list read back from the log.
//!
//! A webhook is three event types in the stream `webhooks/{id}`: `webhook.added` (url, type
//! filters, format), `webhook.removed`, and, in `webhooks/{id}/progress`, `webhook.progressed`
//! (the last seq its receiver acknowledged, appended by the leader as `system:webhooks`). The
//! secret is never written: every node derives it from the cluster's replicated signing seed.

use serde_json::Value;
use sha2::Sha256;

use crate::domain::event::{ClusterIdentity, Event};
use crate::domain::kv::KvRead;
use crate::domain::ledger::validate::{check_name, check_type_name, is_name_char};
use crate::domain::rejection::{Rejection, RejectionCode};
use crate::domain::views::{self, EventFilter};
use crate::Result;

/// The actor of progress events: what the cluster records by itself.
pub const WEBHOOK_ACTOR: &str = "system:webhooks";
pub const ADDED: &str = "webhook.added";
pub const REMOVED: &str = "webhook.removed";
pub const PROGRESSED: &str = "webhook.progressed";

/// Characters of a webhook's URL.
pub const URL_CHARS_MAX: usize = 2_048;
/// Type filters of one webhook.
pub const FILTERS_MAX: usize = 32;
/// Characters of a webhook id (the API makes `wh-` and 16 hex digits).
pub const ID_CHARS_MAX: usize = 64;

/// What a receiver is sent for each event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The event's canonical JSON, exactly as `GET /v1/events/{seq}` serves it.
    Fleetlog,
    /// A CDEvents document, for the event types that have one.
    Cdevents,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Fleetlog, Format::Cdevents];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Fleetlog => "fleetlog",
            Format::Cdevents => "cdevents",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|format| format.as_str() == text)
    }
}

/// The stream of a webhook's registration.
pub fn stream(id: &str) -> String {
    format!("webhooks/{id}")
}

/// The stream of a webhook's progress: its head is the last recorded acknowledgement.
pub fn progress_stream(id: &str) -> String {
    format!("webhooks/{id}/progress")
}

/// The id of the progress event recording `seq`: a leader that records it again (after a retry
/// or a change of leader) writes a duplicate, which the ledger answers without writing.
pub fn progress_event_id(id: &str, seq: u64) -> String {
    format!("webhook-progress:{id}:{seq}")
}

/// The `Fleetlog-Delivery` header of one event to one webhook: the same on every attempt, on
/// every leader, so a receiver recognises a retry.
pub fn delivery_id(id: &str, seq: u64) -> String {
    format!("{id}:{seq}")
}

/// Whether a webhook with these filters receives events of `event_type`. A filter is a type, or
/// a prefix when it ends with a dot (`wave.`), as in `GET /v1/events?type=`. Progress events are
/// never delivered: each acknowledged delivery of one would record another, forever.
pub fn matches(filters: &[String], event_type: &str) -> bool {
    event_type != PROGRESSED
        && filters.iter().any(|filter| {
            if filter.ends_with('.') {
                event_type.starts_with(filter.as_str())
            } else {
                event_type == filter
            }
        })
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The secret of webhook `id`: derived from the cluster's replicated signing seed, so every node
/// (a new leader included) signs with it and the log never holds it. Receivers use its text as
/// the HMAC key.
pub fn secret(identity: &ClusterIdentity, id: &str) -> String {
    let derived = hmac_sha256(&identity.signing_seed, &[b"fleetlog webhook secret\0", id.as_bytes()]);
    format!("whsec_{}", hex::encode(derived))
}

/// The `Fleetlog-Signature` header: `sha256=` and the hex HMAC of `timestamp.body` under the
/// secret's text.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", body]);
    format!("sha256={}", hex::encode(mac))
}

/// Checks a webhook id (a name: `[A-Za-z0-9._-]`).
pub fn check_id(id: &str) -> std::result::Result<(), Rejection> {
    check_name("data.webhook", id, ID_CHARS_MAX, is_name_char).map_err(|rejection| rejection.on("data.webhook"))
}

/// Checks a receiver's URL: http or https, a host, no spaces or control characters.
pub fn check_url(url: &str) -> std::result::Result<(), Rejection> {
    let invalid = || {
        Rejection::new(
            RejectionCode::InvalidField,
            format!("data.url must be an http:// or https:// URL with a host, of at most {URL_CHARS_MAX} characters"),
        )
        .on("data.url")
    };
    if url.chars().count() > URL_CHARS_MAX || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    // The parser forgives what people mistype (`http:host`, `http:///path` become a host of
    // their own): the authority must be written out.
    let written_host = url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    if !written_host {
        return Err(invalid());
    }
    // Parsed as the HTTP client will parse it, so a URL accepted here is one deliveries can use.
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(())
}

/// Checks the type filters: 1 to [`FILTERS_MAX`] types or dotted prefixes, each once.
pub fn check_filters(filters: &[String]) -> std::result::Result<(), Rejection> {
    if filters.is_empty() || filters.len() > FILTERS_MAX {
        return Err(Rejection::new(
            RejectionCode::InvalidField,
            format!("data.events must list 1 to {FILTERS_MAX} event types or prefixes ending with a dot"),
        )
        .on("data.events"));
    }
    for (index, filter) in filters.iter().enumerate() {
        let name = filter.strip_suffix('.').unwrap_or(filter);
        check_type_name(name).map_err(|rejection| rejection.on(&format!("data.events[{index}]")))?;
        if filters[..index].contains(filter) {
            return Err(Rejection::new(RejectionCode::InvalidField, format!("data.events names {filter:?} twice"))
                .on(&format!("data.events[{index}]")));
        }
    }
    Ok(())
}

/// A webhook as its events describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub format: Format,
    /// Seq of its `webhook.added`; deliveries start after it.
    pub added_seq: u64,
    pub added_by: String,
    /// The last seq its receiver acknowledged, as recorded in the log (the added seq before any).
    pub acknowledged_seq: u64,
}

/// The webhooks added and not removed, oldest first, each with its recorded progress.
pub fn list(kv: &dyn KvRead) -> Result<Vec<Webhook>> {
    let mut webhooks = Vec::new();
    for event in events_of_type(kv, ADDED)? {
        if let Some(webhook) = from_added(&event) {
            webhooks.push(webhook);
        }
    }
    let removed: Vec<String> =
        events_of_type(kv, REMOVED)?.iter().filter_map(|event| text_member(&event.data, "webhook")).collect();
    webhooks.retain(|webhook| !removed.contains(&webhook.id));
    for webhook in &mut webhooks {
        if let Some(seq) = recorded_progress(kv, &webhook.id)? {
            webhook.acknowledged_seq = webhook.acknowledged_seq.max(seq);
        }
    }
    Ok(webhooks)
}

/// The last acknowledged seq recorded for webhook `id`: the head of its progress stream.
pub fn recorded_progress(kv: &dyn KvRead, id: &str) -> Result<Option<u64>> {
    let stream = progress_stream(id);
    let (_, last_version) = views::read_stream(kv, &stream, u64::MAX, 0)?;
    let Some(last_version) = last_version else { return Ok(None) };
    let (events, _) = views::read_stream(kv, &stream, last_version, 1)?;
    Ok(events.first().and_then(|event| {
        serde_json::from_str::<Value>(&event.data).ok().and_then(|data| data.get("seq").and_then(Value::as_u64))
    }))
}

/// Every event of exactly `event_type`, through the type index.
fn events_of_type(kv: &dyn KvRead, event_type: &str) -> Result<Vec<Event>> {
    let filter = EventFilter { event_type: Some(event_type.to_string()), ..EventFilter::default() };
    let mut events = Vec::new();
    let mut from_seq = 1;
    loop {
        let page = views::read_events(kv, &filter, from_seq, 1_000)?;
        events.extend(page.events);
        if page.next_seq > page.head_seq {
            return Ok(events);
        }
        from_seq = page.next_seq;
    }
}

fn from_added(event: &Event) -> Option<Webhook> {
    let data: Value = serde_json::from_str(&event.data).ok()?;
    let events =
        data.get("events")?.as_array()?.iter().filter_map(|filter| filter.as_str().map(str::to_string)).collect();
    Some(Webhook {
        id: data.get("webhook")?.as_str()?.to_string(),
        url: data.get("url")?.as_str()?.to_string(),
        events,
        format: Format::parse(data.get("format")?.as_str()?)?,
        added_seq: event.seq,
        added_by: event.actor.clone(),
        acknowledged_seq: event.seq,
    })
}

fn text_member(data: &str, name: &str) -> Option<String> {
    serde_json::from_str::<Value>(data).ok()?.get(name)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(list: &[&str]) -> Vec<String> {
        list.iter().map(|filter| filter.to_string()).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        let mac = hmac_sha256(&[0x0b; 20], &[b"Hi There"]);
        assert_eq!(hex::encode(mac), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        // Test case 2, the message split in parts.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(&[0xaa; 131], &[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn signature_covers_timestamp_and_body() {
        let signed = signature("whsec_x", "1700000000", b"{\"seq\":1}");
        let expected = hex::encode(hmac_sha256(b"whsec_x", &[b"1700000000.{\"seq\":1}"]));
        assert_eq!(signed, format!("sha256={expected}"));
        assert_ne!(signed, signature("whsec_x", "1700000001", b"{\"seq\":1}"));
        assert_ne!(signed, signature("whsec_y", "1700000000", b"{\"seq\":1}"));
    }

    #[test]
    fn secrets_differ_per_webhook_and_cluster() {
        let one = ClusterIdentity { cluster_id: "a".into(), signing_seed: [1; 32] };
        let other = ClusterIdentity { cluster_id: "b".into(), signing_seed: [2; 32] };
        assert_eq!(secret(&one, "wh-1"), secret(&one, "wh-1"));
        assert_ne!(secret(&one, "wh-1"), secret(&one, "wh-2"));
        assert_ne!(secret(&one, "wh-1"), secret(&other, "wh-1"));
        assert!(secret(&one, "wh-1").starts_with("whsec_"));
    }

    #[test]
    fn filters_match_types_and_dotted_prefixes() {
        let wanted = filters(&["wave.", "rollback"]);
        assert!(matches(&wanted, "wave.started"));
        assert!(matches(&wanted, "rollback"));
        assert!(!matches(&wanted, "rollbacks.x"));
        assert!(!matches(&wanted, "waves.started"));
        assert!(!matches(&wanted, "deployment.started"));
        // Progress is never delivered, even to a webhook that asks for every webhook event.
        assert!(!matches(&filters(&["webhook."]), PROGRESSED));
        assert!(!matches(&filters(&[PROGRESSED]), PROGRESSED));
        assert!(matches(&filters(&["webhook."]), ADDED));
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        for good in ["http://127.0.0.1:9000/hook", "https://example.com", "HTTPS://example.com/a?b=c"] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        // The last two passed a hand-made check, and no delivery could ever have used them.
        let bad = [
            "ftp://example.com",
            "example.com",
            "http://",
            "http:///path",
            "http://exa mple.com",
            "http://:80",
            "http://[::1/hook",
            "http://example.com:99999/",
        ];
        for bad in bad {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_are_types_or_dotted_prefixes() {
        assert!(check_filters(&filters(&["wave.", "rollback", "myapp.config."])).is_ok());
        assert!(check_filters(&[]).is_err());
        assert!(check_filters(&filters(&["Wave."])).is_err());
        assert!(check_filters(&filters(&[""])).is_err());
        assert!(check_filters(&filters(&["."])).is_err());
        assert!(check_filters(&filters(&["wave.", "wave."])).is_err());
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(Format::parse("fleetlog"), Some(Format::Fleetlog));
        assert_eq!(Format::parse("cdevents"), Some(Format::Cdevents));
        assert_eq!(Format::parse("json"), None);
    }
}
