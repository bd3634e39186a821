//! Models of the kernel's side of the two receive backends, for simulated queues
//! (`zcrx-ifq`'s `sim` feature): what the property tests drive the user side against, and what
//! the benchmarks drive it with. Each model behaves as the kernel does (Linux 6.18's
//! `io_uring/kbuf.c` and `io_uring/zcrx.c`) and checks what the kernel cannot: that the user side
//! never hands it a buffer twice or one a live handle still points into.
//!
//! A check that fails returns `Err` with what went wrong, for the caller to turn into its own
//! failure (`proptest`'s `TestCaseError::fail`, a panic).
//!
//! Behind the `ifq` feature, which brings `zcrx-ifq` with `sim`.

pub mod bufring;
pub mod zcrx;

/// The result of a model's check.
pub type Check<T = ()> = Result<T, String>;
