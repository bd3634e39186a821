//! The interface queue (ifq): a receive memory area the kernel writes into, the accounting of who
//! owns each piece of it, and safe handles ([`RxBuf`]) to received bytes.
//!
//! Two kernel mechanisms sit behind the same model:
//! - [`zcrx`]: io_uring zero-copy receive. The area is registered as a page-pool memory provider on
//!   a NIC receive queue; the NIC writes payloads straight into it.
//! - [`bufring`]: a provided buffer ring. The kernel copies received bytes into chunks of the area
//!   that the application posted. Works on every NIC (loopback, veth, virtio) since Linux 5.19.
//!
//! In both, a completion becomes an [`RxBuf`] (a slice of one chunk); dropping every handle into a
//! chunk returns it, on any thread, through a lock-free return stack; the owning thread publishes
//! returned chunks to the kernel in batches with one release store of the ring tail.
//!
//! Ownership of every chunk is tracked by a pure state machine ([`chunk::ChunkTable`]): each chunk
//! is in exactly one of pool / kernel / user / refill, and the counters always balance.
//!
//! Teardown is sound: the area stays mapped, and the io_uring that the kernel's scrub belongs to
//! stays open, for as long as any [`RxBuf`] lives; a leaked handle leaks memory, never safety.
// The rest of the lints come from `[workspace.lints]`.
#![deny(missing_docs)]

pub mod area;
pub mod backend;
pub mod bufring;
pub mod chunk;
pub mod completion;
pub mod error;
pub mod kernel;
pub mod nic;
pub mod probe;
pub mod refill;
mod returns;
mod rxbuf;
#[cfg(feature = "sim")]
mod sim;
mod sys;
pub mod zcrx;

pub use area::{Area, AreaBuilder};
pub use backend::{RecvEvent, RxPool, TeardownReport};
pub use chunk::{ChunkId, ChunkState, ChunkTable, OwnerId, ReleaseTo, Snapshot};
pub use error::{Error, Result};
pub use kernel::KernelVersion;
pub use rxbuf::RxBuf;
#[cfg(feature = "sim")]
pub use sim::abi_info;

/// Re-export of the `io-uring` crate version this crate is built against.
///
/// It is part of this crate's API, not a convenience: the backends register on an
/// [`io_uring::IoUring`] you own (`BufRing::register`, `ZcrxIfq::register`), return the
/// submission entries you push (`recv_multishot`, `recv_zc`: [`io_uring::squeue::Entry`]) and
/// decode the completions you pop ([`io_uring::cqueue::Entry`]). Those types must come from the
/// same `io-uring` version as this crate's, which a re-export guarantees and a second dependency
/// line in your `Cargo.toml` does not. A release of this crate that moves to a semver-incompatible
/// `io-uring` is itself semver-incompatible. The `zcrx` runtime hides the ring entirely; use this
/// only when you drive your own ring.
pub use io_uring;
