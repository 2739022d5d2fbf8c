//! Turning the merged histogram into what people read: the colored summary table, `--json`,
//! `--hdr-out` (HdrHistogram's percentile text format) and the `--plot` SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use console::style;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// Latency summary in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// One run's result; the field names are the `--json` contract (issue #6).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Free-form label for plots and tables.
    pub label: String,
    /// tcp, grpc, http or resp.
    pub protocol: String,
    /// HOST:PORT.
    pub target: String,
    /// get, set, incr or mixed.
    pub workload: String,
    /// Counted requests completed, errors included.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Reads of missing keys (not errors).
    pub misses: u64,
    /// Measured time, warm-up excluded.
    pub duration_s: f64,
    /// requests / duration_s.
    pub ops_per_sec: f64,
    /// Latency, µs (open loop: from the intended send time).
    pub latency_us: Latency,
    /// Virtual users.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per virtual user.
    pub pipeline: usize,
    /// Open-loop target rate, ops/s; null for closed loop.
    pub rate: Option<f64>,
    /// Keys.
    pub keyspace: u64,
    /// Value bytes.
    pub value_size: usize,
    /// uniform or zipf.
    pub key_dist: String,
    /// The percentile spectrum: `[quantile, latency µs]` pairs, for `nano-bench plot`.
    pub spectrum: Vec<(f64, u64)>,
    /// Idle gRPC Watch streams held open during the run (`--watchers`; `watch-latency`: 1).
    #[serde(default)]
    pub watchers: usize,
    /// `watch-latency` only: writes and the events they produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::watch::EventCounts>,
}

/// The latency summary of `h`.
pub fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        p9999: h.value_at_quantile(0.9999),
        max: h.max(),
        mean: h.mean(),
    }
}

/// The percentile spectrum of `h`, as HdrHistogram iterates it (5 ticks per half distance).
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), h.highest_equivalent(v.value_iterated_to())))
        .collect()
}

/// HdrHistogram's percentile text format (as `outputPercentileDistribution` writes it, values
/// scaled from µs to ms), readable by HdrHistogram's online plotter.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / 1000.0, h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), h.distinct_values());
    out
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.2}s", v as f64 / 1e6)
    } else if v >= 1_000 {
        format!("{:.2}ms", v as f64 / 1e3)
    } else {
        format!("{v}µs")
    }
}

/// The colored summary table (colors only where the terminal takes them).
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    let mode = s.rate.map_or("closed loop".to_string(), |r| format!("open loop at {} ops/s", thousands(r)));
    let watchers = if s.watchers > 0 { format!("  watchers {}", s.watchers) } else { String::new() };
    let _ = writeln!(
        o,
        "{} {} {}  workload {}  concurrency {}  connections {}  pipeline {}  {}{}",
        style("nano-bench").bold(),
        style(&s.protocol).cyan().bold(),
        s.target,
        style(&s.workload).bold(),
        s.concurrency,
        s.connections,
        s.pipeline,
        mode,
        watchers
    );
    if let Some(e) = &s.events {
        let _ = writeln!(
            o,
            "  events: {} written, {} acknowledged, {} received, {} recorded, {} missing, {} duplicated",
            thousands(e.written as f64),
            thousands(e.acknowledged as f64),
            thousands(e.received as f64),
            thousands(e.recorded as f64),
            thousands(e.missing as f64),
            thousands(e.duplicates as f64),
        );
    }
    let errors = if s.errors == 0 {
        style(format!("{}", s.errors)).green()
    } else {
        style(format!("{}", s.errors)).red().bold()
    };
    let _ = writeln!(
        o,
        "  {} ops/s   {} requests in {:.2} s   errors {}   misses {}",
        style(thousands(s.ops_per_sec)).green().bold(),
        thousands(s.requests as f64),
        s.duration_s,
        errors,
        thousands(s.misses as f64)
    );
    let l = &s.latency_us;
    let head = ["p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"];
    let vals =
        [us(l.p50), us(l.p90), us(l.p99), us(l.p999), us(l.p9999), us(l.max), us(l.mean.round() as u64)];
    let mut h = String::from("  latency ");
    let mut v = String::from("          ");
    for (k, x) in head.iter().zip(vals.iter()) {
        let _ = write!(h, "{:>10}", k);
        let _ = write!(v, "{:>10}", x);
    }
    let _ = writeln!(o, "{}", style(h).dim());
    let _ = writeln!(o, "{}", style(v).yellow());
    if !s.errors_by_kind.is_empty() {
        let _ = writeln!(o, "  {}", style("errors by kind:").red().bold());
        for (k, n) in &s.errors_by_kind {
            let _ = writeln!(o, "    {:>10}  {}", thousands(*n as f64), k);
        }
    }
    o
}

/// Writes `s` as pretty JSON.
pub fn write_json(s: &Summary, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(s)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Reads a result written by `--json`.
pub fn read_json(path: &Path) -> anyhow::Result<Summary> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a nano-bench --json result", path.display()))
}

fn percentile_label(x: f64) -> String {
    // x = log10(1 / (1 - p))
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    // as many decimals as the label has nines past 99
    let decimals = (x.ceil() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

/// Draws latency by percentile (x: log scale of 1/(1-p), as HdrHistogram's plotter), one curve
/// per run.
pub fn plot(runs: &[Summary], path: &Path, title: &str) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    // x in thousandths of a decade of 1/(1-p): integer coordinates take custom key points
    let curves: Vec<(String, Vec<(i32, f64)>)> = runs
        .iter()
        .map(|r| {
            let pts = r
                .spectrum
                .iter()
                .filter(|(q, _)| *q < 1.0)
                .map(|&(q, v)| (((1.0 / (1.0 - q)).log10() * 1000.0).round() as i32, v as f64 / 1000.0))
                .collect();
            (r.label.clone(), pts)
        })
        .collect();
    let xmax = curves.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(4000, i32::max).min(7000);
    let ymax = runs.iter().map(|r| r.latency_us.max as f64 / 1000.0).fold(0.001f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let keys: Vec<i32> = std::iter::once(301).chain((1..=xmax / 1000).map(|d| d * 1000)).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0..xmax).with_key_points(keys), 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(f64::from(*x) / 1000.0))
        .y_label_formatter(&|y| {
            let decimals = if ymax >= 10.0 {
                0
            } else if ymax >= 1.0 {
                1
            } else {
                3
            };
            format!("{y:.decimals$}")
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, pts)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::new_histogram;

    #[test]
    fn labels_read_as_percentiles() {
        assert_eq!(percentile_label(2f64.log10()), "50%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
    }

    #[test]
    fn hgrm_has_hdrhistogram_layout() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).expect("in range");
        }
        let text = hgrm(&h);
        let mut lines = text.lines();
        assert!(lines.next().is_some_and(|l| l.contains("Value") && l.contains("1/(1-Percentile)")));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 20);
        let last = rows.last().expect("rows");
        assert_eq!((last[0], last[1], last[2]), ("1.000", "1.000000000000", "1000"));
        assert!(text.contains("#[Max     =        1.000, Total count    =         1000]"), "{text}");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(12.0), "12");
    }
}
