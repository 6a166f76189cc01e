//! An in-memory kernel: namespaces with links, addresses, routes, neighbours, FDB entries,
//! sysctls and weft's firewall, with the kernel's refusals (a missing link is ENODEV, a
//! second one of a name EEXIST, deleting a veth takes its peer, deleting a namespace takes
//! its links…). It records every step it executed, so driver step lists, rollbacks,
//! teardowns and the consistency check can be tested without root. Embedders can use it to
//! test their own code against the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnetwork::IpNetwork;

use super::kernel::{Kernel, Session, WEFT_GROUP};
use super::link::{LinkState, RouteState};
use super::step::{NsRef, RouteKind, Step};
use super::{NetError, NetErrorKind};
use crate::firewall::{FwChange, NetRules, PortElem};

/// One link.
#[derive(Debug, Clone, Default)]
pub struct FakeLink {
    pub index: u32,
    pub kind: String,
    pub master: Option<String>,
    pub addrs: Vec<IpNetwork>,
    pub up: bool,
    pub group: u32,
    pub mtu: u32,
    pub mac: Option<String>,
    /// The other end of a veth: (namespace key, name).
    pub peer: Option<(String, String)>,
}

/// One namespace.
#[derive(Debug, Clone, Default)]
pub struct FakeNs {
    pub links: BTreeMap<String, FakeLink>,
    /// (destination, next hop, device, metric)
    pub routes: Vec<(IpNetwork, Option<std::net::IpAddr>, String, Option<u32>)>,
    /// Routes with a table or a kind: (destination, next hop, device, metric, table, kind)
    pub routes_ex: Vec<RouteEx>,
    /// (link, address, proxy)
    pub neighbours: Vec<(String, std::net::IpAddr, bool)>,
    pub sysctls: BTreeMap<String, String>,
}

/// A route of [`Step::RouteEx`].
pub type RouteEx = (
    IpNetwork,
    Option<std::net::IpAddr>,
    Option<String>,
    Option<u32>,
    Option<u32>,
    RouteKind,
);

/// Everything the fake kernel holds.
#[derive(Debug, Clone, Default)]
pub struct FakeState {
    /// "host", or a namespace file's path.
    pub namespaces: BTreeMap<String, FakeNs>,
    /// (link, MAC, remote) on host links.
    pub fdb: Vec<(String, String, std::net::IpAddr)>,
    /// weft's nftables table: network id (12) → rules; `None` = no table.
    pub firewall: Option<BTreeMap<String, NetRules>>,
    /// Bridge ports with ICC off (the bridge table's `noicc` set).
    pub icc: BTreeSet<String>,
    /// Every step executed, in order.
    pub log: Vec<Step>,
    /// Make the next step of this kind fail (once).
    pub fail: Option<String>,
    next_index: u32,
}

/// The fake kernel.
pub struct FakeKernel {
    host: PathBuf,
    state: Arc<Mutex<FakeState>>,
    busy: AtomicU64,
}

fn key(ns: &NsRef) -> String {
    match ns {
        NsRef::Host => "host".into(),
        NsRef::Path(p) => p.display().to_string(),
    }
}

fn enoent(op: String) -> NetError {
    NetError::errno(op, libc::ENOENT)
}
fn enodev(op: String) -> NetError {
    NetError::errno(op, libc::ENODEV)
}
fn eexist(op: String) -> NetError {
    NetError::errno(op, libc::EEXIST)
}

impl FakeKernel {
    /// A host with `lo`, whose namespace is known by `host_path`.
    pub fn new(host_path: impl Into<PathBuf>) -> FakeKernel {
        let k = FakeKernel {
            host: host_path.into(),
            state: Arc::default(),
            busy: AtomicU64::new(0),
        };
        k.with(|s| s.add_ns("host"));
        k
    }

    /// Look at or change the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// A namespace made by someone else (a runtime's `/proc/PID/ns/net`).
    pub fn add_namespace(&self, path: &Path) {
        self.with(|s| s.add_ns(&path.display().to_string()));
    }

    /// Add a link to the host by hand (an uplink, a macvlan parent).
    pub fn add_host_link(&self, name: &str) {
        self.with(|s| {
            s.add_link("host", name, "veth", 0);
        });
    }

