//! The cross-thread return path: per-chunk handle counts and a lock-free stack of chunks whose
//! last handle dropped.
//!
//! Each chunk has one atomic word: the number of live handles (low 31 bits) and an `IN_STACK`
//! flag (top bit). A drop decrements the count; the drop that takes it to zero claims the chunk
//! with a compare-and-swap `0 -> IN_STACK` and pushes it on an intrusive Treiber stack (a `next`
//! index per chunk, a `head` index). The owning thread takes the whole stack with one `swap` and
//! clears each chunk's flag; a chunk whose count is still zero goes back to the kernel.
//!
//! Why this is sound:
//! - A chunk is pushed only by the thread that won `0 -> IN_STACK`, so it is in the stack at most
//!   once, and `next` is written only by that thread while the chunk is not reachable.
//! - Pushes are CAS on `head`; the consumer only ever takes everything (`swap(EMPTY)`), so there
//!   is no pop and no ABA.
//! - Only the owning thread creates handles for a chunk whose count is zero (on a completion),
//!   and it also drains; so a count seen as zero while draining stays zero until the drain is over.
//! - The final decrement is `AcqRel` and the push is `Release`; the drain's `swap` is `Acquire`, so
//!   every read through every handle happens before the chunk is written to the ring, whose tail
//!   store is `Release` for the kernel.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, Ordering};

use crate::chunk::ChunkId;

const IN_STACK: u32 = 1 << 31;
const EMPTY: u32 = u32::MAX;
/// Past this many handles on one chunk we abort rather than risk the count reaching `IN_STACK`
/// (only reachable by leaking billions of handles, as with `Arc`).
const MAX_REFS: u32 = IN_STACK >> 1;

struct Cell {
    word: AtomicU32,
    next: AtomicU32,
}

/// Handle counts and the return stack for `n` chunks.
pub(crate) struct ReturnStack {
    cells: Box<[Cell]>,
    head: AtomicU32,
}

impl ReturnStack {
    pub(crate) fn new(n: u32) -> Self {
        assert!(n < IN_STACK, "too many chunks for the return stack");
        Self {
            cells: (0..n)
                .map(|_| Cell {
                    word: AtomicU32::new(0),
                    next: AtomicU32::new(EMPTY),
                })
                .collect(),
            head: AtomicU32::new(EMPTY),
        }
    }

    /// Adds a handle to `chunk`. Called by the owner for a new completion (count may be zero),
    /// or by anyone holding a handle to the chunk (count at least one).
    #[inline]
    pub(crate) fn acquire(&self, chunk: ChunkId) {
        let prev = self.cells[chunk as usize]
            .word
            .fetch_add(1, Ordering::Relaxed);
        if prev & !IN_STACK >= MAX_REFS {
            std::process::abort();
        }
    }

    /// Drops a handle to `chunk`; the last one queues the chunk for return. Any thread.
    #[inline]
    pub(crate) fn release(&self, chunk: ChunkId) {
        let cell = &self.cells[chunk as usize];
        let prev = cell.word.fetch_sub(1, Ordering::AcqRel);
        debug_assert_ne!(prev & !IN_STACK, 0, "handle count underflow");
        if prev == 1
            && cell
                .word
                .compare_exchange(0, IN_STACK, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.push(chunk);
        }
    }

