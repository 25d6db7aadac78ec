//! Changing who is in a conversation: creating it, adding and removing
//! people and devices, leaving, joining from outside, and what follows the
//! server's answer to a commit (applied once accepted, discarded once
//! refused: nothing moves until the server has the commit in its log).

use super::*;

impl Device {
    /// Start a conversation with the devices behind `members` (which must
    /// include a records device; the server refuses the commit otherwise).
    /// Returns the conversation id and the request to send.
    pub fn create_conversation(
        &mut self,
        members: &[ClaimedKeyPackage],
    ) -> Result<(String, Request), ClientError> {
        let group = self
            .client
            .create_group(ExtensionList::new(), ExtensionList::new(), None)?;
        let conv = hex::encode(group.group_id());
        let group_info = group.group_info_message(true)?.to_bytes()?;
        self.groups.insert(conv.clone(), group);
        let built = self.commit(&conv, |b| add_all(b, members))?;
        Ok((
            conv.clone(),
            Request::CreateConversation {
                conv,
                group_info,
                commit: built.commit,
                welcome: built.welcome.unwrap_or_default(),
                next_group_info: built.next_group_info,
            },
        ))
    }

    /// Commit adding these devices to `conv`.
    pub fn add_members(
        &mut self,
        conv: &str,
        members: &[ClaimedKeyPackage],
    ) -> Result<Request, ClientError> {
        Ok(self.commit(conv, |b| add_all(b, members))?.submit(conv))
    }

    /// Commit removing every device of `users` from `conv`.
    pub fn remove_users(&mut self, conv: &str, users: &[String]) -> Result<Request, ClientError> {
        self.remove_where(conv, |user, _| users.iter().any(|u| u == user))
            .map_err(|e| match e {
                ClientError::Refused(_) => {
                    ClientError::Refused(format!("none of {users:?} is in conversation {conv}"))
                }
                e => e,
            })
    }

    /// Commit removing these devices from `conv` (how the records service
    /// evicts revoked devices).
    pub fn remove_devices(
        &mut self,
        conv: &str,
        device_ids: &[String],
    ) -> Result<Request, ClientError> {
        self.remove_where(conv, |_, device| device_ids.iter().any(|d| d == device))
    }

    pub(super) fn remove_where(
        &mut self,
        conv: &str,
        matches: impl Fn(&str, &str) -> bool,
    ) -> Result<Request, ClientError> {
        let indexes: Vec<u32> = self
            .group(conv)?
            .roster()
            .members_iter()
            .filter(|m| {
                member_identity(m)
                    .and_then(|id| parse_device_identity(id.as_bytes()).map(|(u, d)| matches(u, d)))
                    .unwrap_or(false)
            })
            .map(|m| m.index)
            .collect();
        if indexes.is_empty() {
            return Err(ClientError::Refused(format!(
                "nobody to remove from conversation {conv}"
            )));
        }
        let built = self.commit(conv, |mut b| {
            for i in &indexes {
                b = b.remove_member(*i)?;
            }
            Ok(b)
        })?;
        Ok(built.submit(conv))
    }

    /// Build a commit on `conv` and persist it as the group's pending
    /// commit, so that a crash after the server accepted it still lets this
    /// device apply it when the log replays it. Callers sync first: any
    /// pending commit left over from before is then known to have been
    /// refused (an accepted one would have been replayed and applied).
    pub(super) fn commit(
        &mut self,
        conv: &str,
        build: impl FnOnce(
            mls_rs::group::CommitBuilder<'_, MlsConfig>,
        ) -> Result<
            mls_rs::group::CommitBuilder<'_, MlsConfig>,
            mls_rs::error::MlsError,
        >,
    ) -> Result<BuiltCommit, ClientError> {
        let cursor = self.cursor(conv)?;
        let group = self.group(conv)?;
        group.clear_pending_commit();
        let out = build(group.commit_builder())?.build()?;
        let built = BuiltCommit {
            commit: out.commit_message.to_bytes()?,
            welcome: out
                .welcome_messages
                .first()
                .map(|w| w.to_bytes())
                .transpose()?,
            next_group_info: out
                .external_commit_group_info
                .as_ref()
                .ok_or_else(|| ClientError::Store("commit produced no GroupInfo".into()))?
                .to_bytes()?,
        };
        self.save(conv, cursor)?;
        Ok(built)
    }

