//! The loop turn: publish the chunks the application returned (after adapting the buffer
//! ring's depth), re-arm the receives that ended, then one `io_uring_enter` that submits and
//! reaps, waiting only if asked and never past the next timer, coalescing completions while bulk
//! data flows; then each completion goes to its request.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use zcrx_ifq::io_uring::types;
use zcrx_ifq::zcrx::ZcrxEvent;

use super::{
    ud, Driver, KEY_MASK, TAG_ACCEPT, TAG_OP, TAG_RECV, TAG_SHIFT, TAG_WAKE, TAG_ZCRX_EVENT,
};
use crate::depth::Change;
use crate::sys::request::Owned;
use crate::sys::ring::Cqe;

impl Driver {
    /// One turn: publish returned chunks, re-arm what needs it, submit everything and reap
    /// completions with a single `io_uring_enter`, waiting (up to the next timer) only if
    /// `block`, and never past `limit`.
    pub(crate) fn turn(&mut self, mut block: bool, limit: Option<Instant>) {
        self.prepare();
        // Receives the full CQ ended are re-armed a few a turn: come back for the rest.
        if !self.overflowed.is_empty() {
            block = false;
        }
        // While connections wait for buffers, a buffer dropped on another thread wakes the loop
        // (through the eventfd read `prepare` keeps armed); if some came back since `prepare`
        // drained them, no wake-up will come for those: do not sleep.
        let waits_for_returns = block && !(self.paused.is_empty() && self.starved.is_empty());
        if waits_for_returns && self.rx.as_ref().is_some_and(|rx| rx.arm_return_wake()) {
            block = false;
        }
        let timeout = if block {
            let at = match (self.timers.next_deadline(), limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            at.map(|at| at.saturating_duration_since(Instant::now()))
        } else {
            None
        };
        self.stats.enters += 1;
        let batch = if block { self.wait_batch() } else { 1 };
        let r = match (block, timeout) {
            (false, _) => self.ring.submit(),
            (true, None) if batch <= 1 => self.ring.submit_and_wait(1),
            (true, timeout) => {
                // A coalescing wait always has a finite timeout: without one the kernel (6.18)
                // lets the minimum wait lapse and keeps waiting for `batch` task-work items
                // (each may carry dozens of completions), for milliseconds, while the armed
                // receives run out of budget.
                let timeout = match timeout {
                    None if batch > 1 => Some(Duration::from_secs(1)),
                    t => t,
                };
                let ts = timeout.map(|d| types::Timespec::from(d.max(Duration::from_micros(1))));
                let mut args = types::SubmitArgs::new();
                if let Some(ts) = ts.as_ref() {
                    args = args.timespec(ts);
                }
                if batch > 1 {
                    args = args.min_wait_usec(self.batch.1);
                    self.stats.coalesced_waits += 1;
                }
                self.ring.submit_with_args(batch, &args)
            }
        };
        if let Err(e) = r {
            match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
                Some(
                    rustix::io::Errno::TIME | rustix::io::Errno::INTR | rustix::io::Errno::BUSY,
                ) => {}
                _ => panic!("io_uring_enter failed: {e}"),
            }
        }
        if waits_for_returns {
            if let Some(rx) = self.rx.as_ref() {
                rx.disarm_return_wake();
            }
        }
        self.reap_into_buffer();
        if !self.cqes.is_empty() {
            // `bulk` describes the latest completions reaped.
            self.bulk = false;
        }
        self.dispatch();
        self.timers.fire(Instant::now());
    }

    /// How many completions to wait for. One, unless bulk data is flowing: then up to
    /// `batch.0`, but never more than half of what the armed receives may still deliver, so the
    /// loop wakes to re-arm before they all run dry; and one while connections wait for buffers
    /// (at 64 flows this rule beats both never and always coalescing: `docs/benchmarks.md`).
    fn wait_batch(&self) -> usize {
        // Connections waiting for buffers want the loop back soon to recycle them.
        if !self.bulk || self.batch.0 <= 1 || !self.paused.is_empty() || !self.starved.is_empty() {
            return 1;
        }
        let Some(rx) = self.rx.as_ref() else {
            return 1;
        };
        // A shallow buffer ring (`Builder::max_posted`) delivers at most what is posted.
        let posted = u64::from(rx.posted());
        let deliverable = if self.capped_recv && rx.can_cap() {
            self.budget.promised_chunks().min(posted)
        } else {
            posted
        };
        (deliverable / 2).clamp(1, u64::from(self.batch.0)) as usize
    }

