//! The IPAM plugin written in Python (ipam-plugins/stable-py, built with componentize-py):
//! it allocates the address its hash of the sandbox name picks, releases, and keeps its
//! state through a daemon restart.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::*;

/// The Python plugin's component, built once per test process (build.sh rebuilds only when
/// app.py or the WIT changed).
pub fn stable_py() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target"));
        std::fs::create_dir_all(target.join("guests")).unwrap();
        let out = target.join("guests/weft_plugin_stable_py.wasm");
        let o = Command::new(repo.join("ipam-plugins/stable-py/build.sh"))
            .arg(&out)
            .output()
            .expect("run ipam-plugins/stable-py/build.sh");
        assert!(
            o.status.success(),
            "building the Python plugin failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

/// What the plugin picks for `name` in a /24 (FNV-1a of the name over the 254 usable hosts).
fn predicted(name: &str) -> u8 {
    let mut h: u32 = 0x811C9DC5;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    (h % 254 + 1) as u8
}

fn addr_of(h: &TestHost, net: &str, name: &str) -> String {
    network_members(h, net)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is not on {net}"))
        .1
}

#[test]
fn python_plugin_allocates_releases_and_survives_restart() {
    let h = TestHost::new("py-ipam");
    let file = stable_py();
    h.weft_ok(&[
        "plugin",
        "install",
        file.to_str().unwrap(),
        "--name",
        "stable",
        "--grant-requested",
    ]);
    let d = h.daemon();
    h.weft_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "stable",
        "--subnet",
        "10.77.0.0/24",
        "pn",
    ]);
    for s in ["alpha", "beta"] {
        h.weft_ok(&["sandbox", "create", "--network", "pn", s]);
        assert_eq!(
            addr_of(&h, "pn", s),
            format!("10.77.0.{}", predicted(s)),
            "{s}: its hash picks its address"
        );
    }
    let alpha = addr_of(&h, "pn", "alpha");
    // Released and taken again: the same address.
    h.weft_ok(&["sandbox", "rm", "alpha"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "pn",
        "--ip",
        &alpha,
        "squatter",
    ]);
    h.weft_ok(&["sandbox", "rm", "squatter"]);
    h.weft_ok(&["sandbox", "create", "--network", "pn", "alpha"]);
    assert_eq!(addr_of(&h, "pn", "alpha"), alpha);
    // Restart: the plugin's state (kv) is still there.
    d.stop();
    let d = h.daemon();
    let err = h.weft_err(&[
        "sandbox",
        "create",
        "--network",
        "pn",
        "--ip",
        &alpha,
        "other",
    ]);
    assert!(
        err.contains("already allocated"),
        "alpha's address is still held after the restart: {err}"
    );
    h.weft_ok(&["sandbox", "create", "--network", "pn", "gamma"]);
    assert_eq!(
        addr_of(&h, "pn", "gamma"),
        format!("10.77.0.{}", predicted("gamma"))
    );
    // Control for the refusal: a free address is given.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "pn",
        "--ip",
        "10.77.0.250",
        "free",
    ]);
    h.weft_ok(&["sandbox", "rm", "alpha", "beta", "gamma", "free"]);
    h.weft_ok(&["network", "rm", "pn"]);
    let check = h.weft(&["system", "check"]);
    assert!(
        check.status.success(),
        "system check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    drop(d);
}
