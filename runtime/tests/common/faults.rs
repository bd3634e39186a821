//! Helpers of the fault and load suite (`faults_*.rs`): position-keyed stream contents, fd
//! counting, and veth pairs between network namespaces that remove themselves.
//!
//! Included with `#[path = "common/faults.rs"] mod faults;` so that it stands alone.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub(crate) use test_kit::pattern::keyed::{check, fill, word};

/// An order-sensitive 64-bit digest (FNV-1a over 8-byte words, then the tail bytes), computed
/// incrementally by sender and receiver alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    h: u64,
    pending: [u8; 8],
    n: usize,
    pub len: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Self {
            h: 0xcbf2_9ce4_8422_2325,
            pending: [0; 8],
            n: 0,
            len: 0,
        }
    }
}

impl Digest {
    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0000_0100_0000_01B3);
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while self.n > 0 && !data.is_empty() {
            self.pending[self.n] = data[0];
            self.n += 1;
            data = &data[1..];
            if self.n == 8 {
                self.n = 0;
                self.mix(u64::from_le_bytes(self.pending));
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().unwrap()));
        }
        for &b in words.remainder() {
            self.pending[self.n] = b;
            self.n += 1;
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        let mut d = *self;
        for k in 0..d.n {
            d.mix(u64::from(d.pending[k]) | 0x100 << (8 * k));
        }
        d.mix(d.len);
        d.h
    }
}

/// Digest of bytes `0..len` of stream `seed`.
pub(crate) fn digest_of(seed: u64, len: u64) -> u64 {
    let mut d = Digest::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut off = 0;
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        fill(seed, off, &mut buf[..n]);
        d.update(&buf[..n]);
        off += n as u64;
    }
    d.finish()
}

/// Open fds of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What the open fds are (for a failure message).
pub(crate) fn fd_summary() -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let t = std::fs::read_link(e.path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = t.split(':').next().unwrap_or("").to_string();
        *kinds.entry(kind).or_default() += 1;
    }
    format!("{kinds:?}")
}

/// Raises the soft fd limit to the hard one (bursts of thousands of connections).
pub(crate) fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.min(1 << 20);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Small deterministic generator for test choices.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        word(0, self.0)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---- network namespaces -----------------------------------------------------------------------

/// Why the veth tests cannot run here, if they cannot.
pub(crate) fn netns_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (creating network namespaces needs CAP_SYS_ADMIN)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("`ip -V` failed: {}", o.status)),
        Err(e) => Some(format!("the `ip` command (iproute2) is missing: {e}")),
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two network namespaces joined by a veth pair: `a` has `addr_a`, `b` has `addr_b`
/// (10.x.y.1 and .2 on a /24). Dropping it deletes both namespaces (and with them the pair),
/// also when the test panicked.
pub(crate) struct VethPair {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub addr_a: std::net::Ipv4Addr,
    pub addr_b: std::net::Ipv4Addr,
}

static PAIRS: AtomicU32 = AtomicU32::new(0);

impl VethPair {
    /// Creates the namespaces and the pair, with unique names (`zf<pid>n<k>a` ...).
    pub(crate) fn new() -> Result<Self, String> {
        let k = PAIRS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("zf{pid}n{k}");
        let net = (pid as u64 * 31 + u64::from(k)) % 250;
        let pair = Self {
            ns_a: format!("{tag}a"),
            ns_b: format!("{tag}b"),
            // Interface names have at most 15 characters.
            if_a: format!("zv{}a", (pid % 100_000) * 100 + k % 100),
            if_b: format!("zv{}b", (pid % 100_000) * 100 + k % 100),
            addr_a: std::net::Ipv4Addr::new(10, 213, net as u8, 1),
            addr_b: std::net::Ipv4Addr::new(10, 213, net as u8, 2),
        };
        // From here on, `pair`'s drop cleans up whatever was made.
        ip(&["netns", "add", &pair.ns_a])?;
        ip(&["netns", "add", &pair.ns_b])?;
        ip(&[
            "link", "add", &pair.if_a, "type", "veth", "peer", "name", &pair.if_b,
        ])?;
        ip(&["link", "set", &pair.if_a, "netns", &pair.ns_a])?;
        ip(&["link", "set", &pair.if_b, "netns", &pair.ns_b])?;
        for (ns, ifn, addr) in [
            (&pair.ns_a, &pair.if_a, pair.addr_a),
            (&pair.ns_b, &pair.if_b, pair.addr_b),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", ifn])?;
            ip(&["-n", ns, "link", "set", ifn, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Takes `b`'s end of the link down or up (a peer that vanishes without a FIN or RST).
    pub(crate) fn set_b_link(&self, up: bool) -> Result<(), String> {
        ip(&[
            "-n",
            &self.ns_b,
            "link",
            "set",
            &self.if_b,
            if up { "up" } else { "down" },
        ])
    }

    /// Whether the namespaces still exist (for the clean-up check).
    pub(crate) fn exists(ns: &str) -> bool {
        std::path::Path::new(&format!("/run/netns/{ns}")).exists()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // The pair may still be in the root namespace if setting up failed half-way.
        let _ = ip(&["link", "del", &self.if_a]);
        let _ = ip(&["netns", "del", &self.ns_a]);
        let _ = ip(&["netns", "del", &self.ns_b]);
    }
}

/// Moves the calling thread into network namespace `ns` (only this thread: sockets it creates
/// from now on live there).
pub(crate) fn enter_netns(ns: &str) -> std::io::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: `f` is an open namespace file; setns affects only the calling thread for
    // CLONE_NEWNET.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `ns`.
pub(crate) fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter_netns(&ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
            f()
        })
        .unwrap()
}
