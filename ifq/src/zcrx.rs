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
//! use zcrx_ifq::{Area, OwnerId, RecvEvent};
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
use crate::backend::{dup_ring_fd, Completion, Core, RecvEvent, TeardownReport};
pub use crate::bufring::RecvFd;
use crate::chunk::{ChunkId, ChunkState, OwnerId, Redelivery, Snapshot};
use crate::completion::{decode_zcrx, CompletionError, Event, ZcrxLoc, ZCRX_AREA_SHIFT};
use crate::error::{Error, Result, ZcrxRefusal};
use crate::refill::zcrx::rqe_off;
use crate::rxbuf::RxBuf;
use crate::sys::abi::{
    self, zcrx_event_desc, ZcrxRegistration, IO_RQ_MAX_ENTRIES, RQE_SIZE, RQ_HEADER_RESERVE,
    ZCRX_EVENT_ALLOC_FAIL, ZCRX_EVENT_COPY, ZCRX_EVENT_DESC_FLAG_STATS, ZCRX_FEATURE_EVENT,
    ZCRX_FEATURE_RX_PAGE_SIZE, ZCRX_REG_IMPORT, ZCRX_REG_NODEV,
};
use crate::sys::caps;
use crate::sys::mmap::Mmap;
use crate::sys::refill::{RefillRing, SharedStats};

mod export;
pub use export::ZcrxExport;

#[cfg(feature = "sim")]
pub use crate::sys::sim::abi_info;

/// `IFNAMSIZ`: interface names are at most 15 bytes plus a NUL.
pub const IFNAMSIZ: usize = 16;

/// Which network interface to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// By name, e.g. `"eth0"`.
    Name(String),
    /// By index (`ip link` shows it before the name).
    Index(u32),
    /// None: `ZCRX_REG_NODEV` (Linux 7.1+). Receives on any TCP socket of the ring are copied by
    /// the kernel into the area, with the same completions, refill ring and teardown scrub as on
    /// a NIC queue.
    NoDevice,
}

/// What the running kernel's zcrx offers, as `IORING_REGISTER_QUERY` (Linux 6.19+) reports it.
///
/// Before 6.19 there is no query: [`queried`](Self::queried) is false and the values are the
/// 6.15-6.18 rules (no registration flags, no control operations, and a refill header that fits
/// in the 256 bytes reserved for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZcrxFeatures {
    /// Whether the kernel answered the query (6.19+).
    pub queried: bool,
    /// `ZCRX_REG_*` flags the kernel accepts (import 6.19, no-device 7.1).
    pub register_flags: u64,
    /// `IORING_ZCRX_AREA_*` flags (dma-buf).
    pub area_flags: u64,
    /// Number of `ZCRX_CTRL_*` operations: flush and export (6.19), arm event (7.2), add area.
    pub ctrl_opcodes: u32,
    /// `ZCRX_FEATURE_*`: large receive buffers (7.0), events and statistics (7.2).
    pub features: u32,
    /// Bytes of the refill ring header.
    pub rq_hdr_size: u32,
    /// Alignment of the refill entries after the header.
    pub rq_hdr_alignment: u32,
    /// `1 << ZCRX_EVENT_*` the kernel can post (7.2).
    pub event_types: u32,
    /// Size of the statistics block (7.2; 0 before).
    pub stats_size: u32,
    /// Alignment of the statistics block in the refill region.
    pub stats_alignment: u32,
}

impl ZcrxFeatures {
    /// The 6.15-6.18 rules, for kernels without the query.
    pub(crate) const PRE_QUERY: Self = Self {
        queried: false,
        register_flags: 0,
        area_flags: abi::IORING_ZCRX_AREA_DMABUF as u64,
        ctrl_opcodes: 0,
        features: 0,
        rq_hdr_size: RQ_HEADER_RESERVE as u32,
        rq_hdr_alignment: 64,
        event_types: 0,
        stats_size: 0,
        stats_alignment: 8,
    };

    /// Asks the kernel through `ring` (any io_uring fd).
    pub fn query(ring: impl AsFd) -> Result<Self> {
        let os = |source| Error::Os {
            what: "querying zcrx features (IORING_REGISTER_QUERY)",
            source,
        };
        let Some(q) = abi::query_zcrx(ring.as_fd()).map_err(os)? else {
            return Ok(Self::PRE_QUERY);
        };
        let mut this = Self {
            queried: true,
            register_flags: q.register_flags,
            area_flags: q.area_flags,
            ctrl_opcodes: q.nr_ctrl_opcodes,
            features: q.features,
            rq_hdr_size: q.rq_hdr_size,
            rq_hdr_alignment: q.rq_hdr_alignment.max(1),
            ..Self::PRE_QUERY
        };
        if let Some(e) = abi::query_zcrx_event(ring.as_fd()).map_err(os)? {
            this.event_types = e.event_flags;
            this.stats_size = e.stats_size;
            this.stats_alignment = e.stats_off_alignment.max(1);
        }
        Ok(this)
    }

    /// Asks the kernel through a small throwaway ring.
    pub fn detect() -> Result<Self> {
        let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .build(1)
            .map_err(|source| Error::Os {
                what: "creating an io_uring to query zcrx features",
                source,
            })?;
        Self::query(&ring)
    }

    /// `ZCRX_REG_NODEV`: zcrx without a device (7.1).
    pub fn no_device(&self) -> bool {
        self.register_flags & u64::from(ZCRX_REG_NODEV) != 0
    }

    /// `ZCRX_REG_IMPORT` and `ZCRX_CTRL_EXPORT`: an ifq shared through an fd (6.19).
    pub fn export_import(&self) -> bool {
        self.register_flags & u64::from(ZCRX_REG_IMPORT) != 0
            && self.ctrl_opcodes > abi::ZCRX_CTRL_EXPORT
    }

    /// `ZCRX_CTRL_FLUSH_RQ`: refill entries taken on request (6.19).
    pub fn flush_rq(&self) -> bool {
        self.ctrl_opcodes > abi::ZCRX_CTRL_FLUSH_RQ
    }

    /// Out-of-buffers and copy-fallback events, and copy statistics (7.2).
    pub fn events(&self) -> bool {
        self.features & ZCRX_FEATURE_EVENT != 0 && self.ctrl_opcodes > abi::ZCRX_CTRL_ARM_EVENT
    }

    /// Receive buffers larger than a page (`rx_buf_len`, 7.0; the NIC driver must support them).
    pub fn large_buffers(&self) -> bool {
        self.features & ZCRX_FEATURE_RX_PAGE_SIZE != 0
    }

