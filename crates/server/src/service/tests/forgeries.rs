//! The refusals that need a conversation under way: members forged into
//! it, leaves turned into other devices, a forged GroupInfo, a Welcome
//! without the records member, and what a capture failure and a
//! revocation shut out.

use super::*;

/// An MLS client for any identity and key (a forged device).
fn forged_client(
    identity: &str,
    secret: mls_rs::crypto::SignatureSecretKey,
    public: mls_rs::crypto::SignaturePublicKey,
) -> mls_rs::Client<impl MlsConfig> {
    mls_rs::Client::builder()
        .crypto_provider(AwsLcCryptoProvider::new())
        .identity_provider(BasicIdentityProvider::new())
        .mls_rules(Rules::default())
        .signing_identity(
            SigningIdentity::new(
                BasicCredential::new(identity.as_bytes().to_vec()).into_credential(),
                public,
            ),
            secret,
            SUITE,
        )
        .build()
}

fn identity_of(dev: &Dev) -> String {
    let id = dev.session.device.as_ref().unwrap();
    keepwire_protocol::device_identity(&id.user, &id.device_id)
}

#[test]
fn on_postgres_forged_members_forged_group_info_and_capture_failures_are_refused() {
    on_postgres(forged_members_forged_group_info_and_capture_failures_are_refused_with_their_codes);
}

