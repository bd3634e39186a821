//! The zero-copy TCP proxy behind `--example proxy`.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use zcrx::net::{TcpListener, TcpStream};

/// What one proxied connection carried and how it ended.
#[derive(Debug, Default)]
pub struct ProxyReport {
    /// Bytes received from the client and sent on to the upstream.
    pub to_upstream: u64,
    /// Bytes received from the upstream and sent on to the client.
    pub to_client: u64,
    /// `None` if both directions ended with an orderly end of stream; otherwise the first error
    /// (a reset, a failed send), which closed both sides.
    pub error: Option<io::Error>,
}

/// Which way a forwarding loop runs (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToUpstream,
    ToClient,
}

impl Dir {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Dir::ToUpstream => ("client", "upstream"),
            Dir::ToClient => ("upstream", "client"),
        }
    }
}

pub(crate) fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Forwards `from` to `to` until `from` ends, then shuts down `to`'s write half. Received
/// buffers are sent from the receive pool without a copy in user space, those that arrived
/// together in one request ([`TcpStream::send_bufs`]: under zcrx each carries at most a page);
/// each chunk goes back to the pool once the kernel is done sending it.
async fn forward(from: &TcpStream, to: &TcpStream, dir: Dir, count: &Cell<u64>) -> io::Result<()> {
    let (src, dst) = dir.names();
    loop {
        match from.recv().await {
            Ok(Some(buf)) => {
                let n = match from.try_recv_buf() {
                    // Request/response traffic: one buffer at a time, as it came.
                    None => {
                        let n = buf.len() as u64;
                        to.send_buf(buf).await.map(|()| n)
                    }
                    Some(next) => {
                        let mut bufs = vec![buf, next];
                        while bufs.len() < zcrx::net::SEND_BUFS_MAX {
                            match from.try_recv_buf() {
                                Some(b) => bufs.push(b),
                                None => break,
                            }
                        }
                        let n: u64 = bufs.iter().map(|b| b.len() as u64).sum();
                        to.send_bufs(bufs).await.map(|()| n)
                    }
                }
                .map_err(|e| context(e, format!("sending to the {dst}")))?;
                count.set(count.get() + n);
            }
            Ok(None) => {
                // Half-close: pass the end of stream on and keep the other direction going.
                return to
                    .shutdown(Shutdown::Write)
                    .await
                    .map_err(|e| context(e, format!("shutting down the {dst}'s write side")));
            }
            Err(e) => return Err(context(e, format!("receiving from the {src}"))),
        }
    }
}

/// Proxies one connection: forwards client → upstream and upstream → client concurrently, each
/// received buffer sent on straight from the receive pool.
///
/// Half-close is carried through: when one side ends its stream, the other side's write half is
/// shut down and the opposite direction keeps flowing until it ends too. An error on either side
/// (a reset, a failed send) ends both directions at once: both sockets are shut down and closed,
/// so the surviving peer sees the end of its stream (or a reset if it keeps sending). The
/// runtime exposes no `SO_LINGER`, so a reset is not propagated as a reset.
///
/// Both streams are closed when this returns. It never panics on I/O errors; it reports them.
pub async fn proxy_connection(client: TcpStream, upstream: TcpStream) -> ProxyReport {
    let (up, down) = (Cell::new(0u64), Cell::new(0u64));
    let result = {
        let mut a = pin!(forward(&client, &upstream, Dir::ToUpstream, &up));
        let mut b = pin!(forward(&upstream, &client, Dir::ToClient, &down));
        let (mut a_done, mut b_done) = (false, false);
        std::future::poll_fn(|cx| {
            if !a_done {
                if let Poll::Ready(r) = a.as_mut().poll(cx) {
                    r?;
                    a_done = true;
                }
            }
            if !b_done {
                if let Poll::Ready(r) = b.as_mut().poll(cx) {
                    r?;
                    b_done = true;
                }
            }
            if a_done && b_done {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
        // The forwarding futures are dropped here: their in-flight requests are cancelled and
        // the buffers they held go back to the pool once the kernel is done with them.
    };
    if result.is_err() {
        // Close both sides now, whatever is still in flight on them.
        let _ = client.shutdown(Shutdown::Both).await;
        let _ = upstream.shutdown(Shutdown::Both).await;
    }
    ProxyReport {
        to_upstream: up.get(),
        to_client: down.get(),
        error: result.err(),
    }
}

/// The per-connection receive limit the proxy example sets, in chunks (`--conn-limit`'s
/// default: 4 chunks, 128 KiB with the default 32 KiB chunks).
///
/// A proxy must keep the connections that are stuck at their limit from holding the whole
/// pool: a client connection holds what it received until the upstream takes it, and if the
/// upstream only reads once its own answers are read (an echo, any request/response peer with
/// full buffers), the upstream connection needs free chunks to make progress. With the
/// runtime's default limit (a quarter of the pool) four such connections on one thread hold
/// every chunk and all of them wait forever. With 4 chunks of a 256-chunk pool it takes 64.
/// Throughput through the proxy is the same either way (measured over loopback).
pub const PROXY_CONN_LIMIT_CHUNKS: u64 = 4;

/// How [`serve_proxy`] reaches its upstream.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where every accepted connection is forwarded to.
    pub upstream: SocketAddr,
    /// How long connecting to the upstream may take before the client is closed.
    pub connect_timeout: Duration,
    /// Set `TCP_NODELAY` on both sides (recommended: the proxy forwards what it receives at
    /// once, and Nagle's algorithm would add latency to request/response protocols).
    pub nodelay: bool,
    /// Print one line per connection that ended with an error, on stderr.
    pub log_errors: bool,
}

impl ProxyConfig {
    /// Defaults: 5 s connect timeout, `TCP_NODELAY` on, errors logged.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
            log_errors: true,
        }
    }
}