    /// The refill region for `entries` entries, and where the statistics go when `stats`:
    /// `ALIGN(ALIGN(header, alignment) + entries * 16 [+ stats], page)`.
    fn region(&self, entries: u32, page: usize, stats: bool) -> (usize, Option<u64>) {
        let align = |v: usize, a: usize| v.div_ceil(a) * a;
        let rqes = align(self.rq_hdr_size as usize, self.rq_hdr_alignment as usize);
        let end = rqes + entries as usize * RQE_SIZE;
        if stats && self.stats_size > 0 {
            let at = align(end, self.stats_alignment as usize);
            (align(at + self.stats_size as usize, page), Some(at as u64))
        } else {
            (align(end, page), None)
        }
    }
}

/// [`ZcrxIfq::export`] refused: why, and the queue, still usable.
#[derive(Debug)]
pub struct ExportRefused {
    /// The queue, as it was (flushed).
    pub queue: Box<ZcrxIfq>,
    /// Why.
    pub error: Error,
}

impl std::fmt::Display for ExportRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ExportRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// An event the kernel posts for a zcrx queue (Linux 7.2), once per kind until
/// [re-armed](ZcrxIfq::rearm_event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZcrxEvent {
    /// `ZCRX_EVENT_ALLOC_FAIL`: the queue had no free buffer (on a NIC the packet was dropped
    /// and TCP will retransmit; return buffers).
    OutOfBuffers,
    /// `ZCRX_EVENT_COPY`: data went through the copy fallback (always, without a device).
    Copy,
}

impl ZcrxEvent {
    fn kernel_type(self) -> u32 {
        match self {
            Self::OutOfBuffers => ZCRX_EVENT_ALLOC_FAIL,
            Self::Copy => ZCRX_EVENT_COPY,
        }
    }
}

/// How to register a zcrx interface queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZcrxConfig {
    /// The interface.
    pub interface: Interface,
    /// The receive queue index on it (`ethtool -l DEV` shows how many there are).
    pub queue: u32,
    /// Refill queue entries (rounded up to a power of two, at most 32768). Default: one per page
    /// of the area, so that every buffer can be returned at once.
    pub rq_entries: Option<u32>,
    /// Most bytes one owner may hold before [`ZcrxIfq::over_limit`] says to stop reading it.
    pub owner_limit: Option<u64>,
    /// The kernel buffer size to ask for (`rx_buf_len`, Linux 7.0+): a power of two of at least
    /// a page, at most the chunk size; `None` for a page. Needs a NIC driver that supports it;
    /// without a device the kernel refuses anything but a page.
    pub rx_buf_len: Option<u32>,
    /// Ask the kernel (7.2+) to post [`ZcrxEvent`]s as CQEs with this `user_data`, and to keep
    /// copy statistics ([`ZcrxStats::copy_count`]).
    pub events: Option<u64>,
    /// Make the queue [exportable](ZcrxIfq::export): the refill region goes in a memfd, and the
    /// area must be [shared](crate::AreaBuilder::shared).
    pub exportable: bool,
}

impl ZcrxConfig {
    /// Queue `queue` of the interface named `ifname`.
    pub fn new(ifname: impl Into<String>, queue: u32) -> Self {
        Self::on(Interface::Name(ifname.into()), queue)
    }

    /// Queue `queue` of the interface with index `if_index`.
    pub fn with_index(if_index: u32, queue: u32) -> Self {
        Self::on(Interface::Index(if_index), queue)
    }

    /// No device (`ZCRX_REG_NODEV`, Linux 7.1+); see [`Interface::NoDevice`].
    pub fn no_device() -> Self {
        Self::on(Interface::NoDevice, 0)
    }

    fn on(interface: Interface, queue: u32) -> Self {
        Self {
            interface,
            queue,
            rq_entries: None,
            owner_limit: None,
            rx_buf_len: None,
            events: None,
            exportable: false,
        }
    }

    /// Makes the queue exportable ([`exportable`](Self::exportable)).
    pub fn exportable(mut self, on: bool) -> Self {
        self.exportable = on;
        self
    }

    /// Sets the kernel buffer size ([`rx_buf_len`](Self::rx_buf_len)).
    pub fn rx_buf_len(mut self, bytes: u32) -> Self {
        self.rx_buf_len = Some(bytes);
        self
    }

    /// Asks for events with this `user_data` ([`events`](Self::events)).
    pub fn events(mut self, user_data: u64) -> Self {
        self.events = Some(user_data);
        self
    }

    /// Sets the refill queue size.
    pub fn rq_entries(mut self, entries: u32) -> Self {
        self.rq_entries = Some(entries);
        self
    }

    /// Sets the per-owner byte limit.
    pub fn owner_limit(mut self, bytes: u64) -> Self {
        self.owner_limit = Some(bytes);
        self
    }
}

/// Checks an interface name the way the kernel would before looking it up: not empty, shorter
/// than [`IFNAMSIZ`], no NUL, no `/`, no whitespace, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() >= IFNAMSIZ {
        Some("it is longer than 15 bytes (IFNAMSIZ is 16 including the NUL)")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not interface names")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::BadInterfaceName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

fn netdevice_socket() -> Result<rustix::fd::OwnedFd> {
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .or_else(|_| {
        socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )
    })
    .map_err(|e| Error::Os {
        what: "opening a socket to look up the interface",
        source: e.into(),
    })
}

/// Resolves an interface to `(name, index)`. A name is validated first
/// ([`Error::BadInterfaceName`]); a name or index that does not exist is
/// [`Error::UnknownInterface`].
pub fn resolve_interface(interface: &Interface) -> Result<(String, u32)> {
    match interface {
        Interface::Name(name) => {
            validate_ifname(name)?;
            let sock = netdevice_socket()?;
            match rustix::net::netdevice::name_to_index(&sock, name) {
                Ok(index) => Ok((name.clone(), index)),
                Err(Errno::NODEV) => Err(Error::UnknownInterface { name: name.clone() }),
                Err(e) => Err(Error::Os {
                    what: "looking up the interface index",
                    source: e.into(),
                }),
            }
        }
        Interface::NoDevice => Ok(("no device".to_owned(), 0)),
        Interface::Index(index) => {
            let sock = netdevice_socket()?;
            match rustix::net::netdevice::index_to_name(&sock, *index) {
                Ok(name) => Ok((name, *index)),
                Err(Errno::NODEV) => Err(Error::UnknownInterface {
                    name: format!("ifindex {index}"),
                }),
                Err(e) => Err(Error::Os {
                    what: "looking up the interface name",
                    source: e.into(),
                }),
            }
        }
    }
}

