//! Attachment blobs over the real server (issue 13): a file sealed on the
//! device, uploaded as binary frames over the device's own WebSocket and
//! read back, and a message carrying it — which, until the records
//! service captures files themselves, it withholds: no member is served a
//! file the archive does not hold. Through the real binary, on either
//! backend; the protocol is spoken by hand (`common::rogue`) so that
//! every refusal a modified client can meet is reached too.

mod common;

use common::rogue::{refused, Rogue, Rules};
use common::Agency;
use keepwire_client::attachment::{open, seal};
use keepwire_protocol::attachment::{BlobId, BlobList};
use keepwire_protocol::content::Content;
use keepwire_protocol::{ErrorCode, Request, ServerBody, MAX_BLOB_CHUNK};

#[test]
fn a_file_is_uploaded_read_back_and_never_served_without_its_capture() {
    uploaded_and_read(Agency::start());
}

#[test]
fn on_postgres_a_file_is_uploaded_read_back_and_never_served_without_its_capture() {
    common::on_postgres(|| uploaded_and_read(Agency::start()));
}

fn blob_of(body: ServerBody) -> (BlobId, u64, bool) {
    match body {
        ServerBody::Blob {
            blob,
            received,
            complete,
            ..
        } => (blob, received, complete),
        other => panic!("{other:?}"),
    }
}

fn uploaded_and_read(agency: Agency) {
    let code = |user: &str| {
        agency
            .admin(&[
                "user",
                "add",
                user,
                "--display",
                user,
                "--category",
                "staff",
            ])
            .trim()
            .to_string()
    };
    let (code_a, code_b, code_c) = (code("alice"), code("bob"), code("carol"));
    let url = agency.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut alice = Rogue::enroll(&url, "alice", &code_a).await;
        let mut bob = Rogue::enroll(&url, "bob", &code_b).await;
        let mut carol = Rogue::enroll(&url, "carol", &code_c).await;
        for r in [&mut alice, &mut bob, &mut carol] {
            r.wire.call(Request::AcknowledgeNotice).await.unwrap();
        }
        let (ca, cb) = (alice.client(Rules::default()), bob.client(Rules::default()));
        bob.upload_key_package(&cb).await;
        let (conv, mut g) = alice.create(&ca, &["bob"]).await;

        // A file of two and a half frames, sealed on the device.
        let file: Vec<u8> = (0..MAX_BLOB_CHUNK * 5 / 2)
            .map(|i| (i % 241) as u8)
            .collect();
        let mut sealed_bytes = Vec::new();
        let sealed = seal(&mut &file[..], &mut sealed_bytes).unwrap();
        let create = |size: u64| Request::BlobCreate {
            conv: conv.clone(),
            size,
            cipher_sha256: sealed.cipher_sha256.clone(),
        };
        refused(
            carol.wire.call(create(sealed_bytes.len() as u64)).await,
            ErrorCode::NotMember,
            "a non-member uploading",
        );
        let (blob, received, _) = blob_of(
            alice
                .wire
                .call(create(sealed_bytes.len() as u64))
                .await
                .unwrap(),
        );
        assert_eq!(received, 0);

        // The first frame; then the connection breaks off and the upload
        // resumes, on a new connection, from what the server holds.
        let first = &sealed_bytes[..MAX_BLOB_CHUNK];
        let (_, received, _) = blob_of(alice.wire.chunk(&blob, 0, first).await.unwrap());
        assert_eq!(received, MAX_BLOB_CHUNK as u64);
        refused(
            alice.wire.chunk(&blob, 0, first).await,
            ErrorCode::BadFrame,
            "a chunk sent twice",
        );
        refused(
            bob.wire.chunk(&blob, received, b"x").await,
            ErrorCode::UnknownBlob,
            "a chunk into another device's upload",
        );
        let mut again = common::rogue::Wire::connect(&url).await;
        alice.auth_on(&mut again).await.unwrap();
        let (_, mut at, _) = blob_of(
            again
                .call(Request::BlobStatus { blob: blob.clone() })
                .await
                .unwrap(),
        );
        let mut complete = false;
        while at < sealed_bytes.len() as u64 {
            let end = (at as usize + MAX_BLOB_CHUNK).min(sealed_bytes.len());
            let (_, r, c) = blob_of(
                again
                    .chunk(&blob, at, &sealed_bytes[at as usize..end])
                    .await
                    .unwrap(),
            );
            (at, complete) = (r, c);
        }
        assert!(
            complete,
            "the last chunk completes the blob, its hash checked"
        );

        // Nobody but its uploader reads an upload no message carries; the
        // uploader reads it whole, a frame at a time, and it opens to the
        // file.
        refused(
            bob.wire.fetch(&blob, 0, 16).await,
            ErrorCode::UnknownBlob,
            "an upload no message carries",
        );
        let mut downloaded = Vec::new();
        while downloaded.len() < sealed_bytes.len() {
            let part = again
                .fetch(&blob, downloaded.len() as u64, MAX_BLOB_CHUNK as u32)
                .await
                .unwrap();
            assert!(!part.is_empty() && part.len() <= MAX_BLOB_CHUNK);
            downloaded.extend_from_slice(&part);
        }
        let reference = sealed.reference(blob.clone(), "scene.jpg", "image/jpeg");
        let mut opened = Vec::new();
        open(&reference, &mut &downloaded[..], &mut opened).unwrap();
        assert!(
            opened == file,
            "the file read back opens to the file sealed"
        );

        // An upload whose bytes do not hash to what was declared is
        // discarded when its last byte arrives.
        let (lying, _, _) = blob_of(alice.wire.call(create(4)).await.unwrap());
        refused(
            alice.wire.chunk(&lying, 0, b"four").await,
            ErrorCode::BadFrame,
            "bytes that do not hash to what was declared",
        );
        refused(
            alice.wire.call(Request::BlobStatus { blob: lying }).await,
            ErrorCode::UnknownBlob,
            "the discarded upload",
        );

        // The message carries it: the reference inside, the id in the clear.
        let mut content = Content::text("the scene, as found", None, false, 1);
        content.attachments = vec![reference];
        let message = g
            .encrypt_application_message(
                &content.encode().unwrap(),
                BlobList::of(&content.attachments).encode(),
            )
            .unwrap();
        let seq = alice.submit(&conv, &message, None, None).await.unwrap();
        // The records service does not capture files yet: it withholds the
        // message (archived, saying why) rather than let it reach members
        // with files the archive does not hold.
        let withheld = common::wait_for("the message archived as withheld", 60, || {
            agency
                .records(true)
                .into_iter()
                .find(|r| r["seq"] == seq && r["conv"] == conv.as_str())
        });
        assert_eq!(withheld["kind"], "withheld", "{withheld}");
        assert!(
            withheld["note"]
                .as_str()
                .unwrap()
                .contains("does not capture attachments"),
            "{withheld}"
        );
        refused(
            bob.wire.fetch(&blob, 0, 16).await,
            ErrorCode::UnknownBlob,
            "a file of a withheld message",
        );
        refused(
            carol.wire.fetch(&blob, 0, 16).await,
            ErrorCode::UnknownBlob,
            "a non-member",
        );

        // The sender of a withheld message is blocked, and its
        // conversation takes nothing more, files included.
        refused(
            alice.wire.call(create(4)).await,
            ErrorCode::DeviceBlocked,
            "the sender of a withheld message",
        );
        refused(
            bob.wire.call(create(4)).await,
            ErrorCode::ConversationSuspended,
            "an upload into a suspended conversation",
        );
    });
}
