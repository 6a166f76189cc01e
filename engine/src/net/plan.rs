//! Kernel steps and their executor.
//!
//! A [`Step`] is one kernel change, serialisable, with a computable inverse. [`Tx`] applies
//! steps one by one; for each it records the inverse (in memory and, when journaled, in a
//! file under the run dir), and on failure runs the inverses in reverse. The inverses of a
//! finished operation are its *undo log*: the store keeps it with the network or endpoint,
//! and [`teardown`] replays it to remove exactly what was made.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::link::{LinkChange, MacvlanMode, NewKind, NewLink, RouteSpec};
use super::{ns, sysctl, NetError, Netlink};
use crate::firewall::{Firewall, FwChange};
use crate::model::parse_mac;

/// Which namespace a step happens in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsRef {
    /// The engine's host namespace.
    Host,
    /// A namespace file (a sandbox's pin, or /proc/PID/ns/net).
    Path(PathBuf),
}

/// One kernel change. Create-like steps have an inverse; `Del*` steps are what inverses are
/// made of and have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// A dummy link in the host namespace, up.
    Dummy {
        name: String,
    },
    /// A bridge in the host namespace, up.
    Bridge {
        name: String,
        mtu: Option<u32>,
        mac: Option<String>,
    },
    /// A veth pair: `name` in the host namespace (up, optionally enslaved to `master`),
    /// `peer` created directly in `peer_ns` (up, optional MAC).
    Veth {
        name: String,
        peer: String,
        peer_ns: NsRef,
        master: Option<String>,
        mtu: Option<u32>,
        peer_mac: Option<String>,
        group: Option<u32>,
        /// The sandbox end gets IPv6 link-local addresses (IPv6 networks only; elsewhere it
        /// gets no IPv6 address at all, as Docker's containers on IPv4-only networks).
        #[serde(default)]
        peer_ipv6: bool,
    },
    /// A macvlan on host link `parent`, created directly in `ns` as `name`, up.
    Macvlan {
        name: String,
        parent: String,
        mode: MacvlanMode,
        ns: NsRef,
        mac: Option<String>,
        mtu: Option<u32>,
        /// IPv6 link-local addresses on it (IPv6 networks only).
        #[serde(default)]
        ipv6: bool,
    },
    /// A VXLAN device in the host namespace.
    Vxlan {
        name: String,
        vni: u32,
        local: Option<IpAddr>,
        dev: Option<String>,
        port: u16,
        learning: bool,
        mtu: Option<u32>,
        master: Option<String>,
    },
    /// An 802.1q sub-interface of a host link.
    Vlan {
        name: String,
        parent: String,
        id: u16,
    },
    /// Move a host link into `to`, renamed `new_name`, and bring it up.
    MoveLink {
        name: String,
        to: NsRef,
        new_name: String,
        mtu: Option<u32>,
        mac: Option<String>,
    },
    /// Bring a link up.
    LinkUp {
        ns: NsRef,
        name: String,
    },
    /// Set a link's MTU.
    SetMtu {
        ns: NsRef,
        name: String,
        mtu: u32,
    },
    /// Enslave a link to a bridge.
    SetMaster {
        ns: NsRef,
        name: String,
        master: String,
    },
    /// Mark a bridge port isolated (isolated ports cannot talk to each other: ICC off).
    PortIsolated {
        name: String,
    },
    Address {
        ns: NsRef,
        link: String,
        addr: IpNetwork,
    },
    Route {
        ns: NsRef,
        dst: IpNetwork,
        via: Option<IpAddr>,
        dev: String,
        metric: Option<u32>,
        onlink: bool,
    },
    /// A permanent neighbour entry, or a proxy entry (`mac: None`).
    Neigh {
        ns: NsRef,
        link: String,
        ip: IpAddr,
        mac: Option<String>,
    },
    /// A VXLAN FDB entry: frames for `mac` go to `dst`.
    Fdb {
        link: String,
        mac: String,
        dst: IpAddr,
    },
    /// Set a sysctl; the inverse restores the value found.
    Sysctl {
        ns: NsRef,
        key: String,
        value: String,
    },
    Firewall {
        change: FwChange,
    },
    /// A new network namespace pinned at `pin`, with `lo` up.
    Netns {
        pin: PathBuf,
    },
    DelNetns {
        pin: PathBuf,
    },
    /// Delete a link. `peer`: the other end of a veth, which goes with it.
    DelLink {
        ns: NsRef,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<(NsRef, String)>,
    },
    DelAddress {
        ns: NsRef,
        link: String,
        addr: IpNetwork,
    },
    DelRoute {
        ns: NsRef,
        dst: IpNetwork,
        via: Option<IpAddr>,
        dev: String,
        metric: Option<u32>,
    },
    DelNeigh {
        ns: NsRef,
        link: String,
        ip: IpAddr,
        proxy: bool,
    },
    DelFdb {
        link: String,
        mac: String,
        dst: IpAddr,
    },
}