/// Receive queues of `ifname` as sysfs shows them (`/sys/class/net/IF/queues/rx-N`); `None`
/// when sysfs cannot tell (not mounted, another network namespace's view).
pub fn rx_queue_count(ifname: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues")).ok()?;
    let n = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("rx-")))
        .count();
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}

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

enum Target {
    Device {
        ifname: String,
        if_index: u32,
        queue: u32,
    },
    NoDevice,
}

impl Target {
    fn ifname(&self) -> &str {
        match self {
            Self::Device { ifname, .. } => ifname,
            Self::NoDevice => "no device",
        }
    }

    fn queue(&self) -> u32 {
        match self {
            Self::Device { queue, .. } => *queue,
            Self::NoDevice => 0,
        }
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
    bufs_per_chunk: usize,
    /// Per kernel buffer: user references the kernel gave us that no refill entry returned yet.
    urefs: Vec<u32>,
    /// Per chunk: the sum of `urefs` over its buffers.
    owed: Vec<u32>,
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
    /// Registered nowhere (`sys::sim`).
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

/// The owner's side of the refill queue during a flush: what each kernel buffer is owed and
/// where its entries go.
struct RefillWriter<'a> {
    rq: &'a mut RefillRing,
    area_token: u64,
    buf_shift: u32,
    bufs_per_chunk: usize,
    urefs: &'a mut [u32],
    owed: &'a mut [u32],
    /// Entries written.
    rqes: u64,
}

impl RefillWriter<'_> {
    /// Writes the refill entries `chunk` still owes. False if the queue filled up first (what
    /// was written stays written and counted).
    #[inline]
    fn write_chunk(&mut self, chunk: ChunkId) -> bool {
        let first = chunk as usize * self.bufs_per_chunk;
        for buf in first..first + self.bufs_per_chunk {
            if self.owed[chunk as usize] == 0 {
                break;
            }
            while self.urefs[buf] > 0 {
                if !self.write_ref(buf) {
                    return false;
                }
                self.urefs[buf] -= 1;
                self.owed[chunk as usize] -= 1;
            }
        }
        true
    }

    /// Writes one refill entry for kernel buffer `buf`. False if the queue is full.
    #[inline]
    fn write_ref(&mut self, buf: usize) -> bool {
        // One of the references the kernel gave us for `buf`, which no handle needs any more.
        let off = rqe_off((buf as u64) << self.buf_shift, self.area_token);
        if !self.rq.push(off) {
            return false;
        }
        self.rqes += 1;
        true
    }
}

/// Writes the entries of released chunks that waited for room in the refill ring, oldest first,
/// until the ring is full. Returns how many chunks went back.
fn write_pending(
    core: &mut Core,
    out: &mut RefillWriter<'_>,
    pending: &mut VecDeque<ChunkId>,
    queued: &mut [bool],
) -> usize {
    let mut returned = 0;
    while let Some(&chunk) = pending.front() {
        if !matches!(core.table.state(chunk), Ok(ChunkState::Refill { .. })) {
            // The kernel handed out another buffer of this chunk while it waited: it comes back
            // when its new handles drop.
            pending.pop_front();
            queued[chunk as usize] = false;
            continue;
        }
        if !out.write_chunk(chunk) {
            break;
        }
        let published = core.table.publish(chunk);
        debug_assert!(published.is_ok(), "a refill chunk publishes");
        pending.pop_front();
        queued[chunk as usize] = false;
        returned += 1;
    }
    returned
}

/// Sizes worked out before registering.
pub(crate) struct Plan {
    /// log2 of the buffer size asked for (a page unless `rx_buf_len` says more).
    pub(crate) buf_shift: u32,
    pub(crate) entries: u32,
    pub(crate) region_len: usize,
    /// Where the kernel's statistics go in the region, when events are asked for.
    stats_offset: Option<u64>,
}

impl Plan {
    pub(crate) fn new(
        area: &Area,
        rq_entries: Option<u32>,
        rx_buf_len: Option<u32>,
        features: &ZcrxFeatures,
        stats: bool,
        no_device: bool,
    ) -> Result<Self> {
        let page = rustix::param::page_size();
        let buf = match rx_buf_len {
            None | Some(0) => page,
            Some(len) => {
                let len = len as usize;
                if !len.is_power_of_two() || len < page {
                    return Err(Error::BadRxBufLen {
                        rx_buf_len: len,
                        why: "it must be a power of two of at least a page",
                    });
                }
                if len > crate::area::MAX_CHUNK_SIZE {
                    return Err(Error::BadRxBufLen {
                        rx_buf_len: len,
                        why: "it is larger than the largest chunk (1 MiB), which must hold it",
                    });
                }
                if len > page && no_device {
                    return Err(Error::BadRxBufLen {
                        rx_buf_len: len,
                        why: "without a device the kernel copies into page-sized buffers only \
                              (it answers EOPNOTSUPP); leave rx_buf_len unset",
                    });
                }
                if len > page && !features.large_buffers() {
                    return Err(Error::KernelTooOld {
                        feature: "zcrx receive buffers larger than a page (rx_buf_len)",
                        needs: "7.0",
                    });
                }
                len
            }
        };
        if area.chunk_size() < buf {
            return Err(Error::ZcrxChunkTooSmall {
                chunk_size: area.chunk_size(),
                buffer_size: buf,
            });
        }
        let bufs = u32::try_from(area.len() / buf).unwrap_or(u32::MAX);
        let entries = rq_entries
            .unwrap_or(bufs)
            .clamp(1, IO_RQ_MAX_ENTRIES)
            .next_power_of_two();
        let (region_len, stats_offset) = if features.queried {
            features.region(entries, page, stats)
        } else {
            (RefillRing::region_len(entries, page), None)
        };
        Ok(Self {
            buf_shift: buf.trailing_zeros(),
            entries,
            region_len,
            stats_offset,
        })
    }
}

