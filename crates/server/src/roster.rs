//! Following each conversation's MLS roster from its public handshake
//! messages, and refusing what would break the records promises.
//!
//! The server is an MLS *external* observer (mls-rs `ExternalClient`): it
//! sees commits and proposals in the clear (they must be PublicMessages)
//! and tracks the group's tree and epoch, but it holds no group secret and
//! cannot decrypt an application message. Everything here is a pure
//! function over the followed group and the device registry; the caller
//! persists the new roster only if the check passes.
//!
//! Promise 3 (every conversation contains the records member) is enforced
//! here, in [`check_message`], for the first commit and every later one.

use keepwire_protocol::{parse_device_identity, ErrorCode, ProtocolError, RECORDS_USER};
use mls_rs::extension::built_in::{ExternalPubExt, RatchetTreeExt};
use mls_rs::external_client::builder::{
    ExternalBaseConfig, IntoConfigOutput, WithCryptoProvider, WithIdentityProvider,
};
use mls_rs::external_client::{
    ExternalClient, ExternalGroup, ExternalReceivedMessage, ExternalSnapshot,
};
use mls_rs::group::proposal::Proposal;
use mls_rs::group::{CommitEffect, ContentType, Sender};
use mls_rs::identity::basic::BasicIdentityProvider;
use mls_rs::{MlsMessage, MlsMessageDescription, WireFormat};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;

use crate::store::DeviceRow;

pub type ObserverConfig = IntoConfigOutput<
    WithIdentityProvider<
        BasicIdentityProvider,
        WithCryptoProvider<AwsLcCryptoProvider, ExternalBaseConfig>,
    >,
>;
pub type Followed = ExternalGroup<ObserverConfig>;

mod commit;
use commit::*;
pub use commit::{check_commit, check_first_commit, check_roster, check_welcome, devices};

pub fn observer() -> ExternalClient<ObserverConfig> {
    ExternalClient::builder()
        .crypto_provider(AwsLcCryptoProvider::new())
        .identity_provider(BasicIdentityProvider::new())
        .build()
}

fn refuse(code: ErrorCode, msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, msg)
}

fn invalid(e: impl std::fmt::Debug) -> ProtocolError {
    refuse(
        ErrorCode::InvalidMls,
        format!("MLS message rejected: {e:?}"),
    )
}

/// Where the server looks devices up.
pub trait Registry {
    fn device(&self, device_id: &str) -> Option<DeviceRow>;
    /// Whether the server handed out the key package with this reference
    /// (KeyPackageRef) for `device_id` (see `claim_key_packages`).
    fn handed_out(&self, device_id: &str, key_package_ref: &[u8]) -> bool;
}

/// A member of a followed group, as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberDevice {
    pub user: String,
    pub device_id: String,
}

/// What an accepted message does to the conversation.
pub enum Accepted {
    Application,
    /// A proposal: the followed group with it cached, for the commit that
    /// will reference it.
    Proposal(Box<Followed>),
    /// A commit: the followed group in its new epoch, the devices it
    /// added (they receive the Welcome), and the committer's leaf in the
    /// new epoch (which must sign its GroupInfo).
    Commit {
        group: Box<Followed>,
        added: Vec<MemberDevice>,
        /// Each added key package's device and KeyPackageRef: the Welcome
        /// must have an entry for every one ([`check_welcome`]).
        welcome_for: Vec<(MemberDevice, Vec<u8>)>,
        committer: u32,
    },
}

/// Most members a conversation may have, and so most a commit may add
/// (a default sized for agency-wide groups; the Welcome and the records
/// member's join grow with it).
pub const MAX_GROUP_SIZE: usize = 5_000;

pub fn load(snapshot: &[u8]) -> Result<Followed, ProtocolError> {
    let snap = ExternalSnapshot::from_bytes(snapshot).map_err(invalid)?;
    observer().load_group(snap).map_err(invalid)
}

pub fn snapshot(group: &Followed) -> Result<Vec<u8>, ProtocolError> {
    group.snapshot().to_bytes().map_err(invalid)
}

