//! Offline verification of an export: every event's hash, the chain, and the Merkle root at the
//! checkpoint's size, recomputed from the NDJSON alone.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use fleetlog_raft::domain::checkpoint::NoteVerifier;
use fleetlog_raft::domain::event::GENESIS_HASH;
use fleetlog_raft::domain::merkle::RootBuilder;
use serde_json::json;

use super::{check_event_text, CheckedEvent};
use crate::cli::Output;

pub fn run(output: Output, export: &Path, checkpoint_file: &Path, verifier: &NoteVerifier) -> Result<()> {
    let note = std::fs::read_to_string(checkpoint_file)
        .with_context(|| format!("reading the checkpoint {}", checkpoint_file.display()))?;
    let checkpoint = verifier.open(&note).with_context(|| format!("MISMATCH: {}", checkpoint_file.display()))?;

    let (input, length): (Box<dyn Read + Send>, Option<u64>) = if export.as_os_str() == "-" {
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
    let reader = BufReader::with_capacity(1 << 20, progress.wrap_read(input));
    let mut tree = RootBuilder::new();
    let mut previous_hash = GENESIS_HASH;
    let mut root_checked = checkpoint.size == 0 && checkpoint.root == tree.root();
    // Parsing and hashing run on every core; the chain and the tree take the results in order.
    check_in_parallel(reader, &mut |line_number, checked| {
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
        Ok(())
    })?;
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

/// Lines handed to a worker at once.
const BATCH_LINES: usize = 2_048;

/// The checks of one batch: line number and the event it holds (`None`: a blank line).
type Checked = Vec<(u64, Result<Option<CheckedEvent>>)>;

/// Reads `input` line by line on one thread, checks each line's event on a worker per core, and
/// calls `in_order` for every event in line order. Stops at the first failure in line order.
fn check_in_parallel(
    input: impl BufRead + Send,
    in_order: &mut dyn FnMut(u64, CheckedEvent) -> Result<()>,
) -> Result<()> {
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    std::thread::scope(|scope| {
        let (work_sender, work_receiver) = mpsc::sync_channel::<(u64, u64, Vec<String>)>(workers * 2);
        let work_receiver = Arc::new(Mutex::new(work_receiver));
        let (done_sender, done_receiver) = mpsc::channel::<(u64, Checked)>();
        let reading = scope.spawn(move || read_batches(input, &work_sender));
        for _ in 0..workers {
            let (work, done) = (work_receiver.clone(), done_sender.clone());
            scope.spawn(move || loop {
                // The lock is held only while taking a batch.
                let next = work.lock().map(|receiver| receiver.recv());
                let Ok(Ok((index, first_line, lines))) = next else {
                    return;
                };
                if done.send((index, check_lines(first_line, &lines))).is_err() {
                    return; // The consumer stopped at a failure.
                }
            });
        }
        drop(done_sender);
        let mut waiting = BTreeMap::new();
        let mut next_batch = 0u64;
        for (index, checked) in done_receiver {
            waiting.insert(index, checked);
            while let Some(checked) = waiting.remove(&next_batch) {
                for (line_number, result) in checked {
                    if let Some(event) = result? {
                        in_order(line_number, event)?;
                    }
                }
                next_batch += 1;
            }
        }
        reading.join().map_err(|_| anyhow::anyhow!("the export reader panicked"))?
    })
}

/// Sends the input's lines in numbered batches until the input ends or nobody takes them.
fn read_batches(mut input: impl BufRead, work: &mpsc::SyncSender<(u64, u64, Vec<String>)>) -> Result<()> {
    let (mut index, mut line_number) = (0u64, 0u64);
    loop {
        let first_line = line_number + 1;
        let mut lines = Vec::with_capacity(BATCH_LINES);
        while lines.len() < BATCH_LINES {
            let mut line = String::new();
            if input.read_line(&mut line).context("reading the export")? == 0 {
                break;
            }
            line_number += 1;
            lines.push(line);
        }
        if lines.is_empty() {
            return Ok(());
        }
        if work.send((index, first_line, lines)).is_err() {
            return Ok(()); // The consumer stopped at a failure.
        }
        index += 1;
    }
}

fn check_lines(first_line: u64, lines: &[String]) -> Checked {
    lines
        .iter()
        .zip(first_line..)
        .map(|(line, number)| {
            if line.trim().is_empty() {
                return (number, Ok(None));
            }
            let text = line.strip_suffix('\n').unwrap_or(line);
            let checked =
                check_event_text(text).map(|(_, checked)| Some(checked)).with_context(|| format!("line {number}"));
            (number, checked)
        })
        .collect()
}
