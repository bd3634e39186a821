//! The zcrx backend: io_uring zero-copy receive (Linux 6.15+). The area is registered as the
//! page-pool memory provider of one NIC receive queue; the NIC DMAs payloads straight into it and
//! `RECV_ZC` completions say where. Returned buffers go back through a refill queue in memory
//! shared with the kernel.
//!
//! Requirements (the kernel checks them; [`ZcrxRefusal`] explains each
//! refusal): `CAP_NET_ADMIN`; a ring built with `SINGLE_ISSUER | DEFER_TASKRUN` and 32-byte CQEs;
//! a NIC whose driver implements queue management (bnxt, mlx5, fbnic, gve, ice...) with
//! header/data split on and hds-thresh 0; flow steering that puts the connections on the queue.
//! Loopback, veth and virtio_net cannot do zcrx: use the [buffer ring](crate::bufring).
//!
//! ```no_run
//! use zcrx_ifq::io_uring::{cqueue, squeue, types::Fd, IoUring};
//! use zcrx_ifq::zcrx::{ZcrxConfig, ZcrxIfq};
//! use zcrx_ifq::{Area, OwnerId, RecvEvent, RxPool};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut ring = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
//!     .setup_single_issuer()
//!     .setup_defer_taskrun()
//!     .setup_cqsize(8192)
//!     .build(256)?;
//! let area = Area::builder().chunk_size(4096).chunks(4096).build()?;
//! let mut rx = ZcrxIfq::register(&ring, area, ZcrxConfig::new("eth0", 3))?;
//! # let sock = std::net::TcpStream::connect("127.0.0.1:1")?;
//! # use std::os::fd::AsRawFd;
//! let sqe = rx.recv_zc(Fd(sock.as_raw_fd())).user_data(1);
//! // SAFETY: the socket outlives the request.
//! unsafe { ring.submission().push(&sqe)? };
//! ring.submit_and_wait(1)?;
//! for cqe in ring.completion() {
//!     let c = rx.complete(OwnerId(1), cqe.result(), cqe.flags(), *cqe.big_cqe())?;
//!     if let RecvEvent::Data(buf) = c.event {
//!         println!("{} bytes", buf.len());
//!     } // dropping `buf` queues its buffer for return
//! }
//! rx.flush(); // write refill entries, publish them with one tail store
//! # Ok(()) }
//! ```
//!
//! # Buffers and chunks
//!
//! On Linux 6.18 the kernel's zcrx buffers are pages; a chunk of the area is one or more whole
//! pages (chunk size >= page size). Every completion is a slice of one page and takes one kernel
//! "user reference" on it; the kernel reuses a page only after one refill entry per reference came
//! back. The queue counts references per page and, when every handle into a chunk has dropped,
//! writes one refill entry per reference of each of its pages. With chunks of one page the
//! accounting is exact per buffer; larger chunks return their pages together.
//!
//! # Teardown
//!
//! There is no unregister: the kernel keeps the queue bound until the io_uring is destroyed, and
//! destroying it revokes (and may overwrite) buffers the application still holds. So the queue
//! keeps a duplicate of the ring fd, and every [`RxBuf`] keeps that duplicate (and
//! the area and refill memory) alive: the ring, and with it the NIC queue binding, goes away only
//! after you drop your `IoUring` *and* the last `RxBuf`. [`ZcrxIfq::teardown`] reports what is
//! still held.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, IoUring};
use rustix::io::Errno;

