//! The plugin contract 0.2 end to end: configuration and secrets, the endpoint context a
//! driver and an IPAM are told, external connectivity calls, and the version policy (a
//! component built against the frozen 0.1 contract keeps working through the adapter).

use crate::harness::*;

const SECRET: &str = "s3cr3t-t0ken-4a1b";

fn hostile_with_config(tag: &str) -> TestHost {
    let mut h = TestHost::new(tag);
    let secret = h.dir.join("token");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let file = guest("hostile-driver");
    let out = h.weft_ok(&[
        "plugin",
        "install",
        file.to_str().unwrap(),
        "--name",
        "hostile",
        "--grant",
        "link-prefix=hx",
        "--config",
        "greeting=hello",
        "--config",
        &format!("token=@{}", secret.display()),
    ]);
    assert!(!out.contains(SECRET), "{out}");
    let ipam = guest("hostile-ipam");
    h.weft_ok(&[
        "plugin",
        "install",
        ipam.to_str().unwrap(),
        "--name",
        "hostile-ipam",
    ]);
    h.reopen();
    h
}

#[test]
fn configuration_reaches_the_plugin_and_secrets_are_never_shown() {
    let h = hostile_with_config("cfg");
    let err = h.weft_err(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=config",
        "c",
    ]);
    assert!(
        err.contains(r#"greeting=Some("hello") keys=["greeting", "token"]"#),
        "{err}"
    );
    let inspect = h.weft_ok(&["plugin", "inspect", "hostile"]);
    assert!(inspect.contains("hello"), "{inspect}");
    assert!(
        !inspect.contains(SECRET),
        "inspect shows the secret: {inspect}"
    );
    assert!(inspect.contains("<secret>"), "{inspect}");
    // The plugin echoes its token in a log line, on stderr and in its error: none of it
    // reaches the user.
    let o = h.weft(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=leak-secret",
        "c",
    ]);
    assert!(!o.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains(SECRET), "the secret was printed: {all}");
    assert!(all.contains("token=<secret>"), "{all}");
    // The file it came from can go: the value was taken at install.
    std::fs::remove_file(h.dir.join("token")).unwrap();
    let err = h.weft_err(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=leak-secret",
        "c",
    ]);
    assert!(err.contains("token=<secret>"), "{err}");
    // A secret file that is missing, or a key given twice, is an install error.
    let f = guest("hostile-driver");
    let f = f.to_str().unwrap();
    let err = h.weft_err(&[
        "plugin",
        "install",
        f,
        "--name",
        "h2",
        "--config",
        "token=@/nonexistent/x",
    ]);
    assert!(
        err.contains("cannot read the secret for token from /nonexistent/x"),
        "{err}"
    );
    let err = h.weft_err(&[
        "plugin", "install", f, "--name", "h2", "--config", "a=1", "--config", "a=2",
    ]);
    assert!(err.contains("config a is given twice"), "{err}");
    assert!(!h.weft_ok(&["plugin", "ls"]).contains("h2"));
}

#[test]
fn drivers_and_ipam_are_told_who_the_endpoint_is_for() {
    let h = hostile_with_config("ctx");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=context",
        "dctx",
    ]);
    let err = h.weft_err(&["sandbox", "create", "--network", "dctx", "web-1"]);
    assert!(err.contains("context: sandbox web-1 id "), "{err}");
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "hostile-ipam",
        "--subnet",
        "10.93.0.0/24",
        "--ipam-opt",
        "hostile=context",
        "ictx",
    ]);
    let err = h.weft_err(&["sandbox", "create", "--network", "ictx", "db-2"]);
    assert!(
        err.contains("plugin hostile-ipam") && err.contains("context: sandbox db-2 id "),
        "{err}"
    );
    h.weft_ok(&["network", "rm", "dctx", "ictx"]);
}

#[test]
fn a_driver_with_external_connectivity_is_called_for_the_default_gateway_endpoint() {
    let h = hostile_with_config("ext");
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.91.0.0/24",
        "-o",
        "hostile=external",
        "ext",
    ]);
    let o = h.weft(&["sandbox", "create", "--network", "ext", "e1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    // (No published ports yet: `-p` comes with the port mapper.)
    assert!(
        err.contains("program-external-connectivity") && err.contains("with 0 ports"),
        "{err}"
    );
    let o = h.weft(&["sandbox", "rm", "e1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("revoke-external-connectivity"));
    h.weft_ok(&["network", "rm", "ext"]);
}

#[test]
fn a_plugin_built_for_contract_0_1_keeps_working() {
    let mut h = TestHost::new("legacy");
    let file = guest("legacy-v01");
    let out = h.weft_ok(&[
        "plugin",
        "install",
        file.to_str().unwrap(),
        "--name",
        "legacy",
        "--grant-requested",
    ]);
    assert!(out.contains("weft:plugin@0.1.0"), "{out}");
    let v = json(&h.weft_ok(&["plugin", "inspect", "legacy"]));
    let v = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(v["contract"], "0.1.0", "{v}");
    let info = h.weft_ok(&["system", "info"]);
    assert!(
        info.contains("weft:plugin@0.2.0") && info.contains("0.1.0"),
        "{info}"
    );
    h.reopen();
    let id = h.weft_ok(&[
        "network",
        "create",
        "-d",
        "legacy",
        "--subnet",
        "10.97.0.0/24",
        "old",
    ]);
    let bridge = format!("lgb{}", &id.trim()[..10]);
    assert!(h.host_links().contains(&bridge), "{:?}", h.host_links());
    h.weft_ok(&["sandbox", "create", "--network", "old", "l1"]);
    h.weft_ok(&["sandbox", "create", "--network", "old", "l2"]);
    assert!(ping(&key(&h, "l1"), sandbox_ip(&h, "l2")));
    // The 0.1 host calls go through the same checks: its links are its own.
    h.weft_ok(&["system", "check"]);
    h.weft_ok(&["sandbox", "rm", "l1", "l2"]);
    h.weft_ok(&["network", "rm", "old"]);
    assert_eq!(h.host_links(), ["lo"]);
}

#[test]
fn an_ipam_that_wants_replay_hears_of_its_pools_again_after_a_reboot() {
    let mut h = TestHost::new("replay");
    let ipam = guest("hostile-ipam");
    h.weft_ok(&[
        "plugin",
        "install",
        ipam.to_str().unwrap(),
        "--name",
        "hostile-ipam",
    ]);
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "hostile-ipam",
        "--subnet",
        "10.93.0.0/24",
        "--ipam-opt",
        "hostile=count",
        "cnt",
    ]);
    // The plugin answers a connect with how often it was asked for the pool.
    let asked = |h: &TestHost| {
        h.block_on(h.engine().create_sandbox(weft::model::SandboxCreate {
            name: "x".into(),
            network: Some("cnt".into()),
            ..Default::default()
        }))
        .unwrap_err()
        .to_string()
    };
    // A restart is not a reboot: nothing is replayed.
    h.reopen();
    let once = asked(&h);
    assert!(once.contains("was asked for 1 times"), "{once}");
    h.reboot();
    let twice = asked(&h);
    assert!(twice.contains("was asked for 2 times"), "{twice}");
}
