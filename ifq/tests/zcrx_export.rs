//! Exporting a zcrx queue to another ring (Linux 6.19+; without a device, 7.1+): a process
//! registers and exports, the fds travel over a Unix socket (`SCM_RIGHTS`) to another process,
//! which imports the queue and receives through it. Also one queue moved between two rings of
//! one process.
//!
//! The kernel (7.3) checks `CAP_NET_ADMIN` for an import as for any registration
//! (`io_register_zcrx` tests `capable()` before the import flag), so an importer running as
//! `nobody` without capabilities is refused with `EPERM`: the test shows that too, and that
//! a thread that registered can drop every privilege and go on receiving.
//!
//! On kernels without `ZCRX_REG_NODEV` (this host's 6.18) libtest's summary counts them as
//! ignored, with the reason; `.ci/run` runs them in the Linux 7.x guest.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use test_kit::{skip, Outcome};
use zcrx_ifq::RxPool;

use rustix::thread::{capabilities, CapabilitySet};
use zcrx_ifq::io_uring::types::Fd;
use zcrx_ifq::io_uring::{cqueue, squeue, IoUring};
use zcrx_ifq::probe::KernelVersion;
use zcrx_ifq::zcrx::{ZcrxConfig, ZcrxExport, ZcrxIfq};
use zcrx_ifq::{Area, Error, OwnerId, RecvEvent};

mod common;
use common::zcrx::{transfer, zcrx_ring};

/// The environment variable that makes `import_child_process` the importing child.
const CHILD_SOCKET: &str = "ZCRX_EXPORT_TEST_SOCKET";
/// Set (to anything) when the child runs as `nobody` without capabilities.
const CHILD_UNPRIVILEGED: &str = "ZCRX_EXPORT_TEST_UNPRIVILEGED";

/// Why this machine cannot run the test, if it cannot.
fn unable() -> Option<String> {
    let why = unable_here();
    // As nodev_guard: in the kernel guest, not being able to run is a failure.
    if let Some(why) = &why {
        assert!(
            std::env::var_os("ZCRX_NODEV_REQUIRED").is_none(),
            "ZCRX_NODEV_REQUIRED is set and {why}"
        );
    }
    why
}

fn unable_here() -> Option<String> {
    let kernel = KernelVersion::current().expect("uname");
    if !kernel.at_least(7, 1) {
        return Some(format!(
            "{kernel} has no ZCRX_REG_NODEV (7.1+); run it in the kernel guest"
        ));
    }
    let caps = capabilities(None).expect("capget");
    if !caps.effective.contains(CapabilitySet::NET_ADMIN) {
        return Some("needs CAP_NET_ADMIN to register the queue that is exported".into());
    }
    None
}

/// A NODEV queue over a shared area of `chunks` pages, exportable.
fn exportable_queue(ring: &IoUring<squeue::Entry, cqueue::Entry32>, chunks: usize) -> ZcrxIfq {
    let area = Area::builder()
        .chunk_size(4096)
        .chunks(chunks)
        .shared(true)
        .build()
        .expect("a shared area");
    ZcrxIfq::register(ring, area, ZcrxConfig::no_device().exportable(true))
        .expect("an exportable NODEV queue")
}

/// Starts this test binary as the importing child, passing it `theirs`; as `nobody` without
/// capabilities if `unprivileged`. Returns its output once `export` was sent and it ended.
fn run_importer(export: &ZcrxExport, unprivileged: bool) -> (bool, String) {
    run_child(unprivileged, |sock| {
        export.send(sock).expect("sending the export")
    })
}

/// Starts this test binary as the child (`import_child_process`) with one end of a Unix socket;
/// `serve` talks to it over the other. Returns whether it succeeded, and its output.
fn run_child(unprivileged: bool, serve: impl FnOnce(&OwnedFd)) -> (bool, String) {
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::empty(), // the child inherits `theirs`
        None,
    )
    .unwrap();
    rustix::io::fcntl_setfd(&ours, rustix::io::FdFlags::CLOEXEC).unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "import_child_process",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_SOCKET, theirs.as_raw_fd().to_string())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    if unprivileged {
        cmd.env(CHILD_UNPRIVILEGED, "1").uid(65534).gid(65534);
    }
    let child = cmd.spawn().expect("the importing child");
    drop(theirs);
    serve(&ours);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "child ({}): {text}",
        if unprivileged { "nobody" } else { "root" }
    );
    (out.status.success(), text)
}

