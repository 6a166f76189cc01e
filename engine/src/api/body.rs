//! The Docker API's request bodies (API 1.50, moby v28.2.2 swagger), typed, and their
//! translation into the engine's requests. Every field the swagger names is listed, so
//! unknown fields can be refused; the operational zero values the CLI sends in an
//! EndpointSettings (`IPAddress: ""`, …) are accepted and ignored, as dockerd does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{ConnectOptions, IpamConfigRequest, NetworkCreate};

/// `POST /networks/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct CreateBody {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub internal: Option<bool>,
    #[serde(default)]
    pub attachable: Option<bool>,
    #[serde(default)]
    pub ingress: Option<bool>,
    #[serde(default)]
    pub config_only: Option<bool>,
    #[serde(default)]
    pub config_from: Option<ConfigFrom>,
    #[serde(default, rename = "IPAM")]
    pub ipam: Option<IpamBody>,
    #[serde(default, rename = "EnableIPv4")]
    pub enable_ipv4: Option<bool>,
    #[serde(default, rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Deprecated; sent by clients below API 1.44. Ignored, as dockerd ≥ 25 does.
    #[serde(default)]
    pub check_duplicate: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ConfigFrom {
    #[serde(default)]
    pub network: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct IpamBody {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub config: Option<Vec<IpamConfigBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct IpamConfigBody {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default, rename = "IPRange")]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub auxiliary_addresses: Option<BTreeMap<String, String>>,
}

/// `POST /networks/{id}/connect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ConnectBody {
    pub container: String,
    #[serde(default)]
    pub endpoint_config: Option<EndpointConfig>,
}

/// An EndpointSettings as a client sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct EndpointConfig {
    #[serde(default, rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpam>,
    #[serde(default)]
    pub links: Option<Vec<String>>,
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    #[serde(default)]
    pub mac_address: Option<String>,
    #[serde(default)]
    pub driver_opts: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub gw_priority: Option<i64>,
    // Operational fields: the CLI sends them as zero values; dockerd ignores them.
    #[serde(default, rename = "NetworkID")]
    pub network_id: Option<String>,
    #[serde(default, rename = "EndpointID")]
    pub endpoint_id: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default, rename = "IPAddress")]
    pub ip_address: Option<String>,
    #[serde(default, rename = "IPPrefixLen")]
    pub ip_prefix_len: Option<i64>,
    #[serde(default, rename = "IPv6Gateway")]
    pub ipv6_gateway: Option<String>,
    #[serde(default, rename = "GlobalIPv6Address")]
    pub global_ipv6_address: Option<String>,
    #[serde(default, rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: Option<i64>,
    #[serde(default, rename = "DNSNames")]
    pub dns_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointIpam {
    #[serde(default, rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
    #[serde(default, rename = "IPv6Address")]
    pub ipv6_address: Option<String>,
    #[serde(default, rename = "LinkLocalIPs")]
    pub link_local_ips: Option<Vec<String>>,
}

/// `POST /networks/{id}/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct DisconnectBody {
    pub container: String,
    #[serde(default)]
    pub force: Option<bool>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn cidr(s: &str, what: &str) -> Result<IpNetwork> {
    if s.contains('%') {
        return Err(Error::invalid(format!(
            "invalid {what} {s:?}: zones (%…) are not allowed in a network address"
        )));
    }
    s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} {s:?}: use CIDR notation, e.g. 172.30.0.0/16 or fd00::/64"
        ))
    })
}

pub(crate) fn ip(s: &str, what: &str) -> Result<IpAddr> {
    if s.contains('%') {
        return Err(Error::invalid(format!(
            "invalid {what} {s:?}: zones (%…) are not allowed"
        )));
    }
    s.parse()
        .map_err(|_| Error::invalid(format!("invalid {what} {s:?}: use an IP address")))
}

