//! Endpoints: connect (addresses from IPAM, the driver's create-endpoint and join, the
//! interface in the sandbox, its addresses, routes and the default route) and disconnect
//! (the driver's leave and delete-endpoint, the undo log, the addresses back, the default
//! route handed over).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::gateway;
use super::network::{net_lock, NETWORKS};
use super::op::{Compensation, Intent, Locking, Op, Replay};
use super::records::{self, ep_key};
use super::Engine;
use crate::drivers::{Attachment, EndpointInfo, JoinLink, JoinTarget};
use crate::error::{Error, PluginErrorKind, Result};
use crate::ipam::{AddressRequest, Ipam};
use crate::model::*;
use crate::net::{NsRef, Step};
use crate::store::{StoreError, Table, WriteTxn};

pub(crate) fn sb_lock(id: &str) -> String {
    format!("sb:{id}")
}

/// An endpoint with nothing yet: no interface, no address. A host- or none-mode sandbox's
/// membership of that network stays like this; connect fills the rest in.
pub(crate) fn bare_endpoint(net: &Network, sb: &Sandbox) -> Endpoint {
    Endpoint {
        id: new_id(),
        network_id: net.id.clone(),
        sandbox_id: sb.id.clone(),
        name: sb.name.clone(),
        ifname: String::new(),
        mac: String::new(),
        ipv4: None,
        ipv6: None,
        pool_v4: None,
        pool_v6: None,
        gateway_v4: None,
        gateway_v6: None,
        gateway_onlink: false,
        requested_v4: None,
        requested_v6: None,
        aliases: vec![],
        links: vec![],
        driver_opts: BTreeMap::new(),
        gw_priority: 0,
        order: sb.next_order,
        default_route: false,
        host: None,
    }
}

pub(crate) fn endpoint_info(ep: &Endpoint) -> EndpointInfo {
    EndpointInfo {
        id: ep.id.clone(),
        mac: ep.mac.clone(),
        ipv4: ep.ipv4,
        ipv6: ep.ipv6,
        options: ep.driver_opts.clone(),
        context: endpoint_context(ep),
    }
}

pub(crate) fn endpoint_context(ep: &Endpoint) -> crate::drivers::EndpointContext {
    crate::drivers::EndpointContext {
        sandbox_id: ep.sandbox_id.clone(),
        sandbox_name: ep.name.clone(),
        hostname: None,
        labels: BTreeMap::new(),
    }
}

/// The default route: decided now (connect), or as recorded (repair).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultRoute {
    Decide,
    AsRecorded,
}

impl Engine {
    /// `network connect`.
    pub async fn connect(
        &self,
        network: &str,
        sandbox: &str,
        opts: ConnectOptions,
    ) -> Result<Endpoint> {
        let ep = self.connect_retrying(network, sandbox, opts).await?;
        self.refresh_sandbox_files(&ep.sandbox_id);
        if self.watched() {
            if let Ok(net) = self.network(&ep.network_id) {
                self.emit("connect", Some(&net), Some(&ep.sandbox_id));
            }
        }
        Ok(ep)
    }

    async fn connect_retrying(
        &self,
        network: &str,
        sandbox: &str,
        opts: ConnectOptions,
    ) -> Result<Endpoint> {
        self.retrying(|| {
            let opts = opts.clone();
            async move {
                let (net, sb) = {
                    let r = self.inner.store.read()?;
                    (
                        records::resolve_network(&*r, network)?,
                        records::resolve_sandbox(&*r, sandbox)?,
                    )
                };
                let realized = records::realized(&*self.inner.store.read()?, &net)?;
                let mut keys = vec![net_lock(&net.id), sb_lock(&sb.id)];
                if !realized {
                    keys.push(NETWORKS.into());
                }
                let ep_id = new_id();
                let mut op = self
                    .begin(
                        Intent::new(format!("connect {} to {}", sb.name, net.name), keys.clone())
                            .owned(ep_key(&net.id, &ep_id)),
                        Locking::Keys,
                    )
                    .await?;
                let r = async {
                    let mut net = records::load_network(op.r(), &net.id)?
                        .ok_or_else(|| Error::NetworkNotFound(network.to_string()))?;
                    let mut sb = records::load_sandbox(op.r(), &sb.id)?
                        .ok_or_else(|| Error::SandboxNotFound(sandbox.to_string()))?;
                    if !records::realized(op.r(), &net)? && !keys.iter().any(|k| k == NETWORKS) {
                        return Err(StoreError::Conflict.into());
                    }
                    let ep = self
                        .connect_in(&mut op, &mut net, &mut sb, opts, ep_id)
                        .await?;
                    self.repoint_ports(&mut op, &sb.id).await?;
                    Ok(ep)
                }
                .await;
                op.settle(r).await
            }
        })
        .await
    }

