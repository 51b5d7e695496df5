//! echo-mux-plot: draws the CSV of `scripts/compare-backends.sh` as one SVG.
//!
//! Two rows of panels: requests/s on top, p99 latency below, both on a log scale; one column per
//! active-connection count; x is the number of idle connections held open; one line per backend.
//! Plain SVG written by hand (no fonts or rendering libraries needed; any browser shows it).
//!
//!     echo-mux-plot results.csv results.svg [--title T] [--subtitle S]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

/// One CSV row (the columns the plot needs).
#[derive(Clone, Debug)]
struct Row {
    backend: String,
    connections: u64,
    idle: u64,
    rps: f64,
    p99_us: f64,
    errors: u64,
}

fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty CSV")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("CSV has no '{name}' column"))
    };
    let (b, c, i, r, p, e) = (
        col("backend")?,
        col("connections")?,
        col("idle")?,
        col("rps")?,
        col("p99_us")?,
        col("errors")?,
    );
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |k: usize| {
            f.get(k)
                .copied()
                .ok_or_else(|| format!("line {}: too few fields", n + 2))
        };
        let num = |k: usize| -> Result<f64, String> {
            let v = get(k)?;
            v.parse::<f64>()
                .map_err(|_| format!("line {}: '{v}' is not a number", n + 2))
        };
        rows.push(Row {
            backend: get(b)?.to_string(),
            connections: num(c)? as u64,
            idle: num(i)? as u64,
            rps: num(r)?,
            p99_us: num(p)?,
            errors: num(e)? as u64,
        });
    }
    if rows.is_empty() {
        return Err("CSV has no data rows".into());
    }
    Ok(rows)
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// Log-scale range covering `vals` (whole decades).
fn log_range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in vals.filter(|v| *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

/// A "nice" step for about `n` linear ticks up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn fmt_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn fmt_us(v: f64) -> String {
    if v >= 1e6 {
        format!("{} s", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{} ms", trim(v / 1e3))
    } else {
        format!("{} µs", trim(v))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Splits `text` into lines of at most about `max` characters, at spaces.
fn wrap(text: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= max.max(20) => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One metric (a row of panels).
struct Metric {
    short: &'static str,
    axis: &'static str,
    value: fn(&Row) -> f64,
    label: fn(f64) -> String,
}

fn render(rows: &[Row], title: &str, subtitle: &str) -> String {
    let backends: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in rows {
            if !v.contains(&r.backend) {
                v.push(r.backend.clone());
            }
        }
        v
    };
    let conn_counts: Vec<u64> = {
        let mut v: Vec<u64> = rows.iter().map(|r| r.connections).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let metrics = [
        Metric {
            short: "requests/s",
            axis: "requests/s (log scale, higher = better)",
            value: |r| r.rps,
            label: fmt_count,
        },
        Metric {
            short: "p99 latency",
            axis: "p99 latency (log scale, lower = better)",
            value: |r| r.p99_us,
            label: fmt_us,
        },
    ];

    let (pw, ph) = (340.0, 230.0); // plot area of one panel
    let (ml, mr, mt, mb) = (70.0, 20.0, 34.0, 46.0); // panel margins
    let cell_w = ml + pw + mr;
    let cell_h = mt + ph + mb;
    let width = (cell_w * conn_counts.len() as f64).max(560.0) + 20.0;
    let sub_lines = wrap(subtitle, ((width - 40.0) / 6.8) as usize);
    let top = 62.0 + 16.0 * sub_lines.len() as f64;
    let legend_h = 30.0;
    let height = top + legend_h + cell_h * metrics.len() as f64 + 10.0;
    let max_idle = rows.iter().map(|r| r.idle).max().unwrap_or(0) as f64;
    let x_max = if max_idle > 0.0 {
        let s = nice_step(max_idle, 5.0);
        (max_idle / s).ceil() * s
    } else {
        1.0
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="28" text-anchor="middle" font-size="18" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(title),
    );
    for (i, line) in sub_lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" fill="#444">{}</text>"##,
            width / 2.0,
            50.0 + 16.0 * i as f64,
            esc(line)
        );
    }

    // Legend.
    let mut lx = 20.0;
    let ly = top - 8.0;
    for (bi, b) in backends.iter().enumerate() {
        let color = COLORS[bi % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2.5"/>"#,
            lx + 28.0
        );
        marker(&mut s, bi, lx + 14.0, ly, color, false);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="13">{}</text>"#,
            lx + 34.0,
            ly + 4.5,
            esc(b)
        );
        lx += 34.0 + 9.0 * b.len() as f64 + 24.0;
    }
    if rows.iter().any(|r| r.errors > 0) {
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="{}" font-size="12" fill="#444">hollow marker: the run saw errors</text>"##,
            ly + 4.5
        );
    }

    for (mi, m) in metrics.iter().enumerate() {
        let (lo, hi) = log_range(rows.iter().map(m.value));
        let (llo, lhi) = (lo.log10(), hi.log10());
        let decades = (lhi - llo).round() as i32;
        for (ci, &conns) in conn_counts.iter().enumerate() {
            let x0 = 10.0 + ci as f64 * cell_w + ml;
            let y0 = top + legend_h + mi as f64 * cell_h + mt;
            let px = |idle: f64| x0 + idle / x_max * pw;
            let py = |v: f64| y0 + ph - (v.log10() - llo) / (lhi - llo) * ph;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold">{}: {} active connection{}</text>"#,
                x0 + pw / 2.0,
                y0 - 12.0,
                m.short,
                conns,
                if conns == 1 { "" } else { "s" }
            );
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#888"/>"##
            );
            // y grid: 1, 2, 5 per decade (labels on 1s, and on 2 and 5 when there is room).
            for d in 0..decades {
                let base = 10f64.powf(llo + d as f64);
                for (k, mult) in [1.0, 2.0, 5.0].iter().enumerate() {
                    let v = base * mult;
                    let y = py(v);
                    let major = k == 0;
                    let _ = writeln!(
                        s,
                        r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="1"/>"##,
                        x0 + pw,
                        if major { "#ccc" } else { "#eee" }
                    );
                    if major || decades <= 3 {
                        let _ = writeln!(
                            s,
                            r##"<text x="{}" y="{}" text-anchor="end" font-size="11" fill="{}">{}</text>"##,
                            x0 - 5.0,
                            y + 4.0,
                            if major { "#000" } else { "#666" },
                            (m.label)(v)
                        );
                    }
                }
            }
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text>"#,
                x0 - 5.0,
                y0 + 4.0,
                (m.label)(hi)
            );
            // x ticks.
            let step = nice_step(x_max, 5.0);
            let mut t = 0.0;
            while t <= x_max + 1e-9 {
                let x = px(t);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle" font-size="11">{}</text>"##,
                    y0 + ph,
                    y0 + ph + 15.0,
                    if x_max >= 2000.0 {
                        fmt_count(t)
                    } else {
                        trim(t)
                    }
                );
                t += step;
            }
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">idle connections held open</text>"#,
                x0 + pw / 2.0,
                y0 + ph + 34.0
            );
            let _ = writeln!(
                s,
                r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle" font-size="12">{}</text>"#,
                x0 - 52.0,
                y0 + ph / 2.0,
                m.axis
            );
            // One line per backend.
            for (bi, b) in backends.iter().enumerate() {
                let color = COLORS[bi % COLORS.len()];
                let mut pts: BTreeMap<u64, &Row> = BTreeMap::new();
                for r in rows
                    .iter()
                    .filter(|r| &r.backend == b && r.connections == conns && (m.value)(r) > 0.0)
                {
                    pts.insert(r.idle, r);
                }
                if pts.is_empty() {
                    continue;
                }
                let path: Vec<String> = pts
                    .values()
                    .map(|r| format!("{:.1},{:.1}", px(r.idle as f64), py((m.value)(r))))
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5" stroke-opacity="0.85"/>"#,
                    path.join(" ")
                );
                for r in pts.values() {
                    let (x, y) = (px(r.idle as f64), py((m.value)(r)));
                    let _ = write!(s, "<g><title>{}", esc(b));
                    let _ = writeln!(
                        s,
                        ", {} connections + {} idle: {}{}</title>",
                        r.connections,
                        r.idle,
                        (m.label)((m.value)(r)),
                        if r.errors > 0 {
                            format!(" ({} errors)", r.errors)
                        } else {
                            String::new()
                        }
                    );
                    marker(&mut s, bi, x, y, color, r.errors > 0);
                    s.push_str("</g>\n");
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Draws backend `i`'s marker (circle, square, triangle, diamond, ...) at (x, y).
fn marker(s: &mut String, i: usize, x: f64, y: f64, color: &str, hollow: bool) {
    let fill = if hollow { "white" } else { color };
    let _ = match i % 4 {
        0 => writeln!(
            s,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{fill}" stroke="{color}" stroke-width="1.5"/>"#
        ),
        1 => writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{fill}" stroke="{color}" stroke-width="1.5"/>"#,
            x - 4.0,
            y - 4.0
        ),
        2 => writeln!(
            s,
            r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{fill}" stroke="{color}" stroke-width="1.5"/>"#,
            x,
            y - 5.5,
            x - 5.0,
            y + 4.0,
            x + 5.0,
            y + 4.0
        ),
        _ => writeln!(
            s,
            r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{fill}" stroke="{color}" stroke-width="1.5"/>"#,
            x,
            y - 5.5,
            x + 5.5,
            y,
            x,
            y + 5.5,
            x - 5.5,
            y
        ),
    };
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut files = Vec::new();
    let mut title = "echo-mux: readiness backends compared".to_string();
    let mut subtitle = String::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!(
                    "Usage: echo-mux-plot RESULTS.csv OUT.svg [--title T] [--subtitle S]\n\n\
                     Draws requests/s and p99 latency per backend (log scale) against idle\n\
                     connections, one column of panels per active-connection count.\n\
                     CSV columns used: backend, connections, idle, rps, p99_us, errors."
                );
                return ExitCode::SUCCESS;
            }
            "--title" | "--subtitle" => {
                let Some(v) = args.next() else {
                    eprintln!("echo-mux-plot: option '{a}' needs a value");
                    return ExitCode::from(2);
                };
                if a == "--title" {
                    title = v;
                } else {
                    subtitle = v;
                }
            }
            s if s.starts_with('-') => {
                eprintln!("echo-mux-plot: unknown option '{s}' (try --help)");
                return ExitCode::from(2);
            }
            _ => files.push(a),
        }
    }
    let [csv, svg] = files.as_slice() else {
        eprintln!("echo-mux-plot: expected RESULTS.csv and OUT.svg (try --help)");
        return ExitCode::from(2);
    };
    let rows = match std::fs::read_to_string(csv)
        .map_err(|e| format!("cannot read {csv}: {e}"))
        .and_then(|t| parse_csv(&t).map_err(|e| format!("{csv}: {e}")))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("echo-mux-plot: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(svg, render(&rows, &title, &subtitle)) {
        eprintln!("echo-mux-plot: cannot write {svg}: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_labels() {
        assert_eq!(log_range([630.0, 150_000.0].into_iter()), (100.0, 1e6));
        assert_eq!(log_range([100.0].into_iter()), (100.0, 1000.0));
        assert_eq!(nice_step(5000.0, 5.0), 1000.0);
        assert_eq!(fmt_count(150_000.0), "150k");
        assert_eq!(fmt_us(800.0), "800 µs");
        assert_eq!(fmt_us(2500.0), "2.5 ms");
    }

    #[test]
    fn renders_csv() {
        let csv = "backend,connections,idle,size,rps,mbps,p50_us,p99_us,p999_us,errors\n\
                   epoll,1,0,64,11000,0.7,80,120,200,0\n\
                   select,1,999,64,3100,0.2,300,400,900,1\n";
        let rows = parse_csv(csv).unwrap();
        let svg = render(&rows, "t", "s");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("epoll") && svg.contains("select"));
        assert!(parse_csv("backend,idle\n").is_err());
    }
}
