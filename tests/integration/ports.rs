//! Published ports: `-p` DNAT from host ports to a sandbox, reached from an "outside"
//! namespace, from the host through its own address and 127.0.0.1, from a neighbour sandbox
//! through the host address (hairpin); UDP too; conflicts, random ports, and the rules going
//! with the sandbox.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::harness::*;

/// A server in `sb` on `cport`, a client in `client` to `target`: did they talk?
fn reaches(
    h: &TestHost,
    sb: &str,
    cport: u16,
    client: &std::path::Path,
    target: SocketAddr,
) -> bool {
    let server = tcp_server(
        &key(h, sb),
        SocketAddr::new("0.0.0.0".parse().unwrap(), cport),
    );
    let ok = tcp_echo(client, target, Duration::from_secs(2));
    let peer = server.join().unwrap();
    ok && peer.is_some()
}

#[test]
fn published_ports_reach_the_sandbox_from_outside_the_host_and_neighbours() {
    let h = TestHost::new("ports");
    let out = h.outside("ptout", "10.83.9.1", "10.83.9.2");
    h.weft_ok(&["network", "create", "--subnet", "10.83.0.0/24", "web"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "8080:80",
        "-p",
        "5353:53/udp",
        "-p",
        "90",
        "s1",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "web", "s2"]);
    let ports = h.weft_ok(&["port", "s1"]);
    let random: u16 = ports
        .lines()
        .find(|l| l.starts_with("90/tcp -> 0.0.0.0:"))
        .and_then(|l| l.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    assert!(
        ports.starts_with("80/tcp -> 0.0.0.0:8080\n53/udp -> 0.0.0.0:5353\n"),
        "{ports}"
    );
    assert!((32768..=60999).contains(&random), "{random}");
    let sb = &json(&h.weft_ok(&["sandbox", "inspect", "s1"]))[0];
    assert_eq!(
        sb["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        "8080"
    );

    let host_out: IpAddr = "10.83.9.1".parse().unwrap();
    // Positive control first: the sandbox's own address, directly.
    assert!(reaches(
        &h,
        "s1",
        80,
        &key(&h, "s2"),
        SocketAddr::new(sandbox_ip(&h, "s1"), 80)
    ));
    // From outside, to the host's address.
    assert!(
        reaches(&h, "s1", 80, &out, SocketAddr::new(host_out, 8080)),
        "outside → host:8080"
    );
    assert!(
        reaches(&h, "s1", 90, &out, SocketAddr::new(host_out, random)),
        "outside → random port"
    );
    // From the host itself: its own address, and 127.0.0.1.
    assert!(
        reaches(&h, "s1", 80, &h.host_ns, SocketAddr::new(host_out, 8080)),
        "host → own address"
    );
    assert!(
        reaches(&h, "s1", 80, &h.host_ns, "127.0.0.1:8080".parse().unwrap()),
        "host → 127.0.0.1"
    );
    // A neighbour through the host's address (hairpin).
    assert!(
        reaches(
            &h,
            "s1",
            80,
            &key(&h, "s2"),
            SocketAddr::new("10.83.0.1".parse().unwrap(), 8080)
        ),
        "hairpin"
    );
    // The sandbox itself through the host's address (its own port: hairpin back through the
    // bridge port it asked from).
    assert!(
        reaches(
            &h,
            "s1",
            80,
            &key(&h, "s1"),
            SocketAddr::new("10.83.0.1".parse().unwrap(), 8080)
        ),
        "self hairpin"
    );
    // A port that is not published does not reach it.
    assert!(
        !reaches(&h, "s1", 81, &out, SocketAddr::new(host_out, 8081)),
        "an unpublished port"
    );
    // UDP.
    let k1 = key(&h, "s1");
    let echo = std::thread::spawn(move || {
        in_ns(&k1, || {
            let s = UdpSocket::bind("0.0.0.0:53").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut b = [0u8; 64];
            if let Ok((n, p)) = s.recv_from(&mut b) {
                let _ = s.send_to(&b[..n], p);
            }
        })
        .join()
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    let got = in_ns(&out, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"ping", (host_out, 5353)).unwrap();
        let mut b = [0u8; 64];
        s.recv(&mut b).ok().map(|n| b[..n].to_vec())
    })
    .join()
    .unwrap();
    echo.join().unwrap();
    assert_eq!(got.as_deref(), Some(&b"ping"[..]), "UDP through 5353");

    // A host port another sandbox holds: Docker's error, nothing made.
    let before = h.nft_ruleset();
    assert_eq!(
        h.weft_err(&[
            "sandbox",
            "create",
            "--network",
            "web",
            "-p",
            "8080:81",
            "s3"
        ]),
        "Error: Bind for 0.0.0.0:8080 failed: port is already allocated"
    );
    assert_eq!(h.nft_ruleset(), before);
    assert!(h.engine().sandbox("s3").is_err());
    assert!(h
        .weft_err(&["sandbox", "create", "-p", "80-90:80", "s4"])
        .contains("the host and container port ranges must have the same length"));
    // Ranges: one mapping per port, pairwise, or each on a free host port.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "8100-8102:80-82",
        "-p",
        "83-84",
        "r1",
    ]);
    let r1 = h.weft_ok(&["port", "r1"]);
    assert!(
        r1.starts_with("80/tcp -> 0.0.0.0:8100\n81/tcp -> 0.0.0.0:8101\n82/tcp -> 0.0.0.0:8102\n83/tcp -> 0.0.0.0:"),
        "{r1}"
    );
    assert_eq!(r1.lines().count(), 5, "{r1}");
    assert!(
        reaches(&h, "r1", 82, &out, SocketAddr::new(host_out, 8102)),
        "the end of a range"
    );
    h.weft_ok(&["sandbox", "rm", "r1"]);
    // -P publishes the --expose'd ports on free host ports; two sandboxes never share one.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "--expose",
        "7000",
        "--expose",
        "7001/udp",
        "-P",
        "e1",
    ]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "--expose",
        "7000",
        "-P",
        "e2",
    ]);
    let e1 = h.weft_ok(&["port", "e1"]);
    let e2 = h.weft_ok(&["port", "e2"]);
    assert_eq!(e1.lines().count(), 2, "{e1}");
    assert!(e1.contains("7001/udp -> 0.0.0.0:"), "{e1}");
    let hp = |s: &str| {
        s.lines()
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    assert_ne!(hp(&e1), hp(&e2), "{e1}{e2}");
    // SCTP too (rules only: this kernel has no SCTP sockets to carry a connection).
    let without_sc = h.nft_ruleset();
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "9132:132/sctp",
        "sc",
    ]);
    assert_eq!(h.weft_ok(&["port", "sc"]), "132/sctp -> 0.0.0.0:9132\n");
    let rules = h.nft_ruleset();
    assert!(
        rules.contains("sctp . 9132 : 132")
            && rules.contains(&format!("sctp . 9132 : {}", sandbox_ip(&h, "sc"))),
        "{rules}"
    );
    h.weft_ok(&["sandbox", "rm", "sc"]);
    // The whole ruleset as before (a search for "9132" also matched an ephemeral -P port).
    assert_eq!(h.nft_ruleset(), without_sc);

    // The rules go with the sandbox, and the port is free again — all of them, even when one
    // of its elements was deleted by hand first (the removal's batch then fails whole).
    run_ok(
        &h.host_ns,
        "nft",
        &[
            "delete",
            "element",
            "inet",
            "weft",
            "dnat_any_port",
            "{ tcp . 8080 }",
        ],
    );
    assert!(h.nft_ruleset().contains("tcp . 8080 : "), "control");
    h.weft_ok(&["sandbox", "rm", "s1"]);
    let rules = h.nft_ruleset();
    assert!(
        !rules.contains("8080") && !rules.contains("5353"),
        "{rules}"
    );
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:8090:80",
        "s5",
    ]);
    assert!(
        reaches(&h, "s5", 80, &out, SocketAddr::new(host_out, 8080)),
        "the port reused"
    );
    // A host address given: only that address.
    assert!(
        reaches(&h, "s5", 80, &h.host_ns, "127.0.0.1:8090".parse().unwrap()),
        "127.0.0.1:8090"
    );
    assert!(
        !reaches(&h, "s5", 80, &out, SocketAddr::new(host_out, 8090)),
        "8090 from outside"
    );
    // One port on two host addresses, two sandboxes (Docker's allocator is per address);
    // the same port on every address, or on a taken address, is refused.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "127.0.0.1:8097:80",
        "t1",
    ]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "10.83.9.1:8097:80",
        "t2",
    ]);
    assert!(
        reaches(&h, "t1", 80, &h.host_ns, "127.0.0.1:8097".parse().unwrap()),
        "127.0.0.1:8097 → t1"
    );
    assert!(
        reaches(&h, "t2", 80, &out, SocketAddr::new(host_out, 8097)),
        "10.83.9.1:8097 → t2"
    );
    assert_eq!(
        h.weft_err(&[
            "sandbox",
            "create",
            "--network",
            "web",
            "-p",
            "8097:80",
            "t3"
        ]),
        "Error: Bind for 0.0.0.0:8097 failed: port is already allocated"
    );
    assert_eq!(
        h.weft_err(&[
            "sandbox",
            "create",
            "--network",
            "web",
            "-p",
            "127.0.0.1:8097:81",
            "t4",
        ]),
        "Error: Bind for 127.0.0.1:8097 failed: port is already allocated"
    );
    h.weft_ok(&["sandbox", "rm", "t1", "t2"]);
    // Ports follow the sandbox: disconnected from the network they were published on, they
    // move to its other network; with no network left they go (the host port stays its own)
    // and come back with the next connect.
    h.weft_ok(&["network", "create", "--subnet", "10.83.2.0/24", "alt"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "8099:80",
        "mv",
    ]);
    h.weft_ok(&["network", "connect", "alt", "mv"]);
    h.weft_ok(&["network", "disconnect", "web", "mv"]);
    let alt_ip = sandbox_ip(&h, "mv");
    assert!(alt_ip.to_string().starts_with("10.83.2."), "{alt_ip}");
    assert!(
        h.nft_ruleset().contains(&format!("tcp . 8099 : {alt_ip}")),
        "the rule follows the address"
    );
    assert!(
        reaches(&h, "mv", 80, &out, SocketAddr::new(host_out, 8099)),
        "8099 after the move"
    );
    h.weft_ok(&["system", "check"]);
    h.weft_ok(&["network", "disconnect", "alt", "mv"]);
    assert!(
        !h.nft_ruleset().contains("8099"),
        "no address left: no rule"
    );
    assert_eq!(
        h.weft_err(&[
            "sandbox",
            "create",
            "--network",
            "web",
            "-p",
            "8099:80",
            "mv2"
        ]),
        "Error: Bind for 0.0.0.0:8099 failed: port is already allocated"
    );
    h.weft_ok(&["system", "check"]);
    h.weft_ok(&["network", "connect", "web", "mv"]);
    assert!(
        reaches(&h, "mv", 80, &out, SocketAddr::new(host_out, 8099)),
        "8099 back with the connect"
    );
    h.weft_ok(&["sandbox", "rm", "mv"]);
    h.weft_ok(&["system", "check"]);
    // A port something on the host listens on is refused (DNAT would take it from under
    // it); free again, it is published.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let holder = in_ns(&h.host_ns, move || {
        let l = std::net::TcpListener::bind("0.0.0.0:8077").unwrap();
        let u = UdpSocket::bind("127.0.0.1:8078").unwrap();
        rx.recv().unwrap();
        drop((l, u));
    });
    std::thread::sleep(Duration::from_millis(100));
    let before = h.nft_ruleset();
    assert_eq!(
        h.weft_err(&["sandbox", "create", "--network", "web", "-p", "8077:80", "busy"]),
        "Error: Bind for 0.0.0.0:8077 failed: address already in use (something on the host listens there: stop it or choose another host port)"
    );
    assert!(h
        .weft_err(&[
            "sandbox",
            "create",
            "--network",
            "web",
            "-p",
            "127.0.0.1:8078:53/udp",
            "busy"
        ])
        .starts_with("Error: Bind for 127.0.0.1:8078 failed: address already in use"));
    assert_eq!(h.nft_ruleset(), before);
    assert!(h.engine().sandbox("busy").is_err());
    tx.send(()).unwrap();
    holder.join().unwrap();
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "8077:80",
        "busy",
    ]);
    h.weft_ok(&["sandbox", "rm", "busy"]);
    // The shared-namespace modes: dockerd's warning (host) and error (container:). The
    // ruleset is compared whole: a number search would match an ephemeral -P port (38098).
    let before = h.nft_ruleset();
    let o = h.weft(&[
        "sandbox",
        "create",
        "--network",
        "host",
        "-p",
        "8098:80",
        "hm",
    ]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "WARNING: Published ports are discarded when using host network mode\n"
    );
    assert_eq!(h.nft_ruleset(), before);
    assert_eq!(
        h.weft_err(&[
            "sandbox",
            "create",
            "--network",
            "container:s2",
            "-p",
            "8098:80",
            "cm"
        ]),
        "Error: conflicting options: port publishing and the container type network mode"
    );
    h.weft_ok(&["sandbox", "rm", "hm"]);
    // A network's host_binding_ipv4 is the host address of mappings that give none.
    h.weft_ok(&[
        "network",
        "create",
        "--subnet",
        "10.83.1.0/24",
        "-o",
        "com.docker.network.bridge.host_binding_ipv4=127.0.0.1",
        "local",
    ]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "local",
        "-p",
        "8095:80",
        "b1",
    ]);
    assert_eq!(h.weft_ok(&["port", "b1"]), "80/tcp -> 127.0.0.1:8095\n");
    assert!(
        reaches(&h, "b1", 80, &h.host_ns, "127.0.0.1:8095".parse().unwrap()),
        "host_binding_ipv4: 127.0.0.1"
    );
    assert!(
        !reaches(&h, "b1", 80, &out, SocketAddr::new(host_out, 8095)),
        "host_binding_ipv4: not from outside"
    );
    h.weft_ok(&["system", "check"]);
    // The bridge deleted and made again by a repair still lets the host reach 127.0.0.1:PORT
    // (route_localnet is the bridge's own, set with it).
    let br = h.engine().network("web").unwrap().driver_data["bridge"].clone();
    run_ok(&h.host_ns, "ip", &["link", "del", &br]);
    assert!(!h.weft(&["system", "check"]).status.success());
    h.weft_ok(&["system", "check", "--repair"]);
    assert!(
        reaches(&h, "s5", 80, &h.host_ns, "127.0.0.1:8090".parse().unwrap()),
        "127.0.0.1:8090 after the bridge was made again"
    );
}

