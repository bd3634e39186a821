//! The single-threaded task executor: a slab of tasks, a run queue, wakers that work from any
//! thread, `spawn` with a `JoinHandle` (await, abort, panics reported to the joiner).
//!
//! Fairness: each loop turn runs only the tasks that were queued when the turn began, then goes
//! back to the kernel for I/O. A task that wakes itself on every poll runs once per turn and
//! cannot starve I/O or other tasks.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use slab::Slab;

/// Key of the root future passed to `block_on` (not in the slab).
const ROOT: usize = usize::MAX;

static NEXT_EXECUTOR: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The executor running on this thread (0 = none) and its local run queue.
    static LOCAL: (Cell<u64>, RefCell<VecDeque<Arc<Header>>>) =
        const { (Cell::new(0), RefCell::new(VecDeque::new())) };
}

/// Wakes from other threads: queued under a mutex, then the loop is poked through an eventfd.
pub(crate) struct Remote {
    queue: Mutex<Vec<Arc<Header>>>,
    notify: Box<dyn Fn() + Send + Sync>,
}

impl Remote {
    pub(crate) fn new(notify: Box<dyn Fn() + Send + Sync>) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            notify,
        }
    }
}

/// What a waker points at.
pub(crate) struct Header {
    key: usize,
    executor: u64,
    scheduled: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let local = LOCAL.with(|(id, q)| {
            if id.get() == self.executor {
                q.borrow_mut().push_back(self.clone());
                true
            } else {
                false
            }
        });
        if !local {
            let was_empty = {
                let mut q = self.remote.queue.lock().unwrap_or_else(|e| e.into_inner());
                q.push(self.clone());
                q.len() == 1
            };
            if was_empty {
                (self.remote.notify)();
            }
        }
    }
}

/// Why a task produced no value.
pub enum JoinError {
    /// The task was aborted with [`JoinHandle::abort`] or dropped at shutdown.
    Cancelled,
    /// The task panicked; the payload is the panic's.
    Panic(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panic(_))
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// The panic message, if the task panicked with a string.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            Self::Panic(p) => p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(|s| s.as_str())),
            Self::Cancelled => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("JoinError::Cancelled"),
            Self::Panic(_) => write!(f, "JoinError::Panic({:?})", self.panic_message()),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("task was cancelled"),
            Self::Panic(_) => match self.panic_message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl std::error::Error for JoinError {}

struct JoinState<T> {
    result: RefCell<Option<Result<T, JoinError>>>,
    waker: RefCell<Option<Waker>>,
    aborted: Cell<bool>,
    header: Arc<Header>,
}

impl<T> JoinState<T> {
    fn finish(&self, r: Result<T, JoinError>) {
        *self.result.borrow_mut() = Some(r);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Owned permission to await a spawned task's result. Dropping it detaches the task.
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped at the next turn of the loop (cancelling any I/O
    /// it owns), and awaiting this handle gives [`JoinError::Cancelled`] unless it had finished.
    pub fn abort(&self) {
        if self.state.result.borrow().is_none() {
            self.state.aborted.set(true);
            Waker::from(self.state.header.clone()).wake();
        }
    }

    /// Whether the task has finished (or panicked, or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.state.result.borrow().is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.state.result.borrow_mut().take() {
            return Poll::Ready(r);
        }
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

trait Task {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    fn fail(&mut self, e: JoinError);
    fn aborted(&self) -> bool;
}

struct Spawned<F: Future> {
    fut: Pin<Box<F>>,
    state: Rc<JoinState<F::Output>>,
}

impl<F: Future> Task for Spawned<F> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(v) => {
                self.state.finish(Ok(v));
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn fail(&mut self, e: JoinError) {
        self.state.finish(Err(e));
    }

    fn aborted(&self) -> bool {
        self.state.aborted.get()
    }
}

struct Slot {
    task: Option<Box<dyn Task>>,
    header: Arc<Header>,
}

/// One thread's executor.
pub(crate) struct Executor {
    id: u64,
    tasks: RefCell<Slab<Slot>>,
    remote: Arc<Remote>,
    root: Arc<Header>,
    root_ready: Cell<bool>,
    panics: Cell<u64>,
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Wakes handed to the remote queue that no turn will run any more: each holds an
        // `Arc<Header>`, whose `remote` is this queue's own `Arc`, a cycle that would outlive the
        // executor (LeakSanitizer saw it after a shutdown mid-transfer).
        self.remote
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Executor {
    pub(crate) fn new(remote: Arc<Remote>) -> Self {
        let id = NEXT_EXECUTOR.fetch_add(1, Ordering::Relaxed);
        let root = Arc::new(Header {
            key: ROOT,
            executor: id,
            scheduled: AtomicBool::new(false),
            remote: remote.clone(),
        });
        Self {
            id,
            tasks: RefCell::new(Slab::new()),
            remote,
            root,
            root_ready: Cell::new(true),
            panics: Cell::new(0),
        }
    }

    /// Makes this the thread's executor (for local wakes) until the guard drops.
    pub(crate) fn enter(&self) -> EnterGuard {
        let prev = LOCAL.with(|(id, _)| id.replace(self.id));
        EnterGuard { prev }
    }

    pub(crate) fn root_waker(&self) -> Waker {
        Waker::from(self.root.clone())
    }

    /// Whether the root future was woken (and clears the flag).
    pub(crate) fn take_root_ready(&self) -> bool {
        self.root_ready.replace(false)
    }

    /// A new root future (another `block_on`) must be polled once to start.
    pub(crate) fn set_root_ready(&self) {
        self.root_ready.set(true);
    }

    pub(crate) fn spawn<F: Future + 'static>(&self, fut: F) -> JoinHandle<F::Output> {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let header = Arc::new(Header {
            key: entry.key(),
            executor: self.id,
            scheduled: AtomicBool::new(false),
            remote: self.remote.clone(),
        });
        let state = Rc::new(JoinState {
            result: RefCell::new(None),
            waker: RefCell::new(None),
            aborted: Cell::new(false),
            header: header.clone(),
        });
        entry.insert(Slot {
            task: Some(Box::new(Spawned {
                fut: Box::pin(fut),
                state: state.clone(),
            })),
            header: header.clone(),
        });
        drop(tasks);
        Waker::from(header).wake();
        JoinHandle { state }
    }

