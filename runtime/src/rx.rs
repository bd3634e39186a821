//! The thread's receive pool: a provided buffer ring or a zcrx interface queue.

use std::io;
use std::os::fd::RawFd;

use zcrx_ifq::backend::Completion;
use zcrx_ifq::bufring::{BufRing, BufRingConfig, BufRingStats};
use zcrx_ifq::io_uring::{squeue, types};
use zcrx_ifq::zcrx::{ZcrxConfig, ZcrxEvent, ZcrxFeatures, ZcrxIfq, ZcrxStats};
use zcrx_ifq::{Area, OwnerId, RxPool, Snapshot, TeardownReport};

use crate::config::{Config, RxBackend, ZcrxTarget};
use crate::sys::ring::Ring;

/// The counters of one runtime thread's receive pool, from the backend it runs: see
/// [`Runtime::rx_stats`](crate::Runtime::rx_stats) and [`rx_stats`](crate::rx_stats).
///
/// They belong to one thread: each thread of [`Builder::run`](crate::Builder::run) has its own
/// pool and its own counters, which nothing sums (add them up from each thread, or from the
/// [`ShutdownReport`](crate::ShutdownReport)s of
/// [`run_with_reports`](crate::Builder::run_with_reports)). They count from the pool's
/// creation and never go down.
///
/// The accessors give what both backends count; match on the variant for the rest.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let rt = zcrx::Runtime::new_default()?;
/// // ... serve ...
/// match rt.rx_stats() {
///     Some(zcrx::RxStats::BufRing(s)) => println!("buffer ring: {} chunks recycled", s.republished),
///     Some(zcrx::RxStats::Zcrx(s)) => match s.kernel_copies() {
///         Some((n, bytes)) => println!("zcrx: the kernel copied {bytes} bytes in {n} copies"),
///         None => println!("zcrx: {} bytes, copies not counted", s.bytes),
///     },
///     Some(other) => println!("{} bytes", other.bytes()),
///     None => println!("shut down"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RxStats {
    /// A provided buffer ring's counters ([`BufRing::stats`]).
    BufRing(BufRingStats),
    /// A zcrx interface queue's counters ([`ZcrxIfq::stats`]), on a NIC queue or without a
    /// device. On Linux 7.2+ the runtime asks the kernel to keep its copy statistics too
    /// ([`ZcrxStats::kernel_copies`]); before, they are not counted.
    Zcrx(ZcrxStats),
}

impl RxStats {
    /// Data completions turned into buffers.
    pub fn deliveries(&self) -> u64 {
        match self {
            Self::BufRing(s) => s.deliveries,
            Self::Zcrx(s) => s.deliveries,
        }
    }

    /// Bytes delivered, over every connection of the thread.
    pub fn bytes(&self) -> u64 {
        match self {
            Self::BufRing(s) => s.bytes,
            Self::Zcrx(s) => s.bytes,
        }
    }

    /// Receives that found no free buffer: the buffer ring's `-ENOBUFS`, zcrx's `-ENOMEM`
    /// (the same completions [`DriverStats::no_buffers`](crate::DriverStats::no_buffers)
    /// counts).
    pub fn no_buffers(&self) -> u64 {
        match self {
            Self::BufRing(s) => s.no_buffers,
            Self::Zcrx(s) => s.no_buffers,
        }
    }

    /// Tail stores that published returned buffers to the kernel (one per flush that had
    /// any).
    pub fn publishes(&self) -> u64 {
        match self {
            Self::BufRing(s) => s.publishes,
            Self::Zcrx(s) => s.publishes,
        }
    }

    /// The buffer ring's counters, if that is the backend.
    pub fn bufring(&self) -> Option<&BufRingStats> {
        match self {
            Self::BufRing(s) => Some(s),
            Self::Zcrx(_) => None,
        }
    }

    /// The zcrx queue's counters, if that is the backend.
    pub fn zcrx(&self) -> Option<&ZcrxStats> {
        match self {
            Self::Zcrx(s) => Some(s),
            Self::BufRing(_) => None,
        }
    }
}

// One per thread, set up once and used in place for the thread's life: the size difference
// costs nothing, a box would cost a pointer chase on every completion.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Rx {
    Buf(BufRing),
    Zcrx(ZcrxIfq),
}

