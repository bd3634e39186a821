//! `TcpStream` under the ecosystem's I/O traits (tokio's and futures-io's) and the plain
//! `read`, against the real kernel over loopback, with real codecs and copy loops.
//!
//! The `tokio` and `futures-io` features are on for these tests through the crate's
//! dev-dependency on itself; without them this file does not compile, so the tests cannot
//! quietly vanish.

mod common;

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
fn trait_impls() {
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
fn small_chunks() -> Runtime {
    common::builder()
        .chunks(64)
        .chunk_size(4096)
        .build()
        .unwrap()
}

struct Rng(u64);
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
async fn race<F: Future>(f: F, d: Duration) -> Option<F::Output> {
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
async fn join<T>(t: JoinHandle<T>) -> T {
    while !t.is_finished() {
        sleep(Duration::from_millis(1)).await;
    }
    t.join().unwrap()
}

/// A std client that connects to `addr` and writes `data` in `piece`-byte writes, pausing after
/// every `every` writes so that the runtime's reads often find nothing and wait.
fn paced_sender(addr: SocketAddr, data: Vec<u8>, piece: usize, every: usize) -> JoinHandle<()> {
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
async fn receive_from_std(data: Vec<u8>, piece: usize) -> (TcpStream, JoinHandle<()>) {
    receive_paced(data, piece, 4).await
}

/// [`receive_from_std`] with a pause after every `every` writes.
async fn receive_paced(data: Vec<u8>, piece: usize, every: usize) -> (TcpStream, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = paced_sender(l.local_addr().unwrap(), data, piece, every);
    let (s, _) = l.accept().await.unwrap();
    (s, client)
}

/// Lines of varied lengths (empty ones, and some longer than several chunks).
fn lines(n: usize, seed: u64) -> Vec<String> {
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

fn joined(lines: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for l in lines {
        v.extend_from_slice(l.as_bytes());
        v.push(b'\n');
    }
    v
}

/// Once a stream is done every chunk comes back to the pool: the stream keeps nothing (the
/// pool counts returned chunks at the loop's next turn).
async fn assert_nothing_held() {
    zcrx::yield_now().await;
    let snap = zcrx::rx_snapshot().unwrap();
    assert_eq!(snap.held_bytes, 0, "buffers still held: {snap:?}");
}

/// tokio-util's `FramedRead` with `LinesCodec` over a stream: every line, in order, across
/// chunk boundaries.
#[test]
fn framed_read_lines_codec_across_chunks() {
    use futures::StreamExt;
    use tokio_util::codec::{FramedRead, LinesCodec};

    let rt = small_chunks();
    let expected = lines(20_000, 7);
    let data = joined(&expected);
    assert!(data.len() > 64 * 4096, "more than the pool holds at once");
    rt.block_on(async move {
        common::rx::assert_backend();
        let (stream, client) = receive_from_std(data, 1000).await;
        let mut framed = FramedRead::new(stream, LinesCodec::new());
        let mut got = Vec::with_capacity(expected.len());
        while let Some(line) = framed.next().await {
            got.push(line.unwrap());
        }
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "lines differ");
        join(client).await;
        drop(framed);
        assert_nothing_held().await;
    });
}

/// futures-io's `AsyncBufReadExt::read_line` (through `poll_fill_buf`, in place) over a
/// stream.
#[test]
fn futures_read_line_across_chunks() {
    use futures::io::AsyncBufReadExt;

    let rt = small_chunks();
    let expected = lines(10_000, 11);
    let data = joined(&expected);
    rt.block_on(async move {
        common::rx::assert_backend();
        let (mut stream, client) = receive_from_std(data, 3001).await;
        let mut got = Vec::with_capacity(expected.len());
        let mut line = String::new();
        loop {
            line.clear();
            if stream.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            assert_eq!(line.pop(), Some('\n'));
            got.push(line.clone());
        }
        assert!(got == expected, "lines differ");
        join(client).await;
        assert!(stream.try_recv_buf().is_none());
        assert_nothing_held().await;
    });
}

/// A runtime stream `a` accepted from std client A, and `b` connected to std server B, with the
/// peers' threads: A sends `to_b` bytes of one pattern and B `to_a` of another, and each checks
/// it receives exactly the other's once the stream it reads ends. The test's job is to carry
/// the bytes across.
async fn proxy_pair(
    to_b: usize,
    to_a: usize,
) -> (TcpStream, TcpStream, JoinHandle<()>, JoinHandle<()>) {
    fn peer(s: std::net::TcpStream, send: Vec<u8>, expect: Vec<u8>) {
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&send).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::with_capacity(expect.len());
        let mut r = s;
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
    }
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b_addr = server.local_addr().unwrap();
    let b_peer = std::thread::spawn(move || {
        let (s, _) = server.accept().unwrap();
        peer(s, pattern(2, to_a), pattern(1, to_b));
    });
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = l.local_addr().unwrap();
    let a_peer = std::thread::spawn(move || {
        let s = std::net::TcpStream::connect(a_addr).unwrap();
        peer(s, pattern(1, to_b), pattern(2, to_a));
    });
    let (a, _) = l.accept().await.unwrap();
    let b = TcpStream::connect(b_addr).await.unwrap();
    (a, b, a_peer, b_peer)
}

/// `tokio::io::copy` between two runtime streams, both directions at once in two tasks
/// through `&TcpStream`: several MiB each way, byte-exact.
#[test]
fn tokio_copy_both_directions_through_shared_refs() {
    use tokio::io::AsyncWriteExt;

    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let (a, b, a_peer, b_peer) = proxy_pair(6 << 20, 5 << 20).await;
        let (a, b) = (Rc::new(a), Rc::new(b));
        let one_way = |from: Rc<TcpStream>, to: Rc<TcpStream>| {
            spawn(async move {
                let n = tokio::io::copy(&mut &*from, &mut &*to).await.unwrap();
                AsyncWriteExt::shutdown(&mut &*to).await.unwrap();
                n
            })
        };
        let ab = one_way(a.clone(), b.clone());
        let ba = one_way(b.clone(), a.clone());
        let limit = Duration::from_secs(60);
        assert_eq!(timeout(limit, ab).await.unwrap().unwrap(), 6 << 20);
        assert_eq!(timeout(limit, ba).await.unwrap().unwrap(), 5 << 20);
        join(a_peer).await;
        join(b_peer).await;
        assert_nothing_held().await;
    });
}

