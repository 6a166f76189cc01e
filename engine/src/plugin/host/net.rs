//! `host-net`: the kernel changes a plugin asks for — links, addresses, routes, neighbours, FDB
//! entries, per-link sysctls — each checked against its grants (link prefix, kinds, sysctls,
//! reachable subnets and peers) and weft's records (a link it touches must be one it made),
//! then applied as a step of the calling operation's kernel transaction (undone with it).

use super::*;

fn unsupported_outside_calls() -> HostError {
    HostError::Unsupported("host-net is only available while weft calls the driver".into())
}

impl HostState {
    /// A name the plugin may give a new link: within its prefix.
    fn fresh(&self, name: &str) -> HostResult<()> {
        if self.plugin.grants.owns_link(name) {
            return Ok(());
        }
        Err(self.deny(match &self.plugin.grants.link_prefix {
            Some(p) => format!("link {name:?} is not this plugin's to make: its links are named {p}… (at most 15 characters)"),
            None => format!("link {name:?}: this plugin was granted no host links (grant link-prefix=…)"),
        }))
    }

    /// The links weft's records (and this operation so far) say the plugin made.
    fn recorded_links(&mut self) -> HostResult<&HashSet<String>> {
        if self.scope.links.is_none() {
            let mut steps = self.tx.get().map(|t| t.undo_since(0)).unwrap_or_default();
            if let Some(s) = self.store.get() {
                steps.extend(recorded_steps(&*s, &self.scope.records).map_err(store_error)?);
            }
            self.scope.links = Some(links_made(&steps, &self.plugin.grants));
        }
        Ok(self.scope.links.get_or_insert_with(HashSet::new))
    }

    /// A link the plugin made: this call, or weft's records, say so.
    fn mine(&mut self, name: &str) -> HostResult<()> {
        if self.plugin.grants.owns_link(name)
            && (self.created.contains(name) || self.recorded_links()?.contains(name))
        {
            return Ok(());
        }
        Err(self.deny(format!(
            "link {name:?} is not one this plugin made for this network (weft's records say which are)"
        )))
    }

    fn parent(&mut self, name: &str) -> HostResult<()> {
        if self.plugin.grants.parents.iter().any(|p| p == name) || self.mine(name).is_ok() {
            return Ok(());
        }
        Err(self.deny(format!(
            "link {name:?} was not granted as a parent (grant parent={name})"
        )))
    }

    /// Within the network's subnets, or one of the granted gateway addresses.
    fn reach(&self, what: &str, net: IpNetwork) -> HostResult<()> {
        let in_subnet = self.scope.nets.iter().any(|s| {
            s.is_ipv4() == net.is_ipv4() && s.contains(net.network()) && s.prefix() <= net.prefix()
        });
        let full = if net.is_ipv4() { 32 } else { 128 };
        let gateway = net.prefix() == full && self.plugin.grants.gateways.contains(&net.ip());
        if in_subnet || gateway {
            return Ok(());
        }
        Err(self.deny(format!(
            "{what} {net} is outside the network's subnets and the plugin's granted gateways"
        )))
    }

    /// An address on a link: the address itself in reach, and the connected route its prefix
    /// length makes too (10.0.0.1/1 would route half the Internet to the link).
    fn reach_address(&self, addr: IpNetwork) -> HostResult<()> {
        self.reach_ip("address", addr.ip())?;
        let net = network_of(addr);
        if self.reach("address", net).is_err() {
            return Err(self.deny(format!(
                "address {addr} would route {net} to the link, beyond the network's subnets: give the subnet's prefix length"
            )));
        }
        Ok(())
    }

    fn reach_ip(&self, what: &str, ip: IpAddr) -> HostResult<()> {
        self.reach(what, IpNetwork::from(ip))
    }

    fn tx(&mut self) -> HostResult<&mut Tx> {
        self.tx.get().ok_or_else(unsupported_outside_calls)
    }

