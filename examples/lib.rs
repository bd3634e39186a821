//! Examples live beside this file; run them with `cargo run --example NAME`.
//!
//! This library holds the parts of the examples that are worth testing on their own and that
//! the integration tests in `tests/` run in-process:
//!
//! - [`proxy_connection`] and [`serve_proxy`]: the zero-copy TCP proxy behind `--example proxy`.
//! - [`sink_connection`] and [`serve_sink`]: the counting, optionally verifying receive loop
//!   behind `--example sink`, which can also act as an iperf3 server ([`SinkConfig::iperf3`]).
//! - [`Pattern`] and [`PatternVerifier`]: the deterministic byte pattern the sink can verify.
//! - [`cli`]: argument parsers shared by the examples.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use zcrx::net::{TcpListener, TcpStream};

// ---- proxy --------------------------------------------------------------------------------------

/// What one proxied connection carried and how it ended.
#[derive(Debug, Default)]
pub struct ProxyReport {
    /// Bytes received from the client and sent on to the upstream.
    pub to_upstream: u64,
    /// Bytes received from the upstream and sent on to the client.
    pub to_client: u64,
    /// `None` if both directions ended with an orderly end of stream; otherwise the first error
    /// (a reset, a failed send), which closed both sides.
    pub error: Option<io::Error>,
}

/// Which way a forwarding loop runs (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToUpstream,
    ToClient,
}

impl Dir {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Dir::ToUpstream => ("client", "upstream"),
            Dir::ToClient => ("upstream", "client"),
        }
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Forwards `from` to `to` until `from` ends, then shuts down `to`'s write half. Received
/// buffers are sent from the receive pool without a copy in user space, those that arrived
/// together in one request ([`TcpStream::send_bufs`]: under zcrx each carries at most a page);
/// each chunk goes back to the pool once the kernel is done sending it.
async fn forward(from: &TcpStream, to: &TcpStream, dir: Dir, count: &Cell<u64>) -> io::Result<()> {
    let (src, dst) = dir.names();
    loop {
        match from.recv().await {
            Ok(Some(buf)) => {
                let n = match from.try_recv_buf() {
                    // Request/response traffic: one buffer at a time, as it came.
                    None => {
                        let n = buf.len() as u64;
                        to.send_buf(buf).await.map(|()| n)
                    }
                    Some(next) => {
                        let mut bufs = vec![buf, next];
                        while bufs.len() < zcrx::net::SEND_BUFS_MAX {
                            match from.try_recv_buf() {
                                Some(b) => bufs.push(b),
                                None => break,
                            }
                        }
                        let n: u64 = bufs.iter().map(|b| b.len() as u64).sum();
                        to.send_bufs(bufs).await.map(|()| n)
                    }
                }
                .map_err(|e| context(e, format!("sending to the {dst}")))?;
                count.set(count.get() + n);
            }
            Ok(None) => {
                // Half-close: pass the end of stream on and keep the other direction going.
                return to
                    .shutdown(Shutdown::Write)
                    .await
                    .map_err(|e| context(e, format!("shutting down the {dst}'s write side")));
            }
            Err(e) => return Err(context(e, format!("receiving from the {src}"))),
        }
    }
}

