//! The receivers: this runtime and what our users would pick instead, each written the way its
//! documentation suggests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::child::{Tally, CONN_BUF};
use crate::Contender;

pub fn serve(c: Contender, l: TcpListener, t: Arc<Tally>) -> Result<()> {
    match c {
        Contender::Ours => ours(l, t, false, true),
        Contender::OursInc => ours(l, t, true, true),
        Contender::OursAllPosted => ours(l, t, false, false),
        Contender::UringLoop => uring_loop::serve(l, t),
        Contender::TokioCt => tokio_rt(l, t, false),
        Contender::TokioMt => tokio_rt(l, t, true),
        Contender::TokioUring => tokio_uring_rt(l, t),
        Contender::Monoio => monoio_rt(l, t),
        Contender::Std => std_threads(l, t),
        Contender::Discard => discard(l, t),
    }
}

/// This runtime: multishot receive into the shared pool; ping-pong echoes with `send_buf`.
/// `adaptive`: the default adaptive ring depth, or every chunk posted. `RXBENCH_MAX_POSTED=n`
/// fixes the depth instead (`Builder::max_posted`), for experiments.
fn ours(l: TcpListener, t: Arc<Tally>, incremental: bool, adaptive: bool) -> Result<()> {
    let mut b = zcrx::Runtime::builder()
        .chunks(256)
        .chunk_size(32 * 1024)
        .incremental(incremental);
    match std::env::var("RXBENCH_MAX_POSTED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => b = b.max_posted(n),
        None => b = b.adaptive_depth(adaptive),
    }
    if let Some((us, n)) = std::env::var("RXBENCH_COALESCE").ok().and_then(|v| {
        let (a, b) = v.split_once(',')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }) {
        b = b.coalesce(std::time::Duration::from_micros(us), n);
    }
    let rt = b.build().context("starting the runtime")?;
    rt.block_on(async move {
        if let Ok(path) = std::env::var("RXBENCH_STATS") {
            zcrx::spawn(async move {
                loop {
                    zcrx::time::sleep(std::time::Duration::from_millis(500)).await;
                    let _ = std::fs::write(&path, format!("{:?}\n", zcrx::stats()));
                }
            });
        }
        crate::child::ready(&l)?;
        let l = zcrx::net::TcpListener::from_std(l)?;
        loop {
            let (s, _) = l.accept().await?;
            if t.echo() {
                s.set_nodelay(true)?;
            }
            t.accepted();
            let t = t.clone();
            zcrx::spawn(async move {
                while let Ok(Some(b)) = s.recv().await {
                    t.add(b.len());
                    if t.echo() && s.send_buf(b).await.is_err() {
                        break;
                    }
                }
                t.closed();
            });
        }
    })
}

fn tokio_rt(l: TcpListener, t: Arc<Tally>, multi: bool) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    l.set_nonblocking(true)?;
    rt.block_on(async move {
        crate::child::ready(&l)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        loop {
            let (mut s, _) = l.accept().await?;
            if t.echo() {
                s.set_nodelay(true)?;
            }
            t.accepted();
            let t = t.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; CONN_BUF];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            t.add(n);
                            if t.echo() && s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                t.closed();
            });
        }
    })
}

fn tokio_uring_rt(l: TcpListener, t: Arc<Tally>) -> Result<()> {
    tokio_uring::start(async move {
        crate::child::ready(&l)?;
        let l = tokio_uring::net::TcpListener::from_std(l);
        loop {
            let (s, _) = l.accept().await?;
            if t.echo() {
                s.set_nodelay(true)?;
            }
            t.accepted();
            let t = t.clone();
            tokio_uring::spawn(async move {
                let mut buf = Vec::with_capacity(CONN_BUF);
                loop {
                    let (r, b) = s.read(buf).await;
                    buf = b;
                    match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            t.add(n);
                            if t.echo() {
                                let (r, b) = s.write_all(buf).await;
                                buf = b;
                                if r.is_err() {
                                    break;
                                }
                            }
                            buf.clear();
                        }
                    }
                }
                t.closed();
            });
        }
    })
}

