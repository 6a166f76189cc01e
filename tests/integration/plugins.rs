//! Wasm plugins end to end: the example drivers and IPAM carry real traffic in real
//! namespaces; hostile plugins fail their operation with an error naming them and the
//! reason, leave nothing behind, and do not stop the engine or the other plugins.

use std::net::SocketAddr;

use crate::harness::*;

fn install(h: &TestHost, name: &str, guest_name: &str, extra: &[&str]) -> String {
    h.install_plugin(name, guest_name, extra)
}

fn reopen(h: &mut TestHost) {
    // Plugins installed through the CLI are registered when an engine opens.
    h.reopen();
}

#[test]
fn routed_plugin_with_host_local_ipam_carries_traffic() {
    let mut h = TestHost::new("plugrouted");
    let out = install(&h, "routed", "routed", &["--grant-requested"]);
    assert!(
        out.contains("It asks for:") && out.contains("link-prefix  rt"),
        "{out}"
    );
    assert!(
        out.contains("It was granted:")
            && out.contains("sysctls      proxy_arp, proxy_delay, forwarding"),
        "{out}"
    );
    install(&h, "host-local", "host-local", &["--grant-requested"]);
    reopen(&mut h);
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "routed",
        "--ipam-driver",
        "host-local",
        "--subnet",
        "10.80.0.0/24",
        "--ipam-opt",
        "range-start=10.80.0.50",
        "--ipam-opt",
        "exclude=10.80.0.51",
        "rnet",
    ]);
    for s in ["a", "b"] {
        h.weft_ok(&["sandbox", "create", "--network", "rnet", s]);
    }
    // host-local's semantics: from range-start, skipping the excluded address.
    assert_eq!(sandbox_ip(&h, "a").to_string(), "10.80.0.50");
    assert_eq!(sandbox_ip(&h, "b").to_string(), "10.80.0.52");
    // Calico-style: default route via 169.254.1.1 on-link, host routes per endpoint.
    assert_eq!(
        h.ip_lines(&key(&h, "a"), &["route", "show", "default"]),
        ["default via 169.254.1.1 dev eth0 onlink"]
    );
    let host_routes = h.ip_lines(&h.host_ns, &["route", "show"]).join("\n");
    assert!(
        host_routes.contains("10.80.0.50 dev rt") && host_routes.contains("10.80.0.52 dev rt"),
        "{host_routes}"
    );
    // Real traffic through the host's routing table.
    assert!(ping(&key(&h, "a"), sandbox_ip(&h, "b")));
    let peer = tcp_exchange(
        &key(&h, "a"),
        &key(&h, "b"),
        SocketAddr::new(sandbox_ip(&h, "b"), 8080),
    )
    .expect("TCP a → b");
    assert_eq!(peer.ip(), sandbox_ip(&h, "a"));
    // The plugin cannot be removed while a network uses it.
    assert_eq!(
        h.weft_err(&["plugin", "rm", "routed"]),
        "Error: plugin routed is in use by network rnet: remove the network first"
    );
    h.weft_ok(&["sandbox", "rm", "a", "b"]);
    h.weft_ok(&["network", "rm", "rnet"]);
    assert_eq!(h.host_links(), ["lo"], "every link the plugin made is gone");
    // Addresses went back to host-local: a new network on the same subnet starts over.
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "routed",
        "--ipam-driver",
        "host-local",
        "--subnet",
        "10.80.0.0/24",
        "rnet2",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "rnet2", "c"]);
    assert_eq!(sandbox_ip(&h, "c").to_string(), "10.80.0.2");
}

