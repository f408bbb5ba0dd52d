//! The ledger as an RFC 9162 Merkle tree: hashing, proof verification and a streaming root.
//!
//! Leaves are the events in seq order; leaf `i` (0-based) is event `i + 1`. Its data is the
//! event's canonical JSON exactly as every endpoint serves it (with `hash`), so an auditor hashes
//! an export line as it is. This half is pure: the server's stored tree is in [`store`], and the
//! client side (`fleetlog verify`) needs only what is here.

pub mod store;

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Root of the empty tree: the hash of nothing (RFC 9162 section 2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `size` (`size` ≥ 2): where RFC 9162 splits a tree.
pub(crate) fn split_point(size: u64) -> u64 {
    debug_assert!(size >= 2);
    1 << (63 - (size - 1).leading_zeros())
}

/// Moves a node on the right edge of the tree up the levels where its subtree has no sibling
/// (RFC 9162: "right-shift both fn and sn equally until either LSB(fn) is set or fn is 0").
fn climb_lone_levels(position: &mut u64, last: &mut u64) {
    while *position & 1 == 0 && *position != 0 {
        *position >>= 1;
        *last >>= 1;
    }
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("a consistency proof needs 1 ≤ from_size ≤ to_size, not {from} and {to}")]
    SizesOutOfOrder { from: u64, to: u64 },
    #[error("the proof has {0} hashes, which does not fit the tree sizes")]
    WrongLength(usize),
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// Checks an inclusion proof (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut position, mut last) = (index, size - 1);
    let mut computed = *leaf;
    for sibling in proof {
        if last == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if position & 1 == 1 || position == last {
            computed = node_hash(sibling, &computed);
            climb_lone_levels(&mut position, &mut last);
        } else {
            computed = node_hash(&computed, sibling);
        }
        position >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `from_size` with `from_root` is a prefix of the tree of `to_size`
/// with `to_root` (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    from_size: u64,
    to_size: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if from_size == 0 || from_size > to_size {
        return Err(ProofError::SizesOutOfOrder { from: from_size, to: to_size });
    }
    if from_size == to_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength(proof.len()));
        }
        return if from_root == to_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength(0));
    }
    // When the old tree is a complete subtree its root is the first node of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from_size.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let (mut position, mut last) = (from_size - 1, to_size - 1);
    while position & 1 == 1 {
        position >>= 1;
        last >>= 1;
    }
    let (mut old, mut new) = (path[0], path[0]);
    for node in &path[1..] {
        if last == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if position & 1 == 1 || position == last {
            old = node_hash(node, &old);
            new = node_hash(node, &new);
            climb_lone_levels(&mut position, &mut last);
        } else {
            new = node_hash(&new, node);
        }
        position >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if old != *from_root || new != *to_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Computes roots while leaves stream in, keeping one hash per level (O(log n) memory).
#[derive(Clone, Debug, Default)]
pub struct RootBuilder {
    /// Roots of the complete subtrees that make up the tree so far, largest (leftmost) first,
    /// with their heights.
    peaks: Vec<(u32, Hash)>,
    size: u64,
}

impl RootBuilder {
    pub fn new() -> RootBuilder {
        RootBuilder::default()
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut height = 0;
        let mut hash = leaf;
        while let Some((top_height, top)) = self.peaks.last() {
            if *top_height != height {
                break;
            }
            hash = node_hash(top, &hash);
            height += 1;
            self.peaks.pop();
        }
        self.peaks.push((height, hash));
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some((_, last)) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |right, (_, left)| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests;
