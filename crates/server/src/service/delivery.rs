//! The durable append, promise 1's first half: an entry gets the next
//! number and a signed receipt, is handed to the log writer with the
//! answer to send once it is durable, and is held at the conversation's
//! gate for everyone but the records member (the other half is
//! [`super::release`]). Pushes go to live sessions' outboxes.

use keepwire_protocol::{
    receipt_signed_bytes, Delivery, ErrorCode, ProtocolError, Receipt, ServerBody, ServerFrame,
    RECORDS_USER,
};
use sha2::{Digest, Sha256};

use super::conversations::{others_of, CommitChange};
use super::log_writer::{Answer, Garbage, Job, OwnedRosterUpdate, Push};
use super::{internal, refuse, Core};
use crate::gate::Held;
use crate::outbox::Outbox;
use crate::roster::{self, MemberDevice};
use crate::store::{DeviceRow, LogEntry};

impl Core {
    /// Append to the log durably, then answer and push: promise 1.
    ///
    /// With a log writer attached ([`Core::attach_writer`]) the entry joins
    /// the writer's next group commit: the conversation's in-memory state
    /// moves on at once (so the next message gets the next number and is
    /// checked against the new roster), while the receipt and every push
    /// wait until the batch is durable ([`Core::answer_when_durable`]).
    /// Without one the entry is written here, before anything else.
    pub(super) fn append(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        message: Vec<u8>,
        commit: Option<CommitChange>,
        create: bool,
    ) -> Result<Receipt, ProtocolError> {
        let now = self.now_ms;
        let c = self
            .convs
            .get(conv)
            .ok_or_else(|| refuse(ErrorCode::UnknownConversation, conv.to_string()))?;
        let seq = c.last_seq + 1;
        let sha = Sha256::digest(&message).to_vec();
        let signature = self
            .signer
            .sign(&receipt_signed_bytes(conv, seq, &sha, now))
            .as_ref()
            .to_vec();
        let entry = LogEntry {
            conv: conv.to_string(),
            seq,
            sender_user: device.user.clone(),
            sender_device: device.device_id.clone(),
            server_time_ms: now,
            message,
            sha256: sha,
            signature,
        };
        let roster = match &commit {
            Some(change) => Some(OwnedRosterUpdate {
                snapshot: roster::snapshot(&change.group)?,
                group_info: change.group_info.clone(),
                // A new member needs nothing before the commit that adds
                // it; the records member also receives that commit, to
                // archive it.
                added: change
                    .added
                    .iter()
                    .map(|m| {
                        let from = if m.user == RECORDS_USER { seq - 1 } else { seq };
                        (m.device_id.clone(), from)
                    })
                    .collect(),
                welcome: change.welcome.clone(),
            }),
            None => None,
        };
        if self.writer.is_none() {
            self.store
                .append(&entry, roster.as_ref().map(|r| r.view()).as_ref(), create)
                .map_err(internal)?;
        }
        // From here the entry is (or will be, before anyone hears of it) durable.
        let c = self
            .convs
            .get_mut(conv)
            .ok_or_else(|| refuse(ErrorCode::Internal, "conversation vanished"))?;
        c.last_seq = seq;
        self.backlog += 1;
        // Two sets of pushes: the records member's, which go out as soon
        // as the entry is durable (it must capture it), and everyone
        // else's, held until the records service has archived it.
        let mut effects = Vec::new();
        let is_handshake = commit.is_some();
        let mut held = Held {
            seq,
            sender_device: device.device_id.clone(),
            members: std::sync::Arc::clone(&c.others),
            // The sender's own commit or proposal also goes to its other
            // sessions: one that reconnected before this entry went out is
            // not replayed it by `sync`, and must still apply it.
            sender_gets: is_handshake.then_some(self.handling_session),
            welcomed: Vec::new(),
        };
        let mut records_recipients: Vec<MemberDevice> = c
            .members
            .iter()
            .filter(|m| m.user == RECORDS_USER && m.device_id != device.device_id)
            .cloned()
            .collect();
        if let Some(change) = commit {
            c.version += 1;
            c.members = roster::members(&change.group);
            c.others = others_of(&c.members);
            c.group = *change.group;
            for m in &change.added {
                if m.user == RECORDS_USER {
                    // The records member archives the commit that added
                    // it, and joins from its Welcome at once.
                    records_recipients.push(m.clone());
                    if let Some(welcome) = &change.welcome {
                        let text = ServerFrame::push(ServerBody::WelcomeMessage {
                            conv: conv.to_string(),
                            seq,
                            message: welcome.clone(),
                        })
                        .to_json();
                        effects.push(Push {
                            device: m.device_id.clone(),
                            frame: text,
                        });
                    }
                } else if change.welcome.is_some() {
                    held.welcomed.push(m.device_id.clone());
                }
            }
        }
        c.gate.hold(held);
        records_recipients.dedup();
        let receipt = self.receipt(&entry);
        if !records_recipients.is_empty() {
            let text = deliver_text(&entry, receipt.clone());
            for m in records_recipients {
                effects.push(Push {
                    device: m.device_id,
                    frame: text.clone(),
                });
            }
        }
        match &self.writer {
            None => self.apply_effects(conv, seq, &effects),
            Some(_) => {
                self.pending = Some(Job {
                    entry,
                    roster,
                    create,
                    effects,
                    answer: None,
                });
            }
        }
        Ok(receipt)
    }

