//! The runtime of the current thread, reachable from futures without passing it around.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use crate::driver::Driver;
use crate::executor::Executor;
use crate::shutdown::ShutdownSignal;

pub(crate) struct Handle {
    pub(crate) exec: Executor,
    pub(crate) driver: RefCell<Driver>,
    pub(crate) signal: ShutdownSignal,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Handle>>> = const { RefCell::new(None) };
}

/// Makes `handle` the thread's runtime until the guard drops.
pub(crate) fn enter(handle: Rc<Handle>) -> ContextGuard {
    let prev = CURRENT.with(|c| c.borrow_mut().replace(handle));
    ContextGuard { prev }
}

pub(crate) struct ContextGuard {
    prev: Option<Rc<Handle>>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

pub(crate) fn try_current() -> Option<Rc<Handle>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// What a call outside a runtime fails or panics with.
pub(crate) const OUTSIDE: &str = "not inside a zcrx runtime: call it from Runtime::block_on, \
                                  Builder::run, or a task spawned there";

/// `Ok` inside a runtime; outside, the error a fallible call returns instead of panicking.
pub(crate) fn check() -> io::Result<()> {
    match try_current() {
        Some(_) => Ok(()),
        None => Err(io::Error::other(OUTSIDE)),
    }
}

/// The current thread's runtime.
///
/// # Panics
/// Outside a runtime (not inside `block_on`, `Builder::run` or a task spawned there).
pub(crate) fn current() -> Rc<Handle> {
    try_current().expect(OUTSIDE)
}

/// Runs `f` with the current driver borrowed.
pub(crate) fn with_driver<R>(f: impl FnOnce(&mut Driver) -> R) -> R {
    let h = current();
    let mut d = h.driver.borrow_mut();
    f(&mut d)
}