impl Step {
    /// Short name of the step kind (used by fault injection and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Bridge { .. } => "bridge",
            Step::Veth { .. } => "veth",
            Step::Macvlan { .. } => "macvlan",
            Step::Dummy { .. } => "dummy",
            Step::Vxlan { .. } => "vxlan",
            Step::Vlan { .. } => "vlan",
            Step::MoveLink { .. } => "move",
            Step::LinkUp { .. } => "up",
            Step::SetMaster { .. } => "master",
            Step::SetMtu { .. } => "mtu",
            Step::PortIsolated { .. } => "isolate",
            Step::Address { .. } => "address",
            Step::Route { .. } => "route",
            Step::Neigh { .. } => "neigh",
            Step::Fdb { .. } => "fdb",
            Step::Sysctl { .. } => "sysctl",
            Step::Firewall { .. } => "firewall",
            Step::Netns { .. } => "netns",
            Step::DelNetns { .. } => "del-netns",
            Step::DelLink { .. } => "del-link",
            Step::DelAddress { .. } => "del-address",
            Step::DelRoute { .. } => "del-route",
            Step::DelNeigh { .. } => "del-neigh",
            Step::DelFdb { .. } => "del-fdb",
        }
    }

    /// The inverse, when it can be computed without looking at the kernel.
    /// (Sysctl's inverse needs the old value and is computed while applying.)
    pub fn inverse(&self) -> Option<Step> {
        Some(match self {
            Step::Bridge { name, .. }
            | Step::Vlan { name, .. }
            | Step::Vxlan { name, .. }
            | Step::Dummy { name } => Step::DelLink {
                ns: NsRef::Host,
                name: name.clone(),
                peer: None,
            },
            Step::Veth {
                name,
                peer,
                peer_ns,
                ..
            } => Step::DelLink {
                ns: NsRef::Host,
                name: name.clone(),
                peer: Some((peer_ns.clone(), peer.clone())),
            },
            Step::Macvlan { name, ns, .. } => Step::DelLink {
                ns: ns.clone(),
                name: name.clone(),
                peer: None,
            },
            Step::MoveLink { to, new_name, .. } => Step::DelLink {
                ns: to.clone(),
                name: new_name.clone(),
                peer: None,
            },
            Step::Address { ns, link, addr } => Step::DelAddress {
                ns: ns.clone(),
                link: link.clone(),
                addr: *addr,
            },
            Step::Route {
                ns,
                dst,
                via,
                dev,
                metric,
                ..
            } => Step::DelRoute {
                ns: ns.clone(),
                dst: *dst,
                via: *via,
                dev: dev.clone(),
                metric: *metric,
            },
            Step::Neigh { ns, link, ip, mac } => Step::DelNeigh {
                ns: ns.clone(),
                link: link.clone(),
                ip: *ip,
                proxy: mac.is_none(),
            },
            Step::Fdb { link, mac, dst } => Step::DelFdb {
                link: link.clone(),
                mac: mac.clone(),
                dst: *dst,
            },
            Step::Firewall { change } => Step::Firewall {
                change: change.inverse(),
            },
            Step::Netns { pin } => Step::DelNetns { pin: pin.clone() },
            Step::LinkUp { .. }
            | Step::SetMaster { .. }
            | Step::SetMtu { .. }
            | Step::PortIsolated { .. }
            | Step::Sysctl { .. } => return None,
            Step::DelLink { .. }
            | Step::DelAddress { .. }
            | Step::DelRoute { .. }
            | Step::DelNeigh { .. }
            | Step::DelNetns { .. }
            | Step::DelFdb { .. } => return None,
        })
    }

    /// The (namespace, link) this step acts on, if it acts on one link.
    fn target_link(&self) -> Option<(&NsRef, &str)> {
        match self {
            Step::DelAddress { ns, link, .. } | Step::DelNeigh { ns, link, .. } => Some((ns, link)),
            Step::DelRoute { ns, dev, .. } => Some((ns, dev)),
            Step::DelFdb { link, .. } => Some((&NsRef::Host, link)),
            // Per-interface sysctls (net/ipv6/conf/<if>/…) go with the interface.
            Step::Sysctl { ns, key, .. } => {
                let mut parts = key.split('/');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some("net"), Some(_), Some("conf" | "neigh"), Some(ifname))
                        if !["all", "default"].contains(&ifname) =>
                    {
                        Some((ns, ifname))
                    }
                    _ => None,
                }
            }
            Step::DelLink { ns, name, .. } => Some((ns, name)),
            _ => None,
        }
    }

    fn ns(&self) -> Option<&NsRef> {
        match self {
            Step::Macvlan { ns, .. }
            | Step::LinkUp { ns, .. }
            | Step::SetMaster { ns, .. }
            | Step::Address { ns, .. }
            | Step::Route { ns, .. }
            | Step::Neigh { ns, .. }
            | Step::Sysctl { ns, .. }
            | Step::DelLink { ns, .. }
            | Step::DelAddress { ns, .. }
            | Step::DelRoute { ns, .. }
            | Step::DelNeigh { ns, .. } => Some(ns),
            _ => Some(&NsRef::Host),
        }
    }
}

