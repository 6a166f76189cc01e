//! External and non-Rust IPAM: the per-attach cost of a sandbox on a bridge network whose
//! IPAM is weft's native one, the Rust host-local plugin, the Python stable-py plugin
//! (componentize-py) and the NetBox plugin against a real NetBox (scripts/netbox.sh), in
//! the same run; NetBox's own answer time for the same call made directly (so what weft adds
//! on top is visible); 20 concurrent attaches on NetBox; what keeping connections to NetBox
//! alive would save (a loopback TCP connect per request); and the plugins' load costs (first
//! compile at install, a load from the compile cache in a fresh engine).
//!
//! Run (root): `cargo bench --bench netbox -- [--n 50]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weft::model::{IpamConfigRequest, NetworkCreate, SandboxCreate};
use weft::Engine;

mod common;
use common::{ms, num_arg, pct, Scratch};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command, what: &str) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

struct NetBox {
    addr: SocketAddr,
    token_file: PathBuf,
    token: String,
}

fn netbox() -> NetBox {
    run(
        Command::new(repo().join("scripts/netbox.sh")).arg("up"),
        "scripts/netbox.sh up",
    );
    let state =
        std::env::var("WEFT_NETBOX_STATE").unwrap_or_else(|_| "/var/tmp/weft-netbox".into());
    let env = std::fs::read_to_string(Path::new(&state).join("env")).unwrap();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let token_file = PathBuf::from(get("NETBOX_TOKEN_FILE"));
    NetBox {
        addr: get("NETBOX_AUTHORITY").parse().unwrap(),
        token: std::fs::read_to_string(&token_file).unwrap().trim().into(),
        token_file,
    }
}

impl NetBox {
    /// One HTTP/1.1 exchange on a fresh connection: status and body.
    fn call(&self, verb: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        let b = body.unwrap_or("");
        write!(
            s,
            "{verb} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            self.token,
            b.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, body.to_string())
    }

    fn json(&self, verb: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (c, b) = self.call(verb, path, body);
        assert!((200..300).contains(&c), "NetBox {verb} {path}: {c} {b}");
        // Chunked answers: take the JSON between the first '{' or '[' and the last.
        let start = b.find(['{', '[']).unwrap_or(0);
        let end = b.rfind(['}', ']']).map(|e| e + 1).unwrap_or(b.len());
        serde_json::from_str(&b[start..end]).unwrap_or(serde_json::Value::Null)
    }

    fn clear(&self, cidr: &str) {
        let v = self.json(
            "GET",
            &format!("/api/ipam/ip-addresses/?parent={cidr}&limit=1000"),
            None,
        );
        for a in v["results"].as_array().unwrap() {
            self.call(
                "DELETE",
                &format!("/api/ipam/ip-addresses/{}/", a["id"]),
                None,
            );
        }
        let v = self.json(
            "GET",
            &format!("/api/ipam/prefixes/?within_include={cidr}&limit=1000"),
            None,
        );
        for p in v["results"].as_array().unwrap() {
            self.call("DELETE", &format!("/api/ipam/prefixes/{}/", p["id"]), None);
        }
    }
}

fn stable_py() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    std::fs::create_dir_all(target.join("guests")).unwrap();
    let out = target.join("guests/weft_plugin_stable_py.wasm");
    run(
        Command::new(repo().join("ipam-plugins/stable-py/build.sh")).arg(&out),
        "build stable-py",
    );
    out
}

struct Row {
    attach: Vec<Duration>,
    first_load: Duration,
    cached_load: Duration,
}