    /// Steps executed so far, as `kind` strings.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.with(|s| s.log.iter().map(Step::kind).collect())
    }

    /// Names of the links in a namespace ("host" or a path).
    pub fn link_names(&self, ns: &str) -> Vec<String> {
        self.with(|s| {
            s.namespaces
                .get(ns)
                .map(|n| n.links.keys().cloned().collect())
                .unwrap_or_default()
        })
    }
}

impl FakeState {
    fn add_ns(&mut self, k: &str) {
        let mut ns = FakeNs::default();
        self.next_index += 1;
        ns.links.insert(
            "lo".into(),
            FakeLink {
                index: self.next_index,
                kind: "loopback".into(),
                up: true,
                mtu: 65536,
                ..Default::default()
            },
        );
        self.namespaces.insert(k.to_string(), ns);
    }

    fn add_link(&mut self, ns: &str, name: &str, kind: &str, group: u32) -> &mut FakeLink {
        self.next_index += 1;
        let idx = self.next_index;
        let n = self.namespaces.get_mut(ns).unwrap();
        n.links.insert(
            name.to_string(),
            FakeLink {
                index: idx,
                kind: kind.into(),
                group,
                mtu: 1500,
                ..Default::default()
            },
        );
        n.links.get_mut(name).unwrap()
    }

    fn ns_mut(&mut self, ns: &NsRef, op: &str) -> Result<&mut FakeNs, NetError> {
        self.namespaces
            .get_mut(&key(ns))
            .ok_or_else(|| enoent(format!("{op}: namespace {}", key(ns))))
    }

    fn has_link(&self, ns: &str, name: &str) -> bool {
        self.namespaces
            .get(ns)
            .is_some_and(|n| n.links.contains_key(name))
    }

    fn need_link(&self, ns: &NsRef, name: &str, op: &str) -> Result<(), NetError> {
        if self.has_link(&key(ns), name) {
            Ok(())
        } else {
            Err(enodev(format!("{op}: link {name}")))
        }
    }

    /// Delete a link and everything on it; a veth takes its peer along.
    fn drop_link(&mut self, ns: &str, name: &str) {
        let Some(n) = self.namespaces.get_mut(ns) else {
            return;
        };
        let Some(l) = n.links.remove(name) else {
            return;
        };
        n.routes.retain(|r| r.2 != name);
        n.routes_ex.retain(|r| r.2.as_deref() != Some(name));
        n.neighbours.retain(|r| r.0 != name);
        // A link's own sysctls (net/ipv4/conf/<link>/…) go with it, as the kernel's do.
        let own = format!("/conf/{name}/");
        n.sysctls.retain(|k, _| !k.contains(&own));
        for other in n.links.values_mut() {
            if other.master.as_deref() == Some(name) {
                other.master = None;
            }
        }
        if ns == "host" {
            self.fdb.retain(|f| f.0 != name);
        }
        if let Some((pns, pname)) = l.peer {
            self.drop_link(&pns, &pname);
        }
    }

