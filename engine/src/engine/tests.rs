//! The engine on an in-memory store and the fake kernel: driver step lists, rollback,
//! teardown, the default route, cancellation, the consistency check and repair — no root.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::drivers::{Ctx, DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget};
use crate::error::PluginErrorKind;
use crate::ipam::{AddressRequest, IpamCapabilities, PoolGrant, PoolRequest};
use crate::net::fake::FakeKernel;
use crate::store::mem::MemStore;
use crate::store::WriteTxn;

struct Fixture {
    dir: PathBuf,
    kernel: Arc<FakeKernel>,
    engine: Engine,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn fixture() -> Fixture {
    fixture_on(Arc::new(MemStore::new())).await
}

async fn fixture_on(store: Arc<dyn crate::store::Store>) -> Fixture {
    let dir = std::env::temp_dir().join(format!("weft-unit-{}", new_id()));
    let kernel = Arc::new(FakeKernel::new(dir.join("host.ns")));
    let cfg = Config {
        root: dir.join("root"),
        run_root: dir.join("run"),
        host_netns: Some(dir.join("host.ns")),
        boot_id: Some("boot-1".into()),
        ..Default::default()
    };
    let engine = Engine::open_with(cfg, store, kernel.clone()).await.unwrap();
    Fixture {
        dir,
        kernel,
        engine,
    }
}

fn net(name: &str) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        ..Default::default()
    }
}

fn sandbox(name: &str, network: &str) -> SandboxCreate {
    SandboxCreate {
        name: name.into(),
        network: Some(network.into()),
        ..Default::default()
    }
}

/// Everything the fake kernel holds but its log, as text: equal texts, equal kernels.
fn kernel_state(k: &FakeKernel) -> String {
    k.with(|s| format!("{:?} {:?} {:?}", s.namespaces, s.fdb, s.firewall))
}

/// Journals of operations: empty files are spares the engine keeps to reuse.
fn journals(f: &Fixture) -> usize {
    std::fs::read_dir(f.dir.join("run/journal"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
        .count()
}

#[test]
fn bridge_steps_are_recorded_and_removal_leaves_the_kernel_as_it_was() {
    rt().block_on(async {
        let f = fixture().await;
        let e = &f.engine;
        // ip_forward is turned on and left on (other networks, and the host, may rely on it).
        f.kernel.with(|s| {
            let h = s.namespaces.get_mut("host").unwrap();
            h.sysctls.insert("net/ipv4/ip_forward".into(), "1".into())
        });
        let before = kernel_state(&f.kernel);
        let id = e.create_network(net("web")).await.unwrap().id;
        assert_eq!(
            f.kernel.kinds(),
            ["bridge", "address", "sysctl", "sysctl", "sysctl", "firewall"]
        );
        let log = e.owned(&format!("net/{id}")).unwrap();
        let kinds: Vec<&str> = log.iter().map(|s| s.kind()).collect();
        // ip_forward is never undone (`keep`): the undo log has no sysctl.
        assert_eq!(kinds, ["del-link", "del-address", "firewall"]);

        let sb = e.create_sandbox(sandbox("sa", "web")).await.unwrap();
        let eps = e.sandbox_endpoints(&sb.id).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].ifname, "eth0");
        assert!(eps[0].default_route);
        assert_eq!(
            &f.kernel.kinds()[6..],
            ["netns", "veth", "hairpin", "sysctl", "address", "route"]
        );
        assert!(e.check().await.unwrap().is_empty());
        e.remove_sandbox("sa", false).await.unwrap();
        e.remove_network("web").await.unwrap();
        assert_eq!(kernel_state(&f.kernel), before, "nothing left");
        assert!(e.check().await.unwrap().is_empty());
        assert_eq!(journals(&f), 0);
    });
}

#[test]
fn a_failed_step_rolls_back_everything_and_records_nothing() {
    rt().block_on(async {
        let f = fixture().await;
        let e = &f.engine;
        e.create_network(net("web")).await.unwrap();
        let before = kernel_state(&f.kernel);
        for kind in ["veth", "address", "route"] {
            f.kernel.with(|s| s.fail = Some(kind.into()));
            let err = e.create_sandbox(sandbox("sa", "web")).await.unwrap_err();
            assert!(err.to_string().contains("injected"), "{err}");
            assert_eq!(kernel_state(&f.kernel), before, "after a failure at {kind}");
            assert!(e.sandbox("sa").is_err());
            assert_eq!(journals(&f), 0);
        }
        // No address leaked: the next sandbox gets the first one.
        let sb = e.create_sandbox(sandbox("sa", "web")).await.unwrap();
        let ip = e.sandbox_endpoints(&sb.id).unwrap()[0].ipv4.unwrap().ip();
        assert_eq!(ip.to_string(), "172.18.0.2");
        assert!(e.check().await.unwrap().is_empty());
    });
}

