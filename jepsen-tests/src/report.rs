//! A Jepsen-style report of a failure-injection run: what the checkers decided, and what the
//! clients saw while the nemesis was at work.
//!
//! Everything here is a pure function from the run's evidence to text. Only [`write_report`]
//! does I/O: it writes the files.
//! * [`fault_windows`]: when each fault was in force, taken from the nemesis ops;
//! * [`latency_svg`]: the latency of every client op over time, on a log scale, with the fault
//!   windows drawn as bands (Jepsen's `latency-raw.png`);
//! * [`rate_svg`]: completions per second over time, one line per outcome (Jepsen's `rate.png`);
//! * [`render_html`]: one self-contained page (inline CSS, no JS) with the verdicts, the op
//!   counts, both plots and the fault windows.
//!
//! # Fault windows
//! Nemesis ops (process [`NEMESIS_PROCESS`]) never complete, so only their invoke time counts:
//! * `start-X` opens a window named `X`;
//! * `stop-X` closes the earliest open window named `X`. A `stop-X` with no such window open is
//!   ignored;
//! * `heal` closes every open window;
//! * a window still open at the end closes at the end of the history (the latest invoke or
//!   completion of any op).
//!
//! The windows ignore any other nemesis op, but the page still counts it.
//!
//! # Robustness
//! Every string that comes from the run is escaped, in HTML and SVG alike. Times are clamped so
//! that no input (empty, one instant, a completion before its invoke) gives NaN or infinity.
//! The latency plot draws at most [`MAX_PLOTTED_OPS`] marks.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::Path;

use crate::checker::AnomalyKind;
use crate::checker::Valid;
use crate::checker::Verdict;
use crate::history::Op;
use crate::history::OpValue;
use crate::history::Outcome;

/// Process id of the nemesis in the history. Its ops are faults, not client operations.
pub const NEMESIS_PROCESS: u64 = 1_000_000_000;

/// The most op marks the latency plot draws. Above this, it keeps every k-th op of each
/// outcome and says so in the plot.
pub const MAX_PLOTTED_OPS: usize = 20_000;

/// The longest a fault window's `detail` gets, in characters.
pub const DETAIL_CHARS: usize = 80;

/// How many anomalies the page lists for each checker.
pub const ANOMALIES_SHOWN: usize = 20;

/// One fault in force from `start_ns` to `end_ns` (history clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// The `X` of `start-X`.
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The value of the opening nemesis op as compact JSON, at most [`DETAIL_CHARS`] long.
    pub detail: String,
}

/// Pairs the nemesis's `start-X` / `stop-X` / `heal` ops into windows (see the module docs).
/// The windows are listed in order of start.
pub fn fault_windows(ops: &[Op]) -> Vec<FaultWindow> {
    let end_ns = ops.iter().map(op_end_ns).max().unwrap_or(0);
    let mut nemesis: Vec<&Op> = ops.iter().filter(|op| op.process == NEMESIS_PROCESS).collect();
    // A stable sort, so ops at the same instant keep their recording order.
    nemesis.sort_by_key(|op| op.invoke_ns);
    let mut windows: Vec<FaultWindow> = Vec::new();
    // Indices into `windows` of the open windows, oldest first.
    let mut open: Vec<usize> = Vec::new();
    for op in nemesis {
        let f = op.f();
        if let Some(name) = f.strip_prefix("start-") {
            open.push(windows.len());
            windows.push(FaultWindow {
                name: name.to_string(),
                start_ns: op.invoke_ns,
                end_ns: op.invoke_ns,
                detail: value_text(&op.invoke, DETAIL_CHARS),
            });
        } else if let Some(name) = f.strip_prefix("stop-") {
            if let Some(pos) = open.iter().position(|&i| windows[i].name == name) {
                let i = open.remove(pos);
                windows[i].end_ns = op.invoke_ns;
            }
        } else if f == "heal" {
            for i in open.drain(..) {
                windows[i].end_ns = op.invoke_ns;
            }
        }
    }
    for i in open {
        windows[i].end_ns = end_ns.max(windows[i].start_ns);
    }
    windows
}

/// Latency over time as a standalone SVG. Each client op is one mark: x is its invoke time
/// (seconds since the first op), y its latency (log scale). The outcome gives the colour and
/// `f` gives the shape. Ops without a latency (`info`) are marked in a strip above the plot.
/// Fault windows are drawn as translucent bands.
pub fn latency_svg(ops: &[Op], windows: &[FaultWindow]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = draw_latency(&mut out, ops, windows);
    out
}

/// Throughput over time as a standalone SVG: client completions per second, one line per
/// outcome, with the same fault bands as [`latency_svg`]. An op completes at its completion
/// time. An `info` op has none, so it is counted at its invoke.
pub fn rate_svg(ops: &[Op], windows: &[FaultWindow]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = draw_rate(&mut out, ops, windows);
    out
}

/// One self-contained HTML page. It holds the header text, the verdict table, op counts per
/// `f` and outcome, both plots and the fault windows.
pub fn render_html<N>(header: &str, verdicts: &[(N, Verdict)], ops: &[Op], windows: &[FaultWindow]) -> String
where
    N: AsRef<str>,
{
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_html(&mut out, header, verdicts, ops, windows);
    out
}

/// Writes `report.html`, `latency.svg` and `rate.svg` into `dir`, which is created if it is
/// missing.
pub fn write_report<N>(dir: &Path, header: &str, verdicts: &[(N, Verdict)], ops: &[Op]) -> std::io::Result<()>
where
    N: AsRef<str>,
{
    std::fs::create_dir_all(dir)?;
    let windows = fault_windows(ops);
    std::fs::write(dir.join("latency.svg"), latency_svg(ops, &windows))?;
    std::fs::write(dir.join("rate.svg"), rate_svg(ops, &windows))?;
    std::fs::write(
        dir.join("report.html"),
        render_html(header, verdicts, ops, &windows),
    )
}

