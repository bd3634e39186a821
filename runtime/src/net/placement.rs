//! Connections on the thread of the CPU that received them.
//!
//! With one listener per thread on a port (`SO_REUSEPORT`), the kernel picks a listener by a
//! hash of the connection: a connection whose packets the NIC steers to CPU 1 may be accepted by
//! the thread on CPU 0, and then every receive crosses cores. A classic BPF program attached to
//! the reuseport group (`SO_ATTACH_REUSEPORT_CBPF`) can pick the listener instead: it reads the
//! CPU that is handling the connection's first packet (`SKF_AD_CPU`) and returns the index of
//! the listener of the thread pinned there. Listeners are indexed in the order they started
//! listening, so [`ListenerGroup`] makes them all, in thread order, before any thread runs, and
//! hands thread `i` its own.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use rustix::net::sockopt;

use super::{new_socket, resolve, to_std, TcpListener};

/// One listening socket per runtime thread on one address, with connections going to the
/// thread whose CPU received them (checked with [`TcpStream::incoming_cpu`](super::TcpStream::incoming_cpu)).
///
/// Made before the runtime threads start, shared with them (it is `Sync`), and each thread takes
/// its listener once:
///
/// ```no_run
/// use std::sync::Arc;
/// use zcrx::net::ListenerGroup;
///
/// # fn main() -> std::io::Result<()> {
/// let builder = zcrx::Runtime::builder().threads(2);
/// // The CPU each thread is pinned to (threads are pinned by default).
/// let cpus = builder.pinned_cpus().expect("pinned threads");
/// let group = Arc::new(ListenerGroup::bind_by_cpu("0.0.0.0:7000", &cpus)?);
/// builder.run(move |i| {
///     let group = group.clone();
///     async move {
///         let listener = group.listener(i)?;
///         while let Ok((stream, _)) = listener.accept().await {
///             // The connection arrived on this thread's CPU.
///             zcrx::spawn(async move { drop(stream) });
///         }
///         Ok::<_, std::io::Error>(())
///     }
/// })?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ListenerGroup {
    addr: SocketAddr,
    cpus: Vec<usize>,
    sockets: Mutex<Vec<Option<OwnedFd>>>,
}

impl ListenerGroup {
    /// Binds and listens on `addr` once per entry of `cpus` (`cpus[i]` is the CPU thread `i`
    /// runs on), all with `SO_REUSEPORT`, and attaches the program that gives a connection
    /// received on `cpus[i]` to listener `i`. A connection received on a CPU not in `cpus` goes
    /// by the kernel's hash, as without the program. Port 0 picks one port for all of them.
    pub fn bind_by_cpu(addr: impl ToSocketAddrs, cpus: &[usize]) -> io::Result<Self> {
        if cpus.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ListenerGroup::bind_by_cpu needs at least one CPU",
            ));
        }
        let mut addr = resolve(addr)?;
        let mut sockets = Vec::with_capacity(cpus.len());
        for _ in cpus {
            let fd = new_socket(&addr)?;
            sockopt::set_socket_reuseaddr(&fd, true)?;
            sockopt::set_socket_reuseport(&fd, true)?;
            rustix::net::bind(&fd, &addr)?;
            // In this order the group indexes them: listener i is index i.
            rustix::net::listen(&fd, 1024)?;
            if addr.port() == 0 {
                addr = to_std(rustix::net::getsockname(&fd)?)?;
            }
            sockets.push(Some(fd));
        }
        let program = cpu_program(cpus)?;
        let first = sockets[0].as_ref().expect("just made");
        crate::sys::attach_reuseport_cbpf(first, &program)?;
        Ok(Self {
            addr,
            cpus: cpus.to_vec(),
            sockets: Mutex::new(sockets),
        })
    }

    /// The address every listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CPU whose connections listener `i` gets.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Listener `i`, for the runtime of thread `i`: call it inside that runtime, once. Fails
    /// outside a runtime, for an index past the group, or the second time.
    pub fn listener(&self, i: usize) -> io::Result<TcpListener> {
        crate::context::check()?;
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let n = sockets.len();
        let slot = sockets.get_mut(i).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listener {i} of a group of {n}"),
            )
        })?;
        let fd = slot.take().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("listener {i} of the group was taken already"),
            )
        })?;
        Ok(TcpListener::from_fd(fd))
    }
}

/// The classic BPF program: `A = cpu; if A == cpus[i] return i; ...; return n` (an index past
/// the group: the kernel's hash decides).
fn cpu_program(cpus: &[usize]) -> io::Result<Vec<libc::sock_filter>> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let n = u32::try_from(cpus.len()).map_err(|_| too_many())?;
    // Two instructions per CPU, plus the load and the fallback; classic BPF allows 4096.
    if cpus.len() > 2000 {
        return Err(too_many());
    }
    let mut p = vec![stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
    )];
    for (i, &cpu) in cpus.iter().enumerate() {
        let cpu = u32::try_from(cpu).map_err(|_| too_many())?;
        // Equal: fall through to the return; else jump over it.
        p.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: cpu,
        });
        p.push(stmt(libc::BPF_RET | libc::BPF_K, i as u32));
    }
    p.push(stmt(libc::BPF_RET | libc::BPF_K, n));
    Ok(p)
}

fn too_many() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "too many CPUs for one reuseport program",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program the way the kernel's classic BPF interpreter would, for the few
    /// instructions it uses.
    fn run(p: &[libc::sock_filter], cpu: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let i = p[pc];
            let code = u32::from(i.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                assert_eq!(i.k, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32);
                a = cpu;
                pc += 1;
            } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                pc += 1 + usize::from(if a == i.k { i.jt } else { i.jf });
            } else if code == libc::BPF_RET | libc::BPF_K {
                return i.k;
            } else {
                panic!("unexpected instruction {code:#x}");
            }
        }
    }

    #[test]
    fn each_cpu_to_its_listener_the_rest_to_the_hash() {
        let p = cpu_program(&[3, 0, 7]).unwrap();
        assert_eq!(run(&p, 3), 0);
        assert_eq!(run(&p, 0), 1);
        assert_eq!(run(&p, 7), 2);
        for other in [1, 2, 4, 8, 100] {
            assert_eq!(run(&p, other), 3, "cpu {other}: past the group");
        }
        assert!(cpu_program(&vec![0; 2001]).is_err());
    }
}
