//! Typed errors. Each variant's message says what happened and what to do about it.

use std::io;

use crate::chunk::AccountingError;
use crate::completion::CompletionError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the kernel refused a zcrx registration, decoded from its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZcrxRefusal {
    /// `EOPNOTSUPP`: the NIC driver has no queue-management ops (loopback, veth and virtio_net
    /// never have them), or the kernel was built without `CONFIG_IO_URING_ZCRX`.
    DeviceUnsupported,
    /// `EPERM`: the calling thread lacks `CAP_NET_ADMIN`.
    NotPermitted,
    /// `EINVAL`: header/data split is off or hds-thresh is not 0 on the NIC, or the ring was not
    /// set up with `SINGLE_ISSUER | DEFER_TASKRUN` and big CQEs, or a registration field is bad.
    InvalidSetup,
    /// `ERANGE`: the interface has no such receive queue.
    NoSuchQueue,
    /// `EEXIST`: the queue is already bound to another memory provider or an XDP program is
    /// attached.
    QueueInUse,
    /// `EBUSY`: the queue is used by AF_XDP.
    QueueBusy,
    /// `ENODEV`: the interface disappeared.
    NoDevice,
    /// `ENOMEM`: the area could not be pinned (RLIMIT_MEMLOCK since Linux 6.17) or kernel memory
    /// ran out.
    OutOfMemory,
    /// Any other errno.
    Other(i32),
}

impl ZcrxRefusal {
    /// Classifies a raw errno returned by `IORING_REGISTER_ZCRX_IFQ`.
    pub fn from_errno(errno: i32) -> Self {
        use rustix::io::Errno;
        match Errno::from_raw_os_error(errno) {
            Errno::OPNOTSUPP => Self::DeviceUnsupported,
            Errno::PERM => Self::NotPermitted,
            Errno::INVAL => Self::InvalidSetup,
            Errno::RANGE => Self::NoSuchQueue,
            Errno::EXIST => Self::QueueInUse,
            Errno::BUSY => Self::QueueBusy,
            Errno::NODEV => Self::NoDevice,
            Errno::NOMEM => Self::OutOfMemory,
            _ => Self::Other(errno),
        }
    }

    /// The errno this refusal came from.
    pub fn errno(&self) -> i32 {
        use rustix::io::Errno;
        match self {
            Self::DeviceUnsupported => Errno::OPNOTSUPP.raw_os_error(),
            Self::NotPermitted => Errno::PERM.raw_os_error(),
            Self::InvalidSetup => Errno::INVAL.raw_os_error(),
            Self::NoSuchQueue => Errno::RANGE.raw_os_error(),
            Self::QueueInUse => Errno::EXIST.raw_os_error(),
            Self::QueueBusy => Errno::BUSY.raw_os_error(),
            Self::NoDevice => Errno::NODEV.raw_os_error(),
            Self::OutOfMemory => Errno::NOMEM.raw_os_error(),
            Self::Other(errno) => *errno,
        }
    }

