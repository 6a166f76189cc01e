//! The bridge driver end to end: the seed's `your-bridge` network through the CLI, traffic
//! within and between networks, ICC off, internal networks, masquerade, two networks on
//! one sandbox, IPv6.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::*;
use weft::model::{ConnectOptions, NetworkCreate, SandboxCreate};

fn net(h: &TestHost, name: &str, opts: &[(&str, &str)], internal: bool) {
    let mut req = NetworkCreate {
        name: name.into(),
        internal,
        ..Default::default()
    };
    for (k, v) in opts {
        req.options.insert(k.to_string(), v.to_string());
    }
    h.block_on(h.engine().create_network(req)).unwrap();
}

fn sandbox(h: &TestHost, name: &str, network: &str) {
    h.block_on(h.engine().create_sandbox(SandboxCreate {
        name: name.into(),
        network: Some(network.into()),
        ..Default::default()
    }))
    .unwrap();
}

#[test]
fn your_bridge_example_through_the_cli() {
    let h = TestHost::new("yourbr");
    let id = h.weft_ok(&[
        "network",
        "create",
        "--subnet=172.30.0.0/16",
        "--ip-range=172.30.1.0/24",
        "--gateway=172.30.1.254",
        "--label=trial-bridge",
        "--opt",
        "com.docker.network.driver.mtu=9000",
        "your-bridge",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "create prints the 64-hex id: {id}");
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));

    let v = json(&h.weft_ok(&["network", "inspect", "your-bridge"]));
    let n = &v[0];
    assert_eq!(n["Name"], "your-bridge");
    assert_eq!(n["Id"], id);
    assert_eq!(n["Driver"], "bridge");
    assert_eq!(n["Scope"], "local");
    assert_eq!(n["IPAM"]["Driver"], "default");
    assert_eq!(
        n["IPAM"]["Config"],
        serde_json::json!([{"Subnet": "172.30.0.0/16", "IPRange": "172.30.1.0/24", "Gateway": "172.30.1.254"}])
    );
    assert_eq!(n["Labels"], serde_json::json!({"trial-bridge": ""}));
    assert_eq!(
        n["Options"],
        serde_json::json!({"com.docker.network.driver.mtu": "9000"})
    );
    assert_eq!(n["Internal"], false);
    assert_eq!(n["EnableIPv4"], true);
    let keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv4",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Containers",
            "Options",
            "Labels"
        ],
        "dockerd's keys in dockerd's order"
    );
    assert_eq!(
        h.weft_ok(&["network", "inspect", "-f", "{{json .IPAM}}", "your-bridge"])
            .trim(),
        r#"{"Driver":"default","Options":{},"Config":[{"Subnet":"172.30.0.0/16","IPRange":"172.30.1.0/24","Gateway":"172.30.1.254"}]}"#
    );

    let sb_id = h.weft_ok(&["sandbox", "create", "--network", "your-bridge", "web"]);
    let v = json(&h.weft_ok(&["sandbox", "inspect", "web"]));
    let settings = &v[0]["NetworkSettings"]["Networks"]["your-bridge"];
    let ip: IpAddr = settings["IPAddress"].as_str().unwrap().parse().unwrap();
    assert!(
        "172.30.1.0/24"
            .parse::<ipnetwork::IpNetwork>()
            .unwrap()
            .contains(ip),
        "{ip} not in the ip-range"
    );
    assert_eq!(settings["IPPrefixLen"], 16);
    assert_eq!(settings["Gateway"], "172.30.1.254");
    assert_eq!(v[0]["Id"], sb_id.trim());
    let key = PathBuf::from(v[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap());

    // The kernel agrees: MTU 9000, the address, the default route via the gateway.
    let link = h.ip_lines(&key, &["-o", "link", "show", "eth0"]).join("");
    assert!(link.contains("mtu 9000"), "{link}");
    let addr = h
        .ip_lines(&key, &["-o", "-4", "addr", "show", "eth0"])
        .join("");
    assert!(addr.contains(&format!("{ip}/16")), "{addr}");
    let routes = h.ip_lines(&key, &["route", "show", "default"]);
    assert_eq!(routes, ["default via 172.30.1.254 dev eth0"]);
    let mac = settings["MacAddress"].as_str().unwrap();
    let IpAddr::V4(v4) = ip else { unreachable!() };
    assert_eq!(
        mac,
        weft::model::mac_from_ipv4(v4),
        "MAC derived from the IPv4 address, Docker-style"
    );
    // The bridge carries the gateway and the MTU.
    let br = format!("br-{}", &id[..12]);
    let bl = h
        .ip_lines(&h.host_ns, &["-o", "addr", "show", &br])
        .join("");
    assert!(bl.contains("172.30.1.254/16"), "{bl}");
    assert!(h
        .ip_lines(&h.host_ns, &["-o", "link", "show", &br])
        .join("")
        .contains("mtu 9000"));
    // Containers in network inspect.
    let v = json(&h.weft_ok(&["network", "inspect", "your-bridge"]));
    let c = &v[0]["Containers"][sb_id.trim()];
    assert_eq!(c["Name"], "web");
    assert_eq!(c["IPv4Address"], format!("{ip}/16"));
    assert_eq!(c["MacAddress"], mac);
    // The gateway answers.
    assert!(ping(&key, "172.30.1.254".parse().unwrap()));

    h.weft_ok(&["sandbox", "rm", "web"]);
    h.weft_ok(&["network", "rm", "your-bridge"]);
    assert_eq!(h.host_links(), ["lo"]);
}

