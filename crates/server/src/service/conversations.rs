//! Conversations: creating one and submitting to one — the MLS checks
//! (`check`), then the sender's standing, guests, capture being open and a
//! member's commit not passing entries still being captured — then the
//! append ([`super::delivery`]); the conversations a device may join by
//! itself; and evicting revoked devices (by asking the records service to
//! commit their removal).

use keepwire_protocol::{
    ErrorCode, JoinableConversation, ProtocolError, Receipt, ServerBody, RECORDS_USER,
};

use super::check::{vet_create, vet_submit, Vetted};
use super::{internal, refuse, Conv, Core, StoreRegistry};
use crate::gate::Gate;
use crate::roster::{Followed, MemberDevice};
use crate::store::DeviceRow;
use crate::ServerError;

impl Core {
    /// Whether the records service is close enough behind, and the disk
    /// roomy enough, to accept more.
    pub(super) fn capture_open(&self) -> Result<(), ProtocolError> {
        if let Some(free) = self.free_space.filter(|f| *f < self.limits.min_free_bytes) {
            return Err(refuse(
                ErrorCode::StorageFull,
                format!(
                    "the server's disk is nearly full ({} MiB free, {} MiB kept in reserve): nothing \
                     new is accepted until space is freed; nothing accepted before is lost",
                    free >> 20,
                    self.limits.min_free_bytes >> 20
                ),
            ));
        }
        if self.backlog >= self.limits.max_capture_backlog {
            return Err(refuse(
                ErrorCode::RecordsUnavailable,
                format!(
                    "records capture unavailable: the records service is {} messages behind (limit {}); \
                     sending resumes automatically once capture catches up",
                    self.backlog, self.limits.max_capture_backlog
                ),
            ));
        }
        Ok(())
    }

    /// The free space the shell measured on the store's disk (None: it
    /// cannot tell). Below [`super::Limits::min_free_bytes`] new messages
    /// are refused with `storage_full` — before a write can fail half
    /// way — and accepted again once space returns; each change is logged
    /// once.
    pub fn set_free_space(&mut self, free: Option<u64>) {
        let full = |f: Option<u64>| f.is_some_and(|f| f < self.limits.min_free_bytes);
        match (full(self.free_space), full(free)) {
            (false, true) => tracing::warn!(
                free_mib = free.unwrap_or(0) >> 20,
                reserve_mib = self.limits.min_free_bytes >> 20,
                "storage full: new messages are refused until space is freed"
            ),
            (true, false) => tracing::info!(
                free_mib = free.unwrap_or(0) >> 20,
                "storage has room again: new messages are accepted"
            ),
            _ => {}
        }
        self.free_space = free;
    }

    /// Log, once per change, when capture closes (the backlog reached its
    /// limit: new messages are refused) and when it opens again.
    pub(super) fn note_backlog(&mut self) {
        let closed = self.backlog >= self.limits.max_capture_backlog;
        if closed == self.fail_closed {
            return;
        }
        self.fail_closed = closed;
        if closed {
            tracing::warn!(
                backlog = self.backlog,
                limit = self.limits.max_capture_backlog,
                "fail closed: the records service is too far behind; new messages are refused until capture catches up"
            );
        } else {
            tracing::info!(
                backlog = self.backlog,
                "capture caught up: new messages are accepted again"
            );
        }
    }

