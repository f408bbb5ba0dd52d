//! The ordered key-value interface the ledger reads and writes through, and the write overlay that
//! gathers one apply step's changes so they can be committed atomically (or dropped on rejection).
//!
//! Production reads come from RocksDB (`storage::db`); tests read from [`MemoryKv`]. The ledger
//! never sees which one it has.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Result;

/// The separate key spaces of the state machine. Each maps to one RocksDB column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// seq → event.
    Events,
    /// event id → seq and fingerprint (durable idempotency).
    EventIds,
    /// stream, version → seq.
    StreamVersions,
    /// stream → last version.
    StreamHeads,
    /// (field, value, seq) → nothing: secondary indexes for log filters.
    EventIndex,
    /// (time, seq) → nothing: maps a moment to the last event at or before it.
    Times,
    /// current view records (hosts, deployments, releases, environments).
    State,
    /// every version of every view record, keyed by record key and seq, for "as of" reads.
    History,
    /// head of the ledger, last applied log id, membership.
    Meta,
    /// (height, index) → hash of a complete subtree of the events' Merkle tree.
    Merkle,
}

impl Space {
    /// Listed in tag order: a tag is the position here, stored in snapshot files.
    pub const ALL: [Space; 10] = [
        Space::Events,
        Space::EventIds,
        Space::StreamVersions,
        Space::StreamHeads,
        Space::EventIndex,
        Space::Times,
        Space::State,
        Space::History,
        Space::Meta,
        Space::Merkle,
    ];

    /// Column family name; stable on disk.
    pub fn name(self) -> &'static str {
        match self {
            Space::Events => "events",
            Space::EventIds => "event_ids",
            Space::StreamVersions => "stream_versions",
            Space::StreamHeads => "stream_heads",
            Space::EventIndex => "event_index",
            Space::Times => "times",
            Space::State => "state",
            Space::History => "history",
            Space::Meta => "meta",
            Space::Merkle => "merkle",
        }
    }

    pub fn tag(self) -> u8 {
        Space::ALL.iter().position(|space| *space == self).expect("space is listed") as u8
    }

    pub fn from_tag(tag: u8) -> Option<Space> {
        Space::ALL.get(tag as usize).copied()
    }
}

/// What a scan calls for each entry: `Ok(true)` to go on, `Ok(false)` to stop.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// Scan direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

/// Read access to an ordered key-value store.
pub trait KvRead {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits the entries with `start <= key < end` in `direction` order until `visit` returns
    /// false or fails (the failure is returned).
    fn scan(&self, space: Space, start: &[u8], end: &[u8], direction: Direction, visit: &mut Visitor<'_>)
        -> Result<()>;

    /// The entry with the greatest key in `[start, end)`.
    fn last_in(&self, space: Space, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut found = None;
        self.scan(space, start, end, Direction::Reverse, &mut |key, value| {
            found = Some((key.to_vec(), value.to_vec()));
            Ok(false)
        })?;
        Ok(found)
    }
}

/// Pending writes: `None` deletes the key.
pub type Writes = BTreeMap<(Space, Vec<u8>), Option<Vec<u8>>>;

/// Writes layered over a base store: reads see the writes first.
pub struct Overlay<'base> {
    base: &'base dyn KvRead,
    writes: Writes,
}

