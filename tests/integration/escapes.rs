//! The plugin sandbox, closed: each way out of the grants found on the real kernel (issue 8)
//! is tried by the hostile driver or IPAM, and each try must fail with an error that names
//! the plugin and the reason while the host — its links, addresses, routes in every table,
//! neighbours, FDB, sysctls, weft's store — stays exactly as it was. A positive control
//! (`hostile=allowed`, the legitimate form of every call abused here) shows the same calls
//! do work inside the grants, so a denial is the check's doing, not a broken call.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The host's network state, as text: what a plugin must not be able to change.
fn host_state(h: &TestHost) -> String {
    let ns = &h.host_ns;
    let mut out = String::new();
    for (prog, args) in [
        ("ip", &["-d", "-o", "link", "show"][..]),
        ("ip", &["-o", "addr", "show"][..]),
        ("ip", &["route", "show", "table", "all"][..]),
        ("ip", &["-6", "route", "show", "table", "all"][..]),
        ("ip", &["neigh", "show", "proxy"][..]),
        ("bridge", &["fdb", "show"][..]),
    ] {
        let o = run_ok(ns, prog, args);
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    for s in [
        "ipv4/conf/all/proxy_arp",
        "ipv4/conf/default/proxy_arp",
        "ipv4/conf/all/forwarding",
        "ipv4/conf/default/forwarding",
        "ipv6/conf/all/forwarding",
        "ipv4/conf/hup0/proxy_arp",
        "ipv4/conf/hxhost0/proxy_arp",
    ] {
        let o = run_ok(ns, "cat", &[&format!("/proc/sys/net/{s}")]);
        out.push_str(&format!("{s}={}", String::from_utf8_lossy(&o.stdout)));
    }
    // Keep what configuration sets: not timers, nor the link-local addresses the kernel
    // gives every link and the routes it adds when their duplicate address detection ends
    // (at a moment of its choosing).
    out.lines()
        .filter(|l| !(l.contains("fe80::") && (l.contains("/64") || l.contains("proto kernel"))))
        .map(|l| {
            let mut keep = vec![];
            let mut skip = false;
            for w in l.split_whitespace() {
                if skip {
                    skip = false;
                    continue;
                }
                if w.ends_with("_timer") {
                    skip = true;
                    continue;
                }
                if w != "tentative" {
                    keep.push(w);
                }
            }
            keep.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The host state is what it was; on failure, show only the lines that differ.
#[track_caller]
fn assert_same(now: &str, before: &str, label: &str) {
    if now == before {
        return;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), now.lines().collect());
    let gone: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
    let new: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
    panic!("{label}: the host changed\n gone: {gone:#?}\n new: {new:#?}");
}

const SECRET: &str = "s3cr3t-t0ken-9f8e";

/// A test host with the hostile plugins installed under the grants their tests assume,
/// the parent link hup0 (10.77.0.1/24), a routed network with a sandbox to keep serving,
/// and hxhost0: a link named like the hostile driver's, but not made by it.
fn escape_host(tag: &str) -> TestHost {
    let mut h = TestHost::new(tag);
    h.ip(
        &h.host_ns,
        &[
            "link", "add", "hup0", "type", "veth", "peer", "name", "hup1",
        ],
    );
    run_ok(
        &h.host_ns,
        "ip",
        &["addr", "add", "10.77.0.1/24", "dev", "hup0"],
    );
    run_ok(&h.host_ns, "ip", &["link", "set", "hup0", "up"]);
    run_ok(&h.host_ns, "ip", &["link", "set", "hup1", "up"]);
    let secret = h.dir.join("token");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let token = format!("token=@{}", secret.display());
    let routed = guest("routed");
    h.weft_ok(&[
        "plugin",
        "install",
        routed.to_str().unwrap(),
        "--name",
        "routed",
        "--grant-requested",
    ]);
    let hostile = guest("hostile-driver");
    let out = h.weft_ok(&[
        "plugin",
        "install",
        hostile.to_str().unwrap(),
        "--name",
        "hostile",
        "--grant",
        "link-prefix=hx",
        "--grant",
        "sysctl=proxy_arp",
        "--grant",
        "vni=7000-7099",
        "--grant",
        "vxlan-port=4789",
        "--grant",
        "parent=hup0",
        "--grant",
        "kv-quota=256K",
        "--grant",
        "deadline=600ms",
        "--grant",
        "memory=32M",
        "--config",
        "greeting=hello",
        "--config",
        &token,
    ]);
    assert!(!out.contains(SECRET), "install printed the secret: {out}");
    let ipam = guest("hostile-ipam");
    h.weft_ok(&[
        "plugin",
        "install",
        ipam.to_str().unwrap(),
        "--name",
        "hostile-ipam",
        "--grant",
        "deadline=300ms",
        "--grant",
        "memory=32M",
    ]);
    // Made after the install (which refuses a prefix that names an existing host link).
    run_ok(
        &h.host_ns,
        "ip",
        &["link", "add", "hxhost0", "type", "bridge"],
    );
    h.reopen();
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "routed",
        "--subnet",
        "10.90.0.0/24",
        "good",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "good", "g1"]);
    h
}

/// After a refusal: the engine and the other plugins still work.
fn still_serving(h: &TestHost, label: &str) {
    h.weft_ok(&["sandbox", "create", "--network", "good", "probe"]);
    assert!(
        ping(&key(h, "probe"), sandbox_ip(h, "g1")),
        "{label}: the routed network stopped working"
    );
    h.weft_ok(&["sandbox", "rm", "probe"]);
}

fn try_create(h: &TestHost, mode: &str) -> String {
    h.weft_err(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        &format!("hostile={mode}"),
        "bad",
    ])
}

