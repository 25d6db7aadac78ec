//! The core driven directly, without sockets or threads: devices are
//! sessions, requests go through [`Core::handle`] and [`Core::answer`],
//! the harness carries out the core's effects itself (frames into each
//! session's inbox, entries written by a second store connection standing
//! in for the log writer), and members' MLS clients make real messages. Each refusal a modified client can meet is a row of
//! a table, checked in milliseconds (the end-to-end suite, `adversarial.rs`,
//! drives the same refusals through the real binary).

// The members' MLS clients live here, in the tests; the server's own code
// may not build one (clippy.toml).
#![allow(clippy::disallowed_types)]

use keepwire_protocol::{
    ErrorCode, ProtocolError, Request, ServerBody, AUTH_CONTEXT, RECORDS_USER,
};
use mls_rs::client_builder::MlsConfig;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::{
    CommitDirection, CommitOptions, CommitSource, EncryptionOptions, ProposalBundle,
};
use mls_rs::{
    CipherSuite, CipherSuiteProvider, CryptoProvider, ExtensionList, Group, MlsMessage, MlsRules,
};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;

use std::collections::{HashMap, VecDeque};

use super::{Core, Effect, Job, Limits, Session};
use crate::store::{ServerStore, SqliteStore as Store};

mod attachments;
mod forgeries;
mod ordering;
mod published;

const SUITE: CipherSuite = CipherSuite::P256_AES128;

/// The time requests are handled at (enrolment codes are checked against
/// it, so it is the real time).
fn now() -> u64 {
    keepwire_protocol::clock::Clock::system().now_ms()
}

/// MLS rules of an honest client (external joins allowed, the tree in the
/// GroupInfo), or of one that encrypts its handshakes.
#[derive(Clone, Default)]
struct Rules {
    encrypt_handshakes: bool,
}

impl MlsRules for Rules {
    type Error = std::convert::Infallible;

    fn filter_proposals(
        &self,
        _: CommitDirection,
        _: CommitSource,
        _: &mls_rs::group::Roster,
        _: &mls_rs::group::GroupContext,
        proposals: ProposalBundle,
    ) -> Result<ProposalBundle, Self::Error> {
        Ok(proposals)
    }

    fn commit_options(
        &self,
        _: &mls_rs::group::Roster,
        _: &mls_rs::group::GroupContext,
        _: &ProposalBundle,
    ) -> Result<CommitOptions, Self::Error> {
        Ok(CommitOptions::new()
            .with_allow_external_commit(true)
            .with_ratchet_tree_extension(true))
    }

    fn encryption_options(
        &self,
        _: &mls_rs::group::Roster,
        _: &mls_rs::group::GroupContext,
    ) -> Result<EncryptionOptions, Self::Error> {
        Ok(EncryptionOptions::new(
            self.encrypt_handshakes,
            mls_rs::client_builder::PaddingMode::None,
        ))
    }
}

/// An enrolled device: its connection to the core and its signing keys.
struct Dev {
    session: Session,
    secret: mls_rs::crypto::SignatureSecretKey,
    public: mls_rs::crypto::SignaturePublicKey,
}

impl Dev {
    fn client(&self, rules: Rules) -> mls_rs::Client<impl MlsConfig> {
        let id = self.session.device.as_ref().unwrap();
        let identity = keepwire_protocol::device_identity(&id.user, &id.device_id);
        mls_rs::Client::builder()
            .crypto_provider(AwsLcCryptoProvider::new())
            .identity_provider(BasicIdentityProvider::new())
            .mls_rules(rules)
            .signing_identity(
                SigningIdentity::new(
                    BasicCredential::new(identity.into_bytes()).into_credential(),
                    self.public.clone(),
                ),
                self.secret.clone(),
                SUITE,
            )
            .build()
    }
}

fn suite() -> impl CipherSuiteProvider {
    AwsLcCryptoProvider::new()
        .cipher_suite_provider(SUITE)
        .unwrap()
}

