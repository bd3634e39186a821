//! The structs and numbers this crate shares with the kernel, checked against the uapi headers
//! of Linux 7.3 (`linux/io_uring.h`, `linux/io_uring/zcrx.h`, `linux/io_uring/query.h`; the
//! field lists are quoted next to each check). A mismatch here means registrations would pass
//! garbage to the kernel.
//!
//! With `UAPI_INCLUDE` naming an include directory that has those headers (the kernel guest
//! tool extracts Debian's `linux-libc-dev` next to the kernel; `.ci/run` sets it),
//! `against_the_uapi_headers` also compiles a C program against them and compares every size
//! and offset it prints with the ones this crate compiles.

use std::mem::{align_of, offset_of, size_of};
use test_kit::{skip, Outcome};

use zcrx_ifq::abi_info::{self as abi, layouts, Layout};
use zcrx_ifq::io_uring::types::BufRingEntry;

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
fn zcrx_offsets() {
    check(
        "io_uring_zcrx_offsets",
        32,
        &[
            ("head", 0),
            ("tail", 4),
            ("rqes", 8),
            ("__resv2", 12),
            ("__resv", 16),
        ],
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
///     __u32 rx_buf_len;  /* 7.0; __resv2 before */
///     __u64 event_desc;  /* 7.2; __resv[0] before */
///     __u64 __resv[2];
/// };
/// ```
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
            ("rx_buf_len", 68),
            ("event_desc", 72),
            ("__resv", 80),
        ],
    );
    assert_eq!(size_of::<abi::io_uring_zcrx_ifq_reg>(), 96);
    assert_eq!(align_of::<abi::io_uring_zcrx_ifq_reg>(), 8);
    assert_eq!(offset_of!(abi::io_uring_zcrx_ifq_reg, offsets), 32);
    assert_eq!(offset_of!(abi::io_uring_zcrx_ifq_reg, zcrx_id), 64);
}

/// ```c
/// struct zcrx_event_desc {
///     __u64 user_data;
///     __u32 type_mask;
///     __u32 flags;
///     __u64 stats_offset;
///     __u64 __resv2[9];
/// };
/// struct zcrx_stats { __u64 copy_count; __u64 copy_bytes; };
/// struct zcrx_ctrl {
///     __u32 zcrx_id;
///     __u32 op;
///     __u64 __resv[2];
///     union { struct zcrx_ctrl_export zc_export; ... };  /* 48 bytes */
/// };
/// struct io_uring_query_hdr {
///     __u64 next_entry; __u64 query_data; __u32 query_op; __u32 size; __s32 result;
///     __u32 __resv[3];
/// };
/// struct io_uring_query_zcrx {
///     __u64 register_flags; __u64 area_flags; __u32 nr_ctrl_opcodes; __u32 features;
///     __u32 rq_hdr_size; __u32 rq_hdr_alignment; __u64 __resv2;
/// };
/// struct io_uring_query_zcrx_event {
///     __u32 event_flags; __u32 stats_size; __u32 stats_off_alignment; __u32 __resv1;
///     __u64 __resv2[4];
/// };
/// ```
fn control_query_and_event_structs() {
    check(
        "zcrx_event_desc",
        96,
        &[
            ("user_data", 0),
            ("type_mask", 8),
            ("flags", 12),
            ("stats_offset", 16),
            ("__resv2", 24),
        ],
    );
    check("zcrx_stats", 16, &[("copy_count", 0), ("copy_bytes", 8)]);
    check(
        "zcrx_ctrl",
        72,
        &[("zcrx_id", 0), ("op", 4), ("__resv", 8), ("args", 24)],
    );
    check(
        "io_uring_query_hdr",
        40,
        &[
            ("next_entry", 0),
            ("query_data", 8),
            ("query_op", 16),
            ("size", 20),
            ("result", 24),
            ("__resv", 28),
        ],
    );
    check(
        "io_uring_query_zcrx",
        40,
        &[
            ("register_flags", 0),
            ("area_flags", 8),
            ("nr_ctrl_opcodes", 16),
            ("features", 20),
            ("rq_hdr_size", 24),
            ("rq_hdr_alignment", 28),
            ("__resv2", 32),
        ],
    );
    check(
        "io_uring_query_zcrx_event",
        48,
        &[
            ("event_flags", 0),
            ("stats_size", 4),
            ("stats_off_alignment", 8),
            ("__resv1", 12),
            ("__resv2", 16),
        ],
    );
}

