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

/// The creator's first commit, checked like any other except that the
/// epoch-0 group (the creator alone) cannot contain the records member yet.
pub fn check_first_commit(
    group: &Followed,
    commit: &[u8],
    registry: &dyn Registry,
) -> Result<Accepted, ProtocolError> {
    let msg = mls_rs::MlsMessage::from_bytes(commit)
        .map_err(|e| refuse(ErrorCode::InvalidMls, format!("{e:?}")))?;
    if msg.wire_format() != mls_rs::WireFormat::PublicMessage {
        return Err(refuse(
            ErrorCode::EncryptedHandshake,
            "commits must be sent as MLS PublicMessages",
        ));
    }
    if msg.epoch() != Some(0) {
        return Err(refuse(
            ErrorCode::StaleEpoch,
            "the first commit must be for epoch 0",
        ));
    }
    let mut next = group.clone();
    match next.process_incoming_message(msg).map_err(|e| {
        refuse(
            ErrorCode::InvalidMls,
            format!("MLS message rejected: {e:?}"),
        )
    })? {
        ExternalReceivedMessage::Commit(desc) => {
            if desc.is_external || desc.committer != 0 {
                return Err(refuse(
                    ErrorCode::NotMember,
                    "the first commit must come from the creator",
                ));
            }
            if let CommitEffect::ReInit(_) = desc.effect {
                return Err(refuse(ErrorCode::ReinitRefused, "ReInit is not allowed"));
            }
            let welcome_for = check_commit(group, &next, &desc.effect, false, registry)?;
            Ok(Accepted::Commit {
                group: Box::new(next),
                added: devices(&welcome_for),
                welcome_for,
                committer: desc.committer,
            })
        }
        _ => Err(refuse(
            ErrorCode::InvalidMls,
            "the first message of a conversation must be a commit",
        )),
    }
}

/// An external commit: a new device of a user already in the conversation
/// joins by itself. It may add only itself and remove nobody else (an
/// older leaf of the same device, when it re-joins, is allowed).
fn check_external_join(
    group: &Followed,
    msg: MlsMessage,
    roster: &[MemberDevice],
    sender: &MemberDevice,
    registry: &dyn Registry,
) -> Result<Accepted, ProtocolError> {
    if !roster.iter().any(|m| m.user == sender.user) {
        return Err(refuse(
            ErrorCode::NotMember,
            format!(
                "{} is not in this conversation: a new device may join by itself only where its user already is",
                sender.user
            ),
        ));
    }
    let mut next = group.clone();
    let desc = match next.process_incoming_message(msg).map_err(invalid)? {
        ExternalReceivedMessage::Commit(desc) => desc,
        _ => return Err(refuse(ErrorCode::InvalidMls, "expected an external commit")),
    };
    if !desc.is_external || member_at(&next, desc.committer).as_ref() != Some(sender) {
        return Err(refuse(
            ErrorCode::NotMember,
            "external commit does not add the submitting device",
        ));
    }
    let changes = applied(&desc.effect)?;
    // Only an older leaf of the joining device itself may go.
    for index in &changes.removed {
        if member_at(group, *index).as_ref() != Some(sender) {
            return Err(refuse(
                ErrorCode::NotMember,
                "an external commit may not remove another member",
            ));
        }
    }
    if !changes.added.is_empty() {
        return Err(refuse(
            ErrorCode::NotMember,
            "an external commit may add only the submitting device",
        ));
    }
    check_leaves(group, &next, &changes.removed, false)?;
    check_roster(&next, registry)?;
    Ok(Accepted::Commit {
        group: Box::new(next),
        added: vec![sender.clone()],
        welcome_for: Vec::new(),
        committer: desc.committer,
    })
}

