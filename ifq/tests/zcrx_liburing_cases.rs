//! liburing's own zcrx test (`test/zcrx.c`, the `ZCRX_REG_NODEV` rewrite: the kernel maintainers'
//! list of cases and expected errnos), case by case against `ifq`. It needs Linux 7.1+ (no
//! device); on older kernels every test is reported as ignored, with the reason. Run it in the 7.x
//! guest: `cargo run -p guest -- test -p zcrx-ifq --test zcrx_liburing_cases`.
//!
//! Each case asserts the exact errno Linux 7.3 gives (read from `io_uring/zcrx.c`, `memmap.c`,
//! `rsrc.c`, `register.c` and `net.c`; liburing often accepts either of two) and what `ifq` makes
//! of it. Where the safe API can express a case it goes through the API (`ZcrxIfq::register*`,
//! `ZcrxConfig::rx_buf_len`, `RecvEvent` from `complete()`, `export()`/`import()`, the hidden
//! `raw_refill`/`raw_ctrl_flush*` hooks for hostile refill rings). `ifq` maps the area and the
//! refill region itself (page-aligned, writable, the region sized for the entries) and keeps
//! the registration and control structs to itself, so the cases about those are sent raw, built
//! from `zcrx_ifq::abi_info`, and show what `ZcrxRefusal::from_errno` makes of the errno.
//!
//! | case                                        | 7.3 answer                                 |
//! |---------------------------------------------|--------------------------------------------|
//! | no refill region / NULL region memory       | EFAULT (`copy_from_user`/`io_create_region`) |
//! | region size 0 / too small for the entries   | EINVAL (`io_allocate_rbuf_ring`)           |
//! | rq_entries 127                              | 0, rounded up to 128 and written back      |
//! | rq_entries 0, ~0, 32769 (no CLAMP), 384     | EINVAL                                     |
//! | area len 0 / addr 0 / no area               | EFAULT                                     |
//! | area below / above its mapping, read-only   | EFAULT (`pin_user_pages_fast`)             |
//! | area size or address not page-aligned       | EINVAL (`io_import_area`)                  |
//! | read-only registration structs              | EFAULT (`copy_to_user`, rolled back)       |
//! | rx_buf_len ~0 / 1<<31 (no device)           | EINVAL / EOPNOTSUPP                        |
//! | receive on fd -1 / ring fd / wrong ifq id   | EBADF / ENOTSOCK / EINVAL, no F_MORE       |
//! | receive on a UDP socket (not in liburing)   | EPROTONOSUPPORT, no F_MORE                 |
//! | flush of an unknown id                      | ENXIO                                      |
//! | export without a ring / unknown id          | EINVAL / ENXIO                             |
//! | import of fd -1 / without a ring            | EBADF / EINVAL                             |
//! | export into read-only memory                | EFAULT                                     |
//! | hostile refill entries and indices, flushed | 0 (the kernel skips them)                  |
//! | twice the area, nothing returned            | -ENOMEM ends the receive                   |

use std::ffi::c_void;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::addr_of_mut;
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};
use zcrx_ifq::RxPool;

use zcrx_ifq::abi_info::{
    io_uring_region_desc, io_uring_zcrx_area_reg, io_uring_zcrx_ifq_reg, zcrx_ctrl,
    IORING_MEM_REGION_TYPE_USER, IORING_REGISTER_ZCRX_CTRL, IORING_REGISTER_ZCRX_IFQ,
    IORING_ZCRX_AREA_SHIFT, RQE_SIZE, ZCRX_CTRL_EXPORT, ZCRX_REG_IMPORT, ZCRX_REG_NODEV,
};
use zcrx_ifq::completion::CQE_F_MORE;
use zcrx_ifq::error::ZcrxRefusal;
use zcrx_ifq::io_uring::types::{Fd, SubmitArgs, Timespec};
use zcrx_ifq::io_uring::{cqueue, opcode, squeue, IoUring};
use zcrx_ifq::zcrx::{ZcrxConfig, ZcrxFeatures, ZcrxIfq};
use zcrx_ifq::{Area, Error, OwnerId, RecvEvent, RxBuf};

mod common;
use common::zcrx::{nodev_guard, zcrx_ring};

type Ring = IoUring<squeue::Entry, cqueue::Entry32>;

/// liburing's `RQ_ENTRIES`, `RQ_ENTRIES_SMALL` and `AREA_SZ` (4096 * 132).
const RQ_ENTRIES: u32 = 128;
const RQ_ENTRIES_SMALL: u32 = 16;
const AREA_PAGES: usize = 132;
/// `IO_RQ_MAX_ENTRIES`: the largest refill ring without `IORING_SETUP_CLAMP`.
const RQ_MAX: u32 = 32768;
const USER_DATA: u64 = 0x2c7c;

fn page() -> usize {
    rustix::param::page_size()
}

fn area_len() -> usize {
    AREA_PAGES * page()
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        0 => "0",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::EBADF => "EBADF",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::ENXIO => "ENXIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOMEM => "ENOMEM",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ERANGE => "ERANGE",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EPERM => "EPERM",
        _ => "another errno",
    }
}

// ---------------------------------------------------------------------------------------------
// Rings (the guards and the ring zcrx needs are in tests/common/zcrx.rs).

/// liburing's `try_register_zcrx` ring (8 entries).
fn raw_ring() -> Ring {
    IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .expect("a SINGLE_ISSUER | DEFER_TASKRUN ring with 32-byte CQEs")
}

fn nodev_area(pages: usize) -> Area {
    Area::builder()
        .chunk_size(page())
        .chunks(pages)
        .build()
        .expect("an area")
}

/// liburing's `prep_server`: a NODEV queue over 132 pages with 128 refill entries on a new
/// ring, and a connected TCP pair.
fn prep_server(rq_entries: u32) -> (Ring, ZcrxIfq, Pair) {
    let ring = zcrx_ring();
    let rx = ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(rq_entries), None)
        .expect("ZCRX_REG_NODEV on 7.1+");
    assert_eq!(rx.rq_entries(), rq_entries);
    (ring, rx, tcp_pair())
}

struct Pair {
    client: TcpStream,
    server: TcpStream,
}

/// liburing's `t_create_socket_pair(fds, true)`: a connected loopback TCP pair.
fn tcp_pair() -> Pair {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    Pair { client, server }
}

// ---------------------------------------------------------------------------------------------
// Raw registrations: what the safe API cannot express.

/// `io_uring_register(fd, opcode, arg, nr_args)`; the errno on failure.
///
/// # Safety
/// `arg` must be what the kernel expects for `opcode`, valid and writable where the kernel
/// writes back, for as long as the call runs.
unsafe fn sys_register(fd: RawFd, opcode: u32, arg: *mut c_void, nr_args: u32) -> Result<i64, i32> {
    // Every argument goes as a full register word: the kernel truncates to its `unsigned int`s.
    // SAFETY: forwarded from the caller; the syscall touches no other memory of this process.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd as libc::c_long,
            opcode as libc::c_long,
            arg,
            nr_args as libc::c_long,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(ret)
    }
}

