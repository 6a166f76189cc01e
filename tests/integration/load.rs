//! Many writers at once through the daemon (issue 16): weft CLI processes and Docker API
//! clients, mixed operations on several networks (a Wasm driver's among them), published
//! ports, ICC off, and networks removed while others connect to them. Afterwards: no address
//! held twice on a network, no host port published twice, no failure but Docker's own
//! refusals, and `system check` finds records and kernel agreeing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

/// What a writer may be refused with: Docker's own answers to a race it lost.
const REFUSALS: &[&str] = &[
    "port is already allocated",
    "already exists",
    "is not connected",
    "not found",
    "No such",
    "has active endpoints",
    "already attached",
    "endpoint with name",
];

fn refusal(err: &str) -> bool {
    REFUSALS.iter().any(|r| err.contains(r))
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn delete(path: &str) -> Vec<u8> {
    format!("DELETE {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// A small deterministic generator (each writer its own stream: a failure reruns the same).
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn many_cli_and_api_writers_leave_no_duplicate_and_nothing_half_done() {
    let h = Arc::new(TestHost::new("load"));
    for n in ["routed", "host-local"] {
        h.install_plugin(n, n, &["--grant-requested"]);
    }
    let d = Arc::new(h.daemon());
    let nets = ["l1", "l2", "l3", "lq", "lw"];
    h.weft_ok(&["network", "create", "--subnet", "10.81.0.0/24", "l1"]);
    h.weft_ok(&["network", "create", "--subnet", "10.81.1.0/24", "l2"]);
    h.weft_ok(&["network", "create", "--subnet", "10.81.2.0/24", "l3"]);
    h.weft_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "--subnet",
        "10.81.3.0/24",
        "lq",
    ]);
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "routed",
        "--ipam-driver",
        "host-local",
        "--subnet",
        "10.81.4.0/24",
        "lw",
    ]);
    // The API clients' sandboxes (the Docker API connects containers that exist).
    const API: usize = 50;
    const CLI: usize = 10;
    const OPS: usize = 50;
    h.weft_ok(&["network", "create", "--subnet", "10.81.8.0/22", "home"]);
    for c in 0..API {
        h.weft_ok(&["sandbox", "create", "--network", "home", &format!("api{c}")]);
    }
    let failures: Arc<Mutex<Vec<String>>> = Default::default();
    let refused: Arc<Mutex<BTreeMap<String, usize>>> = Default::default();
    let note = {
        let failures = failures.clone();
        let refused = refused.clone();
        move |what: String, err: String| {
            if refusal(&err) {
                let key = REFUSALS.iter().find(|r| err.contains(*r)).unwrap();
                *refused.lock().unwrap().entry(key.to_string()).or_default() += 1;
            } else {
                failures.lock().unwrap().push(format!("{what}: {err}"));
            }
        }
    };
    // Who held which host port when: from the create's return to the removal's start.
    type Held = Vec<(u16, Instant, Instant, String)>;
    let held: Arc<Mutex<Held>> = Default::default();
    // While the writers run, the records are read every few milliseconds: no address may be
    // held twice on a network at any moment.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (h, done) = (h.clone(), done.clone());
        std::thread::spawn(move || {
            let e = h.engine();
            let mut samples = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for n in e.networks(&Default::default()).unwrap() {
                    let mut seen = BTreeSet::new();
                    for ep in e.network_endpoints(&n.id).unwrap_or_default() {
                        for ip in [ep.ipv4.map(|a| a.ip()), ep.ipv6.map(|a| a.ip())]
                            .into_iter()
                            .flatten()
                        {
                            assert!(seen.insert(ip), "{ip} held twice on {}", n.name);
                        }
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        })
    };
    let t = Instant::now();
    let mut threads = Vec::new();
    // CLI writers: sandboxes made on a network, some publishing ports from a small shared
    // range (so they collide), connected to a second network, disconnected, removed.
    for w in 0..CLI {
        let (h, note, held) = (h.clone(), note.clone(), held.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
            for k in 0..OPS / 5 {
                let name = format!("c{w}x{k}");
                let net = nets[rng.next(nets.len() as u64) as usize];
                let mut args = vec!["sandbox", "create", "--network", net];
                let port = (net != "lw" && rng.next(2) == 0).then(|| 18000 + rng.next(20) as u16);
                let publish = port.map(|p| format!("{p}:80"));
                if let Some(p) = &publish {
                    args.extend(["-p", p]);
                }
                args.push(&name);
                let o = h.weft(&args);
                if !o.status.success() {
                    note(
                        format!("{args:?}"),
                        String::from_utf8_lossy(&o.stderr).into(),
                    );
                    continue;
                }
                let since = Instant::now();
                let other = nets[rng.next(nets.len() as u64) as usize];
                for args in [
                    vec!["network", "connect", other, &name],
                    vec!["network", "disconnect", other, &name],
                    vec!["network", "connect", other, &name],
                    vec!["sandbox", "rm", &name],
                ] {
                    if args[0] == "sandbox" {
                        if let Some(p) = port {
                            held.lock()
                                .unwrap()
                                .push((p, since, Instant::now(), name.clone()));
                        }
                    }
                    let o = h.weft(&args);
                    if !o.status.success() {
                        note(
                            format!("{args:?}"),
                            String::from_utf8_lossy(&o.stderr).into(),
                        );
                    }
                }
            }
        }));
    }
    // API clients: connect and disconnect their sandbox on the bridge networks.
    for c in 0..API {
        let (d, note) = (d.clone(), note.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (c as u64 + 1));
            let sb = format!("api{c}");
            for _ in 0..OPS / 2 {
                let net = ["l1", "l2", "l3", "lq"][rng.next(4) as usize];
                for verb in ["connect", "disconnect"] {
                    let (code, _, body) = d.http(&post(
                        &format!("/v1.50/networks/{net}/{verb}"),
                        &format!(r#"{{"Container":"{sb}"}}"#),
                    ));
                    if code != 200 {
                        note(format!("API {verb} {sb} {net} ({code})"), body);
                    }
                }
            }
        }));
    }
    // A network removed while others connect to it: either the removal wins (the connects
    // are refused: no such network) or it is refused (active endpoints) — never half.
    {
        let (h, d, note) = (h.clone(), d.clone(), note.clone());
        threads.push(std::thread::spawn(move || {
            for k in 0..10 {
                let net = format!("tmp{k}");
                h.weft_ok(&[
                    "network",
                    "create",
                    "--subnet",
                    &format!("10.82.{k}.0/24"),
                    &net,
                ]);
                let racer = {
                    let (d, net, note) = (d.clone(), net.clone(), note.clone());
                    std::thread::spawn(move || {
                        for i in 0..5 {
                            let sb = format!("api{}", (k * 5 + i) % API);
                            let (code, _, body) = d.http(&post(
                                &format!("/v1.50/networks/{net}/connect"),
                                &format!(r#"{{"Container":"{sb}"}}"#),
                            ));
                            if code == 200 {
                                let (code, _, body) = d.http(&post(
                                    &format!("/v1.50/networks/{net}/disconnect"),
                                    &format!(r#"{{"Container":"{sb}"}}"#),
                                ));
                                if code != 200 {
                                    note(format!("API disconnect {sb} {net} ({code})"), body);
                                }
                            } else {
                                note(format!("API connect {sb} {net} ({code})"), body);
                            }
                        }
                    })
                };
                loop {
                    let (code, _, body) = d.http(&delete(&format!("/v1.50/networks/{net}")));
                    match code {
                        204 => break,
                        _ if refusal(&body) => {
                            note(format!("API rm {net}"), body);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        _ => {
                            note(format!("API rm {net} ({code})"), body);
                            break;
                        }
                    }
                }
                racer.join().unwrap();
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let took = t.elapsed();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures other than Docker's refusals:\n{}\n--- daemon log ---\n{}",
        failures.len(),
        failures.join("\n"),
        d.log_text()
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler
        .join()
        .expect("an address was held twice (see above)");
    // No host port held by two sandboxes at once.
    let held = held.lock().unwrap().clone();
    for (i, a) in held.iter().enumerate() {
        for b in &held[i + 1..] {
            assert!(
                a.0 != b.0 || a.2 <= b.1 || b.2 <= a.1,
                "host port {} published by {} and {} at once",
                a.0,
                a.3,
                b.3
            );
        }
    }
    assert!(
        !held.is_empty(),
        "no sandbox published a port: the check above saw nothing"
    );
    let e = h.engine();
    h.weft_ok(&["system", "check"]);
    let cli_left: Vec<String> = e
        .sandboxes()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with('c'))
        .collect();
    assert!(cli_left.is_empty(), "{cli_left:?}");
    eprintln!(
        "{} CLI ops, {} API ops and 10 racing removals in {took:?} ({samples} samples, {} \
         ports held); refused: {:?}",
        CLI * OPS,
        API * OPS,
        held.len(),
        refused.lock().unwrap()
    );
}

/// The daemon killed with SIGKILL 20 times, at random moments while CLI writers run through
/// it: after each restart the daemon serves again within a second and `system check` finds
/// records and kernel agreeing (every operation completed or left no trace).
#[test]
fn the_daemon_killed_under_load_twenty_times_leaves_nothing_half_done() {
    let h = Arc::new(TestHost::new("kill9"));
    h.weft_ok(&["network", "create", "--subnet", "10.83.0.0/24", "k1"]);
    h.weft_ok(&["network", "create", "--subnet", "10.83.1.0/24", "k2"]);
    h.weft_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "--subnet",
        "10.83.2.0/24",
        "k3",
    ]);
    for c in 0..6 {
        h.weft_ok(&["sandbox", "create", "--network", "k1", &format!("api{c}")]);
    }
    let mut rng = Rng(0x51_7cc1_b727_220a);
    let mut d = h.daemon();
    let sock = d.sock.clone();
    let mut worst = Duration::ZERO;
    let mut ops = 0;
    let mut interrupted = 0;
    // Twenty kills, and more (up to 60) until one has landed inside an operation.
    let mut round = 0;
    while round < 20 || (interrupted == 0 && round < 60) {
        round += 1;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Operations answered in this round: the kill waits for the daemon to be busy (on a
        // loaded machine a fixed wait can end before the first operation arrives).
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (h, stop, done) = (h.clone(), stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng(0x9e37_79b9 ^ ((round * 4 + w) as u64 + 1));
                    let mut n = 0;
                    let nets = ["k1", "k2", "k3"];
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let name = format!("r{round}w{w}x{n}");
                        let net = nets[rng.next(3) as usize];
                        let other = nets[rng.next(3) as usize];
                        let port = format!("{}:80", 19000 + round * 100 + w * 20 + n);
                        let mut create = vec!["sandbox", "create", "--network", net];
                        if rng.next(2) == 0 {
                            create.extend(["-p", &port]);
                        }
                        create.push(&name);
                        // Each may fail while the daemon dies under it: what it leaves is
                        // checked after the restart.
                        for args in [
                            create,
                            vec!["network", "connect", other, &name],
                            vec!["network", "disconnect", other, &name],
                            vec!["sandbox", "rm", &name],
                        ] {
                            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                            let _ = h.weft_env(&args, &[("WEFT_CLIENT_TIMEOUT", "10")]);
                            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        // And Docker API clients connecting and disconnecting: the daemon is rarely idle.
        let api: Vec<_> = (0..6)
            .map(|c| {
                let (sock, stop) = (sock.clone(), stop.clone());
                std::thread::spawn(move || {
                    let body = format!(r#"{{"Container":"api{c}"}}"#);
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        for verb in ["connect", "disconnect"] {
                            // The daemon may be gone (killed): then this client is done.
                            let req = post(&format!("/v1.50/networks/k2/{verb}"), &body);
                            if http_on(&sock, &req).is_none() {
                                return n;
                            }
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        let t = Instant::now();
        while done.load(std::sync::atomic::Ordering::SeqCst) < 4
            && t.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.next(150)));
        d.kill();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in writers.into_iter().chain(api) {
            ops += w.join().unwrap();
        }
        let t = Instant::now();
        d = h.daemon();
        h.weft_ok(&["network", "ls"]);
        let up = t.elapsed();
        worst = worst.max(up);
        assert!(
            up < Duration::from_secs(1),
            "round {round}: the daemon served again after {up:?}: {}",
            d.log_text()
        );
        // Did the kill land inside an operation? (Its journal is settled at the restart.)
        let log = d.log_text();
        if log.contains("an operation a crash interrupted") {
            interrupted += 1;
        }
        let o = h.weft(&["system", "check"]);
        assert!(
            o.status.success(),
            "round {round}: {}{}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            d.log_text()
        );
    }
    // Everything left can be removed, and then nothing of the sandboxes is left.
    for sb in h.engine().sandboxes().unwrap() {
        h.weft_ok(&["sandbox", "rm", "-f", &sb.name]);
    }
    h.weft_ok(&["system", "check"]);
    let left: Vec<String> = h
        .host_links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Control: the kills did land inside operations (else this test proved nothing).
    assert!(
        interrupted > 0,
        "no kill landed inside an operation in {round} rounds"
    );
    eprintln!(
        "{round} SIGKILLs under {ops} operations, {interrupted} inside one; serving again \
         within {worst:?} at worst"
    );
}

/// Kernel steps failing at random (5 %, half before the change, half after) while CLI and API
/// writers work through the daemon: each operation fails whole or succeeds whole — after the
/// run, with the faults off, `system check` finds records and kernel agreeing, no address is
/// held twice, and everything can be removed leaving nothing behind.
#[test]
fn random_kernel_failures_under_load_leave_nothing_half_done() {
    let h = Arc::new(TestHost::new("rndfail"));
    h.weft_ok(&["network", "create", "--subnet", "10.84.0.0/24", "f1"]);
    h.weft_ok(&["network", "create", "--subnet", "10.84.1.0/24", "f2"]);
    h.weft_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "--subnet",
        "10.84.2.0/24",
        "f3",
    ]);
    for c in 0..6 {
        h.weft_ok(&["sandbox", "create", "--network", "f1", &format!("api{c}")]);
    }
    let d = Arc::new(h.daemon_env(&[("WEFT_FAILPOINT", "random:0.05")]));
    let failures: Arc<Mutex<Vec<String>>> = Default::default();
    let injected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let judge = {
        let (failures, injected) = (failures.clone(), injected.clone());
        move |what: String, err: String| {
            if err.contains("injected random failure") {
                injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else if !refusal(&err) {
                failures.lock().unwrap().push(format!("{what}: {err}"));
            }
        }
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..4 {
        let (h, stop, judge) = (h.clone(), stop.clone(), judge.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x7f4a_7c15 ^ (w as u64 + 1));
            let nets = ["f1", "f2", "f3"];
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let name = format!("w{w}x{n}");
                n += 1;
                let net = nets[rng.next(3) as usize];
                let other = nets[rng.next(3) as usize];
                let port = format!("{}:80", 20000 + w * 1000 + n);
                let mut create = vec!["sandbox", "create", "--network", net];
                if rng.next(2) == 0 {
                    create.extend(["-p", &port]);
                }
                create.push(&name);
                for args in [
                    create,
                    vec!["network", "connect", other, &name],
                    vec!["network", "disconnect", other, &name],
                    vec!["sandbox", "rm", &name],
                ] {
                    let o = h.weft(&args);
                    if !o.status.success() {
                        judge(
                            format!("{args:?}"),
                            String::from_utf8_lossy(&o.stderr).into(),
                        );
                    }
                }
            }
        }));
    }
    for c in 0..6 {
        let (d, stop, judge) = (d.clone(), stop.clone(), judge.clone());
        threads.push(std::thread::spawn(move || {
            let body = format!(r#"{{"Container":"api{c}"}}"#);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for verb in ["connect", "disconnect"] {
                    let (code, _, out) =
                        d.http(&post(&format!("/v1.50/networks/f2/{verb}"), &body));
                    if code != 200 {
                        judge(format!("API {verb} api{c} ({code})"), out);
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let log = d.log_text();
    drop(d);
    assert!(
        failures.is_empty(),
        "{} failures other than the injected ones and Docker's refusals:\n{}\n--- daemon log ---\n{log}",
        failures.len(),
        failures.join("\n"),
    );
    let injected = injected.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        injected > 0,
        "no failure was injected: the run proved nothing"
    );
    // With the faults off: records and kernel agree, and everything can go.
    let d = h.daemon();
    let o = h.weft(&["system", "check"]);
    assert!(
        o.status.success(),
        "{}{}\n--- daemon log (faults on) ---\n{log}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    for sb in h.engine().sandboxes().unwrap() {
        h.weft_ok(&["sandbox", "rm", "-f", &sb.name]);
    }
    h.weft_ok(&["system", "check"]);
    let left: Vec<String> = h
        .host_links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    assert!(left.is_empty(), "{left:?}: {}", d.log_text());
    eprintln!("{injected} operations failed by an injected kernel fault; nothing half done");
}

/// The store's disk fills (its root on a 3 MiB tmpfs) while writers make sandboxes: the
/// operation that cannot commit fails saying so and leaves nothing in the kernel; the others
/// are whole; with room again everything works and `system check` is clean.
#[test]
fn a_full_store_disk_fails_operations_whole_and_weft_goes_on_when_there_is_room() {
    let h = TestHost::new("diskfull");
    // A host of its own (the test host's engine keeps its own state and nftables table).
    let host = h.dir.join("host2.ns");
    h.block_on(async { weft::net::ns::create_pinned(&host, || ()).unwrap() });
    let small = h.dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &small,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=3m"),
    )
    .expect("mount a small tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(small.clone());
    let cfg = weft::Config {
        root: small.join("root"),
        run_root: h.dir.join("run2"),
        host_netns: Some(host.clone()),
        ..Default::default()
    };
    let links = || -> Vec<String> {
        let o = run_ok(&host, "ip", &["-o", "link", "show"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("veth"))
            .collect()
    };
    h.block_on(async {
        let e = weft::Engine::open(cfg.clone()).await.expect("open on the small disk");
        e.create_network(weft::model::NetworkCreate {
            name: "n".into(),
            ipam_config: vec![weft::model::IpamConfigRequest {
                subnet: Some("10.85.0.0/16".parse().unwrap()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        // Four writers at once until the disk refuses a commit.
        let full = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (e, full) = (e.clone(), full.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..2000 {
                    let r = e
                        .create_sandbox(weft::model::SandboxCreate {
                            name: format!("w{w}x{k}"),
                            network: Some("n".into()),
                            ..Default::default()
                        })
                        .await;
                    if let Err(err) = r {
                        full.lock().unwrap().push(err.to_string());
                        return k;
                    }
                }
                2000
            }));
        }
        let mut made = 0;
        for t in tasks {
            made += t.await.unwrap();
        }
        let errs = full.lock().unwrap().clone();
        assert!(!errs.is_empty(), "the disk never filled ({made} sandboxes)");
        for err in &errs {
            assert!(
                err.contains("No space left on device"),
                "a full disk should say so: {err}"
            );
        }
        // What failed left nothing: the kernel holds exactly the recorded sandboxes' links.
        let recorded = e.sandboxes().unwrap().len();
        assert_eq!(links().len(), recorded, "a failed create left a veth");
        assert!(e.check().await.unwrap().is_empty());
        // Room again: weft goes on, and everything can be removed.
        nix::mount::mount(
            Some("tmpfs"),
            &small,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_REMOUNT,
            Some("size=256m"),
        )
        .unwrap();
        e.create_sandbox(weft::model::SandboxCreate {
            name: "after".into(),
            network: Some("n".into()),
            ..Default::default()
        })
        .await
        .expect("a create with room again");
        let names: Vec<String> = e.sandboxes().unwrap().into_iter().map(|s| s.name).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        e.remove_sandboxes(&refs, false).await.unwrap();
        e.remove_network("n").await.unwrap();
        assert!(e.check().await.unwrap().is_empty());
        assert!(links().is_empty());
        eprintln!(
            "{made} sandboxes made before the 3 MiB disk filled; {} creates refused, none half done",
            errs.len()
        );
        e.reset().await.ok();
    });
}

/// A plugin that hangs (a driver spinning in join until its deadline) while writers work on
/// other networks through the daemon: the hung calls are cut at the deadline and leave
/// nothing, the writers' operations all complete, the daemon answers within a second
/// throughout, and `system check` is clean.
#[test]
fn a_hanging_plugin_under_load_is_cut_and_holds_up_no_one() {
    let h = Arc::new(TestHost::new("hangload"));
    h.install_plugin(
        "hostile",
        "hostile-driver",
        &[
            "--grant",
            "link-prefix=hx",
            "--grant",
            "deadline=600ms",
            "--grant",
            "memory=32M",
        ],
    );
    let d = Arc::new(h.daemon());
    h.weft_ok(&[
        "network",
        "create",
        "-d",
        "hostile",
        "--subnet",
        "10.86.9.0/24",
        "-o",
        "hostile=loop-join",
        "stuck",
    ]);
    h.weft_ok(&["network", "create", "--subnet", "10.86.0.0/24", "h1"]);
    h.weft_ok(&["network", "create", "--subnet", "10.86.1.0/24", "h2"]);
    for c in 0..4 {
        h.weft_ok(&["sandbox", "create", "--network", "h1", &format!("api{c}")]);
    }
    let before = h.host_links();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Default::default();
    let mut threads = Vec::new();
    // The hung calls: sandboxes on the plugin's network, three at a time, again and again.
    let cut = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for k in 0..3 {
        let (h, stop, cut, failures) = (h.clone(), stop.clone(), cut.clone(), failures.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let o = h.weft(&[
                    "sandbox",
                    "create",
                    "--network",
                    "stuck",
                    &format!("s{k}x{n}"),
                ]);
                n += 1;
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                if !o.status.success() && err.contains("ran past its deadline") {
                    cut.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("the hung create: {err}"));
                }
            }
        }));
    }
    // Writers on the other networks.
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for w in 0..3 {
        let (h, stop, done, failures) = (h.clone(), stop.clone(), done.clone(), failures.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let name = format!("w{w}x{n}");
                n += 1;
                for args in [
                    vec!["sandbox", "create", "--network", "h1", &name],
                    vec!["network", "connect", "h2", &name],
                    vec!["sandbox", "rm", &name],
                ] {
                    let o = h.weft(&args);
                    if o.status.success() {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{args:?}: {}", String::from_utf8_lossy(&o.stderr)));
                    }
                }
            }
        }));
    }
    for c in 0..4 {
        let (d, stop, done, failures) = (d.clone(), stop.clone(), done.clone(), failures.clone());
        threads.push(std::thread::spawn(move || {
            let body = format!(r#"{{"Container":"api{c}"}}"#);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for verb in ["connect", "disconnect"] {
                    let (code, _, out) =
                        d.http(&post(&format!("/v1.50/networks/h2/{verb}"), &body));
                    if code == 200 {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("API {verb} api{c}: {out}"));
                    }
                }
            }
        }));
    }
    // The daemon answers within a second all along.
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        let q = Instant::now();
        h.weft_ok(&["network", "ls"]);
        slowest = slowest.max(q.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{}\n--- daemon log ---\n{}",
        failures.join("\n"),
        d.log_text()
    );
    let (cut, done) = (
        cut.load(std::sync::atomic::Ordering::SeqCst),
        done.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert!(
        cut >= 3,
        "only {cut} hung calls were cut: the plugin did not hang"
    );
    assert!(
        done >= 30,
        "only {done} operations of the writers completed during the hang"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "the daemon answered after {slowest:?}"
    );
    h.weft_ok(&["system", "check"]);
    assert_eq!(h.host_links(), before, "the hung calls left links");
    eprintln!(
        "{cut} hung plugin calls cut while {done} other operations completed; the daemon \
         answered within {slowest:?}"
    );
}