/// The kernel side of an engine: its host namespace, a netlink connection there, the
/// firewall, and an optional injected failure for tests.
pub struct Kernel {
    host_ns: File,
    host_path: PathBuf,
    host_nl: Netlink,
    firewall: Firewall,
    failpoint: Mutex<Option<String>>,
    /// Total time spent applying steps (kernel round trips, nft), for `time_in_kernel`.
    busy_ns: std::sync::atomic::AtomicU64,
}

impl Kernel {
    /// `host_ns`: the namespace that plays "the host" (default: the caller's own, as
    /// /proc/PID/ns/net, which only lives as long as the process).
    pub fn open(host_ns: Option<&Path>) -> Result<Kernel, NetError> {
        let (file, path) = match host_ns {
            Some(p) => (ns::open(p)?, p.to_path_buf()),
            None => (
                ns::current()?,
                PathBuf::from(format!("/proc/{}/ns/net", std::process::id())),
            ),
        };
        let host_nl = Netlink::open(Some(&file))?;
        let firewall = Firewall::new(host_ns.map(|_| &file));
        let failpoint = std::env::var("WEFT_FAILPOINT")
            .ok()
            .filter(|s| !s.is_empty());
        Ok(Kernel {
            host_ns: file,
            host_path: path,
            host_nl,
            firewall,
            failpoint: Mutex::new(failpoint),
            busy_ns: Default::default(),
        })
    }

    pub fn host_ns(&self) -> &File {
        &self.host_ns
    }
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }
    pub fn host(&self) -> &Netlink {
        &self.host_nl
    }
    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    /// Time spent in kernel steps since the engine opened (the rest of an operation's time
    /// is weft's own work and the store's fsync).
    pub fn time_in_kernel(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.busy_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Make the next step of this kind fail (tests: "a failure injected in the middle").
    pub fn set_failpoint(&self, kind: Option<&str>) {
        *self.failpoint.lock().unwrap() = kind.map(str::to_string);
    }

    /// Start an operation.
    pub fn tx(&self, journal: Option<Journal>) -> Tx<'_> {
        Tx {
            k: self,
            undo: Vec::new(),
            conns: HashMap::new(),
            indexes: HashMap::new(),
            journal,
        }
    }

    /// Create a pinned namespace with `lo` up.
    pub async fn create_netns(&self, pin: &Path) -> Result<(), NetError> {
        let nl = ns::create_pinned(pin, || Netlink::open(None))??;
        let lo = nl.index("lo").await;
        let r = match lo {
            Ok(i) => {
                nl.set_link(
                    i,
                    &LinkChange {
                        up: Some(true),
                        ..Default::default()
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            let _ = ns::remove_pinned(pin);
            return Err(e);
        }
        Ok(())
    }
}

/// An append-only file of inverse steps: written before a step's effect can outlive the
/// process, removed when the operation's outcome is committed. Without fsync: it lives in
/// the run dir and has the same lifetime as the kernel objects it describes.
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    pub fn create(path: PathBuf, header: &serde_json::Value) -> std::io::Result<Journal> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        writeln!(file, "{header}")?;
        Ok(Journal { file, path })
    }
    fn append(&mut self, step: &Step) {
        if let Ok(s) = serde_json::to_string(step) {
            let _ = writeln!(self.file, "{s}");
        }
    }
    /// The last appended inverse is void: its step failed and changed nothing.
    fn retract(&mut self) {
        let _ = writeln!(self.file, "-");
    }
    /// The operation is settled: drop the journal.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
    /// Read a journal left by an interrupted operation: (header, inverse steps in apply order).
    pub fn read(path: &Path) -> std::io::Result<(serde_json::Value, Vec<Step>)> {
        let text = std::fs::read_to_string(path)?;
        let mut lines = text.lines();
        let header = lines
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut steps = Vec::new();
        for l in lines {
            if l == "-" {
                steps.pop();
            } else if let Ok(s) = serde_json::from_str(l) {
                steps.push(s);
            }
        }
        Ok((header, steps))
    }
}

