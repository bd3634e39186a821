//! Peers that misbehave (the fault and load suite, docs/reliability.md): resets in the middle of a stream,
//! half-closes, a 1-byte-per-100 ms trickle (also one that never finishes, against a server that
//! holds what it got until the request is complete), connect-and-vanish, and 10,000 connections
//! opened and closed in a burst, while well-behaved clients stream verified data. The server must
//! keep serving the well-behaved clients, free everything of the bad ones, leak no fd and no
//! chunk. Once over loopback, once across a veth pair between two network namespaces (there the
//! vanishing peer really vanishes: its link goes down).
//!
//! Its own test binary: it counts the process's fds, so its two tests run one after the other.

#[path = "../common/faults.rs"]
mod faults;
#[path = "../common/rx.rs"]
mod rx;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};

use faults::{check, digest_of, fill, open_fds, Digest, VethPair};
use zcrx::net::TcpListener;
use zcrx::time::{sleep, timeout};
use zcrx::{spawn, RxBuf, ShutdownReport, ShutdownSignal};
mod clients;
mod server;

use clients::*;
use server::*;

/// The two tests count the process's fds: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const CHUNK: usize = 16 * 1024;
const CHUNKS: usize = 32;
/// The default per-connection limit: a quarter of the pool, in the pool's chunks.
fn limit_chunks() -> u32 {
    rx::pool_chunks(CHUNKS, CHUNK) / 4
}
/// Requests up to this size are assembled zero-copy: the server holds every buffer until the
/// request is complete (what a parser that does not copy does).
const ASSEMBLE_MAX: u64 = 64 * 1024;
/// The server drops a connection that sends nothing for this long.
const IDLE: Duration = Duration::from_secs(1);
const HEADER: usize = 16;
/// The seeds of the peers that go quiet: the slowloris ones (900, 901) and, across veth, the
/// ones that vanish (700-703). No other client uses these seeds.
fn quiet(seed: u64) -> bool {
    matches!(seed, 700..=703 | 900 | 901)
}
/// Burst connections number their requests from here, clear of every other client's seed.
const BURST_SEEDS: u64 = 1_000_000;

fn finish(server: Server) -> (String, Tally, ShutdownReport) {
    server.signal.trigger();
    server.thread.join().expect("server thread")
}

fn misbehaving_peers_over_loopback() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    faults::raise_fd_limit();
    let fds0 = open_fds();
    let t = Instant::now();
    let server = start_server(None, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (expected_ok, clients) = misbehave(
        server.addr,
        None,
        &Mix {
            goods: 8,
            good_len: 4 << 20,
            small: 4,
            burst: 10_000,
        },
    );
    let (summary, tally, report) = finish(server);
    let fds1 = open_fds();
    eprintln!("loopback {clients}");
    eprintln!("loopback {summary}");
    eprintln!(
        "loopback: shutdown: {report}; process fds {fds0} -> {fds1}; {:.2?} in all",
        t.elapsed()
    );
    assert_eq!(
        tally.ok, expected_ok,
        "every well-behaved client was served: {summary}"
    );
    assert!(
        tally.reset >= 16,
        "the resets were seen as resets: {summary}"
    );
    // Most of the burst reached the application and ended there (at EOF, or reset). Resets
    // that arrive before the accept never reach it, and on a busy machine the listen backlog
    // may drop a few more, so this is a floor, not an exact count; that every accepted
    // connection ended exactly once is checked on the server.
    assert!(tally.early_eof >= 2500 + 8, "{summary}");
    assert!(tally.accepted >= 2500 + 8 * 3 + 12 + 4, "{summary}");
    assert_eq!(
        tally.idle, 2,
        "the two slowloris peers were cut off: {summary}"
    );
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fds1, fds0, "fds leaked: {}", faults::fd_summary());
}

fn misbehaving_peers_across_veth() -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = faults::netns_unavailable() {
        return Err(skip(why));
    }
    faults::raise_fd_limit();
    let pair = VethPair::new().expect("veth pair");
    let fds0 = open_fds();
    let t = Instant::now();
    let server = start_server(Some(pair.ns_a.clone()), IpAddr::V4(pair.addr_a));
    let addr = server.addr;
    let (mut expected_ok, clients) = misbehave(
        addr,
        Some(&pair.ns_b),
        &Mix {
            goods: 4,
            good_len: 4 << 20,
            small: 2,
            burst: 1000,
        },
    );
    // Peers that really vanish: they send part of a request, then their link goes down and they
    // close (the FIN or RST never arrives). The server frees them on its idle timeout, while a
    // client that stayed well-behaved on the other side of the outage still completes.
    let vanish = faults::spawn_in_netns(&pair.ns_b, "vanish", move || {
        (0..4)
            .map(|i| {
                let mut s = connect(addr);
                s.write_all(&request(700 + i, 1 << 20)[..50_000]).unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    pair.set_b_link(false).unwrap();
    for (i, s) in vanish.into_iter().enumerate() {
        if i % 2 == 0 {
            rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
        }
        drop(s);
    }
    std::thread::sleep(IDLE + Duration::from_millis(300));
    pair.set_b_link(true).unwrap();
    let after =
        faults::spawn_in_netns(&pair.ns_b, "after", move || good(addr, 999, 1 << 20, false))
            .join()
            .expect("a client after the outage");
    expected_ok += 1;
    let (summary, tally, report) = finish(server);
    let fds1 = open_fds();
    eprintln!(
        "veth {clients}; 4 peers vanished mid-request; a client after the outage took {after:.2?}"
    );
    eprintln!("veth {summary}");
    eprintln!(
        "veth: shutdown: {report}; process fds {fds0} -> {fds1}; {:.2?} in all",
        t.elapsed()
    );
    assert_eq!(
        tally.ok, expected_ok,
        "every well-behaved client was served: {summary}"
    );
    assert!(tally.reset >= 16, "{summary}");
    assert!(tally.early_eof >= 250 + 8, "{summary}");
    assert_eq!(
        tally.idle, 6,
        "the slowloris peers and the vanished ones were cut off: {summary}"
    );
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fds1, fds0, "fds leaked: {}", faults::fd_summary());
    let (a, b) = (pair.ns_a.clone(), pair.ns_b.clone());
    drop(pair);
    assert!(
        !VethPair::exists(&a) && !VethPair::exists(&b),
        "the namespaces were removed"
    );
    Ok(())
}

test_kit::main!(
    misbehaving_peers_over_loopback,
    misbehaving_peers_across_veth,
);
