//! A plugin's outbound HTTP, bounded (issue 19): each way a hostile IPAM with wasi:http got
//! something out of weft is tried again — its secret printed through an HTTP refusal, a flood
//! of requests taking the daemon's descriptors, the HTTP layer's log line per failure, an
//! endless body pulled through the host — and each try has its control: the same component
//! doing the permitted thing succeeds, and the same measurement with the bound lifted (a
//! larger grant, a value that is not secret) shows the attack is real.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

const TOKEN: &str = "tok-7f3a9c2e51d04b86";

/// A server on the test host's loopback. `body`: answer each request with that many bytes
/// (None: stream forever, counting what was written, until the reader goes).
struct Server {
    port: u16,
    written: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

fn serve(h: &TestHost, body: Option<usize>) -> Server {
    let written = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (w, r) = (written.clone(), requests.clone());
    in_ns(&h.host_ns, move || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            r.fetch_add(1, Ordering::SeqCst);
            let w = w.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let chunk = vec![b'x'; 64 << 10];
                match body {
                    Some(n) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                        );
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(chunk.len());
                            if s.write_all(&chunk[..k]).is_err() {
                                return;
                            }
                            w.fetch_add(k as u64, Ordering::SeqCst);
                            left -= k;
                        }
                    }
                    None => {
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                        while s.write_all(&chunk).is_ok() {
                            w.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    Server {
        port: rx.recv().unwrap(),
        written,
        requests,
    }
}

/// A port on the test host's loopback that accepts connections into its backlog and never
/// answers them (the listener lives as long as the test process).
fn holder(h: &TestHost) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    in_ns(&h.host_ns, move || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        std::thread::sleep(Duration::from_secs(600));
        drop(l);
    });
    rx.recv().unwrap()
}

