//! Hostile completions (a wrong area, an offset past it, a fragment across a page, odd
//! results): typed errors, never handles.

use super::*;

#[derive(Debug, Clone)]
pub(crate) enum Hostile {
    Cqe {
        res: i32,
        flags: u32,
        area: u16,
        off: u64,
        pad: u64,
    },
    Drop(usize),
    Flush,
    KernelTakesAll,
}

pub(crate) fn hostile() -> impl Strategy<Value = Hostile> {
    let res = prop_oneof![
        3 => 1i32..5000,
        1 => any::<i32>(),
        1 => prop_oneof![Just(0), Just(-ENOMEM), Just(-ENOSPC), Just(-14), Just(i32::MIN), Just(i32::MAX)],
    ];
    let area = prop_oneof![3 => Just(AREA_ID), 1 => any::<u16>()];
    let off = prop_oneof![3 => 0u64..(64 * 1024), 1 => 0u64..(1 << 48)];
    let cqe =
        (res, any::<u32>(), area, off, any::<u64>()).prop_map(|(res, flags, area, off, pad)| {
            Hostile::Cqe {
                res,
                flags,
                area,
                off,
                pad,
            }
        });
    prop_oneof![
        6 => cqe,
        2 => any::<usize>().prop_map(Hostile::Drop),
        1 => Just(Hostile::Flush),
        1 => Just(Hostile::KernelTakesAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary completion values: typed errors or in-bounds handles, never a panic, and the
    /// counters always balance.
    #[test]
    fn hostile_completions_are_typed_errors(
        chunk_pages in prop_oneof![Just(1u32), Just(2)],
        ops in proptest::collection::vec(hostile(), 1..200),
    ) {
        let page = rustix::param::page_size();
        let chunks = 8u32;
        let area = Area::builder().chunk_size(page * chunk_pages as usize).chunks(chunks as usize).build().unwrap();
        let area_len = area.len() as u64;
        let mut ifq = ZcrxIfq::simulated(area, 4, TOKEN).unwrap();
        let mut held: Vec<RxBuf> = Vec::new();
        for op in ops {
            match op {
                Hostile::Cqe { res, flags, area, off, pad } => {
                    let big = [(u64::from(area) << 48) | off, pad];
                    match ifq.complete(OwnerId(9), res, flags, big) {
                        Ok(c) => match c.event {
                            RecvEvent::Data(buf) => {
                                prop_assert!(res > 0);
                                prop_assert_eq!(area, AREA_ID);
                                prop_assert_eq!(buf.area_offset(), off);
                                prop_assert_eq!(buf.len(), res as usize);
                                prop_assert!(off + res as u64 <= area_len);
                                prop_assert!(off % page as u64 + res as u64 <= page as u64, "within one buffer");
                                held.push(buf);
                            }
                            RecvEvent::Eof => prop_assert_eq!(res, 0),
                            RecvEvent::NoBuffers => prop_assert_eq!(res, -ENOMEM),
                            RecvEvent::CqOverflow => prop_assert_eq!(res, -ENOSPC),
                            RecvEvent::Error(e) => prop_assert!(res < 0 && e.raw_os_error().is_some()),
                        },
                        Err(Error::BadCompletion(_)) => prop_assert!(res > 0),
                        Err(e) => return Err(TestCaseError::fail(format!("untyped rejection: {e}"))),
                    }
                }
                Hostile::Drop(i) => {
                    if !held.is_empty() {
                        held.swap_remove(i % held.len());
                    }
                }
                Hostile::Flush => {
                    ifq.flush();
                }
                Hostile::KernelTakesAll => ifq.sim_set_head(ifq.sim_tail()),
            }
            let snap = ifq.snapshot();
            prop_assert_eq!(snap.counts.total(), chunks);
        }
        let wrong = ifq.complete(OwnerId(1), 10, CQE_F_MORE, [(7u64 << 48) | 4096, 0]);
        let wrong_area = matches!(
            wrong,
            Err(Error::BadCompletion(CompletionError::WrongArea { area_id: 7, expected: AREA_ID }))
        );
        prop_assert!(wrong_area);
        let past = ifq.complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | area_len, 0]);
        let past_end = matches!(past, Err(Error::BadCompletion(CompletionError::OffsetOutOfRange { .. })));
        prop_assert!(past_end);
        let across = ifq.complete(OwnerId(1), 2, CQE_F_MORE, [TOKEN | (page as u64 - 1), 0]);
        let crosses = matches!(across, Err(Error::BadCompletion(CompletionError::LengthOutOfRange { .. })));
        prop_assert!(crosses);
        drop(held);
        for _ in 0..100 {
            ifq.flush();
            ifq.sim_set_head(ifq.sim_tail());
        }
        let snap = ifq.snapshot();
        prop_assert_eq!(snap.counts.user + snap.counts.refill, 0, "everything returned");
        prop_assert_eq!(snap.counts.kernel, chunks);
    }
}
