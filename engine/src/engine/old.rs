//! The [`Engine`]: the one facade over store, IPAM, drivers and kernel. Every public
//! operation is one transaction: one store write transaction (IPAM allocations and records),
//! one kernel [`Tx`] (journaled), committed together or rolled back together.
//!
//! Concurrency: mutations are serialised per engine (an async mutex) and across processes
//! sharing a state root (an flock on `<root>/weft.lock`); reads never wait.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ipnetwork::IpNetwork;

use crate::drivers::{Ctx, EndpointInfo, JoinLink, JoinTarget, NetworkDriver, Registry};
use crate::error::{Error, Result};
use crate::ipam::{
    native::NativeIpam, AddressRequest, Ipam, PoolRequest, GLOBAL_SPACE, LOCAL_SPACE,
};
use crate::model::*;
use crate::net::{ns, plan, Journal, Kernel, NsRef, Step, Tx};
use crate::plugin::adapters::{PluginDriver, PluginIpam};
use crate::plugin::{Grants, Kind, PluginHost, PluginRecord};
use crate::store::{get_json, get_str, list_json, put_json, ReadTxn, Store, Table, WriteTxn};

/// Where the engine keeps things.
#[derive(Debug, Clone)]
pub struct Config {
    /// State root (the embedded store): `/var/lib/weft`.
    pub root: PathBuf,
    /// Run dir (namespace pins, journals): `/run/weft`.
    pub run_root: PathBuf,
    /// The namespace that plays the host; `None` = the caller's own.
    pub host_netns: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/weft".into(),
            run_root: "/run/weft".into(),
            host_netns: None,
        }
    }
}

impl Config {
    /// Defaults, overridden by `WEFT_ROOT`, `WEFT_RUN_ROOT` and `WEFT_HOST_NETNS`.
    pub fn from_env() -> Self {
        let mut c = Config::default();
        if let Ok(v) = std::env::var("WEFT_ROOT") {
            c.root = v.into();
        }
        if let Ok(v) = std::env::var("WEFT_RUN_ROOT") {
            c.run_root = v.into();
        }
        if let Ok(v) = std::env::var("WEFT_HOST_NETNS") {
            c.host_netns = Some(v.into());
        }
        c
    }
}

/// The answer to `network create`.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: Id,
    pub warning: String,
}

/// The network engine.
pub struct Engine {
    cfg: Config,
    store: Arc<dyn Store>,
    kernel: Kernel,
    drivers: RwLock<Registry>,
    ipams: RwLock<BTreeMap<String, Arc<dyn Ipam>>>,
    op: tokio::sync::Mutex<()>,
    lock_file: File,
    plugins: Arc<PluginHost>,
}

/// Held for the length of a mutation.
struct OpGuard<'a> {
    _m: tokio::sync::MutexGuard<'a, ()>,
    fd: i32,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        unsafe { libc::flock(self.fd, libc::LOCK_UN) };
    }
}

/// How recovery tells whether an operation committed: the record it writes (or removes).
/// A journal found after a crash is replayed only if its witness says "not committed".
struct Witness {
    table: Table,
    key: String,
    /// The operation's commit makes the record exist (true) or vanish (false).
    present: bool,
}

