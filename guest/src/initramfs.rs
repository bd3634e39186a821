//! The guest's initramfs: which files go in (a plain list, tested without booting), the init
//! script, and the newc cpio archive (written here: newc is 110 bytes of hex per entry), which
//! `gzip -1` compresses on the way to disk.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// What an archive entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A directory.
    Dir,
    /// A copy of this host file.
    Host(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// One file of the guest's root, at `path` (relative: no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits (the file type comes from `content`).
    pub perm: u32,
    /// What it holds.
    pub content: Content,
}

/// The guest's files, by path; parents are added as directories, and listed before their
/// children (a path sorts after every prefix of it).
#[derive(Debug, Default, Clone)]
pub struct FileList {
    entries: BTreeMap<String, Entry>,
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl FileList {
    /// An empty list.
    pub fn new() -> FileList {
        FileList::default()
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            self.put(dir, 0o755, Content::Dir)?;
            at += i + 1;
        }
        Ok(())
    }

    fn put(&mut self, path: &str, perm: u32, content: Content) -> Result<()> {
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("bad guest path {path:?}");
        }
        match self.entries.get(path) {
            None => {
                self.entries
                    .insert(path.to_string(), Entry { perm, content });
                Ok(())
            }
            Some(e) if e.content == content => Ok(()),
            Some(e) => bail!(
                "/{path} is given twice: as {:?} and as {:?}",
                e.content,
                content
            ),
        }
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) -> Result<()> {
        let p = rel(path);
        self.parents(&p)?;
        self.put(&p, 0o755, Content::Dir)
    }

    /// Adds a copy of a host file.
    pub fn host_file(&mut self, path: &str, host: &Path, perm: u32) -> Result<()> {
        let p = rel(path);
        self.parents(&p)?;
        self.put(&p, perm, Content::Host(host.to_path_buf()))
    }

    /// Adds a file with these bytes.
    pub fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, perm: u32) -> Result<()> {
        let p = rel(path);
        self.parents(&p)?;
        self.put(&p, perm, Content::Bytes(data.into()))
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let p = rel(path);
        self.parents(&p)?;
        self.put(&p, 0o777, Content::Symlink(target.to_string()))
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, perm: u32) -> Result<()> {
        let p = rel(path);
        self.parents(&p)?;
        self.put(&p, perm, Content::CharDev(major, minor))
    }

    /// A program and its libraries, each library at the path `ldd` gave (the guest's loader
    /// looks in the same multiarch directories as the host's).
    pub fn program(&mut self, path: &str, host: &Path, libs: &[PathBuf]) -> Result<()> {
        self.host_file(path, host, 0o755)?;
        for lib in libs {
            let guest = lib.to_string_lossy().into_owned();
            self.host_file(&guest, lib, 0o755)?;
        }
        Ok(())
    }

    /// The entries in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether `path` is in the list.
    #[cfg(test)]
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&rel(path))
    }
}

fn pad4(w: &mut impl Write, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

fn newc_header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08X}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w, 110 + name.len() + 1)
}

/// Writes the list as a newc (`070701`) cpio archive, reading host files as it goes.
pub fn write_newc(list: &FileList, w: &mut impl Write) -> Result<u64> {
    let mut total = 0u64;
    for (ino, (path, e)) in list.entries().enumerate() {
        let ino = ino as u32 + 1;
        let owned;
        let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match &e.content {
            Content::Dir => (0o040000, &[], (0, 0)),
            Content::Host(p) => {
                owned = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
                (0o100000, &owned, (0, 0))
            }
            Content::Bytes(b) => (0o100000, b, (0, 0)),
            Content::Symlink(t) => (0o120000, t.as_bytes(), (0, 0)),
            Content::CharDev(ma, mi) => (0o020000, &[], (*ma, *mi)),
        };
        let size = u32::try_from(data.len())
            .with_context(|| format!("/{path} is too large for a cpio archive"))?;
        newc_header(w, ino, kind | (e.perm & 0o7777), size, rdev, path)?;
        w.write_all(data)?;
        pad4(w, data.len())?;
        total += data.len() as u64;
    }
    newc_header(w, 0, 0, 0, (0, 0), "TRAILER!!!")?;
    Ok(total)
}

/// Writes the archive gzip'd (`gzip -1`: fast, and the guest's kernel unpacks it) to `out`.
/// Returns the uncompressed bytes of file data.
pub fn write_gzipped(list: &FileList, out: &Path) -> Result<u64> {
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut gz = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = io::BufWriter::with_capacity(1 << 20, gz.stdin.take().expect("piped"));
    let written = write_newc(list, &mut stdin);
    let flushed = stdin.flush();
    drop(stdin);
    let status = gz.wait()?;
    let n = written?;
    flushed?;
    if !status.success() {
        bail!("gzip failed ({status})");
    }
    Ok(n)
}