use crate::area::Area;
pub use crate::backend::RecvFd;
use crate::backend::{dup_ring_fd, Completion, Core, RecvEvent, RxPool, Sealed, TeardownReport};
use crate::chunk::{ChunkId, ChunkState, OwnerId, Redelivery, ReleaseTo};
use crate::completion::{decode_zcrx, CompletionError, Event, ZcrxLoc, ZCRX_AREA_SHIFT};
use crate::error::{Error, Result, ZcrxRefusal};
use crate::refill::zcrx::rqe_off;
use crate::rxbuf::RxBuf;
use crate::sys::abi::{
    self, zcrx_event_desc, IO_RQ_MAX_ENTRIES, RQE_SIZE, RQ_HEADER_RESERVE, ZCRX_EVENT_ALLOC_FAIL,
    ZCRX_EVENT_COPY, ZCRX_EVENT_DESC_FLAG_STATS, ZCRX_FEATURE_EVENT, ZCRX_FEATURE_RX_PAGE_SIZE,
    ZCRX_REG_IMPORT, ZCRX_REG_NODEV,
};
use crate::sys::calls::{self, ZcrxRegistration};
use crate::sys::caps;
use crate::sys::mmap::Mmap;
use crate::sys::refill::{RefillRing, SharedStats};

mod config;
mod datapath;
mod export;
mod features;
mod interface;
mod refs;
mod register;

pub use config::{ZcrxConfig, ZcrxEvent};
pub use export::{ExportRefused, ZcrxExport};
pub use features::ZcrxFeatures;
use features::*;
pub use interface::{
    resolve_interface, rx_queue_count, validate_ifname, Interface, ResolvedInterface, IFNAMSIZ,
};
use refs::PageRefs;
#[cfg(feature = "sim")]
pub(crate) use register::Plan;
use register::*;

/// Counters of a zcrx queue's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZcrxStats {
    /// Data completions turned into handles.
    pub deliveries: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// `-ENOMEM` completions: the copy fallback found no free buffer.
    pub no_buffers: u64,
    /// `-ENOSPC` completions: the CQ overflowed.
    pub cq_overflows: u64,
    /// Chunks handed back to the kernel.
    pub returned_chunks: u64,
    /// Refill entries written.
    pub rqes: u64,
    /// Tail stores (one per flush that wrote entries).
    pub publishes: u64,
    /// Flushes that stopped because the refill queue was full (the rest waits for the next).
    pub rq_full: u64,
    /// Data completions refused away from the home thread ([`Error::AwayFromHome`]); their
    /// buffers went back to the kernel at the next flush.
    pub refused: u64,
    /// `ZCRX_CTRL_FLUSH_RQ` calls: the kernel was told to take the refill entries (always needed
    /// without a device, where no page pool consumes them; on a NIC only when the ring was full).
    pub ctrl_flushes: u64,
    /// Of those, calls the kernel refused (the last errno is in
    /// [`last_ctrl_errno`](Self::last_ctrl_errno)): typically `EEXIST`, a flush from a thread
    /// other than the ring's submitter.
    pub ctrl_flush_errors: u64,
    /// The errno of the last refused control call, 0 if none.
    pub last_ctrl_errno: i32,
    /// Out-of-buffers events seen ([`ZcrxEvent::OutOfBuffers`], Linux 7.2).
    pub out_of_buffer_events: u64,
    /// Copy-fallback events seen ([`ZcrxEvent::Copy`], Linux 7.2).
    pub copy_events: u64,
    /// Copies the kernel's copy fallback made, as the kernel counts them (Linux 7.2 with
    /// [`ZcrxConfig::events`]; 0 otherwise). Linux 7.3 counts one per skb fragment copied, not
    /// one per completion as its header says.
    pub copy_count: u64,
    /// Bytes the kernel copied from skb fragments in its copy fallback (as `copy_count`; 7.3
    /// copies bytes in an skb's linear part without counting them).
    pub copy_bytes: u64,
    /// Whether the kernel keeps `copy_count` and `copy_bytes` for this queue (Linux 7.2+ with
    /// [`ZcrxConfig::events`]); when false they stay 0 whatever was copied.
    pub kernel_copy_stats: bool,
}

impl ZcrxStats {
    /// `(copy_count, copy_bytes)` as the kernel counts them, or `None` when it does not keep
    /// them for this queue (before Linux 7.2, or without [`ZcrxConfig::events`]): a 0 then
    /// means "not counted", not "nothing copied".
    pub fn kernel_copies(&self) -> Option<(u64, u64)> {
        self.kernel_copy_stats
            .then_some((self.copy_count, self.copy_bytes))
    }
}