// ---------------------------------------------------------------------------------------------
// Shared pieces: outcomes, shapes, text.

const OUTCOMES: [Outcome; 3] = [Outcome::Ok, Outcome::Fail, Outcome::Info];

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Info => 2,
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}

fn outcome_colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "#2f9e44",
        Outcome::Fail => "#e8590c",
        Outcome::Info => "#868e96",
    }
}

/// Fault band colours, given out to fault names in sorted order. The list has no green, red
/// or grey, because those are the outcome colours.
const FAULT_COLOURS: [&str; 8] = [
    "#f59f00", "#7048e8", "#1c7ed6", "#d6336c", "#0ca678", "#a0522d", "#15aabf", "#ae3ec9",
];

/// Each fault name's band colour.
fn fault_colours(windows: &[FaultWindow]) -> BTreeMap<&str, &'static str> {
    let mut colours: BTreeMap<&str, &'static str> = windows.iter().map(|w| (w.name.as_str(), "")).collect();
    for (i, c) in colours.values_mut().enumerate() {
        *c = FAULT_COLOURS[i % FAULT_COLOURS.len()];
    }
    colours
}

/// The mark shape of an op, by `f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Submit,
    Read,
    Cancel,
    Other,
}

impl Shape {
    const ALL: [Shape; 4] = [Shape::Submit, Shape::Read, Shape::Cancel, Shape::Other];

    fn of(f: &str) -> Shape {
        match f {
            "submit" => Shape::Submit,
            "read" => Shape::Read,
            "cancel" => Shape::Cancel,
            _ => Shape::Other,
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Shape::Submit => "submit",
            Shape::Read => "read",
            Shape::Cancel => "cancel",
            Shape::Other => "other",
        }
    }

    /// One mark centred on (x, y). An empty `title` means no tooltip.
    fn draw(self, out: &mut String, class: &str, x: f64, y: f64, fill: &str, title: &str) -> fmt::Result {
        let (x, y) = (num(x), num(y));
        let tag = match self {
            // A circle.
            Shape::Submit => {
                write!(out, r#"<circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="3""#)?;
                "circle"
            }
            // A square.
            Shape::Read => {
                write!(
                    out,
                    r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="5.6" height="5.6""#,
                    x - 2.8,
                    y - 2.8
                )?;
                "rect"
            }
            // A triangle, point up.
            Shape::Cancel => {
                write!(
                    out,
                    r#"<path class="{class}" d="M{x:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z""#,
                    y - 3.6,
                    x + 3.6,
                    y + 2.8,
                    x - 3.6,
                    y + 2.8
                )?;
                "path"
            }
            // A diamond.
            Shape::Other => {
                write!(
                    out,
                    r#"<path class="{class}" d="M{x:.1},{:.1}L{:.1},{y:.1}L{x:.1},{:.1}L{:.1},{y:.1}Z""#,
                    y - 3.8,
                    x + 3.8,
                    y + 3.8,
                    x - 3.8
                )?;
                "path"
            }
        };
        write!(out, r#" fill="{fill}""#)?;
        if title.is_empty() {
            out.push_str("/>");
        } else {
            write!(out, "><title>{}</title></{tag}>", escape(title))?;
        }
        Ok(())
    }
}

/// Escapes `s` for HTML text, HTML attributes and XML alike. XML 1.0 forbids control
/// characters even when escaped, so they become U+FFFD.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to at most `max` characters. If it is cut, its last character is `…`.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A short description of an op's request: task ids for client ops, compact JSON otherwise.
fn value_text(v: &OpValue, max: usize) -> String {
    let text = match v {
        OpValue::Submit(s) => s
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        OpValue::Read(r) => r.ids.join(","),
        OpValue::Cancel(c) => c.id.clone(),
        OpValue::Other { value, .. } if value.is_null() => String::new(),
        OpValue::Other { value, .. } => value.to_string(),
    };
    truncate(&text, max)
}

/// `v`, or 0 if it is NaN or infinite: no coordinate may print as `NaN` or `inf`.
fn num(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// The latest instant of an op: its completion, else its invoke.
fn op_end_ns(op: &Op) -> u64 {
    op.complete_ns.unwrap_or(0).max(op.invoke_ns)
}

/// Latency in milliseconds, if the op completed.
fn latency_ms(op: &Op) -> Option<f64> {
    op.complete_ns
        .map(|c| c.saturating_sub(op.invoke_ns) as f64 / 1e6)
}

fn is_client(op: &Op) -> bool {
    op.process != NEMESIS_PROCESS
}

/// A "nice" step (1, 2 or 5 times a power of ten) at least `raw`. It is 1 for nonsense input.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let step = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    num(step * p).max(f64::MIN_POSITIVE)
}

/// Decimals needed to print multiples of `step`.
fn decimals(step: f64) -> usize {
    let d = -num(step.log10()).floor();
    if d > 0.0 { (d as usize).min(9) } else { 0 }
}

/// `ms` with about three significant digits.
fn fmt_ms(ms: f64) -> String {
    let ms = num(ms);
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

// ---------------------------------------------------------------------------------------------
// Plot geometry.

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 500.0;
/// Plot area, in pixels.
const LEFT: f64 = 80.0;
const RIGHT: f64 = 990.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 440.0;
/// Where the legend starts.
const LEGEND_X: f64 = 1010.0;
/// The strip above the plot for ops without a latency.
const INFO_Y: f64 = TOP - 12.0;
/// The fewest pixels a fault band is wide, so that an instant fault still shows.
const MIN_BAND_PX: f64 = 1.5;

/// The time axis shared by both plots.
struct TimeAxis {
    /// Time zero: the first op's invoke (or the first window's start).
    t0_ns: u64,
    /// Seconds covered by the axis, > 0.
    span_s: f64,
}

impl TimeAxis {
    fn new(ops: &[Op], windows: &[FaultWindow]) -> TimeAxis {
        let starts = ops.iter().map(|op| op.invoke_ns);
        let t0_ns = starts
            .chain(windows.iter().map(|w| w.start_ns))
            .min()
            .unwrap_or(0);
        let ends = ops.iter().map(op_end_ns);
        let end_ns = ends.chain(windows.iter().map(|w| w.end_ns)).max().unwrap_or(0);
        let span_s = end_ns.saturating_sub(t0_ns) as f64 / 1e9;
        TimeAxis {
            t0_ns,
            span_s: if span_s > 0.0 { span_s } else { 1.0 },
        }
    }

    /// Seconds since time zero.
    fn secs(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.t0_ns) as f64 / 1e9
    }

    /// The x pixel of `s` seconds.
    fn x(&self, s: f64) -> f64 {
        num(LEFT + (s / self.span_s).clamp(0.0, 1.0) * (RIGHT - LEFT))
    }

    /// Ticks with labels along the bottom, plus vertical grid lines.
    fn draw(&self, out: &mut String) -> fmt::Result {
        let step = nice_step(self.span_s / 10.0);
        let digits = decimals(step);
        let mut i = 0u32;
        while f64::from(i) * step <= self.span_s * (1.0 + 1e-9) && i <= 50 {
            let s = f64::from(i) * step;
            let x = self.x(s);
            write!(
                out,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}" stroke="#e9ecef"/><line x1="{x:.1}" y1="{BOTTOM}" x2="{x:.1}" y2="{:.1}" stroke="#495057"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{s:.digits$}</text>"##,
                BOTTOM + 5.0,
                BOTTOM + 17.0
            )?;
            i += 1;
        }
        write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">time since the first op (s)</text>"#,
            (LEFT + RIGHT) / 2.0,
            BOTTOM + 36.0
        )
    }
}

