//! `benchmark_zcrx_vs_tokio`: requests per second and CPU time of the two side by side.

use super::*;

/// CPU time (user + system) of a process so far, from /proc.
pub(crate) fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(f.iter().sum::<u64>() * 1000 / hz)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Busy time of all CPUs so far (user, nice, system, irq, softirq, steal), from /proc/stat.
pub(crate) fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4) // idle, iowait
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// CPU time of this process's reaped children so far.
pub(crate) fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, u.as_mut_ptr());
        u.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One measurement: a fresh server, wrk against it.
pub(crate) struct Measured {
    pub(crate) per_second: f64,
    /// The server's CPU time over the wall time of the wrk run.
    pub(crate) server_cpu: f64,
    /// CPU time neither the server nor wrk used (other processes; interrupts), likewise.
    pub(crate) others_cpu: f64,
}

pub(crate) fn measure(
    on: On,
    path: &str,
    conns: u64,
    secs: u64,
    server_cpu: &str,
    client_cpu: &str,
) -> Measured {
    std::thread::sleep(Duration::from_millis(500));
    let mut server = Server::start(on, 1, Some(server_cpu));
    let pid = server.pid();
    let before = (
        cpu_time(pid),
        children_cpu(),
        machine_busy(),
        Instant::now(),
    );
    let w = wrk_cmd(
        Command::new("taskset")
            .args(["-c", client_cpu, "wrk", "-t1"])
            .arg(format!("-c{conns}"))
            .arg(format!("-d{secs}s"))
            .arg(server.url(path)),
        Duration::from_secs(secs + 30),
    );
    let wall = before.3.elapsed().as_secs_f64();
    let server_time = cpu_time(pid).saturating_sub(before.0);
    let wrk_time = children_cpu().saturating_sub(before.1);
    let busy = machine_busy().saturating_sub(before.2);
    let (status, said) = server.stop(Duration::from_secs(10));
    assert!(status.success(), "{on:?}: exit {status}: {said:?}");
    assert!(
        w.requests > 0 && w.socket_errors == [0; 4] && w.non_2xx == 0,
        "{on:?} {path}: {}",
        w.text
    );
    Measured {
        per_second: w.per_second,
        server_cpu: server_time.as_secs_f64() / wall,
        others_cpu: busy.saturating_sub(server_time + wrk_time).as_secs_f64() / wall,
    }
}

/// Requests per second of the same hyper server on this runtime and on tokio current_thread,
/// one thread each, the server pinned to CPU 0 and wrk (`-t1 -c64 -d3s`) to CPU 1, for `GET /`
/// and for 64 KiB bodies. The contenders alternate round by round (ABBA: zcrx first in even
/// rounds); a fresh server for each measurement, 500 ms apart. The machine is shared: a pair
/// during which other processes (and interrupts) used more than a tenth of a core is measured
/// again 10 s later, up to 5 times. Prints a Markdown table: medians, ranges, the median of
/// the per-round ratios, and the server's CPU use.
///
/// `HTTP_BENCH_ROUNDS` (7), `HTTP_BENCH_SECONDS` (3), `HTTP_BENCH_CONNS` (64),
/// `HTTP_BENCH_SERVER_CPU` (0), `HTTP_BENCH_CLIENT_CPU` (1) and `HTTP_BENCH_MAX_OTHERS` (0.1,
/// of a core) change it.
pub(crate) fn benchmark_zcrx_vs_tokio() -> Outcome {
    tools()?;
    let rounds: usize = env_or("HTTP_BENCH_ROUNDS", 7);
    let secs: u64 = env_or("HTTP_BENCH_SECONDS", 3);
    let conns: u64 = env_or("HTTP_BENCH_CONNS", 64);
    let server_cpu: String = env_or("HTTP_BENCH_SERVER_CPU", "0".to_string());
    let client_cpu: String = env_or("HTTP_BENCH_CLIENT_CPU", "1".to_string());
    let max_others: f64 = env_or("HTTP_BENCH_MAX_OTHERS", 0.1);
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; run with --release for figures worth keeping");
    }
    let http = http_binary();
    eprintln!(
        "{}, {rounds} rounds, wrk -t1 -c{conns} -d{secs}s on CPU {client_cpu}, server on CPU {server_cpu}",
        http.display()
    );
    let paths = ["/", "/bytes/65536"];
    // [path][contender] -> per-round requests/s and server CPU share.
    let mut rps = vec![[Vec::new(), Vec::new()]; paths.len()];
    let mut cpu = vec![[Vec::new(), Vec::new()]; paths.len()];
    let mut redone = 0;
    // [path] -> per round: still disturbed after the last attempt.
    let mut busy = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [On::Zcrx, On::Tokio]
        } else {
            [On::Tokio, On::Zcrx]
        };
        for (p, path) in paths.iter().enumerate() {
            let mut attempt = 0;
            let pair = loop {
                let pair = order.map(|on| {
                    let m = measure(on, path, conns, secs, &server_cpu, &client_cpu);
                    eprintln!(
                        "round {round} {path} {on:?}: {:.0} requests/s, server CPU {:.0}%, \
                         others {:.0}%",
                        m.per_second,
                        m.server_cpu * 100.0,
                        m.others_cpu * 100.0
                    );
                    (on, m)
                });
                let disturbed = pair.iter().any(|(_, m)| m.others_cpu > max_others);
                if !disturbed || attempt == 5 {
                    break (pair, disturbed);
                }
                attempt += 1;
                redone += 1;
                eprintln!(
                    "round {round} {path}: other processes were busy; measuring again in 10 s"
                );
                std::thread::sleep(Duration::from_secs(10));
            };
            let (pair, disturbed) = pair;
            for (on, m) in pair {
                let c = usize::from(on == On::Tokio);
                rps[p][c].push(m.per_second);
                cpu[p][c].push(m.server_cpu);
            }
            busy[p].push(disturbed);
        }
    }
    println!();
    println!("| request | zcrx median (min-max) | tokio median (min-max) | zcrx/tokio, median of rounds (min-max) | server CPU zcrx / tokio |");
    println!("|---|---:|---:|---:|---:|");
    for (p, path) in paths.iter().enumerate() {
        let [z, t] = &rps[p];
        let ratios: Vec<f64> = z.iter().zip(t).map(|(a, b)| a / b).collect();
        let range = |v: &[f64]| {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            (lo, hi)
        };
        let (zl, zh) = range(z);
        let (tl, th) = range(t);
        let (rl, rh) = range(&ratios);
        println!(
            "| `GET {path}` | {:.0} ({zl:.0}-{zh:.0}) | {:.0} ({tl:.0}-{th:.0}) | {:.2}x ({rl:.2}-{rh:.2}) | {:.0}% / {:.0}% |",
            median(z),
            median(t),
            median(&ratios),
            median(&cpu[p][0]) * 100.0,
            median(&cpu[p][1]) * 100.0,
        );
    }
    println!();
    println!(
        "pairs measured again because other processes were busy: {redone}; \
         * marks rounds still disturbed after 5 attempts (kept)"
    );
    for (p, path) in paths.iter().enumerate() {
        let fmt = |v: &[f64]| {
            v.iter()
                .zip(&busy[p])
                .map(|(x, b)| format!("{x:.0}{}", if *b { "*" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!();
        println!("{path} per round, zcrx: {}", fmt(&rps[p][0]));
        println!("{path} per round, tokio: {}", fmt(&rps[p][1]));
    }
    Ok(())
}
