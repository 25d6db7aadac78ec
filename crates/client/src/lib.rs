//! The device core: a keepwire device's identity, its MLS state, its
//! encrypted local store and its disappearing timers — and nothing else.
//!
//! No sockets and no terminal live here: every operation takes frames in
//! and gives frames out ([`device::Device`]), and the binary's async shell
//! moves them over the network. The records service is built on this same
//! core, since it is an MLS member like any other device.

pub mod attachment;
pub mod cosignature;
pub mod device;
pub mod mls;
pub mod photo;
pub mod store;
pub mod witness;

pub use device::{Authenticator, Device, Incoming, PendingDevice};
pub use mls::DeferredWrites;
pub use store::{FileInfo, Store, StoredMessage};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("wrong passphrase for this device store")]
    WrongPassphrase,
    #[error("device store: {0}")]
    Store(String),
    /// The device's store failed (its backend's message).
    #[error("device store database: {0}")]
    Storage(String),
    #[error("MLS: {0}")]
    Mls(#[from] mls_rs::error::MlsError),
    #[error("this device is not enrolled yet (run `keepwire chat enroll`)")]
    NotEnrolled,
    #[error("unknown conversation {0}")]
    UnknownConversation(String),
    #[error("{0}")]
    Content(#[from] keepwire_protocol::content::ContentError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Schema(#[from] keepwire_schema::SchemaError),
}

impl From<rusqlite::Error> for ClientError {
    fn from(e: rusqlite::Error) -> Self {
        ClientError::Storage(e.to_string())
    }
}