    fn prepare(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            if let Some(depth) = self.depth.as_mut() {
                let taken = self.posted_at_flush.saturating_sub(rx.posted());
                let starved = self.stats.no_buffers - self.no_buffers_at_flush;
                self.no_buffers_at_flush = self.stats.no_buffers;
                match depth.turn(taken, starved.min(u64::from(u32::MAX)) as u32) {
                    Some(Change::Raised(n)) => {
                        self.stats.depth_raises += 1;
                        tracing::trace!(chunks = n, starved, "buffer ring depth raised");
                        rx.set_max_posted(n);
                    }
                    Some(Change::Cut(n)) => {
                        self.stats.depth_cuts += 1;
                        tracing::trace!(chunks = n, "buffer ring depth cut");
                        rx.set_max_posted(n);
                    }
                    None => {}
                }
            }
            let returned = rx.flush();
            self.posted_at_flush = rx.posted();
            if returned > 0 && std::mem::take(&mut self.zcrx_out_of_buffers) {
                if let Err(e) = rx.rearm_event(ZcrxEvent::OutOfBuffers) {
                    tracing::debug!("re-arming the zcrx out-of-buffers event: {e}");
                }
            }
        }
        if !self.wake_armed && !self.closing {
            self.wake_armed = true;
            let fd = self.wake_fd.as_raw_fd();
            let req = self
                .wake_req
                .take()
                .unwrap_or_else(|| Box::new(Owned::ReadCounter { fd, buf: [0; 8] }));
            self.push_boxed(ud(TAG_WAKE, 0), req);
        }
        // Resume paused connections whose application returned enough buffers, then arm new
        // connections and re-arm receives that ended (budget spent, no buffers, overflow). The
        // connections that waited go first, oldest first (`arm_recv` pauses again in this
        // order): otherwise busy connections, re-armed every turn, and a burst of new ones take
        // every chunk that comes back, and a connection can wait for room for seconds, its
        // data, EOF or reset unread.
        let mut rearm = std::mem::take(&mut self.paused);
        rearm.append(&mut self.rearm);
        if self.rx.as_ref().is_some_and(|rx| rx.available() > 0) {
            rearm.append(&mut self.starved);
        }
        if !self.overflowed.is_empty() && !self.ring.cq_overflow() {
            let n = self.overflow_quota.min(self.overflowed.len());
            rearm.extend(self.overflowed.drain(..n));
        }
        for key in rearm.drain(..) {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.dropped || conn.armed {
                continue;
            }
            self.arm_recv(key);
        }
        self.rearm = rearm;
    }

    /// Hands each reaped completion to its request, by the tag of its `user_data`.
    fn dispatch(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        self.stats.completions += cqes.len() as u64;
        for Cqe {
            user_data,
            result: res,
            flags,
            big,
            owned,
        } in cqes.drain(..)
        {
            let key = (user_data & KEY_MASK) as usize;
            match user_data >> TAG_SHIFT {
                TAG_OP => self.complete_op(key, res, flags, owned),
                TAG_RECV => self.complete_recv(key, res, flags, big),
                TAG_ACCEPT => self.complete_accept(key, res, flags),
                TAG_WAKE => {
                    self.wake_armed = false;
                    self.wake_req = owned;
                }
                TAG_ZCRX_EVENT => self.zcrx_event(res),
                _ => {}
            }
        }
        self.cqes = cqes;
    }

    /// An event the zcrx queue posted (Linux 7.2+): counted in its stats. The kernel posts
    /// each kind once until re-armed: out-of-buffers is re-armed once buffers came back (one
    /// event per shortage), the copy fallback never (once is enough to know).
    fn zcrx_event(&mut self, res: i32) {
        let Some(rx) = self.rx.as_mut() else {
            return;
        };
        match rx.event(res) {
            Some(ZcrxEvent::OutOfBuffers) => {
                self.zcrx_out_of_buffers = true;
                tracing::debug!(backend = %self.backend, "the zcrx queue ran out of buffers");
            }
            Some(ZcrxEvent::Copy) if rx.is_no_device() => {
                tracing::debug!("zcrx without a device copies received data, as designed");
            }
            Some(ZcrxEvent::Copy) => tracing::warn!(
                backend = %self.backend,
                "the kernel copied received data into the zcrx area (copy fallback): this \
                 traffic is not zero-copy (header/data split or flow steering missing?)"
            ),
            Some(e) => tracing::debug!(event = ?e, "zcrx event"),
            None => tracing::debug!(res, "unknown zcrx event"),
        }
    }
}
