//! Wasm plugins (install, list, remove: the `wasm` feature) and cluster peers (every driver
//! hears of them; what multi-host drivers program for a peer is recorded with the network
//! that owns the link it is on).

use std::net::IpAddr;
use std::path::Path;
#[cfg(feature = "wasm")]
use std::sync::Arc;

use super::network::NETWORKS;
use super::op::{Intent, Locking, Op, Replay};
use super::records::{self, peer_key, Owned};
use super::Engine;
use crate::error::{Error, Result};
use crate::model::Network;
use crate::net::Step;
#[cfg(feature = "wasm")]
use crate::plugin::Grants;
use crate::plugin::{Kind, PluginRecord};
use crate::store::{decode, get_json, list_json, put_json, ReadTxn, Table, WriteTxn};

const PLUGINS: &str = "plugins";
const PEERS: &str = "peers";

/// Names of weft's own drivers and IPAM: no plugin may take them.
const NATIVE: [&str; 8] = [
    "bridge", "host", "null", "none", "macvlan", "default", "overlay", "ipvlan",
];

/// How a peer announced from the cluster store's registrations is marked.
const AUTO_PEER: &str = "cluster";

impl Engine {
    /// Register what the store's plugin records say and drop what they no longer list:
    /// plugins installed or removed by another process (the CLI beside a daemon, a second
    /// embedder) are seen without a restart.
    pub(crate) fn sync_plugins(&self) -> Result<()> {
        let recs = list_json::<PluginRecord>(&*self.inner.store.read()?, Table::Plugins)?;
        let seen = self.inner.plugin_seen.lock().unwrap().clone();
        for rec in &recs {
            if seen.get(&rec.name).map(|(_, id)| id) != Some(&plugin_identity(rec)) {
                tracing::info!(plugin = %rec.name, "plugin installed elsewhere: registered");
                self.register_plugin(rec.clone());
            }
        }
        for (name, (kind, _)) in seen {
            if !recs.iter().any(|r| r.name == name) {
                tracing::info!(plugin = %name, "plugin removed elsewhere: unregistered");
                self.forget_plugin(&name, kind);
            }
        }
        Ok(())
    }

    fn forget_plugin(&self, name: &str, kind: Kind) {
        match kind {
            Kind::Driver => self.unregister_driver(name),
            Kind::Ipam => self.unregister_ipam(name),
        }
        self.inner.plugin_seen.lock().unwrap().remove(name);
    }

    pub(crate) fn register_plugin(&self, rec: PluginRecord) {
        self.inner
            .plugin_seen
            .lock()
            .unwrap()
            .insert(rec.name.clone(), (rec.kind, plugin_identity(&rec)));
        #[cfg(feature = "wasm")]
        {
            use crate::plugin::adapters::{PluginDriver, PluginIpam};
            let host = self.inner.plugins.clone();
            match rec.kind {
                Kind::Driver => self.register_driver(Arc::new(PluginDriver::new(host, rec))),
                Kind::Ipam => self.register_ipam(Arc::new(PluginIpam::new(host, rec))),
            }
        }
        #[cfg(not(feature = "wasm"))]
        tracing::warn!(plugin = %rec.name, "this weft was built without the wasm feature: plugin {} is not available", rec.name);
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
        self.install_plugin_with(file, name, grants, grant_requested, &[])
            .await
    }

