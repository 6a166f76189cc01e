//! The NetBox IPAM plugin (ipam-plugins/netbox) against a real NetBox: what weft allocates is
//! what NetBox lists, concurrency, NetBox down or hanging, a grant that lacks NetBox, a bad
//! token, reconciling after a restart, and the docker CLI. Each negative check has its
//! positive control in the same test.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::support::*;

/// Allocations through weft equal what NetBox's API lists, with who holds each address;
/// removing frees them; the prefix weft created goes with the network, `--ip-range` is
/// honoured, and a prefix NetBox already had is used and kept.
#[test]
fn allocations_are_what_netbox_lists() {
    let nb = netbox();
    let h = TestHost::new("nb-alloc");
    let px = Proxy::start(&h);
    install(&h, &px, "netbox", &[]);
    let cidr = subnet();
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "nb1",
    ]);
    assert!(
        nb.prefix(&cidr).is_some(),
        "weft created the prefix in NetBox"
    );
    for s in ["a", "b"] {
        h.weft_ok(&["sandbox", "create", "--network", "nb1", s]);
    }
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "nb1",
        "--hostname",
        "web-c",
        "c",
    ]);
    let weft: Vec<(String, String)> = network_members(&h, "nb1");
    assert_eq!(weft.len(), 3);
    let listed = nb.addresses(&cidr);
    let gw = host(&cidr, 1);
    let mut want: BTreeSet<String> = weft.iter().map(|(_, a)| a.clone()).collect();
    want.insert(gw.clone());
    let have: BTreeSet<String> = listed.iter().map(|(a, _, _)| a.clone()).collect();
    assert_eq!(
        have, want,
        "NetBox lists exactly the gateway and the sandboxes' addresses"
    );
    for (name, addr) in &weft {
        let (_, desc, _) = listed.iter().find(|(a, _, _)| a == addr).unwrap();
        assert!(
            desc.starts_with("[weft@test-host] sandbox ") && desc.contains(&format!(" {name} (")),
            "NetBox says who holds {addr}: {desc}"
        );
    }
    // The sandbox's host name is NetBox's dns_name (its name when it has none).
    for (name, dns) in [("a", "a"), ("c", "web-c")] {
        let addr = &weft.iter().find(|(n, _)| n == name).unwrap().1;
        let v = nb.ok(
            "GET",
            &format!("/api/ipam/ip-addresses/?address={addr}"),
            None,
        );
        assert_eq!(v["results"][0]["dns_name"], dns, "{name}: {v}");
    }
    let (_, gdesc, _) = listed.iter().find(|(a, _, _)| *a == gw).unwrap();
    assert!(gdesc.contains("network address"), "{gdesc}");

    // A static address, then removal frees it.
    let fixed = host(&cidr, 77);
    h.weft_ok(&["sandbox", "create", "--network", "nb1", "--ip", &fixed, "d"]);
    assert!(nb.addresses(&cidr).iter().any(|(a, _, _)| *a == fixed));
    let err = h.weft_err(&["sandbox", "create", "--network", "nb1", "--ip", &fixed, "e"]);
    assert!(
        err.contains(&fixed),
        "a second holder of {fixed} is refused: {err}"
    );
    h.weft_ok(&["sandbox", "rm", "a", "d"]);
    let after: BTreeSet<String> = nb.addresses(&cidr).into_iter().map(|(a, _, _)| a).collect();
    let gone: Vec<&String> = weft
        .iter()
        .filter(|(n, _)| n == "a")
        .map(|(_, a)| a)
        .collect();
    assert!(
        !after.contains(gone[0]) && !after.contains(&fixed),
        "removed sandboxes' addresses are freed: {after:?}"
    );
    assert_eq!(after.len(), 3, "gateway, b and c remain: {after:?}");

    h.weft_ok(&["sandbox", "rm", "b", "c"]);
    h.weft_ok(&["network", "rm", "nb1"]);
    assert!(nb.addresses(&cidr).is_empty(), "nothing left in NetBox");
    assert!(
        nb.prefix(&cidr).is_none(),
        "the prefix weft created is deleted with the network"
    );

    // --ip-range: dynamic addresses come from the range only (a NetBox IP range).
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "--ip-range",
        &format!("{}/26", host(&cidr, 192)),
        "nb2",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "nb2", "r"]);
    let r = network_members(&h, "nb2");
    let last: u8 = r[0].1.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        last >= 192,
        "the address {} comes from the ip range",
        r[0].1
    );
    h.weft_ok(&["sandbox", "rm", "r"]);
    h.weft_ok(&["network", "rm", "nb2"]);
    let v = nb.ok("GET", &format!("/api/ipam/ip-ranges/?parent={cidr}"), None);
    assert_eq!(v["count"], 0, "the range weft made is gone: {v}");

    // A prefix NetBox already had is used, and kept when the network goes.
    nb.ok(
        "POST",
        "/api/ipam/prefixes/",
        Some(&json!({"prefix": cidr, "description": "the network team's"})),
    );
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "nb3",
    ]);
    h.weft_ok(&["network", "rm", "nb3"]);
    assert!(
        nb.prefix(&cidr).is_some(),
        "a prefix weft did not create stays"
    );
    assert!(nb.addresses(&cidr).is_empty());
    nb.clear(&cidr);
    let check = h.weft(&["system", "check"]);
    assert!(
        check.status.success(),
        "system check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// No subnet given: NetBox carves one from a parent prefix (`available-prefixes`).
#[test]
fn subnet_carved_from_a_parent_prefix() {
    let nb = netbox();
    let h = TestHost::new("nb-carve");
    let px = Proxy::start(&h);
    let parent = subnet();
    // The parent /24 is split into /28s.
    nb.ok(
        "POST",
        "/api/ipam/prefixes/",
        Some(&json!({"prefix": parent, "description": "weft test parent"})),
    );
    install(
        &h,
        &px,
        "netbox",
        &[
            "--config",
            &format!("parent={parent}"),
            "--config",
            "prefix-length=28",
        ],
    );
    h.weft_ok(&["network", "create", "--ipam-driver", "netbox", "c1"]);
    h.weft_ok(&["network", "create", "--ipam-driver", "netbox", "c2"]);
    let sub = |n: &str| {
        network_json(&h, n)["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (s1, s2) = (sub("c1"), sub("c2"));
    assert_ne!(s1, s2);
    for s in [&s1, &s2] {
        assert!(
            s.ends_with("/28") && nb.prefix(s).is_some(),
            "{s} carved in NetBox from {parent}"
        );
    }
    h.weft_ok(&["network", "rm", "c1", "c2"]);
    assert!(nb.prefix(&s1).is_none() && nb.prefix(&s2).is_none());
    // Control: without a parent, a clear error that says what to add.
    let h2 = TestHost::new("nb-carve2");
    let px2 = Proxy::start(&h2);
    install(&h2, &px2, "netbox", &[]);
    let err = h2.weft_err(&["network", "create", "--ipam-driver", "netbox", "c3"]);
    assert!(err.contains("--subnet") && err.contains("parent"), "{err}");
    nb.clear(&parent);
}

/// 20 concurrent sandbox creates through the daemon get 20 distinct addresses, and NetBox
/// holds exactly those.
#[test]
fn twenty_concurrent_creates_get_distinct_addresses() {
    let nb = netbox();
    let h = TestHost::new("nb-conc");
    let px = Proxy::start(&h);
    install(&h, &px, "netbox", &[]);
    let d = h.daemon();
    let cidr = subnet();
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "cn",
    ]);
    let t = Instant::now();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|i| {
                let h = &h;
                s.spawn(move || h.weft(&["sandbox", "create", "--network", "cn", &format!("s{i}")]))
            })
            .collect();
        for j in hs {
            let o = j.join().unwrap();
            assert!(
                o.status.success(),
                "create: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    });
    eprintln!("20 concurrent creates with NetBox IPAM: {:?}", t.elapsed());
    let weft: BTreeSet<String> = network_members(&h, "cn")
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(weft.len(), 20, "20 distinct addresses");
    let mut listed: BTreeSet<String> = nb.addresses(&cidr).into_iter().map(|(a, _, _)| a).collect();
    assert!(listed.remove(&host(&cidr, 1)), "the gateway is listed");
    assert_eq!(
        listed, weft,
        "NetBox holds exactly the 20 addresses weft gave"
    );
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    let mut args = vec!["sandbox", "rm"];
    args.extend(names.iter().map(String::as_str));
    h.weft_ok(&args);
    h.weft_ok(&["network", "rm", "cn"]);
    assert!(nb.addresses(&cidr).is_empty() && nb.prefix(&cidr).is_none());
    drop(d);
}

/// NetBox stopped mid-run: the operation fails with an error naming NetBox and leaves
/// nothing behind, in weft or in NetBox; when NetBox is back the same create works.
#[test]
fn netbox_stopped_fails_cleanly() {
    let nb = netbox();
    let h = TestHost::new("nb-down");
    let px = Proxy::start(&h);
    install(&h, &px, "netbox", &[]);
    let cidr = subnet();
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "dn",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "dn", "a"]);
    let before = nb.addresses(&cidr);
    let links_before = h.host_links();
    px.stop();
    // (Named so that it cannot be read as an id prefix: `inspect b` finds sandbox a when a's
    // random id starts with b, as Docker's lookup does.)
    let err = h.weft_err(&["sandbox", "create", "--network", "dn", "nb"]);
    assert!(
        err.contains("NetBox") && err.contains(&px.authority()),
        "the error names NetBox: {err}"
    );
    assert!(
        !err.contains(&std::fs::read_to_string(&nb.token_file).unwrap()),
        "no token in {err}"
    );
    eprintln!("NetBox stopped, sandbox create: {err}");
    let other = subnet();
    let err = h.weft_err(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &other,
        "dn2",
    ]);
    assert!(err.contains("NetBox"), "{err}");
    assert!(nb.prefix(&other).is_none());
    assert!(
        h.weft_err(&["sandbox", "inspect", "nb"]).contains("nb"),
        "no sandbox nb in weft"
    );
    assert!(h.weft_err(&["network", "inspect", "dn2"]).contains("dn2"));
    assert_eq!(h.host_links(), links_before, "no links left");
    assert_eq!(network_members(&h, "dn").len(), 1);
    let check = h.weft(&["system", "check"]);
    assert!(
        check.status.success(),
        "system check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert_eq!(nb.addresses(&cidr), before, "nothing new in NetBox");
    // Control: NetBox back, the same create works.
    px.resume();
    h.weft_ok(&["sandbox", "create", "--network", "dn", "b"]);
    assert_eq!(nb.addresses(&cidr).len(), before.len() + 1);
    h.weft_ok(&["sandbox", "rm", "a", "b"]);
    h.weft_ok(&["network", "rm", "dn"]);
    assert!(nb.addresses(&cidr).is_empty());
}

