//! `Builder`: the public way to configure and start runtimes, on this thread or one per thread.

use std::future::Future;
use std::io;
use std::time::Duration;

use crate::config::{Coalesce, Config, RxBackend, ZcrxTarget};
use crate::runtime::Runtime;
use crate::shutdown::{ShutdownReport, ShutdownSignal};

/// Builds a [`Runtime`] for this thread, or runs one pinned runtime per thread.
///
/// ```no_run
/// let rt = zcrx::Runtime::builder().chunks(512).chunk_size(16 * 1024).build()?;
/// rt.block_on(async { /* ... */ });
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
    signal: ShutdownSignal,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            config: Config::default(),
            signal: ShutdownSignal::new(),
        }
    }
}

impl Builder {
    /// Defaults: 1 thread, pinned; SQ 256, CQ 8192; buffer ring of 256 chunks of 32 KiB; a
    /// per-connection limit of a quarter of the pool; completions coalesced for up to 50 µs
    /// while bulk data flows; 5 s shutdown grace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of threads for [`run`](Self::run), each with its own ring and receive pool.
    pub fn threads(mut self, n: usize) -> Self {
        self.config.threads = n;
        self
    }

    /// Pin thread `i` to CPU `i` (modulo the CPUs this process may use). Default on.
    pub fn pin_threads(mut self, on: bool) -> Self {
        self.config.pin = on;
        self
    }

    /// The CPU each thread of [`run`](Self::run) will be pinned to, by thread index; `None` with
    /// pinning off (or when this thread's CPU set cannot be read). For
    /// [`ListenerGroup::bind_by_cpu`](crate::net::ListenerGroup::bind_by_cpu).
    pub fn pinned_cpus(&self) -> Option<Vec<usize>> {
        let cpus = usable_cpus();
        (self.config.pin && !cpus.is_empty()).then(|| {
            (0..self.config.threads)
                .map(|i| cpus[i % cpus.len()])
                .collect()
        })
    }

