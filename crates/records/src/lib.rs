//! The records service: the agency's records member in every conversation.
//!
//! It processes each conversation's log in the server's order, like any
//! device, but keeps what it decrypts instead of letting it disappear:
//! every log entry becomes a record in the [`archive`], durably, and only
//! then is it acknowledged to the server ([`capture`]). Every record, and
//! every privileged action on the archive, is also a leaf of the archive's
//! transparency log ([`tlog`]), whose signed checkpoints ([`checkpoint`])
//! let anyone detect a later change, and [`verify`] checks it all. The
//! keys that sign checkpoints and open records live with a key provider
//! ([`keys`]), never beside the data.
//! [`lifecycle`] keeps what happens to a record after capture: its
//! schedule item, and when it may be destroyed or must go to NARA.
//! [`capture_limit`] measures capture against the bare MLS decrypt rate.

pub mod accounts;
pub mod archive;
pub mod capture;
pub mod capture_limit;
pub mod checkpoint;
pub mod device_pg;
pub mod keys;
pub mod lifecycle;
pub mod record;
pub mod tlog;
pub mod verify;
pub mod witness;

pub use archive::{Archive, Record};
pub use capture::Capture;
pub use record::{AttachmentMeta, RecordKind, RecordMeta};

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The archive's store failed (its backend's message).
    #[error("archive database: {0}")]
    Storage(String),
    #[error("archive: {0}")]
    Archive(String),
    #[error("records member: {0}")]
    Client(#[from] keepwire_client::ClientError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Refused: a wrong sign-in, or an action the account's role may not
    /// take ([`accounts`]).
    #[error("{0}")]
    Access(String),
    /// A sign-in with a wrong name or password, or a disabled account:
    /// one message for all three, so that it tells a guesser nothing.
    #[error("wrong account name or password, or the account is disabled")]
    SignInRefused,
    /// The key provider refused or failed ([`keys`]).
    #[error("keys: {0}")]
    Keys(String),
    #[error("transparency log: {0}")]
    Log(String),
    /// The archive is not what a checkpoint its key signed says it was
    /// ([`checkpoint::check_against`]): cut back, restored from an old
    /// copy, or rewritten. Never worked around: the records service stops.
    #[error("the archive does not match a checkpoint it signed: {0}")]
    Diverged(String),
    #[error("{0}")]
    Schema(#[from] keepwire_schema::SchemaError),
}

impl From<keepwire_schema::pg::PgError> for RecordsError {
    fn from(e: keepwire_schema::pg::PgError) -> Self {
        RecordsError::Storage(e.to_string())
    }
}

impl From<keepwire_schema::pg::tokio_postgres::Error> for RecordsError {
    fn from(e: keepwire_schema::pg::tokio_postgres::Error) -> Self {
        RecordsError::Storage(keepwire_schema::pg::describe(&e))
    }
}

impl From<keepwire_client::cosignature::CosignatureError> for RecordsError {
    fn from(e: keepwire_client::cosignature::CosignatureError) -> Self {
        RecordsError::Log(e.0)
    }
}

impl From<rusqlite::Error> for RecordsError {
    fn from(e: rusqlite::Error) -> Self {
        RecordsError::Storage(e.to_string())
    }
}
