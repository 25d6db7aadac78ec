//! A message's files on the device: the plaintext, in the encrypted store
//! like everything else, a chunk of at most [`FILE_CHUNK`] per sealed
//! value (bound to its message, file and place, so a chunk cannot be
//! moved undetected), so that storing or reading a large file holds one
//! chunk in memory. They go with their message: when a timer fires or a
//! burn-on-read message is read, the message's row goes and
//! [`Store::purge_orphan_files`] deletes every chunk of every file whose
//! message is gone (overwritten on disk: SQLite's `secure_delete`).

use std::io::Write;

use sha2::{Digest, Sha256};

use super::Store;
use crate::ClientError;

/// Plaintext bytes per stored value.
pub const FILE_CHUNK: usize = 1024 * 1024;
/// The chunks.
const FILE_NS: &str = "file";
/// Which messages have files: `conv:seq`.
const INDEX_NS: &str = "files";

fn message_key(conv: &str, seq: u64) -> String {
    format!("{conv}:{seq}")
}

fn chunk_key(conv: &str, seq: u64, n: u32, idx: u64) -> String {
    format!("{conv}:{seq}:{n}:{idx:010}")
}

/// Stores file `n` of a message as it is written, a chunk at a time
/// ([`Store::file_writer`]); [`FileWriter::finish`] stores the rest and
/// says the message has files.
pub struct FileWriter<'a> {
    store: &'a Store,
    conv: String,
    seq: u64,
    n: u32,
    idx: u64,
    buf: Vec<u8>,
    hash: Sha256,
    size: u64,
}

impl FileWriter<'_> {
    fn store_chunk(&mut self) -> Result<(), ClientError> {
        let key = chunk_key(&self.conv, self.seq, self.n, self.idx);
        self.store.put(FILE_NS, key.as_bytes(), &self.buf)?;
        self.idx += 1;
        self.buf.clear();
        Ok(())
    }

    /// Store what is left; the file's size and SHA-256 (hex).
    pub fn finish(mut self) -> Result<(u64, String), ClientError> {
        if !self.buf.is_empty() || self.idx == 0 {
            self.store_chunk()?;
        }
        let key = message_key(&self.conv, self.seq);
        self.store.put(INDEX_NS, key.as_bytes(), b"")?;
        Ok((self.size, hex::encode(self.hash.finalize())))
    }
}

impl Write for FileWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = FILE_CHUNK - self.buf.len();
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        self.hash.update(&data[..take]);
        self.size += take as u64;
        if self.buf.len() == FILE_CHUNK {
            self.store_chunk().map_err(std::io::Error::other)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Store {
    /// A writer for file `n` of message `conv`#`seq`.
    pub fn file_writer(&self, conv: &str, seq: u64, n: u32) -> FileWriter<'_> {
        FileWriter {
            store: self,
            conv: conv.to_string(),
            seq,
            n,
            idx: 0,
            buf: Vec::with_capacity(FILE_CHUNK),
            hash: Sha256::new(),
            size: 0,
        }
    }

    /// Write file `n` of message `conv`#`seq` to `out`, a chunk at a time;
    /// its size and SHA-256 (hex). None when the device does not hold it.
    pub fn read_file(
        &self,
        conv: &str,
        seq: u64,
        n: u32,
        out: &mut impl Write,
    ) -> Result<Option<(u64, String)>, ClientError> {
        let prefix = format!("{conv}:{seq}:{n}:");
        let keys = self.keys(FILE_NS, prefix.as_bytes())?;
        if keys.is_empty() {
            return Ok(None);
        }
        let mut hash = Sha256::new();
        let mut size = 0u64;
        for k in keys {
            let chunk = self
                .get(FILE_NS, &k)?
                .ok_or_else(|| ClientError::Store("a file's chunk vanished while read".into()))?;
            hash.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk)
                .map_err(|e| ClientError::Store(format!("writing the file: {e}")))?;
        }
        Ok(Some((size, hex::encode(hash.finalize()))))
    }

    /// Delete the files of every message that is gone; how many messages'
    /// files went.
    pub fn purge_orphan_files(&self) -> Result<usize, ClientError> {
        let indexed = self.keys(INDEX_NS, b"")?;
        if indexed.is_empty() {
            return Ok(0);
        }
        let present: std::collections::HashSet<String> = self
            .backend()
            .messages(None)?
            .into_iter()
            .map(|m| message_key(&m.conv, m.seq))
            .collect();
        let mut purged = 0;
        for key in indexed {
            let k = String::from_utf8_lossy(&key).into_owned();
            if present.contains(&k) {
                continue;
            }
            let mut deletes: Vec<(&str, Vec<u8>)> = self
                .keys(FILE_NS, format!("{k}:").as_bytes())?
                .into_iter()
                .map(|c| (FILE_NS, c))
                .collect();
            deletes.push((INDEX_NS, key));
            self.write_batch(&[], &deletes)?;
            purged += 1;
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredMessage;

    fn message(seq: u64, expire_at_ms: Option<u64>, burn_on_read: bool) -> StoredMessage {
        StoredMessage {
            conv: "c".into(),
            seq,
            sender: "alice/1".into(),
            text: "see attached".into(),
            sent_at_ms: 1,
            server_time_ms: 1,
            expire_at_ms,
            burn_on_read,
            read: false,
            captured: true,
            files: Vec::new(),
        }
    }

    #[test]
    fn files_read_back_whole_and_go_with_their_message() {
        let store = Store::in_memory().unwrap();
        let big: Vec<u8> = (0..FILE_CHUNK * 2 + 5).map(|i| (i % 253) as u8).collect();
        for (seq, expire, burn) in [(1, Some(1_000), false), (2, None, true), (3, None, false)] {
            store.insert_message(&message(seq, expire, burn)).unwrap();
            let mut w = store.file_writer("c", seq, 0);
            w.write_all(&big).unwrap();
            let (size, sha) = w.finish().unwrap();
            assert_eq!(
                (size, sha),
                (big.len() as u64, hex::encode(Sha256::digest(&big)))
            );
        }
        let mut out = Vec::new();
        let (size, _) = store.read_file("c", 3, 0, &mut out).unwrap().unwrap();
        assert_eq!(size, big.len() as u64);
        assert!(out == big);
        assert_eq!(store.read_file("c", 3, 1, &mut Vec::new()).unwrap(), None);

        // The timer fires for #1; #2 is read and burns: their files go,
        // #3's stays.
        store.purge_expired(1_000).unwrap();
        store.mark_read(None).unwrap();
        for gone in [1, 2] {
            assert_eq!(
                store.read_file("c", gone, 0, &mut Vec::new()).unwrap(),
                None
            );
        }
        assert!(store
            .read_file("c", 3, 0, &mut Vec::new())
            .unwrap()
            .is_some());
        assert_eq!(store.keys(FILE_NS, b"c:1:").unwrap().len(), 0);
    }
}
