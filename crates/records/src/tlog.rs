//! The archive's transparency log: an append-only Merkle tree (RFC 9162
//! hashing) over every record, tombstone and privileged action.
//!
//! The tree lives in the archive's own SQLite database, in the layout of
//! Go's `sumdb/tlog` (via the `tlog_tiles` crate): `tlog_leaves` holds
//! each leaf's exact bytes, `tlog_hashes` every stored hash (leaf hashes
//! and the roots of complete subtrees, `2n` of them for `n` leaves), so
//! any root, inclusion proof or consistency proof is a few indexed reads,
//! and the whole tree can be recomputed from the leaves alone to check the
//! stored hashes. Leaves are appended in the same transaction as what they
//! describe, so the log and the archive can never disagree after a crash.
//!
//! A leaf is canonical JSON ([`Leaf`]); a record's leaf commits to its
//! metadata, to the server's receipt (and so to the MLS ciphertext), and to
//! its plaintext through an HMAC keyed with the record's own data key, so
//! that once the key is destroyed the leaf confirms no guess of the content.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tlog_tiles::tlog::{self, Hash, HashReader};

use crate::RecordsError;

pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS tlog_leaves (n INTEGER PRIMARY KEY, kind TEXT NOT NULL, record_id INTEGER,
        data BLOB NOT NULL);
    CREATE INDEX IF NOT EXISTS tlog_leaves_record ON tlog_leaves (record_id);
    CREATE TABLE IF NOT EXISTS tlog_hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);";

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
}

impl Leaf {
    pub fn kind(&self) -> &'static str {
        match self {
            Leaf::Record { .. } => "record",
            Leaf::Tombstone { .. } => "tombstone",
            Leaf::Action { .. } => "action",
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Invariant: a Leaf holds only strings, numbers and booleans, which
        // serde_json always serialises.
        serde_json::to_vec(self).expect("a leaf serialises")
    }
}

/// Stored hashes read through a connection (or a transaction).
struct Stored<'a>(&'a Connection);

impl HashReader for Stored<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT hash FROM tlog_hashes WHERE idx=?1")
            .map_err(|e| tlog::Error::InvalidInput(e.to_string()))?;
        indexes
            .iter()
            .map(|i| {
                let h: Vec<u8> = stmt
                    .query_row(params![*i as i64], |r| r.get(0))
                    .map_err(|_| tlog::Error::IndexesNotInTree)?;
                Ok(Hash(h.try_into().map_err(|_| tlog::Error::MalformedHash)?))
            })
            .collect()
    }
}

fn tlog_err(e: tlog::Error) -> RecordsError {
    RecordsError::Log(e.to_string())
}

/// Number of leaves.
pub fn size(conn: &Connection) -> Result<u64, RecordsError> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(n) + 1, 0) FROM tlog_leaves")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

/// Append a leaf (inside the caller's transaction); returns its index.
pub fn append(conn: &Connection, leaf: &Leaf, record_id: Option<i64>) -> Result<u64, RecordsError> {
    append_at(conn, size(conn)?, leaf, record_id)
}

