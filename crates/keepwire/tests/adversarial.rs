//! A modified client: it speaks the wire protocol itself and drives mls-rs
//! directly, without the honest client's checks, and attempts every action
//! the server must refuse. Each refusal must carry its precise code, and
//! nothing refused may be delivered or captured; what the server cannot
//! see inside (a ciphertext that does not decrypt, another member's
//! message relayed) must not stall anyone and is kept as a noted record.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{wait_for, Agency};
use futures_util::{SinkExt, StreamExt};
use keepwire_protocol::{
    device_identity, ClaimedKeyPackage, ClientFrame, ErrorCode, Request, ServerBody, ServerFrame,
    AUTH_CONTEXT,
};
use mls_rs::client_builder::PaddingMode;
use mls_rs::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs::group::{GroupContext, Roster};
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::{
    CommitDirection, CommitOptions, CommitSource, EncryptionOptions, ProposalBundle,
};
use mls_rs::{
    CipherSuite, CipherSuiteProvider, CryptoProvider, ExtensionList, MlsMessage, MlsRules,
};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use tokio_tungstenite::tungstenite::Message;

const SUITE: CipherSuite = CipherSuite::P256_AES128;

/// MLS rules the modified client can flip to send encrypted handshakes.
#[derive(Clone, Default)]
struct Rules {
    encrypt_handshakes: Arc<AtomicBool>,
}

impl MlsRules for Rules {
    type Error = std::convert::Infallible;

    fn filter_proposals(
        &self,
        _: CommitDirection,
        _: CommitSource,
        _: &Roster,
        _: &GroupContext,
        proposals: ProposalBundle,
    ) -> Result<ProposalBundle, Self::Error> {
        Ok(proposals)
    }

    fn commit_options(
        &self,
        _: &Roster,
        _: &GroupContext,
        _: &ProposalBundle,
    ) -> Result<CommitOptions, Self::Error> {
        Ok(CommitOptions::new()
            .with_allow_external_commit(true)
            .with_ratchet_tree_extension(true))
    }

    fn encryption_options(
        &self,
        _: &Roster,
        _: &GroupContext,
    ) -> Result<EncryptionOptions, Self::Error> {
        Ok(EncryptionOptions::new(
            self.encrypt_handshakes.load(Ordering::SeqCst),
            PaddingMode::None,
        ))
    }
}

fn suite() -> impl CipherSuiteProvider {
    AwsLcCryptoProvider::new()
        .cipher_suite_provider(SUITE)
        .unwrap()
}

