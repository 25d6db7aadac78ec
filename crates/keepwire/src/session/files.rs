//! A device's files: sending one (sealed here, uploaded over the device's
//! own connection, referenced inside the encrypted message) and taking
//! one in (pulled a frame at a time once its message arrived — which is
//! once the records service archived it — opened as its reference says,
//! and kept in the encrypted store until its message goes).
//!
//! The ciphertext waits in an unnamed temporary file between the network
//! and the store, in both directions: memory holds a frame, not the file.

use std::io::{Read, Seek, Write};

use keepwire_protocol::files::read_full;
use std::path::Path;

use anyhow::{bail, Context, Result};
use keepwire_client::attachment::{detect_type, open, seal};
use keepwire_client::FileInfo;
use keepwire_protocol::attachment::Attachment;
use keepwire_protocol::content::Content;
use keepwire_protocol::{Request, ServerBody, MAX_BLOB_CHUNK};

use super::Online;

/// The media type a file's name suggests, for the types people send.
fn type_by_name(name: &str) -> &'static str {
    let ext = name
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

/// What people see of the files `content` carries.
pub fn infos(content: &Content) -> Vec<FileInfo> {
    content
        .attachments
        .iter()
        .map(|a| FileInfo {
            name: a.name.clone(),
            media_type: a.media_type.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
            missing: None,
            thumbnail_of: a.thumbnail_of,
        })
        .collect()
}

/// A file about to be sent, as it will be sent: the user's own file, or
/// what was made of it on this device (a photo's pixels only, its
/// thumbnail) in an unnamed temporary file no other process can open.
pub(crate) struct Outgoing {
    file: std::fs::File,
    name: String,
    /// A thumbnail of the photo before it in the message.
    pub(super) thumbnail: bool,
}

impl Outgoing {
    /// The user's file at `path`, as it is.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            thumbnail: false,
        })
    }

    fn made(bytes: &[u8], name: String, thumbnail: bool) -> Result<Self> {
        let mut file = tempfile::tempfile().context("cannot make a temporary file")?;
        file.write_all(bytes)?;
        file.rewind()?;
        Ok(Self {
            file,
            name,
            thumbnail,
        })
    }

    /// The file at `path` ready to send, with what goes with it: a photo
    /// (found by its first bytes, whatever its name) is cleaned of its
    /// location and camera data unless the agency keeps them, and gets a
    /// thumbnail ([`keepwire_client::photo`]).
    pub(crate) fn prepare(path: &Path, keep_photo_metadata: bool) -> Result<Vec<Self>> {
        use keepwire_client::photo::{self, PhotoError, MAX_PHOTO_BYTES};
        let mut main = Self::open(path)?;
        let mut head = [0u8; 16];
        let got = read_full(&mut main.file, &mut head)?;
        main.file.rewind()?;
        let Some(kind) = detect_type(&head[..got]).filter(|t| photo::is_photo(t)) else {
            return Ok(vec![main]);
        };
        let size = main.file.metadata()?.len();
        if size > MAX_PHOTO_BYTES {
            if keep_photo_metadata {
                return Ok(vec![main]);
            }
            return Err(PhotoError::TooLarge(size)).with_context(|| path.display().to_string());
        }
        let mut bytes = Vec::with_capacity(size as usize);
        main.file.read_to_end(&mut bytes)?;
        main.file.rewind()?;
        let prepared = photo::prepare(&bytes, kind, keep_photo_metadata)
            .with_context(|| format!("{} was not sent", path.display()))?;
        let stem = Path::new(&main.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(2);
        out.push(match prepared.cleaned {
            Some(cleaned) => Self::made(&cleaned, main.name, false)?,
            None => main,
        });
        if let Some(thumb) = prepared.thumbnail {
            out.push(Self::made(&thumb, format!("{stem} (thumbnail).jpg"), true)?);
        }
        Ok(out)
    }
}

