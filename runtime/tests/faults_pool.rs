//! The pool under pressure (the fault and load suite, docs/reliability.md): a pool of a handful of chunks
//! shared by 64 flows whose consumer sleeps at random, and a deliberately tiny completion queue
//! under multishot load. Every byte must arrive, in order (each byte checked where it lands,
//! and an order-sensitive digest compared with the sender's); receives that end for lack of
//! buffers or because the CQ was full must be re-armed, and counted.

#[path = "common/faults.rs"]
mod faults;
#[path = "common/rx.rs"]
mod rx;

use std::io::Write;
use std::time::{Duration, Instant};
use test_kit::Outcome;

use faults::{check, fill, Digest, Rng};
use zcrx::net::TcpListener;
use zcrx::time::{sleep, timeout};
use zcrx::{spawn, Builder, DriverStats, RxBuf};

#[derive(Clone, Copy)]
struct Consumer {
    /// One buffer in `sleep_one_in` makes the consumer sleep (holding it) up to `sleep_max`.
    sleep_one_in: u64,
    sleep_max: Duration,
    /// One buffer in `keep_one_in` is kept a while (up to 3 per flow) instead of dropped.
    keep_one_in: u64,
}

struct Run {
    elapsed: Duration,
    bytes: u64,
    stats: DriverStats,
    /// Chunks posted to the kernel once every flow has ended and dropped its buffers.
    posted_at_end: u32,
    flows: usize,
}

