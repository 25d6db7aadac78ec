//! Attachment blobs in the core: who may upload, which blobs a message
//! may carry, and who may read a blob when — the same marks as the entry
//! that carries it.

use super::*;
use crate::store::api::AttachmentPolicyChange;
use keepwire_protocol::attachment::{BlobId, BlobList};
use keepwire_protocol::BlobChunk;
use sha2::{Digest, Sha256};

fn blob_of(body: ServerBody) -> BlobId {
    match body {
        ServerBody::Blob { blob, .. } => blob,
        other => panic!("{other:?}"),
    }
}

fn create(conv: &str, data: &[u8]) -> Request {
    Request::BlobCreate {
        conv: conv.to_string(),
        size: data.len() as u64,
        cipher_sha256: hex::encode(Sha256::digest(data)),
    }
}

fn carrying(blobs: &[&BlobId]) -> Vec<u8> {
    BlobList {
        blobs: blobs.iter().map(|b| (*b).clone()).collect(),
    }
    .encode()
}

#[test]
fn blobs_are_uploaded_carried_and_read_only_as_their_message_is() {
    uploaded_carried_and_read();
}

#[test]
fn on_postgres_blobs_are_uploaded_carried_and_read_only_as_their_message_is() {
    on_postgres(uploaded_carried_and_read);
}

fn uploaded_carried_and_read() {
    let mut w = World::new();
    let mut alice = w.device("alice", "staff");
    let mut bob = w.device("bob", "staff");
    let mut carol = w.device("carol", "staff");
    let mut records = w.device(RECORDS_USER, "records");
    let (ca, cb, cc, cr) = (
        alice.client(Rules::default()),
        bob.client(Rules::default()),
        carol.client(Rules::default()),
        records.client(Rules::default()),
    );
    for _ in 0..2 {
        w.upload(&mut bob, &cb);
        w.upload(&mut carol, &cc);
        w.upload(&mut records, &cr);
    }
    w.call(&mut alice, Request::AcknowledgeNotice).unwrap();
    w.call(&mut carol, Request::AcknowledgeNotice).unwrap();
    let new_conv = |w: &mut World, alice: &mut Dev, with: &str| {
        let kps = w.claim(alice, &[with], true);
        let mut g = ca
            .create_group(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap();
        let conv = hex::encode(g.group_id());
        w.call(alice, creation(&mut g, &kps)).unwrap();
        g.apply_pending_commit().unwrap();
        (g, conv)
    };
    let (mut g, conv) = new_conv(&mut w, &mut alice, "bob");
    let (_, other) = new_conv(&mut w, &mut alice, "carol");
    let archived = |conv: &str, seq| Request::Archived {
        conv: conv.to_string(),
        from: seq,
        to: seq,
        withheld: Vec::new(),
    };
    w.call(&mut records, archived(&conv, 1)).unwrap();

    // Uploading: members only, within the agency's size limit.
    let data = b"the ciphertext of a photograph".to_vec();
    refused(
        w.call(&mut carol, create(&conv, &data)),
        ErrorCode::NotMember,
        "a non-member uploading",
    );
    refused(
        w.call(
            &mut alice,
            Request::BlobCreate {
                conv: conv.clone(),
                size: 101 << 20,
                cipher_sha256: "0".repeat(64),
            },
        ),
        ErrorCode::TooLarge,
        "a file over the agency's limit",
    );
    let id = blob_of(w.call(&mut alice, create(&conv, &data)).unwrap());
    let chunk = BlobChunk {
        id: 1,
        blob: id.clone(),
        offset: 0,
        bytes: data.clone(),
    };
    refused(
        w.core.blob_chunk_allowed(&bob.session, &chunk),
        ErrorCode::UnknownBlob,
        "a chunk into another device's upload",
    );
    refused(
        w.core.blob_chunk_allowed(
            &alice.session,
            &BlobChunk {
                offset: 3,
                ..chunk.clone()
            },
        ),
        ErrorCode::BadFrame,
        "a chunk that does not follow what was received",
    );
    w.core.blob_chunk_allowed(&alice.session, &chunk).unwrap();
    // The shell writes on a handle of its own (the log writer's stands in).
    w.writer.blob_append(&id, 0, &data).unwrap();

    // A message may not carry an unfinished upload.
    let see = |g: &mut Group<_>, blobs: &[&BlobId]| {
        g.encrypt_application_message(b"see attached", carrying(blobs))
            .unwrap()
    };
    let m = see(&mut g, &[&id]);
    refused(
        w.call(&mut alice, submit(&conv, &m, None)),
        ErrorCode::BadFrame,
        "an unfinished upload",
    );
    w.writer.blob_finish(&id).unwrap();
    // Nor a blob uploaded for another conversation.
    let elsewhere = blob_of(w.call(&mut alice, create(&other, b"other")).unwrap());
    w.writer.blob_append(&elsewhere, 0, b"other").unwrap();
    w.writer.blob_finish(&elsewhere).unwrap();
    let m = see(&mut g, &[&elsewhere]);
    refused(
        w.call(&mut alice, submit(&conv, &m, None)),
        ErrorCode::UnknownBlob,
        "another conversation's blob",
    );

    // Before a message carries it, only its uploader reads it.
    refused(
        w.core.blob_fetch_allowed(&bob.session, &id),
        ErrorCode::UnknownBlob,
        "an unsent upload",
    );
    w.core.blob_fetch_allowed(&alice.session, &id).unwrap();
    let m = see(&mut g, &[&id]);
    let seq = match w.call(&mut alice, submit(&conv, &m, None)).unwrap() {
        ServerBody::Receipt(r) => r.seq,
        other => panic!("{other:?}"),
    };
    assert_eq!(w.core.store().blob(&id).unwrap().unwrap().seq, Some(seq));
    let again = see(&mut g, &[&id]);
    refused(
        w.call(&mut alice, submit(&conv, &again, None)),
        ErrorCode::BadFrame,
        "a blob carried twice",
    );

    // Durable: the records member reads it; the other members only once
    // it is captured; a non-member never.
    w.core.blob_fetch_allowed(&records.session, &id).unwrap();
    refused(
        w.core.blob_fetch_allowed(&bob.session, &id),
        ErrorCode::UnknownBlob,
        "before capture",
    );
    w.call(&mut records, archived(&conv, seq)).unwrap();
    w.core.blob_fetch_allowed(&bob.session, &id).unwrap();
    refused(
        w.core.blob_fetch_allowed(&carol.session, &id),
        ErrorCode::UnknownBlob,
        "a non-member",
    );

    // The quota counts what the user's uploads hold.
    w.core
        .store()
        .set_attachment_policy(AttachmentPolicyChange {
            quota_bytes: Some(data.len() as u64 + 10),
            ..Default::default()
        })
        .unwrap();
    refused(
        w.call(&mut alice, create(&conv, &data)),
        ErrorCode::QuotaExceeded,
        "over the quota",
    );
}
