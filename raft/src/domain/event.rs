//! The event envelope, the commands that propose events, and their outcomes.
//!
//! These types travel through the Raft log and the state machine (bincode via `codec`), so they
//! carry no serde attributes that change the field layout. JSON shapes belong to `fleetlog-api`,
//! except the canonical form below, which is part of the hash contract (SPEC section 2).

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::canonical::write_string;

/// `prev_hash` of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// An event as a client proposes it, after the leader filled in a missing id and canonicalised
/// `data`. Everything else (seq, version, time, hashes) is decided when it is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedEvent {
    pub id: String,
    pub event_type: String,
    pub stream: Option<String>,
    pub service: Option<String>,
    pub env: Option<String>,
    pub host: Option<String>,
    pub release: Option<String>,
    pub deployment: Option<String>,
    /// Canonical JSON text of a JSON object.
    pub data: String,
}

impl ProposedEvent {
    /// A new proposal of `event_type` with every optional field empty and `data` = `{}`.
    pub fn new(id: impl Into<String>, event_type: impl Into<String>) -> ProposedEvent {
        ProposedEvent {
            id: id.into(),
            event_type: event_type.into(),
            stream: None,
            service: None,
            env: None,
            host: None,
            release: None,
            deployment: None,
            data: "{}".to_string(),
        }
    }

    /// SHA-256 over the canonical JSON of what the client chose. Two proposals with the same id
    /// are the same request exactly when their fingerprints are equal; canonical JSON keeps the
    /// fingerprint stable across codec changes.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut text = String::with_capacity(self.data.len() + 160);
        text.push('{');
        text.push_str("\"data\":");
        text.push_str(&self.data);
        let fields = [
            ("deployment", &self.deployment),
            ("env", &self.env),
            ("host", &self.host),
            ("release", &self.release),
            ("service", &self.service),
            ("stream", &self.stream),
        ];
        for (name, value) in fields {
            text.push(',');
            write_string(&mut text, name);
            text.push(':');
            write_optional(&mut text, value.as_deref());
        }
        text.push_str(",\"type\":");
        write_string(&mut text, &self.event_type);
        text.push('}');
        Sha256::digest(text.as_bytes()).into()
    }
}

/// Optimistic concurrency condition on the stream of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExpectedVersion {
    #[default]
    Any,
    NoStream,
    Exists,
    Exact(u64),
}

/// One client request: a batch that commits atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    pub events: Vec<ProposedEvent>,
    pub expected_version: ExpectedVersion,
    /// Authenticated principal; "anonymous" when auth is off.
    pub actor: String,
}

/// The payload of one Raft entry: requests gathered by the leader, stamped with the leader's
/// clock so that every replica computes identical events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCommand {
    pub time_micros: i64,
    pub requests: Vec<AppendRequest>,
    /// Set by a leader that finds the cluster without an identity; the first one applied wins.
    pub identity: Option<ClusterIdentity>,
}

/// How openraft names an entry's payload in its logs: its size, never its contents.
impl std::fmt::Display for LedgerCommand {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let events: usize = self.requests.iter().map(|request| request.events.len()).sum();
        write!(formatter, "{} requests, {events} events", self.requests.len())
    }
}

/// Facts about the cluster itself that every replica must agree on, decided once by a leader.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub cluster_id: String,
    /// Ed25519 seed of the key that signs checkpoints. Replicated, so every node signs with the
    /// same key; it never leaves the nodes through the API.
    pub signing_seed: [u8; 32],
}

impl ClusterIdentity {
    /// The signer of this cluster's checkpoints.
    pub fn signer(&self) -> crate::domain::checkpoint::NoteSigner {
        crate::domain::checkpoint::NoteSigner::new(
            crate::domain::checkpoint::origin(&self.cluster_id),
            &self.signing_seed,
        )
    }
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed, even in debug logs.
        formatter.debug_struct("ClusterIdentity").field("cluster_id", &self.cluster_id).finish_non_exhaustive()
    }
}

