//! liburing's receive cases: `test_invalid_recv`, `test_exit_with_inflight`, `test_recv`,
//! `test_abnormal_exit`.

use super::*;

// test_invalid_recv

/// Receives on fd -1 (EBADF), on the ring fd (ENOTSOCK), naming another ifq id (EINVAL, from
/// the request's prep) and, beyond liburing, on a UDP socket (EPROTONOSUPPORT): each ends at
/// once without `F_MORE`, and `complete()` gives `RecvEvent::Error` with that errno and no
/// re-arm.
pub(crate) fn invalid_recv() -> Outcome {
    let _ = nodev_guard()?;
    let (mut ring, mut rx, pair) = prep_server(RQ_ENTRIES);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ring_fd = ring.as_raw_fd();
    let cases = [
        ("fd -1", rx.recv_zc(Fd(-1)), libc::EBADF),
        ("the ring fd", rx.recv_zc(Fd(ring_fd)), libc::ENOTSOCK),
        (
            "a wrong zcrx id",
            opcode::RecvZc::new(Fd(pair.server.as_raw_fd()), 0)
                .ifq(rx.zcrx_id() + 1)
                .build(),
            libc::EINVAL,
        ),
        (
            "a UDP socket",
            rx.recv_zc(Fd(udp.as_raw_fd())),
            libc::EPROTONOSUPPORT,
        ),
    ];
    for (what, sqe, errno) in cases {
        submit(&mut ring, sqe);
        let cqes = wait_cqes(&mut ring, Instant::now() + Duration::from_secs(10));
        let [(user_data, res, flags, big)] = cqes[..] else {
            panic!("{what}: one CQE expected, got {cqes:?}");
        };
        assert_eq!(user_data, USER_DATA);
        assert_eq!(flags & CQE_F_MORE, 0, "{what}: unexpected F_MORE");
        assert_eq!(res, -errno, "{what}: {}", errno_name(-res));
        let c = rx
            .complete(OwnerId(1), res, flags, big)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!c.more && !c.needs_rearm(), "{what}");
        match c.event {
            RecvEvent::Error(e) => assert_eq!(e.raw_os_error(), Some(errno), "{what}"),
            other => panic!("{what}: expected RecvEvent::Error, got {other:?}"),
        }
        println!(
            "receive on {what}: {} -> RecvEvent::Error, no F_MORE",
            errno_name(errno)
        );
    }
    assert_balanced(&rx, "after failed receives");
    assert_eq!(rx.stats().deliveries, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_exit_with_inflight

/// The ring exits with a receive armed (no data yet). Afterwards the receive is gone: bytes
/// sent then stay in the socket for an ordinary read.
pub(crate) fn exit_with_a_receive_in_flight() -> Outcome {
    let _ = nodev_guard()?;
    let (mut ring, rx, mut pair) = prep_server(RQ_ENTRIES);
    submit(&mut ring, rx.recv_zc(Fd(pair.server.as_raw_fd())));
    assert!(
        ring.completion().is_empty(),
        "the receive ended before any data"
    );
    // The queue holds a duplicate of the ring fd: both go, so the ring exits.
    assert_eq!(rx.teardown().held_chunks, 0);
    drop(ring);
    std::thread::sleep(Duration::from_secs(1));
    pair.client.write_all(b"after the ring").unwrap();
    pair.server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = [0u8; 14];
    pair.server
        .read_exact(&mut got)
        .expect("the bytes stayed in the socket: the receive died with the ring");
    assert_eq!(&got, b"after the ring");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_recv

/// One page without returning it, then twice the area without returns on the same queue: the
/// copy path runs out of free buffers and the receive ends with -ENOMEM, `RecvEvent::NoBuffers`,
/// counted in `ZcrxStats::no_buffers`, with every chunk of the area held byte-exact.
pub(crate) fn recv_without_returns_runs_dry() -> Outcome {
    let _ = nodev_guard()?;
    let (mut ring, mut rx, mut pair) = prep_server(RQ_ENTRIES);
    let id = rx.zcrx_id();
    let one = transfer_bytes(&mut ring, &mut rx, id, &mut pair, page(), HOLD_ALL);
    assert_eq!(one.end, End::Limit, "one page");
    let all = transfer_bytes(&mut ring, &mut rx, id, &mut pair, 2 * area_len(), HOLD_ALL);
    assert_eq!(
        all.end,
        End::NoBuffers,
        "twice the area without returns: {} bytes",
        all.received
    );
    assert!(all.received > 0 && all.received < 2 * area_len());
    let stats = rx.stats();
    assert_eq!(stats.no_buffers, 1, "{stats:?}");
    let s = rx.snapshot();
    assert_eq!(
        s.counts.user, AREA_PAGES as u32,
        "-ENOMEM comes when every buffer is out: {s:?}"
    );
    assert_eq!(s.held_bytes, (one.received + all.received) as u64, "{s:?}");
    println!(
        "twice the area without returns: -ENOMEM after {} bytes, all {AREA_PAGES} chunks held",
        one.received + all.received
    );
    drop(one.held);
    drop(all.held);
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 0, "{report:?}");
    Ok(())
}

/// One page, then twice the area, every buffer returned with a flush: byte-exact.
pub(crate) fn recv_with_returns() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, mut pair) = prep_server(RQ_ENTRIES);
    let id = rx.zcrx_id();
    let one = transfer_bytes(&mut ring, &mut rx, id, &mut pair, page(), EAGER);
    assert_eq!(one.end, End::Limit, "one page with returns");
    let two = transfer_bytes(&mut ring, &mut rx, id, &mut pair, 2 * area_len(), EAGER);
    assert_eq!(
        two.end,
        End::Limit,
        "twice the area: {} bytes",
        two.received
    );
    let stats = rx.stats();
    assert_eq!(stats.no_buffers, 0, "{stats:?}");
    assert_eq!(stats.ctrl_flush_errors, 0, "{stats:?}");
    assert!(stats.returned_chunks as usize >= AREA_PAGES, "{stats:?}");
    assert_level(&rx, "one page and twice the area with returns");
    assert_balanced(&rx, "after the transfers");
    println!("one page and twice the area with returns: byte-exact");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Lazy returns through a 16-entry refill ring (the area is larger than 17 pages): buffers
