//! Completion decoding, pure: from a CQE's `res`, `flags` (and, for zcrx, the big-CQE half) to
//! what happened. Kernel values are input: nothing here indexes memory, and the queue checks every
//! buffer id, offset and length against its area before a byte is read.

use rustix::io::Errno;

/// `IORING_CQE_F_BUFFER`: the upper 16 bits of `flags` hold a buffer id.
pub const CQE_F_BUFFER: u32 = 1 << 0;
/// `IORING_CQE_F_MORE`: the multishot request stays armed.
pub const CQE_F_MORE: u32 = 1 << 1;
/// `IORING_CQE_F_SOCK_NONEMPTY`: more data was waiting in the socket.
pub const CQE_F_SOCK_NONEMPTY: u32 = 1 << 2;
/// `IORING_CQE_F_NOTIF`: a zero-copy send notification.
pub const CQE_F_NOTIF: u32 = 1 << 3;
/// `IORING_CQE_F_BUF_MORE`: incremental mode, the kernel keeps using this buffer.
pub const CQE_F_BUF_MORE: u32 = 1 << 4;
/// `IORING_CQE_F_SKIP` (6.18): a filler entry in a mixed-size CQ; ignore it.
pub const CQE_F_SKIP: u32 = 1 << 5;
/// `IORING_CQE_F_32` (6.18): this entry is 32 bytes in a mixed-size CQ.
pub const CQE_F_32: u32 = 1 << 15;
/// `IORING_CQE_BUFFER_SHIFT`.
pub const CQE_BUFFER_SHIFT: u32 = 16;
/// `IORING_ZCRX_AREA_SHIFT`: a zcrx CQE offset is `area_id << 48 | offset`.
pub const ZCRX_AREA_SHIFT: u32 = 48;
/// Mask of the offset bits of a zcrx CQE offset.
pub const ZCRX_OFFSET_MASK: u64 = (1 << ZCRX_AREA_SHIFT) - 1;

/// A completion value that cannot be right for this queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompletionError {
    /// A data completion without `IORING_CQE_F_BUFFER` on a buffer-select request.
    #[error("a data completion of {len} bytes carries no buffer id")]
    MissingBuffer {
        /// The byte count.
        len: u32,
    },
    /// The buffer id is not a chunk of the area.
    #[error("buffer id {bid} is out of range (the area has {chunks} chunks)")]
    BufferIdOutOfRange {
        /// The id.
        bid: u16,
        /// Chunks in the area.
        chunks: u32,
    },
    /// The bytes would run past the end of their chunk.
    #[error("{len} bytes at offset {offset} of a chunk run past its end ({chunk_size} bytes)")]
    LengthOutOfRange {
        /// Offset inside the chunk.
        offset: u32,
        /// The byte count.
        len: u32,
        /// Chunk size.
        chunk_size: u32,
    },
    /// A zcrx completion names an area this queue did not register.
    #[error("area id {area_id} is not this queue's area ({expected})")]
    WrongArea {
        /// The id in the CQE.
        area_id: u16,
        /// The id of the registered area.
        expected: u16,
    },
    /// A zcrx offset past the end of the area.
    #[error("offset {offset} is past the end of the area ({area_len} bytes)")]
    OffsetOutOfRange {
        /// The offset.
        offset: u64,
        /// Area length.
        area_len: u64,
    },
    /// The chunk named is not one the kernel holds (accounting refused it).
    #[error("the completion names chunk {chunk}, which the kernel does not hold")]
    NotKernelOwned {
        /// The chunk.
        chunk: u32,
    },
}

/// What a receive completion says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `len` bytes arrived (always > 0).
    Data {
        /// Byte count.
        len: u32,
    },
    /// End of stream, or the request's byte limit was reached.
    Eof,
    /// No buffer was available (`-ENOBUFS` from a buffer ring, `-ENOMEM` from zcrx's copy path):
    /// return buffers, then re-arm.
    NoBuffers,
    /// The completion queue overflowed (`-ENOSPC` from zcrx): re-arm.
    CqOverflow,
    /// Any other error, as a positive errno.
    Error {
        /// The errno.
        errno: i32,
    },
}

