//! `nanodb-cli monitor`: a live dashboard fed by polling gRPC `Admin.Stats`.
//!
//! Polling rather than a streaming `WatchStats` RPC, by cost: one unary call a second is a few
//! hundred bytes and a few microseconds of the server's time, the server keeps no per-watcher
//! task or timer, and a poll that fails is simply the next one's reconnect (a stream would need
//! its own resume logic after a restart). The answer is cumulative, so rates and 15-second
//! latency percentiles are differences of two answers ([`model`]).
//!
//! The terminal runs in raw mode on the alternate screen and is restored on every exit path
//! (quit, error, panic). Keys are read on a blocking thread; stats arrive from a polling task;
//! the loop redraws on either, and on resize.

pub mod model;
pub mod ui;

use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::terminal;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use crate::args::Conn;
use crate::client::Failure;
use crate::grpc::Admin;
use model::{Model, Sample};

enum Input {
    Key(KeyCode, KeyModifiers),
    Redraw,
    Stats(Result<Box<nanodb_protocol::pb::StatsResponse>, String>, Duration),
}

/// Restores the terminal when dropped, whatever ended the monitor.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = terminal::disable_raw_mode();
        let _ =
            crossterm::execute!(std::io::stdout(), terminal::LeaveAlternateScreen, crossterm::cursor::Show);
    }
}