#[test]
fn traffic_within_a_network_but_not_between_networks() {
    let h = TestHost::new("traffic");
    net(&h, "a", &[], false);
    net(&h, "b", &[], false);
    sandbox(&h, "a1", "a");
    sandbox(&h, "a2", "a");
    sandbox(&h, "b1", "b");
    sandbox(&h, "b2", "b");
    let (a1, a2, b1, b2) = (key(&h, "a1"), key(&h, "a2"), key(&h, "b1"), key(&h, "b2"));
    let ip_a2 = sandbox_ip(&h, "a2");
    let ip_b1 = sandbox_ip(&h, "b1");
    // Positive control: b1 answers its own network (so a failure below is the isolation).
    assert!(ping(&b2, ip_b1), "b2 → b1 ping");
    assert!(tcp_exchange(&b2, &b1, SocketAddr::new(ip_b1, 8082)).is_some());
    let to_b1 = SocketAddr::new(ip_b1, 8083);
    let bind = SocketAddr::new("0.0.0.0".parse().unwrap(), 8083);
    assert!(udp_lands(&b1, bind, &b2, to_b1), "b2 → b1 datagram");
    // Same network: ICMP and TCP.
    assert!(ping(&a1, ip_a2), "a1 → a2 ping");
    let peer = tcp_exchange(&a1, &a2, SocketAddr::new(ip_a2, 8080)).expect("a1 → a2 TCP");
    assert_eq!(peer.ip(), sandbox_ip(&h, "a1"), "no NAT inside a network");
    // Different networks: isolated both ways.
    assert!(!ping(&a1, ip_b1), "a1 → b1 must be blocked");
    assert!(!ping(&b1, ip_a2), "b1 → a2 must be blocked");
    assert!(
        tcp_exchange(&a1, &b1, SocketAddr::new(ip_b1, 8081)).is_none(),
        "a1 → b1 TCP must be blocked"
    );
    // One way, with no answer needed: a1's datagram never reaches b1.
    assert!(
        !udp_lands(&b1, bind, &a1, to_b1),
        "a1 → b1 datagram must be dropped"
    );
}

