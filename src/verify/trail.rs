//! `fleetlog verify --release SERVICE@RELEASE`: the release's audit trail (created, blocked,
//! deployments and every wave with who and when, host reports, rollbacks to and away from it),
//! each event checked and proven included in a signed checkpoint.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use fleetlog_api::client::Client;
use fleetlog_raft::domain::checkpoint::NoteVerifier;
use fleetlog_types as types;
use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::online::check_consistency;
use super::{check_event_text, fetch_checkpoint, prove_included, Witness};
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
    let texts = collect(client, service, release).await?;
    // Checked as served: the text, not a parsed copy, is what the ledger hashed.
    let mut events = BTreeMap::new();
    let mut checked = Vec::with_capacity(texts.len());
    for (seq, text) in &texts {
        let (event, event_checked) = check_event_text(text)?;
        if event_checked.seq != *seq {
            bail!("MISMATCH: asked for seq {seq}, the server sent seq {}", event_checked.seq);
        }
        events.insert(*seq, event);
        checked.push(event_checked);
    }

    // The checkpoint is fetched after the events, so it covers all of them.
    let (note, checkpoint) = fetch_checkpoint(client, verifier).await?;
    let consistency = check_consistency(client, verifier, witness, &checkpoint).await?;
    if let Some((&last, _)) = events.last_key_value() {
        if last > checkpoint.size {
            bail!("the checkpoint covers {} events but the trail reaches seq {last}; retry", checkpoint.size);
        }
    }
    let checkpoint_ref = &checkpoint;
    let proven = futures::stream::iter(checked.iter())
        .map(|event| async move {
            prove_included(client, checkpoint_ref, event).await?;
            Ok::<_, anyhow::Error>(event.seq)
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
                // As the server sent them.
                "events": texts.values().map(|text| RawValue::from_string(text.clone())).collect::<Result<Vec<_>, _>>()?,
            })
        ),
        Output::Table => {
            println!("audit trail of {service}@{release}");
            let mut table = Table::new(&["SEQ", "TIME", "ACTOR", "EVENT", "ENV", "DEPLOYMENT", "DETAIL", "PROOF"]);
            for event in events.values() {
                table.row(vec![
                    cell(&event.seq),
                    cell(&event.time),
                    cell(&event.actor),
                    cell(&event.event_type),
                    cell(&event.env),
                    cell(&event.deployment),
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

/// The text of every event of the release's trail by seq: the events naming the release, the
/// events of its deployments, and the release timeline's steps (rollbacks away from it name
/// another release).
async fn collect(client: &Client, service: &str, release: &str) -> Result<BTreeMap<u64, String>> {
    let releases: types::ReleasesView = client.get_as(&format!("/v1/services/{service}/releases"), &[]).await?;
    let record = releases
        .releases
        .iter()
        .find(|record| record.release == release)
        .with_context(|| format!("{service} has no release {release:?}"))?;
    let mut events = BTreeMap::new();
    read_all(client, &[("service", service.to_string()), ("release", release.to_string())], &mut events).await?;
    let deployments: types::DeploymentList = client
        .get_as(
            "/v1/deployments",
            &[("service", service.to_string()), ("release", release.to_string()), ("limit", "1000".into())],
        )
        .await?;
    for deployment in &deployments.deployments {
        read_all(client, &[("deployment", deployment.deployment.clone())], &mut events).await?;
    }
    for entry in &record.timeline {
        if let std::collections::btree_map::Entry::Vacant(slot) = events.entry(entry.seq) {
            slot.insert(client.get_text(&format!("/v1/events/{}", entry.seq), &[]).await?);
        }
    }
    Ok(events)
}

async fn read_all(client: &Client, filter: &[(&str, String)], events: &mut BTreeMap<u64, String>) -> Result<()> {
    let mut from_seq = 1u64;
    loop {
        let mut query = filter.to_vec();
        query.push(("from_seq", from_seq.to_string()));
        query.push(("limit", PAGE.to_string()));
        let text = client.get_text("/v1/events", &query).await?;
        // Each event kept as the exact text served: that text is what its hash covers.
        let page: types::EventPage<Box<RawValue>> =
            serde_json::from_str(&text).context("a page of events is malformed")?;
        for event in page.events {
            let seq = serde_json::from_str::<types::Event>(event.get()).context("an event is malformed")?.seq;
            events.insert(seq, event.get().to_string());
        }
        if page.next_seq <= from_seq || page.next_seq > page.head_seq {
            return Ok(());
        }
        from_seq = page.next_seq;
    }
}

/// What the event did, in a few words.
fn detail(event: &types::Event, release: &str) -> String {
    let data: StepData = serde_json::from_value(Value::Object(event.data.clone())).unwrap_or_default();
    match event.event_type.as_str() {
        "wave.started" | "wave.completed" => format!("wave {}", cell(&data.wave)),
        "host.reported" => format!("{} {}", cell(&event.host), cell(&data.status)),
        "rollback" if event.release.as_deref() == Some(release) => format!("rolled back to it: {}", cell(&data.reason)),
        "rollback" => format!("rolled back to {}: {}", cell(&event.release), cell(&data.reason)),
        "deployment.aborted" | "release.blocked" | "release.unblocked" => cell(&data.reason),
        _ => String::new(),
    }
}

/// The members of a domain event's `data` the trail shows.
#[derive(Default, serde::Deserialize)]
struct StepData {
    wave: Option<String>,
    status: Option<String>,
    reason: Option<String>,
}