/// A committed event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub id: String,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub time_micros: i64,
    pub actor: String,
    pub service: Option<String>,
    pub env: Option<String>,
    pub host: Option<String>,
    pub release: Option<String>,
    pub deployment: Option<String>,
    /// Canonical JSON text of a JSON object.
    pub data: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl Event {
    /// RFC 8785 text of the event without `hash`: the bytes that are hashed.
    pub fn canonical_without_hash(&self) -> String {
        self.render(false)
    }

    /// RFC 8785 text of the event with `hash`: what every endpoint serves.
    pub fn canonical_json(&self) -> String {
        self.render(true)
    }

    /// SHA-256 of [`Event::canonical_without_hash`].
    pub fn compute_hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_without_hash().as_bytes()).into()
    }

    fn render(&self, with_hash: bool) -> String {
        // Member names are ASCII and written here in the JCS order (sorted by code unit).
        let mut out = String::with_capacity(self.data.len() + 400);
        out.push_str("{\"actor\":");
        write_string(&mut out, &self.actor);
        out.push_str(",\"data\":");
        out.push_str(&self.data);
        out.push_str(",\"deployment\":");
        write_optional(&mut out, self.deployment.as_deref());
        out.push_str(",\"env\":");
        write_optional(&mut out, self.env.as_deref());
        if with_hash {
            out.push_str(",\"hash\":\"");
            push_hex(&mut out, &self.hash);
            out.push('"');
        }
        out.push_str(",\"host\":");
        write_optional(&mut out, self.host.as_deref());
        out.push_str(",\"id\":");
        write_string(&mut out, &self.id);
        out.push_str(",\"prev_hash\":\"");
        push_hex(&mut out, &self.prev_hash);
        out.push_str("\",\"release\":");
        write_optional(&mut out, self.release.as_deref());
        out.push_str(",\"seq\":");
        let _ = write!(out, "{}", self.seq);
        out.push_str(",\"service\":");
        write_optional(&mut out, self.service.as_deref());
        out.push_str(",\"stream\":");
        write_string(&mut out, &self.stream);
        out.push_str(",\"time\":\"");
        push_time(&mut out, self.time_micros);
        out.push_str("\",\"type\":");
        write_string(&mut out, &self.event_type);
        out.push_str(",\"version\":");
        let _ = write!(out, "{}", self.version);
        out.push('}');
        out
    }
}

fn write_optional(out: &mut String, value: Option<&str>) {
    match value {
        Some(text) => write_string(out, text),
        None => out.push_str("null"),
    }
}

/// RFC 3339 UTC with exactly six fractional digits, e.g. `2026-11-28T06:00:00.123456Z`.
pub fn format_time(time_micros: i64) -> String {
    let mut out = String::with_capacity(27);
    push_time(&mut out, time_micros);
    out
}

/// Microseconds of 10000-01-01T00:00:00Z: the written form below has four-digit years.
const YEAR_10000_MICROS: i64 = 253_402_300_800_000_000;

/// Appends [`format_time`]'s text. Every event's hash covers it and events are rendered on every
/// apply and read, so the common case (years 1970 to 9999) is written by hand: chrono's
/// format-string interpreter cost more than the rest of the event's JSON. Any other moment goes
/// through chrono, and a test checks the two agree.
fn push_time(out: &mut String, time_micros: i64) {
    if !(0..YEAR_10000_MICROS).contains(&time_micros) {
        match chrono::DateTime::from_timestamp_micros(time_micros) {
            Some(moment) => {
                let _ = write!(out, "{}", moment.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
            }
            None => out.push_str("1970-01-01T00:00:00.000000Z"),
        }
        return;
    }
    let seconds = time_micros / 1_000_000;
    let micros = time_micros % 1_000_000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_date(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    );
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (days ≥ 0),
/// counting in 400-year eras that start on March 1st so that leap days fall at the end.
fn civil_date(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends lowercase hex; for hashes written into every event's JSON.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    // Digits go to a stack buffer and into the string as one slice: pushing them one `char` at a
    // time cost as much as the rest of an event's rendering, and `hex::encode` allocates.
    let mut digits = [0u8; 128];
    for chunk in bytes.chunks(digits.len() / 2) {
        let digits = &mut digits[..2 * chunk.len()];
        hex::encode_to_slice(chunk, digits).expect("the buffer holds two digits per byte");
        out.push_str(std::str::from_utf8(digits).expect("hex digits are ASCII"));
    }
}

/// Parses an RFC 3339 timestamp with any offset into microseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    let moment = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(moment.timestamp_micros())
}

/// The position and hash of one committed event, as reported to the client that appended it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedEvent {
    pub seq: u64,
    pub id: String,
    pub hash: [u8; 32],
}

