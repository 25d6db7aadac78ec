//! The terminal client's screen: what [`super::App`] holds, drawn — the
//! records notice until it is acknowledged, then the conversations, the
//! selected one's messages (each with its files, its time left and, for
//! one's own, whether the records service has captured it), the input
//! line and the status line.

use keepwire_protocol::content::RECORDS_NOTICE;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::App;
use crate::session::human_secs;

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
            let who = app.who(&m.sender);
            // Like a delivered tick: the records service has archived it,
            // so the others can read it.
            let tick = match (m.sender == app.me, m.captured) {
                (true, true) => "  ✓ captured",
                (true, false) => "  … awaiting capture",
                (false, _) => "",
            };
            Line::from(vec![
                Span::styled(
                    format!("{} ", clock_time(m.server_time_ms)),
                    Style::default().fg(Color::DarkGray),
                ),
                Span::styled(format!("{who}: "), Style::default().fg(Color::Cyan)),
                Span::raw(m.text.clone()),
                Span::styled(
                    m.files
                        .iter()
                        // A thumbnail goes with its photo, unlisted.
                        .filter(|f| f.thumbnail_of.is_none())
                        .map(|f| match &f.missing {
                            None => format!("  [file: {} · {} bytes]", f.name, f.size),
                            Some(_) => format!("  [file: {} · not on this device]", f.name),
                        })
                        .collect::<String>(),
                    Style::default().fg(Color::Yellow),
                ),
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
                .title(" message (Enter sends · /help) "),
        ),
        input,
    );
    let line = if app.online {
        app.status.clone()
    } else {
        format!(
            "offline — showing what this device holds; reconnecting · {}",
            app.status
        )
    };
    f.render_widget(
        Paragraph::new(line).style(Style::default().fg(if app.online {
            Color::Yellow
        } else {
            Color::Red
        })),
        status,
    );
}

/// `HH:MM` (UTC) of a server time, for each message.
fn clock_time(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60)
}
