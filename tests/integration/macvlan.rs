//! The macvlan driver over a real wire: the parent is a veth end in the test host whose peer
//! sits in a "LAN" namespace that holds the gateway address (this kernel has no dummy links).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::harness::*;

/// A LAN behind the test host: host link `parent` (up, no address) ↔ `lan` namespace with
/// 192.168.77.1/24 on its end.
fn lan(h: &TestHost, parent: &str) -> PathBuf {
    let lan = h.make_ns(&format!("lan-{parent}"));
    let o = h.ip(
        &h.host_ns,
        &[
            "link", "add", parent, "type", "veth", "peer", "name", "lanport",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(h
        .ip(
            &h.host_ns,
            &["link", "set", "lanport", "netns", lan.to_str().unwrap()]
        )
        .status
        .success());
    assert!(h
        .ip(&h.host_ns, &["link", "set", parent, "up"])
        .status
        .success());
    assert!(h
        .ip(&lan, &["addr", "add", "192.168.77.1/24", "dev", "lanport"])
        .status
        .success());
    assert!(h
        .ip(&lan, &["link", "set", "lanport", "up"])
        .status
        .success());
    lan
}

fn detail(ns: &Path, ifname: &str) -> String {
    let o = run_ok(ns, "ip", &["-d", "-o", "link", "show", ifname]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn macvlan_sandboxes_share_a_real_lan() {
    let h = TestHost::new("macvlan");
    let lan = lan(&h, "lan0");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        "192.168.77.1",
        "-o",
        "parent=lan0",
        "mv",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "mv", "m1"]);
    h.weft_ok(&["sandbox", "create", "--network", "mv", "m2"]);
    let (k1, k2) = (key(&h, "m1"), key(&h, "m2"));
    let (ip1, ip2) = (sandbox_ip(&h, "m1"), sandbox_ip(&h, "m2"));
    let d = detail(&k1, "eth0");
    assert!(d.contains("macvlan mode bridge"), "{d}");
    let IpAddr::V4(v4) = ip1 else { unreachable!() };
    assert!(
        d.contains(&weft::model::mac_from_ipv4(v4)),
        "own MAC derived from the address: {d}"
    );
    assert_eq!(
        h.ip_lines(&k1, &["route", "show", "default"]),
        ["default via 192.168.77.1 dev eth0"]
    );
    // The two sandboxes reach each other (bridge mode) and the LAN, across the veth wire.
    assert!(ping(&k1, ip2));
    assert_eq!(
        tcp_exchange(&k1, &k2, SocketAddr::new(ip2, 8080))
            .unwrap()
            .ip(),
        ip1
    );
    assert!(
        ping(&k1, "192.168.77.1".parse().unwrap()),
        "m1 reaches the LAN gateway"
    );
    assert!(
        tcp_exchange(&lan, &k2, SocketAddr::new(ip2, 8081)).is_some(),
        "the LAN reaches m2"
    );
    // The macvlan property: the host cannot reach its macvlan children through the parent.
    assert!(h
        .ip(
            &h.host_ns,
            &["addr", "add", "192.168.77.254/24", "dev", "lan0"]
        )
        .status
        .success());
    assert!(
        ping(&lan, "192.168.77.254".parse().unwrap()),
        "the host's parent address is on the LAN"
    );
    assert!(
        !ping(&h.host_ns, ip1),
        "host → macvlan child through the parent must not work"
    );
    assert!(ping(&lan, ip1), "…while the LAN reaches it");
    // Teardown leaves the parent and the LAN as they were.
    h.weft_ok(&["sandbox", "rm", "m1", "m2"]);
    h.weft_ok(&["network", "rm", "mv"]);
    let mut l = h.host_links();
    l.sort();
    assert_eq!(l, ["lan0", "lo"]);
    assert!(
        h.nft_ruleset().is_empty(),
        "macvlan needs no firewall rules"
    );
}

#[test]
fn macvlan_private_mode_separates_sandboxes_but_not_the_lan() {
    let h = TestHost::new("mvprivate");
    let lan = lan(&h, "lan1");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        "192.168.77.1",
        "-o",
        "parent=lan1",
        "-o",
        "macvlan_mode=private",
        "mp",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "mp", "p1"]);
    h.weft_ok(&["sandbox", "create", "--network", "mp", "p2"]);
    assert!(detail(&key(&h, "p1"), "eth0").contains("macvlan mode private"));
    assert!(
        !ping(&key(&h, "p1"), sandbox_ip(&h, "p2")),
        "private mode: no traffic between siblings"
    );
    assert!(ping(&key(&h, "p1"), "192.168.77.1".parse().unwrap()));
    assert!(ping(&lan, sandbox_ip(&h, "p2")));
}

