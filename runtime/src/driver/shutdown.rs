//! The driver's shutdown: cancel everything in flight, wait (bounded) for the kernel's final
//! completions, then tear the receive pool down. What the kernel never finished is leaked.

use std::time::{Duration, Instant};

use zcrx_ifq::TeardownReport;

use super::{ud, Driver, TAG_IGNORE, TAG_WAKE};
use crate::rx::RxStats;
use crate::sys::request::Plain;

impl Driver {
    /// Whether the kernel still owes us completions.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
            + usize::from(self.wake_armed)
            + self.conns.iter().filter(|(_, c)| c.armed).count()
            + self.listeners.iter().filter(|(_, l)| l.armed).count()
    }

    /// Cancels everything in flight, waits (bounded) for the final completions, then tears the
    /// interface queue down. Resources of requests the kernel never finished are leaked, never
    /// freed under it. Returns the teardown report, the pool's last counters and the requests
    /// leaked.
    pub(crate) fn shutdown(&mut self, grace: Duration) -> (TeardownReport, RxStats, usize) {
        self.stopping = true;
        self.closing = true;
        if self.wake_armed {
            self.push(
                ud(TAG_IGNORE, 0),
                Plain::Cancel {
                    target: ud(TAG_WAKE, 0),
                },
            );
        }
        for key in self.conns.iter().map(|(k, _)| k).collect::<Vec<_>>() {
            let c = &mut self.conns[key];
            c.queue.clear();
            if !c.dropped {
                self.drop_conn(key);
            }
        }
        for key in self.listeners.iter().map(|(k, _)| k).collect::<Vec<_>>() {
            if !self.listeners[key].dropped {
                self.drop_listener(key);
            }
        }
        for key in self.ops.iter().map(|(k, _)| k).collect::<Vec<_>>() {
            self.drop_op(key);
        }
        let deadline = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < deadline {
            self.turn(true, Some(deadline));
        }
        let leaked = self.in_flight();
        if leaked > 0 {
            // The kernel still holds pointers into these: never free them.
            self.leak_ops();
        }
        let rx = self.rx.take().expect("interface queue present");
        let stats = rx.stats();
        (rx.teardown(), stats, leaked)
    }
}
