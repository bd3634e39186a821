//! Runtime behaviour against the real kernel over loopback.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};

use common::{echo_roundtrip, pattern};
use zcrx::net::TcpListener;
use zcrx::time::{interval, sleep, timeout};
use zcrx::{spawn, yield_now, RxBuf};

/// Polls the inner future at most `n` times; then gives up and drops it.
struct PollN<F> {
    fut: Pin<Box<F>>,
    left: u32,
}

impl<F: Future> Future for PollN<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        self.left -= 1;
        if self.left == 0 {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn std_sender(
    data: Vec<u8>,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<()>,
    std::net::TcpListener,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // Paced, so that receives are often pending and dropping them means something.
        for (i, piece) in data.chunks(7919).enumerate() {
            s.write_all(piece).unwrap();
            if i % 4 == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });
    (addr, t, l)
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

/// A task that panics while holding RxBufs: the panic reaches its JoinHandle, the chunks come
/// back, and the runtime keeps serving.
fn panicking_task_returns_its_chunks() {
    let rt = common::builder()
        .chunks(16)
        .chunk_size(4096)
        .build()
        .unwrap();
    rt.block_on(async {
        common::rx::assert_backend();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&pattern(1, 64 * 1024)).unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        });
        let (stream, _) = listener.accept().await.unwrap();
        let job = spawn(async move {
            let mut held: Vec<RxBuf> = vec![];
            while held.len() < 3 {
                held.push(stream.recv().await.unwrap().unwrap());
            }
            let owner = stream.owner();
            let snap = zcrx::rx_snapshot().unwrap();
            assert!(snap
                .owners
                .iter()
                .any(|(o, s)| *o == owner && s.chunks >= 3));
            panic!("boom while holding {} buffers", held.len());
        });
        let err = job.await.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(err.panic_message(), Some("boom while holding 3 buffers"));
        sleep(Duration::from_millis(20)).await;
        let snap = zcrx::rx_snapshot().unwrap();
        assert_eq!(
            snap.counts.user, 0,
            "chunks of the panicked task came back: {snap:?}"
        );
        assert_eq!(snap.held_bytes, 0);
        client.join().unwrap();
        // Still serving.
        let (echo_addr, done) = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let a = l.local_addr().unwrap();
            let t = spawn(async move {
                let (s, _) = l.accept().await.unwrap();
                while let Ok(Some(b)) = s.recv().await {
                    s.send_buf(b).await.unwrap();
                }
            });
            (a, t)
        };
        let back = std::thread::spawn(move || echo_roundtrip(echo_addr, pattern(5, 1 << 20)));
        while !back.is_finished() {
            sleep(Duration::from_millis(1)).await;
        }
        assert!(back.join().unwrap() == pattern(5, 1 << 20));
        done.await.unwrap();
    });
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

/// A task that is always ready does not stop I/O or other tasks.
fn spinning_task_does_not_starve_io() {
    let rt = common::builder().build().unwrap();
    rt.block_on(async {
        common::rx::assert_backend();
        let spinner = spawn(async {
            loop {
                yield_now().await;
            }
        });
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            while let Ok(Some(b)) = s.recv().await {
                s.send_buf(b).await.unwrap();
            }
        });
        let client = std::thread::spawn(move || echo_roundtrip(addr, pattern(3, 2 << 20)));
        let start = Instant::now();
        while !client.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "echo stalled behind the spinner"
            );
            yield_now().await;
        }
        assert!(client.join().unwrap() == pattern(3, 2 << 20));
        server.await.unwrap();
        spinner.abort();
        assert!(spinner.await.unwrap_err().is_cancelled());
    });
}

