//! Kernel steps: one kernel change each, serialisable (journals and undo logs are lists of
//! them), with an inverse computed without looking at the kernel (except a sysctl's old
//! value, read while applying). Pure data: [`super::Tx`] applies them.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::link::MacvlanMode;
use crate::firewall::FwChange;

/// Which namespace a step happens in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsRef {
    /// The engine's host namespace.
    Host,
    /// A namespace file (a sandbox's pin, or /proc/PID/ns/net).
    Path(PathBuf),
}

/// What a route does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    #[default]
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

/// One kernel change. Create-like steps have an inverse; `Del*` steps are what inverses are
/// made of and have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// A dummy link in the host namespace, up.
    Dummy {
        name: String,
    },
    /// A bridge in the host namespace, up.
    Bridge {
        name: String,
        mtu: Option<u32>,
        mac: Option<String>,
    },
    /// A veth pair: `name` in the host namespace (up, optionally enslaved to `master`),
    /// `peer` created directly in `peer_ns` (up, optional MAC).
    Veth {
        name: String,
        peer: String,
        peer_ns: NsRef,
        master: Option<String>,
        mtu: Option<u32>,
        peer_mac: Option<String>,
        group: Option<u32>,
        /// The sandbox end gets IPv6 link-local addresses (IPv6 networks only; elsewhere it
        /// gets no IPv6 address at all, as Docker's containers on IPv4-only networks).
        #[serde(default)]
        peer_ipv6: bool,
    },
    /// A macvlan on host link `parent`, created directly in `ns` as `name`, up.
    Macvlan {
        name: String,
        parent: String,
        mode: MacvlanMode,
        ns: NsRef,
        mac: Option<String>,
        mtu: Option<u32>,
        /// IPv6 link-local addresses on it (IPv6 networks only).
        #[serde(default)]
        ipv6: bool,
    },
    /// A VXLAN device in the host namespace.
    Vxlan {
        name: String,
        vni: u32,
        local: Option<IpAddr>,
        dev: Option<String>,
        port: u16,
        learning: bool,
        mtu: Option<u32>,
        master: Option<String>,
        /// Answer ARP and neighbour solicitations arriving on it from its neighbour table
        /// (no broadcast crosses the underlay).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        proxy: bool,
    },
    /// An 802.1q sub-interface of a host link.
    Vlan {
        name: String,
        parent: String,
        id: u16,
    },
    /// Move a host link into `to`, renamed `new_name`, and bring it up.
    MoveLink {
        name: String,
        to: NsRef,
        new_name: String,
        mtu: Option<u32>,
        mac: Option<String>,
    },
    /// Bring a link up.
    LinkUp {
        ns: NsRef,
        name: String,
    },
    /// Set a link's MTU.
    SetMtu {
        ns: NsRef,
        name: String,
        mtu: u32,
    },
    /// Enslave a link to a bridge.
    SetMaster {
        ns: NsRef,
        name: String,
        master: String,
    },
    /// Put a bridge port in hairpin mode: a sandbox reaching its own published port through
    /// the host's address is answered through the port it asked from (with br_netfilter the
    /// DNAT happens on the bridge, which otherwise never sends a frame back where it came from).
    Hairpin {
        name: String,
    },
    Address {
        ns: NsRef,
        link: String,
        addr: IpNetwork,
    },
    Route {
        ns: NsRef,
        dst: IpNetwork,
        via: Option<IpAddr>,
        dev: String,
        metric: Option<u32>,
        onlink: bool,
    },
    /// A route with a table and a kind (blackhole, unreachable, prohibit need no device).
    RouteEx {
        ns: NsRef,
        dst: IpNetwork,
        via: Option<IpAddr>,
        dev: Option<String>,
        metric: Option<u32>,
        /// None: the main table.
        table: Option<u32>,
        kind: RouteKind,
    },
    /// Take a link down (the inverse brings it up again).
    LinkDown {
        ns: NsRef,
        name: String,
    },
    /// Rename a link (down: the kernel renames no link that is up); the inverse renames it
    /// back. A removal parks a veth's end this way in a namespace that stays (see
    /// `Tx::teardown_deferring`).
    RenameLink {
        ns: NsRef,
        name: String,
        new_name: String,
    },
    /// Set a link's MAC; the inverse restores the one found.
    SetMac {
        ns: NsRef,
        name: String,
        mac: String,
    },
    /// An IPv4-in-IPv4 tunnel in the host namespace.
    Ipip {
        name: String,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        dev: Option<String>,
    },
    /// A GENEVE device in the host namespace.
    Geneve {
        name: String,
        vni: u32,
        remote: IpAddr,
        port: u16,
    },
    /// A WireGuard device in the host namespace.
    Wireguard {
        name: String,
    },
    /// A permanent neighbour entry, or a proxy entry (`mac: None`).
    Neigh {
        ns: NsRef,
        link: String,
        ip: IpAddr,
        mac: Option<String>,
    },
    /// A VXLAN FDB entry: frames for `mac` go to `dst`.
    Fdb {
        link: String,
        mac: String,
        dst: IpAddr,
    },
    /// Set a sysctl; the inverse restores the value found, unless `keep` (engine-wide
    /// settings others may rely on too, such as `net/ipv4/ip_forward`, are never undone).
    Sysctl {
        ns: NsRef,
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep: bool,
    },
    Firewall {
        change: FwChange,
    },
    /// A new network namespace pinned at `pin`, with `lo` up.
    Netns {
        pin: PathBuf,
    },
    DelNetns {
        pin: PathBuf,
    },
    /// Delete a link. `peer`: the other end of a veth, which goes with it.
    DelLink {
        ns: NsRef,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<(NsRef, String)>,
    },
    DelAddress {
        ns: NsRef,
        link: String,
        addr: IpNetwork,
    },
    DelRoute {
        ns: NsRef,
        dst: IpNetwork,
        via: Option<IpAddr>,
        dev: String,
        metric: Option<u32>,
    },
    DelRouteEx {
        ns: NsRef,
        dst: IpNetwork,
        via: Option<IpAddr>,
        dev: Option<String>,
        metric: Option<u32>,
        table: Option<u32>,
        kind: RouteKind,
    },
    DelNeigh {
        ns: NsRef,
        link: String,
        ip: IpAddr,
        proxy: bool,
    },
    DelFdb {
        link: String,
        mac: String,
        dst: IpAddr,
    },
}

