//! Test hosts: each test runs weft inside a fresh network namespace that plays "the host",
//! with its own state root and run dir under a unique temporary directory. Everything the
//! test makes lives inside that host (links, nft tables) or is pinned under that directory
//! (sandbox namespaces), so dropping the [`TestHost`] — on success or on panic — unmounts the
//! pins and removes the directory, and the kernel destroys the rest with the namespaces.
//!
//! Traffic helpers (TCP, ICMP) run on threads that enter a namespace with setns; nothing
//! leaves the namespaces the test made.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use weft::{Config, Engine};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique suffix for names in this test process.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut r = [0u8; 2];
    getrandom_bytes(&mut r);
    format!("{tag}-{}-{n}-{:02x}{:02x}", std::process::id(), r[0], r[1])
}

fn getrandom_bytes(b: &mut [u8]) {
    let mut f = File::open("/dev/urandom").expect("urandom");
    f.read_exact(b).unwrap();
}

/// Fail loudly (not skip) when the tests cannot do what they are for.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "weft's integration tests create network namespaces, links and nftables rules: run them as root"
    );
}

pub struct TestHost {
    pub dir: PathBuf,
    pub host_ns: PathBuf,
    /// The boot id the engine sees (None: the machine's); a reboot test changes it.
    pub boot_id: Option<String>,
    pub rt: tokio::runtime::Runtime,
    pub engine: Option<Engine>,
}

/// Test hosts of test processes that were killed (their Drop never ran): unpin their
/// namespaces and remove their directories, once per test process.
fn sweep_dead_runs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let tmp = std::env::temp_dir();
        let Ok(rd) = std::fs::read_dir(&tmp) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("weft-test-") else {
                continue;
            };
            // weft-test-<tag>-<pid>-<n>-<hex>
            let parts: Vec<&str> = rest.rsplitn(4, '-').collect();
            let Some(pid) = parts.get(2).and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let dir = e.path();
            unpin_under(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}

