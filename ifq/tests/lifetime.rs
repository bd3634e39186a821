//! Drop order between the queue and its handles: owner first, handles first, handles on other
//! threads, through `bytes::Bytes`. Meaningful under valgrind memcheck, which `.ci/run` uses.

use zcrx_ifq::bufring::{BufRing, BufRingConfig};
use zcrx_ifq::completion::{CQE_F_BUFFER, CQE_F_BUF_MORE, CQE_F_MORE};
use zcrx_ifq::zcrx::ZcrxIfq;
use zcrx_ifq::{Area, OwnerId, RecvEvent, RxBuf};

fn ring(incremental: bool) -> BufRing {
    let area = Area::builder().chunk_size(4096).chunks(8).build().unwrap();
    BufRing::simulated(
        area,
        BufRingConfig {
            incremental,
            ..Default::default()
        },
    )
    .unwrap()
}

fn take(r: &mut BufRing, slot: u16, len: i32, more: bool) -> RxBuf {
    let (_, _, bid) = r.sim_entry(slot);
    let f =
        CQE_F_BUFFER | CQE_F_MORE | (u32::from(bid) << 16) | if more { CQE_F_BUF_MORE } else { 0 };
    match r.complete(OwnerId(1), len, f).unwrap().event {
        RecvEvent::Data(b) => b,
        _ => panic!(),
    }
}

#[test]
fn owner_first_then_handles() {
    for incremental in [false, true] {
        let mut r = ring(incremental);
        let a = take(&mut r, 0, 100, incremental);
        let b = take(&mut r, 1, 100, false);
        let a2 = a.slice(1..10);
        drop(r);
        assert_eq!(a2.len(), 9);
        let t = std::thread::spawn(move || drop(a2));
        drop(a);
        t.join().unwrap();
        drop(b);
    }
}

#[test]
fn handles_first_then_owner() {
    let mut r = ring(false);
    let a = take(&mut r, 0, 100, false);
    drop(a);
    drop(r);
    let r = ring(true);
    drop(r);
}

#[test]
fn zcrx_owner_first() {
    let area = Area::builder().chunk_size(4096).chunks(8).build().unwrap();
    let mut q = ZcrxIfq::simulated(area, 8, 1 << 48).unwrap();
    let a = match q
        .complete(OwnerId(1), 10, CQE_F_MORE, [(1 << 48) | 4096, 0])
        .unwrap()
        .event
    {
        RecvEvent::Data(b) => b,
        _ => panic!(),
    };
    let bytes = bytes::Bytes::from(a);
    drop(q);
    assert_eq!(bytes.len(), 10);
    drop(bytes);
}
