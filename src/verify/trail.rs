//! `fleetlog verify --release SERVICE@RELEASE`: the release's audit trail (created, blocked,
//! deployments and every wave with who and when, host reports, rollbacks to and away from it),
//! each event checked and proven included in a signed checkpoint.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use fleetlog_api::client::Client;
use fleetlog_raft::checkpoint::NoteVerifier;
use futures::StreamExt;
use serde_json::{json, Value};

use super::online::check_consistency;
use super::{check_event, fetch_checkpoint, prove_included, Witness};
use crate::cli::Output;
use crate::output::{cell, Table};

const PARALLEL_PROOFS: usize = 16;
const PAGE: u64 = 10_000;

pub async fn run(
    client: &Client,
    output: Output,
    verifier: &NoteVerifier,
    witness: &mut Witness,
    release_name: &str,
) -> Result<()> {
    let (service, release) = release_name
        .split_once('@')
        .filter(|(service, release)| !service.is_empty() && !release.is_empty())
        .context("--release is SERVICE@RELEASE, e.g. checkout@1.4.2")?;
    let events = collect(client, service, release).await?;

    // The checkpoint is fetched after the events, so it covers all of them.
    let (note, checkpoint) = fetch_checkpoint(client, verifier, None).await?;
    let consistency = check_consistency(client, verifier, witness, &checkpoint).await?;
    if let Some((&last, _)) = events.last_key_value() {
        if last > checkpoint.size {
            bail!("the checkpoint covers {} events but the trail reaches seq {last}; retry", checkpoint.size);
        }
    }
    let checkpoint_ref = &checkpoint;
    let proven = futures::stream::iter(events.values())
        .map(|event| async move {
            let checked = check_event(event)?;
            prove_included(client, checkpoint_ref, &checked).await?;
            Ok::<_, anyhow::Error>(checked.seq)
        })
        .buffer_unordered(PARALLEL_PROOFS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<u64>>>()?;
    witness.save(verifier.to_string(), note)?;

    match output {
        Output::Json => println!(
            "{}",
            json!({
                "service": service,
                "release": release,
                "verified": true,
                "tree_size": checkpoint.size,
                "root": BASE64.encode(checkpoint.root),
                "consistency": consistency,
                "events": events.values().collect::<Vec<_>>(),
            })
        ),
        Output::Table => {
            println!("audit trail of {service}@{release}");
            let mut table = Table::new(&["SEQ", "TIME", "ACTOR", "EVENT", "ENV", "DEPLOYMENT", "DETAIL", "PROOF"]);
            for event in events.values() {
                table.row(vec![
                    cell(&event["seq"]),
                    cell(&event["time"]),
                    cell(&event["actor"]),
                    cell(&event["type"]),
                    cell(&event["env"]),
                    cell(&event["deployment"]),
                    detail(event, release),
                    "ok".into(),
                ]);
            }
            print!("{}", table.render());
            println!(
                "{} events, each hash recomputed and proven included in checkpoint {} size {} root {} \
                 (signature ok; {consistency})",
                proven.len(),
                checkpoint.origin,
                checkpoint.size,
                BASE64.encode(checkpoint.root)
            );
        }
    }
    Ok(())
}

/// Every event of the release's trail by seq: the events naming the release, the events of its
/// deployments, and the release timeline's steps (rollbacks away from it name another release).
async fn collect(client: &Client, service: &str, release: &str) -> Result<BTreeMap<u64, Value>> {
    let releases = client.get(&format!("/v1/services/{service}/releases"), &[]).await?;
    let record = releases["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|record| record["release"] == release)
        .with_context(|| format!("{service} has no release {release:?}"))?;
    let mut events = BTreeMap::new();
    read_all(client, &[("service", service.to_string()), ("release", release.to_string())], &mut events).await?;
    let deployments = client
        .get(
            "/v1/deployments",
            &[("service", service.to_string()), ("release", release.to_string()), ("limit", "1000".into())],
        )
        .await?;
    for deployment in deployments["deployments"].as_array().into_iter().flatten() {
        if let Some(id) = deployment["deployment"].as_str() {
            read_all(client, &[("deployment", id.to_string())], &mut events).await?;
        }
    }
    for entry in record["timeline"].as_array().into_iter().flatten() {
        if let Some(seq) = entry["seq"].as_u64() {
            if let std::collections::btree_map::Entry::Vacant(slot) = events.entry(seq) {
                slot.insert(client.get(&format!("/v1/events/{seq}"), &[]).await?);
            }
        }
    }
    Ok(events)
}

async fn read_all(client: &Client, filter: &[(&str, String)], events: &mut BTreeMap<u64, Value>) -> Result<()> {
    let mut from_seq = 1u64;
    loop {
        let mut query = filter.to_vec();
        query.push(("from_seq", from_seq.to_string()));
        query.push(("limit", PAGE.to_string()));
        let page = client.get("/v1/events", &query).await?;
        for event in page["events"].as_array().into_iter().flatten() {
            let seq = event["seq"].as_u64().context("an event without a seq")?;
            events.insert(seq, event.clone());
        }
        let next = page["next_seq"].as_u64().context("a page without next_seq")?;
        let head = page["head_seq"].as_u64().context("a page without head_seq")?;
        if next <= from_seq || next > head {
            return Ok(());
        }
        from_seq = next;
    }
}

/// What the event did, in a few words.
fn detail(event: &Value, release: &str) -> String {
    let data = &event["data"];
    match event["type"].as_str().unwrap_or("") {
        "wave.started" | "wave.completed" => format!("wave {}", cell(&data["wave"])),
        "host.reported" => format!("{} {}", cell(&event["host"]), cell(&data["status"])),
        "rollback" if event["release"] == release => format!("rolled back to it: {}", cell(&data["reason"])),
        "rollback" => format!("rolled back to {}: {}", cell(&event["release"]), cell(&data["reason"])),
        "deployment.aborted" | "release.blocked" | "release.unblocked" => cell(&data["reason"]),
        _ => String::new(),
    }
}
