//! An HTTP/1.1 server: hyper 1.x served on this runtime, through tokio's I/O traits over
//! `zcrx::net::TcpStream` (`hyper_util::rt::TokioIo`), one pinned runtime per thread, each with
//! its own `SO_REUSEPORT` listener; connections are tasks of `zcrx::spawn`, which need not be
//! `Send`. `--on tokio` serves the very same service function on a tokio current_thread
//! runtime per thread (pinned the same way), for comparison.
//!
//! What it shows: an unmodified hyper server on the runtime, with hyper's header read timeout
//! running on `zcrx::time` and a graceful stop (Ctrl-C or SIGTERM: listeners close, idle
//! keep-alive connections end, requests in flight get 2 s; a second signal exits at once).
//! Received bytes are copied out of the receive pool into hyper's buffer (the runtime's
//! `AsyncRead`), so this is the copy path, not zero-copy forwarding.
//!
//! Routes:
//!
//! - `GET /`: a short text answer.
//! - `GET /bytes/N`: N bytes of the pattern for seed 0 (`examples::Pattern`, what
//!   `sink --verify 0 --generate N` writes), streamed; the first MiB is made once and shared.
//! - `POST /echo`: the request body back, streamed while it arrives.
//! - `POST /count`: the request body's length in bytes, in decimal.
//!
//! ```sh
//! cargo run --release --example http -- --listen 127.0.0.1:8080 --threads 2
//! curl -s http://127.0.0.1:8080/bytes/1048576 | cmp - <(cargo run -q --example sink -- --verify 0 --generate 1M)
//! curl -s --data-binary @some-file http://127.0.0.1:8080/echo | cmp - some-file
//! wrk -t1 -c64 -d3s http://127.0.0.1:8080/
//! # The same server on tokio:
//! cargo run --release --example http -- --on tokio
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use examples::{cli, Pattern};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use zcrx::ShutdownSignal;

/// How long requests in flight may take to finish once a stop was asked for.
const GRACE: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(
    name = "http",
    about = "HTTP/1.1 server (hyper) on the io_uring runtime, or on tokio for comparison",
    after_help = "Routes: GET /, GET /bytes/N (N bytes of the pattern for seed 0), POST /echo, POST /count"
)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080",
          value_parser = cli::socket_addr)]
    listen: SocketAddr,
    /// Which runtime serves: this one, or tokio (current_thread, one per thread; the receive
    /// flags below are then ignored).
    #[arg(long, value_enum, default_value = "zcrx")]
    on: On,
    #[command(flatten)]
    rt: cli::RuntimeArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum On {
    /// This runtime (io_uring; the receive backend the flags below choose).
    Zcrx,
    /// tokio's current_thread runtime (epoll), one per thread.
    Tokio,
}

/// Connections served, over all threads.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    errors: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_tracing();
    let listen = args.listen;
    // Fail early, with a clear message, if the address cannot be bound.
    std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let threads = usize::from(args.rt.threads);
    if args.on == On::Tokio && args.rt.zcrx.is_some() {
        eprintln!("http: --on tokio ignores --zcrx and --backend");
    }

    // Ctrl-C and SIGTERM stop the server gracefully, on either runtime: one watcher thread
    // (signal-hook's self-pipe iterator) triggers the shutdown signal both serve loops follow.
    let signal = ShutdownSignal::new();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    {
        let signal = signal.clone();
        std::thread::spawn(move || {
            let mut each = signals.forever();
            each.next();
            eprintln!("http: stopping");
            signal.trigger();
            each.next();
            eprintln!("http: second signal, exiting at once");
            std::process::exit(130);
        });
    }

    eprintln!(
        "http: listening on {listen} with {threads} thread(s) on {}",
        match args.on {
            On::Zcrx => "this runtime",
            On::Tokio => "tokio (current_thread)",
        }
    );
    let counters = Arc::new(Counters::default());
    match args.on {
        On::Zcrx => serve_zcrx(&args.rt, listen, signal, counters.clone())?,
        On::Tokio => serve_tokio(threads, listen, signal, counters.clone())?,
    }
    eprintln!(
        "http: stopped; {} connection(s), {} ended with an error",
        counters.connections.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    );
    Ok(())
}

