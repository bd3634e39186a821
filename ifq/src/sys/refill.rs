//! The zcrx refill region: the refill queue (the kernel's head word, our tail word and the refill
//! entries, at the offsets the kernel returned) and the kernel's copy statistics.
//!
//! [`RefillRing`] owns the producer that says which slot is next, so every entry write lands at a
//! slot its own producer reserved: in bounds (masked to the ring) and not yet published. What an
//! entry names (which buffer) is the queue's accounting: the kernel believes it and reuses the
//! buffer, so the caller returns only references it holds for buffers no handle points into.

use std::mem::size_of;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::refill::zcrx::ZcrxRefill;
use crate::sys::abi::{zcrx_stats, RQE_SIZE, RQ_HEADER_RESERVE};
use crate::sys::mmap::Mmap;
use crate::sys::ring::SharedU32;

/// The refill queue inside a refill region, with its producer.
#[derive(Debug)]
pub(crate) struct RefillRing {
    /// Keeps the region mapped for as long as the pointers below are used.
    map: Arc<Mmap>,
    head: SharedU32,
    tail: SharedU32,
    rqes: NonNull<u8>,
    mask: u32,
    producer: ZcrxRefill,
}

// SAFETY: the pointers point into `map`, which this value keeps alive; all accesses go through
// `&self`/`&mut self` of the single owner, atomically for the index words.
unsafe impl Send for RefillRing {}

impl RefillRing {
    /// Bytes a refill region needs for `entries` entries: the header reserve plus the entries,
    /// rounded up to whole pages (the kernel pins whole pages).
    pub(crate) fn region_len(entries: u32, page: usize) -> usize {
        (RQ_HEADER_RESERVE + entries as usize * RQE_SIZE).div_ceil(page) * page
    }

    /// The ring view of `map` with the kernel's `head`, `tail` and `rqes` offsets, its producer
    /// starting at index 0 (a fresh, zeroed region). `None` if the offsets are misaligned,
    /// overlap, or do not fit `entries` entries inside the mapping.
    pub(crate) fn new(
        map: Arc<Mmap>,
        head: u32,
        tail: u32,
        rqes: u32,
        entries: u32,
    ) -> Option<Self> {
        let len = map.len() as u64;
        let word_ok = |off: u32| off % 4 == 0 && u64::from(off) + 4 <= len;
        let rqes_ok =
            rqes as usize % 8 == 0 && u64::from(rqes) + u64::from(entries) * RQE_SIZE as u64 <= len;
        if !entries.is_power_of_two()
            || !word_ok(head)
            || !word_ok(tail)
            || head == tail
            || !rqes_ok
        {
            return None;
        }
        let (h0, h1, t0, t1) = (
            u64::from(head),
            u64::from(head) + 4,
            u64::from(tail),
            u64::from(tail) + 4,
        );
        let rq = (
            u64::from(rqes),
            u64::from(rqes) + u64::from(entries) * RQE_SIZE as u64,
        );
        let overlaps = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
        if overlaps((h0, h1), rq) || overlaps((t0, t1), rq) {
            return None;
        }
        let base = NonNull::new(map.as_ptr()).expect("a mapping is never at address 0");
        // SAFETY: every offset was checked to lie inside the mapping with the needed alignment
        // (the mapping is page-aligned); `map` is kept in `self`, so the mapping outlives every
        // use; the words are only ever accessed atomically, by us and by the kernel
        // (`smp_load_acquire`/`smp_store_release`).
        let (head, tail, rqes) = unsafe {
            (
                SharedU32::new(base.as_ptr().add(head as usize)),
                SharedU32::new(base.as_ptr().add(tail as usize)),
                base.add(rqes as usize),
            )
        };
        Some(Self {
            map,
            head,
            tail,
            rqes,
            mask: entries - 1,
            producer: ZcrxRefill::new(entries),
        })
    }