impl CreateBody {
    /// The engine's request; every address parsed, nothing defaulted that the engine decides.
    pub fn into_request(self) -> Result<NetworkCreate> {
        let ipam = self.ipam.unwrap_or(IpamBody {
            driver: None,
            options: None,
            config: None,
        });
        let mut ipam_config = Vec::new();
        for c in ipam.config.unwrap_or_default() {
            let mut aux = BTreeMap::new();
            for (k, v) in c.auxiliary_addresses.unwrap_or_default() {
                aux.insert(k, ip(&v, "auxiliary address")?);
            }
            ipam_config.push(IpamConfigRequest {
                subnet: nonempty(&c.subnet).map(|s| cidr(s, "subnet")).transpose()?,
                ip_range: nonempty(&c.ip_range)
                    .map(|s| cidr(s, "ip-range"))
                    .transpose()?,
                gateway: nonempty(&c.gateway).map(|s| ip(s, "gateway")).transpose()?,
                aux_addresses: aux,
            });
        }
        let _ = self.check_duplicate;
        Ok(NetworkCreate {
            name: self.name,
            driver: self.driver.filter(|d| !d.is_empty()),
            scope: self.scope.filter(|s| !s.is_empty()),
            internal: self.internal.unwrap_or(false),
            attachable: self.attachable.unwrap_or(false),
            ingress: self.ingress.unwrap_or(false),
            config_only: self.config_only.unwrap_or(false),
            config_from: self
                .config_from
                .map(|c| c.network)
                .filter(|n| !n.is_empty()),
            enable_ipv4: self.enable_ipv4,
            enable_ipv6: self.enable_ipv6,
            ipam_driver: ipam.driver.filter(|d| !d.is_empty()),
            ipam_options: ipam.options.unwrap_or_default(),
            ipam_config,
            options: self.options.unwrap_or_default(),
            labels: self.labels.unwrap_or_default(),
        })
    }
}

impl EndpointConfig {
    /// The parts of an EndpointSettings dockerd reads on connect.
    pub fn into_options(self) -> Result<ConnectOptions> {
        let ipam = self.ipam_config.unwrap_or_default();
        if ipam.link_local_ips.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(Error::InvalidEndpointSettings(
                "link-local IPs (--link-local-ip) are not supported by weft".into(),
            ));
        }
        Ok(ConnectOptions {
            ipv4: nonempty(&ipam.ipv4_address)
                .map(|s| ip(s, "IPv4 address"))
                .transpose()?,
            ipv6: nonempty(&ipam.ipv6_address)
                .map(|s| ip(s, "IPv6 address"))
                .transpose()?,
            aliases: self.aliases.unwrap_or_default(),
            links: self.links.unwrap_or_default(),
            mac: nonempty(&self.mac_address).map(str::to_string),
            driver_opts: self.driver_opts.unwrap_or_default(),
            gw_priority: self.gw_priority.unwrap_or(0),
            ifname: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_bodies_parse() {
        let b: CreateBody = serde_json::from_str(r#"{"Driver":"bridge","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"172.30.0.0/16","IPRange":"172.30.1.0/24","Gateway":"172.30.1.254"}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{"com.docker.network.driver.mtu":"9000"},"Labels":{"trial-bridge":""},"Name":"your-bridge"}"#).unwrap();
        let r = b.into_request().unwrap();
        assert_eq!(r.name, "your-bridge");
        assert_eq!(
            r.ipam_config[0].gateway.unwrap().to_string(),
            "172.30.1.254"
        );
        assert_eq!(r.scope, None);
        let c: ConnectBody = serde_json::from_str(r#"{"Container":"busybox-1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"172.30.1.9"},"Links":null,"Aliases":["search"],"MacAddress":"","DriverOpts":{},"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}"#).unwrap();
        let o = c.endpoint_config.unwrap().into_options().unwrap();
        assert_eq!(o.ipv4.unwrap().to_string(), "172.30.1.9");
        assert_eq!(o.aliases, vec!["search"]);
        assert!(o.mac.is_none());
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let e = serde_json::from_str::<CreateBody>(r#"{"Name":"x","Colour":"red"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `Colour`"), "{e}");
        let b: CreateBody =
            serde_json::from_str(r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"fe80::/64%eth0"}]}}"#)
                .unwrap();
        let e = b.into_request().unwrap_err().to_string();
        assert!(e.contains("zones"), "{e}");
        let b: CreateBody =
            serde_json::from_str(r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"10.0.0.0/33"}]}}"#)
                .unwrap();
        assert!(b.into_request().unwrap_err().to_string().contains("CIDR"));
    }
}
