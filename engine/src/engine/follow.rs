//! The engine's side of the cluster store: what this host does when the shared state changes.
//! [`Engine::follow_cluster`] (a task the daemon runs, supervised) reacts to every change of
//! the mirror, and every 10 s in any case:
//!
//! - **Publish.** This host's endpoints on global networks are bound to its lease; when the
//!   lease was lost (the daemon away longer than the TTL, a long partition), they are gone from
//!   etcd but not from this host. They are published again from their local shadow copies,
//!   their addresses claimed again (compare-and-swap: an address someone took meanwhile is a
//!   loud error, not a duplicate).
//! - **Withdraw.** An endpoint etcd says is this host's but this host never recorded (a
//!   process killed between the two halves of a commit: see [`crate::store::split`]) is
//!   removed from etcd and its address released. Checked under the engine-wide lock, so no
//!   commit of this host is half-way meanwhile.
//! - **Reap.** A dead host's endpoints expire with its lease; the addresses they held are
//!   released by the live host with the lowest id.
//! - **Program.** On each global network realized here, every remote endpoint (another host's)
//!   has a static FDB entry (MAC → its host's VTEP) and a permanent neighbour entry (IP → MAC)
//!   on the VXLAN device, and nothing else does: the whole desired set is computed from the
//!   mirror each time and the difference applied, so no entry is missed or left stale. The
//!   entries are recorded as `peers/<network id>` (what `system check` compares and `--repair`
//!   remakes).
//! - **Forget.** A global network removed on another host leaves this host too: its bridge and
//!   VXLAN device go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::network::net_lock;
use super::op::{Intent, Locking};
use super::records::{self, net_key};
use super::Engine;
use crate::cluster::{table_key, table_prefix, Cluster, Mirror};
use crate::drivers::overlay;
use crate::error::Result;
use crate::model::{Endpoint, EndpointHost, Network, Scope};
use crate::net::{NsRef, Step};
use crate::store::split::SHADOW_PREFIX;
use crate::store::{decode, ReadTxn, Table, WriteTxn};

/// How often the follower also publishes and withdraws (see [`Engine::follow_cluster`]).
const WHOLE_EVERY: Duration = Duration::from_secs(60);

/// The ownership record of a network's remote-endpoint entries on this host.
pub fn peers_key(net: &str) -> String {
    format!("peers/{net}")
}

/// Endpoints in the mirror, by key (`<net>/<ep>`).
fn mirror_endpoints(m: &Mirror) -> BTreeMap<String, Endpoint> {
    let p = table_prefix(Table::Endpoints);
    m.scan(&p)
        .filter_map(|(k, r)| {
            Some((
                String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                decode::<Endpoint>(&r.value).ok()?,
            ))
        })
        .collect()
}

/// The undo steps (what `peers/<net>` records) for `remote` on VXLAN device `vx`.
fn peer_steps(vx: &str, remote: &[&Endpoint]) -> Vec<Step> {
    let mut out = Vec::new();
    for ep in remote {
        let Some(h) = &ep.host else { continue };
        if ep.mac.is_empty() {
            continue;
        }
        out.push(Step::DelFdb {
            link: vx.to_string(),
            mac: ep.mac.clone(),
            dst: h.vtep,
        });
        for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
            out.push(Step::DelNeigh {
                ns: NsRef::Host,
                link: vx.to_string(),
                ip: a.ip(),
                proxy: false,
            });
        }
    }
    out
}

/// The step that makes what an undo step removes.
fn make_step(undo: &Step, macs: &BTreeMap<IpAddr, String>) -> Option<Step> {
    Some(match undo {
        Step::DelFdb { link, mac, dst } => Step::Fdb {
            link: link.clone(),
            mac: mac.clone(),
            dst: *dst,
        },
        Step::DelNeigh { ns, link, ip, .. } => Step::Neigh {
            ns: ns.clone(),
            link: link.clone(),
            ip: *ip,
            mac: Some(macs.get(ip)?.clone()),
        },
        _ => return None,
    })
}

