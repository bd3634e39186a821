//! The proxy's handling of half-close and resets, with std peers on both sides.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{connect, echo, echo_upstream, reset, roundtrip, Proxy};
use examples::{Pattern, PROXY_CONN_LIMIT_CHUNKS};

/// The client sends 8 MiB and shuts down its write side; the upstream echoes and closes: the
/// client gets every byte back, then the end of stream.
#[test]
fn half_close_echo() {
    let (up, upstream) = echo_upstream(4);
    let proxy = Proxy::start(up, 2);
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                let data = Pattern::bytes(i + 1, 8 << 20);
                let back = roundtrip(addr, data.clone());
                assert_eq!(back.len(), data.len(), "connection {i}: length");
                assert!(back == data, "connection {i}: bytes differ");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    upstream.join().unwrap();
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 0);
    assert_eq!(
        proxy.counters.to_upstream.load(Ordering::Acquire),
        4 * (8 << 20)
    );
    assert_eq!(
        proxy.counters.to_client.load(Ordering::Acquire),
        4 * (8 << 20)
    );
    proxy.stop_clean();
}

/// Large receive chunks: buffers of 64 KiB and more are sent on with zero-copy send
/// (`SEND_ZC`), their chunks returned only after the kernel's notification.
#[test]
fn echo_with_large_chunks_zero_copy_send() {
    let (up, upstream) = echo_upstream(4);
    let builder = common::rx::builder()
        .chunk_size(256 * 1024)
        .chunks(64)
        .conn_limit(PROXY_CONN_LIMIT_CHUNKS * 256 * 1024);
    let proxy = Proxy::start_with(up, 2, builder);
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                let data = Pattern::bytes(100 + i, 16 << 20);
                assert!(roundtrip(addr, data.clone()) == data, "connection {i}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    upstream.join().unwrap();
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 0);
    proxy.stop_clean();
}

/// A tiny pool (8 chunks of 4 KiB per thread, one chunk per connection) shared by 8 proxied
/// sockets: connections wait for buffers (back-pressure, starvation) but every byte arrives.
#[test]
fn echo_through_a_tiny_pool() {
    let (up, upstream) = echo_upstream(4);
    let builder = common::rx::builder()
        .chunk_size(4096)
        .chunks(8)
        .conn_limit(4096);
    let proxy = Proxy::start_with(up, 1, builder);
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            let addr = proxy.addr;
            std::thread::spawn(move || {
                let data = Pattern::bytes(200 + i, 4 << 20);
                assert!(roundtrip(addr, data.clone()) == data, "connection {i}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    upstream.join().unwrap();
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 0);
    proxy.stop_clean();
}

/// Regression: with the runtime's default per-connection limit (a quarter of the pool), four
/// client connections whose data waits for an upstream that only reads once its answers are
/// read used to hold every chunk of the thread's pool while the upstream connections starved
/// and nothing moved again (a client read timed out in about half the runs of one round; this
/// runs five). Fixed by the runtime's reserve and promised-budget accounting.
#[test]
fn shared_pool_does_not_deadlock_with_default_conn_limit() {
    for round in 0..5 {
        let (up, upstream) = echo_upstream(4);
        let builder = common::rx::builder().chunk_size(64 * 1024).chunks(16);
        let proxy = Proxy::start_with(up, 1, builder);
        let clients: Vec<_> = (0..4u64)
            .map(|i| {
                let addr = proxy.addr;
                std::thread::spawn(move || {
                    let data = Pattern::bytes(300 + i, 32 << 20);
                    let s = connect(addr);
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut r = s.try_clone().unwrap();
                    let w = std::thread::spawn(move || {
                        let mut s = s;
                        let _ = s.write_all(&data);
                        let _ = s.shutdown(Shutdown::Write);
                    });
                    let mut back = Vec::new();
                    let got = r.read_to_end(&mut back);
                    let _ = r.shutdown(Shutdown::Both);
                    let _ = w.join();
                    got.is_ok() && back.len() == 32 << 20
                })
            })
            .collect();
        let ok: Vec<bool> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        assert!(
            ok.iter().all(|&o| o),
            "round {round}: connections stalled (pool exhausted): {ok:?}"
        );
        upstream.join().unwrap();
        proxy.stop_clean();
    }
}

/// The upstream answers only after it has seen the client's end of stream: the end of stream
/// must be passed on while the other direction stays open.
#[test]
fn half_close_answer_after_eof() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let request = Pattern::bytes(11, 6 << 20);
    let answer = Pattern::bytes(12, 5 << 20);
    let (req2, ans2) = (request.clone(), answer.clone());
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("upstream reads the request to its end");
        assert!(
            got == req2,
            "upstream: request differs ({} bytes)",
            got.len()
        );
        s.write_all(&ans2).unwrap();
        // Closed on return: the end of stream goes back through the proxy.
    });
    let proxy = Proxy::start(up, 1);
    let back = roundtrip(proxy.addr, request);
    assert_eq!(back.len(), answer.len());
    assert!(back == answer, "answer differs");
    upstream.join().unwrap();
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 0);
    proxy.stop_clean();
}

