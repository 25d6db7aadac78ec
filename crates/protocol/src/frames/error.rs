//! Refusals: the code a program branches on (stable, snake_case on the
//! wire) and the sentence a person reads.

use serde::{Deserialize, Serialize};

/// Every way the server can refuse a frame. The `message` next to it says
/// exactly what was wrong with this particular frame.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, missing or ill-typed field.
    BadFrame,
    UnsupportedVersion,
    TooLarge,
    /// Not authenticated, or not allowed to do this.
    Unauthorized,
    InvalidEnrollmentCode,
    DeviceRevoked,
    /// The records service could not capture something this device sent:
    /// it may do nothing until an administrator unblocks it.
    DeviceBlocked,
    NoticeNotAcknowledged,
    UnknownConversation,
    ConversationExists,
    /// The MLS message does not parse or does not verify.
    InvalidMls,
    /// A commit that would leave the conversation without the records member.
    RecordsMemberMissing,
    ReinitRefused,
    /// A commit or proposal sent as an MLS PrivateMessage.
    EncryptedHandshake,
    /// The sender (or a device a commit adds) is not a member / not enrolled.
    NotMember,
    /// The message is for an epoch other than the conversation's current one.
    StaleEpoch,
    NoKeyPackage,
    /// The records service is too far behind: nothing is accepted until it
    /// catches up (fail closed).
    RecordsUnavailable,
    /// The records service could not process an entry of this conversation;
    /// nothing more is accepted into it.
    ConversationSuspended,
    /// A commit while entries before it still wait for the records
    /// service: the committer cannot have seen them. Wait until they
    /// arrive (or are captured) and build the commit again.
    CapturePending,
    /// The server's disk is nearly full: nothing new is accepted until
    /// space is freed (nothing accepted before is lost). Try again later.
    StorageFull,
    /// The blob is not there, or not this device's to see.
    UnknownBlob,
    /// The user's attachments already take the agency's quota.
    QuotaExceeded,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidEnrollmentCode => "invalid_enrollment_code",
            ErrorCode::DeviceRevoked => "device_revoked",
            ErrorCode::DeviceBlocked => "device_blocked",
            ErrorCode::NoticeNotAcknowledged => "notice_not_acknowledged",
            ErrorCode::UnknownConversation => "unknown_conversation",
            ErrorCode::ConversationExists => "conversation_exists",
            ErrorCode::InvalidMls => "invalid_mls",
            ErrorCode::RecordsMemberMissing => "records_member_missing",
            ErrorCode::ReinitRefused => "reinit_refused",
            ErrorCode::EncryptedHandshake => "encrypted_handshake",
            ErrorCode::NotMember => "not_member",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::NoKeyPackage => "no_key_package",
            ErrorCode::RecordsUnavailable => "records_unavailable",
            ErrorCode::ConversationSuspended => "conversation_suspended",
            ErrorCode::CapturePending => "capture_pending",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::UnknownBlob => "unknown_blob",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the code a program branches on and the sentence a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
