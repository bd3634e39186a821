//! rxbench: receive throughput of this runtime side by side with what our users would pick
//! instead, on loopback, with the same sender for every contender.
//!
//! ```sh
//! cargo run --release -p benches --bin rxbench              # one flow, 4 contenders, ~1 minute
//! cargo run --release -p benches --bin rxbench -- --all     # every scenario and contender
//! ```
//!
//! Each measurement runs the receiver in a child process pinned to one CPU and the sender in
//! this process pinned to another. Measurements come in paired rounds: a round runs every
//! contender once, back to back, in an order that rotates (and reverses every other round), and
//! each contender's ratio to the baseline (tokio current_thread) is taken within the round. The
//! report gives the median of those per-round ratios with a 95% interval (see `stats`), and the
//! medians (min-max) of the raw figures; the first round of each scenario is a warm-up and is
//! not counted. Output: a table on stdout, and results.{md,json,svg} under `--out`.
//!
//! Diagnosis: with `RXBENCH_STATS=PATH` in the environment, the `ours` receivers write the
//! runtime's driver counters (enters, completions, re-arms, ENOBUFS) to PATH twice a second;
//! `RXBENCH_MAX_POSTED=N` fixes their ring depth (`Builder::max_posted`) and
//! `RXBENCH_COALESCE=MICROS,COMPLETIONS` sets their completion coalescing
//! (`Builder::coalesce`), for experiments.
// A binary: its modules' `pub` items are for each other, not an API to document (the rest of
// the workspace lints apply).
#![allow(missing_docs, unreachable_pub)]

mod child;
mod contenders;
mod report;
mod sender;
mod stats;

use std::io::{BufRead, BufReader, IsTerminal};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One TCP flow, bulk receive (GB/s, receiver CPU-s/GB).
    OneFlow,
    /// Many flows (--flows) into one receiver thread.
    ManyFlows,
    /// --conns connections each bouncing --msg-byte messages (requests/s).
    PingPong,
    /// --idle idle connections with a receive armed (memory held for receive buffers, RSS).
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// This runtime, buffer-ring backend (adaptive ring depth, the default).
    Ours,
    /// This runtime, buffer ring with incremental consumption.
    OursInc,
    /// This runtime, buffer ring with every chunk posted (`Builder::adaptive_depth(false)`).
    OursAllPosted,
    /// A hand-written io_uring loop (multishot receive, shared buffer ring).
    UringLoop,
    /// tokio, current_thread runtime.
    TokioCt,
    /// tokio, multi-thread runtime.
    TokioMt,
    /// tokio-uring.
    TokioUring,
    /// monoio (io_uring driver).
    Monoio,
    /// std, a thread per connection with blocking reads.
    Std,
    /// Not a receiver but a reference: one thread that never sleeps and discards the bytes
    /// without copying them (`recv` with `MSG_TRUNC`): what the sender reaches when receiving
    /// costs almost nothing.
    Discard,
}

impl Contender {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours (buffer ring)",
            Self::OursInc => "ours (incremental)",
            Self::OursAllPosted => "ours (all posted)",
            Self::UringLoop => "hand-written io_uring",
            Self::TokioCt => "tokio current_thread",
            Self::TokioMt => "tokio multi-thread",
            Self::TokioUring => "tokio-uring",
            Self::Monoio => "monoio",
            Self::Std => "std threads",
            Self::Discard => "discard (sender's ceiling)",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    about = "Side-by-side receive throughput on loopback: this runtime versus tokio, tokio-uring, monoio, std and a hand-written io_uring loop"
)]
pub struct Args {
    /// Scenarios to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "one-flow")]
    scenarios: Vec<Scenario>,
    /// Contenders (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ours,uring-loop,tokio-ct,std"
    )]
    contenders: Vec<Contender>,
    /// Every scenario and every contender (about 12 minutes).
    #[arg(long)]
    all: bool,
    /// Counted rounds per scenario; each round runs every contender once (the ratios to the
    /// baseline are taken within rounds). 9 or more give a 95% interval narrower than the range.
    #[arg(long, visible_alias = "runs", default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// Rounds of the idle scenario (no warm-up): RSS is not timing noise, and one round of
    /// 10,000 connections per contender takes 5-20 s.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    idle_rounds: u32,
    /// Warm-up rounds per scenario, run first and not counted.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100))]
    warmup: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Flows in the many-flows scenario.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=4096))]
    flows: u32,
    /// Connections in the ping-pong scenario.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=4096))]
    conns: u32,
    /// Message size in the ping-pong scenario (bytes).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1048576))]
    msg: u32,
    /// Connections in the idle scenario.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    idle: u32,
    /// Pause before each measurement, in milliseconds, for the previous receiver's teardown.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    settle_ms: u32,
    /// CPU the receiver is pinned to.
    #[arg(long, default_value_t = 0)]
    receiver_cpu: usize,
    /// CPU the sender is pinned to.
    #[arg(long, default_value_t = 1)]
    sender_cpu: usize,
    /// Exit with an error if any measurement failed (they are reported in the table either
    /// way); for CI.
    #[arg(long)]
    fail_on_error: bool,
    /// Directory for results.json and results.svg.
    #[arg(long, default_value = "target/rxbench")]
    out: std::path::PathBuf,
    /// Internal: serve as the receiver child.
    #[arg(long, hide = true)]
    serve: Option<Contender>,
    /// Internal: the child's scenario.
    #[arg(long, hide = true)]
    serve_scenario: Option<Scenario>,
    /// Internal: connections the child expects.
    #[arg(long, hide = true, default_value_t = 1)]
    expected: usize,
}