/// The upstream sends a greeting and shuts down its write side first; the client reads the
/// greeting to its end and only then sends: the client → upstream direction still works.
#[test]
fn half_close_upstream_first() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let greeting = Pattern::bytes(21, 1 << 20);
    let request = Pattern::bytes(22, 4 << 20);
    let (g2, r2) = (greeting.clone(), request.clone());
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&g2).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("upstream reads the request to its end");
        assert!(got == r2, "upstream: request differs ({} bytes)", got.len());
    });
    let proxy = Proxy::start(up, 1);
    let mut c = connect(proxy.addr);
    let mut got = Vec::new();
    c.read_to_end(&mut got)
        .expect("the greeting, then the end of stream");
    assert!(got == greeting, "greeting differs");
    c.write_all(&request).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    upstream.join().unwrap();
    // Both directions have ended: the proxy closes the client.
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 0);
    proxy.stop_clean();
}

/// Reads until the end of stream or an error; panics if neither comes within `limit`. Returns
/// how the stream ended.
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> &'static str {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return "end of stream",
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < deadline,
                    "the proxy did not close the connection within {limit:?}"
                );
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return "error",
        }
    }
}

/// Writes until the write fails (the proxy closed the connection); panics if it does not
/// within `limit`.
fn write_until_closed(mut s: std::net::TcpStream, limit: Duration) {
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let chunk = Pattern::bytes(5, 64 * 1024);
    loop {
        match s.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
        assert!(
            Instant::now() < deadline,
            "writes still succeed {limit:?} after the other side was reset"
        );
    }
}

/// The upstream resets mid-stream while the client is still sending and receiving: the proxy
/// closes the client side, does not crash, and serves the next connection.
#[test]
fn upstream_reset_mid_stream() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let (reset_done_tx, reset_done) = mpsc::channel();
    let upstream = std::thread::spawn(move || {
        // First connection: read some, send some, then reset.
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&Pattern::bytes(3, 256 * 1024)).unwrap();
        reset(s);
        reset_done_tx.send(()).unwrap();
        // Second connection: an ordinary echo.
        let (s, _) = l.accept().unwrap();
        echo(s);
    });
    let proxy = Proxy::start(up, 1);

    let c = connect(proxy.addr);
    let w = {
        let c = c.try_clone().unwrap();
        std::thread::spawn(move || write_until_closed(c, Duration::from_secs(20)))
    };
    let mut r = c;
    let how = read_until_closed(&mut r, Duration::from_secs(20));
    eprintln!("client side after the upstream reset: {how}");
    w.join()
        .expect("the client's writes fail once the proxy closed it");
    reset_done.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        proxy.wait_idle(Duration::from_secs(10)),
        "connection still open in the proxy"
    );
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 1);

    // The proxy still works.
    let data = Pattern::bytes(4, 2 << 20);
    assert!(
        roundtrip(proxy.addr, data.clone()) == data,
        "echo after the reset"
    );
    upstream.join().unwrap();
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 1);
    proxy.stop_clean();
}

/// The client resets mid-stream: the proxy closes the upstream side (which sees its stream
/// end), does not crash, and serves the next connection.
#[test]
fn client_reset_mid_stream() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let (closed_tx, closed) = mpsc::channel();
    let upstream = std::thread::spawn(move || {
        // First connection: keep sending to the client until the proxy closes us.
        let (s, _) = l.accept().unwrap();
        let mut r = s.try_clone().unwrap();
        let w = std::thread::spawn(move || write_until_closed(s, Duration::from_secs(20)));
        let how = read_until_closed(&mut r, Duration::from_secs(20));
        w.join().unwrap();
        closed_tx.send(how).unwrap();
        // Second connection: an ordinary echo.
        let (s, _) = l.accept().unwrap();
        echo(s);
    });
    let proxy = Proxy::start(up, 2);

    let mut c = connect(proxy.addr);
    c.write_all(&Pattern::bytes(6, 1 << 20)).unwrap();
    let mut buf = vec![0u8; 512 * 1024];
    c.read_exact(&mut buf).unwrap();
    reset(c);
    let how = closed
        .recv_timeout(Duration::from_secs(30))
        .expect("upstream side closed by the proxy");
    eprintln!("upstream side after the client reset: {how}");
    assert!(
        proxy.wait_idle(Duration::from_secs(10)),
        "connection still open in the proxy"
    );
    assert_eq!(proxy.counters.errors.load(Ordering::Acquire), 1);

    let data = Pattern::bytes(9, 2 << 20);
    assert!(
        roundtrip(proxy.addr, data.clone()) == data,
        "echo after the reset"
    );
    upstream.join().unwrap();
    proxy.stop_clean();
}

/// The upstream is down: the client is closed at once, the failure is counted, and nothing
/// leaks.
#[test]
fn upstream_down_closes_client() {
    // A port nobody listens on (bound, then closed).
    let up = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(up, 1);
    for _ in 0..3 {
        let mut c = connect(proxy.addr);
        let how = read_until_closed(&mut c, Duration::from_secs(10));
        assert_eq!(how, "end of stream");
    }
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    assert_eq!(proxy.counters.connect_failures.load(Ordering::Acquire), 3);
    proxy.stop_clean();
}