/// NetBox hanging: the call is cut at the plugin's deadline; other networks keep working
/// meanwhile (through the same daemon).
#[test]
fn netbox_hanging_is_cut_at_the_deadline() {
    let h = TestHost::new("nb-hang");
    let px = Proxy::start(&h);
    install(&h, &px, "netbox", &["--grant", "deadline=1500ms"]);
    let d = h.daemon();
    let cidr = subnet();
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "hn",
    ]);
    h.weft_ok(&["network", "create", "--subnet", "10.31.0.0/24", "native"]);
    px.hang();
    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let t = Instant::now();
            let o = h.weft(&["sandbox", "create", "--network", "hn", "stuck"]);
            (o, t.elapsed())
        });
        // Meanwhile: sandboxes on another network come and go, each quickly.
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..3 {
            let t = Instant::now();
            h.weft_ok(&["sandbox", "create", "--network", "native", &format!("n{i}")]);
            assert!(
                t.elapsed() < Duration::from_millis(1000),
                "other networks keep working: {:?}",
                t.elapsed()
            );
        }
        let (o, took) = slow.join().unwrap();
        assert!(!o.status.success(), "a hanging NetBox fails the create");
        let err = String::from_utf8_lossy(&o.stderr);
        eprintln!("NetBox hanging, sandbox create after {took:?}: {err}");
        assert!(
            err.contains("deadline") || err.contains("1.5s") || err.contains("1500ms"),
            "{err}"
        );
        assert!(
            took < Duration::from_secs(6),
            "cut at the deadline: {took:?}"
        );
    });
    assert!(h
        .weft_err(&["sandbox", "inspect", "stuck"])
        .contains("stuck"));
    px.resume();
    h.weft_ok(&["sandbox", "create", "--network", "hn", "ok"]);
    h.weft_ok(&["sandbox", "rm", "ok", "n0", "n1", "n2"]);
    h.weft_ok(&["network", "rm", "hn", "native"]);
    assert!(netbox().addresses(&cidr).is_empty());
    drop(d);
}

