//! The leaking-application loop (the fault and load suite, docs/reliability.md): 100,000 connections, each
//! receiving a little data; the application closes each socket while still holding the buffers
//! it got and drops them only later (some on another thread), or forgets them outright with
//! `mem::forget`. The pool must keep serving the next connection, no connection may take more
//! than its limit, forgotten buffers must be reported (snapshot, shutdown report) and every
//! other chunk must come back.

#[path = "common/faults.rs"]
mod faults;
#[path = "common/rx.rs"]
mod rx;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use faults::{check, fill, Rng};
use zcrx::net::TcpListener;
use zcrx::time::timeout;
use zcrx::{spawn, OwnerId, Runtime, RxBuf};

const CHUNK: usize = 4096;
const CHUNKS: usize = 64;
const HEADER: usize = 12;

/// What one connection sends: `[id: u64][len: u32]` then `len` bytes of stream `id`, in
/// `writes` pieces (each its own segment, so each takes a chunk of its own).
fn plan(id: u64, forget: bool) -> (usize, usize) {
    let mut r = Rng(id ^ 0x5eed);
    if forget {
        // One small write: exactly one chunk to forget.
        return (1 + r.below(1024) as usize, 1);
    }
    (1 + r.below(12 * 1024) as usize, 1 + r.below(4) as usize)
}

/// The server closes these after their first buffer, with the rest unread (the client sees a
/// reset).
fn early_close(id: u64) -> bool {
    id % 8 == 3
}

fn client(addr: SocketAddr, ids: impl Iterator<Item = u64>, forget_every: u64) -> u64 {
    let mut done = 0;
    let mut buf = Vec::new();
    for id in ids {
        let forget = forget_every > 0 && id % forget_every == forget_every - 1;
        let (len, writes) = plan(id, forget);
        buf.clear();
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        let start = buf.len();
        buf.resize(start + len, 0);
        fill(id, 0, &mut buf[start..]);
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        // First write carries the whole header.
        let piece = (buf.len() / writes).max(HEADER + 1).min(buf.len());
        let mut off = 0;
        let mut ok = true;
        while off < buf.len() && ok {
            let end = (off + piece).min(buf.len());
            ok = s.write_all(&buf[off..end]).is_ok();
            off = end;
            if writes > 1 {
                // Let each piece leave as its own segment.
                std::thread::yield_now();
            }
        }
        // The server closes first (it holds the TIME_WAIT, so client ports are not exhausted).
        let mut sink = [0u8; 64];
        if let Ok(n @ 1..) = s.read(&mut sink) {
            panic!("the server never sends, yet {n} bytes came");
        }
        done += 1;
    }
    done
}

struct Outcome {
    iterations: u64,
    elapsed: Duration,
    max_latency: Duration,
    max_owner_chunks: u32,
    max_held_chunks: u32,
    forgotten: BTreeMap<OwnerId, (u32, u64)>,
    early: u64,
    cross_thread_drops: u64,
}

