//! A CNI network configuration as the reference `bridge` plugin reads it (`bridge`, `mtu`,
//! `isGateway`, `ipMasq`, `hairpinMode`, `ipam` with host-local's `subnet`/`gateway`/`ranges`/
//! `routes`), plus what runtimes add (`runtimeConfig.portMappings`, `prevResult`,
//! `cni.dev/valid-attachments`, requested IPs), decoded strictly: what weft cannot do is an
//! error that says so, not silently ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::{code, CniError, SUPPORTED};
use crate::model::{IpamConfigRequest, Network, NetworkCreate, PortMapping};

#[derive(Debug, Clone, Default)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub bridge: Option<String>,
    pub mtu: Option<u64>,
    pub ip_masq: bool,
    /// None: weft's own IPAM (for `host-local`); else a weft IPAM by name.
    pub ipam_driver: Option<String>,
    pub subnets: Vec<(IpNetwork, Option<IpAddr>)>,
    pub dns: Option<Value>,
    pub ports: Vec<PortMapping>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<(String, String)>>,
    pub args_ip: Option<IpAddr>,
}

fn bad(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

fn unsupported(msg: impl Into<String>) -> CniError {
    CniError::new(code::UNSUPPORTED_FIELD, msg)
}

fn net_of(s: &str, what: &str) -> Result<IpNetwork, CniError> {
    s.parse::<IpNetwork>()
        .map_err(|_| bad(format!("{what} {s:?} is not a CIDR subnet")))
}

fn ip_of(s: &str, what: &str) -> Result<IpAddr, CniError> {
    s.parse::<IpAddr>()
        .map_err(|_| bad(format!("{what} {s:?} is not an IP address")))
}

impl NetConf {
    pub fn parse(input: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(input).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("failed to decode the network configuration: {e}"),
            )
        })?;
        let Some(obj) = v.as_object() else {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration must be a JSON object",
            ));
        };
        let version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("cniVersion is missing"))?;
        if !SUPPORTED.contains(&version) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "incompatible CNI versions: config is \"{version}\", weft supports [{}]",
                    SUPPORTED.map(|s| format!("\"{s}\"")).join(" ")
                ),
            ));
        }
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("name is missing"))?;
        let name_ok = !name.is_empty()
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !name_ok {
            return Err(bad(format!(
                "network name {name:?}: a letter or digit, then letters, digits, '_', '.' or '-'"
            )));
        }
        let mut c = NetConf {
            cni_version: version.to_string(),
            name: name.to_string(),
            ..Default::default()
        };
        c.bridge = obj
            .get("bridge")
            .and_then(Value::as_str)
            .map(str::to_string);
        c.mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(m) => Some(
                m.as_u64()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| bad(format!("mtu {m} must be a number from 68 to 65535")))?,
            ),
        };
        c.ip_masq = obj.get("ipMasq").and_then(Value::as_bool).unwrap_or(false);
        if let Some(ipam) = obj.get("ipam").filter(|v| !v.is_null()) {
            c.ipam(ipam)?;
        }
        c.dns = obj.get("dns").cloned().filter(|d| d.is_object());
        c.prev_result = obj.get("prevResult").cloned().filter(|p| p.is_object());
        if let Some(rc) = obj.get("runtimeConfig") {
            if let Some(pm) = rc.get("portMappings").and_then(Value::as_array) {
                for m in pm {
                    c.ports.push(port(m)?);
                }
            }
            if let Some(ip) = rc
                .get("ips")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                c.args_ip = ip.as_str().and_then(super::parse_ip);
            }
        }
        if let Some(ip) = obj
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|a| a.get("ips"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            c.args_ip = ip.as_str().and_then(super::parse_ip);
        }
        if let Ok(args) = std::env::var("CNI_ARGS") {
            for kv in args.split(';') {
                if let Some(ip) = kv.strip_prefix("IP=") {
                    c.args_ip = Some(ip_of(ip, "CNI_ARGS IP")?);
                }
            }
        }
        if let Some(va) = obj.get("cni.dev/valid-attachments") {
            let list = va
                .as_array()
                .ok_or_else(|| bad("cni.dev/valid-attachments must be a list"))?;
            let mut out = vec![];
            for a in list {
                let (Some(c), Some(i)) = (a["containerID"].as_str(), a["ifname"].as_str()) else {
                    return Err(bad(
                        "each valid attachment needs a containerID and an ifname",
                    ));
                };
                out.push((c.to_string(), i.to_string()));
            }
            c.valid_attachments = Some(out);
        }
        Ok(c)
    }

    fn ipam(&mut self, ipam: &Value) -> Result<(), CniError> {
        let ty = ipam["type"].as_str().unwrap_or("host-local");
        self.ipam_driver = match ty {
            "host-local" | "" => None,
            other => Some(other.to_string()),
        };
        let mut entries: Vec<&Value> = vec![];
        if ipam.get("subnet").is_some() {
            entries.push(ipam);
        }
        if let Some(ranges) = ipam.get("ranges").and_then(Value::as_array) {
            for set in ranges {
                let set = set
                    .as_array()
                    .ok_or_else(|| bad("ipam.ranges must be a list of lists"))?;
                if set.len() > 1 {
                    return Err(unsupported(
                        "ipam.ranges: weft takes one range per range set (one subnet per address family)",
                    ));
                }
                entries.extend(set.iter());
            }
        }
        for e in entries {
            let subnet = net_of(
                e["subnet"]
                    .as_str()
                    .ok_or_else(|| bad("ipam subnet must be a string"))?,
                "ipam subnet",
            )?;
            if e.get("rangeStart").is_some() || e.get("rangeEnd").is_some() {
                return Err(unsupported(
                    "ipam rangeStart/rangeEnd: weft allocates from the whole subnet (or a weft IPAM plugin's ranges: the host-local plugin takes range-start/range-end)",
                ));
            }
            let gw = match e.get("gateway").and_then(Value::as_str) {
                Some(g) => Some(ip_of(g, "ipam gateway")?),
                None => None,
            };
            self.subnets.push((subnet, gw));
        }
        if let Some(routes) = ipam.get("routes").and_then(Value::as_array) {
            for r in routes {
                let dst = r["dst"].as_str().unwrap_or_default();
                if !matches!(dst, "0.0.0.0/0" | "::/0") || r.get("gw").is_some() {
                    return Err(unsupported(format!(
                        "ipam route {r}: weft gives a container its default route through the network's gateway, and no other routes"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The weft network this config describes.
    pub fn network_create(&self) -> NetworkCreate {
        let mut options = BTreeMap::new();
        if let Some(b) = &self.bridge {
            options.insert("com.docker.network.bridge.name".into(), b.clone());
        }
        if let Some(m) = self.mtu {
            options.insert("com.docker.network.driver.mtu".into(), m.to_string());
        }
        options.insert(
            "com.docker.network.bridge.enable_ip_masquerade".into(),
            self.ip_masq.to_string(),
        );
        let mut labels = BTreeMap::new();
        labels.insert("weft.cni".into(), "true".into());
        NetworkCreate {
            name: self.name.clone(),
            driver: Some("bridge".into()),
            ipam_driver: self.ipam_driver.clone(),
            ipam_config: self
                .subnets
                .iter()
                .map(|(s, g)| IpamConfigRequest {
                    subnet: Some(*s),
                    gateway: *g,
                    ..Default::default()
                })
                .collect(),
            enable_ipv6: Some(self.subnets.iter().any(|(s, _)| s.is_ipv6())),
            options,
            labels,
            ..Default::default()
        }
    }

    /// An existing network serves this config only if it has the config's subnets.
    pub fn matches(&self, net: &Network) -> Result<(), CniError> {
        for (s, _) in &self.subnets {
            let want = IpNetwork::new(s.network(), s.prefix()).unwrap_or(*s);
            if !net.pools.iter().any(|p| p.subnet == want) {
                let have: Vec<String> = net.pools.iter().map(|p| p.subnet.to_string()).collect();
                return Err(bad(format!(
                    "network {} exists with subnet {}, not {want}: use another name, or remove it (weft network rm {})",
                    self.name,
                    have.join(", "),
                    self.name
                )));
            }
        }
        Ok(())
    }
}

fn port(m: &Value) -> Result<PortMapping, CniError> {
    let num = |k: &str| -> Result<u16, CniError> {
        m[k].as_u64()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| p as u16)
            .ok_or_else(|| {
                bad(format!(
                    "portMappings: {k} must be a port number (1-65535): {m}"
                ))
            })
    };
    let proto = m["protocol"].as_str().unwrap_or("tcp").to_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(format!(
            "portMappings: protocol {proto:?} (tcp, udp or sctp)"
        )));
    }
    let host_ip = match m["hostIP"].as_str().filter(|s| !s.is_empty()) {
        Some(h) => Some(ip_of(h, "portMappings hostIP")?),
        None => None,
    };
    Ok(PortMapping {
        proto,
        host_ip,
        host_port: num("hostPort")?,
        container_port: num("containerPort")?,
    })
}
