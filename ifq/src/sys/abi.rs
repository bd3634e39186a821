//! The zcrx ABI: numbers and struct layouts from the kernel's uapi headers
//! (`include/uapi/linux/io_uring.h`, and since 7.1 `linux/io_uring/zcrx.h` and
//! `linux/io_uring/query.h`; checked against Linux 7.3); the register calls that pass them are
//! in [`calls`](crate::sys::calls). The refill region, the one piece of memory besides the area that zcrx shares with the kernel, is
//! in [`refill`](crate::sys::refill).
//!
//! The area, region, refill entry and CQE structs are the `io-uring` crate's bindgen output
//! (from the 6.15 header, unchanged since), re-exported under their C names. The ifq
//! registration grew `rx_buf_len` (7.0) and `event_desc` (7.2) after that crate's header, and the
//! query and control structs (6.19+) are not in it, so those are defined here.
//! `tests/abi_layout.rs` checks every size and field offset against the header.

use std::mem::{offset_of, size_of};

pub use io_uring::types::{
    io_uring_region_desc, io_uring_zcrx_area_reg, io_uring_zcrx_cqe, io_uring_zcrx_rqe,
};

use crate::sys::pbuf::BufReg;

/// `IORING_OP_RECV_ZC` (6.15).
pub const IORING_OP_RECV_ZC: u8 = 58;
/// `IORING_REGISTER_ZCRX_IFQ` (6.15), `nr_args` = 1.
pub const IORING_REGISTER_ZCRX_IFQ: u32 = 32;
/// `IORING_REGISTER_QUERY` (6.19), `nr_args` = 0; works on any ring fd (or on -1).
pub const IORING_REGISTER_QUERY: u32 = 35;
/// `IORING_REGISTER_ZCRX_CTRL` (6.19), `nr_args` = 0.
pub const IORING_REGISTER_ZCRX_CTRL: u32 = 36;
/// `IO_URING_QUERY_ZCRX`: what zcrx this kernel has.
pub const IO_URING_QUERY_ZCRX: u32 = 1;
/// `IO_URING_QUERY_ZCRX_EVENT` (7.2): which events, and the statistics' size and alignment.
pub const IO_URING_QUERY_ZCRX_EVENT: u32 = 3;
/// `ZCRX_CTRL_FLUSH_RQ`: the kernel takes the refill entries now.
pub const ZCRX_CTRL_FLUSH_RQ: u32 = 0;
/// `ZCRX_CTRL_EXPORT`: an fd that keeps the ifq alive and can be imported by another ring.
pub const ZCRX_CTRL_EXPORT: u32 = 1;
/// `ZCRX_CTRL_ARM_EVENT` (7.2): let an event that fired fire again.
pub const ZCRX_CTRL_ARM_EVENT: u32 = 2;
/// `ZCRX_FEATURE_RX_PAGE_SIZE` (7.0): `rx_buf_len` may ask for buffers larger than a page.
pub const ZCRX_FEATURE_RX_PAGE_SIZE: u32 = 1 << 0;
/// `ZCRX_FEATURE_EVENT` (7.2): events and copy statistics.
pub const ZCRX_FEATURE_EVENT: u32 = 1 << 1;
/// `ZCRX_EVENT_ALLOC_FAIL`: the queue found no free buffer.
pub const ZCRX_EVENT_ALLOC_FAIL: u32 = 0;
/// `ZCRX_EVENT_COPY`: data went through the copy fallback.
pub const ZCRX_EVENT_COPY: u32 = 1;
/// `ZCRX_EVENT_DESC_FLAG_STATS`: `stats_offset` places a `zcrx_stats` in the refill region.
pub const ZCRX_EVENT_DESC_FLAG_STATS: u32 = 1 << 0;
/// `IORING_ZCRX_AREA_SHIFT`: the area id sits above this bit of a zcrx offset.
pub const IORING_ZCRX_AREA_SHIFT: u32 = 48;
/// `IORING_MEM_REGION_TYPE_USER`: the region descriptor points at user memory.
pub const IORING_MEM_REGION_TYPE_USER: u32 = 1;
/// `IORING_ZCRX_AREA_DMABUF` (6.16): the area is a dma-buf.
pub const IORING_ZCRX_AREA_DMABUF: u32 = 1;
/// `ZCRX_REG_IMPORT` (6.19): import an exported ifq (its fd in `if_idx`).
pub const ZCRX_REG_IMPORT: u32 = 1;
/// `ZCRX_REG_NODEV` (7.1): no device; every receive goes through the copy path.
pub const ZCRX_REG_NODEV: u32 = 2;
/// `IORING_RECV_MULTISHOT`, set in the SQE's `ioprio` (RECV_ZC requires it).
#[cfg(feature = "sim")]
pub const IORING_RECV_MULTISHOT: u16 = 1 << 1;
/// `IO_RQ_MAX_ENTRIES` in `io_uring/zcrx.c`: the largest refill queue without `SETUP_CLAMP`.
pub const IO_RQ_MAX_ENTRIES: u32 = 32768;
/// Size of one refill entry.
pub const RQE_SIZE: usize = 16;
/// Bytes reserved in front of the refill entries for the kernel's header (`struct io_uring
/// {u32 head; u32 tail;}`, 8 bytes). Linux 6.15-6.17 put the entries right after it (offset 8);
/// 6.18 aligns them to `L1_CACHE_BYTES` (64 on x86-64 and arm64, 128 on ppc64, 256 on s390).
/// 256 covers every architecture; the offsets the kernel returns are used, never assumed.
pub const RQ_HEADER_RESERVE: usize = 256;