/// Runs the loop: `iterations` connections from `clients` client threads; the application keeps
/// the buffers of the last `window` connections after closing them, and forgets the buffers of
/// every `forget_every`-th connection (0: never).
fn leak_loop(
    rt: &Runtime,
    iterations: u64,
    clients: u64,
    window: usize,
    forget_every: u64,
) -> Outcome {
    let limit_chunks = (CHUNKS / 4) as u32; // the default per-connection limit, in chunks
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client_threads: Vec<_> = (0..clients)
            .map(|c| {
                std::thread::spawn(move || {
                    client(
                        addr,
                        (c..iterations).step_by(clients as usize),
                        forget_every,
                    )
                })
            })
            .collect();
        // Buffers of closed connections, dropped later: here, or on the dropper thread.
        let window_q: Rc<RefCell<VecDeque<Vec<RxBuf>>>> = Rc::default();
        let (drop_tx, drop_rx) = std::sync::mpsc::channel::<Vec<RxBuf>>();
        let dropper = std::thread::spawn(move || {
            let mut n = 0u64;
            for bufs in drop_rx {
                std::thread::sleep(Duration::from_micros(50));
                n += bufs.len() as u64;
                drop(bufs);
            }
            n
        });
        let stats = Rc::new(RefCell::new((
            0u64,                                   // completed
            Duration::ZERO,                         // max latency
            0u32,                                   // max chunks of one owner
            0u32,                                   // max user chunks
            BTreeMap::<OwnerId, (u32, u64)>::new(), // forgotten
            0u64,                                   // early closes
        )));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..iterations {
            let (stream, _) = timeout(Duration::from_secs(20), listener.accept())
                .await
                .expect("the next connection was not accepted within 20 s")
                .unwrap();
            let window_q = window_q.clone();
            let drop_tx = drop_tx.clone();
            let stats = stats.clone();
            let t = spawn(async move {
                let accepted = Instant::now();
                let owner = stream.owner();
                let mut bufs: Vec<RxBuf> = Vec::new();
                let mut head = Vec::with_capacity(HEADER);
                let mut got = 0usize;
                let mut need = usize::MAX;
                let mut id = u64::MAX;
                while got < need {
                    let b = timeout(Duration::from_secs(20), stream.recv())
                        .await
                        .unwrap_or_else(|_| panic!("{owner}: starved: no data for 20 s"))
                        .unwrap_or_else(|e| panic!("{owner}: {e}"))
                        .unwrap_or_else(|| panic!("{owner}: EOF after {got} bytes"));
                    got += b.len();
                    if head.len() < HEADER {
                        let n = (HEADER - head.len()).min(b.len());
                        head.extend_from_slice(&b[..n]);
                        if head.len() == HEADER {
                            id = u64::from_le_bytes(head[..8].try_into().unwrap());
                            let len = u32::from_le_bytes(head[8..].try_into().unwrap());
                            need = HEADER + len as usize;
                        }
                    }
                    bufs.push(b);
                    if id != u64::MAX && early_close(id) {
                        break;
                    }
                }
                // Verify what we got, in order.
                let mut off = 0u64;
                for b in &bufs {
                    let mut data = &b[..];
                    if (off as usize) < HEADER {
                        let skip = (HEADER - off as usize).min(data.len());
                        data = &data[skip..];
                        off += skip as u64;
                    }
                    let pos = off - HEADER as u64;
                    if let Some(i) = check(id, pos, data) {
                        panic!("{owner} (id {id}): wrong byte at {}", pos + i as u64);
                    }
                    off += data.len() as u64;
                }
                let early = early_close(id);
                assert!(early || got == need, "{owner}: {got} of {need} bytes");
                // Close the socket while still holding everything it received.
                drop(stream);
                let snap = zcrx::rx_snapshot().unwrap();
                let mut st = stats.borrow_mut();
                let top = snap.owners.iter().map(|(_, s)| s.chunks).max().unwrap_or(0);
                st.2 = st.2.max(top);
                st.3 = st.3.max(snap.counts.user);
                assert!(
                    top <= limit_chunks + 1,
                    "a connection holds {top} chunks, over its limit of {limit_chunks}: {snap:?}"
                );
                let forget = forget_every > 0 && id % forget_every == forget_every - 1;
                if forget {
                    let bytes = bufs.iter().map(|b| b.len() as u64).sum();
                    st.4.insert(owner, (bufs.len() as u32, bytes));
                    for b in bufs {
                        std::mem::forget(b);
                    }
                } else {
                    let mut w = window_q.borrow_mut();
                    w.push_back(bufs);
                    if w.len() > window {
                        let old = w.pop_front().unwrap();
                        if id % 2 == 0 {
                            drop_tx.send(old).unwrap();
                        } else {
                            drop(old);
                        }
                    }
                }
                st.0 += 1;
                st.1 = st.1.max(accepted.elapsed());
                st.5 += u64::from(early);
            });
            tasks.push(t);
            if tasks.len() >= 256 {
                for t in tasks.drain(..) {
                    t.await.expect("connection task");
                }
            }
        }
        for t in tasks {
            t.await.expect("connection task");
        }
        let elapsed = start.elapsed();
        let mut done = 0;
        for c in client_threads {
            done += c.join().unwrap();
        }
        assert_eq!(done, iterations);
        // The application finally drops what it kept.
        window_q.borrow_mut().clear();
        drop(drop_tx);
        let cross_thread_drops = dropper.join().unwrap();
        let st = stats.borrow();
        Outcome {
            iterations: st.0,
            elapsed,
            max_latency: st.1,
            max_owner_chunks: st.2,
            max_held_chunks: st.3,
            forgotten: st.4.clone(),
            early: st.5,
            cross_thread_drops,
        }
    })
}