/// Start following a conversation from its creator's epoch-0 GroupInfo.
/// Its tree may hold the creator's leaf alone, which is checked before
/// anything is validated: validating a large tree is the expensive part.
pub fn observe(group_info: &[u8], conv: &str) -> Result<Followed, ProtocolError> {
    let msg = MlsMessage::from_bytes(group_info).map_err(invalid)?;
    if group_info_leaves(&msg)? != 1 {
        return Err(refuse(
            ErrorCode::InvalidMls,
            "the epoch-0 GroupInfo must carry a ratchet tree holding the creator's leaf alone",
        ));
    }
    let group = observer().observe_group(msg, None, None).map_err(invalid)?;
    if hex::encode(group.group_context().group_id()) != conv {
        return Err(refuse(
            ErrorCode::BadFrame,
            "conversation id does not match the MLS group id",
        ));
    }
    if group.group_context().epoch() != 0 {
        return Err(refuse(
            ErrorCode::InvalidMls,
            "a new conversation must start from its epoch-0 GroupInfo",
        ));
    }
    Ok(group)
}

/// An MLS message named `what` in the request, or why it is not one.
fn parse(bytes: &[u8], what: &str) -> Result<MlsMessage, ProtocolError> {
    MlsMessage::from_bytes(bytes).map_err(|e| {
        refuse(
            ErrorCode::InvalidMls,
            format!("{what} does not parse: {e:?}"),
        )
    })
}

/// Leaves in the ratchet tree a GroupInfo carries (0 without one), read
/// without validating anything.
fn group_info_leaves(msg: &MlsMessage) -> Result<usize, ProtocolError> {
    let info = msg
        .as_group_info()
        .ok_or_else(|| refuse(ErrorCode::InvalidMls, "expected an MLS GroupInfo"))?;
    Ok(info
        .extensions()
        .get_as::<RatchetTreeExt>()
        .map_err(invalid)?
        .map(|t| t.tree_data.nodes().len().div_ceil(2))
        .unwrap_or(0))
}

/// The GroupInfo uploaded with a commit, for devices joining later by
/// external commit: accepted only if it is this group's at the epoch the
/// server followed to — its group context (group id, epoch, tree hash,
/// confirmed transcript hash), confirmation tag and any embedded tree —
/// signed by the committer's leaf, and allowing external commits.
/// mls-rs checks the first part when the followed group processes it.
pub fn check_group_info(
    next: &mut Followed,
    committer: u32,
    bytes: &[u8],
) -> Result<(), ProtocolError> {
    let msg = parse(bytes, "next_group_info")?;
    let epoch = next.group_context().epoch();
    let wrong = |why: String| {
        refuse(
            ErrorCode::InvalidMls,
            format!(
                "next_group_info must be this conversation's GroupInfo for epoch {epoch}: {why}"
            ),
        )
    };
    if group_info_leaves(&msg)? > MAX_GROUP_SIZE {
        return Err(wrong(format!(
            "its tree has more than {MAX_GROUP_SIZE} leaves"
        )));
    }
    let info = msg
        .as_group_info()
        .ok_or_else(|| wrong("it is not a GroupInfo".into()))?;
    if info.sender() != committer {
        return Err(wrong(format!(
            "it is signed by leaf {}, not by the committer's leaf {committer}",
            info.sender()
        )));
    }
    if !matches!(info.extensions().get_as::<ExternalPubExt>(), Ok(Some(_))) {
        return Err(wrong(
            "it lacks the external-pub extension new devices join with".into(),
        ));
    }
    match next.process_incoming_message(msg) {
        Ok(ExternalReceivedMessage::GroupInfo(_)) => Ok(()),
        Ok(_) => Err(wrong("it is not a GroupInfo".into())),
        Err(e) => Err(wrong(format!(
            "its signature, group context or tree do not match ({e:?})"
        ))),
    }
}