// ---- the service ----------------------------------------------------------------------------

const HELLO: &str = "Hello from hyper\n";

/// The largest `/bytes/N` served (1 TiB: it is streamed, but a typo should not run for days).
const MAX_BYTES: u64 = 1 << 40;

/// The routes; the same function on either runtime.
async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let known = matches!(path, "/" | "/echo" | "/count") || path.starts_with("/bytes/");
    let response = match (req.method(), path) {
        (&Method::GET, "/") => text(StatusCode::OK, HELLO),
        (&Method::GET, p) if p.starts_with("/bytes/") => match p["/bytes/".len()..].parse() {
            Ok(n) if n <= MAX_BYTES => {
                let mut r = Response::new(Body::pattern(n));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                format!("expected /bytes/N with N from 0 to {MAX_BYTES}\n"),
            ),
        },
        (&Method::POST, "/echo") => {
            let kind = req.headers().get(CONTENT_TYPE).cloned();
            let mut r = Response::new(Body::Echo(req.into_body()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                kind.unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            r
        }
        (&Method::POST, "/count") => {
            let mut body = req.into_body();
            let mut n = 0u64;
            loop {
                match body.frame().await {
                    Some(Ok(f)) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Some(Err(e)) => {
                        break text(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n"))
                    }
                    None => break text(StatusCode::OK, format!("{n}\n")),
                }
            }
        }
        _ if known => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            let allow = if matches!(path, "/echo" | "/count") {
                "POST"
            } else {
                "GET"
            };
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

fn text(status: StatusCode, s: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(s.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The first MiB of the pattern, made once, and the pattern's state after it.
fn pattern_prefix() -> &'static (Bytes, Pattern) {
    const PREFIX: usize = 1 << 20;
    static P: OnceLock<(Bytes, Pattern)> = OnceLock::new();
    P.get_or_init(|| {
        let mut pattern = Pattern::new(0);
        let mut b = vec![0u8; PREFIX];
        pattern.fill(&mut b);
        (Bytes::from(b), pattern)
    })
}

/// Frames of the pattern past the shared prefix.
const FRAME: usize = 256 * 1024;

/// The response bodies: one `Bytes`, the pattern, or the request's body.
enum Body {
    Full(Option<Bytes>),
    Pattern {
        /// The prefix's share, not sent yet.
        head: Option<Bytes>,
        /// Bytes to make past the prefix.
        left: u64,
        /// The pattern's state past what was sent (set once the prefix is sent).
        pattern: Option<Pattern>,
    },
    Echo(Incoming),
}

impl Body {
    fn pattern(n: u64) -> Self {
        let (prefix, _) = pattern_prefix();
        let head = n.min(prefix.len() as u64) as usize;
        Body::Pattern {
            head: (head > 0).then(|| prefix.slice(..head)),
            left: n - head as u64,
            pattern: None,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Pattern {
                head,
                left,
                pattern,
            } => {
                if let Some(h) = head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(h))));
                }
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let p = pattern.get_or_insert_with(|| pattern_prefix().1.clone());
                let n = (*left).min(FRAME as u64) as usize;
                let mut b = BytesMut::zeroed(n);
                p.fill(&mut b);
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(b.freeze()))))
            }
            Body::Echo(incoming) => Pin::new(incoming).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Pattern { head, left, .. } => head.is_none() && *left == 0,
            Body::Echo(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Pattern { head, left, .. } => {
                SizeHint::with_exact(head.as_ref().map_or(0, |h| h.len() as u64) + *left)
            }
            Body::Echo(incoming) => incoming.size_hint(),
        }
    }
}

