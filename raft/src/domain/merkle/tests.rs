//! The stored tree and the verifiers against a second, naive implementation of RFC 9162 that
//! recomputes every hash from all the leaves.

use rand::{Rng, SeedableRng};

use super::store::{self, StoredTree};
use super::*;
use crate::domain::kv::{MemoryKv, Overlay};

/// MTH(D[n]) straight from the definition.
fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = naive_split(n);
            node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

fn naive_split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// PATH(m, D[n]) straight from the definition.
fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = naive_split(n);
    let mut path;
    if m < k {
        path = naive_path(m, &leaves[..k]);
        path.push(naive_root(&leaves[k..]));
    } else {
        path = naive_path(m - k, &leaves[k..]);
        path.push(naive_root(&leaves[..k]));
    }
    path
}

/// SUBPROOF(m, D[n], b) straight from the definition.
fn naive_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole { Vec::new() } else { vec![naive_root(leaves)] };
    }
    let k = naive_split(n);
    let mut proof;
    if m <= k {
        proof = naive_subproof(m, &leaves[..k], whole);
        proof.push(naive_root(&leaves[k..]));
    } else {
        proof = naive_subproof(m - k, &leaves[k..], false);
        proof.push(naive_root(&leaves[..k]));
    }
    proof
}

fn leaves(count: usize) -> Vec<Hash> {
    (0..count).map(|index| leaf_hash(format!("event {index}").as_bytes())).collect()
}

fn stored(leaves: &[Hash]) -> MemoryKv {
    let mut kv = MemoryKv::new();
    for (index, leaf) in leaves.iter().enumerate() {
        let writes = {
            let mut overlay = Overlay::new(&kv);
            store::append(&mut overlay, index as u64, *leaf).unwrap();
            overlay.into_writes()
        };
        kv.apply(writes);
    }
    kv
}

fn flipped(proof: &[Hash], position: usize) -> Vec<Hash> {
    let mut changed = proof.to_vec();
    changed[position][position % 32] ^= 1;
    changed
}

#[test]
fn every_root_and_proof_up_to_300_leaves_matches_the_naive_tree() {
    let all = leaves(300);
    let kv = stored(&all);
    let tree = StoredTree::new(&kv);
    let roots: Vec<Hash> = (0..=300).map(|n| naive_root(&all[..n])).collect();
    for n in 1..=300usize {
        assert_eq!(tree.root(n as u64).unwrap(), roots[n], "root of {n}");
        for index in 0..n {
            let proof = tree.inclusion_proof(index as u64, n as u64).unwrap();
            assert_eq!(proof, naive_path(index, &all[..n]), "inclusion of {index} in {n}");
            verify_inclusion(index as u64, n as u64, &all[index], &proof, &roots[n]).unwrap();
        }
        for m in 1..=n {
            let proof = tree.consistency_proof(m as u64, n as u64).unwrap();
            assert_eq!(proof, naive_subproof(m, &all[..n], true), "consistency {m} → {n}");
            verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &proof).unwrap();
        }
    }
    assert_eq!(tree.root(0).unwrap(), roots[0]);
}