    fn exec(&mut self, step: &Step) -> Result<(), NetError> {
        if self.fail.as_deref() == Some(step.kind()) {
            self.fail = None;
            return Err(NetError::new(
                format!("{} step", step.kind()),
                NetErrorKind::Other,
                "injected failure (fake kernel)",
            ));
        }
        let host = NsRef::Host;
        match step {
            Step::Dummy { name } | Step::Bridge { name, .. } => {
                if self.has_link("host", name) {
                    return Err(eexist(format!("create link {name}")));
                }
                let kind = if matches!(step, Step::Bridge { .. }) {
                    "bridge"
                } else {
                    "dummy"
                };
                let l = self.add_link("host", name, kind, WEFT_GROUP);
                l.up = true;
                if let Step::Bridge { mtu: Some(m), .. } = step {
                    l.mtu = *m;
                }
            }
            Step::Vxlan {
                name, dev, master, ..
            } => {
                if self.has_link("host", name) {
                    return Err(eexist(format!("create link {name}")));
                }
                for d in dev.iter().chain(master.iter()) {
                    self.need_link(&host, d, "create vxlan")?;
                }
                let l = self.add_link("host", name, "vxlan", WEFT_GROUP);
                l.master = master.clone();
                l.up = true;
            }
            Step::Vlan { name, parent, .. } => {
                self.need_link(&host, parent, "create vlan")?;
                if self.has_link("host", name) {
                    return Err(eexist(format!("create link {name}")));
                }
                self.add_link("host", name, "vlan", WEFT_GROUP).up = true;
            }
            Step::Veth {
                name,
                peer,
                peer_ns,
                master,
                mtu,
                peer_mac,
                group,
                ..
            } => {
                if let Some(m) = master {
                    self.need_link(&host, m, "create veth")?;
                }
                let pk = key(peer_ns);
                if !self.namespaces.contains_key(&pk) {
                    return Err(enoent(format!("create veth {name}: namespace {pk}")));
                }
                if self.has_link("host", name) || self.has_link(&pk, peer) {
                    return Err(eexist(format!("create link {name}")));
                }
                let l = self.add_link("host", name, "veth", group.unwrap_or(WEFT_GROUP));
                l.master = master.clone();
                l.up = true;
                l.peer = Some((pk.clone(), peer.clone()));
                if let Some(m) = mtu {
                    l.mtu = *m;
                }
                let p = self.add_link(&pk, peer, "veth", 0);
                p.up = true;
                p.mac = peer_mac.clone();
                p.peer = Some(("host".into(), name.clone()));
                if let Some(m) = mtu {
                    p.mtu = *m;
                }
            }
            Step::Macvlan {
                name,
                parent,
                ns,
                mac,
                ..
            } => {
                self.need_link(&host, parent, "create macvlan")?;
                let k = key(ns);
                if !self.namespaces.contains_key(&k) {
                    return Err(enoent(format!("create macvlan {name}: namespace {k}")));
                }
                if self.has_link(&k, name) {
                    return Err(eexist(format!("create link {name}")));
                }
                let l = self.add_link(&k, name, "macvlan", WEFT_GROUP);
                l.up = true;
                l.mac = mac.clone();
            }
            Step::MoveLink {
                name, to, new_name, ..
            } => {
                self.need_link(&host, name, "move link")?;
                let k = key(to);
                if !self.namespaces.contains_key(&k) {
                    return Err(enoent(format!("move {name}: namespace {k}")));
                }
                if self.has_link(&k, new_name) {
                    return Err(eexist(format!("move {name} as {new_name}")));
                }
                let mut l = self
                    .namespaces
                    .get_mut("host")
                    .unwrap()
                    .links
                    .remove(name)
                    .unwrap();
                self.namespaces
                    .get_mut("host")
                    .unwrap()
                    .routes
                    .retain(|r| r.2 != *name);
                l.up = true;
                l.master = None;
                l.addrs.clear();
                if let Some((pns, pname)) = &l.peer {
                    if let Some(p) = self
                        .namespaces
                        .get_mut(pns)
                        .and_then(|n| n.links.get_mut(pname))
                    {
                        p.peer = Some((k.clone(), new_name.clone()));
                    }
                }
                self.namespaces
                    .get_mut(&k)
                    .unwrap()
                    .links
                    .insert(new_name.clone(), l);
            }
            Step::LinkUp { ns, name } => {
                self.need_link(ns, name, "set up")?;
                self.ns_mut(ns, "set up")?.links.get_mut(name).unwrap().up = true;
            }
            Step::SetMtu { ns, name, mtu } => {
                self.need_link(ns, name, "set mtu")?;
                self.ns_mut(ns, "set mtu")?.links.get_mut(name).unwrap().mtu = *mtu;
            }
            Step::SetMaster { ns, name, master } => {
                self.need_link(ns, name, "set master")?;
                self.need_link(ns, master, "set master")?;
                self.ns_mut(ns, "set master")?
                    .links
                    .get_mut(name)
                    .unwrap()
                    .master = Some(master.clone());
            }
            Step::Hairpin { name } => self.need_link(&host, name, "hairpin")?,
            Step::Address { ns, link, addr } => {
                self.need_link(ns, link, "add address")?;
                let l = self.ns_mut(ns, "add address")?.links.get_mut(link).unwrap();
                if l.addrs.iter().any(|a| a.ip() == addr.ip()) {
                    return Err(eexist(format!("add address {addr}")));
                }
                l.addrs.push(*addr);
            }
            Step::Route {
                ns,
                dst,
                via,
                dev,
                metric,
                ..
            } => {
                self.need_link(ns, dev, "add route")?;
                let n = self.ns_mut(ns, "add route")?;
                if n.routes.iter().any(|r| r.0 == *dst && r.3 == *metric) {
                    return Err(eexist(format!("add route {dst}")));
                }
                n.routes.push((*dst, *via, dev.clone(), *metric));
            }
            Step::RouteEx {
                ns,
                dst,
                via,
                dev,
                metric,
                table,
                kind,
            } => {
                if let Some(d) = dev {
                    self.need_link(ns, d, "add route")?;
                }
                let n = self.ns_mut(ns, "add route")?;
                if n.routes_ex
                    .iter()
                    .any(|r| r.0 == *dst && r.3 == *metric && r.4 == *table)
                {
                    return Err(eexist(format!("add route {dst}")));
                }
                n.routes_ex
                    .push((*dst, *via, dev.clone(), *metric, *table, *kind));
            }
            Step::DelRouteEx {
                ns,
                dst,
                via,
                dev,
                metric,
                table,
                kind,
            } => {
                let n = self.ns_mut(ns, "delete route")?;
                let want = (*dst, *via, dev.clone(), *metric, *table, *kind);
                let before = n.routes_ex.len();
                n.routes_ex.retain(|r| *r != want);
                if n.routes_ex.len() == before {
                    return Err(NetError::errno(format!("delete route {dst}"), libc::ESRCH));
                }
            }
            Step::LinkDown { ns, name } => {
                self.need_link(ns, name, "set down")?;
                let n = self.ns_mut(ns, "set down")?;
                n.links.get_mut(name).unwrap().up = false;
                // As the kernel does: routes through a link that goes down go.
                n.routes.retain(|r| r.2 != *name);
                n.routes_ex.retain(|r| r.2.as_deref() != Some(name));
            }
            Step::RenameLink { ns, name, new_name } => {
                self.need_link(ns, name, "rename")?;
                if self.has_link(&key(ns), new_name) {
                    return Err(NetError::errno(format!("rename {name}"), libc::EEXIST));
                }
                let n = self.ns_mut(ns, "rename")?;
                if n.links[name].up {
                    return Err(NetError::errno(format!("rename {name}"), libc::EBUSY));
                }
                // What the kernel keys by index goes with the link: its routes, neighbours
                // and own sysctls.
                let l = n.links.remove(name).unwrap();
                let peer = l.peer.clone();
                n.links.insert(new_name.clone(), l);
                for r in n.routes.iter_mut().filter(|r| r.2 == *name) {
                    r.2 = new_name.clone();
                }
                for r in n
                    .routes_ex
                    .iter_mut()
                    .filter(|r| r.2.as_deref() == Some(name))
                {
                    r.2 = Some(new_name.clone());
                }
                for r in n.neighbours.iter_mut().filter(|r| r.0 == *name) {
                    r.0 = new_name.clone();
                }
                let own = format!("/conf/{name}/");
                let renamed: Vec<(String, String)> = n
                    .sysctls
                    .iter()
                    .filter(|(k, _)| k.contains(&own))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in renamed {
                    n.sysctls.remove(&k);
                    n.sysctls
                        .insert(k.replace(&own, &format!("/conf/{new_name}/")), v);
                }
                for other in n.links.values_mut() {
                    if other.master.as_deref() == Some(name) {
                        other.master = Some(new_name.clone());
                    }
                }
                if let Some((pns, pname)) = peer {
                    if let Some(p) = self
                        .namespaces
                        .get_mut(&pns)
                        .and_then(|n| n.links.get_mut(&pname))
                    {
                        p.peer = Some((key(ns), new_name.clone()));
                    }
                }
            }
            Step::SetMac { ns, name, mac } => {
                self.need_link(ns, name, "set mac")?;
                self.ns_mut(ns, "set mac")?.links.get_mut(name).unwrap().mac = Some(mac.clone());
            }
            Step::Ipip { name, dev, .. } => {
                if let Some(d) = dev {
                    self.need_link(&host, d, "create ipip")?;
                }
                if self.has_link("host", name) {
                    return Err(eexist(format!("create link {name}")));
                }
                self.add_link("host", name, "ipip", WEFT_GROUP);
            }
            Step::Geneve { name, .. } | Step::Wireguard { name } => {
                if self.has_link("host", name) {
                    return Err(eexist(format!("create link {name}")));
                }
                let kind = if matches!(step, Step::Geneve { .. }) {
                    "geneve"
                } else {
                    "wireguard"
                };
                self.add_link("host", name, kind, WEFT_GROUP);
            }
            Step::Neigh { ns, link, ip, mac } => {
                self.need_link(ns, link, "add neighbour")?;
                let n = self.ns_mut(ns, "add neighbour")?;
                let proxy = mac.is_none();
                n.neighbours
                    .retain(|x| !(x.0 == *link && x.1 == *ip && x.2 == proxy));
                n.neighbours.push((link.clone(), *ip, proxy));
            }
            Step::Fdb { link, mac, dst } => {
                self.need_link(&host, link, "add fdb")?;
                self.fdb.push((link.clone(), mac.clone(), *dst));
            }
            Step::Sysctl {
                ns, key: k, value, ..
            } => {
                if let Some((_, link)) = step.target_link() {
                    self.need_link(ns, link, "set sysctl")?;
                }
                self.ns_mut(ns, "set sysctl")?
                    .sysctls
                    .insert(k.clone(), value.clone());
            }
            Step::Firewall { change } => match change {
                FwChange::Add(r) => {
                    let t = self.firewall.get_or_insert_with(BTreeMap::new);
                    if t.contains_key(&r.id) {
                        return Err(eexist(format!("firewall chains of {}", r.id)));
                    }
                    t.insert(r.id.clone(), r.clone());
                }
                FwChange::Remove(r) => {
                    if let Some(t) = &mut self.firewall {
                        t.remove(&r.id);
                        if t.is_empty() {
                            self.firewall = None;
                        }
                    }
                }
                // Published ports: the fake kernel keeps no DNAT state.
                FwChange::AddPorts(_) | FwChange::RemovePorts(_) => {}
                FwChange::AddIcc(i) => {
                    self.need_link(&host, &i.port, "ICC off")?;
                    self.icc.insert(i.port.clone());
                }
                FwChange::RemoveIcc(i) => {
                    self.icc.remove(&i.port);
                }
            },
            Step::Netns { pin } => {
                let k = pin.display().to_string();
                if self.namespaces.contains_key(&k) {
                    return Err(eexist(format!("create namespace pin {k}")));
                }
                self.add_ns(&k);
            }
            Step::DelNetns { pin } => {
                let k = pin.display().to_string();
                let names: Vec<String> = self
                    .namespaces
                    .get(&k)
                    .map(|n| n.links.keys().cloned().collect())
                    .unwrap_or_default();
                for n in names {
                    self.drop_link(&k, &n);
                }
                self.namespaces.remove(&k);
            }
            Step::DelLink { ns, name, .. } => {
                self.need_link(ns, name, "delete link")?;
                self.drop_link(&key(ns), name);
            }
            Step::DelAddress { ns, link, addr } => {
                self.need_link(ns, link, "delete address")?;
                let l = self
                    .ns_mut(ns, "delete address")?
                    .links
                    .get_mut(link)
                    .unwrap();
                let before = l.addrs.len();
                l.addrs.retain(|a| a != addr);
                if l.addrs.len() == before {
                    return Err(NetError::errno(
                        format!("delete address {addr}"),
                        libc::EADDRNOTAVAIL,
                    ));
                }
            }
            Step::DelRoute {
                ns,
                dst,
                via,
                dev,
                metric,
            } => {
                self.need_link(ns, dev, "delete route")?;
                let n = self.ns_mut(ns, "delete route")?;
                let before = n.routes.len();
                n.routes
                    .retain(|r| !(r.0 == *dst && r.1 == *via && r.2 == *dev && r.3 == *metric));
                if n.routes.len() == before {
                    return Err(NetError::errno(format!("delete route {dst}"), libc::ESRCH));
                }
            }
            Step::DelNeigh {
                ns,
                link,
                ip,
                proxy,
            } => {
                self.need_link(ns, link, "delete neighbour")?;
                let n = self.ns_mut(ns, "delete neighbour")?;
                let before = n.neighbours.len();
                n.neighbours
                    .retain(|x| !(x.0 == *link && x.1 == *ip && x.2 == *proxy));
                if n.neighbours.len() == before {
                    return Err(enoent(format!("delete neighbour {ip}")));
                }
            }
            Step::DelFdb { link, mac, dst } => {
                self.need_link(&host, link, "delete fdb")?;
                let before = self.fdb.len();
                self.fdb
                    .retain(|f| !(f.0 == *link && f.1 == *mac && f.2 == *dst));
                if self.fdb.len() == before {
                    return Err(enoent(format!("delete fdb entry {dst}")));
                }
            }
        }
        self.log.push(step.clone());
        Ok(())
    }

