//! Grants: what a plugin may do, recorded at install and checked on every host call. Like a
//! phone app's permissions, a plugin asks (its metadata) and the user gives (`--grant`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Per-link sysctls a plugin can be granted (WIT `host-net.link-sysctl`).
pub const LINK_SYSCTLS: [&str; 5] = [
    "proxy_arp",
    "proxy_delay",
    "forwarding",
    "forwarding6",
    "proxy_ndp",
];

/// Link name prefixes weft's own drivers use, and the kernel's, systemd's and other network
/// tools' naming schemes: no plugin may have them (a plugin with "en" could otherwise reach
/// `enp3s0`). Install also refuses a prefix that names any link the host has.
const RESERVED_PREFIXES: &[&str] = &[
    "veth", "br-", "weft", "eth", "lo", "dm-", "dp-", "host", "en", "wl", "ww", "ib", "sl", "bo",
    "bond", "team", "vi", "virbr", "wg", "tun", "tap", "docker", "cni", "podman", "flannel",
    "cali", "vxlan", "gre", "ip6", "sit", "erspan", "ifb", "dummy", "nlmon", "vrf", "macvlan",
    "ipvlan", "all", "default",
];

/// A plugin's kv space, by default.
pub const DEFAULT_KV_QUOTA: u64 = 4 << 20;

/// A plugin's powers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The plugin may create and touch host links whose names start with this. None: no links.
    pub link_prefix: Option<String>,
    /// Existing host links it may use as parents (VXLAN underlay, macvlan parent).
    pub parents: Vec<String>,
    /// Per-link sysctls it may set.
    pub sysctls: Vec<String>,
    /// Its kv space (default: the plugin's name). Two plugins can share one only if both are
    /// granted the same name.
    pub kv_space: String,
    /// The kv space is cluster-wide (kept in the cluster store when there is one).
    pub kv_global: bool,
    /// Outbound HTTP authorities (host:port) it may reach over wasi:http. Default none.
    pub http_hosts: Vec<String>,
    /// Addresses outside the network's subnets it may route and answer for on the host.
    #[serde(default)]
    pub gateways: Vec<std::net::IpAddr>,
    /// VXLAN/GENEVE network identifiers, inclusive ranges.
    #[serde(default)]
    pub vni_ranges: Vec<(u32, u32)>,
    /// UDP ports its VXLAN/GENEVE devices may use.
    #[serde(default)]
    pub vxlan_ports: Vec<u16>,
    /// macvlan passthru mode on its parents.
    #[serde(default)]
    pub macvlan_passthru: bool,
    /// Bytes its kv space may hold (keys and values).
    #[serde(default = "default_kv_quota")]
    pub kv_quota: u64,
    /// Memory ceiling per call, bytes.
    pub memory_bytes: u64,
    /// Deadline per call, milliseconds (epoch interruption).
    pub deadline_ms: u64,
    /// Fuel per call (instructions, roughly); None = unlimited.
    pub fuel: Option<u64>,
    /// Outbound HTTP requests it may have open at once, all its calls together (each holds a
    /// socket: a descriptor of the process running it).
    #[serde(default = "default_http_inflight")]
    pub http_inflight: u32,
    /// Outbound HTTP requests one call may start.
    #[serde(default = "default_http_requests")]
    pub http_requests: u32,
    /// Bytes weft hands the plugin in one call: kv reads, config values, HTTP response
    /// headers and bodies (what it sends the other way is bounded per crossing, 2 MiB).
    #[serde(default = "default_inbound")]
    pub inbound_bytes: u64,
}

fn default_kv_quota() -> u64 {
    DEFAULT_KV_QUOTA
}
fn default_http_inflight() -> u32 {
    DEFAULT_HTTP_INFLIGHT
}
fn default_http_requests() -> u32 {
    DEFAULT_HTTP_REQUESTS
}
fn default_inbound() -> u64 {
    DEFAULT_INBOUND
}

pub const DEFAULT_MEMORY: u64 = 64 << 20;
pub const DEFAULT_DEADLINE_MS: u64 = 2000;
/// HTTP requests open at once per plugin, and started per call: an IPAM asks a few questions.
pub const DEFAULT_HTTP_INFLIGHT: u32 = 8;
pub const DEFAULT_HTTP_REQUESTS: u32 = 32;
/// What weft hands a plugin per call: a kv listing (at most 4 MiB) and some HTTP answers fit.
pub const DEFAULT_INBOUND: u64 = 8 << 20;

