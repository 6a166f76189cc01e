//! `weft system check`: every disagreement between the records and the kernel, and
//! `--repair`, which mends them.
//!
//! Records to kernel: every object an ownership record lists (links, addresses, routes,
//! neighbours, FDB entries, firewall rules, namespace pins) must exist, the links native
//! drivers brought up must be up, and every sandbox's namespace must be alive. Kernel to records: every host link the kernel marks as weft's
//! ([`crate::net::kernel::WEFT_GROUP`]), every link inside a namespace weft owns, every pin
//! under the run dir, every network chain and published-port map key in weft's nftables tables
//! and every bridge port with ICC elements must be owned by a record; every
//! address the native IPAM has allocated must be held by an endpoint, a gateway or an aux
//! address, and every one of those must be allocated. Journals of interrupted operations
//! count too.
//!
//! Repair: interrupted operations are settled; sandboxes whose namespace is gone are removed
//! (with their endpoints and addresses); networks and endpoints missing kernel objects are
//! made again from their records; what no record owns is removed; leaked addresses are
//! released.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::endpoint::DefaultRoute;
use super::op::{Intent, Locking, Op, Replay};
use super::records::{self, ep_key, net_key};
use super::scoped::{HealScope, Scoped};
use super::Engine;
use crate::error::Result;
use crate::ipam::native::NativeIpam;
use crate::model::*;
use crate::net::kernel::is_weft_group;
use crate::net::{NsRef, Step};
use crate::store::{decode, list_json, ReadTxn, Table};

/// What kind of disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A record says weft made something that is not in the kernel.
    Missing,
    /// Something of weft's in the kernel that no record owns.
    Orphan,
    /// An address allocated that nothing holds, or held but not allocated.
    Address,
    /// A record pointing at records that do not exist.
    Dangling,
    /// An operation that was interrupted and not yet settled.
    Interrupted,
}

/// What a check of the daemon's healer did ([`Engine::heal`]).
#[derive(Debug)]
pub struct Healed {
    /// What was mended.
    pub fixed: Vec<Finding>,
    /// Global networks were left out: this host's view of the cluster was not current.
    pub global_left: bool,
}

/// One disagreement.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The object ("network web", "sandbox api", "host link veth0123").
    pub object: String,
    pub detail: String,
    #[serde(skip)]
    fix: Fix,
}

impl Finding {
    fn new(kind: FindingKind, object: String, detail: String, fix: Fix) -> Finding {
        Finding {
            kind,
            object,
            detail,
            fix,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FindingKind::Missing => "missing",
            FindingKind::Orphan => "orphan",
            FindingKind::Address => "address",
            FindingKind::Dangling => "dangling",
            FindingKind::Interrupted => "interrupted",
        };
        write!(f, "{kind}: {}: {}", self.object, self.detail)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Fix {
    SettleJournals,
    /// A link weft brought up is down: bring it up (before anything is made again on it:
    /// routes through a link that is down cannot be added).
    LinkUp(NsRef, String),
    RemoveSandbox(String),
    RealizeNetwork(String),
    RealizeEndpoint {
        net: String,
        ep: String,
    },
    DeleteLink(NsRef, String),
    Unpin(PathBuf),
    PurgeFirewall(String),
    ResetFirewall,
    Release {
        pool: String,
        ip: IpAddr,
    },
    Allocate {
        pool: String,
        ip: IpAddr,
    },
    ReleasePool(String),
    DeleteEndpoint {
        net: String,
        ep: String,
    },
    /// A sandbox's published ports (sandbox id, its 12 digits), made again from its record:
    /// its keys purged, whatever they map to, then added.
    Republish(String, String),
    /// A network's nftables rules (network id) differ from what weft made: purged and made
    /// again from its record, the network's links left as they are.
    Refirewall(String),
    /// A key in the port maps no record owns.
    PurgePorts(crate::firewall::PortElem),
    /// ICC elements of a bridge port no record owns.
    PurgeIcc(String),
    /// weft's base chains lost rules (a flushed `guard` or `forward`): put them back.
    ReassertBase,
    /// Objects in weft's tables weft does not make (an older weft's layout, anyone's):
    /// removed, all in one batch — after the base chains are made again (an older weft's
    /// base rules referred to its maps).
    PurgeStrangers,
    /// A global network's remote-endpoint entries (FDB, neighbours) on this host are not all
    /// there: forget the record, and the cluster follower programs them all again.
    Reprogram(String),
    /// Host links a removal left for later are still there: delete them.
    Reap,
}

/// A step of an undo log, in words: what it would remove.
fn describe(s: &Step) -> String {
    let at = |ns: &NsRef| match ns {
        NsRef::Host => String::new(),
        NsRef::Path(p) => format!(" in {}", p.display()),
    };
    match s {
        Step::DelLink { ns, name, .. } => format!("link {name}{}", at(ns)),
        Step::DelAddress { ns, link, addr } => format!("address {addr} on {link}{}", at(ns)),
        Step::DelRoute {
            ns, dst, via, dev, ..
        } => match via {
            Some(v) => format!("route {dst} via {v} dev {dev}{}", at(ns)),
            None => format!("route {dst} dev {dev}{}", at(ns)),
        },
        Step::DelNeigh {
            ns,
            link,
            ip,
            proxy,
        } => format!(
            "{}neighbour {ip} on {link}{}",
            if *proxy { "proxy " } else { "" },
            at(ns)
        ),
        Step::DelFdb { link, mac, dst } => format!("fdb entry {mac} → {dst} on {link}"),
        Step::DelNetns { pin } => format!("namespace pin {}", pin.display()),
        Step::Firewall { change } => change.describe(),
        other => format!("{} step", other.kind()),
    }
}

/// Up to this many ownership records, a check reads each one's endpoint alone.
const FEW: usize = 16;

/// What a check knows of the records besides the ownership records it checks.
pub(super) struct World<'a> {
    pub(super) nets_by_id: &'a BTreeMap<&'a str, &'a Network>,
    pub(super) by_id: &'a BTreeMap<&'a str, &'a Sandbox>,
    /// Namespaces of sandboxes found gone (what was in them is reported with the sandbox).
    pub(super) dead_ns: &'a HashSet<PathBuf>,
    /// Global networks too (else only what is this host's alone).
    pub(super) global: bool,
}

impl World<'_> {
    fn left_out(&self, net: &str) -> bool {
        !self.global
            && self
                .nets_by_id
                .get(net)
                .is_some_and(|n| n.scope == Scope::Global)
    }
}