/// `flows` std senders each send `[seed: u64]` then `per_flow` bytes of stream `seed` to a
/// runtime built from `builder`; one task per flow checks every byte in place and digests the
/// stream, consuming as `consumer` says.
fn run_flows(builder: Builder, flows: u64, per_flow: u64, consumer: Consumer) -> Run {
    let rt = builder.build().unwrap();
    let t0 = Instant::now();
    let (results, bytes, posted_at_end) = rt.block_on(async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let senders: Vec<_> = (0..flows)
            .map(|i| {
                std::thread::spawn(move || {
                    let seed = 0xF10 + i;
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(&seed.to_le_bytes()).unwrap();
                    let mut d = Digest::default();
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut off = 0u64;
                    while off < per_flow {
                        let n = (per_flow - off).min(buf.len() as u64) as usize;
                        fill(seed, off, &mut buf[..n]);
                        s.write_all(&buf[..n]).unwrap();
                        d.update(&buf[..n]);
                        off += n as u64;
                    }
                    (seed, d.finish())
                })
            })
            .collect();
        let mut tasks = Vec::new();
        for i in 0..flows {
            let (s, _) = l.accept().await.unwrap();
            tasks.push(spawn(async move {
                let mut rng = Rng(i * 7919 + 1);
                let mut head = Vec::new();
                let mut seed = 0;
                let mut off = 0u64;
                let mut d = Digest::default();
                let mut kept: Vec<RxBuf> = Vec::new();
                loop {
                    let b = timeout(Duration::from_secs(30), s.recv())
                        .await
                        .expect("a flow stalled for 30 s")
                        .expect("receive error");
                    let Some(b) = b else { break };
                    let mut data = &b[..];
                    if head.len() < 8 {
                        let n = (8 - head.len()).min(data.len());
                        head.extend_from_slice(&data[..n]);
                        data = &data[n..];
                        if head.len() == 8 {
                            seed = u64::from_le_bytes(head[..].try_into().unwrap());
                        }
                    }
                    if let Some(k) = check(seed, off, data) {
                        panic!("flow {seed}: wrong byte at {}", off + k as u64);
                    }
                    d.update(data);
                    off += data.len() as u64;
                    if rng.below(consumer.sleep_one_in) == 0 {
                        let us = rng.below(consumer.sleep_max.as_micros() as u64 + 1);
                        sleep(Duration::from_micros(us)).await;
                    }
                    if rng.below(consumer.keep_one_in) == 0 {
                        kept.push(b);
                        if kept.len() > 3 {
                            kept.remove(0);
                        }
                    }
                }
                (seed, off, d.finish())
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.expect("flow task"));
        }
        let mut sent = Vec::new();
        for s in senders {
            sent.push(s.join().unwrap());
        }
        got.sort();
        sent.sort();
        let mut bytes = 0;
        for ((seed, len, digest), (sseed, sdigest)) in got.iter().zip(&sent) {
            assert_eq!(seed, sseed);
            assert_eq!(*len, per_flow, "flow {seed}: every byte arrived");
            assert_eq!(digest, sdigest, "flow {seed}: digest");
            bytes += len;
        }
        // A turn flushes what the flows dropped, topping the ring up to its depth.
        zcrx::yield_now().await;
        zcrx::yield_now().await;
        let posted = zcrx::rx_snapshot().expect("a receive pool").counts.kernel;
        (got.len(), bytes, posted)
    });
    let elapsed = t0.elapsed();
    let stats = rt.stats();
    let report = rt.shutdown();
    assert!(report.is_clean(), "{report}");
    Run {
        elapsed,
        bytes,
        stats,
        posted_at_end,
        flows: results,
    }
}

/// 64 flows, 1 GiB in all, through a pool of 16 chunks, to consumers that sleep at random while
/// holding a buffer and keep some buffers a while: every byte arrives in order; receives that
/// found the ring empty (`-ENOBUFS`) or had to wait for the pool are re-armed, and counted.
fn slow_consumer_tiny_pool_1gib() {
    let r = run_flows(
        rx::builder().chunks(16).chunk_size(64 * 1024),
        64,
        16 << 20,
        Consumer {
            sleep_one_in: 24,
            sleep_max: Duration::from_millis(2),
            // Keeping buffers while waiting for more data cannot work here: 64 flows keeping one
            // chunk each is four times the pool (the application's own deadlock).
            keep_one_in: u64::MAX,
        },
    );
    let st = r.stats;
    eprintln!(
        "slow consumer: {} flows, {} MiB through a pool of 16 x 64 KiB in {:.2?} ({:.0} MiB/s); \
         ENOBUFS {}, re-arms {} ({} arms for {} flows), pool waits {}, back-pressure pauses {}, \
         CQ overflows {}; {:?}",
        r.flows,
        r.bytes >> 20,
        r.elapsed,
        (r.bytes >> 20) as f64 / r.elapsed.as_secs_f64(),
        st.no_buffers,
        st.recv_arms - r.flows as u64,
        st.recv_arms,
        r.flows,
        st.pool_waits,
        st.backpressure_pauses,
        st.cq_overflows,
        st
    );
    assert_eq!(r.flows, 64);
    assert_eq!(r.bytes, 1 << 30);
    assert!(st.no_buffers > 0, "the ring ran dry at least once: {st:?}");
    assert!(st.recv_arms > 64 * 10, "receives were re-armed: {st:?}");
    assert!(st.pool_waits > 0, "receives waited for the pool: {st:?}");
}

/// A completion queue of 4 entries under 16 multishot receives: the kernel cannot post most
/// completions, ends the receives (the data rides in the final completion) and the runtime
/// re-arms them. No byte lost, no stall.
fn tiny_completion_queue_loses_nothing() {
    let r = run_flows(
        rx::builder()
            .chunks(256)
            .chunk_size(16 * 1024)
            .sq_entries(4)
            .cq_entries(4),
        16,
        16 << 20,
        Consumer {
            sleep_one_in: 64,
            sleep_max: Duration::from_micros(200),
            keep_one_in: u64::MAX,
        },
    );
    let st = r.stats;
    eprintln!(
        "tiny CQ: {} flows, {} MiB with a CQ of 4 entries in {:.2?} ({:.0} MiB/s); receives \
         ended by the full CQ {}, arms {}, ENOBUFS {}; {:?}",
        r.flows,
        r.bytes >> 20,
        r.elapsed,
        (r.bytes >> 20) as f64 / r.elapsed.as_secs_f64(),
        st.cq_overflows,
        st.recv_arms,
        st.no_buffers,
        st
    );
    assert_eq!(r.bytes, 16 * (16 << 20));
    assert!(st.cq_overflows > 0, "the CQ overflowed: {st:?}");
    assert!(st.recv_arms > st.cq_overflows, "{st:?}");
}

/// The same load with the default CQ: no receive is counted as ended by an overflow (the
/// counter has no false positives).
fn default_completion_queue_does_not_overflow() {
    let r = run_flows(
        rx::builder().chunks(256).chunk_size(16 * 1024),
        16,
        8 << 20,
        Consumer {
            sleep_one_in: 64,
            sleep_max: Duration::from_micros(200),
            keep_one_in: u64::MAX,
        },
    );
    eprintln!(
        "default CQ: {} MiB in {:.2?}; {:?}",
        r.bytes >> 20,
        r.elapsed,
        r.stats
    );
    assert_eq!(r.bytes, 16 * (8 << 20));
    assert_eq!(r.stats.cq_overflows, 0, "{:?}", r.stats);
}

/// A ring that keeps only 4 of 64 chunks posted (`Builder::max_posted`): the kernel runs it dry
/// over and over while 16 flows stream, and the pooled chunks go back in as it does. Every
/// byte arrives in order.
fn shallow_ring_loses_nothing() -> Outcome {
    rx::bufring_only("max_posted fixes the buffer ring's depth; zcrx has none")?;

    let r = run_flows(
        rx::builder().chunks(64).chunk_size(16 * 1024).max_posted(4),
        16,
        8 << 20,
        Consumer {
            sleep_one_in: 64,
            sleep_max: Duration::from_micros(200),
            keep_one_in: 16,
        },
    );
    eprintln!(
        "shallow ring: {} MiB with 4 of 64 chunks posted in {:.2?}; {:?}",
        r.bytes >> 20,
        r.elapsed,
        r.stats
    );
    assert_eq!(r.bytes, 16 * (8 << 20));
    assert!(
        r.stats.no_buffers > 0,
        "4 posted chunks ran dry: {:?}",
        r.stats
    );
    Ok(())
}

/// The limit holds from the start: 4 chunks in the ring, the other 60 in the pool.
fn max_posted_keeps_the_rest_in_the_pool() -> Outcome {
    rx::bufring_only("max_posted fixes the buffer ring's depth; zcrx has none")?;

    let rt = rx::builder()
        .chunks(64)
        .chunk_size(16 * 1024)
        .max_posted(4)
        .build()
        .unwrap();
    let counts = rt.block_on(async { zcrx::rx_snapshot().expect("a receive pool").counts });
    assert_eq!((counts.kernel, counts.pool), (4, 60), "{counts:?}");
    Ok(())
}

/// By default the ring starts at its adaptive floor: 64 chunks (or 2 MiB of smaller ones), the
/// rest in the pool; with the adaptive depth off, every chunk is posted.
fn adaptive_depth_starts_at_its_floor() -> Outcome {
    rx::bufring_only("the adaptive depth is the buffer ring's; zcrx has none")?;

    for (adaptive, chunk, chunks, posted) in [
        (Some(false), 32 * 1024, 256, 256),
        (None, 32 * 1024, 256, 64),
        (Some(true), 32 * 1024, 256, 64),
        (None, 4096, 1024, 512),
        (None, 4096, 64, 64),
    ] {
        let mut b = rx::builder().chunks(chunks).chunk_size(chunk);
        if let Some(on) = adaptive {
            b = b.adaptive_depth(on);
        }
        let rt = b.build().unwrap();
        let counts = rt.block_on(async { zcrx::rx_snapshot().expect("a receive pool").counts });
        assert_eq!(
            (counts.kernel, counts.pool),
            (posted, chunks as u32 - posted),
            "adaptive {adaptive:?}, {chunks} chunks of {chunk}: {counts:?}"
        );
    }
    Ok(())
}

/// 64 backlogged flows need more than the floor's 64 chunks a turn: the receives that find the
/// ring empty, turn after turn, make it grow (the driver feeds the depth controller and applies
/// what it says), and every byte still arrives in order.
fn adaptive_depth_grows_for_many_backlogged_flows() -> Outcome {
    rx::bufring_only("the adaptive depth is the buffer ring's; zcrx has none")?;

    let r = run_flows(
        rx::builder().chunks(256).chunk_size(32 * 1024),
        64,
        8 << 20,
        Consumer {
            sleep_one_in: 256,
            sleep_max: Duration::from_micros(100),
            keep_one_in: 1 << 40,
        },
    );
    eprintln!(
        "adaptive depth: {} MiB in {:.2?}; {:?}",
        r.bytes >> 20,
        r.elapsed,
        r.stats
    );
    assert_eq!(r.bytes, 64 * (8 << 20));
    assert!(
        r.stats.no_buffers > 0 && r.stats.depth_raises > 0,
        "64 posted chunks for 64 flows: {:?}",
        r.stats
    );
    assert!(
        r.posted_at_end > 64,
        "the ring grew: {} posted at the end; {:?}",
        r.posted_at_end,
        r.stats
    );
    Ok(())
}

fn max_posted_and_adaptive_depth_together_are_refused() {
    let Err(err) = Builder::new().max_posted(32).adaptive_depth(true).build() else {
        panic!("both were accepted");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("set one of them"), "{err}");
}

fn max_posted_zero_is_refused() {
    let Err(err) = Builder::new().max_posted(0).build() else {
        panic!("max_posted(0) was accepted");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_posted"), "{err}");
}

/// A consumer that hands every buffer to a worker thread, which drops it a little later: the
/// pool (8 chunks) is soon all on the worker, the connection waits for buffers, and nothing but
/// those drops on the other thread can end the wait (no timer, no other connection). The loop
/// must sleep and be woken by them: every byte arrives, and the wake-ups are counted.
fn buffers_dropped_on_another_thread_wake_the_loop() {
    const LEN: u64 = 4 << 20;
    let rt = rx::builder()
        .chunks(8)
        .chunk_size(16 * 1024)
        .build()
        .unwrap();
    let (bytes, stats) = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0;
            while off < LEN {
                let n = (LEN - off).min(buf.len() as u64) as usize;
                fill(7, off, &mut buf[..n]);
                s.write_all(&buf[..n]).unwrap();
                off += n as u64;
            }
        });
        let (tx, rx) = std::sync::mpsc::channel::<RxBuf>();
        let worker = std::thread::spawn(move || {
            for b in rx {
                std::thread::sleep(Duration::from_micros(200));
                drop(b);
            }
        });
        let (s, _) = l.accept().await.unwrap();
        // One deadline for the whole transfer: without the wake-ups each wait would end only
        // when some timer happened to wake the loop.
        let off = timeout(Duration::from_secs(20), async {
            let mut off = 0u64;
            while let Some(b) = s.recv().await.expect("receive error") {
                if let Some(k) = check(7, off, &b) {
                    panic!("wrong byte at {}", off + k as u64);
                }
                off += b.len() as u64;
                tx.send(b).unwrap();
            }
            off
        })
        .await
        .expect("the transfer stalled: buffers dropped on the worker did not wake the loop");
        drop(tx);
        worker.join().unwrap();
        sender.join().unwrap();
        (off, zcrx::stats())
    });
    assert_eq!(bytes, LEN, "every byte arrived");
    assert!(
        stats.return_wakes > 0,
        "the loop never slept waiting for the worker's drops: {stats:?}"
    );
    let report = rt.shutdown();
    assert!(report.is_clean(), "{report}");
}

