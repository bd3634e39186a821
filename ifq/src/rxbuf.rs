//! [`RxBuf`]: a safe handle to received bytes inside the area.

use std::fmt;
use std::ops::{Bound, Deref, RangeBounds};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::area::Area;
use crate::chunk::ChunkId;
use crate::returns::ReturnStack;

/// What every handle and the owning queue share: the mapping, the return path, and whatever must
/// outlive the last handle (the io_uring whose teardown would scrub the area).
pub(crate) struct Shared {
    area: Option<Area>,
    pub(crate) returns: ReturnStack,
    /// Dropped after the last handle: e.g. a duplicate of the ring fd, so the kernel cannot scrub
    /// and reuse chunks while a handle still points at them.
    keepalive: Mutex<Vec<Box<dyn Send>>>,
    /// Set when the kernel may still write into the area after we are gone (a buffer ring that
    /// could not be unregistered): the mapping is then leaked instead of unmapped.
    leak_area: AtomicBool,
}

impl Shared {
    /// `owner_adds_to_held`: the owner may add handles to chunks the application holds (zcrx
    /// redelivery); see [`ReturnStack::new`].
    pub(crate) fn new(area: Area, owner_adds_to_held: bool) -> Self {
        let returns = ReturnStack::new(area.chunks(), owner_adds_to_held);
        Self {
            area: Some(area),
            returns,
            keepalive: Mutex::new(Vec::new()),
            leak_area: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(crate) fn area(&self) -> &Area {
        self.area.as_ref().expect("area present until drop")
    }

    pub(crate) fn keep_alive(&self, thing: Box<dyn Send>) {
        self.keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thing);
    }

    pub(crate) fn leak_area_on_drop(&self) {
        self.leak_area.store(true, Ordering::Release);
    }
}

/// The owning queue's pointer to its [`Shared`]. Handles point to the same `Shared` without a
/// reference count: the per-chunk handle counts of the return stack say whether any handle
/// lives. When the owner goes it closes the stack; the `Shared` is freed by whoever is last, the
/// owner or the drop of the last handle.
pub(crate) struct SharedOwner(NonNull<Shared>);

// SAFETY: `Shared` is shared with handles on any thread (it is `Sync`: atomics and a mutex); the
// owner only moves between threads.
unsafe impl Send for SharedOwner {}

impl SharedOwner {
    pub(crate) fn new(area: Area, owner_adds_to_held: bool) -> Self {
        Self(NonNull::from(Box::leak(Box::new(Shared::new(
            area,
            owner_adds_to_held,
        )))))
    }

    /// Makes a handle to `len` bytes at `offset` inside `chunk`, taking one handle reference.
    /// Returns `None` (and takes nothing) if the range leaves the chunk. `first`: the owner knows
    /// the chunk has no handle and is not queued (the kernel held it until now).
    #[inline(always)]
    pub(crate) fn handle(
        &self,
        chunk: ChunkId,
        offset: u32,
        len: u32,
        first: bool,
    ) -> Option<RxBuf> {
        let area = self.area();
        let chunk_size = area.chunk_size() as u64;
        if chunk >= area.chunks() || u64::from(offset) + u64::from(len) > chunk_size {
            return None;
        }
        let at = area.chunk_offset(chunk) + u64::from(offset);
        // SAFETY: `at + len <= (chunk + 1) * chunk_size <= area.len()` (checked above), so the
        // pointer stays inside the live mapping.
        let ptr = unsafe { NonNull::new_unchecked(area.base().add(at as usize)) };
        if first {
            self.returns.acquire_first(chunk);
        } else {
            self.returns.acquire(chunk);
        }
        Some(RxBuf {
            shared: self.0,
            ptr,
            len,
            chunk,
        })
    }
}

impl std::ops::Deref for SharedOwner {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        // SAFETY: the owner keeps `Shared` alive until its own drop (`close` returns false while
        // it has not run).
        unsafe { self.0.as_ref() }
    }
}

