//! Which receive backend the tests run on, from `RUNTIME_TEST_RX`: `bufring` (the default) or
//! `zcrx-nodev` (zcrx without a device, Linux 7.1+, as root). The same tests then carry the same
//! traffic through either backend.
//!
//! Included with `#[path = "common/rx.rs"] mod rx;` (or through `common`) so it stands alone.
#![allow(dead_code)]

use zcrx::{Builder, RxBackend};

/// The backend the tests were asked to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rx {
    BufRing,
    ZcrxNodev,
}

/// What `RUNTIME_TEST_RX` asks for. An unknown value fails the test rather than quietly testing
/// the default.
pub(crate) fn rx() -> Rx {
    match std::env::var("RUNTIME_TEST_RX").as_deref() {
        Err(_) | Ok("") | Ok("bufring") => Rx::BufRing,
        Ok("zcrx-nodev") => Rx::ZcrxNodev,
        Ok(other) => panic!("RUNTIME_TEST_RX={other}: expected bufring or zcrx-nodev"),
    }
}

/// The description `Runtime::rx_backend` must give under the chosen backend.
pub(crate) fn expected_backend() -> &'static str {
    match rx() {
        Rx::BufRing => "buffer ring",
        Rx::ZcrxNodev => "zcrx without a device (copy)",
    }
}

/// `b` set up for the chosen backend. zcrx is asked for explicitly, so a kernel that refuses it
/// fails the test at start-up instead of quietly running the buffer ring.
pub(crate) fn with_rx(b: Builder) -> Builder {
    match rx() {
        Rx::BufRing => b,
        Rx::ZcrxNodev => b.rx_backend(RxBackend::Zcrx).zcrx_nodev(),
    }
}

/// A builder with the defaults, for the chosen backend.
pub(crate) fn builder() -> Builder {
    with_rx(Builder::new())
}

/// For a test that only means something on the buffer ring (its depth, its `-ENOBUFS`): a skip
/// saying why on the other backends.
pub(crate) fn bufring_only(why: &str) -> test_kit::Outcome {
    if rx() == Rx::BufRing {
        return Ok(());
    }
    Err(test_kit::skip(format!(
        "{why} (RUNTIME_TEST_RX={:?})",
        rx()
    )))
}

/// Asserts, inside a runtime, that it receives with the chosen backend.
pub(crate) fn assert_backend() {
    assert_eq!(zcrx::rx_backend(), expected_backend());
}

/// The chunks of a pool built with `chunks(n).chunk_size(size)`: zcrx splits the same bytes into
/// the kernel's buffers (pages).
pub(crate) fn pool_chunks(chunks: usize, chunk_size: usize) -> u32 {
    match rx() {
        Rx::BufRing => chunks as u32,
        Rx::ZcrxNodev => (chunks * chunk_size / rustix::param::page_size()) as u32,
    }
}

/// The chunks a clean teardown gave back: the buffer ring takes every chunk back from the
/// kernel into the pool; zcrx leaves the free ones with the kernel, which keeps the area until
/// its ring closes.
pub(crate) fn given_back(c: &zcrx::ifq::chunk::Counts) -> u32 {
    match rx() {
        Rx::BufRing => c.pool,
        Rx::ZcrxNodev => c.kernel,
    }
}
