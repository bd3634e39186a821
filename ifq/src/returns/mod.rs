//! The cross-thread return path: per-chunk handle counts and a lock-free stack of chunks whose
//! last handle dropped.
//!
//! Each chunk has one atomic word: the number of live handles (low 31 bits) and an `IN_STACK`
//! flag (top bit). A drop decrements the count; the drop of the last handle goes, in one
//! compare-and-swap, from `1` to `IN_STACK` (no handle, claimed) and pushes the chunk on an
//! intrusive Treiber stack (a `next` index per chunk, a `head` index). The owning thread takes the
//! whole stack with one `swap` and clears each chunk's flag; a chunk whose count is still zero
//! goes back to the kernel.
//!
//! Why this is sound:
//! - A chunk is pushed only by the thread that made the `1 -> IN_STACK` step, so it is in the
//!   stack at most once, and `next` is written only by that thread while the chunk is not
//!   reachable.
//! - Pushes are CAS on `head`; the consumer only ever takes everything (`swap(EMPTY)`), so there
//!   is no pop and no ABA.
//! - Only the owning thread creates handles for a chunk whose count is zero (on a completion),
//!   and it also drains; so a count seen as zero while draining stays zero until the drain is over
//!   (which is also why the owner may set and clear the word of such a chunk with plain stores).
//! - The final step is `AcqRel` and the push is `Release`; the drain's `swap` is `Acquire`, so
//!   every read through every handle happens before the chunk is written to the ring, whose tail
//!   store is `Release` for the kernel.
//!
//! The owner's own thread can skip the shared stack: once the owner has made its thread the
//! stack's [home](ReturnStack::bind_home), a last drop *on that thread* pushes onto a second,
//! home-only stack with plain loads and stores, and the owner drains both. Only the home thread
//! ever touches the home stack: every access checks `home` against the caller's thread number
//! (unique for the life of the process), and `home` changes only on the home thread (set once
//! from zero, cleared by `close`). If the owner leaves its home thread, chunks dropped there wait
//! until it drains there again; if it is dropped elsewhere, they (and the structure) are leaked,
//! never reused.
//!
//! The owner can ask to be woken when chunks come back from other threads, so that it can sleep
//! while a connection waits for buffers the application holds elsewhere: it installs a
//! [waker](ReturnStack::set_waker) once and [arms](ReturnStack::arm_wake) it before each sleep.
//! The push that finds the shared stack empty checks the flag and calls the waker (pushes onto
//! a non-empty stack need not: the one that made it non-empty came first). Arming and that push
//! form a store-buffering pair, each a store, a `SeqCst` fence and a load: either the push sees
//! the flag and wakes the owner, or the owner sees the chunk and does not sleep. The flag and
//! the waker live in their own `Arc`, which such a push clones *before* its chunk becomes
//! reachable: once it is, the owner may close and the structure may be freed under the pusher.
//!
//! Handles hold no reference count on the structure around the stack: when the owner goes it
//! [closes](ReturnStack::close) the stack (the head becomes `CLOSED`) and counts the chunks still
//! out; each of those is "pushed" exactly once more, which counts down instead, and whoever brings
//! the count to zero (the owner, or the drop of the last handle) frees the structure.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::chunk::ChunkId;

const IN_STACK: u32 = 1 << 31;
const EMPTY: u32 = u32::MAX;
/// The stack head once the owner has gone (see [`ReturnStack::close`]).
const CLOSED: u32 = u32::MAX - 1;
/// Past this many handles on one chunk we abort rather than risk the count reaching `IN_STACK`
/// (only reachable by leaking billions of handles, as with `Arc`).
const MAX_REFS: u32 = IN_STACK >> 1;

struct Cell {
    word: AtomicU32,
    next: AtomicU32,
}

/// Thread numbers handed out so far (not a synchronisation point: only uniqueness matters).
static THREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(not(loom))]
std::thread_local! {
    static THREAD: u64 = THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
}
#[cfg(loom)]
loom::thread_local! {
    static THREAD: u64 = THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
}