/// `tokio::io::copy_buf`, which reads in place through `poll_fill_buf` / `consume`: one way,
/// byte-exact.
#[test]
fn tokio_copy_buf_reads_in_place() {
    use tokio::io::AsyncWriteExt;

    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let (mut a, mut b, a_peer, b_peer) = proxy_pair(4 << 20, 0).await;
        let n = tokio::io::copy_buf(&mut a, &mut b).await.unwrap();
        assert_eq!(n, 4 << 20);
        AsyncWriteExt::shutdown(&mut b).await.unwrap();
        // B sends nothing: its end of stream comes through `b`; A waits for `a` to close.
        assert_eq!(tokio::io::copy(&mut b, &mut a).await.unwrap(), 0);
        drop(a);
        join(a_peer).await;
        join(b_peer).await;
        drop(b);
        assert_nothing_held().await;
    });
}

/// `tokio::io::copy_bidirectional` between two owned runtime streams, byte-exact both ways.
#[test]
fn tokio_copy_bidirectional() {
    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let (mut a, mut b, a_peer, b_peer) = proxy_pair(3 << 20, 4 << 20).await;
        let (ab, ba) = tokio::io::copy_bidirectional(&mut a, &mut b).await.unwrap();
        assert_eq!((ab, ba), (3 << 20, 4 << 20));
        join(a_peer).await;
        join(b_peer).await;
        drop((a, b));
        assert_nothing_held().await;
    });
}

