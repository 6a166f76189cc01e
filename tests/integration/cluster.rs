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
        format!(
            "--- host {i} FDB:\n{}\n--- neighbours:\n{}--- log:\n{}",
            self.fdb(i),
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
    lab.ok(
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.50.0.0/24",
            "ov1",
        ],
    );
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
