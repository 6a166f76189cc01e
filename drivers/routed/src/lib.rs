//! A Calico-style routed network driver, as a weft plugin: no bridge. Each endpoint gets a
//! veth whose host end has proxy ARP on and a /32 (/128) host route to the endpoint; the
//! sandbox's default route goes via the link-local gateway 169.254.1.1, which the host end
//! answers by proxy ARP. Sandboxes reach each other through the host's routing table.
//!
//! Grants it asks for: link prefix `rt`; the per-link sysctls proxy_arp, proxy_delay and
//! forwarding; the gateway address 169.254.1.1 (outside every subnet, so it must be granted);
//! no parents, no HTTP.

use std::net::IpAddr;

use weft_plugin_sdk as sdk;

wit_bindgen::generate!({
    path: "../../wit",
    world: "driver-plugin",
    with: { "weft:plugin/types@0.2.0": weft_plugin_sdk::types },
});

use exports::weft::plugin::network_driver::{
    DriverCapabilities, Endpoint, EndpointInfo, Guest as Driver, JoinInfo, Network, PortMapping,
};
use exports::weft::plugin::plugin::{Guest as Plugin, PluginMetadata, RequestedGrants};
use sdk::types::{Error, IpAddress, Scope};
use weft::plugin::host_net::{self as net, LinkSysctl, Route, RouteKind};
use weft::plugin::kv;
use weft::plugin::log::{log, Level};

const PREFIX: &str = "rt";
/// The gateway every sandbox routes through; the host end of its veth answers for it.
const GATEWAY: (u8, u8, u8, u8) = (169, 254, 1, 1);
const GATEWAY_IP: [u8; 4] = [169, 254, 1, 1];

struct Routed;

/// Host-side link of an endpoint (its other end is made inside the sandbox by the engine).
fn host_link(endpoint_id: &str) -> String {
    format!("{PREFIX}{}", sdk::short(endpoint_id, 10))
}

/// The link that anchors 169.254.1.1 on the host, so proxy ARP has a route to answer for.
fn anchor(network_id: &str) -> String {
    format!("{PREFIX}g{}", sdk::short(network_id, 10))
}

/// FNV-1a of an id.
fn fnv(id: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl Plugin for Routed {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "routed".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Calico-style routed networking: a veth and a host route per endpoint, proxy ARP, no bridge".into(),
            grants: RequestedGrants {
                link_prefix: Some(PREFIX.into()),
                parents: vec![],
                sysctls: vec!["proxy_arp".into(), "proxy_delay".into(), "forwarding".into()],
                http_hosts: vec![],
                memory_mib: Some(16),
                gateways: vec![sdk::addr(IpAddr::from(GATEWAY_IP))],
                vni_ranges: vec![],
                vxlan_ports: vec![],
                macvlan_passthru: false,
                config_keys: vec![],
            },
        }
    }
}

impl Driver for Routed {
    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            external_connectivity: false,
        }
    }

    fn create_network(n: Network) -> Result<(), Error> {
        if n.ipv4.is_empty() && n.ipv6.is_empty() {
            return Err(sdk::invalid("a routed network needs an address pool"));
        }
        let a = anchor(&n.id);
        net::create_bridge(&a, None)?;
        net::set_up(&a)?;
        // Every routed network anchors the gateway on its own link; the kernel keeps one
        // route per (destination, metric), so each takes a metric of its own.
        let mut metric = 1000 + fnv(&n.id) % 50_000;
        loop {
            let r = net::add_route_ex(&Route {
                destination: sdk::prefix(IpAddr::from(GATEWAY_IP), 32),
                next_hop: None,
                link: Some(a.clone()),
                metric: Some(metric),
                table: None,
                kind: RouteKind::Unicast,
            });
            match r {
                Err(Error::Conflict(_)) if metric < 1000 + 50_000 + 64 => metric += 1,
                r => break r?,
            }
        }
        kv::put(&format!("net/{}", n.id), a.as_bytes())?;
        log(Level::Info, &format!("routed network {} ready", n.name));
        Ok(())
    }

    fn delete_network(network_id: String) -> Result<(), Error> {
        if let Some(a) = text(kv::get(&format!("net/{network_id}"))?) {
            if net::link_exists(&a)? {
                net::delete_link(&a)?;
            }
        }
        kv::delete(&format!("net/{network_id}"))?;
        Ok(())
    }

    fn create_endpoint(ep: Endpoint) -> Result<EndpointInfo, Error> {
        if ep.ipv4.is_none() && ep.ipv6.is_none() {
            return Err(sdk::invalid("a routed endpoint needs an address"));
        }
        Ok(EndpointInfo { mac: None })
    }

    fn delete_endpoint(_network_id: String, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn join(ep: Endpoint, _sandbox_key: String) -> Result<JoinInfo, Error> {
        let host = host_link(&ep.id);
        net::create_sandbox_veth(&host, None)?;
        net::set_sysctl(&host, LinkSysctl::ProxyArp, "1")?;
        // Answer ARP at once, not after a random delay of up to 0.8 s.
        net::set_sysctl(&host, LinkSysctl::ProxyDelay, "0")?;
        net::set_sysctl(&host, LinkSysctl::Forwarding, "1")?;
        net::set_up(&host)?;
        let mut has_v6 = false;
        for p in [&ep.ipv4, &ep.ipv6].into_iter().flatten() {
            let ip = sdk::ip(&p.address);
            has_v6 |= ip.is_ipv6();
            let len = if ip.is_ipv4() { 32 } else { 128 };
            net::add_route(sdk::prefix(ip, len), None, &host)?;
        }
        if has_v6 {
            log(
                Level::Warn,
                "routed: IPv6 endpoints get a host route but no IPv6 default route",
            );
        }
        Ok(JoinInfo {
            link: host,
            ifname_prefix: "eth".into(),
            gateway4: Some(GATEWAY),
            gateway6: None,
            gateway_onlink: true,
            routes: vec![],
            mtu: None,
        })
    }

    fn leave(_network_id: String, endpoint_id: String) -> Result<(), Error> {
        let host = host_link(&endpoint_id);
        if net::link_exists(&host)? {
            net::delete_link(&host)?;
        }
        Ok(())
    }

    fn program_external_connectivity(
        _network_id: String,
        _endpoint_id: String,
        _ports: Vec<PortMapping>,
    ) -> Result<(), Error> {
        Ok(())
    }

    fn revoke_external_connectivity(
        _network_id: String,
        _endpoint_id: String,
    ) -> Result<(), Error> {
        Ok(())
    }

    fn discover_new(_peer: IpAddress) -> Result<(), Error> {
        Ok(())
    }

    fn discover_delete(_peer: IpAddress) -> Result<(), Error> {
        Ok(())
    }
}

export!(Routed);
