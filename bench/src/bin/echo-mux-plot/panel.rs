//! One panel of the grid: a metric's log-scale y grid, the idle-connection x axis, and one
//! line of markers per backend.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::csv::Row;
use crate::scale::{esc, fmt_count, fmt_us, nice_step, trim};
use crate::series::{marker, COLORS};

/// One metric (a row of panels).
pub struct Metric {
    pub short: &'static str,
    pub axis: &'static str,
    pub value: fn(&Row) -> f64,
    pub label: fn(f64) -> String,
}

pub const METRICS: [Metric; 2] = [
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

/// Plot area of one panel, and its margins.
pub const PW: f64 = 340.0;
pub const PH: f64 = 230.0;
pub const ML: f64 = 70.0;
pub const MR: f64 = 20.0;
pub const MT: f64 = 34.0;
pub const MB: f64 = 46.0;
pub const CELL_W: f64 = ML + PW + MR;
pub const CELL_H: f64 = MT + PH + MB;
pub const LEGEND_H: f64 = 30.0;

/// One panel: its place on the page and its scales.
pub struct Panel<'a> {
    pub x0: f64,
    pub y0: f64,
    pub x_max: f64,
    /// log10 of the y range's ends.
    pub llo: f64,
    pub lhi: f64,
    pub hi: f64,
    pub metric: &'a Metric,
}

impl Panel<'_> {
    fn px(&self, idle: f64) -> f64 {
        self.x0 + idle / self.x_max * PW
    }

    fn py(&self, v: f64) -> f64 {
        self.y0 + PH - (v.log10() - self.llo) / (self.lhi - self.llo) * PH
    }

    /// Title, background, and the axis names.
    pub fn frame(&self, s: &mut String, conns: u64) {
        let (x0, y0) = (self.x0, self.y0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold">{}: {} active connection{}</text>"#,
            x0 + PW / 2.0,
            y0 - 12.0,
            self.metric.short,
            conns,
            if conns == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{PW}" height="{PH}" fill="#fafafa" stroke="#888"/>"##
        );
    }

    /// y grid: 1, 2, 5 per decade (labels on 1s, and on 2 and 5 when there is room).
    pub fn y_grid(&self, s: &mut String) {
        let (x0, y0, m) = (self.x0, self.y0, self.metric);
        let decades = (self.lhi - self.llo).round() as i32;
        for d in 0..decades {
            let base = 10f64.powf(self.llo + d as f64);
            for (k, mult) in [1.0, 2.0, 5.0].iter().enumerate() {
                let v = base * mult;
                let y = self.py(v);
                let major = k == 0;
                let _ = writeln!(
                    s,
                    r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="1"/>"##,
                    x0 + PW,
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
            (m.label)(self.hi)
        );
    }

    /// x ticks, and both axis names.
    pub fn x_axis(&self, s: &mut String) {
        let (x0, y0) = (self.x0, self.y0);
        let step = nice_step(self.x_max, 5.0);
        let mut t = 0.0;
        while t <= self.x_max + 1e-9 {
            let x = self.px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle" font-size="11">{}</text>"##,
                y0 + PH,
                y0 + PH + 15.0,
                if self.x_max >= 2000.0 {
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
            x0 + PW / 2.0,
            y0 + PH + 34.0
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle" font-size="12">{}</text>"#,
            x0 - 52.0,
            y0 + PH / 2.0,
            self.metric.axis
        );
    }

    /// Backend `bi`'s line over the idle counts at `conns` connections, with a marker (and a
    /// tooltip) per point.
    pub fn series(&self, s: &mut String, rows: &[Row], bi: usize, backend: &str, conns: u64) {
        let m = self.metric;
        let color = COLORS[bi % COLORS.len()];
        let pts: BTreeMap<u64, &Row> = rows
            .iter()
            .filter(|r| r.backend == backend && r.connections == conns && (m.value)(r) > 0.0)
            .map(|r| (r.idle, r))
            .collect();
        if pts.is_empty() {
            return;
        }
        let path: Vec<String> = pts
            .values()
            .map(|r| format!("{:.1},{:.1}", self.px(r.idle as f64), self.py((m.value)(r))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5" stroke-opacity="0.85"/>"#,
            path.join(" ")
        );
        for r in pts.values() {
            let (x, y) = (self.px(r.idle as f64), self.py((m.value)(r)));
            let _ = write!(s, "<g><title>{}", esc(backend));
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
            marker(s, bi, x, y, color, r.errors > 0);
            s.push_str("</g>\n");
        }
    }
}
