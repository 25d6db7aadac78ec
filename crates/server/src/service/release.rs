//! Releasing what the records service has captured, and only that (see
//! [`crate::gate`]): its `archived` reports, with what it withheld
//! (marked, the sender blocked, the conversation suspended); the release
//! of the rest to the members each entry was held for; `sync`, which
//! replays members only released entries; members' acknowledgements; and
//! the administrators' decisions relayed to the records service's log.

use std::collections::HashMap;

use keepwire_protocol::{ErrorCode, ProtocolError, ServerBody, ServerFrame, RECORDS_USER};

use super::delivery::deliver_text;
use super::{internal, refuse, Conv, Core, Effect, Session};
use crate::gate::{Gate, Held};
use crate::roster::{self, MemberDevice};
use crate::store::{DeviceRow, LogEntry, ServerStore, WithheldEntry};
use crate::ServerError;

impl Core {
    /// Push the administrators' decisions the records service has not
    /// logged yet (resuming a conversation, unblocking a device) to it, for
    /// its transparency log. Called periodically, like evictions: a push
    /// lost with a connection is simply made again.
    pub fn relay_decisions(&mut self) -> Result<usize, ServerError> {
        let done = self
            .store
            .meta("admin_actions.logged")?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let pending = self.store.admin_actions(done)?;
        if pending.is_empty() {
            return Ok(0);
        }
        let records: Vec<String> = self
            .store
            .devices(Some(RECORDS_USER))?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| self.is_live(d))
            .collect();
        for d in &records {
            for a in &pending {
                self.push(
                    d,
                    ServerBody::AdminDecision {
                        decision: a.id,
                        at_ms: a.at_ms,
                        actor: a.actor.clone(),
                        action: a.action.clone(),
                        subject: a.subject.clone(),
                        reason: a.reason.clone(),
                    },
                );
            }
        }
        Ok(pending.len())
    }

    /// A member's device has stored everything of `conv` up to `seq` it
    /// was sent. Only from a device that is, or was, in the conversation
    /// (it has a cursor there); never from the records service, whose
    /// acknowledgements say what is archived ([`Core::archived`]).
    pub(super) fn ack(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        seq: u64,
    ) -> Result<ServerBody, ProtocolError> {
        if device.user == RECORDS_USER {
            return Err(refuse(
                ErrorCode::BadFrame,
                "the records service acknowledges with `archived`, naming what it withheld",
            ));
        }
        let c = self.convs.get(conv).ok_or_else(|| {
            refuse(
                ErrorCode::UnknownConversation,
                format!("no conversation {conv}"),
            )
        })?;
        if seq > c.last_seq {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!(
                    "cannot acknowledge seq {seq}: the log of {conv} ends at {}",
                    c.last_seq
                ),
            ));
        }
        let member = c.members.iter().any(|m| m.device_id == device.device_id);
        if !member
            && self
                .store
                .cursor(&device.device_id, conv)
                .map_err(internal)?
                .is_none()
        {
            return Err(refuse(
                ErrorCode::NotMember,
                format!("device {} is not in conversation {conv}", device.device_id),
            ));
        }
        self.store
            .ack(&device.device_id, conv, seq, false)
            .map_err(internal)?;
        Ok(ServerBody::Ok)
    }

    /// The records service archived entries `from..=to` of `conv`, and
    /// could not capture `withheld`. Its reports advance without gaps (a
    /// jump would certify entries it never archived). What it withheld is
    /// marked for good, the devices that sent it are blocked and the
    /// conversation suspended, durably, before anything after it is
    /// released; then the other entries go out ([`Core::release`]).
    pub(super) fn archived(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        from: u64,
        to: u64,
        withheld: Vec<keepwire_protocol::WithheldReport>,
    ) -> Result<ServerBody, ProtocolError> {
        if device.user != RECORDS_USER {
            return Err(refuse(
                ErrorCode::Unauthorized,
                "only the records service reports archived entries",
            ));
        }
        if from == 0 || from > to {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!("archived range {from}..={to} is empty or starts before 1"),
            ));
        }
        let c = self.convs.get(conv).ok_or_else(|| {
            refuse(
                ErrorCode::UnknownConversation,
                format!("no conversation {conv}"),
            )
        })?;
        if to > c.gate.durable_seq() {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!(
                    "cannot report #{to} archived: the durable log of {conv} ends at {}",
                    c.gate.durable_seq()
                ),
            ));
        }
        let acked = c.gate.archived_seq();
        if from > acked + 1 {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!(
                    "records acknowledgements must be contiguous: {conv} is archived up to {acked}, not {}",
                    from - 1
                ),
            ));
        }
        if withheld.len() as u64 > to - from + 1
            || withheld
                .iter()
                .any(|w| w.seq < from || w.seq <= acked || w.seq > to || w.reason.len() > 4096)
        {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!(
                    "withheld entries must lie in {from}..={to}, after what was already archived ({acked}), each reason under 4 KiB"
                ),
            ));
        }
        let now = self.now_ms;
        let mut marks = Vec::with_capacity(withheld.len());
        for w in &withheld {
            let entry = self
                .store
                .log_range(conv, w.seq, w.seq)
                .map_err(internal)?
                .pop();
            let (sender, handshake) = match &entry {
                Some(e) => (e.sender_device.clone(), roster::is_handshake(&e.message)),
                None => (String::new(), false),
            };
            marks.push(WithheldEntry {
                conv: conv.to_string(),
                seq: w.seq,
                device: sender,
                handshake,
                reason: w.reason.clone(),
                at_ms: now,
            });
        }
        let why = marks.first().map(|w| {
            format!(
                "records capture failed for this conversation at #{} sent by device {} ({}); \
                 nothing more can be sent to it until an administrator reviews it",
                w.seq,
                w.device,
                w.reason.chars().take(300).collect::<String>()
            )
        });
        self.store
            .records_archived(&device.device_id, conv, to, &marks, why.as_deref())
            .map_err(internal)?;
        for w in &marks {
            tracing::error!(conv, seq = w.seq, device = %w.device, reason = %w.reason, "entry withheld: the records service could not capture it; device blocked, conversation suspended");
            // Blocked at once: no more pushes; its next request is refused.
            if self
                .store
                .device(&w.device)
                .map_err(internal)?
                .is_some_and(|d| d.user != RECORDS_USER)
            {
                self.live.remove(&w.device);
            }
        }
        let seqs: Vec<u64> = marks.iter().map(|w| w.seq).collect();
        let c = self
            .convs
            .get_mut(conv)
            .ok_or_else(|| refuse(ErrorCode::Internal, "conversation vanished"))?;
        if let Some(why) = why {
            c.suspended.get_or_insert(why);
        }
        if to > acked {
            self.backlog = self.backlog.saturating_sub(to - acked);
            self.captured += to - acked;
        }
        let released = c.gate.archived(to, &seqs);
        let upto = c.gate.released();
        self.note_backlog();
        self.release(conv, released, upto).map_err(internal)?;
        Ok(ServerBody::Ok)
    }

    /// Push entries the records service has archived to the members they
    /// were held for (with the Welcomes they carry), and tell their
    /// senders they are captured. The entries are read back from the log
    /// rather than kept in memory: a backlog of large messages would
    /// otherwise sit in the server's memory until capture caught up.
    fn release(&mut self, conv: &str, released: Vec<Held>, upto: u64) -> Result<(), ServerError> {
        let (Some(first), Some(last)) = (released.first(), released.last()) else {
            return Ok(());
        };
        let anyone = released.iter().any(|h| {
            h.recipients().any(|(d, _)| self.is_live(d))
                || h.welcomed.iter().any(|d| self.is_live(d))
                || self.is_live(&h.sender_device)
        });
        if !anyone {
            return Ok(()); // they catch up by sync
        }
        let entries: HashMap<u64, LogEntry> = self
            .store
            .log_range(conv, first.seq, last.seq)?
            .into_iter()
            .map(|e| (e.seq, e))
            .collect();
        let mut senders: Vec<String> = Vec::new();
        for h in released {
            for d in &h.welcomed {
                if let Some((seq, message)) = self.store.welcome(d, conv)? {
                    if seq == h.seq {
                        let text = ServerFrame::push(ServerBody::WelcomeMessage {
                            conv: conv.to_string(),
                            seq,
                            message,
                        })
                        .to_json();
                        self.push_text(d, &text);
                    }
                }
            }
            if let Some(e) = entries.get(&h.seq) {
                if h.recipients().any(|(d, _)| self.is_live(d)) {
                    let text = deliver_text(e, self.receipt(e));
                    for (d, skip) in h.recipients() {
                        self.push_text_except(d, skip, &text);
                    }
                }
            }
            if !senders.contains(&h.sender_device) {
                senders.push(h.sender_device);
            }
        }
        let captured = ServerFrame::push(ServerBody::Captured {
            conv: conv.to_string(),
            upto,
        })
        .to_json();
        for d in senders {
            self.push_text(&d, &captured);
        }
        Ok(())
    }

    /// Refuse to append to a suspended conversation, unless an
    /// administrator has resumed it since (read back from the store, so
    /// `keepwire admin conversation resume` takes effect on a running
    /// server).
    pub(super) fn check_suspension(&mut self, conv: &str) -> Result<(), ProtocolError> {
        let Some(c) = self.convs.get(conv) else {
            return Ok(());
        };
        if c.suspended.is_none() {
            return Ok(());
        }
        let now = self.store.suspension(conv).map_err(internal)?;
        let c = self
            .convs
            .get_mut(conv)
            .ok_or_else(|| refuse(ErrorCode::Internal, "conversation vanished"))?;
        c.suspended = now;
        match &c.suspended {
            Some(why) => Err(refuse(ErrorCode::ConversationSuspended, why.clone())),
            None => {
                tracing::info!(conv, "conversation resumed by an administrator");
                Ok(())
            }
        }
    }

    /// Replay what this device has not acknowledged, then go live: both
    /// under the core's lock, so live pushes can never overtake the replay.
    /// Members are replayed only what was released (archived, never a
    /// withheld entry); the records member what is durable. The log writer
    /// commits without that lock, so the store may already hold entries
    /// whose pushes have not gone out yet; those are left to the live
    /// pushes (in order, Welcome first).
    pub(super) fn sync(
        &mut self,
        session: &Session,
        device: &DeviceRow,
    ) -> Result<ServerBody, ProtocolError> {
        let records = device.user == RECORDS_USER;
        // A replay fills at most half the connection's queue; past that the
        // device is told there is more and syncs again once it has read
        // this part (a large backlog would otherwise overflow the queue and
        // close the connection on every attempt). It goes live only once
        // nothing is left, so live pushes never overtake the replay.
        let budget = self.limits.max_outbox_bytes / 2;
        // Off the live list while replaying: a session that was live (a
        // device syncing again on the same connection) would otherwise get
        // live pushes interleaved with a paged replay.
        if let Some(list) = self.live.get_mut(&device.device_id) {
            list.retain(|id| *id != session.id);
        }
        let mut sent = 0usize;
        let mut replay = Vec::new();
        let mut send = |text: String| {
            sent += text.len();
            replay.push(Effect::Send {
                session: session.id,
                text,
            });
            sent < budget
        };
        let upto = |c: &Conv| {
            if records {
                c.gate.durable_seq()
            } else {
                c.gate.released()
            }
        };
        for (conv, seq, message) in self
            .store
            .welcomes_for(&device.device_id)
            .map_err(internal)?
        {
            match self.convs.get(&conv) {
                Some(c) if seq <= upto(c) && !c.gate.is_withheld(seq) => {}
                _ => continue,
            }
            // Welcomes always go in full (at most one per conversation):
            // the records member clears its own only by archiving, so
            // stopping at them could fill every page with the same ones.
            send(ServerFrame::push(ServerBody::WelcomeMessage { conv, seq, message }).to_json());
        }
        let mine: Vec<String> = self
            .convs
            .iter()
            .filter(|(_, c)| c.members.iter().any(|m| m.device_id == device.device_id))
            .map(|(k, _)| k.clone())
            .collect();
        for conv in mine {
            // No cursor row: the commit adding this device is not durable
            // yet; its Welcome (and the log after it) will follow.
            let Some(cursor) = self
                .store
                .cursor(&device.device_id, &conv)
                .map_err(internal)?
            else {
                continue;
            };
            let Some(c) = self.convs.get(&conv) else {
                continue;
            };
            let (to, released) = (upto(c), c.gate.released());
            if to > cursor {
                for e in self
                    .store
                    .log_range(&conv, cursor + 1, to)
                    .map_err(internal)?
                {
                    if !records && c.gate.is_withheld(e.seq) {
                        continue;
                    }
                    if !send(deliver_text(&e, self.receipt(&e))) {
                        self.effects.append(&mut replay);
                        return Ok(ServerBody::Synced { more: true });
                    }
                }
            }
            if !records && released > 0 {
                send(
                    ServerFrame::push(ServerBody::Captured {
                        conv: conv.clone(),
                        upto: released,
                    })
                    .to_json(),
                );
            }
        }
        self.effects.append(&mut replay);
        let list = self.live.entry(device.device_id.clone()).or_default();
        if !list.contains(&session.id) {
            list.push(session.id);
        }
        Ok(ServerBody::Synced { more: false })
    }
}

