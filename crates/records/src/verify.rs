//! `keepwire records verify`: recompute the transparency log from storage
//! and check the archive against it, naming every problem exactly.
//!
//! What is checked, and what each failure is called:
//! - the tree: every stored hash recomputed from the leaves (`altered`,
//!   `missing` leaf);
//! - every record against its leaf, rebuilt from the row (metadata,
//!   receipt and, with the archive key, the content commitment):
//!   `altered`, or `reordered` when the row carries another entry's place;
//!   a leaf whose record row is gone, or a row without its leaf: `missing`;
//! - every conversation's sequence numbers, contiguous from 1 to the last
//!   archived, each archived (`gap`);
//! - every receipt's Ed25519 signature, by a server key the archive knows
//!   (`bad_signature`);
//! - content gone without a tombstone naming its authority
//!   (`missing_tombstone`);
//! - every checkpoint ever issued: its signature (`bad_signature`) and that
//!   it is a prefix of today's tree (`forked_checkpoint`);
//! - what witnesses asked about the log answered: one that cosigned more
//!   than the log holds, or refuses its latest checkpoint
//!   (`forked_checkpoint`);
//! - with a quorum of witnesses, a checkpoint consistent with the log that
//!   the quorum cosigned (`unwitnessed` if none).
//!
//! Verification reads only; it works on a stopped archive and on a live
//! one (it checks the tree as of the moment it started).

use std::collections::{BTreeMap, BTreeSet};

use crate::archive::store::Which;
use keepwire_protocol::{receipt_signed_bytes, Receipt};
use serde::Serialize;

