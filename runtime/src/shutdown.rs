//! Graceful shutdown: a signal any thread can trigger, and what was left over.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use zcrx_ifq::TeardownReport;

use crate::rx::RxStats;

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    notifiers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// One slot per pending `wait()` future, updated in place and freed when it drops.
    waiters: Mutex<slab::Slab<Waker>>,
}

/// Asks runtimes to shut down gracefully: they stop accepting connections, and
/// [`wait`](Self::wait) resolves in every task that awaits it. Clone it freely; trigger it from
/// any thread (a signal handler thread, another runtime, a test).
#[derive(Clone, Default)]
pub struct ShutdownSignal(Arc<Inner>);

impl std::fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownSignal")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl ShutdownSignal {
    /// A signal that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Triggers the shutdown (idempotent).
    pub fn trigger(&self) {
        if self.0.triggered.swap(true, Ordering::AcqRel) {
            return;
        }
        let woken: Vec<Waker> = self
            .0
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for w in woken {
            w.wake();
        }
        for n in self
            .0
            .notifiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            n();
        }
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::Acquire)
    }

    /// Resolves once the signal is triggered.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        Wait {
            signal: self,
            slot: None,
        }
    }

    /// Pending `wait()` registrations (for tests).
    #[doc(hidden)]
    pub fn waiting(&self) -> usize {
        self.0
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub(crate) fn on_trigger(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.0
            .notifiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }
}

struct Wait<'a> {
    signal: &'a ShutdownSignal,
    slot: Option<usize>,
}

impl Wait<'_> {
    fn forget(&mut self) {
        if let Some(k) = self.slot.take() {
            self.signal
                .0
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_remove(k);
        }
    }
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_triggered() {
            self.forget();
            return Poll::Ready(());
        }
        {
            let mut waiters = self
                .signal
                .0
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match self.slot.and_then(|k| waiters.get_mut(k)) {
                Some(w) => {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                }
                None => {
                    let k = waiters.insert(cx.waker().clone());
                    drop(waiters);
                    self.slot = Some(k);
                }
            }
        }
        // A trigger between the first check and the registration must not be missed.
        if self.signal.is_triggered() {
            self.forget();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.forget();
    }
}

/// What a runtime left behind when it shut down.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks still running at the deadline, which were cancelled (their futures dropped).
    pub tasks_cancelled: usize,
    /// Tasks that panicked during the runtime's life (each reported to its `JoinHandle`).
    pub task_panics: u64,
    /// Receive buffers the application still held when the interface queue was torn down
    /// (they stay valid until dropped).
    pub held: TeardownReport,
    /// Kernel requests that did not finish within the grace period; their memory is leaked
    /// rather than freed under the kernel.
    pub leaked_requests: usize,
    /// The receive pool's counters as they were when it was torn down (what
    /// [`Runtime::rx_stats`](crate::Runtime::rx_stats) said last).
    pub rx_stats: RxStats,
}

impl ShutdownReport {
    /// Nothing held, nothing cancelled, nothing leaked.
    pub fn is_clean(&self) -> bool {
        self.tasks_cancelled == 0 && self.held.is_clean() && self.leaked_requests == 0
    }
}

impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} task(s) cancelled, {} panicked; the application still holds {} chunk(s) ({} bytes)",
            self.tasks_cancelled, self.task_panics, self.held.held_chunks, self.held.held_bytes
        )?;
        for (owner, s) in &self.held.owners {
            write!(
                f,
                "; connection {}: {} chunk(s), {} bytes",
                owner.0, s.chunks, s.bytes
            )?;
        }
        if self.leaked_requests > 0 {
            write!(
                f,
                "; {} kernel request(s) never finished (memory leaked, not freed)",
                self.leaked_requests
            )?;
        }
        Ok(())
    }
}
