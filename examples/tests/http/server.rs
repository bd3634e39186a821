//! The example binary: found or built, and run as a server on one runtime or the other.

use super::*;

/// The built example, next to this test binary (target/<dir>/deps/http-HASH ->
/// target/<dir>/examples/http), built now if it is missing or older than its sources.
pub(crate) fn http_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    // Where cargo cannot run (the Linux 7.x guest), the binary is named instead.
    if let Some(p) = std::env::var_os("HTTP_EXAMPLE") {
        let p = PathBuf::from(p);
        *built = Some(p.clone());
        return p;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<dir>");
    let bin = dir.join("examples").join("http");
    let fresh = || {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let newest = ["http.rs", "src/lib.rs", "src/sink.rs", "Cargo.toml"]
            .iter()
            .filter_map(|f| {
                std::fs::metadata(src.join(f))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .max();
        match (std::fs::metadata(&bin).and_then(|m| m.modified()), newest) {
            (Ok(b), Some(s)) => b >= s,
            _ => false,
        }
    };
    if !fresh() {
        // The profile `cargo test` builds the examples with: `test` in target/debug, `release`
        // (`--release`) in target/release.
        let profile = if dir.ends_with("release") {
            "release"
        } else {
            "test"
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building the http example (profile {profile})");
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "examples",
                "--example",
                "http",
                "--profile",
                profile,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --example http: {status}");
        assert!(fresh(), "{} is still missing or stale", bin.display());
    }
    *built = Some(bin.clone());
    bin
}

/// Which runtime the example serves on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    Zcrx,
    Tokio,
}

impl On {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            On::Zcrx => "zcrx",
            On::Tokio => "tokio",
        }
    }
}

/// The example running in a child process; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: ChildGuard,
    pub(crate) addr: SocketAddr,
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts it with `threads` threads (`taskset -c CPUS` first if `cpus` is given) and waits
    /// until every thread listens.
    pub(crate) fn start(on: On, threads: usize, cpus: Option<&str>) -> Self {
        let bin = http_binary();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = match cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", c]).arg(&bin);
                cmd
            }
            None => Command::new(&bin),
        };
        cmd.args(["--listen", &addr.to_string(), "--on", on.flag()])
            .args(["--threads", &threads.to_string()]);
        if on == On::Zcrx {
            cmd.args(rx_flags());
        }
        let mut child = ChildGuard::spawn(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let pipe = child.child().stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel::<String>();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        // Each thread says so once its listener is bound (the binary binds the port once at
        // start to fail early, then lets it go: a listening port is no sign).
        let mut listening = 0;
        while listening < threads {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!(
                        "the http example did not start: {:?}",
                        stderr.lock().unwrap()
                    )
                });
            if line.contains(" listens") {
                if on == On::Zcrx {
                    let want = format!("receives with the {}", rx::expected_backend());
                    assert!(line.contains(&want), "{line:?}: expected {want:?}");
                }
                listening += 1;
            }
        }
        Self {
            child,
            addr,
            stderr,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn pid(&mut self) -> i32 {
        self.child.child().id() as i32
    }

    /// SIGTERM, then the exit status within `limit`, and what it said on stderr.
    pub(crate) fn stop(mut self, limit: Duration) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = self
            .child
            .wait_timeout(limit)
            .unwrap_or_else(|| panic!("the http example did not stop within {limit:?}"));
        // The reader thread sees the pipe close with the process.
        std::thread::sleep(Duration::from_millis(50));
        let said = self.stderr.lock().unwrap().clone();
        (status, said)
    }
}
