//! Connections: one multishot receive each, into the thread's pool, armed when the stream is
//! made and re-armed by the loop when it ends without error. The received buffers (and the
//! end, or an error) queue on the connection, not in the future, so a dropped `recv()` loses
//! nothing. Capped receives are budgeted out of the pool by `budget.rs`; a connection that gets
//! no budget waits, and `turn.rs` arms the waiting first. Without the kernel's cap, back-pressure
//! cancels the receive of a connection over its limit.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use zcrx_ifq::completion::CQE_F_MORE;
use zcrx_ifq::{OwnerId, RecvEvent, RxBuf};

use super::budget::{Arm, Footprint};
use super::{ud, Driver, TAG_IGNORE, TAG_RECV};
use crate::rx::Rx;
use crate::sys::request::Plain;

/// Receive state of one connection.
pub(super) struct Conn {
    fd: Rc<OwnedFd>,
    owner: OwnerId,
    /// Received buffers not yet taken by the stream.
    pub(super) queue: VecDeque<RxBuf>,
    eof: bool,
    error: Option<io::Error>,
    /// Its receive is in the kernel.
    pub(super) armed: bool,
    /// A cancel of its receive is in flight (back-pressure, overdrawn, or the stream dropped).
    cancelling: bool,
    /// Waiting for buffers: over its limit, or the pool is promised to others.
    paused: bool,
    /// What the armed receive may still take (0 when uncapped or not armed), in what it takes
    /// from the pool (whole chunks unless incremental).
    budget_left: u64,
    /// Bytes the kernel may still deliver on the armed receive before its cap ends it (`None`:
    /// uncapped or not armed). zcrx ends a capped receive with a 0-byte completion, which is
    /// also how it reports the end of the stream: one that comes when this is down to 0 is the
    /// cap (the kernel stops at the cap before it looks for the end), any other is the end.
    cap_left: Option<u32>,
    /// The `TcpStream` is gone: finish the receive, drop what arrives, then free the slot.
    pub(super) dropped: bool,
    waker: Option<Waker>,
}

impl Driver {
    /// Registers a connected socket and arms its multishot receive.
    pub(crate) fn add_conn(&mut self, fd: Rc<OwnedFd>) -> usize {
        let owner = OwnerId(self.next_owner);
        self.next_owner = self.next_owner.wrapping_add(1).max(1);
        let key = self.conns.insert(Conn {
            fd,
            owner,
            queue: VecDeque::new(),
            eof: false,
            error: None,
            armed: false,
            cancelling: false,
            paused: false,
            budget_left: 0,
            cap_left: None,
            dropped: false,
            waker: None,
        });
        self.live_conns += 1;
        // Armed in `prepare`, before the next submission, behind connections that already wait.
        self.rearm.push(key);
        key
    }

    /// Arms the connection's receive, capped at the budget the pool allows (`budget.rs`), or
    /// parks the connection until buffers come back.
    pub(super) fn arm_recv(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.armed || conn.dropped || conn.eof || conn.error.is_some() {
            return;
        }
        let fd = conn.fd.as_raw_fd();
        let owner = conn.owner;
        let rx = self.rx.as_ref().expect("interface queue present");
        let budget = if self.capped_recv && rx.can_cap() {
            // Arm with a byte budget the kernel enforces (the receive ends when it is spent): the
            // least of the connection's room under its limit, its fair share, and what is free
            // and unpromised, less the reserve if it holds buffers (`budget.rs`).
            let f = self.footprint(rx, owner);
            match self.budget.arm(f, self.live_conns) {
                Arm::Budget(budget) => budget,
                Arm::Wait { over_limit } => {
                    self.pause(key, over_limit);
                    return;
                }
            }
        } else {
            // No kernel cap: back-pressure by cancelling (see `complete_recv`).
            if rx.over_limit(owner) {
                self.pause(key, true);
                return;
            }
            0
        };
        let sqe = rx.recv(fd, budget);
        let conn = &mut self.conns[key];
        conn.armed = true;
        conn.paused = false;
        conn.budget_left = u64::from(budget);
        conn.cap_left = (budget > 0).then_some(budget);
        self.stats.recv_arms += 1;
        self.push(ud(TAG_RECV, key), Plain::Recv(sqe));
    }

