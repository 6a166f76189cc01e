//! Drift in weft's nftables rules is found by comparing content, not names or counts (issue
//! 16): a network's isolation chain flushed, a rule rewritten to `accept`, a base chain, a
//! published port's map element pointing elsewhere, the ICC chain emptied — each leaves the
//! chain or the key in place and said "records and the kernel agree" before. Each case first shows the drift does what an attacker
//! wants (isolation gone), then that `system check` names it and `--repair` (or the daemon,
//! alone) puts it back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::harness::*;

fn check(h: &TestHost) -> (bool, String) {
    let o = h.weft(&["system", "check"]);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn nft(h: &TestHost, args: &[&str]) {
    run_ok(&h.host_ns, "nft", args);
}

/// The handle of the rule of `chain` (in `family weft`) whose text contains `text`.
fn handle(h: &TestHost, family: &str, chain: &str, text: &str) -> String {
    let o = run_ok(
        &h.host_ns,
        "nft",
        &["-a", "list", "chain", family, "weft", chain],
    );
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.lines()
        .find(|l| l.contains(text))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no rule with {text:?} in {chain}: {s}"))
}

#[test]
fn changed_rules_are_found_by_content_and_put_back() {
    let h = TestHost::new("drift");
    h.weft_ok(&["network", "create", "--subnet", "10.72.0.0/24", "d1"]);
    h.weft_ok(&["network", "create", "--subnet", "10.73.0.0/24", "d2"]);
    h.weft_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "--subnet",
        "10.74.0.0/24",
        "d3",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "d1", "a"]);
    h.weft_ok(&["sandbox", "create", "--network", "d2", "b"]);
    h.weft_ok(&["sandbox", "create", "--network", "d3", "-p", "8085:80", "c"]);
    h.weft_ok(&["sandbox", "create", "--network", "d3", "c2"]);
    let (ka, kb, kc, kc2) = (key(&h, "a"), key(&h, "b"), key(&h, "c"), key(&h, "c2"));
    let (ib, ic) = (sandbox_ip(&h, "b"), sandbox_ip(&h, "c"));
    // One way is enough for an attacker (and needs no return path): a datagram from a, on d1,
    // reaching b, on d2.
    let a_reaches_b = || {
        udp_lands(
            &kb,
            SocketAddr::new(ib, 9999),
            &ka,
            SocketAddr::new(ib, 9999),
        )
    };
    // Isolation is kept twice: leaving d1 towards another network is dropped (d1's `in`
    // chain), and so is entering d2 uninvited (d2's `out` chain). The attack needs both.
    let id1 = h.engine().network("d1").unwrap().id[..12].to_string();
    let id2 = h.engine().network("d2").unwrap().id[..12].to_string();
    let (d1_in, d2_out) = (format!("nw-{id1}-in"), format!("nw-{id2}-out"));
    assert!(
        check(&h).0,
        "control: untouched, it agrees: {}",
        check(&h).1
    );
    assert!(!a_reaches_b(), "control: the networks are isolated");

    // 1. The isolation chains flushed: a reaches b.
    nft(&h, &["flush", "chain", "inet", "weft", &d1_in]);
    nft(&h, &["flush", "chain", "inet", "weft", &d2_out]);
    assert!(
        a_reaches_b(),
        "the flush did not open the way: the test shows nothing"
    );
    let (ok, out) = check(&h);
    assert!(
        !ok && out.contains("network d1")
            && out.contains("network d2")
            && out.contains("nftables rules"),
        "{out}"
    );
    h.weft_ok(&["system", "check", "--repair"]);
    assert!(!a_reaches_b(), "isolation is not back");
    assert!(check(&h).0, "{}", check(&h).1);

    // 2. Their drops rewritten to accept, in place (same chains, same number of rules).
    let hd = handle(&h, "inet", &d1_in, "oifname @nets drop");
    nft(
        &h,
        &[
            "replace", "rule", "inet", "weft", &d1_in, "handle", &hd, "oifname", "@nets", "accept",
        ],
    );
    let hd = handle(&h, "inet", &d2_out, "\tdrop");
    nft(
        &h,
        &[
            "replace", "rule", "inet", "weft", &d2_out, "handle", &hd, "accept",
        ],
    );
    assert!(a_reaches_b(), "the rewrite did not open the way");
    let (ok, out) = check(&h);
    assert!(
        !ok && out.contains("network d1") && out.contains("network d2"),
        "{out}"
    );
    h.weft_ok(&["system", "check", "--repair"]);
    assert!(!a_reaches_b());

    // 3. A base chain flushed (the forward dispatch).
    nft(&h, &["flush", "chain", "inet", "weft", "forward"]);
    let (ok, out) = check(&h);
    assert!(!ok && out.contains("base chains"), "{out}");
    h.weft_ok(&["system", "check", "--repair"]);
    assert!(check(&h).0, "{}", check(&h).1);
    assert!(!a_reaches_b());

    // 4. A published port's element rewritten to send its connections elsewhere (content, not
    //    presence: the key is still there): the port stops answering, and comes back.
    let out_ns = h.outside("dro", "192.0.2.1", "192.0.2.2");
    let serve = |port| tcp_server(&kc, SocketAddr::new(ic, port));
    let t = serve(80);
    assert!(
        tcp_echo(
            &out_ns,
            "192.0.2.1:8085".parse().unwrap(),
            Duration::from_secs(2)
        ),
        "control: the port answers"
    );
    t.join().unwrap();
    let elsewhere = match ic {
        IpAddr::V4(a) => {
            let o = a.octets();
            std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(100))
        }
        IpAddr::V6(_) => unreachable!("the sandbox's address is IPv4"),
    };
    nft(
        &h,
        &[
            "delete",
            "element",
            "inet",
            "weft",
            "dnat_any4",
            "{ tcp . 8085 }",
        ],
    );
    nft(
        &h,
        &[
            "add",
            "element",
            "inet",
            "weft",
            "dnat_any4",
            &format!("{{ tcp . 8085 : {elsewhere} }}"),
        ],
    );
    let t = serve(80);
    assert!(
        !tcp_echo(
            &out_ns,
            "192.0.2.1:8085".parse().unwrap(),
            Duration::from_secs(1)
        ),
        "the rewritten element did not send the port elsewhere"
    );
    assert_eq!(t.join().unwrap(), None, "the sandbox was reached");
    let (ok, out) = check(&h);
    assert!(!ok && out.contains("published ports"), "{out}");
    h.weft_ok(&["system", "check", "--repair"]);
    let t = serve(80);
    assert!(
        tcp_echo(
            &out_ns,
            "192.0.2.1:8085".parse().unwrap(),
            Duration::from_secs(2)
        ),
        "the port is not back"
    );
    t.join().unwrap();

    // 5. ICC off: its bridge chain emptied lets the two sandboxes talk.
    assert!(!ping(&kc2, ic), "control: ICC is off on d3");
    nft(&h, &["flush", "chain", "bridge", "weft", "noicc"]);
    assert!(ping(&kc2, ic), "the flush did not open the way");
    let (ok, out) = check(&h);
    assert!(!ok && out.contains("base chains"), "{out}");
    h.weft_ok(&["system", "check", "--repair"]);
    assert!(!ping(&kc2, ic), "ICC is not off again");
    assert!(check(&h).0, "{}", check(&h).1);

    // 6. With a daemon, no one has to ask: the flush is undone by itself.
    let _d = h.daemon();
    nft(&h, &["flush", "chain", "inet", "weft", &d1_in]);
    nft(&h, &["flush", "chain", "inet", "weft", &d2_out]);
    let t = std::time::Instant::now();
    while a_reaches_b() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the daemon did not restore the isolation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn heal_checks(h: &TestHost) -> u64 {
    let info: serde_json::Value = serde_json::from_str(&h.weft_ok(&["system", "info"])).unwrap();
    info["HealerChecks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no HealerChecks in {info}"))
}