/// A grant that lacks NetBox's host: refused before any packet leaves (the proxy accepts no
/// connection); control: granted, the same call reaches it.
#[test]
fn ungranted_netbox_is_refused_before_a_packet() {
    let h = TestHost::new("nb-grant");
    let px = Proxy::start(&h);
    let url = format!("url=http://{}", px.authority());
    let token = format!("token=@{}", netbox().token_file.display());
    h.install_plugin(
        "netbox",
        "netbox",
        &[
            "--grant",
            "http=127.0.0.1:1",
            "--config",
            &url,
            "--config",
            &token,
        ],
    );
    let cidr = subnet();
    let err = h.weft_err(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "g",
    ]);
    eprintln!("ungranted: {err}");
    assert!(
        err.contains(&px.authority()) && err.contains("http="),
        "the refusal names the grant: {err}"
    );
    assert_eq!(
        px.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection reached NetBox"
    );
    assert!(netbox().prefix(&cidr).is_none());
    // Control.
    let h2 = TestHost::new("nb-grant2");
    let px2 = Proxy::start(&h2);
    install(&h2, &px2, "netbox", &[]);
    h2.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "g",
    ]);
    assert!(px2.accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
    h2.weft_ok(&["network", "rm", "g"]);
}

/// A bad token: a clear one-line error that says what to change, and no token in it.
#[test]
fn bad_token_is_a_clear_error() {
    let h = TestHost::new("nb-token");
    let px = Proxy::start(&h);
    let bad = h.dir.join("bad.token");
    let secret = "nbt_AAAAAAAAAAAA.0123456789abcdef0123456789abcdef01234567";
    std::fs::write(&bad, secret).unwrap();
    let url = format!("url=http://{}", px.authority());
    let grant = format!("http={}", px.authority());
    let token = format!("token=@{}", bad.display());
    h.install_plugin(
        "netbox",
        "netbox",
        &["--grant", &grant, "--config", &url, "--config", &token],
    );
    let cidr = subnet();
    let err = h.weft_err(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "t",
    ]);
    eprintln!("bad token: {err}");
    assert!(
        err.contains("refused the API token") && err.contains("token=@FILE"),
        "{err}"
    );
    assert!(
        !err.contains("0123456789abcdef"),
        "the token is not shown: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        px.accepted.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "it did reach NetBox"
    );
}

