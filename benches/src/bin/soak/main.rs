//! `soak`: minutes of mixed full load against the runtime, sampling RSS, open fds and the
//! receive pool every second; at the end the figures must be back where they started.
//!
//! One process: the runtime serves on its own pinned thread(s); client threads (pinned to the
//! other CPU) drive, at the same time,
//! - **bulk**: connections that send 1 to 64 MiB, half-close and check the byte count the server
//!   sends back;
//! - **echo**: request/response of 1 byte to 16 KiB, every reply checked byte for byte
//!   (`send_buf`, no copy);
//! - **hold**: the server keeps what it receives for up to 50 ms before dropping it (an
//!   application sitting on buffers, up to its per-connection limit);
//! - **churn**: connections that close normally, reset in the middle of a stream (SO_LINGER 0),
//!   half-close without reading the answer, or connect and vanish.
//!
//! Checks at the end (exit status 1 if one fails): no client saw a wrong byte or count; open
//! fds back to the count before the load; every chunk back in the pool (none held by the
//! application, none reported at shutdown); RSS flat (the last quarter's mean within 2 MiB + 2%
//! of the second quarter's).
//!
//! ```sh
//! cargo run --release -p benches --bin soak                   # 10 minutes
//! cargo run --release -p benches --bin soak -- --seconds 60   # a short one
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use zcrx::net::TcpListener;
use zcrx::{Builder, DriverStats, ShutdownSignal};

mod clients;
use clients::*;

#[derive(Parser, Debug)]
#[command(
    name = "soak",
    about = "Mixed full load against the runtime for minutes; RSS, fds and receive-pool counters sampled every second must end flat"
)]
struct Args {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 600.0, value_parser = positive_secs)]
    seconds: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0, value_parser = positive_secs)]
    interval: f64,
    /// CPU the runtime thread is pinned to (the clients take the others).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// Receive chunks in the pool.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=32768))]
    chunks: u32,
    /// Bulk client threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    bulk: u32,
    /// Echo client threads (one connection each, reused).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=64))]
    echo: u32,
    /// Where the samples (JSON) and the summary (Markdown) go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!("'{s}': expected a positive number of seconds")),
    }
}

/// What the server side publishes for the sampler.
#[derive(Default, Clone, Copy, Serialize)]
struct PoolView {
    pool: u32,
    kernel: u32,
    user: u32,
    refill: u32,
    held_bytes: u64,
    enters: u64,
    completions: u64,
    recv_arms: u64,
    no_buffers: u64,
    backpressure_pauses: u64,
    pool_waits: u64,
    coalesced_waits: u64,
}

#[derive(Default)]
struct Counters {
    server_conns: AtomicU64,
    server_active: AtomicU64,
    bulk_bytes: AtomicU64,
    bulk_conns: AtomicU64,
    echo_trips: AtomicU64,
    hold_bytes: AtomicU64,
    churn_conns: AtomicU64,
    resets: AtomicU64,
    errors: AtomicU64,
}

#[derive(Serialize, Clone)]
struct Sample {
    t: f64,
    rss_kib: u64,
    /// Bytes malloc has handed out and not had back (glibc `mallinfo2`, all arenas), KiB.
    heap_kib: u64,
    fds: u64,
    server_conns: u64,
    server_active: u64,
    bulk_gb: f64,
    echo_trips: u64,
    churn_conns: u64,
    resets: u64,
    errors: u64,
    pool: PoolView,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let counters = Arc::new(Counters::default());
    let view = Arc::new(Mutex::new(PoolView::default()));
    let signal = ShutdownSignal::new();
    let ports = Arc::new(Mutex::new(None));

