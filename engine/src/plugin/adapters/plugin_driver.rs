//! A driver component as a [`NetworkDriver`]: each call of the trait made a call of the
//! component (0.2 or 0.1), its answer checked before the engine uses it.

use super::*;

// ======================================================================== drivers

#[derive(Clone)]
enum DriverPre {
    V2(driver::DriverPluginPre<HostState>),
    V1(v01::driver::DriverPluginPre<HostState>),
}

/// A driver component as a [`NetworkDriver`].
pub struct PluginDriver {
    loaded: Loaded<DriverPre>,
}

/// What join answered, whichever version said it.
struct JoinReply {
    link: String,
    ifname_prefix: String,
    gateway4: Option<IpAddr>,
    gateway6: Option<IpAddr>,
    gateway_onlink: bool,
    routes: Vec<(IpNetwork, Option<IpAddr>)>,
    mtu: Option<u32>,
}

impl PluginDriver {
    pub fn new(host: Arc<crate::plugin::PluginHost>, rec: PluginRecord) -> Self {
        PluginDriver {
            loaded: Loaded::new(host, rec),
        }
    }

    async fn loaded(&self) -> Result<(Arc<Runtime>, DriverPre)> {
        let rec = &self.loaded.rec;
        self.loaded
            .get(|rt, c| {
                if rec.contract == "0.2.0" {
                    let pre = rt
                        .driver_linker
                        .instantiate_pre(c)
                        .map_err(|e| link_err(rt, c, rec, e))?;
                    Ok(DriverPre::V2(
                        driver::DriverPluginPre::new(pre).map_err(wt)?,
                    ))
                } else {
                    let pre = rt
                        .driver01_linker
                        .instantiate_pre(c)
                        .map_err(|e| link_err(rt, c, rec, e))?;
                    Ok(DriverPre::V1(
                        v01::driver::DriverPluginPre::new(pre).map_err(wt)?,
                    ))
                }
            })
            .await
    }

    /// What a call on `net` (and `ep`, for endpoint calls) may reach: the network's subnets,
    /// and the links this plugin made that weft's records own — the network's, the endpoint's,
    /// and those this operation made so far. Without a network, those of all its networks.
    /// (The records are read only if a host call needs them.)
    fn scope(&self, net: Option<&Network>, ep: Option<&str>) -> Scope {
        use crate::engine::records::{ep_key, net_key};
        let records = match net {
            Some(n) => {
                let mut keys = vec![net_key(&n.id)];
                if let Some(e) = ep {
                    keys.push(ep_key(&n.id, e));
                }
                host::Records::Keys(keys)
            }
            None => host::Records::AllNetworksOf(self.loaded.rec.name.clone()),
        };
        Scope::new(
            net.map(|n| n.pools.iter().map(|p| p.subnet).collect())
                .unwrap_or_default(),
            records,
        )
    }

    /// A store for one call, with the operation's transactions lent to it.
    ///
    /// SAFETY (of the lending inside): the returned store must be dropped before `ctx`'s
    /// borrows end; every caller keeps it a local of the method that holds `ctx`.
    fn store(&self, rt: &Runtime, ctx: &mut Ctx<'_>, scope: Scope) -> Result<Store<HostState>> {
        let tx = unsafe { lend::tx(ctx.tx) };
        let kv = unsafe { lend::store(ctx.store) };
        new_store(
            rt,
            &self.loaded.rec,
            HostState::new(
                self.loaded.rec.clone(),
                self.loaded.slots.clone(),
                tx,
                kv,
                scope,
            ),
        )
    }
}