/// What happened to one [`AppendRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The batch is in the ledger. `duplicate`: every id was already there, nothing was written
    /// and these are the original positions.
    Appended {
        events: Vec<AppendedEvent>,
        duplicate: bool,
    },
    Rejected(crate::Rejection),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            seq: 1,
            id: "e-1".into(),
            stream: "checkout/prod".into(),
            version: 0,
            event_type: "release.created".into(),
            time_micros: 1_795_824_000_123_456,
            actor: "alice".into(),
            service: Some("checkout".into()),
            env: None,
            host: None,
            release: Some("1.4.2".into()),
            deployment: None,
            data: r#"{"notes":"first"}"#.into(),
            prev_hash: GENESIS_HASH,
            hash: [0; 32],
        }
    }

    #[test]
    fn canonical_form_equals_generic_jcs_of_the_same_object() {
        let event = sample();
        let value: serde_json::Value = serde_json::from_str(&event.canonical_without_hash()).unwrap();
        let generic = crate::domain::canonical::to_canonical_string(&value).unwrap();
        assert_eq!(generic, event.canonical_without_hash());
        assert!(generic.contains("\"time\":\"2026-11-28T00:00:00.123456Z\""), "{generic}");
        assert!(generic.contains("\"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\""));
        let served: serde_json::Value = serde_json::from_str(&event.canonical_json()).unwrap();
        assert_eq!(crate::domain::canonical::to_canonical_string(&served).unwrap(), event.canonical_json());
    }

    fn chrono_text(time_micros: i64) -> String {
        let moment = chrono::DateTime::from_timestamp_micros(time_micros).unwrap();
        moment.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        // Every event's hash covers this text: the hand-written form must never differ.
        let day = 86_400_000_000i64;
        let mut moments = vec![0, 1, 999_999, 1_000_000, day - 1, day, YEAR_10000_MICROS - 1];
        // Every day boundary (and the microsecond before it) from 1970 to past 2100, which
        // covers leap years, the century rule (2100) and the 400-year rule (2000).
        moments.extend((0..50_000).flat_map(|days| [days * day, days * day + day - 1]));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            moments.push((state % YEAR_10000_MICROS as u64) as i64);
        }
        for moment in moments {
            assert_eq!(format_time(moment), chrono_text(moment), "{moment}");
        }
        // Outside the fast range, chrono writes it.
        assert_eq!(format_time(-1), chrono_text(-1));
        assert_eq!(format_time(YEAR_10000_MICROS), chrono_text(YEAR_10000_MICROS));
    }

    #[test]
    fn hex_is_lowercase_and_complete() {
        let mut out = String::new();
        push_hex(&mut out, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(out, "000fa5ff");
        let bytes: Vec<u8> = (0..=255).collect();
        let mut all = String::new();
        push_hex(&mut all, &bytes);
        assert_eq!(all, hex::encode(&bytes));
    }

    #[test]
    fn fingerprint_is_jcs_of_client_fields() {
        let mut proposal = ProposedEvent::new("x", "app.thing");
        proposal.service = Some("svc".into());
        let text = r#"{"data":{},"deployment":null,"env":null,"host":null,"release":null,"service":"svc","stream":null,"type":"app.thing"}"#;
        let expected: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(proposal.fingerprint(), expected);
        let mut other = proposal.clone();
        other.data = r#"{"a":1}"#.into();
        assert_ne!(other.fingerprint(), proposal.fingerprint());
    }

    #[test]
    fn times_format_with_six_digits_and_parse_back() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
        let micros = parse_time("2026-11-28T07:00:00.5+01:00").unwrap();
        assert_eq!(format_time(micros), "2026-11-28T06:00:00.500000Z");
        assert!(parse_time("yesterday").is_none());
    }
}
