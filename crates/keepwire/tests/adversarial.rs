//! A modified client: it speaks the wire protocol itself and drives mls-rs
//! directly, without the honest client's checks, and attempts every action
//! the server must refuse. Each refusal must carry its precise code, and
//! nothing refused may be delivered or captured; what the server cannot
//! see inside (a ciphertext that does not decrypt, another member's
//! message relayed) is withheld: archived, delivered to no one, its sender
//! blocked and the conversation suspended until an administrator acts.

mod common;

use std::sync::atomic::Ordering;

use common::rogue::{hex, mls_client, refused, suite, text, Rogue, Rules, Wire, SUITE};
use common::{wait_for, Agency};
use keepwire_protocol::{ErrorCode, Request};
use mls_rs::{CipherSuiteProvider, ExtensionList, MlsMessage};

#[test]
fn on_postgres_a_modified_client_is_refused_every_forbidden_action() {
    common::on_postgres(a_modified_client_is_refused_every_forbidden_action);
}

#[test]
fn on_postgres_a_commit_only_members_can_fault_suspends_its_conversation_not_the_archive() {
    common::on_postgres(a_commit_only_members_can_fault_suspends_its_conversation_not_the_archive);
}

#[test]
fn a_modified_client_is_refused_every_forbidden_action() {
    let agency = Agency::start();
    let bob = agency.user("bob", "staff");
    bob.accept_notice();
    let code_a = agency.admin(&[
        "user",
        "add",
        "mallory",
        "--display",
        "M",
        "--category",
        "staff",
    ]);
    let code_b = agency.admin(&["user", "code", "mallory"]);
    let code_e = agency.admin(&[
        "user",
        "add",
        "eve",
        "--display",
        "E",
        "--category",
        "staff",
    ]);
    let url = agency.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (conv, b_device, relayed_seq, garbage_seq) = rt.block_on(async {
        let mut a = Rogue::enroll(&url, "mallory", code_a.trim()).await;
        let mut b = Rogue::enroll(&url, "mallory", code_b.trim()).await;
        let mut eve = Rogue::enroll(&url, "eve", code_e.trim()).await;
        eve.wire.call(Request::AcknowledgeNotice).await.unwrap();
        let rules = Rules::default();
        let ca = a.client(rules.clone());
        let cb = b.client(Rules::default());
        a.upload_key_package(&ca).await;
        b.upload_key_package(&cb).await;

        // A group with bob and the records member, created before the
        // records notice was acknowledged: refused.
        let kps = a.claim(&["bob"], true).await;
        let bob_kp = kps.iter().find(|k| k.user == "bob").unwrap().clone();
        let records_kp = kps.iter().find(|k| k.user == "records").unwrap().clone();
        let mut g = ca
            .create_group(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap();
        let conv = hex(g.group_id());
        let epoch0 = g.group_info_message(true).unwrap().to_bytes().unwrap();
        let out = g
            .commit_builder()
            .add_member(MlsMessage::from_bytes(&bob_kp.key_package).unwrap())
            .unwrap()
            .add_member(MlsMessage::from_bytes(&records_kp.key_package).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let create = Request::CreateConversation {
            conv: conv.clone(),
            group_info: epoch0,
            commit: out.commit_message.to_bytes().unwrap(),
            welcome: out.welcome_messages[0].to_bytes().unwrap(),
            next_group_info: out
                .external_commit_group_info
                .as_ref()
                .unwrap()
                .to_bytes()
                .unwrap(),
        };
        refused(
            a.wire.call(create.clone()).await,
            ErrorCode::NoticeNotAcknowledged,
            "sending before the records notice",
        );
        a.wire.call(Request::AcknowledgeNotice).await.unwrap();

        // A conversation without the records member.
        let bob_kp2 = a.claim(&["bob"], false).await.remove(0);
        let mut g0 = ca
            .create_group(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap();
        let epoch0 = g0.group_info_message(true).unwrap().to_bytes().unwrap();
        let out0 = g0
            .commit_builder()
            .add_member(MlsMessage::from_bytes(&bob_kp2.key_package).unwrap())
            .unwrap()
            .build()
            .unwrap();
        refused(
            a.wire
                .call(Request::CreateConversation {
                    conv: hex(g0.group_id()),
                    group_info: epoch0,
                    commit: out0.commit_message.to_bytes().unwrap(),
                    welcome: out0.welcome_messages[0].to_bytes().unwrap(),
                    next_group_info: out0
                        .external_commit_group_info
                        .as_ref()
                        .unwrap()
                        .to_bytes()
                        .unwrap(),
                })
                .await,
            ErrorCode::RecordsMemberMissing,
            "a conversation without the records member",
        );

        // A Welcome that leaves the records member out (here: one made for
        // bob alone): refused before anything is accepted, so nothing sent
        // after it can reach anyone.
        let bob_only = {
            let bob_kp3 = a.claim(&["bob"], false).await.remove(0);
            let mut other = ca
                .create_group(ExtensionList::new(), ExtensionList::new(), None)
                .unwrap();
            other
                .commit_builder()
                .add_member(MlsMessage::from_bytes(&bob_kp3.key_package).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .welcome_messages
                .remove(0)
        };
        let Request::CreateConversation {
            conv: c,
            group_info,
            commit,
            next_group_info,
            ..
        } = create.clone()
        else {
            unreachable!()
        };
        refused(
            a.wire
                .call(Request::CreateConversation {
                    conv: c,
                    group_info,
                    commit,
                    welcome: bob_only.to_bytes().unwrap(),
                    next_group_info,
                })
                .await,
            ErrorCode::InvalidMls,
            "a Welcome without the records member",
        );
        let early = g
            .encrypt_application_message(&text("pipelined after a stripped welcome"), vec![])
            .unwrap();
        refused(
            a.submit(&conv, &early, None, None).await,
            ErrorCode::UnknownConversation,
            "a message pipelined after a refused creation",
        );

        // Now the acknowledged, well-formed creation goes through. A
        // member commits only once it has everything before (the server
        // refuses otherwise, `capture_pending`): wait for the capture.
        a.wire.call(create).await.unwrap();
        a.wire.wait_captured(&conv, 1).await;
        g.apply_pending_commit().unwrap();
        let records_index = g
            .roster()
            .members_iter()
            .find(|m| {
                m.signing_identity
                    .credential
                    .as_basic()
                    .unwrap()
                    .identifier
                    .starts_with(b"records/")
            })
            .unwrap()
            .index;

        // A commit removing the records member.
        let out = g
            .commit_builder()
            .remove_member(records_index)
            .unwrap()
            .build()
            .unwrap();
        refused(
            a.submit(
                &conv,
                &out.commit_message,
                None,
                out.external_commit_group_info.as_ref(),
            )
            .await,
            ErrorCode::RecordsMemberMissing,
            "removing the records member",
        );
        g.clear_pending_commit();

        // The swap: one commit removing the records member's leaf and
        // adding a fresh key package of the same records device. By name
        // nobody left and nobody came; by leaf the records member is gone.
        let records_kp = a.claim(&[], true).await.remove(0);
        let out = g
            .commit_builder()
            .remove_member(records_index)
            .unwrap()
            .add_member(MlsMessage::from_bytes(&records_kp.key_package).unwrap())
            .unwrap()
            .build()
            .unwrap();
        refused(
            a.submit(
                &conv,
                &out.commit_message,
                out.welcome_messages.first(),
                out.external_commit_group_info.as_ref(),
            )
            .await,
            ErrorCode::RecordsMemberMissing,
            "swapping the records member's leaf for a fresh one",
        );
        g.clear_pending_commit();

        // Updates that change who a leaf is: to a signature key never
        // enrolled (the leaf check), and to mallory's other device's
        // enrolled identity and key (a valid roster by name; mls-rs's own
        // successor check already refuses a new identity, the leaf check
        // stands behind it).
        let (new_secret, new_public) = suite().signature_key_generate().unwrap();
        for (secret, identity, public, code, why, what) in [
            (
                new_secret,
                a.identity(),
                new_public,
                ErrorCode::NotMember,
                "credential or signature key",
                "an update to an unenrolled signature key",
            ),
            (
                b.secret.clone(),
                b.identity(),
                b.public.clone(),
                ErrorCode::InvalidMls,
                "InvalidSuccessor",
                "an update turning one device's leaf into another's",
            ),
        ] {
            let out = g
                .commit_builder()
                .set_new_signing_identity(
                    secret,
                    mls_rs::identity::SigningIdentity::new(
                        mls_rs::identity::basic::BasicCredential::new(identity.into_bytes())
                            .into_credential(),
                        public,
                    ),
                )
                .build()
                .unwrap();
            let r = a
                .submit(
                    &conv,
                    &out.commit_message,
                    None,
                    out.external_commit_group_info.as_ref(),
                )
                .await;
            if let Err((_, m)) = &r {
                assert!(m.contains(why), "{what}: {m}");
            }
            refused(r, code, what);
            g.clear_pending_commit();
        }

        // A well-formed commit whose GroupInfo is forged: another group's,
        // with the same group id and epoch.
        let out = g.commit_builder().build().unwrap();
        let forged_info = {
            let mut twin = ca
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
        refused(
            a.submit(&conv, &out.commit_message, None, Some(&forged_info))
                .await,
            ErrorCode::InvalidMls,
            "a forged next_group_info",
        );
        g.clear_pending_commit();

        // A non-member acknowledging entries of the conversation.
        refused(
            eve.wire
                .call(Request::Ack {
                    conv: conv.clone(),
                    seq: 1,
                })
                .await,
            ErrorCode::NotMember,
            "an acknowledgement from a device outside the conversation",
        );

        // A ReInit proposal.
        let reinit = g
            .propose_reinit(
                None,
                g.protocol_version(),
                SUITE,
                ExtensionList::new(),
                vec![],
            )
            .unwrap();
        refused(
            a.submit(&conv, &reinit, None, None).await,
            ErrorCode::ReinitRefused,
            "ReInit",
        );
        g.clear_proposal_cache();

        // A commit sent as an encrypted PrivateMessage.
        rules.encrypt_handshakes.store(true, Ordering::SeqCst);
        let out = g.commit_builder().build().unwrap();
        refused(
            a.submit(
                &conv,
                &out.commit_message,
                None,
                out.external_commit_group_info.as_ref(),
            )
            .await,
            ErrorCode::EncryptedHandshake,
            "an encrypted commit",
        );
        g.clear_pending_commit();
        rules.encrypt_handshakes.store(false, Ordering::SeqCst);

        // Members the registry does not know: a device id never enrolled,
        // and mallory's real second device with a key it did not enrol.
        for (identity, what) in [
            (
                "bob/forged-device".to_string(),
                "a device that was never enrolled",
            ),
            (
                format!("mallory/{}", b.device_id),
                "a key the device did not enrol",
            ),
        ] {
            let (fs, fp) = suite().signature_key_generate().unwrap();
            let forged = mls_client(&identity, fs, fp, Rules::default())
                .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
                .unwrap();
            let out = g
                .commit_builder()
                .add_member(forged)
                .unwrap()
                .build()
                .unwrap();
            refused(
                a.submit(
                    &conv,
                    &out.commit_message,
                    out.welcome_messages.first(),
                    out.external_commit_group_info.as_ref(),
                )
                .await,
                ErrorCode::NotMember,
                what,
            );
            g.clear_pending_commit();
        }

        // A commit without the GroupInfo new devices need.
        let out = g.commit_builder().build().unwrap();
        refused(
            a.submit(&conv, &out.commit_message, None, None).await,
            ErrorCode::BadFrame,
            "a commit without next_group_info",
        );
        g.clear_pending_commit();

        // A legitimate message.
        let hello = g
            .encrypt_application_message(&text("hello from mallory"), vec![])
            .unwrap();
        let seq = a.submit(&conv, &hello, None, None).await.unwrap();
        a.wire.wait_captured(&conv, seq).await;

        // A message for an epoch that has passed.
        let stale = g
            .encrypt_application_message(&text("stale"), vec![])
            .unwrap();
        let out = g.commit_builder().build().unwrap();
        let seq = a
            .submit(
                &conv,
                &out.commit_message,
                None,
                out.external_commit_group_info.as_ref(),
            )
            .await
            .unwrap();
        a.wire.wait_captured(&conv, seq).await;
        g.apply_pending_commit().unwrap();
        refused(
            a.submit(&conv, &stale, None, None).await,
            ErrorCode::StaleEpoch,
            "a message for a past epoch",
        );

        // A member claiming to be the records service: only it may say
        // what is archived (that is what lets the relay drop entries).
        refused(
            a.wire
                .call(Request::Archived {
                    conv: conv.clone(),
                    from: 1,
                    to: 2,
                    withheld: Vec::new(),
                })
                .await,
            ErrorCode::Unauthorized,
            "archived ranges from a device that is not the records service",
        );

        // An oversize application message.
        let big = g
            .encrypt_application_message(&vec![b'x'; 100 * 1024], vec![])
            .unwrap();
        refused(
            a.submit(&conv, &big, None, None).await,
            ErrorCode::TooLarge,
            "an oversize message",
        );

        // A device that is not a member (another user's, and a second device
        // of mallory not yet added) relays a member's message.
        let relayed = g
            .encrypt_application_message(&text("relayed"), vec![])
            .unwrap();
        refused(
            eve.submit(&conv, &relayed, None, None).await,
            ErrorCode::NotMember,
            "a non-member's submission",
        );
        refused(
            b.submit(&conv, &relayed, None, None).await,
            ErrorCode::NotMember,
            "a non-member device of a member user (not an external join)",
        );

        // Mallory adds her second device; it then submits a commit signed
        // by the first one.
        let b_kp = a.claim(&["mallory"], false).await.remove(0);
        assert_eq!(b_kp.device_id, b.device_id);
        let out = g
            .commit_builder()
            .add_member(MlsMessage::from_bytes(&b_kp.key_package).unwrap())
            .unwrap()
            .build()
            .unwrap();
        a.submit(
            &conv,
            &out.commit_message,
            out.welcome_messages.first(),
            out.external_commit_group_info.as_ref(),
        )
        .await
        .unwrap();
        g.apply_pending_commit().unwrap();
        let (mut gb, _) = cb.join_group(None, &out.welcome_messages[0], None).unwrap();
        let out = g.commit_builder().build().unwrap();
        refused(
            b.submit(
                &conv,
                &out.commit_message,
                None,
                out.external_commit_group_info.as_ref(),
            )
            .await,
            ErrorCode::NotMember,
            "a commit signed by another member",
        );
        g.clear_pending_commit();

        // What the server cannot see inside is accepted, then withheld by
        // the records service: a message of A relayed by B reaches no one,
        // B is blocked and the conversation suspended until an
        // administrator looks into it.
        let relayed = g
            .encrypt_application_message(&text("relayed by b"), vec![])
            .unwrap();
        let relayed_seq = b.submit(&conv, &relayed, None, None).await.unwrap();
        wait_suspended(&agency, &conv);
        let mut garbage = gb
            .encrypt_application_message(&text("garbage"), vec![])
            .unwrap()
            .to_bytes()
            .unwrap();
        let last = garbage.len() - 1;
        garbage[last] ^= 0xff;
        let garbage = MlsMessage::from_bytes(&garbage).unwrap();
        refused(
            b.submit(&conv, &garbage, None, None).await,
            ErrorCode::DeviceBlocked,
            "a device whose message was withheld",
        );
        let after = g
            .encrypt_application_message(&text("still flowing"), vec![])
            .unwrap();
        refused(
            a.submit(&conv, &after, None, None).await,
            ErrorCode::ConversationSuspended,
            "a message to a suspended conversation",
        );
        // The administrator deals with it, and the conversation goes on.
        for args in [
            ["device", "unblock", b.device_id.as_str(), "--reason"],
            ["conversation", "resume", conv.as_str(), "--reason"],
        ] {
            let mut args = args.to_vec();
            args.extend(["reviewed in the adversarial test", "--actor", "admin1"]);
            agency.admin(&args);
        }
        a.submit(&conv, &after, None, None).await.unwrap();
        // A ciphertext that does not decrypt: withheld the same way.
        let garbage_seq = b.submit(&conv, &garbage, None, None).await.unwrap();
        wait_suspended(&agency, &conv);

        // A revoked device: refused on its open connection and on a new one.
        agency.admin(&["device", "revoke", &b.device_id]);
        let again = gb
            .encrypt_application_message(&text("revoked"), vec![])
            .unwrap();
        refused(
            b.submit(&conv, &again, None, None).await,
            ErrorCode::DeviceRevoked,
            "a revoked device's message",
        );
        let mut fresh = Wire::connect(&url).await;
        refused(
            b.auth_on(&mut fresh).await,
            ErrorCode::DeviceRevoked,
            "a revoked device connecting",
        );
        (conv, b.device_id.clone(), relayed_seq, garbage_seq)
    });

    // Bob's honest device: exactly what was captured, nothing refused,
    // nothing withheld, nothing stalled.
    assert_eq!(bob.texts(&conv), ["hello from mallory", "still flowing"]);
    // The archive: every accepted entry, in a gap-free sequence, none of
    // the refused ones, the withheld ones saying why.
    let all = wait_for("capture of every accepted entry", 60, || {
        let all: Vec<_> = agency
            .records(true)
            .into_iter()
            .filter(|r| r["conv"] == conv.as_str())
            .collect();
        // commit, hello, commit, commit(add b), relayed, after, garbage, eviction of b
        (all.len() >= 8).then_some(all)
    });
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>(), "{all:#?}");
    let messages: Vec<_> = all.iter().filter(|r| r["kind"] != "commit").collect();
    let texts: Vec<String> = messages
        .iter()
        .map(|r| agency.record_text(&r["id"]))
        .collect();
    assert_eq!(
        texts,
        ["hello from mallory", "relayed by b", "still flowing", ""]
    );
    let kinds: Vec<&str> = messages
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["application", "withheld", "application", "withheld"]
    );
    assert_eq!(messages[1]["seq"], relayed_seq);
    assert_eq!(messages[3]["seq"], garbage_seq);
    let relayed_note = messages[1]["note"].as_str().unwrap();
    assert!(
        relayed_note.contains("the MLS signature is mallory/")
            && relayed_note.contains("withheld from every member"),
        "{relayed_note}"
    );
    let garbage_note = messages[3]["note"].as_str().unwrap();
    assert!(garbage_note.contains("does not decrypt"), "{garbage_note}");
    assert!(messages[0]["note"].is_null());
    assert_eq!(all[7]["kind"], "commit");
    assert!(all[7]["sender"].as_str().unwrap().starts_with("records/"));
    // The server says the same: both withheld from device b, b blocked,
    // the conversation suspended again; the administrator's decisions kept.
    let status: serde_json::Value =
        serde_json::from_str(&agency.admin(&["conversation", "suspended", "--json"])).unwrap();
    let withheld: Vec<(u64, String)> = status["withheld"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["seq"].as_u64().unwrap(),
                w["device"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        withheld,
        [(relayed_seq, b_device.clone()), (garbage_seq, b_device)]
    );
    assert_eq!(status["suspended"][0]["conv"], conv.as_str());
    // The administrator's two decisions are privileged actions in the
    // archive's transparency log, attributed.
    wait_for("the decisions in the archive's log", 30, || {
        let leaves = agency.leaves("action");
        let decided = |what: &str| {
            leaves
                .iter()
                .filter(|l| l.contains("admin1") && l.contains(what))
                .count()
        };
        (decided("resume conversation") == 1 && decided("unblock device") == 1).then_some(())
    });
    // An auditor's check of the archive passes: withheld is not missing.
    common::ok(agency.records_output(&["verify"]));
}

/// Wait until the records service has reported `conv` (withholding
/// something) and the server suspended it.
fn wait_suspended(agency: &Agency, conv: &str) {
    wait_for("the conversation to be suspended", 60, || {
        let v: serde_json::Value =
            serde_json::from_str(&agency.admin(&["conversation", "suspended", "--json"])).unwrap();
        v["suspended"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["conv"] == conv)
            .then_some(())
    });
}

/// A commit the server's observer cannot fault (its membership tag, which
/// only members can check, is broken): the records member archives it as
/// withheld, nobody receives it, the server blocks the sender and
/// suspends that conversation for good, and capture goes on everywhere
/// else.
#[test]
fn a_commit_only_members_can_fault_suspends_its_conversation_not_the_archive() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    bob.accept_notice();
    let code = agency.admin(&[
        "user",
        "add",
        "mallory",
        "--display",
        "M",
        "--category",
        "staff",
    ]);
    let url = agency.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conv = rt.block_on(async {
        let mut m = Rogue::enroll(&url, "mallory", code.trim()).await;
        m.wire.call(Request::AcknowledgeNotice).await.unwrap();
        let client = m.client(Rules::default());
        let (conv, mut g) = m.create(&client, &["bob"]).await;

        // A probe for the epoch before the broken commit: refused as stale
        // while the records service has not reported, and once it has,
        // refused because mallory's device is blocked; either way it is
        // never appended.
        let probe = g
            .encrypt_application_message(&text("probe"), vec![])
            .unwrap();
        let out = g.commit_builder().build().unwrap();
        let mut broken = out.commit_message.to_bytes().unwrap();
        let last = broken.len() - 1;
        broken[last] ^= 0x01;
        m.submit(
            &conv,
            &MlsMessage::from_bytes(&broken).unwrap(),
            None,
            out.external_commit_group_info.as_ref(),
        )
        .await
        .expect("the server's observer cannot check a membership tag");
        g.apply_pending_commit().unwrap();
        let mut why = None;
        for _ in 0..300 {
            match m.submit(&conv, &probe, None, None).await {
                Err((ErrorCode::DeviceBlocked, w)) => {
                    why = Some(w);
                    break;
                }
                Err((ErrorCode::StaleEpoch, _)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                other => panic!("unexpected answer to the probe: {other:?}"),
            }
        }
        let why = why.expect("the device is blocked");
        assert!(
            why.contains("the records service could not capture"),
            "{why}"
        );
        conv
    });
    // The conversation is suspended, and cannot be resumed: its group moved
    // past a commit the records member could not apply.
    let suspended = agency.admin(&["conversation", "suspended"]);
    assert!(
        suspended.contains(&conv) && suspended.contains("records capture failed"),
        "{suspended}"
    );
    let out = agency.admin_output(&["conversation", "resume", &conv, "--reason", "try"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("start a new conversation"),
        "{}",
        common::stderr(&out)
    );
    let kinds: Vec<String> = agency
        .records(true)
        .iter()
        .filter(|r| r["conv"] == conv.as_str())
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["commit", "withheld"]);

    // Bob's device skips the broken conversation; everything else works.
    bob.ok(&["chat", "read"]);
    let other = alice.create(&["bob"]);
    alice.send(&other, "capture goes on");
    assert_eq!(bob.texts(&other), ["capture goes on"]);
    let captured: Vec<String> = agency
        .records(false)
        .iter()
        .filter(|r| r["conv"] == other.as_str())
        .map(|r| agency.record_text(&r["id"]))
        .collect();
    assert_eq!(captured, ["capture goes on"]);
}
