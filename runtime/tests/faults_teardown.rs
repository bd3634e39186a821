//! Teardown under load (the fault and load suite, docs/reliability.md): two runtime threads shut down while 64
//! flows are mid-transfer and the application holds received buffers on other threads. No
//! crash, no invalid read (the held bytes are read and checked after the teardown, and CI runs
//! this file under AddressSanitizer: `.ci/asan`), and the shutdown reports say exactly what was
//! held, per connection.

#[path = "common/faults.rs"]
mod faults;
#[path = "common/rx.rs"]
mod rx;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faults::{check, fill};
use zcrx::net::TcpListener;
use zcrx::time::sleep;
use zcrx::{spawn, OwnerId, RxBuf};

const FLOWS: u64 = 64;
const THREADS: usize = 2;
const CHUNKS: usize = 64;
/// Accept loops that returned by themselves.
static ACCEPT_ENDS: AtomicU64 = AtomicU64::new(0);

/// A received buffer on its way to a holder: which runtime and connection it came from, and
/// where in its stream it lies.
struct Held {
    runtime: usize,
    owner: OwnerId,
    seed: u64,
    off: u64,
    /// Bytes the pool charged for it (the first buffer of a flow lost its 8-byte header here).
    charged: u64,
    buf: RxBuf,
}

/// Chunks and bytes held, per (runtime, connection).
type HeldMap = BTreeMap<(usize, OwnerId), (u32, u64)>;

#[derive(Default)]
struct Shared {
    accepted: AtomicU64,
    bytes: AtomicU64,
    /// Holders stop dropping buffers once they have seen this (and say so in `frozen`).
    freeze: AtomicBool,
    frozen: AtomicUsize,
    /// The root futures return (and their runtimes shut down) once this is set.
    go_down: AtomicBool,
    /// Flow tasks that returned by themselves, and those dropped unfinished (cancelled).
    ended: AtomicU64,
    cancelled: AtomicU64,
}