impl ZcrxIfq {
    /// Registers `area` on receive queue `config.queue` of `config.interface` for zero-copy
    /// receive, through `ring`.
    ///
    /// `ring` must be built with `setup_single_issuer()` and `setup_defer_taskrun()` (its CQEs
    /// are 32 bytes by type), and this must run on the thread that created it (a `SINGLE_ISSUER`
    /// ring refuses registrations from other threads).
    ///
    /// Errors:
    /// - [`Error::RingNotSuitable`] when the ring lacks `SINGLE_ISSUER` or belongs to another
    ///   thread (a ring with `SINGLE_ISSUER` but without `DEFER_TASKRUN` cannot be detected from
    ///   here: the kernel answers `EINVAL`, [`ZcrxRefusal::InvalidSetup`]);
    /// - [`Error::BadInterfaceName`], [`Error::UnknownInterface`];
    /// - [`Error::ZcrxChunkTooSmall`] when a chunk is smaller than a page;
    /// - [`Error::MemlockLimit`] when the area and refill region exceed RLIMIT_MEMLOCK (the
    ///   kernel charges them to it since 6.17);
    /// - [`Error::ZcrxRefused`] with the kernel's reason.
    pub fn register(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        area: Area,
        config: ZcrxConfig,
    ) -> Result<Self> {
        check_ring(ring)?;
        if config.interface == Interface::NoDevice {
            return Self::register_target(RingRef(ring), area, Target::NoDevice, &config);
        }
        let (ifname, if_index) = resolve_interface(&config.interface)?;
        // The kernel checks the capability before anything else; so do we, so that a process
        // without it hears about the capability rather than about the queue index.
        if !caps::has_effective_cap(caps::CAP_NET_ADMIN) {
            return Err(Error::ZcrxRefused {
                ifname,
                queue: config.queue,
                refusal: ZcrxRefusal::NotPermitted,
            });
        }
        if let Some(queues) = rx_queue_count(&ifname) {
            if config.queue >= queues {
                return Err(Error::QueueOutOfRange {
                    ifname,
                    queue: config.queue,
                    queues,
                });
            }
        }
        let target = Target::Device {
            ifname,
            if_index,
            queue: config.queue,
        };
        Self::register_target(RingRef(ring), area, target, &config)
    }

    /// Registers `area` without a device (`ZCRX_REG_NODEV`, Linux 7.1+): receives on any TCP
    /// socket of the ring copy into the area, with the same buffer and refill protocol. Useful to
    /// run zcrx code paths without a capable NIC. Needs `CAP_NET_ADMIN` like a device queue.
    ///
    /// On kernels before 7.1 this returns [`Error::KernelTooOld`] (the kernel rejects the flag
    /// with `EINVAL`). The same as [`register`](Self::register) with
    /// [`ZcrxConfig::no_device`].
    pub fn register_nodev(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        area: Area,
        rq_entries: Option<u32>,
        owner_limit: Option<u64>,
    ) -> Result<Self> {
        let mut config = ZcrxConfig::no_device();
        config.rq_entries = rq_entries;
        config.owner_limit = owner_limit;
        Self::register(ring, area, config)
    }

    fn register_target(
        ring: RingRef<'_>,
        area: Area,
        target: Target,
        config: &ZcrxConfig,
    ) -> Result<Self> {
        let features = query_fd(ring.fd())?;
        let no_device = matches!(target, Target::NoDevice);
        if no_device && features.queried && !features.no_device() {
            return Err(Error::KernelTooOld {
                feature: "ZCRX_REG_NODEV",
                needs: "7.1",
            });
        }
        if config.events.is_some() && !features.events() {
            return Err(Error::KernelTooOld {
                feature: "zcrx events and statistics",
                needs: "7.2",
            });
        }
        let plan = Plan::new(
            &area,
            config.rq_entries,
            config.rx_buf_len,
            &features,
            config.events.is_some(),
            no_device,
        )?;
        if config.exportable && area.shared_fd().is_none() {
            return Err(Error::NotExportable {
                why: "an exportable queue needs a shared area: Area::builder().shared(true)",
            });
        }
        let needed = area.len() as u64 + plan.region_len as u64;
        caps::may_lock(needed).map_err(|(needed, limit)| Error::MemlockLimit { needed, limit })?;
        let map_err = |source| Error::Map {
            len: plan.region_len,
            source,
        };
        let (region, region_fd) = if config.exportable {
            let (map, fd) = Mmap::shared_memfd("zcrx-refill", plan.region_len).map_err(map_err)?;
            (map, Some(fd))
        } else {
            (
                Mmap::anonymous(plan.region_len, false, true).map_err(map_err)?,
                None,
            )
        };
        // Duplicated before registering, so a failure here leaves nothing registered.
        let ring_fd = dup_ring_fd(ring.fd())?;

        let (if_idx, if_rxq, flags) = match &target {
            Target::Device {
                if_index, queue, ..
            } => (*if_index, *queue, 0),
            Target::NoDevice => (0, 0, ZCRX_REG_NODEV),
        };
        let events = config.events.map(|user_data| {
            let mut desc = zcrx_event_desc {
                user_data,
                type_mask: features.event_types
                    & ((1 << ZCRX_EVENT_ALLOC_FAIL) | (1 << ZCRX_EVENT_COPY)),
                ..Default::default()
            };
            if let Some(at) = plan.stats_offset {
                desc.flags = ZCRX_EVENT_DESC_FLAG_STATS;
                desc.stats_offset = at;
            }
            desc
        });
        // The area and the region end up in `Shared` and stay mapped for as long as the queue or
        // any handle lives; the area is fresh (owned by value), so no handle points into it.
        let answer = abi::register_zcrx(
            ring.fd(),
            &ZcrxRegistration {
                if_idx,
                if_rxq,
                rq_entries: plan.entries,
                flags,
                area: area.mapping(),
                region: &region,
                rx_buf_len: config.rx_buf_len.unwrap_or(0),
                events,
            },
        );
        let reg = match answer {
            Ok(reg) => reg,
            Err(e) => {
                if e.raw_os_error() == Some(Errno::EXIST.raw_os_error())
                    && !ring.on_submitter_thread()
                {
                    return Err(another_thread());
                }
                let err = refusal_error(&target, config, e);
                tracing::debug!(
                    ifname = target.ifname(),
                    queue = target.queue(),
                    "zcrx registration refused: {err}"
                );
                return Err(err);
            }
        };
        // 7.0+ writes back the buffer size in use (0 before: a page).
        let buf_shift = match reg.rx_buf_len {
            0 => plan.buf_shift,
            len if len.is_power_of_two() && len as usize <= area.chunk_size() => {
                len.trailing_zeros()
            }
            len => {
                return Err(Error::Os {
                    what: "the kernel chose a buffer size that does not divide the chunks",
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("rx_buf_len {len}, chunk size {}", area.chunk_size()),
                    ),
                })
            }
        };