/// dropped as they come, flushed only every 16, twice the area byte-exact.
pub(crate) fn recv_lazy_returns_small_refill_ring() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    assert!(AREA_PAGES > RQ_ENTRIES_SMALL as usize + 1);
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES_SMALL);
    let lazy = Returns {
        hold: 0,
        every: RQ_ENTRIES_SMALL as usize,
    };
    twice_the_area(&mut ring, &mut rx, lazy, "lazy returns, 16 refill entries");
    assert_eq!(rx.stats().no_buffers, 0);
    // The last few buffers were dropped after the last flush: the queue collects dropped handles
    // only when it flushes, and a snapshot counts their chunks as held until then.
    let s = rx.snapshot();
    assert!(s.counts.user < RQ_ENTRIES_SMALL, "{s:?}");
    rx.flush();
    assert_level(&rx, "lazy returns");
    assert_balanced(&rx, "after lazy returns and a last flush");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_abnormal_exit

/// The ring exits with a receive that has data waiting: queued as task work (direct) or running
/// in io-wq (`IOSQE_ASYNC`), with or without an export pinning the ifq. The kernel must survive
/// it; an export must still import afterwards and receive a page byte-exact on another ring (the
/// ifq outlives the ring that died under it); and the kernel serves a fresh queue after.
pub(crate) fn abnormal_exit(iowq: bool, pin: bool) -> Outcome {
    let f = nodev_guard()?;
    if pin && !f.export_import() {
        return Err(skip("zcrx export is not supported (liburing skips it too)"));
    }
    let mut ring = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(16)
        .unwrap();
    let rx = if pin {
        exportable_queue(&ring)
    } else {
        ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(RQ_ENTRIES), None)
            .expect("ZCRX_REG_NODEV")
    };
    let mut pair = tcp_pair();
    let sqe = rx.recv_zc(Fd(pair.server.as_raw_fd()));
    // The export takes the queue over: from here the export fd, not this ZcrxIfq, holds it.
    let (rx, export) = if pin {
        (None, Some(rx.export().expect("export")))
    } else {
        (Some(rx), None)
    };
    if !iowq {
        submit(&mut ring, sqe);
        // Wakes the armed receive: its task work waits for the next enter, which never comes.
        pair.client.write_all(&[0; 16]).unwrap();
    } else {
        pair.client.write_all(&[0; 16]).unwrap();
        submit(&mut ring, sqe.flags(squeue::Flags::ASYNC));
    }
    // Nothing was completed, so nothing is held: the queue and the ring both go now.
    if let Some(rx) = rx {
        assert_eq!(rx.teardown().held_chunks, 0);
    }
    drop(ring);
    std::thread::sleep(Duration::from_micros(300));
    drop(pair);
    if let Some(export) = export {
        let mut other = zcrx_ring();
        let mut imported = ZcrxIfq::import(&other, export, None)
            .expect("import after the exporting ring died with a receive in flight");
        let mut pair = tcp_pair();
        let id = imported.zcrx_id();
        let out = transfer_bytes(&mut other, &mut imported, id, &mut pair, page(), EAGER);
        assert_eq!(out.end, End::Limit, "a page through the surviving ifq");
        println!("abnormal exit (io-wq {iowq}) with an export: the ifq imports and receives");
        assert_eq!(imported.teardown().held_chunks, 0);
    }
    let (mut ring, mut rx, mut pair) = prep_server(RQ_ENTRIES);
    let id = rx.zcrx_id();
    let out = transfer_bytes(&mut ring, &mut rx, id, &mut pair, page(), EAGER);
    assert_eq!(out.end, End::Limit, "a fresh queue after the abnormal exit");
    Ok(())
}

pub(crate) fn abnormal_exit_direct() -> Outcome {
    abnormal_exit(false, false)
}

pub(crate) fn abnormal_exit_iowq() -> Outcome {
    abnormal_exit(true, false)
}

pub(crate) fn abnormal_exit_direct_exported() -> Outcome {
    abnormal_exit(false, true)
}

pub(crate) fn abnormal_exit_iowq_exported() -> Outcome {
    abnormal_exit(true, true)
}
