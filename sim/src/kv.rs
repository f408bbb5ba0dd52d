//! A replica's key-value state, as the simulated disk keeps it: a persistent ordered map, so
//! that a snapshot shares the state it was taken from instead of copying it. Copying every key
//! of every replica's state at each snapshot build was a quarter of the simulator's time.

use std::ops::Bound;
use std::sync::Arc;

use fleetlog_raft::domain::kv::{visit_in_order, Direction, KvRead, Space, Visitor, Writes};
use fleetlog_raft::Result;
use imbl::OrdMap;

/// A key: its space and its bytes, shared between versions of the map.
type Key = (Space, Arc<[u8]>);

/// The values keys had before a write (`None`: absent).
pub type Previous = Vec<(Key, Option<Arc<[u8]>>)>;

/// Clones share everything until one of them is written to, and then only the nodes of the
/// map on the written keys' paths are copied (keys and values are shared, not copied).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedKv {
    entries: OrdMap<Key, Arc<[u8]>>,
}

impl SharedKv {
    pub fn new() -> Self {
        SharedKv::default()
    }

    pub fn apply(&mut self, writes: Writes) {
        self.apply_undoable(writes);
    }

    /// Applies `writes` and returns what undoes them: each key's value before, in the order
    /// written (undo them in reverse).
    pub fn apply_undoable(&mut self, writes: Writes) -> Previous {
        let mut previous = Vec::with_capacity(writes.len());
        for ((space, key), value) in writes {
            let key = (space, Arc::from(key));
            let before = match value {
                Some(value) => self.entries.insert(key.clone(), Arc::from(value)),
                None => self.entries.remove(&key),
            };
            previous.push((key, before));
        }
        previous
    }

    /// Puts back the values [`SharedKv::apply_undoable`] returned.
    pub fn undo(&mut self, previous: Previous) {
        for (key, before) in previous.into_iter().rev() {
            match before {
                Some(value) => self.entries.insert(key, value),
                None => self.entries.remove(&key),
            };
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in key order (space first).
    pub fn iter(&self) -> impl Iterator<Item = (Space, &[u8], &[u8])> {
        self.entries.iter().map(|((space, key), value)| (*space, &key[..], &value[..]))
    }
}

impl KvRead for SharedKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.entries.get(&(space, Arc::from(key))).map(|value| value.to_vec()))
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
            self.entries.range((Bound::Included((space, Arc::from(start))), Bound::Excluded((space, Arc::from(end)))));
        visit_in_order(range.map(|((_, key), value)| (&key[..], &value[..])), direction, visit)
    }
}

#[cfg(test)]
mod tests {
    use fleetlog_raft::domain::kv::MemoryKv;

    use super::*;

    /// A write: the space, the key and the value (`None` deletes).
    type Write<'a> = (Space, &'a [u8], Option<&'a [u8]>);

    fn writes(pairs: &[Write<'_>]) -> Writes {
        pairs.iter().map(|(space, key, value)| ((*space, key.to_vec()), value.map(<[u8]>::to_vec))).collect()
    }

    fn scanned(kv: &dyn KvRead, space: Space, start: &[u8], end: &[u8], direction: Direction) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        kv.scan(space, start, end, direction, &mut |key, _| {
            keys.push(key.to_vec());
            Ok(true)
        })
        .unwrap();
        keys
    }

    #[test]
    fn reads_as_the_product_memory_store_does() {
        let batch = writes(&[
            (Space::Meta, b"a", Some(b"1")),
            (Space::Meta, b"c", Some(b"3")),
            (Space::Meta, b"b", Some(b"2")),
            (Space::Events, b"a", Some(b"event")),
        ]);
        let mut shared = SharedKv::new();
        let mut memory = MemoryKv::new();
        shared.apply(batch.clone());
        memory.apply(batch);
        let removal = writes(&[(Space::Meta, b"b", None)]);
        shared.apply(removal.clone());
        memory.apply(removal);
        assert!(shared.iter().eq(memory.iter()));
        assert_eq!(shared.get(Space::Meta, b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(shared.get(Space::Meta, b"b").unwrap(), None);
        for direction in [Direction::Forward, Direction::Reverse] {
            assert_eq!(
                scanned(&shared, Space::Meta, b"a", b"z", direction),
                scanned(&memory, Space::Meta, b"a", b"z", direction)
            );
        }
        assert_eq!(scanned(&shared, Space::Meta, b"a", b"c", Direction::Forward), vec![b"a".to_vec()]);
    }

    #[test]
    fn an_undone_write_leaves_the_state_as_it_was() {
        let mut state = SharedKv::new();
        state.apply(writes(&[(Space::Meta, b"kept", Some(b"1")), (Space::Meta, b"changed", Some(b"2"))]));
        let before = state.clone();
        let previous = state.apply_undoable(writes(&[
            (Space::Meta, b"changed", Some(b"3")),
            (Space::Meta, b"kept", None),
            (Space::Meta, b"added", Some(b"4")),
        ]));
        assert_ne!(state, before);
        state.undo(previous);
        assert_eq!(state, before);
    }

    #[test]
    fn a_clone_keeps_its_state_when_the_original_is_written() {
        let mut state = SharedKv::new();
        state.apply(writes(&[(Space::Meta, b"key", Some(b"old"))]));
        let snapshot = state.clone();
        state.apply(writes(&[(Space::Meta, b"key", Some(b"new")), (Space::Meta, b"other", Some(b"x"))]));
        assert_eq!(snapshot.get(Space::Meta, b"key").unwrap(), Some(b"old".to_vec()));
        assert_eq!(snapshot.len(), 1);
        assert_eq!(state.get(Space::Meta, b"key").unwrap(), Some(b"new".to_vec()));
    }
}
