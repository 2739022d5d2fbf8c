//! Draws one frame of the dashboard from the [`Model`]: a title line, the pane tabs, the pane,
//! and the key help. Below [`MIN_WIDTH`]x[`MIN_HEIGHT`] it draws a one-paragraph summary and
//! says how large the terminal must be, rather than a squeezed dashboard.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table, Tabs, Wrap};

use super::model::{Model, Pane, age, bytes, micros};

/// The smallest terminal the full dashboard is drawn in.
pub const MIN_WIDTH: u16 = 60;
/// See [`MIN_WIDTH`].
pub const MIN_HEIGHT: u16 = 16;

/// Draws the dashboard.
pub fn draw(f: &mut Frame<'_>, m: &Model) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return small(f, m, area);
    }
    let [title, tabs, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(title_line(m)), title);
    let selected = Pane::ALL.iter().position(|p| *p == m.pane).unwrap_or(0);
    f.render_widget(
        Tabs::new(Pane::ALL.iter().map(|p| p.title()))
            .select(selected)
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        tabs,
    );
    match m.pane {
        Pane::Traffic => traffic(f, m, body),
        Pane::Server => server(f, m, body),
        Pane::Cluster => cluster(f, m, body),
    }
    f.render_widget(
        Paragraph::new("q quit   p pause   Tab next pane").style(Style::default().fg(Color::DarkGray)),
        help,
    );
}

fn title_line(m: &Model) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!("nanodb monitor  {}", m.target),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if let Some(s) = m.latest() {
        spans.push(Span::raw(format!("  v{}  up {}", s.version, uptime(s.uptime_s))));
    }
    if let Some(why) = &m.disconnected {
        spans.push(Span::styled(
            format!("  DISCONNECTED (retrying): {why}"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    } else if m.latest().is_none() {
        spans.push(Span::raw("  connecting..."));
    }
    if m.paused {
        spans.push(Span::styled("  [PAUSED]", Style::default().fg(Color::Yellow)));
    }
    Line::from(spans)
}

fn uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s / 60) % 60),
    }
}

fn small(f: &mut Frame<'_>, m: &Model, area: Rect) {
    let mut text =
        format!("terminal too small ({}x{}): need {MIN_WIDTH}x{MIN_HEIGHT}.", area.width, area.height);
    if let Some(why) = &m.disconnected {
        text.push_str(&format!(" DISCONNECTED: {why}."));
    } else if let Some(s) = m.latest() {
        let ops: u64 = m.protocols().iter().filter_map(|p| m.rates(p).last().copied()).sum();
        text.push_str(&format!(" keys {} ops/s {ops}", s.keys));
    }
    text.push_str(" q quits.");
    f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
}