/// The calling thread's number: never zero, never reused (unlike OS thread ids or the addresses
/// of thread-locals, which come back after a thread exits).
#[inline]
fn thread_number() -> u64 {
    THREAD.with(|n| *n)
}

/// Keeps the stack head (written by every dropping thread) off the cache line of the read-mostly
/// fields next to it.
#[repr(align(64))]
struct Padded<T>(T);

/// Handle counts and the return stack for `n` chunks.
pub(crate) struct ReturnStack {
    cells: Box<[Cell]>,
    /// The owner may add a handle to a chunk whose only handle is held elsewhere (zcrx: another
    /// fragment lands in a chunk the application holds). Without that, whoever holds a chunk's
    /// only handle is the only one who can change its word, and its drop needs no
    /// read-modify-write.
    owner_adds_to_held: bool,
    head: Padded<AtomicU32>,
    /// The number of the owner's thread once it [bound](Self::bind_home) it, else 0.
    home: AtomicU64,
    /// The home thread's stack (see the module docs): only the home thread reads or writes it,
    /// so relaxed loads and stores, no read-modify-write.
    local: Padded<AtomicU32>,
    /// After [`close`](Self::close): chunks that will still come back, minus those that came
    /// back (wrapping: drops may count down before the owner counts up).
    orphans: Padded<AtomicU32>,
    /// How a return on another thread wakes the owner, once the owner installed it.
    wake: OnceLock<Arc<Wake>>,
}

/// What a return on another thread calls to wake the owner (an eventfd write, say).
pub(crate) type Waker = Box<dyn Fn() + Send + Sync>;

struct Wake {
    /// The owner sleeps (or is about to) and wants the next chunk returned on another thread to
    /// call `waker` (see the module docs).
    armed: AtomicBool,
    waker: Waker,
}

impl Wake {
    /// After a push onto the empty shared stack: wakes the owner if it is armed, once.
    fn owner_if_armed(&self) {
        // Pairs with the fence in `arm_wake` (module docs).
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::Relaxed) {
            (self.waker)();
        }
    }
}

impl ReturnStack {
    /// `owner_adds_to_held`: whether the owner may [`acquire`](Self::acquire) a chunk that has
    /// handles without holding one of them itself (see the field).
    pub(crate) fn new(n: u32, owner_adds_to_held: bool) -> Self {
        assert!(
            n < CLOSED & !IN_STACK,
            "too many chunks for the return stack"
        );
        Self {
            cells: (0..n)
                .map(|_| Cell {
                    word: AtomicU32::new(0),
                    next: AtomicU32::new(EMPTY),
                })
                .collect(),
            owner_adds_to_held,
            head: Padded(AtomicU32::new(EMPTY)),
            home: AtomicU64::new(0),
            local: Padded(AtomicU32::new(EMPTY)),
            orphans: Padded(AtomicU32::new(0)),
            wake: OnceLock::new(),
        }
    }

    /// Installs what a chunk returned on another thread calls while the owner is
    /// [armed](Self::arm_wake). Once; gives `waker` back if one is installed already.
    pub(crate) fn set_waker(&self, waker: Waker) -> Result<(), Waker> {
        if self.wake.get().is_some() {
            return Err(waker);
        }
        // Owner only (the backends take `&mut self`): nobody sets it in between.
        let _ = self.wake.set(Arc::new(Wake {
            armed: AtomicBool::new(false),
            waker,
        }));
        Ok(())
    }

    /// Owner only, before it sleeps: the next chunk returned on another thread calls the waker.
    /// Returns true if chunks came back on another thread already: drain them instead of
    /// sleeping (no wake-up will come for them).
    pub(crate) fn arm_wake(&self) -> bool {
        if let Some(wake) = self.wake.get() {
            wake.armed.store(true, Ordering::Relaxed);
            // Pairs with the fence in `Wake::owner_if_armed` (module docs).
            fence(Ordering::SeqCst);
        }
        self.head.0.load(Ordering::Relaxed) != EMPTY
    }