#[test]
fn every_escape_through_host_net_is_refused_and_the_host_is_unchanged() {
    let h = escape_host("escnet");
    // The positive control first: every kind of call below, inside the grants, works.
    h.weft_ok(&["system", "peer", "add", "192.0.2.20"]);
    let before_allowed = host_state(&h);
    let id = h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=allowed",
        "okay",
    ]);
    let id8 = &id.trim()[..8];
    let s = host_state(&h);
    for want in [
        format!("hxa{id8}"),
        "10.91.0.1/24".to_string(),
        "10.91.0.128/25 dev hxa".to_string(),
        "metric 77".to_string(),
        "blackhole 10.91.0.64/26 table 100".to_string(),
        "vxlan id 7001 local 10.77.0.1 dev hup0".to_string(),
        "dst 192.0.2.20".to_string(),
        format!("hxm{id8}@hup0"),
        "02:42:00:00:00:07".to_string(),
        "ipv4/conf/all/proxy_arp=0".to_string(),
    ] {
        assert!(
            s.contains(&want),
            "allowed: {want:?} missing from the host:\n{s}"
        );
    }
    let pa = run_ok(
        &h.host_ns,
        "cat",
        &[&format!("/proc/sys/net/ipv4/conf/hxa{id8}/proxy_arp")],
    );
    assert_eq!(
        String::from_utf8_lossy(&pa.stdout).trim(),
        "1",
        "its own link's sysctl was set"
    );
    h.weft_ok(&["network", "rm", "okay"]);
    assert_same(
        &host_state(&h),
        &before_allowed,
        "the allowed network left something",
    );
    // Link kinds this kernel may lack (this VM has no ipip, geneve or wireguard): each call
    // works or says it is unsupported; whatever was made goes with the failed operation.
    let err = try_create(&h, "tunnels");
    eprintln!("{err}");
    for kind in ["ipip", "geneve", "wireguard"] {
        let said = err.split(&format!("{kind}: ")).nth(1).unwrap_or("");
        assert!(
            said.starts_with("made") || said.starts_with("unsupported ("),
            "{kind}: {err}"
        );
    }
    assert_same(&host_state(&h), &before_allowed, "tunnels");

    let before = host_state(&h);
    let mut tried = 0;
    let mut wrong = vec![];
    for (mode, reason) in [
        (
            "foreign-link",
            "denied: link \"evil0\" is not this plugin's to make",
        ),
        (
            "touch-eth0",
            "denied: link \"eth0\" is not one this plugin made",
        ),
        (
            "delete-eth0",
            "denied: link \"eth0\" is not one this plugin made",
        ),
        (
            "other-prefix",
            "denied: link \"rtx1\" is not this plugin's to make",
        ),
        (
            "delete-foreign",
            "denied: link \"hxhost0\" is not one this plugin made",
        ),
        (
            "sysctl-foreign",
            "denied: link \"hxhost0\" is not one this plugin made",
        ),
        (
            "sysctl-all",
            "denied: all is not a link: its settings are every link's",
        ),
        (
            "sysctl-default",
            "denied: default is not a link: its settings are every link's",
        ),
        ("list-links", "own links: [\"hxb0\"]"),
        ("route-hijack", "denied: route to 8.8.8.0/24 is outside"),
        (
            "wide-address",
            "denied: address 10.91.0.1/1 would route 0.0.0.0/1 to the link",
        ),
        ("ll-address", "denied: address 169.254.7.7/32 is outside"),
        ("v6-default", "denied: address fe80::1/128 is outside"),
        (
            "route-metadata",
            "denied: route to 169.254.169.254/32 is outside",
        ),
        (
            "route-gateway",
            "denied: route to 169.254.1.1/32 is outside",
        ),
        ("blackhole-default", "denied: route to 0.0.0.0/0 is outside"),
        ("route-local-table", "table 255"),
        ("vxlan-port", "denied: UDP port 53 was not granted"),
        ("vxlan-vni", "denied: VNI 42 was not granted"),
        ("vxlan-local", "denied: 10.77.9.9 is not an address of hup0"),
        ("fdb-nonpeer", "denied: 198.51.100.9 is not a cluster peer"),
        (
            "passthru",
            "denied: macvlan passthru takes the parent over: it was not granted",
        ),
        ("kv-snoop", "no foreign kv data is visible"),
    ] {
        let err = try_create(&h, mode);
        tried += 1;
        if !err.starts_with("Error: plugin hostile: ") || !err.contains(reason) {
            wrong.push(format!("{mode}: expected {reason:?} in {err:?}"));
        }
        assert!(!err.contains("LEAK"), "{mode}: {err}");
        assert_same(
            &host_state(&h),
            &before,
            &format!("{mode}: the host changed"),
        );
        assert!(
            !h.weft_ok(&["network", "ls"]).contains(" bad "),
            "{mode}: the network record stayed"
        );
        h.weft_ok(&["system", "check"]);
    }
    assert!(
        wrong.is_empty(),
        "refused for the wrong reason:\n{}",
        wrong.join("\n")
    );
    still_serving(&h, "after the host-net escapes");
    eprintln!("host-net escapes tried: {tried}, all refused, host unchanged");
}