/// After the daemon restarts, weft requests its pools and addresses again and the plugin
/// reconciles: an address NetBox lost is recorded again, one marked as weft's that weft does
/// not hold (a crash between NetBox's answer and weft's commit) is deleted.
#[test]
fn restart_reconciles_with_netbox() {
    let nb = netbox();
    let h = TestHost::new("nb-restart");
    let px = Proxy::start(&h);
    install(&h, &px, "netbox", &[]);
    let d = h.daemon();
    let cidr = subnet();
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "rn",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "rn", "a"]);
    h.weft_ok(&["sandbox", "create", "--network", "rn", "b"]);
    let want: BTreeSet<String> = nb.addresses(&cidr).into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(want.len(), 3);
    d.stop();
    // NetBox loses b's address; a stray one marked as weft's appears.
    let b = network_members(&h, "rn")
        .into_iter()
        .find(|(n, _)| n == "b")
        .unwrap()
        .1;
    let (_, _, bid) = nb
        .addresses(&cidr)
        .into_iter()
        .find(|(a, _, _)| *a == b)
        .unwrap();
    nb.ok("DELETE", &format!("/api/ipam/ip-addresses/{bid}/"), None);
    let stray = host(&cidr, 200);
    nb.ok(
        "POST",
        "/api/ipam/ip-addresses/",
        Some(&json!({"address": format!("{stray}/24"), "description": format!("[weft@test-host] sandbox ghost (0123456789ab) in {cidr}")})),
    );
    let foreign = host(&cidr, 201);
    // Another weft host's (its own marker) is not this one's to delete.
    nb.ok(
        "POST",
        "/api/ipam/ip-addresses/",
        Some(&json!({"address": format!("{foreign}/24"), "description": format!("[weft@other-host] sandbox x (0123456789ab) in {cidr}")})),
    );
    let diverged: BTreeSet<String> = nb.addresses(&cidr).into_iter().map(|(a, _, _)| a).collect();
    assert!(
        !diverged.contains(&b) && diverged.contains(&stray),
        "diverged before the restart"
    );
    let d = h.daemon();
    let mut want_after = want.clone();
    want_after.insert(foreign.clone());
    let ok = wait_for(30, || {
        nb.addresses(&cidr)
            .into_iter()
            .map(|(a, _, _)| a)
            .collect::<BTreeSet<_>>()
            == want_after
    });
    assert!(
        ok,
        "NetBox agrees with weft again: {:?} (daemon log: {})",
        nb.addresses(&cidr),
        d.log_text()
    );
    assert!(d.log_text().contains("IPAM replay"), "{}", d.log_text());
    h.weft_ok(&["sandbox", "rm", "a", "b"]);
    h.weft_ok(&["network", "rm", "rn"]);
    let left: Vec<String> = nb.addresses(&cidr).into_iter().map(|(a, _, _)| a).collect();
    assert_eq!(
        left,
        vec![foreign],
        "only the address weft never held is left"
    );
    nb.clear(&cidr);
}

