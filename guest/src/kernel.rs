//! Fetching a Debian Linux 7.x kernel (image, uapi headers, modules) with a private apt state,
//! cached under `target/guest/kernels/<release>/`.
//!
//! The private state (`target/guest/apt/`) points at one suite only (`trixie-backports` by
//! default) and never touches the host's own sources or package lists. `apt-get update` runs on
//! it only when no kernel is cached yet, when asked (`--refresh`), or when an asked-for version
//! is not in the lists.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::host;

/// A kernel release as Debian names its packages: `7.3.4+deb13` (flavour `amd64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Upstream version numbers, e.g. `[7, 3, 4]`.
    pub numbers: Vec<u64>,
    /// The Debian ABI suffix, e.g. `deb13`.
    pub suffix: String,
}

impl Release {
    /// Parses `7.3.4+deb13`.
    pub fn parse(s: &str) -> Option<Release> {
        let (up, suffix) = s.split_once('+')?;
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let numbers: Option<Vec<u64>> = up.split('.').map(|n| n.parse().ok()).collect();
        let numbers = numbers?;
        if numbers.len() < 2 {
            return None;
        }
        Some(Release {
            numbers,
            suffix: suffix.to_string(),
        })
    }

    /// `7.3.4`
    pub fn upstream(&self) -> String {
        let parts: Vec<String> = self.numbers.iter().map(u64::to_string).collect();
        parts.join(".")
    }

    /// `7.3.4+deb13`
    pub fn debian(&self) -> String {
        format!("{}+{}", self.upstream(), self.suffix)
    }

    /// `7.3.4+deb13-amd64`: the kernel's `uname -r` and the directory under `lib/modules`.
    pub fn uname(&self) -> String {
        format!("{}-amd64", self.debian())
    }

    /// At least 7.1 (the first with `ZCRX_REG_NODEV`).
    pub fn has_nodev(&self) -> bool {
        (self.numbers[0], self.numbers[1]) >= (7, 1)
    }

    fn suffix_number(&self) -> u64 {
        let digits: String = self.suffix.chars().filter(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    }
}

impl PartialOrd for Release {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Release {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers
            .cmp(&other.numbers)
            .then(self.suffix_number().cmp(&other.suffix_number()))
            .then(self.suffix.cmp(&other.suffix))
    }
}

/// The release of a `linux-binary-<release>-amd64` package name (the generic flavour only: not
/// `-cloud-amd64`, not `-rt-amd64`).
pub fn release_of_package(name: &str) -> Option<Release> {
    let rest = name.strip_prefix("linux-binary-")?;
    let rel = rest.strip_suffix("-amd64")?;
    // A flavour would leave a '-' in what remains ("7.3.4+deb13-cloud").
    if rel.contains('-') {
        return None;
    }
    Release::parse(rel)
}

/// The newest kernel with NODEV (7.1 or later) named in `apt-cache search` output
/// (`linux-binary-7.3.4+deb13-amd64 - Linux 7.3.4 for 64-bit PCs (kernel image)` lines), by
/// version, not by text.
pub fn pick_newest(apt_cache_search: &str) -> Option<Release> {
    apt_cache_search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(release_of_package)
        .filter(Release::has_nodev)
        .max()
}

/// The version of `linux-libc-dev` that goes with kernel `upstream` (e.g. `7.3.4`), from
/// `apt-cache madison linux-libc-dev` output (` linux-libc-dev | 7.3.4-1~bpo13+1 | <url> ...`).
/// Only lines that name a repository are considered (madison can also list what is installed).
pub fn libc_dev_version(madison: &str, upstream: &str) -> Option<String> {
    madison.lines().find_map(|l| {
        let mut f = l.split('|').map(str::trim);
        let (_pkg, ver, from) = (f.next()?, f.next()?, f.next()?);
        let up = ver.split_once('-').map_or(ver, |(u, _)| u);
        let up = up.split_once(':').map_or(up, |(_, u)| u);
        (up == upstream && from.contains("://")).then(|| ver.to_string())
    })
}

/// A kernel in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Its release.
    pub release: Release,
    /// `target/guest/kernels/<release>/`
    pub dir: PathBuf,
    /// The bootable image.
    pub vmlinuz: PathBuf,
    /// The uapi headers (`linux/io_uring.h`, `linux/io_uring/zcrx.h`, ...).
    pub include: PathBuf,
    /// The `lib/modules/<uname -r>` tree (`kernel/...`, `modules.dep`; `.ko.xz` files).
    pub modules: PathBuf,
}