/// Shutdown while the application still holds buffers (here, on another thread): reported,
/// no crash, the bytes stay valid until dropped.
fn shutdown_reports_held_buffers() {
    let rt = common::builder()
        .chunks(32)
        .chunk_size(4096)
        .shutdown_grace(Duration::from_millis(100))
        .build()
        .unwrap();
    let data = pattern(77, 256 * 1024);
    let (_, tx, l) = std_sender(data.clone());
    let (held_tx, held_rx) = std::sync::mpsc::channel::<Vec<RxBuf>>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let expected_len = rt.block_on(async move {
        common::rx::assert_backend();
        let stream = zcrx::net::TcpStream::from_std(l.accept().unwrap().0).unwrap();
        let mut held = vec![];
        let mut len = 0;
        while held.len() < 4 {
            let b = stream.recv().await.unwrap().unwrap();
            len += b.len();
            held.push(b);
        }
        held_tx.send(held).unwrap();
        // A task still running at shutdown gets cancelled.
        spawn(async move {
            let _keep = stream;
            sleep(Duration::from_secs(3600)).await;
        });
        len
    });
    let holder = std::thread::spawn(move || {
        let held = held_rx.recv().unwrap();
        release_rx.recv().unwrap();
        let bytes: Vec<u8> = held.iter().flat_map(|b| b.iter().copied()).collect();
        bytes
    });
    let report = rt.shutdown();
    eprintln!("{report}");
    assert_eq!(report.tasks_cancelled, 1);
    assert!(
        report.held.held_chunks >= 1 && report.held.held_chunks <= 4,
        "{report:?}"
    );
    assert_eq!(report.held.held_bytes as usize, expected_len);
    assert_eq!(report.held.owners.len(), 1);
    assert!(report.to_string().contains("still holds"));
    release_tx.send(()).unwrap();
    let bytes = holder.join().unwrap();
    assert!(
        bytes[..] == data[..bytes.len()],
        "held bytes intact after shutdown"
    );
    drop(tx);
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

/// Outside a runtime the calls that make a listener or a stream fail with an error that says
/// so; `spawn`, which has no error to return, panics saying the same. After
/// `block_on` returns, its thread is outside again.
fn outside_a_runtime_net_calls_fail_and_spawn_panics() {
    use zcrx::net::TcpStream;
    fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
        std::pin::pin!(fut).poll(&mut Context::from_waker(&waker))
    }
    fn is_outside(e: std::io::Error) {
        assert!(
            e.to_string().contains("not inside a zcrx runtime")
                && e.to_string().contains("Runtime::block_on"),
            "{e}"
        );
    }
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let std_stream = std::net::TcpStream::connect(addr).unwrap();
    let (accepted, _) = std_listener.accept().unwrap();
    let check = || {
        is_outside(TcpListener::bind("127.0.0.1:0").unwrap_err());
        is_outside(TcpListener::bind_reuseport("127.0.0.1:0").unwrap_err());
        match poll_once(TcpStream::connect(addr)) {
            Poll::Ready(Err(e)) => is_outside(e),
            other => panic!(
                "connect outside a runtime: {:?}",
                other.map(|r| r.map(|_| ()))
            ),
        }
    };
    check();
    is_outside(TcpListener::from_std(std_listener).unwrap_err());
    is_outside(TcpStream::from_std(accepted).unwrap_err());
    let panic = std::panic::catch_unwind(|| zcrx::spawn(async {})).unwrap_err();
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(msg.contains("not inside a zcrx runtime"), "{msg}");

    // Inside, the same calls work; once `block_on` returned they fail again.
    let rt = common::builder()
        .chunks(16)
        .chunk_size(4096)
        .build()
        .unwrap();
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let (c, s) = (
            TcpStream::connect(a).await.unwrap(),
            l.accept().await.unwrap().0,
        );
        c.send_all(b"in").await.unwrap();
        assert_eq!(&s.recv().await.unwrap().unwrap()[..], b"in");
    });
    check();
    drop(std_stream);
}

fn join_handles_and_abort() {
    let rt = common::builder().build().unwrap();
    rt.block_on(async {
        assert_eq!(spawn(async { 40 + 2 }).await.unwrap(), 42);
        let sleeper = spawn(sleep(Duration::from_secs(3600)));
        yield_now().await;
        assert!(!sleeper.is_finished());
        sleeper.abort();
        assert!(sleeper.await.unwrap_err().is_cancelled());
        // Detached tasks still run.
        let (tx, rx) = std::sync::mpsc::channel();
        drop(spawn(async move { tx.send(7).unwrap() }));
        yield_now().await;
        yield_now().await;
        assert_eq!(rx.try_recv().unwrap(), 7);
        // A waker used from another thread wakes the loop.
        let (wtx, wrx) = std::sync::mpsc::channel::<std::task::Waker>();
        let t = std::thread::spawn(move || {
            let w = wrx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            w.wake();
        });
        let mut sent = false;
        std::future::poll_fn(|cx| {
            if sent {
                Poll::Ready(())
            } else {
                sent = true;
                wtx.send(cx.waker().clone()).unwrap();
                Poll::Pending
            }
        })
        .await;
        t.join().unwrap();
    });
}

fn timers() {
    let rt = common::builder().build().unwrap();
    rt.block_on(async {
        let t = Instant::now();
        sleep(Duration::from_millis(50)).await;
        assert!(t.elapsed() >= Duration::from_millis(50));
        let r = timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
        assert!(r.is_err());
        assert_eq!(timeout(Duration::from_secs(5), async { 1 }).await, Ok(1));
        let mut iv = interval(Duration::from_millis(10));
        let t0 = iv.tick().await;
        let t1 = iv.tick().await;
        let t2 = iv.tick().await;
        assert_eq!(t1 - t0, Duration::from_millis(10));
        assert_eq!(t2 - t1, Duration::from_millis(10));
        assert!(Instant::now() >= t2);
    });
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

/// `threads(n)` runs n runtimes, thread i pinned to CPU i.
fn threads_are_pinned() {
    let cpus: Vec<usize> = {
        let set = rustix::thread::sched_getaffinity(None).unwrap();
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect()
    };
    let out = common::builder()
        .threads(2)
        .chunks(16)
        .run(|i| async move {
            let set = rustix::thread::sched_getaffinity(None).unwrap();
            let mine: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&c| set.is_set(c))
                .collect();
            (i, mine)
        })
        .unwrap();
    for (i, mine) in out {
        assert_eq!(mine, vec![cpus[i % cpus.len()]], "thread {i}");
    }
}

