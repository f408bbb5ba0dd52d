//! The invariants of a run, checked while it runs and once it has settled.
//!
//! While it runs, every replica's state machine reports what it applies: two replicas never
//! apply different entries at one log index, never give one seq two different events, and each
//! applies its log one index after the other. The workload reports every operation that got an
//! answer. Once the run has settled, [`Checker::check_history`] checks the answers against the
//! final ledger: every acknowledged event is there exactly once, at its seq, with its hash;
//! appends acknowledged before another began come before it; reads never go back in time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use fleetlog_raft::consensus::types::{Entry, LogId};
use fleetlog_raft::domain::event::Event;
use fleetlog_raft::storage::feed::CommittedEvent;
use tokio::time::Instant;

use crate::trace::Trace;

/// An append that was answered `Appended`.
#[derive(Clone, Debug)]
pub struct AckedAppend {
    pub client: usize,
    pub invoked: Instant,
    pub completed: Instant,
    /// (seq, id, hash) of each event, as the answer gave them.
    pub events: Vec<(u64, String, [u8; 32])>,
    /// The answer said every id was already there (a retry).
    pub duplicate: bool,
}

/// A linearizable read of the ledger's head that was answered.
#[derive(Clone, Debug)]
pub struct AnsweredRead {
    pub client: usize,
    pub invoked: Instant,
    pub completed: Instant,
    pub head_seq: u64,
}

/// Clones share one checker.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Mutex<CheckerInner>>,
    trace: Trace,
}

#[derive(Default)]
struct CheckerInner {
    /// The first entry any replica applied at each index.
    entries: BTreeMap<u64, Entry>,
    /// The first event any replica applied at each seq: its hash.
    chain: HashMap<u64, [u8; 32]>,
    appends: Vec<AckedAppend>,
    reads: Vec<AnsweredRead>,
    violations: Vec<String>,
}

impl Checker {
    pub fn new(trace: Trace) -> Checker {
        Checker { inner: Arc::default(), trace }
    }

    fn lock(&self) -> MutexGuard<'_, CheckerInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a broken invariant; the same one found again (by a check that repeats) once.
    pub fn violation(&self, text: impl Into<String>) {
        let text = text.into();
        let mut inner = self.lock();
        if inner.violations.contains(&text) {
            return;
        }
        inner.violations.push(text.clone());
        drop(inner);
        self.trace.line(format!("VIOLATION {text}"));
    }

