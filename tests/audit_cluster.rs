//! The audit surface of a real 3-node cluster after the faults that rebuild a replica's state by
//! other means than applying the log: a leader killed with SIGKILL (a new leader signs from then
//! on) and a node that joins after the log was purged (it installs a snapshot). Every node must
//! then serve byte-identical checkpoints, inclusion and consistency proofs and exports, and the
//! roots must be the RFC 9162 roots that this file recomputes itself from the export, without
//! the product's Merkle code.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::cluster::{Cluster, Options};
use common::rfc9162::{consistency_holds, inclusion_holds, leaf_hash, tree_root, Hash};
use fleetlog_raft::storage::snapshot::{INSTALL_CRASH_POINT, INSTALL_STEPS};
use serde_json::{json, Value};

/// Raft entries between snapshots: small, so that about fifty appends purge the log.
const SNAPSHOT_EVERY: u64 = 20;
/// Longest a step below waits for the cluster (a leader, a purge, a retried append).
const WAIT: Duration = Duration::from_secs(30);

fn decode_hash(text: &str) -> Result<Hash, String> {
    let bytes = BASE64.decode(text.trim()).map_err(|error| format!("{text:?} is not base64: {error}"))?;
    bytes.try_into().map_err(|bytes: Vec<u8>| format!("{text:?} decodes to {} bytes, not 32", bytes.len()))
}

fn proof_hashes(proof: &Value) -> Result<Vec<Hash>, String> {
    let hashes = proof["hashes"].as_array().ok_or_else(|| format!("no hashes in {proof}"))?;
    hashes.iter().map(|hash| decode_hash(hash.as_str().unwrap_or_default())).collect()
}

// ----- requests --------------------------------------------------------------------------------

/// GET that must answer 200: the body's bytes.
async fn get_bytes(cluster: &Cluster, id: u64, path: &str) -> Vec<u8> {
    let url = format!("{}{path}", cluster.url(id));
    let response = match cluster.http.get(&url).send().await {
        Ok(response) => response,
        Err(error) => cluster.fail(&format!("GET {path} on node {id}: {error}")),
    };
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default().to_vec();
    if !status.is_success() {
        cluster.fail(&format!("GET {path} on node {id} → {status} {}", String::from_utf8_lossy(&body)));
    }
    body
}

async fn get_text(cluster: &Cluster, id: u64, path: &str) -> String {
    let body = get_bytes(cluster, id, path).await;
    String::from_utf8(body)
        .unwrap_or_else(|error| cluster.fail(&format!("GET {path} on node {id}: not UTF-8: {error}")))
}

async fn get_json(cluster: &Cluster, id: u64, path: &str) -> Value {
    let (status, body) = cluster.get(id, path).await;
    if status != 200 {
        cluster.fail(&format!("GET {path} on node {id} → {status} {body}"));
    }
    body
}

/// Appends one batch through the leader, retrying (with the same event ids, so at most once)
/// while a leader change makes it unanswered or unavailable. Returns the leader that took it.
async fn append(cluster: &Cluster, leader: u64, batch: &Value) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut leader = leader;
    loop {
        let (status, answer) = cluster.post(leader, "/v1/events", batch).await;
        if status == 200 || status == 201 {
            return leader;
        }
        if (status == 503 || status == 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            leader = cluster.wait_leader().await;
            continue;
        }
        cluster.fail(&format!("POST /v1/events {batch} via node {leader} → {status} {answer}"));
    }
}

/// Appends 60 `app.x` events in 24 batches of 1 to 4 (24 Raft entries), ids `{prefix}-{n}`.
async fn append_sixty(cluster: &Cluster, leader: u64, prefix: &str) -> u64 {
    let mut leader = leader;
    let mut number = 0;
    for batch_index in 0..24 {
        let events: Vec<Value> = (0..batch_index % 4 + 1)
            .map(|_| {
                number += 1;
                json!({"id": format!("{prefix}-{number}"), "type": "app.x", "stream": format!("app/{prefix}"),
                       "data": {"n": number, "batch": batch_index}})
            })
            .collect();
        leader = append(cluster, leader, &json!({"events": events})).await;
    }
    assert_eq!(number, 60);
    leader
}

/// The verifier string of the cluster's checkpoint key (waiting while the identity is not
/// recorded yet), without its newline.
async fn checkpoint_key(cluster: &Cluster, id: u64) -> String {
    let path = "/v1/checkpoint/key";
    let text = cluster.text_when_ready(id, path).await;
    cluster.check(text.ends_with('\n') && text.lines().count() == 1, || format!("GET {path} → {text:?}"));
    text.trim_end_matches('\n').to_string()
}

