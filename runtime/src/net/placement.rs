//! Connections on the thread of the CPU, or of the receive queue, that received them.
//!
//! With one listener per thread on a port (`SO_REUSEPORT`), the kernel picks a listener by a
//! hash of the connection: a connection whose packets the NIC steers to CPU 1 may be accepted by
//! the thread on CPU 0, and then every receive crosses cores. A classic BPF program attached to
//! the reuseport group (`SO_ATTACH_REUSEPORT_CBPF`) can pick the listener instead: it reads the
//! CPU that is handling the connection's first packet (`SKF_AD_CPU`) and returns the index of
//! the listener of the thread pinned there. Listeners are indexed in the order they started
//! listening, so [`ListenerGroup`] makes them all, in thread order, before any thread runs, and
//! hands thread `i` its own.
//!
//! Under zcrx the queue decides, not the CPU: the bytes of a connection land in the area of the
//! queue its flow is steered to, and only the thread that registered that queue can receive
//! them. The program then reads the receive queue of the first packet (`SKF_AD_QUEUE`: the
//! skb's `queue_mapping`, which a driver that records its receive queue sets to the queue's
//! index + 1) and returns the listener of the thread serving that queue; the accepted
//! connection's `SO_INCOMING_NAPI_ID` ([`TcpStream::incoming_napi_id`](super::TcpStream::incoming_napi_id))
//! is then the NAPI id of that queue.

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
    route: Route,
    sockets: Mutex<Vec<Option<OwnedFd>>>,
}

/// What the group's program picks a listener by.
#[derive(Debug)]
enum Route {
    /// `cpus[i]`: the CPU whose connections listener `i` gets.
    Cpu(Vec<usize>),
    /// `queues[i]`: the receive queue whose connections listener `i` gets.
    Queue(Vec<u32>),
}

impl ListenerGroup {
    /// Binds and listens on `addr` once per entry of `cpus` (`cpus[i]` is the CPU thread `i`
    /// runs on), all with `SO_REUSEPORT`, and attaches the program that gives a connection
    /// received on `cpus[i]` to listener `i`. A connection received on a CPU not in `cpus` goes
    /// by the kernel's hash, as without the program. Port 0 picks one port for all of them.
    pub fn bind_by_cpu(addr: impl ToSocketAddrs, cpus: &[usize]) -> io::Result<Self> {
        let keys = cpus
            .iter()
            .map(|&c| u32::try_from(c).map_err(|_| too_many()))
            .collect::<io::Result<Vec<u32>>>()?;
        Self::bind(
            addr,
            "bind_by_cpu",
            libc::SKF_AD_CPU,
            &keys,
            Route::Cpu(cpus.to_vec()),
        )
    }

    /// Binds and listens on `addr` once per entry of `queues` (`queues[i]` is the receive queue
    /// thread `i` serves, as with [`Builder::zcrx_queue`](crate::Builder::zcrx_queue), where
    /// thread `i` registers queue `first + i`), all with `SO_REUSEPORT`, and attaches the
    /// program that gives a connection whose first packet arrived on `queues[i]` to listener
    /// `i`. A connection received on another queue, or through a driver that does not record
    /// its receive queue (loopback), goes by the kernel's hash, as without the program. Port 0
    /// picks one port for all of them.
    ///
    /// Check it with [`TcpStream::incoming_napi_id`](super::TcpStream::incoming_napi_id)
    /// against the queue's NAPI id (`zcrx_ifq::nic::read(ifname)?.rx_queue(q)?.napi_id`).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use zcrx::net::ListenerGroup;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// // Thread i registers zcrx queue 4 + i of eth0, and accepts what that queue receives.
    /// let builder = zcrx::Runtime::builder().threads(2).zcrx_queue("eth0", 4);
    /// let queues = builder.zcrx_queues().expect("a zcrx queue target");
    /// let group = Arc::new(ListenerGroup::bind_by_queue("0.0.0.0:7000", &queues)?);
    /// builder.run(move |i| {
    ///     let group = group.clone();
    ///     async move {
    ///         let listener = group.listener(i)?;
    ///         while let Ok((stream, _)) = listener.accept().await {
    ///             // Its bytes arrive in this thread's zcrx area.
    ///             zcrx::spawn(async move { drop(stream) });
    ///         }
    ///         Ok::<_, std::io::Error>(())
    ///     }
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn bind_by_queue(addr: impl ToSocketAddrs, queues: &[u32]) -> io::Result<Self> {
        // A received skb's `queue_mapping` is its receive queue + 1 (`skb_record_rx_queue`),
        // 0 when the driver recorded none: 0 must fall through to the hash.
        let keys = queues
            .iter()
            .map(|&q| q.checked_add(1).ok_or_else(too_many))
            .collect::<io::Result<Vec<u32>>>()?;
        Self::bind(
            addr,
            "bind_by_queue",
            libc::SKF_AD_QUEUE,
            &keys,
            Route::Queue(queues.to_vec()),
        )
    }