/// Read futures (tokio's `AsyncReadExt::read`, futures-io's, the plain `TcpStream::read`, and
/// `fill_buf` with a partial `consume`) raced against a runtime timer and dropped midway at
/// thousands of points: every byte arrives once, in order.
#[test]
fn dropped_read_futures_lose_nothing() {
    let rt = small_chunks();
    let len = 6 << 20;
    rt.block_on(async move {
        common::rx::assert_backend();
        let (mut stream, client) = receive_paced(pattern(21, len), 7919, 1).await;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; 20_000];
        let mut drops = 0u64;
        loop {
            let want = 1 + rng.below(buf.len() as u64) as usize;
            let dst = &mut buf[..want];
            let wait = Duration::from_micros(rng.below(4) * rng.below(100));
            let n = match rng.below(4) {
                0 => race(tokio::io::AsyncReadExt::read(&mut stream, dst), wait).await,
                1 => race(futures::io::AsyncReadExt::read(&mut stream, dst), wait).await,
                2 => race(stream.read(dst), wait).await,
                _ => {
                    let r = race(tokio::io::AsyncBufReadExt::fill_buf(&mut stream), wait).await;
                    match r {
                        Some(Ok(bytes)) => {
                            let k = bytes.len().min(want);
                            got.extend_from_slice(&bytes[..k]);
                            tokio::io::AsyncBufRead::consume(std::pin::Pin::new(&mut stream), k);
                            if k == 0 {
                                break;
                            }
                            continue;
                        }
                        Some(Err(e)) => panic!("{e}"),
                        None => None,
                    }
                }
            };
            match n {
                None => drops += 1,
                Some(Ok(0)) => break,
                Some(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Some(Err(e)) => panic!("{e}"),
            }
        }
        join(client).await;
        eprintln!("{drops} read futures dropped");
        assert!(drops > 100, "only {drops} read futures were dropped");
        assert_eq!(got.len(), len);
        assert!(
            got == pattern(21, len),
            "bytes lost, duplicated or out of order"
        );
        assert_nothing_held().await;
    });
}

/// `read`, `recv`, `try_recv_buf`, `fill_buf`/`consume` and the `Stream` impl mixed at random
/// on one stream: a partly read buffer's remainder comes back first from the native API, so
/// nothing is lost or reordered.
#[test]
fn mixing_read_and_recv_loses_nothing() {
    use futures::StreamExt;

    let rt = small_chunks();
    let len = 4 << 20;
    rt.block_on(async move {
        common::rx::assert_backend();
        let (mut stream, client) = receive_from_std(pattern(33, len), 5000).await;
        let mut rng = Rng(12345);
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; 6000];
        let mut remainders = 0u64;
        loop {
            match rng.below(5) {
                0 | 1 => {
                    // Small reads leave most of a buffer held.
                    let want = 1 + rng.below(buf.len() as u64) as usize;
                    match stream.read(&mut buf[..want]).await.unwrap() {
                        0 => break,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
                2 => {
                    let held = stream.try_recv_buf();
                    match held {
                        Some(b) => got.extend_from_slice(&b),
                        None => match stream.recv().await.unwrap() {
                            Some(b) => got.extend_from_slice(&b),
                            None => break,
                        },
                    }
                }
                3 => {
                    let bytes = tokio::io::AsyncBufReadExt::fill_buf(&mut stream)
                        .await
                        .unwrap();
                    if bytes.is_empty() {
                        break;
                    }
                    let k = 1 + rng.below(bytes.len() as u64) as usize;
                    got.extend_from_slice(&bytes[..k]);
                    if k < bytes.len() {
                        remainders += 1;
                    }
                    tokio::io::AsyncBufRead::consume(std::pin::Pin::new(&mut stream), k);
                }
                _ => match stream.next().await {
                    Some(b) => got.extend_from_slice(&b.unwrap()),
                    None => break,
                },
            }
        }
        join(client).await;
        assert!(
            remainders > 100,
            "only {remainders} partly consumed buffers"
        );
        assert_eq!(got.len(), len);
        assert!(
            got == pattern(33, len),
            "bytes lost, duplicated or out of order"
        );
        assert_nothing_held().await;
    });
}

/// The `futures_core::Stream` of `RxBuf`s, `StreamExt::next` until `None`, byte-exact; after a
/// partial read its first item is the held remainder.
#[test]
fn stream_of_rxbufs_until_none() {
    use futures::StreamExt;

    let rt = small_chunks();
    let len = 3 << 20;
    rt.block_on(async move {
        common::rx::assert_backend();
        let (mut stream, client) = receive_from_std(pattern(44, len), 10_000).await;
        let mut head = [0u8; 100];
        let n = stream.read(&mut head).await.unwrap();
        assert!(n > 0);
        let mut got = head[..n].to_vec();
        let first = stream.next().await.unwrap().unwrap();
        let mut items = 1;
        got.extend_from_slice(&first);
        drop(first);
        while let Some(b) = stream.next().await {
            got.extend_from_slice(&b.unwrap());
            items += 1;
        }
        assert!(stream.next().await.is_none(), "the end stays the end");
        join(client).await;
        assert!(items > 1);
        assert_eq!(got.len(), len);
        assert!(got == pattern(44, len), "bytes differ");
        assert_nothing_held().await;
    });
}

/// A runtime stream connected to a std server that reads to the end of the stream; returns
/// the stream and what the server read.
async fn connect_to_std_reader() -> (TcpStream, JoinHandle<Vec<u8>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    (TcpStream::connect(addr).await.unwrap(), server)
}

/// `AsyncWriteExt::write_all` of a large buffer and `shutdown` (tokio), `write_all` and
/// `close` (futures-io): the std peer reads every byte, then the end of the stream.
#[test]
fn write_all_then_shutdown_is_eof_for_a_std_peer() {
    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let data = pattern(55, (5 << 20) + 12_345);
        let (mut s, server) = connect_to_std_reader().await;
        tokio::io::AsyncWriteExt::write_all(&mut s, &data)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut s).await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut s).await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut s).await.unwrap();
        let got = join(server).await;
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
        // Writing after the shutdown fails.
        let e = tokio::io::AsyncWriteExt::write(&mut s, b"late")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        drop(s);

        let data = pattern(56, 3 << 20);
        let (s, server) = connect_to_std_reader().await;
        futures::io::AsyncWriteExt::write_all(&mut &s, &data)
            .await
            .unwrap();
        futures::io::AsyncWriteExt::close(&mut &s).await.unwrap();
        let got = join(server).await;
        assert!(got == data, "bytes differ");
    });
}

