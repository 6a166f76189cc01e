//! Every refusal gives Docker's message and changes nothing: no link, no address, no record.

use crate::harness::*;

/// What a refused operation must leave exactly as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: Vec<String>,
    nft: String,
    networks: String,
    sandboxes: String,
    run_files: usize,
}

fn snapshot(h: &TestHost) -> Snapshot {
    let mut links = h.host_links();
    links.sort();
    Snapshot {
        links,
        nft: h.nft_ruleset(),
        networks: h.weft_ok(&["network", "inspect", "bridge", "dev", "sub"]),
        sandboxes: h.weft_ok(&["sandbox", "inspect", "s1", "s2"]),
        run_files: h.run_dir_files().len(),
    }
}

#[test]
fn refusals_have_dockers_messages_and_change_nothing() {
    let h = TestHost::new("errors");
    h.weft_ok(&["network", "create", "dev"]);
    h.weft_ok(&["network", "create", "--subnet", "10.55.0.0/24", "sub"]);
    h.weft_ok(&["sandbox", "create", "--network", "sub", "s1"]);
    h.weft_ok(&["sandbox", "create", "--network", "dev", "s2"]);
    let before = snapshot(&h);
    let s2_id = h.engine().sandbox("s2").unwrap().id;

    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["network", "create", "dev"], "network with name dev already exists".into()),
        (vec!["network", "create", "bridge"], "operation is not permitted on predefined bridge network".into()),
        (vec!["network", "create", "host"], "operation is not permitted on predefined host network".into()),
        (vec!["network", "rm", "bridge"], "bridge is a pre-defined network and cannot be removed".into()),
        (vec!["network", "rm", "none"], "none is a pre-defined network and cannot be removed".into()),
        (
            vec!["network", "rm", "sub"],
            "error while removing network: network sub has active endpoints (s1)".into(),
        ),
        (vec!["network", "create", "--subnet", "10.55.0.128/25", "clash"], "invalid pool request: Pool overlaps with other one on this address space".into()),
        (vec!["network", "create", "-d", "nosuchdriver", "x"], "plugin \"nosuchdriver\" not found".into()),
        (vec!["network", "inspect", "nosuch"], "network nosuch not found".into()),
        (vec!["network", "connect", "sub", "s1"], "endpoint with name s1 already exists in network sub".into()),
        (
            vec!["network", "disconnect", "sub", "s2"],
            format!("container {s2_id} is not connected to network sub"),
        ),
        (vec!["network", "connect", "sub", "nosuchctr"], "No such container: nosuchctr".into()),
        (
            vec!["network", "connect", "--ip", "10.99.0.5", "sub", "s2"],
            "invalid endpoint settings:\nno configured subnet or ip-range contain the IP address 10.99.0.5".into(),
        ),
        (
            vec!["network", "connect", "--ip", "10.55.0.5", "bridge", "s2"],
            "invalid endpoint settings:\nuser specified IP address is supported on user defined networks only".into(),
        ),
        (
            vec!["network", "connect", "--ip", "172.18.0.50", "dev", "s1"],
            "invalid endpoint settings:\nuser specified IP address is supported only when connecting to networks with user configured subnets".into(),
        ),
        (
            vec!["network", "connect", "host", "s2"],
            "cannot connect container to host network - container must be created in host network mode".into(),
        ),
        (
            vec!["network", "create", "--subnet", "10.1.0.0/24", "--gateway", "10.2.0.1", "gw"],
            "no matching subnet for gateway 10.2.0.1".into(),
        ),
        (
            vec!["network", "create", "--subnet", "10.1.0.0/24", "--ip-range", "10.3.0.0/25", "rg"],
            "no matching subnet for range 10.3.0.0/25".into(),
        ),
        (vec!["network", "ls", "--filter", "foo=bar"], "invalid filter 'foo'".into()),
        (vec!["sandbox", "create", "--network", "sub", "s1"], format!("Conflict. The container name \"/s1\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.", h.engine().sandbox("s1").unwrap().id)),
        (vec!["sandbox", "create", "--network", "nosuchnet", "s9"], "network nosuchnet not found".into()),
    ];
    for (args, want) in cases {
        let err = h.weft_err(&args);
        assert_eq!(err, format!("Error: {want}"), "weft {args:?}");
        assert_eq!(snapshot(&h), before, "weft {args:?} changed something");
    }
    // A static address already taken.
    let s1_ip = h
        .engine()
        .sandbox_endpoints(&h.engine().sandbox("s1").unwrap().id)
        .unwrap()[0]
        .ipv4
        .unwrap()
        .ip();
    let err = h.weft_err(&[
        "network",
        "connect",
        "--ip",
        &s1_ip.to_string(),
        "sub",
        "s2",
    ]);
    assert_eq!(err, "Error: Address already in use");
    assert_eq!(snapshot(&h), before);
    // rm -f ignores a missing network; rm prints names as typed and goes on after an error.
    let o = h.weft(&["network", "rm", "nosuch", "dev"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("network nosuch not found"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("active endpoints (s2)"));
    assert_eq!(h.weft_ok(&["network", "rm", "-f", "nosuch"]), "");
}

#[test]
fn pool_exhaustion_is_reported_and_leaves_nothing() {
    let h = TestHost::new("exhaust");
    // A /30 has two hosts: the gateway takes one, the first sandbox the other.
    h.weft_ok(&["network", "create", "--subnet", "10.66.0.0/30", "tiny"]);
    h.weft_ok(&["sandbox", "create", "--network", "tiny", "t1"]);
    let links_before = h.host_links();
    let err = h.weft_err(&["sandbox", "create", "--network", "tiny", "t2"]);
    assert_eq!(err, "Error: no available addresses on this pool");
    assert_eq!(h.host_links(), links_before);
    assert_eq!(
        h.weft_err(&["sandbox", "inspect", "t2"]),
        "Error: No such container: t2"
    );
    assert!(
        !h.dir.join("run/netns/t2").exists(),
        "the namespace made for t2 is gone again"
    );
}

#[test]
fn ls_prune_and_filters() {
    let h = TestHost::new("lsprune");
    h.weft_ok(&["network", "create", "--label", "env=prod", "web10"]);
    h.weft_ok(&["network", "create", "--label", "env=dev", "web2"]);
    h.weft_ok(&["network", "create", "--internal", "api"]);
    h.weft_ok(&["sandbox", "create", "--network", "api", "busy"]);
    let ls = h.weft_ok(&["network", "ls"]);
    let names: Vec<&str> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        names,
        ["api", "bridge", "host", "none", "web2", "web10"],
        "natural order"
    );
    assert!(
        ls.starts_with("NETWORK ID     NAME      DRIVER    SCOPE\n"),
        "{ls}"
    );
    assert_eq!(h.weft_ok(&["network", "ls", "-q"]).lines().count(), 6);
    assert!(h
        .weft_ok(&["network", "ls", "-q"])
        .lines()
        .all(|l| l.len() == 12));
    assert_eq!(
        h.weft_ok(&[
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            "label=env=prod"
        ]),
        "web10\n"
    );
    assert_eq!(
        h.weft_ok(&[
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            "type=custom"
        ]),
        "api\nweb2\nweb10\n"
    );
    let j = h.weft_ok(&["network", "ls", "--format", "json", "--filter", "name=api"]);
    let v = json(j.trim());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "CreatedAt",
            "Driver",
            "ID",
            "IPv4",
            "IPv6",
            "Internal",
            "Labels",
            "Name",
            "Scope"
        ]
    );
    assert_eq!(v["Internal"], "true");
    // Prune without -f and no answer does nothing.
    assert!(h.weft_ok(&["network", "prune"]).contains("Are you sure"));
    assert_eq!(h.weft_ok(&["network", "ls", "-q"]).lines().count(), 6);
    assert_eq!(
        h.weft_ok(&["network", "prune", "-f", "--filter", "label=env=dev"]),
        "Deleted Networks:\nweb2\n\n"
    );
    assert_eq!(
        h.weft_ok(&["network", "prune", "-f"]),
        "Deleted Networks:\nweb10\n\n",
        "api is in use"
    );
    assert_eq!(h.weft_ok(&["network", "prune", "-f"]), "");
}
