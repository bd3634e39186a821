//! Shared test helpers.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use zcrx::net::TcpListener;
use zcrx::{Builder, ShutdownSignal};

pub(crate) mod rx;
pub(crate) use rx::builder;

/// Deterministic pseudo-random bytes: the first `len` of test-kit's pattern for `seed`.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    test_kit::Pattern::bytes(seed, len)
}

/// Starts the zero-copy echo server on `threads` runtime threads; returns its address, the
/// signal that stops it, and the thread running it.
pub(crate) fn echo_server(builder: Builder) -> (SocketAddr, ShutdownSignal, JoinHandle<()>) {
    let signal = ShutdownSignal::new();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let builder = builder.shutdown_signal(signal.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        builder
            .run(move |_| {
                let ready_tx = ready_tx.clone();
                async move {
                    rx::assert_backend();
                    let listener = TcpListener::bind_reuseport(addr).unwrap();
                    let _ = ready_tx.send(());
                    while let Ok((stream, _)) = listener.accept().await {
                        zcrx::spawn(async move {
                            while let Ok(Some(buf)) = stream.recv().await {
                                if stream.send_buf(buf).await.is_err() {
                                    break;
                                }
                            }
                        });
                    }
                }
            })
            .unwrap();
    });
    ready_rx.recv().unwrap();
    (addr, signal, t)
}

/// Sends `data` through an echo server with a std client (writer and reader threads) and
/// returns what came back.
pub(crate) fn echo_roundtrip(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    use std::io::{Read, Write};
    let s = std::net::TcpStream::connect(addr).unwrap();
    let mut r = s.try_clone().unwrap();
    let len = data.len();
    let w = std::thread::spawn(move || {
        let mut s = s;
        s.write_all(&data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(len);
    r.read_to_end(&mut back).unwrap();
    w.join().unwrap();
    back
}

/// Polls the inner future at most `n` times; then gives up and drops it.
pub(crate) struct PollN<F> {
    pub(crate) fut: Pin<Box<F>>,
    pub(crate) left: u32,
}

impl<F: Future> Future for PollN<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        self.left -= 1;
        if self.left == 0 {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

pub(crate) fn std_sender(
    data: Vec<u8>,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<()>,
    std::net::TcpListener,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // Paced, so that receives are often pending and dropping them means something.
        for (i, piece) in data.chunks(7919).enumerate() {
            s.write_all(piece).unwrap();
            if i % 4 == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });
    (addr, t, l)
}
