//! What a record is, in one place: the metadata the archive keeps about a
//! captured log entry ([`RecordMeta`]) and its kind ([`RecordKind`]).
//! Capture stages it, the archive stores it, the transparency log's leaf
//! carries it (byte for byte: the leaf's serialisation is hashed, so field
//! order here is part of the log's format), and `verify` rebuilds the
//! leaf from it to compare.

use serde::{Deserialize, Serialize};

use crate::RecordsError;

/// What kind of log entry a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A message (decrypted, its sender's signature verified).
    Application,
    /// A commit: membership or keys changed.
    Commit,
    /// A proposal (a member asking to leave).
    Proposal,
    /// An entry the records member could not decrypt or process, or that
    /// a device submitted in another member's name: kept as a record of
    /// what was sent, `note` says why, delivered to no one.
    Withheld,
    /// Archives from before delivery waited for capture: noted only.
    Undecryptable,
    /// As `Undecryptable`: a handshake that could not be processed.
    Unprocessable,
}

impl RecordKind {
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Application,
        RecordKind::Commit,
        RecordKind::Proposal,
        RecordKind::Withheld,
        RecordKind::Undecryptable,
        RecordKind::Unprocessable,
    ];

    /// The name stored in the archive and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Application => "application",
            RecordKind::Commit => "commit",
            RecordKind::Proposal => "proposal",
            RecordKind::Withheld => "withheld",
            RecordKind::Undecryptable => "undecryptable",
            RecordKind::Unprocessable => "unprocessable",
        }
    }

    /// Whether it is what people call a message (listed by default).
    pub fn is_message(self) -> bool {
        matches!(
            self,
            RecordKind::Application | RecordKind::Withheld | RecordKind::Undecryptable
        )
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RecordKind {
    type Err = RecordsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| RecordsError::Archive(format!("unknown record kind {s:?}")))
    }
}

/// What the archive knows about a captured entry besides its content and
/// the server's receipt. The field order is the transparency log's
/// serialisation order (see the module's doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub conv: String,
    pub seq: u64,
    pub kind: RecordKind,
    pub epoch: u64,
    /// `user/device` from the MLS leaf whose signature verified.
    pub sender: String,
    pub participants: Vec<String>,
    pub server_time_ms: u64,
    pub captured_at_ms: u64,
    pub expire_after_secs: Option<u64>,
    pub burn_on_read: bool,
    /// What capture noticed about this entry (why it was withheld).
    pub note: Option<String>,
    /// The files the message carried, in its order (absent from the leaf
    /// when there are none, so every leaf from before attachments is
    /// unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentMeta>,
}

/// A file a message carried, as its record's leaf commits to it. The
/// archive keeps the file as it arrived — its ciphertext, whose key is
/// only inside the record's sealed content — so `verify` checks the
/// stored bytes against `cipher_sha256` without any key, and whoever
/// opens the record checks the file against `sha256`; destroying the
/// record's content takes the file's key with it, and the bytes too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    /// Plaintext bytes.
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// Bytes as stored (the ciphertext).
    pub cipher_size: u64,
    /// SHA-256 of the bytes as stored, hex.
    pub cipher_sha256: String,
    /// The agency's malware scanner's verdict at capture (`clean`,
    /// `found: …`, `scan failed: …`); absent where none is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<String>,
}

impl AttachmentMeta {
    /// What the leaf says of the file `a` references.
    pub fn of(a: &keepwire_protocol::attachment::Attachment) -> Self {
        AttachmentMeta {
            size: a.size,
            sha256: a.sha256.clone(),
            cipher_size: a.cipher_size(),
            cipher_sha256: a.cipher_sha256.clone(),
            scan: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for k in RecordKind::ALL {
            assert_eq!(k.as_str().parse::<RecordKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("bogus".parse::<RecordKind>().is_err());
    }
}
