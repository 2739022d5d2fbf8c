//! The live progress bar: the phase (`populate`, `warm-up`, `measuring`), elapsed time or
//! requests done, ops/s over the last tick, errors so far. It only reads counters the workers
//! write anyway ([`Live`], one writer each; populate's keys written), so it costs them nothing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The phase of a run `elapsed` after the load started: warm-up (not counted), then measuring.
pub fn phase(elapsed: Duration, warmup: Duration) -> &'static str {
    if elapsed < warmup { "warm-up" } else { "measuring" }
}

/// A bar with `template`, its `{prefix}` set to `prefix`.
fn bar(len: u64, template: &str, prefix: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}

/// Ops/s between two ticks.
fn rate(now: Instant, n: u64, last: &mut (Instant, u64)) -> f64 {
    let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
    let r = n.saturating_sub(last.1) as f64 / dt;
    *last = (now, n);
    r
}

/// The `--populate` bar, until `done` is cancelled: keys written out of `total`.
pub async fn populate(written: Arc<AtomicU64>, total: u64, done: CancellationToken) {
    let bar = bar(
        total,
        "{spinner} {prefix:>9} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} keys {msg}",
        "populate",
    );
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => break,
        }
        let n = written.load(Ordering::Relaxed);
        bar.set_position(n);
        bar.set_message(format!("{:>10.0} writes/s", rate(Instant::now(), n, &mut last)));
    }
    bar.finish_and_clear();
}

/// Runs the bar until `done` is cancelled; the first `warmup` of it is labelled as such.
pub async fn run(live: Arc<Vec<Live>>, goal: Goal, warmup: Duration, done: CancellationToken) {
    let (len, template) = match goal {
        Goal::Time(d) => {
            (d.as_millis() as u64, "{spinner} {prefix:>9} [{elapsed_precise}] {bar:40.cyan/blue} {msg}")
        }
        Goal::Requests(n) => {
            (n, "{spinner} {prefix:>9} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}")
        }
    };
    let bar = bar(len, template, phase(Duration::ZERO, warmup));
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => break,
        }
        let now = Instant::now();
        let sum = |f: fn(&Live) -> &AtomicU64| live.iter().map(|l| f(l).load(Ordering::Relaxed)).sum::<u64>();
        let (done_n, errors, warm) = (sum(|l| &l.done), sum(|l| &l.errors), sum(|l| &l.warm));
        // warm-up replies are not counted, but they are load: the rate includes them
        let ops = rate(now, done_n + warm, &mut last);
        bar.set_prefix(phase(now.duration_since(start), warmup));
        match goal {
            Goal::Time(_) => bar.set_position(now.duration_since(start).as_millis() as u64),
            Goal::Requests(_) => bar.set_position(done_n),
        }
        let errs = if errors == 0 {
            console::style(format!("{errors} errors")).green()
        } else {
            console::style(format!("{errors} errors")).red()
        };
        bar.set_message(format!("{ops:>10.0} ops/s  {errs}"));
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_names_the_warm_up() {
        let w = Duration::from_secs(2);
        assert_eq!(phase(Duration::ZERO, w), "warm-up");
        assert_eq!(phase(Duration::from_millis(1999), w), "warm-up");
        assert_eq!(phase(w, w), "measuring");
        assert_eq!(phase(Duration::ZERO, Duration::ZERO), "measuring", "no warm-up, no warm-up phase");
    }
}
