//! weft as a CNI plugin (issue 18): the `weft` binary run with CNI's environment and a
//! bridge-plugin config whose `type` is `weft`, as a CNI runtime runs it, inside the test
//! host: ADD wires the runtime's namespace (traffic checked), CHECK compares records and
//! kernel, DEL is idempotent (also with an empty CNI_NETNS), GC removes what is not valid,
//! STATUS, VERSION, every supported version's result format, chaining after another plugin,
//! port mappings, and a table of malformed inputs that get the spec's codes and change nothing.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

/// Run the weft binary as a CNI plugin inside the test host, with this host's state.
fn cni(h: &TestHost, command: &str, id: &str, netns: &Path, ifname: &str, conf: &Value) -> Output {
    cni_env(
        h,
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns.to_str().unwrap()),
            ("CNI_IFNAME", ifname),
        ],
        conf.to_string().as_bytes(),
    )
}

fn cni_env(h: &TestHost, env: &[(&str, &str)], stdin: &[u8]) -> Output {
    // A plugin is run without arguments; its state comes from the environment, as a runtime
    // passes it on.
    let mut plain = cmd_in_ns(&h.host_ns, env!("CARGO_BIN_EXE_weft"));
    plain
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WEFT_ROOT", h.dir.join("root"))
        .env("WEFT_RUN_ROOT", h.dir.join("run"))
        .env("CNI_PATH", "/opt/cni/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = plain.spawn().expect("run weft as a CNI plugin");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "CNI call failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&o.stdout).expect("a JSON result")
    }
}

/// The CNI error a failed call printed: (code, msg).
fn err(o: &Output) -> (u64, String) {
    assert!(
        !o.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "the error is JSON on stdout ({e}): {:?}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    (
        v["code"].as_u64().unwrap(),
        v["msg"].as_str().unwrap().to_string(),
    )
}

/// A config written for the reference bridge plugin, with `type` changed to `weft`.
fn bridge_conf(version: &str, name: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "weft",
        "bridge": format!("{name}0"),
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}]
        },
        "dns": {"nameservers": ["10.1.0.1"]}
    })
}

fn addr_in(ns: &Path, ifname: &str) -> Vec<String> {
    let o = run_in_ns(ns, "ip", &["-o", "-4", "addr", "show", "dev", ifname]);
    inet4(&String::from_utf8_lossy(&o.stdout))
        .into_iter()
        .collect()
}

