//! Applying committed entries: the ledger's rules run over the stored state, and everything the
//! entries change is gathered to be written at once. The RocksDB state machine writes it; the
//! simulator (fleetlog-sim) runs this same step over its in-memory disk. No I/O here.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use openraft::EntryPayload;

use crate::consensus::types::{Entry, LedgerResponse, LogId, NodeId, StoredMembership};
use crate::domain::codec;
use crate::domain::invariant;
use crate::domain::keys::{META_APPLIED, META_MEMBERSHIP, META_MEMBERS_EVER};
use crate::domain::kv::{KvRead, Overlay, Space, Writes};
use crate::domain::ledger;
use crate::domain::records;
use crate::error::Result;
use crate::storage::feed::{AppliedBatch, CommittedEvent};

/// The effects of applied entries, computed but not necessarily written yet.
pub struct Computed {
    /// One per entry, in order.
    pub responses: Vec<LedgerResponse>,
    /// The events the entries appended, for the feed.
    pub published: AppliedBatch,
    pub layers: Vec<ledger::LayerChange>,
    pub registrations: Vec<ledger::RegistrationChange>,
    /// Everything to write, `last_applied` and the membership included; `None` once written.
    pub writes: Option<Writes>,
}

/// Applies entries in order on top of the state `reader` reads. The RocksDB state machine runs
/// it on a blocking thread.
pub fn compute(reader: &dyn KvRead, entries: Vec<Entry>) -> Result<Computed> {
    let mut overlay = Overlay::new(reader);
    let mut responses = Vec::with_capacity(entries.len());
    let mut published = AppliedBatch::default();
    let mut layers = Vec::new();
    let mut registrations = Vec::new();
    let mut last_applied: Option<LogId> = None;
    let mut membership: Option<StoredMembership> = None;
    // The node ids the applied memberships name, for the set of every id ever a member.
    let mut named: BTreeSet<NodeId> = BTreeSet::new();
    for entry in entries {
        if let Some(previous) = &last_applied {
            // Invariant: the applied index only moves forward, one entry at a time.
            assert!(entry.log_id.index == previous.index + 1, "apply skipped from {previous} to {}", entry.log_id);
        }
        last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => responses.push(LedgerResponse::default()),
            EntryPayload::Normal(command) => {
                let log_id = entry.log_id;
                let applied =
                    std::panic::catch_unwind(AssertUnwindSafe(|| ledger::apply_command(&mut overlay, &command)))
                        .unwrap_or_else(|panic| {
                            invariant::violated(format!(
                                "applying Raft entry {log_id}: {}",
                                invariant::panic_text(&*panic)
                            ))
                        })?;
                responses.push(LedgerResponse { outcomes: applied.outcomes });
                let events = applied.events.into_iter().zip(applied.rendered);
                published.events.extend(events.map(|(event, json)| Arc::new(CommittedEvent::rendered(event, json))));
                layers.extend(applied.layers);
                registrations.extend(applied.registrations);
            }
            EntryPayload::Membership(members) => {
                named.extend(members.nodes().map(|(node, _)| *node));
                membership = Some(StoredMembership::new(Some(entry.log_id), members));
                responses.push(LedgerResponse::default());
            }
        }
    }
    check_chain(&published);
    published.head_seq = records::head(&overlay)?.seq;
    overlay.put(Space::Meta, META_APPLIED.to_vec(), codec::encode(&last_applied)?);
    if let Some(membership) = &membership {
        overlay.put(Space::Meta, META_MEMBERSHIP.to_vec(), codec::encode(membership)?);
    }
    if !named.is_empty() {
        let mut ever = members_ever(&overlay)?;
        ever.extend(named);
        overlay.put(Space::Meta, META_MEMBERS_EVER.to_vec(), codec::encode(&ever)?);
    }
    Ok(Computed { responses, published, layers, registrations, writes: Some(overlay.into_writes()) })
}

/// Every node id ever a member of the cluster, as far as the applied log tells. A state older
/// than the record holds at least the membership it last applied.
pub fn members_ever(reader: &dyn KvRead) -> Result<BTreeSet<NodeId>> {
    if let Some(bytes) = reader.get(Space::Meta, META_MEMBERS_EVER)? {
        return codec::decode(&bytes);
    }
    let last: Option<StoredMembership> = match reader.get(Space::Meta, META_MEMBERSHIP)? {
        Some(bytes) => Some(codec::decode(&bytes)?),
        None => None,
    };
    Ok(last.map(|last| last.membership().nodes().map(|(node, _)| *node).collect()).unwrap_or_default())
}

/// Invariant: seqs are gapless and each event links to the previous hash.
fn check_chain(batch: &AppliedBatch) {
    for pair in batch.events.windows(2) {
        let (earlier, later) = (&pair[0].event, &pair[1].event);
        if later.seq != earlier.seq + 1 || later.prev_hash != earlier.hash {
            invariant::violated(format!("the chain breaks between seq {} and seq {}", earlier.seq, later.seq));
        }
    }
}