fn monoio_rt(l: TcpListener, t: Arc<Tally>) -> Result<()> {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .enable_timer()
        .build()
        .context("starting monoio")?;
    rt.block_on(async move {
        crate::child::ready(&l)?;
        let l = monoio::net::TcpListener::from_std(l)?;
        loop {
            let (mut s, _) = l.accept().await?;
            if t.echo() {
                s.set_nodelay(true)?;
            }
            t.accepted();
            let t = t.clone();
            monoio::spawn(async move {
                let mut buf = Vec::with_capacity(CONN_BUF);
                loop {
                    let (r, b) = s.read(buf).await;
                    buf = b;
                    match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            t.add(n);
                            if t.echo() {
                                let (r, b) = s.write_all(buf).await;
                                buf = b;
                                if r.is_err() {
                                    break;
                                }
                            }
                            buf.clear();
                        }
                    }
                }
                t.closed();
            });
        }
    })
}

/// A thread per connection with blocking reads.
fn std_threads(l: TcpListener, t: Arc<Tally>) -> Result<()> {
    crate::child::ready(&l)?;
    loop {
        let (mut s, _) = l.accept()?;
        if t.echo() {
            s.set_nodelay(true)?;
        }
        t.accepted();
        let t = t.clone();
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = vec![0u8; CONN_BUF];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            t.add(n);
                            if t.echo() && s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                t.closed();
            })?;
    }
}

/// The most [`discard`] drops per `recv`.
pub const DISCARD: usize = 1 << 20;

/// The sender's ceiling: one thread that never sleeps, polling every connection in turn and
/// dropping what arrived without copying it (`MSG_TRUNC` on TCP discards up to `len` bytes from
/// the receive queue). The sender never has to wake it. Ping-pong answers with as many bytes of
/// its own.
fn discard(l: TcpListener, t: Arc<Tally>) -> Result<()> {
    use rustix::net::{recv, RecvFlags};
    use std::io::ErrorKind::WouldBlock;
    crate::child::ready(&l)?;
    l.set_nonblocking(true)?;
    // Never written: with MSG_TRUNC the kernel only needs its length.
    let mut buf = vec![0u8; DISCARD];
    let mut conns: Vec<std::net::TcpStream> = vec![];
    loop {
        // Every pending connection first: one per pass would make 10,000 idle ones quadratic.
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(true)?;
                    if t.echo() {
                        s.set_nodelay(true)?;
                    }
                    t.accepted();
                    conns.push(s);
                }
                Err(e) if e.kind() == WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let mut i = 0;
        while i < conns.len() {
            let r = recv(&conns[i], &mut buf[..], RecvFlags::TRUNC);
            match r {
                Ok((_, n)) if n > 0 => {
                    t.add(n);
                    if t.echo() {
                        let mut out = &buf[..n.min(buf.len())];
                        while !out.is_empty() {
                            match (&conns[i]).write(out) {
                                Ok(k) => out = &out[k..],
                                Err(e) if e.kind() == WouldBlock => std::hint::spin_loop(),
                                Err(_) => break,
                            }
                        }
                    }
                    i += 1;
                }
                Err(rustix::io::Errno::AGAIN) => i += 1,
                // End of stream or an error: this connection is done (the last one's close
                // ends the process).
                _ => {
                    conns.swap_remove(i);
                    t.closed();
                }
            }
        }
    }
}

/// A hand-written io_uring receive loop with the `io-uring` crate: multishot receive into one
/// shared provided buffer ring (256 x 32 KiB), `SINGLE_ISSUER | DEFER_TASKRUN`, CQ 4096. The
/// limit of this mechanism, without any runtime around it.
mod uring_loop {
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;

    use anyhow::Result;
    use io_uring::{opcode, types, IoUring};

    use crate::child::Tally;

    const BUFS: u16 = 256;
    const BUF: usize = 32 * 1024;
    const BGID: u16 = 1;
    const ACCEPT: u64 = 1 << 62;
    const SEND: u64 = 1 << 61;

