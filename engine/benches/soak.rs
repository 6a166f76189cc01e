//! Soak: connect/disconnect cycles through a running `weft daemon`'s Docker API, on a bridge
//! network and on a Wasm driver's (routed, with host-local IPAM), watching what a leak would
//! grow: the daemon's resident memory, its open descriptors and netlink sockets among them,
//! the store file's size, the host's links, and the latency of a cycle — at the end of a
//! warm-up and then at each tenth of the run.
//!
//! Run (root): `cargo bench --bench soak -- [--cycles 100000] [--wasm-cycles 10000]`
//! (defaults 2000 and 500: a short run).

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{http, ms, num_arg, pct, Daemon, Scratch};

struct Sample {
    cycles: usize,
    rss_kib: u64,
    fds: usize,
    netlink: usize,
    store_kib: u64,
    links: usize,
    p50: Duration,
    p99: Duration,
}

fn sample(pid: u32, s: &Scratch, cycles: usize, window: &[Duration]) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    // Netlink sockets: the daemon's socket inodes that /proc/PID/net/netlink lists.
    let nl = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
    let nl_inodes: std::collections::HashSet<&str> = nl
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let netlink = fds
        .iter()
        .filter_map(|f| f.strip_prefix("socket:[")?.strip_suffix(']'))
        .filter(|i| nl_inodes.contains(i))
        .count();
    let store_kib = walk_size(&s.dir.join("root")) / 1024;
    // The host's links, seen through the daemon's view of the network namespace.
    let links = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| t.lines().count().saturating_sub(2))
        .unwrap_or(0);
    Sample {
        cycles,
        rss_kib,
        fds: fds.len(),
        netlink,
        store_kib,
        links,
        p50: pct(window, 0.5),
        p99: pct(window, 0.99),
    }
}

fn walk_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        std::fs::read_dir(p)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| walk_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.len()
    }
}

fn soak(label: &str, network: &str, cycles: usize, s: &Scratch, d: &Daemon) {
    let docker = s.dir.join("run/docker.sock");
    let body = r#"{"Container":"soaker"}"#;
    let warm = (cycles / 10).max(100);
    let mut window = Vec::with_capacity(cycles / 10 + 1);
    let mut rows = Vec::new();
    let t = Instant::now();
    for i in 1..=warm + cycles {
        let c = Instant::now();
        for verb in ["connect", "disconnect"] {
            let (st, out) = http(
                &docker,
                "POST",
                &format!("/v1.50/networks/{network}/{verb}"),
                Some(body),
            );
            assert_eq!(st, 200, "{verb} on {network}, cycle {i}: {out}");
        }
        window.push(c.elapsed());
        if i == warm || (i > warm && (i - warm) % (cycles / 10).max(1) == 0) {
            rows.push(sample(d.pid(), s, i - warm, &window));
            window.clear();
        }
    }
    let took = t.elapsed();
    println!(
        "\n{label}: {cycles} connect+disconnect cycles after {warm} to warm up, {:.1} s ({:.2} ms a cycle)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / (warm + cycles) as f64
    );
    println!(
        "{:>8} {:>9} {:>5} {:>8} {:>10} {:>6} {:>10} {:>10}",
        "cycles", "RSS KiB", "fds", "netlink", "store KiB", "links", "p50", "p99"
    );
    for r in &rows {
        println!(
            "{:>8} {:>9} {:>5} {:>8} {:>10} {:>6} {:>10} {:>10}",
            r.cycles,
            r.rss_kib,
            r.fds,
            r.netlink,
            r.store_kib,
            r.links,
            ms(r.p50),
            ms(r.p99)
        );
    }
    let (a, b) = (&rows[0], rows.last().unwrap());
    println!(
        "growth after warm-up: RSS {:+} KiB, fds {:+}, netlink {:+}, store {:+} KiB, links {:+}, p50 {:.2}x",
        b.rss_kib as i64 - a.rss_kib as i64,
        b.fds as i64 - a.fds as i64,
        b.netlink as i64 - a.netlink as i64,
        b.store_kib as i64 - a.store_kib as i64,
        b.links as i64 - a.links as i64,
        b.p50.as_secs_f64() / a.p50.as_secs_f64().max(1e-9)
    );
}

fn main() {
    let cycles: usize = num_arg("--cycles", 2000);
    let wasm_cycles: usize = num_arg("--wasm-cycles", 500);
    let s = Scratch::new("soak");
    let host = s.ns("host");
    // The guests, built (or found built) by the project's script, which prints where.
    let guests = {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out = std::process::Command::new(repo.join("scripts/build-guests.sh"))
            .output()
            .expect("build guests");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    let wasm = wasm_cycles > 0;
    if wasm {
        for (f, n) in [("routed", "routed"), ("host_local", "host-local")] {
            let file = guests.join(format!("weft_plugin_{f}.wasm"));
            assert!(
                file.exists(),
                "{} is missing (or give --wasm-cycles 0)",
                file.display()
            );
            let o = s
                .weft(
                    &host,
                    &[
                        "plugin",
                        "install",
                        file.to_str().unwrap(),
                        "--name",
                        n,
                        "--grant-requested",
                    ],
                )
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let d = Daemon::start(&s, &host);
    let docker = s.dir.join("run/docker.sock");
    for body in [
        r#"{"Name":"home","IPAM":{"Config":[{"Subnet":"10.97.0.0/24"}]}}"#,
        r#"{"Name":"soak","IPAM":{"Config":[{"Subnet":"10.97.1.0/24"}]}}"#,
    ] {
        let (st, out) = http(&docker, "POST", "/v1.50/networks/create", Some(body));
        assert_eq!(st, 201, "{out}");
    }
    if wasm {
        let (st, out) = http(
            &docker,
            "POST",
            "/v1.50/networks/create",
            Some(
                r#"{"Name":"soakw","Driver":"routed","IPAM":{"Driver":"host-local","Config":[{"Subnet":"10.97.2.0/24"}]}}"#,
            ),
        );
        assert_eq!(st, 201, "{out}");
    }
    let o = s
        .weft(&host, &["sandbox", "create", "--network", "home", "soaker"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    soak("bridge network", "soak", cycles, &s, &d);
    if wasm {
        soak(
            "Wasm driver (routed + host-local)",
            "soakw",
            wasm_cycles,
            &s,
            &d,
        );
    }
    drop(d);
    let _ = s.weft(&host, &["system", "reset", "--force"]).output();
}
