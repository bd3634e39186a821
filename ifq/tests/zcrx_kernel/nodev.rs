//! zcrx without a device (Linux 7.1+): registration, data through many chunks, events and
//! copy statistics, teardown with buffers held elsewhere.

use super::*;

/// `ZCRX_REG_NODEV` arrived in 7.1; older kernels reject the flag with `EINVAL`, which becomes
/// `KernelTooOld`. On 7.1+ a device-less queue copies loopback TCP data into the area.
pub(crate) fn register_nodev() -> Outcome {
    require_root()?;
    let kernel = KernelVersion::current().expect("uname");
    let mut ring = zcrx_ring();
    let area = Area::builder()
        .chunk_size(4096)
        .chunks(256)
        .build()
        .unwrap();
    let result = ZcrxIfq::register_nodev(&ring, area, None, None);
    if !kernel.at_least(7, 1) {
        match result {
            Err(
                e @ Error::KernelTooOld {
                    feature: "ZCRX_REG_NODEV",
                    needs: "7.1",
                },
            ) => {
                println!("{kernel}: {e}");
            }
            other => panic!("expected KernelTooOld on {kernel}, got {other:?}"),
        }
        return Ok(());
    }
    let mut rx = result.expect("ZCRX_REG_NODEV on 7.1+");
    assert!(rx.is_no_device());
    assert!(rx.features().queried && rx.features().no_device());
    // 1 MiB through a 1 MiB area: without ZCRX_CTRL_FLUSH_RQ after returns the area runs dry
    // (nothing else takes refill entries without a device).
    let got = transfer(&mut ring, &mut rx, 1 << 20);
    assert_eq!(got, 1 << 20);
    let stats = rx.stats();
    assert!(stats.ctrl_flushes > 0, "{stats:?}");
    assert_eq!(stats.ctrl_flush_errors, 0, "{stats:?}");
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 0);
    Ok(())
}

/// 64 MiB through a 64-chunk (256 KiB) area without a device: every buffer goes round 256
/// times, byte-exact, and the accounting ends clean.
pub(crate) fn nodev_64_mib_through_64_chunks() -> Outcome {
    let (mut ring, mut rx) = nodev_queue(64, None)?;
    assert_eq!(rx.rq_entries(), 64);
    const LEN: usize = 64 << 20;
    let got = transfer(&mut ring, &mut rx, LEN);
    assert_eq!(got, LEN as u64);
    let stats = rx.stats();
    println!("64 MiB through 64 chunks: {stats:?}");
    assert!(
        stats.returned_chunks >= (LEN / (64 * 4096)) as u64,
        "{stats:?}"
    );
    assert_eq!(stats.ctrl_flush_errors, 0);
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 0);
    Ok(())
}

/// Events and copy statistics (Linux 7.2) without a device: every receive is a copy, so the
/// kernel posts one copy event (then none until re-armed) and counts the bytes it copied; with
/// every buffer held the copy path runs dry, and the receive ends with -ENOMEM.
pub(crate) fn nodev_events_and_copy_statistics() -> Outcome {
    require_root()?;
    let kernel = KernelVersion::current().expect("uname");
    let features = zcrx_ifq::zcrx::ZcrxFeatures::detect().expect("query");
    if !features.events() || !features.no_device() {
        return Err(skip(format!(
            "{kernel} has no zcrx events (7.2+) or no ZCRX_REG_NODEV (7.1+)"
        )));
    }
    const EVENTS: u64 = 0xe7e7;
    let mut ring = zcrx_ring();
    let area = Area::builder().chunk_size(4096).chunks(16).build().unwrap();
    let mut rx = ZcrxIfq::register(
        &ring,
        area,
        zcrx_ifq::zcrx::ZcrxConfig::no_device().events(EVENTS),
    )
    .expect("NODEV with events");
    assert_eq!(rx.event_user_data(), Some(EVENTS));
    // Not fired yet: re-arming is the kernel's EINVAL.
    assert!(rx.rearm_event(zcrx_ifq::zcrx::ZcrxEvent::Copy).is_err());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let sqe = rx.recv_zc(Fd(server.as_raw_fd())).user_data(1);
    // SAFETY: `server` outlives the request (the ring goes first).
    unsafe { ring.submission().push(&sqe).unwrap() };
    #[derive(Default)]
    struct Seen {
        events: Vec<zcrx_ifq::zcrx::ZcrxEvent>,
        held: Vec<zcrx_ifq::RxBuf>,
        bytes: u64,
        ended: Option<String>,
    }
    // Runs the ring until `until` holds, holding every buffer if `hold`.
    fn pump(
        rx: &mut ZcrxIfq,
        ring: &mut IoUring<squeue::Entry, cqueue::Entry32>,
        seen: &mut Seen,
        hold: bool,
        until: impl Fn(&Seen) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !until(seen) {
            assert!(
                Instant::now() < deadline,
                "stalled: {} bytes, {:?}, {:?}",
                seen.bytes,
                seen.events,
                seen.ended
            );
            let ts = Timespec::new().nsec(50_000_000);
            let _ = ring
                .submitter()
                .submit_with_args(1, &SubmitArgs::new().timespec(&ts));
            let cqes: Vec<_> = ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags(), *c.big_cqe()))
                .collect();
            for (ud, res, flags, big) in cqes {
                if ud == EVENTS {
                    seen.events.push(rx.event(res).expect("a known event"));
                    continue;
                }
                let c = rx.complete(OwnerId(1), res, flags, big).unwrap();
                match c.event {
                    RecvEvent::Data(buf) => {
                        seen.bytes += buf.len() as u64;
                        if hold {
                            seen.held.push(buf);
                        }
                    }
                    e => seen.ended = Some(format!("{e:?}")),
                }
            }
            rx.flush();
        }
    }
    let mut seen = Seen::default();
    // Round 1: 16 KiB, buffers dropped at once. Round 2: 256 KiB, every buffer held, so the
    // 16-page area runs dry.
    client.write_all(&[7u8; 16 << 10]).unwrap();
    pump(&mut rx, &mut ring, &mut seen, false, |s| {
        s.bytes >= 16 << 10 && !s.events.is_empty()
    });
    assert_eq!(
        seen.events,
        [zcrx_ifq::zcrx::ZcrxEvent::Copy],
        "one copy event until re-armed"
    );
    let s = rx.stats();
    assert_eq!((s.copy_bytes, s.copy_events), (16 << 10, 1), "{s:?}");
    // 7.3 counts a copy per skb fragment copied (io_zcrx_copy_frag), not per CQE as the uapi
    // comment says: 16 KiB over loopback arrive as one fragment and four CQEs.
    assert!(s.copy_count >= 1 && s.copy_count <= s.deliveries, "{s:?}");
    rx.rearm_event(zcrx_ifq::zcrx::ZcrxEvent::Copy)
        .expect("re-arm after it fired");

    client.write_all(&[9u8; 256 << 10]).unwrap();
    pump(&mut rx, &mut ring, &mut seen, true, |s| s.ended.is_some());
    let Seen {
        events,
        held,
        bytes,
        ended,
    } = seen;
    let s = rx.stats();
    println!("events {events:?}, ended with {ended:?}; {s:?}");
    assert_eq!(
        ended.as_deref(),
        Some("NoBuffers"),
        "the copy path ran dry (-ENOMEM)"
    );
    // 7.3 posts ZCRX_EVENT_ALLOC_FAIL only from the page pool's refill
    // (io_pp_zc_alloc_netmems); the copy path that a queue without a device uses fails with
    // -ENOMEM and posts nothing. So without a device the receive's end is the only signal.
    assert_eq!(s.out_of_buffer_events, 0, "{s:?}");
    assert_eq!(s.copy_events, 2, "re-armed, it fired once more: {s:?}");
    assert_eq!(
        s.copy_bytes, bytes,
        "the kernel counted every byte it copied"
    );
    assert_eq!(held.len(), 16, "every page of the area is held");
    drop(held);
    rx.flush();
    drop(server);
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Fds of this process open on the file with inode `ino` (each io_uring has its own inode).
pub(crate) fn fds_on(ino: u64) -> usize {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
        .filter(|m| m.ino() == ino)
        .count()
}

