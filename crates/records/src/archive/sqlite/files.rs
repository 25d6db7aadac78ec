//! Files on the embedded archive: their bytes in `files/` beside
//! `archive.db`, one file per SHA-256, never through the database (a
//! gigabyte written through the WAL every record's commit flushes held
//! every other record up); their rows (`files`, and `record_files`
//! linking a record's attachments to them) in it.
//!
//! A file's bytes are durable under their name before its row says the
//! archive holds them; a record links only files held; a file's bytes go
//! after the transaction that unlinked them from their last record
//! commits (a crash in between leaves only space, never a row without
//! bytes).

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use super::super::store::{check_file_name, check_stored, splice, ATTACHMENT_CHUNK};
use super::SqliteArchive;
use crate::{RecordMeta, RecordsError};

/// Where an archive keeps its files' bytes, beside `archive.db`.
pub const FILES_DIR: &str = "files";

impl SqliteArchive {
    /// The directory of the files' bytes, beside the database file.
    fn files_dir(&self) -> Result<PathBuf, RecordsError> {
        let db =
            self.conn.path().filter(|p| !p.is_empty()).ok_or_else(|| {
                RecordsError::Archive("an in-memory archive keeps no files".into())
            })?;
        Ok(Path::new(db)
            .parent()
            .unwrap_or(Path::new("."))
            .join(FILES_DIR))
    }

    /// [`crate::archive::ArchiveStore::put_file`]: a rename out of the
    /// spool (a copy across file systems), made durable, then the row.
    pub(super) fn store_file(
        &mut self,
        cipher_sha256: &str,
        path: &Path,
        now_ms: u64,
    ) -> Result<(), RecordsError> {
        check_file_name(cipher_sha256)?;
        let stored: bool = self
            .conn
            .prepare_cached("SELECT 1 FROM files WHERE cipher_sha256=?1")?
            .exists(params![cipher_sha256])?;
        if stored {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        let dir = self.files_dir()?;
        std::fs::create_dir_all(&dir)?;
        let size = std::fs::metadata(path)?.len();
        std::fs::File::open(path)?.sync_all()?;
        let to = dir.join(cipher_sha256);
        if std::fs::rename(path, &to).is_err() {
            std::fs::copy(path, &to)?;
            std::fs::File::open(&to)?.sync_all()?;
            let _ = std::fs::remove_file(path);
        }
        keepwire_protocol::files::sync_dir(&dir)?;
        let tx = self.write()?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO files (cipher_sha256, size, stored_at_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![cipher_sha256, size as i64, now_ms as i64])?;
        tx.commit()?;
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
        let linked: Option<String> = self
            .conn
            .prepare_cached("SELECT cipher_sha256 FROM record_files WHERE record_id=?1 AND n=?2")?
            .query_row(params![id, n as i64], |r| r.get(0))
            .optional()?;
        if let Some(hash) = linked {
            check_file_name(&hash)?;
            let mut f = match std::fs::File::open(self.files_dir()?.join(&hash)) {
                Ok(f) => f,
                // Gone: what verify reports as a file that does not match.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            use std::io::{Read, Seek};
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut out = Vec::new();
            f.take(len.min(ATTACHMENT_CHUNK) as u64)
                .read_to_end(&mut out)?;
            return Ok(out);
        }
        let end = offset as i64 + len.min(ATTACHMENT_CHUNK) as i64;
        let mut stmt = self.conn.prepare_cached(
            "SELECT start, data FROM attachment_chunks
             WHERE record_id=?1 AND n=?2 AND start < ?4 AND start + length(data) > ?3 ORDER BY start",
        )?;
        let rows = stmt
            .query_map(params![id, n, offset as i64, end], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(splice(rows, offset, end))
    }

    /// Delete the bytes of `hashes` (unlinked by a committed destroy).
    pub(super) fn delete_bytes(&self, hashes: &[String]) -> Result<(), RecordsError> {
        let dir = self.files_dir()?;
        for h in hashes {
            check_file_name(h)?;
            match std::fs::remove_file(dir.join(h)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Link record `id`'s attachments to the files held for them, inside the
/// record's insert: never a record whose file is not held.
pub(super) fn link(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    m: &RecordMeta,
) -> Result<(), RecordsError> {
    for (n, a) in m.attachments.iter().enumerate() {
        let stored: Option<i64> = tx
            .prepare_cached("SELECT size FROM files WHERE cipher_sha256=?1")?
            .query_row(params![a.cipher_sha256], |r| r.get(0))
            .optional()?;
        check_stored(m, n, a, stored.map(|s| s as u64))?;
        tx.prepare_cached(
            "INSERT INTO record_files (record_id, n, cipher_sha256) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id, n as i64, a.cipher_sha256])?;
    }
    Ok(())
}

/// Inside a destroy's transaction: unlink record `id`'s files (and its
/// schema-3 chunks); the files no record links any more, whose bytes go
/// once it commits ([`SqliteArchive::delete_bytes`]).
pub(super) fn unlink(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<Vec<String>, RecordsError> {
    tx.prepare_cached("DELETE FROM attachment_chunks WHERE record_id=?1")?
        .execute(params![id])?;
    let hashes: Vec<String> = tx
        .prepare_cached("SELECT cipher_sha256 FROM record_files WHERE record_id=?1")?
        .query_map(params![id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tx.prepare_cached("DELETE FROM record_files WHERE record_id=?1")?
        .execute(params![id])?;
    let mut unlinked = Vec::new();
    for h in hashes {
        let gone = tx
            .prepare_cached(
                "DELETE FROM files WHERE cipher_sha256=?1
                 AND NOT EXISTS (SELECT 1 FROM record_files WHERE cipher_sha256=?1)",
            )?
            .execute(params![h])?;
        if gone == 1 {
            unlinked.push(h);
        }
    }
    Ok(unlinked)
}
