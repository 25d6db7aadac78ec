//! The interactive terminal client (`keepwire chat` with no subcommand).
//!
//! [`App`] is the whole screen as data and [`App::on_key`] turns a key into
//! an [`Action`]; neither touches the terminal or the network, so both are
//! tested directly (rendering through ratatui's `TestBackend`). [`run`] is
//! the thin shell: it draws, reads keys and server pushes, and carries out
//! actions with the device session. The device is opened before any
//! connection, so the client starts, and keeps working, without the
//! server: it shows what the device holds, says it is offline, and
//! reconnects with back-off (1 s, doubling to 30 s).

use std::time::Duration;

use anyhow::Result;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;
use keepwire_client::StoredMessage;

use crate::net::Refused;
use crate::session::{self, human_secs, Online};

mod view;
use keepwire_client::Device;
pub use view::draw;

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
    /// Display names by user name ("alice" → "Alice Ng"), as the server
    /// last said.
    pub names: std::collections::BTreeMap<String, String>,
    /// Connected to the server (otherwise showing what the device holds).
    pub online: bool,
}

/// What a key asks the shell to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    AcceptNotice,
    /// The selection changed: reload the conversation.
    Select,
    /// Send a file (`/attach PATH`), sealed and uploaded first.
    Attach {
        conv: String,
        path: std::path::PathBuf,
    },
    Send {
        conv: String,
        text: String,
    },
    SetTimer {
        conv: String,
        secs: u64,
    },
    /// A new conversation with these users.
    Create {
        users: Vec<String>,
    },
    /// Add these users to the selected conversation.
    Add {
        conv: String,
        users: Vec<String>,
    },
}

/// What `/help` says.
pub const HELP: &str =
    "Enter sends · /create USER… starts a conversation · /add USER… adds people · \
/timer SECS sets the disappearing timer (0: off) · /attach PATH sends a file · Tab/↑↓ switch · \
/quit or Esc quits";

impl App {
    /// How `who` ("user/device") is shown: "me", or the user's display
    /// name where known.
    pub fn who(&self, sender: &str) -> String {
        if sender == self.me {
            return "me".into();
        }
        let user = sender.split('/').next().unwrap_or(sender);
        self.names
            .get(user)
            .cloned()
            .unwrap_or_else(|| user.to_string())
    }

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
        if text == "/help" {
            self.status = HELP.into();
            return Action::None;
        }
        let users =
            |arg: &str| -> Vec<String> { arg.split_whitespace().map(String::from).collect() };
        if let Some(arg) = text.strip_prefix("/create") {
            let users = users(arg);
            if users.is_empty() {
                self.status = "usage: /create USER…".into();
                return Action::None;
            }
            return Action::Create { users };
        }
        let Some(conv) = self.conv().map(String::from) else {
            self.status = "no conversation selected (start one with /create USER)".into();
            return Action::None;
        };
        if let Some(arg) = text.strip_prefix("/add") {
            let users = users(arg);
            if users.is_empty() {
                self.status = "usage: /add USER…".into();
                return Action::None;
            }
            return Action::Add { conv, users };
        }
        if let Some(arg) = text.strip_prefix("/attach") {
            let path = arg.trim();
            if path.is_empty() {
                self.status = "usage: /attach PATH".into();
                return Action::None;
            }
            return Action::Attach {
                conv,
                path: path.into(),
            };
        }
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

/// Load what the screen shows from the device (online or not).
fn refresh(app: &mut App, device: &mut Device) -> Result<()> {
    let mut convs = Vec::new();
    let me = device.identity();
    for conv in device.conversations()? {
        let others: Vec<String> = device
            .participants(&conv)?
            .into_iter()
            .filter(|p| *p != me && !p.starts_with("records/"))
            .map(|p| app.who(&p))
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
        Some(c) => device.store().messages(Some(c))?,
        None => Vec::new(),
    };
    if let Some(c) = &conv {
        // Shown is read: burn-on-read messages go at the next purge.
        device.store().mark_read(Some(c))?;
        app.timer = session::conversation_timer(device, c)?;
    }
    Ok(())
}

/// The device, and its connection when there is one: exactly one of
/// `online` (which holds the device) and `device` is set.
struct Shell {
    server: String,
    online: Option<Online>,
    device: Option<Device>,
    backoff: Duration,
    retry_at: tokio::time::Instant,
    clock: keepwire_protocol::clock::Clock,
}

/// First wait before reconnecting, doubled after each failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Shell {
    fn device(&mut self) -> &mut Device {
        match (&mut self.online, &mut self.device) {
            (Some(o), _) => &mut o.device,
            // Invariant: the device is always either online or here.
            (None, d) => d.as_mut().expect("the shell holds the device"),
        }
    }

