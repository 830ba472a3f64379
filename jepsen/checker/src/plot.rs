//! Plots of a run: latency and throughput over time, with the faults shaded.
//!
//! A checker's verdict says whether the system was correct; the plots show
//! what it was like to be a client meanwhile. Read them together with the
//! fault timeline: a partition that leaves the majority intact should barely
//! show, a partition that isolates the leader should show as a gap in `ok`
//! writes until a new leader is elected (Raft §5.2: an election timeout,
//! then a vote), and the gap's length is the cluster's unavailability.
//!
//! Two SVG files are written (SVG needs no font or system library):
//!
//! * **latency**: every completed operation as a point, at its invocation
//!   time, with its latency (invocation to completion) on a log scale, so
//!   1 ms reads and 1 s timeouts are both legible;
//! * **rate**: completed operations per second, one line per series.
//!
//! A *series* is a function and an outcome (`read ok`, `write info`, ...):
//! `read`, `write`, `cas` and `add` have fixed colours, any other function
//! seen gets the next free one. Within a function, `ok` is the full colour,
//! `fail` a light tint and `info` a dark shade; on the latency plot they are
//! also a dot, a cross and a triangle, so outcomes stay apart even in grey,
//! and on the rate plot `ok` lines are the thicker ones.
//!
//! A *fault* is the interval between the nemesis's `start-<name>` and the
//! next `stop-<name>` ([`crate::stats::fault_intervals`]); one still open
//! at the end of the history is shaded to the end. Each fault name
//! (`partition`, `kill`, `pause`, `lose-unsynced`, `membership`, or any
//! other) has its own translucent colour and legend entry, so overlapping
//! faults show as mixed shades.
//!
//! The plots need the events' `time` fields, which a history may leave out
//! (see [`crate::history`]): an operation without both its times is not
//! drawn, a fault whose start has no time is not shaded, and a history with
//! no time at all gets no plots.
//!
//! Drawing a plot can fail (a directory that cannot be written, a history
//! that does not pair or has no times); [`write_plots`] reports which plot
//! failed and goes on, since a missing plot should never hide a verdict.

use std::path::Path;
use std::time::Duration;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::history::{self, Event, Op, Outcome};
use crate::stats::fault_intervals;

/// Width and height of each plot, in pixels.
const SIZE: (u32, u32) = (1200, 560);

/// Width of the legend, right of the chart, in pixels.
const LEGEND_WIDTH: u32 = 170;

/// Opacity of the fault shading: light enough that the points on top stay
/// readable, dark enough that two overlapping faults show as a deeper tone.
const FAULT_ALPHA: f64 = 0.18;

/// Functions with a fixed colour, in legend order; other functions follow,
/// sorted by name.
const KNOWN_FUNCTIONS: [(&str, RGBColor); 4] = [
    ("read", RGBColor(0x1f, 0x77, 0xb4)),
    ("write", RGBColor(0x2c, 0xa0, 0x2c)),
    ("cas", RGBColor(0x94, 0x67, 0xbd)),
    ("add", RGBColor(0x8c, 0x56, 0x4b)),
];

/// Colours for functions not in [`KNOWN_FUNCTIONS`], reused in turn.
const OTHER_FUNCTION_COLORS: [RGBColor; 4] = [
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// The harness's faults and their shades.
const KNOWN_FAULTS: [(&str, RGBColor); 5] = [
    ("partition", RGBColor(0x60, 0x60, 0x60)),
    ("kill", RGBColor(0xd6, 0x27, 0x28)),
    ("pause", RGBColor(0xff, 0xa5, 0x00)),
    ("lose-unsynced", RGBColor(0x80, 0x00, 0x80)),
    ("membership", RGBColor(0x00, 0x80, 0x80)),
];

/// Shades for other fault names, reused in turn.
const OTHER_FAULT_COLORS: [RGBColor; 3] =
    [RGBColor(0x00, 0x00, 0xcd), RGBColor(0x8b, 0x45, 0x13), RGBColor(0x55, 0x6b, 0x2f)];

/// What to call the plot files, and how far the time axis reaches.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// File name of the latency plot, in the output directory.
    pub latency_file: String,
    /// File name of the throughput plot, in the output directory.
    pub rate_file: String,
    /// The time axis spans at least this long (the test's time limit), so
    /// plots of runs with equal limits line up even if one ended early.
    pub min_duration: Duration,
}

