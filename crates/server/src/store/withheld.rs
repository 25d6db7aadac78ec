//! What capture failures leave behind, durably: entries withheld from
//! every member, the devices that sent them (blocked), the conversations
//! they suspended, and the administrators' decisions about them.
//!
//! A withheld entry stays in the log forever (relay garbage collection
//! skips it) and is never delivered; the records service archived it with
//! a note saying why. A blocked device can neither connect nor send until
//! an administrator unblocks it (or revokes it). A suspended conversation
//! accepts nothing until an administrator resumes it, which is refused
//! when what was withheld is a commit or proposal: the followed roster
//! moved past a handshake the records member could not apply, and no
//! resumption can repair that (members start a new conversation).

/// One entry the records service could not capture, as it reported it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WithheldEntry {
    pub conv: String,
    pub seq: u64,
    /// The device that submitted it.
    pub device: String,
    /// Whether it is a commit or proposal (not an application message).
    pub handshake: bool,
    pub reason: String,
    pub at_ms: u64,
}

/// A device blocked because the records service could not capture what
/// it sent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BlockedDevice {
    pub device: String,
    pub user: String,
    pub reason: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SuspendedConversation {
    pub conv: String,
    pub reason: String,
}

/// An administrator's decision about a capture failure, kept for audit
/// and relayed to the records service for its transparency log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdminAction {
    pub id: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
}