/// Append a leaf at `n`, which must be [`size`] read in the same write
/// transaction (a caller that already needs it reads it once); a wrong `n`
/// fails on the leaf's primary key or, past the end, on the stored hashes.
pub fn append_at(
    conn: &Connection,
    n: u64,
    leaf: &Leaf,
    record_id: Option<i64>,
) -> Result<u64, RecordsError> {
    let data = leaf.to_bytes();
    let hashes = tlog::stored_hashes(n, &data, &Stored(conn)).map_err(tlog_err)?;
    conn.prepare_cached(
        "INSERT INTO tlog_leaves (n, kind, record_id, data) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![n as i64, leaf.kind(), record_id, data])?;
    let first = tlog::stored_hash_count(n);
    let mut stmt = conn.prepare_cached("INSERT INTO tlog_hashes (idx, hash) VALUES (?1, ?2)")?;
    for (i, h) in hashes.iter().enumerate() {
        stmt.execute(params![(first + i as u64) as i64, &h.0[..]])?;
    }
    Ok(n)
}

/// The root hash of the tree of the first `size` leaves.
pub fn root(conn: &Connection, size: u64) -> Result<Hash, RecordsError> {
    tlog::tree_hash(size, &Stored(conn)).map_err(tlog_err)
}

/// A stored leaf: its kind, the record it belongs to, its exact bytes.
pub type StoredLeaf = (String, Option<i64>, Vec<u8>);

/// The leaf at `n`.
pub fn leaf(conn: &Connection, n: u64) -> Result<Option<StoredLeaf>, RecordsError> {
    Ok(conn
        .prepare_cached("SELECT kind, record_id, data FROM tlog_leaves WHERE n=?1")?
        .query_row(params![n as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// Inclusion proof of leaf `n` in the tree of size `tree_size`.
pub fn prove_inclusion(
    conn: &Connection,
    tree_size: u64,
    n: u64,
) -> Result<Vec<Hash>, RecordsError> {
    if n >= tree_size {
        return Err(RecordsError::Log(format!(
            "leaf {n} is not in a tree of size {tree_size}"
        )));
    }
    tlog::prove_record(tree_size, n, &Stored(conn)).map_err(tlog_err)
}

/// Consistency proof from the tree of size `old` to the tree of size `new`.
pub fn prove_consistency(conn: &Connection, old: u64, new: u64) -> Result<Vec<Hash>, RecordsError> {
    if old > new {
        return Err(RecordsError::Log(format!(
            "no consistency proof from size {old} to the smaller size {new}"
        )));
    }
    tlog::prove_tree(new, old, &Stored(conn)).map_err(tlog_err)
}

/// Recompute every stored hash from the leaves and compare: the first
/// index where they differ, if any (a changed, removed or reordered leaf
/// or hash shows up there). Works leaf by leaf, keeping only the
/// complete-subtree roots on the right edge in memory.
pub fn recompute(
    conn: &Connection,
    mut on_leaf: impl FnMut(u64),
) -> Result<TreeCheck, RecordsError> {
    // The tree as of now; later appends are the next verification's.
    let total = size(conn)?;
    let mut hashes =
        conn.prepare_cached("SELECT idx, hash FROM tlog_hashes WHERE idx < ?1 ORDER BY idx")?;
    let mut stored = hashes.query(params![tlog::stored_hash_count(total) as i64])?;
    // Right edge of the tree: the roots of complete subtrees, leftmost first.
    let mut edge: Vec<Hash> = Vec::new();
    let mut expected_idx = 0u64;
    let mut next_n = 0u64;
    let mut first_bad: Option<TreeProblem> = None;
    // Borrowed rows, no allocation per hash: this loop is the verifier's
    // hot path (the benchmark measures it).
    let mut compare =
        |h: &Hash, n: u64, stored: &mut rusqlite::Rows<'_>| -> Result<(), RecordsError> {
            let ok = match stored.next()? {
                Some(r) => {
                    r.get::<_, i64>(0)? as u64 == expected_idx
                        && r.get_ref(1)?.as_blob().ok() == Some(&h.0[..])
                }
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
    for batch in leaf_hashes(conn, total)? {
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

/// The first `total` leaves' hashes, in order, in batches. On a database
/// file a second thread with its own connection reads and hashes the
/// leaves while the caller checks the tree (two cores, two halves of the
/// work); in memory, the caller's connection does it all.
fn leaf_hashes(
    conn: &Connection,
    total: u64,
) -> Result<Box<dyn Iterator<Item = LeafBatch>>, RecordsError> {
    const BATCH: usize = 4096;
    fn run(
        conn: &Connection,
        total: u64,
        emit: &mut impl FnMut(LeafBatch) -> bool,
    ) -> Result<(), RecordsError> {
        let mut stmt =
            conn.prepare_cached("SELECT n, data FROM tlog_leaves WHERE n < ?1 ORDER BY n")?;
        let mut rows = stmt.query(params![total as i64])?;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(r) = rows.next()? {
            let n = r.get::<_, i64>(0)? as u64;
            let data = r.get_ref(1)?.as_blob().unwrap_or_default();
            batch.push((n, tlog::record_hash(data)));
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if !emit(Ok(full)) {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() {
            emit(Ok(batch));
        }
        Ok(())
    }
    fn read(conn: &Connection, total: u64, mut emit: impl FnMut(LeafBatch) -> bool) {
        if let Err(e) = run(conn, total, &mut emit) {
            emit(Err(e));
        }
    }
    match conn.path().filter(|p| !p.is_empty()).map(String::from) {
        Some(path) => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<LeafBatch>(8);
            std::thread::spawn(move || match Connection::open(&path) {
                Ok(c) => read(&c, total, |b| tx.send(b).is_ok()),
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            });
            Ok(Box::new(rx.into_iter()))
        }
        None => {
            let mut all = Vec::new();
            read(conn, total, |b| {
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

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
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
        let c = db();
        let mut data = Vec::new();
        for i in 0..40 {
            let leaf = action(i);
            data.push(leaf.to_bytes());
            append(&c, &leaf, None).unwrap();
            assert_eq!(root(&c, i + 1).unwrap().0, mth(&data), "size {}", i + 1);
        }
        assert_eq!(size(&c).unwrap(), 40);
        for s in 1..=40u64 {
            assert_eq!(root(&c, s).unwrap().0, mth(&data[..s as usize]));
        }
        assert_eq!(recompute(&c, |_| {}).unwrap().problem, None);
    }

    #[test]
    fn recomputing_finds_a_changed_leaf() {
        let c = db();
        for i in 0..10 {
            append(&c, &action(i), None).unwrap();
        }
        c.execute("UPDATE tlog_leaves SET data = x'00' WHERE n = 6", [])
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
