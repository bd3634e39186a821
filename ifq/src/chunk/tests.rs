//! The ownership state machine: every transition, and the properties that hold over any
//! sequence of them.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Take,
    Deliver {
        chunk: u32,
        owner: u32,
        len: u32,
        keeps: bool,
    },
    KernelDone(u32),
    Release(u32),
    Recycle(u32),
    Shelve(u32),
    Publish(u32),
    Reclaim(u32),
}

fn op(n: u32) -> impl Strategy<Value = Op> {
    let c = 0..n + 2; // includes out-of-range ids
    prop_oneof![
        Just(Op::Take),
        (
            c.clone(),
            prop_oneof![0u32..3, Just(8), Just(16), Just(u32::MAX)],
            0u32..10_000,
            any::<bool>()
        )
            .prop_map(|(chunk, owner, len, keeps)| Op::Deliver {
                chunk,
                owner,
                len,
                keeps
            }),
        c.clone().prop_map(Op::KernelDone),
        c.clone().prop_map(Op::Release),
        c.clone().prop_map(Op::Recycle),
        c.clone().prop_map(Op::Shelve),
        c.clone().prop_map(Op::Publish),
        c.prop_map(Op::Reclaim),
    ]
}

fn redelivery() -> impl Strategy<Value = Redelivery> {
    prop_oneof![
        Just(Redelivery::Never),
        Just(Redelivery::WhileKernelBusy),
        Just(Redelivery::Always)
    ]
}

proptest! {
    /// Every operation either does exactly what the model says or is refused and changes
    /// nothing; counters and per-owner bytes always balance.
    #[test]
    fn table_matches_model(n in 1u32..8, policy in redelivery(), ops in proptest::collection::vec(op(8), 1..400)) {
        let mut t = ChunkTable::new(n, policy);
        let mut model: Vec<ChunkState> = vec![ChunkState::Pool; n as usize];
        let mut bytes: Vec<Vec<(u32, u64)>> = vec![vec![]; n as usize];
        // The pool hands out the chunk freed last first (chunk 0 first at the start).
        let mut free: Vec<u32> = (0..n).rev().collect();
        for op in ops {
            let before = t.snapshot();
            let ok = match op {
                Op::Take => {
                    let got = t.take_from_pool();
                    prop_assert_eq!(got, free.pop(), "the pool is a stack");
                    match got {
                        Some(c) => {
                            prop_assert_eq!(model[c as usize], ChunkState::Pool);
                            model[c as usize] = ChunkState::Kernel;
                        }
                        None => prop_assert!(model.iter().all(|s| *s != ChunkState::Pool)),
                    }
                    true
                }
                Op::Deliver { chunk, owner, len, keeps } => {
                    let expect = model.get(chunk as usize).and_then(|s| match *s {
                        ChunkState::Kernel => Some(1),
                        ChunkState::User { deliveries, kernel_busy } => match policy {
                            Redelivery::Always => Some(deliveries + 1),
                            Redelivery::WhileKernelBusy if kernel_busy => Some(deliveries + 1),
                            _ => None,
                        },
                        ChunkState::Refill { entries } if policy == Redelivery::Always => Some(entries + 1),
                        _ => None,
                    });
                    let r = t.deliver(chunk, OwnerId(owner), len, keeps);
                    prop_assert_eq!(r.is_ok(), expect.is_some());
                    if let Some(d) = expect {
                        model[chunk as usize] = ChunkState::User { deliveries: d, kernel_busy: keeps };
                        bytes[chunk as usize].push((owner, u64::from(len)));
                    }
                    r.is_ok()
                }
                Op::KernelDone(c) => {
                    let r = t.kernel_done(c);
                    let expect = matches!(model.get(c as usize), Some(ChunkState::User { kernel_busy: true, .. }));
                    prop_assert_eq!(r.is_ok(), expect);
                    if let Some(ChunkState::User { kernel_busy, .. }) = model.get_mut(c as usize).filter(|_| expect) {
                        *kernel_busy = false;
                    }
                    expect
                }
                Op::Release(c) => {
                    let r = t.release(c, ReleaseTo::Refill);
                    match model.get(c as usize) {
                        Some(&ChunkState::User { deliveries, kernel_busy: false }) => {
                            prop_assert_eq!(r, Ok(deliveries));
                            model[c as usize] = ChunkState::Refill { entries: deliveries };
                            bytes[c as usize].clear();
                            true
                        }
                        _ => { prop_assert!(r.is_err()); false }
                    }
                }
                Op::Recycle(c) | Op::Shelve(c) => {
                    let shelve = matches!(op, Op::Shelve(_));
                    let to = if shelve { ReleaseTo::Pool } else { ReleaseTo::Kernel };
                    let r = t.release(c, to);
                    match model.get(c as usize) {
                        Some(&ChunkState::User { deliveries, kernel_busy: false }) => {
                            prop_assert_eq!(r, Ok(deliveries));
                            model[c as usize] = if shelve {
                                free.push(c);
                                ChunkState::Pool
                            } else {
                                ChunkState::Kernel
                            };
                            bytes[c as usize].clear();
                            true
                        }
                        _ => { prop_assert!(r.is_err()); false }
                    }
                }
                Op::Publish(c) => {
                    let r = t.publish(c);
                    match model.get(c as usize) {
                        Some(&ChunkState::Refill { entries }) => {
                            prop_assert_eq!(r, Ok(entries));
                            model[c as usize] = ChunkState::Kernel;
                            true
                        }
                        _ => { prop_assert!(r.is_err()); false }
                    }
                }
                Op::Reclaim(c) => {
                    let r = t.reclaim(c);
                    match model.get(c as usize) {
                        Some(ChunkState::Kernel | ChunkState::Refill { .. }) => {
                            prop_assert!(r.is_ok());
                            model[c as usize] = ChunkState::Pool;
                            free.push(c);
                            true
                        }
                        _ => { prop_assert!(r.is_err()); false }
                    }
                }
            };
            if !ok {
                prop_assert_eq!(&t.snapshot(), &before, "a refused operation changed nothing");
            }
            t.check_invariants().map_err(TestCaseError::fail)?;
            for (i, s) in model.iter().enumerate() {
                prop_assert_eq!(t.state(i as u32).unwrap(), *s);
            }
            let held: u64 = bytes.iter().flatten().map(|(_, b)| b).sum();
            prop_assert_eq!(t.held_bytes(), held);
            prop_assert_eq!(t.counts().total(), n);
        }
    }
}

#[test]
fn owner_limit() {
    let mut t = ChunkTable::new(4, Redelivery::Never);
    t.set_owner_limit(Some(100));
    let a = t.take_from_pool().unwrap();
    let b = t.take_from_pool().unwrap();
    t.deliver(a, OwnerId(1), 60, false).unwrap();
    assert!(!t.over_limit(OwnerId(1)));
    t.deliver(b, OwnerId(1), 40, false).unwrap();
    assert!(t.over_limit(OwnerId(1)));
    assert!(!t.over_limit(OwnerId(2)));
    t.release(a, ReleaseTo::Refill).unwrap();
    assert!(!t.over_limit(OwnerId(1)));
    assert_eq!(
        t.owner(OwnerId(1)),
        OwnerStats {
            chunks: 1,
            bytes: 40
        }
    );
    let snap = t.snapshot();
    assert_eq!(
        snap.owners,
        vec![(
            OwnerId(1),
            OwnerStats {
                chunks: 1,
                bytes: 40
            }
        )]
    );
    assert_eq!(
        snap.counts,
        Counts {
            pool: 2,
            kernel: 0,
            user: 1,
            refill: 1
        }
    );
}
