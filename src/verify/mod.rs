//! `fleetlog verify`: checks the ledger without trusting the server.
//!
//! - `online`: the signed checkpoint against a pinned key, consistency with the checkpoint seen
//!   last time (kept in a witness file), inclusion of sampled or named events.
//! - `offline`: an NDJSON export, event by event: hashes, chain, and the Merkle root compared
//!   with a signed checkpoint.
//! - `trail`: the audit trail of one release, every event proven included.
//!
//! Everything is recomputed here from the events' JSON (RFC 8785, SHA-256, RFC 9162, Ed25519);
//! nothing the server says about hashes is taken on trust.

mod offline;
mod online;
mod trail;
mod witness;

use anyhow::{bail, Context, Result};
use fleetlog_api::client::Client;
use fleetlog_raft::domain::canonical;
use fleetlog_raft::domain::checkpoint::{Checkpoint, NoteVerifier};
use fleetlog_raft::domain::merkle::{self, Hash};
use fleetlog_types as types;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cli::{Output, VerifyArgs};

pub use witness::Witness;

pub async fn run(client: &Client, output: Output, args: VerifyArgs) -> Result<()> {
    let mut witness = Witness::load(args.state.clone())?;
    let verifier = pinned_key(args.key.as_deref(), &witness)?;
    if let Some(export) = &args.export {
        let checkpoint = args.checkpoint.as_ref().context("--export needs --checkpoint FILE to compare with")?;
        return offline::run(output, export, checkpoint, &verifier);
    }
    match &args.release {
        Some(release) => trail::run(client, output, &verifier, &mut witness, release).await,
        None => online::run(client, output, &verifier, &mut witness, &args).await,
    }
}

/// The key checkpoints must be signed by: `--key`, else the one the witness file pinned.
fn pinned_key(given: Option<&str>, witness: &Witness) -> Result<NoteVerifier> {
    let verifier = match (given, witness.key()) {
        (Some(given), pinned) => {
            let verifier = NoteVerifier::parse(given).context("--key")?;
            if let Some(pinned) = pinned {
                if pinned != verifier.to_string() {
                    bail!(
                        "{} pins the key {pinned}, not {verifier}; use another --state file for another cluster",
                        witness.path().display()
                    );
                }
            }
            verifier
        }
        (None, Some(pinned)) => NoteVerifier::parse(pinned).with_context(|| format!("{}", witness.path().display()))?,
        (None, None) => bail!(
            "no pinned checkpoint key: give --key (`fleetlog cluster status` prints it; GET /v1/checkpoint/key serves it)"
        ),
    };
    Ok(verifier)
}

/// Fetches the latest checkpoint and checks its signature.
async fn fetch_checkpoint(client: &Client, verifier: &NoteVerifier) -> Result<(String, Checkpoint)> {
    let note = client.get_text("/v1/checkpoint", &[]).await.context("fetching the checkpoint")?;
    let checkpoint = verifier.open(&note).context("MISMATCH: the server's checkpoint")?;
    Ok((note, checkpoint))
}

/// What an event's JSON proves once recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEvent {
    pub seq: u64,
    pub hash: Hash,
    pub prev_hash: Hash,
    /// RFC 9162 leaf hash of the event's canonical JSON.
    pub leaf: Hash,
}

/// Checks one event as served: its text must be exactly its RFC 8785 form (so there is only one
/// way to read it: no duplicate key, no spacing, no other number form), its hash must be the
/// SHA-256 of that form without `hash`, and its Merkle leaf is the hash of the text itself.
pub fn check_event_text(text: &str) -> Result<(types::Event, CheckedEvent)> {
    // Read twice: as the event type for what it says, and as a JSON object for what its hash
    // covers, which is every member but `hash`, whichever members the server writes.
    let mut content: Value = serde_json::from_str(text).context("MISMATCH: the event is not JSON")?;
    let event = types::Event::deserialize(&content).context("MISMATCH: the text is not an event")?;
    let seq = event.seq;
    if seq == 0 {
        bail!("MISMATCH: an event has a seq ≥ 1");
    }
    let served = canonical::to_canonical_string(&content).with_context(|| format!("seq {seq}"))?;
    if served != text {
        bail!(
            "MISMATCH: seq {seq} is not in its canonical form (RFC 8785), so readers could disagree on what it \
             says (a repeated key, spacing or another number form)"
        );
    }
    let stated = hex_hash(&event.hash, "hash").with_context(|| format!("seq {seq}"))?;
    let prev_hash = hex_hash(&event.prev_hash, "prev_hash").with_context(|| format!("seq {seq}"))?;
    if let Some(members) = content.as_object_mut() {
        members.remove("hash");
    }
    let content = canonical::to_canonical_string(&content).with_context(|| format!("seq {seq}"))?;
    let computed: Hash = Sha256::digest(content.as_bytes()).into();
    if computed != stated {
        bail!(
            "MISMATCH: seq {seq}: the event's content hashes to {}, but it says {}: the event was altered",
            hex::encode(computed),
            hex::encode(stated)
        );
    }
    let checked = CheckedEvent { seq, hash: stated, prev_hash, leaf: merkle::leaf_hash(text.as_bytes()) };
    Ok((event, checked))
}

