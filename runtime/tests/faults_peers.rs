//! Peers that misbehave (fault suite, item 4): resets in the middle of a stream,
//! half-closes, a 1-byte-per-100 ms trickle (also one that never finishes, against a server that
//! holds what it got until the request is complete), connect-and-vanish, and 10,000 connections
//! opened and closed in a burst, while well-behaved clients stream verified data. The server must
//! keep serving the well-behaved clients, free everything of the bad ones, leak no fd and no
//! chunk. Once over loopback, once across a veth pair between two network namespaces (there the
//! vanishing peer really vanishes: its link goes down).
//!
//! Its own test binary: it counts the process's fds, so its two tests run one after the other.

#[path = "common/faults.rs"]
mod faults;
#[path = "common/rx.rs"]
mod rx;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};

use faults::{check, digest_of, fill, open_fds, Digest, VethPair};
use zcrx::net::TcpListener;
use zcrx::time::{sleep, timeout};
use zcrx::{spawn, RxBuf, ShutdownReport, ShutdownSignal};

/// The two tests count the process's fds: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const CHUNK: usize = 16 * 1024;
const CHUNKS: usize = 32;
/// The default per-connection limit: a quarter of the pool, in the pool's chunks.
fn limit_chunks() -> u32 {
    rx::pool_chunks(CHUNKS, CHUNK) / 4
}
/// Requests up to this size are assembled zero-copy: the server holds every buffer until the
/// request is complete (what a parser that does not copy does).
const ASSEMBLE_MAX: u64 = 64 * 1024;
/// The server drops a connection that sends nothing for this long.
const IDLE: Duration = Duration::from_secs(1);
const HEADER: usize = 16;
/// The seeds of the peers that go quiet: the slowloris ones (900, 901) and, across veth, the
/// ones that vanish (700-703). No other client uses these seeds.
fn quiet(seed: u64) -> bool {
    matches!(seed, 700..=703 | 900 | 901)
}
/// Burst connections number their requests from here, clear of every other client's seed.
const BURST_SEEDS: u64 = 1_000_000;

// ---- the server -----------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Ends {
    accepted: Cell<u64>,
    accept_errors: Cell<u64>,
    ok: Cell<u64>,
    reset: Cell<u64>,
    early_eof: Cell<u64>,
    /// Idle timeouts of the peers that are meant to go quiet (slowloris, vanished).
    idle: Cell<u64>,
    /// Idle timeouts of any other peer. The pool is small on purpose, and a connection that
    /// waits for pool room longer than `IDLE` (its data unread, its EOF unseen) is timed out by
    /// the application like a silent one: only allowed while connections waited for buffers.
    idle_other: Cell<u64>,
    other: Cell<u64>,
    active: Cell<u64>,
    bytes: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// One connection. Protocol: `[seed: u64][len: u64]` then `len` bytes of stream `seed`; the
/// server answers `[len: u64][digest: u64]` and closes. Small requests are held (zero-copy
/// assembly) until complete; large ones are verified and dropped buffer by buffer.
async fn handle(stream: zcrx::net::TcpStream, ends: Rc<Ends>) {
    let mut head = Vec::with_capacity(HEADER);
    let (mut seed, mut len) = (0u64, u64::MAX);
    let mut got = 0u64;
    let mut digest = Digest::default();
    let mut held: Vec<RxBuf> = Vec::new();
    loop {
        let buf = match timeout(IDLE, stream.recv()).await {
            Err(_) if head.len() == HEADER && quiet(seed) => return bump(&ends.idle),
            Err(_) => return bump(&ends.idle_other),
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => return bump(&ends.reset),
            Ok(Err(_)) => return bump(&ends.other),
            Ok(Ok(None)) => return bump(&ends.early_eof),
            Ok(Ok(Some(b))) => b,
        };
        let mut data = &buf[..];
        if head.len() < HEADER {
            let n = (HEADER - head.len()).min(data.len());
            head.extend_from_slice(&data[..n]);
            data = &data[n..];
            if head.len() == HEADER {
                seed = u64::from_le_bytes(head[..8].try_into().unwrap());
                len = u64::from_le_bytes(head[8..].try_into().unwrap());
            }
        }
        if !data.is_empty() {
            if got + data.len() as u64 > len {
                return bump(&ends.other);
            }
            if let Some(i) = check(seed, got, data) {
                panic!("seed {seed}: wrong byte at {}", got + i as u64);
            }
            digest.update(data);
            got += data.len() as u64;
            ends.bytes.set(ends.bytes.get() + data.len() as u64);
        }
        if len <= ASSEMBLE_MAX {
            held.push(buf);
        } else {
            drop(buf);
        }
        if got == len {
            let mut answer = got.to_le_bytes().to_vec();
            answer.extend_from_slice(&digest.finish().to_le_bytes());
            drop(held);
            return match stream.send_all(&answer).await {
                Ok(()) => bump(&ends.ok),
                Err(_) => bump(&ends.other),
            };
        }
    }
}

