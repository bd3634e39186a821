//! Rings, areas and TCP pairs for the cases, and the raw registrations the safe API cannot
//! express.

use super::*;

// ---------------------------------------------------------------------------------------------
// Rings (the guards and the ring zcrx needs are in tests/common/zcrx.rs).

/// liburing's `try_register_zcrx` ring (8 entries).
pub(crate) fn raw_ring() -> Ring {
    IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .expect("a SINGLE_ISSUER | DEFER_TASKRUN ring with 32-byte CQEs")
}

pub(crate) fn nodev_area(pages: usize) -> Area {
    Area::builder()
        .chunk_size(page())
        .chunks(pages)
        .build()
        .expect("an area")
}

/// liburing's `prep_server`: a NODEV queue over 132 pages with 128 refill entries on a new
/// ring, and a connected TCP pair.
pub(crate) fn prep_server(rq_entries: u32) -> (Ring, ZcrxIfq, Pair) {
    let ring = zcrx_ring();
    let rx = ZcrxIfq::register_nodev(&ring, nodev_area(AREA_PAGES), Some(rq_entries), None)
        .expect("ZCRX_REG_NODEV on 7.1+");
    assert_eq!(rx.rq_entries(), rq_entries);
    (ring, rx, tcp_pair())
}

pub(crate) struct Pair {
    pub(crate) client: TcpStream,
    pub(crate) server: TcpStream,
}

/// liburing's `t_create_socket_pair(fds, true)`: a connected loopback TCP pair.
pub(crate) fn tcp_pair() -> Pair {
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
pub(crate) unsafe fn sys_register(
    fd: RawFd,
    opcode: u32,
    arg: *mut c_void,
    nr_args: u32,
) -> Result<i64, i32> {
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
pub(crate) struct Map {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

impl Map {
    pub(crate) fn anon(len: usize, prot: libc::c_int, flags: libc::c_int) -> Option<Self> {
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

    pub(crate) fn new(len: usize, prot: libc::c_int) -> Self {
        Self::anon(len, prot, 0).expect("mmap")
    }

    pub(crate) fn protect(&self, offset: usize, len: usize, prot: libc::c_int) {
        assert!(offset + len <= self.len);
        // SAFETY: the range lies inside this mapping, which no Rust reference points into.
        let r = unsafe { libc::mprotect(self.ptr.add(offset).cast(), len, prot) };
        assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Puts `value` at the start of the mapping and makes the mapping read-only (liburing's
    /// `write_ro_params`).
    pub(crate) fn read_only_copy<T: Copy>(&self, value: T) -> *mut T {
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
pub(crate) fn rq_size(f: &ZcrxFeatures, entries: u32) -> usize {
    let align = |v: usize, a: usize| v.div_ceil(a) * a;
    let rqes = align(f.rq_hdr_size as usize, f.rq_hdr_alignment as usize);
    align(rqes + entries as usize * RQE_SIZE, page())
}

/// liburing's `setup()`: a refill region for 128 entries, and the 132-page area with an
/// inaccessible page on each side, so that "below" and "above" the area are known to be
/// unmappable. (liburing's own `setup()` maps the guarded area and then overwrites
/// `def_area_mem` with a second, unguarded mapping, so its below/above cases probe whatever
/// happens to neighbour that one.)
pub(crate) struct Mem {
    pub(crate) rq: Map,
    pub(crate) rq_size: usize,
    pub(crate) outer: Map,
}

impl Mem {
    pub(crate) fn new(f: &ZcrxFeatures) -> Self {
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

    pub(crate) fn area(&self) -> u64 {
        self.outer.addr() + page() as u64
    }
}

/// liburing's `struct zcrx_reg`: the area, the region and the registration that points at both.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(crate) struct RawReg {
    pub(crate) area: io_uring_zcrx_area_reg,
    pub(crate) region: io_uring_region_desc,
    pub(crate) ifq: io_uring_zcrx_ifq_reg,
}

/// liburing's `default_reg`: NODEV, 128 entries, the whole guarded area. Boxed, so that the
/// embedded pointers stay right.
pub(crate) fn default_reg(mem: &Mem) -> Box<RawReg> {
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
pub(crate) fn register_raw(ring: &Ring, reg: *mut io_uring_zcrx_ifq_reg) -> i32 {
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
pub(crate) fn try_register(reg: &mut RawReg) -> i32 {
    let ring = raw_ring();
    register_raw(&ring, addr_of_mut!(reg.ifq))
}

/// Asserts a raw answer and shows what `ifq`'s classifier makes of it.
pub(crate) fn expect_errno(what: &str, got: i32, errno: i32, refusal: ZcrxRefusal) {
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
pub(crate) fn raw_export(ring_fd: RawFd, zcrx_id: u32) -> Result<OwnedFd, i32> {
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
pub(crate) fn raw_import(ring_fd: RawFd, box_fd: RawFd) -> Result<io_uring_zcrx_ifq_reg, i32> {
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

pub(crate) fn fd_target(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}
