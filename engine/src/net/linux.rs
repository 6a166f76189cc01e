//! The real kernel: rtnetlink connections per namespace, nft for the firewall, /proc for the
//! sysctls netlink cannot set. Every host link weft creates carries [`WEFT_GROUP`].

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::kernel::{Kernel, Session, WEFT_GROUP};
use super::link::{LinkChange, LinkState, Netlink, NewKind, NewLink, RouteSpec, RouteState};
use super::step::{NsRef, RouteKind, Step};
use super::{ns, sysctl, NetError};
use crate::firewall::{Firewall, FwChange, PortElem};
use crate::model::parse_mac;

/// The host kernel, as seen from the namespace that plays the host.
pub struct LinuxKernel {
    inner: Arc<Inner>,
}

struct Inner {
    host_ns: File,
    host_path: PathBuf,
    host_nl: Netlink,
    firewall: Firewall,
    busy_ns: AtomicU64,
    by_kind: std::sync::Mutex<std::collections::BTreeMap<&'static str, (u64, u64)>>,
}

impl LinuxKernel {
    /// `host_ns`: the namespace that plays "the host". `None`: the caller's own, pinned at
    /// `pin` so it has a path that outlives this process (host-mode sandboxes record it as
    /// their `SandboxKey`). Must be called inside a tokio runtime.
    pub fn open(host_ns: Option<&Path>, pin: &Path) -> Result<LinuxKernel, NetError> {
        let path = match host_ns {
            Some(p) => p.to_path_buf(),
            None => ns::pin_current(pin)?,
        };
        let file = ns::open(&path)?;
        let host_nl = Netlink::open(Some(&file))?;
        let firewall = Firewall::new(Some(&file));
        Ok(LinuxKernel {
            inner: Arc::new(Inner {
                host_ns: file,
                host_path: path,
                host_nl,
                firewall,
                busy_ns: AtomicU64::new(0),
                by_kind: Default::default(),
            }),
        })
    }
}

impl Kernel for LinuxKernel {
    fn host_path(&self) -> &Path {
        &self.inner.host_path
    }
    fn session(&self) -> Result<Box<dyn Session>, NetError> {
        Ok(Box::new(LinuxSession {
            k: self.inner.clone(),
            conns: HashMap::new(),
            indexes: HashMap::new(),
            fw_listing: None,
            survey: None,
        }))
    }
    fn is_netns(&self, path: &Path) -> bool {
        ns::is_netns(path)
    }
    fn host_port_in_use(&self, proto: &str, ip: std::net::IpAddr, port: u16) -> bool {
        ns::port_in_use(&self.inner.host_ns, proto, ip, port)
    }
    fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<super::watch::Change>>, NetError> {
        super::watch::watch(&self.inner.host_ns, crate::firewall::render::TABLE).map(Some)
    }
    fn time_in_kernel(&self) -> Duration {
        Duration::from_nanos(self.inner.busy_ns.load(Ordering::Relaxed))
    }
    fn add_busy(&self, kind: &'static str, d: Duration) {
        let ns = d.as_nanos() as u64;
        self.inner.busy_ns.fetch_add(ns, Ordering::Relaxed);
        let mut m = self.inner.by_kind.lock().unwrap();
        let e = m.entry(kind).or_default();
        e.0 += ns;
        e.1 += 1;
    }
    fn time_by_kind(&self) -> Vec<(&'static str, Duration, u64)> {
        self.inner
            .by_kind
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (ns, n))| (*k, Duration::from_nanos(*ns), *n))
            .collect()
    }
}

/// One operation's connections: netlink in each namespace it touches, link indexes learnt.
pub struct LinuxSession {
    k: Arc<Inner>,
    conns: HashMap<PathBuf, (File, Netlink)>,
    indexes: HashMap<(NsRef, String), u32>,
    /// weft's nftables tables as last listed, for presence questions; dropped whenever this
    /// session changes the firewall.
    fw_listing: Option<crate::firewall::Listing>,
    /// In a survey ([`Session::survey`]): each namespace's listing, once asked about.
    survey: Option<HashMap<NsRef, Listed>>,
}