        // The kernel answered: entries as rounded, the offsets inside the region, the id.
        let entries = reg.rq_entries;
        let region = Arc::new(region);
        let rq = RefillRing::new(
            Arc::clone(&region),
            reg.offsets.head,
            reg.offsets.tail,
            reg.offsets.rqes,
            entries,
        )
        .ok_or_else(|| Error::Os {
            what: "the kernel returned refill queue offsets that do not fit the region",
            source: io::ErrorKind::InvalidData.into(),
        })?;
        let (ifname, if_index, queue) = match target {
            Target::Device {
                ifname,
                if_index,
                queue,
            } => (ifname, if_index, queue),
            Target::NoDevice => ("no device".to_owned(), 0, 0),
        };
        let kernel_stats = plan
            .stats_offset
            .filter(|_| config.events.is_some())
            .and_then(|at| SharedStats::new(&region, at));
        let mut this = Self::assemble(
            area,
            region,
            rq,
            reg.rq_area_token,
            reg.zcrx_id,
            buf_shift,
            config.owner_limit,
            false,
        );
        let ring_fd = Arc::new(ring_fd);
        this.core.shared.keep_alive(Box::new(Arc::clone(&ring_fd)));
        this.ring_fd = Some(ring_fd);
        this.no_device = no_device;
        this.features = features;
        this.event_user_data = config.events;
        this.kernel_stats = kernel_stats;
        this.region_fd = region_fd;
        this.ifname = ifname;
        this.if_index = if_index;
        this.queue = queue;
        Ok(this)
    }

    /// The queue over `area`, with the refill ring `rq` in `region`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        area: Area,
        region: Arc<Mmap>,
        rq: RefillRing,
        area_token: u64,
        zcrx_id: u32,
        buf_shift: u32,
        owner_limit: Option<u64>,
        simulated: bool,
    ) -> Self {
        let chunks = area.chunks() as usize;
        let bufs_per_chunk = area.chunk_size() >> buf_shift;
        let bufs = area.len() >> buf_shift;
        let mut core = Core::new(area, Redelivery::Always);
        core.table.set_owner_limit(owner_limit);
        // Every buffer starts in the kernel's free list.
        while core.table.take_from_pool().is_some() {}
        core.shared.keep_alive(Box::new(region));
        Self {
            core,
            rq,
            area_token,
            area_id: (area_token >> ZCRX_AREA_SHIFT) as u16,
            zcrx_id,
            ifname: String::new(),
            if_index: 0,
            queue: 0,
            buf_shift,
            bufs_per_chunk,
            urefs: vec![0; bufs],
            owed: vec![0; chunks],
            pending: VecDeque::new(),
            queued: vec![false; chunks],
            refused: Vec::new(),
            ring_fd: None,
            no_device: false,
            features: ZcrxFeatures::PRE_QUERY,
            event_user_data: None,
            kernel_stats: None,
            region_fd: None,
            simulated,
            stats: ZcrxStats::default(),
        }
    }

    /// Hands the queue over to another ring, in this process or another (Linux 6.19+): returns
    /// the kernel's export fd with the area's and refill region's memfds and the geometry, for
    /// [`ZcrxExport::send`] and [`ZcrxIfq::import`]. The refill ring has one producer, so this
    /// queue is consumed: the importer returns buffers from now on. The ring it was registered
    /// on may be dropped afterwards; the queue lives while any ring or fd holds it.
    ///
    /// Errors ([`Error::NotExportable`]): the queue was not registered with
    /// [`ZcrxConfig::exportable`], the application still holds buffers of it (they would have
    /// no producer to go back through), or the kernel lacks export ([`Error::KernelTooOld`]).
    /// The queue comes back with the error ([`ExportRefused::queue`]), unchanged but flushed.
    pub fn export(mut self) -> std::result::Result<ZcrxExport, ExportRefused> {
        match self.export_parts() {
            Ok(export) => Ok(export),
            Err(error) => Err(ExportRefused {
                queue: Box::new(self),
                error,
            }),
        }
    }

    fn export_parts(&mut self) -> Result<ZcrxExport> {
        if !self.features.export_import() {
            return Err(Error::KernelTooOld {
                feature: "zcrx export and import (ZCRX_CTRL_EXPORT, ZCRX_REG_IMPORT)",
                needs: "6.19",
            });
        }
        let exportable = self.region_fd.is_some()
            && self.core.area().shared_fd().is_some()
            && self.ring_fd.is_some();
        if !exportable {
            return Err(Error::NotExportable {
                why: "register it with ZcrxConfig::exportable(true) over a shared area",
            });
        }
        self.flush();
        let counts = self.core.table.counts();
        if counts.user > 0 || counts.refill > 0 || !self.refused.is_empty() {
            return Err(Error::NotExportable {
                why: "the application still holds buffers of it; drop them, flush, export",
            });
        }
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned().map_err(|source| Error::Os {
                what: "duplicating an fd for the export",
                source,
            })
        };
        let (Some(region_fd), Some(area_fd), Some(ring)) = (
            self.region_fd.as_ref(),
            self.core.area().shared_fd(),
            self.ring_fd.as_ref(),
        ) else {
            unreachable!("checked above")
        };
        let (area, region) = (dup(area_fd)?, dup(region_fd.as_fd())?);
        let zcrx = abi::ctrl_export(ring.as_fd(), self.zcrx_id).map_err(|source| Error::Os {
            what: "exporting the zcrx queue (ZCRX_CTRL_EXPORT)",
            source,
        })?;
        let (head, tail, rqes) = self.rq.offsets();
        Ok(ZcrxExport {
            zcrx,
            area,
            region,
            info: export::ExportInfo {
                chunk_size: self.chunk_size() as u32,
                chunks: self.core.area().chunks(),
                buf_shift: self.buf_shift,
                rq_entries: self.rq.entries(),
                region_len: self.rq.mapped_len() as u64,
                head,
                tail,
                rqes,
                no_device: self.no_device,
                area_token: self.area_token,
            },
        })
    }

    /// Takes over an [exported](Self::export) queue on `ring` (built like a ring for
    /// [`register`](Self::register); on this thread), in this process or one the export was
    /// [sent](ZcrxExport::send) to. Everything that came in is checked against the files and
    /// the kernel's answer first ([`Error::BadExport`]).
    ///
    /// Linux 7.3 checks `CAP_NET_ADMIN` for an import as for any registration (before it looks
    /// at the import flag), so the importer needs the capability too: without it this is
    /// [`Error::ZcrxRefused`] with [`ZcrxRefusal::NotPermitted`].
    ///
    /// Events stay with the ring that registered the queue.
    pub fn import(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        export: ZcrxExport,
        owner_limit: Option<u64>,
    ) -> Result<Self> {
        check_ring(ring)?;
        let features = query_on(ring)?;
        if !features.export_import() {
            return Err(Error::KernelTooOld {
                feature: "zcrx export and import (ZCRX_CTRL_EXPORT, ZCRX_REG_IMPORT)",
                needs: "6.19",
            });
        }
        let ZcrxExport {
            zcrx,
            area,
            region,
            info,
        } = export;
        let mapped = export::Mapped::new(area, region, &info)?;
        let reg = abi::import_zcrx(ring.as_fd(), zcrx.as_fd());
        let reg = match reg {
            Ok(reg) => reg,
            Err(e) => {
                if e.raw_os_error() == Some(Errno::EXIST.raw_os_error())
                    && !on_submitter_thread(ring)
                {
                    return Err(another_thread());
                }
                return Err(match e.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::BADF) => Error::BadExport {
                        why: "the fd is not an exported zcrx queue (EBADF)".into(),
                    },
                    // Linux 7.3 checks CAP_NET_ADMIN before it looks at the import flag.
                    Some(Errno::PERM) => Error::ZcrxRefused {
                        ifname: "an imported queue".into(),
                        queue: 0,
                        refusal: ZcrxRefusal::NotPermitted,
                    },
                    _ => Error::Os {
                        what: "importing the zcrx queue (ZCRX_REG_IMPORT)",
                        source: e,
                    },
                });
            }
        };
        let o = reg.offsets;
        let this = Self::attach(
            ring,
            mapped,
            &info,
            reg.zcrx_id,
            (o.head, o.tail, o.rqes),
            features,
            owner_limit,
        )?;
        // The ring holds the queue now; the export fd's reference may go.
        drop(zcrx);
        Ok(this)
    }

    /// A queue over `mapped`, imported on `ring` as `zcrx_id` with
    /// the refill ring at `offsets`, which must be the ones `info` names.
    fn attach(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        mapped: export::Mapped,
        info: &export::ExportInfo,
        zcrx_id: u32,
        offsets: (u32, u32, u32),
        features: ZcrxFeatures,
        owner_limit: Option<u64>,
    ) -> Result<Self> {
        let bad = |why: String| Error::BadExport { why };
        let (head, tail, rqes) = offsets;
        if offsets != (info.head, info.tail, info.rqes) {
            return Err(bad(format!(
                "the kernel puts the refill ring at {offsets:?}, the export says {:?}",
                (info.head, info.tail, info.rqes)
            )));
        }
        let export::Mapped {
            area,
            region_map,
            region_fd,
        } = mapped;
        let region_map = Arc::new(region_map);
        let mut rq = RefillRing::new(Arc::clone(&region_map), head, tail, rqes, info.rq_entries)
            .ok_or_else(|| bad("the refill ring does not fit the region".into()))?;
        if !rq.resume() {
            return Err(bad(
                "the refill ring's head and tail are inconsistent".into()
            ));
        }
        let ring_fd = dup_ring_fd(ring.as_fd())?;
        let mut this = Self::assemble(
            area,
            region_map,
            rq,
            info.area_token,
            zcrx_id,
            info.buf_shift,
            owner_limit,
            false,
        );
        let ring_fd = Arc::new(ring_fd);
        this.core.shared.keep_alive(Box::new(Arc::clone(&ring_fd)));
        this.ring_fd = Some(ring_fd);
        this.no_device = info.no_device;
        this.features = features;
        this.region_fd = Some(region_fd);
        this.ifname = "imported".to_owned();
        Ok(this)
    }

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

    /// The area's chunk size.
    pub fn chunk_size(&self) -> usize {
        self.core.area().chunk_size()
    }

    /// The kernel's buffer size: a completion never crosses a buffer boundary.
    pub fn buffer_size(&self) -> usize {
        1 << self.buf_shift
    }

    /// A multishot zero-copy receive on `fd` (a TCP socket whose flow arrives on this queue).
    /// Set `user_data` and push it. `len` 0 means no byte limit.
    pub fn recv_zc(&self, fd: impl Into<RecvFd>) -> squeue::Entry {
        match fd.into() {
            RecvFd::Fd(fd) => opcode::RecvZc::new(fd, 0).ifq(self.zcrx_id).build(),
            RecvFd::Fixed(fd) => opcode::RecvZc::new(fd, 0).ifq(self.zcrx_id).build(),
        }
    }

    /// Decodes and checks a completion of a receive from [`recv_zc`](Self::recv_zc) and charges
    /// its bytes to `owner`. `big_cqe` is the second half of the 32-byte CQE
    /// (`cqueue::Entry32::big_cqe()`). Every kernel value is checked before it becomes a slice;
    /// a bad one is an error and nothing is read or recorded.
    #[inline]
    pub fn complete(
        &mut self,
        owner: OwnerId,
        res: i32,
        flags: u32,
        big_cqe: [u64; 2],
    ) -> Result<Completion> {
        let d = decode_zcrx(res, flags, big_cqe);
        let event = match d.event {
            Event::Data { len } => {
                let loc = d.loc.expect("the decoder gives a location for data");
                RecvEvent::Data(self.take(owner, loc, len)?)
            }
            Event::Eof => RecvEvent::Eof,
            Event::NoBuffers => {
                self.stats.no_buffers += 1;
                RecvEvent::NoBuffers
            }
            Event::CqOverflow => {
                self.stats.cq_overflows += 1;
                RecvEvent::CqOverflow
            }
            Event::Error { errno } => RecvEvent::Error(io::Error::from_raw_os_error(errno)),
        };
        Ok(Completion {
            event,
            more: d.more,
        })
    }

    #[inline]
    fn take(&mut self, owner: OwnerId, loc: ZcrxLoc, len: u32) -> Result<RxBuf> {
        if loc.area_id != self.area_id {
            return Err(CompletionError::WrongArea {
                area_id: loc.area_id,
                expected: self.area_id,
            }
            .into());
        }
        let area = self.core.area();
        let (chunk, in_chunk) =
            area.locate(loc.offset)
                .ok_or(CompletionError::OffsetOutOfRange {
                    offset: loc.offset,
                    area_len: area.len() as u64,
                })?;
        // The kernel never lets a completion cross one of its buffers; one that does would break
        // the per-buffer reference count.
        let buf_size = 1u64 << self.buf_shift;
        let in_buf = loc.offset & (buf_size - 1);
        if in_buf + u64::from(len) > buf_size {
            return Err(CompletionError::LengthOutOfRange {
                offset: in_buf as u32,
                len,
                chunk_size: buf_size as u32,
            }
            .into());
        }
        let buf = (loc.offset >> self.buf_shift) as usize;
        if self.core.shared.returns.away_from_home() {
            // The kernel may hand out more of a chunk the application holds, and drops on the
            // home thread count on the owner adding such handles only there: no handle. The
            // reference the kernel gave us goes back at the next flush (the kernel keeps the
            // buffer while any other reference, a handle's, is out).
            self.refused.push(buf as u32);
            self.stats.refused += 1;
            if self.stats.refused == 1 {
                tracing::warn!(
                    zcrx_id = self.zcrx_id,
                    "a zcrx completion was refused away from the queue's home thread (its data \
                     is lost; ZcrxStats::refused counts them): complete on the home thread"
                );
            }
            return Err(Error::AwayFromHome);
        }
        let handle = self.core.deliver(chunk, in_chunk, len, owner, false)?;
        // Bounded: the kernel gives a buffer out again only after all its references came back,
        // so one buffer collects at most one reference per byte.
        self.urefs[buf] = self.urefs[buf].saturating_add(1);
        self.owed[chunk as usize] = self.owed[chunk as usize].saturating_add(1);
        self.stats.deliveries += 1;
        self.stats.bytes += u64::from(len);
        Ok(handle)
    }

    /// Makes the calling thread this queue's home: a handle whose last drop happens on this
    /// thread returns its chunk without an atomic read-modify-write (other threads take the
    /// shared lock-free path as before). Call it once, on the thread that runs the event loop.
    ///
    /// Returns false if another thread is home already. The queue then belongs to its home
    /// thread: [`complete`](Self::complete) elsewhere fails with [`Error::AwayFromHome`] (the
    /// kernel may hand out more of a chunk the application holds, and the home thread's drops
    /// rely on such handles being added only there; the refused completion's data is lost and
    /// its buffer goes back to the kernel at the next [`flush`](Self::flush), counted in
    /// [`ZcrxStats::refused`]); if the queue is dropped on another thread,
    /// chunks dropped at home stay out of circulation and the area is never unmapped (leaked,
    /// never reused).
    pub fn set_home_thread(&mut self) -> bool {
        self.core.shared.returns.bind_home()
    }

    /// Installs `wake`, which the drop of a handle on another thread calls (on that thread)
    /// while this queue is [armed](Self::arm_return_wake), so that an event loop can sleep while
    /// it waits for buffers the application holds elsewhere: write to an eventfd the loop reads,
    /// say. Keep it short and non-blocking. Once per queue: returns false (and drops `wake`) if
    /// one is installed already.
    pub fn set_return_waker(&mut self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        self.core.shared.returns.set_waker(Box::new(wake)).is_ok()
    }

    /// Call before the event loop sleeps: the next chunk returned on another thread calls the
    /// [waker](Self::set_return_waker), once. Returns true if chunks came back on other threads
    /// already: [`flush`](Self::flush) them instead of sleeping, as no wake-up will come for
    /// them. Without a waker installed it only answers that question.
    pub fn arm_return_wake(&self) -> bool {
        self.core.shared.returns.arm_wake()
    }

    /// Call once awake: returns need not call the waker any more (left armed, the next return
    /// on another thread would only wake the loop once for nothing).
    pub fn disarm_return_wake(&self) {
        self.core.shared.returns.disarm_wake()
    }

    /// Hands every chunk whose handles have all dropped (on any thread) back to the kernel: one
    /// refill entry per reference, then one release store of the tail. Returns how many chunks
    /// went back. If the refill queue is full the rest stays queued, in order, for the next
    /// flush. Call it once per event-loop turn, and before re-arming after
    /// [`RecvEvent::NoBuffers`].
    pub fn flush(&mut self) -> usize {
        let Self {
            core,
            rq,
            area_token,
            buf_shift,
            bufs_per_chunk,
            urefs,
            owed,
            pending,
            queued,
            refused,
            stats,
            ring_fd,
            no_device,
            features,
            zcrx_id,
            ..
        } = self;
        rq.observe_head();
        let mut out = RefillWriter {
            rq,
            area_token: *area_token,
            buf_shift: *buf_shift,
            bufs_per_chunk: *bufs_per_chunk,
            urefs,
            owed,
            rqes: 0,
        };
        // References of refused completions first: no chunk waits on them.
        let gave_back = refused
            .iter()
            .take_while(|&&buf| out.write_ref(buf as usize))
            .count();
        refused.drain(..gave_back);
        let full = !refused.is_empty();
        // Chunks that waited for room go first, in order.
        let mut returned = write_pending(core, &mut out, pending, queued);
        let mut full = full || !pending.is_empty();
        // Then the chunks whose handles dropped since: written straight away while there is
        // room, else queued behind the others.
        core.drain_returns(|table, chunk| {
            if !full && pending.is_empty() {
                if out.write_chunk(chunk) {
                    // Entries written: straight back to the kernel state.
                    let recycled = table.recycle(chunk);
                    debug_assert!(recycled.is_ok(), "a returned chunk recycles: {recycled:?}");
                    returned += 1;
                    return;
                }
                full = true;
            }
            match table.release(chunk) {
                Ok(_) => {
                    if !std::mem::replace(&mut queued[chunk as usize], true) {
                        pending.push_back(chunk);
                    }
                }
                // Unreachable by construction, as in `Core::collect_returns`.
                Err(e) => debug_assert!(false, "release refused: {e}"),
            }
        });
        if full {
            stats.rq_full += 1;
        }
        if out.rq.publish() {
            stats.publishes += 1;
        }
        // Without a device no page pool takes the entries: tell the kernel to, whenever some are
        // unconsumed. On a NIC the page pool takes them as it refills, but a full ring would
        // stop returns until it does: make room then. Once per flush.
        let ctrl_flush = features.flush_rq()
            && out.rq.in_flight() > 0
            && (*no_device || (full && !pending.is_empty()));
        if let (true, Some(ring_fd)) = (ctrl_flush, ring_fd.as_ref()) {
            stats.ctrl_flushes += 1;
            match abi::ctrl_flush_rq(ring_fd.as_fd(), *zcrx_id) {
                Ok(()) => {
                    out.rq.observe_head();
                    // Room again: what still waits goes in now (the kernel takes it at the next
                    // flush without a device, or as the page pool refills).
                    returned += write_pending(core, &mut out, pending, queued);
                    if out.rq.publish() {
                        stats.publishes += 1;
                    }
                }
                Err(e) => {
                    stats.ctrl_flush_errors += 1;
                    stats.last_ctrl_errno = e.raw_os_error().unwrap_or(-1);
                    // Returns then wait for room: said once, counted always.
                    if stats.ctrl_flush_errors == 1 {
                        tracing::warn!(
                            zcrx_id = *zcrx_id,
                            "the kernel refused to take the zcrx refill entries \
                             (ZCRX_CTRL_FLUSH_RQ): {e}"
                        );
                    }
                }
            }
        }
        stats.rqes += out.rqes;
        stats.returned_chunks += returned as u64;
        returned
    }

    /// Released chunks still waiting for room in the refill queue.
    pub fn pending_chunks(&self) -> usize {
        self.pending.len()
    }

    /// Whether `owner` holds at least the configured per-owner limit of bytes.
    pub fn over_limit(&self, owner: OwnerId) -> bool {
        self.core.table.over_limit(owner)
    }

    /// What one owner holds.
    pub fn owner(&self, owner: OwnerId) -> crate::chunk::OwnerStats {
        self.core.table.owner(owner)
    }

    /// The per-owner limit, if any.
    pub fn owner_limit(&self) -> Option<u64> {
        self.core.table.owner_limit()
    }

    /// Free chunks: the kernel's to receive into (nothing waits in a pool: the kernel takes
    /// every returned chunk).
    pub fn available(&self) -> u32 {
        self.core.table.counts().kernel
    }

    /// Chunks in the area.
    pub fn chunks(&self) -> u32 {
        self.core.area().chunks()
    }

    /// Who holds what.
    pub fn snapshot(&self) -> Snapshot {
        self.core.snapshot()
    }

    /// Lifetime counters (with the kernel's copy statistics when events were asked for).
    pub fn stats(&self) -> ZcrxStats {
        let mut stats = self.stats;
        if let Some(k) = &self.kernel_stats {
            (stats.copy_count, stats.copy_bytes) = k.read();
            stats.kernel_copy_stats = true;
        }
        stats
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
        abi::ctrl_arm_event(ring.as_fd(), self.zcrx_id, event.kernel_type()).map_err(|source| {
            Error::Os {
                what: "re-arming a zcrx event",
                source,
            }
        })
    }

    /// Returns what can be returned and reports what the application still holds. There is no
    /// unregister: the queue stays bound until the io_uring is destroyed, which happens only once
    /// your `IoUring` and every [`RxBuf`] are dropped (the handles keep a duplicate of the ring
    /// fd, so the kernel cannot revoke their bytes). The area is never leaked: the kernel pinned
    /// its pages, so unmapping it after the last handle is safe.
    pub fn teardown(mut self) -> TeardownReport {
        self.flush();
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

fn check_ring(ring: &IoUring<squeue::Entry, cqueue::Entry32>) -> Result<()> {
    if ring.params().is_setup_single_issuer() {
        Ok(())
    } else {
        Err(Error::RingNotSuitable {
            what:
                "SINGLE_ISSUER is not set (zcrx needs DEFER_TASKRUN, which requires SINGLE_ISSUER)",
        })
    }
}

/// Whether this thread may register on `ring`. A SINGLE_ISSUER ring answers `EEXIST` to every
/// registration from another thread, which would otherwise read as "queue in use"; a probe
/// registration (no side effects) tells the two apart.
fn on_submitter_thread(ring: &IoUring<squeue::Entry, cqueue::Entry32>) -> bool {
    let answer = ring.submitter().register_probe(&mut io_uring::Probe::new());
    answer.err().and_then(|e| e.raw_os_error()) != Some(Errno::EXIST.raw_os_error())
}

/// The ring a registration goes to.
#[derive(Clone, Copy)]
struct RingRef<'a>(&'a IoUring<squeue::Entry, cqueue::Entry32>);