    /// Live tasks.
    pub(crate) fn len(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Panics caught so far.
    pub(crate) fn panics(&self) -> u64 {
        self.panics.get()
    }

    /// Whether anything is queued to run.
    pub(crate) fn has_ready(&self) -> bool {
        self.root_ready.get()
            || LOCAL.with(|(_, q)| !q.borrow().is_empty())
            || !self
                .remote
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Moves wakes from other threads into the local queue.
    pub(crate) fn collect_remote(&self) {
        let woken =
            std::mem::take(&mut *self.remote.queue.lock().unwrap_or_else(|e| e.into_inner()));
        if !woken.is_empty() {
            LOCAL.with(|(_, q)| q.borrow_mut().extend(woken));
        }
    }

    /// Runs the tasks queued at the start of this call (not those they wake). Returns how many ran.
    pub(crate) fn run_ready(&self) -> usize {
        self.collect_remote();
        let n = LOCAL.with(|(_, q)| q.borrow().len());
        let mut ran = 0;
        for _ in 0..n {
            let Some(h) = LOCAL.with(|(_, q)| q.borrow_mut().pop_front()) else {
                break;
            };
            h.scheduled.store(false, Ordering::Release);
            if h.key == ROOT {
                self.root_ready.set(true);
                continue;
            }
            self.run_one(&h);
            ran += 1;
        }
        ran
    }

    fn run_one(&self, h: &Arc<Header>) {
        let mut task = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get_mut(h.key) {
                Some(slot) if Arc::ptr_eq(&slot.header, h) => match slot.task.take() {
                    Some(t) => t,
                    None => return,
                },
                _ => return, // a stale wake of a finished task
            }
        };
        if task.aborted() {
            task.fail(JoinError::Cancelled);
            self.remove(h.key);
            drop(task); // outside any borrow: dropping may cancel I/O
            return;
        }
        let waker = Waker::from(h.clone());
        let mut cx = Context::from_waker(&waker);
        match catch_unwind(AssertUnwindSafe(|| task.poll(&mut cx))) {
            Ok(Poll::Pending) => {
                let mut tasks = self.tasks.borrow_mut();
                match tasks.get_mut(h.key) {
                    Some(slot) => slot.task = Some(task),
                    None => {
                        drop(tasks);
                        drop(task);
                    }
                }
            }
            Ok(Poll::Ready(())) => {
                self.remove(h.key);
                drop(task);
            }
            Err(payload) => {
                self.panics.set(self.panics.get() + 1);
                self.remove(h.key);
                // Drop the future first (its RxBufs go back, its I/O is cancelled), then tell
                // the joiner.
                let mut task = task;
                let dropped = catch_unwind(AssertUnwindSafe(|| {
                    task.fail(JoinError::Panic(payload));
                    drop(task)
                }));
                drop(dropped);
            }
        }
    }

    fn remove(&self, key: usize) {
        self.tasks.borrow_mut().remove(key);
    }

    /// Drops every task (at shutdown), each reporting `Cancelled` to its joiner. Returns how many.
    pub(crate) fn cancel_all(&self) -> usize {
        let tasks: Vec<Box<dyn Task>> = {
            let mut slab = self.tasks.borrow_mut();
            let v = slab.drain().filter_map(|s| s.task).collect();
            v
        };
        let n = tasks.len();
        for mut t in tasks {
            t.fail(JoinError::Cancelled);
            drop(t);
        }
        n
    }
}

pub(crate) struct EnterGuard {
    prev: u64,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        LOCAL.with(|(id, q)| {
            id.set(self.prev);
            // Tasks woken in the last turn stay scheduled (their wakes are no-ops until they
            // run): hand them to their executor's remote queue, so that the next `block_on` or
            // the shutdown's grace period runs them, instead of losing the wakes.
            for h in q.borrow_mut().drain(..) {
                let remote = h.remote.clone();
                remote
                    .queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(h);
            }
        });
    }
}