fn hex_hash(text: &str, name: &str) -> Result<Hash> {
    let bytes = hex::decode(text).ok().and_then(|bytes| <Hash>::try_from(bytes).ok());
    bytes.with_context(|| format!("{name} is not 64 hex digits"))
}

/// The base64 hashes of a proof.
fn proof_hashes(hashes: &[String]) -> Result<Vec<Hash>> {
    use base64::Engine;
    hashes
        .iter()
        .map(|hash| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(hash)
                .ok()
                .and_then(|bytes| <Hash>::try_from(bytes).ok());
            bytes.context("a proof hash is not 32 bytes of base64")
        })
        .collect()
}

/// Fetches event `seq` as served, checks it, and proves it is leaf `seq - 1` of `checkpoint`.
async fn prove_event(client: &Client, checkpoint: &Checkpoint, seq: u64) -> Result<(types::Event, CheckedEvent)> {
    let (event, checked) = fetch_event(client, seq).await?;
    prove_included(client, checkpoint, &checked).await?;
    Ok((event, checked))
}

/// Fetches event `seq` as text and checks it.
async fn fetch_event(client: &Client, seq: u64) -> Result<(types::Event, CheckedEvent)> {
    let text =
        client.get_text(&format!("/v1/events/{seq}"), &[]).await.with_context(|| format!("fetching seq {seq}"))?;
    let (event, checked) = check_event_text(&text)?;
    if checked.seq != seq {
        bail!("MISMATCH: asked for seq {seq}, the server sent seq {}", checked.seq);
    }
    Ok((event, checked))
}

/// Fetches the audit path of a checked event and verifies it against the checkpoint's root.
async fn prove_included(client: &Client, checkpoint: &Checkpoint, checked: &CheckedEvent) -> Result<()> {
    let seq = checked.seq;
    let query = [("seq", seq.to_string()), ("tree_size", checkpoint.size.to_string())];
    let proof: types::InclusionProof =
        client.get_as("/v1/proofs/inclusion", &query).await.with_context(|| format!("proof of seq {seq}"))?;
    let hashes = proof_hashes(&proof.hashes)?;
    merkle::verify_inclusion(seq - 1, checkpoint.size, &checked.leaf, &hashes, &checkpoint.root).map_err(|error| {
        anyhow::anyhow!("MISMATCH: seq {seq} is not proven in the checkpoint of size {}: {error}", checkpoint.size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        let mut event = json!({
            "seq": 1, "id": "e1", "stream": "_global", "version": 0, "type": "app.thing",
            "time": "2026-11-28T06:00:00.000000Z", "actor": "anonymous", "service": null, "env": null,
            "release": null, "deployment": null, "host": null, "data": {"n": 1.5},
            "prev_hash": "0".repeat(64),
        });
        let content = canonical::to_canonical_string(&event).unwrap();
        let hash = hex::encode(Sha256::digest(content.as_bytes()));
        event["hash"] = Value::String(hash);
        event
    }

    fn text(event: &Value) -> String {
        canonical::to_canonical_string(event).unwrap()
    }

    #[test]
    fn an_event_checks_and_its_leaf_is_the_served_text() {
        let served = text(&event());
        let (parsed, checked) = check_event_text(&served).unwrap();
        assert_eq!(parsed, serde_json::from_value::<types::Event>(event()).unwrap());
        assert_eq!(checked.seq, 1);
        assert_eq!(checked.prev_hash, [0; 32]);
        assert_eq!(checked.leaf, merkle::leaf_hash(served.as_bytes()));
    }

    #[test]
    fn any_edit_of_an_event_is_caught() {
        for (field, value) in [("actor", json!("mallory")), ("data", json!({"n": 2})), ("seq", json!(2))] {
            let mut edited = event();
            edited[field] = value;
            let error = check_event_text(&text(&edited)).unwrap_err().to_string();
            assert!(error.contains("MISMATCH"), "{field}: {error}");
        }
        let mut no_hash = event();
        no_hash.as_object_mut().unwrap().remove("hash");
        assert!(check_event_text(&text(&no_hash)).is_err());
    }

    #[test]
    fn only_the_canonical_text_is_accepted() {
        let served = text(&event());
        let repeated = served.replacen(r#"{"actor":"anonymous","#, r#"{"actor":"mallory","actor":"anonymous","#, 1);
        let spaced = served.replacen(r#""actor":"#, r#""actor": "#, 1);
        let number = served.replacen(r#""n":1.5"#, r#""n":15e-1"#, 1);
        for variant in [repeated, spaced, number, format!("{served}\n")] {
            let error = check_event_text(&variant).unwrap_err().to_string();
            assert!(error.contains("canonical form"), "{variant}: {error}");
        }
    }
}