/// Unmount every namespace pin under `dir`, deepest first.
fn unpin_under(dir: &Path) {
    if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut mounts: Vec<String> = mi
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .filter(|m| Path::new(m).starts_with(dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl TestHost {
    pub fn new(tag: &str) -> TestHost {
        require_root();
        sweep_dead_runs();
        let dir = std::env::temp_dir().join(format!("weft-test-{}", unique(tag)));
        std::fs::create_dir_all(&dir).unwrap();
        let host_ns = dir.join("host.ns");
        // The engine is shared by the tasks of a multi-threaded runtime, as in a daemon.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut h = TestHost {
            dir,
            host_ns,
            boot_id: None,
            rt,
            engine: None,
        };
        let pin = h.host_ns.clone();
        h.rt.block_on(async {
            weft::net::ns::create_pinned(&pin, || ()).expect("create the test host namespace");
        });
        h.ns_up_lo(&pin.clone());
        h.engine = Some(
            h.rt.block_on(Engine::open(h.config()))
                .expect("open engine"),
        );
        h
    }

    pub fn config(&self) -> Config {
        Config {
            root: self.dir.join("root"),
            run_root: self.dir.join("run"),
            host_netns: Some(self.host_ns.clone()),
            boot_id: self.boot_id.clone(),
            ..Default::default()
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    /// What a reboot does to weft's world: every namespace dies (the host's too, with its
    /// links and nft table) and the run dir is emptied; the state root stays. The engine
    /// reopens in a fresh host namespace with a new boot id.
    pub fn reboot(&mut self) {
        self.engine = None;
        unpin_under(&self.dir.join("run"));
        let _ = std::fs::remove_dir_all(self.dir.join("run"));
        let _ = weft::net::ns::remove_pinned(&self.host_ns);
        let fresh = self.dir.join(format!("host-{}.ns", unique("boot")));
        weft::net::ns::create_pinned(&fresh, || ()).expect("a fresh host namespace");
        self.host_ns = fresh;
        self.ns_up_lo(&self.host_ns.clone());
        self.boot_id = Some(unique("boot"));
        self.reopen();
    }

    /// Close and reopen the engine (what a new CLI process or a restarted daemon does).
    pub fn reopen(&mut self) {
        self.engine = None;
        self.engine = Some(
            self.rt
                .block_on(Engine::open(self.config()))
                .expect("reopen engine"),
        );
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn ns_up_lo(&self, ns: &Path) {
        let out = self.ip(ns, &["link", "set", "lo", "up"]);
        assert!(out.status.success());
    }

    /// A pinned namespace of the test's own (an "outside" host, a LAN, a runtime's netns).
    pub fn make_ns(&self, name: &str) -> PathBuf {
        let pin = self.dir.join(format!("{name}.ns"));
        weft::net::ns::create_pinned(&pin, || ()).expect("create namespace");
        self.ns_up_lo(&pin);
        pin
    }

    /// Run `ip` inside a namespace (iproute2 is only the test's eyes, never weft's hands).
    pub fn ip(&self, ns: &Path, args: &[&str]) -> Output {
        run_in_ns(ns, "ip", args)
    }

    /// `ip -br <what>` in a namespace, as lines.
    pub fn ip_lines(&self, ns: &Path, args: &[&str]) -> Vec<String> {
        let o = self.ip(ns, args);
        assert!(
            o.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Link names in the host namespace.
    pub fn host_links(&self) -> Vec<String> {
        links(&self.host_ns)
    }

    /// weft's nftables table in the host, as text ("" if absent).
    pub fn nft_ruleset(&self) -> String {
        let o = run_in_ns(&self.host_ns, "nft", &["list", "ruleset"]);
        assert!(
            o.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Connect an "outside" namespace to the host by a veth: host side `addr_host`/24 on
    /// link `name`, outside side `addr_out`/24. Returns the outside namespace.
    pub fn outside(&self, name: &str, addr_host: &str, addr_out: &str) -> PathBuf {
        let out = self.make_ns(name);
        let peer = format!("{name}-p");
        let o = self.ip(
            &self.host_ns,
            &["link", "add", name, "type", "veth", "peer", "name", &peer],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = self.ip(
            &self.host_ns,
            &["link", "set", &peer, "netns", out.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (ns, dev, a) in [
            (&self.host_ns, name, addr_host),
            (&out, peer.as_str(), addr_out),
        ] {
            let o = self.ip(ns, &["addr", "add", &format!("{a}/24"), "dev", dev]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let o = self.ip(ns, &["link", "set", dev, "up"]);
            assert!(o.status.success());
        }
        out
    }

    /// Run the `weft` binary inside the test host with this host's state.
    pub fn weft(&self, args: &[&str]) -> Output {
        self.weft_env(args, &[])
    }

    pub fn weft_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.weft_cmd(args);
        cmd.envs(env.iter().copied());
        cmd.output().expect("run weft")
    }

    /// `weft ARGS` with this host's state, run inside the host namespace (not started).
    pub fn weft_cmd(&self, args: &[&str]) -> Command {
        self.weft_cmd_run_root(&self.dir.join("run"), args)
    }

    /// [`TestHost::weft_cmd`] with another run dir.
    pub fn weft_cmd_run_root(&self, run_root: &Path, args: &[&str]) -> Command {
        let ns = File::open(&self.host_ns).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--run-root")
            .arg(run_root)
            .args(args);
        cmd.env_remove("WEFT_FAILPOINT");
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
        cmd
    }

    /// `weft plugin install` of the guest `guest_name` as `name`, with `extra` arguments
    /// (grants); its output.
    pub fn install_plugin(&self, name: &str, guest_name: &str, extra: &[&str]) -> String {
        let file = guest(guest_name);
        let mut args = vec!["plugin", "install", file.to_str().unwrap(), "--name", name];
        args.extend_from_slice(extra);
        self.weft_ok(&args)
    }

    /// Run the CLI and require success; returns stdout.
    pub fn weft_ok(&self, args: &[&str]) -> String {
        let o = self.weft(args);
        assert!(
            o.status.success(),
            "weft {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run the CLI and require failure; returns stderr.
    pub fn weft_err(&self, args: &[&str]) -> String {
        let o = self.weft(args);
        assert!(
            !o.status.success(),
            "weft {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).trim().to_string()
    }

    /// Journals of operations under the run dir: the files in `run/journal` that are not
    /// empty (an empty one is a spare a process keeps to reuse, no operation's).
    pub fn journals(&self) -> usize {
        std::fs::read_dir(self.dir.join("run/journal"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Everything under the run dir that is not a directory (pins, journals), but the lock
    /// file (locks are not state) and spare journals (empty: see [`TestHost::journals`]).
    pub fn run_dir_files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out);
                    } else {
                        out.push(p);
                    }
                }
            }
        }
        let mut v = vec![];
        walk(&self.dir.join("run"), &mut v);
        let spare_journal = |p: &Path| {
            p.parent().is_some_and(|d| d.ends_with("journal"))
                && std::fs::metadata(p).is_ok_and(|m| m.len() == 0)
        };
        v.retain(|p| !p.ends_with("weft.lock") && !spare_journal(p));
        v
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.engine = None;
        // Unpin every namespace under the test's directory (sandboxes, the host, outsides).
        unpin_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A program that will run inside a network namespace (setns in the child before exec).
pub fn cmd_in_ns(ns: &Path, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let f = File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    let mut cmd = Command::new(prog);
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    cmd
}

/// Run a program inside a namespace.
pub fn run_in_ns(ns: &Path, prog: &str, args: &[&str]) -> Output {
    cmd_in_ns(ns, prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

/// Like [`run_in_ns`], and the program must succeed (a check whose tool failed checks nothing).
pub fn run_ok(ns: &Path, prog: &str, args: &[&str]) -> Output {
    let o = run_in_ns(ns, prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} in {}: {}",
        ns.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn links(ns: &Path) -> Vec<String> {
    let o = run_ok(ns, "ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap().to_string())
        })
        .collect()
}

/// Run a closure on a thread inside a namespace.
pub fn in_ns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = File::open(ns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A TCP listener inside `ns` that accepts one connection, echoes what it reads, and returns
/// the peer's address (None on timeout).
pub fn tcp_server(ns: &Path, addr: SocketAddr) -> std::thread::JoinHandle<Option<SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_ns(ns, move || {
        // A listener on this port a moment ago may still be going away: retry briefly.
        let t = Instant::now();
        let l = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && t.elapsed() < Duration::from_secs(2) =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf) {
                        let _ = s.write_all(&buf[..n]);
                    }
                    return Some(peer);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        None
    });
    rx.recv().unwrap();
    h
}

/// Connect from inside `ns` to `addr`, send a line, expect it echoed. True on success.
pub fn tcp_echo(ns: &Path, addr: SocketAddr, timeout: Duration) -> bool {
    in_ns(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        s.set_read_timeout(Some(timeout)).unwrap();
        if s.write_all(b"weft\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).is_ok() && &buf == b"weft\n"
    })
    .join()
    .unwrap()
}

/// A datagram from `client_ns` to `to`: does a socket bound to `bind` in `server_ns` get it?
pub fn udp_lands(server_ns: &Path, bind: SocketAddr, client_ns: &Path, to: SocketAddr) -> bool {
    let (ready, bound) = std::sync::mpsc::channel();
    let server = in_ns(server_ns, move || {
        let s = std::net::UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        ready.send(()).unwrap();
        let mut b = [0u8; 16];
        s.recv_from(&mut b).ok().map(|(n, _)| b[..n].to_vec())
    });
    // Sent once the receiver is bound (not after a guess of how long that takes); a send the
    // kernel refuses is a failure of the test, not a "blocked".
    bound.recv().unwrap();
    in_ns(client_ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"evil", to)
            .unwrap_or_else(|e| panic!("sending to {to}: {e}"));
    })
    .join()
    .unwrap();
    server.join().unwrap().as_deref() == Some(&b"evil"[..])
}

/// Full TCP exchange between two namespaces; returns what the server saw as the peer.
pub fn tcp_exchange(client_ns: &Path, server_ns: &Path, server: SocketAddr) -> Option<SocketAddr> {
    let h = tcp_server(server_ns, server);
    let ok = tcp_echo(client_ns, server, Duration::from_secs(2));
    let peer = h.join().unwrap();
    if ok {
        peer
    } else {
        None
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP echo from inside `ns` to an IPv4 address (raw socket, no external tool). True if a
/// reply came back within the timeout.
pub fn ping(ns: &Path, dst: IpAddr) -> bool {
    let IpAddr::V4(dst) = dst else {
        panic!("ping helper is IPv4 only")
    };
    in_ns(ns, move || unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const _,
            std::mem::size_of_val(&tv) as _,
        );
        let id = (std::process::id() as u16) ^ (COUNTER.fetch_add(1, Ordering::SeqCst) as u16);
        let mut pkt = [
            8u8,
            0,
            0,
            0,
            (id >> 8) as u8,
            id as u8,
            0,
            1,
            b'w',
            b'e',
            b'f',
            b't',
        ];
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = false;
        'outer: for _ in 0..3 {
            libc::sendto(
                fd,
                pkt.as_ptr() as *const _,
                pkt.len(),
                0,
                &sa as *const _ as *const _,
                std::mem::size_of_val(&sa) as _,
            );
            while Instant::now() < deadline {
                let mut buf = [0u8; 256];
                let n = libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), 0);
                if n <= 0 {
                    break;
                }
                let ihl = ((buf[0] & 0x0f) * 4) as usize;
                let src = std::net::Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                if n as usize >= ihl + 8
                    && buf[ihl] == 0
                    && src == dst
                    && buf[ihl + 4..ihl + 6] == [(id >> 8) as u8, id as u8]
                {
                    got = true;
                    break 'outer;
                }
            }
        }
        libc::close(fd);
        got
    })
    .join()
    .unwrap()
}

/// A sandbox's first IPv4 address.
pub fn sandbox_ip(h: &TestHost, name: &str) -> IpAddr {
    let e = h.engine();
    e.sandbox_endpoints(&e.sandbox(name).unwrap().id).unwrap()[0]
        .ipv4
        .unwrap()
        .ip()
}

/// A sandbox's namespace path.
pub fn key(h: &TestHost, name: &str) -> PathBuf {
    h.engine().sandbox(name).unwrap().key
}

/// The parsed JSON of a CLI inspect.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `weft network inspect NET`, the network's object.
pub fn network_json(h: &TestHost, net: &str) -> serde_json::Value {
    let v = json(&h.weft_ok(&["network", "inspect", net]));
    if v.is_array() {
        v[0].clone()
    } else {
        v
    }
}

/// name → IPv4 address (no prefix length) of every sandbox on network `net`, sorted.
pub fn network_members(h: &TestHost, net: &str) -> Vec<(String, String)> {
    let v = network_json(h, net);
    let mut out: Vec<(String, String)> = v["Containers"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|c| {
                    let a = c["IPv4Address"].as_str().unwrap();
                    (
                        c["Name"].as_str().unwrap().to_string(),
                        a.split('/').next().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The first IPv4 address with its prefix length in `ip -o -4 addr` output.
pub fn inet4(ip_o_addr: &str) -> Option<String> {
    ip_o_addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(str::to_string)
}

/// The freshly built Wasm guests (drivers/, ipam-plugins/, tests/plugins/): built once per
/// test process (incrementally, a second or so when nothing changed), into a target dir of
/// their own so the nested cargo never waits on the outer one's lock.
pub fn guests() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"));
        let target = target.join("guests");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-q", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(repo.join("guests/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("run cargo to build the Wasm guests");
        assert!(
            out.status.success(),
            "building the Wasm guests failed (is the wasm32-wasip2 target installed? scripts/deps.sh adds it):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2/release")
    })
}

/// The path of a built guest component, e.g. `guest("routed")`.
pub fn guest(name: &str) -> PathBuf {
    let p = guests().join(format!("weft_plugin_{}.wasm", name.replace('-', "_")));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// A `weft daemon` running in a test host's namespace, serving the Docker API at `sock`.
/// Dropping it sends SIGTERM and waits.
pub struct Daemon {
    child: Option<std::process::Child>,
    pub sock: PathBuf,
    log: PathBuf,
    docker_config: PathBuf,
}

impl TestHost {
    /// Start `weft daemon` for this host and wait until its Docker socket answers.
    pub fn daemon(&self) -> Daemon {
        self.daemon_env(&[])
    }

    /// [`TestHost::daemon`] with extra environment variables.
    pub fn daemon_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.daemon_with(env, None)
    }

    /// [`TestHost::daemon_env`], started with `nofile` as both its soft and hard limit on
    /// open descriptors (so it cannot raise it).
    pub fn daemon_with(&self, env: &[(&str, &str)], nofile: Option<u64>) -> Daemon {
        self.daemon_args(&[], env, nofile)
    }

    /// `weft daemon` with more arguments (a cluster store…).
    pub fn daemon_args(&self, args: &[&str], env: &[(&str, &str)], nofile: Option<u64>) -> Daemon {
        let sock = self.dir.join("docker.sock");
        let log = self.dir.join(format!("daemon-{}.log", unique("d")));
        let sock_s = sock.to_str().unwrap().to_string();
        let mut all = vec!["daemon", "--docker-socket", &sock_s];
        all.extend_from_slice(args);
        let mut cmd = self.weft_cmd(&all);
        if let Some(n) = nofile {
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                });
            }
        }
        cmd.env("WEFT_LOG", "info,weft=debug")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("start weft daemon");
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "weft daemon exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "weft daemon did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let docker_config = self.dir.join("docker-config");
        std::fs::create_dir_all(&docker_config).unwrap();
        Daemon {
            child: Some(child),
            sock,
            log,
            docker_config,
        }
    }
}

/// The docker CLI these tests drive (28.2.2 is preinstalled on these machines).
pub fn docker_cli() -> &'static str {
    static FOUND: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let o = Command::new("docker").arg("--version").output();
        match o {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "the docker CLI is missing: these tests drive the real `docker` client (28.x) \
                 against weft's API; install docker-ce-cli (not Debian's docker.io, whose 20.10 \
                 client and dockerd are not what weft is checked against)"
            ),
        }
    });
    "docker"
}

impl Daemon {
    /// Run the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(docker_cli())
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run docker")
    }

    /// The docker CLI must succeed; its stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}{}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The docker CLI must fail with exit code 1; its stderr, trimmed.
    pub fn docker_err(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "docker {args:?} should have failed with 1: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).trim().to_string()
    }

    /// One raw HTTP/1.1 exchange on the socket (the request is sent as given, with
    /// `Connection: close` added before the blank line); status, headers, body.
    pub fn http(&self, raw: &[u8]) -> (u16, String, String) {
        http_on(&self.sock, raw).expect("connect to the daemon's socket")
    }

    /// SIGTERM, and the daemon's exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: the daemon dies with no chance to tidy up (its sandboxes stay).
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How many descriptors the daemon holds now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

/// [`Daemon::http`] on a socket that may not answer (a daemon being killed): `None` when
/// nothing listens.
pub fn http_on(sock: &Path, raw: &[u8]) -> Option<(u16, String, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let text = raw;
    let split = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a request with headers");
    // A server may answer (and close) before a large body is all sent: keep what it said.
    let _ = s
        .write_all(&text[..split])
        .and_then(|_| s.write_all(b"\r\nConnection: close"))
        .and_then(|_| s.write_all(&text[split..]));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some((status, head.to_string(), body.to_string()))
}