#[test]
fn join_cannot_hand_over_another_networks_link_or_flood_routes() {
    let h = escape_host("escjoin");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        "hostile=keep-link",
        "keeper",
    ]);
    let before = host_state(&h);
    for (mode, reason) in [
        (
            "steal-link",
            "join returned link \"hxk1\", which is not one it made for this network",
        ),
        (
            "many-routes",
            "join returned 1000 routes, over the 64 allowed",
        ),
        (
            "foreign-join-link",
            "join returned link \"eth0\", which is not one it made",
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
        let with_net = host_state(&h);
        let err = h.weft_err(&["sandbox", "create", "--network", "bad", "victim"]);
        assert!(
            err.contains(reason),
            "{mode}: expected {reason:?} in {err:?}"
        );
        assert_same(
            &host_state(&h),
            &with_net,
            &format!("{mode}: the host changed"),
        );
        assert!(h
            .weft_err(&["sandbox", "inspect", "victim"])
            .contains("No such container"));
        h.weft_ok(&["network", "rm", "bad"]);
        assert_same(&host_state(&h), &before, mode);
    }
    // The stolen link is still where its network keeps it.
    assert!(h.host_links().iter().any(|l| l == "hxk1"));
    still_serving(&h, "join");
}

#[test]
fn the_kv_store_and_the_log_are_bounded() {
    let h = escape_host("esckv");
    let db_size = || -> u64 {
        std::fs::read_dir(h.dir.join("root"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let size0 = db_size();
    let before = host_state(&h);
    // 10 000 × 60 KiB into a 256 KiB quota.
    let err = try_create(&h, "kv-flood");
    assert!(
        err.contains("kv space hostile would hold") && err.contains("over its quota of 262144"),
        "{err}"
    );
    // A value over the size limit through compare-and-swap (put's check was skipped there).
    let err = try_create(&h, "kv-cas-big");
    assert!(err.contains("kv values are at most 1048576 bytes"), "{err}");
    let grown = db_size().saturating_sub(size0);
    assert!(grown < 4 << 20, "the store grew by {grown} bytes");
    // Log lines: bounded in number and size per call, control characters removed.
    let o = h.weft(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=log-flood",
        "bad",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("logged 80 MB"),
        "{}",
        &err[err.len().saturating_sub(500)..]
    );
    assert!(
        o.stderr.len() < 128 << 10,
        "one command printed {} bytes",
        o.stderr.len()
    );
    assert!(
        !o.stderr.contains(&0x1b) && !o.stderr.contains(&0x07),
        "control characters printed"
    );
    assert!(
        err.contains("further log lines of this call suppressed"),
        "{}",
        &err[..500.min(err.len())]
    );
    // An error text of 512 KiB with terminal escapes.
    let err = try_create(&h, "big-error");
    assert!(
        err.len() < 4096 && !err.contains('\u{1b}'),
        "{} bytes: {}",
        err.len(),
        &err[..200.min(err.len())]
    );
    // An answer bigger than the copy budget (200 000 pool options).
    h.weft_err(&[
        "network",
        "create",
        "--ipam-driver",
        "hostile-ipam",
        "--ipam-opt",
        "pool=10.96.0.0/24",
        "--ipam-opt",
        "hostile=big-data",
        "bad",
    ])
    .contains("tried to pass more than 2 MiB")
    .then_some(())
    .expect("the big answer was refused by the copy budget");
    assert_same(&host_state(&h), &before, "");
    still_serving(&h, "kv and log");
}

#[test]
fn a_wasi_sleep_is_cut_at_the_deadline_and_the_daemon_serves_others_meanwhile() {
    let h = Arc::new(escape_host("escsleep"));
    // A longer deadline than the other escapes' 600 ms: what runs meanwhile must fit in it
    // even on a loaded machine (the proof is the link, which the cut call's undo removes).
    h.weft_ok(&["plugin", "rm", "hostile"]);
    // (hxhost0, the look-alike link the other escapes use, would refuse the prefix again.)
    run_ok(&h.host_ns, "ip", &["link", "del", "hxhost0"]);
    h.install_plugin(
        "hostile",
        "hostile-driver",
        &["--grant", "link-prefix=hx", "--grant", "deadline=3s"],
    );
    // Through the daemon, as a host runs weft: a weft process without one opens the engine
    // under the engine-wide lock (recovery) and so waits for operations in flight elsewhere.
    let _d = h.daemon();
    let h2 = h.clone();
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let o = h2.weft(&[
            "network",
            "create",
            "-d",
            "hostile",
            "--subnet",
            "10.91.0.0/24",
            "-o",
            "hostile=wasi-sleep",
            "bad",
        ]);
        (o, started.elapsed())
    });
    // The plugin makes a link (hxs0) before it sleeps: wait for it, so what follows runs
    // while the call is in the plugin.
    let t = Instant::now();
    while !h.host_links().iter().any(|l| l == "hxs0") {
        assert!(
            !slow.is_finished() && t.elapsed() < Duration::from_secs(20),
            "the sleeping plugin's call never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Meanwhile another weft process reads and creates a network. Had it waited for the
    // sleeping create (its lock), it would find hxs0 gone: the slow call's undo removes the
    // link before its locks are let go. The link still there is the proof, not a time.
    let t = Instant::now();
    h.weft_ok(&["network", "ls"]);
    h.weft_ok(&["network", "create", "other"]);
    let other = t.elapsed();
    assert!(
        h.host_links().iter().any(|l| l == "hxs0"),
        "another network's create waited for the sleeping plugin (took {other:?})"
    );
    let (o, took) = slow.join().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("create-network ran past its deadline of 3000 ms"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(7),
        "the sleeping plugin held its command for {took:?}"
    );
    assert!(
        !h.host_links().iter().any(|l| l == "hxs0"),
        "the cut call's link outlived it"
    );
    eprintln!("wasi sleep cut after {took:?}; another command meanwhile took {other:?}");
    h.weft_ok(&["network", "rm", "other"]);
    h.weft_ok(&["system", "check"]);
}

#[test]
fn ipam_answers_are_checked_pools_and_addresses() {
    let h = escape_host("escipam");
    // Positive control: a free private pool chosen by the plugin is taken.
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "hostile-ipam",
        "--ipam-opt",
        "pool=10.95.0.0/24",
        "fine",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "fine", "f1"]);
    assert_eq!(sandbox_ip(&h, "f1").to_string(), "10.95.0.10");
    h.weft_ok(&["sandbox", "rm", "f1"]);
    h.weft_ok(&["network", "rm", "fine"]);
    // (The first bridge network turned IPv4 forwarding on, as Docker does: the state to keep
    // is the one after it.)
    let before = host_state(&h);
    // Pools the plugin picks (no --subnet): none of these may reach the host.
    for (pool, reason) in [
        ("0.0.0.0/0", "0.0.0.0/0, which is too broad"),
        ("128.0.0.0/1", "128.0.0.0/1, which is too broad"),
        ("127.0.0.0/8", "loopback"),
        ("224.1.0.0/24", "multicast"),
        ("169.254.0.0/16", "link-local"),
        ("240.1.0.0/24", "reserved"),
        ("10.90.0.0/24", "overlaps network good's 10.90.0.0/24"),
        ("10.77.0.0/16", "overlaps the host's route to 10.77.0.0/24"),
    ] {
        let err = h.weft_err(&[
            "network",
            "create",
            "--ipam-driver",
            "hostile-ipam",
            "--ipam-opt",
            &format!("pool={pool}"),
            "bad",
        ]);
        assert!(err.contains("plugin hostile-ipam"), "{pool}: {err}");
        assert!(
            err.contains(reason),
            "{pool}: expected {reason:?} in {err:?}"
        );
        assert_same(&host_state(&h), &before, pool);
    }
    // Addresses: each must be a free host address of the pool with its prefix length.
    for (mode, reason) in [
        ("wrong-len", "prefix length"),
        ("gateway", "10.93.0.1"),
        ("network-address", "10.93.0.0"),
        ("broadcast", "10.93.0.255"),
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
        let with_net = host_state(&h);
        let err = h.weft_err(&["sandbox", "create", "--network", "bad", "victim"]);
        assert!(err.contains("plugin hostile-ipam"), "{mode}: {err}");
        assert!(
            err.contains(reason),
            "{mode}: expected {reason:?} in {err:?}"
        );
        assert_same(&host_state(&h), &with_net, mode);
        h.weft_ok(&["network", "rm", "bad"]);
    }
    // The same address twice: the first holder keeps it, the second is refused.
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "hostile-ipam",
        "--subnet",
        "10.93.0.0/24",
        "--ipam-opt",
        "hostile=dup",
        "bad",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "bad", "d1"]);
    let err = h.weft_err(&["sandbox", "create", "--network", "bad", "d2"]);
    assert!(
        err.contains("request-address returned 10.93.0.10/24, which d1 holds already"),
        "{err}"
    );
    h.weft_ok(&["sandbox", "rm", "d1"]);
    h.weft_ok(&["network", "rm", "bad"]);
    assert_same(&host_state(&h), &before, "");
    h.weft_ok(&["system", "check"]);
}

