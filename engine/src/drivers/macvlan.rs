//! The macvlan driver: each endpoint is a macvlan link on the network's parent interface,
//! created directly inside the sandbox with the endpoint's address and MAC, so containers
//! sit on the parent's LAN. `-o parent=IFACE.VLAN` makes the 802.1q sub-interface when it is
//! missing (and removes it with the network); without a parent, the network is internal
//! and rides on a link weft makes (a dummy, or a veth pair where the kernel has no dummy).

use async_trait::async_trait;

use super::Ctx;
use super::{mtu_option, DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver};
use crate::error::{Error, Result};
use crate::ipam::native::overlaps;
use crate::model::{Network, Scope};
use crate::net::{MacvlanMode, NsRef, Step};

pub const OPT_PARENT: &str = "parent";
pub const OPT_MODE: &str = "macvlan_mode";

pub struct Macvlan;

fn mode(net: &Network) -> Result<MacvlanMode> {
    match net.option(OPT_MODE) {
        None | Some("") => Ok(MacvlanMode::Bridge),
        Some(m) => MacvlanMode::parse(m).ok_or_else(|| {
            Error::invalid(format!(
                "macvlan mode {m:?} is not supported: use bridge, private, vepa or passthru"
            ))
        }),
    }
}

/// The parent the network uses (given, or the link weft made for a parentless network).
fn parent(net: &Network) -> Option<String> {
    net.driver_data
        .get("parent")
        .cloned()
        .or_else(|| net.option(OPT_PARENT).map(str::to_string))
}

#[async_trait]
impl NetworkDriver for Macvlan {
    fn name(&self) -> &str {
        "macvlan"
    }

    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: true,
            attachment: super::Attachment::Endpoints,
            external_connectivity: false,
            long_calls: false,
        }
    }

    fn validate(&self, net: &Network, existing: &[Network]) -> Result<()> {
        let my_mode = mode(net)?;
        mtu_option(net)?;
        let Some(p) = net.option(OPT_PARENT) else {
            return Ok(());
        };
        if p.is_empty() {
            return Err(Error::invalid(
                "the parent option is empty: give -o parent=IFACE, or leave it out for an internal macvlan network",
            ));
        }
        if !crate::net::link::valid_ifname(p) {
            return Err(Error::invalid(format!(
                "invalid parent interface name {p:?}"
            )));
        }
        for other in existing
            .iter()
            .filter(|n| n.driver == "macvlan" && parent(n).as_deref() == Some(p))
        {
            let other_mode = mode(other)?;
            if other_mode == MacvlanMode::Passthru {
                return Err(Error::Conflict(format!(
                    "parent interface {p} is already used by network {} in passthru mode: a passthru parent carries one network only",
                    other.name
                )));
            }
            if my_mode == MacvlanMode::Passthru {
                return Err(Error::Conflict(format!(
                    "network {} already uses parent interface {p}: passthru mode needs the parent to itself",
                    other.name
                )));
            }
            for mine in &net.pools {
                if let Some(theirs) = other
                    .pools
                    .iter()
                    .find(|o| overlaps(&o.subnet, &mine.subnet))
                {
                    return Err(Error::Conflict(format!(
                        "network {} already uses parent interface {p} with the overlapping subnet {}",
                        other.name, theirs.subnet
                    )));
                }
            }
        }
        Ok(())
    }

    async fn create_network(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> Result<()> {
        let id12 = net.id[..12].to_string();
        let parent = match net.option(OPT_PARENT).map(str::to_string) {
            Some(p) => {
                if ctx.tx.link(&NsRef::Host, &p).await?.is_none() {
                    // IFACE.VLAN: make the 802.1q sub-interface on IFACE.
                    let Some((base, vid)) = p.rsplit_once('.') else {
                        return Err(Error::invalid(format!(
                            "-o parent interface was not found on the host: {p}"
                        )));
                    };
                    let vid: u16 = vid
                        .parse()
                        .ok()
                        .filter(|v| (1..=4094).contains(v))
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "invalid VLAN id in parent {p}: use IFACE.N with N in 1–4094"
                            ))
                        })?;
                    if ctx.tx.link(&NsRef::Host, base).await?.is_none() {
                        return Err(Error::invalid(format!(
                            "-o parent interface was not found on the host: {base}"
                        )));
                    }
                    match ctx.tx.apply(Step::Vlan { name: p.clone(), parent: base.to_string(), id: vid }).await {
                        Ok(()) => {}
                        Err(e) if e.errno == Some(libc::EOPNOTSUPP) => {
                            return Err(Error::invalid(format!(
                                "cannot create the 802.1q sub-interface {p}: this kernel has no VLAN support (CONFIG_VLAN_8021Q); \
                                 create {p} yourself or use a parent without a VLAN id"
                            )))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                p
            }
            None => {
                // Docker makes a dummy link; this kernel may have no dummy type.
                let name = format!("dm-{id12}");
                match ctx.tx.apply(Step::Dummy { name: name.clone() }).await {
                    Ok(()) => {}
                    Err(e) if e.errno == Some(libc::EOPNOTSUPP) => {
                        tracing::warn!(
                            network = %net.name,
                            "this kernel has no dummy links: the internal macvlan network rides on a veth pair ({name}, dp-{id12}) instead"
                        );
                        ctx.tx
                            .apply(Step::Veth {
                                name: name.clone(),
                                peer: format!("dp-{id12}"),
                                peer_ns: NsRef::Host,
                                master: None,
                                mtu: None,
                                peer_mac: None,
                                group: None,
                                peer_ipv6: false,
                            })
                            .await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                // Without a parent there is no way out: like Docker, the network is internal.
                net.internal = true;
                name
            }
        };
        net.driver_data.insert("parent".into(), parent);
        Ok(())
    }

    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
        target: &JoinTarget,
    ) -> Result<JoinInfo> {
        let parent = parent(net).ok_or_else(|| {
            Error::internal(format!("macvlan network {} has no parent", net.name))
        })?;
        let mode = mode(net)?;
        let r = ctx
            .tx
            .apply(Step::Macvlan {
                name: target.ifname.clone(),
                parent: parent.clone(),
                mode,
                ns: target.ns.clone(),
                mac: Some(ep.mac.clone()),
                mtu: mtu_option(net)?,
                ipv6: ep.ipv6.is_some(),
            })
            .await;
        match r {
            // The kernel says EINVAL (or EBUSY) to a second macvlan on a passthru parent.
            Err(e) if mode == MacvlanMode::Passthru && matches!(e.errno, Some(libc::EINVAL) | Some(libc::EBUSY)) => {
                return Err(Error::Conflict(format!(
                    "parent interface {parent} is busy: in passthru mode a parent carries one endpoint only"
                )))
            }
            Err(e) if e.errno == Some(libc::ENODEV) => {
                return Err(Error::invalid(format!("parent interface {parent} of network {} is gone", net.name)))
            }
            r => r?,
        }
        let mut info = JoinInfo::placed();
        info.mtu = mtu_option(net)?;
        if !net.internal {
            info.gateway4 = net.pools_v4().find_map(|p| p.gateway);
            info.gateway6 = net.pools_v6().find_map(|p| p.gateway);
        }
        Ok(info)
    }
}
