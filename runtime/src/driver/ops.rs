//! Single-shot requests (connect, send, send_zc, sendmsg, shutdown): a slab of slots, each
//! owning what its request points at until the kernel's final completion. The `Op` future
//! polls its slot; dropping it early orphans the slot and asks the kernel to cancel, and the
//! resources go with the final completion, never before.

use std::task::{Context, Poll, Waker};

use zcrx_ifq::completion::CQE_F_MORE;

use super::{ud, Driver, TAG_IGNORE, TAG_OP};
use crate::sys::request::{Owned, Plain};

/// Where a request stands.
enum OpState {
    /// In the kernel; the future's waker, once polled.
    Waiting(Option<Waker>),
    /// Finished; the result and what the request owned wait for the future's next poll.
    Done {
        res: i32,
        flags: u32,
        owned: Box<Owned>,
    },
    /// In the kernel, and its future is gone: freed at the final completion.
    Orphaned,
}

/// One request's slot (what the request points at is the ring's until the final completion).
pub(super) struct OpSlot {
    state: OpState,
    /// Result of the first completion of a two-completion request (zero-copy send).
    first: Option<i32>,
}

impl Driver {
    /// Submits `req`.
    pub(crate) fn submit_op(&mut self, req: Owned) -> usize {
        let key = self.ops.insert(OpSlot {
            state: OpState::Waiting(None),
            first: None,
        });
        self.push_owned(ud(TAG_OP, key), req);
        key
    }

    /// Polls an operation: on completion returns `(res, flags, the request)` and frees the slot.
    pub(crate) fn poll_op(
        &mut self,
        key: usize,
        cx: &mut Context<'_>,
    ) -> Poll<(i32, u32, Box<Owned>)> {
        let slot = &mut self.ops[key];
        match &mut slot.state {
            OpState::Done { .. } => match self.ops.remove(key).state {
                OpState::Done { res, flags, owned } => Poll::Ready((res, flags, owned)),
                _ => unreachable!("matched as done"),
            },
            OpState::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            OpState::Orphaned => unreachable!("polled an orphaned op"),
        }
    }

    /// The future owning `key` is gone. If the kernel is done, free everything now; otherwise
    /// ask it to cancel and free the resources at the final completion.
    pub(crate) fn drop_op(&mut self, key: usize) {
        let Some(slot) = self.ops.get_mut(key) else {
            return;
        };
        match slot.state {
            OpState::Done { .. } => {
                self.ops.remove(key);
            }
            OpState::Waiting(_) => {
                slot.state = OpState::Orphaned;
                self.stats.cancels += 1;
                self.push(
                    ud(TAG_IGNORE, 0),
                    Plain::Cancel {
                        target: ud(TAG_OP, key),
                    },
                );
            }
            OpState::Orphaned => {}
        }
    }

    /// A completion of a single-shot request: the result for its future, or, for an orphaned
    /// one, the moment its resources can go.
    pub(super) fn complete_op(
        &mut self,
        key: usize,
        res: i32,
        flags: u32,
        owned: Option<Box<Owned>>,
    ) {
        let Some(slot) = self.ops.get_mut(key) else {
            return;
        };
        if flags & CQE_F_MORE != 0 {
            // First half of a zero-copy send: the notification follows.
            slot.first = Some(res);
            return;
        }
        let res = slot.first.take().unwrap_or(res);
        let owned = owned.expect("the ring hands an op's request back at its final completion");
        match std::mem::replace(&mut slot.state, OpState::Done { res, flags, owned }) {
            OpState::Waiting(w) => {
                if let Some(w) = w {
                    w.wake();
                }
            }
            OpState::Orphaned => {
                // Nobody waits: free the resources (buffers, a connected socket) now.
                self.ops.remove(key);
            }
            OpState::Done { .. } => {}
        }
    }

    /// At a shutdown that left requests unfinished: the kernel may still read or write what
    /// they own, so the ring leaks it, never frees it.
    pub(super) fn leak_ops(&mut self) {
        self.ring.leak_in_flight();
    }
}