/// After a restart, the entries of `conv` after `archived` wait for the
/// records service again. Who they go to is worked out from the roster
/// as it stands and each device's cursor (the roster they were appended
/// under is gone): every member but the records member whose cursor is
/// before the entry, with the Welcomes still waiting. A device removed
/// from the conversation in the meantime does not get them, as `sync`
/// replays only the conversations a device is in.
pub(super) fn hold_after_restart(
    store: &dyn ServerStore,
    conv: &str,
    archived: u64,
    members: &[MemberDevice],
    gate: &mut Gate,
) -> Result<(), ServerError> {
    let cursors: HashMap<String, u64> = store.cursors_in(conv)?.into_iter().collect();
    let welcomes = store.welcomes_in(conv)?;
    for (seq, sender_device, at_ms) in store.log_senders(conv, archived)? {
        let members: Vec<String> = members
            .iter()
            .filter(|m| m.user != RECORDS_USER)
            .filter(|m| cursors.get(&m.device_id).is_some_and(|c| *c < seq))
            .map(|m| m.device_id.clone())
            .collect();
        gate.hold(Held {
            seq,
            at_ms,
            members: members.into(),
            // Every session is new after a restart; a sender still behind
            // its own entry (a commit it must apply) gets it like anyone.
            sender_gets: Some(0),
            welcomed: welcomes
                .iter()
                .filter(|(_, s)| *s == seq)
                .map(|(d, _)| d.clone())
                .collect(),
            sender_device,
        });
    }
    Ok(())
}
