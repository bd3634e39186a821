//! Reading: codecs, `read_line`, copy loops, `fill_buf`/`consume`, the `Stream` of `RxBuf`,
//! and dropped read futures.

use super::*;

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
