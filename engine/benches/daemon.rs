//! Many at once: what a long-lived engine does with concurrent clients.
//!
//! 1. Group commit, in-process: 1, 8 and 32 concurrent clients attach namespaces (given
//!    netns), each client to its own network (operations on one network serialize on its
//!    lock; across networks they run together and their store commits are grouped) and, as a
//!    second series, all to one network. Reported: attach latency (median, p99), throughput,
//!    and durable commits per attach.
//! 2. The daemon: 50 concurrent API clients (HTTP on weft's socket, no process per call) each
//!    create 20 sandboxes on one network, then all read their addresses back through the
//!    Docker API, then remove them. Reported: failures, duplicate addresses, throughput and
//!    p99 of create and of remove. dockerd 20.10 is run the same way where it is installed.
//! 3. Between them, a `system check` of 1 000 sandboxes: what the daemon's healer holds the
//!    engine for after a change to weft's objects that names nothing precise; and its check of
//!    what a change named (one sandbox's veth), under that network's and sandbox's locks.
//!
//! Run (root): `cargo bench --bench daemon -- [--total 256] [--check 1000] [--clients 50] [--per 20]`
//! (`--check-only`: section 3 alone)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod common;

use common::{http, in_ns_cmd, ip, ms, num_arg, pct, Daemon, Scratch};
use weft::model::{NetworkCreate, SandboxCreate};
use weft::Engine;

