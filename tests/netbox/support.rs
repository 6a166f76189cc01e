//! The shared NetBox (brought up once per test process by `scripts/netbox.sh up`), a client
//! for its API (curl, on the machine's loopback), unique subnets, and the per-test proxy that
//! puts NetBox inside a test host's namespace and can stop it or make it hang.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{self, TestHost};

pub struct NetBox {
    /// 127.0.0.1:PORT in the machine's own namespace.
    pub addr: SocketAddr,
    pub token_file: PathBuf,
    token: String,
}

/// NetBox, up (the script is idempotent: a second run finds it running and returns at once).
pub fn netbox() -> &'static NetBox {
    static NB: OnceLock<NetBox> = OnceLock::new();
    NB.get_or_init(|| {
        harness::require_root();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let o = Command::new(repo.join("scripts/netbox.sh"))
            .arg("up")
            .output()
            .expect("run scripts/netbox.sh");
        assert!(
            o.status.success(),
            "scripts/netbox.sh up failed (NetBox is needed by these tests; they do not skip):\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let state = std::env::var("WEFT_NETBOX_STATE").unwrap_or_else(|_| "/var/tmp/weft-netbox".into());
        let env = std::fs::read_to_string(Path::new(&state).join("env")).expect("netbox env file");
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing from the netbox env file"))
                .to_string()
        };
        let token_file = PathBuf::from(get("NETBOX_TOKEN_FILE"));
        NetBox {
            addr: get("NETBOX_AUTHORITY").parse().unwrap(),
            token: std::fs::read_to_string(&token_file).unwrap().trim().to_string(),
            token_file,
        }
    })
}

impl NetBox {
    /// One API call; status and JSON body (Null when empty).
    pub fn api(&self, verb: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut c = Command::new("curl");
        c.args(["-s", "-m", "30", "-X", verb, "-w", "\n%{http_code}"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .args(["-H", "Accept: application/json"]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data"])
                .arg(b.to_string());
        }
        c.arg(format!("http://{}{}", self.addr, path));
        let o = c.output().expect("run curl");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        let code: u16 = code.trim().parse().unwrap_or(0);
        let v = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string()))
        };
        (code, v)
    }

    pub fn ok(&self, verb: &str, path: &str, body: Option<&Value>) -> Value {
        let (s, v) = self.api(verb, path, body);
        assert!((200..300).contains(&s), "NetBox {verb} {path}: {s} {v}");
        v
    }

    /// The addresses NetBox lists inside `cidr`: (address without mask, description, id).
    pub fn addresses(&self, cidr: &str) -> Vec<(String, String, u64)> {
        let v = self.ok(
            "GET",
            &format!("/api/ipam/ip-addresses/?parent={cidr}&limit=1000"),
            None,
        );
        let mut out: Vec<_> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["address"]
                        .as_str()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .to_string(),
                    a["description"].as_str().unwrap_or_default().to_string(),
                    a["id"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The id of prefix `cidr`, if NetBox has it.
    pub fn prefix(&self, cidr: &str) -> Option<u64> {
        let v = self.ok("GET", &format!("/api/ipam/prefixes/?prefix={cidr}"), None);
        v["results"]
            .as_array()
            .unwrap()
            .first()
            .and_then(|p| p["id"].as_u64())
    }

    /// Delete whatever NetBox holds inside `cidr` (a leftover of an earlier, killed run).
    pub fn clear(&self, cidr: &str) {
        for (_, _, id) in self.addresses(cidr) {
            self.api("DELETE", &format!("/api/ipam/ip-addresses/{id}/"), None);
        }
        let v = self.ok(
            "GET",
            &format!("/api/ipam/ip-ranges/?parent={cidr}&limit=1000"),
            None,
        );
        for r in v["results"].as_array().unwrap() {
            self.api("DELETE", &format!("/api/ipam/ip-ranges/{}/", r["id"]), None);
        }
        let v = self.ok(
            "GET",
            &format!("/api/ipam/prefixes/?within_include={cidr}&limit=1000"),
            None,
        );
        for p in v["results"].as_array().unwrap() {
            self.api("DELETE", &format!("/api/ipam/prefixes/{}/", p["id"]), None);
        }
    }
}

/// A /24 no other test of this process uses, inside 10.192.0.0/10, emptied in NetBox first.
pub fn subnet() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    // Spread by process id so that runs on the same NetBox rarely meet; clear() covers the rest.
    let k = (std::process::id() as usize * 37 + n) % (64 * 256);
    let cidr = format!("10.{}.{}.0/24", 192 + k / 256, k % 256);
    netbox().clear(&cidr);
    cidr
}

