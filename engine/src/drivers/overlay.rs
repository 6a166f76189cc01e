//! The overlay driver: one network across hosts (global scope, kept in the cluster store). On
//! each host that has endpoints on it: a bridge `ov-<id12>` holding the network's gateway
//! address — the way out of this host, masqueraded, as a bridge network's — and a VXLAN device
//! `vx-<id12>` (the network's VNI, UDP 4789, learning off, ARP proxy) enslaved to it. Remote
//! endpoints are programmed from the cluster store by [`crate::engine`]'s overlay sync: a
//! static FDB entry (MAC → the VTEP of the host it is on) and a permanent neighbour entry
//! (IP → MAC) on the VXLAN device, so nothing floods and no ARP crosses the underlay (the
//! device answers the sandboxes' ARP from those entries), as Flannel's vxlan backend does.
//!
//! In the host namespace, not a namespace per network as Docker's overlay: the bridge is then
//! the sandboxes' gateway with no second interface (Docker gives each container a
//! `docker_gwbridge` leg for that), and weft's firewall, published ports, DNS, `system check`
//! and repair treat it as they treat a bridge network's; the VXLAN devices of all networks share
//! the kernel's one socket on port 4789, told apart by VNI. (A host reaching a sandbox on another
//! host directly is not supported — each host answers for the gateway address — as with
//! Docker's overlay.)
//!
//! The VNI is claimed in the cluster store (`Meta` `cluster/vni/<n>`) by a compare-and-swap
//! with the network's creation: two hosts never get the same. MTU: the underlay's (the link
//! holding the VTEP address) minus 50 bytes of VXLAN headers, unless
//! `com.docker.network.driver.mtu` says otherwise. Without a cluster store the network is this
//! host's alone: the bridge, no VXLAN device.

use std::net::IpAddr;

use async_trait::async_trait;

use super::bridge::{join_bridge, make_bridge};
use super::{
    mtu_option, Ctx, DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver,
};
use crate::error::{Error, Result};
use crate::model::{Network, Scope};
use crate::net::{NsRef, Step};
use crate::store::Table;

/// Docker's option naming the VNI (the first of a comma list).
pub const OPT_VNI: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// The VXLAN port (IANA's).
pub const VXLAN_PORT: u16 = 4789;
/// Where VNIs chosen by weft start (libnetwork's overlay starts at 4096 too; lower ones are
/// left to the user and to plugins' grants).
pub const VNI_START: u32 = 4096;
const VNI_MAX: u32 = (1 << 24) - 1;
/// VXLAN's overhead on an IPv4 underlay: outer IP, UDP, VXLAN headers and the inner Ethernet.
pub const OVERHEAD: u32 = 50;
/// How soon a sandbox on an overlay asks again for an address nobody answered (the kernel's
/// default is 1 000 ms).
pub const RETRANS_MS: u32 = 20;

/// The overlay driver; `vtep`: this host's underlay address (none without a cluster store).
pub struct Overlay {
    pub vtep: Option<IpAddr>,
}

/// The names of a network's bridge and VXLAN device.
pub fn links(net: &Network) -> (String, String) {
    (
        format!("ov-{}", &net.id[..12]),
        format!("vx-{}", &net.id[..12]),
    )
}

/// The VNI a network has (once created).
pub fn vni_of(net: &Network) -> Option<u32> {
    net.driver_data.get("vni").and_then(|v| v.parse().ok())
}

fn vni_key(vni: u32) -> String {
    format!("cluster/vni/{vni}")
}

