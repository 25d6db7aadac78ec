//! Users, enrolment codes, devices, the records notice, policy and settings.

use rusqlite::{params, Connection, OptionalExtension};

use super::*;
use crate::ServerError;

impl AccountStore for SqliteStore {
    fn meta(&self, k: &str) -> Result<Option<String>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k=?1")?
            .query_row(params![k], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&self, k: &str, v: &str) -> Result<(), ServerError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")?
            .execute(params![k, v])?;
        Ok(())
    }

    fn add_user(
        &self,
        name: &str,
        display: &str,
        category: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        insert_user(&self.conn, name, display, category, now_ms)
    }

    fn add_users_with_codes(
        &mut self,
        names: &[String],
        category: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, ServerError> {
        let tx = self.conn.transaction()?;
        let mut codes = Vec::with_capacity(names.len());
        for name in names {
            insert_user(&tx, name, name, category, now_ms)?;
            codes.push(insert_code(&tx, name, now_ms)?);
        }
        tx.commit()?;
        Ok(codes)
    }

    fn user(&self, name: &str) -> Result<Option<UserRow>, ServerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT name, display, category, notice_acked_ms FROM users WHERE name=?1",
            )?
            .query_row(params![name], user_row)
            .optional()?)
    }

    fn users(&self) -> Result<Vec<UserRow>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, display, category, notice_acked_ms FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn new_enrolment_code(&self, user: &str, now_ms: u64) -> Result<String, ServerError> {
        if self.user(user)?.is_none() {
            return Err(ServerError::Invalid(format!("no user named {user}")));
        }
        insert_code(&self.conn, user, now_ms)
    }

    fn redeem_code(
        &mut self,
        code: &str,
        signature_key: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRow, ServerError> {
        let tx = self.conn.transaction()?;
        let row = tx
            .prepare_cached("SELECT user, expires_ms, used_ms FROM enrolment_codes WHERE code=?1")?
            .query_row(params![api::code_digest(code)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                ))
            })
            .optional()?;
        let user = api::check_code(row, now_ms)?;
        let device_id = api::new_device_id();
        tx.prepare_cached("UPDATE enrolment_codes SET used_ms=?1 WHERE code=?2")?
            .execute(params![now_ms as i64, api::code_digest(code)])?;
        let n = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO devices (id, user, signature_key, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![device_id, user, signature_key, now_ms as i64])?;
        if n == 0 {
            return Err(api::already_enrolled());
        }
        tx.commit()?;
        Ok(DeviceRow {
            device_id,
            user,
            signature_key: signature_key.to_vec(),
            revoked: false,
            blocked: None,
        })
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT d.id, d.user, d.signature_key, d.revoked_ms, b.reason FROM devices d
                 LEFT JOIN blocked_devices b ON b.device = d.id WHERE d.id=?1",
            )?
            .query_row(params![id], device_row)
            .optional()?)
    }

    fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, ServerError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.id, d.user, d.signature_key, d.revoked_ms, b.reason FROM devices d
             LEFT JOIN blocked_devices b ON b.device = d.id
             WHERE ?1 IS NULL OR d.user=?1 ORDER BY d.user, d.created_ms",
        )?;
        let rows = stmt.query_map(params![user], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, ServerError> {
        Ok(self
            .conn
            .prepare_cached("UPDATE devices SET revoked_ms=?1 WHERE id=?2 AND revoked_ms IS NULL")?
            .execute(params![now_ms as i64, id])?
            > 0)
    }

    fn acknowledge_notice(&self, user: &str, now_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached(
                "UPDATE users SET notice_acked_ms=?1 WHERE name=?2 AND notice_acked_ms IS NULL",
            )?
            .execute(params![now_ms as i64, user])?;
        Ok(())
    }

    fn revoked_devices(&self) -> Result<Vec<String>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM devices WHERE revoked_ms IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        display: r.get(1)?,
        category: r.get(2)?,
        notice_acknowledged_at_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
    })
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        device_id: r.get(0)?,
        user: r.get(1)?,
        signature_key: r.get(2)?,
        revoked: r.get::<_, Option<i64>>(3)?.is_some(),
        blocked: r.get(4)?,
    })
}

fn insert_user(
    conn: &Connection,
    name: &str,
    display: &str,
    category: &str,
    now_ms: u64,
) -> Result<(), ServerError> {
    api::check_user_name(name)?;
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO users (name, display, category, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![name, display, category, now_ms as i64])?;
    if n == 0 {
        return Err(ServerError::Invalid(format!("user {name} already exists")));
    }
    Ok(())
}

/// A one-time enrolment code for an existing `user`, valid for 24 hours.
fn insert_code(conn: &Connection, user: &str, now_ms: u64) -> Result<String, ServerError> {
    let (code, expires_ms) = api::new_code(now_ms);
    conn.prepare_cached(
        "INSERT INTO enrolment_codes (code, user, expires_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![api::code_digest(&code), user, expires_ms as i64])?;
    Ok(code)
}