/// The docker CLI creates a network on NetBox IPAM through weft's daemon.
#[test]
fn docker_cli_network_on_netbox() {
    let nb = netbox();
    let h = TestHost::new("nb-docker");
    let px = Proxy::start(&h);
    install(&h, &px, "netbox", &[]);
    let d = h.daemon();
    let cidr = subnet();
    d.docker_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "dk",
    ]);
    let v = json(&d.docker_ok(&["network", "inspect", "dk"]));
    assert_eq!(v[0]["IPAM"]["Driver"], "netbox");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], cidr.as_str());
    assert!(nb.prefix(&cidr).is_some());
    assert_eq!(nb.addresses(&cidr).len(), 1, "the gateway");
    d.docker_ok(&["network", "rm", "dk"]);
    assert!(nb.prefix(&cidr).is_none() && nb.addresses(&cidr).is_empty());
}

/// A kernel step fails after NetBox gave the address: the operation's undo frees it in
/// NetBox. The process is killed at the same point instead: NetBox keeps the address (weft
/// never committed it), and the next daemon start deletes it (the plugin's records are
/// weft's, and they never heard of it). Control: without the failure, the address stays.
#[test]
fn failure_or_crash_after_allocation_leaves_nothing_in_netbox() {
    let nb = netbox();
    let mut h = TestHost::new("nb-crash");
    let px = Proxy::start(&h);
    install(&h, &px, "netbox", &[]);
    let cidr = subnet();
    // A network whose bridge cannot be made: the prefix and gateway NetBox made are released.
    let o = h.weft_env(
        &[
            "network",
            "create",
            "--ipam-driver",
            "netbox",
            "--subnet",
            &cidr,
            "xn",
        ],
        &[("WEFT_FAILPOINT", "fail:bridge")],
    );
    assert!(
        !o.status.success(),
        "the failpoint fails the network create"
    );
    assert!(
        nb.prefix(&cidr).is_none() && nb.addresses(&cidr).is_empty(),
        "nothing left in NetBox"
    );
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "netbox",
        "--subnet",
        &cidr,
        "xn",
    ]);
    assert!(nb.prefix(&cidr).is_some());
    let gw_only = nb.addresses(&cidr);
    assert_eq!(gw_only.len(), 1);
    // A failing route step: undone, freed in NetBox.
    let o = h.weft_env(
        &["sandbox", "create", "--network", "xn", "f"],
        &[("WEFT_FAILPOINT", "fail:route")],
    );
    assert!(!o.status.success(), "the failpoint fails the create");
    assert_eq!(
        nb.addresses(&cidr),
        gw_only,
        "the address NetBox gave was released by the undo"
    );
    // A crash at the same point.
    h.engine = None;
    let o = h.weft_env(
        &["sandbox", "create", "--network", "xn", "victim"],
        &[("WEFT_FAILPOINT", "crash:route")],
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(9), "killed by SIGKILL");
    let stray = nb.addresses(&cidr);
    assert_eq!(
        stray.len(),
        2,
        "NetBox holds the address of the sandbox that never was: {stray:?}"
    );
    assert!(stray.iter().any(|(_, d, _)| d.contains("sandbox victim")));
    let d = h.daemon();
    let ok = wait_for(30, || nb.addresses(&cidr) == gw_only);
    assert!(
        ok,
        "the stray is deleted at the daemon's start: {:?}\n{}",
        nb.addresses(&cidr),
        d.log_text()
    );
    // Control: a create that succeeds keeps its address through a restart.
    h.weft_ok(&["sandbox", "create", "--network", "xn", "kept"]);
    drop(d);
    let d = h.daemon();
    let ok = wait_for(10, || d.log_text().contains("IPAM replay"));
    assert!(ok, "{}", d.log_text());
    assert_eq!(nb.addresses(&cidr).len(), 2, "the held address stays");
    h.weft_ok(&["sandbox", "rm", "kept"]);
    h.weft_ok(&["network", "rm", "xn"]);
    assert!(nb.addresses(&cidr).is_empty());
    drop(d);
}
