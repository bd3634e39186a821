//! The server under test: it echoes a digest of each complete request, holds partial ones, and
//! counts how every connection ended; and the check of what it reports.

use super::*;

#[derive(Default, Debug)]
pub(crate) struct Ends {
    pub(crate) accepted: Cell<u64>,
    pub(crate) accept_errors: Cell<u64>,
    pub(crate) ok: Cell<u64>,
    pub(crate) reset: Cell<u64>,
    pub(crate) early_eof: Cell<u64>,
    /// Idle timeouts of the peers that are meant to go quiet (slowloris, vanished).
    pub(crate) idle: Cell<u64>,
    /// Idle timeouts of any other peer. The pool is small on purpose, and a connection that
    /// waits for pool room longer than `IDLE` (its data unread, its EOF unseen) is timed out by
    /// the application like a silent one: only allowed while connections waited for buffers.
    pub(crate) idle_other: Cell<u64>,
    pub(crate) other: Cell<u64>,
    pub(crate) active: Cell<u64>,
    pub(crate) bytes: Cell<u64>,
}

pub(crate) fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// One connection. Protocol: `[seed: u64][len: u64]` then `len` bytes of stream `seed`; the
/// server answers `[len: u64][digest: u64]` and closes. Small requests are held (zero-copy
/// assembly) until complete; large ones are verified and dropped buffer by buffer.
pub(crate) async fn handle(stream: zcrx::net::TcpStream, ends: Rc<Ends>) {
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

pub(crate) struct ServerOut {
    pub(crate) ends: Rc<Ends>,
    /// fds when the listener was up, and once every connection was gone.
    pub(crate) fds_before: usize,
    pub(crate) fds_after: usize,
    pub(crate) snap: zcrx::ifq::Snapshot,
    pub(crate) max_owner_chunks: u32,
    pub(crate) min_kernel_chunks: u32,
    pub(crate) stats: zcrx::DriverStats,
}

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) signal: ShutdownSignal,
    pub(crate) thread: JoinHandle<(String, Tally, ShutdownReport)>,
}

/// Starts the server on its own thread (inside `netns` if given), listening on `ip`.
pub(crate) fn start_server(netns: Option<String>, ip: IpAddr) -> Server {
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
pub(crate) struct Tally {
    pub(crate) accepted: u64,
    pub(crate) ok: u64,
    pub(crate) reset: u64,
    pub(crate) early_eof: u64,
    pub(crate) idle: u64,
}

/// The server-side checks (run on the server thread); returns the figures.
pub(crate) fn check_server(o: &ServerOut) -> (String, Tally) {
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
