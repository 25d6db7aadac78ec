//! A device as a state machine over frames: requests out, responses and
//! deliveries in. The caller (the binary's network shell, or the records
//! service) owns the socket.
//!
//! Ordering rule: a conversation's log is processed strictly in the
//! server's sequence order. The device remembers, per conversation, the
//! last sequence number it has fully processed (its cursor); the cursor and
//! the MLS state it corresponds to are written in one transaction.

use std::collections::HashMap;
use std::path::Path;

use keepwire_protocol::content::Content;
use keepwire_protocol::{
    device_identity, parse_device_identity, ClaimedKeyPackage, Delivery, Request, AUTH_CONTEXT,
};
use mls_rs::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs::extension::recommended::LastResortKeyPackageExt;
use mls_rs::group::ReceivedMessage;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::{CipherSuiteProvider, CryptoProvider, ExtensionList, MlsMessage};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;

use crate::mls::{
    mls_rules, GroupStore, KeyPackageStore, MlsClient, MlsConfig, MlsGroup, CIPHER_SUITE,
};
use crate::{ClientError, Store};

const STORE_FILE: &str = "device.db";

mod membership;

fn suite() -> impl CipherSuiteProvider {
    // Invariant: the aws-lc provider supports P256_AES128 in every build.
    AwsLcCryptoProvider::new()
        .cipher_suite_provider(CIPHER_SUITE)
        .expect("P256_AES128 is supported")
}

/// Sign `AUTH_CONTEXT || nonce` with a device key: how a device proves
/// itself on every connection.
/// A device's sign-in, apart from the device ([`Device::authenticator`]).
#[derive(Clone)]
pub struct Authenticator {
    device_id: String,
    secret: SignatureSecretKey,
}

impl Authenticator {
    /// The `auth` request answering a connection's `nonce`.
    pub fn auth_request(&self, nonce: &[u8]) -> Result<Request, ClientError> {
        Ok(Request::Auth {
            device_id: self.device_id.clone(),
            signature: sign_challenge(&self.secret, nonce)?,
        })
    }
}

pub fn sign_challenge(secret: &SignatureSecretKey, nonce: &[u8]) -> Result<Vec<u8>, ClientError> {
    let data = [AUTH_CONTEXT, nonce].concat();
    suite()
        .sign(secret, &data)
        .map_err(|e| ClientError::Store(format!("signing failed: {e:?}")))
}

/// A fresh device signing key pair: what a device that only needs to
/// authenticate (an idle connection in the load generator) carries.
pub fn new_signature_key() -> Result<(SignatureSecretKey, Vec<u8>), ClientError> {
    let (secret, public) = suite()
        .signature_key_generate()
        .map_err(|e| ClientError::Store(format!("key generation failed: {e:?}")))?;
    Ok((secret, public.as_bytes().to_vec()))
}

/// A device that has keys but has not redeemed an enrolment code yet.
pub struct PendingDevice {
    store: Store,
    path: std::path::PathBuf,
    secret: SignatureSecretKey,
    public: SignaturePublicKey,
}

impl PendingDevice {
    /// Create a new device store in `dir` (which must not hold one yet).
    pub fn create(dir: &Path, passphrase: &str) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ClientError::Store(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(STORE_FILE);
        if path.exists() {
            return Err(ClientError::Store(format!(
                "{} already holds a device",
                dir.display()
            )));
        }
        Self::with_store(Store::open(&path, passphrase)?, path)
    }

    /// A device that lives in memory only ([`Store::in_memory`]): the load
    /// generator's devices, which run the same code as real ones.
    pub fn in_memory() -> Result<Self, ClientError> {
        Self::with_store(Store::in_memory()?, std::path::PathBuf::new())
    }

    fn with_store(store: Store, path: std::path::PathBuf) -> Result<Self, ClientError> {
        let (secret, public) = new_signature_key()?;
        let public = SignaturePublicKey::new(public);
        store.put("identity", b"secret", secret.as_bytes())?;
        store.put("identity", b"public", public.as_bytes())?;
        Ok(Self {
            store,
            path,
            secret,
            public,
        })
    }

    /// The server refused enrolment: remove the store, which holds nothing
    /// but this attempt's fresh keys.
    pub fn abandon(self) -> Result<(), ClientError> {
        drop(self.store);
        if self.path.as_os_str().is_empty() {
            return Ok(()); // in memory: nothing on disk
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ClientError::Store(format!("cannot remove {p:?}: {e}"))),
            }
        }
        Ok(())
    }

    pub fn enroll_request(&self, code: &str, nonce: &[u8]) -> Result<Request, ClientError> {
        Ok(Request::Enroll {
            code: code.to_string(),
            signature_key: self.public.as_bytes().to_vec(),
            signature: sign_challenge(&self.secret, nonce)?,
        })
    }

    /// The server accepted the code and named the device.
    pub fn complete(self, user: &str, device_id: &str) -> Result<Device, ClientError> {
        self.store.put("identity", b"user", user.as_bytes())?;
        self.store
            .put("identity", b"device_id", device_id.as_bytes())?;
        Device::from_store(self.store)
    }
}

