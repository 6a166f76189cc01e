//! Sysctls, read and written inside a given namespace (`/proc/sys/net` shows the namespace
//! of the thread that opens it). Keys are slash-separated paths under /proc/sys, so that
//! interface names with dots (eth0.10) need no escaping: `net/ipv4/conf/eth0.10/proxy_arp`.

use std::fs::File;

use super::{ns, NetError};

fn path(key: &str) -> Result<String, NetError> {
    if key.is_empty() || key.contains("..") || key.starts_with('/') {
        return Err(NetError::other(format!("sysctl {key}"), "invalid key"));
    }
    Ok(format!("/proc/sys/{key}"))
}

pub fn read(netns: Option<&File>, key: &str) -> Result<String, NetError> {
    let p = path(key)?;
    ns::run_in(netns, || std::fs::read_to_string(&p))?
        .map(|s| s.trim().to_string())
        .map_err(|e| NetError::io(format!("read sysctl {key}"), e))
}

pub fn write(netns: Option<&File>, key: &str, value: &str) -> Result<(), NetError> {
    let p = path(key)?;
    ns::run_in(netns, || std::fs::write(&p, value))?
        .map_err(|e| NetError::io(format!("set sysctl {key}={value}"), e))
}

/// Does this kernel have IPv6 (no `ipv6.disable=1`)? Its sysctls exist only then.
pub fn ipv6_available() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}
