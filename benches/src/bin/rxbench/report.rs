//! Paired-round summaries, the table, JSON and the SVG chart.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::stats::{self, Summary, Verdict};
use crate::{Args, Contender, Sample, Scenario};

/// The confidence of the intervals.
const CONFIDENCE: f64 = 0.95;

/// One measurement of one round.
#[derive(Debug, Serialize)]
pub struct RoundSample {
    /// 0-based, warm-up rounds first.
    pub round: usize,
    pub warmup: bool,
    pub sample: Option<Sample>,
    pub error: Option<String>,
}

/// A contender's figure relative to the baseline's in the same round.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// Per counted round where both succeeded, in round order (`None`: one of them failed).
    pub per_round: Vec<Option<f64>>,
    #[serde(flatten)]
    pub summary: Summary,
    pub verdict: Verdict,
}

/// One contender in one scenario.
#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub contender: Contender,
    pub name: &'static str,
    /// Medians over the counted rounds that succeeded (None if every one failed).
    pub median: Option<Sample>,
    /// The headline figure: median and its interval over the counted rounds, and the range.
    pub headline: Option<Summary>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Every measurement, warm-up first.
    pub rounds: Vec<RoundSample>,
    /// Errors of the counted rounds.
    pub errors: Vec<String>,
    /// The headline figure over the baseline's, per round (None for the baseline itself, or
    /// without one).
    pub ratio: Option<Ratio>,
    /// CPU-s/GB over the baseline's (the flow scenarios).
    pub cpu_ratio: Option<Ratio>,
}

/// The scenario's headline figure of one sample: GB/s, requests/s, or RSS growth in MiB.
pub fn value(scenario: Scenario, m: &Sample) -> f64 {
    match scenario {
        Scenario::OneFlow | Scenario::ManyFlows => m.gbps,
        Scenario::PingPong => m.rps,
        Scenario::Idle => m.rss_delta_kib as f64 / 1024.0,
    }
}

/// One measurement in a few words, for the plain progress log.
pub fn describe(scenario: Scenario, m: &Sample) -> String {
    match scenario {
        Scenario::OneFlow | Scenario::ManyFlows => {
            format!("{:.2} GB/s, {:.3} CPU-s/GB", m.gbps, m.cpu_s_per_gb)
        }
        Scenario::PingPong => format!("{:.0} requests/s", m.rps),
        Scenario::Idle => format!("RSS growth {:.1} MiB", m.rss_delta_kib as f64 / 1024.0),
    }
}

impl Row {
    pub fn new(
        scenario: Scenario,
        contender: Contender,
        samples: Vec<Result<Sample, String>>,
        warmup: usize,
    ) -> Self {
        let rounds: Vec<RoundSample> = samples
            .into_iter()
            .enumerate()
            .map(|(round, r)| {
                let (sample, error) = match r {
                    Ok(s) => (Some(s), None),
                    Err(e) => (None, Some(e)),
                };
                RoundSample {
                    round,
                    warmup: round < warmup,
                    sample,
                    error,
                }
            })
            .collect();
        let counted: Vec<&Sample> = rounds
            .iter()
            .filter(|r| !r.warmup)
            .filter_map(|r| r.sample.as_ref())
            .collect();
        let errors = rounds
            .iter()
            .filter(|r| !r.warmup)
            .filter_map(|r| r.error.clone())
            .collect();
        let median = (!counted.is_empty()).then(|| {
            let m = |f: fn(&Sample) -> f64| {
                stats::median(&counted.iter().map(|s| f(s)).collect::<Vec<_>>()).unwrap_or(0.0)
            };
            Sample {
                bytes: m(|s| s.bytes as f64) as u64,
                wall_s: m(|s| s.wall_s),
                cpu_s: m(|s| s.cpu_s),
                gbps: m(|s| s.gbps),
                cpu_s_per_gb: m(|s| s.cpu_s_per_gb),
                rps: m(|s| s.rps),
                rss_kib: m(|s| s.rss_kib as f64) as u64,
                rss_delta_kib: m(|s| s.rss_delta_kib as f64) as u64,
                rx_buffer_bytes: m(|s| s.rx_buffer_bytes as f64) as u64,
            }
        });
        let values: Vec<f64> = counted.iter().map(|s| value(scenario, s)).collect();
        Self {
            scenario,
            contender,
            name: contender.name(),
            median,
            headline: Summary::of(&values, CONFIDENCE),
            min: values.iter().copied().reduce(f64::min),
            max: values.iter().copied().reduce(f64::max),
            rounds,
            errors,
            ratio: None,
            cpu_ratio: None,
        }
    }

