//! `kodama-server top`: a terminal dashboard of a running server. It reads
//! the server's JSON overview (`GET /api/v1/overview`, with the API token
//! from the data directory) once a second; it never runs a server itself.
//!
//! Cameras (status, link, tier, fps, bitrate, viewers, recording), the
//! selected camera's bitrate history as a sparkline, the recorder and disk,
//! and the server's recent log events. Keys: ↑/↓ (or k/j) select a camera,
//! Tab moves between cameras and events (↑/↓ then scroll the events),
//! r refreshes now, q or Esc quits.
//!
//! [`Dashboard`] is the state and its key handling, free of I/O;
//! [`draw`] renders it; [`run`] is the terminal and HTTP loop.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, List, ListItem, Paragraph, Row, Sparkline, Table, TableState,
};
use ratatui::Frame;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiConfig};
use crate::metrics::Overview;

/// Bitrate samples kept per camera (two minutes at one a second).
pub const HISTORY: usize = 120;

/// Which pane the arrow keys move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The camera table.
    Cameras,
    /// The event log.
    Events,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond a redraw.
    None,
    /// Fetch the overview now.
    Refresh,
    /// Leave.
    Quit,
}

/// The dashboard's state.
#[derive(Debug)]
pub struct Dashboard {
    /// The newest overview.
    pub overview: Option<Overview>,
    /// Why the last fetch failed (shown until one succeeds).
    pub error: Option<String>,
    /// Selected camera (index into `overview.cameras`).
    pub selected: usize,
    /// Which pane has the keys.
    pub focus: Focus,
    /// Events scrolled back from the newest.
    pub events_back: usize,
    /// Bitrate history per camera id, kbit/s, oldest first.
    history: HashMap<String, VecDeque<u64>>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            overview: None,
            error: None,
            selected: 0,
            focus: Focus::Cameras,
            events_back: 0,
            history: HashMap::new(),
        }
    }
}

