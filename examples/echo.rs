//! An echo server that sends every received chunk straight back from the receive pool
//! (`send_buf`: no copy in user space), one pinned runtime per thread sharing the port with
//! `SO_REUSEPORT`.
//!
//! ```sh
//! cargo run --release --example echo -- --listen 127.0.0.1:7000 --threads 2
//! # zcrx without a device (Linux 7.1+, as root):
//! cargo run --release --example echo -- --backend zcrx --zcrx nodev
//! ```

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::Parser;
use examples::cli;
use zcrx::net::TcpListener;

#[derive(Parser, Debug)]
#[command(about = "Zero-copy echo server on the io_uring runtime")]
struct Args {
    /// Address and port to listen on, as the other examples take them.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The address alone (older spelling, kept for scripts; overrides --listen's).
    #[arg(long, hide = true)]
    addr: Option<IpAddr>,
    /// The port alone (older spelling, kept for scripts; overrides --listen's).
    #[arg(long, hide = true)]
    port: Option<u16>,
    #[command(flatten)]
    rt: cli::RuntimeArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cli::init_tracing();
    let mut addr = args.listen;
    if let Some(ip) = args.addr {
        addr.set_ip(ip);
    }
    if let Some(port) = args.port {
        addr.set_port(port);
    }
    // Fail early, with a clear message, if the address cannot be bound.
    std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!(
        "echo: listening on {addr} with {} thread(s)",
        args.rt.threads
    );
    let results = args
        .rt
        .builder()
        .run(move |i| async move {
            eprintln!("echo: thread {i} receives with the {}", zcrx::rx_backend());
            let listener = TcpListener::bind_reuseport(addr)?;
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => return Ok(()),
                    Err(e) => {
                        eprintln!("echo: accept failed: {e}");
                        continue;
                    }
                };
                zcrx::spawn(async move {
                    while let Ok(Some(buf)) = stream.recv().await {
                        // What arrived together goes back in one request (under zcrx each
                        // buffer is at most a page); a lone buffer as it came.
                        let sent = match stream.try_recv_buf() {
                            None => stream.send_buf(buf).await,
                            Some(next) => {
                                let mut bufs = vec![buf, next];
                                while bufs.len() < zcrx::net::SEND_BUFS_MAX {
                                    match stream.try_recv_buf() {
                                        Some(b) => bufs.push(b),
                                        None => break,
                                    }
                                }
                                stream.send_bufs(bufs).await
                            }
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                });
            }
        })
        .context("starting the runtime")?;
    for r in results {
        r.map_err(|e: std::io::Error| anyhow::anyhow!(e))?;
    }
    Ok(())
}
