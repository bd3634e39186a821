//! The `echo`, `proxy` and `sink` example binaries themselves: `--help`, flag validation, and a
//! run of each over loopback (on the backend `RUNTIME_TEST_RX` names: see `common::rx_flags`). `cargo test` builds the examples next to the test binaries; when they are
//! missing or older than their sources (`cargo test --test cli` alone does not build them),
//! these tests are reported as ignored, with the reason.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    connect, echo_upstream, free_port, roundtrip, run_bounded, rx, rx_flags, wait_listening,
    ChildGuard,
};
use examples::Pattern;
use test_kit::{skip, Outcome, Skip};

/// The built example binary if it is there and newer than the sources it is built from, else a
/// skip saying how to build it (a failure where `TEST_TOOLS_REQUIRED` is set, as in CI).
fn example(name: &str) -> Result<PathBuf, Skip> {
    let found = built_example(name);
    if let Err(why) = &found {
        if std::env::var_os("TEST_TOOLS_REQUIRED").is_some() {
            panic!("TEST_TOOLS_REQUIRED is set and {why}");
        }
    }
    found
}

fn built_example(name: &str) -> Result<PathBuf, Skip> {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/cli-HASH -> target/<profile>/examples/NAME
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps/");
    let bin = bin.join("examples").join(name);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The example's own file and the library's (src/).
    let library = std::fs::read_dir(dir.join("src"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let newest_source = std::iter::once(dir.join(format!("{name}.rs")))
        .chain(library)
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max();
    match (built, newest_source) {
        (Ok(b), Some(s)) if b >= s => Ok(bin),
        (Ok(_), _) => Err(skip(format!(
            "{} is older than its sources (run `cargo test -p examples`)",
            bin.display()
        ))),
        (Err(_), _) => Err(skip(format!(
            "{} not built (run `cargo test -p examples`, which builds the examples)",
            bin.display()
        ))),
    }
}

fn run(bin: &PathBuf, args: &[&str]) -> Output {
    run_bounded(Command::new(bin).args(args), Duration::from_secs(20)).expect("run the example")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn help_and_flag_validation() -> Outcome {
    let (proxy, sink) = (example("proxy")?, example("sink")?);
    for (bin, flag) in [(&proxy, "--upstream"), (&sink, "--verify")] {
        let out = run(bin, &["--help"]);
        assert!(out.status.success(), "--help: {}", out.status);
        let help = text(&out.stdout);
        assert!(help.contains("Usage:") && help.contains(flag), "{help}");
    }
    let bad: &[(&PathBuf, &[&str], &str)] = &[
        (&proxy, &["--listen", "127.0.0.1:7000"], "--upstream"),
        (
            &proxy,
            &["--listen", "localhost", "--upstream", "127.0.0.1:1"],
            "has no port",
        ),
        (
            &proxy,
            &["--listen", "127.0.0.1:7000", "--upstream", "127.0.0.1:7000"],
            "connect to itself",
        ),
        (
            &proxy,
            &[
                "--listen",
                "127.0.0.1:7000",
                "--upstream",
                "127.0.0.1:1",
                "--threads",
                "0",
            ],
            "--threads",
        ),
        (
            &proxy,
            &[
                "--listen",
                "127.0.0.1:7000",
                "--upstream",
                "127.0.0.1:1",
                "--conn-limit",
                "8M",
            ],
            "half the pool",
        ),
        (
            &sink,
            &["--listen", "127.0.0.1:9000", "--chunk-size", "5000"],
            "not a power of two",
        ),
        (
            &sink,
            &["--listen", "127.0.0.1:9000", "--chunks", "0"],
            "expected 1 to",
        ),
        (
            &sink,
            &["--listen", "127.0.0.1:9000", "--verify", "x"],
            "not a 64-bit seed",
        ),
        (
            &sink,
            &["--listen", "127.0.0.1:9000", "--duration", "0"],
            "positive number",
        ),
        (
            &sink,
            &["--listen", "127.0.0.1:9000", "--connections", "0"],
            "--connections",
        ),
        (
            &sink,
            &["--listen", "127.0.0.1:9000", "--max-posted", "0"],
            "--max-posted",
        ),
        (
            &sink,
            &[
                "--listen",
                "127.0.0.1:9000",
                "--max-posted",
                "32",
                "--all-posted",
            ],
            "cannot be used with",
        ),
        (&sink, &["--generate", "1M"], "--verify"),
        (
            &sink,
            &["--listen", "127.0.0.1:9000", "--iperf3", "--verify", "1"],
            "cannot be used with",
        ),
        (&sink, &[], "--listen"),
    ];
    for (bin, args, needle) in bad {
        let out = run(bin, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
    }
    Ok(())
}

fn sink_binary_generates_and_verifies() -> Outcome {
    let sink = example("sink")?;
    // --generate writes exactly the pattern.
    let out = run(&sink, &["--verify", "0x2a", "--generate", "100000"]);
    assert!(out.status.success());
    assert!(
        out.stdout == Pattern::bytes(42, 100_000),
        "--generate output"
    );

    // Two connections, one corrupted: both reported, summary, exit status 1.
    let port = free_port();
    let mut child = ChildGuard::spawn(
        Command::new(&sink)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--threads", "2"])
            .args(["--verify", "42", "--connections", "2"])
            .args(rx_flags())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        wait_listening(port, Duration::from_secs(10)),
        "sink listens"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let good = Pattern::bytes(42, 8 << 20);
    let mut bad = good.clone();
    bad[1234] ^= 1;
    for data in [&good, &bad] {
        let mut s = connect(addr);
        s.write_all(data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
    }
    let out = child
        .wait_output(Duration::from_secs(30))
        .expect("the sink exits after 2 connections");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout} {}", text(&out.stderr));
    let receives_with = format!("receives with the {}", rx::expected_backend());
    assert_eq!(
        text(&out.stderr).matches(&receives_with).count(),
        2,
        "both threads on the backend asked for: {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("8388608 bytes") && stdout.contains(", verified"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VERIFICATION FAILED: byte 1234 "),
        "{stdout}"
    );
    assert!(
        stdout.contains("summary (connections finished): 2 connection(s), 16777216 bytes")
            && stdout.contains("verification: 1 passed, 1 failed"),
        "{stdout}"
    );

    // --duration: stops by itself, exit status 0 when everything verified.
    let port = free_port();
    let mut child = ChildGuard::spawn(
        Command::new(&sink)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--verify", "7"])
            .args(["--duration", "1.5", "--interval", "0.5"])
            .args(rx_flags())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        wait_listening(port, Duration::from_secs(10)),
        "sink listens"
    );
    let mut s = connect(format!("127.0.0.1:{port}").parse().unwrap());
    s.write_all(&Pattern::bytes(7, 1 << 20)).unwrap();
    drop(s);
    let out = child
        .wait_output(Duration::from_secs(15))
        .expect("the sink stops after --duration");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("MB/s"), "{stdout}");
    assert!(
        stdout.contains("summary (duration elapsed): 1 connection(s), 1048576 bytes"),
        "{stdout}"
    );
    Ok(())
}

fn proxy_binary_forwards() -> Outcome {
    let proxy = example("proxy")?;
    let (up, upstream) = echo_upstream(3);
    let port = free_port();
    let _child = ChildGuard::spawn(
        Command::new(&proxy)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &up.to_string(), "--threads", "2"])
            .args(rx_flags())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_listening(port, Duration::from_secs(10)),
        "proxy listens"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for i in 0..3 {
        let data = Pattern::bytes(i, 4 << 20);
        assert!(roundtrip(addr, data.clone()) == data, "connection {i}");
    }
    upstream.join().unwrap();
    Ok(())
}

/// `echo` takes `--listen ADDR:PORT` like `sink` and `proxy`; its older `--addr` and `--port`
/// still work (hidden from `--help`) and override the parts of `--listen`.
fn echo_listen_spellings() -> Outcome {
    let echo = example("echo")?;
    let help = run_bounded(Command::new(&echo).arg("--help"), Duration::from_secs(20)).unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--listen <ADDR:PORT>"), "{help}");
    assert!(
        !help.contains("--addr") && !help.contains("--port"),
        "{help}"
    );
    let port = free_port();
    let mut child = ChildGuard::spawn(
        Command::new(&echo)
            .args(["--listen", "127.0.0.1:1", "--port", &port.to_string()])
            .args(["--addr", "127.0.0.1"])
            .args(rx_flags())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = child.child().stderr.take().expect("piped");
    let first = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stderr)
            .read_line(&mut line)
            .unwrap();
        line
    };
    assert!(
        first.contains(&format!("listening on 127.0.0.1:{port}")),
        "the old flags set the address: {first:?}"
    );
    Ok(())
}

/// The echo binary sends back every byte of several concurrent connections, on both of its
/// threads.
fn echo_binary_echoes() -> Outcome {
    let echo = example("echo")?;
    let port = free_port();
    let mut child = ChildGuard::spawn(
        Command::new(&echo)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--threads", "2"])
            .args(rx_flags())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    // Each thread says which backend it receives with just before it listens. (The port
    // itself is no sign: the binary binds it once at start to fail early, then lets it go.)
    let stderr = child.child().stderr.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let receives_with = format!("receives with the {}", rx::expected_backend());
    let mut said = Vec::new();
    while said
        .iter()
        .filter(|l: &&String| l.contains("receives with"))
        .count()
        < 2
    {
        said.push(
            lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("the echo threads did not start: {said:?}")),
        );
    }
    assert_eq!(
        said.iter().filter(|l| l.contains(&receives_with)).count(),
        2,
        "both threads on the backend asked for: {said:?}"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "echo listens"
    );
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = Pattern::bytes(100 + i, 4 << 20);
                assert!(roundtrip(addr, data.clone()) == data, "connection {i}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    Ok(())
}

/// zcrx without CAP_NET_ADMIN: `--backend zcrx` fails at start-up with a message that names the
/// capability and the ways to get it; auto mode falls back to the buffer ring and says so once,
/// however many threads start. Bad `--zcrx` values are refused before anything starts; `nodev`
/// is accepted, and auto mode falls back from it the same way where the kernel lacks it.
fn zcrx_privilege_and_fallback() -> Outcome {
    let sink = example("sink")?;
    let bad = [
        ("lo", "not IFNAME:QUEUE"),
        ("lo/x:1", "contains '/'"),
        ("averyveryverylongname:0", "15"),
        ("lo:x", "not a queue number"),
        (":1", "empty"),
    ];
    for (value, why) in bad {
        let out = run(&sink, &["--listen", "127.0.0.1:1", "--zcrx", value]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--zcrx {value}: {err}");
        assert!(
            err.contains(why),
            "--zcrx {value}: expected '{why}' in: {err}"
        );
    }
    let out = run(&sink, &["--listen", "127.0.0.1:1", "--backend", "zcrx"]);
    assert!(
        text(&out.stderr).contains("--zcrx"),
        "--backend zcrx without --zcrx says what is missing"
    );
    // `--zcrx nodev` is accepted. In auto mode it runs where the kernel has it (7.1+, as root),
    // and elsewhere falls back to the buffer ring, saying why once.
    let listen = format!("127.0.0.1:{}", free_port());
    let out = run(
        &sink,
        &[
            "--listen",
            &listen,
            "--zcrx",
            "nodev",
            "--threads",
            "2",
            "--duration",
            "0.2",
        ],
    );
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "--zcrx nodev in auto mode serves: {err}"
    );
    if err.contains("falling back to the provided buffer ring") {
        assert_eq!(err.matches("falling back").count(), 1, "said once: {err}");
        assert!(
            err.contains("7.1") || err.contains("CAP_NET_ADMIN"),
            "and why: {err}"
        );
        assert_eq!(
            err.matches("receives with the buffer ring").count(),
            2,
            "{err}"
        );
    } else {
        assert_eq!(
            err.matches("receives with the zcrx without a device (copy)")
                .count(),
            2,
            "{err}"
        );
    }

    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(setpriv) = setpriv else {
        return Err(skip(
            "setpriv (util-linux) is not installed: the privilege part needs it",
        ));
    };
    let no_net_admin = |args: &[&str]| {
        let mut c = Command::new(setpriv);
        c.args(["--inh-caps=-net_admin", "--bounding-set=-net_admin", "--"])
            .arg(&sink)
            .args(args);
        run_bounded(&mut c, Duration::from_secs(20)).expect("run sink under setpriv")
    };
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");

    let out = no_net_admin(&[
        "--listen",
        &listen,
        "--zcrx",
        "lo:0",
        "--backend",
        "zcrx",
        "--duration",
        "0.2",
    ]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "zcrx without CAP_NET_ADMIN must fail: {err}"
    );
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("root") && err.contains("setcap"),
        "the message names the capability and the ways to get it: {err}"
    );

    let out = no_net_admin(&[
        "--listen",
        &listen,
        "--zcrx",
        "lo:0",
        "--threads",
        "2",
        "--duration",
        "0.2",
    ]);
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "auto mode falls back and serves: {err}"
    );
    assert_eq!(
        err.matches("falling back to the provided buffer ring")
            .count(),
        1,
        "the fallback is said once for both threads: {err}"
    );
    assert!(err.contains("CAP_NET_ADMIN"), "and says why: {err}");
    assert_eq!(
        err.matches("receives with the buffer ring").count(),
        2,
        "both threads use the buffer ring: {err}"
    );
    Ok(())
}

test_kit::main!(
    help_and_flag_validation,
    sink_binary_generates_and_verifies,
    proxy_binary_forwards,
    echo_listen_spellings,
    echo_binary_echoes,
    zcrx_privilege_and_fallback,
);