impl Dashboard {
    /// Takes a fresh overview.
    pub fn update(&mut self, o: Overview) {
        for c in &o.cameras {
            let h = self.history.entry(c.id.clone()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back((c.bitrate_bps / 1000.0).round() as u64);
        }
        self.history
            .retain(|id, _| o.cameras.iter().any(|c| &c.id == id));
        self.selected = self.selected.min(o.cameras.len().saturating_sub(1));
        self.overview = Some(o);
        self.error = None;
    }

    /// A fetch failed.
    pub fn failed(&mut self, why: String) {
        self.error = Some(why);
    }

    /// The bitrate history of camera `id`, kbit/s.
    pub fn history(&self, id: &str) -> Vec<u64> {
        self.history
            .get(id)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    fn cameras(&self) -> usize {
        self.overview.as_ref().map_or(0, |o| o.cameras.len())
    }

    fn events(&self) -> usize {
        self.overview.as_ref().map_or(0, |o| o.events.len())
    }

    /// Handles a key.
    pub fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> Action {
        match (code, self.focus) {
            (KeyCode::Char('q') | KeyCode::Esc, _) => Action::Quit,
            (KeyCode::Char('c'), _) if modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
            (KeyCode::Char('r'), _) => Action::Refresh,
            (KeyCode::Tab | KeyCode::BackTab, _) => {
                self.focus = match self.focus {
                    Focus::Cameras => Focus::Events,
                    Focus::Events => Focus::Cameras,
                };
                Action::None
            }
            (KeyCode::Down | KeyCode::Char('j'), Focus::Cameras) => {
                self.selected = (self.selected + 1).min(self.cameras().saturating_sub(1));
                Action::None
            }
            (KeyCode::Up | KeyCode::Char('k'), Focus::Cameras) => {
                self.selected = self.selected.saturating_sub(1);
                Action::None
            }
            (KeyCode::Home, Focus::Cameras) => {
                self.selected = 0;
                Action::None
            }
            (KeyCode::End, Focus::Cameras) => {
                self.selected = self.cameras().saturating_sub(1);
                Action::None
            }
            (KeyCode::Up | KeyCode::Char('k'), Focus::Events) => {
                self.events_back = (self.events_back + 1).min(self.events().saturating_sub(1));
                Action::None
            }
            (KeyCode::Down | KeyCode::Char('j'), Focus::Events) => {
                self.events_back = self.events_back.saturating_sub(1);
                Action::None
            }
            _ => Action::None,
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn clock(at_us: u64) -> String {
    let secs = at_us / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn focused(block: Block<'_>, yes: bool) -> Block<'_> {
    if yes {
        block.border_style(Style::new().fg(Color::Cyan))
    } else {
        block
    }
}

/// Draws the dashboard.
pub fn draw(frame: &mut Frame, d: &Dashboard) {
    let [header, cameras, detail, events, help] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(5),
        Constraint::Length(7),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, d);
    draw_cameras(frame, cameras, d);
    draw_detail(frame, detail, d);
    draw_events(frame, events, d);
    frame.render_widget(
        Paragraph::new("↑/↓ select · Tab cameras/events · r refresh · q quit")
            .style(Style::new().add_modifier(Modifier::DIM)),
        help,
    );
}

fn draw_header(frame: &mut Frame, area: Rect, d: &Dashboard) {
    let mut spans = Vec::new();
    match &d.overview {
        Some(o) => {
            let online = o.cameras.iter().filter(|c| c.online).count();
            let viewers: u64 = o.cameras.iter().map(|c| c.viewers).sum();
            let up = o.uptime_s as u64;
            spans.push(Span::styled(
                format!("{} ", o.name),
                Style::new().add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(format!(
                "v{} · up {}h{:02}m · cameras {online}/{} online · viewers {viewers} · recorder queue {}/{} written {} · retention deleted {}",
                o.version,
                up / 3600,
                up / 60 % 60,
                o.cameras.len(),
                o.recorder.queue,
                o.recorder.queue_capacity,
                human_bytes(o.recorder.bytes_written),
                o.recorder.retention_deletions,
            )));
            if let Some(disk) = o.disk {
                spans.push(Span::raw(format!(
                    " · disk free {} of {}",
                    human_bytes(disk.free_bytes),
                    human_bytes(disk.total_bytes)
                )));
            }
        }
        None => spans.push(Span::raw("connecting to the server…")),
    }
    let mut lines = vec![Line::from(spans)];
    if let Some(e) = &d.error {
        lines.push(Line::styled(
            format!("error: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" kodama-server top "),
        ),
        area,
    );
}

fn draw_cameras(frame: &mut Frame, area: Rect, d: &Dashboard) {
    let cams = d
        .overview
        .as_ref()
        .map(|o| o.cameras.as_slice())
        .unwrap_or(&[]);
    let rows = cams.iter().map(|c| {
        let status = if c.online {
            Cell::from("online").style(Style::new().fg(Color::Green))
        } else {
            Cell::from("offline").style(Style::new().fg(Color::Red))
        };
        let rec = match (c.recording, c.recording_lag_s) {
            (true, Some(lag)) => format!("rec {lag:.0}s"),
            (true, None) => "rec".into(),
            (false, _) => "-".into(),
        };
        Row::new(vec![
            Cell::from(c.name.clone()),
            status,
            Cell::from(c.link.clone().unwrap_or_else(|| "-".into())),
            Cell::from(c.tier.clone().unwrap_or_else(|| "-".into())),
            Cell::from(format!("{:.1}", c.fps)),
            Cell::from(format!("{:.0}", c.bitrate_bps / 1000.0)),
            Cell::from(c.viewers.to_string()),
            Cell::from(rec),
            Cell::from((c.stale_frames + c.recorder_drops).to_string()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(18),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new([
            "camera",
            "status",
            "link",
            "tier",
            "fps",
            "kbit/s",
            "viewers",
            "recording",
            "drops",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("▶ ")
    .block(focused(
        Block::new().borders(Borders::ALL).title(" cameras "),
        d.focus == Focus::Cameras,
    ));
    let mut state = TableState::default().with_selected((!cams.is_empty()).then_some(d.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame, area: Rect, d: &Dashboard) {
    let camera = d.overview.as_ref().and_then(|o| o.cameras.get(d.selected));
    let Some(c) = camera else {
        frame.render_widget(
            Paragraph::new("no cameras yet: pair one with `kodama-server camera add NAME`")
                .block(Block::new().borders(Borders::ALL).title(" camera ")),
            area,
        );
        return;
    };
    let history = d.history(&c.id);
    let peak = history.iter().copied().max().unwrap_or(0);
    let title = format!(
        " {} · {}x{} · firmware {} · {:.0} kbit/s (peak {peak}) · {} frames received ",
        c.name,
        c.width,
        c.height,
        if c.firmware.is_empty() {
            "?"
        } else {
            &c.firmware
        },
        c.bitrate_bps / 1000.0,
        c.video_frames,
    );
    let width = usize::from(area.width.saturating_sub(2));
    let shown = &history[history.len().saturating_sub(width)..];
    frame.render_widget(
        Sparkline::default()
            .data(shown)
            .style(Style::new().fg(Color::Cyan))
            .block(Block::new().borders(Borders::ALL).title(title)),
        area,
    );
}

fn draw_events(frame: &mut Frame, area: Rect, d: &Dashboard) {
    let events = d
        .overview
        .as_ref()
        .map(|o| o.events.as_slice())
        .unwrap_or(&[]);
    let visible = usize::from(area.height.saturating_sub(2));
    let end = events.len().saturating_sub(d.events_back);
    let start = end.saturating_sub(visible);
    let items = events[start..end].iter().rev().map(|e| {
        let colour = match e.level.as_str() {
            "ERROR" => Color::Red,
            "WARN" => Color::Yellow,
            _ => Color::Reset,
        };
        ListItem::new(Line::from(vec![
            Span::raw(format!("{} ", clock(e.at_us))),
            Span::styled(format!("{:5} ", e.level), Style::new().fg(colour)),
            Span::raw(e.message.clone()),
        ]))
    });
    let title = if d.events_back > 0 {
        format!(" events and errors (newest first, {} back) ", d.events_back)
    } else {
        " events and errors (newest first) ".into()
    };
    frame.render_widget(
        List::new(items).block(focused(
            Block::new().borders(Borders::ALL).title(title),
            d.focus == Focus::Events,
        )),
        area,
    );
}

/// How often the overview is fetched.
pub const REFRESH: Duration = Duration::from_secs(1);

async fn fetch(addr: SocketAddr, token: &str) -> Result<Overview, String> {
    let resp = api::client::get(addr, token, "/api/v1/overview")
        .await
        .map_err(|e| e.to_string())?;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("unexpected overview: {e}"))
}

/// Runs the dashboard until the user quits or `cancel` fires.
pub async fn run(
    data_dir: &Path,
    cfg: &ApiConfig,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    anyhow::ensure!(
        std::io::stdout().is_terminal(),
        "top needs a terminal (for scripts, read GET /metrics or /api/v1/overview)"
    );
    let token_path = cfg.token_path(data_dir);
    let token = std::fs::read_to_string(&token_path)
        .map_err(|e| {
            anyhow::anyhow!(
                "reading the API token {}: {e} (is --data-dir the server's?)",
                token_path.display()
            )
        })?
        .trim()
        .to_owned();
    let addr = api::client::connect_addr(cfg.listen);

    // Keys come from a thread that polls the terminal (crossterm's reads
    // block); it stops when the loop below has ended.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel(16);
    let stop = cancel.child_token();
    let key_reader = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.is_cancelled() {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => match event::read() {
                        Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                            if keys_tx.blocking_send(Some((k.code, k.modifiers))).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {
                            // A resize or other event: redraw.
                            if keys_tx.blocking_send(None).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    Ok(false) => {}
                    Err(_) => return,
                }
            }
        }
    });

    let mut terminal = ratatui::try_init()?;
    let mut dashboard = Dashboard::default();
    let mut tick = tokio::time::interval(REFRESH);
    let result: anyhow::Result<()> = async {
        loop {
            terminal.draw(|f| draw(f, &dashboard))?;
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => match fetch(addr, &token).await {
                    Ok(o) => dashboard.update(o),
                    Err(e) => dashboard.failed(e),
                },
                key = keys.recv() => match key {
                    Some(Some((code, mods))) => match dashboard.key(code, mods) {
                        Action::Quit => return Ok(()),
                        Action::Refresh => tick.reset_immediately(),
                        Action::None => {}
                    },
                    Some(None) => {}
                    None => anyhow::bail!("the terminal closed"),
                },
            }
        }
    }
    .await;
    ratatui::restore();
    stop.cancel();
    let _ = key_reader.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CameraOverview;
    use ratatui::backend::TestBackend;

    fn overview(bitrates: &[(&str, f64)]) -> Overview {
        Overview {
            name: "box".into(),
            cameras: bitrates
                .iter()
                .map(|(name, bps)| CameraOverview {
                    id: format!("id-{name}"),
                    name: (*name).into(),
                    online: *bps > 0.0,
                    bitrate_bps: *bps,
                    link: Some("wifi (wlan0)".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn keys_move_the_selection_within_bounds_and_switch_panes() {
        let mut d = Dashboard::default();
        d.update(overview(&[("a", 1e6), ("b", 2e6), ("c", 0.0)]));
        let none = KeyModifiers::NONE;
        assert_eq!(d.key(KeyCode::Up, none), Action::None);
        assert_eq!(d.selected, 0);
        d.key(KeyCode::Down, none);
        d.key(KeyCode::Char('j'), none);
        d.key(KeyCode::Down, none);
        assert_eq!(d.selected, 2);
        d.key(KeyCode::Tab, none);
        assert_eq!(d.focus, Focus::Events);
        d.key(KeyCode::Down, none);
        assert_eq!(d.selected, 2, "arrows scroll events while they have focus");
        assert_eq!(d.key(KeyCode::Char('r'), none), Action::Refresh);
        assert_eq!(d.key(KeyCode::Char('q'), none), Action::Quit);
        assert_eq!(
            d.key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Action::Quit
        );
        // A camera that disappears pulls the selection back.
        d.update(overview(&[("a", 1e6)]));
        assert_eq!(d.selected, 0);
    }

    #[test]
    fn history_is_bounded_and_drawn() {
        let mut d = Dashboard::default();
        for i in 0..HISTORY + 30 {
            d.update(overview(&[("porch", (i * 1000) as f64)]));
        }
        let h = d.history("id-porch");
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.last(), Some(&((HISTORY + 29) as u64)));
        let mut terminal = ratatui::Terminal::new(TestBackend::new(110, 30)).expect("terminal");
        terminal.draw(|f| draw(f, &d)).expect("draw");
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(screen.contains("porch"), "{screen}");
        assert!(screen.contains("wifi (wlan0)"), "{screen}");
        assert!(screen.contains("cameras 1/1 online"), "{screen}");
    }
}
