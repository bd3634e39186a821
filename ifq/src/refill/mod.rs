//! Refill rings: how returned chunks go back to the kernel. Both producers here are pure index
//! logic (no memory access), so they can be tested against a model of the kernel consumer; the
//! backends write the entries and publish the tail.
//!
//! - [`pbuf::PbufProducer`]: the provided-buffer ring. We post buffer ids at `tail & mask` and
//!   store the tail; the kernel's head is private, so the producer counts what the kernel has
//!   consumed from completions.
//! - [`zcrx::ZcrxRefill`]: the zcrx refill queue. The kernel publishes its head (load-acquire), we
//!   publish our tail (store-release); each entry carries `chunk offset | area token`.

pub mod pbuf;
pub mod zcrx;
