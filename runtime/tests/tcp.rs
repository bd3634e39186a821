//! The runtime's TCP paths against the real kernel over loopback: receives dropped midway,
//! fairness between connections, the rearm after `-ENOBUFS`, coalescing, accept, forwarding
//! and receive errors, with their statistics.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{pattern, std_sender, PollN};
use zcrx::net::TcpListener;
use zcrx::time::{sleep, timeout};
use zcrx::{spawn, yield_now};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Dropping a receive future at random points and receiving again delivers every byte exactly
/// once and in order.
fn dropped_recv_futures_lose_nothing() {
    let rt = common::builder()
        .chunks(32)
        .chunk_size(4096)
        .build()
        .unwrap();
    let data = pattern(42, 8 << 20);
    let (_, tx, l) = std_sender(data.clone());
    let (drops, got) = rt.block_on(async move {
        common::rx::assert_backend();
        let stream = zcrx::net::TcpStream::from_std(l.accept().unwrap().0).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut got = Vec::with_capacity(data.len());
        let mut drops = 0u64;
        loop {
            let attempt = PollN {
                fut: Box::pin(stream.recv()),
                left: 1 + (rng.next() % 3) as u32,
            };
            match attempt.await {
                None => {
                    drops += 1;
                    if rng.next() % 4 == 0 {
                        sleep(Duration::from_micros(rng.next() % 300)).await;
                    } else {
                        yield_now().await;
                    }
                }
                Some(Ok(Some(buf))) => got.extend_from_slice(&buf),
                Some(Ok(None)) => break,
                Some(Err(e)) => panic!("{e}"),
            }
        }
        (drops, got)
    });
    tx.join().unwrap();
    assert!(drops > 100, "the test dropped only {drops} receive futures");
    assert_eq!(got.len(), 8 << 20);
    assert!(
        got == pattern(42, 8 << 20),
        "bytes out of order or duplicated"
    );
}

/// A tiny pool and one connection that holds every buffer it gets: the others still complete.
fn hog_connection_cannot_starve_the_others() {
    let rt = common::builder()
        .chunks(16)
        .chunk_size(4096)
        .build()
        .unwrap();
    let stats = rt.block_on(async {
        common::rx::assert_backend();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The hog: connects first, sends 4 MiB, never has its buffers dropped.
        let hog_client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let _ = s.write_all(&pattern(9, 4 << 20));
        });
        let (hog, _) = listener.accept().await.unwrap();
        let hog_task = spawn(async move {
            let mut held = vec![];
            while let Ok(Some(b)) = hog.recv().await {
                held.push(b);
            }
            held.len()
        });
        sleep(Duration::from_millis(50)).await;
        // Four well-behaved connections, 1 MiB each, verified.
        let clients: Vec<_> = (0..4u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(&pattern(100 + i, 1 << 20)).unwrap();
                })
            })
            .collect();
        let mut workers = vec![];
        for _ in 0..4 {
            let (s, _) = listener.accept().await.unwrap();
            workers.push(spawn(async move {
                let mut got = Vec::new();
                while let Some(b) = s.recv().await.unwrap() {
                    got.extend_from_slice(&b);
                }
                got
            }));
        }
        let mut outputs = vec![];
        for w in workers {
            outputs.push(
                timeout(Duration::from_secs(30), w)
                    .await
                    .expect("a connection starved")
                    .unwrap(),
            );
        }
        outputs.sort_by_key(|o| o.first().copied());
        let mut expected: Vec<Vec<u8>> = (0..4u64).map(|i| pattern(100 + i, 1 << 20)).collect();
        expected.sort_by_key(|o| o.first().copied());
        assert!(
            outputs == expected,
            "every well-behaved connection got its bytes"
        );
        for c in clients {
            c.join().unwrap();
        }
        hog_task.abort();
        let _ = hog_task.await;
        drop(hog_client); // it stays blocked in write until the hog socket closes
        zcrx::rx_snapshot().unwrap()
    });
    assert!(
        rt.stats().backpressure_pauses > 0,
        "the hog was paused: {:?}",
        rt.stats()
    );
    assert_eq!(stats.counts.total(), 16);
}

