//! Reading the guest's serial console: the init's markers, and what libtest printed between
//! them. Everything here works on text, so it is tested without booting.

use std::collections::BTreeSet;

/// A marker line of the init, `@@guest:<nonce>@@ <kind> ...`.
#[derive(Debug, Clone, PartialEq)]
pub enum Marker {
    /// The guest is up: its `uname -r` and uptime.
    Boot {
        /// `uname -r`
        release: String,
        /// seconds since the guest's kernel started
        uptime: f64,
    },
    /// Program `i` starts.
    Start {
        /// index
        i: usize,
        /// guest uptime
        uptime: f64,
    },
    /// Program `i` ran past its time limit and was killed.
    Timeout {
        /// index
        i: usize,
        /// the limit, in seconds
        secs: u64,
    },
    /// Program `i` (a libtest binary) lists this test.
    Listed {
        /// index
        i: usize,
        /// test name
        name: String,
    },
    /// Program `i` exited with this status (128 + signal if killed).
    Exit {
        /// index
        i: usize,
        /// exit status
        code: i32,
        /// guest uptime
        uptime: f64,
    },
    /// Every program has run; the guest powers off.
    Done,
}

/// Finds the marker in a console line, if it has one. The text before the marker (output that
/// did not end in a newline) is returned too.
pub fn parse_marker<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, Marker)> {
    let at = line.find(prefix)?;
    let before = &line[..at];
    let rest = line[at + prefix.len()..].trim();
    let mut f = rest.split_whitespace();
    let kind = f.next()?;
    let num = |s: Option<&str>| s.and_then(|s| s.parse::<f64>().ok());
    let idx = |s: Option<&str>| s.and_then(|s| s.parse::<usize>().ok());
    let m = match kind {
        "boot" => Marker::Boot {
            release: f.next()?.to_string(),
            uptime: num(f.next()).unwrap_or(0.0),
        },
        "start" => Marker::Start {
            i: idx(f.next())?,
            uptime: num(f.next()).unwrap_or(0.0),
        },
        "timeout" => Marker::Timeout {
            i: idx(f.next())?,
            secs: f.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        },
        "listed" => {
            let i = idx(f.next())?;
            // The name is the rest of the line after "listed <i> ".
            let after_kind = rest["listed".len()..].trim_start();
            let name = after_kind[after_kind.find(char::is_whitespace)?..].trim();
            if name.is_empty() {
                return None;
            }
            Marker::Listed {
                i,
                name: name.to_string(),
            }
        }
        "exit" => Marker::Exit {
            i: idx(f.next())?,
            code: f.next()?.parse().ok()?,
            uptime: num(f.next()).unwrap_or(0.0),
        },
        "done" => Marker::Done,
        _ => return None,
    };
    Some((before, m))
}

/// libtest's closing line: `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0
/// filtered out; finished in 0.01s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// `ok.` rather than `FAILED.`
    pub ok: bool,
    /// passed
    pub passed: u64,
    /// failed
    pub failed: u64,
    /// ignored
    pub ignored: u64,
    /// filtered out
    pub filtered: u64,
}

/// Parses a libtest summary line.
pub fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (verdict, counts) = rest.split_once(". ")?;
    let ok = match verdict {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    let mut s = Summary {
        ok,
        ..Summary::default()
    };
    for part in counts.split(';') {
        let part = part.trim();
        let Some((n, what)) = part.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => s.passed = n,
            "failed" => s.failed = n,
            "ignored" => s.ignored = n,
            "filtered out" => s.filtered = n,
            _ => {}
        }
    }
    Some(s)
}

/// What one program printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// Its start marker was seen.
    pub started: bool,
    /// Its exit status, if its exit marker was seen.
    pub exit: Option<i32>,
    /// It was killed at its time limit (seconds).
    pub timed_out: Option<u64>,
    /// Guest seconds from start to exit.
    pub secs: Option<f64>,
    /// It printed `running N tests`: a libtest binary.
    pub libtest: bool,
    /// Its last libtest summary.
    pub summary: Option<Summary>,
    /// Tests reported `ok`.
    pub ok_tests: Vec<String>,
    /// Tests reported `FAILED` (or named in the closing `failures:` list).
    pub failed_tests: Vec<String>,
    /// Tests reported `ignored`.
    pub ignored_tests: Vec<String>,
    /// Tests listed but never reported (it stopped before they finished), or, without a list,
    /// those libtest said had been running for over 60 seconds.
    pub unfinished: Vec<String>,
    listed: Vec<String>,
    slow: Vec<String>,
    in_failures_list: bool,
}

