//! The PKCS#11 key provider: an HSM holds the checkpoint key and the root
//! key, made inside the token, marked sensitive and never extractable.
//!
//! Checkpoints are signed in the token (CKM_EDDSA over Ed25519, the same
//! signatures the file provider makes, so verifiers cannot tell them
//! apart); the archive key and the device secret are sealed and opened in
//! the token (CKM_AES_GCM, a random 96-bit IV, the purpose as additional
//! data). The objects are found by label: `keepwire-checkpoint` (the key
//! pair; the private key's CKA_ID holds the log's name) and
//! `keepwire-root`.
//!
//! Tested against SoftHSM2 (`crates/records/tests/pkcs11.rs`,
//! `crates/keepwire/tests/keys.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand::RngCore;

use super::{keys_error, KeyProvider, NoteSigner};
use crate::RecordsError;

const CHECKPOINT_LABEL: &str = "keepwire-checkpoint";
const ROOT_LABEL: &str = "keepwire-root";
/// DER of the Ed25519 curve's OID, 1.3.101.112 (RFC 8410), as CKA_EC_PARAMS.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Which token, and how to log in.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (a shared library), e.g.
    /// `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The user PIN.
    pub pin: String,
}

pub struct Pkcs11Keys {
    session: Arc<Mutex<Session>>,
    describe: String,
}

