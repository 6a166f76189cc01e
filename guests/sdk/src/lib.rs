//! Helpers for weft plugins written in Rust.
//!
//! The WIT `types` interface is generated here once; a plugin crate generates its world
//! with `with: { "weft:plugin/types@0.2.0": weft_plugin_sdk::types }` so that these helpers
//! work on its types:
//!
//! ```text
//! wit_bindgen::generate!({
//!     path: "../../wit",
//!     world: "driver-plugin",
//!     with: { "weft:plugin/types@0.2.0": weft_plugin_sdk::types },
//! });
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[cfg(feature = "http")]
pub mod http;

wit_bindgen::generate!({ path: "../../wit", world: "types-only" });

use types::{Error, IpAddress, IpPrefix, MacAddress, Options};
pub use weft::plugin::types;

/// WIT address → std.
pub fn ip(a: &IpAddress) -> IpAddr {
    match *a {
        IpAddress::V4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::V6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

/// std → WIT address.
pub fn addr(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            IpAddress::V4((o[0], o[1], o[2], o[3]))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            IpAddress::V6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
        }
    }
}

pub fn prefix(ip: IpAddr, len: u8) -> IpPrefix {
    IpPrefix {
        address: addr(ip),
        prefix_len: len,
    }
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// The first address of a prefix, and how many addresses it spans.
pub fn span(p: &IpPrefix) -> (u128, u128) {
    let a = ip(&p.address);
    let bits = if a.is_ipv4() { 32 } else { 128 };
    let host = bits - p.prefix_len as u32;
    let size = if host >= 128 {
        u128::MAX
    } else {
        1u128 << host
    };
    let base = to_u128(a) & !(size.wrapping_sub(1));
    (base, size)
}

pub fn contains(p: &IpPrefix, a: IpAddr) -> bool {
    let pa = ip(&p.address);
    if pa.is_ipv4() != a.is_ipv4() {
        return false;
    }
    let (base, size) = span(p);
    let v = to_u128(a);
    v >= base && v - base < size
}

pub fn fmt_ip(a: &IpAddress) -> String {
    ip(a).to_string()
}

pub fn fmt_prefix(p: &IpPrefix) -> String {
    format!("{}/{}", ip(&p.address), p.prefix_len)
}

/// Parse "10.0.0.0/24".
pub fn parse_prefix(s: &str) -> Option<IpPrefix> {
    let (a, l) = s.split_once('/')?;
    Some(prefix(a.parse().ok()?, l.parse().ok()?))
}

pub fn option<'a>(opts: &'a Options, key: &str) -> Option<&'a str> {
    opts.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub fn fmt_mac(m: &MacAddress) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m.0, m.1, m.2, m.3, m.4, m.5
    )
}

pub fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}
pub fn not_found(msg: impl Into<String>) -> Error {
    Error::NotFound(msg.into())
}
pub fn conflict(msg: impl Into<String>) -> Error {
    Error::Conflict(msg.into())
}
pub fn exhausted(msg: impl Into<String>) -> Error {
    Error::Exhausted(msg.into())
}
pub fn internal(msg: impl Into<String>) -> Error {
    Error::Internal(msg.into())
}

/// A short, link-name-safe piece of an id (the first `n` characters).
pub fn short(id: &str, n: usize) -> &str {
    &id[..id.len().min(n)]
}
