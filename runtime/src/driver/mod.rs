//! The io_uring driver of one thread: the ring, in-flight requests, per-connection receive
//! state over the thread's interface queue (`crate::rx`), and timers.
//!
//! - `ops.rs`: single-shot requests (connect, sends, shutdown) and the resources they own;
//! - `recv.rs`: connections, each with one multishot receive into the pool;
//! - `budget.rs`: how capped receives share the pool (pure policy, no ring);
//! - `accept.rs`: listeners, each with one multishot accept;
//! - `timers.rs`: the deadlines the loop waits for;
//! - `turn.rs`: one loop turn, and where each completion goes;
//! - `shutdown.rs`: cancel everything, wait for the kernel, tear the pool down;
//! - here: the `user_data` tags, the counters, the driver's state and set-up, and the push of a
//!   request onto the submission queue.
//!
//! Every request's `user_data` is `tag << 56 | key`. What a request points at (buffers, socket
//! addresses, the fd itself through an `Rc<OwnedFd>`) is a `sys::request::Owned` that the ring
//! keeps until the kernel's final completion for it and then hands back: a future that is
//! dropped early only marks its slot orphaned and asks the kernel to cancel, so nothing the
//! kernel may still touch is freed and no fd it may still use is closed or reused.

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use slab::Slab;

use crate::config::Config;
use crate::depth::{self, Depth};
use crate::rx::{Rx, RxStats};
use crate::sys::request::{Owned, Plain};
use crate::sys::ring::{Cqe, Ring};
use crate::waker;

mod accept;
mod budget;
mod ops;
mod recv;
mod shutdown;
mod timers;
mod turn;

use accept::Listener;
use budget::Budgets;
use ops::OpSlot;
use recv::Conn;
use timers::Timers;

// What a completion is for: the top byte of its `user_data` (`dispatch` in `turn.rs`).
const TAG_SHIFT: u32 = 56;
const KEY_MASK: u64 = (1 << TAG_SHIFT) - 1;
const TAG_OP: u64 = 1;
const TAG_RECV: u64 = 2;
const TAG_ACCEPT: u64 = 3;
const TAG_IGNORE: u64 = 4;
const TAG_WAKE: u64 = 5;
const TAG_ZCRX_EVENT: u64 = 6;

/// The `user_data` of the zcrx queue's event CQEs (Linux 7.2+), which are no request's.
const ZCRX_EVENTS: u64 = TAG_ZCRX_EVENT << TAG_SHIFT;

fn ud(tag: u64, key: usize) -> u64 {
    tag << TAG_SHIFT | key as u64
}

/// Driver counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Multishot receives armed (first arm and re-arms).
    pub recv_arms: u64,
    /// Receives that ended for lack of buffers (`-ENOBUFS`).
    pub no_buffers: u64,
    /// Receives ended by a completion-queue overflow.
    pub cq_overflows: u64,
    /// Receives paused because their connection held too many bytes.
    pub backpressure_pauses: u64,
    /// Receives that waited because the free pool was promised to other connections.
    pub pool_waits: u64,
    /// Cancellation requests sent for dropped operations.
    pub cancels: u64,
    /// Waits that coalesced completions because bulk data was flowing (see
    /// [`Builder::coalesce`](crate::Builder::coalesce)).
    pub coalesced_waits: u64,
    /// Times the buffer ring's depth doubled because receives found it empty (see
    /// [`Builder::adaptive_depth`](crate::Builder::adaptive_depth)).
    pub depth_raises: u64,
    /// Times the buffer ring's depth came down: a probe after a window of turns in which no
    /// receive found it empty, or a cut after turns that each used less than half of it.
    pub depth_cuts: u64,
    /// Times a buffer dropped on another thread woke the loop while connections waited for
    /// buffers.
    pub return_wakes: u64,
    /// zcrx receives that ended because their byte cap was spent (re-armed; the buffer ring's
    /// capped receives end with their last data and are not counted here).
    pub caps_reached: u64,
}