/// Proxies one connection: forwards client → upstream and upstream → client concurrently, each
/// received buffer sent on straight from the receive pool.
///
/// Half-close is carried through: when one side ends its stream, the other side's write half is
/// shut down and the opposite direction keeps flowing until it ends too. An error on either side
/// (a reset, a failed send) ends both directions at once: both sockets are shut down and closed,
/// so the surviving peer sees the end of its stream (or a reset if it keeps sending). The
/// runtime exposes no `SO_LINGER`, so a reset is not propagated as a reset.
///
/// Both streams are closed when this returns. It never panics on I/O errors; it reports them.
pub async fn proxy_connection(client: TcpStream, upstream: TcpStream) -> ProxyReport {
    let (up, down) = (Cell::new(0u64), Cell::new(0u64));
    let result = {
        let mut a = pin!(forward(&client, &upstream, Dir::ToUpstream, &up));
        let mut b = pin!(forward(&upstream, &client, Dir::ToClient, &down));
        let (mut a_done, mut b_done) = (false, false);
        std::future::poll_fn(|cx| {
            if !a_done {
                if let Poll::Ready(r) = a.as_mut().poll(cx) {
                    r?;
                    a_done = true;
                }
            }
            if !b_done {
                if let Poll::Ready(r) = b.as_mut().poll(cx) {
                    r?;
                    b_done = true;
                }
            }
            if a_done && b_done {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
        // The forwarding futures are dropped here: their in-flight requests are cancelled and
        // the buffers they held go back to the pool once the kernel is done with them.
    };
    if result.is_err() {
        // Close both sides now, whatever is still in flight on them.
        let _ = client.shutdown(Shutdown::Both).await;
        let _ = upstream.shutdown(Shutdown::Both).await;
    }
    ProxyReport {
        to_upstream: up.get(),
        to_client: down.get(),
        error: result.err(),
    }
}

/// The per-connection receive limit the proxy example sets, in chunks (`--conn-limit`'s
/// default: 4 chunks, 128 KiB with the default 32 KiB chunks).
///
/// A proxy must keep the connections that are stuck at their limit from holding the whole
/// pool: a client connection holds what it received until the upstream takes it, and if the
/// upstream only reads once its own answers are read (an echo, any request/response peer with
/// full buffers), the upstream connection needs free chunks to make progress. With the
/// runtime's default limit (a quarter of the pool) four such connections on one thread hold
/// every chunk and all of them wait forever. With 4 chunks of a 256-chunk pool it takes 64.
/// Throughput through the proxy is the same either way (measured over loopback).
pub const PROXY_CONN_LIMIT_CHUNKS: u64 = 4;

/// How [`serve_proxy`] reaches its upstream.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where every accepted connection is forwarded to.
    pub upstream: SocketAddr,
    /// How long connecting to the upstream may take before the client is closed.
    pub connect_timeout: Duration,
    /// Set `TCP_NODELAY` on both sides (recommended: the proxy forwards what it receives at
    /// once, and Nagle's algorithm would add latency to request/response protocols).
    pub nodelay: bool,
    /// Print one line per connection that ended with an error, on stderr.
    pub log_errors: bool,
}

impl ProxyConfig {
    /// Defaults: 5 s connect timeout, `TCP_NODELAY` on, errors logged.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
            log_errors: true,
        }
    }
}

/// Counters a proxy shares across its threads.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Client connections finished (whatever the outcome, including failed upstream connects).
    pub finished: AtomicU64,
    /// Connections that could not reach the upstream.
    pub connect_failures: AtomicU64,
    /// Connections that ended with an error (reset, failed send) after both sides were up.
    pub errors: AtomicU64,
    /// Bytes forwarded client → upstream, by finished connections.
    pub to_upstream: AtomicU64,
    /// Bytes forwarded upstream → client, by finished connections.
    pub to_client: AtomicU64,
}

impl ProxyCounters {
    /// Connections accepted and not yet finished.
    pub fn active(&self) -> u64 {
        let finished = self.finished.load(Ordering::Acquire);
        self.accepted
            .load(Ordering::Acquire)
            .saturating_sub(finished)
    }
}

/// Connects to the upstream and proxies one accepted client with [`proxy_connection`].
pub async fn proxy_client(client: TcpStream, config: &ProxyConfig) -> io::Result<ProxyReport> {
    let upstream = match zcrx::time::timeout(
        config.connect_timeout,
        TcpStream::connect(config.upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(context(e, format!("connecting to {}", config.upstream)));
        }
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to {}: no answer within {:?}",
                    config.upstream, config.connect_timeout
                ),
            ))
        }
    };
    if config.nodelay {
        client.set_nodelay(true)?;
        upstream.set_nodelay(true)?;
    }
    Ok(proxy_connection(client, upstream).await)
}

/// Accepts clients on `listener` until the runtime's shutdown is requested, proxying each to
/// `config.upstream` in its own task. Connections still open at shutdown get the runtime's
/// grace period to finish.
pub async fn serve_proxy(
    listener: TcpListener,
    config: ProxyConfig,
    counters: Arc<ProxyCounters>,
) -> io::Result<()> {
    let config = Rc::new(config);
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => return Ok(()),
            Err(e) => {
                // Out of fds or memory, for instance: say so, and do not spin.
                eprintln!("proxy: accept failed: {e}");
                zcrx::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::AcqRel);
        let (config, counters) = (config.clone(), counters.clone());
        zcrx::spawn(async move {
            match proxy_client(client, &config).await {
                Ok(report) => {
                    counters
                        .to_upstream
                        .fetch_add(report.to_upstream, Ordering::AcqRel);
                    counters
                        .to_client
                        .fetch_add(report.to_client, Ordering::AcqRel);
                    if let Some(e) = report.error {
                        counters.errors.fetch_add(1, Ordering::AcqRel);
                        if config.log_errors {
                            eprintln!("proxy: {peer}: {e}");
                        }
                    }
                }
                Err(e) => {
                    counters.connect_failures.fetch_add(1, Ordering::AcqRel);
                    if config.log_errors {
                        eprintln!("proxy: {peer}: {e}");
                    }
                }
            }
            counters.finished.fetch_add(1, Ordering::AcqRel);
        });
    }
}