    /// Give the held append to the log writer, with the answer it sends
    /// once the entry is durable. Still under the core's lock, so entries
    /// reach the writer in the order their numbers were given.
    pub(super) fn release_pending(&mut self, answer: Option<Answer>) -> bool {
        let Some(mut job) = self.pending.take() else {
            return false;
        };
        job.answer = answer;
        let refused = match &self.writer {
            Some(w) => w.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            // The writer only stops after a storage failure, which ends the
            // process; the entry is not durable, and the sender is told so.
            tracing::error!("the server's log writer has stopped");
            if let Some(a) = job.answer {
                let _ = a.out.send(a.failed);
            }
        }
        true
    }

    /// Entry `seq` of `conv` is durable: push it (and the records
    /// member's Welcome) to the records member's live sessions.
    pub(super) fn apply_effects(&mut self, conv: &str, seq: u64, effects: &[Push]) {
        for p in effects {
            self.push_text(&p.device, &p.frame);
        }
        if let Some(c) = self.convs.get_mut(conv) {
            c.gate.durable(seq);
        }
    }

    /// Hand durable appends, and relay garbage, to a log writer (see
    /// [`super::run_log_writer`]).
    pub fn attach_writer(&mut self, writer: std::sync::mpsc::Sender<Job>, garbage: Garbage) {
        self.writer = Some(writer);
        self.garbage = Some(garbage);
    }

    /// After [`Core::handle`]: if the request appended to the log, its
    /// answer may only leave once the entry is durable. Then the log writer
    /// sends `reply` (or `failed`, if the write fails) to `out` right after
    /// its group commit, in order with the pushes (returns `None`, handed
    /// over); otherwise `reply` is returned to be sent now.
    pub fn answer_when_durable(
        &mut self,
        out: &Outbox,
        reply: String,
        failed: impl FnOnce() -> String,
    ) -> Option<String> {
        if self.pending.is_none() {
            return Some(reply);
        }
        self.release_pending(Some(Answer {
            out: out.clone(),
            reply,
            failed: failed(),
        }));
        None
    }

    pub(super) fn receipt(&self, e: &LogEntry) -> Receipt {
        Receipt {
            conv: e.conv.clone(),
            seq: e.seq,
            message_sha256: e.sha256.clone(),
            server_time_ms: e.server_time_ms,
            signature: e.signature.clone(),
            server_key: self.public_key().to_vec(),
        }
    }

    pub(super) fn push(&mut self, device_id: &str, body: ServerBody) {
        let text = ServerFrame::push(body).to_json();
        self.push_text(device_id, &text);
    }

    pub(super) fn push_text(&mut self, device_id: &str, text: &str) {
        self.push_text_except(device_id, None, text);
    }

    pub(super) fn is_live(&self, device_id: &str) -> bool {
        self.live.get(device_id).is_some_and(|l| !l.is_empty())
    }

    /// Push to every live session of `device_id` but `skip`.
    pub(super) fn push_text_except(&mut self, device_id: &str, skip: Option<u64>, text: &str) {
        if let Some(list) = self.live.get_mut(device_id) {
            list.retain(|(id, tx)| Some(*id) == skip || tx.send(text.to_string()));
        }
    }
}

/// The frame that delivers a log entry.
pub(super) fn deliver_text(e: &LogEntry, receipt: Receipt) -> String {
    ServerFrame::push(ServerBody::Deliver(Delivery {
        conv: e.conv.clone(),
        seq: e.seq,
        sender_user: e.sender_user.clone(),
        sender_device: e.sender_device.clone(),
        server_time_ms: e.server_time_ms,
        message: e.message.clone(),
        receipt,
    }))
    .to_json()
}