/// Each module is loaded and initialised once per process: a second
/// C_Initialize fails, and sessions of every context share the module.
fn module(path: &Path) -> Result<Pkcs11, RecordsError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let m = Pkcs11::new(path).map_err(|e| {
        RecordsError::Keys(format!(
            "cannot load the PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck(e)),
    }
    modules.insert(path.to_path_buf(), m.clone());
    Ok(m)
}

fn ck(e: CkError) -> RecordsError {
    match e {
        CkError::Pkcs11(rv, f) => RecordsError::Keys(format!("PKCS#11 {f:?}: {rv:?}")),
        e => keys_error(e),
    }
}

impl Pkcs11Keys {
    /// Log in to the token labelled `config.token`.
    pub fn open(config: &Pkcs11Config) -> Result<Self, RecordsError> {
        let ctx = module(&config.module)?;
        let mut found = None;
        for slot in ctx.get_slots_with_initialized_token().map_err(ck)? {
            let info = ctx.get_token_info(slot).map_err(ck)?;
            if info.label().trim_end() == config.token {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            RecordsError::Keys(format!(
                "no initialised token labelled `{}` in {}",
                config.token,
                config.module.display()
            ))
        })?;
        let session = ctx.open_rw_session(slot).map_err(ck)?;
        match session.login(UserType::User, Some(&AuthPin::from(config.pin.clone()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(RecordsError::Keys(format!(
                    "wrong PIN for token `{}`",
                    config.token
                )))
            }
            Err(e) => return Err(ck(e)),
        }
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
            describe: format!(
                "PKCS#11 token `{}` ({})",
                config.token,
                config.module.display()
            ),
        })
    }

    /// Each keepwire key in the token with whether it is sensitive and
    /// whether it is extractable, as the token reports them (what an
    /// inspector asks: can the key leave the HSM?).
    pub fn protections(&self) -> Result<Vec<(String, bool, bool)>, RecordsError> {
        let s = self.session();
        let mut out = Vec::new();
        for (class, label, what) in [
            (ObjectClass::PRIVATE_KEY, CHECKPOINT_LABEL, "checkpoint key"),
            (ObjectClass::SECRET_KEY, ROOT_LABEL, "root key"),
        ] {
            let Some(h) = Self::find(&s, class, label)? else {
                continue;
            };
            let (mut sensitive, mut extractable) = (false, true);
            for a in s
                .get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])
                .map_err(ck)?
            {
                match a {
                    Attribute::Sensitive(v) => sensitive = v,
                    Attribute::Extractable(v) => extractable = v,
                    _ => {}
                }
            }
            out.push((what.to_string(), sensitive, extractable));
        }
        Ok(out)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(
        s: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, RecordsError> {
        let found = s
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(ck)?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(RecordsError::Keys(format!(
                "the token holds {} objects labelled `{label}`; expected one",
                found.len()
            ))),
        }
    }

    /// The root key, made in the token on first use (`make`); opening
    /// never makes one, so a wrong or replaced token is named, not papered
    /// over.
    fn root(&self, s: &Session, make: bool) -> Result<ObjectHandle, RecordsError> {
        if let Some(k) = Self::find(s, ObjectClass::SECRET_KEY, ROOT_LABEL)? {
            return Ok(k);
        }
        if !make {
            return Err(RecordsError::Keys(format!(
                "{} holds no root key (`{ROOT_LABEL}`): the wrong token, or a new one — restore \
                 the archive key from escrow (`keepwire records key restore`)",
                self.describe
            )));
        }
        tracing::info!(token = %self.describe, "root key made in the token");
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(ROOT_LABEL.as_bytes().to_vec()),
            ],
        )
        .map_err(ck)
    }

    /// The checkpoint key pair's private half and its log name and public
    /// key, if the token holds it.
    fn checkpoint_key(
        s: &Session,
    ) -> Result<Option<(ObjectHandle, String, [u8; 32])>, RecordsError> {
        let Some(private) = Self::find(s, ObjectClass::PRIVATE_KEY, CHECKPOINT_LABEL)? else {
            return Ok(None);
        };
        let public =
            Self::find(s, ObjectClass::PUBLIC_KEY, CHECKPOINT_LABEL)?.ok_or_else(|| {
                keys_error("the token holds the checkpoint private key but not its public key")
            })?;
        let mut name = None;
        for a in s
            .get_attributes(private, &[AttributeType::Id])
            .map_err(ck)?
        {
            if let Attribute::Id(id) = a {
                name = Some(String::from_utf8(id).map_err(keys_error)?);
            }
        }
        let mut point = None;
        for a in s
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(ck)?
        {
            if let Attribute::EcPoint(p) = a {
                point = Some(p);
            }
        }
        let name = name.ok_or_else(|| keys_error("the checkpoint key has no CKA_ID (its name)"))?;
        let point = point.ok_or_else(|| keys_error("the checkpoint key has no CKA_EC_POINT"))?;
        // CKA_EC_POINT is the DER OCTET STRING of the 32-byte key (some
        // tokens give the raw key).
        let raw = match point.as_slice() {
            [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
            raw if raw.len() == 32 => raw,
            _ => return Err(keys_error("the checkpoint key is not an Ed25519 key")),
        };
        Ok(Some((private, name, raw.try_into().map_err(keys_error)?)))
    }

    fn key_templates(name: &str) -> (Vec<Attribute>, Vec<Attribute>) {
        let common = |a: &mut Vec<Attribute>| {
            a.extend([
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Token(true),
                Attribute::Label(CHECKPOINT_LABEL.as_bytes().to_vec()),
                Attribute::Id(name.as_bytes().to_vec()),
            ])
        };
        let mut public = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Verify(true),
        ];
        common(&mut public);
        let mut private = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ];
        common(&mut private);
        (public, private)
    }
}

struct TokenSigner {
    session: Arc<Mutex<Session>>,
    key: ObjectHandle,
    name: String,
    id: u32,
    public: ed25519_dalek::VerifyingKey,
    verifier_key: String,
}

impl signed_note::Signer for TokenSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let sig = s
            .sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.key,
                msg,
            )
            .map_err(|e| {
                tracing::error!(error = %ck(e), "the token did not sign the checkpoint");
                ed25519_dalek::SignatureError::new()
            })?;
        // A token that signs with another key, or garbles the signature,
        // must not get a checkpoint out.
        let sig = ed25519_dalek::Signature::from_slice(&sig)?;
        self.public.verify_strict(msg, &sig)?;
        Ok(sig.to_bytes().to_vec())
    }
}

impl NoteSigner for TokenSigner {
    fn verifier_key(&self) -> String {
        self.verifier_key.clone()
    }
}