/// On a host where others change nftables and links all the time (Docker, firewalld,
/// Kubernetes), the daemon's healer checks only when weft's own objects change: others' tables,
/// links, addresses and routes cost no check (no engine-wide lock, no waiting CLIs).
#[test]
fn the_healer_ignores_other_tables_and_links_and_mends_its_own() {
    let h = TestHost::new("healquiet");
    h.weft_ok(&["network", "create", "--subnet", "10.75.0.0/24", "q1"]);
    h.weft_ok(&["sandbox", "create", "--network", "q1", "a"]);
    let d = h.daemon();
    // The check at start is done.
    let t = std::time::Instant::now();
    while heal_checks(&h) < 1 {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let c0 = heal_checks(&h);
    // Others' churn: a table with chains, rules and a set made and removed, a veth pair with
    // an address and a route, set down and deleted.
    for i in 0..10 {
        nft(&h, &["add", "table", "inet", "other"]);
        nft(&h, &["add", "chain", "inet", "other", "c"]);
        nft(&h, &["add", "rule", "inet", "other", "c", "accept"]);
        nft(
            &h,
            &["add", "set", "inet", "other", "s", "{ type ipv4_addr; }"],
        );
        nft(
            &h,
            &[
                "add",
                "element",
                "inet",
                "other",
                "s",
                &format!("{{ 10.9.9.{i} }}"),
            ],
        );
        nft(&h, &["delete", "table", "inet", "other"]);
    }
    for (args, _) in [
        (
            &["link", "add", "fx0", "type", "veth", "peer", "name", "fx1"][..],
            0,
        ),
        (&["addr", "add", "10.76.0.1/24", "dev", "fx0"], 0),
        (&["link", "set", "fx0", "up"], 0),
        (&["route", "add", "10.77.0.0/24", "dev", "fx0"], 0),
        (&["route", "del", "10.77.0.0/24", "dev", "fx0"], 0),
        (&["addr", "del", "10.76.0.1/24", "dev", "fx0"], 0),
        (&["link", "set", "fx0", "down"], 0),
        (&["link", "del", "fx0"], 0),
    ] {
        run_ok(&h.host_ns, "ip", args);
    }
    // The daemon is idle: a change it heard would be checked within ~250 ms (SETTLE + grace).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        heal_checks(&h),
        c0,
        "others' changes made the healer check: {}",
        d.log_text()
    );
    // Control: a change to weft's own table is heard, checked and mended.
    let guard = handle(&h, "inet", "guard", "drop");
    nft(
        &h,
        &["delete", "rule", "inet", "weft", "guard", "handle", &guard],
    );
    let t = std::time::Instant::now();
    while heal_checks(&h) == c0 || !check(&h).0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the healer missed weft's own rule deleted: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let c1 = heal_checks(&h);
    // And an address removed from weft's bridge (a link weft marked).
    let br = format!("br-{}", &h.engine().network("q1").unwrap().id[..12]);
    run_ok(
        &h.host_ns,
        "ip",
        &["addr", "del", "10.75.0.1/24", "dev", &br],
    );
    let t = std::time::Instant::now();
    while heal_checks(&h) == c1
        || !String::from_utf8_lossy(&h.ip(&h.host_ns, &["-4", "addr", "show", "dev", &br]).stdout)
            .contains("10.75.0.1/24")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the healer missed the bridge's address: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A link weft brought up and someone set down cuts a sandbox off as surely as a deleted veth:
/// `system check` names it, `--repair` brings it up, and the daemon's healer does it alone.
#[test]
fn a_link_set_down_is_found_and_brought_up() {
    let h = TestHost::new("linkdown");
    h.weft_ok(&["network", "create", "--subnet", "10.78.0.0/24", "d1"]);
    h.weft_ok(&["sandbox", "create", "--network", "d1", "a"]);
    let before = h.host_links();
    h.weft_ok(&["sandbox", "create", "--network", "d1", "b"]);
    let veth: Vec<String> = h
        .host_links()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert_eq!(veth.len(), 1, "b's host link: {veth:?}");
    let veth = veth[0].clone();
    let (a_ns, b_ns, b_ip) = (key(&h, "a"), key(&h, "b"), sandbox_ip(&h, "b"));
    let (ok, out) = check(&h);
    assert!(ok, "control: clean before: {out}");
    assert!(ping(&a_ns, b_ip), "control: a reaches b");

    // The host end, by hand.
    run_ok(&h.host_ns, "ip", &["link", "set", &veth, "down"]);
    assert!(!ping(&a_ns, b_ip), "the link down cuts b off");
    let (ok, out) = check(&h);
    assert!(!ok && out.contains(&veth) && out.contains("down"), "{out}");
    h.weft_ok(&["system", "check", "--repair"]);
    let (ok, out) = check(&h);
    assert!(ok, "{out}");
    assert!(ping(&a_ns, b_ip), "a reaches b again after --repair");

    // The sandbox's end, inside its namespace.
    // (The kernel drops the routes through it too: its default route is made again.)
    run_ok(&b_ns, "ip", &["link", "set", "eth0", "down"]);
    let (ok, out) = check(&h);
    assert!(!ok && out.contains("eth0") && out.contains("down"), "{out}");
    h.weft_ok(&["system", "check", "--repair"]);
    let (ok, out) = check(&h);
    assert!(ok, "one repair mends it all: {out}");
    assert!(
        String::from_utf8_lossy(&run_ok(&b_ns, "ip", &["route", "show", "default"]).stdout)
            .contains("10.78.0.1"),
        "b's default route is back"
    );
    assert!(ping(&a_ns, b_ip), "a reaches b again after --repair");

    // The daemon's healer, alone.
    let d = h.daemon();
    run_ok(&h.host_ns, "ip", &["link", "set", &veth, "down"]);
    let t = std::time::Instant::now();
    while !check(&h).0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the healer did not bring {veth} up: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ping(&a_ns, b_ip), "a reaches b again after the healer");
}

