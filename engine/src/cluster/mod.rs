//! The cluster store: global-scope state in etcd, shared by every host that names the same
//! etcd (`weft daemon --cluster-store etcd://HOST:2379 --advertise-addr IP`).
//!
//! - **Registration.** Each host puts `/weft/hosts/<id>` (its id, name and VTEP address) under
//!   a lease it keeps alive (every TTL/3, from a loop of its own: etcd-client's keep-alive
//!   sends one ping). A dead host's registration — and every endpoint it published, which carry
//!   the same lease — expire on their own. The lease id is kept in the run dir, so a daemon
//!   restarted within the TTL resumes it and its peers never see it go.
//! - **The mirror.** Every key under `/weft/`, listed once and kept current by a watch that
//!   resumes from its revision; a watch cancelled for compaction, or a connection lost, lists
//!   again — nothing is missed or left stale. Reads of global state come from the mirror, with
//!   no round trip; commits are etcd transactions that compare what the operation read
//!   ([`crate::store::split`]), applied to the mirror as soon as etcd answers.
//! - **Never in the way of local work.** The connection is made in the background and retried
//!   until it works; meanwhile (and whenever etcd is unreachable) local networks and sandboxes
//!   work as ever and global operations fail with an error that names the endpoint.
//!
//! Liveness (leases) is kept apart from allocation (compare-and-swap transactions on the
//! mirrored keys), as Flannel's 24-hour subnet leases did not.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use etcd_client::{
    Client, Compare, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{StoreError, Table};

/// Every key weft keeps in etcd starts with this.
pub const PREFIX: &str = "/weft/";
/// Host registrations.
pub const HOSTS: &str = "/weft/hosts/";
/// Default lease TTL: a dead host is dropped everywhere within this (plus a watch event).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The etcd key of a store row.
pub fn table_key(t: Table, key: &[u8]) -> Vec<u8> {
    let mut k = format!("{PREFIX}t/{}/", t.name()).into_bytes();
    k.extend_from_slice(key);
    k
}

/// The etcd prefix of a table.
pub fn table_prefix(t: Table) -> Vec<u8> {
    table_key(t, b"")
}

/// Where the cluster is and who this host is in it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd endpoints, as URLs (`http://10.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// This host's address on the underlay: its VTEP, what peers send overlay traffic to.
    pub advertise: IpAddr,
    /// The lease TTL of this host's registration (etcd's minimum is 2 s).
    pub ttl: Duration,
}

impl ClusterConfig {
    /// `etcd://HOST:PORT[,HOST:PORT…]` (Docker's `--cluster-store` form) and the advertise
    /// address.
    pub fn parse(store: &str, advertise: &str, ttl: Option<Duration>) -> Result<ClusterConfig> {
        let rest = store.strip_prefix("etcd://").ok_or_else(|| {
            Error::invalid(format!(
                "cluster store {store:?}: give etcd://HOST:PORT[,HOST:PORT…] (weft's cluster store is etcd)"
            ))
        })?;
        let endpoints: Vec<String> = rest
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|hp| {
                if hp.contains('/') || hp.contains('@') {
                    return Err(Error::invalid(format!(
                        "cluster store endpoint {hp:?}: give HOST:PORT"
                    )));
                }
                Ok(
                    if hp
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                    {
                        format!("http://{hp}")
                    } else {
                        format!("http://{hp}:2379")
                    },
                )
            })
            .collect::<Result<_>>()?;
        if endpoints.is_empty() {
            return Err(Error::invalid(format!(
                "cluster store {store:?}: name at least one etcd endpoint"
            )));
        }
        let advertise: IpAddr = advertise.parse().map_err(|_| {
            Error::invalid(format!(
                "advertise address {advertise:?}: give this host's IP address on the network the hosts share"
            ))
        })?;
        if advertise.is_unspecified() || advertise.is_loopback() || advertise.is_multicast() {
            return Err(Error::invalid(format!(
                "advertise address {advertise}: give an address other hosts can reach this one at"
            )));
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl < Duration::from_secs(2) || ttl > Duration::from_secs(300) {
            return Err(Error::invalid(
                "cluster lease TTL: give 2 s to 300 s (etcd's minimum is 2 s)",
            ));
        }
        Ok(ClusterConfig {
            endpoints,
            advertise,
            ttl,
        })
    }

