//! Offline verification of an export: every event's hash, the chain, and the Merkle root at the
//! checkpoint's size, recomputed from the NDJSON alone.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use fleetlog_raft::checkpoint::NoteVerifier;
use fleetlog_raft::event::GENESIS_HASH;
use fleetlog_raft::merkle::RootBuilder;
use serde_json::{json, Value};

use super::check_event;
use crate::cli::Output;

pub fn run(output: Output, export: &Path, checkpoint_file: &Path, verifier: &NoteVerifier) -> Result<()> {
    let note = std::fs::read_to_string(checkpoint_file)
        .with_context(|| format!("reading the checkpoint {}", checkpoint_file.display()))?;
    let checkpoint = verifier.open(&note).with_context(|| format!("MISMATCH: {}", checkpoint_file.display()))?;

    let (input, length): (Box<dyn Read>, Option<u64>) = if export.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(export).with_context(|| format!("opening {}", export.display()))?;
        let length = file.metadata().ok().map(|metadata| metadata.len());
        (Box::new(file), length)
    };
    let progress = match length {
        Some(length) if std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(length);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        }
        _ => indicatif::ProgressBar::hidden(),
    };
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, progress.wrap_read(input));
    let mut line = String::new();
    let mut tree = RootBuilder::new();
    let mut previous_hash = GENESIS_HASH;
    let mut root_checked = checkpoint.size == 0 && checkpoint.root == tree.root();
    let mut line_number = 0u64;
    loop {
        line.clear();
        if reader.read_line(&mut line).context("reading the export")? == 0 {
            break;
        }
        line_number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let event: Value =
            serde_json::from_str(&line).with_context(|| format!("MISMATCH: line {line_number} is not JSON"))?;
        let checked = check_event(&event).with_context(|| format!("line {line_number}"))?;
        let expected_seq = tree.size() + 1;
        if checked.seq != expected_seq {
            bail!(
                "MISMATCH: line {line_number} holds seq {}, but seq {expected_seq} comes next: events are missing, \
                 added or out of order{}",
                checked.seq,
                if expected_seq == 1 { " (an export to verify starts at seq 1)" } else { "" }
            );
        }
        if checked.prev_hash != previous_hash {
            bail!(
                "MISMATCH: seq {} does not link to the hash of seq {}: the chain is broken",
                checked.seq,
                checked.seq - 1
            );
        }
        previous_hash = checked.hash;
        tree.push(checked.leaf);
        if tree.size() == checkpoint.size {
            if tree.root() != checkpoint.root {
                bail!(
                    "MISMATCH: the root of the first {} events is {}, but the checkpoint says {}",
                    checkpoint.size,
                    BASE64.encode(tree.root()),
                    BASE64.encode(checkpoint.root)
                );
            }
            root_checked = true;
        }
    }
    progress.finish_and_clear();
    if !root_checked {
        bail!(
            "MISMATCH: the export holds {} events, fewer than the {} the checkpoint covers",
            tree.size(),
            checkpoint.size
        );
    }
    let elapsed = started.elapsed();
    let rate = tree.size() as f64 / elapsed.as_secs_f64().max(1e-9);
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "verified": true,
                "events": tree.size(),
                "checkpoint_size": checkpoint.size,
                "root": BASE64.encode(checkpoint.root),
                "seconds": elapsed.as_secs_f64(),
                "events_per_second": rate.round(),
            })
        ),
        Output::Table => {
            println!(
                "{} events: every hash and chain link recomputed; the root of the first {} matches the checkpoint \
                 signed by {}",
                tree.size(),
                checkpoint.size,
                verifier.name()
            );
            if tree.size() > checkpoint.size {
                println!(
                    "the {} events after the checkpoint are chained but not covered by it",
                    tree.size() - checkpoint.size
                );
            }
            println!("verified in {:.2} s ({:.0} events/s)", elapsed.as_secs_f64(), rate);
        }
    }
    Ok(())
}
