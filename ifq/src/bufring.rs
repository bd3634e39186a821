//! The provided-buffer-ring backend: the area's chunks are the buffers of a buffer ring
//! registered on the caller's io_uring; multishot receives with buffer select pick them; the
//! kernel copies received bytes into them. Works on every NIC since Linux 5.19 (incremental
//! consumption since 6.12).
//!
//! ```no_run
//! use zcrx_ifq::bufring::{BufRing, BufRingConfig};
//! use zcrx_ifq::io_uring::{IoUring, types::Fd};
//! use zcrx_ifq::{Area, OwnerId, RecvEvent, RxPool};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut ring = IoUring::new(256)?;
//! let area = Area::builder().chunk_size(32 * 1024).chunks(256).build()?;
//! let mut rx = BufRing::register(&ring, area, BufRingConfig::default())?;
//! // This thread runs the loop: buffers dropped here go back without atomics.
//! rx.set_home_thread();
//! # let sock = std::net::TcpStream::connect("127.0.0.1:1")?;
//! # use std::os::fd::AsRawFd;
//! let sqe = rx.recv_multishot(Fd(sock.as_raw_fd())).user_data(1);
//! // SAFETY: the socket outlives the request.
//! unsafe { ring.submission().push(&sqe)? };
//! ring.submit_and_wait(1)?;
//! for cqe in ring.completion() {
//!     let c = rx.complete(OwnerId(1), cqe.result(), cqe.flags())?;
//!     if let RecvEvent::Data(buf) = c.event {
//!         println!("{} bytes", buf.len());
//!     } // dropping `buf` queues its chunk for return
//! }
//! rx.flush(); // publish returned chunks with one tail store
//! # Ok(()) }
//! ```

use std::os::fd::AsFd;

use io_uring::{cqueue, opcode, squeue, IoUring};
use rustix::io::Errno;

use crate::area::Area;
pub use crate::backend::RecvFd;
use crate::backend::{dup_ring_fd, Completion, Core, RecvEvent, RxPool, Sealed, TeardownReport};
use crate::chunk::{ChunkId, ChunkState, OwnerId, Redelivery, ReleaseTo};
use crate::completion::{decode_bufring, CompletionError, Event};
use crate::error::{Error, Result};
use crate::sys::pbuf::PbufRing;
use crate::sys::sqe::io_uring_sqe;

/// `IOU_PBUF_RING_INC`: incremental buffer consumption (6.12).
const IOU_PBUF_RING_INC: u16 = 2;
/// Most entries a buffer ring may have.
pub const MAX_ENTRIES: usize = 32768;

/// How to register a buffer ring.
#[derive(Debug, Clone, Default)]
pub struct BufRingConfig {
    /// Buffer group id (several rings on one io_uring need distinct ids). Default 0.
    pub bgid: u16,
    /// Incremental consumption (`IOU_PBUF_RING_INC`, Linux 6.12+): the kernel fills a chunk
    /// across several receives instead of using a whole chunk per receive, so small messages
    /// do not waste chunks.
    pub incremental: bool,
    /// Most bytes one owner may hold before [`BufRing::over_limit`] says to stop reading it.
    pub owner_limit: Option<u64>,
    /// Most chunks posted to the kernel at once (default: every chunk). See
    /// [`BufRing::set_max_posted`].
    pub max_posted: Option<u32>,
}

/// Counters of a buffer ring's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufRingStats {
    /// Data completions turned into handles.
    pub deliveries: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// `-ENOBUFS` completions (the ring ran dry).
    pub no_buffers: u64,
    /// Chunks whose handles all dropped, collected by [`BufRing::flush`] (posted again, or kept
    /// in the pool above [`BufRing::max_posted`]).
    pub republished: u64,
    /// Tail stores (one per non-empty flush).
    pub publishes: u64,
}