impl Engine {
    /// Every disagreement between the records and the kernel (empty: all is well).
    pub async fn check(&self) -> Result<Vec<Finding>> {
        // Deletions removals left for later are finished first: they are settled work, not
        // drift (what still cannot be deleted is reported below).
        self.reap_before_check().await;
        let _held = self.inner.locks.acquire(&[], true).await?;
        let mut op = self
            .begin(Intent::new("system check", vec![]), Locking::Inherited)
            .await?;
        let r = self.check_in(&mut op, true).await;
        op.abort().await;
        r
    }

    /// Mend what [`Engine::check`] finds; returns what was mended. What cannot be mended is
    /// left (and a new check shows it).
    pub async fn repair(&self) -> Result<Vec<Finding>> {
        self.reap_before_check().await;
        let held = self.inner.locks.acquire(&[], true).await?;
        self.repair_holding(held, true).await
    }

    /// The daemon's healer's [`Engine::repair`]. With `wait` false, only if it can start at
    /// once: `None` while an operation (of this process or another) holds or waits for the
    /// engine — asking for the lock then would hold up every operation after it until those
    /// in flight end (a plugin call can take seconds). Global networks are left out while this
    /// host's view of the cluster is not current ([`Engine::cluster_view_current`]): the
    /// answer says so, and they are to be checked again once it is.
    ///
    /// A `scope` that names the objects changes touched is checked under those objects' locks
    /// only (see [`super::scoped`]), unless only the whole check can judge it.
    pub async fn heal(&self, wait: bool, scope: &HealScope) -> Result<Option<Healed>> {
        match self.heal_scoped(wait, scope).await? {
            Scoped::Healed(fixed) => {
                return Ok(Some(Healed {
                    fixed,
                    global_left: false,
                }))
            }
            Scoped::Busy => return Ok(None),
            Scoped::Whole => {}
        }
        self.reap_before_check().await;
        let held = if wait {
            self.inner.locks.acquire(&[], true).await?
        } else {
            match self.inner.locks.try_exclusive()? {
                Some(held) => held,
                None => return Ok(None),
            }
        };
        let global = self.cluster_view_current();
        Ok(Some(Healed {
            fixed: self.repair_holding(held, global).await?,
            global_left: !global,
        }))
    }

    /// `global`: global networks too (else only what is this host's alone).
    async fn repair_holding(
        &self,
        _held: super::locks::Held,
        global: bool,
    ) -> Result<Vec<Finding>> {
        let mut op = self
            .begin(Intent::new("system check", vec![]), Locking::Inherited)
            .await?;
        let found = self.check_in(&mut op, global).await;
        op.abort().await;
        let fixed = self.mend(found?).await;
        // Sandboxes removed above leave their host links for later.
        if let Err(e) = self.reap_links_with(Locking::Inherited).await {
            tracing::warn!("deleting removed sandboxes' links: {e}");
        }
        Ok(fixed)
    }