struct ServerOut {
    ends: Rc<Ends>,
    /// fds when the listener was up, and once every connection was gone.
    fds_before: usize,
    fds_after: usize,
    snap: zcrx::ifq::Snapshot,
    max_owner_chunks: u32,
    min_kernel_chunks: u32,
    stats: zcrx::DriverStats,
}

struct Server {
    addr: SocketAddr,
    signal: ShutdownSignal,
    thread: JoinHandle<(String, Tally, ShutdownReport)>,
}

/// Starts the server on its own thread (inside `netns` if given), listening on `ip`.
fn start_server(netns: Option<String>, ip: IpAddr) -> Server {
    let signal = ShutdownSignal::new();
    let sig = signal.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("server".into())
        .spawn(move || {
            if let Some(ns) = &netns {
                faults::enter_netns(ns).unwrap();
            }
            let stop = sig.clone();
            let rt = rx::builder()
                .chunks(CHUNKS)
                .chunk_size(CHUNK)
                .shutdown_signal(sig)
                .shutdown_grace(Duration::from_millis(200))
                .build()
                .unwrap();
            let out = rt.block_on(async move {
                let fds_before = open_fds();
                let listener = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let ends = Rc::new(Ends::default());
                // Who holds how much of the pool, every 2 ms.
                let watch = Rc::new(RefCell::new((0u32, u32::MAX)));
                let w = watch.clone();
                let watcher = spawn(async move {
                    loop {
                        let s = zcrx::rx_snapshot().unwrap();
                        {
                            let mut w = w.borrow_mut();
                            let top = s.owners.iter().map(|(_, o)| o.chunks).max();
                            w.0 = w.0.max(top.unwrap_or(0));
                            w.1 = w.1.min(s.counts.kernel);
                        }
                        sleep(Duration::from_millis(2)).await;
                    }
                });
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            bump(&ends.accepted);
                            bump(&ends.active);
                            let ends = ends.clone();
                            drop(spawn(async move {
                                handle(s, ends.clone()).await;
                                ends.active.set(ends.active.get() - 1);
                            }));
                        }
                        Err(_) if stop.is_triggered() => break,
                        Err(_) => bump(&ends.accept_errors),
                    }
                }
                drop(listener);
                // Every bad connection ends by itself (reset, EOF or idle timeout).
                let t0 = Instant::now();
                while ends.active.get() > 0 {
                    assert!(
                        t0.elapsed() < Duration::from_secs(20),
                        "{} connections never ended: {ends:?}",
                        ends.active.get()
                    );
                    sleep(Duration::from_millis(5)).await;
                }
                watcher.abort();
                let _ = watcher.await;
                // Let the last cancellations complete and the returned chunks be published.
                let mut snap = zcrx::rx_snapshot().unwrap();
                let mut fds_after = open_fds();
                for _ in 0..400 {
                    snap = zcrx::rx_snapshot().unwrap();
                    fds_after = open_fds();
                    if fds_after <= fds_before && snap.counts.kernel == snap.counts.total() {
                        break;
                    }
                    sleep(Duration::from_millis(5)).await;
                }
                let (max_owner_chunks, min_kernel_chunks) = *watch.borrow();
                ServerOut {
                    ends,
                    fds_before,
                    fds_after,
                    snap,
                    max_owner_chunks,
                    min_kernel_chunks,
                    stats: zcrx::stats(),
                }
            });
            let (summary, tally) = check_server(&out);
            (summary, tally, rt.shutdown())
        })
        .unwrap();
    let addr = rx.recv().expect("the server started");
    Server {
        addr,
        signal,
        thread,
    }
}

/// How the server's connections ended.
#[derive(Debug, Clone, Copy)]
struct Tally {
    accepted: u64,
    ok: u64,
    reset: u64,
    early_eof: u64,
    idle: u64,
}

