//! The whole apply step of a replica, on RocksDB: the ledger's rules over a reader of the
//! stored state, then the resulting writes as one unsynced batch, as the state machine does for
//! every committed entry on every replica. `ledger` times the rules alone over memory; the
//! difference between the two is what the store costs.
//!
//! Run: `cargo bench --profile dev --bench storage`.

mod common;

use std::cell::Cell;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fleetlog_raft::domain::kv::Overlay;
use fleetlog_raft::domain::ledger::apply_command;
use fleetlog_raft::storage::Database;
use rocksdb::WriteBatch;

use common::custom_command;

// The allocator the server runs with: the apply step allocates per event, and glibc's malloc
// would make it look slower than it is in `fleetlog serve`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events in the store before the timed ones, so reads find a populated database.
const EVENTS_BEFORE: usize = 10_000;

/// Applies one command on top of the store and writes its effects: one replica's apply.
fn apply_and_write(database: &Database, command: &fleetlog_raft::domain::event::LedgerCommand) -> usize {
    let reader = database.reader();
    let mut overlay = Overlay::new(&reader);
    let applied = apply_command(&mut overlay, command).expect("no storage failure");
    let events = applied.events.len();
    let writes = overlay.into_writes();
    let mut batch = WriteBatch::default();
    database.add_writes(&mut batch, writes);
    database.write_unsynced(batch).expect("the batch is written");
    events
}

fn applying(criterion: &mut Criterion) {
    let directory = tempfile::TempDir::new().expect("a scratch directory");
    let database = Database::open(&directory.path().join("db")).expect("the database opens");
    for first in (0..EVENTS_BEFORE).step_by(100) {
        apply_and_write(&database, &custom_command(1, 100, first));
    }
    // Each iteration appends new events (new ids): the ledger grows as a node's does.
    let next = Cell::new(EVENTS_BEFORE);
    let shapes = [("1 request of 100 events (per command)", 1, 100), ("64 requests of 1 event (per command)", 64, 1)];
    let mut group = criterion.benchmark_group("apply on rocksdb");
    for (name, requests, events_per_request) in shapes {
        let events = requests * events_per_request;
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(name, |bench| {
            bench.iter_batched(
                || {
                    let first = next.get();
                    next.set(first + events);
                    custom_command(requests, events_per_request, first)
                },
                |command| {
                    let applied = apply_and_write(&database, &command);
                    assert_eq!(applied, events, "every event is appended");
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, applying);
criterion_main!(benches);
