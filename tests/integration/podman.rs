//! weft as Podman's network backend (issue 18): the real `podman` 4.3 (Debian), run inside
//! the test host with its own root, runroot and containers.conf (never the machine's), finds
//! weft as `netavark` in its helper directory. Containers get Podman's static addresses on
//! weft networks made from Podman's, talk to each other and resolve names through weft's DNS
//! (the daemon's), publish ports reached from outside the host, join and leave networks; an
//! address taken is refused with Podman's own error; `podman rm -f` leaves nothing behind.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::*;

struct Podman {
    dir: PathBuf,
    ns: PathBuf,
}

impl Podman {
    /// Podman for this test host: its state under the host's directory, weft as its
    /// netavark (a symlink to the weft binary), the busybox image imported.
    fn new(h: &TestHost) -> Podman {
        let dir = h.dir.join("podman");
        for d in [
            "root",
            "runroot",
            "tmp",
            "networks",
            "bin",
            "rootfs/bin",
            "rootfs/etc",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let weft = env!("CARGO_BIN_EXE_weft");
        // Podman looks for both; weft answers DNS itself, so aardvark-dns is never run.
        std::os::unix::fs::symlink(weft, dir.join("bin/netavark")).unwrap();
        std::os::unix::fs::symlink(weft, dir.join("bin/aardvark-dns")).unwrap();
        // The one containers.conf that makes weft Podman's backend (helper_binaries_dir), and
        // weft's state for this test (engine.env reaches every podman process, the cleanup
        // ones conmon starts too).
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\nruntime = \"runc\"\nhelper_binaries_dir = [\"{}\"]\n\
                 env = [\"WEFT_ROOT={}\", \"WEFT_RUN_ROOT={}\"]\n\
                 [network]\nnetwork_backend = \"netavark\"\nnetwork_config_dir = \"{}\"\n",
                dir.join("bin").display(),
                h.dir.join("root").display(),
                h.dir.join("run").display(),
                dir.join("networks").display()
            ),
        )
        .unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is installed by scripts/deps.sh");
        std::fs::copy(busybox, dir.join("rootfs/bin/busybox")).unwrap();
        for l in [
            "sh", "ip", "ping", "nc", "cat", "sleep", "true", "nslookup", "hostname",
        ] {
            std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(l)).unwrap();
        }
        std::fs::write(
            dir.join("rootfs/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n",
        )
        .unwrap();
        let p = Podman {
            dir,
            ns: h.host_ns.clone(),
        };
        let tar = Command::new("tar")
            .arg("-C")
            .arg(p.dir.join("rootfs"))
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        let mut import = p.cmd(&["import", "-", "localhost/bb"]);
        import
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = import
            .spawn()
            .expect("run podman (scripts/deps.sh installs it)");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &tar.stdout).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env_remove("WEFT_ROOT")
            .env_remove("WEFT_RUN_ROOT");
        let ns = std::fs::File::open(&self.ns).unwrap();
        unsafe {
            c.pre_exec(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers (and the namespaces Podman made for them) go with the test.
        let _ = self.run(&["rm", "-f", "-a", "-t", "0"]);
    }
}