/// The server-side checks (run on the server thread); returns the figures.
fn check_server(o: &ServerOut) -> (String, Tally) {
    let e = &o.ends;
    let summary = format!(
        "server: accepted {} ({} accept errors), completed {}, reset {}, early EOF {}, idle \
         timeouts {} (and {} while waiting for pool room), other {}; {} bytes verified; fds {} -> {}; most chunks held by one \
         connection {} (limit {}), fewest chunks left to the kernel {} of {}; after: {:?}; {:?}",
        e.accepted.get(),
        e.accept_errors.get(),
        e.ok.get(),
        e.reset.get(),
        e.early_eof.get(),
        e.idle.get(),
        e.idle_other.get(),
        e.other.get(),
        e.bytes.get(),
        o.fds_before,
        o.fds_after,
        o.max_owner_chunks,
        limit_chunks(),
        o.min_kernel_chunks,
        rx::pool_chunks(CHUNKS, CHUNK),
        o.snap.counts,
        o.stats
    );
    eprintln!("{summary}");
    assert_eq!(
        o.fds_after,
        o.fds_before,
        "fds leaked: {}",
        faults::fd_summary()
    );
    assert_eq!(o.snap.counts.user, 0, "chunks still held: {:?}", o.snap);
    assert_eq!(o.snap.counts.kernel, o.snap.counts.total(), "{:?}", o.snap);
    assert!(o.snap.owners.is_empty(), "{:?}", o.snap);
    assert!(
        o.max_owner_chunks <= limit_chunks() + 2,
        "one connection held {} chunks (limit {})",
        o.max_owner_chunks,
        limit_chunks()
    );
    assert_eq!(
        e.accepted.get(),
        e.ok.get()
            + e.reset.get()
            + e.early_eof.get()
            + e.idle.get()
            + e.idle_other.get()
            + e.other.get(),
        "every connection ended once"
    );
    // Only a connection that waited for pool room can go quiet without meaning to, and only a
    // few: most of the burst ends at its EOF or reset (checked by the caller).
    assert!(
        e.idle_other.get() <= o.stats.pool_waits.min(64),
        "{} connections timed out that were not meant to go quiet ({} pool waits)",
        e.idle_other.get(),
        o.stats.pool_waits
    );
    let tally = Tally {
        accepted: e.accepted.get(),
        ok: e.ok.get(),
        reset: e.reset.get(),
        early_eof: e.early_eof.get(),
        idle: e.idle.get(),
    };
    (summary, tally)
}

// ---- the clients ------------------------------------------------------------------------------

fn request(seed: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + len as usize);
    v.extend_from_slice(&seed.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.resize(HEADER + len as usize, 0);
    fill(seed, 0, &mut v[HEADER..]);
    v
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads the server's answer and checks it.
fn answer(s: &mut TcpStream, seed: u64, len: u64) {
    let mut a = [0u8; 16];
    s.read_exact(&mut a)
        .unwrap_or_else(|e| panic!("seed {seed}: no answer: {e}"));
    assert_eq!(u64::from_le_bytes(a[..8].try_into().unwrap()), len);
    assert_eq!(
        u64::from_le_bytes(a[8..].try_into().unwrap()),
        digest_of(seed, len),
        "seed {seed}: digest"
    );
}

/// A well-behaved client: sends the request in 64 KiB writes, reads the answer. Returns how long
/// it took.
fn good(addr: SocketAddr, seed: u64, len: u64, half_close: bool) -> Duration {
    let t = Instant::now();
    let mut s = connect(addr);
    let req = request(seed, len);
    for piece in req.chunks(64 * 1024) {
        s.write_all(piece).unwrap();
    }
    if half_close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    answer(&mut s, seed, len);
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "the server closes");
    t.elapsed()
}