// ---- the verification pattern -------------------------------------------------------------------

// One generator for the sink, its tests and the project's other tests.
pub use test_kit::pattern::{Mismatch, Pattern, PatternVerifier};

// ---- sink ---------------------------------------------------------------------------------------

/// The verification result of one sink connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// No seed was given (or the connection is an iperf3 stream).
    Off,
    /// Every byte matched the pattern.
    Passed,
    /// A byte differed.
    Failed(Mismatch),
}

/// What a sink connection was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkRole {
    /// A plain sender: every byte it sends is counted (and verified, with a seed).
    Plain,
    /// An iperf3 data stream (`--iperf3`): counted after its cookie.
    Iperf3Data {
        /// The stream id reported to the client.
        stream: u32,
    },
    /// An iperf3 control connection (`--iperf3`): one test. Its own bytes are not counted.
    Iperf3Test {
        /// Data streams.
        streams: u32,
        /// Bytes the streams received between the start and the end of the test: what the
        /// sink reported to the client as received.
        bytes: u64,
        /// From the start to the end of the test.
        duration: Duration,
    },
}

/// What one sink connection received.
#[derive(Debug)]
pub struct SinkReport {
    /// The sender's address, if known.
    pub peer: Option<SocketAddr>,
    /// What the connection was.
    pub role: SinkRole,
    /// Bytes received (data bytes: not an iperf3 cookie or control message).
    pub bytes: u64,
    /// From accept to the end of the stream.
    pub elapsed: Duration,
    /// Whether the bytes matched the pattern.
    pub verification: Verification,
    /// The error that ended the connection, if it did not end with an orderly end of stream.
    pub error: Option<io::Error>,
    /// The sink was stopped (`--duration`, `--connections`, a signal) before the sender finished.
    pub interrupted: bool,
}

impl SinkReport {
    /// Average throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    fn new(peer: Option<SocketAddr>, role: SinkRole) -> Self {
        Self {
            peer,
            role,
            bytes: 0,
            elapsed: Duration::ZERO,
            verification: Verification::Off,
            error: None,
            interrupted: false,
        }
    }
}

impl std::fmt::Display for SinkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(p) => write!(f, "{p}")?,
            None => f.write_str("?")?,
        }
        match self.role {
            SinkRole::Plain => {}
            SinkRole::Iperf3Data { stream } => write!(f, " (iperf3 stream {stream})")?,
            SinkRole::Iperf3Test {
                streams,
                bytes,
                duration,
            } => {
                let secs = duration.as_secs_f64().max(1e-9);
                write!(
                    f,
                    " (iperf3 control): test of {streams} stream(s): {bytes} bytes in {:.3} s ({:.1} MB/s, {:.2} Gbit/s)",
                    duration.as_secs_f64(),
                    bytes as f64 / secs / 1e6,
                    bytes as f64 * 8.0 / secs / 1e9
                )?;
            }
        }
        if !matches!(self.role, SinkRole::Iperf3Test { .. }) {
            write!(
                f,
                ": {} bytes in {:.3} s ({:.1} MB/s)",
                self.bytes,
                self.elapsed.as_secs_f64(),
                self.mb_per_s()
            )?;
        }
        match self.verification {
            Verification::Off => {}
            Verification::Passed => f.write_str(", verified")?,
            Verification::Failed(m) => write!(f, ", VERIFICATION FAILED: {m}")?,
        }
        if let Some(e) = &self.error {
            write!(f, ", ended by an error: {e}")?;
        }
        if self.interrupted {
            f.write_str(", interrupted")?;
        }
        Ok(())
    }
}

