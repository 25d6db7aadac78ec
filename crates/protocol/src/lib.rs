//! The keepwire wire protocol: every frame a device, the records service and
//! the delivery server exchange, with the limits and error codes that go with
//! them.
//!
//! The protocol is deliberately boring: one WebSocket per device, one JSON
//! object per text frame, binary payloads (MLS messages, signatures) as
//! standard base64. Every frame carries the protocol version `v`; requests
//! carry an `id` the response echoes, so a client can pipeline requests.
//! Pushed frames (`deliver`, `welcome`) carry no `id`.
//!
//! This crate does no I/O and holds no secrets: it is shared by every party,
//! including the server, which must never be able to decrypt an application
//! message. The plaintext content format of application messages lives here
//! too ([`content`]), because the client and the records service must agree
//! on it, but only they ever see it decrypted.

pub mod attachment;
pub mod clock;
pub mod content;
pub mod files;
mod frames;

pub use frames::*;

/// Version of the framing and message set. A frame with another `v` is
/// refused with [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest text a user may send, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Largest WebSocket frame the server accepts. Commits that add a thousand
/// members carry a Welcome and a GroupInfo with the whole ratchet tree, so
/// this is much larger than an application message may be.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// Largest MLS application message (ciphertext) the server accepts: the
/// text limit plus room for the content envelope, padding and MLS framing,
/// and for the references of the most attachments a message may carry.
pub const MAX_APPLICATION_MESSAGE_BYTES: usize =
    MAX_TEXT_BYTES + 4 * 1024 + attachment::MAX_ATTACHMENTS * attachment::MAX_REFERENCE_BYTES;

/// The prefix a device signs together with the server's nonce to
/// authenticate a connection, so that a signature made for anything else
/// can never be replayed as a login.
pub const AUTH_CONTEXT: &[u8] = b"keepwire-auth-v1:";

/// The prefix of the bytes the server signs for a receipt.
pub const RECEIPT_CONTEXT: &[u8] = b"keepwire-receipt-v1:";

/// User name of the agency's records member. The records service enrols
/// devices under this user; every conversation must contain one of them.
pub const RECORDS_USER: &str = "records";

/// What an id someone typed names among `ids`: itself when listed,
/// otherwise the one id it is a prefix of (people type the first few
/// characters they see).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    One(String),
    None,
    /// Two (or more) ids start with it: these, at most three.
    Several(Vec<String>),
}

pub fn named_by(given: &str, ids: impl IntoIterator<Item = String>) -> Named {
    let mut matches = Vec::new();
    for id in ids {
        if id == given {
            return Named::One(id);
        }
        if !given.is_empty() && id.starts_with(given) && matches.len() < 3 {
            matches.push(id);
        }
    }
    match matches.len() {
        0 => Named::None,
        1 => Named::One(matches.remove(0)),
        _ => Named::Several(matches),
    }
}

/// The MLS credential of a device: `user/device_id`. Both parts are checked
/// by the server against its registry whenever the device enters a roster.
pub fn device_identity(user: &str, device_id: &str) -> String {
    format!("{user}/{device_id}")
}

/// Split an MLS credential back into `(user, device_id)`.
pub fn parse_device_identity(identity: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(identity).ok()?;
    let (user, device) = s.split_once('/')?;
    if user.is_empty() || device.is_empty() || device.contains('/') {
        return None;
    }
    Some((user, device))
}

/// Bytes that a server receipt signs: the conversation, its sequence
/// number, the SHA-256 of the MLS message and the server's time, in a fixed
/// layout so anybody can recompute them.
pub fn receipt_signed_bytes(
    conv: &str,
    seq: u64,
    message_sha256: &[u8],
    server_time_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECEIPT_CONTEXT.len() + conv.len() + 56);
    out.extend_from_slice(RECEIPT_CONTEXT);
    out.extend_from_slice(&(conv.len() as u32).to_be_bytes());
    out.extend_from_slice(conv.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(message_sha256);
    out.extend_from_slice(&server_time_ms.to_be_bytes());
    out
}

/// Serde helper: `Vec<u8>` as standard base64.
pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(s)
    }
}

/// Serde helper: `Vec<Vec<u8>>` as a list of base64 strings.
pub mod b64_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        list.iter()
            .map(|b| super::b64::encode(b))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter()
            .map(|s| {
                super::b64::decode(s)
                    .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
            })
            .collect()
    }
}

/// Serde helper: `Option<Vec<u8>>` as an optional base64 string.
pub mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&super::b64::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            super::b64::decode(&s)
                .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_named_by_itself_or_by_the_one_id_it_begins() {
        let ids = || ["abc123".to_string(), "abd456".to_string(), "ff".to_string()];
        assert_eq!(named_by("abc", ids()), Named::One("abc123".into()));
        assert_eq!(named_by("ff", ids()), Named::One("ff".into()));
        assert_eq!(
            named_by("ab", ids()),
            Named::Several(vec!["abc123".into(), "abd456".into()])
        );
        assert_eq!(named_by("zz", ids()), Named::None);
        assert_eq!(named_by("", ids()), Named::None);
    }
}