/// A runtime with two workers (the cores of the machine the README's numbers are from).
fn two_threads() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `clients` tasks attach `total` namespaces; `one_network`: all on one network.
fn group_commit(clients: usize, total: usize, one_network: bool) {
    let s = Scratch::new(&format!(
        "gc{clients}{}",
        if one_network { "one" } else { "" }
    ));
    let host = s.ns("host");
    let per = total / clients;
    let sbs: Vec<PathBuf> = (0..per * clients).map(|i| s.ns(&format!("c{i}"))).collect();
    let rt = two_threads();
    rt.block_on(async {
        let e = Engine::open(s.config(&host)).await.unwrap();
        let store = e.store().clone();
        let nets = if one_network { 1 } else { clients };
        for n in 0..nets {
            e.create_network(NetworkCreate {
                name: format!("n{n}"),
                // Docker's default pools are 31: more networks than that need a subnet.
                ipam_config: vec![weft::model::IpamConfigRequest {
                    subnet: Some(format!("10.{}.0.0/16", 100 + n).parse().unwrap()),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let (c0, _) = store.commit_counts();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..clients {
            let e = e.clone();
            let sbs = sbs.clone();
            let net = if one_network { 0 } else { k };
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for j in 0..per {
                    let i = k * per + j;
                    let t = Instant::now();
                    e.create_sandbox(SandboxCreate {
                        name: format!("c{i}"),
                        network: Some(format!("n{net}")),
                        netns: Some(sbs[i].clone()),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let wall = started.elapsed();
        let (c1, _) = store.commit_counts();
        println!(
            "  {clients:>2} clients, {:<17} attach {} median, {} p99; {:>6.0} attaches/s; {:.2} durable commits per attach",
            if one_network { "one network:" } else { "own networks:" },
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            lat.len() as f64 / wall.as_secs_f64(),
            (c1 - c0) as f64 / lat.len() as f64,
        );
        let names: Vec<String> = (0..per * clients).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        e.remove_sandboxes(&refs, false).await.unwrap();
    });
}

/// A `weft sandbox …` command line through weft's socket; its exit code and stdout/stderr.
fn weft_cmd(sock: &Path, args: &[&str]) -> (i32, String) {
    let (st, body) = http(
        sock,
        "POST",
        "/weft/v1/run",
        Some(&serde_json::json!({ "args": args }).to_string()),
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        v["code"].as_i64().unwrap() as i32,
        format!(
            "{}{}",
            v["stdout"].as_str().unwrap(),
            v["stderr"].as_str().unwrap()
        ),
    )
}

fn daemon_clients(clients: usize, per: usize) {
    let s = Scratch::new("api");
    let host = s.ns("host");
    let daemon = Daemon::start(&s, &host);
    let sock = s.dir.join("run/weft.sock");
    let docker = s.dir.join("run/docker.sock");
    let (st, body) = http(
        &docker,
        "POST",
        "/v1.50/networks/create",
        Some(r#"{"Name":"bench","IPAM":{"Config":[{"Subnet":"10.99.0.0/16"}]}}"#),
    );
    assert_eq!(st, 201, "{body}");
    let barrier = Arc::new(std::sync::Barrier::new(clients));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let sock = sock.clone();
            let docker = docker.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut create = Vec::new();
                let mut failures = Vec::new();
                let mut made = Vec::new();
                for j in 0..per {
                    let name = format!("c{k}-{j}");
                    let t = Instant::now();
                    let (code, out) =
                        weft_cmd(&sock, &["sandbox", "create", "--network", "bench", &name]);
                    create.push(t.elapsed());
                    if code == 0 {
                        made.push(name);
                    } else {
                        failures.push(out);
                    }
                }
                let created_at = Instant::now();
                barrier.wait();
                let mut ips = Vec::new();
                for n in &made {
                    let (st, body) =
                        http(&docker, "GET", &format!("/v1.50/containers/{n}/json"), None);
                    assert_eq!(st, 200, "{body}");
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    ips.push(
                        v["NetworkSettings"]["Networks"]["bench"]["IPAddress"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    );
                }
                let mut remove = Vec::new();
                for n in &made {
                    let t = Instant::now();
                    let (code, out) = weft_cmd(&sock, &["sandbox", "rm", n]);
                    remove.push(t.elapsed());
                    if code != 0 {
                        failures.push(out);
                    }
                }
                (create, remove, failures, ips, created_at)
            })
        })
        .collect();
    let (mut create, mut remove, mut failures, mut ips) = (vec![], vec![], vec![], vec![]);
    let mut last_created = started;
    for t in threads {
        let (c, r, f, i, at) = t.join().unwrap();
        create.extend(c);
        remove.extend(r);
        failures.extend(f);
        ips.extend(i);
        last_created = last_created.max(at);
    }
    let wall = started.elapsed();
    let n_ips = ips.len();
    ips.sort();
    ips.dedup();
    let dups = n_ips - ips.len();
    let create_wall = last_created - started;
    println!(
        "  weft daemon, {clients} clients × {per} sandboxes on one network: {} failures, {dups} duplicate addresses of {n_ips}",
        failures.len()
    );
    println!(
        "    create {} median, {} p99, {:.0} creates/s; remove {} median, {} p99; all {} ops in {:.1} s ({:.0} ops/s)",
        ms(pct(&create, 0.5)),
        ms(pct(&create, 0.99)),
        create.len() as f64 / create_wall.as_secs_f64(),
        ms(pct(&remove, 0.5)),
        ms(pct(&remove, 0.99)),
        create.len() + remove.len(),
        wall.as_secs_f64(),
        (create.len() + remove.len()) as f64 / wall.as_secs_f64()
    );
    for f in failures.iter().take(3) {
        println!("    failure: {}", f.trim());
    }
    drop(daemon);
    let check = s.weft(&host, &["system", "check"]).output().unwrap();
    println!(
        "    afterwards: {}",
        String::from_utf8_lossy(&check.stdout).trim()
    );
}

/// What a `system check` of `n` sandboxes on one network costs: the healer holds the engine
/// exclusively while it runs, so every operation asked for meanwhile waits this long.
fn check_cost(n: usize) {
    let s = Scratch::new("check");
    let host = s.ns("host");
    let rt = two_threads();
    rt.block_on(async {
        let e = Engine::open(s.config(&host)).await.unwrap();
        e.create_network(NetworkCreate {
            name: "n".into(),
            ipam_config: vec![weft::model::IpamConfigRequest {
                subnet: Some("10.98.0.0/16".parse().unwrap()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        // Made the way the daemon makes them: weft's own namespaces.
        let mut tasks = Vec::new();
        for k in 0..8 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                for i in (k..n).step_by(8) {
                    e.create_sandbox(SandboxCreate {
                        name: format!("c{i}"),
                        network: Some("n".into()),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut lat = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let found = e.check().await.unwrap();
            lat.push(t.elapsed());
            assert!(found.is_empty(), "{found:?}");
        }
        println!(
            "  system check of {n} sandboxes on one network: {} median of 3 ({} min), {:.0} µs a sandbox",
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.0)),
            pct(&lat, 0.5).as_secs_f64() * 1e6 / n as f64
        );
        // What the healer does after a change that names a link (a sandbox's veth): the
        // records that own it, checked under their network's and sandbox's locks only.
        let out = in_ns_cmd(&host, "ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let veths: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("veth"))
            .collect();
        assert!(veths.len() >= 30.min(n), "{veths:?}");
        let scope = |v: &str| {
            let mut s = weft::engine::HealScope::default();
            s.add(&weft::net::watch::Change::Link(Some(v.to_string())));
            s
        };
        let (mut clean, mut mended) = (Vec::new(), Vec::new());
        for (i, v) in veths.iter().take(30).enumerate() {
            let cut = i >= 20;
            if cut {
                ip(&host, &["link", "del", v]);
            }
            let t = Instant::now();
            let h = e.heal(false, &scope(v)).await.unwrap().expect("locks free");
            let took = t.elapsed();
            assert_eq!(h.fixed.is_empty(), !cut, "{:?}", h.fixed);
            if cut { &mut mended } else { &mut clean }.push(took);
        }
        let found = e.check().await.unwrap();
        assert!(found.is_empty(), "{found:?}");
        println!(
            "  healer's check of one sandbox's veth among {n} (its network's and sandbox's locks): {} median of {} with nothing wrong, {} median of {} with the veth deleted and made again",
            ms(pct(&clean, 0.5)),
            clean.len(),
            ms(pct(&mended, 0.5)),
            mended.len()
        );
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        e.remove_sandboxes(&refs, false).await.unwrap();
    });
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes namespaces and links: run it as root"
    );
    if std::env::args().any(|a| a == "--check-only") {
        check_cost(num_arg("--check", 1000));
        return;
    }
    let total: usize = num_arg("--total", 256);
    println!(
        "Group commit: {total} attaches (given netns) by 1, 8 and 32 concurrent clients ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for clients in [1, 8, 32] {
        group_commit(clients, total, false);
    }
    for clients in [8, 32] {
        group_commit(clients, total, true);
    }
    println!("The healer's check (it holds the engine exclusively while it runs):");
    check_cost(num_arg("--check", 1000));
    println!("Concurrent API clients:");
    daemon_clients(num_arg("--clients", 50), num_arg("--per", 20));
    if Path::new("/usr/sbin/dockerd").exists() || Path::new("/usr/bin/dockerd").exists() {
        println!(
            "  dockerd is installed, but this benchmark does not drive it yet: no comparison row"
        );
    } else {
        println!("  dockerd 20.10 (Debian docker.io) is not installed here: no comparison row (apt-get install docker.io to add it)");
    }
}