/// One driver call: instantiate the version the plugin speaks, run `$v2` or `$v1` (each
/// yielding `wasmtime::Result<Result<T, HostError>>`), bounded in time, then settle.
macro_rules! driver_call {
    ($self:ident, $ctx:ident, $scope:expr, $join:expr, $call:literal, |$store:ident| v2: |$i2:ident| $b2:expr, v1: |$i1:ident| $b1:expr) => {{
        let started = std::time::Instant::now();
        let (rt, pre) = $self.loaded().await?;
        let scope = $scope;
        let mut $store = $self.store(&rt, $ctx, scope)?;
        $store.data_mut().join = $join;
        let limit = host_limit(&$self.loaded.rec);
        let r = match tokio::time::timeout(limit, async {
            match &pre {
                DriverPre::V2(p) => match p.instantiate_async(&mut $store).await {
                    Ok(inst) => {
                        let $i2 = inst.weft_plugin_network_driver();
                        $b2
                    }
                    Err(e) => Err(e),
                },
                DriverPre::V1(p) => match p.instantiate_async(&mut $store).await {
                    Ok(inst) => {
                        let $i1 = inst.weft_plugin_network_driver();
                        $b1
                    }
                    Err(e) => Err(e),
                },
            }
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(wasmtime::Trap::Interrupt.into()),
        };
        let out = settle(&$self.loaded.rec, $call, &$store, r);
        let placed = $store.data_mut().placed.take();
        drop($store);
        tracing::trace!(plugin = %$self.loaded.rec.name, call = $call, us = started.elapsed().as_micros() as u64, "plugin call");
        (out, placed)
    }};
}

fn wit_network(net: &Network) -> wd::Network {
    let data = |v6: bool| -> Vec<wd::IpamData> {
        net.pools
            .iter()
            .filter(|p| p.is_v6() == v6)
            .map(|p| wd::IpamData {
                pool: host::wit_prefix(p.subnet),
                gateway: p
                    .gateway
                    .map(|g| host::wit_prefix(IpNetwork::new(g, p.subnet.prefix()).unwrap())),
                aux_addresses: p
                    .aux_addresses
                    .iter()
                    .map(|(k, a)| (k.clone(), host::wit_ip(*a)))
                    .collect(),
            })
            .collect()
    };
    wd::Network {
        id: net.id.clone(),
        name: net.name.clone(),
        ipv4: data(false),
        ipv6: data(true),
        internal: net.internal,
        options: opts(&net.options),
    }
}

fn wit_network1(net: &Network) -> wd1::Network {
    let n = wit_network(net);
    let conv = |v: Vec<wd::IpamData>| -> Vec<wd1::IpamData> {
        v.into_iter()
            .map(|d| wd1::IpamData {
                pool: p21(&d.pool),
                gateway: d.gateway.as_ref().map(p21),
                aux_addresses: d
                    .aux_addresses
                    .iter()
                    .map(|(k, a)| (k.clone(), crate::plugin::v01::wit_ip(host::ip(a))))
                    .collect(),
            })
            .collect()
    };
    wd1::Network {
        id: n.id,
        name: n.name,
        ipv4: conv(n.ipv4),
        ipv6: conv(n.ipv6),
        internal: n.internal,
        options: n.options,
    }
}

fn p21(p: &t2::IpPrefix) -> t1::IpPrefix {
    crate::plugin::v01::wit_prefix(IpNetwork::new(host::ip(&p.address), p.prefix_len).unwrap())
}

fn mac_bytes(m: &str) -> [u8; 6] {
    crate::model::parse_mac(m).unwrap_or([2, 0x42, 0, 0, 0, 0])
}

fn wit_endpoint(net: &Network, ep: &EndpointInfo) -> wd::Endpoint {
    let m = mac_bytes(&ep.mac);
    wd::Endpoint {
        network_id: net.id.clone(),
        id: ep.id.clone(),
        ipv4: ep.ipv4.map(host::wit_prefix),
        ipv6: ep.ipv6.map(host::wit_prefix),
        mac: (m[0], m[1], m[2], m[3], m[4], m[5]),
        options: opts(&ep.options),
        context: wit_context(&ep.context),
    }
}

fn wit_endpoint1(net: &Network, ep: &EndpointInfo) -> wd1::Endpoint {
    let m = mac_bytes(&ep.mac);
    wd1::Endpoint {
        network_id: net.id.clone(),
        id: ep.id.clone(),
        ipv4: ep.ipv4.map(crate::plugin::v01::wit_prefix),
        ipv6: ep.ipv6.map(crate::plugin::v01::wit_prefix),
        mac: (m[0], m[1], m[2], m[3], m[4], m[5]),
        options: opts(&ep.options),
    }
}

fn reply2(j: wd::JoinInfo) -> std::result::Result<JoinReply, HostError> {
    if j.routes.len() > MAX_ROUTES {
        return Err(HostError::InvalidArgument(format!(
            "join returned {} routes, over the {MAX_ROUTES} allowed",
            j.routes.len()
        )));
    }
    let mut routes = Vec::new();
    for r in &j.routes {
        routes.push((
            host::prefix(&r.destination)?,
            r.next_hop.as_ref().map(host::ip),
        ));
    }
    Ok(JoinReply {
        link: j.link,
        ifname_prefix: j.ifname_prefix,
        gateway4: j.gateway4.map(|(a, b, c, d)| IpAddr::from([a, b, c, d])),
        gateway6: j
            .gateway6
            .map(|(a, b, c, d, e, f, g, h)| IpAddr::from([a, b, c, d, e, f, g, h])),
        gateway_onlink: j.gateway_onlink,
        routes,
        mtu: j.mtu,
    })
}

fn reply1(j: wd1::JoinInfo) -> std::result::Result<JoinReply, HostError> {
    if j.routes.len() > MAX_ROUTES {
        return Err(HostError::InvalidArgument(format!(
            "join returned {} routes, over the {MAX_ROUTES} allowed",
            j.routes.len()
        )));
    }
    let mut routes = Vec::new();
    for r in &j.routes {
        routes.push((
            crate::plugin::v01::prefix(&r.destination)?,
            r.next_hop.as_ref().map(crate::plugin::v01::ip),
        ));
    }
    Ok(JoinReply {
        link: j.link,
        ifname_prefix: j.ifname_prefix,
        gateway4: j.gateway4.map(|(a, b, c, d)| IpAddr::from([a, b, c, d])),
        gateway6: j
            .gateway6
            .map(|(a, b, c, d, e, f, g, h)| IpAddr::from([a, b, c, d, e, f, g, h])),
        gateway_onlink: j.gateway_onlink,
        routes,
        mtu: j.mtu,
    })
}

fn wit_port(p: &PortMapping) -> wd::PortMapping {
    wd::PortMapping {
        protocol: match p.proto.as_str() {
            "udp" => wd::Protocol::Udp,
            "sctp" => wd::Protocol::Sctp,
            _ => wd::Protocol::Tcp,
        },
        host_ip: p.host_ip.map(host::wit_ip),
        host_port: p.host_port,
        container_port: p.container_port,
    }
}

#[async_trait]
impl NetworkDriver for PluginDriver {
    fn name(&self) -> &str {
        &self.loaded.rec.name
    }

    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: self.loaded.rec.scope,
            needs_ipam: true,
            attachment: Attachment::Endpoints,
            external_connectivity: self.loaded.rec.external_connectivity,
            long_calls: true,
        }
    }

    async fn create_network(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> Result<()> {
        let scope = self.scope(Some(net), None);
        driver_call!(self, ctx, scope, None, "create-network", |store|
            v2: |d| e2(d.call_create_network(&mut store, &wit_network(net)).await),
            v1: |d| e1(d.call_create_network(&mut store, &wit_network1(net)).await))
        .0
    }

    async fn delete_network(&self, ctx: &mut Ctx<'_>, net: &Network) -> Result<()> {
        let scope = self.scope(Some(net), None);
        let id = net.id.clone();
        driver_call!(self, ctx, scope, None, "delete-network", |store|
            v2: |d| e2(d.call_delete_network(&mut store, &id).await),
            v1: |d| e1(d.call_delete_network(&mut store, &id).await))
        .0
    }

    async fn create_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &mut EndpointInfo,
    ) -> Result<()> {
        let scope = self.scope(Some(net), Some(&ep.id));
        let (e, e_1) = (wit_endpoint(net, ep), wit_endpoint1(net, ep));
        let mac = driver_call!(self, ctx, scope, None, "create-endpoint", |store|
            v2: |d| e2(d.call_create_endpoint(&mut store, &e).await.map(|r| r.map(|i| i.mac))),
            v1: |d| e1(d.call_create_endpoint(&mut store, &e_1).await.map(|r| r.map(|i| i.mac))))
        .0?;
        if let Some(m) = mac {
            if m.0 & 1 == 1 || m == (0, 0, 0, 0, 0, 0) {
                return Err(bad_return(
                    &self.loaded.rec,
                    format!(
                        "create-endpoint returned MAC {}, which is not a unicast address",
                        host::mac_text(&[m.0, m.1, m.2, m.3, m.4, m.5])
                    ),
                ));
            }
            ep.mac = host::mac_text(&[m.0, m.1, m.2, m.3, m.4, m.5]);
        }
        Ok(())
    }

    async fn delete_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
    ) -> Result<()> {
        let scope = self.scope(Some(net), Some(&ep.id));
        let (nid, eid) = (net.id.clone(), ep.id.clone());
        driver_call!(self, ctx, scope, None, "delete-endpoint", |store|
            v2: |d| e2(d.call_delete_endpoint(&mut store, &nid, &eid).await),
            v1: |d| e1(d.call_delete_endpoint(&mut store, &nid, &eid).await))
        .0
    }

    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
        target: &JoinTarget,
    ) -> Result<JoinInfo> {
        let scope = self.scope(Some(net), Some(&ep.id));
        let (e, e_1) = (wit_endpoint(net, ep), wit_endpoint1(net, ep));
        let key = match &target.ns {
            NsRef::Path(p) => p.display().to_string(),
            NsRef::Host => String::new(),
        };
        let jc = host::JoinContext {
            ns: target.ns.clone(),
            ifname: target.ifname.clone(),
            mac: ep.mac.clone(),
            ipv6: ep.ipv6.is_some(),
        };
        let (j, placed) = driver_call!(self, ctx, scope.clone(), Some(jc), "join", |store|
            v2: |d| e2(d.call_join(&mut store, &e, &key).await).map(|r| r.and_then(reply2)),
            v1: |d| e1(d.call_join(&mut store, &e_1, &key).await).map(|r| r.and_then(reply1)));
        let j = j?;
        let rec = &self.loaded.rec;
        // The host end of a create-sandbox-veth pair: its other end is in the sandbox already.
        let placed = placed.is_some_and(|p| p == j.link);
        // Check everything before the engine acts on it: the link must be one this plugin
        // made (records, or this operation), never another driver's or the host's.
        let made_now = ctx.tx.undo_since(0).iter().any(|s| {
            matches!(s, Step::DelLink { ns: NsRef::Host, name, peer }
                if *name == j.link || peer.as_ref().is_some_and(|(n, p)| *n == NsRef::Host && *p == j.link))
        });
        let recorded = || -> Result<bool> {
            let steps = host::recorded_steps(&*ctx.store, &scope.records)?;
            Ok(host::links_made(&steps, &rec.grants).contains(&j.link))
        };
        if !rec.grants.owns_link(&j.link) || !(made_now || recorded()?) {
            return Err(bad_return(
                rec,
                format!(
                    "join returned link {:?}, which is not one it made for this network",
                    rec.tell(&j.link, 32)
                ),
            ));
        }
        if !placed && ctx.tx.link(&NsRef::Host, &j.link).await?.is_none() {
            return Err(bad_return(
                rec,
                format!("join returned link {:?}, which does not exist", j.link),
            ));
        }
        if j.ifname_prefix.is_empty()
            || j.ifname_prefix.len() > 8
            || !j
                .ifname_prefix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(bad_return(
                rec,
                format!(
                    "join returned interface prefix {:?}: use 1–8 of a-z, 0-9",
                    rec.tell(&j.ifname_prefix, 16)
                ),
            ));
        }
        if j.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
            return Err(bad_return(rec, format!("join returned MTU {:?}", j.mtu)));
        }
        for (gw, addr) in [(j.gateway4, ep.ipv4), (j.gateway6, ep.ipv6)] {
            let Some(gw) = gw else { continue };
            if gw.is_unspecified() || gw.is_multicast() || gw.is_loopback() {
                return Err(bad_return(
                    rec,
                    format!("join returned gateway {gw}, which is not a unicast address"),
                ));
            }
            let on_subnet = addr.is_some_and(|a| a.contains(gw));
            if !on_subnet && !j.gateway_onlink {
                return Err(bad_return(
                    rec,
                    format!("join returned gateway {gw} outside the endpoint's subnet without gateway-onlink"),
                ));
            }
        }
        let mut routes = Vec::new();
        for (dst, via) in &j.routes {
            if via.is_some_and(|v| v.is_ipv4() != dst.is_ipv4()) {
                return Err(bad_return(
                    rec,
                    format!("join returned route {dst} with a next hop of another family"),
                ));
            }
            routes.push((IpNetwork::new(dst.network(), dst.prefix()).unwrap(), *via));
        }
        Ok(JoinInfo {
            link: if placed {
                JoinLink::Placed
            } else {
                JoinLink::Move { name: j.link }
            },
            ifname_prefix: if placed { None } else { Some(j.ifname_prefix) },
            gateway4: j.gateway4,
            gateway6: j.gateway6,
            routes,
            mtu: j.mtu,
            gateway_onlink: j.gateway_onlink,
        })
    }

    async fn leave(&self, ctx: &mut Ctx<'_>, net: &Network, ep: &EndpointInfo) -> Result<()> {
        let scope = self.scope(Some(net), Some(&ep.id));
        let (nid, eid) = (net.id.clone(), ep.id.clone());
        driver_call!(self, ctx, scope, None, "leave", |store|
            v2: |d| e2(d.call_leave(&mut store, &nid, &eid).await),
            v1: |d| e1(d.call_leave(&mut store, &nid, &eid).await))
        .0
    }

    async fn program_external_connectivity(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
        ports: &[PortMapping],
    ) -> Result<()> {
        if !self.loaded.rec.external_connectivity {
            return Ok(());
        }
        let scope = self.scope(Some(net), Some(&ep.id));
        let (nid, eid) = (net.id.clone(), ep.id.clone());
        let ports: Vec<wd::PortMapping> = ports.iter().map(wit_port).collect();
        driver_call!(self, ctx, scope, None, "program-external-connectivity", |store|
            v2: |d| e2(d.call_program_external_connectivity(&mut store, &nid, &eid, &ports).await),
            v1: |_d| Ok(Ok(())))
        .0
    }

    async fn revoke_external_connectivity(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
    ) -> Result<()> {
        if !self.loaded.rec.external_connectivity {
            return Ok(());
        }
        let scope = self.scope(Some(net), Some(&ep.id));
        let (nid, eid) = (net.id.clone(), ep.id.clone());
        driver_call!(self, ctx, scope, None, "revoke-external-connectivity", |store|
            v2: |d| e2(d.call_revoke_external_connectivity(&mut store, &nid, &eid).await),
            v1: |_d| Ok(Ok(())))
        .0
    }

    async fn discover_new(&self, ctx: &mut Ctx<'_>, peer: IpAddr) -> Result<()> {
        let scope = self.scope(None, None);
        let (p, p1) = (host::wit_ip(peer), crate::plugin::v01::wit_ip(peer));
        driver_call!(self, ctx, scope, None, "discover-new", |store|
            v2: |d| e2(d.call_discover_new(&mut store, p).await),
            v1: |d| e1(d.call_discover_new(&mut store, p1).await))
        .0
    }

    async fn discover_delete(&self, ctx: &mut Ctx<'_>, peer: IpAddr) -> Result<()> {
        let scope = self.scope(None, None);
        let (p, p1) = (host::wit_ip(peer), crate::plugin::v01::wit_ip(peer));
        driver_call!(self, ctx, scope, None, "discover-delete", |store|
            v2: |d| e2(d.call_discover_delete(&mut store, p).await),
            v1: |d| e1(d.call_discover_delete(&mut store, p1).await))
        .0
    }
}
