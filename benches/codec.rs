//! The storage codec (`fleetlog_raft::domain::codec`, a version byte and bincode): a Raft log entry
//! holding a ledger command, written by the log store and sent to followers, and the records the
//! state machine stores: the event under its seq, and a host record, rewritten by every event
//! about that host. Events carry 256 bytes of `data`.
//!
//! Run: `cargo bench --profile dev --bench codec`.

mod common;

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetlog_raft::consensus::types::{Entry, LogId};
use fleetlog_raft::domain::codec::{decode, encode};
use fleetlog_raft::domain::event::Event;
use fleetlog_raft::domain::ledger::validate::HostStatus;
use fleetlog_raft::domain::records::{HostRecord, Observed};
use openraft::vote::leader_id_adv::CommittedLeaderId;
use openraft::EntryPayload;

use common::{committed_event, custom_command, TIME_MICROS};

fn entry(events: usize) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId { term: 3, node_id: 1 }, 1_000_000),
        payload: EntryPayload::Normal(custom_command(1, events, 0)),
    }
}

/// A host record as stored after its agent reported: registered with labels, an observed
/// release set (its desired release is resolved when read).
fn host_record() -> HostRecord {
    HostRecord {
        host: "web-0001".into(),
        service: "checkout".into(),
        env: "prod".into(),
        registered: true,
        group: Some("canary".into()),
        labels: BTreeMap::from([("rack".into(), "r12".into()), ("zone".into(), "eu-west-1a".into())]),
        registered_seq: 10,
        // Resolved at read time, never stored.
        desired: None,
        observed: Some(Observed {
            release: "2.0.0".into(),
            status: HostStatus::Running,
            applied_seq: 2_000,
            reported_seq: 2_013,
            reported_micros: TIME_MICROS,
            message: None,
        }),
        running: Some("2.0.0".into()),
        failure: None,
        health: None,
        changed_seq: 2_013,
    }
}

fn entries(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("codec entry");
    for (events, counted) in [(1usize, "1 event"), (100, "100 events")] {
        let entry = entry(events);
        let bytes = encode(&entry).expect("an entry encodes");
        assert_eq!(decode::<Entry>(&bytes).expect("an entry decodes").log_id, entry.log_id);
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(format!("encode entry of {counted} (per entry)"), |bench| {
            bench.iter(|| encode(&entry).expect("an entry encodes"))
        });
        group.bench_function(format!("decode entry of {counted} (per entry)"), |bench| {
            bench.iter(|| decode::<Entry>(&bytes).expect("an entry decodes"))
        });
    }
    group.finish();
}

fn records(criterion: &mut Criterion) {
    let event = committed_event(1_000_000);
    let event_bytes = encode(&event).expect("an event encodes");
    assert_eq!(decode::<Event>(&event_bytes).expect("an event decodes"), event);
    let host = host_record();
    let host_bytes = encode(&host).expect("a host record encodes");
    assert_eq!(decode::<HostRecord>(&host_bytes).expect("a host record decodes"), host);

    let mut group = criterion.benchmark_group("codec record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode stored event (per event)", |bench| {
        bench.iter(|| encode(&event).expect("an event encodes"))
    });
    group.bench_function("decode stored event (per event)", |bench| {
        bench.iter(|| decode::<Event>(&event_bytes).expect("an event decodes"))
    });
    group.bench_function("encode host record (per record)", |bench| {
        bench.iter(|| encode(&host).expect("a host record encodes"))
    });
    group.bench_function("decode host record (per record)", |bench| {
        bench.iter(|| decode::<HostRecord>(&host_bytes).expect("a host record decodes"))
    });
    group.finish();
}

criterion_group!(benches, entries, records);
criterion_main!(benches);