#[test]
fn install_refuses_grants_that_would_reach_the_host_or_do_nothing() {
    let h = escape_host("escinst");
    let routed = guest("routed");
    let f = routed.to_str().unwrap();
    for (grant, reason) in [
        ("link-prefix=en", "clashes"),
        ("link-prefix=al", "clashes"),
        ("link-prefix=de", "clashes"),
        ("link-prefix=wl", "clashes"),
        ("link-prefix=vi", "clashes"),
        ("link-prefix=hup", "hup0"),
        ("kv-global=true", "needs a cluster store"),
        ("vni=7050-8000", "overlap plugin hostile's 7000-7099"),
        ("http=https://x/", "give host or host:port"),
    ] {
        let err = h.weft_err(&["plugin", "install", f, "--name", "r2", "--grant", grant]);
        assert!(
            err.contains(reason),
            "{grant}: expected {reason:?} in {err:?}"
        );
    }
    // hxhost0 exists now: a second plugin may not take the prefix that names it.
    let err = h.weft_err(&[
        "plugin",
        "install",
        f,
        "--name",
        "r3",
        "--grant",
        "link-prefix=hx",
    ]);
    assert!(err.contains("hxhost0"), "{err}");
    // Positive control: the same install with a free prefix works.
    h.weft_ok(&[
        "plugin",
        "install",
        f,
        "--name",
        "r4",
        "--grant",
        "link-prefix=qq",
    ]);
    h.weft_ok(&["plugin", "rm", "r4"]);
}

