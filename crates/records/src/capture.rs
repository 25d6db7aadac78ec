//! Capture: turn each delivered log entry into a durable record, then say
//! which sequence number may be acknowledged.
//!
//! The order is what makes promise 1 hold across crashes: decrypt in memory,
//! insert the record (fsync'd), then persist the MLS state and cursor, then
//! acknowledge. A crash anywhere before the acknowledgement makes the server
//! redeliver; the archive's (conv, seq) uniqueness makes that harmless.
//!
//! Capture comes in two halves, so that they can overlap: staging a batch
//! (decrypt and verify, on the caller's thread) and making it durable
//! ([`StagedBatch::commit`]: the records, then the MLS state as it stood at
//! the end of the batch). The member's state writes are deferred
//! ([`keepwire_client::DeferredWrites`]) so that staging batch n+1 can move
//! the MLS state on in memory while batch n is still being written: its
//! snapshot is queued when n is staged and applied only after n's records
//! are durable. With a writer thread ([`Capture::with_writer`]), batches are
//! committed there, in order, and their acknowledgements reported as they
//! become durable; every other operation first waits for the writer to be
//! idle ([`Capture::settle`]), so it sees, and leaves, everything durable.

use keepwire_client::{ClientError, DeferredWrites, Device, Incoming};
use keepwire_protocol::content::Content;
use keepwire_protocol::{
    device_identity, parse_device_identity, Delivery, Receipt, Request, WithheldReport,
};

use crate::archive::{Archive, NewRecord};
use crate::record::{RecordKind, RecordMeta};
use crate::RecordsError;

mod attachments;
mod waiting;
mod writer;
pub use waiting::{FileJob, FilesOutcome};
use writer::Writer;

pub struct Capture {
    pub device: Device,
    pub archive: Archive,
    clock: keepwire_protocol::clock::Clock,
    /// Conversations with a proposal (a member leaving) waiting for a commit.
    proposals: std::collections::BTreeSet<String>,
    /// Entries of the batch being staged that are archived as withheld.
    failed: Vec<(String, u64, String)>,
    /// Records decrypted but not yet durable (see [`Capture::capture_batch`]).
    staged: Vec<Staged>,
    /// Per conversation: the last staged seq, and whether its MLS state
    /// must be written (false: only the cursor moves).
    dirty: std::collections::BTreeMap<String, (u64, bool)>,
    /// The member's state writes, held back until their records are durable.
    writes: DeferredWrites,
    writer: Option<Writer>,
    /// Conversations waiting for a message's files ([`waiting`]).
    waiting: waiting::WaitingMap,
}

/// A batch decrypted and staged, waiting for its one durable write.
pub struct StagedBatch {
    records: Vec<Staged>,
    /// The member's state writes that belong to this batch end here.
    mark: u64,
    acks: Vec<(String, u64)>,
    failures: Vec<(String, u64, String)>,
    /// Conversations whose held state writes go once these records are
    /// durable ([`Capture::released`]).
    release: Vec<String>,
}

/// A batch made durable: what may be acknowledged, in order, and the
/// entries among them archived as withheld (the server delivers those to
/// no one, blocks their senders and suspends their conversations).
#[derive(Debug, Default)]
pub struct Captured {
    pub acks: Vec<(String, u64)>,
    pub failures: Vec<(String, u64, String)>,
}

impl Captured {
    /// The `archived` reports for this batch: one contiguous range per
    /// conversation run (acks are listed in order, each conversation's
    /// increasing), each naming what in it was withheld. The server hears
    /// one report per run instead of one per entry, and learns what to
    /// withhold in the same request that releases the rest.
    pub fn reports(self) -> Vec<Request> {
        let mut ranges: Vec<(String, u64, u64, Vec<WithheldReport>)> = Vec::new();
        for (conv, seq) in self.acks {
            match ranges.iter_mut().rev().find(|(c, ..)| *c == conv) {
                Some((_, _, to, _)) if *to + 1 == seq => *to = seq,
                _ => ranges.push((conv, seq, seq, Vec::new())),
            }
        }
        for (conv, seq, reason) in self.failures {
            if let Some((.., w)) = ranges
                .iter_mut()
                .find(|(c, from, to, _)| *c == conv && (*from..=*to).contains(&seq))
            {
                w.push(WithheldReport { seq, reason });
            }
        }
        ranges
            .into_iter()
            .map(|(conv, from, to, withheld)| Request::Archived {
                conv,
                from,
                to,
                withheld,
            })
            .collect()
    }
}

