//! The benchmarks' SVG plots (SVG needs no font or system library):
//!
//! * [`cdf`]: cumulative distributions, one curve per series, as Figure 16
//!   of the Raft paper shows the time without a leader for several
//!   election timeout ranges: for each x, the fraction of rounds that took
//!   at most x. A curve further left is faster; a steep curve is
//!   predictable.
//! * [`tradeoff`]: labelled points, x against y, for the election timeout
//!   trade-off: a short timeout fails over quickly but starts elections
//!   that no failure called for; a long one does the opposite.

use std::path::Path;

use anyhow::Context as _;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Width and height of a plot, in pixels.
const SIZE: (u32, u32) = (1000, 600);

/// Curve and point colours, reused in turn (the jepsen plots' palette).
const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// The colour of the `i`th series.
fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// The points of a cumulative distribution drawn as steps: at each sorted
/// sample x_k (k from 1 of n) the fraction rises from (k-1)/n to k/n.
fn cdf_steps(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mut out = Vec::with_capacity(2 * sorted.len());
    for (k, x) in sorted.iter().enumerate() {
        out.push((*x, k as f64 / n));
        out.push((*x, (k + 1) as f64 / n));
    }
    out
}

/// An axis label: whole numbers without a decimal point, others with one
/// decimal.
fn tick(v: &f64) -> String {
    match (v - v.round()).abs() < 1e-9 {
        true => format!("{v:.0}"),
        false => format!("{v:.1}"),
    }
}

/// An axis from 0 to a little past `max`.
fn axis_end(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.05
    } else {
        1.0
    }
}

/// A chart with both axes in `f64`.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// What every plot here shares: a white SVG of [`SIZE`] at `path` with a
/// title, axes over `x` and from 0 to `y_end` with the `axes` descriptions
/// (y's values printed by `y_format`), whatever `series` draws, and its
/// legend at `legend`.
fn draw(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    (x, y_end): (std::ops::Range<f64>, f64),
    y_format: &dyn Fn(&f64) -> String,
    legend: SeriesLabelPosition,
    series: impl FnOnce(&mut Chart) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x, 0.0..y_end)?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .x_label_formatter(&tick)
        .y_label_formatter(y_format)
        .draw()?;
    series(&mut chart)?;
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Draws the cumulative distribution of each `(label, samples)` into the
/// SVG file `path`; series without samples get a legend entry only.
pub fn cdf(path: &Path, title: &str, x_label: &str, series: &[(String, Vec<f64>)]) -> anyhow::Result<()> {
    let max = series.iter().flat_map(|(_, s)| s.iter().copied()).fold(0.0, f64::max);
    let axes = (x_label, "cumulative fraction of rounds");
    let percent = |v: &f64| format!("{:.0}%", v * 100.0);
    draw(path, title, axes, (0.0..axis_end(max), 1.0), &percent, SeriesLabelPosition::LowerRight, |chart| {
        for (i, (label, samples)) in series.iter().enumerate() {
            let style = color(i).stroke_width(2);
            chart
                .draw_series(LineSeries::new(cdf_steps(samples), style))?
                .label(format!("{label} (n={})", samples.len()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        Ok(())
    })
}

/// One point of a [`tradeoff`] plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Written next to the point.
    pub label: String,
    /// Its series (same colour), e.g. the system.
    pub series: String,
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
}

/// Draws labelled `points` into the SVG file `path`, one colour per
/// series, the points of a series joined in the order given. Labels of the
/// first series sit above their points, of the others below, so that two
/// systems' points at the same place stay legible.
pub fn tradeoff(path: &Path, title: &str, axes: (&str, &str), points: &[Point]) -> anyhow::Result<()> {
    let x_max = points.iter().map(|p| p.x).fold(0.0, f64::max);
    let y_max = points.iter().map(|p| p.y).fold(0.0, f64::max);
    let mut names: Vec<&str> = Vec::new();
    for p in points {
        if !names.contains(&p.series.as_str()) {
            names.push(&p.series);
        }
    }
    // Room right of the last point for its label, and left of x = 0 for
    // the points there.
    let x_end = axis_end(x_max) * 1.15;
    let ends = (-0.03 * x_end..x_end, axis_end(y_max) * 1.05);
    draw(path, title, axes, ends, &tick, SeriesLabelPosition::UpperRight, |chart| {
        for (i, name) in names.iter().enumerate() {
            let c = color(i);
            let label_at = if i == 0 { (8, -18) } else { (8, 6) };
            let mine: Vec<&Point> = points.iter().filter(|p| p.series == *name).collect();
            chart
                .draw_series(LineSeries::new(mine.iter().map(|p| (p.x, p.y)), c.mix(0.5).stroke_width(1)))?
                .label(*name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
            chart.draw_series(mine.iter().map(|p| {
                EmptyElement::at((p.x, p.y))
                    + Circle::new((0, 0), 5, c.filled())
                    + Text::new(p.label.clone(), label_at, ("sans-serif", 14).into_font().color(&c))
            }))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_rises_by_one_nth_at_each_sorted_sample() {
        assert_eq!(cdf_steps(&[30.0, 10.0]), [(10.0, 0.0), (10.0, 0.5), (30.0, 0.5), (30.0, 1.0)]);
        assert!(cdf_steps(&[f64::NAN]).is_empty());
    }

    #[test]
    fn ticks_are_whole_numbers_where_they_can_be() {
        assert_eq!(
            (tick(&200.0), tick(&2.5), tick(&0.30000000000000004)),
            ("200".into(), "2.5".into(), "0.3".into())
        );
    }

    #[test]
    fn both_plots_are_svg_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdf.svg");
        let series = [("kv".to_owned(), vec![300.0, 250.0]), ("etcd".to_owned(), Vec::new())];
        cdf(&path, "t", "ms", &series).unwrap();
        // plotters writes each text on a line of its own.
        let has_text = |svg: &str, text: &str| svg.lines().any(|l| l.trim() == text);
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && has_text(&svg, "kv (n=2)") && has_text(&svg, "etcd (n=0)"),
            "{svg}"
        );
        let path = dir.path().join("tradeoff.svg");
        let p = |label: &str, x, y| Point { label: label.into(), series: "kv".into(), x, y };
        tradeoff(&path, "t", ("x", "y"), &[p("T=150", 2.0, 300.0), p("T=500", 0.0, 900.0)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && has_text(&svg, "T=150") && has_text(&svg, "T=500"), "{svg}");
    }
}
