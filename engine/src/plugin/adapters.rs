//! Components as drivers and IPAM: [`PluginDriver`] implements [`NetworkDriver`] and
//! [`PluginIpam`] implements [`Ipam`], exactly like the native ones, whichever contract
//! version the component speaks. Each call instantiates the component afresh with the
//! plugin's limits, lends it the operation's transactions, bounds it in time (its deadline
//! covers host calls and HTTP waits too), maps traps and WIT errors to [`Error::Plugin`]
//! (naming the plugin and the reason), and checks what the plugin returned before the engine
//! uses it. Returns that hold lists of strings are read from the guest's memory lazily, so a
//! list of a million strings aliasing one large buffer is refused before anything is copied.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use wasmtime::component::Component;
use wasmtime::Store;

use super::bindings::driver::exports::weft::plugin::network_driver as wd;
use super::bindings::driver::weft::plugin::types as t2;
use super::bindings::ipam::exports::weft::plugin::ipam as wi;
use super::bindings::v01::driver::exports::weft::plugin::network_driver as wd1;
use super::bindings::v01::driver::weft::plugin::types as t1;
use super::bindings::v01::ipam::exports::weft::plugin::ipam as wi1;
use super::bindings::{driver, ipam, v01};
use super::egress::Slots;
use super::host::{self, HostError, HostState, Scope};
use super::lend::{self, Lent};
use super::runtime::{wt, Runtime};
use super::{Asked, Kind, PluginRecord};
use crate::drivers::{
    Attachment, Ctx, DriverCapabilities, EndpointContext, EndpointInfo, JoinInfo, JoinLink,
    JoinTarget, NetworkDriver,
};
use crate::error::{Error, PluginErrorKind, Result};
use crate::ipam::{AddressRequest, Ipam, IpamCapabilities, PoolGrant, PoolRequest};
use crate::model::{Network, PortMapping, Scope as NetScope};
use crate::net::{NsRef, Step};
use crate::store::WriteTxn;

/// Deadline for the install-time calls (metadata, capabilities).
const DESCRIBE_MS: u64 = 2000;
/// Bounds on what a plugin returns.
const MAX_TEXT: usize = 1024;
const MAX_LIST: usize = 64;
const MAX_ROUTES: usize = 64;
/// The most data one call may copy between guest and host, either way (wasmtime's hostcall
/// fuel): a kv value (1 MiB) and its key fit; a list of a million strings aliasing one guest
/// buffer does not.
const COPY_BUDGET: usize = 2 << 20;

