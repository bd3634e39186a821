//! Timers: a heap of deadlines, each with the waker of the `Sleep` waiting for it. The loop
//! never waits past the next one (`turn.rs`) and fires those that have come after each wait.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::task::Waker;
use std::time::Instant;

use super::Driver;

/// The deadlines of one thread; a cancelled sleep's deadline stays in the heap until it comes
/// up, without a waker.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next: u64,
}

impl Timers {
    /// The next deadline a sleep still waits for (dropping those of cancelled ones).
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if self.wakers.contains_key(id) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Wakes the sleeps whose deadline has come.
    pub(super) fn fire(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(w) = self.wakers.remove(&id) {
                w.wake();
            }
        }
    }
}

impl Driver {
    /// A deadline for the sleep whose waker is `waker`; returns its id.
    pub(crate) fn add_timer(&mut self, at: Instant, waker: Waker) -> u64 {
        let id = self.timers.next;
        self.timers.next += 1;
        self.timers.heap.push(Reverse((at, id)));
        self.timers.wakers.insert(id, waker);
        id
    }

    /// The sleep `id` was polled again, perhaps by another task.
    pub(crate) fn update_timer(&mut self, id: u64, waker: &Waker) {
        if let Some(w) = self.timers.wakers.get_mut(&id) {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
    }

    /// The sleep `id` is over (its deadline came, or it was dropped).
    pub(crate) fn cancel_timer(&mut self, id: u64) {
        self.timers.wakers.remove(&id);
    }
}
