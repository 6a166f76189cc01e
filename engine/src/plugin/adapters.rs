//! Components as drivers and IPAM: [`PluginDriver`] implements [`NetworkDriver`] and
//! [`PluginIpam`] implements [`Ipam`], exactly like the native ones. Each call instantiates
//! the component afresh with the plugin's limits, lends it the operation's transactions,
//! maps traps and WIT errors to [`Error::Plugin`] (naming the plugin and the reason), and
//! checks what the plugin returned before the engine uses it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use wasmtime::component::Component;
use wasmtime::Store;

use super::bindings::driver::exports::weft::plugin::network_driver as wd;
use super::bindings::driver::weft::plugin::types::{Error as WitError, Scope as WitScope};
use super::bindings::ipam::exports::weft::plugin::ipam as wi;
use super::bindings::{driver, ipam};
use super::host::{self, HostState};
use super::lend::{self, Lent};
use super::runtime::{wt, Runtime};
use super::{Asked, Kind, PluginRecord};
use crate::drivers::{
    Attachment, Ctx, DriverCapabilities, EndpointInfo, JoinInfo, JoinLink, JoinTarget,
    NetworkDriver,
};
use crate::error::{Error, PluginErrorKind, Result};
use crate::ipam::{AddressRequest, Ipam, IpamCapabilities, PoolGrant, PoolRequest};
use crate::model::{Network, Scope};
use crate::net::NsRef;
use crate::store::WriteTxn;

/// Deadline for the install-time calls (metadata, capabilities).
const DESCRIBE_MS: u64 = 2000;

fn opts(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn new_store(rt: &Runtime, rec: &Arc<PluginRecord>, state: HostState) -> Result<Store<HostState>> {
    let mut store = Store::new(&rt.engine, state);
    store.limiter(|s| &mut s.limits);
    store
        .set_fuel(rec.grants.fuel.unwrap_or(u64::MAX))
        .map_err(wt)?;
    // At every epoch tick the guest yields to the async executor (a plugin that computes for
    // its whole deadline does not hold a runtime thread that long), and past its deadline it
    // is stopped.
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(rec.grants.deadline_ms);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if std::time::Instant::now() >= deadline {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            wasmtime::UpdateDeadline::Yield(1)
        })
    });
    Ok(store)
}

/// How long the host waits for a call in all, host calls included (a guest blocked in a host
/// call — a WASI clock, a kernel round trip — is not interrupted by the epoch).
fn host_limit(rec: &PluginRecord) -> std::time::Duration {
    std::time::Duration::from_millis(rec.grants.deadline_ms + 250)
}

fn plugin_err(plugin: &str, kind: PluginErrorKind, message: impl Into<String>) -> Error {
    Error::Plugin {
        plugin: plugin.to_string(),
        kind,
        message: message.into(),
    }
}

/// A WIT error from the plugin.
fn wit_err(plugin: &str, e: WitError) -> Error {
    let (kind, m) = match e {
        WitError::InvalidArgument(m) => (PluginErrorKind::InvalidArgument, m),
        WitError::NotFound(m) => (PluginErrorKind::NotFound, m),
        WitError::Conflict(m) => (PluginErrorKind::Conflict, m),
        WitError::Exhausted(m) => (PluginErrorKind::Exhausted, m),
        WitError::Unsupported(m) => (PluginErrorKind::Unsupported, m),
        WitError::Denied(m) => (PluginErrorKind::Denied, format!("denied: {m}")),
        WitError::Internal(m) => (PluginErrorKind::Internal, m),
    };
    plugin_err(plugin, kind, m)
}