fn opts(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn new_store(rt: &Runtime, rec: &Arc<PluginRecord>, state: HostState) -> Result<Store<HostState>> {
    let mut store = Store::new(&rt.engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_hostcall_fuel(COPY_BUDGET);
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
/// call — a WASI clock, an HTTP response, a kernel round trip — is not interrupted by the
/// epoch).
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

/// A WIT error from the plugin (its text cleaned and bounded).
fn host_err(rec: &PluginRecord, e: HostError) -> Error {
    let (kind, m) = match e {
        HostError::InvalidArgument(m) => (PluginErrorKind::InvalidArgument, m),
        HostError::NotFound(m) => (PluginErrorKind::NotFound, m),
        HostError::Conflict(m) => (PluginErrorKind::Conflict, m),
        HostError::Exhausted(m) => (PluginErrorKind::Exhausted, m),
        HostError::Unsupported(m) => (PluginErrorKind::Unsupported, m),
        HostError::Denied(m) => (PluginErrorKind::Denied, format!("denied: {m}")),
        HostError::Internal(m) => (PluginErrorKind::Internal, m),
    };
    plugin_err(&rec.name, kind, rec.tell(&m, MAX_TEXT))
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
    let detail = rec.tell(&detail, MAX_TEXT);
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
        // wasmtime's hostcall fuel (its error type is private: known by its text).
        None if text.contains("fuel allocated for hostcalls has been exhausted") => format!(
            "{call} tried to pass more than {} MiB between the plugin and weft in one call and was stopped",
            COPY_BUDGET >> 20
        ),
        None => format!("{call} failed: {}{detail}", rec.tell(&text, MAX_TEXT)),
    };
    plugin_err(&rec.name, PluginErrorKind::Trapped, message)
}

/// Settle one call: the plugin's answer, its WIT error, or its trap.
fn settle<T>(
    rec: &PluginRecord,
    call: &str,
    store: &Store<HostState>,
    r: wasmtime::Result<std::result::Result<T, HostError>>,
) -> Result<T> {
    let stderr = store.data().stderr.contents();
    if !stderr.is_empty() {
        tracing::info!(plugin = %rec.name, "{call} wrote: {}", rec.tell(String::from_utf8_lossy(&stderr).trim(), MAX_TEXT));
    }
    let gate = &store.data().gate;
    if let Some(line) = gate.summary() {
        tracing::warn!(plugin = %rec.name, "{call}: {line}");
    }
    let http = gate.error_suffix();
    let e = match r {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => host_err(rec, e),
        Err(e) => trap_err(rec, call, e, &stderr, store.data().limits.denied),
    };
    Err(match e {
        Error::Plugin {
            plugin,
            kind,
            message,
        } => Error::Plugin {
            plugin,
            kind,
            message: format!("{message}{http}"),
        },
        e => e,
    })
}

fn bad_return(rec: &PluginRecord, message: String) -> Error {
    plugin_err(&rec.name, PluginErrorKind::BadReturn, message)
}

/// A string the plugin returned, bounded, cleaned and scrubbed ([`PluginRecord::tell`]).
fn bounded(
    rec: &PluginRecord,
    s: &str,
    what: &str,
    max: usize,
) -> std::result::Result<String, HostError> {
    if s.len() > max {
        return Err(HostError::InvalidArgument(format!(
            "{what} is {} bytes long, over the {max} allowed",
            s.len()
        )));
    }
    Ok(rec.tell(s, max))
}

fn bounded_list(
    rec: &PluginRecord,
    l: &[String],
    what: &str,
) -> std::result::Result<Vec<String>, HostError> {
    if l.len() > MAX_LIST {
        return Err(HostError::InvalidArgument(format!(
            "{what} has {} entries, over the {MAX_LIST} allowed",
            l.len()
        )));
    }
    l.iter().map(|s| bounded(rec, s, what, 256)).collect()
}

type Described = (String, String, Asked);

/// What every contract's metadata has, bounded.
fn asked_base(
    rec: &PluginRecord,
    name: &str,
    version: &str,
    description: &str,
    link_prefix: Option<&str>,
    lists: [&[String]; 3],
    memory_mib: Option<u32>,
) -> std::result::Result<Described, HostError> {
    let [parents, sysctls, http_hosts] = lists;
    bounded(rec, name, "name", 64)?;
    Ok((
        bounded(rec, version, "version", 64)?,
        bounded(rec, description, "description", 512)?,
        Asked {
            link_prefix: link_prefix
                .map(|p| bounded(rec, p, "link-prefix", 16))
                .transpose()?,
            parents: bounded_list(rec, parents, "parents")?,
            sysctls: bounded_list(rec, sysctls, "sysctls")?,
            http_hosts: bounded_list(rec, http_hosts, "http-hosts")?,
            memory_mib,
            ..Default::default()
        },
    ))
}

/// Metadata (0.1) → what the plugin asks for, bounded. A macro: each world has its own type.
macro_rules! meta1 {
    ($rec:expr, $m:expr) => {{
        let m = $m;
        let g = &m.grants;
        asked_base(
            $rec,
            &m.name,
            &m.version,
            &m.description,
            g.link_prefix.as_deref(),
            [&g.parents, &g.sysctls, &g.http_hosts],
            g.memory_mib,
        )
    }};
}

/// Metadata (0.2): 0.1's, and the grants 0.2 added.
macro_rules! meta2 {
    ($rec:expr, $m:expr) => {{
        let rec = $rec;
        let m = $m;
        let g = &m.grants;
        meta1!(rec, &m).and_then(|(version, description, mut asked)| {
            for (n, what) in [
                (g.gateways.len(), "gateways"),
                (g.vni_ranges.len(), "vni-ranges"),
                (g.vxlan_ports.len(), "vxlan-ports"),
            ] {
                if n > MAX_LIST {
                    return Err(HostError::InvalidArgument(format!(
                        "{what} has {n} entries, over the {MAX_LIST} allowed"
                    )));
                }
            }
            asked.gateways = g.gateways.iter().map(host::ip).collect();
            asked.vni_ranges = g.vni_ranges.clone();
            asked.vxlan_ports = g.vxlan_ports.clone();
            asked.macvlan_passthru = g.macvlan_passthru;
            asked.config_keys = bounded_list(rec, &g.config_keys, "config-keys")?;
            Ok((version, description, asked))
        })
    }};
}

/// Install time: metadata and capabilities, with no transactions lent (no kv, no host-net).
pub async fn describe(rt: &Runtime, c: &Component, rec: &mut PluginRecord) -> Result<()> {
    let speaks = rt.speaks(c)?;
    rec.kind = speaks.kind;
    rec.contract = speaks.version.to_string();
    let mut probe = rec.clone();
    probe.grants.deadline_ms = DESCRIBE_MS;
    let probe = Arc::new(probe);
    let linker = match (speaks.kind, speaks.version) {
        (Kind::Driver, "0.2.0") => &rt.driver_linker,
        (Kind::Ipam, "0.2.0") => &rt.ipam_linker,
        (Kind::Driver, _) => &rt.driver01_linker,
        (Kind::Ipam, _) => &rt.ipam01_linker,
    };
    let pre = linker
        .instantiate_pre(c)
        .map_err(|e| link_err(rt, c, &probe, e))?;
    let mut store = new_store(
        rt,
        &probe,
        HostState::new(
            probe.clone(),
            Slots::none(),
            Lent::none(),
            Lent::none(),
            Scope::default(),
        ),
    )?;
    let inst = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| trap_err(&probe, "instantiate", e, &[], false))?;
    // Metadata through the typed bindings: the store's hostcall fuel bounds what is copied
    // out of the guest, then every field is bounded again here.
    let m = match (speaks.kind, speaks.version) {
        (Kind::Driver, "0.2.0") => {
            let w = driver::DriverPlugin::new(&mut store, &inst).map_err(wt)?;
            let r = w.weft_plugin_plugin().call_metadata(&mut store).await;
            meta2!(&probe, settle(&probe, "metadata", &store, r.map(Ok))?)
        }
        (Kind::Ipam, "0.2.0") => {
            let w = ipam::IpamPlugin::new(&mut store, &inst).map_err(wt)?;
            let r = w.weft_plugin_plugin().call_metadata(&mut store).await;
            meta2!(&probe, settle(&probe, "metadata", &store, r.map(Ok))?)
        }
        (Kind::Driver, _) => {
            let w = v01::driver::DriverPlugin::new(&mut store, &inst).map_err(wt)?;
            let r = w.weft_plugin_plugin().call_metadata(&mut store).await;
            meta1!(&probe, settle(&probe, "metadata", &store, r.map(Ok))?)
        }
        (Kind::Ipam, _) => {
            let w = v01::ipam::IpamPlugin::new(&mut store, &inst).map_err(wt)?;
            let r = w.weft_plugin_plugin().call_metadata(&mut store).await;
            meta1!(&probe, settle(&probe, "metadata", &store, r.map(Ok))?)
        }
    };
    let asked = m.map_err(|e| host_err(&probe, e))?;
    (rec.version, rec.description, rec.asked) = asked;
    // Capabilities, through the typed bindings (small, fixed-size answers).
    let mut store = new_store(
        rt,
        &probe,
        HostState::new(
            probe.clone(),
            Slots::none(),
            Lent::none(),
            Lent::none(),
            Scope::default(),
        ),
    )?;
    match (speaks.kind, speaks.version) {
        (Kind::Driver, "0.2.0") => {
            let i = driver::DriverPluginPre::new(pre.clone())
                .map_err(wt)?
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap_err(&probe, "instantiate", e, &[], false))?;
            let caps = i
                .weft_plugin_network_driver()
                .call_capabilities(&mut store)
                .await;
            let caps = settle(&probe, "capabilities", &store, caps.map(Ok))?;
            rec.scope = scope(caps.scope == t2::Scope::Global);
            rec.external_connectivity = caps.external_connectivity;
        }
        (Kind::Driver, _) => {
            let i = v01::driver::DriverPluginPre::new(pre.clone())
                .map_err(wt)?
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap_err(&probe, "instantiate", e, &[], false))?;
            let caps = i
                .weft_plugin_network_driver()
                .call_capabilities(&mut store)
                .await;
            let caps = settle(&probe, "capabilities", &store, caps.map(Ok))?;
            rec.scope = scope(caps.scope == t1::Scope::Global);
        }
        (Kind::Ipam, "0.2.0") => {
            let i = ipam::IpamPluginPre::new(pre.clone())
                .map_err(wt)?
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap_err(&probe, "instantiate", e, &[], false))?;
            let caps = i.weft_plugin_ipam().call_capabilities(&mut store).await;
            let caps = settle(&probe, "capabilities", &store, caps.map(Ok))?;
            rec.requires_mac = caps.requires_mac_address;
            rec.requires_replay = caps.requires_request_replay;
        }
        (Kind::Ipam, _) => {
            let i = v01::ipam::IpamPluginPre::new(pre.clone())
                .map_err(wt)?
                .instantiate_async(&mut store)
                .await
                .map_err(|e| trap_err(&probe, "instantiate", e, &[], false))?;
            let caps = i.weft_plugin_ipam().call_capabilities(&mut store).await;
            let caps = settle(&probe, "capabilities", &store, caps.map(Ok))?;
            rec.requires_mac = caps.requires_mac_address;
        }
    }
    Ok(())
}