#[test]
fn the_default_route_moves_to_the_next_endpoint_and_survives_a_failed_handover() {
    rt().block_on(async {
        let f = fixture().await;
        let e = &f.engine;
        e.create_network(net("one")).await.unwrap();
        e.create_network(net("two")).await.unwrap();
        let sb = e.create_sandbox(sandbox("sa", "one")).await.unwrap();
        e.connect("two", "sa", ConnectOptions::default())
            .await
            .unwrap();
        let ns = sb.key.display().to_string();
        let routes = |k: &FakeKernel| {
            k.with(|s| {
                s.namespaces[&ns]
                    .routes
                    .iter()
                    .map(|r| r.2.clone())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(routes(&f.kernel), ["eth0"], "the first endpoint holds it");
        e.disconnect("one", "sa", false).await.unwrap();
        assert_eq!(routes(&f.kernel), ["eth1"], "handed over");
        assert!(e.sandbox_endpoints(&sb.id).unwrap()[0].default_route);
        assert!(e.check().await.unwrap().is_empty());

        // Again, with the handover failing: the disconnect still completes and the records
        // say what the kernel has (no endpoint left behind without its interface).
        e.connect(
            "one",
            "sa",
            ConnectOptions {
                gw_priority: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(routes(&f.kernel), ["eth0"], "higher priority takes it");
        f.kernel.with(|s| s.fail = Some("route".into()));
        e.disconnect("one", "sa", false).await.unwrap();
        f.kernel.with(|s| s.fail = None);
        let eps = e.sandbox_endpoints(&sb.id).unwrap();
        assert_eq!(eps.len(), 1);
        assert!(!eps[0].default_route);
        assert!(routes(&f.kernel).is_empty());
        assert!(e.check().await.unwrap().is_empty());
    });
}

/// A driver whose join waits until told (to cancel a connect half-way).
struct Slow {
    gate: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl crate::drivers::NetworkDriver for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: true,
            attachment: crate::drivers::Attachment::Endpoints,
            external_connectivity: false,
            long_calls: false,
        }
    }
    async fn create_network(&self, _: &mut Ctx<'_>, _: &mut Network) -> Result<()> {
        Ok(())
    }
    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        _: &Network,
        ep: &EndpointInfo,
        target: &JoinTarget,
    ) -> Result<JoinInfo> {
        ctx.tx
            .apply(crate::net::Step::Veth {
                name: format!("sl{}", &ep.id[..8]),
                peer: target.ifname.clone(),
                peer_ns: target.ns.clone(),
                master: None,
                mtu: None,
                peer_mac: None,
                group: None,
                peer_ipv6: false,
            })
            .await?;
        self.gate.notified().await;
        Ok(JoinInfo::placed())
    }
}

#[test]
fn a_cancelled_connect_is_rolled_back_and_its_locks_released() {
    rt().block_on(async {
        let f = fixture().await;
        let e = f.engine.clone();
        let gate = Arc::new(tokio::sync::Notify::new());
        e.register_driver(Arc::new(Slow { gate: gate.clone() }));
        let mut req = net("s");
        req.driver = Some("slow".into());
        e.create_network(req).await.unwrap();
        let before = kernel_state(&f.kernel);
        let e2 = e.clone();
        let task = tokio::spawn(async move {
            e2.create_sandbox(SandboxCreate {
                name: "sc".into(),
                network: Some("s".into()),
                ..Default::default()
            })
            .await
        });
        // Wait until the veth exists: the op is half-way.
        for _ in 0..200 {
            if f.kernel
                .link_names("host")
                .iter()
                .any(|l| l.starts_with("sl"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(f
            .kernel
            .link_names("host")
            .iter()
            .any(|l| l.starts_with("sl")));
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        // The dropped op is settled by a task it spawned, holding its locks: the next op on
        // the same network waits for it, then finds everything as before.
        for _ in 0..200 {
            if kernel_state(&f.kernel) == before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(kernel_state(&f.kernel), before, "rolled back");
        assert!(e.sandbox("sc").is_err());
        assert_eq!(journals(&f), 0);
        assert!(e.check().await.unwrap().is_empty());
        // A connect that is let through works.
        let e3 = e.clone();
        let ok = tokio::spawn(async move { e3.create_sandbox(sandbox("sd", "s")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.notify_waiters();
        ok.await.unwrap().unwrap();
    });
}

/// An IPAM whose first pool is always full (as a plugin says it: `exhausted`).
struct FullFirst(crate::ipam::native::NativeIpam);

#[async_trait]
impl Ipam for FullFirst {
    fn name(&self) -> &str {
        "fullfirst"
    }
    fn capabilities(&self) -> IpamCapabilities {
        IpamCapabilities::default()
    }
    async fn request_pool(&self, t: &mut dyn WriteTxn, r: &PoolRequest) -> Result<PoolGrant> {
        self.0.request_pool(t, r).await
    }
    async fn release_pool(&self, t: &mut dyn WriteTxn, id: &str) -> Result<()> {
        self.0.release_pool(t, id).await
    }
    async fn request_address(
        &self,
        t: &mut dyn WriteTxn,
        r: &AddressRequest,
    ) -> Result<ipnetwork::IpNetwork> {
        if r.preferred.is_none() && r.pool_id.contains("10.1.0.0") {
            return Err(Error::Plugin {
                plugin: "fullfirst".into(),
                kind: PluginErrorKind::Exhausted,
                message: "no addresses left".into(),
            });
        }
        self.0.request_address(t, r).await
    }
    async fn release_address(&self, t: &mut dyn WriteTxn, id: &str, a: IpAddr) -> Result<()> {
        self.0.release_address(t, id, a).await
    }
}

#[test]
fn a_full_plugin_pool_falls_through_to_the_next_pool() {
    rt().block_on(async {
        let f = fixture().await;
        let e = &f.engine;
        e.register_ipam(Arc::new(FullFirst(Default::default())));
        let mut req = net("two-pools");
        req.ipam_driver = Some("fullfirst".into());
        req.ipam_config = vec![
            IpamConfigRequest {
                subnet: Some("10.1.0.0/24".parse().unwrap()),
                ..Default::default()
            },
            IpamConfigRequest {
                subnet: Some("10.2.0.0/24".parse().unwrap()),
                ..Default::default()
            },
        ];
        e.create_network(req).await.unwrap();
        let sb = e.create_sandbox(sandbox("sa", "two-pools")).await.unwrap();
        let ip = e.sandbox_endpoints(&sb.id).unwrap()[0].ipv4.unwrap();
        assert_eq!(ip.to_string(), "10.2.0.2/24");
    });
}

#[test]
fn check_finds_each_kind_of_disagreement_and_repair_mends_them() {
    rt().block_on(async {
        let f = fixture().await;
        let e = &f.engine;
        e.create_network(net("web")).await.unwrap();
        let sb = e.create_sandbox(sandbox("sa", "web")).await.unwrap();
        e.create_sandbox(sandbox("sbb", "web")).await.unwrap();
        assert!(
            e.check().await.unwrap().is_empty(),
            "positive control: clean"
        );
        let veth = f
            .kernel
            .link_names("host")
            .into_iter()
            .find(|l| l.starts_with("veth"))
            .unwrap();
        // Someone deletes a sandbox's veth, leaves a link of weft's behind, and an address
        // is allocated that nobody holds; b's namespace disappears.
        f.kernel.with(|s| {
            let eth = s.namespaces["host"].links[&veth].peer.clone().unwrap();
            s.namespaces.get_mut("host").unwrap().links.remove(&veth);
            s.namespaces.get_mut(&eth.0).unwrap().links.remove(&eth.1);
            s.namespaces.get_mut("host").unwrap().links.insert(
                "vethdeadbeef".into(),
                crate::net::fake::FakeLink {
                    group: crate::net::kernel::WEFT_GROUP,
                    kind: "veth".into(),
                    ..Default::default()
                },
            );
        });
        let b = e.sandbox("sbb").unwrap();
        f.kernel
            .with(|s| s.namespaces.remove(&b.key.display().to_string()));
        let pool = e.network("web").unwrap().pools[0].pool_id.clone();
        {
            let mut t = crate::store::Txn::new(e.store().clone()).unwrap();
            e.ipam("default")
                .unwrap()
                .request_address(
                    &mut t,
                    &AddressRequest {
                        pool_id: pool,
                        preferred: Some("172.18.0.77".parse().unwrap()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            e.store().apply(&t.into_changes()).unwrap();
        }
        let found = e.check().await.unwrap();
        let text: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        let has = |k: FindingKind, s: &str| {
            found
                .iter()
                .any(|f| f.kind == k && f.to_string().contains(s))
        };
        assert!(
            has(FindingKind::Missing, &format!("link {veth}")),
            "{text:#?}"
        );
        assert!(has(FindingKind::Orphan, "vethdeadbeef"), "{text:#?}");
        assert!(has(FindingKind::Address, "172.18.0.77"), "{text:#?}");
        assert!(has(FindingKind::Missing, "sandbox sbb"), "{text:#?}");
        let fixed = e.repair().await.unwrap();
        assert!(!fixed.is_empty());
        let left = e.check().await.unwrap();
        assert!(left.is_empty(), "{left:#?}");
        assert!(e.sandbox("sbb").is_err(), "b's namespace died: b is gone");
        // a works again: its interface was made anew.
        let ns = sb.key.display().to_string();
        assert!(f.kernel.link_names(&ns).contains(&"eth0".to_string()));
    });
}

#[test]
fn a_reboot_removes_dead_sandboxes_and_makes_networks_again() {
    rt().block_on(async {
        let f = fixture().await;
        let e = f.engine.clone();
        e.create_network(net("web")).await.unwrap();
        e.create_sandbox(sandbox("sa", "web")).await.unwrap();
        e.create_sandbox(sandbox("sh", "host")).await.unwrap();
        let store = e.store().clone();
        drop(e);
        // The machine reboots: a new kernel (only lo), a new boot id, an empty run dir.
        let _ = std::fs::remove_dir_all(f.dir.join("run"));
        let kernel = Arc::new(FakeKernel::new(f.dir.join("host.ns")));
        let cfg = Config {
            root: f.dir.join("root"),
            run_root: f.dir.join("run"),
            host_netns: Some(f.dir.join("host.ns")),
            boot_id: Some("boot-2".into()),
            ..Default::default()
        };
        let e = Engine::open_with(cfg, store, kernel.clone()).await.unwrap();
        assert!(e.sandbox("sa").is_err(), "a died with the machine");
        assert!(e.sandbox("sh").is_ok(), "a host-mode sandbox lives on");
        let id = e.network("web").unwrap().id;
        assert!(kernel
            .link_names("host")
            .contains(&format!("br-{}", &id[..12])));
        // No address is left allocated for the sandbox that died (check counts them).
        assert!(e.check().await.unwrap().is_empty());
        e.create_sandbox(sandbox("sa", "web")).await.unwrap();
        assert!(e.check().await.unwrap().is_empty());
    });
}

#[test]
fn many_tasks_at_once_get_distinct_addresses() {
    rt().block_on(async {
        let f = fixture().await;
        let e = f.engine.clone();
        e.create_network(net("sa")).await.unwrap();
        e.create_network(net("sbb")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let n = if i % 2 == 0 { "sa" } else { "sbb" };
                let sb = e.create_sandbox(sandbox(&format!("s{i}"), n)).await?;
                Ok::<_, Error>(e.sandbox_endpoints(&sb.id)?[0].ipv4.unwrap().ip())
            }));
        }
        let mut ips = std::collections::HashSet::new();
        for t in tasks {
            assert!(ips.insert(t.await.unwrap().unwrap()));
        }
        assert_eq!(ips.len(), 40);
        assert!(e.check().await.unwrap().is_empty());
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        e.remove_sandboxes(&refs, false).await.unwrap();
        assert!(e.check().await.unwrap().is_empty());
    });
}

/// A driver like a Wasm plugin (long calls): its first create-network waits until told.
struct Gated {
    gate: Arc<tokio::sync::Notify>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl crate::drivers::NetworkDriver for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: true,
            attachment: crate::drivers::Attachment::Endpoints,
            external_connectivity: false,
            long_calls: true,
        }
    }
    async fn create_network(&self, _: &mut Ctx<'_>, _: &mut Network) -> Result<()> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            self.gate.notified().await;
        }
        Ok(())
    }
    async fn join(
        &self,
        _: &mut Ctx<'_>,
        _: &Network,
        _: &EndpointInfo,
        _: &JoinTarget,
    ) -> Result<JoinInfo> {
        Err(Error::invalid("gated networks take no sandboxes"))
    }
}

/// A create through a long-call driver lets go of the lock on names and pools while the
/// driver works, so another create goes first; the name or pool it took is then found by the
/// commit's check, and the slow create runs again and is refused as if it had waited.
#[test]
fn a_create_that_let_go_of_the_networks_lock_is_refused_for_what_was_taken_meanwhile() {
    rt().block_on(async {
        for clash in ["name", "subnet"] {
            let f = fixture().await;
            let e = f.engine.clone();
            let gate = Arc::new(tokio::sync::Notify::new());
            let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            e.register_driver(Arc::new(Gated {
                gate: gate.clone(),
                calls: calls.clone(),
            }));
            e.register_driver(Arc::new(Slow {
                gate: Arc::new(tokio::sync::Notify::new()),
            }));
            let subnet = |s: &str| IpamConfigRequest {
                subnet: Some(s.parse().unwrap()),
                ..Default::default()
            };
            let mut slow = net("x");
            slow.driver = Some("gated".into());
            slow.ipam_config = vec![subnet("10.50.0.0/24")];
            let e2 = e.clone();
            let task = tokio::spawn(async move { e2.create_network(slow).await });
            while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The slow create is in its driver: another goes through meanwhile.
            let mut fast = net(if clash == "name" { "x" } else { "y" });
            fast.driver = Some("slow".into());
            fast.ipam_config = vec![subnet(if clash == "name" {
                "10.51.0.0/24"
            } else {
                "10.50.0.0/24"
            })];
            tokio::time::timeout(Duration::from_secs(5), e.create_network(fast))
                .await
                .expect("the other create waited for the slow driver")
                .unwrap();
            gate.notify_waiters();
            let err = task.await.unwrap().unwrap_err();
            match clash {
                "name" => assert!(matches!(err, Error::NetworkNameExists(_)), "{err:?}"),
                _ => assert!(err.to_string().contains("overlap"), "{err}"),
            }
            // Refused before its driver on the second run.
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
            let names: Vec<String> = e
                .networks(&Default::default())
                .unwrap()
                .into_iter()
                .filter(|n| !n.predefined)
                .map(|n| n.name)
                .collect();
            assert_eq!(names.len(), 1, "{names:?}");
            assert!(e.check().await.unwrap().is_empty());
        }
    });
}

fn proptest_cases(default: u32) -> u32 {
    std::env::var("WEFT_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..Default::default()
    })
}

/// Bytes like `good` with some flipped, cut or inserted (or any bytes at all).
fn mangled(good: Vec<u8>) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let n = good.len();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (prop::collection::vec((0..n, any::<u8>()), 1..6), 0..=n).prop_map(move |(flips, cut)| {
            let mut g = good.clone();
            for (i, b) in flips {
                g[i] = b;
            }
            g.truncate(cut.max(1));
            g
        }),
    ]
}

/// A corrupted record (of a network, a sandbox, an endpoint) is an error naming its table and
/// key from every read that meets it, and from `system check`; never a panic.
#[test]
fn a_corrupt_record_is_an_error_naming_it_never_a_panic() {
    use proptest::prelude::*;
    rt().block_on(async {
        let f = fixture().await;
        let e = f.engine.clone();
        e.create_network(net("n")).await.unwrap();
        let sb = e.create_sandbox(sandbox("a", "n")).await.unwrap();
        let n = e.network("n").unwrap();
        let ep = e.network_endpoints(&n.id).unwrap().remove(0);
        let store = e.store().clone();
        let rows = [
            (
                Table::Networks,
                n.id.clone(),
                serde_json::to_vec(&n).unwrap(),
            ),
            (
                Table::Sandboxes,
                sb.id.clone(),
                serde_json::to_vec(&sb).unwrap(),
            ),
            (
                Table::Endpoints,
                format!("{}/{}", n.id, ep.id),
                serde_json::to_vec(&ep).unwrap(),
            ),
        ];
        let put = |t: Table, k: &str, v: &[u8]| {
            let mut w = crate::store::Txn::new(store.clone()).unwrap();
            w.put(t, k.as_bytes(), v).unwrap();
            store.apply(&w.into_changes()).unwrap();
        };
        let tests = std::sync::atomic::AtomicUsize::new(0);
        for (table, key, good) in rows {
            let mut r = runner(proptest_cases(100));
            r.run(&mangled(good.clone()), |bad| {
                put(table, &key, &bad);
                let outcomes: Vec<std::result::Result<(), String>> = vec![
                    e.networks(&Default::default())
                        .map(|_| ())
                        .map_err(|x| x.to_string()),
                    e.network("n").map(|_| ()).map_err(|x| x.to_string()),
                    e.sandboxes().map(|_| ()).map_err(|x| x.to_string()),
                    e.network_endpoints(&n.id)
                        .map(|_| ())
                        .map_err(|x| x.to_string()),
                ];
                let parses = serde_json::from_slice::<serde_json::Value>(&bad).is_ok();
                for o in outcomes {
                    if let Err(m) = o {
                        prop_assert!(m.contains(&key) && m.contains(&format!("{table:?}")), "{m}");
                    }
                }
                if !parses {
                    prop_assert!(
                        e.networks(&Default::default()).is_err()
                            || e.sandboxes().is_err()
                            || e.network_endpoints(&n.id).is_err(),
                        "a record that is not JSON read as fine"
                    );
                }
                tests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
            put(table, &key, &good);
        }
        assert!(tests.into_inner() > 0);
        // With every record good again, all is as before.
        assert!(e.check().await.unwrap().is_empty());
    });
}

/// Any datagram sent to a network's resolver gets no answer or a DNS answer with the query's
/// id; none makes it panic (the query a sandbox on the network sends, mangled, or any bytes).
#[test]
fn no_query_makes_the_resolver_panic() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use proptest::prelude::*;
    rt().block_on(async {
        let f = fixture().await;
        let e = f.engine.clone();
        e.create_network(net("n")).await.unwrap();
        let sb = e.create_sandbox(sandbox("a", "n")).await.unwrap();
        e.create_sandbox(sandbox("b", "n")).await.unwrap();
        let n = e.network("n").unwrap();
        let me = e.sandbox_endpoints(&sb.id).unwrap()[0].ipv4.unwrap().ip();
        let r = crate::dns::Resolver::new(e.clone(), &f.dir.join("resolv.conf"));
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii("b").unwrap(), RecordType::A));
        let good = m.to_vec().unwrap();
        // Control: the query as sent is answered, with b's address.
        let ok = Message::from_vec(&r.answer(&n.id, me, &good).unwrap()).unwrap();
        assert_eq!(ok.answers.len(), 1, "{ok:?}");
        let mut runner = runner(proptest_cases(2000));
        runner
            .run(&mangled(good), |q| {
                // A panic fails the run (proptest catches it and shrinks the input); an Err
                // is a query to forward.
                if let Ok(a) = r.answer(&n.id, me, &q) {
                    if !a.is_empty() {
                        let a = Message::from_vec(&a);
                        prop_assert!(a.is_ok(), "an answer that does not parse");
                        prop_assert_eq!(a.unwrap().metadata.id, u16::from_be_bytes([q[0], q[1]]));
                    }
                }
                Ok(())
            })
            .unwrap();
    });
}

/// Any body sent to the Docker API's network create or connect is taken or refused, never a
/// panic: the bodies the docker CLI sends, mangled.
#[test]
fn no_api_body_makes_it_panic() {
    let create = br#"{"Name":"n","Driver":"bridge","Internal":false,"Attachable":true,"IPAM":{"Driver":"default","Config":[{"Subnet":"10.1.0.0/24","IPRange":"10.1.0.0/25","Gateway":"10.1.0.1","AuxiliaryAddresses":{"a":"10.1.0.5"}}],"Options":{"x":"y"}},"Options":{"com.docker.network.bridge.enable_icc":"false"},"Labels":{"l":"v"},"EnableIPv6":true}"#.to_vec();
    let connect = br#"{"Container":"c","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.1.0.9","IPv6Address":"fd00::9"},"Aliases":["x"],"Links":["a:b"],"MacAddress":"02:42:0a:01:00:09","DriverOpts":{"k":"v"},"GwPriority":1}}"#.to_vec();
    // Controls: the bodies as sent are taken.
    serde_json::from_slice::<crate::api::body::CreateBody>(&create)
        .unwrap()
        .into_request()
        .unwrap();
    serde_json::from_slice::<crate::api::body::ConnectBody>(&connect)
        .unwrap()
        .endpoint_config
        .unwrap()
        .into_options()
        .unwrap();
    for good in [create, connect] {
        runner(proptest_cases(3000))
            .run(&mangled(good), |b| {
                // A panic fails the run (proptest catches it and shrinks the input).
                if let Ok(c) = serde_json::from_slice::<crate::api::body::CreateBody>(&b) {
                    let _ = c.into_request();
                }
                if let Ok(c) = serde_json::from_slice::<crate::api::body::ConnectBody>(&b) {
                    let _ = c.endpoint_config.map(|c| c.into_options());
                }
                Ok(())
            })
            .unwrap();
    }
}

/// A removal whose kernel step fails once is tried again and succeeds; one that keeps failing
/// fails the removal whole (the endpoint stays, recorded and in the kernel, as before), unless
/// forced (then it goes, with a warning). A disconnect parks the veth's sandbox end and leaves
/// the pair's deletion for later: a deletion that fails there is tried again, and one that
/// keeps failing is left recorded, for `system check` to show and the next reap to do.
#[cfg(feature = "failpoints")]
#[test]
fn a_removal_that_the_kernel_refuses_is_tried_again_then_fails_whole() {
    rt().block_on(async {
        let f = fixture().await;
        let e = f.engine.clone();
        e.create_network(net("one")).await.unwrap();
        e.create_network(net("two")).await.unwrap();
        e.create_sandbox(sandbox("sa", "one")).await.unwrap();
        e.connect("two", "sa", Default::default()).await.unwrap();
        let sb = e.sandbox("sa").unwrap();
        // Once: the deletion (the reap after the disconnect) is tried again, done.
        f.kernel.with(|s| s.fail = Some("del-link".into()));
        e.disconnect("two", "sa", false).await.unwrap();
        assert!(f.kernel.with(|s| s.fail.is_none()), "the failure was met");
        assert!(e.check().await.unwrap().is_empty());
        // Parking and deleting both fail: the disconnect fails and changes nothing (the
        // parked end is brought up again under its name).
        e.connect("two", "sa", Default::default()).await.unwrap();
        let before = kernel_state(&f.kernel);
        f.kernel.with(|s| s.fail = Some("rename".into()));
        e.set_failpoint(Some("del-link"));
        let err = e.disconnect("two", "sa", false).await.unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(kernel_state(&f.kernel), before, "nothing was removed");
        assert_eq!(
            e.sandbox_endpoints(&sb.id).unwrap().len(),
            2,
            "still connected"
        );
        // Forced: it goes, and says what it could not remove.
        f.kernel.with(|s| s.fail = Some("rename".into()));
        e.disconnect("two", "sa", true).await.unwrap();
        assert_eq!(e.sandbox_endpoints(&sb.id).unwrap().len(), 1);
        assert!(e
            .check()
            .await
            .unwrap()
            .iter()
            .any(|f| f.to_string().contains("veth")));
        e.set_failpoint(None);
        e.repair().await.unwrap();
        assert!(e.check().await.unwrap().is_empty());
        // Parked, the deletion failing: the disconnect is done, the pair left for later.
        e.connect("two", "sa", Default::default()).await.unwrap();
        e.set_failpoint(Some("del-link"));
        e.disconnect("two", "sa", false).await.unwrap();
        assert_eq!(e.sandbox_endpoints(&sb.id).unwrap().len(), 1);
        let found = e.check().await.unwrap();
        assert!(
            found
                .iter()
                .any(|f| f.to_string().contains("the deletion failed")),
            "{found:?}"
        );
        e.set_failpoint(None);
        assert_eq!(e.reap_links().await.unwrap(), 1);
        assert!(e.check().await.unwrap().is_empty());
    });
}

/// A store that counts the change sets applied to it (one per operation that commits).
struct Counting {
    inner: MemStore,
    applied: std::sync::atomic::AtomicUsize,
}

impl crate::store::Store for Counting {
    fn read(&self) -> Result<Box<dyn crate::store::ReadTxn>> {
        self.inner.read()
    }
    fn apply(
        &self,
        c: &crate::store::Changes,
    ) -> std::result::Result<(), crate::store::StoreError> {
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.apply(c)
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

/// Removals of sandboxes on one network asked for at once go together, in fewer operations
/// than removals, and each caller still gets its own answer: a name that does not exist,
/// and the second removal of one sandbox, are "no such sandbox"; every other one is removed.
#[test]
fn removals_at_once_go_together_and_each_gets_its_own_answer() {
    rt().block_on(async {
        let store = Arc::new(Counting {
            inner: MemStore::new(),
            applied: Default::default(),
        });
        let f = fixture_on(store.clone()).await;
        let (e, kernel) = (&f.engine, &f.kernel);
        e.create_network(net("comb")).await.unwrap();
        let before = kernel_state(kernel);
        const N: usize = 24;
        for i in 0..N {
            e.create_sandbox(sandbox(&format!("c{i}"), "comb"))
                .await
                .unwrap();
        }
        let applied = || store.applied.load(std::sync::atomic::Ordering::SeqCst);
        let start = applied();
        // c0 twice, and one that never was.
        let mut names: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
        names.push("c0".into());
        names.push("nosuch".into());
        let barrier = Arc::new(tokio::sync::Barrier::new(names.len()));
        let mut tasks = Vec::new();
        for n in names.clone() {
            let (e, b) = (e.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                e.remove_sandbox(&n, false).await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let removals = applied() - start;
        let not_found = |r: &Result<()>| matches!(r, Err(Error::SandboxNotFound(_)));
        for (n, r) in names.iter().zip(&results).skip(1).take(N - 1) {
            assert!(r.is_ok(), "{n}: {r:?}");
        }
        assert!(not_found(&results[N + 1]), "{:?}", results[N + 1]);
        let c0: Vec<&Result<()>> = vec![&results[0], &results[N]];
        assert_eq!(
            c0.iter().filter(|r| r.is_ok()).count(),
            1,
            "c0 removed once: {c0:?}"
        );
        assert_eq!(c0.iter().filter(|r| not_found(r)).count(), 1, "{c0:?}");
        // Each removal alone commits once (and reaps once more): together, far fewer.
        assert!(
            removals < N,
            "{N} removals made {removals} operations commit: they did not go together"
        );
        assert!(e.sandboxes().unwrap().is_empty());
        assert!(e.check().await.unwrap().is_empty());
        assert_eq!(kernel_state(kernel), before, "nothing left");
    });
}

/// The healer's check of what a change named (a sandbox's veth) takes only the locks of its
/// network and sandbox: it mends it while another network's operation holds that network —
/// when the whole check cannot start — and leaves the other network's drift to a check that
/// names it.
#[test]
fn a_scoped_heal_mends_what_the_change_named_under_its_own_locks_only() {
    rt().block_on(async {
        let f = fixture().await;
        let e = &f.engine;
        let veths = || -> Vec<String> {
            f.kernel
                .link_names("host")
                .into_iter()
                .filter(|l| l.starts_with("veth"))
                .collect()
        };
        e.create_network(net("n1")).await.unwrap();
        e.create_network(net("n2")).await.unwrap();
        let a = e.create_sandbox(sandbox("a", "n1")).await.unwrap();
        let before = veths();
        e.create_sandbox(sandbox("b", "n2")).await.unwrap();
        let va = before[0].clone();
        let vb = veths().into_iter().find(|v| *v != va).unwrap();
        assert!(e.check().await.unwrap().is_empty(), "control: clean");
        let cut = |v: &str| {
            f.kernel.with(|s| {
                let eth = s.namespaces["host"].links[v].peer.clone().unwrap();
                s.namespaces.get_mut("host").unwrap().links.remove(v);
                let ns = s.namespaces.get_mut(&eth.0).unwrap();
                ns.links.remove(&eth.1);
                // Its routes go with it, as in the kernel.
                ns.routes.retain(|r| r.2 != eth.1);
            })
        };
        cut(&va);
        cut(&vb);
        let scope = |v: &str| {
            let mut s = HealScope::default();
            s.add(&crate::net::watch::Change::Link(Some(v.to_string())));
            s
        };
        // An operation on n2 in flight: the whole check cannot start, a's check can.
        let n2 = e.network("n2").unwrap().id;
        let busy = e
            .inner
            .locks
            .acquire(&[super::network::net_lock(&n2)], false)
            .await
            .unwrap();
        assert!(
            e.heal(false, &HealScope::whole()).await.unwrap().is_none(),
            "control: the whole check waits for n2's operation"
        );
        assert!(
            e.heal(false, &scope(&vb)).await.unwrap().is_none(),
            "b's check waits for n2's operation"
        );
        let h = e
            .heal(false, &scope(&va))
            .await
            .unwrap()
            .expect("a's check needs nothing n2's operation holds");
        let fixed: Vec<String> = h.fixed.iter().map(|f| f.to_string()).collect();
        assert!(
            fixed.iter().any(|f| f.contains(&va))
                && fixed.iter().all(|f| f.contains("endpoint of a on n1")),
            "{fixed:#?}"
        );
        assert!(f
            .kernel
            .link_names(&a.key.display().to_string())
            .contains(&"eth0".to_string()));
        drop(busy);
        // b's veth was not in the scope: still missing, and the next scoped check mends it.
        let left: Vec<String> = e
            .check()
            .await
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert!(
            left.iter().any(|f| f.contains(&vb))
                && left.iter().all(|f| f.contains("endpoint of b on n2")),
            "only b's veth is left: {left:#?}"
        );
        let h = e.heal(false, &scope(&vb)).await.unwrap().unwrap();
        assert!(
            h.fixed.iter().any(|f| f.to_string().contains(&vb)),
            "{:?}",
            h.fixed
        );
        assert!(e.check().await.unwrap().is_empty());
        // A link no record owns: nothing to check, nothing done.
        let h = e.heal(false, &scope("vethnobody")).await.unwrap().unwrap();
        assert!(h.fixed.is_empty());
    });
}