/// A thread that holds buffers: the last 8 until frozen, then everything. After the runtimes
/// are gone it reads every byte it still holds, checks it, and drops the buffers there.
fn holder(
    rx: std::sync::mpsc::Receiver<Held>,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<(HeldMap, u64)> {
    std::thread::spawn(move || {
        let mut window: Vec<Held> = Vec::new();
        let mut acked = false;
        let mut dropped_live = 0u64;
        loop {
            if !acked && shared.freeze.load(Ordering::Acquire) {
                acked = true;
                shared.frozen.fetch_add(1, Ordering::AcqRel);
            }
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(h) => {
                    window.push(h);
                    if !acked && window.len() > 8 {
                        // Dropped on this thread while the runtime runs.
                        window.remove(0);
                        dropped_live += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Every sender (flow task) is gone: the runtimes have shut down.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // The runtimes and their pools are torn down: the bytes must still be there.
        let mut held = BTreeMap::new();
        for h in &window {
            if let Some(i) = check(h.seed, h.off, &h.buf) {
                panic!(
                    "flow {}: byte {} changed after the teardown",
                    h.seed,
                    h.off + i as u64
                );
            }
            let e = held.entry((h.runtime, h.owner)).or_insert((0u32, 0u64));
            e.0 += 1;
            e.1 += h.charged;
        }
        drop(window);
        (held, dropped_live)
    })
}

async fn flow(
    stream: zcrx::net::TcpStream,
    runtime: usize,
    to_holder: Sender<Held>,
    shared: Arc<Shared>,
) {
    let owner = stream.owner();
    let mut head = Vec::new();
    let mut seed = 0;
    let mut off = 0u64;
    let mut guard = EndGuard(shared.clone(), false);
    while let Ok(Some(mut buf)) = stream.recv().await {
        let charged = buf.len() as u64;
        if head.len() < 8 {
            let n = (8 - head.len()).min(buf.len());
            head.extend_from_slice(&buf[..n]);
            buf.advance(n);
            if head.len() == 8 {
                seed = u64::from_le_bytes(head[..].try_into().unwrap());
            }
            if buf.is_empty() {
                continue;
            }
        }
        if let Some(i) = check(seed, off, &buf) {
            panic!("flow {seed}: wrong byte at {}", off + i as u64);
        }
        let len = buf.len() as u64;
        shared.bytes.fetch_add(len, Ordering::Relaxed);
        let h = Held {
            runtime,
            owner,
            seed,
            off,
            charged,
            buf,
        };
        off += len;
        if to_holder.send(h).is_err() {
            break;
        }
    }
    guard.1 = true;
}

/// Counts flow tasks that return by themselves and those whose future is dropped unfinished.
struct EndGuard(Arc<Shared>, bool);

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.1 {
            self.0.ended.fetch_add(1, Ordering::AcqRel);
        } else {
            self.0.cancelled.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn sender(addr: SocketAddr, seed: u64) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return;
    };
    if s.write_all(&seed.to_le_bytes()).is_err() {
        return;
    }
    let mut buf = vec![0u8; 128 * 1024];
    let mut off = 0u64;
    // Until the server goes away (reset or broken pipe) or 256 MiB.
    while off < 256 << 20 {
        fill(seed, off, &mut buf);
        if s.write_all(&buf).is_err() {
            return;
        }
        off += buf.len() as u64;
    }
}

#[test]
fn teardown_under_load_with_buffers_held_elsewhere() {
    let t0 = Instant::now();
    let shared = Arc::new(Shared::default());
    let (tx0, rx0) = channel::<Held>();
    let (tx1, rx1) = channel::<Held>();
    let holders = [holder(rx0, shared.clone()), holder(rx1, shared.clone())];
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let (ready_tx, ready_rx) = channel::<()>();
    // The conductor: starts the senders once both listeners are up, freezes the holders once
    // every flow is running and data flows, then brings the runtimes down.
    let conductor = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for _ in 0..THREADS {
                ready_rx.recv().unwrap();
            }
            let senders: Vec<_> = (0..FLOWS)
                .map(|i| std::thread::spawn(move || sender(addr, 0x7EA2 + i)))
                .collect();
            let start = Instant::now();
            while shared.accepted.load(Ordering::Acquire) < FLOWS
                || shared.bytes.load(Ordering::Relaxed) < 64 << 20
            {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the flows did not get going"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            shared.freeze.store(true, Ordering::Release);
            while shared.frozen.load(Ordering::Acquire) < 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Let the holders fill up a little, then go down mid-transfer.
            std::thread::sleep(Duration::from_millis(20));
            let bytes_at_shutdown = shared.bytes.load(Ordering::Relaxed);
            shared.go_down.store(true, Ordering::Release);
            (senders, bytes_at_shutdown)
        })
    };
    let holder_txs = [tx0, tx1];
    let outs = {
        let shared = shared.clone();
        let holder_txs = holder_txs.clone();
        rx::builder()
            .threads(THREADS)
            .chunks(CHUNKS)
            .chunk_size(16 * 1024)
            .shutdown_grace(Duration::from_millis(50))
            .run_with_reports(move |i| {
                let shared = shared.clone();
                let holder_txs = holder_txs.clone();
                let ready_tx = ready_tx.clone();
                async move {
                    let listener = TcpListener::bind_reuseport(addr).unwrap();
                    ready_tx.send(()).unwrap();
                    let accepting = {
                        let shared = shared.clone();
                        spawn(async move {
                            let mut n = 0u64;
                            while let Ok((s, _)) = listener.accept().await {
                                shared.accepted.fetch_add(1, Ordering::AcqRel);
                                let tx = holder_txs[(n % 2) as usize].clone();
                                drop(spawn(flow(s, i, tx, shared.clone())));
                                n += 1;
                            }
                            ACCEPT_ENDS.fetch_add(1, Ordering::AcqRel);
                        })
                    };
                    while !shared.go_down.load(Ordering::Acquire) {
                        sleep(Duration::from_millis(1)).await;
                    }
                    drop(accepting); // detached: cancelled at shutdown like the flows
                    let live = zcrx::rx_snapshot().unwrap();
                    (live, zcrx::stats())
                }
            })
            .expect("the runtimes ran")
    };
    drop(holder_txs);
    let (senders, bytes_at_shutdown) = conductor.join().unwrap();
    let mut held = BTreeMap::new();
    let mut dropped_live = 0;
    for h in holders {
        let (m, d) = h.join().expect("holder: bytes intact after teardown");
        held.extend(m);
        dropped_live += d;
    }
    for s in senders {
        s.join().unwrap();
    }
    let elapsed = t0.elapsed();
    let mut reported_total = 0;
    for (i, ((live, stats), report)) in outs.iter().enumerate() {
        eprintln!(
            "teardown: runtime {i}: {report}; before shutdown {:?}; {stats:?}",
            live.counts
        );
        let reported: HeldMap = report
            .held
            .owners
            .iter()
            .map(|(o, s)| ((i, *o), (s.chunks, s.bytes)))
            .collect();
        let mine: HeldMap = held
            .iter()
            .filter(|((r, _), _)| *r == i)
            .map(|(k, v)| (*k, *v))
            .collect();
        assert_eq!(
            reported, mine,
            "runtime {i}: the report lists exactly what the holders held"
        );
        assert!(
            report.held.clean,
            "runtime {i}: the kernel gave the area back"
        );
        assert_eq!(
            rx::given_back(&report.held.counts) + report.held.held_chunks,
            live.counts.total(),
            "runtime {i}: every chunk not held is back: {report:?}"
        );
        assert!(
            report.tasks_cancelled >= 1,
            "runtime {i}: flows were mid-transfer: {report:?}"
        );
        assert_eq!(report.task_panics, 0);
        assert_eq!(report.leaked_requests, 0, "{report:?}");
        reported_total += report.held.held_chunks;
    }
    let cancelled: usize = outs.iter().map(|(_, r)| r.tasks_cancelled).sum();
    let held_chunks: u32 = held.values().map(|v| v.0).sum();
    let held_bytes: u64 = held.values().map(|v| v.1).sum();
    eprintln!(
        "teardown: {FLOWS} flows, {} MiB received before shutdown, {cancelled} tasks cancelled \
         mid-transfer; {held_chunks} chunks ({held_bytes} bytes) held on other threads over {} \
         connections at teardown, all reported, read back intact afterwards and dropped there; \
         {dropped_live} buffers dropped on other threads while running; {:.2?} in all",
        bytes_at_shutdown >> 20,
        held.len(),
        elapsed
    );
    assert_eq!(reported_total, held_chunks);
    assert!(held_chunks > 0, "something was held at the teardown");
    assert_eq!(
        shared.ended.load(Ordering::Acquire),
        0,
        "no flow had ended before the shutdown"
    );
    assert_eq!(
        shared.cancelled.load(Ordering::Acquire),
        FLOWS,
        "every flow was cancelled mid-transfer"
    );
    // Pending accepts fail at shutdown, so the accept loops end by themselves within the grace
    // period (a wake lost at the end of `block_on` used to leave one pending, then cancelled).
    assert_eq!(
        ACCEPT_ENDS.load(Ordering::Acquire),
        THREADS as u64,
        "both accept loops ended"
    );
    assert_eq!(cancelled as u64, FLOWS, "only the flows were cancelled");
}

/// Runs `f` on a thread and fails (instead of hanging the suite) if it takes over 20 s.
fn within_20s(name: &str, f: impl FnOnce() + Send + 'static) {
    within(name, Duration::from_secs(20), f)
}

/// Runs `f` on its own thread and fails the test, instead of hanging it, if `f` takes longer
/// than `limit`.
fn within(name: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("{name}: hung for {limit:?}"),
    }
}