impl Engine {
    /// Is this another host's endpoint (of a global network)?
    pub(crate) fn is_remote(&self, ep: &Endpoint) -> bool {
        match (&ep.host, self.cluster()) {
            (Some(h), Some(c)) => h.id != c.host.id,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// This host, as an endpoint of a global network records it.
    pub(crate) fn endpoint_host(&self) -> Option<EndpointHost> {
        self.cluster().map(|c| EndpointHost {
            id: c.host.id.clone(),
            vtep: c.host.vtep,
        })
    }

    /// Follow the cluster store for the engine's life: settle this host with every change
    /// (see the module's comment). Returns only when the engine has no cluster store.
    pub async fn follow_cluster(&self) {
        let Some(c) = self.cluster().cloned() else {
            return;
        };
        let mut rx = c.subscribe();
        let mut prev: Option<Arc<Mirror>> = None;
        let mut epoch = u64::MAX;
        let mut last_whole = tokio::time::Instant::now();
        loop {
            let mut wait = Duration::from_secs(10);
            if c.synced() {
                let m = c.mirror();
                // A new lease, the start, and once a minute (a process of this host killed
                // between the halves of a commit while the daemon ran).
                let epoch_before = c.lease_epoch();
                let whole = epoch != epoch_before || last_whole.elapsed() > WHOLE_EVERY;
                match self.cluster_settle(&c, &m, prev.as_deref(), whole).await {
                    Ok(()) => {
                        if whole {
                            last_whole = tokio::time::Instant::now();
                            // (The epoch read before the settle: a lease renewed meanwhile
                            // is settled again next round.)
                            self.inner
                                .settled_epoch
                                .store(epoch_before, std::sync::atomic::Ordering::Release);
                        }
                        epoch = epoch_before;
                        prev = Some(m);
                    }
                    Err(e) => {
                        // Again soon, not at the next change: nothing may change for a while.
                        tracing::warn!("cluster store: settling this host: {e} (again in 200 ms)");
                        wait = Duration::from_millis(200);
                    }
                }
            }
            let _ = tokio::time::timeout(wait, rx.changed()).await;
            // Coalesce a burst of changes (a connect is several keys).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// One round of settling. `whole`: also publish and withdraw (after a new lease, at start).
    pub(crate) async fn cluster_settle(
        &self,
        c: &Arc<Cluster>,
        m: &Mirror,
        prev: Option<&Mirror>,
        whole: bool,
    ) -> Result<()> {
        let me = c.host.id.clone();
        let eps = mirror_endpoints(m);
        if whole {
            self.publish_and_withdraw(&me, &eps).await?;
        }
        if let Some(prev) = prev {
            self.reap(c, m, prev, &eps).await?;
        }
        self.announce_hosts(&me, m).await?;
        // Global networks realized here: program their remote endpoints; forget the ones
        // removed elsewhere.
        let r = self.inner.store.read()?;
        let owned: Vec<String> = r
            .scan(Table::Owned, b"net/")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[4..]).into_owned())
            .collect();
        for id in owned {
            match records::load_network(&*r, &id)? {
                Some(n) if n.scope == Scope::Global && n.driver == "overlay" => {
                    self.program_peers(&n, &me, &eps).await?;
                }
                Some(_) => {}
                None => {
                    if m.get(&table_key(Table::Networks, id.as_bytes())).is_none() {
                        self.forget_network(&id).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every other registered host is a cluster peer (drivers hear `discover-new` with its
    /// VTEP); a host whose registration went is one no more (`discover-delete`). Peers a user
    /// added by hand are left alone.
    async fn announce_hosts(&self, me: &str, m: &Mirror) -> Result<()> {
        let want: BTreeSet<IpAddr> = m
            .hosts()
            .into_iter()
            .filter(|h| h.id != me)
            .map(|h| h.vtep)
            .collect();
        let known: BTreeSet<IpAddr> = self.peers()?.into_iter().collect();
        for ip in want.difference(&known) {
            self.cluster_peer_from(*ip, true, true).await?;
            tracing::info!(peer = %ip, "cluster peer announced (a host registered)");
        }
        for ip in self.auto_peers()? {
            if !want.contains(&ip) {
                self.cluster_peer_from(ip, false, true).await?;
                tracing::info!(peer = %ip, "cluster peer gone (its registration expired)");
            }
        }
        Ok(())
    }

    /// Make `peers/<net>` match the remote endpoints the mirror lists.
    async fn program_peers(
        &self,
        net: &Network,
        me: &str,
        eps: &BTreeMap<String, Endpoint>,
    ) -> Result<()> {
        let (_, vx) = overlay::links(net);
        let remote: Vec<&Endpoint> = eps
            .values()
            .filter(|e| e.network_id == net.id && e.host.as_ref().is_some_and(|h| h.id != me))
            .collect();
        let want = peer_steps(&vx, &remote);
        let key = peers_key(&net.id);
        let have = records::owned(&*self.inner.store.read()?, &key)?;
        if want == have {
            return Ok(());
        }
        let macs: BTreeMap<IpAddr, String> = remote
            .iter()
            .flat_map(|e| {
                [e.ipv4, e.ipv6]
                    .into_iter()
                    .flatten()
                    .map(|a| (a.ip(), e.mac.clone()))
            })
            .collect();
        self.retrying(|| self.program_peers_once(net, &key, &vx, &want, &macs))
            .await?;
        tracing::debug!(network = %net.name, remote = remote.len(), "remote endpoints programmed");
        Ok(())
    }

    async fn program_peers_once(
        &self,
        net: &Network,
        key: &str,
        vx: &str,
        want: &[Step],
        macs: &BTreeMap<IpAddr, String>,
    ) -> Result<()> {
        let mut op = self
            .begin(
                Intent::new(
                    format!("program the remote endpoints of {}", net.name),
                    vec![net_lock(&net.id)],
                ),
                Locking::Keys,
            )
            .await?;
        let r = async {
            // Again under the lock: the network may have gone meanwhile.
            if op
                .r()
                .get(Table::Owned, net_key(&net.id).as_bytes())?
                .is_none()
            {
                return Ok(());
            }
            if op.tx().link(&NsRef::Host, vx).await?.is_none() {
                // No VXLAN device here (no underlay): nothing to program.
                return Ok(());
            }
            let have = records::owned(op.r(), key)?;
            let gone: Vec<Step> = have.iter().filter(|s| !want.contains(s)).cloned().collect();
            for e in op.tx().teardown(&gone, None).await {
                tracing::debug!(network = %net.name, "removing a remote endpoint's entry: {e}");
            }
            for s in want.iter().filter(|s| !have.contains(s)) {
                if let Some(step) = make_step(s, macs) {
                    // A neighbour entry may be there already (the kernel's own, or a leftover):
                    // replace it.
                    op.tx().apply_idempotent(step).await?;
                }
            }
            if want.is_empty() {
                records::disown(op.w(), key)
            } else {
                op.own(key, want.to_vec())
            }
        }
        .await;
        op.settle(r).await
    }

    /// Drop the record of a network's remote-endpoint entries (what is left of them goes):
    /// the next round programs them all again.
    pub(crate) async fn forget_peers(&self, net: &str) -> Result<()> {
        let mut op = self
            .begin(
                Intent::new("repair: remote endpoint entries", vec![]),
                Locking::Inherited,
            )
            .await?;
        let r = async {
            let key = peers_key(net);
            let log = records::owned(op.r(), &key)?;
            for e in op.tx().teardown(&log, None).await {
                tracing::debug!("{e}");
            }
            records::disown(op.w(), &key)
        }
        .await;
        op.settle(r).await
    }

    /// A global network removed on another host: its objects on this host go (unless this
    /// host still has endpoints on it: they keep it until they leave).
    async fn forget_network(&self, id: &str) -> Result<()> {
        let mut op = self
            .begin(
                Intent::new(
                    format!("forget network {}", &id[..12.min(id.len())]),
                    vec![net_lock(id)],
                ),
                Locking::Keys,
            )
            .await?;
        let r = async {
            if records::load_network(op.r(), id)?.is_some() {
                return Ok(false);
            }
            let any_local = op
                .r()
                .scan(Table::Owned, format!("ep/{id}/").as_bytes())?
                .into_iter()
                .next()
                .is_some();
            if any_local {
                return Ok(false);
            }
            for key in [peers_key(id), net_key(id)] {
                let log = records::owned(op.r(), &key)?;
                for e in op.tx().teardown(&log, None).await {
                    tracing::warn!("forgetting network {id}: {e}");
                }
                records::disown(op.w(), &key)?;
            }
            Ok(true)
        }
        .await;
        if op.settle(r).await? {
            tracing::info!(network = %id, "global network removed on another host: its objects here are gone");
        }
        Ok(())
    }

    /// Publish this host's endpoints again (lease lost), withdraw what etcd says is this
    /// host's but this host never recorded (a crash between the two halves of a commit).
    async fn publish_and_withdraw(&self, me: &str, eps: &BTreeMap<String, Endpoint>) -> Result<()> {
        // Exclusively: no commit of this process or another is half-way.
        let _held = self.inner.locks.acquire(&[], true).await?;
        let r = self.inner.store.read()?;
        let shadows: BTreeMap<String, Endpoint> = r
            .scan(Table::Meta, SHADOW_PREFIX)?
            .into_iter()
            .filter_map(|(k, v)| {
                Some((
                    String::from_utf8_lossy(&k[SHADOW_PREFIX.len()..]).into_owned(),
                    decode::<Endpoint>(&v).ok()?,
                ))
            })
            .collect();
        for (key, ep) in &shadows {
            if eps.contains_key(key) {
                continue;
            }
            let Some(net) = records::load_network(&*r, &ep.network_id)? else {
                continue;
            };
            self.republish(&net, ep).await?;
        }
        for (key, ep) in eps {
            if ep.host.as_ref().is_some_and(|h| h.id == me) && !shadows.contains_key(key) {
                let Some(net) = records::load_network(&*r, &ep.network_id)? else {
                    continue;
                };
                self.withdraw(&net, ep).await?;
            }
        }
        Ok(())
    }

    async fn republish(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        let mut op = self
            .begin(
                Intent::new(format!("publish {} on {} again", ep.name, net.name), vec![]),
                Locking::Inherited,
            )
            .await?;
        let r = async {
            let ipam = self.ipam_of(net)?;
            let holders: BTreeMap<IpAddr, String> = records::network_endpoints(op.r(), &net.id)?
                .into_iter()
                .filter(|e| e.id != ep.id)
                .flat_map(|e| {
                    [e.ipv4, e.ipv6]
                        .into_iter()
                        .flatten()
                        .map(move |a| (a.ip(), e.name.clone()))
                })
                .collect();
            for (p, a) in [(&ep.pool_v4, ep.ipv4), (&ep.pool_v6, ep.ipv6)] {
                let (Some(p), Some(a)) = (p, a) else { continue };
                if let Some(who) = holders.get(&a.ip()) {
                    return Err(crate::Error::Conflict(format!(
                        "{} on {}: its address {} was given to {who} while this host was away",
                        ep.name,
                        net.name,
                        a.ip()
                    )));
                }
                // Claim it again if it was released meanwhile (a reaped address).
                let req = crate::ipam::AddressRequest {
                    pool_id: p.clone(),
                    preferred: Some(a.ip()),
                    ..Default::default()
                };
                match ipam.request_address(op.w(), &req).await {
                    Ok(_) | Err(crate::Error::AddressInUse) => {}
                    Err(e) => return Err(e),
                }
            }
            records::save_endpoint(op.w(), ep)
        }
        .await;
        match op.settle(r).await {
            Ok(()) => {
                tracing::info!(endpoint = %ep.id, sandbox = %ep.name, network = %net.name, "published again under this host's new lease");
                Ok(())
            }
            Err(e @ crate::Error::Conflict(_)) => {
                // Its address belongs to someone else now: this host's half goes (interface,
                // records), the address stays theirs. Said loudly: the sandbox lost a network.
                tracing::error!(sandbox = %ep.name, network = %net.name, "cannot publish this endpoint again: {e}; it is disconnected here");
                self.drop_local_endpoint(net, ep).await
            }
            Err(e) => {
                tracing::error!(sandbox = %ep.name, network = %net.name, "cannot publish this endpoint again: {e}");
                Ok(())
            }
        }
    }

    /// Remove this host's half of an endpoint (its kernel objects and records) without
    /// touching its address, which is not its own any more.
    async fn drop_local_endpoint(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        let mut op = self
            .begin(
                Intent::new(format!("drop {} from {}", ep.name, net.name), vec![]),
                Locking::Inherited,
            )
            .await?;
        let r = async {
            let key = records::ep_key(&ep.network_id, &ep.id);
            let log = records::owned(op.r(), &key)?;
            for e in op.tx().teardown(&log, None).await {
                tracing::warn!(sandbox = %ep.name, "{e}");
            }
            records::delete_endpoint(op.w(), ep)
        }
        .await;
        op.settle(r).await
    }

    async fn withdraw(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        let mut op = self
            .begin(
                Intent::new(format!("withdraw {} from {}", ep.name, net.name), vec![]),
                Locking::Inherited,
            )
            .await?;
        let r = async {
            self.release_endpoint(&mut op, net, ep, true).await?;
            op.w().delete(
                Table::Endpoints,
                format!("{}/{}", ep.network_id, ep.id).as_bytes(),
            )?;
            Ok(())
        }
        .await;
        op.settle(r).await?;
        tracing::info!(endpoint = %ep.id, sandbox = %ep.name, network = %net.name, "withdrawn from the cluster store: this host has no record of it (a commit cut short)");
        Ok(())
    }

    /// Release what the endpoints that vanished since `prev` without releasing it held (a
    /// dead host's, expired with its lease). Done by the live host with the lowest id.
    async fn reap(
        &self,
        c: &Arc<Cluster>,
        m: &Mirror,
        prev: &Mirror,
        eps: &BTreeMap<String, Endpoint>,
    ) -> Result<()> {
        if m.hosts().iter().map(|h| &h.id).min() != Some(&c.host.id) {
            return Ok(());
        }
        let before = mirror_endpoints(prev);
        let held: BTreeSet<IpAddr> = eps
            .values()
            .flat_map(|e| [e.ipv4, e.ipv6].into_iter().flatten().map(|a| a.ip()))
            .collect();
        for (key, ep) in before {
            if eps.contains_key(&key) || ep.host.as_ref().is_some_and(|h| h.id == c.host.id) {
                continue;
            }
            let Some(net) = records::load_network(&*self.inner.store.read()?, &ep.network_id)?
            else {
                continue;
            };
            let addrs: Vec<(String, IpAddr)> = [(&ep.pool_v4, ep.ipv4), (&ep.pool_v6, ep.ipv6)]
                .into_iter()
                .filter_map(|(p, a)| Some((p.clone()?, a?.ip())))
                .filter(|(_, a)| !held.contains(a))
                .collect();
            if addrs.is_empty() {
                continue;
            }
            self.retrying(|| {
                let (net, addrs, ep) = (net.clone(), addrs.clone(), ep.clone());
                async move {
                    let mut op = self
                        .begin(
                            Intent::new(
                                format!("reap {} on {}", ep.name, net.name),
                                vec![net_lock(&net.id)],
                            ),
                            Locking::Keys,
                        )
                        .await?;
                    let r = async {
                        // Under the lock, with the endpoints read in this op (checked at commit):
                        // an address given to a new endpoint since is not touched.
                        let now: BTreeSet<IpAddr> = records::network_endpoints(op.r(), &net.id)?
                            .iter()
                            .flat_map(|e| [e.ipv4, e.ipv6].into_iter().flatten().map(|a| a.ip()))
                            .collect();
                        let ipam = self.ipam_of(&net)?;
                        for (p, a) in &addrs {
                            if !now.contains(a) {
                                let _ = ipam.release_address(op.w(), p, *a).await;
                            }
                        }
                        Ok(())
                    }
                    .await;
                    op.settle(r).await
                }
            })
            .await?;
            tracing::info!(sandbox = %ep.name, network = %net.name, "released the addresses of an endpoint whose host is gone");
        }
        Ok(())
    }
}
