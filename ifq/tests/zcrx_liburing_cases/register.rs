//! liburing's registration cases: `test_register_basic`, `test_rq`, `test_area`,
//! `test_area_ro`, `test_invalid_rx_page`, `test_ro_params`.

use super::*;

// ---------------------------------------------------------------------------------------------
// test_register_basic

/// The default registration succeeds, raw and through the API, and the kernel writes back what
/// it chose; with 2 MiB huge pages too, where some are reserved.
pub(crate) fn register_basic() -> Outcome {
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
pub(crate) fn refill_region_refused() -> Outcome {
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
pub(crate) fn rq_entries_rounding() -> Outcome {
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
pub(crate) fn rq_entries_limits() -> Outcome {
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
pub(crate) type Change = fn(&mut RawReg, u64);

/// Area bounds. An `Area` is always a whole number of pages mapped at a page boundary and
/// readable and writable, and `ifq` passes exactly that mapping: none of these can come from the
/// safe API.
pub(crate) fn area_bounds() -> Outcome {
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
pub(crate) fn area_read_only() -> Outcome {
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
pub(crate) fn rx_buf_len_refused() -> Outcome {
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
pub(crate) fn rx_buf_len_2_gib_without_a_device() -> Outcome {
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
pub(crate) fn read_only_params() -> Outcome {
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