    /// The NIC receive queue each thread of [`run`](Self::run) will register for zcrx, by thread
    /// index (thread `i` takes the [`zcrx_queue`](Self::zcrx_queue)'s `queue + i`); `None`
    /// without a zcrx queue target. For
    /// [`ListenerGroup::bind_by_queue`](crate::net::ListenerGroup::bind_by_queue), which gives
    /// each connection to the thread whose queue received it.
    pub fn zcrx_queues(&self) -> Option<Vec<u32>> {
        match &self.config.zcrx {
            Some(ZcrxTarget::Queue { queue, .. }) => Some(
                (0..self.config.threads)
                    .map(|i| queue.saturating_add(i as u32))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Submission-queue entries per ring.
    pub fn sq_entries(mut self, n: u32) -> Self {
        self.config.sq_entries = n;
        self
    }

    /// Completion-queue entries per ring. Multishot receives post bursts: a small CQ makes them
    /// end early (they are re-armed, but it costs a round trip).
    pub fn cq_entries(mut self, n: u32) -> Self {
        self.config.cq_entries = n;
        self
    }

    /// The receive backend.
    pub fn rx_backend(mut self, b: RxBackend) -> Self {
        self.config.backend = b;
        self
    }

    /// The NIC and first receive queue for zcrx: thread `i` uses queue `queue + i`. Steer each
    /// queue's flows there (`ethtool -N`), see `docs/zcrx.md`.
    pub fn zcrx_queue(mut self, ifname: impl Into<String>, queue: u32) -> Self {
        self.config.zcrx = Some(ZcrxTarget::Queue {
            ifname: ifname.into(),
            queue,
        });
        self
    }

    /// zcrx without a device ([`ZcrxTarget::NoDevice`], Linux 7.1+): every thread registers
    /// its own device-less interface queue and receives through it on any TCP socket; with
    /// [`RxBackend::Auto`] the buffer ring instead if the kernel refuses it.
    pub fn zcrx_nodev(self) -> Self {
        self.zcrx(ZcrxTarget::NoDevice)
    }

    /// Where zcrx receives ([`zcrx_queue`](Self::zcrx_queue) and
    /// [`zcrx_nodev`](Self::zcrx_nodev) in one).
    pub fn zcrx(mut self, target: ZcrxTarget) -> Self {
        self.config.zcrx = Some(target);
        self
    }

    /// Receive chunk size (power of two, 4 KiB..=1 MiB). Under zcrx the pool keeps its size
    /// (`chunks * chunk_size` bytes) but is split into the kernel's buffers, pages, which it hands
    /// out one at a time: what is free and what a connection holds are then exact.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.config.chunk_size = bytes;
        self
    }

    /// Receive chunks per thread.
    pub fn chunks(mut self, n: usize) -> Self {
        self.config.chunks = n;
        self
    }

    /// Incremental buffer consumption (Linux 6.12+): small receives share a chunk.
    pub fn incremental(mut self, on: bool) -> Self {
        self.config.incremental = on;
        self
    }

    /// Completion coalescing while bulk data flows: when a receive has just filled a whole chunk
    /// (or 16 KiB), the loop's next wait asks the kernel for up to `completions` completions,
    /// returning after `delay` once at least one has arrived (`min_wait` of `io_uring_enter`,
    /// Linux 6.13+; ignored on older kernels). Fewer wake-ups per byte, for the receiver and,
    /// on loopback, for the sender's core (`docs/benchmarks.md`). Request/response
    /// traffic (receives smaller than that) never waits. Never more than half of what the armed
    /// receives may still deliver is awaited, so receives are re-armed before they run dry.
    /// `Duration::ZERO` or `completions <= 1` turns it off. Default: 50 µs, 32 completions.
    pub fn coalesce(mut self, delay: Duration, completions: u32) -> Self {
        self.config.coalesce = Coalesce { delay, completions };
        self
    }

    /// Most bytes one connection may hold (received and not yet dropped) before the runtime
    /// stops reading it; the others keep receiving. Default: a quarter of the pool. Without
    /// incremental mode a chunk counts whole, however few bytes it carries: a peer sending one
    /// byte per segment is stopped after `bytes / chunk_size` segments, not `bytes`.
    pub fn conn_limit(mut self, bytes: u64) -> Self {
        self.config.conn_limit = Some(bytes);
        self
    }

    /// Fixes how many chunks the buffer ring keeps posted to the kernel at once (at least 1),
    /// instead of the adaptive depth (see [`adaptive_depth`](Self::adaptive_depth)). The rest
    /// wait in the pool and go back into the ring as the kernel uses what is posted, the most
    /// recently returned (still cached) first. To post every chunk, as a plain buffer ring does,
    /// give the pool's chunk count.
    ///
    /// Receives smaller than a chunk take a whole one unless
    /// [`incremental`](Self::incremental) is on, so a shallow ring runs dry sooner with small
    /// messages (the receives re-arm; nothing is lost). Ignored with zcrx, whose page pool the
    /// kernel sizes.
    pub fn max_posted(mut self, chunks: u32) -> Self {
        self.config.max_posted = Some(chunks);
        self
    }

    /// Whether the runtime chooses, every loop turn, how many chunks the buffer ring keeps
    /// posted (default: on, unless [`max_posted`](Self::max_posted) fixes the depth; off
    /// without `max_posted` posts every chunk).
    ///
    /// Every posted chunk is one the kernel may fill in one loop turn. A ring holding the whole
    /// pool lets one turn copy megabytes into chunks that are cold in the CPU's cache; the turn
    /// gets slower, the sockets fill up, and on loopback the receiver can stay in that slow
    /// state for good. Too few posted and receives find the ring empty (`-ENOBUFS`, a
    /// completion and a re-arm each) while their sockets fill. So the depth starts at 64
    /// chunks (or 2 MiB of smaller ones) and doubles when receives find the ring empty many
    /// times for what a turn took (one for every two chunks) or turn after turn (four a turn
    /// on average over 16 turns). After 256 turns in which no receive went without, it probes
    /// a quarter lower; after 256 turns that each used less than half of it, it comes down to
    /// twice the largest. [`stats`](crate::stats) counts the moves (`depth_raises`,
    /// `depth_cuts`).
    ///
    /// It wins at 8-16 bulk flows and is level at one (measurements in `docs/benchmarks.md`,
    /// "Choices behind the defaults"). Cannot be turned on together with `max_posted`. Ignored
    /// with zcrx.
    pub fn adaptive_depth(mut self, on: bool) -> Self {
        self.config.adaptive_depth = Some(on);
        self
    }

    /// How long shutdown waits for tasks to finish before cancelling them.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.config.grace = d;
        self
    }

    /// A signal that shuts the runtime(s) down gracefully when triggered.
    pub fn shutdown_signal(mut self, signal: ShutdownSignal) -> Self {
        self.signal = signal;
        self
    }

    /// Ctrl-C (SIGINT) and SIGTERM trigger the [shutdown signal](Self::shutdown_signal) while
    /// the runtime lives (while [`run`](Self::run) runs, for its threads): listeners stop
    /// accepting, [`shutdown_requested`](crate::shutdown_requested) resolves, and the tasks get
    /// the grace period to finish. A second signal, or one that arrives when no runtime is armed,
    /// gets the default action and ends the process at once. Off by default; [`start`]
    /// turns it on.
    ///
    /// The signals are read by one process-wide thread (through `signal-hook`), so they need not
    /// be blocked in any thread, and other runtimes or libraries can still observe them.
    pub fn shutdown_on_signals(mut self, on: bool) -> Self {
        self.config.on_signals = on;
        self
    }

    /// A runtime on the current thread.
    pub fn build(self) -> io::Result<Runtime> {
        let Self { config, signal } = self;
        let config = config.checked()?;
        let armed = arm_signals(&config, &signal)?;
        let mut rt = Runtime::new(config, signal, 0, None)?;
        rt.armed = armed;
        Ok(rt)
    }

    /// Runs `f(i)` as the root future of runtime `i` on each of `threads` threads (pinned unless
    /// turned off) and returns their outputs in thread order. Each runtime shuts down gracefully
    /// once its root future finishes.
    pub fn run<F, Fut>(self, f: F) -> io::Result<Vec<Fut::Output>>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        Ok(self
            .run_with_reports(f)?
            .into_iter()
            .map(|(out, _)| out)
            .collect())
    }

