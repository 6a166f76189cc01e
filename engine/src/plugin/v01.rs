//! The 0.1 contract, adapted: plugins built against `weft:plugin@0.1.0` keep running. Their
//! imports are served by the same checked host functions as 0.2's (only the types differ), and
//! their exports are called through [`super::adapters`], which fills in what 0.1 does not say
//! (no endpoint context, no external connectivity, no request replay).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::bindings::v01::driver::weft::plugin::{host_net, kv, log, types};
use super::host::{HostError, HostState};
use crate::net::MacvlanMode;

use types::{Error as WitError, IpAddress, IpPrefix, MacAddress};

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

impl From<WitError> for HostError {
    fn from(e: WitError) -> HostError {
        match e {
            WitError::InvalidArgument(m) => HostError::InvalidArgument(m),
            WitError::NotFound(m) => HostError::NotFound(m),
            WitError::Conflict(m) => HostError::Conflict(m),
            WitError::Exhausted(m) => HostError::Exhausted(m),
            WitError::Unsupported(m) => HostError::Unsupported(m),
            WitError::Denied(m) => HostError::Denied(m),
            WitError::Internal(m) => HostError::Internal(m),
        }
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

pub fn prefix(p: &IpPrefix) -> Result<IpNetwork, HostError> {
    IpNetwork::new(ip(&p.address), p.prefix_len).map_err(|_| {
        HostError::InvalidArgument(format!(
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

fn mac(m: &MacAddress) -> [u8; 6] {
    [m.0, m.1, m.2, m.3, m.4, m.5]
}

impl types::Host for HostState {}

impl host_net::Host for HostState {
    async fn create_bridge(&mut self, name: String, mtu: Option<u32>) -> Result<(), WitError> {
        Ok(HostState::create_bridge(self, name, mtu).await?)
    }
    async fn create_veth(
        &mut self,
        name: String,
        peer: String,
        mtu: Option<u32>,
    ) -> Result<(), WitError> {
        Ok(HostState::create_veth(self, name, peer, mtu).await?)
    }
    async fn create_sandbox_veth(
        &mut self,
        name: String,
        mtu: Option<u32>,
    ) -> Result<(), WitError> {
        Ok(HostState::create_sandbox_veth(self, name, mtu).await?)
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
        let local = local.as_ref().map(ip);
        Ok(HostState::create_vxlan(self, name, vni, local, parent, port, learning, mtu).await?)
    }
    async fn create_macvlan(
        &mut self,
        name: String,
        parent: String,
        mode: host_net::MacvlanMode,
    ) -> Result<(), WitError> {
        let mode = match mode {
            host_net::MacvlanMode::Bridge => MacvlanMode::Bridge,
            host_net::MacvlanMode::Private => MacvlanMode::Private,
            host_net::MacvlanMode::Vepa => MacvlanMode::Vepa,
            host_net::MacvlanMode::Passthru => MacvlanMode::Passthru,
        };
        Ok(HostState::create_macvlan(self, name, parent, mode).await?)
    }
    async fn delete_link(&mut self, name: String) -> Result<(), WitError> {
        Ok(HostState::delete_link(self, name).await?)
    }
    async fn link_exists(&mut self, name: String) -> Result<bool, WitError> {
        Ok(HostState::link_exists(self, name).await?)
    }
    async fn set_up(&mut self, name: String) -> Result<(), WitError> {
        Ok(HostState::set_up(self, name).await?)
    }
    async fn set_mtu(&mut self, name: String, mtu: u32) -> Result<(), WitError> {
        Ok(HostState::set_mtu(self, name, mtu).await?)
    }
    async fn set_master(&mut self, name: String, master: String) -> Result<(), WitError> {
        Ok(HostState::set_master(self, name, master).await?)
    }
    async fn add_address(&mut self, link: String, address: IpPrefix) -> Result<(), WitError> {
        let a = prefix(&address)?;
        Ok(HostState::add_address(self, link, a).await?)
    }
    async fn add_route(
        &mut self,
        destination: IpPrefix,
        next_hop: Option<IpAddress>,
        link: String,
    ) -> Result<(), WitError> {
        let d = prefix(&destination)?;
        Ok(HostState::add_route(self, d, next_hop.as_ref().map(ip), link).await?)
    }
    async fn add_neighbour(
        &mut self,
        link: String,
        address: IpAddress,
        mac_addr: Option<MacAddress>,
    ) -> Result<(), WitError> {
        let m = mac_addr.as_ref().map(mac);
        Ok(HostState::add_neighbour(self, link, ip(&address), m).await?)
    }
    async fn add_fdb(
        &mut self,
        link: String,
        mac_addr: MacAddress,
        remote: IpAddress,
    ) -> Result<(), WitError> {
        Ok(HostState::add_fdb(self, link, mac(&mac_addr), ip(&remote)).await?)
    }
    async fn del_fdb(
        &mut self,
        link: String,
        mac_addr: MacAddress,
        remote: IpAddress,
    ) -> Result<(), WitError> {
        Ok(HostState::del_fdb(self, link, mac(&mac_addr), ip(&remote)).await?)
    }
    async fn set_sysctl(
        &mut self,
        link: String,
        key: host_net::LinkSysctl,
        value: String,
    ) -> Result<(), WitError> {
        use host_net::LinkSysctl as K;
        let k = match key {
            K::ProxyArp => "proxy_arp",
            K::ProxyDelay => "proxy_delay",
            K::Forwarding => "forwarding",
            K::Forwarding6 => "forwarding6",
            K::ProxyNdp => "proxy_ndp",
        };
        Ok(HostState::set_sysctl(self, link, k, value).await?)
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        Ok(self.kv_get(&key)?)
    }
    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        Ok(self.kv_put(&key, value)?)
    }
    async fn delete(&mut self, key: String) -> Result<bool, WitError> {
        Ok(self.kv_delete(&key)?)
    }
    async fn list_prefix(&mut self, prefix: String) -> Result<Vec<(String, Vec<u8>)>, WitError> {
        Ok(self.kv_list(&prefix)?)
    }
    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, WitError> {
        Ok(self.kv_cas(&key, expected, new)?)
    }
}

impl log::Host for HostState {
    async fn log(&mut self, l: log::Level, message: String) {
        let level = match l {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        self.log_line(level, &message);
    }
}