use crate::archive::{record_leaf, Archive};
use crate::record::{RecordKind, RecordMeta};
use crate::tlog::{self, Leaf, TreeProblem};
use crate::{checkpoint, RecordsError};

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Altered,
    Missing,
    Reordered,
    Gap,
    BadSignature,
    ForkedCheckpoint,
    MissingTombstone,
    /// No checkpoint is cosigned by the quorum of witnesses given.
    Unwitnessed,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Problem {
    pub kind: ProblemKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<u64>,
    pub detail: String,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            record_id: None,
            conv: None,
            seq: None,
            leaf: None,
            detail: detail.into(),
        }
    }

    fn at(mut self, id: Option<i64>, conv: &str, seq: u64) -> Self {
        self.record_id = id;
        self.conv = Some(conv.to_string());
        self.seq = Some(seq);
        self
    }

    fn leaf(mut self, n: u64) -> Self {
        self.leaf = Some(n);
        self
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub tree_size: u64,
    pub records: u64,
    pub conversations: u64,
    pub checkpoints: u64,
    /// Whether content commitments were checked (needs the archive key).
    pub content_checked: bool,
    /// Whether checkpoint signatures were checked (needs the verifier key).
    pub signatures_checked: bool,
    /// Where the trusted receipt keys came from: `server` (a published
    /// list given to verify) or `archive` (what the archive recorded).
    pub receipt_keys_from: String,
    /// Checkpoints held outside the archive that were checked.
    pub external_checkpoints: u64,
    /// The quorum of witnesses required ("2 of the 3 witnesses (…)"),
    /// when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<String>,
    /// The largest checkpoint consistent with this log that the quorum
    /// cosigned; the leaves past it are not witnessed yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witnessed_size: Option<u64>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What `verify` checks against beyond the archive itself: an insider
/// can write to the archive's database, so the strongest checks use
/// references kept elsewhere.
/// A checkpoint kept outside the archive, and who kept it (named in a
/// problem: "the server's latest published checkpoint …").
#[derive(Debug, Clone)]
pub struct Outside {
    pub from: String,
    pub note: String,
    /// The archive issued it (the server's published chain), so its own
    /// checkpoint history must still hold one of that size.
    pub kept_by_archive: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The checkpoint key's public half (C2SP verifier key). Without it,
    /// checkpoint signatures are not checked (and the report says so).
    pub verifier_key: Option<String>,
    /// Checkpoints held outside the archive (by an auditor, a device, the
    /// server's published chain), each with where it came from: today's
    /// log must extend each.
    pub external_checkpoints: Vec<Outside>,
    /// The server's receipt keys with their validity (key, from, until), as
    /// published at `GET /v1/receipt-keys`. Without them, the keys the
    /// archive itself recorded are used (and the report says so).
    pub server_keys: Option<ServerKeys>,
    /// The witnesses whose cosignatures count, and how many must have
    /// cosigned: some checkpoint consistent with the log must carry them.
    pub witnesses: Option<crate::witness::quorum::Quorum>,
    /// What the witnesses said when asked about this log's latest
    /// checkpoint (`records verify --witness KEY@URL`).
    pub witness_answers: Vec<WitnessAnswer>,
}

/// A witness's answer about the log, asked by whoever verifies.
#[derive(Debug, Clone)]
pub enum WitnessAnswer {
    /// It last cosigned a checkpoint of this many leaves.
    At { witness: String, size: u64 },
    /// It refuses the log's latest checkpoint as a fork of what it cosigned.
    Refuses { witness: String, why: String },
}

/// Receipt keys and when each signed: key -> (from_ms, until_ms).
pub type ServerKeys = BTreeMap<Vec<u8>, (u64, Option<u64>)>;

mod events;
mod rows;
use rows::{check_row, rows, server_keys};

/// Check the archive. `progress(done, total)` is called as leaves are
/// recomputed.
pub fn verify(
    archive: &Archive,
    options: &Options,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, RecordsError> {
    let verifier_key = options.verifier_key.as_deref();
    let store = archive.store();
    // One read transaction: a live archive is checked as of this moment,
    // whatever the records service appends meanwhile.
    let _snapshot = store.read_snapshot()?;
    let mut report = Report {
        content_checked: archive.has_key(),
        signatures_checked: verifier_key.is_some(),
        receipt_keys_from: if options.server_keys.is_some() {
            "server"
        } else {
            "archive"
        }
        .into(),
        ..Report::default()
    };
    let total = store.log_size()?;

    // 1. The tree, from the leaves up.
    let tree = tlog::recompute(store, |n| progress(n + 1, total))?;
    report.tree_size = tree.size;
    match tree.problem {
        None => {}
        Some(TreeProblem::MissingLeaf(n)) => report.problems.push(
            Problem::new(ProblemKind::Missing, format!("leaf {n} is missing from the log")).leaf(n),
        ),
        Some(TreeProblem::HashMismatch { leaf, index }) => report.problems.push(
            Problem::new(
                ProblemKind::Altered,
                format!("the log does not recompute at leaf {leaf} (stored hash {index} differs): a leaf or hash was changed"),
            )
            .leaf(leaf),
        ),
        Some(TreeProblem::ExtraHashes(i)) => report.problems.push(Problem::new(
            ProblemKind::Altered,
            format!("stored hashes beyond the leaves, from index {i}"),
        )),
    }

    // 2. Leaves: what the log itself says it holds. Only the hashed data
    //    counts; the `kind` and `record_id` columns are an index, checked
    //    against it.
    let mut by_place: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut tombstoned: BTreeSet<u64> = BTreeSet::new();
    // The index's record id per leaf: only a hint for naming a missing row.
    let mut indexed_id: BTreeMap<u64, i64> = BTreeMap::new();
    // Lifecycle events' leaves, by event number.
    let mut event_leaves: BTreeMap<u64, (u64, Leaf)> = BTreeMap::new();
    store.for_each_leaf(tree.size, &mut |raw| {
        {
            let n = raw.n;
            let kind = raw.kind.unwrap_or_default();
            if let Some(id) = raw.record_id {
                indexed_id.insert(n, id);
            }
            let leaf: Leaf = match serde_json::from_slice(raw.data) {
                Ok(l) => l,
                Err(e) => {
                    report.problems.push(
                        Problem::new(
                            ProblemKind::Altered,
                            format!("leaf {n} does not parse: {e}"),
                        )
                        .leaf(n),
                    );
                    return Ok(true);
                }
            };
            if kind != leaf.kind() {
                report.problems.push(
                    Problem::new(
                        ProblemKind::Altered,
                        format!(
                            "leaf {n} is indexed as `{kind}` but is a {} leaf",
                            leaf.kind()
                        ),
                    )
                    .leaf(n),
                );
            }
            match leaf {
                Leaf::Record {
                    meta: RecordMeta { conv, seq, .. },
                    ..
                } => {
                    if let Some(first) = by_place.insert((conv.clone(), seq), n) {
                        report.problems.push(
                            Problem::new(
                                ProblemKind::Altered,
                                format!("leaves {first} and {n} both record {conv}#{seq}"),
                            )
                            .at(None, &conv, seq)
                            .leaf(n),
                        );
                    }
                }
                Leaf::Tombstone {
                    record_leaf,
                    conv,
                    seq,
                    ..
                } => {
                    // A tombstone follows the record it buries, and names it.
                    if by_place.get(&(conv.clone(), seq)) != Some(&record_leaf) || record_leaf >= n
                    {
                        report.problems.push(
                            Problem::new(
                                ProblemKind::Altered,
                                format!("tombstone leaf {n} names leaf {record_leaf} as {conv}#{seq}, which it is not"),
                            )
                            .at(None, &conv, seq)
                            .leaf(n),
                        );
                    }
                    tombstoned.insert(record_leaf);
                }
                Leaf::Action { .. } => {}
                l @ Leaf::Lifecycle { .. } => {
                    let Leaf::Lifecycle { event, .. } = l else {
                        unreachable!()
                    };
                    if let Some((first, _)) = event_leaves.insert(event, (n, l)) {
                        report.problems.push(
                            Problem::new(
                                ProblemKind::Altered,
                                format!("leaves {first} and {n} both commit to lifecycle event {event}"),
                            )
                            .leaf(n),
                        );
                    }
                }
            }
        }
        Ok(true)
    })?;

    // 3. Every record row against its leaf; receipts; tombstones.
    let known_keys = match &options.server_keys {
        Some(keys) => keys.clone(),
        None => server_keys(archive)?,
    };
    let mut matched: BTreeSet<u64> = BTreeSet::new();
    for row in rows(archive)? {
        report.records += 1;
        let row = match row {
            Ok(row) => row,
            Err(bad) => {
                report.problems.push(
                    Problem::new(
                        ProblemKind::Altered,
                        format!("its kind {:?} is no record kind", bad.kind),
                    )
                    .at(Some(bad.id), &bad.conv, bad.seq),
                );
                continue;
            }
        };
        if let Some(n) = row.leaf {
            if by_place.get(&(row.meta.conv.clone(), row.meta.seq)) == Some(&n) {
                matched.insert(n);
            }
        }
        check_row(archive, &row, &known_keys, &tombstoned, &mut report)?;
    }
    for ((conv, seq), n) in &by_place {
        if !matched.contains(n) {
            report.problems.push(
                Problem::new(
                    ProblemKind::Missing,
                    format!("leaf {n} records {conv}#{seq}, which is not in the archive"),
                )
                .at(indexed_id.get(n).copied(), conv, *seq)
                .leaf(*n),
            );
        }
    }

    events::check(archive, &event_leaves, &mut report)?;

    // 4. Each conversation's sequence, as the log records it: gap-free
    //    from 1. Gaps are reported as ranges, so a wild number costs one
    //    line, not billions.
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (conv, seq) in by_place.keys() {
        seqs.entry(conv.as_str()).or_default().push(*seq);
    }
    report.conversations = seqs.len() as u64;
    for (conv, list) in &seqs {
        let mut expected = 1u64;
        for &seq in list {
            if seq > expected {
                let what = if seq - 1 == expected {
                    format!("#{expected}")
                } else {
                    format!("#{expected} to #{}", seq - 1)
                };
                report.problems.push(
                    Problem::new(
                        ProblemKind::Gap,
                        format!("{conv}: {what} neither archived nor tombstoned"),
                    )
                    .at(None, conv, expected),
                );
            }
            expected = seq.saturating_add(1);
        }
    }

    // 5. Every checkpoint is a prefix of today's tree.
    let mut kept_sizes = std::collections::HashSet::new();
    // Those that are, with their notes (and cosignatures).
    let mut consistent: Vec<(u64, String)> = Vec::new();
    for (id, size, note) in store.checkpoints()? {
        report.checkpoints += 1;
        kept_sizes.insert(size);
        let parsed = match verifier_key {
            Some(k) => checkpoint::open_note(&note, k),
            None => unsigned_checkpoint(&note),
        };
        let cp = match parsed {
            Ok(cp) => cp,
            Err(e) => {
                report.problems.push(Problem::new(
                    ProblemKind::BadSignature,
                    format!("checkpoint {id} (size {size}): {e}"),
                ));
                continue;
            }
        };
        if cp.size() != size || cp.size() > tree.size {
            report.problems.push(Problem::new(
                ProblemKind::ForkedCheckpoint,
                format!(
                    "checkpoint {id} is for a tree of {} leaves; the log has {}",
                    cp.size(),
                    tree.size
                ),
            ));
            continue;
        }
        match tlog::root(store, cp.size()) {
            Ok(root) if &root == cp.hash() => consistent.push((size, note)),
            Ok(root) => report.problems.push(Problem::new(
                ProblemKind::ForkedCheckpoint,
                format!(
                    "checkpoint {id} signed root {} for size {}, but the log's root at that size is {root}",
                    cp.hash(),
                    cp.size()
                ),
            )),
            Err(e) => report.problems.push(Problem::new(
                ProblemKind::ForkedCheckpoint,
                format!("checkpoint {id}: the log cannot produce its root: {e}"),
            )),
        }
    }
    for Outside {
        from: what,
        note,
        kept_by_archive,
    } in &options.external_checkpoints
    {
        report.external_checkpoints += 1;
        let cp = match verifier_key {
            Some(k) => checkpoint::open_note(note, k),
            None => unsigned_checkpoint(note),
        };
        match cp {
            Err(e) => report
                .problems
                .push(Problem::new(ProblemKind::BadSignature, format!("{what}: {e}"))),
            Ok(cp) if cp.size() > tree.size => report.problems.push(Problem::new(
                ProblemKind::ForkedCheckpoint,
                format!("{what} is for {} leaves; the log has only {}: it was cut back", cp.size(), tree.size),
            )),
            Ok(cp) if *kept_by_archive && !kept_sizes.contains(&cp.size()) => {
                report.problems.push(Problem::new(
                    ProblemKind::Missing,
                    format!(
                        "{what} is for {} leaves, but the archive no longer keeps the checkpoint it \
                         issued of that size: its checkpoint history was cut",
                        cp.size()
                    ),
                ))
            }
            Ok(cp) => match tlog::root(store, cp.size()) {
                Ok(root) if &root == cp.hash() => consistent.push((cp.size(), note.clone())),
                _ => report.problems.push(Problem::new(
                    ProblemKind::ForkedCheckpoint,
                    format!("{what} signed a root the log no longer has at size {}: history was rewritten", cp.size()),
                )),
            },
        }
    }

    // 6. What the witnesses remember: a witness that cosigned more than
    //    the log holds, or refuses its latest checkpoint, saw a history
    //    this archive no longer is — even if every cosigned checkpoint
    //    kept here was deleted with the tail.
    for answer in &options.witness_answers {
        match answer {
            WitnessAnswer::At { witness, size } if *size > tree.size => {
                report.problems.push(Problem::new(
                    ProblemKind::ForkedCheckpoint,
                    format!(
                        "the witness {witness} cosigned a checkpoint of {size} leaves; the log has \
                         {}: it was cut back",
                        tree.size
                    ),
                ))
            }
            WitnessAnswer::At { .. } => {}
            WitnessAnswer::Refuses { witness, why } => report.problems.push(Problem::new(
                ProblemKind::ForkedCheckpoint,
                format!("the witness {witness} refuses this log's latest checkpoint: {why}"),
            )),
        }
    }

    // 7. Witnessed: a checkpoint consistent with the log that the quorum
    //    cosigned. A log rewritten and re-signed with a stolen key has
    //    none: no honest witness cosigns a fork.
    if let Some(quorum) = &options.witnesses {
        report.witnesses = Some(quorum.describe());
        report.witnessed_size = consistent
            .iter()
            .filter(|(_, note)| quorum.met(note))
            .map(|(size, _)| *size)
            .max();
        if report.witnessed_size.is_none() {
            report.problems.push(Problem::new(
                ProblemKind::Unwitnessed,
                format!(
                    "no checkpoint consistent with this log is cosigned by {}: nothing shows \
                     the witnesses saw this history (a log rewritten and re-signed with a \
                     stolen key looks like this)",
                    quorum.describe()
                ),
            ));
        }
    }
    Ok(report)
}

fn unsigned_checkpoint(note: &str) -> Result<tlog_tiles::checkpoint::Checkpoint, String> {
    let n = signed_note::Note::from_bytes(note.as_bytes())
        .map_err(|e| format!("not a signed note: {e}"))?;
    tlog_tiles::checkpoint::Checkpoint::from_bytes(n.text())
        .map_err(|e| format!("not a checkpoint: {e}"))
}
