//! Listeners: one multishot accept per listener, armed when `accept()` is first polled. The
//! accepted fds (and errors) queue on the listener, not in the future, so a dropped `accept()`
//! loses no connection; once the runtime stops accepting, accepts fail and armed ones are
//! cancelled.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use zcrx_ifq::completion::CQE_F_MORE;

use super::{ud, Driver, TAG_ACCEPT, TAG_IGNORE};
use crate::sys::request::Plain;

/// Accept state of one listener.
pub(super) struct Listener {
    fd: Rc<OwnedFd>,
    /// Accepted connections (or errors) not yet taken by `accept()`.
    queue: VecDeque<io::Result<OwnedFd>>,
    /// Its multishot accept is in the kernel.
    pub(super) armed: bool,
    /// The `TcpListener` is gone: the slot goes at the accept's final completion.
    pub(super) dropped: bool,
    waker: Option<Waker>,
}

impl Driver {
    /// Registers a listening socket; its multishot accept is armed when first polled.
    pub(crate) fn add_listener(&mut self, fd: Rc<OwnedFd>) -> usize {
        self.listeners.insert(Listener {
            fd,
            queue: VecDeque::new(),
            armed: false,
            dropped: false,
            waker: None,
        })
    }

    /// The next accepted connection; fails once the runtime stops accepting.
    pub(crate) fn poll_accept(
        &mut self,
        key: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<OwnedFd>> {
        if self.stopping {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the runtime is shutting down and accepts no more connections",
            )));
        }
        let l = &mut self.listeners[key];
        if let Some(r) = l.queue.pop_front() {
            return Poll::Ready(r);
        }
        if !l.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            l.waker = Some(cx.waker().clone());
        }
        if !l.armed {
            l.armed = true;
            let fd = l.fd.as_raw_fd();
            self.push(ud(TAG_ACCEPT, key), Plain::AcceptMulti { fd });
        }
        Poll::Pending
    }

    /// The `TcpListener` is gone: drop what was accepted and cancel the accept.
    pub(crate) fn drop_listener(&mut self, key: usize) {
        let Some(l) = self.listeners.get_mut(key) else {
            return;
        };
        l.dropped = true;
        l.queue.clear();
        if l.armed {
            self.push(
                ud(TAG_IGNORE, 0),
                Plain::Cancel {
                    target: ud(TAG_ACCEPT, key),
                },
            );
        } else {
            self.listeners.remove(key);
        }
    }

    /// A completion of a listener's multishot accept: a new connection's fd, or an error, for
    /// `poll_accept`.
    pub(super) fn complete_accept(&mut self, key: usize, res: i32, flags: u32) {
        let Some(l) = self.listeners.get_mut(key) else {
            if res >= 0 {
                // No listener any more: close the connection.
                drop(crate::sys::fd_from_accept(res));
            }
            return;
        };
        if res >= 0 {
            let fd = crate::sys::fd_from_accept(res);
            if !l.dropped {
                l.queue.push_back(Ok(fd));
            }
        } else if res != -libc::ECANCELED && !l.dropped {
            l.queue.push_back(Err(io::Error::from_raw_os_error(-res)));
        }
        if flags & CQE_F_MORE == 0 {
            l.armed = false;
            if l.dropped {
                self.listeners.remove(key);
                return;
            }
        }
        if let Some(w) = l.waker.take() {
            w.wake();
        }
    }

    /// Stops accepting: pending and future accepts fail, armed accepts are cancelled.
    pub(crate) fn stop_accepting(&mut self) {
        self.stopping = true;
        let keys: Vec<usize> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.armed)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.push(
                ud(TAG_IGNORE, 0),
                Plain::Cancel {
                    target: ud(TAG_ACCEPT, key),
                },
            );
            if let Some(w) = self.listeners[key].waker.take() {
                w.wake();
            }
        }
    }
}