#[test]
fn a_tampered_compile_cache_is_not_loaded() {
    let h = escape_host("esccache");
    let files = crate::plugins::cache_files(&h);
    let dir = files[0].parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "cache directory mode {mode:o}");
    for f in &files {
        let m = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "{} mode {m:o}", f.display());
    }
    // Put the hostile IPAM's compiled form (valid, made by this very engine) where the
    // routed driver's is.
    let sha = |name: &str| {
        let v = json(&h.weft_ok(&["plugin", "inspect", name]));
        v[0]["sha256"]
            .as_str()
            .or(v["sha256"].as_str())
            .unwrap()
            .to_string()
    };
    let (routed, ipam) = (sha("routed"), sha("hostile-ipam"));
    let find = |s: &str| {
        files
            .iter()
            .find(|f| f.file_name().unwrap().to_string_lossy().starts_with(s))
            .unwrap()
            .clone()
    };
    std::fs::copy(find(&ipam), find(&routed)).unwrap();
    let o = h.weft(&[
        "network",
        "create",
        "-d",
        "routed",
        "--subnet",
        "10.98.0.0/24",
        "r2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match what was installed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    h.weft_ok(&["sandbox", "create", "--network", "r2", "c1"]);
    assert!(
        ping(&key(&h, "c1"), sandbox_ip(&h, "g1")),
        "the recompiled routed driver works"
    );
    h.weft_ok(&["sandbox", "rm", "c1"]);
    h.weft_ok(&["network", "rm", "r2"]);
}

/// A tiny HTTP server on the test host's loopback: answers `body` (or never answers, when
/// `hang`), counting connections.
fn http_server(h: &TestHost, body: &'static str, hang: bool) -> (u16, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let hits2 = hits.clone();
    in_ns(&h.host_ns, move || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let mut held = vec![];
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            hits2.fetch_add(1, Ordering::SeqCst);
            if hang {
                held.push(s);
                continue;
            }
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (rx.recv().unwrap(), hits)
}

#[test]
fn outbound_http_reaches_granted_hosts_only_and_within_the_deadline() {
    let h = escape_host("eschttp");
    let (good, good_hits) = http_server(&h, "10.96.0.0/24\n", false);
    let (other, other_hits) = http_server(&h, "10.97.0.0/24\n", false);
    let (hang, _) = http_server(&h, "", true);
    h.weft_ok(&["plugin", "rm", "hostile-ipam"]);
    let ipam = guest("hostile-ipam");
    h.weft_ok(&[
        "plugin",
        "install",
        ipam.to_str().unwrap(),
        "--name",
        "netipam",
        "--grant",
        &format!("http=127.0.0.1:{good}"),
        "--grant",
        &format!("http=127.0.0.1:{hang}"),
        "--grant",
        "deadline=500ms",
    ]);
    // Granted: the pool comes from the server.
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netipam",
        "--ipam-opt",
        &format!("http-pool=127.0.0.1:{good}"),
        "fromhttp",
    ]);
    let v = json(&h.weft_ok(&["network", "inspect", "fromhttp"]));
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.96.0.0/24", "{v}");
    assert_eq!(good_hits.load(Ordering::SeqCst), 1);
    // Not granted: refused before a packet leaves, the host named.
    let err = h.weft_err(&[
        "network",
        "create",
        "--ipam-driver",
        "netipam",
        "--ipam-opt",
        &format!("http-pool=127.0.0.1:{other}"),
        "bad",
    ]);
    assert!(
        err.contains(&format!(
            "it tried to reach 127.0.0.1:{other}, which it was not granted"
        )),
        "{err}"
    );
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "a connection reached the host not granted"
    );
    // A granted host that never answers: the deadline covers the wait.
    let t = Instant::now();
    let err = h.weft_err(&[
        "network",
        "create",
        "--ipam-driver",
        "netipam",
        "--ipam-opt",
        &format!("http-pool=127.0.0.1:{hang}"),
        "bad",
    ]);
    let took = t.elapsed();
    assert!(
        err.contains("request-pool ran past its deadline of 500 ms"),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "waited {took:?}");
    h.weft_ok(&["network", "rm", "fromhttp"]);
    let _ = SocketAddr::from(([127, 0, 0, 1], good));
}

