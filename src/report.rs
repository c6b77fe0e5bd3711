//! Reports of a run: CSV tables and SVG line plots, written atomically.

use crate::error::{Error, Result};
use crate::train::write_atomic;
use std::fmt::Write as _;
use std::path::Path;

/// Writes a CSV table (header and rows of numbers) to `path` atomically.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<f64>]) -> Result<()> {
    let mut out = header.join(",");
    out.push('\n');
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(Error::Invalid(format!(
                "{}: row {i} has {} values for {} columns",
                path.display(),
                row.len(),
                header.len()
            )));
        }
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

/// One named line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points `(x, y)`; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// Draw dashed (for baselines).
    pub dashed: bool,
}

const PALETTE: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"];

/// Escapes text for SVG.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// "Nice" tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..).map(|i| first + i as f64 * step).take_while(|v| *v <= hi + 1e-9 * span).collect()
}

/// An SVG line plot of `series` with axes, ticks, labels and a legend.
pub fn line_plot(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (720.0, 440.0);
    let (left, right, top, bottom) = (70.0, 170.0, 40.0, 55.0);
    let finite: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (0.0, 1.0, 0.0, 1.0);
    if !finite.is_empty() {
        x0 = finite.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        x1 = finite.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        y0 = finite.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        y1 = finite.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        y0 -= pad;
        y1 += pad;
    }
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        (left + w - right) / 2.0,
        xml(title)
    );
    let (ax0, ax1, ay0, ay1) = (left, w - right, h - bottom, top);
    let _ = writeln!(
        s,
        r#"<rect x="{ax0}" y="{ay1}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        ax1 - ax0,
        ay0 - ay1
    );
    for t in ticks(x0, x1) {
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{ay0}" x2="{0}" y2="{1}" stroke="black"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"#,
            px(t),
            ay0 + 5.0,
            ay0 + 18.0,
            fmt_tick(t)
        );
    }
    for t in ticks(y0, y1) {
        let _ = writeln!(
            s,
            r#"<line x1="{ax0}" y1="{0}" x2="{1}" y2="{0}" stroke="lightgray"/><text x="{2}" y="{3}" text-anchor="end">{4}</text>"#,
            py(t),
            ax1,
            ax0 - 6.0,
            py(t) + 4.0,
            fmt_tick(t)
        );
    }
    let _ =
        writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, (ax0 + ax1) / 2.0, h - 15.0, xml(x_label));
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">{1}</text>"#,
        (ay0 + ay1) / 2.0,
        xml(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.2},{:.2}", px(*x), py(*y)))
            .collect();
        let dash = if ser.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                pts.join(" ")
            );
        }
        let ly = top + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{2}" y="{3}">{4}</text>"#,
            ax1 + 10.0,
            ax1 + 34.0,
            ax1 + 40.0,
            ly + 4.0,
            xml(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e5) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// Writes [`line_plot`] to `path` atomically.
pub fn write_plot(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    write_atomic(path, line_plot(title, x_label, y_label, series).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        let t = ticks(0.913, 0.987);
        assert!(t.len() >= 3 && t.len() <= 7, "{t:?}");
        assert!(t.iter().all(|v| (0.913..=0.987).contains(v)));
    }

    #[test]
    fn plot_has_one_polyline_per_series_and_escapes_text() {
        let series = vec![
            Series {
                name: "path <ours>".into(),
                points: vec![(0.0, 0.9), (1.0, 0.95), (2.0, f64::NAN)],
                dashed: false,
            },
            Series { name: "baseline".into(), points: vec![(0.0, 0.8), (2.0, 0.85)], dashed: true },
        ];
        let svg = line_plot("accuracy & steps", "step", "accuracy", &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("path &lt;ours&gt;") && svg.contains("accuracy &amp; steps"));
        assert!(svg.contains("stroke-dasharray") && svg.trim_end().ends_with("</svg>"));
        // The NaN point is skipped: the first polyline has two points.
        let first = svg.split("<polyline").nth(1).unwrap();
        let pts = first.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(pts.split(' ').count(), 2);
    }

    #[test]
    fn csv_rejects_ragged_rows_and_writes_atomically() {
        let dir = std::env::temp_dir().join(format!("geopath-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("path.csv");
        write_csv(&path, &["step", "acc"], &[vec![0.0, 0.5], vec![1.0, 0.75]]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "step,acc\n0,0.5\n1,0.75\n");
        let e = write_csv(&path, &["step", "acc"], &[vec![0.0]]).unwrap_err().to_string();
        assert!(e.contains("row 0"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "step,acc\n0,0.5\n1,0.75\n",
            "a failed write keeps the old file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
