//! Kernel modules for the guest: which files to load, in which order, and their decompressed
//! bytes (busybox `insmod` takes plain `.ko` files only).
//!
//! Debian's `linux-modules` package ships no `modules.dep` (its postinst runs depmod), so the
//! dependencies come from each module's own `.modinfo` (`depends=a,b`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A module's name from its file name (`net_failover.ko.xz` -> `net_failover`; `-` and `_`
/// are the same to the kernel).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// A `.modinfo` field (`depends`, `name`, ...) of a decompressed module: the strings there are
/// `key=value` each ended by a NUL.
pub fn modinfo_field(ko: &[u8], key: &str) -> Option<String> {
    let pat = format!("{key}=");
    ko.split(|&b| b == 0).find_map(|s| {
        let rest = s.strip_prefix(pat.as_bytes())?;
        std::str::from_utf8(rest).ok().map(str::to_string)
    })
}

/// Every module file under `dir` (relative paths), by module name.
pub fn index(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".ko") {
                    let rel = p
                        .strip_prefix(dir)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    out.insert(module_name(&name), rel);
                }
            }
        }
    }
    Ok(out)
}

/// Modules to load, and those there is no file for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadOrder {
    /// (name, path) in load order.
    pub modules: Vec<(String, String)>,
    /// Names not found as files (built into the kernel).
    pub builtin: Vec<String>,
}

/// The modules to load for `names`, each after those it depends on, each once.
/// `depends(path)` gives the `depends=` names of a module file.
pub fn load_order(
    names: &[&str],
    files: &BTreeMap<String, String>,
    mut depends: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<LoadOrder> {
    let mut order = Vec::new();
    let mut builtin = Vec::new();
    let mut seen = BTreeSet::new();
    // An explicit stack: (name, dependencies already pushed).
    for name in names {
        let mut stack = vec![(name.replace('-', "_"), false)];
        while let Some((n, expanded)) = stack.pop() {
            if seen.contains(&n) {
                continue;
            }
            let Some(path) = files.get(&n) else {
                seen.insert(n.clone());
                builtin.push(n);
                continue;
            };
            if expanded {
                seen.insert(n.clone());
                order.push((n, path.clone()));
                continue;
            }
            if stack.len() > 256 {
                bail!("module dependencies too deep at {n}");
            }
            stack.push((n.clone(), true));
            for d in depends(path)?.iter().rev() {
                let d = d.replace('-', "_");
                if !seen.contains(&d) && !stack.iter().any(|(s, e)| *s == d && *e) {
                    stack.push((d, false));
                }
            }
        }
    }
    Ok(LoadOrder {
        modules: order,
        builtin,
    })
}

/// The bytes of a module file, decompressed (`.ko.xz` with `xz`, or busybox's `xz` applet).
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return std::fs::read(path).with_context(|| format!("cannot read {name}"));
    }
    let tool: &[&str] = if name.ends_with(".xz") {
        if crate::host::which("xz").is_some() {
            &["xz", "-dc"]
        } else {
            &["busybox", "xz", "-dc"]
        }
    } else if name.ends_with(".zst") {
        &["zstd", "-dc"]
    } else if name.ends_with(".gz") {
        &["gzip", "-dc"]
    } else {
        bail!("unknown module compression: {name}");
    };
    let out = Command::new(tool[0])
        .args(&tool[1..])
        .arg(path)
        .output()
        .with_context(|| format!("cannot run {}", tool[0]))?;
    if !out.status.success() {
        bail!(
            "{} {name} failed: {}",
            tool.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BTreeMap<String, String> {
        [
            ("failover", "kernel/net/core/failover.ko.xz"),
            ("net_failover", "kernel/drivers/net/net_failover.ko.xz"),
            ("virtio_net", "kernel/drivers/net/virtio_net.ko.xz"),
            ("veth", "kernel/drivers/net/veth.ko.xz"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn deps(path: &str) -> Result<Vec<String>> {
        Ok(match module_name(path).as_str() {
            "virtio_net" => vec!["net_failover".into(), "failover".into()],
            "net_failover" => vec!["failover".into()],
            _ => vec![],
        })
    }

    #[test]
    fn dependencies_first_each_once() {
        let LoadOrder {
            modules: o,
            builtin: b,
        } = load_order(
            &["virtio_pci", "virtio-net", "veth", "net_failover"],
            &files(),
            deps,
        )
        .unwrap();
        let names: Vec<&str> = o.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["failover", "net_failover", "virtio_net", "veth"]);
        assert_eq!(o[2].1, "kernel/drivers/net/virtio_net.ko.xz");
        assert_eq!(b, ["virtio_pci"]);
    }

    #[test]
    fn modinfo_strings() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=net_failover,failover\0name=virtio_net\0";
        assert_eq!(
            modinfo_field(ko, "depends").as_deref(),
            Some("net_failover,failover")
        );
        assert_eq!(modinfo_field(ko, "name").as_deref(), Some("virtio_net"));
        assert_eq!(
            modinfo_field(b"\0depends=\0", "depends").as_deref(),
            Some("")
        );
        assert_eq!(modinfo_field(b"nothing", "depends"), None);
        assert_eq!(module_name("a/b/net-failover.ko.xz"), "net_failover");
    }
}