/// `rx_stats` gives the receive pool's own counters, for the backend in use, and they follow
/// real traffic: every byte received is one delivery's, the buffers dropped go back to the
/// kernel, the counts agree with the driver's, each thread has its own, and the shutdown
/// report keeps the last ones. Under zcrx on Linux 7.2+ the kernel counts what it copied.
fn rx_stats_follow_the_traffic() {
    use common::rx::Rx;
    use zcrx::RxStats;
    const LEN: usize = 1 << 20;
    let rt = common::builder()
        .chunks(32)
        .chunk_size(16 * 1024)
        .build()
        .unwrap();
    let fresh = rt.rx_stats().expect("a live runtime has a pool");
    assert_eq!(
        (fresh.deliveries(), fresh.bytes(), fresh.no_buffers()),
        (0, 0, 0),
        "{fresh:?}"
    );
    match (common::rx::rx(), fresh) {
        (Rx::BufRing, RxStats::BufRing(_)) | (Rx::ZcrxNodev, RxStats::Zcrx(_)) => {}
        (want, got) => panic!("asked for {want:?}, got {got:?}"),
    }
    let data = pattern(31, LEN);
    let (_, tx, l) = std_sender(data.clone());
    let (during, completions, driver) = rt.block_on(async move {
        common::rx::assert_backend();
        let stream = zcrx::net::TcpStream::from_std(l.accept().unwrap().0).unwrap();
        let mut got = Vec::with_capacity(LEN);
        let mut completions = 0u64;
        // Each buffer is dropped as soon as it is copied out.
        while let Some(b) = stream.recv().await.unwrap() {
            got.extend_from_slice(&b);
            completions += 1;
        }
        assert!(got == data, "every byte, in order");
        // The next turns publish what came back.
        for _ in 0..3 {
            yield_now().await;
        }
        (zcrx::rx_stats().unwrap(), completions, zcrx::stats())
    });
    tx.join().unwrap();
    eprintln!("{during:?}");
    assert_eq!(during.bytes(), LEN as u64, "{during:?}");
    assert_eq!(
        during.deliveries(),
        completions,
        "one per buffer: {during:?}"
    );
    assert_eq!(
        during.no_buffers(),
        driver.no_buffers,
        "{during:?} {driver:?}"
    );
    assert!(during.publishes() >= 1, "{during:?}");
    match during {
        RxStats::BufRing(s) => {
            // Outside incremental mode every delivery is a chunk of its own, and all of them
            // were dropped and collected by the flushes since.
            assert_eq!(s.republished, s.deliveries, "{s:?}");
            assert!(during.bufring().is_some() && during.zcrx().is_none());
        }
        RxStats::Zcrx(s) => {
            // A page may carry several deliveries: fewer pages than deliveries went back.
            assert!(
                s.returned_chunks > 0 && s.returned_chunks <= s.deliveries,
                "{s:?}"
            );
            assert!(s.rqes >= s.returned_chunks, "{s:?}");
            assert_eq!((s.refused, s.ctrl_flush_errors), (0, 0), "{s:?}");
            match s.kernel_copies() {
                Some((copies, bytes)) => {
                    // Without a device the kernel copies everything; 7.3 counts per skb
                    // fragment, and not the bytes of an skb's linear part.
                    assert!(copies >= 1 && copies <= s.deliveries, "{s:?}");
                    assert!(bytes > 0 && bytes <= LEN as u64, "{s:?}");
                    assert_eq!(s.copy_events, 1, "posted once, never re-armed: {s:?}");
                }
                None => eprintln!("the kernel keeps no zcrx copy statistics (7.2+) here"),
            }
        }
        other => panic!("a backend the test does not know: {other:?}"),
    }
    let after = rt.rx_stats().unwrap();
    assert_eq!(after.bytes(), during.bytes(), "no traffic since: {after:?}");
    // The report keeps the last counters (the teardown delivers nothing).
    let last = rt.shutdown().rx_stats;
    assert_eq!(
        (last.bytes(), last.deliveries()),
        (after.bytes(), after.deliveries()),
        "{last:?}"
    );

    // Per thread: the thread that received counts the bytes, the other nothing.
    let data = pattern(32, LEN);
    let (_, tx, l) = std_sender(data);
    let l = std::sync::Mutex::new(Some(l));
    let outs = common::builder()
        .threads(2)
        .chunks(32)
        .chunk_size(16 * 1024)
        .run(move |i| {
            let l = if i == 0 {
                l.lock().unwrap().take()
            } else {
                None
            };
            async move {
                if let Some(l) = l {
                    let stream = zcrx::net::TcpStream::from_std(l.accept().unwrap().0).unwrap();
                    while stream.recv().await.unwrap().is_some() {}
                }
                zcrx::rx_stats().unwrap()
            }
        })
        .unwrap();
    tx.join().unwrap();
    assert_eq!(outs[0].bytes(), LEN as u64, "{outs:?}");
    assert_eq!(outs[1].bytes(), 0, "{outs:?}");
}