#[test]
fn forged_members_forged_group_info_and_capture_failures_are_refused_with_their_codes() {
    let mut w = World::new();
    let mut mallory = w.device("mallory", "staff");
    let mallory2 = w.device("mallory", "staff");
    let mut bob = w.device("bob", "staff");
    let mut records = w.device(RECORDS_USER, "records");
    let cm = mallory.client(Rules::default());
    let cb = bob.client(Rules::default());
    let cr = records.client(Rules::default());
    for _ in 0..4 {
        w.upload(&mut bob, &cb);
        w.upload(&mut records, &cr);
    }
    w.call(&mut mallory, Request::AcknowledgeNotice).unwrap();
    w.call(&mut bob, Request::AcknowledgeNotice).unwrap();

    // A creation whose Welcome leaves the records member out (another
    // group's, for bob only).
    let kps = w.claim(&mut mallory, &["bob"], true);
    let mut gx = cm
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    let Request::CreateConversation {
        conv,
        group_info,
        commit,
        next_group_info,
        ..
    } = creation(&mut gx, &kps)
    else {
        unreachable!()
    };
    let bob_kp = w.claim(&mut mallory, &["bob"], false).remove(0);
    let mut other = cm
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    let bob_only = other
        .commit_builder()
        .add_member(bob_kp)
        .unwrap()
        .build()
        .unwrap()
        .welcome_messages
        .remove(0);
    refused(
        w.call(
            &mut mallory,
            Request::CreateConversation {
                conv,
                group_info,
                commit,
                welcome: bob_only.to_bytes().unwrap(),
                next_group_info,
            },
        ),
        ErrorCode::InvalidMls,
        "a Welcome without the records member",
    );

    // The well-formed conversation; bob joins from its Welcome.
    let kps = w.claim(&mut mallory, &["bob"], true);
    let mut g = cm
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    let conv = hex::encode(g.group_id());
    let create = creation(&mut g, &kps);
    let Request::CreateConversation { welcome, .. } = &create else {
        unreachable!()
    };
    let (mut gb, _) = cb
        .join_group(None, &MlsMessage::from_bytes(welcome).unwrap(), None)
        .unwrap();
    w.call(&mut mallory, create).unwrap();
    g.apply_pending_commit().unwrap();
    let archived = |from, to, withheld| Request::Archived {
        conv: conv.clone(),
        from,
        to,
        withheld,
    };
    w.call(&mut records, archived(1, 1, Vec::new())).unwrap();

    let mut table: Vec<(&str, MlsMessage, Option<MlsMessage>, ErrorCode)> = Vec::new();
    // Updates that change who a leaf is: to a key never enrolled, and to
    // mallory's other device's enrolled identity and key (a valid roster
    // by name; mls-rs's successor check refuses that one).
    let (new_secret, new_public) = suite().signature_key_generate().unwrap();
    for (secret, identity, public, code, what) in [
        (
            new_secret,
            identity_of(&mallory),
            new_public,
            ErrorCode::NotMember,
            "an update to an unenrolled signature key",
        ),
        (
            mallory2.secret.clone(),
            identity_of(&mallory2),
            mallory2.public.clone(),
            ErrorCode::InvalidMls,
            "an update turning one device's leaf into another's",
        ),
    ] {
        let out = g
            .commit_builder()
            .set_new_signing_identity(
                secret,
                SigningIdentity::new(
                    BasicCredential::new(identity.into_bytes()).into_credential(),
                    public,
                ),
            )
            .build()
            .unwrap();
        table.push((
            what,
            out.commit_message,
            out.external_commit_group_info,
            code,
        ));
        g.clear_pending_commit();
    }
    // Members the registry does not know: a device never enrolled, and
    // mallory's real second device with a key it did not enrol.
    let second = mallory2.session.device.as_ref().unwrap().device_id.clone();
    for (identity, what) in [
        (
            "bob/forged-device".to_string(),
            "adding a device that was never enrolled",
        ),
        (
            format!("mallory/{second}"),
            "adding a device with a key it did not enrol",
        ),
    ] {
        let (fs, fp) = suite().signature_key_generate().unwrap();
        let forged = forged_client(&identity, fs, fp)
            .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap();
        let out = g
            .commit_builder()
            .add_member(forged)
            .unwrap()
            .build()
            .unwrap();
        table.push((
            what,
            out.commit_message,
            out.external_commit_group_info,
            ErrorCode::NotMember,
        ));
        g.clear_pending_commit();
    }
    // A well-formed commit whose GroupInfo is forged: another group's,
    // with the same group id and the next epoch.
    let out = g.commit_builder().build().unwrap();
    let forged_info = {
        let mut twin = cm
            .create_group_with_id(
                g.group_id().to_vec(),
                ExtensionList::new(),
                ExtensionList::new(),
                None,
            )
            .unwrap();
        while twin.current_epoch() < g.current_epoch() + 1 {
            twin.commit_builder().build().unwrap();
            twin.apply_pending_commit().unwrap();
        }
        twin.group_info_message_allowing_ext_commit(true).unwrap()
    };
    table.push((
        "a forged next_group_info",
        out.commit_message,
        Some(forged_info),
        ErrorCode::InvalidMls,
    ));
    g.clear_pending_commit();
    for (what, message, group_info, code) in table {
        let req = Request::Submit {
            conv: conv.clone(),
            message: message.to_bytes().unwrap(),
            welcome: None,
            next_group_info: group_info.map(|g| g.to_bytes().unwrap()),
        };
        refused(w.call(&mut mallory, req), code, what);
    }

    // What the records service could not capture: mallory's message is
    // withheld, mallory blocked, the conversation suspended.
    let m = g.encrypt_application_message(b"garbled", vec![]).unwrap();
    w.call(&mut mallory, submit(&conv, &m, None)).unwrap();
    w.call(
        &mut records,
        archived(
            2,
            2,
            vec![keepwire_protocol::WithheldReport {
                seq: 2,
                reason: "cannot decrypt".into(),
            }],
        ),
    )
    .unwrap();
    let again = g.encrypt_application_message(b"again", vec![]).unwrap();
    refused(
        w.call(&mut mallory, submit(&conv, &again, None)),
        ErrorCode::DeviceBlocked,
        "a message from a blocked device",
    );
    let from_bob = gb.encrypt_application_message(b"hello", vec![]).unwrap();
    refused(
        w.call(&mut bob, submit(&conv, &from_bob, None)),
        ErrorCode::ConversationSuspended,
        "a message to a suspended conversation",
    );
    // A revoked device is refused from its next request on.
    let bob_id = bob.session.device.as_ref().unwrap().device_id.clone();
    assert!(w.core.store().revoke_device(&bob_id, now()).unwrap());
    refused(
        w.call(&mut bob, Request::Sync),
        ErrorCode::DeviceRevoked,
        "a request from a revoked device",
    );
}