impl Drop for SharedOwner {
    fn drop(&mut self) {
        if self.returns.close() {
            // SAFETY: no handle is left and none can be made (the owner is going): we are the
            // last user. The pointer came from `Box::leak` in `new`.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // First whatever keeps the kernel's view alive (e.g. the ring fd), then the mapping.
        drop(std::mem::take(
            self.keepalive.get_mut().unwrap_or_else(|e| e.into_inner()),
        ));
        if let Some(area) = self.area.take() {
            if *self.leak_area.get_mut() {
                area.leak();
            }
        }
    }
}

/// Received bytes: a read-only view of part of one chunk of the area.
///
/// Move-only and `Send`: it can be passed to another thread, sliced and split (the pieces share
/// the chunk), or turned into [`bytes::Bytes`] without a copy. When the last handle into a chunk
/// drops, on whatever thread, the chunk is queued for return to the kernel; the owning queue
/// publishes returns in batches.
///
/// Holding a handle keeps its chunk out of the kernel's reach, so hold only what you still need:
/// the runtime stops reading a connection that holds more than its limit.
pub struct RxBuf {
    /// Alive while this handle is: it holds one reference in its chunk's handle count (see
    /// [`SharedOwner`]).
    shared: NonNull<Shared>,
    ptr: NonNull<u8>,
    len: u32,
    chunk: ChunkId,
}

// SAFETY: the bytes behind `ptr` are not written by anybody while any handle to the chunk lives
// (the chunk is in the user state: the kernel has it neither posted nor, under zcrx, reusable,
// because the ring stays open through `Shared`'s keepalive). Reading them from any thread is fine
// and dropping goes through atomics.
unsafe impl Send for RxBuf {}
// SAFETY: `&RxBuf` only gives shared reads of immutable bytes.
unsafe impl Sync for RxBuf {}

impl RxBuf {
    fn shared(&self) -> &Shared {
        // SAFETY: this handle's reference in the chunk count keeps `Shared` alive.
        unsafe { self.shared.as_ref() }
    }

    /// The chunk these bytes are in.
    pub fn chunk(&self) -> ChunkId {
        self.chunk
    }

    /// Byte offset of the first byte in the area.
    pub fn area_offset(&self) -> u64 {
        self.ptr.as_ptr() as u64 - self.shared().area().addr()
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn range(&self, range: impl RangeBounds<usize>) -> (u32, u32) {
        let len = self.len as usize;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1).expect("range start overflow"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1).expect("range end overflow"),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => len,
        };
        assert!(
            start <= end && end <= len,
            "range {start}..{end} out of bounds for RxBuf of length {len}"
        );
        (start as u32, (end - start) as u32)
    }

    fn piece(&self, start: u32, len: u32) -> RxBuf {
        self.shared().returns.acquire(self.chunk);
        RxBuf {
            shared: self.shared,
            // SAFETY: `start <= self.len`, so the pointer stays within this handle's bytes.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(start as usize)) },
            len,
            chunk: self.chunk,
        }
    }

    /// A new handle to a sub-range. The chunk returns when both handles have dropped.
    ///
    /// # Panics
    /// If the range is out of bounds, like slice indexing.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> RxBuf {
        let (start, len) = self.range(range);
        self.piece(start, len)
    }

    /// Splits off and returns `[0, at)`; `self` keeps `[at, len)`.
    ///
    /// # Panics
    /// If `at > len`.
    pub fn split_to(&mut self, at: usize) -> RxBuf {
        let (_, head_len) = self.range(..at);
        let head = self.piece(0, head_len);
        self.advance(at);
        head
    }

    /// Splits off and returns `[at, len)`; `self` keeps `[0, at)`.
    ///
    /// # Panics
    /// If `at > len`.
    pub fn split_off(&mut self, at: usize) -> RxBuf {
        let (start, tail_len) = self.range(at..);
        let tail = self.piece(start, tail_len);
        self.len = start;
        tail
    }

    /// Drops the first `n` bytes from this view.
    ///
    /// # Panics
    /// If `n > len`.
    pub fn advance(&mut self, n: usize) {
        let (start, len) = self.range(n..);
        // SAFETY: `start <= self.len`, so the pointer stays within this handle's bytes.
        self.ptr = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(start as usize)) };
        self.len = len;
    }

    /// Shortens the view to `n` bytes (no effect if already shorter).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len as usize {
            self.len = n as u32;
        }
    }
}