    /// Notes something worth seeing in the trace.
    pub fn note(&self, text: impl AsRef<str>) {
        self.trace.line(text);
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// A replica is about to apply `entries`, its applied position being `previous`: they must
    /// follow it, and equal what any other replica applied at the same indexes.
    pub fn applying(&self, node: u64, previous: Option<LogId>, entries: &[Entry]) {
        let mut problems = Vec::new();
        {
            let mut inner = self.lock();
            if let (Some(previous), Some(first)) = (previous, entries.first()) {
                if first.log_id.index != previous.index + 1 {
                    problems.push(format!(
                        "node {node} applied index {} right after index {}",
                        first.log_id.index, previous.index
                    ));
                }
            }
            for entry in entries {
                match inner.entries.get(&entry.log_id.index) {
                    Some(known) if known != entry => {
                        problems.push(format!(
                            "node {node} applied {} at index {}, where another replica applied {}",
                            entry.log_id, entry.log_id.index, known.log_id
                        ));
                    }
                    Some(_) => {}
                    None => {
                        inner.entries.insert(entry.log_id.index, entry.clone());
                    }
                }
            }
        }
        for problem in problems {
            self.violation(problem);
        }
    }

    /// A replica appended `events` to its ledger: each seq must have the same hash everywhere.
    pub fn appended(&self, node: u64, events: &[Arc<CommittedEvent>]) {
        let mut problems = Vec::new();
        {
            let mut inner = self.lock();
            for committed in events {
                let event = &committed.event;
                match inner.chain.get(&event.seq) {
                    Some(hash) if *hash != event.hash => problems.push(format!(
                        "node {node} applied seq {} with hash {}, another replica with {}",
                        event.seq,
                        hex::encode(event.hash),
                        hex::encode(hash)
                    )),
                    Some(_) => {}
                    None => {
                        inner.chain.insert(event.seq, event.hash);
                    }
                }
            }
        }
        for problem in problems {
            self.violation(problem);
        }
    }

    /// A replica installed a snapshot whose ledger ends at `head_seq` with `head_hash`.
    pub fn installed(&self, node: u64, last: Option<LogId>, head_seq: u64, head_hash: [u8; 32]) {
        let known = self.lock().chain.get(&head_seq).copied();
        self.trace.line(format!("node {node} installed a snapshot up to {last:?} (seq {head_seq})"));
        if let Some(known) = known {
            if head_seq > 0 && known != head_hash {
                self.violation(format!("node {node} installed a snapshot whose seq {head_seq} has another hash"));
            }
        }
    }

    /// The hash of the event at `seq`, as the first replica to apply it computed it.
    pub fn chain_hash(&self, seq: u64) -> Option<[u8; 32]> {
        self.lock().chain.get(&seq).copied()
    }

    pub fn acked_append(&self, append: AckedAppend) {
        self.lock().appends.push(append);
    }

    pub fn answered_read(&self, read: AnsweredRead) {
        self.lock().reads.push(read);
    }

    /// Every entry applied anywhere, in index order.
    pub fn applied_entries(&self) -> Vec<Entry> {
        self.lock().entries.values().cloned().collect()
    }

    /// Checks the answers the clients got against the final ledger (`events`, all of them).
    pub fn check_history(&self, events: &[Event]) {
        let (appends, reads) = {
            let inner = self.lock();
            (inner.appends.clone(), inner.reads.clone())
        };
        let mut problems = Vec::new();
        let by_seq: HashMap<u64, &Event> = events.iter().map(|event| (event.seq, event)).collect();
        let mut seen_ids: HashMap<&str, u64> = HashMap::new();
        for event in events {
            if let Some(other) = seen_ids.insert(event.id.as_str(), event.seq) {
                problems.push(format!("event id {} is in the ledger twice (seq {other} and {})", event.id, event.seq));
            }
        }
        for append in &appends {
            for (seq, id, hash) in &append.events {
                match by_seq.get(seq) {
                    Some(event) if event.id == *id && event.hash == *hash => {}
                    Some(event) => problems.push(format!(
                        "client {} was told {id} is at seq {seq}, but seq {seq} holds {}",
                        append.client, event.id
                    )),
                    None => problems.push(format!(
                        "client {} was told {id} is at seq {seq}, but the ledger ends at {}: an acknowledged event was lost",
                        append.client,
                        events.len()
                    )),
                }
            }
        }
        // Real-time order: what was acknowledged before an operation began is before it.
        let mut finished: Vec<(Instant, u64)> = appends
            .iter()
            .filter(|append| !append.duplicate)
            .filter_map(|append| append.events.iter().map(|(seq, _, _)| *seq).max().map(|seq| (append.completed, seq)))
            .collect();
        finished.sort();
        let mut highest_so_far = Vec::with_capacity(finished.len());
        let mut highest = 0;
        for (_, seq) in &finished {
            highest = highest.max(*seq);
            highest_so_far.push(highest);
        }
        let acknowledged_before = |moment: Instant| -> u64 {
            let count = finished.partition_point(|(completed, _)| *completed < moment);
            if count == 0 {
                0
            } else {
                highest_so_far[count - 1]
            }
        };
        for append in appends.iter().filter(|append| !append.duplicate) {
            let Some(lowest) = append.events.iter().map(|(seq, _, _)| *seq).min() else { continue };
            let before = acknowledged_before(append.invoked);
            if lowest <= before {
                problems.push(format!(
                    "client {} got seq {lowest}, yet seq {before} was acknowledged before it asked",
                    append.client
                ));
            }
        }
        let mut last_read: HashMap<usize, u64> = HashMap::new();
        for read in &reads {
            let before = acknowledged_before(read.invoked);
            if read.head_seq < before {
                problems.push(format!(
                    "client {} read head {} after seq {before} was acknowledged: a stale read",
                    read.client, read.head_seq
                ));
            }
            if let Some(previous) = last_read.insert(read.client, read.head_seq) {
                if read.head_seq < previous {
                    problems
                        .push(format!("client {} read head {} after reading {previous}", read.client, read.head_seq));
                }
            }
        }
        for problem in problems {
            self.violation(problem);
        }
    }

    /// (appends acknowledged, reads answered)
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.appends.len(), inner.reads.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fleetlog_raft::domain::event::GENESIS_HASH;

    use super::*;

    fn event(seq: u64, id: &str) -> Event {
        Event {
            seq,
            id: id.into(),
            stream: "s".into(),
            version: seq,
            event_type: "sim.note".into(),
            time_micros: 0,
            actor: "t".into(),
            service: None,
            env: None,
            host: None,
            release: None,
            deployment: None,
            data: "{}".into(),
            prev_hash: GENESIS_HASH,
            hash: [seq as u8; 32],
        }
    }

    fn append(client: usize, invoked: Instant, completed: Instant, events: &[(u64, &str)]) -> AckedAppend {
        AckedAppend {
            client,
            invoked,
            completed,
            events: events.iter().map(|(seq, id)| (*seq, id.to_string(), [*seq as u8; 32])).collect(),
            duplicate: false,
        }
    }

    fn checked(setup: impl FnOnce(&Checker, Instant), ledger: &[Event]) -> Vec<String> {
        let checker = Checker::new(Trace::new(false));
        setup(&checker, Instant::now());
        checker.check_history(ledger);
        checker.violations()
    }

    #[test]
    fn a_consistent_history_passes() {
        let ledger = [event(1, "a"), event(2, "b")];
        let violations = checked(
            |checker, start| {
                let second = start + Duration::from_secs(1);
                checker.acked_append(append(0, start, second, &[(1, "a")]));
                checker.acked_append(append(
                    1,
                    second + Duration::from_secs(1),
                    second + Duration::from_secs(2),
                    &[(2, "b")],
                ));
                checker.answered_read(AnsweredRead { client: 0, invoked: second, completed: second, head_seq: 1 });
            },
            &ledger,
        );
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn lost_moved_and_doubled_events_are_violations() {
        let ledger = [event(1, "a"), event(2, "a")];
        let violations = checked(
            |checker, start| {
                checker.acked_append(append(0, start, start, &[(3, "c")]));
                checker.acked_append(append(0, start, start, &[(2, "b")]));
            },
            &ledger,
        );
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[0].contains("in the ledger twice"));
        assert!(violations[1].contains("an acknowledged event was lost"));
        assert!(violations[2].contains("seq 2 holds a"));
    }

    #[test]
    fn going_back_in_time_is_a_violation() {
        let ledger = [event(1, "a"), event(2, "b")];
        let violations = checked(
            |checker, start| {
                let later = start + Duration::from_secs(5);
                // b was acknowledged at seq 2 before a was even asked for, yet a got seq 1.
                checker.acked_append(append(1, start, start + Duration::from_secs(1), &[(2, "b")]));
                checker.acked_append(append(0, start + Duration::from_secs(2), later, &[(1, "a")]));
                // A read after both answers with a head before them, then another read goes back.
                checker.answered_read(AnsweredRead { client: 2, invoked: later, completed: later, head_seq: 2 });
                checker.answered_read(AnsweredRead { client: 2, invoked: later, completed: later, head_seq: 1 });
            },
            &ledger,
        );
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[0].contains("got seq 1, yet seq 2 was acknowledged before it asked"));
        assert!(violations[1].contains("a stale read"));
        assert!(violations[2].contains("read head 1 after reading 2"));
    }

    #[test]
    fn replicas_applying_different_entries_or_hashes_are_violations() {
        use openraft::vote::leader_id_adv::CommittedLeaderId;
        use openraft::vote::RaftLeaderId;
        use openraft::EntryPayload;
        let entry = |term: u64, index: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        };
        let checker = Checker::new(Trace::new(false));
        checker.applying(1, None, &[entry(1, 1), entry(1, 2)]);
        checker.applying(2, None, &[entry(1, 1), entry(2, 2)]);
        checker.applying(3, Some(entry(1, 1).log_id), &[entry(1, 3)]);
        let violations = checker.violations();
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].contains("node 2 applied"));
        assert!(violations[1].contains("right after index 1"));
    }
}