/// Where a host program goes in the guest: at its own path (so that `current_exe()` and paths
/// next to it look the same), unless that is under a directory the init mounts over (`/tmp`,
/// `/run`, `/dev`, `/proc`, `/sys`), in which case under `/guest`.
pub fn guest_path_for(host: &Path) -> String {
    let p = host.to_string_lossy();
    let hidden = ["/tmp", "/run", "/dev", "/proc", "/sys"]
        .iter()
        .any(|m| p == *m || p.starts_with(&format!("{m}/")));
    if hidden || !p.starts_with('/') {
        format!("/guest/{}", p.trim_start_matches('/'))
    } else {
        p.into_owned()
    }
}

/// Quotes a word for the guest's shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One program the init runs.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// Its path in the guest.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The directory it runs in (created if missing), as `cargo test` would use.
    pub cwd: String,
    /// Environment for this program only.
    pub env: Vec<(String, String)>,
    /// A libtest binary: its `--list` (same arguments) is kept, to name the tests that had not
    /// finished if it times out.
    pub libtest: bool,
}

/// What the init does.
#[derive(Debug, Clone)]
pub struct InitSpec {
    /// The marker's nonce: marker lines are `@@guest:<nonce>@@ <kind> ...`.
    pub nonce: String,
    /// The programs, run one after the other.
    pub runs: Vec<GuestRun>,
    /// Environment for all of them (after `RUST_BACKTRACE=1`).
    pub env: Vec<(String, String)>,
    /// Seconds each program may take before it is killed.
    pub timeout_secs: u64,
    /// `ulimit -n` (the host's soft limit).
    pub nofile: Option<u64>,
    /// Kernel modules to load, in order (guest paths, decompressed).
    pub modules: Vec<String>,
    /// Network interfaces (`eth0`, ...) to bring up.
    pub ifaces: usize,
}

/// The marker prefix for a nonce.
pub fn marker(nonce: &str) -> String {
    format!("@@guest:{nonce}@@")
}

