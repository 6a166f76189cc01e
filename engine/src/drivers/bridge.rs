//! The bridge driver: a Linux bridge per network (`weft0` for the predefined `bridge`
//! network, `br-<id12>` or `com.docker.network.bridge.name` otherwise) holding the gateway
//! addresses; one veth per endpoint, created with its sandbox end already inside the
//! sandbox; masquerade, isolation and internal-ness in nftables; ICC off (with the ports
//! legacy links open) in nftables' bridge family.

use async_trait::async_trait;

use super::Ctx;
use super::{mtu_option, DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver};
use crate::error::{Error, Result};
use crate::firewall::{FwChange, IccLink, IccRules, NetRules};
use crate::model::{Network, Scope};
use crate::net::{NsRef, Step};

pub const OPT_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
pub const OPT_MASQ: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const OPT_DEFAULT: &str = "com.docker.network.bridge.default_bridge";
/// The kernel bridge of the predefined `bridge` network.
pub const DEFAULT_BRIDGE: &str = "weft0";

/// The bridge driver.
pub struct Bridge;

/// The bridge's own MAC: 02:42 (locally administered, as Docker's) and four bytes of the
/// network id.
fn bridge_mac(id: &str) -> String {
    let b = |i: usize| id.get(i..i + 2).unwrap_or("00");
    format!("02:42:{}:{}:{}:{}", b(0), b(2), b(4), b(6))
}

/// The bridge interface of a network.
pub fn bridge_name(net: &Network) -> String {
    if let Some(n) = net.driver_data.get("bridge") {
        return n.clone();
    }
    if let Some(n) = net.option(OPT_NAME) {
        return n.to_string();
    }
    if net.predefined {
        return DEFAULT_BRIDGE.to_string();
    }
    format!("br-{}", &net.id[..12])
}

/// The host-side veth name of an endpoint (15 characters, the kernel's limit).
pub fn host_veth(endpoint_id: &str) -> String {
    format!("veth{}", &endpoint_id[..11])
}

#[async_trait]
impl NetworkDriver for Bridge {
    fn name(&self) -> &str {
        "bridge"
    }

    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: true,
            attachment: super::Attachment::Endpoints,
            external_connectivity: false,
            long_calls: false,
        }
    }

    fn validate(&self, net: &Network, existing: &[Network]) -> Result<()> {
        let name = bridge_name(net);
        if !crate::net::link::valid_ifname(&name) {
            return Err(Error::invalid(format!(
                "invalid bridge name {name:?} in option {OPT_NAME}: use at most 15 characters of letters, digits, '-', '_' and '.'"
            )));
        }
        if let Some(other) = existing
            .iter()
            .find(|n| n.driver == "bridge" && bridge_name(n) == name)
        {
            return Err(Error::Conflict(format!(
                "bridge name {name} is already used by network {}: choose another {OPT_NAME}",
                other.name
            )));
        }
        mtu_option(net)?;
        net.bool_option(OPT_ICC, true)?;
        net.bool_option(OPT_MASQ, true)?;
        if let Some(h) = net.option(OPT_HOST_BINDING) {
            h.parse::<std::net::Ipv4Addr>().map_err(|_| {
                Error::invalid(format!(
                    "invalid host binding address {h:?} in option {OPT_HOST_BINDING}"
                ))
            })?;
        }
        Ok(())
    }

    async fn create_network(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> Result<()> {
        let br = bridge_name(net);
        if ctx.tx.link(&NsRef::Host, &br).await?.is_some() {
            return Err(Error::Conflict(format!(
                "a link named {br} already exists on this host: remove it or choose another {OPT_NAME}"
            )));
        }
        let mtu = mtu_option(net)?;
        make_bridge(ctx, net, &br, mtu).await?;
        net.driver_data.insert("bridge".into(), br);
        Ok(())
    }

    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
        target: &JoinTarget,
    ) -> Result<JoinInfo> {
        join_bridge(ctx, net, ep, target, &bridge_name(net), mtu_option(net)?).await
    }
}

