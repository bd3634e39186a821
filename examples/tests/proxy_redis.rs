//! The proxy in front of a real redis-server: redis-benchmark (50 connections, pipelined
//! request/response) and redis-cli through it, with the data checked end to end.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use test_kit::Outcome;

use common::{connect, free_port, require_tools, run_bounded, wait_listening, ChildGuard, Proxy};
use examples::Pattern;

const REQUESTS: u64 = 20_000;

fn redis_cli(port: u16, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut cmd);
    if let Some(data) = stdin {
        let mut w = child.child().stdin.take().unwrap();
        let data = data.to_vec();
        // Written from a thread, so a large value cannot dead-lock against stdout.
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let out = child
        .wait_output(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("redis-cli {args:?} did not finish within 30 s"));
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One RESP command over a plain socket; returns the raw reply (read until it is complete).
fn resp(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let mut s = connect(addr);
    let mut req = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        req.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        req.extend_from_slice(p);
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).unwrap();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).expect("read a redis reply");
        assert!(n > 0, "redis closed the connection mid-reply");
        reply.extend_from_slice(&buf[..n]);
        if reply_complete(&reply) {
            return reply;
        }
    }
}

fn reply_complete(r: &[u8]) -> bool {
    let Some(eol) = r.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match r[0] {
        b'$' => {
            let len: i64 = std::str::from_utf8(&r[1..eol]).unwrap().parse().unwrap();
            len < 0 || r.len() >= eol + 2 + len as usize + 2
        }
        _ => true,
    }
}

fn proxy_carries_redis_benchmark() -> Outcome {
    require_tools(&[
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-tools"),
        ("redis-cli", "redis-tools"),
    ])?;
    let port = free_port();
    let _server = ChildGuard::spawn(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_listening(port, Duration::from_secs(10)),
        "redis-server did not listen on {port}"
    );
    let direct: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let proxy = Proxy::start(direct, 2);
    let pport = proxy.addr.port();

    // A real client through the proxy.
    assert_eq!(redis_cli(pport, &["ping"], None), b"PONG\n");

    // The benchmark through the proxy: every test completes, without an error.
    let out = run_bounded(
        Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &pport.to_string()])
            .args(["-n", &REQUESTS.to_string(), "-c", "50", "-q", "--csv"])
            .args(["-t", "set,get,incr,lpush,lpop"]),
        Duration::from_secs(180),
    )
    .expect("redis-benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {} {stdout} {stderr}",
        out.status
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.to_ascii_lowercase().contains("error"),
            "redis-benchmark reported an error: {stdout} {stderr}"
        );
    }
    let mut seen = Vec::new();
    for line in stdout.lines().filter(|l| !l.starts_with("\"test\"")) {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        if fields.len() < 2 {
            continue;
        }
        let rps: f64 = fields[1]
            .parse()
            .unwrap_or_else(|_| panic!("no requests/s in {line:?}"));
        assert!(rps > 0.0, "{line}");
        eprintln!(
            "redis-benchmark through the proxy: {} {rps:.0} requests/s",
            fields[0]
        );
        seen.push(fields[0].to_string());
    }
    for t in ["SET", "GET", "INCR", "LPUSH", "LPOP"] {
        assert!(
            seen.iter().any(|s| s.starts_with(t)),
            "no result for {t} in: {stdout}"
        );
    }
    // Every INCR went through exactly once (redis-benchmark increments one key without -r).
    let counter = redis_cli(pport, &["get", "counter:__rand_int__"], None);
    assert_eq!(
        String::from_utf8_lossy(&counter).trim(),
        REQUESTS.to_string(),
        "INCR count"
    );

    // A 1 MiB text value with redis-cli: set through the proxy, read back through it and
    // directly.
    let text: Vec<u8> = Pattern::bytes(7, 1 << 20)
        .iter()
        .map(|b| {
            b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[*b as usize % 62]
        })
        .collect();
    assert_eq!(
        redis_cli(pport, &["-x", "set", "big"], Some(&text)),
        b"OK\n"
    );
    let mut got = redis_cli(pport, &["get", "big"], None);
    assert_eq!(got.pop(), Some(b'\n'));
    assert!(got == text, "1 MiB value read through the proxy differs");
    let mut got = redis_cli(port, &["get", "big"], None);
    assert_eq!(got.pop(), Some(b'\n'));
    assert!(got == text, "1 MiB value read directly differs");

    // A 1 MiB binary value (every byte value) over raw RESP, through the proxy both ways.
    let binary = Pattern::bytes(8, 1 << 20);
    assert_eq!(resp(proxy.addr, &[b"SET", b"bin", &binary]), b"+OK\r\n");
    for addr in [proxy.addr, direct] {
        let reply = resp(addr, &[b"GET", b"bin"]);
        let head = format!("${}\r\n", binary.len()).into_bytes();
        assert!(reply.starts_with(&head), "GET bin via {addr}: bad header");
        assert!(
            reply[head.len()..reply.len() - 2] == binary[..] && reply.ends_with(b"\r\n"),
            "GET bin via {addr}: the value differs"
        );
    }

    assert!(
        proxy.wait_idle(Duration::from_secs(10)),
        "proxy connections still open: {}",
        proxy.counters.active()
    );
    let c = &proxy.counters;
    assert_eq!(c.connect_failures.load(Ordering::Acquire), 0);
    assert_eq!(
        c.errors.load(Ordering::Acquire),
        0,
        "connections ended with errors"
    );
    eprintln!(
        "proxy: {} connections, {} bytes to redis, {} bytes back",
        c.finished.load(Ordering::Acquire),
        c.to_upstream.load(Ordering::Acquire),
        c.to_client.load(Ordering::Acquire)
    );
    proxy.stop_clean();
    Ok(())
}

test_kit::main!(proxy_carries_redis_benchmark,);