/// Receives `stream` to its end, counting bytes (into `live` as they arrive, for progress
/// reports) and, with a seed, checking them against the [`Pattern`]. Every buffer is looked at
/// in place and dropped at once, returning its chunk to the pool.
pub async fn sink_connection(
    stream: &TcpStream,
    verify_seed: Option<u64>,
    live: &AtomicU64,
) -> SinkReport {
    let start = Instant::now();
    let mut verifier = verify_seed.map(PatternVerifier::new);
    let mut report = SinkReport::new(stream.peer_addr().ok(), SinkRole::Plain);
    report.error = loop {
        match stream.recv().await {
            Ok(Some(buf)) => {
                report.bytes += buf.len() as u64;
                live.fetch_add(buf.len() as u64, Ordering::Relaxed);
                if let Some(v) = verifier.as_mut() {
                    v.update(&buf);
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    report.elapsed = start.elapsed();
    report.verification = match verifier {
        None => Verification::Off,
        Some(v) => match v.mismatch() {
            None => Verification::Passed,
            Some(m) => Verification::Failed(m),
        },
    };
    report
}

/// Counters a sink shares across its threads.
#[derive(Debug, Default)]
pub struct SinkTotals {
    /// Data bytes received, updated as they arrive.
    pub bytes: AtomicU64,
    /// Connections accepted (iperf3 control connections included).
    pub accepted: AtomicU64,
    /// Data connections finished (plain senders and iperf3 streams, not iperf3 control
    /// connections).
    pub finished: AtomicU64,
    /// iperf3 control connections finished.
    pub control_finished: AtomicU64,
    /// Finished connections whose bytes did not match the pattern.
    pub verify_failures: AtomicU64,
    /// Finished connections that ended with an error instead of an orderly end of stream.
    pub errors: AtomicU64,
}

impl SinkTotals {
    /// Connections accepted and not yet finished.
    pub fn active(&self) -> u64 {
        let finished =
            self.finished.load(Ordering::Acquire) + self.control_finished.load(Ordering::Acquire);
        self.accepted
            .load(Ordering::Acquire)
            .saturating_sub(finished)
    }
}

/// How [`serve_sink`] treats its connections. Clones share the iperf3 test registry, so give
/// every runtime thread a clone of one config: an iperf3 test's control and data connections
/// may land on different threads.
#[derive(Debug, Clone, Default)]
pub struct SinkConfig {
    /// Verify every plain connection against the [`Pattern`] for this seed.
    pub verify: Option<u64>,
    /// Speak the server side of the iperf3 protocol, so that `iperf3 -c` (TCP, client sending:
    /// no `-R`, `--bidir` or `-u`) can drive the sink: each connection starts with an iperf3
    /// cookie; data streams are counted like plain connections, and each test's received
    /// bytes and time are reported back to the client, which prints them as the receiver's.
    pub iperf3: bool,
    tests: Arc<iperf3::Tests>,
}

impl SinkConfig {
    /// A config; see the fields.
    pub fn new(verify: Option<u64>, iperf3: bool) -> Self {
        Self {
            verify,
            iperf3,
            tests: Arc::default(),
        }
    }
}

/// Accepts senders on `listener` and runs each connection in its own task ([`sink_connection`],
/// or the iperf3 server protocol with [`SinkConfig::iperf3`]), calling `on_done` with each
/// connection's report. When the runtime's shutdown is requested it stops accepting, shuts
/// down the read side of the connections still open (so that they end, and report, at once,
/// marked as interrupted) and returns once all have reported.
pub async fn serve_sink<F>(
    listener: TcpListener,
    config: SinkConfig,
    totals: Arc<SinkTotals>,
    on_done: F,
) -> io::Result<()>
where
    F: Fn(SinkReport) + 'static,
{
    let config = Rc::new(config);
    let on_done = Rc::new(on_done);
    let open: Rc<RefCell<HashMap<u64, Rc<TcpStream>>>> = Rc::default();
    let stopping = Rc::new(Cell::new(false));
    let mut tasks = Vec::new();
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => Rc::new(s),
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => break,
            Err(e) => {
                eprintln!("sink: accept failed: {e}");
                zcrx::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        totals.accepted.fetch_add(1, Ordering::AcqRel);
        let id = next_id;
        next_id += 1;
        open.borrow_mut().insert(id, stream.clone());
        let (open, stopping, totals, on_done, config) = (
            open.clone(),
            stopping.clone(),
            totals.clone(),
            on_done.clone(),
            config.clone(),
        );
        tasks.retain(|t: &zcrx::JoinHandle<()>| !t.is_finished());
        tasks.push(zcrx::spawn(async move {
            let mut report = if config.iperf3 {
                iperf3::connection(&stream, &config.tests, &totals.bytes).await
            } else {
                sink_connection(&stream, config.verify, &totals.bytes).await
            };
            open.borrow_mut().remove(&id);
            report.interrupted = stopping.get();
            if matches!(report.verification, Verification::Failed(_)) {
                totals.verify_failures.fetch_add(1, Ordering::AcqRel);
            }
            if report.error.is_some() {
                totals.errors.fetch_add(1, Ordering::AcqRel);
            }
            if matches!(report.role, SinkRole::Iperf3Test { .. }) {
                totals.control_finished.fetch_add(1, Ordering::AcqRel);
            } else {
                totals.finished.fetch_add(1, Ordering::AcqRel);
            }
            on_done(report);
        }));
    }
    stopping.set(true);
    let still_open: Vec<Rc<TcpStream>> = open.borrow().values().cloned().collect();
    for s in still_open {
        // The receive then ends with an end of stream once the queued bytes are taken.
        let _ = s.shutdown(Shutdown::Read).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Just enough of the iperf3 server protocol (3.x, TCP, client sending) for `iperf3 -c` to drive
/// the sink.
///
/// Every connection starts with the client's 37-byte cookie. The first connection with a new
/// cookie is a test's control connection: the server asks for the parameters (`PARAM_EXCHANGE`,
/// then a 4-byte big-endian length and JSON), asks for the data streams (`CREATE_STREAMS`);
/// each data stream connects and sends the same cookie; then `TEST_START`, `TEST_RUNNING`; the
/// client sends until it says `TEST_END`; the server says `EXCHANGE_RESULTS`, reads the
/// client's results, sends its own (per stream: id, bytes, start and end time), says
/// `DISPLAY_RESULTS`, and the client ends with `IPERF_DONE`. Stream ids are 1, 3, 4, 5, ...
/// in the order the streams arrive, as iperf3 numbers them.
mod iperf3 {
    use super::*;
    use std::sync::Mutex;

    const COOKIE: usize = 37;
    const TEST_START: u8 = 1;
    const TEST_RUNNING: u8 = 2;
    const TEST_END: u8 = 4;
    const PARAM_EXCHANGE: u8 = 9;
    const CREATE_STREAMS: u8 = 10;
    const CLIENT_TERMINATE: u8 = 12;
    const EXCHANGE_RESULTS: u8 = 13;
    const DISPLAY_RESULTS: u8 = 14;
    const ACCESS_DENIED: u8 = (-1i8) as u8;
    /// How long each step before the test may take.
    const STEP: Duration = Duration::from_secs(10);

    /// One test: its data streams' byte counters, in arrival order.
    #[derive(Debug, Default)]
    pub(super) struct Test {
        expected: usize,
        streams: Mutex<Vec<Arc<AtomicU64>>>,
    }

    /// Tests in their stream-creation phase or running, by cookie.
    #[derive(Debug, Default)]
    pub(super) struct Tests(Mutex<HashMap<[u8; COOKIE], Arc<Test>>>);

    impl Tests {
        fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; COOKIE], Arc<Test>>> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// A new data stream for the test with this cookie, if one is waiting for streams:
        /// its id and counter.
        fn join(&self, cookie: &[u8; COOKIE]) -> Option<(u32, Arc<AtomicU64>)> {
            let test = self.lock().get(cookie)?.clone();
            let mut streams = test.streams.lock().unwrap_or_else(|e| e.into_inner());
            if streams.len() >= test.expected {
                return None;
            }
            let counter = Arc::new(AtomicU64::new(0));
            streams.push(counter.clone());
            let n = streams.len() as u32;
            Some((if n == 1 { 1 } else { n + 1 }, counter))
        }
    }

    /// Removes a test from the registry when its control connection ends, however it ends.
    struct Registered<'a> {
        tests: &'a Tests,
        cookie: [u8; COOKIE],
    }

    impl Drop for Registered<'_> {
        fn drop(&mut self) {
            self.tests.lock().remove(&self.cookie);
        }
    }

    /// Reads exact amounts from a stream, keeping what arrived beyond them.
    struct Reader<'a> {
        stream: &'a TcpStream,
        pending: Vec<u8>,
    }

    impl Reader<'_> {
        async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
            while self.pending.len() < n {
                match self.stream.recv().await? {
                    Some(buf) => self.pending.extend_from_slice(&buf),
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the iperf3 client closed the connection",
                        ))
                    }
                }
            }
            let rest = self.pending.split_off(n);
            Ok(std::mem::replace(&mut self.pending, rest))
        }

        async fn read_step(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
            match zcrx::time::timeout(STEP, self.read_exact(n)).await {
                Ok(r) => r.map_err(|e| context(e, format!("iperf3: reading {what}"))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("iperf3: no {what} within {STEP:?}"),
                )),
            }
        }

        async fn read_json(&mut self, what: &str) -> io::Result<serde_json::Value> {
            let len = self.read_step(4, what).await?;
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            if len > 1 << 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("iperf3: {what} of {len} bytes: not an iperf3 client?"),
                ));
            }
            let json = self.read_step(len, what).await?;
            serde_json::from_slice(&json).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("iperf3: {what} are not JSON ({e}): not an iperf3 client?"),
                )
            })
        }
    }

    /// `"key": true` (or a non-zero number) in iperf3's JSON.
    fn json_flag(json: &serde_json::Value, key: &str) -> bool {
        match json.get(key) {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
            _ => false,
        }
    }

    /// Serves one connection of an iperf3 client: a data stream or a test's control connection.
    pub(super) async fn connection(
        stream: &TcpStream,
        tests: &Tests,
        live: &AtomicU64,
    ) -> SinkReport {
        let start = Instant::now();
        let peer = stream.peer_addr().ok();
        let mut rd = Reader {
            stream,
            pending: Vec::new(),
        };
        let cookie: [u8; COOKIE] = match rd.read_step(COOKIE, "the cookie").await {
            Ok(c) => c.try_into().expect("cookie size"),
            Err(e) => {
                let mut r = SinkReport::new(peer, SinkRole::Plain);
                r.error = Some(e);
                r.elapsed = start.elapsed();
                return r;
            }
        };
        if let Some((id, counter)) = tests.join(&cookie) {
            // A data stream: count everything after the cookie.
            let mut r = SinkReport::new(peer, SinkRole::Iperf3Data { stream: id });
            let first = std::mem::take(&mut rd.pending).len() as u64;
            counter.fetch_add(first, Ordering::Relaxed);
            live.fetch_add(first, Ordering::Relaxed);
            r.bytes = first;
            r.error = loop {
                match stream.recv().await {
                    Ok(Some(buf)) => {
                        let n = buf.len() as u64;
                        r.bytes += n;
                        counter.fetch_add(n, Ordering::Relaxed);
                        live.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            r.elapsed = start.elapsed();
            return r;
        }
        let mut r = SinkReport::new(
            peer,
            SinkRole::Iperf3Test {
                streams: 0,
                bytes: 0,
                duration: Duration::ZERO,
            },
        );
        if let Err(e) = control(stream, &mut rd, cookie, tests, &mut r).await {
            r.error = Some(e);
        }
        r.elapsed = start.elapsed();
        r
    }

    async fn send_state(stream: &TcpStream, state: u8) -> io::Result<()> {
        stream
            .send_all(&[state])
            .await
            .map_err(|e| context(e, "iperf3: sending a state to the client".into()))
    }

    async fn control(
        stream: &TcpStream,
        rd: &mut Reader<'_>,
        cookie: [u8; COOKIE],
        tests: &Tests,
        report: &mut SinkReport,
    ) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        send_state(stream, PARAM_EXCHANGE).await?;
        let params = rd.read_json("the test parameters").await?;
        for unsupported in ["reverse", "bidirectional", "udp", "sctp"] {
            if json_flag(&params, unsupported) {
                let _ = send_state(stream, ACCESS_DENIED).await;
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "iperf3: the client asked for {unsupported}; the sink only receives TCP sent by the client"
                    ),
                ));
            }
        }
        let parallel = params
            .get("parallel")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1)
            .clamp(1, 128) as usize;
        let test = Arc::new(Test {
            expected: parallel,
            streams: Mutex::default(),
        });
        tests.lock().insert(cookie, test.clone());
        let _registered = Registered { tests, cookie };
        send_state(stream, CREATE_STREAMS).await?;
        let deadline = Instant::now() + STEP;
        while test.streams.lock().unwrap_or_else(|e| e.into_inner()).len() < parallel {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "iperf3: the {parallel} data stream(s) did not all connect within {STEP:?}"
                    ),
                ));
            }
            zcrx::time::sleep(Duration::from_millis(2)).await;
        }
        send_state(stream, TEST_START).await?;
        send_state(stream, TEST_RUNNING).await?;
        let started = Instant::now();
        // The client sends nothing on the control connection until the end of the test.
        loop {
            let state = rd
                .read_exact(1)
                .await
                .map_err(|e| context(e, "iperf3: waiting for the end of the test".into()))?[0];
            match state {
                TEST_END => break,
                CLIENT_TERMINATE => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "iperf3: the client terminated the test",
                    ))
                }
                _ => {}
            }
        }
        let duration = started.elapsed();
        let counts: Vec<u64> = test
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        report.role = SinkRole::Iperf3Test {
            streams: counts.len() as u32,
            bytes: counts.iter().sum(),
            duration,
        };
        send_state(stream, EXCHANGE_RESULTS).await?;
        let _client_results = rd.read_json("the client's results").await?;
        let secs = duration.as_secs_f64();
        let streams: Vec<serde_json::Value> = counts
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                serde_json::json!({
                    "id": if i == 0 { 1 } else { i + 2 },
                    "bytes": bytes,
                    "retransmits": -1,
                    "jitter": 0,
                    "errors": 0,
                    "omitted_errors": 0,
                    "packets": 0,
                    "omitted_packets": 0,
                    "start_time": 0,
                    "end_time": secs,
                })
            })
            .collect();
        let results = serde_json::json!({
            "cpu_util_total": 0,
            "cpu_util_user": 0,
            "cpu_util_system": 0,
            "sender_has_retransmits": -1,
            "streams": streams,
        })
        .to_string();
        let mut msg = (results.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(results.as_bytes());
        stream
            .send_all(&msg)
            .await
            .map_err(|e| context(e, "iperf3: sending the results".into()))?;
        send_state(stream, DISPLAY_RESULTS).await?;
        // IPERF_DONE, or the client just closes.
        let _ = rd.read_step(1, "IPERF_DONE").await;
        Ok(())
    }
}