struct World {
    core: Core,
    next_session: u64,
    /// Frames the core sent each session, not yet read.
    inbox: HashMap<u64, VecDeque<String>>,
    /// The log writer's connection to the store.
    writer: Box<dyn ServerStore>,
    /// Entries waiting for the log writer, when the test steps it by hand
    /// ([`World::with_writer`]); otherwise each is written at once.
    held: Option<Vec<Job>>,
    /// What keeps the store alive: its directory, or its PostgreSQL schema.
    _keep: Box<dyn std::any::Any>,
}

thread_local! {
    static POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `test` with its core on a PostgreSQL store (a scratch schema on the
/// test server) instead of SQLite: the same table, the other backend.
fn on_postgres(test: fn()) {
    POSTGRES.with(|p| p.set(true));
    test();
}

impl World {
    fn new() -> Self {
        let (keep, store): (Box<dyn std::any::Any>, Box<dyn crate::store::ServerStore>) =
            if POSTGRES.with(|p| p.get()) {
                let db = keepwire_schema::pg::scratch::Scratch::new()
                    .expect("a PostgreSQL server for the tests (KEEPWIRE_TEST_POSTGRES)");
                let store = crate::store::PgStore::open(&db.url).unwrap();
                (Box::new(db), Box::new(store))
            } else {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(&dir.path().join("server.db")).unwrap();
                (Box::new(dir), Box::new(store))
            };
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let writer = store.reopen().unwrap().unwrap();
        let core = Core::open(store, key, Limits::default(), now()).unwrap();
        Self {
            core,
            next_session: 1,
            inbox: HashMap::new(),
            writer,
            held: None,
            _keep: keep,
        }
    }

    fn session(&mut self) -> Session {
        self.next_session += 1;
        Session {
            id: self.next_session,
            nonce: vec![self.next_session as u8; 32],
            device: None,
        }
    }

    /// Carry out the core's effects, in order, as the shell does.
    fn pump(&mut self) {
        for effect in self.core.take_effects() {
            match effect {
                Effect::Send { session, text } => {
                    self.inbox.entry(session).or_default().push_back(text)
                }
                Effect::Write(job) => match &mut self.held {
                    Some(held) => held.push(*job),
                    None => {
                        crate::log_writer::write_batch(
                            &mut *self.writer,
                            &[&*job],
                            &mut Default::default(),
                        )
                        .unwrap();
                        self.durable(vec![*job]);
                    }
                },
                Effect::Collect(passes) => {
                    self.writer.collect(&passes).unwrap();
                }
            }
        }
    }

    /// Handle `req` and answer it, as the WebSocket shell does.
    fn request(
        &mut self,
        session: &mut Session,
        req: Request,
    ) -> Result<ServerBody, ProtocolError> {
        let result = self.core.handle(session, req, now());
        let reply = match &result {
            Ok(body) => keepwire_protocol::ServerFrame::response(1, body.clone()),
            Err(e) => keepwire_protocol::ServerFrame::error(Some(1), e),
        };
        self.core
            .answer(session.id, reply.to_json(), || "failed".to_string());
        self.pump();
        result
    }

    /// A user (created if new) with a freshly enrolled device.
    fn device(&mut self, user: &str, category: &str) -> Dev {
        let store = self.core.store();
        let at = now();
        if store.user(user).unwrap().is_none() {
            store.add_user(user, user, category, at).unwrap();
        }
        let code = store.new_enrolment_code(user, at).unwrap();
        let mut session = self.session();
        let (secret, public) = suite().signature_key_generate().unwrap();
        let signature = suite()
            .sign(&secret, &[AUTH_CONTEXT, &session.nonce].concat())
            .unwrap();
        self.request(
            &mut session,
            Request::Enroll {
                code,
                signature_key: public.as_bytes().to_vec(),
                signature,
            },
        )
        .unwrap();
        Dev {
            session,
            secret,
            public,
        }
    }

    fn call(&mut self, dev: &mut Dev, req: Request) -> Result<ServerBody, ProtocolError> {
        self.request(&mut dev.session, req)
    }

    fn upload<C: MlsConfig>(&mut self, dev: &mut Dev, client: &mls_rs::Client<C>) {
        let kp = client
            .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap();
        self.call(
            dev,
            Request::UploadKeyPackages {
                key_packages: vec![kp.to_bytes().unwrap()],
                last_resort: None,
            },
        )
        .unwrap();
    }

    fn claim(&mut self, dev: &mut Dev, users: &[&str], records: bool) -> Vec<MlsMessage> {
        match self
            .call(
                dev,
                Request::ClaimKeyPackages {
                    users: users.iter().map(|u| u.to_string()).collect(),
                    include_records: records,
                },
            )
            .unwrap()
        {
            ServerBody::KeyPackages { packages } => packages
                .iter()
                .map(|p| MlsMessage::from_bytes(&p.key_package).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }
}

/// The creation request for a group `g` of one member adding `kps`.
fn creation<C: MlsConfig>(g: &mut Group<C>, kps: &[MlsMessage]) -> Request {
    let epoch0 = g.group_info_message(true).unwrap().to_bytes().unwrap();
    let mut b = g.commit_builder();
    for kp in kps {
        b = b.add_member(kp.clone()).unwrap();
    }
    let out = b.build().unwrap();
    Request::CreateConversation {
        conv: hex::encode(g.group_id()),
        group_info: epoch0,
        commit: out.commit_message.to_bytes().unwrap(),
        welcome: out.welcome_messages[0].to_bytes().unwrap(),
        next_group_info: out.external_commit_group_info.unwrap().to_bytes().unwrap(),
    }
}

fn submit(conv: &str, message: &MlsMessage, group_info: Option<&MlsMessage>) -> Request {
    Request::Submit {
        conv: conv.to_string(),
        message: message.to_bytes().unwrap(),
        welcome: None,
        next_group_info: group_info.map(|g| g.to_bytes().unwrap()),
    }
}

fn refused<T: std::fmt::Debug>(r: Result<T, ProtocolError>, code: ErrorCode, what: &str) {
    match r {
        Err(e) => {
            assert_eq!(
                e.code, code,
                "{what}: refused with {}: {}",
                e.code, e.message
            );
            assert!(!e.message.is_empty(), "{what}: the refusal says why");
        }
        Ok(v) => panic!("{what}: accepted ({v:?}), must be refused with {code}"),
    }
}

#[test]
fn on_postgres_every_refusal_a_modified_client_meets_comes_with_its_code() {
    on_postgres(every_refusal_a_modified_client_meets_comes_with_its_code);
}

#[test]
fn on_postgres_a_device_syncing_during_a_group_commit_gets_each_entry_once_in_order() {
    on_postgres(ordering::a_device_syncing_during_a_group_commit_gets_each_entry_once_in_order);
}

#[test]
fn every_refusal_a_modified_client_meets_comes_with_its_code() {
    let mut w = World::new();
    let mut mallory = w.device("mallory", "staff");
    let mut bob = w.device("bob", "staff");
    let mut records = w.device(RECORDS_USER, "records");
    let cm = mallory.client(Rules::default());
    let cb = bob.client(Rules::default());
    let cr = records.client(Rules::default());
    for _ in 0..6 {
        w.upload(&mut bob, &cb);
        w.upload(&mut records, &cr);
    }

    // Before the records notice is acknowledged, nothing is sent.
    let kps = w.claim(&mut mallory, &["bob"], true);
    let mut g = cm
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    let create = creation(&mut g, &kps);
    refused(
        w.call(&mut mallory, create),
        ErrorCode::NoticeNotAcknowledged,
        "creating before the records notice",
    );
    w.call(&mut mallory, Request::AcknowledgeNotice).unwrap();

    // A conversation without the records member.
    let kps = w.claim(&mut mallory, &["bob"], false);
    let mut g0 = cm
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    refused(
        w.call(&mut mallory, creation(&mut g0, &kps)),
        ErrorCode::RecordsMemberMissing,
        "a conversation without the records member",
    );

    // The well-formed one, captured.
    let kps = w.claim(&mut mallory, &["bob"], true);
    let mut g = cm
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    let conv = hex::encode(g.group_id());
    w.call(&mut mallory, creation(&mut g, &kps)).unwrap();
    g.apply_pending_commit().unwrap();
    let archived = |from, to| Request::Archived {
        conv: conv.clone(),
        from,
        to,
        withheld: Vec::new(),
    };
    w.call(&mut records, archived(1, 1)).unwrap();

    let records_leaf = g
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
    let mut table: Vec<(&str, Request, ErrorCode)> = Vec::new();
    // Removing the records member.
    let out = g
        .commit_builder()
        .remove_member(records_leaf)
        .unwrap()
        .build()
        .unwrap();
    table.push((
        "a commit removing the records member",
        submit(
            &conv,
            &out.commit_message,
            out.external_commit_group_info.as_ref(),
        ),
        ErrorCode::RecordsMemberMissing,
    ));
    g.clear_pending_commit();
    // A commit without the GroupInfo new devices need.
    let out = g.commit_builder().build().unwrap();
    table.push((
        "a commit without next_group_info",
        submit(&conv, &out.commit_message, None),
        ErrorCode::BadFrame,
    ));
    g.clear_pending_commit();
    // A commit sent encrypted, which the server could not follow.
    let cme = mallory.client(Rules {
        encrypt_handshakes: true,
    });
    let kps = w.claim(&mut mallory, &["bob"], true);
    let mut ge = cme
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    table.push((
        "an encrypted commit",
        creation(&mut ge, &kps),
        ErrorCode::EncryptedHandshake,
    ));
    // A ReInit proposal: a new group without the records member.
    let reinit = g
        .propose_reinit(
            None,
            g.protocol_version(),
            SUITE,
            ExtensionList::new(),
            vec![],
        )
        .unwrap();
    table.push((
        "a ReInit proposal",
        submit(&conv, &reinit, None),
        ErrorCode::ReinitRefused,
    ));
    g.clear_proposal_cache();
    // The swap: remove the records member's leaf and add a fresh key
    // package of the same records device in one commit. By name nobody
    // left and nobody came; by leaf the records member is gone.
    let fresh = w.claim(&mut mallory, &[], true);
    let out = g
        .commit_builder()
        .remove_member(records_leaf)
        .unwrap()
        .add_member(fresh[0].clone())
        .unwrap()
        .build()
        .unwrap();
    table.push((
        "swapping the records member's leaf for a fresh one",
        Request::Submit {
            conv: conv.clone(),
            message: out.commit_message.to_bytes().unwrap(),
            welcome: out.welcome_messages.first().map(|w| w.to_bytes().unwrap()),
            next_group_info: out
                .external_commit_group_info
                .as_ref()
                .map(|g| g.to_bytes().unwrap()),
        },
        ErrorCode::RecordsMemberMissing,
    ));
    g.clear_pending_commit();
    // An application message over the size limit.
    let big = g
        .encrypt_application_message(&vec![b'x'; 100 * 1024], vec![])
        .unwrap();
    table.push((
        "an oversize message",
        submit(&conv, &big, None),
        ErrorCode::TooLarge,
    ));
    // A message for a conversation that does not exist.
    let m = g
        .encrypt_application_message(b"to nowhere", vec![])
        .unwrap();
    table.push((
        "a message to an unknown conversation",
        submit(&"00".repeat(16), &m, None),
        ErrorCode::UnknownConversation,
    ));
    // Records-only requests from a member.
    table.push((
        "an archived range from a device that is not the records service",
        archived(1, 1),
        ErrorCode::Unauthorized,
    ));
    // Too many users claimed at once.
    table.push((
        "a claim of 200,000 users",
        Request::ClaimKeyPackages {
            users: (0..200_000).map(|i| format!("u{i}")).collect(),
            include_records: true,
        },
        ErrorCode::TooLarge,
    ));
    // Enrolling or authenticating again on an authenticated connection.
    table.push((
        "a second authentication on one connection",
        Request::Auth {
            device_id: "x".into(),
            signature: vec![0; 64],
        },
        ErrorCode::BadFrame,
    ));
    for (what, req, code) in table {
        refused(w.call(&mut mallory, req), code, what);
    }

    // A device outside the conversation acknowledging its entries, or
    // relaying a member's message.
    let mut eve = w.device("eve", "staff");
    w.call(&mut eve, Request::AcknowledgeNotice).unwrap();
    let relayed = g.encrypt_application_message(b"relayed", vec![]).unwrap();
    refused(
        w.call(&mut eve, submit(&conv, &relayed, None)),
        ErrorCode::NotMember,
        "a non-member relaying a member's message",
    );
    refused(
        w.call(
            &mut eve,
            Request::Ack {
                conv: conv.clone(),
                seq: 1,
            },
        ),
        ErrorCode::NotMember,
        "an acknowledgement from a device outside the conversation",
    );
    // The records service acknowledges with `archived`, never `ack`.
    refused(
        w.call(
            &mut records,
            Request::Ack {
                conv: conv.clone(),
                seq: 1,
            },
        ),
        ErrorCode::BadFrame,
        "an ack from the records service",
    );
    // Archived ranges that skip entries certify nothing.
    refused(
        w.call(&mut records, archived(3, 3)),
        ErrorCode::BadFrame,
        "an archived range past the durable log",
    );
    // Unauthenticated requests.
    let mut anon = w.session();
    refused(
        w.request(&mut anon, Request::Sync),
        ErrorCode::Unauthorized,
        "a request before authenticating",
    );

    // A legitimate message goes through, then a message for the epoch
    // before a commit that has since landed is stale.
    let hello = g.encrypt_application_message(b"hello", vec![]).unwrap();
    w.call(&mut mallory, submit(&conv, &hello, None)).unwrap();
    let stale = g.encrypt_application_message(b"stale", vec![]).unwrap();
    w.call(&mut records, archived(2, 2)).unwrap();
    let out = g.commit_builder().build().unwrap();
    w.call(
        &mut mallory,
        submit(
            &conv,
            &out.commit_message,
            out.external_commit_group_info.as_ref(),
        ),
    )
    .unwrap();
    refused(
        w.call(&mut mallory, submit(&conv, &stale, None)),
        ErrorCode::StaleEpoch,
        "a message for a past epoch",
    );
}

impl World {
    /// A world whose log writer the test steps by hand: appends wait until
    /// the test writes them ([`World::write`]) and then releases their
    /// pushes and answers ([`World::durable`]), so a request can be made
    /// to fall between the two.
    fn with_writer() -> Self {
        let mut w = Self::new();
        w.held = Some(Vec::new());
        w
    }

    /// The group commit: what was appended is written (durable), but its
    /// pushes have not gone out yet.
    fn write(&mut self) -> Vec<Job> {
        let batch = self.held.as_mut().map(std::mem::take).unwrap_or_default();
        let jobs: Vec<&Job> = batch.iter().collect();
        crate::log_writer::write_batch(&mut *self.writer, &jobs, &mut Default::default()).unwrap();
        batch
    }

    /// The pushes of a written batch go out, each entry's before its
    /// answer, as the log writer sends them.
    fn durable(&mut self, batch: Vec<Job>) {
        for job in batch {
            let answer = self.core.durable(job);
            self.pump();
            if let Some(a) = answer {
                self.inbox.entry(a.session).or_default().push_back(a.reply);
            }
        }
    }

    fn flush(&mut self) {
        let batch = self.write();
        self.durable(batch);
    }

    /// The sequence numbers of the entries of `conv` pushed to `dev` so
    /// far, with a `0` for each Welcome.
    fn delivered(&mut self, dev: &Dev, conv: &str) -> Vec<u64> {
        let mut out = Vec::new();
        let inbox = self.inbox.entry(dev.session.id).or_default();
        while let Some(text) = inbox.pop_front() {
            match keepwire_protocol::ServerFrame::from_json(&text)
                .unwrap()
                .body
            {
                ServerBody::Deliver(d) if d.conv == conv => out.push(d.seq),
                ServerBody::WelcomeMessage { conv: c, .. } if c == conv => out.push(0),
                _ => {}
            }
        }
        out
    }
}
