//! The buffer-ring backend against the real kernel, over loopback TCP.

mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use test_kit::{skip, Outcome};
use zcrx_ifq::RxPool;

use common::{is_mapped, Fnv, Pattern};
use zcrx_ifq::bufring::{BufRing, BufRingConfig};
use zcrx_ifq::io_uring::{types::Fd, IoUring};
use zcrx_ifq::{Area, OwnerId, RecvEvent, RxBuf};

const SEED: u64 = 0x5eed_1234_abcd_ef01;

/// Starts a sender that writes `total` pattern bytes and returns its checksum.
fn sender(total: usize) -> (TcpStream, std::thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tx = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut p = Pattern::new(SEED);
        let mut sum = Fnv::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            p.fill(&mut buf[..n]);
            sum.update(&buf[..n]);
            if s.write_all(&buf[..n]).is_err() {
                break; // the receiver closed early (some tests do)
            }
            left -= n;
        }
        sum.0
    });
    let (rx, _) = listener.accept().unwrap();
    (rx, tx)
}

struct Received {
    bytes: usize,
    checksum: u64,
    no_buffers: u64,
    rearms: u64,
}

/// Receives everything with a multishot receive on `ring`, holding up to `hold` handles at a
/// time (so the pool runs dry), verifying every byte in order.
fn receive_all(ring: &mut IoUring, rx: &mut BufRing, sock: &TcpStream, hold: usize) -> Received {
    let owner = OwnerId(7);
    let mut pattern = Pattern::new(SEED);
    let mut sum = Fnv::default();
    let mut held: VecDeque<RxBuf> = VecDeque::new();
    let mut out = Received {
        bytes: 0,
        checksum: 0,
        no_buffers: 0,
        rearms: 0,
    };
    let arm = |ring: &mut IoUring, rx: &BufRing| {
        let sqe = rx.recv_multishot(Fd(sock.as_raw_fd())).user_data(1);
        // SAFETY: the socket outlives the request (it is closed after the final completion).
        unsafe { ring.submission().push(&sqe).unwrap() };
    };
    arm(ring, rx);
    'outer: loop {
        ring.submit_and_wait(1).unwrap();
        let cqes: Vec<_> = ring.completion().map(|c| (c.result(), c.flags())).collect();
        for (res, flags) in cqes {
            let c = rx
                .complete(owner, res, flags)
                .expect("kernel completion is valid");
            let rearm = c.needs_rearm();
            match c.event {
                RecvEvent::Data(buf) => {
                    assert_eq!(
                        pattern.check(&buf),
                        None,
                        "byte mismatch at offset {}",
                        out.bytes
                    );
                    sum.update(&buf);
                    out.bytes += buf.len();
                    held.push_back(buf);
                    while held.len() > hold {
                        held.pop_front();
                    }
                }
                RecvEvent::NoBuffers => {
                    out.no_buffers += 1;
                    // Give everything back before re-arming.
                    held.clear();
                }
                RecvEvent::Eof => break 'outer,
                RecvEvent::CqOverflow => {}
                RecvEvent::Error(e) => panic!("receive failed: {e}"),
            }
            if rearm {
                rx.flush();
                arm(ring, rx);
                out.rearms += 1;
            }
        }
        rx.flush();
    }
    drop(held);
    rx.flush();
    out.checksum = sum.0;
    out
}

fn stream_test(total: usize, chunk_size: usize, chunks: usize, incremental: bool, hold: usize) {
    let (sock, tx) = sender(total);
    let mut ring = IoUring::new(256).unwrap();
    let area = Area::builder()
        .chunk_size(chunk_size)
        .chunks(chunks)
        .build()
        .unwrap();
    let mut rx = BufRing::register(
        &ring,
        area,
        BufRingConfig {
            incremental,
            ..Default::default()
        },
    )
    .expect("buffer rings work on Linux 5.19+ (incremental: 6.12+)");
    let out = receive_all(&mut ring, &mut rx, &sock, hold);
    let sent_sum = tx.join().unwrap();
    assert_eq!(out.bytes, total, "every byte arrived");
    assert_eq!(out.checksum, sent_sum, "checksums match");
    assert!(
        out.no_buffers > 0,
        "the pool was small enough to run dry ({} ENOBUFS)",
        out.no_buffers
    );
    assert_eq!(rx.stats().no_buffers, out.no_buffers);
    let snap = rx.snapshot();
    assert_eq!(snap.counts.user, 0, "nothing held");
    assert_eq!(snap.counts.refill, 0, "everything published");
    assert_eq!(snap.held_bytes, 0);
    let report = rx.teardown();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        report.counts.pool as usize, chunks,
        "every chunk back in the pool"
    );
    eprintln!(
        "{} MiB: {} ENOBUFS, {} re-arms, checksum {:#x}",
        total >> 20,
        out.no_buffers,
        out.rearms,
        out.checksum
    );
}

