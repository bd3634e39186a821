//! A measurement, not a check (ignored by default): the sink's receive loop
//! ([`examples::sink_connection`]) takes 1 GiB over loopback from a std sender, alternately on
//! the buffer ring and on zcrx without a device, and prints per pair the wall time and the
//! receiving thread's CPU time per GiB, then the medians and their ratios. What `RxBackend::Auto`
//! does with `zcrx_nodev` follows from these figures (`docs/runtime.md`).
//!
//! ```sh
//! cargo run -p guest -- test -p examples --test nodev_vs_bufring -- --ignored --nocapture
//! ```
//!
//! `NODEV_PAIRS` (default 7) sets the number of pairs, `NODEV_GIB` (default 1) the GiB per run.

use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};

use zcrx::net::TcpListener;
use zcrx::{Builder, RxBackend};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    BufRing,
    Nodev,
}

fn builder(b: Backend) -> Builder {
    let builder = Builder::new();
    match b {
        Backend::BufRing => builder.rx_backend(RxBackend::BufRing),
        Backend::Nodev => builder.rx_backend(RxBackend::Zcrx).zcrx_nodev(),
    }
}

/// Pins the calling thread to the `i`-th CPU it may use (receiver and sender apart, as
/// `rxbench` does).
fn pin(i: usize) {
    // The process's CPUs, read before the first pin narrows what new threads inherit.
    static CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    let cpus = CPUS.get_or_init(|| {
        let set = rustix::thread::sched_getaffinity(None).unwrap();
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect()
    });
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpus[i % cpus.len()]);
    rustix::thread::sched_setaffinity(None, &one).unwrap();
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall writing into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One transfer of `bytes` into the sink loop: (wall time, receiver CPU time).
fn run(b: Backend, bytes: u64) -> (Duration, Duration) {
    let rt = builder(b).build().expect("the runtime starts");
    rt.block_on(async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            pin(1);
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let buf = vec![0x5au8; 256 * 1024];
            let mut sent = 0;
            while sent < bytes {
                let n = (bytes - sent).min(buf.len() as u64) as usize;
                s.write_all(&buf[..n]).unwrap();
                sent += n as u64;
            }
        });
        let (s, _) = l.accept().await.unwrap();
        let (t0, c0) = (Instant::now(), thread_cpu());
        let live = AtomicU64::new(0);
        let report = examples::sink_connection(&s, None, &live).await;
        let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
        sender.join().unwrap();
        assert!(report.error.is_none(), "{report}");
        assert_eq!(report.bytes, bytes);
        (wall, cpu)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn nodev_against_bufring_per_gib() -> Outcome {
    if let Err(e) = builder(Backend::Nodev).build() {
        return Err(skip(format!(
            "zcrx without a device is not available here: {e}"
        )));
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let pairs = env("NODEV_PAIRS", 7);
    let gib = env("NODEV_GIB", 1).max(1);
    let bytes = gib << 30;
    pin(0);
    // A warm-up of each, not counted.
    run(Backend::BufRing, bytes / 8);
    run(Backend::Nodev, bytes / 8);
    let (mut wall_ratio, mut cpu_ratio) = (Vec::new(), Vec::new());
    let (mut bw, mut bc, mut nw, mut nc) = (vec![], vec![], vec![], vec![]);
    for i in 0..pairs {
        // Alternate which goes first.
        let order = if i % 2 == 0 {
            [Backend::BufRing, Backend::Nodev]
        } else {
            [Backend::Nodev, Backend::BufRing]
        };
        let mut got = [(Duration::ZERO, Duration::ZERO); 2];
        for b in order {
            got[(b == Backend::Nodev) as usize] = run(b, bytes);
        }
        let per_gib = |d: Duration| d.as_secs_f64() / gib as f64;
        let [(bufw, bufc), (nodw, nodc)] = got;
        eprintln!(
            "pair {i}: buffer ring {:.3} s/GiB wall, {:.3} s/GiB CPU; nodev {:.3} s/GiB wall, \
             {:.3} s/GiB CPU; nodev/bufring wall {:.3}, CPU {:.3}",
            per_gib(bufw),
            per_gib(bufc),
            per_gib(nodw),
            per_gib(nodc),
            nodw.as_secs_f64() / bufw.as_secs_f64(),
            nodc.as_secs_f64() / bufc.as_secs_f64(),
        );
        wall_ratio.push(nodw.as_secs_f64() / bufw.as_secs_f64());
        cpu_ratio.push(nodc.as_secs_f64() / bufc.as_secs_f64());
        bw.push(per_gib(bufw));
        bc.push(per_gib(bufc));
        nw.push(per_gib(nodw));
        nc.push(per_gib(nodc));
    }
    eprintln!(
        "medians of {pairs} pairs, {gib} GiB each: buffer ring {:.3} s/GiB wall, {:.3} s/GiB \
         receiver CPU; nodev {:.3} s/GiB wall, {:.3} s/GiB receiver CPU; nodev/bufring per \
         pair: wall {:.3}, CPU {:.3}",
        median(bw),
        median(bc),
        median(nw),
        median(nc),
        median(wall_ratio),
        median(cpu_ratio)
    );
    Ok(())
}

test_kit::main!(
    #[ignore = "a measurement of about a minute in a guest: run with --ignored"]
    nodev_against_bufring_per_gib,
);
