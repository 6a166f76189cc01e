//! Transactions: a failure injected in the middle of an operation undoes what was done; a
//! process killed in the middle leaves a journal that the next start replays.

use crate::harness::*;
use weft::model::{ConnectOptions, NetworkCreate, SandboxCreate};

fn setup(h: &TestHost) {
    let e = h.engine();
    h.block_on(e.create_network(NetworkCreate {
        name: "n".into(),
        ..Default::default()
    }))
    .unwrap();
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "s".into(),
        network: Some("none".into()),
        ..Default::default()
    }))
    .unwrap();
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "t".into(),
        network: Some("n".into()),
        ..Default::default()
    }))
    .unwrap();
}

#[test]
fn failure_in_the_middle_of_connect_leaves_nothing() {
    let h = TestHost::new("failconn");
    let e = h.engine();
    h.block_on(e.create_network(NetworkCreate {
        name: "n".into(),
        ..Default::default()
    }))
    .unwrap();
    let first = h
        .block_on(e.create_sandbox(SandboxCreate {
            name: "a".into(),
            network: Some("n".into()),
            ..Default::default()
        }))
        .unwrap();
    let first_ip = e.sandbox_endpoints(&first.id).unwrap()[0]
        .ipv4
        .unwrap()
        .ip();
    // An empty sandbox to connect (a namespace weft owns, no networks yet)…
    let key = h.dir.join("victim.ns");
    weft::net::ns::create_pinned(&key, || ()).unwrap();
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "b".into(),
        network: Some("n".into()),
        netns: Some(key.clone()),
        ..Default::default()
    }))
    .unwrap();
    h.block_on(e.disconnect("n", "b", false)).unwrap();
    let links_before = h.host_links();
    let ns_links_before = links(&key);
    // …whose connect fails after the veth exists, at the address, at the route.
    for kind in ["veth", "address", "route"] {
        e.set_failpoint(Some(kind));
        let err = h
            .block_on(e.connect("n", "b", ConnectOptions::default()))
            .unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(
            h.host_links(),
            links_before,
            "after a failure at {kind}: host links"
        );
        assert_eq!(
            links(&key),
            ns_links_before,
            "after a failure at {kind}: sandbox links"
        );
        assert!(
            e.sandbox_endpoints(&e.sandbox("b").unwrap().id)
                .unwrap()
                .is_empty(),
            "no endpoint record"
        );
    }
    e.set_failpoint(None);
    assert!(
        h.run_dir_files()
            .iter()
            .all(|f| !f.to_string_lossy().contains("journal")),
        "journals removed"
    );
    // No address leaked by the three failures: b's first connect took the address after a's,
    // so (sequential allocation) the next one is the one after that.
    let ep = h
        .block_on(e.connect("n", "b", ConnectOptions::default()))
        .unwrap();
    let want = match first_ip {
        std::net::IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) + 2),
        _ => unreachable!(),
    };
    assert_eq!(ep.ipv4.unwrap().ip(), std::net::IpAddr::V4(want));
}

#[test]
fn failure_while_creating_a_network_or_sandbox_leaves_nothing() {
    let h = TestHost::new("failnet");
    let e = h.engine();
    let links_before = h.host_links();
    e.set_failpoint(Some("firewall"));
    let err = h
        .block_on(e.create_network(NetworkCreate {
            name: "n".into(),
            ..Default::default()
        }))
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(h.host_links(), links_before, "the bridge was removed again");
    assert!(matches!(
        e.network("n"),
        Err(weft::Error::NetworkNotFound(_))
    ));
    e.set_failpoint(None);
    // The pool was released: the retry gets the same subnet.
    let id = h
        .block_on(e.create_network(NetworkCreate {
            name: "n".into(),
            ..Default::default()
        }))
        .unwrap()
        .id;
    assert_eq!(
        e.network(&id).unwrap().pools[0].subnet.to_string(),
        "172.18.0.0/16"
    );
    e.set_failpoint(Some("address"));
    let err = h
        .block_on(e.create_sandbox(SandboxCreate {
            name: "s".into(),
            network: Some("n".into()),
            ..Default::default()
        }))
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    e.set_failpoint(None);
    assert!(
        !h.dir.join("run/netns/s").exists(),
        "the sandbox namespace was removed"
    );
    assert!(matches!(
        e.sandbox("s"),
        Err(weft::Error::SandboxNotFound(_))
    ));
    assert_eq!(
        h.host_links()
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count(),
        0
    );
}

