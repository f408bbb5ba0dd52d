//! The byte budget of one replication request: openraft asks the log reader for up to
//! `max_payload_entries` entries and sends what it returns in one request, so the reader cuts the
//! entries it returns to a few megabytes.

use openraft::EntryPayload;

use crate::consensus::types::{Entry, LogId};

/// Most bytes of entries one append-entries request carries. openraft bounds requests by entry
/// count only, while one entry may hold a megabyte of events; an answer that waits on a follower's
/// fsync of hundreds of megabytes would hold back every answer pipelined behind it.
const APPEND_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Rough bytes of an entry or event beyond the events' data.
const OVERHEAD_BYTES: usize = 256;

/// Drops the entries after the byte budget, always keeping the first, and returns the log id of
/// the last one kept when any were dropped.
pub fn keep_within_budget(entries: &mut Vec<Entry>) -> Option<LogId> {
    let mut bytes = 0;
    let mut kept = 0;
    for entry in entries.iter() {
        bytes += entry_bytes(entry);
        if kept > 0 && bytes > APPEND_BYTES_MAX {
            break;
        }
        kept += 1;
    }
    if kept == entries.len() {
        return None;
    }
    entries.truncate(kept);
    entries.last().map(|entry| entry.log_id)
}

fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(command) => command
            .requests
            .iter()
            .flat_map(|request| &request.events)
            .map(|event| event.data.len() + OVERHEAD_BYTES)
            .sum::<usize>()
            .max(OVERHEAD_BYTES),
        EntryPayload::Blank | EntryPayload::Membership(_) => OVERHEAD_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::leader_id_adv::CommittedLeaderId;

    use super::*;
    use crate::domain::event::{AppendRequest, ExpectedVersion, LedgerCommand, ProposedEvent};

    fn entry(index: u64, data_bytes: usize) -> Entry {
        let mut event = ProposedEvent::new(format!("e-{index}"), "test.note");
        event.data = format!("{{\"pad\":\"{}\"}}", "x".repeat(data_bytes));
        let request = AppendRequest { events: vec![event], expected_version: ExpectedVersion::Any, actor: "t".into() };
        let command = LedgerCommand { time_micros: 1, requests: vec![request], identity: None };
        Entry {
            log_id: LogId::new(CommittedLeaderId { term: 1, node_id: 1 }, index),
            payload: EntryPayload::Normal(command),
        }
    }

    #[test]
    fn small_batches_go_whole() {
        let mut entries: Vec<Entry> = (1..=100).map(|index| entry(index, 300)).collect();
        assert_eq!(keep_within_budget(&mut entries), None);
        assert_eq!(entries.len(), 100);
    }

    #[test]
    fn large_batches_are_cut_after_the_budget_but_never_empty() {
        let mut entries: Vec<Entry> = (1..=10).map(|index| entry(index, 900 * 1024)).collect();
        let last = keep_within_budget(&mut entries).expect("cut");
        assert_eq!(entries.len(), 2);
        assert_eq!(last.index, 2);
        let mut huge = vec![entry(7, 5 * 1024 * 1024)];
        assert_eq!(keep_within_budget(&mut huge), None, "a single entry always goes");
        assert_eq!(huge.len(), 1);
    }
}