    /// The connection failed: keep the device, show what it holds, and
    /// try again after the back-off.
    fn go_offline(&mut self, app: &mut App, why: &anyhow::Error) {
        if let Some(o) = self.online.take() {
            self.device = Some(o.device);
        }
        app.online = false;
        app.status = format!("{why:#}");
        self.retry_at = tokio::time::Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    async fn reconnect(&mut self, app: &mut App) {
        let Some(device) = self.device.take() else {
            return;
        };
        let mut online = match session::attach(&self.server, device).await {
            Ok(online) => online,
            Err((device, e)) => {
                self.device = Some(device);
                return self.go_offline(app, &e);
            }
        };
        if let Err(e) = online.sync().await {
            self.online = Some(online);
            return self.go_offline(app, &e);
        }
        app.names = online.display_names().await.unwrap_or_default();
        app.notice_pending = !online.notice_acknowledged;
        app.online = true;
        app.status = format!("connected as {}", online.device.identity());
        self.backoff = FIRST_BACKOFF;
        self.online = Some(online);
    }
}

async fn perform(app: &mut App, shell: &mut Shell, action: Action) -> Result<bool> {
    let Some(online) = shell.online.as_mut() else {
        match action {
            Action::Quit => return Ok(false),
            Action::None | Action::Select => {}
            Action::Send { text, .. } => {
                // Kept in the box, to send once connected.
                app.input = text;
                app.status = "offline: not sent (Enter again once connected)".into();
            }
            _ => app.status = "offline: try again once connected".into(),
        }
        refresh(app, shell.device())?;
        return Ok(true);
    };
    let mut unsent = None;
    let members_changed = matches!(action, Action::Create { .. } | Action::Add { .. });
    let result = match action {
        Action::None | Action::Select => Ok(()),
        Action::Quit => return Ok(false),
        Action::AcceptNotice => online.acknowledge_notice().await.map(|()| {
            app.notice_pending = false;
        }),
        Action::Send { conv, text } => {
            let r = online.send(&conv, &text, None, false).await;
            if r.is_err() {
                unsent = Some(text);
            }
            r.map(|seq| app.status = format!("sent as #{seq}"))
        }
        Action::Attach { conv, path } => online
            .send_files(&conv, "", &[path.as_path()], None, false)
            .await
            .map(|seq| app.status = format!("sent {} as #{seq}", path.display())),
        Action::SetTimer { conv, secs } => online.set_timer(&conv, secs).await.map(|_| {
            app.status = match secs {
                0 => "disappearing timer off".into(),
                s => format!("messages now disappear after {}", human_secs(s)),
            };
        }),
        Action::Create { users } => online.create(&users).await.map(|conv| {
            app.status = format!("conversation {} started", &conv[..8.min(conv.len())]);
        }),
        Action::Add { conv, users } => online
            .add(&conv, &users)
            .await
            .map(|seq| app.status = format!("added {} (#{seq})", users.join(", "))),
    };
    if let Err(e) = result {
        if let Some(text) = unsent {
            app.input = text;
        }
        if e.downcast_ref::<Refused>().is_some() {
            // The server said no; the connection is fine.
            app.status = format!("{e:#}");
        } else {
            shell.go_offline(app, &e);
        }
    }
    // People's names change only with membership: asked again after this
    // client added people (and on each connection), not on every key.
    if members_changed {
        if let Some(o) = shell.online.as_mut() {
            if let Ok(names) = o.display_names().await {
                app.names = names;
            }
        }
    }
    refresh(app, shell.device())?;
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

/// Run the interactive client until the user quits: at once with what the
/// device holds, connecting (and reconnecting) to `server` meanwhile.
pub async fn run(server: String, device: Device) -> Result<()> {
    let mut app = App {
        me: device.identity(),
        status: format!("connecting to {server}"),
        ..App::default()
    };
    let clock = keepwire_protocol::clock::Clock::from_env();
    device.store().purge_expired(clock.now_ms())?;
    let mut shell = Shell {
        server,
        online: None,
        device: Some(device),
        backoff: FIRST_BACKOFF,
        retry_at: tokio::time::Instant::now(),
        clock,
    };
    refresh(&mut app, shell.device())?;
    let mut terminal = ratatui::try_init_with_options(ratatui::TerminalOptions {
        viewport: viewport(),
    })?;
    let result = event_loop(&mut terminal, &mut app, &mut shell).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    shell: &mut Shell,
) -> Result<()> {
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let now = shell.clock.now_ms();
        terminal.draw(|f| draw(f, app, now))?;
        let retry_at = shell.retry_at;
        let offline = shell.online.is_none();
        let online = &mut shell.online;
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(key))) => {
                    let action = app.on_key(key);
                    if !perform(app, shell, action).await? {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            push = async {
                match online.as_mut() {
                    Some(o) => o.conn.next_push().await,
                    None => std::future::pending().await,
                }
            } => {
                let handled = match (push, shell.online.as_mut()) {
                    (Ok(p), Some(o)) => o.handle_push(p).await.map(|_| ()),
                    (Err(e), _) => Err(e),
                    (Ok(_), None) => Ok(()),
                };
                if let Err(e) = handled {
                    shell.go_offline(app, &e);
                }
                refresh(app, shell.device())?;
            }
            _ = tokio::time::sleep_until(retry_at), if offline => {
                shell.reconnect(app).await;
                refresh(app, shell.device())?;
            }
            _ = tick.tick() => {
                let now = shell.clock.now_ms();
                shell.device().store().purge_expired(now)?;
                refresh(app, shell.device())?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
