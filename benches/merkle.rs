//! The events' Merkle tree (RFC 9162) as the ledger grows it: hashing an event's served JSON
//! into a leaf, and `merkle::store::append` adding consecutive leaves to a stored tree of
//! 100,000 leaves (an in-memory store under a write overlay, as in `ledger::apply_command`).
//!
//! Run: `cargo bench --profile dev --bench merkle`.

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetlog_raft::domain::kv::{MemoryKv, Overlay};
use fleetlog_raft::domain::merkle::{leaf_hash, store, Hash};

use common::committed_event;

/// Leaves the stored tree holds before the appends being measured.
const LEAVES_BEFORE: u64 = 100_000;

/// Leaves appended under one overlay before it is dropped and the next run starts again at
/// leaf `LEAVES_BEFORE`: a command's worth. It keeps the tree at about 100,000 leaves however
/// many iterations Criterion asks for, and the overlay as small as one command's.
const LEAVES_PER_OVERLAY: u64 = 64;

fn leaf(index: u64) -> Hash {
    leaf_hash(&index.to_be_bytes())
}

fn leaf_hashing(criterion: &mut Criterion) {
    // The leaf is the event exactly as served, with its hash.
    let served = committed_event(1).canonical_json();
    let mut group = criterion.benchmark_group("merkle");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("leaf_hash of a {}-byte served event (per leaf)", served.len()), |bench| {
        bench.iter(|| leaf_hash(served.as_bytes()))
    });
    group.finish();
}

fn appending(criterion: &mut Criterion) {
    let mut kv = MemoryKv::new();
    let mut overlay = Overlay::new(&kv);
    for index in 0..LEAVES_BEFORE {
        store::append(&mut overlay, index, leaf(index)).expect("leaves come in order");
    }
    let writes = overlay.into_writes();
    kv.apply(writes);
    // Hashed up front so the timed part is the append alone.
    let leaves: Vec<Hash> = (LEAVES_BEFORE..LEAVES_BEFORE + LEAVES_PER_OVERLAY).map(leaf).collect();

    let mut group = criterion.benchmark_group("merkle");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append a leaf to a tree of 100,000 (per leaf)", |bench| {
        bench.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            let mut remaining = iterations;
            while remaining > 0 {
                let count = remaining.min(LEAVES_PER_OVERLAY);
                let mut overlay = Overlay::new(&kv);
                let started = Instant::now();
                for (index, leaf) in (LEAVES_BEFORE..).zip(&leaves[..count as usize]) {
                    store::append(&mut overlay, index, *leaf).expect("leaves come in order");
                }
                elapsed += started.elapsed();
                // Dropped outside the timed part: the writes would go to storage in one batch.
                drop(overlay);
                remaining -= count;
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, leaf_hashing, appending);
criterion_main!(benches);