impl Engine {
    /// Open (creating if needed) the state under `cfg`, clean up after any operation a crash
    /// interrupted, and make sure the predefined networks exist. Must be called inside a
    /// tokio runtime, which the engine then uses.
    pub async fn open(cfg: Config) -> Result<Engine> {
        for d in [
            &cfg.root,
            &cfg.run_root,
            &cfg.run_root.join("netns"),
            &cfg.run_root.join("journal"),
        ] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", d.display())))?;
        }
        let store = crate::store::redb_store::RedbStore::open(&cfg.root.join("weft.redb"))?;
        Self::open_with_store(cfg, Arc::new(store)).await
    }

    /// Like [`Engine::open`], with a store of the caller's choosing.
    pub async fn open_with_store(cfg: Config, store: Arc<dyn Store>) -> Result<Engine> {
        for d in [
            &cfg.root,
            &cfg.run_root.join("netns"),
            &cfg.run_root.join("journal"),
        ] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", d.display())))?;
        }
        let lock_path = cfg.root.join("weft.lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", lock_path.display())))?;
        let host = match &cfg.host_netns {
            Some(p) => p.clone(),
            None => pin_own_netns(&cfg.run_root.join("host.ns"))?,
        };
        let kernel = Kernel::open(Some(&host))?;
        let mut ipams: BTreeMap<String, Arc<dyn Ipam>> = BTreeMap::new();
        ipams.insert("default".into(), Arc::new(NativeIpam));
        let cfg_root = cfg.root.clone();
        let engine = Engine {
            cfg,
            store,
            kernel,
            drivers: RwLock::new(Registry::native()),
            ipams: RwLock::new(ipams),
            op: tokio::sync::Mutex::new(()),
            lock_file,
            plugins: Arc::new(PluginHost::new(&cfg_root)),
        };
        for rec in list_json::<PluginRecord>(&*engine.store.read()?, Table::Plugins)? {
            engine.register_plugin(rec);
        }
        {
            let _g = engine.lock().await;
            engine.recover().await?;
            engine.ensure_predefined().await?;
        }
        Ok(engine)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Add a driver (plugins register here).
    pub fn register_driver(&self, d: Arc<dyn NetworkDriver>) {
        self.drivers.write().unwrap().add(d);
    }
    pub fn unregister_driver(&self, name: &str) {
        self.drivers.write().unwrap().remove(name);
    }
    pub fn register_ipam(&self, i: Arc<dyn Ipam>) {
        self.ipams.write().unwrap().insert(i.name().to_string(), i);
    }
    pub fn unregister_ipam(&self, name: &str) {
        self.ipams.write().unwrap().remove(name);
    }
    pub fn driver_names(&self) -> Vec<String> {
        self.drivers
            .read()
            .unwrap()
            .names()
            .map(str::to_string)
            .collect()
    }

    fn driver(&self, name: &str) -> Result<Arc<dyn NetworkDriver>> {
        self.drivers
            .read()
            .unwrap()
            .get(name)
            .ok_or_else(|| Error::PluginNotFound(name.to_string()))
    }

    fn ipam(&self, name: &str) -> Result<Arc<dyn Ipam>> {
        self.ipams
            .read()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::PluginNotFound(name.to_string()))
    }

    async fn lock(&self) -> OpGuard<'_> {
        let m = self.op.lock().await;
        let fd = self.lock_file.as_raw_fd();
        // Another weft process sharing this root may hold it: wait without blocking the runtime.
        loop {
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        OpGuard { _m: m, fd }
    }

    fn journal(&self, op: &str, what: &str, w: Witness) -> Result<Journal> {
        let path = self.cfg.run_root.join("journal").join(format!("{op}.json"));
        let header = serde_json::json!({
            "op": op,
            "what": what,
            "witness": {"table": w.table.name(), "key": w.key, "present": w.present},
        });
        Journal::create(path, &header)
            .map_err(|e| Error::internal(format!("cannot write journal: {e}")))
    }

    /// Commit `w`, then drop the journal. On a failed commit, undo the kernel work.
    async fn commit(
        &self,
        w: Box<dyn WriteTxn + '_>,
        undo: Vec<Step>,
        journal: Option<Journal>,
    ) -> Result<()> {
        if let Err(e) = w.commit() {
            for err in plan::teardown(&self.kernel, &undo, None).await {
                tracing::warn!("undo after failed commit: {err}");
            }
            if let Some(j) = journal {
                j.remove();
            }
            return Err(e);
        }
        if let Some(j) = journal {
            j.remove();
        }
        Ok(())
    }

    /// Undo the kernel work of operations a crash interrupted: their journal is still there
    /// and their witness record says they did not commit.
    async fn recover(&self) -> Result<()> {
        let dir = self.cfg.run_root.join("journal");
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => vec![],
        };
        if entries.is_empty() {
            return Ok(());
        }
        entries.sort();
        let r = self.store.read()?;
        for path in entries {
            let Ok((header, steps)) = Journal::read(&path) else {
                continue;
            };
            let wit = &header["witness"];
            let committed = match (
                wit["table"].as_str().and_then(Table::from_name),
                wit["key"].as_str(),
                wit["present"].as_bool(),
            ) {
                (Some(t), Some(k), Some(present)) => r.get(t, k.as_bytes())?.is_some() == present,
                // An unreadable header: the kernel objects are the ones at risk of leaking.
                _ => false,
            };
            if !committed {
                tracing::warn!(
                    "undoing interrupted operation {} ({}): {} kernel changes",
                    header["op"].as_str().unwrap_or("?"),
                    header["what"].as_str().unwrap_or("?"),
                    steps.len()
                );
                for e in plan::teardown(&self.kernel, &steps, None).await {
                    tracing::warn!("recovery: {e}");
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    }

    /// bridge, host and none exist from the first start on.
    async fn ensure_predefined(&self) -> Result<()> {
        let r = self.store.read()?;
        let have: Vec<bool> = PREDEFINED
            .iter()
            .map(|n| get_str(&*r, Table::NetworkNames, n).map(|v| v.is_some()))
            .collect::<Result<_>>()?;
        drop(r);
        if have.iter().all(|x| *x) {
            return Ok(());
        }
        let avoid = self.host_routes().await?;
        let mut w = self.store.write()?;
        for (name, present) in PREDEFINED.iter().zip(have) {
            if present {
                continue;
            }
            let mut net = Network {
                id: new_id(),
                name: name.to_string(),
                driver: match *name {
                    "none" => "null".into(),
                    n => n.to_string(),
                },
                scope: Scope::Local,
                created: now_rfc3339(),
                enable_ipv4: *name == "bridge",
                enable_ipv6: false,
                internal: false,
                attachable: false,
                ingress: false,
                config_only: false,
                config_from: None,
                ipam_driver: "default".into(),
                ipam_options: BTreeMap::new(),
                pools: vec![],
                options: BTreeMap::new(),
                labels: BTreeMap::new(),
                predefined: true,
                realized: *name != "bridge",
                undo: vec![],
                driver_data: BTreeMap::new(),
            };
            if *name == "bridge" {
                use crate::drivers::bridge::*;
                for (k, v) in [
                    (OPT_DEFAULT, "true"),
                    (OPT_ICC, "true"),
                    (OPT_MASQ, "true"),
                    (OPT_HOST_BINDING, "0.0.0.0"),
                    (OPT_NAME, DEFAULT_BRIDGE),
                    (crate::drivers::OPT_MTU, "1500"),
                ] {
                    net.options.insert(k.into(), v.into());
                }
                let ipam = self.ipam("default")?;
                let req = PoolRequest {
                    address_space: LOCAL_SPACE.into(),
                    avoid: avoid.clone(),
                    ..Default::default()
                };
                let grant = ipam.request_pool(&mut *w, &req).await?;
                let gw = first_host(&grant.pool);
                ipam.request_address(
                    &mut *w,
                    &AddressRequest {
                        pool_id: grant.pool_id.clone(),
                        preferred: Some(gw),
                        ..Default::default()
                    },
                )
                .await?;
                net.pools.push(Pool {
                    pool_id: grant.pool_id,
                    subnet: grant.pool,
                    ip_range: None,
                    gateway: Some(gw),
                    aux_addresses: BTreeMap::new(),
                    user_subnet: false,
                });
            }
            save_network(&mut *w, &net)?;
        }
        w.commit()?;
        Ok(())
    }

    async fn host_routes(&self) -> Result<Vec<IpNetwork>> {
        Ok(self
            .kernel
            .host()
            .routes()
            .await?
            .into_iter()
            .map(|r| r.dst)
            .filter(|d| d.prefix() > 0)
            .collect())
    }

    // ================================================================== networks

    /// `network create`.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<Created> {
        let name = req.name.trim().to_string();
        if name.is_empty() {
            return Err(Error::invalid("network name is required"));
        }
        if PREDEFINED.contains(&name.as_str()) {
            return Err(Error::PredefinedCreate(name));
        }
        if !valid_network_name(&name) {
            return Err(Error::invalid(format!(
                "invalid network name {name:?}: use printable characters without spaces, '/', '\\\\' or ':'"
            )));
        }
        let driver_name = req
            .driver
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "bridge".into());
        let driver = self.driver(&driver_name)?;
        let caps = driver.capabilities();
        let scope = match req.scope.as_deref() {
            None | Some("") => caps.scope,
            Some("local") => Scope::Local,
            Some("global") => Scope::Global,
            Some("swarm") => Scope::Swarm,
            Some(s) => {
                return Err(Error::invalid(format!(
                    "invalid scope {s:?}: use local, global or swarm"
                )))
            }
        };
        if scope != caps.scope {
            return Err(Error::invalid(format!(
                "driver {driver_name} makes {} networks, not {}",
                caps.scope.as_str(),
                scope.as_str()
            )));
        }
        let has_v6_subnet = req
            .ipam_config
            .iter()
            .any(|c| c.subnet.is_some_and(|s| s.is_ipv6()));
        let enable_ipv6 = req.enable_ipv6.unwrap_or(false);
        let enable_ipv4 = req.enable_ipv4.unwrap_or(true);
        if has_v6_subnet && !enable_ipv6 {
            return Err(Error::invalid(
                "an IPv6 subnet was given but IPv6 is not enabled: add --ipv6, or remove the IPv6 subnet",
            ));
        }
        if !enable_ipv4 && !enable_ipv6 && caps.needs_ipam {
            return Err(Error::invalid(
                "a network needs IPv4 or IPv6: do not disable both",
            ));
        }
        if !enable_ipv4
            && req
                .ipam_config
                .iter()
                .any(|c| c.subnet.is_some_and(|s| s.is_ipv4()))
        {
            return Err(Error::invalid(
                "an IPv4 subnet was given but IPv4 is disabled: drop --ipv4=false or the subnet",
            ));
        }
        validate_ipam_config(&req.ipam_config)?;
        let ipam_name = req
            .ipam_driver
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "default".into());
        let ipam = self.ipam(&ipam_name)?;

        let _g = self.lock().await;
        let mut w = self.store.write()?;
        if get_str(w.as_read(), Table::NetworkNames, &name)?.is_some() {
            return Err(Error::NetworkNameExists(name));
        }
        let mut net = Network {
            id: new_id(),
            name: name.clone(),
            driver: driver_name.clone(),
            scope,
            created: now_rfc3339(),
            enable_ipv4,
            enable_ipv6,
            internal: req.internal,
            attachable: req.attachable,
            ingress: req.ingress,
            config_only: req.config_only,
            config_from: req.config_from.clone().filter(|s| !s.is_empty()),
            ipam_driver: ipam_name,
            ipam_options: req.ipam_options.clone(),
            pools: vec![],
            options: req.options.clone(),
            labels: req.labels.clone(),
            predefined: false,
            realized: false,
            undo: vec![],
            driver_data: BTreeMap::new(),
        };

        if caps.needs_ipam {
            let space = if scope == Scope::Local {
                LOCAL_SPACE
            } else {
                GLOBAL_SPACE
            };
            let mut wanted: Vec<(bool, Option<&IpamConfigRequest>)> = Vec::new();
            for v6 in [false, true] {
                if (v6 && !enable_ipv6) || (!v6 && !enable_ipv4) {
                    continue;
                }
                let cfgs: Vec<&IpamConfigRequest> = req
                    .ipam_config
                    .iter()
                    .filter(|c| c.subnet.is_some_and(|s| s.is_ipv6() == v6))
                    .collect();
                if cfgs.is_empty() {
                    wanted.push((v6, None));
                } else {
                    wanted.extend(cfgs.into_iter().map(|c| (v6, Some(c))));
                }
            }
            let avoid = if wanted.iter().any(|(_, c)| c.is_none()) {
                self.host_routes().await?
            } else {
                vec![]
            };
            for (v6, cfg) in wanted {
                let preq = PoolRequest {
                    address_space: space.into(),
                    pool: cfg.and_then(|c| c.subnet),
                    sub_pool: cfg.and_then(|c| c.ip_range),
                    options: req.ipam_options.clone(),
                    v6,
                    avoid: avoid.clone(),
                };
                let grant = ipam.request_pool(&mut *w, &preq).await?;
                let gw = cfg
                    .and_then(|c| c.gateway)
                    .unwrap_or_else(|| first_host(&grant.pool));
                let gw_addr = ipam
                    .request_address(
                        &mut *w,
                        &AddressRequest {
                            pool_id: grant.pool_id.clone(),
                            preferred: Some(gw),
                            options: gateway_opts(),
                        },
                    )
                    .await
                    .map_err(|e| match e {
                        Error::AddressInUse | Error::InvalidEndpointSettings(_) => Error::invalid(
                            format!("gateway {gw} cannot be used in {}: {e}", grant.pool),
                        ),
                        e => e,
                    })?;
                let mut aux = BTreeMap::new();
                if let Some(c) = cfg {
                    for (k, ip) in &c.aux_addresses {
                        ipam.request_address(
                            &mut *w,
                            &AddressRequest {
                                pool_id: grant.pool_id.clone(),
                                preferred: Some(*ip),
                                ..Default::default()
                            },
                        )
                        .await
                        .map_err(|e| Error::invalid(format!("aux address {k}={ip}: {e}")))?;
                        aux.insert(k.clone(), *ip);
                    }
                }
                net.pools.push(Pool {
                    pool_id: grant.pool_id,
                    subnet: grant.pool,
                    ip_range: cfg.and_then(|c| c.ip_range),
                    gateway: Some(gw_addr.ip()),
                    aux_addresses: aux,
                    user_subnet: cfg.is_some(),
                });
            }
        }

        // With the pools known, the driver checks the network against the others (shared
        // parents, overlapping subnets…). An error here only aborts the store transaction.
        let existing: Vec<Network> = list_json(w.as_read(), Table::Networks)?;
        driver.validate(&net, &existing)?;

        let op = new_id();
        let mut tx = self.kernel.tx(Some(self.journal(
            &op,
            "network create",
            Witness {
                table: Table::Networks,
                key: net.id.clone(),
                present: true,
            },
        )?));
        let made = driver
            .create_network(
                &mut Ctx {
                    tx: &mut tx,
                    store: &mut *w,
                },
                &mut net,
            )
            .await;
        if let Err(e) = made {
            tx.rollback().await;
            return Err(e);
        }
        let (undo, journal) = tx.finish();
        net.undo = undo.clone();
        net.realized = true;
        save_network(&mut *w, &net)?;
        self.commit(w, undo, journal).await?;
        tracing::info!(network = %net.name, id = %net.id, driver = %net.driver, "network created");
        Ok(Created {
            id: net.id,
            warning: String::new(),
        })
    }

    /// A network by full id, exact name or unique id prefix.
    pub fn network(&self, name_or_id: &str) -> Result<Network> {
        resolve_network(&*self.store.read()?, name_or_id)
    }

    /// All networks matching `filters` (Docker's `network ls --filter`), sorted by name.
    pub fn networks(&self, filters: &NetworkFilters) -> Result<Vec<Network>> {
        let r = self.store.read()?;
        let mut nets: Vec<Network> = list_json(&*r, Table::Networks)?;
        let mut keep = Vec::new();
        for n in nets.drain(..) {
            if network_matches(&*r, &n, filters)? {
                keep.push(n);
            }
        }
        keep.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keep)
    }

    /// The endpoints of a network.
    pub fn network_endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>> {
        network_endpoints(&*self.store.read()?, network_id)
    }

    /// `network rm`.
    pub async fn remove_network(&self, name_or_id: &str) -> Result<()> {
        let _g = self.lock().await;
        let mut w = self.store.write()?;
        let net = resolve_network(w.as_read(), name_or_id)?;
        self.remove_network_in(&mut *w, &net).await?;
        w.commit()?;
        tracing::info!(network = %net.name, "network removed");
        Ok(())
    }

    async fn remove_network_in(&self, w: &mut dyn WriteTxn, net: &Network) -> Result<()> {
        if net.predefined {
            return Err(Error::PredefinedRemove(net.name.clone()));
        }
        let eps = network_endpoints(w.as_read(), &net.id)?;
        if !eps.is_empty() {
            let mut names: Vec<String> = eps.iter().map(|e| e.name.clone()).collect();
            names.sort();
            return Err(Error::ActiveEndpoints {
                name: net.name.clone(),
                endpoints: names.join(", "),
            });
        }
        let driver = self.driver(&net.driver)?;
        let mut tx = self.kernel.tx(None);
        driver
            .delete_network(
                &mut Ctx {
                    tx: &mut tx,
                    store: w,
                },
                net,
            )
            .await?;
        let errors = plan::teardown(&self.kernel, &net.undo, None).await;
        if let Some(e) = errors.into_iter().next() {
            return Err(e.into());
        }
        let ipam = self.ipam(&net.ipam_driver)?;
        for p in &net.pools {
            if let Some(gw) = p.gateway {
                ipam.release_address(w, &p.pool_id, gw).await?;
            }
            for ip in p.aux_addresses.values() {
                ipam.release_address(w, &p.pool_id, *ip).await?;
            }
            ipam.release_pool(w, &p.pool_id).await?;
        }
        w.delete(Table::Networks, net.id.as_bytes())?;
        w.delete(Table::NetworkNames, net.name.as_bytes())?;
        self.drop_firewall_if_unused(w.as_read()).await
    }

    /// When no network has firewall rules any more, remove weft's table: the host's ruleset
    /// is left as it was before weft.
    async fn drop_firewall_if_unused(&self, r: &dyn ReadTxn) -> Result<()> {
        let nets: Vec<Network> = list_json(r, Table::Networks)?;
        if !nets
            .iter()
            .any(|n| n.undo.iter().any(|s| matches!(s, Step::Firewall { .. })))
        {
            self.kernel.firewall().reset().await?;
        }
        Ok(())
    }

    /// `network prune`: remove unused custom networks; returns their names.
    pub async fn prune_networks(&self, filters: &NetworkFilters) -> Result<Vec<String>> {
        for k in filters.filters.keys() {
            if !["label", "label!", "until"].contains(&k.as_str()) {
                return Err(Error::invalid(format!("invalid filter '{k}'")));
            }
        }
        let _g = self.lock().await;
        let mut w = self.store.write()?;
        let nets: Vec<Network> = list_json(w.as_read(), Table::Networks)?;
        let mut removed = Vec::new();
        for n in nets {
            if n.predefined || !network_endpoints(w.as_read(), &n.id)?.is_empty() {
                continue;
            }
            if !labels_match(&n.labels, filters) || !until_matches(&n.created, filters)? {
                continue;
            }
            self.remove_network_in(&mut *w, &n).await?;
            removed.push(n.name);
        }
        w.commit()?;
        removed.sort();
        Ok(removed)
    }

    // ================================================================= sandboxes

    /// `sandbox create`.
    pub async fn create_sandbox(&self, req: SandboxCreate) -> Result<Sandbox> {
        if !valid_sandbox_name(&req.name) {
            return Err(Error::invalid(format!(
                "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        if let Some(p) = &req.netns {
            if !ns::is_netns(p) {
                return Err(Error::invalid(format!(
                    "{} is not a network namespace: give a namespace file such as /proc/PID/ns/net",
                    p.display()
                )));
            }
        }
        let _g = self.lock().await;
        let mut w = self.store.write()?;
        if let Some(id) = get_str(w.as_read(), Table::SandboxNames, &req.name)? {
            return Err(Error::SandboxNameExists {
                name: req.name.clone(),
                id,
            });
        }
        let mode_req = req.network.clone().unwrap_or_else(|| "bridge".into());
        let id = new_id();
        let mut sb = Sandbox {
            id: id.clone(),
            name: req.name.clone(),
            created: now_rfc3339(),
            network_mode: mode_req.clone(),
            mode: NsMode::Owned,
            key: self.cfg.run_root.join("netns").join(&req.name),
            next_order: 0,
            undo: vec![],
        };
        let mut target_net = None;
        if mode_req == "host" {
            sb.mode = NsMode::Host;
            sb.key = self.kernel.host_path().to_path_buf();
        } else if mode_req == "none" {
            sb.mode = NsMode::None;
        } else if let Some(other) = mode_req.strip_prefix("container:") {
            let o = resolve_sandbox(w.as_read(), other)?;
            let root = match &o.mode {
                NsMode::Container { id } => load_sandbox(w.as_read(), id)?.unwrap_or(o.clone()),
                _ => o.clone(),
            };
            sb.mode = NsMode::Container {
                id: root.id.clone(),
            };
            sb.key = root.key.clone();
            sb.network_mode = format!("container:{}", root.id);
        } else {
            let net = resolve_network(w.as_read(), &mode_req)?;
            match net.driver.as_str() {
                "host" => {
                    sb.mode = NsMode::Host;
                    sb.key = self.kernel.host_path().to_path_buf();
                    sb.network_mode = "host".into();
                }
                "null" => {
                    sb.mode = NsMode::None;
                    sb.network_mode = "none".into();
                }
                _ => target_net = Some(net),
            }
        }
        if let Some(p) = &req.netns {
            if !matches!(sb.mode, NsMode::Owned) {
                return Err(Error::invalid(
                    "--netns cannot be combined with host, none or container: modes",
                ));
            }
            sb.mode = NsMode::External;
            sb.key = p.clone();
        }
        let op = new_id();
        let mut tx = self.kernel.tx(Some(self.journal(
            &op,
            "sandbox create",
            Witness {
                table: Table::Sandboxes,
                key: sb.id.clone(),
                present: true,
            },
        )?));
        let r = async {
            if matches!(sb.mode, NsMode::Owned | NsMode::None) {
                tx.apply(Step::Netns {
                    pin: sb.key.clone(),
                })
                .await?;
            }
            sb.undo = tx.undo_since(0);
            if let Some(mut net) = target_net {
                self.connect_in(&mut *w, &mut tx, &mut net, &mut sb, req.connect.clone())
                    .await?;
            } else if matches!(sb.mode, NsMode::Host | NsMode::None) {
                // Like Docker, a host- or none-mode sandbox shows up on that network, with no
                // interface or address of its own.
                let driver = if sb.mode == NsMode::Host {
                    "host"
                } else {
                    "null"
                };
                let name = if sb.mode == NsMode::Host {
                    "host"
                } else {
                    "none"
                };
                let net = get_str(w.as_read(), Table::NetworkNames, name)?
                    .map(|id| load_network(w.as_read(), &id))
                    .transpose()?
                    .flatten()
                    .filter(|n| n.predefined && n.driver == driver);
                if let Some(net) = net {
                    save_endpoint(&mut *w, &bare_endpoint(&net, &sb))?;
                    sb.next_order += 1;
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = r {
            tx.rollback().await;
            return Err(e);
        }
        let (undo, journal) = tx.finish();
        save_sandbox(&mut *w, &sb)?;
        self.commit(w, undo, journal).await?;
        tracing::info!(sandbox = %sb.name, "sandbox created");
        Ok(sb)
    }

    /// A sandbox by full id, exact name or unique id prefix.
    pub fn sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        resolve_sandbox(&*self.store.read()?, name_or_id)
    }

    pub fn sandboxes(&self) -> Result<Vec<Sandbox>> {
        let mut v: Vec<Sandbox> = list_json(&*self.store.read()?, Table::Sandboxes)?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// A sandbox's endpoints, in connect order.
    pub fn sandbox_endpoints(&self, sandbox_id: &str) -> Result<Vec<Endpoint>> {
        sandbox_endpoints(&*self.store.read()?, sandbox_id)
    }

    /// `sandbox rm`: disconnect everything, remove the namespace weft made. With `force`,
    /// sandboxes sharing this one's namespace (`container:`) go too.
    pub async fn remove_sandbox(&self, name_or_id: &str, force: bool) -> Result<()> {
        self.remove_sandboxes(&[name_or_id], force).await
    }

    /// Remove several sandboxes in one operation.
    pub async fn remove_sandboxes(&self, names: &[&str], force: bool) -> Result<()> {
        let _g = self.lock().await;
        let mut w = self.store.write()?;
        let mut todo = Vec::new();
        for n in names {
            todo.push(resolve_sandbox(w.as_read(), n)?);
        }
        let ids: HashSet<String> = todo.iter().map(|s| s.id.clone()).collect();
        for sb in todo.clone() {
            let mut sharers = Vec::new();
            for (k, _) in w.scan(Table::SandboxSharers, format!("{}/", sb.id).as_bytes())? {
                let k = String::from_utf8_lossy(&k).into_owned();
                let sid = k.split('/').nth(1).unwrap_or_default();
                if !ids.contains(sid) {
                    if let Some(s) = load_sandbox(w.as_read(), sid)? {
                        sharers.push(s);
                    }
                }
            }
            if !sharers.is_empty() {
                if !force {
                    let names: Vec<&str> = sharers.iter().map(|s| s.name.as_str()).collect();
                    return Err(Error::SandboxShared {
                        name: sb.name.clone(),
                        users: names.join(", "),
                    });
                }
                todo.extend(sharers);
            }
        }
        // Endpoints first, all sandboxes' together: their host links go in one batch.
        let mut logs: Vec<(Vec<Step>, Option<PathBuf>)> = Vec::new();
        for sb in &todo {
            let gone = matches!(sb.mode, NsMode::Owned | NsMode::None).then(|| sb.key.clone());
            for ep in sandbox_endpoints(w.as_read(), &sb.id)? {
                let net = load_network(w.as_read(), &ep.network_id)?.ok_or_else(|| {
                    Error::internal(format!("endpoint {} of a missing network", ep.id))
                })?;
                self.endpoint_hooks(&mut *w, &net, &ep, force).await?;
                self.release_endpoint(&mut *w, &net, &ep).await?;
                logs.push((ep.undo, gone.clone()));
            }
        }
        let refs: Vec<(&[Step], Option<&Path>)> = logs
            .iter()
            .map(|(u, g)| (u.as_slice(), g.as_deref()))
            .collect();
        if let Some(e) = plan::teardown_many(&self.kernel, &refs)
            .await
            .into_iter()
            .next()
        {
            if !force {
                return Err(e.into());
            }
            tracing::warn!("removing sandboxes: {e}");
        }
        for sb in &todo {
            let errors = plan::teardown(&self.kernel, &sb.undo, None).await;
            if let Some(e) = errors.into_iter().next() {
                if !force {
                    return Err(e.into());
                }
                tracing::warn!("removing sandbox {}: {e}", sb.name);
            }
            w.delete(Table::Sandboxes, sb.id.as_bytes())?;
            w.delete(Table::SandboxNames, sb.name.as_bytes())?;
            if let NsMode::Container { id } = &sb.mode {
                w.delete(Table::SandboxSharers, format!("{id}/{}", sb.id).as_bytes())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    // ======================================================== connect / disconnect

    /// `network connect`.
    pub async fn connect(
        &self,
        network: &str,
        sandbox: &str,
        opts: ConnectOptions,
    ) -> Result<Endpoint> {
        let _g = self.lock().await;
        let mut w = self.store.write()?;
        let mut net = resolve_network(w.as_read(), network)?;
        let mut sb = resolve_sandbox(w.as_read(), sandbox)?;
        let op = new_id();
        let mut tx = self.kernel.tx(Some(self.journal(
            &op,
            "connect",
            Witness {
                table: Table::SandboxEndpoints,
                key: format!("{}/{}", sb.id, net.id),
                present: true,
            },
        )?));
        let ep = match self
            .connect_in(&mut *w, &mut tx, &mut net, &mut sb, opts)
            .await
        {
            Ok(ep) => ep,
            Err(e) => {
                tx.rollback().await;
                return Err(e);
            }
        };
        let (undo, journal) = tx.finish();
        self.commit(w, undo, journal).await?;
        Ok(ep)
    }

    /// The body of connect, inside an operation.
    async fn connect_in(
        &self,
        w: &mut dyn WriteTxn,
        tx: &mut Tx<'_>,
        net: &mut Network,
        sb: &mut Sandbox,
        opts: ConnectOptions,
    ) -> Result<Endpoint> {
        if net.driver == "host" {
            return Err(Error::ConnectToHost);
        }
        match sb.mode {
            NsMode::Host | NsMode::Container { .. } => return Err(Error::SharedNamespace),
            NsMode::None => return Err(Error::NoneMode),
            _ => {}
        }
        let driver = self.driver(&net.driver)?;
        let caps = driver.capabilities();
        if !caps.connectable {
            return Err(if net.driver == "null" {
                Error::NoneMode
            } else {
                Error::ConnectToHost
            });
        }
        let key = format!("{}/{}", sb.id, net.id);
        if w.get(Table::SandboxEndpoints, key.as_bytes())?.is_some() {
            return Err(Error::EndpointExists {
                sandbox: sb.name.clone(),
                network: net.name.clone(),
            });
        }
        check_endpoint_settings(net, &opts)?;

        // The predefined bridge's kernel objects appear on first use.
        if !net.realized {
            let mark = tx.mark();
            driver
                .create_network(&mut Ctx { tx, store: w }, net)
                .await?;
            net.undo = tx.undo_since(mark);
            net.realized = true;
            save_network(w, net)?;
        }

        let ipam = self.ipam(&net.ipam_driver)?;
        let mut ep = Endpoint {
            requested_v4: opts.ipv4,
            requested_v6: opts.ipv6,
            aliases: opts.aliases.clone(),
            links: opts.links.clone(),
            driver_opts: opts.driver_opts.clone(),
            gw_priority: opts.gw_priority,
            ..bare_endpoint(net, sb)
        };
        if caps.needs_ipam {
            let mac_opt = opts.mac.clone();
            for v6 in [false, true] {
                let pools: Vec<&Pool> = net.pools.iter().filter(|p| p.is_v6() == v6).collect();
                if pools.is_empty() {
                    continue;
                }
                let want = if v6 { opts.ipv6 } else { opts.ipv4 };
                let (addr, pool) = allocate(&*ipam, w, &pools, want, mac_opt.as_deref()).await?;
                if v6 {
                    ep.ipv6 = Some(addr);
                    ep.pool_v6 = Some(pool);
                } else {
                    ep.ipv4 = Some(addr);
                    ep.pool_v4 = Some(pool);
                }
            }
        }
        ep.mac = match (&opts.mac, ep.ipv4) {
            (Some(m), _) => {
                if parse_mac(m).is_none() {
                    return Err(Error::InvalidEndpointSettings(format!(
                        "invalid MAC address: {m}"
                    )));
                }
                m.to_lowercase()
            }
            (None, Some(IpNetwork::V4(a))) => mac_from_ipv4(a.ip()),
            _ => random_mac(),
        };
        let siblings = sandbox_endpoints(w.as_read(), &sb.id)?;
        ep.ifname = self.next_ifname(tx, sb, &siblings).await?;
        let ns_ref = NsRef::Path(sb.key.clone());
        let mut info = EndpointInfo {
            id: ep.id.clone(),
            mac: ep.mac.clone(),
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            options: opts.driver_opts.clone(),
        };
        let mark = tx.mark();
        driver
            .create_endpoint(&mut Ctx { tx, store: w }, net, &mut info)
            .await?;
        ep.mac = info.mac.clone();
        let target = JoinTarget {
            ns: ns_ref.clone(),
            ifname: ep.ifname.clone(),
        };
        let join = driver
            .join(&mut Ctx { tx, store: w }, net, &info, &target)
            .await?;
        if let JoinLink::Move { name } = &join.link {
            if let Some(prefix) = join.ifname_prefix.as_deref().filter(|p| *p != "eth") {
                let used: HashSet<&str> = siblings.iter().map(|e| e.ifname.as_str()).collect();
                ep.ifname = (0..)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|n| !used.contains(n.as_str()))
                    .unwrap();
            }
            tx.apply(Step::MoveLink {
                name: name.clone(),
                to: ns_ref.clone(),
                new_name: ep.ifname.clone(),
                mtu: join.mtu,
                mac: Some(ep.mac.clone()),
            })
            .await?;
        }
        for addr in [ep.ipv4, ep.ipv6].into_iter().flatten() {
            tx.apply(Step::Address {
                ns: ns_ref.clone(),
                link: ep.ifname.clone(),
                addr,
            })
            .await?;
        }
        for (dst, via) in &join.routes {
            tx.apply(Step::Route {
                ns: ns_ref.clone(),
                dst: *dst,
                via: *via,
                dev: ep.ifname.clone(),
                metric: None,
                onlink: false,
            })
            .await?;
        }
        ep.gateway_v4 = join.gateway4;
        ep.gateway_v6 = join.gateway6;
        ep.gateway_onlink = join.gateway_onlink;
        // The default route: the gateway endpoint with the highest priority, earliest first.
        let holder = siblings.iter().find(|e| e.default_route);
        let wins = has_gateway(&ep) && holder.is_none_or(|h| ep.gw_priority > h.gw_priority);
        let mut displaced = None;
        if wins {
            if let Some(h) = holder {
                for s in default_route_steps(h, &NsRef::Path(sb.key.clone())) {
                    if let Some(inv) = s.inverse() {
                        tx.apply(inv).await?;
                    }
                }
                let mut h = h.clone();
                h.default_route = false;
                displaced = Some(h);
            }
            for s in default_route_steps(&ep, &ns_ref) {
                tx.apply(s).await?;
            }
            ep.default_route = true;
        }
        ep.undo = tx.undo_since(mark);
        if let Some(mut h) = displaced {
            // Its undo log no longer needs to delete a route that is gone.
            h.undo.retain(|s| !is_default_route_inverse(s));
            save_endpoint(w, &h)?;
        }
        sb.next_order += 1;
        save_endpoint(w, &ep)?;
        save_sandbox(w, sb)?;
        tracing::debug!(endpoint = %ep.id, network = %net.name, sandbox = %sb.name, "connected");
        Ok(ep)
    }

    async fn next_ifname(
        &self,
        tx: &mut Tx<'_>,
        sb: &Sandbox,
        siblings: &[Endpoint],
    ) -> Result<String> {
        let mut used: HashSet<String> = siblings.iter().map(|e| e.ifname.clone()).collect();
        if sb.mode == NsMode::External {
            // Someone else's namespace may have links of its own.
            let nl = tx.netlink(&NsRef::Path(sb.key.clone()))?;
            used.extend(nl.links().await?.into_iter().map(|l| l.name));
        }
        Ok((0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(n))
            .unwrap())
    }

    /// `network disconnect`.
    pub async fn disconnect(&self, network: &str, sandbox: &str, force: bool) -> Result<()> {
        let _g = self.lock().await;
        let mut w = self.store.write()?;
        let net = resolve_network(w.as_read(), network)?;
        let sb = match resolve_sandbox(w.as_read(), sandbox) {
            Ok(sb) => sb,
            Err(Error::SandboxNotFound(_)) if force => {
                // dockerd: with force and an unknown container, delete the endpoint by name.
                let ep = network_endpoints(w.as_read(), &net.id)?
                    .into_iter()
                    .find(|e| e.name == sandbox)
                    .ok_or_else(|| Error::SandboxNotFound(sandbox.to_string()))?;
                self.teardown_endpoint(&mut *w, &net, &ep, None, true)
                    .await?;
                w.commit()?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if net.driver == "host" {
            return Err(Error::DisconnectFromHost);
        }
        if net.driver == "null" {
            return Err(Error::DisconnectFromNone);
        }
        let key = format!("{}/{}", sb.id, net.id);
        let Some(ep_id) = get_str(w.as_read(), Table::SandboxEndpoints, &key)? else {
            return Err(Error::NotConnected {
                sandbox_id: sb.id.clone(),
                network: net.name.clone(),
            });
        };
        let ep: Endpoint = get_json(
            w.as_read(),
            Table::Endpoints,
            &format!("{}/{}", net.id, ep_id),
        )?
        .ok_or_else(|| Error::internal(format!("endpoint {ep_id} index without record")))?;
        self.teardown_endpoint(&mut *w, &net, &ep, None, force)
            .await?;
        // Hand the default route to the next gateway endpoint.
        let op = new_id();
        let mut journal = None;
        let mut undo = vec![];
        if ep.default_route {
            let rest = sandbox_endpoints(w.as_read(), &sb.id)?;
            let next = rest.iter().filter(|e| has_gateway(e)).max_by(|a, b| {
                a.gw_priority
                    .cmp(&b.gw_priority)
                    .then(b.order.cmp(&a.order))
            });
            if let Some(next) = next {
                let mut tx = self.kernel.tx(Some(self.journal(
                    &op,
                    "disconnect",
                    Witness {
                        table: Table::SandboxEndpoints,
                        key: key.clone(),
                        present: false,
                    },
                )?));
                let mut n = next.clone();
                let mark = tx.mark();
                let mut r = Ok(());
                for s in default_route_steps(&n, &NsRef::Path(sb.key.clone())) {
                    r = tx.apply(s).await;
                    if r.is_err() {
                        break;
                    }
                }
                if let Err(e) = r {
                    tx.rollback().await;
                    return Err(e.into());
                }
                n.undo.extend(tx.undo_since(mark));
                n.default_route = true;
                save_endpoint(&mut *w, &n)?;
                (undo, journal) = tx.finish();
            }
        }
        self.commit(w, undo, journal).await?;
        Ok(())
    }

    /// Remove an endpoint: driver hooks, kernel undo log, addresses, records.
    /// `gone_ns`: the sandbox's namespace is being destroyed, skip work inside it.
    async fn teardown_endpoint(
        &self,
        w: &mut dyn WriteTxn,
        net: &Network,
        ep: &Endpoint,
        gone_ns: Option<&Path>,
        force: bool,
    ) -> Result<()> {
        self.endpoint_hooks(w, net, ep, force).await?;
        let errors = plan::teardown(&self.kernel, &ep.undo, gone_ns).await;
        if let Some(e) = errors.into_iter().next() {
            if !force {
                return Err(e.into());
            }
            tracing::warn!("disconnect {} from {}: {e}", ep.name, net.name);
        }
        self.release_endpoint(w, net, ep).await
    }

    /// The driver's leave and delete-endpoint calls.
    async fn endpoint_hooks(
        &self,
        w: &mut dyn WriteTxn,
        net: &Network,
        ep: &Endpoint,
        force: bool,
    ) -> Result<()> {
        let driver = self.driver(&net.driver)?;
        let info = EndpointInfo {
            id: ep.id.clone(),
            mac: ep.mac.clone(),
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            options: ep.driver_opts.clone(),
        };
        let mut tx = self.kernel.tx(None);
        let hooks = async {
            let mut ctx = Ctx {
                tx: &mut tx,
                store: w,
            };
            driver.leave(&mut ctx, net, &info).await?;
            driver.delete_endpoint(&mut ctx, net, &info).await
        }
        .await;
        if let Err(e) = hooks {
            if !force {
                return Err(e);
            }
            tracing::warn!("driver {} leave/delete-endpoint: {e}", net.driver);
        }
        Ok(())
    }

    /// Give back an endpoint's addresses and forget it.
    async fn release_endpoint(
        &self,
        w: &mut dyn WriteTxn,
        net: &Network,
        ep: &Endpoint,
    ) -> Result<()> {
        let ipam = self.ipam(&net.ipam_driver)?;
        if let (Some(p), Some(a)) = (&ep.pool_v4, ep.ipv4) {
            ipam.release_address(w, p, a.ip()).await?;
        }
        if let (Some(p), Some(a)) = (&ep.pool_v6, ep.ipv6) {
            ipam.release_address(w, p, a.ip()).await?;
        }
        w.delete(Table::Endpoints, format!("{}/{}", net.id, ep.id).as_bytes())?;
        w.delete(
            Table::SandboxEndpoints,
            format!("{}/{}", ep.sandbox_id, net.id).as_bytes(),
        )?;
        Ok(())
    }

    // ================================================================== plugins

    fn register_plugin(&self, rec: PluginRecord) {
        match rec.kind {
            Kind::Driver => {
                self.register_driver(Arc::new(PluginDriver::new(self.plugins.clone(), rec)))
            }
            Kind::Ipam => self.register_ipam(Arc::new(PluginIpam::new(self.plugins.clone(), rec))),
        }
    }

    /// Install a plugin component under `name`. `grants` are `key=value` items; with
    /// `grant_requested`, the plugin first gets everything its metadata asks for.
    pub async fn install_plugin(
        &self,
        file: &Path,
        name: &str,
        grants: &[String],
        grant_requested: bool,
    ) -> Result<PluginRecord> {
        if !crate::plugin::valid_name(name) {
            return Err(Error::invalid(format!(
                "invalid plugin name {name:?}: use a lowercase letter, then a-z, 0-9, '-' or '_' (at most 32)"
            )));
        }
        const NATIVE: [&str; 8] = [
            "bridge", "host", "null", "none", "macvlan", "default", "overlay", "ipvlan",
        ];
        if NATIVE.contains(&name) {
            return Err(Error::Conflict(format!(
                "{name} is the name of one of weft's own drivers: choose another"
            )));
        }
        let (mut rec, bytes) = self.plugins.examine(file, name).await?;
        let mut g = Grants::minimal(name);
        if grant_requested {
            let a = rec.asked.clone();
            if let Some(p) = &a.link_prefix {
                g.apply(&format!("link-prefix={p}"))?;
            }
            for p in &a.parents {
                g.apply(&format!("parent={p}"))?;
            }
            for s in &a.sysctls {
                g.apply(&format!("sysctl={s}"))?;
            }
            for h in &a.http_hosts {
                g.apply(&format!("http={h}"))?;
            }
            if let Some(m) = a.memory_mib {
                g.apply(&format!("memory={m}M"))?;
            }
        }
        for spec in grants {
            g.apply(spec)?;
        }
        rec.grants = g;
        let _guard = self.lock().await;
        let mut w = self.store.write()?;
        if get_json::<PluginRecord>(w.as_read(), Table::Plugins, name)?.is_some() {
            return Err(Error::Conflict(format!(
                "plugin {name} is already installed: remove it first (weft plugin rm {name})"
            )));
        }
        if let Some(p) = &rec.grants.link_prefix {
            for other in list_json::<PluginRecord>(w.as_read(), Table::Plugins)? {
                if let Some(q) = &other.grants.link_prefix {
                    if p.starts_with(q.as_str()) || q.starts_with(p.as_str()) {
                        return Err(Error::Conflict(format!(
                            "link prefix {p} overlaps plugin {}'s prefix {q}: give this plugin another link-prefix",
                            other.name
                        )));
                    }
                }
            }
        }
        std::fs::create_dir_all(self.plugins.dir())?;
        let tmp = rec.file.with_extension("wasm.tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &rec.file))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::internal(format!(
                    "cannot store the plugin at {}: {e}",
                    rec.file.display()
                ))
            })?;
        put_json(&mut *w, Table::Plugins, name, &rec)?;
        w.commit()?;
        self.register_plugin(rec.clone());
        tracing::info!(plugin = %name, kind = rec.kind.as_str(), "plugin installed");
        Ok(rec)
    }

    pub fn plugins(&self) -> Result<Vec<PluginRecord>> {
        list_json(&*self.store.read()?, Table::Plugins)
    }

    pub fn plugin(&self, name: &str) -> Result<PluginRecord> {
        get_json(&*self.store.read()?, Table::Plugins, name)?
            .ok_or_else(|| Error::PluginNotFound(name.to_string()))
    }

    /// Remove a plugin (refused while a network uses it), its kv space and its files.
    pub async fn remove_plugin(&self, name: &str) -> Result<()> {
        let _guard = self.lock().await;
        let mut w = self.store.write()?;
        let rec: PluginRecord = get_json(w.as_read(), Table::Plugins, name)?
            .ok_or_else(|| Error::PluginNotFound(name.to_string()))?;
        let users: Vec<String> = list_json::<Network>(w.as_read(), Table::Networks)?
            .into_iter()
            .filter(|n| n.driver == name || n.ipam_driver == name)
            .map(|n| n.name)
            .collect();
        if !users.is_empty() {
            return Err(Error::Forbidden(format!(
                "plugin {name} is in use by network {}: remove the network first",
                users.join(", ")
            )));
        }
        let shared = list_json::<PluginRecord>(w.as_read(), Table::Plugins)?
            .iter()
            .any(|o| o.name != name && o.grants.kv_space == rec.grants.kv_space);
        if !shared {
            let mut prefix = rec.grants.kv_space.as_bytes().to_vec();
            prefix.push(0);
            for (k, _) in w.scan(Table::PluginKv, &prefix)? {
                w.delete(Table::PluginKv, &k)?;
            }
        }
        w.delete(Table::Plugins, name.as_bytes())?;
        w.commit()?;
        match rec.kind {
            Kind::Driver => self.unregister_driver(name),
            Kind::Ipam => self.unregister_ipam(name),
        }
        let _ = std::fs::remove_file(&rec.file);
        Ok(())
    }

    /// A cluster peer (its underlay address) appeared or went away: every driver hears of
    /// it (multi-host drivers program their tunnels).
    pub async fn cluster_peer(&self, peer: IpAddr, present: bool) -> Result<()> {
        let _guard = self.lock().await;
        let mut w = self.store.write()?;
        let drivers: Vec<Arc<dyn NetworkDriver>> = {
            let r = self.drivers.read().unwrap();
            r.names().filter_map(|n| r.get(n)).collect()
        };
        let mut tx = self.kernel.tx(None);
        for d in drivers {
            let mut ctx = Ctx {
                tx: &mut tx,
                store: &mut *w,
            };
            let r = if present {
                d.discover_new(&mut ctx, peer).await
            } else {
                d.discover_delete(&mut ctx, peer).await
            };
            if let Err(e) = r {
                tx.rollback().await;
                return Err(e);
            }
        }
        tx.finish();
        w.commit()?;
        Ok(())
    }

    /// Resolve a sandbox straight from a store (for `sandbox exec`, which needs no engine).
    pub fn resolve_sandbox_in(store: &dyn Store, key: &str) -> Result<Sandbox> {
        resolve_sandbox(&*store.read()?, key)
    }

    /// Remove every sandbox and custom network, the predefined bridge's kernel objects and
    /// weft's nftables table: the host is left as before weft's first use.
    pub async fn reset(&self) -> Result<()> {
        let ids: Vec<String> = self.sandboxes()?.into_iter().map(|s| s.id).collect();
        if !ids.is_empty() {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            self.remove_sandboxes(&refs, true).await?;
        }
        for n in self.networks(&NetworkFilters::default())? {
            if !n.predefined {
                self.remove_network(&n.id).await?;
            }
        }
        let _g = self.lock().await;
        let mut w = self.store.write()?;
        for mut n in list_json::<Network>(w.as_read(), Table::Networks)? {
            if n.predefined && n.realized && !n.undo.is_empty() {
                for e in plan::teardown(&self.kernel, &n.undo, None).await {
                    tracing::warn!("reset {}: {e}", n.name);
                }
                n.undo.clear();
                n.driver_data.clear();
                n.realized = false;
                save_network(&mut *w, &n)?;
            }
        }
        self.drop_firewall_if_unused(w.as_read()).await?;
        w.commit()?;
        Ok(())
    }
}

// ------------------------------------------------------------------ helpers

/// The caller's own namespace, pinned at `pin` so that it has a path that outlives this
/// process (host-mode sandboxes record it as their `SandboxKey`). Re-pinned when the caller
/// runs in another namespace than the one pinned.
fn pin_own_netns(pin: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    if std::fs::metadata(pin).map(|m| m.ino()).ok() == Some(own) {
        return Ok(pin.to_path_buf());
    }
    let _ = ns::remove_pinned(pin);
    std::fs::File::create(pin)?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/net"),
        pin,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::internal(format!(
            "cannot pin the host namespace at {}: {e}",
            pin.display()
        ))
    })?;
    Ok(pin.to_path_buf())
}

fn gateway_opts() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "RequestAddressType".into(),
        "com.docker.network.gateway".into(),
    );
    m
}

/// The first host address of a subnet (Docker's default gateway).
pub fn first_host(n: &IpNetwork) -> IpAddr {
    use crate::ipam::native::{ip_u128, u128_ip};
    let base = ip_u128(n.network());
    let host_bits = if n.is_ipv4() { 32 } else { 128 } - n.prefix() as u32;
    if host_bits <= 1 {
        return n.network();
    }
    u128_ip(base + 1, n.is_ipv6())
}

async fn allocate(
    ipam: &dyn Ipam,
    w: &mut dyn WriteTxn,
    pools: &[&Pool],
    want: Option<IpAddr>,
    mac: Option<&str>,
) -> Result<(IpNetwork, String)> {
    let mut options = BTreeMap::new();
    if ipam.capabilities().requires_mac_address {
        if let Some(m) = mac {
            options.insert(
                "com.docker.network.endpoint.macaddress".to_string(),
                m.to_string(),
            );
        }
    }
    if let Some(ip) = want {
        let pool = pools
            .iter()
            .find(|p| p.subnet.contains(ip))
            .ok_or_else(|| {
                Error::InvalidEndpointSettings(format!(
                    "no configured subnet or ip-range contain the IP address {ip}"
                ))
            })?;
        let a = ipam
            .request_address(
                w,
                &AddressRequest {
                    pool_id: pool.pool_id.clone(),
                    preferred: Some(ip),
                    options,
                },
            )
            .await?;
        return Ok((a, pool.pool_id.clone()));
    }
    let mut last = Error::PoolExhausted;
    for p in pools {
        match ipam
            .request_address(
                w,
                &AddressRequest {
                    pool_id: p.pool_id.clone(),
                    preferred: None,
                    options: options.clone(),
                },
            )
            .await
        {
            Ok(a) => {
                if !p.subnet.contains(a.ip()) {
                    return Err(Error::Plugin {
                        plugin: ipam.name().to_string(),
                        kind: crate::error::PluginErrorKind::BadReturn,
                        message: format!("returned address {a} outside the pool {}", p.subnet),
                    });
                }
                return Ok((a, p.pool_id.clone()));
            }
            Err(Error::PoolExhausted) => last = Error::PoolExhausted,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// An endpoint with nothing yet: no interface, no address. A host- or none-mode sandbox's
/// membership of that network stays like this; connect fills the rest in.
fn bare_endpoint(net: &Network, sb: &Sandbox) -> Endpoint {
    Endpoint {
        id: new_id(),
        network_id: net.id.clone(),
        sandbox_id: sb.id.clone(),
        name: sb.name.clone(),
        ifname: String::new(),
        mac: String::new(),
        ipv4: None,
        ipv6: None,
        pool_v4: None,
        pool_v6: None,
        gateway_v4: None,
        gateway_v6: None,
        gateway_onlink: false,
        requested_v4: None,
        requested_v6: None,
        aliases: vec![],
        links: vec![],
        driver_opts: BTreeMap::new(),
        gw_priority: 0,
        order: sb.next_order,
        default_route: false,
        undo: vec![],
    }
}

fn has_gateway(ep: &Endpoint) -> bool {
    ep.gateway_v4.is_some() || ep.gateway_v6.is_some()
}

fn default_route_steps(ep: &Endpoint, ns: &NsRef) -> Vec<Step> {
    let mut v = Vec::new();
    if let Some(gw) = ep.gateway_v4 {
        v.push(Step::Route {
            ns: ns.clone(),
            dst: "0.0.0.0/0".parse().unwrap(),
            via: Some(gw),
            dev: ep.ifname.clone(),
            metric: None,
            onlink: ep.gateway_onlink,
        });
    }
    if let Some(gw) = ep.gateway_v6 {
        v.push(Step::Route {
            ns: ns.clone(),
            dst: "::/0".parse().unwrap(),
            via: Some(gw),
            dev: ep.ifname.clone(),
            metric: None,
            onlink: ep.gateway_onlink,
        });
    }
    v
}

fn is_default_route_inverse(s: &Step) -> bool {
    matches!(s, Step::DelRoute { dst, .. } if dst.prefix() == 0)
}

fn check_endpoint_settings(net: &Network, opts: &ConnectOptions) -> Result<()> {
    if net.predefined {
        if opts.ipv4.is_some() || opts.ipv6.is_some() {
            return Err(Error::InvalidEndpointSettings(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        if !opts.aliases.is_empty() {
            return Err(Error::InvalidEndpointSettings(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
    }
    for (ip, v6) in [(opts.ipv4, false), (opts.ipv6, true)] {
        let Some(ip) = ip else { continue };
        if ip.is_ipv6() != v6 {
            return Err(Error::InvalidEndpointSettings(format!(
                "{ip} is not an IPv{} address",
                if v6 { 6 } else { 4 }
            )));
        }
        if !net.has_user_subnet(v6) {
            return Err(Error::InvalidEndpointSettings(
                "user specified IP address is supported only when connecting to networks with user configured subnets"
                    .into(),
            ));
        }
        if !net.pools.iter().any(|p| p.subnet.contains(ip)) {
            return Err(Error::InvalidEndpointSettings(format!(
                "no configured subnet or ip-range contain the IP address {ip}"
            )));
        }
    }
    Ok(())
}

/// The checks the docker CLI makes before it sends a create request (and dockerd repeats).
pub fn validate_ipam_config(cfgs: &[IpamConfigRequest]) -> Result<()> {
    for (i, c) in cfgs.iter().enumerate() {
        let Some(s) = c.subnet else {
            if c.ip_range.is_some() || c.gateway.is_some() || !c.aux_addresses.is_empty() {
                return Err(Error::invalid(
                    "every ip-range or gateway must have a corresponding subnet",
                ));
            }
            continue;
        };
        if let Some(r) = c.ip_range {
            if !s.contains(r.network()) || r.prefix() < s.prefix() || r.is_ipv4() != s.is_ipv4() {
                return Err(Error::invalid(format!("no matching subnet for range {r}")));
            }
        }
        if let Some(g) = c.gateway {
            if !s.contains(g) || g.is_ipv4() != s.is_ipv4() {
                return Err(Error::invalid(format!(
                    "no matching subnet for gateway {g}"
                )));
            }
        }
        for ip in c.aux_addresses.values() {
            if !s.contains(*ip) || ip.is_ipv4() != s.is_ipv4() {
                return Err(Error::invalid(format!(
                    "no matching subnet for aux-address {ip}"
                )));
            }
        }
        for other in &cfgs[..i] {
            if let Some(o) = other.subnet {
                if crate::ipam::native::overlaps(&o, &s) {
                    return Err(Error::invalid(
                        "multiple overlapping subnet configuration is not supported",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn labels_match(labels: &BTreeMap<String, String>, f: &NetworkFilters) -> bool {
    let m = |spec: &str| match spec.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(spec),
    };
    f.filters
        .get("label")
        .is_none_or(|v| v.iter().all(|s| m(s)))
        && f.filters
            .get("label!")
            .is_none_or(|v| v.iter().all(|s| !m(s)))
}

fn until_matches(created: &str, f: &NetworkFilters) -> Result<bool> {
    let Some(untils) = f.filters.get("until") else {
        return Ok(true);
    };
    let c = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::internal(format!("bad Created {created}: {e}")))?;
    for u in untils {
        let limit = parse_until(u)?;
        if c >= limit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `until=` takes a timestamp (RFC 3339 or Unix seconds) or a Go duration ago ("10m", "24h").
fn parse_until(u: &str) -> Result<time::OffsetDateTime> {
    let now = time::OffsetDateTime::now_utc();
    if let Ok(t) = time::OffsetDateTime::parse(u, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    if let Ok(secs) = u.parse::<i64>() {
        return time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| Error::invalid(e.to_string()));
    }
    let (num, unit) = u.split_at(
        u.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(u.len()),
    );
    let n: f64 = num.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid until filter {u:?}: use a timestamp or a duration like 24h"
        ))
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(Error::invalid(format!(
                "invalid until filter {u:?}: use a timestamp or a duration like 24h"
            )))
        }
    };
    Ok(now - time::Duration::seconds_f64(secs))
}

fn network_matches(r: &dyn ReadTxn, n: &Network, f: &NetworkFilters) -> Result<bool> {
    for (k, vals) in &f.filters {
        let ok = match k.as_str() {
            "driver" => vals.contains(&n.driver),
            "id" => vals.iter().any(|v| n.id.contains(v.as_str())),
            "name" => vals.iter().any(|v| n.name.contains(v.as_str())),
            "scope" => vals.iter().any(|v| v == n.scope.as_str()),
            "type" => {
                for v in vals {
                    if v != "custom" && v != "builtin" {
                        return Err(Error::invalid(format!("invalid filter 'type={v}'")));
                    }
                }
                vals.iter().any(|v| (v == "builtin") == n.predefined)
            }
            "label" | "label!" => labels_match(&n.labels, f),
            "dangling" => {
                let unused = !n.predefined && network_endpoints(r, &n.id)?.is_empty();
                vals.iter().any(|v| match parse_bool(v) {
                    Some(b) => b == unused,
                    None => false,
                })
            }
            other => return Err(Error::invalid(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

// ------------------------------------------------------------ typed records

fn load_network(r: &dyn ReadTxn, id: &str) -> Result<Option<Network>> {
    get_json(r, Table::Networks, id)
}

fn save_network(w: &mut dyn WriteTxn, n: &Network) -> Result<()> {
    put_json(w, Table::Networks, &n.id, n)?;
    w.put(Table::NetworkNames, n.name.as_bytes(), n.id.as_bytes())
}

fn load_sandbox(r: &dyn ReadTxn, id: &str) -> Result<Option<Sandbox>> {
    get_json(r, Table::Sandboxes, id)
}

fn save_sandbox(w: &mut dyn WriteTxn, s: &Sandbox) -> Result<()> {
    put_json(w, Table::Sandboxes, &s.id, s)?;
    if let NsMode::Container { id } = &s.mode {
        w.put(
            Table::SandboxSharers,
            format!("{id}/{}", s.id).as_bytes(),
            b"",
        )?;
    }
    w.put(Table::SandboxNames, s.name.as_bytes(), s.id.as_bytes())
}

fn save_endpoint(w: &mut dyn WriteTxn, e: &Endpoint) -> Result<()> {
    put_json(
        w,
        Table::Endpoints,
        &format!("{}/{}", e.network_id, e.id),
        e,
    )?;
    w.put(
        Table::SandboxEndpoints,
        format!("{}/{}", e.sandbox_id, e.network_id).as_bytes(),
        e.id.as_bytes(),
    )
}

fn network_endpoints(r: &dyn ReadTxn, network_id: &str) -> Result<Vec<Endpoint>> {
    r.scan(Table::Endpoints, format!("{network_id}/").as_bytes())?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(Into::into))
        .collect()
}

fn sandbox_endpoints(r: &dyn ReadTxn, sandbox_id: &str) -> Result<Vec<Endpoint>> {
    let mut out = Vec::new();
    for (k, ep_id) in r.scan(Table::SandboxEndpoints, format!("{sandbox_id}/").as_bytes())? {
        let k = String::from_utf8_lossy(&k);
        let net_id = k.split('/').nth(1).unwrap_or_default();
        let key = format!("{net_id}/{}", String::from_utf8_lossy(&ep_id));
        if let Some(ep) = get_json::<Endpoint>(r, Table::Endpoints, &key)? {
            out.push(ep);
        }
    }
    out.sort_by_key(|e| e.order);
    Ok(out)
}

/// Resolve in dockerd's order: full id, exact name, unique id prefix.
fn resolve<T: serde::de::DeserializeOwned>(
    r: &dyn ReadTxn,
    table: Table,
    names: Table,
    key: &str,
    not_found: impl Fn() -> Error,
    kind: &'static str,
) -> Result<T> {
    if key.is_empty() {
        return Err(not_found());
    }
    if key.len() == 64 {
        if let Some(v) = get_json(r, table, key)? {
            return Ok(v);
        }
    }
    if let Some(id) = get_str(r, names, key)? {
        if let Some(v) = get_json(r, table, &id)? {
            return Ok(v);
        }
    }
    if key.bytes().all(|c| c.is_ascii_hexdigit()) {
        let hits = r.scan(table, key.to_ascii_lowercase().as_bytes())?;
        match hits.len() {
            0 => {}
            1 => return Ok(serde_json::from_slice(&hits[0].1)?),
            n => {
                return Err(Error::Ambiguous {
                    kind,
                    name: key.to_string(),
                    count: n,
                    basis: "ID prefix",
                })
            }
        }
    }
    Err(not_found())
}

fn resolve_network(r: &dyn ReadTxn, key: &str) -> Result<Network> {
    resolve(
        r,
        Table::Networks,
        Table::NetworkNames,
        key,
        || Error::NetworkNotFound(key.to_string()),
        "network",
    )
}

fn resolve_sandbox(r: &dyn ReadTxn, key: &str) -> Result<Sandbox> {
    resolve(
        r,
        Table::Sandboxes,
        Table::SandboxNames,
        key,
        || Error::SandboxNotFound(key.to_string()),
        "container",
    )
}