impl Online {
    /// Seal and upload `file` for `conv`: its reference.
    pub(crate) async fn upload(&mut self, conv: &str, file: &mut Outgoing) -> Result<Attachment> {
        let name = file.name.clone();
        let file = &mut file.file;
        file.rewind()?;
        let mut head = [0u8; 16];
        let got = read_full(file, &mut head)?;
        file.rewind()?;
        let limit = self.policy.max_attachment_bytes;
        if limit == 0 {
            bail!("this server takes no attachments");
        }
        let size = file.metadata()?.len();
        if keepwire_protocol::attachment::cipher_size(size) > limit {
            bail!(
                "{name} is {} MiB; the agency allows files of at most {} MiB",
                size.div_ceil(1 << 20),
                limit >> 20
            );
        }
        // Sealing is CPU and disk for as long as the file is large (about
        // 450 MB/s): on the blocking pool, so that the terminal client
        // keeps drawing and receiving meanwhile.
        let source = file.try_clone()?;
        let (sealed, mut spool) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut spool = tempfile::tempfile().context("cannot make a temporary file")?;
            let mut out = std::io::BufWriter::new(&mut spool);
            let sealed = seal(&mut std::io::BufReader::new(source), &mut out)?;
            out.flush()?;
            drop(out);
            Ok((sealed, spool))
        })
        .await
        .context("sealing stopped")??;
        let cipher_size = keepwire_protocol::attachment::cipher_size(sealed.size);
        let blob = match self
            .conn
            .request(Request::BlobCreate {
                conv: conv.to_string(),
                size: cipher_size,
                cipher_sha256: sealed.cipher_sha256.clone(),
            })
            .await?
        {
            ServerBody::Blob { blob, .. } => blob,
            other => bail!("unexpected answer to blob_create: {other:?}"),
        };
        spool.rewind()?;
        let mut buf = vec![0u8; MAX_BLOB_CHUNK];
        let mut at = 0u64;
        let mut complete = false;
        while at < cipher_size {
            let n = read_full(&mut spool, &mut buf)?;
            if n == 0 {
                bail!("the sealed file ended early");
            }
            match self.conn.upload_chunk(&blob, at, &buf[..n]).await? {
                ServerBody::Blob {
                    received,
                    complete: c,
                    ..
                } => {
                    at = received;
                    complete = c;
                }
                other => bail!("unexpected answer to an upload: {other:?}"),
            }
        }
        if !complete {
            bail!("the server did not complete the upload of {name}");
        }
        let mut reference = sealed.reference(blob, &name, type_by_name(&name));
        reference.detected_type = detect_type(&head[..got]).map(str::to_string);
        Ok(reference)
    }

    /// Keep a copy of each file just sent, as it was sent.
    pub(super) fn keep_sent(&self, conv: &str, seq: u64, files: &mut [Outgoing]) -> Result<()> {
        for (n, f) in files.iter_mut().enumerate() {
            f.file.rewind()?;
            let mut w = self.device.store().file_writer(conv, seq, n as u32);
            std::io::copy(&mut f.file, &mut w)?;
            w.finish()?;
        }
        Ok(())
    }

    /// Take in the files a received message references; for each, why it
    /// is missing, if it is.
    pub(super) async fn take_files(
        &mut self,
        conv: &str,
        seq: u64,
        references: &[Attachment],
    ) -> Result<Vec<Option<String>>> {
        let mut missing = Vec::with_capacity(references.len());
        for (n, r) in references.iter().enumerate() {
            missing.push(self.take_file(conv, seq, n as u32, r).await?);
        }
        Ok(missing)
    }

    async fn take_file(
        &mut self,
        conv: &str,
        seq: u64,
        n: u32,
        reference: &Attachment,
    ) -> Result<Option<String>> {
        let mut spool = tempfile::tempfile().context("cannot make a temporary file")?;
        let size = reference.cipher_size();
        let mut at = 0u64;
        while at < size {
            let want = (size - at).min(MAX_BLOB_CHUNK as u64) as u32;
            let part = match self.conn.fetch_blob(&reference.blob, at, want).await {
                Ok(p) => p,
                Err(e) => match e.downcast::<crate::net::Refused>() {
                    Ok(refused) => {
                        return Ok(Some(format!("the server refused it ({})", refused.0)))
                    }
                    Err(e) => return Err(e),
                },
            };
            if part.is_empty() {
                return Ok(Some(format!("the server holds {at} of its {size} bytes")));
            }
            spool.write_all(&part)?;
            at += part.len() as u64;
        }
        spool.rewind()?;
        // Opened into the encrypted store on the blocking pool (CPU for as
        // long as the file is large), as sealing is.
        let store = self.device.store().clone();
        let (conv, reference) = (conv.to_string(), reference.clone());
        tokio::task::spawn_blocking(move || -> Result<Option<String>> {
            let mut w = store.file_writer(&conv, seq, n);
            match open(&reference, &mut std::io::BufReader::new(spool), &mut w) {
                Ok(()) => {
                    w.finish()?;
                    Ok(None)
                }
                Err(e) => Ok(Some(e.to_string())),
            }
        })
        .await
        .context("opening a received file stopped")?
    }

    /// Write file `n` of message `conv`#`seq` to `out` (a new file): its
    /// size. A burn-on-read message's files are shown, never saved.
    pub fn save_file(&self, conv: &str, seq: u64, n: u32, out: &Path) -> Result<u64> {
        let messages = self.device.store().messages(Some(conv))?;
        let m = messages
            .iter()
            .find(|m| m.seq == seq)
            .with_context(|| format!("this device holds no message #{seq} in {conv}"))?;
        if m.burn_on_read {
            bail!("#{seq} burns on read: its files cannot be saved");
        }
        let info = m
            .files
            .get(n as usize)
            .with_context(|| format!("#{seq} has no file {n}"))?;
        if let Some(why) = &info.missing {
            bail!("file {n} of #{seq} is not on this device: {why}");
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(out)
            .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
        let (size, sha256) = self
            .device
            .store()
            .read_file(conv, seq, n, &mut f)?
            .with_context(|| format!("file {n} of #{seq} is not on this device"))?;
        if sha256 != info.sha256 {
            bail!("file {n} of #{seq} does not match its SHA-256");
        }
        f.sync_all()?;
        Ok(size)
    }
}
