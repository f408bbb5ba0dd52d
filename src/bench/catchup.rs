//! `fleetlog bench catchup`: how fast a subscriber that fell behind reads the ledger back from
//! disk. One `GET /v1/subscribe?from_seq=…` stream, read until it has delivered every event up
//! to the head the server reported at the start.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cli::BenchCatchupArgs;

pub async fn run(server: &str, args: BenchCatchupArgs) -> Result<()> {
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
    // Each SSE message ends with an empty line, and event JSON holds no raw newline.
    let mut previous_was_newline = false;
    'reading: while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        for &byte in chunk.iter() {
            let newline = byte == b'\n';
            if newline && previous_was_newline {
                received += 1;
                if received == wanted {
                    break 'reading;
                }
            }
            previous_was_newline = newline;
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