/// A provided buffer ring over an [`Area`], registered on an io_uring. See the
/// [module docs](self).
pub struct BufRing {
    pub(crate) core: Core,
    /// The ring's memory, producer and registration.
    pub(crate) ring: PbufRing,
    /// Incremental mode: bytes of each chunk the kernel has filled since it was posted.
    filled: Vec<u32>,
    incremental: bool,
    /// Most chunks in the ring at once; the rest wait in the table's pool.
    max_posted: u32,
    bgid: u16,
    /// Not registered with any io_uring (`crate::sim`).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) simulated: bool,
    /// Not torn down yet.
    registered: bool,
    stats: BufRingStats,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.bgid)
            .field("incremental", &self.incremental)
            .field("counts", &self.core.table.counts())
            .field("stats", &self.stats)
            .finish()
    }
}

impl BufRing {
    /// Registers `area` as buffer group `config.bgid` on `ring` and posts every chunk.
    ///
    /// Call it, and every other method, on the thread that submits to `ring` (rings set up with
    /// `SINGLE_ISSUER` refuse registrations from other threads).
    pub fn register<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
        ring: &IoUring<S, C>,
        area: Area,
        config: BufRingConfig,
    ) -> Result<Self> {
        let mut buf_ring = ring_for(&area)?;
        let ring_fd = dup_ring_fd(ring.as_fd())?;
        let flags = if config.incremental {
            IOU_PBUF_RING_INC
        } else {
            0
        };
        buf_ring
            .register(ring_fd, config.bgid, flags)
            .map_err(|source| {
                let hint = match source.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::EXIST) => {
                        "the buffer group id is already in use on this ring; pick another bgid"
                    }
                    Some(Errno::INVAL) if config.incremental => {
                        "incremental buffer rings need Linux 6.12+; turn `incremental` off"
                    }
                    Some(Errno::INVAL) => "provided buffer rings need Linux 5.19+",
                    Some(Errno::NOMEM) => "the kernel is out of memory",
                    _ => "see io_uring_register_buf_ring(3)",
                };
                Error::BufRingRegister {
                    bgid: config.bgid,
                    source,
                    hint,
                }
            })?;
        Ok(Self::assemble(area, config, buf_ring, false))
    }

    /// The queue over `area` and `ring` (registered, or simulated), with every chunk it may
    /// post posted.
    pub(crate) fn assemble(
        area: Area,
        config: BufRingConfig,
        ring: PbufRing,
        simulated: bool,
    ) -> Self {
        let chunks = area.chunks() as usize;
        let mut core = Core::new(
            area,
            if config.incremental {
                Redelivery::WhileKernelBusy
            } else {
                Redelivery::Never
            },
        );
        core.table.set_owner_limit(config.owner_limit);
        let mut this = Self {
            filled: if config.incremental {
                vec![0; chunks]
            } else {
                Vec::new()
            },
            core,
            ring,
            incremental: config.incremental,
            max_posted: config.max_posted.unwrap_or(u32::MAX).max(1),
            bgid: config.bgid,
            simulated,
            registered: true,
            stats: BufRingStats::default(),
        };
        this.top_up();
        this.publish();
        this
    }

    /// Posts pooled chunks (the most recently used first) until the ring holds `max_posted`.
    fn top_up(&mut self) {
        while self.ring.in_ring() < self.max_posted {
            let Some(chunk) = self.core.table.take_from_pool() else {
                break;
            };
            self.post(chunk);
        }
    }

    fn post(&mut self, chunk: ChunkId) {
        let geometry = Geometry::of(self.core.area());
        post_entry(&mut self.ring, &mut self.filled, geometry, chunk);
    }

    fn publish(&mut self) {
        if self.ring.publish() {
            self.stats.publishes += 1;
        }
    }

    /// The buffer group id receives must select.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// A multishot receive on `fd` that picks buffers from this ring. Set `user_data` and push it.
    pub fn recv_multishot(&self, fd: impl Into<RecvFd>) -> squeue::Entry {
        match fd.into() {
            RecvFd::Fd(fd) => opcode::RecvMulti::new(fd, self.bgid).build(),
            RecvFd::Fixed(fd) => opcode::RecvMulti::new(fd, self.bgid).build(),
        }
    }

    /// A multishot receive that ends by itself (a completion without `F_MORE`) once it has
    /// received `max_bytes` (`IORING_RECV_MSHOT_LIM`, Linux 6.17+; older kernels fail it with
    /// `-EINVAL`). It bounds what one connection can take from the shared pool before the
    /// application gets a say: the overshoot is at most one chunk. `max_bytes == 0` means no cap.
    pub fn recv_multishot_capped(&self, fd: impl Into<RecvFd>, max_bytes: u32) -> squeue::Entry {
        if max_bytes == 0 {
            return self.recv_multishot(fd);
        }
        // No `io_uring::opcode` builder sets `optlen`, which carries the total cap: the entry is
        // built in `sys::sqe`.
        let (fd, fixed) = match fd.into() {
            RecvFd::Fd(fd) => (fd.0, false),
            RecvFd::Fixed(fd) => (fd.0 as i32, true),
        };
        io_uring_sqe::recv_multishot(fd, fixed, self.bgid, max_bytes).into_entry()
    }

    /// Decodes and checks a completion of a receive from [`recv_multishot`](Self::recv_multishot)
    /// and charges its bytes to `owner`. Every kernel value is checked before it becomes a slice;
    /// a bad one is an error and nothing is read.
    // Always inlined, with `take`: returned through memory, the completion was stored field by
    // field and loaded back wider, a store-forwarding stall per chunk (docs/benchmarks.md).
    #[inline(always)]
    pub fn complete(&mut self, owner: OwnerId, res: i32, flags: u32) -> Result<Completion> {
        if !self.registered {
            return Err(Error::TornDown);
        }
        let d = decode_bufring(res, flags)?;
        let event = match d.event {
            Event::Data { len } => {
                let loc = d.loc.expect("decoder guarantees a buffer for data");
                RecvEvent::Data(self.take(owner, loc.bid, len, loc.buf_more)?)
            }
            other => {
                if let Some(loc) = d.loc {
                    // A buffer consumed with no data: account it and hand it straight back.
                    drop(self.take(owner, loc.bid, 0, loc.buf_more)?);
                }
                match other {
                    Event::Eof => RecvEvent::Eof,
                    Event::NoBuffers => {
                        self.stats.no_buffers += 1;
                        RecvEvent::NoBuffers
                    }
                    Event::CqOverflow => RecvEvent::CqOverflow,
                    Event::Error { errno } => {
                        RecvEvent::Error(std::io::Error::from_raw_os_error(errno))
                    }
                    Event::Data { .. } => unreachable!(),
                }
            }
        };
        Ok(Completion {
            event,
            more: d.more,
        })
    }

    #[inline(always)]
    fn take(&mut self, owner: OwnerId, bid: u16, len: u32, buf_more: bool) -> Result<crate::RxBuf> {
        let chunk = ChunkId::from(bid);
        let chunks = self.core.area().chunks();
        if chunk >= chunks {
            return Err(CompletionError::BufferIdOutOfRange { bid, chunks }.into());
        }
        let (offset, kernel_keeps) = if self.incremental {
            (self.filled[chunk as usize], buf_more)
        } else {
            (0, false)
        };
        let buf = self.core.deliver(chunk, offset, len, owner, kernel_keeps)?;
        if self.incremental {
            self.filled[chunk as usize] = offset + len;
        }
        if !kernel_keeps {
            // The kernel moved its head past this buffer.
            self.ring.consumed();
        }
        self.stats.deliveries += 1;
        self.stats.bytes += u64::from(len);
        Ok(buf)
    }

    /// Most chunks posted to the kernel at once.
    pub fn max_posted(&self) -> u32 {
        self.max_posted.min(self.chunks())
    }

    /// Keeps at most `n` chunks (at least one) posted to the kernel; the rest wait in the pool,
    /// and [`flush`](Self::flush) posts them as the kernel uses posted ones, the most recently
    /// returned first.
    ///
    /// Every chunk posted is a chunk the kernel may fill in one go. With a deep ring and
    /// backlogged sockets, one loop turn copies megabytes into chunks that have not been
    /// touched since the whole pool last went round, out of the CPU's cache; a shallow ring
    /// bounds what one turn takes and keeps reusing the same, still cached, chunks: faster and
    /// less CPU per byte with many bulk flows on loopback (figures in `docs/benchmarks.md`,
    /// "A shallow ring"). Small messages want the opposite: each takes a
    /// whole chunk (unless [`incremental`](BufRingConfig::incremental)), and a ring that runs
    /// dry ends multishot receives with [`RecvEvent::NoBuffers`].
    ///
    /// Lowering takes effect as the kernel uses what is posted; raising, at the next flush.
    pub fn set_max_posted(&mut self, n: u32) {
        self.max_posted = n.max(1);
    }

    /// Chunks posted to the kernel and not yet used: what receives can fill before the next
    /// [`flush`](Self::flush).
    pub fn posted(&self) -> u32 {
        self.ring.in_ring()
    }

    fn teardown_in_place(&mut self) -> TeardownReport {
        if !self.registered {
            return self.core.report(self.ring.is_mapped());
        }
        self.registered = false;
        // Publish nothing more, but account every chunk whose handles are gone.
        self.core.collect_returns(|_, _, _| {});
        // A simulated ring is registered nowhere: that unregisters at once.
        let clean = match self.ring.unregister() {
            Ok(()) => {
                // The kernel no longer reads the ring or writes any chunk: take them all back.
                for chunk in 0..self.core.table.total() {
                    match self.core.table.state(chunk) {
                        Ok(ChunkState::Kernel | ChunkState::Refill { .. }) => {
                            let _ = self.core.table.reclaim(chunk);
                        }
                        Ok(ChunkState::User {
                            kernel_busy: true, ..
                        }) => {
                            let _ = self.core.table.kernel_done(chunk);
                            let last = self.core.shared.returns.release(chunk);
                            debug_assert!(!last, "the owner is alive");
                        }
                        _ => {}
                    }
                }
                self.core.collect_returns(|t, chunk, _| {
                    let _ = t.publish(chunk);
                    let _ = t.reclaim(chunk);
                });
                true
            }
            Err(e) => {
                tracing::warn!(
                    bgid = self.bgid,
                    "unregistering the buffer ring failed ({e}): its ring and area are leaked, \
                     never unmapped, as the kernel may still write into them"
                );
                // The kernel may still write into the area and read the ring: never unmap them
                // (the ring leaked its memory already).
                self.core.shared.leak_area_on_drop();
                false
            }
        };
        let report = self.core.report(clean);
        if report.held_chunks > 0 {
            tracing::debug!(
                bgid = self.bgid,
                "buffer ring torn down with {} chunk(s) ({} bytes) still held: they stay mapped \
                 until their last handle drops",
                report.held_chunks,
                report.held_bytes
            );
        }
        report
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        self.teardown_in_place();
    }
}

