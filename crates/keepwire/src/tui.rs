//! The interactive terminal client (`keepwire chat` with no subcommand).
//!
//! [`App`] is the whole screen as data and [`App::on_key`] turns a key into
//! an [`Action`]; neither touches the terminal or the network, so both are
//! tested directly (rendering through ratatui's `TestBackend`). [`run`] is
//! the thin shell: it draws, reads keys and server pushes, and carries out
//! actions with the device session.

use std::time::Duration;

use anyhow::Result;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;
use keepwire_client::StoredMessage;
use keepwire_protocol::content::RECORDS_NOTICE;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use crate::session::{human_secs, Online};

/// One conversation in the list.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvView {
    pub conv: String,
    /// Members other than this device, the records member left out.
    pub label: String,
}

#[derive(Debug, Default)]
pub struct App {
    pub me: String,
    pub convs: Vec<ConvView>,
    pub selected: usize,
    /// Messages of the selected conversation, oldest first.
    pub messages: Vec<StoredMessage>,
    pub input: String,
    pub status: String,
    /// The records notice still needs the user's acknowledgement.
    pub notice_pending: bool,
    /// The selected conversation's timer, for the header.
    pub timer: Option<u64>,
}

/// What a key asks the shell to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    AcceptNotice,
    /// The selection changed: reload the conversation.
    Select,
    Send {
        conv: String,
        text: String,
    },
    SetTimer {
        conv: String,
        secs: u64,
    },
}

impl App {
    pub fn conv(&self) -> Option<&str> {
        self.convs.get(self.selected).map(|c| c.conv.as_str())
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            return Action::Quit;
        }
        if self.notice_pending {
            return match key.code {
                KeyCode::Char('a') | KeyCode::Char('A') => Action::AcceptNotice,
                KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
                _ => Action::None,
            };
        }
        match key.code {
            KeyCode::Esc => Action::Quit,
            KeyCode::Up | KeyCode::BackTab => {
                if !self.convs.is_empty() {
                    self.selected = (self.selected + self.convs.len() - 1) % self.convs.len();
                }
                Action::Select
            }
            KeyCode::Down | KeyCode::Tab => {
                if !self.convs.is_empty() {
                    self.selected = (self.selected + 1) % self.convs.len();
                }
                Action::Select
            }
            KeyCode::Backspace => {
                self.input.pop();
                Action::None
            }
            KeyCode::Char(c) => {
                self.input.push(c);
                Action::None
            }
            KeyCode::Enter => self.submit(),
            _ => Action::None,
        }
    }

    fn submit(&mut self) -> Action {
        let text = std::mem::take(&mut self.input);
        let text = text.trim();
        if text.is_empty() {
            return Action::None;
        }
        if text == "/quit" {
            return Action::Quit;
        }
        let Some(conv) = self.conv().map(String::from) else {
            self.status =
                "no conversation selected (create one with `keepwire chat create USER`)".into();
            return Action::None;
        };
        if let Some(arg) = text.strip_prefix("/timer") {
            return match arg.trim().parse::<u64>() {
                Ok(secs) => Action::SetTimer { conv, secs },
                Err(_) => {
                    self.status = "usage: /timer SECONDS (0 turns it off)".into();
                    Action::None
                }
            };
        }
        Action::Send {
            conv,
            text: text.to_string(),
        }
    }
}

pub fn draw(f: &mut Frame, app: &App, now_ms: u64) {
    if app.notice_pending {
        let text = vec![
            Line::from(Span::styled(
                "Records notice",
                Style::default().add_modifier(Modifier::BOLD),
            )),
            Line::from(""),
            Line::from(RECORDS_NOTICE),
            Line::from(""),
            Line::from("Press a to acknowledge and continue, q to quit."),
        ];
        f.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .block(Block::default().borders(Borders::ALL).title(" keepwire ")),
            f.area(),
        );
        return;
    }
    let [main, input, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let [list_area, history_area] =
        Layout::horizontal([Constraint::Length(28), Constraint::Min(20)]).areas(main);

    let items: Vec<ListItem> = app
        .convs
        .iter()
        .map(|c| ListItem::new(format!("{} {}", &c.conv[..6.min(c.conv.len())], c.label)))
        .collect();
    let mut state = ListState::default();
    if !app.convs.is_empty() {
        state.select(Some(app.selected));
    }
    f.render_stateful_widget(
        List::new(items)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" conversations "),
            )
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        list_area,
        &mut state,
    );

    let lines: Vec<Line> = app
        .messages
        .iter()
        .map(|m| {
            let who = if m.sender == app.me {
                "me".to_string()
            } else {
                m.sender.split('/').next().unwrap_or(&m.sender).to_string()
            };
            // Like a delivered tick: the records service has archived it,
            // so the others can read it.
            let tick = match (m.sender == app.me, m.captured) {
                (true, true) => "  ✓ captured",
                (true, false) => "  … awaiting capture",
                (false, _) => "",
            };
            Line::from(vec![
                Span::styled(format!("{who}: "), Style::default().fg(Color::Cyan)),
                Span::raw(m.text.clone()),
                Span::styled(
                    format!("  ({})", m.remaining(now_ms)),
                    Style::default().fg(Color::DarkGray),
                ),
                Span::styled(tick, Style::default().fg(Color::Green)),
            ])
        })
        .collect();
    let title = match app.timer {
        Some(t) => format!(" messages · disappear after {} ", human_secs(t)),
        None => " messages ".to_string(),
    };
    // Show the newest messages: scroll so the last line is visible.
    let visible = history_area.height.saturating_sub(2) as usize;
    let scroll = lines.len().saturating_sub(visible) as u16;
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(Block::default().borders(Borders::ALL).title(title)),
        history_area,
    );
    f.render_widget(
        Paragraph::new(app.input.as_str()).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" message (Enter sends · /timer N · Tab switches · Esc quits) "),
        ),
        input,
    );
    f.render_widget(
        Paragraph::new(app.status.as_str()).style(Style::default().fg(Color::Yellow)),
        status,
    );
}