impl RunReport {
    fn line(&mut self, line: &str) {
        let t = line.trim_end();
        if let Some(s) = parse_summary(t) {
            self.summary = Some(s);
            self.libtest = true;
            self.in_failures_list = false;
            return;
        }
        if t.starts_with("running ") && (t.ends_with(" tests") || t.ends_with(" test")) {
            self.libtest = true;
            return;
        }
        if t == "failures:" {
            // The second "failures:" section is the list of names; the first holds output.
            self.in_failures_list = true;
            return;
        }
        if self.in_failures_list {
            if let Some(name) = t.strip_prefix("    ") {
                if !name.starts_with(' ') && !name.is_empty() {
                    push_unique(&mut self.failed_tests, name);
                }
                return;
            }
            if t.starts_with("---- ") || !t.is_empty() {
                self.in_failures_list = false;
            }
        }
        let Some(rest) = t.strip_prefix("test ") else {
            return;
        };
        if let Some(name) = rest.strip_suffix(" has been running for over 60 seconds") {
            push_unique(&mut self.slow, name);
            return;
        }
        let Some((name, result)) = rest.split_once(" ... ") else {
            return;
        };
        // libtest-mimic pads names into a column and writes `ignored (reason)`.
        let name = name.trim_end();
        let result = result.trim();
        if result == "ok" {
            push_unique(&mut self.ok_tests, name);
        } else if result == "FAILED" {
            push_unique(&mut self.failed_tests, name);
        } else if result == "ignored"
            || result.starts_with("ignored, ")
            || result.starts_with("ignored (")
        {
            push_unique(&mut self.ignored_tests, name);
        }
    }

    fn finish(&mut self) {
        let done: BTreeSet<&String> = self
            .ok_tests
            .iter()
            .chain(&self.failed_tests)
            .chain(&self.ignored_tests)
            .collect();
        let source = if self.listed.is_empty() {
            &self.slow
        } else {
            &self.listed
        };
        self.unfinished = source
            .iter()
            .filter(|n| !done.contains(n))
            .cloned()
            .collect();
    }

    /// Whether this program passed: it exited 0 in time and, if it is a libtest binary, its
    /// summary says `ok`.
    pub fn passed(&self, expect_libtest: bool) -> bool {
        let exited_zero = self.exit == Some(0) && self.timed_out.is_none();
        let summary_ok = match self.summary {
            Some(s) => s.ok,
            // A test target without libtest (`harness = false`) prints no summary.
            None => !self.libtest || !expect_libtest,
        };
        exited_zero && summary_ok
    }

    /// (passed, failed, ignored) tests. A failed program with no failed test to its name counts
    /// as one failure, so that a crash is never `0 failed`.
    pub fn counts(&self, expect_libtest: bool) -> (u64, u64, u64) {
        let (p, mut f, i) = match self.summary {
            Some(s) => (s.passed, s.failed, s.ignored),
            None => (
                self.ok_tests.len() as u64,
                (self.failed_tests.len() + self.unfinished.len()) as u64,
                self.ignored_tests.len() as u64,
            ),
        };
        if f == 0 && !self.passed(expect_libtest) {
            f = 1;
        }
        (p, f, i)
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// The whole console, read back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleReport {
    /// The guest's `uname -r` and the uptime at which the init started, if it did.
    pub boot: Option<(String, f64)>,
    /// One per program, in order.
    pub runs: Vec<RunReport>,
    /// The init reached its end.
    pub done: bool,
}

/// Reads the console text (`\r\n` or `\n` lines) for `n` programs, given the marker prefix.
pub fn parse_console(text: &str, prefix: &str, n: usize) -> ConsoleReport {
    let mut rep = ConsoleReport {
        runs: vec![RunReport::default(); n],
        ..ConsoleReport::default()
    };
    let mut current: Option<usize> = None;
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        let (before, marker) = match parse_marker(line, prefix) {
            Some((b, m)) => (b, Some(m)),
            None => (line, None),
        };
        if let Some(i) = current {
            if marker.is_none() || !before.is_empty() {
                rep.runs[i].line(before);
            }
        }
        let Some(m) = marker else { continue };
        match m {
            Marker::Boot { release, uptime } => rep.boot = Some((release, uptime)),
            Marker::Start { i, uptime } if i < n => {
                rep.runs[i].started = true;
                rep.runs[i].secs = Some(-uptime);
                current = Some(i);
            }
            Marker::Timeout { i, secs } if i < n => rep.runs[i].timed_out = Some(secs),
            Marker::Listed { i, name } if i < n => push_unique(&mut rep.runs[i].listed, &name),
            Marker::Exit { i, code, uptime } if i < n => {
                let r = &mut rep.runs[i];
                r.exit = Some(code);
                r.secs = r.secs.map(|s| s + uptime);
                current = None;
            }
            Marker::Done => rep.done = true,
            _ => {}
        }
    }
    for r in &mut rep.runs {
        if r.exit.is_none() {
            r.secs = None;
        }
        r.finish();
    }
    rep
}

