//! Submission entries this crate builds itself.
//!
//! `io-uring` 0.7.16 has a builder for every receive this crate submits but one: a multishot
//! receive with a total byte limit (`IORING_RECV_MSHOT_LIM`, Linux 6.17+) carries the limit in
//! the SQE's `optlen`, which no `io_uring::opcode` builder for `IORING_OP_RECV` sets. So that one
//! entry is built here, every byte of it, as the kernel's `struct io_uring_sqe` ([`Sqe`], whose
//! layout `tests/abi_layout.rs` checks against the uapi header), and handed over as the
//! `squeue::Entry` the caller pushes.
//!
//! The hand-over is the one place this crate relies on how `io-uring` represents an entry: that
//! `squeue::Entry` is the 64-byte kernel SQE itself, the bytes its `SubmissionQueue::push` copies
//! into the kernel's submission array. `io-uring` has no public constructor from bytes; the size
//! and alignment are checked at compile time, and a unit test checks our bytes against its
//! `RecvMulti` builder's.

use std::mem::{align_of, size_of};

use io_uring::{opcode, squeue};

/// `IORING_RECV_MULTISHOT`, in `ioprio`.
const IORING_RECV_MULTISHOT: u16 = 1 << 1;
/// `IOSQE_FIXED_FILE`: `fd` is an index into the registered files.
const IOSQE_FIXED_FILE: u8 = 1 << 0;
/// `IOSQE_BUFFER_SELECT`: the kernel picks the buffer from the group in `buf_group`.
const IOSQE_BUFFER_SELECT: u8 = 1 << 5;

/// `struct io_uring_sqe` (64 bytes), with each union named by the member a receive uses.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct io_uring_sqe {
    /// `IORING_OP_*`.
    pub(crate) opcode: u8,
    /// `IOSQE_*`.
    pub(crate) flags: u8,
    /// For receives, `IORING_RECV_*`.
    pub(crate) ioprio: u16,
    /// The file, or with `IOSQE_FIXED_FILE` its index.
    pub(crate) fd: i32,
    /// Union: `off`, `addr2`, `cmd_op`.
    pub(crate) off: u64,
    /// Union: `addr`, `splice_off_in`, `level`/`optname`.
    pub(crate) addr: u64,
    /// Buffer length, or for a multishot receive the most bytes per completion (0: no limit).
    pub(crate) len: u32,
    /// Union: `msg_flags` and the other per-opcode flags.
    pub(crate) msg_flags: u32,
    /// Passed back in the completion.
    pub(crate) user_data: u64,
    /// Union: `buf_group`, `buf_index`.
    pub(crate) buf_group: u16,
    /// Credentials to use.
    pub(crate) personality: u16,
    /// Union: `optlen` (for a multishot receive, the total byte limit), `file_index`,
    /// `splice_fd_in`, `zcrx_ifq_idx`, `addr_len`.
    pub(crate) optlen: u32,
    /// Union: `addr3`, `optval`, `cmd`.
    pub(crate) addr3: u64,
    /// Reserved.
    pub(crate) __pad2: u64,
}

// The hand-over below needs the two to be the same size and alignment.
const _: () = {
    assert!(size_of::<io_uring_sqe>() == 64);
    assert!(size_of::<squeue::Entry>() == size_of::<io_uring_sqe>());
    assert!(align_of::<squeue::Entry>() == align_of::<io_uring_sqe>());
};

impl io_uring_sqe {
    /// A multishot receive on `fd` (`fixed`: an index into the registered files) that selects
    /// buffers from group `bgid` and ends after `total` bytes (0: no limit).
    pub(crate) fn recv_multishot(fd: i32, fixed: bool, bgid: u16, total: u32) -> Self {
        Self {
            opcode: opcode::RecvMulti::CODE,
            flags: IOSQE_BUFFER_SELECT | if fixed { IOSQE_FIXED_FILE } else { 0 },
            ioprio: IORING_RECV_MULTISHOT,
            fd,
            buf_group: bgid,
            optlen: total,
            ..Self::default()
        }
    }

    /// The entry to push.
    pub(crate) fn into_entry(self) -> squeue::Entry {
        // SAFETY: `squeue::Entry` is `io-uring`'s `#[repr(C)]` wrapper of the kernel's 64-byte
        // `io_uring_sqe` (its `push` copies it into the kernel's array as is), which is what
        // `Self` is: same size and alignment (checked above), field for field (checked against
        // the uapi header by `tests/abi_layout.rs`). Both are plain integers: every byte pattern
        // is a valid value, and `Self` has no padding.
        let entry: squeue::Entry = unsafe { std::mem::transmute(self) };
        debug_assert_eq!(entry.get_opcode(), u32::from(self.opcode));
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::types::{Fd, Fixed};

    fn bytes(entry: squeue::Entry) -> [u8; 64] {
        // SAFETY: as in `into_entry`, the other way round.
        unsafe { std::mem::transmute(entry) }
    }

    /// Without a limit, our entry is exactly the one `io-uring`'s builder makes.
    #[test]
    fn same_as_the_builder_without_a_limit() {
        for (fd, fixed) in [(7, false), (3, true)] {
            let ours = io_uring_sqe::recv_multishot(fd, fixed, 0x0506, 0).into_entry();
            let theirs = if fixed {
                opcode::RecvMulti::new(Fixed(fd as u32), 0x0506).build()
            } else {
                opcode::RecvMulti::new(Fd(fd), 0x0506).build()
            };
            assert_eq!(bytes(ours.user_data(9)), bytes(theirs.user_data(9)));
        }
    }

    /// The limit is the `u32` at byte 44 (`optlen`), and nothing else changes.
    #[test]
    fn the_limit_is_optlen() {
        let capped = bytes(io_uring_sqe::recv_multishot(7, false, 1, 0x0102_0304).into_entry());
        let mut plain = bytes(opcode::RecvMulti::new(Fd(7), 1).build());
        plain[44..48].copy_from_slice(&0x0102_0304u32.to_ne_bytes());
        assert_eq!(capped, plain);
    }
}
