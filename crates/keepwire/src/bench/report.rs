//! `keepwire bench report`: medians of repeated runs, from the JSON lines
//! that `keepwire bench --json` and the peer scripts in `bench/peers/`
//! write (one object per measured point: `system`, `scenario`, `mode`,
//! `window`, `accepted_per_s`, latencies in `*_ms`). It prints a markdown
//! table (optionally rewriting the marked section of a document) and draws
//! throughput against acknowledgement p99 latency for every system.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use super::stats::median;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// JSON-lines result files (keepwire bench --json, bench/peers/*).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Rewrite the part between `<!-- bench:table -->` and
    /// `<!-- /bench:table -->` in this markdown file.
    #[arg(long)]
    pub doc: Option<PathBuf>,
    /// Draw throughput against acknowledgement p99 here (PNG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// TrueType font for the plot's text (Debian: fonts-dejavu-core).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
}

/// One measured configuration and its runs.
#[derive(Default)]
struct Point {
    runs: Vec<Value>,
}

impl Point {
    fn median(&self, field: &str) -> f64 {
        median(
            self.runs
                .iter()
                .filter_map(|v| v.get(field).and_then(Value::as_f64))
                .collect(),
        )
    }
}

/// (system, scenario, mode, window)
type Key = (String, String, String, u64);

fn load(paths: &[PathBuf]) -> Result<BTreeMap<Key, Point>> {
    let mut points: BTreeMap<Key, Point> = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a JSON object", path.display(), n + 1))?;
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (system, scenario) = (s("system"), s("scenario"));
            if system.is_empty() || scenario.is_empty() {
                bail!(
                    "{}:{}: every line needs \"system\" and \"scenario\"",
                    path.display(),
                    n + 1
                );
            }
            let window = v.get("window").and_then(Value::as_u64).unwrap_or(0);
            points
                .entry((system, scenario, s("mode"), window))
                .or_default()
                .runs
                .push(v);
        }
    }
    Ok(points)
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "—".into()
    }
}

fn rate(x: f64) -> String {
    if !x.is_finite() {
        "—".into()
    } else if x >= 100.0 {
        // Thousands separated, as people read them.
        let s = format!("{x:.0}");
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{x:.1}")
    }
}

/// keepwire's median rate (pre-encrypted) at the largest window not above
/// `window`, to set beside a peer measured with that many in flight.
fn keepwire_at(points: &BTreeMap<Key, Point>, window: u64) -> Option<(u64, f64)> {
    let mut best: Option<(u64, f64)> = None;
    for ((sys, scen, mode, w), p) in points {
        if sys == "keepwire" && scen == "throughput" && mode == "pre-encrypted" {
            let fits = *w <= window.max(1);
            let better = match best {
                None => true,
                Some((bw, _)) => (fits && (*w > bw || bw > window.max(1))) || (!fits && bw > *w),
            };
            if better {
                best = Some((*w, p.median("accepted_per_s")));
            }
        }
    }
    best
}

fn table(points: &BTreeMap<Key, Point>) -> String {
    let mut t = String::from(
        "| system | scenario | mode | in flight | runs | msgs/s (median) | ack p50 ms | ack p99 ms | ack p99.9 ms | e2e p50 ms | e2e p99 ms | capture lag p50 / p99 ms | keepwire ÷ system | server CPU-s / 1k msgs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((sys, scen, mode, w), p) in points {
        if scen != "throughput" && scen != "latency" {
            continue;
        }
        let msgs = p.median("accepted_per_s");
        let ratio = if sys == "keepwire" {
            String::new()
        } else {
            match keepwire_at(points, *w) {
                Some((kw, k)) if msgs > 0.0 => format!("{:.2}× (keepwire at {kw})", k / msgs),
                _ => "—".into(),
            }
        };
        t.push_str(&format!(
            "| {sys} | {scen} | {mode} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio} | {} |\n",
            if *w == 0 { "—".into() } else { w.to_string() },
            p.runs.len(),
            rate(msgs),
            fmt(p.median("ack_p50_ms"), 2),
            fmt(p.median("ack_p99_ms"), 2),
            fmt(p.median("ack_p999_ms"), 2),
            fmt(p.median("e2e_p50_ms"), 2),
            fmt(p.median("e2e_p99_ms"), 2),
            if p.median("capture_p99_ms").is_finite() {
                format!(
                    "{} / {}",
                    fmt(p.median("capture_p50_ms"), 0),
                    fmt(p.median("capture_p99_ms"), 0)
                )
            } else {
                "—".into()
            },
            fmt(p.median("server_cpu_s_per_1k"), 3),
        ));
    }
    let mut other = String::new();
    for ((sys, scen, mode, _), p) in points {
        let line = match scen.as_str() {
            "capture" => format!(
                "| {sys} | capture | bare MLS decrypt+verify {} msgs/s; records capture {} msgs/s = {} % of bare (batches pipelined; on one thread {} msgs/s) |",
                rate(p.median("bare_per_s")),
                rate(p.median("pipelined_per_s")),
                fmt(100.0 * p.median("ratio"), 0),
                rate(p.median("batched_per_s"))
            ),
            "latency" if p.median("send_lag_p99_ms") > 0.0 => format!(
                "| {sys} | latency, {mode} | of those latencies, the load generator's own lag behind its schedule (its CPU queue, not the server's): p50 {} ms, p99 {} ms |",
                fmt(p.median("send_lag_p50_ms"), 1),
                fmt(p.median("send_lag_p99_ms"), 1)
            ),
            "fanout" => format!(
                "| {sys} | fan-out | {} devices: to the last one p50 {} ms, p99 {} ms |",
                fmt(p.median("devices"), 0),
                fmt(p.median("last_p50_ms"), 1),
                fmt(p.median("last_p99_ms"), 1)
            ),
            "connections" => format!(
                "| {sys} | idle connections | {} of {} asked connected in {} s; server RSS {} MiB = {} KiB per connection |",
                fmt(p.median("connected"), 0),
                fmt(p.median("requested"), 0),
                fmt(p.median("connect_s"), 1),
                fmt(p.median("server_rss_after_mib"), 0),
                fmt(p.median("server_rss_per_connection_kib"), 1)
            ),
            _ => continue,
        };
        other.push_str(&format!("{line} {} |\n", p.runs.len()));
    }
    if !other.is_empty() {
        t.push_str("\n| system | scenario | median figures | runs |\n|---|---|---|---|\n");
        t.push_str(&other);
    }
    t
}

