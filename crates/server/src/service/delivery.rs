//! The durable append, promise 1's first half: an entry gets the next
//! number and a signed receipt, becomes an [`Effect::Write`] for the log
//! writer with the answer to send once it is durable, and is held at the
//! conversation's gate for everyone but the records member (the other
//! half is [`super::release`]).
//!
//! [`Effect::Write`]: super::Effect::Write

use keepwire_protocol::{
    receipt_signed_bytes, Delivery, ErrorCode, ProtocolError, Receipt, ServerBody, ServerFrame,
    RECORDS_USER,
};
use sha2::{Digest, Sha256};

use super::conversations::{others_of, CommitChange};
use super::effects::{Job, OwnedRosterUpdate, Push};
use super::{refuse, Core};
use crate::gate::Held;
use crate::roster::{self, MemberDevice};
use crate::store::{DeviceRow, LogEntry};

impl Core {
    /// Append to the log durably, then answer and push: promise 1.
    ///
    /// The entry is held until the request's answer is attached
    /// ([`Core::answer`]) and then becomes an [`super::Effect::Write`]: it
    /// joins the log writer's next group commit. The conversation's
    /// in-memory state moves on at once (so the next message gets the
    /// next number and is checked against the new roster), while the
    /// receipt and every push wait until the entry is durable
    /// ([`Core::durable`]).
    pub(super) fn append(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        message: Vec<u8>,
        commit: Option<CommitChange>,
        create: bool,
        blobs: Vec<keepwire_protocol::attachment::BlobId>,
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
        // From here the entry will be durable before anyone hears of it.
        let c = self
            .convs
            .get_mut(conv)
            .ok_or_else(|| refuse(ErrorCode::Internal, "conversation vanished"))?;
        c.last_seq = seq;
        self.backlog += 1;
        self.accepted += 1;
        // Two sets of pushes: the records member's, which go out as soon
        // as the entry is durable (it must capture it), and everyone
        // else's, held until the records service has archived it.
        let mut effects = Vec::new();
        let is_handshake = commit.is_some();
        let mut held = Held {
            seq,
            at_ms: now,
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
        self.note_backlog();
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
        self.pending = Some(Job {
            entry,
            roster,
            create,
            blobs,
            effects,
            answer: None,
        });
        Ok(receipt)
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