/// A trap (or any failure of the call machinery), in words. `memory_denied`: the instance
/// hit its memory ceiling (the limiter says so).
fn trap_err(
    rec: &PluginRecord,
    call: &str,
    e: wasmtime::Error,
    stderr: &[u8],
    memory_denied: bool,
) -> Error {
    use wasmtime::Trap;
    // A Rust panic prints "thread … panicked at FILE:LINE:COL:" then the message.
    let text = String::from_utf8_lossy(stderr);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next();
    let detail = match first {
        Some(l) if l.contains("panicked at") => {
            lines.next().map(|m| format!(" ({m})")).unwrap_or_default()
        }
        Some(l) => format!(" ({l})"),
        None => String::new(),
    };
    let text = format!("{e:#}");
    let message = match e.downcast_ref::<Trap>() {
        _ if memory_denied => format!(
            "{call} tried to use more than its {} MiB of memory and was stopped",
            rec.grants.memory_bytes >> 20
        ),
        Some(Trap::Interrupt) => format!(
            "{call} ran past its deadline of {} ms and was stopped",
            rec.grants.deadline_ms
        ),
        Some(Trap::OutOfFuel) => format!(
            "{call} ran out of fuel ({} units)",
            rec.grants.fuel.unwrap_or(0)
        ),
        Some(Trap::UnreachableCodeReached) => {
            format!("{call} trapped: it panicked or hit unreachable code{detail}")
        }
        Some(t) => format!("{call} trapped: {t}{detail}"),
        None => format!("{call} failed: {text}{detail}"),
    };
    plugin_err(&rec.name, PluginErrorKind::Trapped, message)
}

/// Settle one call: the plugin's answer, its WIT error, or its trap.
fn settle<T>(
    rec: &PluginRecord,
    call: &str,
    store: &Store<HostState>,
    r: wasmtime::Result<Result<T, WitError>>,
) -> Result<T> {
    let stderr = store.data().stderr.contents();
    if !stderr.is_empty() {
        tracing::info!(plugin = %rec.name, "{call} wrote to stderr: {}", String::from_utf8_lossy(&stderr).trim());
    }
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(wit_err(&rec.name, e)),
        Err(e) => Err(trap_err(rec, call, e, &stderr, store.data().limits.denied)),
    }
}

fn bad_return(rec: &PluginRecord, message: String) -> Error {
    plugin_err(&rec.name, PluginErrorKind::BadReturn, message)
}

/// (version, description, grants asked) from either world's `plugin-metadata` (the two worlds
/// generate the same record as two Rust types).
macro_rules! metadata {
    ($m:expr) => {{
        let m = $m;
        (
            m.version,
            m.description,
            Asked {
                link_prefix: m.grants.link_prefix,
                parents: m.grants.parents,
                sysctls: m.grants.sysctls,
                http_hosts: m.grants.http_hosts,
                memory_mib: m.grants.memory_mib,
            },
        )
    }};
}

/// Install time: metadata and capabilities, with no transactions lent (no kv, no host-net).
pub async fn describe(rt: &Runtime, c: &Component, rec: &mut PluginRecord) -> Result<()> {
    let mut probe = rec.clone();
    probe.grants.deadline_ms = DESCRIBE_MS;
    let probe = Arc::new(probe);
    let state = || HostState::new(probe.clone(), Lent::none(), Lent::none(), vec![]);
    let meta = match rec.kind {
        Kind::Driver => {
            let pre = rt
                .driver_linker
                .instantiate_pre(c)
                .map_err(|e| link_err(rt, c, &probe, e))?;
            let pre = driver::DriverPluginPre::new(pre).map_err(wt)?;
            let mut store = new_store(rt, &probe, state())?;
            let inst = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap_err(&probe, "instantiate", e, &[], false))?;
            let meta = inst.weft_plugin_plugin().call_metadata(&mut store).await;
            let m = settle(&probe, "metadata", &store, meta.map(Ok))?;
            let meta = metadata!(m);
            let caps = inst
                .weft_plugin_network_driver()
                .call_capabilities(&mut store)
                .await;
            let caps = settle(&probe, "capabilities", &store, caps.map(Ok))?;
            rec.scope = match caps.scope {
                WitScope::Local => Scope::Local,
                WitScope::Global => Scope::Global,
            };
            meta
        }
        Kind::Ipam => {
            let pre = rt
                .ipam_linker
                .instantiate_pre(c)
                .map_err(|e| link_err(rt, c, &probe, e))?;
            let pre = ipam::IpamPluginPre::new(pre).map_err(wt)?;
            let mut store = new_store(rt, &probe, state())?;
            let inst = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap_err(&probe, "instantiate", e, &[], false))?;
            let meta = inst.weft_plugin_plugin().call_metadata(&mut store).await;
            let m = settle(&probe, "metadata", &store, meta.map(Ok))?;
            let meta = metadata!(m);
            let caps = inst.weft_plugin_ipam().call_capabilities(&mut store).await;
            let caps = settle(&probe, "capabilities", &store, caps.map(Ok))?;
            rec.requires_mac = caps.requires_mac_address;
            meta
        }
    };
    (rec.version, rec.description, rec.asked) = meta;
    Ok(())
}