/// `n` sandboxes created one by one on a network using IPAM `ipam` (installed from `file`
/// with `config`, unless native); then a fresh engine on the same state measures a load from
/// the compile cache (its first attach, less a steady one).
async fn attach_row(
    ipam: &str,
    file: Option<&Path>,
    config: &[String],
    cidr: &str,
    n: usize,
) -> Row {
    let dir = Scratch::new(&format!("netbox-{ipam}"));
    let host = dir.ns("host");
    let sbs: Vec<PathBuf> = (0..n + 2).map(|i| dir.ns(&format!("c{i}"))).collect();
    let e = Engine::open(dir.config(&host)).await.unwrap();
    let mut first_load = Duration::ZERO;
    if let Some(f) = file {
        let grants: Vec<String> = if ipam == "netbox" {
            vec![format!(
                "http={}",
                config[0].trim_start_matches("url=http://")
            )]
        } else {
            vec![]
        };
        let t = Instant::now();
        e.install_plugin_with(f, ipam, &grants, true, config)
            .await
            .unwrap();
        first_load = t.elapsed();
    }
    e.create_network(NetworkCreate {
        name: "b".into(),
        ipam_driver: Some(ipam.into()),
        ipam_config: vec![IpamConfigRequest {
            subnet: Some(cidr.parse().unwrap()),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut attach = Vec::new();
    for (i, p) in sbs.iter().take(n).enumerate() {
        let t = Instant::now();
        e.create_sandbox(SandboxCreate {
            name: format!("c{i}"),
            network: Some("b".into()),
            netns: Some(p.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        attach.push(t.elapsed());
    }
    drop(e);
    // A fresh engine: its first attach loads the plugin (from the compile cache).
    let e = Engine::open(dir.config(&host)).await.unwrap();
    let one = |i: usize| {
        let e = e.clone();
        let p = sbs[i].clone();
        async move {
            let t = Instant::now();
            e.create_sandbox(SandboxCreate {
                name: format!("c{i}"),
                network: Some("b".into()),
                netns: Some(p),
                ..Default::default()
            })
            .await
            .unwrap();
            t.elapsed()
        }
    };
    let cold = one(n).await;
    let warm = one(n + 1).await;
    let cached_load = cold.saturating_sub(warm);
    let names: Vec<String> = (0..n + 2).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    e.remove_sandboxes(&refs, false).await.unwrap();
    e.remove_network("b").await.unwrap();
    Row {
        attach,
        first_load,
        cached_load,
    }
}

/// `k` sandboxes created at once on a NetBox network: wall time.
async fn concurrent(config: &[String], cidr: &str, k: usize, file: &Path) -> Duration {
    let dir = Scratch::new("netbox-conc");
    let host = dir.ns("host");
    let sbs: Vec<PathBuf> = (0..k).map(|i| dir.ns(&format!("c{i}"))).collect();
    let e = Engine::open(dir.config(&host)).await.unwrap();
    let grants = vec![format!(
        "http={}",
        config[0].trim_start_matches("url=http://")
    )];
    e.install_plugin_with(file, "netbox", &grants, true, config)
        .await
        .unwrap();
    e.create_network(NetworkCreate {
        name: "b".into(),
        ipam_driver: Some("netbox".into()),
        ipam_config: vec![IpamConfigRequest {
            subnet: Some(cidr.parse().unwrap()),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    // Warm: the plugin loaded.
    let t = Instant::now();
    let tasks: Vec<_> = sbs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let e = e.clone();
            let p = p.clone();
            tokio::spawn(async move {
                e.create_sandbox(SandboxCreate {
                    name: format!("c{i}"),
                    network: Some("b".into()),
                    netns: Some(p),
                    ..Default::default()
                })
                .await
                .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let wall = t.elapsed();
    let names: Vec<String> = (0..k).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    e.remove_sandboxes(&refs, false).await.unwrap();
    e.remove_network("b").await.unwrap();
    wall
}

fn line(name: &str, r: &Row, native: Duration) {
    let p50 = pct(&r.attach, 0.5);
    println!(
        "{name:<26} attach p50 {:>10}  p95 {:>10}  ({:+.2} ms vs native)  first load {:>10}  cached load {:>10}",
        ms(p50),
        ms(pct(&r.attach, 0.95)),
        (p50.as_secs_f64() - native.as_secs_f64()) * 1e3,
        ms(r.first_load),
        ms(r.cached_load),
    );
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "run as root");
    let n: usize = num_arg("--n", 50);
    let nb = netbox();
    let guests = PathBuf::from(run(
        &mut Command::new(repo().join("scripts/build-guests.sh")),
        "build guests",
    ));
    let py = stable_py();
    let cidrs = ["10.250.1.0/24", "10.250.2.0/24", "10.250.3.0/24"];
    for c in cidrs {
        nb.clear(c);
    }
    let config = vec![
        format!("url=http://{}", nb.addr),
        format!("token=@{}", nb.token_file.display()),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("per attach: a sandbox created on a bridge network ({n} in a row), by IPAM");
    let native = rt.block_on(attach_row("default", None, &[], "10.251.0.0/24", n));
    let native_p50 = pct(&native.attach, 0.5);
    line("native IPAM", &native, native_p50);
    let hl = guests.join("weft_plugin_host_local.wasm");
    let r = rt.block_on(attach_row("host-local", Some(&hl), &[], "10.251.1.0/24", n));
    line("host-local (Rust plugin)", &r, native_p50);
    let r = rt.block_on(attach_row("stable-py", Some(&py), &[], "10.251.2.0/24", n));
    line("stable-py (Python plugin)", &r, native_p50);
    let nbw = guests.join("weft_plugin_netbox.wasm");
    let nbrow = rt.block_on(attach_row("netbox", Some(&nbw), &config, cidrs[0], n));
    line("netbox (Rust, real NetBox)", &nbrow, native_p50);

    // NetBox's own time for the call the plugin makes per attach, made directly.
    let pfx = nb.json(
        "POST",
        "/api/ipam/prefixes/",
        Some(&format!(
            "{{\"prefix\":\"{}\",\"status\":\"active\"}}",
            cidrs[1]
        )),
    );
    let pid = pfx["id"].as_u64().unwrap();
    let mut direct = Vec::new();
    for i in 0..n {
        // The body the plugin sends: who holds the address, and its DNS name.
        let body = serde_json::json!({
            "status": "active",
            "description": format!("[weft] sandbox c{i} (0123456789ab) in {}", cidrs[1]),
            "dns_name": format!("c{i}"),
        })
        .to_string();
        let t = Instant::now();
        let (c, _) = nb.call(
            "POST",
            &format!("/api/ipam/prefixes/{pid}/available-ips/"),
            Some(&body),
        );
        direct.push(t.elapsed());
        assert_eq!(c, 201);
    }
    nb.clear(cidrs[1]);
    let d50 = pct(&direct, 0.5);
    println!(
        "NetBox alone: POST available-ips p50 {} p95 {}; weft's attach with NetBox IPAM = native attach + {} ({:.2}x NetBox's own call)",
        ms(d50),
        ms(pct(&direct, 0.95)),
        ms(pct(&nbrow.attach, 0.5).saturating_sub(native_p50)),
        (pct(&nbrow.attach, 0.5).saturating_sub(native_p50)).as_secs_f64() / d50.as_secs_f64()
    );
    // What keep-alive would save: one loopback TCP connect (and close) per request.
    let mut conn = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let s = TcpStream::connect(nb.addr).unwrap();
        conn.push(t.elapsed());
        drop(s);
    }
    println!(
        "keep-alive would save a TCP connect per request: p50 {} ({:.2}% of NetBox's call)",
        common::us(pct(&conn, 0.5)),
        pct(&conn, 0.5).as_secs_f64() / d50.as_secs_f64() * 100.0
    );
    let k = 20;
    let wall = rt.block_on(concurrent(&config, cidrs[2], k, &nbw));
    println!(
        "{k} concurrent attaches with NetBox IPAM: {} wall, {:.1} attaches/s (one at a time: {:.1}/s)",
        ms(wall),
        k as f64 / wall.as_secs_f64(),
        1.0 / pct(&nbrow.attach, 0.5).as_secs_f64()
    );
    for c in cidrs {
        nb.clear(c);
    }
}
