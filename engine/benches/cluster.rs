//! Multi-host overlay on etcd: N hosts (namespaces) on a switch namespace, a real etcd
//! (Debian's etcd-server) on it, a `weft daemon` per host.
//!
//! - Convergence: from `sandbox create` returning on host A to the first UDP datagram from a
//!   sandbox on host B delivered to it (host B must have programmed the new endpoint's FDB and
//!   neighbour entries), with every host holding a sandbox on the overlay (so every host
//!   reprograms on every connect).
//! - etcd requests per connect, read from etcd's own metrics (`grpc_server_handled_total`).
//! - How long after its lease's TTL a killed host's entries are gone from host A.
//! - TCP throughput: a sandbox pair across hosts on the overlay, against the two hosts'
//!   underlay addresses (host to host) and a sandbox pair on one bridge.
//!
//! Run (root; etcd from `scripts/deps.sh`): `cargo bench --bench cluster -- [--hosts 3,20]
//! [--rounds 30]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{in_ns, ip, ms, pct, Scratch};

const ETCD: &str = "10.241.0.2";
const TTL: u64 = 3;

fn addr_of(i: usize) -> String {
    format!("10.241.{}.{}", (11 + i) / 250, (11 + i) % 250 + 1)
}

struct Host {
    s: Scratch,
    ns: PathBuf,
    daemon: Option<Child>,
}

