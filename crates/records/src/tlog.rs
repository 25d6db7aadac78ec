//! The archive's transparency log: an append-only Merkle tree (RFC 9162
//! hashing) over every record, tombstone and privileged action.
//!
//! The tree lives in the archive's own store, in the layout of Go's
//! `sumdb/tlog` (via the `tlog_tiles` crate): each leaf's exact bytes, and
//! every stored hash (leaf hashes and the roots of complete subtrees, `2n`
//! of them for `n` leaves), so any root, inclusion proof or consistency
//! proof is a few indexed reads, and the whole tree can be recomputed from
//! the leaves alone to check the stored hashes. Leaves are appended in the
//! same transaction as what they describe (by the store: see
//! [`ArchiveStore`] and [`new_hashes`]), so the log and the archive can
//! never disagree after a crash. The algorithms here work on any store.
//!
//! A leaf is canonical JSON ([`Leaf`]); a record's leaf commits to its
//! metadata, to the server's receipt (and so to the MLS ciphertext), and to
//! its plaintext through an HMAC keyed with the record's own data key, so
//! that once the key is destroyed the leaf confirms no guess of the content.

use serde::{Deserialize, Serialize};
use tlog_tiles::tlog::{self, Hash, HashReader};

pub use crate::archive::store::StoredLeaf;
use crate::archive::ArchiveStore;
use crate::RecordsError;

/// What a leaf says. Field order is the serialisation order, so the bytes
/// of a leaf are a function of its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Leaf {
    /// A captured log entry.
    Record {
        /// Flattened: the leaf's fields are the metadata's, in its order.
        #[serde(flatten)]
        meta: crate::record::RecordMeta,
        /// SHA-256 of the MLS message, as in the server's receipt (hex).
        message_sha256: String,
        /// The receipt's Ed25519 signature and key (hex).
        receipt_signature: String,
        receipt_key: String,
        /// HMAC-SHA256 of the plaintext under the record's data key (hex).
        content_commitment: Option<String>,
    },
    /// A record's content was destroyed (its data key deleted).
    Tombstone {
        conv: String,
        seq: u64,
        /// The destroyed record's leaf index.
        record_leaf: u64,
        /// The disposition authority (schedule item, court order, …).
        authority: String,
        by: String,
        at_ms: u64,
    },
    /// A privileged action on the archive: who did what, when.
    Action {
        actor: String,
        action: String,
        target: String,
        at_ms: u64,
    },
    /// A lifecycle event (`crate::lifecycle`): a role, an item, a
    /// setting. The event's JSON is stored beside the log; its SHA-256
    /// here, so that changing it is as detectable as changing the leaf.
    Lifecycle {
        event: u64,
        kind: String,
        actor: String,
        at_ms: u64,
        body_sha256: String,
    },
}

impl Leaf {
    pub fn kind(&self) -> &'static str {
        match self {
            Leaf::Record { .. } => "record",
            Leaf::Tombstone { .. } => "tombstone",
            Leaf::Action { .. } => "action",
            Leaf::Lifecycle { .. } => "lifecycle",
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Invariant: a Leaf holds only strings, numbers and booleans, which
        // serde_json always serialises.
        serde_json::to_vec(self).expect("a leaf serialises")
    }
}

pub(crate) fn tlog_err(e: tlog::Error) -> RecordsError {
    RecordsError::Log(e.to_string())
}

/// The hashes appending `data` as leaf `n` adds to the store (its leaf
/// hash and the roots of the subtrees it completes), each with its index;
/// `stored` reads the hashes already there (inside the appending
/// transaction).
pub fn new_hashes(
    n: u64,
    data: &[u8],
    stored: &impl HashReader,
) -> Result<Vec<(u64, Hash)>, RecordsError> {
    let hashes = tlog::stored_hashes(n, data, stored).map_err(tlog_err)?;
    let first = tlog::stored_hash_count(n);
    Ok(hashes
        .into_iter()
        .enumerate()
        .map(|(i, h)| (first + i as u64, h))
        .collect())
}

/// A store's hashes as tlog_tiles reads them.
struct Stored<'a>(&'a dyn ArchiveStore);

impl HashReader for Stored<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        self.0.read_hashes(indexes)
    }
}

