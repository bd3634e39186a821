//! Teardown of a buffer ring while another thread holds handles. Its own test binary (its own
//! process) so that no concurrent test can map memory where the area was.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use zcrx_ifq::RxPool;

use common::{is_mapped, Pattern};
use zcrx_ifq::bufring::{BufRing, BufRingConfig};
use zcrx_ifq::io_uring::{types::Fd, IoUring};
use zcrx_ifq::{Area, OwnerId, RecvEvent, RxBuf};

const SEED: u64 = 0x7ea2_d0b1;

fn sender(total: usize) -> (TcpStream, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tx = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut buf = vec![0u8; total];
        Pattern::new(SEED).fill(&mut buf);
        let _ = s.write_all(&buf);
    });
    let (rx, _) = listener.accept().unwrap();
    (rx, tx)
}

/// Tearing down while another thread holds handles: no crash, the held chunks are reported,
/// their bytes stay readable and intact, and the area is unmapped once the last one drops.
#[test]
fn teardown_with_handles_on_another_thread() {
    let total = 4 << 20;
    let (sock, tx) = sender(total);
    let mut ring = IoUring::new(64).unwrap();
    let area = Area::builder().chunk_size(4096).chunks(64).build().unwrap();
    let mut rx = BufRing::register(&ring, area, BufRingConfig::default()).unwrap();
    let sqe = rx.recv_multishot(Fd(sock.as_raw_fd())).user_data(1);
    // SAFETY: the socket outlives the request.
    unsafe { ring.submission().push(&sqe).unwrap() };
    let mut got: Vec<RxBuf> = vec![];
    let mut pattern = Pattern::new(SEED);
    while got.len() < 8 {
        ring.submit_and_wait(1).unwrap();
        let cqes: Vec<_> = ring.completion().map(|c| (c.result(), c.flags())).collect();
        for (res, flags) in cqes {
            if let RecvEvent::Data(buf) = rx.complete(OwnerId(3), res, flags).unwrap().event {
                assert_eq!(pattern.check(&buf), None);
                got.push(buf);
            }
        }
    }
    let expected: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
    let base = got[0].as_ptr() as u64 - got[0].area_offset();
    let held_chunks = got
        .iter()
        .map(|b| b.chunk())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let held_bytes: usize = got.iter().map(|b| b.len()).sum();

    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        // Read continuously while the owner tears down, then again after.
        for _ in 0..1000 {
            for (b, e) in got.iter().zip(&expected) {
                assert_eq!(&b[..], &e[..]);
            }
        }
        go_rx.recv().unwrap();
        for (b, e) in got.iter().zip(&expected) {
            assert_eq!(&b[..], &e[..], "bytes intact after teardown");
        }
        drop(got);
    });
    let report = rx.teardown();
    assert!(report.clean);
    assert_eq!(report.held_chunks as usize, held_chunks);
    assert_eq!(report.held_bytes as usize, held_bytes);
    assert_eq!(report.owners.len(), 1);
    assert_eq!(report.owners[0].0, OwnerId(3));
    // Keep the ring busy: the armed receive now finds no buffer group.
    drop(sock);
    let _ = ring.submit();
    assert!(is_mapped(base), "area stays mapped while handles live");
    go_tx.send(()).unwrap();
    reader.join().unwrap();
    assert!(
        !is_mapped(base),
        "area unmapped once the last handle dropped"
    );
    let _ = tx.join();
}