    /// The body of connect, inside an op holding the network's and the sandbox's locks.
    pub(crate) async fn connect_in(
        &self,
        op: &mut Op,
        net: &mut Network,
        sb: &mut Sandbox,
        opts: ConnectOptions,
        ep_id: String,
    ) -> Result<Endpoint> {
        match self.attachment(net)? {
            Attachment::HostNamespace => return Err(Error::ConnectToHost),
            Attachment::LoopbackOnly => return Err(Error::NoneMode),
            Attachment::Endpoints => {}
        }
        match sb.mode {
            NsMode::Host | NsMode::Container { .. } => return Err(Error::SharedNamespace),
            NsMode::None => return Err(Error::NoneMode),
            _ => {}
        }
        if records::endpoint_of(op.r(), &sb.id, &net.id)?.is_some() {
            return Err(Error::EndpointExists {
                sandbox: sb.name.clone(),
                network: net.name.clone(),
            });
        }
        check_endpoint_settings(net, &opts)?;
        if net.scope == Scope::Global {
            if let Some(c) = self.cluster() {
                if !c.connected() {
                    return Err(Error::Unavailable(c.unreachable()));
                }
            }
        }
        // Legacy links name sandboxes that exist (Docker's message otherwise).
        for l in &opts.links {
            let target = l.split(':').next().unwrap_or("");
            let Ok(t) = records::resolve_sandbox(op.r(), target) else {
                return Err(Error::NotFound(format!(
                    "could not get container for {target}: No such container: {target}"
                )));
            };
            // On the default bridge a link needs its target there too (dockerd's rule).
            if net.predefined
                && net.driver == "bridge"
                && records::endpoint_of(op.r(), &t.id, &net.id)?.is_none()
            {
                return Err(Error::invalid(format!(
                    "Cannot link to /{}, as it does not belong to the default network",
                    t.name
                )));
            }
        }

        // The predefined bridge's kernel objects appear on first use, and a global network's
        // on each host at its first endpoint there.
        if !records::realized(op.r(), net)? {
            self.realize_network(op, net).await?;
        }

        let ipam = self.ipam_of(net)?;
        let mut ep = Endpoint {
            id: ep_id,
            requested_v4: opts.ipv4,
            requested_v6: opts.ipv6,
            aliases: opts.aliases.clone(),
            links: opts.links.clone(),
            driver_opts: opts.driver_opts.clone(),
            gw_priority: opts.gw_priority,
            host: if net.scope == Scope::Global {
                self.endpoint_host()
            } else {
                None
            },
            ..bare_endpoint(net, sb)
        };
        if self.driver(&net.driver)?.capabilities().needs_ipam {
            for v6 in [false, true] {
                let pools: Vec<&Pool> = net.pools.iter().filter(|p| p.is_v6() == v6).collect();
                if pools.is_empty() {
                    continue;
                }
                let want = if v6 { opts.ipv6 } else { opts.ipv4 };
                let who = crate::drivers::EndpointContext {
                    hostname: sb.hostname.clone(),
                    ..endpoint_context(&ep)
                };
                let (addr, pool) =
                    allocate(&*ipam, op.w(), &pools, want, opts.mac.as_deref(), &who).await?;
                if ipam.name() != "default" {
                    op.on_abort(Compensation::Address {
                        ipam: ipam.clone(),
                        pool_id: pool.clone(),
                        addr: addr.ip(),
                    });
                }
                if ipam.name() != "default" {
                    check_address(&*ipam, op.r(), net, &pool, addr)?;
                }
                if v6 {
                    ep.ipv6 = Some(addr);
                    ep.pool_v6 = Some(pool);
                } else {
                    ep.ipv4 = Some(addr);
                    ep.pool_v4 = Some(pool);
                }
            }
        }
        ep.mac = match (&opts.mac, ep.ipv4) {
            (Some(m), _) => {
                if parse_mac(m).is_none() {
                    return Err(Error::InvalidEndpointSettings(format!(
                        "invalid MAC address: {m}"
                    )));
                }
                m.to_lowercase()
            }
            (None, Some(IpNetwork::V4(a))) => mac_from_ipv4(a.ip()),
            _ => random_mac(),
        };
        let siblings = records::sandbox_endpoints(op.r(), &sb.id)?;
        ep.ifname = self
            .next_ifname(op, sb, &siblings, opts.ifname.as_deref())
            .await?;
        self.realize_endpoint(op, net, sb, &mut ep, &siblings, DefaultRoute::Decide)
            .await?;
        sb.next_order += 1;
        records::save_endpoint(op.w(), &ep)?;
        records::save_sandbox(op.w(), sb)?;
        tracing::debug!(endpoint = %ep.id, network = %net.name, sandbox = %sb.name, "connected");
        Ok(ep)
    }

