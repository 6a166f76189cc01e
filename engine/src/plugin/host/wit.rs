//! The contract's 0.2 interfaces on [`HostState`]: conversions between WIT types and the
//! engine's, and each import calling the checked method of the same name.

use super::*;

// ------------------------------------------------------------ WIT type conversions

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

pub fn mac(m: &MacAddress) -> [u8; 6] {
    [m.0, m.1, m.2, m.3, m.4, m.5]
}

fn level(l: log::Level) -> tracing::Level {
    match l {
        log::Level::Trace => tracing::Level::TRACE,
        log::Level::Debug => tracing::Level::DEBUG,
        log::Level::Info => tracing::Level::INFO,
        log::Level::Warn => tracing::Level::WARN,
        log::Level::Error => tracing::Level::ERROR,
    }
}

// -------------------------------------------------- the 0.2 interfaces: conversions

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
    async fn add_route_ex(&mut self, r: host_net::Route) -> Result<(), WitError> {
        let r = route(r)?;
        Ok(HostState::add_route_ex(self, r).await?)
    }
    async fn del_route(&mut self, r: host_net::Route) -> Result<(), WitError> {
        let r = route(r)?;
        Ok(HostState::del_route(self, r).await?)
    }
    async fn del_address(&mut self, link: String, address: IpPrefix) -> Result<(), WitError> {
        let a = prefix(&address)?;
        Ok(HostState::del_address(self, link, a).await?)
    }
    async fn del_neighbour(
        &mut self,
        link: String,
        address: IpAddress,
        proxy: bool,
    ) -> Result<(), WitError> {
        Ok(HostState::del_neighbour(self, link, ip(&address), proxy).await?)
    }
    async fn list_links(&mut self) -> Result<Vec<String>, WitError> {
        Ok(HostState::list_links(self).await?)
    }
    async fn set_down(&mut self, name: String) -> Result<(), WitError> {
        Ok(HostState::set_down(self, name).await?)
    }
    async fn set_mac(&mut self, name: String, m: MacAddress) -> Result<(), WitError> {
        Ok(HostState::set_mac(self, name, mac(&m)).await?)
    }
    async fn create_ipip(
        &mut self,
        name: String,
        local: Option<IpAddress>,
        remote: Option<IpAddress>,
        parent: Option<String>,
    ) -> Result<(), WitError> {
        let (l, r) = (local.as_ref().map(ip), remote.as_ref().map(ip));
        Ok(HostState::create_ipip(self, name, l, r, parent).await?)
    }
    async fn create_geneve(
        &mut self,
        name: String,
        vni: u32,
        remote: IpAddress,
        port: u16,
    ) -> Result<(), WitError> {
        Ok(HostState::create_geneve(self, name, vni, ip(&remote), port).await?)
    }
    async fn create_wireguard(&mut self, name: String) -> Result<(), WitError> {
        Ok(HostState::create_wireguard(self, name).await?)
    }
}

fn route(r: host_net::Route) -> Result<RouteRequest, HostError> {
    use crate::net::step::RouteKind;
    Ok(RouteRequest {
        dst: prefix(&r.destination)?,
        via: r.next_hop.as_ref().map(ip),
        link: r.link,
        metric: r.metric,
        table: r.table,
        kind: match r.kind {
            host_net::RouteKind::Unicast => RouteKind::Unicast,
            host_net::RouteKind::Blackhole => RouteKind::Blackhole,
            host_net::RouteKind::Unreachable => RouteKind::Unreachable,
            host_net::RouteKind::Prohibit => RouteKind::Prohibit,
        },
    })
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
        self.log_line(level(l), &message);
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.config_get(&key)
    }
    async fn keys(&mut self) -> Vec<String> {
        self.config_keys()
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

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.gate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_plugins_is_cleaned() {
        assert_eq!(clean("a\u{1b}[31mb\nc", 100), "a·[31mb·c");
        assert_eq!(clean("abcdef", 3), "abc…");
    }
}