impl Grants {
    /// Nothing but the plugin's own kv space and the default limits.
    pub fn minimal(plugin: &str) -> Grants {
        Grants {
            link_prefix: None,
            parents: vec![],
            sysctls: vec![],
            kv_space: plugin.to_string(),
            kv_global: false,
            http_hosts: vec![],
            gateways: vec![],
            vni_ranges: vec![],
            vxlan_ports: vec![],
            macvlan_passthru: false,
            kv_quota: DEFAULT_KV_QUOTA,
            memory_bytes: DEFAULT_MEMORY,
            deadline_ms: DEFAULT_DEADLINE_MS,
            fuel: None,
            http_inflight: DEFAULT_HTTP_INFLIGHT,
            http_requests: DEFAULT_HTTP_REQUESTS,
            inbound_bytes: DEFAULT_INBOUND,
        }
    }

    /// Apply one `--grant key=value` (repeatable keys add to lists).
    pub fn apply(&mut self, spec: &str) -> Result<()> {
        let (k, v) = spec.split_once('=').ok_or_else(|| {
            Error::invalid(format!(
                "invalid grant {spec:?}: use key=value with key one of {GRANT_KEYS}"
            ))
        })?;
        let v = v.trim();
        match k.trim() {
            "link-prefix" => {
                check_prefix(v)?;
                self.link_prefix = Some(v.to_string());
            }
            "parent" => {
                if v.is_empty() || v.len() > 15 {
                    return Err(Error::invalid(format!("invalid parent interface {v:?}")));
                }
                push_unique(&mut self.parents, v);
            }
            "sysctl" => {
                if !LINK_SYSCTLS.contains(&v) {
                    return Err(Error::invalid(format!(
                        "sysctl {v:?} cannot be granted: use one of {}",
                        LINK_SYSCTLS.join(", ")
                    )));
                }
                push_unique(&mut self.sysctls, v);
            }
            "kv" => {
                if v.is_empty() || v.contains('\0') {
                    return Err(Error::invalid("kv space name must be non-empty"));
                }
                self.kv_space = v.to_string();
            }
            "kv-global" => {
                // Needs a cluster store: the engine checks at install.
                self.kv_global = crate::model::parse_bool(v)
                    .ok_or_else(|| Error::invalid(format!("kv-global={v}: use true or false")))?;
            }
            "kv-quota" => self.kv_quota = parse_size(v, 4 << 10, 256 << 20)?,
            "gateway" => {
                let ip: std::net::IpAddr = v.parse().map_err(|_| {
                    Error::invalid(format!(
                        "gateway={v}: give one address, such as 169.254.1.1"
                    ))
                })?;
                if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                    return Err(Error::invalid(format!(
                        "gateway={v}: not a unicast address a gateway can have"
                    )));
                }
                if !self.gateways.contains(&ip) {
                    self.gateways.push(ip);
                }
            }
            "vni" => {
                let (a, b) = match v.split_once('-') {
                    Some((a, b)) => (a.trim().parse::<u32>().ok(), b.trim().parse::<u32>().ok()),
                    None => (v.parse().ok(), v.parse().ok()),
                };
                match (a, b) {
                    (Some(a), Some(b)) if 1 <= a && a <= b && b < 1 << 24 => {
                        self.vni_ranges.push((a, b))
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "vni={v}: give N or A-B within 1–16777215"
                        )))
                    }
                }
            }
            "vxlan-port" => {
                let p: u16 =
                    v.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                        Error::invalid(format!("vxlan-port={v}: give a UDP port"))
                    })?;
                if !self.vxlan_ports.contains(&p) {
                    self.vxlan_ports.push(p);
                }
            }
            "macvlan-passthru" => {
                self.macvlan_passthru = crate::model::parse_bool(v).ok_or_else(|| {
                    Error::invalid(format!("macvlan-passthru={v}: use true or false"))
                })?
            }
            "http" => {
                check_authority(v)?;
                push_unique(&mut self.http_hosts, v);
            }
            "http-inflight" => self.http_inflight = parse_count(k, v, 4096)?,
            "http-requests" => self.http_requests = parse_count(k, v, 1_000_000)?,
            "inbound" => self.inbound_bytes = parse_size(v, 64 << 10, 4 << 30)?,
            "memory" => self.memory_bytes = parse_size(v, 1 << 20, 4 << 30)?,
            "deadline" => self.deadline_ms = parse_ms(v)?,
            "fuel" => {
                self.fuel = Some(
                    v.parse()
                        .map_err(|_| Error::invalid(format!("fuel={v}: use a whole number")))?,
                )
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown grant {other:?}: use one of {GRANT_KEYS}"
                )))
            }
        }
        Ok(())
    }

    /// May the plugin use this VNI?
    pub fn vni(&self, vni: u32) -> bool {
        self.vni_ranges.iter().any(|(a, b)| *a <= vni && vni <= *b)
    }

    /// Is `name` within this plugin's link prefix (a name it may give a new link)?
    pub fn owns_link(&self, name: &str) -> bool {
        match &self.link_prefix {
            Some(p) => {
                name.len() > p.len()
                    && name.starts_with(p.as_str())
                    && crate::net::link::valid_ifname(name)
            }
            None => false,
        }
    }

    /// May the plugin use `name` as a parent (its own links, or ones it was given)?
    pub fn may_use_parent(&self, name: &str) -> bool {
        self.owns_link(name) || self.parents.iter().any(|p| p == name)
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

pub fn check_prefix(p: &str) -> Result<()> {
    if p.len() < 2
        || p.len() > 8
        || !p
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(Error::invalid(format!(
            "link prefix {p:?}: use 2–8 characters of a-z, 0-9 and '-'"
        )));
    }
    if let Some(r) = RESERVED_PREFIXES
        .iter()
        .find(|r| p.starts_with(*r) || r.starts_with(p))
    {
        return Err(Error::invalid(format!(
            "link prefix {p:?} clashes with weft's own links ({r}…): choose another"
        )));
    }
    Ok(())
}

