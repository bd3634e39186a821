//! Thread-per-core io_uring runtime with zero-copy TCP receive.
//!
//! Not yet implemented: the executor, driver and TCP types arrive with issue 3. The receive
//! machinery it will drive lives in the [`ifq`] crate.
#![deny(missing_docs)]

pub use ifq;