impl Host {
    fn weft(&self, args: &[&str]) -> String {
        let o = self.s.weft(&self.ns, args).output().unwrap();
        assert!(
            o.status.success(),
            "weft {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn start(&mut self, i: usize) {
        let mut c = self.s.weft(
            &self.ns,
            &[
                "daemon",
                "--cluster-store",
                &format!("etcd://{ETCD}:2379"),
                "--advertise-addr",
                &addr_of(i),
                "--cluster-ttl",
                &TTL.to_string(),
            ],
        );
        c.env("WEFT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.daemon = Some(c.spawn().unwrap());
        let t = Instant::now();
        loop {
            let o = self.s.weft(&self.ns, &["system", "info"]).output().unwrap();
            if o.status.success()
                && serde_json::from_slice::<serde_json::Value>(&o.stdout)
                    .map(|v| v["Cluster"]["connected"] == true)
                    .unwrap_or(false)
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "host {i} did not connect"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A sandbox's namespace.
    fn key(&self, name: &str) -> PathBuf {
        let v: serde_json::Value =
            serde_json::from_str(&self.weft(&["sandbox", "inspect", name])).unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        PathBuf::from(v["NetworkSettings"]["SandboxKey"].as_str().unwrap())
    }

    fn fdb(&self) -> String {
        let o = common::in_ns_cmd(&self.ns, "bridge")
            .args(["fdb", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let mut c = c;
            let _ = c.wait();
        }
        let _ = self
            .s
            .weft(&self.ns, &["system", "reset", "--force"])
            .output();
    }
}

struct Lab {
    hosts: Vec<Host>,
    etcd: Child,
    sw: Scratch,
    swns: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.hosts.clear();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        let _ = &self.sw;
    }
}

fn lab(n: usize) -> Lab {
    let sw = Scratch::new("cluster-sw");
    let swns = sw.ns("sw");
    ip(&swns, &["link", "set", "lo", "up"]);
    ip(&swns, &["link", "add", "br0", "type", "bridge"]);
    ip(&swns, &["addr", "add", &format!("{ETCD}/16"), "dev", "br0"]);
    ip(&swns, &["link", "set", "br0", "up"]);
    let ns = std::fs::File::open(&swns).unwrap();
    let mut c = Command::new("etcd");
    c.args([
        "--name",
        "bench",
        "--data-dir",
        sw.dir.join("etcd").to_str().unwrap(),
        "--listen-client-urls",
        &format!("http://{ETCD}:2379"),
        "--advertise-client-urls",
        &format!("http://{ETCD}:2379"),
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-cluster",
        "bench=http://127.0.0.1:2380",
        "--log-level",
        "error",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    unsafe {
        c.pre_exec(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    let etcd = c
        .spawn()
        .expect("etcd (scripts/deps.sh installs etcd-server)");
    let a: SocketAddr = format!("{ETCD}:2379").parse().unwrap();
    let t = Instant::now();
    while !in_ns(&swns, move || {
        TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_ok()
    })
    .join()
    .unwrap()
    {
        assert!(t.elapsed() < Duration::from_secs(20), "etcd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut hosts = Vec::new();
    for i in 0..n {
        let s = Scratch::new(&format!("cluster-h{i}"));
        let ns = s.ns("host");
        let port = format!("s{i}");
        ip(
            &swns,
            &[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "ul0",
                "netns",
                ns.to_str().unwrap(),
            ],
        );
        ip(&swns, &["link", "set", &port, "master", "br0", "up"]);
        ip(
            &ns,
            &["addr", "add", &format!("{}/16", addr_of(i)), "dev", "ul0"],
        );
        ip(&ns, &["link", "set", "ul0", "up"]);
        ip(&ns, &["link", "set", "lo", "up"]);
        let mut h = Host {
            s,
            ns,
            daemon: None,
        };
        h.start(i);
        hosts.push(h);
    }
    Lab {
        hosts,
        etcd,
        sw,
        swns,
    }
}

/// etcd's count of handled requests by method (its Prometheus metrics).
fn etcd_requests(swns: &Path) -> u64 {
    let a: SocketAddr = format!("{ETCD}:2379").parse().unwrap();
    let text = in_ns(swns, move || {
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .join()
    .unwrap();
    text.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .filter(|l| {
            [
                "\"Range\"",
                "\"Txn\"",
                "\"Put\"",
                "\"DeleteRange\"",
                "\"LeaseGrant\"",
            ]
            .iter()
            .any(|m| l.contains(m))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Until a datagram from `from` (sending every 0.5 ms to `to`) arrives in `at`.
fn first_delivery(at: &Path, from: &Path, to: SocketAddr, limit: Duration) -> Option<Instant> {
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = in_ns(at, move || {
        let s = UdpSocket::bind(to).unwrap();
        s.set_read_timeout(Some(limit)).unwrap();
        tx.send(()).unwrap();
        let mut b = [0u8; 16];
        s.recv(&mut b).ok().map(|_| Instant::now())
    });
    rx.recv().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let sender = in_ns(from, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let t = Instant::now();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) && t.elapsed() < limit {
            let _ = s.send_to(b"probe", to);
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    let got = listener.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    got
}

/// TCP throughput from `from` to `to` in `at` for `secs`, bytes per second.
fn throughput(at: &Path, from: &Path, to: SocketAddr, secs: f64) -> f64 {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = in_ns(at, move || {
        let l = TcpListener::bind(to).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut b = vec![0u8; 1 << 16];
        let mut n = 0u64;
        while let Ok(k) = s.read(&mut b) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    rx.recv().unwrap();
    let t = Instant::now();
    in_ns(from, move || {
        let mut s = TcpStream::connect(to).unwrap();
        let b = vec![7u8; 1 << 16];
        while t.elapsed().as_secs_f64() < secs {
            s.write_all(&b).unwrap();
        }
    })
    .join()
    .unwrap();
    let n = server.join().unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

fn run(n: usize, rounds: usize) {
    eprintln!("{n} hosts: starting etcd and {n} daemons…");
    let mut lab = lab(n);
    lab.hosts[0].weft(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.90.0.0/16",
        "ov",
    ]);
    // A sandbox on every host: every host programs every new endpoint.
    for (i, h) in lab.hosts.iter().enumerate() {
        let t = Instant::now();
        while !h.weft(&["network", "ls"]).contains(" ov ") {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        h.weft(&[
            "sandbox",
            "create",
            "--network",
            "ov",
            "--ip",
            &format!("10.90.1.{}", i + 1),
            &format!("base{i}"),
        ]);
    }
    let from = lab.hosts[1].key("base1");
    let before = etcd_requests(&lab.swns);
    let mut conv = Vec::new();
    for r in 0..rounds {
        let ipa = format!("10.90.2.{}", r + 1);
        let name = format!("new{r}");
        lab.hosts[0].weft(&["sandbox", "create", "--network", "ov", "--ip", &ipa, &name]);
        let t0 = Instant::now();
        let at = lab.hosts[0].s.dir.join("run/netns").join(&name);
        let to: SocketAddr = format!("{ipa}:9000").parse().unwrap();
        match first_delivery(&at, &from, to, Duration::from_secs(5)) {
            Some(t1) => conv.push(t1 - t0),
            None => eprintln!("round {r}: nothing delivered within 5 s"),
        }
    }
    let after = etcd_requests(&lab.swns);
    for r in 0..rounds {
        lab.hosts[0].weft(&["sandbox", "rm", &format!("new{r}")]);
    }
    println!(
        "{n} hosts: convergence (connect returned on A → first datagram from B delivered): {} median, {} p90, {} p99, {} max ({} rounds)",
        ms(pct(&conv, 0.5)),
        ms(pct(&conv, 0.9)),
        ms(pct(&conv, 0.99)),
        ms(pct(&conv, 1.0)),
        conv.len()
    );
    println!(
        "{n} hosts: etcd requests per connect (Range, Txn, Put, DeleteRange, LeaseGrant): {:.2}",
        (after - before) as f64 / rounds as f64
    );
    // A dead host: host n-1's daemon killed; when host 0 no longer sends to it.
    let last = lab.hosts.len() - 1;
    let vtep = addr_of(last);
    let t = Instant::now();
    lab.hosts[last].kill();
    while lab.hosts[0].fdb().contains(&format!("dst {vtep} ")) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "host 0 kept the dead host's entries"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "{n} hosts: a killed host's entries gone from host 0 after {} (TTL {TTL} s: {} past it)",
        ms(t.elapsed()),
        ms(t.elapsed().saturating_sub(Duration::from_secs(TTL)))
    );
    if n == 3 {
        let b0 = lab.hosts[0].key("base0");
        let under = throughput(
            &lab.hosts[1].ns,
            &lab.hosts[0].ns,
            format!("{}:9100", addr_of(1)).parse().unwrap(),
            3.0,
        );
        let over = throughput(&from, &b0, "10.90.1.2:9101".parse().unwrap(), 3.0);
        lab.hosts[0].weft(&["network", "create", "--subnet", "10.91.0.0/24", "br"]);
        lab.hosts[0].weft(&[
            "sandbox",
            "create",
            "--network",
            "br",
            "--ip",
            "10.91.0.10",
            "p1",
        ]);
        lab.hosts[0].weft(&[
            "sandbox",
            "create",
            "--network",
            "br",
            "--ip",
            "10.91.0.11",
            "p2",
        ]);
        let (p1, p2) = (lab.hosts[0].key("p1"), lab.hosts[0].key("p2"));
        let bridge = throughput(&p2, &p1, "10.91.0.11:9102".parse().unwrap(), 3.0);
        let mb = |b: f64| format!("{:.0} MB/s", b / 1e6);
        println!(
            "TCP, one stream, 3 s: host to host over the underlay {}, sandbox to sandbox across hosts on the overlay {} ({:.0} % of host to host), sandbox to sandbox on one bridge {}",
            mb(under),
            mb(over),
            over / under * 100.0,
            mb(bridge)
        );
    }
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes namespaces: run it as root"
    );
    let hosts: Vec<usize> = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "--hosts")
        .map(|w| w[1].split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![3, 20]);
    let rounds = common::num_arg("--rounds", 30usize);
    for n in hosts {
        run(n.max(2), rounds);
    }
}