/// Waits (on the runtime) until every returned chunk was published back.
fn settle(rt: &Runtime) -> zcrx::ifq::Snapshot {
    rt.block_on(async {
        let mut snap = zcrx::rx_snapshot().unwrap();
        for _ in 0..200 {
            zcrx::time::sleep(Duration::from_millis(5)).await;
            snap = zcrx::rx_snapshot().unwrap();
            if snap.counts.refill == 0 && snap.counts.kernel + snap.counts.user == CHUNKS as u32 {
                break;
            }
        }
        snap
    })
}

fn pool() -> Runtime {
    rx::builder()
        .chunks(CHUNKS)
        .chunk_size(CHUNK)
        .shutdown_grace(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// 100,000 connections; the application closes each with its buffers still held and drops them
/// two connections later (half of them on another thread). No connection is starved, none holds
/// more than its limit, and at the end every chunk is back.
#[test]
fn leaking_application_loop_100k() {
    let rt = pool();
    let o = leak_loop(&rt, 100_000, 4, 2, 0);
    let snap = settle(&rt);
    let st = rt.stats();
    eprintln!(
        "leak loop: {} connections in {:.1?} ({:.0}/s), {} closed early with data unread; \
         slowest connection {:.1?}; most chunks held by one connection {} (limit {}); most \
         chunks held in all {} of {}; {} buffers dropped on another thread; after: {:?}; {:?}",
        o.iterations,
        o.elapsed,
        o.iterations as f64 / o.elapsed.as_secs_f64(),
        o.early,
        o.max_latency,
        o.max_owner_chunks,
        CHUNKS / 4,
        o.max_held_chunks,
        CHUNKS,
        o.cross_thread_drops,
        snap.counts,
        st
    );
    assert_eq!(o.iterations, 100_000);
    assert!(o.early > 10_000, "early closes exercised: {}", o.early);
    assert!(o.cross_thread_drops > 0);
    assert_eq!(snap.counts.user, 0, "every chunk came back: {snap:?}");
    assert_eq!(snap.counts.refill, 0, "{snap:?}");
    assert_eq!(snap.counts.kernel, CHUNKS as u32, "{snap:?}");
    assert_eq!(snap.held_bytes, 0);
    assert!(snap.owners.is_empty(), "{snap:?}");
    let report = rt.shutdown();
    eprintln!("leak loop shutdown: {report}");
    assert!(report.held.is_clean(), "{report:?}");
    assert_eq!(
        rx::given_back(&report.held.counts),
        CHUNKS as u32,
        "{report:?}"
    );
}

/// The same loop where the application forgets (`mem::forget`) the buffers of every 1,000th
/// connection: exactly those chunks stay out, reported per connection in the snapshot and the
/// shutdown report; the smaller pool still serves everyone; every other chunk comes back.
#[test]
fn forgotten_buffers_are_reported() {
    let rt = pool();
    let o = leak_loop(&rt, 20_000, 2, 2, 1000);
    let snap = settle(&rt);
    let forgotten_chunks: u32 = o.forgotten.values().map(|v| v.0).sum();
    let forgotten_bytes: u64 = o.forgotten.values().map(|v| v.1).sum();
    eprintln!(
        "forget loop: {} connections in {:.1?}, {} forgot their buffers ({} chunks, {} bytes); \
         slowest connection {:.1?}; after: {:?}, {} owners listed; {:?}",
        o.iterations,
        o.elapsed,
        o.forgotten.len(),
        forgotten_chunks,
        forgotten_bytes,
        o.max_latency,
        snap.counts,
        snap.owners.len(),
        rt.stats()
    );
    assert_eq!(o.iterations, 20_000);
    assert_eq!(o.forgotten.len(), 20);
    assert_eq!(forgotten_chunks, 20, "one chunk per forgetting connection");
    assert_eq!(snap.counts.user, forgotten_chunks, "{snap:?}");
    assert_eq!(snap.counts.refill, 0, "{snap:?}");
    assert_eq!(snap.counts.kernel, CHUNKS as u32 - forgotten_chunks);
    assert_eq!(snap.held_bytes, forgotten_bytes);
    let listed: BTreeMap<OwnerId, (u32, u64)> = snap
        .owners
        .iter()
        .map(|(o, s)| (*o, (s.chunks, s.bytes)))
        .collect();
    assert_eq!(
        listed, o.forgotten,
        "exactly the forgotten buffers, per connection"
    );
    let report = rt.shutdown();
    eprintln!("forget loop shutdown: {report}");
    assert_eq!(report.held.held_chunks, forgotten_chunks);
    assert_eq!(report.held.held_bytes, forgotten_bytes);
    let reported: BTreeMap<OwnerId, (u32, u64)> = report
        .held
        .owners
        .iter()
        .map(|(o, s)| (*o, (s.chunks, s.bytes)))
        .collect();
    assert_eq!(reported, o.forgotten);
    assert!(report.held.clean, "the kernel gave the area back");
    assert_eq!(
        rx::given_back(&report.held.counts),
        CHUNKS as u32 - forgotten_chunks,
        "every chunk not forgotten is back: {report:?}"
    );
}

/// After thousands of connections have come and gone, one flow gets the fair share of one live
/// connection (the whole pool, within its limit), not that of every connection ever opened:
/// its receives are re-armed about once per limit's worth of bytes.
#[test]
fn closed_connections_leave_the_fair_share() {
    // The default pool: 256 x 32 KiB, a limit of 2 MiB per connection.
    let rt = rx::builder().build().unwrap();
    const CLOSED: u64 = 1000;
    const BYTES: u64 = 64 << 20;
    let arms = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let churn = std::thread::spawn(move || {
            for i in 0..CLOSED {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(&i.to_le_bytes()).unwrap();
            }
        });
        for _ in 0..CLOSED {
            let (s, _) = listener.accept().await.unwrap();
            spawn(async move { while let Ok(Some(_)) = s.recv().await {} })
                .await
                .unwrap();
        }
        churn.join().unwrap();
        let before = zcrx::stats().recv_arms;
        let sender = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            for off in (0..BYTES).step_by(buf.len()) {
                fill(7, off, &mut buf);
                s.write_all(&buf).unwrap();
            }
        });
        let (s, _) = listener.accept().await.unwrap();
        let mut off = 0;
        while let Some(b) = s.recv().await.unwrap() {
            assert_eq!(check(7, off, &b), None);
            off += b.len() as u64;
        }
        sender.join().unwrap();
        assert_eq!(off, BYTES);
        zcrx::stats().recv_arms - before
    });
    eprintln!(
        "fair share after {CLOSED} closed connections: {} MiB in {arms} receive arms (limit 2 MiB)",
        BYTES >> 20
    );
    // One arm per 2 MiB would be 32; the share of 1,000 connections (the 512 KiB floor) is 128.
    assert!(arms < 110, "{arms} arms for {} MiB", BYTES >> 20);
}