/// One thread's driver.
pub(crate) struct Driver {
    ring: Ring,
    ops: Slab<OpSlot>,
    conns: Slab<Conn>,
    listeners: Slab<Listener>,
    rx: Option<Rx>,
    /// Which receive backend runs, in words.
    pub(crate) backend: String,
    timers: Timers,
    rearm: Vec<usize>,
    paused: Vec<usize>,
    /// Receives that ended with `-ENOBUFS`: re-armed once the ring has buffers again.
    starved: Vec<usize>,
    /// zcrx receives the full CQ ended (`-ENOSPC`): re-armed a few a turn (`overflow_quota`),
    /// and only once the kernel holds no overflowed completions. zcrx posts its data in extra
    /// completions that, unlike a request's last one, cannot wait in the kernel's overflow
    /// list: with more receives armed than the CQ holds, the `-ENOSPC` ends of the others fill
    /// it before any data fits, every receive re-armed at once ends the same way, and no byte
    /// moves (16 flows with a 4-entry CQ: 600,000 re-arms in 5 s, nothing received).
    overflowed: Vec<usize>,
    overflow_quota: usize,
    /// Times a buffer dropped on another thread woke the loop (the receive pool's return
    /// waker counts them, on the dropping thread).
    return_wakes: Arc<AtomicU64>,
    wake_fd: Rc<OwnedFd>,
    /// The eventfd read is in flight.
    wake_armed: bool,
    /// The eventfd read's request, back from its last completion: re-armed without a new
    /// allocation.
    wake_req: Option<Box<Owned>>,
    /// `shutdown` runs: the eventfd read is cancelled and not armed again, so that nothing the
    /// ring owns is left in flight when it goes.
    closing: bool,
    /// Completion coalescing while bulk data flows: (most completions awaited, minimum wait in
    /// microseconds); `(1, 0)` when off or unsupported.
    batch: (u32, u32),
    /// A receive filled `bulk_len` bytes since the last wait: bulk data is flowing, coalesce.
    bulk: bool,
    /// A whole chunk, or 16 KiB if chunks are larger.
    bulk_len: u64,
    next_owner: u32,
    cqes: Vec<Cqe>,
    stopping: bool,
    /// The kernel caps multishot receives (`IORING_RECV_MSHOT_LIM`, 6.17+); cleared on the
    /// first `EINVAL`, after which back-pressure relies on cancelling.
    capped_recv: bool,
    /// How capped receives share the pool (`budget.rs`), and what armed ones were promised.
    budget: Budgets,
    /// Connections whose stream is alive (for the fair share).
    live_conns: usize,
    /// The buffer ring's depth, adapted each turn (`Builder::adaptive_depth`; `None`: fixed,
    /// or zcrx).
    depth: Option<Depth>,
    /// Chunks posted right after the last flush, and `no_buffers` then: what the next turn's
    /// depth decision compares against.
    posted_at_flush: u32,
    no_buffers_at_flush: u64,
    /// The zcrx queue posted its out-of-buffers event, which waits to be re-armed until
    /// buffers come back.
    zcrx_out_of_buffers: bool,
    pub(crate) stats: DriverStats,
}

impl Driver {
    /// The counters, with the wake-ups other threads counted.
    pub(crate) fn stats(&self) -> DriverStats {
        DriverStats {
            return_wakes: self.return_wakes.load(Ordering::Relaxed),
            ..self.stats
        }
    }