    /// Takes over from the words as a previous producer left them (an imported queue: everything
    /// up to the tail is published). False, and nothing changed, if they cannot both be right.
    pub(crate) fn resume(&mut self) -> bool {
        let entries = self.producer.entries();
        match ZcrxRefill::resume(entries, self.head.load_acquire(), self.tail.load_acquire()) {
            Some(producer) => {
                self.producer = producer;
                true
            }
            None => false,
        }
    }

    /// Loads the kernel's head (acquire: the kernel is done with every entry before it) and lets
    /// the producer see it. False if it is implausible (and then ignored).
    #[inline]
    pub(crate) fn observe_head(&mut self) -> bool {
        self.producer.observe(self.head.load_acquire())
    }

    /// Writes a refill entry returning the buffer `off` names (`rqe_off`) at the producer's next
    /// slot, to be published by the next [`publish`](Self::publish). False, and nothing written,
    /// if every slot holds an entry the kernel may not have read.
    #[inline]
    pub(crate) fn push(&mut self, off: u64) -> bool {
        let Some(slot) = self.producer.push() else {
            return false;
        };
        // SAFETY: `slot < entries`, so the 16-byte entry lies inside the region (checked in
        // `new`), 8-byte aligned; `map` keeps the region mapped. The kernel does not read the
        // slot until a later tail store: the producer hands out only slots the kernel has read.
        // The region is never borrowed as a Rust reference, so the writes alias nothing.
        unsafe { write_rqe(self.rqes.as_ptr().add(rqe_at(slot, self.mask)), off, 0, 0) };
        true
    }

    /// Publishes every entry pushed since the last publish with one release store of the tail.
    /// False if there was none.
    #[inline]
    pub(crate) fn publish(&mut self) -> bool {
        match self.producer.publish() {
            Some(tail) => {
                self.tail.store_release(tail);
                true
            }
            None => false,
        }
    }

    /// Entries written that the kernel has not consumed, as far as we know.
    pub(crate) fn in_flight(&self) -> u32 {
        self.producer.in_flight()
    }

    /// Slots in the ring.
    pub(crate) fn entries(&self) -> u32 {
        self.producer.entries()
    }

    /// `(head, tail, rqes)` offsets inside the region, as the kernel gave them.
    pub(crate) fn offsets(&self) -> (u32, u32, u32) {
        let at = |p: *const u8| (p as usize - self.map.as_ptr() as usize) as u32;
        (
            at(self.head.ptr()),
            at(self.tail.ptr()),
            at(self.rqes.as_ptr()),
        )
    }

    /// Length of the region this ring lives in.
    pub(crate) fn mapped_len(&self) -> usize {
        self.map.len()
    }

    /// The kernel's side, for simulations: loads our tail (acquire).
    #[cfg(feature = "sim")]
    pub(crate) fn kernel_tail(&self) -> u32 {
        self.tail.load_acquire()
    }

    /// The kernel's side, for simulations: stores the head (release). Safe: the producer ignores
    /// a head that cannot be right, and a simulated kernel has no other view of the ring.
    #[cfg(feature = "sim")]
    pub(crate) fn kernel_set_head(&self, head: u32) {
        self.head.store_release(head);
    }

    /// The kernel's side, for simulations: reads refill entry `index` (masked) as
    /// `(off, len, pad)`. Only meaningful for a published entry.
    #[cfg(feature = "sim")]
    pub(crate) fn kernel_read(&self, index: u32) -> (u64, u32, u32) {
        // SAFETY: in bounds and aligned as in `push`; only `&mut self` writes entries, so none of
        // our writes is concurrent with this read.
        unsafe {
            let p = self.rqes.as_ptr().add(rqe_at(index, self.mask));
            (
                p.cast::<u64>().read_volatile(),
                p.add(8).cast::<u32>().read_volatile(),
                p.add(12).cast::<u32>().read_volatile(),
            )
        }
    }

