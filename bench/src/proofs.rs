//! `fleetlog bench proofs`: latency of checkpoints and RFC 9162 proofs against whatever ledger
//! the server holds (build a large one first with `bench append`). Every inclusion proof is
//! checked against the checkpoint's root, so a fast wrong answer cannot pass for a fast one.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use fleetlog_raft::domain::merkle::{self, Hash};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};

use crate::cli::BenchProofsArgs;

pub async fn run(server: &str, args: BenchProofsArgs) -> Result<()> {
    if args.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let http = crate::fleet::http_client(1)?;
    let base = server.trim_end_matches('/').to_string();
    let local = if args.local { "&consistency=local" } else { "" };
    let note = http.get(format!("{base}/v1/checkpoint")).send().await?.error_for_status()?.text().await?;
    let (size, root) = checkpoint_body(&note)?;
    if size == 0 {
        bail!("the ledger is empty; append events first (fleetlog bench append)");
    }
    let mut random = rand::thread_rng();
    let mut inclusion = Histogram::<u64>::new(3)?;
    let mut consistency = Histogram::<u64>::new(3)?;
    let mut past_checkpoint = Histogram::<u64>::new(3)?;
    let mut proof_lengths = 0usize;
    for _ in 0..args.requests {
        let seq = random.gen_range(1..=size);
        let proof =
            timed_get(&http, &format!("{base}/v1/proofs/inclusion?seq={seq}&tree_size={size}{local}"), &mut inclusion)
                .await?;
        // Checked outside the timing: the client's cost, not the server's.
        let hashes = hashes(&serde_json::from_slice(&proof)?)?;
        proof_lengths += hashes.len();
        let text = http.get(format!("{base}/v1/events/{seq}")).send().await?.error_for_status()?.text().await?;
        let (_, event) = fleetlog::verify::check_event_text(&text)?;
        merkle::verify_inclusion(seq - 1, size, &event.leaf, &hashes, &root)
            .with_context(|| format!("the server's inclusion proof of seq {seq} does not verify"))?;

        let from = random.gen_range(1..=size);
        let url = format!("{base}/v1/proofs/consistency?from_size={from}&to_size={size}{local}");
        timed_get(&http, &url, &mut consistency).await?;
        timed_get(&http, &format!("{base}/v1/checkpoint?tree_size={from}{local}"), &mut past_checkpoint).await?;
    }
    let summary = |histogram: &Histogram<u64>| {
        json!({
            "p50_us": histogram.value_at_quantile(0.5),
            "p99_us": histogram.value_at_quantile(0.99),
            "max_us": histogram.max(),
        })
    };
    let report = json!({
        "tree_size": size,
        "requests_each": args.requests,
        "consistency": if args.local { "local" } else { "linearizable" },
        "inclusion_proof": summary(&inclusion),
        "inclusion_hashes_mean": proof_lengths as f64 / args.requests as f64,
        "consistency_proof": summary(&consistency),
        "checkpoint_at_past_size": summary(&past_checkpoint),
        "inclusion_proofs_verified": args.requests,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// GETs `url`, records the time until the whole answer arrived, and returns it.
async fn timed_get(http: &reqwest::Client, url: &str, latencies: &mut Histogram<u64>) -> Result<bytes::Bytes> {
    let started = Instant::now();
    let body = http.get(url).send().await?.error_for_status()?.bytes().await?;
    latencies.record(started.elapsed().as_micros() as u64)?;
    Ok(body)
}

/// Size and root of a checkpoint's text (the signature is `fleetlog verify`'s business).
fn checkpoint_body(note: &str) -> Result<(u64, Hash)> {
    let mut lines = note.lines().skip(1);
    let size = lines.next().and_then(|line| line.parse().ok()).context("checkpoint without a size")?;
    let root = lines
        .next()
        .and_then(|line| BASE64.decode(line).ok())
        .and_then(|bytes| Hash::try_from(bytes).ok())
        .context("checkpoint without a root")?;
    Ok((size, root))
}

fn hashes(proof: &Value) -> Result<Vec<Hash>> {
    proof["hashes"]
        .as_array()
        .context("proof without hashes")?
        .iter()
        .map(|hash| {
            hash.as_str()
                .and_then(|text| BASE64.decode(text).ok())
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .context("proof hash is not 32 bytes of base64")
        })
        .collect()
}
