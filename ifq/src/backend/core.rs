//! The owner-side state both backends share: the chunk table and what the handles share (the
//! area, the return stack), and the one delivery path that turns a checked completion into an
//! [`RxBuf`].

use crate::area::Area;
use crate::chunk::{ChunkId, ChunkState, ChunkTable, OwnerId, Redelivery, ReleaseTo, Snapshot};
use crate::completion::CompletionError;
use crate::error::{Error, Result};
use crate::rxbuf::{RxBuf, SharedOwner};

use super::TeardownReport;

/// Owner-side state common to both backends.
// `pub` in a private module: named by the sealed `RxPool` supertrait, reachable by no one.
#[allow(missing_debug_implementations)] // the queues print their own
pub struct Core {
    pub(crate) shared: SharedOwner,
    pub(crate) table: ChunkTable,
}

impl Core {
    pub(crate) fn new(area: Area, redelivery: Redelivery) -> Self {
        let table = ChunkTable::new(area.chunks(), redelivery);
        Self {
            shared: SharedOwner::new(area, redelivery == Redelivery::Always),
            table,
        }
    }

    #[inline]
    pub(crate) fn area(&self) -> &Area {
        self.shared.area()
    }

    /// Checks a kernel-supplied location, records the delivery and makes the handle. While the
    /// kernel keeps filling a chunk (incremental mode) the core holds one extra reference on it,
    /// so the chunk cannot be returned under the kernel's feet.
    #[inline(always)]
    pub(crate) fn deliver(
        &mut self,
        chunk: ChunkId,
        offset: u32,
        len: u32,
        owner: OwnerId,
        kernel_keeps: bool,
    ) -> Result<RxBuf> {
        let chunk_size = self.area().chunk_size() as u32;
        if u64::from(offset) + u64::from(len) > u64::from(chunk_size) {
            return Err(CompletionError::LengthOutOfRange {
                offset,
                len,
                chunk_size,
            }
            .into());
        }
        let found = self
            .table
            .deliver(chunk, owner, len, kernel_keeps)
            .map_err(|e| match e {
                crate::chunk::AccountingError::BadTransition { chunk, .. } => {
                    Error::BadCompletion(CompletionError::NotKernelOwned { chunk })
                }
                e => e.into(),
            })?;
        // A chunk that was not in the user state has no handle and is not queued for return.
        let buf = self
            .shared
            .handle(chunk, offset, len, found.first)
            .expect("range checked above");
        match (found.was_kernel_busy, kernel_keeps) {
            (false, true) => self.shared.returns.acquire(chunk),
            (true, false) => {
                let last = self.shared.returns.release(chunk);
                debug_assert!(!last, "the owner is alive");
            }
            _ => {}
        }
        Ok(buf)
    }

    /// Calls `f` with every chunk whose handles are all gone, still in the user state: `f` moves
    /// it on (`ChunkTable::release` to the kernel, the pool or refill). Returns how many there were.
    #[inline]
    pub(crate) fn drain_returns(&mut self, mut f: impl FnMut(&mut ChunkTable, ChunkId)) -> usize {
        let Self { shared, table } = self;
        shared.returns.drain(|chunk| f(table, chunk))
    }

    /// Moves every chunk whose handles are all gone to the refill state and calls `publish` with
    /// it and its refill entry count. Returns how many chunks were released.
    #[inline]
    pub(crate) fn collect_returns(
        &mut self,
        mut publish: impl FnMut(&mut ChunkTable, ChunkId, u32),
    ) -> usize {
        self.drain_returns(
            |table, chunk| match table.release(chunk, ReleaseTo::Refill) {
                Ok(entries) => publish(table, chunk, entries),
                // Unreachable by construction (the core's bias reference keeps busy chunks out of the
                // stack); if it happens the chunk is kept out of circulation rather than reused.
                Err(e) => debug_assert!(false, "release refused: {e}"),
            },
        )
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.table.snapshot()
    }

    pub(crate) fn report(&self, clean: bool) -> TeardownReport {
        let snap = self.table.snapshot();
        TeardownReport {
            held_chunks: snap.counts.user,
            held_bytes: snap.held_bytes,
            owners: snap.owners,
            counts: snap.counts,
            clean,
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // Incremental mode: drop the core's own reference on chunks the kernel was still filling,
        // so that when the stack closes the counts hold only real handles (otherwise `Shared`
        // would never be freed).
        for chunk in 0..self.table.total() {
            if let Ok(ChunkState::User {
                kernel_busy: true, ..
            }) = self.table.state(chunk)
            {
                let _ = self.table.kernel_done(chunk);
                let last = self.shared.returns.release(chunk);
                debug_assert!(!last, "the owner is alive");
            }
        }
    }
}