impl Kernel {
    fn at(kernels: &Path, release: Release) -> Kernel {
        let dir = kernels.join(release.uname());
        Kernel {
            vmlinuz: dir.join("vmlinuz"),
            include: dir.join("include"),
            modules: dir.join("modules"),
            dir,
            release,
        }
    }

    fn complete(&self) -> bool {
        self.dir.join("complete").is_file() && self.vmlinuz.is_file()
    }
}

/// Where the kernel comes from and whether to look again.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The Debian suite (`trixie-backports`).
    pub suite: String,
    /// The mirror (`http://deb.debian.org/debian`).
    pub mirror: String,
    /// `apt-get update` the private state and take the newest kernel there.
    pub refresh: bool,
    /// A particular release (`7.2.12+deb13` or `7.2.12`) instead of the newest.
    pub version: Option<String>,
}

/// The private apt state.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path, opts: &FetchOptions) -> Result<Apt> {
        let dir = cache.join("apt");
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let sources = format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {} main\n",
            opts.mirror, opts.suite
        );
        let path = dir.join("sources.list");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&path, sources)?;
            // Lists from another suite or mirror must not be used.
            let _ = std::fs::remove_dir_all(dir.join("lists"));
            std::fs::create_dir_all(dir.join("lists/partial"))?;
        }
        Ok(Apt { dir })
    }

    fn opts(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists")).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with("_Packages")))
        })
    }

    fn update(&self) -> Result<()> {
        eprintln!(
            "guest: apt-get update (private state {})",
            self.dir.display()
        );
        let t = Instant::now();
        let out = Command::new("apt-get")
            .args(self.opts())
            .args(["-q", "update"])
            .output()
            .context("cannot run apt-get")?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || err.contains("W: Failed") || err.contains("E: ") {
            bail!(
                "apt-get update of the private state failed ({}): {}",
                out.status,
                err.trim()
            );
        }
        eprintln!(
            "guest: apt-get update took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn cache_query(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("apt-cache")
            .args(self.opts())
            .args(args)
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn download(&self, into: &Path, packages: &[String]) -> Result<()> {
        let out = Command::new("apt-get")
            .args(self.opts())
            .args(["-q", "download"])
            .args(packages)
            .current_dir(into)
            .output()
            .context("cannot run apt-get")?;
        if !out.status.success() {
            bail!(
                "apt-get download {} failed ({}): {}",
                packages.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// Kernels already complete in the cache, newest first.
fn cached(kernels: &Path) -> Vec<Kernel> {
    let mut v: Vec<Kernel> = std::fs::read_dir(kernels)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = Release::parse(name.strip_suffix("-amd64")?)?;
            Some(Kernel::at(kernels, rel))
        })
        .filter(Kernel::complete)
        .collect();
    v.sort_by(|a, b| b.release.cmp(&a.release));
    v
}

fn matches_wanted(rel: &Release, wanted: &str) -> bool {
    rel.debian() == wanted || rel.upstream() == wanted || rel.uname() == wanted
}

/// The kernel to boot: the cached one, or the newest in the suite (downloaded and unpacked).
/// Fails, with the reason, if none can be had: the callers never treat that as a skip.
pub fn ensure(cache: &Path, opts: &FetchOptions) -> Result<Kernel> {
    let kernels = cache.join("kernels");
    std::fs::create_dir_all(&kernels)?;
    let have = cached(&kernels);
    if !opts.refresh {
        let hit = match &opts.version {
            Some(w) => have.iter().find(|k| matches_wanted(&k.release, w)),
            None => have.first(),
        };
        if let Some(k) = hit {
            link_current(cache, k)?;
            return Ok(k.clone());
        }
    }
    host::ensure_commands(&[("apt-get", "apt"), ("dpkg-deb", "dpkg")])?;
    let t = Instant::now();
    let apt = Apt::new(cache, opts)?;
    // A named version may already be in the lists; the newest needs fresh ones.
    let mut updated = false;
    if opts.refresh || !apt.has_lists() || opts.version.is_none() {
        apt.update()?;
        updated = true;
    }
    let release = loop {
        let search = apt.cache_query(&["search", "--names-only", "^linux-binary-[0-9]"])?;
        let found = match &opts.version {
            None => pick_newest(&search),
            Some(w) => search
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter_map(release_of_package)
                .filter(|r| matches_wanted(r, w))
                .max(),
        };
        match found {
            Some(r) => break r,
            None if !updated => {
                apt.update()?;
                updated = true;
            }
            None => bail!(
                "no linux-binary-{}-amd64 package in {} ({})",
                opts.version.as_deref().unwrap_or("7.N.M+debXX (N >= 1)"),
                opts.suite,
                opts.mirror
            ),
        }
    };
    let k = Kernel::at(&kernels, release.clone());
    if k.complete() {
        link_current(cache, &k)?;
        return Ok(k);
    }
    let madison = apt.cache_query(&["madison", "linux-libc-dev"])?;
    let libc_ver = libc_dev_version(&madison, &release.upstream()).ok_or_else(|| {
        anyhow!(
            "no linux-libc-dev {} in {} (apt-cache madison: {})",
            release.upstream(),
            opts.suite,
            madison.trim()
        )
    })?;
    let packages = vec![
        format!("linux-binary-{}", release.uname()),
        format!("linux-modules-{}", release.uname()),
        format!("linux-libc-dev={libc_ver}"),
    ];
    eprintln!("guest: downloading {}", packages.join(" "));
    let partial = kernels.join(format!(
        ".{}.partial-{}",
        release.uname(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    let debs = partial.join("debs");
    let root = partial.join("root");
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(&root)?;
    apt.download(&debs, &packages)?;
    let mut bytes = 0u64;
    for e in std::fs::read_dir(&debs)? {
        let p = e?.path();
        bytes += std::fs::metadata(&p)?.len();
        host::run_ok(Command::new("dpkg-deb").arg("-x").arg(&p).arg(&root))?;
    }
    std::fs::remove_dir_all(&debs)?;
    // Newer packages put everything under usr/lib/modules; older ones used /boot and /lib.
    let uname = release.uname();
    let moddir = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&uname))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow!("the packages hold no lib/modules/{uname}"))?;
    let vmlinuz = [
        moddir.join("vmlinuz"),
        root.join(format!("boot/vmlinuz-{uname}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| anyhow!("linux-binary-{uname} holds no vmlinuz"))?;
    if !root.join("usr/include/linux/io_uring.h").is_file() {
        bail!("linux-libc-dev {libc_ver} holds no usr/include/linux/io_uring.h");
    }
    let rel = |p: &Path| p.strip_prefix(&partial).map(Path::to_path_buf);
    std::os::unix::fs::symlink(rel(&vmlinuz)?, partial.join("vmlinuz"))?;
    std::os::unix::fs::symlink("root/usr/include", partial.join("include"))?;
    std::os::unix::fs::symlink(rel(&moddir)?, partial.join("modules"))?;
    std::fs::write(
        partial.join("complete"),
        format!(
            "{}\nlinux-libc-dev {libc_ver}\nsuite {}\n",
            packages[..2].join("\n"),
            opts.suite
        ),
    )?;
    if k.complete() {
        // Another run unpacked the same kernel meanwhile.
        let _ = std::fs::remove_dir_all(&partial);
    } else {
        let _ = std::fs::remove_dir_all(&k.dir);
        std::fs::rename(&partial, &k.dir)?;
    }
    eprintln!(
        "guest: fetched and unpacked kernel {} ({:.0} MB of packages) in {:.1} s",
        release.uname(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    link_current(cache, &k)?;
    Ok(k)
}

/// `target/guest/current` -> `kernels/<release>`: a stable path to the headers and modules.
fn link_current(cache: &Path, k: &Kernel) -> Result<()> {
    let link = cache.join("current");
    let target = Path::new("kernels").join(k.release.uname());
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    let tmp = cache.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)?;
    std::fs::rename(&tmp, &link)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH: &str = "\
linux-binary-7.0.13+deb13-amd64 - Binary for Linux 7.0.13 (signed)
linux-binary-7.1.13+deb13-amd64 - Linux 7.1.13 for 64-bit PCs (kernel image)
linux-binary-7.1.13+deb13-cloud-amd64 - Linux 7.1.13 for x86-64 cloud (kernel image)
linux-binary-7.10.1+deb13-rt-amd64 - Linux 7.10.1 for 64-bit PCs (kernel image)
linux-binary-7.2.12+deb13-amd64 - Linux 7.2.12 for 64-bit PCs (kernel image)
linux-binary-7.2.9+deb13-amd64 - Linux 7.2.9 for 64-bit PCs (kernel image)
linux-binary-7.3.4+deb13-amd64 - Linux 7.3.4 for 64-bit PCs (kernel image)
linux-binary-7.3.4+deb13-rt-amd64 - Linux 7.3.4 for 64-bit PCs (kernel image)
linux-binary-6.18.2+deb13-amd64 - Linux 6.18.2
";

    #[test]
    fn newest_generic_flavour_by_version_not_text() {
        let r = pick_newest(SEARCH).unwrap();
        assert_eq!(r.uname(), "7.3.4+deb13-amd64");
        // 7.10 sorts after 7.9 (as text it would not); only the generic flavour counts.
        let more = format!(
            "{SEARCH}linux-binary-7.10.0+deb13-amd64 - x\nlinux-binary-7.9.2+deb13-amd64 - x\n"
        );
        assert_eq!(pick_newest(&more).unwrap().debian(), "7.10.0+deb13");
        // A newer Debian ABI of the same upstream version wins.
        let abi = format!("{SEARCH}linux-binary-7.3.4+deb14-amd64 - x\n");
        assert_eq!(pick_newest(&abi).unwrap().debian(), "7.3.4+deb14");
    }

    #[test]
    fn nothing_before_7_1_is_picked() {
        let old = "linux-binary-7.0.13+deb13-amd64 - x\nlinux-binary-6.18.2+deb13-amd64 - x\n";
        assert_eq!(pick_newest(old), None);
        assert_eq!(pick_newest(""), None);
        assert!(Release::parse("8.0.1+deb14").unwrap().has_nodev());
    }

    #[test]
    fn package_names() {
        assert_eq!(
            release_of_package("linux-binary-7.3.4+deb13-amd64").unwrap(),
            Release {
                numbers: vec![7, 3, 4],
                suffix: "deb13".into()
            }
        );
        for bad in [
            "linux-binary-7.3.4+deb13-cloud-amd64",
            "linux-binary-7.3.4+deb13-rt-amd64",
            "linux-binary-7.3.4-amd64",
            "linux-modules-7.3.4+deb13-amd64",
            "linux-binary-7.x.4+deb13-amd64",
            "linux-binary-7+deb13-amd64",
        ] {
            assert_eq!(release_of_package(bad), None, "{bad}");
        }
    }

    #[test]
    fn libc_dev_version_matches_the_kernel() {
        let madison = "\
linux-libc-dev | 7.3.4-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
linux-libc-dev | 7.2.12-1~bpo13+1 | http://deb.debian.org/debian trixie-backports/main amd64 Packages
linux-libc-dev | 7.3.4-1 | /var/lib/dpkg/status
";
        assert_eq!(
            libc_dev_version(madison, "7.3.4").as_deref(),
            Some("7.3.4-1~bpo13+1")
        );
        assert_eq!(
            libc_dev_version(madison, "7.2.12").as_deref(),
            Some("7.2.12-1~bpo13+1")
        );
        assert_eq!(libc_dev_version(madison, "7.2.1"), None);
    }
}