fn scope(global: bool) -> NetScope {
    if global {
        NetScope::Global
    } else {
        NetScope::Local
    }
}

/// Explain a component the linker cannot satisfy (usually an import weft does not provide).
fn link_err(rt: &Runtime, c: &Component, rec: &PluginRecord, e: wasmtime::Error) -> Error {
    let imports = rt.imports_of(c);
    let sockets: Vec<&String> = imports
        .iter()
        .filter(|i| i.starts_with("wasi:sockets/"))
        .collect();
    let unknown: Vec<&String> = imports
        .iter()
        .filter(|i| !i.starts_with("weft:plugin/") && !i.starts_with("wasi:"))
        .collect();
    let why = if !sockets.is_empty() {
        format!(
            "it imports {}: plugins get no sockets (outbound HTTP to granted hosts goes through wasi:http)",
            sockets.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )
    } else if !unknown.is_empty() {
        format!(
            "it imports {}, which weft does not provide",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
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

/// A plugin's compiled component, linked once (an `InstancePre`) and kept for every call.
struct Loaded<P> {
    host: Arc<super::PluginHost>,
    rec: Arc<PluginRecord>,
    /// Its share of the process's outbound connections (kept across re-registrations).
    slots: Slots,
    pre: Mutex<Option<P>>,
}

impl<P: Clone> Loaded<P> {
    fn new(host: Arc<super::PluginHost>, rec: PluginRecord) -> Self {
        Loaded {
            slots: host.sockets.of(&rec.name),
            host,
            rec: Arc::new(rec),
            pre: Mutex::new(None),
        }
    }

    /// The runtime and the pre-linked component, loading it on first use: the component file
    /// must still be the one installed (its hash), and the compile cache is used only if its
    /// file still has the hash recorded at install.
    async fn get(
        &self,
        link: impl FnOnce(&Runtime, &Component) -> Result<P>,
    ) -> Result<(Arc<Runtime>, P)> {
        let rt = self.host.runtime()?;
        if let Some(p) = self.pre.lock().unwrap().as_ref() {
            return Ok((rt, p.clone()));
        }
        let rec = self.rec.clone();
        let c = {
            let rt = rt.clone();
            tokio::task::spawn_blocking(move || -> Result<Component> {
                let bytes = std::fs::read(&rec.file).map_err(|e| {
                    plugin_err(
                        &rec.name,
                        PluginErrorKind::Internal,
                        format!("cannot read {}: {e}", rec.file.display()),
                    )
                })?;
                use sha2::Digest;
                if hex::encode(sha2::Sha256::digest(&bytes)) != rec.sha256 {
                    return Err(plugin_err(
                        &rec.name,
                        PluginErrorKind::Internal,
                        format!(
                            "{} changed since it was installed: install it again",
                            rec.file.display()
                        ),
                    ));
                }
                rt.load(&bytes, &rec.sha256, rec.compiled.as_ref())
            })
            .await
            .map_err(|e| Error::internal(format!("load plugin: {e}")))??
        };
        let pre = link(&rt, &c)?;
        *self.pre.lock().unwrap() = Some(pre.clone());
        Ok((rt, pre))
    }
}

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
    pub fn new(host: Arc<super::PluginHost>, rec: PluginRecord) -> Self {
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

/// Map a version's `Result<T, its error>` into the common one.
fn e2<T>(
    r: wasmtime::Result<std::result::Result<T, t2::Error>>,
) -> wasmtime::Result<std::result::Result<T, HostError>> {
    r.map(|x| {
        x.map_err(|e| match e {
            t2::Error::InvalidArgument(m) => HostError::InvalidArgument(m),
            t2::Error::NotFound(m) => HostError::NotFound(m),
            t2::Error::Conflict(m) => HostError::Conflict(m),
            t2::Error::Exhausted(m) => HostError::Exhausted(m),
            t2::Error::Unsupported(m) => HostError::Unsupported(m),
            t2::Error::Denied(m) => HostError::Denied(m),
            t2::Error::Internal(m) => HostError::Internal(m),
        })
    })
}

fn e1<T>(
    r: wasmtime::Result<std::result::Result<T, t1::Error>>,
) -> wasmtime::Result<std::result::Result<T, HostError>> {
    r.map(|x| x.map_err(HostError::from))
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
                    .map(|(k, a)| (k.clone(), super::v01::wit_ip(host::ip(a))))
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
    super::v01::wit_prefix(IpNetwork::new(host::ip(&p.address), p.prefix_len).unwrap())
}

fn wit_context(c: &EndpointContext) -> t2::EndpointContext {
    t2::EndpointContext {
        sandbox_id: c.sandbox_id.clone(),
        sandbox_name: c.sandbox_name.clone(),
        hostname: c.hostname.clone(),
        labels: opts(&c.labels),
    }
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
        ipv4: ep.ipv4.map(super::v01::wit_prefix),
        ipv6: ep.ipv6.map(super::v01::wit_prefix),
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
            super::v01::prefix(&r.destination)?,
            r.next_hop.as_ref().map(super::v01::ip),
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
        let (p, p1) = (host::wit_ip(peer), super::v01::wit_ip(peer));
        driver_call!(self, ctx, scope, None, "discover-new", |store|
            v2: |d| e2(d.call_discover_new(&mut store, p).await),
            v1: |d| e1(d.call_discover_new(&mut store, p1).await))
        .0
    }

    async fn discover_delete(&self, ctx: &mut Ctx<'_>, peer: IpAddr) -> Result<()> {
        let scope = self.scope(None, None);
        let (p, p1) = (host::wit_ip(peer), super::v01::wit_ip(peer));
        driver_call!(self, ctx, scope, None, "discover-delete", |store|
            v2: |d| e2(d.call_discover_delete(&mut store, p).await),
            v1: |d| e1(d.call_discover_delete(&mut store, p1).await))
        .0
    }
}

// =========================================================================== IPAM

#[derive(Clone)]
enum IpamPre {
    V2(ipam::IpamPluginPre<HostState>),
    V1(v01::ipam::IpamPluginPre<HostState>),
}

/// An IPAM component as an [`Ipam`].
pub struct PluginIpam {
    loaded: Loaded<IpamPre>,
}

impl PluginIpam {
    pub fn new(host: Arc<super::PluginHost>, rec: PluginRecord) -> Self {
        PluginIpam {
            loaded: Loaded::new(host, rec),
        }
    }

    async fn loaded(&self) -> Result<(Arc<Runtime>, IpamPre)> {
        let rec = &self.loaded.rec;
        self.loaded
            .get(|rt, c| {
                if rec.contract == "0.2.0" {
                    let pre = rt
                        .ipam_linker
                        .instantiate_pre(c)
                        .map_err(|e| link_err(rt, c, rec, e))?;
                    Ok(IpamPre::V2(ipam::IpamPluginPre::new(pre).map_err(wt)?))
                } else {
                    let pre = rt
                        .ipam01_linker
                        .instantiate_pre(c)
                        .map_err(|e| link_err(rt, c, rec, e))?;
                    Ok(IpamPre::V1(v01::ipam::IpamPluginPre::new(pre).map_err(wt)?))
                }
            })
            .await
    }

    /// SAFETY (of the lending inside): as for [`PluginDriver::store`].
    fn store(&self, rt: &Runtime, txn: &mut dyn WriteTxn) -> Result<Store<HostState>> {
        let kv = unsafe { lend::store(txn) };
        new_store(
            rt,
            &self.loaded.rec,
            HostState::new(
                self.loaded.rec.clone(),
                self.loaded.slots.clone(),
                Lent::none(),
                kv,
                Scope::default(),
            ),
        )
    }
}

/// One IPAM call; `$v2`/`$v1` get the instance (typed exports) and the raw instance.
macro_rules! ipam_call {
    ($self:ident, $txn:ident, $call:literal, |$store:ident| v2: |$i2:ident, $r2:ident| $b2:expr, v1: |$i1:ident, $r1:ident| $b1:expr) => {{
        let (rt, pre) = $self.loaded().await?;
        let mut $store = $self.store(&rt, $txn)?;
        let limit = host_limit(&$self.loaded.rec);
        let r = match tokio::time::timeout(limit, async {
            match &pre {
                IpamPre::V2(p) => match p.instance_pre().instantiate_async(&mut $store).await {
                    Ok($r2) => match ipam::IpamPlugin::new(&mut $store, &$r2) {
                        Ok(w) => {
                            let $i2 = w.weft_plugin_ipam();
                            $b2
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                IpamPre::V1(p) => match p.instance_pre().instantiate_async(&mut $store).await {
                    Ok($r1) => match v01::ipam::IpamPlugin::new(&mut $store, &$r1) {
                        Ok(w) => {
                            let $i1 = w.weft_plugin_ipam();
                            $b1
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
            }
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(wasmtime::Trap::Interrupt.into()),
        };
        (r, $store)
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
            requires_request_replay: self.loaded.rec.requires_replay,
        }
    }

    async fn request_pool(&self, txn: &mut dyn WriteTxn, req: &PoolRequest) -> Result<PoolGrant> {
        let rec = self.loaded.rec.clone();
        let r2 = wi::PoolRequest {
            address_space: req.address_space.clone(),
            pool: req.pool.map(host::wit_prefix),
            sub_pool: req.sub_pool.map(host::wit_prefix),
            options: opts(&req.options),
            v6: req.v6,
        };
        let r1 = wi1::PoolRequest {
            address_space: req.address_space.clone(),
            pool: req.pool.map(super::v01::wit_prefix),
            sub_pool: req.sub_pool.map(super::v01::wit_prefix),
            options: opts(&req.options),
            v6: req.v6,
        };
        let (r, store) = ipam_call!(self, txn, "request-pool", |store|
            v2: |i, _inst| e2(i.call_request_pool(&mut store, &r2).await)
                .map(|x| x.and_then(|p| Ok((p.pool_id, host::prefix(&p.pool)?, p.data)))),
            v1: |i, _inst| e1(i.call_request_pool(&mut store, &r1).await)
                .map(|x| x.and_then(|p| Ok((p.pool_id, super::v01::prefix(&p.pool)?, p.data)))));
        let read = |(id, pool, data): (String, IpNetwork, Vec<(String, String)>)| {
            let id = bounded(&rec, &id, "the pool id", 256)?;
            if data.len() > MAX_LIST {
                return Err(HostError::InvalidArgument(format!(
                    "request-pool returned {} data entries, over the {MAX_LIST} allowed",
                    data.len()
                )));
            }
            let mut d = BTreeMap::new();
            for (k, v) in &data {
                d.insert(
                    bounded(&rec, k, "a data key", 256)?,
                    bounded(&rec, v, "a data value", 1024)?,
                );
            }
            Ok((id, pool, d))
        };
        let g = settle(&rec, "request-pool", &store, r.map(|x| x.and_then(read)))?;
        drop(store);
        let (pool_id, pool, data) = g;
        let pool = IpNetwork::new(pool.network(), pool.prefix()).unwrap();
        if pool.is_ipv6() != req.v6 {
            return Err(bad_return(
                &rec,
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
                    &rec,
                    format!("request-pool returned {pool}, but {want} was asked for"),
                ));
            }
        }
        if pool_id.is_empty() {
            return Err(bad_return(
                &rec,
                "request-pool returned an empty pool id".into(),
            ));
        }
        Ok(PoolGrant {
            pool_id,
            pool,
            data,
        })
    }

    async fn release_pool(&self, txn: &mut dyn WriteTxn, pool_id: &str) -> Result<()> {
        let rec = self.loaded.rec.clone();
        let id = pool_id.to_string();
        let (r, store) = ipam_call!(self, txn, "release-pool", |store|
            v2: |i, _inst| e2(i.call_release_pool(&mut store, &id).await),
            v1: |i, _inst| e1(i.call_release_pool(&mut store, &id).await));
        settle(&rec, "release-pool", &store, r)
    }

    async fn request_address(
        &self,
        txn: &mut dyn WriteTxn,
        req: &AddressRequest,
    ) -> Result<IpNetwork> {
        let rec = self.loaded.rec.clone();
        let r2 = wi::AddressRequest {
            pool_id: req.pool_id.clone(),
            preferred: req.preferred.map(host::wit_ip),
            options: opts(&req.options),
            context: req.context.as_ref().map(wit_context),
        };
        let r1 = wi1::AddressRequest {
            pool_id: req.pool_id.clone(),
            preferred: req.preferred.map(super::v01::wit_ip),
            options: opts(&req.options),
        };
        let (r, store) = ipam_call!(self, txn, "request-address", |store|
            v2: |i, _inst| e2(i.call_request_address(&mut store, &r2).await).map(|x| x.and_then(|p| host::prefix(&p))),
            v1: |i, _inst| e1(i.call_request_address(&mut store, &r1).await).map(|x| x.and_then(|p| super::v01::prefix(&p))));
        let a = settle(&rec, "request-address", &store, r)?;
        if let Some(p) = req.preferred {
            if a.ip() != p {
                return Err(bad_return(
                    &rec,
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
        let rec = self.loaded.rec.clone();
        let id = pool_id.to_string();
        let (a, a1) = (host::wit_ip(addr), super::v01::wit_ip(addr));
        let (r, store) = ipam_call!(self, txn, "release-address", |store|
            v2: |i, _inst| e2(i.call_release_address(&mut store, &id, a).await),
            v1: |i, _inst| e1(i.call_release_address(&mut store, &id, a1).await));
        settle(&rec, "release-address", &store, r)
    }
}