#[test]
fn macvlan_passthru_takes_the_parent_alone() {
    let h = TestHost::new("mvpass");
    let _lan = lan(&h, "lan2");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        "192.168.77.1",
        "-o",
        "parent=lan2",
        "-o",
        "macvlan_mode=passthru",
        "pt",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "pt", "only"]);
    assert!(detail(&key(&h, "only"), "eth0").contains("macvlan mode passthru"));
    assert!(ping(&key(&h, "only"), "192.168.77.1".parse().unwrap()));
    let before = h.host_links();
    let err = h.weft_err(&["sandbox", "create", "--network", "pt", "second"]);
    assert!(err.contains("passthru"), "{err}");
    assert_eq!(h.host_links(), before);
    assert!(!h.dir.join("run/netns/second").exists());
    // Another network on that parent is refused too.
    let err = h.weft_err(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.40.0.0/24",
        "-o",
        "parent=lan2",
        "other",
    ]);
    assert_eq!(
        err,
        "Error: parent interface lan2 is already used by network pt in passthru mode: a passthru parent carries one network only"
    );
}

#[test]
fn macvlan_refusals_say_what_to_change_and_leave_nothing() {
    let h = TestHost::new("mverr");
    let _lan = lan(&h, "lan3");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "-o",
        "parent=lan3",
        "first",
    ]);
    let before = (h.host_links(), h.weft_ok(&["network", "ls", "-q"]));
    for (args, want) in [
        (vec!["-o", "parent=nosuch", "--subnet", "10.41.0.0/24"], "-o parent interface was not found on the host: nosuch".to_string()),
        (vec!["-o", "parent=", "--subnet", "10.41.0.0/24"], "the parent option is empty: give -o parent=IFACE, or leave it out for an internal macvlan network".to_string()),
        (vec!["-o", "parent=lan3", "-o", "macvlan_mode=weird", "--subnet", "10.41.0.0/24"], "macvlan mode \"weird\" is not supported: use bridge, private, vepa or passthru".to_string()),
        (vec!["-o", "parent=lan3", "--subnet", "192.168.77.128/25"], "invalid pool request: Pool overlaps with other one on this address space".to_string()),
        (vec!["-o", "parent=lan3", "-o", "macvlan_mode=passthru", "--subnet", "10.41.0.0/24"], "network first already uses parent interface lan3: passthru mode needs the parent to itself".to_string()),
        (vec!["-o", "parent=nosuch.10", "--subnet", "10.41.0.0/24"], "-o parent interface was not found on the host: nosuch".to_string()),
        (vec!["-o", "parent=lan3.5000", "--subnet", "10.41.0.0/24"], "invalid VLAN id in parent lan3.5000: use IFACE.N with N in 1–4094".to_string()),
    ] {
        let mut a = vec!["network", "create", "-d", "macvlan"];
        a.extend(args.iter().copied());
        a.push("bad");
        assert_eq!(h.weft_err(&a), format!("Error: {want}"), "{args:?}");
        assert_eq!((h.host_links(), h.weft_ok(&["network", "ls", "-q"])), before, "{args:?} changed something");
    }
    // parent=IFACE.VLAN: this kernel has no 802.1q, so creating the sub-interface must fail
    // with a message saying so, and leave nothing behind.
    let args = [
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.42.0.0/24",
        "-o",
        "parent=lan3.10",
        "vl",
    ];
    if std::path::Path::new("/proc/net/vlan/config").exists() {
        // A kernel with 802.1q: the sub-interface is made, and goes with the network.
        h.weft_ok(&args);
        assert!(h.host_links().contains(&"lan3.10".to_string()));
        h.weft_ok(&["network", "rm", "vl"]);
    } else {
        let err = h.weft_err(&args);
        assert!(
            err.contains(
                "cannot create the 802.1q sub-interface lan3.10: this kernel has no VLAN support"
            ),
            "{err}"
        );
    }
    assert_eq!(
        (h.host_links(), h.weft_ok(&["network", "ls", "-q"])),
        before
    );
}

#[test]
fn parentless_macvlan_is_internal_on_a_link_weft_makes() {
    let h = TestHost::new("mvnoparent");
    let id = h.weft_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.43.0.0/24",
        "solo",
    ]);
    let id12 = &id.trim()[..12];
    let v = json(&h.weft_ok(&["network", "inspect", "solo"]));
    assert_eq!(v[0]["Internal"], true, "no parent → internal, as in Docker");
    assert!(
        h.host_links().contains(&format!("dm-{id12}")),
        "{:?}",
        h.host_links()
    );
    h.weft_ok(&["sandbox", "create", "--network", "solo", "a"]);
    h.weft_ok(&["sandbox", "create", "--network", "solo", "b"]);
    assert!(
        h.ip_lines(&key(&h, "a"), &["route", "show", "default"])
            .is_empty(),
        "internal: no default route"
    );
    assert!(ping(&key(&h, "a"), sandbox_ip(&h, "b")));
    h.weft_ok(&["sandbox", "rm", "a", "b"]);
    h.weft_ok(&["network", "rm", "solo"]);
    assert_eq!(
        h.host_links(),
        ["lo"],
        "the link weft made went with the network"
    );
}
