//! A zero-copy TCP proxy: every accepted client is connected to one upstream, and both
//! directions are forwarded concurrently with `send_buf`: each received buffer is sent on
//! straight from the receive pool, and its chunk returns to the pool only once the kernel is done
//! sending it. One pinned runtime per thread, sharing the listening port with `SO_REUSEPORT`.
//!
//! Half-close is carried through (a client that shuts down its write side still gets the whole
//! answer); an error or reset on either side closes both.
//!
//! Each connection may hold at most `--conn-limit` received bytes (default: 4 chunks) before the
//! runtime stops reading it. Keep that well below the pool: a client connection holds what it
//! received until the upstream takes it, and if the upstream waits for its answers to be read
//! (an echo, any request/response peer with full buffers), connections stuck at their limit
//! must leave chunks for the upstream connections, or nothing moves again (with the runtime's
//! default, a quarter of the pool, four such connections are enough).
//!
//! ```sh
//! # in front of a redis-server on 6379:
//! cargo run --release --example proxy -- --listen 127.0.0.1:7000 --upstream 127.0.0.1:6379
//! redis-benchmark -p 7000 -q -t set,get
//! # in front of an iperf3 server, two threads:
//! iperf3 -s -p 5201 &
//! cargo run --release --example proxy -- --listen 127.0.0.1:7001 --upstream 127.0.0.1:5201 --threads 2
//! iperf3 -c 127.0.0.1 -p 7001
//! ```
//!
//! Stop it with Ctrl-C (it keeps no state worth saving).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use examples::{cli, serve_proxy, ProxyConfig, ProxyCounters, PROXY_CONN_LIMIT_CHUNKS};
use zcrx::net::TcpListener;

#[derive(Parser, Debug)]
#[command(
    name = "proxy",
    about = "Zero-copy TCP proxy on the io_uring runtime",
    after_help = "Example: proxy --listen 127.0.0.1:7000 --upstream 127.0.0.1:6379 --threads 2"
)]
struct Args {
    /// Address to accept clients on (ADDR:PORT, e.g. 127.0.0.1:7000).
    #[arg(long, value_name = "ADDR:PORT", value_parser = cli::socket_addr)]
    listen: SocketAddr,
    /// Where to forward every client (ADDR:PORT or HOST:PORT, e.g. 127.0.0.1:6379).
    #[arg(long, value_name = "ADDR:PORT", value_parser = cli::socket_addr)]
    upstream: SocketAddr,
    #[command(flatten)]
    rt: cli::RuntimeArgs,
    /// Most received bytes one connection may hold before the runtime stops reading it
    /// (K, M suffixes; default: 4 chunks). Keep it well below the pool: connections stuck at
    /// their limit must not be able to hold every chunk.
    #[arg(long, value_name = "BYTES", value_parser = cli::bytes)]
    conn_limit: Option<u64>,
    /// Seconds to wait for the upstream to accept a connection.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = cli::seconds)]
    connect_timeout: Duration,
    /// Leave Nagle's algorithm on (by default TCP_NODELAY is set on both sides).
    #[arg(long)]
    no_nodelay: bool,
    /// Do not print a line for each connection that ended with an error.
    #[arg(long, short)]
    quiet: bool,
    /// Print connection and byte counts every this many seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    stats: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_tracing();
    if args.listen == args.upstream {
        Args::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--listen and --upstream are both {}: the proxy would connect to itself",
                    args.listen
                ),
            )
            .exit();
    }
    // Fail early, with a clear message, if the address cannot be bound.
    std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The upstream is not probed here: a stray connection would disturb one-shot servers
    // (`iperf3 -s -1`). If it cannot be reached, each client is closed and the reason printed.

    let mut config = ProxyConfig::new(args.upstream);
    config.connect_timeout = args.connect_timeout;
    config.nodelay = !args.no_nodelay;
    config.log_errors = !args.quiet;
    let counters = Arc::new(ProxyCounters::default());
    if args.stats > 0 {
        let (counters, period) = (counters.clone(), Duration::from_secs(args.stats));
        std::thread::spawn(move || loop {
            std::thread::sleep(period);
            eprintln!(
                "proxy: {} active, {} finished, {} upstream connect failures, {} errors; {} bytes to upstream, {} to clients",
                counters.active(),
                counters.finished.load(Ordering::Acquire),
                counters.connect_failures.load(Ordering::Acquire),
                counters.errors.load(Ordering::Acquire),
                counters.to_upstream.load(Ordering::Acquire),
                counters.to_client.load(Ordering::Acquire),
            );
        });
    }
    let listen = args.listen;
    let conn_limit = args
        .conn_limit
        .unwrap_or(PROXY_CONN_LIMIT_CHUNKS * args.rt.chunk_size as u64);
    let pool = (args.rt.chunks * args.rt.chunk_size) as u64;
    if conn_limit == 0 || conn_limit > pool / 2 {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--conn-limit {conn_limit}: expected 1 byte to half the pool ({} bytes): \
                     connections stuck at their limit must not be able to hold every chunk",
                    pool / 2
                ),
            )
            .exit();
    }
    eprintln!(
        "proxy: {} -> {} with {} thread(s), {} chunks of {} bytes per thread, {conn_limit} bytes per connection",
        args.listen, args.upstream, args.rt.threads, args.rt.chunks, args.rt.chunk_size
    );
    let results = args
        .rt
        .builder()
        .conn_limit(conn_limit)
        .run(move |i| {
            let (config, counters) = (config.clone(), counters.clone());
            async move {
                eprintln!("proxy: thread {i} receives with the {}", zcrx::rx_backend());
                let listener = TcpListener::bind_reuseport(listen)?;
                serve_proxy(listener, config, counters).await
            }
        })
        .context("starting the runtime")?;
    for r in results {
        r.map_err(|e: std::io::Error| anyhow::anyhow!(e))?;
    }
    Ok(())
}
