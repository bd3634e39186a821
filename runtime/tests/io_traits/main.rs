//! `TcpStream` under the ecosystem's I/O traits (tokio's and futures-io's) and the plain
//! `read`, against the real kernel over loopback, with real codecs and copy loops.
//!
//! The `tokio` and `futures-io` features are on for these tests through the crate's
//! dev-dependency on itself; without them this file does not compile, so the tests cannot
//! quietly vanish.

#[path = "../common/mod.rs"]
mod common;
mod read;
mod write;

use std::future::{poll_fn, Future};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use common::pattern;
use zcrx::net::{TcpListener, TcpStream};
use zcrx::time::{sleep, timeout};
use zcrx::{spawn, Runtime};

/// Which traits the stream and a shared reference to it have.
#[test]
pub(crate) fn trait_impls() {
    fn tokio_all<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + tokio::io::AsyncBufRead>() {}
    fn tokio_rw<T: tokio::io::AsyncRead + tokio::io::AsyncWrite>() {}
    fn futures_all<
        T: futures::io::AsyncRead + futures::io::AsyncWrite + futures::io::AsyncBufRead,
    >() {
    }
    fn futures_rw<T: futures::io::AsyncRead + futures::io::AsyncWrite>() {}
    fn stream<T: futures::Stream<Item = std::io::Result<zcrx::RxBuf>>>() {}
    tokio_all::<TcpStream>();
    tokio_rw::<&TcpStream>();
    futures_all::<TcpStream>();
    futures_rw::<&TcpStream>();
    stream::<TcpStream>();
}

/// Small chunks, so that lines and reads cross chunk boundaries all the time.
pub(crate) fn small_chunks() -> Runtime {
    common::builder()
        .chunks(64)
        .chunk_size(4096)
        .build()
        .unwrap()
}

pub(crate) struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `f`, unless the runtime timer `d` fires first: then `f` is dropped where it stood. `f` is
/// polled first, so `Duration::ZERO` polls it exactly once.
pub(crate) async fn race<F: Future>(f: F, d: Duration) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut timer = pin!(sleep(d));
    poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Waits, inside the runtime, for a std thread.
pub(crate) async fn join<T>(t: JoinHandle<T>) -> T {
    while !t.is_finished() {
        sleep(Duration::from_millis(1)).await;
    }
    t.join().unwrap()
}

/// A std client that connects to `addr` and writes `data` in `piece`-byte writes, pausing after
/// every `every` writes so that the runtime's reads often find nothing and wait.
pub(crate) fn paced_sender(
    addr: SocketAddr,
    data: Vec<u8>,
    piece: usize,
    every: usize,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        for (i, p) in data.chunks(piece).enumerate() {
            s.write_all(p).unwrap();
            if i % every == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    })
}

/// A runtime listener and a std client sending `data` to it; returns the accepted stream.
pub(crate) async fn receive_from_std(data: Vec<u8>, piece: usize) -> (TcpStream, JoinHandle<()>) {
    receive_paced(data, piece, 4).await
}

/// [`receive_from_std`] with a pause after every `every` writes.
pub(crate) async fn receive_paced(
    data: Vec<u8>,
    piece: usize,
    every: usize,
) -> (TcpStream, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = paced_sender(l.local_addr().unwrap(), data, piece, every);
    let (s, _) = l.accept().await.unwrap();
    (s, client)
}

/// Lines of varied lengths (empty ones, and some longer than several chunks).
pub(crate) fn lines(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let len = match rng.below(100) {
                0 => 4096 * 2 + rng.below(4096) as usize,
                1..=4 => 0,
                _ => rng.below(300) as usize,
            };
            let c = b'a' + (i % 26) as u8;
            let mut line: String = (0..len).map(|j| (c + (j % 7) as u8) as char).collect();
            line.push_str(&format!(" #{i}"));
            line
        })
        .collect()
}

pub(crate) fn joined(lines: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for l in lines {
        v.extend_from_slice(l.as_bytes());
        v.push(b'\n');
    }
    v
}

/// Once a stream is done every chunk comes back to the pool: the stream keeps nothing (the
/// pool counts returned chunks at the loop's next turn).
pub(crate) async fn assert_nothing_held() {
    zcrx::yield_now().await;
    let snap = zcrx::rx_snapshot().unwrap();
    assert_eq!(snap.held_bytes, 0, "buffers still held: {snap:?}");
}
