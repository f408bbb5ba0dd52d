//! `fleetlog bench catchup`: how fast a subscriber that fell behind reads the ledger back from
//! disk. One `GET /v1/subscribe?from_seq=…` stream, read until it has delivered every event up
//! to the head the server reported at the start.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cli::BenchCatchupArgs;

pub async fn run(server: &str, args: BenchCatchupArgs) -> Result<()> {
    if args.events == Some(0) {
        bail!("--events must be at least 1");
    }
    let server = server.split(',').next().unwrap_or(server).trim().trim_end_matches('/');
    let http = reqwest::Client::new();
    let page: Value = http.get(format!("{server}/v1/events?limit=1")).send().await?.json().await?;
    let head = page["head_seq"].as_u64().context("GET /v1/events did not say head_seq")?;
    if head < args.from_seq {
        bail!("the ledger holds {head} events; nothing to read from seq {}", args.from_seq);
    }
    let last = args.events.map_or(head, |events| (args.from_seq + events - 1).min(head));
    let wanted = last - args.from_seq + 1;
    let started = Instant::now();
    let response =
        http.get(format!("{server}/v1/subscribe?from_seq={}", args.from_seq)).send().await?.error_for_status()?;
    let mut body = response.bytes_stream();
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut lines = EventLines::default();
    'reading: while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        for &byte in chunk.iter() {
            if lines.push(byte) {
                received += 1;
                if received == wanted {
                    break 'reading;
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if received < wanted {
        bail!("the stream ended after {received} of {wanted} events");
    }
    let report = json!({
        "from_seq": args.from_seq,
        "events": received,
        "seconds": seconds,
        "events_per_second": received as f64 / seconds,
        "megabytes_per_second": bytes as f64 / seconds / 1e6,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Finds the `id:` lines of an SSE stream, one per event, byte by byte (a line may be split across
/// chunks). Heartbeats and other messages carry no `id:` line, so they are not counted.
struct EventLines {
    /// How much of `id:` the current line has matched so far; `None` once it cannot match.
    matched: Option<usize>,
}

impl Default for EventLines {
    /// The stream starts at the start of a line.
    fn default() -> EventLines {
        EventLines { matched: Some(0) }
    }
}

impl EventLines {
    const PREFIX: &'static [u8] = b"id:";

    /// Takes the next byte; true when it completes an `id:` at the start of a line.
    fn push(&mut self, byte: u8) -> bool {
        if byte == b'\n' {
            self.matched = Some(0);
            return false;
        }
        match self.matched {
            Some(count) if Self::PREFIX[count] == byte => {
                if count + 1 == Self::PREFIX.len() {
                    self.matched = None;
                    return true;
                }
                self.matched = Some(count + 1);
            }
            _ => self.matched = None,
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_id_lines_only() {
        // Two events; `id:` inside data and a heartbeat comment are not events.
        let stream = b"id: 1\nevent: a\ndata: {\"id:\":1}\n\n: heartbeat\n\nid: 2\nevent: b\ndata: {}\n\ni";
        let mut lines = EventLines::default();
        let found: Vec<usize> =
            stream.iter().enumerate().filter(|(_, &byte)| lines.push(byte)).map(|(at, _)| at).collect();
        // Each is counted at the `:` that completes its `id:`.
        assert_eq!(found, vec![2, 47]);
    }
}