    /// The endpoints as the user gave them, for messages.
    pub fn describe(&self) -> String {
        format!(
            "etcd://{}",
            self.endpoints
                .iter()
                .map(|e| e.trim_start_matches("http://"))
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

/// A host of the cluster, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Stable across restarts (kept under the state root).
    pub id: String,
    /// Its hostname, for messages.
    pub name: String,
    /// Its VTEP address (`--advertise-addr`).
    pub vtep: IpAddr,
}

/// One mirrored key.
#[derive(Debug, Clone)]
pub struct Row {
    pub value: Vec<u8>,
    pub mod_rev: i64,
}

/// Everything under [`PREFIX`] as of revision `rev`.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    pub rev: i64,
    pub rows: BTreeMap<Vec<u8>, Row>,
}

impl Mirror {
    pub fn get(&self, key: &[u8]) -> Option<&Row> {
        self.rows.get(key)
    }

    /// Rows whose key starts with `prefix`.
    pub fn scan<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a Vec<u8>, &'a Row)> {
        self.rows
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The hosts registered now.
    pub fn hosts(&self) -> Vec<HostRecord> {
        self.scan(HOSTS.as_bytes())
            .filter_map(|(_, r)| serde_json::from_slice(&r.value).ok())
            .collect()
    }
}

/// One write of a commit.
#[derive(Debug, Clone)]
pub struct Write {
    pub key: Vec<u8>,
    /// `None`: delete.
    pub value: Option<Vec<u8>>,
    /// Bound to this host's lease (it goes when the host does).
    pub leased: bool,
}

/// What a commit checks first.
#[derive(Debug, Clone)]
pub enum Check {
    /// The key holds this value (`None`: it does not exist).
    Value {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    /// No key in `[prefix…)` was created or changed after revision `rev`.
    Unchanged { prefix: Vec<u8>, rev: i64 },
}

/// The state of the connection, for `system info` and messages.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub store: String,
    pub host: HostRecord,
    pub connected: bool,
    pub synced: bool,
    pub revision: i64,
    pub hosts: usize,
    pub lease: i64,
    pub last_error: String,
    pub restarts: u64,
}

/// The cluster store of one engine.
pub struct Cluster {
    cfg: ClusterConfig,
    pub host: HostRecord,
    client: Mutex<Option<Client>>,
    mirror: RwLock<Arc<Mirror>>,
    connected: AtomicBool,
    synced: AtomicBool,
    lease: AtomicI64,
    restarts: AtomicU64,
    last_error: Mutex<String>,
    /// Bumped on every change of the mirror, and when this host's lease is new (its leased
    /// keys must be published again).
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped each time this host's lease is granted anew.
    lease_epoch: AtomicU64,
    lease_file: PathBuf,
    rt: tokio::runtime::Handle,
}

impl Cluster {
    /// Start joining the cluster: the connection, registration and mirror come up in the
    /// background (retried until etcd answers). `state_root` keeps the host's id;
    /// `run_root` the lease id (a restart within the TTL resumes it).
    pub fn start(
        cfg: ClusterConfig,
        state_root: &std::path::Path,
        run_root: &std::path::Path,
    ) -> Result<Arc<Cluster>> {
        let id = host_id(state_root)?;
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| id[..12].to_string());
        let c = Arc::new(Cluster {
            host: HostRecord {
                id,
                name,
                vtep: cfg.advertise,
            },
            cfg,
            client: Mutex::new(None),
            mirror: RwLock::new(Arc::new(Mirror::default())),
            connected: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            lease: AtomicI64::new(0),
            restarts: AtomicU64::new(0),
            last_error: Mutex::new("not connected yet".into()),
            changed: tokio::sync::watch::channel(0).0,
            lease_epoch: AtomicU64::new(0),
            lease_file: run_root.join("cluster.lease"),
            rt: tokio::runtime::Handle::current(),
        });
        let me = c.clone();
        tokio::spawn(async move { me.run().await });
        Ok(c)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The mirror as it is now (a cheap snapshot).
    pub fn mirror(&self) -> Arc<Mirror> {
        self.mirror.read().unwrap().clone()
    }

