//! Sandbox modes with Docker's rules: host, none, container:NAME.

use std::net::SocketAddr;

use crate::harness::*;

#[test]
fn host_mode_is_the_host_namespace_and_joins_nothing() {
    let h = TestHost::new("hostmode");
    h.weft_ok(&["network", "create", "other"]);
    h.weft_ok(&["sandbox", "create", "--network", "bridge", "plain"]);
    let id = h.weft_ok(&["sandbox", "create", "--network", "host", "h1"]);
    let v = json(&h.weft_ok(&["sandbox", "inspect", "h1"]));
    assert_eq!(v[0]["HostConfig"]["NetworkMode"], "host");
    let key = std::path::PathBuf::from(v[0]["NetworkSettings"]["SandboxKey"].as_str().unwrap());
    assert!(
        v[0]["NetworkSettings"]["Networks"]["host"].is_object(),
        "{}",
        v[0]["NetworkSettings"]
    );
    // The sandbox *is* the host namespace: same links, nothing new made.
    assert_eq!(links(&key), h.host_links());
    assert_eq!(
        weft::net::ns::inode(&key).unwrap(),
        weft::net::ns::inode(&h.host_ns).unwrap(),
        "SandboxKey points at the host namespace"
    );
    // A server bound inside the sandbox is a server on the host.
    let peer = tcp_exchange(
        &h.host_ns,
        &key,
        "127.0.0.1:7070".parse::<SocketAddr>().unwrap(),
    );
    assert!(peer.is_some());
    let ninspect = json(&h.weft_ok(&["network", "inspect", "host"]));
    assert_eq!(ninspect[0]["Containers"][id.trim()]["Name"], "h1");

    let links_before = h.host_links();
    for (args, want) in [
        (vec!["network", "connect", "other", "h1"], "container sharing network namespace with another container or host cannot be connected to any other network"),
        (vec!["network", "connect", "host", "plain"], "cannot connect container to host network - container must be created in host network mode"),
        (vec!["network", "disconnect", "host", "h1"], "cannot disconnect container from host network - container was created in host network mode"),
        (vec!["network", "create", "-d", "host", "host2"], "only one instance of \"host\" network is allowed"),
    ] {
        assert_eq!(h.weft_err(&args), format!("Error: {want}"), "{args:?}");
    }
    assert_eq!(h.host_links(), links_before, "refusals changed nothing");
    h.weft_ok(&["sandbox", "rm", "h1"]);
    assert_eq!(
        h.host_links(),
        links_before,
        "removing a host-mode sandbox leaves the host alone"
    );
    assert!(
        ping(&h.host_ns, "127.0.0.1".parse().unwrap()),
        "the host namespace still works"
    );
}

#[test]
fn none_mode_has_only_loopback() {
    let h = TestHost::new("nonemode");
    h.weft_ok(&["network", "create", "other"]);
    h.weft_ok(&["sandbox", "create", "--network", "none", "n1"]);
    let key = h.engine().sandbox("n1").unwrap().key;
    assert_eq!(links(&key), ["lo"]);
    let lo = h.ip_lines(&key, &["-o", "link", "show", "lo"]).join("");
    assert!(lo.contains(",UP"), "lo is up: {lo}");
    assert!(
        h.ip_lines(&key, &["route", "show"]).is_empty(),
        "no routes at all"
    );
    assert!(ping(&key, "127.0.0.1".parse().unwrap()), "loopback works");
    let v = json(&h.weft_ok(&["sandbox", "inspect", "n1"]));
    assert_eq!(v[0]["HostConfig"]["NetworkMode"], "none");
    assert!(v[0]["NetworkSettings"]["Networks"]["none"].is_object());
    let err = h.weft_err(&["network", "connect", "other", "n1"]);
    assert_eq!(
        err,
        "Error: container cannot be connected to multiple networks with one of the networks in private (none) mode"
    );
    assert_eq!(links(&key), ["lo"], "the refused connect made nothing");
    h.weft_ok(&["sandbox", "rm", "n1"]);
    assert!(!key.exists());
}

#[test]
fn container_mode_shares_the_other_sandbox_namespace() {
    let h = TestHost::new("ctrmode");
    h.weft_ok(&["network", "create", "app"]);
    h.weft_ok(&["network", "create", "other"]);
    let web_id = h.weft_ok(&["sandbox", "create", "--network", "app", "web"]);
    h.weft_ok(&["sandbox", "create", "--network", "container:web", "side"]);
    let web = h.engine().sandbox("web").unwrap();
    let side = h.engine().sandbox("side").unwrap();
    assert_eq!(side.key, web.key, "same namespace");
    let v = json(&h.weft_ok(&["sandbox", "inspect", "side"]));
    assert_eq!(
        v[0]["HostConfig"]["NetworkMode"],
        format!("container:{}", web_id.trim())
    );
    // Same interfaces, addresses and routes.
    assert_eq!(
        h.ip_lines(&side.key, &["-br", "addr"]),
        h.ip_lines(&web.key, &["-br", "addr"])
    );
    // A server on 127.0.0.1 in one is reachable from the other over lo (real TCP).
    let peer = tcp_exchange(&side.key, &web.key, "127.0.0.1:6379".parse().unwrap());
    assert_eq!(peer.unwrap().ip().to_string(), "127.0.0.1");
    // It joins nothing of its own.
    let err = h.weft_err(&["network", "connect", "other", "side"]);
    assert_eq!(
        err,
        "Error: container sharing network namespace with another container or host cannot be connected to any other network"
    );
    // The owner cannot go while shared, unless forced (then both go).
    let err = h.weft_err(&["sandbox", "rm", "web"]);
    assert_eq!(err, "Error: cannot remove sandbox web: sandbox side shares its network namespace (use --force to remove them too)");
    assert!(web.key.exists());
    // The sharer can go on its own: the namespace stays.
    h.weft_ok(&["sandbox", "create", "--network", "container:web", "side2"]);
    h.weft_ok(&["sandbox", "rm", "side2"]);
    assert!(web.key.exists());
    h.weft_ok(&["sandbox", "rm", "-f", "web"]);
    assert_eq!(
        h.weft_err(&["sandbox", "inspect", "side"]),
        "Error: No such container: side"
    );
    assert!(!web.key.exists());
    assert_eq!(
        h.host_links()
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count(),
        0
    );
}

#[test]
fn the_example_runtime_attaches_a_process_it_starts_and_detaches_it_when_it_exits() {
    let h = TestHost::new("exrt");
    // target/<profile>/deps/integration-… → target/<profile>/examples/runtime
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/runtime");
    assert!(
        bin.exists(),
        "{} was not built (cargo test builds examples)",
        bin.display()
    );
    h.block_on(h.engine().create_network(weft::model::NetworkCreate {
        name: "web".into(),
        ..Default::default()
    }))
    .unwrap();
    let ns = std::fs::File::open(&h.host_ns).unwrap();
    let mut cmd = std::process::Command::new(&bin);
    cmd.env("WEFT_ROOT", h.dir.join("root"))
        .env("WEFT_RUN_ROOT", h.dir.join("run"))
        .args([
            "--network",
            "web",
            "--name",
            "job",
            "--",
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ]);
    unsafe {
        use std::os::fd::AsFd;
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    // The program saw its interface, with the address weft gave it, when it started.
    assert!(
        out.contains("eth0") && out.contains("inet 172.18.0.2/16"),
        "{out}"
    );
    // And the sandbox went with the process.
    assert!(h.engine().sandbox("job").is_err());
    assert!(h.block_on(h.engine().check()).unwrap().is_empty());
}