#[test]
fn published_ports_reach_the_sandbox_over_ipv6_too() {
    let h = TestHost::new("ports6");
    let out = h.outside("pt6out", "10.92.9.1", "10.92.9.2");
    for (ns, dev, a) in [
        (&h.host_ns, "pt6out", "fd92:9::1/64"),
        (&out, "pt6out-p", "fd92:9::2/64"),
    ] {
        let o = h.ip(ns, &["-6", "addr", "add", a, "dev", dev, "nodad"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    h.weft_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.92.0.0/24",
        "--subnet",
        "fd92:0:0:1::/64",
        "v6web",
    ]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "v6web",
        "-p",
        "8080:80",
        "-p",
        "[fd92:9::1]:8081:80",
        "s1",
    ]);
    let any6: SocketAddr = "[::]:80".parse().unwrap();
    let reach = |to: &str| {
        let server = tcp_server(&key(&h, "s1"), any6);
        let ok = tcp_echo(&out, to.parse().unwrap(), Duration::from_secs(2));
        server.join().unwrap().is_some() && ok
    };
    // IPv6 neighbour discovery waits for the links' link-local addresses to finish DAD.
    let t = std::time::Instant::now();
    while [&h.host_ns, &out, &key(&h, "s1")]
        .iter()
        .any(|ns| String::from_utf8_lossy(&h.ip(ns, &["-6", "addr"]).stdout).contains("tentative"))
    {
        assert!(t.elapsed() < Duration::from_secs(10), "DAD did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Positive control: IPv4 to the same port; then IPv6, and the v6-only binding.
    assert!(reach("10.92.9.1:8080"), "IPv4 → 8080");
    assert!(reach("[fd92:9::1]:8080"), "IPv6 → 8080");
    assert!(reach("[fd92:9::1]:8081"), "IPv6 → 8081 bound to fd92:9::1");
    assert!(
        !reach("10.92.9.1:8081"),
        "8081 is bound to an IPv6 address only"
    );
    let rules = h.nft_ruleset();
    assert!(
        rules.contains("tcp . 8080 : fd92:0:0:1::")
            && rules.contains("fd92:9::1 . tcp . 8081 : fd92:0:0:1::"),
        "{rules}"
    );
    h.weft_ok(&["sandbox", "rm", "s1"]);
    assert!(!h.nft_ruleset().contains(": fd92:0:0:1::"));
    h.weft_ok(&["system", "check"]);
}

/// A datagram from `from` (through its routes) to the host's 127.0.0.1:`port`: did a
/// service bound there receive it?
fn reaches_host_loopback(h: &TestHost, from: &std::path::Path, port: u16) -> bool {
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    udp_lands(&h.host_ns, at, from, at)
}

#[test]
fn a_sandbox_cannot_reach_the_hosts_loopback_through_its_bridge() {
    // Bridges let loopback-sourced packets out (route_localnet, for the host's
    // 127.0.0.1:PORT); a sandbox that forges packets to 127.0.0.1 through its gateway must
    // still not reach the host's loopback services (CVE-2020-8558).
    let h = TestHost::new("localnet");
    h.weft_ok(&["network", "create", "--subnet", "10.86.0.0/24", "web"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "8080:80",
        "s1",
    ]);
    let sb = key(&h, "s1");
    // What an attacker with CAP_NET_ADMIN in the sandbox does: 127.0.0.1 via the gateway.
    run_ok(
        &sb,
        "sh",
        &[
            "-c",
            "ip route del local 127.0.0.0/8 dev lo table local; \
               ip route del local 127.0.0.1 dev lo table local; \
               ip route add 127.0.0.1/32 via 10.86.0.1 dev eth0; \
               sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1",
        ],
    );
    assert!(
        !reaches_host_loopback(&h, &sb, 9999),
        "a sandbox reached the host's 127.0.0.1:9999"
    );
    // Control: the host's service answers the host, and with weft's guard chain emptied the
    // same forged packet does get through (so the check above tests the guard).
    assert!(reaches_host_loopback(&h, &h.host_ns, 9999));
    run_ok(
        &h.host_ns,
        "nft",
        &["flush", "chain", "inet", "weft", "guard"],
    );
    assert!(
        reaches_host_loopback(&h, &sb, 9999),
        "control: without the guard the forged packet arrives"
    );
    // A flushed base chain is found and put back.
    let found = h.weft(&["system", "check"]);
    assert!(
        String::from_utf8_lossy(&found.stdout)
            .contains("missing: nftables base chains of weft's tables"),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
    h.weft_ok(&["system", "check", "--repair"]);
    h.weft_ok(&["system", "check"]);
    assert!(!reaches_host_loopback(&h, &sb, 9999), "the guard is back");
}

#[test]
fn hairpin_and_icc_links_work_without_br_netfilter_too() {
    // On hosts where bridged frames skip the IP hooks (br_netfilter off or not loaded), a
    // sandbox's own published port is reached by routing instead, and the links of an
    // ICC-off network are still the bridge table's: both paths must hold.
    let h = TestHost::new("nobrnf");
    let knob = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    run_ok(&h.host_ns, "sh", &["-c", &format!("echo 0 > {knob}")]);
    let set = run_ok(&h.host_ns, "cat", &[knob]);
    assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "0");
    h.weft_ok(&["network", "create", "--subnet", "10.87.0.0/24", "web"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "8080:80",
        "s1",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "web", "s2"]);
    let gw: IpAddr = "10.87.0.1".parse().unwrap();
    assert!(
        reaches(&h, "s1", 80, &key(&h, "s1"), SocketAddr::new(gw, 8080)),
        "self hairpin"
    );
    assert!(
        reaches(&h, "s1", 80, &key(&h, "s2"), SocketAddr::new(gw, 8080)),
        "neighbour hairpin"
    );
    assert!(reaches(
        &h,
        "s1",
        80,
        &h.host_ns,
        "127.0.0.1:8080".parse().unwrap()
    ));
    h.weft_ok(&[
        "network",
        "create",
        "--subnet",
        "10.87.1.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    let q = |args: &[&str]| {
        let mut a = vec!["sandbox", "create", "--network", "quiet"];
        a.extend_from_slice(args);
        h.weft_ok(&a);
    };
    q(&["--expose", "5432", "db"]);
    q(&["--link", "db", "app"]);
    q(&["other"]);
    let db = SocketAddr::new(sandbox_ip(&h, "db"), 5432);
    assert!(reaches(&h, "db", 5432, &key(&h, "app"), db), "linked");
    assert!(
        !reaches(&h, "db", 5432, &key(&h, "other"), db),
        "not linked"
    );
    h.weft_ok(&["system", "check"]);
}

#[test]
fn a_port_published_on_127_0_0_1_is_not_reachable_from_the_lan() {
    // The DNAT for 127.0.0.1:PORT runs before routing: a machine on the host's LAN that
    // sends to 127.0.0.1 through the host's MAC could reach the sandbox (Docker's
    // moby#45610). UDP: one datagram in is enough to do harm, no answer needed.
    let h = TestHost::new("lanloop");
    let out = h.outside("llout", "10.88.9.1", "10.88.9.2");
    h.weft_ok(&["network", "create", "--subnet", "10.88.0.0/24", "web"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "127.0.0.1:8085:53/udp",
        "-p",
        "8086:53/udp",
        "s1",
    ]);
    // The LAN machine's owner routes 127.0.0.1 to the host.
    run_ok(
        &out,
        "sh",
        &[
            "-c",
            "ip route del local 127.0.0.0/8 dev lo table local; \
               ip route del local 127.0.0.1 dev lo table local; \
               ip route add 127.0.0.1/32 via 10.88.9.1; \
               sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.llout-p.route_localnet=1",
        ],
    );
    let k1 = key(&h, "s1");
    let lands = |from: &std::path::Path, to: &str| {
        udp_lands(
            &k1,
            "0.0.0.0:53".parse().unwrap(),
            from,
            to.parse().unwrap(),
        )
    };
    assert!(
        !lands(&out, "127.0.0.1:8085"),
        "the LAN reached a port published on 127.0.0.1"
    );
    // Controls: the host reaches it; the LAN reaches the port published on every address;
    // and without weft's guard chain the LAN's datagram to 127.0.0.1 lands.
    assert!(lands(&h.host_ns, "127.0.0.1:8085"), "control: the host");
    assert!(
        lands(&out, "10.88.9.1:8086"),
        "control: the LAN on every address"
    );
    run_ok(
        &h.host_ns,
        "nft",
        &["flush", "chain", "inet", "weft", "guard"],
    );
    assert!(
        lands(&out, "127.0.0.1:8085"),
        "control: without the guard the LAN gets through"
    );
}