/// What changed while no daemon ran is mended before the daemon answers its first request:
/// the first `system check` through it is clean (made later, under load, that check would
/// stop every client for as long as it takes).
#[test]
fn drift_while_no_daemon_ran_is_mended_before_the_first_answer() {
    let h = TestHost::new("startmend");
    h.weft_ok(&["network", "create", "--subnet", "10.79.0.0/24", "m1"]);
    let before = h.host_links();
    h.weft_ok(&["sandbox", "create", "--network", "m1", "a"]);
    let veth: Vec<String> = h
        .host_links()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert_eq!(veth.len(), 1, "a's host link: {veth:?}");
    run_ok(&h.host_ns, "ip", &["link", "set", &veth[0], "down"]);
    let (ok, out) = check(&h);
    assert!(
        !ok && out.contains(&veth[0]),
        "control: the drift is seen: {out}"
    );
    let d = h.daemon();
    // The daemon answers: its first answer already sees the link up.
    let (ok, out) = check(&h);
    assert!(
        ok,
        "the daemon served before it mended: {out}\n{}",
        d.log_text()
    );
    assert_eq!(
        heal_checks(&h),
        1,
        "the check at start counts as the healer's"
    );
}

/// Inside sandboxes' namespaces, object by object: an address, the default route, a link no
/// record owns — each in one sandbox of several (the check lists every namespace once, all at
/// once, instead of asking per object: the answer must still be about the right one), each
/// found, named with its namespace, and mended by `--repair`.
#[test]
fn drift_inside_a_sandbox_is_found_object_by_object() {
    let h = TestHost::new("sbdrift");
    h.weft_ok(&["network", "create", "--subnet", "10.79.0.0/24", "d1"]);
    for s in ["a", "b", "c"] {
        h.weft_ok(&["sandbox", "create", "--network", "d1", s]);
    }
    let (a_ns, b_ns, c_ns) = (key(&h, "a"), key(&h, "b"), key(&h, "c"));
    let (b_ip, c_ip) = (sandbox_ip(&h, "b"), sandbox_ip(&h, "c"));
    let (ok, out) = check(&h);
    assert!(ok, "control: clean before: {out}");
    assert!(ping(&a_ns, b_ip), "control: a reaches b");

    // b's address.
    run_ok(
        &b_ns,
        "ip",
        &["addr", "del", &format!("{b_ip}/24"), "dev", "eth0"],
    );
    assert!(!ping(&a_ns, b_ip), "without its address b is not reached");
    let (ok, out) = check(&h);
    let want = format!(
        "address {b_ip}/24 on eth0 in {} is not there",
        b_ns.display()
    );
    assert!(!ok && out.contains(&want), "{out}");
    assert!(!out.contains(&c_ns.display().to_string()), "only b: {out}");
    h.weft_ok(&["system", "check", "--repair"]);
    let (ok, out) = check(&h);
    assert!(ok, "{out}");
    assert!(ping(&a_ns, b_ip), "a reaches b again after --repair");

    // c's default route.
    run_ok(&c_ns, "ip", &["route", "del", "default"]);
    let (ok, out) = check(&h);
    let want = format!(
        "route 0.0.0.0/0 via 10.79.0.1 dev eth0 in {}",
        c_ns.display()
    );
    assert!(!ok && out.contains(&want), "{out}");
    assert!(!out.contains(&b_ns.display().to_string()), "only c: {out}");
    h.weft_ok(&["system", "check", "--repair"]);
    let (ok, out) = check(&h);
    assert!(ok, "{out}");
    assert!(
        String::from_utf8_lossy(&run_ok(&c_ns, "ip", &["route", "show", "default"]).stdout)
            .contains("10.79.0.1"),
        "c's default route is back"
    );
    assert!(ping(&c_ns, b_ip), "c reaches b");
    assert!(ping(&a_ns, c_ip), "a reaches c");

    // A link in a's namespace no record owns.
    run_ok(
        &a_ns,
        "ip",
        &[
            "link", "add", "stray0", "type", "veth", "peer", "name", "stray1",
        ],
    );
    let (ok, out) = check(&h);
    assert!(
        !ok && out.contains("sandbox a: link stray0 in its namespace has no record"),
        "{out}"
    );
    h.weft_ok(&["system", "check", "--repair"]);
    let (ok, out) = check(&h);
    assert!(ok, "{out}");
    let links = String::from_utf8_lossy(&run_ok(&a_ns, "ip", &["-o", "link"]).stdout).into_owned();
    assert!(!links.contains("stray"), "{links}");
}