impl<'base> Overlay<'base> {
    pub fn new(base: &'base dyn KvRead) -> Self {
        Overlay { base, writes: Writes::new() }
    }

    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert((space, key), Some(value));
    }

    pub fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.writes.insert((space, key), None);
    }

    /// Adds writes gathered by a nested overlay that succeeded.
    pub fn absorb(&mut self, writes: Writes) {
        if self.writes.is_empty() {
            // The common case (the first request of an entry): take the map instead of
            // re-inserting every key; a rollback of 10,000 hosts writes 20,000.
            self.writes = writes;
            return;
        }
        self.writes.extend(writes);
    }

    pub fn into_writes(self) -> Writes {
        self.writes
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

impl KvRead for Overlay<'_> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(&(space, key.to_vec())) {
            Some(written) => Ok(written.clone()),
            None => self.base.get(space, key),
        }
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let range =
            self.writes.range((Bound::Included((space, start.to_vec())), Bound::Excluded((space, end.to_vec()))));
        let mut pending: Vec<(&[u8], Option<&[u8]>)> =
            range.map(|((_, key), value)| (key.as_slice(), value.as_deref())).collect();
        if direction == Direction::Reverse {
            pending.reverse();
        }
        // `before(a, b)`: a comes before b in scan order.
        let before = |left: &[u8], right: &[u8]| match direction {
            Direction::Forward => left < right,
            Direction::Reverse => left > right,
        };
        let mut next_pending = 0;
        let mut keep_going = true;
        self.base.scan(space, start, end, direction, &mut |key, value| {
            // Pending writes that sort before this base key come first.
            while next_pending < pending.len() && before(pending[next_pending].0, key) {
                let (pending_key, pending_value) = pending[next_pending];
                next_pending += 1;
                if let Some(pending_value) = pending_value {
                    keep_going = visit(pending_key, pending_value)?;
                    if !keep_going {
                        return Ok(false);
                    }
                }
            }
            // A pending write of the same key replaces (or deletes) the base value.
            let (key, value) = match pending.get(next_pending) {
                Some((pending_key, pending_value)) if *pending_key == key => {
                    next_pending += 1;
                    match pending_value {
                        Some(pending_value) => (key, *pending_value),
                        None => return Ok(true),
                    }
                }
                _ => (key, value),
            };
            keep_going = visit(key, value)?;
            Ok(keep_going)
        })?;
        if keep_going {
            for (pending_key, pending_value) in &pending[next_pending..] {
                if let Some(pending_value) = pending_value {
                    if !visit(pending_key, pending_value)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// An in-memory store for tests and models: plain data, no IO.
#[derive(Default, Clone, Debug)]
pub struct MemoryKv {
    entries: BTreeMap<(Space, Vec<u8>), Vec<u8>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv::default()
    }

    pub fn apply(&mut self, writes: Writes) {
        for ((space, key), value) in writes {
            match value {
                Some(value) => {
                    self.entries.insert((space, key), value);
                }
                None => {
                    self.entries.remove(&(space, key));
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry, in key order (space first).
    pub fn iter(&self) -> impl Iterator<Item = (Space, &[u8], &[u8])> {
        self.entries.iter().map(|((space, key), value)| (*space, key.as_slice(), value.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl KvRead for MemoryKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.entries.get(&(space, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        direction: Direction,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let range =
            self.entries.range((Bound::Included((space, start.to_vec())), Bound::Excluded((space, end.to_vec()))));
        visit_in_order(range.map(|((_, key), value)| (key.as_slice(), value.as_slice())), direction, visit)
    }
}

/// Visits `entries` (given in key order) in `direction` until `visit` returns false or fails:
/// the `scan` of an in-memory store.
pub fn visit_in_order<'a>(
    entries: impl DoubleEndedIterator<Item = (&'a [u8], &'a [u8])>,
    direction: Direction,
    visit: &mut Visitor<'_>,
) -> Result<()> {
    let mut visit_all = |entries: &mut dyn Iterator<Item = (&'a [u8], &'a [u8])>| {
        for (key, value) in entries {
            if !visit(key, value)? {
                break;
            }
        }
        Ok(())
    };
    match direction {
        Direction::Forward => visit_all(&mut entries.into_iter()),
        Direction::Reverse => visit_all(&mut entries.rev()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(kv: &dyn KvRead, direction: Direction) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut seen = Vec::new();
        kv.scan(Space::State, b"a", b"z", direction, &mut |key, value| {
            seen.push((key.to_vec(), value.to_vec()));
            Ok(true)
        })
        .unwrap();
        seen
    }

    #[test]
    fn overlay_scan_merges_writes_and_deletes_in_both_directions() {
        let mut base = MemoryKv::new();
        let mut writes = Writes::new();
        for key in ["b", "d", "f"] {
            writes.insert((Space::State, key.as_bytes().to_vec()), Some(b"base".to_vec()));
        }
        writes.insert((Space::Meta, b"c".to_vec()), Some(b"other space".to_vec()));
        base.apply(writes);

        let mut overlay = Overlay::new(&base);
        overlay.put(Space::State, b"a".to_vec(), b"new".to_vec());
        overlay.put(Space::State, b"d".to_vec(), b"changed".to_vec());
        overlay.delete(Space::State, b"f".to_vec());
        overlay.put(Space::State, b"g".to_vec(), b"new".to_vec());

        let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"a".to_vec(), b"new".to_vec()),
            (b"b".to_vec(), b"base".to_vec()),
            (b"d".to_vec(), b"changed".to_vec()),
            (b"g".to_vec(), b"new".to_vec()),
        ];
        assert_eq!(collect(&overlay, Direction::Forward), expected);
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(collect(&overlay, Direction::Reverse), reversed);
        assert_eq!(overlay.get(Space::State, b"f").unwrap(), None);
        assert_eq!(overlay.get(Space::State, b"b").unwrap(), Some(b"base".to_vec()));
    }

    #[test]
    fn overlay_scan_stops_when_visitor_says_so() {
        let base = MemoryKv::new();
        let mut overlay = Overlay::new(&base);
        for key in ["b", "c", "d"] {
            overlay.put(Space::State, key.as_bytes().to_vec(), vec![]);
        }
        let mut seen = 0;
        overlay
            .scan(Space::State, b"a", b"z", Direction::Forward, &mut |_, _| {
                seen += 1;
                Ok(seen < 2)
            })
            .unwrap();
        assert_eq!(seen, 2);
    }
}
