//! A thread-per-core io_uring runtime with zero-copy TCP receive.
//!
//! Each runtime thread owns one io_uring (`SINGLE_ISSUER | DEFER_TASKRUN`) and one receive pool
//! (an [`ifq`] interface queue). Connections receive with multishot receives into the shared
//! pool; you get [`RxBuf`] handles to the bytes, and dropping them returns the chunks. A
//! connection that holds more than its share stops being read until it gives buffers back.
//!
//! ```no_run
//! use zcrx::net::TcpListener;
//!
//! let rt = zcrx::Runtime::builder().build()?;
//! rt.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:7000")?;
//!     loop {
//!         let (stream, _) = listener.accept().await?;
//!         zcrx::spawn(async move {
//!             // Echo without copying: each received chunk is sent straight from the pool.
//!             while let Ok(Some(buf)) = stream.recv().await {
//!                 if stream.send_buf(buf).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//!     #[allow(unreachable_code)]
//!     Ok::<(), std::io::Error>(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Cargo features
//!
//! Both off by default; each adds trait impls to [`net::TcpStream`] and nothing else:
//!
//! - **`tokio`**: `tokio::io::{AsyncRead, AsyncWrite, AsyncBufRead}` (tokio without default
//!   features: only its I/O traits, no tokio runtime), so tokio-util codecs, `tokio::io::copy`,
//!   hyper (through hyper-util's `TokioIo`) and the like run over a runtime stream.
//! - **`futures-io`**: `futures_io::{AsyncRead, AsyncWrite, AsyncBufRead}`, for the `futures`
//!   crate's `AsyncReadExt`, `AsyncBufReadExt`, `AsyncWriteExt` and what builds on them.
//!
//! `poll_fill_buf` lends the received buffer's bytes in place (zero-copy); `poll_read` and
//! `poll_write` copy. Without either feature, [`net::TcpStream::read`] reads into a slice. See
//! [`net::TcpStream`] ("Async I/O traits", "Cancellation") for the details.
//!
//! With `tokio::io::AsyncWriteExt` in scope, `stream.shutdown()` still names the stream's own
//! [`shutdown(how)`](net::TcpStream::shutdown); the trait's is
//! `AsyncWriteExt::shutdown(&mut stream)`.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod builder;
mod config;
mod context;
mod depth;
mod driver;
mod executor;
pub mod net;
mod op;
#[allow(clippy::module_inception)]
mod runtime;
mod rx;
mod shutdown;
mod signals;
mod sys;
pub mod time;
mod waker;

pub use builder::{start, Builder};
pub use config::{RxBackend, ZcrxTarget};
pub use driver::DriverStats;
pub use executor::{JoinError, JoinHandle};
pub use runtime::{
    rx_backend, rx_snapshot, rx_stats, shutdown_requested, spawn, stats, yield_now, Runtime,
};
pub use rx::RxStats;
pub use shutdown::{ShutdownReport, ShutdownSignal};
pub use zcrx_ifq as ifq;
pub use zcrx_ifq::{OwnerId, RxBuf};

/// The crate's README, compiled as a doctest so its example stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