    /// Owner only, once awake: returns need not wake it any more (a stale flag would only cost
    /// one needless wake-up).
    pub(crate) fn disarm_wake(&self) {
        if let Some(wake) = self.wake.get() {
            wake.armed.store(false, Ordering::Relaxed);
        }
    }

    /// Makes the calling thread the home thread (see the module docs). Owner only. True if it is
    /// home now; false if another thread already is.
    pub(crate) fn bind_home(&self) -> bool {
        let me = thread_number();
        match self
            .home
            .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => true,
            Err(home) => home == me,
        }
    }

    /// Whether a home thread is set and the caller is not on it. An owner that
    /// `owner_adds_to_held` must not add handles then: the home thread's drops rely on it
    /// (see `release`).
    #[inline]
    pub(crate) fn away_from_home(&self) -> bool {
        let home = self.home.load(Ordering::Relaxed);
        home != 0 && home != thread_number()
    }

    /// Whether the caller is on the home thread.
    #[inline]
    fn at_home(&self) -> bool {
        // A thread reads its own writes of `home`; other threads' values never equal its number.
        let home = self.home.load(Ordering::Relaxed);
        home != 0 && home == thread_number()
    }

    /// Adds a handle to `chunk`. Called by the owner for a new completion (count may be zero; a
    /// nonzero count only if the stack was made with `owner_adds_to_held`, or while the owner
    /// holds a handle itself), or by anyone holding a handle to the chunk.
    #[inline]
    pub(crate) fn acquire(&self, chunk: ChunkId) {
        let prev = self.cells[chunk as usize]
            .word
            .fetch_add(1, Ordering::Relaxed);
        if prev & !IN_STACK >= MAX_REFS {
            std::process::abort();
        }
    }

    /// Adds the first handle to a chunk that has none and is not queued: one the kernel held
    /// until this completion. Owner only. A plain store: no other thread can touch the word of a
    /// chunk nobody holds a handle to.
    #[inline]
    pub(crate) fn acquire_first(&self, chunk: ChunkId) {
        let word = &self.cells[chunk as usize].word;
        debug_assert_eq!(word.load(Ordering::Relaxed), 0, "chunk {chunk} is not idle");
        word.store(1, Ordering::Relaxed);
    }

    /// Drops a handle to `chunk`; the last one queues the chunk for return. Any thread.
    ///
    /// Returns true when the owner has gone ([`close`](Self::close)) and this was the last
    /// handle of all: the caller frees what holds the stack.
    #[inline]
    #[must_use]
    pub(crate) fn release(&self, chunk: ChunkId) -> bool {
        let cell = &self.cells[chunk as usize];
        // One step from "one handle" to "no handle, queued": a chunk is never seen without
        // handles and unqueued between its last drop and its return (what `close` relies on).
        // `Acquire`: the drops of the other handles (their `AcqRel` steps) happen before this
        // chunk is pushed, and so before the owner reuses it.
        let mut word = cell.word.load(Ordering::Acquire);
        if word == 1 && (!self.owner_adds_to_held || self.at_home()) {
            // This is the only handle and not queued, and nobody else can add one: other handles
            // would be needed to make one, and the owner adds to held chunks only if
            // `owner_adds_to_held`, and then only on its home thread (see `away_from_home`),
            // which is this thread. So nobody else writes the word until it is pushed: a plain
            // store, no RMW.
            cell.word.store(IN_STACK, Ordering::Relaxed);
            return self.push(chunk);
        }
        loop {
            debug_assert_ne!(word & !IN_STACK, 0, "handle count underflow");
            let new = if word == 1 { IN_STACK } else { word - 1 };
            match cell
                .word
                .compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        word == 1 && self.push(chunk)
    }

    /// Queues a claimed chunk; true if the owner has gone and this was the last chunk out.
    #[inline]
    fn push(&self, chunk: ChunkId) -> bool {
        let cell = &self.cells[chunk as usize];
        if self.at_home() {
            // Not closed: `close` runs on the home thread (else `home` stays set forever and
            // nothing here is ever read again) and clears `home`.
            cell.next
                .store(self.local.0.load(Ordering::Relaxed), Ordering::Relaxed);
            self.local.0.store(chunk, Ordering::Relaxed);
            return false;
        }
        let mut head = self.head.0.load(Ordering::Relaxed);
        // Taken while this chunk still keeps the structure alive (module docs).
        let mut wake = None;
        loop {
            if head == CLOSED {
                return self.orphans.0.fetch_sub(1, Ordering::AcqRel) == 1;
            }
            if head == EMPTY && wake.is_none() {
                wake = self.wake.get().cloned();
            }
            cell.next.store(head, Ordering::Relaxed);
            match self.head.0.compare_exchange_weak(
                head,
                chunk,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // From here on `self` may be gone: only `wake` is ours.
                    if head == EMPTY {
                        if let Some(wake) = wake {
                            wake.owner_if_armed();
                        }
                    }
                    return false;
                }
                Err(h) => head = h,
            }
        }
    }

    /// Takes every queued chunk; calls `f` for each whose handle count is still zero (the rest
    /// were handed out again meanwhile and will be queued when their handles drop). Owner only.
    #[inline]
    pub(crate) fn drain(&self, mut f: impl FnMut(ChunkId)) -> usize {
        let mut n = 0;
        if self.at_home() {
            let at = self.local.0.load(Ordering::Relaxed);
            if at != EMPTY {
                self.local.0.store(EMPTY, Ordering::Relaxed);
                n += self.walk(at, &mut f);
            }
        }
        // Skip the swap (a read-modify-write) when nothing is queued.
        if self.head.0.load(Ordering::Relaxed) != EMPTY {
            let at = self.head.0.swap(EMPTY, Ordering::Acquire);
            debug_assert_ne!(at, CLOSED, "drained after close");
            n += self.walk(at, f);
        }
        n
    }

    #[inline]
    fn walk(&self, mut at: u32, mut f: impl FnMut(ChunkId)) -> usize {
        let mut n = 0;
        while at != EMPTY {
            let cell = &self.cells[at as usize];
            // Read `next` before clearing the flag: afterwards another thread may re-push `at`.
            let next = cell.next.load(Ordering::Relaxed);
            let word = if cell.word.load(Ordering::Acquire) == IN_STACK {
                // No handle is left, so no other thread can change the word: a plain store.
                cell.word.store(0, Ordering::Relaxed);
                IN_STACK
            } else {
                cell.word.fetch_and(!IN_STACK, Ordering::AcqRel)
            };
            if word & !IN_STACK == 0 {
                f(at);
                n += 1;
            }
            at = next;
        }
        n
    }

    /// The owner goes away: from now on a chunk whose last handle drops is not queued but
    /// counted, and the drop that counts the last one learns it (`release` returns true). Returns
    /// true if no handle is left at all: the caller frees what holds the stack now. Owner only,
    /// once; no handle may be created afterwards except from an existing one.
    ///
    /// Exact because a chunk that is out (has handles, or is claimed and not yet drained) always
    /// has a count or the `IN_STACK` flag set: such a chunk is queued exactly once more, after the
    /// head became `CLOSED` (those queued before are walked here).
    #[must_use]
    pub(crate) fn close(&self) -> bool {
        let queued = self.head.0.swap(CLOSED, Ordering::AcqRel);
        self.walk(queued, |_| {});
        if self.at_home() {
            // From here on drops on this thread go the shared way too (and count down).
            self.home.store(0, Ordering::Relaxed);
            let at = self.local.0.swap(EMPTY, Ordering::Relaxed);
            self.walk(at, |_| {});
        }
        let out = self
            .cells
            .iter()
            .filter(|c| c.word.load(Ordering::Acquire) != 0)
            .count() as u32;
        let prev = self.orphans.0.fetch_add(out, Ordering::AcqRel);
        prev.wrapping_add(out) == 0
    }

    #[cfg(test)]
    /// Handles currently alive on `chunk` (racy unless the caller knows no other thread has one).
    pub(crate) fn handles(&self, chunk: ChunkId) -> u32 {
        self.cells[chunk as usize].word.load(Ordering::Acquire) & !IN_STACK
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.0.load(Ordering::Acquire) == EMPTY
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
