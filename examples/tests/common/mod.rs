//! Shared helpers for the examples' integration tests: checking for the tools they drive, guarding
//! child processes, running the proxy and the sink in-process. Loopback only.
#![allow(dead_code)]
// Helpers shared by the test binaries, each its own crate: their `pub` items are for the tests,
// not an API (the rest of the workspace lints apply).
#![allow(unreachable_pub)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use examples::{
    serve_proxy, serve_sink, ProxyConfig, ProxyCounters, SinkConfig, SinkReport, SinkTotals,
};
use test_kit::{skip, Outcome};
use zcrx::net::TcpListener;
use zcrx::{ShutdownReport, ShutdownSignal};

/// The receive backend the tests run on (`RUNTIME_TEST_RX`), shared with the runtime's tests.
#[path = "../../../runtime/tests/common/rx.rs"]
pub mod rx;

/// The example binaries' flags for the backend the tests run on.
pub fn rx_flags() -> &'static [&'static str] {
    match rx::rx() {
        rx::Rx::BufRing => &[],
        rx::Rx::ZcrxNodev => &["--backend", "zcrx", "--zcrx", "nodev"],
    }
}

// ---- tools ----------------------------------------------------------------------------------

/// Where `name` is on `PATH` (or in the sbin directories), if anywhere.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs a command with a time limit; kills it if it overruns.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let mut guard = ChildGuard::new(child, &what);
    let out = guard.wait_output(limit);
    out.ok_or_else(|| format!("{what} did not finish within {limit:?} (killed)"))
}

/// A skip unless every `(program, Debian package)` in `tools` is on `PATH`. Tests do not install
/// anything: `.ci/deps` installs the packages. Where `TEST_TOOLS_REQUIRED` is set (`.ci/run`
/// sets it, after `.ci/deps`), a missing program fails the test instead, so that CI cannot go
/// green by skipping.
pub fn require_tools(tools: &[(&str, &str)]) -> Outcome {
    let missing: Vec<&(&str, &str)> = tools.iter().filter(|(b, _)| which(b).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.sort_unstable();
    packages.dedup();
    let names: Vec<&str> = missing.iter().map(|(b, _)| *b).collect();
    let why = format!(
        "needs {} (Debian: apt-get install {}; `.ci/deps` installs every tool the tests use)",
        names.join(", "),
        packages.join(" ")
    );
    if std::env::var_os("TEST_TOOLS_REQUIRED").is_some() {
        panic!("TEST_TOOLS_REQUIRED is set and {why}");
    }
    Err(skip(why))
}

// ---- child processes ------------------------------------------------------------------------

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn new(child: Child, name: &str) -> Self {
        Self {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn spawn(cmd: &mut Command) -> Self {
        let name = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self::new(child, &name)
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present")
    }

    /// Waits up to `limit` for the exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child().try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return None,
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        }
    }

    /// Collects stdout and stderr (if piped) while waiting up to `limit` for the exit; `None`
    /// (after killing it) if it overran.
    pub fn wait_output(&mut self, limit: Duration) -> Option<Output> {
        let out = self.child().stdout.take().map(drain);
        let err = self.child().stderr.take().map(drain);
        let status = self.wait_timeout(limit);
        if status.is_none() {
            self.kill();
        }
        // The pipes close when the process exits, unless something it started still holds
        // them: then take what there is after a moment.
        let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
            rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok())
                .unwrap_or_default()
        };
        let (stdout, stderr) = (collect(out), collect(err));
        status.map(|status| Output {
            status,
            stdout,
            stderr,
        })
    }

    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        let _ = tx.send(v);
    });
    rx
}

/// A port on 127.0.0.1 that was free a moment ago (for servers that must be told one).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Waits (bounded) until something listens on 127.0.0.1:`port`, looking at `/proc/net/tcp`
/// rather than connecting (a probe connection would disturb one-shot servers like
/// `iperf3 -s -1`).
pub fn wait_listening(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let needle = format!(":{port:04X}");
    while Instant::now() < deadline {
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
            };
            // Columns: sl local_address rem_address st ...; st 0A is LISTEN.
            let listening = text.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&needle) && f[3] == "0A"
            });
            if listening {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `cond` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- the proxy and the sink, in-process ---------------------------------------------------------

/// The example's proxy ([`serve_proxy`]) on `threads` runtime threads in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub counters: Arc<ProxyCounters>,
    signal: ShutdownSignal,
    threads: Vec<JoinHandle<ShutdownReport>>,
}

impl Proxy {
    /// With the defaults the example uses: 256 chunks of 32 KiB per thread and the proxy's
    /// per-connection limit ([`examples::PROXY_CONN_LIMIT_CHUNKS`] chunks).
    pub fn start(upstream: SocketAddr, threads: usize) -> Self {
        let limit = examples::PROXY_CONN_LIMIT_CHUNKS * 32 * 1024;
        Self::start_with(upstream, threads, rx::builder().conn_limit(limit))
    }