#[test]
fn a_crash_mid_connect_is_cleaned_up_on_the_next_start() {
    let mut h = TestHost::new("crash");
    setup(&h);
    let links_before = h.host_links();
    let ep_count = h
        .engine()
        .network_endpoints(&h.engine().network("n").unwrap().id)
        .unwrap()
        .len();
    // The CLI process dies (abort, like kill -9) after the veth and address, before the route.
    h.engine = None;
    let o = h.weft_env(
        &["sandbox", "create", "--network", "n", "victim"],
        &[("WEFT_FAILPOINT", "crash:route")],
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(9), "killed by SIGKILL");
    assert!(String::from_utf8_lossy(&o.stderr).contains("killed before a route step"));
    // The kernel has the half-made endpoint; the journal says how to undo it.
    assert!(
        h.host_links().len() > links_before.len(),
        "the crash left a veth behind, as a real crash would"
    );
    assert!(h.dir.join("run/netns/victim").exists());
    assert_eq!(h.journals(), 1);
    // The next start replays it.
    h.reopen();
    assert_eq!(h.host_links(), links_before);
    assert!(!h.dir.join("run/netns/victim").exists());
    assert_eq!(h.journals(), 0);
    let e = h.engine();
    assert!(
        matches!(e.sandbox("victim"), Err(weft::Error::SandboxNotFound(_))),
        "nothing was committed"
    );
    assert_eq!(
        e.network_endpoints(&e.network("n").unwrap().id)
            .unwrap()
            .len(),
        ep_count
    );
    // And the engine works on.
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "victim".into(),
        network: Some("n".into()),
        ..Default::default()
    }))
    .unwrap();
}

#[test]
fn a_journal_that_cannot_be_written_stops_the_operation() {
    let h = TestHost::new("journalw");
    let e = h.engine();
    h.block_on(e.create_network(NetworkCreate {
        name: "n".into(),
        ..Default::default()
    }))
    .unwrap();
    let links_before = h.host_links();
    // Positive control: with the journal writable the same create works (and is undone).
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "ok".into(),
        network: Some("n".into()),
        ..Default::default()
    }))
    .unwrap();
    h.block_on(e.remove_sandbox("ok", false)).unwrap();
    e.set_failpoint(Some("fail:journal-write"));
    let err = h
        .block_on(e.create_sandbox(SandboxCreate {
            name: "s".into(),
            network: Some("n".into()),
            ..Default::default()
        }))
        .unwrap_err()
        .to_string();
    e.set_failpoint(None);
    assert!(err.contains("journal"), "{err}");
    assert_eq!(
        h.host_links(),
        links_before,
        "nothing made without its undo on disk"
    );
    assert!(!h.dir.join("run/netns/s").exists());
    assert!(matches!(
        e.sandbox("s"),
        Err(weft::Error::SandboxNotFound(_))
    ));
    assert!(h.block_on(e.check()).unwrap().is_empty());
}

#[test]
fn a_firewall_change_that_fails_after_it_applied_is_undone() {
    let h = TestHost::new("fwafter");
    let e = h.engine();
    let nft_before = h.nft_ruleset();
    e.set_failpoint(Some("fail-after:firewall"));
    let err = h
        .block_on(e.create_network(NetworkCreate {
            name: "n".into(),
            ..Default::default()
        }))
        .unwrap_err()
        .to_string();
    e.set_failpoint(None);
    assert!(err.contains("injected failure after the change"), "{err}");
    assert_eq!(
        h.nft_ruleset(),
        nft_before,
        "the rules that were added are gone again"
    );
    assert!(matches!(
        e.network("n"),
        Err(weft::Error::NetworkNotFound(_))
    ));
    assert!(h.block_on(e.check()).unwrap().is_empty());
    // Positive control: the same create, not failed, does add rules.
    h.block_on(e.create_network(NetworkCreate {
        name: "n".into(),
        ..Default::default()
    }))
    .unwrap();
    assert_ne!(h.nft_ruleset(), nft_before);
}

