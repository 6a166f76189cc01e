//! Plugin costs: first compile, load from the compile cache, instantiate from an
//! InstancePre, a call round trip (host → guest → host imports → host), an IPAM call that
//! asks a loopback HTTP server for its pool (wasi:http through weft's gate and its bounds),
//! and the attach latency of the routed plugin against a native driver doing the same kernel
//! work.
//!
//! Run (root; builds the guests first): `cargo bench --bench plugins -- [--n 200]`

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weft::drivers::{Ctx, DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver};
use weft::model::{Network, NetworkCreate, SandboxCreate, Scope};
use weft::net::{NsRef, Step};
use weft::plugin::bindings::{driver, ipam};
use weft::plugin::egress::Slots;
use weft::plugin::host::HostState;
use weft::plugin::lend::Lent;
use weft::plugin::runtime::Runtime;
use weft::plugin::{Asked, Grants, Kind, PluginRecord};
use weft::store::mem::MemStore;
use weft::Engine;

mod common;
use common::{ms, pct, us, Scratch};

fn guests() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let out = Command::new(repo.join("scripts/build-guests.sh"))
        .output()
        .expect("build guests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn record(name: &str, kind: Kind, file: PathBuf) -> PluginRecord {
    let mut g = Grants::minimal(name);
    g.link_prefix = Some("rt".into());
    PluginRecord {
        name: name.into(),
        kind,
        file,
        sha256: String::new(),
        version: String::new(),
        description: String::new(),
        asked: Asked::default(),
        grants: g,
        scope: Scope::Local,
        requires_mac: false,
        requires_replay: false,
        external_connectivity: false,
        installed: String::new(),
        contract: "0.2.0".into(),
        config: Default::default(),
        compiled: None,
    }
}

/// The routed plugin's datapath, natively: the same steps, no Wasm.
struct NativeRouted;

#[async_trait]
impl NetworkDriver for NativeRouted {
    fn name(&self) -> &str {
        "native-routed"
    }
    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: true,
            attachment: weft::drivers::Attachment::Endpoints,
            external_connectivity: false,
            long_calls: false,
        }
    }
    async fn create_network(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> weft::Result<()> {
        let a = format!("nrg{}", &net.id[..10]);
        ctx.tx
            .apply(Step::Bridge {
                name: a.clone(),
                mtu: None,
                mac: None,
            })
            .await?;
        ctx.tx
            .apply(Step::LinkUp {
                ns: NsRef::Host,
                name: a.clone(),
            })
            .await?;
        ctx.tx
            .apply(Step::Route {
                ns: NsRef::Host,
                dst: "169.254.1.1/32".parse().unwrap(),
                via: None,
                dev: a,
                // As the routed plugin does: a metric per network.
                metric: Some(1000),
                onlink: false,
            })
            .await?;
        Ok(())
    }
    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        _net: &Network,
        ep: &EndpointInfo,
        t: &JoinTarget,
    ) -> weft::Result<JoinInfo> {
        let host = format!("nr{}", &ep.id[..10]);
        ctx.tx
            .apply(Step::Veth {
                name: host.clone(),
                peer: t.ifname.clone(),
                peer_ns: t.ns.clone(),
                master: None,
                mtu: None,
                peer_mac: Some(ep.mac.clone()),
                group: None,
                peer_ipv6: false,
            })
            .await?;
        for (k, v) in [
            ("net/ipv4/conf/{}/proxy_arp", "1"),
            ("net/ipv4/neigh/{}/proxy_delay", "0"),
            ("net/ipv4/conf/{}/forwarding", "1"),
        ] {
            ctx.tx
                .apply(Step::Sysctl {
                    ns: NsRef::Host,
                    key: k.replace("{}", &host),
                    value: v.into(),
                    keep: false,
                })
                .await?;
        }
        ctx.tx
            .apply(Step::LinkUp {
                ns: NsRef::Host,
                name: host.clone(),
            })
            .await?;
        let ip = ep.ipv4.unwrap().ip();
        ctx.tx
            .apply(Step::Route {
                ns: NsRef::Host,
                dst: ipnetwork::IpNetwork::new(ip, 32).unwrap(),
                via: None,
                dev: host,
                metric: None,
                onlink: false,
            })
            .await?;
        let mut j = JoinInfo::placed();
        j.gateway4 = Some(IpAddr::from([169, 254, 1, 1]));
        j.gateway_onlink = true;
        Ok(j)
    }
}