/// Sends `sent` bytes of a `len`-byte request, then resets the connection (SO_LINGER 0).
fn reset_mid_stream(addr: SocketAddr, seed: u64, len: u64, sent: usize) {
    let mut s = connect(addr);
    s.write_all(&request(seed, len)[..sent]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Half-closes after part of the request: the server sees an early EOF and closes.
fn truncated_half_close(addr: SocketAddr, seed: u64) {
    let mut s = connect(addr);
    s.write_all(&request(seed, 1 << 20)[..10_000]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to a truncated request");
}

/// Sends the header, then the body one byte every 100 ms; reads the answer.
fn trickle(addr: SocketAddr, seed: u64, len: u64) -> Duration {
    let t = Instant::now();
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    let req = request(seed, len);
    s.write_all(&req[..HEADER]).unwrap();
    for b in &req[HEADER..] {
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    answer(&mut s, seed, len);
    t.elapsed()
}

/// Slowloris: announces a small request, then trickles one byte per 100 ms and never finishes.
/// The server (which holds what it got) must stop reading it at its limit and drop it when it
/// goes idle. Returns how long until the server cut it off.
fn slowloris(addr: SocketAddr, seed: u64) -> Duration {
    let t = Instant::now();
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    let req = request(seed, 60_000);
    s.write_all(&req[..HEADER]).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for b in &req[HEADER..] {
        let mut x = [0u8; 1];
        match s.read(&mut x) {
            Ok(0) => return t.elapsed(),
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return t.elapsed(),
            _ => {}
        }
        if s.write_all(std::slice::from_ref(b)).is_err() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the server never cut off a peer that trickles forever"
        );
    }
    panic!("the slowloris request completed");
}

/// Connects and closes at once, without a byte (FIN, or RST with `reset`).
fn connect_and_vanish(addr: SocketAddr, reset: bool) {
    let s = connect(addr);
    if reset {
        rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    }
}

/// `n` connections opened and closed as fast as possible from `threads` threads; a third send a
/// few bytes first, half close with a reset.
fn burst(addr: SocketAddr, n: u64, threads: u64) -> Duration {
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|k| {
            std::thread::spawn(move || {
                for i in (k..n).step_by(threads as usize) {
                    let mut s = connect(addr);
                    if i % 3 == 0 {
                        let _ = s.write_all(&request(BURST_SEEDS + i, 1000)[..21]);
                    }
                    if i % 2 == 0 {
                        rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed()
}

fn spawn_named<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    match ns {
        Some(ns) => faults::spawn_in_netns(ns, "client", f),
        None => std::thread::spawn(f),
    }
}

struct Mix {
    goods: u64,
    good_len: u64,
    small: u64,
    burst: u64,
}

/// Runs every kind of client against `addr` (from inside `ns` if given); returns the figures.
fn misbehave(addr: SocketAddr, ns: Option<&str>, mix: &Mix) -> (u64, String) {
    let mut expected_ok = 0;
    // Slowloris first, so that they hold their share while the others run.
    let lorises: Vec<_> = (0..2)
        .map(|i| spawn_named(ns, move || slowloris(addr, 900 + i)))
        .collect();
    let trickles: Vec<_> = (0..2)
        .map(|i| spawn_named(ns, move || trickle(addr, 800 + i, 6)))
        .collect();
    expected_ok += 2;
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let good_len = mix.good_len;
    let goods: Vec<_> = (0..mix.goods)
        .map(|i| spawn_named(ns, move || good(addr, 100 + i, good_len, i % 2 == 1)))
        .collect();
    let smalls: Vec<_> = (0..mix.small)
        .map(|i| spawn_named(ns, move || good(addr, 200 + i, 40_000, i % 2 == 0)))
        .collect();
    expected_ok += mix.goods + mix.small;
    let bad = spawn_named(ns, move || {
        for i in 0..8 {
            reset_mid_stream(addr, 300 + i, 8 << 20, 1 << 20);
            reset_mid_stream(addr, 400 + i, 50_000, 30_000);
            truncated_half_close(addr, 500 + i);
            connect_and_vanish(addr, i % 2 == 0);
        }
    });
    let n = mix.burst;
    let burst_t = spawn_named(ns, move || burst(addr, n, 4));
    let mut good_times = Vec::new();
    for g in goods.into_iter().chain(smalls) {
        good_times.push(g.join().expect("a well-behaved client failed"));
    }
    let goods_done = t.elapsed();
    bad.join().unwrap();
    let burst_time = burst_t.join().unwrap();
    let trickle_times: Vec<Duration> = trickles.into_iter().map(|h| h.join().unwrap()).collect();
    let loris_times: Vec<Duration> = lorises.into_iter().map(|h| h.join().unwrap()).collect();
    let slowest = good_times.iter().max().copied().unwrap_or_default();
    let summary = format!(
        "clients: {} well-behaved ({} x {} MiB streamed, {} x 40 KB assembled; half of them \
         half-closed) all done in {:.2?} (slowest {:.2?}) while 8 x (reset at 1 MiB of 8 MiB, \
         reset at 30 of 50 KB, truncated half-close, connect-and-vanish) ran; burst of {} \
         connections in {:.2?}; trickles answered in {:.2?}; slowloris cut off after {:.2?}",
        mix.goods + mix.small,
        mix.goods,
        mix.good_len >> 20,
        mix.small,
        goods_done,
        slowest,
        mix.burst,
        burst_time,
        trickle_times,
        loris_times
    );
    (expected_ok, summary)
}

fn finish(server: Server) -> (String, Tally, ShutdownReport) {
    server.signal.trigger();
    server.thread.join().expect("server thread")
}

fn misbehaving_peers_over_loopback() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    faults::raise_fd_limit();
    let fds0 = open_fds();
    let t = Instant::now();
    let server = start_server(None, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (expected_ok, clients) = misbehave(
        server.addr,
        None,
        &Mix {
            goods: 8,
            good_len: 4 << 20,
            small: 4,
            burst: 10_000,
        },
    );
    let (summary, tally, report) = finish(server);
    let fds1 = open_fds();
    eprintln!("loopback {clients}");
    eprintln!("loopback {summary}");
    eprintln!(
        "loopback: shutdown: {report}; process fds {fds0} -> {fds1}; {:.2?} in all",
        t.elapsed()
    );
    assert_eq!(
        tally.ok, expected_ok,
        "every well-behaved client was served: {summary}"
    );
    assert!(
        tally.reset >= 16,
        "the resets were seen as resets: {summary}"
    );
    // Most of the burst reached the application and ended there (at EOF, or reset). Resets
    // that arrive before the accept never reach it, and on a busy machine the listen backlog
    // may drop a few more, so this is a floor, not an exact count; that every accepted
    // connection ended exactly once is checked on the server.
    assert!(tally.early_eof >= 2500 + 8, "{summary}");
    assert!(tally.accepted >= 2500 + 8 * 3 + 12 + 4, "{summary}");
    assert_eq!(
        tally.idle, 2,
        "the two slowloris peers were cut off: {summary}"
    );
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fds1, fds0, "fds leaked: {}", faults::fd_summary());
}

fn misbehaving_peers_across_veth() -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = faults::netns_unavailable() {
        return Err(skip(why));
    }
    faults::raise_fd_limit();
    let pair = VethPair::new().expect("veth pair");
    let fds0 = open_fds();
    let t = Instant::now();
    let server = start_server(Some(pair.ns_a.clone()), IpAddr::V4(pair.addr_a));
    let addr = server.addr;
    let (mut expected_ok, clients) = misbehave(
        addr,
        Some(&pair.ns_b),
        &Mix {
            goods: 4,
            good_len: 4 << 20,
            small: 2,
            burst: 1000,
        },
    );
    // Peers that really vanish: they send part of a request, then their link goes down and they
    // close (the FIN or RST never arrives). The server frees them on its idle timeout, while a
    // client that stayed well-behaved on the other side of the outage still completes.
    let vanish = faults::spawn_in_netns(&pair.ns_b, "vanish", move || {
        (0..4)
            .map(|i| {
                let mut s = connect(addr);
                s.write_all(&request(700 + i, 1 << 20)[..50_000]).unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    pair.set_b_link(false).unwrap();
    for (i, s) in vanish.into_iter().enumerate() {
        if i % 2 == 0 {
            rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
        }
        drop(s);
    }
    std::thread::sleep(IDLE + Duration::from_millis(300));
    pair.set_b_link(true).unwrap();
    let after =
        faults::spawn_in_netns(&pair.ns_b, "after", move || good(addr, 999, 1 << 20, false))
            .join()
            .expect("a client after the outage");
    expected_ok += 1;
    let (summary, tally, report) = finish(server);
    let fds1 = open_fds();
    eprintln!(
        "veth {clients}; 4 peers vanished mid-request; a client after the outage took {after:.2?}"
    );
    eprintln!("veth {summary}");
    eprintln!(
        "veth: shutdown: {report}; process fds {fds0} -> {fds1}; {:.2?} in all",
        t.elapsed()
    );
    assert_eq!(
        tally.ok, expected_ok,
        "every well-behaved client was served: {summary}"
    );
    assert!(tally.reset >= 16, "{summary}");
    assert!(tally.early_eof >= 250 + 8, "{summary}");
    assert_eq!(
        tally.idle, 6,
        "the slowloris peers and the vanished ones were cut off: {summary}"
    );
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fds1, fds0, "fds leaked: {}", faults::fd_summary());
    let (a, b) = (pair.ns_a.clone(), pair.ns_b.clone());
    drop(pair);
    assert!(
        !VethPair::exists(&a) && !VethPair::exists(&b),
        "the namespaces were removed"
    );
    Ok(())
}

test_kit::main!(
    misbehaving_peers_over_loopback,
    misbehaving_peers_across_veth,
);
