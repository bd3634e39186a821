//! liburing's hostile refill cases: `test_invalid_rqes`, `test_invalid_rq_pointers`.

use super::*;

// test_invalid_rqes, test_invalid_rq_pointers

/// Writes `entries` one at a time, each followed by a flush (liburing's `flush_invalid`), and
/// asserts every flush succeeds.
///
/// `raw_refill` writes from the queue's own tail without telling the queue, so step `i`
/// rewrites the entries before it (the kernel has passed them) and publishes `i + 1`: the
/// kernel reads just the new one.
pub(crate) fn flush_invalid(rx: &mut ZcrxIfq, entries: &[(u64, u32, u32)], what: &str) {
    for i in 0..entries.len() {
        // SAFETY: no RxBuf of this queue is alive (nothing was received), so no entry can name
        // a live handle's buffer.
        unsafe { rx.raw_refill(&entries[..=i], None, None) };
        assert_eq!(rx.raw_ctrl_flush(), Ok(()), "{what}: flush after entry {i}");
    }
    println!("{what}: {} flushes, each 0", entries.len());
}

/// After `n` raw refill entries the kernel's head is `n` past the queue's producer: the first
/// `n` entries the queue writes land in slots the kernel has passed. Holding the first `n`
/// buffers and returning them in one flush publishes them together and brings the two indices
/// level again (those buffers stay the kernel's until the teardown scrub); from then on twice
/// the area goes through the same queue byte-exact, every buffer back through its own entry.
///
/// Without the hold the bytes still arrive, which is why `assert_level` is needed: the kernel
/// takes a tail behind its head for a full ring and re-reads all 128 slots at every flush, stale
/// entries included, while the queue never sees a head it can believe, fills its ring (measured
/// on 7.3.4: `rq_full` 136, 128 of 264 chunks returned) and the transfer lives on the kernel's
/// rescans of old entries.
pub(crate) fn same_queue_still_works(ring: &mut Ring, rx: &mut ZcrxIfq, n: usize, what: &str) {
    twice_the_area(ring, rx, Returns { hold: n, every: 1 }, what);
    assert_level(rx, what);
    assert_balanced(rx, what);
}

/// The queue's producer and the kernel's consumer agree: every delivered buffer went back
/// through a refill entry of its own (one page per chunk, one reference per buffer without a
/// device), none waited for room, and the kernel refused no flush.
pub(crate) fn assert_level(rx: &ZcrxIfq, what: &str) {
    let stats = rx.stats();
    assert!(stats.deliveries > 0, "{what}: {stats:?}");
    assert_eq!(stats.returned_chunks, stats.deliveries, "{what}: {stats:?}");
    assert_eq!(stats.rqes, stats.deliveries, "{what}: {stats:?}");
    assert_eq!(stats.rq_full, 0, "{what}: {stats:?}");
    assert_eq!(rx.pending_chunks(), 0, "{what}: {stats:?}");
    assert_eq!(stats.ctrl_flush_errors, 0, "{what}: {stats:?}");
}

/// Sixteen entries naming buffer 0, which the application holds no reference on: the kernel
/// skips each (no user reference to drop), every flush returns 0, and the queue works after.
pub(crate) fn refill_entries_naming_an_unheld_buffer() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    let token = rx.area_token();
    flush_invalid(
        &mut rx,
        &[(token, 1, 0); 16],
        "16 entries for unheld buffer 0",
    );
    assert_balanced(&rx, "after the entries");
    assert_eq!(rx.stats().rqes, 0, "the queue itself wrote nothing");
    same_queue_still_works(&mut ring, &mut rx, 16, "after 16 unheld returns");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// An offset past the area, one with the 48 low bits all set, a wrong area id, padding set:
/// the kernel stops its flush at each bad entry (consumed), every flush returns 0, and the
/// queue works after.
pub(crate) fn refill_entries_out_of_bounds() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    let token = rx.area_token();
    let hostile = [
        (token + area_len() as u64, 1, 0),
        ((1u64 << IORING_ZCRX_AREA_SHIFT) - 1, 1, 0),
        (token + (1u64 << IORING_ZCRX_AREA_SHIFT), 1, 0),
        (token, 1, 1),
    ];
    flush_invalid(&mut rx, &hostile, "out-of-bounds entries");
    assert_balanced(&rx, "after the entries");
    same_queue_still_works(&mut ring, &mut rx, hostile.len(), "after bad entries");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Garbage indices: tail 0 with head 1. The kernel keeps its own head and stores it back over
/// the garbage, so the indices stay level and the same queue works after.
pub(crate) fn refill_tail_behind_head() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    // SAFETY: no entries are written; nothing was received, so no handle lives.
    unsafe { rx.raw_refill(&[], Some(0), Some(1)) };
    assert_eq!(rx.raw_ctrl_flush(), Ok(()), "flush with tail 0, head 1");
    println!("tail 0, head 1: flush 0");
    assert_balanced(&rx, "after tail 0, head 1");
    twice_the_area(&mut ring, &mut rx, EAGER, "after tail 0, head 1");
    assert_level(&rx, "after tail 0, head 1");
    assert_balanced(&rx, "after the transfer");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Garbage indices: tail at twice the ring size. The kernel reads at most one ring's worth per
/// flush (zeroed slots: buffer 0, unheld, skipped), every flush returns 0. The queue's producer
/// is now two rings behind the kernel, so a fresh queue on the same ring shows the ring
/// still works.
pub(crate) fn refill_tail_past_the_ring() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    // SAFETY: no entries are written; nothing was received, so no handle lives.
    unsafe { rx.raw_refill(&[], Some(2 * rx.rq_entries()), None) };
    assert_eq!(rx.raw_ctrl_flush(), Ok(()), "flush with tail 2 * entries");
    assert_eq!(rx.raw_ctrl_flush(), Ok(()), "the second ring's worth");
    println!("tail 2 * entries: flush 0, twice");
    assert_balanced(&rx, "after tail 2 * entries");
    assert_eq!(rx.teardown().held_chunks, 0);

    let mut fresh = ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(RQ_ENTRIES), None)
        .expect("a second queue on the same ring");
    assert_ne!(fresh.zcrx_id(), 0, "the first id is still the old queue's");
    twice_the_area(
        &mut ring,
        &mut fresh,
        EAGER,
        "a fresh queue after tail 2 * entries",
    );
    assert_eq!(fresh.teardown().held_chunks, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
