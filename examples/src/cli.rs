//! `clap` value parsers shared by the examples, with messages that say what is expected.

use std::net::{SocketAddr, ToSocketAddrs};

/// `ADDR:PORT` or `HOST:PORT` (resolved now; the first address is used).
pub fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!(
            "'{s}' has no port: expected ADDR:PORT, e.g. 127.0.0.1:7000 or [::1]:7000"
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("'{s}' resolved to no address")),
        Err(e) => Err(format!(
            "'{s}' is not ADDR:PORT and does not resolve as HOST:PORT ({e})"
        )),
    }
}

/// A receive chunk size: a power of two from 4096 to 1048576 bytes; accepts a `K`/`M`
/// suffix (`32K`, `1M`).
pub fn chunk_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1024),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' is not a number of bytes (e.g. 32768 or 32K)"))?;
    let n = n
        .checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    let (min, max) = (
        zcrx_ifq::area::MIN_CHUNK_SIZE,
        zcrx_ifq::area::MAX_CHUNK_SIZE,
    );
    if !n.is_power_of_two() || !(min..=max).contains(&n) {
        return Err(format!(
            "{n} bytes is not a power of two from {min} to {max} (4K .. 1M)"
        ));
    }
    Ok(n)
}

/// Receive chunks per thread: 1 to 32768 (the largest buffer ring).
pub fn chunks(s: &str) -> Result<usize, String> {
    let max = zcrx_ifq::bufring::MAX_ENTRIES;
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if !(1..=max).contains(&n) {
        return Err(format!("{n} chunks: expected 1 to {max}"));
    }
    Ok(n)
}

/// A positive number of seconds (fractions allowed).
pub fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 1e9) {
        return Err(format!("'{s}': expected a positive number of seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

/// Where zcrx receives: `nodev` (zcrx without a device, Linux 7.1+), or a NIC receive queue,
/// `IFNAME:QUEUE` (`eth0:4`): the interface name is checked the way the kernel will (1 to
/// 15 bytes, no `/`, no whitespace, no NUL), the queue is a number.
pub fn zcrx_target(s: &str) -> Result<zcrx::ZcrxTarget, String> {
    if s == "nodev" {
        return Ok(zcrx::ZcrxTarget::NoDevice);
    }
    let Some((name, queue)) = s.rsplit_once(':') else {
        return Err(format!(
            "'{s}' is not IFNAME:QUEUE (e.g. eth0:4; `ethtool -l IFNAME` shows the queues) \
             or nodev (zcrx without a device)"
        ));
    };
    zcrx_ifq::zcrx::validate_ifname(name).map_err(|e| e.to_string())?;
    let queue = queue
        .parse()
        .map_err(|_| format!("'{queue}' in '{s}' is not a queue number"))?;
    Ok(zcrx::ZcrxTarget::Queue {
        ifname: name.to_string(),
        queue,
    })
}

/// Sends the `tracing` events of the runtime (`zcrx`) and the interface queue (`zcrx_ifq`)
/// to stderr, filtered by `RUST_LOG` (default `info`: warnings such as a fallback to the
/// buffer ring, and what a shutdown left behind). `RUST_LOG=zcrx=debug` also shows which
/// receive backend each runtime thread chose and why; `RUST_LOG=zcrx=trace` every pause,
/// cap and depth change. Call once, first thing in `main`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (or another subscriber already installed) changes nothing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// The runtime flags `echo`, `proxy` and `sink` share; [`builder`](Self::builder) applies
/// them.
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Runtime threads (one listener each, SO_REUSEPORT), 1 to 256.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Receive chunks per thread (1 to 32768).
    #[arg(long, default_value = "256", value_parser = chunks)]
    pub chunks: usize,
    /// Receive chunk size in bytes: a power of two from 4096 to 1048576 (K and M suffixes work).
    #[arg(long, default_value = "32K", value_parser = chunk_size)]
    pub chunk_size: usize,
    /// Receive with zcrx on this NIC queue (IFNAME:QUEUE; thread i uses QUEUE + i; needs a
    /// zcrx-capable NIC with header/data split and flow steering), or without a device
    /// (nodev: Linux 7.1+, any TCP socket, the kernel copies). Either needs CAP_NET_ADMIN.
    #[arg(long, value_name = "IFNAME:QUEUE|nodev", value_parser = zcrx_target)]
    pub zcrx: Option<zcrx::ZcrxTarget>,
    /// Receive backend: auto tries zcrx on --zcrx (a NIC queue or nodev) and falls back to
    /// the buffer ring, saying why once; without --zcrx it runs the buffer ring.
    #[arg(long, value_enum, default_value = "auto", requires_if("zcrx", "zcrx"))]
    pub backend: Backend,
    /// Fix how many chunks the buffer ring keeps posted at once (default: the runtime adapts
    /// it every loop turn); the rest wait in the pool, most recently used first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          conflicts_with = "all_posted")]
    pub max_posted: Option<u32>,
    /// Keep every chunk posted to the buffer ring, as a plain buffer ring does.
    #[arg(long)]
    pub all_posted: bool,
}

impl RuntimeArgs {
    /// A runtime builder with these threads, pool and backend.
    pub fn builder(&self) -> zcrx::Builder {
        let mut b = zcrx::Runtime::builder()
            .threads(self.threads.into())
            .chunks(self.chunks)
            .chunk_size(self.chunk_size)
            .rx_backend(self.backend.into())
            .adaptive_depth(!self.all_posted && self.max_posted.is_none());
        if let Some(n) = self.max_posted {
            b = b.max_posted(n);
        }
        match &self.zcrx {
            Some(target) => b.zcrx(target.clone()),
            None => b,
        }
    }
}

/// The receive backend, for `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// zcrx on `--zcrx` if the kernel, NIC and privileges allow it, else the buffer ring
    /// (saying why, once).
    Auto,
    /// The provided buffer ring (copies into the pool; works on every NIC).
    Bufring,
    /// zcrx on `--zcrx` (a NIC queue or nodev), or fail.
    Zcrx,
}

impl From<Backend> for zcrx::RxBackend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => zcrx::RxBackend::Auto,
            Backend::Bufring => zcrx::RxBackend::BufRing,
            Backend::Zcrx => zcrx::RxBackend::Zcrx,
        }
    }
}

/// A 64-bit seed, decimal or `0x` hexadecimal.
pub fn seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a 64-bit seed (decimal or 0x hex)"))
}

/// A byte count with an optional `K`, `M` or `G` suffix (powers of 1024).
pub fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a byte count (e.g. 1048576, 512K, 100M, 2G)"))
}