/// One operation's kernel work in progress.
pub struct Tx<'k> {
    k: &'k Kernel,
    undo: Vec<Step>,
    conns: HashMap<PathBuf, (File, Netlink)>,
    /// Link indexes learnt during this operation.
    indexes: HashMap<(NsRef, String), u32>,
    journal: Option<Journal>,
}

impl<'k> Tx<'k> {
    pub fn kernel(&self) -> &'k Kernel {
        self.k
    }

    fn conn(&mut self, ns: &NsRef) -> Result<(&Netlink, Option<&File>), NetError> {
        match ns {
            NsRef::Host => Ok((&self.k.host_nl, Some(&self.k.host_ns))),
            NsRef::Path(p) => {
                if !self.conns.contains_key(p) {
                    let f = ns::open(p)?;
                    let nl = Netlink::open(Some(&f))?;
                    self.conns.insert(p.clone(), (f, nl));
                }
                let (f, nl) = self.conns.get(p).unwrap();
                Ok((nl, Some(f)))
            }
        }
    }

    fn ns_file(&mut self, ns: &NsRef) -> Result<&File, NetError> {
        Ok(self.conn(ns)?.1.expect("namespaces are always open"))
    }

    /// Apply one step and remember its inverse.
    pub async fn apply(&mut self, step: Step) -> Result<(), NetError> {
        let injected = self.k.failpoint.lock().unwrap().clone();
        if injected.as_deref() == Some(step.kind()) {
            return Err(NetError::other(
                format!("{} step", step.kind()),
                "injected failure (WEFT_FAILPOINT)",
            ));
        }
        // "crash:<kind>": die like kill -9 would, right before that step (tests of recovery).
        if injected.as_deref().and_then(|f| f.strip_prefix("crash:")) == Some(step.kind()) {
            eprintln!("weft: WEFT_FAILPOINT crash before {} step", step.kind());
            std::process::abort();
        }
        // Journal the inverse first: if we die right after the kernel acted, recovery finds it.
        let inverse = match &step {
            // A setting of a link this operation made needs no undo: the link goes.
            Step::Sysctl { .. } if self.made_here(&step) => None,
            Step::Sysctl { ns, key, .. } => {
                let f = self.ns_file(ns)?;
                let old = sysctl::read(Some(f), key)?;
                Some(Step::Sysctl {
                    ns: ns.clone(),
                    key: key.clone(),
                    value: old,
                })
            }
            s => s.inverse(),
        };
        if let (Some(inv), Some(j)) = (&inverse, &mut self.journal) {
            j.append(inv);
        }
        let started = std::time::Instant::now();
        let result = self.exec(&step).await;
        let took = started.elapsed();
        self.k
            .busy_ns
            .fetch_add(took.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(
            step = step.kind(),
            us = took.as_micros() as u64,
            ok = result.is_ok(),
            "kernel step"
        );
        if let Err(e) = result {
            if let (Some(_), Some(j)) = (&inverse, &mut self.journal) {
                j.retract();
            }
            return Err(e);
        }
        if let Some(inv) = inverse {
            // Restoring a sysctl to the value it already had is no change at all.
            let noop = matches!((&step, &inv), (Step::Sysctl { value: a, .. }, Step::Sysctl { value: b, .. }) if a == b);
            if !noop {
                self.undo.push(inv);
            }
        }
        Ok(())
    }

    pub async fn apply_all(
        &mut self,
        steps: impl IntoIterator<Item = Step>,
    ) -> Result<(), NetError> {
        for s in steps {
            self.apply(s).await?;
        }
        Ok(())
    }

    /// Undo everything this operation did, newest first. Failures are logged, not fatal:
    /// the rest still gets undone.
    pub async fn rollback(mut self) {
        let undo = std::mem::take(&mut self.undo);
        for e in run_teardown(&mut self, &undo, None).await {
            tracing::warn!("rollback: {e}");
        }
        if let Some(j) = self.journal.take() {
            j.remove();
        }
    }

    /// Does `step` act on a link this operation created (and will delete on undo)?
    fn made_here(&self, step: &Step) -> bool {
        let Some((ns, link)) = step.target_link() else {
            return false;
        };
        self.undo.iter().any(|u| match u {
            Step::DelLink { ns: n, name, peer } => {
                (n == ns && name == link)
                    || peer.as_ref().is_some_and(|(pn, pl)| pn == ns && pl == link)
            }
            _ => false,
        })
    }

    /// A position in the undo log, to split it between the objects an operation made.
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// The inverses recorded since `mark`.
    pub fn undo_since(&self, mark: usize) -> Vec<Step> {
        self.undo[mark..].to_vec()
    }

    /// The operation succeeded: its undo log (apply order), and the journal to remove once
    /// the outcome is committed to the store.
    pub fn finish(mut self) -> (Vec<Step>, Option<Journal>) {
        (std::mem::take(&mut self.undo), self.journal.take())
    }

    /// Netlink in a namespace, for reads the driver needs (link lookups).
    pub fn netlink(&mut self, ns: &NsRef) -> Result<&Netlink, NetError> {
        Ok(self.conn(ns)?.0)
    }

    async fn index(&mut self, ns: &NsRef, name: &str) -> Result<u32, NetError> {
        if let Some(i) = self.indexes.get(&(ns.clone(), name.to_string())) {
            return Ok(*i);
        }
        let (nl, _) = self.conn(ns)?;
        let i = nl.index(name).await?;
        self.indexes.insert((ns.clone(), name.to_string()), i);
        Ok(i)
    }

    fn forget(&mut self, ns: &NsRef, name: &str) {
        self.indexes.remove(&(ns.clone(), name.to_string()));
    }

    async fn exec(&mut self, step: &Step) -> Result<(), NetError> {
        match step {
            Step::Dummy { name } => {
                let mut l = NewLink::new(name, NewKind::Dummy);
                l.up = true;
                self.k.host_nl.create_link(&l).await
            }
            Step::Bridge { name, mtu, mac } => {
                let mut l = NewLink::new(name, NewKind::Bridge);
                l.mtu = *mtu;
                l.mac = mac_opt(mac)?;
                l.up = true;
                self.k.host_nl.create_link(&l).await
            }
            Step::Veth {
                name,
                peer,
                peer_ns,
                master,
                mtu,
                peer_mac,
                group,
                peer_ipv6,
            } => {
                let master = match master {
                    Some(m) => Some(self.index(&NsRef::Host, m).await?),
                    None => None,
                };
                let peer_fd = match peer_ns {
                    NsRef::Host => None,
                    other => Some(super::link::ns_fd(self.ns_file(other)?)),
                };
                let mut l = NewLink::new(
                    name,
                    NewKind::Veth {
                        peer: peer.clone(),
                        peer_ns: peer_fd,
                        peer_mac: mac_opt(peer_mac)?,
                    },
                );
                l.mtu = *mtu;
                l.master = master;
                l.group = *group;
                self.k.host_nl.create_link(&l).await?;
                // The host end is a bridge port: it needs no IPv6 link-local address, and
                // hundreds of them keep the kernel busy (DAD, MLD) under the RTNL lock.
                self.k.host_nl.set_no_ipv6_ll_by_name(name).await?;
                self.k.host_nl.set_up_by_name(name).await?;
                let (nl, _) = self.conn(peer_ns)?;
                if !peer_ipv6 {
                    nl.set_no_ipv6_ll_by_name(peer).await?;
                }
                nl.set_up_by_name(peer).await
            }
            Step::Macvlan {
                name,
                parent,
                mode,
                ns,
                mac,
                mtu,
                ipv6,
            } => {
                let parent = self.k.host_nl.index(parent).await?;
                let fd = match ns {
                    NsRef::Host => None,
                    other => Some(super::link::ns_fd(self.ns_file(other)?)),
                };
                let mut l = NewLink::new(
                    name,
                    NewKind::Macvlan {
                        parent,
                        mode: *mode,
                    },
                );
                l.netns = fd;
                l.mac = mac_opt(mac)?;
                l.mtu = *mtu;
                self.k.host_nl.create_link(&l).await?;
                // Created inside the target namespace: bring it up there.
                let (nl, _) = self.conn(ns)?;
                if !ipv6 {
                    nl.set_no_ipv6_ll_by_name(name).await?;
                }
                nl.set_up_by_name(name).await
            }
            Step::Vxlan {
                name,
                vni,
                local,
                dev,
                port,
                learning,
                mtu,
                master,
            } => {
                let dev = match dev {
                    Some(d) => Some(self.k.host_nl.index(d).await?),
                    None => None,
                };
                let master = match master {
                    Some(m) => Some(self.k.host_nl.index(m).await?),
                    None => None,
                };
                let mut l = NewLink::new(
                    name,
                    NewKind::Vxlan {
                        vni: *vni,
                        local: *local,
                        dev,
                        port: *port,
                        learning: *learning,
                    },
                );
                l.mtu = *mtu;
                l.master = master;
                l.up = true;
                self.k.host_nl.create_link(&l).await
            }
            Step::Vlan { name, parent, id } => {
                let parent = self.k.host_nl.index(parent).await?;
                let mut l = NewLink::new(name, NewKind::Vlan { parent, id: *id });
                l.up = true;
                self.k.host_nl.create_link(&l).await
            }
            Step::MoveLink {
                name,
                to,
                new_name,
                mtu,
                mac,
            } => {
                let idx = self.index(&NsRef::Host, name).await?;
                self.forget(&NsRef::Host, name);
                let fd = super::link::ns_fd(self.ns_file(to)?);
                let change = LinkChange {
                    netns: Some(fd),
                    name: Some(new_name.clone()),
                    mtu: *mtu,
                    mac: mac_opt(mac)?,
                    ..Default::default()
                };
                self.k.host_nl.set_link(idx, &change).await?;
                let idx = self.index(to, new_name).await?;
                let (nl, _) = self.conn(to)?;
                nl.set_link(
                    idx,
                    &LinkChange {
                        up: Some(true),
                        ..Default::default()
                    },
                )
                .await
            }
            Step::LinkUp { ns, name } => {
                let idx = self.index(ns, name).await?;
                let (nl, _) = self.conn(ns)?;
                nl.set_link(
                    idx,
                    &LinkChange {
                        up: Some(true),
                        ..Default::default()
                    },
                )
                .await
            }
            Step::SetMaster { ns, name, master } => {
                let idx = self.index(ns, name).await?;
                let m = self.index(ns, master).await?;
                let (nl, _) = self.conn(ns)?;
                nl.set_link(
                    idx,
                    &LinkChange {
                        master: Some(m),
                        ..Default::default()
                    },
                )
                .await
            }
            Step::SetMtu { ns, name, mtu } => {
                let idx = self.index(ns, name).await?;
                let (nl, _) = self.conn(ns)?;
                nl.set_link(
                    idx,
                    &LinkChange {
                        mtu: Some(*mtu),
                        ..Default::default()
                    },
                )
                .await
            }
            Step::PortIsolated { name } => {
                let idx = self.k.host_nl.index(name).await?;
                self.k.host_nl.set_bridge_port_isolated(idx, true).await
            }
            Step::Address { ns, link, addr } => {
                let idx = self.index(ns, link).await?;
                let (nl, _) = self.conn(ns)?;
                nl.add_address(idx, *addr).await
            }
            Step::Route {
                ns,
                dst,
                via,
                dev,
                metric,
                onlink,
            } => {
                let idx = self.index(ns, dev).await?;
                let (nl, _) = self.conn(ns)?;
                nl.add_route(&RouteSpec {
                    dst: *dst,
                    gateway: *via,
                    oif: Some(idx),
                    metric: *metric,
                    onlink: *onlink,
                })
                .await
            }
            Step::Neigh { ns, link, ip, mac } => {
                let idx = self.index(ns, link).await?;
                let mac = mac_opt(mac)?;
                let (nl, _) = self.conn(ns)?;
                nl.add_neigh(idx, *ip, mac).await
            }
            Step::Fdb { link, mac, dst } => {
                let idx = self.k.host_nl.index(link).await?;
                let mac = parse_mac(mac)
                    .ok_or_else(|| NetError::other("fdb", format!("bad MAC {mac}")))?;
                self.k.host_nl.add_fdb(idx, mac, *dst).await
            }
            Step::Sysctl { ns, key, value } => {
                // IPv4 per-link settings have netlink forms: much cheaper than /proc/sys on a
                // host with many namespaces (its lookups grow with their number).
                let parts: Vec<&str> = key.split('/').collect();
                let num = value.parse::<u32>().ok();
                match (parts.as_slice(), num) {
                    (["net", "ipv4", "conf", link, setting], Some(v))
                        if !["all", "default"].contains(link) =>
                    {
                        let id = match *setting {
                            "forwarding" => Some(1),
                            "proxy_arp" => Some(3),
                            _ => None,
                        };
                        if let Some(id) = id {
                            let idx = self.index(ns, link).await?;
                            let (nl, _) = self.conn(ns)?;
                            return nl.set_inet_conf(idx, id, v).await;
                        }
                    }
                    (["net", "ipv4", "neigh", link, "proxy_delay"], Some(v))
                        if !["default"].contains(link) =>
                    {
                        // /proc shows jiffies at USER_HZ (1/100 s); netlink takes milliseconds.
                        let idx = self.index(ns, link).await?;
                        let (nl, _) = self.conn(ns)?;
                        return nl.set_proxy_delay(idx, v as u64 * 10).await;
                    }
                    _ => {}
                }
                let f = self.ns_file(ns)?;
                sysctl::write(Some(f), key, value)
            }
            Step::Firewall { change } => self
                .k
                .firewall
                .apply(std::slice::from_ref(change))
                .await
                .map_err(|e| NetError::other("firewall", e.0)),
            Step::Netns { pin } => self.k.create_netns(pin).await,
            Step::DelNetns { pin } => {
                self.conns.remove(pin);
                ns::remove_pinned(pin)
            }
            Step::DelLink { ns, name, .. } => {
                self.forget(ns, name);
                let (nl, _) = self.conn(ns)?;
                nl.delete_link(name).await
            }
            Step::DelAddress { ns, link, addr } => {
                let idx = self.index(ns, link).await?;
                let (nl, _) = self.conn(ns)?;
                nl.del_address(idx, *addr).await
            }
            Step::DelRoute {
                ns,
                dst,
                via,
                dev,
                metric,
            } => {
                let idx = self.index(ns, dev).await?;
                let (nl, _) = self.conn(ns)?;
                nl.del_route(&RouteSpec {
                    dst: *dst,
                    gateway: *via,
                    oif: Some(idx),
                    metric: *metric,
                    onlink: false,
                })
                .await
            }
            Step::DelNeigh {
                ns,
                link,
                ip,
                proxy,
            } => {
                let idx = self.index(ns, link).await?;
                let (nl, _) = self.conn(ns)?;
                nl.del_neigh(idx, *ip, *proxy).await
            }
            Step::DelFdb { link, mac, dst } => {
                let idx = self.k.host_nl.index(link).await?;
                let mac = parse_mac(mac)
                    .ok_or_else(|| NetError::other("fdb", format!("bad MAC {mac}")))?;
                self.k.host_nl.del_fdb(idx, mac, *dst).await
            }
        }
    }
}