    /// Propose this device's own removal from `conv` (MLS does not let a
    /// member commit its own removal; the records member, or any other
    /// member, commits the proposal).
    pub fn leave(&mut self, conv: &str) -> Result<Request, ClientError> {
        let cursor = self.cursor(conv)?;
        let group = self.group(conv)?;
        let me = group.current_member_index();
        let proposal = group.propose_remove(me, vec![])?;
        self.save(conv, cursor)?;
        Ok(Request::Submit {
            conv: conv.to_string(),
            message: proposal.to_bytes()?,
            welcome: None,
            next_group_info: None,
        })
    }

    /// Commit the proposals this device holds for `conv` (a member's
    /// request to leave).
    pub fn commit_proposals(&mut self, conv: &str) -> Result<Request, ClientError> {
        Ok(self.commit(conv, |b| Ok(b))?.submit(conv))
    }

    /// The server accepted this device's commit as `seq`: move to the new epoch.
    pub fn commit_accepted(&mut self, conv: &str, seq: u64) -> Result<(), ClientError> {
        let group = self.group(conv)?;
        if group.has_pending_commit() {
            group.apply_pending_commit()?;
        }
        self.save(conv, seq)
    }

    /// The server refused this device's commit: forget it, stay in the epoch.
    pub fn commit_refused(&mut self, conv: &str) -> Result<(), ClientError> {
        if let Some(g) = self.groups.get_mut(conv) {
            g.clear_pending_commit();
            let cursor = self.cursor(conv)?;
            self.save(conv, cursor)?;
        }
        Ok(())
    }

    /// Join `conv`, which this device's user is already in, by external
    /// commit from the GroupInfo the server keeps. The new group is stored
    /// (cursor 0) before the commit leaves: if the server accepts it and
    /// this device crashes before the receipt, the log replays from the
    /// server's cursor for it and the device is a working member, never a
    /// leaf nobody can reach. A refused join is forgotten
    /// ([`Device::external_join_refused`]); one that never reached the
    /// server is simply made again on the next sync.
    pub fn join_external(&mut self, conv: &str, group_info: &[u8]) -> Result<Request, ClientError> {
        let (group, commit) = self
            .client
            .external_commit_builder()?
            .build(MlsMessage::from_bytes(group_info)?)?;
        let joined = hex::encode(group.group_id());
        if joined != conv {
            return Err(ClientError::Refused(format!(
                "GroupInfo is for conversation {joined}, not {conv}"
            )));
        }
        let next_group_info = group
            .group_info_message_allowing_ext_commit(true)?
            .to_bytes()?;
        self.groups.insert(conv.to_string(), group);
        self.save(conv, 0)?;
        Ok(Request::Submit {
            conv: conv.to_string(),
            message: commit.to_bytes()?,
            welcome: None,
            next_group_info: Some(next_group_info),
        })
    }

    /// The server accepted this device's external commit as `seq`.
    pub fn external_join_accepted(&mut self, conv: &str, seq: u64) -> Result<(), ClientError> {
        self.save(conv, seq)
    }

    /// The server refused the external commit: forget the would-be group.
    pub fn external_join_refused(&mut self, conv: &str) -> Result<(), ClientError> {
        self.groups.remove(conv);
        let id = hex::decode(conv).map_err(|_| ClientError::UnknownConversation(conv.into()))?;
        self.group_store.forget(&id)?;
        self.store.delete("cursor", conv.as_bytes())
    }
}
