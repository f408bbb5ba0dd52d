//! Inputs shared by the benches: proposals, commands and committed events whose `data` is
//! 256 bytes of canonical JSON, the payload size SPEC's throughput figures use.

// Each bench uses a part of this module; the rest would warn as unused in that bench.
#![allow(dead_code)]

use fleetlog_raft::domain::event::{AppendRequest, Event, ExpectedVersion, LedgerCommand, ProposedEvent, GENESIS_HASH};

/// Bytes of canonical JSON in every event's `data`.
pub const PAYLOAD_BYTES: usize = 256;

/// Leader time stamped on the commands (2026-11-28T06:00:00Z); any fixed value would do.
pub const TIME_MICROS: i64 = 1_795_845_600_000_000;

/// `opening ++ "x" * n ++ closing` with `n` chosen so the text is exactly [`PAYLOAD_BYTES`]
/// long. The caller passes the two halves of a canonical JSON object around one string value.
pub fn padded(opening: &str, closing: &str) -> String {
    let filler = PAYLOAD_BYTES
        .checked_sub(opening.len() + closing.len())
        .expect("the fixed part of the payload fits in PAYLOAD_BYTES");
    let text = format!("{opening}{}{closing}", "x".repeat(filler));
    debug_assert_eq!(text.len(), PAYLOAD_BYTES);
    text
}

/// A client event of a custom type (no view effects): the plain append path.
pub fn custom_proposal(number: usize) -> ProposedEvent {
    let mut proposal = ProposedEvent::new(format!("bench-{number}"), "bench.append");
    proposal.data = padded(r#"{"pad":""#, r#""}"#);
    proposal
}

/// A command of `requests` client requests of `events_per_request` custom events each, with
/// event ids numbered from `first_number`.
pub fn custom_command(requests: usize, events_per_request: usize, first_number: usize) -> LedgerCommand {
    let requests = (0..requests)
        .map(|request| {
            let first = first_number + request * events_per_request;
            AppendRequest {
                events: (first..first + events_per_request).map(custom_proposal).collect(),
                expected_version: ExpectedVersion::Any,
                actor: "bench".into(),
            }
        })
        .collect();
    LedgerCommand { time_micros: TIME_MICROS, requests, identity: None }
}

/// One request of `events`, as one command.
pub fn command_of(events: Vec<ProposedEvent>) -> LedgerCommand {
    LedgerCommand {
        time_micros: TIME_MICROS,
        requests: vec![AppendRequest { events, expected_version: ExpectedVersion::Any, actor: "bench".into() }],
        identity: None,
    }
}

/// A committed event at `seq` as the ledger stores and serves it: a domain-looking envelope
/// with every optional field a host report carries, and a correct hash.
pub fn committed_event(seq: u64) -> Event {
    let mut event = Event {
        seq,
        id: format!("bench-{seq}"),
        stream: "checkout/prod".into(),
        version: seq - 1,
        event_type: "bench.append".into(),
        time_micros: TIME_MICROS,
        actor: "bench".into(),
        service: Some("checkout".into()),
        env: Some("prod".into()),
        host: Some("web-0001".into()),
        release: Some("2.0.0".into()),
        deployment: None,
        data: padded(r#"{"pad":""#, r#""}"#),
        prev_hash: GENESIS_HASH,
        hash: [0; 32],
    };
    event.hash = event.compute_hash();
    event
}