#[test]
fn mesh_plugin_bridges_locally_and_programs_peers() {
    let mut h = TestHost::new("plugmesh");
    install(&h, "mesh", "mesh", &["--grant-requested"]);
    reopen(&mut h);
    let id = h.weft_ok(&[
        "network",
        "create",
        "-d",
        "mesh",
        "--subnet",
        "10.81.0.0/24",
        "-o",
        "vni=6160400",
        "mnet",
    ]);
    let id10 = &id.trim()[..10];
    let vx = format!("wmx{id10}");
    let d = h
        .ip_lines(&h.host_ns, &["-d", "-o", "link", "show", &vx])
        .join("");
    assert!(d.contains("vxlan id 6160400"), "{d}");
    assert!(d.contains(&format!("master wmb{id10}")), "{d}");
    h.weft_ok(&["sandbox", "create", "--network", "mnet", "m1"]);
    h.weft_ok(&["sandbox", "create", "--network", "mnet", "m2"]);
    assert_eq!(
        tcp_exchange(
            &key(&h, "m1"),
            &key(&h, "m2"),
            SocketAddr::new(sandbox_ip(&h, "m2"), 9090)
        )
        .unwrap()
        .ip(),
        sandbox_ip(&h, "m1")
    );
    assert!(ping(&key(&h, "m2"), sandbox_ip(&h, "m1")));
    // Peers heard of get a flood entry on every mesh network, and lose it again.
    h.weft_ok(&["system", "peer", "add", "192.0.2.10"]);
    let fdb =
        String::from_utf8_lossy(&run_ok(&h.host_ns, "bridge", &["fdb", "show", "dev", &vx]).stdout)
            .into_owned();
    assert!(fdb.contains("00:00:00:00:00:00 dst 192.0.2.10"), "{fdb}");
    // The entry is recorded with the network that owns the device: check sees it, and sees
    // it go missing.
    h.weft_ok(&["system", "check"]);
    let mac_dst = [
        "fdb",
        "del",
        "00:00:00:00:00:00",
        "dev",
        vx.as_str(),
        "dst",
        "192.0.2.10",
    ];
    run_ok(&h.host_ns, "bridge", &mac_dst);
    let o = h.weft(&["system", "check"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("fdb entry"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    h.weft_ok(&["system", "check", "--repair"]);
    let fdb =
        String::from_utf8_lossy(&run_ok(&h.host_ns, "bridge", &["fdb", "show", "dev", &vx]).stdout)
            .into_owned();
    assert!(
        fdb.contains("dst 192.0.2.10"),
        "repair made the network again with its peers: {fdb}"
    );
    // A network made later learns the peers that came before it (kept in the plugin's kv).
    let id2 = h.weft_ok(&[
        "network",
        "create",
        "-d",
        "mesh",
        "--subnet",
        "10.82.0.0/24",
        "mnet2",
    ]);
    let vx2 = format!("wmx{}", &id2.trim()[..10]);
    let fdb2 = String::from_utf8_lossy(
        &run_ok(&h.host_ns, "bridge", &["fdb", "show", "dev", &vx2]).stdout,
    )
    .into_owned();
    assert!(fdb2.contains("dst 192.0.2.10"), "{fdb2}");
    h.weft_ok(&["system", "peer", "rm", "192.0.2.10"]);
    let fdb =
        String::from_utf8_lossy(&run_ok(&h.host_ns, "bridge", &["fdb", "show", "dev", &vx]).stdout)
            .into_owned();
    assert!(!fdb.contains("192.0.2.10"), "{fdb}");
    h.weft_ok(&["system", "check"]);
    h.weft_ok(&["sandbox", "rm", "m1", "m2"]);
    h.weft_ok(&["network", "rm", "mnet", "mnet2"]);
    assert_eq!(h.host_links(), ["lo"]);
}

#[test]
fn plugins_of_another_wit_version_or_not_components_are_refused() {
    let h = TestHost::new("plugver");
    // A component built for weft:plugin@0.9.0 (the same bytes, renamed interfaces).
    let bytes = std::fs::read(guest("routed")).unwrap();
    let (from, to) = (b"weft:plugin/".as_slice(), b"@0.2.0".as_slice());
    let mut patched = bytes.clone();
    let mut i = 0;
    let mut n = 0;
    while i + from.len() < patched.len() {
        if patched[i..].starts_with(from) {
            let end = (i..patched.len().min(i + 64)).find(|j| patched[*j..].starts_with(to));
            if let Some(j) = end {
                patched[j..j + to.len()].copy_from_slice(b"@0.9.0");
                n += 1;
                i = j;
            }
        }
        i += 1;
    }
    assert!(n > 0);
    let f = h.dir.join("future.wasm");
    std::fs::write(&f, &patched).unwrap();
    let err = h.weft_err(&["plugin", "install", f.to_str().unwrap(), "--name", "future"]);
    assert_eq!(
        err,
        "Error: this plugin was built for weft:plugin@0.9.0, but this engine speaks weft:plugin@0.2.0 and weft:plugin@0.1.0: rebuild it against weft's wit/ directory"
    );
    let junk = h.dir.join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    assert!(h
        .weft_err(&[
            "plugin",
            "install",
            junk.to_str().unwrap(),
            "--name",
            "junk"
        ])
        .contains("not a valid WebAssembly component"));
    assert!(h
        .weft_err(&[
            "plugin",
            "install",
            junk.to_str().unwrap(),
            "--name",
            "bridge"
        ])
        .contains("weft's own drivers"));
    assert_eq!(
        h.weft_ok(&["plugin", "ls"]).lines().count(),
        1,
        "nothing was installed"
    );
}

/// A host with the hostile driver (prefix hx, short deadline) and well-behaved neighbours.
fn hostile_host(tag: &str) -> TestHost {
    let mut h = TestHost::new(tag);
    install(&h, "routed", "routed", &["--grant-requested"]);
    install(&h, "host-local", "host-local", &["--grant-requested"]);
    install(
        &h,
        "hostile",
        "hostile-driver",
        &[
            "--grant",
            "link-prefix=hx",
            "--grant",
            "deadline=600ms",
            "--grant",
            "memory=32M",
        ],
    );
    install(
        &h,
        "hostile-ipam",
        "hostile-ipam",
        &["--grant", "deadline=300ms", "--grant", "memory=32M"],
    );
    reopen(&mut h);
    // Something for the others to keep serving, and data the snoop must not see.
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "routed",
        "--ipam-driver",
        "host-local",
        "--subnet",
        "10.90.0.0/24",
        "good",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "good", "g1"]);
    h
}

/// The refusal names the plugin and the reason; nothing is left; the engine and the other
/// plugins keep working.
fn assert_contained(
    h: &TestHost,
    err: &str,
    plugin: &str,
    reason: &str,
    links_before: &[String],
    label: &str,
    net_made: bool,
) {
    assert!(
        err.starts_with(&format!("Error: plugin {plugin}: ")),
        "{label}: {err}"
    );
    assert!(
        err.contains(reason),
        "{label}: expected {reason:?} in {err:?}"
    );
    let mut now = h.host_links();
    now.sort();
    let mut before = links_before.to_vec();
    before.sort();
    assert_eq!(now, before, "{label}: links left behind");
    let nets = h.weft_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(
        nets.lines().any(|n| n == "bad"),
        net_made,
        "{label}: networks now: {nets}"
    );
    assert!(
        h.weft_err(&["sandbox", "inspect", "victim"])
            .contains("No such container"),
        "{label}: sandbox record stayed"
    );
    // Other plugins keep working, and so does the engine.
    h.weft_ok(&["sandbox", "create", "--network", "good", "probe"]);
    assert!(
        ping(&key(h, "probe"), sandbox_ip(h, "g1")),
        "{label}: the routed network stopped working"
    );
    h.weft_ok(&["sandbox", "rm", "probe"]);
}

#[test]
fn hostile_driver_calls_fail_alone_and_leave_nothing() {
    let h = hostile_host("hostdrv");
    let before = h.host_links();
    // Misbehaviour while creating the network.
    for (mode, reason) in [
        (
            "foreign-link",
            "denied: link \"evil0\" is not this plugin's",
        ),
        (
            "touch-eth0",
            "denied: link \"eth0\" is not one this plugin made",
        ),
        (
            "delete-eth0",
            "denied: link \"eth0\" is not one this plugin made",
        ),
        ("other-prefix", "denied: link \"rtx1\" is not this plugin's"),
        (
            "route-hijack",
            "denied: route to 8.8.8.0/24 is outside the network's subnets",
        ),
        ("kv-snoop", "no foreign kv data is visible"),
    ] {
        let err = h.weft_err(&[
            "network",
            "create",
            "-d",
            "hostile",
            "--subnet",
            "10.91.0.0/24",
            "-o",
            &format!("hostile={mode}"),
            "bad",
        ]);
        assert_contained(&h, &err, "hostile", reason, &before, mode, false);
    }
    // Misbehaviour while connecting: the network is made, the sandbox is not.
    for (mode, reason) in [
        (
            "loop-join",
            "join ran past its deadline of 600 ms and was stopped",
        ),
        (
            "trap-endpoint",
            "create-endpoint trapped: it panicked or hit unreachable code",
        ),
        (
            "foreign-join-link",
            "join returned link \"eth0\", which is not one it made for this network",
        ),
        (
            "ghost-link",
            "join returned link \"hxghost\", which is not one it made for this network",
        ),
        (
            "bad-gateway",
            "join returned gateway 10.99.99.99 outside the endpoint's subnet",
        ),
        (
            "multicast-mac",
            "create-endpoint returned MAC 01:00:5e:00:00:01, which is not a unicast address",
        ),
    ] {
        h.weft_ok(&[
            "network",
            "create",
            "-d",
            "hostile",
            "--subnet",
            "10.92.0.0/24",
            "-o",
            &format!("hostile={mode}"),
            "bad",
        ]);
        let with_net = h.host_links();
        let err = h.weft_err(&["sandbox", "create", "--network", "bad", "victim"]);
        assert_contained(&h, &err, "hostile", reason, &with_net, mode, true);
        h.weft_ok(&["network", "rm", "bad"]);
        assert_eq!(h.host_links(), before, "{mode}: network removal left links");
    }
}

#[test]
fn hostile_ipam_calls_fail_alone_and_leave_nothing() {
    let h = hostile_host("hostipam");
    let before = h.host_links();
    for (mode, reason) in [
        (
            "bomb",
            "request-address tried to use more than its 32 MiB of memory and was stopped",
        ),
        (
            "loop",
            "request-address ran past its deadline of 300 ms and was stopped",
        ),
        (
            "outside",
            "returned address 203.0.113.7/24 outside the pool 10.93.0.0/24",
        ),
    ] {
        h.weft_ok(&[
            "network",
            "create",
            "--ipam-driver",
            "hostile-ipam",
            "--subnet",
            "10.93.0.0/24",
            "--ipam-opt",
            &format!("hostile={mode}"),
            "bad",
        ]);
        let with_net = h.host_links();
        let err = h.weft_err(&["sandbox", "create", "--network", "bad", "victim"]);
        assert_contained(&h, &err, "hostile-ipam", reason, &with_net, mode, true);
        h.weft_ok(&["network", "rm", "bad"]);
        assert_eq!(h.host_links(), before);
    }
    let err = h.weft_err(&[
        "network",
        "create",
        "--ipam-driver",
        "hostile-ipam",
        "--subnet",
        "10.94.0.0/24",
        "--ipam-opt",
        "hostile=wrong-pool",
        "bad",
    ]);
    assert_contained(
        &h,
        &err,
        "hostile-ipam",
        "request-pool returned 192.0.2.0/24, but 10.94.0.0/24 was asked for",
        &before,
        "wrong-pool",
        false,
    );
}

#[test]
fn a_plugin_cannot_make_itself_impossible_to_remove() {
    // Its delete-network and delete-endpoint answer "not found": without -f that stops the
    // removal (and says why); with -f weft removes its own records and kernel objects anyway
    // and reports what the plugin refused.
    let h = hostile_host("plugnf");
    let before = h.host_links();
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=notfound-delete",
        "hn",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "hn", "s1"]);
    h.weft_ok(&["sandbox", "create", "--network", "hn", "s2"]);
    // Positive control: -f forgives a network that does not exist at all.
    let o = h.weft(&["network", "rm", "-f", "no-such-network"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Without -f the plugin's refusal stops the removal, and nothing is half-removed.
    let err = h.weft_err(&["sandbox", "rm", "s1"]);
    assert!(
        err.contains("plugin hostile") && err.contains("knows no such endpoint"),
        "{err}"
    );
    assert!(h.weft_ok(&["sandbox", "ls"]).contains("s1"));
    h.weft_ok(&["system", "check"]);
    // With -f it goes, with a warning that names the plugin and what it said.
    let o = h.weft(&["sandbox", "rm", "-f", "s1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let warn = String::from_utf8_lossy(&o.stderr);
    assert!(
        warn.contains("Warning:")
            && warn.contains("plugin hostile")
            && warn.contains("knows no such endpoint"),
        "{warn}"
    );
    assert!(!h.weft_ok(&["sandbox", "ls"]).contains("s1"));
    // The same for the network (s2 is still on it: -f takes it off first).
    h.weft_ok(&["sandbox", "rm", "-f", "s2"]);
    let err = h.weft_err(&["network", "rm", "hn"]);
    assert!(err.contains("knows no such network"), "{err}");
    assert!(h.weft_ok(&["network", "ls"]).contains(" hn "));
    let o = h.weft(&["network", "rm", "-f", "hn"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let warn = String::from_utf8_lossy(&o.stderr);
    assert!(
        warn.contains("Warning:") && warn.contains("knows no such network"),
        "{warn}"
    );
    assert!(!h.weft_ok(&["network", "ls"]).contains(" hn "));
    assert_eq!(
        h.host_links(),
        before,
        "the plugin's links went with the network"
    );
    h.weft_ok(&["system", "check"]);
    // And the plugin itself: refused while a network uses it, removed with -f (the network
    // with it), its compiled form gone from the cache.
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=notfound-delete",
        "hn2",
    ]);
    let err = h.weft_err(&["plugin", "rm", "hostile"]);
    assert!(err.contains("hn2"), "{err}");
    let cached = |h: &TestHost| cache_files(h).len();
    let n = cached(&h);
    assert!(n >= 1, "the install compiled into the cache");
    let o = h.weft(&["plugin", "rm", "-f", "hostile"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("knows no such network"));
    assert!(!h.weft_ok(&["network", "ls"]).contains("hn2"));
    assert!(!h.weft_ok(&["plugin", "ls"]).contains("hostile "));
    assert_eq!(cached(&h), n - 1, "plugin rm removed its compiled form");
    assert_eq!(h.host_links(), before);
    h.weft_ok(&["system", "check"]);
}

/// The compiled components in weft's cache.
pub fn cache_files(h: &TestHost) -> Vec<std::path::PathBuf> {
    fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "cwasm") {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(&h.dir.join("root"), &mut out);
    out
}

#[test]
fn what_a_removal_hook_adds_to_the_host_does_not_outlive_it() {
    let h = hostile_host("plugleave");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.92.0.0/24",
        "-o",
        "hostile=leave-adds",
        "hl",
    ]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "good",
        "--ip",
        "10.90.0.77",
        "x",
    ]);
    h.weft_ok(&["network", "connect", "hl", "x"]);
    h.weft_ok(&["network", "disconnect", "hl", "x"]);
    let left: Vec<String> = h
        .host_links()
        .into_iter()
        .filter(|l| l.starts_with("hxl"))
        .collect();
    assert!(
        left.is_empty(),
        "the leave hook's bridge is still there: {left:?}"
    );
    h.weft_ok(&["system", "check"]);
}

#[test]
fn a_plugin_running_to_its_deadline_on_one_network_does_not_hold_up_another() {
    let h = hostile_host("plugslow");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "hostile=loop-join",
        "slow",
    ]);
    h.weft_ok(&["network", "create", "fast"]);
    let mut h = h;
    reopen(&mut h);
    let e = h.engine().clone();
    h.block_on(async {
        let started = std::time::Instant::now();
        let slow = {
            let e = e.clone();
            tokio::spawn(async move {
                e.create_sandbox(weft::model::SandboxCreate {
                    name: "stuck".into(),
                    network: Some("slow".into()),
                    ..Default::default()
                })
                .await
            })
        };
        // While the plugin spins in join on "slow" (its deadline is 600 ms), sandboxes come and
        // go on "fast". Counted are the cycles that end while the slow call is still running:
        // were the other network held up behind it, none would (each would end after it). The
        // count, not a time, is the check, so a busy machine cannot make it fail or pass.
        // The plugin makes its veth (hxv…) before it spins: wait for it, so the cycles below
        // run while join is in the plugin, not before it started.
        let spinning = std::time::Instant::now();
        while !h.host_links().iter().any(|l| l.starts_with("hxv")) {
            assert!(
                !slow.is_finished() && spinning.elapsed() < std::time::Duration::from_secs(20),
                "the slow plugin's join never started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let mut worst = std::time::Duration::ZERO;
        let mut during = 0;
        let mut i = 0;
        while !slow.is_finished() && i < 200 {
            let t = std::time::Instant::now();
            let name = format!("f{i}");
            i += 1;
            e.create_sandbox(weft::model::SandboxCreate {
                name: name.clone(),
                network: Some("fast".into()),
                ..Default::default()
            })
            .await
            .unwrap();
            e.remove_sandbox(&name, false).await.unwrap();
            if !slow.is_finished() {
                during += 1;
                worst = worst.max(t.elapsed());
            }
        }
        assert!(
            during >= 2,
            "only {during} create+remove cycles on the other network ended while the slow \
             plugin's call ran ({:?} in all): it was held up",
            started.elapsed()
        );
        let err = slow.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("ran past its deadline"), "{err}");
        eprintln!(
            "{during} create+remove cycles on the other network while a plugin spun, worst {worst:?}"
        );
    });
    h.weft_ok(&["system", "check"]);
}