/// The n-th host of a /24 written as "a.b.c.0/24".
pub fn host(cidr: &str, n: u8) -> String {
    let base = cidr.split('/').next().unwrap();
    let mut o: Vec<&str> = base.split('.').collect();
    let last = n.to_string();
    o[3] = &last;
    o.join(".")
}

const FORWARD: u8 = 0;
const HANG: u8 = 1;

/// NetBox as seen from inside a test host: a TCP forwarder listening on 127.0.0.1 in the
/// host's namespace, connecting to NetBox on the machine's loopback. `stop` closes its port
/// (connections are refused, as when NetBox is down), `hang` accepts and never answers.
pub struct Proxy {
    pub port: std::sync::atomic::AtomicU16,
    ns: PathBuf,
    mode: Arc<AtomicU8>,
    pub accepted: Arc<AtomicUsize>,
    listener: Mutex<Option<Arc<TcpListener>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(h: &TestHost) -> Proxy {
        let p = Proxy {
            port: 0.into(),
            ns: h.host_ns.clone(),
            mode: Arc::new(AtomicU8::new(FORWARD)),
            accepted: Arc::new(AtomicUsize::new(0)),
            listener: Mutex::new(None),
            held: Arc::new(Mutex::new(vec![])),
        };
        let port = p.listen(0);
        p.port.store(port, Ordering::SeqCst);
        p
    }

    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// The authority the plugin is given.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    fn listen(&self, port: u16) -> u16 {
        let l = harness::in_ns(&self.ns, move || TcpListener::bind(("127.0.0.1", port)))
            .join()
            .unwrap()
            .expect("bind the proxy inside the test host");
        let l = Arc::new(l);
        let port = l.local_addr().unwrap().port();
        *self.listener.lock().unwrap() = Some(l.clone());
        let (mode, accepted, held) = (self.mode.clone(), self.accepted.clone(), self.held.clone());
        let target = netbox().addr;
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { break };
                if Arc::strong_count(&l) == 1 {
                    break; // stopped: this connection came in as the port closed
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                if mode.load(Ordering::SeqCst) == HANG {
                    held.lock().unwrap().push(c);
                    continue;
                }
                std::thread::spawn(move || splice(c, target));
            }
        });
        port
    }

    /// NetBox goes away: the port closes (new connections are refused).
    pub fn stop(&self) {
        if let Some(l) = self.listener.lock().unwrap().take() {
            // The accept loop holds the other reference: wake it so it sees it is alone.
            let addr = l.local_addr().unwrap();
            drop(l);
            let _ = harness::in_ns(&self.ns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            })
            .join();
        }
    }

    /// NetBox comes back on the same port.
    pub fn resume(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
        self.held.lock().unwrap().clear();
        if self.listener.lock().unwrap().is_none() {
            self.listen(self.port());
        }
    }

    /// NetBox accepts connections and never answers.
    pub fn hang(&self) {
        self.mode.store(HANG, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
        self.held.lock().unwrap().clear();
    }
}

fn splice(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut c, mut s) = (client, server);
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// Install the NetBox plugin on `h` as `name`, reaching NetBox through `proxy`, with more
/// install arguments.
pub fn install(h: &TestHost, proxy: &Proxy, name: &str, extra: &[&str]) -> String {
    let url = format!("url=http://{}", proxy.authority());
    let token = format!("token=@{}", netbox().token_file.display());
    let grant = format!("http={}", proxy.authority());
    let mut args = vec![
        "--grant",
        &grant,
        "--config",
        &url,
        "--config",
        &token,
        "--config",
        "host=test-host",
    ];
    args.extend_from_slice(extra);
    h.install_plugin(name, "netbox", &args)
}

/// Wait (up to `secs`) for a condition.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
