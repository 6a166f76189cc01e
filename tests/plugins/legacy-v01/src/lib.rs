//! A bridge driver built against the frozen contract `weft:plugin@0.1.0` (wit/v0.1), as a
//! plugin from before 0.2 was: the engine must keep running it through its adapter. One
//! bridge per network holding the gateway address, one veth per endpoint on it. No SDK (the
//! SDK speaks 0.2), so the few helpers it needs are here.

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "driver-plugin" });

use exports::weft::plugin::network_driver::{
    DriverCapabilities, Endpoint, EndpointInfo, Guest as Driver, JoinInfo, Network,
};
use exports::weft::plugin::plugin::{Guest as Plugin, PluginMetadata, RequestedGrants};
use weft::plugin::host_net as net;
use weft::plugin::kv;
use weft::plugin::log::{log, Level};
use weft::plugin::types::{Error, IpAddress, Scope};

struct Legacy;

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

impl Plugin for Legacy {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "legacy".into(),
            version: "0.1.0".into(),
            description: "a bridge driver on contract 0.1".into(),
            grants: RequestedGrants {
                link_prefix: Some("lg".into()),
                parents: vec![],
                sysctls: vec![],
                http_hosts: vec![],
                memory_mib: Some(16),
            },
        }
    }
}

impl Driver for Legacy {
    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
        }
    }

    fn create_network(n: Network) -> Result<(), Error> {
        let b = format!("lgb{}", short(&n.id));
        net::create_bridge(&b, None)?;
        for d in &n.ipv4 {
            if let Some(gw) = d.gateway {
                net::add_address(&b, gw)?;
            }
        }
        net::set_up(&b)?;
        kv::put(&format!("net/{}", n.id), b.as_bytes())?;
        log(Level::Info, &format!("legacy network {} on {b}", n.name));
        Ok(())
    }

    fn delete_network(network_id: String) -> Result<(), Error> {
        let b = format!("lgb{}", short(&network_id));
        if net::link_exists(&b)? {
            net::delete_link(&b)?;
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
        let b = kv::get(&format!("net/{}", ep.network_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .ok_or_else(|| Error::NotFound(format!("network {} is unknown", ep.network_id)))?;
        let host = format!("lgv{}", short(&ep.id));
        net::create_sandbox_veth(&host, None)?;
        net::set_master(&host, &b)?;
        net::set_up(&host)?;
        Ok(JoinInfo {
            link: host,
            ifname_prefix: "eth".into(),
            gateway4: None,
            gateway6: None,
            gateway_onlink: false,
            routes: vec![],
            mtu: None,
        })
    }

    fn leave(_network_id: String, endpoint_id: String) -> Result<(), Error> {
        let host = format!("lgv{}", short(&endpoint_id));
        if net::link_exists(&host)? {
            net::delete_link(&host)?;
        }
        Ok(())
    }

    fn discover_new(_peer: IpAddress) -> Result<(), Error> {
        Ok(())
    }

    fn discover_delete(_peer: IpAddress) -> Result<(), Error> {
        Ok(())
    }
}

export!(Legacy);