/// A namespace's links, addresses and main-table routes as listed once. The host's links
/// only: its addresses and routes are asked about the usual way (a router's host can hold a
/// full routing table, which a check must not copy to answer a question about one route).
struct Listed {
    links: Vec<LinkState>,
    addrs: Option<Vec<(u32, ipnetwork::IpNetwork)>>,
    routes: Option<Vec<RouteState>>,
}

impl Listed {
    /// (One dump at a time: a netlink socket runs one dump, the kernel refuses a second.)
    async fn of(nl: &Netlink) -> Result<Listed, NetError> {
        Ok(Listed {
            links: nl.links().await?,
            addrs: Some(nl.all_addresses(0).await?),
            routes: Some(nl.routes().await?),
        })
    }

    async fn of_host(nl: &Netlink) -> Result<Listed, NetError> {
        Ok(Listed {
            links: nl.links().await?,
            addrs: None,
            routes: None,
        })
    }

    /// `ns`'s listing (`None` for a namespace that is gone). A sandbox's namespace is listed
    /// through a connection of its own that is closed at once: a survey of a thousand
    /// sandboxes would otherwise hold two descriptors for each.
    async fn list(host: &Netlink, ns: &NsRef) -> Result<Option<Listed>, NetError> {
        match ns {
            NsRef::Host => Listed::of_host(host).await.map(Some),
            NsRef::Path(p) if !ns::is_netns(p) => Ok(None),
            NsRef::Path(p) => {
                let nl = Netlink::open(Some(&ns::open(p)?))?;
                Listed::of(&nl).await.map(Some)
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

impl LinuxSession {
    /// weft's tables as listed once in this session (until it changes the firewall).
    async fn fw_listing(&mut self) -> Result<&crate::firewall::Listing, NetError> {
        if self.fw_listing.is_none() {
            self.fw_listing = Some(self.k.firewall.listing().await?);
        }
        Ok(self.fw_listing.as_ref().expect("just listed"))
    }

    fn conn(&mut self, ns: &NsRef) -> Result<(&Netlink, &File), NetError> {
        match ns {
            NsRef::Host => Ok((&self.k.host_nl, &self.k.host_ns)),
            NsRef::Path(p) => {
                if !self.conns.contains_key(p) {
                    let f = ns::open(p)?;
                    let nl = Netlink::open(Some(&f))?;
                    self.conns.insert(p.clone(), (f, nl));
                }
                let (f, nl) = self.conns.get(p).unwrap();
                Ok((nl, f))
            }
        }
    }

    /// The namespace's listing in a survey (`None` outside one, or for a namespace that is
    /// gone: asked the usual way, the answer is the same as before).
    async fn listed(&mut self, ns: &NsRef) -> Result<Option<&Listed>, NetError> {
        let Some(survey) = &self.survey else {
            return Ok(None);
        };
        if !survey.contains_key(ns) {
            let Some(l) = Listed::list(&self.k.host_nl, ns).await? else {
                return Ok(None);
            };
            self.survey
                .as_mut()
                .expect("in a survey")
                .insert(ns.clone(), l);
        }
        Ok(self.survey.as_ref().and_then(|s| s.get(ns)))
    }

    /// Listings are of the kernel as it was: a change drops them.
    fn changed(&mut self) {
        if let Some(s) = &mut self.survey {
            s.clear();
        }
    }

    fn nl(&mut self, ns: &NsRef) -> Result<&Netlink, NetError> {
        Ok(self.conn(ns)?.0)
    }

    fn ns_file(&mut self, ns: &NsRef) -> Result<&File, NetError> {
        Ok(self.conn(ns)?.1)
    }

    async fn index(&mut self, ns: &NsRef, name: &str) -> Result<u32, NetError> {
        if let Some(i) = self.indexes.get(&(ns.clone(), name.to_string())) {
            return Ok(*i);
        }
        let i = self.nl(ns)?.index(name).await?;
        self.indexes.insert((ns.clone(), name.to_string()), i);
        Ok(i)
    }

    /// Change a link's settings, by name.
    async fn change(&mut self, ns: &NsRef, name: &str, c: &LinkChange) -> Result<(), NetError> {
        let idx = self.index(ns, name).await?;
        self.nl(ns)?.set_link(idx, c).await
    }

    /// A link's addresses (by index).
    async fn addresses_of(
        &mut self,
        ns: &NsRef,
        index: u32,
    ) -> Result<Vec<ipnetwork::IpNetwork>, NetError> {
        if let Some(addrs) = self.listed(ns).await?.and_then(|l| l.addrs.as_ref()) {
            return Ok(addrs
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, a)| *a)
                .collect());
        }
        self.nl(ns)?.addresses(index).await
    }

    fn forget(&mut self, ns: &NsRef, name: &str) {
        self.indexes.remove(&(ns.clone(), name.to_string()));
    }

    /// The index of a link, or None if it (or its namespace) is gone.
    async fn find(&mut self, ns: &NsRef, name: &str) -> Result<Option<u32>, NetError> {
        if let NsRef::Path(p) = ns {
            if !ns::is_netns(p) {
                return Ok(None);
            }
        }
        if let Some(l) = self.listed(ns).await? {
            return Ok(l.links.iter().find(|l| l.name == name).map(|l| l.index));
        }
        Ok(self.nl(ns)?.link(name).await?.map(|l| l.index))
    }
}

#[async_trait]
impl Session for LinuxSession {
    async fn exec(&mut self, step: &Step) -> Result<(), NetError> {
        self.changed();
        let host = self.k.host_nl.clone();
        if matches!(step, Step::Firewall { .. }) {
            self.fw_listing = None;
        }
        match step {
            Step::Dummy { name } => {
                let mut l = NewLink::new(name, NewKind::Dummy);
                l.up = true;
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await
            }
            Step::Bridge { name, mtu, mac } => {
                let mut l = NewLink::new(name, NewKind::Bridge);
                l.mtu = *mtu;
                l.mac = mac_opt(mac)?;
                l.up = true;
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await
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
                l.group = Some(group.unwrap_or(WEFT_GROUP));
                host.create_link(&l).await?;
                // The host end is a bridge port: it needs no IPv6 link-local address, and
                // hundreds of them keep the kernel busy (DAD, MLD) under the RTNL lock.
                host.set_no_ipv6_ll_by_name(name).await?;
                host.set_up_by_name(name).await?;
                let nl = self.nl(peer_ns)?;
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
                let parent = host.index(parent).await?;
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
                // Weft's mark, in a sandbox too: recovery deletes only what carries it.
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await?;
                // Created inside the target namespace: bring it up there.
                let nl = self.nl(ns)?;
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
                proxy,
            } => {
                let dev = match dev {
                    Some(d) => Some(host.index(d).await?),
                    None => None,
                };
                let master = match master {
                    Some(m) => Some(host.index(m).await?),
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
                        proxy: *proxy,
                    },
                );
                l.mtu = *mtu;
                l.master = master;
                l.up = true;
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await
            }
            Step::Vlan { name, parent, id } => {
                let parent = host.index(parent).await?;
                let mut l = NewLink::new(name, NewKind::Vlan { parent, id: *id });
                l.up = true;
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await
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
                host.set_link(idx, &change).await?;
                let idx = self.index(to, new_name).await?;
                self.nl(to)?
                    .set_link(
                        idx,
                        &LinkChange {
                            up: Some(true),
                            ..Default::default()
                        },
                    )
                    .await
            }
            Step::LinkUp { ns, name } => {
                let up = LinkChange {
                    up: Some(true),
                    ..Default::default()
                };
                self.change(ns, name, &up).await
            }
            Step::SetMaster { ns, name, master } => {
                let m = LinkChange {
                    master: Some(self.index(ns, master).await?),
                    ..Default::default()
                };
                self.change(ns, name, &m).await
            }
            Step::SetMtu { ns, name, mtu } => {
                let m = LinkChange {
                    mtu: Some(*mtu),
                    ..Default::default()
                };
                self.change(ns, name, &m).await
            }
            Step::Hairpin { name } => {
                let idx = host.index(name).await?;
                host.set_bridge_port_hairpin(idx, true).await
            }
            Step::Address { ns, link, addr } => {
                let idx = self.index(ns, link).await?;
                self.nl(ns)?.add_address(idx, *addr).await
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
                self.nl(ns)?
                    .add_route(&RouteSpec {
                        dst: *dst,
                        gateway: *via,
                        oif: Some(idx),
                        metric: *metric,
                        onlink: *onlink,
                        table: None,
                        kind: RouteKind::Unicast,
                    })
                    .await
            }
            Step::RouteEx {
                ns,
                dst,
                via,
                dev,
                metric,
                table,
                kind,
            }
            | Step::DelRouteEx {
                ns,
                dst,
                via,
                dev,
                metric,
                table,
                kind,
            } => {
                let oif = match dev {
                    Some(d) => Some(self.index(ns, d).await?),
                    None => None,
                };
                let spec = RouteSpec {
                    dst: *dst,
                    gateway: *via,
                    oif,
                    metric: *metric,
                    onlink: false,
                    table: *table,
                    kind: *kind,
                };
                let nl = self.nl(ns)?;
                if matches!(step, Step::RouteEx { .. }) {
                    nl.add_route(&spec).await
                } else {
                    nl.del_route(&spec).await
                }
            }
            Step::LinkDown { ns, name } => {
                let down = LinkChange {
                    up: Some(false),
                    ..Default::default()
                };
                self.change(ns, name, &down).await
            }
            Step::RenameLink { ns, name, new_name } => {
                let idx = self.index(ns, name).await?;
                let rename = LinkChange {
                    name: Some(new_name.clone()),
                    ..Default::default()
                };
                self.nl(ns)?.set_link(idx, &rename).await?;
                self.indexes.remove(&(ns.clone(), name.clone()));
                self.indexes.insert((ns.clone(), new_name.clone()), idx);
                Ok(())
            }
            Step::SetMac { ns, name, mac } => {
                let m = LinkChange {
                    mac: mac_opt(&Some(mac.clone()))?,
                    ..Default::default()
                };
                self.change(ns, name, &m).await
            }
            Step::Ipip {
                name,
                local,
                remote,
                dev,
            } => {
                let dev = match dev {
                    Some(d) => Some(host.index(d).await?),
                    None => None,
                };
                let mut l = NewLink::new(
                    name,
                    NewKind::Ipip {
                        local: *local,
                        remote: *remote,
                        dev,
                    },
                );
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await
            }
            Step::Geneve {
                name,
                vni,
                remote,
                port,
            } => {
                let mut l = NewLink::new(
                    name,
                    NewKind::Geneve {
                        vni: *vni,
                        remote: *remote,
                        port: *port,
                    },
                );
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await
            }
            Step::Wireguard { name } => {
                let mut l = NewLink::new(name, NewKind::Wireguard);
                l.group = Some(WEFT_GROUP);
                host.create_link(&l).await
            }
            Step::Neigh { ns, link, ip, mac } => {
                let idx = self.index(ns, link).await?;
                let mac = mac_opt(mac)?;
                self.nl(ns)?.add_neigh(idx, *ip, mac).await
            }
            Step::Fdb { link, mac, dst } => {
                let idx = host.index(link).await?;
                let mac = parse_mac(mac)
                    .ok_or_else(|| NetError::other("fdb", format!("bad MAC {mac}")))?;
                host.add_fdb(idx, mac, *dst).await
            }
            Step::Sysctl { ns, key, value, .. } => {
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
                            return self.nl(ns)?.set_inet_conf(idx, id, v).await;
                        }
                    }
                    (["net", "ipv4", "neigh", link, "proxy_delay"], Some(v))
                        if !["default"].contains(link) =>
                    {
                        // /proc shows jiffies at USER_HZ (1/100 s); netlink takes milliseconds.
                        let idx = self.index(ns, link).await?;
                        return self.nl(ns)?.set_proxy_delay(idx, v as u64 * 10).await;
                    }
                    _ => {}
                }
                let f = self.ns_file(ns)?;
                sysctl::write(Some(f), key, value)
            }
            Step::Firewall { change } => match change {
                FwChange::Add(_) | FwChange::AddPorts(_) | FwChange::AddIcc(_) => {
                    self.k.firewall.apply(std::slice::from_ref(change)).await
                }
                FwChange::RemoveIcc(i) => {
                    match self.k.firewall.apply(std::slice::from_ref(change)).await {
                        // Part of it is gone already: remove what is left, one at a time.
                        Err(e) if e.is_not_found() => self.k.firewall.remove_icc_each(i).await,
                        other => other,
                    }
                }
                FwChange::RemovePorts(p) => {
                    match self.k.firewall.apply(std::slice::from_ref(change)).await {
                        // Part of it is gone already (a flushed ruleset, an element deleted
                        // by hand): remove what is left.
                        Err(e) if e.is_not_found() => self.k.firewall.purge_ports(&p.elems()).await,
                        other => other,
                    }
                }
                FwChange::Remove(r) => {
                    match self.k.firewall.apply(std::slice::from_ref(change)).await {
                        // Part of it is gone already: remove what is left, piece by piece.
                        Err(e) if e.is_not_found() => self.k.firewall.purge(&r.id).await?,
                        other => other?,
                    }
                    // weft's table lives as long as some network or sandbox has rules in it:
                    // the host's ruleset is left as it was before weft.
                    if self.k.firewall.unused().await? {
                        self.k.firewall.reset().await?;
                    }
                    Ok(())
                }
            },
            Step::Netns { pin } => create_netns(pin),
            Step::DelNetns { pin } => {
                self.conns.remove(pin);
                ns::remove_pinned(pin)
            }
            Step::DelLink { ns, name, .. } => {
                self.forget(ns, name);
                if let NsRef::Path(p) = ns {
                    if !ns::is_netns(p) {
                        return Err(NetError::errno(format!("delete link {name}"), libc::ENOENT));
                    }
                }
                self.nl(ns)?.delete_link(name).await
            }
            Step::DelAddress { ns, link, addr } => {
                let idx = self.index(ns, link).await?;
                self.nl(ns)?.del_address(idx, *addr).await
            }
            Step::DelRoute {
                ns,
                dst,
                via,
                dev,
                metric,
            } => {
                let idx = self.index(ns, dev).await?;
                self.nl(ns)?
                    .del_route(&RouteSpec {
                        dst: *dst,
                        gateway: *via,
                        oif: Some(idx),
                        metric: *metric,
                        onlink: false,
                        table: None,
                        kind: RouteKind::Unicast,
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
                self.nl(ns)?.del_neigh(idx, *ip, *proxy).await
            }
            Step::DelFdb { link, mac, dst } => {
                let idx = host.index(link).await?;
                let mac = parse_mac(mac)
                    .ok_or_else(|| NetError::other("fdb", format!("bad MAC {mac}")))?;
                host.del_fdb(idx, mac, *dst).await
            }
        }
    }