/// A write abandoned after `Pending` still sends: polled again with the same data it reports
/// the count; followed by other data, its bytes stay first. Writes raced against a timer and
/// retried from where the last completed one left off deliver the data exactly.
#[test]
fn dropped_write_futures_keep_the_stream_exact() {
    use tokio::io::AsyncWriteExt;

    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let (mut s, server) = connect_to_std_reader().await;
        // Polled once (the send is submitted), then dropped; then something else is written.
        assert!(race(s.write(b"hello "), Duration::ZERO).await.is_none());
        s.write_all(b"world").await.unwrap();
        // Dropped with the same data pending, then written in full again: sent once.
        assert!(race(s.write(b", again"), Duration::ZERO).await.is_none());
        s.flush().await.unwrap();
        s.write_all(b", again").await.unwrap();

        let data = pattern(66, 4 << 20);
        let mut rng = Rng(777);
        let mut off = 0;
        let mut drops = 0u64;
        while off < data.len() {
            let end = (off + 1 + rng.below(40_000) as usize).min(data.len());
            let wait = Duration::from_micros(rng.below(3) * rng.below(200));
            match race(s.write(&data[off..end]), wait).await {
                Some(n) => off += n.unwrap(),
                None => drops += 1,
            }
        }
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        let got = join(server).await;
        eprintln!("{drops} write futures dropped");
        assert!(drops > 50, "only {drops} write futures were dropped");
        let head = b"hello world, again";
        assert_eq!(&got[..head.len()], head);
        assert_eq!(got.len() - head.len(), data.len());
        assert!(got[head.len()..] == data[..], "bytes differ");
    });
}

/// A connection allowed to hold a single chunk, read a few bytes at a time through
/// `fill_buf`/`consume`: holding the partly consumed buffer never stops it for good.
#[test]
fn one_chunk_limit_and_small_consumes() {
    let rt = common::builder()
        .chunks(16)
        .chunk_size(4096)
        .conn_limit(4096)
        .build()
        .unwrap();
    let len = 1 << 20;
    rt.block_on(async move {
        common::rx::assert_backend();
        let (mut stream, client) = receive_from_std(pattern(88, len), 65536).await;
        let mut rng = Rng(99);
        let mut got = Vec::with_capacity(len);
        let read = async {
            loop {
                let bytes = tokio::io::AsyncBufReadExt::fill_buf(&mut stream)
                    .await
                    .unwrap();
                if bytes.is_empty() {
                    break;
                }
                let k = bytes.len().min(1 + rng.below(64) as usize);
                got.extend_from_slice(&bytes[..k]);
                tokio::io::AsyncBufRead::consume(std::pin::Pin::new(&mut stream), k);
            }
        };
        timeout(Duration::from_secs(60), read)
            .await
            .expect("the connection stalled");
        join(client).await;
        assert!(got == pattern(88, len), "bytes differ");
        assert_nothing_held().await;
    });
}

