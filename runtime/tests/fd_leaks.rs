//! Dropping pending accept and connect futures leaks no fd and no chunk. Its own test binary
//! (its own process), so that no concurrent test opens or closes fds meanwhile.

use std::time::Duration;

use zcrx::net::{TcpListener, TcpStream};
use zcrx::time::sleep;
use zcrx::{spawn, yield_now};

#[path = "common/rx.rs"]
mod rx;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn dropped_accepts_and_connects_leak_nothing() {
    let rt = rx::builder().chunks(64).chunk_size(4096).build().unwrap();
    rt.block_on(async {
        let before = open_fds();

        // 1,000 pending accepts on 1,000 listeners, all dropped while armed.
        let mut tasks = vec![];
        for _ in 0..1000 {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            tasks.push(spawn(async move {
                let _ = l.accept().await;
            }));
        }
        yield_now().await;
        yield_now().await;
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            assert!(t.await.unwrap_err().is_cancelled());
        }

        // 1,000 pending connects to a listener whose backlog is full and which never accepts:
        // the SYNs go unanswered, so the connects stay in flight until dropped.
        let full = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = full.local_addr().unwrap();
        rustix::net::listen(&full, 1).unwrap();
        let mut tasks = vec![];
        for _ in 0..1000 {
            tasks.push(spawn(
                async move { TcpStream::connect(addr).await.map(drop) },
            ));
        }
        sleep(Duration::from_millis(200)).await;
        let mut pending = 0;
        for t in &tasks {
            if !t.is_finished() {
                pending += 1;
            }
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        assert!(
            pending >= 900,
            "only {pending} connects were still pending when dropped"
        );
        drop(full);

        // Let the kernel deliver the cancellations' final completions.
        for _ in 0..50 {
            sleep(Duration::from_millis(10)).await;
            if open_fds() == before {
                break;
            }
        }
        assert_eq!(open_fds(), before, "fds leaked");
        let snap = zcrx::rx_snapshot().unwrap();
        assert_eq!(
            snap.counts.user + snap.counts.refill,
            0,
            "no chunk held: {snap:?}"
        );
        assert_eq!(snap.counts.total(), 64);
    });
}