    async fn read_sysctl(&mut self, ns: &NsRef, key: &str) -> Result<String, NetError> {
        let f = self.ns_file(ns)?;
        sysctl::read(Some(f), key)
    }

    async fn link(&mut self, ns: &NsRef, name: &str) -> Result<Option<LinkState>, NetError> {
        if let Some(l) = self.listed(ns).await? {
            return Ok(l.links.iter().find(|l| l.name == name).cloned());
        }
        self.nl(ns)?.link(name).await
    }

    async fn links(&mut self, ns: &NsRef) -> Result<Vec<LinkState>, NetError> {
        if let Some(l) = self.listed(ns).await? {
            return Ok(l.links.clone());
        }
        self.nl(ns)?.links().await
    }

    async fn routes(&mut self, ns: &NsRef) -> Result<Vec<RouteState>, NetError> {
        if let Some(routes) = self.listed(ns).await?.and_then(|l| l.routes.as_ref()) {
            return Ok(routes.clone());
        }
        self.nl(ns)?.routes().await
    }

    async fn addresses(
        &mut self,
        ns: &NsRef,
        link: &str,
    ) -> Result<Vec<ipnetwork::IpNetwork>, NetError> {
        match self.find(ns, link).await? {
            Some(i) => self.addresses_of(ns, i).await,
            None => Ok(vec![]),
        }
    }