/// Counts, per thread, the allocations (and reallocations) of at least `BIG` bytes, so that a
/// test can see whether writes allocate their copies afresh. Everything else is the system
/// allocator's.
struct CountBig;

const BIG: usize = 32 << 10;

thread_local! {
    static BIG_ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_big(size: usize) {
    if size >= BIG {
        // Not during thread teardown.
        let _ = BIG_ALLOCS.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: forwards to the system allocator; counting touches only a const-initialised
// thread-local without destructor.
unsafe impl std::alloc::GlobalAlloc for CountBig {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count_big(l.size());
        // SAFETY: the caller's contract for this method is the system allocator's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        count_big(l.size());
        // SAFETY: the caller's contract for this method is the system allocator's.
        unsafe { std::alloc::System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: the caller's contract for this method is the system allocator's.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, size: usize) -> *mut u8 {
        count_big(size);
        // SAFETY: the caller's contract for this method is the system allocator's.
        unsafe { std::alloc::System.realloc(p, l, size) }
    }
}

#[global_allocator]
static ALLOC: CountBig = CountBig;

/// The slices of `data[off..]` split at `cuts` (offsets into `data`, ascending, past `off`),
/// with an empty slice in between now and then, as a vectored writer passes them.
fn slices_at<'a>(data: &'a [u8], off: usize, cuts: &[usize]) -> Vec<std::io::IoSlice<'a>> {
    let mut v = Vec::new();
    let mut at = off;
    for &c in cuts.iter().chain([data.len()].iter()) {
        let c = c.clamp(at, data.len());
        v.push(std::io::IoSlice::new(&data[at..c]));
        if c % 3 == 0 {
            v.push(std::io::IoSlice::new(&[]));
        }
        at = c;
    }
    v
}

/// `write_vectored` (tokio's and futures-io's) sends the slices, in order, in one send of up
/// to `WRITE_MAX` bytes; looping from where each count left off delivers every byte.
#[test]
fn vectored_writes_are_gathered_in_order() {
    use std::io::IoSlice;

    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let (mut s, server) = connect_to_std_reader().await;
        assert!(tokio::io::AsyncWrite::is_write_vectored(&s));
        assert!(tokio::io::AsyncWrite::is_write_vectored(&&s));
        // Headers and a body, as hyper writes them.
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 65536\r\n\r\n".to_vec();
        let body = pattern(70, 64 << 10);
        let mut want = Vec::new();
        let mut left = head.len() + body.len();
        let mut off = 0;
        while left > 0 {
            let all: Vec<u8> = [&head[..], &body[..]].concat();
            let rest = &all[off..];
            // The two slices, from where the count left off.
            let split = head.len().saturating_sub(off);
            let slices = [
                IoSlice::new(&rest[..split]),
                IoSlice::new(&[]),
                IoSlice::new(&rest[split..]),
            ];
            let n = tokio::io::AsyncWriteExt::write_vectored(&mut s, &slices)
                .await
                .unwrap();
            assert!(n > 0 && n <= left);
            off += n;
            left -= n;
        }
        want.extend_from_slice(&head);
        want.extend_from_slice(&body);
        // Larger than one call takes: each call writes at most WRITE_MAX bytes.
        let big = pattern(71, 3 * zcrx::net::WRITE_MAX + 777);
        let mut rng = Rng(5);
        let mut off = 0;
        while off < big.len() {
            let cuts: Vec<usize> = (0..1 + rng.below(20))
                .map(|_| off + rng.below(2 * zcrx::net::WRITE_MAX as u64) as usize)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let slices = slices_at(&big, off, &cuts);
            let n = if rng.below(2) == 0 {
                tokio::io::AsyncWriteExt::write_vectored(&mut s, &slices).await
            } else {
                futures::io::AsyncWriteExt::write_vectored(&mut &s, &slices).await
            }
            .unwrap();
            assert!(n > 0 && n <= zcrx::net::WRITE_MAX, "{n}");
            off += n;
        }
        want.extend_from_slice(&big);
        // Nothing but empty slices writes nothing.
        let none = [IoSlice::new(&[]), IoSlice::new(&[])];
        let n = tokio::io::AsyncWriteExt::write_vectored(&mut s, &none)
            .await
            .unwrap();
        assert_eq!(n, 0);
        tokio::io::AsyncWriteExt::shutdown(&mut s).await.unwrap();
        let got = join(server).await;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
    });
}

