//! The single-thread runtime: the loop that runs tasks and drives the ring.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::context::{self, Handle};
use crate::driver::{Driver, DriverStats};
use crate::executor::{Executor, Remote};
use crate::rx::RxStats;
use crate::shutdown::{ShutdownReport, ShutdownSignal};
use crate::waker;

/// A runtime bound to the thread that built it: one io_uring, one receive pool, one executor.
pub struct Runtime {
    handle: Rc<Handle>,
    grace: Duration,
    done: bool,
    stopped_accepting: std::cell::Cell<bool>,
    /// Armed against SIGINT/SIGTERM for this runtime's life (`Builder::shutdown_on_signals`).
    pub(crate) armed: Option<crate::signals::Armed>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("tasks", &self.handle.exec.len())
            .finish()
    }
}

impl Runtime {
    pub(crate) fn new(
        config: Config,
        signal: ShutdownSignal,
        index: usize,
        cpu: Option<usize>,
    ) -> io::Result<Self> {
        if let Some(cpu) = cpu {
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            rustix::thread::sched_setaffinity(None, &set)?;
        }
        let wake_fd = waker::wake_fd()?;
        let remote = Arc::new(Remote::new(waker::poker(&wake_fd)?));
        signal.on_trigger(waker::poker(&wake_fd)?);
        let driver = Driver::new(&config, index, Rc::new(wake_fd))?;
        Ok(Self {
            handle: Rc::new(Handle {
                exec: Executor::new(remote),
                driver: std::cell::RefCell::new(driver),
                signal,
            }),
            grace: config.grace,
            done: false,
            stopped_accepting: std::cell::Cell::new(false),
            armed: None,
        })
    }

    /// The signal that shuts this runtime down gracefully.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.handle.signal.clone()
    }

    /// The receive backend in use, in words ("buffer ring", "zcrx on eth0 queue 4", "zcrx
    /// without a device (copy)").
    pub fn rx_backend(&self) -> String {
        self.handle.driver.borrow().backend.clone()
    }

    /// Driver counters (enters, completions, re-arms, ENOBUFS, back-pressure pauses).
    pub fn stats(&self) -> DriverStats {
        self.handle.driver.borrow().stats()
    }

    /// The receive pool's counters, from the backend this runtime runs
    /// ([`RxStats::BufRing`] or [`RxStats::Zcrx`], with the kernel's copy statistics on Linux
    /// 7.2+): deliveries, bytes, buffers that ran out, returns published. This runtime's
    /// thread only (see [`RxStats`]). `None` once the pool is torn down, in shutdown; the
    /// [`ShutdownReport`] keeps the last counters.
    pub fn rx_stats(&self) -> Option<RxStats> {
        self.handle.driver.borrow().rx_stats()
    }

    /// Runs `fut` to completion, running spawned tasks and I/O meanwhile.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let _ctx = context::enter(self.handle.clone());
        let _exec = self.handle.exec.enter();
        let mut fut = pin!(fut);
        let waker = self.handle.exec.root_waker();
        let mut cx = Context::from_waker(&waker);
        // The previous `block_on` consumed the flag when its future finished.
        self.handle.exec.set_root_ready();
        loop {
            if self.handle.exec.take_root_ready() {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    return v;
                }
            }
            self.handle.exec.run_ready();
            self.turn(None);
        }
    }

    fn turn(&self, limit: Option<Instant>) {
        if self.handle.signal.is_triggered() && !self.stopped_accepting.replace(true) {
            self.handle.driver.borrow_mut().stop_accepting();
        }
        let block = !self.handle.exec.has_ready();
        self.handle.driver.borrow_mut().turn(block, limit);
    }

    /// Shuts down gracefully: stops accepting, lets tasks finish within the grace period,
    /// cancels the rest, waits for the kernel to finish every request, and tears down the
    /// receive pool. Reports what the application still held.
    pub fn shutdown(mut self) -> ShutdownReport {
        let report = self.shutdown_in_place();
        // The caller has the report; the log says it too, louder when something was left.
        if report.leaked_requests > 0 {
            tracing::warn!("runtime shut down: {report}");
        } else if !report.held.is_clean() {
            tracing::info!("runtime shut down: {report}");
        } else {
            tracing::debug!("runtime shut down: {report}");
        }
        report
    }

    fn shutdown_in_place(&mut self) -> ShutdownReport {
        self.done = true;
        let _ctx = context::enter(self.handle.clone());
        let _exec = self.handle.exec.enter();
        self.handle.signal.trigger();
        self.stopped_accepting.set(true);
        self.handle.driver.borrow_mut().stop_accepting();
        let deadline = Instant::now() + self.grace;
        while self.handle.exec.len() > 0 && Instant::now() < deadline {
            self.handle.exec.run_ready();
            if self.handle.exec.len() == 0 {
                // The last tasks just finished: waiting now would last the whole grace period.
                break;
            }
            let block = !self.handle.exec.has_ready();
            self.handle.driver.borrow_mut().turn(block, Some(deadline));
        }
        let tasks_cancelled = self.handle.exec.cancel_all();
        let (held, rx_stats, leaked_requests) = self
            .handle
            .driver
            .borrow_mut()
            .shutdown(Duration::from_secs(2));
        ShutdownReport {
            tasks_cancelled,
            task_panics: self.handle.exec.panics(),
            held,
            leaked_requests,
            rx_stats,
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.done {
            let grace = std::mem::replace(&mut self.grace, Duration::ZERO);
            let report = self.shutdown_in_place();
            self.grace = grace;
            // Nobody sees this report but the log: buffers the application still holds, and
            // requests the kernel never finished, are worth a warning (cancelled tasks are
            // what dropping a runtime does).
            if !report.held.is_clean() || report.leaked_requests > 0 {
                tracing::warn!("runtime dropped without shutdown(): {report}");
            } else {
                tracing::debug!("runtime dropped without shutdown(): {report}");
            }
        }
    }
}