/// What processing one delivery produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Already processed (redelivery after a crash or reconnect).
    Duplicate,
    /// This device's own message, already handled when it was sent.
    Own,
    Application {
        conv: String,
        seq: u64,
        epoch: u64,
        /// `user/device` from the sender's MLS leaf, signature verified.
        sender: String,
        /// Every member identity at this epoch.
        participants: Vec<String>,
        content: Vec<u8>,
        /// The message's MLS `authenticated_data`: sent in the clear,
        /// authenticated with it — the blobs it carries
        /// ([`keepwire_protocol::attachment::BlobList`]).
        authenticated_data: Vec<u8>,
    },
    /// A commit changed the roster; `participants` is the new one.
    Commit {
        conv: String,
        seq: u64,
        epoch: u64,
        participants: Vec<String>,
    },
    Proposal {
        conv: String,
        seq: u64,
    },
    /// An application message the server accepted (it cannot look inside)
    /// that does not decrypt or verify here: a modified or broken sender.
    /// It is skipped, never allowed to stall the conversation.
    Undecryptable {
        conv: String,
        seq: u64,
        reason: String,
    },
}

pub struct Device {
    store: Store,
    group_store: GroupStore,
    client: MlsClient,
    secret: SignatureSecretKey,
    pub user: String,
    pub device_id: String,
    groups: HashMap<String, MlsGroup>,
}

impl Device {
    pub fn exists(dir: &Path) -> bool {
        dir.join(STORE_FILE).exists()
    }

    pub fn open(dir: &Path, passphrase: &str) -> Result<Self, ClientError> {
        let path = dir.join(STORE_FILE);
        if !path.exists() {
            return Err(ClientError::Store(format!(
                "no device in {} (run `keepwire chat enroll` first)",
                dir.display()
            )));
        }
        Self::from_store(Store::open(&path, passphrase)?)
    }

