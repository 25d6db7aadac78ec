//! mls-rs configuration for keepwire devices, and the adapters that keep
//! mls-rs's group state and key packages in the encrypted [`Store`].
//!
//! Every device and the records service use cipher suite P256_AES128
//! (FIPS-approved; supported by the native aws-lc provider and the browser
//! provider alike) and basic credentials `user/device_id`, which the server
//! checks against its device registry.

use std::sync::{Arc, Mutex};

use mls_rs::client_builder::{
    BaseConfig, WithCryptoProvider, WithGroupStateStorage, WithIdentityProvider,
    WithKeyPackageRepo, WithMlsRules,
};
use mls_rs::identity::basic::BasicIdentityProvider;
use mls_rs::mls_rs_codec::{MlsDecode, MlsEncode};
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::CipherSuite;
use mls_rs_core::group::{EpochRecord, GroupState, GroupStateStorage};
use mls_rs_core::key_package::{KeyPackageData, KeyPackageStorage};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use zeroize::Zeroizing;

use crate::{ClientError, Store};

pub const CIPHER_SUITE: CipherSuite = CipherSuite::P256_AES128;

/// Prior epochs kept per group, so application messages sent just before a
/// commit can still be decrypted after it.
const MAX_EPOCH_RETENTION: u64 = 3;

pub type MlsConfig = WithMlsRules<
    DefaultMlsRules,
    WithIdentityProvider<
        BasicIdentityProvider,
        WithCryptoProvider<
            AwsLcCryptoProvider,
            WithGroupStateStorage<GroupStore, WithKeyPackageRepo<KeyPackageStore, BaseConfig>>,
        >,
    >,
>;

/// Every commit also yields a GroupInfo allowing external commits (with
/// the ratchet tree), which the server keeps so a user's new device can
/// join the conversations the user is already in.
pub fn mls_rules() -> DefaultMlsRules {
    DefaultMlsRules::new().with_commit_options(
        CommitOptions::new()
            .with_allow_external_commit(true)
            .with_ratchet_tree_extension(true),
    )
}
pub type MlsClient = mls_rs::Client<MlsConfig>;
pub type MlsGroup = mls_rs::Group<MlsConfig>;

impl mls_rs_core::error::IntoAnyError for ClientError {}

/// Group state in the device store. Extra rows (the conversation cursor)
/// can be queued to land in the same transaction as the next state write,
/// so a crash never leaves the cursor and the MLS state out of step.
/// A row (namespace, key, value) waiting for the next group-state write.
type QueuedRow = (&'static str, Vec<u8>, Vec<u8>);

#[derive(Clone)]
pub struct GroupStore {
    store: Store,
    pending: Arc<Mutex<Vec<QueuedRow>>>,
}

impl GroupStore {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            pending: Arc::default(),
        }
    }

    pub fn queue(&self, ns: &'static str, k: Vec<u8>, v: Vec<u8>) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((ns, k, v));
    }
}

impl GroupStore {
    /// Delete a group's state and stored epochs (a join that never happened).
    pub fn forget(&self, group_id: &[u8]) -> Result<(), ClientError> {
        let mut deletes: Vec<(&str, Vec<u8>)> = vec![("group", group_id.to_vec())];
        for k in self.store.keys("epoch", group_id)? {
            deletes.push(("epoch", k));
        }
        self.store.write_batch(&[], &deletes)
    }
}

fn epoch_key(group_id: &[u8], epoch: u64) -> Vec<u8> {
    [group_id, &epoch.to_be_bytes()].concat()
}

impl GroupStateStorage for GroupStore {
    type Error = ClientError;

    fn state(&self, group_id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self.store.get("group", group_id)?.map(Zeroizing::new))
    }

    fn epoch(
        &self,
        group_id: &[u8],
        epoch_id: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self
            .store
            .get("epoch", &epoch_key(group_id, epoch_id))?
            .map(Zeroizing::new))
    }

    fn write(
        &mut self,
        state: GroupState,
        inserts: Vec<EpochRecord>,
        updates: Vec<EpochRecord>,
    ) -> Result<(), Self::Error> {
        let extra: Vec<_> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let max = inserts.iter().chain(updates.iter()).map(|e| e.id).max();
        let mut puts: Vec<(&str, Vec<u8>, &[u8])> =
            vec![("group", state.id.clone(), &state.data[..])];
        for e in inserts.iter().chain(updates.iter()) {
            puts.push(("epoch", epoch_key(&state.id, e.id), &e.data[..]));
        }
        for (ns, k, v) in &extra {
            puts.push((ns, k.clone(), v));
        }
        let mut deletes = Vec::new();
        if let Some(max) = max {
            for k in self.store.keys("epoch", &state.id)? {
                if k.len() == state.id.len() + 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&k[state.id.len()..]);
                    if u64::from_be_bytes(b) + MAX_EPOCH_RETENTION <= max {
                        deletes.push(("epoch", k));
                    }
                }
            }
        }
        self.store.write_batch(&puts, &deletes)
    }

    fn max_epoch_id(&self, group_id: &[u8]) -> Result<Option<u64>, Self::Error> {
        Ok(self
            .store
            .keys("epoch", group_id)?
            .iter()
            .filter(|k| k.len() == group_id.len() + 8)
            .map(|k| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&k[group_id.len()..]);
                u64::from_be_bytes(b)
            })
            .max())
    }
}

/// Key package secrets in the device store.
#[derive(Clone)]
pub struct KeyPackageStore(pub Store);

impl KeyPackageStorage for KeyPackageStore {
    type Error = ClientError;

    fn delete(&mut self, id: &[u8]) -> Result<(), Self::Error> {
        self.0.delete("key_package", id)
    }

    fn insert(&mut self, id: Vec<u8>, pkg: KeyPackageData) -> Result<(), Self::Error> {
        let bytes = pkg
            .mls_encode_to_vec()
            .map_err(|e| ClientError::Store(e.to_string()))?;
        self.0.put("key_package", &id, &bytes)
    }

    fn get(&self, id: &[u8]) -> Result<Option<KeyPackageData>, Self::Error> {
        self.0
            .get("key_package", id)?
            .map(|b| {
                KeyPackageData::mls_decode(&mut &*b).map_err(|e| ClientError::Store(e.to_string()))
            })
            .transpose()
    }
}