impl RxPool for BufRing {
    type Stats = BufRingStats;

    fn recv(&self, fd: impl Into<RecvFd>) -> squeue::Entry {
        self.recv_multishot(fd)
    }

    fn recv_capped(&self, fd: impl Into<RecvFd>, max_bytes: u32) -> squeue::Entry {
        self.recv_multishot_capped(fd, max_bytes)
    }

    /// Publishes every chunk whose handles have all dropped (on any thread) back to the kernel,
    /// with one release store of the ring tail, keeping at most [`max_posted`](Self::max_posted)
    /// chunks in the ring (the rest wait in the pool). Returns how many chunks came back. Call
    /// it once per event-loop turn, and before re-arming after [`RecvEvent::NoBuffers`].
    fn flush(&mut self) -> usize {
        if !self.registered {
            return 0;
        }
        let geometry = Geometry::of(self.core.area());
        let Self {
            core,
            ring,
            filled,
            max_posted,
            ..
        } = self;
        let mut room = max_posted.saturating_sub(ring.in_ring());
        // Post each chunk as it is collected, no allocation on this path; past `max_posted`,
        // put it on top of the pool, to be posted first when there is room again.
        let n = core.drain_returns(|table, chunk| {
            let moved = if room > 0 {
                room -= 1;
                // One buffer-ring entry per chunk, however many completions pointed into it.
                table
                    .release(chunk, ReleaseTo::Kernel)
                    .map(|_| post_entry(ring, filled, geometry, chunk))
            } else {
                table.release(chunk, ReleaseTo::Pool).map(drop)
            };
            // Unreachable by construction: the stack only holds user chunks the kernel is done
            // with. If it happens the chunk is kept out of circulation rather than reused.
            debug_assert!(
                moved.is_ok(),
                "a returned chunk leaves the user state: {moved:?}"
            );
        });
        self.stats.republished += n as u64;
        if room > 0 {
            self.top_up();
        }
        self.publish();
        n
    }

