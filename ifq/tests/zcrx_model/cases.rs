//! Hand-written cases: end of stream and errors, a full refill queue, the home thread.

use super::*;

/// Under `CQE_MIXED` filler entries and the `F_32` flag must not confuse decoding; and a
/// zero-length "data" CQE is EOF, not a handle.
#[test]
pub(crate) fn eof_and_errors_are_not_handles() {
    let page = rustix::param::page_size();
    let area = Area::builder().chunk_size(page).chunks(2).build().unwrap();
    let mut ifq = ZcrxIfq::simulated(area, 2, TOKEN).unwrap();
    let c = ifq.complete(OwnerId(0), 0, 0, [TOKEN, 0]).unwrap();
    assert!(matches!(c.event, RecvEvent::Eof) && !c.needs_rearm());
    let c = ifq.complete(OwnerId(0), -104, 0, [0; 2]).unwrap();
    assert!(matches!(c.event, RecvEvent::Error(ref e) if e.raw_os_error() == Some(104)));
    let c = ifq.complete(OwnerId(0), -ENOMEM, 0, [0; 2]).unwrap();
    assert!(matches!(c.event, RecvEvent::NoBuffers) && c.needs_rearm());
    assert_eq!(ifq.stats().no_buffers, 1);
    assert_eq!(ifq.snapshot().counts.kernel, 2);
}

/// A full refill queue: the rest waits, in order, and the accounting stays balanced meanwhile.
#[test]
pub(crate) fn full_refill_queue_keeps_the_rest_pending() {
    let page = rustix::param::page_size() as u64;
    let area = Area::builder()
        .chunk_size(page as usize)
        .chunks(8)
        .build()
        .unwrap();
    let mut ifq = ZcrxIfq::simulated(area, 2, TOKEN).unwrap();
    assert_eq!(ifq.rq_entries(), 2);
    // Three fragments into page 0, one into each of pages 1..4.
    let mut bufs = Vec::new();
    for (p, off) in [(0, 0), (0, 100), (0, 200), (1, 0), (2, 0), (3, 0)] {
        let c = ifq
            .complete(OwnerId(1), 50, CQE_F_MORE, [TOKEN | (p * page + off), 0])
            .unwrap();
        let RecvEvent::Data(b) = c.event else {
            panic!("data expected")
        };
        bufs.push(b);
    }
    let others = bufs.split_off(3);
    drop(bufs);
    // Page 0 owes 3 entries, the ring holds 2: it cannot be completed yet.
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 2);
    assert_eq!(ifq.pending_chunks(), 1);
    drop(others);
    assert_eq!(ifq.flush(), 0, "the ring is still full");
    assert_eq!(ifq.pending_chunks(), 4);
    let snap = ifq.snapshot();
    assert_eq!(
        (snap.counts.refill, snap.counts.kernel, snap.counts.user),
        (4, 4, 0)
    );
    assert_eq!(snap.held_bytes, 0);
    // The kernel takes both; page 0's last entry and one more page fit, oldest first.
    assert_eq!(
        [ifq.sim_read_rqe(0).0, ifq.sim_read_rqe(1).0],
        [TOKEN, TOKEN]
    );
    ifq.sim_set_head(2);
    assert_eq!(ifq.flush(), 2);
    assert_eq!(ifq.sim_tail(), 4);
    assert_eq!(ifq.sim_read_rqe(2).0, TOKEN);
    assert!([1, 2, 3]
        .map(|p| TOKEN | (p * page))
        .contains(&ifq.sim_read_rqe(3).0));
    ifq.sim_set_head(4);
    assert_eq!(ifq.flush(), 2);
    assert_eq!(ifq.pending_chunks(), 0);
    assert_eq!(ifq.snapshot().counts.kernel, 8);
    assert_eq!(ifq.stats().rqes, 6);
    assert!(ifq.stats().rq_full >= 2);
    // A head that cannot be right (past the published tail) is ignored: the producer still
    // believes the kernel is at 4, so both slots are taken and nothing is overwritten.
    ifq.sim_set_head(1000);
    let c = ifq
        .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | (5 * page), 0])
        .unwrap();
    drop(c);
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 6);
    assert_eq!(ifq.pending_chunks(), 1);
    ifq.sim_set_head(6);
    assert_eq!(ifq.flush(), 1);
    assert_eq!(ifq.sim_tail(), 7);
    assert_eq!(ifq.sim_read_rqe(6).0, TOKEN | (5 * page));
    assert_eq!(ifq.pending_chunks(), 0);
}

/// A queue with a home thread completes receives only there: elsewhere the completion is a typed
/// error (the home thread's drops rely on redeliveries happening at home) and its reference goes
/// back to the kernel at the next flush, and back at home it works again.
#[test]
pub(crate) fn home_thread_owns_completions() {
    let page = rustix::param::page_size() as u64;
    let area = Area::builder()
        .chunk_size(page as usize)
        .chunks(2)
        .build()
        .unwrap();
    let mut ifq = ZcrxIfq::simulated(area, 2, TOKEN).unwrap();
    assert!(ifq.set_home_thread());
    let c = ifq
        .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN, 0])
        .unwrap();
    let RecvEvent::Data(held) = c.event else {
        panic!("data expected")
    };
    let mut ifq = std::thread::spawn(move || {
        assert!(!ifq.set_home_thread(), "the home is taken");
        let e = ifq
            .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | 100, 0])
            .unwrap_err();
        assert!(matches!(e, zcrx_ifq::Error::AwayFromHome), "{e}");
        assert!(e.to_string().contains("set_home_thread"));
        // A refused completion that is not valid either is refused for that, and costs nothing.
        assert!(ifq
            .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | (1 << 40), 0])
            .is_err());
        ifq
    })
    .join()
    .unwrap();
    assert_eq!(ifq.stats().refused, 1);
    // The refused reference goes back at the next flush (the chunk itself is still held, so
    // only that entry is written), and only once.
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 1, "the refused reference went back");
    assert_eq!(
        ifq.sim_read_rqe(0).0,
        TOKEN,
        "buffer 0, where it was delivered"
    );
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 1);
    assert_eq!(
        ifq.snapshot().counts.user,
        1,
        "the held chunk is still held"
    );
    ifq.sim_set_head(1); // the kernel took it
                         // At home again: a second fragment of the held chunk, then both drop here.
    let c = ifq
        .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | 200, 0])
        .unwrap();
    let RecvEvent::Data(again) = c.event else {
        panic!("data expected")
    };
    assert_eq!(ifq.snapshot().counts.user, 1);
    drop((held, again));
    assert_eq!(ifq.flush(), 1);
    assert_eq!(
        ifq.sim_tail(),
        3,
        "one entry per delivery, and the refused one"
    );
}
