//! A future for one in-flight kernel request. Dropping it before completion cancels the request;
//! the driver keeps the request's resources until the kernel's final completion.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::context;
use crate::sys::request::Owned;

pub(crate) struct Op {
    key: Option<usize>,
}

impl Op {
    /// Submits `req`, which owns everything its entry points at.
    pub(crate) fn submit(req: Owned) -> Self {
        let key = context::with_driver(|d| d.submit_op(req));
        Self { key: Some(key) }
    }
}

impl Future for Op {
    /// `(res, flags, the request)`: what it owned comes back with it.
    type Output = (i32, u32, Box<Owned>);

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
