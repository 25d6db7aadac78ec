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

/// A row (namespace, key, value) waiting for the next group-state write.
/// Values are group secrets (before the store seals them): wiped on drop.
type QueuedRow = (&'static str, Vec<u8>, Zeroizing<Vec<u8>>);

/// Group state in the device store. Extra rows (the conversation cursor)
/// can be queued to land in the same transaction as the next state write,
/// so a crash never leaves the cursor and the MLS state out of step.
///
/// Writes can also be held back ([`GroupStore::defer`]): they then wait,
/// in order, until the holder of the [`DeferredWrites`] handle applies
/// them, while every read through this store sees them already. The
/// records service uses this to decrypt the next batch while the previous
/// one is still being archived: a state snapshot must never become durable
/// before the records it covers.
#[derive(Clone)]
pub struct GroupStore {
    store: Store,
    pending: Arc<Mutex<Vec<QueuedRow>>>,
    deferred: Arc<Mutex<Deferred>>,
}

/// One group-state write (or a lone cursor move), as it will be applied.
struct Write {
    puts: Vec<QueuedRow>,
    /// The group and the newest epoch written: older epochs past the
    /// retention are deleted when the write is applied.
    prune: Option<(Vec<u8>, u64)>,
}

/// (namespace, key) of a store row.
type RowKey = (&'static str, Vec<u8>);

#[derive(Default)]
struct Deferred {
    enabled: bool,
    /// Writes queued so far (the mark of the next one).
    queued: u64,
    /// Not yet applied, oldest first, each with its mark.
    waiting: std::collections::VecDeque<(u64, Write)>,
    /// The newest unapplied value of each key, and the write it is in.
    overlay: std::collections::BTreeMap<RowKey, (u64, Zeroizing<Vec<u8>>)>,
    /// Conversations whose writes wait for [`DeferredWrites::release`]
    /// whatever the mark ([`DeferredWrites::hold`]).
    held: Vec<Held>,
}

/// A held conversation: its cursor key and its group's id, and how many
/// holds are on it.
struct Held {
    conv: Vec<u8>,
    group_id: Vec<u8>,
    count: usize,
}

impl Held {
    /// Whether `w` writes any row of this conversation: its cursor, its
    /// group state, one of its epochs.
    fn covers(&self, w: &Write) -> bool {
        let g = &self.group_id;
        w.prune.as_ref().is_some_and(|(id, _)| id == g)
            || w.puts.iter().any(|(ns, k, _)| match *ns {
                "cursor" => *k == self.conv,
                "group" => k == g,
                "epoch" => k.len() == g.len() + 8 && k.starts_with(g),
                _ => false,
            })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupStore {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            pending: Arc::default(),
            deferred: Arc::default(),
        }
    }

    pub fn queue(&self, ns: &'static str, k: Vec<u8>, v: Vec<u8>) {
        lock(&self.pending).push((ns, k, Zeroizing::new(v)));
    }

    /// Hold every later write back until it is applied through the handle.
    pub fn defer(&self) -> DeferredWrites {
        lock(&self.deferred).enabled = true;
        DeferredWrites {
            store: self.store.clone(),
            deferred: Arc::clone(&self.deferred),
            applying: Arc::default(),
        }
    }

    /// A value, as the last write (applied or not) left it.
    pub fn get(&self, ns: &'static str, k: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        if let Some((_, v)) = lock(&self.deferred).overlay.get(&(ns, k.to_vec())) {
            return Ok(Some(v.to_vec()));
        }
        self.store.get(ns, k)
    }

    /// Keys of `ns` starting with `prefix`, counting unapplied writes.
    pub fn keys(&self, ns: &'static str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        // The overlay first: a write being applied meanwhile reaches the
        // store before it leaves the overlay, so it is seen in one or the
        // other (the reverse order could miss it in both).
        let mut keys: std::collections::BTreeSet<Vec<u8>> = lock(&self.deferred)
            .overlay
            .range((ns, prefix.to_vec())..)
            .take_while(|((n, k), _)| *n == ns && k.starts_with(prefix))
            .map(|((_, k), _)| k.clone())
            .collect();
        keys.extend(self.store.keys(ns, prefix)?);
        Ok(keys.into_iter().collect())
    }

    /// Write one row now, or after what is already waiting when deferred.
    pub fn put(&self, ns: &'static str, k: &[u8], v: &[u8]) -> Result<(), ClientError> {
        self.submit(Write {
            puts: vec![(ns, k.to_vec(), Zeroizing::new(v.to_vec()))],
            prune: None,
        })
    }

    fn submit(&self, w: Write) -> Result<(), ClientError> {
        let mut d = lock(&self.deferred);
        if !d.enabled {
            drop(d);
            return apply(&self.store, &w);
        }
        let mark = d.queued;
        d.queued += 1;
        for (ns, k, v) in &w.puts {
            d.overlay.insert((*ns, k.clone()), (mark, v.clone()));
        }
        d.waiting.push_back((mark, w));
        Ok(())
    }

    /// Delete a group's state and stored epochs (a join that never happened).
    pub fn forget(&self, group_id: &[u8]) -> Result<(), ClientError> {
        let mut deletes: Vec<(&str, Vec<u8>)> = vec![("group", group_id.to_vec())];
        for k in self.store.keys("epoch", group_id)? {
            deletes.push(("epoch", k));
        }
        self.store.write_batch(&[], &deletes)
    }
}

/// Apply one write in one transaction, pruning epochs past the retention.
fn apply(store: &Store, w: &Write) -> Result<(), ClientError> {
    let puts: Vec<(&str, Vec<u8>, &[u8])> = w
        .puts
        .iter()
        .map(|(ns, k, v)| (*ns, k.clone(), &v[..]))
        .collect();
    let mut deletes = Vec::new();
    if let Some((group_id, max)) = &w.prune {
        for k in store.keys("epoch", group_id)? {
            if k.len() == group_id.len() + 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&k[group_id.len()..]);
                if u64::from_be_bytes(b) + MAX_EPOCH_RETENTION <= *max {
                    deletes.push(("epoch", k));
                }
            }
        }
    }
    store.write_batch(&puts, &deletes)
}

