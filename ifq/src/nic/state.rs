//! What is read of an interface: the typed values `read` returns, and the errors.

use super::FlowRule;

/// A value the kernel may or may not report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    /// What the kernel reported.
    Value(T),
    /// The kernel or driver does not offer it (`EOPNOTSUPP`, an attribute absent, a family this
    /// kernel lacks); why, in plain words. Not an error.
    NotSupported(String),
    /// Reading it failed for another reason.
    Failed(String),
}

impl<T> Read<T> {
    /// The value, if reported.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Header/data split (`ETHTOOL_A_RINGS_TCP_DATA_SPLIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSplit {
    /// The driver does not say (or decides by itself).
    Unknown,
    /// Off.
    Disabled,
    /// On.
    Enabled,
}

/// Ring parameters (`ethtool -g`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Rings {
    /// Receive ring size.
    pub rx: Option<u32>,
    /// Largest receive ring size.
    pub rx_max: Option<u32>,
    /// Receive buffer length.
    pub rx_buf_len: Option<u32>,
    /// Header/data split; `None`: the driver has no such setting.
    pub tcp_data_split: Option<DataSplit>,
    /// Header/data split threshold (6.13+); `None`: not reported.
    pub hds_thresh: Option<u32>,
    /// Largest threshold the driver takes.
    pub hds_thresh_max: Option<u32>,
}

/// Channel counts (`ethtool -l`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Channels {
    /// Receive-only channels.
    pub rx: Option<u32>,
    /// Combined channels.
    pub combined: Option<u32>,
    /// Largest receive-only count.
    pub rx_max: Option<u32>,
    /// Largest combined count.
    pub combined_max: Option<u32>,
}

impl Channels {
    /// Receive queues: receive-only plus combined channels.
    pub fn rx_queues(&self) -> u32 {
        self.rx.unwrap_or(0) + self.combined.unwrap_or(0)
    }
}

/// One RSS context (`ethtool -x`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RssContext {
    /// 0 is the default context.
    pub context: u32,
    /// The indirection table: entry i names the queue of hash bucket i.
    pub indir: Vec<u32>,
}

/// One receive queue (`netdev` family).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RxQueue {
    /// Queue index.
    pub id: u32,
    /// NAPI instance that services it.
    pub napi_id: Option<u32>,
    /// Its interrupt, from the NAPI instance.
    pub irq: Option<u32>,
    /// PID of the NAPI thread, if threaded.
    pub napi_pid: Option<u32>,
    /// An io_uring memory provider (zcrx) is bound to it.
    pub io_uring: bool,
    /// A dmabuf (devmem TCP) is bound to it: its id.
    pub dmabuf: Option<u32>,
}

/// What was read about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NicState {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Device driver (`None`: a virtual device).
    pub driver: Option<String>,
    /// Ring parameters.
    pub rings: Read<Rings>,
    /// Channel counts.
    pub channels: Read<Channels>,
    /// RSS contexts, the default (0) first.
    pub rss: Read<Vec<RssContext>>,
    /// ntuple flow rules (read with the `SIOCETHTOOL` ioctl: the `ethtool` netlink family has
    /// none).
    pub ntuple: Read<Vec<FlowRule>>,
    /// Receive queues with their NAPI ids, interrupts and bindings.
    pub rx_queues: Read<Vec<RxQueue>>,
}

impl NicState {
    /// The number of receive queues, from channels, else the `netdev` queue list.
    pub fn rx_queue_count(&self) -> Option<u32> {
        if let Some(c) = self.channels.value() {
            if c.rx_queues() > 0 {
                return Some(c.rx_queues());
            }
        }
        self.rx_queues.value().map(|q| q.len() as u32)
    }

    /// The `netdev` entry of receive queue `queue`.
    pub fn rx_queue(&self, queue: u32) -> Option<&RxQueue> {
        self.rx_queues.value()?.iter().find(|q| q.id == queue)
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NicError {
    /// No such interface.
    #[error("no interface named '{0}'")]
    UnknownInterface(String),
    /// The queue index is past the interface's receive queues.
    #[error("{ifname} has {count} receive queues (0..{count}); queue {queue} is out of range")]
    QueueOutOfRange {
        /// Interface.
        ifname: String,
        /// Queue asked for.
        queue: u32,
        /// Queues it has.
        count: u32,
    },
    /// The driver lacks what a change needs.
    #[error("{ifname}: {what}")]
    NotSupported {
        /// Interface.
        ifname: String,
        /// What is missing, in plain words.
        what: String,
    },
    /// Changing NIC settings needs `CAP_NET_ADMIN`.
    #[error("changing {0}'s settings needs CAP_NET_ADMIN (run as root)")]
    NotPermitted(String),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(String),
}