/// Explain a component the linker cannot satisfy (usually an import weft does not provide).
fn link_err(rt: &Runtime, c: &Component, rec: &PluginRecord, e: wasmtime::Error) -> Error {
    let unknown: Vec<String> = rt
        .imports_of(c)
        .into_iter()
        .filter(|i| !i.starts_with("weft:plugin/") && !i.starts_with("wasi:"))
        .collect();
    let http: Vec<String> = rt
        .imports_of(c)
        .into_iter()
        .filter(|i| i.starts_with("wasi:http/"))
        .collect();
    let why = if !unknown.is_empty() {
        format!(
            "it imports {} , which weft does not provide",
            unknown.join(", ")
        )
    } else if !http.is_empty() {
        format!(
            "it imports {}: outbound HTTP for plugins is not available in this engine build yet",
            http.join(", ")
        )
    } else {
        format!("{e:#}")
    };
    plugin_err(
        &rec.name,
        PluginErrorKind::Internal,
        format!("cannot be linked: {why}"),
    )
}

/// The engine-facing subnets of a network (where a driver may route and address).
fn scope_of(net: &Network) -> Vec<IpNetwork> {
    net.pools.iter().map(|p| p.subnet).collect()
}

/// A plugin's compiled component, linked once (an `InstancePre`) and kept for every call.
struct Loaded<P> {
    host: Arc<super::PluginHost>,
    rec: Arc<PluginRecord>,
    pre: Mutex<Option<P>>,
}

impl<P: Clone> Loaded<P> {
    fn new(host: Arc<super::PluginHost>, rec: PluginRecord) -> Self {
        Loaded {
            host,
            rec: Arc::new(rec),
            pre: Mutex::new(None),
        }
    }

    /// The runtime and the pre-linked component, loading it (from the compile cache) on
    /// first use. `link` makes the typed pre from the component.
    async fn get(
        &self,
        link: impl FnOnce(&Runtime, &Component) -> Result<P>,
    ) -> Result<(Arc<Runtime>, P)> {
        let rt = self.host.runtime()?;
        if let Some(p) = self.pre.lock().unwrap().as_ref() {
            return Ok((rt, p.clone()));
        }
        let bytes = std::fs::read(&self.rec.file).map_err(|e| {
            plugin_err(
                &self.rec.name,
                PluginErrorKind::Internal,
                format!("cannot read {}: {e}", self.rec.file.display()),
            )
        })?;
        // Loading (or, without a cached compile, compiling) is blocking work.
        let c = {
            let (rt, sha) = (rt.clone(), self.rec.sha256.clone());
            tokio::task::spawn_blocking(move || rt.load(&bytes, &sha))
                .await
                .map_err(|e| Error::internal(format!("load plugin: {e}")))??
        };
        let pre = link(&rt, &c)?;
        *self.pre.lock().unwrap() = Some(pre.clone());
        Ok((rt, pre))
    }
}

// ======================================================================== drivers

/// A driver component as a [`NetworkDriver`].
pub struct PluginDriver {
    loaded: Loaded<driver::DriverPluginPre<HostState>>,
}

impl PluginDriver {
    pub fn new(host: Arc<super::PluginHost>, rec: PluginRecord) -> Self {
        PluginDriver {
            loaded: Loaded::new(host, rec),
        }
    }

    async fn loaded(&self) -> Result<(Arc<Runtime>, driver::DriverPluginPre<HostState>)> {
        let rec = &self.loaded.rec;
        self.loaded
            .get(|rt, c| {
                let pre = rt
                    .driver_linker
                    .instantiate_pre(c)
                    .map_err(|e| link_err(rt, c, rec, e))?;
                driver::DriverPluginPre::new(pre).map_err(wt)
            })
            .await
    }

    /// A store for one call, with the operation's transactions lent to it.
    ///
    /// SAFETY (of the lending inside): the returned store must be dropped before `ctx`'s
    /// borrows end; every caller keeps it a local of the method that holds `ctx`.
    fn store(
        &self,
        rt: &Runtime,
        ctx: &mut Ctx<'_>,
        scope: Vec<IpNetwork>,
    ) -> Result<Store<HostState>> {
        let tx = unsafe { lend::tx(ctx.tx) };
        let kv = unsafe { lend::store(ctx.store) };
        new_store(
            rt,
            &self.loaded.rec,
            HostState::new(self.loaded.rec.clone(), tx, kv, scope),
        )
    }
}

