//! A Weave-style mesh network driver, as a weft plugin: one bridge and one VXLAN device per
//! network, with unicast FDB entries to every peer host it hears of (discover-new), kept in
//! its kv space so a new network learns the peers that came before it. On one host it
//! behaves as a bridge; across hosts, frames travel in VXLAN to the peers.
//!
//! Options: `vni` (default: derived from the network id, in 0x5e0000–0x5effff), `vxlan-port`
//! (4789), `parent` (underlay link, must be granted), `local` (underlay address, on the
//! parent), `mtu` (1450). Grants it asks for: link prefix `wm`, that VNI range, UDP port 4789.
//! FDB entries go only to peers the engine announced (`weft system peer add`).

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
use weft::plugin::host_net as net;
use weft::plugin::kv;
use weft::plugin::log::{log, Level};

const PREFIX: &str = "wm";
const FLOOD: (u8, u8, u8, u8, u8, u8) = (0, 0, 0, 0, 0, 0);
/// The VNIs it asks for: 0x5e0000–0x5effff (6160384–6225919), so it stays clear of other
/// VXLAN users on the host.
const VNI_FIRST: u32 = 0x5e_0000;
const VNI_LAST: u32 = 0x5e_ffff;

struct Mesh;

/// A network's devices, as kept in kv: "bridge vxlan vni mtu".
struct NetDevs {
    bridge: String,
    vxlan: String,
    mtu: u32,
}

fn devs(network_id: &str) -> Result<NetDevs, Error> {
    let raw = kv::get(&format!("net/{network_id}"))?
        .ok_or_else(|| sdk::not_found(format!("mesh network {network_id} is unknown")))?;
    let s = String::from_utf8_lossy(&raw).into_owned();
    let mut it = s.split_whitespace();
    let bridge = it.next().unwrap_or_default().to_string();
    let vxlan = it.next().unwrap_or_default().to_string();
    let _vni = it.next();
    let mtu = it.next().and_then(|m| m.parse().ok()).unwrap_or(1450);
    Ok(NetDevs { bridge, vxlan, mtu })
}

/// FNV-1a of the network id, folded into the VNI range it asks for.
fn derived_vni(id: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in id.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    VNI_FIRST | ((h ^ (h >> 16)) & 0xffff)
}

fn peers() -> Result<Vec<IpAddr>, Error> {
    Ok(kv::list_prefix("peer/")?
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix("peer/").and_then(|a| a.parse().ok()))
        .collect())
}

fn networks() -> Result<Vec<String>, Error> {
    Ok(kv::list_prefix("net/")?
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix("net/").map(str::to_string))
        .collect())
}

impl Plugin for Mesh {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "mesh".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Weave-style mesh: a bridge and a VXLAN device per network, FDB entries to every peer host".into(),
            grants: RequestedGrants {
                link_prefix: Some(PREFIX.into()),
                parents: vec![],
                sysctls: vec![],
                http_hosts: vec![],
                memory_mib: Some(16),
                gateways: vec![],
                vni_ranges: vec![(VNI_FIRST, VNI_LAST)],
                vxlan_ports: vec![4789],
                macvlan_passthru: false,
                config_keys: vec![],
            },
        }
    }
}

impl Driver for Mesh {
    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            external_connectivity: false,
        }
    }

    fn create_network(n: Network) -> Result<(), Error> {
        let id10 = sdk::short(&n.id, 10);
        let bridge = format!("{PREFIX}b{id10}");
        let vxlan = format!("{PREFIX}x{id10}");
        let vni = match sdk::option(&n.options, "vni") {
            Some(v) => v.parse().map_err(|_| {
                sdk::invalid(format!(
                    "vni {v:?}: give a number in {VNI_FIRST}–{VNI_LAST}"
                ))
            })?,
            None => derived_vni(&n.id),
        };
        let port = match sdk::option(&n.options, "vxlan-port") {
            Some(p) => p
                .parse()
                .map_err(|_| sdk::invalid(format!("vxlan-port {p:?}: give a UDP port")))?,
            None => 4789,
        };
        let mtu: u32 = match sdk::option(&n.options, "mtu") {
            Some(m) => m.parse().map_err(|_| sdk::invalid(format!("mtu {m:?}")))?,
            None => 1450,
        };
        let local = match sdk::option(&n.options, "local") {
            Some(a) => Some(sdk::addr(a.parse().map_err(|_| {
                sdk::invalid(format!("local {a:?}: give an IP address"))
            })?)),
            None => None,
        };
        let parent = sdk::option(&n.options, "parent").map(str::to_string);
        net::create_bridge(&bridge, Some(mtu))?;
        net::create_vxlan(&vxlan, vni, local, parent.as_deref(), port, true, Some(mtu))?;
        net::set_master(&vxlan, &bridge)?;
        net::set_up(&vxlan)?;
        net::set_up(&bridge)?;
        // The host reaches the mesh through the bridge, at the gateway address.
        for d in n.ipv4.iter().chain(n.ipv6.iter()) {
            if let Some(gw) = &d.gateway {
                net::add_address(&bridge, *gw)?;
            }
        }
        for p in peers()? {
            net::add_fdb(&vxlan, FLOOD, sdk::addr(p))?;
        }
        kv::put(
            &format!("net/{}", n.id),
            format!("{bridge} {vxlan} {vni} {mtu}").as_bytes(),
        )?;
        log(
            Level::Info,
            &format!("mesh network {} on VNI {vni}", n.name),
        );
        Ok(())
    }

    fn delete_network(network_id: String) -> Result<(), Error> {
        if let Ok(d) = devs(&network_id) {
            for l in [&d.vxlan, &d.bridge] {
                if net::link_exists(l)? {
                    net::delete_link(l)?;
                }
            }
        }
        kv::delete(&format!("net/{network_id}"))?;
        Ok(())
    }

    fn create_endpoint(_ep: Endpoint) -> Result<EndpointInfo, Error> {
        Ok(EndpointInfo { mac: None })
    }

    fn delete_endpoint(_network_id: String, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn join(ep: Endpoint, _sandbox_key: String) -> Result<JoinInfo, Error> {
        let d = devs(&ep.network_id)?;
        let e10 = sdk::short(&ep.id, 10);
        let host = format!("{PREFIX}v{e10}");
        net::create_sandbox_veth(&host, Some(d.mtu))?;
        net::set_master(&host, &d.bridge)?;
        net::set_up(&host)?;
        Ok(JoinInfo {
            link: host,
            ifname_prefix: "eth".into(),
            gateway4: None,
            gateway6: None,
            gateway_onlink: false,
            routes: vec![],
            mtu: Some(d.mtu),
        })
    }

    fn leave(_network_id: String, endpoint_id: String) -> Result<(), Error> {
        let host = format!("{PREFIX}v{}", sdk::short(&endpoint_id, 10));
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

    fn discover_new(peer: IpAddress) -> Result<(), Error> {
        let ip = sdk::ip(&peer);
        kv::put(&format!("peer/{ip}"), b"")?;
        for n in networks()? {
            let d = devs(&n)?;
            net::add_fdb(&d.vxlan, FLOOD, peer)?;
        }
        Ok(())
    }

    fn discover_delete(peer: IpAddress) -> Result<(), Error> {
        let ip = sdk::ip(&peer);
        kv::delete(&format!("peer/{ip}"))?;
        for n in networks()? {
            let d = devs(&n)?;
            match net::del_fdb(&d.vxlan, FLOOD, peer) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

export!(Mesh);
