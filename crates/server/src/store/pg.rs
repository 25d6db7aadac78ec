//! The server store in PostgreSQL, for deployments that outgrow one
//! machine (several delivery nodes on one database come with issue 17).
//!
//! Same tables as SQLite, PostgreSQL's types (BIGINT, BYTEA, BOOLEAN),
//! and the same durability: PostgreSQL's default `synchronous_commit = on`
//! makes a commit return only once its WAL record is flushed, so a group
//! commit (one transaction per batch) is one flush, and a receipt is sent
//! only for what is on disk. Acknowledgements and garbage collection
//! commit with `synchronous_commit = off` for their transaction only —
//! atomic and ordered, flushed with the next durable commit — as SQLite's
//! do with `synchronous=NORMAL`. Conflicts are `ON CONFLICT` clauses;
//! claiming a key package is one `DELETE … RETURNING` over a row locked
//! with `SKIP LOCKED`, so two claimers never get the same one.
//!
//! The connection is used synchronously (see `keepwire_schema::pg`).

use keepwire_schema::pg::tokio_postgres::Row;
use keepwire_schema::pg::{Pg, PgSchema};

use super::api::{self, *};
use super::*;
use crate::ServerError;

mod accounts;
mod blobs;
mod checkpoints;
mod keys;
mod log;
mod withheld;

/// The server store on a PostgreSQL database of its own.
pub struct PgStore {
    pg: Pg,
}

/// The server store's schema in PostgreSQL; append, never edit.
pub static SCHEMA: PgSchema = PgSchema {
    name: "server store",
    companions: &[],
    migrations: &[
        r#"
        CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
        CREATE TABLE users (name TEXT PRIMARY KEY, display TEXT NOT NULL, category TEXT NOT NULL,
            created_ms BIGINT NOT NULL, notice_acked_ms BIGINT);
        CREATE TABLE enrolment_codes (code TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users(name),
            expires_ms BIGINT NOT NULL, used_ms BIGINT);
        CREATE TABLE devices (id TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users(name),
            signature_key BYTEA NOT NULL UNIQUE, created_ms BIGINT NOT NULL, revoked_ms BIGINT);
        CREATE TABLE key_packages (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            device TEXT NOT NULL REFERENCES devices(id), kp BYTEA NOT NULL, last_resort BOOLEAN NOT NULL);
        CREATE INDEX key_packages_device ON key_packages (device, last_resort, id);
        CREATE TABLE handed_out (ref BYTEA PRIMARY KEY, device TEXT NOT NULL, at_ms BIGINT NOT NULL);
        CREATE INDEX handed_out_at ON handed_out (at_ms);
        CREATE TABLE conversations (conv TEXT PRIMARY KEY, snapshot BYTEA NOT NULL, created_ms BIGINT NOT NULL,
            last_seq BIGINT NOT NULL, records_acked BIGINT NOT NULL DEFAULT 0, group_info BYTEA,
            suspended TEXT);
        CREATE TABLE log (conv TEXT NOT NULL, seq BIGINT NOT NULL, sender_user TEXT NOT NULL,
            sender_device TEXT NOT NULL, server_time_ms BIGINT NOT NULL, message BYTEA NOT NULL,
            sha256 BYTEA NOT NULL, signature BYTEA NOT NULL, PRIMARY KEY (conv, seq));
        CREATE TABLE welcomes (device TEXT NOT NULL, conv TEXT NOT NULL, seq BIGINT NOT NULL,
            message BYTEA NOT NULL, PRIMARY KEY (device, conv));
        CREATE INDEX welcomes_conv ON welcomes (conv);
        CREATE TABLE cursors (device TEXT NOT NULL, conv TEXT NOT NULL, acked BIGINT NOT NULL,
            PRIMARY KEY (device, conv));
        CREATE INDEX cursors_conv ON cursors (conv);
        CREATE TABLE checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL, from_size BIGINT,
            path BYTEA NOT NULL);
        CREATE TABLE receipt_keys (key BYTEA PRIMARY KEY, from_ms BIGINT NOT NULL, until_ms BIGINT);
        CREATE TABLE withheld (conv TEXT NOT NULL, seq BIGINT NOT NULL, device TEXT NOT NULL,
            handshake BOOLEAN NOT NULL, reason TEXT NOT NULL, at_ms BIGINT NOT NULL, PRIMARY KEY (conv, seq));
        CREATE TABLE blocked_devices (device TEXT PRIMARY KEY, reason TEXT NOT NULL, at_ms BIGINT NOT NULL);
        CREATE TABLE admin_actions (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at_ms BIGINT NOT NULL,
            actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL);
    "#,
        // Enrolment codes kept as their SHA-256 only (`api::code_digest`):
        // those issued before are hashed in place (issue 12).
        r#"UPDATE enrolment_codes SET code = encode(sha256(convert_to(upper(btrim(code)), 'UTF8')), 'hex')
            WHERE length(code) <> 64"#,
        // Attachment blobs (issue 13).
        blobs::SCHEMA,
    ],
};

impl PgStore {
    /// Connect to the database at `url` and bring its schema up to date.
    pub fn open(url: &str) -> Result<Self, ServerError> {
        let pg = Pg::connect(url)?;
        keepwire_schema::pg::migrate(&pg, &SCHEMA)?;
        Ok(Self { pg })
    }

    /// The store at `url` if that database already holds one: for the
    /// commands that read or change a deployment (`admin`), which must not
    /// create an empty store where an address was mistyped.
    pub fn open_existing(url: &str) -> Result<Self, ServerError> {
        let pg = Pg::connect(url)?;
        if keepwire_schema::pg::version(&pg, &SCHEMA)?.is_none() {
            return Err(ServerError::Invalid(format!(
                "the PostgreSQL database at {} holds no keepwire server store: check --database \
                 (KEEPWIRE_DATABASE); `keepwire serve` or `keepwire server` creates it on first start",
                pg.address()
            )));
        }
        keepwire_schema::pg::migrate(&pg, &SCHEMA)?;
        Ok(Self { pg })
    }
}

impl ServerStore for PgStore {
    fn reopen(&self) -> Option<Result<Box<dyn ServerStore>, ServerError>> {
        Some(
            self.pg
                .reconnect()
                .map(|pg| Box::new(PgStore { pg }) as Box<dyn ServerStore>)
                .map_err(Into::into),
        )
    }

    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.pg.address())
    }

    fn free_space(&self) -> Option<u64> {
        None
    }
}

/// A BIGINT column as the u64 it stores.
fn u64_at(r: &Row, i: usize) -> Result<u64, ServerError> {
    Ok(r.try_get::<_, i64>(i)? as u64)
}

fn opt_u64_at(r: &Row, i: usize) -> Result<Option<u64>, ServerError> {
    Ok(r.try_get::<_, Option<i64>>(i)?.map(|v| v as u64))
}

/// Every row through `f`.
fn all<T>(
    rows: Vec<Row>,
    f: impl Fn(&Row) -> Result<T, ServerError>,
) -> Result<Vec<T>, ServerError> {
    rows.iter().map(f).collect()
}