impl Default for PlotOptions {
    /// `latency.svg` and `rate.svg`, the axis as long as the history.
    fn default() -> Self {
        PlotOptions {
            latency_file: "latency.svg".to_owned(),
            rate_file: "rate.svg".to_owned(),
            min_duration: Duration::ZERO,
        }
    }
}

/// Draws the latency and the rate plot of `events` into `dir`. Returns, for
/// each plot that could not be drawn, its file name and why; an empty list
/// means both were written.
pub fn write_plots(dir: &Path, events: &[Event], options: &PlotOptions) -> Vec<(String, anyhow::Error)> {
    let timeline = Timeline::new(events, options.min_duration);
    let plots: [(&str, Draw); 2] = [(&options.latency_file, latency_plot), (&options.rate_file, rate_plot)];
    let mut failures = Vec::new();
    for (file, draw) in plots {
        let result = match &timeline {
            Ok(timeline) => draw(timeline, &dir.join(file)),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        if let Err(e) = result {
            failures.push((file.to_owned(), e));
        }
    }
    failures
}

/// Draws one plot of a timeline into a file.
type Draw = fn(&Timeline, &Path) -> anyhow::Result<()>;

/// One series: a function and an outcome, and how it is drawn.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    f: String,
    outcome: Outcome,
    color: RGBColor,
}

impl Series {
    fn label(&self) -> String {
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        format!("{} {outcome}", self.f)
    }

    /// The series' marker at `at`: dot, cross or triangle by outcome.
    fn marker<'a>(&self, at: (i32, i32), size: i32) -> DynElement<'static, SVGBackend<'a>, (i32, i32)> {
        let style = self.color.filled();
        match self.outcome {
            Outcome::Ok => Circle::new(at, size, style).into_dyn(),
            Outcome::Fail => Cross::new(at, size, self.color.stroke_width(1)).into_dyn(),
            Outcome::Info => TriangleMarker::new(at, size + 1, style).into_dyn(),
        }
    }
}

/// A completed operation, as plotted.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Index into [`Timeline::series`].
    series: usize,
    /// Invocation time, seconds since the start.
    invoked: f64,
    /// Completion time, seconds since the start.
    completed: f64,
    /// Completion minus invocation, milliseconds.
    latency_ms: f64,
}

/// A shaded fault interval, in seconds.
#[derive(Debug, Clone, PartialEq)]
struct Shade {
    name: String,
    from: f64,
    to: f64,
}

/// Everything the plots draw, extracted from a history.
#[derive(Debug)]
struct Timeline {
    /// Series that have at least one point, in legend order.
    series: Vec<Series>,
    points: Vec<Point>,
    shades: Vec<Shade>,
    /// Fault names in legend order, with their colours.
    faults: Vec<(String, RGBColor)>,
    /// The end of the time axis, seconds.
    end: f64,
}

impl Timeline {
    fn new(events: &[Event], min_duration: Duration) -> anyhow::Result<Timeline> {
        let secs = |ns: u64| ns as f64 / 1e9;
        let ops = history::pair(events).map_err(|e| anyhow::anyhow!("the history does not pair: {e}"))?;
        if !events.is_empty() && events.iter().all(|e| e.time.is_none()) {
            anyhow::bail!("the history has no `time` fields, and the plots are drawn against time");
        }
        let last = events.iter().filter_map(|e| e.time).max().unwrap_or(0);
        let end = secs(last).max(min_duration.as_secs_f64());

        // An operation is drawn only if both its times are known.
        let completed: Vec<&Op> =
            ops.iter().filter(|op| op.invoke_time.is_some() && op.complete_time.is_some()).collect();
        let functions =
            palette(completed.iter().map(|op| op.f.as_str()), &KNOWN_FUNCTIONS, &OTHER_FUNCTION_COLORS);
        let mut series = Vec::new();
        for (f, color) in functions {
            for outcome in [Outcome::Ok, Outcome::Fail, Outcome::Info] {
                if completed.iter().any(|op| op.f.as_str() == f && op.outcome == outcome) {
                    series.push(Series { f: f.to_owned(), outcome, color: shade(color, outcome) });
                }
            }
        }
        let points = completed
            .iter()
            .filter_map(|op| {
                let (invoked, done) = (op.invoke_time?, op.complete_time?);
                let series = series.iter().position(|s| s.f == op.f.as_str() && s.outcome == op.outcome)?;
                Some(Point {
                    series,
                    invoked: secs(invoked),
                    completed: secs(done),
                    latency_ms: done.saturating_sub(invoked) as f64 / 1e6,
                })
            })
            .collect();

        let shades: Vec<Shade> = fault_intervals(events)
            .into_iter()
            // A fault whose start has no time cannot be placed on the axis.
            .filter_map(|i| {
                Some(Shade { from: secs(i.start_ns?), to: i.stop_ns.map_or(end, secs), name: i.name })
            })
            .collect();
        let faults = palette(shades.iter().map(|s| s.name.as_str()), &KNOWN_FAULTS, &OTHER_FAULT_COLORS)
            .into_iter()
            .map(|(name, color)| (name.to_owned(), color))
            .collect();
        Ok(Timeline { series, points, shades, faults, end })
    }
}

