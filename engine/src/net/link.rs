//! rtnetlink, typed: one [`Netlink`] connection per namespace, and the link, address, route,
//! neighbour and FDB operations weft needs. Each call is one netlink request; errors carry
//! the operation and the errno.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use futures::StreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, InfoVlan, InfoVxlan, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};

use super::{ns, NetError};

/// A name the kernel accepts for a link, and that is safe in paths and nft rules: at most
/// 15 characters of letters, digits, '-', '_' and '.'.
pub fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// macvlan modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Bridge,
    Private,
    Vepa,
    Passthru,
}

impl MacvlanMode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bridge" => Self::Bridge,
            "private" => Self::Private,
            "vepa" => Self::Vepa,
            "passthru" => Self::Passthru,
            _ => return None,
        })
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Private => "private",
            Self::Vepa => "vepa",
            Self::Passthru => "passthru",
        }
    }
}

/// What kind of link to create.
#[derive(Debug, Clone)]
pub enum NewKind {
    Bridge,
    Dummy,
    Veth {
        peer: String,
        peer_ns: Option<RawFd>,
        peer_mac: Option<[u8; 6]>,
    },
    Macvlan {
        parent: u32,
        mode: MacvlanMode,
    },
    Vxlan {
        vni: u32,
        local: Option<IpAddr>,
        dev: Option<u32>,
        port: u16,
        learning: bool,
        proxy: bool,
    },
    Vlan {
        parent: u32,
        id: u16,
    },
    Ipip {
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        dev: Option<u32>,
    },
    Geneve {
        vni: u32,
        remote: IpAddr,
        port: u16,
    },
    Wireguard,
}

/// A link to create, with everything that can be set in the creating message.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub name: String,
    pub kind: NewKind,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub master: Option<u32>,
    pub up: bool,
    /// Create it directly in this namespace.
    pub netns: Option<RawFd>,
    pub group: Option<u32>,
}

impl NewLink {
    pub fn new(name: impl Into<String>, kind: NewKind) -> Self {
        NewLink {
            name: name.into(),
            kind,
            mtu: None,
            mac: None,
            master: None,
            up: false,
            netns: None,
            group: None,
        }
    }
}

/// What weft reads back about a link.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub master: Option<u32>,
    pub up: bool,
    pub kind: Option<String>,
    /// IFLA_LINK: the parent (macvlan/vlan) or the peer index (veth).
    pub link: Option<u32>,
    /// IFLA_GROUP (weft marks its host links: [`super::kernel::WEFT_GROUP`]).
    pub group: u32,
}

/// A route as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    pub kind: super::step::RouteKind,
}

