//! Capture failures in SQLite (see the `withheld` module for the idea).

use rusqlite::{params, OptionalExtension};

use super::*;
use crate::ServerError;

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS withheld (conv TEXT NOT NULL, seq INTEGER NOT NULL, device TEXT NOT NULL,
        handshake INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (conv, seq));
    CREATE TABLE IF NOT EXISTS blocked_devices (device TEXT PRIMARY KEY, reason TEXT NOT NULL, at_ms INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS admin_actions (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL);";

impl CaptureFailureStore for SqliteStore {
    fn records_archived(
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
                    api::blocked_reason(w),
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

    fn withheld(&self, conv: Option<&str>) -> Result<Vec<WithheldEntry>, ServerError> {
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

    fn blocked_devices(&self) -> Result<Vec<BlockedDevice>, ServerError> {
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

    fn suspended_conversations(&self) -> Result<Vec<SuspendedConversation>, ServerError> {
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

    fn suspension(&self, conv: &str) -> Result<Option<String>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT suspended FROM conversations WHERE conv=?1")?
            .query_row(params![conv], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    fn resume_conversation(
        &mut self,
        conv: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        api::check_resumable(self, conv)?;
        let tx = self.conn.transaction()?;
        tx.prepare_cached("UPDATE conversations SET suspended=NULL WHERE conv=?1")?
            .execute(params![conv])?;
        log_action(&tx, now_ms, actor, "resume conversation", conv, reason)?;
        tx.commit()?;
        Ok(())
    }

    fn unblock_device(
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

    fn admin_actions(&self, after: u64) -> Result<Vec<AdminAction>, ServerError> {
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
    api::check_reason(reason)?;
    tx.prepare_cached(
        "INSERT INTO admin_actions (at_ms, actor, action, subject, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at_ms as i64, actor, action, subject, reason])?;
    Ok(())
}