/// The holder's side of deferred group-state writes: say how far the
/// writes go now ([`DeferredWrites::mark`]), and later make them durable
/// up to that mark ([`DeferredWrites::apply`]), from any thread.
#[derive(Clone)]
pub struct DeferredWrites {
    store: Store,
    deferred: Arc<Mutex<Deferred>>,
    /// One applier at a time, so writes land in their order.
    applying: Arc<Mutex<()>>,
}

impl DeferredWrites {
    /// The point reached by the writes queued so far.
    pub fn mark(&self) -> u64 {
        lock(&self.deferred).queued
    }

    /// Apply, in order, every write queued before `mark`, except those of
    /// held conversations ([`Self::hold`]). Reads keep seeing a value
    /// until it is in the store, so no reader ever sees an older one.
    pub fn apply(&self, mark: u64) -> Result<(), ClientError> {
        let _one = lock(&self.applying);
        loop {
            let next = {
                let mut d = lock(&self.deferred);
                // The first write before the mark that is not held back.
                // A held write stays where it is; writes after it touch
                // other conversations' rows only, so their order against
                // it does not matter.
                let at = d
                    .waiting
                    .iter()
                    .take_while(|(m, _)| *m < mark)
                    .position(|(_, w)| !d.held.iter().any(|h| h.covers(w)));
                at.and_then(|i| d.waiting.remove(i).map(|x| (i, x)))
            };
            let Some((at, (m, w))) = next else {
                return Ok(());
            };
            if let Err(e) = apply(&self.store, &w) {
                // Back where it was: nothing after it may land first.
                lock(&self.deferred).waiting.insert(at, (m, w));
                return Err(e);
            }
            let mut d = lock(&self.deferred);
            for (ns, k, _) in &w.puts {
                let key = (*ns, k.clone());
                if d.overlay.get(&key).is_some_and(|(at, _)| *at == m) {
                    d.overlay.remove(&key);
                }
            }
        }
    }
}

impl DeferredWrites {
    /// Hold every write of conversation `conv` (its cursor, its group
    /// state and epochs), queued or to come, until [`Self::release`],
    /// whatever marks [`Self::apply`] is given. For the records member:
    /// a message waiting for its files is decrypted (its conversation's
    /// state moves on in memory) while other conversations' batches are
    /// archived and their state written; this conversation's state must
    /// not become durable before that message's record is.
    ///
    /// Holds count: a conversation is released by as many releases as it
    /// was held (a second message of it may start waiting for its files
    /// before the first one's record is written; their writes then wait
    /// for both, which only keeps the state further behind the archive —
    /// the safe side).
    pub fn hold(&self, conv: &str) {
        let mut d = lock(&self.deferred);
        if let Some(h) = d.held.iter_mut().find(|h| h.conv == conv.as_bytes()) {
            h.count += 1;
            return;
        }
        // A conversation id is its group's id in hex; one that is not has
        // no group rows, only its cursor.
        let group_id = hex::decode(conv).unwrap_or_default();
        d.held.push(Held {
            conv: conv.as_bytes().to_vec(),
            group_id,
            count: 1,
        });
    }