/// Busy connections that want more of the pool than there is must not keep a connection that
/// waits for room waiting: the ones that waited are served first. Six flows stream without end
/// into a pool of 16 chunks (each may take 4), and a seventh client then sends a request the
/// server holds whole until complete (so it may not take the pool's last chunks) and waits for
/// the answer: about 0.6 ms here (0.95 ms when the streams' re-arms went first), while a
/// connection that waited for as long as the streams kept going would fail it.
fn a_waiting_connection_is_served_while_busy_ones_stream() {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const HOGS: usize = 6;
    /// Held whole until complete (as a parser that does not copy does): three chunks, within
    /// the connection's limit of four, but a connection that holds buffers may not take the
    /// pool's last ones, so it waits for room like any other.
    const REQUEST: usize = 48 * 1024;
    let rt = rx::builder()
        .chunks(16)
        .chunk_size(16 * 1024)
        .build()
        .unwrap();
    let (waited, streamed, stats) = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let hogs: Vec<_> = (0..HOGS)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    let buf = vec![0x5au8; 256 * 1024];
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        s.write_all(&buf).unwrap();
                        sent += buf.len() as u64;
                    }
                    sent
                })
            })
            .collect();
        let streamed = std::rc::Rc::new(std::cell::Cell::new(0u64));
        for _ in 0..HOGS {
            let (s, _) = l.accept().await.unwrap();
            let streamed = streamed.clone();
            drop(spawn(async move {
                while let Ok(Some(b)) = s.recv().await {
                    streamed.set(streamed.get() + b.len() as u64);
                }
            }));
        }
        // Let the streams fill the pool, then the late client asks.
        sleep(Duration::from_millis(200)).await;
        let before = streamed.get();
        let late = std::thread::spawn(move || {
            let t = Instant::now();
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(&[7u8; REQUEST]).unwrap();
            let mut answer = [0u8; 8];
            s.read_exact(&mut answer)
                .expect("the late client got no answer");
            assert_eq!(u64::from_le_bytes(answer), REQUEST as u64);
            t.elapsed()
        });
        let (s, _) = l.accept().await.unwrap();
        let mut got = 0;
        let mut held = Vec::new();
        while got < REQUEST {
            let b = s.recv().await.unwrap().expect("the late client's request");
            got += b.len();
            held.push(b);
        }
        drop(held);
        s.send_all(&(got as u64).to_le_bytes()).await.unwrap();
        while !late.is_finished() {
            sleep(Duration::from_millis(1)).await;
        }
        let waited = late.join().unwrap();
        let streamed_meanwhile = streamed.get() - before;
        stop.store(true, Ordering::Relaxed);
        // The hogs' servers read (this loop must keep turning) until the hogs close.
        for h in hogs {
            while !h.is_finished() {
                sleep(Duration::from_millis(5)).await;
            }
            h.join().unwrap();
        }
        (waited, streamed_meanwhile, zcrx::stats())
    });
    eprintln!("the late request was answered in {waited:.2?}, while the streams delivered {streamed} bytes; {stats:?}");
    assert!(
        stats.pool_waits > 0,
        "the streams never filled the pool, so nothing was tested: {stats:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "a connection waited {waited:.2?} for room while busy ones streamed"
    );
    let report = rt.shutdown();
    assert!(report.is_clean(), "{report}");
}

test_kit::main!(
    slow_consumer_tiny_pool_1gib,
    tiny_completion_queue_loses_nothing,
    default_completion_queue_does_not_overflow,
    shallow_ring_loses_nothing,
    max_posted_keeps_the_rest_in_the_pool,
    adaptive_depth_starts_at_its_floor,
    adaptive_depth_grows_for_many_backlogged_flows,
    max_posted_and_adaptive_depth_together_are_refused,
    max_posted_zero_is_refused,
    buffers_dropped_on_another_thread_wake_the_loop,
    a_waiting_connection_is_served_while_busy_ones_stream,
);