/// `each!(rx, q => expr)`: `expr` with `q` bound to whichever backend `rx` runs, through their
/// one surface ([`RxPool`]).
macro_rules! each {
    ($rx:expr, $q:ident => $e:expr) => {
        match $rx {
            Rx::Buf($q) => $e,
            Rx::Zcrx($q) => $e,
        }
    };
}

static FALLBACK_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says, once per process, that `Auto` runs the buffer ring because zcrx was refused, and why.
fn say_fallback(why: impl FnOnce() -> String) {
    if !FALLBACK_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let why = why();
        tracing::warn!("{why}; falling back to the provided buffer ring");
    }
}

impl Rx {
    /// Sets up the ring and the receive pool `config` asks for on thread `index`; a buffer ring
    /// whose depth adapts starts at `depth_floor` chunks, and a zcrx queue posts its events
    /// (Linux 7.2+) with the `user_data` `zcrx_events`.
    pub(crate) fn setup(
        config: &Config,
        index: usize,
        depth_floor: Option<u32>,
        zcrx_events: u64,
    ) -> io::Result<(Ring, Rx, String)> {
        let area = |chunk_size: usize, chunks: usize| {
            Area::builder()
                .chunk_size(chunk_size)
                .chunks(chunks)
                .prefault(true)
                .build()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        // zcrx's kernel buffers are pages: every completion lies in one, the kernel hands each
        // out on its own, and a chunk goes back only once all of its pages' handles drop. A
        // chunk of several pages shared by several connections would be neither free for the
        // budgets nor anyone's fault, so under zcrx the pool is split into pages (the same
        // bytes): what is free, and what a connection holds, is then exact.
        let zcrx_area = || {
            let page = rustix::param::page_size();
            let bytes = config.chunks * config.chunk_size;
            area(page, bytes.div_ceil(page))
        };
        // Why the buffer ring, if it comes to that.
        let mut why_bufring = "RxBackend::BufRing".to_string();
        let want_zcrx = match (&config.backend, &config.zcrx) {
            (RxBackend::BufRing, _) => None,
            (RxBackend::Zcrx, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "RxBackend::Zcrx needs a target: Builder::zcrx_queue(ifname, queue) for a \
                     NIC queue, or Builder::zcrx_nodev() for zcrx without a device",
                ))
            }
            // The default. Auto never picks zcrx without a device by itself: it needs
            // CAP_NET_ADMIN and Linux 7.1+, and what it does against the buffer ring depends on
            // the load (docs/runtime.md).
            (RxBackend::Auto, None) => {
                why_bufring = "RxBackend::Auto without a zcrx target".to_string();
                None
            }
            (_, Some(ZcrxTarget::Queue { ifname, queue })) => Some(ZcrxTarget::Queue {
                ifname: ifname.clone(),
                queue: queue + index as u32,
            }),
            (_, Some(ZcrxTarget::NoDevice)) => Some(ZcrxTarget::NoDevice),
        };
        if let Some(target) = want_zcrx {
            let ring = Ring::new(config.sq_entries, config.cq_entries, true)?;
            let r = ring.big().expect("made with 32-byte completions");
            // The refill queue sized to the area (the default): every page can be out at once.
            let mut zc = match &target {
                ZcrxTarget::Queue { ifname, queue } => ZcrxConfig::new(ifname.clone(), *queue),
                ZcrxTarget::NoDevice => ZcrxConfig::no_device(),
            };
            if let Some(l) = config.conn_limit {
                zc = zc.owner_limit(l);
            }
            // Where the kernel has them (7.2+), its events and copy statistics: `RxStats` then
            // says how much it copied, and the driver says when a NIC queue falls back to
            // copying or runs out of buffers.
            if ZcrxFeatures::query(r).is_ok_and(|f| f.events()) {
                zc = zc.events(zcrx_events);
            }
            let (what, name) = match &target {
                ZcrxTarget::NoDevice => (
                    "zcrx without a device (copy)".to_string(),
                    "zcrx without a device".to_string(),
                ),
                t => (format!("zcrx on {t}"), format!("zcrx on {t}")),
            };
            match ZcrxIfq::register(r, zcrx_area()?, zc) {
                Ok(mut ifq) => {
                    // The runtime is thread-per-core: the queue never leaves this thread.
                    ifq.set_home_thread();
                    if let ZcrxTarget::Queue { ifname, queue } = &target {
                        report_irq_placement(index, ifname, *queue);
                    }
                    tracing::debug!(
                        thread = index,
                        reason = format!("RxBackend::{:?} with a zcrx target", config.backend),
                        kernel_copy_stats = ifq.stats().kernel_copy_stats,
                        "receive backend: {what}"
                    );
                    return Ok((ring, Rx::Zcrx(ifq), what));
                }
                Err(e) if config.backend == RxBackend::Zcrx => {
                    tracing::debug!(thread = index, "{name} refused: {e}");
                    return Err(io::Error::new(io::ErrorKind::Unsupported, e));
                }
                Err(e) => {
                    tracing::debug!(thread = index, "{name} refused: {e}");
                    why_bufring = format!("RxBackend::Auto, and {name} was refused");
                    say_fallback(|| e.to_string());
                }
            }
        }
        let ring = Ring::new(config.sq_entries, config.cq_entries, false)?;
        let r = ring.small().expect("made with 16-byte completions");
        let mut buf = BufRing::register(
            r,
            area(config.chunk_size, config.chunks)?,
            BufRingConfig {
                bgid: 0,
                incremental: config.incremental,
                owner_limit: config.conn_limit,
                // An adaptive depth starts at its floor; the driver moves it from there.
                max_posted: depth_floor.or(config.max_posted),
            },
        )
        .map_err(|e| {
            tracing::debug!(thread = index, "registering the buffer ring failed: {e}");
            io::Error::other(e)
        })?;
        // The runtime is thread-per-core: the ring never leaves this thread.
        buf.set_home_thread();
        let what = if config.incremental {
            "buffer ring (incremental)"
        } else {
            "buffer ring"
        };
        tracing::debug!(
            thread = index,
            reason = %why_bufring,
            "receive backend: {what}"
        );
        Ok((ring, Rx::Buf(buf), what.to_string()))
    }

    /// A receive for `fd`, capped at `budget` bytes (0: no cap), see [`RxPool::recv_capped`].
    /// zcrx ends a capped receive with a completion of 0 bytes, which is also how it reports the
    /// end of the stream (the driver tells them apart by counting).
    pub(crate) fn recv(&self, fd: RawFd, budget: u32) -> squeue::Entry {
        each!(self, q => q.recv_capped(types::Fd(fd), budget))
    }

    /// Whether this is zcrx, whose capped receive ends with a 0-byte completion like the end of
    /// the stream.
    pub(crate) fn is_zcrx(&self) -> bool {
        matches!(self, Rx::Zcrx(_))
    }

    /// Decodes and counts a zcrx event CQE (`ZCRX_EVENTS`); `None` on the buffer ring or for
    /// a value the kernel does not send.
    pub(crate) fn event(&mut self, res: i32) -> Option<ZcrxEvent> {
        match self {
            Rx::Zcrx(z) => z.event(res),
            Rx::Buf(_) => None,
        }
    }

    /// Lets a zcrx event that fired fire again.
    pub(crate) fn rearm_event(&mut self, event: ZcrxEvent) -> zcrx_ifq::Result<()> {
        match self {
            Rx::Zcrx(z) => z.rearm_event(event),
            Rx::Buf(_) => Ok(()),
        }
    }

    /// Whether this is zcrx without a device, which copies every byte by design.
    pub(crate) fn is_no_device(&self) -> bool {
        matches!(self, Rx::Zcrx(z) if z.is_no_device())
    }

    /// Whether the pool's depth can be set (the buffer ring; zcrx's free list is the kernel's).
    pub(crate) fn has_depth(&self) -> bool {
        matches!(self, Rx::Buf(_))
    }

    /// Whether receives can be capped: both backends can, on kernels with the cap (the driver
    /// finds out on the first receive; `RECV_ZC`'s byte limit is as old as zcrx).
    pub(crate) fn can_cap(&self) -> bool {
        true
    }

    pub(crate) fn complete(
        &mut self,
        owner: OwnerId,
        res: i32,
        flags: u32,
        big: [u64; 2],
    ) -> zcrx_ifq::Result<Completion> {
        match self {
            Rx::Buf(b) => b.complete(owner, res, flags),
            Rx::Zcrx(z) => z.complete(owner, res, flags, big),
        }
    }

    /// Installs what a buffer dropped on another thread calls to wake this thread's loop.
    pub(crate) fn set_return_waker(&mut self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        each!(self, q => q.set_return_waker(wake))
    }

    /// Before sleeping: the next buffer dropped on another thread wakes the loop. True if some
    /// came back already (do not sleep).
    pub(crate) fn arm_return_wake(&self) -> bool {
        each!(self, q => q.arm_return_wake())
    }

    pub(crate) fn disarm_return_wake(&self) {
        each!(self, q => q.disarm_return_wake())
    }

    pub(crate) fn flush(&mut self) -> usize {
        each!(self, q => q.flush())
    }

    pub(crate) fn stats(&self) -> RxStats {
        match self {
            Rx::Buf(b) => RxStats::BufRing(b.stats()),
            Rx::Zcrx(z) => RxStats::Zcrx(z.stats()),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        each!(self, q => q.snapshot())
    }

    pub(crate) fn over_limit(&self, owner: OwnerId) -> bool {
        each!(self, q => q.over_limit(owner))
    }

    /// What `owner` keeps out of the pool, in bytes. Without incremental consumption every
    /// completion takes a whole chunk however few bytes it carries, so a chunk counts whole: a
    /// peer sending one byte per segment must not pin a chunk per byte within a byte limit.
    /// Under zcrx a chunk is one of the kernel's buffers (a page, see `setup`): a completion
    /// lies in one, which stays out of the pool until every handle into it drops, so the same
    /// rule holds.
    pub(crate) fn owner_footprint(&self, owner: OwnerId, incremental: bool) -> u64 {
        let (s, chunk) = each!(self, q => (q.owner(owner), q.chunk_size() as u64));
        if incremental && !self.is_zcrx() {
            s.bytes
        } else {
            s.bytes.max(u64::from(s.chunks) * chunk)
        }
    }

    /// `(chunk size, chunks)` of the pool.
    pub(crate) fn geometry(&self) -> (u64, u64) {
        each!(self, q => (q.chunk_size() as u64, u64::from(q.chunks())))
    }

    /// Chunks receives can fill before the loop's next flush: posted to the buffer ring (which
    /// may hold fewer than are free, see `Builder::max_posted`), or free in the zcrx pool.
    pub(crate) fn posted(&self) -> u32 {
        match self {
            Rx::Buf(b) => b.posted(),
            Rx::Zcrx(_) => self.available(),
        }
    }

    /// Keeps at most `n` chunks posted (the buffer ring; zcrx's page pool is the kernel's).
    pub(crate) fn set_max_posted(&mut self, n: u32) {
        if let Rx::Buf(b) = self {
            b.set_max_posted(n);
        }
    }

    /// Chunks the kernel can receive into right now, or once the loop flushes.
    pub(crate) fn available(&self) -> u32 {
        each!(self, q => q.available())
    }

    pub(crate) fn teardown(self) -> TeardownReport {
        each!(self, q => q.teardown())
    }
}

/// zcrx on a NIC queue is at its best when the thread serving the queue runs on the core that
/// takes the queue's interrupts (refill, completion and the application's read share a cache).
/// Says so, with the fix, when it does not: moving an interrupt is the operator's setting, not
/// the runtime's.
fn report_irq_placement(index: usize, ifname: &str, queue: u32) {
    use zcrx_ifq::nic::{self, Placement, QueueIrq};
    let cpu = rustix::thread::sched_getcpu() as u32;
    match nic::read(ifname).and_then(|s| QueueIrq::of(&s, queue)) {
        Ok(q) => match q.placement(cpu) {
            p @ Placement::Mismatch { .. } => {
                tracing::warn!(thread = index, "zcrx on {ifname} queue {queue}: {p}")
            }
            p => tracing::debug!(thread = index, cpu, "zcrx on {ifname} queue {queue}: {p}"),
        },
        Err(e) => tracing::debug!(
            thread = index,
            "zcrx on {ifname} queue {queue}: its interrupt placement cannot be read: {e}"
        ),
    }
}
