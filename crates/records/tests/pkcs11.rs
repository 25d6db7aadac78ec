//! The PKCS#11 provider against a real token (SoftHSM2): keys made in the
//! token and never extractable, checkpoints signed inside that any C2SP
//! verifier accepts, the archive key sealed by the token's root key,
//! rotation, and escrow restoring the archive onto a new token after the
//! first one is lost.
//!
//! One test function: SoftHSM reads its configuration once per process.

use keepwire_records::archive::{NewRecord, SqliteArchive, ARCHIVE_DB};
use keepwire_records::checkpoint::{open_note, Notary};
use keepwire_records::keys::{softhsm, KeyProvider, Pkcs11Keys};
use keepwire_records::{Archive, RecordKind, RecordMeta};

fn record(a: &mut Archive, seq: u64, text: &str) {
    let receipt = keepwire_protocol::Receipt {
        conv: "c".into(),
        seq,
        message_sha256: vec![1; 32],
        server_time_ms: seq,
        signature: vec![2; 64],
        server_key: vec![3; 32],
    };
    let plain = keepwire_protocol::content::Content::text(text, None, false, seq)
        .encode()
        .unwrap();
    a.insert(&NewRecord {
        meta: &RecordMeta {
            conv: "c".into(),
            seq,
            kind: RecordKind::Application,
            epoch: 1,
            sender: "a/1".into(),
            participants: vec!["a/1".into()],
            server_time_ms: seq,
            captured_at_ms: seq,
            expire_after_secs: None,
            burn_on_read: false,
            note: None,
            attachments: Vec::new(),
        },
        receipt: &receipt,
        plaintext: Some(&plain),
    })
    .unwrap();
}

#[test]
fn an_hsm_signs_checkpoints_seals_the_archive_key_and_escrow_survives_its_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm = softhsm::Token::setup(tmp.path()).expect("SoftHSM2 (apt-get install softhsm2)");
    let (var, value) = hsm.env();
    // Before any PKCS#11 call, and the only test in this process.
    std::env::set_var(var, value);
    let config = hsm.init("keepwire", "1234").unwrap();
    // The spare that replaces it once it is lost (SoftHSM sees only the
    // tokens that exist when it is loaded).
    let spare = hsm.init("replacement", "5678").unwrap();

    let mut wrong = config.clone();
    wrong.pin = "9999".into();
    let e = Pkcs11Keys::open(&wrong).err().unwrap().to_string();
    assert!(e.contains("wrong PIN"), "{e}");
    let mut absent = config.clone();
    absent.token = "nope".into();
    let e = Pkcs11Keys::open(&absent).err().unwrap().to_string();
    assert!(e.contains("no initialised token labelled `nope`"), "{e}");

    let keys = Pkcs11Keys::open(&config).unwrap();
    assert!(!keys.has_checkpoint_key().unwrap());
    let records = tmp.path().join("records");
    let mut archive = Archive::open(&records, Some(&keys)).unwrap();
    for seq in 1..=3 {
        record(&mut archive, seq, &format!("message {seq}"));
    }
    // Checkpoints signed in the token verify as C2SP notes with the
    // public key alone, and the same key is found on the next open.
    let notary = Notary::new(&keys, &records).unwrap();
    let (_, note) = archive.issue_checkpoint(&notary, 10).unwrap();
    let cp = open_note(&note, &notary.verifier_key).unwrap();
    assert_eq!(cp.size(), 3);
    // Both keys were made in the token, sensitive and never extractable,
    // as the token itself reports.
    assert_eq!(
        keys.protections().unwrap(),
        [
            ("checkpoint key".to_string(), true, false),
            ("root key".to_string(), true, false)
        ]
    );
    let reopened = Pkcs11Keys::open(&config).unwrap();
    assert_eq!(
        Notary::new(&reopened, &records).unwrap().verifier_key,
        notary.verifier_key
    );
    // Nothing in the records directory opens a record: the archive key is
    // sealed by the token.
    for f in std::fs::read_dir(&records).unwrap() {
        let name = f.unwrap().file_name();
        assert!(
            [ARCHIVE_DB, "checkpoint.pub"].contains(&name.to_str().unwrap())
                || name.to_str().unwrap().starts_with(ARCHIVE_DB),
            "{name:?} in the records directory"
        );
    }
    // Sealing is bound to its purpose.
    let sealed = keys.wrap("a purpose", b"secret").unwrap();
    assert_eq!(keys.unwrap("a purpose", &sealed).unwrap(), b"secret");
    assert!(keys.unwrap("another purpose", &sealed).is_err());

    // Rotation works through the token, and escrow splits the new key.
    assert_eq!(archive.rotate_key(&keys, "officer", 11).unwrap(), 3);
    assert_eq!(
        keys.export_checkpoint_key().unwrap(),
        None,
        "never leaves the token"
    );
    let shares = archive
        .escrow_key(3, 5, Some("device".into()), None, "officer", 12)
        .unwrap();
    let key_id = archive.key_id().unwrap();
    drop(archive);
    drop(notary);
    drop(reopened);
    drop(keys);

    // The HSM is lost; the spare takes its place. It opens nothing, and
    // says why...
    let keys = Pkcs11Keys::open(&spare).unwrap();
    let e = Archive::open(&records, Some(&keys))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("holds no root key"), "{e}");
    // ...until three custodians bring their shares.
    let store = Box::new(SqliteArchive::open(&records.join(ARCHIVE_DB)).unwrap());
    let (restored, secrets) = Archive::restore_key(
        store,
        &keys,
        &[shares[4].clone(), shares[1].clone(), shares[2].clone()],
        "officer",
        13,
    )
    .unwrap();
    assert_eq!(restored.key_id().unwrap(), key_id);
    assert_eq!(secrets.device_secret.as_deref(), Some("device"));
    drop(restored);
    let archive = Archive::open(&records, Some(&keys)).unwrap();
    let texts: Vec<_> = archive
        .list(false, true)
        .unwrap()
        .into_iter()
        .map(|r| r.text.unwrap())
        .collect();
    assert_eq!(texts, ["message 1", "message 2", "message 3"]);
}