/// `struct io_uring_zcrx_offsets`: where the kernel put the head, the tail and the entries
/// inside the refill region.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_zcrx_offsets {
    /// Offset of the kernel's head word.
    pub head: u32,
    /// Offset of the application's tail word.
    pub tail: u32,
    /// Offset of the first refill entry.
    pub rqes: u32,
    /// Reserved.
    pub __resv2: u32,
    /// Reserved.
    pub __resv: [u64; 2],
}

/// `struct io_uring_zcrx_ifq_reg`, the argument of `IORING_REGISTER_ZCRX_IFQ` (7.3 layout).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_zcrx_ifq_reg {
    /// Interface index; with `ZCRX_REG_IMPORT`, the exported fd.
    pub if_idx: u32,
    /// Receive queue index.
    pub if_rxq: u32,
    /// Refill entries (rounded up to a power of two by the kernel, which writes it back).
    pub rq_entries: u32,
    /// `ZCRX_REG_*`.
    pub flags: u32,
    /// `struct io_uring_zcrx_area_reg *`.
    pub area_ptr: u64,
    /// `struct io_uring_region_desc *`.
    pub region_ptr: u64,
    /// Written by the kernel.
    pub offsets: io_uring_zcrx_offsets,
    /// Written by the kernel: the id receives name.
    pub zcrx_id: u32,
    /// 7.0+: the buffer size asked for (0: a page); the kernel writes back the one it uses.
    /// Reserved (and left 0) before.
    pub rx_buf_len: u32,
    /// 7.2+: `struct zcrx_event_desc *` or 0.
    pub event_desc: u64,
    /// Reserved.
    pub __resv: [u64; 2],
}

/// `struct zcrx_event_desc` (7.2): which events to post as CQEs, and where the statistics go.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct zcrx_event_desc {
    /// `user_data` of the event CQEs.
    pub user_data: u64,
    /// `1 << ZCRX_EVENT_*` for each event wanted.
    pub type_mask: u32,
    /// `ZCRX_EVENT_DESC_FLAG_*`.
    pub flags: u32,
    /// Offset of a `zcrx_stats` in the refill region (with `ZCRX_EVENT_DESC_FLAG_STATS`).
    pub stats_offset: u64,
    /// Reserved.
    pub __resv2: [u64; 9],
}