/// One rtnetlink connection, bound to the namespace it was opened in. Clones share it.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Open a connection in `ns` (or the calling thread's namespace). Must run inside a tokio
    /// runtime: the connection's task is spawned on it and ends when the handle is dropped.
    pub fn open(ns: Option<&File>) -> Result<Netlink, NetError> {
        let (conn, handle, _) = ns::run_in(ns, rtnetlink::new_connection)?
            .map_err(|e| NetError::io("open rtnetlink socket", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    async fn send(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut h = self.handle.clone();
        let mut resp = match h.request(req) {
            Ok(r) => r,
            Err(e) => return Err(NetError::other(what(), e.to_string())),
        };
        let mut out = Vec::new();
        let mut err = None;
        while let Some(m) = resp.next().await {
            match m.payload {
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        err = Some(-code.get());
                    }
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
        }
        match err {
            Some(code) => Err(NetError::errno(what(), code)),
            None => Ok(out),
        }
    }

    // ---------------------------------------------------------------- links

    pub async fn create_link(&self, l: &NewLink) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(l.name.clone()));
        if let Some(mtu) = l.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = l.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(master) = l.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(fd) = l.netns {
            m.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        if let Some(g) = l.group {
            m.attributes.push(LinkAttribute::Group(g));
        }
        if l.up {
            m.header.flags |= LinkFlags::Up;
            m.header.change_mask |= LinkFlags::Up;
        }
        let (kind, data) = match &l.kind {
            NewKind::Bridge => (InfoKind::Bridge, None),
            NewKind::Dummy => (InfoKind::Dummy, None),
            NewKind::Veth {
                peer,
                peer_ns,
                peer_mac,
            } => {
                // The peer cannot be created up: veth_open() fails with ENOTCONN until both
                // ends are linked. The caller brings it up afterwards.
                let mut p = LinkMessage::default();
                p.attributes.push(LinkAttribute::IfName(peer.clone()));
                if let Some(mtu) = l.mtu {
                    p.attributes.push(LinkAttribute::Mtu(mtu));
                }
                if let Some(mac) = peer_mac {
                    p.attributes.push(LinkAttribute::Address(mac.to_vec()));
                }
                if let Some(fd) = peer_ns {
                    p.attributes.push(LinkAttribute::NetNsFd(*fd));
                }
                (InfoKind::Veth, Some(InfoData::Veth(InfoVeth::Peer(p))))
            }
            NewKind::Macvlan { parent, mode } => {
                m.attributes.push(LinkAttribute::Link(*parent));
                let mode = match mode {
                    MacvlanMode::Bridge => MacVlanMode::Bridge,
                    MacvlanMode::Private => MacVlanMode::Private,
                    MacvlanMode::Vepa => MacVlanMode::Vepa,
                    MacvlanMode::Passthru => MacVlanMode::Passthrough,
                };
                (
                    InfoKind::MacVlan,
                    Some(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
                )
            }
            NewKind::Vxlan {
                vni,
                local,
                dev,
                port,
                learning,
                proxy,
            } => {
                let mut v = vec![
                    InfoVxlan::Id(*vni),
                    InfoVxlan::Port(*port),
                    InfoVxlan::Learning(*learning),
                ];
                if *proxy {
                    v.push(InfoVxlan::Proxy(true));
                }
                match local {
                    Some(IpAddr::V4(a)) => v.push(InfoVxlan::Local(*a)),
                    Some(IpAddr::V6(a)) => v.push(InfoVxlan::Local6(*a)),
                    None => {}
                }
                if let Some(d) = dev {
                    v.push(InfoVxlan::Link(*d));
                }
                (InfoKind::Vxlan, Some(InfoData::Vxlan(v)))
            }
            NewKind::Vlan { parent, id } => {
                m.attributes.push(LinkAttribute::Link(*parent));
                (
                    InfoKind::Vlan,
                    Some(InfoData::Vlan(vec![InfoVlan::Id(*id)])),
                )
            }
            NewKind::Ipip { local, remote, dev } => {
                use rtnetlink::packet_route::link::InfoIpTunnel;
                let mut v = Vec::new();
                if let Some(l) = local {
                    v.push(InfoIpTunnel::Local(*l));
                }
                if let Some(r) = remote {
                    v.push(InfoIpTunnel::Remote(*r));
                }
                if let Some(d) = dev {
                    v.push(InfoIpTunnel::Link(*d));
                }
                (InfoKind::IpIp, Some(InfoData::IpTunnel(v)))
            }
            NewKind::Geneve { vni, remote, port } => {
                use rtnetlink::packet_route::link::InfoGeneve;
                let mut v = vec![InfoGeneve::Id(*vni), InfoGeneve::Port(*port)];
                match remote {
                    IpAddr::V4(a) => v.push(InfoGeneve::Remote(*a)),
                    IpAddr::V6(a) => v.push(InfoGeneve::Remote6(*a)),
                }
                (InfoKind::Geneve, Some(InfoData::Geneve(v)))
            }
            NewKind::Wireguard => (InfoKind::Wireguard, None),
        };
        let mut info = vec![LinkInfo::Kind(kind)];
        if let Some(d) = data {
            info.push(LinkInfo::Data(d));
        }
        m.attributes.push(LinkAttribute::LinkInfo(info));
        self.send(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            || format!("create link {}", l.name),
        )
        .await
        .map(|_| ())
    }

    /// Look a link up by name; `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<LinkState>, NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self
            .send(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST, || {
                format!("look up link {name}")
            })
            .await
        {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_state(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of a link that must exist.
    pub async fn index(&self, name: &str) -> Result<u32, NetError> {
        self.link(name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| NetError::errno(format!("look up link {name}"), libc::ENODEV))
    }

    pub async fn links(&self) -> Result<Vec<LinkState>, NetError> {
        let m = LinkMessage::default();
        let msgs = self
            .send(
                RouteNetlinkMessage::GetLink(m),
                NLM_F_REQUEST | NLM_F_DUMP,
                || "list links".into(),
            )
            .await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_state(l)),
                _ => None,
            })
            .collect())
    }

    /// Change a link's settings (by index).
    pub async fn set_link(&self, index: u32, change: &LinkChange) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if let Some(up) = change.up {
            m.header.change_mask |= LinkFlags::Up;
            if up {
                m.header.flags |= LinkFlags::Up;
            }
        }
        if let Some(mtu) = change.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = change.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(master) = change.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(name) = &change.name {
            m.attributes.push(LinkAttribute::IfName(name.clone()));
        }
        if let Some(fd) = change.netns {
            m.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        if let Some(g) = change.group {
            m.attributes.push(LinkAttribute::Group(g));
        }
        self.send(
            RouteNetlinkMessage::SetLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("change link #{index}"),
        )
        .await
        .map(|_| ())
    }

    /// Set a bridge port's hairpin mode: frames may leave through the port they came in by.
    pub async fn set_bridge_port_hairpin(&self, index: u32, on: bool) -> Result<(), NetError> {
        let m = rtnetlink::LinkBridgePort::new(index)
            .append_info_data(rtnetlink::packet_route::link::InfoBridgePort::HairpinMode(
                on,
            ))
            .build();
        self.send(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("set bridge port #{index} hairpin"),
        )
        .await
        .map(|_| ())
    }

    /// Put a link (by name) into a link group.
    pub async fn set_group_by_name(&self, name: &str, group: u32) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Group(group));
        self.send(
            RouteNetlinkMessage::SetLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("set group of link {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Stop a link (by name) from ever getting IPv6 link-local addresses: no DAD, MLD or
    /// router solicitation timers for links that are only bridge ports. Must happen while
    /// the link is down.
    pub async fn set_no_ipv6_ll_by_name(&self, name: &str) -> Result<(), NetError> {
        use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode};
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        self.send(
            RouteNetlinkMessage::SetLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("set addrgenmode none on link {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Set an IPv4 per-device setting (`net.ipv4.conf.<link>.*`) over netlink: no /proc
    /// lookup, which costs more the more namespaces the host has.
    /// `id` is the kernel's IPV4_DEVCONF_* number (1 forwarding, 3 proxy_arp).
    pub async fn set_inet_conf(&self, index: u32, id: u16, value: u32) -> Result<(), NetError> {
        use rtnetlink::packet_core::{DefaultNla, Emitable, NLA_F_NESTED};
        fn nested(kind: u16, inner: Vec<DefaultNla>) -> DefaultNla {
            let mut buf = vec![0u8; inner.as_slice().buffer_len()];
            inner.as_slice().emit(&mut buf);
            DefaultNla::new(kind | NLA_F_NESTED, buf)
        }
        const IFLA_AF_SPEC: u16 = 26;
        const IFLA_INET_CONF: u16 = 1;
        let conf = nested(
            IFLA_INET_CONF,
            vec![DefaultNla::new(id, value.to_ne_bytes().to_vec())],
        );
        let spec = nested(IFLA_AF_SPEC, vec![nested(libc::AF_INET as u16, vec![conf])]);
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Other(spec));
        self.send(
            RouteNetlinkMessage::SetLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("set IPv4 setting {id} on link #{index}"),
        )
        .await
        .map(|_| ())
    }

    /// `net.ipv4.neigh.<link>.proxy_delay`, over netlink (milliseconds).
    pub async fn set_proxy_delay(&self, index: u32, ms: u64) -> Result<(), NetError> {
        use rtnetlink::packet_route::neighbour_table::{
            NeighbourTableAttribute, NeighbourTableMessage, NeighbourTableParameter,
        };
        let mut m = NeighbourTableMessage::default();
        m.header.family = AddressFamily::Inet;
        m.attributes
            .push(NeighbourTableAttribute::Name("arp_cache".into()));
        m.attributes.push(NeighbourTableAttribute::Parms(vec![
            NeighbourTableParameter::Ifindex(index),
            NeighbourTableParameter::ProxyDelay(ms),
        ]));
        self.send(
            RouteNetlinkMessage::SetNeighbourTable(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("set proxy_delay on link #{index}"),
        )
        .await
        .map(|_| ())
    }

    /// Bring a link up, by name (one message, no index lookup).
    pub async fn set_up_by_name(&self, name: &str) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.flags |= LinkFlags::Up;
        m.header.change_mask |= LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.send(
            RouteNetlinkMessage::SetLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("bring up link {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Delete a link by name. Deleting one end of a veth deletes both.
    pub async fn delete_link(&self, name: &str) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.send(
            RouteNetlinkMessage::DelLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("delete link {name}"),
        )
        .await
        .map(|_| ())
    }

    /// Delete every link of a group in one message (one RCU grace period for all of them).
    pub async fn delete_group(&self, group: u32) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::Group(group));
        self.send(
            RouteNetlinkMessage::DelLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("delete link group {group}"),
        )
        .await
        .map(|_| ())
    }

    // ------------------------------------------------------------ addresses

    pub async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), NetError> {
        let m = address_message(index, addr, true);
        self.send(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            || format!("add address {addr} to link #{index}"),
        )
        .await
        .map(|_| ())
    }

    pub async fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), NetError> {
        let m = address_message(index, addr, false);
        self.send(
            RouteNetlinkMessage::DelAddress(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("delete address {addr} from link #{index}"),
        )
        .await
        .map(|_| ())
    }

    // --------------------------------------------------------------- routes

    pub async fn add_route(&self, r: &RouteSpec) -> Result<(), NetError> {
        let m = route_message(r);
        self.send(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            || format!("add route {r}"),
        )
        .await
        .map(|_| ())
    }

    pub async fn del_route(&self, r: &RouteSpec) -> Result<(), NetError> {
        let m = route_message(r);
        self.send(
            RouteNetlinkMessage::DelRoute(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("delete route {r}"),
        )
        .await
        .map(|_| ())
    }

    /// Routes of the main table, both families.
    pub async fn routes(&self) -> Result<Vec<RouteState>, NetError> {
        self.routes_in(RouteHeader::RT_TABLE_MAIN as u32).await
    }

    /// Routes of a table, both families.
    pub async fn routes_in(&self, want: u32) -> Result<Vec<RouteState>, NetError> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = fam;
            let msgs = self
                .send(
                    RouteNetlinkMessage::GetRoute(m),
                    NLM_F_REQUEST | NLM_F_DUMP,
                    || "list routes".into(),
                )
                .await?;
            for m in msgs {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                let table = r
                    .attributes
                    .iter()
                    .find_map(|a| {
                        if let RouteAttribute::Table(t) = a {
                            Some(*t)
                        } else {
                            None
                        }
                    })
                    .unwrap_or(r.header.table as u32);
                if table != want {
                    continue;
                }
                let mut dst = None;
                let mut gw = None;
                let mut oif = None;
                let mut metric = None;
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dst = route_addr(d),
                        RouteAttribute::Gateway(g) => gw = route_addr(g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Priority(p) => metric = Some(*p),
                        _ => {}
                    }
                }
                let dst = match dst {
                    Some(ip) => IpNetwork::new(ip, r.header.destination_prefix_length).ok(),
                    None => IpNetwork::new(
                        if fam == AddressFamily::Inet {
                            IpAddr::from([0u8; 4])
                        } else {
                            IpAddr::from([0u8; 16])
                        },
                        0,
                    )
                    .ok(),
                };
                if let Some(dst) = dst {
                    use super::step::RouteKind;
                    out.push(RouteState {
                        dst,
                        gateway: gw,
                        oif,
                        metric,
                        kind: match r.header.kind {
                            RouteType::BlackHole => RouteKind::Blackhole,
                            RouteType::Unreachable => RouteKind::Unreachable,
                            RouteType::Prohibit => RouteKind::Prohibit,
                            _ => RouteKind::Unicast,
                        },
                    });
                }
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------ neighbours, FDB

    /// A permanent neighbour entry (ip → mac on a link), or a proxy entry when `mac` is None.
    pub async fn add_neigh(
        &self,
        index: u32,
        ip: IpAddr,
        mac: Option<[u8; 6]>,
    ) -> Result<(), NetError> {
        let m = neigh_message(index, ip, mac);
        self.send(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add neighbour {ip} on link #{index}"),
        )
        .await
        .map(|_| ())
    }

    pub async fn del_neigh(&self, index: u32, ip: IpAddr, proxy: bool) -> Result<(), NetError> {
        let m = neigh_message(index, ip, if proxy { None } else { Some([0; 6]) });
        self.send(
            RouteNetlinkMessage::DelNeighbour(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("delete neighbour {ip} on link #{index}"),
        )
        .await
        .map(|_| ())
    }

    /// A forwarding-database entry on a VXLAN device: frames for `mac` go to `dst`
    /// (all-zero `mac` = flood to `dst`; several such entries are appended).
    pub async fn add_fdb(&self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<(), NetError> {
        let m = fdb_message(index, mac, dst);
        let flags = if mac == [0; 6] {
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        };
        self.send(RouteNetlinkMessage::NewNeighbour(m), flags, || {
            format!("add fdb entry {dst} on link #{index}")
        })
        .await
        .map(|_| ())
    }

    pub async fn del_fdb(&self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<(), NetError> {
        let m = fdb_message(index, mac, dst);
        self.send(
            RouteNetlinkMessage::DelNeighbour(m),
            NLM_F_REQUEST | NLM_F_ACK,
            || format!("delete fdb entry {dst} on link #{index}"),
        )
        .await
        .map(|_| ())
    }

    // -------------------------------------------------------------- dumps

    /// The addresses of a link (with their prefix lengths).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNetwork>, NetError> {
        Ok(self
            .all_addresses(index)
            .await?
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| a)
            .collect())
    }

    /// Every address in the namespace with its link's index (`hint`: the link asked about,
    /// which a kernel with strict dump checking lists alone; 0 for all).
    pub async fn all_addresses(&self, hint: u32) -> Result<Vec<(u32, IpNetwork)>, NetError> {
        let mut out = Vec::new();
        let mut m = AddressMessage::default();
        m.header.index = hint;
        let msgs = self
            .send(
                RouteNetlinkMessage::GetAddress(m),
                NLM_F_REQUEST | NLM_F_DUMP,
                || format!("list addresses of link #{hint}"),
            )
            .await?;
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                if let Ok(n) = IpNetwork::new(ip, a.header.prefix_len) {
                    out.push((a.header.index, n));
                }
            }
        }
        Ok(out)
    }

    /// Neighbour entries of a link: (address, is a proxy entry).
    pub async fn neighbours(&self, index: u32) -> Result<Vec<(IpAddr, bool)>, NetError> {
        let mut out = Vec::new();
        for proxy in [false, true] {
            for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
                let mut m = NeighbourMessage::default();
                m.header.family = fam;
                m.header.ifindex = index;
                if proxy {
                    m.header.flags = NeighbourFlags::Proxy;
                }
                let msgs = self
                    .send(
                        RouteNetlinkMessage::GetNeighbour(m),
                        NLM_F_REQUEST | NLM_F_DUMP,
                        || format!("list neighbours of link #{index}"),
                    )
                    .await?;
                for m in msgs {
                    let RouteNetlinkMessage::NewNeighbour(n) = m else {
                        continue;
                    };
                    if n.header.ifindex != index {
                        continue;
                    }
                    for a in &n.attributes {
                        if let NeighbourAttribute::Destination(d) = a {
                            let ip = match d {
                                NeighbourAddress::Inet(a) => IpAddr::V4(*a),
                                NeighbourAddress::Inet6(a) => IpAddr::V6(*a),
                                _ => continue,
                            };
                            out.push((ip, n.header.flags.contains(NeighbourFlags::Proxy)));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// FDB entries of a VXLAN device: (MAC, remote).
    pub async fn fdb(&self, index: u32) -> Result<Vec<([u8; 6], IpAddr)>, NetError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        let msgs = self
            .send(
                RouteNetlinkMessage::GetNeighbour(m),
                NLM_F_REQUEST | NLM_F_DUMP,
                || format!("list fdb of link #{index}"),
            )
            .await?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.ifindex != index {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        mac = Some(<[u8; 6]>::try_from(l.as_slice()).unwrap())
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        dst = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        dst = Some(IpAddr::V6(*a))
                    }
                    // In the bridge family the remote comes undecoded.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = match b.len() {
                            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b.as_slice()).unwrap())),
                            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b.as_slice()).unwrap())),
                            _ => None,
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(m), Some(d)) = (mac, dst) {
                out.push((m, d));
            }
        }
        Ok(out)
    }
}

