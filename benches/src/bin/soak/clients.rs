//! The load: bulk, echo, hold and churn clients, each on its own thread, checking every byte
//! and count the server answers.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;

use super::*;

pub(super) fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

pub(super) fn fail(c: &Counters, what: impl std::fmt::Display) {
    if c.errors.fetch_add(1, Ordering::AcqRel) < 10 {
        eprintln!("soak: client error: {what}");
    }
}

/// Sends `len` bytes, half-closes, and checks the count the server answers.
pub(super) fn send_counted(
    addr: SocketAddr,
    len: u64,
    block: &[u8],
    stop: &AtomicBool,
) -> Result<bool> {
    let mut s = TcpStream::connect(addr)?;
    let mut left = len;
    while left > 0 {
        if stop.load(Ordering::Acquire) {
            return Ok(false); // cut short: the server sees a plain close
        }
        let n = left.min(block.len() as u64) as usize;
        s.write_all(&block[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut answer = [0u8; 8];
    s.read_exact(&mut answer)?;
    let got = u64::from_le_bytes(answer);
    if got != len {
        bail!("sent {len} bytes, the server counted {got}");
    }
    Ok(true)
}

pub(super) fn bulk_client(addr: SocketAddr, i: u32, c: &Counters, stop: &AtomicBool) {
    let block = vec![0x5a; 256 * 1024];
    let mut seed = 0x1234_5678 + u64::from(i);
    while !stop.load(Ordering::Acquire) {
        seed = xorshift(seed);
        let len = (1 << 20) + seed % (63 << 20);
        match send_counted(addr, len, &block, stop) {
            Ok(true) => {
                c.bulk_bytes.fetch_add(len, Ordering::AcqRel);
                c.bulk_conns.fetch_add(1, Ordering::AcqRel);
            }
            Ok(false) => {}
            Err(e) => fail(c, format!("bulk: {e:#}")),
        }
    }
}

pub(super) fn hold_client(addr: SocketAddr, c: &Counters, stop: &AtomicBool) {
    let block = vec![0xa5; 64 * 1024];
    while !stop.load(Ordering::Acquire) {
        match send_counted(addr, 4 << 20, &block, stop) {
            Ok(true) => {
                c.hold_bytes.fetch_add(4 << 20, Ordering::AcqRel);
            }
            Ok(false) => {}
            Err(e) => fail(c, format!("hold: {e:#}")),
        }
    }
}

pub(super) fn echo_client(addr: SocketAddr, i: u32, c: &Counters, stop: &AtomicBool) {
    let run = || -> Result<()> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let mut seed = 0xdead_beef + u64::from(i);
        let mut back = vec![0u8; 16 * 1024];
        let mut msg = vec![0u8; 16 * 1024];
        while !stop.load(Ordering::Acquire) {
            seed = xorshift(seed);
            let len = 1 + (seed % (16 * 1024)) as usize;
            for (j, b) in msg[..len].iter_mut().enumerate() {
                *b = (seed as usize + j) as u8;
            }
            s.write_all(&msg[..len])?;
            s.read_exact(&mut back[..len])?;
            if back[..len] != msg[..len] {
                bail!("echo: a reply of {len} bytes differs from the request");
            }
            c.echo_trips.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    };
    if let Err(e) = run() {
        fail(c, format!("echo: {e:#}"));
    }
}

pub(super) fn churn_client(addr: SocketAddr, c: &Counters, stop: &AtomicBool) {
    let block = vec![0x3c; 64 * 1024];
    let mut seed = 0x0bad_cafe_u64;
    while !stop.load(Ordering::Acquire) {
        seed = xorshift(seed);
        let r = match seed % 4 {
            // A short, well-behaved connection.
            0 => send_counted(addr, 10 * 1024, &block, stop).map(|_| ()),
            // Reset in the middle of a stream.
            1 => (|| {
                let mut s = TcpStream::connect(addr)?;
                s.write_all(&block[..(seed % 65536) as usize])?;
                rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO))?;
                c.resets.fetch_add(1, Ordering::AcqRel);
                Ok(())
            })(),
            // Half-close, then vanish without reading the answer.
            2 => (|| {
                let mut s = TcpStream::connect(addr)?;
                s.write_all(&block[..1000])?;
                s.shutdown(Shutdown::Write)?;
                Ok(())
            })(),
            // Connect and vanish.
            _ => TcpStream::connect(addr).map(drop).map_err(Into::into),
        };
        match r {
            Ok(()) => {
                c.churn_conns.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => fail(c, format!("churn: {e:#}")),
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

// ---- process figures ------------------------------------------------------------------------