    /// Take one hold off `conv`; with none left, its writes go with the
    /// next [`Self::apply`].
    pub fn release(&self, conv: &str) {
        let mut d = lock(&self.deferred);
        if let Some(h) = d.held.iter_mut().find(|h| h.conv == conv.as_bytes()) {
            h.count = h.count.saturating_sub(1);
        }
        d.held.retain(|h| h.count > 0);
    }

    /// Whether `conv`'s writes are held back.
    pub fn is_held(&self, conv: &str) -> bool {
        lock(&self.deferred)
            .held
            .iter()
            .any(|h| h.conv == conv.as_bytes())
    }

    /// Run `f` with writes going straight to the store, after everything
    /// queued so far that is not held ([`Self::hold`]: a held
    /// conversation's rows are not the ones a join writes). For steps whose writes cover no records and must be
    /// durable in mls-rs's own order: joining writes the group state, then
    /// deletes the key package it used — deferring only the first would
    /// let a crash lose the state and keep the deletion, and the Welcome
    /// could never be processed again. The caller makes sure nobody else
    /// applies meanwhile (the records service settles its writer first).
    pub fn immediately<R>(&self, f: impl FnOnce() -> R) -> Result<R, ClientError> {
        self.apply(self.mark())?;
        lock(&self.deferred).enabled = false;
        let r = f();
        lock(&self.deferred).enabled = true;
        Ok(r)
    }
}

fn epoch_key(group_id: &[u8], epoch: u64) -> Vec<u8> {
    [group_id, &epoch.to_be_bytes()].concat()
}

impl GroupStateStorage for GroupStore {
    type Error = ClientError;

    fn state(&self, group_id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self.get("group", group_id)?.map(Zeroizing::new))
    }

    fn epoch(
        &self,
        group_id: &[u8],
        epoch_id: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        Ok(self
            .get("epoch", &epoch_key(group_id, epoch_id))?
            .map(Zeroizing::new))
    }

    fn write(
        &mut self,
        state: GroupState,
        inserts: Vec<EpochRecord>,
        updates: Vec<EpochRecord>,
    ) -> Result<(), Self::Error> {
        let extra: Vec<_> = std::mem::take(&mut *lock(&self.pending));
        let max = inserts.iter().chain(updates.iter()).map(|e| e.id).max();
        let mut puts: Vec<QueuedRow> = Vec::with_capacity(1 + inserts.len() + updates.len());
        for e in inserts.into_iter().chain(updates) {
            puts.push(("epoch", epoch_key(&state.id, e.id), e.data));
        }
        puts.extend(extra);
        let prune = max.map(|m| (state.id.clone(), m));
        puts.push(("group", state.id, state.data));
        self.submit(Write { puts, prune })
    }

    fn max_epoch_id(&self, group_id: &[u8]) -> Result<Option<u64>, Self::Error> {
        Ok(self
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(store: &Store, conv: &str) -> Option<Vec<u8>> {
        store.get("cursor", conv.as_bytes()).unwrap()
    }

    /// A held conversation's writes stay out of the store — read as
    /// written all the while — until it is released, while the writes of
    /// others after them land.
    #[test]
    fn a_held_conversations_writes_wait_for_its_release() {
        let store = Store::in_memory().unwrap();
        let groups = GroupStore::new(store.clone());
        let writes = groups.defer();
        let (a, b) = ("aa01", "bb02");
        writes.hold(a);
        groups.put("cursor", a.as_bytes(), &[1]).unwrap();
        groups.put("cursor", b.as_bytes(), &[2]).unwrap();
        groups.put("group", &[0xaa, 0x01], b"a's state").unwrap();
        groups
            .put("epoch", &[0xaa, 0x01, 0, 0, 0, 0, 0, 0, 0, 7], b"e")
            .unwrap();
        writes.apply(writes.mark()).unwrap();
        assert_eq!(cursor(&store, b), Some(vec![2]), "b's write landed");
        assert_eq!(cursor(&store, a), None, "a's is held");
        assert_eq!(store.get("group", &[0xaa, 0x01]).unwrap(), None);
        assert_eq!(
            groups.get("cursor", a.as_bytes()).unwrap(),
            Some(vec![1]),
            "and read as written"
        );
        assert!(writes.is_held(a));
        writes.hold(a);
        writes.release(a);
        writes.apply(writes.mark()).unwrap();
        assert_eq!(cursor(&store, a), None, "held twice, released once");
        writes.release(a);
        writes.apply(writes.mark()).unwrap();
        assert_eq!(cursor(&store, a), Some(vec![1]));
        assert_eq!(
            store.get("group", &[0xaa, 0x01]).unwrap().as_deref(),
            Some(&b"a's state"[..])
        );
        assert!(store
            .get("epoch", &[0xaa, 0x01, 0, 0, 0, 0, 0, 0, 0, 7])
            .unwrap()
            .is_some());
    }
}
