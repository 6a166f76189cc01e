//! What a plugin's imports do: `host-net` (checked against the grants, applied through the
//! operation's kernel transaction), `kv` (the plugin's private space in the operation's store
//! transaction), `log` (tracing), and a locked-down WASI (no files, no sockets, no env).

use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::driver::weft::plugin::{host_net, kv, log, types};
use super::lend::Lent;
use super::PluginRecord;
use crate::net::{MacvlanMode, NetError, NsRef, Step, Tx};
use crate::store::{Table, WriteTxn};

use types::{Error as WitError, IpAddress, IpPrefix, MacAddress};

/// Largest kv value a plugin may store.
const KV_VALUE_MAX: usize = 1 << 20;
const KV_KEY_MAX: usize = 1024;

/// The data of one plugin call's store.
pub struct HostState {
    pub plugin: Arc<PluginRecord>,
    pub limits: Limits,
    wasi: WasiCtx,
    table: ResourceTable,
    pub stderr: MemoryOutputPipe,
    /// The kernel transaction of the operation that called (driver calls only).
    pub tx: Lent<Tx>,
    /// The store transaction of that operation (kv).
    pub store: Lent<dyn WriteTxn + 'static>,
    /// Destinations the plugin may route or address on the host: the subnets of the network
    /// in play, plus link-local.
    pub scope: Vec<IpNetwork>,
    /// During `join`: where the endpoint goes (for create-sandbox-veth).
    pub join: Option<JoinContext>,
    /// The host end made by create-sandbox-veth in this call, if any.
    pub placed: Option<String>,
}

/// What create-sandbox-veth needs to know about the sandbox end.
#[derive(Debug, Clone)]
pub struct JoinContext {
    pub ns: NsRef,
    pub ifname: String,
    pub mac: String,
    pub ipv6: bool,
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
        16
    }
    fn memories(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        64
    }
}

impl HostState {
    pub fn new(
        plugin: Arc<PluginRecord>,
        tx: Lent<Tx>,
        store: Lent<dyn WriteTxn>,
        scope: Vec<IpNetwork>,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(4096);
        let wasi = WasiCtxBuilder::new()
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
        let mut scope = scope;
        scope.push("169.254.0.0/16".parse().unwrap());
        scope.push("fe80::/10".parse().unwrap());
        HostState {
            plugin,
            limits,
            wasi,
            table: ResourceTable::new(),
            stderr,
            tx,
            store,
            scope,
            join: None,
            placed: None,
        }
    }

    fn deny(&mut self, why: String) -> WitError {
        tracing::info!(plugin = %self.plugin.name, "denied: {why}");
        WitError::Denied(why)
    }

    fn own(&mut self, name: &str) -> Result<(), WitError> {
        if self.plugin.grants.owns_link(name) {
            return Ok(());
        }
        let why = match &self.plugin.grants.link_prefix {
            Some(p) => format!("link {name:?} is not this plugin's: its links are named {p}… (at most 15 characters)"),
            None => format!("link {name:?}: this plugin was granted no host links (grant link-prefix=…)"),
        };
        Err(self.deny(why))
    }

    fn parent(&mut self, name: &str) -> Result<(), WitError> {
        if self.plugin.grants.may_use_parent(name) {
            return Ok(());
        }
        Err(self.deny(format!(
            "link {name:?} was not granted as a parent (grant parent={name})"
        )))
    }

    fn in_scope(&mut self, what: &str, net: IpNetwork) -> Result<(), WitError> {
        if self.scope.iter().any(|s| {
            s.is_ipv4() == net.is_ipv4() && s.contains(net.network()) && s.prefix() <= net.prefix()
        }) {
            return Ok(());
        }
        Err(self.deny(format!("{what} {net} is outside the network's subnets")))
    }

