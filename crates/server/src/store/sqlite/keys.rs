//! Key packages: each device's pool (bounded, newest kept), one claimed at a
//! time, and the references of those handed out, kept until they expire.

use rusqlite::{params, OptionalExtension};

use super::*;
use crate::ServerError;

impl KeyPackageStore for SqliteStore {
    fn add_key_packages(
        &mut self,
        device: &str,
        kps: &[Vec<u8>],
        last_resort: Option<&[u8]>,
    ) -> Result<(), ServerError> {
        let tx = self.conn.transaction()?;
        for kp in kps {
            tx.prepare_cached(
                "INSERT INTO key_packages (device, kp, last_resort) VALUES (?1, ?2, 0)",
            )?
            .execute(params![device, kp])?;
        }
        // A device that uploads on every connection (the records service
        // does) must not grow its pool without bound: keep the newest.
        tx.prepare_cached(
            "DELETE FROM key_packages WHERE device=?1 AND last_resort=0 AND id NOT IN
               (SELECT id FROM key_packages WHERE device=?1 AND last_resort=0 ORDER BY id DESC LIMIT ?2)",
        )?
        .execute(params![device, MAX_KEY_PACKAGES as i64])?;
        if let Some(lr) = last_resort {
            tx.prepare_cached("DELETE FROM key_packages WHERE device=?1 AND last_resort=1")?
                .execute(params![device])?;
            tx.prepare_cached(
                "INSERT INTO key_packages (device, kp, last_resort) VALUES (?1, ?2, 1)",
            )?
            .execute(params![device, lr])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn claim_key_package(&self, device: &str) -> Result<Option<Vec<u8>>, ServerError> {
        let row: Option<(i64, Vec<u8>, bool)> = self
            .conn
            .prepare_cached("SELECT id, kp, last_resort FROM key_packages WHERE device=?1 ORDER BY last_resort, id LIMIT 1")?.query_row(params![device],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            None => None,
            Some((id, kp, last_resort)) => {
                if !last_resort {
                    self.conn
                        .prepare_cached("DELETE FROM key_packages WHERE id=?1")?
                        .execute(params![id])?;
                }
                Some(kp)
            }
        })
    }

    fn hand_out(&self, device: &str, kp_ref: &[u8], now_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO handed_out (ref, device, at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![kp_ref, device, now_ms as i64])?;
        self.conn
            .prepare_cached("DELETE FROM handed_out WHERE at_ms < ?1")?
            .execute(params![now_ms.saturating_sub(HANDED_OUT_TTL_MS) as i64])?;
        Ok(())
    }

    fn handed_out(&self, device: &str, kp_ref: &[u8]) -> Result<bool, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM handed_out WHERE ref=?1 AND device=?2")?
            .query_row(params![kp_ref, device], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn key_package_count(&self, device: &str) -> Result<u64, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM key_packages WHERE device=?1 AND last_resort=0")?
            .query_row(params![device], |r| r.get::<_, i64>(0))? as u64)
    }
}