/// A tiny pool and a tiny completion queue under several streams: receives end (`-ENOBUFS`,
/// CQ overflow) and are re-armed by the runtime; every byte arrives once, in order.
fn rearm_after_enobufs_and_small_cq_loses_nothing() {
    let rt = common::builder()
        .chunks(8)
        .chunk_size(4096)
        .sq_entries(8)
        .cq_entries(16)
        .build()
        .unwrap();
    rt.block_on(async {
        common::rx::assert_backend();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let senders: Vec<_> = (0..6u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(&pattern(1000 + i, 4 << 20)).unwrap();
                })
            })
            .collect();
        let mut jobs = vec![];
        for _ in 0..6 {
            let (s, _) = l.accept().await.unwrap();
            jobs.push(spawn(async move {
                let mut got = Vec::with_capacity(4 << 20);
                while let Some(b) = s.recv().await.unwrap() {
                    got.extend_from_slice(&b);
                    if got.len() % 3 == 0 {
                        yield_now().await; // a slow-ish consumer
                    }
                }
                got
            }));
        }
        let mut outs = vec![];
        for j in jobs {
            outs.push(j.await.unwrap());
        }
        for s in senders {
            s.join().unwrap();
        }
        let mut expected: Vec<Vec<u8>> = (0..6u64).map(|i| pattern(1000 + i, 4 << 20)).collect();
        outs.sort_by_key(|o| o[..8].to_vec());
        expected.sort_by_key(|o| o[..8].to_vec());
        assert!(outs == expected, "every stream intact and in order");
    });
    let st = rt.stats();
    eprintln!("{st:?}");
    assert_eq!(rt.rx_stats().unwrap().no_buffers(), st.no_buffers);
    assert!(
        st.no_buffers + st.cq_overflows > 0,
        "the test exercised re-arming: {st:?}"
    );
    assert!(st.recv_arms > 6);
}

/// Completion coalescing: bulk receives coalesce the next wait, small request/response traffic
/// never does (a long coalescing delay would otherwise show in every round trip), and a bulk
/// transfer through a tiny pool never stalls on it (the loop never awaits more than the armed
/// receives can still deliver).
fn coalescing_applies_to_bulk_only_and_never_stalls() {
    // A delay far longer than any round trip: if small receives coalesced, 200 round trips
    // would take 200 x 100 ms.
    let delay = Duration::from_millis(100);
    let rt = common::builder().coalesce(delay, 32).build().unwrap();
    let min_wait = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            let t0 = Instant::now();
            let mut back = [0u8; 100];
            for i in 0..200u8 {
                s.write_all(&[i; 100]).unwrap();
                s.read_exact(&mut back).unwrap();
                assert_eq!(back, [i; 100]);
            }
            t0.elapsed()
        });
        let (s, _) = l.accept().await.unwrap();
        while let Some(b) = s.recv().await.unwrap() {
            s.send_buf(b).await.unwrap();
        }
        let took = client.join().unwrap();
        eprintln!("200 round trips of 100 bytes with a 100 ms coalescing delay: {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "small receives coalesced: {took:?}"
        );
        let before = zcrx::stats().coalesced_waits;
        assert_eq!(before, 0, "request/response traffic never coalesces");
        before
    });
    assert_eq!(min_wait, 0);

    // Bulk through a pool of 8 chunks with a per-connection limit of 4: at most 2 completions
    // are awaited per wait, so the data keeps flowing.
    let rt = common::builder()
        .chunks(8)
        .chunk_size(16 * 1024)
        .conn_limit(4 * 16 * 1024)
        .coalesce(Duration::from_millis(20), 64)
        .build()
        .unwrap();
    let data = pattern(77, 32 << 20);
    let expected = data.clone();
    rt.block_on(async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&data).unwrap();
        });
        let (s, _) = l.accept().await.unwrap();
        let t0 = Instant::now();
        let mut got = Vec::with_capacity(32 << 20);
        while let Some(b) = s.recv().await.unwrap() {
            got.extend_from_slice(&b);
        }
        sender.join().unwrap();
        let took = t0.elapsed();
        assert!(got == expected, "every byte, in order");
        let st = zcrx::stats();
        eprintln!("32 MiB through 8 x 16 KiB chunks in {took:?}: {st:?}");
        // 32 MiB is 2048 chunks, 512 budgets of 4: waiting the full 20 ms for each is 10 s.
        assert!(
            took < Duration::from_secs(5),
            "coalescing stalled the flow: {took:?}"
        );
        if has_min_wait() {
            assert!(st.coalesced_waits > 0, "bulk receives coalesced: {st:?}");
        }
    });
}

