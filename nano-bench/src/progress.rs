//! The live progress bar: elapsed time or requests done, ops/s over the last tick, errors so far.
//! It only reads the workers' [`Live`] counters (one writer each), so it costs them nothing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runner::Live;

/// How the bar measures progress.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// A timed run (warm-up included): the bar counts seconds.
    Time(Duration),
    /// A counted run: the bar counts requests.
    Requests(u64),
}

/// Whether to draw a bar: not asked away and stdout is a terminal.
pub fn wanted(no_progress: bool) -> bool {
    !no_progress && std::io::stdout().is_terminal()
}

/// Runs the bar until `done` is cancelled.
pub async fn run(live: Arc<Vec<Live>>, goal: Goal, done: CancellationToken) {
    let (len, template) = match goal {
        Goal::Time(d) => (d.as_millis() as u64, "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {msg}"),
        Goal::Requests(n) => (n, "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}"),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => break,
        }
        let now = Instant::now();
        let done_n: u64 = live.iter().map(|l| l.done.load(Ordering::Relaxed)).sum();
        let errors: u64 = live.iter().map(|l| l.errors.load(Ordering::Relaxed)).sum();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = done_n.saturating_sub(last.1) as f64 / dt;
        last = (now, done_n);
        match goal {
            Goal::Time(_) => bar.set_position(now.duration_since(start).as_millis() as u64),
            Goal::Requests(_) => bar.set_position(done_n),
        }
        let errs = if errors == 0 {
            console::style(format!("{errors} errors")).green()
        } else {
            console::style(format!("{errors} errors")).red()
        };
        bar.set_message(format!("{:>10.0} ops/s  {errs}", rate));
    }
    bar.finish_and_clear();
}