/// A port on the test host's loopback that nobody listens on (connections are refused).
fn dead_port(h: &TestHost) -> u16 {
    in_ns(&h.host_ns, || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
    .join()
    .unwrap()
}

/// Install the hostile IPAM as `name` with these grants and config.
fn install(h: &TestHost, name: &str, grants: &[String], config: &[String]) {
    let ipam = guest("hostile-ipam");
    let mut args = vec![
        "plugin".to_string(),
        "install".into(),
        ipam.to_str().unwrap().into(),
        "--name".into(),
        name.into(),
    ];
    for g in grants {
        args.push("--grant".into());
        args.push(g.clone());
    }
    for c in config {
        args.push("--config".into());
        args.push(c.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = h.weft_ok(&args);
    assert!(!out.contains(TOKEN), "install printed the secret: {out}");
}

/// `network create` through the hostile IPAM with these pool options; its output.
fn attack(h: &TestHost, env: &[(&str, &str)], ipam: &str, opts: &[String], net: &str) -> Output {
    let mut args = vec!["network", "create", "--ipam-driver", ipam];
    for o in opts {
        args.push("--ipam-opt");
        args.push(o);
    }
    args.push(net);
    h.weft_env(&args, env)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn check_clean(h: &TestHost) {
    let o = h.weft(&["system", "check"]);
    assert!(o.status.success(), "system check: {}", text(&o));
}

#[test]
fn a_plugins_secret_leaves_through_no_error_log_or_view() {
    let h = TestHost::new("httpleak");
    let srv = serve(&h, Some(2));
    let target = format!("127.0.0.1:{}", srv.port);
    let secret = h.dir.join("token");
    std::fs::write(&secret, format!("{TOKEN}\n")).unwrap();
    let grant = vec![format!("http={target}")];
    install(
        &h,
        "leaker",
        &grant,
        &[format!("token=@{}", secret.display())],
    );
    // The control: the same component given the value in the open (not a secret).
    const OPEN: &str = "open-value-51d04b86";
    install(&h, "teller", &grant, &[format!("token={OPEN}")]);
    let opts = vec![
        "http-attack=leak".to_string(),
        format!("http-target={target}"),
    ];
    let d = h.daemon_env(&[("WEFT_LOG", "trace")]);

    // Through the daemon (the weft CLI's door), in-process with logging at trace, and through
    // the Docker API.
    let mut seen = vec![];
    let o = attack(&h, &[], "leaker", &opts, "l1");
    assert!(!o.status.success());
    seen.push(("weft via daemon", text(&o)));
    let o = attack(
        &h,
        &[("WEFT_NO_DAEMON", "1"), ("WEFT_LOG", "trace")],
        "leaker",
        &opts,
        "l2",
    );
    assert!(!o.status.success());
    seen.push(("weft in-process at trace", text(&o)));
    let mut dargs = vec!["network", "create", "--ipam-driver", "leaker"];
    for o in &opts {
        dargs.extend(["--ipam-opt", o.as_str()]);
    }
    dargs.push("l3");
    let o = d.docker(&dargs);
    assert!(!o.status.success());
    seen.push(("docker", text(&o)));
    seen.push((
        "plugin inspect",
        h.weft_ok(&["plugin", "inspect", "leaker"]),
    ));
    seen.push(("plugin ls", h.weft_ok(&["plugin", "ls"])));
    seen.push(("network ls", h.weft_ok(&["network", "ls"])));
    for (door, out) in &seen[..3] {
        // Each door did show the refusal (with the secret replaced where it was).
        assert!(
            out.contains("it tried to reach") && out.contains("<secret>"),
            "{door}: {out}"
        );
    }
    // The control through the same doors: the open value is printed, in the refused
    // authority and in the log, so each path does carry what the plugin chose.
    let o = attack(&h, &[], "teller", &opts, "t1");
    let told = text(&o);
    assert!(
        told.contains(&format!("it tried to reach {OPEN}:1, ")),
        "control: {told}"
    );
    let o = attack(
        &h,
        &[("WEFT_NO_DAEMON", "1"), ("WEFT_LOG", "trace")],
        "teller",
        &opts,
        "t2",
    );
    assert!(
        text(&o).contains(&format!("my token is {OPEN}")),
        "control: the in-process log at trace shows the plugin's lines: {}",
        text(&o)
    );
    let log = d.log_text();
    assert!(
        log.contains(&format!("my token is {OPEN}")) && log.contains("my token is <secret>"),
        "control: the daemon's log has the plugins' lines"
    );
    // The granted host got the token where it belongs (a header): it is the plugin's to use.
    assert!(srv.requests.load(Ordering::SeqCst) >= 2);
    for (door, out) in &seen {
        assert!(!out.contains(TOKEN), "{door} shows the secret: {out}");
    }
    assert!(
        !log.contains(TOKEN),
        "the daemon's log at trace shows the secret"
    );
    drop(d);
    check_clean(&h);
    h.weft_ok(&["plugin", "rm", "leaker"]);
    h.weft_ok(&["plugin", "rm", "teller"]);
}

/// Run `network create` through `ipam` flooding `target` in the background while sampling
/// the daemon's descriptors and timing another client's `network ls`; the most descriptors
/// seen above `base`, the slowest `ls`, and the create's output.
fn flood(
    h: &TestHost,
    d: &Daemon,
    ipam: &str,
    target: &str,
    net: &str,
) -> (usize, Duration, String) {
    let base = d.open_fds();
    let mut cmd = h.weft_cmd(&[
        "network",
        "create",
        "--ipam-driver",
        ipam,
        "--ipam-opt",
        "http-attack=flood",
        "--ipam-opt",
        &format!("http-target={target}"),
        "--ipam-opt",
        "n=10000",
        net,
    ]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let out = {
        let done = done.clone();
        std::thread::spawn(move || {
            let o = child.wait_with_output().unwrap();
            done.store(true, Ordering::SeqCst);
            o
        })
    };
    let mut most = 0;
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    // Until the flood is on (the plugin holds connections), then while it lasts.
    while !done.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
        most = most.max(d.open_fds().saturating_sub(base));
        if most >= 8 {
            let t = Instant::now();
            h.weft_ok(&["network", "ls", "-q"]);
            slowest = slowest.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = out.join().unwrap();
    assert!(!o.status.success(), "the flood's create succeeded");
    (most, slowest, text(&o))
}

#[test]
fn a_plugins_http_flood_keeps_to_its_share_of_descriptors_and_others_are_served() {
    let h = TestHost::new("httpflood");
    let port = holder(&h);
    let target = format!("127.0.0.1:{port}");
    install(
        &h,
        "flooder",
        &[format!("http={target}"), "deadline=3s".into()],
        &[],
    );
    // Control: the bound lifted to the most a grant allows.
    install(
        &h,
        "wideflood",
        &[
            format!("http={target}"),
            "deadline=3s".into(),
            "http-inflight=4096".into(),
            "http-requests=1000000".into(),
        ],
        &[],
    );
    // A daemon that cannot raise its limit of 1 024 descriptors.
    let d = h.daemon_with(&[], Some(1024));
    let base = d.open_fds();

    let (most, slowest, out) = flood(&h, &d, "flooder", &target, "f1");
    assert!(
        out.contains(
            "it tried to have more than 8 HTTP requests open at once: grant http-inflight=N"
        ),
        "{out}"
    );
    assert!(
        (8..=8 + 6).contains(&most),
        "the daemon held {most} descriptors more during the flood (8 granted)"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "network ls took {slowest:?}"
    );
    assert!(
        d.log_text()
            .contains("refused over the requests open at once"),
        "the call's summary line"
    );

    // Control: with the plugin's bound lifted it does take hundreds — up to the share of all
    // plugins (a quarter of 1 024), so weft's own sockets still have theirs.
    let (most, slowest, out) = flood(&h, &d, "wideflood", &target, "f2");
    assert!(
        out.contains("weft's plugins together hold their most outbound connections, 256"),
        "{out}"
    );
    assert!(
        (200..=256 + 6).contains(&most),
        "control: the daemon held {most} descriptors more (256 is all plugins' share)"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "network ls took {slowest:?}"
    );
    // The connections went with the calls.
    let t = Instant::now();
    while d.open_fds() > base + 2 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the daemon still holds {} descriptors more",
            d.open_fds() - base
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!d.log_text().contains("Too many open files"));
    drop(d);
    check_clean(&h);
    h.weft_ok(&["plugin", "rm", "flooder"]);
    h.weft_ok(&["plugin", "rm", "wideflood"]);
}

/// The daemon log's lines that a call of plugin `name` added.
fn lines_of(log: &str, name: &str) -> usize {
    log.lines().filter(|l| l.contains(name)).count()
}

#[test]
fn a_flood_of_failing_requests_adds_one_summary_line_not_a_line_each() {
    let h = TestHost::new("httplog");
    let dead = format!("127.0.0.1:{}", dead_port(&h));
    install(
        &h,
        "noisy",
        &[format!("http={dead}"), "deadline=10s".into()],
        &[],
    );
    install(
        &h,
        "loud",
        &[
            format!("http={dead}"),
            "deadline=10s".into(),
            "http-requests=1000000".into(),
        ],
        &[],
    );
    let d = h.daemon();
    let opts = |n: u32| {
        vec![
            "http-attack=log-flood".to_string(),
            format!("http-target={dead}"),
            format!("n={n}"),
        ]
    };
    let before = d.log_text().len();
    let o = attack(&h, &[], "noisy", &opts(20_000), "n1");
    let out = text(&o);
    assert!(out.contains("log-flood: 20000 of 20000 failed"), "{out}");
    assert!(
        out.contains("it tried to start more than 32 HTTP requests in one call"),
        "{out}"
    );
    let log = d.log_text()[before..].to_string();
    assert!(
        log.contains("outbound HTTP: 32 sent, 32 failed (first: connect: Connection refused"),
        "the summary line: {log}"
    );
    let n = lines_of(&log, "noisy");
    assert!(n <= 64 + 2, "{n} log lines for one call (the budget is 64)");
    assert!(
        log.len() < 64 * 1024,
        "{} bytes of log for one call",
        log.len()
    );

    // Control: with no bound on requests per call, 10 000 connections are refused (one per
    // request with a path): the flood happens, and the log still says it in one line.
    let before = d.log_text().len();
    let o = attack(&h, &[], "loud", &opts(20_000), "n2");
    assert!(
        text(&o).contains("log-flood: 20000 of 20000 failed"),
        "{}",
        text(&o)
    );
    let log = d.log_text()[before..].to_string();
    assert!(
        log.contains("outbound HTTP: 10000 sent, 10000 failed (first: connect: Connection refused"),
        "control: {log}"
    );
    let n = lines_of(&log, "loud");
    assert!(n <= 64 + 2, "control: {n} log lines for one call");
    drop(d);
    check_clean(&h);
    h.weft_ok(&["plugin", "rm", "noisy"]);
    h.weft_ok(&["plugin", "rm", "loud"]);
}

/// "read N bytes" in a drain's error.
fn drained(out: &str) -> u64 {
    out.split("read ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {out}"))
}

#[test]
fn an_endless_body_stops_at_what_weft_hands_a_plugin_per_call() {
    let h = TestHost::new("httpbody");
    let endless = serve(&h, None);
    let finite = serve(&h, Some(1 << 20));
    let grants = |extra: &[&str]| {
        let mut g = vec![
            format!("http=127.0.0.1:{}", endless.port),
            format!("http=127.0.0.1:{}", finite.port),
            "deadline=5s".to_string(),
        ];
        g.extend(extra.iter().map(|s| s.to_string()));
        g
    };
    install(&h, "drainer", &grants(&[]), &[]);
    install(&h, "bigdrain", &grants(&["inbound=64M"]), &[]);
    let opts = |port: u16, pool: &str| {
        vec![
            "http-attack=drain".to_string(),
            format!("http-target=127.0.0.1:{port}"),
            format!("pool={pool}"),
        ]
    };
    // Permitted: a 1 MiB answer read to its end, then the pool is given.
    let o = attack(&h, &[], "drainer", &opts(finite.port, "10.98.0.0/24"), "b1");
    assert!(o.status.success(), "{}", text(&o));
    // The endless one stops at 8 MiB, well before the deadline.
    let t = Instant::now();
    let o = attack(
        &h,
        &[],
        "drainer",
        &opts(endless.port, "10.98.1.0/24"),
        "b2",
    );
    let took = t.elapsed();
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("weft hands a plugin at most 8 MiB in one call"),
        "{out}"
    );
    let got = drained(&out);
    assert!((7 << 20..=8 << 20).contains(&got), "read {got} bytes");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // Control: with the bound at 64 MiB, the same body is read eight times further.
    let o = attack(
        &h,
        &[],
        "bigdrain",
        &opts(endless.port, "10.98.2.0/24"),
        "b3",
    );
    let got = drained(&text(&o));
    assert!(got > 48 << 20, "control: read only {got} bytes");
    assert!(text(&o).contains("at most 64 MiB"), "{}", text(&o));
    // What the endless server wrote in all: the two drains and the socket buffers between
    // (each connection's send and receive buffers can grow to the namespace's tcp_wmem and
    // tcp_rmem maximums: 4 and 32 MiB on this kernel, so 16 MiB was too little once).
    let max_of = |key: &str| -> u64 {
        let o = run_ok(&h.host_ns, "cat", &[&format!("/proc/sys/net/ipv4/{key}")]);
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .last()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no maximum in {key}"))
    };
    let buffers = 2 * (max_of("tcp_wmem") + max_of("tcp_rmem"));
    let written = endless.written.load(Ordering::SeqCst);
    assert!(
        written < ((8 + 64) << 20) + buffers,
        "the server wrote {written} bytes (buffers {buffers})"
    );
    check_clean(&h);
    h.weft_ok(&["network", "rm", "b1"]);
    h.weft_ok(&["plugin", "rm", "drainer"]);
    h.weft_ok(&["plugin", "rm", "bigdrain"]);
}