    fn bind(
        addr: impl ToSocketAddrs,
        what: &str,
        field: i32,
        keys: &[u32],
        route: Route,
    ) -> io::Result<Self> {
        if keys.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ListenerGroup::{what} needs at least one thread"),
            ));
        }
        // Checked before any socket is made.
        let program = match_program(field, keys)?;
        let mut addr = resolve(addr)?;
        let mut sockets = Vec::with_capacity(keys.len());
        for _ in keys {
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
        let first = sockets[0].as_ref().expect("just made");
        crate::sys::attach_reuseport_cbpf(first, &program)?;
        Ok(Self {
            addr,
            route,
            sockets: Mutex::new(sockets),
        })
    }

    /// The address every listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `cpus()[i]`: the CPU whose connections listener `i` gets (empty for a group
    /// [by queue](Self::bind_by_queue)).
    pub fn cpus(&self) -> &[usize] {
        match &self.route {
            Route::Cpu(c) => c,
            Route::Queue(_) => &[],
        }
    }

    /// `queues()[i]`: the receive queue whose connections listener `i` gets (empty for a group
    /// [by CPU](Self::bind_by_cpu)).
    pub fn queues(&self) -> &[u32] {
        match &self.route {
            Route::Queue(q) => q,
            Route::Cpu(_) => &[],
        }
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

/// The classic BPF program: `A = field; if A == keys[i] return i; ...; return n` (an index past
/// the group: the kernel's hash decides). `field` is an ancillary load (`SKF_AD_CPU`,
/// `SKF_AD_QUEUE`).
fn match_program(field: i32, keys: &[u32]) -> io::Result<Vec<libc::sock_filter>> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let n = u32::try_from(keys.len()).map_err(|_| too_many())?;
    // Two instructions per key, plus the load and the fallback; classic BPF allows 4096.
    if keys.len() > 2000 {
        return Err(too_many());
    }
    let mut p = vec![stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        (libc::SKF_AD_OFF + field) as u32,
    )];
    for (i, &key) in keys.iter().enumerate() {
        // Equal: fall through to the return; else jump over it.
        p.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: key,
        });
        p.push(stmt(libc::BPF_RET | libc::BPF_K, i as u32));
    }
    p.push(stmt(libc::BPF_RET | libc::BPF_K, n));
    Ok(p)
}

fn too_many() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "too many threads, or a CPU or queue number too large, for one reuseport program",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program the way the kernel's classic BPF interpreter would, for the few
    /// instructions it uses.
    fn run(p: &[libc::sock_filter], field: i32, value: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let i = p[pc];
            let code = u32::from(i.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                assert_eq!(i.k, (libc::SKF_AD_OFF + field) as u32);
                a = value;
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
        let cpu = libc::SKF_AD_CPU;
        let p = match_program(cpu, &[3, 0, 7]).unwrap();
        assert_eq!(run(&p, cpu, 3), 0);
        assert_eq!(run(&p, cpu, 0), 1);
        assert_eq!(run(&p, cpu, 7), 2);
        for other in [1, 2, 4, 8, 100] {
            assert_eq!(run(&p, cpu, other), 3, "cpu {other}: past the group");
        }
        assert!(match_program(cpu, &vec![0; 2001]).is_err());
    }

    /// What `bind_by_queue` attaches: queue q is `queue_mapping` q + 1, and 0 (no queue
    /// recorded) goes to the hash.
    #[test]
    fn each_queue_to_its_listener_unrecorded_to_the_hash() {
        let queue = libc::SKF_AD_QUEUE;
        let keys: Vec<u32> = [2u32, 3].iter().map(|q| q + 1).collect();
        let p = match_program(queue, &keys).unwrap();
        assert_eq!(run(&p, queue, 2 + 1), 0);
        assert_eq!(run(&p, queue, 3 + 1), 1);
        for other in [0, 1, 2, 5] {
            assert_eq!(
                run(&p, queue, other),
                2,
                "queue_mapping {other}: past the group"
            );
        }
    }
}
