//! [`RxPool`]: the one surface of both receive backends.
//!
//! Everything the owner of a queue does that does not depend on how buffers reach the kernel is
//! written once here, over the [`Core`] both backends share (the chunk table, the return stack,
//! the area). What differs (how a receive is built, how returned chunks go back, what is
//! counted) each backend implements in its own file: `bufring.rs`, `zcrx/`.

use io_uring::squeue;

use super::{Core, RecvFd, TeardownReport};
use crate::chunk::{OwnerId, OwnerStats, Snapshot};

mod sealed {
    /// Only this crate's backends implement [`RxPool`](super::RxPool): its provided methods
    /// reach into their shared core.
    pub trait Sealed {
        fn core(&self) -> &super::Core;
    }
}

pub(crate) use sealed::Sealed;

/// What a receive queue offers whichever backend it runs: a provided buffer ring
/// ([`BufRing`](crate::bufring::BufRing)) or a zcrx interface queue
/// ([`ZcrxIfq`](crate::zcrx::ZcrxIfq)).
///
/// The loop of an owner thread is the same over both: push [`recv`](Self::recv) requests,
/// decode completions (each backend's `complete`, whose CQE differs), drop the handles anywhere,
/// [`flush`](Self::flush) once per turn, [`teardown`](Self::teardown) at the end. Code generic
/// over `Q: RxPool` serves both:
///
/// ```
/// use zcrx_ifq::{OwnerId, RxPool};
///
/// /// Whether `conn` should stop reading until it gives buffers back.
/// fn must_wait<Q: RxPool>(q: &Q, conn: OwnerId) -> bool {
///     q.over_limit(conn) || q.available() == 0
/// }
/// ```
///
/// The trait is sealed: only this crate's backends implement it.
pub trait RxPool: Sealed {
    /// The backend's lifetime counters.
    type Stats: Copy + std::fmt::Debug;

    /// A multishot receive on `fd` into this queue's buffers (the buffer ring's
    /// `RECV_MULTISHOT` with buffer select, zcrx's `RECV_ZC`). Set `user_data` and push it.
    fn recv(&self, fd: impl Into<RecvFd>) -> squeue::Entry;

    /// [`recv`](Self::recv) that ends by itself once it delivered `max_bytes` (0: no cap). The
    /// buffer ring's ends with its last data completion (`IORING_RECV_MSHOT_LIM`, Linux 6.17+;
    /// older kernels fail it with `-EINVAL`); zcrx's with a completion of 0 bytes, which is also
    /// how it reports the end of the stream.
    fn recv_capped(&self, fd: impl Into<RecvFd>, max_bytes: u32) -> squeue::Entry;

    /// Gives every chunk whose handles have all dropped (on any thread) back to the kernel, with
    /// one release store of the ring tail. Returns how many chunks came back. Call it once per
    /// event-loop turn, and before re-arming after [`RecvEvent::NoBuffers`](crate::RecvEvent).
    fn flush(&mut self) -> usize;

    /// Free chunks: the kernel's to receive into, or waiting for [`flush`](Self::flush) to give
    /// them to it.
    fn available(&self) -> u32;

    /// Lifetime counters.
    fn stats(&self) -> Self::Stats;

    /// Gives back what can be given back and reports what the application still holds. Chunks
    /// held by live handles stay mapped until those handles drop.
    fn teardown(self) -> TeardownReport
    where
        Self: Sized;

    /// Makes the calling thread this queue's home: a handle whose last drop happens on this
    /// thread returns its chunk without an atomic read-modify-write (other threads take the
    /// shared lock-free path). Call it once, on the thread that runs the event loop.
    ///
    /// Returns false if another thread is home already. Keep the queue on its home thread:
    /// chunks whose handles drop there after the queue moved away come back only when it
    /// flushes there again, and if it is dropped on another thread they stay out of circulation
    /// and the area is never unmapped (leaked, never reused). A zcrx queue also refuses
    /// completions away from home ([`Error::AwayFromHome`](crate::Error::AwayFromHome)).
    fn set_home_thread(&mut self) -> bool {
        self.core().shared.returns.bind_home()
    }

    /// Installs `wake`, which the drop of a handle on another thread calls (on that thread)
    /// while this queue is [armed](Self::arm_return_wake), so that an event loop can sleep while
    /// it waits for buffers the application holds elsewhere: write to an eventfd the loop reads,
    /// say. Keep it short and non-blocking. Once per queue: returns false (and drops `wake`) if
    /// one is installed already.
    ///
    /// ```no_run
    /// use zcrx_ifq::bufring::{BufRing, BufRingConfig};
    /// use zcrx_ifq::io_uring::IoUring;
    /// use zcrx_ifq::{Area, RxPool};
    /// use rustix::event::{eventfd, EventfdFlags};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut ring = IoUring::new(256)?;
    /// let area = Area::builder().chunk_size(32 * 1024).chunks(256).build()?;
    /// let mut rx = BufRing::register(&ring, area, BufRingConfig::default())?;
    /// rx.set_home_thread();
    /// // The loop keeps a read of `efd` armed on `ring`; drops on other threads write to it.
    /// let efd = eventfd(0, EventfdFlags::CLOEXEC)?;
    /// let poke = rustix::io::dup(&efd)?;
    /// rx.set_return_waker(move || {
    ///     let _ = rustix::io::write(&poke, &1u64.to_ne_bytes());
    /// });
    /// // A connection waits for buffers the application holds on worker threads:
    /// if !rx.arm_return_wake() {
    ///     ring.submit_and_wait(1)?; // the first of them dropped ends this wait
    /// }
    /// rx.disarm_return_wake();
    /// rx.flush(); // and re-arm the receive
    /// # Ok(()) }
    /// ```
    fn set_return_waker(&mut self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        self.core().shared.returns.set_waker(Box::new(wake)).is_ok()
    }

    /// Call before the event loop sleeps: the next chunk returned on another thread calls the
    /// [waker](Self::set_return_waker), once. Returns true if chunks came back on other threads
    /// already: [`flush`](Self::flush) them instead of sleeping, as no wake-up will come for
    /// them. Without a waker installed it only answers that question.
    fn arm_return_wake(&self) -> bool {
        self.core().shared.returns.arm_wake()
    }

    /// Call once awake: returns need not call the waker any more (left armed, the next return
    /// on another thread would only wake the loop once for nothing).
    fn disarm_return_wake(&self) {
        self.core().shared.returns.disarm_wake()
    }

    /// Whether `owner` holds at least the configured per-owner limit of bytes.
    fn over_limit(&self, owner: OwnerId) -> bool {
        self.core().table.over_limit(owner)
    }

    /// What one owner holds.
    fn owner(&self, owner: OwnerId) -> OwnerStats {
        self.core().table.owner(owner)
    }

    /// The per-owner limit, if any.
    fn owner_limit(&self) -> Option<u64> {
        self.core().table.owner_limit()
    }

    /// Who holds what.
    fn snapshot(&self) -> Snapshot {
        self.core().snapshot()
    }

    /// Chunks in the area.
    fn chunks(&self) -> u32 {
        self.core().area().chunks()
    }

    /// The area's chunk size.
    fn chunk_size(&self) -> usize {
        self.core().area().chunk_size()
    }
}
