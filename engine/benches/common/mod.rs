//! What the benchmarks share: percentiles, formatting, scratch directories whose pinned
//! namespaces are unpinned and whose files are removed when dropped, running things inside a
//! namespace, and a `weft daemon` for a scratch state.
#![allow(dead_code)]

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command that runs inside the namespace `ns`.
pub fn in_ns_cmd(ns: &Path, prog: &str) -> Command {
    let f = std::fs::File::open(ns).unwrap();
    let mut c = Command::new(prog);
    unsafe {
        c.pre_exec(move || {
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    c
}

/// `ip ARGS` inside `ns`; panics with ip's message when it fails.
pub fn ip(ns: &Path, args: &[&str]) {
    let o = in_ns_cmd(ns, "ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Connect `host` to `other` by a veth, both ends up: `a` with `addr_a` (a prefix, as `ip
/// addr` takes it) in `host`, `b` with `addr_b` in `other`.
pub fn veth_between(host: &Path, a: &str, addr_a: &str, other: &Path, b: &str, addr_b: &str) {
    ip(host, &["link", "add", a, "type", "veth", "peer", "name", b]);
    ip(host, &["link", "set", b, "netns", other.to_str().unwrap()]);
    ip(host, &["addr", "add", addr_a, "dev", a]);
    ip(host, &["link", "set", a, "up"]);
    ip(other, &["addr", "add", addr_b, "dev", b]);
    ip(other, &["link", "set", b, "up"]);
}

/// The number after `flag` on the benchmark's command line, or `default`.
pub fn num_arg<T: std::str::FromStr>(flag: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A thread inside the namespace `ns` running `f`.
pub fn in_ns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = std::fs::File::open(ns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A `weft daemon` for a scratch state, in `host`; SIGTERM when dropped.
pub struct Daemon(std::process::Child);

impl Daemon {
    /// Start it and wait until weft's socket answers.
    pub fn start(s: &Scratch, host: &Path) -> Daemon {
        let mut c = s.weft(host, &["daemon"]);
        c.env("WEFT_LOG", "warn").stdout(Stdio::null());
        let child = c.spawn().unwrap();
        let sock = s.dir.join("run/weft.sock");
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon(child)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

pub fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub struct Scratch {
    pub dir: PathBuf,
}

/// Set by a benchmark's `--run-tmpfs`: each scratch state's run dirs — weft's (`run`) and
/// netavark's config dir (`conf`) — on a tmpfs of their own, as `/run` (where both live by
/// default: `/run/weft`, Podman's `/run/containers/networks`) is on a systemd host. The store
/// stays on disk: its commits are durable either way.
pub static RUN_TMPFS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("weft-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if RUN_TMPFS.load(std::sync::atomic::Ordering::Relaxed) {
            for sub in ["run", "conf"] {
                let at = dir.join(sub);
                std::fs::create_dir_all(&at).unwrap();
                nix::mount::mount(
                    Some("tmpfs"),
                    &at,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .expect("mount a tmpfs for the run dir");
            }
        }
        Scratch { dir }
    }

    /// An engine's configuration for this scratch state, with `host` playing the host.
    pub fn config(&self, host: &Path) -> weft::Config {
        weft::Config {
            root: self.dir.join("root"),
            run_root: self.dir.join("run"),
            host_netns: Some(host.to_path_buf()),
            ..Default::default()
        }
    }

    /// The `weft` CLI on this scratch state, run inside `host` (not started).
    pub fn weft(&self, host: &Path, args: &[&str]) -> Command {
        self.weft_bin(host, env!("CARGO_BIN_EXE_weft"), args)
    }

    /// [`Self::weft`] run as binary `bin` (`weft` or `weft-engine`).
    pub fn weft_bin(&self, host: &Path, bin: &str, args: &[&str]) -> Command {
        let mut c = in_ns_cmd(host, bin);
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--run-root")
            .arg(self.dir.join("run"))
            .args(args);
        c
    }

    /// A namespace pinned inside the scratch directory.
    pub fn ns(&self, name: &str) -> PathBuf {
        let pin = self.dir.join(name);
        weft::net::ns::create_pinned(&pin, || ()).unwrap();
        pin
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            for m in mi.lines().filter_map(|l| l.split_whitespace().nth(4)) {
                if m.starts_with(self.dir.to_str().unwrap()) {
                    let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 exchange on a unix socket: status and body.
pub fn http(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let req = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    };
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}