fn svg_open(out: &mut String, title: &str) -> fmt::Result {
    write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" fill="#212529"><title>{}</title><rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/><text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}</text>"##,
        escape(title),
        escape(title)
    )
}

/// The plot frame (drawn after the marks, so it stays visible).
fn frame(out: &mut String) -> fmt::Result {
    write!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#495057"/>"##,
        RIGHT - LEFT,
        BOTTOM - TOP
    )
}

/// Fault windows as translucent bands across the plot.
fn draw_bands(out: &mut String, axis: &TimeAxis, windows: &[FaultWindow]) -> fmt::Result {
    let colours = fault_colours(windows);
    for w in windows {
        let colour = colours.get(w.name.as_str()).copied().unwrap_or(FAULT_COLOURS[0]);
        let (s0, s1) = (axis.secs(w.start_ns), axis.secs(w.end_ns.max(w.start_ns)));
        let x0 = axis.x(s0);
        let width = (axis.x(s1) - x0).max(MIN_BAND_PX);
        let tip = format!(
            "{}: {s0:.3} s to {s1:.3} s ({:.3} s){}{}",
            w.name,
            s1 - s0,
            if w.detail.is_empty() { "" } else { " " },
            w.detail
        );
        write!(
            out,
            r#"<rect class="fault" x="{x0:.1}" y="{TOP}" width="{width:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.16"><title>{}</title></rect>"#,
            BOTTOM - TOP,
            escape(&tip)
        )?;
    }
    Ok(())
}

/// Each fault window's name at the top of its band, drawn over the marks. Names take one of
/// four rows, so that overlapping windows of different faults stay readable.
fn draw_band_labels(out: &mut String, axis: &TimeAxis, windows: &[FaultWindow]) -> fmt::Result {
    let colours = fault_colours(windows);
    for w in windows {
        let colour = colours.get(w.name.as_str()).copied().unwrap_or(FAULT_COLOURS[0]);
        let x0 = axis.x(axis.secs(w.start_ns));
        let row = colours.keys().position(|n| *n == w.name).unwrap_or(0) % 4;
        write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="{colour}" font-size="10" stroke="#fff" stroke-width="3" paint-order="stroke">{}</text>"##,
            x0 + 2.0,
            TOP + 11.0 + 11.0 * row as f64,
            escape(&truncate(&w.name, 24))
        )?;
    }
    Ok(())
}

