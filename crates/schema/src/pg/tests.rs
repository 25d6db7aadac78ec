//! The PostgreSQL plumbing, most of it against a real server
//! (`KEEPWIRE_TEST_POSTGRES`).

use super::*;

#[test]
fn passwords_stay_out_of_messages() {
    assert_eq!(
        redact("postgres://kw:secret@db.example/keepwire"),
        "postgres://kw:***@db.example/keepwire"
    );
    assert_eq!(
        redact("host=db user=kw password=secret dbname=k"),
        "host=db user=kw password=*** dbname=k"
    );
    assert_eq!(redact("postgres://kw@db/k"), "postgres://kw@db/k");
}

mod against_a_server {
    use super::super::scratch::Scratch;
    use super::*;

    static V1: PgSchema = PgSchema {
        name: "test store",
        companions: &[],
        migrations: &["CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT NOT NULL)"],
    };
    static V2: PgSchema = PgSchema {
        name: "test store",
        companions: &[],
        migrations: &[
            "CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
            "ALTER TABLE things ADD COLUMN colour TEXT",
        ],
    };

    #[test]
    fn migrations_run_once_in_order_keep_rows_and_refuse_newer_or_other_kinds() {
        let db = Scratch::new().unwrap();
        let pg = Pg::connect(&db.url).unwrap();
        assert_eq!(
            migrate(&pg, &V1).unwrap(),
            crate::Migrated { from: 0, to: 1 }
        );
        pg.execute("INSERT INTO things (id, name) VALUES (1, 'kept')", &[])
            .unwrap();
        // A second connection (another node) upgrades; the row stays.
        let other = pg.reconnect().unwrap();
        assert_eq!(
            migrate(&other, &V2).unwrap(),
            crate::Migrated { from: 1, to: 2 }
        );
        assert_eq!(
            migrate(&pg, &V2).unwrap(),
            crate::Migrated { from: 2, to: 2 }
        );
        let row = pg
            .query_one("SELECT name, colour FROM things", &[])
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "kept");
        assert_eq!(row.get::<_, Option<String>>(1), None);

        // The older binary refuses the newer database, changing nothing.
        let err = migrate(&pg, &V1).unwrap_err();
        assert!(err.to_string().contains("newer than this binary"), "{err}");
        let other_kind = PgSchema {
            name: "archive",
            companions: &[],
            migrations: &[],
        };
        let err = migrate(&pg, &other_kind).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds a keepwire test store, not its archive"),
            "{err}"
        );
        let v: i64 = pg
            .query_one("SELECT version FROM keepwire_schema", &[])
            .unwrap()
            .get(0);
        assert_eq!(v, 2);
    }

    #[test]
    fn a_failed_transaction_leaves_nothing_and_the_connection_usable() {
        let db = Scratch::new().unwrap();
        let pg = Pg::connect(&db.url).unwrap();
        migrate(&pg, &V1).unwrap();
        let r: Result<(), PgError> = pg.transaction(|pg| {
            pg.execute("INSERT INTO things (id, name) VALUES (1, 'a')", &[])?;
            pg.execute("INSERT INTO things (id, name) VALUES (1, 'b')", &[])?;
            Ok(())
        });
        let err = r.unwrap_err().to_string();
        assert!(err.contains("duplicate key"), "{err}");
        let n: i64 = pg
            .query_one("SELECT count(*) FROM things", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
    }

    #[test]
    fn an_unreachable_server_is_a_clear_error() {
        let err = Pg::connect("postgres://kw:pw@127.0.0.1:1/none?connect_timeout=2")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("cannot connect to PostgreSQL at postgres://kw:***@127.0.0.1:1/none"),
            "{err}"
        );
        assert!(err.contains("refused"), "says why: {err}");
    }
}

mod owner {
    use super::super::scratch::Scratch;
    use super::*;

    #[test]
    fn a_store_has_one_owner_at_a_time_and_the_next_is_told_who() {
        let db = Scratch::new().unwrap();
        let first = Owner::claim(&db.url, "server store", "keepwire serve, pid 1 on a").unwrap();
        let err = match Owner::claim(&db.url, "server store", "keepwire serve, pid 2 on b") {
            Err(PgError::InUse(m)) => m,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second owner was let in"),
        };
        assert!(err.contains("keepwire serve, pid 1 on a"), "{err}");
        assert!(err.contains("server store"), "{err}");
        // Another kind of store in the same database, and the same kind in
        // another schema, are claims of their own.
        let _archive = Owner::claim(&db.url, "archive", "records").unwrap();
        let other = Scratch::new().unwrap();
        let _elsewhere = Owner::claim(&other.url, "server store", "x").unwrap();
        // The holder gone (its connection closed), the store is free.
        drop(first);
        Owner::claim(&db.url, "server store", "keepwire serve, pid 3 on c")
            .expect("free once the first lets go");
    }
}

mod tls_tests {
    use super::*;

    /// The certificate Debian's PostgreSQL serves (`ssl = on`, the
    /// snake-oil pair made at install), for the name `localhost`.
    fn server_ca() -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file("/etc/ssl/certs/ssl-cert-snakeoil.pem")
            .expect("the local PostgreSQL's certificate (Debian's ssl-cert snake-oil)")
            .to_vec()
    }

    /// The test server's address with `host` and `sslmode` changed.
    fn url(host: &str, mode: &str) -> String {
        let base = scratch::server_url();
        let base = base.replace("127.0.0.1", host);
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}sslmode={mode}")
    }

    #[test]
    fn tls_is_used_when_required_and_the_certificate_is_verified() {
        let pg = Pg::connect_trusting(&url("localhost", "require"), vec![server_ca()]).unwrap();
        let ssl: bool = pg
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(ssl, "the connection is TLS");
        assert!(pg.reconnect().is_ok(), "another connection trusts the same");
        // The right CA, the wrong name (the certificate is for localhost):
        // refused, never a fallback to plain.
        let err = Pg::connect_trusting(&url("127.0.0.1", "require"), vec![server_ca()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("certificate"), "{err}");
        // Without sslmode=require the connection is plain.
        let plain = Pg::connect(&url("127.0.0.1", "prefer")).unwrap();
        let ssl: bool = plain
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!ssl);
    }
}
