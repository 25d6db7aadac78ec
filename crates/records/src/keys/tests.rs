//! The file provider and the moves out of the data directory; the PKCS#11
//! provider is tested against SoftHSM2 in `tests/pkcs11.rs`.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::archive::key::LEGACY_KEY;
use crate::checkpoint::{Notary, KEY_FILE, PUB_FILE};
use crate::Archive;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_key_directory_is_owner_only_and_refused_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let keys = FileKeys::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let sealed = keys.wrap("purpose", b"secret").unwrap();
    assert_eq!(keys.unwrap("purpose", &sealed).unwrap(), b"secret");
    // Bound to its purpose, and to the root key.
    assert!(keys.unwrap("other purpose", &sealed).is_err());
    let signer = keys.checkpoint_signer().unwrap();
    for f in ["root.key", "checkpoint.key"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    // Group-readable: refused, naming the fix.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let e = FileKeys::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("readable by group or others") && e.contains("chmod 700"),
        "{e}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.join("root.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = keys.unwrap("purpose", &sealed).unwrap_err().to_string();
    assert!(e.contains("root.key is readable by group or others"), "{e}");
    std::fs::set_permissions(dir.join("root.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // The same key on every open.
    let again = FileKeys::open(&dir).unwrap().checkpoint_signer().unwrap();
    assert_eq!(again.verifier_key(), signer.verifier_key());
    // A new key directory opens nothing sealed by the old one, and says so.
    let other = FileKeys::open(&tmp.path().join("other")).unwrap();
    let e = other.unwrap("purpose", &sealed).unwrap_err().to_string();
    assert!(e.contains("root.key is missing"), "{e}");
}

/// An archive made before key providers: `archive.key`, `checkpoint.key`
/// and `passphrase` in the records directory.
#[test]
fn keys_kept_beside_an_older_archive_move_to_the_provider_and_leave_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    std::fs::create_dir_all(&records).unwrap();
    let old_key = [5u8; 32];
    std::fs::write(records.join(LEGACY_KEY), old_key).unwrap();
    let (skey, vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, "keepwire.archive/old");
    std::fs::write(records.join(KEY_FILE), &skey).unwrap();
    std::fs::write(records.join(PUB_FILE), format!("{vkey}\n")).unwrap();
    std::fs::write(records.join("passphrase"), "old device secret\n").unwrap();
    {
        // The old archive named its key.
        let a = Archive::open(&records, None).unwrap();
        a.set_meta("key_id", &crate::archive::key::key_id(&old_key))
            .unwrap();
    }

    let keys = FileKeys::open(&tmp.path().join("keys")).unwrap();
    let archive = Archive::open(&records, Some(&keys)).unwrap();
    assert_eq!(
        archive.key_id().unwrap(),
        crate::archive::key::key_id(&old_key)
    );
    let notary = Notary::new(&keys, &records).unwrap();
    assert_eq!(notary.verifier_key, vkey, "the log keeps its key and name");
    assert_eq!(device_secret(&records, &keys).unwrap(), "old device secret");
    for gone in [LEGACY_KEY, KEY_FILE, "passphrase"] {
        assert!(
            !records.join(gone).exists(),
            "{gone} left the records directory"
        );
    }
    // No secret in the records directory any more: only sealed ones.
    let sealed = std::fs::read(records.join(DEVICE_SEALED)).unwrap();
    assert!(!sealed.windows(6).any(|w| w == b"device"));
    // And it all opens again from the provider alone.
    drop(archive);
    let archive = Archive::open(&records, Some(&keys)).unwrap();
    assert_eq!(
        archive.key_id().unwrap(),
        crate::archive::key::key_id(&old_key)
    );
    assert_eq!(device_secret(&records, &keys).unwrap(), "old device secret");

    // Another provider's checkpoint key is refused by name, not used.
    let stranger = FileKeys::open(&tmp.path().join("stranger")).unwrap();
    let e = Notary::new(&stranger, &records).err().unwrap().to_string();
    assert!(e.contains("the wrong key provider"), "{e}");
    let e = Archive::open(&records, Some(&stranger))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not open with key directory"), "{e}");

    // A checkpoint key dropped into a records directory is taken in only
    // if it is the key of that archive's log.
    let planted = tmp.path().join("planted");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join(PUB_FILE), format!("{vkey}\n")).unwrap();
    let (other, _) = signed_note::generate_key(&mut rand::rngs::OsRng, "keepwire.archive/evil");
    std::fs::write(planted.join(KEY_FILE), &other).unwrap();
    let empty = FileKeys::open(&tmp.path().join("empty")).unwrap();
    let e = Notary::new(&empty, &planted).err().unwrap().to_string();
    assert!(e.contains("not taken in"), "{e}");
    assert!(!empty.has_checkpoint_key().unwrap());
}

/// A records device whose sealed secret is gone is not given a new one.
#[test]
fn a_lost_device_secret_is_named_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    let keys = FileKeys::open(&tmp.path().join("keys")).unwrap();
    let secret = device_secret(&records, &keys).unwrap();
    drop(keepwire_client::device::PendingDevice::create(&records, &secret).unwrap());
    assert_eq!(device_secret(&records, &keys).unwrap(), secret);
    std::fs::remove_file(records.join(DEVICE_SEALED)).unwrap();
    // A crash's leftover does not get in the way either.
    std::fs::write(records.join("device.sealed.tmp"), b"half").unwrap();
    let e = device_secret(&records, &keys).unwrap_err().to_string();
    assert!(e.contains("has no sealed secret"), "{e}");
    seal_device_secret(&records, &keys, &secret).unwrap();
    assert_eq!(device_secret(&records, &keys).unwrap(), secret);
}