/// Registers an exportable NODEV queue, receives through it, exports it, drops its own ring, and
/// sends the export to two children: one as `nobody` without capabilities, whose import the
/// kernel refuses (EPERM, typed as `NotPermitted`), then one with them, which imports it and
/// receives 4 MiB through its 64 chunks.
fn export_to_another_process() -> Outcome {
    if std::env::var_os(CHILD_SOCKET).is_some() {
        return Ok(()); // this process is a child started for `import_child_process`
    }
    if let Some(why) = unable() {
        return Err(skip(why));
    }
    let mut ring = zcrx_ring();
    let mut rx = exportable_queue(&ring, 64);
    // Used here first: the importer takes over a queue with history.
    assert_eq!(transfer(&mut ring, &mut rx, 1 << 20), 1 << 20);
    let export = rx.export().map_err(|r| r.error).expect("export");
    // The exporting ring can go: the export fd holds the queue.
    drop(ring);

    let (ok, text) = run_importer(&export, true);
    assert!(ok, "the unprivileged importer failed: {text}");
    assert!(
        text.contains("import without CAP_NET_ADMIN refused (EPERM)"),
        "{text}"
    );
    let (ok, text) = run_importer(&export, false);
    assert!(ok, "the importer failed: {text}");
    assert!(
        text.contains("imported and received 4194304 bytes"),
        "{text}"
    );
    Ok(())
}

