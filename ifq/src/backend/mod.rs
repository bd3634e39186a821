//! What both backends share: their one surface ([`RxPool`]), the owner-side core (table +
//! shared state) behind it, the receive events they report, and the teardown report.

use std::io;

use io_uring::types;
use std::os::fd::{AsFd, OwnedFd};

use crate::chunk::{Counts, OwnerId, OwnerStats};
use crate::error::{Error, Result};
use crate::rxbuf::RxBuf;

mod core;
mod pool;

pub(crate) use self::core::Core;

pub use pool::RxPool;
pub(crate) use pool::Sealed;

/// What a receive completion means for the application.
#[derive(Debug)]
pub enum RecvEvent {
    /// Bytes arrived.
    Data(RxBuf),
    /// The peer closed its side (or the byte limit was reached).
    Eof,
    /// No free buffer: return buffers ([`flush`](crate::bufring::BufRing::flush) publishes
    /// them), then re-arm. Nothing was lost; the bytes wait in the socket.
    NoBuffers,
    /// The completion queue overflowed: re-arm. Nothing was lost.
    CqOverflow,
    /// A socket error.
    Error(io::Error),
}

/// A decoded, checked completion.
#[derive(Debug)]
pub struct Completion {
    /// What happened.
    pub event: RecvEvent,
    /// The multishot request is still armed. When false and the event is not `Eof` or `Error`,
    /// re-arm to keep receiving.
    pub more: bool,
}

impl Completion {
    /// Whether the caller should submit a new receive for this socket (after flushing returns).
    pub fn needs_rearm(&self) -> bool {
        !self.more && !matches!(self.event, RecvEvent::Eof | RecvEvent::Error(_))
    }
}

/// What was still held by the application when a queue was torn down.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TeardownReport {
    /// Chunks still held by live [`RxBuf`]s (they stay mapped until dropped).
    pub held_chunks: u32,
    /// Bytes in those chunks that were delivered to the application.
    pub held_bytes: u64,
    /// Per owner, sorted by id.
    pub owners: Vec<(OwnerId, OwnerStats)>,
    /// Chunks per state after teardown: with a clean teardown every chunk not held is in the
    /// pool.
    pub counts: Counts,
    /// Whether the kernel gave the area back cleanly. When false the area is leaked (never
    /// unmapped) because the kernel might still write into it.
    pub clean: bool,
}

impl TeardownReport {
    /// True when nothing was held and the kernel released the area.
    pub fn is_clean(&self) -> bool {
        self.clean && self.held_chunks == 0
    }

    /// What `owner` still held (nothing if it is not in [`owners`](Self::owners)).
    pub fn owner(&self, owner: OwnerId) -> OwnerStats {
        crate::chunk::owner_in(&self.owners, owner)
    }
}

/// Duplicates the ring fd (close-on-exec) so the ring outlives the caller's handle to it.
pub(crate) fn dup_ring_fd(ring: impl AsFd) -> Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(ring, 0).map_err(|e| Error::Os {
        what: "duplicating the io_uring fd",
        source: e.into(),
    })
}

/// The socket a receive reads: a plain fd or a registered (fixed) file index.
#[derive(Debug, Clone, Copy)]
pub enum RecvFd {
    /// A raw fd.
    Fd(types::Fd),
    /// An index into the ring's registered files.
    Fixed(types::Fixed),
}

impl From<types::Fd> for RecvFd {
    fn from(fd: types::Fd) -> Self {
        Self::Fd(fd)
    }
}

impl From<types::Fixed> for RecvFd {
    fn from(fd: types::Fixed) -> Self {
        Self::Fixed(fd)
    }
}