/// Teardown without a device while buffers are held on other threads: the report counts them,
/// the ring lives on while they do (the kernel's scrub would let it reuse them), their bytes do
/// not change while another queue streams 8 MiB, and the ring goes once the last one drops.
pub(crate) fn nodev_teardown_with_buffers_held_elsewhere() -> Outcome {
    let (mut ring, mut rx) = nodev_queue(64, None)?;
    let ring_ino = rustix::fs::fstat(&ring).unwrap().st_ino;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(&[0x5a; 40 << 10]).unwrap();
    let sqe = rx.recv_zc(Fd(server.as_raw_fd())).user_data(1);
    // SAFETY: `server` outlives the request (the queue's ring goes first, below).
    unsafe { ring.submission().push(&sqe).unwrap() };
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held
        .iter()
        .map(|b: &zcrx_ifq::RxBuf| b.len())
        .sum::<usize>()
        < 40 << 10
    {
        assert!(Instant::now() < deadline, "40 KiB did not arrive");
        ring.submit_and_wait(1).unwrap();
        let cqes: Vec<_> = ring
            .completion()
            .map(|c| (c.result(), c.flags(), *c.big_cqe()))
            .collect();
        for (res, flags, big) in cqes {
            if let RecvEvent::Data(buf) = rx.complete(OwnerId(1), res, flags, big).unwrap().event {
                held.push(buf);
            }
        }
    }
    let sums: Vec<u64> = held.iter().map(|b| checksum(b)).collect();
    let n = held.len();
    // Half the buffers go to other threads, which hold them until told to check and drop.
    let (tx, rx_done) = std::sync::mpsc::channel::<()>();
    let rx_done = std::sync::Arc::new(std::sync::Mutex::new(rx_done));
    let elsewhere: Vec<_> = held
        .drain(n / 2..)
        .zip(sums[n / 2..].to_vec())
        .map(|(buf, sum)| {
            let wait = std::sync::Arc::clone(&rx_done);
            std::thread::spawn(move || {
                let _ = wait.lock().unwrap().recv();
                assert_eq!(checksum(&buf), sum, "a held buffer changed");
            })
        })
        .collect();
    let report = rx.teardown();
    assert_eq!(report.held_chunks as usize, n, "{report:?}");
    drop(ring);
    drop(server);
    assert_eq!(
        fds_on(ring_ino),
        1,
        "the queue's duplicate keeps the ring open"
    );
    // Another queue streams 8 MiB meanwhile: the kernel must not reuse the held pages.
    let (mut ring2, mut rx2) = nodev_queue(64, None).unwrap();
    assert_eq!(transfer(&mut ring2, &mut rx2, 8 << 20), 8 << 20);
    for (buf, sum) in held.iter().zip(&sums) {
        assert_eq!(checksum(buf), *sum, "a held buffer changed");
    }
    drop(held);
    for _ in &elsewhere {
        tx.send(()).unwrap();
    }
    for t in elsewhere {
        t.join().expect("a holder thread");
    }
    drop(rx2.teardown());
    drop(ring2);
    assert_eq!(fds_on(ring_ino), 0, "the ring went with the last buffer");
    println!(
        "{n} buffers held across teardown, {} on other threads",
        n - n / 2
    );
    Ok(())
}

pub(crate) fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}
