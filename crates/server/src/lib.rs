//! The keepwire delivery server: accounts, devices, key packages, the MLS
//! rosters it follows, the conversation logs, fan-out and signed receipts.
//!
//! This crate can never decrypt an application message: it links mls-rs
//! only as an *external* observer of public handshake messages and holds no
//! group secret (promise 4). Everything it stores about a message is the
//! ciphertext, its hash, its sender device and its place in the log.

pub mod deadline;
pub mod gate;
pub mod hold;
pub mod lifecycle;
pub mod log_writer;
pub mod ops;
pub mod outbox;
pub mod roster;
pub mod service;
pub mod shell;
pub mod store;
pub mod tls;
pub mod ws;

use std::path::Path;

pub use service::{Core, Limits};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store failed (its backend's message; no backend type leaks).
    #[error("database: {0}")]
    Storage(String),
    #[error("{0}")]
    Invalid(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Schema(#[from] keepwire_schema::SchemaError),
}

impl From<keepwire_schema::pg::PgError> for ServerError {
    fn from(e: keepwire_schema::pg::PgError) -> Self {
        ServerError::Storage(e.to_string())
    }
}

impl From<keepwire_schema::pg::tokio_postgres::Error> for ServerError {
    fn from(e: keepwire_schema::pg::tokio_postgres::Error) -> Self {
        ServerError::Storage(keepwire_schema::pg::describe(&e))
    }
}

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        ServerError::Storage(e.to_string())
    }
}

/// Replace the receipt-signing key. The old public key stays listed (with
/// the time it stopped signing) so every receipt it signed stays
/// verifiable; the running server picks the new key up at its next start.
/// Returns the new public key.
pub fn rotate_key(
    dir: &Path,
    store: &dyn store::ServerStore,
    now_ms: u64,
) -> Result<[u8; 32], ServerError> {
    let old = load_or_create_key(dir)?;
    store.record_receipt_key(&old.verifying_key().to_bytes(), 0)?;
    let new = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    keepwire_protocol::files::replace_private(&dir.join("receipt.key"), &new.to_bytes())?;
    store.retire_receipt_key(&old.verifying_key().to_bytes(), now_ms)?;
    store.record_receipt_key(&new.verifying_key().to_bytes(), now_ms)?;
    Ok(new.verifying_key().to_bytes())
}

/// Load the server's Ed25519 receipt-signing key from `dir`, creating it
/// (readable by the owner only) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<ed25519_dalek::SigningKey, ServerError> {
    let path = dir.join("receipt.key");
    if let Ok(bytes) = std::fs::read(&path) {
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            ServerError::Invalid(format!("{} is not a 32-byte Ed25519 key", path.display()))
        })?;
        return Ok(ed25519_dalek::SigningKey::from_bytes(&arr));
    }
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    keepwire_protocol::files::write_private(&path, &key.to_bytes())?;
    Ok(key)
}

pub const SERVER_DB: &str = "server.db";
