//! The drawing: a header, a legend, and a grid of panels (one row per metric, one column per
//! active-connection count; see `panel.rs`).

use std::fmt::Write as _;

use crate::csv::Row;
use crate::panel::{Panel, CELL_H, CELL_W, LEGEND_H, METRICS, ML, MT};
use crate::scale::{esc, log_range, nice_step, wrap};
use crate::series::{marker, COLORS};

/// Sizes of the whole picture.
struct Page {
    width: f64,
    height: f64,
    /// Where the legend row ends and the panels begin (less `LEGEND_H`).
    top: f64,
    sub_lines: Vec<String>,
}

fn page(columns: usize, subtitle: &str) -> Page {
    let width = (CELL_W * columns as f64).max(560.0) + 20.0;
    let sub_lines = wrap(subtitle, ((width - 40.0) / 6.8) as usize);
    let top = 62.0 + 16.0 * sub_lines.len() as f64;
    let height = top + LEGEND_H + CELL_H * METRICS.len() as f64 + 10.0;
    Page {
        width,
        height,
        top,
        sub_lines,
    }
}

/// The SVG for `rows`.
pub fn render(rows: &[Row], title: &str, subtitle: &str) -> String {
    let backends = backends(rows);
    let conn_counts = connection_counts(rows);
    let page = page(conn_counts.len(), subtitle);
    let x_max = x_max(rows);
    let mut s = String::new();
    header(&mut s, &page, title);
    legend(&mut s, &page, &backends, rows.iter().any(|r| r.errors > 0));
    for (mi, m) in METRICS.iter().enumerate() {
        let (lo, hi) = log_range(rows.iter().map(m.value));
        for (ci, &conns) in conn_counts.iter().enumerate() {
            let panel = Panel {
                x0: 10.0 + ci as f64 * CELL_W + ML,
                y0: page.top + LEGEND_H + mi as f64 * CELL_H + MT,
                x_max,
                llo: lo.log10(),
                lhi: hi.log10(),
                hi,
                metric: m,
            };
            panel.frame(&mut s, conns);
            panel.y_grid(&mut s);
            panel.x_axis(&mut s);
            for (bi, b) in backends.iter().enumerate() {
                panel.series(&mut s, rows, bi, b, conns);
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Backends in the order they first appear.
fn backends(rows: &[Row]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in rows {
        if !v.contains(&r.backend) {
            v.push(r.backend.clone());
        }
    }
    v
}

fn connection_counts(rows: &[Row]) -> Vec<u64> {
    let mut v: Vec<u64> = rows.iter().map(|r| r.connections).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The end of the idle axis: the largest idle count rounded up to a tick.
fn x_max(rows: &[Row]) -> f64 {
    let max_idle = rows.iter().map(|r| r.idle).max().unwrap_or(0) as f64;
    if max_idle > 0.0 {
        let s = nice_step(max_idle, 5.0);
        (max_idle / s).ceil() * s
    } else {
        1.0
    }
}

fn header(s: &mut String, page: &Page, title: &str) {
    let Page { width, height, .. } = *page;
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
    for (i, line) in page.sub_lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" fill="#444">{}</text>"##,
            width / 2.0,
            50.0 + 16.0 * i as f64,
            esc(line)
        );
    }
}

/// One sample line and marker per backend, and a note when some run saw errors.
fn legend(s: &mut String, page: &Page, backends: &[String], errors: bool) {
    let mut lx = 20.0;
    let ly = page.top - 8.0;
    for (bi, b) in backends.iter().enumerate() {
        let color = COLORS[bi % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2.5"/>"#,
            lx + 28.0
        );
        marker(s, bi, lx + 14.0, ly, color, false);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="13">{}</text>"#,
            lx + 34.0,
            ly + 4.5,
            esc(b)
        );
        lx += 34.0 + 9.0 * b.len() as f64 + 24.0;
    }
    if errors {
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="{}" font-size="12" fill="#444">hollow marker: the run saw errors</text>"##,
            ly + 4.5
        );
    }
}
