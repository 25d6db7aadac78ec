use super::*;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn screen(app: &App, now: u64) -> String {
    let mut t = Terminal::new(TestBackend::new(100, 20)).unwrap();
    t.draw(|f| draw(f, app, now)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn app() -> App {
    App {
        me: "alice/d1".into(),
        convs: vec![
            ConvView {
                conv: "aaaaaaaa".into(),
                label: "bob".into(),
            },
            ConvView {
                conv: "bbbbbbbb".into(),
                label: "carol, dan".into(),
            },
        ],
        messages: vec![StoredMessage {
            captured: true,
            conv: "aaaaaaaa".into(),
            seq: 2,
            sender: "bob/d2".into(),
            text: "meet at noon".into(),
            sent_at_ms: 0,
            server_time_ms: 0,
            expire_at_ms: Some(90_000),
            burn_on_read: false,
            read: false,
            files: vec![keepwire_client::FileInfo {
                name: "map.png".into(),
                media_type: "image/png".into(),
                size: 2048,
                sha256: "a".repeat(64),
                missing: None,
                thumbnail_of: None,
            }],
        }],
        timer: Some(3600),
        ..App::default()
    }
}

#[test]
fn the_notice_comes_first_and_only_a_acknowledges_it() {
    let mut a = App {
        notice_pending: true,
        ..app()
    };
    let s = screen(&a, 0);
    assert!(
        s.contains("Records notice") && s.contains("federal records"),
        "{s}"
    );
    assert_eq!(a.on_key(key(KeyCode::Char('x'))), Action::None);
    assert_eq!(a.on_key(key(KeyCode::Enter)), Action::None);
    assert_eq!(a.on_key(key(KeyCode::Char('a'))), Action::AcceptNotice);
}

#[test]
fn shows_each_message_with_its_remaining_time() {
    let s = screen(&app(), 30_000);
    assert!(
        s.contains("bob: meet at noon  [file: map.png · 2048 bytes]  (1m 0s left)"),
        "{s}"
    );
    assert!(s.contains("disappear after 1 h"), "{s}");
    assert!(s.contains("carol, dan"), "{s}");
}

#[test]
fn typing_and_enter_send_to_the_selected_conversation() {
    let mut a = app();
    assert_eq!(a.on_key(key(KeyCode::Down)), Action::Select);
    for c in "hi all".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(
        a.on_key(key(KeyCode::Enter)),
        Action::Send {
            conv: "bbbbbbbb".into(),
            text: "hi all".into()
        }
    );
    assert!(a.input.is_empty());
    for c in "/timer 60".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(
        a.on_key(key(KeyCode::Enter)),
        Action::SetTimer {
            conv: "bbbbbbbb".into(),
            secs: 60
        }
    );
    for c in "/timer soon".chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(a.on_key(key(KeyCode::Enter)), Action::None);
    assert!(a.status.contains("usage: /timer"));
    assert_eq!(
        typed(&mut a, "/attach /tmp/scene photo.jpg"),
        Action::Attach {
            conv: "bbbbbbbb".into(),
            path: "/tmp/scene photo.jpg".into()
        }
    );
    assert_eq!(typed(&mut a, "/attach"), Action::None);
    assert!(a.status.contains("usage: /attach"));
    assert_eq!(a.on_key(key(KeyCode::Esc)), Action::Quit);
}

fn typed(a: &mut App, text: &str) -> Action {
    for c in text.chars() {
        a.on_key(key(KeyCode::Char(c)));
    }
    a.on_key(key(KeyCode::Enter))
}

#[test]
fn conversations_are_started_and_joined_from_the_client_and_help_says_how() {
    let mut a = app();
    assert_eq!(typed(&mut a, "/help"), Action::None);
    assert!(a.status.contains("/create USER") && a.status.contains("/add USER"));
    assert_eq!(
        typed(&mut a, "/create bob carol"),
        Action::Create {
            users: vec!["bob".into(), "carol".into()]
        }
    );
    assert_eq!(
        typed(&mut a, "/add dan"),
        Action::Add {
            conv: "aaaaaaaa".into(),
            users: vec!["dan".into()]
        }
    );
    assert_eq!(typed(&mut a, "/add"), Action::None);
    assert!(a.status.contains("usage: /add"));
}

#[test]
fn offline_it_says_so_and_shows_what_the_device_holds_by_name_and_time() {
    let mut a = app();
    a.names.insert("bob".into(), "Bob Ortiz".into());
    a.messages[0].server_time_ms = (13 * 3600 + 5 * 60) * 1000;
    let s = screen(&a, 30_000);
    assert!(
        s.contains("offline — showing what this device holds"),
        "{s}"
    );
    assert!(s.contains("13:05 Bob Ortiz: meet at noon"), "{s}");
    a.online = true;
    a.status = "connected as alice/d1".into();
    let s = screen(&a, 30_000);
    assert!(
        !s.contains("offline") && s.contains("connected as alice/d1"),
        "{s}"
    );
}