    fn present(&self, step: &Step) -> bool {
        let link = |ns: &NsRef, name: &str| {
            self.namespaces
                .get(&key(ns))
                .and_then(|n| n.links.get(name))
        };
        match step {
            Step::DelLink { ns, name, .. } => link(ns, name).is_some(),
            Step::DelNetns { pin } => self.namespaces.contains_key(&pin.display().to_string()),
            Step::DelAddress { ns, link: l, addr } => {
                link(ns, l).is_some_and(|x| x.addrs.contains(addr))
            }
            Step::DelRoute {
                ns,
                dst,
                via,
                dev,
                metric,
            } => self.namespaces.get(&key(ns)).is_some_and(|n| {
                n.routes
                    .iter()
                    .any(|r| r.0 == *dst && r.1 == *via && r.2 == *dev && r.3 == *metric)
            }),
            Step::DelRouteEx {
                ns,
                dst,
                via,
                dev,
                metric,
                table,
                kind,
            } => self.namespaces.get(&key(ns)).is_some_and(|n| {
                n.routes_ex
                    .contains(&(*dst, *via, dev.clone(), *metric, *table, *kind))
            }),
            Step::DelNeigh {
                ns,
                link: l,
                ip,
                proxy,
            } => self.namespaces.get(&key(ns)).is_some_and(|n| {
                n.neighbours
                    .iter()
                    .any(|x| x.0 == *l && x.1 == *ip && x.2 == *proxy)
            }),
            Step::DelFdb { link: l, mac, dst } => self
                .fdb
                .iter()
                .any(|f| f.0 == *l && f.1 == *mac && f.2 == *dst),
            Step::Firewall {
                change: FwChange::Remove(r),
            } => self
                .firewall
                .as_ref()
                .is_some_and(|t| t.get(&r.id) == Some(r)),
            Step::Firewall {
                change: FwChange::RemoveIcc(i),
            } => self.icc.contains(&i.port),
            _ => true,
        }
    }
}

