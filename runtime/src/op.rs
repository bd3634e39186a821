//! A future for one in-flight kernel request. Dropping it before completion cancels the request;
//! the driver keeps the request's resources until the kernel's final completion.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use zcrx_ifq::io_uring::squeue;

use crate::context;

pub(crate) struct Op {
    key: Option<usize>,
}

impl Op {
    /// Submits `sqe`; `keep` owns everything `sqe` points at.
    pub(crate) fn submit(sqe: squeue::Entry, keep: Box<dyn Any>) -> Self {
        let key = context::with_driver(|d| d.submit_op(sqe, keep));
        Self { key: Some(key) }
    }
}

impl Future for Op {
    /// `(res, flags, keep)`.
    type Output = (i32, u32, Box<dyn Any>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self.key.expect("Op polled after completion");
        let r = context::with_driver(|d| d.poll_op(key, cx));
        if r.is_ready() {
            self.key = None;
        }
        r
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Some(h) = context::try_current() {
                if let Ok(mut d) = h.driver.try_borrow_mut() {
                    d.drop_op(key);
                }
            }
        }
    }
}
