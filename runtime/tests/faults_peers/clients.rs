//! The clients: well-behaved ones that verify their answers, and the misbehaving mix.

use super::*;

pub(crate) fn request(seed: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + len as usize);
    v.extend_from_slice(&seed.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.resize(HEADER + len as usize, 0);
    fill(seed, 0, &mut v[HEADER..]);
    v
}

pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads the server's answer and checks it.
pub(crate) fn answer(s: &mut TcpStream, seed: u64, len: u64) {
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
pub(crate) fn good(addr: SocketAddr, seed: u64, len: u64, half_close: bool) -> Duration {
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
pub(crate) fn reset_mid_stream(addr: SocketAddr, seed: u64, len: u64, sent: usize) {
    let mut s = connect(addr);
    s.write_all(&request(seed, len)[..sent]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Half-closes after part of the request: the server sees an early EOF and closes.
pub(crate) fn truncated_half_close(addr: SocketAddr, seed: u64) {
    let mut s = connect(addr);
    s.write_all(&request(seed, 1 << 20)[..10_000]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to a truncated request");
}

/// Sends the header, then the body one byte every 100 ms; reads the answer.
pub(crate) fn trickle(addr: SocketAddr, seed: u64, len: u64) -> Duration {
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
pub(crate) fn slowloris(addr: SocketAddr, seed: u64) -> Duration {
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
pub(crate) fn connect_and_vanish(addr: SocketAddr, reset: bool) {
    let s = connect(addr);
    if reset {
        rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    }
}

/// `n` connections opened and closed as fast as possible from `threads` threads; a third send a
/// few bytes first, half close with a reset.
pub(crate) fn burst(addr: SocketAddr, n: u64, threads: u64) -> Duration {
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

pub(crate) fn spawn_named<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    match ns {
        Some(ns) => faults::spawn_in_netns(ns, "client", f),
        None => std::thread::spawn(f),
    }
}

pub(crate) struct Mix {
    pub(crate) goods: u64,
    pub(crate) good_len: u64,
    pub(crate) small: u64,
    pub(crate) burst: u64,
}

/// Runs every kind of client against `addr` (from inside `ns` if given); returns the figures.
pub(crate) fn misbehave(addr: SocketAddr, ns: Option<&str>, mix: &Mix) -> (u64, String) {
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