    pub(crate) fn new(config: &Config, index: usize, wake_fd: Rc<OwnedFd>) -> io::Result<Self> {
        // Where an adaptive buffer ring starts: the one place both the ring's set-up and the
        // depth controller read it from.
        let depth_floor = config
            .adapts_depth()
            .then(|| depth::floor(config.chunk_size as u64, config.chunks as u64));
        let (ring, mut rx, backend) = Rx::setup(config, index, depth_floor, ZCRX_EVENTS)?;
        // A connection waiting for buffers the application holds on another thread must not
        // wait for some unrelated event: the drop that returns one pokes the loop's eventfd.
        let return_wakes = Arc::new(AtomicU64::new(0));
        let poke = waker::poker(&wake_fd)?;
        let count = return_wakes.clone();
        rx.set_return_waker(move || {
            count.fetch_add(1, Ordering::Relaxed);
            poke();
        });
        let (chunk, chunks) = rx.geometry();
        // An adaptive buffer ring starts at its floor (`Rx::setup`) and follows what the turns
        // take.
        let depth = depth_floor
            .filter(|_| rx.has_depth())
            .map(|floor| Depth::new(floor, chunks as u32));
        let crate::config::Coalesce { delay, completions } = config.coalesce;
        let asked = !delay.is_zero() && completions > 1;
        let batch = if ring.has_min_wait() && asked {
            (completions, delay.as_micros().clamp(1, 1_000_000) as u32)
        } else {
            (1, 0)
        };
        if asked && !ring.has_min_wait() {
            tracing::debug!(
                thread = index,
                "completion coalescing off: this kernel has no minimum wait \
                 (IORING_FEAT_MIN_TIMEOUT, Linux 6.13+)"
            );
        }
        Ok(Self {
            ring,
            ops: Slab::with_capacity(256),
            conns: Slab::new(),
            listeners: Slab::new(),
            rx: Some(rx),
            backend,
            timers: Timers::default(),
            rearm: Vec::new(),
            paused: Vec::new(),
            starved: Vec::new(),
            overflowed: Vec::new(),
            overflow_quota: (config.cq_entries as usize / 4).max(1),
            return_wakes,
            wake_fd,
            wake_armed: false,
            wake_req: None,
            closing: false,
            batch,
            bulk: false,
            bulk_len: chunk.min(16 * 1024),
            next_owner: 1,
            cqes: Vec::with_capacity(config.cq_entries as usize),
            stopping: false,
            capped_recv: true,
            budget: Budgets::new(
                chunk,
                chunks,
                // `Builder::conn_limit`; the pool enforces it too.
                config.conn_limit,
                // 16 of the chunks asked for, also under zcrx, whose pool is split into pages.
                16 * config.chunk_size as u64,
                config.incremental,
            ),
            live_conns: 0,
            depth,
            posted_at_flush: 0,
            no_buffers_at_flush: 0,
            zcrx_out_of_buffers: false,
            stats: DriverStats::default(),
        })
    }

    /// Pushes a request that points at no memory.
    fn push(&mut self, user_data: u64, req: Plain) {
        while !self.ring.push(user_data, &req) {
            self.make_room();
        }
    }

    /// Pushes a request that points into what it owns; the ring keeps that until the final
    /// completion and hands it back with it.
    fn push_owned(&mut self, user_data: u64, req: Owned) {
        self.push_boxed(user_data, Box::new(req));
    }

    /// `push_owned` of a request already boxed (one that came back from an earlier completion).
    fn push_boxed(&mut self, user_data: u64, mut req: Box<Owned>) {
        while let Err(r) = self.ring.push_owned(user_data, req) {
            req = r;
            self.make_room();
        }
    }

    /// The submission queue is full: hands it to the kernel (reaping completions if the
    /// kernel asks for room in the completion queue first).
    fn make_room(&mut self) {
        if let Err(e) = self.ring.submit() {
            if e.raw_os_error() != Some(rustix::io::Errno::BUSY.raw_os_error()) {
                panic!("io_uring submit failed: {e}");
            }
            self.reap_into_buffer();
        }
    }

    /// Moves the completions the kernel posted into `cqes`, for `dispatch`.
    fn reap_into_buffer(&mut self) {
        self.ring.drain(&mut self.cqes);
    }

    /// Who holds what in this thread's receive pool.
    pub(crate) fn rx_snapshot(&self) -> Option<zcrx_ifq::Snapshot> {
        self.rx.as_ref().map(|rx| rx.snapshot())
    }

    /// The receive pool's counters.
    pub(crate) fn rx_stats(&self) -> Option<RxStats> {
        self.rx.as_ref().map(|rx| rx.stats())
    }
}