    async fn delete_host_links(&mut self, names: &[String]) -> Vec<NetError> {
        self.changed();
        for n in names {
            self.forget(&NsRef::Host, n);
        }
        if names.is_empty() {
            return Vec::new();
        }
        // The kernel waits for an RCU grace period inside a link deletion (~20 ms here), in
        // the sending thread: on a thread and a netlink connection of their own, so neither
        // this process's shared connection (every other operation's requests) nor an async
        // thread waits with it.
        let host = match self.k.host_ns.try_clone() {
            Ok(f) => f,
            Err(e) => return vec![NetError::io("open the host namespace", e)],
        };
        let names = names.to_vec();
        let r = tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| NetError::io("start a runtime to delete links", e))?;
            rt.block_on(async {
                let nl = Netlink::open(Some(&host))?;
                Ok::<_, NetError>(delete_links(&nl, &names).await)
            })
        })
        .await;
        match r {
            Ok(Ok(errors)) => errors,
            Ok(Err(e)) => vec![e],
            Err(e) => vec![NetError::other("delete links", e.to_string())],
        }
    }

    async fn survey(&mut self, namespaces: &[NsRef]) {
        use futures::StreamExt;
        let mut listed = HashMap::new();
        // The namespaces at once (each listing is three round trips to the kernel, mostly
        // waiting); one that cannot be listed now is asked about the usual way later.
        let host = self.k.host_nl.clone();
        let mut all = futures::stream::iter(namespaces.iter().cloned())
            .map(|ns| {
                let host = host.clone();
                async move { Some((ns.clone(), Listed::list(&host, &ns).await.ok()??)) }
            })
            .buffer_unordered(16);
        while let Some(r) = all.next().await {
            if let Some((ns, l)) = r {
                listed.insert(ns, l);
            }
        }
        self.survey = Some(listed);
    }

    async fn present(&mut self, step: &Step) -> Result<bool, NetError> {
        match step {
            Step::DelLink { ns, name, .. } => Ok(self.find(ns, name).await?.is_some()),
            Step::DelNetns { pin } => Ok(ns::is_netns(pin)),
            Step::DelAddress { ns, link, addr } => match self.find(ns, link).await? {
                None => Ok(false),
                Some(i) => Ok(self.addresses_of(ns, i).await?.contains(addr)),
            },
            Step::DelRoute {
                ns,
                dst,
                via,
                dev,
                metric,
            } => {
                let Some(i) = self.find(ns, dev).await? else {
                    return Ok(false);
                };
                let dst = ipnetwork::IpNetwork::new(dst.network(), dst.prefix())
                    .map_err(|e| NetError::other("route", e.to_string()))?;
                Ok(self.routes(ns).await?.iter().any(|r| {
                    r.dst == dst
                        && r.gateway == *via
                        && r.oif == Some(i)
                        && (metric.is_none() || r.metric == *metric)
                }))
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
                let oif = match dev {
                    Some(d) => match self.find(ns, d).await? {
                        Some(i) => Some(i),
                        None => return Ok(false),
                    },
                    None => None,
                };
                let t = table.unwrap_or(254);
                let dst = ipnetwork::IpNetwork::new(dst.network(), dst.prefix())
                    .map_err(|e| NetError::other("route", e.to_string()))?;
                let listed = self.listed(ns).await?.and_then(|l| l.routes.as_ref());
                let routes = match listed {
                    Some(r) if t == 254 => r.clone(),
                    _ => self.nl(ns)?.routes_in(t).await?,
                };
                Ok(routes.iter().any(|r| {
                    r.dst == dst
                        && r.gateway == *via
                        && (oif.is_none() || r.oif == oif)
                        && r.kind == *kind
                        && (metric.is_none() || r.metric == *metric)
                }))
            }
            Step::DelNeigh {
                ns,
                link,
                ip,
                proxy,
            } => match self.find(ns, link).await? {
                None => Ok(false),
                Some(i) => Ok(self.nl(ns)?.neighbours(i).await?.contains(&(*ip, *proxy))),
            },
            Step::DelFdb { link, mac, dst } => match self.find(&NsRef::Host, link).await? {
                None => Ok(false),
                Some(i) => {
                    let mac = parse_mac(mac)
                        .ok_or_else(|| NetError::other("fdb", format!("bad MAC {mac}")))?;
                    Ok(self.k.host_nl.fdb(i).await?.contains(&(mac, *dst)))
                }
            },
            Step::Firewall { change } if !change.is_addition() => {
                Ok(self.fw_listing().await?.has(change))
            }
            // A sysctl restore has nothing to look for; creation steps are not removals.
            _ => Ok(true),
        }
    }

    async fn firewall_networks(&mut self) -> Result<Option<Vec<String>>, NetError> {
        Ok(self.fw_listing().await?.networks())
    }

    async fn firewall_removals(&mut self, steps: &[Step]) -> Vec<NetError> {
        self.fw_listing = None;
        let changes: Vec<FwChange> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Firewall { change } => Some(change.clone()),
                _ => None,
            })
            .collect();
        if changes.len() == steps.len() {
            match self.k.firewall.apply(&changes).await {
                Ok(()) => return vec![],
                // Some of it is gone already: one by one, each with its own fallback.
                Err(e) if e.is_not_found() => {}
                Err(e) => return vec![e],
            }
        }
        super::kernel::remove_each(self, steps).await
    }

    async fn firewall_purge(&mut self, id12: &str) -> Result<(), NetError> {
        self.fw_listing = None;
        self.k.firewall.purge(id12).await
    }

    async fn firewall_reset(&mut self) -> Result<(), NetError> {
        self.fw_listing = None;
        self.k.firewall.reset().await
    }

    async fn firewall_sandbox_objects(&mut self) -> Result<(Vec<PortElem>, Vec<String>), NetError> {
        Ok(self.fw_listing().await?.sandbox_objects())
    }

    async fn firewall_purge_ports(&mut self, elems: &[PortElem]) -> Result<(), NetError> {
        self.fw_listing = None;
        self.k.firewall.purge_ports(elems).await
    }

    async fn firewall_purge_icc(&mut self, port: &str) -> Result<(), NetError> {
        self.fw_listing = None;
        self.k.firewall.purge_icc(port).await
    }

    async fn firewall_base_intact(&mut self) -> Result<Option<bool>, NetError> {
        Ok(self.fw_listing().await?.base_intact())
    }

    async fn firewall_strangers(&mut self) -> Result<Vec<String>, NetError> {
        Ok(self.fw_listing().await?.strangers())
    }

    async fn firewall_purge_strangers(&mut self) -> Result<(), NetError> {
        self.fw_listing = None;
        self.k.firewall.purge_strangers().await
    }

    async fn firewall_reassert_base(&mut self) -> Result<(), NetError> {
        self.fw_listing = None;
        self.k.firewall.reassert_base().await
    }
}

