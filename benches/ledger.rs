//! Hot paths of the pure ledger: the canonical JSON (RFC 8785) an event is hashed and served as,
//! and applying commands of appends through `ledger::apply_command` over an in-memory store.
//! Every event carries 256 bytes of `data`.
//!
//! Run: `cargo bench --profile dev --bench ledger`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetlog_raft::domain::canonical::to_canonical_string;
use fleetlog_raft::domain::kv::{MemoryKv, Overlay};
use fleetlog_raft::domain::ledger::apply_command;

use common::{committed_event, custom_command, custom_proposal};

/// Events already in the ledger the apply benches append after, so the head, the stream head
/// and the Merkle siblings are read from the base store as they are in a running node.
const EVENTS_BEFORE: usize = 1_000;

fn canonical(criterion: &mut Criterion) {
    let event = committed_event(1);
    let proposal = custom_proposal(1);
    let data: serde_json::Value = serde_json::from_str(&event.data).expect("the payload is JSON");
    let mut group = criterion.benchmark_group("canonical");
    group.throughput(Throughput::Elements(1));
    group.bench_function("event json without hash (per event)", |bench| bench.iter(|| event.canonical_without_hash()));
    // What `apply` computes for each event it writes.
    group.bench_function("event json without hash + sha256 (per event)", |bench| bench.iter(|| event.compute_hash()));
    // The served text; the Merkle leaf and every stream message are made from it.
    group.bench_function("event json with hash, as served (per event)", |bench| bench.iter(|| event.canonical_json()));
    // Idempotency: computed for every proposed event, on the leader and on each replica.
    group.bench_function("proposal fingerprint, json + sha256 (per event)", |bench| {
        bench.iter(|| proposal.fingerprint())
    });
    // The generic RFC 8785 writer the leader runs over a client's `data` before proposing.
    group.bench_function("to_canonical_string of a 256-byte data object (per object)", |bench| {
        bench.iter(|| to_canonical_string(&data).expect("the payload is canonicalisable"))
    });
    group.finish();
}

fn applying(criterion: &mut Criterion) {
    let mut kv = MemoryKv::new();
    let mut overlay = Overlay::new(&kv);
    apply_command(&mut overlay, &custom_command(10, EVENTS_BEFORE / 10, 0)).expect("the prefill applies");
    let writes = overlay.into_writes();
    kv.apply(writes);

    // (name, requests, events per request). The write path batches many client requests into
    // one command: 64 requests of 1 event against 1 request of 100, per event, shows what each
    // request costs on its own.
    let shapes = [
        ("1 request of 1 event (per command)", 1, 1),
        ("1 request of 100 events (per command)", 1, 100),
        ("64 requests of 1 event (per command)", 64, 1),
    ];
    let mut group = criterion.benchmark_group("apply");
    for (name, requests, events_per_request) in shapes {
        // Ids follow the prefill's, so every event is new; `kv` never changes, so each
        // iteration applies the same command to the same state.
        let command = custom_command(requests, events_per_request, EVENTS_BEFORE);
        let applied = apply_command(&mut Overlay::new(&kv), &command).expect("no storage failure in memory");
        assert_eq!(applied.events.len(), requests * events_per_request, "every event is appended");
        group.throughput(Throughput::Elements((requests * events_per_request) as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| {
                let mut overlay = Overlay::new(&kv);
                apply_command(&mut overlay, &command).expect("no storage failure in memory");
                // Dropping the writes is timed too: a node drops them once they are committed.
                overlay.into_writes().len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, canonical, applying);
criterion_main!(benches);
