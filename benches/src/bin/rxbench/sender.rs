//! The one sender every contender faces, in the parent process, pinned to its own CPU.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};

/// Writes as fast as possible on `flows` connections for `secs`, then closes them.
pub fn bulk(addr: SocketAddr, flows: usize, secs: f64) -> io::Result<u64> {
    let mut conns = Vec::with_capacity(flows);
    for _ in 0..flows {
        let s = TcpStream::connect(addr)?;
        s.set_nonblocking(flows > 1)?;
        conns.push(s);
    }
    let buf = vec![0x5au8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    if flows == 1 {
        let mut s = &conns[0];
        while Instant::now() < deadline {
            s.write_all(&buf)?;
            sent += buf.len() as u64;
        }
    } else {
        while Instant::now() < deadline {
            let mut fds: Vec<PollFd<'_>> = conns
                .iter()
                .map(|c| PollFd::new(c, PollFlags::OUT))
                .collect();
            poll(
                &mut fds,
                Some(&rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                }),
            )?;
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().contains(PollFlags::OUT))
                .collect();
            drop(fds);
            for (mut c, r) in conns.iter().zip(ready) {
                if !r {
                    continue;
                }
                match c.write(&buf) {
                    Ok(n) => sent += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    drop(conns);
    Ok(sent)
}

/// `conns` connections each send a `msg`-byte message and wait for it to come back, for `secs`.
/// Returns completed round trips.
pub fn ping_pong(addr: SocketAddr, conns: usize, msg: usize, secs: f64) -> io::Result<u64> {
    struct Conn {
        s: TcpStream,
        out: usize,
        back: usize,
    }
    let mut cs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        cs.push(Conn {
            s,
            out: msg,
            back: 0,
        });
    }
    let payload = vec![0xa5u8; msg];
    let mut rbuf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut trips = 0u64;
    while Instant::now() < deadline {
        let mut fds: Vec<PollFd<'_>> = cs
            .iter()
            .map(|c| {
                PollFd::new(
                    &c.s,
                    if c.out > 0 {
                        PollFlags::OUT
                    } else {
                        PollFlags::IN
                    },
                )
            })
            .collect();
        poll(
            &mut fds,
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            }),
        )?;
        let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);
        for (c, r) in cs.iter_mut().zip(ready) {
            if r.is_empty() {
                continue;
            }
            if c.out > 0 {
                match (&c.s).write(&payload[msg - c.out..]) {
                    Ok(n) => c.out -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if c.out == 0 {
                match (&c.s).read(&mut rbuf) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "receiver closed",
                        ))
                    }
                    Ok(n) => {
                        c.back += n;
                        if c.back >= msg {
                            c.back -= msg;
                            trips += 1;
                            c.out = msg;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(trips)
}

/// Opens `n` idle connections; returns them (closing them is the caller's business).
pub fn idle(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpStream>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TcpStream::connect(addr)?);
    }
    Ok(v)
}

/// Keeps the borrow checker honest about `AsFd` for `&TcpStream`.
#[allow(dead_code)]
fn _assert_asfd(s: &TcpStream) -> impl AsFd + '_ {
    s
}