/// Whether this kernel supports `min_wait` (`IORING_FEAT_MIN_TIMEOUT`, Linux 6.13+).
fn has_min_wait() -> bool {
    let r = zcrx::ifq::io_uring::IoUring::new(2)
        .unwrap()
        .params()
        .is_feature_min_timeout();
    if !r {
        eprintln!("this kernel has no IORING_FEAT_MIN_TIMEOUT: coalescing is off, not asserted");
    }
    r
}

/// A client that resets its connection before the server accepts it does not make `accept`
/// fail (its address is gone by then): it is skipped and the next client is accepted.
fn accept_skips_connections_reset_before_accept() {
    let rt = common::builder().build().unwrap();
    rt.block_on(async {
        common::rx::assert_backend();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for _ in 0..3 {
            let s = std::net::TcpStream::connect(addr).unwrap();
            rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
            drop(s); // RST while the connection waits in the accept queue
        }
        std::thread::sleep(Duration::from_millis(50));
        let good = std::net::TcpStream::connect(addr).unwrap();
        let (s, peer) = timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("accept returns")
            .expect("accept skips the reset connections");
        assert_eq!(peer, good.local_addr().unwrap());
        (&good).write_all(b"hello").unwrap();
        let b = s.recv().await.unwrap().unwrap();
        assert_eq!(&b[..], b"hello");
    });
}

/// When bulk data stops, the loop does not keep waiting for a batch that will not come: a small
/// request that arrives on another connection once a stream has gone quiet is answered at
/// once, not when the coalescing wait's timeout (up to a second, or the next timer) ends. No
/// timer runs in the server, so nothing else would wake it.
fn a_request_after_bulk_data_is_answered_at_once() {
    const BULK: usize = 64 << 20;
    let rt = common::builder().build().unwrap();
    let (rtts, stats) = rt.block_on(async {
        common::rx::assert_backend();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (quiet_tx, quiet_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut bulk = std::net::TcpStream::connect(addr).unwrap();
            let mut req = std::net::TcpStream::connect(addr).unwrap();
            req.set_nodelay(true).unwrap();
            req.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rtts = Vec::new();
            for _ in 0..5 {
                let buf = vec![0x5au8; 256 * 1024];
                for _ in 0..BULK / buf.len() {
                    bulk.write_all(&buf).unwrap();
                }
                // The server has it all (it says so), and the stream stays open but quiet.
                quiet_rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(20));
                let t = Instant::now();
                req.write_all(&[1u8; 100]).unwrap();
                let mut back = [0u8; 100];
                req.read_exact(&mut back).unwrap();
                rtts.push(t.elapsed());
            }
            rtts
        });
        let (a, _) = l.accept().await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        // Connected in this order, accepted in this order: `a` carries the bulk, `b` the
        // requests.
        let echo = spawn(async move {
            while let Some(m) = b.recv().await.unwrap() {
                b.send_buf(m).await.unwrap();
            }
        });
        let mut got = 0usize;
        while let Some(buf) = a.recv().await.unwrap() {
            got += buf.len();
            if got % BULK == 0 {
                quiet_tx.send(()).unwrap();
            }
        }
        let rtts = client.join().unwrap();
        echo.await.unwrap();
        (rtts, zcrx::stats())
    });
    eprintln!("round trips after 64 MiB of bulk each: {rtts:?}; {stats:?}");
    let worst = rtts.iter().max().unwrap();
    assert!(
        *worst < Duration::from_millis(200),
        "a request waited {worst:?} behind a coalescing wait"
    );
}

