//! containerd's `ctr run --cni` drives weft as its CNI plugin (issue 18): Debian's containerd
//! 1.6 started by the test inside the test host with its own root, state and socket; the
//! busybox image from `podman save` imported with `ctr`; ctr (which reads /etc/cni/net.d and
//! /opt/cni/bin, fixed paths) runs in a mount namespace of its own where tmpfs mounts put the
//! test's conflist and weft there, so the machine's own directories are never touched.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::*;

struct Containerd {
    dir: PathBuf,
    ns: PathBuf,
    child: std::process::Child,
}

impl Containerd {
    fn start(h: &TestHost) -> Containerd {
        let dir = h.dir.join("containerd");
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("containerd.sock");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                sock.display()
            ),
        )
        .unwrap();
        let mut c = cmd_in_ns(&h.host_ns, "containerd");
        c.arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("containerd.err")).unwrap());
        let mut child = c
            .spawn()
            .expect("start containerd (scripts/deps.sh installs it)");
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "containerd exited ({st}): {}",
                    std::fs::read_to_string(dir.join("containerd.err")).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "containerd did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The CNI directories ctr reads, as this test wants them.
        std::fs::create_dir_all(dir.join("cni/net.d")).unwrap();
        std::fs::write(
            dir.join("cni/net.d/10-ctrnet.conflist"),
            r#"{"cniVersion": "1.0.0", "name": "ctrnet", "plugins": [{"type": "weft", "bridge": "ctr0",
                "isGateway": true, "ipMasq": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.98.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}"#,
        )
        .unwrap();
        Containerd {
            dir,
            ns: h.host_ns.clone(),
            child,
        }
    }

    /// `ctr ARGS` against this containerd, inside the test host, in a mount namespace where
    /// /etc/cni/net.d holds the test's conflist and /opt/cni/bin holds weft (as `weft`), with
    /// weft's state the test host's.
    fn ctr(&self, h: &TestHost, args: &[&str]) -> Output {
        let script = format!(
            "set -e; mount -t tmpfs weft-test /opt; mkdir -p /opt/cni/bin; ln -s {weft} /opt/cni/bin/weft; \
             mount -t tmpfs weft-test /etc/cni; mkdir -p /etc/cni/net.d; cp {conf}/* /etc/cni/net.d/; \
             exec ctr -a {sock} \"$@\"",
            weft = env!("CARGO_BIN_EXE_weft"),
            conf = self.dir.join("cni/net.d").display(),
            sock = self.dir.join("containerd.sock").display(),
        );
        let mut c = cmd_in_ns(&self.ns, "unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(args)
        .env("WEFT_ROOT", h.dir.join("root"))
        .env("WEFT_RUN_ROOT", h.dir.join("run"));
        c.output().unwrap()
    }

    fn ctr_ok(&self, h: &TestHost, args: &[&str]) -> String {
        let o = self.ctr(h, args);
        assert!(
            o.status.success(),
            "ctr {args:?}: {}{}\n--- containerd ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(self.dir.join("containerd.err")).unwrap_or_default()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_run_cni_attaches_containers_through_weft() {
    let h = TestHost::new("ctrd");
    // The image: busybox, made with podman and saved as a docker archive.
    let p = crate::podman::Podman::new(&h);
    let archive = h.dir.join("bb.tar");
    p.ok(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        archive.to_str().unwrap(),
        "localhost/bb",
    ]);
    let c = Containerd::start(&h);
    c.ctr_ok(
        &h,
        &[
            "images",
            "import",
            "--snapshotter",
            "native",
            archive.to_str().unwrap(),
        ],
    );
    let image = c
        .ctr_ok(&h, &["images", "ls", "-q"])
        .lines()
        .find(|l| l.contains("bb"))
        .expect("the imported image")
        .to_string();
    // A container on weft's network: its address, and its gateway reached.
    let out = c.ctr_ok(
        &h,
        &[
            "run",
            "--rm",
            "--cni",
            "--snapshotter",
            "native",
            &image,
            "c1",
            "sh",
            "-c",
            "ip -4 -o addr show eth0 && ping -c 1 -W 2 10.98.0.1",
        ],
    );
    assert!(
        out.contains("10.98.0."),
        "the container got weft's address: {out}"
    );
    assert!(
        out.contains("1 packets received"),
        "it reached its gateway: {out}"
    );
    // Two at once talk to each other.
    let first = {
        let (c, h, image) = (&c, &h, image.as_str());
        std::thread::scope(|s| {
            let server = s.spawn(move || {
                c.ctr(
                    h,
                    &[
                        "run",
                        "--rm",
                        "--cni",
                        "--snapshotter",
                        "native",
                        image,
                        "srv",
                        "sh",
                        "-c",
                        "ip -4 -o addr show eth0; sleep 4",
                    ],
                )
            });
            std::thread::sleep(Duration::from_millis(1500));
            let ip = network_members(h, "ctrnet")
                .into_iter()
                .next()
                .map(|(_, a)| a);
            let client = ip.as_ref().map(|ip| {
                c.ctr(
                    h,
                    &[
                        "run",
                        "--rm",
                        "--cni",
                        "--snapshotter",
                        "native",
                        image,
                        "cli",
                        "ping",
                        "-c",
                        "1",
                        "-W",
                        "2",
                        ip,
                    ],
                )
            });
            let srv = server.join().unwrap();
            (ip, client, srv)
        })
    };
    let (ip, client, srv) = first;
    assert!(ip.is_some(), "the first container is on weft's network");
    let client = client.unwrap();
    assert!(
        client.status.success(),
        "one container pings the other ({ip:?}): {}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(
        srv.status.success(),
        "{}",
        String::from_utf8_lossy(&srv.stderr)
    );
    // --rm: ctr ran DEL (with the namespace gone): nothing left in weft.
    assert!(
        !h.weft_ok(&["sandbox", "ls"]).contains("cni-"),
        "{}",
        h.weft_ok(&["sandbox", "ls"])
    );
    let check = h.weft(&["system", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
