//! The audit surface end to end: signed checkpoints, RFC 9162 proofs, the NDJSON export, the
//! fleet's changes between past moments, and `fleetlog verify` catching every kind of rewrite.
//!
//! Proofs and roots are checked here with a Merkle implementation of the test's own (written
//! from RFC 9162's definitions), never with the product's, so a mistake shared by the server and
//! `fleetlog verify` still fails a test.

mod common;
#[path = "common/unjoined.rs"]
mod unjoined;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::rfc9162::{
    consistency_holds, consistency_path, inclusion_holds, inclusion_path, leaf_hash, tree_root, Hash,
};
use common::{binary, deploy_fully, seed_fleet, Server};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ----- the CLI ---------------------------------------------------------------------------------

/// What one run of `fleetlog` printed and how it ended.
struct CliRun {
    what: String,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl CliRun {
    fn describe(&self) -> String {
        format!("fleetlog {} → {}\nstdout:\n{}\nstderr:\n{}", self.what, self.status, self.stdout, self.stderr)
    }

    /// Exit 0; returns stdout.
    fn succeeded(&self) -> &str {
        assert!(self.status.success(), "expected success: {}", self.describe());
        &self.stdout
    }

    /// A non-zero exit whose stderr carries every one of `phrases`.
    fn failed_with(&self, phrases: &[&str]) {
        assert!(!self.status.success(), "expected a failure: {}", self.describe());
        assert_ne!(self.status.code(), None, "killed by a signal instead of failing: {}", self.describe());
        for phrase in phrases {
            assert!(self.stderr.contains(phrase), "stderr lacks {phrase:?}: {}", self.describe());
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.succeeded()).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.describe()))
    }
}