/// Every layout this crate compiles, against the same structs compiled by a C compiler from
/// the uapi headers in `UAPI_INCLUDE` (see the module docs). Reported as ignored without it.
fn against_the_uapi_headers() -> Outcome {
    let Some(include) = std::env::var_os("UAPI_INCLUDE") else {
        return Err(skip(
            "set UAPI_INCLUDE to an include directory with linux/io_uring/zcrx.h",
        ));
    };
    let include = std::path::PathBuf::from(include);
    assert!(
        include.join("linux/io_uring/zcrx.h").exists(),
        "UAPI_INCLUDE={} has no linux/io_uring/zcrx.h",
        include.display()
    );
    // Array and union members are compared by offset like the others; `args` is the union of
    // `zcrx_ctrl`.
    let c_field = |s: &str, f: &str| match (s, f) {
        ("zcrx_ctrl", "args") => "zc_export".to_owned(),
        _ => f.to_owned(),
    };
    let ours: Vec<Layout> = layouts()
        .into_iter()
        .filter(|l| l.name != "io_uring_buf_reg")
        .collect();
    let mut prog = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/io_uring.h>\n\
         #include <linux/io_uring/query.h>\n#include <linux/ethtool.h>\nint main(void) {\n",
    );
    for l in &ours {
        prog += &format!("printf(\"{0} %zu\\n\", sizeof(struct {0}));\n", l.name);
        for (f, _) in &l.fields {
            prog += &format!(
                "printf(\"{0}.{1} %zu\\n\", offsetof(struct {0}, {2}));\n",
                l.name,
                f,
                c_field(l.name, f)
            );
        }
    }
    prog += "printf(\"IORING_REGISTER_QUERY %d\\n\", IORING_REGISTER_QUERY);\n\
             printf(\"IORING_REGISTER_ZCRX_CTRL %d\\n\", IORING_REGISTER_ZCRX_CTRL);\n\
             printf(\"IO_URING_QUERY_ZCRX %d\\n\", IO_URING_QUERY_ZCRX);\n\
             printf(\"IO_URING_QUERY_ZCRX_EVENT %d\\n\", IO_URING_QUERY_ZCRX_EVENT);\n\
             printf(\"ZCRX_CTRL_ARM_EVENT %d\\n\", ZCRX_CTRL_ARM_EVENT);\n\
             printf(\"ZCRX_FEATURE_EVENT %d\\n\", ZCRX_FEATURE_EVENT);\n\
             printf(\"ZCRX_EVENT_COPY %d\\n\", ZCRX_EVENT_COPY);\n\
             printf(\"ZCRX_REG_NODEV %d\\n\", ZCRX_REG_NODEV);\n\
             return 0; }\n";
    let dir = std::env::temp_dir().join(format!("ifq-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layout.c"), &prog).unwrap();
    let cc = std::process::Command::new("cc")
        .arg("-I")
        .arg(&include)
        .arg(dir.join("layout.c"))
        .arg("-o")
        .arg(dir.join("layout"))
        .output()
        .expect("a C compiler (cc)");
    assert!(
        cc.status.success(),
        "compiling against {}: {}",
        include.display(),
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = std::process::Command::new(dir.join("layout"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let c: std::collections::HashMap<&str, usize> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    let mut checked = 0;
    for l in &ours {
        assert_eq!(c[l.name], l.size, "sizeof(struct {})", l.name);
        for (f, off) in &l.fields {
            let key = format!("{}.{f}", l.name);
            assert_eq!(c[key.as_str()], *off, "offsetof(struct {}, {f})", l.name);
            checked += 1;
        }
    }
    for (name, ours) in [
        ("IORING_REGISTER_QUERY", abi::IORING_REGISTER_QUERY as usize),
        (
            "IORING_REGISTER_ZCRX_CTRL",
            abi::IORING_REGISTER_ZCRX_CTRL as usize,
        ),
        ("IO_URING_QUERY_ZCRX", abi::IO_URING_QUERY_ZCRX as usize),
        (
            "IO_URING_QUERY_ZCRX_EVENT",
            abi::IO_URING_QUERY_ZCRX_EVENT as usize,
        ),
        ("ZCRX_CTRL_ARM_EVENT", abi::ZCRX_CTRL_ARM_EVENT as usize),
        ("ZCRX_FEATURE_EVENT", abi::ZCRX_FEATURE_EVENT as usize),
        ("ZCRX_EVENT_COPY", abi::ZCRX_EVENT_COPY as usize),
        ("ZCRX_REG_NODEV", abi::ZCRX_REG_NODEV as usize),
    ] {
        assert_eq!(c[name], ours, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} structs, {checked} field offsets and 8 constants agree with {}",
        ours.len(),
        include.display()
    );
    Ok(())
}

/// ```c
/// struct io_uring_buf {
///     __u64 addr;
///     __u32 len;
///     __u16 bid;
///     __u16 resv;   /* entry 0's resv is the ring tail */
/// };
/// ```
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
fn constants() {
    assert_eq!(abi::IORING_OP_RECV_ZC, 58);
    assert_eq!(zcrx_ifq::io_uring::opcode::RecvZc::CODE, 58);
    assert_eq!(abi::IORING_REGISTER_ZCRX_IFQ, 32);
    assert_eq!(abi::IORING_ZCRX_AREA_SHIFT, 48);
    assert_eq!(zcrx_ifq::io_uring::types::IORING_ZCRX_AREA_SHIFT, 48);
    assert_eq!(zcrx_ifq::completion::ZCRX_AREA_SHIFT, 48);
    assert_eq!(
        zcrx_ifq::completion::ZCRX_OFFSET_MASK,
        !zcrx_ifq::io_uring::types::IORING_ZCRX_AREA_MASK
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

/// The SQE the crate builds itself (a multishot receive with a total limit), each union by
/// the member a receive uses:
/// ```c
/// struct io_uring_sqe {
///     __u8 opcode; __u8 flags; __u16 ioprio; __s32 fd;
///     union { __u64 off; __u64 addr2; ... };
///     union { __u64 addr; __u64 splice_off_in; ... };
///     __u32 len;
///     union { __kernel_rwf_t rw_flags; ... __u32 msg_flags; ... };
///     __u64 user_data;
///     union { __u16 buf_index; __u16 buf_group; } __attribute__((packed));
///     __u16 personality;
///     union { __s32 splice_fd_in; __u32 file_index; __u32 zcrx_ifq_idx; __u32 optlen; ... };
///     union { struct { __u64 addr3; __u64 __pad2[1]; }; ... };
/// };
/// ```
fn sqe() {
    check(
        "io_uring_sqe",
        64,
        &[
            ("opcode", 0),
            ("flags", 1),
            ("ioprio", 2),
            ("fd", 4),
            ("off", 8),
            ("addr", 16),
            ("len", 24),
            ("msg_flags", 28),
            ("user_data", 32),
            ("buf_group", 40),
            ("personality", 42),
            ("optlen", 44),
            ("addr3", 48),
            ("__pad2", 56),
        ],
    );
}

/// A `RECV_ZC` SQE as the kernel expects it: opcode 58, multishot in `ioprio`, the ifq id in
/// `zcrx_ifq_idx` (the u32 at byte 44), `len` 0, addr fields zero.
fn recv_zc_sqe() {
    use zcrx_ifq::io_uring::{opcode, squeue, types::Fd};
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

/// ```c
/// struct ethtool_rxnfc {            /* the SIOCETHTOOL request for ntuple rules */
///     __u32 cmd; __u32 flow_type; __u64 data;
///     struct ethtool_rx_flow_spec fs;  /* 168 bytes: flow_type, h_u[52], h_ext[20],
///                                         m_u[52], m_ext[20], ring_cookie, location */
///     union { __u32 rule_cnt; __u32 rss_context; };
///     __u32 rule_locs[];
/// };
/// ```
fn ethtool_rxnfc() {
    check(
        "ethtool_rx_flow_spec",
        168,
        &[
            ("flow_type", 0),
            ("h_u", 4),
            ("h_ext", 56),
            ("m_u", 76),
            ("m_ext", 128),
            ("ring_cookie", 152),
            ("location", 160),
        ],
    );
    check(
        "ethtool_rxnfc",
        192,
        &[
            ("cmd", 0),
            ("flow_type", 4),
            ("data", 8),
            ("fs", 16),
            ("rule_cnt", 184),
            ("rule_locs", 188),
        ],
    );
    check("ethtool_flow_ext", 20, &[("h_dest", 2), ("data", 12)]);
}

test_kit::main!(
    ethtool_rxnfc,
    zcrx_rqe,
    zcrx_cqe,
    zcrx_offsets,
    zcrx_area_reg,
    region_desc,
    zcrx_ifq_reg,
    control_query_and_event_structs,
    against_the_uapi_headers,
    buf_entry,
    buf_reg,
    constants,
    sqe,
    recv_zc_sqe,
);
