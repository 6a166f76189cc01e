//! Proof by kill -9. For each operation (network create, sandbox create, connect with the
//! bridge and with a Wasm driver, disconnect with a default-route hand-over, network rm,
//! sandbox rm), a `weft` process doing it is SIGKILLed right after its K-th crash point —
//! every kernel step, the moment before the store commit, the moment after it — for every K
//! until the operation completes. After each kill a new process opens the engine (which
//! settles the journal), and:
//!
//! - `weft system check` (records against kernel, both ways) finds nothing;
//! - the kernel and the records are exactly as before the operation (a creation rolled
//!   back), or exactly as after it (a removal rolled forward, or a creation that had
//!   committed), compared with a reference run: links, routes, nft ruleset, namespace pins,
//!   the sandboxes' interfaces, addresses and routes, the records;
//! - no journal is left;
//! - a creation that was rolled back succeeds when retried, and leaves the "after" state.
//!
//! Every case then returns the host to its starting state and checks that too, so each
//! iteration starts from the same place.

use std::os::unix::process::ExitStatusExt;

use crate::harness::*;

/// The state a crash must leave either untouched or completed, with ids blanked out
/// (names carry random ids; everything else must match exactly).
fn snapshot(h: &TestHost, sandboxes: &[&str]) -> String {
    let mut out = String::new();
    let mut host_links: Vec<String> =
        String::from_utf8_lossy(&run_ok(&h.host_ns, "ip", &["-o", "link", "show"]).stdout)
            .lines()
            .map(|l| {
                let name = l
                    .split(": ")
                    .nth(1)
                    .unwrap_or("")
                    .split('@')
                    .next()
                    .unwrap_or("");
                let master = l
                    .split(" master ")
                    .nth(1)
                    .and_then(|m| m.split_whitespace().next())
                    .unwrap_or("-");
                format!("{name} master {master}")
            })
            .collect();
    host_links.sort();
    out += &format!("host links: {host_links:?}\n");
    for fam in ["-4", "-6"] {
        // A bridge's carrier ("linkdown") follows its ports a moment later, and the IPv6
        // link-local route the kernel gives a bridge once it has had carrier is the kernel's
        // (addrconf), not weft's: neither is state.
        let routes =
            String::from_utf8_lossy(&run_ok(&h.host_ns, "ip", &[fam, "route", "show"]).stdout)
                .replace(" linkdown", "");
        let routes: Vec<&str> = routes
            .lines()
            .filter(|l| !(l.starts_with("fe80::/64 ") && l.contains("proto kernel")))
            .collect();
        out += &format!("host routes {fam}: {}\n", routes.join("\n"));
    }
    // nft lists chains in the order they were made, and a set's elements in hash order:
    // compare the lines (ids blanked first), not their order.
    let mut nft: Vec<String> = h
        .nft_ruleset()
        .lines()
        .map(|l| blank_ids(l.trim()))
        .collect();
    nft.sort();
    out += &format!("nft: {nft:?}\n");
    let mut pins: Vec<String> = std::fs::read_dir(h.dir.join("run/netns"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    pins.sort();
    out += &format!("pins: {pins:?}\n");
    for s in sandboxes {
        let ns = h.dir.join("run/netns").join(s);
        if !ns.exists() {
            out += &format!("sandbox {s}: none\n");
            continue;
        }
        for args in [&["-o", "addr", "show"][..], &["route", "show"][..]] {
            let o = run_ok(&ns, "ip", args);
            let text: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| {
                    // Drop interface indexes and lifetimes; keep names, addresses, routes.
                    l.split_whitespace()
                        .filter(|w| {
                            !w.ends_with(':') || w.starts_with("eth") || w.starts_with("lo")
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            out += &format!("sandbox {s} {args:?}: {text:?}\n");
        }
    }
    out += &format!(
        "networks: {}",
        h.weft_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])
    );
    out += &format!("sandboxes: {}", h.weft_ok(&["sandbox", "ls"]));
    blank_ids(&out)
}

/// Replace runs of 8 or more hex digits (ids in names) by '#'.
fn blank_ids(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        out += if run.len() >= 8 { "#" } else { &run };
        run.clear();
        out.push(c);
    }
    out += if run.len() >= 8 { "#" } else { &run };
    out
}

fn journals(h: &TestHost) -> usize {
    h.journals()
}

fn check_clean(h: &TestHost, when: &str) {
    let o = h.weft(&["system", "check"]);
    assert!(
        o.status.success(),
        "{when}: system check found:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(journals(h), 0, "{when}: journals left");
}

struct Case<'a> {
    tag: &'static str,
    /// Make the starting state (CLI commands).
    setup: &'a [&'a [&'a str]],
    op: &'a [&'a str],
    /// Removals roll forward; creations roll back.
    removal: bool,
    /// From the "after" state back to the starting one.
    restore: &'a [&'a [&'a str]],
    /// Sandboxes whose insides the snapshot looks at.
    sandboxes: &'a [&'a str],
    plugin: bool,
}

fn run_case(c: &Case<'_>) -> usize {
    let mut h = TestHost::new(c.tag);
    h.engine = None; // every change below is a separate weft process
    if c.plugin {
        let g = guest("routed");
        h.weft_ok(&[
            "plugin",
            "install",
            g.to_str().unwrap(),
            "--name",
            "routed",
            "--grant-requested",
        ]);
    }
    for cmd in c.setup {
        h.weft_ok(cmd);
    }
    check_clean(&h, "after setup");
    let start = snapshot(&h, c.sandboxes);
    // Reference: the operation done without a crash, and undone again.
    h.weft_ok(c.op);
    check_clean(&h, "after the operation");
    let done = snapshot(&h, c.sandboxes);
    assert_ne!(start, done, "the operation changes something");
    for cmd in c.restore {
        h.weft_ok(cmd);
    }
    assert_eq!(
        snapshot(&h, c.sandboxes),
        start,
        "restore returns to the start"
    );

    let mut points = 0;
    for k in 1.. {
        let spec = format!("crash-after:{k}");
        let o = h.weft_env(c.op, &[("WEFT_FAILPOINT", &spec)]);
        if o.status.success() {
            // Past the last crash point: the operation ran to the end.
            assert_eq!(snapshot(&h, c.sandboxes), done);
            points = k - 1;
            break;
        }
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{}: point {k}: expected SIGKILL, got {:?}: {}",
            c.tag,
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let last = stderr.contains("(committed)");
        // A new process settles what the dead one left.
        check_clean(
            &h,
            &format!("{}: after a kill at point {k} ({})", c.tag, stderr.trim()),
        );
        let now = snapshot(&h, c.sandboxes);
        if c.removal || last {
            assert_eq!(now, done, "{}: point {k}: completed", c.tag);
        } else {
            assert_eq!(now, start, "{}: point {k}: rolled back", c.tag);
            // Retried, it succeeds.
            h.weft_ok(c.op);
            check_clean(&h, "after the retry");
            assert_eq!(
                snapshot(&h, c.sandboxes),
                done,
                "{}: point {k}: retried",
                c.tag
            );
        }
        for cmd in c.restore {
            h.weft_ok(cmd);
        }
        check_clean(&h, "after restoring");
        assert_eq!(
            snapshot(&h, c.sandboxes),
            start,
            "{}: point {k}: restored",
            c.tag
        );
    }
    assert!(points >= 3, "{}: only {points} crash points", c.tag);
    eprintln!(
        "{}: {points} crash points, each killed and recovered",
        c.tag
    );
    points
}

// Addresses are given (--ip) wherever a sandbox joins a network: with sequential
// allocation, an address released by a restore would otherwise not come back first, and the
// states would differ by it.
const M: &[&str] = &["network", "create", "--subnet", "10.31.0.0/24", "m"];
const N: &[&str] = &["network", "create", "--subnet", "10.32.0.0/24", "n"];

#[test]
fn kill_9_network_create() {
    run_case(&Case {
        tag: "k9netc",
        setup: &[],
        op: &["network", "create", "n1"],
        removal: false,
        restore: &[&["network", "rm", "n1"]],
        sandboxes: &[],
        plugin: false,
    });
}

#[test]
fn kill_9_sandbox_create() {
    run_case(&Case {
        tag: "k9sbc",
        setup: &[N],
        op: &[
            "sandbox",
            "create",
            "--network",
            "n",
            "--ip",
            "10.32.0.9",
            "v",
        ],
        removal: false,
        restore: &[&["sandbox", "rm", "v"]],
        sandboxes: &["v"],
        plugin: false,
    });
}

#[test]
fn kill_9_connect_bridge() {
    run_case(&Case {
        tag: "k9conn",
        setup: &[
            M,
            N,
            &[
                "sandbox",
                "create",
                "--network",
                "m",
                "--ip",
                "10.31.0.5",
                "s",
            ],
        ],
        op: &[
            "network",
            "connect",
            "--gw-priority",
            "5",
            "--ip",
            "10.32.0.5",
            "n",
            "s",
        ],
        removal: false,
        restore: &[&["network", "disconnect", "n", "s"]],
        sandboxes: &["s"],
        plugin: false,
    });
}

#[test]
fn kill_9_connect_wasm_driver() {
    run_case(&Case {
        tag: "k9plug",
        setup: &[
            M,
            &[
                "network",
                "create",
                "-d",
                "routed",
                "--subnet",
                "10.88.0.0/24",
                "r",
            ],
            &[
                "sandbox",
                "create",
                "--network",
                "m",
                "--ip",
                "10.31.0.5",
                "s",
            ],
        ],
        op: &["network", "connect", "--ip", "10.88.0.5", "r", "s"],
        removal: false,
        restore: &[&["network", "disconnect", "r", "s"]],
        sandboxes: &["s"],
        plugin: true,
    });
}

#[test]
fn kill_9_disconnect_with_default_route_handover() {
    run_case(&Case {
        tag: "k9disc",
        setup: &[
            M,
            N,
            &[
                "sandbox",
                "create",
                "--network",
                "m",
                "--ip",
                "10.31.0.5",
                "s",
            ],
            &["network", "connect", "--ip", "10.32.0.5", "n", "s"],
        ],
        op: &["network", "disconnect", "m", "s"],
        removal: true,
        restore: &[
            &["network", "disconnect", "n", "s"],
            &["network", "connect", "--ip", "10.31.0.5", "m", "s"],
            &["network", "connect", "--ip", "10.32.0.5", "n", "s"],
        ],
        sandboxes: &["s"],
        plugin: false,
    });
}

#[test]
fn kill_9_network_rm() {
    run_case(&Case {
        tag: "k9netrm",
        setup: &[&["network", "create", "n"], &["network", "create", "keep"]],
        op: &["network", "rm", "n"],
        removal: true,
        restore: &[&["network", "create", "n"]],
        sandboxes: &[],
        plugin: false,
    });
}

#[test]
fn kill_9_sandbox_rm() {
    let s1: &[&str] = &[
        "sandbox",
        "create",
        "--network",
        "n",
        "--ip",
        "10.32.0.11",
        "s1",
    ];
    let s2: &[&str] = &[
        "sandbox",
        "create",
        "--network",
        "n",
        "--ip",
        "10.32.0.12",
        "s2",
    ];
    let c2: &[&str] = &["network", "connect", "--ip", "10.31.0.12", "m", "s2"];
    run_case(&Case {
        tag: "k9sbrm",
        setup: &[N, M, s1, s2, c2],
        op: &["sandbox", "rm", "s1", "s2"],
        removal: true,
        restore: &[s1, s2, c2],
        sandboxes: &["s1", "s2"],
        plugin: false,
    });
}

const Q: &[&str] = &[
    "network",
    "create",
    "--subnet",
    "10.33.0.0/24",
    "-o",
    "com.docker.network.bridge.enable_icc=false",
    "q",
];
const DB: &[&str] = &[
    "sandbox",
    "create",
    "--network",
    "q",
    "--ip",
    "10.33.0.5",
    "--expose",
    "5432",
    "db",
];
const APP: &[&str] = &[
    "sandbox",
    "create",
    "--network",
    "q",
    "--ip",
    "10.33.0.6",
    "--link",
    "db",
    "-p",
    "18080:80",
    "app",
];
const OTHER: &[&str] = &[
    "sandbox",
    "create",
    "--network",
    "q",
    "--ip",
    "10.33.0.7",
    "other",
];

#[test]
fn kill_9_sandbox_create_icc_off_with_link_and_port() {
    run_case(&Case {
        tag: "k9icc",
        setup: &[Q, DB],
        op: APP,
        removal: false,
        restore: &[&["sandbox", "rm", "app"]],
        sandboxes: &["app"],
        plugin: false,
    });
}

#[test]
fn kill_9_sandbox_rm_icc_off_batched() {
    run_case(&Case {
        tag: "k9iccrm",
        setup: &[Q, DB, APP, OTHER],
        op: &["sandbox", "rm", "app", "other"],
        removal: true,
        restore: &[APP, OTHER],
        sandboxes: &["app", "other"],
        plugin: false,
    });
}

#[test]
fn kill_9_disconnect_moves_published_ports() {
    run_case(&Case {
        tag: "k9discp",
        setup: &[
            M,
            N,
            &[
                "sandbox",
                "create",
                "--network",
                "m",
                "--ip",
                "10.31.0.6",
                "-p",
                "18081:80",
                "s",
            ],
            &["network", "connect", "--ip", "10.32.0.6", "n", "s"],
        ],
        op: &["network", "disconnect", "m", "s"],
        removal: true,
        restore: &[
            &["network", "disconnect", "n", "s"],
            &["network", "connect", "--ip", "10.31.0.6", "m", "s"],
            &["network", "connect", "--ip", "10.32.0.6", "n", "s"],
        ],
        sandboxes: &["s"],
        plugin: false,
    });
}
