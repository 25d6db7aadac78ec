//! Frame types and their JSON encoding.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

mod blob;
mod error;
pub use blob::{BlobChunk, BlobData, MAX_BLOB_CHUNK};
pub use error::{ErrorCode, ProtocolError};

/// A frame sent by a device (or by the records service, which is a device
/// of the `records` user) to the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientFrame {
    pub v: u32,
    /// Request id, echoed by the response.
    pub id: u64,
    #[serde(flatten)]
    pub request: Request,
}

/// A frame sent by the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerFrame {
    pub v: u32,
    /// The id of the request this answers; absent on pushed frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub body: ServerBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Redeem a one-time enrolment code for a new device. `signature` signs
    /// `AUTH_CONTEXT || nonce` of this connection's challenge with the new
    /// device's key, proving possession; the connection is then
    /// authenticated as the new device.
    Enroll {
        code: String,
        #[serde(with = "crate::b64")]
        signature_key: Vec<u8>,
        #[serde(with = "crate::b64")]
        signature: Vec<u8>,
    },
    /// Authenticate this connection as an enrolled device.
    Auth {
        device_id: String,
        #[serde(with = "crate::b64")]
        signature: Vec<u8>,
    },
    /// Add MLS key packages to this device's pool; `last_resort` replaces
    /// the device's last-resort key package.
    UploadKeyPackages {
        #[serde(with = "crate::b64_list")]
        key_packages: Vec<Vec<u8>>,
        #[serde(
            default,
            with = "crate::b64_opt",
            skip_serializing_if = "Option::is_none"
        )]
        last_resort: Option<Vec<u8>>,
    },
    /// The user acknowledges the records notice (see [`crate::content::RECORDS_NOTICE`]).
    AcknowledgeNotice,
    /// Claim one key package for every active device of each user, plus
    /// one of a records device when `include_records` is set.
    ClaimKeyPackages {
        users: Vec<String>,
        #[serde(default)]
        include_records: bool,
    },
    /// Create a conversation: `group_info` is the creator's epoch-0
    /// GroupInfo (with the ratchet tree), `commit` the first commit, which
    /// must add the records member, `welcome` its Welcome, and
    /// `next_group_info` the GroupInfo of the epoch the commit creates
    /// (allowing external commits), which the server keeps so that new
    /// devices of existing members can join.
    CreateConversation {
        conv: String,
        #[serde(with = "crate::b64")]
        group_info: Vec<u8>,
        #[serde(with = "crate::b64")]
        commit: Vec<u8>,
        #[serde(with = "crate::b64")]
        welcome: Vec<u8>,
        #[serde(with = "crate::b64")]
        next_group_info: Vec<u8>,
    },
    /// Submit an MLS message (commit, proposal or application message) to a
    /// conversation. A commit that adds members carries its `welcome`;
    /// every commit carries `next_group_info`, the GroupInfo of the epoch
    /// it creates. An external commit by a new device of a user already in
    /// the conversation is submitted the same way.
    Submit {
        conv: String,
        #[serde(with = "crate::b64")]
        message: Vec<u8>,
        #[serde(
            default,
            with = "crate::b64_opt",
            skip_serializing_if = "Option::is_none"
        )]
        welcome: Option<Vec<u8>>,
        #[serde(
            default,
            with = "crate::b64_opt",
            skip_serializing_if = "Option::is_none"
        )]
        next_group_info: Option<Vec<u8>>,
    },
    /// From the records service only: a new signed checkpoint of the
    /// archive's log, with the consistency proof from the previously
    /// published one, so devices can check each step. The latest is also
    /// served unauthenticated at `GET /checkpoint` (a checkpoint reveals
    /// nothing but the log's size and root).
    PublishCheckpoint {
        checkpoint: String,
        /// The checkpoint key's public half (C2SP verifier key).
        verifier_key: String,
        #[serde(flatten)]
        link: CheckpointProof,
    },
    /// The checkpoints published after the tree of `since_size` leaves,
    /// each with its consistency proof from the one before (a device
    /// pinning the archive's history); with `since_size` 0, the latest.
    Checkpoints { since_size: u64 },
    /// List the conversations this device may join by external commit:
    /// those where another device of its user is a member and it is not.
    Joinable,
    /// The device has durably stored everything up to `seq` in `conv`. For
    /// the records service this means archived.
    Ack { conv: String, seq: u64 },
    /// From the records service only: entries `from..=to` of `conv` are
    /// durably archived (one acknowledgement for a whole captured batch;
    /// `from` must follow what it acknowledged before). The entries the
    /// server then delivers are exactly these, minus `withheld`: those the
    /// records member could not decrypt or process (archived as withheld).
    /// They are delivered to no one, their senders are blocked and the
    /// conversation is suspended.
    Archived {
        conv: String,
        from: u64,
        to: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        withheld: Vec<WithheldReport>,
    },
    /// From the records service only: the administrators' decisions up to
    /// `decision` are logged in the archive's transparency log.
    DecisionLogged { decision: u64 },
    /// Ask for everything not yet acknowledged: pending welcomes, then each
    /// conversation's log from this device's cursor, in order.
    Sync,
    /// List the conversations this device is a member of.
    Conversations,
    /// Start uploading an attachment blob of `size` ciphertext bytes
    /// hashing to `cipher_sha256` (hex) for a message of `conv`; answered
    /// with its new id. The bytes follow as binary [`BlobChunk`] frames.
    BlobCreate {
        conv: String,
        size: u64,
        cipher_sha256: String,
    },
    /// How much of a blob this device is uploading the server holds (to
    /// resume an upload that broke off).
    BlobStatus { blob: crate::attachment::BlobId },
    /// Up to `len` bytes of a blob from `offset`, answered with one binary
    /// [`BlobData`] frame: only for a blob a message of a conversation
    /// this device is in carries (or this device's own upload).
    BlobFetch {
        blob: crate::attachment::BlobId,
        offset: u64,
        len: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerBody {
    /// Sent once, first, on every connection.
    Challenge {
        #[serde(with = "crate::b64")]
        nonce: Vec<u8>,
        server_version: String,
    },
    /// Authenticated (after `enroll` or `auth`).
    Authenticated {
        user: String,
        device_id: String,
        notice_acknowledged: bool,
        policy: Policy,
    },
    Ok,
    KeyPackages {
        packages: Vec<ClaimedKeyPackage>,
    },
    Receipt(Receipt),
    Conversations {
        conversations: Vec<ConversationInfo>,
    },
    /// Sync finished: everything pending up to now has been pushed, unless
    /// `more`, when the replay stopped at the connection's budget: process
    /// what came, then `sync` again.
    Synced {
        #[serde(default)]
        more: bool,
    },
    /// Answer to `joinable`: each conversation with its latest GroupInfo.
    Joinable {
        conversations: Vec<JoinableConversation>,
    },
    /// Answer to `checkpoints`.
    Checkpoints {
        verifier_key: String,
        chain: Vec<PublishedCheckpoint>,
        /// The size of the latest checkpoint published, whatever was
        /// asked: a device that pinned a larger one knows the server was
        /// put back to an older copy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latest_size: Option<u64>,
    },
    /// Pushed to the records service: an administrator's decision after a
    /// capture failure (resuming a conversation, unblocking a device), to
    /// be logged as a privileged action in the archive's transparency log.
    /// Repeated until the records service answers `decision_logged`.
    /// (Named `decision`, not `id`: `id` is the frame's own field.)
    AdminDecision {
        decision: u64,
        at_ms: u64,
        actor: String,
        action: String,
        subject: String,
        reason: String,
    },
    /// Pushed to the records service: these revoked devices are still in
    /// the conversation's roster; commit their removal.
    Evict {
        conv: String,
        devices: Vec<String>,
    },
    /// A log entry of a conversation this device is in. Pushed to members
    /// only once the records service has archived it.
    Deliver(Delivery),
    /// Pushed to a device that sent entries of `conv`: everything up to
    /// `upto` is archived by the records service (and delivered, except
    /// what was withheld). Also sent after `sync`, per conversation.
    Captured {
        conv: String,
        upto: u64,
    },
    /// An MLS Welcome that adds this device to a conversation; the device
    /// then processes the conversation's log from `seq + 1`.
    WelcomeMessage {
        conv: String,
        seq: u64,
        #[serde(with = "crate::b64")]
        message: Vec<u8>,
    },
    /// Where an upload stands (answer to `blob_create`, `blob_status` and
    /// each [`BlobChunk`]): bytes `received` of `size`; `complete` once
    /// all arrived and hashed to what was declared.
    Blob {
        blob: crate::attachment::BlobId,
        size: u64,
        received: u64,
        complete: bool,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Messaging policy set by the admin, enforced by every honest device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    /// Longest disappearing timer a conversation may use, in seconds.
    pub max_timer_secs: u64,
    /// Whether guests may be added to conversations.
    pub guests_allowed: bool,
    /// The largest attachment (its ciphertext) the server takes, in
    /// bytes; absent (0) from a server that takes none.
    #[serde(default)]
    pub max_attachment_bytes: u64,
    /// Photos are sent as taken, EXIF and GPS included (evidence photos
    /// may need where they were taken); otherwise devices send their
    /// pixels only. Absent (false) from a server that predates it.
    #[serde(default)]
    pub keep_photo_metadata: bool,
}

/// An entry the records service archived as withheld, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WithheldReport {
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimedKeyPackage {
    pub user: String,
    pub device_id: String,
    #[serde(with = "crate::b64")]
    pub key_package: Vec<u8>,
}

/// The server's signed statement that it accepted a message: see
/// [`crate::receipt_signed_bytes`] for what `signature` (Ed25519) covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Receipt {
    pub conv: String,
    pub seq: u64,
    #[serde(with = "crate::b64")]
    pub message_sha256: Vec<u8>,
    pub server_time_ms: u64,
    #[serde(with = "crate::b64")]
    pub signature: Vec<u8>,
    /// Ed25519 public key that made `signature`.
    #[serde(with = "crate::b64")]
    pub server_key: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub conv: String,
    pub seq: u64,
    pub sender_user: String,
    pub sender_device: String,
    pub server_time_ms: u64,
    #[serde(with = "crate::b64")]
    pub message: Vec<u8>,
    pub receipt: Receipt,
}

/// How a checkpoint follows from the one published before it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckpointProof {
    /// The size of the previously published checkpoint (none for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_size: Option<u64>,
    /// RFC 9162 consistency path from that size to this one.
    #[serde(default, with = "crate::b64_list")]
    pub consistency_path: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishedCheckpoint {
    pub checkpoint: String,
    #[serde(flatten)]
    pub link: CheckpointProof,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JoinableConversation {
    pub conv: String,
    #[serde(with = "crate::b64")]
    pub group_info: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConversationInfo {
    pub conv: String,
    pub members: Vec<String>,
    pub epoch: u64,
    pub last_seq: u64,
    /// The members' users' display names, by user name (absent from
    /// servers before 0.2).
    #[serde(default)]
    pub names: std::collections::BTreeMap<String, String>,
}

/// Decode a client frame, telling apart a wrong version from a malformed
/// frame so an old client gets a useful answer. Returns the request id when
/// it could be read, so even a refusal can be matched to its request.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, (Option<u64>, ProtocolError)> {
    if text.len() > crate::MAX_FRAME_BYTES {
        return Err((
            None,
            ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "frame of {} bytes exceeds the limit of {} bytes",
                    text.len(),
                    crate::MAX_FRAME_BYTES
                ),
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        (
            None,
            ProtocolError::new(ErrorCode::BadFrame, format!("frame is not valid JSON: {e}")),
        )
    })?;
    let obj = value.as_object().ok_or_else(|| {
        (
            None,
            ProtocolError::new(ErrorCode::BadFrame, "frame must be a JSON object"),
        )
    })?;
    let id = obj.get("id").and_then(|v| v.as_u64());
    match obj.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == PROTOCOL_VERSION as u64 => {}
        Some(v) => {
            return Err((id, ProtocolError::new(ErrorCode::UnsupportedVersion, format!("protocol version {v} is not supported; this server speaks version {PROTOCOL_VERSION}"))))
        }
        None => return Err((id, ProtocolError::new(ErrorCode::BadFrame, "frame has no numeric \"v\" (protocol version) field"))),
    }
    if id.is_none() {
        return Err((
            None,
            ProtocolError::new(ErrorCode::BadFrame, "request has no numeric \"id\" field"),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        (
            id,
            ProtocolError::new(ErrorCode::BadFrame, format!("malformed request: {e}")),
        )
    })
}

impl ClientFrame {
    pub fn new(id: u64, request: Request) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            request,
        }
    }

    pub fn to_json(&self) -> String {
        // Invariant: every field type here serializes infallibly (strings,
        // integers, enums with string tags).
        serde_json::to_string(self).expect("client frame serializes")
    }
}