/// Starts 3-node clusters (snapshots every [`SNAPSHOT_EVERY`] entries) until one's checkpoint key
/// has a '+' among the base64 digits of its verifier string `name+keyid+base64`:
/// '+' is also the separator, and a parser splitting at the last two once refused such keys.
/// Two clusters on average; each start takes about a second.
async fn cluster_whose_key_has_a_plus() -> (Cluster, String) {
    for _ in 0..30 {
        let cluster = Cluster::start(Options { snapshot_every: Some(SNAPSHOT_EVERY), ..Options::default() }).await;
        let leader = cluster.wait_leader().await;
        let key = checkpoint_key(&cluster, leader).await;
        let has_plus = key.splitn(3, '+').nth(2).is_some_and(|base64| base64.contains('+'));
        if has_plus {
            return (cluster, key);
        }
        // The harness runs one cluster at a time: this one must be gone before the next starts.
        drop(cluster);
    }
    panic!("30 clusters in a row had a checkpoint key without a '+' in its base64");
}

/// Runs `fleetlog verify` against each node with a witness state of its own, then once more
/// after further appends, so that the second run of each proves consistency with the first.
async fn verify_with_the_cli(cluster: &Cluster, nodes: &[u64], key: &str) {
    let witness = tempfile::TempDir::with_prefix("fleetlog-witness-").unwrap();
    for round in 1..=2 {
        if round == 2 {
            let leader = cluster.wait_leader().await;
            let events: Vec<Value> = (1..=5).map(|n| json!({"id": format!("later-{n}"), "type": "app.x"})).collect();
            append(cluster, leader, &json!({"events": events})).await;
            cluster.converged_log().await;
        }
        for &id in nodes {
            let state = witness.path().join(format!("w-{id}.json")).to_string_lossy().to_string();
            let server = cluster.url(id);
            let arguments = ["--server", &server, "verify", "--key", key, "--state", &state, "--sample", "8"];
            let (ok, output) = cluster.cli(&arguments).await;
            cluster.check(ok, || format!("run {round}: fleetlog {arguments:?} failed against node {id}:\n{output}"));
        }
    }
}

