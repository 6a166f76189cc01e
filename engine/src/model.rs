//! The model (Docker's CNM, kept): networks, endpoints, sandboxes, and the requests that
//! create them. These are the records the store keeps and the engine hands out; the
//! Docker-shaped JSON views (`docker network inspect`, `docker inspect`) are built from them
//! in [`crate::view`]. A leaf: what weft made in the kernel for each object is kept apart
//! (the ownership records of [`crate::engine::records`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// A 64-hex-character identifier, like Docker's.
pub type Id = String;

/// Names of the three networks every engine has and nobody may create or remove.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// Scope of a network: this host only, or the whole cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Local,
    Global,
    Swarm,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
            Scope::Swarm => "swarm",
        }
    }
}

/// One IPAM pool of a network, as configured and as allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The IPAM driver's id for this pool (request-pool's answer).
    pub pool_id: String,
    pub subnet: IpNetwork,
    pub ip_range: Option<IpNetwork>,
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, IpAddr>,
    /// The user gave this subnet (`--subnet`), rather than the default pools.
    pub user_subnet: bool,
}

impl Pool {
    pub fn is_v6(&self) -> bool {
        self.subnet.is_ipv6()
    }
}

/// A network: a virtual switch with a driver, IPAM pools, options, labels and flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: Id,
    pub name: String,
    pub driver: String,
    pub scope: Scope,
    /// RFC 3339 with nanoseconds, like dockerd.
    pub created: String,
    pub enable_ipv4: bool,
    pub enable_ipv6: bool,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_only: bool,
    pub config_from: Option<String>,
    pub ipam_driver: String,
    pub ipam_options: BTreeMap<String, String>,
    pub pools: Vec<Pool>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// One of bridge/host/none.
    pub predefined: bool,
    /// The driver's kernel objects exist (the predefined bridge is created on first use).
    pub realized: bool,
    /// Opaque per-network data a driver keeps (e.g. the bridge name it chose).
    #[serde(default)]
    pub driver_data: BTreeMap<String, String>,
}

impl Network {
    /// A network record with nothing allocated yet: a fresh id, now as its creation time,
    /// IPv4 on, every flag off, no pools.
    pub fn blank(name: &str, driver: &str) -> Network {
        Network {
            id: new_id(),
            name: name.to_string(),
            driver: driver.to_string(),
            scope: Scope::Local,
            created: now_rfc3339(),
            enable_ipv4: true,
            enable_ipv6: false,
            internal: false,
            attachable: false,
            ingress: false,
            config_only: false,
            config_from: None,
            ipam_driver: "default".into(),
            ipam_options: BTreeMap::new(),
            pools: vec![],
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            predefined: false,
            realized: false,
            driver_data: BTreeMap::new(),
        }
    }

    pub fn pools_v4(&self) -> impl Iterator<Item = &Pool> {
        self.pools.iter().filter(|p| !p.is_v6())
    }
    pub fn pools_v6(&self) -> impl Iterator<Item = &Pool> {
        self.pools.iter().filter(|p| p.is_v6())
    }
    /// `true` when some pool's subnet was given by the user (static `--ip` is allowed only then).
    pub fn has_user_subnet(&self, v6: bool) -> bool {
        self.pools.iter().any(|p| p.is_v6() == v6 && p.user_subnet)
    }
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
    /// A boolean driver option, with Docker's parsing (`true`/`false`/`1`/`0`).
    pub fn bool_option(&self, key: &str, default: bool) -> crate::Result<bool> {
        match self.option(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| {
                crate::Error::invalid(format!(
                    "invalid value {v:?} for option {key}: use true or false"
                ))
            }),
        }
    }
}

/// Go's strconv.ParseBool.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One attachment of one sandbox to one network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: Id,
    pub network_id: Id,
    pub sandbox_id: Id,
    /// The sandbox's name (Docker shows the container name here).
    pub name: String,
    /// The interface name inside the sandbox (eth0, eth1…).
    pub ifname: String,
    pub mac: String,
    pub ipv4: Option<IpNetwork>,
    pub ipv6: Option<IpNetwork>,
    pub pool_v4: Option<String>,
    pub pool_v6: Option<String>,
    pub gateway_v4: Option<IpAddr>,
    pub gateway_v6: Option<IpAddr>,
    /// The gateway is not on the endpoint's subnet; its route is on-link.
    #[serde(default)]
    pub gateway_onlink: bool,
    /// What the user asked for (shown back as `IPAMConfig`).
    pub requested_v4: Option<IpAddr>,
    pub requested_v6: Option<IpAddr>,
    pub aliases: Vec<String>,
    pub links: Vec<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub gw_priority: i64,
    /// Connect order within the sandbox; the earliest eligible endpoint carries the default route.
    pub order: u64,
    /// This endpoint's gateway is the sandbox's default route.
    pub default_route: bool,
    /// On a global network: the host it is on (what other hosts program their FDB and
    /// neighbour entries towards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<EndpointHost>,
}

