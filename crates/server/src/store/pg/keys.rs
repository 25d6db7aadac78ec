//! Key packages in PostgreSQL.

use super::*;

impl KeyPackageStore for PgStore {
    fn add_key_packages(
        &mut self,
        device: &str,
        kps: &[Vec<u8>],
        last_resort: Option<&[u8]>,
    ) -> Result<(), ServerError> {
        self.pg.transaction(|pg| {
            // One statement for the whole upload (a round trip each would
            // be a thousand), in upload order so the oldest go first.
            pg.execute(
                "INSERT INTO key_packages (device, kp, last_resort)
                 SELECT $1, kp, false FROM unnest($2::BYTEA[]) WITH ORDINALITY AS t(kp, n) ORDER BY n",
                &[&device, &kps],
            )?;
            pg.execute(
                "DELETE FROM key_packages WHERE device=$1 AND NOT last_resort AND id NOT IN
                   (SELECT id FROM key_packages WHERE device=$1 AND NOT last_resort ORDER BY id DESC LIMIT $2)",
                &[&device, &(MAX_KEY_PACKAGES as i64)],
            )?;
            if let Some(lr) = last_resort {
                pg.execute(
                    "DELETE FROM key_packages WHERE device=$1 AND last_resort",
                    &[&device],
                )?;
                pg.execute(
                    "INSERT INTO key_packages (device, kp, last_resort) VALUES ($1, $2, true)",
                    &[&device, &lr],
                )?;
            }
            Ok(())
        })
    }

    fn claim_key_package(&self, device: &str) -> Result<Option<Vec<u8>>, ServerError> {
        let taken = self.pg.query_opt(
            "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages
               WHERE device=$1 AND NOT last_resort ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING kp",
            &[&device],
        )?;
        let row = match taken {
            Some(r) => Some(r),
            None => self.pg.query_opt(
                "SELECT kp FROM key_packages WHERE device=$1 AND last_resort LIMIT 1",
                &[&device],
            )?,
        };
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    fn hand_out(&self, device: &str, kp_ref: &[u8], now_ms: u64) -> Result<(), ServerError> {
        self.pg.execute(
            "INSERT INTO handed_out (ref, device, at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (ref) DO UPDATE SET device = excluded.device, at_ms = excluded.at_ms",
            &[&kp_ref, &device, &(now_ms as i64)],
        )?;
        self.pg.execute(
            "DELETE FROM handed_out WHERE at_ms < $1",
            &[&(now_ms.saturating_sub(HANDED_OUT_TTL_MS) as i64)],
        )?;
        Ok(())
    }

    fn handed_out(&self, device: &str, kp_ref: &[u8]) -> Result<bool, ServerError> {
        Ok(self
            .pg
            .query_opt(
                "SELECT 1 FROM handed_out WHERE ref=$1 AND device=$2",
                &[&kp_ref, &device],
            )?
            .is_some())
    }

    fn key_package_count(&self, device: &str) -> Result<u64, ServerError> {
        u64_at(
            &self.pg.query_one(
                "SELECT COUNT(*) FROM key_packages WHERE device=$1 AND NOT last_resort",
                &[&device],
            )?,
            0,
        )
    }
}