    pub(super) fn check_guests(&self, added: &[MemberDevice]) -> Result<(), ProtocolError> {
        if self.policy()?.guests_allowed {
            return Ok(());
        }
        for m in added {
            if self
                .store
                .user(&m.user)
                .map_err(internal)?
                .map(|u| u.category == "guest")
                .unwrap_or(false)
            {
                return Err(refuse(
                    ErrorCode::Unauthorized,
                    format!("policy does not allow guests; {} is a guest", m.user),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn create(
        &mut self,
        device: &DeviceRow,
        conv: String,
        group_info: Vec<u8>,
        commit: Vec<u8>,
        welcome: Vec<u8>,
        next_group_info: Vec<u8>,
    ) -> Result<ServerBody, ProtocolError> {
        self.check_sender(device)?;
        self.capture_open()?;
        if self.convs.contains_key(&conv) {
            return Err(refuse(
                ErrorCode::ConversationExists,
                format!("conversation {conv} already exists"),
            ));
        }
        let vetted = match self.take_vetted_create(&conv) {
            Some(v) => v?,
            None => vet_create(
                device,
                &StoreRegistry(&*self.store),
                &conv,
                &group_info,
                &commit,
                &welcome,
                &next_group_info,
            )?,
        };
        self.check_guests(&vetted.added)?;
        self.convs.insert(
            conv.clone(),
            Conv {
                others: others_of(&vetted.creator),
                members: vetted.creator,
                group: *vetted.group,
                last_seq: 0,
                gate: Gate::default(),
                suspended: None,
                version: 0,
            },
        );
        let change = CommitChange {
            group: vetted.next,
            added: vetted.added,
            welcome: Some(welcome),
            group_info: Some(next_group_info),
        };
        let receipt = self.append(device, &conv, commit, Some(change), true, Vec::new());
        if receipt.is_err() {
            self.convs.remove(&conv);
        }
        Ok(ServerBody::Receipt(receipt?))
    }

    pub(super) fn submit(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        message: Vec<u8>,
        welcome: Option<Vec<u8>>,
        next_group_info: Option<Vec<u8>>,
    ) -> Result<Receipt, ProtocolError> {
        self.capture_open()?;
        // The records member's own commits (evicting a revoked device,
        // carrying out a member's leaving) go on in a suspended
        // conversation: they are what an administrator may be waiting for.
        if device.user != RECORDS_USER {
            self.check_suspension(conv)?;
        }
        let vetted = match self.take_vetted_submit(conv) {
            Some(v) => v?,
            None => {
                let c = self.convs.get(conv).ok_or_else(|| {
                    refuse(
                        ErrorCode::UnknownConversation,
                        format!("no conversation {conv}"),
                    )
                })?;
                vet_submit(
                    &c.group,
                    device,
                    &StoreRegistry(&*self.store),
                    &message,
                    welcome.as_deref(),
                    next_group_info.as_deref(),
                )?
            }
        };
        // Proposals (a member asking to leave) carry no content: someone
        // added to a conversation may leave it without having acknowledged
        // the records notice. Everything else needs the acknowledgement.
        if !matches!(vetted, Vetted::Proposal(_)) {
            self.check_sender(device)?;
        }
        match vetted {
            Vetted::Application => {
                let blobs = self.carried_blobs(device, conv, &message)?;
                let receipt = self.append(device, conv, message, None, false, blobs.clone())?;
                self.blobs_in_flight.extend(blobs);
                Ok(receipt)
            }
            Vetted::Proposal(group) => {
                let change = CommitChange {
                    group,
                    added: Vec::new(),
                    welcome: None,
                    group_info: None,
                };
                self.append(device, conv, message, Some(change), false, Vec::new())
            }
            Vetted::Commit {
                group,
                added,
                external,
            } => {
                self.check_guests(&added)?;
                // A member's commit moves its device past every entry
                // before it; those it has not been sent yet (still waiting
                // for capture) it would then never process. The records
                // member has them all; a device joining has none to see.
                if let Some(c) = self.convs.get(conv) {
                    if device.user != RECORDS_USER && !external && c.gate.released() < c.last_seq {
                        return Err(refuse(
                            ErrorCode::CapturePending,
                            format!(
                                "entries up to #{} of this conversation are still being captured; commit again once they have arrived",
                                c.last_seq
                            ),
                        ));
                    }
                }
                let change = CommitChange {
                    group,
                    added,
                    welcome: welcome.filter(|_| !external),
                    group_info: next_group_info,
                };
                self.append(device, conv, message, Some(change), false, Vec::new())
            }
        }
    }

    /// Conversations `device` may join by external commit: another device
    /// of its user is in them, it is not.
    pub(super) fn joinable(&self, device: &DeviceRow) -> Result<ServerBody, ProtocolError> {
        let mut conversations = Vec::new();
        for (conv, c) in &self.convs {
            let user_in = c.members.iter().any(|m| m.user == device.user);
            let device_in = c.members.iter().any(|m| m.device_id == device.device_id);
            // Only an epoch the records member has captured, in a
            // conversation that accepts messages: the latest GroupInfo
            // may belong to a commit still waiting for capture (or one it
            // will withhold), and a join from it would land in an epoch
            // nobody may read yet. The device asks again at its next sync.
            let settled = c.gate.released() == c.last_seq && c.suspended.is_none();
            if user_in && !device_in && settled {
                if let Some(group_info) = self.store.group_info(conv).map_err(internal)? {
                    conversations.push(JoinableConversation {
                        conv: conv.clone(),
                        group_info,
                    });
                }
            }
        }
        Ok(ServerBody::Joinable { conversations })
    }

    /// Ask the records service to evict revoked devices that are still in
    /// some conversation's roster. Called periodically: an eviction that
    /// lost a race with another commit is simply asked for again.
    pub fn request_evictions(&mut self) -> Result<usize, ServerError> {
        let revoked = self.store.revoked_devices()?;
        if revoked.is_empty() {
            return Ok(0);
        }
        let mut asks = Vec::new();
        for (conv, c) in &self.convs {
            let devices: Vec<String> = c
                .members
                .iter()
                .filter(|m| revoked.contains(&m.device_id))
                .map(|m| m.device_id.clone())
                .collect();
            if devices.is_empty() {
                continue;
            }
            if let Some(r) = c.members.iter().find(|m| m.user == RECORDS_USER) {
                asks.push((r.device_id.clone(), conv.clone(), devices));
            }
        }
        let n = asks.len();
        for (records, conv, devices) in asks {
            self.push(&records, ServerBody::Evict { conv, devices });
        }
        Ok(n)
    }
}

/// The devices of `members` but the records member's.
pub(super) fn others_of(members: &[MemberDevice]) -> std::sync::Arc<[String]> {
    members
        .iter()
        .filter(|m| m.user != RECORDS_USER)
        .map(|m| m.device_id.clone())
        .collect::<Vec<_>>()
        .into()
}

/// What an accepted commit (or proposal) changes in the followed group.
pub(super) struct CommitChange {
    pub(super) group: Box<Followed>,
    pub(super) added: Vec<MemberDevice>,
    pub(super) welcome: Option<Vec<u8>>,
    /// The new epoch's GroupInfo; none for a proposal.
    pub(super) group_info: Option<Vec<u8>>,
}