/// A zcrx interface queue over an [`Area`]. See the [module docs](self).
pub struct ZcrxIfq {
    pub(crate) core: Core,
    /// The refill queue and its producer.
    pub(crate) rq: RefillRing,
    area_token: u64,
    area_id: u16,
    pub(crate) zcrx_id: u32,
    pub(crate) ifname: String,
    if_index: u32,
    queue: u32,
    /// log2 of the kernel's buffer size (the page size on 6.18).
    buf_shift: u32,
    /// The kernel's user references per buffer, and what each chunk owes.
    refs: PageRefs,
    /// Released chunks whose refill entries are not all written yet, oldest first.
    pending: VecDeque<ChunkId>,
    queued: Vec<bool>,
    /// Kernel buffers of completions refused away from home, one entry per reference: no handle
    /// was made, so the next flush gives each reference straight back.
    refused: Vec<u32>,
    /// The ring the queue was registered on (a duplicate of its fd), for control calls; `None`
    /// when simulated.
    pub(crate) ring_fd: Option<Arc<OwnedFd>>,
    /// No device: no page pool takes refill entries, so every flush that leaves some unconsumed
    /// tells the kernel to take them.
    no_device: bool,
    features: ZcrxFeatures,
    /// `user_data` of event CQEs, if events were asked for.
    event_user_data: Option<u64>,
    /// The kernel's copy statistics inside the refill region (7.2, with events).
    kernel_stats: Option<SharedStats>,
    /// The refill region's memfd, for an exportable queue.
    region_fd: Option<OwnedFd>,
    /// Registered nowhere (`crate::sim`).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) simulated: bool,
    stats: ZcrxStats,
}

impl std::fmt::Debug for ZcrxIfq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZcrxIfq")
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("zcrx_id", &self.zcrx_id)
            .field("rq_entries", &self.rq.entries())
            .field("counts", &self.core.table.counts())
            .field("stats", &self.stats)
            .finish()
    }
}

// The queue moves between threads with its owner; it is not shared (`flush` and `complete` take
// `&mut self`, and the refill ring pointers make it `!Sync`).
const _: fn() = || {
    fn send<T: Send>() {}
    send::<ZcrxIfq>();
};

impl ZcrxIfq {
    /// The id receives must name (`zcrx_ifq_idx` in the SQE).
    pub fn zcrx_id(&self) -> u32 {
        self.zcrx_id
    }

    /// The interface name (`"no device"` for a `ZCRX_REG_NODEV` queue).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index (0 without a device).
    pub fn if_index(&self) -> u32 {
        self.if_index
    }

    /// The receive queue index.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Refill queue entries, as rounded by the kernel.
    pub fn rq_entries(&self) -> u32 {
        self.rq.entries()
    }

    /// The area token the kernel assigned (`area_id << 48`), part of every refill entry.
    pub fn area_token(&self) -> u64 {
        self.area_token
    }

    /// The kernel's buffer size: a completion never crosses a buffer boundary.
    pub fn buffer_size(&self) -> usize {
        1 << self.buf_shift
    }
    /// Released chunks still waiting for room in the refill queue.
    pub fn pending_chunks(&self) -> usize {
        self.pending.len()
    }

    /// What the kernel this queue was registered on offers.
    pub fn features(&self) -> ZcrxFeatures {
        self.features
    }

    /// Whether the queue has no device (`ZCRX_REG_NODEV`).
    pub fn is_no_device(&self) -> bool {
        self.no_device
    }

    /// The `user_data` of this queue's event CQEs, if [events](ZcrxConfig::events) were asked
    /// for. A CQE with it is not a receive completion: pass its `res` to
    /// [`event`](Self::event).
    pub fn event_user_data(&self) -> Option<u64> {
        self.event_user_data
    }

