//! What a plugin's imports do: `host-net` (checked against the grants and weft's records,
//! applied through the operation's kernel transaction), `kv` (the plugin's private space in the
//! operation's store transaction, under a quota), `log` (tracing, bounded), `config` (what it
//! was given at install), a locked-down WASI, and wasi:http towards granted hosts only.
//!
//! The checks are written once, on the engine's own types ([`HostState`]'s inherent methods):
//! `host-net` here, `kv`, `log` and `config` in [`store`]; the contract's interfaces — this
//! version's in [`wit`], 0.1's in [`super::v01`] — only convert.

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

mod store;
mod wit;
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

/// What a call may reach: the network in play's subnets, and the links weft's records say
/// this plugin made (for that network, or for all its networks when there is none in play).
/// The records are read when a call first needs them: most calls touch only links they made
/// themselves, and pay nothing for the check.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub nets: Vec<IpNetwork>,
    pub records: Records,
    links: Option<HashSet<String>>,
}

/// Where the records of a plugin's links are.
#[derive(Debug, Clone, Default)]
pub enum Records {
    /// None (install-time calls).
    #[default]
    None,
    /// These owned-record keys (a network's, an endpoint's).
    Keys(Vec<String>),
    /// Every network of this driver (discover-new/delete).
    AllNetworksOf(String),
}

impl Scope {
    pub fn new(nets: Vec<IpNetwork>, records: Records) -> Scope {
        Scope {
            nets,
            records,
            links: None,
        }
    }
}

/// The host links among `steps` (undo steps: the deletes of what was made) whose names are
/// within the plugin's prefix.
pub fn links_made(steps: &[Step], grants: &crate::plugin::grants::Grants) -> HashSet<String> {
    steps
        .iter()
        .flat_map(|s| match s {
            Step::DelLink {
                ns: NsRef::Host,
                name,
                peer,
            } => {
                let mut v = vec![name.clone()];
                if let Some((NsRef::Host, p)) = peer {
                    v.push(p.clone());
                }
                v
            }
            _ => vec![],
        })
        .filter(|n| grants.owns_link(n))
        .collect()
}

/// The steps weft's records own under `records`.
pub fn recorded_steps(
    store: &dyn crate::store::ReadTxn,
    records: &Records,
) -> crate::Result<Vec<Step>> {
    use crate::engine::records::{net_key, owned};
    let mut steps = Vec::new();
    match records {
        Records::None => {}
        Records::Keys(keys) => {
            for k in keys {
                steps.extend(owned(store, k)?);
            }
        }
        Records::AllNetworksOf(driver) => {
            for n in crate::store::list_json::<crate::model::Network>(store, Table::Networks)? {
                if n.driver == *driver {
                    steps.extend(owned(store, &net_key(&n.id))?);
                }
            }
        }
    }
    Ok(steps)
}

/// The memory ceiling of one plugin instance: all its linear memories and tables together
/// (a component of many core modules does not get the grant once per module). Growing past it
/// traps, and says so ([`Limits::denied`]), so the error is told by a flag, not by message text.
pub struct Limits {
    ceiling: usize,
    used: usize,
    pub denied: bool,
}

impl Limits {
    fn grow(&mut self, bytes: usize) -> wasmtime::Result<bool> {
        match self.used.checked_add(bytes).filter(|u| *u <= self.ceiling) {
            Some(u) => {
                self.used = u;
                Ok(true)
            }
            None => {
                self.denied = true;
                Err(wasmtime::Error::msg(
                    "the plugin's memory ceiling was reached",
                ))
            }
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current) * std::mem::size_of::<usize>())
    }
    fn instances(&self) -> usize {
        // A component from componentize-py (CPython on WASI, linked as many modules) needs
        // ~20 core instances; a Rust plugin needs a handful.
        64
    }
    fn memories(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        64
    }
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

fn unsupported_outside_calls() -> HostError {
    HostError::Unsupported("host-net is only available while weft calls the driver".into())
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
        let limits = Limits {
            ceiling: usize::try_from(plugin.grants.memory_bytes).unwrap_or(usize::MAX),
            used: 0,
            denied: false,
        };
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