impl StagedBatch {
    /// The durable half of capture: the records (one transaction), then
    /// the member's MLS state and cursors as they stood after this batch.
    /// A crash between the two leaves records ahead of the state: the
    /// server redelivers, and the archived entries are recognised and only
    /// move the state on.
    pub fn commit(
        self,
        archive: &mut Archive,
        writes: &DeferredWrites,
    ) -> Result<Captured, RecordsError> {
        self.write_records(archive)?;
        for conv in &self.release {
            writes.release(conv);
        }
        writes.apply(self.mark)?;
        Ok(Captured {
            acks: self.acks,
            failures: self.failures,
        })
    }

    fn write_records(&self, archive: &mut Archive) -> Result<(), RecordsError> {
        // Never a message without its files: whoever staged the batch
        // stores them first ([`StagedBatch::wanted`]) or withholds it.
        if let Some(r) = self.records.iter().find(|r| r.wants_files()) {
            return Err(RecordsError::Archive(format!(
                "{}#{} references {} file(s) that were not fetched: not archived without them",
                r.meta.conv,
                r.meta.seq,
                r.references.len()
            )));
        }
        if !self.records.is_empty() {
            let records: Vec<NewRecord<'_>> = self
                .records
                .iter()
                .map(|r| NewRecord {
                    meta: &r.meta,
                    receipt: &r.receipt,
                    plaintext: r.plaintext.as_deref(),
                })
                .collect();
            archive.insert_many(&records)?;
        }
        Ok(())
    }
}

/// A record waiting for the batch's one durable write.
struct Staged {
    meta: RecordMeta,
    receipt: Receipt,
    plaintext: Option<Vec<u8>>,
    /// The files the message references, to be fetched, checked and
    /// stored in the archive before its record is written
    /// ([`StagedBatch::wanted`]).
    references: Vec<keepwire_protocol::attachment::Attachment>,
    /// They are stored ([`Archive::put_file`]).
    stored: bool,
}

/// Most entries the records service captures in one durable write, when
/// that many are already waiting (one batch = one archive transaction and
/// one MLS state write per conversation).
pub const CAPTURE_BATCH: usize = 256;

impl Capture {
    pub fn new(
        mut device: Device,
        archive: Archive,
        clock: keepwire_protocol::clock::Clock,
    ) -> Self {
        let writes = device.defer_writes();
        Self {
            device,
            archive,
            clock,
            proposals: Default::default(),
            failed: Vec::new(),
            staged: Vec::new(),
            dirty: Default::default(),
            writes,
            writer: None,
            waiting: Default::default(),
        }
    }

    /// Commit batches on a thread of their own, with `archive` (a second
    /// connection to the same archive), so the next batch is decrypted
    /// while the last is written ([`Capture::submit_batch`]). `on_done`
    /// hears each batch's outcome, in order, from that thread.
    pub fn with_writer(
        mut self,
        archive: Archive,
        on_done: impl FnMut(Result<Captured, RecordsError>) + Send + 'static,
    ) -> Result<Self, RecordsError> {
        self.writer = Some(Writer::spawn(
            archive,
            self.writes.clone(),
            Box::new(on_done),
        )?);
        Ok(self)
    }

    /// Wait for the writer to finish what it was given, then make every
    /// other state write durable: afterwards the archive and the member's
    /// store hold everything staged so far.
    pub fn settle(&mut self) -> Result<(), RecordsError> {
        if let Some(w) = &self.writer {
            w.wait_idle()?;
        }
        self.writes.apply(self.writes.mark())?;
        Ok(())
    }