/// The `/init` script.
pub fn init_script(spec: &InitSpec) -> String {
    let m = marker(&spec.nonce);
    let mut s = String::new();
    s.push_str(
        "#!/bin/busybox sh
# Generated by the guest tool: runs the programs, prints a marker with each exit code, powers off.
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ip link set lo up
printf '127.0.0.1 localhost\\n::1 localhost\\n' > /etc/hosts
ulimit -l unlimited
",
    );
    if let Some(n) = spec.nofile {
        s.push_str(&format!("ulimit -n {n}\n"));
    }
    for m in &spec.modules {
        s.push_str(&format!(
            "insmod {} || echo \"insmod {} failed\"\n",
            sh_quote(m),
            m
        ));
    }
    for i in 0..spec.ifaces {
        s.push_str(&format!("ip link set eth{i} up\n"));
    }
    s.push_str(&format!("M={}\n", sh_quote(&m)));
    s.push_str("up() { cut -d' ' -f1 /proc/uptime; }\n");
    s.push_str("echo\necho \"$M boot $(uname -r) $(up)\"\n");
    s.push_str("export RUST_BACKTRACE=1\n");
    for (k, v) in &spec.env {
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    for (i, r) in spec.runs.iter().enumerate() {
        let mut cmd = sh_quote(&r.path);
        for a in &r.args {
            cmd.push(' ');
            cmd.push_str(&sh_quote(a));
        }
        let mut env = String::new();
        for (k, v) in &r.env {
            env.push_str(&format!("{k}={} ", sh_quote(v)));
        }
        let cwd = sh_quote(&r.cwd);
        s.push_str(&format!("\n# run {i}\nmkdir -p {cwd}; cd {cwd}\n"));
        if r.libtest {
            s.push_str(&format!(
                "{env}{} --list {} > /tmp/list.{i} 2>/dev/null\n",
                sh_quote(&r.path),
                r.args
                    .iter()
                    .map(|a| sh_quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        s.push_str(&format!("echo \"$M start {i} $(up)\"\n"));
        s.push_str(&format!("{env}{cmd} &\npid=$!\n"));
        s.push_str(&format!(
            "( sleep {t}; if kill -0 $pid 2>/dev/null; then touch /tmp/timedout.{i}; kill -9 $pid; fi ) &\n",
            t = spec.timeout_secs
        ));
        s.push_str("dog=$!\nwait $pid\nrc=$?\nkill $dog 2>/dev/null\necho\n");
        s.push_str(&format!(
            "if [ -e /tmp/timedout.{i} ]; then\n  echo \"$M timeout {i} {t}\"\n",
            t = spec.timeout_secs
        ));
        if r.libtest {
            s.push_str(&format!(
                "  sed -n 's/: test$//p' /tmp/list.{i} | while read -r t; do echo \"$M listed {i} $t\"; done\n"
            ));
        }
        s.push_str("fi\n");
        s.push_str(&format!("echo \"$M exit {i} $rc $(up)\"\ncd /\n"));
    }
    s.push_str("\necho \"$M done\"\nsync\npoweroff -f\necho o > /proc/sysrq-trigger\n");
    s
}

/// Everything that goes into the guest besides the init.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// The host's busybox and its libraries (none if static).
    pub busybox: PathBuf,
    /// Libraries busybox needs.
    pub busybox_libs: Vec<PathBuf>,
    /// (guest path, host path, libraries) of each program to run.
    pub programs: Vec<(String, PathBuf, Vec<PathBuf>)>,
    /// (name, host path, libraries) of each helper for `/usr/bin`.
    pub tools: Vec<(String, PathBuf, Vec<PathBuf>)>,
    /// (guest path, decompressed module bytes).
    pub modules: Vec<(String, Vec<u8>)>,
}

/// The guest's file list: busybox as `/bin/busybox` (its applet links are made by the init),
/// `/init`, `/dev/console`, mount points, the programs at their host paths, helpers in
/// `/usr/bin`, and every library at the path `ldd` printed.
pub fn file_list(contents: &Contents, init: &str) -> Result<FileList> {
    let mut l = FileList::new();
    for d in [
        "proc", "sys", "dev", "tmp", "run", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin",
    ] {
        l.dir(d)?;
    }
    l.char_dev("dev/console", 5, 1, 0o600)?;
    l.char_dev("dev/null", 1, 3, 0o666)?;
    l.bytes("init", init.as_bytes(), 0o755)?;
    l.bytes("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
    l.bytes("etc/group", "root:x:0:\n", 0o644)?;
    l.program("bin/busybox", &contents.busybox, &contents.busybox_libs)?;
    l.symlink("bin/sh", "busybox")?;
    for (guest, host, libs) in &contents.programs {
        l.program(guest, host, libs)?;
    }
    for (name, host, libs) in &contents.tools {
        if name.contains('/') {
            bail!("bad tool name {name:?}");
        }
        l.program(&format!("usr/bin/{name}"), host, libs)?;
    }
    for (guest, bytes) in &contents.modules {
        l.bytes(guest, bytes.clone(), 0o644)?;
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libs() -> Vec<PathBuf> {
        [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib64/ld-linux-x86-64.so.2",
        ]
        .iter()
        .map(PathBuf::from)
        .collect()
    }

    #[test]
    fn file_list_has_parents_first_and_shared_libraries_once() {
        let c = Contents {
            busybox: "/usr/bin/busybox".into(),
            busybox_libs: vec![],
            programs: vec![
                (
                    "/work/main/target/debug/deps/zcrx_kernel-1".into(),
                    "/work/main/target/debug/deps/zcrx_kernel-1".into(),
                    libs(),
                ),
                (
                    "/work/main/target/debug/deps/bufring_kernel-2".into(),
                    "/work/main/target/debug/deps/bufring_kernel-2".into(),
                    libs(),
                ),
            ],
            tools: vec![("iperf3".into(), "/usr/bin/iperf3".into(), {
                let mut l = libs();
                l.push("/lib/x86_64-linux-gnu/libiperf.so.0".into());
                l
            })],
            modules: vec![("lib/modules/virtio_net.ko".into(), vec![1, 2, 3])],
        };
        let l = file_list(&c, "#!/bin/busybox sh\n").unwrap();
        let paths: Vec<&str> = l.entries().map(|(p, _)| p).collect();
        for (i, p) in paths.iter().enumerate() {
            if let Some((parent, _)) = p.rsplit_once('/') {
                let at = paths.iter().position(|q| *q == parent).expect(parent);
                assert!(at < i, "{parent} after {p}");
            }
        }
        let count = |p: &str| paths.iter().filter(|q| **q == p).count();
        assert_eq!(count("lib/x86_64-linux-gnu/libc.so.6"), 1);
        assert_eq!(count("lib64/ld-linux-x86-64.so.2"), 1);
        for p in [
            "init",
            "bin/busybox",
            "dev/console",
            "usr/bin/iperf3",
            "lib/x86_64-linux-gnu/libiperf.so.0",
            "work/main/target/debug/deps/zcrx_kernel-1",
            "lib/modules/virtio_net.ko",
            "proc",
            "tmp",
        ] {
            assert!(l.contains(p), "{p} missing");
        }
        assert!(!paths.iter().any(|p| p.contains("vdso")));
    }

    #[test]
    fn conflicting_paths_are_refused() {
        let mut l = FileList::new();
        l.host_file("/usr/bin/x", Path::new("/a/x"), 0o755).unwrap();
        l.host_file("/usr/bin/x", Path::new("/a/x"), 0o755).unwrap();
        assert!(l.host_file("/usr/bin/x", Path::new("/b/x"), 0o755).is_err());
        assert!(l.dir("usr/bin/x").is_err());
        assert!(l.dir("usr/../etc").is_err());
    }

    #[test]
    fn newc_layout() {
        let mut l = FileList::new();
        l.bytes("a/b", "hello", 0o644).unwrap();
        l.symlink("a/l", "b").unwrap();
        l.char_dev("dev/console", 5, 1, 0o600).unwrap();
        let mut out = Vec::new();
        let n = write_newc(&l, &mut out).unwrap();
        assert_eq!(n, 6);
        assert_eq!(out.len() % 4, 0);
        // Walk it back: magic, name, 4-byte alignment of names and data.
        let mut at = 0;
        let mut seen = Vec::new();
        loop {
            let h = std::str::from_utf8(&out[at..at + 110]).unwrap();
            assert_eq!(&h[..6], "070701");
            let field = |i: usize| u32::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&out[at + 110..at + 110 + namesize - 1]).unwrap();
            assert_eq!(out[at + 110 + namesize - 1], 0);
            let data_at = (at + 110 + namesize).div_ceil(4) * 4;
            let data = &out[data_at..data_at + size];
            seen.push((name.to_string(), mode, data.to_vec(), field(9), field(10)));
            at = (data_at + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                break;
            }
        }
        assert_eq!(at, out.len());
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            ["a", "a/b", "a/l", "dev", "dev/console", "TRAILER!!!"]
        );
        assert_eq!(seen[0].1, 0o040755);
        assert_eq!((seen[1].1, seen[1].2.as_slice()), (0o100644, &b"hello"[..]));
        assert_eq!((seen[2].1, seen[2].2.as_slice()), (0o120777, &b"b"[..]));
        assert_eq!((seen[4].1, seen[4].3, seen[4].4), (0o020600, 5, 1));
    }

    #[test]
    fn programs_are_not_hidden_by_mounts() {
        let at = |p: &str| guest_path_for(Path::new(p));
        assert_eq!(
            at("/work/main/target/debug/deps/x-1"),
            "/work/main/target/debug/deps/x-1"
        );
        assert_eq!(
            at("/tmp/clean/target/debug/deps/x-1"),
            "/guest/tmp/clean/target/debug/deps/x-1"
        );
        assert_eq!(at("/run/user/0/x"), "/guest/run/user/0/x");
        assert_eq!(at("/tmpfoo/x"), "/tmpfoo/x");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("--skip"), "--skip");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn init_runs_each_program_with_markers() {
        let spec = InitSpec {
            nonce: "n0nce".into(),
            runs: vec![
                GuestRun {
                    path: "/t/a".into(),
                    args: vec!["--skip".into(), "x y".into()],
                    cwd: "/w/ifq".into(),
                    env: vec![("CARGO_PKG_NAME".into(), "ifq".into())],
                    libtest: true,
                },
                GuestRun {
                    path: "/t/b".into(),
                    args: vec![],
                    cwd: "/".into(),
                    env: vec![],
                    libtest: false,
                },
            ],
            env: vec![("K".into(), "v w".into())],
            timeout_secs: 30,
            nofile: Some(20000),
            modules: vec![],
            ifaces: 0,
        };
        let s = init_script(&spec);
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        for want in [
            "M=@@guest:n0nce@@\n",
            "echo \"$M boot $(uname -r) $(up)\"",
            "export RUST_BACKTRACE=1\nexport K='v w'\n",
            "ulimit -l unlimited\n",
            "ulimit -n 20000\n",
            "ip link set lo up\n",
            "CARGO_PKG_NAME=ifq /t/a --list --skip 'x y' > /tmp/list.0",
            "CARGO_PKG_NAME=ifq /t/a --skip 'x y' &\n",
            "sleep 30;",
            "echo \"$M exit 0 $rc $(up)\"",
            "echo \"$M listed 0 $t\"",
            "/t/b &\n",
            "echo \"$M exit 1 $rc $(up)\"",
            "echo \"$M done\"\n",
            "poweroff -f\n",
        ] {
            assert!(s.contains(want), "{want:?} not in\n{s}");
        }
        assert!(!s.contains("/t/b --list"));
        assert!(s.find("exit 0").unwrap() < s.find("start 1").unwrap());
    }
}
