//! Receipt keys and the archive checkpoints the server keeps, in
//! PostgreSQL.

use super::*;

impl CheckpointStore for PgStore {
    fn record_receipt_key(&self, key: &[u8], from_ms: u64) -> Result<(), ServerError> {
        self.pg.execute(
            "INSERT INTO receipt_keys (key, from_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&key, &(from_ms as i64)],
        )?;
        Ok(())
    }

    fn retire_receipt_key(&self, key: &[u8], until_ms: u64) -> Result<(), ServerError> {
        self.pg.execute(
            "UPDATE receipt_keys SET until_ms=$1 WHERE key=$2 AND until_ms IS NULL",
            &[&(until_ms as i64), &key],
        )?;
        Ok(())
    }

    fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, ServerError> {
        all(
            self.pg.query(
                "SELECT key, from_ms, until_ms FROM receipt_keys ORDER BY from_ms",
                &[],
            )?,
            |r| {
                Ok(ReceiptKey {
                    key: r.try_get(0)?,
                    from_ms: u64_at(r, 1)?,
                    until_ms: opt_u64_at(r, 2)?,
                })
            },
        )
    }

    fn add_checkpoint(
        &self,
        size: u64,
        note: &str,
        from_size: Option<u64>,
        path: &[Vec<u8>],
    ) -> Result<(), ServerError> {
        self.pg.execute(
            "INSERT INTO checkpoints (size, note, from_size, path) VALUES ($1, $2, $3, $4)
             ON CONFLICT (size) DO UPDATE SET note = excluded.note, from_size = excluded.from_size,
               path = excluded.path",
            &[
                &(size as i64),
                &note,
                &from_size.map(|v| v as i64),
                &path.concat(),
            ],
        )?;
        Ok(())
    }

    fn checkpoints_after(
        &self,
        since_size: u64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        all(
            self.pg.query(
                "SELECT note, from_size, path FROM checkpoints WHERE size > $1 ORDER BY size LIMIT $2",
                &[&(since_size as i64), &CHECKPOINT_PAGE],
            )?,
            checkpoint_row,
        )
    }

    fn latest_checkpoint(
        &self,
    ) -> Result<Option<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        self.pg
            .query_opt(
                "SELECT note, from_size, path FROM checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )?
            .map(|r| checkpoint_row(&r))
            .transpose()
    }
}

fn checkpoint_row(r: &Row) -> Result<keepwire_protocol::PublishedCheckpoint, ServerError> {
    let path: Vec<u8> = r.try_get(2)?;
    Ok(keepwire_protocol::PublishedCheckpoint {
        checkpoint: r.try_get(0)?,
        link: keepwire_protocol::CheckpointProof {
            from_size: opt_u64_at(r, 1)?,
            consistency_path: api::split_path(&path),
        },
    })
}
