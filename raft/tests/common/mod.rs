//! Helpers shared by the storage tests: a single-node [`Node`] in a directory, appends, reads.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use fleetlog_raft::consensus::node::{Node, NodeConfig};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion, ProposedEvent};
use fleetlog_raft::domain::views::{self, EventFilter};
use fleetlog_raft::storage::Database;

pub fn note(id: &str, text: &str) -> ProposedEvent {
    let mut event = ProposedEvent::new(id, "test.note");
    event.stream = Some("notes".into());
    event.data = format!("{{\"text\":\"{text}\"}}");
    event
}

pub async fn start(directory: &Path) -> Node {
    let config = NodeConfig::single(directory.to_path_buf(), "127.0.0.1:1".into());
    // The previous node's threads may still hold the database lock for a moment.
    for _ in 0..100 {
        match Node::start(config.clone()).await {
            Ok(node) => {
                wait_ready(&node).await;
                return node;
            }
            Err(error) if error.to_string().contains("lock") => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => panic!("node start failed: {error}"),
        }
    }
    panic!("database stayed locked");
}

pub async fn wait_ready(node: &Node) {
    for _ in 0..200 {
        if node.is_ready() && node.ensure_linearizable().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node never became ready");
}

pub async fn append(node: &Node, events: Vec<ProposedEvent>) -> Vec<u64> {
    let request = AppendRequest { events, expected_version: ExpectedVersion::Any, actor: "tester".into() };
    match node.append(request).await.expect("append") {
        AppendOutcome::Appended { events, duplicate: false } => events.iter().map(|event| event.seq).collect(),
        other => panic!("append not accepted: {other:?}"),
    }
}

pub fn all_events(node: &Node) -> Vec<fleetlog_raft::domain::event::Event> {
    let reader = node.database().snapshot_reader();
    views::read_events(&reader, &EventFilter::default(), 1, 10_000).unwrap().events
}

pub async fn stop(node: Node) {
    node.shutdown().await;
    drop(node);
}

pub async fn open_when_free(path: &Path) -> Database {
    for _ in 0..100 {
        match Database::open(path) {
            Ok(database) => return database,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Database::open(path).expect("open database")
}

/// Every key and value of the state machine, by key space: two dumps are equal exactly when two
/// state machines are. The install mark is bookkeeping of an install, not state: it is left out.
pub type Dump = std::collections::BTreeMap<(u8, Vec<u8>), Vec<u8>>;

pub fn dump(reader: &dyn fleetlog_raft::domain::kv::KvRead) -> Dump {
    use fleetlog_raft::domain::kv::{Direction, Space};
    let mut dump = Dump::new();
    for space in Space::ALL {
        reader
            .scan(space, &[], &[0xFF; 32], Direction::Forward, &mut |key, value| {
                if space == Space::Meta && key == fleetlog_raft::storage::snapshot::META_INSTALLING {
                    return Ok(true);
                }
                dump.insert((space.tag(), key.to_vec()), value.to_vec());
                Ok(true)
            })
            .expect("scan");
    }
    dump
}

/// Starts a single node in `directory`, appends `count` notes with ids `prefix-N`, and stops it.
pub async fn ledger_with_notes(directory: &Path, prefix: &str, count: usize) {
    let node = start(directory).await;
    for chunk in (0..count).collect::<Vec<_>>().chunks(7) {
        let events = chunk.iter().map(|index| note(&format!("{prefix}-{index}"), prefix)).collect();
        append(&node, events).await;
    }
    stop(node).await;
}