    pub fn serve(l: TcpListener, t: Arc<Tally>) -> Result<()> {
        let mut ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(4096)
            .build(256)?;
        let mem = vec![0u8; BUFS as usize * BUF].into_boxed_slice();
        let base = mem.as_ptr() as u64;
        // SAFETY: a fresh private anonymous mapping; it lives until the process exits (this
        // loop never returns normally).
        let ring_mem = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                BUFS as usize * 16,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::POPULATE,
            )?
        } as *mut u8;
        // SAFETY: the ring memory and buffers live for the rest of the process.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem as u64, BUFS, BGID, 0)?
        };
        // SAFETY: the tail overlays bytes 14..16 of entry 0 of the live mapping.
        let tail_word = unsafe { AtomicU16::from_ptr(ring_mem.add(14).cast()) };
        let mut tail: u16 = 0;
        let post = |bid: u16, tail: &mut u16| {
            let e = ring_mem.wrapping_add((*tail & (BUFS - 1)) as usize * 16);
            // SAFETY: the slot is inside the mapping and the kernel does not read it until the
            // tail moves past it.
            unsafe {
                e.cast::<u64>().write(base + u64::from(bid) * BUF as u64);
                e.add(8).cast::<u32>().write(BUF as u32);
                e.add(12).cast::<u16>().write(bid);
            }
            *tail = tail.wrapping_add(1);
        };
        for bid in 0..BUFS {
            post(bid, &mut tail);
        }
        tail_word.store(tail, Ordering::Release);
        let lfd = l.as_raw_fd();
        let push = |ring: &mut IoUring, e: io_uring::squeue::Entry| {
            // SAFETY: everything the entries point at (buffers, sockets) outlives them.
            while unsafe { ring.submission().push(&e) }.is_err() {
                ring.submit().expect("submit");
            }
        };
        push(
            &mut ring,
            opcode::AcceptMulti::new(types::Fd(lfd))
                .build()
                .user_data(ACCEPT),
        );
        let mut conns: HashMap<i32, OwnedFd> = HashMap::new();
        let mut starved: Vec<i32> = vec![];
        let mut cqes = Vec::with_capacity(4096);
        ring.submit()?;
        crate::child::ready(&l)?;
        loop {
            ring.submit_and_wait(1)?;
            cqes.extend(
                ring.completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for (ud, res, flags) in cqes.drain(..) {
                let more = io_uring::cqueue::more(flags);
                if ud == ACCEPT {
                    if res >= 0 {
                        // SAFETY: a new fd from the kernel, owned by nobody else.
                        let fd = unsafe { OwnedFd::from_raw_fd(res) };
                        if t.echo() {
                            rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
                        }
                        conns.insert(res, fd);
                        push(
                            &mut ring,
                            opcode::RecvMulti::new(types::Fd(res), BGID)
                                .build()
                                .user_data(res as u64),
                        );
                        t.accepted();
                    }
                    if !more {
                        push(
                            &mut ring,
                            opcode::AcceptMulti::new(types::Fd(lfd))
                                .build()
                                .user_data(ACCEPT),
                        );
                    }
                } else if ud & SEND != 0 {
                    post((ud >> 32) as u16 & (BUFS - 1), &mut tail);
                } else {
                    let fd = ud as i32;
                    if res > 0 {
                        let bid = io_uring::cqueue::buffer_select(flags).expect("buffer id");
                        t.add(res as usize);
                        if t.echo() {
                            let ptr = (base + u64::from(bid) * BUF as u64) as *const u8;
                            let e = opcode::Send::new(types::Fd(fd), ptr, res as u32).build();
                            push(
                                &mut ring,
                                e.user_data(SEND | u64::from(bid) << 32 | fd as u32 as u64),
                            );
                        } else {
                            post(bid, &mut tail);
                        }
                        if !more {
                            push(
                                &mut ring,
                                opcode::RecvMulti::new(types::Fd(fd), BGID)
                                    .build()
                                    .user_data(fd as u64),
                            );
                        }
                    } else if res == -libc::ENOBUFS {
                        starved.push(fd);
                    } else if !more {
                        conns.remove(&fd);
                        t.closed();
                    }
                }
            }
            tail_word.store(tail, Ordering::Release);
            for fd in starved.drain(..) {
                push(
                    &mut ring,
                    opcode::RecvMulti::new(types::Fd(fd), BGID)
                        .build()
                        .user_data(fd as u64),
                );
            }
        }
    }
}