/// The host of an endpoint of a global network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointHost {
    /// The host's id in the cluster.
    pub id: String,
    /// Its VTEP (underlay) address.
    pub vtep: IpAddr,
}

/// How a sandbox gets its network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NsMode {
    /// A namespace weft created and pinned under the run dir.
    Owned,
    /// A namespace given by path (`--netns /proc/PID/ns/net`): weft never removes it.
    External,
    /// The host's own namespace (`--network host`).
    Host,
    /// Loopback only (`--network none`), in a namespace weft owns.
    None,
    /// Another sandbox's namespace (`--network container:NAME`).
    Container { id: Id },
}

/// A network namespace: what a container sees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: Id,
    pub name: String,
    pub created: String,
    /// Docker's `HostConfig.NetworkMode`: `bridge`, `host`, `none`, `container:ID`, or a network name.
    pub network_mode: String,
    pub mode: NsMode,
    /// The namespace path (`SandboxKey`).
    pub key: PathBuf,
    /// Next connect order number.
    pub next_order: u64,
    /// `--dns`: the servers names that are not sandboxes' are asked of.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// `--dns-search` and `--dns-option`: written to the sandbox's resolv.conf.
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--hostname` (default: the short id), what `sandbox exec` sets and /etc/hosts names.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Published ports, host ports as allocated.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// `--expose`d ports (host port 0): what legacy links tell linking sandboxes about.
    #[serde(default)]
    pub exposed: Vec<PortMapping>,
    /// Who made it and for what, recorded (a CNI runtime's container id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What `network create` asks for (the Docker API's NetworkCreateRequest, typed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: Option<String>,
    pub scope: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_only: bool,
    pub config_from: Option<String>,
    pub enable_ipv4: Option<bool>,
    pub enable_ipv6: Option<bool>,
    pub ipam_driver: Option<String>,
    pub ipam_options: BTreeMap<String, String>,
    pub ipam_config: Vec<IpamConfigRequest>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// One `IPAM.Config` entry of a create request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfigRequest {
    pub subnet: Option<IpNetwork>,
    pub ip_range: Option<IpNetwork>,
    pub gateway: Option<IpAddr>,
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

/// What `network connect` asks for (the parts of EndpointSettings dockerd reads).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectOptions {
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub aliases: Vec<String>,
    pub links: Vec<String>,
    pub mac: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub gw_priority: i64,
    /// The interface's name in the sandbox (a CNI runtime's `CNI_IFNAME`); none: the next
    /// free `ethN`.
    pub ifname: Option<String>,
}

/// One published port (`-p HOSTIP:HOSTPORT:CPORT/PROTO`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// tcp, udp or sctp.
    pub proto: String,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// What `sandbox create` asks for.
#[derive(Debug, Clone, Default)]
pub struct SandboxCreate {
    pub name: String,
    /// `bridge` when unset; also `host`, `none`, `container:NAME`, or a network.
    pub network: Option<String>,
    /// Connect options for that first network.
    pub connect: ConnectOptions,
    /// Use this existing namespace instead of creating one.
    pub netns: Option<PathBuf>,
    /// `--dns`, `--dns-search`, `--dns-option`.
    pub dns: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-p`: ports to publish (host port 0: any free one).
    pub ports: Vec<PortMapping>,
    /// `--expose`: ports the sandbox serves.
    pub exposed: Vec<PortMapping>,
    /// Recorded with the sandbox.
    pub labels: BTreeMap<String, String>,
}

/// Filters for `network ls` / `network prune` (Docker's `--filter k=v`, already split).
#[derive(Debug, Clone, Default)]
pub struct NetworkFilters {
    pub filters: BTreeMap<String, Vec<String>>,
}