    /// Capture one entry, durably.
    pub fn capture(&mut self, d: &Delivery) -> Result<Captured, RecordsError> {
        self.capture_batch(std::slice::from_ref(d))
    }

    /// Capture several entries with one durable archive write and one MLS
    /// state write per conversation (group commit): the (conv, seq) pairs
    /// to acknowledge, in order, once this returns. A crash before it
    /// returns loses nothing: nothing was acknowledged, so the server
    /// redelivers, and archived entries are recognised.
    pub fn capture_batch(&mut self, ds: &[Delivery]) -> Result<Captured, RecordsError> {
        self.settle()?;
        let batch = self.stage_batch(ds)?;
        batch.commit(&mut self.archive, &self.writes)
    }

    /// Stage `ds` and hand the batch to the writer thread; its outcome
    /// reaches the `on_done` given to [`Capture::with_writer`]. Blocks only
    /// while the writer still holds an earlier batch waiting.
    pub fn submit_batch(&mut self, ds: &[Delivery]) -> Result<(), RecordsError> {
        if self.writer.is_none() {
            return Err(RecordsError::Archive(
                "submit_batch needs an archive writer (Capture::with_writer)".into(),
            ));
        }
        let batch = self.stage_batch(ds)?;
        self.submit_staged(batch)
    }

    /// Write a batch staged with [`Capture::stage_batch`] (its files
    /// fetched) at once, after everything handed to the writer.
    pub fn commit_staged(&mut self, batch: StagedBatch) -> Result<Captured, RecordsError> {
        self.settle()?;
        batch.commit(&mut self.archive, &self.writes)
    }

    /// Hand a batch staged with [`Capture::stage_batch`] (and its files
    /// fetched, [`StagedBatch::wanted`]) to the writer thread.
    pub fn submit_staged(&mut self, batch: StagedBatch) -> Result<(), RecordsError> {
        match &mut self.writer {
            Some(w) => w.submit(batch),
            None => Err(RecordsError::Archive(
                "submit_staged needs an archive writer (Capture::with_writer)".into(),
            )),
        }
    }

    /// The first half of capture: decrypt and verify `ds`, in memory,
    /// and queue the member's state writes after them.
    pub fn stage_batch(&mut self, ds: &[Delivery]) -> Result<StagedBatch, RecordsError> {
        let mut acks = Vec::with_capacity(ds.len());
        for d in ds {
            if let Some(seq) = self.stage(d)? {
                acks.push((d.conv.clone(), seq));
            }
        }
        for (conv, (seq, save)) in std::mem::take(&mut self.dirty) {
            if save {
                self.device.save(&conv, seq)?;
            } else {
                self.device.skip(&conv, seq)?;
            }
        }
        Ok(StagedBatch {
            records: std::mem::take(&mut self.staged),
            mark: self.writes.mark(),
            acks,
            failures: std::mem::take(&mut self.failed),
            release: Vec::new(),
        })
    }

    fn mark(&mut self, conv: &str, seq: u64, save: bool) {
        let e = self.dirty.entry(conv.to_string()).or_insert((seq, false));
        e.0 = seq;
        e.1 |= save;
    }

    /// Where `conv` stands, counting what is staged.
    fn cursor(&self, conv: &str) -> Result<u64, RecordsError> {
        match self.dirty.get(conv) {
            Some((seq, _)) => Ok(*seq),
            None => Ok(self.device.cursor(conv)?),
        }
    }