macro_rules! driver_call {
    ($self:ident, $ctx:ident, $scope:expr, $call:literal, |$inst:ident, $store:ident| $body:expr) => {{
        driver_call!($self, $ctx, $scope, None, $call, |$inst, $store| $body).0
    }};
    ($self:ident, $ctx:ident, $scope:expr, $join:expr, $call:literal, |$inst:ident, $store:ident| $body:expr) => {{
        let started = std::time::Instant::now();
        let (rt, pre) = $self.loaded().await?;
        let mut $store = $self.store(&rt, $ctx, $scope)?;
        $store.data_mut().join = $join;
        let limit = host_limit(&$self.loaded.rec);
        let r = match tokio::time::timeout(limit, async {
            match pre.instantiate_async(&mut $store).await {
                Ok($inst) => {
                    let $inst = $inst.weft_plugin_network_driver();
                    $body
                }
                Err(e) => Err(e),
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

fn wit_endpoint(net: &Network, ep: &EndpointInfo) -> wd::Endpoint {
    wd::Endpoint {
        network_id: net.id.clone(),
        id: ep.id.clone(),
        ipv4: ep.ipv4.map(host::wit_prefix),
        ipv6: ep.ipv6.map(host::wit_prefix),
        mac: parse_mac(&ep.mac),
        options: opts(&ep.options),
    }
}

fn parse_mac(m: &str) -> (u8, u8, u8, u8, u8, u8) {
    let b = crate::model::parse_mac(m).unwrap_or([2, 0x42, 0, 0, 0, 0]);
    (b[0], b[1], b[2], b[3], b[4], b[5])
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
        }
    }

    async fn create_network(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> Result<()> {
        let n = wit_network(net);
        driver_call!(self, ctx, scope_of(net), "create-network", |d, store| d
            .call_create_network(&mut store, &n)
            .await)
    }

    async fn delete_network(&self, ctx: &mut Ctx<'_>, net: &Network) -> Result<()> {
        let id = net.id.clone();
        driver_call!(self, ctx, scope_of(net), "delete-network", |d, store| d
            .call_delete_network(&mut store, &id)
            .await)
    }

    async fn create_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &mut EndpointInfo,
    ) -> Result<()> {
        let e = wit_endpoint(net, ep);
        let info = driver_call!(self, ctx, scope_of(net), "create-endpoint", |d, store| d
            .call_create_endpoint(&mut store, &e)
            .await)?;
        if let Some(m) = info.mac {
            if m.0 & 1 == 1 || m == (0, 0, 0, 0, 0, 0) {
                return Err(bad_return(
                    &self.loaded.rec,
                    format!(
                        "create-endpoint returned MAC {}, which is not a unicast address",
                        host::mac(&m)
                    ),
                ));
            }
            ep.mac = host::mac(&m);
        }
        Ok(())
    }

    async fn delete_endpoint(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
    ) -> Result<()> {
        let (nid, eid) = (net.id.clone(), ep.id.clone());
        driver_call!(self, ctx, scope_of(net), "delete-endpoint", |d, store| d
            .call_delete_endpoint(&mut store, &nid, &eid)
            .await)
    }

    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
        target: &JoinTarget,
    ) -> Result<JoinInfo> {
        let e = wit_endpoint(net, ep);
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
        let (j, placed) = driver_call!(self, ctx, scope_of(net), Some(jc), "join", |d, store| d
            .call_join(&mut store, &e, &key)
            .await);
        let j = j?;
        // The host end of a create-sandbox-veth pair: its other end is in the sandbox already.
        let placed = placed.is_some_and(|p| p == j.link);
        // Check everything before the engine acts on it.
        if !self.loaded.rec.grants.owns_link(&j.link) {
            return Err(bad_return(
                &self.loaded.rec,
                format!(
                    "join returned link {:?}, which is not one of its own",
                    j.link
                ),
            ));
        }
        if !placed && ctx.tx.link(&NsRef::Host, &j.link).await?.is_none() {
            return Err(bad_return(
                &self.loaded.rec,
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
                &self.loaded.rec,
                format!(
                    "join returned interface prefix {:?}: use 1–8 of a-z, 0-9",
                    j.ifname_prefix
                ),
            ));
        }
        if j.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
            return Err(bad_return(
                &self.loaded.rec,
                format!("join returned MTU {:?}", j.mtu),
            ));
        }
        let gw4 = j.gateway4.map(|(a, b, c, d)| IpAddr::from([a, b, c, d]));
        let gw6 = j
            .gateway6
            .map(|(a, b, c, d, e, f, g, h)| IpAddr::from([a, b, c, d, e, f, g, h]));
        for (gw, addr) in [(gw4, ep.ipv4), (gw6, ep.ipv6)] {
            let Some(gw) = gw else { continue };
            if gw.is_unspecified() || gw.is_multicast() || gw.is_loopback() {
                return Err(bad_return(
                    &self.loaded.rec,
                    format!("join returned gateway {gw}, which is not a unicast address"),
                ));
            }
            let on_subnet = addr.is_some_and(|a| a.contains(gw));
            if !on_subnet && !j.gateway_onlink {
                return Err(bad_return(
                    &self.loaded.rec,
                    format!("join returned gateway {gw} outside the endpoint's subnet without gateway-onlink"),
                ));
            }
        }
        let mut routes = Vec::new();
        for r in &j.routes {
            let dst =
                host::prefix(&r.destination).map_err(|e| wit_err(&self.loaded.rec.name, e))?;
            let via = r.next_hop.as_ref().map(host::ip);
            if via.is_some_and(|v| v.is_ipv4() != dst.is_ipv4()) {
                return Err(bad_return(
                    &self.loaded.rec,
                    format!("join returned route {dst} with a next hop of another family"),
                ));
            }
            routes.push((IpNetwork::new(dst.network(), dst.prefix()).unwrap(), via));
        }
        Ok(JoinInfo {
            link: if placed {
                JoinLink::Placed
            } else {
                JoinLink::Move { name: j.link }
            },
            ifname_prefix: if placed { None } else { Some(j.ifname_prefix) },
            gateway4: gw4,
            gateway6: gw6,
            routes,
            mtu: j.mtu,
            gateway_onlink: j.gateway_onlink,
        })
    }

    async fn leave(&self, ctx: &mut Ctx<'_>, net: &Network, ep: &EndpointInfo) -> Result<()> {
        let (nid, eid) = (net.id.clone(), ep.id.clone());
        driver_call!(self, ctx, scope_of(net), "leave", |d, store| d
            .call_leave(&mut store, &nid, &eid)
            .await)
    }

    async fn discover_new(&self, ctx: &mut Ctx<'_>, peer: IpAddr) -> Result<()> {
        let p = host::wit_ip(peer);
        driver_call!(self, ctx, vec![], "discover-new", |d, store| d
            .call_discover_new(&mut store, p)
            .await)
    }

    async fn discover_delete(&self, ctx: &mut Ctx<'_>, peer: IpAddr) -> Result<()> {
        let p = host::wit_ip(peer);
        driver_call!(self, ctx, vec![], "discover-delete", |d, store| d
            .call_discover_delete(&mut store, p)
            .await)
    }
}

// =========================================================================== IPAM

/// An IPAM component as an [`Ipam`].
pub struct PluginIpam {
    loaded: Loaded<ipam::IpamPluginPre<HostState>>,
}

impl PluginIpam {
    pub fn new(host: Arc<super::PluginHost>, rec: PluginRecord) -> Self {
        PluginIpam {
            loaded: Loaded::new(host, rec),
        }
    }

    async fn loaded(&self) -> Result<(Arc<Runtime>, ipam::IpamPluginPre<HostState>)> {
        let rec = &self.loaded.rec;
        self.loaded
            .get(|rt, c| {
                let pre = rt
                    .ipam_linker
                    .instantiate_pre(c)
                    .map_err(|e| link_err(rt, c, rec, e))?;
                ipam::IpamPluginPre::new(pre).map_err(wt)
            })
            .await
    }

    /// SAFETY (of the lending inside): as for [`PluginDriver::store`].
    fn store(&self, rt: &Runtime, txn: &mut dyn WriteTxn) -> Result<Store<HostState>> {
        let kv = unsafe { lend::store(txn) };
        new_store(
            rt,
            &self.loaded.rec,
            HostState::new(self.loaded.rec.clone(), Lent::none(), kv, vec![]),
        )
    }
}

macro_rules! ipam_call {
    ($self:ident, $txn:ident, $call:literal, |$inst:ident, $store:ident| $body:expr) => {{
        let (rt, pre) = $self.loaded().await?;
        let mut $store = $self.store(&rt, $txn)?;
        let limit = host_limit(&$self.loaded.rec);
        let r = match tokio::time::timeout(limit, async {
            match pre.instantiate_async(&mut $store).await {
                Ok($inst) => {
                    let $inst = $inst.weft_plugin_ipam();
                    $body
                }
                Err(e) => Err(e),
            }
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(wasmtime::Trap::Interrupt.into()),
        };
        let out = settle(&$self.loaded.rec, $call, &$store, r);
        drop($store);
        out
    }};
}

#[async_trait]
impl Ipam for PluginIpam {
    fn name(&self) -> &str {
        &self.loaded.rec.name
    }

    fn capabilities(&self) -> IpamCapabilities {
        IpamCapabilities {
            requires_mac_address: self.loaded.rec.requires_mac,
        }
    }

    async fn request_pool(&self, txn: &mut dyn WriteTxn, req: &PoolRequest) -> Result<PoolGrant> {
        let r = wi::PoolRequest {
            address_space: req.address_space.clone(),
            pool: req.pool.map(host::wit_prefix),
            sub_pool: req.sub_pool.map(host::wit_prefix),
            options: opts(&req.options),
            v6: req.v6,
        };
        let g = ipam_call!(self, txn, "request-pool", |i, store| i
            .call_request_pool(&mut store, &r)
            .await)?;
        let pool = host::prefix(&g.pool).map_err(|e| wit_err(&self.loaded.rec.name, e))?;
        let pool = IpNetwork::new(pool.network(), pool.prefix()).unwrap();
        if pool.is_ipv6() != req.v6 {
            return Err(bad_return(
                &self.loaded.rec,
                format!(
                    "request-pool returned {pool} for an IPv{} request",
                    if req.v6 { 6 } else { 4 }
                ),
            ));
        }
        if let Some(want) = req.pool {
            let want = IpNetwork::new(want.network(), want.prefix()).unwrap();
            if want != pool {
                return Err(bad_return(
                    &self.loaded.rec,
                    format!("request-pool returned {pool}, but {want} was asked for"),
                ));
            }
        }
        if g.pool_id.is_empty() || g.pool_id.len() > 256 {
            return Err(bad_return(
                &self.loaded.rec,
                "request-pool returned an empty or oversized pool id".into(),
            ));
        }
        Ok(PoolGrant {
            pool_id: g.pool_id,
            pool,
            data: g.data.into_iter().collect(),
        })
    }

    async fn release_pool(&self, txn: &mut dyn WriteTxn, pool_id: &str) -> Result<()> {
        let id = pool_id.to_string();
        ipam_call!(self, txn, "release-pool", |i, store| i
            .call_release_pool(&mut store, &id)
            .await)
    }

    async fn request_address(
        &self,
        txn: &mut dyn WriteTxn,
        req: &AddressRequest,
    ) -> Result<IpNetwork> {
        let r = wi::AddressRequest {
            pool_id: req.pool_id.clone(),
            preferred: req.preferred.map(host::wit_ip),
            options: opts(&req.options),
        };
        let a = ipam_call!(self, txn, "request-address", |i, store| i
            .call_request_address(&mut store, &r)
            .await)?;
        let a = host::prefix(&a).map_err(|e| wit_err(&self.loaded.rec.name, e))?;
        if let Some(p) = req.preferred {
            if a.ip() != p {
                return Err(bad_return(
                    &self.loaded.rec,
                    format!("request-address returned {a}, but {p} was asked for"),
                ));
            }
        }
        Ok(a)
    }

    async fn release_address(
        &self,
        txn: &mut dyn WriteTxn,
        pool_id: &str,
        addr: IpAddr,
    ) -> Result<()> {
        let (id, a) = (pool_id.to_string(), host::wit_ip(addr));
        ipam_call!(self, txn, "release-address", |i, store| i
            .call_release_address(&mut store, &id, a)
            .await)
    }
}
