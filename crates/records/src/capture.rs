//! Capture: turn each delivered log entry into a durable record, then say
//! which sequence number may be acknowledged.
//!
//! The order is what makes promise 1 hold across crashes: decrypt in memory,
//! insert the record (fsync'd), then persist the MLS state and cursor, then
//! acknowledge. A crash anywhere before the acknowledgement makes the server
//! redeliver; the archive's (conv, seq) uniqueness makes that harmless.

use keepwire_client::{ClientError, Device, Incoming};
use keepwire_protocol::content::Content;
use keepwire_protocol::{device_identity, parse_device_identity, Delivery, Receipt, Request};

use crate::archive::{Archive, NewRecord};
use crate::RecordsError;

pub struct Capture {
    pub device: Device,
    pub archive: Archive,
    clock: keepwire_protocol::clock::Clock,
    /// Conversations with a proposal (a member leaving) waiting for a commit.
    proposals: std::collections::BTreeSet<String>,
    /// Entries archived as unprocessable, not yet reported to the server.
    failed: Vec<(String, u64, String)>,
    /// Records decrypted but not yet durable (see [`Capture::capture_batch`]).
    staged: Vec<Staged>,
    /// Per conversation: the last staged seq, and whether its MLS state
    /// must be written (false: only the cursor moves).
    dirty: std::collections::BTreeMap<String, (u64, bool)>,
}

/// A record waiting for the batch's one durable write.
struct Staged {
    conv: String,
    seq: u64,
    kind: &'static str,
    epoch: u64,
    sender: String,
    participants: Vec<String>,
    server_time_ms: u64,
    captured_at_ms: u64,
    expire_after_secs: Option<u64>,
    burn_on_read: bool,
    receipt: Receipt,
    plaintext: Option<Vec<u8>>,
    note: Option<String>,
}

/// Most entries the records service captures in one durable write, when
/// that many are already waiting (one batch = one archive transaction and
/// one MLS state write per conversation).
pub const CAPTURE_BATCH: usize = 256;

impl Capture {
    pub fn new(device: Device, archive: Archive, clock: keepwire_protocol::clock::Clock) -> Self {
        Self {
            device,
            archive,
            clock,
            proposals: Default::default(),
            failed: Vec::new(),
            staged: Vec::new(),
            dirty: Default::default(),
        }
    }

    /// Capture one entry, durably; returns the sequence number to acknowledge.
    pub fn capture(&mut self, d: &Delivery) -> Result<Option<u64>, RecordsError> {
        let seq = self.stage(d)?;
        self.flush()?;
        Ok(seq)
    }

    /// Capture several entries with one durable archive write and one MLS
    /// state write per conversation (group commit): the (conv, seq) pairs
    /// to acknowledge, in order, once this returns. A crash before it
    /// returns loses nothing: nothing was acknowledged, so the server
    /// redelivers, and archived entries are recognised.
    pub fn capture_batch(&mut self, ds: &[Delivery]) -> Result<Vec<(String, u64)>, RecordsError> {
        let mut acks = Vec::with_capacity(ds.len());
        for d in ds {
            if let Some(seq) = self.stage(d)? {
                acks.push((d.conv.clone(), seq));
            }
        }
        self.flush()?;
        Ok(acks)
    }