    async fn apply(&mut self, step: Step) -> Result<(), WitError> {
        let Some(tx) = self.tx.get() else {
            return Err(WitError::Unsupported(
                "host-net is only available while weft calls the driver".into(),
            ));
        };
        tx.apply(step).await.map_err(net_error)
    }
}

/// Kernel errors as the plugin sees them.
fn net_error(e: NetError) -> WitError {
    if e.is_not_found() {
        WitError::NotFound(e.to_string())
    } else if e.is_exists() {
        WitError::Conflict(e.to_string())
    } else if e.errno == Some(libc::EPERM) || e.errno == Some(libc::EACCES) {
        WitError::Denied(e.to_string())
    } else {
        WitError::Internal(e.to_string())
    }
}

pub fn ip(a: &IpAddress) -> IpAddr {
    match *a {
        IpAddress::V4((a, b, c, d)) => IpAddr::from([a, b, c, d]),
        IpAddress::V6((a, b, c, d, e, f, g, h)) => IpAddr::from([a, b, c, d, e, f, g, h]),
    }
}

pub fn wit_ip(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            IpAddress::V4((o[0], o[1], o[2], o[3]))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            IpAddress::V6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
        }
    }
}

pub fn prefix(p: &IpPrefix) -> Result<IpNetwork, WitError> {
    IpNetwork::new(ip(&p.address), p.prefix_len).map_err(|_| {
        WitError::InvalidArgument(format!(
            "bad prefix length /{} for {}",
            p.prefix_len,
            ip(&p.address)
        ))
    })
}

pub fn wit_prefix(n: IpNetwork) -> IpPrefix {
    IpPrefix {
        address: wit_ip(n.ip()),
        prefix_len: n.prefix(),
    }
}

pub fn mac(m: &MacAddress) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m.0, m.1, m.2, m.3, m.4, m.5
    )
}

impl types::Host for HostState {}

impl host_net::Host for HostState {
    async fn create_bridge(&mut self, name: String, mtu: Option<u32>) -> Result<(), WitError> {
        self.own(&name)?;
        self.apply(Step::Bridge {
            name,
            mtu,
            mac: None,
        })
        .await
    }