fn mac_opt(mac: &Option<String>) -> Result<Option<[u8; 6]>, NetError> {
    match mac {
        None => Ok(None),
        Some(m) => parse_mac(m)
            .map(Some)
            .ok_or_else(|| NetError::other("set MAC", format!("bad MAC address {m}"))),
    }
}

/// Replay an undo log (apply order; it is run newest first), best effort: objects already
/// gone are fine, other failures are returned after everything else was tried.
///
/// Steps subsumed by a later link deletion (an address or route on a link that is deleted
/// anyway) are skipped, and so is everything inside `gone_ns` (a namespace being destroyed),
/// so tearing down an endpoint costs one netlink message, not one per object.
pub async fn teardown(k: &Kernel, undo: &[Step], gone_ns: Option<&Path>) -> Vec<NetError> {
    let mut tx = k.tx(None);
    run_teardown(&mut tx, undo, gone_ns).await
}

/// Replay several undo logs at once. Host links they delete are deleted together at the
/// end, in one netlink message (a link group): the kernel then waits for one RCU grace
/// period for all of them instead of one per link, which is what makes tearing down many
/// sandboxes cheap.
pub async fn teardown_many(k: &Kernel, logs: &[(&[Step], Option<&Path>)]) -> Vec<NetError> {
    let mut tx = k.tx(None);
    let mut errors = Vec::new();
    let mut links = Vec::new();
    for (undo, gone) in logs {
        let (host_links, rest): (Vec<Step>, Vec<Step>) = undo.iter().cloned().partition(|s| {
            matches!(
                s,
                Step::DelLink {
                    ns: NsRef::Host,
                    ..
                }
            )
        });
        // Steps on links that go with the batch are subsumed as usual.
        errors.extend(run_teardown_with(&mut tx, &rest, *gone, &host_links).await);
        links.extend(host_links.into_iter().filter_map(|s| match s {
            Step::DelLink { name, .. } => Some(name),
            _ => None,
        }));
    }
    if links.len() == 1 {
        if let Err(e) = k.host_nl.delete_link(&links[0]).await {
            if !e.is_not_found() {
                errors.push(e);
            }
        }
    } else if !links.is_empty() {
        let mut g = [0u8; 2];
        getrandom::fill(&mut g).ok();
        let group = 0x5ef7_0000 | u16::from_le_bytes(g) as u32;
        let mut grouped = 0;
        for l in &links {
            match k.host_nl.set_group_by_name(l, group).await {
                Ok(()) => grouped += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => errors.push(e),
            }
        }
        if grouped > 0 {
            if let Err(e) = k.host_nl.delete_group(group).await {
                if !e.is_not_found() {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

async fn run_teardown(tx: &mut Tx<'_>, undo: &[Step], gone_ns: Option<&Path>) -> Vec<NetError> {
    run_teardown_with(tx, undo, gone_ns, &[]).await
}

/// The peers of veths deleted by steps other than `me`.
fn deleted_peers<'a>(
    undo: &'a [Step],
    also: &'a [Step],
    me: &'a Step,
) -> impl Iterator<Item = &'a (NsRef, String)> + 'a {
    undo.iter()
        .chain(also)
        .filter(move |s| *s != me)
        .filter_map(|s| match s {
            Step::DelLink { peer: Some(p), .. } => Some(p),
            _ => None,
        })
}

/// `also_deleted`: link deletions that happen elsewhere (batched) and subsume steps here.
async fn run_teardown_with(
    tx: &mut Tx<'_>,
    undo: &[Step],
    gone_ns: Option<&Path>,
    also_deleted: &[Step],
) -> Vec<NetError> {
    let deleted: Vec<(NsRef, String)> = undo
        .iter()
        .chain(also_deleted)
        .flat_map(|s| match s {
            Step::DelLink { ns, name, peer } => {
                let mut v = vec![(ns.clone(), name.clone())];
                v.extend(peer.clone());
                v
            }
            _ => vec![],
        })
        .collect();
    let in_gone = |ns: &NsRef| matches!((ns, gone_ns), (NsRef::Path(p), Some(g)) if p == g);
    let mut errors = Vec::new();
    for step in undo.iter().rev() {
        if step.ns().is_some_and(in_gone) {
            continue;
        }
        let subsumed = match step {
            // A veth's peer goes with it: deleting it again would only fail.
            Step::DelLink { ns, name, .. } => {
                deleted_peers(undo, also_deleted, step).any(|(n, l)| n == ns && l == name)
            }
            // Addresses, routes, neighbours on a link that is deleted anyway.
            other => other
                .target_link()
                .is_some_and(|(ns, link)| deleted.iter().any(|(n, l)| n == ns && l == link)),
        };
        if subsumed {
            continue;
        }
        match Box::pin(tx.exec(step)).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            // The firewall objects of a network that is half gone already.
            Err(e) if e.op == "firewall" && e.reason.contains("No such file or directory") => {}
            Err(e) => errors.push(e),
        }
    }
    errors
}
