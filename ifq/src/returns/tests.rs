//! The return path on one and many threads: each chunk comes back exactly once.

use super::*;
use std::sync::Arc;

#[test]
fn last_drop_queues_once() {
    let s = ReturnStack::new(4, false);
    s.acquire(2);
    s.acquire(2);
    assert!(!s.release(2));
    assert!(s.is_empty());
    assert!(!s.release(2));
    let mut got = vec![];
    s.drain(|c| got.push(c));
    assert_eq!(got, vec![2]);
    assert_eq!(s.drain(|_| panic!("drained twice")), 0);
}

/// The waker: installed once; called by the first return on another thread while armed,
/// once, and never at home, disarmed, or onto a stack that already holds a chunk.
#[test]
fn wake_on_foreign_return_when_armed() {
    use std::sync::atomic::AtomicUsize;
    let s = Arc::new(ReturnStack::new(4, false));
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    assert!(s
        .set_waker(Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }))
        .is_ok());
    assert!(s.set_waker(Box::new(|| {})).is_err(), "one waker per stack");
    let woke = || woken.load(Ordering::Relaxed);
    let drop_elsewhere = |chunk| {
        let s = s.clone();
        std::thread::spawn(move || assert!(!s.release(chunk)))
            .join()
            .unwrap();
    };
    for c in 0..4 {
        s.acquire(c);
    }
    // Not armed: no wake-up.
    drop_elsewhere(0);
    assert_eq!(woke(), 0);
    // Armed with a chunk already queued: the owner is told, and need not sleep.
    assert!(s.arm_wake());
    assert_eq!(s.drain(|_| {}), 1);
    // Armed on an empty stack: the next foreign return wakes, once.
    assert!(!s.arm_wake());
    drop_elsewhere(1);
    assert_eq!(woke(), 1);
    drop_elsewhere(2);
    assert_eq!(woke(), 1, "the flag is spent");
    assert_eq!(s.drain(|_| {}), 2);
    // Disarmed: no wake-up.
    assert!(!s.arm_wake());
    s.disarm_wake();
    drop_elsewhere(3);
    assert_eq!(woke(), 1);
    s.disarm_wake();
    assert_eq!(s.drain(|_| {}), 1);
    // At home the owner is awake by definition: no wake-up either.
    assert!(s.bind_home());
    s.acquire(0);
    assert!(!s.arm_wake());
    assert!(!s.release(0));
    assert_eq!(woke(), 1);
    assert_eq!(s.drain(|_| {}), 1);
}

#[test]
fn redelivered_before_drain_is_skipped_then_requeued() {
    let s = ReturnStack::new(2, true);
    s.acquire(1);
    assert!(!s.release(1)); // queued
    s.acquire(1); // owner hands it out again before draining
    assert_eq!(s.drain(|_| panic!("chunk is live")), 0);
    assert!(!s.release(1));
    let mut got = vec![];
    s.drain(|c| got.push(c));
    assert_eq!(got, vec![1]);
}

#[test]
fn many_threads_each_chunk_returned_exactly_once() {
    const N: u32 = 4096;
    let s = Arc::new(ReturnStack::new(N, false));
    for c in 0..N {
        s.acquire(c);
        s.acquire(c);
    }
    let mut seen = vec![0u32; N as usize];
    std::thread::scope(|sc| {
        for t in 0..2 {
            let s = &s;
            sc.spawn(move || {
                for c in 0..N {
                    // Each thread drops one of the two handles, in different orders.
                    let c = if t == 0 { c } else { N - 1 - c };
                    assert!(!s.release(c));
                }
            });
        }
        // Drain concurrently with the drops.
        for _ in 0..1000 {
            s.drain(|c| seen[c as usize] += 1);
        }
    });
    s.drain(|c| seen[c as usize] += 1);
    assert!(seen.iter().all(|&n| n == 1), "every chunk exactly once");
}
#[test]
fn home_drops_skip_the_shared_stack_and_drain_once() {
    let s = ReturnStack::new(4, false);
    assert!(s.bind_home());
    assert!(s.bind_home(), "binding again at home is fine");
    std::thread::scope(|sc| {
        sc.spawn(|| assert!(!s.bind_home(), "one home only"));
    });
    for c in 0..4 {
        s.acquire(c);
    }
    assert!(!s.release(0)); // at home
    assert!(!s.release(1));
    std::thread::scope(|sc| {
        sc.spawn(|| assert!(!s.release(2))); // away: the shared stack
    });
    assert!(!s.is_empty(), "the foreign drop is on the shared stack");
    let mut got = vec![];
    assert_eq!(s.drain(|c| got.push(c)), 3);
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(s.drain(|_| panic!("drained twice")), 0);
    assert_eq!(s.handles(3), 1);
}

#[test]
fn home_stack_waits_for_the_owner_at_home() {
    let s = ReturnStack::new(2, false);
    assert!(s.bind_home());
    s.acquire(0);
    assert!(!s.release(0)); // on the home stack
    std::thread::scope(|sc| {
        // The owner drains away from home: it cannot see the home stack.
        sc.spawn(|| assert_eq!(s.drain(|_| panic!("home stack read away from home")), 0));
    });
    let mut got = vec![];
    s.drain(|c| got.push(c));
    assert_eq!(got, vec![0]);
}

#[test]
fn close_at_home_counts_home_stack_and_later_drops() {
    let s = ReturnStack::new(3, false);
    assert!(s.bind_home());
    s.acquire(0);
    s.acquire(1);
    s.acquire(2);
    assert!(!s.release(0)); // queued at home, not drained: idle at close
    assert!(!s.close(), "chunks 1 and 2 are out");
    assert!(!s.release(1), "after close, drops at home count down");
    let last = std::thread::scope(|sc| sc.spawn(|| s.release(2)).join().unwrap());
    assert!(last, "the last drop learns it");
}

#[test]
fn close_away_from_home_leaks_instead_of_freeing_early() {
    let s = ReturnStack::new(2, false);
    assert!(s.bind_home());
    s.acquire(0);
    s.acquire(1);
    assert!(!s.release(0)); // on the home stack, which only home can read
    let freed = std::thread::scope(|sc| {
        sc.spawn(|| {
            let owner = s.close();
            let last = s.release(1);
            owner || last
        })
        .join()
        .unwrap()
    });
    assert!(!freed, "chunk 0 never comes back: nobody may free");
}
