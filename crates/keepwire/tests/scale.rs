//! A conversation of 1,000 devices through the real server: the server
//! follows the roster, the records member joins and captures, and sample
//! members receive and decrypt. (Throughput and latency at this size are
//! the benchmark's business, not this test's.)

mod common;

use std::time::Instant;

use common::rogue::{hex, text, Rogue, Rules};
use common::Agency;
use keepwire_protocol::{Request, ServerBody};
use mls_rs::group::ReceivedMessage;
use mls_rs::{ExtensionList, MlsMessage};

const DEVICES: usize = 1000;

#[test]
fn a_conversation_of_a_thousand_devices() {
    use keepwire_server::store::AccountStore;
    let agency = Agency::start();
    // Users and codes straight in the server's store: the admin CLI would
    // spend most of this test starting processes.
    let codes: Vec<(String, String)> = {
        let store =
            keepwire_server::store::SqliteStore::open(&agency.data.join("server.db")).unwrap();
        let now = keepwire_protocol::clock::Clock::from_env().now_ms();
        (0..DEVICES)
            .map(|i| {
                let user = format!("u{i:04}");
                store.add_user(&user, &user, "staff", now).unwrap();
                let code = store.new_enrolment_code(&user, now).unwrap();
                (user, code)
            })
            .collect()
    };
    let url = agency.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let start = Instant::now();
        let mut devices = Vec::new();
        for chunk in codes.chunks(100) {
            let mut set = tokio::task::JoinSet::new();
            for (user, code) in chunk {
                let (user, code) = (user.clone(), code.clone());
                let url = url.clone();
                set.spawn(async move {
                    let mut d = Rogue::enroll(&url, &user, &code).await;
                    let client = d.client(Rules::default());
                    d.upload_key_package(&client).await;
                    (d, client)
                });
            }
            while let Some(r) = set.join_next().await {
                devices.push(r.unwrap());
            }
        }
        devices.sort_by(|a, b| a.0.user.cmp(&b.0.user));
        eprintln!("{DEVICES} devices enrolled in {:?}", start.elapsed());

        let (mut creator, creator_client) = devices.remove(0);
        creator.wire.call(Request::AcknowledgeNotice).await.unwrap();
        let others: Vec<&str> = devices.iter().map(|(d, _)| d.user.as_str()).collect();
        let kps = creator.claim(&others, true).await;
        assert_eq!(
            kps.len(),
            DEVICES,
            "one key package per member and the records member"
        );
        let start = Instant::now();
        let mut group = creator_client
            .create_group(ExtensionList::new(), ExtensionList::new(), None)
            .unwrap();
        let conv = hex(group.group_id());
        let epoch0 = group.group_info_message(true).unwrap().to_bytes().unwrap();
        let mut builder = group.commit_builder();
        for k in &kps {
            builder = builder
                .add_member(MlsMessage::from_bytes(&k.key_package).unwrap())
                .unwrap();
        }
        let out = builder.build().unwrap();
        let welcome = out.welcome_messages[0].clone();
        eprintln!(
            "commit adding {} built in {:?} ({} KiB welcome)",
            kps.len(),
            start.elapsed(),
            welcome.to_bytes().unwrap().len() / 1024
        );
        let start = Instant::now();
        creator
            .wire
            .call(Request::CreateConversation {
                conv: conv.clone(),
                group_info: epoch0,
                commit: out.commit_message.to_bytes().unwrap(),
                welcome: welcome.to_bytes().unwrap(),
                next_group_info: out
                    .external_commit_group_info
                    .as_ref()
                    .unwrap()
                    .to_bytes()
                    .unwrap(),
            })
            .await
            .unwrap();
        group.apply_pending_commit().unwrap();
        eprintln!("server checked and accepted it in {:?}", start.elapsed());
        assert_eq!(group.roster().members_iter().count(), DEVICES + 1);

        let msg = group
            .encrypt_application_message(&text("to all thousand"), vec![])
            .unwrap();
        let seq = creator.submit(&conv, &msg, None, None).await.unwrap();
        // Delivered once captured: the records member joins the 1,001-leaf
        // group and decrypts it first.
        creator.wire.wait_captured(&conv, seq).await;

        // Three members, first, middle and last, join from the Welcome the
        // server pushed them and decrypt the message.
        for i in [0, DEVICES / 2, DEVICES - 2] {
            let (d, client) = &mut devices[i];
            // Sync replays what is pending for the device: its Welcome,
            // then the log after the commit that added it.
            d.wire.call(Request::Sync).await.unwrap();
            let mut got_welcome = None;
            let mut got_message = None;
            for body in std::mem::take(&mut d.wire.pushes) {
                match body {
                    ServerBody::WelcomeMessage { message, .. } => got_welcome = Some(message),
                    ServerBody::Deliver(del) => got_message = Some(del.message),
                    _ => {}
                }
            }
            let (mut g, _) = client
                .join_group(
                    None,
                    &MlsMessage::from_bytes(&got_welcome.unwrap()).unwrap(),
                    None,
                )
                .unwrap();
            match g
                .process_incoming_message(MlsMessage::from_bytes(&got_message.unwrap()).unwrap())
                .unwrap()
            {
                ReceivedMessage::ApplicationMessage(m) => {
                    assert_eq!(m.data(), text("to all thousand").as_slice())
                }
                other => panic!("expected the message, got {other:?}"),
            }
        }
    });
    // The records member joined the 1,001-leaf group and archived the message.
    let texts = agency.wait_captured(1);
    assert_eq!(texts, ["to all thousand"]);
    let records = agency.records(false);
    assert_eq!(
        records[0]["participants"].as_array().unwrap().len(),
        DEVICES + 1,
        "the record names every participant"
    );
}