    async fn apply(&mut self, step: Step) -> HostResult<()> {
        let made = match &step {
            Step::Bridge { name, .. }
            | Step::Vxlan { name, .. }
            | Step::Macvlan { name, .. }
            | Step::Ipip { name, .. }
            | Step::Geneve { name, .. }
            | Step::Wireguard { name } => vec![name.clone()],
            Step::Veth {
                name,
                peer,
                peer_ns,
                ..
            } => {
                let mut v = vec![name.clone()];
                if *peer_ns == NsRef::Host {
                    v.push(peer.clone());
                }
                v
            }
            _ => vec![],
        };
        self.tx()?.apply(step).await.map_err(net_error)?;
        self.created.extend(made);
        Ok(())
    }

    /// Is `ip` a cluster peer the engine announced (discover-new)?
    fn peer(&mut self, ip: IpAddr) -> HostResult<()> {
        let key = crate::engine::records::peer_key(&ip);
        let known = match self.store.get() {
            Some(s) => s
                .get(Table::Meta, key.as_bytes())
                .map_err(store_error)?
                .is_some(),
            None => false,
        };
        if known {
            return Ok(());
        }
        Err(self.deny(format!(
            "{ip} is not a cluster peer weft announced (weft system peer add {ip})"
        )))
    }

    fn vni(&self, vni: u32, port: u16) -> HostResult<()> {
        if !self.plugin.grants.vni(vni) {
            return Err(self.deny(format!("VNI {vni} was not granted (grant vni=A-B)")));
        }
        if !self.plugin.grants.vxlan_ports.contains(&port) {
            return Err(self.deny(format!(
                "UDP port {port} was not granted (grant vxlan-port={port})"
            )));
        }
        Ok(())
    }

    /// A local tunnel address must be one the given parent has.
    async fn local_on(&mut self, local: IpAddr, parent: Option<&str>) -> HostResult<()> {
        let Some(p) = parent else {
            return Err(self.deny(format!(
                "local address {local} needs a granted parent that has it"
            )));
        };
        let addrs = self
            .tx()?
            .addresses(&NsRef::Host, p)
            .await
            .map_err(net_error)?;
        if addrs.iter().any(|a| a.ip() == local) {
            return Ok(());
        }
        Err(self.deny(format!("{local} is not an address of {p}")))
    }

    // ------------------------------------------------------------------ host-net

    pub async fn create_bridge(&mut self, name: String, mtu: Option<u32>) -> HostResult<()> {
        self.fresh(&name)?;
        self.apply(Step::Bridge {
            name,
            mtu,
            mac: None,
        })
        .await
    }

    pub async fn create_veth(
        &mut self,
        name: String,
        peer: String,
        mtu: Option<u32>,
    ) -> HostResult<()> {
        self.fresh(&name)?;
        self.fresh(&peer)?;
        self.apply(Step::Veth {
            name,
            peer,
            peer_ns: NsRef::Host,
            master: None,
            mtu,
            peer_mac: None,
            group: None,
            peer_ipv6: false,
        })
        .await
    }