/// The distinct `names` in legend order with their colours: names in
/// `known` first, in its order and with its colours, then the others sorted,
/// coloured from `others` in turn.
fn palette<'a>(
    names: impl Iterator<Item = &'a str>,
    known: &[(&str, RGBColor)],
    others: &[RGBColor],
) -> Vec<(&'a str, RGBColor)> {
    let mut names: Vec<(usize, &str)> =
        names.map(|n| (known.iter().position(|&(k, _)| k == n).unwrap_or(known.len()), n)).collect();
    names.sort_unstable();
    names.dedup();
    let mut unknown = 0;
    names
        .into_iter()
        .map(|(rank, name)| match known.get(rank) {
            Some(&(_, color)) => (name, color),
            None => {
                unknown += 1;
                (name, others[(unknown - 1) % others.len()])
            }
        })
        .collect()
}

/// An outcome's variant of a function's colour: `ok` as it is, `fail`
/// lighter, `info` darker.
fn shade(color: RGBColor, outcome: Outcome) -> RGBColor {
    let RGBColor(r, g, b) = color;
    let towards = |c: u8, target: f64, by: f64| (f64::from(c) + (target - f64::from(c)) * by).round() as u8;
    match outcome {
        Outcome::Ok => color,
        Outcome::Fail => RGBColor(towards(r, 255.0, 0.5), towards(g, 255.0, 0.5), towards(b, 255.0, 0.5)),
        Outcome::Info => RGBColor(towards(r, 0.0, 0.45), towards(g, 0.0, 0.45), towards(b, 0.0, 0.45)),
    }
}

/// Every completed operation's latency at its invocation time, log scale.
fn latency_plot(timeline: &Timeline, path: &Path) -> anyhow::Result<()> {
    let latencies = timeline.points.iter().map(|p| p.latency_ms);
    let top = latencies.clone().fold(1.0_f64, f64::max) * 1.5;
    // A log scale cannot reach 0: a latency below 10 µs is drawn at 10 µs.
    let bottom = latencies.fold(top, f64::min).max(0.01) / 1.5;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let (area, legend_area) = split(&root)?;
    let mut chart = chart(&area, "latency", timeline.end, (bottom..top).log_scale(), "latency (ms)")?;
    let mut legend = shade_faults(&mut chart, timeline, (bottom, top))?;
    for (s, series) in timeline.series.iter().enumerate() {
        let points = timeline.points.iter().filter(|p| p.series == s);
        chart
            .draw_series(
                points.map(|p| EmptyElement::at((p.invoked, p.latency_ms)) + series.marker((0, 0), 2)),
            )
            .map_err(plot_error)?;
        legend.push((series.label(), Symbol::Marker(series)));
    }
    finish(&root, &legend_area, &legend)
}

/// Completed operations per second, one line per series, each bucket drawn
/// at its middle.
fn rate_plot(timeline: &Timeline, path: &Path) -> anyhow::Result<()> {
    // One bucket per started second; a completion at the very end counts
    // in the last.
    let buckets = timeline.end.ceil().max(1.0) as usize;
    let mut counts = vec![vec![0u32; buckets]; timeline.series.len()];
    for p in &timeline.points {
        counts[p.series][(p.completed.floor() as usize).min(buckets - 1)] += 1;
    }
    let top = counts.iter().flatten().copied().max().map_or(1.0, f64::from).max(1.0) * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let (area, legend_area) = split(&root)?;
    let mut chart = chart(&area, "throughput", timeline.end, 0.0..top, "operations / s")?;
    let mut legend = shade_faults(&mut chart, timeline, (0.0, top))?;
    for (series, counts) in timeline.series.iter().zip(counts) {
        let line = counts.into_iter().enumerate().map(|(i, c)| (i as f64 + 0.5, f64::from(c)));
        // `ok` lines thicker: they are what the reader looks at first.
        let style = series.color.stroke_width(if series.outcome == Outcome::Ok { 2 } else { 1 });
        chart.draw_series(LineSeries::new(line, style)).map_err(plot_error)?;
        legend.push((series.label(), Symbol::Line(style)));
    }
    finish(&root, &legend_area, &legend)
}