    /// Like [`start`](Self::start), each thread's runtime built from `builder` (pool size,
    /// chunk size, ...).
    pub fn start_with(upstream: SocketAddr, threads: usize, builder: zcrx::Builder) -> Self {
        let counters = Arc::new(ProxyCounters::default());
        let signal = ShutdownSignal::new();
        let mut addr: Option<SocketAddr> = None;
        let mut handles = Vec::new();
        for i in 0..threads {
            let (tx, rx) = mpsc::channel();
            let (signal2, counters2) = (signal.clone(), counters.clone());
            let want = addr;
            let builder = builder.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("proxy-{i}"))
                    .spawn(move || {
                        let rt = builder
                            .shutdown_signal(signal2)
                            .shutdown_grace(Duration::from_secs(2))
                            .build()
                            .expect("runtime");
                        rt.block_on(async move {
                            rx::assert_backend();
                            // Thread 0 picks the port; the others share it (SO_REUSEPORT).
                            let l = TcpListener::bind_reuseport(
                                want.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
                            )
                            .expect("bind the proxy");
                            tx.send(l.local_addr().unwrap()).unwrap();
                            let mut config = ProxyConfig::new(upstream);
                            config.connect_timeout = Duration::from_secs(5);
                            serve_proxy(l, config, counters2)
                                .await
                                .expect("serve_proxy");
                        });
                        rt.shutdown()
                    })
                    .unwrap(),
            );
            let got = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("proxy thread started");
            addr.get_or_insert(got);
        }
        Self {
            addr: addr.expect("at least one thread"),
            counters,
            signal,
            threads: handles,
        }
    }

    /// Waits (bounded) until no connection is open in the proxy.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        wait_until(limit, || self.counters.active() == 0)
    }

    /// Stops the proxy and returns each thread's shutdown report.
    pub fn stop(mut self) -> Vec<ShutdownReport> {
        self.signal.trigger();
        std::mem::take(&mut self.threads)
            .into_iter()
            .map(|t| t.join().expect("proxy thread panicked"))
            .collect()
    }

    /// Stops the proxy and asserts it shut down clean: no task panicked or had to be
    /// cancelled, no receive buffer was left held, no kernel request leaked.
    pub fn stop_clean(self) {
        for (i, r) in self.stop().into_iter().enumerate() {
            assert_eq!(r.task_panics, 0, "proxy thread {i}: a task panicked: {r}");
            assert!(
                r.is_clean(),
                "proxy thread {i} did not shut down clean: {r}"
            );
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.signal.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The example's sink ([`serve_sink`]) on `threads` runtime threads in this process; each
/// finished connection's report arrives on `reports`.
pub struct Sink {
    pub addr: SocketAddr,
    pub totals: Arc<SinkTotals>,
    pub reports: mpsc::Receiver<SinkReport>,
    signal: ShutdownSignal,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    pub fn start(threads: usize, verify: Option<u64>) -> Self {
        Self::start_with(threads, SinkConfig::new(verify, false))
    }

    pub fn start_with(threads: usize, config: SinkConfig) -> Self {
        let totals = Arc::new(SinkTotals::default());
        let signal = ShutdownSignal::new();
        // Bind here, so the port is known; each runtime thread gets its own SO_REUSEPORT
        // listener on it (this one is closed once they are up).
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let (tx, reports) = mpsc::channel::<SinkReport>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let builder = rx::builder()
            .threads(threads)
            .shutdown_signal(signal.clone())
            .shutdown_grace(Duration::from_secs(2));
        let t_totals = totals.clone();
        let thread = std::thread::spawn(move || {
            builder
                .run(move |_| {
                    let (tx, ready_tx, totals) = (tx.clone(), ready_tx.clone(), t_totals.clone());
                    let config = config.clone();
                    async move {
                        rx::assert_backend();
                        let l = TcpListener::bind_reuseport(addr).expect("bind the sink");
                        let _ = ready_tx.send(());
                        serve_sink(l, config, totals, move |r| {
                            let _ = tx.send(r);
                        })
                        .await
                        .expect("serve_sink");
                    }
                })
                .expect("runtime");
        });
        for _ in 0..threads {
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("sink thread started");
        }
        Self {
            addr,
            totals,
            reports,
            signal,
            thread: Some(thread),
        }
    }

    /// The next finished connection's report (bounded wait).
    pub fn next_report(&self) -> SinkReport {
        self.reports
            .recv_timeout(Duration::from_secs(60))
            .expect("a sink connection report within 60 s")
    }

    /// Stops the sink; returns the reports of the connections that finished meanwhile
    /// (those still open are ended and reported as interrupted).
    pub fn stop(mut self) -> Vec<SinkReport> {
        self.signal.trigger();
        if let Some(t) = self.thread.take() {
            t.join().expect("sink runtime thread panicked");
        }
        self.reports.try_iter().collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.signal.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- std peers ------------------------------------------------------------------------------

/// Connects with a bounded timeout and generous read/write timeouts (so no test can hang).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Sends `data` on a new connection (writer thread), shuts down the write side, reads to the
/// end; returns what came back.
pub fn roundtrip(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let s = connect(addr);
    let mut r = s.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let mut s = s;
        s.write_all(&data).expect("write to the proxy");
        s.shutdown(Shutdown::Write).expect("shutdown(Write)");
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).expect("read to the end");
    w.join().expect("writer");
    back
}

/// A std echo server on 127.0.0.1 for `conns` connections (each in its own thread); echoes
/// until the client's end of stream, then closes.
pub fn echo_upstream(conns: usize) -> (SocketAddr, JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..conns {
            let (s, _) = l.accept().unwrap();
            workers.push(std::thread::spawn(move || echo(s)));
        }
        for w in workers {
            w.join().unwrap();
        }
    });
    (addr, t)
}

/// Echoes `s` until its end of stream, then shuts down the write side.
pub fn echo(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => s.write_all(&buf[..n]).expect("echo write"),
            Err(e) => panic!("echo read: {e}"),
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Closes `s` with a reset (`SO_LINGER` 0).
pub fn reset(s: TcpStream) {
    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    drop(s);
}