impl Deref for RxBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr .. ptr + len` lies inside the mapping (checked in `Shared::handle`, kept by
        // every split), the mapping lives as long as `shared`, and nobody writes the chunk while
        // this handle holds a reference to it (see the `Send` impl).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize) }
    }
}

impl AsRef<[u8]> for RxBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::borrow::Borrow<[u8]> for RxBuf {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for RxBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxBuf")
            .field("chunk", &self.chunk)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for RxBuf {
    #[inline]
    fn drop(&mut self) {
        if self.shared().returns.release(self.chunk) {
            // SAFETY: the owner has gone and this was the last handle of all (see
            // `ReturnStack::close`): nobody else can reach `Shared`. It came from `Box::leak`.
            drop(unsafe { Box::from_raw(self.shared.as_ptr()) });
        }
    }
}

impl From<RxBuf> for bytes::Bytes {
    /// Wraps the handle without copying; the chunk returns when the last `Bytes` clone drops.
    fn from(buf: RxBuf) -> Self {
        bytes::Bytes::from_owner(buf)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn shared() -> SharedOwner {
        let area = Area::builder().chunk_size(4096).chunks(4).build().unwrap();
        let base = area.base();
        for i in 0..4096 {
            // SAFETY: inside chunk 1 of the fresh mapping; no handle exists yet.
            unsafe { base.add(4096 + i).write(i as u8) };
        }
        SharedOwner::new(area, false)
    }

    fn returned(s: &Shared) -> Vec<ChunkId> {
        let mut v = vec![];
        s.returns.drain(|c| v.push(c));
        v
    }

    #[test]
    fn bounds_are_checked() {
        let s = shared();
        assert!(s.handle(4, 0, 1, false).is_none(), "no chunk 4");
        assert!(
            s.handle(1, 4000, 97, false).is_none(),
            "runs past the chunk"
        );
        assert!(s.handle(1, u32::MAX, 2, false).is_none());
        assert_eq!(
            s.returns.handles(1),
            0,
            "a refused handle takes no reference"
        );
        let b = s.handle(1, 4000, 96, false).unwrap();
        assert_eq!(b.len(), 96);
        assert_eq!(b[0], 4000u32 as u8);
        assert_eq!(b.area_offset(), 4096 + 4000);
    }

    #[test]
    fn split_and_slice_share_the_chunk() {
        let s = shared();
        let mut b = s.handle(1, 0, 100, false).unwrap();
        let head = b.split_to(10);
        let tail = b.split_off(50);
        let mid = b.slice(5..=9);
        assert_eq!(&head[..], &(0..10).collect::<Vec<u8>>()[..]);
        assert_eq!(&b[..], &(10..60).collect::<Vec<u8>>()[..]);
        assert_eq!(&tail[..], &(60..100).collect::<Vec<u8>>()[..]);
        assert_eq!(&mid[..], &[15, 16, 17, 18, 19]);
        assert_eq!(s.returns.handles(1), 4);
        drop((head, tail, b));
        assert!(returned(&s).is_empty(), "a piece is still alive");
        let bytes = bytes::Bytes::from(mid);
        let clone = bytes.clone();
        drop(bytes);
        assert!(returned(&s).is_empty(), "a Bytes clone is still alive");
        std::thread::spawn(move || assert_eq!(&clone[..], &[15, 16, 17, 18, 19]))
            .join()
            .unwrap();
        assert_eq!(returned(&s), vec![1]);
    }

    #[test]
    fn advance_truncate_empty() {
        let s = shared();
        let mut b = s.handle(1, 0, 10, false).unwrap();
        b.advance(3);
        b.truncate(4);
        assert_eq!(&b[..], &[3, 4, 5, 6]);
        b.truncate(100);
        assert_eq!(b.len(), 4);
        let e = b.split_off(4);
        assert!(e.is_empty());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn slice_out_of_range_panics_like_a_slice() {
        let s = shared();
        let b = s.handle(1, 0, 10, false).unwrap();
        let _ = b.slice(5..11);
    }

    #[test]
    fn mapping_outlives_the_owner() {
        let s = shared();
        let b = s.handle(1, 0, 8, false).unwrap();
        drop(s);
        assert_eq!(&b[..], &[0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<RxBuf>();
    }
}