/// The root hash of the tree of the first `size` leaves.
pub fn root(store: &dyn ArchiveStore, size: u64) -> Result<Hash, RecordsError> {
    tlog::tree_hash(size, &Stored(store)).map_err(tlog_err)
}

/// Inclusion proof of leaf `n` in the tree of size `tree_size`.
pub fn prove_inclusion(
    store: &dyn ArchiveStore,
    tree_size: u64,
    n: u64,
) -> Result<Vec<Hash>, RecordsError> {
    if n >= tree_size {
        return Err(RecordsError::Log(format!(
            "leaf {n} is not in a tree of size {tree_size}"
        )));
    }
    tlog::prove_record(tree_size, n, &Stored(store)).map_err(tlog_err)
}

/// Consistency proof from the tree of size `old` to the tree of size `new`.
pub fn prove_consistency(
    store: &dyn ArchiveStore,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, RecordsError> {
    if old > new {
        return Err(RecordsError::Log(format!(
            "no consistency proof from size {old} to the smaller size {new}"
        )));
    }
    tlog::prove_tree(new, old, &Stored(store)).map_err(tlog_err)
}

/// The stored hashes in index order, read a page at a time.
struct HashCursor<'a> {
    store: &'a dyn ArchiveStore,
    next: u64,
    below: u64,
    page: std::collections::VecDeque<(u64, Option<Hash>)>,
}

impl HashCursor<'_> {
    const PAGE: usize = 8192;

    fn next(&mut self) -> Result<Option<(u64, Option<Hash>)>, RecordsError> {
        if self.page.is_empty() && self.next < self.below {
            self.page = self.store.hashes(self.next, self.below, Self::PAGE)?.into();
            self.next = match self.page.back() {
                Some((idx, _)) => idx + 1,
                None => self.below,
            };
        }
        Ok(self.page.pop_front())
    }
}

/// Recompute every stored hash from the leaves and compare: the first
/// index where they differ, if any (a changed, removed or reordered leaf
/// or hash shows up there). Works leaf by leaf, keeping only the
/// complete-subtree roots on the right edge in memory.
pub fn recompute(
    store: &dyn ArchiveStore,
    mut on_leaf: impl FnMut(u64),
) -> Result<TreeCheck, RecordsError> {
    // The tree as of now; later appends are the next verification's.
    let total = store.log_size()?;
    let mut stored = HashCursor {
        store,
        next: 0,
        below: tlog::stored_hash_count(total),
        page: Default::default(),
    };
    // Right edge of the tree: the roots of complete subtrees, leftmost first.
    let mut edge: Vec<Hash> = Vec::new();
    let mut expected_idx = 0u64;
    let mut next_n = 0u64;
    let mut first_bad: Option<TreeProblem> = None;
    let mut compare = |h: &Hash, n: u64, stored: &mut HashCursor<'_>| -> Result<(), RecordsError> {
        let ok = match stored.next()? {
            Some((idx, found)) => idx == expected_idx && found.as_ref() == Some(h),
            None => false,
        };
        if !ok && first_bad.is_none() {
            first_bad = Some(TreeProblem::HashMismatch {
                leaf: n,
                index: expected_idx,
            });
        }
        expected_idx += 1;
        Ok(())
    };
    for batch in leaf_hashes(store, total)? {
        for (n, leaf_hash) in batch? {
            if n != next_n {
                // Everything after a hole is misplaced; the hole is the finding.
                return Ok(TreeCheck {
                    size: total,
                    problem: Some(TreeProblem::MissingLeaf(next_n)),
                });
            }
            next_n = n + 1;
            let mut h = leaf_hash;
            compare(&h, n, &mut stored)?;
            let mut k = n;
            while k & 1 == 1 {
                // With no hole before leaf n, each set low bit of n has its
                // complete left sibling on the edge.
                let Some(left) = edge.pop() else {
                    return Err(RecordsError::Log(format!("tree edge broken at leaf {n}")));
                };
                h = tlog::node_hash(left, h);
                compare(&h, n, &mut stored)?;
                k >>= 1;
            }
            edge.push(h);
            on_leaf(n);
        }
    }
    if next_n < total && first_bad.is_none() {
        first_bad = Some(TreeProblem::MissingLeaf(next_n));
    }
    if first_bad.is_none() && stored.next()?.is_some() {
        first_bad = Some(TreeProblem::ExtraHashes(expected_idx));
    }
    Ok(TreeCheck {
        size: next_n,
        problem: first_bad,
    })
}