impl RingRef<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn on_submitter_thread(&self) -> bool {
        on_submitter_thread(self.0)
    }
}

/// [`ZcrxFeatures::query`] on a ring this thread must be the submitter of.
fn query_on(ring: &IoUring<squeue::Entry, cqueue::Entry32>) -> Result<ZcrxFeatures> {
    query_fd(ring.as_fd())
}

fn query_fd(ring: BorrowedFd<'_>) -> Result<ZcrxFeatures> {
    match ZcrxFeatures::query(ring) {
        // A SINGLE_ISSUER ring answers every register call from another thread so.
        Err(Error::Os { source, .. })
            if source.raw_os_error() == Some(Errno::EXIST.raw_os_error()) =>
        {
            Err(another_thread())
        }
        other => other,
    }
}

fn another_thread() -> Error {
    Error::RingNotSuitable {
        what: "it belongs to another thread (a SINGLE_ISSUER ring accepts registrations only \
               from the thread that created it; register there)",
    }
}

fn refusal_error(target: &Target, config: &ZcrxConfig, e: io::Error) -> Error {
    let errno = e.raw_os_error().unwrap_or(0);
    let refusal = ZcrxRefusal::from_errno(errno);
    if matches!(target, Target::NoDevice) && refusal == ZcrxRefusal::InvalidSetup {
        let old = crate::kernel::KernelVersion::current().is_some_and(|v| !v.at_least(7, 1));
        if old {
            return Error::KernelTooOld {
                feature: "ZCRX_REG_NODEV",
                needs: "7.1",
            };
        }
    }
    let page = rustix::param::page_size() as u32;
    if let Some(len) = config.rx_buf_len.filter(|&l| l > page) {
        if matches!(target, Target::NoDevice) && refusal == ZcrxRefusal::DeviceUnsupported {
            return Error::BadRxBufLen {
                rx_buf_len: len as usize,
                why: "without a device the kernel copies into page-sized buffers only \
                      (EOPNOTSUPP); leave rx_buf_len unset",
            };
        }
        if matches!(
            refusal,
            ZcrxRefusal::NoSuchQueue | ZcrxRefusal::DeviceUnsupported
        ) {
            return Error::BadRxBufLen {
                rx_buf_len: len as usize,
                why: "the NIC driver does not support buffers of that size, or the area is not \
                      physically contiguous enough for them (ERANGE/EOPNOTSUPP); try huge pages \
                      or a smaller rx_buf_len",
            };
        }
    }
    Error::ZcrxRefused {
        ifname: target.ifname().to_owned(),
        queue: target.queue(),
        refusal,
    }
}