/// A drawing area of an SVG file, in pixels.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A chart on an SVG file, time in seconds across.
type Chart<'a, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>;

/// Whitens the file and splits it into the chart's area and, right of it,
/// the legend's: plotters' own legend sits inside the chart and would hide
/// points.
fn split<'a>(root: &Area<'a>) -> anyhow::Result<(Area<'a>, Area<'a>)> {
    root.fill(&WHITE).map_err(plot_error)?;
    Ok(root.split_horizontally(SIZE.0 - LEGEND_WIDTH))
}

/// A chart with time in seconds across and `y` up, its axes drawn.
fn chart<'a, Y>(
    area: &Area<'a>,
    title: &str,
    end: f64,
    y: Y,
    y_desc: &str,
) -> anyhow::Result<Chart<'a, Y::CoordDescType>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title} (faults shaded)"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end.max(f64::MIN_POSITIVE), y)
        .map_err(plot_error)?;
    chart.configure_mesh().x_desc("time (s)").y_desc(y_desc).draw().map_err(plot_error)?;
    Ok(chart)
}

/// How a legend row shows its series.
enum Symbol<'a> {
    /// A fault's shading.
    Shade(ShapeStyle),
    /// A series' point marker.
    Marker(&'a Series),
    /// A series' line.
    Line(ShapeStyle),
}

/// Shades every fault interval over the full height `(bottom, top)`, and
/// returns the legend rows: one per fault name.
fn shade_faults<'t, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, Y>,
    timeline: &'t Timeline,
    (bottom, top): (f64, f64),
) -> anyhow::Result<Vec<(String, Symbol<'t>)>> {
    let mut legend = Vec::new();
    for (name, color) in &timeline.faults {
        let style = color.mix(FAULT_ALPHA).filled();
        let shades = timeline.shades.iter().filter(|s| &s.name == name);
        chart
            .draw_series(shades.map(|s| Rectangle::new([(s.from, bottom), (s.to, top)], style)))
            .map_err(plot_error)?;
        legend.push((name.clone(), Symbol::Shade(style)));
    }
    Ok(legend)
}