/// The legend column. It shows the outcomes (with counts), the shapes if `shapes`, and the
/// fault names.
fn draw_legend(out: &mut String, counts: &[usize; 3], shapes: bool, windows: &[FaultWindow]) -> fmt::Result {
    let mut y = TOP + 4.0;
    let heading = |out: &mut String, y: f64, text: &str| {
        write!(
            out,
            r#"<text x="{LEGEND_X}" y="{y:.1}" font-weight="bold">{text}</text>"#
        )
    };
    heading(out, y, "outcome")?;
    for o in OUTCOMES {
        y += 16.0;
        Shape::Submit.draw(out, "legend", LEGEND_X + 5.0, y - 4.0, outcome_colour(o), "")?;
        write!(
            out,
            r#"<text x="{:.1}" y="{y:.1}">{} ({})</text>"#,
            LEGEND_X + 14.0,
            outcome_name(o),
            counts[outcome_index(o)]
        )?;
    }
    if shapes {
        y += 26.0;
        heading(out, y, "op")?;
        for s in Shape::ALL {
            y += 16.0;
            s.draw(out, "legend", LEGEND_X + 5.0, y - 4.0, "#495057", "")?;
            write!(
                out,
                r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                LEGEND_X + 14.0,
                s.legend()
            )?;
        }
    }
    let colours = fault_colours(windows);
    if colours.is_empty() {
        return Ok(());
    }
    y += 26.0;
    heading(out, y, "faults")?;
    let room = ((HEIGHT - 12.0 - y) / 16.0).max(1.0) as usize;
    for (i, (name, colour)) in colours.iter().enumerate() {
        y += 16.0;
        if i + 1 == room && colours.len() > room {
            let more = colours.len() - i;
            write!(out, r#"<text x="{LEGEND_X}" y="{y:.1}">… and {more} more</text>"#)?;
            break;
        }
        write!(
            out,
            r#"<rect x="{LEGEND_X}" y="{:.1}" width="10" height="10" fill="{colour}" fill-opacity="0.5"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 9.0,
            LEGEND_X + 14.0,
            escape(&truncate(name, 24))
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The latency plot.

/// The smallest latency the log axis shows: 1 µs. Shorter ones are drawn there.
const MIN_LATENCY_MS: f64 = 1e-3;

/// A log-scale latency axis spanning whole decades.
struct LogAxis {
    lo_exp: i32,
    hi_exp: i32,
}

impl LogAxis {
    fn new(latencies: impl Iterator<Item = f64>) -> LogAxis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for ms in latencies {
            let l = num(ms.max(MIN_LATENCY_MS).log10());
            lo = lo.min(l);
            hi = hi.max(l);
        }
        if !(lo.is_finite() && hi.is_finite()) {
            // No latencies: 1 ms to 1 s.
            return LogAxis { lo_exp: 0, hi_exp: 3 };
        }
        let lo_exp = lo.floor() as i32;
        let hi_exp = (hi.ceil() as i32).max(lo_exp + 1);
        LogAxis { lo_exp, hi_exp }
    }

    fn y(&self, ms: f64) -> f64 {
        let l = num(ms.max(MIN_LATENCY_MS).log10());
        let frac = (l - f64::from(self.lo_exp)) / f64::from(self.hi_exp - self.lo_exp);
        num(BOTTOM - frac.clamp(0.0, 1.0) * (BOTTOM - TOP))
    }

    /// A decade's label: 10^e ms written in µs, ms or s.
    fn label(e: i32) -> String {
        if e < 0 {
            format!("{} µs", 10f64.powi(e + 3))
        } else if e < 3 {
            format!("{} ms", 10f64.powi(e))
        } else {
            format!("{} s", 10f64.powi(e - 3))
        }
    }

    fn draw(&self, out: &mut String) -> fmt::Result {
        for e in self.lo_exp..=self.hi_exp {
            let y = self.y(10f64.powi(e));
            write!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#dee2e6"/><line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="#495057"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 5.0,
                LEFT - 8.0,
                y + 4.0,
                Self::label(e)
            )?;
            // Minor grid at 2× and 5× the decade.
            for m in [2.0, 5.0] {
                if e < self.hi_exp {
                    let y = self.y(m * 10f64.powi(e));
                    write!(
                        out,
                        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#f1f3f5"/>"##
                    )?;
                }
            }
        }
        write!(
            out,
            r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle" font-size="12">latency (log scale)</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{}">no latency</text><line x1="{LEFT}" y1="{INFO_Y}" x2="{RIGHT}" y2="{INFO_Y}" stroke="{}" stroke-dasharray="2 3"/>"#,
            (TOP + BOTTOM) / 2.0,
            LEFT - 8.0,
            INFO_Y + 4.0,
            outcome_colour(Outcome::Info),
            outcome_colour(Outcome::Info)
        )
    }
}

/// At most about [`MAX_PLOTTED_OPS`] of `ops`, keeping every k-th op of each outcome, and k.
fn subsample<'a>(ops: &[&'a Op]) -> (Vec<&'a Op>, usize) {
    if ops.len() <= MAX_PLOTTED_OPS {
        return (ops.to_vec(), 1);
    }
    // Each of the three outcomes may round up by one, so leave room for three.
    let k = ops.len().div_ceil(MAX_PLOTTED_OPS - OUTCOMES.len());
    let mut seen = [0usize; 3];
    let kept = ops
        .iter()
        .filter(|op| {
            let n = &mut seen[outcome_index(op.outcome)];
            *n += 1;
            (*n - 1) % k == 0
        })
        .copied()
        .collect();
    (kept, k)
}