#[test]
fn icc_off_blocks_sandboxes_on_one_bridge_but_not_the_gateway() {
    let h = TestHost::new("icc");
    net(
        &h,
        "quiet",
        &[("com.docker.network.bridge.enable_icc", "false")],
        false,
    );
    sandbox(&h, "q1", "quiet");
    sandbox(&h, "q2", "quiet");
    // Positive control: the same pair on a network with ICC on does talk (so a failure below
    // is the isolation, not a broken probe).
    net(&h, "loud", &[], false);
    sandbox(&h, "l1", "loud");
    sandbox(&h, "l2", "loud");
    let (l1, l2) = (key(&h, "l1"), key(&h, "l2"));
    let ip_l2 = sandbox_ip(&h, "l2");
    assert!(ping(&l1, ip_l2), "ICC on: l1 → l2 answers");
    assert!(tcp_exchange(&l1, &l2, SocketAddr::new(ip_l2, 9000)).is_some());
    let (q1, q2) = (key(&h, "q1"), key(&h, "q2"));
    let ip_q2 = sandbox_ip(&h, "q2");
    assert!(!ping(&q1, ip_q2), "ICC off: q1 → q2 must be blocked");
    assert!(tcp_exchange(&q1, &q2, SocketAddr::new(ip_q2, 9000)).is_none());
    let gw = h.engine().network("quiet").unwrap().pools[0]
        .gateway
        .unwrap();
    assert!(ping(&q1, gw), "the gateway stays reachable");
}

