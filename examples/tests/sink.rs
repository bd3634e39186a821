//! The sink counts and verifies what std senders send it over loopback; a corrupted, shifted
//! or wrongly seeded stream fails verification at the right byte. Also the pattern itself.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{connect, Sink};
use examples::{Mismatch, Pattern, PatternVerifier, Verification};

/// Sends `data` in pieces of varying sizes, then ends the stream.
fn send(addr: std::net::SocketAddr, data: &[u8]) {
    let mut s = connect(addr);
    let mut off = 0;
    let mut size = 1usize;
    while off < data.len() {
        let n = size.min(data.len() - off);
        s.write_all(&data[off..off + n]).unwrap();
        off += n;
        size = (size * 7 + 3) % (256 * 1024) + 1;
    }
    s.shutdown(Shutdown::Write).unwrap();
}

fn small_xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn pattern_is_the_documented_xorshift64star() {
    // The first word for seed 1, computed by hand from the documented recurrence.
    let mut x: u64 = 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    let w = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
    assert_eq!(Pattern::bytes(1, 8), w);
    // Seed 0 is replaced by the documented constant.
    assert_eq!(
        Pattern::bytes(0, 64),
        Pattern::bytes(0x9E37_79B9_7F4A_7C15, 64)
    );
    assert_ne!(Pattern::bytes(2, 64), Pattern::bytes(3, 64));
}

#[test]
fn pattern_pieces_and_verifier_agree() {
    let whole = Pattern::bytes(99, 100_003);
    let mut rng = 12345u64;
    for _ in 0..50 {
        // Generated in random pieces: the same bytes.
        let mut p = Pattern::new(99);
        let mut got = vec![0u8; whole.len()];
        let mut off = 0;
        while off < got.len() {
            let n = ((small_xorshift(&mut rng) % 37) as usize).min(got.len() - off);
            p.fill(&mut got[off..off + n]);
            off += n;
        }
        assert!(got == whole);
        // Verified in random pieces: passes.
        let mut v = PatternVerifier::new(99);
        let mut off = 0;
        while off < whole.len() {
            let n = ((small_xorshift(&mut rng) % 29) as usize).min(whole.len() - off);
            assert!(v.update(&whole[off..off + n]));
            off += n;
        }
        assert_eq!(v.offset(), whole.len() as u64);
        assert_eq!(v.mismatch(), None);
    }
    // Every position of a flipped byte is found exactly, whatever the piece boundaries.
    for at in 0..40usize {
        for piece in [1usize, 3, 5, 8, 13] {
            let mut bad = whole[..64].to_vec();
            bad[at] ^= 0x5a;
            let mut v = PatternVerifier::new(99);
            for c in bad.chunks(piece) {
                v.update(c);
            }
            assert_eq!(
                v.mismatch(),
                Some(Mismatch {
                    offset: at as u64,
                    expected: whole[at],
                    got: whole[at] ^ 0x5a
                }),
                "flip at {at}, pieces of {piece}"
            );
        }
    }
}

/// 64 MiB on one connection plus 4 × 16 MiB concurrently, all verified; counts exact.
#[test]
fn sink_counts_and_verifies() {
    let seed = 0xC0FFEE;
    let sink = Sink::start(2, Some(seed));
    let big = Pattern::bytes(seed, 64 << 20);
    send(sink.addr, &big);
    let r = sink.next_report();
    assert_eq!(r.bytes, big.len() as u64);
    assert_eq!(r.verification, Verification::Passed);
    assert!(r.error.is_none() && !r.interrupted, "{r}");
    eprintln!("sink: {r}");

    let addr = sink.addr;
    let senders: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || send(addr, &Pattern::bytes(seed, 16 << 20))))
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    for _ in 0..4 {
        let r = sink.next_report();
        assert_eq!(r.bytes, 16 << 20);
        assert_eq!(r.verification, Verification::Passed, "{r}");
        assert!(r.error.is_none(), "{r}");
    }
    assert_eq!(
        sink.totals.bytes.load(Ordering::Relaxed),
        (64 + 4 * 16) << 20
    );
    assert_eq!(sink.totals.finished.load(Ordering::Acquire), 5);
    assert_eq!(sink.totals.verify_failures.load(Ordering::Acquire), 0);
    sink.stop();
}

/// A flipped byte, a dropped byte and a wrong seed each fail verification at the right offset;
/// the bytes are still all counted; a good stream after them still passes.
#[test]
fn sink_detects_corruption() {
    let seed = 42;
    let sink = Sink::start(1, Some(seed));
    let good = Pattern::bytes(seed, 16 << 20);

    let at = 5_000_003;
    let mut flipped = good.clone();
    flipped[at] ^= 0x40;
    send(sink.addr, &flipped);
    let r = sink.next_report();
    assert_eq!(r.bytes, good.len() as u64);
    assert_eq!(
        r.verification,
        Verification::Failed(Mismatch {
            offset: at as u64,
            expected: good[at],
            got: good[at] ^ 0x40
        })
    );
    eprintln!("sink: {r}");

    // A lost byte: everything after it is shifted.
    let at = 9_999_999;
    let mut shifted = good.clone();
    shifted.remove(at);
    let first_diff = (at..shifted.len())
        .find(|&i| shifted[i] != good[i])
        .unwrap();
    send(sink.addr, &shifted);
    let r = sink.next_report();
    assert_eq!(r.bytes, shifted.len() as u64);
    match r.verification {
        Verification::Failed(m) => assert_eq!(m.offset, first_diff as u64),
        v => panic!("shifted stream: {v:?}"),
    }

    // The right bytes for another seed.
    send(sink.addr, &Pattern::bytes(seed + 1, 1 << 20));
    let r = sink.next_report();
    assert!(
        matches!(r.verification, Verification::Failed(m) if m.offset < 8),
        "{r}"
    );

    send(sink.addr, &good);
    let r = sink.next_report();
    assert_eq!(r.verification, Verification::Passed);
    assert_eq!(sink.totals.verify_failures.load(Ordering::Acquire), 3);
    sink.stop();
}

/// Without a seed nothing is verified, only counted; stopping the sink ends an open connection
/// at once, reported as interrupted.
#[test]
fn sink_without_verify_and_stop_interrupts() {
    let sink = Sink::start(1, None);
    let data = Pattern::bytes(1, 3 << 20);
    send(sink.addr, &data);
    let r = sink.next_report();
    assert_eq!(r.bytes, data.len() as u64);
    assert_eq!(r.verification, Verification::Off);

    // A connection that never ends by itself.
    let mut open = connect(sink.addr);
    open.write_all(b"hello").unwrap();
    assert!(common::wait_until(Duration::from_secs(10), || {
        sink.totals.bytes.load(Ordering::Relaxed) == data.len() as u64 + 5
    }));
    assert!(
        sink.reports.try_recv().is_err(),
        "nothing else finished yet"
    );
    let totals = sink.totals.clone();
    let start = Instant::now();
    let reports = sink.stop();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].bytes, 5);
    assert!(reports[0].interrupted, "{}", reports[0]);
    assert_eq!(totals.finished.load(Ordering::Acquire), 2);
    drop(open);
}