/// `send_bufs` forwards what arrived together in one request, in order: 4 MiB from a paced std
/// sender through the runtime (each received buffer and those queued behind it sent as one
/// `SENDMSG`) arrive byte-exact.
fn send_bufs_forwards_what_arrived_together_in_order() {
    const LEN: usize = 4 << 20;
    let rt = common::builder()
        .chunks(64)
        .chunk_size(16 * 1024)
        .build()
        .unwrap();
    let data = pattern(0xB0F5, LEN);
    let (_, sender, l_in) = std_sender(data.clone());
    let l_out = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out_addr = l_out.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l_out.accept().unwrap();
        let mut got = Vec::with_capacity(LEN);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    let (batches, most) = rt.block_on(async move {
        common::rx::assert_backend();
        let from = zcrx::net::TcpStream::from_std(l_in.accept().unwrap().0).unwrap();
        let to = zcrx::net::TcpStream::connect(out_addr).await.unwrap();
        let (mut batches, mut most) = (0u64, 0usize);
        while let Some(b) = from.recv().await.unwrap() {
            let mut bufs = vec![b];
            while let Some(b) = from.try_recv_buf() {
                bufs.push(b);
            }
            batches += u64::from(bufs.len() > 1);
            most = most.max(bufs.len());
            to.send_bufs(bufs).await.unwrap();
        }
        // Nothing to send is nothing to do.
        to.send_bufs(Vec::new()).await.unwrap();
        to.shutdown(std::net::Shutdown::Write).await.unwrap();
        (batches, most)
    });
    sender.join().unwrap();
    let got = reader.join().unwrap();
    eprintln!("send_bufs: {batches} sends of several buffers, at most {most} in one");
    assert_eq!(got.len(), LEN);
    assert!(got == data, "every byte once, in order");
}

/// A receive error is reported once; the connection is then at its end: the next `recv` (and
/// a trait read) returns `None` at once instead of waiting for a receive nobody re-armed.
fn after_a_receive_error_the_stream_is_at_its_end() {
    let rt = common::builder().build().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&[1u8; 1000]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            // Closing with SO_LINGER 0 sends a reset.
            rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
        });
        let (stream, _) = listener.accept().await.unwrap();
        peer.join().unwrap();
        let mut got = 0;
        let err = loop {
            match timeout(Duration::from_secs(5), stream.recv()).await {
                Ok(Ok(Some(buf))) => got += buf.len(),
                Ok(Ok(None)) => panic!("end of stream before the reset"),
                Ok(Err(e)) => break e,
                Err(_) => panic!("no reset within 5 s"),
            }
        };
        assert_eq!(got, 1000);
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        for _ in 0..2 {
            let next = timeout(Duration::from_secs(2), stream.recv())
                .await
                .expect("recv after the error must not wait");
            assert!(matches!(next, Ok(None)), "{next:?}");
        }
        let mut buf = [0u8; 16];
        let n = timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("read after the error must not wait")
            .unwrap();
        assert_eq!(n, 0);
    });
}

test_kit::main!(
    dropped_recv_futures_lose_nothing,
    hog_connection_cannot_starve_the_others,
    rx_stats_follow_the_traffic,
    rearm_after_enobufs_and_small_cq_loses_nothing,
    coalescing_applies_to_bulk_only_and_never_stalls,
    accept_skips_connections_reset_before_accept,
    a_request_after_bulk_data_is_answered_at_once,
    send_bufs_forwards_what_arrived_together_in_order,
    after_a_receive_error_the_stream_is_at_its_end,
);