/// Drops terminal control sequences (the firmware clears the screen) from console bytes before
/// they are echoed, keeping text, newlines and tabs.
pub fn strip_control(input: &[u8], state: &mut EscState) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        match *state {
            EscState::Text => match b {
                0x1b => *state = EscState::Esc,
                b'\n' | b'\t' | b'\r' => out.push(b),
                0..=0x1f | 0x7f => {}
                _ => out.push(b),
            },
            EscState::Esc => {
                *state = if b == b'[' {
                    EscState::Csi
                } else {
                    EscState::Text
                }
            }
            EscState::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    *state = EscState::Text;
                }
            }
        }
    }
    out
}

/// Passes console bytes through for live display, except the init's `listed` marker lines (the
/// names of every test of a binary that timed out: only the unfinished ones matter, and the
/// summary names those). A partial line is shown at once unless it may become a marker.
#[derive(Debug, Clone)]
pub struct EchoFilter {
    hidden: Vec<u8>,
    line: Vec<u8>,
    shown: usize,
}

impl EchoFilter {
    /// A filter for the marker prefix `prefix`.
    pub fn new(prefix: &str) -> EchoFilter {
        EchoFilter {
            hidden: format!("{prefix} listed ").into_bytes(),
            line: Vec::new(),
            shown: 0,
        }
    }

    /// The bytes of `input` to show.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            self.line.push(b);
            if b == b'\n' {
                if self.shown > 0 || !self.line.starts_with(&self.hidden) {
                    out.extend_from_slice(&self.line[self.shown..]);
                }
                self.line.clear();
                self.shown = 0;
            }
        }
        let l = &self.line;
        let n = l.len().min(self.hidden.len());
        if self.shown > 0 || l[..n] != self.hidden[..n] {
            out.extend_from_slice(&l[self.shown..]);
            self.shown = l.len();
        }
        out
    }
}