/// A network create whose IPAM plugin sleeps in request-pool (to its deadline, as a NetBox
/// that does not answer would) holds neither the lock on every network's names and pools nor
/// the engine: other networks are created and removed meanwhile.
#[test]
fn an_ipam_plugin_sleeping_in_request_pool_holds_up_no_other_network() {
    let h = Arc::new(escape_host("escpoolsleep"));
    h.weft_ok(&["plugin", "rm", "hostile-ipam"]);
    h.install_plugin("hostile-ipam", "hostile-ipam", &["--grant", "deadline=3s"]);
    let d = h.daemon();
    let h2 = h.clone();
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        let o = h2.weft(&[
            "network",
            "create",
            "--ipam-driver",
            "hostile-ipam",
            "--ipam-opt",
            "hostile=pool-sleep",
            "--subnet",
            "10.93.0.0/24",
            "bad",
        ]);
        (o, t.elapsed())
    });
    // The plugin logs before it sleeps: what follows runs while the call is in the plugin.
    let t = Instant::now();
    while !d.log_text().contains("request-pool: sleeping") {
        assert!(
            !slow.is_finished() && t.elapsed() < Duration::from_secs(20),
            "the sleeping request-pool never started: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    h.weft_ok(&["network", "create", "--subnet", "10.94.0.0/24", "other"]);
    h.weft_ok(&["network", "rm", "other"]);
    let other = t.elapsed();
    // Had they waited for the sleeping create's locks, it would be over by now (it is cut at
    // 3 s; they would take the rest of that).
    let waited = slow.is_finished();
    assert!(
        !waited && other < Duration::from_millis(1500),
        "another network's create and rm waited for the sleeping IPAM: {other:?}"
    );
    let (o, took) = slow.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("deadline"),
        "the sleeping request-pool is cut at its deadline: {err}"
    );
    assert!(
        took < Duration::from_secs(7),
        "held its command for {took:?}"
    );
    assert!(
        !h.weft_ok(&["network", "ls"]).contains("bad"),
        "the cut create left its network"
    );
    eprintln!("request-pool cut after {took:?}; another network's create and rm took {other:?}");
    h.weft_ok(&["system", "check"]);
}