#[test]
fn processes_at_once_share_one_state_correctly() {
    let mut h = TestHost::new("procs");
    h.block_on(h.engine().create_network(NetworkCreate {
        name: "n".into(),
        ..Default::default()
    }))
    .unwrap();
    h.engine = None;
    let h = std::sync::Arc::new(h);
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    h.weft_ok(&["sandbox", "create", "--network", "n", &format!("p{w}x{i}")]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let out = h.weft_ok(&["network", "inspect", "-f", "{{json .Containers}}", "n"]);
    let v = json(&out);
    let ips: std::collections::HashSet<&str> = v
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["IPv4Address"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 30, "30 sandboxes, 30 distinct addresses");
    h.weft_ok(&["system", "check"]);
}

#[test]
fn after_a_reboot_dead_sandboxes_go_and_networks_come_back() {
    let mut h = TestHost::new("reboot");
    let e = h.engine();
    let id = h
        .block_on(e.create_network(NetworkCreate {
            name: "web".into(),
            ..Default::default()
        }))
        .unwrap()
        .id;
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "api".into(),
        network: Some("web".into()),
        ..Default::default()
    }))
    .unwrap();
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "hostish".into(),
        network: Some("host".into()),
        ..Default::default()
    }))
    .unwrap();
    let bridge = format!("br-{}", &id[..12]);
    assert!(h.host_links().contains(&bridge));
    h.reboot();
    // The kernel was empty; the engine made the network again and let the dead sandbox go.
    assert!(h.host_links().contains(&bridge), "{:?}", h.host_links());
    assert!(h.nft_ruleset().contains(&format!("nw-{}-in", &id[..12])));
    let e = h.engine();
    assert!(
        matches!(e.sandbox("api"), Err(weft::Error::SandboxNotFound(_))),
        "api's namespace died with the machine"
    );
    assert!(e.sandbox("hostish").is_ok(), "a host-mode sandbox lives on");
    assert!(h.block_on(e.check()).unwrap().is_empty());
    // And it works: a new sandbox on web reaches its gateway.
    h.block_on(e.create_sandbox(SandboxCreate {
        name: "api".into(),
        network: Some("web".into()),
        ..Default::default()
    }))
    .unwrap();
    let gw = e.network("web").unwrap().pools[0].gateway.unwrap();
    assert!(ping(&key(&h, "api"), gw));
}

#[test]
fn someone_elses_damage_is_found_and_repaired() {
    let h = TestHost::new("drift");
    let e = h.engine();
    h.block_on(e.create_network(NetworkCreate {
        name: "web".into(),
        ..Default::default()
    }))
    .unwrap();
    for n in ["w1", "w2"] {
        h.block_on(e.create_sandbox(SandboxCreate {
            name: n.into(),
            network: Some("web".into()),
            ..Default::default()
        }))
        .unwrap();
    }
    assert!(
        h.block_on(e.check()).unwrap().is_empty(),
        "positive control"
    );
    let id = e.network("web").unwrap().id;
    // Someone deletes weft's bridge and flushes the ruleset.
    let o = h.ip(&h.host_ns, &["link", "del", &format!("br-{}", &id[..12])]);
    assert!(o.status.success());
    run_ok(&h.host_ns, "nft", &["flush", "ruleset"]);
    let o = h.weft(&["system", "check"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "check reports trouble by its exit code"
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("missing: network web: link br-"), "{text}");
    assert!(text.contains("nftables rules"), "{text}");
    let w2 = sandbox_ip(&h, "w2");
    assert!(!ping(&key(&h, "w1"), w2), "broken for now");
    let o = h.weft(&["system", "check", "--repair"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("agree"));
    assert!(ping(&key(&h, "w1"), w2), "w1 and w2 talk again");
    let gw = e.network("web").unwrap().pools[0].gateway.unwrap();
    assert!(ping(&key(&h, "w1"), gw));
}

#[test]
fn processes_starting_at_once_on_a_fresh_run_dir_all_start() {
    // The first weft processes on a run dir pin the host namespace there; started at once,
    // one could unlink the pin while another mounted on it (EBUSY, ENOENT).
    let h = TestHost::new("pinrace");
    for round in 0..10 {
        let run = h.dir.join(format!("run-{round}"));
        let children: Vec<std::process::Child> = (0..12)
            .map(|_| {
                h.weft_cmd_run_root(&run, &["network", "ls", "-q"])
                    .env("WEFT_NO_DAEMON", "1")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

#[test]
fn journal_files_are_reused_and_a_dead_processs_spare_is_nothing_to_settle() {
    let mut h = TestHost::new("jspare");
    let e = h.engine();
    let jdir = h.dir.join("run/journal");
    let files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&jdir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // Ten operations one after another that each touched the kernel: one file, reused.
    for i in 0..5 {
        h.block_on(e.create_network(NetworkCreate {
            name: format!("n{i}"),
            ..Default::default()
        }))
        .unwrap();
    }
    for i in 0..5 {
        h.block_on(e.remove_network(&format!("n{i}"))).unwrap();
    }
    let ours = files();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(h.journals(), 0, "the spare is empty");
    // A process killed with spares leaves them empty: not an interrupted operation. A journal
    // with something in it is (the positive control).
    std::fs::write(jdir.join("dead.json"), "").unwrap();
    std::fs::write(jdir.join("cut.json"), "{\"op\": cut short\n").unwrap();
    let found = format!("{:?}", h.block_on(e.check()).unwrap());
    assert!(
        found.contains("cut.json") && !found.contains("dead.json"),
        "{found}"
    );
    std::fs::remove_file(jdir.join("cut.json")).unwrap();
    assert!(h.block_on(e.check()).unwrap().is_empty());
    // The next start deletes the dead process's spare and settles nothing else.
    h.reopen();
    assert!(!files().contains(&"dead.json".to_string()), "{:?}", files());
    assert!(h.block_on(h.engine().check()).unwrap().is_empty());
}