    /// What a connection keeps out of the pool, and what the pool has free: what the
    /// capped-receive rules (`arm_recv`, `stop_if_overdrawn`) decide on.
    fn footprint(&self, rx: &Rx, owner: OwnerId) -> Footprint {
        Footprint {
            held: rx.owner_footprint(owner, self.budget.incremental()),
            free: u64::from(rx.available()) * self.budget.chunk(),
        }
    }

    /// Parks a connection until buffers come back; `over_limit` says whether it is its own fault
    /// (counted as back-pressure) or the pool's.
    fn pause(&mut self, key: usize, over_limit: bool) {
        let conn = &mut self.conns[key];
        if !conn.paused {
            conn.paused = true;
            if over_limit {
                self.stats.backpressure_pauses += 1;
                tracing::trace!(conn = key, "receive paused: the connection holds its limit");
            } else {
                self.stats.pool_waits += 1;
                tracing::trace!(
                    conn = key,
                    "receive waits: the free pool is promised to others"
                );
            }
        }
        self.paused.push(key);
    }

    /// Bytes arrived on (or the end of) a capped receive: release that much of its promise.
    fn spend(&mut self, key: usize, bytes: u64, ended: bool) {
        let conn = &mut self.conns[key];
        conn.budget_left = self.budget.spend(conn.budget_left, bytes, ended);
    }

    /// A capped receive whose promise is spent keeps receiving until the kernel's byte cap: with
    /// small segments every completion takes a whole chunk, so a trickle (one byte per segment)
    /// would take a chunk per byte, the whole pool within a budget meant for a few chunks. Once
    /// the promise is spent, stop the receive if its connection holds its limit or, holding
    /// anything, is eating into the reserve; the re-arm (or the pause) then starts from what the
    /// connection really holds. A connection whose buffers are dropped promptly (small
    /// messages) is left alone: it takes chunks, but gives them back.
    fn stop_if_overdrawn(&mut self, key: usize) {
        let conn = &self.conns[key];
        if !self.capped_recv || conn.budget_left > 0 || conn.cancelling || conn.dropped {
            return;
        }
        let Some(rx) = self.rx.as_ref().filter(|rx| rx.can_cap()) else {
            return;
        };
        if !self.budget.overdrawn(self.footprint(rx, conn.owner)) {
            return;
        }
        self.conns[key].cancelling = true;
        self.push(
            ud(TAG_IGNORE, 0),
            Plain::Cancel {
                target: ud(TAG_RECV, key),
            },
        );
    }

