//! Online verification: the latest checkpoint, its consistency with the last one seen, and the
//! inclusion of sampled or named events.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use fleetlog_api::client::Client;
use fleetlog_raft::domain::checkpoint::{Checkpoint, NoteVerifier};
use fleetlog_raft::domain::merkle;
use fleetlog_types as types;
use futures::StreamExt;
use rand::Rng;
use serde_json::json;

use super::{fetch_checkpoint, fetch_event, proof_hashes, prove_event, Witness};
use crate::cli::{Output, VerifyArgs};

/// Requests in flight while proving events.
const PARALLEL_PROOFS: usize = 8;

pub async fn run(
    client: &Client,
    output: Output,
    verifier: &NoteVerifier,
    witness: &mut Witness,
    args: &VerifyArgs,
) -> Result<()> {
    let (note, checkpoint) = fetch_checkpoint(client, verifier).await?;
    let consistency = check_consistency(client, verifier, witness, &checkpoint).await?;
    let seqs = chosen_seqs(&args.seq, args.sample, checkpoint.size)?;
    let proven: Vec<u64> = futures::stream::iter(seqs.iter().copied())
        .map(|seq| prove_with_link(client, &checkpoint, seq))
        .buffer_unordered(PARALLEL_PROOFS)
        .collect::<Vec<Result<u64>>>()
        .await
        .into_iter()
        .collect::<Result<Vec<u64>>>()?;
    witness.save(verifier.to_string(), note)?;
    let root = BASE64.encode(checkpoint.root);
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "verified": true,
                "origin": checkpoint.origin,
                "tree_size": checkpoint.size,
                "root": root,
                "consistency": consistency,
                "proven_seqs": seqs,
            })
        ),
        Output::Table => {
            println!("checkpoint   {} size {} root {root}: signature ok", checkpoint.origin, checkpoint.size);
            println!("consistency  {consistency}");
            println!(
                "inclusion    {} events proven (hash, link to the previous event, audit path): {}",
                proven.len(),
                summarize(&seqs)
            );
            println!("verified; witness saved in {}", witness.path().display());
        }
    }
    Ok(())
}

/// Checks `checkpoint` against the one the witness accepted last time: the log may only grow,
/// and the old tree must be a prefix of the new one.
pub(super) async fn check_consistency(
    client: &Client,
    verifier: &NoteVerifier,
    witness: &Witness,
    checkpoint: &Checkpoint,
) -> Result<String> {
    let Some(previous_note) = witness.checkpoint() else {
        return Ok(format!("no earlier checkpoint in {}: this one becomes the reference", witness.path().display()));
    };
    let previous = verifier
        .open(previous_note)
        .with_context(|| format!("the checkpoint saved in {}", witness.path().display()))?;
    if previous.size > checkpoint.size {
        bail!(
            "MISMATCH: the log shrank from {} events (seen earlier) to {}: history was rolled back or forked",
            previous.size,
            checkpoint.size
        );
    }
    if previous.size == checkpoint.size {
        if previous.root != checkpoint.root {
            bail!("MISMATCH: two different signed roots for {} events: the log forked", checkpoint.size);
        }
        return Ok(format!("same tree as the checkpoint seen earlier ({} events)", checkpoint.size));
    }
    if previous.size == 0 {
        return Ok("the earlier checkpoint was of the empty log".to_string());
    }
    let query = [("from_size", previous.size.to_string()), ("to_size", checkpoint.size.to_string())];
    let proof: types::ConsistencyProof =
        client.get_as("/v1/proofs/consistency", &query).await.context("fetching the consistency proof")?;
    let hashes = proof_hashes(&proof.hashes)?;
    merkle::verify_consistency(previous.size, checkpoint.size, &previous.root, &checkpoint.root, &hashes).map_err(
        |error| {
            anyhow::anyhow!(
                "MISMATCH: the log of {} events seen earlier is not a prefix of the log of {}: {error}",
                previous.size,
                checkpoint.size
            )
        },
    )?;
    Ok(format!("{} → {} events: proof of {} hashes ok", previous.size, checkpoint.size, hashes.len()))
}

/// Proves `seq` and that its `prev_hash` is the hash of the event before it.
async fn prove_with_link(client: &Client, checkpoint: &Checkpoint, seq: u64) -> Result<u64> {
    let (_, checked) = prove_event(client, checkpoint, seq).await?;
    let expected_previous =
        if seq == 1 { fleetlog_raft::domain::event::GENESIS_HASH } else { fetch_event(client, seq - 1).await?.1.hash };
    if checked.prev_hash != expected_previous {
        bail!("MISMATCH: seq {seq} does not link to the hash of seq {}", seq - 1);
    }
    Ok(seq)
}

/// The named seqs, or `sample` random ones plus the first and the last.
fn chosen_seqs(named: &[u64], sample: usize, size: u64) -> Result<BTreeSet<u64>> {
    if let Some(outside) = named.iter().find(|seq| **seq == 0 || **seq > size) {
        bail!("seq {outside} is not in the checkpoint's tree of {size} events");
    }
    if !named.is_empty() {
        return Ok(named.iter().copied().collect());
    }
    let mut seqs = BTreeSet::new();
    if size == 0 {
        return Ok(seqs);
    }
    seqs.insert(1);
    seqs.insert(size);
    let mut random = rand::thread_rng();
    while seqs.len() < (sample + 2).min(size as usize) {
        seqs.insert(random.gen_range(1..=size));
    }
    Ok(seqs)
}

fn summarize(seqs: &BTreeSet<u64>) -> String {
    let shown: Vec<String> = seqs.iter().take(12).map(u64::to_string).collect();
    let more = seqs.len().saturating_sub(12);
    if more > 0 {
        format!("seqs {} and {more} more", shown.join(", "))
    } else {
        format!("seqs {}", shown.join(", "))
    }
}
