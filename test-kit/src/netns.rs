//! Network namespaces and the kernel guest's virtio_net devices, for tests whose traffic must
//! cross a real driver: two devices on QEMU's hub (the guest's `--virtio-net 2`), one moved
//! into a namespace, so that the kernel cannot route between them over `lo`.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Whether the test runs as root (namespaces and addresses need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program` on `PATH`, if there.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}

/// Interfaces with a `virtio_net` driver, sorted (the guest names them eth0, eth1, ...).
pub fn virtio_nets() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            std::fs::read_link(format!("/sys/class/net/{n}/device/driver"))
                .map(|p| p.ends_with("virtio_net"))
                .unwrap_or(false)
        })
        .collect();
    v.sort();
    v
}

/// Runs `ip ARGS`, failing the test with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has entered the network namespace `/run/netns/NAME`.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("open the namespace");
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns into the peer namespace");
        f()
    })
    .join()
    .unwrap()
}

/// Bytes `ifname` received, from sysfs.
pub fn rx_bytes(ifname: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/statistics/rx_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Two virtio_net devices joined by QEMU's hub, `there` moved into namespace `ns`:
/// [`HERE_ADDR`](Self::HERE_ADDR) on `here`, [`THERE_ADDR`](Self::THERE_ADDR) on `there`. Dropping
/// it deletes the namespace, which gives `there` back, takes the address off `here`, waits for
/// `there` to reappear and sets each device up or down as it was, so that the next test finds
/// the devices as they were (a down virtio_net device has no queues or NAPI ids to list).
#[derive(Debug)]
pub struct HubPair {
    /// The device left in this namespace.
    pub here: String,
    /// The device in the namespace.
    pub there: String,
    /// The namespace's name.
    pub ns: &'static str,
    /// Whether `here` and `there` were up before.
    was_up: (bool, bool),
}

/// Whether the interface is administratively up (`IFF_UP` in its sysfs flags).
pub fn is_up(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & 1 != 0)
}

impl HubPair {
    /// `here`'s address.
    pub const HERE_ADDR: &'static str = "10.77.0.1";
    /// `there`'s address, in the namespace.
    pub const THERE_ADDR: &'static str = "10.77.0.2";

    /// Sets the pair up from the first two single-queue virtio_net devices, or says why it
    /// cannot (as a reason for [`skip`](crate::skip)).
    pub fn new(ns: &'static str) -> Result<Self, &'static str> {
        let hub: Vec<String> = virtio_nets()
            .into_iter()
            .filter(|n| {
                std::fs::read_dir(format!("/sys/class/net/{n}/queues"))
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                            .count()
                    })
                    .unwrap_or(0)
                    == 1
            })
            .collect();
        if hub.len() < 2 {
            return Err("needs two virtio_net devices on a hub (the guest's --virtio-net 2)");
        }
        if !is_root() {
            return Err("needs root to make a network namespace");
        }
        if which("ip").is_none() {
            return Err("needs ip (iproute2; the guest's --with ip:iproute2)");
        }
        let pair = Self {
            here: hub[0].clone(),
            there: hub[1].clone(),
            ns,
            was_up: (is_up(&hub[0]), is_up(&hub[1])),
        };
        ip(&["netns", "add", ns]);
        // From here on, a failure tears down through `Drop`.
        ip(&["link", "set", &pair.there, "netns", ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::HERE_ADDR),
            "dev",
            &pair.here,
        ]);
        ip(&["link", "set", &pair.here, "up"]);
        let there_addr = format!("{}/24", Self::THERE_ADDR);
        ip(&["-n", ns, "addr", "add", &there_addr, "dev", &pair.there]);
        ip(&["-n", ns, "link", "set", &pair.there, "up"]);
        assert!(
            !std::path::Path::new(&format!("/sys/class/net/{}", pair.there)).exists(),
            "{} left this namespace",
            pair.there
        );
        Ok(pair)
    }
}

impl Drop for HubPair {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = std::process::Command::new("ip").args(args).status();
        };
        // Deleting the namespace gives the device back to this one; its addresses go with it.
        quiet(&["netns", "del", self.ns]);
        quiet(&["addr", "flush", "dev", &self.here]);
        // The device comes back asynchronously once the namespace is gone, and down.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !virtio_nets().contains(&self.there) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let state = |up: bool| if up { "up" } else { "down" };
        quiet(&["link", "set", &self.here, state(self.was_up.0)]);
        quiet(&["link", "set", &self.there, state(self.was_up.1)]);
        if !std::thread::panicking() {
            assert!(
                virtio_nets().contains(&self.there),
                "{} did not come back",
                self.there
            );
            assert_eq!(
                (is_up(&self.here), is_up(&self.there)),
                self.was_up,
                "{} and {} up as they were",
                self.here,
                self.there
            );
        }
    }
}