/// The healer mends what a change named under that network's and sandbox's locks only: a
/// sandbox's veth deleted, its network's isolation chain and weft's base `forward` chain
/// flushed by hand are put back while another network's create sits in a sleeping IPAM plugin
/// (the engine held shared for seconds). A whole check needs the engine to itself, so it would
/// wait for the plugin.
#[test]
fn the_healer_mends_a_network_while_a_plugin_call_elsewhere_holds_the_engine() {
    let h = std::sync::Arc::new(TestHost::new("healscope"));
    h.install_plugin("hostile-ipam", "hostile-ipam", &["--grant", "deadline=4s"]);
    h.weft_ok(&["network", "create", "--subnet", "10.96.0.0/24", "kept"]);
    h.weft_ok(&["sandbox", "create", "--network", "kept", "a"]);
    let id12 = h.engine().network("kept").unwrap().id[..12].to_string();
    let chain = format!("nw-{id12}-in");
    let a_ns = key(&h, "a");
    let veth = h
        .host_links()
        .into_iter()
        .find(|l| l.starts_with("veth"))
        .expect("a's veth on the host");
    let chain_rules = || {
        String::from_utf8_lossy(
            &run_ok(
                &h.host_ns,
                "nft",
                &["list", "chain", "inet", "weft", &chain],
            )
            .stdout,
        )
        .contains("drop")
    };
    assert!(chain_rules(), "control: the isolation rule is there");
    let d = h.daemon();
    let t = std::time::Instant::now();
    while heal_checks(&h) < 1 {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let h2 = h.clone();
    let slow = std::thread::spawn(move || {
        h2.weft(&[
            "network",
            "create",
            "--ipam-driver",
            "hostile-ipam",
            "--ipam-opt",
            "hostile=pool-sleep",
            "--subnet",
            "10.97.0.0/24",
            "bad",
        ])
    });
    // The plugin logs before it sleeps: what follows happens while the call is in the plugin.
    let t = std::time::Instant::now();
    while !d.log_text().contains("request-pool: sleeping") {
        assert!(
            !slow.is_finished() && t.elapsed() < Duration::from_secs(20),
            "the sleeping request-pool never started: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let cut = std::time::Instant::now();
    run_ok(&h.host_ns, "ip", &["link", "del", &veth]);
    nft(&h, &["flush", "chain", "inet", "weft", &chain]);
    // And a base chain: the jumps to every network's chains.
    nft(&h, &["flush", "chain", "inet", "weft", "forward"]);
    let restored = |what: &str| {
        d.log_text()
            .lines()
            .any(|l| l.contains("restored") && l.contains(what))
    };
    let forward_rules = || {
        String::from_utf8_lossy(
            &run_ok(
                &h.host_ns,
                "nft",
                &["list", "chain", "inet", "weft", "forward"],
            )
            .stdout,
        )
        .contains("vmap")
    };
    while !(restored(&veth)
        && restored(&format!("chains nw-{id12}-*"))
        && restored("base chains")
        && forward_rules()
        && h.host_links().contains(&veth)
        && links(&a_ns).iter().any(|l| l == "eth0")
        && chain_rules())
    {
        assert!(
            !slow.is_finished(),
            "the healer waited for the plugin call on another network: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = cut.elapsed();
    assert!(
        !slow.is_finished(),
        "mended only once the plugin call ended: {}",
        d.log_text()
    );
    let o = slow.join().unwrap();
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("deadline"),
        "control: the plugin call ran to its deadline: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("veth, isolation and forward chains restored {took:?} after the cut, the plugin still asleep");
    let (ok, out) = check(&h);
    assert!(ok, "{out}");
}