    /// Per counted round, `f` of this row's sample over `f` of the baseline's.
    fn ratio_to(&self, base: &Row, f: impl Fn(&Sample) -> f64) -> Option<Ratio> {
        let per_round: Vec<Option<f64>> = self
            .rounds
            .iter()
            .zip(&base.rounds)
            .filter(|(r, _)| !r.warmup)
            .map(|(r, b)| {
                let (r, b) = (r.sample.as_ref()?, b.sample.as_ref()?);
                let (r, b) = (f(r), f(b));
                (b > 0.0 && r.is_finite()).then(|| r / b)
            })
            .collect();
        let ok: Vec<f64> = per_round.iter().flatten().copied().collect();
        let summary = Summary::of(&ok, CONFIDENCE)?;
        Some(Ratio {
            verdict: summary.verdict(),
            summary,
            per_round,
        })
    }
}

/// Fills in every row's ratios to the `baseline` contender's row of the same scenario (rows
/// of one scenario, rounds aligned).
pub fn with_ratios(mut rows: Vec<Row>, baseline: Contender) -> Vec<Row> {
    let Some(b) = rows.iter().position(|r| r.contender == baseline) else {
        return rows;
    };
    let base = rows.remove(b);
    for r in &mut rows {
        let scenario = r.scenario;
        r.ratio = r.ratio_to(&base, |s| value(scenario, s));
        if matches!(scenario, Scenario::OneFlow | Scenario::ManyFlows) {
            r.cpu_ratio = r.ratio_to(&base, |s| s.cpu_s_per_gb);
        }
    }
    rows.insert(b, base);
    rows
}

fn unit(s: Scenario) -> &'static str {
    match s {
        Scenario::OneFlow | Scenario::ManyFlows => "GB/s",
        Scenario::PingPong => "requests/s",
        Scenario::Idle => "RSS growth, MiB",
    }
}

/// `1.61x [1.42, 1.75]`, with `level` when the interval holds 1.0.
fn ratio_cell(r: &Row, ratio: &Option<Ratio>, baseline: Contender) -> String {
    if r.contender == baseline {
        return "baseline".into();
    }
    match ratio {
        None => "-".into(),
        Some(q) => {
            let s = &q.summary;
            // Too few rounds for 95%: the interval is the range; say what it covers.
            let cover = if s.coverage < CONFIDENCE {
                format!("; {:.0}%", s.coverage * 100.0)
            } else {
                String::new()
            };
            format!(
                "{:.2}x [{:.2}, {:.2}{cover}]{}",
                s.median,
                s.lo,
                s.hi,
                if q.verdict == Verdict::Level {
                    " level"
                } else {
                    ""
                }
            )
        }
    }
}

/// A median with the range of the counted rounds.
fn with_range(median: f64, values: impl Iterator<Item = f64>, digits: usize) -> String {
    let v: Vec<f64> = values.collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() < 2 {
        return format!("{median:.digits$}");
    }
    format!("{median:.digits$} ({lo:.digits$}-{hi:.digits$})")
}

fn counted(r: &Row) -> impl Iterator<Item = &Sample> {
    r.rounds
        .iter()
        .filter(|x| !x.warmup)
        .filter_map(|x| x.sample.as_ref())
}

