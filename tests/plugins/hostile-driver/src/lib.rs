//! A hostile network driver for weft's tests: each network option `hostile=<what>` makes it
//! misbehave in one way (loop, trap, sleep on a WASI clock, reach outside its grants, flood
//! the kv store or the log, return nonsense). `hostile=allowed` does, once each, every
//! kind of call the others abuse, inside the grants: the positive control. Without the
//! option it is a well-behaved veth driver.
//!
//! Its tests grant it: link prefix `hx`, the sysctl proxy_arp, VNIs 7000–7099, VXLAN port
//! 4789, the parent `hup0` (which has 10.77.0.1/24), a small kv quota, and the config keys
//! `greeting` and `token` (a secret).

use std::net::IpAddr;

use weft_plugin_sdk as sdk;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "driver-plugin",
    with: { "weft:plugin/types@0.2.0": weft_plugin_sdk::types },
});

use exports::weft::plugin::network_driver::{
    DriverCapabilities, Endpoint, EndpointInfo, Guest as Driver, JoinInfo, Network, PortMapping,
    StaticRoute,
};
use exports::weft::plugin::plugin::{Guest as Plugin, PluginMetadata, RequestedGrants};
use sdk::types::{Error, IpAddress, Scope};
use weft::plugin::config;
use weft::plugin::host_net::{self as net, LinkSysctl, MacvlanMode, Route, RouteKind};
use weft::plugin::kv;
use weft::plugin::log::{log, Level};

struct Hostile;

const FLOOD: (u8, u8, u8, u8, u8, u8) = (0, 0, 0, 0, 0, 0);

fn mode(network_id: &str) -> String {
    kv::get(&format!("mode/{network_id}"))
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

/// A key of the shapes the other plugins write (host-local's pools and addresses, routed's
/// and mesh's networks): never one of this plugin's own.
fn foreign(k: &str) -> bool {
    ["pool/", "used/", "last/", "net/"]
        .iter()
        .any(|p| k.contains(p))
        || k.contains("host-local")
}

fn ip(s: &str) -> IpAddress {
    sdk::addr(s.parse::<IpAddr>().unwrap())
}

fn pfx(s: &str) -> sdk::types::IpPrefix {
    sdk::parse_prefix(s).unwrap()
}

/// The network's first subnet and its gateway (or .1).
fn first_subnet(n: &Network) -> (sdk::types::IpPrefix, sdk::types::IpPrefix) {
    let d = &n.ipv4[0];
    let gw = d.gateway.unwrap_or_else(|| {
        let (base, _) = sdk::span(&d.pool);
        sdk::prefix(sdk::from_u128(base + 1, false), d.pool.prefix_len)
    });
    (d.pool, gw)
}

fn route(dst: &str, link: Option<&str>, table: Option<u32>, kind: RouteKind) -> Route {
    Route {
        destination: pfx(dst),
        next_hop: None,
        link: link.map(str::to_string),
        metric: None,
        table,
        kind,
    }
}

/// A bridge of its own to hang things on.
fn bridge() -> Result<(), Error> {
    net::create_bridge("hxb0", None)?;
    net::set_up("hxb0")
}

impl Plugin for Hostile {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "hostile-driver".into(),
            version: "0.0.1".into(),
            description: "misbehaves on purpose (tests)".into(),
            grants: RequestedGrants {
                link_prefix: Some("hx".into()),
                parents: vec!["hup0".into()],
                sysctls: vec!["proxy_arp".into()],
                http_hosts: vec![],
                memory_mib: Some(32),
                gateways: vec![],
                vni_ranges: vec![(7000, 7099)],
                vxlan_ports: vec![4789],
                macvlan_passthru: false,
                config_keys: vec!["greeting".into(), "token".into()],
            },
        }
    }
}