fn check_authority(v: &str) -> Result<()> {
    let ok = match v.rsplit_once(':') {
        Some((h, port)) => !h.is_empty() && port.parse::<u16>().is_ok(),
        None => !v.is_empty(),
    };
    if !ok || v.contains('/') || v.contains('@') {
        return Err(Error::invalid(format!(
            "http grant {v:?}: give host or host:port, such as netbox.lan:8000"
        )));
    }
    Ok(())
}

/// The grant keys, for messages.
const GRANT_KEYS: &str = "link-prefix, parent, sysctl, gateway, vni, vxlan-port, macvlan-passthru, kv, kv-quota, kv-global, http, http-inflight, http-requests, inbound, memory, deadline, fuel";

fn parse_count(key: &str, v: &str, max: u32) -> Result<u32> {
    match v.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Error::invalid(format!(
            "{key}={v}: give a whole number from 1 to {max}"
        ))),
    }
}

fn parse_size(v: &str, min: u64, max: u64) -> Result<u64> {
    let (n, mult) = match v.to_ascii_lowercase() {
        s if s.ends_with("gib") || s.ends_with('g') => (
            s.trim_end_matches("gib").trim_end_matches('g').to_string(),
            1u64 << 30,
        ),
        s if s.ends_with("mib") || s.ends_with('m') => (
            s.trim_end_matches("mib").trim_end_matches('m').to_string(),
            1u64 << 20,
        ),
        s if s.ends_with("kib") || s.ends_with('k') => (
            s.trim_end_matches("kib").trim_end_matches('k').to_string(),
            1u64 << 10,
        ),
        s => (s, 1),
    };
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("{v}: use a size such as 64M")))?;
    let bytes = n.saturating_mul(mult);
    if !(min..=max).contains(&bytes) {
        return Err(Error::invalid(format!(
            "{v}: use between {} KiB and {} MiB",
            min >> 10,
            max >> 20
        )));
    }
    Ok(bytes)
}