/// Runs `fleetlog --server URL ARGS…`. The checkpoint key never comes from the environment,
/// so a test that leaves `--key` out really relies on the state file.
fn fleetlog(url: &str, args: &[&str]) -> CliRun {
    let output = Command::new(binary())
        .args(["--server", url])
        .args(args)
        .env_remove("FLEETLOG_CHECKPOINT_KEY")
        .env_remove("FLEETLOG_SERVER")
        .output()
        .expect("run fleetlog");
    CliRun {
        what: args.join(" "),
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

// ----- HTTP ------------------------------------------------------------------------------------

/// A GET whose body is text: status, body and the response's content type.
async fn get_text(server: &Server, path: &str) -> (u16, String, String) {
    let response = server.http.get(format!("{}{path}", server.url)).send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, response.text().await.unwrap(), content_type)
}

/// GET `path` must answer `status` with the error `code`.
async fn expect_error(server: &Server, path: &str, status: u16, code: &str) {
    let (got, body) = server.get(path).await;
    assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "GET {path} → {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "GET {path} → {body}");
}

async fn checkpoint_key(server: &Server) -> String {
    let (status, key, _) = get_text(server, "/v1/checkpoint/key").await;
    assert_eq!(status, 200, "{key}");
    key.trim_end().to_string()
}

async fn checkpoint(server: &Server, query: &str) -> String {
    let (status, note, content_type) = get_text(server, &format!("/v1/checkpoint{query}")).await;
    assert_eq!(status, 200, "GET /v1/checkpoint{query} → {note}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    note
}

/// The NDJSON export, split into lines (without their newlines), and its `x-fleetlog-last-seq`.
async fn export(server: &Server, query: &str) -> (Vec<String>, u64) {
    let response = server.http.get(format!("{}/v1/export{query}", server.url)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET /v1/export{query}");
    assert_eq!(response.headers()[reqwest::header::CONTENT_TYPE], "application/x-ndjson");
    let last_seq: u64 = response.headers()["x-fleetlog-last-seq"].to_str().unwrap().parse().unwrap();
    let body = response.text().await.unwrap();
    assert!(body.is_empty() || body.ends_with('\n'), "every line ends with a newline");
    (body.lines().map(str::to_string).collect(), last_seq)
}

/// Appends custom events (one batch), returning the seq of the last.
async fn append_notes(server: &Server, side: &str, count: usize) -> u64 {
    let events: Vec<Value> =
        (0..count).map(|number| json!({"type": "app.note", "data": {"side": side, "n": number}})).collect();
    let appended = server.ok("/v1/events", &json!({ "events": events })).await;
    appended["last_seq"].as_u64().unwrap()
}

/// A typed command's seq.
async fn command(server: &Server, path: &str, body: Value) -> u64 {
    server.ok(path, &body).await["seq"].as_u64().unwrap()
}

async fn report(server: &Server, host: &str, release: &str, status: &str) -> u64 {
    let body = json!({"host": host, "service": "shop", "env": "prod", "release": release, "status": status,
                      "applied_seq": 1, "message": format!("{host} {status} {release}")});
    command(server, "/v1/reports", body).await
}

fn decode_hashes(proof: &Value) -> Vec<Hash> {
    proof["hashes"]
        .as_array()
        .unwrap_or_else(|| panic!("a proof without hashes: {proof}"))
        .iter()
        .map(|hash| BASE64.decode(hash.as_str().unwrap()).unwrap().try_into().expect("a 32-byte hash"))
        .collect()
}

// ----- checkpoints -----------------------------------------------------------------------------

/// The parts of a signed note: origin, size, root, and the signature line's name and blob.
struct Note {
    origin: String,
    size: u64,
    root: Hash,
    signer: String,
    blob: Vec<u8>,
    /// The signed text: the three lines, each with its newline.
    body: String,
}

fn parse_note(note: &str) -> Note {
    assert!(note.ends_with('\n'), "{note:?}");
    let lines: Vec<&str> = note.split('\n').collect();
    assert_eq!(lines.len(), 6, "origin, size, root, blank, signature, and the final newline: {note:?}");
    assert_eq!(lines[3], "", "a blank line ends the signed text: {note:?}");
    assert_eq!(lines[5], "", "{note:?}");
    let signature = lines[4].strip_prefix("\u{2014} ").unwrap_or_else(|| panic!("signature line {:?}", lines[4]));
    let (signer, encoded) = signature.split_once(' ').unwrap();
    Note {
        origin: lines[0].to_string(),
        size: lines[1].parse().unwrap(),
        root: BASE64.decode(lines[2]).unwrap().try_into().expect("a 32-byte root"),
        signer: signer.to_string(),
        blob: BASE64.decode(encoded).unwrap(),
        body: format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
    }
}

/// A note with its signature blob replaced.
fn with_blob(note: &str, blob: &[u8]) -> String {
    let start = note.rfind('\u{2014}').unwrap();
    let line = note[start..].trim_end();
    let (prefix, _) = line.rsplit_once(' ').unwrap();
    format!("{}{prefix} {}\n", &note[..start], BASE64.encode(blob))
}

/// A verifier string `name+hexid+base64(0x01 || key)` split into its name, key id and key.
/// The name holds no '+' and the key id is hex, so the split is at the first two '+' signs: the
/// base64 key may hold '+' digits of its own.
fn parse_verifier(verifier: &str) -> (String, [u8; 4], [u8; 32]) {
    let mut parts = verifier.splitn(3, '+');
    let (name, id, encoded) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let key = BASE64.decode(encoded).unwrap();
    assert_eq!(key.len(), 33, "an algorithm byte and 32 key bytes: {verifier}");
    assert_eq!(key[0], 0x01, "Ed25519: {verifier}");
    (name.to_string(), hex::decode(id).unwrap().try_into().unwrap(), key[1..].try_into().unwrap())
}

// ----- event edits -----------------------------------------------------------------------------

/// The event of an export line with `edit` applied and its own `hash` recomputed (SHA-256 of the
/// JCS of the event without `hash`), written back as canonical JSON: a self-consistent forgery.
fn rehashed(line: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut event: Value = serde_json::from_str(line).unwrap();
    edit(&mut event);
    let object = event.as_object_mut().unwrap();
    object.remove("hash");
    let content = fleetlog_raft::domain::canonical::to_canonical_string(&Value::Object(object.clone())).unwrap();
    object.insert("hash".into(), Value::String(hex::encode(Sha256::digest(content.as_bytes()))));
    fleetlog_raft::domain::canonical::to_canonical_string(&event).unwrap()
}

/// The event of an export line with `edit` applied and nothing else changed.
fn edited(line: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut event: Value = serde_json::from_str(line).unwrap();
    edit(&mut event);
    fleetlog_raft::domain::canonical::to_canonical_string(&event).unwrap()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

// ----- tests -----------------------------------------------------------------------------------

/// An export and a checkpoint verify offline; every way of rewriting either one is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_verify_detects_every_kind_of_tampering() {
    let server = Server::start().await;
    let scratch = tempfile::TempDir::new().unwrap();
    let state = scratch.path().join("witness.json");

    // Domain events of every kind, and custom events whose data stresses canonical JSON.
    seed_fleet(&server).await;
    server
        .ok(
            "/v1/deployments",
            &json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0",
                    "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]}),
        )
        .await;
    for wave in ["canary", "rest"] {
        server.ok(&format!("/v1/deployments/d-2/waves/{wave}/start"), &json!({})).await;
        report(&server, "web-1", "2.0", "running").await;
        server.ok(&format!("/v1/deployments/d-2/waves/{wave}/complete"), &json!({})).await;
    }
    report(&server, "web-3", "2.0", "failed").await;
    server.ok("/v1/deployments/d-2/complete", &json!({"force_reason": "web-3 is being replaced"})).await;
    server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "reason": "errors on web-3"})).await;
    let custom = json!({"events": [
        {"type": "app.audit.note", "data": {"text": "naïve café — 日本語 🚀 \"quoted\" \\ \n\t\u{7f}\u{2028}",
                                            "ratio": 1.5, "huge": 1e21, "tiny": 1e-7, "third": 0.1,
                                            "negative": -2.5e-3, "integer": 9007199254740991u64}},
        {"type": "app.audit.nested", "stream": "audit/nested",
         "data": {"z": {"b": [1, 2.25, {"deep": null, "ok": true}], "a": {}}, "é": "e-acute",
                  "\u{ff61}": "halfwidth", "😀": "emoji sorts before U+FF61 in UTF-16", "": "empty key"}},
        {"type": "app.audit.note", "data": {}},
    ]});
    server.ok("/v1/events", &custom).await;
    for tick in 0..4 {
        server
            .ok("/v1/events", &json!({"events": [{"type": "app.tick", "data": {"n": tick, "at": tick as f64 / 4.0}}]}))
            .await;
    }

    let head = server.head().await;
    let (lines, last_seq) = export(&server, "").await;
    assert_eq!(last_seq, head);
    assert_eq!(lines.len() as u64, head, "one line per event");
    // Each line is exactly what GET /v1/events/{seq} serves.
    for (index, line) in lines.iter().enumerate() {
        let (status, served, _) = get_text(&server, &format!("/v1/events/{}", index + 1)).await;
        assert_eq!(status, 200);
        assert_eq!(&served, line, "seq {}", index + 1);
    }
    common::verify_chain(&lines.iter().map(|line| serde_json::from_str(line).unwrap()).collect::<Vec<Value>>());
    // The served bytes are RFC 8785 as written out by hand here, not only as the product's own
    // canonicalizer sees it: ECMAScript number forms, minimal string escapes, keys in UTF-16 order
    // (the emoji's surrogate 0xD83D sorts before U+FF61, unlike in UTF-8 or code point order).
    let note_data = concat!(
        r#"{"huge":1e+21,"integer":9007199254740991,"negative":-0.0025,"ratio":1.5,"#,
        r#""text":"naïve café — 日本語 🚀 \"quoted\" \\ \n\t"#,
        "\u{7f}\u{2028}",
        r#"","third":0.1,"tiny":1e-7}"#
    );
    let nested_data = concat!(
        r#"{"":"empty key","z":{"a":{},"b":[1,2.25,{"deep":null,"ok":true}]},"é":"e-acute","#,
        r#""😀":"emoji sorts before U+FF61 in UTF-16","｡":"halfwidth"}"#
    );
    for (kind, data) in [("app.audit.note", note_data), ("app.audit.nested", nested_data)] {
        let line = lines.iter().find(|line| line.contains(&format!(r#""type":"{kind}""#))).unwrap();
        assert!(line.contains(&format!(r#","data":{data},"deployment":"#)), "{kind}: expected data {data}\nin {line}");
    }
    let (part, part_last) = export(&server, "?from_seq=3&to_seq=5").await;
    assert_eq!((part.as_slice(), part_last), (&lines[2..5], 5));

    let note = checkpoint(&server, "").await;
    let key = checkpoint_key(&server).await;
    let export_path = scratch.path().join("export.ndjson");
    let checkpoint_path = scratch.path().join("checkpoint");
    write_lines(&export_path, &lines);
    std::fs::write(&checkpoint_path, &note).unwrap();

    let offline = |export: &Path, checkpoint: &Path, key: &str| {
        fleetlog(
            &server.url,
            &[
                "verify",
                "--export",
                path_text(export),
                "--checkpoint",
                path_text(checkpoint),
                "--key",
                key,
                "--state",
                path_text(&state),
            ],
        )
    };
    let accepted = offline(&export_path, &checkpoint_path, &key);
    let text = accepted.succeeded();
    assert!(text.contains(&format!("{head} events: every hash and chain link recomputed")), "{text}");

    // A checkpoint of an older size covers a prefix; the rest is chained but not covered.
    let older_path = scratch.path().join("checkpoint-older");
    std::fs::write(&older_path, checkpoint(&server, "?tree_size=7").await).unwrap();
    let text = offline(&export_path, &older_path, &key).succeeded().to_string();
    assert!(
        text.contains(&format!("the {} events after the checkpoint are chained but not covered", head - 7)),
        "{text}"
    );

    let middle = lines.len() / 2;
    let last = lines.len() - 1;
    let tampered_export = |name: &str, lines: Vec<String>, phrases: &[&str]| {
        let path = scratch.path().join(name);
        write_lines(&path, &lines);
        offline(&path, &checkpoint_path, &key).failed_with(phrases);
    };
    // (a) An actor rewritten, the stated hash left alone.
    let mut copy = lines.clone();
    copy[middle] = edited(&copy[middle], |event| event["actor"] = json!("mallory"));
    tampered_export(
        "actor.ndjson",
        copy,
        &["MISMATCH", &format!("seq {}: the event's content hashes to", middle + 1), "the event was altered"],
    );
    // (b) A middle event rewritten with its own hash recomputed: only the next link breaks.
    let mut copy = lines.clone();
    copy[middle] = rehashed(&copy[middle], |event| event["actor"] = json!("mallory"));
    tampered_export(
        "rehashed-middle.ndjson",
        copy,
        &["MISMATCH", &format!("seq {} does not link to the hash of seq {}", middle + 2, middle + 1)],
    );
    // (c) The last event rewritten and rehashed: no link follows it, only the root differs.
    let mut copy = lines.clone();
    copy[last] = rehashed(&copy[last], |event| event["data"]["n"] = json!(99));
    tampered_export("rehashed-last.ndjson", copy, &["MISMATCH", &format!("the root of the first {head} events is")]);
    // (d) Two events swapped.
    let mut copy = lines.clone();
    copy.swap(2, 3);
    tampered_export("swapped.ndjson", copy, &["MISMATCH", "line 3 holds seq 4, but seq 3 comes next"]);
    // (e) A middle event dropped.
    let mut copy = lines.clone();
    copy.remove(middle);
    tampered_export(
        "dropped-middle.ndjson",
        copy,
        &["MISMATCH", &format!("line {} holds seq {}, but seq {} comes next", middle + 1, middle + 2, middle + 1)],
    );
    // (f) The last event dropped: the export is shorter than the checkpoint.
    let mut copy = lines.clone();
    copy.pop();
    tampered_export(
        "dropped-last.ndjson",
        copy,
        &["MISMATCH", &format!("the export holds {} events, fewer than the {head}", head - 1)],
    );

    let parsed = parse_note(&note);
    let tampered_checkpoint = |name: &str, note: String| {
        let path = scratch.path().join(name);
        std::fs::write(&path, note).unwrap();
        offline(&export_path, &path, &key).failed_with(&["MISMATCH", "does not verify"]);
    };
    // (g) One byte of the Ed25519 signature flipped (the key id before it left intact).
    let mut blob = parsed.blob.clone();
    blob[4 + 20] ^= 0x01;
    tampered_checkpoint("flipped-signature", with_blob(&note, &blob));
    // (h) The tree size line changed under the same signature.
    let smaller = note.replacen(&format!("\n{head}\n"), &format!("\n{}\n", head - 1), 1);
    assert_ne!(smaller, note);
    tampered_checkpoint("smaller-size", smaller);

    // (i) Another cluster's key: its checkpoints are not this cluster's.
    let other = Server::start().await;
    let other_key = checkpoint_key(&other).await;
    assert_ne!(other_key, key);
    let other_state = scratch.path().join("other-witness.json");
    let refused = fleetlog(
        &server.url,
        &[
            "verify",
            "--export",
            path_text(&export_path),
            "--checkpoint",
            path_text(&checkpoint_path),
            "--key",
            &other_key,
            "--state",
            path_text(&other_state),
        ],
    );
    refused.failed_with(&["but the pinned key is for", &parse_note(&note).origin]);

    // An export that does not start at seq 1 cannot be checked against a root.
    let (from_two, _) = export(&server, "?from_seq=2").await;
    assert_eq!(from_two.as_slice(), &lines[1..]);
    tampered_export("from-two.ndjson", from_two, &["MISMATCH", "an export to verify starts at seq 1"]);

    // After all of that, the untouched files still verify.
    offline(&export_path, &checkpoint_path, &key).succeeded();
}

/// Online verification pins the key, keeps the last checkpoint, proves that the log only grew,
/// and catches a server that forked the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_verify_keeps_a_witness_and_catches_a_fork() {
    let mut first = Server::start().await;
    let scratch = tempfile::TempDir::new().unwrap();
    let witness = scratch.path().join("witness.json");
    let witness_text = path_text(&witness).to_string();
    let verify = |url: &str, extra: &[&str]| {
        let mut args = vec!["verify", "--state", witness_text.as_str()];
        args.extend_from_slice(extra);
        fleetlog(url, &args)
    };

    append_notes(&first, "both", 6).await;
    let first_size = first.head().await;
    let key = checkpoint_key(&first).await;

    let run = verify(&first.url, &["--key", &key]);
    let text = run.succeeded();
    assert!(text.contains(&format!("size {first_size} root")), "{text}");
    assert!(text.contains("signature ok"), "{text}");
    assert!(text.contains("no earlier checkpoint"), "{text}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&witness).unwrap()).unwrap();
    assert_eq!(saved["key"], key.as_str(), "the key is pinned");
    assert_eq!(saved["checkpoint"], checkpoint(&first, "").await.as_str(), "the checkpoint is kept verbatim");

    // Later runs rely on the pinned key and prove the old tree is a prefix of the new one.
    append_notes(&first, "both", 4).await;
    let second_size = first.head().await;
    let run = verify(&first.url, &["--sample", "3"]);
    let text = run.succeeded();
    assert!(text.contains(&format!("consistency  {first_size} → {second_size} events: proof of")), "{text}");
    assert!(text.contains("hashes ok"), "{text}");
    assert!(text.contains("inclusion    5 events proven"), "the first, the last and 3 sampled: {text}");

    let report = verify(&first.url, &["--output", "json", "--seq", &format!("1,{second_size}")]).json();
    assert_eq!(report["verified"], true);
    assert_eq!(report["tree_size"], second_size);
    assert_eq!(report["proven_seqs"], json!([1, second_size]));
    assert_eq!(report["consistency"], format!("same tree as the checkpoint seen earlier ({second_size} events)"));

    for outside in [second_size + 1, 0] {
        let seq = outside.to_string();
        verify(&first.url, &["--seq", &seq])
            .failed_with(&[&format!("seq {seq} is not in the checkpoint's tree of {second_size} events")]);
    }
    // The pinned key cannot be swapped for another one.
    let stranger =
        fleetlog_raft::domain::checkpoint::NoteSigner::new(parse_note(&checkpoint(&first, "").await).origin, &[5; 32]);
    verify(&first.url, &["--key", &stranger.verifier().to_string()]).failed_with(&["pins the key"]);

    // The fork: a copy of the stopped node's data, started elsewhere, with the same key.
    let status = first.terminate().await;
    assert!(status.success(), "{status}: {}", first.log());
    let mut forked = Server::start().await;
    let status = forked.terminate().await;
    assert!(status.success(), "{status}: {}", forked.log());
    std::fs::remove_dir_all(&forked.data).unwrap();
    let copied = Command::new("cp").arg("-a").arg(&first.data).arg(&forked.data).status().unwrap();
    assert!(copied.success());
    first.kill_and_restart().await;
    forked.kill_and_restart().await;
    assert_eq!(checkpoint_key(&forked).await, key, "the copy signs with the same key");
    assert_eq!(checkpoint(&forked, "").await, checkpoint(&first, "").await, "same tree before diverging");

    // Same size, different roots.
    append_notes(&first, "first", 3).await;
    append_notes(&forked, "forked", 3).await;
    let third_size = first.head().await;
    assert_eq!(forked.head().await, third_size);
    let text = verify(&first.url, &[]).succeeded().to_string();
    assert!(text.contains(&format!("consistency  {second_size} → {third_size} events: proof of")), "{text}");
    let kept = std::fs::read(&witness).unwrap();
    verify(&forked.url, &[])
        .failed_with(&["MISMATCH", &format!("two different signed roots for {third_size} events: the log forked")]);
    assert_eq!(std::fs::read(&witness).unwrap(), kept, "a failed run does not replace the witness");

    // The fork on its own is self-consistent: only the witness exposes it.
    let fresh = scratch.path().join("fresh-witness.json");
    fleetlog(&forked.url, &["verify", "--key", &key, "--state", path_text(&fresh)]).succeeded();

    // The fork grows beyond the checkpoint seen: the consistency proof cannot hold.
    append_notes(&forked, "forked", 2).await;
    let forked_size = forked.head().await;
    verify(&forked.url, &[]).failed_with(&[
        "MISMATCH",
        &format!("the log of {third_size} events seen earlier is not a prefix of the log of {forked_size}"),
    ]);
    assert_eq!(std::fs::read(&witness).unwrap(), kept);

    // The first node grows further; the fork, now smaller than what was seen, looks rolled back.
    append_notes(&first, "first", 3).await;
    let fourth_size = first.head().await;
    verify(&first.url, &[]).succeeded();
    verify(&forked.url, &[]).failed_with(&[
        "MISMATCH",
        &format!("the log shrank from {fourth_size} events (seen earlier) to {forked_size}"),
    ]);
}

/// The audit trail of a release holds its creation, its deployment's every step, the reports of
/// hosts running it and the rollback away from it, each event proven included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_audit_trail_is_verified() {
    let server = Server::start().await;
    let scratch = tempfile::TempDir::new().unwrap();
    let witness = scratch.path().join("witness.json");
    seed_fleet(&server).await; // shop 1.0 (deployed everywhere by d-1) and 2.0, web-1..web-6
    report(&server, "web-5", "1.0", "running").await;
    server.ok("/v1/releases", &json!({"service": "shop", "release": "1.1", "notes": "faster checkout"})).await;
    server
        .ok(
            "/v1/deployments",
            &json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "1.1",
                    "waves": [{"name": "canary", "group": "canary"}, {"name": "rest", "percent": 100}]}),
        )
        .await;
    server.ok("/v1/deployments/d-2/waves/canary/start", &json!({})).await;
    report(&server, "web-1", "1.1", "applying").await;
    report(&server, "web-1", "1.1", "running").await;
    report(&server, "web-2", "1.1", "failed").await;
    server.ok("/v1/deployments/d-2/waves/canary/complete", &json!({"force_reason": "web-2 is being replaced"})).await;
    server.ok("/v1/deployments/d-2/waves/rest/start", &json!({})).await;
    report(&server, "web-3", "1.1", "running").await;
    server.ok("/v1/deployments/d-2/waves/rest/complete", &json!({})).await;
    server.ok("/v1/deployments/d-2/complete", &json!({"force_reason": "web-2 is being replaced"})).await;
    let rollback = server.ok("/v1/rollbacks", &json!({"service": "shop", "env": "prod", "reason": "latency"})).await;
    let rollback_seq = rollback["seq"].as_u64().unwrap();
    assert_eq!(rollback["event"]["release"], "1.0");
    // Events after the rollback that are not about 1.1.
    report(&server, "web-1", "1.0", "running").await;
    deploy_fully(&server, "d-3", "2.0").await;

    let key = checkpoint_key(&server).await;
    let run = fleetlog(
        &server.url,
        &["--output", "json", "verify", "--release", "shop@1.1", "--key", &key, "--state", path_text(&witness)],
    );
    let trail = run.json();
    assert_eq!(trail["verified"], true, "{trail}");
    assert_eq!(trail["service"], "shop");
    assert_eq!(trail["release"], "1.1");
    assert_eq!(trail["tree_size"], server.head().await);

    let all = server.all_events().await;
    let belongs = |event: &Value| {
        (event["service"] == "shop" && event["release"] == "1.1")
            || event["deployment"] == "d-2"
            || event["seq"] == rollback_seq
    };
    let expected: Vec<&Value> = all.iter().filter(|event| belongs(event)).collect();
    let events = trail["events"].as_array().unwrap();
    let seqs = |events: &[&Value]| events.iter().map(|event| event["seq"].as_u64().unwrap()).collect::<Vec<u64>>();
    assert_eq!(seqs(&events.iter().collect::<Vec<_>>()), seqs(&expected), "the trail is exactly these events");
    // The events are the ledger's own, whole.
    for event in events {
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(event, &all[seq as usize - 1], "seq {seq}");
        assert!(event["actor"].as_str().is_some_and(|actor| !actor.is_empty()), "who did it: {event}");
    }
    let steps: Vec<(String, Value)> = events
        .iter()
        .filter(|event| event["type"] != "host.reported")
        .map(|event| (event["type"].as_str().unwrap().to_string(), event["data"]["wave"].clone()))
        .collect();
    let step = |kind: &str, wave: Value| (kind.to_string(), wave);
    assert_eq!(
        steps,
        vec![
            step("release.created", Value::Null),
            step("deployment.started", Value::Null),
            step("wave.started", json!("canary")),
            step("wave.completed", json!("canary")),
            step("wave.started", json!("rest")),
            step("wave.completed", json!("rest")),
            step("deployment.completed", Value::Null),
            step("rollback", Value::Null),
        ]
    );
    let reports: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|event| event["type"] == "host.reported")
        .map(|event| {
            assert_eq!(event["release"], "1.1", "{event}");
            (
                event["host"].as_str().unwrap(),
                event["data"]["status"].as_str().unwrap(),
                event["release"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reports,
        vec![
            ("web-1", "applying", "1.1"),
            ("web-1", "running", "1.1"),
            ("web-2", "failed", "1.1"),
            ("web-3", "running", "1.1")
        ]
    );
    let rolled = events.iter().find(|event| event["type"] == "rollback").unwrap();
    assert_eq!((rolled["release"].as_str(), rolled["data"]["reason"].as_str()), (Some("1.0"), Some("latency")));

    // The human table, with the pinned key from the witness.
    let run = fleetlog(&server.url, &["verify", "--release", "shop@1.1", "--state", path_text(&witness)]);
    let table = run.succeeded();
    assert!(table.contains("audit trail of shop@1.1"), "{table}");
    assert!(table.contains(&format!("{} events, each hash recomputed and proven", expected.len())), "{table}");
    assert!(table.contains("rolled back to 1.0: latency"), "{table}");

    fleetlog(&server.url, &["verify", "--release", "shop@9.9", "--state", path_text(&witness)])
        .failed_with(&["shop has no release \"9.9\""]);
}

/// The fleet at past moments: what changed between two seqs or times, the log as it stood then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_diff_and_history_at_past_moments() {
    let server = Server::start().await;
    for (service, release) in [("shop", "1.0"), ("shop", "2.0"), ("db", "5.0")] {
        server.ok("/v1/releases", &json!({"service": service, "release": release})).await;
    }
    for (host, service) in [("web-1", "shop"), ("web-2", "shop"), ("web-3", "shop"), ("db-1", "db")] {
        server.ok("/v1/targets", &json!({"host": host, "service": service, "env": "prod"})).await;
    }
    deploy_fully(&server, "d-1", "1.0").await;
    report(&server, "web-1", "1.0", "running").await;
    let first = report(&server, "web-2", "1.0", "running").await;
    // Distinct times around each recorded moment: a time then names exactly that seq.
    tokio::time::sleep(Duration::from_millis(5)).await;

    server
        .ok(
            "/v1/deployments",
            &json!({"deployment": "d-2", "service": "shop", "env": "prod", "release": "2.0",
                    "waves": [{"name": "canary", "hosts": ["web-1"]}, {"name": "rest", "percent": 100}]}),
        )
        .await;
    server.ok("/v1/deployments/d-2/waves/canary/start", &json!({})).await;
    report(&server, "web-1", "2.0", "running").await;
    server.ok("/v1/targets", &json!({"host": "web-4", "service": "shop", "env": "prod"})).await;
    let second = command(&server, "/v1/targets", json!({"host": "db-2", "service": "db", "env": "prod"})).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    server.ok("/v1/deployments/d-2/waves/canary/complete", &json!({})).await;
    let (status, body) = server.send(reqwest::Method::DELETE, "/v1/targets/shop/prod/web-3", Some(&json!({}))).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    server.ok("/v1/deployments/d-2/waves/rest/start", &json!({})).await;
    let third = server.head().await;

    let all = server.all_events().await;
    let time_after = |seq: u64| {
        let time = chrono::DateTime::parse_from_rfc3339(all[seq as usize - 1]["time"].as_str().unwrap()).unwrap();
        (time + chrono::Duration::milliseconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    let (first_time, second_time) = (time_after(first), time_after(second));
    assert!(all[first as usize]["time"].as_str().unwrap() > first_time.as_str(), "the next event is later");
    assert!(all[second as usize]["time"].as_str().unwrap() > second_time.as_str(), "the next event is later");

    // (host, before as (registered, desired, observed) or None, after as the same).
    type State = (bool, Value, Value);
    let summary = |diff: &Value| -> Vec<(String, Option<State>, State)> {
        let state = |view: &Value| {
            (view["registered"].as_bool().unwrap(), view["desired_release"].clone(), view["observed_release"].clone())
        };
        let mut hosts: Vec<(String, Option<State>, State)> = diff["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|host| {
                assert_eq!(host["after"]["host"], host["host"]);
                let name = format!("{}/{}", host["service"].as_str().unwrap(), host["host"].as_str().unwrap());
                let before = (!host["before"].is_null()).then(|| state(&host["before"]));
                (name, before, state(&host["after"]))
            })
            .collect();
        hosts.sort_by(|left, right| left.0.cmp(&right.0));
        assert_eq!(diff["changed"], hosts.len(), "{diff}");
        hosts
    };
    let diff = |query: String| {
        let server = &server;
        async move {
            let (status, body) = server.get(&format!("/v1/fleet/diff?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            body
        }
    };
    let on = |desired: &str, observed: Option<&str>| (true, json!(desired), json!(observed));
    let fresh: State = (true, Value::Null, Value::Null);

    let first_to_second = vec![
        ("db/db-2".to_string(), None, fresh.clone()),
        ("shop/web-1".to_string(), Some(on("1.0", Some("1.0"))), on("2.0", Some("2.0"))),
        ("shop/web-4".to_string(), None, fresh.clone()),
    ];
    let by_seq = diff(format!("from={first}&to={second}")).await;
    assert_eq!((by_seq["from_seq"].as_u64(), by_seq["to_seq"].as_u64()), (Some(first), Some(second)));
    assert_eq!(summary(&by_seq), first_to_second);
    let by_time = diff(format!("from={first_time}&to={second_time}")).await;
    assert_eq!(by_time, by_seq, "the same moments named by time");
    let shop_only = diff(format!("from={first}&to={second}&service=shop")).await;
    assert_eq!(summary(&shop_only), first_to_second[1..].to_vec());
    let shop_prod = diff(format!("from={first}&to={second}&service=shop&env=prod")).await;
    assert_eq!(shop_prod, shop_only);
    assert_eq!(summary(&diff(format!("from={first}&to={second}&env=staging")).await), vec![]);
    assert_eq!(summary(&diff(format!("from={second}&to={second}")).await), vec![]);

    let second_to_third = summary(&diff(format!("from={second}&to={third}&service=shop")).await);
    assert_eq!(second_to_third.len(), 3, "{second_to_third:?}");
    assert_eq!(second_to_third[0], ("shop/web-2".into(), Some(on("1.0", Some("1.0"))), on("2.0", Some("1.0"))));
    // A host that leaves keeps its last desired release in the view, marked unregistered.
    assert_eq!(
        second_to_third[1],
        ("shop/web-3".into(), Some(on("1.0", Some("1.0"))), (false, json!("1.0"), json!("1.0")))
    );
    assert_eq!(second_to_third[2], ("shop/web-4".into(), Some(fresh.clone()), on("2.0", None)));
    // `to` defaults to the head.
    let to_head = diff(format!("from={second}&service=shop")).await;
    assert_eq!(to_head["to_seq"], third);

    // Before the first event is seq 0: every host registered by then is new.
    let from_the_start = diff(format!("from=2000-01-01T00:00:00Z&to={first}")).await;
    assert_eq!(from_the_start["from_seq"], 0);
    let hosts = summary(&from_the_start);
    let names: Vec<&str> = hosts.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["db/db-1", "shop/web-1", "shop/web-2", "shop/web-3"]);
    assert!(hosts.iter().all(|(_, before, _)| before.is_none()), "{hosts:?}");

    let head = third;
    expect_error(&server, &format!("/v1/fleet/diff?from={second}&to={first}"), 400, "moments_out_of_order").await;
    expect_error(&server, &format!("/v1/fleet/diff?from={second_time}&to={first_time}"), 400, "moments_out_of_order")
        .await;
    expect_error(&server, &format!("/v1/fleet/diff?from={}", head + 1), 404, "seq_beyond_head").await;
    expect_error(&server, &format!("/v1/fleet/diff?from=1&to={}", head + 5), 404, "seq_beyond_head").await;
    expect_error(&server, "/v1/fleet/diff?from=yesterday", 400, "invalid_parameter").await;
    expect_error(&server, "/v1/fleet/diff?from=1&to=-3", 400, "invalid_parameter").await;
    expect_error(&server, "/v1/fleet/diff?from=99999999999999999999999", 400, "invalid_parameter").await;
    expect_error(&server, "/v1/fleet/diff", 400, "invalid_parameter").await;
    expect_error(&server, "/v1/fleet/diff?to=1", 400, "invalid_parameter").await;
    expect_error(&server, "/v1/fleet/diff?from=1&colour=red", 400, "invalid_parameter").await;

    // The CLI's table shows each change as before → after.
    let (from_text, to_text) = (first.to_string(), second.to_string());
    let run = fleetlog(&server.url, &["diff", "--from", &from_text, "--to", &to_text, "--service", "shop"]);
    let table = run.succeeded();
    let row =
        |host: &str| table.lines().find(|line| line.starts_with(host)).unwrap_or_else(|| panic!("{host}: {table}"));
    assert!(row("web-1").contains("1.0 → 2.0"), "{table}");
    assert!(row("web-4").contains('→'), "{table}");
    assert!(!table.contains("web-2") && !table.contains("db-2"), "{table}");
    assert!(table.contains(&format!("2 hosts changed between seq {first} and seq {second}")), "{table}");
    let json_diff =
        fleetlog(&server.url, &["--output", "json", "diff", "--from", &first_time, "--to", &second_time]).json();
    assert_eq!(json_diff, by_seq);

    // The log as it stood at a time: the newest events at or before it.
    let history = fleetlog(&server.url, &["--output", "json", "history", "--at", &second_time, "--limit", "3"]);
    let seqs: Vec<u64> = history
        .succeeded()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![second - 2, second - 1, second]);
    // With a filter too: the newest matching events at or before it.
    let history = fleetlog(
        &server.url,
        &["--output", "json", "history", "--at", &second_time, "--type", "wave.", "--limit", "2"],
    );
    let seqs: Vec<u64> = history
        .succeeded()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap())
        .collect();
    let waves: Vec<u64> = all
        .iter()
        .filter(|event| event["type"].as_str().unwrap().starts_with("wave.") && event["seq"].as_u64() <= Some(second))
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, waves[waves.len() - 2..].to_vec());

    let fleet = fleetlog(&server.url, &["--output", "json", "fleet", "--at", &second_time, "--service", "shop"]).json();
    assert_eq!(fleet["as_of_seq"], second);
    assert_eq!(fleet["summary"]["desired"], json!({"1.0": 2, "2.0": 1}), "{fleet}");
    let fleet = fleetlog(&server.url, &["--output", "json", "fleet", "--at", &first_time]).json();
    assert_eq!(fleet["as_of_seq"], first);
}

/// Every bad proof, checkpoint and export request gets its code; good ones match roots and
/// proofs recomputed here from the export alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_endpoints_refuse_bad_input() {
    // Before a cluster exists there is no key to sign with.
    let unjoined = unjoined::UnjoinedMember::start().await;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    for path in ["/v1/checkpoint/key", "/v1/checkpoint?consistency=local"] {
        let response = http.get(format!("{}{path}", unjoined.url)).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!((status, body["error"]["code"].as_str()), (503, Some("no_signing_key")), "{path}: {body}");
    }
    drop(unjoined);

    let server = Server::start().await;
    for batch in 0..4 {
        let events: Vec<Value> = (0..10)
            .map(|number| json!({"type": "app.note", "data": {"batch": batch, "n": number, "weight": number as f64 * 0.5}}))
            .collect();
        server.ok("/v1/events", &json!({ "events": events })).await;
    }
    let head = server.head().await;
    assert_eq!(head, 40);
    let (lines, _) = export(&server, "").await;
    let leaves: Vec<Hash> = lines.iter().map(|line| leaf_hash(line.as_bytes())).collect();
    let (_, cluster) = server.get("/v1/cluster").await;
    let origin = format!("fleetlog/{}", cluster["cluster_id"].as_str().unwrap());

    let beyond = head + 1;
    let errors: Vec<(String, u16, &str)> = vec![
        ("/v1/proofs/inclusion".into(), 400, "invalid_parameter"),
        ("/v1/proofs/inclusion?seq=0".into(), 400, "invalid_parameter"),
        ("/v1/proofs/inclusion?seq=one".into(), 400, "invalid_parameter"),
        ("/v1/proofs/inclusion?seq=-1".into(), 400, "invalid_parameter"),
        ("/v1/proofs/inclusion?tree_size=5".into(), 400, "invalid_parameter"),
        (format!("/v1/proofs/inclusion?seq={beyond}"), 400, "seq_outside_tree"),
        ("/v1/proofs/inclusion?seq=6&tree_size=5".into(), 400, "seq_outside_tree"),
        (format!("/v1/proofs/inclusion?seq=1&tree_size={beyond}"), 404, "tree_size_beyond_head"),
        ("/v1/proofs/inclusion?seq=1&tree_size=x".into(), 400, "invalid_parameter"),
        ("/v1/proofs/inclusion?seq=1&size=5".into(), 400, "invalid_parameter"),
        ("/v1/proofs/inclusion?seq=1&consistency=eventual".into(), 400, "invalid_parameter"),
        ("/v1/proofs/consistency".into(), 400, "invalid_parameter"),
        ("/v1/proofs/consistency?from_size=0".into(), 400, "invalid_parameter"),
        ("/v1/proofs/consistency?from_size=0&to_size=5".into(), 400, "invalid_parameter"),
        ("/v1/proofs/consistency?to_size=5".into(), 400, "invalid_parameter"),
        ("/v1/proofs/consistency?from_size=ten".into(), 400, "invalid_parameter"),
        ("/v1/proofs/consistency?from_size=10&to_size=5".into(), 400, "sizes_out_of_order"),
        (format!("/v1/proofs/consistency?from_size={beyond}"), 400, "sizes_out_of_order"),
        (format!("/v1/proofs/consistency?from_size=1&to_size={beyond}"), 404, "tree_size_beyond_head"),
        ("/v1/proofs/consistency?from_size=1&seq=2".into(), 400, "invalid_parameter"),
        (format!("/v1/checkpoint?tree_size={beyond}"), 404, "tree_size_beyond_head"),
        ("/v1/checkpoint?tree_size=big".into(), 400, "invalid_parameter"),
        ("/v1/checkpoint?size=3".into(), 400, "invalid_parameter"),
        (format!("/v1/export?to_seq={beyond}"), 404, "seq_beyond_head"),
        ("/v1/export?from_seq=x".into(), 400, "invalid_parameter"),
        (format!("/v1/export?from_seq={}", beyond + 1), 404, "seq_beyond_head"),
        ("/v1/export?from_seq=5&to_seq=3".into(), 400, "seqs_out_of_order"),
        ("/v1/export?since=2026-01-01T00:00:00Z".into(), 400, "invalid_parameter"),
    ];
    for (path, status, code) in &errors {
        expect_error(&server, path, *status, code).await;
    }

    // Checkpoints of a single event, of a power of two, of an odd size and of the head.
    for size in [1usize, 16, 7, 40] {
        let note = checkpoint(&server, &format!("?tree_size={size}")).await;
        let parsed = parse_note(&note);
        assert_eq!(parsed.origin, origin);
        assert_eq!(parsed.signer, origin);
        assert_eq!(parsed.size, size as u64);
        assert_eq!(parsed.root, tree_root(&leaves[..size]), "root of the first {size} events");
        assert_eq!(parsed.blob.len(), 68, "key id and signature");
    }
    assert_eq!(checkpoint(&server, "").await, checkpoint(&server, "?tree_size=40").await, "the latest is the head's");
    assert_eq!(parse_note(&checkpoint(&server, "?tree_size=0").await).root, tree_root(&[]));

    // Every inclusion proof of trees of 1, 16 and 40 events is the RFC's audit path and holds.
    for size in [1usize, 16, 40] {
        let root = tree_root(&leaves[..size]);
        for seq in 1..=size {
            let (status, proof) = server.get(&format!("/v1/proofs/inclusion?seq={seq}&tree_size={size}")).await;
            assert_eq!(status, 200, "{proof}");
            assert_eq!(
                (proof["seq"].as_u64(), proof["leaf_index"].as_u64(), proof["tree_size"].as_u64()),
                (Some(seq as u64), Some(seq as u64 - 1), Some(size as u64))
            );
            let hashes = decode_hashes(&proof);
            assert_eq!(hashes, inclusion_path(seq - 1, &leaves[..size]), "path of seq {seq} in {size}");
            assert!(
                inclusion_holds(seq as u64 - 1, size as u64, &leaves[seq - 1], &hashes, &root),
                "seq {seq} in {size}"
            );
            // The same path does not prove a neighbour: the check above can fail.
            if size > 1 {
                let other = if seq == 1 { 1 } else { seq - 2 };
                assert!(!inclusion_holds(seq as u64 - 1, size as u64, &leaves[other], &hashes, &root));
            }
        }
    }
    // Without tree_size: the head's tree.
    let (_, proof) = server.get("/v1/proofs/inclusion?seq=17").await;
    assert_eq!(proof["tree_size"], 40);
    assert_eq!(decode_hashes(&proof), inclusion_path(16, &leaves));

    // Consistency from every size to 40, and between the checkpointed sizes.
    let mut pairs: Vec<(usize, usize)> = (1..=40).map(|from| (from, 40)).collect();
    pairs.extend([(1, 1), (1, 16), (7, 16), (16, 16), (1, 7), (16, 23)]);
    for (from, to) in pairs {
        let (status, proof) = server.get(&format!("/v1/proofs/consistency?from_size={from}&to_size={to}")).await;
        assert_eq!(status, 200, "{proof}");
        assert_eq!((proof["from_size"].as_u64(), proof["to_size"].as_u64()), (Some(from as u64), Some(to as u64)));
        let hashes = decode_hashes(&proof);
        assert_eq!(hashes, consistency_path(from, &leaves[..to]), "{from} → {to}");
        let (old_root, new_root) = (tree_root(&leaves[..from]), tree_root(&leaves[..to]));
        assert!(consistency_holds(from as u64, to as u64, &old_root, &new_root, &hashes), "{from} → {to}");
        if from < to {
            // A different old root is not consistent with the new one.
            let wrong = tree_root(&leaves[1..=from]);
            assert!(!consistency_holds(from as u64, to as u64, &wrong, &new_root, &hashes), "{from} → {to}");
        }
    }
    let (_, proof) = server.get("/v1/proofs/consistency?from_size=9").await;
    assert_eq!((proof["to_size"].as_u64(), decode_hashes(&proof)), (Some(40), consistency_path(9, &leaves)));
}

/// The checkpoint is an Ed25519 signed note an off-the-shelf tool verifies, under the key the
/// cluster publishes in three places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_signature_verifies_with_openssl() {
    let server = Server::start().await;
    append_notes(&server, "openssl", 5).await;
    let (status, key_text, content_type) = get_text(&server, "/v1/checkpoint/key").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(key_text.ends_with('\n') && key_text.lines().count() == 1, "one line: {key_text:?}");
    let verifier = key_text.trim_end();
    let (_, cluster) = server.get("/v1/cluster").await;
    assert_eq!(cluster["checkpoint_key"], verifier);
    let status_table = fleetlog(&server.url, &["cluster", "status"]);
    assert!(
        status_table.succeeded().lines().any(|line| line == format!("checkpoint key: {verifier}")),
        "{}",
        status_table.stdout
    );

    let (name, key_id, public_key) = parse_verifier(verifier);
    assert_eq!(name, format!("fleetlog/{}", cluster["cluster_id"].as_str().unwrap()));
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([0x01]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    assert_eq!(key_id, digest[..4], "key id = SHA-256(name \\n 0x01 key)[..4]");

    let note = checkpoint(&server, "").await;
    let parsed = parse_note(&note);
    assert_eq!((parsed.origin.as_str(), parsed.signer.as_str(), parsed.size), (name.as_str(), name.as_str(), 5));
    assert_eq!(parsed.blob.len(), 68);
    assert_eq!(parsed.blob[..4], key_id, "the signature names the key");

    // openssl is a prerequisite of the tests (scripts/prerequisites.sh installs it): missing, this fails.
    let which = Command::new("sh").args(["-c", "command -v openssl"]).output().expect("a shell to look for openssl");
    assert!(which.status.success(), "openssl is not on PATH: run scripts/prerequisites.sh");
    let scratch = tempfile::TempDir::new().unwrap();
    let files = |name: &str| -> PathBuf { scratch.path().join(name) };
    let mut der = hex::decode("302a300506032b6570032100").unwrap();
    der.extend_from_slice(&public_key);
    std::fs::write(files("pub.der"), der).unwrap();
    std::fs::write(files("signature"), &parsed.blob[4..68]).unwrap();
    std::fs::write(files("message"), &parsed.body).unwrap();
    assert!(note.starts_with(&format!("{}\n", parsed.body)), "the signed text ends before the blank line");
    let bigger = parsed.body.replacen("\n5\n", "\n6\n", 1);
    std::fs::write(files("forged"), bigger).unwrap();
    let openssl = |message: &str| {
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(files("pub.der"))
            .args(["-keyform", "DER", "-rawin", "-in"])
            .arg(files(message))
            .arg("-sigfile")
            .arg(files("signature"))
            .output()
            .unwrap()
    };
    let verified = openssl("message");
    let said = String::from_utf8_lossy(&verified.stdout).into_owned() + &String::from_utf8_lossy(&verified.stderr);
    assert!(verified.status.success(), "openssl refused the checkpoint: {said}");
    assert!(said.contains("Signature Verified Successfully"), "{said}");
    let forged = openssl("forged");
    assert!(!forged.status.success(), "openssl accepted an altered tree size");
}

/// A verifier string whose base64 key holds a '+' is a valid key: `fleetlog verify` must accept
/// it, offline and against a live cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_key_with_a_plus_in_its_base64_is_accepted() {
    use fleetlog_raft::domain::checkpoint::{origin, Checkpoint, NoteSigner};

    // Offline, deterministically: a key with a '+' in its base64 signs the empty tree.
    let name = origin("0123456789abcdef");
    let signer = (0u8..=255)
        .map(|seed| NoteSigner::new(name.clone(), &[seed; 32]))
        .find(|signer| signer.verifier().to_string().splitn(3, '+').nth(2).unwrap().contains('+'))
        .expect("a seed whose public key's base64 holds a '+'");
    let verifier = signer.verifier().to_string();
    let (parsed_name, _, _) = parse_verifier(&verifier);
    assert_eq!(parsed_name, name, "{verifier}");
    let note = signer.sign(&Checkpoint { origin: name, size: 0, root: tree_root(&[]) });
    let scratch = tempfile::TempDir::new().unwrap();
    std::fs::write(scratch.path().join("export.ndjson"), "").unwrap();
    std::fs::write(scratch.path().join("checkpoint"), &note).unwrap();
    let file = |name: &str| scratch.path().join(name).to_str().unwrap().to_string();
    fleetlog(
        "http://127.0.0.1:9",
        &[
            "verify",
            "--export",
            &file("export.ndjson"),
            "--checkpoint",
            &file("checkpoint"),
            "--key",
            &verifier,
            "--state",
            &file("offline-witness.json"),
        ],
    )
    .succeeded();

    // Online: a real cluster whose key happens to hold a '+' (about one in two).
    for _ in 0..30 {
        let server = Server::start().await;
        let key = checkpoint_key(&server).await;
        if key.splitn(3, '+').nth(2).unwrap().contains('+') {
            append_notes(&server, "plus", 3).await;
            let text = fleetlog(&server.url, &["verify", "--key", &key, "--state", &file("online-witness.json")]);
            assert!(text.succeeded().contains("signature ok"), "{}", text.stdout);
            return;
        }
    }
    panic!("30 servers in a row had no '+' in their key's base64");
}

/// An export line that is not the ledger's canonical bytes must not verify when a reader could
/// see other content in it: with a duplicate key, parsers that keep the first value read
/// "mallory" where `fleetlog verify` (keeping the last) recomputes the genuine event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_verify_refuses_a_line_with_a_duplicate_key() {
    let server = Server::start().await;
    append_notes(&server, "duplicate", 3).await;
    let (lines, _) = export(&server, "").await;
    let scratch = tempfile::TempDir::new().unwrap();
    let file = |name: &str| scratch.path().join(name).to_str().unwrap().to_string();
    std::fs::write(file("checkpoint"), checkpoint(&server, "").await).unwrap();
    let mut copy = lines.clone();
    copy[1] = copy[1].replacen(r#"{"actor":"anonymous","#, r#"{"actor":"mallory","actor":"anonymous","#, 1);
    assert_ne!(copy[1], lines[1]);
    write_lines(Path::new(&file("duplicate.ndjson")), &copy);
    let key = checkpoint_key(&server).await;
    let verify = |export: &str| {
        fleetlog(
            &server.url,
            &[
                "verify",
                "--export",
                &file(export),
                "--checkpoint",
                &file("checkpoint"),
                "--key",
                &key,
                "--state",
                &file("w"),
            ],
        )
    };
    write_lines(Path::new(&file("export.ndjson")), &lines);
    verify("export.ndjson").succeeded();
    verify("duplicate.ndjson").failed_with(&["MISMATCH"]);
}

/// `scripts/audit-independent.py` checks an export with Python's standard library and openssl
/// alone; it must accept the ledger's export (with a key whose base64 holds a '+', and data that
/// exercises its own JCS) and refuse an altered one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_independent_script_agrees_with_the_ledger() {
    // Both are prerequisites of the tests (scripts/prerequisites.sh installs them): missing, this fails.
    for tool in ["python3", "openssl"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(
            found,
            "{tool} is not installed, so scripts/audit-independent.py cannot run: run scripts/prerequisites.sh"
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/audit-independent.py");
    for _ in 0..30 {
        let server = Server::start().await;
        let key = checkpoint_key(&server).await;
        if !key.splitn(3, '+').nth(2).unwrap().contains('+') {
            continue;
        }
        append_notes(&server, "script", 3).await;
        let data = json!({"ratio": 1.5, "big": 1e21, "small": 1e-7, "tiny": 0.000001, "text": "h\u{e9}llo \u{2028} \u{1F600}",
            "\u{1F600}": 1, "\u{FF01}": 2, "nested": {"list": [1, 2.0, -0.5]}});
        let events = json!({"events": [{"type": "app.script", "data": data}]});
        let response =
            reqwest::Client::new().post(format!("{}/v1/events", server.url)).json(&events).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let (lines, _) = export(&server, "").await;
        let scratch = tempfile::TempDir::new().unwrap();
        let file = |name: &str| scratch.path().join(name).to_str().unwrap().to_string();
        std::fs::write(file("checkpoint"), checkpoint(&server, "").await).unwrap();
        write_lines(Path::new(&file("export.ndjson")), &lines);
        let run = |export: &str| {
            Command::new("python3").args([script, &file(export), &file("checkpoint"), &key]).output().unwrap()
        };
        let accepted = run("export.ndjson");
        let said = String::from_utf8_lossy(&accepted.stdout).to_string() + &String::from_utf8_lossy(&accepted.stderr);
        assert!(accepted.status.success() && said.starts_with("ok:"), "{said}");

        let mut altered = lines.clone();
        altered[1] = edited(&altered[1], |event| event["actor"] = json!("mallory"));
        write_lines(Path::new(&file("altered.ndjson")), &altered);
        let refused = run("altered.ndjson");
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("MISMATCH"));
        return;
    }
    panic!("30 servers in a row had no '+' in their key's base64");
}