/// Whether a log entry is a commit or proposal: handshakes are accepted
/// only as PublicMessages, application messages only as PrivateMessages.
pub fn is_handshake(bytes: &[u8]) -> bool {
    MlsMessage::from_bytes(bytes).is_ok_and(|m| m.wire_format() == WireFormat::PublicMessage)
}

/// The attachment blobs an application message names in its
/// `authenticated_data`, the one part of a PrivateMessage in the clear
/// (RFC 9420 §6.3: version, wire format, then group id, epoch, content
/// type and authenticated data before the ciphertext). The message was
/// parsed whole by its checks already (`vet_submit`); on every send, only
/// the header is read here again.
pub fn carried_blobs(
    bytes: &[u8],
) -> Result<keepwire_protocol::attachment::BlobList, ProtocolError> {
    use mls_rs::mls_rs_codec::{byte_vec, MlsDecode};
    /// RFC 9420 §6: `mls_private_message`.
    const PRIVATE_MESSAGE: u16 = 2;
    // mls-rs parses a PrivateMessage but does not export its type: its
    // fields are read here in their order, with mls-rs's own codec.
    let mut body = bytes;
    let authenticated_data = (|| {
        let _version = u16::mls_decode(&mut body)?;
        if u16::mls_decode(&mut body)? != PRIVATE_MESSAGE {
            return Ok(Vec::new());
        }
        let _group_id: Vec<u8> = byte_vec::mls_decode(&mut body)?;
        let _epoch = u64::mls_decode(&mut body)?;
        let _content_type = u8::mls_decode(&mut body)?;
        byte_vec::mls_decode::<Vec<u8>>(&mut body)
    })()
    .map_err(|e| {
        ProtocolError::new(
            ErrorCode::InvalidMls,
            format!("a PrivateMessage that does not parse: {e:?}"),
        )
    })?;
    keepwire_protocol::attachment::BlobList::decode(&authenticated_data)
        .map_err(|e| ProtocolError::new(ErrorCode::BadFrame, e.to_string()))
}

/// The keepwire identity (`user/device`) in an MLS member's credential.
fn member_device(m: &mls_rs::group::Member) -> Option<MemberDevice> {
    let id = &m.signing_identity.credential.as_basic()?.identifier;
    let (user, device) = parse_device_identity(id)?;
    Some(MemberDevice {
        user: user.to_string(),
        device_id: device.to_string(),
    })
}

fn member_at(group: &Followed, index: u32) -> Option<MemberDevice> {
    group
        .roster()
        .member_with_index(index)
        .ok()
        .and_then(|m| member_device(&m))
}

/// The devices in the followed roster.
pub fn members(group: &Followed) -> Vec<MemberDevice> {
    group
        .roster()
        .members_iter()
        .filter_map(|m| member_device(&m))
        .collect()
}