/// The distinct devices of a commit's adds, in order.
pub fn devices(adds: &[(MemberDevice, Vec<u8>)]) -> Vec<MemberDevice> {
    let mut out: Vec<MemberDevice> = Vec::new();
    for (d, _) in adds {
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

/// What a commit's applied proposals do, by leaf.
struct Applied {
    /// Leaves removed (indices in the epoch before).
    removed: Vec<u32>,
    /// Key packages added: the device each is for, and its reference.
    added: Vec<(MemberDevice, Vec<u8>)>,
}

fn applied(effect: &CommitEffect) -> Result<Applied, ProtocolError> {
    let epoch = match effect {
        CommitEffect::NewEpoch(e) => e,
        CommitEffect::Removed { new_epoch, .. } => new_epoch,
        CommitEffect::ReInit(_) => {
            return Err(refuse(
                ErrorCode::ReinitRefused,
                "ReInit is not allowed: it would start a group without the records member",
            ))
        }
    };
    let suite = {
        use mls_rs::CryptoProvider;
        AwsLcCryptoProvider::new()
            .cipher_suite_provider(mls_rs::CipherSuite::P256_AES128)
            .ok_or_else(|| refuse(ErrorCode::Internal, "cipher suite unavailable"))?
    };
    let mut out = Applied {
        removed: Vec::new(),
        added: Vec::new(),
    };
    for p in &epoch.applied_proposals {
        match &p.proposal {
            Proposal::Remove(r) => out.removed.push(r.to_remove()),
            Proposal::Add(a) => {
                let kp = a.key_package();
                let id = &kp.signing_identity().credential;
                let device = id
                    .as_basic()
                    .and_then(|b| parse_device_identity(&b.identifier))
                    .map(|(user, device)| MemberDevice {
                        user: user.to_string(),
                        device_id: device.to_string(),
                    })
                    .ok_or_else(|| {
                        refuse(
                            ErrorCode::NotMember,
                            "an added key package does not have a keepwire credential",
                        )
                    })?;
                let r = kp.to_reference(&suite).map_err(invalid)?;
                out.added.push((device, r.to_vec()));
            }
            _ => {}
        }
    }
    if out.added.len() > MAX_GROUP_SIZE {
        return Err(refuse(
            ErrorCode::TooLarge,
            format!("a commit may add at most {MAX_GROUP_SIZE} members"),
        ));
    }
    Ok(out)
}

/// A member's commit, by leaf rather than by name: the records member's
/// leaves stay (only the records member's own commits may remove one, and
/// only while another records leaf stays), every leaf that stays keeps its
/// credential and signature key (an Update or update path may change its
/// encryption key only), every added key package is one the server handed
/// out for that device, and afterwards the roster is valid. Returns the
/// adds (by key package, so a device removed and re-added in one commit
/// counts as added and gets its Welcome).
pub fn check_commit(
    before: &Followed,
    next: &Followed,
    effect: &CommitEffect,
    records_committer: bool,
    registry: &dyn Registry,
) -> Result<Vec<(MemberDevice, Vec<u8>)>, ProtocolError> {
    let changes = applied(effect)?;
    check_leaves(before, next, &changes.removed, records_committer)?;
    for (device, r) in &changes.added {
        if !registry.handed_out(&device.device_id, r) {
            return Err(refuse(
                ErrorCode::NotMember,
                format!(
                    "the key package adding {}/{} was not handed out by this server for that device (claim it with claim_key_packages)",
                    device.user, device.device_id
                ),
            ));
        }
    }
    check_roster(next, registry)?;
    Ok(changes.added)
}

/// The KeyPackageRefs a commit's adds must find among its Welcome's
/// recipients (`welcome_key_package_references`). The server cannot read
/// the encrypted secrets, so this only fails fast on a Welcome that leaves
/// someone out; the records member's join, before anything is delivered,
/// is what proves a Welcome works.
pub fn check_welcome(
    adds: &[(MemberDevice, Vec<u8>)],
    welcome: &[u8],
) -> Result<(), ProtocolError> {
    let msg = parse(welcome, "welcome")?;
    let listed: Vec<Vec<u8>> = msg
        .welcome_key_package_references()
        .into_iter()
        .map(|r| r.to_vec())
        .collect();
    if let Some((d, _)) = adds.iter().find(|(_, r)| !listed.contains(r)) {
        return Err(refuse(
            ErrorCode::InvalidMls,
            format!(
                "the Welcome has no entry for the key package adding {}/{}",
                d.user, d.device_id
            ),
        ));
    }
    Ok(())
}

/// Leaves that stay keep who they are, and the records member's leaves
/// stay unless the records member itself commits.
fn check_leaves(
    before: &Followed,
    next: &Followed,
    removed: &[u32],
    records_committer: bool,
) -> Result<(), ProtocolError> {
    for m in before.roster().members_iter() {
        let records = member_device(&m).is_some_and(|d| d.user == RECORDS_USER);
        if removed.contains(&m.index) {
            if records && !records_committer {
                return Err(refuse(
                    ErrorCode::RecordsMemberMissing,
                    "a member's commit may not remove the records member's leaf (whatever it adds)",
                ));
            }
            continue;
        }
        let now = next.roster().member_with_index(m.index).ok();
        if now.as_ref().map(|n| &n.signing_identity) != Some(&m.signing_identity) {
            return Err(refuse(
                ErrorCode::NotMember,
                format!(
                    "leaf {} changed its credential or signature key: an update may change a leaf's encryption key only",
                    m.index
                ),
            ));
        }
    }
    Ok(())
}

fn records_count(roster: &[MemberDevice]) -> usize {
    roster.iter().filter(|m| m.user == RECORDS_USER).count()
}

fn same_group(group: &Followed, group_id: &[u8]) -> Result<(), ProtocolError> {
    if group_id != group.group_context().group_id() {
        return Err(refuse(
            ErrorCode::InvalidMls,
            "MLS message belongs to another conversation",
        ));
    }
    Ok(())
}

/// After a commit: the records member is still there, the group is not
/// too large, and every member is an enrolled, unrevoked device whose MLS
/// key is the one it enrolled with.
pub fn check_roster(next: &Followed, registry: &dyn Registry) -> Result<(), ProtocolError> {
    let mut after = Vec::new();
    for m in next.roster().members_iter() {
        let id = m
            .signing_identity
            .credential
            .as_basic()
            .map(|b| b.identifier.clone())
            .ok_or_else(|| {
                refuse(
                    ErrorCode::NotMember,
                    format!("member {} does not have a keepwire credential", m.index),
                )
            })?;
        let (user, device) = parse_device_identity(&id).ok_or_else(|| {
            refuse(
                ErrorCode::NotMember,
                format!("member {} has a malformed credential", m.index),
            )
        })?;
        let row = registry.device(device).ok_or_else(|| {
            refuse(
                ErrorCode::NotMember,
                format!("device {device} is not enrolled"),
            )
        })?;
        if row.user != user {
            return Err(refuse(
                ErrorCode::NotMember,
                format!("device {device} belongs to {}, not {user}", row.user),
            ));
        }
        if row.revoked {
            return Err(refuse(
                ErrorCode::DeviceRevoked,
                format!("device {device} of {user} is revoked and may not be in a conversation"),
            ));
        }
        if row.signature_key != m.signing_identity.signature_key.as_bytes() {
            return Err(refuse(
                ErrorCode::NotMember,
                format!("device {device} is in the roster with a key it did not enrol"),
            ));
        }
        after.push(MemberDevice {
            user: user.to_string(),
            device_id: device.to_string(),
        });
    }
    if records_count(&after) == 0 {
        return Err(refuse(
            ErrorCode::RecordsMemberMissing,
            "this commit would leave the conversation without the agency's records member",
        ));
    }
    if after.len() > MAX_GROUP_SIZE {
        return Err(refuse(
            ErrorCode::TooLarge,
            format!("a conversation may have at most {MAX_GROUP_SIZE} members"),
        ));
    }
    Ok(())
}