    /// Mend what a check found, in the order of the fixes (under the locks the check held);
    /// returns what was mended.
    pub(super) async fn mend(&self, mut found: Vec<Finding>) -> Vec<Finding> {
        found.sort_by(|a, b| a.fix.cmp(&b.fix));
        let mut done: BTreeSet<Fix> = BTreeSet::new();
        let mut fixed = Vec::new();
        for f in found {
            // A network made again brings its endpoints back with it.
            let covered = match &f.fix {
                Fix::RealizeEndpoint { net, .. } => {
                    done.contains(&Fix::RealizeNetwork(net.clone()))
                }
                _ => false,
            };
            if covered || done.contains(&f.fix) {
                fixed.push(f);
                continue;
            }
            match self.fix(&f.fix).await {
                Ok(()) => {
                    done.insert(f.fix.clone());
                    fixed.push(f);
                }
                Err(e) => tracing::warn!("cannot repair {f}: {e}"),
            }
        }
        fixed
    }

    async fn reap_before_check(&self) {
        if let Err(e) = self.reap_links().await {
            tracing::debug!("deleting removed sandboxes' links before a check: {e}");
        }
    }

    /// `global` false: global networks (and their endpoints, addresses and remote entries)
    /// are left out.
    async fn check_in(&self, op: &mut Op, global: bool) -> Result<Vec<Finding>> {
        let mut out = Vec::new();
        let mut add = |kind, object: String, detail: String, fix| {
            out.push(Finding::new(kind, object, detail, fix))
        };

        // Interrupted operations (journals no live process holds).
        let dir = self.inner.cfg.run_root.join("journal");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(Some(j)) = crate::net::Journal::claim(&e.path()) {
                if j.is_spare() {
                    continue; // a dead process's spare: no operation's
                }
                let what = j
                    .read()
                    .ok()
                    .and_then(|(h, _)| h["intent"]["what"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                add(
                    FindingKind::Interrupted,
                    format!("operation {what}"),
                    format!("its journal {} is left", e.path().display()),
                    Fix::SettleJournals,
                );
            }
        }

        let nets: Vec<Network> = list_json(op.r(), Table::Networks)?;
        let sandboxes: Vec<Sandbox> = list_json(op.r(), Table::Sandboxes)?;
        let by_id: BTreeMap<&str, &Sandbox> =
            sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
        let nets_by_id: BTreeMap<&str, &Network> =
            nets.iter().map(|n| (n.id.as_str(), n)).collect();
        let owned: Vec<(String, Vec<Step>)> = op
            .r()
            .scan(Table::Owned, b"")?
            .into_iter()
            .map(|(k, v)| {
                decode::<records::Owned>(&v)
                    .map(|o| (String::from_utf8_lossy(&k).into_owned(), o.steps))
            })
            .collect::<Result<_>>()?;

        // Read-only from here: the host and each sandbox's namespace are listed once, all at
        // once, not asked once per object.
        let namespaces: Vec<NsRef> = std::iter::once(NsRef::Host)
            .chain(
                sandboxes
                    .iter()
                    .filter(|s| !matches!(s.mode, NsMode::Host | NsMode::Container { .. }))
                    .map(|s| NsRef::Path(s.key.clone())),
            )
            .collect();
        op.tx().survey(&namespaces).await;

        // Sandboxes: their namespaces.
        let mut dead_ns: HashSet<PathBuf> = HashSet::new();
        for sb in &sandboxes {
            let alive = match &sb.mode {
                NsMode::Host => true,
                NsMode::Container { id } => {
                    if !by_id.contains_key(id.as_str()) {
                        add(
                            FindingKind::Dangling,
                            format!("sandbox {}", sb.name),
                            format!("shares the namespace of sandbox {id}, which does not exist"),
                            Fix::RemoveSandbox(sb.id.clone()),
                        );
                    }
                    true
                }
                _ => self.inner.kernel.is_netns(&sb.key),
            };
            if !alive {
                dead_ns.insert(sb.key.clone());
                add(
                    FindingKind::Missing,
                    format!("sandbox {}", sb.name),
                    format!("its namespace {} is gone", sb.key.display()),
                    Fix::RemoveSandbox(sb.id.clone()),
                );
            }
        }

        // Records to kernel.
        let world = World {
            nets_by_id: &nets_by_id,
            by_id: &by_id,
            dead_ns: &dead_ns,
            global,
        };
        let mut found = Vec::new();
        self.check_owned(op, &owned, &world, &mut found).await?;
        for f in found {
            add(f.kind, f.object, f.detail, f.fix);
        }
        let left_out = |net: &str| world.left_out(net);

        // Endpoints: dangling records (another host's endpoints on a global network are that
        // host's to check).
        for (k, v) in op.r().scan(Table::Endpoints, b"")? {
            let ep: Endpoint = crate::store::decode_record(Table::Endpoints, &k, &v)?;
            if self.is_remote(&ep) || left_out(&ep.network_id) {
                continue;
            }
            if !nets_by_id.contains_key(ep.network_id.as_str())
                || !by_id.contains_key(ep.sandbox_id.as_str())
            {
                add(
                    FindingKind::Dangling,
                    format!("endpoint {}", String::from_utf8_lossy(&k)),
                    "its network or sandbox does not exist".into(),
                    Fix::DeleteEndpoint {
                        net: ep.network_id.clone(),
                        ep: ep.id.clone(),
                    },
                );
            }
        }

        // Kernel to records: host links weft made.
        let mut known: HashSet<(NsRef, String)> = HashSet::new();
        for (_, steps) in &owned {
            for s in steps {
                if let Step::DelLink { ns, name, peer } = s {
                    known.insert((ns.clone(), name.clone()));
                    if let Some((pns, pname)) = peer {
                        known.insert((pns.clone(), pname.clone()));
                    }
                }
            }
        }
        for l in op.tx().links(&NsRef::Host).await? {
            if is_weft_group(l.group) && !known.contains(&(NsRef::Host, l.name.clone())) {
                add(
                    FindingKind::Orphan,
                    format!("host link {}", l.name),
                    "made by weft (its link group says so) but no record owns it".into(),
                    Fix::DeleteLink(NsRef::Host, l.name.clone()),
                );
            }
        }
        // Links inside the namespaces weft made for sandboxes.
        for sb in &sandboxes {
            if !matches!(sb.mode, NsMode::Owned | NsMode::None) || dead_ns.contains(&sb.key) {
                continue;
            }
            let ns = NsRef::Path(sb.key.clone());
            for l in op.tx().links(&ns).await? {
                if l.name != "lo" && !known.contains(&(ns.clone(), l.name.clone())) {
                    add(
                        FindingKind::Orphan,
                        format!("sandbox {}", sb.name),
                        format!("link {} in its namespace has no record", l.name),
                        Fix::DeleteLink(ns.clone(), l.name.clone()),
                    );
                }
            }
        }
        // Pins under the run dir.
        // (A removed sandbox's pin may wait for the reaper: its record owns it.)
        let keys: HashSet<&PathBuf> = sandboxes
            .iter()
            .map(|s| &s.key)
            .chain(
                owned
                    .iter()
                    .flat_map(|(_, s)| s.iter())
                    .filter_map(|s| match s {
                        Step::DelNetns { pin } => Some(pin),
                        _ => None,
                    }),
            )
            .collect();
        for e in std::fs::read_dir(self.inner.cfg.run_root.join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if !keys.contains(&p) {
                add(
                    FindingKind::Orphan,
                    format!("namespace pin {}", p.display()),
                    "no sandbox owns it".into(),
                    Fix::Unpin(p),
                );
            }
        }
        // weft's nftables table.
        let fw_ids: HashSet<String> = owned
            .iter()
            .flat_map(|(_, s)| s.iter())
            .filter_map(|s| match s {
                Step::Firewall {
                    change:
                        crate::firewall::FwChange::Add(r) | crate::firewall::FwChange::Remove(r),
                } => Some(r.id.clone()),
                _ => None,
            })
            .collect();
        if let Some(ids) = op.tx().firewall_networks().await? {
            for id in ids.iter().filter(|i| !fw_ids.contains(*i)) {
                add(
                    FindingKind::Orphan,
                    format!("nftables chains nw-{id}-*"),
                    "no network owns them".into(),
                    Fix::PurgeFirewall(id.clone()),
                );
            }
            let mut base = Vec::new();
            self.check_base(op, !fw_ids.is_empty(), &mut base).await?;
            for f in base {
                add(f.kind, f.object, f.detail, f.fix);
            }
            // Sandboxes' published ports and endpoints' ICC elements.
            let (mut port_elems, mut icc_ports) = (HashSet::new(), HashSet::new());
            for s in owned.iter().flat_map(|(_, s)| s.iter()) {
                match s {
                    Step::Firewall {
                        change:
                            crate::firewall::FwChange::AddPorts(p)
                            | crate::firewall::FwChange::RemovePorts(p),
                    } => {
                        port_elems.extend(p.elems());
                    }
                    Step::Firewall {
                        change:
                            crate::firewall::FwChange::AddIcc(i)
                            | crate::firewall::FwChange::RemoveIcc(i),
                    } => {
                        icc_ports.insert(i.port.clone());
                        // A link's target may be gone: its elements are the linker's.
                        icc_ports.extend(i.links.iter().map(|l| l.peer.clone()));
                    }
                    _ => {}
                }
            }
            let (elems, ports) = op.tx().firewall_sandbox_objects().await?;
            for e in elems.iter().filter(|e| !port_elems.contains(*e)) {
                add(
                    FindingKind::Orphan,
                    format!("nftables map {e}"),
                    "a published port no sandbox owns".into(),
                    Fix::PurgePorts(e.clone()),
                );
            }
            for port in ports.iter().filter(|p| !icc_ports.contains(*p)) {
                add(
                    FindingKind::Orphan,
                    format!("nftables ICC elements of {port}"),
                    "no endpoint owns them".into(),
                    Fix::PurgeIcc(port.clone()),
                );
            }
            if fw_ids.is_empty() && ids.is_empty() {
                add(
                    FindingKind::Orphan,
                    "nftables table inet weft".into(),
                    "no network uses it".into(),
                    Fix::ResetFirewall,
                );
            }
        }

        // Addresses (native IPAM): allocated ⇔ held.
        let mut held: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut pool_owner: BTreeMap<String, String> = BTreeMap::new();
        for n in nets.iter().filter(|n| n.ipam_driver == "default") {
            for p in &n.pools {
                pool_owner.insert(p.pool_id.clone(), n.name.clone());
                let h = held.entry(p.pool_id.clone()).or_default();
                h.extend(p.gateway);
                h.extend(p.aux_addresses.values().copied());
            }
            for ep in records::network_endpoints(op.r(), &n.id)? {
                for (pool, a) in [(&ep.pool_v4, ep.ipv4), (&ep.pool_v6, ep.ipv6)] {
                    if let (Some(pool), Some(a)) = (pool, a) {
                        held.entry(pool.clone()).or_default().insert(a.ip());
                    }
                }
            }
        }
        let left_pools: HashSet<&str> = nets
            .iter()
            .filter(|n| left_out(&n.id))
            .flat_map(|n| n.pools.iter().map(|p| p.pool_id.as_str()))
            .collect();
        for (pool, subnet) in NativeIpam::pool_ids(op.r())? {
            if left_pools.contains(pool.as_str()) {
                continue;
            }
            let Some(owner) = pool_owner.get(&pool) else {
                add(
                    FindingKind::Address,
                    format!("pool {subnet}"),
                    "allocated, but no network has it".into(),
                    Fix::ReleasePool(pool.clone()),
                );
                continue;
            };
            let allocated: BTreeSet<IpAddr> = NativeIpam::allocated(op.r(), &pool)?
                .unwrap_or_default()
                .into_iter()
                .collect();
            let holders = held.remove(&pool).unwrap_or_default();
            for ip in allocated.difference(&holders) {
                add(
                    FindingKind::Address,
                    format!("network {owner}"),
                    format!("address {ip} is allocated but nothing holds it"),
                    Fix::Release {
                        pool: pool.clone(),
                        ip: *ip,
                    },
                );
            }
            for ip in holders.difference(&allocated) {
                add(
                    FindingKind::Address,
                    format!("network {owner}"),
                    format!(
                        "address {ip} is in use but not allocated (it could be handed out twice)"
                    ),
                    Fix::Allocate {
                        pool: pool.clone(),
                        ip: *ip,
                    },
                );
            }
        }
        Ok(out)
    }

    /// weft's base chains (with `expected`: some network has rules, so they should be there)
    /// hold the rules weft makes, compared by content; and weft's tables hold nothing weft does
    /// not make (chains, maps or sets of an older weft's layout, or anyone's).
    pub(super) async fn check_base(
        &self,
        op: &mut Op,
        expected: bool,
        out: &mut Vec<Finding>,
    ) -> Result<()> {
        if expected && op.tx().firewall_base_intact().await? == Some(false) {
            out.push(Finding::new(
                FindingKind::Missing,
                "nftables base chains of weft's tables".into(),
                "rules missing or changed (guard, forward, nat, port lookups, ICC)".into(),
                Fix::ReassertBase,
            ));
        }
        for what in op.tx().firewall_strangers().await? {
            out.push(Finding::new(
                FindingKind::Orphan,
                format!("nftables {what}"),
                "weft does not make it (an older weft's, or someone else's)".into(),
                Fix::PurgeStrangers,
            ));
        }
        Ok(())
    }

    /// Records to kernel for `owned` (ownership records: key and undo steps): every object
    /// they list is there — a firewall step's content compared, not only its name — and the
    /// links native drivers brought up are up.
    pub(super) async fn check_owned(
        &self,
        op: &mut Op,
        owned: &[(String, Vec<Step>)],
        world: &World<'_>,
        out: &mut Vec<Finding>,
    ) -> Result<()> {
        let mut add = |kind, object: String, detail: String, fix| {
            out.push(Finding::new(kind, object, detail, fix))
        };
        let (nets_by_id, by_id, dead_ns) = (world.nets_by_id, world.by_id, world.dead_ns);
        let left_out = |net: &str| world.left_out(net);
        let mut ep_names: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (key, steps) in owned {
            let parts: Vec<&str> = key.split('/').collect();
            if let ["net" | "peers", id] | ["ep", id, _] = parts.as_slice() {
                if left_out(id) {
                    continue;
                }
            }
            let (object, fix) = match parts.as_slice() {
                ["net", id] => match nets_by_id.get(id) {
                    Some(n) => (
                        format!("network {}", n.name),
                        Fix::RealizeNetwork(id.to_string()),
                    ),
                    None => continue,
                },
                ["ep", net, ep] => {
                    // Each network's endpoints are read once, not once per endpoint (with a
                    // thousand on one network that was a million record decodes) — unless
                    // only a few records are checked (the healer's check of what a change
                    // named): those endpoints alone, then.
                    if owned.len() <= FEW {
                        let name = records::load_endpoint(op.r(), net, ep)?
                            .map(|e| e.name)
                            .unwrap_or_default();
                        ep_names
                            .entry(net.to_string())
                            .or_default()
                            .insert(ep.to_string(), name);
                    } else if !ep_names.contains_key(*net) {
                        let names = records::network_endpoints(op.r(), net)?
                            .into_iter()
                            .map(|e| (e.id, e.name))
                            .collect();
                        ep_names.insert(net.to_string(), names);
                    }
                    let name = ep_names[*net].get(*ep).cloned().unwrap_or_default();
                    (
                        format!(
                            "endpoint of {name} on {}",
                            nets_by_id.get(net).map(|n| n.name.as_str()).unwrap_or("?")
                        ),
                        Fix::RealizeEndpoint {
                            net: net.to_string(),
                            ep: ep.to_string(),
                        },
                    )
                }
                ["sb", id] => match by_id.get(id) {
                    Some(s) => (
                        format!("sandbox {}", s.name),
                        Fix::RemoveSandbox(id.to_string()),
                    ),
                    None => continue,
                },
                ["peer", ip] => (format!("peer {ip}"), Fix::SettleJournals),
                ["gone", _] => {
                    // Deferred deletions the reap before this check could not do.
                    for s in steps {
                        let what = match s {
                            Step::DelLink { name, .. } => format!("host link {name}"),
                            Step::DelNetns { pin } => format!("namespace pin {}", pin.display()),
                            _ => continue,
                        };
                        if op.tx().present(s).await? {
                            add(
                                FindingKind::Interrupted,
                                what,
                                "its sandbox was removed, the deletion failed".into(),
                                Fix::Reap,
                            );
                        }
                    }
                    continue;
                }
                ["peers", id] => match nets_by_id.get(id) {
                    Some(n) => (
                        format!("remote endpoints of network {}", n.name),
                        Fix::Reprogram(id.to_string()),
                    ),
                    None => continue,
                },
                _ => continue,
            };
            for s in steps {
                if !(s.is_removal() || matches!(s, Step::Firewall { .. })) {
                    continue;
                }
                if let Some(NsRef::Path(p)) = s.ns() {
                    if dead_ns.contains(p) {
                        continue; // reported with its sandbox
                    }
                }
                if !op.tx().present(s).await? {
                    // A sandbox's published ports are made again, not the sandbox removed.
                    let fix = match s {
                        Step::Firewall {
                            change: crate::firewall::FwChange::RemovePorts(p),
                        } => {
                            Fix::Republish(key.trim_start_matches("sb/").to_string(), p.id.clone())
                        }
                        Step::Firewall {
                            change: crate::firewall::FwChange::Remove(_),
                        } if key.starts_with("net/") => {
                            Fix::Refirewall(key.trim_start_matches("net/").to_string())
                        }
                        _ => fix.clone(),
                    };
                    add(
                        FindingKind::Missing,
                        object.clone(),
                        format!("{} is not there", describe(s)),
                        fix,
                    );
                }
            }
        }

        // Links weft brought up are up (someone's `ip link set X down` cuts a sandbox off as
        // surely as deleting its veth). A link weft took down itself (a plugin's link-down:
        // its undo brings it up) is left as it is.
        // Native drivers' links only: a plugin may keep a link of its own down on purpose.
        let native = |net: &str| {
            nets_by_id.get(net).is_some_and(|n| {
                matches!(
                    n.driver.as_str(),
                    "bridge" | "macvlan" | "overlay" | "host" | "null"
                )
            })
        };
        for (key, steps) in owned {
            let ours = match key.split('/').collect::<Vec<_>>().as_slice() {
                ["net", id] | ["ep", id, _] => native(id) && !left_out(id),
                _ => false,
            };
            if !ours {
                continue;
            }
            for s in steps {
                let Step::DelLink { ns, name, peer } = s else {
                    continue;
                };
                for (ns, name) in
                    std::iter::once((ns, name)).chain(peer.iter().map(|(n, l)| (n, l)))
                {
                    if let NsRef::Path(p) = ns {
                        if dead_ns.contains(p) || !self.inner.kernel.is_netns(p) {
                            continue;
                        }
                    }
                    let taken_down = steps.iter().any(
                        |u| matches!(u, Step::LinkUp { ns: n, name: l } if n == ns && l == name),
                    );
                    if taken_down {
                        continue;
                    }
                    if let Some(l) = op.tx().link(ns, name).await? {
                        if !l.up {
                            let link = Step::DelLink {
                                ns: ns.clone(),
                                name: name.clone(),
                                peer: None,
                            };
                            add(
                                FindingKind::Missing,
                                describe(&link),
                                "is down (weft brought it up)".into(),
                                Fix::LinkUp(ns.clone(), name.clone()),
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn fix(&self, fix: &Fix) -> Result<()> {
        match fix {
            Fix::SettleJournals => {
                self.replay_journals().await?;
                Ok(())
            }
            Fix::Reap => {
                self.reap_links_with(Locking::Inherited).await?;
                Ok(())
            }
            Fix::Reprogram(id) => {
                self.forget_peers(id).await?;
                if let Some(c) = self.cluster() {
                    c.notify();
                }
                Ok(())
            }
            Fix::Republish(sb, _) => {
                let steps = records::owned(&*self.inner.store.read()?, &records::sb_key(sb))?;
                let Some(p) = steps.iter().find_map(|s| match s {
                    Step::Firewall {
                        change: crate::firewall::FwChange::RemovePorts(p),
                    } => Some(p.clone()),
                    _ => None,
                }) else {
                    return Ok(());
                };
                let mut op = self
                    .begin(
                        Intent::new(format!("repair: published ports of sandbox {sb}"), vec![]),
                        Locking::Inherited,
                    )
                    .await?;
                let r = async {
                    op.tx().firewall_purge_ports(&p.elems()).await?;
                    op.tx()
                        .apply(Step::Firewall {
                            change: crate::firewall::FwChange::AddPorts(p),
                        })
                        .await
                }
                .await
                .map_err(Into::into);
                op.settle(r).await
            }
            Fix::Refirewall(net) => {
                let steps = records::owned(&*self.inner.store.read()?, &net_key(net))?;
                let Some(r) = steps.iter().find_map(|s| match s {
                    Step::Firewall {
                        change: crate::firewall::FwChange::Remove(r),
                    } => Some(r.clone()),
                    _ => None,
                }) else {
                    return Ok(());
                };
                let mut op = self
                    .begin(
                        Intent::new(format!("repair: nftables rules of network {net}"), vec![]),
                        Locking::Inherited,
                    )
                    .await?;
                let res = async {
                    op.tx().firewall_purge(&r.id).await?;
                    op.tx()
                        .apply(Step::Firewall {
                            change: crate::firewall::FwChange::Add(r),
                        })
                        .await?;
                    Ok(())
                }
                .await;
                op.settle(res).await
            }
            Fix::RemoveSandbox(id) => {
                let mut op = self
                    .begin(
                        Intent::new(format!("repair: remove sandbox {id}"), vec![]).removes(
                            Table::Sandboxes,
                            vec![id.clone()],
                            Replay::SandboxRm {
                                ids: vec![id.clone()],
                            },
                        ),
                        Locking::Inherited,
                    )
                    .await?;
                let ids = [id.clone()];
                let r = self.remove_sandboxes_in(&mut op, &ids, true).await;
                op.settle(r).await
            }
            Fix::RealizeNetwork(id) => {
                let mut op = self
                    .begin(
                        Intent::new(format!("repair: network {id}"), vec![]).owned(net_key(id)),
                        Locking::Inherited,
                    )
                    .await?;
                let r = self.remake_network(&mut op, id).await;
                op.settle(r).await
            }
            Fix::RealizeEndpoint { net, ep } => {
                let mut op = self
                    .begin(
                        Intent::new(format!("repair: endpoint {ep}"), vec![])
                            .owned(ep_key(net, ep)),
                        Locking::Inherited,
                    )
                    .await?;
                let r = self.remake_endpoint(&mut op, net, ep).await;
                op.settle(r).await
            }
            Fix::DeleteLink(ns, name) => {
                let mut op = self
                    .begin(
                        Intent::new(format!("repair: delete {name}"), vec![]),
                        Locking::Inherited,
                    )
                    .await?;
                let r = op
                    .tx()
                    .remove(Step::DelLink {
                        ns: ns.clone(),
                        name: name.clone(),
                        peer: None,
                    })
                    .await
                    .map_err(Into::into);
                op.settle(r).await
            }
            Fix::LinkUp(ns, name) => {
                let mut op = self
                    .begin(
                        Intent::new(format!("repair: bring {name} up"), vec![]),
                        Locking::Inherited,
                    )
                    .await?;
                let r = op
                    .tx()
                    .apply(Step::LinkUp {
                        ns: ns.clone(),
                        name: name.clone(),
                    })
                    .await
                    .map_err(Into::into);
                op.settle(r).await
            }
            Fix::Unpin(p) => Ok(crate::net::ns::remove_pinned(p)?),
            Fix::PurgeFirewall(_)
            | Fix::ReassertBase
            | Fix::PurgeStrangers
            | Fix::PurgePorts(_)
            | Fix::PurgeIcc(_)
            | Fix::ResetFirewall => {
                let mut op = self
                    .begin(Intent::new("repair: firewall", vec![]), Locking::Inherited)
                    .await?;
                let tx = op.tx();
                let r = match fix {
                    Fix::PurgeFirewall(id) => tx.firewall_purge(id).await,
                    Fix::ReassertBase => tx.firewall_reassert_base().await,
                    Fix::PurgeStrangers => tx.firewall_purge_strangers().await,
                    Fix::PurgePorts(e) => tx.firewall_purge_ports(std::slice::from_ref(e)).await,
                    Fix::PurgeIcc(port) => tx.firewall_purge_icc(port).await,
                    _ => tx.firewall_reset().await,
                };
                op.settle(r.map_err(Into::into)).await
            }
            Fix::Release { pool, ip } | Fix::Allocate { pool, ip } => {
                let mut op = self
                    .begin(Intent::new("repair: address", vec![]), Locking::Inherited)
                    .await?;
                let ipam = self.ipam("default")?;
                let r = if matches!(fix, Fix::Release { .. }) {
                    ipam.release_address(op.w(), pool, *ip).await
                } else {
                    ipam.request_address(
                        op.w(),
                        &crate::ipam::AddressRequest {
                            pool_id: pool.clone(),
                            preferred: Some(*ip),
                            ..Default::default()
                        },
                    )
                    .await
                    .map(|_| ())
                };
                op.settle(r).await
            }
            Fix::ReleasePool(pool) => {
                let mut op = self
                    .begin(Intent::new("repair: pool", vec![]), Locking::Inherited)
                    .await?;
                let r = self.ipam("default")?.release_pool(op.w(), pool).await;
                op.settle(r).await
            }
            Fix::DeleteEndpoint { net, ep } => {
                let mut op = self
                    .begin(
                        Intent::new("repair: endpoint record", vec![]),
                        Locking::Inherited,
                    )
                    .await?;
                let r = async {
                    if let Some(e) = records::network_endpoints(op.r(), net)?
                        .into_iter()
                        .find(|e| e.id == *ep)
                    {
                        if let Some(n) = records::load_network(op.r(), net)? {
                            self.release_endpoint(&mut op, &n, &e, true).await?;
                        }
                        let log = records::owned(op.r(), &ep_key(net, ep))?;
                        for e in op.tx().teardown(&log, None).await {
                            tracing::warn!("{e}");
                        }
                        records::delete_endpoint(op.w(), &e)?;
                    }
                    Ok(())
                }
                .await;
                op.settle(r).await
            }
        }
    }

    /// Tear down what is left of a network's kernel objects and make them again, then its
    /// endpoints (their host ends hang off the network's objects).
    async fn remake_network(&self, op: &mut Op, id: &str) -> Result<()> {
        let Some(mut net) = records::load_network(op.r(), id)? else {
            return Ok(());
        };
        let log = records::owned(op.r(), &net_key(id))?;
        for e in op.tx().teardown(&log, None).await {
            tracing::warn!(network = %net.name, "repair: {e}");
        }
        if net.scope != crate::model::Scope::Global {
            // A global network's driver data (its VNI) is the cluster's, not this host's.
            net.driver_data.clear();
        }
        // The remote endpoints' entries went with the VXLAN device: the follower makes them
        // again from the cluster store.
        let peers = super::follow::peers_key(id);
        let log = records::owned(op.r(), &peers)?;
        for e in op.tx().teardown(&log, None).await {
            tracing::debug!(network = %net.name, "repair: {e}");
        }
        records::disown(op.w(), &peers)?;
        self.realize_network(op, &mut net).await?;
        for ep in records::network_endpoints(op.r(), id)? {
            if ep.ifname.is_empty() {
                continue; // host/none-mode membership: nothing in the kernel
            }
            self.remake_endpoint(op, id, &ep.id).await?;
        }
        tracing::info!(network = %net.name, "repaired: kernel objects made again");
        Ok(())
    }

    async fn remake_endpoint(&self, op: &mut Op, net_id: &str, ep_id: &str) -> Result<()> {
        let (Some(net), Some(mut ep)) = (
            records::load_network(op.r(), net_id)?,
            records::network_endpoints(op.r(), net_id)?
                .into_iter()
                .find(|e| e.id == ep_id),
        ) else {
            return Ok(());
        };
        let Some(sb) = records::load_sandbox(op.r(), &ep.sandbox_id)? else {
            return Ok(());
        };
        let log = records::owned(op.r(), &ep_key(net_id, ep_id))?;
        for e in op.tx().teardown(&log, None).await {
            tracing::warn!(sandbox = %sb.name, "repair: {e}");
        }
        let siblings = records::sandbox_endpoints(op.r(), &sb.id)?;
        self.realize_endpoint(op, &net, &sb, &mut ep, &siblings, DefaultRoute::AsRecorded)
            .await?;
        records::save_endpoint(op.w(), &ep)?;
        Ok(())
    }
}
