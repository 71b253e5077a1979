//! One org's last 24 h as an SVG, drawn on the server: the window fill against its limit (a line
//! over the buckets), and the denials of each bucket stacked by reason (bars).

use std::fmt::Write;

use super::history::{REASONS, Sample};
use super::html::esc;

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 80.0;

/// A colour per deny reason, in [`REASONS`] order.
const COLOURS: [&str; REASONS.len()] = [
    "#7f1d1d", "#a16207", "#9333ea", "#c026d3", "#0f766e", "#0369a1", "#b91c1c", "#dc2626",
    "#ea580c", "#2563eb", "#64748b",
];

/// The chart of `samples` (oldest first, `bucket_ms` apart; the last may be the open bucket) on
/// an axis of `slots` buckets ending now, so a young process's few buckets sit at the right.
pub fn svg(samples: &[Sample], bucket_ms: u64, slots: usize) -> String {
    let n = slots.max(samples.len()).max(1);
    let first = n - samples.len();
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / n as f64;
    let max_fill = samples
        .iter()
        .map(|s| s.fill.max(s.limit.unwrap_or(0)))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_denials = samples
        .iter()
        .map(|s| s.denials.iter().map(|&d| u64::from(d)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut out = String::new();
    // Writing to a String cannot fail (here and below).
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="window fill and denials over 24 h">"#
    );
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#d1d5db"/>"##
    );
    // Denials: stacked bars on the right axis.
    for (i, s) in samples.iter().enumerate() {
        let x = LEFT + (first + i) as f64 * slot + slot * 0.15;
        let mut y = TOP + plot_h;
        for (r, &d) in s.denials.iter().enumerate() {
            if d == 0 {
                continue;
            }
            let h = f64::from(d) / max_denials * plot_h;
            y -= h;
            let _ = write!(
                out,
                r#"<rect class="denials" data-reason="{}" data-count="{d}" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}" opacity="0.75"/>"#,
                REASONS[r].name(),
                slot * 0.7,
                COLOURS[r]
            );
        }
    }
    // Fill and limit: lines on the left axis.
    let point = |i: usize, v: u64| {
        (
            LEFT + ((first + i) as f64 + 0.5) * slot,
            TOP + plot_h - v as f64 / max_fill * plot_h,
        )
    };
    let fill: Vec<String> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (x, y) = point(i, s.fill);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        out,
        r##"<polyline class="fill" points="{}" fill="none" stroke="#16a34a" stroke-width="2.5"/>"##,
        fill.join(" ")
    );
    for (i, s) in samples.iter().enumerate() {
        let (x, y) = point(i, s.fill);
        let _ = write!(
            out,
            r##"<circle class="fill-point" data-fill="{}" cx="{x:.1}" cy="{y:.1}" r="3" fill="#16a34a"/>"##,
            s.fill
        );
    }
    if let Some(l) = samples.last().and_then(|s| s.limit) {
        let (_, y) = point(0, l);
        let _ = write!(
            out,
            r##"<line class="limit" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#dc2626" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" font-size="11" fill="#dc2626">limit {l}</text>"##,
            LEFT + plot_w,
            LEFT + 4.0,
            y - 4.0
        );
    }
    // Axes' labels.
    let _ = write!(
        out,
        r##"<text x="4" y="{}" font-size="11" fill="#166534">{}</text><text x="4" y="{}" font-size="11" fill="#166534">0</text>"##,
        TOP + 10.0,
        max_fill as u64,
        TOP + plot_h
    );
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" font-size="11" fill="#374151">{} denied</text>"##,
        LEFT + plot_w + 4.0,
        TOP + 10.0,
        max_denials as u64
    );
    let hours = (n as u64 * bucket_ms) as f64 / 3_600_000.0;
    let _ = write!(
        out,
        r##"<text x="{LEFT}" y="{}" font-size="11" fill="#6b7280">{hours:.1} h ago</text><text x="{}" y="{}" font-size="11" fill="#6b7280" text-anchor="end">now</text>"##,
        TOP + plot_h + 14.0,
        LEFT + plot_w,
        TOP + plot_h + 14.0
    );
    // Legend: the reasons that occur.
    let mut lx = LEFT;
    let ly = H - 30.0;
    for (r, reason) in REASONS.iter().enumerate() {
        if samples.iter().all(|s| s.denials[r] == 0) {
            continue;
        }
        let label = esc(reason.name());
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="{ly}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{}" font-size="11">{label}</text>"#,
            COLOURS[r],
            lx + 14.0,
            ly + 9.0
        );
        lx += 24.0 + 6.5 * label.len() as f64;
    }
    let _ = write!(
        out,
        r##"<text x="{LEFT}" y="{}" font-size="11" fill="#16a34a">— unique recipients in the 24 h window</text>"##,
        H - 6.0
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_fill_limit_and_each_reason_that_occurs() {
        let mut denials = [0; REASONS.len()];
        denials[7] = 3;
        let s = vec![
            Sample {
                at_ms: 1,
                fill: 10,
                limit: Some(50),
                denials: [0; REASONS.len()],
            },
            Sample {
                at_ms: 2,
                fill: 50,
                limit: Some(50),
                denials,
            },
        ];
        let svg = svg(&s, 1_800_000, 49);
        assert!(svg.contains(r#"class="fill""#));
        assert!(svg.contains("limit 50"));
        assert!(svg.contains(&format!(
            r#"data-reason="{}" data-count="3""#,
            REASONS[7].name()
        )));
        assert_eq!(svg.matches("<rect class=\"denials\"").count(), 1);
    }
}