/// Create a pinned namespace with `lo` up.
fn create_netns(pin: &Path) -> Result<(), NetError> {
    ns::create_pinned(pin, || {
        // Inside the new namespace: bring lo up with a throwaway netlink socket (blocking,
        // one message), so no async connection is needed in it.
        ns::set_lo_up()
    })?
    .inspect_err(|_| {
        let _ = ns::remove_pinned(pin);
    })
}

/// Delete host links by name: one request for one link, else one for all of them (they are
/// put in a link group of their own first, and the group is deleted: one grace period).
async fn delete_links(host: &Netlink, names: &[String]) -> Vec<NetError> {
    let mut errors = Vec::new();
    if names.len() == 1 {
        if let Err(e) = host.delete_link(&names[0]).await {
            if !e.is_not_found() {
                errors.push(e);
            }
        }
        return errors;
    }
    let mut g = [0u8; 2];
    getrandom::fill(&mut g).ok();
    let group = WEFT_GROUP | (u16::from_le_bytes(g) as u32).max(1);
    let mut grouped = 0;
    for l in names {
        match host.set_group_by_name(l, group).await {
            Ok(()) => grouped += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e),
        }
    }
    if grouped > 0 {
        if let Err(e) = host.delete_group(group).await {
            if !e.is_not_found() {
                errors.push(e);
            }
        }
    }
    errors
}
