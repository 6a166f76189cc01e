//! Several hosts on one machine (issue 15): host namespaces joined by veths through a "switch"
//! namespace (the underlay, 10.240.0.0/24), a real etcd (Debian's etcd-server) on the switch at
//! 10.240.0.2:2379, and one `weft daemon` per host with its own state, `--cluster-store` and
//! `--advertise-addr`. Each test builds its own lab (parallel tests share nothing).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const ETCD: &str = "10.240.0.2";

/// etcd, in the switch namespace, on its own data directory.
struct Etcd {
    child: Option<Child>,
    log: PathBuf,
}

impl Etcd {
    fn start(sw: &TestHost) -> Etcd {
        let data = sw.dir.join("etcd-data");
        let log = sw.dir.join(format!("etcd-{}.log", unique("e")));
        let ns = std::fs::File::open(&sw.host_ns).unwrap();
        let mut cmd = Command::new("etcd");
        cmd.args([
            "--name",
            "lab",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://{ETCD}:2379"),
            "--advertise-client-urls",
            &format!("http://{ETCD}:2379"),
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "lab=http://127.0.0.1:2380",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
        let child = cmd
            .spawn()
            .expect("start etcd (Debian's etcd-server: scripts/deps.sh installs it)");
        let e = Etcd {
            child: Some(child),
            log,
        };
        let addr: SocketAddr = format!("{ETCD}:2379").parse().unwrap();
        let t = Instant::now();
        while !in_ns(&sw.host_ns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .join()
        .unwrap()
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "etcd did not listen within 20 s: {}",
                std::fs::read_to_string(&e.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// N hosts, a switch, etcd, a daemon per host.
struct Lab {
    daemons: Vec<Option<Daemon>>,
    hosts: Vec<TestHost>,
    etcd: Option<Etcd>,
    sw: TestHost,
    ttl: u64,
}

fn addr_of(i: usize) -> String {
    format!("10.240.0.{}", 11 + i)
}

impl Lab {
    /// `n` hosts on an underlay of MTU `mtu`, etcd up, daemons started (lease TTL 3 s).
    fn new(tag: &str, n: usize, mtu: u32) -> Lab {
        let sw = TestHost::new(&format!("{tag}sw"));
        run_ok(&sw.host_ns, "ip", &["link", "add", "br0", "type", "bridge"]);
        run_ok(
            &sw.host_ns,
            "ip",
            &["link", "set", "br0", "mtu", &mtu.to_string()],
        );
        run_ok(
            &sw.host_ns,
            "ip",
            &["addr", "add", &format!("{ETCD}/24"), "dev", "br0"],
        );
        run_ok(&sw.host_ns, "ip", &["link", "set", "br0", "up"]);
        let mut hosts = vec![];
        for i in 0..n {
            let h = TestHost::new(&format!("{tag}h{i}"));
            let port = format!("s{i}");
            run_ok(
                &sw.host_ns,
                "ip",
                &[
                    "link",
                    "add",
                    &port,
                    "mtu",
                    &mtu.to_string(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "ul0",
                    "mtu",
                    &mtu.to_string(),
                    "netns",
                    h.host_ns.to_str().unwrap(),
                ],
            );
            run_ok(
                &sw.host_ns,
                "ip",
                &["link", "set", &port, "master", "br0", "up"],
            );
            run_ok(
                &h.host_ns,
                "ip",
                &["addr", "add", &format!("{}/24", addr_of(i)), "dev", "ul0"],
            );
            run_ok(&h.host_ns, "ip", &["link", "set", "ul0", "up"]);
            hosts.push(h);
        }
        let etcd = Some(Etcd::start(&sw));
        let mut lab = Lab {
            daemons: vec![],
            hosts,
            etcd,
            sw,
            ttl: 3,
        };
        for i in 0..n {
            let d = lab.start(i);
            lab.daemons.push(Some(d));
        }
        for i in 0..n {
            lab.wait_connected(i);
        }
        lab
    }

    /// Until host `i`'s daemon says it is connected to etcd.
    fn wait_connected(&self, i: usize) {
        assert!(
            eventually(Duration::from_secs(10), || {
                json(&self.ok(i, &["system", "info"]))["Cluster"]["connected"] == true
            })
            .is_some(),
            "host {i} did not connect to etcd: {}",
            self.log(i)
        );
    }

    fn start(&self, i: usize) -> Daemon {
        let ttl = self.ttl.to_string();
        self.hosts[i].daemon_args(
            &[
                "--cluster-store",
                &format!("etcd://{ETCD}:2379"),
                "--advertise-addr",
                &addr_of(i),
                "--cluster-ttl",
                &ttl,
            ],
            &[],
            None,
        )
    }

    fn weft(&self, i: usize, args: &[&str]) -> Output {
        self.hosts[i].weft(args)
    }

    #[track_caller]
    fn ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.weft(i, args);
        assert!(
            o.status.success(),
            "host {i}: weft {args:?} failed: {}{}\n--- its daemon ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.daemons[i]
                .as_ref()
                .map(|d| d.log_text())
                .unwrap_or_default()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[track_caller]
    fn err(&self, i: usize, args: &[&str]) -> String {
        let o = self.weft(i, args);
        assert!(
            !o.status.success(),
            "host {i}: weft {args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).trim().to_string()
    }

    /// An overlay network `name` on `subnet`, made on host `i`.
    fn overlay(&self, i: usize, subnet: &str, name: &str) {
        self.ok(
            i,
            &[
                "network", "create", "-d", "overlay", "--subnet", subnet, name,
            ],
        );
    }

    /// `from` (a sandbox on host `i`) reaches `ip`, within 5 s (the other host programs its
    /// entries meanwhile); what tells why not, otherwise.
    #[track_caller]
    fn reaches(&self, i: usize, from: &std::path::Path, ip: IpAddr) {
        assert!(
            eventually(Duration::from_secs(5), || ping(from, ip)).is_some(),
            "host {i}: no ping to {ip}\n{}",
            self.diag(i)
        );
    }

    /// A sandbox's namespace and its address on `net`.
    fn sandbox(&self, i: usize, name: &str, net: &str) -> (PathBuf, IpAddr) {
        let v = json(&self.ok(i, &["sandbox", "inspect", name]));
        let v = if v.is_array() { v[0].clone() } else { v };
        let key = PathBuf::from(v["NetworkSettings"]["SandboxKey"].as_str().unwrap());
        let ip = v["NetworkSettings"]["Networks"][net]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("no address on {net}: {v:#}"))
            .parse()
            .unwrap();
        (key, ip)
    }

    /// The FDB entries of host `i`'s VXLAN devices, as `bridge fdb` prints them.
    fn fdb(&self, i: usize) -> String {
        let o = run_ok(&self.hosts[i].host_ns, "bridge", &["fdb", "show"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("dev vx-"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Everything that tells why traffic does not cross: FDB, neighbours, the daemon's log.
    fn diag(&self, i: usize) -> String {
        let n = run_in_ns(&self.hosts[i].host_ns, "ip", &["neigh", "show"]);
        let b = run_in_ns(&self.hosts[i].host_ns, "bridge", &["link"]);
        let l = run_in_ns(&self.hosts[i].host_ns, "ip", &["-br", "link"]);
        format!(
            "--- host {i} FDB:\n{}\n--- bridge ports:\n{}--- links:\n{}--- neighbours:\n{}--- log:\n{}",
            self.fdb(i),
            String::from_utf8_lossy(&b.stdout),
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&n.stdout),
            self.log(i)
                .lines()
                .filter(|l| !l.contains("kernel change") && !l.contains("api method"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn log(&self, i: usize) -> String {
        self.daemons[i]
            .as_ref()
            .map(|d| d.log_text())
            .unwrap_or_default()
    }
}

/// Wait for `f` to hold (up to `limit`); how long it took, or None.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if f() {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_overlay_spans_hosts_by_address_and_name_and_goes_everywhere_when_removed() {
    let lab = Lab::new("ovl", 3, 1500);
    lab.overlay(0, "10.50.0.0/24", "ov1");
    for i in 1..3 {
        assert!(
            eventually(Duration::from_secs(5), || lab
                .ok(
                    i,
                    &[
                        "network",
                        "ls",
                        "--format",
                        "{{.Name}} {{.Driver}} {{.Scope}}"
                    ]
                )
                .contains("ov1 overlay global"))
            .is_some(),
            "host {i} does not list the overlay"
        );
    }
    let v = json(&lab.ok(2, &["network", "inspect", "ov1"]));
    assert_eq!(v[0]["Scope"], "global");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.50.0.0/24");
    for (i, name) in ["a0", "b1", "c2"].iter().enumerate() {
        lab.ok(i, &["sandbox", "create", "--network", "ov1", name]);
    }
    let (a, a_ip) = lab.sandbox(0, "a0", "ov1");
    let (b, b_ip) = lab.sandbox(1, "b1", "ov1");
    let (c, c_ip) = lab.sandbox(2, "c2", "ov1");
    assert!(a_ip != b_ip && b_ip != c_ip && a_ip != c_ip);
    // Across hosts, by address: each pair, once the entries are programmed.
    for (i, j, from, to, ip) in [
        (0, 1, &a, "b1", b_ip),
        (1, 2, &b, "c2", c_ip),
        (2, 0, &c, "a0", a_ip),
    ] {
        assert!(
            eventually(Duration::from_secs(5), || ping(from, ip)).is_some(),
            "no ping from host {i} to {to} ({ip})\n{}\n{}",
            lab.diag(i),
            lab.diag(j)
        );
    }
    assert!(
        tcp_exchange(&a, &b, SocketAddr::new(b_ip, 7000)).is_some(),
        "TCP from host 0 to host 1"
    );
    // By name, from the resolver of each host.
    let o = lab.ok(0, &["sandbox", "exec", "a0", "--", "getent", "hosts", "c2"]);
    assert!(o.contains(&c_ip.to_string()), "{o}");
    let o = lab.ok(
        2,
        &["sandbox", "exec", "c2", "--", "getent", "hosts", "b1.ov1"],
    );
    assert!(o.contains(&b_ip.to_string()), "{o}");
    // Removal is refused while any host has endpoints, naming them.
    let e = lab.err(1, &["network", "rm", "ov1"]);
    assert!(
        e.contains("has active endpoints") && e.contains("a0") && e.contains("c2"),
        "{e}"
    );
    for (i, name) in ["a0", "b1", "c2"].iter().enumerate() {
        lab.ok(i, &["sandbox", "rm", name]);
    }
    lab.ok(1, &["network", "rm", "ov1"]);
    for i in 0..3 {
        assert!(
            eventually(Duration::from_secs(5), || !lab
                .ok(i, &["network", "ls"])
                .contains("ov1")
                && !links(&lab.hosts[i].host_ns)
                    .iter()
                    .any(|l| l.starts_with("vx-") || l.starts_with("ov-")))
            .is_some(),
            "host {i} still has the overlay: {:?}",
            links(&lab.hosts[i].host_ns)
        );
        let o = lab.weft(i, &["system", "check"]);
        assert!(
            o.status.success(),
            "host {i}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// The FDB entry host `i` has for a MAC, if any (`dst <vtep>`).
fn fdb_dst(lab: &Lab, i: usize, mac: &str) -> Option<String> {
    lab.fdb(i)
        .lines()
        .find(|l| l.starts_with(mac) && l.contains(" dst "))
        .and_then(|l| l.split(" dst ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

fn mac_of(lab: &Lab, i: usize, name: &str, net: &str) -> String {
    let v = json(&lab.ok(i, &["sandbox", "inspect", name]));
    let v = if v.is_array() { v[0].clone() } else { v };
    v["NetworkSettings"]["Networks"][net]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_dead_hosts_entries_leave_every_host_within_its_ttl_and_come_back_with_it() {
    let mut lab = Lab::new("ovdead", 3, 1500);
    lab.overlay(0, "10.51.0.0/24", "ov");
    lab.ok(0, &["sandbox", "create", "--network", "ov", "a0"]);
    lab.ok(2, &["sandbox", "create", "--network", "ov", "c2"]);
    let (a, _) = lab.sandbox(0, "a0", "ov");
    let (_, c_ip) = lab.sandbox(2, "c2", "ov");
    let c_mac = mac_of(&lab, 2, "c2", "ov");
    lab.reaches(0, &a, c_ip);
    assert_eq!(
        fdb_dst(&lab, 1, &c_mac),
        None,
        "host 1 has no endpoint on ov: no entries there"
    );
    // Host 2's daemon dies (its sandbox stays): within the TTL (3 s) and a little, host 0
    // drops its entries and no host lists c2.
    lab.daemons[2].take().unwrap().kill();
    let t = Instant::now();
    let gone = eventually(Duration::from_secs(3 + 5), || {
        fdb_dst(&lab, 0, &c_mac).is_none()
    });
    assert!(
        gone.is_some(),
        "host 0 still sends c2's MAC to host 2 after {:?}\n{}",
        t.elapsed(),
        lab.diag(0)
    );
    let took = t.elapsed();
    assert!(
        !lab.ok(1, &["network", "inspect", "ov"]).contains("\"c2\""),
        "host 1 still lists c2"
    );
    // The dead host's address is free again (the live host with the lowest id released it).
    assert!(
        eventually(Duration::from_secs(5), || lab
            .weft(1, &["system", "check"])
            .status
            .success())
        .is_some(),
        "host 1: {}",
        String::from_utf8_lossy(&lab.weft(1, &["system", "check"]).stdout)
    );
    eprintln!("dead host dropped after {took:?} (TTL 3 s)");
    // Back: its lease expired, so it publishes c2 again, and host 0 reaches it again.
    lab.daemons[2] = Some(lab.start(2));
    lab.wait_connected(2);
    assert!(
        eventually(Duration::from_secs(5), || fdb_dst(&lab, 0, &c_mac)
            .as_deref()
            == Some("10.240.0.13"))
        .is_some(),
        "c2 was not published again\n{}",
        lab.diag(2)
    );
    lab.reaches(0, &a, c_ip);

    // Dead again; its address goes to a new sandbox on host 1 (moby#31588: traffic for a
    // reused address must not go to the old host).
    lab.daemons[2].take().unwrap().kill();
    assert!(
        eventually(Duration::from_secs(8), || fdb_dst(&lab, 0, &c_mac)
            .is_none())
        .is_some()
    );
    let ip = c_ip.to_string();
    assert!(
        eventually(Duration::from_secs(5), || lab
            .weft(
                1,
                &["sandbox", "create", "--network", "ov", "--ip", &ip, "d1"]
            )
            .status
            .success())
        .is_some(),
        "{}",
        lab.diag(1)
    );
    let (d, d_ip) = lab.sandbox(1, "d1", "ov");
    assert_eq!(d_ip, c_ip);
    assert!(
        eventually(Duration::from_secs(5), || tcp_exchange(
            &a,
            &d,
            SocketAddr::new(d_ip, 7001)
        )
        .is_some())
        .is_some(),
        "the reused address does not reach its new holder\n{}",
        lab.diag(0)
    );
    // The old host comes back: it cannot have the address again, says so, and its stale
    // half goes; the new holder keeps it.
    lab.daemons[2] = Some(lab.start(2));
    lab.wait_connected(2);
    assert!(
        eventually(Duration::from_secs(5), || lab
            .log(2)
            .contains("was given to d1 while this host was away"))
        .is_some(),
        "{}",
        lab.diag(2)
    );
    assert!(tcp_exchange(&a, &d, SocketAddr::new(d_ip, 7002)).is_some());
    for i in 0..3 {
        assert!(
            eventually(Duration::from_secs(5), || lab
                .weft(i, &["system", "check"])
                .status
                .success())
            .is_some(),
            "host {i}: {}",
            String::from_utf8_lossy(&lab.weft(i, &["system", "check"]).stdout)
        );
    }
}

#[test]
fn local_work_goes_on_while_etcd_is_away_and_every_host_catches_up() {
    let mut lab = Lab::new("ovaway", 2, 1500);
    lab.overlay(0, "10.52.0.0/24", "ov");
    lab.etcd = None; // killed
                     // Local networks and sandboxes: as ever.
    lab.ok(0, &["network", "create", "--subnet", "10.53.0.0/24", "loc"]);
    lab.ok(0, &["sandbox", "create", "--network", "loc", "l0"]);
    // Global ones: refused, naming the store.
    let e = lab.err(0, &["network", "create", "-d", "overlay", "ov2"]);
    assert!(
        e.contains("cluster store etcd://10.240.0.2:2379 is unreachable"),
        "{e}"
    );
    let e = lab.err(0, &["sandbox", "create", "--network", "ov", "g0"]);
    assert!(e.contains("etcd://10.240.0.2:2379"), "{e}");
    // A daemon started while etcd is away serves local work (moby#18091).
    drop(lab.daemons[1].take());
    lab.daemons[1] = Some(lab.start(1));
    lab.ok(
        1,
        &["network", "create", "--subnet", "10.54.0.0/24", "loc1"],
    );
    lab.ok(1, &["sandbox", "create", "--network", "loc1", "l1"]);
    // Its healer mends local drift meanwhile (its view of the cluster cannot be current: only
    // global networks wait for that).
    let id = lab.ok(1, &["network", "inspect", "-f", "{{.Id}}", "loc1"]);
    let br = format!("br-{}", &id.trim()[..12]);
    // After the healer's own first check (the daemon's at start is the first counted), which
    // left the global networks out: the drift below is a change of its own, seen after.
    let checks = || {
        let info: serde_json::Value =
            serde_json::from_str(&lab.ok(1, &["system", "info"])).unwrap();
        info["HealerChecks"].as_u64().unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || checks() >= 2).is_some(),
        "host 1's healer made no check of its own: {}",
        lab.log(1)
    );
    run_ok(&lab.hosts[1].host_ns, "ip", &["link", "del", &br]);
    assert!(
        eventually(Duration::from_secs(10), || lab
            .weft(1, &["system", "check"])
            .status
            .success())
        .is_some(),
        "host 1's healer did not restore {br} while etcd was away: {}",
        lab.log(1)
    );
    assert!(
        lab.log(1).contains("restored missing: network loc1"),
        "{}",
        lab.log(1)
    );
    // etcd back: both hosts catch up without a restart.
    lab.etcd = Some(Etcd::start(&lab.sw));
    lab.wait_connected(0);
    lab.wait_connected(1);
    lab.overlay(1, "10.55.0.0/24", "ov3");
    assert!(eventually(Duration::from_secs(5), || lab
        .ok(0, &["network", "ls"])
        .contains("ov3"))
    .is_some());
    lab.ok(0, &["sandbox", "create", "--network", "ov3", "g0"]);
    lab.ok(1, &["sandbox", "create", "--network", "ov3", "g1"]);
    let (g0, _) = lab.sandbox(0, "g0", "ov3");
    let (_, g1_ip) = lab.sandbox(1, "g1", "ov3");
    lab.reaches(0, &g0, g1_ip);
}

#[test]
fn an_advertise_address_that_is_not_this_hosts_is_refused_naming_it() {
    let mut lab = Lab::new("ovadv", 1, 1500);
    drop(lab.daemons[0].take());
    let o = lab.hosts[0]
        .weft_cmd(&[
            "daemon",
            "--cluster-store",
            "etcd://10.240.0.2:2379",
            "--advertise-addr",
            "10.240.0.99",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("advertise address 10.240.0.99 is not an address of this host"),
        "{err}"
    );
    let o = lab.hosts[0]
        .weft_cmd(&["daemon", "--cluster-store", "etcd://10.240.0.2:2379"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cluster-store needs --advertise-addr"));
}

#[test]
fn a_small_underlay_mtu_gives_the_overlay_its_mtu_less_50_and_large_packets_cross() {
    let lab = Lab::new("ovmtu", 2, 1400);
    lab.overlay(0, "10.56.0.0/24", "ov");
    lab.ok(0, &["sandbox", "create", "--network", "ov", "a0"]);
    lab.ok(1, &["sandbox", "create", "--network", "ov", "b1"]);
    let (a, _) = lab.sandbox(0, "a0", "ov");
    let (_, b_ip) = lab.sandbox(1, "b1", "ov");
    let o = run_ok(&a, "ip", &["-o", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("mtu 1350"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    lab.reaches(0, &a, b_ip);
    // 1350 bytes with DF set (libnetwork#2661: a 1500 overlay on a 1400 underlay drops it).
    let ip = b_ip.to_string();
    let o = run_in_ns(
        &a,
        "ping",
        &["-c", "1", "-W", "2", "-M", "do", "-s", "1322", &ip],
    );
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // Control: one byte more does not fit the sandbox's own interface.
    let o = run_in_ns(
        &a,
        "ping",
        &["-c", "1", "-W", "2", "-M", "do", "-s", "1323", &ip],
    );
    assert!(!o.status.success());
}

/// Count encapsulated ARP and IPv4 frames crossing the switch (VXLAN on UDP 4789: the inner
/// Ethernet type is 28 bytes into the UDP header).
fn count_encapsulated(sw: &TestHost) {
    let rules = "table bridge cap {\n chain count {\n type filter hook forward priority 0;\n udp dport 4789 @th,224,16 0x0806 counter comment \"arp\"\n udp dport 4789 @th,224,16 0x0800 counter comment \"ipv4\"\n }\n}\n";
    let path = sw.dir.join("cap.nft");
    std::fs::write(&path, rules).unwrap();
    run_ok(&sw.host_ns, "nft", &["-f", path.to_str().unwrap()]);
}

fn encapsulated(sw: &TestHost, what: &str) -> u64 {
    let o = run_ok(
        &sw.host_ns,
        "nft",
        &["list", "chain", "bridge", "cap", "count"],
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines()
        .find(|l| l.contains(&format!("comment \"{what}\"")))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter {what}: {text}"))
}

#[test]
fn no_arp_crosses_the_underlay() {
    let lab = Lab::new("ovarp", 2, 1500);
    count_encapsulated(&lab.sw);
    lab.overlay(0, "10.57.0.0/24", "ov");
    lab.ok(0, &["sandbox", "create", "--network", "ov", "a0"]);
    lab.ok(1, &["sandbox", "create", "--network", "ov", "b1"]);
    let (a, a_ip) = lab.sandbox(0, "a0", "ov");
    let (b, b_ip) = lab.sandbox(1, "b1", "ov");
    lab.reaches(0, &a, b_ip);
    assert!(ping(&b, a_ip));
    assert!(tcp_exchange(&a, &b, SocketAddr::new(b_ip, 7003)).is_some());
    assert_eq!(
        encapsulated(&lab.sw, "arp"),
        0,
        "an ARP frame crossed the underlay"
    );
    assert!(
        encapsulated(&lab.sw, "ipv4") >= 4,
        "control: the IPv4 frames were counted"
    );
    // Control: an encapsulated ARP frame sent across by hand is counted.
    let to: SocketAddr = "10.240.0.12:4789".parse().unwrap();
    in_ns(&lab.hosts[0].host_ns, move || {
        let s = std::net::UdpSocket::bind("10.240.0.11:0").unwrap();
        let mut f = vec![0x08, 0, 0, 0, 0, 0x10, 0, 0]; // VXLAN header, VNI 4096
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0u8; 28]);
        s.send_to(&f, to).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        encapsulated(&lab.sw, "arp"),
        1,
        "control: the counter sees encapsulated ARP"
    );
}

#[test]
fn addresses_stay_unique_under_concurrent_connects_from_every_host() {
    let lab = Lab::new("ovcc", 3, 1500);
    lab.overlay(0, "10.58.0.0/24", "ov");
    for i in 1..3 {
        assert!(eventually(Duration::from_secs(5), || lab
            .ok(i, &["network", "ls"])
            .contains(" ov "))
        .is_some());
    }
    std::thread::scope(|s| {
        for i in 0..3 {
            for k in 0..6 {
                let lab = &lab;
                s.spawn(move || {
                    lab.ok(
                        i,
                        &["sandbox", "create", "--network", "ov", &format!("s{i}x{k}")],
                    );
                });
            }
        }
    });
    let v = json(&lab.ok(1, &["network", "inspect", "ov"]));
    let c = v[0]["Containers"].as_object().unwrap();
    let mut ips: Vec<String> = c
        .values()
        .map(|e| e["IPv4Address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 18, "{v:#}");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 18, "an address was given twice: {v:#}");
    for i in 0..3 {
        let o = lab.weft(i, &["system", "check"]);
        assert!(
            o.status.success(),
            "host {i}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

#[test]
fn a_process_killed_between_etcd_and_the_local_commit_leaves_nothing_behind() {
    let mut lab = Lab::new("ovkill", 2, 1500);
    lab.overlay(0, "10.59.0.0/24", "ov");
    lab.ok(1, &["sandbox", "create", "--network", "ov", "b1"]);
    let env = |fp: &'static str| {
        vec![
            ("WEFT_NO_DAEMON", "1"),
            ("WEFT_CLUSTER_STORE", "etcd://10.240.0.2:2379"),
            ("WEFT_ADVERTISE_ADDR", "10.240.0.11"),
            ("WEFT_FAILPOINT", fp),
        ]
    };
    // A connect killed after etcd took its endpoint and address, before this host recorded
    // them: its kernel objects roll back at the next open, and the next daemon start withdraws
    // the endpoint from etcd and frees the address.
    let o = lab.hosts[0].weft_env(
        &[
            "sandbox",
            "create",
            "--network",
            "ov",
            "--ip",
            "10.59.0.50",
            "k0",
        ],
        &env("crash:cluster-committed"),
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("killed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        lab.ok(1, &["network", "inspect", "ov"])
            .contains("10.59.0.50"),
        "control: etcd has the half-made endpoint"
    );
    drop(lab.daemons[0].take());
    lab.daemons[0] = Some(lab.start(0));
    lab.wait_connected(0);
    assert!(
        eventually(Duration::from_secs(5), || !lab
            .ok(1, &["network", "inspect", "ov"])
            .contains("10.59.0.50"))
        .is_some(),
        "the half-made endpoint is still in etcd\n{}",
        lab.diag(0)
    );
    lab.ok(
        1,
        &[
            "sandbox",
            "create",
            "--network",
            "ov",
            "--ip",
            "10.59.0.50",
            "r1",
        ],
    );
    // A network create killed the same way: the network exists (etcd has it), this host made
    // nothing it keeps; it is realized here at its first connect.
    let o = lab.hosts[0].weft_env(
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.60.0.0/24",
            "ovk",
        ],
        &env("crash:cluster-committed"),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("killed"));
    // (A killed process's journal is settled when the state is next opened.)
    drop(lab.daemons[0].take());
    lab.daemons[0] = Some(lab.start(0));
    lab.wait_connected(0);
    assert!(eventually(Duration::from_secs(5), || lab
        .ok(1, &["network", "ls"])
        .contains("ovk"))
    .is_some());
    lab.ok(0, &["sandbox", "create", "--network", "ovk", "n0"]);
    lab.ok(1, &["sandbox", "create", "--network", "ovk", "n1"]);
    let (n0, _) = lab.sandbox(0, "n0", "ovk");
    let (_, n1_ip) = lab.sandbox(1, "n1", "ovk");
    lab.reaches(0, &n0, n1_ip);
    // A removal killed after etcd forgot the endpoint: finished at the next open.
    let o = lab.hosts[0].weft_env(&["sandbox", "rm", "n0"], &env("crash:cluster-committed"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("killed"));
    drop(lab.daemons[0].take());
    lab.daemons[0] = Some(lab.start(0));
    lab.wait_connected(0);
    assert!(lab
        .err(0, &["sandbox", "inspect", "n0"])
        .contains("No such"));
    for i in 0..2 {
        assert!(
            eventually(Duration::from_secs(5), || lab
                .weft(i, &["system", "check"])
                .status
                .success())
            .is_some(),
            "host {i}: {}",
            String::from_utf8_lossy(&lab.weft(i, &["system", "check"]).stdout)
        );
    }
}

#[test]
fn system_check_covers_the_overlay_and_repair_restores_it() {
    let lab = Lab::new("ovchk", 2, 1500);
    lab.overlay(0, "10.61.0.0/24", "ov");
    lab.ok(0, &["sandbox", "create", "--network", "ov", "a0"]);
    lab.ok(1, &["sandbox", "create", "--network", "ov", "b1"]);
    let (a, _) = lab.sandbox(0, "a0", "ov");
    let (_, b_ip) = lab.sandbox(1, "b1", "ov");
    let b_mac = mac_of(&lab, 1, "b1", "ov");
    lab.reaches(0, &a, b_ip);
    let vx = lab
        .fdb(0)
        .lines()
        .find(|l| l.starts_with(&b_mac) && l.contains(" dst "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string();
    // Someone removes host 0's entry for b1: check says so; repair puts it back.
    run_ok(
        &lab.hosts[0].host_ns,
        "bridge",
        &[
            "fdb",
            "del",
            &b_mac,
            "dev",
            &vx,
            "dst",
            "10.240.0.12",
            "self",
        ],
    );
    assert_eq!(fdb_dst(&lab, 0, &b_mac), None, "control: the entry is gone");
    // Found by the check — this one, or the daemon's healer's, which may run first (a kernel
    // event woke it) and says what it restored.
    let o = lab.weft(0, &["system", "check"]);
    let reported = !o.status.success()
        && String::from_utf8_lossy(&o.stdout).contains("remote endpoints of network ov");
    assert!(
        reported
            || lab
                .log(0)
                .contains("restored missing: remote endpoints of network ov"),
        "check: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        lab.diag(0)
    );
    lab.ok(0, &["system", "check", "--repair"]);
    assert!(
        eventually(Duration::from_secs(5), || fdb_dst(&lab, 0, &b_mac)
            .as_deref()
            == Some("10.240.0.12"))
        .is_some(),
        "{}",
        lab.diag(0)
    );
    assert!(eventually(Duration::from_secs(5), || ping(&a, b_ip)).is_some());
    // The VXLAN device itself: made again, and its entries with it.
    run_ok(&lab.hosts[0].host_ns, "ip", &["link", "del", &vx]);
    let o = lab.weft(0, &["system", "check"]);
    assert!(
        !o.status.success() || lab.log(0).contains("restored missing: network ov:"),
        "the deleted VXLAN device was found by no check: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        lab.diag(0)
    );
    lab.ok(0, &["system", "check", "--repair"]);
    lab.reaches(0, &a, b_ip);
    assert!(
        eventually(Duration::from_secs(5), || lab
            .weft(0, &["system", "check"])
            .status
            .success())
        .is_some(),
        "{}",
        String::from_utf8_lossy(&lab.weft(0, &["system", "check"]).stdout)
    );
}

#[test]
fn an_overlay_reaches_out_through_its_host_publishes_ports_there_and_docker_sees_it_global() {
    let lab = Lab::new("ovout", 2, 1500);
    let out = lab.hosts[0].outside("ovo", "192.0.2.1", "192.0.2.2");
    // Through the Docker API, attachable, as `docker network create -d overlay` does.
    let d = lab.daemons[1].as_ref().unwrap();
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        "10.62.0.0/24",
        "ovd",
    ]);
    let d0 = lab.daemons[0].as_ref().unwrap();
    assert!(eventually(Duration::from_secs(5), || d0
        .docker_ok(&[
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}} {{.Scope}}"
        ])
        .contains("ovd overlay global"))
    .is_some());
    lab.ok(
        0,
        &[
            "sandbox",
            "create",
            "--network",
            "ovd",
            "-p",
            "8080:80",
            "w0",
        ],
    );
    let (w, w_ip) = lab.sandbox(0, "w0", "ovd");
    // Out through host 0, masqueraded (the outside has no route to the overlay).
    assert!(ping(&w, "192.0.2.2".parse().unwrap()), "{}", lab.diag(0));
    // In through host 0's published port.
    let server = tcp_server(&w, SocketAddr::new(w_ip, 80));
    assert!(
        tcp_echo(
            &out,
            "192.0.2.1:8080".parse().unwrap(),
            Duration::from_secs(2)
        ),
        "the published port does not answer from outside"
    );
    server.join().unwrap();
    let v = json(&d0.docker_ok(&["network", "inspect", "ovd"]));
    assert_eq!(v[0]["Scope"], "global");
    assert_eq!(v[0]["Attachable"], true);
}

#[test]
fn the_mesh_plugin_carries_traffic_across_hosts_that_registered_no_peer_typed() {
    let lab = Lab::new("ovmesh", 3, 1500);
    let mesh = guest("mesh");
    for i in 0..3 {
        lab.ok(
            i,
            &[
                "plugin",
                "install",
                mesh.to_str().unwrap(),
                "--name",
                "mesh",
                "--grant-requested",
                "--grant",
                "parent=ul0",
            ],
        );
        // The other hosts are its peers as soon as they registered.
        assert!(eventually(Duration::from_secs(5), || lab
            .ok(i, &["system", "info"])
            .matches("10.240.0.1")
            .count()
            >= 1
            && json(&lab.ok(i, &["system", "info"]))["Cluster"]["hosts"] == 3)
        .is_some());
        let range = format!("10.70.0.{}/27", 32 * (i + 1));
        lab.ok(
            i,
            &[
                "network",
                "create",
                "-d",
                "mesh",
                "--subnet",
                "10.70.0.0/24",
                "--ip-range",
                &range,
                "-o",
                "vni=6160500",
                "-o",
                "parent=ul0",
                "-o",
                &format!("local={}", addr_of(i)),
                "wm",
            ],
        );
        lab.ok(
            i,
            &["sandbox", "create", "--network", "wm", &format!("m{i}")],
        );
    }
    let (m0, _) = lab.sandbox(0, "m0", "wm");
    let (_, m1_ip) = lab.sandbox(1, "m1", "wm");
    let (m2, m2_ip) = lab.sandbox(2, "m2", "wm");
    lab.reaches(0, &m0, m1_ip);
    lab.reaches(0, &m0, m2_ip);
    assert!(tcp_exchange(
        &m2,
        &lab.sandbox(1, "m1", "wm").0,
        SocketAddr::new(m1_ip, 7004)
    )
    .is_some());
    // Each host heard of the others from the registrations, none typed by hand.
    for i in 0..3 {
        assert!(lab.log(i).contains("cluster peer announced"), "host {i}");
    }
}

#[test]
fn a_plugin_ipam_with_a_cluster_wide_kv_space_allocates_across_hosts() {
    let lab = Lab::new("ovkv", 2, 1500);
    let hl = guest("host-local");
    for i in 0..2 {
        lab.ok(
            i,
            &[
                "plugin",
                "install",
                hl.to_str().unwrap(),
                "--name",
                "hl",
                "--grant",
                "kv-global=true",
            ],
        );
    }
    lab.ok(
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--ipam-driver",
            "hl",
            "--subnet",
            "10.71.0.0/24",
            "ovh",
        ],
    );
    assert!(eventually(Duration::from_secs(5), || lab
        .ok(1, &["network", "ls"])
        .contains("ovh"))
    .is_some());
    std::thread::scope(|s| {
        for i in 0..2 {
            for k in 0..5 {
                let lab = &lab;
                s.spawn(move || {
                    lab.ok(
                        i,
                        &[
                            "sandbox",
                            "create",
                            "--network",
                            "ovh",
                            &format!("k{i}x{k}"),
                        ],
                    )
                });
            }
        }
    });
    let v = json(&lab.ok(0, &["network", "inspect", "ovh"]));
    let mut ips: Vec<String> = v[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|e| e["IPv4Address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 10, "{v:#}");
    ips.sort();
    ips.dedup();
    assert_eq!(
        ips.len(),
        10,
        "the plugin gave an address twice across hosts: {v:#}"
    );
    let (k0, _) = lab.sandbox(0, "k0x0", "ovh");
    let (_, k1_ip) = lab.sandbox(1, "k1x0", "ovh");
    lab.reaches(0, &k0, k1_ip);
    // Without a cluster store the grant is refused, saying why.
    let plain = TestHost::new("ovkvplain");
    let e = plain.weft_err(&[
        "plugin",
        "install",
        hl.to_str().unwrap(),
        "--name",
        "hl",
        "--grant",
        "kv-global=true",
    ]);
    assert!(e.contains("needs a cluster store"), "{e}");
}

#[test]
fn a_daemon_restarted_within_its_ttl_keeps_its_lease_and_its_peers_never_see_it_go() {
    let mut lab = Lab::new("ovresume", 2, 1500);
    lab.overlay(0, "10.63.0.0/24", "ov");
    lab.ok(0, &["sandbox", "create", "--network", "ov", "a0"]);
    lab.ok(1, &["sandbox", "create", "--network", "ov", "b1"]);
    let b_mac = mac_of(&lab, 1, "b1", "ov");
    assert!(
        eventually(Duration::from_secs(5), || fdb_dst(&lab, 0, &b_mac)
            .is_some())
        .is_some()
    );
    let lease = json(&lab.ok(1, &["system", "info"]))["Cluster"]["lease"].clone();
    // Host 0 watches its entry for b1 all the while host 1's daemon stops and starts again.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let old = lab.daemons[1].take();
    let ns0 = lab.hosts[0].host_ns.clone();
    let (missing, d) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut missing = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let o = run_ok(&ns0, "bridge", &["fdb", "show"]);
                if !String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with(&b_mac) && l.contains(" dst "))
                {
                    missing += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            missing
        });
        drop(old);
        let d = lab.start(1);
        lab.wait_connected(1);
        std::thread::sleep(Duration::from_secs(4)); // past the TTL (3 s)
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (watcher.join().unwrap(), d)
    });
    lab.daemons[1] = Some(d);
    assert_eq!(
        missing, 0,
        "host 0 lost its entry for b1 while host 1 restarted"
    );
    assert_eq!(
        json(&lab.ok(1, &["system", "info"]))["Cluster"]["lease"],
        lease,
        "a new lease"
    );
    assert!(lab.log(1).contains("lease resumed"), "{}", lab.log(1));
}

#[test]
fn without_a_cluster_store_an_overlay_is_this_hosts_alone_and_says_so() {
    let h = TestHost::new("ovsolo");
    let _d = h.daemon(); // names need its resolver
    let o = h.weft(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.64.0.0/24",
        "solo",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("works on this host alone"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    h.weft_ok(&["sandbox", "create", "--network", "solo", "s1"]);
    h.weft_ok(&["sandbox", "create", "--network", "solo", "s2"]);
    let v = json(&h.weft_ok(&["network", "inspect", "solo"]));
    assert_eq!(v[0]["Scope"], "global");
    let o = h.weft_ok(&["sandbox", "exec", "s1", "--", "getent", "hosts", "s2"]);
    assert!(o.contains("10.64.0."), "{o}");
    h.weft_ok(&["sandbox", "rm", "s1", "s2"]);
    h.weft_ok(&["network", "rm", "solo"]);
    assert!(h.weft(&["system", "check"]).status.success());
}