fn vni_option(net: &Network) -> Result<Option<u32>> {
    let Some(v) = net.option(OPT_VNI) else {
        return Ok(None);
    };
    match v.split(',').next().unwrap_or("").trim().parse::<u32>() {
        Ok(n) if (1..=VNI_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(Error::invalid(format!(
            "invalid VXLAN id {v:?} in option {OPT_VNI}: give a number from 1 to {VNI_MAX}"
        ))),
    }
}

impl Overlay {
    /// The underlay link (the one holding the VTEP address) and its MTU.
    async fn underlay(&self, ctx: &mut Ctx<'_>) -> Result<Option<(String, u32)>> {
        let Some(vtep) = self.vtep else {
            return Ok(None);
        };
        for l in ctx.tx.links(&NsRef::Host).await? {
            if ctx
                .tx
                .addresses(&NsRef::Host, &l.name)
                .await?
                .iter()
                .any(|a| a.ip() == vtep)
            {
                return Ok(Some((l.name, l.mtu)));
            }
        }
        Err(Error::Unavailable(format!(
            "the advertise address {vtep} is not on any link of this host: the overlay has no underlay"
        )))
    }

    /// The MTU of the network's links on this host.
    async fn mtu(&self, ctx: &mut Ctx<'_>, net: &Network) -> Result<u32> {
        if let Some(m) = mtu_option(net)? {
            return Ok(m);
        }
        Ok(match self.underlay(ctx).await? {
            Some((_, m)) => m.saturating_sub(OVERHEAD).max(68),
            None => 1500 - OVERHEAD,
        })
    }

    /// The network's VNI: already chosen, given by option, or the lowest free one from
    /// [`VNI_START`] — claimed in the (cluster) store in this operation.
    fn claim_vni(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> Result<u32> {
        if let Some(v) = vni_of(net) {
            return Ok(v);
        }
        let vni = match vni_option(net)? {
            Some(v) => {
                if let Some(other) =
                    crate::store::get_str(ctx.store.as_read(), Table::Meta, &vni_key(v))?
                {
                    if other != net.id {
                        let name = crate::store::get_json::<Network>(
                            ctx.store.as_read(),
                            Table::Networks,
                            &other,
                        )?
                        .map(|n| n.name)
                        .unwrap_or(other);
                        return Err(Error::Conflict(format!(
                            "VXLAN id {v} is used by network {name}: choose another {OPT_VNI}"
                        )));
                    }
                }
                v
            }
            None => {
                let taken: std::collections::BTreeSet<u32> = ctx
                    .store
                    .scan(Table::Meta, b"cluster/vni/")?
                    .iter()
                    .filter_map(|(k, _)| {
                        std::str::from_utf8(&k[b"cluster/vni/".len()..])
                            .ok()?
                            .parse()
                            .ok()
                    })
                    .collect();
                (VNI_START..=VNI_MAX)
                    .find(|v| !taken.contains(v))
                    .ok_or_else(|| Error::Unavailable("every VXLAN id is in use".into()))?
            }
        };
        ctx.store
            .put(Table::Meta, vni_key(vni).as_bytes(), net.id.as_bytes())?;
        net.driver_data.insert("vni".into(), vni.to_string());
        Ok(vni)
    }
}

#[async_trait]
impl NetworkDriver for Overlay {
    fn name(&self) -> &str {
        "overlay"
    }

    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Global,
            needs_ipam: true,
            attachment: super::Attachment::Endpoints,
            external_connectivity: false,
            long_calls: false,
        }
    }

    fn validate(&self, net: &Network, _existing: &[Network]) -> Result<()> {
        mtu_option(net)?;
        vni_option(net)?;
        for k in net.options.keys() {
            if k.starts_with("com.docker.network.bridge.") {
                return Err(Error::invalid(format!(
                    "option {k} is the bridge driver's: an overlay network does not take it"
                )));
            }
        }
        Ok(())
    }

    /// The network on this host: its VNI (claimed cluster-wide on the host that creates it),
    /// the bridge and the VXLAN device. Hosts that join later realize the same network with
    /// the VNI its record carries.
    async fn create_network(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> Result<()> {
        let vni = self.claim_vni(ctx, net)?;
        let (br, vx) = links(net);
        for l in [&br, &vx] {
            if ctx.tx.link(&NsRef::Host, l).await?.is_some() {
                return Err(Error::Conflict(format!(
                    "a link named {l} already exists on this host: remove it"
                )));
            }
        }
        let mtu = self.mtu(ctx, net).await?;
        net.driver_data.insert("bridge".into(), br.clone());
        make_bridge(ctx, net, &br, Some(mtu)).await?;
        if let Some((dev, _)) = self.underlay(ctx).await? {
            ctx.tx
                .apply(Step::Vxlan {
                    name: vx,
                    vni,
                    local: self.vtep,
                    dev: Some(dev),
                    port: VXLAN_PORT,
                    learning: false,
                    mtu: Some(mtu),
                    master: Some(br),
                    proxy: true,
                })
                .await?;
        }
        Ok(())
    }

    /// The VNI goes back to the pool with the network.
    async fn delete_network(&self, ctx: &mut Ctx<'_>, net: &Network) -> Result<()> {
        if let Some(v) = vni_of(net) {
            let key = vni_key(v);
            if crate::store::get_str(ctx.store.as_read(), Table::Meta, &key)?.as_deref()
                == Some(net.id.as_str())
            {
                ctx.store.delete(Table::Meta, key.as_bytes())?;
            }
        }
        Ok(())
    }

    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
        target: &JoinTarget,
    ) -> Result<JoinInfo> {
        let mtu = self.mtu(ctx, net).await?;
        let info = join_bridge(ctx, net, ep, target, &links(net).0, Some(mtu)).await?;
        // A sandbox asking for a remote endpoint's address before this host has its entry (a
        // few milliseconds after it connected elsewhere) would wait the kernel's 1 s before
        // asking again. Its ARP never leaves the host (the VXLAN device answers it), so asking
        // again soon costs nothing on the wire.
        ctx.tx
            .apply(Step::Sysctl {
                ns: target.ns.clone(),
                key: format!("net/ipv4/neigh/{}/retrans_time_ms", target.ifname),
                value: RETRANS_MS.to_string(),
                keep: true,
            })
            .await?;
        Ok(info)
    }
}