    /// [`Engine::install_plugin`], with configuration: `key=value` items, or `key=@FILE` for
    /// a secret read from a file (the plugin reads it; `plugin inspect` and logs never show
    /// it).
    pub async fn install_plugin_with(
        &self,
        file: &Path,
        name: &str,
        grants: &[String],
        grant_requested: bool,
        config: &[String],
    ) -> Result<PluginRecord> {
        if !crate::plugin::valid_name(name) {
            return Err(Error::invalid(format!(
                "invalid plugin name {name:?}: use a lowercase letter, then a-z, 0-9, '-' or '_' (at most 32)"
            )));
        }
        if NATIVE.contains(&name) {
            return Err(Error::Conflict(format!(
                "{name} is the name of one of weft's own drivers: choose another"
            )));
        }
        #[cfg(not(feature = "wasm"))]
        {
            let _ = (file, grants, grant_requested, config);
            Err(Error::Unavailable(
                "this weft was built without the wasm feature: it cannot run plugins".into(),
            ))
        }
        #[cfg(feature = "wasm")]
        {
            let (mut rec, bytes) = self.inner.plugins.examine(file, name).await?;
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
                for gw in &a.gateways {
                    g.apply(&format!("gateway={gw}"))?;
                }
                for (lo, hi) in &a.vni_ranges {
                    g.apply(&format!("vni={lo}-{hi}"))?;
                }
                for p in &a.vxlan_ports {
                    g.apply(&format!("vxlan-port={p}"))?;
                }
                if a.macvlan_passthru {
                    g.apply("macvlan-passthru=true")?;
                }
            }
            for spec in grants {
                g.apply(spec)?;
            }
            if g.kv_global && self.cluster().is_none() {
                return Err(Error::invalid(
                    "kv-global=true needs a cluster store, which this engine has none of: start the daemon with --cluster-store etcd://HOST:2379 --advertise-addr IP (or leave the grant out)",
                ));
            }
            rec.grants = g;
            rec.config = parse_config(config)?;
            // A prefix must not name a link the host has now (an uplink, another tool's).
            if let Some(p) = &rec.grants.link_prefix {
                let mut s = self.inner.kernel.session()?;
                let taken: Vec<String> = s
                    .links(&crate::net::NsRef::Host)
                    .await?
                    .into_iter()
                    .map(|l| l.name)
                    .filter(|n| n.starts_with(p.as_str()))
                    .collect();
                if !taken.is_empty() {
                    return Err(Error::Conflict(format!(
                        "link prefix {p} names links this host has ({}): give the plugin another link-prefix",
                        taken.join(", ")
                    )));
                }
            }
            let rec = self
                .retrying(|| {
                    let rec = rec.clone();
                    let bytes = &bytes;
                    async move {
                        let mut op = self
                            .begin(
                                Intent::new(format!("plugin install {name}"), vec![PLUGINS.into()]),
                                Locking::Keys,
                            )
                            .await?;
                        let r = self.install_in(&mut op, &rec, bytes);
                        let stored = r.is_ok();
                        match op.settle(r).await {
                            Ok(()) => Ok(rec),
                            Err(e) => {
                                if stored {
                                    let _ = std::fs::remove_file(&rec.file);
                                }
                                Err(e)
                            }
                        }
                    }
                })
                .await?;
            self.register_plugin(rec.clone());
            tracing::info!(plugin = %name, kind = rec.kind.as_str(), "plugin installed");
            if rec.kind == Kind::Driver {
                // The peers there are already: a driver that registers hears of them, as
                // libnetwork's DiscoverNew tells a new driver of the nodes it knows.
                for peer in self.peers()? {
                    if let Err(e) = self.announce_to(name, peer).await {
                        tracing::warn!(plugin = %name, %peer, "discover-new: {e}");
                    }
                }
            }
            Ok(rec)
        }
    }

    /// Tell one driver of one peer (its entries recorded with the peer's).
    #[cfg(feature = "wasm")]
    async fn announce_to(&self, driver: &str, peer: IpAddr) -> Result<()> {
        let d = self.driver(driver)?;
        self.retrying(|| {
            let d = d.clone();
            async move {
                let keys = vec![NETWORKS.into(), PEERS.into()];
                let mut op = self
                    .begin(
                        Intent::new(format!("tell {driver} of peer {peer}"), keys),
                        Locking::Keys,
                    )
                    .await?;
                let r = async {
                    let key = peer_key(&peer);
                    let (mark, removed) = (op.tx().mark(), op.tx().removed().len());
                    d.discover_new(&mut op.ctx(), peer).await?;
                    let mut leftover = self.attribute(&mut op, mark, removed)?;
                    let mut log = records::owned(op.r(), &key)?;
                    log.append(&mut leftover);
                    op.own(&key, log)
                }
                .await;
                op.settle(r).await
            }
        })
        .await
    }

    #[cfg(feature = "wasm")]
    fn install_in(&self, op: &mut Op, rec: &PluginRecord, bytes: &[u8]) -> Result<()> {
        let name = &rec.name;
        if get_json::<PluginRecord>(op.r(), Table::Plugins, name)?.is_some() {
            return Err(Error::Conflict(format!(
                "plugin {name} is already installed: remove it first (weft plugin rm {name})"
            )));
        }
        for other in list_json::<PluginRecord>(op.r(), Table::Plugins)? {
            if let (Some(p), Some(q)) = (&rec.grants.link_prefix, &other.grants.link_prefix) {
                if p.starts_with(q.as_str()) || q.starts_with(p.as_str()) {
                    return Err(Error::Conflict(format!(
                        "link prefix {p} overlaps plugin {}'s prefix {q}: give this plugin another link-prefix",
                        other.name
                    )));
                }
            }
            for (a, b) in &rec.grants.vni_ranges {
                if let Some((c, d)) = other
                    .grants
                    .vni_ranges
                    .iter()
                    .find(|(c, d)| a <= d && c <= b)
                {
                    return Err(Error::Conflict(format!(
                        "VNIs {a}-{b} overlap plugin {}'s {c}-{d}: grant this plugin other VNIs",
                        other.name
                    )));
                }
            }
        }
        crate::plugin::runtime::private_dir(self.inner.plugins.dir())?;
        crate::plugin::runtime::write_private(&rec.file, bytes).map_err(|e| {
            Error::internal(format!(
                "cannot store the plugin at {}: {e}",
                rec.file.display()
            ))
        })?;
        put_json(op.w(), Table::Plugins, name, rec)
    }

    pub fn plugins(&self) -> Result<Vec<PluginRecord>> {
        list_json(&*self.inner.store.read()?, Table::Plugins)
    }

    pub fn plugin(&self, name: &str) -> Result<PluginRecord> {
        get_json(&*self.inner.store.read()?, Table::Plugins, name)?
            .ok_or_else(|| Error::PluginNotFound(name.to_string()))
    }

    /// Remove a plugin (refused while a network uses it), its kv space and its files.
    pub async fn remove_plugin(&self, name: &str) -> Result<()> {
        self.remove_plugin_with(name, false).await.map(|_| ())
    }

    /// Remove a plugin; with `force`, the networks using it go first (whatever the plugin
    /// says: its refusals are returned as warnings).
    pub async fn remove_plugin_with(&self, name: &str, force: bool) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        if force {
            let users: Vec<Network> =
                list_json::<Network>(&*self.inner.store.read()?, Table::Networks)?
                    .into_iter()
                    .filter(|n| n.driver == name || n.ipam_driver == name)
                    .collect();
            for n in users {
                let names: Vec<String> =
                    crate::engine::records::network_endpoints(&*self.inner.store.read()?, &n.id)?
                        .into_iter()
                        .map(|e| e.sandbox_id)
                        .collect();
                if !names.is_empty() {
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    warnings.extend(self.remove_sandboxes_with(&refs, true).await?);
                }
                warnings.extend(self.remove_network_with(&n.id, true).await?);
            }
        }
        let rec = self
            .retrying(|| async {
                let mut op = self
                    .begin(
                        Intent::new(
                            format!("plugin rm {name}"),
                            vec![PLUGINS.into(), NETWORKS.into()],
                        ),
                        Locking::Keys,
                    )
                    .await?;
                let r = remove_plugin_in(&mut op, name);
                op.settle(r).await
            })
            .await?;
        self.forget_plugin(name, rec.kind);
        let _ = std::fs::remove_file(&rec.file);
        #[cfg(feature = "wasm")]
        crate::plugin::runtime::Runtime::forget(&self.inner.plugins.cache_dir(), &rec.sha256);
        Ok(warnings)
    }

    /// A cluster peer (its underlay address) appeared or went away: every driver hears of
    /// it (multi-host drivers program their tunnels).
    pub async fn cluster_peer(&self, peer: IpAddr, present: bool) -> Result<()> {
        self.cluster_peer_from(peer, present, false).await
    }

    /// [`Engine::cluster_peer`]; `auto`: a host of the cluster store (its registration came or
    /// went), not one a user named — only those go again by themselves.
    pub(crate) async fn cluster_peer_from(
        &self,
        peer: IpAddr,
        present: bool,
        auto: bool,
    ) -> Result<()> {
        self.retrying(|| async move {
            let keys = vec![NETWORKS.into(), PEERS.into()];
            let intent = if present {
                Intent::new(format!("peer add {peer}"), keys).owned(peer_key(&peer))
            } else {
                Intent::new(format!("peer rm {peer}"), keys).removes(
                    Table::Owned,
                    vec![peer_key(&peer)],
                    Replay::PeerRm { peer },
                )
            };
            let mut op = self.begin(intent, Locking::Keys).await?;
            let r = self.cluster_peer_in(&mut op, peer, present, auto).await;
            op.settle(r).await
        })
        .await
    }

    pub(crate) async fn cluster_peer_in(
        &self,
        op: &mut Op,
        peer: IpAddr,
        present: bool,
        auto: bool,
    ) -> Result<()> {
        let drivers: Vec<_> = {
            let r = self.inner.drivers.read().unwrap();
            r.names().filter_map(|n| r.get(n)).collect()
        };
        let (mark, removed) = (op.tx().mark(), op.tx().removed().len());
        let key = peer_key(&peer);
        if present {
            // Announced before the drivers hear of it: their FDB entries towards it are
            // checked against this record.
            if auto {
                put_json(op.w(), Table::Meta, &key, &AUTO_PEER)?;
            } else {
                put_json(op.w(), Table::Meta, &key, &true)?;
            }
        }
        for d in drivers {
            if present {
                d.discover_new(&mut op.ctx(), peer).await?;
            } else if let Err(e) = d.discover_delete(&mut op.ctx(), peer).await {
                // A removal finishes; what a driver could not undo is in its logs.
                tracing::warn!("driver {} discover-delete {peer}: {e}", d.name());
            }
        }
        let mut leftover = self.attribute(op, mark, removed)?;
        if present {
            let mut log = records::owned(op.r(), &key)?;
            log.append(&mut leftover);
            op.own(&key, log)?;
        } else {
            let mut log = records::owned(op.r(), &key)?;
            log.append(&mut leftover);
            for e in op.tx().teardown(&log, None).await {
                tracing::warn!("peer rm {peer}: {e}");
            }
            records::disown(op.w(), &key)?;
            op.w().delete(Table::Meta, key.as_bytes())?;
        }
        Ok(())
    }

    /// The cluster peers that came from the cluster store's registrations.
    pub(crate) fn auto_peers(&self) -> Result<Vec<IpAddr>> {
        Ok(self
            .inner
            .store
            .read()?
            .scan(Table::Meta, b"peer/")?
            .into_iter()
            .filter(|(_, v)| serde_json::from_slice::<String>(v).ok().as_deref() == Some(AUTO_PEER))
            .filter_map(|(k, _)| String::from_utf8_lossy(&k)[5..].parse().ok())
            .collect())
    }

    /// The cluster peers weft was told of.
    pub fn peers(&self) -> Result<Vec<IpAddr>> {
        Ok(self
            .inner
            .store
            .read()?
            .scan(Table::Meta, b"peer/")?
            .into_iter()
            .filter_map(|(k, _)| String::from_utf8_lossy(&k)[5..].parse().ok())
            .collect())
    }

    /// Give what a driver did outside a network's own create (a peer's FDB entries) to the
    /// network that owns the link it is on; drop what it removed from the owners' logs.
    /// Returns the additions no network owns.
    fn attribute(&self, op: &mut Op, mark: usize, removed_mark: usize) -> Result<Vec<Step>> {
        let added = op.tx().undo_since(mark);
        let removed = op.tx().removed()[removed_mark..].to_vec();
        if added.is_empty() && removed.is_empty() {
            return Ok(vec![]);
        }
        let mut logs: Vec<(String, Vec<Step>, bool)> = op
            .r()
            .scan(Table::Owned, b"net/")?
            .into_iter()
            .map(|(k, v)| {
                decode::<Owned>(&v)
                    .map(|o| (String::from_utf8_lossy(&k).into_owned(), o.steps, false))
            })
            .collect::<Result<_>>()?;
        for gone in &removed {
            for (_, steps, changed) in logs.iter_mut() {
                let before = steps.len();
                steps.retain(|s| {
                    if s == gone {
                        return false;
                    }
                    match gone {
                        Step::DelLink { ns, name, .. } => {
                            s.target_link() != Some((ns, name.as_str()))
                        }
                        _ => true,
                    }
                });
                *changed |= steps.len() != before;
            }
        }
        let mut leftover = Vec::new();
        for inv in added {
            let link = inv.target_link().map(|(ns, l)| (ns.clone(), l.to_string()));
            let owner = link.and_then(|(ns, l)| {
                logs.iter_mut().find(|(_, steps, _)| {
                    steps.iter().any(|s| {
                        matches!(s, Step::DelLink { ns: n, name, .. } if *n == ns && *name == l)
                    })
                })
            });
            match owner {
                Some((_, steps, changed)) => {
                    steps.push(inv);
                    *changed = true;
                }
                None => leftover.push(inv),
            }
        }
        for (k, steps, changed) in logs {
            if changed {
                op.own(&k, steps)?;
            }
        }
        Ok(leftover)
    }
}