fn sandbox_addr(h: &TestHost, name: &str, net: &str) -> Option<String> {
    let v = json(&h.weft_ok(&["network", "inspect", net]));
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Containers"].as_object().and_then(|m| {
        m.values().find(|c| c["Name"] == name).map(|c| {
            c["IPv4Address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
    })
}

#[test]
fn podman_runs_containers_on_weft_networks() {
    let h = TestHost::new("podman");
    let out = h.outside("pmout", "10.85.9.1", "10.85.9.2");
    let p = Podman::new(&h);
    let d = h.daemon();
    assert!(p
        .ok(&["info", "--format", "{{.Host.NetworkBackend}}"])
        .contains("netavark"));
    p.ok(&[
        "network",
        "create",
        "--subnet",
        "10.91.0.0/24",
        "--gateway",
        "10.91.0.1",
        "pnet",
    ]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "pnet",
        "--ip",
        "10.91.0.10",
        "localhost/bb",
        "sleep",
        "1000",
    ]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "pnet",
        "--ip",
        "10.91.0.11",
        "-p",
        "8086:80",
        "localhost/bb",
        "sleep",
        "1000",
    ]);
    // weft made the network and holds Podman's addresses.
    assert_eq!(sandbox_addr(&h, "a", "pnet").as_deref(), Some("10.91.0.10"));
    assert_eq!(sandbox_addr(&h, "b", "pnet").as_deref(), Some("10.91.0.11"));
    let addr = p.ok(&["exec", "a", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("10.91.0.10/24"), "{addr}");
    // Traffic, and names through weft's DNS (no aardvark-dns).
    p.ok(&["exec", "a", "ping", "-c", "1", "-W", "2", "10.91.0.11"]);
    let ok = (0..50).any(|_| {
        let o = p.run(&["exec", "a", "nslookup", "b"]);
        if String::from_utf8_lossy(&o.stdout).contains("10.91.0.11") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    let o = p.run(&["exec", "a", "nslookup", "b"]);
    assert!(
        ok,
        "b resolves through weft's DNS: {}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        d.log_text()
            .lines()
            .filter(|l| l.contains("DNS") || l.contains("dns") || l.contains("resolver"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The published port, from outside the host.
    let bns = h.engine().sandbox("b").unwrap().key;
    let server = tcp_server(&bns, "0.0.0.0:80".parse().unwrap());
    assert!(
        tcp_echo(
            &out,
            "10.85.9.1:8086".parse().unwrap(),
            Duration::from_secs(2)
        ),
        "8086 → b:80"
    );
    assert!(server.join().unwrap().is_some());
    // Connect and disconnect.
    p.ok(&["network", "create", "--subnet", "10.93.0.0/24", "pnet2"]);
    p.ok(&["network", "connect", "pnet2", "a"]);
    assert!(sandbox_addr(&h, "a", "pnet2").is_some(), "a joined pnet2");
    let addrs = p.ok(&["exec", "a", "ip", "-4", "-o", "addr"]);
    assert!(addrs.contains("10.93.0."), "{addrs}");
    p.ok(&["network", "disconnect", "pnet2", "a"]);
    assert!(
        h.weft_err(&["network", "inspect", "pnet2"])
            .contains("pnet2"),
        "pnet2 had no one left: removed"
    );
    // An address taken: Podman's own error, and nothing changes in weft.
    let sbs = h.weft_ok(&["sandbox", "ls", "-q"]);
    let o = p.run(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "pnet",
        "--ip",
        "10.91.0.10",
        "localhost/bb",
        "sleep",
        "1000",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already allocated"), "{err}");
    assert_eq!(h.weft_ok(&["sandbox", "ls", "-q"]), sbs);
    // rm -f leaves nothing behind.
    p.ok(&["rm", "-f", "-t", "0", "a", "b"]);
    assert!(h.weft_ok(&["sandbox", "ls", "-q"]).trim().is_empty());
    assert!(h.weft_err(&["network", "inspect", "pnet"]).contains("pnet"));
    let check = h.weft(&["system", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Control for the port: gone with the container.
    assert!(!tcp_echo(
        &out,
        "10.85.9.1:8086".parse().unwrap(),
        Duration::from_millis(500)
    ));
    drop(d);
}

#[test]
fn podman_internal_and_ipv6_networks() {
    let h = TestHost::new("podman6");
    let p = Podman::new(&h);
    p.ok(&[
        "network",
        "create",
        "--internal",
        "--ipv6",
        "--subnet",
        "10.94.0.0/24",
        "--subnet",
        "fd00:94::/64",
        "pint",
    ]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "i",
        "--network",
        "pint",
        "localhost/bb",
        "sleep",
        "1000",
    ]);
    let v = json(&h.weft_ok(&["network", "inspect", "pint"]));
    let v = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(v["Internal"], true);
    assert_eq!(v["EnableIPv6"], true);
    let a6 = p.ok(&["exec", "i", "ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(a6.contains("fd00:94::"), "{a6}");
    let a4 = p.ok(&["exec", "i", "ip", "-4", "-o", "addr", "show", "eth0"]);
    let ip4 = a4
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        sandbox_addr(&h, "i", "pint").as_deref(),
        Some(ip4.as_str()),
        "Podman's address is weft's"
    );
    let routes = p.ok(&["exec", "i", "ip", "-4", "route"]);
    assert!(
        !routes.contains("default"),
        "internal: no default route: {routes}"
    );
    p.ok(&["rm", "-f", "-t", "0", "i"]);
    assert!(h.weft_ok(&["sandbox", "ls", "-q"]).trim().is_empty());
}