#[test]
fn icc_off_lets_linked_pairs_through_on_the_linked_ports_only() {
    let h = TestHost::new("icclink");
    h.weft_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    let sb = |args: &[&str]| {
        let mut a = vec!["sandbox", "create", "--network", "quiet"];
        a.extend_from_slice(args);
        h.weft_ok(&a);
    };
    sb(&[
        "--expose",
        "5432",
        "--expose",
        "9000/udp",
        "-p",
        "15432:5432",
        "db",
    ]);
    sb(&["--link", "db:pg", "web"]);
    sb(&["other"]);
    let (db, web, other) = (key(&h, "db"), key(&h, "web"), key(&h, "other"));
    let ip_db = sandbox_ip(&h, "db");
    // The link: web opens db's exposed port, and the answers come back.
    assert!(
        tcp_exchange(&web, &db, SocketAddr::new(ip_db, 5432)).is_some(),
        "web → db:5432 (linked, exposed) must connect"
    );
    // Everything else stays off: another port of db, an unlinked neighbour on the linked
    // port, ICMP, and db opening web.
    assert!(tcp_exchange(&web, &db, SocketAddr::new(ip_db, 5433)).is_none());
    assert!(tcp_exchange(&other, &db, SocketAddr::new(ip_db, 5432)).is_none());
    assert!(!ping(&web, ip_db), "ICMP is not a linked port");
    let ip_web = sandbox_ip(&h, "web");
    assert!(tcp_exchange(&db, &web, SocketAddr::new(ip_web, 8080)).is_none());
    // db reaches its own published port through the gateway (hairpin stays open with ICC off).
    let gw = h.engine().network("quiet").unwrap().pools[0]
        .gateway
        .unwrap();
    let server = tcp_server(&db, "0.0.0.0:5432".parse().unwrap());
    let ok = tcp_echo(&db, SocketAddr::new(gw, 15432), Duration::from_secs(2));
    assert!(server.join().unwrap().is_some() && ok, "db → gateway:15432");
    let ruleset = h.nft_ruleset();
    assert!(ruleset.contains("table bridge weft"), "{ruleset}");
    h.weft_ok(&["system", "check"]);

    // The link's elements go with the linking sandbox; the others' ports stay isolated.
    h.weft_ok(&["sandbox", "rm", "web"]);
    let bridge_sets = || {
        let o = run_ok(
            &h.host_ns,
            "nft",
            &["-j", "list", "table", "bridge", "weft"],
        );
        json(&String::from_utf8_lossy(&o.stdout))
    };
    let elems_in = |sets: &serde_json::Value, name: &str| -> Vec<serde_json::Value> {
        sets["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get("set"))
            .filter(|s| s["name"] == name)
            .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let sets = bridge_sets();
    let elems = |name: &str| elems_in(&sets, name);
    assert!(elems("links").is_empty() && elems("replies").is_empty());
    assert_eq!(elems("noicc").len(), 2, "db's and other's ports");
    assert!(tcp_exchange(&other, &db, SocketAddr::new(ip_db, 5432)).is_none());
    h.weft_ok(&["system", "check"]);

    // Repair: the bridge table flushed away comes back from the records, link included.
    sb(&["--link", "db", "web2"]);
    let web2 = key(&h, "web2");
    run_ok(&h.host_ns, "nft", &["delete", "table", "bridge", "weft"]);
    assert!(
        tcp_exchange(&other, &db, SocketAddr::new(ip_db, 5432)).is_some(),
        "control: with the table gone, ICC is on again"
    );
    assert!(!h.weft(&["system", "check"]).status.success());
    h.weft_ok(&["system", "check", "--repair"]);
    h.weft_ok(&["system", "check"]);
    assert!(tcp_exchange(&other, &db, SocketAddr::new(ip_db, 5432)).is_none());
    assert!(tcp_exchange(&web2, &db, SocketAddr::new(ip_db, 5432)).is_some());

    // What no record owns is found and removed: a stray ICC port, a stray published port
    // (its keys in the port maps), next to a published port a record owns; and what weft does
    // not make at all in its tables — an older weft's layout (a verdict map jumping to a
    // sandbox's port chain), a chain anyone added.
    sb(&["-p", "9998:80", "pub"]);
    for cmd in [
        "add element bridge weft noicc { \"vethdeadbeef00\" }",
        "add element inet weft dnat_any4 { tcp . 9999 : 10.255.0.9 }",
        "add element inet weft dnat_any_port { tcp . 9999 : 80 }",
        "add chain inet weft pt-deadbeef0000",
        "add rule inet weft pt-deadbeef0000 tcp dport 9997 dnat ip to 10.255.0.9:80",
        "add map inet weft ports { type inet_proto . inet_service : verdict; }",
        "add element inet weft ports { tcp . 9997 : jump pt-deadbeef0000 }",
        "add chain bridge weft deadbeef-extra",
    ] {
        run_ok(&h.host_ns, "sh", &["-c", &format!("nft '{cmd}'")]);
    }
    let found = h.weft(&["system", "check"]);
    let found = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        found.contains("orphan: nftables ICC elements of vethdeadbeef00")
            && found.contains("orphan: nftables map dnat_any4 element tcp . 9999")
            && found.contains("orphan: nftables map dnat_any_port element tcp . 9999")
            && found.contains("orphan: nftables chain inet weft pt-deadbeef0000")
            && found.contains("orphan: nftables map inet weft ports")
            && found.contains("orphan: nftables chain bridge weft deadbeef-extra")
            && !found.contains("9998")
            && !found.contains("nw-"),
        "{found}"
    );
    h.weft_ok(&["system", "check", "--repair"]);
    h.weft_ok(&["system", "check"]);
    let ruleset = h.nft_ruleset();
    assert!(
        !ruleset.contains("deadbeef")
            && !ruleset.contains("9999")
            && !ruleset.contains("9997")
            && !ruleset.contains("map ports ")
            && ruleset.contains("tcp . 9998 : 80"),
        "{ruleset}"
    );

    // Nothing of it outlives the network.
    h.weft_ok(&["sandbox", "rm", "-f", "db", "web2", "other", "pub"]);
    let sets = bridge_sets();
    for name in ["noicc", "selves", "links", "replies"] {
        assert!(
            elems_in(&sets, name).is_empty(),
            "{name} after a batched rm: {sets}"
        );
    }
    h.weft_ok(&["network", "rm", "quiet"]);
    let ruleset = h.nft_ruleset();
    assert!(!ruleset.contains("weft"), "{ruleset}");
}

#[test]
fn internal_network_cannot_leave_and_normal_network_is_masqueraded() {
    let h = TestHost::new("masq");
    let outside = h.outside("wout", "198.51.100.1", "198.51.100.2");
    net(&h, "pub", &[], false);
    net(&h, "priv", &[], true);
    sandbox(&h, "p1", "pub");
    sandbox(&h, "i1", "priv");
    let target: IpAddr = "198.51.100.2".parse().unwrap();
    // The outside knows no route to the sandbox subnets: only masquerade makes replies work.
    let peer = tcp_exchange(&key(&h, "p1"), &outside, SocketAddr::new(target, 7000))
        .expect("pub → outside");
    assert_eq!(
        peer.ip().to_string(),
        "198.51.100.1",
        "the outside sees the host's address (masquerade)"
    );
    assert!(ping(&key(&h, "p1"), target));
    // Internal: no default route, and forwarding is dropped even with one.
    assert!(
        h.ip_lines(&key(&h, "i1"), &["route", "show", "default"])
            .is_empty(),
        "internal: no default route"
    );
    let gw = h.engine().network("priv").unwrap().pools[0]
        .gateway
        .unwrap();
    let o = h.ip(
        &key(&h, "i1"),
        &["route", "add", "default", "via", &gw.to_string()],
    );
    assert!(o.status.success());
    assert!(
        !ping(&key(&h, "i1"), target),
        "internal → outside must be dropped"
    );
    assert!(tcp_exchange(&key(&h, "i1"), &outside, SocketAddr::new(target, 7001)).is_none());
    // The outside has no route back to the sandboxes, so the two probes above would fail even
    // if weft forwarded the internal network's packets: a one-way datagram proves the drop,
    // and the same datagram from the public network (masqueraded) is its positive control.
    let (bind, to) = (
        SocketAddr::new("0.0.0.0".parse().unwrap(), 7002),
        SocketAddr::new(target, 7002),
    );
    assert!(
        udp_lands(&outside, bind, &key(&h, "p1"), to),
        "pub → outside datagram"
    );
    assert!(
        !udp_lands(&outside, bind, &key(&h, "i1"), to),
        "internal → outside datagram must be dropped"
    );
    // No masquerade rule for the internal network.
    let rules = h.nft_ruleset();
    let priv_id = &h.engine().network("priv").unwrap().id[..12];
    let nat_chain = rules
        .split(&format!("chain nw-{priv_id}-nat"))
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    assert!(!nat_chain.contains("masquerade"), "{nat_chain}");
}

#[test]
fn a_sandbox_on_two_networks_has_two_interfaces_and_disconnect_removes_one() {
    let h = TestHost::new("twonet");
    net(&h, "front", &[], false);
    net(&h, "back", &[], false);
    sandbox(&h, "app", "front");
    let e = h.engine();
    h.block_on(e.connect("back", "app", ConnectOptions::default()))
        .unwrap();
    let k = key(&h, "app");
    let eps = e.sandbox_endpoints(&e.sandbox("app").unwrap().id).unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(
        (eps[0].ifname.as_str(), eps[1].ifname.as_str()),
        ("eth0", "eth1")
    );
    assert_ne!(eps[0].mac, eps[1].mac);
    for ep in &eps {
        let a = h.ip_lines(&k, &["-o", "-4", "addr", "show", &ep.ifname]);
        assert_eq!(a.len(), 1, "one address on {}: {a:?}", ep.ifname);
        assert!(a[0].contains(&ep.ipv4.unwrap().to_string()));
    }
    // The default route belongs to the first network only.
    assert_eq!(
        h.ip_lines(&k, &["route", "show", "default"]),
        [format!(
            "default via {} dev eth0",
            eps[0].gateway_v4.unwrap()
        )]
    );
    // Disconnecting the first hands the default route to the second.
    h.block_on(e.disconnect("front", "app", false)).unwrap();
    let links = links(&k);
    assert!(
        !links.contains(&"eth0".to_string()) && links.contains(&"eth1".to_string()),
        "{links:?}"
    );
    assert_eq!(
        h.ip_lines(&k, &["route", "show", "default"]),
        [format!(
            "default via {} dev eth1",
            eps[1].gateway_v4.unwrap()
        )]
    );
    let host_links = h.host_links();
    assert_eq!(
        host_links.iter().filter(|l| l.starts_with("veth")).count(),
        1,
        "{host_links:?}"
    );
    // Reconnecting takes the lowest free name again.
    h.block_on(e.connect("front", "app", ConnectOptions::default()))
        .unwrap();
    assert!(links_of(&k).contains(&"eth0".to_string()));
}

fn links_of(k: &std::path::Path) -> Vec<String> {
    links(k)
}

#[test]
fn ipv6_network_gives_v4_and_v6_addresses_and_traffic_flows() {
    let h = TestHost::new("v6");
    let out = h.weft_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:77::/64",
        "v6net",
    ]);
    assert_eq!(out.trim().len(), 64);
    sandbox(&h, "s1", "v6net");
    sandbox(&h, "s2", "v6net");
    let e = h.engine();
    let ep2 = &e.sandbox_endpoints(&e.sandbox("s2").unwrap().id).unwrap()[0];
    let v6 = ep2.ipv6.expect("a v6 address").ip();
    assert!(v6.to_string().starts_with("fd00:77::"), "{v6}");
    assert!(ep2.ipv4.is_some(), "IPv4 stays on by default");
    let peer = tcp_exchange(&key(&h, "s1"), &key(&h, "s2"), SocketAddr::new(v6, 8443))
        .expect("TCP over IPv6");
    assert!(peer.ip().is_ipv6());
    let v = json(&h.weft_ok(&["network", "inspect", "v6net"]));
    assert_eq!(v[0]["EnableIPv6"], true);
    let c = v[0]["Containers"].as_object().unwrap();
    assert!(c
        .values()
        .all(|c| c["IPv6Address"].as_str().unwrap().starts_with("fd00:77::")));
    let _ = Duration::from_secs(0);
}