pub fn print_and_save(args: &Args, rows: &[Row]) -> Result<()> {
    let baseline = Contender::TokioCt;
    let has_base = args.contenders.contains(&baseline);
    let mut out = String::new();
    for &scenario in &args.scenarios {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        let (warmup, n_rounds) = args.rounds_of(scenario);
        let each = match scenario {
            Scenario::Idle => format!("{} connections", args.idle),
            _ => format!("{} s", args.seconds),
        };
        let _ = writeln!(
            out,
            "\n## {scenario:?}: {n_rounds} paired round(s) x {each} after {warmup} warm-up; medians (min-max){}\n",
            if has_base {
                "; ratios: median of the per-round ratios to tokio current_thread [95% interval], \
                 level where the interval holds 1.0"
            } else {
                ""
            }
        );
        let failed = |r: &Row| format!("failed: {}", r.errors.first().map_or("", |e| e));
        match scenario {
            Scenario::OneFlow | Scenario::ManyFlows => {
                let _ = writeln!(
                    out,
                    "| contender | GB/s | CPU-s/GB | GB/s vs tokio ct | CPU-s/GB vs tokio ct |"
                );
                let _ = writeln!(out, "|---|---:|---:|---:|---:|");
                for r in &rows {
                    let Some(m) = &r.median else {
                        let _ = writeln!(out, "| {} | {} | | | |", r.name, failed(r));
                        continue;
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} |",
                        r.name,
                        with_range(m.gbps, counted(r).map(|s| s.gbps), 2),
                        with_range(m.cpu_s_per_gb, counted(r).map(|s| s.cpu_s_per_gb), 3),
                        ratio_cell(r, &r.ratio, baseline),
                        ratio_cell(r, &r.cpu_ratio, baseline),
                    );
                }
            }
            Scenario::PingPong => {
                let _ = writeln!(
                    out,
                    "| contender | requests/s | CPU-s per 1M requests | vs tokio ct |"
                );
                let _ = writeln!(out, "|---|---:|---:|---:|");
                for r in &rows {
                    let Some(m) = &r.median else {
                        let _ = writeln!(out, "| {} | {} | | |", r.name, failed(r));
                        continue;
                    };
                    let per_m = if m.rps > 0.0 {
                        m.cpu_s / (m.rps * m.wall_s) * 1e6
                    } else {
                        0.0
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {:.2} | {} |",
                        r.name,
                        with_range(m.rps, counted(r).map(|s| s.rps), 0),
                        per_m,
                        ratio_cell(r, &r.ratio, baseline)
                    );
                }
            }
            Scenario::Idle => {
                let _ = writeln!(
                    out,
                    "| contender | receive buffers held | RSS | RSS growth (MiB) | growth vs tokio ct |"
                );
                let _ = writeln!(out, "|---|---:|---:|---:|---:|");
                for r in &rows {
                    let Some(m) = &r.median else {
                        let _ = writeln!(out, "| {} | {} | | | |", r.name, failed(r));
                        continue;
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {:.1} MiB | {:.1} MiB | {} | {} |",
                        r.name,
                        m.rx_buffer_bytes as f64 / 1048576.0,
                        m.rss_kib as f64 / 1024.0,
                        with_range(
                            m.rss_delta_kib as f64 / 1024.0,
                            counted(r).map(|s| s.rss_delta_kib as f64 / 1024.0),
                            1
                        ),
                        ratio_cell(r, &r.ratio, baseline)
                    );
                }
            }
        }
        for r in rows
            .iter()
            .filter(|r| !r.errors.is_empty() && r.median.is_some())
        {
            let _ = writeln!(
                out,
                "\n{}: {} of {} rounds failed: {}",
                r.name,
                r.errors.len(),
                n_rounds,
                r.errors[0]
            );
        }
    }
    print!("{out}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::json!({
        "machine": machine(),
        "method": {
            "rounds": args.rounds, "idle_rounds": args.idle_rounds, "warmup": args.warmup,
            "baseline": baseline,
            "confidence": CONFIDENCE,
            "interval": "order-statistic interval of the median of the per-round ratios",
        },
        "args": {
            "scenarios": args.scenarios, "contenders": args.contenders, "rounds": args.rounds,
            "warmup": args.warmup, "seconds": args.seconds, "flows": args.flows,
            "conns": args.conns, "msg": args.msg, "idle": args.idle,
            "settle_ms": args.settle_ms, "receiver_cpu": args.receiver_cpu,
            "sender_cpu": args.sender_cpu,
        },
        "results": rows,
    });
    let jp = args.out.join("results.json");
    std::fs::write(&jp, serde_json::to_string_pretty(&json)?)?;
    let sp = args.out.join("results.svg");
    std::fs::write(&sp, svg(args, rows, has_base.then_some(baseline))?)?;
    std::fs::write(args.out.join("results.md"), &out)?;
    eprintln!("\nwrote {}, {} and results.md", jp.display(), sp.display());
    Ok(())
}

fn machine() -> serde_json::Value {
    let uname = rustix::system::uname();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    // The machine's CPUs, not this process's: by now it is pinned to the sender's CPU.
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    serde_json::json!({
        "kernel": uname.release().to_string_lossy(),
        "cpu": cpu,
        "cpus": cpus,
    })
}