/// `struct zcrx_stats` (7.2), kept up to date by the kernel inside the refill region.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct zcrx_stats {
    /// Completions that went through the copy fallback.
    pub copy_count: u64,
    /// Bytes copied by it.
    pub copy_bytes: u64,
}

/// `struct zcrx_ctrl`, the argument of `IORING_REGISTER_ZCRX_CTRL`. The 48-byte union is
/// `args`: `zcrx_fd` of `zc_export` and `event_type` of `zc_arm_event` are its first word.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct zcrx_ctrl {
    /// The ifq.
    pub zcrx_id: u32,
    /// `ZCRX_CTRL_*`.
    pub op: u32,
    /// Reserved.
    pub __resv: [u64; 2],
    /// The per-operation union.
    pub args: [u32; 12],
}

/// `struct io_uring_query_hdr` (6.19).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_query_hdr {
    /// Next header in a chain, or 0.
    pub next_entry: u64,
    /// Pointer to the answer buffer.
    pub query_data: u64,
    /// `IO_URING_QUERY_*`.
    pub query_op: u32,
    /// Size of the answer buffer; the kernel writes back how much it filled.
    pub size: u32,
    /// Written by the kernel: 0 or a negative errno.
    pub result: i32,
    /// Reserved.
    pub __resv: [u32; 3],
}

/// `struct io_uring_query_zcrx` (6.19).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_query_zcrx {
    /// Supported `ZCRX_REG_*` flags.
    pub register_flags: u64,
    /// Supported `IORING_ZCRX_AREA_*` flags.
    pub area_flags: u64,
    /// Number of `ZCRX_CTRL_*` operations.
    pub nr_ctrl_opcodes: u32,
    /// `ZCRX_FEATURE_*`.
    pub features: u32,
    /// Size of the refill ring header.
    pub rq_hdr_size: u32,
    /// Alignment of the entries after it.
    pub rq_hdr_alignment: u32,
    /// Reserved.
    pub __resv2: u64,
}

/// `struct io_uring_query_zcrx_event` (7.2).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_query_zcrx_event {
    /// `1 << ZCRX_EVENT_*` supported.
    pub event_flags: u32,
    /// `sizeof(struct zcrx_stats)`.
    pub stats_size: u32,
    /// Alignment `stats_offset` must have.
    pub stats_off_alignment: u32,
    /// Reserved.
    pub __resv1: u32,
    /// Reserved.
    pub __resv2: [u64; 4],
}

// The numbers the `io-uring` crate carries must agree with ours.
const _: () = {
    assert!(io_uring::opcode::RecvZc::CODE == IORING_OP_RECV_ZC);
    assert!(io_uring::types::IORING_ZCRX_AREA_SHIFT == IORING_ZCRX_AREA_SHIFT);
    assert!(io_uring::types::IORING_MEM_REGION_TYPE_USER == IORING_MEM_REGION_TYPE_USER);
    assert!(crate::completion::ZCRX_AREA_SHIFT == IORING_ZCRX_AREA_SHIFT);
    assert!(size_of::<io_uring_zcrx_rqe>() == RQE_SIZE);
    assert!(size_of::<io_uring_zcrx_cqe>() == 16);
    assert!(size_of::<io_uring_zcrx_area_reg>() == 48);
    assert!(size_of::<io_uring_region_desc>() == 64);
    assert!(size_of::<io_uring_zcrx_ifq_reg>() == 96);
    assert!(
        size_of::<io_uring_zcrx_ifq_reg>() == size_of::<io_uring::types::io_uring_zcrx_ifq_reg>()
    );
    assert!(offset_of!(io_uring_zcrx_ifq_reg, offsets) == 32);
    assert!(offset_of!(io_uring_zcrx_ifq_reg, zcrx_id) == 64);
    assert!(offset_of!(io_uring_zcrx_ifq_reg, rx_buf_len) == 68);
    assert!(offset_of!(io_uring_zcrx_ifq_reg, event_desc) == 72);
    assert!(size_of::<io_uring_zcrx_offsets>() == 32);
    assert!(size_of::<zcrx_event_desc>() == 96);
    assert!(size_of::<zcrx_stats>() == 16);
    assert!(size_of::<zcrx_ctrl>() == 72);
    assert!(offset_of!(zcrx_ctrl, args) == 24);
    assert!(size_of::<io_uring_query_hdr>() == 40);
    assert!(size_of::<io_uring_query_zcrx>() == 40);
    assert!(size_of::<io_uring_query_zcrx_event>() == 48);
    assert!(size_of::<BufReg>() == 40);
};

