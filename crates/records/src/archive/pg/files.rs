//! Files on a PostgreSQL archive: their bytes as `file_chunks` rows of
//! at most [`ATTACHMENT_CHUNK`], one file per SHA-256, written in
//! transactions of their own without the writers' lock (records go on
//! being archived meanwhile); their rows (`files`, and `record_files`
//! linking a record's attachments to them) beside.
//!
//! A file's chunks are all in before its `files` row says the archive
//! holds it; a record links only files held; a file's chunks go in the
//! transaction that unlinks it from its last record.

use keepwire_schema::pg::tokio_postgres::Row;
use keepwire_schema::pg::Pg;

use super::super::store::{check_file_name, check_stored, splice, ATTACHMENT_CHUNK};
use super::{u64_at, PgArchive};
use crate::{RecordMeta, RecordsError};

impl PgArchive {
    /// [`crate::archive::ArchiveStore::put_file`]. What a crash leaves
    /// half-stored (chunks, no row) is replaced by the next attempt.
    pub(super) fn store_file(
        &mut self,
        cipher_sha256: &str,
        path: &std::path::Path,
        now_ms: u64,
    ) -> Result<(), RecordsError> {
        check_file_name(cipher_sha256)?;
        let stored = self
            .pg
            .query_opt(
                "SELECT 1 FROM files WHERE cipher_sha256=$1",
                &[&cipher_sha256],
            )?
            .is_some();
        if !stored {
            self.pg.execute(
                "DELETE FROM file_chunks WHERE cipher_sha256=$1",
                &[&cipher_sha256],
            )?;
            let mut f = std::fs::File::open(path)?;
            let mut buf = vec![0u8; ATTACHMENT_CHUNK];
            let mut at = 0i64;
            loop {
                let filled = keepwire_protocol::files::read_full(&mut f, &mut buf)?;
                if filled == 0 {
                    break;
                }
                self.pg.execute(
                    "INSERT INTO file_chunks (cipher_sha256, start, data) VALUES ($1, $2, $3)",
                    &[&cipher_sha256, &at, &&buf[..filled]],
                )?;
                at += filled as i64;
            }
            self.pg.execute(
                "INSERT INTO files (cipher_sha256, size, stored_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&cipher_sha256, &at, &(now_ms as i64)],
            )?;
        }
        let _ = std::fs::remove_file(path);
        Ok(())
    }

    /// [`crate::archive::ArchiveStore::attachment_read`]: from the file
    /// the record links, or, for a record stored under schema 3, from
    /// its `attachment_chunks`.
    pub(super) fn read_attachment(
        &self,
        id: i64,
        n: u32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RecordsError> {
        let end = offset as i64 + len.min(ATTACHMENT_CHUNK) as i64;
        let linked = self.pg.query_opt(
            "SELECT cipher_sha256 FROM record_files WHERE record_id=$1 AND n=$2",
            &[&id, &(n as i32)],
        )?;
        let rows = match linked {
            Some(row) => {
                let hash: String = row.try_get(0)?;
                self.pg.query(
                    "SELECT start, data FROM file_chunks
                     WHERE cipher_sha256=$1 AND start < $3 AND start + length(data) > $2 ORDER BY start",
                    &[&hash, &(offset as i64), &end],
                )?
            }
            None => self.pg.query(
                "SELECT start, data FROM attachment_chunks
                 WHERE record_id=$1 AND n=$2 AND start < $4 AND start + length(data) > $3 ORDER BY start",
                &[&id, &(n as i32), &(offset as i64), &end],
            )?,
        };
        Ok(splice(chunks(&rows)?, offset, end))
    }
}

fn chunks(rows: &[Row]) -> Result<Vec<(i64, Vec<u8>)>, RecordsError> {
    rows.iter()
        .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, Vec<u8>>(1)?)))
        .collect()
}

/// Link record `id`'s attachments to the files held for them, inside the
/// record's insert: never a record whose file is not held.
pub(super) fn link(pg: &Pg, id: i64, m: &RecordMeta) -> Result<(), RecordsError> {
    for (n, a) in m.attachments.iter().enumerate() {
        let stored = pg
            .query_opt(
                "SELECT size FROM files WHERE cipher_sha256=$1",
                &[&a.cipher_sha256],
            )?
            .map(|r| u64_at(&r, 0))
            .transpose()?;
        check_stored(m, n, a, stored)?;
        pg.execute(
            "INSERT INTO record_files (record_id, n, cipher_sha256) VALUES ($1, $2, $3)",
            &[&id, &(n as i32), &a.cipher_sha256],
        )?;
    }
    Ok(())
}

/// Inside a destroy's transaction: unlink record `id`'s files (and its
/// schema-3 chunks), deleting the chunks of every file no record links
/// any more.
pub(super) fn unlink(pg: &Pg, id: i64) -> Result<(), RecordsError> {
    pg.execute("DELETE FROM attachment_chunks WHERE record_id=$1", &[&id])?;
    let hashes = pg.query(
        "DELETE FROM record_files WHERE record_id=$1 RETURNING cipher_sha256",
        &[&id],
    )?;
    for row in hashes {
        let h: String = row.try_get(0)?;
        let gone = pg.execute(
            "DELETE FROM files WHERE cipher_sha256=$1
             AND NOT EXISTS (SELECT 1 FROM record_files WHERE cipher_sha256=$1)",
            &[&h],
        )?;
        if gone == 1 {
            pg.execute("DELETE FROM file_chunks WHERE cipher_sha256=$1", &[&h])?;
        }
    }
    Ok(())
}