async fn attach_run(
    driver: &str,
    routed: &Path,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    let dir = Scratch::new(&format!("plugin-{driver}"));
    let host = dir.ns("host");
    let sbs: Vec<PathBuf> = (0..n).map(|i| dir.ns(&format!("c{i}"))).collect();
    let e = Engine::open(dir.config(&host)).await.unwrap();
    if driver == "routed" {
        e.install_plugin(routed, "routed", &[], true).await.unwrap();
    } else {
        e.register_driver(Arc::new(NativeRouted));
    }
    e.create_network(NetworkCreate {
        name: "r".into(),
        driver: Some(driver.into()),
        ipam_config: vec![weft::model::IpamConfigRequest {
            subnet: Some("10.123.0.0/16".parse().unwrap()),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut t = Vec::new();
    let mut own = Vec::new();
    let (mut kern, mut sync) = (Vec::new(), Vec::new());
    for (i, p) in sbs.iter().enumerate() {
        let (k0, c0) = (e.kernel().time_in_kernel(), e.store().commit_time());
        let s = Instant::now();
        e.create_sandbox(SandboxCreate {
            name: format!("c{i}"),
            network: Some("r".into()),
            netns: Some(p.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        let total = s.elapsed();
        t.push(total);
        let (k, c) = (
            e.kernel().time_in_kernel() - k0,
            e.store().commit_time() - c0,
        );
        own.push(total - k - c);
        kern.push(k);
        sync.push(c);
    }
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    e.remove_sandboxes(&refs, false).await.unwrap();
    (t, own, kern, sync)
}

/// Create+remove latency of sandboxes on a bridge network, with nothing else going on, and
/// while a hostile plugin spins in join on another network until its deadline.
fn isolation_run(hostile: &Path, rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = Scratch::new("plugin-isolation");
        let host = dir.ns("host");
        let e = Engine::open(dir.config(&host)).await.unwrap();
        let grants = ["link-prefix=hx".to_string(), "deadline=1s".to_string()];
        e.install_plugin(hostile, "hostile", &grants, false)
            .await
            .unwrap();
        let mut slow = NetworkCreate {
            name: "slow".into(),
            driver: Some("hostile".into()),
            ipam_config: vec![weft::model::IpamConfigRequest {
                subnet: Some("10.124.0.0/16".parse().unwrap()),
                ..Default::default()
            }],
            ..Default::default()
        };
        slow.options.insert("hostile".into(), "loop-join".into());
        e.create_network(slow).await.unwrap();
        e.create_network(NetworkCreate {
            name: "fast".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let one = |i: usize| {
            let e = e.clone();
            async move {
                let t = Instant::now();
                e.create_sandbox(SandboxCreate {
                    name: format!("f{i}"),
                    network: Some("fast".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
                e.remove_sandbox(&format!("f{i}"), false).await.unwrap();
                t.elapsed()
            }
        };
        let (mut idle, mut busy) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            for i in 0..20 {
                idle.push(one(i).await);
            }
            let spinner = {
                let e = e.clone();
                tokio::spawn(async move {
                    e.create_sandbox(SandboxCreate {
                        name: format!("stuck{r}"),
                        network: Some("slow".into()),
                        ..Default::default()
                    })
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut i = 100;
            while !spinner.is_finished() {
                busy.push(one(i).await);
                i += 1;
            }
            assert!(spinner.await.unwrap().is_err());
        }
        (idle, busy)
    })
}

/// `n` adapter calls (routed's create-endpoint) as the engine makes them.
async fn adapter_calls(routed: &Path, n: usize) -> Vec<Duration> {
    let scratch = Scratch::new("plugin-call");
    let host = scratch.ns("host");
    let kernel: Arc<dyn weft::net::Kernel> = Arc::new(
        weft::net::linux::LinuxKernel::open(Some(&host), &scratch.dir.join("h.ns")).unwrap(),
    );
    let ph = Arc::new(weft::plugin::PluginHost::new(&scratch.dir));
    let (mut rec, _) = ph.examine(routed, "routed").await.unwrap();
    rec.file = routed.to_path_buf();
    let d = weft::plugin::adapters::PluginDriver::new(ph.clone(), rec);
    let mem: Arc<dyn weft::store::Store> = Arc::new(MemStore::new());
    let mut txn = weft::store::Txn::new(mem).unwrap();
    let mut tx = weft::net::Tx::new(kernel, None, Arc::default()).unwrap();
    let mut net = Network::blank("n", "routed");
    net.realized = true;
    let mut t = Vec::new();
    for i in 0..n {
        let mut ep = EndpointInfo {
            id: format!("{i:064x}"),
            mac: "02:42:0a:00:00:02".into(),
            ipv4: Some("10.0.0.2/24".parse().unwrap()),
            ipv6: None,
            options: Default::default(),
            context: Default::default(),
        };
        let s = Instant::now();
        d.create_endpoint(
            &mut Ctx {
                tx: &mut tx,
                store: &mut txn,
            },
            &net,
            &mut ep,
        )
        .await
        .unwrap();
        t.push(s.elapsed());
    }
    t
}

/// `n` request-pool calls of the hostile IPAM in its `http-pool` mode, as the engine makes
/// them: each instantiates the component, which sends one GET over wasi:http (through the
/// gate: grant check, per-call and in-flight bounds, counted body) to a server on loopback
/// answering the pool, on a new connection each time.
async fn http_calls(hostile_ipam: &Path, n: usize) -> Vec<Duration> {
    use std::io::{Read, Write};
    use weft::ipam::{Ipam, PoolRequest};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n10.96.0.0/24\n",
            );
        }
    });
    let scratch = Scratch::new("plugin-http");
    let ph = Arc::new(weft::plugin::PluginHost::new(&scratch.dir));
    let (mut rec, _) = ph.examine(hostile_ipam, "hx").await.unwrap();
    rec.file = hostile_ipam.to_path_buf();
    rec.grants.apply(&format!("http=127.0.0.1:{port}")).unwrap();
    let ipam = weft::plugin::adapters::PluginIpam::new(ph.clone(), rec);
    let mem: Arc<dyn weft::store::Store> = Arc::new(MemStore::new());
    let mut txn = weft::store::Txn::new(mem).unwrap();
    let mut req = PoolRequest {
        address_space: "L".into(),
        ..Default::default()
    };
    req.options
        .insert("http-pool".into(), format!("127.0.0.1:{port}"));
    let mut t = Vec::new();
    for _ in 0..n {
        let s = Instant::now();
        let g = ipam.request_pool(&mut txn, &req).await.unwrap();
        t.push(s.elapsed());
        assert_eq!(g.pool.to_string(), "10.96.0.0/24");
    }
    t
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark makes namespaces: run it as root"
    );
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = guests();
    let routed = dir.join("weft_plugin_routed.wasm");
    let hostlocal = dir.join("weft_plugin_host_local.wasm");
    let rt_tmp = Scratch::new("plugin-cache");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `--only DRIVER`: attach rounds with that driver and nothing else (to profile one path).
    if args.iter().any(|a| a == "--http-only") {
        let mut all = vec![];
        for _ in 0..3 {
            all.extend(
                runtime.block_on(http_calls(&dir.join("weft_plugin_hostile_ipam.wasm"), 2000)),
            );
        }
        println!(
            "adapter call with one granted HTTP GET: {} median, {} p99",
            us(pct(&all, 0.5)),
            us(pct(&all, 0.99))
        );
        return;
    }
    if args.iter().any(|a| a == "--adapter-only") {
        let t = runtime.block_on(adapter_calls(&routed, 20_000));
        println!("adapter call: {} median", us(pct(&t, 0.5)));
        return;
    }
    if let Some(d) = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
    {
        if let Ok(f) = std::env::var("WEFT_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(f))
                .with_writer(std::io::stderr)
                .init();
        }
        runtime.block_on(async {
            let mut all = vec![];
            for _ in 0..5 {
                all.extend(attach_run(d, &routed, n).await.0);
            }
            println!("attach, {d} (N={n}): {} median", ms(pct(&all, 0.5)));
        });
        return;
    }
    runtime.block_on(async {
        let t = Instant::now();
        let rt = Runtime::new(&rt_tmp.dir).unwrap();
        println!("wasmtime engine + linkers:            {}", ms(t.elapsed()));
        let bytes = std::fs::read(&routed).unwrap();
        let t = Instant::now();
        let (c, compiled) = rt.compile(&bytes, "routed-bench").unwrap();
        println!("first compile of routed ({} KB):      {}", bytes.len() / 1024, ms(t.elapsed()));
        let mut loads = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            // As the engine loads an installed plugin: the cached file, its hash checked
            // against the one recorded at install.
            let _ = rt.load(&bytes, "routed-bench", Some(&compiled)).unwrap();
            loads.push(t.elapsed());
        }
        println!("load from the compile cache (hash checked): {} median", ms(pct(&loads, 0.5)));
        let _ = c;

        // Instantiate + a pure guest call, and an IPAM call that goes back to the host (kv).
        let hl = std::fs::read(&hostlocal).unwrap();
        let hc = rt.load(&hl, "hl-bench", None).unwrap();
        let pre = ipam::IpamPluginPre::new(rt.ipam_linker.instantiate_pre(&hc).unwrap()).unwrap();
        let rec = Arc::new(record("host-local", Kind::Ipam, hostlocal.clone()));
        let mem: Arc<dyn weft::store::Store> = Arc::new(MemStore::new());
        let mut txn = weft::store::Txn::new(mem.clone()).unwrap();
        let mut inst_t = Vec::new();
        let mut call_t = Vec::new();
        let mut kv_call_t = Vec::new();
        // A pool to allocate from (kv writes in the lent transaction).
        let lent = unsafe { weft::plugin::lend::store(&mut txn) };
        let mut store = wasmtime::Store::new(&rt.engine, HostState::new(rec.clone(), Slots::none(), Lent::none(), lent, Default::default()));
        store.set_fuel(u64::MAX).unwrap();
        store.set_epoch_deadline(u64::MAX / 2);
        let inst = pre.instantiate_async(&mut store).await.unwrap();
        let req = ipam::exports::weft::plugin::ipam::PoolRequest {
            address_space: "x".into(),
            pool: Some(weft::plugin::host::wit_prefix("10.200.0.0/16".parse().unwrap())),
            sub_pool: None,
            options: vec![],
            v6: false,
        };
        let pool = inst.weft_plugin_ipam().call_request_pool(&mut store, &req).await.unwrap().unwrap();
        for _ in 0..2000 {
            let t = Instant::now();
            let _ = inst.weft_plugin_ipam().call_capabilities(&mut store).await.unwrap();
            call_t.push(t.elapsed());
            let r = ipam::exports::weft::plugin::ipam::AddressRequest { pool_id: pool.pool_id.clone(), preferred: None, options: vec![], context: None };
            let t = Instant::now();
            let _ = inst.weft_plugin_ipam().call_request_address(&mut store, &r).await.unwrap().unwrap();
            kv_call_t.push(t.elapsed());
        }
        drop(store);
        let mut state_t = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let st = HostState::new(rec.clone(), Slots::none(), Lent::none(), Lent::none(), Default::default());
            let s = wasmtime::Store::new(&rt.engine, st);
            state_t.push(t.elapsed());
            drop(s);
        }
        println!("store + host state (WASI ctx):        {} median", us(pct(&state_t, 0.5)));
        for _ in 0..2000 {
            let mut s = wasmtime::Store::new(&rt.engine, HostState::new(rec.clone(), Slots::none(), Lent::none(), Lent::none(), Default::default()));
            s.set_fuel(u64::MAX).unwrap();
            s.set_epoch_deadline(u64::MAX / 2);
            let t = Instant::now();
            let _i = pre.instantiate_async(&mut s).await.unwrap();
            inst_t.push(t.elapsed());
        }
        drop(txn);
        println!("instantiate from an InstancePre:      {} median, {} p99", us(pct(&inst_t, 0.5)), us(pct(&inst_t, 0.99)));
        println!("call round trip, guest only:          {} median, {} p99", us(pct(&call_t, 0.5)), us(pct(&call_t, 0.99)));
        println!(
            "request-address (3–4 kv host calls): {} median, {} p99",
            us(pct(&kv_call_t, 0.5)),
            us(pct(&kv_call_t, 0.99))
        );
        let _ = driver::DriverPluginPre::<HostState>::new;

        // A whole adapter call as the engine makes it: load, store, instantiate, call, settle
        // (routed's create-endpoint, which checks the endpoint and returns).
        let t = adapter_calls(&routed, 1000).await;
        println!("adapter call (routed create-endpoint):     {} median, {} p99", us(pct(&t, 0.5)), us(pct(&t, 0.99)));
        let t = http_calls(&dir.join("weft_plugin_hostile_ipam.wasm"), 1000).await;
        println!("adapter call with one granted HTTP GET:    {} median, {} p99", us(pct(&t, 0.5)), us(pct(&t, 0.99)));

        // Attach: the routed plugin vs the same steps natively.
        // Alternate the two, three rounds, to spread the machine's noise over both.
        let (mut plugin, mut native, mut plugin_own, mut native_own) = (vec![], vec![], vec![], vec![]);
        let (mut pk, mut nk, mut pc, mut nc) = (vec![], vec![], vec![], vec![]);
        let rounds: usize =
            args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(3);
        for _ in 0..rounds {
            let (t, o, k, c) = attach_run("routed", &routed, n).await;
            plugin.extend(t);
            plugin_own.extend(o);
            pk.extend(k);
            pc.extend(c);
            let (t, o, k, c) = attach_run("native-routed", &routed, n).await;
            native.extend(t);
            native_own.extend(o);
            nk.extend(k);
            nc.extend(c);
        }
        let (p, q) = (pct(&plugin, 0.5), pct(&native, 0.5));
        println!("attach, routed plugin (N={n}):          {} median, {} p90 (outside kernel and fsync: {})", ms(p), ms(pct(&plugin, 0.9)), ms(pct(&plugin_own, 0.5)));
        println!("attach, same steps natively (N={n}):    {} median, {} p90 (outside kernel and fsync: {})", ms(q), ms(pct(&native, 0.9)), ms(pct(&native_own, 0.5)));
        println!("  kernel steps: plugin {} / native {}; store commit: plugin {} / native {}", ms(pct(&pk, 0.5)), ms(pct(&nk, 0.5)), ms(pct(&pc, 0.5)), ms(pct(&nc, 0.5)));
        println!("plugin / native:                      {:.2}×", p.as_secs_f64() / q.as_secs_f64());
    });
    // One slow plugin does not stall the host.
    let (idle, busy) = isolation_run(&dir.join("weft_plugin_hostile_driver.wasm"), 3);
    println!(
        "sandbox create+rm on a bridge network: {} median, {} p99 idle; {} median, {} p99 ({} ops) while a plugin spins to its 1 s deadline on another network",
        ms(pct(&idle, 0.5)),
        ms(pct(&idle, 0.99)),
        ms(pct(&busy, 0.5)),
        ms(pct(&busy, 0.99)),
        busy.len()
    );
}