/// An anonymous mapping, unmapped on drop. Only ever handed to the kernel as an address; no Rust
/// reference into it is made, so the kernel pinning or writing it is invisible to the compiler.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn anon(len: usize, prot: libc::c_int, flags: libc::c_int) -> Option<Self> {
        // SAFETY: a new private anonymous mapping at an address the kernel picks: no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(Self { ptr: p.cast(), len })
    }

    fn new(len: usize, prot: libc::c_int) -> Self {
        Self::anon(len, prot, 0).expect("mmap")
    }

    fn protect(&self, offset: usize, len: usize, prot: libc::c_int) {
        assert!(offset + len <= self.len);
        // SAFETY: the range lies inside this mapping, which no Rust reference points into.
        let r = unsafe { libc::mprotect(self.ptr.add(offset).cast(), len, prot) };
        assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Puts `value` at the start of the mapping and makes the mapping read-only (liburing's
    /// `write_ro_params`).
    fn read_only_copy<T: Copy>(&self, value: T) -> *mut T {
        assert!(std::mem::size_of::<T>() <= self.len);
        self.protect(0, self.len, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: the mapping is writable now, page-aligned (enough for any `T` here) and large
        // enough (checked); no reference into it exists.
        unsafe { self.ptr.cast::<T>().write(value) };
        self.protect(0, self.len, libc::PROT_READ);
        self.ptr.cast()
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: this mapping, unmapped once. Pages the kernel pinned stay valid for the kernel.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// liburing's `get_rq_size`: `ALIGN(ALIGN(rq_hdr_size, rq_hdr_alignment) + entries * 16, page)`.
fn rq_size(f: &ZcrxFeatures, entries: u32) -> usize {
    let align = |v: usize, a: usize| v.div_ceil(a) * a;
    let rqes = align(f.rq_hdr_size as usize, f.rq_hdr_alignment as usize);
    align(rqes + entries as usize * RQE_SIZE, page())
}

/// liburing's `setup()`: a refill region for 128 entries, and the 132-page area with an
/// inaccessible page on each side, so that "below" and "above" the area are known to be
/// unmappable. (liburing's own `setup()` maps the guarded area and then overwrites
/// `def_area_mem` with a second, unguarded mapping, so its below/above cases probe whatever
/// happens to neighbour that one.)
struct Mem {
    rq: Map,
    rq_size: usize,
    outer: Map,
}

impl Mem {
    fn new(f: &ZcrxFeatures) -> Self {
        let rq_size = rq_size(f, RQ_ENTRIES);
        let rq = Map::new(rq_size, libc::PROT_READ | libc::PROT_WRITE);
        let outer = Map::anon(
            area_len() + 2 * page(),
            libc::PROT_NONE,
            libc::MAP_NORESERVE,
        )
        .expect("mmap");
        outer.protect(page(), area_len(), libc::PROT_READ | libc::PROT_WRITE);
        Self { rq, rq_size, outer }
    }

    fn area(&self) -> u64 {
        self.outer.addr() + page() as u64
    }
}

/// liburing's `struct zcrx_reg`: the area, the region and the registration that points at both.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RawReg {
    area: io_uring_zcrx_area_reg,
    region: io_uring_region_desc,
    ifq: io_uring_zcrx_ifq_reg,
}

/// liburing's `default_reg`: NODEV, 128 entries, the whole guarded area. Boxed, so that the
/// embedded pointers stay right.
fn default_reg(mem: &Mem) -> Box<RawReg> {
    let mut r = Box::<RawReg>::default();
    r.region = io_uring_region_desc {
        user_addr: mem.rq.addr(),
        size: mem.rq_size as u64,
        flags: IORING_MEM_REGION_TYPE_USER,
        ..Default::default()
    };
    r.area = io_uring_zcrx_area_reg {
        addr: mem.area(),
        len: area_len() as u64,
        ..Default::default()
    };
    r.ifq = io_uring_zcrx_ifq_reg {
        flags: ZCRX_REG_NODEV,
        rq_entries: RQ_ENTRIES,
        area_ptr: addr_of_mut!(r.area) as u64,
        region_ptr: addr_of_mut!(r.region) as u64,
        ..Default::default()
    };
    r
}

/// `IORING_REGISTER_ZCRX_IFQ` on `ring` with the registration at `reg`: 0 or the errno.
fn register_raw(ring: &Ring, reg: *mut io_uring_zcrx_ifq_reg) -> i32 {
    // SAFETY: `reg` points to a live, writable registration. The pointers inside it, and the
    // memory they describe, are either this test's own live mappings and structs (never viewed
    // through a Rust reference while the kernel may write them) or deliberately bad (0,
    // read-only, unmapped): the kernel reaches user memory only through copy_from_user,
    // copy_to_user and pin_user_pages, which fail with EFAULT instead of touching anything else.
    match unsafe { sys_register(ring.as_raw_fd(), IORING_REGISTER_ZCRX_IFQ, reg.cast(), 1) } {
        Ok(_) => 0,
        Err(e) => e,
    }
}

/// liburing's `try_register_zcrx`: on a fresh ring, which exits right after.
fn try_register(reg: &mut RawReg) -> i32 {
    let ring = raw_ring();
    register_raw(&ring, addr_of_mut!(reg.ifq))
}

/// Asserts a raw answer and shows what `ifq`'s classifier makes of it.
fn expect_errno(what: &str, got: i32, errno: i32, refusal: ZcrxRefusal) {
    assert_eq!(
        got,
        errno,
        "{what}: expected {}, the kernel answered {} ({got})",
        errno_name(errno),
        errno_name(got)
    );
    assert_eq!(ZcrxRefusal::from_errno(got), refusal, "{what}");
    println!("{what}: {} -> {refusal:?}", errno_name(got));
}

/// `ZCRX_CTRL_EXPORT` of ifq `zcrx_id` on the ring `ring_fd`, raw (for what `ZcrxIfq::export`
/// cannot express).
fn raw_export(ring_fd: RawFd, zcrx_id: u32) -> Result<OwnedFd, i32> {
    let mut ctrl = zcrx_ctrl {
        zcrx_id,
        op: ZCRX_CTRL_EXPORT,
        ..Default::default()
    };
    // SAFETY: `ctrl` is a live, writable zcrx_ctrl; EXPORT reads and writes only its 72 bytes.
    unsafe {
        sys_register(
            ring_fd,
            IORING_REGISTER_ZCRX_CTRL,
            addr_of_mut!(ctrl).cast(),
            0,
        )
    }?;
    let fd = ctrl.args[0] as RawFd;
    assert!(fd >= 0, "EXPORT succeeded with zcrx_fd {fd}");
    // SAFETY: on success the kernel installed this new fd in this process; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `IORING_REGISTER_ZCRX_IFQ` with `ZCRX_REG_IMPORT` of `box_fd` on `ring_fd`: the registration
/// as the kernel wrote it back.
fn raw_import(ring_fd: RawFd, box_fd: RawFd) -> Result<io_uring_zcrx_ifq_reg, i32> {
    let mut reg = io_uring_zcrx_ifq_reg {
        if_idx: box_fd as u32,
        flags: ZCRX_REG_IMPORT,
        ..Default::default()
    };
    // SAFETY: a live, writable registration; with IMPORT the kernel follows no pointer in it
    // (area, region and event pointers are 0, as it requires).
    unsafe {
        sys_register(
            ring_fd,
            IORING_REGISTER_ZCRX_IFQ,
            addr_of_mut!(reg).cast(),
            1,
        )
    }?;
    Ok(reg)
}

fn fd_target(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Receiving (liburing's `transfer_bytes`).

/// liburing's `fill_pattern`/`check_pattern` byte for stream position `i`.
fn pattern(i: usize) -> u8 {
    ((i as u64).wrapping_mul(1_000_000_001) ^ 0xdead_beef) as u8
}

/// What to do with received buffers.
#[derive(Clone, Copy, Debug)]
struct Returns {
    /// Hold the first `hold` buffers, then drop them all and flush once (`usize::MAX`: hold
    /// every buffer, never return anything).
    hold: usize,
    /// After that, flush once per `every` dropped buffers.
    every: usize,
}

/// liburing's `flags = 0`: nothing is returned.
const HOLD_ALL: Returns = Returns {
    hold: usize::MAX,
    every: 1,
};
/// liburing's `T_RETURN_BUFS`: every buffer back at once, with a flush.
const EAGER: Returns = Returns { hold: 0, every: 1 };

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `res` 0 without `F_MORE`: the request's byte limit was reached (`RecvEvent::Eof`).
    Limit,
    NoBuffers,
    Error(i32),
}

struct Received {
    received: usize,
    end: End,
    /// The buffers held under `HOLD_ALL`, checked byte for byte.
    held: Vec<RxBuf>,
}

/// Waits (up to `deadline`) for at least one CQE and returns all that are there.
fn wait_cqes(ring: &mut Ring, deadline: Instant) -> Vec<(u64, i32, u32, [u64; 2])> {
    loop {
        assert!(Instant::now() < deadline, "no completion in time");
        let ts = Timespec::new().sec(1);
        match ring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        let cqes: Vec<_> = ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags(), *c.big_cqe()))
            .collect();
        if !cqes.is_empty() {
            return cqes;
        }
    }
}

/// Pushes `sqe` (with `USER_DATA`) and submits it.
fn submit(ring: &mut Ring, sqe: squeue::Entry) {
    let sqe = sqe.user_data(USER_DATA);
    // SAFETY: a RECV_ZC entry carries no pointer into this process's memory (the kernel holds
    // its own reference on the socket file while the request lives).
    unsafe { ring.submission().push(&sqe).expect("SQ has room") };
    ring.submit().expect("io_uring_enter");
}

/// liburing's `transfer_bytes`: one receive limited to `length` bytes (`sqe->len`) on the
/// server side of `pair`, through `rx`, submitted on `ring` naming ifq `id`, while the client
/// sends the pattern a page at a time, at most two pages ahead. Checks every byte, handles the
/// buffers as `returns` says, and returns how the request ended.
fn transfer_bytes(
    ring: &mut Ring,
    rx: &mut ZcrxIfq,
    id: u32,
    pair: &mut Pair,
    length: usize,
    returns: Returns,
) -> Received {
    let page = page();
    let sqe = opcode::RecvZc::new(Fd(pair.server.as_raw_fd()), length as u32)
        .ifq(id)
        .build();
    submit(ring, sqe);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tx_buf = vec![0u8; page];
    let (mut tx, mut received) = (0usize, 0usize);
    let (mut held, mut taken, mut dropped) = (Vec::new(), 0usize, 0usize);
    loop {
        if tx < length && tx - received < 2 * page {
            let n = page.min(length - tx);
            for (i, b) in tx_buf[..n].iter_mut().enumerate() {
                *b = pattern(tx + i);
            }
            pair.client.write_all(&tx_buf[..n]).expect("send");
            tx += n;
        }
        if tx == received && received < length {
            // Nothing in flight that could complete: send more first.
            continue;
        }
        for (user_data, res, flags, big) in wait_cqes(ring, deadline) {
            assert_eq!(user_data, USER_DATA);
            let c = rx
                .complete(OwnerId(1), res, flags, big)
                .unwrap_or_else(|e| panic!("completion res {res} flags {flags:#x}: {e}"));
            let (more, rearm) = (c.more, c.needs_rearm());
            let end = match c.event {
                RecvEvent::Data(buf) => {
                    assert!(more, "a data completion keeps the request armed");
                    for (i, &b) in buf.iter().enumerate() {
                        assert_eq!(b, pattern(received + i), "byte {}", received + i);
                    }
                    received += buf.len();
                    assert!(received <= tx, "received {received} of {tx} sent");
                    if taken < returns.hold {
                        held.push(buf);
                        taken += 1;
                        if taken == returns.hold {
                            held.clear();
                            rx.flush();
                        }
                    } else {
                        drop(buf);
                        dropped += 1;
                        if dropped % returns.every == 0 {
                            rx.flush();
                        }
                    }
                    continue;
                }
                RecvEvent::Eof => End::Limit,
                RecvEvent::NoBuffers => End::NoBuffers,
                RecvEvent::Error(e) => End::Error(e.raw_os_error().unwrap_or(-1)),
                RecvEvent::CqOverflow => panic!("CQ overflow with a 1024-entry CQ"),
            };
            assert!(!more, "{end:?} ends the request");
            // Only running dry asks for a new receive; the limit and errors end the stream.
            assert_eq!(rearm, end == End::NoBuffers, "{end:?}");
            if end == End::Limit {
                assert_eq!(received, length, "the byte limit ended the request");
            }
            return Received {
                received,
                end,
                held,
            };
        }
    }
}

/// The queue's books balance with nothing held: every chunk is the kernel's again.
fn assert_balanced(rx: &ZcrxIfq, what: &str) {
    let s = rx.snapshot();
    assert_eq!(s.counts.total(), AREA_PAGES as u32, "{what}: {s:?}");
    assert_eq!(s.counts.user, 0, "{what}: {s:?}");
    assert_eq!(s.held_bytes, 0, "{what}: {s:?}");
    assert!(s.owners.is_empty(), "{what}: {s:?}");
}

/// Twice the area through `rx` with every buffer returned at once, byte-exact; what liburing
/// calls a working queue.
fn twice_the_area(ring: &mut Ring, rx: &mut ZcrxIfq, returns: Returns, what: &str) {
    let mut pair = tcp_pair();
    let id = rx.zcrx_id();
    let out = transfer_bytes(ring, rx, id, &mut pair, 2 * area_len(), returns);
    assert_eq!(out.end, End::Limit, "{what}: {} bytes", out.received);
    let stats = rx.stats();
    assert_eq!(stats.ctrl_flush_errors, 0, "{what}: {stats:?}");
    println!(
        "{what}: {} bytes byte-exact through {} pages",
        out.received, AREA_PAGES
    );
}

// ---------------------------------------------------------------------------------------------
// test_register_basic

/// The default registration succeeds, raw and through the API, and the kernel writes back what
/// it chose; with 2 MiB huge pages too, where some are reserved.
fn register_basic() -> Outcome {
    let f = nodev_guard()?;
    let mem = Mem::new(&f);
    let mut reg = default_reg(&mem);
    let ring = raw_ring();
    assert_eq!(register_raw(&ring, addr_of_mut!(reg.ifq)), 0);
    let align = |v: u32, a: u32| v.div_ceil(a) * a;
    assert_eq!(reg.ifq.rq_entries, RQ_ENTRIES);
    assert_eq!(reg.ifq.zcrx_id, 0, "the first ifq of a ring");
    assert_eq!(
        reg.ifq.rx_buf_len as usize,
        page(),
        "7.0+ writes back the buffer size"
    );
    assert_eq!(
        reg.ifq.offsets.rqes,
        align(f.rq_hdr_size, f.rq_hdr_alignment),
        "{:?}",
        reg.ifq.offsets
    );
    assert!(reg.ifq.offsets.head < reg.ifq.offsets.rqes);
    assert!(reg.ifq.offsets.tail < reg.ifq.offsets.rqes);
    assert_ne!(reg.ifq.offsets.head, reg.ifq.offsets.tail);
    assert_eq!(reg.area.rq_area_token, 0, "area 0's token");
    drop(ring);

    let ring = zcrx_ring();
    let rx = ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(RQ_ENTRIES), None)
        .expect("the default registration through the API");
    assert!(rx.is_no_device());
    assert_eq!(rx.area_token(), 0);
    assert_eq!(rx.buffer_size(), page());
    assert_eq!(rx.teardown().held_chunks, 0);

    // CONFIG_HUGEPAGE: 16 MiB of 2 MiB pages.
    let ring = zcrx_ring();
    match Area::builder()
        .chunk_size(page())
        .chunks((16 << 20) / page())
        .huge_pages(true)
        .build()
    {
        Ok(huge) => {
            let rx = ZcrxIfq::register_nodev(&ring, huge, Some(RQ_ENTRIES), None)
                .expect("a huge-page area");
            assert_eq!(rx.teardown().held_chunks, 0);
            println!("huge-page area registered");
        }
        Err(e) => println!("huge-page case not run (none reserved here): {e}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_rq

/// A refill region that is missing, has no memory, is empty or is too small for its entries.
/// `ifq` maps the region itself, sized for the entries it asks for, so none of these can come
/// from the safe API.
fn refill_region_refused() -> Outcome {
    let f = nodev_guard()?;
    let mem = Mem::new(&f);

    let mut reg = default_reg(&mem);
    reg.ifq.region_ptr = 0;
    // copy_from_user of the region descriptor from NULL.
    expect_errno(
        "no region",
        try_register(&mut reg),
        libc::EFAULT,
        ZcrxRefusal::Other(libc::EFAULT),
    );

    let mut reg = default_reg(&mem);
    reg.region.user_addr = 0;
    // io_create_region: a user region must have an address.
    expect_errno(
        "region with no memory",
        try_register(&mut reg),
        libc::EFAULT,
        ZcrxRefusal::Other(libc::EFAULT),
    );

    let mut reg = default_reg(&mem);
    reg.region.size = 0;
    // io_allocate_rbuf_ring: the entries do not fit in 0 bytes.
    expect_errno(
        "region of size 0",
        try_register(&mut reg),
        libc::EINVAL,
        ZcrxRefusal::InvalidSetup,
    );

    // liburing's "too small" case runs only when the region is larger than a page, which 128
    // entries never need on 7.3 (a 128-byte header plus 2 KiB): 256 entries in the same one-page
    // region is the same case.
    let mut reg = default_reg(&mem);
    assert_eq!(mem.rq_size, page());
    reg.ifq.rq_entries = 2 * RQ_ENTRIES;
    assert!(rq_size(&f, reg.ifq.rq_entries) > mem.rq_size);
    expect_errno(
        "region too small for its entries",
        try_register(&mut reg),
        libc::EINVAL,
        ZcrxRefusal::InvalidSetup,
    );
    Ok(())
}

/// A non-power-of-two `rq_entries` is rounded up, and the kernel writes the rounded value back:
/// `ZcrxIfq::rq_entries()` is that value. (`ifq` rounds before asking, so the kernel sees 128
/// there; raw, it sees 127.)
fn rq_entries_rounding() -> Outcome {
    let f = nodev_guard()?;
    let mem = Mem::new(&f);
    let mut reg = default_reg(&mem);
    reg.ifq.rq_entries = RQ_ENTRIES - 1;
    assert_eq!(try_register(&mut reg), 0, "127 entries");
    assert_eq!(reg.ifq.rq_entries, RQ_ENTRIES, "written back rounded up");
    println!("rq_entries 127: 0, written back as {}", reg.ifq.rq_entries);

    // The rounding comes before the region check: 129 needs room for 256.
    let mut reg = default_reg(&mem);
    reg.ifq.rq_entries = RQ_ENTRIES + 1;
    expect_errno(
        "rq_entries 129 in a region for 128",
        try_register(&mut reg),
        libc::EINVAL,
        ZcrxRefusal::InvalidSetup,
    );

    for (asked, rounded) in [(RQ_ENTRIES - 1, RQ_ENTRIES), (100, 128), (17, 32)] {
        let ring = zcrx_ring();
        let rx = ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(asked), None)
            .unwrap_or_else(|e| panic!("rq_entries {asked}: {e}"));
        assert_eq!(rx.rq_entries(), rounded, "rq_entries {asked}");
    }
    Ok(())
}

/// `rq_entries` 0, ~0, above 32768 without `IORING_SETUP_CLAMP`, and more than the region
/// holds: EINVAL. Through the API these are clamped to 1..=32768 before the kernel is asked
/// (documented on `ZcrxConfig::rq_entries`), and the region is always sized for them.
fn rq_entries_limits() -> Outcome {
    let f = nodev_guard()?;
    let mem = Mem::new(&f);
    let per_page = (page() / RQE_SIZE) as u32;
    for (what, entries) in [
        ("rq_entries 0", 0),
        ("rq_entries ~0", u32::MAX),
        ("rq_entries 32769 without CLAMP", RQ_MAX + 1),
        ("rq_entries 128 + a page of entries", RQ_ENTRIES + per_page),
    ] {
        let mut reg = default_reg(&mem);
        reg.ifq.rq_entries = entries;
        expect_errno(
            what,
            try_register(&mut reg),
            libc::EINVAL,
            ZcrxRefusal::InvalidSetup,
        );
    }

    // With CLAMP the kernel clamps to 32768 instead (and says so), given a region that fits.
    let big = Map::new(rq_size(&f, RQ_MAX), libc::PROT_READ | libc::PROT_WRITE);
    let mut reg = default_reg(&mem);
    reg.region.user_addr = big.addr();
    reg.region.size = big.len as u64;
    reg.ifq.rq_entries = 40_000;
    let clamp = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_clamp()
        .build(8)
        .unwrap();
    assert_eq!(
        register_raw(&clamp, addr_of_mut!(reg.ifq)),
        0,
        "40000 with CLAMP"
    );
    assert_eq!(reg.ifq.rq_entries, RQ_MAX);
    println!("rq_entries 40000 with CLAMP: 0, written back as {RQ_MAX}");

    for (asked, got) in [(0, 1), (u32::MAX, RQ_MAX), (RQ_MAX + 1, RQ_MAX)] {
        let ring = zcrx_ring();
        let rx = ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(asked), None)
            .unwrap_or_else(|e| panic!("rq_entries {asked} through the API: {e}"));
        assert_eq!(rx.rq_entries(), got, "ifq clamps rq_entries {asked}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_area, test_area_ro

/// A change to the default registration, given the page size.
type Change = fn(&mut RawReg, u64);

/// Area bounds. An `Area` is always a whole number of pages mapped at a page boundary and
/// readable and writable, and `ifq` passes exactly that mapping: none of these can come from the
/// safe API.
fn area_bounds() -> Outcome {
    let f = nodev_guard()?;
    let mem = Mem::new(&f);
    let page = page() as u64;
    let cases: [(&str, Change, i32); 7] = [
        // io_validate_user_buf_range: no length.
        ("area len 0", |r, _| r.area.len = 0, libc::EFAULT),
        // io_import_umem: no address.
        ("area addr 0", |r, _| r.area.addr = 0, libc::EFAULT),
        // copy_from_user of the area descriptor from NULL.
        ("no area", |r, _| r.ifq.area_ptr = 0, libc::EFAULT),
        // pin_user_pages_fast meets the inaccessible guard page.
        (
            "area starting a page below",
            |r, p| r.area.addr -= p,
            libc::EFAULT,
        ),
        (
            "area ending a page above",
            |r, p| r.area.len += p,
            libc::EFAULT,
        ),
        // io_import_area's alignment check.
        (
            "area size not page-aligned",
            |r, p| r.area.len -= p / 2,
            libc::EINVAL,
        ),
        (
            "area address not page-aligned",
            |r, p| {
                r.area.len /= 2;
                r.area.addr += p / 2;
            },
            libc::EINVAL,
        ),
    ];
    for (what, change, errno) in cases {
        let mut reg = default_reg(&mem);
        change(&mut reg, page);
        expect_errno(
            what,
            try_register(&mut reg),
            errno,
            ZcrxRefusal::from_errno(errno),
        );
    }
    assert_eq!(
        ZcrxRefusal::from_errno(libc::EFAULT),
        ZcrxRefusal::Other(libc::EFAULT)
    );
    Ok(())
}

/// A read-only area: the kernel pins it for writing, which fails. `Area` is always writable.
fn area_read_only() -> Outcome {
    let f = nodev_guard()?;
    let mem = Mem::new(&f);
    let ro = Map::new(area_len(), libc::PROT_READ);
    let mut reg = default_reg(&mem);
    reg.area.addr = ro.addr();
    expect_errno(
        "read-only area",
        try_register(&mut reg),
        libc::EFAULT,
        ZcrxRefusal::Other(libc::EFAULT),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_invalid_rx_page

/// Bad `rx_buf_len`: raw, ~0 is EINVAL (not a power of two) and 1<<31 EOPNOTSUPP (no device
/// copies into anything but pages); so is any size but a page. Through the API: `BadRxBufLen`.
fn rx_buf_len_refused() -> Outcome {
    let f = nodev_guard()?;
    if !f.large_buffers() {
        return Err(skip("no ZCRX_FEATURE_RX_PAGE_SIZE (liburing skips it too)"));
    }
    let mem = Mem::new(&f);
    let page = page() as u32;
    for (what, len, errno) in [
        ("rx_buf_len ~0", u32::MAX, libc::EINVAL),
        ("rx_buf_len 1<<31", 1 << 31, libc::EOPNOTSUPP),
        ("rx_buf_len 2 pages", 2 * page, libc::EOPNOTSUPP),
        ("rx_buf_len half a page", page / 2, libc::EINVAL),
    ] {
        let mut reg = default_reg(&mem);
        reg.ifq.rx_buf_len = len;
        expect_errno(
            what,
            try_register(&mut reg),
            errno,
            ZcrxRefusal::from_errno(errno),
        );
    }
    let mut reg = default_reg(&mem);
    reg.ifq.rx_buf_len = page;
    assert_eq!(try_register(&mut reg), 0, "rx_buf_len of a page");
    assert_eq!(reg.ifq.rx_buf_len, page);

    let ring = zcrx_ring();
    let register = |chunk: usize, chunks: usize, len: u32| {
        let area = Area::builder()
            .chunk_size(chunk)
            .chunks(chunks)
            .build()
            .unwrap();
        ZcrxIfq::register(&ring, area, ZcrxConfig::no_device().rx_buf_len(len))
    };
    // Not a power of two, or less than a page: refused before the kernel is asked.
    for len in [u32::MAX, page / 2, 3 * page] {
        match register(page as usize, AREA_PAGES, len) {
            Err(e @ Error::BadRxBufLen { .. }) => {
                assert!(e.to_string().contains("power of two"), "{e}");
                println!("API rx_buf_len {len}: {e}");
            }
            other => panic!("rx_buf_len {len}: expected BadRxBufLen, got {other:?}"),
        }
    }
    // Larger powers of two the chunks can hold: the kernel's EOPNOTSUPP, explained.
    for (chunk, chunks) in [(2 * page as usize, 66), (1 << 20, 1)] {
        match register(chunk, chunks, chunk as u32) {
            Err(e @ Error::BadRxBufLen { .. }) => {
                assert!(e.to_string().contains("EOPNOTSUPP"), "{e}");
                println!("API rx_buf_len {chunk}: {e}");
            }
            other => panic!("rx_buf_len {chunk}: expected BadRxBufLen, got {other:?}"),
        }
    }
    let rx = register(page as usize, AREA_PAGES, page).expect("rx_buf_len of a page");
    assert_eq!(rx.buffer_size(), page as usize);
    Ok(())
}

/// liburing's 1<<31 through the API: no device takes anything but a page (the kernel's
/// EOPNOTSUPP), and no chunk holds 2 GiB, so `ifq` answers `BadRxBufLen` before asking.
fn rx_buf_len_2_gib_without_a_device() -> Outcome {
    let f = nodev_guard()?;
    if !f.large_buffers() {
        return Err(skip("no ZCRX_FEATURE_RX_PAGE_SIZE"));
    }
    let ring = zcrx_ring();
    let result = ZcrxIfq::register(
        &ring,
        nodev_area(AREA_PAGES),
        ZcrxConfig::no_device().rx_buf_len(1 << 31),
    );
    match result {
        Err(Error::BadRxBufLen { rx_buf_len, .. }) => assert_eq!(rx_buf_len, 1 << 31),
        Err(e) => panic!("rx_buf_len 1<<31 without a device: expected BadRxBufLen, got: {e}"),
        Ok(_) => panic!("rx_buf_len 1<<31 registered without a device"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_ro_params

/// Read-only registration structs: the kernel reads them, registers, then fails to write its
/// answers back (EFAULT) and rolls everything back, so the next registration on the same ring
/// gets id 0 again. `ifq` passes its own writable locals, so the safe API cannot do this.
fn read_only_params() -> Outcome {
    let f = nodev_guard()?;
    let mem = Mem::new(&f);
    let ro = Map::new(2 * page(), libc::PROT_READ | libc::PROT_WRITE);
    let ring = raw_ring();

    // liburing's case: the registration itself read-only (its area and region stay writable).
    let mut reg = default_reg(&mem);
    let p = ro.read_only_copy(reg.ifq);
    expect_errno(
        "read-only registration",
        register_raw(&ring, p),
        libc::EFAULT,
        ZcrxRefusal::Other(libc::EFAULT),
    );
    // The area and the region descriptors are written back too.
    let area = ro.read_only_copy(reg.area);
    reg.ifq.area_ptr = area as u64;
    expect_errno(
        "read-only area descriptor",
        register_raw(&ring, addr_of_mut!(reg.ifq)),
        libc::EFAULT,
        ZcrxRefusal::Other(libc::EFAULT),
    );
    let mut reg = default_reg(&mem);
    let region = ro.read_only_copy(reg.region);
    reg.ifq.region_ptr = region as u64;
    expect_errno(
        "read-only region descriptor",
        register_raw(&ring, addr_of_mut!(reg.ifq)),
        libc::EFAULT,
        ZcrxRefusal::Other(libc::EFAULT),
    );

    let mut reg = default_reg(&mem);
    assert_eq!(register_raw(&ring, addr_of_mut!(reg.ifq)), 0);
    assert_eq!(
        reg.ifq.zcrx_id, 0,
        "the refused registrations left no ifq behind"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_invalid_recv

/// Receives on fd -1 (EBADF), on the ring fd (ENOTSOCK), naming another ifq id (EINVAL, from
/// the request's prep) and, beyond liburing, on a UDP socket (EPROTONOSUPPORT): each ends at
/// once without `F_MORE`, and `complete()` gives `RecvEvent::Error` with that errno and no
/// re-arm.
fn invalid_recv() -> Outcome {
    let _ = nodev_guard()?;
    let (mut ring, mut rx, pair) = prep_server(RQ_ENTRIES);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ring_fd = ring.as_raw_fd();
    let cases = [
        ("fd -1", rx.recv_zc(Fd(-1)), libc::EBADF),
        ("the ring fd", rx.recv_zc(Fd(ring_fd)), libc::ENOTSOCK),
        (
            "a wrong zcrx id",
            opcode::RecvZc::new(Fd(pair.server.as_raw_fd()), 0)
                .ifq(rx.zcrx_id() + 1)
                .build(),
            libc::EINVAL,
        ),
        (
            "a UDP socket",
            rx.recv_zc(Fd(udp.as_raw_fd())),
            libc::EPROTONOSUPPORT,
        ),
    ];
    for (what, sqe, errno) in cases {
        submit(&mut ring, sqe);
        let cqes = wait_cqes(&mut ring, Instant::now() + Duration::from_secs(10));
        let [(user_data, res, flags, big)] = cqes[..] else {
            panic!("{what}: one CQE expected, got {cqes:?}");
        };
        assert_eq!(user_data, USER_DATA);
        assert_eq!(flags & CQE_F_MORE, 0, "{what}: unexpected F_MORE");
        assert_eq!(res, -errno, "{what}: {}", errno_name(-res));
        let c = rx
            .complete(OwnerId(1), res, flags, big)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!c.more && !c.needs_rearm(), "{what}");
        match c.event {
            RecvEvent::Error(e) => assert_eq!(e.raw_os_error(), Some(errno), "{what}"),
            other => panic!("{what}: expected RecvEvent::Error, got {other:?}"),
        }
        println!(
            "receive on {what}: {} -> RecvEvent::Error, no F_MORE",
            errno_name(errno)
        );
    }
    assert_balanced(&rx, "after failed receives");
    assert_eq!(rx.stats().deliveries, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_exit_with_inflight

/// The ring exits with a receive armed (no data yet). Afterwards the receive is gone: bytes
/// sent then stay in the socket for an ordinary read.
fn exit_with_a_receive_in_flight() -> Outcome {
    let _ = nodev_guard()?;
    let (mut ring, rx, mut pair) = prep_server(RQ_ENTRIES);
    submit(&mut ring, rx.recv_zc(Fd(pair.server.as_raw_fd())));
    assert!(
        ring.completion().is_empty(),
        "the receive ended before any data"
    );
    // The queue holds a duplicate of the ring fd: both go, so the ring exits.
    assert_eq!(rx.teardown().held_chunks, 0);
    drop(ring);
    std::thread::sleep(Duration::from_secs(1));
    pair.client.write_all(b"after the ring").unwrap();
    pair.server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = [0u8; 14];
    pair.server
        .read_exact(&mut got)
        .expect("the bytes stayed in the socket: the receive died with the ring");
    assert_eq!(&got, b"after the ring");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_zcrx_invalid_clone, test_zcrx_clone

/// An exportable NODEV queue over a shared (memfd) area of 132 pages with 128 refill entries.
fn exportable_queue(ring: &Ring) -> ZcrxIfq {
    let area = Area::builder()
        .chunk_size(page())
        .chunks(AREA_PAGES)
        .shared(true)
        .build()
        .expect("a shared area");
    ZcrxIfq::register(
        ring,
        area,
        ZcrxConfig::no_device()
            .rq_entries(RQ_ENTRIES)
            .exportable(true),
    )
    .expect("an exportable NODEV queue")
}

/// Export without a ring (EINVAL: not a "blind" register opcode), export of an id the ring does
/// not have (ENXIO), import of fd -1 and of a file that is not an export (EBADF), export into
/// read-only memory (EFAULT), import without a ring (EINVAL). These are sent raw: `export()` is a
/// method of a registered queue (its ring, its id, its own writable answer) and `import()` takes
/// the kernel's fd out of a `ZcrxExport`, so the safe API cannot name a missing ring, a wrong id,
/// a foreign fd or read-only memory. What it can refuse itself, a queue not registered as
/// exportable, it refuses before asking the kernel and gives the queue back.
fn invalid_clone() -> Outcome {
    let f = nodev_guard()?;
    if !f.export_import() {
        return Err(skip("zcrx import is not supported (liburing skips it too)"));
    }
    let r1 = zcrx_ring();

    let mut ctrl = zcrx_ctrl {
        zcrx_id: 0,
        op: ZCRX_CTRL_EXPORT,
        ..Default::default()
    };
    // SAFETY: a live, writable zcrx_ctrl without pointers.
    let no_ring =
        unsafe { sys_register(-1, IORING_REGISTER_ZCRX_CTRL, addr_of_mut!(ctrl).cast(), 0) };
    assert_eq!(no_ring, Err(libc::EINVAL), "export with no ring");
    println!("export with no ring: EINVAL");
    assert_eq!(
        raw_export(r1.as_raw_fd(), 0).map(drop),
        Err(libc::ENXIO),
        "export without zcrx"
    );
    println!("export without zcrx: ENXIO");

    expect_errno(
        "import of fd -1",
        raw_import(r1.as_raw_fd(), -1).err().unwrap_or(0),
        libc::EBADF,
        ZcrxRefusal::Other(libc::EBADF),
    );
    expect_errno(
        "import of the ring fd (not an export)",
        raw_import(r1.as_raw_fd(), r1.as_raw_fd())
            .err()
            .unwrap_or(0),
        libc::EBADF,
        ZcrxRefusal::Other(libc::EBADF),
    );

    let rx = ZcrxIfq::register_nodev(&r1, nodev_area(AREA_PAGES), Some(RQ_ENTRIES), None)
        .expect("ZCRX_REG_NODEV");
    let id = rx.zcrx_id();
    let rx = match rx.export() {
        Err(refused) => {
            assert!(
                matches!(refused.error, Error::NotExportable { .. }),
                "{}",
                refused.error
            );
            println!(
                "API export of a queue not registered exportable: {}",
                refused.error
            );
            refused.queue
        }
        Ok(_) => panic!("exported a queue registered without ZcrxConfig::exportable"),
    };
    assert_eq!(rx.zcrx_id(), id);
    assert_eq!(
        rx.raw_ctrl_flush(),
        Ok(()),
        "the refused queue is still registered"
    );

    let ro = Map::new(page(), libc::PROT_READ | libc::PROT_WRITE);
    let ctrl = ro.read_only_copy(zcrx_ctrl {
        zcrx_id: id,
        op: ZCRX_CTRL_EXPORT,
        ..Default::default()
    });
    // SAFETY: `ctrl` points at a zcrx_ctrl in a live read-only mapping: the kernel's
    // copy_to_user of the fd fails with EFAULT, it cannot write there.
    let ro_export =
        unsafe { sys_register(r1.as_raw_fd(), IORING_REGISTER_ZCRX_CTRL, ctrl.cast(), 0) };
    assert_eq!(ro_export, Err(libc::EFAULT), "export with read-only params");
    println!("export with read-only params: EFAULT");

    let boxed = raw_export(r1.as_raw_fd(), id).expect("export");
    assert_eq!(fd_target(boxed.as_raw_fd()), "anon_inode:[zcrx]");
    let mut import = io_uring_zcrx_ifq_reg {
        if_idx: boxed.as_raw_fd() as u32,
        flags: ZCRX_REG_IMPORT,
        ..Default::default()
    };
    // SAFETY: a live, writable registration whose pointers are all 0.
    let blind =
        unsafe { sys_register(-1, IORING_REGISTER_ZCRX_IFQ, addr_of_mut!(import).cast(), 1) };
    // The classifier's InvalidSetup text is about rings and NICs; the safe API always has a ring.
    expect_errno(
        "import without a ring",
        blind.err().unwrap_or(0),
        libc::EINVAL,
        ZcrxRefusal::InvalidSetup,
    );
    drop(boxed);
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Export from one ring, import into another, through the API (liburing stops at the import).
/// Beyond liburing: the exporting ring goes away, and twice the area goes through the imported
/// queue on the importing ring byte-exact, every buffer back through its own refill entry.
fn clone_and_receive_through_the_import() -> Outcome {
    let f = nodev_guard()?;
    if !f.export_import() {
        return Err(skip("zcrx import is not supported (liburing skips it too)"));
    }
    let ring_exp = zcrx_ring();
    let mut ring_imp = zcrx_ring();
    let export = exportable_queue(&ring_exp)
        .export()
        .expect("export of a fresh exportable queue");
    assert!(export.is_no_device());
    assert_eq!(export.chunks(), AREA_PAGES as u32);
    let mut imported = ZcrxIfq::import(&ring_imp, export, None).expect("import");
    assert_eq!(imported.zcrx_id(), 0, "the importing ring's first ifq");
    assert_eq!(imported.rq_entries(), RQ_ENTRIES);
    println!("export + import: 0 (imported as id {})", imported.zcrx_id());
    drop(ring_exp);

    twice_the_area(&mut ring_imp, &mut imported, EAGER, "through the import");
    assert_level(&imported, "through the import");
    assert_balanced(&imported, "through the import");
    assert_eq!(imported.teardown().held_chunks, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_rq_flush

/// A flush naming an id the ring does not have: ENXIO; the queue's own: 0.
fn flush_of_an_unknown_id() -> Outcome {
    let f = nodev_guard()?;
    let (_ring, rx, _pair) = prep_server(RQ_ENTRIES);
    assert_eq!(
        rx.raw_ctrl_flush_id(rx.zcrx_id() + 1),
        Err(libc::ENXIO),
        "flush of a nonexistent zcrx"
    );
    println!("flush of an unknown id: ENXIO");
    if f.flush_rq() {
        assert_eq!(rx.raw_ctrl_flush(), Ok(()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_invalid_rqes, test_invalid_rq_pointers

/// Writes `entries` one at a time, each followed by a flush (liburing's `flush_invalid`), and
/// asserts every flush succeeds.
///
/// `raw_refill` writes from the queue's own tail without telling the queue, so step `i`
/// rewrites the entries before it (the kernel has passed them) and publishes `i + 1`: the
/// kernel reads just the new one.
fn flush_invalid(rx: &mut ZcrxIfq, entries: &[(u64, u32, u32)], what: &str) {
    for i in 0..entries.len() {
        // SAFETY: no RxBuf of this queue is alive (nothing was received), so no entry can name
        // a live handle's buffer.
        unsafe { rx.raw_refill(&entries[..=i], None, None) };
        assert_eq!(rx.raw_ctrl_flush(), Ok(()), "{what}: flush after entry {i}");
    }
    println!("{what}: {} flushes, each 0", entries.len());
}

/// After `n` raw refill entries the kernel's head is `n` past the queue's producer: the first
/// `n` entries the queue writes land in slots the kernel has passed. Holding the first `n`
/// buffers and returning them in one flush publishes them together and brings the two indices
/// level again (those buffers stay the kernel's until the teardown scrub); from then on twice
/// the area goes through the same queue byte-exact, every buffer back through its own entry.
///
/// Without the hold the bytes still arrive, which is why `assert_level` is needed: the kernel
/// takes a tail behind its head for a full ring and re-reads all 128 slots at every flush, stale
/// entries included, while the queue never sees a head it can believe, fills its ring (measured
/// on 7.3.4: `rq_full` 136, 128 of 264 chunks returned) and the transfer lives on the kernel's
/// rescans of old entries.
fn same_queue_still_works(ring: &mut Ring, rx: &mut ZcrxIfq, n: usize, what: &str) {
    twice_the_area(ring, rx, Returns { hold: n, every: 1 }, what);
    assert_level(rx, what);
    assert_balanced(rx, what);
}

/// The queue's producer and the kernel's consumer agree: every delivered buffer went back
/// through a refill entry of its own (one page per chunk, one reference per buffer without a
/// device), none waited for room, and the kernel refused no flush.
fn assert_level(rx: &ZcrxIfq, what: &str) {
    let stats = rx.stats();
    assert!(stats.deliveries > 0, "{what}: {stats:?}");
    assert_eq!(stats.returned_chunks, stats.deliveries, "{what}: {stats:?}");
    assert_eq!(stats.rqes, stats.deliveries, "{what}: {stats:?}");
    assert_eq!(stats.rq_full, 0, "{what}: {stats:?}");
    assert_eq!(rx.pending_chunks(), 0, "{what}: {stats:?}");
    assert_eq!(stats.ctrl_flush_errors, 0, "{what}: {stats:?}");
}

/// Sixteen entries naming buffer 0, which the application holds no reference on: the kernel
/// skips each (no user reference to drop), every flush returns 0, and the queue works after.
fn refill_entries_naming_an_unheld_buffer() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    let token = rx.area_token();
    flush_invalid(
        &mut rx,
        &[(token, 1, 0); 16],
        "16 entries for unheld buffer 0",
    );
    assert_balanced(&rx, "after the entries");
    assert_eq!(rx.stats().rqes, 0, "the queue itself wrote nothing");
    same_queue_still_works(&mut ring, &mut rx, 16, "after 16 unheld returns");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// An offset past the area, one with the 48 low bits all set, a wrong area id, padding set:
/// the kernel stops its flush at each bad entry (consumed), every flush returns 0, and the
/// queue works after.
fn refill_entries_out_of_bounds() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    let token = rx.area_token();
    let hostile = [
        (token + area_len() as u64, 1, 0),
        ((1u64 << IORING_ZCRX_AREA_SHIFT) - 1, 1, 0),
        (token + (1u64 << IORING_ZCRX_AREA_SHIFT), 1, 0),
        (token, 1, 1),
    ];
    flush_invalid(&mut rx, &hostile, "out-of-bounds entries");
    assert_balanced(&rx, "after the entries");
    same_queue_still_works(&mut ring, &mut rx, hostile.len(), "after bad entries");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Garbage indices: tail 0 with head 1. The kernel keeps its own head and stores it back over
/// the garbage, so the indices stay level and the same queue works after.
fn refill_tail_behind_head() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    // SAFETY: no entries are written; nothing was received, so no handle lives.
    unsafe { rx.raw_refill(&[], Some(0), Some(1)) };
    assert_eq!(rx.raw_ctrl_flush(), Ok(()), "flush with tail 0, head 1");
    println!("tail 0, head 1: flush 0");
    assert_balanced(&rx, "after tail 0, head 1");
    twice_the_area(&mut ring, &mut rx, EAGER, "after tail 0, head 1");
    assert_level(&rx, "after tail 0, head 1");
    assert_balanced(&rx, "after the transfer");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Garbage indices: tail at twice the ring size. The kernel reads at most one ring's worth per
/// flush (zeroed slots: buffer 0, unheld, skipped), every flush returns 0. The queue's producer
/// is now two rings behind the kernel, so a fresh queue on the same ring shows the ring
/// still works.
fn refill_tail_past_the_ring() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES);
    // SAFETY: no entries are written; nothing was received, so no handle lives.
    unsafe { rx.raw_refill(&[], Some(2 * rx.rq_entries()), None) };
    assert_eq!(rx.raw_ctrl_flush(), Ok(()), "flush with tail 2 * entries");
    assert_eq!(rx.raw_ctrl_flush(), Ok(()), "the second ring's worth");
    println!("tail 2 * entries: flush 0, twice");
    assert_balanced(&rx, "after tail 2 * entries");
    assert_eq!(rx.teardown().held_chunks, 0);

    let mut fresh = ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(RQ_ENTRIES), None)
        .expect("a second queue on the same ring");
    assert_ne!(fresh.zcrx_id(), 0, "the first id is still the old queue's");
    twice_the_area(
        &mut ring,
        &mut fresh,
        EAGER,
        "a fresh queue after tail 2 * entries",
    );
    assert_eq!(fresh.teardown().held_chunks, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_recv

/// One page without returning it, then twice the area without returns on the same queue: the
/// copy path runs out of free buffers and the receive ends with -ENOMEM, `RecvEvent::NoBuffers`,
/// counted in `ZcrxStats::no_buffers`, with every chunk of the area held byte-exact.
fn recv_without_returns_runs_dry() -> Outcome {
    let _ = nodev_guard()?;
    let (mut ring, mut rx, mut pair) = prep_server(RQ_ENTRIES);
    let id = rx.zcrx_id();
    let one = transfer_bytes(&mut ring, &mut rx, id, &mut pair, page(), HOLD_ALL);
    assert_eq!(one.end, End::Limit, "one page");
    let all = transfer_bytes(&mut ring, &mut rx, id, &mut pair, 2 * area_len(), HOLD_ALL);
    assert_eq!(
        all.end,
        End::NoBuffers,
        "twice the area without returns: {} bytes",
        all.received
    );
    assert!(all.received > 0 && all.received < 2 * area_len());
    let stats = rx.stats();
    assert_eq!(stats.no_buffers, 1, "{stats:?}");
    let s = rx.snapshot();
    assert_eq!(
        s.counts.user, AREA_PAGES as u32,
        "-ENOMEM comes when every buffer is out: {s:?}"
    );
    assert_eq!(s.held_bytes, (one.received + all.received) as u64, "{s:?}");
    println!(
        "twice the area without returns: -ENOMEM after {} bytes, all {AREA_PAGES} chunks held",
        one.received + all.received
    );
    drop(one.held);
    drop(all.held);
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 0, "{report:?}");
    Ok(())
}

/// One page, then twice the area, every buffer returned with a flush: byte-exact.
fn recv_with_returns() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    let (mut ring, mut rx, mut pair) = prep_server(RQ_ENTRIES);
    let id = rx.zcrx_id();
    let one = transfer_bytes(&mut ring, &mut rx, id, &mut pair, page(), EAGER);
    assert_eq!(one.end, End::Limit, "one page with returns");
    let two = transfer_bytes(&mut ring, &mut rx, id, &mut pair, 2 * area_len(), EAGER);
    assert_eq!(
        two.end,
        End::Limit,
        "twice the area: {} bytes",
        two.received
    );
    let stats = rx.stats();
    assert_eq!(stats.no_buffers, 0, "{stats:?}");
    assert_eq!(stats.ctrl_flush_errors, 0, "{stats:?}");
    assert!(stats.returned_chunks as usize >= AREA_PAGES, "{stats:?}");
    assert_level(&rx, "one page and twice the area with returns");
    assert_balanced(&rx, "after the transfers");
    println!("one page and twice the area with returns: byte-exact");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Lazy returns through a 16-entry refill ring (the area is larger than 17 pages): buffers
/// dropped as they come, flushed only every 16, twice the area byte-exact.
fn recv_lazy_returns_small_refill_ring() -> Outcome {
    let f = nodev_guard()?;
    if !f.flush_rq() {
        return Err(skip("no ZCRX_CTRL_FLUSH_RQ"));
    }
    assert!(AREA_PAGES > RQ_ENTRIES_SMALL as usize + 1);
    let (mut ring, mut rx, _pair) = prep_server(RQ_ENTRIES_SMALL);
    let lazy = Returns {
        hold: 0,
        every: RQ_ENTRIES_SMALL as usize,
    };
    twice_the_area(&mut ring, &mut rx, lazy, "lazy returns, 16 refill entries");
    assert_eq!(rx.stats().no_buffers, 0);
    // The last few buffers were dropped after the last flush: the queue collects dropped handles
    // only when it flushes, and a snapshot counts their chunks as held until then.
    let s = rx.snapshot();
    assert!(s.counts.user < RQ_ENTRIES_SMALL, "{s:?}");
    rx.flush();
    assert_level(&rx, "lazy returns");
    assert_balanced(&rx, "after lazy returns and a last flush");
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test_abnormal_exit

/// The ring exits with a receive that has data waiting: queued as task work (direct) or running
/// in io-wq (`IOSQE_ASYNC`), with or without an export pinning the ifq. The kernel must survive
/// it; an export must still import afterwards and receive a page byte-exact on another ring (the
/// ifq outlives the ring that died under it); and the kernel serves a fresh queue after.
fn abnormal_exit(iowq: bool, pin: bool) -> Outcome {
    let f = nodev_guard()?;
    if pin && !f.export_import() {
        return Err(skip("zcrx export is not supported (liburing skips it too)"));
    }
    let mut ring = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(16)
        .unwrap();
    let rx = if pin {
        exportable_queue(&ring)
    } else {
        ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(RQ_ENTRIES), None)
            .expect("ZCRX_REG_NODEV")
    };
    let mut pair = tcp_pair();
    let sqe = rx.recv_zc(Fd(pair.server.as_raw_fd()));
    // The export takes the queue over: from here the export fd, not this ZcrxIfq, holds it.
    let (rx, export) = if pin {
        (None, Some(rx.export().expect("export")))
    } else {
        (Some(rx), None)
    };
    if !iowq {
        submit(&mut ring, sqe);
        // Wakes the armed receive: its task work waits for the next enter, which never comes.
        pair.client.write_all(&[0; 16]).unwrap();
    } else {
        pair.client.write_all(&[0; 16]).unwrap();
        submit(&mut ring, sqe.flags(squeue::Flags::ASYNC));
    }
    // Nothing was completed, so nothing is held: the queue and the ring both go now.
    if let Some(rx) = rx {
        assert_eq!(rx.teardown().held_chunks, 0);
    }
    drop(ring);
    std::thread::sleep(Duration::from_micros(300));
    drop(pair);
    if let Some(export) = export {
        let mut other = zcrx_ring();
        let mut imported = ZcrxIfq::import(&other, export, None)
            .expect("import after the exporting ring died with a receive in flight");
        let mut pair = tcp_pair();
        let id = imported.zcrx_id();
        let out = transfer_bytes(&mut other, &mut imported, id, &mut pair, page(), EAGER);
        assert_eq!(out.end, End::Limit, "a page through the surviving ifq");
        println!("abnormal exit (io-wq {iowq}) with an export: the ifq imports and receives");
        assert_eq!(imported.teardown().held_chunks, 0);
    }
    let (mut ring, mut rx, mut pair) = prep_server(RQ_ENTRIES);
    let id = rx.zcrx_id();
    let out = transfer_bytes(&mut ring, &mut rx, id, &mut pair, page(), EAGER);
    assert_eq!(out.end, End::Limit, "a fresh queue after the abnormal exit");
    Ok(())
}

fn abnormal_exit_direct() -> Outcome {
    abnormal_exit(false, false)
}

fn abnormal_exit_iowq() -> Outcome {
    abnormal_exit(true, false)
}

fn abnormal_exit_direct_exported() -> Outcome {
    abnormal_exit(false, true)
}

fn abnormal_exit_iowq_exported() -> Outcome {
    abnormal_exit(true, true)
}

test_kit::main!(
    register_basic,
    refill_region_refused,
    rq_entries_rounding,
    rq_entries_limits,
    area_bounds,
    area_read_only,
    rx_buf_len_refused,
    rx_buf_len_2_gib_without_a_device,
    read_only_params,
    invalid_recv,
    exit_with_a_receive_in_flight,
    invalid_clone,
    clone_and_receive_through_the_import,
    flush_of_an_unknown_id,
    refill_entries_naming_an_unheld_buffer,
    refill_entries_out_of_bounds,
    refill_tail_behind_head,
    refill_tail_past_the_ring,
    recv_without_returns_runs_dry,
    recv_with_returns,
    recv_lazy_returns_small_refill_ring,
    abnormal_exit_direct,
    abnormal_exit_iowq,
    abnormal_exit_direct_exported,
    abnormal_exit_iowq_exported,
);
