//! The receiver side: a child process that serves one scenario with one contender and reports
//! what it measured on stdout.
//!
//! Protocol (one line each, on stdout): `READY <port>` once listening; for the idle scenario
//! `ARMED <n>` once n connections are accepted with a receive armed; finally
//! `DONE <bytes> <cpu_ns> <wall_ns>` when every expected connection has closed.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::Scenario;

/// Per-connection receive buffer for contenders that need one (the same size as our chunks).
pub const CONN_BUF: usize = 32 * 1024;

/// Process CPU time (user + system) in nanoseconds.
pub fn cpu_ns() -> u64 {
    // SAFETY: `rusage` is plain data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-parameter for getrusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Shared bookkeeping of a serving child; contenders call it from any thread.
pub struct Tally {
    pub scenario: Scenario,
    pub expected: usize,
    bytes: AtomicU64,
    accepted: AtomicUsize,
    closed: AtomicUsize,
    start: OnceLock<(Instant, u64)>,
}

impl Tally {
    pub fn new(scenario: Scenario, expected: usize) -> Arc<Self> {
        Arc::new(Self {
            scenario,
            expected,
            bytes: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            start: OnceLock::new(),
        })
    }

    /// Whether received bytes are echoed back (ping-pong) or only counted.
    pub fn echo(&self) -> bool {
        self.scenario == Scenario::PingPong
    }

    pub fn accepted(&self) {
        self.start.get_or_init(|| (Instant::now(), cpu_ns()));
        let n = self.accepted.fetch_add(1, Ordering::AcqRel) + 1;
        if self.scenario == Scenario::Idle && n == self.expected {
            println!("ARMED {n}");
        }
    }

    #[inline]
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A connection ended; the last one ends the process with the report.
    pub fn closed(&self) {
        let n = self.closed.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.expected {
            let (t0, c0) = *self.start.get().expect("accepted before closed");
            let wall = t0.elapsed().as_nanos() as u64;
            let cpu = cpu_ns() - c0;
            println!(
                "DONE {} {} {}",
                self.bytes.load(Ordering::Relaxed),
                cpu,
                wall
            );
            std::process::exit(0);
        }
    }
}

pub fn listen() -> std::io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
}

/// Tells the parent to start sending: called by each contender once its runtime is built and it
/// is about to accept. Data that arrives before then piles up in the sockets, and a receiver
/// that starts behind a backlog can stay behind for the whole run (`docs/benchmarks.md`), so
/// announcing before the set-up would measure the set-up.
pub fn ready(l: &TcpListener) -> std::io::Result<()> {
    println!("READY {}", l.local_addr()?.port());
    Ok(())
}
