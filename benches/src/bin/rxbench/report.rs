//! Medians, the table, JSON and the SVG chart.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::{Args, Contender, Sample, Scenario};

#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub contender: Contender,
    pub name: &'static str,
    /// Median over successful runs (None if every run failed).
    pub median: Option<Sample>,
    pub runs: Vec<Sample>,
    pub errors: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Row {
    pub fn new(
        scenario: Scenario,
        contender: Contender,
        samples: Vec<Result<Sample, String>>,
    ) -> Self {
        let (runs, errors): (Vec<_>, Vec<_>) = samples.into_iter().partition(|r| r.is_ok());
        let runs: Vec<Sample> = runs.into_iter().map(Result::unwrap).collect();
        let errors: Vec<String> = errors.into_iter().map(|e| e.unwrap_err()).collect();
        let median = (!runs.is_empty()).then(|| {
            let m = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
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
        Self {
            scenario,
            contender,
            name: contender.name(),
            median,
            runs,
            errors,
        }
    }

    /// The scenario's headline figure.
    fn headline(&self) -> Option<f64> {
        let m = self.median.as_ref()?;
        Some(match self.scenario {
            Scenario::OneFlow | Scenario::ManyFlows => m.gbps,
            Scenario::PingPong => m.rps,
            Scenario::Idle => m.rss_delta_kib as f64 / 1024.0,
        })
    }
}

fn unit(s: Scenario) -> &'static str {
    match s {
        Scenario::OneFlow | Scenario::ManyFlows => "GB/s",
        Scenario::PingPong => "requests/s",
        Scenario::Idle => "RSS growth, MiB",
    }
}

pub fn print_and_save(args: &Args, rows: &[Row]) -> Result<()> {
    let mut out = String::new();
    for &scenario in &args.scenarios {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        let base = rows
            .iter()
            .find(|r| r.contender == Contender::TokioCt)
            .and_then(|r| r.median.clone());
        let _ = writeln!(
            out,
            "\n## {scenario:?} ({} runs x {} s, medians)\n",
            args.runs, args.seconds
        );
        match scenario {
            Scenario::OneFlow | Scenario::ManyFlows => {
                let _ = writeln!(
                    out,
                    "| contender | GB/s | CPU-s/GB | GB/s vs tokio ct | CPU-s/GB vs tokio ct |"
                );
                let _ = writeln!(out, "|---|---:|---:|---:|---:|");
                for r in &rows {
                    match &r.median {
                        Some(m) => {
                            let ratio = |a: f64, b: Option<f64>| {
                                b.filter(|b| *b > 0.0)
                                    .map_or("-".into(), |b| format!("{:.2}x", a / b))
                            };
                            let _ = writeln!(
                                out,
                                "| {} | {:.2} | {:.3} | {} | {} |",
                                r.name,
                                m.gbps,
                                m.cpu_s_per_gb,
                                ratio(m.gbps, base.as_ref().map(|b| b.gbps)),
                                ratio(m.cpu_s_per_gb, base.as_ref().map(|b| b.cpu_s_per_gb)),
                            );
                        }
                        None => {
                            let _ = writeln!(
                                out,
                                "| {} | failed: {} | | | |",
                                r.name,
                                r.errors.first().map_or("", |e| e)
                            );
                        }
                    }
                }
            }
            Scenario::PingPong => {
                let _ = writeln!(
                    out,
                    "| contender | requests/s | CPU-s per 1M requests | vs tokio ct |"
                );
                let _ = writeln!(out, "|---|---:|---:|---:|");
                for r in &rows {
                    match &r.median {
                        Some(m) => {
                            let per_m = if m.rps > 0.0 {
                                m.cpu_s / (m.rps * m.wall_s) * 1e6
                            } else {
                                0.0
                            };
                            let ratio = base
                                .as_ref()
                                .filter(|b| b.rps > 0.0)
                                .map_or("-".into(), |b| format!("{:.2}x", m.rps / b.rps));
                            let _ = writeln!(
                                out,
                                "| {} | {:.0} | {:.2} | {} |",
                                r.name, m.rps, per_m, ratio
                            );
                        }
                        None => {
                            let _ = writeln!(
                                out,
                                "| {} | failed: {} | | |",
                                r.name,
                                r.errors.first().map_or("", |e| e)
                            );
                        }
                    }
                }
            }
            Scenario::Idle => {
                let _ = writeln!(
                    out,
                    "| contender | receive buffers held | RSS | RSS growth |"
                );
                let _ = writeln!(out, "|---|---:|---:|---:|");
                for r in &rows {
                    match &r.median {
                        Some(m) => {
                            let _ = writeln!(
                                out,
                                "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
                                r.name,
                                m.rx_buffer_bytes as f64 / 1048576.0,
                                m.rss_kib as f64 / 1024.0,
                                m.rss_delta_kib as f64 / 1024.0
                            );
                        }
                        None => {
                            let _ = writeln!(
                                out,
                                "| {} | failed: {} | | |",
                                r.name,
                                r.errors.first().map_or("", |e| e)
                            );
                        }
                    }
                }
            }
        }
        for r in rows
            .iter()
            .filter(|r| !r.errors.is_empty() && r.median.is_some())
        {
            let _ = writeln!(
                out,
                "\n{}: {} of {} runs failed: {}",
                r.name,
                r.errors.len(),
                args.runs,
                r.errors[0]
            );
        }
    }
    print!("{out}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::json!({
        "machine": machine(),
        "args": {
            "scenarios": args.scenarios, "contenders": args.contenders, "runs": args.runs,
            "seconds": args.seconds, "flows": args.flows, "conns": args.conns, "msg": args.msg,
            "idle": args.idle, "receiver_cpu": args.receiver_cpu, "sender_cpu": args.sender_cpu,
        },
        "results": rows,
    });
    let jp = args.out.join("results.json");
    std::fs::write(&jp, serde_json::to_string_pretty(&json)?)?;
    let sp = args.out.join("results.svg");
    std::fs::write(&sp, svg(args, rows)?)?;
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

/// The headline figure of one sample (see [`Row::headline`]).
fn value(scenario: Scenario, m: &Sample) -> f64 {
    match scenario {
        Scenario::OneFlow | Scenario::ManyFlows => m.gbps,
        Scenario::PingPong => m.rps,
        Scenario::Idle => m.rss_delta_kib as f64 / 1024.0,
    }
}

/// A bar chart drawn with plotters: one panel per scenario, one bar per contender (the median)
/// with a whisker from the lowest to the highest run.
fn svg(args: &Args, rows: &[Row]) -> Result<String> {
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
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        let draw_err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing the chart: {e}");
        root.fill(&WHITE).map_err(draw_err)?;
        let title = format!(
            "rxbench: medians of {} runs x {} s (whiskers: lowest to highest run), loopback",
            args.runs, args.seconds
        );
        root.titled(&title, ("sans-serif", 15)).map_err(draw_err)?;
        let (_, mut rest) = root.split_vertically(HEAD);
        for ((scenario, rows), h) in panels.iter().zip(&heights) {
            let (panel, below) = rest.split_vertically(*h);
            rest = below;
            let hi = rows
                .iter()
                .flat_map(|r| r.runs.iter().map(|m| value(*scenario, m)))
                .fold(0.0, f64::max)
                .max(1e-9);
            let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
            let mut chart = ChartBuilder::on(&panel)
                .caption(
                    format!("{scenario:?} ({})", unit(*scenario)),
                    ("sans-serif", 14).into_font().style(FontStyle::Bold),
                )
                .margin_right(70)
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
                let Some(v) = r.headline() else {
                    chart
                        .draw_series([Text::new(
                            "failed",
                            (0.0, SegmentValue::CenterOf(i)),
                            ("sans-serif", 12),
                        )])
                        .map_err(draw_err)?;
                    continue;
                };
                let mut bar = Rectangle::new([(0.0, top), (v, bottom)], color.filled());
                bar.set_margin(4, 4, 0, 0);
                chart.draw_series([bar]).map_err(draw_err)?;
                let runs: Vec<f64> = r.runs.iter().map(|m| value(*scenario, m)).collect();
                let (lo, up) = runs.iter().fold((v, v), |(a, b), &x| (a.min(x), b.max(x)));
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
                let txt = if v >= 1000.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                };
                chart
                    .draw_series([Text::new(
                        txt,
                        (up + hi * 0.01, SegmentValue::CenterOf(i)),
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
