//! The few places that touch raw memory or raw kernel interfaces. Everything `unsafe` in this
//! crate lives under `sys/`, in `rxbuf.rs` (turning a checked range of the area into a slice) and
//! in `returns.rs` (the lock-free return stack, which is safe code over atomics).

pub(crate) mod abi;
pub(crate) mod caps;
pub(crate) mod mmap;
pub(crate) mod ring;