    /// Make everything staged durable: the records first, then each
    /// conversation's MLS state and cursor.
    fn flush(&mut self) -> Result<(), RecordsError> {
        if !self.staged.is_empty() {
            let staged = std::mem::take(&mut self.staged);
            let records: Vec<NewRecord<'_>> = staged
                .iter()
                .map(|r| NewRecord {
                    conv: &r.conv,
                    seq: r.seq,
                    kind: r.kind,
                    epoch: r.epoch,
                    sender: &r.sender,
                    participants: &r.participants,
                    server_time_ms: r.server_time_ms,
                    captured_at_ms: r.captured_at_ms,
                    expire_after_secs: r.expire_after_secs,
                    burn_on_read: r.burn_on_read,
                    receipt: &r.receipt,
                    plaintext: r.plaintext.as_deref(),
                    note: r.note.as_deref(),
                })
                .collect();
            self.archive.insert_many(&records)?;
        }
        for (conv, (seq, save)) in std::mem::take(&mut self.dirty) {
            if save {
                self.device.save(&conv, seq)?;
            } else {
                self.device.skip(&conv, seq)?;
            }
        }
        Ok(())
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
        if self.archive.contains(&d.conv, d.seq)? {
            self.flush()?;
            // Archived before a crash; make sure the state caught up too.
            if self.device.cursor(&d.conv)? < d.seq {
                if let Ok(
                    Incoming::Application { .. }
                    | Incoming::Commit { .. }
                    | Incoming::Proposal { .. },
                ) = self.device.process(d)
                {
                    self.device.save(&d.conv, d.seq)?;
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
            // conversation whose Welcome failed: record it, report it so the
            // server suspends the conversation, and move on. Storage errors
            // are not caught here: those are retried.
            Err(
                e @ (ClientError::Mls(_)
                | ClientError::Refused(_)
                | ClientError::UnknownConversation(_)),
            ) => return self.unprocessable(d, &claimed, &e.to_string()),
            Err(e) => return Err(e.into()),
        };
        let now = self.clock.now_ms();
        let mut note = None;
        let (kind, epoch, sender, participants, content) = match &incoming {
            // The commit that added the records member (its seq is the
            // cursor the Welcome set): the Welcome put the state past it,
            // but it is a record like any other, with the roster it created.
            Incoming::Duplicate => {
                let participants = self.device.participants(&d.conv)?;
                let epoch = self.device.epoch(&d.conv)?;
                ("commit", epoch, claimed.clone(), participants, None)
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
                ..
            } => {
                if *sender != claimed {
                    // A member submitted another member's message. The
                    // record names the signer, and keeps what the server said.
                    tracing::warn!(conv = %d.conv, seq = d.seq, %claimed, %sender, "sender differs from the submitting device");
                    note = Some(format!(
                        "submitted by {claimed}; the MLS signature is {sender}'s"
                    ));
                }
                (
                    "application",
                    *epoch,
                    sender.clone(),
                    participants.clone(),
                    Some(content.clone()),
                )
            }
            Incoming::Commit {
                epoch,
                participants,
                ..
            } => (
                "commit",
                *epoch,
                claimed.clone(),
                participants.clone(),
                None,
            ),
            Incoming::Proposal { .. } => {
                self.proposals.insert(d.conv.clone());
                let participants = self.device.participants(&d.conv)?;
                let epoch = self.device.epoch(&d.conv)?;
                ("proposal", epoch, claimed.clone(), participants, None)
            }
            Incoming::Undecryptable { reason, .. } => {
                tracing::warn!(conv = %d.conv, seq = d.seq, %claimed, %reason, "captured an undecryptable message");
                note = Some(format!(
                    "does not decrypt or verify for the records member ({reason}); sender as named by the server, unverified"
                ));
                let participants = self.device.participants(&d.conv)?;
                let epoch = self.device.epoch(&d.conv)?;
                ("undecryptable", epoch, claimed.clone(), participants, None)
            }
        };
        let parsed = content.as_deref().map(Content::decode).transpose();
        let (expire_after_secs, burn_on_read) = match &parsed {
            Ok(Some(c)) => (c.expire_after_secs, c.burn_on_read),
            _ => (None, false),
        };
        if let Err(e) = &parsed {
            // Keep it anyway: a record that does not parse is still a record.
            tracing::warn!(conv = %d.conv, seq = d.seq, error = %e, "captured content does not parse");
        }
        self.staged.push(Staged {
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
            receipt: d.receipt.clone(),
            plaintext: content,
            note,
        });
        let save = !matches!(incoming, Incoming::Undecryptable { .. });
        self.mark(&d.conv, d.seq, save);
        Ok(Some(d.seq))
    }

    /// Archive an entry that cannot be processed, and remember to report it.
    fn unprocessable(
        &mut self,
        d: &Delivery,
        claimed: &str,
        reason: &str,
    ) -> Result<Option<u64>, RecordsError> {
        tracing::error!(conv = %d.conv, seq = d.seq, %claimed, %reason, "entry cannot be processed by the records member");
        let participants = self.device.participants(&d.conv).unwrap_or_default();
        let epoch = self.device.epoch(&d.conv).unwrap_or_default();
        let note = format!("the records member could not process this entry: {reason}; sender as named by the server, unverified");
        self.staged.push(Staged {
            conv: d.conv.clone(),
            seq: d.seq,
            kind: "unprocessable",
            epoch,
            sender: claimed.to_string(),
            participants,
            server_time_ms: d.server_time_ms,
            captured_at_ms: self.clock.now_ms(),
            expire_after_secs: None,
            burn_on_read: false,
            receipt: d.receipt.clone(),
            plaintext: None,
            note: Some(note),
        });
        self.mark(&d.conv, d.seq, false);
        self.failed
            .push((d.conv.clone(), d.seq, reason.chars().take(300).collect()));
        Ok(Some(d.seq))
    }

    /// Failures to report to the server since the last call.
    pub fn take_failures(&mut self) -> Vec<(String, u64, String)> {
        std::mem::take(&mut self.failed)
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
        Ok(Some(self.device.remove_devices(conv, &present)?))
    }

    /// Commits for the proposals captured since the last call: the records
    /// member, always online, carries out members' requests to leave.
    pub fn proposal_commits(&mut self) -> Vec<(String, Result<Request, RecordsError>)> {
        std::mem::take(&mut self.proposals)
            .into_iter()
            .map(|conv| {
                let req = self.device.commit_proposals(&conv).map_err(Into::into);
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
    ) -> Result<Option<u64>, RecordsError> {
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
        match self.device.join(conv, seq, welcome) {
            Ok(()) => Ok(()),
            Err(e @ (ClientError::Mls(_) | ClientError::Refused(_))) => {
                tracing::error!(conv, seq, error = %e, "the records member cannot join from this Welcome");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