#[test]
fn add_check_del_wire_the_runtimes_namespace() {
    let h = TestHost::new("cni");
    let conf = bridge_conf("1.1.0", "cninet", "10.66.0.0/24");
    let (a, b) = (h.make_ns("cnia"), h.make_ns("cnib"));
    let ra = ok(&cni(&h, "ADD", "ctra", &a, "eth0", &conf));
    let rb = ok(&cni(&h, "ADD", "ctrb", &b, "eth0", &conf));
    assert_eq!(ra["cniVersion"], "1.1.0");
    let ifs = ra["interfaces"].as_array().unwrap();
    assert_eq!(ifs[0]["name"], "cninet0", "the bridge the config names");
    let idx = ra["ips"][0]["interface"].as_u64().unwrap() as usize;
    assert_eq!(ifs[idx]["name"], "eth0");
    assert_eq!(ifs[idx]["sandbox"], a.to_str().unwrap());
    assert_eq!(ra["ips"][0]["gateway"], "10.66.0.1");
    assert!(
        ra["ips"][0].get("version").is_none(),
        "1.x results have no version field"
    );
    assert_eq!(
        ra["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.66.0.1"})
    );
    assert_eq!(ra["dns"]["nameservers"][0], "10.1.0.1");
    let addr_a = ra["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(
        addr_in(&a, "eth0"),
        vec![addr_a.clone()],
        "the address is on the runtime's eth0"
    );
    assert_eq!(ifs[idx]["mac"].as_str().unwrap().len(), 17);
    // Traffic between the two containers, and to the gateway.
    let ip_b: std::net::IpAddr = rb["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ping(&a, ip_b), "a reaches b");
    assert!(
        ping(&a, "10.66.0.1".parse().unwrap()),
        "a reaches its gateway"
    );
    // ADD again: the same answer, nothing new.
    let again = ok(&cni(&h, "ADD", "ctra", &a, "eth0", &conf));
    assert_eq!(again["ips"], ra["ips"]);
    // CHECK with the ADD's result passes; with a changed one, or a broken kernel, fails.
    let mut chk = conf.clone();
    chk["prevResult"] = ra.clone();
    ok(&cni(&h, "CHECK", "ctra", &a, "eth0", &chk));
    let mut wrong = chk.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.66.0.200/24");
    let (code, msg) = err(&cni(&h, "CHECK", "ctra", &a, "eth0", &wrong));
    assert!(code == 7 && msg.contains(&addr_a), "{code} {msg}");
    let links_before = h.host_links();
    let veth = ifs[1]["name"].as_str().unwrap().to_string();
    assert!(
        links_before.contains(&veth),
        "the host end is {veth}: {links_before:?}"
    );
    assert!(h.ip(&h.host_ns, &["link", "del", &veth]).status.success());
    let (code, msg) = err(&cni(&h, "CHECK", "ctra", &a, "eth0", &chk));
    assert!(
        msg.contains("kernel differs") && msg.contains(&veth),
        "{code} {msg}"
    );
    eprintln!("CHECK on a broken attachment: {code} {msg}");
    // DEL, then DEL again, then DEL with an empty CNI_NETNS (containerd's after a death).
    ok(&cni(&h, "DEL", "ctra", &a, "eth0", &conf));
    assert!(
        addr_in(&a, "eth0").is_empty(),
        "eth0 is gone from the runtime's namespace"
    );
    assert!(
        a.exists(),
        "the runtime's namespace is the runtime's: still there"
    );
    ok(&cni(&h, "DEL", "ctra", &a, "eth0", &conf));
    ok(&cni(&h, "DEL", "ctrb", Path::new(""), "eth0", &conf));
    assert!(addr_in(&b, "eth0").is_empty());
    assert!(
        !h.weft_ok(&["sandbox", "ls"]).contains("ctr"),
        "no CNI sandbox left"
    );
    // A config name that is a prefix of another network's id names a network of its own
    // (names are exact at this door, not Docker's id-prefix lookup).
    let id = h.weft_ok(&["network", "create", "--subnet", "10.65.0.0/24", "other"]);
    let prefix = &id.trim()[..6];
    let c = h.make_ns("cnic");
    let conf_c = bridge_conf("1.1.0", prefix, "10.64.0.0/24");
    let r = ok(&cni(&h, "ADD", "ctrc", &c, "eth0", &conf_c));
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.64.0."),
        "{r}"
    );
    ok(&cni(&h, "DEL", "ctrc", &c, "eth0", &conf_c));
    let check = h.weft(&["system", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn every_supported_version_gets_its_result_format() {
    let h = TestHost::new("cniver");
    let o = cni_env(
        &h,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"0.4.0"}"#,
    );
    let v = ok(&o);
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    for (i, ver) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let conf = bridge_conf(ver, "vnet", "10.67.0.0/24");
        let ns = h.make_ns(&format!("v{i}"));
        let r = ok(&cni(&h, "ADD", &format!("c{i}"), &ns, "eth0", &conf));
        assert_eq!(r["cniVersion"], *ver);
        let version = r["ips"][0].get("version").and_then(Value::as_str);
        if ver.starts_with("0.") {
            assert_eq!(version, Some("4"), "{ver}: {r}");
        } else {
            assert_eq!(version, None, "{ver}: {r}");
        }
        ok(&cni(&h, "DEL", &format!("c{i}"), &ns, "eth0", &conf));
    }
}