impl Args {
    /// Warm-up and counted rounds of `scenario`.
    pub fn rounds_of(&self, scenario: Scenario) -> (usize, usize) {
        match scenario {
            Scenario::Idle => (0, self.idle_rounds as usize),
            _ => (self.warmup as usize, self.rounds as usize),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Bytes the receiver got.
    pub bytes: u64,
    /// Receiver wall time, first connection to last close (s).
    pub wall_s: f64,
    /// Receiver CPU time over the same span (s).
    pub cpu_s: f64,
    /// GB/s (1e9 bytes).
    pub gbps: f64,
    /// Receiver CPU-seconds per GB.
    pub cpu_s_per_gb: f64,
    /// Ping-pong: round trips per second (sender-measured).
    pub rps: f64,
    /// Idle: receiver RSS with every connection armed (KiB).
    pub rss_kib: u64,
    /// Idle: RSS growth from before the connections (KiB).
    pub rss_delta_kib: u64,
    /// Idle: memory the receiver holds for receive buffers (bytes), by construction.
    pub rx_buffer_bytes: u64,
}

fn pin(cpu: usize) -> Result<()> {
    Ok(benches::pin(cpu)?)
}

fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    raise_nofile();
    if let Some(c) = args.serve {
        // Child: serve and report.
        let scenario = args
            .serve_scenario
            .context("--serve needs --serve-scenario")?;
        pin(args.receiver_cpu)?;
        let l = child::listen()?;
        let t = child::Tally::new(scenario, args.expected);
        return contenders::serve(c, l, t);
    }
    if args.all {
        args.scenarios = Scenario::value_variants().to_vec();
        args.contenders = Contender::value_variants().to_vec();
    }
    if args.seconds < 0.5 {
        bail!("--seconds must be at least 0.5 (5 or more for figures worth quoting)");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.receiver_cpu >= cpus || args.sender_cpu >= cpus {
        bail!("--receiver-cpu and --sender-cpu must be below {cpus} (this machine's CPU count)");
    }
    if args.receiver_cpu == args.sender_cpu {
        eprintln!(
            "warning: sender and receiver share CPU {}; results will be skewed",
            args.sender_cpu
        );
    }
    pin(args.sender_cpu)?;
    let exe = std::env::current_exe()?;
    let n = args.contenders.len();
    let total: usize = args
        .scenarios
        .iter()
        .map(|&sc| args.rounds_of(sc).0 + args.rounds_of(sc).1)
        .sum::<usize>()
        * n;
    // A live progress line for a terminal; one plain line per measurement into a file or pipe.
    let live = std::io::stderr().is_terminal();
    let mut done = 0;
    let mut results: Vec<report::Row> = vec![];
    let started = Instant::now();
    for &scenario in &args.scenarios {
        let (warmup, counted) = args.rounds_of(scenario);
        let rounds = warmup + counted;
        let mut samples: Vec<Vec<Result<Sample, String>>> = vec![Vec::with_capacity(rounds); n];
        for round in 0..rounds {
            let label = if round < warmup {
                format!("warm-up {}/{warmup}", round + 1)
            } else {
                format!("round {}/{counted}", round + 1 - warmup)
            };
            for i in round_order(round, n) {
                let c = args.contenders[i];
                done += 1;
                if live {
                    eprint!(
                        "\r\x1b[2K[{done}/{total}] {scenario:?} {label}: {} ({:.0} s elapsed)",
                        c.name(),
                        started.elapsed().as_secs_f64()
                    );
                }
                let r = measure(&exe, &args, scenario, c).map_err(|e| format!("{e:#}"));
                if !live {
                    let what = match &r {
                        Ok(s) => report::describe(scenario, s),
                        Err(e) => format!("failed: {e}"),
                    };
                    eprintln!(
                        "[{done}/{total}] {scenario:?} {label}: {}: {what} ({:.0} s elapsed)",
                        c.name(),
                        started.elapsed().as_secs_f64()
                    );
                }
                samples[i].push(r);
            }
        }
        let rows: Vec<report::Row> = samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| report::Row::new(scenario, args.contenders[i], s, warmup))
            .collect();
        results.extend(report::with_ratios(rows, Contender::TokioCt));
    }
    if live {
        eprint!("\r\x1b[2K");
    }
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    report::print_and_save(&args, &results)?;
    let failed: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("{:?} {}: {e}", r.scenario, r.name))
        })
        .collect();
    if args.fail_on_error && !failed.is_empty() {
        bail!(
            "{} measurement(s) failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

/// The order of the contenders in round `round`: rotated by one each round and reversed every
/// other round, so each contender runs in every position and after every other one.
fn round_order(round: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).map(|k| (k + round / 2) % n).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Runs one measurement: a receiver child, the sender here.
fn measure(exe: &std::path::Path, args: &Args, scenario: Scenario, c: Contender) -> Result<Sample> {
    let expected = match scenario {
        Scenario::OneFlow => 1,
        Scenario::ManyFlows => args.flows as usize,
        Scenario::PingPong => args.conns as usize,
        Scenario::Idle => args.idle as usize,
    };
    // Let the previous receiver's teardown finish first (a killed io_uring process is torn down
    // by a kernel worker, and its sockets close): a measurement that starts while that still
    // runs starts behind a backlog.
    std::thread::sleep(Duration::from_millis(u64::from(args.settle_ms)));
    let mut child = Command::new(exe)
        .args(["--serve", c.to_possible_value().unwrap().get_name()])
        .args([
            "--serve-scenario",
            scenario.to_possible_value().unwrap().get_name(),
        ])
        .args(["--expected", &expected.to_string()])
        .args(["--receiver-cpu", &args.receiver_cpu.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the receiver")?;
    let guard = KillOnDrop(&mut child);
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = guard.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = guard.0.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let pid = guard.0.id();
    let fail = |what: &str,
                errs: std::thread::JoinHandle<String>,
                guard: KillOnDrop<'_>|
     -> anyhow::Error {
        drop(guard);
        let e = errs.join().unwrap_or_default();
        anyhow::anyhow!(
            "{what}{}",
            if e.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", e.trim())
            }
        )
    };
    let wait_for = |prefix: &str, timeout: Duration| -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Some(l),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    };
    let Some(ready) = wait_for("READY ", Duration::from_secs(20)) else {
        return Err(fail("the receiver did not start", errs, guard));
    };
    let port: u16 = ready[6..].trim().parse()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut sample = Sample::default();
    let secs = args.seconds;
    match scenario {
        Scenario::OneFlow | Scenario::ManyFlows => {
            if let Err(e) = sender::bulk(addr, expected, secs) {
                return Err(fail(&format!("sending failed ({e})"), errs, guard));
            }
        }
        Scenario::PingPong => match sender::ping_pong(addr, expected, args.msg as usize, secs) {
            Ok(trips) => sample.rps = trips as f64 / secs,
            Err(e) => return Err(fail(&format!("ping-pong failed ({e})"), errs, guard)),
        },
        Scenario::Idle => {
            let before = rss_kib(pid);
            let conns = match sender::idle(addr, expected) {
                Ok(c) => c,
                Err(e) => {
                    return Err(fail(
                        &format!("opening idle connections failed ({e})"),
                        errs,
                        guard,
                    ))
                }
            };
            if wait_for("ARMED ", Duration::from_secs(60)).is_none() {
                return Err(fail(
                    "the receiver did not accept every connection",
                    errs,
                    guard,
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
            sample.rss_kib = rss_kib(pid);
            sample.rss_delta_kib = sample.rss_kib.saturating_sub(before);
            sample.rx_buffer_bytes = match c {
                Contender::Ours
                | Contender::OursInc
                | Contender::OursAllPosted
                | Contender::UringLoop => 256 * 32 * 1024,
                Contender::Discard => contenders::DISCARD as u64,
                _ => expected as u64 * child::CONN_BUF as u64,
            };
            drop(conns);
        }
    }
    let Some(done) = wait_for("DONE ", Duration::from_secs_f64(secs + 60.0)) else {
        return Err(fail("the receiver did not finish", errs, guard));
    };
    let f: Vec<f64> = done[5..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let [bytes, cpu_ns, wall_ns] = f[..] else {
        bail!("bad report {done:?}")
    };
    sample.bytes = bytes as u64;
    sample.wall_s = wall_ns / 1e9;
    sample.cpu_s = cpu_ns / 1e9;
    if bytes > 0.0 {
        sample.gbps = bytes / wall_ns;
        sample.cpu_s_per_gb = sample.cpu_s / (bytes / 1e9);
    }
    drop(guard);
    let _ = errs.join();
    Ok(sample)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
