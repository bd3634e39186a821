//! The counting, optionally verifying receive loop behind `--example sink`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zcrx::net::{TcpListener, TcpStream};

use crate::*;

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

    pub(crate) fn new(peer: Option<SocketAddr>, role: SinkRole) -> Self {
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
