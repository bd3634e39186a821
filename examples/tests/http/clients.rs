//! The clients: curl and wrk, run bounded, and what they report.

use super::*;

pub(crate) fn tools() -> Outcome {
    require_tools(&[("curl", "curl"), ("wrk", "wrk")])
}

/// A scratch directory, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("zcrx-http-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    pub(crate) fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs curl (HTTP/1.1, failing on HTTP errors) with `args`; returns its stdout.
pub(crate) fn curl(args: &[&str]) -> Vec<u8> {
    let out = run_bounded(
        Command::new("curl")
            .args(["-sS", "--fail", "--http1.1", "--max-time", "120"])
            .args(args),
        Duration::from_secs(150),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Asserts `got == want` without printing megabytes: says where they first differ.
pub(crate) fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes, expected {}; first difference at byte {at}",
        got.len(),
        want.len()
    );
}

/// What wrk reported.
#[derive(Debug, Default)]
pub(crate) struct Wrk {
    pub(crate) requests: u64,
    pub(crate) per_second: f64,
    /// connect, read, write, timeout (all zero when wrk prints no "Socket errors" line).
    pub(crate) socket_errors: [u64; 4],
    pub(crate) non_2xx: u64,
    pub(crate) text: String,
}

pub(crate) fn wrk(args: &[&str], url: &str, limit: Duration) -> Wrk {
    let mut cmd = Command::new("wrk");
    cmd.args(args).arg(url);
    wrk_cmd(&mut cmd, limit)
}

pub(crate) fn wrk_cmd(cmd: &mut Command, limit: Duration) -> Wrk {
    let out = run_bounded(cmd, limit).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk: {}: {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut w = Wrk {
        text: text.clone(),
        ..Wrk::default()
    };
    for line in text.lines().map(str::trim) {
        if let Some((n, _)) = line.split_once(" requests in ") {
            w.requests = n.trim().parse().expect("wrk's request count");
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            w.per_second = rest.trim().parse().expect("wrk's requests/sec");
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for (i, part) in rest.split(',').enumerate().take(4) {
                w.socket_errors[i] = part
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .expect("wrk's socket error counts");
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = rest.trim().parse().expect("wrk's non-2xx count");
        }
    }
    w
}
