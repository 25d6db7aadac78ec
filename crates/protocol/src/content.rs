//! What is inside an application message once decrypted. Only devices and
//! the records service ever see this; the server handles it as opaque MLS
//! ciphertext.
//!
//! Disappearing timers travel here, inside the encryption: the records
//! service stores them as metadata and otherwise ignores them.

use serde::{Deserialize, Serialize};

use crate::attachment::{self, Attachment};

/// The notice every user acknowledges once before their first message.
pub const RECORDS_NOTICE: &str = "Messages you send and receive in keepwire are federal records. \
Disappearing timers remove them from your devices, but your agency's records service keeps a \
complete copy under its records schedule, as the Federal Records Act requires. Do not use \
keepwire for anything you would not put in an agency record.";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Content {
    /// Content format version, so later formats (attachments, reactions)
    /// can be told apart.
    pub format: u32,
    pub text: String,
    /// Seconds after sending when every device deletes the message; `None`
    /// keeps it until the user deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after_secs: Option<u64>,
    /// Delete on every device as soon as it has been read there.
    #[serde(default)]
    pub burn_on_read: bool,
    /// The sender's clock when the message was composed (ms since the epoch).
    pub sent_at_ms: u64,
    /// Sets the conversation's expire-after-send timer (seconds; 0 turns it
    /// off) for every member from this message on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_conversation_timer: Option<u64>,
    /// Files carried with the message ([`crate::attachment`]): their keys
    /// and hashes travel here, encrypted; the files beside, as blobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl Content {
    /// A text message.
    pub fn text(
        text: &str,
        expire_after_secs: Option<u64>,
        burn_on_read: bool,
        now_ms: u64,
    ) -> Self {
        Self {
            format: CONTENT_FORMAT,
            text: text.to_string(),
            expire_after_secs,
            burn_on_read,
            sent_at_ms: now_ms,
            set_conversation_timer: None,
            attachments: Vec::new(),
        }
    }

    /// The message that changes the conversation's timer.
    pub fn timer_change(secs: u64, now_ms: u64) -> Self {
        Self {
            set_conversation_timer: Some(secs),
            ..Self::text("", None, false, now_ms)
        }
    }
}

pub const CONTENT_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("message text is {0} bytes; the limit is {max} bytes", max = crate::MAX_TEXT_BYTES)]
    TooLong(usize),
    #[error("message content is not valid: {0}")]
    Malformed(String),
    #[error("message content format {0} is not supported")]
    UnknownFormat(u32),
    #[error(transparent)]
    Attachment(#[from] attachment::AttachmentError),
}

impl Content {
    pub fn encode(&self) -> Result<Vec<u8>, ContentError> {
        if self.text.len() > crate::MAX_TEXT_BYTES {
            return Err(ContentError::TooLong(self.text.len()));
        }
        attachment::check_all(&self.attachments)?;
        serde_json::to_vec(self).map_err(|e| ContentError::Malformed(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        let c: Content =
            serde_json::from_slice(bytes).map_err(|e| ContentError::Malformed(e.to_string()))?;
        if c.format != CONTENT_FORMAT {
            return Err(ContentError::UnknownFormat(c.format));
        }
        if c.text.len() > crate::MAX_TEXT_BYTES {
            return Err(ContentError::TooLong(c.text.len()));
        }
        attachment::check_all(&c.attachments)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_text_over_64_kib() {
        let c = Content::text(&"x".repeat(crate::MAX_TEXT_BYTES + 1), None, false, 0);
        assert_eq!(
            c.encode().unwrap_err(),
            ContentError::TooLong(crate::MAX_TEXT_BYTES + 1)
        );
        let ok = Content {
            text: "x".repeat(crate::MAX_TEXT_BYTES),
            ..c
        };
        assert_eq!(Content::decode(&ok.encode().unwrap()).unwrap(), ok);
    }

    #[test]
    fn rejects_garbage_and_unknown_formats() {
        assert!(matches!(
            Content::decode(b"\xff"),
            Err(ContentError::Malformed(_))
        ));
        let c = br#"{"format":9,"text":"hi","sent_at_ms":1}"#;
        let old = br#"{"format":1,"text":"hi","sent_at_ms":1}"#;
        assert_eq!(
            Content::decode(old).unwrap(),
            Content::text("hi", None, false, 1),
            "fields added later default when absent"
        );
        assert_eq!(
            Content::decode(c).unwrap_err(),
            ContentError::UnknownFormat(9)
        );
    }
}