#[test]
fn external_namespace_given_by_path() {
    let h = TestHost::new("extns");
    net(&h, "rt", &[], false);
    // A runtime's own namespace (here: one the test made), with a link of its own named eth0.
    let ns = h.make_ns("runtime");
    let o = h.ip(
        &ns,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    assert!(o.status.success());
    h.block_on(h.engine().create_sandbox(SandboxCreate {
        name: "ctr".into(),
        network: Some("rt".into()),
        netns: Some(ns.clone()),
        ..Default::default()
    }))
    .unwrap();
    let ep = &h
        .engine()
        .sandbox_endpoints(&h.engine().sandbox("ctr").unwrap().id)
        .unwrap()[0];
    assert_eq!(ep.ifname, "eth1", "eth0 is taken by the runtime's own link");
    assert!(ping(&ns, ep.gateway_v4.unwrap()));
    h.block_on(h.engine().remove_sandbox("ctr", false)).unwrap();
    // weft never removes a namespace it did not make, nor links it did not make.
    let l = links(&ns);
    assert!(
        l.contains(&"eth0".to_string()) && !l.contains(&"eth1".to_string()),
        "{l:?}"
    );
}

#[test]
fn the_bridge_keeps_its_mac_when_sandboxes_leave() {
    let h = TestHost::new("brmac");
    let id = h.weft_ok(&["network", "create", "--subnet", "10.76.0.0/24", "m"]);
    let br = format!("br-{}", &id[..12]);
    let mac = |h: &TestHost| {
        let o = h.ip(&h.host_ns, &["-o", "link", "show", "dev", &br]);
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s.split("link/ether ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    for s in ["s1", "s2", "s3"] {
        h.weft_ok(&["sandbox", "create", "--network", "m", s]);
    }
    let before = mac(&h);
    assert_eq!(
        before,
        format!(
            "02:42:{}:{}:{}:{}",
            &id[0..2],
            &id[2..4],
            &id[4..6],
            &id[6..8]
        )
    );
    let gw: std::net::IpAddr = "10.76.0.1".parse().unwrap();
    let k3 = key(&h, "s3");
    assert!(ping(&k3, gw));
    for s in ["s1", "s2"] {
        h.weft_ok(&["sandbox", "rm", s]);
        assert_eq!(mac(&h), before, "the bridge's MAC changed when {s} left");
        // The remaining sandbox's ARP entry for the gateway still holds.
        assert!(ping(&k3, gw), "s3 lost its gateway when {s} left");
    }
}

/// Send three router advertisements (prefix 2001:db8:bad::/64, lifetime 1800 s) from `ns`'s
/// eth0, as a sandbox with raw sockets and a link-local address can.
fn rogue_ra(ns: &std::path::Path) {
    let script = r#"
import socket, struct
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
pio = struct.pack("!BBBBIII", 3, 4, 64, 0xc0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, "2001:db8:bad::")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
i = socket.if_nametoindex("eth0")
for _ in range(3):
    s.sendto(ra + pio, ("ff02::1", 0, 0, i))
"#;
    run_ok(ns, "python3", &["-c", script]);
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn router_advertisements_from_a_sandbox_reach_no_one() {
    // CVE-2020-13401: a container sending router advertisements gave the host (and its
    // neighbours) a default IPv6 route through itself.
    let h = TestHost::new("rogue-ra");
    net(&h, "web", &[], false);
    sandbox(&h, "evil", "web");
    sandbox(&h, "victim", "web");
    let (evil, victim) = (key(&h, "evil"), key(&h, "victim"));
    // What an attacker with CAP_NET_ADMIN does first: a link-local address to send from.
    run_ok(
        &evil,
        "sh",
        &["-c", "sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0 && ip -6 addr add fe80::bad/64 dev eth0 nodad"],
    );
    let poisoned = |ns: &std::path::Path| {
        let routes = h.ip_lines(ns, &["-6", "route"]).join("\n");
        routes.contains("default via fe80::bad") || routes.contains("2001:db8:bad")
    };
    rogue_ra(&evil);
    assert!(
        !poisoned(&h.host_ns),
        "the host took the sandbox's advertisement"
    );
    assert!(
        !poisoned(&victim),
        "a neighbour took the sandbox's advertisement"
    );
    // Controls: with weft's settings turned back to the kernel's defaults, the same
    // advertisements do poison both (so the checks above test the settings).
    let br = h.engine().network("web").unwrap().driver_data["bridge"].clone();
    run_ok(
        &h.host_ns,
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{br}.accept_ra=1")],
    );
    run_ok(
        &victim,
        "sysctl",
        &["-qw", "net.ipv6.conf.eth0.accept_ra=1"],
    );
    rogue_ra(&evil);
    assert!(poisoned(&h.host_ns), "control: the host");
    assert!(poisoned(&victim), "control: the neighbour");
}

/// A Linux bridge takes 1 023 ports: the connect that would be one more gets a message that
/// says so and what to do (the kernel's own is "Exchange full"), and leaves nothing behind;
/// with one port free again, the same create succeeds.
#[test]
fn a_full_bridge_is_refused_with_a_message_that_says_so() {
    let h = TestHost::new("brfull");
    h.weft_ok(&["network", "create", "--subnet", "10.80.0.0/21", "full"]);
    h.weft_ok(&["sandbox", "create", "--network", "full", "s1"]);
    let id = h.weft_ok(&["network", "inspect", "-f", "{{.Id}}", "full"]);
    let br = format!("br-{}", &id.trim()[..12]);
    // The other 1 022 ports, by hand, in one `ip` process.
    let batch = h.dir.join("ports.batch");
    let mut lines = String::new();
    for i in 0..1022 {
        lines.push_str(&format!("link add fa{i} type veth peer name fb{i}\n"));
        lines.push_str(&format!("link set fa{i} master {br}\n"));
    }
    std::fs::write(&batch, lines).unwrap();
    run_ok(&h.host_ns, "ip", &["-batch", batch.to_str().unwrap()]);
    let links_before = h.host_links();
    let err = h.weft_err(&["sandbox", "create", "--network", "full", "s2"]);
    assert_eq!(
        err,
        format!(
            "Error: network full is full: its bridge {br} has 1023 ports, the most a Linux \
             bridge takes (connect to another network, or make one)"
        )
    );
    assert_eq!(h.host_links(), links_before, "nothing left behind");
    assert!(h.weft_err(&["sandbox", "inspect", "s2"]).contains("s2"));
    h.weft_ok(&["system", "check"]);
    // A port free again: the same create goes through.
    run_ok(&h.host_ns, "ip", &["link", "del", "fa0"]);
    h.weft_ok(&["sandbox", "create", "--network", "full", "s2"]);
}
