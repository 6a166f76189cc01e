//! The [`Engine`]: the one facade over store, IPAM, drivers and kernel, shared by every
//! caller of a process (it is a cheap handle; clone it into tasks). Split by concern:
//!
//! - [`op`]: the one transaction type every change goes through, and what happens to ops
//!   that end without a commit;
//! - [`locks`]: per-object and engine-wide locks, across tasks and processes;
//! - [`recover`]: opening — journals left by dead processes, the first open after a reboot,
//!   schema upgrades, the predefined networks;
//! - [`check`]: `system check` — every disagreement between records and kernel — and repair;
//! - [`network`]: networks and their pools; [`sandbox`]: sandboxes and their modes;
//!   [`endpoint`]: connect and disconnect; [`gateway`]: which endpoint holds the default
//!   route; [`plugins`]: installing Wasm plugins, cluster peers; [`follow`]: what this host
//!   does as the cluster store changes; [`exec`]: what `sandbox exec` needs;
//! - [`records`]: typed records, indexes and ownership records; [`filters`]: `ls` filters.

pub mod check;
mod endpoint;
pub mod exec;
pub mod filters;
pub mod follow;
mod gateway;
mod locks;
pub(crate) mod network;
mod op;
mod plugins;
mod reap;
pub mod records;
mod recover;
mod sandbox;
pub mod scoped;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::drivers::{NetworkDriver, Registry};
use crate::error::{Error, Result};
use crate::ipam::{native::NativeIpam, Ipam};
use crate::model::*;
use crate::net::failpoint::Failpoints;
use crate::net::Kernel;
use crate::store::{list_json, Store, Table};

pub use check::{Finding, FindingKind, Healed};
pub use filters::validate_ipam_config;
pub use records::Owned;
pub use scoped::HealScope;

use locks::Locks;
use op::Orphan;

/// Where the engine keeps things.
#[derive(Debug, Clone)]
pub struct Config {
    /// State root (the embedded store, installed plugins): `/var/lib/weft`.
    pub root: PathBuf,
    /// Run dir (namespace pins, journals, locks): `/run/weft`. A reboot empties it.
    pub run_root: PathBuf,
    /// The namespace that plays the host; `None` = the caller's own.
    pub host_netns: Option<PathBuf>,
    /// This boot's id; `None` = the kernel's (`/proc/sys/kernel/random/boot_id`). Tests set it
    /// to simulate a reboot.
    pub boot_id: Option<String>,
    /// ICC on the predefined `bridge` network (dockerd's `--icc`): `None` leaves it as it is
    /// (on, when first made); a change applies while the default bridge has no sandboxes.
    pub default_bridge_icc: Option<bool>,
    /// Keep every sandbox's resolv.conf, hosts and hostname files current (written when it is
    /// made and when its networks change): what the daemon does, for the Docker API's
    /// `ResolvConfPath`. Off, an embedder asks for them with [`Engine::sandbox_files`] and an
    /// attach writes no files (about 0.2 ms of work less).
    pub keep_sandbox_files: bool,
    /// How many past events to keep for subscribers that ask for them (`docker events
    /// --since`): dockerd keeps 256, and so does `weft daemon`. 0 (the library's default):
    /// none, and no event is made while no one listens.
    pub event_history: usize,
    /// The cluster store (etcd) and this host's address in it: global-scope networks (overlay),
    /// their IPAM and endpoints are shared with every host that names the same store.
    /// `None`: this host alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Another process's reaper (a `weft daemon` serving this state) deletes the links that
    /// removals leave for later: opening the engine does not delete left-over ones itself,
    /// and removals hand theirs over ([`Engine::hand_reaps_to`]). Podman's and CNI's doors set
    /// it when a daemon's socket is there — a process per call that reaped at every open
    /// would wait for the kernel once per call for what the previous call left.
    pub reaps_elsewhere: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/weft".into(),
            run_root: "/run/weft".into(),
            host_netns: None,
            boot_id: None,
            default_bridge_icc: None,
            keep_sandbox_files: false,
            event_history: 0,
            cluster: None,
            reaps_elsewhere: false,
        }
    }
}

