//! The records device's state in PostgreSQL: a [`DeviceBackend`] for the
//! device store (the records member's MLS group state, key packages and
//! settings, sealed as on every device), in the archive's database — the
//! same custody — so that a records worker's state can live beside its
//! archive and be taken over by another worker (issue 17).
//!
//! Writes wait for the WAL flush, as SQLite's wait for fsync; `write` is
//! one transaction, so a batch of group-state writes lands whole or not
//! at all.

use keepwire_client::store::{DeviceBackend, MessageRow};
use keepwire_client::ClientError;
use keepwire_schema::pg::tokio_postgres::Row;
use keepwire_schema::pg::{Pg, PgError, PgSchema};

/// A device store on a PostgreSQL database (the archive's).
pub struct PgDevice {
    pg: Pg,
    /// Which device's state this is: one database can hold several
    /// workers' devices.
    device: String,
}

/// The records device store's schema in PostgreSQL; append, never edit.
pub static SCHEMA: PgSchema = PgSchema {
    name: "records device",
    companions: &["archive"],
    migrations: &[r#"
        CREATE TABLE device_meta (device TEXT NOT NULL, k TEXT NOT NULL, v BYTEA NOT NULL,
            PRIMARY KEY (device, k));
        CREATE TABLE device_kv (device TEXT NOT NULL, ns TEXT NOT NULL, k BYTEA NOT NULL, v BYTEA NOT NULL,
            PRIMARY KEY (device, ns, k));
        CREATE TABLE device_messages (device TEXT NOT NULL, conv TEXT NOT NULL, seq BIGINT NOT NULL,
            server_time_ms BIGINT NOT NULL, expire_at_ms BIGINT, burn_on_read BOOLEAN NOT NULL,
            read BOOLEAN NOT NULL DEFAULT false, body BYTEA NOT NULL, PRIMARY KEY (device, conv, seq));
        CREATE INDEX device_messages_expiry ON device_messages (device, expire_at_ms)
            WHERE expire_at_ms IS NOT NULL;
    "#],
};

impl PgDevice {
    /// The state of the device named `device` in the database at `url`
    /// (its tables made on first use).
    pub fn open(url: &str, device: &str) -> Result<Self, ClientError> {
        let pg = Pg::connect(url).map_err(storage)?;
        keepwire_schema::pg::migrate(&pg, &SCHEMA)
            .map_err(|e| ClientError::Store(e.to_string()))?;
        Ok(Self {
            pg,
            device: device.to_string(),
        })
    }
}

fn storage(e: PgError) -> ClientError {
    ClientError::Store(e.to_string())
}

fn db(e: keepwire_schema::pg::tokio_postgres::Error) -> ClientError {
    ClientError::Store(keepwire_schema::pg::describe(&e))
}

fn message_row(r: &Row) -> Result<MessageRow, ClientError> {
    Ok(MessageRow {
        conv: r.try_get(0).map_err(db)?,
        seq: r.try_get::<_, i64>(1).map_err(db)? as u64,
        server_time_ms: r.try_get::<_, i64>(2).map_err(db)? as u64,
        expire_at_ms: r
            .try_get::<_, Option<i64>>(3)
            .map_err(db)?
            .map(|v| v as u64),
        burn_on_read: r.try_get(4).map_err(db)?,
        read: r.try_get(5).map_err(db)?,
        body: r.try_get(6).map_err(db)?,
    })
}

impl DeviceBackend for PgDevice {
    fn describe(&self) -> String {
        format!("PostgreSQL {} (device {})", self.pg.address(), self.device)
    }

    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.pg
            .query_opt(
                "SELECT v FROM device_meta WHERE device=$1 AND k=$2",
                &[&self.device, &k],
            )
            .map_err(storage)?
            .map(|r| r.try_get(0).map_err(db))
            .transpose()
    }

    fn set_meta(&mut self, kvs: &[(&str, &[u8])]) -> Result<(), ClientError> {
        let device = &self.device;
        self.pg
            .transaction(|pg| -> Result<(), PgError> {
                for (k, v) in kvs {
                    pg.execute(
                        "INSERT INTO device_meta (device, k, v) VALUES ($1, $2, $3)
                         ON CONFLICT (device, k) DO UPDATE SET v = excluded.v",
                        &[device, k, v],
                    )?;
                }
                Ok(())
            })
            .map_err(storage)
    }

    fn get(&self, ns: &str, k: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.pg
            .query_opt(
                "SELECT v FROM device_kv WHERE device=$1 AND ns=$2 AND k=$3",
                &[&self.device, &ns, &k],
            )
            .map_err(storage)?
            .map(|r| r.try_get(0).map_err(db))
            .transpose()
    }

    fn keys(&self, ns: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        // BYTEA compares bytewise, as SQLite's BLOB does: the same order.
        let rows = self
            .pg
            .query(
                "SELECT k FROM device_kv WHERE device=$1 AND ns=$2 ORDER BY k",
                &[&self.device, &ns],
            )
            .map_err(storage)?;
        let mut out = Vec::new();
        for r in &rows {
            let k: Vec<u8> = r.try_get(0).map_err(db)?;
            if k.starts_with(prefix) {
                out.push(k);
            }
        }
        Ok(out)
    }

    fn write(
        &mut self,
        puts: &[(&str, &[u8], &[u8])],
        deletes: &[(&str, &[u8])],
    ) -> Result<(), ClientError> {
        let device = &self.device;
        self.pg
            .transaction(|pg| -> Result<(), PgError> {
                for (ns, k, v) in puts {
                    pg.execute(
                        "INSERT INTO device_kv (device, ns, k, v) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (device, ns, k) DO UPDATE SET v = excluded.v",
                        &[device, ns, k, v],
                    )?;
                }
                for (ns, k) in deletes {
                    pg.execute(
                        "DELETE FROM device_kv WHERE device=$1 AND ns=$2 AND k=$3",
                        &[device, ns, k],
                    )?;
                }
                Ok(())
            })
            .map_err(storage)
    }

    fn insert_message(&mut self, m: &MessageRow) -> Result<(), ClientError> {
        self.pg
            .execute(
                "INSERT INTO device_messages (device, conv, seq, server_time_ms, expire_at_ms,
                    burn_on_read, read, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &self.device,
                    &m.conv,
                    &(m.seq as i64),
                    &(m.server_time_ms as i64),
                    &m.expire_at_ms.map(|v| v as i64),
                    &m.burn_on_read,
                    &m.read,
                    &m.body,
                ],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn messages(&self, conv: Option<&str>) -> Result<Vec<MessageRow>, ClientError> {
        self.pg
            .query(
                "SELECT conv, seq, server_time_ms, expire_at_ms, burn_on_read, read, body
                 FROM device_messages WHERE device=$1 AND ($2::TEXT IS NULL OR conv = $2::TEXT)
                 ORDER BY conv, seq",
                &[&self.device, &conv],
            )
            .map_err(storage)?
            .iter()
            .map(message_row)
            .collect()
    }

    fn mark_read(&mut self, conv: Option<&str>) -> Result<usize, ClientError> {
        let device = &self.device;
        self.pg
            .transaction(|pg| -> Result<u64, PgError> {
                pg.execute(
                    "UPDATE device_messages SET read = true
                     WHERE device=$1 AND ($2::TEXT IS NULL OR conv = $2::TEXT)",
                    &[device, &conv],
                )?;
                pg.execute(
                    "DELETE FROM device_messages WHERE device=$1 AND burn_on_read AND read",
                    &[device],
                )
            })
            .map(|n| n as usize)
            .map_err(storage)
    }

    fn purge_expired(&mut self, now_ms: u64) -> Result<usize, ClientError> {
        self.pg
            .execute(
                "DELETE FROM device_messages
                 WHERE device=$1 AND expire_at_ms IS NOT NULL AND expire_at_ms <= $2",
                &[&self.device, &(now_ms as i64)],
            )
            .map(|n| n as usize)
            .map_err(storage)
    }

    fn message_count(&self) -> Result<u64, ClientError> {
        let r = self
            .pg
            .query_one(
                "SELECT COUNT(*) FROM device_messages WHERE device=$1",
                &[&self.device],
            )
            .map_err(storage)?;
        Ok(r.try_get::<_, i64>(0).map_err(db)? as u64)
    }

    fn next_expiry(&self) -> Result<Option<u64>, ClientError> {
        let r = self
            .pg
            .query_one(
                "SELECT MIN(expire_at_ms) FROM device_messages WHERE device=$1",
                &[&self.device],
            )
            .map_err(storage)?;
        Ok(r.try_get::<_, Option<i64>>(0)
            .map_err(db)?
            .map(|v| v as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_backend_keeps_the_device_store_contract() {
        let db = keepwire_schema::pg::scratch::Scratch::new()
            .expect("a PostgreSQL server for the storage contract (KEEPWIRE_TEST_POSTGRES)");
        let mut n = 0;
        keepwire_client::store::contract::run_all(|| {
            n += 1;
            // Each check gets a device of its own in the one database.
            Box::new(PgDevice::open(&db.url, &format!("records-{n}")).unwrap())
        });
    }

    #[test]
    fn the_records_device_and_the_archive_share_a_database_and_the_store_seals_over_it() {
        let db = keepwire_schema::pg::scratch::Scratch::new().unwrap();
        let _archive = crate::archive::PgArchive::open(&db.url).unwrap();
        let store = keepwire_client::Store::unlock(
            Box::new(PgDevice::open(&db.url, "records-1").unwrap()),
            "passphrase",
        )
        .unwrap();
        store.put("state", b"group", b"secret group state").unwrap();
        assert_eq!(
            store.get("state", b"group").unwrap().as_deref(),
            Some(&b"secret group state"[..])
        );
        // Sealed in the database, and a wrong passphrase is refused.
        let raw = PgDevice::open(&db.url, "records-1").unwrap();
        let sealed = raw.get("state", b"group").unwrap().unwrap();
        assert!(!sealed.windows(b"secret".len()).any(|w| w == b"secret"));
        assert!(matches!(
            keepwire_client::Store::unlock(Box::new(raw), "wrong"),
            Err(ClientError::WrongPassphrase)
        ));
        // The server's store is still refused in it.
        let server_kind = PgSchema {
            name: "server store",
            companions: &[],
            migrations: &[],
        };
        let pg = Pg::connect(&db.url).unwrap();
        assert!(keepwire_schema::pg::migrate(&pg, &server_kind).is_err());
    }
}