    /// The reason in plain words, with what to do about it.
    pub fn reason(&self) -> String {
        match self {
            Self::DeviceUnsupported => "the NIC driver has no queue-management ops, so it cannot \
                host a zero-copy page pool (EOPNOTSUPP); loopback, veth and virtio_net never can; \
                use a bnxt, mlx5, fbnic, gve or ice NIC, or the buffer-ring backend"
                .into(),
            Self::NotPermitted => "zcrx registration needs CAP_NET_ADMIN (EPERM); run as root, or \
                grant the capability with `setcap cap_net_admin+ep BINARY` (or ambient \
                capabilities from systemd's AmbientCapabilities=CAP_NET_ADMIN)"
                .into(),
            Self::InvalidSetup => "the kernel rejected the setup (EINVAL): check that header/data \
                split is on and hds-thresh is 0 (`ethtool -G DEV tcp-data-split on hds-thresh 0`), \
                and that the ring uses SINGLE_ISSUER | DEFER_TASKRUN with 32-byte CQEs"
                .into(),
            Self::NoSuchQueue => "the interface has no receive queue with that index (ERANGE); \
                `ethtool -l DEV` lists the queue count"
                .into(),
            Self::QueueInUse => {
                "the queue is already bound to a memory provider, or an XDP program \
                is attached (EEXIST); pick another queue or detach it"
                    .into()
            }
            Self::QueueBusy => "the queue is in use by AF_XDP (EBUSY); pick another queue".into(),
            Self::NoDevice => "the interface went away during registration (ENODEV)".into(),
            Self::OutOfMemory => "the area could not be pinned (ENOMEM): raise RLIMIT_MEMLOCK \
                (`ulimit -l`), grant CAP_IPC_LOCK, or use a smaller area"
                .into(),
            Self::Other(errno) => format!(
                "registration failed with errno {errno} ({})",
                io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The area was asked for zero chunks.
    #[error("the area needs at least one chunk; set chunks(n) with n >= 1")]
    ZeroChunks,
    /// Chunk size not a power of two, or outside 4 KiB ..= 1 MiB.
    #[error(
        "chunk size {chunk_size} is invalid: it must be a power of two from 4096 (4 KiB) to \
         1048576 (1 MiB)"
    )]
    BadChunkSize {
        /// The rejected size in bytes.
        chunk_size: usize,
    },
    /// Too many chunks for the backend or the address space.
    #[error(
        "{chunks} chunks is too many: at most {max} are allowed {why}; use fewer or larger chunks"
    )]
    TooManyChunks {
        /// Requested chunks.
        chunks: usize,
        /// The limit.
        max: usize,
        /// Which limit applies.
        why: &'static str,
    },
    /// Huge pages were requested but the mapping failed.
    #[error(
        "could not map {len} bytes of 2 MiB huge pages ({source}); reserve them first, e.g. \
         `echo {pages} > /proc/sys/vm/nr_hugepages`, or build the area without huge pages"
    )]
    HugePagesUnavailable {
        /// Requested length in bytes.
        len: usize,
        /// Number of 2 MiB pages needed.
        pages: usize,
        /// The mmap error.
        source: io::Error,
    },
    /// With huge pages the area length must be a multiple of 2 MiB.
    #[error(
        "an area of {len} bytes cannot use 2 MiB huge pages: make chunk_size * chunks a multiple \
         of 2097152"
    )]
    HugePageMisfit {
        /// Requested length in bytes.
        len: usize,
    },
    /// The area would exceed RLIMIT_MEMLOCK and the process cannot exceed it.
    #[error(
        "the area needs {needed} bytes of locked memory but RLIMIT_MEMLOCK allows {limit}; raise \
         it (`ulimit -l`, LimitMEMLOCK= in systemd), grant CAP_IPC_LOCK, or use a smaller area"
    )]
    MemlockLimit {
        /// Bytes that would be locked.
        needed: u64,
        /// The soft limit in bytes.
        limit: u64,
    },
    /// mmap or mlock failed for another reason.
    #[error("could not map {len} bytes for the area: {source}")]
    Map {
        /// Requested length in bytes.
        len: usize,
        /// The OS error.
        source: io::Error,
    },
    /// An interface name was empty, too long or contained a NUL or '/'.
    #[error("invalid interface name {name:?}: {why}")]
    BadInterfaceName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No interface with that name exists.
    #[error("no network interface named {name:?}; `ip link` lists the interfaces")]
    UnknownInterface {
        /// The name looked up.
        name: String,
    },
    /// The interface has fewer receive queues than the queue index asked for (checked in sysfs
    /// before registering: the kernel would answer `ERANGE`, or on some drivers refuse for
    /// another reason first).
    #[error(
        "{ifname} has {queues} receive queue(s) (0 to {}), so queue {queue} does not exist; pick \
         one of those, or add queues with `ethtool -L {ifname} combined N` (`ethtool -l {ifname}` \
         shows the maximum)",
        queues.saturating_sub(1)
    )]
    QueueOutOfRange {
        /// Interface name.
        ifname: String,
        /// The queue index asked for.
        queue: u32,
        /// Receive queues the interface has.
        queues: u32,
    },
    /// The kernel refused a zcrx registration.
    #[error("zcrx registration on {ifname} queue {queue} failed: {}", refusal.reason())]
    ZcrxRefused {
        /// Interface name (or index as text).
        ifname: String,
        /// Receive queue index.
        queue: u32,
        /// The decoded reason.
        refusal: ZcrxRefusal,
    },
    /// A chunk must hold whole zcrx buffers (a page, or `rx_buf_len` on 7.0+).
    #[error(
        "chunk size {chunk_size} is smaller than the zcrx buffer size {buffer_size}; build the \
         area with chunk_size({buffer_size}) or larger, or ask for smaller buffers"
    )]
    ZcrxChunkTooSmall {
        /// The area's chunk size.
        chunk_size: usize,
        /// The kernel's zcrx buffer size.
        buffer_size: usize,
    },
    /// The io_uring was not set up the way zcrx needs.
    #[error(
        "the io_uring is not set up for zcrx: {what}; build it with \
         IoUring::<squeue::Entry, cqueue::Entry32>::builder().setup_single_issuer().setup_defer_taskrun()"
    )]
    RingNotSuitable {
        /// What is missing.
        what: &'static str,
    },
    /// `AreaBuilder::shared` and `huge_pages` together.
    #[error(
        "a shared (memfd) area cannot use huge pages here; choose one of shared and huge_pages"
    )]
    SharedHugePages,

    /// What came in to [`ZcrxIfq::import`](crate::zcrx::ZcrxIfq::import) does not describe a
    /// usable queue.
    #[error("the exported zcrx queue is unusable: {why}")]
    BadExport {
        /// What is wrong with it.
        why: String,
    },

    /// [`ZcrxIfq::export`](crate::zcrx::ZcrxIfq::export) refused.
    #[error("the zcrx queue cannot be exported: {why}")]
    NotExportable {
        /// Why, and what to do.
        why: &'static str,
    },

    /// An `rx_buf_len` the queue cannot use.
    #[error("zcrx rx_buf_len {rx_buf_len} refused: {why}")]
    BadRxBufLen {
        /// The size asked for.
        rx_buf_len: usize,
        /// Why, and what to do.
        why: &'static str,
    },

    /// A kernel feature this operation needs is missing.
    #[error("this kernel lacks {feature} (needs Linux {needs} or newer)")]
    KernelTooOld {
        /// The missing feature.
        feature: &'static str,
        /// The first kernel version that has it.
        needs: &'static str,
    },
    /// Registering the provided buffer ring failed.
    #[error("registering the provided buffer ring (group {bgid}) failed: {source}; {hint}")]
    BufRingRegister {
        /// The buffer group id.
        bgid: u16,
        /// The OS error.
        source: io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// A completion carried a value that does not fit this queue (a kernel bug or a hostile
    /// value); nothing was read from memory.
    #[error("rejected a completion: {0}")]
    BadCompletion(#[from] CompletionError),
    /// A transition the chunk state machine does not allow (a kernel value named a chunk that is
    /// not where it claims to be).
    #[error("chunk accounting refused a transition: {0}")]
    Accounting(#[from] AccountingError),
    /// The queue was already torn down.
    #[error("the interface queue was torn down; build a new one")]
    TornDown,
    /// A zcrx queue was asked to complete a receive away from the home thread it was given
    /// with `set_home_thread`.
    #[error(
        "this zcrx queue's home is another thread (set_home_thread): complete its receives on \
         that thread; this completion's data is dropped and its buffer goes back to the kernel \
         at the next flush"
    )]
    AwayFromHome,
    /// Any other OS error.
    #[error("{what}: {source}")]
    Os {
        /// The operation that failed.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}