impl NetworkFilters {
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> crate::Result<Self> {
        let mut f = NetworkFilters::default();
        for item in items {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                crate::Error::invalid(format!(
                    "bad format of filter (expected name=value): {item}"
                ))
            })?;
            f.filters
                .entry(k.trim().to_lowercase())
                .or_default()
                .push(v.to_string());
        }
        Ok(f)
    }
}

/// Fresh random 64-hex id.
pub fn new_id() -> Id {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("getrandom");
    hex::encode(b)
}

/// Now, as dockerd writes `Created` (RFC 3339 with nanoseconds, UTC).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    now.format(&fmt).unwrap_or_default()
}

/// Docker's name rule for containers, which weft applies to sandbox names.
pub fn valid_sandbox_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Network names: anything printable without spaces or slashes keeps the kernel and the CLI
/// out of trouble.
pub fn valid_network_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != '\\' && c != ':')
}

impl PortMapping {
    /// The host address as Docker shows it (`0.0.0.0` for every address).
    pub fn host_ip_text(&self) -> String {
        self.host_ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "0.0.0.0".into())
    }

    /// Docker's `-p [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/PROTO]`: one mapping per port of the
    /// range (host port 0: any free one).
    pub fn parse(spec: &str) -> crate::Result<Vec<PortMapping>> {
        let bad = |why: &str| {
            crate::Error::invalid(format!(
                "invalid port specification {spec:?}: {why} (use [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp|sctp])"
            ))
        };
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p.to_ascii_lowercase()),
            None => (spec, "tcp".to_string()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(bad("the protocol must be tcp, udp or sctp"));
        }
        let port = |s: &str, what: &str| -> crate::Result<u16> {
            match s.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(bad(&format!("{what} {s:?} is not a port number"))),
            }
        };
        let range = |s: &str, what: &str| -> crate::Result<Vec<u16>> {
            match s.split_once('-') {
                None => Ok(vec![port(s, what)?]),
                Some((a, b)) => {
                    let (a, b) = (port(a, what)?, port(b, what)?);
                    if a > b {
                        return Err(bad(&format!("the {what} range {a}-{b} runs backwards")));
                    }
                    Ok((a..=b).collect())
                }
            }
        };
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (host_ip, hosts, cports) = match parts.as_slice() {
            [c] => (None, None, range(c, "container port")?),
            [c, h] => (
                None,
                Some(range(h, "host port")?),
                range(c, "container port")?,
            ),
            [c, h, ip] => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| bad("the host IP is not an address"))?;
                let hp = if h.is_empty() {
                    None
                } else {
                    Some(range(h, "host port")?)
                };
                (Some(ip), hp, range(c, "container port")?)
            }
            _ => return Err(bad("too many parts")),
        };
        let hosts = match hosts {
            None => vec![0; cports.len()],
            Some(h) if h.len() == cports.len() => h,
            Some(_) => {
                return Err(bad(
                    "the host and container port ranges must have the same length",
                ))
            }
        };
        Ok(hosts
            .into_iter()
            .zip(cports)
            .map(|(host_port, container_port)| PortMapping {
                proto: proto.clone(),
                host_ip,
                host_port,
                container_port,
            })
            .collect())
    }
}

/// A hostname as RFC 1123 allows it: dot-separated labels of letters, digits and inner
/// hyphens, each 1–63 characters, 253 in all.
pub fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The MAC Docker derives from an IPv4 address: 02:42 followed by the four address bytes.
pub fn mac_from_ipv4(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// A random locally administered unicast MAC (02:42 prefix, like Docker's).
pub fn random_mac() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("getrandom");
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_docker_style() {
        assert_eq!(
            mac_from_ipv4("172.17.0.2".parse().unwrap()),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            parse_mac("02:42:ac:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:02:03"), None);
    }

    #[test]
    fn ids_and_names() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(valid_sandbox_name("busybox-1"));
        assert!(!valid_sandbox_name("-x"));
        assert!(!valid_sandbox_name("a b"));
        assert!(valid_network_name("your-bridge"));
        assert!(!valid_network_name("a/b"));
    }

    #[test]
    fn created_is_rfc3339_nanos() {
        let c = now_rfc3339();
        assert!(
            time::OffsetDateTime::parse(&c, &time::format_description::well_known::Rfc3339).is_ok(),
            "{c}"
        );
        assert_eq!(c.len(), "2016-10-19T04:33:30.360899459Z".len());
    }
}
