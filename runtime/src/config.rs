//! What a runtime is built from: the receive backend, its target, and the settings every
//! runtime thread is set up with. Plain data, with the checks `Builder` makes before anything
//! is set up; it depends on no other module of the crate.

use std::io;
use std::time::Duration;

/// Which receive backend the runtime uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RxBackend {
    /// zcrx on the target given with [`Builder::zcrx_queue`](crate::Builder::zcrx_queue) or [`Builder::zcrx_nodev`](crate::Builder::zcrx_nodev) if the
    /// kernel (and NIC) accept it; otherwise the provided buffer ring, saying why once (a
    /// `tracing` warning). Without a target, the buffer ring: zcrx without a device is never
    /// picked unasked (it needs `CAP_NET_ADMIN` and Linux 7.1+, and whether it beats the buffer
    /// ring depends on the load: see `docs/runtime.md`).
    #[default]
    Auto,
    /// The provided buffer ring (works on every NIC).
    BufRing,
    /// zcrx on the target given with [`Builder::zcrx_queue`](crate::Builder::zcrx_queue) or [`Builder::zcrx_nodev`](crate::Builder::zcrx_nodev);
    /// start-up fails, with the kernel's reason in plain words, if it is not available.
    Zcrx,
}

/// Where zcrx receives: a NIC's receive queue, or no device at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZcrxTarget {
    /// Receive queues of a NIC: runtime thread `i` uses queue `queue + i` (steer each queue's
    /// flows there, see `docs/zcrx.md`).
    Queue {
        /// The interface name (`eth0`).
        ifname: String,
        /// The first queue.
        queue: u32,
    },
    /// zcrx without a device (`ZCRX_REG_NODEV`, Linux 7.1+): the kernel copies every received
    /// byte into the area, with zcrx's completions, refill ring and teardown. Any TCP socket
    /// works (loopback, veth, any NIC); each runtime thread registers its own. Useful to run
    /// the zcrx code paths where no NIC can do zcrx. It copies like the buffer ring; which of
    /// the two is faster depends on the load (`docs/runtime.md`). Needs `CAP_NET_ADMIN` like a
    /// device queue.
    NoDevice,
}

impl std::fmt::Display for ZcrxTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZcrxTarget::Queue { ifname, queue } => write!(f, "{ifname} queue {queue}"),
            ZcrxTarget::NoDevice => f.write_str("no device"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) threads: usize,
    pub(crate) pin: bool,
    pub(crate) sq_entries: u32,
    pub(crate) cq_entries: u32,
    pub(crate) backend: RxBackend,
    pub(crate) zcrx: Option<ZcrxTarget>,
    pub(crate) chunk_size: usize,
    pub(crate) chunks: usize,
    pub(crate) incremental: bool,
    pub(crate) coalesce: Coalesce,
    pub(crate) conn_limit: Option<u64>,
    pub(crate) max_posted: Option<u32>,
    /// `None`: adaptive unless `max_posted` fixes the depth.
    pub(crate) adaptive_depth: Option<bool>,
    pub(crate) grace: Duration,
    pub(crate) on_signals: bool,
}

impl Default for Config {
    /// The defaults `Builder::new` documents.
    fn default() -> Self {
        Self {
            threads: 1,
            pin: true,
            sq_entries: 256,
            cq_entries: 8192,
            backend: RxBackend::Auto,
            zcrx: None,
            chunk_size: 32 * 1024,
            chunks: 256,
            incremental: false,
            coalesce: Coalesce {
                delay: Duration::from_micros(50),
                completions: 32,
            },
            conn_limit: None,
            max_posted: None,
            adaptive_depth: None,
            grace: Duration::from_secs(5),
            on_signals: false,
        }
    }
}

impl Config {
    /// Whether the buffer ring's depth adapts (`Builder::adaptive_depth`): asked for, or by
    /// default unless `max_posted` fixes it. Where it starts is `depth::floor`, which the
    /// driver computes once for both the ring's set-up and its controller.
    pub(crate) fn adapts_depth(&self) -> bool {
        self.adaptive_depth.unwrap_or(self.max_posted.is_none())
    }

    /// The configuration `Builder::build` and `Builder::run` set up, or why not: the checks,
    /// then the defaults that depend on other settings (the per-connection limit).
    pub(crate) fn checked(mut self) -> io::Result<Self> {
        let c = &mut self;
        if c.threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "threads must be at least 1",
            ));
        }
        if c.coalesce.delay > Duration::from_secs(1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "coalesce delay {:?} is too long: at most 1 s (tens of microseconds is typical)",
                    c.coalesce.delay
                ),
            ));
        }
        if c.max_posted == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_posted must be at least 1 chunk (leave it unset for the adaptive depth, or give the chunk count to post every chunk)",
            ));
        }
        if c.adaptive_depth == Some(true) && c.max_posted.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_posted fixes the buffer ring's depth and adaptive_depth adapts it: set one of them",
            ));
        }
        if c.conn_limit.is_none() {
            c.conn_limit = Some(((c.chunks * c.chunk_size) as u64 / 4).max(c.chunk_size as u64));
        }
        Ok(self)
    }
}

/// Completion coalescing while bulk data flows: wait up to `delay` for `completions`
/// completions (`Builder::coalesce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Coalesce {
    pub(crate) delay: Duration,
    pub(crate) completions: u32,
}