/// Vectored writes raced against a timer and dropped at random points, retried from where the
/// last count left off with the same slices, other cuts of the same bytes, or a copy of them
/// elsewhere in memory: the peer gets the data exactly. A dropped write followed by a write of
/// other bytes from the same buffer (changed in place) is not credited: both go out.
#[test]
fn dropped_vectored_writes_keep_the_stream_exact() {
    use tokio::io::AsyncWriteExt;

    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let (mut s, server) = connect_to_std_reader().await;
        // Dropped; then the same buffer, changed in place, is written: no credit for it.
        let mut buf = *b"first ";
        assert!(race(s.write(&buf), Duration::ZERO).await.is_none());
        buf.copy_from_slice(b"second");
        s.write_all(&buf).await.unwrap();
        let mut buf = *b" third";
        assert!(race(s.write(&buf), Duration::ZERO).await.is_none());
        s.flush().await.unwrap();
        buf[5] = b'D';
        s.write_all(&buf).await.unwrap();
        let head = b"first second third thirD";

        let data = pattern(67, 4 << 20);
        let mut rng = Rng(4242);
        let mut off = 0;
        let mut drops = 0u64;
        let mut cuts: Vec<usize> = Vec::new();
        while off < data.len() {
            let r = rng.below(4);
            if r == 0 || cuts.first().is_none_or(|&c| c <= off) {
                // New cuts (as after a completed write).
                cuts = (0..1 + rng.below(6))
                    .map(|_| off + 1 + rng.below(30_000) as usize)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
            }
            let wait = Duration::from_micros(rng.below(3) * rng.below(200));
            let copy;
            let end = (off + 40_000).min(data.len());
            let from: &[u8] = if r == 1 {
                // The same bytes from elsewhere in memory.
                copy = data[off..end].to_vec();
                &copy
            } else {
                &data[off..end]
            };
            let cut: Vec<usize> = cuts.iter().map(|c| c - off).collect();
            let slices = slices_at(from, 0, &cut);
            // Only some of the slices, now and then.
            let slices = &slices[..slices.len() - rng.below(2) as usize];
            match race(s.write_vectored(slices), wait).await {
                Some(n) => {
                    off += n.unwrap();
                    cuts.clear();
                }
                None => drops += 1,
            }
        }
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        let got = join(server).await;
        eprintln!("{drops} vectored write futures dropped");
        assert!(drops > 50, "only {drops} write futures were dropped");
        assert_eq!(&got[..head.len()], head);
        assert_eq!(got.len() - head.len(), data.len());
        assert!(got[head.len()..] == data[..], "bytes differ");
    });
}

/// Writes reuse the allocation of the previous send's buffer: after the first, 64 KiB writes
/// (plain and vectored) allocate no large buffer.
#[test]
fn writes_reuse_their_buffer() {
    use tokio::io::AsyncWriteExt;

    let rt = small_chunks();
    rt.block_on(async {
        common::rx::assert_backend();
        let (mut s, server) = connect_to_std_reader().await;
        let data = pattern(68, 64 << 10);
        let head = b"0123456789abcdef".to_vec();
        let all = [&head[..], &data[..]].concat();
        let mut want = Vec::with_capacity(101 * all.len());
        want.extend_from_slice(&data);
        s.write_all(&data).await.unwrap();
        let before = BIG_ALLOCS.with(|c| c.get());
        for i in 0..100 {
            if i % 2 == 0 {
                s.write_all(&data).await.unwrap();
                want.extend_from_slice(&data);
            } else {
                let mut off = 0;
                while off < all.len() {
                    let split = head.len().saturating_sub(off);
                    let rest = &all[off..];
                    let slices = [
                        std::io::IoSlice::new(&rest[..split]),
                        std::io::IoSlice::new(&rest[split..]),
                    ];
                    off += s.write_vectored(&slices).await.unwrap();
                }
                want.extend_from_slice(&all);
            }
        }
        let after = BIG_ALLOCS.with(|c| c.get());
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        let got = join(server).await;
        assert!(got == want, "bytes differ");
        // The test's own `concat`s are 50 of them.
        assert!(
            after - before <= 50 + 2,
            "{} large allocations",
            after - before
        );
    });
}
