//! Opening an engine, and reset.
//!
//! Under the engine-wide lock, before any operation: records from an older schema are
//! upgraded; journals of operations whose process died are settled (creations undone,
//! removals finished — [`super::op`]); on the first open after a reboot the kernel state the
//! records describe is gone, so sandboxes whose namespaces died are removed (as dockerd
//! removes the containers that died with the machine) and networks are made again; the
//! predefined networks are made to exist.

use std::collections::BTreeMap;

use super::network::{blank_network, first_host};
use super::op::{committed, Header, Intent, Locking, Op, Replay};
use super::records::{self, net_key};
use super::Engine;
use crate::error::{Error, Result};
use crate::ipam::{AddressRequest, PoolRequest, LOCAL_SPACE};
use crate::model::*;
use crate::net::{Journal, Tx};
use crate::store::{get_str, list_json, put_json, ReadTxn, Table, WriteTxn};

const SCHEMA: &str = "2";

impl Engine {
    pub(crate) async fn recover(&self) -> Result<()> {
        // Usually there is nothing to do: that is found under the engine-wide lock held
        // shared, so opening the engine (every CLI without a daemon, every Podman or CNI call)
        // does not wait for other processes' operations in flight, as the exclusive lock
        // would. Only when something is to do is it taken exclusively (and all looked at again).
        {
            let _shared = self.inner.locks.acquire(&[], false).await?;
            if !self.recovery_needed()? {
                return Ok(());
            }
        }
        let _held = self.inner.locks.acquire(&[], true).await?;
        self.upgrade_schema().await?;
        self.replay_journals().await?;
        self.catch_up_after_reboot().await?;
        self.ensure_predefined().await?;
        self.default_bridge_icc().await
    }

