//! A receive sink: accepts TCP connections and reads them to the end, counting bytes per
//! connection and in total, and optionally checking every byte against a deterministic pattern.
//! Buffers are looked at in place in the receive pool and dropped at once.
//!
//! Pair it with any plain sender (`nc`, `socat`, a program of yours, the proxy), or, with
//! `--iperf3`, with an iperf3 client: the sink then speaks the server side of the iperf3 protocol
//! (TCP, client sending; not `-R`, `--bidir` or `-u`), and the client prints the sink's received
//! bytes as the receiver's. (A plain sink cannot pair with `iperf3 -c`: the client waits for its
//! server's answers.)
//!
//! It prints the throughput every second (MB/s = 10^6 bytes/s, and the connections), a line per
//! finished connection, and a summary when it stops: after `--duration`, after `--connections`
//! connections have finished (iperf3 data streams count; control connections do not), or on
//! Ctrl-C / SIGTERM (a second one exits at once). The exit status is 1 if any connection failed
//! verification.
//!
//! ```sh
//! cargo run --release --example sink -- --listen 127.0.0.1:9000 --threads 2 --duration 10
//!
//! # Driven by iperf3:
//! cargo run --release --example sink -- --listen 127.0.0.1:5201 --iperf3
//! iperf3 -c 127.0.0.1 -p 5201 -t 5 -P 2
//!
//! # Verified: every connection must carry the pattern for the seed, from its first byte.
//! cargo run --release --example sink -- --listen 127.0.0.1:9000 --verify 42 --connections 1
//! cargo run --release --example sink -- --verify 42 --generate 1G | nc -N 127.0.0.1 9000
//! ```
//!
//! The pattern (`examples::Pattern`): xorshift64* with the state starting at the seed
//! (0x9E3779B97F4A7C15 for seed 0); each step does `x ^= x >> 12; x ^= x << 25; x ^= x >> 27`
//! and emits `x * 0x2545F4914F6CDD1D` (wrapping) as 8 little-endian bytes. Every connection
//! starts the stream afresh from the seed. `--generate BYTES` writes it to stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use examples::{cli, serve_sink, Pattern, SinkConfig, SinkTotals};
use zcrx::net::TcpListener;
use zcrx::ShutdownSignal;