/// Where the bytes of a buffer-ring completion are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufLoc {
    /// The buffer id (our chunk index).
    pub bid: u16,
    /// The kernel keeps filling this buffer (incremental mode).
    pub buf_more: bool,
}

/// Where the bytes of a zcrx completion are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZcrxLoc {
    /// The area id (top 16 bits of the offset).
    pub area_id: u16,
    /// Byte offset in that area.
    pub offset: u64,
}

/// A decoded receive completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<L> {
    /// What happened.
    pub event: Event,
    /// The multishot request is still armed (`IORING_CQE_F_MORE`).
    pub more: bool,
    /// Where the bytes are, when the completion names a buffer.
    pub loc: Option<L>,
}

fn event(res: i32, no_buffers: i32, overflow: Option<i32>) -> Event {
    match res {
        r if r > 0 => Event::Data { len: r as u32 },
        0 => Event::Eof,
        r if r == -no_buffers => Event::NoBuffers,
        r if overflow.is_some() && r.checked_neg() == overflow => Event::CqOverflow,
        // `i32::MIN` cannot be negated; it is not an errno either way.
        r => Event::Error {
            errno: r.checked_neg().unwrap_or(i32::MAX),
        },
    }
}

/// Decodes a completion of a multishot receive with buffer select.
#[inline]
pub fn decode_bufring(res: i32, flags: u32) -> Result<Decoded<BufLoc>, CompletionError> {
    let event = event(res, Errno::NOBUFS.raw_os_error(), None);
    let loc = (flags & CQE_F_BUFFER != 0).then_some(BufLoc {
        bid: (flags >> CQE_BUFFER_SHIFT) as u16,
        buf_more: flags & CQE_F_BUF_MORE != 0,
    });
    if let (Event::Data { len }, None) = (event, loc) {
        return Err(CompletionError::MissingBuffer { len });
    }
    Ok(Decoded {
        event,
        more: flags & CQE_F_MORE != 0,
        loc,
    })
}

/// Decodes a `RECV_ZC` completion: `big` is the second half of the 32-byte CQE, whose first word
/// is `area_id << 48 | offset`.
#[inline]
pub fn decode_zcrx(res: i32, flags: u32, big: [u64; 2]) -> Decoded<ZcrxLoc> {
    let event = event(
        res,
        Errno::NOMEM.raw_os_error(),
        Some(Errno::NOSPC.raw_os_error()),
    );
    let loc = matches!(event, Event::Data { .. }).then(|| ZcrxLoc {
        area_id: (big[0] >> ZCRX_AREA_SHIFT) as u16,
        offset: big[0] & ZCRX_OFFSET_MASK,
    });
    Decoded {
        event,
        more: flags & CQE_F_MORE != 0,
        loc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bufring_data() {
        let d = decode_bufring(100, CQE_F_BUFFER | CQE_F_MORE | (7 << 16)).unwrap();
        assert_eq!(d.event, Event::Data { len: 100 });
        assert!(d.more);
        assert_eq!(
            d.loc,
            Some(BufLoc {
                bid: 7,
                buf_more: false
            })
        );
    }

    #[test]
    fn bufring_enobufs_and_missing_buffer() {
        let d = decode_bufring(-105, 0).unwrap();
        assert_eq!(d.event, Event::NoBuffers);
        assert!(!d.more);
        assert_eq!(
            decode_bufring(5, CQE_F_MORE),
            Err(CompletionError::MissingBuffer { len: 5 })
        );
        assert_eq!(
            decode_bufring(i32::MIN, 0).unwrap().event,
            Event::Error { errno: i32::MAX }
        );
    }

    #[test]
    fn zcrx_offsets() {
        let d = decode_zcrx(4096, CQE_F_MORE, [(3u64 << 48) | 8192, 0]);
        assert_eq!(
            d.loc,
            Some(ZcrxLoc {
                area_id: 3,
                offset: 8192
            })
        );
        assert_eq!(decode_zcrx(-28, 0, [0; 2]).event, Event::CqOverflow);
        assert_eq!(decode_zcrx(-12, 0, [0; 2]).event, Event::NoBuffers);
        assert_eq!(decode_zcrx(0, 0, [0; 2]).event, Event::Eof);
    }
}
