//! The io_uring driver of one thread: the ring, in-flight operations, per-connection receive
//! state over the thread's interface queue, and timers.
//!
//! Every request's `user_data` is `tag << 56 | key`. Resources a request uses (buffers, socket
//! addresses, the fd itself through an `Rc<OwnedFd>`) are owned by its slot until the kernel's
//! final completion for it: a future that is dropped early only marks its slot orphaned and asks
//! the kernel to cancel, so nothing the kernel may still touch is freed and no fd it may still
//! use is closed or reused.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;
use zcrx_ifq::completion::CQE_F_MORE;
use zcrx_ifq::io_uring::{opcode, squeue, types};
use zcrx_ifq::zcrx::ZcrxEvent;
use zcrx_ifq::{OwnerId, RecvEvent, RxBuf, TeardownReport};

use crate::config::Config;
use crate::depth::{self, Change, Depth};
use crate::ring::{Cqe, Ring};
use crate::rx::{Rx, RxStats};
use crate::waker;

mod accept;
mod budget;
mod ops;
mod timers;

use accept::Listener;
use budget::{Arm, Budgets, Footprint};
use ops::OpSlot;
use timers::Timers;

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

/// Receive state of one connection.
pub(crate) struct Conn {
    fd: Rc<OwnedFd>,
    owner: OwnerId,
    queue: VecDeque<RxBuf>,
    eof: bool,
    error: Option<io::Error>,
    armed: bool,
    cancelling: bool,
    /// Waiting for buffers: over its limit, or the pool is promised to others.
    paused: bool,
    /// What the armed receive may still take (0 when uncapped or not armed), in what it takes
    /// from the pool (whole chunks unless incremental).
    budget_left: u64,
    /// Bytes the kernel may still deliver on the armed receive before its cap ends it (`None`:
    /// uncapped or not armed). zcrx ends a capped receive with a 0-byte completion, which is
    /// also how it reports the end of the stream: one that comes when this is down to 0 is the
    /// cap (the kernel stops at the cap before it looks for the end), any other is the end.
    cap_left: Option<u32>,
    /// The `TcpStream` is gone: finish the receive, drop what arrives, then free the slot.
    dropped: bool,
    waker: Option<Waker>,
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
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
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
        let (delay, completions) = config.coalesce;
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
            wake_buf: Box::new([0; 8]),
            wake_armed: false,
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