/// Serves one connection with hyper until it ends; once `stop` is triggered, asks hyper to
/// finish the request in flight and close (an idle keep-alive connection closes at once).
async fn serve_connection<I, T>(io: I, timer: T, stop: ShutdownSignal, counters: Arc<Counters>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    T: hyper::rt::Timer + Send + Sync + 'static,
{
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let mut conn = pin!(http1::Builder::new()
        .timer(timer)
        .serve_connection(io, service_fn(handle)));
    let mut stopped = pin!(stop.wait());
    let mut stopping = false;
    let result = std::future::poll_fn(|cx| {
        if !stopping && stopped.as_mut().poll(cx).is_ready() {
            stopping = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await;
    // A client that goes away mid-request is an error to hyper; nothing to do but count it.
    if result.is_err() {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

// ---- on this runtime ------------------------------------------------------------------------

/// hyper's timer (the header read timeout) on `zcrx::time`.
#[derive(Clone, Copy, Debug)]
struct ZcrxTimer;

/// `zcrx::time::Sleep` as hyper's `Sleep` (a runtime's timers live on its thread, as do the
/// connections that use them).
struct ZcrxSleep(zcrx::time::Sleep);

impl Future for ZcrxSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for ZcrxSleep {}

impl hyper::rt::Timer for ZcrxTimer {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ZcrxSleep(zcrx::time::sleep(d)))
    }

    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ZcrxSleep(zcrx::time::sleep_until(at)))
    }
}

fn serve_zcrx(
    rt: &cli::RuntimeArgs,
    listen: SocketAddr,
    signal: ShutdownSignal,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let results = rt
        .builder()
        .shutdown_signal(signal.clone())
        .shutdown_grace(GRACE)
        .run(move |i| {
            let (signal, counters) = (signal.clone(), counters.clone());
            async move {
                let listener = zcrx::net::TcpListener::bind_reuseport(listen)?;
                eprintln!(
                    "http: thread {i} listens, receives with the {}",
                    zcrx::rx_backend()
                );
                loop {
                    let (stream, _) = match listener.accept().await {
                        Ok(s) => s,
                        // The stop signal: the runtime gives the connections the grace period.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                            return Ok::<_, std::io::Error>(())
                        }
                        Err(e) => {
                            eprintln!("http: accept failed: {e}");
                            zcrx::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let (signal, counters) = (signal.clone(), counters.clone());
                    zcrx::spawn(serve_connection(
                        TokioIo::new(stream),
                        ZcrxTimer,
                        signal,
                        counters,
                    ));
                }
            }
        })
        .context("starting the runtime")?;
    for r in results {
        r.context("serving")?;
    }
    Ok(())
}

// ---- on tokio -------------------------------------------------------------------------------

fn serve_tokio(
    threads: usize,
    listen: SocketAddr,
    signal: ShutdownSignal,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let cpus = usable_cpus();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (signal, counters) = (signal.clone(), counters.clone());
            // Pinned like the runtime's threads: thread i on the i-th CPU this process may use.
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            std::thread::Builder::new()
                .name(format!("tokio-{i}"))
                .spawn(move || -> anyhow::Result<()> {
                    if let Some(cpu) = cpu {
                        let mut set = rustix::thread::CpuSet::new();
                        set.set(cpu);
                        let _ = rustix::thread::sched_setaffinity(None, &set);
                    }
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building a tokio runtime")?;
                    rt.block_on(tokio_thread(i, listen, signal, counters))
                })
                .context("starting a thread")
        })
        .collect::<anyhow::Result<_>>()?;
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(_) => bail!("a tokio thread panicked"),
        }
    }
    Ok(())
}

async fn tokio_thread(
    i: usize,
    listen: SocketAddr,
    signal: ShutdownSignal,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(1024)?;
    eprintln!("http: thread {i} listens, on tokio");
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = signal.wait() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(serve_connection(
            TokioIo::new(stream),
            hyper_util::rt::TokioTimer::new(),
            signal.clone(),
            counters.clone(),
        ));
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
    Ok(())
}

fn usable_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => Vec::new(),
    }
}