    fn push(&self, chunk: ChunkId) {
        let cell = &self.cells[chunk as usize];
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            cell.next.store(head, Ordering::Relaxed);
            match self
                .head
                .compare_exchange_weak(head, chunk, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Takes every queued chunk; calls `f` for each whose handle count is still zero (the rest
    /// were handed out again meanwhile and will be queued when their handles drop). Owner only.
    pub(crate) fn drain(&self, mut f: impl FnMut(ChunkId)) -> usize {
        let mut at = self.head.swap(EMPTY, Ordering::Acquire);
        let mut n = 0;
        while at != EMPTY {
            let cell = &self.cells[at as usize];
            // Read `next` before clearing the flag: afterwards another thread may re-push `at`.
            let next = cell.next.load(Ordering::Relaxed);
            let word = cell.word.fetch_and(!IN_STACK, Ordering::AcqRel);
            if word & !IN_STACK == 0 {
                f(at);
                n += 1;
            }
            at = next;
        }
        n
    }

    #[cfg(test)]
    /// Handles currently alive on `chunk` (racy unless the caller knows no other thread has one).
    pub(crate) fn handles(&self, chunk: ChunkId) -> u32 {
        self.cells[chunk as usize].word.load(Ordering::Acquire) & !IN_STACK
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == EMPTY
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn last_drop_queues_once() {
        let s = ReturnStack::new(4);
        s.acquire(2);
        s.acquire(2);
        s.release(2);
        assert!(s.is_empty());
        s.release(2);
        let mut got = vec![];
        s.drain(|c| got.push(c));
        assert_eq!(got, vec![2]);
        assert_eq!(s.drain(|_| panic!("drained twice")), 0);
    }

    #[test]
    fn redelivered_before_drain_is_skipped_then_requeued() {
        let s = ReturnStack::new(2);
        s.acquire(1);
        s.release(1); // queued
        s.acquire(1); // owner hands it out again before draining
        assert_eq!(s.drain(|_| panic!("chunk is live")), 0);
        s.release(1);
        let mut got = vec![];
        s.drain(|c| got.push(c));
        assert_eq!(got, vec![1]);
    }

    #[test]
    fn many_threads_each_chunk_returned_exactly_once() {
        const N: u32 = 4096;
        let s = Arc::new(ReturnStack::new(N));
        for c in 0..N {
            s.acquire(c);
            s.acquire(c);
        }
        let mut seen = vec![0u32; N as usize];
        std::thread::scope(|sc| {
            for t in 0..2 {
                let s = &s;
                sc.spawn(move || {
                    for c in 0..N {
                        // Each thread drops one of the two handles, in different orders.
                        let c = if t == 0 { c } else { N - 1 - c };
                        s.release(c);
                    }
                });
            }
            // Drain concurrently with the drops.
            for _ in 0..1000 {
                s.drain(|c| seen[c as usize] += 1);
            }
        });
        s.drain(|c| seen[c as usize] += 1);
        assert!(seen.iter().all(|&n| n == 1), "every chunk exactly once");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two handles to one chunk dropped on two threads while the owner drains: the chunk is
    /// returned exactly once, and only after both drops.
    #[test]
    fn concurrent_drops_and_drain() {
        loom::model(|| {
            let s = Arc::new(ReturnStack::new(2));
            s.acquire(0);
            s.acquire(0);
            s.acquire(1);
            let a = {
                let s = s.clone();
                loom::thread::spawn(move || s.release(0))
            };
            let b = {
                let s = s.clone();
                loom::thread::spawn(move || {
                    s.release(0);
                    s.release(1);
                })
            };
            let mut seen = [0u32; 2];
            s.drain(|c| {
                assert_eq!(s.handles(c), 0);
                seen[c as usize] += 1
            });
            a.join().unwrap();
            b.join().unwrap();
            s.drain(|c| seen[c as usize] += 1);
            assert_eq!(seen, [1, 1]);
        });
    }

    /// The owner re-delivers a chunk that a foreign drop just queued: never returned while live,
    /// returned once after the new handle drops.
    #[test]
    fn redelivery_races_foreign_drop() {
        loom::model(|| {
            let s = Arc::new(ReturnStack::new(1));
            s.acquire(0);
            let t = {
                let s = s.clone();
                loom::thread::spawn(move || s.release(0))
            };
            let mut returned = 0;
            s.drain(|_| returned += 1);
            let live = if returned == 0 {
                s.acquire(0); // the owner hands the chunk out again
                true
            } else {
                false
            };
            t.join().unwrap();
            if live {
                s.drain(|_| panic!("returned while a handle is live"));
                s.release(0);
            }
            s.drain(|_| returned += 1);
            assert_eq!(returned, 1);
        });
    }
}