/// Runs the dashboard until `q` (or Ctrl-C).
pub async fn run(conn: &Conn, interval: f64) -> Result<(), Failure> {
    if !(0.1..=3600.0).contains(&interval) {
        return Err(Failure::Usage(format!("--interval {interval}: give 0.1 to 3600 seconds")));
    }
    let interval = Duration::from_secs_f64(interval);
    let mut admin = Admin::new(conn)?;
    let target = format!("{}:{}", conn.host, conn.grpc_port);

    terminal::enable_raw_mode().map_err(|e| Failure::Usage(format!("the monitor needs a terminal: {e}")))?;
    let _restore = Restore;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        drop(Restore);
        default_hook(info);
    }));
    crossterm::execute!(std::io::stdout(), terminal::EnterAlternateScreen, crossterm::cursor::Hide)
        .map_err(|e| Failure::Usage(format!("the monitor needs a terminal: {e}")))?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|e| Failure::Usage(format!("the monitor needs a terminal: {e}")))?;

    let (tx, mut rx) = mpsc::channel::<Input>(64);
    let keys = tx.clone();
    // Blocking reads on their own thread; it ends when the receiver is gone.
    std::thread::spawn(move || {
        loop {
            let input = match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Input::Key(k.code, k.modifiers),
                Ok(Event::Resize(..)) => Input::Redraw,
                Ok(_) => continue,
                Err(_) => return,
            };
            if keys.blocking_send(input).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let poller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let r = admin.stats().await.map(Box::new).map_err(|f| match f {
                Failure::Connect(m) | Failure::Usage(m) => m,
                Failure::Server(e) => e.to_string(),
            });
            if tx.send(Input::Stats(r, started.elapsed())).await.is_err() {
                return;
            }
        }
    });

    let mut model = Model::new(target);
    let result = loop {
        if let Err(e) = term.draw(|f| ui::draw(f, &model)) {
            break Err(Failure::Usage(format!("cannot draw: {e}")));
        }
        match rx.recv().await {
            None => break Ok(()),
            Some(Input::Key(KeyCode::Char('q') | KeyCode::Esc, _)) => break Ok(()),
            Some(Input::Key(KeyCode::Char('c'), m)) if m.contains(KeyModifiers::CONTROL) => break Ok(()),
            Some(Input::Key(KeyCode::Char('p'), _)) => model.paused = !model.paused,
            Some(Input::Key(KeyCode::Tab, _)) => model.pane = model.pane.next(),
            Some(Input::Key(KeyCode::BackTab, _)) => model.pane = model.pane.next().next(),
            Some(Input::Key(..) | Input::Redraw) => {}
            Some(Input::Stats(Ok(stats), at)) => model.push(Sample { at, stats: *stats }),
            Some(Input::Stats(Err(why), _)) => model.disconnected = Some(why),
        }
    };
    poller.abort();
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nanodb_protocol::pb;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::model::{Model, Pane, Sample};
    use super::ui;

    const BOUNDS: [u64; 4] = [10, 100, 1000, 10_000];

    fn stats(uptime_s: u64, tcp_ops: u64, tcp_buckets: [u64; 5]) -> pb::StatsResponse {
        pb::StatsResponse {
            keys: 1000,
            memory_bytes: 64 * 1024 * 1024,
            protocols: ["grpc", "tcp"]
                .into_iter()
                .map(|p| pb::ProtocolStats {
                    protocol: p.into(),
                    ops: if p == "tcp" { tcp_ops } else { 0 },
                    errors: if p == "tcp" { 3 } else { 0 },
                    connections: if p == "tcp" { 7 } else { 1 },
                    latency_buckets: if p == "tcp" { tcp_buckets.to_vec() } else { vec![0; 5] },
                })
                .collect(),
            uptime_s,
            version: "9.9.9".into(),
            feed: Some(pb::FeedStats {
                subscribers: 2,
                queued: 12,
                fullest_queue_permille: 250,
                queue_len_limit: 4096,
                dropped: 5,
                lagged: 1,
                ..Default::default()
            }),
            latency_bounds_us: BOUNDS.to_vec(),
            log: Some(pb::LogStats {
                fsync: "everysec".into(),
                bytes_since_snapshot: 2048,
                last_fsync_age_ms: 400,
                snapshot_age_ms: -1,
            }),
            cluster: None,
            ..Default::default()
        }
    }

    fn text(model: &Model, w: u16, h: u16) -> String {
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        term.draw(|f| ui::draw(f, model)).expect("draw");
        let buf = term.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..h {
            for x in 0..w {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    /// Two answers a second apart: 1000 tcp ops in between, 900 of them within 10 µs.
    fn two_samples() -> Model {
        let mut m = Model::new("127.0.0.1:50051".into());
        m.push(Sample { at: Duration::from_secs(0), stats: stats(10, 5000, [0, 0, 0, 0, 0]) });
        m.push(Sample { at: Duration::from_secs(1), stats: stats(11, 6000, [900, 90, 9, 1, 0]) });
        m
    }

    #[test]
    fn traffic_pane_shows_rates_and_windowed_percentiles() {
        let screen = text(&two_samples(), 100, 30);
        assert!(screen.contains("nanodb monitor  127.0.0.1:50051  v9.9.9  up 11s"), "{screen}");
        assert!(screen.contains("tcp  1000 ops/s"), "{screen}");
        assert!(screen.contains("grpc  0 ops/s"), "{screen}");
        // p50 inside the first bucket (0..10 µs), p99 at the 100 µs bound, p99.9 at 1 ms.
        let row = screen.lines().find(|l| l.contains("tcp ") && l.contains("µs")).expect("tcp latency row");
        assert!(row.contains("6µs") && row.contains("100µs") && row.contains("1.0ms"), "{row}");
        assert!(row.contains(" 7 ") && row.contains(" 3 "), "connections and errors: {row}");
    }

    #[test]
    fn server_pane_shows_memory_watchers_and_log() {
        let mut m = two_samples();
        m.pane = Pane::Server;
        let screen = text(&m, 100, 30);
        for want in [
            "keys         1000",
            "64.0 MiB",
            "bytes/key    67108 B",
            "queued       12 (fullest 25.0% of 4096)",
            "dropped      5   lagged 1",
            "fsync        everysec",
            "last fsync   400ms ago",
            "snapshot     never",
        ] {
            assert!(screen.contains(want), "missing {want:?} in\n{screen}");
        }
    }

    #[test]
    fn cluster_pane_shows_role_and_lag() {
        let mut m = two_samples();
        m.pane = Pane::Cluster;
        assert!(text(&m, 100, 30).contains("single node: not in a cluster"));
        let mut s = stats(12, 6000, [900, 90, 9, 1, 0]);
        s.cluster = Some(pb::ClusterStats {
            node_id: 1,
            role: "leader".into(),
            term: 4,
            leader_id: 1,
            commit_index: 90,
            applied_index: 90,
            peers: vec![
                pb::PeerStats { id: 1, role: "leader".into(), lag: 0 },
                pb::PeerStats { id: 2, role: "follower".into(), lag: 17 },
            ],
        });
        m.push(Sample { at: Duration::from_secs(2), stats: s });
        let screen = text(&m, 100, 30);
        assert!(screen.contains("node 1  role leader  term 4  leader 1"), "{screen}");
        let row = screen.lines().find(|l| l.contains("follower")).expect("peer 2");
        assert!(row.contains('2') && row.contains("17"), "{row}");
    }

    #[test]
    fn small_terminal_degrades_to_a_summary() {
        let screen = text(&two_samples(), 20, 5);
        assert!(screen.contains("terminal too"), "{screen}");
        assert!(screen.contains("60x16"), "{screen}");
        // Every size down to 1x1 draws without panicking.
        for (w, h) in [(1, 1), (59, 40), (200, 15), (60, 16)] {
            text(&two_samples(), w, h);
        }
    }

    #[test]
    fn disconnection_and_restart_are_shown() {
        let mut m = two_samples();
        m.disconnected = Some("connection refused".into());
        let screen = text(&m, 120, 30);
        assert!(screen.contains("DISCONNECTED (retrying): connection refused"), "{screen}");
        // A restarted server (uptime went back) starts the history over: no bogus negative rate.
        m.push(Sample { at: Duration::from_secs(3), stats: stats(1, 10, [1, 0, 0, 0, 0]) });
        assert!(m.disconnected.is_none());
        assert_eq!(m.samples.len(), 1);
        assert!(m.rates("tcp").is_empty());
    }

    #[test]
    fn pause_freezes_the_history() {
        let mut m = two_samples();
        m.paused = true;
        m.push(Sample { at: Duration::from_secs(2), stats: stats(12, 9000, [0; 5]) });
        assert_eq!(m.samples.len(), 2);
        assert!(text(&m, 100, 30).contains("[PAUSED]"));
    }
}