    /// Next received buffer: `Ready(Ok(Some))` data, `Ready(Ok(None))` end of stream.
    pub(crate) fn poll_recv(
        &mut self,
        key: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<RxBuf>>> {
        let conn = &mut self.conns[key];
        if let Some(buf) = conn.queue.pop_front() {
            return Poll::Ready(Ok(Some(buf)));
        }
        if let Some(e) = conn.error.take() {
            // A receive error ends the request, and nothing re-arms it: the stream is at its
            // end from here on, as a socket is after reporting ECONNRESET.
            conn.eof = true;
            return Poll::Ready(Err(e));
        }
        if conn.eof {
            return Poll::Ready(Ok(None));
        }
        if !conn.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            conn.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A buffer already received on this connection, if one is queued (errors and the end of
    /// the stream are left for `poll_recv`).
    pub(crate) fn take_queued(&mut self, key: usize) -> Option<RxBuf> {
        self.conns[key].queue.pop_front()
    }

    /// The id the receive pool charges this connection's held bytes to.
    pub(crate) fn conn_owner(&self, key: usize) -> OwnerId {
        self.conns[key].owner
    }

    /// The `TcpStream` is gone: drop queued buffers, cancel the receive; the slot (and with it
    /// the last reference to the fd, unless sends are in flight) goes at its final completion.
    pub(crate) fn drop_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.dropped {
            // No longer live: it leaves the fair share to the others.
            self.live_conns -= 1;
        }
        conn.dropped = true;
        conn.queue.clear();
        conn.waker = None;
        if conn.armed {
            if !conn.cancelling {
                conn.cancelling = true;
                self.stats.cancels += 1;
                self.push(
                    ud(TAG_IGNORE, 0),
                    Plain::Cancel {
                        target: ud(TAG_RECV, key),
                    },
                );
            }
        } else {
            self.conns.remove(key);
        }
    }

    /// A completion of a connection's receive: data for its queue, the end, an error, or
    /// the end of the request (re-armed in the next turn, or waiting for buffers).
    pub(super) fn complete_recv(&mut self, key: usize, res: i32, flags: u32, big: [u64; 2]) {
        let rx = self.rx.as_mut().expect("interface queue present");
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut rearm = false;
        let mut overflowed = false;
        let mut received = 0u64;
        let capped = self.capped_recv && rx.can_cap();
        match rx.complete(conn.owner, res, flags, big) {
            Ok(c) => {
                rearm = c.needs_rearm();
                match c.event {
                    RecvEvent::Data(buf) => {
                        received = buf.len() as u64;
                        if let Some(left) = conn.cap_left.as_mut() {
                            *left = left.saturating_sub(received as u32);
                        }
                        // Ending with data while more than this completion was still promised:
                        // the kernel could not post to a full CQ (the buffer ring has no error
                        // code for it).
                        if !c.more && capped && self.budget.ended_early(conn.budget_left, received)
                        {
                            self.stats.cq_overflows += 1;
                        }
                        self.bulk |= received >= self.bulk_len;
                        if !conn.dropped {
                            conn.queue.push_back(buf);
                        }
                    }
                    // zcrx's capped receive ends with 0 bytes too: with its cap spent, that is
                    // the cap (re-arm; an end of stream shows on the next receive).
                    RecvEvent::Eof if rx.is_zcrx() && conn.cap_left == Some(0) => {
                        self.stats.caps_reached += 1;
                        tracing::trace!(conn = key, "zcrx receive reached its cap: re-armed");
                        rearm = true;
                    }
                    RecvEvent::Eof => conn.eof = true,
                    RecvEvent::NoBuffers => {
                        self.stats.no_buffers += 1;
                        tracing::debug!(
                            conn = key,
                            "receive ran out of buffers: re-armed once buffers come back"
                        );
                        if !conn.dropped {
                            self.starved.push(key);
                        }
                        rearm = false;
                    }
                    RecvEvent::CqOverflow => {
                        self.stats.cq_overflows += 1;
                        tracing::debug!(conn = key, "receive ended by a full completion queue");
                        overflowed = true;
                    }
                    RecvEvent::Error(e)
                        if e.raw_os_error() == Some(libc::EINVAL) && self.capped_recv =>
                    {
                        // This kernel has no multishot cap: fall back to plain multishot.
                        self.capped_recv = false;
                        tracing::info!(
                            "this kernel does not cap multishot receives (IORING_RECV_MSHOT_LIM, \
                             Linux 6.17+): plain multishot receives, back-pressure by cancelling"
                        );
                        rearm = true;
                    }
                    RecvEvent::Error(e) => {
                        if conn.cancelling && e.raw_os_error() == Some(libc::ECANCELED) {
                            rearm = true; // paused for back-pressure, or dropped
                        } else if !conn.dropped {
                            conn.error = Some(e);
                        }
                    }
                }
                if !c.more {
                    conn.armed = false;
                    conn.cancelling = false;
                    conn.cap_left = None;
                } else if !capped && !conn.dropped && !conn.cancelling && rx.over_limit(conn.owner)
                {
                    // Back-pressure without a kernel cap: stop reading this connection until it
                    // returns buffers.
                    conn.cancelling = true;
                    self.stats.backpressure_pauses += 1;
                    tracing::trace!(
                        conn = key,
                        "receive cancelled: the connection holds its limit"
                    );
                    self.push(
                        ud(TAG_IGNORE, 0),
                        Plain::Cancel {
                            target: ud(TAG_RECV, key),
                        },
                    );
                }
            }
            Err(e) => {
                // A value the kernel should never produce: report it on the connection.
                tracing::warn!(conn = key, "a receive completion failed its checks: {e}");
                conn.error = Some(io::Error::other(e));
                if flags & CQE_F_MORE == 0 {
                    conn.armed = false;
                    conn.cap_left = None;
                }
            }
        }
        let ended = !self.conns[key].armed;
        self.spend(key, received, ended);
        if received > 0 && !ended {
            self.stop_if_overdrawn(key);
        }
        let conn = &mut self.conns[key];
        if conn.dropped {
            if !conn.armed {
                self.conns.remove(key);
            }
            return;
        }
        if rearm && !conn.armed && !conn.eof && conn.error.is_none() {
            if overflowed {
                self.overflowed.push(key);
            } else {
                self.rearm.push(key);
            }
        }
        if let Some(w) = conn.waker.take() {
            w.wake();
        }
    }
}