    /// Make an endpoint's kernel objects (its addresses are chosen already) and record them:
    /// the driver's create-endpoint and join, the move of the link into the sandbox, the
    /// addresses, the routes, and the default route.
    pub(crate) async fn realize_endpoint(
        &self,
        op: &mut Op,
        net: &Network,
        sb: &Sandbox,
        ep: &mut Endpoint,
        siblings: &[Endpoint],
        route: DefaultRoute,
    ) -> Result<()> {
        let driver = self.driver(&net.driver)?;
        let ns_ref = NsRef::Path(sb.key.clone());
        let mut info = endpoint_info(ep);
        let mark = op.tx().mark();
        driver
            .create_endpoint(&mut op.ctx(), net, &mut info)
            .await?;
        ep.mac = info.mac.clone();
        let links = super::links_of(op.r(), std::slice::from_ref(ep))?
            .into_iter()
            .map(|l| crate::drivers::LinkedPeer {
                ports: l.ports().into_iter().map(|(p, proto)| (proto, p)).collect(),
                endpoint_id: l.endpoint,
            })
            .collect();
        let target = JoinTarget {
            ns: ns_ref.clone(),
            ifname: ep.ifname.clone(),
            links,
        };
        let join = driver.join(&mut op.ctx(), net, &info, &target).await?;
        if let JoinLink::Move { name } = &join.link {
            if let Some(prefix) = join.ifname_prefix.as_deref().filter(|p| *p != "eth") {
                let used: HashSet<&str> = siblings
                    .iter()
                    .filter(|e| e.id != ep.id)
                    .map(|e| e.ifname.as_str())
                    .collect();
                ep.ifname = (0..)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|n| !used.contains(n.as_str()))
                    .unwrap();
            }
            op.tx()
                .apply(Step::MoveLink {
                    name: name.clone(),
                    to: ns_ref.clone(),
                    new_name: ep.ifname.clone(),
                    mtu: join.mtu,
                    mac: Some(ep.mac.clone()),
                })
                .await?;
        }
        for addr in [ep.ipv4, ep.ipv6].into_iter().flatten() {
            op.tx()
                .apply(Step::Address {
                    ns: ns_ref.clone(),
                    link: ep.ifname.clone(),
                    addr,
                })
                .await?;
        }
        for (dst, via) in &join.routes {
            op.tx()
                .apply(Step::Route {
                    ns: ns_ref.clone(),
                    dst: *dst,
                    via: *via,
                    dev: ep.ifname.clone(),
                    metric: None,
                    onlink: false,
                })
                .await?;
        }
        ep.gateway_v4 = join.gateway4;
        ep.gateway_v6 = join.gateway6;
        ep.gateway_onlink = join.gateway_onlink;
        // Routes of another endpoint this op removed; a rollback puts them back, but they are
        // not this endpoint's.
        let mut theirs = Vec::new();
        let take = match route {
            DefaultRoute::AsRecorded => ep.default_route && gateway::has_gateway(ep),
            DefaultRoute::Decide => {
                let holder = siblings.iter().find(|e| e.default_route && e.id != ep.id);
                let wins = gateway::wins(ep, holder);
                if let (true, Some(h)) = (wins, holder) {
                    // The old holder's default route goes, and out of its undo log.
                    for s in gateway::default_route_steps(h, &ns_ref) {
                        if let Some(inv) = s.inverse() {
                            theirs.push(s.clone());
                            op.tx().apply_undoable(inv, s).await?;
                        }
                    }
                    let mut h = h.clone();
                    h.default_route = false;
                    let key = ep_key(&h.network_id, &h.id);
                    let mut log = records::owned(op.r(), &key)?;
                    log.retain(|s| !gateway::is_default_route_inverse(s));
                    op.own(&key, log)?;
                    records::save_endpoint(op.w(), &h)?;
                }
                wins
            }
        };
        if take {
            for s in gateway::default_route_steps(ep, &ns_ref) {
                op.tx().apply(s).await?;
            }
            // The sandbox reaches the outside through this endpoint now.
            if driver.capabilities().external_connectivity {
                driver
                    .program_external_connectivity(&mut op.ctx(), net, &endpoint_info(ep), &[])
                    .await?;
            }
        }
        ep.default_route = take;
        let mut steps = op.tx().undo_since(mark);
        steps.retain(|s| !theirs.contains(s));
        op.own(&ep_key(&net.id, &ep.id), steps)
    }

    async fn next_ifname(
        &self,
        op: &mut Op,
        sb: &Sandbox,
        siblings: &[Endpoint],
        want: Option<&str>,
    ) -> Result<String> {
        let mut used: HashSet<String> = siblings.iter().map(|e| e.ifname.clone()).collect();
        if sb.mode == NsMode::External {
            // Someone else's namespace may have links of its own.
            let ns = NsRef::Path(sb.key.clone());
            used.extend(op.tx().links(&ns).await?.into_iter().map(|l| l.name));
        }
        if let Some(want) = want {
            if !crate::net::link::valid_ifname(want) {
                return Err(Error::InvalidEndpointSettings(format!(
                    "invalid interface name {want:?}: 1 to 15 letters, digits, '-', '_' or '.'"
                )));
            }
            if used.contains(want) {
                return Err(Error::InvalidEndpointSettings(format!(
                    "the sandbox already has an interface named {want}"
                )));
            }
            return Ok(want.to_string());
        }
        Ok((0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(n))
            .unwrap())
    }

    /// `network disconnect`.
    pub async fn disconnect(&self, network: &str, sandbox: &str, force: bool) -> Result<()> {
        let net = self.watched().then(|| self.network(network).ok()).flatten();
        let sb = self.sandbox(sandbox).map(|s| s.id).ok();
        let r = self.disconnect_retrying(network, sandbox, force).await;
        // The veth it left for later, now that its locks are free (or by the reaper).
        self.reap_soon().await;
        r?;
        if let Some(id) = &sb {
            self.refresh_sandbox_files(id);
        }
        if !self.watched() {
            return Ok(());
        }
        self.emit(
            "disconnect",
            net.as_ref(),
            Some(sb.as_deref().unwrap_or(sandbox)),
        );
        Ok(())
    }

    async fn disconnect_retrying(&self, network: &str, sandbox: &str, force: bool) -> Result<()> {
        self.retrying(|| async move {
            let (net, ep) = {
                let r = self.inner.store.read()?;
                let net = records::resolve_network(&*r, network)?;
                let sb_id = match records::resolve_sandbox(&*r, sandbox) {
                    Ok(sb) => sb.id,
                    Err(Error::SandboxNotFound(_)) if force => {
                        // dockerd: with force and an unknown container, delete the endpoint
                        // by name.
                        records::network_endpoints(&*r, &net.id)?
                            .into_iter()
                            .find(|e| e.name == sandbox)
                            .ok_or_else(|| Error::SandboxNotFound(sandbox.to_string()))?
                            .sandbox_id
                    }
                    Err(e) => return Err(e),
                };
                match self.attachment(&net)? {
                    Attachment::HostNamespace => return Err(Error::DisconnectFromHost),
                    Attachment::LoopbackOnly => return Err(Error::DisconnectFromNone),
                    Attachment::Endpoints => {}
                }
                let Some(ep) = records::endpoint_of(&*r, &sb_id, &net.id)? else {
                    return Err(Error::NotConnected {
                        sandbox_id: sb_id,
                        network: net.name.clone(),
                    });
                };
                (net, ep)
            };
            let mut op = self
                .begin(
                    Intent::new(
                        format!("disconnect {} from {}", ep.name, net.name),
                        vec![net_lock(&net.id), sb_lock(&ep.sandbox_id)],
                    )
                    .removes(
                        Table::SandboxEndpoints,
                        vec![format!("{}/{}", ep.sandbox_id, net.id)],
                        Replay::Disconnect {
                            network: net.id.clone(),
                            sandbox: ep.sandbox_id.clone(),
                        },
                    ),
                    Locking::Keys,
                )
                .await?;
            let r = self
                .disconnect_in(&mut op, &net.id, &ep.sandbox_id, force)
                .await;
            op.settle(r).await
        })
        .await
    }

    /// The body of disconnect. `force`: the driver's and IPAM's refusals are logged, not fatal.
    pub(crate) async fn disconnect_in(
        &self,
        op: &mut Op,
        net_id: &str,
        sb_id: &str,
        force: bool,
    ) -> Result<()> {
        let net = records::load_network(op.r(), net_id)?
            .ok_or_else(|| Error::NetworkNotFound(net_id.to_string()))?;
        let Some(ep) = records::endpoint_of(op.r(), sb_id, net_id)? else {
            return Err(Error::NotConnected {
                sandbox_id: sb_id.to_string(),
                network: net.name.clone(),
            });
        };
        self.endpoint_hooks(op, &net, &ep, force).await?;
        self.release_endpoint(op, &net, &ep, force).await?;
        let log = records::owned(op.r(), &ep_key(&net.id, &ep.id))?;
        // The veth's sandbox end is parked (down, renamed: its name is free at once), its host
        // end taken down, and the pair deleted later, off the caller's path (see `reap_links`).
        let (errors, later) = op.tx().teardown_deferring(&[(&log, None)]).await;
        op.teardown_result(
            errors,
            force,
            &format!("disconnect {} from {}", ep.name, net.name),
        )?;
        if !later.is_empty() {
            let key = super::reap::gone_key(&op.id);
            op.own(&key, later)?;
        }
        records::delete_endpoint(op.w(), &ep)?;
        if ep.default_route {
            if let Some(sb) = records::load_sandbox(op.r(), sb_id)? {
                self.hand_over_default_route(op, &sb).await?;
            }
        }
        self.repoint_ports(op, sb_id).await
    }

    /// The sandbox lost its default route: the next endpoint in line takes it. A failure is
    /// logged (the sandbox stays without a default route; `system check` does not flag it:
    /// the records say so too).
    async fn hand_over_default_route(&self, op: &mut Op, sb: &Sandbox) -> Result<()> {
        let rest = records::sandbox_endpoints(op.r(), &sb.id)?;
        let Some(next) = gateway::successor(&rest) else {
            return Ok(());
        };
        let mut n = next.clone();
        let ns = NsRef::Path(sb.key.clone());
        let mark = op.tx().mark();
        let mut failed = None;
        for s in gateway::default_route_steps(&n, &ns) {
            if let Err(e) = op.tx().apply_idempotent(s).await {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            tracing::warn!(sandbox = %sb.name, "the default route could not move to {}: {e}", n.ifname);
            let extra = op.tx().undo_since(mark);
            for e in op.tx().teardown(&extra, None).await {
                tracing::warn!("{e}");
            }
            return Ok(());
        }
        let key = ep_key(&n.network_id, &n.id);
        let mut log = records::owned(op.r(), &key)?;
        log.extend(op.tx().undo_since(mark));
        op.own(&key, log)?;
        n.default_route = true;
        records::save_endpoint(op.w(), &n)
    }

    /// The driver's leave and delete-endpoint calls. What they add to the kernel does not
    /// outlive the operation.
    pub(crate) async fn endpoint_hooks(
        &self,
        op: &mut Op,
        net: &Network,
        ep: &Endpoint,
        force: bool,
    ) -> Result<()> {
        let driver = self.driver(&net.driver)?;
        let info = endpoint_info(ep);
        let mark = op.tx().mark();
        let revoke = if ep.default_route && driver.capabilities().external_connectivity {
            driver
                .revoke_external_connectivity(&mut op.ctx(), net, &info)
                .await
        } else {
            Ok(())
        };
        let r = match revoke {
            Ok(()) => match driver.leave(&mut op.ctx(), net, &info).await {
                Ok(()) => driver.delete_endpoint(&mut op.ctx(), net, &info).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            if !force {
                return Err(e);
            }
            op.warn(format!("{} left {} although {e}", ep.name, net.name));
        }
        self.drop_transient(op, mark).await;
        Ok(())
    }

    /// Give back an endpoint's addresses.
    pub(crate) async fn release_endpoint(
        &self,
        op: &mut Op,
        net: &Network,
        ep: &Endpoint,
        force: bool,
    ) -> Result<()> {
        let ipam = self.ipam_of(net)?;
        for (p, a) in [(&ep.pool_v4, ep.ipv4), (&ep.pool_v6, ep.ipv6)] {
            if let (Some(p), Some(a)) = (p, a) {
                if let Err(e) = ipam.release_address(op.w(), p, a.ip()).await {
                    if !force {
                        return Err(e);
                    }
                    op.warn(format!("{} released {a} although {e}", ep.name));
                }
            }
        }
        Ok(())
    }
}

/// Ask IPAM for an address: the one wanted, or the first free one in the pools (a full pool
/// falls through to the next, native or plugin alike).
pub(crate) async fn allocate(
    ipam: &dyn Ipam,
    w: &mut dyn WriteTxn,
    pools: &[&Pool],
    want: Option<IpAddr>,
    mac: Option<&str>,
    who: &crate::drivers::EndpointContext,
) -> Result<(IpNetwork, String)> {
    let mut options = BTreeMap::new();
    if ipam.capabilities().requires_mac_address {
        if let Some(m) = mac {
            options.insert(
                "com.docker.network.endpoint.macaddress".to_string(),
                m.to_string(),
            );
        }
    }
    if let Some(ip) = want {
        let pool = pools
            .iter()
            .find(|p| p.subnet.contains(ip))
            .ok_or_else(|| {
                Error::InvalidEndpointSettings(format!(
                    "no configured subnet or ip-range contain the IP address {ip}"
                ))
            })?;
        let a = ipam
            .request_address(
                w,
                &AddressRequest {
                    pool_id: pool.pool_id.clone(),
                    preferred: Some(ip),
                    options,
                    context: Some(who.clone()),
                },
            )
            .await?;
        return Ok((a, pool.pool_id.clone()));
    }
    for p in pools {
        match ipam
            .request_address(
                w,
                &AddressRequest {
                    pool_id: p.pool_id.clone(),
                    preferred: None,
                    options: options.clone(),
                    context: Some(who.clone()),
                },
            )
            .await
        {
            Ok(a) => {
                if !p.subnet.contains(a.ip()) {
                    return Err(Error::Plugin {
                        plugin: ipam.name().to_string(),
                        kind: PluginErrorKind::BadReturn,
                        message: format!("returned address {a} outside the pool {}", p.subnet),
                    });
                }
                return Ok((a, p.pool_id.clone()));
            }
            Err(e) if is_exhausted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::PoolExhausted)
}

/// A full pool, whoever says so.
fn is_exhausted(e: &Error) -> bool {
    matches!(
        e,
        Error::PoolExhausted
            | Error::Plugin {
                kind: PluginErrorKind::Exhausted,
                ..
            }
    )
}

pub(crate) fn check_endpoint_settings(net: &Network, opts: &ConnectOptions) -> Result<()> {
    if net.predefined {
        if opts.ipv4.is_some() || opts.ipv6.is_some() {
            return Err(Error::InvalidEndpointSettings(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        if !opts.aliases.is_empty() {
            return Err(Error::InvalidEndpointSettings(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
    }
    for (ip, v6) in [(opts.ipv4, false), (opts.ipv6, true)] {
        let Some(ip) = ip else { continue };
        if ip.is_ipv6() != v6 {
            return Err(Error::InvalidEndpointSettings(format!(
                "{ip} is not an IPv{} address",
                if v6 { 6 } else { 4 }
            )));
        }
        if !net.has_user_subnet(v6) {
            return Err(Error::InvalidEndpointSettings(
                "user specified IP address is supported only when connecting to networks with user configured subnets"
                    .into(),
            ));
        }
        if !net.pools.iter().any(|p| p.subnet.contains(ip)) {
            return Err(Error::InvalidEndpointSettings(format!(
                "no configured subnet or ip-range contain the IP address {ip}"
            )));
        }
    }
    Ok(())
}

/// What a plugin IPAM answered to request-address must be an address an endpoint can have:
/// the pool's prefix length, not the network or broadcast address, not the gateway, an aux
/// address or another endpoint's.
fn check_address(
    ipam: &dyn Ipam,
    r: &dyn crate::store::ReadTxn,
    net: &Network,
    pool_id: &str,
    a: IpNetwork,
) -> Result<()> {
    let bad = |m: String| Error::Plugin {
        plugin: ipam.name().to_string(),
        kind: PluginErrorKind::BadReturn,
        message: format!("request-address returned {a}, {m}"),
    };
    let Some(pool) = net.pools.iter().find(|p| p.pool_id == pool_id) else {
        return Err(bad("for a pool this network does not have".into()));
    };
    if a.prefix() != pool.subnet.prefix() {
        return Err(bad(format!(
            "whose prefix length is not the pool's (/{})",
            pool.subnet.prefix()
        )));
    }
    if let IpNetwork::V4(n) = pool.subnet {
        if n.prefix() < 31
            && (a.ip() == IpAddr::V4(n.network()) || a.ip() == IpAddr::V4(n.broadcast()))
        {
            return Err(bad(format!(
                "which is the network or broadcast address of {n}"
            )));
        }
    }
    if pool.gateway == Some(a.ip()) || pool.aux_addresses.values().any(|x| *x == a.ip()) {
        return Err(bad(
            "which is the network's gateway or an aux address".into()
        ));
    }
    if let Some(other) = records::network_endpoints(r, &net.id)?
        .into_iter()
        .find(|e| e.ipv4.map(|x| x.ip()) == Some(a.ip()) || e.ipv6.map(|x| x.ip()) == Some(a.ip()))
    {
        return Err(bad(format!("which {} holds already", other.name)));
    }
    Ok(())
}