/// Where [`strip_control`] is in an escape sequence, across chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscState {
    /// Plain text.
    #[default]
    Text,
    /// After ESC.
    Esc,
    /// In a CSI sequence (`ESC [ ...`).
    Csi,
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "@@guest:abc@@";

    #[test]
    fn markers() {
        assert_eq!(
            parse_marker("@@guest:abc@@ boot 7.3.4+deb13-amd64 3.76", P),
            Some((
                "",
                Marker::Boot {
                    release: "7.3.4+deb13-amd64".into(),
                    uptime: 3.76
                }
            ))
        );
        assert_eq!(
            parse_marker("partial output@@guest:abc@@ exit 2 137 9.5\r", P),
            Some((
                "partial output",
                Marker::Exit {
                    i: 2,
                    code: 137,
                    uptime: 9.5
                }
            ))
        );
        assert_eq!(
            parse_marker("@@guest:abc@@ listed 0 tests::a b", P),
            Some((
                "",
                Marker::Listed {
                    i: 0,
                    name: "tests::a b".into()
                }
            ))
        );
        // Another boot's nonce, or a test printing something like a marker, is not one.
        assert_eq!(parse_marker("@@guest:xyz@@ exit 0 0 1.0", P), None);
        assert_eq!(parse_marker("@@guest:abc@@ exit zero", P), None);
        assert_eq!(parse_marker("@@guest:abc@@ listed 0", P), None);
    }

    #[test]
    fn summaries() {
        let s = parse_summary(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 8.20s",
        )
        .unwrap();
        assert_eq!(
            s,
            Summary {
                ok: true,
                passed: 12,
                failed: 0,
                ignored: 1,
                filtered: 3
            }
        );
        let f = parse_summary("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s").unwrap();
        assert!(!f.ok);
        assert_eq!((f.passed, f.failed), (3, 2));
        assert_eq!(parse_summary("test result: maybe. 1 passed"), None);
        assert_eq!(parse_summary("a test result: ok. 1 passed"), None);
    }

    fn console(body: &str) -> String {
        format!(
            "SeaBIOS\r\n@@guest:abc@@ boot 7.3.4+deb13-amd64 3.50\r\n{body}@@guest:abc@@ done\r\n"
        )
    }

    #[test]
    fn a_passing_and_a_failing_binary() {
        let text = console(
            "@@guest:abc@@ start 0 4.00\r
\r
running 2 tests\r
test a ... ok\r
test b ... ignored, needs a NIC\r
test c     ... ignored (needs root)\r
\r
test result: ok. 1 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.5s\r
\r
@@guest:abc@@ exit 0 0 5.25\r
@@guest:abc@@ start 1 5.30\r
running 3 tests\r
test x ... ok\r
test y ... FAILED\r
test z ... FAILED\r
\r
failures:\r
\r
---- y stdout ----\r
thread 'y' panicked at src/x.rs:1:1:\r
    assertion failed\r
\r
failures:\r
    y\r
    z\r
\r
test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s\r
\r
@@guest:abc@@ exit 1 101 6.30\r
",
        );
        let r = parse_console(&text, P, 2);
        assert_eq!(r.boot, Some(("7.3.4+deb13-amd64".into(), 3.5)));
        assert!(r.done);
        let a = &r.runs[0];
        assert!(a.passed(true));
        assert_eq!(a.counts(true), (1, 0, 2));
        assert_eq!(a.ignored_tests, ["b", "c"]);
        assert_eq!(a.exit, Some(0));
        assert!((a.secs.unwrap() - 1.25).abs() < 1e-9);
        let b = &r.runs[1];
        assert!(!b.passed(true));
        assert_eq!(b.exit, Some(101));
        assert_eq!(b.failed_tests, ["y", "z"]);
        assert_eq!(b.counts(true), (1, 2, 0));
        assert!(b.unfinished.is_empty());
    }

    #[test]
    fn a_timed_out_binary_names_the_unfinished_tests() {
        let text = console(
            "@@guest:abc@@ start 0 4.00\r
running 3 tests\r
test register_area ... ok\r
test query ... ok\r
test register_nodev has been running for over 60 seconds\r
\r
@@guest:abc@@ timeout 0 300\r
@@guest:abc@@ listed 0 query\r
@@guest:abc@@ listed 0 register_area\r
@@guest:abc@@ listed 0 register_nodev\r
@@guest:abc@@ exit 0 137 304.00\r
",
        );
        let r = parse_console(&text, P, 1);
        let a = &r.runs[0];
        assert_eq!(a.timed_out, Some(300));
        assert_eq!(a.unfinished, ["register_nodev"]);
        assert!(!a.passed(true));
        assert_eq!(a.counts(true), (2, 1, 0));
    }

    #[test]
    fn a_guest_that_stops_early() {
        // No exit marker for the second binary, no done: the report says so.
        let text = "@@guest:abc@@ boot 7.3.4+deb13-amd64 3.5\n@@guest:abc@@ start 0 4\nrunning 1 test\ntest a ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n@@guest:abc@@ exit 0 0 5\n@@guest:abc@@ start 1 5\nrunning 1 test\n[  9.1] Kernel panic - not syncing\n";
        let r = parse_console(text, P, 2);
        assert!(!r.done);
        assert!(r.runs[0].passed(true));
        let b = &r.runs[1];
        assert!(b.started && b.exit.is_none() && b.secs.is_none());
        assert!(!b.passed(true));
        assert_eq!(b.counts(true), (0, 1, 0));
        // Nothing at all: not booted.
        let none = parse_console("SeaBIOS\n", P, 1);
        assert_eq!(none.boot, None);
        assert!(!none.runs[0].started);
    }

    #[test]
    fn a_program_without_libtest() {
        let text = console("@@guest:abc@@ start 0 4\nhello\n@@guest:abc@@ exit 0 0 4.5\n");
        let r = parse_console(&text, P, 1);
        assert!(!r.runs[0].libtest);
        assert!(r.runs[0].passed(true));
        assert_eq!(r.runs[0].counts(true), (0, 0, 0));
        // A libtest binary that exited 0 without a summary did not pass.
        let cut = console("@@guest:abc@@ start 0 4\nrunning 2 tests\n@@guest:abc@@ exit 0 0 4.5\n");
        assert!(!parse_console(&cut, P, 1).runs[0].passed(true));
    }

    #[test]
    fn listed_markers_are_not_echoed() {
        let mut f = EchoFilter::new(P);
        let mut out = Vec::new();
        for chunk in [
            &b"test a ... "[..],
            b"ok\n@@guest:abc@@ lis",
            b"ted 0 a\n@@guest:abc@@ listed 0 b\n@@gu",
            b"est:abc@@ exit 0 137 4.0\npartial",
        ] {
            out.extend(f.feed(chunk));
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "test a ... ok\n@@guest:abc@@ exit 0 137 4.0\npartial"
        );
    }

    #[test]
    fn control_sequences_are_dropped() {
        let mut st = EscState::default();
        let a = strip_control(b"\x1bc\x1b[?7l\x1b[2JSea", &mut st);
        let b = strip_control(b"BIOS\x1b[", &mut st);
        let c = strip_control(b"0mok\r\n\x07", &mut st);
        assert_eq!([a, b, c].concat(), b"SeaBIOSok\r\n");
    }
}
