//! Commits: the first one (which must add the records member), external
//! joins, and every later commit's effect on the roster, its Welcome and
//! the leaves it adds — each refused unless the records member stays, by
//! leaf, and every added device is enrolled with a key package the server
//! handed out.

use super::*;

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
pub(super) fn check_external_join(
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
pub(super) struct Applied {
    /// Leaves removed (indices in the epoch before).
    removed: Vec<u32>,
    /// Key packages added: the device each is for, and its reference.
    added: Vec<(MemberDevice, Vec<u8>)>,
}

pub(super) fn applied(effect: &CommitEffect) -> Result<Applied, ProtocolError> {
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
pub(super) fn check_leaves(
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

pub(super) fn records_count(roster: &[MemberDevice]) -> usize {
    roster.iter().filter(|m| m.user == RECORDS_USER).count()
}

pub(super) fn same_group(group: &Followed, group_id: &[u8]) -> Result<(), ProtocolError> {
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