/// A network's bridge, `br`, with its gateway addresses, sysctls and nftables rules
/// (masquerade, isolation, internal): the bridge driver's network, and the overlay driver's
/// local half.
pub(crate) async fn make_bridge(
    ctx: &mut Ctx<'_>,
    net: &Network,
    br: &str,
    mtu: Option<u32>,
) -> Result<()> {
    let br = br.to_string();
    ctx.tx
        .apply(Step::Bridge {
            name: br.clone(),
            mtu,
            // A fixed address: a bridge without one takes its lowest port's, and changes
            // it when that port leaves — every sandbox's ARP entry for the gateway then
            // points at nothing until it expires.
            mac: Some(bridge_mac(&net.id)),
        })
        .await?;
    for p in &net.pools {
        if let Some(gw) = p.gateway {
            let addr = ipnetwork::IpNetwork::new(gw, p.subnet.prefix()).map_err(Error::internal)?;
            ctx.tx
                .apply(Step::Address {
                    ns: NsRef::Host,
                    link: br.clone(),
                    addr,
                })
                .await?;
        }
    }
    if crate::net::sysctl::ipv6_available() {
        // A sandbox is never the host's router: router advertisements it sends must not
        // give the host a default route or an address on the bridge (CVE-2020-13401's
        // attack). Goes with the bridge.
        ctx.tx
            .apply(Step::Sysctl {
                ns: NsRef::Host,
                key: format!("net/ipv6/conf/{br}/accept_ra"),
                value: "0".into(),
                keep: true,
            })
            .await?;
    }
    if !net.internal {
        // Never undone (`keep`): other networks (and the host) may rely on forwarding too.
        let mut keys = vec!["net/ipv4/ip_forward"];
        if net.pools.iter().any(|p| p.is_v6()) {
            keys.push("net/ipv6/conf/all/forwarding");
        }
        // The host reaching a published port at 127.0.0.1:PORT: after DNAT the packet
        // leaves through the bridge with a loopback source, which the kernel drops unless
        // the bridge allows it (postrouting then masquerades it). Packets *to* 127/8
        // arriving on a bridge are dropped by weft's `guard` chain, so a sandbox cannot use
        // this to reach the host's loopback services (CVE-2020-8558's hole). Goes with
        // the bridge.
        let localnet = format!("net/ipv4/conf/{br}/route_localnet");
        keys.push(&localnet);
        for key in keys {
            ctx.tx
                .apply(Step::Sysctl {
                    ns: NsRef::Host,
                    key: key.into(),
                    value: "1".into(),
                    keep: true,
                })
                .await?;
        }
    }
    let rules = NetRules {
        id: net.id[..12].to_string(),
        iface: br.clone(),
        subnets: net.pools.iter().map(|p| p.subnet).collect(),
        internal: net.internal,
        masquerade: net.bool_option(OPT_MASQ, true)?,
    };
    ctx.tx
        .apply(Step::Firewall {
            change: FwChange::Add(rules),
        })
        .await?;
    Ok(())
}

/// An endpoint's veth on bridge `br` (its sandbox end made in place), hairpin, ICC elements:
/// the bridge driver's join, and the overlay driver's.
pub(crate) async fn join_bridge(
    ctx: &mut Ctx<'_>,
    net: &Network,
    ep: &EndpointInfo,
    target: &JoinTarget,
    br: &str,
    mtu: Option<u32>,
) -> Result<JoinInfo> {
    let host = host_veth(&ep.id);
    {
        ctx.tx
            .apply(Step::Veth {
                name: host.clone(),
                peer: target.ifname.clone(),
                peer_ns: target.ns.clone(),
                master: Some(br.to_string()),
                mtu,
                peer_mac: Some(ep.mac.clone()),
                group: None,
                peer_ipv6: ep.ipv6.is_some(),
            })
            .await
            .map_err(|e| match e.errno {
                // A bridge numbers its ports in 10 bits: 1 023 of them at most.
                Some(libc::EXFULL) => Error::Unavailable(format!(
                    "network {} is full: its bridge {br} has 1023 ports, the most a Linux \
                     bridge takes (connect to another network, or make one)",
                    net.name
                )),
                _ => e.into(),
            })?;
        ctx.tx.apply(Step::Hairpin { name: host.clone() }).await?;
        if crate::net::sysctl::ipv6_available() {
            // Nor is a neighbour the sandbox's router: weft gives the routes (CVE-2020-13401).
            ctx.tx
                .apply(Step::Sysctl {
                    ns: target.ns.clone(),
                    key: format!("net/ipv6/conf/{}/accept_ra", target.ifname),
                    value: "0".into(),
                    keep: true,
                })
                .await?;
        }
        if !net.bool_option(OPT_ICC, true)? {
            let mut links: Vec<IccLink> = target
                .links
                .iter()
                .flat_map(|l| {
                    l.ports.iter().map(|(proto, port)| IccLink {
                        peer: host_veth(&l.endpoint_id),
                        proto: proto.clone(),
                        port: *port,
                    })
                })
                .collect();
            links.sort();
            links.dedup();
            ctx.tx
                .apply(Step::Firewall {
                    change: FwChange::AddIcc(IccRules { port: host, links }),
                })
                .await?;
        }
        let mut info = JoinInfo::placed();
        info.mtu = mtu;
        if !net.internal {
            info.gateway4 = net.pools_v4().find_map(|p| p.gateway);
            info.gateway6 = net.pools_v6().find_map(|p| p.gateway);
        }
        Ok(info)
    }
}