/// Counters a proxy shares across its threads.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Client connections finished (whatever the outcome, including failed upstream connects).
    pub finished: AtomicU64,
    /// Connections that could not reach the upstream.
    pub connect_failures: AtomicU64,
    /// Connections that ended with an error (reset, failed send) after both sides were up.
    pub errors: AtomicU64,
    /// Bytes forwarded client → upstream, by finished connections.
    pub to_upstream: AtomicU64,
    /// Bytes forwarded upstream → client, by finished connections.
    pub to_client: AtomicU64,
}

impl ProxyCounters {
    /// Connections accepted and not yet finished.
    pub fn active(&self) -> u64 {
        let finished = self.finished.load(Ordering::Acquire);
        self.accepted
            .load(Ordering::Acquire)
            .saturating_sub(finished)
    }
}

/// Connects to the upstream and proxies one accepted client with [`proxy_connection`].
pub async fn proxy_client(client: TcpStream, config: &ProxyConfig) -> io::Result<ProxyReport> {
    let upstream = match zcrx::time::timeout(
        config.connect_timeout,
        TcpStream::connect(config.upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(context(e, format!("connecting to {}", config.upstream)));
        }
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to {}: no answer within {:?}",
                    config.upstream, config.connect_timeout
                ),
            ))
        }
    };
    if config.nodelay {
        client.set_nodelay(true)?;
        upstream.set_nodelay(true)?;
    }
    Ok(proxy_connection(client, upstream).await)
}

/// Accepts clients on `listener` until the runtime's shutdown is requested, proxying each to
/// `config.upstream` in its own task. Connections still open at shutdown get the runtime's
/// grace period to finish.
pub async fn serve_proxy(
    listener: TcpListener,
    config: ProxyConfig,
    counters: Arc<ProxyCounters>,
) -> io::Result<()> {
    let config = Rc::new(config);
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => return Ok(()),
            Err(e) => {
                // Out of fds or memory, for instance: say so, and do not spin.
                eprintln!("proxy: accept failed: {e}");
                zcrx::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::AcqRel);
        let (config, counters) = (config.clone(), counters.clone());
        zcrx::spawn(async move {
            match proxy_client(client, &config).await {
                Ok(report) => {
                    counters
                        .to_upstream
                        .fetch_add(report.to_upstream, Ordering::AcqRel);
                    counters
                        .to_client
                        .fetch_add(report.to_client, Ordering::AcqRel);
                    if let Some(e) = report.error {
                        counters.errors.fetch_add(1, Ordering::AcqRel);
                        if config.log_errors {
                            eprintln!("proxy: {peer}: {e}");
                        }
                    }
                }
                Err(e) => {
                    counters.connect_failures.fetch_add(1, Ordering::AcqRel);
                    if config.log_errors {
                        eprintln!("proxy: {peer}: {e}");
                    }
                }
            }
            counters.finished.fetch_add(1, Ordering::AcqRel);
        });
    }
}