/// The importing side, run as a child by `export_to_another_process` (on its own it only says
/// so).
fn import_child_process() -> Outcome {
    let Some(fd) = std::env::var_os(CHILD_SOCKET) else {
        return Err(skip("runs as the child of export_to_another_process"));
    };
    let fd: i32 = fd.to_str().unwrap().parse().unwrap();
    // SAFETY: the parent passed this inherited socket's number; nothing else in this process
    // owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let export = ZcrxExport::recv(&sock).expect("receiving the export");
    assert!(export.is_no_device());
    assert_eq!((export.chunk_size(), export.chunks()), (4096, 64));
    let mut ring = zcrx_ring();
    if std::env::var_os(CHILD_UNPRIVILEGED).is_some() {
        assert!(!rustix::process::geteuid().is_root(), "runs as nobody");
        let caps = capabilities(None).unwrap();
        assert!(
            caps.effective.is_empty() && caps.permitted.is_empty(),
            "{caps:?}"
        );
        match ZcrxIfq::import(&ring, export, None) {
            Err(e @ Error::ZcrxRefused { .. }) => {
                assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
                println!("import without CAP_NET_ADMIN refused (EPERM): {e}");
            }
            other => panic!("expected EPERM, got {other:?}"),
        }
        return Ok(());
    }
    let mut rx = ZcrxIfq::import(&ring, export, None).expect("import");
    let got = transfer(&mut ring, &mut rx, 4 << 20);
    println!("imported and received {got} bytes; {:?}", rx.stats());
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// The privilege split 7.3 allows: only the registration needs `CAP_NET_ADMIN` (an import
/// needs it too, and an io_uring fd cannot travel over `SCM_RIGHTS`). A thread registers as
/// root, then drops every capability and becomes `nobody` (credentials are per thread in the
/// kernel), proves it can no longer register, and receives 4 MiB through the queue's 64 chunks.
fn receive_after_dropping_privileges() -> Outcome {
    if std::env::var_os(CHILD_SOCKET).is_some() {
        return Ok(());
    }
    if let Some(why) = unable() {
        return Err(skip(why));
    }
    std::thread::spawn(|| {
        let mut ring = zcrx_ring();
        let area = Area::builder().chunk_size(4096).chunks(64).build().unwrap();
        let mut rx = ZcrxIfq::register(&ring, area, ZcrxConfig::no_device()).unwrap();
        // Drop the uid first (with the capabilities still there), then every capability.
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::thread::set_thread_res_uid(nobody, nobody, nobody).expect("setresuid");
        rustix::thread::set_capabilities(
            None,
            rustix::thread::CapabilitySets {
                effective: CapabilitySet::empty(),
                permitted: CapabilitySet::empty(),
                inheritable: CapabilitySet::empty(),
            },
        )
        .expect("capset");
        let caps = capabilities(None).unwrap();
        assert!(
            caps.effective.is_empty() && caps.permitted.is_empty(),
            "{caps:?}"
        );
        let other = zcrx_ring();
        let area = Area::builder().chunk_size(4096).chunks(16).build().unwrap();
        match ZcrxIfq::register(&other, area, ZcrxConfig::no_device()) {
            Err(Error::ZcrxRefused { refusal, .. }) => {
                assert_eq!(refusal, zcrx_ifq::error::ZcrxRefusal::NotPermitted)
            }
            other => panic!("expected EPERM after dropping privileges, got {other:?}"),
        }
        assert_eq!(transfer(&mut ring, &mut rx, 4 << 20), 4 << 20);
        assert_eq!(rx.teardown().held_chunks, 0);
    })
    .join()
    .expect("the unprivileged receiver");
    Ok(())
}

/// One queue moved between two rings of one process: registered and used on one thread's ring,
/// exported, imported on another thread's ring, used there.
fn move_between_rings_of_one_process() -> Outcome {
    if std::env::var_os(CHILD_SOCKET).is_some() {
        return Ok(());
    }
    if let Some(why) = unable() {
        return Err(skip(why));
    }
    let export = std::thread::spawn(|| {
        let mut ring = zcrx_ring();
        let mut rx = exportable_queue(&ring, 32);
        assert_eq!(transfer(&mut ring, &mut rx, 512 << 10), 512 << 10);
        rx.export().map_err(|r| r.error).expect("export")
        // `ring` drops here: the export holds the queue.
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        let mut ring = zcrx_ring();
        let mut rx = ZcrxIfq::import(&ring, export, None).expect("import");
        assert_eq!(rx.zcrx_id(), 0, "the first queue of the new ring");
        assert_eq!(transfer(&mut ring, &mut rx, 2 << 20), 2 << 20);
        assert_eq!(rx.teardown().held_chunks, 0);
    })
    .join()
    .unwrap();
    Ok(())
}

/// Export refusals: a queue not made exportable, and one whose buffers the application holds.
fn export_refusals() -> Outcome {
    if std::env::var_os(CHILD_SOCKET).is_some() {
        return Ok(());
    }
    if let Some(why) = unable() {
        return Err(skip(why));
    }
    let ring = zcrx_ring();
    let area = Area::builder().chunk_size(4096).chunks(16).build().unwrap();
    match ZcrxIfq::register(&ring, area, ZcrxConfig::no_device().exportable(true)) {
        Err(e @ Error::NotExportable { .. }) => assert!(e.to_string().contains("shared"), "{e}"),
        other => panic!("expected NotExportable for a private area, got {other:?}"),
    }
    let area = Area::builder().chunk_size(4096).chunks(16).build().unwrap();
    let rx = ZcrxIfq::register(&ring, area, ZcrxConfig::no_device()).unwrap();
    match rx.export() {
        Err(r) => {
            assert!(matches!(r.error, Error::NotExportable { .. }), "{r}");
            assert!(r.to_string().contains("exportable"), "{r}");
        }
        Ok(e) => panic!("exported a queue not made exportable: {e:?}"),
    }

    // Holding a buffer: refused, and nothing was exported.
    let mut ring = zcrx_ring();
    let mut rx = exportable_queue(&ring, 16);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(b"held").unwrap();
    let sqe = rx.recv_zc(Fd(server.as_raw_fd())).user_data(1);
    // SAFETY: `server` outlives the request (the ring is dropped first).
    unsafe { ring.submission().push(&sqe).unwrap() };
    ring.submit_and_wait(1).unwrap();
    let cqe = ring.completion().next().unwrap();
    let c = rx
        .complete(OwnerId(1), cqe.result(), cqe.flags(), *cqe.big_cqe())
        .unwrap();
    let RecvEvent::Data(held) = c.event else {
        panic!("expected data, got {:?}", c.event)
    };
    assert_eq!(&held[..], b"held");
    let mut rx = match rx.export() {
        Err(r) => {
            assert!(matches!(r.error, Error::NotExportable { .. }), "{r}");
            assert!(r.to_string().contains("holds"), "{r}");
            *r.queue
        }
        Ok(e) => panic!("exported while a buffer is held: {e:?}"),
    };
    assert_eq!(&held[..], b"held", "the held buffer is intact");
    // The queue came back usable: once the buffer is dropped it exports.
    drop(held);
    rx.flush();
    rx.export()
        .map_err(|r| r.error)
        .expect("export once nothing is held");
    Ok(())
}

test_kit::main!(
    export_to_another_process,
    import_child_process,
    receive_after_dropping_privileges,
    move_between_rings_of_one_process,
    export_refusals,
);
