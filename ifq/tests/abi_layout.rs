//! The structs and numbers this crate shares with the kernel, checked against
//! `include/uapi/linux/io_uring.h` of Linux 6.18 (the field lists are quoted next to each check).
//! A mismatch here means registrations would pass garbage to the kernel.

use std::mem::{align_of, offset_of, size_of};

use ifq::io_uring::types::BufRingEntry;
use ifq::zcrx::abi_info::{self as abi, layouts, Layout};

fn layout(name: &str) -> Layout {
    layouts()
        .into_iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no layout for {name}"))
}

fn check(name: &str, size: usize, fields: &[(&str, usize)]) {
    let l = layout(name);
    assert_eq!(l.size, size, "sizeof(struct {name})");
    for &(field, offset) in fields {
        let got = l.fields.iter().find(|(f, _)| *f == field).map(|&(_, o)| o);
        assert_eq!(got, Some(offset), "offsetof(struct {name}, {field})");
    }
}

/// ```c
/// struct io_uring_zcrx_rqe {
///     __u64 off;
///     __u32 len;
///     __u32 __pad;
/// };
/// ```
#[test]
fn zcrx_rqe() {
    check(
        "io_uring_zcrx_rqe",
        16,
        &[("off", 0), ("len", 8), ("__pad", 12)],
    );
    assert_eq!(size_of::<abi::io_uring_zcrx_rqe>(), 16);
    assert_eq!(offset_of!(abi::io_uring_zcrx_rqe, len), 8);
    assert_eq!(abi::RQE_SIZE, 16);
}

/// ```c
/// struct io_uring_zcrx_cqe {
///     __u64 off;
///     __u64 __pad;
/// };
/// ```
#[test]
fn zcrx_cqe() {
    check("io_uring_zcrx_cqe", 16, &[("off", 0), ("__pad", 8)]);
    assert_eq!(size_of::<abi::io_uring_zcrx_cqe>(), 16);
}

/// ```c
/// struct io_uring_zcrx_offsets {
///     __u32 head;
///     __u32 tail;
///     __u32 rqes;
///     __u32 __resv2;
///     __u64 __resv[2];
/// };
/// ```
#[test]
fn zcrx_offsets() {
    check(
        "io_uring_zcrx_offsets",
        32,
        &[("head", 0), ("tail", 4), ("rqes", 8)],
    );
}

/// ```c
/// struct io_uring_zcrx_area_reg {
///     __u64 addr;
///     __u64 len;
///     __u64 rq_area_token;
///     __u32 flags;
///     __u32 dmabuf_fd;
///     __u64 __resv2[2];
/// };
/// ```
#[test]
fn zcrx_area_reg() {
    check(
        "io_uring_zcrx_area_reg",
        48,
        &[
            ("addr", 0),
            ("len", 8),
            ("rq_area_token", 16),
            ("flags", 24),
            ("dmabuf_fd", 28),
            ("__resv2", 32),
        ],
    );
    assert_eq!(size_of::<abi::io_uring_zcrx_area_reg>(), 48);
    assert_eq!(offset_of!(abi::io_uring_zcrx_area_reg, rq_area_token), 16);
}

/// ```c
/// struct io_uring_region_desc {
///     __u64 user_addr;
///     __u64 size;
///     __u32 flags;
///     __u32 id;
///     __u64 mmap_offset;
///     __u64 __resv[4];
/// };
/// ```
#[test]
fn region_desc() {
    check(
        "io_uring_region_desc",
        64,
        &[
            ("user_addr", 0),
            ("size", 8),
            ("flags", 16),
            ("id", 20),
            ("mmap_offset", 24),
            ("__resv", 32),
        ],
    );
    assert_eq!(size_of::<abi::io_uring_region_desc>(), 64);
}

/// ```c
/// struct io_uring_zcrx_ifq_reg {
///     __u32 if_idx;
///     __u32 if_rxq;
///     __u32 rq_entries;
///     __u32 flags;
///
///     __u64 area_ptr;   /* pointer to struct io_uring_zcrx_area_reg */
///     __u64 region_ptr; /* struct io_uring_region_desc * */
///
///     struct io_uring_zcrx_offsets offsets;
///     __u32 zcrx_id;
///     __u32 __resv2;    /* rx_buf_len since 7.0 */
///     __u64 __resv[3];
/// };
/// ```
#[test]
fn zcrx_ifq_reg() {
    check(
        "io_uring_zcrx_ifq_reg",
        96,
        &[
            ("if_idx", 0),
            ("if_rxq", 4),
            ("rq_entries", 8),
            ("flags", 12),
            ("area_ptr", 16),
            ("region_ptr", 24),
            ("offsets", 32),
            ("zcrx_id", 64),
            ("__resv2", 68),
            ("__resv", 72),
        ],
    );
    assert_eq!(size_of::<abi::io_uring_zcrx_ifq_reg>(), 96);
    assert_eq!(align_of::<abi::io_uring_zcrx_ifq_reg>(), 8);
    assert_eq!(offset_of!(abi::io_uring_zcrx_ifq_reg, offsets), 32);
    assert_eq!(offset_of!(abi::io_uring_zcrx_ifq_reg, zcrx_id), 64);
}

