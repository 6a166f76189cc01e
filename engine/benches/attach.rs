//! Attach/detach benchmark: weft against netavark and the CNI plugins, in the same run, on
//! the same kernel, each in a throwaway host namespace, doing the same work.
//!
//! For each N: N network namespaces are made first (not timed); each tool then attaches every
//! namespace to one bridge network with masquerade and isolation from other networks on, timing
//! every attach, checks on a sample that attached namespaces reach their gateway, and detaches
//! them, timing every detach. Each tool warms up first (5 attach/detach cycles, not timed), and
//! the order of the tools is shuffled per N.
//!
//! - weft as a library (in-process, what an embedding runtime gets), attaching a namespace the
//!   runtime made (also on a network with ICC off: one nftables transaction more per attach),
//!   or making the namespace itself;
//! - weft as a CLI: one process per attach — compare *this* with netavark and CNI, which also
//!   run as a process per operation; through a daemon, also run as `weft-engine` (the whole
//!   engine binary) instead of the small `weft` front, to show what the front's start saves;
//! - netavark 1.4 (Debian, iptables firewall, `isolate`), netavark 2.1 (`cargo install
//!   --locked netavark --version 2.1.0`, with its nftables firewall and `isolate`, and with
//!   no firewall at all), where installed;
//! - CNI bridge + host-local with ipMasq, chained to the firewall plugin (Debian's
//!   containernetworking-plugins), where installed;
//! - weft through the other runtimes' doors, given the same input as the peer at that door:
//!   weft run as `netavark` (Podman's backend protocol, the same JSON netavark gets) and weft
//!   as a CNI plugin (the bridge plugin's config with `"type": "weft"`; weft's own firewall
//!   does what the chained firewall plugin does);
//! - with `--podman N`: `podman run --rm … true` end to end (Podman 4.3, its own state in a
//!   throwaway host namespace), N times with Debian's netavark 1.4 and with weft as netavark.
//!
//! Run (root): `cargo bench --bench attach -- [--n 200,1000] [--peers-n 200] [--no-peers]
//! [--netavark21 /opt/netavark21/bin/netavark] [--podman 20] [--only WORD[,WORD…]]
//! [--interleave] [--doors-daemon] [--run-tmpfs]` (`--doors-daemon`: weft's Podman and CNI doors with a
//! `weft daemon` running on their state; `--only`: just the rows whose name has one of the words, e.g. `--only
//! daemon,firewall`; `--interleave`: the tools that run a process per operation take turns,
//! attach by attach, instead of one after another — a drift of the machine's speed during the
//! run then hits them alike; `--run-tmpfs`: weft's run dir and netavark's config dir on a
//! tmpfs, as `/run` is on a systemd host — this VM's `/run` and `/tmp` are ext4 with no
//! journal, where creating a file costs far more).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{in_ns_cmd, ms, pct, Daemon, Scratch};
use weft::model::{NetworkCreate, SandboxCreate};
use weft::Engine;

const WARMUP: usize = 5;

