//! Area configuration: bad input is a typed error at build time, with a message that says what
//! to do. Its own test binary: one test lowers RLIMIT_MEMLOCK for the process.

use test_kit::{skip, Outcome};
use zcrx_ifq::{Area, Error};

fn zero_chunks() {
    let e = Area::builder().chunks(0).build().unwrap_err();
    assert!(matches!(e, Error::ZeroChunks), "{e}");
    assert!(e.to_string().contains("at least one chunk"));
}

fn chunk_size_must_be_power_of_two_in_range() {
    for bad in [0, 1, 4095, 6000, 3 << 12, 2 << 20] {
        let e = Area::builder()
            .chunk_size(bad)
            .chunks(1)
            .build()
            .unwrap_err();
        assert!(
            matches!(e, Error::BadChunkSize { chunk_size } if chunk_size == bad),
            "{e}"
        );
        assert!(e.to_string().contains("power of two from 4096"));
    }
    for good in [4096, 8192, 1 << 20] {
        let a = Area::builder().chunk_size(good).chunks(3).build().unwrap();
        assert_eq!(a.len(), good * 3);
        assert_eq!(a.addr() % 4096, 0, "page aligned");
    }
}

fn too_large() {
    let e = Area::builder()
        .chunk_size(1 << 20)
        .chunks(1 << 28)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::TooManyChunks { .. }), "{e}");
}

fn locate_and_offsets() {
    let a = Area::builder().chunk_size(8192).chunks(4).build().unwrap();
    assert_eq!(a.locate(0), Some((0, 0)));
    assert_eq!(a.locate(8192 * 3 + 5), Some((3, 5)));
    assert_eq!(a.locate(8192 * 4), None);
    assert_eq!(a.locate(u64::MAX), None);
    assert_eq!(a.chunk_offset(2), 16384);
}

fn prefault_and_lock() {
    let a = Area::builder()
        .chunk_size(4096)
        .chunks(64)
        .prefault(true)
        .lock(true)
        .build();
    // As root (CAP_IPC_LOCK) locking always works; otherwise 256 KiB is within the usual limit.
    a.unwrap();
}

fn huge_pages_need_whole_2mib() {
    let e = Area::builder()
        .chunk_size(4096)
        .chunks(3)
        .huge_pages(true)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::HugePageMisfit { .. }), "{e}");
}

fn huge_pages_unreserved_is_a_clear_error() {
    let reserved: usize = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .map(|s| s.trim().parse().unwrap_or(0))
        .unwrap_or(0);
    let r = Area::builder()
        .chunk_size(1 << 20)
        .chunks(2)
        .huge_pages(true)
        .build();
    if reserved == 0 {
        let e = r.unwrap_err();
        assert!(
            matches!(e, Error::HugePagesUnavailable { pages: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("nr_hugepages"), "{e}");
    } else {
        // Some are reserved: the mapping may succeed (or they may all be in use).
        match r {
            Ok(a) => assert!(a.huge_pages()),
            Err(e) => assert!(matches!(e, Error::HugePagesUnavailable { .. }), "{e}"),
        }
    }
}

/// Without CAP_IPC_LOCK, an area larger than RLIMIT_MEMLOCK is refused at build time.
/// Capabilities are per thread, so the check runs in a thread that dropped CAP_IPC_LOCK.
fn memlock_limit_is_checked_at_build_time() -> Outcome {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    let old = getrlimit(Resource::Memlock);
    setrlimit(
        Resource::Memlock,
        Rlimit {
            current: Some(64 * 1024),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let r = std::thread::spawn(|| {
        let mut caps = capabilities(None).unwrap();
        caps.effective.remove(CapabilitySet::IPC_LOCK);
        if set_capabilities(None, caps).is_err() {
            return None;
        }
        Some(
            Area::builder()
                .chunk_size(4096)
                .chunks(64)
                .lock(true)
                .build(),
        )
    })
    .join()
    .unwrap();
    setrlimit(Resource::Memlock, old).unwrap();
    match r {
        None => return Err(skip("could not change this thread's capabilities")),
        Some(r) => {
            let e = r.unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::MemlockLimit {
                        needed: 262144,
                        limit: 65536
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("ulimit -l"), "{e}");
        }
    }
    Ok(())
}

test_kit::main!(
    zero_chunks,
    chunk_size_must_be_power_of_two_in_range,
    too_large,
    locate_and_offsets,
    prefault_and_lock,
    huge_pages_need_whole_2mib,
    huge_pages_unreserved_is_a_clear_error,
    memlock_limit_is_checked_at_build_time,
);
