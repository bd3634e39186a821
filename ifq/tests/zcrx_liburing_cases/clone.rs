//! liburing's export and import cases (`test_zcrx_invalid_clone`, `test_zcrx_clone`) and
//! `test_rq_flush`.

use super::*;

// test_zcrx_invalid_clone, test_zcrx_clone

/// An exportable NODEV queue over a shared (memfd) area of 132 pages with 128 refill entries.
pub(crate) fn exportable_queue(ring: &Ring) -> ZcrxIfq {
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
pub(crate) fn invalid_clone() -> Outcome {
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
pub(crate) fn clone_and_receive_through_the_import() -> Outcome {
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
pub(crate) fn flush_of_an_unknown_id() -> Outcome {
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