#[derive(Default)]
struct Stats {
    attach: Vec<Duration>,
    /// weft library only: kernel steps, store commit, and the rest (weft's own work).
    kernel: Vec<Duration>,
    commit: Vec<Duration>,
    own: Vec<Duration>,
    /// weft library only: kernel time per attach by step kind.
    by_kind: Vec<(&'static str, Duration)>,
    detach: Vec<Duration>,
    /// Detach of many in one batched operation, per sandbox.
    batch_detach: Option<Duration>,
    reached: (usize, usize),
    /// Said after the row.
    note: String,
}

fn run_stdin(mut c: Command, input: &str) -> String {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
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
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ping `gw` once from inside `ns`.
fn reaches(ns: &Path, gw: &str) -> bool {
    in_ns_cmd(ns, "ping")
        .args(["-c", "1", "-W", "1", gw])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sample connectivity: first, middle, last.
fn sample(sbs: &[PathBuf], gw: &str) -> (usize, usize) {
    let picks: Vec<usize> = [0, sbs.len() / 2, sbs.len().saturating_sub(1)]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let ok = picks.iter().filter(|i| reaches(&sbs[**i], gw)).count();
    (ok, picks.len())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// weft as a library. `own_netns`: weft makes the namespaces too; `icc_off`: on a network
/// with `enable_icc=false` (each attach adds its bridge port to nftables' bridge table).
fn bench_weft_lib(n: usize, own_netns: bool, icc_off: bool) -> Stats {
    let s = Scratch::new(match (own_netns, icc_off) {
        (true, _) => "full",
        (false, true) => "icc",
        (false, false) => "lib",
    });
    let host = s.ns("host");
    let sbs: Vec<PathBuf> = if own_netns {
        vec![]
    } else {
        (0..n + WARMUP).map(|i| s.ns(&format!("c{i}"))).collect()
    };
    rt().block_on(async {
        let e = Engine::open(s.config(&host)).await.unwrap();
        // Removals leave the veths' deletion to a reaper task, as in the daemon (into a
        // runtime's namespace, its end parked under another name meanwhile).
        let reaper = Some(tokio::spawn(e.clone().run_reaper()));
        let mut options = std::collections::BTreeMap::new();
        if icc_off {
            options.insert(
                "com.docker.network.bridge.enable_icc".to_string(),
                "false".to_string(),
            );
        }
        e.create_network(NetworkCreate {
            name: "bench".into(),
            options,
            ..Default::default()
        })
        .await
        .unwrap();
        let create = |i: usize| SandboxCreate {
            name: format!("c{i}"),
            network: Some("bench".into()),
            netns: (!own_netns).then(|| sbs[i].clone()),
            ..Default::default()
        };
        for i in n..n + WARMUP {
            e.create_sandbox(create(i)).await.unwrap();
            e.remove_sandbox(&format!("c{i}"), false).await.unwrap();
        }
        let mut st = Stats::default();
        let kinds0 = e.kernel().time_by_kind();
        for i in 0..n {
            let (k0, c0) = (e.kernel().time_in_kernel(), e.store().commit_time());
            let t = Instant::now();
            e.create_sandbox(create(i)).await.unwrap();
            let total = t.elapsed();
            let (k, c) = (
                e.kernel().time_in_kernel() - k0,
                e.store().commit_time() - c0,
            );
            st.attach.push(total);
            st.kernel.push(k);
            st.commit.push(c);
            st.own.push(total.saturating_sub(k + c));
        }
        for (kind, total, _) in e.kernel().time_by_kind() {
            let before = kinds0
                .iter()
                .find(|(k, _, _)| *k == kind)
                .map(|x| x.1)
                .unwrap_or_default();
            st.by_kind.push((kind, (total - before) / n as u32));
        }
        let keys: Vec<PathBuf> = (0..n)
            .map(|i| e.sandbox(&format!("c{i}")).unwrap().key)
            .collect();
        let gw = e.network("bench").unwrap().pools[0]
            .gateway
            .unwrap()
            .to_string();
        st.reached = sample(&keys, &gw);
        for i in 0..n / 2 {
            let t = Instant::now();
            e.remove_sandbox(&format!("c{i}"), false).await.unwrap();
            st.detach.push(t.elapsed());
        }
        // The other half in one batched operation.
        let rest: Vec<String> = (n / 2..n).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = rest.iter().map(String::as_str).collect();
        let t = Instant::now();
        e.remove_sandboxes(&refs, false).await.unwrap();
        st.batch_detach = Some(t.elapsed() / rest.len().max(1) as u32);
        if let Some(r) = reaper {
            r.abort();
            e.stop_reaper();
            let t = Instant::now();
            e.reap_links().await.unwrap();
            st.note = format!("reaper's last batch {}", ms(t.elapsed()));
        }
        st
    })
}

/// A tool that runs a process per operation, set up and warmed up, ready to attach
/// namespace `i` (0..n) and detach it: these run one after another, or interleaved (each
/// attach of one tool next to the same attach of the others, so a drift of the machine's
/// speed during the run hits them alike).
trait PerOp {
    fn attach(&mut self, i: usize);
    fn detach(&mut self, i: usize);
    /// Reachability on a sample of the first `n` namespaces.
    fn reached(&mut self, n: usize) -> (usize, usize);
}

/// Attach 0..n, sample, detach 0..n: one tool's stats.
fn run_alone(t: &mut dyn PerOp, n: usize) -> Stats {
    let mut st = Stats::default();
    for i in 0..n {
        let at = Instant::now();
        t.attach(i);
        st.attach.push(at.elapsed());
    }
    st.reached = t.reached(n);
    for i in 0..n {
        let at = Instant::now();
        t.detach(i);
        st.detach.push(at.elapsed());
    }
    st
}

/// Tools run interleaved: attach `i` by each tool (the order rotating with `i`), then detach
/// the same way.
fn run_interleaved(tools: &mut [Box<dyn PerOp>], n: usize) -> Vec<Stats> {
    let k = tools.len();
    let mut st: Vec<Stats> = (0..k).map(|_| Stats::default()).collect();
    for i in 0..n {
        for j in 0..k {
            let t = (i + j) % k;
            let at = Instant::now();
            tools[t].attach(i);
            st[t].attach.push(at.elapsed());
        }
    }
    for (t, s) in tools.iter_mut().zip(st.iter_mut()) {
        s.reached = t.reached(n);
    }
    for i in 0..n {
        for j in 0..k {
            let t = (i + j) % k;
            let at = Instant::now();
            tools[t].detach(i);
            st[t].detach.push(at.elapsed());
        }
    }
    st
}

/// weft's CLI, a process per attach: in-process (embedded store), or through a running
/// daemon (`daemon`); `engine`: the command run as `weft-engine` (the whole engine binary)
/// rather than the small `weft` front, both through the daemon, to show what the front's
/// start saves.
struct WeftCli {
    s: Scratch,
    host: PathBuf,
    sbs: Vec<PathBuf>,
    _daemon: Option<Daemon>,
    daemon: bool,
    engine: bool,
}

impl WeftCli {
    fn new(n: usize, daemon: bool, engine: bool) -> WeftCli {
        let s = Scratch::new(match (daemon, engine) {
            (false, _) => "cli",
            (true, false) => "clid",
            (true, true) => "clie",
        });
        let host = s.ns("host");
        let sbs: Vec<PathBuf> = (0..n + WARMUP).map(|i| s.ns(&format!("c{i}"))).collect();
        let _daemon = daemon.then(|| Daemon::start(&s, &host));
        let mut w = WeftCli {
            s,
            host,
            sbs,
            _daemon,
            daemon,
            engine,
        };
        w.weft(&["network", "create", "bench"]);
        for i in n..n + WARMUP {
            w.attach(i);
            w.detach(i);
        }
        w
    }

    fn weft(&self, args: &[&str]) {
        let mut c = if self.engine {
            self.s
                .weft_bin(&self.host, env!("CARGO_BIN_EXE_weft-engine"), args)
        } else {
            self.s.weft(&self.host, args)
        };
        if !self.daemon {
            c.env("WEFT_NO_DAEMON", "1");
        }
        c.stdout(Stdio::null());
        let st = c.status().unwrap();
        assert!(st.success());
    }
}

impl PerOp for WeftCli {
    fn attach(&mut self, i: usize) {
        let netns = self.sbs[i].to_str().unwrap().to_string();
        self.weft(&[
            "sandbox",
            "create",
            "--network",
            "bench",
            "--netns",
            &netns,
            &format!("c{i}"),
        ])
    }

    fn detach(&mut self, i: usize) {
        self.weft(&["sandbox", "rm", &format!("c{i}")]);
    }

    fn reached(&mut self, n: usize) -> (usize, usize) {
        let gw = {
            let rt = rt();
            let e = rt
                .block_on(Engine::open(self.s.config(&self.host)))
                .unwrap();
            e.network("bench").unwrap().pools[0]
                .gateway
                .unwrap()
                .to_string()
        };
        sample(&self.sbs[..n], &gw)
    }
}

fn netavark_opts(i: usize, bridge: &str) -> String {
    format!(
        r#"{{"container_id":"{cid:064x}","container_name":"c{i}","networks":{{"bench":{{"static_ips":["10.89.{a}.{b}"],"interface_name":"eth0"}}}},"network_info":{{"bench":{{"name":"bench","id":"{nid:064x}","driver":"bridge","network_interface":"{bridge}","subnets":[{{"subnet":"10.89.0.0/16","gateway":"10.89.0.1"}}],"ipv6_enabled":false,"internal":false,"dns_enabled":false,"options":{{"isolate":"true"}},"ipam_options":{{"driver":"host-local"}}}}}}}}"#,
        cid = i + 1,
        nid = 7,
        a = (i + 2) / 256,
        b = (i + 2) % 256,
    )
}

/// The engine binary under another name (`netavark`), in the scratch directory — as the
/// README links it for Podman.
fn weft_as(s: &Scratch, name: &str) -> String {
    let dir = s.dir.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_weft-engine"), &p).unwrap();
    p.to_string_lossy().into_owned()
}

/// netavark `bin` with firewall driver `fw` (None: its default); `bin` None: weft run as
/// netavark, its state in the scratch directory.
struct Netavark {
    s: Scratch,
    host: PathBuf,
    sbs: Vec<PathBuf>,
    bin: String,
    fw: Option<String>,
    weft: bool,
    _daemon: Option<Daemon>,
}

/// `--doors-daemon`: weft's Podman and CNI doors run with a `weft daemon` on their state (as
/// Podman does for names): their teardowns then leave the veth's deletion to its reaper.
static DOORS_DAEMON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn doors_daemon() -> bool {
    DOORS_DAEMON.load(std::sync::atomic::Ordering::Relaxed)
}

impl Netavark {
    fn new(n: usize, bin: Option<&str>, fw: Option<&str>) -> Netavark {
        // Several may be set up at once (interleaved): each its own scratch directory.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = Scratch::new(&format!("netavark{k}"));
        let host = s.ns("host");
        let sbs: Vec<PathBuf> = (0..n + WARMUP).map(|i| s.ns(&format!("c{i}"))).collect();
        let weft = bin.is_none();
        let bin = bin
            .map(str::to_string)
            .unwrap_or_else(|| weft_as(&s, "netavark"));
        let daemon = (weft && doors_daemon()).then(|| Daemon::start(&s, &host));
        let mut nv = Netavark {
            _daemon: daemon,
            s,
            host,
            sbs,
            bin,
            fw: fw.map(str::to_string),
            weft,
        };
        for i in n..n + WARMUP {
            nv.attach(i);
            nv.detach(i);
        }
        nv
    }

    fn run(&self, cmd: &str, i: usize) {
        let mut c = in_ns_cmd(&self.host, &self.bin);
        if let Some(fw) = &self.fw {
            c.env("NETAVARK_FW", fw);
        }
        if self.weft {
            c.env("WEFT_ROOT", self.s.dir.join("root"))
                .env("WEFT_RUN_ROOT", self.s.dir.join("run"));
        }
        c.arg("--config")
            .arg(self.s.dir.join("conf"))
            .arg(cmd)
            .arg(&self.sbs[i]);
        run_stdin(c, &netavark_opts(i, "nvbr0"));
    }
}

impl PerOp for Netavark {
    fn attach(&mut self, i: usize) {
        self.run("setup", i);
    }

    fn detach(&mut self, i: usize) {
        self.run("teardown", i);
    }

    fn reached(&mut self, n: usize) -> (usize, usize) {
        sample(&self.sbs[..n], "10.89.0.1")
    }
}

/// CNI bridge (ipMasq) + host-local, chained to the firewall plugin, as a runtime runs a
/// conflist: each plugin a process, the firewall plugin given the bridge's result. `weft`:
/// the same bridge config with `"type": "weft"`, weft the only plugin (its firewall does the
/// firewall plugin's work).
fn bench_cni(n: usize, weft: bool) -> Stats {
    let s = Scratch::new(if weft { "cni-weft" } else { "cni" });
    let host = s.ns("host");
    let sbs: Vec<PathBuf> = (0..n + WARMUP).map(|i| s.ns(&format!("c{i}"))).collect();
    let _daemon = (weft && doors_daemon()).then(|| Daemon::start(&s, &host));
    let bridge_conf = format!(
        r#"{{"cniVersion":"0.4.0","name":"benchnet","type":"bridge","bridge":"cnibr0","isGateway":true,"ipMasq":true,"ipam":{{"type":"host-local","subnet":"10.22.0.0/16","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}"#,
        s.dir.join("cnidata").display()
    );
    let plugin = |prog: &str, cmd: &str, i: usize, conf: &str| -> String {
        let path = if weft {
            env!("CARGO_BIN_EXE_weft-engine").to_string()
        } else {
            format!("/usr/lib/cni/{prog}")
        };
        let mut c = in_ns_cmd(&host, &path);
        c.env("WEFT_ROOT", s.dir.join("root"))
            .env("WEFT_RUN_ROOT", s.dir.join("run"));
        c.env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("c{i}"))
            .env("CNI_NETNS", &sbs[i])
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni");
        run_stdin(c, conf)
    };
    let fw_conf = |prev: &str| {
        format!(
            r#"{{"cniVersion":"0.4.0","name":"benchnet","type":"firewall","backend":"iptables","prevResult":{prev}}}"#
        )
    };
    let mut results = vec![String::new(); n + WARMUP];
    let weft_conf = bridge_conf.replace(r#""type":"bridge""#, r#""type":"weft""#);
    let add = |i: usize, results: &mut Vec<String>| {
        if weft {
            results[i] = plugin("weft", "ADD", i, &weft_conf);
            return;
        }
        let r = plugin("bridge", "ADD", i, &bridge_conf);
        plugin("firewall", "ADD", i, &fw_conf(r.trim()));
        results[i] = r;
    };
    let del = |i: usize, results: &Vec<String>| {
        if weft {
            plugin("weft", "DEL", i, &weft_conf);
            return;
        }
        plugin("firewall", "DEL", i, &fw_conf(results[i].trim()));
        plugin("bridge", "DEL", i, &bridge_conf);
    };
    for i in n..n + WARMUP {
        add(i, &mut results);
        del(i, &results);
    }
    let mut st = Stats::default();
    for i in 0..n {
        let t = Instant::now();
        add(i, &mut results);
        st.attach.push(t.elapsed());
    }
    st.reached = sample(&sbs[..n], "10.22.0.1");
    for i in 0..n {
        let t = Instant::now();
        del(i, &results);
        st.detach.push(t.elapsed());
    }
    st
}

fn print_row(name: &str, s: &Stats, cli: Option<Duration>) {
    let a = pct(&s.attach, 0.5);
    let vs = cli
        .map(|b| format!("{:.1}× weft CLI", a.as_secs_f64() / b.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "  {:<34} attach {:>9} (p90 {:>9})   detach {:>9}{}   reached {}/{}   {}",
        name,
        ms(a),
        ms(pct(&s.attach, 0.9)),
        ms(pct(&s.detach, 0.5)),
        s.batch_detach
            .map(|b| format!(" (batched {})", ms(b)))
            .unwrap_or_default(),
        s.reached.0,
        s.reached.1,
        vs
    );
    if !s.note.is_empty() {
        println!("  {:<34} ({})", "", s.note);
    }
    assert_eq!(
        s.reached.0, s.reached.1,
        "{name}: attached namespaces do not reach their gateway"
    );
    if !s.own.is_empty() {
        println!(
            "  {:<34} = kernel steps {} + store commit {} + weft's own work {} (medians)",
            "",
            ms(pct(&s.kernel, 0.5)),
            ms(pct(&s.commit, 0.5)),
            ms(pct(&s.own, 0.5))
        );
        let kinds: Vec<String> = s
            .by_kind
            .iter()
            .filter(|(_, d)| *d >= Duration::from_micros(5))
            .map(|(k, d)| format!("{k} {}", ms(*d)))
            .collect();
        println!("  {:<34}   kernel per attach: {}", "", kinds.join(", "));
    }
}

enum Tool {
    Lib,
    LibIccOff,
    LibOwnNetns,
    Cli,
    CliDaemon,
    CliEngineDaemon,
    Netavark14,
    Netavark21Nft,
    Netavark21NoFw,
    Cni,
    WeftNetavark,
    WeftCni,
}

/// Does `t` run a process per operation (a [`PerOp`])?
fn is_per_op(t: &Tool) -> bool {
    !matches!(
        t,
        Tool::Lib | Tool::LibIccOff | Tool::LibOwnNetns | Tool::Cni | Tool::WeftCni
    )
}

/// A process-per-op tool, set up for `n` attaches.
fn per_op(t: &Tool, n: usize, nv14: &str, nv21: &str) -> Box<dyn PerOp> {
    match t {
        Tool::Cli => Box::new(WeftCli::new(n, false, false)),
        Tool::CliDaemon => Box::new(WeftCli::new(n, true, false)),
        Tool::CliEngineDaemon => Box::new(WeftCli::new(n, true, true)),
        Tool::Netavark14 => Box::new(Netavark::new(n, Some(nv14), None)),
        Tool::Netavark21Nft => Box::new(Netavark::new(n, Some(nv21), Some("nftables"))),
        Tool::Netavark21NoFw => Box::new(Netavark::new(n, Some(nv21), Some("none"))),
        Tool::WeftNetavark => Box::new(Netavark::new(n, None, None)),
        Tool::Lib | Tool::LibIccOff | Tool::LibOwnNetns | Tool::Cni | Tool::WeftCni => {
            unreachable!("not a process-per-op tool")
        }
    }
}

/// A tool's row name.
fn tool_name(t: &Tool) -> &'static str {
    match t {
        Tool::Lib => "weft library (given netns)",
        Tool::LibIccOff => "weft library (given netns, ICC off)",
        Tool::LibOwnNetns => "weft library (makes the netns)",
        Tool::Cli => "weft CLI (process per op)",
        Tool::CliDaemon => "weft CLI via daemon (process per op)",
        Tool::CliEngineDaemon => "weft-engine as CLI via daemon",
        Tool::Netavark14 => "netavark 1.4 (iptables, isolate)",
        Tool::Netavark21Nft => "netavark 2.1 (nftables, isolate)",
        Tool::Netavark21NoFw => "netavark 2.1 (no firewall)",
        Tool::Cni => "CNI bridge+firewall (ipMasq)",
        Tool::WeftNetavark => "weft as netavark (Podman's door)",
        Tool::WeftCni => "weft as a CNI plugin",
    }
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes namespaces and links: run it as root"
    );
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let list = |flag: &str, default: &str| -> Vec<usize> {
        arg(flag)
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    let ns = list("--n", "200,1000");
    let peers_n = list("--peers-n", "200");
    let peers = !args.iter().any(|a| a == "--no-peers");
    let interleave = args.iter().any(|a| a == "--interleave");
    if args.iter().any(|a| a == "--run-tmpfs") {
        common::RUN_TMPFS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    DOORS_DAEMON.store(
        args.iter().any(|a| a == "--doors-daemon"),
        std::sync::atomic::Ordering::Relaxed,
    );
    let nv14 = "/usr/lib/podman/netavark";
    let nv21 = arg("--netavark21").unwrap_or_else(|| "/opt/netavark21/bin/netavark".into());
    let have = |p: &str| Path::new(p).exists();
    println!(
        "weft attach/detach benchmark (per-sandbox medians; {} cores; kernel {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    if peers {
        for (p, what) in [
            (nv14, "netavark 1.4: apt-get install netavark"),
            (nv21.as_str(), "netavark 2.1: cargo install --locked netavark --version 2.1.0 --root /opt/netavark21 (needs protobuf-compiler)"),
            ("/usr/lib/cni/bridge", "CNI plugins: apt-get install containernetworking-plugins"),
        ] {
            if !have(p) {
                println!("  not installed, left out: {what}");
            }
        }
    }
    for n in ns {
        let mut tools: Vec<Tool> = vec![Tool::Lib, Tool::LibIccOff, Tool::LibOwnNetns];
        if peers_n.contains(&n) {
            tools.push(Tool::Cli);
            tools.push(Tool::CliDaemon);
            tools.push(Tool::CliEngineDaemon);
            tools.push(Tool::WeftNetavark);
            tools.push(Tool::WeftCni);
            if peers {
                if have(nv14) {
                    tools.push(Tool::Netavark14);
                }
                if have(&nv21) {
                    tools.push(Tool::Netavark21Nft);
                    tools.push(Tool::Netavark21NoFw);
                }
                if have("/usr/lib/cni/bridge") {
                    tools.push(Tool::Cni);
                }
            }
        }
        // Shuffle the order (the machine's state drifts during a run).
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        for i in (1..tools.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            tools.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        if let Some(only) = arg("--only") {
            tools.retain(|t| {
                let name = tool_name(t);
                only.split(',').any(|w| name.contains(w))
            });
        }
        let mut rows: Vec<(&str, Stats)> = Vec::new();
        if interleave {
            // The process-per-op tools together, interleaved; the rest alone below.
            let (together, alone): (Vec<Tool>, Vec<Tool>) = tools.into_iter().partition(is_per_op);
            let mut runners: Vec<Box<dyn PerOp>> =
                together.iter().map(|t| per_op(t, n, nv14, &nv21)).collect();
            for (t, st) in together.iter().zip(run_interleaved(&mut runners, n)) {
                rows.push((tool_name(t), st));
            }
            drop(runners);
            tools = alone;
        }
        for t in &tools {
            let stats = match t {
                Tool::Lib => bench_weft_lib(n, false, false),
                Tool::LibIccOff => bench_weft_lib(n, false, true),
                Tool::LibOwnNetns => bench_weft_lib(n, true, false),
                Tool::Cni => bench_cni(n, false),
                Tool::WeftCni => bench_cni(n, true),
                t => {
                    let mut p = per_op(t, n, nv14, &nv21);
                    run_alone(&mut *p, n)
                }
            };
            let row = (tool_name(t), stats);
            rows.push(row);
        }
        let order: Vec<&str> = rows.iter().map(|(n, _)| *n).collect();
        println!("N = {n} (run in this order: {})", order.join(", "));
        let order_key = |name: &str| {
            [
                "weft library (given netns)",
                "weft library (given netns, ICC off)",
                "weft library (makes the netns)",
                "weft CLI (process per op)",
                "weft CLI via daemon (process per op)",
                "weft-engine as CLI via daemon",
            ]
            .iter()
            .position(|x| *x == name)
            .unwrap_or(9)
        };
        rows.sort_by_key(|(name, _)| order_key(name));
        let cli = rows
            .iter()
            .find(|(n, _)| n.starts_with("weft CLI via daemon"))
            .or_else(|| rows.iter().find(|(n, _)| n.starts_with("weft CLI")))
            .map(|(_, s)| pct(&s.attach, 0.5));
        for (name, st) in &rows {
            let vs = if name.starts_with("weft library")
                || name.starts_with("weft CLI")
                || name.starts_with("weft-engine")
            {
                None
            } else {
                cli
            };
            print_row(name, st, vs);
        }
        // Each door against the peer that serves it, the same input given to both.
        let p50 = |name: &str| {
            rows.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| pct(&s.attach, 0.5))
        };
        for (door, peers) in [
            (
                "weft as netavark (Podman's door)",
                &[
                    "netavark 1.4 (iptables, isolate)",
                    "netavark 2.1 (nftables, isolate)",
                    "netavark 2.1 (no firewall)",
                ][..],
            ),
            (
                "weft as a CNI plugin",
                &["CNI bridge+firewall (ipMasq)"][..],
            ),
        ] {
            let Some(w) = p50(door) else { continue };
            for peer in peers {
                if let Some(p) = p50(peer) {
                    println!(
                        "  {door}: {} vs {peer} {}: peer/weft {:.2}",
                        ms(w),
                        ms(p),
                        p.as_secs_f64() / w.as_secs_f64()
                    );
                }
            }
        }
    }
    if let Some(k) = arg("--podman").and_then(|v| v.parse::<usize>().ok()) {
        let nv = bench_podman(k, false);
        let wf = bench_podman(k, true);
        println!(
            "podman run --rm … true, {k} runs: netavark 1.4 {} (p90 {}), weft as netavark {} (p90 {}): {:.2}×",
            ms(pct(&nv, 0.5)),
            ms(pct(&nv, 0.9)),
            ms(pct(&wf, 0.5)),
            ms(pct(&wf, 0.9)),
            pct(&nv, 0.5).as_secs_f64() / pct(&wf, 0.5).as_secs_f64()
        );
    }
}

/// `podman run --rm --network pnet localhost/bb true`, `k` times (after 2 untimed), with
/// Debian's netavark 1.4 or with weft as netavark: Podman's own state and a busybox image in
/// a scratch directory, inside a throwaway host namespace.
fn bench_podman(k: usize, weft: bool) -> Vec<Duration> {
    let s = Scratch::new(if weft { "podman-weft" } else { "podman-nv" });
    let host = s.ns("host");
    let d = &s.dir;
    for sub in [
        "root",
        "runroot",
        "tmp",
        "networks",
        "rootfs/bin",
        "rootfs/etc",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let helpers = if weft {
        weft_as(&s, "netavark");
        weft_as(&s, "aardvark-dns");
        d.join("bin").display().to_string()
    } else {
        "/usr/lib/podman".to_string()
    };
    std::fs::write(
        d.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\nruntime = \"runc\"\nhelper_binaries_dir = [\"{helpers}\"]\nenv = [\"WEFT_ROOT={}\", \"WEFT_RUN_ROOT={}\"]\n[network]\nnetwork_backend = \"netavark\"\nnetwork_config_dir = \"{}\"\n",
            d.join("wroot").display(),
            d.join("wrun").display(),
            d.join("networks").display()
        ),
    )
    .unwrap();
    std::fs::copy("/bin/busybox", d.join("rootfs/bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", d.join("rootfs/bin/true")).unwrap();
    std::fs::write(
        d.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .unwrap();
    let podman = |args: &[&str]| {
        let mut c = in_ns_cmd(&host, "podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"));
        c
    };
    let tar = Command::new("tar")
        .arg("-C")
        .arg(d.join("rootfs"))
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    let mut imp = podman(&["import", "-", "localhost/bb"]);
    imp.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = imp.spawn().expect("podman (apt-get install podman runc)");
    child.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    let ok = |args: &[&str]| {
        let o = podman(args).output().unwrap();
        assert!(
            o.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&["network", "create", "--subnet", "10.97.0.0/24", "pnet"]);
    let mut t = vec![];
    for i in 0..k + 2 {
        let start = Instant::now();
        ok(&["run", "--rm", "--network", "pnet", "localhost/bb", "true"]);
        if i >= 2 {
            t.push(start.elapsed());
        }
    }
    t
}