impl Config {
    /// Defaults, overridden by `WEFT_ROOT`, `WEFT_RUN_ROOT`, `WEFT_HOST_NETNS`, `WEFT_ICC`
    /// (`true`/`false`), and `WEFT_CLUSTER_STORE` with `WEFT_ADVERTISE_ADDR` (and
    /// `WEFT_CLUSTER_TTL`, seconds) for the cluster store. A cluster setting that does not
    /// parse is said and left out.
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
        if let Ok(v) = std::env::var("WEFT_ICC") {
            c.default_bridge_icc = v.parse().ok();
            if c.default_bridge_icc.is_none() {
                tracing::warn!("WEFT_ICC={v:?} ignored: give true or false");
            }
        }
        if let Ok(store) = std::env::var("WEFT_CLUSTER_STORE") {
            let adv = std::env::var("WEFT_ADVERTISE_ADDR").unwrap_or_default();
            let ttl = std::env::var("WEFT_CLUSTER_TTL")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            match crate::cluster::ClusterConfig::parse(&store, &adv, ttl) {
                Ok(cc) => c.cluster = Some(cc),
                Err(e) => tracing::warn!("WEFT_CLUSTER_STORE ignored: {e}"),
            }
        }
        c
    }
}

/// A change to a network, as `GET /events` reports it (Docker's network events: `create`,
/// `connect`, `disconnect`, `destroy`, `prune`).
#[derive(Debug, Clone)]
pub struct Event {
    /// `create`, `connect`, `disconnect`, `destroy` or `prune`.
    pub action: &'static str,
    /// The network's id (empty for `prune`).
    pub network_id: Id,
    /// Docker's actor attributes: `name` and `type` (the driver), `container` for
    /// connect/disconnect.
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub time_nano: i128,
}

/// The answer to `network create`.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: Id,
    pub warning: String,
}