/// Load what the screen shows from the device.
fn refresh(app: &mut App, online: &mut Online) -> Result<()> {
    let mut convs = Vec::new();
    for conv in online.device.conversations()? {
        let me = online.device.identity();
        let others: Vec<String> = online
            .device
            .participants(&conv)?
            .into_iter()
            .filter(|p| *p != me && !p.starts_with("records/"))
            .map(|p| p.split('/').next().unwrap_or_default().to_string())
            .collect();
        convs.push(ConvView {
            conv,
            label: if others.is_empty() {
                "(only you)".into()
            } else {
                others.join(", ")
            },
        });
    }
    app.convs = convs;
    if app.selected >= app.convs.len() {
        app.selected = 0;
    }
    let conv = app.conv().map(String::from);
    app.messages = match &conv {
        Some(c) => online.device.store().messages(Some(c))?,
        None => Vec::new(),
    };
    if let Some(c) = &conv {
        // Shown is read: burn-on-read messages go at the next purge.
        online.device.store().mark_read(Some(c))?;
        app.timer = online.conversation_timer(c)?;
    }
    Ok(())
}

async fn perform(app: &mut App, online: &mut Online, action: Action) -> Result<bool> {
    let result = match action {
        Action::None | Action::Select => Ok(()),
        Action::Quit => return Ok(false),
        Action::AcceptNotice => online.acknowledge_notice().await.map(|()| {
            app.notice_pending = false;
        }),
        Action::Send { conv, text } => online.send(&conv, &text, None, false).await.map(|seq| {
            app.status = format!("sent as #{seq}");
        }),
        Action::SetTimer { conv, secs } => online.set_timer(&conv, secs).await.map(|_| {
            app.status = match secs {
                0 => "disappearing timer off".into(),
                s => format!("messages now disappear after {}", human_secs(s)),
            };
        }),
    };
    if let Err(e) = result {
        app.status = format!("{e:#}");
    }
    refresh(app, online)?;
    Ok(true)
}

/// The whole terminal, or, where it reports no size (some pseudo-terminals
/// and serial consoles), `COLUMNS`×`LINES` or 80×24.
fn viewport() -> ratatui::Viewport {
    match crossterm::terminal::size() {
        Ok((w, h)) if w > 0 && h > 0 => ratatui::Viewport::Fullscreen,
        _ => {
            let env = |k: &str, d: u16| {
                std::env::var(k)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|v| *v > 0)
                    .unwrap_or(d)
            };
            ratatui::Viewport::Fixed(ratatui::layout::Rect::new(
                0,
                0,
                env("COLUMNS", 80),
                env("LINES", 24),
            ))
        }
    }
}

/// Run the interactive client until the user quits.
pub async fn run(mut online: Online) -> Result<()> {
    online.sync().await?;
    let mut app = App {
        me: online.device.identity(),
        notice_pending: !online.notice_acknowledged,
        status: format!("connected as {}", online.device.identity()),
        ..App::default()
    };
    refresh(&mut app, &mut online)?;
    let mut terminal = ratatui::try_init_with_options(ratatui::TerminalOptions {
        viewport: viewport(),
    })?;
    let result = event_loop(&mut terminal, &mut app, &mut online).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    online: &mut Online,
) -> Result<()> {
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let now = online.clock.now_ms();
        terminal.draw(|f| draw(f, app, now))?;
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(key))) => {
                    let action = app.on_key(key);
                    if !perform(app, online, action).await? {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            push = online.conn.next_push() => {
                online.handle_push(push?).await?;
                refresh(app, online)?;
            }
            _ = tick.tick() => {
                online.device.store().purge_expired(online.clock.now_ms())?;
                refresh(app, online)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert!(s.contains("bob: meet at noon  (1m 0s left)"), "{s}");
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
        assert_eq!(a.on_key(key(KeyCode::Esc)), Action::Quit);
    }
}