fn remove_plugin_in(op: &mut Op, name: &str) -> Result<PluginRecord> {
    let rec: PluginRecord = get_json(op.r(), Table::Plugins, name)?
        .ok_or_else(|| Error::PluginNotFound(name.to_string()))?;
    let users: Vec<String> = list_json::<Network>(op.r(), Table::Networks)?
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
    let shared = list_json::<PluginRecord>(op.r(), Table::Plugins)?
        .iter()
        .any(|o| o.name != name && o.grants.kv_space == rec.grants.kv_space);
    if !shared {
        let mut prefix = rec.grants.kv_space.as_bytes().to_vec();
        prefix.push(0);
        for (k, _) in op.r().scan(Table::PluginKv, &prefix)? {
            op.w().delete(Table::PluginKv, &k)?;
        }
    }
    op.w().delete(Table::Plugins, name.as_bytes())?;
    Ok(rec)
}

/// `key=value` and `key=@FILE` (a secret) items.
#[cfg(feature = "wasm")]
fn parse_config(
    items: &[String],
) -> Result<std::collections::BTreeMap<String, crate::plugin::ConfigValue>> {
    let mut out = std::collections::BTreeMap::new();
    for item in items {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            Error::invalid(format!(
                "invalid config {item:?}: use key=value or key=@FILE"
            ))
        })?;
        let ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            return Err(Error::invalid(format!(
                "invalid config key {k:?}: use up to 64 of a-z, 0-9, '-', '_', '.'"
            )));
        }
        let (value, secret) = match v.strip_prefix('@') {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::invalid(format!("cannot read the secret for {k} from {path}: {e}"))
                })?;
                (text.trim_end_matches(['\n', '\r']).to_string(), true)
            }
            None => (v.to_string(), false),
        };
        if value.len() > 64 << 10 {
            return Err(Error::invalid(format!("config {k} is over 64 KiB")));
        }
        if out
            .insert(k.to_string(), crate::plugin::ConfigValue { value, secret })
            .is_some()
        {
            return Err(Error::invalid(format!(
                "config {k} is given twice: give each key once"
            )));
        }
    }
    Ok(out)
}

/// What tells one installation of a plugin from another.
fn plugin_identity(rec: &PluginRecord) -> String {
    format!("{}/{}", rec.sha256, rec.installed)
}