impl ServerFrame {
    pub fn response(id: u64, body: ServerBody) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: Some(id),
            body,
        }
    }

    pub fn push(body: ServerBody) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: None,
            body,
        }
    }

    pub fn error(id: Option<u64>, err: &ProtocolError) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            body: ServerBody::Error {
                code: err.code,
                message: err.message.clone(),
            },
        }
    }

    pub fn to_json(&self) -> String {
        // Invariant: as for ClientFrame, serialization cannot fail.
        serde_json::to_string(self).expect("server frame serializes")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_submit() {
        let f = ClientFrame::new(
            7,
            Request::Submit {
                conv: "c1".into(),
                message: vec![1, 2, 3],
                welcome: None,
                next_group_info: Some(vec![4]),
            },
        );
        let text = f.to_json();
        assert!(text.contains("\"type\":\"submit\""), "{text}");
        assert_eq!(decode_client_frame(&text).unwrap(), f);
    }

    #[test]
    fn the_frames_of_capture_round_trip_without_clashing_with_the_frame_id() {
        // A body field named `id` would clash with the frame's own `id`
        // (both flattened into one JSON object).
        for body in [
            ServerBody::Captured {
                conv: "c".into(),
                upto: 9,
            },
            ServerBody::Synced { more: true },
            ServerBody::AdminDecision {
                decision: 3,
                at_ms: 1,
                actor: "admin1".into(),
                action: "resume conversation".into(),
                subject: "c".into(),
                reason: "reviewed".into(),
            },
        ] {
            let f = ServerFrame::push(body.clone());
            assert_eq!(ServerFrame::from_json(&f.to_json()).unwrap().body, body);
        }
        for request in [
            Request::DecisionLogged { decision: 3 },
            Request::Archived {
                conv: "c".into(),
                from: 1,
                to: 4,
                withheld: vec![WithheldReport {
                    seq: 2,
                    reason: "garbage".into(),
                }],
            },
        ] {
            let f = ClientFrame::new(11, request.clone());
            let back = decode_client_frame(&f.to_json()).unwrap();
            assert_eq!((back.id, back.request), (11, request));
        }
    }

    #[test]
    fn names_the_problem_with_bad_frames() {
        let cases = [
            ("not json", ErrorCode::BadFrame, "not valid JSON"),
            ("[1,2]", ErrorCode::BadFrame, "JSON object"),
            (
                r#"{"v":2,"id":1,"type":"sync"}"#,
                ErrorCode::UnsupportedVersion,
                "version 2",
            ),
            (r#"{"id":1,"type":"sync"}"#, ErrorCode::BadFrame, "\"v\""),
            (r#"{"v":1,"type":"sync"}"#, ErrorCode::BadFrame, "\"id\""),
            (
                r#"{"v":1,"id":3,"type":"launch"}"#,
                ErrorCode::BadFrame,
                "launch",
            ),
            (
                r#"{"v":1,"id":3,"type":"submit","conv":"c","message":"!!"}"#,
                ErrorCode::BadFrame,
                "base64",
            ),
        ];
        for (text, code, needle) in cases {
            let (_, err) = decode_client_frame(text).unwrap_err();
            assert_eq!(err.code, code, "{text}");
            assert!(err.message.contains(needle), "{text}: {}", err.message);
        }
    }

    #[test]
    fn keeps_the_request_id_of_a_refused_frame() {
        let (id, _) = decode_client_frame(r#"{"v":1,"id":42,"type":"nope"}"#).unwrap_err();
        assert_eq!(id, Some(42));
    }

    #[test]
    fn identities_round_trip_and_reject_junk() {
        let id = crate::device_identity("alice", "d1");
        assert_eq!(
            crate::parse_device_identity(id.as_bytes()),
            Some(("alice", "d1"))
        );
        assert_eq!(crate::parse_device_identity(b"alice"), None);
        assert_eq!(crate::parse_device_identity(b"/d"), None);
        assert_eq!(crate::parse_device_identity(b"a/b/c"), None);
        assert_eq!(crate::parse_device_identity(&[0xff, b'/', b'x']), None);
    }
}