    /// Pushes a request. The caller guarantees what the entry points at lives until its final
    /// completion (it is owned by a slot of this driver).
    fn push(&mut self, sqe: &squeue::Entry) {
        loop {
            // SAFETY: every pointer in `sqe` refers to memory owned by an op slot, a connection,
            // a listener or this driver, none of which is freed before the request's final
            // completion has been reaped (see the module docs).
            if unsafe { self.ring.push(sqe) } {
                return;
            }
            // The submission queue is full: hand it to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(rustix::io::Errno::BUSY.raw_os_error()) {
                    panic!("io_uring submit failed: {e}");
                }
                self.reap_into_buffer();
            }
        }
    }

    // ---- connections --------------------------------------------------------------------------

    /// Registers a connected socket and arms its multishot receive.
    pub(crate) fn add_conn(&mut self, fd: Rc<OwnedFd>) -> usize {
        let owner = OwnerId(self.next_owner);
        self.next_owner = self.next_owner.wrapping_add(1).max(1);
        let key = self.conns.insert(Conn {
            fd,
            owner,
            queue: VecDeque::new(),
            eof: false,
            error: None,
            armed: false,
            cancelling: false,
            paused: false,
            budget_left: 0,
            cap_left: None,
            dropped: false,
            waker: None,
        });
        self.live_conns += 1;
        // Armed in `prepare`, before the next submission, behind connections that already wait.
        self.rearm.push(key);
        key
    }

    fn arm_recv(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.armed || conn.dropped || conn.eof || conn.error.is_some() {
            return;
        }
        let fd = conn.fd.as_raw_fd();
        let owner = conn.owner;
        let rx = self.rx.as_ref().expect("interface queue present");
        let budget = if self.capped_recv && rx.can_cap() {
            // Arm with a byte budget the kernel enforces (the receive ends when it is spent): the
            // least of the connection's room under its limit, its fair share, and what is free
            // and unpromised, less the reserve if it holds buffers (`budget.rs`).
            let f = self.footprint(rx, owner);
            match self.budget.arm(f, self.live_conns) {
                Arm::Budget(budget) => budget,
                Arm::Wait { over_limit } => {
                    self.pause(key, over_limit);
                    return;
                }
            }
        } else {
            // No kernel cap: back-pressure by cancelling (see `complete_recv`).
            if rx.over_limit(owner) {
                self.pause(key, true);
                return;
            }
            0
        };
        let sqe = rx.recv(fd, budget).user_data(ud(TAG_RECV, key));
        let conn = &mut self.conns[key];
        conn.armed = true;
        conn.paused = false;
        conn.budget_left = u64::from(budget);
        conn.cap_left = (budget > 0).then_some(budget);
        self.stats.recv_arms += 1;
        self.push(&sqe);
    }

    /// What a connection keeps out of the pool, and what the pool has free: what the
    /// capped-receive rules (`arm_recv`, `stop_if_overdrawn`) decide on.
    fn footprint(&self, rx: &Rx, owner: OwnerId) -> Footprint {
        Footprint {
            held: rx.owner_footprint(owner, self.budget.incremental()),
            free: u64::from(rx.available()) * self.budget.chunk(),
        }
    }

    /// Parks a connection until buffers come back; `over_limit` says whether it is its own fault
    /// (counted as back-pressure) or the pool's.
    fn pause(&mut self, key: usize, over_limit: bool) {
        let conn = &mut self.conns[key];
        if !conn.paused {
            conn.paused = true;
            if over_limit {
                self.stats.backpressure_pauses += 1;
                tracing::trace!(conn = key, "receive paused: the connection holds its limit");
            } else {
                self.stats.pool_waits += 1;
                tracing::trace!(
                    conn = key,
                    "receive waits: the free pool is promised to others"
                );
            }
        }
        self.paused.push(key);
    }

    /// Bytes arrived on (or the end of) a capped receive: release that much of its promise.
    fn spend(&mut self, key: usize, bytes: u64, ended: bool) {
        let conn = &mut self.conns[key];
        conn.budget_left = self.budget.spend(conn.budget_left, bytes, ended);
    }

    /// A capped receive whose promise is spent keeps receiving until the kernel's byte cap: with
    /// small segments every completion takes a whole chunk, so a trickle (one byte per segment)
    /// would take a chunk per byte, the whole pool within a budget meant for a few chunks. Once
    /// the promise is spent, stop the receive if its connection holds its limit or, holding
    /// anything, is eating into the reserve; the re-arm (or the pause) then starts from what the
    /// connection really holds. A connection whose buffers are dropped promptly (small
    /// messages) is left alone: it takes chunks, but gives them back.
    fn stop_if_overdrawn(&mut self, key: usize) {
        let conn = &self.conns[key];
        if !self.capped_recv || conn.budget_left > 0 || conn.cancelling || conn.dropped {
            return;
        }
        let Some(rx) = self.rx.as_ref().filter(|rx| rx.can_cap()) else {
            return;
        };
        if !self.budget.overdrawn(self.footprint(rx, conn.owner)) {
            return;
        }
        self.conns[key].cancelling = true;
        self.push(
            &opcode::AsyncCancel::new(ud(TAG_RECV, key))
                .build()
                .user_data(ud(TAG_IGNORE, 0)),
        );
    }

    /// Next received buffer: `Ready(Ok(Some))` data, `Ready(Ok(None))` end of stream.
    pub(crate) fn poll_recv(
        &mut self,
        key: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<RxBuf>>> {
        let conn = &mut self.conns[key];
        if let Some(buf) = conn.queue.pop_front() {
            return Poll::Ready(Ok(Some(buf)));
        }
        if let Some(e) = conn.error.take() {
            // A receive error ends the request, and nothing re-arms it: the stream is at its
            // end from here on, as a socket is after reporting ECONNRESET.
            conn.eof = true;
            return Poll::Ready(Err(e));
        }
        if conn.eof {
            return Poll::Ready(Ok(None));
        }
        if !conn.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            conn.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A buffer already received on this connection, if one is queued (errors and the end of
    /// the stream are left for `poll_recv`).
    pub(crate) fn take_queued(&mut self, key: usize) -> Option<RxBuf> {
        self.conns[key].queue.pop_front()
    }

    /// The id the receive pool charges this connection's held bytes to.
    pub(crate) fn conn_owner(&self, key: usize) -> OwnerId {
        self.conns[key].owner
    }

    /// The `TcpStream` is gone: drop queued buffers, cancel the receive; the slot (and with it
    /// the last reference to the fd, unless sends are in flight) goes at its final completion.
    pub(crate) fn drop_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.dropped {
            // No longer live: it leaves the fair share to the others.
            self.live_conns -= 1;
        }
        conn.dropped = true;
        conn.queue.clear();
        conn.waker = None;
        if conn.armed {
            if !conn.cancelling {
                conn.cancelling = true;
                self.stats.cancels += 1;
                self.push(
                    &opcode::AsyncCancel::new(ud(TAG_RECV, key))
                        .build()
                        .user_data(ud(TAG_IGNORE, 0)),
                );
            }
        } else {
            self.conns.remove(key);
        }
    }

    /// Who holds what in this thread's receive pool.
    pub(crate) fn rx_snapshot(&self) -> Option<zcrx_ifq::Snapshot> {
        self.rx.as_ref().map(|rx| rx.snapshot())
    }

    /// The receive pool's counters.
    pub(crate) fn rx_stats(&self) -> Option<RxStats> {
        self.rx.as_ref().map(|rx| rx.stats())
    }

    // ---- the loop -----------------------------------------------------------------------------

    /// One turn: publish returned chunks, re-arm what needs it, submit everything and reap
    /// completions with a single `io_uring_enter`, waiting (up to the next timer) only if
    /// `block`, and never past `limit`.
    pub(crate) fn turn(&mut self, mut block: bool, limit: Option<Instant>) {
        self.prepare();
        // Receives the full CQ ended are re-armed a few a turn: come back for the rest.
        if !self.overflowed.is_empty() {
            block = false;
        }
        // While connections wait for buffers, a buffer dropped on another thread wakes the loop
        // (through the eventfd read `prepare` keeps armed); if some came back since `prepare`
        // drained them, no wake-up will come for those: do not sleep.
        let waits_for_returns = block && !(self.paused.is_empty() && self.starved.is_empty());
        if waits_for_returns && self.rx.as_ref().is_some_and(|rx| rx.arm_return_wake()) {
            block = false;
        }
        let timeout = if block {
            let at = match (self.timers.next_deadline(), limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            at.map(|at| at.saturating_duration_since(Instant::now()))
        } else {
            None
        };
        self.stats.enters += 1;
        let batch = if block { self.wait_batch() } else { 1 };
        let r = match (block, timeout) {
            (false, _) => self.ring.submit(),
            (true, None) if batch <= 1 => self.ring.submit_and_wait(1),
            (true, timeout) => {
                // A coalescing wait always has a finite timeout: without one the kernel (6.18)
                // lets the minimum wait lapse and keeps waiting for `batch` task-work items
                // (each may carry dozens of completions), for milliseconds, while the armed
                // receives run out of budget.
                let timeout = match timeout {
                    None if batch > 1 => Some(Duration::from_secs(1)),
                    t => t,
                };
                let ts = timeout.map(|d| types::Timespec::from(d.max(Duration::from_micros(1))));
                let mut args = types::SubmitArgs::new();
                if let Some(ts) = ts.as_ref() {
                    args = args.timespec(ts);
                }
                if batch > 1 {
                    args = args.min_wait_usec(self.batch.1);
                    self.stats.coalesced_waits += 1;
                }
                self.ring.submit_with_args(batch, &args)
            }
        };
        if let Err(e) = r {
            match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
                Some(
                    rustix::io::Errno::TIME | rustix::io::Errno::INTR | rustix::io::Errno::BUSY,
                ) => {}
                _ => panic!("io_uring_enter failed: {e}"),
            }
        }
        if waits_for_returns {
            if let Some(rx) = self.rx.as_ref() {
                rx.disarm_return_wake();
            }
        }
        self.reap_into_buffer();
        if !self.cqes.is_empty() {
            // `bulk` describes the latest completions reaped.
            self.bulk = false;
        }
        self.dispatch();
        self.timers.fire(Instant::now());
    }

    /// How many completions to wait for. One, unless bulk data is flowing: then up to
    /// `batch.0`, but never more than half of what the armed receives may still deliver, so the
    /// loop wakes to re-arm before they all run dry; and one while connections wait for buffers
    /// (64 flows through the default pool: 5.2-5.4 GB/s without coalescing, 5.1 coalescing
    /// regardless, 5.7-6.2 with this rule).
    fn wait_batch(&self) -> usize {
        // Connections waiting for buffers want the loop back soon to recycle them.
        if !self.bulk || self.batch.0 <= 1 || !self.paused.is_empty() || !self.starved.is_empty() {
            return 1;
        }
        let Some(rx) = self.rx.as_ref() else {
            return 1;
        };
        // A shallow buffer ring (`Builder::max_posted`) delivers at most what is posted.
        let posted = u64::from(rx.posted());
        let deliverable = if self.capped_recv && rx.can_cap() {
            self.budget.promised_chunks().min(posted)
        } else {
            posted
        };
        (deliverable / 2).clamp(1, u64::from(self.batch.0)) as usize
    }

    fn prepare(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            if let Some(depth) = self.depth.as_mut() {
                let taken = self.posted_at_flush.saturating_sub(rx.posted());
                let starved = self.stats.no_buffers - self.no_buffers_at_flush;
                self.no_buffers_at_flush = self.stats.no_buffers;
                match depth.turn(taken, starved.min(u64::from(u32::MAX)) as u32) {
                    Some(Change::Raised(n)) => {
                        self.stats.depth_raises += 1;
                        tracing::trace!(chunks = n, starved, "buffer ring depth raised");
                        rx.set_max_posted(n);
                    }
                    Some(Change::Cut(n)) => {
                        self.stats.depth_cuts += 1;
                        tracing::trace!(chunks = n, "buffer ring depth cut");
                        rx.set_max_posted(n);
                    }
                    None => {}
                }
            }
            let returned = rx.flush();
            self.posted_at_flush = rx.posted();
            if returned > 0 && std::mem::take(&mut self.zcrx_out_of_buffers) {
                if let Err(e) = rx.rearm_event(ZcrxEvent::OutOfBuffers) {
                    tracing::debug!("re-arming the zcrx out-of-buffers event: {e}");
                }
            }
        }
        if !self.wake_armed {
            self.wake_armed = true;
            let sqe = opcode::Read::new(
                types::Fd(self.wake_fd.as_raw_fd()),
                self.wake_buf.as_mut_ptr(),
                8,
            )
            .build()
            .user_data(ud(TAG_WAKE, 0));
            self.push(&sqe);
        }
        // Resume paused connections whose application returned enough buffers, then arm new
        // connections and re-arm receives that ended (budget spent, no buffers, overflow). The
        // connections that waited go first, oldest first (`arm_recv` pauses again in this
        // order): otherwise busy connections, re-armed every turn, and a burst of new ones take
        // every chunk that comes back, and a connection can wait for room for seconds, its
        // data, EOF or reset unread.
        let mut rearm = std::mem::take(&mut self.paused);
        rearm.append(&mut self.rearm);
        if self.rx.as_ref().is_some_and(|rx| rx.available() > 0) {
            rearm.append(&mut self.starved);
        }
        if !self.overflowed.is_empty() && !self.ring.cq_overflow() {
            let n = self.overflow_quota.min(self.overflowed.len());
            rearm.extend(self.overflowed.drain(..n));
        }
        for key in rearm.drain(..) {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.dropped || conn.armed {
                continue;
            }
            self.arm_recv(key);
        }
        self.rearm = rearm;
    }

    fn reap_into_buffer(&mut self) {
        self.ring.drain(&mut self.cqes);
    }

    fn dispatch(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        self.stats.completions += cqes.len() as u64;
        for (user_data, res, flags, big) in cqes.drain(..) {
            let key = (user_data & KEY_MASK) as usize;
            match user_data >> TAG_SHIFT {
                TAG_OP => self.complete_op(key, res, flags),
                TAG_RECV => self.complete_recv(key, res, flags, big),
                TAG_ACCEPT => self.complete_accept(key, res, flags),
                TAG_WAKE => self.wake_armed = false,
                TAG_ZCRX_EVENT => self.zcrx_event(res),
                _ => {}
            }
        }
        self.cqes = cqes;
    }

    /// An event the zcrx queue posted (Linux 7.2+): counted in its stats. The kernel posts
    /// each kind once until re-armed: out-of-buffers is re-armed once buffers came back (one
    /// event per shortage), the copy fallback never (once is enough to know).
    fn zcrx_event(&mut self, res: i32) {
        let Some(rx) = self.rx.as_mut() else {
            return;
        };
        match rx.event(res) {
            Some(ZcrxEvent::OutOfBuffers) => {
                self.zcrx_out_of_buffers = true;
                tracing::debug!(backend = %self.backend, "the zcrx queue ran out of buffers");
            }
            Some(ZcrxEvent::Copy) if rx.is_no_device() => {
                tracing::debug!("zcrx without a device copies received data, as designed");
            }
            Some(ZcrxEvent::Copy) => tracing::warn!(
                backend = %self.backend,
                "the kernel copied received data into the zcrx area (copy fallback): this \
                 traffic is not zero-copy (header/data split or flow steering missing?)"
            ),
            Some(e) => tracing::debug!(event = ?e, "zcrx event"),
            None => tracing::debug!(res, "unknown zcrx event"),
        }
    }

    fn complete_recv(&mut self, key: usize, res: i32, flags: u32, big: [u64; 2]) {
        let rx = self.rx.as_mut().expect("interface queue present");
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut rearm = false;
        let mut overflowed = false;
        let mut received = 0u64;
        let capped = self.capped_recv && rx.can_cap();
        match rx.complete(conn.owner, res, flags, big) {
            Ok(c) => {
                rearm = c.needs_rearm();
                match c.event {
                    RecvEvent::Data(buf) => {
                        received = buf.len() as u64;
                        if let Some(left) = conn.cap_left.as_mut() {
                            *left = left.saturating_sub(received as u32);
                        }
                        // Ending with data while more than this completion was still promised:
                        // the kernel could not post to a full CQ (the buffer ring has no error
                        // code for it).
                        if !c.more && capped && self.budget.ended_early(conn.budget_left, received)
                        {
                            self.stats.cq_overflows += 1;
                        }
                        self.bulk |= received >= self.bulk_len;
                        if !conn.dropped {
                            conn.queue.push_back(buf);
                        }
                    }
                    // zcrx's capped receive ends with 0 bytes too: with its cap spent, that is
                    // the cap (re-arm; an end of stream shows on the next receive).
                    RecvEvent::Eof if rx.is_zcrx() && conn.cap_left == Some(0) => {
                        self.stats.caps_reached += 1;
                        tracing::trace!(conn = key, "zcrx receive reached its cap: re-armed");
                        rearm = true;
                    }
                    RecvEvent::Eof => conn.eof = true,
                    RecvEvent::NoBuffers => {
                        self.stats.no_buffers += 1;
                        tracing::debug!(
                            conn = key,
                            "receive ran out of buffers: re-armed once buffers come back"
                        );
                        if !conn.dropped {
                            self.starved.push(key);
                        }
                        rearm = false;
                    }
                    RecvEvent::CqOverflow => {
                        self.stats.cq_overflows += 1;
                        tracing::debug!(conn = key, "receive ended by a full completion queue");
                        overflowed = true;
                    }
                    RecvEvent::Error(e)
                        if e.raw_os_error() == Some(libc::EINVAL) && self.capped_recv =>
                    {
                        // This kernel has no multishot cap: fall back to plain multishot.
                        self.capped_recv = false;
                        tracing::info!(
                            "this kernel does not cap multishot receives (IORING_RECV_MSHOT_LIM, \
                             Linux 6.17+): plain multishot receives, back-pressure by cancelling"
                        );
                        rearm = true;
                    }
                    RecvEvent::Error(e) => {
                        if conn.cancelling && e.raw_os_error() == Some(libc::ECANCELED) {
                            rearm = true; // paused for back-pressure, or dropped
                        } else if !conn.dropped {
                            conn.error = Some(e);
                        }
                    }
                }
                if !c.more {
                    conn.armed = false;
                    conn.cancelling = false;
                    conn.cap_left = None;
                } else if !capped && !conn.dropped && !conn.cancelling && rx.over_limit(conn.owner)
                {
                    // Back-pressure without a kernel cap: stop reading this connection until it
                    // returns buffers.
                    conn.cancelling = true;
                    self.stats.backpressure_pauses += 1;
                    tracing::trace!(
                        conn = key,
                        "receive cancelled: the connection holds its limit"
                    );
                    self.push(
                        &opcode::AsyncCancel::new(ud(TAG_RECV, key))
                            .build()
                            .user_data(ud(TAG_IGNORE, 0)),
                    );
                }
            }
            Err(e) => {
                // A value the kernel should never produce: report it on the connection.
                tracing::warn!(conn = key, "a receive completion failed its checks: {e}");
                conn.error = Some(io::Error::other(e));
                if flags & CQE_F_MORE == 0 {
                    conn.armed = false;
                    conn.cap_left = None;
                }
            }
        }
        let ended = !self.conns[key].armed;
        self.spend(key, received, ended);
        if received > 0 && !ended {
            self.stop_if_overdrawn(key);
        }
        let conn = &mut self.conns[key];
        if conn.dropped {
            if !conn.armed {
                self.conns.remove(key);
            }
            return;
        }
        if rearm && !conn.armed && !conn.eof && conn.error.is_none() {
            if overflowed {
                self.overflowed.push(key);
            } else {
                self.rearm.push(key);
            }
        }
        if let Some(w) = conn.waker.take() {
            w.wake();
        }
    }

    // ---- shutdown -----------------------------------------------------------------------------

    /// Whether the kernel still owes us completions.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
            + self.conns.iter().filter(|(_, c)| c.armed).count()
            + self.listeners.iter().filter(|(_, l)| l.armed).count()
    }

    /// Cancels everything in flight, waits (bounded) for the final completions, then tears the
    /// interface queue down. Resources of requests the kernel never finished are leaked, never
    /// freed under it. Returns the teardown report, the pool's last counters and the requests
    /// leaked.
    pub(crate) fn shutdown(&mut self, grace: Duration) -> (TeardownReport, RxStats, usize) {
        self.stopping = true;
        for key in self.conns.iter().map(|(k, _)| k).collect::<Vec<_>>() {
            let c = &mut self.conns[key];
            c.queue.clear();
            if !c.dropped {
                self.drop_conn(key);
            }
        }
        for key in self.listeners.iter().map(|(k, _)| k).collect::<Vec<_>>() {
            if !self.listeners[key].dropped {
                self.drop_listener(key);
            }
        }
        for key in self.ops.iter().map(|(k, _)| k).collect::<Vec<_>>() {
            self.drop_op(key);
        }
        let deadline = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < deadline {
            self.turn(true, Some(deadline));
        }
        let leaked = self.in_flight();
        if leaked > 0 {
            // The kernel still holds pointers into these: never free them.
            self.leak_ops();
        }
        let rx = self.rx.take().expect("interface queue present");
        let stats = rx.stats();
        (rx.teardown(), stats, leaked)
    }
}
