//! Deferred teardown: a sandbox removal takes its veth's host end down at once and commits;
//! the link itself is deleted afterwards, in a batch, by the daemon's reaper — also when a
//! process keeps the sandbox's namespace alive (so the kernel does not delete the pair), and
//! after the daemon was killed with the deletion still to do.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A process that keeps a namespace alive (as a container's process would).
struct Holder(Child);

impl Holder {
    fn new(ns: &std::path::Path) -> Holder {
        Holder(
            cmd_in_ns(ns, "sleep")
                .arg("300")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start sleep in the namespace"),
        )
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host links that appear while `f` runs.
fn new_host_links(h: &TestHost, f: impl FnOnce()) -> Vec<String> {
    let before = h.host_links();
    f();
    h.host_links()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect()
}

/// `ip -o link show NAME` in the host: `None` when the link is gone.
fn host_link(h: &TestHost, name: &str) -> Option<String> {
    let o = run_in_ns(&h.host_ns, "ip", &["-o", "link", "show", "dev", name]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Wait until the link is gone (panics after `limit`).
fn wait_gone(h: &TestHost, name: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    while host_link(h, name).is_some() {
        assert!(
            t.elapsed() < limit,
            "host link {name} still there after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

fn check_clean(h: &TestHost) {
    let o = h.weft(&["system", "check"]);
    assert!(
        o.status.success(),
        "system check: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_removed_sandboxs_veth_forwards_nothing_at_once_and_is_deleted_by_the_reaper() {
    let h = TestHost::new("reap");
    let d = h.daemon();
    h.weft_ok(&["network", "create", "--subnet", "10.61.0.0/24", "n"]);
    h.weft_ok(&["sandbox", "create", "--network", "n", "a"]);
    let veth = new_host_links(&h, || {
        h.weft_ok(&["sandbox", "create", "--network", "n", "b"]);
    });
    assert_eq!(veth.len(), 1, "one host link for b: {veth:?}");
    let veth = &veth[0];
    let (a_ns, b_ns, b_ip) = (key(&h, "a"), key(&h, "b"), sandbox_ip(&h, "b"));
    // Keep b's namespace alive after weft unpins it: the kernel then does not delete the
    // pair itself, so only weft's reaper can.
    let _holder = Holder::new(&b_ns);
    assert!(ping(&a_ns, b_ip), "control: a reaches b before the removal");

    h.weft_ok(&["sandbox", "rm", "b"]);
    // Right away: the host end is down or gone, and b's address (still on b's eth0, in the
    // namespace the sleep holds) is not reachable.
    if let Some(l) = host_link(&h, veth) {
        assert!(
            !l.contains(",UP") && !l.contains("<UP"),
            "{veth} still up after sandbox rm returned: {l}"
        );
    }
    assert!(!ping(&a_ns, b_ip), "a still reaches the removed b");
    // Its address can be given again at once, and works.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "n",
        "--ip",
        &b_ip.to_string(),
        "c",
    ]);
    assert!(ping(&a_ns, b_ip), "a reaches c, which has b's old address");
    // The reaper deletes the host end although the namespace lives on.
    let took = wait_gone(&h, veth, Duration::from_secs(5));
    eprintln!("{veth} deleted {took:?} after sandbox rm returned");
    check_clean(&h);
    drop(d);
}

#[test]
fn a_deletion_left_for_later_survives_kill_9_of_the_daemon() {
    let h = TestHost::new("reapk9");
    // Every link deletion fails in this daemon: the removal commits (it deletes no link
    // itself), the reaper cannot do its part.
    let d = h.daemon_env(&[("WEFT_FAILPOINT", "fail:del-link")]);
    h.weft_ok(&["network", "create", "--subnet", "10.62.0.0/24", "n"]);
    let veth = new_host_links(&h, || {
        h.weft_ok(&["sandbox", "create", "--network", "n", "b"]);
    });
    assert_eq!(veth.len(), 1, "one host link for b: {veth:?}");
    let veth = &veth[0];
    let _holder = Holder::new(&key(&h, "b"));
    h.weft_ok(&["sandbox", "rm", "b"]);
    h.weft_err(&["sandbox", "inspect", "b"]);
    // The deletion is pending, and says so.
    let o = h.weft(&["system", "check"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !o.status.success() && out.contains(veth.as_str()),
        "system check shows the pending deletion of {veth}: {out}"
    );
    assert!(host_link(&h, veth).is_some(), "{veth} is still there");
    d.kill();
    assert!(
        host_link(&h, veth).is_some(),
        "{veth} is still there after kill -9"
    );
    // A new daemon (no failpoint) deletes it: the record survived.
    let d = h.daemon();
    wait_gone(&h, veth, Duration::from_secs(5));
    check_clean(&h);
    drop(d);
}

/// A batched removal of hundreds of sandboxes on an ICC-off network sends their ICC elements'
/// deletion as one nfnetlink batch and reads every answer: no `nft` process. (The answers used
/// to echo each request and overflow the socket's buffer past ~200 sandboxes: the batch was
/// applied, its answers lost, and the fallback found the elements gone and went one `nft` at
/// a time — 20 s for 400 sandboxes.)
#[test]
fn a_batched_removal_of_hundreds_on_an_icc_off_network_runs_no_nft() {
    let h = TestHost::new("bigrm");
    // Every `nft` this test's weft processes start leaves a line here.
    let calls = h.dir.join("nft-calls");
    let wrapper = h.dir.join("nft-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec nft \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let env = [("WEFT_NFT", wrapper.to_str().unwrap())];
    let o = h.weft_env(
        &[
            "network",
            "create",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "--subnet",
            "10.63.0.0/22",
            "big",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let count = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        count() > 0,
        "control: the wrapper saw the network's nft run"
    );
    let n = 300;
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    for name in &names {
        h.block_on(h.engine().create_sandbox(weft::model::SandboxCreate {
            name: name.clone(),
            network: Some("big".into()),
            ..Default::default()
        }))
        .unwrap();
    }
    let before = count();
    let mut args = vec!["sandbox", "rm"];
    args.extend(names.iter().map(String::as_str));
    let t = std::time::Instant::now();
    let o = h.weft_env(&args, &env);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        count(),
        before,
        "the batched removal ran nft ({took:?}): {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
    eprintln!("{n} sandboxes removed in one batch in {took:?}");
    let o = h.weft(&["system", "check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// The links of namespace `ns` as (name, up) — `ip -o link` there.
fn ns_links(ns: &std::path::Path) -> Vec<(String, bool)> {
    let o = run_ok(ns, "ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
            let flags = l.split('<').nth(1)?.split('>').next()?;
            Some((name, flags.split(',').any(|f| f == "UP")))
        })
        .collect()
}

#[test]
fn a_veth_into_a_namespace_that_stays_is_parked_its_name_free_at_once_and_reaped_later() {
    let h = TestHost::new("park");
    let e = h.engine();
    h.weft_ok(&["network", "create", "--subnet", "10.62.0.0/24", "n1"]);
    h.weft_ok(&["network", "create", "--subnet", "10.63.0.0/24", "n2"]);
    // s: weft's namespace, on two networks; r: a runtime's namespace, given.
    h.weft_ok(&["sandbox", "create", "--network", "n1", "s"]);
    h.weft_ok(&["network", "connect", "n2", "s"]);
    let rt = h.make_ns("rt");
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "n1",
        "--netns",
        rt.to_str().unwrap(),
        "r",
    ]);
    let s_ns = key(&h, "s");
    let gw: std::net::IpAddr = "10.62.0.1".parse().unwrap();
    assert!(
        ping(&s_ns, gw) && ping(&rt, gw),
        "control: both reach n1's gateway"
    );
    let names = |ns: &std::path::Path| -> Vec<String> {
        let mut v = links(ns);
        v.sort();
        v
    };
    assert_eq!(names(&s_ns), ["eth0", "eth1", "lo"]);
    // Deleting links fails from here on: what the removals leave for later stays, to be seen.
    e.set_failpoint(Some("fail:del-link"));
    let host_before = h.host_links();
    h.block_on(e.disconnect("n1", "s", false)).unwrap();
    h.block_on(e.remove_sandbox("r", false)).unwrap();
    for (ns, left) in [(&s_ns, vec!["eth1", "lo"]), (&rt, vec!["lo"])] {
        let links = ns_links(ns);
        let parked: Vec<&(String, bool)> = links
            .iter()
            .filter(|(n, _)| n.starts_with("gone"))
            .collect();
        assert_eq!(
            parked.len(),
            1,
            "one parked veth end in {}: {links:?}",
            ns.display()
        );
        assert!(!parked[0].1, "the parked end is down: {links:?}");
        let addrs = run_ok(ns, "ip", &["-o", "-4", "addr", "show", "dev", &parked[0].0]);
        assert!(
            String::from_utf8_lossy(&addrs.stdout).trim().is_empty(),
            "the parked end keeps no address"
        );
        let mut rest: Vec<String> = links
            .iter()
            .filter(|(n, _)| !n.starts_with("gone"))
            .map(|(n, _)| n.clone())
            .collect();
        rest.sort();
        assert_eq!(rest, left, "in {}", ns.display());
    }
    assert_eq!(
        h.host_links(),
        host_before,
        "the host ends wait for the reaper"
    );
    // The names are free at once: s connects to n1 again, the runtime attaches its
    // namespace again, and both reach the gateway through their new eth0.
    h.block_on(e.connect("n1", "s", Default::default()))
        .unwrap();
    h.block_on(e.create_sandbox(weft::model::SandboxCreate {
        name: "r2".into(),
        network: Some("n1".into()),
        netns: Some(rt.clone()),
        ..Default::default()
    }))
    .unwrap();
    assert!(ping(&s_ns, gw) && ping(&rt, gw), "the new eth0s work");
    // The reaper, once it can, deletes the parked pairs: nothing of them is left anywhere.
    e.set_failpoint(None);
    assert_eq!(h.block_on(e.reap_links()).unwrap(), 2);
    assert_eq!(names(&s_ns), ["eth0", "eth1", "lo"]);
    assert_eq!(names(&rt), ["eth0", "lo"]);
    assert!(h.block_on(e.check()).unwrap().is_empty());
    assert!(ping(&s_ns, gw) && ping(&rt, gw));
}