    /// Is there anything for [`Engine::recover`] to do: records of an older schema, a journal
    /// no live process holds, a reboot since the records were written, a predefined network
    /// missing, the default bridge's ICC to change?
    fn recovery_needed(&self) -> Result<bool> {
        let r = self.inner.store.read()?;
        if get_str(&*r, Table::Meta, "schema")?.as_deref() != Some(SCHEMA)
            || get_str(&*r, Table::Meta, "boot_id")?.as_deref() != Some(self.boot_id().as_str())
        {
            return Ok(true);
        }
        for n in PREDEFINED {
            if get_str(&*r, Table::NetworkNames, n)?.is_none() {
                return Ok(true);
            }
        }
        if let Some(want) = self.inner.cfg.default_bridge_icc {
            // (With sandboxes on the bridge it stays as it is, and recovery says so.)
            if let Ok(net) = records::resolve_network(&*r, "bridge") {
                if net.predefined && net.bool_option(crate::drivers::bridge::OPT_ICC, true)? != want
                {
                    return Ok(true);
                }
            }
        }
        drop(r);
        let dir = self.inner.cfg.run_root.join("journal");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            // Held by a live process: its operation is in flight, not interrupted (and one
            // gone meanwhile has ended).
            match crate::net::Journal::claim(&e.path()) {
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // A dead process's spare: nothing was interrupted.
                Ok(Some(j)) if j.is_spare() => j.remove(),
                Ok(Some(_)) | Err(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Apply the configured ICC of the predefined bridge (dockerd's `--icc`). ICC is set per
    /// endpoint when it joins, so the option changes only while no sandbox is on the bridge.
    async fn default_bridge_icc(&self) -> Result<()> {
        use crate::drivers::bridge::OPT_ICC;
        let Some(want) = self.inner.cfg.default_bridge_icc else {
            return Ok(());
        };
        let mut op = self
            .begin(
                Intent::new("default bridge ICC", vec![]),
                Locking::Inherited,
            )
            .await?;
        let r = async {
            let Some(mut net) = records::resolve_network(op.r(), "bridge")
                .ok()
                .filter(|n| n.predefined)
            else {
                return Ok(());
            };
            if net.bool_option(OPT_ICC, true)? == want {
                return Ok(());
            }
            if !records::network_endpoints(op.r(), &net.id)?.is_empty() {
                tracing::warn!(
                    "the default bridge has sandboxes: ICC stays {} until it has none (asked: {want})",
                    !want
                );
                return Ok(());
            }
            net.options.insert(OPT_ICC.into(), want.to_string());
            records::save_network(op.w(), &net)
        }
        .await;
        op.settle(r).await
    }

    /// Schema 1 kept undo logs inside the records; they are ownership records now.
    async fn upgrade_schema(&self) -> Result<()> {
        let r = self.inner.store.read()?;
        if get_str(&*r, Table::Meta, "schema")?.as_deref() == Some(SCHEMA) {
            return Ok(());
        }
        drop(r);
        let mut op = self
            .begin(Intent::new("upgrade records", vec![]), Locking::Inherited)
            .await?;
        for (table, owner) in [
            (Table::Networks, "net"),
            (Table::Endpoints, "ep"),
            (Table::Sandboxes, "sb"),
        ] {
            for (k, v) in op.r().scan(table, b"")? {
                let mut rec: serde_json::Value = crate::store::decode(&v)?;
                let Some(undo) = rec.as_object_mut().and_then(|o| o.remove("undo")) else {
                    continue;
                };
                let steps = serde_json::from_value(undo).unwrap_or_default();
                let key = format!("{owner}/{}", String::from_utf8_lossy(&k));
                records::own(op.w(), &key, "upgrade", steps)?;
                put_json(op.w(), table, &String::from_utf8_lossy(&k), &rec)?;
            }
        }
        op.w().put(Table::Meta, b"schema", SCHEMA.as_bytes())?;
        op.commit().await
    }

    /// Settle the journals of operations whose process is gone.
    pub(crate) async fn replay_journals(&self) -> Result<usize> {
        let dir = self.inner.cfg.run_root.join("journal");
        let mut paths: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => vec![],
        };
        paths.sort();
        let mut settled = 0;
        for path in paths {
            let journal = match Journal::claim(&path) {
                // A dead process's spare (see `JournalPool`): no operation's.
                Ok(Some(j)) if j.is_spare() => {
                    j.remove();
                    continue;
                }
                Ok(Some(j)) => j,
                // A live operation of another process, or gone meanwhile.
                Ok(None) | Err(_) => continue,
            };
            settled += 1;
            let (raw, steps) = match journal.read() {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("unreadable journal {}: {e}", path.display());
                    continue;
                }
            };
            let Ok(header) = serde_json::from_value::<Header>(raw) else {
                // The kernel objects are the ones at risk of leaking: undo them.
                tracing::warn!(
                    "journal {} has no readable header: undoing its steps",
                    path.display()
                );
                Tx::resume(
                    self.inner.kernel.clone(),
                    journal,
                    steps,
                    self.inner.fp.clone(),
                )?
                .rollback()
                .await;
                continue;
            };
            let done = committed(&crate::store::Txn::new(self.inner.store.clone())?, &header)?;
            if done {
                journal.remove();
                continue;
            }
            match header.intent.replay.clone() {
                Some(replay) => {
                    tracing::warn!(op = %header.intent.what, "finishing an operation a crash interrupted");
                    let op = self.resume(header, journal, steps, None)?;
                    if let Err(e) = self.replay(op, replay).await {
                        tracing::warn!("finishing an interrupted removal: {e}");
                    }
                }
                None => {
                    tracing::warn!(
                        op = %header.intent.what,
                        "undoing an operation a crash interrupted ({} kernel changes)",
                        steps.len()
                    );
                    Tx::resume(
                        self.inner.kernel.clone(),
                        journal,
                        steps,
                        self.inner.fp.clone(),
                    )?
                    .rollback()
                    .await;
                }
            }
        }
        Ok(settled)
    }

    /// Finish an interrupted removal, in `op` (which holds its journal and locks).
    pub(crate) async fn replay(&self, mut op: Op, replay: Replay) -> Result<()> {
        let r = match &replay {
            Replay::NetworkRm { id } => match records::load_network(op.r(), id)? {
                Some(net) => self.remove_network_in(&mut op, &net, true).await,
                None => Ok(()),
            },
            Replay::SandboxRm { ids } => self.remove_sandboxes_in(&mut op, ids, true).await,
            Replay::Disconnect { network, sandbox } => {
                match self.disconnect_in(&mut op, network, sandbox, true).await {
                    Err(Error::NotConnected { .. }) | Err(Error::NetworkNotFound(_)) => Ok(()),
                    r => r,
                }
            }
            Replay::PeerRm { peer } => self.cluster_peer_in(&mut op, *peer, false, false).await,
        };
        op.settle(r).await
    }

    fn boot_id(&self) -> String {
        if let Some(b) = &self.inner.cfg.boot_id {
            return b.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    async fn catch_up_after_reboot(&self) -> Result<()> {
        let now = self.boot_id();
        let stored = get_str(&*self.inner.store.read()?, Table::Meta, "boot_id")?;
        if stored.as_deref() == Some(now.as_str()) {
            return Ok(());
        }
        if stored.is_some() {
            self.after_reboot().await?;
        }
        let mut op = self
            .begin(
                Intent::new("record the boot id", vec![]),
                Locking::Inherited,
            )
            .await?;
        op.w().put(Table::Meta, b"boot_id", now.as_bytes())?;
        op.commit().await
    }

    /// The machine rebooted: the kernel objects the records describe are gone.
    async fn after_reboot(&self) -> Result<()> {
        tracing::warn!("first start after a reboot: removing sandboxes whose namespaces died, making networks again");
        let mut op = self
            .begin(
                Intent::new("catch up after a reboot", vec![]),
                Locking::Inherited,
            )
            .await?;
        let r = async {
            for sb in list_json::<Sandbox>(op.r(), Table::Sandboxes)? {
                if sb.mode == NsMode::Host {
                    // The host's namespace survives; its pin is made again at open.
                    let mut sb = sb;
                    sb.key = self.inner.kernel.host_path().to_path_buf();
                    records::save_sandbox(op.w(), &sb)?;
                    continue;
                }
                for ep in records::sandbox_endpoints(op.r(), &sb.id)? {
                    if let Some(net) = records::load_network(op.r(), &ep.network_id)? {
                        self.release_endpoint(&mut op, &net, &ep, true).await?;
                    }
                    records::delete_endpoint(op.w(), &ep)?;
                }
                records::delete_sandbox(op.w(), &sb)?;
                tracing::info!(sandbox = %sb.name, "removed: its namespace did not survive the reboot");
            }
            for (k, _) in op.r().scan(Table::Owned, b"")? {
                op.w().delete(Table::Owned, &k)?;
            }
            for mut net in list_json::<Network>(op.r(), Table::Networks)? {
                if net.realized {
                    net.realized = false;
                    records::save_network(op.w(), &net)?;
                }
            }
            Ok(())
        }
        .await;
        op.settle(r).await?;
        // IPAM plugins that keep their state elsewhere (in memory, far away) hear again of
        // every pool and address the networks hold.
        let nets: Vec<Network> = list_json(&*self.inner.store.read()?, Table::Networks)?;
        self.replay_ipam_with(Locking::Inherited).await?;
        // Networks are made again one by one: one that cannot be (a parent interface that
        // has not come back) stays unmade, and is made on its first connect.
        for net in nets.into_iter().filter(|n| !n.predefined) {
            let mut op = self
                .begin(
                    Intent::new(format!("make network {} again", net.name), vec![])
                        .owned(net_key(&net.id)),
                    Locking::Inherited,
                )
                .await?;
            let mut n = net.clone();
            let r = self.realize_network(&mut op, &mut n).await;
            if let Err(e) = op.settle(r).await {
                tracing::warn!(network = %net.name, "cannot make the network again after the reboot: {e}");
            }
        }
        Ok(())
    }

    /// Ask every IPAM whose capabilities want it (`requires-request-replay`: it keeps its
    /// state in memory or far away, as NetBox does) for every pool and address weft holds
    /// again: the pools, the gateways and aux addresses, and each endpoint's addresses with
    /// who holds them. Done after a reboot and when the daemon starts; a network whose replay
    /// fails is logged and left as it is (its IPAM may be unreachable now). Returns how many
    /// networks were replayed.
    pub async fn replay_ipam(&self) -> Result<usize> {
        self.replay_ipam_with(Locking::Keys).await
    }

    async fn replay_ipam_with(&self, locking: Locking) -> Result<usize> {
        let nets: Vec<Network> = list_json(&*self.inner.store.read()?, Table::Networks)?;
        let mut replayed = 0;
        for net in &nets {
            let Ok(ipam) = self.ipam(&net.ipam_driver) else {
                continue;
            };
            if !ipam.capabilities().requires_request_replay {
                continue;
            }
            let mut op = self
                .begin(
                    Intent::new(
                        format!("replay the pools of {}", net.name),
                        vec![super::network::net_lock(&net.id)],
                    ),
                    locking,
                )
                .await?;
            // The network as it is now, under its lock (it may have changed or gone).
            let Some(net) = records::load_network(op.r(), &net.id)? else {
                op.settle(Ok(())).await?;
                continue;
            };
            let r = async {
                for p in &net.pools {
                    let req = PoolRequest {
                        address_space: LOCAL_SPACE.into(),
                        pool: Some(p.subnet),
                        sub_pool: p.ip_range,
                        options: net.ipam_options.clone(),
                        v6: p.is_v6(),
                        avoid: vec![],
                    };
                    ipam.request_pool(op.w(), &req).await?;
                    for a in p.gateway.iter().chain(p.aux_addresses.values()) {
                        ipam.request_address(
                            op.w(),
                            &AddressRequest {
                                pool_id: p.pool_id.clone(),
                                preferred: Some(*a),
                                ..Default::default()
                            },
                        )
                        .await?;
                    }
                }
                let eps = records::network_endpoints(op.r(), &net.id)?;
                for ep in &eps {
                    for (addr, pool) in [(ep.ipv4, &ep.pool_v4), (ep.ipv6, &ep.pool_v6)] {
                        let (Some(a), Some(pool)) = (addr, pool) else {
                            continue;
                        };
                        ipam.request_address(
                            op.w(),
                            &AddressRequest {
                                pool_id: pool.clone(),
                                preferred: Some(a.ip()),
                                context: Some(super::endpoint::endpoint_context(ep)),
                                ..Default::default()
                            },
                        )
                        .await?;
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            match op.settle(r).await {
                Ok(()) => replayed += 1,
                Err(e) => tracing::warn!(network = %net.name, "IPAM replay: {e}"),
            }
        }
        Ok(replayed)
    }

    /// bridge, host and none exist from the first start on.
    async fn ensure_predefined(&self) -> Result<()> {
        let r = self.inner.store.read()?;
        let have: Vec<bool> = PREDEFINED
            .iter()
            .map(|n| get_str(&*r, Table::NetworkNames, n).map(|v| v.is_some()))
            .collect::<Result<_>>()?;
        drop(r);
        if have.iter().all(|x| *x) {
            return Ok(());
        }
        let mut op = self
            .begin(
                Intent::new("predefined networks", vec![]),
                Locking::Inherited,
            )
            .await?;
        let r = self.predefined_in(&mut op, &have).await;
        op.settle(r).await
    }

    async fn predefined_in(&self, op: &mut Op, have: &[bool]) -> Result<()> {
        let avoid = self.host_routes(op).await?;
        for (name, present) in PREDEFINED.iter().zip(have) {
            if *present {
                continue;
            }
            let driver = match *name {
                "none" => "null",
                n => n,
            };
            let mut net = blank_network(name, driver);
            net.enable_ipv4 = *name == "bridge";
            net.predefined = true;
            net.realized = *name != "bridge";
            if *name == "bridge" {
                use crate::drivers::bridge::*;
                for (k, v) in [
                    (OPT_DEFAULT, "true"),
                    (
                        OPT_ICC,
                        if self.inner.cfg.default_bridge_icc == Some(false) {
                            "false"
                        } else {
                            "true"
                        },
                    ),
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
                let grant = ipam.request_pool(op.w(), &req).await?;
                let gw = first_host(&grant.pool);
                ipam.request_address(
                    op.w(),
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
            records::save_network(op.w(), &net)?;
        }
        Ok(())
    }

    /// Remove every sandbox and custom network, the predefined bridge's kernel objects and
    /// weft's nftables table: the host is left as before weft's first use.
    pub async fn reset(&self) -> Result<()> {
        let _held = self.inner.locks.acquire(&[], true).await?;
        self.replay_journals().await?;
        let ids: Vec<String> = list_json::<Sandbox>(&*self.inner.store.read()?, Table::Sandboxes)?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if !ids.is_empty() {
            let mut op = self
                .begin(
                    Intent::new("reset: sandboxes", vec![]).removes(
                        Table::Sandboxes,
                        ids.clone(),
                        Replay::SandboxRm { ids: ids.clone() },
                    ),
                    Locking::Inherited,
                )
                .await?;
            let r = self.remove_sandboxes_in(&mut op, &ids, true).await;
            op.settle(r).await?;
        }
        let nets: Vec<Network> = list_json(&*self.inner.store.read()?, Table::Networks)?;
        for n in nets {
            let what = format!("reset: network {}", n.name);
            let intent = if n.predefined {
                // It stays (unmade): nothing to finish if interrupted; check/repair mends it.
                Intent::new(what, vec![])
            } else {
                Intent::new(what, vec![]).removes(
                    Table::Networks,
                    vec![n.id.clone()],
                    Replay::NetworkRm { id: n.id.clone() },
                )
            };
            let mut op = self.begin(intent, Locking::Inherited).await?;
            let r = if n.predefined {
                self.unrealize_in(&mut op, n).await
            } else {
                self.remove_network_in(&mut op, &n, true).await
            };
            op.settle(r).await?;
        }
        self.reap_links_with(Locking::Inherited).await?;
        Ok(())
    }

    /// Take a predefined network's kernel objects away (it stays, unmade until next use).
    async fn unrealize_in(&self, op: &mut Op, mut n: Network) -> Result<()> {
        if !n.realized || !records::network_endpoints(op.r(), &n.id)?.is_empty() {
            return Ok(());
        }
        let key = net_key(&n.id);
        let log = records::owned(op.r(), &key)?;
        if log.is_empty() {
            return Ok(());
        }
        for e in op.tx().teardown(&log, None).await {
            tracing::warn!("reset {}: {e}", n.name);
        }
        records::disown(op.w(), &key)?;
        n.driver_data.clear();
        n.realized = false;
        records::save_network(op.w(), &n)
    }
}