    /// Decodes an event CQE's `res` and counts it. `None` for a value the kernel does not send
    /// (nothing is counted). The kernel posts each kind once until
    /// [`rearm_event`](Self::rearm_event).
    pub fn event(&mut self, res: i32) -> Option<ZcrxEvent> {
        let event = match u32::try_from(res).ok()? {
            ZCRX_EVENT_ALLOC_FAIL => ZcrxEvent::OutOfBuffers,
            ZCRX_EVENT_COPY => ZcrxEvent::Copy,
            _ => return None,
        };
        match event {
            ZcrxEvent::OutOfBuffers => self.stats.out_of_buffer_events += 1,
            ZcrxEvent::Copy => self.stats.copy_events += 1,
        }
        Some(event)
    }

    /// Lets `event`, which fired, fire again (`ZCRX_CTRL_ARM_EVENT`, Linux 7.2). Errors: the
    /// kernel's `EINVAL` if it has not fired since the last arm ([`Error::Os`]), or
    /// [`Error::KernelTooOld`].
    pub fn rearm_event(&mut self, event: ZcrxEvent) -> Result<()> {
        let Some(ring) = self.ring_fd.as_ref().filter(|_| self.features.events()) else {
            return Err(Error::KernelTooOld {
                feature: "zcrx events (ZCRX_CTRL_ARM_EVENT)",
                needs: "7.2",
            });
        };
        calls::ctrl_arm_event(ring.as_fd(), self.zcrx_id, event.kernel_type()).map_err(|source| {
            Error::Os {
                what: "re-arming a zcrx event",
                source,
            }
        })
    }
}

impl RxPool for ZcrxIfq {
    type Stats = ZcrxStats;

    fn recv(&self, fd: impl Into<RecvFd>) -> squeue::Entry {
        self.recv_zc(fd)
    }

    fn recv_capped(&self, fd: impl Into<RecvFd>, max_bytes: u32) -> squeue::Entry {
        self.recv_zc_capped(fd, max_bytes)
    }

    /// Hands every chunk whose handles have all dropped (on any thread) back to the kernel: one
    /// refill entry per reference, then one release store of the tail. Returns how many chunks
    /// went back. If the refill queue is full the rest stays queued, in order, for the next
    /// flush. Call it once per event-loop turn, and before re-arming after
    /// [`RecvEvent::NoBuffers`].
    fn flush(&mut self) -> usize {
        self.flush_returns()
    }

    /// Free chunks: the kernel's to receive into (nothing waits in a pool: the kernel takes
    /// every returned chunk).
    fn available(&self) -> u32 {
        self.core.table.counts().kernel
    }

    /// Lifetime counters (with the kernel's copy statistics when events were asked for).
    fn stats(&self) -> ZcrxStats {
        let mut stats = self.stats;
        if let Some(k) = &self.kernel_stats {
            (stats.copy_count, stats.copy_bytes) = k.read();
            stats.kernel_copy_stats = true;
        }
        stats
    }

    /// Returns what can be returned and reports what the application still holds. There is no
    /// unregister: the queue stays bound until the io_uring is destroyed, which happens only once
    /// your `IoUring` and every [`RxBuf`] are dropped (the handles keep a duplicate of the ring
    /// fd, so the kernel cannot revoke their bytes). The area is never leaked: the kernel pinned
    /// its pages, so unmapping it after the last handle is safe.
    fn teardown(mut self) -> TeardownReport {
        self.flush_returns();
        let report = self.core.report(true);
        if report.held_chunks > 0 {
            tracing::debug!(
                zcrx_id = self.zcrx_id,
                "zcrx queue on {} torn down with {} chunk(s) ({} bytes) still held: they stay \
                 valid until their last handle drops, and the ring with them",
                self.ifname,
                report.held_chunks,
                report.held_bytes
            );
        }
        report
    }
}

impl Sealed for ZcrxIfq {
    fn core(&self) -> &Core {
        &self.core
    }
}
