//! What a plugin's imports do: `host-net` (checked against the grants and weft's records,
//! applied through the operation's kernel transaction), `kv` (the plugin's private space in the
//! operation's store transaction, under a quota), `log` (tracing, bounded), `config` (what it
//! was given at install), a locked-down WASI, and wasi:http towards granted hosts only.
//!
//! The checks are written once, on the engine's own types ([`HostState`]'s inherent methods):
//! `host-net` in [`net`], `kv`, `log` and `config` in [`store`]; the contract's interfaces —
//! this version's in [`wit`], 0.1's in [`super::v01`] — only convert. What a call may reach
//! is its [`scope`]; its memory ceiling, [`limits`]. Here: the call's state and errors.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::driver::weft::plugin::{config, host_net, kv, log, types};
pub use super::clean;
use super::egress::{HttpGate, Inbound, Slots};
use super::lend::Lent;
use super::PluginRecord;
use crate::net::{MacvlanMode, NetError, NsRef, Step, Tx};
use crate::store::{Table, WriteTxn};

use types::{Error as WitError, IpAddress, IpPrefix, MacAddress};

mod limits;
mod net;
mod scope;
mod store;
mod wit;
pub use limits::Limits;
pub use net::{mac_text, RouteRequest};
pub use scope::{links_made, recorded_steps, Records, Scope};
pub use wit::{ip, mac, prefix, wit_ip, wit_prefix};

/// A refusal or failure, in the contract's terms (each version has its own error type).
#[derive(Debug, Clone)]
pub enum HostError {
    InvalidArgument(String),
    NotFound(String),
    Conflict(String),
    Exhausted(String),
    Unsupported(String),
    Denied(String),
    Internal(String),
}

pub type HostResult<T> = Result<T, HostError>;

impl From<HostError> for WitError {
    fn from(e: HostError) -> WitError {
        match e {
            HostError::InvalidArgument(m) => WitError::InvalidArgument(m),
            HostError::NotFound(m) => WitError::NotFound(m),
            HostError::Conflict(m) => WitError::Conflict(m),
            HostError::Exhausted(m) => WitError::Exhausted(m),
            HostError::Unsupported(m) => WitError::Unsupported(m),
            HostError::Denied(m) => WitError::Denied(m),
            HostError::Internal(m) => WitError::Internal(m),
        }
    }
}

/// Kernel errors as the plugin sees them.
fn net_error(e: NetError) -> HostError {
    use crate::net::NetErrorKind as K;
    match e.kind {
        K::NotFound => HostError::NotFound(e.to_string()),
        K::Exists => HostError::Conflict(e.to_string()),
        K::Permission => HostError::Denied(e.to_string()),
        K::Invalid => HostError::InvalidArgument(e.to_string()),
        K::Unsupported => HostError::Unsupported(e.to_string()),
        _ => HostError::Internal(e.to_string()),
    }
}

fn store_error(e: crate::Error) -> HostError {
    HostError::Internal(format!("store: {e}"))
}

/// The data of one plugin call's store.
pub struct HostState {
    pub plugin: Arc<PluginRecord>,
    pub limits: Limits,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    pub gate: HttpGate,
    /// What weft has handed the plugin in this call (kv reads, config, HTTP answers).
    pub inbound: Arc<Inbound>,
    pub stderr: MemoryOutputPipe,
    /// The kernel transaction of the operation that called (driver calls only).
    pub tx: Lent<Tx>,
    /// The store transaction of that operation (kv).
    pub store: Lent<dyn WriteTxn>,
    pub scope: Scope,
    /// During `join`: where the endpoint goes (for create-sandbox-veth).
    pub join: Option<JoinContext>,
    /// The host end made by create-sandbox-veth in this call, if any.
    pub placed: Option<String>,
    /// Links made in this call.
    created: HashSet<String>,
    logged: u32,
}

/// What create-sandbox-veth needs to know about the sandbox end.
#[derive(Debug, Clone)]
pub struct JoinContext {
    pub ns: NsRef,
    pub ifname: String,
    pub mac: String,
    pub ipv6: bool,
}

impl HostState {
    pub fn new(
        plugin: Arc<PluginRecord>,
        slots: Slots,
        tx: Lent<Tx>,
        store: Lent<dyn WriteTxn>,
        scope: Scope,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(4096);
        let wasi = WasiCtxBuilder::new()
            .stdout(stderr.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = Limits::new(plugin.grants.memory_bytes);
        let inbound = Inbound::new(plugin.grants.inbound_bytes);
        let gate = HttpGate::new(plugin.clone(), slots, inbound.clone());
        HostState {
            plugin,
            limits,
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            gate,
            inbound,
            stderr,
            tx,
            store,
            scope,
            join: None,
            placed: None,
            created: HashSet::new(),
            logged: 0,
        }
    }

    fn deny(&self, why: String) -> HostError {
        tracing::info!(plugin = %self.plugin.name, "denied: {why}");
        HostError::Denied(why)
    }
}