/// Backend choice on a machine without a zcrx-capable NIC: zcrx demanded on `lo` fails at
/// start-up with the kernel's reason; auto mode falls back to the buffer ring. zcrx without a
/// device runs where the kernel has it, and is refused or fallen back from elsewhere.
fn zcrx_backend_selection() -> Outcome {
    if !rustix::process::geteuid().is_root() {
        return Err(skip("needs root (zcrx registration needs CAP_NET_ADMIN)"));
    }
    let e = zcrx::Builder::new()
        .rx_backend(zcrx::RxBackend::Zcrx)
        .zcrx_queue("lo", 0)
        .chunks(16)
        .build()
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("queue-management") && msg.contains("EOPNOTSUPP"),
        "{msg}"
    );
    let rt = zcrx::Builder::new()
        .zcrx_queue("lo", 0)
        .chunks(16)
        .build()
        .unwrap();
    assert_eq!(rt.rx_backend(), "buffer ring");
    let e = zcrx::Builder::new()
        .rx_backend(zcrx::RxBackend::Zcrx)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("zcrx_queue"), "{e}");
    // zcrx without a device: from Linux 7.1 both modes run it; before, zcrx demanded fails with
    // the reason and auto mode falls back.
    let demanded = zcrx::Builder::new()
        .rx_backend(zcrx::RxBackend::Zcrx)
        .zcrx_nodev()
        .chunks(16)
        .build();
    let auto = zcrx::Builder::new()
        .zcrx_nodev()
        .chunks(16)
        .build()
        .unwrap();
    let has_nodev = zcrx::ifq::probe::KernelVersion::current().is_some_and(|v| v.at_least(7, 1));
    match demanded {
        Ok(rt) => {
            assert!(has_nodev, "zcrx without a device before Linux 7.1?");
            assert_eq!(rt.rx_backend(), "zcrx without a device (copy)");
            assert_eq!(auto.rx_backend(), "zcrx without a device (copy)");
        }
        Err(e) => {
            assert!(!has_nodev, "refused on Linux 7.1+: {e}");
            assert!(e.to_string().contains("7.1"), "{e}");
            assert_eq!(auto.rx_backend(), "buffer ring");
        }
    }
    Ok(())
}

/// Shutdown returns once the last task has finished, not at the end of the grace period: here
/// every task finishes on its first runs inside the grace period, and nothing else would wake
/// the loop.
fn shutdown_ends_when_the_last_task_does() {
    let rt = common::builder()
        .chunks(16)
        .shutdown_grace(Duration::from_secs(5))
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..6 {
            drop(spawn(async {
                yield_now().await;
            }));
        }
    });
    let t = Instant::now();
    let report = rt.shutdown();
    let took = t.elapsed();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.tasks_cancelled, 0, "every task finished: {report}");
    assert!(
        took < Duration::from_secs(1),
        "shutdown waited {took:?} after its last task finished"
    );
}

/// Polling a `shutdown_requested()` future many times keeps one waker, not one per poll.
fn shutdown_wait_does_not_grow() {
    let rt = common::builder().chunks(16).build().unwrap();
    let signal = rt.shutdown_signal();
    rt.block_on(async {
        let mut wait = std::pin::pin!(signal.wait());
        for _ in 0..100_000 {
            let polled = PollN {
                fut: Box::pin(std::future::poll_fn(|cx| wait.as_mut().poll(cx))),
                left: 1,
            };
            assert!(polled.await.is_none());
        }
        assert_eq!(
            signal.waiting(),
            1,
            "one registration however often it is polled"
        );
        let s2 = signal.clone();
        let t = spawn(async move { s2.wait().await });
        yield_now().await;
        signal.trigger();
        t.await.unwrap();
        wait.await;
        assert_eq!(signal.waiting(), 0);
    });
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
    panicking_task_returns_its_chunks,
    hog_connection_cannot_starve_the_others,
    spinning_task_does_not_starve_io,
    shutdown_reports_held_buffers,
    rx_stats_follow_the_traffic,
    outside_a_runtime_net_calls_fail_and_spawn_panics,
    join_handles_and_abort,
    timers,
    rearm_after_enobufs_and_small_cq_loses_nothing,
    threads_are_pinned,
    zcrx_backend_selection,
    shutdown_ends_when_the_last_task_does,
    shutdown_wait_does_not_grow,
    coalescing_applies_to_bulk_only_and_never_stalls,
    accept_skips_connections_reset_before_accept,
    a_request_after_bulk_data_is_answered_at_once,
    send_bufs_forwards_what_arrived_together_in_order,
    after_a_receive_error_the_stream_is_at_its_end,
);