impl Kernel for FakeKernel {
    fn host_path(&self) -> &Path {
        &self.host
    }
    fn session(&self) -> Result<Box<dyn Session>, NetError> {
        Ok(Box::new(FakeSession {
            state: self.state.clone(),
        }))
    }
    fn is_netns(&self, path: &Path) -> bool {
        path == self.host || self.with(|s| s.namespaces.contains_key(&path.display().to_string()))
    }
    fn time_in_kernel(&self) -> Duration {
        Duration::from_nanos(self.busy.load(Ordering::Relaxed))
    }
    fn add_busy(&self, _kind: &'static str, d: Duration) {
        self.busy.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

struct FakeSession {
    state: Arc<Mutex<FakeState>>,
}

impl FakeSession {
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

fn state_of(l: &FakeLink, name: &str, ns: &FakeNs) -> LinkState {
    LinkState {
        index: l.index,
        name: name.to_string(),
        mtu: l.mtu,
        mac: l.mac.as_deref().and_then(crate::model::parse_mac),
        master: l
            .master
            .as_ref()
            .and_then(|m| ns.links.get(m))
            .map(|m| m.index),
        up: l.up,
        kind: Some(l.kind.clone()),
        link: None,
        group: l.group,
    }
}

#[async_trait]
impl Session for FakeSession {
    async fn exec(&mut self, step: &Step) -> Result<(), NetError> {
        self.with(|s| s.exec(step))
    }

    async fn read_sysctl(&mut self, ns: &NsRef, k: &str) -> Result<String, NetError> {
        self.with(|s| {
            let n = s.ns_mut(ns, "read sysctl")?;
            Ok(n.sysctls.get(k).cloned().unwrap_or_else(|| "0".into()))
        })
    }

    async fn link(&mut self, ns: &NsRef, name: &str) -> Result<Option<LinkState>, NetError> {
        self.with(|s| {
            Ok(s.namespaces
                .get(&key(ns))
                .and_then(|n| n.links.get(name).map(|l| state_of(l, name, n))))
        })
    }

    async fn links(&mut self, ns: &NsRef) -> Result<Vec<LinkState>, NetError> {
        self.with(|s| {
            let n = s.ns_mut(ns, "list links")?;
            Ok(n.links.iter().map(|(k, l)| state_of(l, k, n)).collect())
        })
    }

    async fn routes(&mut self, ns: &NsRef) -> Result<Vec<RouteState>, NetError> {
        self.with(|s| {
            let n = s.ns_mut(ns, "list routes")?;
            Ok(n.routes
                .iter()
                .map(|r| RouteState {
                    dst: r.0,
                    gateway: r.1,
                    oif: n.links.get(&r.2).map(|l| l.index),
                    metric: r.3,
                    kind: RouteKind::Unicast,
                })
                .collect())
        })
    }

    async fn addresses(&mut self, ns: &NsRef, link: &str) -> Result<Vec<IpNetwork>, NetError> {
        Ok(self.with(|s| {
            s.namespaces
                .get(&key(ns))
                .and_then(|n| n.links.get(link))
                .map(|l| l.addrs.clone())
                .unwrap_or_default()
        }))
    }

    async fn delete_host_links(&mut self, names: &[String]) -> Vec<NetError> {
        self.with(|s| {
            if s.fail.as_deref() == Some("del-link") {
                s.fail = None;
                return vec![NetError::new(
                    "del-link step",
                    NetErrorKind::Other,
                    "injected failure (fake kernel)",
                )];
            }
            for n in names {
                s.drop_link("host", n);
                s.log.push(Step::DelLink {
                    ns: NsRef::Host,
                    name: n.clone(),
                    peer: None,
                });
            }
            vec![]
        })
    }

    async fn present(&mut self, step: &Step) -> Result<bool, NetError> {
        Ok(self.with(|s| s.present(step)))
    }

    async fn firewall_networks(&mut self) -> Result<Option<Vec<String>>, NetError> {
        Ok(self.with(|s| s.firewall.as_ref().map(|t| t.keys().cloned().collect())))
    }

    async fn firewall_purge(&mut self, id12: &str) -> Result<(), NetError> {
        self.with(|s| {
            if let Some(t) = &mut s.firewall {
                t.remove(id12);
            }
        });
        Ok(())
    }

    async fn firewall_reset(&mut self) -> Result<(), NetError> {
        self.with(|s| {
            s.firewall = None;
            s.icc.clear();
        });
        Ok(())
    }

    async fn firewall_sandbox_objects(&mut self) -> Result<(Vec<PortElem>, Vec<String>), NetError> {
        // The fake keeps no published ports.
        Ok((vec![], self.with(|s| s.icc.iter().cloned().collect())))
    }

    async fn firewall_purge_ports(&mut self, _elems: &[PortElem]) -> Result<(), NetError> {
        Ok(())
    }

    async fn firewall_purge_icc(&mut self, port: &str) -> Result<(), NetError> {
        self.with(|s| s.icc.remove(port));
        Ok(())
    }
}