fn draw_latency(out: &mut String, ops: &[Op], windows: &[FaultWindow]) -> fmt::Result {
    let client: Vec<&Op> = ops.iter().filter(|op| is_client(op)).collect();
    let mut counts = [0usize; 3];
    for op in &client {
        counts[outcome_index(op.outcome)] += 1;
    }
    let (shown, k) = subsample(&client);
    let axis = TimeAxis::new(ops, windows);
    let log = LogAxis::new(shown.iter().filter_map(|op| latency_ms(op)));

    svg_open(out, &format!("Latency of {} client ops", client.len()))?;
    if k > 1 {
        write!(
            out,
            r##"<text x="{RIGHT}" y="20" text-anchor="end" fill="#c92a2a">subsampled: 1 op in {k} of each outcome ({} of {} shown)</text>"##,
            shown.len(),
            client.len()
        )?;
    }
    draw_bands(out, &axis, windows)?;
    log.draw(out)?;
    axis.draw(out)?;
    // Ok first, so the rarer fail and info marks are drawn on top of it.
    for o in OUTCOMES {
        for op in shown.iter().filter(|op| op.outcome == o) {
            let s = axis.secs(op.invoke_ns);
            let latency = latency_ms(op);
            let y = latency.map_or(INFO_Y, |ms| log.y(ms));
            let took = latency.map_or_else(|| "no completion".to_string(), |ms| format!("{} ms", fmt_ms(ms)));
            let title = format!(
                "{} {} at {s:.3} s, {took}, process {}, line {}: {}",
                op.f(),
                outcome_name(o),
                op.process,
                op.line,
                value_text(&op.invoke, 60)
            );
            let class = format!("op {}", outcome_name(o));
            Shape::of(op.f()).draw(out, &class, axis.x(s), y, outcome_colour(o), &title)?;
        }
    }
    draw_band_labels(out, &axis, windows)?;
    frame(out)?;
    draw_legend(out, &counts, true, windows)?;
    out.push_str("</svg>\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The throughput plot.

/// About this many time buckets in the rate plot.
const RATE_BUCKETS: f64 = 100.0;

fn draw_rate(out: &mut String, ops: &[Op], windows: &[FaultWindow]) -> fmt::Result {
    let mut axis = TimeAxis::new(ops, windows);
    let bucket_s = nice_step(axis.span_s / RATE_BUCKETS);
    let buckets = ((axis.span_s / bucket_s).ceil() as usize).clamp(1, 1000);
    // The axis ends with the last bucket, so that it is drawn whole.
    axis.span_s = num(buckets as f64 * bucket_s).max(axis.span_s);
    let mut rates = [vec![0.0f64; buckets], vec![0.0; buckets], vec![0.0; buckets]];
    let mut counts = [0usize; 3];
    for op in ops.iter().filter(|op| is_client(op)) {
        let at = match op.outcome {
            Outcome::Info => op.invoke_ns,
            Outcome::Ok | Outcome::Fail => op.complete_ns.unwrap_or(op.invoke_ns),
        };
        let b = ((axis.secs(at) / bucket_s) as usize).min(buckets - 1);
        rates[outcome_index(op.outcome)][b] += 1.0 / bucket_s;
        counts[outcome_index(op.outcome)] += 1;
    }
    let max = rates.iter().flatten().fold(0.0f64, |m, r| m.max(num(*r)));
    let step = nice_step(max.max(1.0) / 5.0);
    let top = (max / step).ceil().max(1.0) * step;
    let y = |r: f64| num(BOTTOM - (r / top).clamp(0.0, 1.0) * (BOTTOM - TOP));

    svg_open(
        out,
        &format!(
            "Client completions per second ({bucket_s:.digits$} s buckets; info counted at invoke)",
            digits = decimals(bucket_s)
        ),
    )?;
    draw_bands(out, &axis, windows)?;
    let digits = decimals(step);
    let mut i = 0u32;
    while f64::from(i) * step <= top * (1.0 + 1e-9) && i <= 50 {
        let r = f64::from(i) * step;
        let yy = y(r);
        write!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{RIGHT}" y2="{yy:.1}" stroke="#e9ecef"/><line x1="{:.1}" y1="{yy:.1}" x2="{LEFT}" y2="{yy:.1}" stroke="#495057"/><text x="{:.1}" y="{:.1}" text-anchor="end">{r:.digits$}</text>"##,
            LEFT - 5.0,
            LEFT - 8.0,
            yy + 4.0
        )?;
        i += 1;
    }
    write!(
        out,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle" font-size="12">completions per second</text>"#,
        (TOP + BOTTOM) / 2.0
    )?;
    axis.draw(out)?;
    for o in OUTCOMES {
        let series = &rates[outcome_index(o)];
        write!(
            out,
            r#"<polyline class="rate {}" fill="none" stroke="{}" stroke-width="1.5" points=""#,
            outcome_name(o),
            outcome_colour(o)
        )?;
        // A step line: flat across each bucket.
        for (b, r) in series.iter().enumerate() {
            let x0 = axis.x(b as f64 * bucket_s);
            let x1 = axis.x((b + 1) as f64 * bucket_s);
            let yy = y(*r);
            write!(out, "{x0:.1},{yy:.1} {x1:.1},{yy:.1} ")?;
        }
        write!(
            out,
            r#""><title>{} per second</title></polyline>"#,
            outcome_name(o)
        )?;
    }
    draw_band_labels(out, &axis, windows)?;
    frame(out)?;
    draw_legend(out, &counts, false, windows)?;
    out.push_str("</svg>\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The HTML page.

const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#212529;max-width:1240px}\
table{border-collapse:collapse;margin:8px 0 20px}\
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f1f3f5}td.n{text-align:right;font-variant-numeric:tabular-nums}\
pre{background:#f8f9fa;padding:10px;white-space:pre-wrap}\
.v{font-weight:bold;color:#fff;padding:2px 8px;border-radius:3px}\
.valid{background:#2f9e44}.invalid{background:#e03131}.unknown{background:#f08c00}\
ul{margin:0;padding-left:18px}svg{max-width:100%;height:auto}";

fn valid_word(v: Valid) -> (&'static str, &'static str) {
    match v {
        Valid::True => ("VALID", "valid"),
        Valid::False => ("INVALID", "invalid"),
        Valid::Unknown => ("UNKNOWN", "unknown"),
    }
}

fn valid_badge(v: Valid) -> String {
    let (word, class) = valid_word(v);
    format!(r#"<span class="v {class}">{word}</span>"#)
}

/// The anomaly kind's wire name (`lost`, `non_linearizable`, ...).
fn kind_name(kind: AnomalyKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn write_html<N>(
    out: &mut String,
    header: &str,
    verdicts: &[(N, Verdict)],
    ops: &[Op],
    windows: &[FaultWindow],
) -> fmt::Result
where
    N: AsRef<str>,
{
    // No checker means no evidence, which is never a pass.
    let overall = if verdicts.is_empty() {
        Valid::Unknown
    } else {
        verdicts.iter().fold(Valid::True, |acc, (_, v)| acc.and(v.valid))
    };
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Taurus Jepsen report: {}</title><style>{CSS}</style></head><body>\n",
        valid_word(overall).0
    )?;
    writeln!(out, "<h1>Taurus Jepsen report {}</h1>", valid_badge(overall))?;
    writeln!(out, "<pre>{}</pre>", escape(header))?;

    // Verdicts.
    out.push_str("<h2>Verdicts</h2>\n<table><tr><th>checker</th><th>verdict</th><th>stats</th><th>anomalies</th><th>notes</th></tr>\n");
    if verdicts.is_empty() {
        out.push_str("<tr><td colspan=\"5\">no checker ran</td></tr>\n");
    }
    for (name, v) in verdicts {
        write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>",
            escape(name.as_ref()),
            valid_badge(v.valid)
        )?;
        let stats: Vec<String> = v
            .stats
            .iter()
            .map(|(k, n)| format!("{}&nbsp;{n}", escape(k)))
            .collect();
        out.push_str(&stats.join("<br>"));
        write!(out, "</td><td>{}", v.anomalies.len())?;
        if !v.anomalies.is_empty() {
            out.push_str("<ul>");
            for a in v.anomalies.iter().take(ANOMALIES_SHOWN) {
                write!(
                    out,
                    "<li><code>{}</code> {}: {}</li>",
                    escape(&kind_name(a.kind)),
                    a.task.as_deref().map_or_else(|| "-".to_string(), escape),
                    escape(&a.detail)
                )?;
            }
            if v.anomalies.len() > ANOMALIES_SHOWN {
                write!(out, "<li>… and {} more</li>", v.anomalies.len() - ANOMALIES_SHOWN)?;
            }
            out.push_str("</ul>");
        }
        out.push_str("</td><td>");
        let notes: Vec<String> = v.notes.iter().map(|n| escape(n)).collect();
        out.push_str(&notes.join("<br>"));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");

    // Ops per f and outcome, with latencies of the ok ones.
    let mut per_f: BTreeMap<&str, ([usize; 3], Vec<f64>)> = BTreeMap::new();
    let mut nemesis: BTreeMap<&str, usize> = BTreeMap::new();
    for op in ops {
        if !is_client(op) {
            *nemesis.entry(op.f()).or_default() += 1;
            continue;
        }
        let entry = per_f.entry(op.f()).or_default();
        entry.0[outcome_index(op.outcome)] += 1;
        if let (Outcome::Ok, Some(ms)) = (op.outcome, latency_ms(op)) {
            entry.1.push(ms);
        }
    }
    out.push_str("<h2>Client operations</h2>\n<table><tr><th>f</th><th>ok</th><th>fail</th><th>info</th><th>total</th><th>ok latency ms: p50</th><th>p95</th><th>p99</th><th>max</th></tr>\n");
    let mut totals = [0usize; 3];
    for (f, (counts, latencies)) in &mut per_f {
        latencies.sort_by(f64::total_cmp);
        write!(out, "<tr><td>{}</td>", escape(f))?;
        for (i, c) in counts.iter().enumerate() {
            totals[i] += c;
            write!(out, r#"<td class="n">{c}</td>"#)?;
        }
        write!(out, r#"<td class="n">{}</td>"#, counts.iter().sum::<usize>())?;
        for q in [0.5, 0.95, 0.99, 1.0] {
            if latencies.is_empty() {
                out.push_str(r#"<td class="n">-</td>"#);
            } else {
                write!(out, r#"<td class="n">{}</td>"#, fmt_ms(quantile(latencies, q)))?;
            }
        }
        out.push_str("</tr>\n");
    }
    write!(
        out,
        r#"<tr><th>all</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th colspan="4"></th></tr></table>"#,
        totals[0],
        totals[1],
        totals[2],
        totals.iter().sum::<usize>()
    )?;
    let nemesis_total: usize = nemesis.values().sum();
    write!(out, "\n<p>Nemesis ops: {nemesis_total}")?;
    if !nemesis.is_empty() {
        let parts: Vec<String> = nemesis
            .iter()
            .map(|(f, n)| format!("{} ×{n}", escape(f)))
            .collect();
        write!(out, " ({})", parts.join(", "))?;
    }
    out.push_str(".</p>\n");

    // Plots.
    out.push_str("<h2>Latency</h2>\n");
    out.push_str(&latency_svg(ops, windows));
    out.push_str("<h2>Throughput</h2>\n");
    out.push_str(&rate_svg(ops, windows));

    // Fault windows.
    let axis = TimeAxis::new(ops, windows);
    out.push_str("<h2>Fault windows</h2>\n");
    if windows.is_empty() {
        out.push_str("<p>No fault windows.</p>\n");
    } else {
        out.push_str("<table><tr><th>fault</th><th>start s</th><th>end s</th><th>duration s</th><th>detail</th></tr>\n");
        for w in windows {
            let (s0, s1) = (axis.secs(w.start_ns), axis.secs(w.end_ns.max(w.start_ns)));
            writeln!(
                out,
                r#"<tr><td>{}</td><td class="n">{s0:.3}</td><td class="n">{s1:.3}</td><td class="n">{:.3}</td><td><code>{}</code></td></tr>"#,
                escape(&w.name),
                s1 - s0,
                escape(&w.detail)
            )?;
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::checker::Anomaly;
    use crate::history::EventType;
    use crate::history::History;
    use crate::testkit::*;

    fn nemesis(f: &str, value: serde_json::Value) -> OpValue {
        OpValue::Other {
            f: f.to_string(),
            value,
        }
    }

    /// Records a nemesis op as the runner does: invoke, then info.
    fn push_nemesis(h: &mut History, f: &str, t: u64) {
        let v = nemesis(f, json!({"nodes": ["m1"]}));
        h.push(NEMESIS_PROCESS, EventType::Invoke, v.clone(), t)
            .push(NEMESIS_PROCESS, EventType::Info, v, t);
    }

    /// Every token that a float could print as is finite.
    fn assert_finite(text: &str) {
        let bad = text
            .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '.'))
            .find(|t| matches!(t.trim_start_matches('-'), "inf" | "NaN"));
        assert_eq!(bad, None, "non-finite number in output");
    }

    fn verdict(valid: Valid, anomalies: Vec<Anomaly>) -> Verdict {
        Verdict {
            valid,
            anomalies,
            stats: [("ops".to_string(), 3)].into_iter().collect(),
            notes: Vec::new(),
        }
    }

    /// A small pseudo-random run (xorshift): client ops over `secs` seconds, slower and
    /// failing more during one partition and one kill, the last left open.
    fn sample_ops(n: usize, secs: u64) -> Vec<Op> {
        let mut h = History::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below.max(1)
        };
        let span = secs * 1_000_000_000;
        let faults = [
            (0.2, "start-partition-leader"),
            (0.45, "stop-partition-leader"),
            (0.7, "start-kill"),
        ];
        let mut events: Vec<(u64, Option<&str>)> = faults
            .iter()
            .map(|(f, name)| ((span as f64 * f) as u64, Some(*name)))
            .collect();
        events.extend((0..n).map(|i| (span * i as u64 / n.max(1) as u64, None)));
        events.sort_by_key(|e| e.0);
        let mut process = 1;
        let mut faulty = false;
        for (t, fault) in events {
            if let Some(f) = fault {
                faulty = f.starts_with("start-");
                push_nemesis(&mut h, f, t);
                continue;
            }
            let id = format!("t{}", rand(1000));
            let (req, resp) = match rand(3) {
                0 => (submit(&[(&id, &[])]), submit_created(&[(&id, true)])),
                1 => (read(&id), read(&id)),
                _ => (cancel(&id), cancel(&id)),
            };
            let base = if faulty { 50_000_000 } else { 2_000_000 };
            let took = base / 4 + rand(base);
            let kind = match rand(if faulty { 6 } else { 40 }) {
                0 => EventType::Info,
                1 => EventType::Fail,
                _ => EventType::Ok,
            };
            h.push(process, EventType::Invoke, req, t)
                .push(process, kind, resp, t + took);
            process += 1;
        }
        h.ops().unwrap()
    }

    #[test]
    fn windows_pair_starts_with_stops_and_heal() {
        let mut h = History::new();
        push_nemesis(&mut h, "start-a", 10);
        push_nemesis(&mut h, "start-b", 20);
        push_nemesis(&mut h, "stop-a", 30);
        push_nemesis(&mut h, "stop-nothing-open", 31);
        push_nemesis(&mut h, "start-a", 40);
        push_nemesis(&mut h, "start-a", 45);
        push_nemesis(&mut h, "stop-a", 50);
        push_nemesis(&mut h, "kill", 55);
        push_nemesis(&mut h, "heal", 60);
        push_nemesis(&mut h, "start-c", 70);
        // A client op named like a fault is not a fault; it sets the end of the history.
        h.push(1, EventType::Invoke, nemesis("start-x", json!(null)), 80)
            .push(1, EventType::Ok, nemesis("start-x", json!(null)), 100);
        let spans: Vec<(String, u64, u64)> = fault_windows(&h.ops().unwrap())
            .into_iter()
            .map(|w| (w.name, w.start_ns, w.end_ns))
            .collect();
        let expected = [
            ("a", 10, 30),
            ("b", 20, 60),
            ("a", 40, 50),
            ("a", 45, 60),
            ("c", 70, 100),
        ];
        let expected: Vec<(String, u64, u64)> =
            expected.iter().map(|(n, s, e)| (n.to_string(), *s, *e)).collect();
        assert_eq!(spans, expected);
    }

    #[test]
    fn window_detail_is_compact_truncated_json() {
        let mut h = History::new();
        let v = nemesis(
            "start-partition-leader",
            json!({"nodes": ["m1"], "pad": "x".repeat(200)}),
        );
        h.push(NEMESIS_PROCESS, EventType::Invoke, v.clone(), 5)
            .push(NEMESIS_PROCESS, EventType::Info, v, 5);
        let w = fault_windows(&h.ops().unwrap());
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].name.as_str(), w[0].start_ns, w[0].end_ns),
            ("partition-leader", 5, 5)
        );
        assert!(
            w[0].detail.starts_with(r#"{"nodes":["m1"],"pad":"xxx"#),
            "{}",
            w[0].detail
        );
        assert_eq!(w[0].detail.chars().count(), DETAIL_CHARS);
        assert!(w[0].detail.ends_with('…'));
    }

    #[test]
    fn data_strings_are_escaped_everywhere() {
        let evil = r#"t<&"1"#;
        let mut run = Run::new();
        run.submit_ok(1, evil, &[], true, 1_000_000, 3_000_000);
        let mut h = run.history.clone();
        let v = nemesis("start-<b>", json!({"node": "<m&1>"}));
        h.push(NEMESIS_PROCESS, EventType::Invoke, v.clone(), 2_000_000)
            .push(NEMESIS_PROCESS, EventType::Info, v, 2_000_000);
        let ops = h.ops().unwrap();
        let windows = fault_windows(&ops);
        let verdicts = vec![(
            "lost<&\">".to_string(),
            verdict(
                Valid::False,
                vec![Anomaly::new(AnomalyKind::Lost, evil, r#"a<b & "c""#)],
            ),
        )];
        let html = render_html("seed <1> & \"x\"", &verdicts, &ops, &windows);
        for raw in [evil, r#"a<b & "c""#, "<1>", "<b>", "<m&1>", "lost<&"] {
            assert!(!html.contains(raw), "unescaped {raw:?}");
        }
        for escaped in [
            "t&lt;&amp;&quot;1",
            "a&lt;b &amp; &quot;c&quot;",
            "seed &lt;1&gt; &amp; &quot;x&quot;",
            "lost&lt;&amp;&quot;&gt;",
            "&lt;m&amp;1&gt;",
        ] {
            assert!(html.contains(escaped), "missing {escaped:?}");
        }
        let svg = latency_svg(&ops, &windows);
        assert!(svg.contains("t&lt;&amp;&quot;1") && !svg.contains(evil));
        assert_eq!(escape("a\u{0}b"), "a\u{fffd}b");
    }

    #[test]
    fn latency_svg_has_a_band_per_window_and_a_mark_per_op() {
        let ops = sample_ops(500, 60);
        let windows = fault_windows(&ops);
        assert_eq!(windows.len(), 2);
        let svg = latency_svg(&ops, &windows);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("</svg>").count(), 1);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"<rect class="fault""#).count(), windows.len());
        let client = ops.iter().filter(|op| is_client(op)).count();
        assert_eq!(client, 500);
        assert_eq!(svg.matches(r#"class="op "#).count(), client);
        for o in OUTCOMES {
            let n = ops.iter().filter(|op| is_client(op) && op.outcome == o).count();
            assert!(n > 0, "sample has no {o:?} op");
            assert_eq!(
                svg.matches(&format!(r#"class="op {}""#, outcome_name(o))).count(),
                n
            );
        }
        assert!(svg.contains("partition-leader") && svg.contains("kill"));
        assert!(!svg.contains("subsampled"));
        assert_finite(&svg);

        let rate = rate_svg(&ops, &windows);
        assert!(rate.starts_with("<svg") && rate.trim_end().ends_with("</svg>"));
        assert_eq!(rate.matches(r#"<rect class="fault""#).count(), windows.len());
        assert_eq!(rate.matches("<polyline").count(), 3);
        assert_finite(&rate);
    }

    #[test]
    fn large_histories_are_subsampled_per_outcome() {
        let ops = sample_ops(MAX_PLOTTED_OPS + 5_000, 100);
        let svg = latency_svg(&ops, &fault_windows(&ops));
        let marks = svg.matches(r#"class="op "#).count();
        assert!(marks <= MAX_PLOTTED_OPS && marks > MAX_PLOTTED_OPS / 2, "{marks}");
        assert!(svg.contains("subsampled: 1 op in 2 of each outcome"));
        // Every outcome is still drawn.
        for o in OUTCOMES {
            assert!(svg.contains(&format!(r#"class="op {}""#, outcome_name(o))));
        }
    }

    #[test]
    fn html_names_every_checker_and_its_verdict() {
        let ops = sample_ops(50, 5);
        // Names as `check_all` gives them (`&str`); the other tests use `String`s.
        let verdicts = vec![
            ("lost", verdict(Valid::True, Vec::new())),
            (
                "overlap",
                verdict(
                    Valid::False,
                    (0..25)
                        .map(|i| Anomaly::new(AnomalyKind::OverlappingExecutions, &format!("t{i}"), "x"))
                        .collect(),
                ),
            ),
            ("linearizable", verdict(Valid::Unknown, Vec::new())),
        ];
        let html = render_html("seed 7", &verdicts, &ops, &fault_windows(&ops));
        for (name, word) in [
            ("lost", "VALID"),
            ("overlap", "INVALID"),
            ("linearizable", "UNKNOWN"),
        ] {
            assert!(html.contains(&format!(
                "<td>{name}</td><td><span class=\"v {}\">{word}</span>",
                word.to_lowercase()
            )));
        }
        assert!(html.contains("<title>Taurus Jepsen report: INVALID</title>"));
        assert_eq!(
            html.matches("<code>overlapping_executions</code>").count(),
            ANOMALIES_SHOWN
        );
        assert!(html.contains("… and 5 more"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("<td>partition-leader</td>"));
        assert_finite(&html);
    }

    #[test]
    fn degenerate_inputs_do_not_panic_or_print_non_finite_numbers() {
        let none: &[(&str, Verdict)] = &[];
        // Empty.
        for text in [
            latency_svg(&[], &[]),
            rate_svg(&[], &[]),
            render_html("", none, &[], &[]),
        ] {
            assert_finite(&text);
        }
        assert!(render_html("", none, &[], &[]).contains("UNKNOWN"));
        // One instant, zero latency, a fault opened and healed at that instant.
        let mut h = History::new();
        push_nemesis(&mut h, "start-pause", 0);
        h.push(1, EventType::Invoke, read("a"), 0)
            .push(1, EventType::Ok, read("a"), 0);
        push_nemesis(&mut h, "heal", 0);
        let ops = h.ops().unwrap();
        let windows = fault_windows(&ops);
        assert_eq!(windows.len(), 1);
        assert_finite(&render_html("x", none, &ops, &windows));
        // Hand-made odd ops: completion before invoke, the ends of the clock, windows out of order.
        let odd = |invoke_ns, complete_ns, outcome| Op {
            process: 1,
            outcome,
            invoke: read("a"),
            completion: None,
            invoke_ns,
            complete_ns,
            line: 1,
        };
        let ops = vec![
            odd(u64::MAX, Some(1), Outcome::Ok),
            odd(0, Some(u64::MAX), Outcome::Fail),
            odd(5, None, Outcome::Ok),
        ];
        let windows = vec![FaultWindow {
            name: String::new(),
            start_ns: u64::MAX,
            end_ns: 0,
            detail: String::new(),
        }];
        for text in [
            latency_svg(&ops, &windows),
            rate_svg(&ops, &windows),
            render_html("", none, &ops, &windows),
        ] {
            assert_finite(&text);
        }
    }

    #[test]
    fn write_report_writes_the_three_files() {
        // TAURUS_REPORT_SAMPLE_DIR keeps the sample somewhere to look at it.
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::env::var_os("TAURUS_REPORT_SAMPLE_DIR")
            .map_or_else(|| tmp.path().join("report"), std::path::PathBuf::from);
        let ops = sample_ops(3_000, 60);
        let verdicts = vec![
            ("lost".to_string(), verdict(Valid::True, Vec::new())),
            (
                "linearizable".to_string(),
                verdict(
                    Valid::False,
                    vec![Anomaly::new(
                        AnomalyKind::NonLinearizable,
                        "t7",
                        "read pending after succeeded",
                    )],
                ),
            ),
        ];
        write_report(
            &dir,
            "seed 1 time-limit 60s nemesis partition-leader,kill",
            &verdicts,
            &ops,
        )
        .unwrap();
        for file in ["report.html", "latency.svg", "rate.svg"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(text.contains("</svg>"), "{file}");
        }
    }
}
