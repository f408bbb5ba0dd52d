//! Storage tests: openraft's storage suite against the RocksDB stores, reopening, recovery of a
//! state machine that lost unsynced writes, and snapshot files.

mod common;

use common::{all_events, append, note, open_when_free, start, stop};
use fleetlog_raft::consensus::types::{StorageError, TypeConfig};
use fleetlog_raft::domain::event::{AppendOutcome, AppendRequest, ExpectedVersion};
use fleetlog_raft::domain::keys::META_LAYOUT;
use fleetlog_raft::domain::kv::{Overlay, Space};
use fleetlog_raft::domain::views::{self, EventFilter};
use fleetlog_raft::storage::{snapshot, Database, LogStore, SnapshotFiles, StateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let directory = TempDir::new().expect("temp dir");
        let database = Database::open(&directory.path().join("db")).expect("open database");
        let snapshots = SnapshotFiles::new(directory.path().join("snapshots")).expect("snapshot dir");
        let state_machine = StateMachine::open(database.clone(), snapshots.clone()).expect("open state machine");
        Ok((directory, LogStore::new(database, snapshots), state_machine))
    }
}

/// openraft's own storage suite passes against the log store and state machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(RocksBuilder).await.expect("storage suite");
}

/// Acknowledged events survive a restart with the same seqs, hashes and stream versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_finds_every_acknowledged_event() {
    let directory = TempDir::new().unwrap();
    let node = start(directory.path()).await;
    let mut acknowledged = Vec::new();
    for batch in 0..5 {
        let events = (0..3).map(|index| note(&format!("n-{batch}-{index}"), "hello")).collect();
        acknowledged.extend(append(&node, events).await);
    }
    let before = all_events(&node);
    assert_eq!(before.iter().map(|event| event.seq).collect::<Vec<_>>(), acknowledged);
    stop(node).await;

    let node = start(directory.path()).await;
    assert_eq!(all_events(&node), before);
    // Idempotency is durable: the same id still answers with its original seq.
    let request = AppendRequest {
        events: vec![note("n-0-0", "hello")],
        expected_version: ExpectedVersion::Any,
        actor: "tester".into(),
    };
    match node.append(request).await.unwrap() {
        AppendOutcome::Appended { events, duplicate: true } => assert_eq!(events[0].seq, acknowledged[0]),
        other => panic!("expected a replay, got {other:?}"),
    }
    let next = append(&node, vec![note("after", "restart")]).await;
    assert_eq!(next, vec![acknowledged.last().unwrap() + 1]);
    stop(node).await;
}

/// A crash after the log is durable but before the state machine's writes are: the state
/// machine is put back to an earlier point (as an fsync-less crash leaves it) and the node must
/// re-apply the log, ending with exactly the acknowledged events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_behind_the_log_catches_up_on_restart() {
    let directory = TempDir::new().unwrap();
    let node = start(directory.path()).await;
    append(&node, vec![note("a", "1"), note("b", "2")]).await;
    stop(node).await;

    // Remember the state machine as it is now.
    let saved = {
        let database = open_when_free(&directory.path().join("db")).await;
        let files = SnapshotFiles::new(directory.path().join("saved")).unwrap();
        files.build(&database).unwrap().1
    };

    let node = start(directory.path()).await;
    append(&node, vec![note("c", "3")]).await;
    append(&node, vec![note("d", "4"), note("e", "5")]).await;
    let acknowledged = all_events(&node);
    assert_eq!(acknowledged.len(), 5);
    stop(node).await;

    // Lose the state machine's later writes; the Raft log keeps them.
    {
        let database = open_when_free(&directory.path().join("db")).await;
        snapshot::install(&database, &saved).unwrap();
        let reader = database.snapshot_reader();
        assert_eq!(views::head(&reader).unwrap().seq, 2, "the state machine is behind");
    }

    let node = start(directory.path()).await;
    assert_eq!(all_events(&node), acknowledged);
    stop(node).await;
}

/// A data directory written before layout 2 (host records holding desired releases; no layout
/// recorded with the cluster identity) is refused at start, saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_an_older_layout_is_refused_at_start() {
    let directory = TempDir::new().unwrap();
    let node = start(directory.path()).await;
    append(&node, vec![note("a", "1")]).await;
    stop(node).await;
    let path = directory.path().join("db");
    {
        let database = open_when_free(&path).await;
        let reader = database.reader();
        assert_eq!(
            fleetlog_raft::domain::ledger::layout(&reader).unwrap(),
            Some(fleetlog_raft::domain::ledger::LAYOUT_VERSION)
        );
        // What an older build left: the same identity, no layout.
        let mut overlay = Overlay::new(&reader);
        overlay.delete(Space::Meta, META_LAYOUT.to_vec());
        let mut batch = rocksdb::WriteBatch::default();
        database.add_writes(&mut batch, overlay.into_writes());
        database.write_synced(batch).unwrap();
    }
    let database = open_when_free(&path).await;
    let snapshots = SnapshotFiles::new(directory.path().join("snapshots")).unwrap();
    let error = StateMachine::open(database, snapshots).err().expect("an older layout must be refused").to_string();
    assert!(error.contains("older fleetlog") && error.contains("recreate the data directory"), "{error}");
}

/// A snapshot file round-trips every key space; a damaged one is refused before anything is
/// installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_files_round_trip_and_refuse_damage() {
    let source = TempDir::new().unwrap();
    let node = start(source.path()).await;
    append(&node, (0..20).map(|index| note(&format!("s-{index}"), "x")).collect()).await;
    let expected = all_events(&node);
    stop(node).await;
    let database = open_when_free(&source.path().join("db")).await;
    let files = SnapshotFiles::new(source.path().join("out")).unwrap();
    let (meta, path) = files.build(&database).unwrap();
    assert!(meta.last_log_id.is_some());
    drop(database);

    let target = TempDir::new().unwrap();
    let database = Database::open(&target.path().join("db")).unwrap();
    let installed = snapshot::install(&database, &path).unwrap();
    assert_eq!(installed.last_log_id, meta.last_log_id);
    let reader = database.snapshot_reader();
    assert_eq!(views::read_events(&reader, &EventFilter::default(), 1, 100).unwrap().events, expected);

    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let damaged = target.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    assert!(snapshot::verify(&damaged).is_err());
    std::fs::write(&damaged, &bytes[..bytes.len() - 10]).unwrap();
    assert!(snapshot::verify(&damaged).is_err());
}