#[test]
fn a_rotation_is_one_transaction_and_escrow_restores_a_lost_provider() {
    use crate::archive::NewRecord;
    use crate::record::{RecordKind, RecordMeta};
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    let keys = FileKeys::open(&tmp.path().join("keys")).unwrap();
    let mut a = Archive::open(&records, Some(&keys)).unwrap();
    let receipt = keepwire_protocol::Receipt {
        conv: "c".into(),
        seq: 1,
        message_sha256: vec![1; 32],
        server_time_ms: 1,
        signature: vec![2; 64],
        server_key: vec![3; 32],
    };
    a.insert(&NewRecord {
        meta: &RecordMeta {
            conv: "c".into(),
            seq: 1,
            kind: RecordKind::Application,
            epoch: 1,
            sender: "a/1".into(),
            participants: vec!["a/1".into()],
            server_time_ms: 1,
            captured_at_ms: 2,
            expire_after_secs: None,
            burn_on_read: false,
            note: None,
            attachments: Vec::new(),
        },
        receipt: &receipt,
        plaintext: Some(br#"{"format":1,"text":"kept","sent_at_ms":1}"#),
    })
    .unwrap();
    let before = a.key_id().unwrap();
    let old_shares = a.escrow_key(2, 3, None, None, "officer", 3).unwrap();
    assert_eq!(a.rotate_key(&keys, "officer", 4).unwrap(), 1);
    let after = a.key_id().unwrap();
    assert_ne!(before, after);
    keys.checkpoint_signer().unwrap();
    let checkpoint = keys.export_checkpoint_key().unwrap();
    assert!(checkpoint.is_some());
    let shares = a
        .escrow_key(
            2,
            3,
            Some("device".into()),
            checkpoint.clone(),
            "officer",
            5,
        )
        .unwrap();
    drop(a);

    // The key directory is lost: a new one opens nothing...
    std::fs::remove_dir_all(tmp.path().join("keys")).unwrap();
    let fresh = FileKeys::open(&tmp.path().join("keys2")).unwrap();
    assert!(Archive::open(&records, Some(&fresh)).is_err());
    let store = || {
        Box::new(
            crate::archive::SqliteArchive::open(&records.join(crate::archive::ARCHIVE_DB)).unwrap(),
        )
    };
    // ...shares of the key before the rotation are refused by name...
    let e = Archive::restore_key(store(), &fresh, &old_shares[..2], "officer", 6)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!("the shares are of archive key {before}")),
        "{e}"
    );
    // ...and two of the three current shares bring every record back.
    let (a, secrets) = Archive::restore_key(
        store(),
        &fresh,
        &[shares[2].clone(), shares[0].clone()],
        "officer",
        7,
    )
    .unwrap();
    assert_eq!(secrets.device_secret.as_deref(), Some("device"));
    assert_eq!(secrets.checkpoint_key, checkpoint);
    assert_eq!(a.list(true, true).unwrap()[0].text.as_deref(), Some("kept"));
    drop(a);
    let a = Archive::open(&records, Some(&fresh)).unwrap();
    assert_eq!(a.key_id().unwrap(), after);
    assert_eq!(a.list(true, true).unwrap()[0].text.as_deref(), Some("kept"));
    // Each step is a privileged action in the log.
    let actions: Vec<String> = (0..a.log_size().unwrap())
        .filter_map(|n| a.log_leaf(n).unwrap())
        .map(|(_, _, data)| String::from_utf8(data).unwrap())
        .filter(|l| l.contains("\"action\""))
        .collect();
    for what in ["escrow-key", "rotate-key", "restore-key"] {
        assert!(
            actions.iter().any(|l| l.contains(what)),
            "{what} in {actions:?}"
        );
    }
}

/// The key directory signs checkpoints with AWS-LC (its FIPS module in a
/// `fips` build): exactly the signatures, key ID and verifier key of the
/// C2SP signed-note signer, so checkpoints read the same everywhere.
#[test]
fn the_checkpoint_signer_signs_as_the_signed_note_reference_does() {
    let dir = tempfile::tempdir().unwrap();
    let keys = FileKeys::open(&dir.path().join("keys")).unwrap();
    let ours = keys.checkpoint_signer().unwrap();
    let skey =
        String::from_utf8(std::fs::read(dir.path().join("keys/checkpoint.key")).unwrap()).unwrap();
    let reference = signed_note::StandardSigner::new(skey.trim()).unwrap();
    use signed_note::Signer as _;
    assert_eq!(ours.name(), reference.name());
    assert_eq!(ours.key_id(), reference.key_id());
    for msg in [&b""[..], b"keepwire.archive/x\n7\nAAAA\n"] {
        assert_eq!(ours.sign(msg).unwrap(), reference.sign(msg).unwrap());
    }
    let verifier = signed_note::StandardVerifier::new(&ours.verifier_key()).unwrap();
    let sig = ours.sign(b"checked").unwrap();
    assert!(signed_note::Verifier::verify(&verifier, b"checked", &sig));
}
