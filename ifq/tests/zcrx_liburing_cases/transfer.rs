//! Receiving as liburing's `transfer_bytes` does, with returns held or eager.

use super::*;

// ---------------------------------------------------------------------------------------------
// Receiving (liburing's `transfer_bytes`).

/// liburing's `fill_pattern`/`check_pattern` byte for stream position `i`.
pub(crate) fn pattern(i: usize) -> u8 {
    ((i as u64).wrapping_mul(1_000_000_001) ^ 0xdead_beef) as u8
}

/// What to do with received buffers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Returns {
    /// Hold the first `hold` buffers, then drop them all and flush once (`usize::MAX`: hold
    /// every buffer, never return anything).
    pub(crate) hold: usize,
    /// After that, flush once per `every` dropped buffers.
    pub(crate) every: usize,
}

/// liburing's `flags = 0`: nothing is returned.
pub(crate) const HOLD_ALL: Returns = Returns {
    hold: usize::MAX,
    every: 1,
};
/// liburing's `T_RETURN_BUFS`: every buffer back at once, with a flush.
pub(crate) const EAGER: Returns = Returns { hold: 0, every: 1 };

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// `res` 0 without `F_MORE`: the request's byte limit was reached (`RecvEvent::Eof`).
    Limit,
    NoBuffers,
    Error(i32),
}

pub(crate) struct Received {
    pub(crate) received: usize,
    pub(crate) end: End,
    /// The buffers held under `HOLD_ALL`, checked byte for byte.
    pub(crate) held: Vec<RxBuf>,
}

/// Waits (up to `deadline`) for at least one CQE and returns all that are there.
pub(crate) fn wait_cqes(ring: &mut Ring, deadline: Instant) -> Vec<(u64, i32, u32, [u64; 2])> {
    loop {
        assert!(Instant::now() < deadline, "no completion in time");
        let ts = Timespec::new().sec(1);
        match ring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        let cqes: Vec<_> = ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags(), *c.big_cqe()))
            .collect();
        if !cqes.is_empty() {
            return cqes;
        }
    }
}

/// Pushes `sqe` (with `USER_DATA`) and submits it.
pub(crate) fn submit(ring: &mut Ring, sqe: squeue::Entry) {
    let sqe = sqe.user_data(USER_DATA);
    // SAFETY: a RECV_ZC entry carries no pointer into this process's memory (the kernel holds
    // its own reference on the socket file while the request lives).
    unsafe { ring.submission().push(&sqe).expect("SQ has room") };
    ring.submit().expect("io_uring_enter");
}

/// liburing's `transfer_bytes`: one receive limited to `length` bytes (`sqe->len`) on the
/// server side of `pair`, through `rx`, submitted on `ring` naming ifq `id`, while the client
/// sends the pattern a page at a time, at most two pages ahead. Checks every byte, handles the
/// buffers as `returns` says, and returns how the request ended.
pub(crate) fn transfer_bytes(
    ring: &mut Ring,
    rx: &mut ZcrxIfq,
    id: u32,
    pair: &mut Pair,
    length: usize,
    returns: Returns,
) -> Received {
    let page = page();
    let sqe = opcode::RecvZc::new(Fd(pair.server.as_raw_fd()), length as u32)
        .ifq(id)
        .build();
    submit(ring, sqe);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tx_buf = vec![0u8; page];
    let (mut tx, mut received) = (0usize, 0usize);
    let (mut held, mut taken, mut dropped) = (Vec::new(), 0usize, 0usize);
    loop {
        if tx < length && tx - received < 2 * page {
            let n = page.min(length - tx);
            for (i, b) in tx_buf[..n].iter_mut().enumerate() {
                *b = pattern(tx + i);
            }
            pair.client.write_all(&tx_buf[..n]).expect("send");
            tx += n;
        }
        if tx == received && received < length {
            // Nothing in flight that could complete: send more first.
            continue;
        }
        for (user_data, res, flags, big) in wait_cqes(ring, deadline) {
            assert_eq!(user_data, USER_DATA);
            let c = rx
                .complete(OwnerId(1), res, flags, big)
                .unwrap_or_else(|e| panic!("completion res {res} flags {flags:#x}: {e}"));
            let (more, rearm) = (c.more, c.needs_rearm());
            let end = match c.event {
                RecvEvent::Data(buf) => {
                    assert!(more, "a data completion keeps the request armed");
                    for (i, &b) in buf.iter().enumerate() {
                        assert_eq!(b, pattern(received + i), "byte {}", received + i);
                    }
                    received += buf.len();
                    assert!(received <= tx, "received {received} of {tx} sent");
                    if taken < returns.hold {
                        held.push(buf);
                        taken += 1;
                        if taken == returns.hold {
                            held.clear();
                            rx.flush();
                        }
                    } else {
                        drop(buf);
                        dropped += 1;
                        if dropped % returns.every == 0 {
                            rx.flush();
                        }
                    }
                    continue;
                }
                RecvEvent::Eof => End::Limit,
                RecvEvent::NoBuffers => End::NoBuffers,
                RecvEvent::Error(e) => End::Error(e.raw_os_error().unwrap_or(-1)),
                RecvEvent::CqOverflow => panic!("CQ overflow with a 1024-entry CQ"),
            };
            assert!(!more, "{end:?} ends the request");
            // Only running dry asks for a new receive; the limit and errors end the stream.
            assert_eq!(rearm, end == End::NoBuffers, "{end:?}");
            if end == End::Limit {
                assert_eq!(received, length, "the byte limit ended the request");
            }
            return Received {
                received,
                end,
                held,
            };
        }
    }
}

/// The queue's books balance with nothing held: every chunk is the kernel's again.
pub(crate) fn assert_balanced(rx: &ZcrxIfq, what: &str) {
    let s = rx.snapshot();
    assert_eq!(s.counts.total(), AREA_PAGES as u32, "{what}: {s:?}");
    assert_eq!(s.counts.user, 0, "{what}: {s:?}");
    assert_eq!(s.held_bytes, 0, "{what}: {s:?}");
    assert!(s.owners.is_empty(), "{what}: {s:?}");
}

/// Twice the area through `rx` with every buffer returned at once, byte-exact; what liburing
/// calls a working queue.
pub(crate) fn twice_the_area(ring: &mut Ring, rx: &mut ZcrxIfq, returns: Returns, what: &str) {
    let mut pair = tcp_pair();
    let id = rx.zcrx_id();
    let out = transfer_bytes(ring, rx, id, &mut pair, 2 * area_len(), returns);
    assert_eq!(out.end, End::Limit, "{what}: {} bytes", out.received);
    let stats = rx.stats();
    assert_eq!(stats.ctrl_flush_errors, 0, "{what}: {stats:?}");
    println!(
        "{what}: {} bytes byte-exact through {} pages",
        out.received, AREA_PAGES
    );
}
