//! RFC 9162 Merkle tree hashes, paths and proof checks written from the RFC's definitions and
//! nothing else: the tests compare the product's tree (`fleetlog_raft::domain::merkle`) against this one,
//! so it must not share any of its code.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(line: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(line);
    hasher.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two strictly smaller than `size` (≥ 2): where RFC 9162 splits a tree
/// (its `k`).
pub fn split(size: usize) -> usize {
    let mut power = 1;
    while power * 2 < size {
        power *= 2;
    }
    power
}

/// MTH(D[n]), RFC 9162 section 2.1.1, by its recursive definition.
pub fn tree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        size => {
            let left_size = split(size);
            node_hash(&tree_root(&leaves[..left_size]), &tree_root(&leaves[left_size..]))
        }
    }
}

/// PATH(m, D[n]), RFC 9162 section 2.1.3.1.
pub fn inclusion_path(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let left_size = split(leaves.len());
    if index < left_size {
        let mut path = inclusion_path(index, &leaves[..left_size]);
        path.push(tree_root(&leaves[left_size..]));
        path
    } else {
        let mut path = inclusion_path(index - left_size, &leaves[left_size..]);
        path.push(tree_root(&leaves[..left_size]));
        path
    }
}

/// PROOF(m, D[n]) = SUBPROOF(m, D[n], true), RFC 9162 section 2.1.4.1.
pub fn consistency_path(old_size: usize, leaves: &[Hash]) -> Vec<Hash> {
    /// `whole_old_tree` is the RFC's `b`: whether the old tree is a complete subtree so far.
    fn subproof(old_size: usize, leaves: &[Hash], whole_old_tree: bool) -> Vec<Hash> {
        if old_size == leaves.len() {
            return if whole_old_tree { Vec::new() } else { vec![tree_root(leaves)] };
        }
        let left_size = split(leaves.len());
        if old_size <= left_size {
            let mut proof = subproof(old_size, &leaves[..left_size], whole_old_tree);
            proof.push(tree_root(&leaves[left_size..]));
            proof
        } else {
            let mut proof = subproof(old_size - left_size, &leaves[left_size..], false);
            proof.push(tree_root(&leaves[..left_size]));
            proof
        }
    }
    subproof(old_size, leaves, true)
}

/// Shifts both indexes right until `node` is odd or zero (RFC 9162's "right-shift fn and sn
/// equally until either LSB(fn) is set or fn is 0").
pub fn climb_while_left_child(node: &mut u64, last: &mut u64) {
    while *node & 1 == 0 && *node != 0 {
        *node >>= 1;
        *last >>= 1;
    }
}

/// RFC 9162 section 2.1.3.2, step by step; `node` and `last` are its `fn` and `sn`.
pub fn inclusion_holds(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut node, mut last) = (index, size - 1);
    let mut result = *leaf;
    for sibling in path {
        if last == 0 {
            return false;
        }
        if node & 1 == 1 || node == last {
            result = node_hash(sibling, &result);
            climb_while_left_child(&mut node, &mut last);
        } else {
            result = node_hash(&result, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    last == 0 && result == *root
}

/// RFC 9162 section 2.1.4.2, step by step (equal sizes: an empty proof and equal roots); `node`
/// and `last` are its `fn` and `sn`.
pub fn consistency_holds(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if proof.is_empty() {
        return false;
    }
    let mut path = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let (mut node, mut last) = (first - 1, second - 1);
    while node & 1 == 1 {
        node >>= 1;
        last >>= 1;
    }
    let (mut first_result, mut second_result) = (path[0], path[0]);
    for hash in &path[1..] {
        if last == 0 {
            return false;
        }
        if node & 1 == 1 || node == last {
            first_result = node_hash(hash, &first_result);
            second_result = node_hash(hash, &second_result);
            climb_while_left_child(&mut node, &mut last);
        } else {
            second_result = node_hash(&second_result, hash);
        }
        node >>= 1;
        last >>= 1;
    }
    first_result == *first_root && second_result == *second_root && last == 0
}