    /// Has the mirror been listed at least once?
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Changes of the mirror (and of this host's lease), as a counter to wait on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many times this host's lease was granted anew (its leased keys then need to be
    /// published again).
    pub fn lease_epoch(&self) -> u64 {
        self.lease_epoch.load(Ordering::Acquire)
    }

    pub fn status(&self) -> Status {
        let m = self.mirror();
        Status {
            store: self.cfg.describe(),
            host: self.host.clone(),
            connected: self.connected(),
            synced: self.synced(),
            revision: m.rev,
            hosts: m.hosts().len(),
            lease: self.lease.load(Ordering::Acquire),
            last_error: self.last_error.lock().unwrap().clone(),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }

    /// Why global operations cannot be done now.
    pub fn unreachable(&self) -> String {
        format!(
            "the cluster store {} is unreachable: {}",
            self.cfg.describe(),
            self.last_error.lock().unwrap()
        )
    }

    /// Wait until the mirror has been listed (or `limit` passes).
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        let mut rx = self.subscribe();
        let t = tokio::time::Instant::now() + limit;
        while !self.synced() {
            if tokio::time::timeout_at(t, rx.changed()).await.is_err() {
                return false;
            }
        }
        true
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        let msg = format!("{what}: {e}");
        if *self.last_error.lock().unwrap() != msg {
            tracing::warn!(store = %self.cfg.describe(), "cluster store: {msg}");
        }
        *self.last_error.lock().unwrap() = msg;
        self.connected.store(false, Ordering::Release);
    }

    /// Tell the followers something changed (also after the local half of a split commit:
    /// what this host did with the change is only readable then).
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Connect, register, list and watch; again whenever any of it breaks. Runs for the
    /// engine's life (a task of its own: a failure here never touches local work).
    async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.session().await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    self.fail("connection", e);
                }
            }
            self.restarts.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connected session: returns when something breaks.
    async fn session(self: &Arc<Self>) -> std::result::Result<(), String> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let mut client = Client::connect(&self.cfg.endpoints, Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        let lease = self.lease(&mut client).await?;
        let reg = serde_json::to_vec(&self.host).map_err(|e| e.to_string())?;
        client
            .put(
                format!("{HOSTS}{}", self.host.id),
                reg,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| e.to_string())?;
        // List everything, then watch from the next revision.
        let mut resp = client
            .get(PREFIX, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| e.to_string())?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut m = Mirror {
            rev,
            rows: BTreeMap::new(),
        };
        for kv in resp.take_kvs() {
            let mod_rev = kv.mod_revision();
            let (k, v) = kv.into_key_value();
            m.rows.insert(k, Row { value: v, mod_rev });
        }
        *self.mirror.write().unwrap() = Arc::new(m);
        *self.client.lock().unwrap() = Some(client.clone());
        self.connected.store(true, Ordering::Release);
        self.synced.store(true, Ordering::Release);
        *self.last_error.lock().unwrap() = String::new();
        tracing::info!(store = %self.cfg.describe(), host = %self.host.id, vtep = %self.host.vtep, revision = rev, "cluster store: connected, registered and listed");
        self.notify();
        let keep = self.keep_alive(client.clone(), lease);
        let watch = self.watch(client, rev);
        tokio::select! {
            r = keep => r,
            r = watch => r,
        }
    }