/// The network engine. Cheap to clone: clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: Config,
    events: tokio::sync::broadcast::Sender<Event>,
    /// The last `Config::event_history` events (sent under this lock, so a subscriber's past
    /// and live events neither overlap nor leave a gap).
    history: Mutex<std::collections::VecDeque<Event>>,
    activity: Arc<op::Activity>,
    /// The plugins registered in this process: name → (kind, sha256/installed), to notice
    /// installs and removals another process made.
    plugin_seen: Mutex<BTreeMap<String, (crate::plugin::Kind, String)>>,
    store: Arc<dyn Store>,
    kernel: Arc<dyn Kernel>,
    drivers: RwLock<Registry>,
    ipams: RwLock<BTreeMap<String, Arc<dyn Ipam>>>,
    locks: Locks,
    fp: Arc<Failpoints>,
    /// This process's spare journal files (an operation reuses one: no file made and
    /// deleted per operation).
    journals: Arc<crate::net::journal::JournalPool>,
    orphans: Mutex<Vec<Orphan>>,
    #[cfg(feature = "wasm")]
    plugins: Arc<crate::plugin::PluginHost>,
    /// The cluster store, when there is one.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// How many times each supervised task of this process was restarted.
    restarts: Mutex<BTreeMap<String, u64>>,
    /// Checks the daemon's healer ran after kernel changes (`system info`'s HealerChecks).
    heal_checks: std::sync::atomic::AtomicU64,
    /// Deferred link deletions: who does them.
    reaper: reap::Reaper,
    /// Sandbox removals waiting to go together (see `sandbox::Combiner`).
    combiner: sandbox::Combiner,
    /// The lease epoch under which the cluster task last settled this host against the
    /// global records (`u64::MAX`: not yet): see [`Engine::cluster_view_current`].
    settled_epoch: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// Open (creating if needed) the state under `cfg` on this machine's kernel, settle any
    /// operation a crash interrupted, catch up after a reboot, and make sure the predefined
    /// networks exist. Must be called inside a tokio runtime, which the engine then uses.
    pub async fn open(cfg: Config) -> Result<Engine> {
        for d in [&cfg.root, &cfg.run_root] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", d.display())))?;
        }
        // Earlier versions' `sandbox exec` copies of /etc files, kept under the state root and
        // never removed: they now live in the run dir with the sandbox.
        let _ = std::fs::remove_dir_all(cfg.root.join("resolv"));
        let store = crate::store::redb_store::RedbStore::open(&cfg.root.join("weft.redb"))?;
        let kernel = crate::net::linux::LinuxKernel::open(
            cfg.host_netns.as_deref(),
            &cfg.run_root.join("host.ns"),
        )?;
        Self::open_with(cfg, Arc::new(store), Arc::new(kernel)).await
    }

    /// A supervised task (the daemon's healer, resolver, cluster follower…) died and was
    /// started again.
    pub fn note_restart(&self, task: &str) {
        *self
            .inner
            .restarts
            .lock()
            .unwrap()
            .entry(task.to_string())
            .or_default() += 1;
    }

    /// The healer checks the kernel against the records after a change to weft's objects.
    pub fn note_heal_check(&self) {
        self.inner
            .heal_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Checks the healer ran so far (`system info`).
    pub fn heal_checks(&self) -> u64 {
        self.inner
            .heal_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Restarts per supervised task so far (`system info`).
    pub fn restarts(&self) -> BTreeMap<String, u64> {
        self.inner.restarts.lock().unwrap().clone()
    }

    /// The `panic:NAME` failpoint (tests only: makes a supervised task die once).
    pub fn failpoint_panic(&self, name: &str) {
        self.inner.fp.panic_point(name);
    }

    /// The cluster store of this engine, if it has one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.inner.cluster.as_ref()
    }

    /// Is this host's view of the global records current: connected to the cluster store,
    /// its mirror synced, and this host settled against it under the present lease (what
    /// another process of this host finished in etcd alone is then reflected here)? Always,
    /// without a cluster. The healer checks global networks only then: against a stale view
    /// a removal finished elsewhere looks like drift, and "mending" it makes it again.
    pub fn cluster_view_current(&self) -> bool {
        match self.cluster() {
            None => true,
            Some(c) => {
                c.connected()
                    && c.synced()
                    && self
                        .inner
                        .settled_epoch
                        .load(std::sync::atomic::Ordering::Acquire)
                        == c.lease_epoch()
            }
        }
    }

    /// Like [`Engine::open`], with a store and a kernel of the caller's choosing (an
    /// in-memory store, the fake kernel of [`crate::net::fake`]).
    pub async fn open_with(
        cfg: Config,
        store: Arc<dyn Store>,
        kernel: Arc<dyn Kernel>,
    ) -> Result<Engine> {
        for d in [
            &cfg.root,
            &cfg.run_root.join("netns"),
            &cfg.run_root.join("journal"),
        ] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", d.display())))?;
        }
        let locks = Locks::open(&cfg.run_root.join("weft.lock"))?;
        if let Some(cc) = &cfg.cluster {
            // An advertise address that is not this host's would fail silently (moby#17248).
            let mut tx = crate::net::Tx::new(kernel.clone(), None, Arc::default())?;
            let mut found = false;
            for l in tx.links(&crate::net::NsRef::Host).await? {
                let addrs = tx.addresses(&crate::net::NsRef::Host, &l.name).await?;
                if addrs.iter().any(|a| a.ip() == cc.advertise) {
                    found = true;
                    break;
                }
            }
            if !found {
                return Err(Error::invalid(format!(
                    "advertise address {} is not an address of this host: give one of its own (ip -br addr), on the network the hosts share",
                    cc.advertise
                )));
            }
        }
        // With a cluster store, global state goes to etcd (joined in the background: local
        // work never waits for it).
        let fp = Arc::new(Failpoints::from_env());
        let (store, cluster) = match &cfg.cluster {
            Some(cc) => {
                let c = crate::cluster::Cluster::start(cc.clone(), &cfg.root, &cfg.run_root)?;
                let s: Arc<dyn Store> = Arc::new(crate::store::split::SplitStore::new(
                    store,
                    c.clone(),
                    fp.clone(),
                ));
                (s, Some(c))
            }
            None => (store, None),
        };
        let mut registry = Registry::native();
        registry.add(Arc::new(crate::drivers::overlay::Overlay {
            vtep: cfg.cluster.as_ref().map(|c| c.advertise),
        }));
        let mut ipams: BTreeMap<String, Arc<dyn Ipam>> = BTreeMap::new();
        ipams.insert("default".into(), Arc::new(NativeIpam));
        #[cfg(feature = "wasm")]
        let plugins = Arc::new(crate::plugin::PluginHost::new(&cfg.root));
        let engine = Engine {
            inner: Arc::new(Inner {
                cfg,
                events: tokio::sync::broadcast::channel(1024).0,
                history: Default::default(),
                activity: Default::default(),
                plugin_seen: Default::default(),
                store,
                kernel,
                drivers: RwLock::new(registry),
                ipams: RwLock::new(ipams),
                locks,
                fp,
                journals: Default::default(),
                orphans: Mutex::new(Vec::new()),
                #[cfg(feature = "wasm")]
                plugins,
                cluster,
                restarts: Default::default(),
                heal_checks: Default::default(),
                reaper: Default::default(),
                combiner: Default::default(),
                settled_epoch: std::sync::atomic::AtomicU64::new(u64::MAX),
            }),
        };
        for rec in
            list_json::<crate::plugin::PluginRecord>(&*engine.inner.store.read()?, Table::Plugins)?
        {
            engine.register_plugin(rec);
        }
        engine.recover().await?;
        // Links a removal interrupted by a crash (or the daemon's stop) left for later.
        if !engine.inner.cfg.reaps_elsewhere && !engine.pending_reaps()?.is_empty() {
            if let Err(e) = engine.reap_links().await {
                tracing::warn!("deleting removed sandboxes' links: {e} (tried again later)");
            }
        }
        Ok(engine)
    }

    /// Network events from now on (a receiver that falls behind by over 1024 events loses the
    /// oldest; see [`tokio::sync::broadcast`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The kept events at or after `since` (Unix nanoseconds), and the events from now on:
    /// together, every event since then, once each.
    pub fn subscribe_since(
        &self,
        since: i128,
    ) -> (Vec<Event>, tokio::sync::broadcast::Receiver<Event>) {
        let h = self.inner.history.lock().unwrap();
        let past = h.iter().filter(|e| e.time_nano >= since).cloned().collect();
        (past, self.inner.events.subscribe())
    }

    /// Kernel changes others may have made to what weft owns (see [`crate::net::watch`]);
    /// `None` when the kernel cannot report them.
    pub fn watch_kernel(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<crate::net::watch::Change>>> {
        Ok(self.inner.kernel.watch()?)
    }

    /// `None` while one of this process's operations runs; otherwise how long since the last
    /// one ended. A kernel watcher uses it to tell weft's own changes from others'.
    pub fn quiet_for(&self) -> Option<std::time::Duration> {
        self.inner.activity.quiet_for()
    }

    /// Does anyone listen for events? (When not, nothing is looked up to tell them.)
    pub(crate) fn watched(&self) -> bool {
        self.inner.cfg.event_history > 0 || self.inner.events.receiver_count() > 0
    }

    /// A sandbox's endpoints with their networks, for connect/disconnect events; empty when
    /// no one listens.
    pub(crate) fn endpoint_events(&self, sb_id: &str) -> Vec<Network> {
        if !self.watched() {
            return Vec::new();
        }
        self.sandbox_endpoints(sb_id)
            .unwrap_or_default()
            .iter()
            .filter_map(|ep| self.network(&ep.network_id).ok())
            .collect()
    }

    /// Tell subscribers, if any, about a change that has committed.
    pub(crate) fn emit(
        &self,
        action: &'static str,
        net: Option<&Network>,
        container: Option<&str>,
    ) {
        let mut attributes = BTreeMap::new();
        if let Some(n) = net {
            attributes.insert("name".to_string(), n.name.clone());
            attributes.insert("type".to_string(), n.driver.clone());
        }
        if let Some(c) = container {
            attributes.insert("container".to_string(), c.to_string());
        }
        let ev = Event {
            action,
            network_id: net.map(|n| n.id.clone()).unwrap_or_default(),
            attributes,
            time_nano: time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
        };
        let keep = self.inner.cfg.event_history;
        let mut h = self.inner.history.lock().unwrap();
        if keep > 0 {
            if h.len() == keep {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        let _ = self.inner.events.send(ev);
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }
    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.inner.kernel
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Set a failpoint (see [`crate::net::failpoint`]; tests only).
    #[cfg(feature = "failpoints")]
    pub fn set_failpoint(&self, spec: Option<&str>) {
        self.inner.fp.set(spec);
    }

    /// Add a driver (plugins register here).
    pub fn register_driver(&self, d: Arc<dyn NetworkDriver>) {
        self.inner.drivers.write().unwrap().add(d);
    }
    pub fn unregister_driver(&self, name: &str) {
        self.inner.drivers.write().unwrap().remove(name);
    }
    pub fn register_ipam(&self, i: Arc<dyn Ipam>) {
        self.inner
            .ipams
            .write()
            .unwrap()
            .insert(i.name().to_string(), i);
    }
    pub fn unregister_ipam(&self, name: &str) {
        self.inner.ipams.write().unwrap().remove(name);
    }
    pub fn driver_names(&self) -> Vec<String> {
        self.inner
            .drivers
            .read()
            .unwrap()
            .names()
            .map(str::to_string)
            .collect()
    }

    fn driver(&self, name: &str) -> Result<Arc<dyn NetworkDriver>> {
        let get = || self.inner.drivers.read().unwrap().get(name);
        if let Some(d) = get() {
            return Ok(d);
        }
        // Installed by another process since this one registered its plugins?
        self.sync_plugins()?;
        get().ok_or_else(|| Error::PluginNotFound(name.to_string()))
    }

    fn ipam(&self, name: &str) -> Result<Arc<dyn Ipam>> {
        let get = || self.inner.ipams.read().unwrap().get(name).cloned();
        if let Some(i) = get() {
            return Ok(i);
        }
        self.sync_plugins()?;
        get().ok_or_else(|| Error::PluginNotFound(name.to_string()))
    }

    // ------------------------------------------------------------------- reads

    /// A network by full id, exact name or unique id prefix.
    /// The network with exactly this name (not an id prefix that happens to match: the
    /// doors for other runtimes name networks as those runtimes do).
    pub fn network_named(&self, name: &str) -> Result<Network> {
        match self.network(name) {
            Ok(n) if n.name == name => Ok(n),
            Ok(_) => Err(Error::NetworkNotFound(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// The sandbox with exactly this name (see [`Engine::network_named`]).
    pub fn sandbox_named(&self, name: &str) -> Result<Sandbox> {
        match self.sandbox(name) {
            Ok(s) if s.name == name => Ok(s),
            Ok(_) => Err(Error::SandboxNotFound(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Whether an IPAM of this name (weft's own, or an installed plugin) can serve.
    pub fn has_ipam(&self, name: &str) -> bool {
        self.ipam(name).is_ok()
    }

    pub fn network(&self, name_or_id: &str) -> Result<Network> {
        records::resolve_network(&*self.inner.store.read()?, name_or_id)
    }

    /// All networks matching `filters` (Docker's `network ls --filter`), sorted by name.
    pub fn networks(&self, f: &NetworkFilters) -> Result<Vec<Network>> {
        filters::networks(&*self.inner.store.read()?, f)
    }

    /// The endpoints of a network.
    pub fn network_endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>> {
        records::network_endpoints(&*self.inner.store.read()?, network_id)
    }

    /// A sandbox by full id, exact name or unique id prefix.
    pub fn sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        records::resolve_sandbox(&*self.inner.store.read()?, name_or_id)
    }

    pub fn sandboxes(&self) -> Result<Vec<Sandbox>> {
        let mut v: Vec<Sandbox> = list_json(&*self.inner.store.read()?, Table::Sandboxes)?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// A sandbox's endpoints, in connect order.
    pub fn sandbox_endpoints(&self, sandbox_id: &str) -> Result<Vec<Endpoint>> {
        records::sandbox_endpoints(&*self.inner.store.read()?, sandbox_id)
    }

    /// What weft made in the kernel for an object ("net/<id>", "ep/<net>/<ep>", "sb/<id>").
    pub fn owned(&self, key: &str) -> Result<Vec<crate::net::Step>> {
        records::owned(&*self.inner.store.read()?, key)
    }

    /// Resolve a sandbox straight from a store (for `sandbox exec`, which needs no engine).
    pub fn resolve_sandbox_in(store: &dyn Store, key: &str) -> Result<Sandbox> {
        records::resolve_sandbox(&*store.read()?, key)
    }

    /// Where a sandbox's resolv.conf, hosts and hostname files live (under the run dir).
    pub fn sandbox_files_dir(&self, sandbox_id: &str) -> PathBuf {
        SandboxFiles::dir_under(&self.inner.cfg.run_root, sandbox_id)
    }

    /// Where a sandbox's resolv.conf, hosts and hostname are (what `inspect` shows), without
    /// writing anything: with [`Config::keep_sandbox_files`] (the daemon) the engine writes
    /// them when the sandbox is made or its networks change.
    pub fn sandbox_file_paths(&self, sandbox_id: &str) -> SandboxFiles {
        SandboxFiles::under(&self.inner.cfg.run_root, sandbox_id)
    }

    /// After a change committed: write a sandbox's files as its records say then, in the
    /// background (off the request's path: the answer does not wait for them, and they are
    /// there a fraction of a millisecond later). Each write reads the records as they are when
    /// it runs, so the last one to run writes the latest state. A failure is logged: the files
    /// are derived, and written again at the next change.
    ///
    /// A sandbox in a namespace a runtime gave (`--netns`: Podman, a CNI runtime, containerd)
    /// gets its /etc files from that runtime, as with netavark: weft writes its own for it only
    /// once they are asked for ([`Engine::sandbox_files`], `sandbox exec`), and keeps those
    /// current from then on.
    pub(crate) fn refresh_sandbox_files(&self, sandbox_id: &str) {
        if !self.inner.cfg.keep_sandbox_files {
            return;
        }
        let (e, id) = (self.clone(), sandbox_id.to_string());
        tokio::task::spawn_blocking(move || {
            let Ok(sb) = e.sandbox(&id) else {
                return; // removed meanwhile: its files went with it
            };
            if sb.mode == NsMode::External && !e.sandbox_files_dir(&id).exists() {
                return; // its runtime's /etc files, not weft's: none asked for
            }
            if let Err(err) = e.sandbox_files(&sb) {
                tracing::warn!(sandbox = %id, "its /etc files: {err}");
            }
        });
    }

    /// Write a sandbox's resolv.conf, hosts and hostname files as they are now (what `sandbox
    /// exec` binds over /etc, Docker's `ResolvConfPath`, `HostsPath` and `HostnamePath`) and
    /// return their paths, for a runtime to bind into its container. Written in place when
    /// changed, so bind mounts of them see the change; removed with the sandbox.
    pub fn sandbox_files(&self, sb: &Sandbox) -> Result<SandboxFiles> {
        Engine::write_sandbox_files(&*self.inner.store, &self.inner.cfg.run_root, sb)
    }

    /// [`Engine::sandbox_files`] from a store and a run dir, with no engine open (`sandbox
    /// exec` without a daemon).
    pub(crate) fn write_sandbox_files(
        store: &dyn Store,
        run_root: &std::path::Path,
        sb: &Sandbox,
    ) -> Result<SandboxFiles> {
        let files = SandboxFiles::under(run_root, &sb.id);
        let dir = SandboxFiles::dir_under(run_root, &sb.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Unavailable(format!("cannot write {}: {e}", dir.display())))?;
        let hostname = sb
            .hostname
            .clone()
            .unwrap_or_else(|| sb.id[..12].to_string());
        for (path, text) in [
            (&files.resolv_conf, Engine::resolv_conf_in(store, sb)?),
            (&files.hosts, Engine::hosts_in(store, sb)?),
            (&files.hostname, format!("{hostname}\n")),
        ] {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(path, text).map_err(|e| {
                    Error::Unavailable(format!("cannot write {}: {e}", path.display()))
                })?;
            }
        }
        Ok(files)
    }

    /// The /etc/hosts a sandbox sees (Docker's): localhost lines, then each of its addresses
    /// with its hostname (default: its short id).
    pub fn hosts_in(store: &dyn Store, sb: &Sandbox) -> Result<String> {
        let r = store.read()?;
        let mut eps = records::sandbox_endpoints(&*r, &sb.id)?;
        eps.sort_by_key(|e| e.order);
        let name = sb
            .hostname
            .clone()
            .unwrap_or_else(|| sb.id[..12].to_string());
        let mut out = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        );
        for ep in &eps {
            for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
                out.push_str(&format!("{}\t{name}\n", a.ip()));
            }
        }
        for l in links_of(&*r, &eps)? {
            let short = &l.target.id[..12];
            let names = if l.alias == l.target.name {
                format!("{} {short}", l.alias)
            } else {
                format!("{} {short} {}", l.alias, l.target.name)
            };
            out.push_str(&format!("{}\t{names}\n", l.addr));
        }
        Ok(out)
    }

    /// The environment legacy links give a sandbox's commands (Docker's `ALIAS_PORT_…`).
    pub fn link_env_in(store: &dyn Store, sb: &Sandbox) -> Result<Vec<(String, String)>> {
        let r = store.read()?;
        let eps = records::sandbox_endpoints(&*r, &sb.id)?;
        let mut env = Vec::new();
        for l in links_of(&*r, &eps)? {
            let p: String = l
                .alias
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            env.push((format!("{p}_NAME"), format!("/{}/{}", sb.name, l.alias)));
            let ports = l.ports();
            if let Some((cp, proto)) = ports.first() {
                env.push((format!("{p}_PORT"), format!("{proto}://{}:{cp}", l.addr)));
            }
            for (cp, proto) in ports {
                let k = format!("{p}_PORT_{cp}_{}", proto.to_uppercase());
                env.push((k.clone(), format!("{proto}://{}:{cp}", l.addr)));
                env.push((format!("{k}_ADDR"), l.addr.to_string()));
                env.push((format!("{k}_PORT"), cp.to_string()));
                env.push((format!("{k}_PROTO"), proto));
            }
        }
        Ok(env)
    }

    /// The DNS listener sockets for `addr` in the host namespace.
    pub fn bind_dns(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
        Ok(crate::net::ns::bind_in(
            self.inner.kernel.host_path(),
            addr,
        )?)
    }

    /// The resolv.conf a sandbox sees (Docker's rules): the embedded resolver of its first
    /// user-defined network when it is on one; otherwise `--dns` servers or the host's
    /// (`WEFT_RESOLV_CONF`, else /etc/resolv.conf) without loopback ones, falling back to
    /// Google's, said in a comment; `--dns-search`/`--dns-option` on top.
    pub fn resolv_conf_in(store: &dyn Store, sb: &Sandbox) -> Result<String> {
        let r = store.read()?;
        let mut eps = records::sandbox_endpoints(&*r, &sb.id)?;
        eps.sort_by_key(|e| e.order);
        let mut out = String::from("# Generated by weft.\n");
        let resolver = eps.iter().find_map(|e| {
            let n = crate::store::get_json::<Network>(
                &*r,
                crate::store::Table::Networks,
                &e.network_id,
            )
            .ok()??;
            crate::dns::serves(&n)
                .then(|| crate::dns::gateway(&n))
                .flatten()
        });
        let host = std::env::var_os("WEFT_RESOLV_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/etc/resolv.conf".into());
        let host_text = std::fs::read_to_string(&host).unwrap_or_default();
        match resolver {
            Some(gw) => out.push_str(&format!("nameserver {gw}\n")),
            None if !sb.dns.is_empty() => {
                for d in &sb.dns {
                    out.push_str(&format!("nameserver {d}\n"));
                }
            }
            None => {
                let ups = crate::dns::upstreams_of(&host_text);
                if ups.is_empty() {
                    out.push_str(
                        "# The host has no usable nameserver: using Google's public ones.\n",
                    );
                }
                for d in if ups.is_empty() {
                    crate::dns::FALLBACK.to_vec()
                } else {
                    ups
                } {
                    out.push_str(&format!("nameserver {d}\n"));
                }
            }
        }
        let search: Vec<String> = if sb.dns_search.is_empty() {
            host_text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("search "))
                .flat_map(|l| l.split_whitespace().map(str::to_string))
                .collect()
        } else {
            sb.dns_search.clone()
        };
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        let mut opts = sb.dns_options.clone();
        if resolver.is_some() && !opts.iter().any(|o| o.starts_with("ndots")) {
            opts.insert(0, "ndots:0".into());
        }
        if !opts.is_empty() {
            out.push_str(&format!("options {}\n", opts.join(" ")));
        }
        Ok(out)
    }
}

/// Every public engine future can be held across `.await` in a multi-threaded runtime and
/// spawned as a task (a daemon serves many requests at once).
#[allow(dead_code, clippy::all)]
fn engine_futures_are_send(e: &Engine) {
    fn send<T: Send>(_: T) {}
    send(e.create_network(NetworkCreate::default()));
    send(e.remove_network(""));
    send(e.prune_networks(&NetworkFilters::default()));
    send(e.create_sandbox(SandboxCreate::default()));
    send(e.remove_sandbox("", false));
    send(e.remove_sandboxes(&[], false));
    send(e.connect("", "", ConnectOptions::default()));
    send(e.disconnect("", "", false));
    send(e.cluster_peer("127.0.0.1".parse().unwrap(), true));
    send(e.reset());
    send(e.check());
    send(e.repair());
    send(e.install_plugin(std::path::Path::new(""), "", &[], false));
    send(e.remove_plugin(""));
    send(Engine::open(Config::default()));
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Engine>();
}

/// A sandbox's /etc files, as [`Engine::sandbox_files`] wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFiles {
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub hostname: PathBuf,
}

impl SandboxFiles {
    /// The directory of a sandbox's files under a run dir (removed with the sandbox).
    fn dir_under(run_root: &std::path::Path, sandbox_id: &str) -> PathBuf {
        run_root.join("sandboxes").join(sandbox_id)
    }

    /// Where a sandbox's files are under a run dir.
    fn under(run_root: &std::path::Path, sandbox_id: &str) -> SandboxFiles {
        let dir = SandboxFiles::dir_under(run_root, sandbox_id);
        SandboxFiles {
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            hostname: dir.join("hostname"),
        }
    }
}

/// A legacy link, resolved: the target sandbox, the alias, the target's address on the
/// linking endpoint's network.
pub(crate) struct Link {
    target: Sandbox,
    /// The target's endpoint on that network.
    pub(crate) endpoint: String,
    alias: String,
    addr: std::net::IpAddr,
}

impl Link {
    /// The target's exposed and published container ports, (port, proto), sorted, once each.
    pub(crate) fn ports(&self) -> Vec<(u16, String)> {
        let mut ports: Vec<(u16, String)> = self
            .target
            .exposed
            .iter()
            .chain(self.target.ports.iter())
            .map(|m| (m.container_port, m.proto.clone()))
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }
}

/// The links of these endpoints whose targets still exist and share the endpoint's network.
pub(crate) fn links_of(r: &dyn crate::store::ReadTxn, eps: &[Endpoint]) -> Result<Vec<Link>> {
    let mut out = Vec::new();
    for ep in eps {
        for l in &ep.links {
            let (name, alias) = l.split_once(':').unwrap_or((l.as_str(), l.as_str()));
            let Ok(target) = records::resolve_sandbox(r, name) else {
                continue;
            };
            let Some((endpoint, addr)) = records::endpoint_of(r, &target.id, &ep.network_id)?
                .and_then(|t| Some((t.id, t.ipv4.or(t.ipv6)?.ip())))
            else {
                continue;
            };
            out.push(Link {
                target,
                endpoint,
                alias: alias.to_string(),
                addr,
            });
        }
    }
    Ok(out)
}
