//! `tokio::io::{AsyncRead, AsyncWrite, AsyncBufRead}` for [`TcpStream`] (and the first two for
//! `&TcpStream`): thin adapters over the poll logic in `rw`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use super::TcpStream;

/// `AsyncRead` and `AsyncWrite` for a stream type that derefs to `TcpStream` (itself or a
/// shared reference), with the impls' docs.
macro_rules! read_write {
    ($ty:ty, $(#[$read_doc:meta])*; $(#[$write_doc:meta])*) => {
        $(#[$read_doc])*
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.poll_read_with(cx, buf.remaining(), |bytes| buf.put_slice(bytes))
                    .map_ok(|_| ())
            }
        }

        $(#[$write_doc])*
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_copy(cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_gather(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.poll_flush_send(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.poll_shutdown_write(cx)
            }
        }
    };
}

read_write!(
    TcpStream,
    /// Copies received bytes out of the held buffer (and buffers that have already arrived); the
    /// remainder stays held. Cancellation-safe.
    ;
    /// Copies the caller's bytes (vectored writes gathered into one buffer, one send) and sends
    /// them; see [`TcpStream`]'s docs ("Cancellation") for what a write abandoned after
    /// `Pending` means.
);
read_write!(
    &TcpStream,
    /// As for `TcpStream`: one task may read while another writes.
    ;
    /// As for `TcpStream`: one task may write while another reads.
);

/// Zero-copy: `poll_fill_buf` lends the held received buffer's bytes in place; `consume`
/// advances through it and drops it (returning its chunk) once consumed.
impl AsyncBufRead for TcpStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        self.get_mut().poll_fill_buf_mut(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().consume_held(amt)
    }
}