    /// Free chunks: posted to the kernel, or waiting in the pool for [`flush`](Self::flush) to
    /// post them.
    fn available(&self) -> u32 {
        let counts = self.core.table.counts();
        counts.kernel + counts.pool
    }

    fn stats(&self) -> BufRingStats {
        self.stats
    }

    /// Unregisters the ring and reports what the application still holds. Chunks held by live
    /// handles stay mapped until those handles drop. Receives still armed on this buffer group
    /// complete with `-ENOBUFS` afterwards.
    fn teardown(mut self) -> TeardownReport {
        self.teardown_in_place()
    }
}

impl Sealed for BufRing {
    fn core(&self) -> &Core {
        &self.core
    }
}

/// Checks the area fits a buffer ring and maps the ring (one slot per chunk, rounded up to a
/// power of two and to whole pages), registered nowhere yet.
pub(crate) fn ring_for(area: &Area) -> Result<PbufRing> {
    let chunks = area.chunks() as usize;
    if chunks > MAX_ENTRIES {
        return Err(Error::TooManyChunks {
            chunks,
            max: MAX_ENTRIES,
            why: "in a provided buffer ring (buffer ids are 16 bits, rings hold 32768)",
        });
    }
    if area.chunk_size() > u32::MAX as usize {
        return Err(Error::BadChunkSize {
            chunk_size: area.chunk_size(),
        });
    }
    let entries = chunks.next_power_of_two() as u32;
    PbufRing::new(entries).map_err(|source| Error::Map {
        len: PbufRing::map_len(entries),
        source,
    })
}

/// Where chunk entries point.
#[derive(Clone, Copy)]
struct Geometry {
    base: u64,
    shift: u32,
    chunk_size: u32,
}

impl Geometry {
    fn of(area: &Area) -> Self {
        Self {
            base: area.addr(),
            shift: area.chunk_size().trailing_zeros(),
            chunk_size: area.chunk_size() as u32,
        }
    }
}

/// Writes the ring entry for `chunk` at the ring's next slot (published later) and, in
/// incremental mode (`filled` has one counter per chunk, else it is empty), restarts its fill.
/// `chunk` must be one no handle points into (the table's pool, or released to the kernel).
#[inline]
fn post_entry(ring: &mut PbufRing, filled: &mut [u32], g: Geometry, chunk: ChunkId) {
    if let Some(f) = filled.get_mut(chunk as usize) {
        *f = 0;
    }
    let addr = g.base + (u64::from(chunk) << g.shift);
    let pushed = ring.push(addr, g.chunk_size, chunk as u16);
    assert!(pushed, "the ring has a slot for every chunk");
}