/// Without a daemon each weft command opens the engine itself. Opening finds out under the
/// engine-wide lock held shared whether anything is to recover (usually not), so it does not
/// wait for another process's operation in flight — here a network create whose IPAM plugin
/// sleeps in request-pool to its 3 s deadline.
#[test]
fn opening_the_engine_waits_for_no_other_process_s_operation() {
    let h = Arc::new(escape_host("escopen"));
    h.weft_ok(&["plugin", "rm", "hostile-ipam"]);
    h.install_plugin("hostile-ipam", "hostile-ipam", &["--grant", "deadline=3s"]);
    let log = h.dir.join("slow.log");
    let h2 = h.clone();
    let log2 = log.clone();
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        let o = h2
            .weft_cmd(&[
                "network",
                "create",
                "--ipam-driver",
                "hostile-ipam",
                "--ipam-opt",
                "hostile=pool-sleep",
                "--subnet",
                "10.98.0.0/24",
                "bad",
            ])
            .env("WEFT_LOG", "warn")
            .stderr(std::fs::File::create(&log2).unwrap())
            .output()
            .unwrap();
        (o, t.elapsed())
    });
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("request-pool: sleeping")
    {
        assert!(
            !slow.is_finished() && t.elapsed() < Duration::from_secs(20),
            "the sleeping request-pool never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    h.weft_ok(&["network", "ls"]);
    h.weft_ok(&["network", "create", "--subnet", "10.99.0.0/24", "other"]);
    let other = t.elapsed();
    let waited = slow.is_finished();
    assert!(
        !waited && other < Duration::from_millis(1500),
        "other weft processes waited for the sleeping create: {other:?}"
    );
    let (o, _) = slow.join().unwrap();
    assert!(!o.status.success(), "the sleeping create is cut");
    eprintln!("two weft processes took {other:?} beside a sleeping plugin call");
    h.weft_ok(&["network", "rm", "other"]);
    h.weft_ok(&["system", "check"]);
}