/// Draws the legend, one row per entry, and writes the file.
fn finish(root: &Area<'_>, legend_area: &Area<'_>, legend: &[(String, Symbol<'_>)]) -> anyhow::Result<()> {
    const TOP: i32 = 50;
    const ROW: i32 = 18;
    for (i, (label, symbol)) in (0..).zip(legend) {
        let y = TOP + i * ROW;
        let drawn = match symbol {
            Symbol::Shade(style) => legend_area.draw(&Rectangle::new([(5, y - 5), (20, y + 5)], *style)),
            Symbol::Marker(series) => legend_area.draw(&series.marker((12, y), 3)),
            Symbol::Line(style) => legend_area.draw(&PathElement::new(vec![(5, y), (20, y)], *style)),
        };
        drawn.map_err(plot_error)?;
        let text = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        legend_area.draw(&Text::new(label.as_str(), (28, y), text)).map_err(plot_error)?;
    }
    root.present().map_err(plot_error)
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::{EventType, Function, Process};

    fn client(process: u64, kind: EventType, f: &str, time_ms: u64) -> Event {
        Event::new(
            Process::Client(process.into()),
            kind,
            Function::from(f.to_owned()),
            json!("x"),
            json!(1),
            time_ms * 1_000_000,
        )
    }

    fn nemesis(f: &str, time_ms: u64) -> Event {
        Event::new(
            Process::Nemesis,
            EventType::Info,
            Function::from(f.to_owned()),
            json!(null),
            json!(null),
            time_ms * 1_000_000,
        )
    }

    /// A small run: reads, writes, a custom function, and three faults, one
    /// nested in another and one never stopped.
    fn small_history() -> Vec<Event> {
        vec![
            client(0, EventType::Invoke, "read", 100),
            client(0, EventType::Ok, "read", 105),
            nemesis("start-partition", 1000),
            client(1, EventType::Invoke, "write", 1100),
            nemesis("start-kill", 1200),
            nemesis("stop-kill", 1500),
            client(1, EventType::Info, "write", 2100),
            nemesis("stop-partition", 2500),
            client(2, EventType::Invoke, "cas", 2600),
            client(2, EventType::Fail, "cas", 2610),
            client(0, EventType::Invoke, "append", 2700),
            client(0, EventType::Ok, "append", 2750),
            nemesis("start-clock-skew", 3000),
            client(0, EventType::Invoke, "read", 3100),
        ]
    }

    #[test]
    fn timeline_shades_nested_and_unclosed_faults_to_the_end() {
        let timeline = Timeline::new(&small_history(), Duration::from_secs(5)).unwrap();
        assert_eq!(timeline.end, 5.0, "the axis reaches the minimum duration");
        let shades: Vec<(&str, f64, f64)> =
            timeline.shades.iter().map(|s| (s.name.as_str(), s.from, s.to)).collect();
        assert_eq!(shades, [("partition", 1.0, 2.5), ("kill", 1.2, 1.5), ("clock-skew", 3.0, 5.0)]);
        // One legend entry per name, known faults first, each its own colour.
        let names: Vec<&str> = timeline.faults.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["partition", "kill", "clock-skew"]);
        assert_ne!(timeline.faults[0].1, timeline.faults[1].1);
    }

    #[test]
    fn timeline_has_a_series_per_function_and_outcome_seen() {
        let timeline = Timeline::new(&small_history(), Duration::ZERO).unwrap();
        let labels: Vec<String> = timeline.series.iter().map(Series::label).collect();
        // The last read never completed: no point, no series of its own.
        assert_eq!(labels, ["read ok", "write info", "cas fail", "append ok"]);
        let colors: Vec<RGBColor> = timeline.series.iter().map(|s| s.color).collect();
        for (i, a) in colors.iter().enumerate() {
            assert!(colors[i + 1..].iter().all(|b| b != a), "colours repeat: {colors:?}");
        }
        let write = timeline.points.iter().find(|p| timeline.series[p.series].f == "write").unwrap();
        assert_eq!((write.invoked, write.completed, write.latency_ms), (1.1, 2.1, 1000.0));
        assert_eq!(timeline.end, 3.1, "without a minimum, the axis ends at the last event");
    }

    #[test]
    fn write_plots_writes_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let failures = write_plots(dir.path(), &small_history(), &PlotOptions::default());
        assert!(failures.is_empty(), "{failures:?}");
        for file in ["latency.svg", "rate.svg"] {
            let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("partition") && svg.contains("append ok"),
                "{file}"
            );
        }
    }

    #[test]
    fn empty_history_still_plots() {
        let dir = tempfile::tempdir().unwrap();
        let options = PlotOptions { latency_file: "latency-raw.svg".into(), ..PlotOptions::default() };
        assert!(write_plots(dir.path(), &[], &options).is_empty());
        assert!(std::fs::metadata(dir.path().join("latency-raw.svg")).unwrap().len() > 0);
    }

    #[test]
    fn failures_name_the_plot_and_do_not_stop_the_other() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the latency file should go: it cannot be written.
        std::fs::create_dir(dir.path().join("latency.svg")).unwrap();
        let failures = write_plots(dir.path(), &small_history(), &PlotOptions::default());
        assert_eq!(failures.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["latency.svg"]);
        assert!(dir.path().join("rate.svg").is_file());

        // A history that does not pair fails both, each by name.
        let unpaired = [client(0, EventType::Ok, "read", 1)];
        let failures = write_plots(dir.path(), &unpaired, &PlotOptions::default());
        assert_eq!(failures.len(), 2);
        assert!(failures[1].1.to_string().contains("does not pair"), "{}", failures[1].1);
    }

    #[test]
    fn history_without_times_gets_no_plots_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let timeless: Vec<Event> = small_history()
            .into_iter()
            .map(|mut e| {
                e.time = None;
                e
            })
            .collect();
        let failures = write_plots(dir.path(), &timeless, &PlotOptions::default());
        assert_eq!(failures.len(), 2);
        assert!(failures[0].1.to_string().contains("no `time`"), "{}", failures[0].1);
        assert!(!dir.path().join("rate.svg").exists());
    }

    #[test]
    fn operations_and_faults_without_times_are_left_out_of_the_plots() {
        let mut history = small_history();
        // The write's completion and the kill's start lose their times.
        history[6].time = None;
        history[4].time = None;
        let timeline = Timeline::new(&history, Duration::ZERO).unwrap();
        assert!(timeline.points.iter().all(|p| timeline.series[p.series].f != "write"));
        let shades: Vec<&str> = timeline.shades.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(shades, ["partition", "clock-skew"]);
    }
}