type LeafBatch = Result<Vec<(u64, Hash)>, RecordsError>;

/// The first `total` leaves' hashes, in order, in batches. Where the
/// store has a second handle, a second thread reads and hashes the leaves
/// while the caller checks the tree (two cores, two halves of the work);
/// otherwise the caller's handle does it all.
fn leaf_hashes(
    store: &dyn ArchiveStore,
    total: u64,
) -> Result<Box<dyn Iterator<Item = LeafBatch>>, RecordsError> {
    const BATCH: usize = 4096;
    fn read(store: &dyn ArchiveStore, total: u64, emit: &mut dyn FnMut(LeafBatch) -> bool) {
        let mut batch = Vec::with_capacity(BATCH);
        let r = store.for_each_leaf(total, &mut |leaf| {
            batch.push((leaf.n, tlog::record_hash(leaf.data)));
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                return Ok(emit(Ok(full)));
            }
            Ok(true)
        });
        match r {
            Err(e) => {
                emit(Err(e));
            }
            Ok(()) if !batch.is_empty() => {
                emit(Ok(batch));
            }
            Ok(()) => {}
        }
    }
    match store.reopen() {
        Some(Ok(other)) => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<LeafBatch>(8);
            std::thread::spawn(move || read(&*other, total, &mut |b| tx.send(b).is_ok()));
            Ok(Box::new(rx.into_iter()))
        }
        Some(Err(e)) => Err(e),
        None => {
            let mut all = Vec::new();
            read(store, total, &mut |b| {
                all.push(b);
                true
            });
            Ok(Box::new(all.into_iter()))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TreeCheck {
    pub size: u64,
    pub problem: Option<TreeProblem>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TreeProblem {
    MissingLeaf(u64),
    HashMismatch { leaf: u64, index: u64 },
    ExtraHashes(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::SqliteArchive;

    fn db(dir: &tempfile::TempDir) -> SqliteArchive {
        SqliteArchive::open(&dir.path().join("a.db")).unwrap()
    }

    fn action(i: u64) -> Leaf {
        Leaf::Action {
            actor: "officer".into(),
            action: "view".into(),
            target: format!("record {i}"),
            at_ms: i,
        }
    }

    /// RFC 9162 §2.1.1 straight from the text, independent of tlog_tiles.
    fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => Sha256::digest([&[0u8][..], &leaves[0]].concat()).into(),
            n => {
                // The largest power of two smaller than n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                let (l, r) = (mth(&leaves[..k]), mth(&leaves[k..]));
                Sha256::digest([&[1u8][..], &l, &r].concat()).into()
            }
        }
    }

    #[test]
    fn roots_match_the_rfc_definition_at_every_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = db(&dir);
        let mut data = Vec::new();
        for i in 0..40 {
            let leaf = action(i);
            data.push(leaf.to_bytes());
            c.append_leaf(&leaf).unwrap();
            assert_eq!(root(&c, i + 1).unwrap().0, mth(&data), "size {}", i + 1);
        }
        assert_eq!(c.log_size().unwrap(), 40);
        for s in 1..=40u64 {
            assert_eq!(root(&c, s).unwrap().0, mth(&data[..s as usize]));
        }
        assert_eq!(recompute(&c, |_| {}).unwrap().problem, None);
    }

    #[test]
    fn recomputing_finds_a_changed_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = db(&dir);
        for i in 0..10 {
            c.append_leaf(&action(i)).unwrap();
        }
        rusqlite::Connection::open(dir.path().join("a.db"))
            .unwrap()
            .execute("UPDATE tlog_leaves SET data = x'00' WHERE n = 6", [])
            .unwrap();
        let check = recompute(&c, |_| {}).unwrap();
        assert!(
            matches!(
                check.problem,
                Some(TreeProblem::HashMismatch { leaf: 6, .. })
            ),
            "{check:?}"
        );
    }
}