    // The server: one pinned runtime thread with three listeners.
    let server = {
        let (counters, view, ports) = (counters.clone(), view.clone(), ports.clone());
        let builder = Builder::new()
            .chunks(args.chunks as usize)
            .shutdown_signal(signal.clone())
            .shutdown_grace(Duration::from_secs(5));
        let cpu = args.server_cpu;
        std::thread::spawn(move || {
            pin(cpu);
            builder
                .pin_threads(false)
                .run_with_reports(move |_| serve(counters.clone(), view.clone(), ports.clone()))
        })
    };
    let (sink, echo, hold) = loop {
        if let Some(p) = *ports.lock().unwrap() {
            break p;
        }
        if server.is_finished() {
            bail!("the server did not start: {:?}", server.join());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(100));
    let fds_before = fd_count();
    let rss_before = rss_kib();
    eprintln!(
        "soak: {} s of load; server on CPU {}, {} chunks; {fds_before} fds and {rss_before} KiB RSS before",
        args.seconds, args.server_cpu, args.chunks
    );

    // The clients.
    let stop = Arc::new(AtomicBool::new(false));
    let client_cpu = usize::from(args.server_cpu == 0);
    let mut clients = Vec::new();
    let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        clients.push(
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    pin(client_cpu);
                    f()
                })
                .expect("spawn a client thread"),
        );
    };
    for i in 0..args.bulk {
        let (c, s) = (counters.clone(), stop.clone());
        spawn("bulk", Box::new(move || bulk_client(sink, i, &c, &s)));
    }
    for i in 0..args.echo {
        let (c, s) = (counters.clone(), stop.clone());
        spawn("echo", Box::new(move || echo_client(echo, i, &c, &s)));
    }
    {
        let (c, s) = (counters.clone(), stop.clone());
        spawn("hold", Box::new(move || hold_client(hold, &c, &s)));
    }
    {
        let (c, s) = (counters.clone(), stop.clone());
        spawn("churn", Box::new(move || churn_client(sink, &c, &s)));
    }

    // Sample while the load runs.
    let start = Instant::now();
    let mut samples = Vec::new();
    let interval = Duration::from_secs_f64(args.interval);
    let mut next = start + interval;
    while start.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let s = sample(start, &counters, &view);
        if samples.len() % 10 == 0 {
            print_sample(&s);
        }
        samples.push(s);
    }
    stop.store(true, Ordering::Release);
    for c in clients {
        let _ = c.join();
    }
    // Let the server see every close.
    let quiet = Instant::now();
    while counters.server_active.load(Ordering::Acquire) > 0
        && quiet.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let last = sample(start, &counters, &view);
    print_sample(&last);
    let fds_after = fd_count();
    signal.trigger();
    let reports = server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))?
        .context("the server failed")?;
    let held_at_shutdown: u64 = reports.iter().map(|(_, r)| r.held.held_bytes).sum();
    let unclean: Vec<String> = reports
        .iter()
        .filter(|(_, r)| !r.is_clean())
        .map(|(_, r)| r.to_string())
        .collect();

    // Verdicts.
    let mut failures = Vec::new();
    let errors = counters.errors.load(Ordering::Acquire);
    if errors > 0 {
        failures.push(format!(
            "{errors} client error(s): a wrong byte, count or failure"
        ));
    }
    if fds_after != fds_before {
        failures.push(format!("open fds: {fds_before} before, {fds_after} after"));
    }
    if last.pool.user != 0 || last.pool.held_bytes != 0 || last.server_active != 0 {
        failures.push(format!(
            "after the load: {} chunk(s), {} bytes held by the application, {} connection(s) open",
            last.pool.user, last.pool.held_bytes, last.server_active
        ));
    }
    if held_at_shutdown != 0 || !unclean.is_empty() {
        failures.push(format!(
            "shutdown was not clean ({held_at_shutdown} bytes held): {}",
            unclean.join("; ")
        ));
    }
    let quarter = samples.len() / 4;
    let (q2, q4) = if quarter >= 1 {
        (
            mean(&samples[quarter..2 * quarter]),
            mean(&samples[3 * quarter..]),
        )
    } else {
        (0.0, 0.0)
    };
    let heap =
        |s: &[Sample]| s.iter().map(|s| s.heap_kib as f64).sum::<f64>() / s.len().max(1) as f64;
    let (h2, h4) = if quarter >= 1 {
        (
            heap(&samples[quarter..2 * quarter]),
            heap(&samples[3 * quarter..]),
        )
    } else {
        (0.0, 0.0)
    };
    let allowed = 2048.0 + q2 * 0.02;
    if quarter >= 1 && q4 - q2 > allowed {
        failures.push(format!(
            "RSS grew: second quarter {q2:.0} KiB, last quarter {q4:.0} KiB (allowed +{allowed:.0})"
        ));
    }

    let secs = args.seconds;
    let bulk_gb = last.bulk_gb;
    let summary = format!(
        "soak: {secs} s; bulk {bulk_gb:.1} GB over {} connections ({:.2} GB/s), {} echo round \
         trips, {} churn connections ({} reset mid-stream), {} connections served, {} ENOBUFS, \
         {} back-pressure pauses, {} pool waits\n\
         soak: fds {fds_before} before, {fds_after} after; RSS {rss_before} KiB before, mean \
         {q2:.0} KiB in the second quarter, {q4:.0} KiB in the last, max {} KiB; malloc'd heap \
         in use {h2:.0} KiB in the second quarter, {h4:.0} KiB in the last, {} KiB after the \
         load; after the load {} chunks in the pool, {} posted, {} held; {held_at_shutdown} bytes held at shutdown\n\
         soak: {}",
        counters.bulk_conns.load(Ordering::Acquire),
        bulk_gb / secs,
        last.echo_trips,
        last.churn_conns,
        last.resets,
        last.server_conns,
        last.pool.no_buffers,
        last.pool.backpressure_pauses,
        last.pool.pool_waits,
        samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        last.heap_kib,
        last.pool.pool + last.pool.refill,
        last.pool.kernel,
        last.pool.user,
        if failures.is_empty() {
            "FLAT: everything back where it started".to_string()
        } else {
            format!("FAILED: {}", failures.join("; "))
        }
    );
    println!("{summary}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::json!({
        "seconds": secs,
        "fds_before": fds_before,
        "fds_after": fds_after,
        "rss_before_kib": rss_before,
        "held_at_shutdown": held_at_shutdown,
        "failures": failures,
        "samples": samples,
        "last": last,
    });
    std::fs::write(
        args.out.join("soak.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(args.out.join("soak.md"), format!("```\n{summary}\n```\n"))?;
    eprintln!("wrote {}/soak.json and soak.md", args.out.display());
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn mean(s: &[Sample]) -> f64 {
    s.iter().map(|s| s.rss_kib as f64).sum::<f64>() / s.len().max(1) as f64
}

fn sample(start: Instant, c: &Counters, view: &Mutex<PoolView>) -> Sample {
    Sample {
        t: start.elapsed().as_secs_f64(),
        rss_kib: rss_kib(),
        heap_kib: heap_kib(),
        fds: fd_count(),
        server_conns: c.server_conns.load(Ordering::Acquire),
        server_active: c.server_active.load(Ordering::Acquire),
        bulk_gb: (c.bulk_bytes.load(Ordering::Acquire) + c.hold_bytes.load(Ordering::Acquire))
            as f64
            / 1e9,
        echo_trips: c.echo_trips.load(Ordering::Acquire),
        churn_conns: c.churn_conns.load(Ordering::Acquire),
        resets: c.resets.load(Ordering::Acquire),
        errors: c.errors.load(Ordering::Acquire),
        pool: *view.lock().unwrap(),
    }
}

fn print_sample(s: &Sample) {
    println!(
        "[{:6.0} s] RSS {:7} KiB  heap {:6} KiB  fds {:4}  conns {:6} ({:3} open)  bulk {:7.1} GB  echo {:9}  \
         churn {:7}  pool {:3}/{:3}/{:3}/{:3} (free/kernel/app/refill)  errors {}",
        s.t,
        s.rss_kib,
        s.heap_kib,
        s.fds,
        s.server_conns,
        s.server_active,
        s.bulk_gb,
        s.echo_trips,
        s.churn_conns,
        s.pool.pool,
        s.pool.kernel,
        s.pool.user,
        s.pool.refill,
        s.errors
    );
}

// ---- the server ----------------------------------------------------------------------------

async fn serve(
    counters: Arc<Counters>,
    view: Arc<Mutex<PoolView>>,
    ports: Arc<Mutex<Option<(SocketAddr, SocketAddr, SocketAddr)>>>,
) {
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hold = TcpListener::bind("127.0.0.1:0").expect("bind");
    *ports.lock().unwrap() = Some((
        sink.local_addr().unwrap(),
        echo.local_addr().unwrap(),
        hold.local_addr().unwrap(),
    ));
    // Every task ends when shutdown is requested, so that shutdown reports no cancelled task.
    zcrx::spawn(select(
        async move {
            loop {
                publish(&view);
                zcrx::time::sleep(Duration::from_millis(200)).await;
            }
        },
        zcrx::shutdown_requested(),
    ));
    for (listener, mode) in [(echo, Mode::Echo), (hold, Mode::Hold)] {
        let counters = counters.clone();
        zcrx::spawn(select(
            accept_loop(listener, mode, counters),
            zcrx::shutdown_requested(),
        ));
    }
    select(
        accept_loop(sink, Mode::Sink, counters),
        zcrx::shutdown_requested(),
    )
    .await;
}

/// Runs `a` until it or `b` finishes.
async fn select(
    a: impl std::future::Future<Output = ()>,
    b: impl std::future::Future<Output = ()>,
) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

fn publish(view: &Mutex<PoolView>) {
    let st: DriverStats = zcrx::stats();
    let Some(snap) = zcrx::rx_snapshot() else {
        return;
    };
    *view.lock().unwrap() = PoolView {
        pool: snap.counts.pool,
        kernel: snap.counts.kernel,
        user: snap.counts.user,
        refill: snap.counts.refill,
        held_bytes: snap.held_bytes,
        enters: st.enters,
        completions: st.completions,
        recv_arms: st.recv_arms,
        no_buffers: st.no_buffers,
        backpressure_pauses: st.backpressure_pauses,
        pool_waits: st.pool_waits,
        coalesced_waits: st.coalesced_waits,
    };
}

#[derive(Clone, Copy)]
enum Mode {
    /// Count and drop; answer the count (8 bytes, little-endian) at EOF.
    Sink,
    /// Send every buffer back as it is.
    Echo,
    /// Keep buffers up to 50 ms (or until 1 MiB is held) before dropping them; count at EOF.
    Hold,
}

async fn accept_loop(listener: TcpListener, mode: Mode, counters: Arc<Counters>) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    loop {
        let s = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => return,
            Err(e) => {
                eprintln!("soak: accept failed: {e}");
                zcrx::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.server_conns.fetch_add(1, Ordering::AcqRel);
        counters.server_active.fetch_add(1, Ordering::AcqRel);
        seed = xorshift(seed);
        let counters = counters.clone();
        zcrx::spawn(async move {
            let _ = handle(s, mode, seed).await;
            counters.server_active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn handle(s: zcrx::net::TcpStream, mode: Mode, mut seed: u64) -> std::io::Result<()> {
    let mut count = 0u64;
    let mut held = Vec::new();
    let mut held_bytes = 0usize;
    while let Some(buf) = s.recv().await? {
        count += buf.len() as u64;
        match mode {
            Mode::Sink => drop(buf),
            Mode::Echo => s.send_buf(buf).await?,
            Mode::Hold => {
                held_bytes += buf.len();
                held.push(buf);
                seed = xorshift(seed);
                if held_bytes >= 1 << 20 || seed % 8 == 0 {
                    zcrx::time::sleep(Duration::from_micros(seed % 50_000)).await;
                    held.clear();
                    held_bytes = 0;
                }
            }
        }
    }
    drop(held);
    if !matches!(mode, Mode::Echo) {
        s.send_all(&count.to_le_bytes()).await?;
    }
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn heap_kib() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks as u64 / 1024
}

fn fd_count() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Best effort: the soak still means something unpinned.
fn pin(cpu: usize) {
    let _ = benches::pin(cpu);
}