fn parse_ms(v: &str) -> Result<u64> {
    let ms = if let Some(n) = v.strip_suffix("ms") {
        n.trim().parse::<u64>().ok()
    } else if let Some(n) = v.strip_suffix('s') {
        n.trim().parse::<u64>().ok().map(|s| s * 1000)
    } else {
        v.parse::<u64>().ok()
    };
    match ms {
        Some(ms) if (1..=600_000).contains(&ms) => Ok(ms),
        _ => Err(Error::invalid(format!(
            "deadline={v}: use a duration such as 500ms or 2s (at most 600s)"
        ))),
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        writeln!(
            f,
            "  link-prefix  {}",
            self.link_prefix
                .as_deref()
                .unwrap_or("none (no host links)")
        )?;
        writeln!(f, "  parents      {}", list(&self.parents))?;
        writeln!(f, "  sysctls      {}", list(&self.sysctls))?;
        writeln!(
            f,
            "  kv           {}{}",
            self.kv_space,
            if self.kv_global {
                " (cluster-wide)"
            } else {
                ""
            }
        )?;
        writeln!(f, "  http         {}", list(&self.http_hosts))?;
        if !self.http_hosts.is_empty() {
            writeln!(
                f,
                "  http limits  {} open at once, {} per call",
                self.http_inflight, self.http_requests
            )?;
        }
        let gws: Vec<String> = self.gateways.iter().map(|g| g.to_string()).collect();
        writeln!(f, "  gateways     {}", list(&gws))?;
        let vnis: Vec<String> = self
            .vni_ranges
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        let ports: Vec<String> = self.vxlan_ports.iter().map(|p| p.to_string()).collect();
        writeln!(f, "  vni          {}", list(&vnis))?;
        writeln!(f, "  vxlan ports  {}", list(&ports))?;
        writeln!(
            f,
            "  passthru     {}",
            if self.macvlan_passthru { "yes" } else { "no" }
        )?;
        writeln!(f, "  kv quota     {} KiB", self.kv_quota >> 10)?;
        writeln!(f, "  memory       {} MiB", self.memory_bytes >> 20)?;
        writeln!(
            f,
            "  inbound      {} KiB per call",
            self.inbound_bytes >> 10
        )?;
        writeln!(f, "  deadline     {} ms per call", self.deadline_ms)?;
        write!(
            f,
            "  fuel         {}",
            self.fuel
                .map(|x| x.to_string())
                .unwrap_or_else(|| "unlimited".into())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_check() {
        let mut g = Grants::minimal("rt");
        for s in [
            "link-prefix=rt",
            "sysctl=proxy_arp",
            "parent=eth1",
            "memory=16M",
            "deadline=250ms",
            "http=netbox.lan:8000",
        ] {
            g.apply(s).unwrap();
        }
        assert_eq!(g.memory_bytes, 16 << 20);
        assert_eq!(g.deadline_ms, 250);
        assert!(g.owns_link("rt1234"));
        assert!(!g.owns_link("rt"), "the bare prefix is not a name");
        assert!(!g.owns_link("eth0"));
        assert!(!g.owns_link("rt12345678901234"), "too long for the kernel");
        assert!(g.may_use_parent("eth1"));
        assert!(!g.may_use_parent("eth0"));
        g.apply("gateway=169.254.1.1").unwrap();
        g.apply("vni=100-200").unwrap();
        g.apply("vxlan-port=4789").unwrap();
        assert!(g.vni(150) && !g.vni(99) && !g.vni(201));
        g.apply("http-inflight=2").unwrap();
        g.apply("http-requests=100").unwrap();
        g.apply("inbound=64M").unwrap();
        assert_eq!(
            (g.http_inflight, g.http_requests, g.inbound_bytes),
            (2, 100, 64 << 20)
        );
        for bad in [
            "link-prefix=en",
            "link-prefix=wg",
            "link-prefix=al",
            "kv-global=maybe",
            "gateway=0.0.0.0",
            "gateway=127.0.0.1",
            "vni=0",
            "vni=5-3",
            "vxlan-port=0",
            "link-prefix=veth",
            "link-prefix=e",
            "sysctl=ip_forward",
            "memory=1T",
            "deadline=0",
            "http=a/b",
            "http-inflight=0",
            "http-inflight=5000",
            "http-requests=x",
            "inbound=1k",
            "nope=1",
            "x",
        ] {
            assert!(g.clone().apply(bad).is_err(), "{bad} accepted");
        }
        assert!(check_prefix("br").is_err(), "br is a prefix of br-");
    }
}
