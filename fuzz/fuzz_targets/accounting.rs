//! The chunk ownership state machine (`zcrx_ifq::chunk::ChunkTable`) under arbitrary operations.
//!
//! Any sequence of takes, deliveries (any chunk id, owner, length, busy flag), kernel-done,
//! releases, publishes, reclaims and limit changes, under each redelivery policy. After every
//! step: `check_invariants` holds; the table agrees with a model of every chunk's state and of
//! the bytes each owner holds; a refused transition is an `AccountingError` and changes nothing
//! (snapshot, every chunk's state, limits).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use zcrx_ifq::chunk::{AccountingError, ChunkState, ChunkTable, OwnerId, Redelivery, ReleaseTo};

#[path = "common/mod.rs"]
mod common;

#[derive(Arbitrary, Debug)]
struct Input {
    chunks: u8,
    policy: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Chunk {
    Small(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Owner {
    Small(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Take,
    Deliver {
        chunk: Chunk,
        owner: Owner,
        len: u32,
        keeps: bool,
    },
    KernelDone(Chunk),
    Release(Chunk),
    Recycle(Chunk),
    Shelve(Chunk),
    Publish(Chunk),
    Reclaim(Chunk),
    Limit(Option<u64>),
    Query(Owner),
}

fn chunk(c: Chunk) -> u32 {
    match c {
        Chunk::Small(c) => u32::from(c % 40),
        Chunk::Any(c) => c,
    }
}

fn owner(o: Owner) -> u32 {
    match o {
        // Ids that collide in the direct-mapped owner slots (same low bits), and neighbours.
        Owner::Small(o) => u32::from(o % 8) | (u32::from(o >> 3) << 6),
        Owner::Any(o) => o,
    }
}

fuzz_target!(|input: Input| {
    let n = u32::from(input.chunks % 33) + 1;
    let policy = match input.policy % 3 {
        0 => Redelivery::Never,
        1 => Redelivery::WhileKernelBusy,
        _ => Redelivery::Always,
    };
    let mut t = ChunkTable::new(n, policy);
    let mut model = vec![ChunkState::Pool; n as usize];
    // Per chunk: bytes charged per owner since it left the kernel.
    let mut charged: Vec<Vec<(u32, u64)>> = vec![vec![]; n as usize];
    let mut limit: Option<u64> = None;
    for op in input.ops.iter().take(2048) {
        let before = t.snapshot();
        let states: Vec<_> = (0..n).map(|c| t.state(c).unwrap()).collect();
        let result: Result<(), AccountingError> = match *op {
            Op::Take => {
                match t.take_from_pool() {
                    Some(c) => {
                        assert_eq!(model[c as usize], ChunkState::Pool);
                        model[c as usize] = ChunkState::Kernel;
                    }
                    None => assert!(model.iter().all(|s| *s != ChunkState::Pool)),
                }
                Ok(())
            }
            Op::Deliver {
                chunk: c,
                owner: o,
                len,
                keeps,
            } => {
                let (c, o) = (chunk(c), owner(o));
                let expect = model.get(c as usize).and_then(|s| match *s {
                    ChunkState::Kernel => Some(1u32),
                    ChunkState::User {
                        deliveries,
                        kernel_busy,
                    } => match policy {
                        Redelivery::Always => deliveries.checked_add(1),
                        Redelivery::WhileKernelBusy if kernel_busy => deliveries.checked_add(1),
                        _ => None,
                    },
                    ChunkState::Refill { entries } if policy == Redelivery::Always => {
                        entries.checked_add(1)
                    }
                    _ => None,
                });
                let before = model.get(c as usize).copied();
                let r = t.deliver(c, OwnerId(o), len, keeps);
                assert_eq!(r.is_ok(), expect.is_some(), "deliver {c}: {r:?}");
                if let Ok(found) = r {
                    // What the chunk was: no handle unless it was already with the user.
                    let user = matches!(before, Some(ChunkState::User { .. }));
                    let busy = matches!(
                        before,
                        Some(ChunkState::User {
                            kernel_busy: true,
                            ..
                        })
                    );
                    assert_eq!((found.first, found.was_kernel_busy), (!user, busy));
                }
                if let Some(d) = expect {
                    model[c as usize] = ChunkState::User {
                        deliveries: d,
                        kernel_busy: keeps,
                    };
                    let h = &mut charged[c as usize];
                    match h.iter_mut().find(|(x, _)| *x == o) {
                        Some((_, b)) => *b += u64::from(len),
                        None => h.push((o, u64::from(len))),
                    }
                }
                r.map(|_| ())
            }
            Op::KernelDone(c) => {
                let c = chunk(c);
                let r = t.kernel_done(c);
                match model.get_mut(c as usize) {
                    Some(ChunkState::User {
                        kernel_busy: busy @ true,
                        ..
                    }) => {
                        assert_eq!(r, Ok(()));
                        *busy = false;
                    }
                    _ => assert!(r.is_err()),
                }
                r
            }
            Op::Release(c) | Op::Recycle(c) | Op::Shelve(c) => {
                let c = chunk(c);
                let r = match op {
                    Op::Recycle(_) => t.release(c, ReleaseTo::Kernel),
                    Op::Shelve(_) => t.release(c, ReleaseTo::Pool),
                    _ => t.release(c, ReleaseTo::Refill),
                };
                match model.get(c as usize) {
                    Some(&ChunkState::User {
                        deliveries,
                        kernel_busy: false,
                    }) => {
                        assert_eq!(r, Ok(deliveries));
                        model[c as usize] = match op {
                            Op::Recycle(_) => ChunkState::Kernel,
                            Op::Shelve(_) => ChunkState::Pool,
                            _ => ChunkState::Refill {
                                entries: deliveries,
                            },
                        };
                        charged[c as usize].clear();
                    }
                    _ => assert!(r.is_err()),
                }
                r.map(|_| ())
            }
            Op::Publish(c) => {
                let c = chunk(c);
                let r = t.publish(c);
                match model.get(c as usize) {
                    Some(&ChunkState::Refill { entries }) => {
                        assert_eq!(r, Ok(entries));
                        model[c as usize] = ChunkState::Kernel;
                    }
                    _ => assert!(r.is_err()),
                }
                r.map(|_| ())
            }
            Op::Reclaim(c) => {
                let c = chunk(c);
                let r = t.reclaim(c);
                match model.get(c as usize) {
                    Some(ChunkState::Kernel | ChunkState::Refill { .. }) => {
                        assert_eq!(r, Ok(()));
                        model[c as usize] = ChunkState::Pool;
                    }
                    _ => assert!(r.is_err()),
                }
                r
            }
            Op::Limit(l) => {
                t.set_owner_limit(l);
                limit = l;
                Ok(())
            }
            Op::Query(o) => {
                let o = owner(o);
                let bytes: u64 = charged
                    .iter()
                    .flatten()
                    .filter(|(x, _)| *x == o)
                    .map(|(_, b)| b)
                    .sum();
                let chunks = charged
                    .iter()
                    .filter(|h| h.iter().any(|(x, _)| *x == o))
                    .count() as u32;
                let s = t.owner(OwnerId(o));
                assert_eq!((s.chunks, s.bytes), (chunks, bytes));
                assert_eq!(t.over_limit(OwnerId(o)), limit.is_some_and(|l| bytes >= l));
                Ok(())
            }
        };
        if let Err(e) = &result {
            // Refused: a typed error naming the chunk, and nothing changed.
            match e {
                AccountingError::NoSuchChunk { chunk, total } => {
                    assert!(*chunk >= n && *total == n)
                }
                AccountingError::BadTransition { chunk, .. } => assert!(*chunk < n),
                _ => {}
            }
            let _ = e.to_string();
            assert_eq!(
                t.snapshot(),
                before,
                "a refused operation changed the counts"
            );
            let after: Vec<_> = (0..n).map(|c| t.state(c).unwrap()).collect();
            assert_eq!(after, states, "a refused operation changed a state");
        }
        if let Err(e) = t.check_invariants() {
            panic!("invariant broken after {op:?}: {e}");
        }
        for (c, s) in model.iter().enumerate() {
            assert_eq!(t.state(c as u32), Ok(*s));
        }
        assert!(t.state(n).is_err());
        assert_eq!(t.owner_limit(), limit);
        let snap = t.snapshot();
        assert_eq!(snap.counts.total(), n);
        common::check_owner_stats(&snap, charged.iter().map(|h| h.as_slice()));
    }
});