#[test]
fn chained_after_another_plugin_and_port_mappings() {
    let h = TestHost::new("cnichain");
    let out = h.outside("cniout", "10.84.9.1", "10.84.9.2");
    let mut conf = bridge_conf("1.0.0", "pnet", "10.68.0.0/24");
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "earlier0"}],
        "ips": [{"address": "192.0.2.5/32", "interface": 0}],
        "dns": {"nameservers": ["192.0.2.53"]}
    });
    conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}]});
    let ns = h.make_ns("pc");
    let r = ok(&cni(&h, "ADD", "pctr", &ns, "eth0", &conf));
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(
        ifs[0]["name"], "earlier0",
        "the previous result comes first"
    );
    assert_eq!(r["ips"][0]["address"], "192.0.2.5/32");
    assert_eq!(
        r["ips"][1]["interface"].as_u64().unwrap() as usize,
        ifs.len() - 1
    );
    assert_eq!(
        r["dns"]["nameservers"][0], "192.0.2.53",
        "the previous result's DNS is kept"
    );
    // The published port reaches the container from outside the host.
    let server = tcp_server(&ns, SocketAddr::new("0.0.0.0".parse().unwrap(), 80));
    assert!(
        tcp_echo(
            &out,
            "10.84.9.1:8085".parse().unwrap(),
            Duration::from_secs(2)
        ),
        "8085 → container:80"
    );
    assert!(server.join().unwrap().is_some());
    ok(&cni(&h, "DEL", "pctr", &ns, "eth0", &conf));
    // Control: after DEL the port is gone.
    let _server = tcp_server(&ns, SocketAddr::new("0.0.0.0".parse().unwrap(), 80));
    assert!(!tcp_echo(
        &out,
        "10.84.9.1:8085".parse().unwrap(),
        Duration::from_millis(500)
    ));
}

#[test]
fn gc_removes_what_the_runtime_no_longer_knows_and_status_says_if_weft_can_serve() {
    let h = TestHost::new("cnigc");
    let conf = bridge_conf("1.1.0", "gnet", "10.69.0.0/24");
    let (a, b) = (h.make_ns("ga"), h.make_ns("gb"));
    ok(&cni(&h, "ADD", "keep", &a, "eth0", &conf));
    ok(&cni(&h, "ADD", "stale", &b, "eth0", &conf));
    // A sandbox made by the CLI on the same network is not GC's.
    h.weft_ok(&["sandbox", "create", "--network", "gnet", "clis"]);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    ok(&cni_env(
        &h,
        &[("CNI_COMMAND", "GC")],
        gc.to_string().as_bytes(),
    ));
    let ls = h.weft_ok(&["sandbox", "ls"]);
    assert!(ls.contains("cni-keep") && ls.contains("clis"), "{ls}");
    assert!(!ls.contains("cni-stale"), "the stale attachment went: {ls}");
    assert!(addr_in(&b, "eth0").is_empty() && !addr_in(&a, "eth0").is_empty());
    ok(&cni_env(
        &h,
        &[("CNI_COMMAND", "STATUS")],
        conf.to_string().as_bytes(),
    ));
    let mut other = conf.clone();
    other["ipam"]["type"] = json!("not-installed");
    let (code, msg) = err(&cni_env(
        &h,
        &[("CNI_COMMAND", "STATUS")],
        other.to_string().as_bytes(),
    ));
    assert!(code == 50 && msg.contains("not-installed"), "{code} {msg}");
}

