//! The return path under every interleaving loom explores (`RUSTFLAGS="--cfg loom"`).

use super::*;
use loom::sync::Arc;

/// Two handles to one chunk dropped on two threads while the owner drains: the chunk is
/// returned exactly once, and only after both drops.
#[test]
fn concurrent_drops_and_drain() {
    loom::model(|| {
        let s = Arc::new(ReturnStack::new(2, false));
        s.acquire(0);
        s.acquire(0);
        s.acquire(1);
        let a = {
            let s = s.clone();
            loom::thread::spawn(move || assert!(!s.release(0)))
        };
        let b = {
            let s = s.clone();
            loom::thread::spawn(move || {
                assert!(!s.release(0));
                assert!(!s.release(1));
            })
        };
        let mut seen = [0u32; 2];
        s.drain(|c| {
            assert_eq!(s.handles(c), 0);
            seen[c as usize] += 1
        });
        a.join().unwrap();
        b.join().unwrap();
        s.drain(|c| seen[c as usize] += 1);
        assert_eq!(seen, [1, 1]);
    });
}

/// The owner re-delivers a chunk that a foreign drop just queued: never returned while live,
/// returned once after the new handle drops.
#[test]
fn redelivery_races_foreign_drop() {
    loom::model(|| {
        let s = Arc::new(ReturnStack::new(1, true));
        s.acquire(0);
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || assert!(!s.release(0)))
        };
        let mut returned = 0;
        s.drain(|_| returned += 1);
        let live = if returned == 0 {
            s.acquire(0); // the owner hands the chunk out again
            true
        } else {
            false
        };
        t.join().unwrap();
        if live {
            s.drain(|_| panic!("returned while a handle is live"));
            assert!(!s.release(0));
        }
        s.drain(|_| returned += 1);
        assert_eq!(returned, 1);
    });
}

/// The owner closes the stack while handles on two chunks drop on two threads (one chunk
/// with two handles): exactly one party learns that it was the last, after every drop.
#[test]
fn close_races_drops() {
    loom::model(|| {
        let s = Arc::new(ReturnStack::new(3, false));
        s.acquire(0);
        s.acquire(0);
        s.acquire(1);
        // Chunk 2 was queued and drained before: idle, not counted.
        s.acquire(2);
        assert!(!s.release(2));
        let a = {
            let s = s.clone();
            loom::thread::spawn(move || s.release(0))
        };
        let b = {
            let s = s.clone();
            loom::thread::spawn(move || {
                let first = s.release(0);
                let second = s.release(1);
                assert!(!(first && second));
                first || second
            })
        };
        let owner = s.close();
        let a = a.join().unwrap();
        let b = b.join().unwrap();
        assert_eq!(
            u32::from(owner) + u32::from(a) + u32::from(b),
            1,
            "exactly one frees"
        );
    });
}

/// A chunk redelivered before close (queued, then handed out again) is counted once.
#[test]
fn close_with_requeued_chunk() {
    loom::model(|| {
        let s = Arc::new(ReturnStack::new(1, true));
        s.acquire(0);
        assert!(!s.release(0)); // queued
        s.acquire(0); // handed out again before a drain
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || s.release(0))
        };
        let owner = s.close();
        let last = t.join().unwrap();
        assert!(owner != last, "exactly one frees");
    });
}

/// The owner binds its thread as home; a chunk's two handles drop at home and on another
/// thread while the owner drains: returned exactly once, after both drops.
#[test]
fn home_and_foreign_drops_race_drain() {
    loom::model(|| {
        let s = Arc::new(ReturnStack::new(2, false));
        assert!(s.bind_home());
        s.acquire(0);
        s.acquire(0);
        s.acquire(1);
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || {
                assert!(!s.release(0));
                assert!(!s.release(1));
            })
        };
        let mut seen = [0u32; 2];
        s.drain(|c| seen[c as usize] += 1);
        assert!(!s.release(0)); // the home drop
        s.drain(|c| seen[c as usize] += 1);
        t.join().unwrap();
        s.drain(|c| {
            assert_eq!(s.handles(c), 0);
            seen[c as usize] += 1
        });
        assert_eq!(seen, [1, 1]);
    });
}

/// The owner closes at home while a foreign thread drops: exactly one party frees.
#[test]
fn close_at_home_races_foreign_drop() {
    loom::model(|| {
        let s = Arc::new(ReturnStack::new(2, false));
        assert!(s.bind_home());
        s.acquire(0);
        s.acquire(1);
        assert!(!s.release(0)); // on the home stack
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || s.release(1))
        };
        let owner = s.close();
        let last = t.join().unwrap();
        assert!(owner != last, "exactly one frees");
    });
}

/// zcrx mode (the owner adds handles to held chunks) with a home thread: the owner at home
/// hands out another piece of a chunk while a foreign thread drops its handle, then drops
/// the new handle at home (a plain store when it is the last). Never returned while a
/// handle lives; returned exactly once.
#[test]
fn zcrx_home_redelivery_races_foreign_drop() {
    loom::model(|| {
        let s = Arc::new(ReturnStack::new(1, true));
        assert!(s.bind_home());
        s.acquire(0); // the foreign thread's handle
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || assert!(!s.release(0)))
        };
        let mut returned = 0;
        s.drain(|_| returned += 1);
        if returned == 0 {
            s.acquire(0); // redelivery at home
            s.drain(|_| panic!("returned while a handle is live"));
            assert!(!s.release(0)); // dropped at home
        }
        t.join().unwrap();
        s.drain(|_| returned += 1);
        assert_eq!(returned, 1);
    });
}

/// The owner arms the wake-up and, seeing nothing queued, would sleep, while another thread
/// returns the last chunk out: the owner sees the chunk, or the return calls the waker (once).
/// Never neither: the loop would sleep with a buffer waiting.
#[test]
fn arm_wake_races_foreign_return() {
    loom::model(|| {
        let woken = Arc::new(AtomicU32::new(0));
        let s = Arc::new(ReturnStack::new(1, false));
        let w = woken.clone();
        assert!(s
            .set_waker(Box::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }))
            .is_ok());
        s.acquire(0);
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || assert!(!s.release(0)))
        };
        let queued = s.arm_wake();
        t.join().unwrap();
        let woke = woken.load(Ordering::Relaxed);
        assert!(queued || woke == 1, "lost wake-up");
        assert!(woke <= 1);
        s.disarm_wake();
        let mut returned = 0;
        s.drain(|_| returned += 1);
        assert_eq!(returned, 1);
    });
}