    /// Like [`run`](Self::run), also returning each thread's [`ShutdownReport`] (tasks cancelled
    /// or panicked, buffers still held).
    pub fn run_with_reports<F, Fut>(self, f: F) -> io::Result<Vec<(Fut::Output, ShutdownReport)>>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let Self { config, signal } = self;
        let config = config.checked()?;
        // Disarmed when every thread has finished.
        let _armed = arm_signals(&config, &signal)?;
        let f = std::sync::Arc::new(f);
        let cpus = usable_cpus();
        let mut threads = Vec::with_capacity(config.threads);
        for i in 0..config.threads {
            let f = f.clone();
            let config = config.clone();
            let signal = signal.clone();
            let cpu = (config.pin && !cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let t = std::thread::Builder::new()
                .name(format!("rt-{i}"))
                .spawn(move || {
                    let rt = Runtime::new(config, signal, i, cpu)?;
                    let out = rt.block_on(f(i));
                    let report = rt.shutdown();
                    Ok::<_, io::Error>((out, report))
                })?;
            threads.push(t);
        }
        let mut outs: Vec<(Fut::Output, ShutdownReport)> = Vec::with_capacity(threads.len());
        for (i, t) in threads.into_iter().enumerate() {
            match t.join() {
                Ok(r) => outs.push(r?),
                Err(p) => {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(io::Error::other(format!(
                        "runtime thread {i} panicked: {msg}"
                    )));
                }
            }
        }
        Ok(outs)
    }
}

// The ways to a runtime that start from a `Builder`, here rather than beside `Runtime` so that
// `runtime.rs` needs nothing from this module.
impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A runtime on this thread with the default configuration.
    pub fn new_default() -> io::Result<Self> {
        Builder::new().build()
    }
}

/// Runs `fut` on a new runtime on this thread with the default configuration, then shuts the
/// runtime down gracefully: the shortest way to a program, like `#[tokio::main]` or
/// `tokio_uring::start`.
///
/// Ctrl-C and SIGTERM start the graceful shutdown ([`Builder::shutdown_on_signals`]): listeners
/// stop accepting (`accept` fails with `ConnectionAborted`), [`shutdown_requested`](crate::shutdown_requested) resolves, and
/// a second signal exits at once. An error building the runtime (io_uring refused by the
/// kernel or by `kernel.io_uring_disabled`, too little locked memory) comes back through `E`,
/// with the reason in its message, instead of a panic. Buffers still held at the end are
/// reported through `tracing` at `warn`.
///
/// ```no_run
/// use zcrx::net::TcpListener;
///
/// fn main() -> std::io::Result<()> {
///     zcrx::start(async {
///         let listener = TcpListener::bind("127.0.0.1:7000")?;
///         while let Ok((stream, _peer)) = listener.accept().await {
///             zcrx::spawn(async move {
///                 let mut bytes = 0;
///                 while let Ok(Some(buf)) = stream.recv().await {
///                     bytes += buf.len(); // `buf` derefs to the received `&[u8]`
///                 }
///                 println!("{bytes} bytes");
///             });
///         }
///         Ok(())
///     })
/// }
/// ```
///
/// For one runtime per core use [`Builder::run`]; for other settings,
/// [`Runtime::builder`]`().shutdown_on_signals(true).build()?.block_on(..)`.
pub fn start<F, T, E>(fut: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: From<io::Error>,
{
    let rt = Builder::new().shutdown_on_signals(true).build()?;
    let out = rt.block_on(fut);
    let report = rt.shutdown();
    if !report.is_clean() {
        // The runtime's own log target, as for the report `shutdown` logs.
        tracing::warn!(target: "zcrx::runtime", "runtime shut down: {report}");
    }
    out
}

/// Arms `signal` against SIGINT/SIGTERM when `config` asks for it.
fn arm_signals(
    config: &Config,
    signal: &ShutdownSignal,
) -> io::Result<Option<crate::signals::Armed>> {
    config
        .on_signals
        .then(|| crate::signals::arm(signal))
        .transpose()
}

fn usable_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => Vec::new(),
    }
}
