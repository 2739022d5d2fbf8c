//! What the dashboard knows: the last minute of `Admin.Stats` answers, and the figures derived
//! from them (rates, windowed latency percentiles). Pure, so frames can be tested from given
//! stats without a server or a terminal.

use std::collections::VecDeque;
use std::time::Duration;

use nanodb_protocol::pb;

/// How much history is kept: the sparklines' width in samples.
pub const HISTORY: usize = 120;
/// The window of the latency percentiles.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(15);

/// One answer, stamped with the time it arrived (since the monitor started).
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it arrived.
    pub at: Duration,
    /// The answer.
    pub stats: pb::StatsResponse,
}

/// The panes Tab cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// Operations per second and latency per protocol.
    Traffic,
    /// Keys, memory, connections, watchers, the log.
    Server,
    /// Role, term, leader, lag per peer.
    Cluster,
}

impl Pane {
    /// Every pane, in Tab order.
    pub const ALL: [Pane; 3] = [Pane::Traffic, Pane::Server, Pane::Cluster];

    /// Its tab title.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Traffic => "Traffic",
            Pane::Server => "Server",
            Pane::Cluster => "Cluster",
        }
    }

    /// The next one.
    pub fn next(self) -> Pane {
        match self {
            Pane::Traffic => Pane::Server,
            Pane::Server => Pane::Cluster,
            Pane::Cluster => Pane::Traffic,
        }
    }
}

/// The dashboard's state.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where the stats come from (for the title).
    pub target: String,
    /// Answers, oldest first.
    pub samples: VecDeque<Sample>,
    /// Why the last poll failed, while it does (the monitor keeps retrying).
    pub disconnected: Option<String>,
    /// Frozen display (`p`).
    pub paused: bool,
    /// The pane shown.
    pub pane: Pane,
}

/// p50, p99 and p99.9 in microseconds, or `None` without traffic in the window.
pub type Percentiles = Option<(f64, f64, f64)>;

impl Model {
    /// An empty dashboard for `target`.
    pub fn new(target: String) -> Self {
        Self { target, samples: VecDeque::new(), disconnected: None, paused: false, pane: Pane::Traffic }
    }

    /// Records an answer (ignored while paused). A server that restarted (its uptime went back)
    /// starts the history over, since its counters did.
    pub fn push(&mut self, sample: Sample) {
        self.disconnected = None;
        if self.paused {
            return;
        }
        if self.samples.back().is_some_and(|last| sample.stats.uptime_s < last.stats.uptime_s) {
            self.samples.clear();
        }
        self.samples.push_back(sample);
        while self.samples.len() > HISTORY {
            self.samples.pop_front();
        }
    }

    /// The latest answer.
    pub fn latest(&self) -> Option<&pb::StatsResponse> {
        self.samples.back().map(|s| &s.stats)
    }

    /// The protocols the server reports, in its order.
    pub fn protocols(&self) -> Vec<String> {
        self.latest().map(|s| s.protocols.iter().map(|p| p.protocol.clone()).collect()).unwrap_or_default()
    }

    /// Operations per second over `protocol` between consecutive answers, oldest first.
    pub fn rates(&self, protocol: &str) -> Vec<u64> {
        let ops = |s: &Sample| s.stats.protocols.iter().find(|p| p.protocol == protocol).map_or(0, |p| p.ops);
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| {
                let dt = b.at.saturating_sub(a.at).as_secs_f64();
                if dt <= 0.0 { 0 } else { (ops(b).saturating_sub(ops(a)) as f64 / dt).round() as u64 }
            })
            .collect()
    }

    /// Percentiles of `protocol`'s latency over the last [`LATENCY_WINDOW`] (or the history
    /// there is), from the difference of two cumulative histograms.
    pub fn percentiles(&self, protocol: &str) -> Percentiles {
        let last = self.samples.back()?;
        let first = self
            .samples
            .iter()
            .rev()
            .find(|s| last.at.saturating_sub(s.at) >= LATENCY_WINDOW)
            .or_else(|| self.samples.front())?;
        let buckets = |s: &Sample| {
            s.stats.protocols.iter().find(|p| p.protocol == protocol).map(|p| p.latency_buckets.clone())
        };
        let now = buckets(last)?;
        let before =
            if std::ptr::eq(first, last) { vec![0; now.len()] } else { buckets(first).unwrap_or_default() };
        let window: Vec<u64> = now
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(before.get(i).copied().unwrap_or(0)))
            .collect();
        let bounds = &last.stats.latency_bounds_us;
        Some((
            quantile(bounds, &window, 0.50)?,
            quantile(bounds, &window, 0.99)?,
            quantile(bounds, &window, 0.999)?,
        ))
    }
}

/// The `q` quantile of a bucketed histogram (`counts` per bucket, the last above every bound),
/// interpolated linearly inside its bucket as Prometheus's `histogram_quantile` does; the +Inf
/// bucket answers its lower bound. `None` when empty.
pub fn quantile(bounds: &[u64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (seen + c) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds.get(i - 1).copied().unwrap_or(0) as f64 };
            let Some(&upper) = bounds.get(i) else { return Some(lower) };
            let within = (rank - seen as f64) / c as f64;
            return Some(lower + (upper as f64 - lower) * within.clamp(0.0, 1.0));
        }
        seen += c;
    }
    bounds.last().map(|&b| b as f64)
}

/// Microseconds for people: `850µs`, `2.5ms`, `1.20s`.
pub fn micros(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// Bytes for people: `512 B`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// A duration in ms for people; `never` for -1.
pub fn age(ms: i64) -> String {
    match ms {
        ..0 => "never".into(),
        0..1000 => format!("{ms}ms ago"),
        1000..60_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{}s ago", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{}m ago", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [u64; 3] = [10, 100, 1000];

    #[test]
    fn quantiles_interpolate_within_buckets() {
        // 100 observations: 50 in (0,10], 49 in (10,100], 1 above 1000.
        let counts = [50, 49, 0, 1];
        assert_eq!(quantile(&BOUNDS, &counts, 0.5), Some(10.0));
        let p99 = quantile(&BOUNDS, &counts, 0.99).expect("p99");
        assert!((p99 - 100.0).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&BOUNDS, &counts, 0.999), Some(1000.0), "+Inf answers its lower bound");
        assert_eq!(quantile(&BOUNDS, &[0, 0, 0, 0], 0.5), None);
    }

    #[test]
    fn human_units() {
        assert_eq!(micros(850.0), "850µs");
        assert_eq!(micros(2500.0), "2.5ms");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(age(-1), "never");
        assert_eq!(age(61_000), "1m1s ago");
    }
}