impl KeyProvider for Pkcs11Keys {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn checkpoint_signer(&self) -> Result<Box<dyn NoteSigner>, RecordsError> {
        let s = self.session();
        let (key, name, public) = match Self::checkpoint_key(&s)? {
            Some(k) => k,
            None => {
                let name = super::file::fresh_log_name();
                let (public, private) = Self::key_templates(&name);
                s.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
                    .map_err(ck)?;
                tracing::info!(token = %self.describe, log = %name, "checkpoint key made in the token");
                Self::checkpoint_key(&s)?
                    .ok_or_else(|| keys_error("the checkpoint key made is not found"))?
            }
        };
        let public = ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(keys_error)?;
        let verifier_key = signed_note::new_ed25519_verifier_key(&name, &public);
        let encoded = [&[1u8][..], public.as_bytes()].concat();
        Ok(Box::new(TokenSigner {
            session: self.session.clone(),
            key,
            id: signed_note::key_id(&name, &encoded),
            name,
            public,
            verifier_key,
        }))
    }

    fn has_checkpoint_key(&self) -> Result<bool, RecordsError> {
        Ok(Self::checkpoint_key(&self.session())?.is_some())
    }

    fn import_checkpoint_key(&self, skey: &str) -> Result<(), RecordsError> {
        let (signer, vkey) = super::file::verifier_of(skey)?;
        let s = self.session();
        if Self::checkpoint_key(&s)?.is_some() {
            return Err(RecordsError::Keys(format!(
                "{} already holds a checkpoint key",
                self.describe
            )));
        }
        let raw = super::file::private_key_bytes(skey)?;
        let seed = raw.get(1..).unwrap_or_default().to_vec();
        let public = keepwire_protocol::b64::decode(vkey.splitn(3, '+').nth(2).unwrap_or_default())
            .map_err(keys_error)?;
        let (mut public_t, mut private_t) = Self::key_templates(signed_note::Signer::name(&signer));
        public_t.push(Attribute::EcPoint(
            [&[0x04, 0x20][..], public.get(1..).unwrap_or_default()].concat(),
        ));
        private_t.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
        private_t.push(Attribute::Value(seed));
        let public = s.create_object(&public_t).map_err(ck)?;
        if let Err(e) = s.create_object(&private_t) {
            // No orphan half left to confuse the next attempt.
            let _ = s.destroy_object(public);
            return Err(RecordsError::Keys(format!(
                "{} did not take the checkpoint key in ({}): import it with the HSM's own tools \
                 under the label `{CHECKPOINT_LABEL}`, its CKA_ID the log's name",
                self.describe,
                ck(e)
            )));
        }
        Ok(())
    }

    /// Never: the key was made non-extractable in the token. The HSM's
    /// own backup (a second token of its family) covers it.
    fn export_checkpoint_key(&self) -> Result<Option<String>, RecordsError> {
        Ok(None)
    }

    fn wrap(&self, purpose: &str, secret: &[u8]) -> Result<Vec<u8>, RecordsError> {
        let s = self.session();
        let root = self.root(&s, true)?;
        let mut iv = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut iv);
        // The token may replace the IV with one it made (HSMs in FIPS mode
        // do, writing it back through the parameter): what is stored is
        // what the buffer holds after the call.
        let ct = {
            let params = GcmParams::new(&mut iv, purpose.as_bytes(), 128.into()).map_err(ck)?;
            s.encrypt(&Mechanism::AesGcm(params), root, secret)
                .map_err(ck)?
        };
        Ok([iv.as_slice(), &ct].concat())
    }

    fn unwrap(&self, purpose: &str, wrapped: &[u8]) -> Result<Vec<u8>, RecordsError> {
        if wrapped.len() < 12 + 16 {
            return Err(RecordsError::Keys(format!("sealed {purpose} is truncated")));
        }
        let s = self.session();
        let root = self.root(&s, false)?;
        let mut iv: [u8; 12] = wrapped[..12].try_into().map_err(keys_error)?;
        let params = GcmParams::new(&mut iv, purpose.as_bytes(), 128.into()).map_err(ck)?;
        s.decrypt(&Mechanism::AesGcm(params), root, &wrapped[12..])
            .map_err(|e| match e {
                CkError::Pkcs11(RvError::EncryptedDataInvalid, _)
                | CkError::Pkcs11(RvError::EncryptedDataLenRange, _) => RecordsError::Keys(format!(
                    "sealed {purpose} does not open with {}: altered, or sealed by another root key",
                    self.describe
                )),
                e => ck(e),
            })
    }
}
