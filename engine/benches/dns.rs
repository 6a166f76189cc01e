//! Embedded DNS: queries for a local name, answered by weft's resolver (in a running
//! `weft daemon`) and, in the same run, by aardvark-dns (Podman's resolver, Debian
//! `aardvark-dns`) where installed. Each resolver serves one network with two containers; a
//! client in the first container's namespace asks for the second by name over UDP.
//!
//! Reported: latency of one query at a time (median, p99) and throughput with 8 clients
//! asking at once.
//!
//! Run (root): `cargo bench --bench dns -- [--queries 20000] [--secs 3]`

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

mod common;

use common::{in_ns, in_ns_cmd, ip, num_arg, pct, us, veth_between, Daemon, Scratch};

const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// One client's answer must hold `want`.
fn answers(reply: &[u8], want: Ipv4Addr) -> bool {
    Message::from_vec(reply).is_ok_and(|m| {
        m.answers
            .iter()
            .any(|a| matches!(&a.data, hickory_proto::rr::RData::A(x) if x.0 == want))
    })
}

/// Latency (sequential) and throughput (8 clients) against `server` from inside `client_ns`.
fn measure(
    client_ns: &Path,
    server: IpAddr,
    name: &str,
    want: Ipv4Addr,
    n: usize,
    secs: u64,
) -> (Vec<Duration>, f64) {
    let q = query(name);
    let lat = {
        let q = q.clone();
        in_ns(client_ns, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.connect((server, 53)).unwrap();
            let mut buf = [0u8; 1500];
            // Warm up, and check the answer is right.
            for _ in 0..200 {
                s.send(&q).unwrap();
                let k = s.recv(&mut buf).unwrap();
                assert!(answers(&buf[..k], want), "wrong answer");
            }
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                s.send(&q).unwrap();
                s.recv(&mut buf).unwrap();
                lat.push(t.elapsed());
            }
            lat
        })
        .join()
        .unwrap()
    };
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (q, done, stop) = (q.clone(), done.clone(), stop.clone());
            in_ns(client_ns, move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.connect((server, 53)).unwrap();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    s.send(&q).unwrap();
                    if s.recv(&mut buf).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    (
        lat,
        done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64(),
    )
}

fn report(who: &str, lat: &[Duration], qps: f64) {
    println!(
        "  {who:<28} one at a time: {} median, {} p99    8 clients: {qps:>7.0} queries/s",
        us(pct(lat, 0.5)),
        us(pct(lat, 0.99)),
    );
}

fn weft(n: usize, secs: u64) {
    let s = Scratch::new("dnsweft");
    let host = s.ns("host");
    let weft = |args: &[&str]| {
        let o = s.weft(&host, args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let d = Daemon::start(&s, &host);
    weft(&["network", "create", "--subnet", "10.74.0.0/24", "bench"]);
    weft(&[
        "sandbox",
        "create",
        "--network",
        "bench",
        "--ip",
        "10.74.0.2",
        "a",
    ]);
    weft(&[
        "sandbox",
        "create",
        "--network",
        "bench",
        "--ip",
        "10.74.0.3",
        "b",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let (lat, qps) = measure(
        &s.dir.join("run/netns/a"),
        "10.74.0.1".parse().unwrap(),
        "b",
        Ipv4Addr::new(10, 74, 0, 3),
        n,
        secs,
    );
    report("weft (daemon resolver)", &lat, qps);
    drop(d);
    weft(&["system", "reset", "--force"]);
}

fn aardvark(n: usize, secs: u64) {
    let s = Scratch::new("dnsaard");
    let host = s.ns("host");
    let client = s.ns("client");
    ip(&host, &["link", "set", "lo", "up"]);
    veth_between(
        &host,
        "aard0",
        "10.75.0.1/24",
        &client,
        "aard1",
        "10.75.0.2/24",
    );
    let cfg: PathBuf = s.dir.join("aardvark");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("bench"),
        format!(
            "10.75.0.1\n{} 10.75.0.2  a\n{} 10.75.0.3  b\n",
            "a".repeat(64),
            "b".repeat(64)
        ),
    )
    .unwrap();
    let mut d = in_ns_cmd(&host, AARDVARK)
        .arg("--config")
        .arg(&cfg)
        .args(["-p", "53", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (lat, qps) = measure(
        &client,
        "10.75.0.1".parse().unwrap(),
        "b",
        Ipv4Addr::new(10, 75, 0, 3),
        n,
        secs,
    );
    report("aardvark-dns 1.4 (Debian)", &lat, qps);
    // aardvark-dns forks into the background and writes its pid next to its config.
    let _ = d.kill();
    let _ = d.wait();
    if let Ok(pid) = std::fs::read_to_string(cfg.join("aardvark.pid")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root: the benchmark makes namespaces"
    );
    let (n, secs): (usize, u64) = (num_arg("--queries", 20000), num_arg("--secs", 3));
    println!(
        "DNS, a local name over UDP ({n} sequential queries; 8 clients for {secs} s; {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    weft(n, secs);
    if Path::new(AARDVARK).exists() {
        aardvark(n, secs);
    } else {
        println!("  aardvark-dns is not installed, left out: apt-get install aardvark-dns");
    }
}
