//! Single-shot requests (connect, send, send_zc, sendmsg, shutdown): a slab of slots, each
//! owning what its request points at until the kernel's final completion. The `Op` future
//! polls its slot; dropping it early orphans the slot and asks the kernel to cancel, and the
//! resources go with the final completion, never before.

use std::any::Any;
use std::task::{Context, Poll, Waker};

use zcrx_ifq::completion::CQE_F_MORE;
use zcrx_ifq::io_uring::{opcode, squeue};

use super::{ud, Driver, TAG_IGNORE, TAG_OP};

/// Where a request stands.
enum OpState {
    /// In the kernel; the future's waker, once polled.
    Waiting(Option<Waker>),
    /// Finished; the result waits for the future's next poll.
    Done { res: i32, flags: u32 },
    /// In the kernel, and its future is gone: freed at the final completion.
    Orphaned,
}

/// One request's slot: its state and what its request points at.
pub(super) struct OpSlot {
    state: OpState,
    keep: Option<Box<dyn Any>>,
    /// Result of the first completion of a two-completion request (zero-copy send).
    first: Option<i32>,
}

impl Driver {
    /// Submits `sqe` (its `user_data` is set here) with `keep` owning whatever it points at.
    pub(crate) fn submit_op(&mut self, sqe: squeue::Entry, keep: Box<dyn Any>) -> usize {
        let key = self.ops.insert(OpSlot {
            state: OpState::Waiting(None),
            keep: Some(keep),
            first: None,
        });
        self.push(&sqe.user_data(ud(TAG_OP, key)));
        key
    }

    /// Polls an operation: on completion returns `(res, flags, keep)` and frees the slot.
    pub(crate) fn poll_op(
        &mut self,
        key: usize,
        cx: &mut Context<'_>,
    ) -> Poll<(i32, u32, Box<dyn Any>)> {
        let slot = &mut self.ops[key];
        match &mut slot.state {
            OpState::Done { res, flags } => {
                let (res, flags) = (*res, *flags);
                let slot = self.ops.remove(key);
                Poll::Ready((res, flags, slot.keep.expect("resources present")))
            }
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
                    &opcode::AsyncCancel::new(ud(TAG_OP, key))
                        .build()
                        .user_data(ud(TAG_IGNORE, 0)),
                );
            }
            OpState::Orphaned => {}
        }
    }

    /// A completion of a single-shot request: the result for its future, or, for an orphaned
    /// one, the moment its resources can go.
    pub(super) fn complete_op(&mut self, key: usize, res: i32, flags: u32) {
        let Some(slot) = self.ops.get_mut(key) else {
            return;
        };
        if flags & CQE_F_MORE != 0 {
            // First half of a zero-copy send: the notification follows.
            slot.first = Some(res);
            return;
        }
        let res = slot.first.take().unwrap_or(res);
        match std::mem::replace(&mut slot.state, OpState::Done { res, flags }) {
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
    /// their slots own, so it is leaked, never freed.
    pub(super) fn leak_ops(&mut self) {
        for (_, slot) in self.ops.iter_mut() {
            std::mem::forget(slot.keep.take());
        }
    }
}