/// Spawns a task on the current thread's runtime. The future need not be `Send`: it runs on
/// this thread only.
///
/// # Panics
/// Outside a runtime (not within [`Runtime::block_on`], [`Builder::run`](crate::Builder::run)
/// or a task spawned there): there is no executor on this thread to run the task, and the
/// [`JoinHandle`](crate::JoinHandle) it returns has no way to carry an error.
pub fn spawn<F: Future + 'static>(fut: F) -> crate::JoinHandle<F::Output> {
    context::current().exec.spawn(fut)
}

/// Yields once to the other tasks and to I/O.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Resolves when the current runtime's shutdown signal is triggered.
///
/// # Panics
/// When first polled outside a runtime: there is no runtime whose signal to wait for. (A
/// [`ShutdownSignal`]'s own [`wait`](ShutdownSignal::wait) works anywhere.)
pub async fn shutdown_requested() {
    let signal = context::current().signal.clone();
    signal.wait().await
}

/// Who holds what in the current thread's receive pool (chunks per state, bytes per
/// connection; under zcrx a chunk is a page, see [`Builder::chunk_size`](crate::Builder::chunk_size)).
/// `None` after shutdown.
///
/// # Panics
/// Outside a runtime: there is no thread's pool to look at.
pub fn rx_snapshot() -> Option<zcrx_ifq::Snapshot> {
    crate::context::with_driver(|d| d.rx_snapshot())
}

/// The current thread's receive backend in words (see [`Runtime::rx_backend`]).
///
/// # Panics
/// Outside a runtime: there is no thread's pool to name.
pub fn rx_backend() -> String {
    crate::context::with_driver(|d| d.backend.clone())
}

/// Driver counters of the current thread's runtime (see [`Runtime::stats`]).
///
/// # Panics
/// Outside a runtime: there is no thread's driver to count (a [`Runtime`] you hold answers
/// [`Runtime::stats`] anywhere on its thread).
pub fn stats() -> crate::DriverStats {
    crate::context::with_driver(|d| d.stats())
}

/// The receive pool's counters of the current thread's runtime, from the backend it runs (see
/// [`Runtime::rx_stats`]). Per thread: under [`Builder::run`](crate::Builder::run) each thread
/// sees its own. `None` once the pool is torn down, in shutdown.
///
/// # Panics
/// Outside a runtime: there is no thread's pool to count (a [`Runtime`] you hold answers
/// [`Runtime::rx_stats`] anywhere on its thread).
pub fn rx_stats() -> Option<RxStats> {
    crate::context::with_driver(|d| d.rx_stats())
}