    async fn create_veth(
        &mut self,
        name: String,
        peer: String,
        mtu: Option<u32>,
    ) -> Result<(), WitError> {
        self.own(&name)?;
        self.own(&peer)?;
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

    async fn create_sandbox_veth(
        &mut self,
        name: String,
        mtu: Option<u32>,
    ) -> Result<(), WitError> {
        self.own(&name)?;
        let Some(j) = self.join.clone() else {
            return Err(WitError::Unsupported(
                "create-sandbox-veth is only available during join".into(),
            ));
        };
        if self.placed.is_some() {
            return Err(WitError::Conflict(
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

    async fn create_vxlan(
        &mut self,
        name: String,
        vni: u32,
        local: Option<IpAddress>,
        parent: Option<String>,
        port: u16,
        learning: bool,
        mtu: Option<u32>,
    ) -> Result<(), WitError> {
        self.own(&name)?;
        if let Some(p) = &parent {
            self.parent(p)?;
        }
        if vni == 0 || vni >= 1 << 24 {
            return Err(WitError::InvalidArgument(format!(
                "VNI {vni} is outside 1..16777215"
            )));
        }
        self.apply(Step::Vxlan {
            name,
            vni,
            local: local.as_ref().map(ip),
            dev: parent,
            port,
            learning,
            mtu,
            master: None,
        })
        .await
    }

    async fn create_macvlan(
        &mut self,
        name: String,
        parent: String,
        mode: host_net::MacvlanMode,
    ) -> Result<(), WitError> {
        self.own(&name)?;
        self.parent(&parent)?;
        let mode = match mode {
            host_net::MacvlanMode::Bridge => MacvlanMode::Bridge,
            host_net::MacvlanMode::Private => MacvlanMode::Private,
            host_net::MacvlanMode::Vepa => MacvlanMode::Vepa,
            host_net::MacvlanMode::Passthru => MacvlanMode::Passthru,
        };
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

    async fn delete_link(&mut self, name: String) -> Result<(), WitError> {
        self.own(&name)?;
        self.apply(Step::DelLink {
            ns: NsRef::Host,
            name,
            peer: None,
        })
        .await
    }

    async fn link_exists(&mut self, name: String) -> Result<bool, WitError> {
        self.parent(&name)?;
        let Some(tx) = self.tx.get() else {
            return Err(WitError::Unsupported(
                "host-net is only available while weft calls the driver".into(),
            ));
        };
        Ok(tx
            .link(&NsRef::Host, &name)
            .await
            .map_err(net_error)?
            .is_some())
    }

    async fn set_up(&mut self, name: String) -> Result<(), WitError> {
        self.own(&name)?;
        self.apply(Step::LinkUp {
            ns: NsRef::Host,
            name,
        })
        .await
    }

    async fn set_mtu(&mut self, name: String, mtu: u32) -> Result<(), WitError> {
        self.own(&name)?;
        if !(68..=65535).contains(&mtu) {
            return Err(WitError::InvalidArgument(format!(
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

    async fn set_master(&mut self, name: String, master: String) -> Result<(), WitError> {
        self.own(&name)?;
        self.own(&master)?;
        self.apply(Step::SetMaster {
            ns: NsRef::Host,
            name,
            master,
        })
        .await
    }

    async fn add_address(&mut self, link: String, address: IpPrefix) -> Result<(), WitError> {
        self.own(&link)?;
        let addr = prefix(&address)?;
        self.in_scope(
            "address",
            IpNetwork::new(addr.ip(), if addr.is_ipv4() { 32 } else { 128 }).unwrap(),
        )?;
        self.apply(Step::Address {
            ns: NsRef::Host,
            link,
            addr,
        })
        .await
    }

    async fn add_route(
        &mut self,
        destination: IpPrefix,
        next_hop: Option<IpAddress>,
        link: String,
    ) -> Result<(), WitError> {
        self.own(&link)?;
        let dst = prefix(&destination)?;
        let dst = IpNetwork::new(dst.network(), dst.prefix()).unwrap();
        self.in_scope("route to", dst)?;
        let via = next_hop.as_ref().map(ip);
        if via.is_some_and(|v| v.is_ipv4() != dst.is_ipv4()) {
            return Err(WitError::InvalidArgument(
                "next hop and destination are of different families".into(),
            ));
        }
        self.apply(Step::Route {
            ns: NsRef::Host,
            dst,
            via,
            dev: link,
            metric: None,
            onlink: false,
        })
        .await
    }

    async fn add_neighbour(
        &mut self,
        link: String,
        address: IpAddress,
        mac_addr: Option<MacAddress>,
    ) -> Result<(), WitError> {
        self.own(&link)?;
        let ipa = ip(&address);
        self.in_scope("neighbour", IpNetwork::from(ipa))?;
        self.apply(Step::Neigh {
            ns: NsRef::Host,
            link,
            ip: ipa,
            mac: mac_addr.as_ref().map(mac),
        })
        .await
    }

    async fn add_fdb(
        &mut self,
        link: String,
        mac_addr: MacAddress,
        remote: IpAddress,
    ) -> Result<(), WitError> {
        self.own(&link)?;
        self.apply(Step::Fdb {
            link,
            mac: mac(&mac_addr),
            dst: ip(&remote),
        })
        .await
    }

    async fn del_fdb(
        &mut self,
        link: String,
        mac_addr: MacAddress,
        remote: IpAddress,
    ) -> Result<(), WitError> {
        self.own(&link)?;
        self.apply(Step::DelFdb {
            link,
            mac: mac(&mac_addr),
            dst: ip(&remote),
        })
        .await
    }

    async fn set_sysctl(
        &mut self,
        link: String,
        key: host_net::LinkSysctl,
        value: String,
    ) -> Result<(), WitError> {
        use host_net::LinkSysctl as K;
        self.own(&link)?;
        let (name, path) = match key {
            K::ProxyArp => ("proxy_arp", format!("net/ipv4/conf/{link}/proxy_arp")),
            K::ProxyDelay => ("proxy_delay", format!("net/ipv4/neigh/{link}/proxy_delay")),
            K::Forwarding => ("forwarding", format!("net/ipv4/conf/{link}/forwarding")),
            K::Forwarding6 => ("forwarding6", format!("net/ipv6/conf/{link}/forwarding")),
            K::ProxyNdp => ("proxy_ndp", format!("net/ipv6/conf/{link}/proxy_ndp")),
        };
        if !self.plugin.grants.sysctls.iter().any(|s| s == name) {
            return Err(self.deny(format!(
                "sysctl {name} was not granted (grant sysctl={name})"
            )));
        }
        if value.is_empty() || value.len() > 6 || !value.bytes().all(|c| c.is_ascii_digit()) {
            return Err(WitError::InvalidArgument(format!(
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

impl HostState {
    fn kv_key(&self, key: &str) -> Result<Vec<u8>, WitError> {
        if key.len() > KV_KEY_MAX || key.contains('\0') {
            return Err(WitError::InvalidArgument(format!(
                "kv keys are at most {KV_KEY_MAX} bytes, without NUL"
            )));
        }
        let mut k = self.plugin.grants.kv_space.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(key.as_bytes());
        Ok(k)
    }

    fn kv(&mut self) -> Result<&mut (dyn WriteTxn + 'static), WitError> {
        self.store
            .get()
            .ok_or_else(|| WitError::Unsupported("kv is not available during this call".into()))
    }
}

fn store_error(e: crate::Error) -> WitError {
    WitError::Internal(format!("store: {e}"))
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        let k = self.kv_key(&key)?;
        self.kv()?.get(Table::PluginKv, &k).map_err(store_error)
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        if value.len() > KV_VALUE_MAX {
            return Err(WitError::InvalidArgument(format!(
                "kv values are at most {KV_VALUE_MAX} bytes"
            )));
        }
        let k = self.kv_key(&key)?;
        self.kv()?
            .put(Table::PluginKv, &k, &value)
            .map_err(store_error)
    }

    async fn delete(&mut self, key: String) -> Result<bool, WitError> {
        let k = self.kv_key(&key)?;
        self.kv()?.delete(Table::PluginKv, &k).map_err(store_error)
    }

    async fn list_prefix(&mut self, prefix: String) -> Result<Vec<(String, Vec<u8>)>, WitError> {
        let k = self.kv_key(&prefix)?;
        let skip = self.plugin.grants.kv_space.len() + 1;
        let rows = self.kv()?.scan(Table::PluginKv, &k).map_err(store_error)?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k[skip..]).into_owned(), v))
            .collect())
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, WitError> {
        let k = self.kv_key(&key)?;
        let store = self.kv()?;
        if store.get(Table::PluginKv, &k).map_err(store_error)? != expected {
            return Ok(false);
        }
        match new {
            Some(v) => store.put(Table::PluginKv, &k, &v).map_err(store_error)?,
            None => {
                store.delete(Table::PluginKv, &k).map_err(store_error)?;
            }
        }
        Ok(true)
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        let m: String = message.chars().take(4096).collect();
        let p = &self.plugin.name;
        match level {
            log::Level::Trace => tracing::trace!(plugin = %p, "{m}"),
            log::Level::Debug => tracing::debug!(plugin = %p, "{m}"),
            log::Level::Info => tracing::info!(plugin = %p, "{m}"),
            log::Level::Warn => tracing::warn!(plugin = %p, "{m}"),
            log::Level::Error => tracing::error!(plugin = %p, "{m}"),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
