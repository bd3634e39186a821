//! The running kernel's version: what the backends check before features the kernel may lack
//! (its own module so that no backend depends on the diagnostic [`probe`](crate::probe)).

use std::fmt;

/// The running kernel's version, from `uname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelVersion {
    /// The full release string, e.g. `6.18.4-arch1-1`.
    pub release: String,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level (0 if absent).
    pub patch: u32,
}

impl KernelVersion {
    /// The running kernel's version; `None` if the release string does not start with
    /// `MAJOR.MINOR`.
    pub fn current() -> Option<Self> {
        let uname = rustix::system::uname();
        Self::parse(&uname.release().to_string_lossy())
    }

    /// Parses a release string such as `6.18.4-arch1-1` or `7.1-rc2`.
    pub fn parse(release: &str) -> Option<Self> {
        let mut nums = release.split(|c: char| !c.is_ascii_digit());
        let major = nums.next()?.parse().ok()?;
        let minor = nums.next()?.parse().ok()?;
        // The patch level follows a '.', not a '-'.
        let rest = release.splitn(3, '.').nth(2).unwrap_or("");
        let patch = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Some(Self {
            release: release.to_owned(),
            major,
            minor,
            patch,
        })
    }

    /// Whether this is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Linux {}", self.release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        let v = KernelVersion::parse("6.18.44-fc-v669").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (6, 18, 44));
        assert!(v.at_least(6, 18) && v.at_least(6, 1) && !v.at_least(7, 1));
        let v = KernelVersion::parse("7.1-rc2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (7, 1, 0));
        assert!(v.at_least(7, 1));
        assert_eq!(KernelVersion::parse("garbage"), None);
    }
}
