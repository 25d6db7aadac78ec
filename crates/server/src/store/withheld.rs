//! What capture failures leave behind, durably: entries withheld from
//! every member, the devices that sent them (blocked), the conversations
//! they suspended, and the administrators' decisions about them.
//!
//! A withheld entry stays in the log forever (relay garbage collection
//! skips it) and is never delivered; the records service archived it with
//! a note saying why. A blocked device can neither connect nor send until
//! an administrator unblocks it (or revokes it). A suspended conversation
//! accepts nothing until an administrator resumes it, which is refused
//! when what was withheld is a commit or proposal: the followed roster
//! moved past a handshake the records member could not apply, and no
//! resumption can repair that (members start a new conversation).

use rusqlite::{params, OptionalExtension};

use super::Store;
use crate::ServerError;

/// One entry the records service could not capture, as it reported it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WithheldEntry {
    pub conv: String,
    pub seq: u64,
    /// The device that submitted it.
    pub device: String,
    /// Whether it is a commit or proposal (not an application message).
    pub handshake: bool,
    pub reason: String,
    pub at_ms: u64,
}

/// A device blocked because the records service could not capture what
/// it sent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockedDevice {
    pub device: String,
    pub user: String,
    pub reason: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SuspendedConversation {
    pub conv: String,
    pub reason: String,
}

/// An administrator's decision about a capture failure, kept for audit
/// and relayed to the records service for its transparency log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdminAction {
    pub id: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
}

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS withheld (conv TEXT NOT NULL, seq INTEGER NOT NULL, device TEXT NOT NULL,
        handshake INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (conv, seq));
    CREATE TABLE IF NOT EXISTS blocked_devices (device TEXT PRIMARY KEY, reason TEXT NOT NULL, at_ms INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS admin_actions (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL);";

impl Store {
    /// The records service archived `from..=to` of `conv`, of which
    /// `withheld` could not be captured: in one transaction, its cursor
    /// moves, each withheld entry is marked, its sender blocked (never a
    /// records device) and the conversation suspended with `why`. Durable
    /// before it returns when anything was withheld (the marks must survive
    /// a crash before the entries after them are released); a plain
    /// acknowledgement commits without waiting for the disk, since losing
    /// one only means redelivery.
    pub fn records_archived(
        &mut self,
        records_device: &str,
        conv: &str,
        to: u64,
        withheld: &[WithheldEntry],
        why: Option<&str>,
    ) -> Result<(), ServerError> {
        if withheld.is_empty() {
            return self.ack(records_device, conv, to, true);
        }
        let tx = self.conn.transaction()?;
        super::log::ack_in(&tx, records_device, conv, to, true)?;
        for w in withheld {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO withheld (conv, seq, device, handshake, reason, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                w.conv,
                w.seq as i64,
                w.device,
                w.handshake,
                w.reason,
                w.at_ms as i64
            ])?;
            let records = tx
                .prepare_cached("SELECT user FROM devices WHERE id=?1")?
                .query_row(params![w.device], |r| r.get::<_, String>(0))
                .optional()?
                .map(|u| u == keepwire_protocol::RECORDS_USER)
                .unwrap_or(false);
            if !records {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO blocked_devices (device, reason, at_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    w.device,
                    format!(
                        "the records service could not capture {}#{} sent by this device: {}",
                        w.conv, w.seq, w.reason
                    ),
                    w.at_ms as i64
                ])?;
            }
        }
        if let Some(why) = why {
            tx.prepare_cached(
                "UPDATE conversations SET suspended=?1 WHERE conv=?2 AND suspended IS NULL",
            )?
            .execute(params![why, conv])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every withheld entry, oldest first (per conversation, by seq).
    pub fn withheld(&self, conv: Option<&str>) -> Result<Vec<WithheldEntry>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT conv, seq, device, handshake, reason, at_ms FROM withheld
             WHERE ?1 IS NULL OR conv=?1 ORDER BY conv, seq",
        )?;
        let rows = stmt.query_map(params![conv], |r| {
            Ok(WithheldEntry {
                conv: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                device: r.get(2)?,
                handshake: r.get(3)?,
                reason: r.get(4)?,
                at_ms: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn blocked_devices(&self) -> Result<Vec<BlockedDevice>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT b.device, COALESCE(d.user, ''), b.reason, b.at_ms FROM blocked_devices b
             LEFT JOIN devices d ON d.id = b.device ORDER BY b.at_ms",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(BlockedDevice {
                device: r.get(0)?,
                user: r.get(1)?,
                reason: r.get(2)?,
                at_ms: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn suspended_conversations(&self) -> Result<Vec<SuspendedConversation>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT conv, suspended FROM conversations WHERE suspended IS NOT NULL ORDER BY conv",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SuspendedConversation {
                conv: r.get(0)?,
                reason: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Why `conv` is suspended, if it is (the running server re-reads this
    /// to notice an administrator's resumption).
    pub fn suspension(&self, conv: &str) -> Result<Option<String>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT suspended FROM conversations WHERE conv=?1")?
            .query_row(params![conv], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// An administrator resumes `conv` after dealing with the device that
    /// sent what was withheld. Refused when a withheld entry is a
    /// handshake (see the module docs) or the conversation is not
    /// suspended. Logged with `actor` and `reason`.
    pub fn resume_conversation(
        &mut self,
        conv: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        if self.suspension(conv)?.is_none() {
            return Err(ServerError::Invalid(format!(
                "conversation {conv} is not suspended"
            )));
        }
        if let Some(w) = self.withheld(Some(conv))?.into_iter().find(|w| w.handshake) {
            return Err(ServerError::Invalid(format!(
                "conversation {conv} cannot be resumed: its entry #{} (a commit or proposal from device {}) \
                 could not be applied by the records member, so the conversation's group moved on without \
                 it; its members must start a new conversation",
                w.seq, w.device
            )));
        }
        let tx = self.conn.transaction()?;
        tx.prepare_cached("UPDATE conversations SET suspended=NULL WHERE conv=?1")?
            .execute(params![conv])?;
        log_action(&tx, now_ms, actor, "resume conversation", conv, reason)?;
        tx.commit()?;
        Ok(())
    }

    /// An administrator unblocks `device` (logged with `actor`, `reason`).
    pub fn unblock_device(
        &mut self,
        device: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        let tx = self.conn.transaction()?;
        let n = tx
            .prepare_cached("DELETE FROM blocked_devices WHERE device=?1")?
            .execute(params![device])?;
        if n == 0 {
            return Err(ServerError::Invalid(format!(
                "device {device} is not blocked"
            )));
        }
        log_action(&tx, now_ms, actor, "unblock device", device, reason)?;
        tx.commit()?;
        Ok(())
    }

    /// The administrators' decisions after `after` (an id), oldest first.
    pub fn admin_actions(&self, after: u64) -> Result<Vec<AdminAction>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, actor, action, subject, reason FROM admin_actions WHERE id > ?1 ORDER BY id LIMIT 100",
        )?;
        let rows = stmt.query_map(params![after as i64], |r| {
            Ok(AdminAction {
                id: r.get::<_, i64>(0)? as u64,
                at_ms: r.get::<_, i64>(1)? as u64,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn log_action(
    tx: &rusqlite::Transaction<'_>,
    at_ms: u64,
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> Result<(), ServerError> {
    if reason.trim().is_empty() {
        return Err(ServerError::Invalid(
            "say why (--reason): the decision is kept for audit".into(),
        ));
    }
    tx.prepare_cached(
        "INSERT INTO admin_actions (at_ms, actor, action, subject, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at_ms as i64, actor, action, subject, reason])?;
    Ok(())
}
