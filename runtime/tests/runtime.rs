//! Runtime behaviour against the real kernel over loopback.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};

use common::{echo_roundtrip, pattern, std_sender, PollN};
use zcrx::net::TcpListener;
use zcrx::time::{interval, sleep, timeout};
use zcrx::{spawn, yield_now, RxBuf};

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

test_kit::main!(
    panicking_task_returns_its_chunks,
    spinning_task_does_not_starve_io,
    shutdown_reports_held_buffers,
    outside_a_runtime_net_calls_fail_and_spawn_panics,
    join_handles_and_abort,
    timers,
    threads_are_pinned,
    zcrx_backend_selection,
    shutdown_ends_when_the_last_task_does,
    shutdown_wait_does_not_grow,
);