#[test]
fn malformed_inputs_get_the_specs_codes_and_change_nothing() {
    let h = TestHost::new("cnibad");
    let conf = bridge_conf("1.1.0", "bnet", "10.70.0.0/24");
    let ns = h.make_ns("bad");
    ok(&cni(&h, "ADD", "present", &ns, "eth0", &conf));
    // A sandbox the CLI made, named as a CNI container's would be: records, not names, say
    // whose it is.
    h.weft_ok(&["sandbox", "create", "--network", "bnet", "cni-squat"]);
    let ns2 = h.make_ns("bad2");
    let state = |h: &TestHost| {
        (
            h.weft_ok(&["network", "ls", "-q"]),
            h.weft_ok(&["sandbox", "ls"]),
            h.host_links(),
            h.nft_ruleset(),
        )
    };
    let before = state(&h);
    let ns2s = ns2.to_str().unwrap();
    let mut range = conf.clone();
    range["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.70.0.10");
    let mut other_subnet = conf.clone();
    other_subnet["ipam"]["ranges"][0][0]["subnet"] = json!("10.71.0.0/24");
    // (what, environment, stdin, the code, what the message says)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u64, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bad JSON",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", ns2s),
                ("CNI_IFNAME", "eth0"),
            ],
            b"{not json".to_vec(),
            6,
            "decode",
        ),
        (
            "unknown version",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", ns2s),
                ("CNI_IFNAME", "eth0"),
            ],
            bridge_conf("9.9.9", "bnet", "10.70.0.0/24")
                .to_string()
                .into_bytes(),
            1,
            "incompatible CNI versions",
        ),
        (
            "missing netns",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.to_string().into_bytes(),
            4,
            "CNI_NETNS",
        ),
        (
            "netns that is not there",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", "/run/netns/weft-no-such"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.to_string().into_bytes(),
            4,
            "does not exist",
        ),
        (
            "missing container id",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_NETNS", ns2s),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.to_string().into_bytes(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            "unknown command",
            vec![
                ("CNI_COMMAND", "FROB"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", ns2s),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.to_string().into_bytes(),
            4,
            "FROB",
        ),
        (
            "rangeStart",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", ns2s),
                ("CNI_IFNAME", "eth0"),
            ],
            range.to_string().into_bytes(),
            2,
            "rangeStart",
        ),
        (
            "same name, other subnet",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", ns2s),
                ("CNI_IFNAME", "eth0"),
            ],
            other_subnet.to_string().into_bytes(),
            7,
            "10.70.0.0/24",
        ),
        (
            "bad interface name",
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x1"),
                ("CNI_NETNS", ns2s),
                ("CNI_IFNAME", "eth0/x"),
            ],
            conf.to_string().into_bytes(),
            7,
            "interface name",
        ),
        (
            "CHECK without prevResult",
            vec![
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", "present"),
                ("CNI_NETNS", ns.to_str().unwrap()),
                ("CNI_IFNAME", "eth0"),
            ],
            conf.to_string().into_bytes(),
            7,
            "prevResult",
        ),
    ];
    for (what, env, input, code, says) in cases {
        let o = cni_env(&h, &env, &input);
        let (c, msg) = err(&o);
        assert_eq!(c, code, "{what}: {msg}");
        assert!(msg.contains(says), "{what}: {msg:?} should say {says:?}");
        assert_eq!(state(&h), before, "{what} changed nothing");
    }
    ok(&cni(&h, "DEL", "squat", &ns2, "eth0", &conf));
    assert_eq!(
        state(&h),
        before,
        "DEL leaves the CLI's sandbox named cni-squat alone"
    );
    let (c, msg) = err(&cni(&h, "ADD", "squat", &ns2, "eth0", &conf));
    assert!(c == 7 && msg.contains("not container squat's"), "{c} {msg}");
    assert_eq!(state(&h), before);
    // DEL of a container weft never attached (a wrong id): success, and nothing changes.
    ok(&cni(&h, "DEL", "never-added", &ns, "eth0", &conf));
    ok(&cni(&h, "DEL", "present", &ns, "eth1", &conf));
    assert_eq!(
        state(&h),
        before,
        "a DEL for what is not there changes nothing"
    );
    // Control: the right DEL does change something.
    ok(&cni(&h, "DEL", "present", &ns, "eth0", &conf));
    assert_ne!(state(&h).1, before.1);
}

/// The links of namespace `ns` by name, sorted.
fn link_names(ns: &Path) -> Vec<String> {
    let mut v = links(ns);
    v.sort();
    v
}

#[test]
fn del_leaves_the_veths_deletion_to_a_running_daemons_reaper() {
    let h = TestHost::new("cnireap");
    let conf = bridge_conf("1.1.0", "reapnet", "10.64.0.0/24");
    let (a, b) = (h.make_ns("reapa"), h.make_ns("reapb"));
    // No daemon: DEL deletes the pair itself before it returns.
    ok(&cni(&h, "ADD", "ctra", &a, "eth0", &conf));
    assert_eq!(link_names(&a), ["eth0", "lo"]);
    ok(&cni(&h, "DEL", "ctra", &a, "eth0", &conf));
    assert_eq!(link_names(&a), ["lo"], "deleted before DEL returned");
    // With a daemon: DEL parks the runtime's end and hands the deletion to its reaper.
    let d = h.daemon();
    ok(&cni(&h, "ADD", "ctrb", &b, "eth0", &conf));
    ok(&cni(&h, "DEL", "ctrb", &b, "eth0", &conf));
    let log = d.log_text();
    assert_eq!(log.matches("path=/weft/v1/reap").count(), 1, "{log}");
    let t = std::time::Instant::now();
    while link_names(&b) != ["lo"] {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the daemon's reaper did not delete the pair: {:?}",
            link_names(&b)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    h.weft_ok(&["system", "check"]);
    drop(d);
}