#[derive(Parser, Debug)]
#[command(
    name = "sink",
    about = "Receive sink on the io_uring runtime: counts bytes, reports throughput, optionally verifies a pattern",
    after_help = "Examples:\n  sink --listen 127.0.0.1:9000 --threads 2 --duration 10\n  sink --verify 42 --generate 100M | nc -N 127.0.0.1 9000"
)]
struct Args {
    /// Address to accept senders on (ADDR:PORT, e.g. 127.0.0.1:9000).
    #[arg(long, value_name = "ADDR:PORT", value_parser = cli::socket_addr,
          required_unless_present = "generate")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    rt: cli::RuntimeArgs,
    /// Check every connection's bytes against the pattern for this seed (decimal or 0x hex).
    #[arg(long, value_name = "SEED", value_parser = cli::seed)]
    verify: Option<u64>,
    /// Be an iperf3 server for `iperf3 -c` (TCP, client sending), counting its data streams.
    #[arg(long, conflicts_with = "verify")]
    iperf3: bool,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = cli::seconds)]
    duration: Option<Duration>,
    /// Stop once this many connections have finished.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    connections: Option<u64>,
    /// Seconds between throughput lines.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = cli::seconds)]
    interval: Duration,
    /// No line per finished connection.
    #[arg(long, short)]
    quiet: bool,
    /// Do not listen: write BYTES of the --verify pattern to stdout and exit (K, M, G suffixes).
    #[arg(long, value_name = "BYTES", value_parser = cli::bytes, requires = "verify")]
    generate: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_tracing();
    if let Some(n) = args.generate {
        return generate(args.verify.unwrap_or_default(), n);
    }
    let Some(listen) = args.listen else {
        bail!("--listen ADDR:PORT is required");
    };
    std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;

    let totals = Arc::new(SinkTotals::default());
    let signal = ShutdownSignal::new();
    let builder = args
        .rt
        .builder()
        .shutdown_signal(signal.clone())
        // Ctrl-C and SIGTERM stop the sink gracefully, with its summary; a second one exits.
        .shutdown_on_signals(true)
        .shutdown_grace(Duration::from_secs(2));
    eprintln!(
        "sink: listening on {listen} with {} thread(s), {} chunks of {} bytes per thread{}",
        args.rt.threads,
        args.rt.chunks,
        args.rt.chunk_size,
        match (args.verify, args.iperf3) {
            (Some(seed), _) => format!(", verifying the pattern for seed {seed}"),
            (None, true) => ", as an iperf3 server".to_string(),
            (None, false) => String::new(),
        }
    );
    let (verify, quiet) = (args.verify, args.quiet);
    let config = SinkConfig::new(args.verify, args.iperf3);
    let rt_totals = totals.clone();
    let server = std::thread::spawn(move || {
        builder.run(move |i| {
            let (totals, config) = (rt_totals.clone(), config.clone());
            async move {
                eprintln!("sink: thread {i} receives with the {}", zcrx::rx_backend());
                let listener = TcpListener::bind_reuseport(listen)?;
                serve_sink(listener, config, totals, move |report| {
                    if !quiet {
                        println!("sink: connection {report}");
                    }
                })
                .await
            }
        })
    });

    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = (Instant::now(), 0u64);
    let reason = loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        let bytes = totals.bytes.load(Ordering::Relaxed);
        if first.is_none() && totals.accepted.load(Ordering::Acquire) > 0 {
            first = Some(now);
        }
        if now - last.0 >= args.interval {
            let rate = (bytes - last.1) as f64 / (now - last.0).as_secs_f64() / 1e6;
            println!(
                "sink: [{:7.1} s] {:10.1} MB/s  total {} bytes  connections: {} active, {} finished",
                (now - started).as_secs_f64(),
                rate,
                bytes,
                totals.active(),
                totals.finished.load(Ordering::Acquire)
            );
            last = (now, bytes);
        }
        if signal.is_triggered() {
            break "signal";
        }
        if server.is_finished() {
            break "the runtime stopped";
        }
        if args.duration.is_some_and(|d| now - started >= d) {
            break "duration elapsed";
        }
        if args
            .connections
            .is_some_and(|n| totals.finished.load(Ordering::Acquire) >= n)
        {
            break "connections finished";
        }
    };
    let ended = Instant::now();
    signal.trigger();
    let results = match server.join() {
        Ok(r) => r.context("starting the runtime")?,
        Err(_) => bail!("the runtime thread panicked"),
    };
    for r in results {
        r.context("serving")?;
    }

    let bytes = totals.bytes.load(Ordering::Relaxed);
    let secs = first.map_or(0.0, |f| (ended - f).as_secs_f64());
    let failures = totals.verify_failures.load(Ordering::Acquire);
    let finished = totals.finished.load(Ordering::Acquire);
    println!(
        "sink: summary ({reason}): {finished} connection(s), {bytes} bytes in {secs:.3} s since the first connection: {:.1} MB/s ({:.2} Gbit/s){}{}",
        bytes as f64 / secs.max(1e-9) / 1e6,
        bytes as f64 * 8.0 / secs.max(1e-9) / 1e9,
        match verify {
            Some(_) => format!(
                "; verification: {} passed, {failures} failed",
                finished - failures
            ),
            None => String::new(),
        },
        match totals.errors.load(Ordering::Acquire) {
            0 => String::new(),
            n => format!("; {n} ended by an error"),
        }
    );
    if args.iperf3 {
        println!(
            "sink: {} iperf3 test(s)",
            totals.control_finished.load(Ordering::Acquire)
        );
    }
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Writes `n` bytes of the pattern for `seed` to stdout.
fn generate(seed: u64, n: u64) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let len = left.min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..len]);
        match out.write_all(&buf[..len]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing the pattern to stdout"),
        }
        left -= len as u64;
    }
    out.flush().context("writing the pattern to stdout")?;
    Ok(())
}
