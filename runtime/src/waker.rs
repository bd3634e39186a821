//! The loop's waker: an eventfd another thread writes to wake a runtime thread's loop out of
//! `io_uring_enter`, where the driver always keeps a read armed on it. A task woken from another
//! thread, the shutdown signal and a receive buffer dropped on another thread all wake the loop
//! this way. Depends on no other module of the crate.

use std::io;
use std::os::fd::OwnedFd;

use rustix::event::{eventfd, EventfdFlags};

/// A new eventfd for a loop to wait on (non-blocking: the driver's read is the kernel's).
pub(crate) fn wake_fd() -> io::Result<OwnedFd> {
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// What wakes the loop waiting on `fd`, from any thread: a write of 1 to a duplicate of the fd
/// (so it stays valid for as long as the waker lives).
pub(crate) fn poker(fd: &OwnedFd) -> io::Result<Box<dyn Fn() + Send + Sync>> {
    let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    Ok(Box::new(move || {
        let _ = rustix::io::write(&fd, &1u64.to_ne_bytes());
    }))
}