/// Size and field offsets of one ABI struct as this crate compiles it.
#[cfg(feature = "sim")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The C struct name.
    pub name: &'static str,
    /// `sizeof`.
    pub size: usize,
    /// `offsetof` of each field, in declaration order.
    pub fields: Vec<(&'static str, usize)>,
}

/// The layouts of every struct this crate passes to, or shares with, the kernel for zcrx,
/// buffer rings and the ntuple rules' ioctl (including ones private to the crate), for `tests/abi_layout.rs`.
#[cfg(feature = "sim")]
pub fn layouts() -> Vec<Layout> {
    macro_rules! layout {
        ($name:literal, $t:ty, [$($f:ident),* $(,)?]) => {
            Layout {
                name: $name,
                size: size_of::<$t>(),
                fields: vec![$((stringify!($f), offset_of!($t, $f))),*],
            }
        };
    }
    vec![
        layout!("io_uring_zcrx_rqe", io_uring_zcrx_rqe, [off, len, __pad]),
        layout!("io_uring_zcrx_cqe", io_uring_zcrx_cqe, [off, __pad]),
        layout!(
            "io_uring_zcrx_offsets",
            io_uring_zcrx_offsets,
            [head, tail, rqes, __resv2, __resv]
        ),
        layout!(
            "io_uring_zcrx_area_reg",
            io_uring_zcrx_area_reg,
            [addr, len, rq_area_token, flags, dmabuf_fd, __resv2]
        ),
        layout!(
            "io_uring_region_desc",
            io_uring_region_desc,
            [user_addr, size, flags, id, mmap_offset, __resv]
        ),
        layout!(
            "io_uring_zcrx_ifq_reg",
            io_uring_zcrx_ifq_reg,
            [
                if_idx, if_rxq, rq_entries, flags, area_ptr, region_ptr, offsets, zcrx_id,
                rx_buf_len, event_desc, __resv
            ]
        ),
        layout!(
            "zcrx_event_desc",
            zcrx_event_desc,
            [user_data, type_mask, flags, stats_offset, __resv2]
        ),
        layout!("zcrx_stats", zcrx_stats, [copy_count, copy_bytes]),
        layout!("zcrx_ctrl", zcrx_ctrl, [zcrx_id, op, __resv, args]),
        layout!(
            "io_uring_query_hdr",
            io_uring_query_hdr,
            [next_entry, query_data, query_op, size, result, __resv]
        ),
        layout!(
            "io_uring_query_zcrx",
            io_uring_query_zcrx,
            [
                register_flags,
                area_flags,
                nr_ctrl_opcodes,
                features,
                rq_hdr_size,
                rq_hdr_alignment,
                __resv2
            ]
        ),
        layout!(
            "io_uring_query_zcrx_event",
            io_uring_query_zcrx_event,
            [
                event_flags,
                stats_size,
                stats_off_alignment,
                __resv1,
                __resv2
            ]
        ),
        layout!(
            "io_uring_sqe",
            crate::sys::sqe::io_uring_sqe,
            [
                opcode,
                flags,
                ioprio,
                fd,
                off,
                addr,
                len,
                msg_flags,
                user_data,
                buf_group,
                personality,
                optlen,
                addr3,
                __pad2
            ]
        ),
        layout!(
            "io_uring_buf_reg",
            BufReg,
            [ring_addr, ring_entries, bgid, flags, resv]
        ),
    ]
    .into_iter()
    .chain(super::ethtool::layouts())
    .collect()
}