impl Step {
    /// Short name of the step kind (used by fault injection and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Bridge { .. } => "bridge",
            Step::Veth { .. } => "veth",
            Step::Macvlan { .. } => "macvlan",
            Step::Dummy { .. } => "dummy",
            Step::Vxlan { .. } => "vxlan",
            Step::Vlan { .. } => "vlan",
            Step::MoveLink { .. } => "move",
            Step::LinkUp { .. } => "up",
            Step::SetMaster { .. } => "master",
            Step::SetMtu { .. } => "mtu",
            Step::Hairpin { .. } => "hairpin",
            Step::Address { .. } => "address",
            Step::Route { .. } | Step::RouteEx { .. } => "route",
            Step::LinkDown { .. } => "down",
            Step::RenameLink { .. } => "rename",
            Step::SetMac { .. } => "mac",
            Step::Ipip { .. } => "ipip",
            Step::Geneve { .. } => "geneve",
            Step::Wireguard { .. } => "wireguard",
            Step::DelRouteEx { .. } => "del-route",
            Step::Neigh { .. } => "neigh",
            Step::Fdb { .. } => "fdb",
            Step::Sysctl { .. } => "sysctl",
            Step::Firewall { .. } => "firewall",
            Step::Netns { .. } => "netns",
            Step::DelNetns { .. } => "del-netns",
            Step::DelLink { .. } => "del-link",
            Step::DelAddress { .. } => "del-address",
            Step::DelRoute { .. } => "del-route",
            Step::DelNeigh { .. } => "del-neigh",
            Step::DelFdb { .. } => "del-fdb",
        }
    }

    /// The inverse, when it can be computed without looking at the kernel.
    /// (Sysctl's inverse needs the old value and is computed while applying.)
    pub fn inverse(&self) -> Option<Step> {
        Some(match self {
            Step::Bridge { name, .. }
            | Step::Vlan { name, .. }
            | Step::Vxlan { name, .. }
            | Step::Ipip { name, .. }
            | Step::Geneve { name, .. }
            | Step::Wireguard { name }
            | Step::Dummy { name } => Step::DelLink {
                ns: NsRef::Host,
                name: name.clone(),
                peer: None,
            },
            Step::Veth {
                name,
                peer,
                peer_ns,
                ..
            } => Step::DelLink {
                ns: NsRef::Host,
                name: name.clone(),
                peer: Some((peer_ns.clone(), peer.clone())),
            },
            Step::Macvlan { name, ns, .. } => Step::DelLink {
                ns: ns.clone(),
                name: name.clone(),
                peer: None,
            },
            Step::MoveLink { to, new_name, .. } => Step::DelLink {
                ns: to.clone(),
                name: new_name.clone(),
                peer: None,
            },
            Step::Address { ns, link, addr } => Step::DelAddress {
                ns: ns.clone(),
                link: link.clone(),
                addr: *addr,
            },
            Step::Route {
                ns,
                dst,
                via,
                dev,
                metric,
                ..
            } => Step::DelRoute {
                ns: ns.clone(),
                dst: *dst,
                via: *via,
                dev: dev.clone(),
                metric: *metric,
            },
            Step::RouteEx {
                ns,
                dst,
                via,
                dev,
                metric,
                table,
                kind,
            } => Step::DelRouteEx {
                ns: ns.clone(),
                dst: *dst,
                via: *via,
                dev: dev.clone(),
                metric: *metric,
                table: *table,
                kind: *kind,
            },
            Step::LinkDown { ns, name } => Step::LinkUp {
                ns: ns.clone(),
                name: name.clone(),
            },
            Step::RenameLink { ns, name, new_name } => Step::RenameLink {
                ns: ns.clone(),
                name: new_name.clone(),
                new_name: name.clone(),
            },
            Step::Neigh { ns, link, ip, mac } => Step::DelNeigh {
                ns: ns.clone(),
                link: link.clone(),
                ip: *ip,
                proxy: mac.is_none(),
            },
            Step::Fdb { link, mac, dst } => Step::DelFdb {
                link: link.clone(),
                mac: mac.clone(),
                dst: *dst,
            },
            Step::Firewall { change } => Step::Firewall {
                change: change.inverse(),
            },
            Step::Netns { pin } => Step::DelNetns { pin: pin.clone() },
            Step::LinkUp { .. }
            | Step::SetMaster { .. }
            | Step::SetMtu { .. }
            | Step::Hairpin { .. }
            | Step::SetMac { .. }
            | Step::Sysctl { .. } => return None,
            Step::DelLink { .. }
            | Step::DelAddress { .. }
            | Step::DelRoute { .. }
            | Step::DelNeigh { .. }
            | Step::DelNetns { .. }
            | Step::DelRouteEx { .. }
            | Step::DelFdb { .. } => return None,
        })
    }

    /// A removal (`Del*`, a firewall removal): what inverses are made of.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Step::DelLink { .. }
                | Step::DelAddress { .. }
                | Step::DelRoute { .. }
                | Step::DelNeigh { .. }
                | Step::DelNetns { .. }
                | Step::DelRouteEx { .. }
                | Step::DelFdb { .. }
                | Step::Firewall {
                    change: crate::firewall::FwChange::Remove(_)
                }
        )
    }

    /// The (namespace, link) this step acts on, if it acts on one link.
    pub fn target_link(&self) -> Option<(&NsRef, &str)> {
        match self {
            Step::DelAddress { ns, link, .. } | Step::DelNeigh { ns, link, .. } => Some((ns, link)),
            Step::DelRoute { ns, dev, .. } => Some((ns, dev)),
            Step::DelRouteEx {
                ns, dev: Some(dev), ..
            } => Some((ns, dev)),
            Step::DelFdb { link, .. } => Some((&NsRef::Host, link)),
            // Per-interface sysctls (net/ipv6/conf/<if>/…) go with the interface.
            Step::Sysctl { ns, key, .. } => {
                let mut parts = key.split('/');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some("net"), Some(_), Some("conf" | "neigh"), Some(ifname))
                        if !["all", "default"].contains(&ifname) =>
                    {
                        Some((ns, ifname))
                    }
                    _ => None,
                }
            }
            Step::DelLink { ns, name, .. } => Some((ns, name)),
            _ => None,
        }
    }

    /// The namespace the step acts in.
    pub fn ns(&self) -> Option<&NsRef> {
        match self {
            Step::Macvlan { ns, .. }
            | Step::LinkUp { ns, .. }
            | Step::SetMaster { ns, .. }
            | Step::Address { ns, .. }
            | Step::SetMtu { ns, .. }
            | Step::Route { ns, .. }
            | Step::RouteEx { ns, .. }
            | Step::LinkDown { ns, .. }
            | Step::RenameLink { ns, .. }
            | Step::SetMac { ns, .. }
            | Step::Neigh { ns, .. }
            | Step::Sysctl { ns, .. }
            | Step::DelLink { ns, .. }
            | Step::DelAddress { ns, .. }
            | Step::DelRoute { ns, .. }
            | Step::DelRouteEx { ns, .. }
            | Step::DelNeigh { ns, .. } => Some(ns),
            _ => Some(&NsRef::Host),
        }
    }
}