    /// Decrypt one entry and stage its record.
    fn stage(&mut self, d: &Delivery) -> Result<Option<u64>, RecordsError> {
        if let Some((kind, note, receipt)) = self.archive.archived_as(&d.conv, d.seq)? {
            // The same entry again carries the same receipt. Another one
            // means the server receipted something new at a sequence
            // number it had used: its store went back (restored from an
            // older copy) or it is another server. Acknowledging it would
            // lose that message without a trace.
            if receipt != d.receipt {
                return Err(RecordsError::Diverged(format!(
                    "the server delivered {}#{} with a receipt other than the archived one (sent at \
                     {} ms, not {} ms): it reused a sequence number — its store is older than this \
                     archive (restored from an older copy?) or it is another server. Nothing more \
                     is captured from it; restore the server's store from a backup taken with the \
                     archive (docs/operations.md, \"Backup and restore\")",
                    d.conv, d.seq, d.receipt.server_time_ms, receipt.server_time_ms
                )));
            }
            if kind == RecordKind::Withheld {
                // Reported again: the server may have lost the report in a
                // crash, and must never release this entry.
                self.failed.push((
                    d.conv.clone(),
                    d.seq,
                    note.unwrap_or_default().chars().take(300).collect(),
                ));
            }
            // Archived before a crash; make sure the state caught up too.
            // The archive holds each conversation's records without gaps,
            // so everything before this entry is archived as well and the
            // state may move past it (the write is queued like any other).
            if self.cursor(&d.conv)? < d.seq {
                // As the first time: the state moves past what processed,
                // only the cursor past what did not (an undecryptable or
                // unprocessable entry, archived as such). Leaving the
                // cursor behind would refuse every later entry as a gap.
                match self.device.process(d) {
                    Ok(
                        Incoming::Application { .. }
                        | Incoming::Commit { .. }
                        | Incoming::Proposal { .. },
                    ) => self.device.save(&d.conv, d.seq)?,
                    Ok(Incoming::Duplicate | Incoming::Own) => {}
                    Ok(Incoming::Undecryptable { .. })
                    | Err(
                        ClientError::Mls(_)
                        | ClientError::Refused(_)
                        | ClientError::UnknownConversation(_),
                    ) => self.device.skip(&d.conv, d.seq)?,
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Some(d.seq));
        }
        let cursor = self.cursor(&d.conv)?;
        if d.seq > cursor + 1 {
            // Never archive past a gap: the connection restarts and the
            // server replays from the last contiguous acknowledgement.
            return Err(RecordsError::Archive(format!(
                "{}: expected #{} next, got #{}",
                d.conv,
                cursor + 1,
                d.seq
            )));
        }
        if d.seq < cursor {
            return Err(RecordsError::Archive(format!(
                "{}#{} was processed but is not in the archive; the archive needs attention",
                d.conv, d.seq
            )));
        }
        let claimed = device_identity(&d.sender_user, &d.sender_device);
        let incoming = match self.device.process(d) {
            Ok(i) => i,
            // A commit the server's observer accepted but the records member
            // cannot process (a modified client can craft one), or a
            // conversation whose Welcome failed: withheld. Storage errors
            // are not caught here: those are retried.
            Err(
                e @ (ClientError::Mls(_)
                | ClientError::Refused(_)
                | ClientError::UnknownConversation(_)),
            ) => {
                let reason = format!("the records member could not process it: {e}");
                return self.withhold(d, &claimed, reason, None, false);
            }
            Err(e) => return Err(e.into()),
        };
        let now = self.clock.now_ms();
        let (kind, epoch, sender, participants, content) = match &incoming {
            // The commit that added the records member (its seq is the
            // cursor the Welcome set): the Welcome put the state past it,
            // but it is a record like any other, with the roster it created.
            Incoming::Duplicate => {
                let participants = self.device.participants(&d.conv)?;
                let epoch = self.device.epoch(&d.conv)?;
                (
                    RecordKind::Commit,
                    epoch,
                    claimed.clone(),
                    participants,
                    None,
                )
            }
            Incoming::Own => {
                return Err(RecordsError::Archive(format!(
                    "{}#{}: own message with no pending commit to apply",
                    d.conv, d.seq
                )))
            }
            Incoming::Application {
                epoch,
                sender,
                participants,
                content,
                authenticated_data,
                ..
            } => {
                if *sender != claimed {
                    // A device submitted another member's message: no
                    // honest client does. Withheld, the content kept.
                    let reason =
                        format!("submitted by {claimed} but the MLS signature is {sender}'s");
                    return self.withhold(d, &claimed, reason, Some(content.clone()), true);
                }
                let parsed = Content::decode(content);
                if let Some(reason) = attachments::blobs_mismatch(&parsed, authenticated_data) {
                    // The server would serve members blobs other than
                    // those the message references (a modified client).
                    return self.withhold(d, &claimed, reason, Some(content.clone()), true);
                }
                (
                    RecordKind::Application,
                    *epoch,
                    sender.clone(),
                    participants.clone(),
                    Some((content.clone(), parsed)),
                )
            }
            Incoming::Commit {
                epoch,
                participants,
                ..
            } => (
                RecordKind::Commit,
                *epoch,
                claimed.clone(),
                participants.clone(),
                None,
            ),
            Incoming::Proposal { .. } => {
                self.proposals.insert(d.conv.clone());
                let participants = self.device.participants(&d.conv)?;
                let epoch = self.device.epoch(&d.conv)?;
                (
                    RecordKind::Proposal,
                    epoch,
                    claimed.clone(),
                    participants,
                    None,
                )
            }
            Incoming::Undecryptable { reason, .. } => {
                let reason =
                    format!("it does not decrypt or verify for the records member ({reason})");
                return self.withhold(d, &claimed, reason, None, false);
            }
        };
        // Parsed once, where it was decrypted.
        let (content, parsed) = match content {
            Some((bytes, parsed)) => (Some(bytes), parsed.map(Some)),
            None => (None, Ok(None)),
        };
        let (expire_after_secs, burn_on_read, references) = match parsed.as_ref() {
            Ok(Some(c)) => (c.expire_after_secs, c.burn_on_read, c.attachments.clone()),
            _ => (None, false, Vec::new()),
        };
        let attachments = references.iter().map(crate::AttachmentMeta::of).collect();
        if let Err(e) = &parsed {
            // Keep it anyway: a record that does not parse is still a record.
            tracing::warn!(conv = %d.conv, seq = d.seq, error = %e, "captured content does not parse");
        }
        self.staged.push(Staged {
            meta: RecordMeta {
                conv: d.conv.clone(),
                seq: d.seq,
                kind,
                epoch,
                sender,
                participants,
                server_time_ms: d.server_time_ms,
                captured_at_ms: now,
                expire_after_secs,
                burn_on_read,
                note: None,
                attachments,
            },
            receipt: d.receipt.clone(),
            plaintext: content,
            references,
            stored: false,
        });
        self.mark(&d.conv, d.seq, true);
        Ok(Some(d.seq))
    }

    /// Archive an entry the records member could not capture as withheld,
    /// and report it with its batch: the server delivers it to no one,
    /// blocks the device that sent it and suspends the conversation.
    /// `content` is kept when it decrypted; `save` says whether the MLS
    /// state moved (otherwise only the cursor does).
    fn withhold(
        &mut self,
        d: &Delivery,
        claimed: &str,
        reason: String,
        content: Option<Vec<u8>>,
        save: bool,
    ) -> Result<Option<u64>, RecordsError> {
        tracing::error!(conv = %d.conv, seq = d.seq, %claimed, %reason, "entry withheld: the records member could not capture it");
        let participants = self.device.participants(&d.conv).unwrap_or_default();
        let epoch = self.device.epoch(&d.conv).unwrap_or_default();
        let note = format!(
            "withheld from every member: {reason}; sent by {claimed} as named by the server"
        );
        self.staged.push(Staged {
            meta: RecordMeta {
                conv: d.conv.clone(),
                seq: d.seq,
                kind: RecordKind::Withheld,
                epoch,
                sender: claimed.to_string(),
                participants,
                server_time_ms: d.server_time_ms,
                captured_at_ms: self.clock.now_ms(),
                expire_after_secs: None,
                burn_on_read: false,
                note: Some(note),
                attachments: Vec::new(),
            },
            receipt: d.receipt.clone(),
            plaintext: content,
            references: Vec::new(),
            stored: false,
        });
        self.mark(&d.conv, d.seq, save);
        self.failed
            .push((d.conv.clone(), d.seq, reason.chars().take(300).collect()));
        Ok(Some(d.seq))
    }

    /// Whether proposals wait for this member's commit
    /// ([`Capture::proposal_commits`]).
    pub fn has_proposals(&self) -> bool {
        !self.proposals.is_empty()
    }

    /// Build the commit evicting revoked `devices` from `conv`, if any of
    /// them is still in this member's view of the roster. The server asks
    /// again until the roster no longer holds them, so a refused (stale)
    /// attempt needs no retry here.
    pub fn evict(
        &mut self,
        conv: &str,
        devices: &[String],
    ) -> Result<Option<Request>, RecordsError> {
        self.settle()?;
        let present: Vec<String> = self
            .device
            .participants(conv)?
            .iter()
            .filter_map(|id| parse_device_identity(id.as_bytes()).map(|(_, d)| d.to_string()))
            .filter(|d| devices.contains(d))
            .collect();
        if present.is_empty() {
            return Ok(None);
        }
        let req = self.device.remove_devices(conv, &present)?;
        // The pending commit must be durable before it leaves (see
        // `Device::commit`).
        self.settle()?;
        Ok(Some(req))
    }

    /// The server refused this member's commit (another won the epoch).
    pub fn commit_refused(&mut self, conv: &str) -> Result<(), RecordsError> {
        self.settle()?;
        self.device.commit_refused(conv)?;
        self.settle()
    }

    /// Commits for the proposals captured since the last call: the records
    /// member, always online, carries out members' requests to leave.
    pub fn proposal_commits(&mut self) -> Vec<(String, Result<Request, RecordsError>)> {
        if self.proposals.is_empty() {
            return Vec::new();
        }
        let settled = self.settle();
        std::mem::take(&mut self.proposals)
            .into_iter()
            .map(|conv| {
                let req = match &settled {
                    Err(e) => Err(RecordsError::Archive(e.to_string())),
                    Ok(()) => self
                        .device
                        .commit_proposals(&conv)
                        .map_err(RecordsError::from)
                        // Durable before it leaves (see `Device::commit`).
                        .and_then(|req| self.settle().map(|()| req)),
                };
                (conv, req)
            })
            .collect()
    }

    /// The server accepted this member's own commit (`message`) with
    /// `receipt`: archive it like any other entry, then move on.
    pub fn own_commit_accepted(
        &mut self,
        message: Vec<u8>,
        receipt: Receipt,
    ) -> Result<Captured, RecordsError> {
        let d = Delivery {
            conv: receipt.conv.clone(),
            seq: receipt.seq,
            sender_user: self.device.user.clone(),
            sender_device: self.device.device_id.clone(),
            server_time_ms: receipt.server_time_ms,
            message,
            receipt,
        };
        self.capture(&d)
    }

    /// Join a conversation the records member was added to. The commit
    /// that added it is archived when it arrives through the log replay
    /// of other members; for the records member it is its join point.
    /// A Welcome that does not work is not fatal: the entries of that
    /// conversation then come out unprocessable, and are reported.
    pub fn join(&mut self, conv: &str, seq: u64, welcome: &[u8]) -> Result<(), RecordsError> {
        self.settle()?;
        // Written straight through: the new group covers no records yet,
        // and mls-rs deletes the used key package right after writing it.
        let device = &mut self.device;
        match self
            .writes
            .immediately(|| device.join(conv, seq, welcome))?
        {
            Ok(()) => Ok(()),
            Err(e @ (ClientError::Mls(_) | ClientError::Refused(_))) => {
                tracing::error!(conv, seq, error = %e, "the records member cannot join from this Welcome");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