/// Tree sizes, each with the seqs to prove included and the smaller sizes to prove consistent.
fn probes(sizes: &BTreeSet<u64>) -> Vec<(u64, BTreeSet<u64>, BTreeSet<u64>)> {
    sizes
        .iter()
        .map(|&size| {
            let seqs: BTreeSet<u64> =
                [1, size / 3, size.div_ceil(2), size - 1, size].into_iter().filter(|&seq| seq >= 1).collect();
            let from_sizes: BTreeSet<u64> =
                [1, 2, size / 2, size - 1, size].into_iter().filter(|&from| from >= 1 && from <= size).collect();
            (size, seqs, from_sizes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_and_checkpoints_agree_across_a_leader_change_and_a_snapshot_install() {
    let started = Instant::now();
    let mut cluster = Cluster::start(Options { snapshot_every: Some(SNAPSHOT_EVERY), ..Options::default() }).await;
    let key = checkpoint_key(&cluster, cluster.wait_leader().await).await;

    // Before the fault: a release and 60 custom events, all signed for by the first leader.
    let first_leader = cluster.wait_leader().await;
    let (status, body) =
        cluster.post(first_leader, "/v1/releases", &json!({"service": "shop", "release": "1.0"})).await;
    cluster.check(status == 201 || status == 200, || format!("POST /v1/releases → {status} {body}"));
    append_sixty(&cluster, first_leader, "before").await;
    let head_before = cluster.local_head(first_leader).await.unwrap_or(0);
    cluster.check(head_before == 61, || format!("head {head_before} after 61 appends"));

    cluster.kill(first_leader);
    let second_leader = cluster.wait_leader().await;
    cluster.check(second_leader != first_leader, || format!("node {first_leader} still leads after its kill"));
    let leader = append_sixty(&cluster, second_leader, "after").await;
    let release =
        json!({"events": [{"id": "release-shop-2.0", "type": "release.created", "service": "shop", "release": "2.0"}]});
    append(&cluster, leader, &release).await;
    cluster.restart(first_leader).await;

    // A fresh node joins as a learner after the purge: the log it would need is gone.
    let purged = cluster.wait_purged().await;
    let learner = cluster.start_spare().await;
    cluster.add_learner(learner).await;

    let log = cluster.converged_log().await;
    let head = log.len() as u64;
    cluster.check(head == 122, || format!("the converged log holds {head} events, 122 were appended"));
    let nodes: Vec<u64> = cluster.members().into_iter().filter(|&id| cluster.is_running(id)).collect();
    cluster.check(nodes.len() == 4, || format!("running members {nodes:?}: expected 3 voters and the learner"));

    let learner_status = cluster.status(learner).await.unwrap_or(Value::Null);
    let snapshot_index = learner_status["this_node"]["snapshot_index"].as_u64();
    cluster.check(snapshot_index.is_some_and(|index| index > 0), || {
        format!("learner {learner} reports no snapshot although the leader purged up to {purged}: {learner_status}")
    });
    cluster.check(cluster.log_tail(learner, 100_000).contains("installed snapshot"), || {
        format!("learner {learner} never logged \"installed snapshot\"")
    });

    // The signing key: replicated, so one verifier string everywhere, the one /v1/cluster states.
    let reference = nodes[0];
    let key_line = format!("{key}\n");
    let cluster_id = cluster.status(reference).await.unwrap_or(Value::Null)["cluster_id"].as_str().map(str::to_string);
    let Some(cluster_id) = cluster_id else { cluster.fail("GET /v1/cluster has no cluster_id") };
    for &id in &nodes {
        let line = get_text(&cluster, id, "/v1/checkpoint/key").await;
        cluster.check(line == key_line, || {
            format!("checkpoint key of node {id} {line:?} vs node {reference} {key_line:?}")
        });
        let stated = cluster.status(id).await.unwrap_or(Value::Null)["checkpoint_key"].clone();
        cluster.check(stated.as_str() == Some(key.as_str()), || {
            format!("node {id}: /v1/cluster checkpoint_key {stated} vs /v1/checkpoint/key {key:?}")
        });
    }

    // The export: identical bytes on every node, one canonical event per line, the served log.
    let export = get_bytes(&cluster, reference, "/v1/export?consistency=local").await;
    for &id in &nodes {
        let other = get_bytes(&cluster, id, "/v1/export?consistency=local").await;
        cluster.check(other == export, || {
            format!("the exports of nodes {reference} and {id} differ ({} vs {} bytes)", export.len(), other.len())
        });
    }
    cluster.check(export.ends_with(b"\n"), || "the export does not end with a newline".into());
    let lines: Vec<&[u8]> = export[..export.len() - 1].split(|&byte| byte == b'\n').collect();
    cluster.check(lines.len() as u64 == head, || format!("the export has {} lines for {head} events", lines.len()));
    for (line, event) in lines.iter().zip(&log) {
        let parsed: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        cluster.check(&parsed == event, || {
            format!("export line {} vs served event {event}", String::from_utf8_lossy(line))
        });
    }
    let leaves: Vec<Hash> = lines.iter().map(|line| leaf_hash(line)).collect();

    // Every size, on every node: the same signed bytes, roots and proofs that check out here.
    let sizes: BTreeSet<u64> = [1, 2, 17, 64, head_before, head].into_iter().collect();
    for (size, seqs, from_sizes) in probes(&sizes) {
        let expected_root = tree_root(&leaves[..size as usize]);
        let path = format!("/v1/checkpoint?tree_size={size}&consistency=local");
        let note = get_text(&cluster, reference, &path).await;
        let note_lines: Vec<&str> = note.split('\n').collect();
        cluster.check(
            note_lines.len() == 6
                && note_lines[0] == format!("fleetlog/{cluster_id}")
                && note_lines[1] == size.to_string()
                && note_lines[3].is_empty()
                && note_lines[4].starts_with(&format!("\u{2014} fleetlog/{cluster_id} "))
                && note_lines[5].is_empty(),
            || format!("GET {path}: not a signed note of size {size} by fleetlog/{cluster_id}:\n{note}"),
        );
        let served_root = decode_hash(note_lines[2]).unwrap_or_else(|error| cluster.fail(&error));
        cluster.check(served_root == expected_root, || {
            format!(
                "size {size}: the checkpoint root {} is not the root of the export {}",
                note_lines[2],
                BASE64.encode(expected_root)
            )
        });
        for &id in &nodes {
            let other = get_text(&cluster, id, &path).await;
            cluster.check(other == note, || format!("GET {path}: node {id}\n{other}\nvs node {reference}\n{note}"));
        }

        for &seq in &seqs {
            let path = format!("/v1/proofs/inclusion?seq={seq}&tree_size={size}&consistency=local");
            let proof = get_json(&cluster, reference, &path).await;
            let checked = proof_hashes(&proof).map(|hashes| {
                cluster.check(
                    proof["seq"] == json!(seq)
                        && proof["leaf_index"] == json!(seq - 1)
                        && proof["tree_size"] == json!(size),
                    || format!("GET {path}: {proof}"),
                );
                inclusion_holds(seq - 1, size, &leaves[seq as usize - 1], &hashes, &expected_root)
            });
            cluster.check(checked == Ok(true), || format!("GET {path}: {proof} does not prove inclusion: {checked:?}"));
            for &id in &nodes {
                let other = get_bytes(&cluster, id, &path).await;
                let other: Value = serde_json::from_slice(&other).unwrap_or(Value::Null);
                cluster.check(other == proof, || format!("GET {path}: node {id} {other} vs node {reference} {proof}"));
            }
        }

        for &from_size in &from_sizes {
            let path = format!("/v1/proofs/consistency?from_size={from_size}&to_size={size}&consistency=local");
            let proof = get_json(&cluster, reference, &path).await;
            let from_root = tree_root(&leaves[..from_size as usize]);
            let checked = proof_hashes(&proof)
                .map(|hashes| consistency_holds(from_size, size, &from_root, &expected_root, &hashes));
            cluster.check(
                checked == Ok(true) && proof["from_size"] == json!(from_size) && proof["to_size"] == json!(size),
                || format!("GET {path}: {proof} does not prove consistency: {checked:?}"),
            );
            for &id in &nodes {
                let other = get_json(&cluster, id, &path).await;
                cluster.check(other == proof, || format!("GET {path}: node {id} {other} vs node {reference} {proof}"));
            }
        }
    }

    verify_with_the_cli(&cluster, &nodes, &key).await;

    eprintln!(
        "leader {first_leader} killed, {second_leader} took over; learner {learner} installed a snapshot at \
         {snapshot_index:?} (leader purged up to {purged}); {head} events, sizes {sizes:?} agree on {} nodes; {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );
}

/// `fleetlog verify` must accept the key every node serves, whatever its base64 digits are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_verify_accepts_a_checkpoint_key_with_a_plus_in_its_base64() {
    let (cluster, key) = cluster_whose_key_has_a_plus().await;
    let leader = cluster.wait_leader().await;
    let events: Vec<Value> = (1..=10).map(|n| json!({"id": format!("plus-{n}"), "type": "app.x"})).collect();
    append(&cluster, leader, &json!({"events": events})).await;
    cluster.converged_log().await;
    verify_with_the_cli(&cluster, &cluster.members(), &key).await;
}

/// A learner that crashes at each step of a snapshot install (a test-only crash point aborts its
/// process there), then restarts, ends with exactly the leader's chain and fleet view: a
/// half-installed state machine is never kept, and never served. Each round the learner is down
/// while the leader purges its log past it, so only a snapshot can bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_crashing_at_every_snapshot_install_step_recovers_the_leader_s_state() {
    let mut cluster = Cluster::start(Options { snapshot_every: Some(SNAPSHOT_EVERY), ..Options::default() }).await;
    let leader = cluster.wait_leader().await;
    common::seed_fleet(&cluster.server(leader)).await;
    let learner = cluster.start_spare().await;
    cluster.add_learner(learner).await;
    cluster.converged_log().await;

    for step in 1..=INSTALL_STEPS {
        let status = cluster.status(learner).await.unwrap_or(Value::Null);
        let learner_last = status["this_node"]["last_log_index"].as_u64().unwrap_or(0);
        cluster.kill(learner);
        // 48 Raft entries: snapshots every 20 entries keep 20 behind them, so the log is purged
        // past everything the learner holds.
        let leader = cluster.wait_leader().await;
        let leader = append_sixty(&cluster, leader, &format!("step-{step}-a")).await;
        append_sixty(&cluster, leader, &format!("step-{step}-b")).await;
        let purged = wait_purged_past(&cluster, learner_last).await;

        let point = format!("{INSTALL_CRASH_POINT}:{step}");
        cluster.set_crash_point(learner, Some(point.clone()));
        cluster.start_unwatched(learner);
        let exited = cluster.wait_exited(learner, WAIT).await;
        cluster.check(exited.is_some_and(|status| !status.success()), || {
            format!("learner {learner} with crash point {point}: {exited:?} instead of a crash")
        });
        cluster.check(cluster.log_tail(learner, 200).contains(&format!("crash point {point} reached")), || {
            format!("learner {learner} exited without reaching crash point {point} (leader purged to {purged})")
        });
        cluster.set_crash_point(learner, None);
        cluster.restart(learner).await;
        let log = cluster.converged_log().await;
        let leader = cluster.wait_leader().await;
        let (_, fleet) = cluster.get(leader, "/v1/fleet?consistency=local").await;
        let (status, learner_fleet) = cluster.get(learner, "/v1/fleet?consistency=local").await;
        cluster.check(status == 200 && learner_fleet == fleet, || {
            format!("after a crash at {point}: learner fleet {status} {learner_fleet}\nleader fleet {fleet}")
        });
        eprintln!("crash at {point}: the learner recovered all {} events", log.len());
    }
}

/// Waits until the leader's log is purged past `index`; returns the purged index.
async fn wait_purged_past(cluster: &Cluster, index: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.wait_leader().await;
        let status = cluster.status(leader).await.unwrap_or(Value::Null);
        let purged = status["this_node"]["purged_index"].as_u64().unwrap_or(0);
        if purged > index {
            return purged;
        }
        if Instant::now() > deadline {
            cluster.fail(&format!("leader {leader} did not purge past {index}: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
