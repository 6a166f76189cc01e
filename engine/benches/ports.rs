//! Published ports at scale: 100 sandboxes with 10 published ports each (1 000 ports) on one
//! network, in a throwaway host namespace. Reported: the nftables time per published port
//! for the first and the last ten sandboxes (it should stay flat: a published port is two or
//! three data-map elements, no rule, nothing for nf_tables to validate again), and TCP connection setup from an "outside" namespace
//! through the host to the first and to the last published port (the per-packet lookup is
//! one map probe, whatever the count).
//!
//! Run (root): `cargo bench --bench ports -- [--sandboxes 100] [--per 10] [--connects 300]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{in_ns, ip, num_arg, pct, us, veth_between, Scratch};
use weft::model::{NetworkCreate, PortMapping, SandboxCreate};
use weft::Engine;

/// An echo server in `ns` on `port`, answering until the process ends.
fn server(ns: &Path, port: u16) {
    let l = in_ns(ns, move || TcpListener::bind(("0.0.0.0", port)).unwrap())
        .join()
        .unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut b = [0u8; 8];
            if let Ok(n) = c.read(&mut b) {
                let _ = c.write_all(&b[..n]);
            }
        }
    });
}

/// Connection setup times (connect + one echo) from `ns` to `to`.
fn connects(ns: &Path, to: SocketAddr, n: usize) -> Vec<Duration> {
    in_ns(ns, move || {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            v.push(t.elapsed());
        }
        v
    })
    .join()
    .unwrap()
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root: the benchmark makes namespaces"
    );
    let (sandboxes, per, n): (usize, usize, usize) = (
        num_arg("--sandboxes", 100),
        num_arg("--per", 10),
        num_arg("--connects", 300),
    );
    let s = Scratch::new("ports");
    let host = s.ns("host");
    let out = s.ns("outside");
    ip(&host, &["link", "set", "lo", "up"]);
    veth_between(&host, "ptb0", "10.87.9.1/24", &out, "ptb1", "10.87.9.2/24");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = s.config(&host);
    let (per_port, keys) = rt.block_on(async {
        let e = Engine::open(cfg).await.unwrap();
        e.create_network(NetworkCreate {
            name: "web".into(),
            ipam_config: vec![weft::model::IpamConfigRequest {
                subnet: Some("10.87.0.0/22".parse().unwrap()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut per_port = Vec::new();
        let mut keys = Vec::new();
        for i in 0..sandboxes {
            let ports = (0..per)
                .map(|j| PortMapping {
                    proto: "tcp".into(),
                    host_ip: None,
                    host_port: (20000 + i * per + j) as u16,
                    container_port: (8000 + j) as u16,
                })
                .collect();
            let fw0 = fw_time(&e);
            let sb = e
                .create_sandbox(SandboxCreate {
                    name: format!("s{i}"),
                    network: Some("web".into()),
                    ports,
                    ..Default::default()
                })
                .await
                .unwrap();
            per_port.push((fw_time(&e) - fw0) / per as u32);
            keys.push(sb.key);
        }
        (per_port, keys)
    });
    let avg = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    let k = (sandboxes / 10).max(1);
    println!(
        "Published ports: {} sandboxes × {per} ports on one network ({} ports)",
        sandboxes,
        sandboxes * per
    );
    println!(
        "  nftables time per published port: first {k} sandboxes {}, last {k} {} (one nft transaction per sandbox)",
        us(avg(&per_port[..k])),
        us(avg(&per_port[per_port.len() - k..]))
    );
    server(&keys[0], 8000);
    server(&keys[sandboxes - 1], 8000 + per as u16 - 1);
    let first = SocketAddr::new("10.87.9.1".parse().unwrap(), 20000);
    let last = SocketAddr::new(
        "10.87.9.1".parse().unwrap(),
        (20000 + sandboxes * per - 1) as u16,
    );
    // Warm up both paths, then alternate.
    connects(&out, first, 20);
    connects(&out, last, 20);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        a.extend(connects(&out, first, n / 5));
        b.extend(connects(&out, last, n / 5));
    }
    println!(
        "  connection setup + one echo from outside: first port {} median ({} p99), port {} {} median ({} p99)",
        us(pct(&a, 0.5)),
        us(pct(&a, 0.99)),
        sandboxes * per,
        us(pct(&b, 0.5)),
        us(pct(&b, 0.99)),
    );
}

/// Time the kernel spent on firewall steps so far.
fn fw_time(e: &Engine) -> Duration {
    e.kernel()
        .time_by_kind()
        .into_iter()
        .find(|(k, _, _)| *k == "firewall")
        .map(|(_, d, _)| d)
        .unwrap_or_default()
}