#[test]
fn the_verifiers_refuse_every_altered_proof() {
    let all = leaves(300);
    let kv = stored(&all);
    let tree = StoredTree::new(&kv);
    for n in [2u64, 3, 7, 8, 9, 64, 100, 255, 256, 257, 300] {
        let root = tree.root(n).unwrap();
        for index in [0, 1, n / 2, n - 2, n - 1] {
            let leaf = all[index as usize];
            let proof = tree.inclusion_proof(index, n).unwrap();
            for position in 0..proof.len() {
                assert!(verify_inclusion(index, n, &leaf, &flipped(&proof, position), &root).is_err());
            }
            assert!(verify_inclusion(index, n, &all[(index as usize + 1) % n as usize], &proof, &root).is_err());
            if index + 1 < n {
                assert!(verify_inclusion(index + 1, n, &leaf, &proof, &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(leaf);
            assert!(verify_inclusion(index, n, &leaf, &longer, &root).is_err());
            if !proof.is_empty() {
                assert!(verify_inclusion(index, n, &leaf, &proof[..proof.len() - 1], &root).is_err());
            }
        }
        for m in [1, 2, n / 3 + 1, n - 1] {
            let old_root = tree.root(m).unwrap();
            let proof = tree.consistency_proof(m, n).unwrap();
            for position in 0..proof.len() {
                assert!(verify_consistency(m, n, &old_root, &root, &flipped(&proof, position)).is_err());
            }
            let other_old = tree.root(m - 1).unwrap();
            assert!(verify_consistency(m, n, &other_old, &root, &proof).is_err(), "{m} → {n}");
            assert!(verify_consistency(m, n, &old_root, &tree.root(n - 1).unwrap(), &proof).is_err());
            if !proof.is_empty() {
                assert!(verify_consistency(m, n, &old_root, &root, &proof[..proof.len() - 1]).is_err());
            }
        }
    }
    assert!(verify_consistency(0, 5, &empty_root(), &tree.root(5).unwrap(), &[]).is_err());
    assert!(verify_consistency(6, 5, &tree.root(6).unwrap(), &tree.root(5).unwrap(), &[]).is_err());
    assert!(tree.inclusion_proof(5, 5).is_err());
    assert!(tree.consistency_proof(0, 5).is_err());
}

#[test]
fn random_large_trees_match_the_naive_tree() {
    let mut random = rand::rngs::StdRng::seed_from_u64(9162);
    let all = leaves(70_000);
    let kv = stored(&all);
    let tree = StoredTree::new(&kv);
    for _ in 0..12 {
        let n = random.gen_range(1_000..=all.len());
        let root = naive_root(&all[..n]);
        assert_eq!(tree.root(n as u64).unwrap(), root, "root of {n}");
        let index = random.gen_range(0..n);
        let proof = tree.inclusion_proof(index as u64, n as u64).unwrap();
        assert_eq!(proof, naive_path(index, &all[..n]));
        verify_inclusion(index as u64, n as u64, &all[index], &proof, &root).unwrap();
        let m = random.gen_range(1..=n);
        let proof = tree.consistency_proof(m as u64, n as u64).unwrap();
        assert_eq!(proof, naive_subproof(m, &all[..n], true));
        verify_consistency(m as u64, n as u64, &naive_root(&all[..m]), &root, &proof).unwrap();
    }
}

#[test]
fn the_streaming_root_matches_the_naive_root_at_every_size() {
    let all = leaves(600);
    let mut builder = RootBuilder::new();
    assert_eq!(builder.root(), naive_root(&[]));
    for (index, leaf) in all.iter().enumerate() {
        builder.push(*leaf);
        assert_eq!(builder.size(), index as u64 + 1);
        assert_eq!(builder.root(), naive_root(&all[..=index]), "size {}", index + 1);
    }
}

#[test]
fn a_stored_tree_reads_a_logarithmic_number_of_nodes() {
    // 2^20 - 1 leaves: the worst case for a row of subtrees (one per bit).
    struct Counting<'a> {
        inner: &'a MemoryKv,
        reads: std::cell::Cell<usize>,
    }
    impl crate::domain::kv::KvRead for Counting<'_> {
        fn get(&self, space: crate::domain::kv::Space, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
            self.reads.set(self.reads.get() + 1);
            self.inner.get(space, key)
        }
        fn scan(
            &self,
            space: crate::domain::kv::Space,
            start: &[u8],
            end: &[u8],
            direction: crate::domain::kv::Direction,
            visit: &mut crate::domain::kv::Visitor<'_>,
        ) -> crate::Result<()> {
            self.inner.scan(space, start, end, direction, visit)
        }
    }
    let count = (1 << 16) - 1;
    let kv = stored(&leaves(count));
    let counting = Counting { inner: &kv, reads: std::cell::Cell::new(0) };
    let tree = StoredTree::new(&counting);
    let size = count as u64;
    tree.root(size).unwrap();
    assert_eq!(counting.reads.get(), 16);
    for index in [0, size / 2, size - 1] {
        counting.reads.set(0);
        tree.inclusion_proof(index, size).unwrap();
        assert!(counting.reads.get() <= 2 * 16, "inclusion read {} nodes", counting.reads.get());
    }
    counting.reads.set(0);
    tree.consistency_proof(size / 3, size).unwrap();
    assert!(counting.reads.get() <= 3 * 16, "consistency read {} nodes", counting.reads.get());
}
