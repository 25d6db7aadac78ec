//! Messages waiting for their files, out of everyone else's way.
//!
//! Fetching a file, opening every segment of it and archiving it takes as
//! long as the file is large — about a second per 100 MB on this project's
//! 2-core machine. Done in line, before the batch that holds the message
//! is written, it held up every conversation's capture, and so every
//! delivery: while a 256 MiB file was captured, text in other
//! conversations took 1.7 s end to end at the median (issue 13's bench,
//! `keepwire bench --scenarios files`), against 3.4 ms without it.
//!
//! So a message whose files are not in yet waits on the side
//! ([`Capture::set_aside`]), with every later entry of its conversation
//! (a conversation is acknowledged in order and archived without gaps),
//! and with that conversation's MLS state writes
//! ([`keepwire_client::DeferredWrites::hold`]: the state must never be
//! durable before the records it covers, or a crash would lose the
//! message — the member could not decrypt it again). Other conversations'
//! batches go on to the writer. The files are fetched beside capture
//! ([`FileJob`]); as each comes in ([`Capture::files_in`]) its record is
//! given them, or withheld; once nothing in a waiting conversation wants
//! files any more, its records go to the writer as one batch
//! ([`Capture::released`]), which lets the held state writes go after
//! them.
//!
//! A crash or reconnection anywhere in between loses nothing: nothing of
//! a waiting conversation was acknowledged or made durable, so the server
//! delivers it again to a member whose state is where it was.

use std::collections::{BTreeMap, BTreeSet};

use keepwire_protocol::attachment::Attachment;

use super::{Capture, Staged, StagedBatch};

/// The files one waiting message references, to be fetched and checked
/// beside capture, then handed back with [`Capture::files_in`].
#[derive(Debug, Clone)]
pub struct FileJob {
    pub conv: String,
    pub seq: u64,
    pub references: Vec<Attachment>,
}

/// A conversation's entries set aside, in order.
#[derive(Default)]
pub(super) struct Waiting {
    records: Vec<Staged>,
    acks: Vec<(String, u64)>,
    failures: Vec<(String, u64, String)>,
}

/// The files of a message were checked and stored in the archive: each
/// one's scanner verdict; or why they cannot be captured (the message is
/// withheld).
pub type FilesOutcome = Result<Vec<Option<String>>, String>;

impl Capture {
    /// Take out of `batch` every entry of a conversation that waits for
    /// files — one of the batch's messages wants some, or the
    /// conversation already waits — and hold that conversation's state
    /// writes: what is left can be written now, and the files to fetch.
    pub fn set_aside(&mut self, mut batch: StagedBatch) -> (StagedBatch, Vec<FileJob>) {
        let convs: BTreeSet<String> = batch
            .records
            .iter()
            .filter(|r| r.wants_files())
            .map(|r| r.meta.conv.clone())
            .chain(self.waiting.keys().cloned())
            .collect();
        if convs.is_empty() {
            return (batch, Vec::new());
        }
        for conv in &convs {
            if !self.waiting.contains_key(conv) {
                self.writes.hold(conv);
                self.waiting.insert(conv.clone(), Waiting::default());
            }
        }
        let mut jobs = Vec::new();
        let (aside, ready): (Vec<Staged>, Vec<Staged>) = std::mem::take(&mut batch.records)
            .into_iter()
            .partition(|r| convs.contains(&r.meta.conv));
        batch.records = ready;
        for r in aside {
            if r.wants_files() {
                jobs.push(FileJob {
                    conv: r.meta.conv.clone(),
                    seq: r.meta.seq,
                    references: r.references.clone(),
                });
            }
            if let Some(w) = self.waiting.get_mut(&r.meta.conv) {
                w.records.push(r);
            }
        }
        let (aside, ready): (Vec<_>, Vec<_>) = std::mem::take(&mut batch.acks)
            .into_iter()
            .partition(|(c, _)| convs.contains(c));
        batch.acks = ready;
        for a in aside {
            if let Some(w) = self.waiting.get_mut(&a.0) {
                w.acks.push(a);
            }
        }
        let (aside, ready): (Vec<_>, Vec<_>) = std::mem::take(&mut batch.failures)
            .into_iter()
            .partition(|(c, ..)| convs.contains(c));
        batch.failures = ready;
        for f in aside {
            if let Some(w) = self.waiting.get_mut(&f.0) {
                w.failures.push(f);
            }
        }
        (batch, jobs)
    }

    /// The files of waiting message `conv`#`seq` are in, or cannot be.
    pub fn files_in(&mut self, conv: &str, seq: u64, outcome: FilesOutcome) {
        let Some(w) = self.waiting.get_mut(conv) else {
            return;
        };
        let Some(r) = w
            .records
            .iter_mut()
            .find(|r| r.meta.seq == seq && r.wants_files())
        else {
            return;
        };
        match outcome {
            Ok(verdicts) => r.attach(verdicts),
            Err(why) => {
                let failure = r.withhold(&why);
                w.failures.push(failure);
            }
        }
    }

    /// The records of every waiting conversation that wants no more
    /// files, as one batch for the writer, which releases their state
    /// writes once the records are durable.
    pub fn released(&mut self) -> Option<StagedBatch> {
        let done: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, w)| !w.records.iter().any(Staged::wants_files))
            .map(|(c, _)| c.clone())
            .collect();
        if done.is_empty() {
            return None;
        }
        let mut batch = StagedBatch {
            records: Vec::new(),
            mark: self.writes.mark(),
            acks: Vec::new(),
            failures: Vec::new(),
            release: Vec::new(),
        };
        for conv in done {
            if let Some(w) = self.waiting.remove(&conv) {
                batch.records.extend(w.records);
                batch.acks.extend(w.acks);
                batch.failures.extend(w.failures);
            }
            batch.release.push(conv);
        }
        Some(batch)
    }

    /// Whether any conversation waits for files.
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// What waits, per conversation.
pub(super) type WaitingMap = BTreeMap<String, Waiting>;