    /// This host's lease: the one in the run dir if etcd still has it (a restart within the
    /// TTL), else a new one.
    async fn lease(&self, client: &mut Client) -> std::result::Result<i64, String> {
        let ttl = self.cfg.ttl.as_secs() as i64;
        let old = std::fs::read_to_string(&self.lease_file)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .or_else(|| Some(self.lease.load(Ordering::Acquire)).filter(|l| *l != 0));
        if let Some(id) = old {
            if let Ok(r) = client.lease_time_to_live(id, None).await {
                if r.ttl() > 0 {
                    self.lease.store(id, Ordering::Release);
                    tracing::info!(lease = id, ttl = r.ttl(), "cluster store: lease resumed");
                    return Ok(id);
                }
            }
        }
        let r = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| e.to_string())?;
        let id = r.id();
        let _ = std::fs::write(&self.lease_file, id.to_string());
        self.lease.store(id, Ordering::Release);
        self.lease_epoch.fetch_add(1, Ordering::AcqRel);
        tracing::info!(lease = id, ttl, "cluster store: lease granted");
        Ok(id)
    }

    /// Keep the lease alive every TTL/3; return when it is lost (expired, or etcd gone).
    async fn keep_alive(&self, mut client: Client, lease: i64) -> std::result::Result<(), String> {
        let (mut keeper, mut stream) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| e.to_string())?;
        let every = self.cfg.ttl / 3;
        loop {
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(every.max(Duration::from_millis(500)), stream.message())
                .await
            {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => {
                    // Expired (the daemon was away too long, or etcd lost it): a new lease,
                    // and this host's keys are published again.
                    let _ = std::fs::remove_file(&self.lease_file);
                    return Err("this host's lease expired".into());
                }
                Ok(Ok(None)) => return Err("the lease keep-alive stream ended".into()),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("no keep-alive answer".into()),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Follow every change from `rev + 1`; return when the watch breaks (the caller lists
    /// again: after a compaction the events in between are gone).
    async fn watch(&self, mut client: Client, rev: i64) -> std::result::Result<(), String> {
        let mut stream = client
            .watch(
                PREFIX,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1)
                        .with_progress_notify(),
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let Some(resp) = stream.message().await.map_err(|e| e.to_string())? else {
                return Err("the watch ended".into());
            };
            if resp.canceled() {
                return Err(if resp.compact_revision() > 0 {
                    format!(
                        "the watch fell behind a compaction (revision {}): listing again",
                        resp.compact_revision()
                    )
                } else {
                    format!("the watch was cancelled: {}", resp.cancel_reason())
                });
            }
            let at = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.events().is_empty() && at <= self.mirror().rev {
                continue;
            }
            {
                let mut g = self.mirror.write().unwrap();
                let mut m = (**g).clone();
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = kv.key().to_vec();
                    match ev.event_type() {
                        EventType::Put => {
                            if m.rows
                                .get(&key)
                                .is_none_or(|r| r.mod_rev <= kv.mod_revision())
                            {
                                m.rows.insert(
                                    key,
                                    Row {
                                        value: kv.value().to_vec(),
                                        mod_rev: kv.mod_revision(),
                                    },
                                );
                            }
                        }
                        EventType::Delete => {
                            if m.rows
                                .get(&key)
                                .is_some_and(|r| r.mod_rev < kv.mod_revision())
                            {
                                m.rows.remove(&key);
                            }
                        }
                    }
                }
                m.rev = m.rev.max(at);
                *g = Arc::new(m);
            }
            self.notify();
        }
    }

    /// This host's lease id (0 before the first connection).
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    /// One etcd transaction: if every check holds, every write; the revision it made, or
    /// [`StoreError::Conflict`] when a check failed. Blocking (call it off the async threads).
    pub fn commit(
        &self,
        checks: &[Check],
        writes: &[Write],
    ) -> std::result::Result<i64, StoreError> {
        let Some(mut client) = self
            .client
            .lock()
            .unwrap()
            .clone()
            .filter(|_| self.connected())
        else {
            return Err(StoreError::Io(self.unreachable()));
        };
        let lease = self.lease_id();
        let mut compares = Vec::new();
        for c in checks {
            match c {
                Check::Value {
                    key,
                    value: Some(v),
                } => compares.push(Compare::value(
                    key.clone(),
                    etcd_client::CompareOp::Equal,
                    v.clone(),
                )),
                Check::Value { key, value: None } => compares.push(Compare::version(
                    key.clone(),
                    etcd_client::CompareOp::Equal,
                    0,
                )),
                Check::Unchanged { prefix, rev } => compares.push(
                    Compare::mod_revision(prefix.clone(), etcd_client::CompareOp::Less, rev + 1)
                        .with_prefix(),
                ),
            }
        }
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match &w.value {
                Some(v) => TxnOp::put(
                    w.key.clone(),
                    v.clone(),
                    w.leased.then(|| PutOptions::new().with_lease(lease)),
                ),
                None => TxnOp::delete(w.key.clone(), None),
            })
            .collect();
        if compares.len() > 128 || ops.len() > 128 {
            return Err(StoreError::Io(format!(
                "a cluster transaction of {} checks and {} writes is over etcd's 128",
                compares.len(),
                ops.len()
            )));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let r = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), client.txn(txn)).await
        });
        let resp = match r {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.fail("commit", &e);
                return Err(StoreError::Io(self.unreachable()));
            }
            Err(_) => {
                self.fail("commit", "no answer within 5 s");
                return Err(StoreError::Io(self.unreachable()));
            }
        };
        if !resp.succeeded() {
            return Err(StoreError::Conflict);
        }
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        // What this host just wrote is what its next read sees (the watch brings the same).
        {
            let mut g = self.mirror.write().unwrap();
            let mut m = (**g).clone();
            for w in writes {
                match &w.value {
                    Some(v) => {
                        if m.rows.get(&w.key).is_none_or(|r| r.mod_rev < rev) {
                            m.rows.insert(
                                w.key.clone(),
                                Row {
                                    value: v.clone(),
                                    mod_rev: rev,
                                },
                            );
                        }
                    }
                    None => {
                        if m.rows.get(&w.key).is_some_and(|r| r.mod_rev < rev) {
                            m.rows.remove(&w.key);
                        }
                    }
                }
            }
            *g = Arc::new(m);
        }
        self.notify();
        Ok(rev)
    }
}

