//! Components as drivers and IPAM: [`PluginDriver`] implements [`NetworkDriver`] and
//! [`PluginIpam`] implements [`Ipam`], exactly like the native ones, whichever contract
//! version the component speaks. Each call instantiates the component afresh with the
//! plugin's limits, lends it the operation's transactions, bounds it in time (its deadline
//! covers host calls and HTTP waits too), maps traps and WIT errors to [`Error::Plugin`]
//! (naming the plugin and the reason), and checks what the plugin returned before the engine
//! uses it. Returns that hold lists of strings are read from the guest's memory lazily, so a
//! list of a million strings aliasing one large buffer is refused before anything is copied.
//!
//! Here: the call plumbing (store, limits, deadline, error mapping, bounds on returns) and
//! loading (`describe`); [`plugin_driver`] and [`plugin_ipam`] hold the two adapters and
//! their conversions of both contract versions.

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

mod plugin_driver;
mod plugin_ipam;
pub use plugin_driver::PluginDriver;
pub use plugin_ipam::PluginIpam;

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

    /// The runtime and the pre-linked component, loading it on first use: from the compile
    /// cache if its file still has the hash recorded at install; else compiled again from the
    /// component file, which must still be the one installed (its hash).
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
                if let Some(c) = rt.load_cached(&rec.sha256, rec.compiled.as_ref()) {
                    return Ok(c);
                }
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
                rt.compile(&bytes, &rec.sha256).map(|(c, _)| c)
            })
            .await
            .map_err(|e| Error::internal(format!("load plugin: {e}")))??
        };
        let pre = link(&rt, &c)?;
        *self.pre.lock().unwrap() = Some(pre.clone());
        Ok((rt, pre))
    }
}

// The two adapters share these: a call result of either contract version as a host result,
// and the endpoint context as 0.2 says it.

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

fn wit_context(c: &EndpointContext) -> t2::EndpointContext {
    t2::EndpointContext {
        sandbox_id: c.sandbox_id.clone(),
        sandbox_name: c.sandbox_name.clone(),
        hostname: c.hostname.clone(),
        labels: opts(&c.labels),
    }
}