/// A bar chart drawn with plotters, one panel per scenario, one bar per contender. With a
/// baseline, a bar is the median of the per-round ratios to it, its whisker the 95% interval,
/// and a line marks 1.0; without one, a bar is the median figure, its whisker the interval of
/// the median.
fn svg(args: &Args, rows: &[Row], baseline: Option<Contender>) -> Result<String> {
    const BAR: u32 = 24;
    const HEAD: u32 = 40;
    const PANEL_PAD: u32 = 50;
    let panels: Vec<(Scenario, Vec<&Row>)> = args
        .scenarios
        .iter()
        .map(|&sc| (sc, rows.iter().filter(|r| r.scenario == sc).collect()))
        .collect();
    let heights: Vec<u32> = panels
        .iter()
        .map(|(_, rows)| rows.len() as u32 * BAR + PANEL_PAD)
        .collect();
    let (width, height) = (760u32, HEAD + heights.iter().sum::<u32>());
    // (median, interval) per row: the ratio to the baseline, or the figure itself.
    let bar = |r: &Row| -> Option<(f64, f64, f64)> {
        match baseline {
            Some(b) if r.contender == b => Some((1.0, 1.0, 1.0)),
            Some(_) => r
                .ratio
                .as_ref()
                .map(|q| (q.summary.median, q.summary.lo, q.summary.hi)),
            None => r.headline.as_ref().map(|h| (h.median, h.lo, h.hi)),
        }
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        let draw_err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing the chart: {e}");
        root.fill(&WHITE).map_err(draw_err)?;
        let title = match baseline {
            Some(_) => format!(
                "rxbench: median of {} paired rounds' ratios to tokio current_thread, 95% intervals",
                args.rounds
            ),
            None => format!(
                "rxbench: medians of {} rounds x {} s, 95% intervals",
                args.rounds, args.seconds
            ),
        };
        root.titled(&title, ("sans-serif", 15)).map_err(draw_err)?;
        let (_, mut rest) = root.split_vertically(HEAD);
        for ((scenario, rows), h) in panels.iter().zip(&heights) {
            let (panel, below) = rest.split_vertically(*h);
            rest = below;
            let hi = rows
                .iter()
                .filter_map(|r| bar(r))
                .map(|(m, _, up)| m.max(up))
                .fold(if baseline.is_some() { 1.0 } else { 0.0 }, f64::max)
                .max(1e-9);
            let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
            let caption = match baseline {
                Some(_) => format!("{scenario:?}: {} vs tokio current_thread", unit(*scenario)),
                None => format!("{scenario:?} ({})", unit(*scenario)),
            };
            let mut chart = ChartBuilder::on(&panel)
                .caption(
                    caption,
                    ("sans-serif", 14).into_font().style(FontStyle::Bold),
                )
                .margin_right(90)
                .x_label_area_size(20)
                .y_label_area_size(190)
                .build_cartesian_2d(0.0..hi * 1.05, (0..names.len()).into_segmented())
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_labels(6)
                .y_labels(names.len().max(1))
                .y_label_formatter(&|y| match y {
                    // Row 0 at the top: segments count from the bottom.
                    SegmentValue::CenterOf(p) if *p < names.len() => {
                        names[names.len() - 1 - p].to_string()
                    }
                    _ => String::new(),
                })
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(draw_err)?;
            if baseline.is_some() {
                chart
                    .draw_series([PathElement::new(
                        [
                            (1.0, SegmentValue::Exact(0)),
                            (1.0, SegmentValue::Exact(names.len())),
                        ],
                        BLACK.stroke_width(1),
                    )])
                    .map_err(draw_err)?;
            }
            for (row, r) in rows.iter().enumerate() {
                let i = rows.len() - 1 - row;
                let ours = matches!(
                    r.contender,
                    Contender::Ours | Contender::OursInc | Contender::OursAllPosted
                );
                let color = if ours {
                    RGBColor(0xd9, 0x5f, 0x02)
                } else {
                    RGBColor(0x75, 0x70, 0xb3)
                };
                let (top, bottom) = (SegmentValue::Exact(i), SegmentValue::Exact(i + 1));
                let Some((v, lo, up)) = bar(r) else {
                    chart
                        .draw_series([Text::new(
                            "failed",
                            (0.0, SegmentValue::CenterOf(i)),
                            ("sans-serif", 12),
                        )])
                        .map_err(draw_err)?;
                    continue;
                };
                let mut rect = Rectangle::new([(0.0, top), (v, bottom)], color.filled());
                rect.set_margin(4, 4, 0, 0);
                chart.draw_series([rect]).map_err(draw_err)?;
                if up > lo {
                    chart
                        .draw_series([ErrorBar::new_horizontal(
                            SegmentValue::CenterOf(i),
                            lo,
                            v,
                            up,
                            BLACK.stroke_width(1),
                            8,
                        )])
                        .map_err(draw_err)?;
                }
                let txt = match baseline {
                    Some(b) if r.contender == b => "baseline".to_string(),
                    Some(_) => format!("{v:.2}x [{lo:.2}, {up:.2}]"),
                    None if v >= 1000.0 => format!("{v:.0}"),
                    None => format!("{v:.2}"),
                };
                chart
                    .draw_series([Text::new(
                        txt,
                        (up.max(v) + hi * 0.01, SegmentValue::CenterOf(i)),
                        TextStyle::from(("sans-serif", 12).into_font())
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )])
                    .map_err(draw_err)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}