pub fn run(args: ReportArgs) -> Result<()> {
    let points = load(&args.results)?;
    let t = table(&points);
    println!("{t}");
    if let Some(doc) = &args.doc {
        let text = std::fs::read_to_string(doc)
            .with_context(|| format!("cannot read {}", doc.display()))?;
        let (open, close) = ("<!-- bench:table -->", "<!-- /bench:table -->");
        let (Some(a), Some(b)) = (text.find(open), text.find(close)) else {
            bail!("{} has no {open} … {close} section", doc.display());
        };
        let new = format!("{}{open}\n{t}{}", &text[..a], &text[b..]);
        std::fs::write(doc, new)?;
        println!("table written into {}", doc.display());
    }
    if let Some(plot) = &args.plot {
        draw(&points, plot, &args.font)?;
        println!("plot drawn to {}", plot.display());
    }
    Ok(())
}

const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 90, 181),
    RGBColor(0, 150, 190),
    RGBColor(220, 50, 32),
    RGBColor(230, 140, 0),
    RGBColor(120, 120, 120),
    RGBColor(60, 160, 60),
    RGBColor(150, 60, 160),
];

fn draw(points: &BTreeMap<Key, Point>, path: &PathBuf, font: &PathBuf) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "cannot read the font {} (install fonts-dejavu-core, or pass --font)",
            font.display()
        )
    })?;
    // The font must live as long as the process's font registry.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a usable TrueType font", font.display()))?;

    // One series per system (and mode), its points ordered by window.
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for ((sys, scen, mode, _), p) in points {
        if scen != "throughput" {
            continue;
        }
        let (x, y) = (p.median("accepted_per_s"), p.median("ack_p99_ms"));
        if x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0 {
            let name = if mode.is_empty() {
                sys.clone()
            } else {
                format!("{sys} ({mode})")
            };
            series.entry(name).or_default().push((x, y));
        }
    }
    if series.is_empty() {
        bail!("no throughput points with an acknowledgement p99 to plot");
    }
    let all: Vec<(f64, f64)> = series.values().flatten().copied().collect();
    let (xmin, xmax) = bounds(all.iter().map(|p| p.0));
    let (ymin, ymax) = bounds(all.iter().map(|p| p.1));

    let (w, h) = (1100u32, 700u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Durable messages: throughput against acknowledgement p99 (1 KiB, loopback, same machine)",
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("accepted messages per second (log)")
            .y_desc("acknowledgement p99, ms (log)")
            .label_style(("sans-serif", 14))
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&buf)?;
    Ok(())
}

/// A log axis's range: a little room around the data, decade-friendly.
fn bounds(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for x in xs {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    (lo / 2.0, hi * 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(lines: &str) -> BTreeMap<Key, Point> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, lines).unwrap();
        load(&[p]).unwrap()
    }

    #[test]
    fn medians_and_ratios_per_configuration() {
        let pts = points(concat!(
            r#"{"system":"keepwire","scenario":"throughput","mode":"pre-encrypted","window":16,"accepted_per_s":9000,"ack_p99_ms":3}"#,
            "\n",
            r#"{"system":"keepwire","scenario":"throughput","mode":"pre-encrypted","window":16,"accepted_per_s":11000,"ack_p99_ms":5}"#,
            "\n",
            r#"{"system":"keepwire","scenario":"throughput","mode":"pre-encrypted","window":16,"accepted_per_s":10000,"ack_p99_ms":4}"#,
            "\n",
            r#"{"system":"synapse","scenario":"throughput","window":16,"accepted_per_s":100}"#,
            "\n",
        ));
        let t = table(&pts);
        assert!(
            t.contains("| keepwire | throughput | pre-encrypted | 16 | 3 | 10,000 |"),
            "{t}"
        );
        assert!(t.contains("| — | 100.00× (keepwire at 16) | — |"), "{t}");
    }

    #[test]
    fn a_line_without_system_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, "{\"scenario\":\"x\"}\n").unwrap();
        let e = load(&[p]).err().unwrap().to_string();
        assert!(e.contains("r.jsonl:1"), "{e}");
    }
}
