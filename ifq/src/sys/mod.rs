//! The kernel boundary: every raw pointer, raw system call and piece of memory shared with the
//! kernel is behind the small safe wrappers here, each `unsafe` block with the invariant it
//! relies on. Outside `sys/`, the crate has `unsafe` blocks only in `rxbuf.rs` (turning a range of
//! the area that was checked against it into a slice, and freeing what the last handle owns) and,
//! with the `sim` feature, in `sim.rs`, whose `unsafe fn`s forward their caller's contract to the
//! raw writes here.
//!
//! - `mmap`: the anonymous and memfd mappings behind the area and the rings.
//! - `ring`: the shared head and tail words.
//! - `pbuf`: a provided buffer ring's entries, tail, producer and (un)registration.
//! - `refill`: the zcrx refill ring's entries, head, tail and producer; the kernel's statistics.
//! - `abi`: the zcrx uapi structs and numbers.
//! - `calls`: the zcrx register calls (registration, import, query, control operations).
//! - `sqe`: the one submission entry built here (a multishot receive with a total byte limit),
//!   and its hand-over as an `io_uring::squeue::Entry`.
//! - `caps`: capability and rlimit checks.
//! - `ethtool`: the `SIOCETHTOOL` ioctl that reads ntuple flow rules, and its structs.
//!
//! The simulated kernel (`crate::sim`, feature `sim`) sits above the backends; its raw write
//! into the area is `mmap::copy_into` here.

// Its `pub` items are `abi_info` (crate root), for the layout tests, with the `sim` feature on.
#[cfg_attr(not(feature = "sim"), allow(unreachable_pub))]
pub(crate) mod abi;
pub(crate) mod calls;
pub(crate) mod caps;
pub(crate) mod ethtool;
pub(crate) mod mmap;
pub(crate) mod pbuf;
pub(crate) mod refill;
pub(crate) mod ring;
pub(crate) mod sqe;
