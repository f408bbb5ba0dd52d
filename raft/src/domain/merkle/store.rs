//! The server's copy of the tree: the hash of every complete subtree, stored once when its last
//! leaf is applied, in `Space::Merkle` under its post-order position.
//!
//! Appending a leaf writes it and the complete subtrees it closes (two nodes on average), reading
//! one stored sibling per closed level. Any tree size is a row of at most 64 complete subtrees
//! (one per bit of the size), so a past root, an inclusion proof or a consistency proof reads
//! O(log n) nodes and never recomputes the tree.

use super::{node_hash, split_point, Hash, ProofError};
use crate::domain::kv::{KvRead, Overlay, Space};
use crate::error::{Error, Result};

/// Key of the complete subtree of `2^height` leaves starting at leaf `index * 2^height`: its
/// position in post-order, which is the order nodes are created in. Keys in that order put a
/// leaf's low siblings in the same storage block, so a proof reads a few blocks, not one per level
/// (the few upper-level nodes stay cached).
fn node_key(height: u32, index: u64) -> [u8; 8] {
    // The node is created while appending leaf `last`, as its `height`-th new node; the leaves
    // before `last` created 2·last − popcount(last) nodes.
    let last = ((index + 1) << height) - 1;
    let position = 2 * last - u64::from(last.count_ones()) + u64::from(height);
    position.to_be_bytes()
}

/// Adds leaf `index` (its event is seq `index + 1`) to the tree in `state`. Leaves must come in
/// order: every earlier leaf is already there.
pub fn append(state: &mut Overlay<'_>, index: u64, leaf: Hash) -> Result<()> {
    state.put(Space::Merkle, node_key(0, index).to_vec(), leaf.to_vec());
    let (mut height, mut position, mut hash) = (0u32, index, leaf);
    // A right child closes its parent: combine with the stored left sibling and go up.
    while position & 1 == 1 {
        let left = StoredTree::new(&*state).node(height, position - 1)?;
        hash = node_hash(&left, &hash);
        height += 1;
        position >>= 1;
        state.put(Space::Merkle, node_key(height, position).to_vec(), hash.to_vec());
    }
    Ok(())
}

/// Reads roots and proofs from the stored complete subtrees. Callers keep sizes within the
/// number of leaves applied in what `kv` sees; a missing node means damaged storage.
pub struct StoredTree<'kv> {
    kv: &'kv dyn KvRead,
}

impl<'kv> StoredTree<'kv> {
    pub fn new(kv: &'kv dyn KvRead) -> StoredTree<'kv> {
        StoredTree { kv }
    }

    fn node(&self, height: u32, index: u64) -> Result<Hash> {
        let bytes = self
            .kv
            .get(Space::Merkle, &node_key(height, index))?
            .ok_or_else(|| Error::Corrupt(format!("merkle node at height {height}, index {index} is missing")))?;
        bytes.as_slice().try_into().map_err(|_| Error::Corrupt("merkle node is not 32 bytes".into()))
    }

    /// Hash of the `size` leaves from `start`, where `start` is a multiple of the smallest power
    /// of two ≥ `size` (every range RFC 9162's recursion visits is). Reads one node per bit of
    /// `size`: its complete subtrees, largest first, folded from the right.
    fn range(&self, start: u64, size: u64) -> Result<Hash> {
        debug_assert!(size > 0);
        let mut subtrees = Vec::with_capacity(size.count_ones() as usize);
        let mut offset = start;
        for height in (0..64u32).rev() {
            if size & (1 << height) != 0 {
                subtrees.push(self.node(height, offset >> height)?);
                offset += 1 << height;
            }
        }
        let last = subtrees.pop().expect("size > 0 has a bit set");
        Ok(subtrees.iter().rev().fold(last, |right, left| node_hash(left, &right)))
    }

    /// Root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash> {
        if size == 0 {
            return Ok(super::empty_root());
        }
        self.range(0, size)
    }

    /// The audit path of leaf `index` in the tree of `size` leaves, nearest sibling first
    /// (RFC 9162 section 2.1.3.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size }.into());
        }
        let mut path = Vec::new();
        self.inclusion_path(index, 0, size, &mut path)?;
        Ok(path)
    }

    /// Appends PATH(index, leaves[start..start + size]) to `path`.
    fn inclusion_path(&self, index: u64, start: u64, size: u64, path: &mut Vec<Hash>) -> Result<()> {
        if size <= 1 {
            return Ok(());
        }
        let split = split_point(size);
        if index < split {
            self.inclusion_path(index, start, split, path)?;
            path.push(self.range(start + split, size - split)?);
        } else {
            self.inclusion_path(index - split, start + split, size - split, path)?;
            path.push(self.range(start, split)?);
        }
        Ok(())
    }

    /// The proof that the tree of `from_size` is a prefix of the tree of `to_size`
    /// (RFC 9162 section 2.1.4.1).
    pub fn consistency_proof(&self, from_size: u64, to_size: u64) -> Result<Vec<Hash>> {
        if from_size == 0 || from_size > to_size {
            return Err(ProofError::SizesOutOfOrder { from: from_size, to: to_size }.into());
        }
        let mut path = Vec::new();
        self.consistency_path(from_size, 0, to_size, true, &mut path)?;
        Ok(path)
    }

    /// Appends SUBPROOF(old_size, leaves[start..start + size], whole) to `path`. `whole` says
    /// whether the old tree's root is exactly this subtree (then the verifier already has it).
    fn consistency_path(&self, old_size: u64, start: u64, size: u64, whole: bool, path: &mut Vec<Hash>) -> Result<()> {
        if old_size == size {
            if !whole {
                path.push(self.range(start, size)?);
            }
            return Ok(());
        }
        let split = split_point(size);
        if old_size <= split {
            self.consistency_path(old_size, start, split, whole, path)?;
            path.push(self.range(start + split, size - split)?);
        } else {
            self.consistency_path(old_size - split, start + split, size - split, false, path)?;
            path.push(self.range(start, split)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::node_key;

    #[test]
    fn nodes_are_keyed_in_the_order_they_are_created() {
        // Post-order of the tree of 8 leaves: every node right after its two children.
        let created = [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0), (0, 4), (0, 5), (1, 2), (0, 6)];
        for (position, (height, index)) in created.into_iter().enumerate() {
            assert_eq!(u64::from_be_bytes(node_key(height, index)), position as u64, "({height}, {index})");
        }
        assert_eq!(u64::from_be_bytes(node_key(3, 0)), 14);
    }
}
