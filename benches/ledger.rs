//! Hot paths of the pure ledger: canonical JSON + hash of an event, and applying appends.
//! Run: `cargo bench --bench ledger`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fleetlog_raft::event::{AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent};
use fleetlog_raft::kv::{MemoryKv, Overlay};
use fleetlog_raft::ledger::apply_command;

fn proposal(index: usize) -> ProposedEvent {
    let mut event = ProposedEvent::new(format!("bench-{index}"), "bench.append");
    event.data = format!("{{\"pad\":\"{}\"}}", "x".repeat(244));
    event
}

fn command(events: usize, offset: usize) -> LedgerCommand {
    LedgerCommand {
        time_micros: 1,
        requests: vec![AppendRequest {
            events: (0..events).map(|index| proposal(offset + index)).collect(),
            expected_version: ExpectedVersion::Any,
            actor: "bench".into(),
        }],
        identity: None,
    }
}

fn hashing(criterion: &mut Criterion) {
    let mut kv = MemoryKv::new();
    let mut overlay = Overlay::new(&kv);
    let applied = apply_command(&mut overlay, &command(1, 0)).unwrap();
    let writes = overlay.into_writes();
    kv.apply(writes);
    let event = applied.events[0].clone();
    criterion
        .bench_function("canonical json + sha256 of a 256-byte event", |bench| bench.iter(|| event.compute_hash()));
}

fn applying(criterion: &mut Criterion) {
    for events in [1usize, 100] {
        criterion.bench_function(&format!("apply one append of {events} events"), |bench| {
            bench.iter_batched(
                || (MemoryKv::new(), command(events, 0)),
                |(kv, command)| {
                    let mut overlay = Overlay::new(&kv);
                    apply_command(&mut overlay, &command).unwrap();
                    overlay.into_writes().len()
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, hashing, applying);
criterion_main!(benches);