/// A task woken in the very turn its `block_on` returns still runs: in the next `block_on`
/// (which must poll its own root future) and in the shutdown's grace period, instead of being
/// left scheduled forever and cancelled at the end.
#[test]
fn wakes_survive_the_end_of_block_on() {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::task::{Poll, Waker};

    within_20s("wakes_survive_the_end_of_block_on", || {
        let rt = rx::builder()
            .chunks(16)
            .shutdown_grace(Duration::from_secs(5))
            .build()
            .unwrap();
        // A task that finishes once `go` is set and it is woken.
        let parked = |go: Rc<Cell<bool>>, done: Rc<Cell<u32>>, slot: Rc<RefCell<Option<Waker>>>| {
            std::future::poll_fn(move |cx| {
                if go.get() {
                    done.set(done.get() + 1);
                    Poll::Ready(())
                } else {
                    *slot.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        };
        let done = Rc::new(Cell::new(0));
        for round in 0..2 {
            let go = Rc::new(Cell::new(false));
            let slot = Rc::new(RefCell::new(None::<Waker>));
            let (g, d, s) = (go.clone(), done.clone(), slot.clone());
            rt.block_on(async move {
                drop(spawn(parked(g, d, s)));
                zcrx::yield_now().await; // the task runs once and parks
                go.set(true);
                slot.borrow_mut().take().expect("parked").wake();
                // Return at once: the task is woken but has not run.
            });
            assert_eq!(done.get(), round, "not run yet");
            if round == 0 {
                // A second `block_on` polls its root future and runs the woken task.
                rt.block_on(zcrx::yield_now());
                assert_eq!(done.get(), 1, "the second block_on ran the woken task");
            }
        }
        // The shutdown's grace period runs the task woken at the end of the last block_on.
        let report = rt.shutdown();
        assert_eq!(done.get(), 2, "{report}");
        assert_eq!(report.tasks_cancelled, 0, "{report}");
    });
}

/// Buffers held on other threads when the runtimes shut down keep their bytes, whatever runs
/// afterwards: two runtime threads receive four flows each, hand some buffers to a holder
/// thread and shut down mid-transfer. The holder digests every buffer when it gets it (before
/// the shutdown begins), again once the runtimes are gone, and again after another runtime has
/// carried 64 MiB and 200 ms have passed (time and traffic for a kernel that scrubbed or reused
/// the memory at teardown to show it). Under zcrx the teardown is where the kernel revokes what
/// the application holds; the reports must count every held buffer and byte.
///
/// The holder takes `THREADS * HOLD` buffers in all, from whichever threads the flows landed
/// on: reuseport may put every flow on one thread (one run in 128 with eight flows), and a
/// per-thread quota would then never be met.
#[test]
fn held_bytes_survive_the_teardown_and_later_traffic() {
    within(
        "held_bytes_survive_the_teardown_and_later_traffic",
        Duration::from_secs(120),
        held_bytes_survive,
    );
}

fn held_bytes_survive() {
    const PER_THREAD: usize = 4;
    const HOLD: usize = 24;
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let (to_holder, from_runtimes) = channel::<(usize, RxBuf)>();
    // Buffers the holder has digested.
    let digested = Arc::new(AtomicUsize::new(0));
    let holder = {
        let digested = digested.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            // Until every runtime thread (and its tasks) is gone.
            for (i, b) in from_runtimes {
                let mut d = faults::Digest::default();
                d.update(&b);
                held.push((i, b, d.finish()));
                digested.fetch_add(1, Ordering::AcqRel);
            }
            held
        })
    };
    let (ready_tx, ready_rx) = channel::<()>();
    let senders = std::thread::spawn(move || {
        for _ in 0..THREADS {
            ready_rx.recv().unwrap();
        }
        let s: Vec<_> = (0..(THREADS * PER_THREAD) as u64)
            .map(|i| std::thread::spawn(move || sender(addr, 0x4E1D + i)))
            .collect();
        s
    });
    // Buffers claimed for the holder, over all threads.
    let claimed = Arc::new(AtomicUsize::new(0));
    let outs = {
        let digested = digested.clone();
        rx::builder()
            .threads(THREADS)
            .chunks(CHUNKS)
            .chunk_size(16 * 1024)
            .shutdown_grace(Duration::from_millis(50))
            .run_with_reports(move |i| {
                let (to_holder, ready_tx) = (to_holder.clone(), ready_tx.clone());
                let (digested, claimed) = (digested.clone(), claimed.clone());
                async move {
                    rx::assert_backend();
                    let listener = TcpListener::bind_reuseport(addr).unwrap();
                    ready_tx.send(()).unwrap();
                    // Accepting in a task: the flows need not spread evenly over the threads,
                    // and the first thread to go down stops the other's accepts.
                    drop(spawn(async move {
                        while let Ok((s, _)) = listener.accept().await {
                            let (to_holder, claimed) = (to_holder.clone(), claimed.clone());
                            drop(spawn(async move {
                                // Every other buffer goes to the holder until it has its
                                // quota (so that the flows keep moving); the rest are dropped
                                // here.
                                let mut n = 0u64;
                                while let Ok(Some(b)) = s.recv().await {
                                    n += 1;
                                    if n % 2 == 0
                                        && claimed
                                            .fetch_update(
                                                Ordering::AcqRel,
                                                Ordering::Acquire,
                                                |c| (c < THREADS * HOLD).then_some(c + 1),
                                            )
                                            .is_ok()
                                    {
                                        to_holder.send((i, b)).unwrap();
                                    }
                                }
                            }));
                        }
                    }));
                    // Go down mid-transfer once the holder has digested what both threads
                    // gave it.
                    while digested.load(Ordering::Acquire) < THREADS * HOLD {
                        sleep(Duration::from_millis(1)).await;
                    }
                }
            })
            .expect("the runtimes ran")
    };
    let mut held = holder.join().unwrap();
    assert_eq!(
        held.len(),
        THREADS * HOLD,
        "every held buffer reached the holder"
    );
    // The reports count exactly the held buffers' chunks and bytes.
    for (i, (_, report)) in outs.iter().enumerate() {
        let mine: Vec<&RxBuf> = held
            .iter()
            .filter(|(r, _, _)| *r == i)
            .map(|(_, b, _)| b)
            .collect();
        let chunks: std::collections::BTreeSet<u32> = mine.iter().map(|b| b.chunk()).collect();
        let bytes: u64 = mine.iter().map(|b| b.len() as u64).sum();
        eprintln!("teardown: runtime {i}: {report}");
        assert_eq!(
            report.held.held_chunks as usize,
            chunks.len(),
            "runtime {i}: {report:?}"
        );
        assert_eq!(report.held.held_bytes, bytes, "runtime {i}: {report:?}");
        assert_eq!(report.leaked_requests, 0, "{report:?}");
    }
    let check_all = |held: &[(usize, RxBuf, u64)], when: &str| {
        for (i, b, digest) in held {
            let mut d = faults::Digest::default();
            d.update(b);
            assert_eq!(
                d.finish(),
                *digest,
                "a buffer held from runtime {i} changed {when}"
            );
        }
    };
    check_all(&held, "once the runtimes were gone");
    for s in senders.join().unwrap() {
        s.join().unwrap();
    }
    // Another runtime on this thread carries 64 MiB over loopback meanwhile.
    let rt = rx::builder()
        .chunks(CHUNKS)
        .chunk_size(16 * 1024)
        .build()
        .unwrap();
    let got = rt.block_on(async {
        rx::assert_backend();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            for k in 0..256u64 {
                fill(0x1A7E, k * buf.len() as u64, &mut buf);
                s.write_all(&buf).unwrap();
            }
        });
        let (s, _) = l.accept().await.unwrap();
        let mut off = 0u64;
        while let Some(b) = s.recv().await.unwrap() {
            assert_eq!(check(0x1A7E, off, &b), None, "the later traffic is intact");
            off += b.len() as u64;
        }
        t.join().unwrap();
        off
    });
    assert_eq!(got, 64 << 20);
    assert!(rt.shutdown().is_clean());
    std::thread::sleep(Duration::from_millis(200));
    check_all(&held, "after more traffic and 200 ms");
    held.clear();
}