    /// Writes `entries` (`(off, len, pad)`, any bytes) after the producer's tail without telling
    /// the producer, then stores `tail` (default: just past them) and, if given, `head` into the
    /// kernel's head word: for tests of what the kernel does with hostile refill rings.
    ///
    /// # Safety
    /// No entry, written now or left in the ring from before and covered by `tail`, may name a
    /// buffer that a live [`RxBuf`](crate::RxBuf) points into: the kernel would take it back and
    /// reuse it under the handle.
    #[cfg(feature = "sim")]
    pub(crate) unsafe fn write_raw(
        &mut self,
        entries: &[(u64, u32, u32)],
        tail: Option<u32>,
        head: Option<u32>,
    ) {
        let first = self.producer.tail();
        for (i, &(off, len, pad)) in entries.iter().enumerate() {
            let index = first.wrapping_add(i as u32);
            // SAFETY: in bounds and aligned as in `push`; slots from the producer's tail on are
            // not read by the kernel until the tail store below; the caller vouches for what the
            // entries name.
            unsafe {
                write_rqe(
                    self.rqes.as_ptr().add(rqe_at(index, self.mask)),
                    off,
                    len,
                    pad,
                )
            };
        }
        self.tail
            .store_release(tail.unwrap_or(first.wrapping_add(entries.len() as u32)));
        if let Some(head) = head {
            self.head.store_release(head);
        }
    }
}

/// Byte offset of the entry with index `index` in a ring with `mask`.
#[inline]
fn rqe_at(index: u32, mask: u32) -> usize {
    (index & mask) as usize * RQE_SIZE
}

/// Writes one `struct io_uring_zcrx_rqe` `{off: u64, len: u32, __pad: u32}` at `entry`.
///
/// # Safety
/// `entry` must be 8-byte aligned and point at 16 writable bytes of a live mapping that no Rust
/// reference covers and that the kernel does not read until a later tail store.
#[inline]
unsafe fn write_rqe(entry: *mut u8, off: u64, len: u32, pad: u32) {
    // SAFETY: per the contract.
    unsafe {
        entry.cast::<u64>().write_volatile(off);
        entry.add(8).cast::<u32>().write_volatile(len);
        entry.add(12).cast::<u32>().write_volatile(pad);
    }
}

/// The kernel's copy statistics (`struct zcrx_stats`, 7.2) inside a refill region, which the
/// kernel updates with plain stores while receives run.
#[derive(Debug)]
pub(crate) struct SharedStats {
    /// Keeps the region mapped for as long as `ptr` is used.
    map: Arc<Mmap>,
    ptr: *const zcrx_stats,
}

// SAFETY: the pointer points into `map`, which this value keeps alive; it is only read, with
// volatile loads of aligned words.
unsafe impl Send for SharedStats {}

impl SharedStats {
    /// The statistics at `offset` in `map`; `None` if they do not fit or are misaligned.
    pub(crate) fn new(map: &Arc<Mmap>, offset: u64) -> Option<Self> {
        let fits = offset % 8 == 0
            && offset
                .checked_add(size_of::<zcrx_stats>() as u64)
                .is_some_and(|end| end <= map.len() as u64);
        fits.then(|| Self {
            map: Arc::clone(map),
            ptr: map
                .as_ptr()
                .wrapping_add(offset as usize)
                .cast_const()
                .cast(),
        })
    }

    /// `(copy_count, copy_bytes)` as last stored by the kernel.
    pub(crate) fn read(&self) -> (u64, u64) {
        debug_assert!(self.ptr.cast::<u8>() >= self.map.as_ptr().cast_const());
        // SAFETY: in bounds and 8-aligned (checked in `new`), and `map` keeps the mapping alive;
        // the kernel writes the words with single aligned stores (`WRITE_ONCE`), so a volatile
        // load sees an old or a new value, never a torn one.
        unsafe {
            (
                std::ptr::addr_of!((*self.ptr).copy_count).read_volatile(),
                std::ptr::addr_of!((*self.ptr).copy_bytes).read_volatile(),
            )
        }
    }
}