/// Settings [`Netlink::set_link`] can change.
#[derive(Debug, Clone, Default)]
pub struct LinkChange {
    pub up: Option<bool>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// 0 = no master.
    pub master: Option<u32>,
    pub name: Option<String>,
    pub netns: Option<RawFd>,
    pub group: Option<u32>,
}

/// A route to add or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    /// Gateway is reachable on the link even though no prefix covers it (`onlink`).
    pub onlink: bool,
    /// None: the main table.
    pub table: Option<u32>,
    pub kind: super::step::RouteKind,
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(i) = self.oif {
            write!(f, " dev #{i}")?;
        }
        Ok(())
    }
}

fn link_state(l: LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: l.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        master: None,
        up: l.header.flags.contains(LinkFlags::Up),
        kind: None,
        link: None,
        group: 0,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n,
            LinkAttribute::Mtu(m) => s.mtu = m,
            LinkAttribute::Address(a) if a.len() == 6 => s.mac = Some(a.try_into().unwrap()),
            LinkAttribute::Controller(m) => s.master = Some(m),
            LinkAttribute::Link(i) => s.link = Some(i),
            LinkAttribute::Group(g) => s.group = g,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn address_message(index: u32, addr: IpNetwork, new: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = addr.prefix();
    let ip = addr.ip();
    match ip {
        IpAddr::V4(v4) => {
            m.header.family = AddressFamily::Inet;
            m.attributes.push(AddressAttribute::Local(ip));
            m.attributes.push(AddressAttribute::Address(ip));
            if new && addr.prefix() < 31 {
                if let IpNetwork::V4(n) = addr {
                    m.attributes
                        .push(AddressAttribute::Broadcast(n.broadcast()));
                }
            }
            let _ = v4;
        }
        IpAddr::V6(_) => {
            m.header.family = AddressFamily::Inet6;
            // No duplicate address detection: the address is usable at once.
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes.push(AddressAttribute::Address(ip));
        }
    }
    m
}

fn to_route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn route_message(r: &RouteSpec) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if r.dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = r.dst.prefix();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    if let Some(t) = r.table {
        if t < 256 {
            m.header.table = t as u8;
        } else {
            m.header.table = RouteHeader::RT_TABLE_UNSPEC;
            m.attributes.push(RouteAttribute::Table(t));
        }
    }
    m.header.protocol = RouteProtocol::Boot;
    use super::step::RouteKind;
    m.header.kind = match r.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
    };
    m.header.scope = if r.gateway.is_some() || r.kind != RouteKind::Unicast {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if r.onlink {
        m.header.flags |= rtnetlink::packet_route::route::RouteFlags::Onlink;
    }
    if r.dst.prefix() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(to_route_addr(r.dst.network())));
    }
    if let Some(g) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(to_route_addr(g)));
    }
    if let Some(i) = r.oif {
        m.attributes.push(RouteAttribute::Oif(i));
    }
    if let Some(p) = r.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    m
}

fn neigh_message(index: u32, ip: IpAddr, mac: Option<[u8; 6]>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }));
    match mac {
        Some(mac) => m
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec())),
        None => m.header.flags = NeighbourFlags::Proxy,
    }
    m
}

fn fdb_message(index: u32, mac: [u8; 6], dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(match dst {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    m
}

/// Raw fd of an open namespace file, for IFLA_NET_NS_FD.
pub fn ns_fd(f: &File) -> RawFd {
    f.as_raw_fd()
}