// ---- command lines ------------------------------------------------------------------------------

/// `clap` value parsers shared by the examples, with messages that say what is expected.
pub mod cli {
    use std::net::{SocketAddr, ToSocketAddrs};

    /// `ADDR:PORT` or `HOST:PORT` (resolved now; the first address is used).
    pub fn socket_addr(s: &str) -> Result<SocketAddr, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a);
        }
        if !s.contains(':') {
            return Err(format!(
                "'{s}' has no port: expected ADDR:PORT, e.g. 127.0.0.1:7000 or [::1]:7000"
            ));
        }
        match s.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .ok_or_else(|| format!("'{s}' resolved to no address")),
            Err(e) => Err(format!(
                "'{s}' is not ADDR:PORT and does not resolve as HOST:PORT ({e})"
            )),
        }
    }

    /// A receive chunk size: a power of two from 4096 to 1048576 bytes; accepts a `K`/`M`
    /// suffix (`32K`, `1M`).
    pub fn chunk_size(s: &str) -> Result<usize, String> {
        let t = s.trim();
        let (num, mult) = match t.as_bytes().last() {
            Some(b'k' | b'K') => (&t[..t.len() - 1], 1024),
            Some(b'm' | b'M') => (&t[..t.len() - 1], 1024 * 1024),
            _ => (t, 1),
        };
        let n: usize = num
            .parse()
            .map_err(|_| format!("'{s}' is not a number of bytes (e.g. 32768 or 32K)"))?;
        let n = n
            .checked_mul(mult)
            .ok_or_else(|| format!("'{s}' is too large"))?;
        let (min, max) = (
            zcrx_ifq::area::MIN_CHUNK_SIZE,
            zcrx_ifq::area::MAX_CHUNK_SIZE,
        );
        if !n.is_power_of_two() || !(min..=max).contains(&n) {
            return Err(format!(
                "{n} bytes is not a power of two from {min} to {max} (4K .. 1M)"
            ));
        }
        Ok(n)
    }

    /// Receive chunks per thread: 1 to 32768 (the largest buffer ring).
    pub fn chunks(s: &str) -> Result<usize, String> {
        let max = zcrx_ifq::bufring::MAX_ENTRIES;
        let n: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number"))?;
        if !(1..=max).contains(&n) {
            return Err(format!("{n} chunks: expected 1 to {max}"));
        }
        Ok(n)
    }

    /// A positive number of seconds (fractions allowed).
    pub fn seconds(s: &str) -> Result<std::time::Duration, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number of seconds"))?;
        if !(v.is_finite() && v > 0.0 && v <= 1e9) {
            return Err(format!("'{s}': expected a positive number of seconds"));
        }
        Ok(std::time::Duration::from_secs_f64(v))
    }

    /// Where zcrx receives: `nodev` (zcrx without a device, Linux 7.1+), or a NIC receive queue,
    /// `IFNAME:QUEUE` (`eth0:4`): the interface name is checked the way the kernel will (1 to
    /// 15 bytes, no `/`, no whitespace, no NUL), the queue is a number.
    pub fn zcrx_target(s: &str) -> Result<zcrx::ZcrxTarget, String> {
        if s == "nodev" {
            return Ok(zcrx::ZcrxTarget::NoDevice);
        }
        let Some((name, queue)) = s.rsplit_once(':') else {
            return Err(format!(
                "'{s}' is not IFNAME:QUEUE (e.g. eth0:4; `ethtool -l IFNAME` shows the queues) \
                 or nodev (zcrx without a device)"
            ));
        };
        zcrx_ifq::zcrx::validate_ifname(name).map_err(|e| e.to_string())?;
        let queue = queue
            .parse()
            .map_err(|_| format!("'{queue}' in '{s}' is not a queue number"))?;
        Ok(zcrx::ZcrxTarget::Queue {
            ifname: name.to_string(),
            queue,
        })
    }

    /// Sends the `tracing` events of the runtime (`zcrx`) and the interface queue (`zcrx_ifq`)
    /// to stderr, filtered by `RUST_LOG` (default `info`: warnings such as a fallback to the
    /// buffer ring, and what a shutdown left behind). `RUST_LOG=zcrx=debug` also shows which
    /// receive backend each runtime thread chose and why; `RUST_LOG=zcrx=trace` every pause,
    /// cap and depth change. Call once, first thing in `main`.
    pub fn init_tracing() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // A second call (or another subscriber already installed) changes nothing.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .without_time()
            .try_init();
    }

    /// The runtime flags `echo`, `proxy` and `sink` share; [`builder`](Self::builder) applies
    /// them.
    #[derive(clap::Args, Debug, Clone)]
    pub struct RuntimeArgs {
        /// Runtime threads (one listener each, SO_REUSEPORT), 1 to 256.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        pub threads: u16,
        /// Receive chunks per thread (1 to 32768).
        #[arg(long, default_value = "256", value_parser = chunks)]
        pub chunks: usize,
        /// Receive chunk size in bytes: a power of two from 4096 to 1048576 (K and M suffixes work).
        #[arg(long, default_value = "32K", value_parser = chunk_size)]
        pub chunk_size: usize,
        /// Receive with zcrx on this NIC queue (IFNAME:QUEUE; thread i uses QUEUE + i; needs a
        /// zcrx-capable NIC with header/data split and flow steering), or without a device
        /// (nodev: Linux 7.1+, any TCP socket, the kernel copies). Either needs CAP_NET_ADMIN.
        #[arg(long, value_name = "IFNAME:QUEUE|nodev", value_parser = zcrx_target)]
        pub zcrx: Option<zcrx::ZcrxTarget>,
        /// Receive backend: auto tries zcrx on --zcrx (a NIC queue or nodev) and falls back to
        /// the buffer ring, saying why once; without --zcrx it runs the buffer ring.
        #[arg(long, value_enum, default_value = "auto", requires_if("zcrx", "zcrx"))]
        pub backend: Backend,
        /// Fix how many chunks the buffer ring keeps posted at once (default: the runtime adapts
        /// it every loop turn); the rest wait in the pool, most recently used first.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
              conflicts_with = "all_posted")]
        pub max_posted: Option<u32>,
        /// Keep every chunk posted to the buffer ring, as a plain buffer ring does.
        #[arg(long)]
        pub all_posted: bool,
    }

    impl RuntimeArgs {
        /// A runtime builder with these threads, pool and backend.
        pub fn builder(&self) -> zcrx::Builder {
            let mut b = zcrx::Runtime::builder()
                .threads(self.threads.into())
                .chunks(self.chunks)
                .chunk_size(self.chunk_size)
                .rx_backend(self.backend.into())
                .adaptive_depth(!self.all_posted && self.max_posted.is_none());
            if let Some(n) = self.max_posted {
                b = b.max_posted(n);
            }
            match &self.zcrx {
                Some(target) => b.zcrx(target.clone()),
                None => b,
            }
        }
    }

    /// The receive backend, for `--backend`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
    pub enum Backend {
        /// zcrx on `--zcrx` if the kernel, NIC and privileges allow it, else the buffer ring
        /// (saying why, once).
        Auto,
        /// The provided buffer ring (copies into the pool; works on every NIC).
        Bufring,
        /// zcrx on `--zcrx` (a NIC queue or nodev), or fail.
        Zcrx,
    }

    impl From<Backend> for zcrx::RxBackend {
        fn from(b: Backend) -> Self {
            match b {
                Backend::Auto => zcrx::RxBackend::Auto,
                Backend::Bufring => zcrx::RxBackend::BufRing,
                Backend::Zcrx => zcrx::RxBackend::Zcrx,
            }
        }
    }

    /// A 64-bit seed, decimal or `0x` hexadecimal.
    pub fn seed(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => t.parse(),
        };
        r.map_err(|_| format!("'{s}' is not a 64-bit seed (decimal or 0x hex)"))
    }

    /// A byte count with an optional `K`, `M` or `G` suffix (powers of 1024).
    pub fn bytes(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let (num, mult) = match t.as_bytes().last() {
            Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
            Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
            Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
            _ => (t, 1),
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| format!("'{s}' is not a byte count (e.g. 1048576, 512K, 100M, 2G)"))
    }
}