/// 512 MiB through a 16-chunk pool while the receiver holds up to 12 chunks: byte-exact, with
/// `-ENOBUFS` recovered from, and every chunk back in the pool afterwards.
fn stream_512mib_small_pool() {
    stream_test(512 << 20, 16 * 1024, 16, false, 12);
}

/// Incremental consumption (6.12+): chunks are filled by several receives; a chunk goes back
/// only when both the kernel and every handle are done with it.
fn stream_incremental_small_pool() {
    stream_test(128 << 20, 64 * 1024, 8, true, 6);
}

/// A leaked handle leaks memory, never safety: the area stays mapped forever.
fn forgotten_handle_keeps_area_mapped() {
    let (sock, tx) = sender(64 * 1024);
    let mut ring = IoUring::new(64).unwrap();
    let area = Area::builder().chunk_size(4096).chunks(32).build().unwrap();
    let mut rx = BufRing::register(&ring, area, BufRingConfig::default()).unwrap();
    let sqe = rx.recv_multishot(Fd(sock.as_raw_fd())).user_data(1);
    // SAFETY: the socket outlives the request.
    unsafe { ring.submission().push(&sqe).unwrap() };
    let buf = loop {
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().unwrap();
        if let RecvEvent::Data(b) = rx
            .complete(OwnerId(1), cqe.result(), cqe.flags())
            .unwrap()
            .event
        {
            break b;
        }
    };
    let base = buf.as_ptr() as u64 - buf.area_offset();
    std::mem::forget(buf);
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 1);
    assert!(is_mapped(base));
    let _ = tx.join();
}

/// `recv_multishot_capped` ends the request once the cap is reached (overshoot < one chunk),
/// on kernels that support the cap; older kernels refuse it with EINVAL, which the runtime
/// detects.
fn capped_multishot_stops_at_the_cap() -> Outcome {
    let (sock, tx) = sender(1 << 20);
    let mut ring = IoUring::new(64).unwrap();
    let area = Area::builder().chunk_size(4096).chunks(64).build().unwrap();
    let mut rx = BufRing::register(&ring, area, BufRingConfig::default()).unwrap();
    let sqe = rx
        .recv_multishot_capped(Fd(sock.as_raw_fd()), 10_000)
        .user_data(1);
    // SAFETY: the socket outlives the request.
    unsafe { ring.submission().push(&sqe).unwrap() };
    let mut got = 0usize;
    let mut held = vec![];
    loop {
        ring.submit_and_wait(1).unwrap();
        let cqes: Vec<_> = ring.completion().map(|c| (c.result(), c.flags())).collect();
        let mut ended = false;
        for (res, flags) in cqes {
            let c = rx.complete(OwnerId(1), res, flags).unwrap();
            match c.event {
                RecvEvent::Data(b) => {
                    got += b.len();
                    held.push(b);
                }
                RecvEvent::Error(e) if e.raw_os_error() == Some(22) => {
                    return Err(skip("this kernel has no IORING_RECV_MSHOT_LIM (EINVAL)"));
                }
                other => panic!("unexpected {other:?}"),
            }
            ended |= !c.more;
        }
        if ended {
            break;
        }
    }
    assert!(
        (10_000..10_000 + 4096).contains(&got),
        "received {got} bytes for a cap of 10000"
    );
    drop(sock);
    let _ = tx.join();
    Ok(())
}

test_kit::main!(
    stream_512mib_small_pool,
    stream_incremental_small_pool,
    forgotten_handle_keeps_area_mapped,
    capped_multishot_stops_at_the_cap,
);
