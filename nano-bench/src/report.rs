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

/// Curve colours, in order: the Okabe–Ito palette (told apart with any colour vision), darkest
/// first and without its yellow, which vanishes on white.
const COLOURS: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
];

/// The legend entry of a run: its label, then the protocol and workload unless the label already
/// says them, then the throughput. E.g. `resp 127.0.0.1:6379 (get, 218,838 ops/s)`.
pub fn legend(r: &Summary) -> String {
    let words: Vec<&str> = r.label.split_whitespace().collect();
    let mut parts: Vec<String> =
        [&r.protocol, &r.workload].into_iter().filter(|w| !words.contains(&w.as_str())).cloned().collect();
    parts.push(format!("{} ops/s", thousands(r.ops_per_sec)));
    let what = match parts.split_last() {
        Some((ops, [])) => ops.clone(),
        Some((ops, rest)) => format!("{}, {ops}", rest.join(" ")),
        None => String::new(),
    };
    format!("{} ({what})", r.label)
}

/// Latency axis ticks: 1, 2 and 5 times powers of ten (ms) from `lo` to `hi`.
fn latency_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if (lo..=hi).contains(&v) {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// A latency tick in ms, in the unit that reads best: `50µs`, `2ms`, `1s`.
fn latency_label(ms: f64) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if ms < 1.0 {
        format!("{}µs", trim(ms * 1000.0))
    } else if ms < 1000.0 {
        format!("{}ms", trim(ms))
    } else {
        format!("{}s", trim(ms / 1000.0))
    }
}

/// Draws latency by percentile (x: log scale of 1/(1-p), as HdrHistogram's plotter; y: latency on
/// a log scale, so p50 and p99.99 both read), one curve per run, and writes the SVG to `path`.
pub fn plot(runs: &[Summary], path: &Path, title: &str) -> anyhow::Result<()> {
    let svg = plot_svg(runs, title).with_context(|| format!("drawing {}", path.display()))?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// [`plot`] into a string.
pub fn plot_svg(runs: &[Summary], title: &str) -> anyhow::Result<String> {
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("{e:?}");
    // x in thousandths of a decade of 1/(1-p): integer coordinates take custom key points
    let curves: Vec<(String, Vec<(i32, f64)>)> = runs
        .iter()
        .map(|r| {
            let pts = r
                .spectrum
                .iter()
                .filter(|(q, _)| *q < 1.0)
                .map(|&(q, v)| {
                    let x = ((1.0 / (1.0 - q)).log10() * 1000.0).round() as i32;
                    // a log axis has no zero: a 0 µs reading is drawn at 1 µs
                    (x, v.max(1) as f64 / 1000.0)
                })
                .collect();
            (legend(r), pts)
        })
        .collect();
    let xmax = curves.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(4000, i32::max).min(7000);
    let values = || curves.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let ymin = values().fold(f64::INFINITY, f64::min);
    let ymin = if ymin.is_finite() { ymin / 1.5 } else { 0.01 };
    let ymax = runs.iter().map(|r| r.latency_us.max.max(1) as f64 / 1000.0).fold(ymin * 10.0, f64::max) * 1.5;
    let ticks = latency_ticks(ymin, ymax);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let keys: Vec<i32> = std::iter::once(301).chain((1..=xmax / 1000).map(|d| d * 1000)).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (0..xmax).with_key_points(keys),
                (ymin..ymax).log_scale().with_key_points(ticks),
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (log scale)")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
            .x_label_formatter(&|x| percentile_label(f64::from(*x) / 1000.0))
            .y_label_formatter(&|y| latency_label(*y))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (label, pts)) in curves.into_iter().enumerate() {
            let style = COLOURS[i % COLOURS.len()].stroke_width(3);
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
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

    fn run(label: &str, protocol: &str, workload: &str, ops: f64, values_us: &[u64]) -> Summary {
        let mut h = new_histogram();
        for &v in values_us {
            h.record(v).expect("in range");
        }
        Summary {
            label: label.into(),
            protocol: protocol.into(),
            target: "127.0.0.1:7070".into(),
            workload: workload.into(),
            requests: h.len(),
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            misses: 0,
            duration_s: 1.0,
            ops_per_sec: ops,
            latency_us: latency(&h),
            concurrency: 1,
            connections: 1,
            pipeline: 1,
            rate: None,
            keyspace: 1,
            value_size: 1,
            key_dist: "uniform".into(),
            spectrum: spectrum(&h),
            watchers: 0,
            events: None,
        }
    }

    #[test]
    fn legends_say_protocol_workload_and_throughput_once() {
        assert_eq!(
            legend(&run("tcp 127.0.0.1:7070", "tcp", "get", 194833.2, &[1])),
            "tcp 127.0.0.1:7070 (get, 194,833 ops/s)"
        );
        assert_eq!(
            legend(&run("Redis 7.0.15 set", "resp", "set", 1e3, &[1])),
            "Redis 7.0.15 set (resp, 1,000 ops/s)"
        );
        assert_eq!(legend(&run("NanoDB tcp get", "tcp", "get", 5.0, &[1])), "NanoDB tcp get (5 ops/s)");
        assert_eq!(legend(&run("before", "http", "mixed", 5.0, &[1])), "before (http mixed, 5 ops/s)");
    }

    #[test]
    fn latency_axis_is_logarithmic_with_readable_ticks() {
        assert_eq!(latency_ticks(0.03, 12.0), [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(latency_label(0.05), "50µs");
        assert_eq!(latency_label(0.2), "200µs");
        assert_eq!(latency_label(2.0), "2ms");
        assert_eq!(latency_label(1500.0), "1.5s");
    }

    #[test]
    fn the_plot_reads_at_a_glance() {
        // p50 at 100 µs and a tail at 20 ms: on a linear axis the median would sit on the floor
        let mut values: Vec<u64> = vec![100; 9_990];
        values.extend([20_000; 10]);
        let a = run("tcp 127.0.0.1:7070", "tcp", "get", 120_000.0, &values);
        let b = run("Redis 7.0.15 get", "resp", "get", 98_765.0, &values);
        let svg = plot_svg(&[a, b], "Latency by percentile").expect("draws");
        // the legend: protocol, workload, ops/s
        assert!(svg.contains("tcp 127.0.0.1:7070 (get, 120,000 ops/s)"), "legend a");
        assert!(svg.contains("Redis 7.0.15 get (resp, 98,765 ops/s)"), "legend b");
        // the latency axis is logarithmic: ticks at 1-2-5 steps across three decades
        for tick in ["100µs", "1ms", "10ms", "20ms"] {
            assert!(svg.contains(&format!(">\n{tick}\n<")), "y tick {tick}");
        }
        assert!(svg.contains("latency (log scale)"));
        for x in ["50%", "99%", "99.9%", "99.99%"] {
            assert!(svg.contains(&format!(">\n{x}\n<")), "x tick {x}");
        }
        // two curves in colours that hold on white (Okabe-Ito blue, then vermillion)
        assert!(svg.contains("#0072B2") && svg.contains("#D55E00"), "curve colours");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(12.0), "12");
    }
}
