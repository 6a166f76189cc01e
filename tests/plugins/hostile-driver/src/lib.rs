//! A hostile network driver for weft's tests: each network option `hostile=<what>` makes it
//! misbehave in one way (loop, trap, reach outside its grants, return nonsense). Without the
//! option it is a well-behaved veth driver.

use weft_plugin_sdk as sdk;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "driver-plugin",
    with: { "weft:plugin/types@0.1.0": weft_plugin_sdk::types },
});

use exports::weft::plugin::network_driver::{
    DriverCapabilities, Endpoint, EndpointInfo, Guest as Driver, JoinInfo, Network,
};
use exports::weft::plugin::plugin::{Guest as Plugin, PluginMetadata, RequestedGrants};
use sdk::types::{Error, IpAddress, Scope};
use weft::plugin::host_net as net;
use weft::plugin::kv;

struct Hostile;

fn mode(network_id: &str) -> String {
    kv::get(&format!("mode/{network_id}"))
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

impl Plugin for Hostile {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "hostile-driver".into(),
            version: "0.0.1".into(),
            description: "misbehaves on purpose (tests)".into(),
            grants: RequestedGrants {
                link_prefix: Some("hx".into()),
                parents: vec![],
                sysctls: vec![],
                http_hosts: vec![],
                memory_mib: None,
            },
        }
    }
}

impl Driver for Hostile {
    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
        }
    }

    fn create_network(n: Network) -> Result<(), Error> {
        let m = sdk::option(&n.options, "hostile").unwrap_or("").to_string();
        kv::put(&format!("mode/{}", n.id), m.as_bytes())?;
        match m.as_str() {
            // Make a link of its own, then one outside its prefix.
            "foreign-link" => {
                net::create_bridge("hxok0", None)?;
                net::create_bridge("evil0", None)
            }
            "touch-eth0" => net::set_mtu("eth0", 1280),
            "delete-eth0" => net::delete_link("eth0"),
            "other-prefix" => net::create_veth("rtx1", "rtx2", None),
            "route-hijack" => {
                net::create_bridge("hxb0", None)?;
                net::set_up("hxb0")?;
                net::add_route(sdk::prefix("8.8.8.0".parse().unwrap(), 24), None, "hxb0")
            }
            "kv-snoop" => {
                // Try to read what other plugins keep (host-local's pools, routed's endpoints)
                // through every key shape that might escape this plugin's space.
                let mut seen = 0;
                for k in [
                    "pool/",
                    "ep/",
                    "../host-local/pool/",
                    "\u{0}host-local",
                    "/",
                    "",
                ] {
                    seen += kv::list_prefix(k)
                        .map(|v| v.iter().filter(|(k, _)| !k.starts_with("mode/")).count())
                        .unwrap_or(0);
                }
                if seen > 0 {
                    Err(sdk::internal(format!("LEAK: saw {seen} foreign keys")))
                } else {
                    Err(sdk::not_found("no foreign kv data is visible"))
                }
            }
            _ => Ok(()),
        }
    }

    fn delete_network(network_id: String) -> Result<(), Error> {
        if mode(&network_id) == "notfound-delete" {
            return Err(sdk::not_found("this plugin knows no such network"));
        }
        kv::delete(&format!("mode/{network_id}"))?;
        Ok(())
    }

    fn create_endpoint(ep: Endpoint) -> Result<EndpointInfo, Error> {
        match mode(&ep.network_id).as_str() {
            "trap-endpoint" => panic!("hostile driver panics in create-endpoint"),
            "multicast-mac" => Ok(EndpointInfo {
                mac: Some((0x01, 0, 0x5e, 0, 0, 1)),
            }),
            _ => Ok(EndpointInfo { mac: None }),
        }
    }

    fn delete_endpoint(_network_id: String, _endpoint_id: String) -> Result<(), Error> {
        Ok(())
    }

    fn join(ep: Endpoint, _sandbox_key: String) -> Result<JoinInfo, Error> {
        let m = mode(&ep.network_id);
        let e = sdk::short(&ep.id, 10);
        let (host, peer) = (format!("hxv{e}"), format!("hxp{e}"));
        net::create_veth(&host, &peer, None)?;
        net::set_up(&host)?;
        let mut info = JoinInfo {
            link: peer,
            ifname_prefix: "eth".into(),
            gateway4: None,
            gateway6: None,
            gateway_onlink: false,
            routes: vec![],
            mtu: None,
        };
        match m.as_str() {
            "loop-join" => {
                let mut x: u64 = 0;
                loop {
                    x = x.wrapping_add(1);
                    core::hint::black_box(x);
                }
            }
            "foreign-join-link" => info.link = "eth0".into(),
            "ghost-link" => info.link = "hxghost".into(),
            "bad-gateway" => info.gateway4 = Some((10, 99, 99, 99)),
            _ => {}
        }
        Ok(info)
    }

    fn leave(network_id: String, endpoint_id: String) -> Result<(), Error> {
        // A removal hook that adds to the host: nothing may outlive the operation.
        if mode(&network_id) == "leave-adds" {
            let b = format!("hxl{}", sdk::short(&endpoint_id, 8));
            net::create_bridge(&b, None)?;
            net::set_up(&b)?;
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

export!(Hostile);
