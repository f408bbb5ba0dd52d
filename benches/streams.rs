//! Server-Sent Events framing, the per-subscriber work of the streams in
//! `fleetlog_api::streams`: turning committed events (`GET /v1/subscribe`) and directives
//! (`GET /v1/watch/{host}`) into `id:`/`event:`/`data:` text, one message after another in one
//! buffer, as a stream does for each batch it sends. An event's served JSON is rendered once
//! for all subscribers when it is committed (`CommittedEvent::new`; that rendering is timed in
//! `benches/ledger.rs`), so here it is ready. Events carry 256 bytes of `data`.
//!
//! Run: `cargo bench --profile dev --bench streams`.

mod common;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fleetlog_api::streams::push_message;
use fleetlog_api::wire::directive_json;
use fleetlog_raft::domain::ledger::Directive;
use fleetlog_raft::storage::feed::CommittedEvent;

use common::committed_event;

/// As the log stream frames each event it sends (`push_event` in `api/src/streams/log.rs`).
fn frame_events(events: &[CommittedEvent]) -> Bytes {
    let mut text = String::new();
    for event in events {
        push_message(&mut text, event.event.seq, event.event.event_type.as_str(), &event.json);
    }
    Bytes::from(text)
}

/// As the watch stream frames each directive (`push_directives` in `api/src/streams/host.rs`):
/// the directive's JSON is written per message.
fn frame_directives(directives: &[Directive]) -> Bytes {
    let mut text = String::new();
    for directive in directives {
        push_message(&mut text, directive.seq, "directive", &directive_json(directive));
    }
    Bytes::from(text)
}

fn directive(seq: u64) -> Directive {
    Directive {
        host: format!("web-{seq:04}"),
        service: "checkout".into(),
        env: "prod".into(),
        release: "2.0.0".into(),
        seq,
        cause: "wave.started".into(),
        deployment: Some("checkout-prod-42".into()),
    }
}

fn framing(criterion: &mut Criterion) {
    let events: Vec<CommittedEvent> = (1..=100).map(|seq| CommittedEvent::new(committed_event(seq))).collect();
    let directives: Vec<Directive> = (1..=100).map(directive).collect();
    let first = frame_events(&events[..1]);
    assert!(first.starts_with(b"id: 1\nevent: bench.append\ndata: {") && first.ends_with(b"}\n\n"), "{first:?}");

    let mut group = criterion.benchmark_group("sse");
    // (messages in the batch, the batch of events named, the batch of directives named)
    let batches = [(1usize, "1 committed event", "1 directive"), (100, "100 committed events", "100 directives")];
    for (count, events_named, directives_named) in batches {
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(format!("frame {events_named} (per batch)"), |bench| {
            bench.iter(|| frame_events(&events[..count]))
        });
        group.bench_function(format!("frame {directives_named} (per batch)"), |bench| {
            bench.iter(|| frame_directives(&directives[..count]))
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