/// ```c
/// struct io_uring_buf {
///     __u64 addr;
///     __u32 len;
///     __u16 bid;
///     __u16 resv;   /* entry 0's resv is the ring tail */
/// };
/// ```
#[test]
fn buf_entry() {
    assert_eq!(size_of::<BufRingEntry>(), 16);
    let mut entries = [0u64; 2];
    // SAFETY: `BufRingEntry` is a transparent wrapper of a plain 16-byte integer struct; the
    // array is 16 bytes, 8-aligned and zero-filled, which is a valid value of it.
    let entry = unsafe { &mut *entries.as_mut_ptr().cast::<BufRingEntry>() };
    entry.set_addr(0x1122_3344_5566_7788);
    entry.set_len(0x99aa_bbcc);
    entry.set_bid(0xbeef);
    // SAFETY: `entry` is a valid, initialised entry (the first of a one-entry "ring").
    let tail =
        unsafe { BufRingEntry::tail(entry) } as usize - entry as *const BufRingEntry as usize;
    let bytes: Vec<u8> = entries.iter().flat_map(|w| w.to_ne_bytes()).collect();
    assert_eq!(
        u64::from_ne_bytes(bytes[0..8].try_into().unwrap()),
        0x1122_3344_5566_7788,
        "addr at 0"
    );
    assert_eq!(
        u32::from_ne_bytes(bytes[8..12].try_into().unwrap()),
        0x99aa_bbcc,
        "len at 8"
    );
    assert_eq!(
        u16::from_ne_bytes(bytes[12..14].try_into().unwrap()),
        0xbeef,
        "bid at 12"
    );
    assert_eq!(tail, 14, "resv (the ring tail) at 14");
}

/// ```c
/// struct io_uring_buf_reg {
///     __u64 ring_addr;
///     __u32 ring_entries;
///     __u16 bgid;
///     __u16 flags;
///     __u64 resv[3];
/// };
/// ```
#[test]
fn buf_reg() {
    check(
        "io_uring_buf_reg",
        40,
        &[
            ("ring_addr", 0),
            ("ring_entries", 8),
            ("bgid", 12),
            ("flags", 14),
            ("resv", 16),
        ],
    );
}

/// ```c
/// IORING_OP_RECV_ZC,            /* 58 in enum io_uring_op */
/// IORING_REGISTER_ZCRX_IFQ = 32,
/// #define IORING_ZCRX_AREA_SHIFT 48
/// #define IORING_ZCRX_AREA_MASK  (~(((__u64)1 << IORING_ZCRX_AREA_SHIFT) - 1))
/// IORING_MEM_REGION_TYPE_USER = 1,
/// IORING_ZCRX_AREA_DMABUF = 1,
/// ZCRX_REG_IMPORT = 1, ZCRX_REG_NODEV = 2,   /* 6.19, 7.1 */
/// #define IORING_RECV_MULTISHOT (1U << 1)
/// #define IO_RQ_MAX_ENTRIES 32768              /* io_uring/zcrx.c */
/// ```
#[test]
fn constants() {
    assert_eq!(abi::IORING_OP_RECV_ZC, 58);
    assert_eq!(ifq::io_uring::opcode::RecvZc::CODE, 58);
    assert_eq!(abi::IORING_REGISTER_ZCRX_IFQ, 32);
    assert_eq!(abi::IORING_ZCRX_AREA_SHIFT, 48);
    assert_eq!(ifq::io_uring::types::IORING_ZCRX_AREA_SHIFT, 48);
    assert_eq!(ifq::completion::ZCRX_AREA_SHIFT, 48);
    assert_eq!(
        ifq::completion::ZCRX_OFFSET_MASK,
        !ifq::io_uring::types::IORING_ZCRX_AREA_MASK
    );
    assert_eq!(abi::IORING_MEM_REGION_TYPE_USER, 1);
    assert_eq!(abi::IORING_ZCRX_AREA_DMABUF, 1);
    assert_eq!(abi::ZCRX_REG_IMPORT, 1);
    assert_eq!(abi::ZCRX_REG_NODEV, 2);
    assert_eq!(abi::IORING_RECV_MULTISHOT, 2);
    assert_eq!(abi::IO_RQ_MAX_ENTRIES, 32768);
    // The refill region header: `struct io_uring { u32 head; u32 tail; }` is 8 bytes; 6.18 puts
    // the entries at ALIGN(8, L1_CACHE_BYTES), at most 256 on any architecture.
    const { assert!(abi::RQ_HEADER_RESERVE >= 256) };
}

/// A `RECV_ZC` SQE as the kernel expects it: opcode 58, multishot in `ioprio`, the ifq id in
/// `zcrx_ifq_idx` (the u32 at byte 44), `len` 0, addr fields zero.
#[test]
fn recv_zc_sqe() {
    use ifq::io_uring::{opcode, squeue, types::Fd};
    let sqe: squeue::Entry = opcode::RecvZc::new(Fd(7), 0).ifq(0x0102_0304).build();
    // SAFETY: `squeue::Entry` is a `#[repr(C)]` wrapper of the 64-byte `io_uring_sqe` (plain
    // integers), so its bytes are a valid `[u8; 64]`.
    let bytes: [u8; 64] = unsafe { std::mem::transmute(sqe) };
    assert_eq!(bytes[0], 58, "opcode");
    assert_eq!(
        u16::from_ne_bytes([bytes[2], bytes[3]]),
        2,
        "ioprio = IORING_RECV_MULTISHOT"
    );
    assert_eq!(i32::from_ne_bytes(bytes[4..8].try_into().unwrap()), 7, "fd");
    assert_eq!(
        u64::from_ne_bytes(bytes[16..24].try_into().unwrap()),
        0,
        "addr"
    );
    assert_eq!(
        u32::from_ne_bytes(bytes[24..28].try_into().unwrap()),
        0,
        "len"
    );
    assert_eq!(
        u32::from_ne_bytes(bytes[44..48].try_into().unwrap()),
        0x0102_0304,
        "zcrx_ifq_idx"
    );
}