fn create(n: &Network, m: &str) -> Result<(), Error> {
    let (subnet, gw) = first_subnet(n);
    match m {
        // ---- links outside the prefix, or inside it but not made by this plugin
        "foreign-link" => {
            net::create_bridge("hxok0", None)?;
            net::create_bridge("evil0", None)
        }
        "touch-eth0" => net::set_mtu("eth0", 1280),
        "delete-eth0" => net::delete_link("eth0"),
        "other-prefix" => net::create_veth("rtx1", "rtx2", None),
        // hxhost0 is named like this plugin's links, but the test made it.
        "delete-foreign" => net::delete_link("hxhost0"),
        "sysctl-foreign" => net::set_sysctl("hxhost0", LinkSysctl::ProxyArp, "1"),
        "sysctl-all" => net::set_sysctl("all", LinkSysctl::ProxyArp, "1"),
        "sysctl-default" => net::set_sysctl("default", LinkSysctl::ProxyArp, "1"),
        "list-links" => {
            bridge()?;
            let mine = net::list_links()?;
            Err(sdk::not_found(format!("own links: {mine:?}")))
        }
        // ---- addresses and routes beyond the network's subnets
        "route-hijack" => {
            bridge()?;
            net::add_route(pfx("8.8.8.0/24"), None, "hxb0")
        }
        "wide-address" => {
            // The gateway's own address, with a prefix that covers half the Internet.
            bridge()?;
            net::add_address("hxb0", sdk::prefix(sdk::ip(&gw.address), 1))
        }
        "ll-address" => {
            bridge()?;
            net::add_address("hxb0", pfx("169.254.7.7/1"))
        }
        "v6-default" => {
            bridge()?;
            net::add_address("hxb0", pfx("fe80::1/0"))
        }
        "route-metadata" => {
            bridge()?;
            net::add_route(pfx("169.254.169.254/32"), None, "hxb0")
        }
        "route-gateway" => {
            bridge()?;
            net::add_route(pfx("169.254.1.1/32"), None, "hxb0")
        }
        "blackhole-default" => {
            net::add_route_ex(&route("0.0.0.0/0", None, None, RouteKind::Blackhole))
        }
        "route-local-table" => {
            bridge()?;
            net::add_route_ex(&route(
                &sdk::fmt_prefix(&subnet),
                Some("hxb0"),
                Some(255),
                RouteKind::Unicast,
            ))
        }
        // ---- VXLAN, FDB, macvlan beyond the grants
        "vxlan-port" => net::create_vxlan("hxx0", 7000, None, None, 53, true, None),
        "vxlan-vni" => net::create_vxlan("hxx0", 42, None, None, 4789, true, None),
        "vxlan-local" => net::create_vxlan(
            "hxx0",
            7000,
            Some(ip("10.77.9.9")),
            Some("hup0"),
            4789,
            true,
            None,
        ),
        "fdb-nonpeer" => {
            net::create_vxlan("hxx0", 7000, None, None, 4789, true, None)?;
            net::add_fdb("hxx0", FLOOD, ip("198.51.100.9"))
        }
        "passthru" => net::create_macvlan("hxm0", "hup0", MacvlanMode::Passthru),
        // ---- the store and the log
        "kv-flood" => {
            let v = vec![b'x'; 60 << 10];
            for i in 0..10_000 {
                kv::put(&format!("flood/{i}"), &v)?;
            }
            Err(sdk::internal("LEAK: wrote 600 MB to kv"))
        }
        "kv-cas-big" => {
            let v = vec![b'x'; 3 << 19];
            kv::compare_and_swap("big", None, Some(&v)).map(|_| ())
        }
        "log-flood" => {
            let line = format!("\u{1b}[31mred\u{7}{}", "y".repeat(4000));
            for _ in 0..20_000 {
                log(Level::Error, &line);
            }
            Err(sdk::not_found("logged 80 MB"))
        }
        "big-error" => Err(sdk::internal(format!(
            "\u{1b}]0;title\u{7}{}",
            "z".repeat(512 << 10)
        ))),
        // ---- the clock: a WASI sleep the epoch deadline cannot interrupt
        "wasi-sleep" => {
            // A link first, so a test sees the call is under way (undone with the call).
            net::create_veth("hxs0", "hxs1", None)?;
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Err(sdk::internal("LEAK: slept an hour"))
        }
        // ---- configuration
        "config" => Err(sdk::not_found(format!(
            "greeting={:?} keys={:?}",
            config::get("greeting"),
            config::keys()
        ))),
        "leak-secret" => {
            let t = config::get("token").unwrap_or_default();
            log(Level::Warn, &format!("the token is {t}"));
            eprintln!("stderr: the token is {t}");
            Err(sdk::internal(format!("token={t}")))
        }
        // ---- link kinds the kernel may not have: each says so, or works
        "tunnels" => {
            let say = |r: Result<(), Error>| match r {
                Ok(()) => "made".to_string(),
                Err(Error::Unsupported(m)) => format!("unsupported ({m})"),
                Err(e) => format!("failed ({e:?})"),
            };
            Err(sdk::not_found(format!(
                "ipip: {}; geneve: {}; wireguard: {}",
                say(net::create_ipip("hxi0", None, None, None)),
                say(net::create_geneve("hxg0", 7002, ip("192.0.2.20"), 4789)),
                say(net::create_wireguard("hxw0")),
            )))
        }
        // ---- a link to steal later (see join)
        "keep-link" => {
            net::create_veth("hxk0", "hxk1", None)?;
            kv::put("stolen", b"hxk1")
        }
        // ---- everything above, inside the grants
        "allowed" => {
            let b = format!("hxa{}", sdk::short(&n.id, 8));
            net::create_bridge(&b, None)?;
            net::set_up(&b)?;
            net::set_sysctl(&b, LinkSysctl::ProxyArp, "1")?;
            net::add_address(&b, gw)?;
            let (base, _) = sdk::span(&subnet);
            let inside = sdk::prefix(sdk::from_u128(base + 128, false), 25);
            net::add_route_ex(&Route {
                destination: inside,
                next_hop: None,
                link: Some(b.clone()),
                metric: Some(77),
                table: None,
                kind: RouteKind::Unicast,
            })?;
            net::add_route_ex(&Route {
                destination: sdk::prefix(sdk::from_u128(base + 64, false), 26),
                next_hop: None,
                link: None,
                metric: None,
                table: Some(100),
                kind: RouteKind::Blackhole,
            })?;
            let x = format!("hxx{}", sdk::short(&n.id, 8));
            net::create_vxlan(
                &x,
                7001,
                Some(ip("10.77.0.1")),
                Some("hup0"),
                4789,
                true,
                None,
            )?;
            for p in kv::list_prefix("peer/")? {
                net::add_fdb(&x, FLOOD, ip(p.0.trim_start_matches("peer/")))?;
            }
            let mv = format!("hxm{}", sdk::short(&n.id, 8));
            net::create_macvlan(&mv, "hup0", MacvlanMode::Bridge)?;
            net::set_mac(&mv, (0x02, 0x42, 0, 0, 0, 7))?;
            net::set_down(&mv)?;
            // What it adds it may take back.
            let extra = sdk::prefix(sdk::from_u128(base + 200, false), subnet.prefix_len);
            net::add_address(&b, extra)?;
            net::del_address(&b, extra)?;
            let r = Route {
                destination: sdk::prefix(sdk::from_u128(base + 32, false), 28),
                next_hop: None,
                link: Some(b.clone()),
                metric: Some(5),
                table: Some(101),
                kind: RouteKind::Unicast,
            };
            net::add_route_ex(&r)?;
            net::del_route(&r)?;
            let nb = sdk::addr(sdk::from_u128(base + 9, false));
            net::add_neighbour(&b, nb, None)?;
            net::del_neighbour(&b, nb, true)?;
            let links = net::list_links()?;
            kv::put("flood/0", &vec![b'x'; 60 << 10])?;
            kv::compare_and_swap("small", None, Some(b"v"))?;
            log(
                Level::Info,
                &format!(
                    "allowed: made {links:?}; greeting {:?}",
                    config::get("greeting")
                ),
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

impl Driver for Hostile {
    fn capabilities() -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            external_connectivity: true,
        }
    }

    fn create_network(n: Network) -> Result<(), Error> {
        let m = sdk::option(&n.options, "hostile").unwrap_or("").to_string();
        kv::put(&format!("mode/{}", n.id), m.as_bytes())?;
        if m == "kv-snoop" {
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
                    .map(|v| v.iter().filter(|(k, _)| foreign(k)).count())
                    .unwrap_or(0);
            }
            return if seen > 0 {
                Err(sdk::internal(format!("LEAK: saw {seen} foreign keys")))
            } else {
                Err(sdk::not_found("no foreign kv data is visible"))
            };
        }
        create(&n, &m)
    }

    fn delete_network(network_id: String) -> Result<(), Error> {
        match mode(&network_id).as_str() {
            "notfound-delete" => return Err(sdk::not_found("this plugin knows no such network")),
            "allowed" => {
                let id8 = sdk::short(&network_id, 8);
                for l in [
                    format!("hxm{id8}"),
                    format!("hxx{id8}"),
                    format!("hxa{id8}"),
                ] {
                    if net::link_exists(&l)? {
                        net::delete_link(&l)?;
                    }
                }
            }
            "keep-link" if net::link_exists("hxk0")? => net::delete_link("hxk0")?,
            _ => {}
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
            "context" => Err(sdk::not_found(format!(
                "context: sandbox {} id {} hostname {:?} labels {:?}",
                ep.context.sandbox_name,
                sdk::short(&ep.context.sandbox_id, 12),
                ep.context.hostname,
                ep.context.labels
            ))),
            _ => Ok(EndpointInfo { mac: None }),
        }
    }

    fn delete_endpoint(network_id: String, _endpoint_id: String) -> Result<(), Error> {
        if mode(&network_id) == "notfound-delete" {
            return Err(sdk::not_found("this plugin knows no such endpoint"));
        }
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
            // A gateway (the subnet's first address), so this endpoint carries the sandbox's
            // default route and external connectivity is programmed through it.
            "external" => {
                if let Some(p) = &ep.ipv4 {
                    let (base, _) = sdk::span(p);
                    if let IpAddr::V4(a) = sdk::from_u128(base + 1, false) {
                        let o = a.octets();
                        info.gateway4 = Some((o[0], o[1], o[2], o[3]));
                    }
                }
            }
            // The link this plugin made for another network.
            "steal-link" => {
                info.link = kv::get("stolen")?
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default()
            }
            "many-routes" => {
                info.routes = (0..1000u32)
                    .map(|i| StaticRoute {
                        destination: sdk::prefix(
                            IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes()),
                            24,
                        ),
                        next_hop: None,
                    })
                    .collect()
            }
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

    fn program_external_connectivity(
        network_id: String,
        endpoint_id: String,
        ports: Vec<PortMapping>,
    ) -> Result<(), Error> {
        if mode(&network_id) == "external" {
            log(
                Level::Warn,
                &format!(
                    "program-external-connectivity {} with {} ports",
                    sdk::short(&endpoint_id, 12),
                    ports.len()
                ),
            );
        }
        Ok(())
    }

    fn revoke_external_connectivity(network_id: String, endpoint_id: String) -> Result<(), Error> {
        if mode(&network_id) == "external" {
            log(
                Level::Warn,
                &format!(
                    "revoke-external-connectivity {}",
                    sdk::short(&endpoint_id, 12)
                ),
            );
        }
        Ok(())
    }

    fn discover_new(peer: IpAddress) -> Result<(), Error> {
        kv::put(&format!("peer/{}", sdk::ip(&peer)), b"")
    }

    fn discover_delete(peer: IpAddress) -> Result<(), Error> {
        kv::delete(&format!("peer/{}", sdk::ip(&peer)))?;
        Ok(())
    }
}

export!(Hostile);