/// This host's id in the cluster: made once, kept under the state root.
fn host_id(state_root: &std::path::Path) -> Result<String> {
    let p = state_root.join("host-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim();
        if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Ok(s.to_string());
        }
    }
    let id = crate::model::new_id();
    std::fs::create_dir_all(state_root)
        .and_then(|_| std::fs::write(&p, &id))
        .map_err(|e| Error::internal(format!("cannot write {}: {e}", p.display())))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_store_urls_and_advertise_addresses() {
        let c = ClusterConfig::parse("etcd://10.0.0.1:2379,10.0.0.2", "10.0.0.5", None).unwrap();
        assert_eq!(
            c.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(c.describe(), "etcd://10.0.0.1:2379,10.0.0.2:2379");
        for (s, a) in [
            ("consul://x:8500", "10.0.0.5"),
            ("etcd://", "10.0.0.5"),
            ("etcd://u@x:1", "10.0.0.5"),
            ("etcd://x:1", "nohost"),
            ("etcd://x:1", "127.0.0.1"),
            ("etcd://x:1", "0.0.0.0"),
        ] {
            assert!(ClusterConfig::parse(s, a, None).is_err(), "{s} {a}");
        }
        assert!(
            ClusterConfig::parse("etcd://x:1", "10.0.0.5", Some(Duration::from_secs(1))).is_err()
        );
    }

    #[test]
    fn table_keys_nest_under_the_prefix() {
        assert_eq!(
            table_key(Table::Networks, b"abc"),
            b"/weft/t/networks/abc".to_vec()
        );
        let mut m = Mirror::default();
        for k in [
            "/weft/t/networks/a",
            "/weft/t/networks/b",
            "/weft/t/network_names/a",
        ] {
            m.rows.insert(
                k.as_bytes().to_vec(),
                Row {
                    value: vec![],
                    mod_rev: 1,
                },
            );
        }
        assert_eq!(m.scan(&table_prefix(Table::Networks)).count(), 2);
    }
}
