//! weft as Podman's network backend (issue 18): the real `podman` 4.3 (Debian), run inside
//! the test host with its own root, runroot and containers.conf (never the machine's), finds
//! weft as `netavark` in its helper directory. Containers get Podman's static addresses on
//! weft networks made from Podman's, talk to each other and resolve names through weft's DNS
//! (the daemon's), publish ports reached from outside the host, join and leave networks; an
//! address taken is refused with Podman's own error; `podman rm -f` leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::*;

pub(crate) struct Podman {
    dir: PathBuf,
    ns: PathBuf,
    /// Podman refuses a runroot over 50 characters: a short one under /tmp, removed with it.
    runroot: PathBuf,
}

impl Podman {
    /// Podman for this test host: its state under the host's directory, weft as its
    /// netavark (a symlink to the weft binary), the busybox image imported.
    pub(crate) fn new(h: &TestHost) -> Podman {
        Podman::with_backend(h, false)
    }

    /// `cni`: Podman's CNI backend instead, its plugin directory holding weft as `weft`.
    fn with_backend(h: &TestHost, cni: bool) -> Podman {
        let dir = h.dir.join("podman");
        for d in [
            "cnibin",
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
        std::os::unix::fs::symlink(weft, dir.join("cnibin/weft")).unwrap();
        let network = if cni {
            format!(
                "network_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n",
                dir.join("cnibin").display()
            )
        } else {
            "network_backend = \"netavark\"\n".to_string()
        };
        // The one containers.conf that makes weft Podman's backend (helper_binaries_dir), and
        // weft's state for this test (engine.env reaches every podman process, the cleanup
        // ones conmon starts too).
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\nruntime = \"runc\"\nhelper_binaries_dir = [\"{}\"]\n\
                 env = [\"WEFT_ROOT={}\", \"WEFT_RUN_ROOT={}\"]\n\
                 [network]\n{network}network_config_dir = \"{}\"\n",
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
        let runroot = std::env::temp_dir().join(format!(
            "wp{}-{}",
            std::process::id(),
            h.dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .rsplit('-')
                .next()
                .unwrap()
        ));
        std::fs::create_dir_all(&runroot).unwrap();
        let p = Podman {
            dir,
            ns: h.host_ns.clone(),
            runroot,
        };
        let tar = p.dir.join("rootfs.tar");
        let o = Command::new("tar")
            .arg("-C")
            .arg(p.dir.join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        p.ok(&["import", tar.to_str().unwrap(), "localhost/bb"]);
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cmd_in_ns(&self.ns, "podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env_remove("WEFT_ROOT")
            .env_remove("WEFT_RUN_ROOT");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
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
        let _ = std::fs::remove_dir_all(&self.runroot);
    }
}

fn sandbox_addr(h: &TestHost, name: &str, net: &str) -> Option<String> {
    network_members(h, net)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a)
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
    let v = network_json(&h, "pint");
    assert_eq!(v["Internal"], true);
    assert_eq!(v["EnableIPv6"], true);
    let a6 = p.ok(&["exec", "i", "ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(a6.contains("fd00:94::"), "{a6}");
    let a4 = p.ok(&["exec", "i", "ip", "-4", "-o", "addr", "show", "eth0"]);
    let ip4 = inet4(&a4).unwrap().split('/').next().unwrap().to_string();
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

/// Podman's CNI backend runs weft as a CNI plugin: a conflist written for the bridge plugin
/// with `"type": "weft"`, containers on it talk, a static address is honoured, `podman rm -f`
/// leaves nothing behind.
#[test]
fn podman_with_the_cni_backend_runs_weft_as_its_plugin() {
    let h = TestHost::new("podmancni");
    let p = Podman::with_backend(&h, true);
    std::fs::write(
        p.dir.join("networks/wnet.conflist"),
        r#"{"cniVersion": "0.4.0", "name": "wnet", "plugins": [{"type": "weft", "bridge": "wnet0",
            "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.96.0.0/24", "gateway": "10.96.0.1"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
            "capabilities": {"ips": true, "portMappings": true}}]}"#,
    )
    .unwrap();
    assert!(p
        .ok(&["info", "--format", "{{.Host.NetworkBackend}}"])
        .contains("cni"));
    p.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "wnet",
        "--ip",
        "10.96.0.50",
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
        "wnet",
        "localhost/bb",
        "sleep",
        "1000",
    ]);
    let a = p.ok(&["exec", "a", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(a.contains("10.96.0.50/24"), "the static address: {a}");
    let b = p.ok(&["exec", "b", "ip", "-4", "-o", "addr", "show", "eth0"]);
    let ip_b = inet4(&b).unwrap().split('/').next().unwrap().to_string();
    assert!(ip_b.starts_with("10.96.0."), "{b}");
    p.ok(&["exec", "a", "ping", "-c", "1", "-W", "2", &ip_b]);
    let sbs = h.weft_ok(&["sandbox", "ls"]);
    assert_eq!(sbs.matches("cni-").count(), 2, "two CNI sandboxes: {sbs}");
    p.ok(&["rm", "-f", "-t", "0", "a", "b"]);
    assert!(
        !h.weft_ok(&["sandbox", "ls"]).contains("cni-"),
        "DEL removed them"
    );
    let check = h.weft(&["system", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
