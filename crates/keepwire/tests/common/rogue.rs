//! A hand-written protocol client driving mls-rs directly, with none of
//! the honest client's checks: the "modified client" of the adversarial
//! tests, and a light device for scale tests (no encrypted store, no
//! passphrase derivation).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
use mls_rs::{CipherSuite, CipherSuiteProvider, CryptoProvider, MlsMessage, MlsRules};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use tokio_tungstenite::tungstenite::Message;

pub const SUITE: CipherSuite = CipherSuite::P256_AES128;

/// MLS rules the modified client can flip to send encrypted handshakes.
#[derive(Clone, Default)]
pub struct Rules {
    pub encrypt_handshakes: Arc<AtomicBool>,
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

pub fn suite() -> impl CipherSuiteProvider {
    AwsLcCryptoProvider::new()
        .cipher_suite_provider(SUITE)
        .unwrap()
}

pub fn mls_client(
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

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub type Refusal = (ErrorCode, String);

/// One WebSocket connection, speaking the protocol by hand.
pub struct Wire {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub next_id: u64,
    pub nonce: Vec<u8>,
    pub pushes: Vec<ServerBody>,
}

impl Wire {
    pub async fn connect(url: &str) -> Self {
        let url = format!("{}/v1/ws", url.replace("http", "ws"));
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        Self::start(ws).await
    }

    /// Connect with a tiny socket receive buffer (no kernel autotuning):
    /// a reader that stops reading then backs up into the server at once,
    /// instead of into megabytes of kernel buffers.
    pub async fn connect_small_buffer(url: &str) -> Self {
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/v1/ws"),
            tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        )
        .await
        .unwrap();
        Self::start(ws).await
    }

    async fn start(
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Self {
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

    pub async fn read(&mut self) -> ServerFrame {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return ServerFrame::from_json(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    pub async fn call(&mut self, req: Request) -> Result<ServerBody, Refusal> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::Text(ClientFrame::new(id, req).to_json().into()))
            .await
            .unwrap();
        self.answer(id).await
    }

    /// One chunk of an upload, as a binary frame; its JSON answer.
    pub async fn chunk(
        &mut self,
        blob: &keepwire_protocol::attachment::BlobId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<ServerBody, Refusal> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = keepwire_protocol::BlobChunk {
            id,
            blob: blob.clone(),
            offset,
            bytes: bytes.to_vec(),
        };
        self.ws
            .send(Message::Binary(frame.encode().into()))
            .await
            .unwrap();
        self.answer(id).await
    }

    /// `blob_fetch`: the binary frame's bytes, or the refusal.
    pub async fn fetch(
        &mut self,
        blob: &keepwire_protocol::attachment::BlobId,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, Refusal> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request::BlobFetch {
            blob: blob.clone(),
            offset,
            len,
        };
        self.ws
            .send(Message::Text(ClientFrame::new(id, req).to_json().into()))
            .await
            .unwrap();
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let data = keepwire_protocol::BlobData::decode(&b).unwrap();
                    if data.id == id {
                        return Ok(data.bytes);
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let f = ServerFrame::from_json(&t).unwrap();
                    match (f.id, f.body) {
                        (Some(i), ServerBody::Error { code, message }) if i == id => {
                            return Err((code, message))
                        }
                        (None, body) => self.pushes.push(body),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// The answer to request `id`; pushes meanwhile are kept.
    async fn answer(&mut self, id: u64) -> Result<ServerBody, Refusal> {
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

    /// Wait for the server's `captured` notice covering `seq` of `conv`
    /// (going live first: notices go to live sessions). Only then do the
    /// other members receive the entry.
    pub async fn wait_captured(&mut self, conv: &str, seq: u64) {
        self.call(Request::Sync).await.unwrap();
        let covered = |b: &ServerBody| matches!(b, ServerBody::Captured { conv: c, upto } if c == conv && *upto >= seq);
        if self.pushes.iter().any(covered) {
            return;
        }
        loop {
            let f = tokio::time::timeout(std::time::Duration::from_secs(60), self.read())
                .await
                .expect("the records service captures it within 60 s");
            if covered(&f.body) {
                return;
            }
            if f.id.is_none() {
                self.pushes.push(f.body);
            }
        }
    }

    pub fn sign(&self, secret: &SignatureSecretKey) -> Vec<u8> {
        suite()
            .sign(secret, &[AUTH_CONTEXT, &self.nonce].concat())
            .unwrap()
    }
}

/// A device of the modified client: its keys, its id, its connection.
pub struct Rogue {
    pub user: String,
    pub device_id: String,
    pub secret: SignatureSecretKey,
    pub public: SignaturePublicKey,
    pub wire: Wire,
}

impl Rogue {
    pub async fn enroll(url: &str, user: &str, code: &str) -> Self {
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

    /// Authenticate `w`, another connection, as this device.
    pub async fn auth_on(&self, w: &mut Wire) -> Result<ServerBody, Refusal> {
        let signature = w.sign(&self.secret);
        w.call(Request::Auth {
            device_id: self.device_id.clone(),
            signature,
        })
        .await
    }

    pub fn identity(&self) -> String {
        device_identity(&self.user, &self.device_id)
    }

    pub fn client(&self, rules: Rules) -> mls_rs::Client<impl mls_rs::client_builder::MlsConfig> {
        mls_client(
            &self.identity(),
            self.secret.clone(),
            self.public.clone(),
            rules,
        )
    }

    /// Upload one key package made by `client` (this device's MLS client).
    pub async fn upload_key_package<C: mls_rs::client_builder::MlsConfig>(
        &mut self,
        client: &mls_rs::Client<C>,
    ) {
        let kp = client
            .generate_key_package_message(
                mls_rs::ExtensionList::new(),
                mls_rs::ExtensionList::new(),
                None,
            )
            .unwrap();
        self.wire
            .call(Request::UploadKeyPackages {
                key_packages: vec![kp.to_bytes().unwrap()],
                last_resort: None,
            })
            .await
            .unwrap();
    }

    pub async fn claim(&mut self, users: &[&str], records: bool) -> Vec<ClaimedKeyPackage> {
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

    /// Create a conversation with `users` and the records member, as an
    /// honest client would, and wait until it is captured (only then may
    /// its creator commit again): its id and this device's group.
    pub async fn create<C: mls_rs::client_builder::MlsConfig + Clone>(
        &mut self,
        client: &mls_rs::Client<C>,
        users: &[&str],
    ) -> (String, mls_rs::Group<C>) {
        let kps = self.claim(users, true).await;
        let mut g = client
            .create_group(
                mls_rs::ExtensionList::new(),
                mls_rs::ExtensionList::new(),
                None,
            )
            .unwrap();
        let conv = hex(g.group_id());
        let epoch0 = g.group_info_message(true).unwrap().to_bytes().unwrap();
        let mut builder = g.commit_builder();
        for kp in &kps {
            builder = builder
                .add_member(MlsMessage::from_bytes(&kp.key_package).unwrap())
                .unwrap();
        }
        let out = builder.build().unwrap();
        self.wire
            .call(Request::CreateConversation {
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
            })
            .await
            .unwrap();
        self.wire.wait_captured(&conv, 1).await;
        g.apply_pending_commit().unwrap();
        (conv, g)
    }

    pub async fn submit(
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

pub fn refused<T: std::fmt::Debug>(r: Result<T, Refusal>, code: ErrorCode, what: &str) {
    match r {
        Err((c, message)) => {
            assert_eq!(c, code, "{what}: refused with {c}: {message}");
            assert!(!message.is_empty(), "{what}: the refusal says why");
        }
        Ok(v) => panic!("{what}: accepted ({v:?}) but must be refused with {code}"),
    }
}

pub fn text(t: &str) -> Vec<u8> {
    keepwire_protocol::content::Content::text(t, None, false, 0)
        .encode()
        .unwrap()
}