fn mls_client(
    identity: &str,
    secret: SignatureSecretKey,
    public: SignaturePublicKey,
    rules: Rules,
) -> mls_rs::Client<impl mls_rs::client_builder::MlsConfig> {
    let credential = BasicCredential::new(identity.as_bytes().to_vec());
    mls_rs::Client::builder()
        .crypto_provider(AwsLcCryptoProvider::new())
        .identity_provider(BasicIdentityProvider::new())
        .mls_rules(rules)
        .signing_identity(
            SigningIdentity::new(credential.into_credential(), public),
            secret,
            SUITE,
        )
        .build()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type Refusal = (ErrorCode, String);

/// One WebSocket connection, speaking the protocol by hand.
struct Wire {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    nonce: Vec<u8>,
    pushes: Vec<ServerBody>,
}

impl Wire {
    async fn connect(url: &str) -> Self {
        let url = format!("{}/v1/ws", url.replace("http", "ws"));
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut w = Wire {
            ws,
            next_id: 1,
            nonce: Vec::new(),
            pushes: Vec::new(),
        };
        match w.read().await.body {
            ServerBody::Challenge { nonce, .. } => w.nonce = nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
        w
    }

    async fn read(&mut self) -> ServerFrame {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return ServerFrame::from_json(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    async fn call(&mut self, req: Request) -> Result<ServerBody, Refusal> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::Text(ClientFrame::new(id, req).to_json().into()))
            .await
            .unwrap();
        loop {
            let f = self.read().await;
            match f.id {
                Some(i) if i == id => {
                    return match f.body {
                        ServerBody::Error { code, message } => Err((code, message)),
                        b => Ok(b),
                    }
                }
                Some(_) => continue,
                None => self.pushes.push(f.body),
            }
        }
    }

    fn sign(&self, secret: &SignatureSecretKey) -> Vec<u8> {
        suite()
            .sign(secret, &[AUTH_CONTEXT, &self.nonce].concat())
            .unwrap()
    }
}

/// A device of the modified client: its keys, its id, its connection.
struct Rogue {
    user: String,
    device_id: String,
    secret: SignatureSecretKey,
    public: SignaturePublicKey,
    wire: Wire,
}

impl Rogue {
    async fn enroll(url: &str, user: &str, code: &str) -> Self {
        let (secret, public) = suite().signature_key_generate().unwrap();
        let mut wire = Wire::connect(url).await;
        let signature = wire.sign(&secret);
        let body = wire
            .call(Request::Enroll {
                code: code.to_string(),
                signature_key: public.as_bytes().to_vec(),
                signature,
            })
            .await
            .unwrap();
        let ServerBody::Authenticated { device_id, .. } = body else {
            panic!("not authenticated: {body:?}")
        };
        Rogue {
            user: user.to_string(),
            device_id,
            secret,
            public,
            wire,
        }
    }

    fn identity(&self) -> String {
        device_identity(&self.user, &self.device_id)
    }

    fn client(&self, rules: Rules) -> mls_rs::Client<impl mls_rs::client_builder::MlsConfig> {
        mls_client(
            &self.identity(),
            self.secret.clone(),
            self.public.clone(),
            rules,
        )
    }

    async fn claim(&mut self, users: &[&str], records: bool) -> Vec<ClaimedKeyPackage> {
        match self
            .wire
            .call(Request::ClaimKeyPackages {
                users: users.iter().map(|u| u.to_string()).collect(),
                include_records: records,
            })
            .await
            .unwrap()
        {
            ServerBody::KeyPackages { packages } => packages,
            other => panic!("{other:?}"),
        }
    }

    async fn submit(
        &mut self,
        conv: &str,
        message: &MlsMessage,
        welcome: Option<&MlsMessage>,
        group_info: Option<&MlsMessage>,
    ) -> Result<u64, Refusal> {
        match self
            .wire
            .call(Request::Submit {
                conv: conv.to_string(),
                message: message.to_bytes().unwrap(),
                welcome: welcome.map(|w| w.to_bytes().unwrap()),
                next_group_info: group_info.map(|g| g.to_bytes().unwrap()),
            })
            .await?
        {
            ServerBody::Receipt(r) => Ok(r.seq),
            other => panic!("{other:?}"),
        }
    }
}

fn refused<T: std::fmt::Debug>(r: Result<T, Refusal>, code: ErrorCode, what: &str) {
    match r {
        Err((c, message)) => {
            assert_eq!(c, code, "{what}: refused with {c}: {message}");
            assert!(!message.is_empty(), "{what}: the refusal says why");
        }
        Ok(v) => panic!("{what}: accepted ({v:?}) but must be refused with {code}"),
    }
}

fn text(t: &str) -> Vec<u8> {
    keepwire_protocol::content::Content::text(t, None, false, 0)
        .encode()
        .unwrap()
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
    let conv = rt.block_on(async {
        let mut a = Rogue::enroll(&url, "mallory", code_a.trim()).await;
        let mut b = Rogue::enroll(&url, "mallory", code_b.trim()).await;
        let mut eve = Rogue::enroll(&url, "eve", code_e.trim()).await;
        eve.wire.call(Request::AcknowledgeNotice).await.unwrap();
        let rules = Rules::default();
        let ca = a.client(rules.clone());
        let cb = b.client(Rules::default());
        for (c, r) in [(&ca, &mut a), (&cb, &mut b)] {
            let kp = c
                .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
                .unwrap();
            r.wire
                .call(Request::UploadKeyPackages {
                    key_packages: vec![kp.to_bytes().unwrap()],
                    last_resort: None,
                })
                .await
                .unwrap();
        }

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

        // Now the acknowledged, well-formed creation goes through.
        a.wire.call(create).await.unwrap();
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
        a.submit(&conv, &hello, None, None).await.unwrap();

        // A message for an epoch that has passed.
        let stale = g
            .encrypt_application_message(&text("stale"), vec![])
            .unwrap();
        let out = g.commit_builder().build().unwrap();
        a.submit(
            &conv,
            &out.commit_message,
            None,
            out.external_commit_group_info.as_ref(),
        )
        .await
        .unwrap();
        g.apply_pending_commit().unwrap();
        refused(
            a.submit(&conv, &stale, None, None).await,
            ErrorCode::StaleEpoch,
            "a message for a past epoch",
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

        // What the server cannot see inside is accepted, but must neither
        // stall anyone nor go unrecorded: a message of A relayed by B, and a
        // ciphertext that does not decrypt.
        let relayed = g
            .encrypt_application_message(&text("relayed by b"), vec![])
            .unwrap();
        b.submit(&conv, &relayed, None, None).await.unwrap();
        let mut garbage = gb
            .encrypt_application_message(&text("garbage"), vec![])
            .unwrap()
            .to_bytes()
            .unwrap();
        let last = garbage.len() - 1;
        garbage[last] ^= 0xff;
        b.submit(
            &conv,
            &MlsMessage::from_bytes(&garbage).unwrap(),
            None,
            None,
        )
        .await
        .unwrap();
        let after = g
            .encrypt_application_message(&text("still flowing"), vec![])
            .unwrap();
        a.submit(&conv, &after, None, None).await.unwrap();

        // A revoked device: refused on its open connection and on a new one.
        common::ok(common::keepwire(
            &[
                "admin",
                "--data-dir",
                agency.data_dir(),
                "device",
                "revoke",
                &b.device_id,
            ],
            &[],
        ));
        let again = gb
            .encrypt_application_message(&text("revoked"), vec![])
            .unwrap();
        refused(
            b.submit(&conv, &again, None, None).await,
            ErrorCode::DeviceRevoked,
            "a revoked device's message",
        );
        let mut fresh = Wire::connect(&url).await;
        let signature = fresh.sign(&b.secret);
        refused(
            fresh
                .call(Request::Auth {
                    device_id: b.device_id.clone(),
                    signature,
                })
                .await,
            ErrorCode::DeviceRevoked,
            "a revoked device connecting",
        );
        conv
    });

    // Bob's honest device: exactly what was accepted, nothing refused, and
    // the undecryptable entry skipped without stalling what followed.
    assert_eq!(
        bob.texts(&conv),
        ["hello from mallory", "relayed by b", "still flowing"]
    );
    // The archive: every accepted entry, in a gap-free sequence, and none
    // of the refused ones.
    let all = wait_for("capture of every accepted entry", 60, || {
        let all: Vec<_> = agency
            .records(true)
            .into_iter()
            .filter(|r| r["conv"] == conv.as_str())
            .collect();
        // commit, hello, commit, commit(add b), relayed, garbage, after, eviction of b
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
        ["hello from mallory", "relayed by b", "", "still flowing"]
    );
    assert_eq!(messages[2]["kind"], "undecryptable");
    assert!(messages[2]["note"]
        .as_str()
        .unwrap()
        .contains("does not decrypt"));
    let relayed_note = messages[1]["note"].as_str().unwrap();
    assert!(
        relayed_note.contains("the MLS signature is mallory/"),
        "{relayed_note}"
    );
    assert!(messages[0]["note"].is_null());
    assert_eq!(all[7]["kind"], "commit");
    assert!(all[7]["sender"].as_str().unwrap().starts_with("records/"));
}