    pub async fn create_sandbox_veth(&mut self, name: String, mtu: Option<u32>) -> HostResult<()> {
        self.fresh(&name)?;
        let Some(j) = self.join.clone() else {
            return Err(HostError::Unsupported(
                "create-sandbox-veth is only available during join".into(),
            ));
        };
        if self.placed.is_some() {
            return Err(HostError::Conflict(
                "create-sandbox-veth was already called in this join".into(),
            ));
        }
        self.apply(Step::Veth {
            name: name.clone(),
            peer: j.ifname,
            peer_ns: j.ns,
            master: None,
            mtu,
            peer_mac: Some(j.mac),
            group: None,
            peer_ipv6: j.ipv6,
        })
        .await?;
        self.placed = Some(name);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create_vxlan(
        &mut self,
        name: String,
        vni: u32,
        local: Option<IpAddr>,
        parent: Option<String>,
        port: u16,
        learning: bool,
        mtu: Option<u32>,
    ) -> HostResult<()> {
        self.fresh(&name)?;
        if let Some(p) = &parent {
            self.parent(p)?;
        }
        if vni == 0 || vni >= 1 << 24 {
            return Err(HostError::InvalidArgument(format!(
                "VNI {vni} is outside 1..16777215"
            )));
        }
        self.vni(vni, port)?;
        if let Some(l) = local {
            self.local_on(l, parent.as_deref()).await?;
        }
        self.apply(Step::Vxlan {
            name,
            vni,
            local,
            dev: parent,
            port,
            learning,
            mtu,
            master: None,
            proxy: false,
        })
        .await
    }

    pub async fn create_macvlan(
        &mut self,
        name: String,
        parent: String,
        mode: MacvlanMode,
    ) -> HostResult<()> {
        self.fresh(&name)?;
        self.parent(&parent)?;
        if mode == MacvlanMode::Passthru && !self.plugin.grants.macvlan_passthru {
            return Err(self.deny(
                "macvlan passthru takes the parent over: it was not granted (grant macvlan-passthru=true)".into(),
            ));
        }
        self.apply(Step::Macvlan {
            name,
            parent,
            mode,
            ns: NsRef::Host,
            mac: None,
            mtu: None,
            ipv6: false,
        })
        .await
    }

    pub async fn create_ipip(
        &mut self,
        name: String,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        parent: Option<String>,
    ) -> HostResult<()> {
        self.fresh(&name)?;
        if let Some(p) = &parent {
            self.parent(p)?;
        }
        if let Some(l) = local {
            self.local_on(l, parent.as_deref()).await?;
        }
        if let Some(r) = remote {
            self.peer(r)?;
        }
        self.apply(Step::Ipip {
            name,
            local,
            remote,
            dev: parent,
        })
        .await
    }

    pub async fn create_geneve(
        &mut self,
        name: String,
        vni: u32,
        remote: IpAddr,
        port: u16,
    ) -> HostResult<()> {
        self.fresh(&name)?;
        self.vni(vni, port)?;
        self.peer(remote)?;
        self.apply(Step::Geneve {
            name,
            vni,
            remote,
            port,
        })
        .await
    }

    pub async fn create_wireguard(&mut self, name: String) -> HostResult<()> {
        self.fresh(&name)?;
        self.apply(Step::Wireguard { name }).await
    }

    pub async fn delete_link(&mut self, name: String) -> HostResult<()> {
        self.mine(&name)?;
        self.apply(Step::DelLink {
            ns: NsRef::Host,
            name,
            peer: None,
        })
        .await
    }

    pub async fn link_exists(&mut self, name: String) -> HostResult<bool> {
        self.parent(&name)?;
        Ok(self
            .tx()?
            .link(&NsRef::Host, &name)
            .await
            .map_err(net_error)?
            .is_some())
    }

    pub async fn list_links(&mut self) -> HostResult<Vec<String>> {
        let recorded = self.recorded_links()?.clone();
        let mut names: Vec<String> = recorded
            .iter()
            .chain(self.created.iter())
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            if self
                .tx()?
                .link(&NsRef::Host, &n)
                .await
                .map_err(net_error)?
                .is_some()
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    pub async fn set_up(&mut self, name: String) -> HostResult<()> {
        self.mine(&name)?;
        self.apply(Step::LinkUp {
            ns: NsRef::Host,
            name,
        })
        .await
    }

    pub async fn set_down(&mut self, name: String) -> HostResult<()> {
        self.mine(&name)?;
        self.apply(Step::LinkDown {
            ns: NsRef::Host,
            name,
        })
        .await
    }

    pub async fn set_mtu(&mut self, name: String, mtu: u32) -> HostResult<()> {
        self.mine(&name)?;
        if !(68..=65535).contains(&mtu) {
            return Err(HostError::InvalidArgument(format!(
                "MTU {mtu} is outside 68..65535"
            )));
        }
        self.apply(Step::SetMtu {
            ns: NsRef::Host,
            name,
            mtu,
        })
        .await
    }

    pub async fn set_mac(&mut self, name: String, mac: [u8; 6]) -> HostResult<()> {
        self.mine(&name)?;
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(HostError::InvalidArgument(
                "a link's MAC must be a unicast address".into(),
            ));
        }
        self.apply(Step::SetMac {
            ns: NsRef::Host,
            name,
            mac: mac_text(&mac),
        })
        .await
    }

    pub async fn set_master(&mut self, name: String, master: String) -> HostResult<()> {
        self.mine(&name)?;
        self.mine(&master)?;
        self.apply(Step::SetMaster {
            ns: NsRef::Host,
            name,
            master,
        })
        .await
    }

    /// The whole prefix must be in reach: an address's prefix length makes a connected
    /// route, and 169.254.7.7/1 would route half the internet.
    pub async fn add_address(&mut self, link: String, addr: IpNetwork) -> HostResult<()> {
        self.mine(&link)?;
        self.reach_address(addr)?;
        self.apply(Step::Address {
            ns: NsRef::Host,
            link,
            addr,
        })
        .await
    }

    pub async fn del_address(&mut self, link: String, addr: IpNetwork) -> HostResult<()> {
        self.mine(&link)?;
        self.reach_address(addr)?;
        self.apply(Step::DelAddress {
            ns: NsRef::Host,
            link,
            addr,
        })
        .await
    }

    pub async fn add_route(
        &mut self,
        dst: IpNetwork,
        via: Option<IpAddr>,
        link: String,
    ) -> HostResult<()> {
        self.add_route_ex(RouteRequest {
            dst,
            via,
            link: Some(link),
            metric: None,
            table: None,
            kind: crate::net::step::RouteKind::Unicast,
        })
        .await
    }

    fn check_route(&mut self, r: &RouteRequest) -> HostResult<()> {
        use crate::net::step::RouteKind;
        match (&r.link, r.kind) {
            (Some(l), _) => self.mine(l)?,
            (None, RouteKind::Unicast) => {
                return Err(HostError::InvalidArgument(
                    "a unicast route needs a link".into(),
                ))
            }
            (None, _) => {}
        }
        self.reach("route to", network_of(r.dst))?;
        if let Some(v) = r.via {
            if v.is_ipv4() != r.dst.is_ipv4() {
                return Err(HostError::InvalidArgument(
                    "next hop and destination are of different families".into(),
                ));
            }
            self.reach_ip("next hop", v)?;
        }
        if let Some(t) = r.table {
            if !(1..=252).contains(&t) {
                return Err(self.deny(format!(
                    "routing table {t}: use 1–252 (local, main and default are the host's)"
                )));
            }
        }
        Ok(())
    }

    pub async fn add_route_ex(&mut self, r: RouteRequest) -> HostResult<()> {
        self.check_route(&r)?;
        let dst = network_of(r.dst);
        let step = match (r.table, r.kind, &r.link) {
            (None, crate::net::step::RouteKind::Unicast, Some(l)) => Step::Route {
                ns: NsRef::Host,
                dst,
                via: r.via,
                dev: l.clone(),
                metric: r.metric,
                onlink: false,
            },
            _ => Step::RouteEx {
                ns: NsRef::Host,
                dst,
                via: r.via,
                dev: r.link,
                metric: r.metric,
                table: r.table,
                kind: r.kind,
            },
        };
        self.apply(step).await
    }

    pub async fn del_route(&mut self, r: RouteRequest) -> HostResult<()> {
        self.check_route(&r)?;
        let dst = network_of(r.dst);
        let step = match (r.table, r.kind, &r.link) {
            (None, crate::net::step::RouteKind::Unicast, Some(l)) => Step::DelRoute {
                ns: NsRef::Host,
                dst,
                via: r.via,
                dev: l.clone(),
                metric: r.metric,
            },
            _ => Step::DelRouteEx {
                ns: NsRef::Host,
                dst,
                via: r.via,
                dev: r.link,
                metric: r.metric,
                table: r.table,
                kind: r.kind,
            },
        };
        self.apply(step).await
    }

    pub async fn add_neighbour(
        &mut self,
        link: String,
        ip: IpAddr,
        mac: Option<[u8; 6]>,
    ) -> HostResult<()> {
        self.mine(&link)?;
        self.reach_ip("neighbour", ip)?;
        self.apply(Step::Neigh {
            ns: NsRef::Host,
            link,
            ip,
            mac: mac.map(|m| mac_text(&m)),
        })
        .await
    }

    pub async fn del_neighbour(&mut self, link: String, ip: IpAddr, proxy: bool) -> HostResult<()> {
        self.mine(&link)?;
        self.reach_ip("neighbour", ip)?;
        self.apply(Step::DelNeigh {
            ns: NsRef::Host,
            link,
            ip,
            proxy,
        })
        .await
    }

    pub async fn add_fdb(&mut self, link: String, mac: [u8; 6], remote: IpAddr) -> HostResult<()> {
        self.mine(&link)?;
        self.peer(remote)?;
        self.apply(Step::Fdb {
            link,
            mac: mac_text(&mac),
            dst: remote,
        })
        .await
    }

    pub async fn del_fdb(&mut self, link: String, mac: [u8; 6], remote: IpAddr) -> HostResult<()> {
        self.mine(&link)?;
        self.apply(Step::DelFdb {
            link,
            mac: mac_text(&mac),
            dst: remote,
        })
        .await
    }

    /// A per-link sysctl, on a link the plugin made (never `all` or `default`: those are
    /// every link of the host).
    pub async fn set_sysctl(&mut self, link: String, key: &str, value: String) -> HostResult<()> {
        if link == "all" || link == "default" {
            return Err(self.deny(format!(
                "{link} is not a link: its settings are every link's"
            )));
        }
        self.mine(&link)?;
        let path = match key {
            "proxy_arp" => format!("net/ipv4/conf/{link}/proxy_arp"),
            "proxy_delay" => format!("net/ipv4/neigh/{link}/proxy_delay"),
            "forwarding" => format!("net/ipv4/conf/{link}/forwarding"),
            "forwarding6" => format!("net/ipv6/conf/{link}/forwarding"),
            "proxy_ndp" => format!("net/ipv6/conf/{link}/proxy_ndp"),
            _ => return Err(HostError::InvalidArgument(format!("unknown sysctl {key}"))),
        };
        if !self.plugin.grants.sysctls.iter().any(|s| s == key) {
            return Err(self.deny(format!("sysctl {key} was not granted (grant sysctl={key})")));
        }
        if value.is_empty() || value.len() > 6 || !value.bytes().all(|c| c.is_ascii_digit()) {
            return Err(HostError::InvalidArgument(format!(
                "sysctl value {value:?}: give a small number"
            )));
        }
        self.apply(Step::Sysctl {
            ns: NsRef::Host,
            key: path,
            value,
            keep: false,
        })
        .await
    }
}

/// A route a plugin asks for.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub dst: IpNetwork,
    pub via: Option<IpAddr>,
    pub link: Option<String>,
    pub metric: Option<u32>,
    pub table: Option<u32>,
    pub kind: crate::net::step::RouteKind,
}

/// The network an address's prefix length makes (what the kernel routes to its link).
fn network_of(a: IpNetwork) -> IpNetwork {
    IpNetwork::new(a.network(), a.prefix()).unwrap_or(a)
}

pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
