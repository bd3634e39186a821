//! Writing: `write_all` and shutdown, vectored writes, dropped write futures, and the reuse
//! of a write's buffer.

use super::*;

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
