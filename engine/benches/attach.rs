//! Attach/detach benchmark: weft against netavark and the CNI bridge + host-local plugins,
//! in the same run, on the same kernel, each in a throwaway host namespace.
//!
//! For each N: N network namespaces are made first (not timed); then each tool attaches
//! every namespace to one bridge network with masquerade and isolation on (weft: its default
//! bridge; netavark: its iptables firewall; CNI: bridge with ipMasq), timing every attach, then
//! detaches them, timing every detach. weft is measured as a library (in-process, what an
//! embedding runtime gets) and as a CLI (one process per attach, like netavark and CNI).
//!
//! Run (root): `cargo bench --bench attach -- [--n 50,200,1000] [--peers-n 50,200] [--no-peers]`

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{ms, pct, Scratch};
use weft::model::{NetworkCreate, SandboxCreate};
use weft::{Config, Engine};

struct Stats {
    attach: Vec<Duration>,
    /// weft only: the part of each attach that is neither kernel work nor the store's fsync.
    own: Vec<Duration>,
    detach: Vec<Duration>,
    /// Detach of all N in one batched operation, per sandbox.
    batch_detach: Option<Duration>,
}

fn in_ns_cmd(ns: &Path, prog: &str) -> Command {
    let f = File::open(ns).unwrap();
    let mut c = Command::new(prog);
    unsafe {
        c.pre_exec(move || {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    c
}

fn run_stdin(mut c: Command, input: &str) {
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bench_weft_lib(n: usize) -> Stats {
    let s = Scratch::new("lib");
    let host = s.ns("host");
    let sbs: Vec<PathBuf> = (0..n).map(|i| s.ns(&format!("c{i}"))).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = Config {
            root: s.dir.join("root"),
            run_root: s.dir.join("run"),
            host_netns: Some(host.clone()),
        };
        let e = Engine::open(cfg).await.unwrap();
        e.create_network(NetworkCreate {
            name: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut attach = Vec::new();
        let mut own = Vec::new();
        for (i, p) in sbs.iter().enumerate() {
            let (k0, c0) = (e.kernel().time_in_kernel(), e.store().commit_time());
            let t = Instant::now();
            e.create_sandbox(SandboxCreate {
                name: format!("c{i}"),
                network: Some("bench".into()),
                netns: Some(p.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
            let total = t.elapsed();
            attach.push(total);
            own.push(total - (e.kernel().time_in_kernel() - k0) - (e.store().commit_time() - c0));
        }
        let mut detach = Vec::new();
        for i in 0..n / 2 {
            let t = Instant::now();
            e.remove_sandbox(&format!("c{i}"), false).await.unwrap();
            detach.push(t.elapsed());
        }
        // The other half in one batched operation.
        let rest: Vec<String> = (n / 2..n).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = rest.iter().map(String::as_str).collect();
        let t = Instant::now();
        e.remove_sandboxes(&refs, false).await.unwrap();
        let batch = t.elapsed() / rest.len().max(1) as u32;
        Stats {
            attach,
            own,
            detach,
            batch_detach: Some(batch),
        }
    })
}

/// Full sandbox lifecycle through the library: the namespace is made by weft too.
fn bench_weft_lib_full(n: usize) -> Stats {
    let s = Scratch::new("full");
    let host = s.ns("host");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = Config {
            root: s.dir.join("root"),
            run_root: s.dir.join("run"),
            host_netns: Some(host.clone()),
        };
        let e = Engine::open(cfg).await.unwrap();
        e.create_network(NetworkCreate {
            name: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut attach = Vec::new();
        let mut own = Vec::new();
        for i in 0..n {
            let (k0, c0) = (e.kernel().time_in_kernel(), e.store().commit_time());
            let t = Instant::now();
            e.create_sandbox(SandboxCreate {
                name: format!("c{i}"),
                network: Some("bench".into()),
                ..Default::default()
            })
            .await
            .unwrap();
            let total = t.elapsed();
            attach.push(total);
            own.push(total - (e.kernel().time_in_kernel() - k0) - (e.store().commit_time() - c0));
        }
        let mut detach = Vec::new();
        for i in 0..n {
            let t = Instant::now();
            e.remove_sandbox(&format!("c{i}"), false).await.unwrap();
            detach.push(t.elapsed());
        }
        Stats {
            attach,
            own,
            detach,
            batch_detach: None,
        }
    })
}

fn bench_weft_cli(n: usize) -> Stats {
    let s = Scratch::new("cli");
    let host = s.ns("host");
    let sbs: Vec<PathBuf> = (0..n).map(|i| s.ns(&format!("c{i}"))).collect();
    let weft = |args: &[&str]| {
        let mut c = in_ns_cmd(&host, env!("CARGO_BIN_EXE_weft"));
        c.arg("--root")
            .arg(s.dir.join("root"))
            .arg("--run-root")
            .arg(s.dir.join("run"))
            .args(args);
        c.stdout(Stdio::null());
        let st = c.status().unwrap();
        assert!(st.success());
    };
    weft(&["network", "create", "bench"]);
    let mut attach = Vec::new();
    for (i, p) in sbs.iter().enumerate() {
        let t = Instant::now();
        weft(&[
            "sandbox",
            "create",
            "--network",
            "bench",
            "--netns",
            p.to_str().unwrap(),
            &format!("c{i}"),
        ]);
        attach.push(t.elapsed());
    }
    let mut detach = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        weft(&["sandbox", "rm", &format!("c{i}")]);
        detach.push(t.elapsed());
    }
    Stats {
        attach,
        own: vec![],
        detach,
        batch_detach: None,
    }
}

fn netavark_opts(i: usize) -> String {
    format!(
        r#"{{"container_id":"{cid:064x}","container_name":"c{i}","networks":{{"bench":{{"static_ips":["10.89.{a}.{b}"],"interface_name":"eth0"}}}},"network_info":{{"bench":{{"name":"bench","id":"{nid:064x}","driver":"bridge","network_interface":"nvbr0","subnets":[{{"subnet":"10.89.0.0/16","gateway":"10.89.0.1"}}],"ipv6_enabled":false,"internal":false,"dns_enabled":false,"ipam_options":{{"driver":"host-local"}}}}}}}}"#,
        cid = i + 1,
        nid = 7,
        a = (i + 2) / 256,
        b = (i + 2) % 256,
    )
}

fn bench_netavark(n: usize) -> Stats {
    let s = Scratch::new("netavark");
    let host = s.ns("host");
    let sbs: Vec<PathBuf> = (0..n).map(|i| s.ns(&format!("c{i}"))).collect();
    let conf = s.dir.join("conf");
    let nv = |cmd: &str, ns: &Path, i: usize| {
        let mut c = in_ns_cmd(&host, "/usr/lib/podman/netavark");
        c.arg("--config").arg(&conf).arg(cmd).arg(ns);
        run_stdin(c, &netavark_opts(i));
    };
    let mut attach = Vec::new();
    for (i, p) in sbs.iter().enumerate() {
        let t = Instant::now();
        nv("setup", p, i);
        attach.push(t.elapsed());
    }
    let mut detach = Vec::new();
    for (i, p) in sbs.iter().enumerate() {
        let t = Instant::now();
        nv("teardown", p, i);
        detach.push(t.elapsed());
    }
    Stats {
        attach,
        own: vec![],
        detach,
        batch_detach: None,
    }
}

fn bench_cni(n: usize) -> Stats {
    let s = Scratch::new("cni");
    let host = s.ns("host");
    let sbs: Vec<PathBuf> = (0..n).map(|i| s.ns(&format!("c{i}"))).collect();
    let conf = format!(
        r#"{{"cniVersion":"0.4.0","name":"benchnet","type":"bridge","bridge":"cnibr0","isGateway":true,"ipMasq":true,"ipam":{{"type":"host-local","subnet":"10.22.0.0/16","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}"#,
        s.dir.join("cnidata").display()
    );
    let cni = |cmd: &str, ns: &Path, i: usize| {
        let mut c = in_ns_cmd(&host, "/usr/lib/cni/bridge");
        c.env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("c{i}"))
            .env("CNI_NETNS", ns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni");
        run_stdin(c, &conf);
    };
    let mut attach = Vec::new();
    for (i, p) in sbs.iter().enumerate() {
        let t = Instant::now();
        cni("ADD", p, i);
        attach.push(t.elapsed());
    }
    let mut detach = Vec::new();
    for (i, p) in sbs.iter().enumerate() {
        let t = Instant::now();
        cni("DEL", p, i);
        detach.push(t.elapsed());
    }
    Stats {
        attach,
        own: vec![],
        detach,
        batch_detach: None,
    }
}

fn print_row(name: &str, s: &Stats, base: Option<Duration>) {
    let a = pct(&s.attach, 0.5);
    let ratio = base
        .map(|b| format!("{:.1}×", a.as_secs_f64() / b.as_secs_f64()))
        .unwrap_or_else(|| "1.0×".into());
    println!(
        "  {:<30} attach median {:>9}  p90 {:>9}   detach median {:>9}{}   attach vs weft lib {}",
        name,
        ms(a),
        ms(pct(&s.attach, 0.9)),
        ms(pct(&s.detach, 0.5)),
        s.batch_detach
            .map(|b| format!("  (batched {})", ms(b)))
            .unwrap_or_default(),
        ratio
    );
    if !s.own.is_empty() {
        println!(
            "  {:<30} of which weft's own work (not kernel, not fsync): median {}",
            "",
            ms(pct(&s.own, 0.5))
        );
    }
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes namespaces and links: run it as root"
    );
    let args: Vec<String> = std::env::args().collect();
    let list = |flag: &str, default: &str| -> Vec<usize> {
        let v = args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
            .unwrap_or(default);
        v.split(',').filter_map(|x| x.parse().ok()).collect()
    };
    let ns = list("--n", "50,200,1000");
    let peers_n = list("--peers-n", "50,200");
    let peers = !args.iter().any(|a| a == "--no-peers");
    let have = |p: &str| Path::new(p).exists();
    println!(
        "weft attach/detach benchmark (per-sandbox times; {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for n in ns {
        println!("N = {n}");
        let lib = bench_weft_lib(n);
        let base = pct(&lib.attach, 0.5);
        print_row("weft library (given netns)", &lib, None);
        print_row(
            "weft library (own netns)",
            &bench_weft_lib_full(n),
            Some(base),
        );
        if peers_n.contains(&n) {
            print_row("weft CLI (process per op)", &bench_weft_cli(n), Some(base));
            if peers && have("/usr/lib/podman/netavark") {
                print_row("netavark 1.4 (iptables fw)", &bench_netavark(n), Some(base));
            } else if peers {
                println!("  netavark: not installed (apt-get install netavark)");
            }
            if peers && have("/usr/lib/cni/bridge") {
                print_row("CNI bridge+host-local (ipMasq)", &bench_cni(n), Some(base));
            } else if peers {
                println!(
                    "  CNI plugins: not installed (apt-get install containernetworking-plugins)"
                );
            }
        }
    }
}