    fn from_store(store: Store) -> Result<Self, ClientError> {
        let get = |k: &[u8]| store.get("identity", k)?.ok_or(ClientError::NotEnrolled);
        let secret = SignatureSecretKey::new(get(b"secret")?);
        let public = SignaturePublicKey::new(get(b"public")?);
        let user = String::from_utf8(get(b"user")?)
            .map_err(|_| ClientError::Store("user name is not UTF-8".into()))?;
        let device_id = String::from_utf8(get(b"device_id")?)
            .map_err(|_| ClientError::Store("device id is not UTF-8".into()))?;
        let credential = BasicCredential::new(device_identity(&user, &device_id).into_bytes());
        let identity = SigningIdentity::new(credential.into_credential(), public);
        let group_store = GroupStore::new(store.clone());
        let client = mls_rs::Client::builder()
            .key_package_repo(KeyPackageStore(store.clone()))
            .group_state_storage(group_store.clone())
            .crypto_provider(AwsLcCryptoProvider::new())
            .identity_provider(BasicIdentityProvider::new())
            .mls_rules(mls_rules())
            .signing_identity(identity, secret.clone(), CIPHER_SUITE)
            .build();
        Ok(Self {
            store,
            group_store,
            client,
            secret,
            user,
            device_id,
            groups: HashMap::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn identity(&self) -> String {
        device_identity(&self.user, &self.device_id)
    }

    pub fn auth_request(&self, nonce: &[u8]) -> Result<Request, ClientError> {
        self.authenticator().auth_request(nonce)
    }

    /// What signs this device in on a connection of its own, apart from
    /// the device (the records service fetches files on a second
    /// connection, from another task).
    pub fn authenticator(&self) -> Authenticator {
        Authenticator {
            device_id: self.device_id.clone(),
            secret: self.secret.clone(),
        }
    }

    /// A batch of fresh key packages for the server's pool, with a new
    /// last-resort one when asked.
    pub fn key_packages_request(
        &self,
        count: usize,
        with_last_resort: bool,
    ) -> Result<Request, ClientError> {
        let mut key_packages = Vec::with_capacity(count);
        for _ in 0..count {
            let kp = self.client.generate_key_package_message(
                ExtensionList::new(),
                ExtensionList::new(),
                None,
            )?;
            key_packages.push(kp.to_bytes()?);
        }
        let last_resort = if with_last_resort {
            let mut ext = ExtensionList::new();
            ext.set_from(LastResortKeyPackageExt)
                .map_err(|e| ClientError::Store(e.to_string()))?;
            Some(
                self.client
                    .generate_key_package_message(ext, ExtensionList::new(), None)?
                    .to_bytes()?,
            )
        } else {
            None
        };
        Ok(Request::UploadKeyPackages {
            key_packages,
            last_resort,
        })
    }

    fn group(&mut self, conv: &str) -> Result<&mut MlsGroup, ClientError> {
        if !self.groups.contains_key(conv) {
            let id = hex::decode(conv)
                .map_err(|_| ClientError::UnknownConversation(conv.to_string()))?;
            let group = self
                .client
                .load_group(&id)
                .map_err(|_| ClientError::UnknownConversation(conv.to_string()))?;
            self.groups.insert(conv.to_string(), group);
        }
        // Invariant: inserted just above when missing.
        Ok(self.groups.get_mut(conv).expect("group loaded"))
    }

    /// The conversation `given` names: its full id, or a prefix of
    /// exactly one of this device's conversations (people type the first
    /// few characters they see).
    pub fn resolve_conversation(&self, given: &str) -> Result<String, ClientError> {
        match keepwire_protocol::named_by(given, self.conversations()?) {
            keepwire_protocol::Named::One(conv) => Ok(conv),
            // A whole id this device has not joined yet (its Welcome may
            // be waiting on the server): the caller finds out.
            keepwire_protocol::Named::None
                if given.len() >= 32 && given.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(given.to_string())
            }
            keepwire_protocol::Named::None => {
                Err(ClientError::UnknownConversation(given.to_string()))
            }
            keepwire_protocol::Named::Several(ids) => Err(ClientError::Refused(format!(
                "{given} could be {}: give more of the conversation id",
                ids.join(", ")
            ))),
        }
    }

    /// Conversations this device is in, from its own state.
    pub fn conversations(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .group_store
            .keys("group", b"")?
            .iter()
            .map(hex::encode)
            .collect())
    }

    pub fn participants(&mut self, conv: &str) -> Result<Vec<String>, ClientError> {
        Ok(roster_identities(self.group(conv)?))
    }

    pub fn epoch(&mut self, conv: &str) -> Result<u64, ClientError> {
        Ok(self.group(conv)?.current_epoch())
    }

    pub fn cursor(&self, conv: &str) -> Result<u64, ClientError> {
        Ok(self
            .group_store
            .get("cursor", conv.as_bytes())?
            .map(|b| be_u64(&b))
            .unwrap_or(0))
    }

    /// Encrypt a message for `conv`.
    pub fn encrypt(&mut self, conv: &str, content: &Content) -> Result<Request, ClientError> {
        let bytes = content.encode()?;
        // The blobs it carries, in the clear for the server ([`BlobList`]).
        let blobs = keepwire_protocol::attachment::BlobList::of(&content.attachments).encode();
        let group = self.group(conv)?;
        let msg = group.encrypt_application_message(&bytes, blobs)?;
        // The sending ratchet advanced: persist before the message leaves,
        // so a crash can never make this device reuse a key.
        let cursor = self.cursor(conv)?;
        self.save(conv, cursor)?;
        Ok(Request::Submit {
            conv: conv.to_string(),
            message: msg.to_bytes()?,
            welcome: None,
            next_group_info: None,
        })
    }

    /// Join a conversation from a Welcome; the commit that added this
    /// device is `seq`, so processing resumes after it.
    pub fn join(&mut self, conv: &str, seq: u64, welcome: &[u8]) -> Result<(), ClientError> {
        // A Welcome at or before what this device already processed is a
        // redelivery; a later one re-adds a device that was removed (its old
        // state is stale and is replaced).
        let known = self
            .group_store
            .get("group", &hex::decode(conv).unwrap_or_default())?
            .is_some();
        if known && seq <= self.cursor(conv)? {
            return Ok(());
        }
        let (group, _) = self
            .client
            .join_group(None, &MlsMessage::from_bytes(welcome)?, None)?;
        let joined = hex::encode(group.group_id());
        if joined != conv {
            return Err(ClientError::Refused(format!(
                "welcome is for conversation {joined}, not {conv}"
            )));
        }
        self.groups.insert(conv.to_string(), group);
        self.save(conv, seq)
    }

    /// Process one log entry. The MLS state moves forward in memory only;
    /// call [`Device::save`] once whatever the entry produced is durable
    /// (the message in the device store, the record in the archive), so a
    /// crash in between makes the entry come back rather than vanish.
    pub fn process(&mut self, d: &Delivery) -> Result<Incoming, ClientError> {
        if d.seq <= self.cursor(&d.conv)? {
            return Ok(Incoming::Duplicate);
        }
        let msg = MlsMessage::from_bytes(&d.message)?;
        if d.sender_user == self.user && d.sender_device == self.device_id {
            let group = self.group(&d.conv)?;
            // Our own commit, accepted while we were away (a crash or a lost
            // connection between sending it and reading the receipt): the
            // pending commit was persisted when it was built.
            if is_commit(&msg) && group.has_pending_commit() {
                group.apply_pending_commit()?;
                return Ok(Incoming::Commit {
                    conv: d.conv.clone(),
                    seq: d.seq,
                    epoch: group.current_epoch(),
                    participants: roster_identities(group),
                });
            }
            return Ok(Incoming::Own);
        }
        let application = msg.wire_format() == mls_rs::WireFormat::PrivateMessage;
        let group = self.group(&d.conv)?;
        let received = match group.process_incoming_message(msg) {
            Ok(r) => r,
            // Commits and proposals were checked by the server's roster
            // follower, so failing one is a real error; a ciphertext it
            // could not check is only the sender's problem.
            Err(e) if application => {
                return Ok(Incoming::Undecryptable {
                    conv: d.conv.clone(),
                    seq: d.seq,
                    reason: format!("{e:?}"),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let epoch = group.current_epoch();
        Ok(match received {
            ReceivedMessage::ApplicationMessage(app) => {
                let sender = group
                    .member_at_index(app.sender_index)
                    .and_then(|m| member_identity(&m))
                    .ok_or_else(|| {
                        ClientError::Refused(format!(
                            "sender leaf {} has no identity",
                            app.sender_index
                        ))
                    })?;
                Incoming::Application {
                    conv: d.conv.clone(),
                    seq: d.seq,
                    epoch,
                    sender,
                    participants: roster_identities(group),
                    content: app.data().to_vec(),
                    authenticated_data: app.authenticated_data.clone(),
                }
            }
            ReceivedMessage::Commit(_) => Incoming::Commit {
                conv: d.conv.clone(),
                seq: d.seq,
                epoch,
                participants: roster_identities(group),
            },
            ReceivedMessage::Proposal(_) => Incoming::Proposal {
                conv: d.conv.clone(),
                seq: d.seq,
            },
            _ => {
                return Err(ClientError::Refused(format!(
                    "unexpected message kind at {}#{}",
                    d.conv, d.seq
                )))
            }
        })
    }

    /// Persist the conversation's MLS state with its cursor at `seq`.
    pub fn save(&mut self, conv: &str, seq: u64) -> Result<(), ClientError> {
        self.group_store.queue(
            "cursor",
            conv.as_bytes().to_vec(),
            seq.to_be_bytes().to_vec(),
        );
        self.group(conv)?.write_to_storage()?;
        Ok(())
    }

    /// Move the cursor past an entry that needs no MLS processing (this
    /// device's own message).
    pub fn skip(&mut self, conv: &str, seq: u64) -> Result<(), ClientError> {
        self.group_store
            .put("cursor", conv.as_bytes(), &seq.to_be_bytes())
    }

    /// From now on, hold the MLS state and cursor writes back until they
    /// are applied through the returned handle (in order, from any
    /// thread); this device reads them as if written. For the records
    /// member, whose state must not become durable before the records it
    /// covers are.
    pub fn defer_writes(&mut self) -> crate::mls::DeferredWrites {
        self.group_store.defer()
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[b.len() - n..]);
    u64::from_be_bytes(a)
}

/// A commit built by [`Device::commit`], ready to go on the wire.
struct BuiltCommit {
    commit: Vec<u8>,
    welcome: Option<Vec<u8>>,
    next_group_info: Vec<u8>,
}

impl BuiltCommit {
    fn submit(self, conv: &str) -> Request {
        Request::Submit {
            conv: conv.to_string(),
            message: self.commit,
            welcome: self.welcome,
            next_group_info: Some(self.next_group_info),
        }
    }
}

fn add_all<'a>(
    mut b: mls_rs::group::CommitBuilder<'a, MlsConfig>,
    members: &[ClaimedKeyPackage],
) -> Result<mls_rs::group::CommitBuilder<'a, MlsConfig>, mls_rs::error::MlsError> {
    for m in members {
        b = b.add_member(MlsMessage::from_bytes(&m.key_package)?)?;
    }
    Ok(b)
}

fn is_commit(msg: &MlsMessage) -> bool {
    matches!(
        msg.description(),
        mls_rs::MlsMessageDescription::PublicProtocolMessage {
            content_type: mls_rs::group::ContentType::Commit,
            ..
        }
    )
}

fn member_identity(m: &mls_rs::group::Member) -> Option<String> {
    m.signing_identity
        .credential
        .as_basic()
        .and_then(|b| String::from_utf8(b.identifier.clone()).ok())
}

fn roster_identities(group: &MlsGroup) -> Vec<String> {
    group
        .roster()
        .members_iter()
        .filter_map(|m| member_identity(&m))
        .collect()
}