/// Check one message submitted by `sender` to a followed conversation.
pub fn check_message(
    group: &Followed,
    bytes: &[u8],
    sender: &DeviceRow,
    registry: &dyn Registry,
) -> Result<Accepted, ProtocolError> {
    let msg = MlsMessage::from_bytes(bytes).map_err(invalid)?;
    let current = group.group_context().epoch();
    let (epoch, content_type) = match msg.description() {
        MlsMessageDescription::PublicProtocolMessage {
            group_id,
            epoch_id,
            content_type,
            ..
        } => {
            same_group(group, group_id)?;
            (epoch_id, content_type)
        }
        MlsMessageDescription::PrivateProtocolMessage {
            group_id,
            epoch_id,
            content_type,
        } => {
            same_group(group, group_id)?;
            if content_type != ContentType::Application {
                return Err(refuse(
                    ErrorCode::EncryptedHandshake,
                    "commits and proposals must be sent as MLS PublicMessages so the server can follow the roster",
                ));
            }
            (epoch_id, content_type)
        }
        _ => {
            return Err(refuse(
                ErrorCode::InvalidMls,
                "expected an MLS PublicMessage or PrivateMessage",
            ))
        }
    };
    if epoch != current {
        return Err(refuse(
            ErrorCode::StaleEpoch,
            format!("message is for epoch {epoch} but the conversation is at epoch {current}; sync and retry"),
        ));
    }
    let roster = members(group);
    let sender_member = MemberDevice {
        user: sender.user.clone(),
        device_id: sender.device_id.clone(),
    };
    let is_sender = |m: Option<MemberDevice>| m.as_ref() == Some(&sender_member);
    if !roster.contains(&sender_member) {
        let external = matches!(
            msg.description(),
            MlsMessageDescription::PublicProtocolMessage {
                sender: Sender::NewMemberCommit,
                content_type: ContentType::Commit,
                ..
            }
        );
        if !external {
            return Err(refuse(
                ErrorCode::NotMember,
                format!(
                    "device {} is not a member of this conversation",
                    sender.device_id
                ),
            ));
        }
        return check_external_join(group, msg, &roster, &sender_member, registry);
    }
    if records_count(&roster) == 0 {
        return Err(refuse(
            ErrorCode::RecordsMemberMissing,
            "this conversation has no records member; nothing can be sent to it",
        ));
    }
    match content_type {
        ContentType::Application => {
            if msg.wire_format() != WireFormat::PrivateMessage {
                return Err(refuse(
                    ErrorCode::InvalidMls,
                    "application messages must be MLS PrivateMessages",
                ));
            }
            if bytes.len() > keepwire_protocol::MAX_APPLICATION_MESSAGE_BYTES {
                return Err(refuse(
                    ErrorCode::TooLarge,
                    format!(
                        "application message of {} bytes exceeds the limit of {} bytes",
                        bytes.len(),
                        keepwire_protocol::MAX_APPLICATION_MESSAGE_BYTES
                    ),
                ));
            }
            Ok(Accepted::Application)
        }
        ContentType::Proposal | ContentType::Commit => {
            let mut next = group.clone();
            match next.process_incoming_message(msg).map_err(invalid)? {
                ExternalReceivedMessage::Proposal(p) => {
                    if !matches!(p.sender, mls_rs::group::ProposalSender::Member(i) if is_sender(member_at(group, i)))
                    {
                        return Err(refuse(
                            ErrorCode::NotMember,
                            "proposal is not signed by the submitting device",
                        ));
                    }
                    // The one proposal an honest client sends is a member's
                    // request to leave; the records member commits it, so
                    // anything else would let a member act through it.
                    match &p.proposal {
                        Proposal::ReInit(_) => {
                            return Err(refuse(ErrorCode::ReinitRefused, "ReInit is not allowed: it would start a group without the records member"));
                        }
                        Proposal::Remove(r) if is_sender(member_at(group, r.to_remove())) => {
                            if sender.user == RECORDS_USER && records_count(&roster) <= 1 {
                                return Err(refuse(
                                    ErrorCode::RecordsMemberMissing,
                                    "the records member may not leave",
                                ));
                            }
                        }
                        _ => {
                            return Err(refuse(
                                ErrorCode::Unauthorized,
                                "the only proposal accepted is a member's removal of itself (leaving); make other changes by commit",
                            ));
                        }
                    }
                    Ok(Accepted::Proposal(Box::new(next)))
                }
                ExternalReceivedMessage::Commit(desc) => {
                    if desc.is_external || !is_sender(member_at(group, desc.committer)) {
                        return Err(refuse(
                            ErrorCode::NotMember,
                            "commit is not signed by the submitting device",
                        ));
                    }
                    let welcome_for = check_commit(
                        group,
                        &next,
                        &desc.effect,
                        sender.user == RECORDS_USER,
                        registry,
                    )?;
                    Ok(Accepted::Commit {
                        group: Box::new(next),
                        added: devices(&welcome_for),
                        welcome_for,
                        committer: desc.committer,
                    })
                }
                _ => Err(refuse(
                    ErrorCode::InvalidMls,
                    "expected a commit or proposal",
                )),
            }
        }
    }
}