fn traffic(f: &mut Frame<'_>, m: &Model, area: Rect) {
    let protocols = m.protocols();
    let n = protocols.len().max(1) as u32;
    let [sparks, table] =
        Layout::vertical([Constraint::Min(4 * n as u16), Constraint::Length(protocols.len() as u16 + 3)])
            .areas(area);
    let rows = Layout::vertical(protocols.iter().map(|_| Constraint::Ratio(1, n))).split(sparks);
    for (p, row) in protocols.iter().zip(rows.iter()) {
        let rates = m.rates(p);
        let now = rates.last().copied().unwrap_or(0);
        let width = row.width.saturating_sub(2) as usize;
        let shown: Vec<u64> = rates.iter().rev().take(width).rev().copied().collect();
        f.render_widget(
            Sparkline::default()
                .block(Block::default().borders(Borders::ALL).title(format!(" {p}  {now} ops/s ")))
                .data(&shown)
                .style(Style::default().fg(Color::Cyan)),
            *row,
        );
    }
    let latest = m.latest();
    let body: Vec<Row<'_>> = protocols
        .iter()
        .map(|p| {
            let (p50, p99, p999) = match m.percentiles(p) {
                Some((a, b, c)) => (micros(a), micros(b), micros(c)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let stats = latest.and_then(|s| s.protocols.iter().find(|q| &q.protocol == p));
            Row::new(vec![
                p.clone(),
                p50,
                p99,
                p999,
                stats.map_or(0, |s| s.connections).to_string(),
                stats.map_or(0, |s| s.errors).to_string(),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            body,
            [
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Length(10),
            ],
        )
        .header(
            Row::new(["protocol", "p50", "p99", "p99.9", "conns", "errors"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(" latency, last 15 s ")),
        table,
    );
}

fn server(f: &mut Frame<'_>, m: &Model, area: Rect) {
    let Some(s) = m.latest() else {
        return f.render_widget(
            Paragraph::new("no stats yet").block(Block::default().borders(Borders::ALL)),
            area,
        );
    };
    let [left, right] = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(area);
    let per_key = s.memory_bytes.checked_div(s.keys).map_or_else(|| "-".into(), |b| format!("{b} B"));
    let mut lines = vec![
        Line::from(format!("keys         {}", s.keys)),
        Line::from(format!("memory (RSS) {}", bytes(s.memory_bytes))),
        Line::from(format!("bytes/key    {per_key}")),
        Line::from(""),
        Line::from(Span::styled("connections", Style::default().add_modifier(Modifier::BOLD))),
    ];
    for p in &s.protocols {
        lines.push(Line::from(format!("  {:<8} {}", p.protocol, p.connections)));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" memory ")),
        left,
    );

    let feed = s.feed.unwrap_or_default();
    let mut lines = vec![
        Line::from(Span::styled("watchers", Style::default().add_modifier(Modifier::BOLD))),
        Line::from(format!("  subscribers  {}", feed.subscribers)),
        Line::from(format!(
            "  queued       {} (fullest {:.1}% of {})",
            feed.queued,
            feed.fullest_queue_permille as f64 / 10.0,
            feed.queue_len_limit
        )),
        Line::from(format!("  dropped      {}   lagged {}", feed.dropped, feed.lagged)),
        Line::from(""),
        Line::from(Span::styled("log", Style::default().add_modifier(Modifier::BOLD))),
    ];
    match &s.log {
        None => lines.push(Line::from("  persistence off (in-memory)")),
        Some(l) => {
            lines.push(Line::from(format!("  fsync        {}", l.fsync)));
            lines.push(Line::from(format!("  since snap   {}", bytes(l.bytes_since_snapshot))));
            lines.push(Line::from(format!("  last fsync   {}", age(l.last_fsync_age_ms))));
            lines.push(Line::from(format!("  snapshot     {}", age(l.snapshot_age_ms))));
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" feed and log ")),
        right,
    );
}

fn cluster(f: &mut Frame<'_>, m: &Model, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" cluster ");
    let Some(c) = m.latest().and_then(|s| s.cluster.as_ref()) else {
        return f.render_widget(Paragraph::new("single node: not in a cluster").block(block), area);
    };
    let [head, peers] = Layout::vertical([Constraint::Length(4), Constraint::Min(3)]).areas(area);
    let leader = if c.leader_id == 0 { "none".into() } else { c.leader_id.to_string() };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!("node {}  role {}  term {}  leader {leader}", c.node_id, c.role, c.term)),
            Line::from(format!("commit {}  applied {}", c.commit_index, c.applied_index)),
        ])
        .block(block),
        head,
    );
    let rows: Vec<Row<'_>> = c
        .peers
        .iter()
        .map(|p| {
            let lag = if p.lag < 0 { "-".to_string() } else { p.lag.to_string() };
            Row::new(vec![p.id.to_string(), p.role.clone(), lag])
        })
        .collect();
    f.render_widget(
        Table::new(rows, [Constraint::Length(8), Constraint::Length(12), Constraint::Length(10)])
            .header(Row::new(["peer", "role", "lag"]).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(Block::default().borders(Borders::ALL).title(" peers (lag known on the leader) ")),
        peers,
    );
}
