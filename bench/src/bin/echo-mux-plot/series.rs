//! How a backend's series looks, in the panels and in the legend alike: its colour and its
//! marker.

use std::fmt::Write as _;

/// One colour per backend, in the order the backends are drawn.
pub const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// Draws backend `i`'s marker (circle, square, triangle, diamond, ...) at (x, y).
pub fn marker(s: &mut String, i: usize, x: f64, y: f64, color: &str, hollow: bool) {
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
