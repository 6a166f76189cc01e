//! The native ("default") IPAM driver: Docker's default address pools, user subnets with
//! ip-range / gateway / aux addresses, IPv4 and IPv6, and sequential allocation with
//! wrap-around over the store-backed [`bitmap`](super::bitmap).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use super::{bitmap, AddressRequest, Ipam, PoolGrant, PoolRequest};
use crate::error::{Error, Result};
use crate::store::{get_json, list_json, put_json, ReadTxn, Table, WriteTxn};

/// Docker's default address pools: 172.17–31.0.0/16, then 192.168.0.0/16 in /20s.
pub fn default_v4_pools() -> Vec<Ipv4Network> {
    let mut v: Vec<Ipv4Network> = (17..=31)
        .map(|b| Ipv4Network::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap())
        .collect();
    v.extend((0..16).map(|i| Ipv4Network::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap()));
    v
}

/// One pool: its definition (written when the pool is made, [`Table::IpamPools`]) and its
/// allocation cursor (written per allocation, [`Table::IpamState`]). Kept apart so that
/// choosing a default pool, which reads every definition, does not conflict with allocations
/// going on in other networks' pools.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PoolState {
    id: String,
    space: String,
    subnet: IpNetwork,
    range: Option<IpNetwork>,
    /// Dynamic allocation happens in offsets first..=last.
    first: u128,
    last: u128,
    /// Where the next sequential search starts.
    #[serde(default, skip_serializing)]
    cursor: u128,
    /// Free offsets left in first..=last (O(1) exhaustion check).
    #[serde(default, skip_serializing)]
    free_in_range: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    cursor: u128,
    free_in_range: u128,
}

impl PoolState {
    fn base(&self) -> u128 {
        ip_u128(self.subnet.network())
    }
    fn max_offset(&self) -> u128 {
        host_count(&self.subnet) - 1
    }
    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        (self.subnet.contains(ip) && ip.is_ipv4() == self.subnet.is_ipv4())
            .then(|| ip_u128(ip) - self.base())
    }
    fn addr_at(&self, off: u128) -> IpAddr {
        u128_ip(self.base() + off, self.subnet.is_ipv6())
    }
    /// Offsets never handed out: the network address, and for IPv4 the broadcast address
    /// (except in /31 and /32, where every address is a host).
    fn reserved(&self, off: u128) -> bool {
        let p = self.subnet.prefix();
        match self.subnet {
            IpNetwork::V4(_) if p >= 31 => false,
            IpNetwork::V4(_) => off == 0 || off == self.max_offset(),
            IpNetwork::V6(_) if p >= 127 => false,
            IpNetwork::V6(_) => off == 0,
        }
    }
    fn in_range(&self, off: u128) -> bool {
        off >= self.first && off <= self.last
    }
}

fn host_count(n: &IpNetwork) -> u128 {
    let bits = if n.is_ipv4() { 32 } else { 128 };
    let host_bits = bits - n.prefix() as u32;
    if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    }
}

pub(crate) fn ip_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn u128_ip(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// Do two prefixes share any address?
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// The native IPAM driver.
#[derive(Default)]
pub struct NativeIpam;

impl NativeIpam {
    fn pools(txn: &dyn WriteTxn) -> Result<Vec<PoolState>> {
        list_json(txn.as_read(), Table::IpamPools)
    }

    fn load(txn: &(impl ReadTxn + ?Sized), id: &str) -> Result<Option<PoolState>> {
        let Some(mut st) = get_json::<PoolState>(txn, Table::IpamPools, id)? else {
            return Ok(None);
        };
        // Records written before the split carry their cursor in the definition.
        if let Some(c) = get_json::<Cursor>(txn, Table::IpamState, id)? {
            st.cursor = c.cursor;
            st.free_in_range = c.free_in_range;
        }
        Ok(Some(st))
    }

    fn must_load(txn: &dyn WriteTxn, id: &str) -> Result<PoolState> {
        Self::load(txn.as_read(), id)?
            .ok_or_else(|| Error::internal(format!("IPAM pool {id} not found")))
    }

    fn save_cursor(txn: &mut dyn WriteTxn, st: &PoolState) -> Result<()> {
        put_json(
            txn,
            Table::IpamState,
            &st.id,
            &Cursor {
                cursor: st.cursor,
                free_in_range: st.free_in_range,
            },
        )
    }

    /// Every native pool: (pool id, subnet).
    pub fn pool_ids(txn: &(impl ReadTxn + ?Sized)) -> Result<Vec<(String, IpNetwork)>> {
        Ok(list_json::<PoolState>(txn, Table::IpamPools)?
            .into_iter()
            .map(|p| (p.id, p.subnet))
            .collect())
    }

    /// The addresses allocated in a pool (for the consistency check); `None` if no such pool.
    pub fn allocated(txn: &(impl ReadTxn + ?Sized), id: &str) -> Result<Option<Vec<IpAddr>>> {
        let Some(st) = Self::load(txn, id)? else {
            return Ok(None);
        };
        Ok(Some(
            bitmap::set_bits(txn, id)?
                .into_iter()
                .map(|o| st.addr_at(o))
                .collect(),
        ))
    }

    fn pick_default(txn: &dyn WriteTxn, req: &PoolRequest) -> Result<IpNetwork> {
        let taken: Vec<IpNetwork> = Self::pools(txn)?.into_iter().map(|p| p.subnet).collect();
        let free = |cand: &IpNetwork| {
            !taken.iter().any(|t| overlaps(t, cand)) && !req.avoid.iter().any(|r| overlaps(r, cand))
        };
        if req.v6 {
            // A /64 at a time from a ULA /48 derived from this engine's pools (fd00:… style).
            let base: u128 = 0xfd5e_7f00_0000_0000_0000_0000_0000_0000;
            for i in 0..=0xffffu128 {
                let cand =
                    IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(base | (i << 64)), 64).unwrap());
                if free(&cand) {
                    return Ok(cand);
                }
            }
            return Err(Error::NoDefaultPool(6));
        }
        default_v4_pools()
            .into_iter()
            .map(IpNetwork::V4)
            .find(|c| free(c))
            .ok_or(Error::NoDefaultPool(4))
    }
}

#[async_trait]
impl Ipam for NativeIpam {
    fn name(&self) -> &str {
        "default"
    }

    async fn request_pool(&self, txn: &mut dyn WriteTxn, req: &PoolRequest) -> Result<PoolGrant> {
        let subnet = match req.pool {
            Some(p) => {
                if p.is_ipv6() != req.v6 {
                    return Err(Error::invalid(format!(
                        "{p} is not an IPv{} subnet",
                        if req.v6 { 6 } else { 4 }
                    )));
                }
                // Normalise 172.30.1.5/16 to 172.30.0.0/16, as Docker does.
                let n = IpNetwork::new(p.network(), p.prefix()).unwrap();
                if Self::pools(txn)?
                    .iter()
                    .any(|s| s.space == req.address_space && overlaps(&s.subnet, &n))
                {
                    return Err(Error::PoolOverlap);
                }
                n
            }
            None => Self::pick_default(txn, req)?,
        };
        let mut id = format!("{}/{}", req.address_space, subnet);
        let (mut first, mut last) = (0u128, host_count(&subnet) - 1);
        if let Some(r) = req.sub_pool {
            if !subnet.contains(r.network())
                || r.prefix() < subnet.prefix()
                || r.is_ipv4() != subnet.is_ipv4()
            {
                return Err(Error::invalid(format!(
                    "ip-range {r} is not inside subnet {subnet}"
                )));
            }
            let r = IpNetwork::new(r.network(), r.prefix()).unwrap();
            id = format!("{id}/{r}");
            first = ip_u128(r.network()) - ip_u128(subnet.network());
            last = first + host_count(&r) - 1;
        }
        let mut st = PoolState {
            id: id.clone(),
            space: req.address_space.clone(),
            subnet,
            range: req.sub_pool,
            first,
            last,
            cursor: first,
            free_in_range: 0,
        };
        // Keep reserved offsets out of the dynamic range's ends, and count what is left.
        while st.first < st.last && st.reserved(st.first) {
            st.first += 1;
        }
        while st.last > st.first && st.reserved(st.last) {
            st.last -= 1;
        }
        st.cursor = st.first;
        st.free_in_range = (st.last - st.first).saturating_add(1);
        if st.reserved(st.first) {
            st.free_in_range = 0;
        }
        put_json(txn, Table::IpamPools, &id, &st)?;
        Self::save_cursor(txn, &st)?;
        Ok(PoolGrant {
            pool_id: id,
            pool: subnet,
            data: Default::default(),
        })
    }

    async fn release_pool(&self, txn: &mut dyn WriteTxn, pool_id: &str) -> Result<()> {
        bitmap::clear_all(txn, pool_id)?;
        txn.delete(Table::IpamPools, pool_id.as_bytes())?;
        txn.delete(Table::IpamState, pool_id.as_bytes())?;
        Ok(())
    }

    async fn request_address(
        &self,
        txn: &mut dyn WriteTxn,
        req: &AddressRequest,
    ) -> Result<IpNetwork> {
        let mut st = Self::must_load(txn, &req.pool_id)?;
        let off = match req.preferred {
            Some(ip) => {
                let off = st.offset_of(ip).ok_or_else(|| {
                    Error::InvalidEndpointSettings(format!(
                        "no configured subnet or ip-range contain the IP address {ip}"
                    ))
                })?;
                if st.reserved(off) {
                    return Err(Error::invalid(format!(
                        "{ip} is the {} address of {} and cannot be assigned",
                        if off == 0 { "network" } else { "broadcast" },
                        st.subnet
                    )));
                }
                if !bitmap::set(txn, &st.id, off)? {
                    return Err(Error::AddressInUse);
                }
                off
            }
            None => {
                if st.free_in_range == 0 {
                    return Err(Error::PoolExhausted);
                }
                let found = match bitmap::find_clear(txn, &st.id, st.cursor, st.last)? {
                    Some(o) => Some(o),
                    None => bitmap::find_clear(
                        txn,
                        &st.id,
                        st.first,
                        st.cursor.saturating_sub(1).max(st.first),
                    )?,
                };
                let off = found.ok_or(Error::PoolExhausted)?;
                bitmap::set(txn, &st.id, off)?;
                st.cursor = if off >= st.last { st.first } else { off + 1 };
                off
            }
        };
        if st.in_range(off) {
            st.free_in_range -= 1;
        }
        Self::save_cursor(txn, &st)?;
        let ip = st.addr_at(off);
        Ok(IpNetwork::new(ip, st.subnet.prefix()).unwrap())
    }

    async fn release_address(
        &self,
        txn: &mut dyn WriteTxn,
        pool_id: &str,
        addr: IpAddr,
    ) -> Result<()> {
        let Some(mut st) = Self::load(txn.as_read(), pool_id)? else {
            return Ok(()); // pool already gone: nothing to release
        };
        let Some(off) = st.offset_of(addr) else {
            return Err(Error::invalid(format!("{addr} is not in pool {pool_id}")));
        };
        if bitmap::clear(txn, pool_id, off)? && st.in_range(off) {
            st.free_in_range += 1;
            Self::save_cursor(txn, &st)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::LOCAL_SPACE;
    use crate::store::{mem::MemStore, Txn};
    use std::sync::Arc;

    fn txn() -> Txn {
        Txn::new(Arc::new(MemStore::new())).unwrap()
    }

    fn req(pool: Option<&str>, range: Option<&str>) -> PoolRequest {
        PoolRequest {
            address_space: LOCAL_SPACE.into(),
            pool: pool.map(|p| p.parse().unwrap()),
            sub_pool: range.map(|p| p.parse().unwrap()),
            v6: pool.is_some_and(|p| p.contains(':')),
            ..Default::default()
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn addr(
        ipam: &NativeIpam,
        t: &mut dyn WriteTxn,
        pool: &str,
        pref: Option<&str>,
    ) -> Result<IpNetwork> {
        block_on(ipam.request_address(
            t,
            &AddressRequest {
                pool_id: pool.into(),
                preferred: pref.map(|p| p.parse().unwrap()),
                ..Default::default()
            },
        ))
    }

    #[test]
    fn default_pools_skip_taken_and_routes() {
        let mut t = txn();
        let ipam = NativeIpam;
        let a = block_on(ipam.request_pool(&mut t, &req(None, None))).unwrap();
        assert_eq!(a.pool.to_string(), "172.17.0.0/16");
        let mut r = req(None, None);
        r.avoid = vec!["172.18.5.0/24".parse().unwrap()];
        let b = block_on(ipam.request_pool(&mut t, &r)).unwrap();
        assert_eq!(b.pool.to_string(), "172.19.0.0/16");
        // The user subnet overlapping an existing pool is refused with Docker's message.
        let e = block_on(ipam.request_pool(&mut t, &req(Some("172.17.3.0/24"), None))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid pool request: Pool overlaps with other one on this address space"
        );
        // After the 15 /16s come the 192.168.x.0/20s.
        for _ in 0..13 {
            block_on(ipam.request_pool(&mut t, &req(None, None))).unwrap();
        }
        let c = block_on(ipam.request_pool(&mut t, &req(None, None))).unwrap();
        assert_eq!(c.pool.to_string(), "192.168.0.0/20");
    }

    #[test]
    fn sequential_wraparound_reuse_and_exhaustion() {
        let mut t = txn();
        let ipam = NativeIpam;
        let p = block_on(ipam.request_pool(&mut t, &req(Some("10.9.0.0/29"), None))).unwrap();
        // Hosts .1–.6; .0 and .7 are reserved.
        let got: Vec<String> = (0..6)
            .map(|_| addr(&ipam, &mut t, &p.pool_id, None).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.9.0.1/29",
                "10.9.0.2/29",
                "10.9.0.3/29",
                "10.9.0.4/29",
                "10.9.0.5/29",
                "10.9.0.6/29"
            ]
        );
        assert!(matches!(
            addr(&ipam, &mut t, &p.pool_id, None),
            Err(Error::PoolExhausted)
        ));
        block_on(ipam.release_address(&mut t, &p.pool_id, "10.9.0.3".parse().unwrap())).unwrap();
        block_on(ipam.release_address(&mut t, &p.pool_id, "10.9.0.2".parse().unwrap())).unwrap();
        // Wraps around and reuses the lowest freed address first.
        assert_eq!(
            addr(&ipam, &mut t, &p.pool_id, None).unwrap().to_string(),
            "10.9.0.2/29"
        );
        assert_eq!(
            addr(&ipam, &mut t, &p.pool_id, None).unwrap().to_string(),
            "10.9.0.3/29"
        );
        assert!(matches!(
            addr(&ipam, &mut t, &p.pool_id, Some("10.9.0.3")),
            Err(Error::AddressInUse)
        ));
        let e = addr(&ipam, &mut t, &p.pool_id, Some("10.9.1.3")).unwrap_err();
        assert_eq!(e.to_string(), "invalid endpoint settings:\nno configured subnet or ip-range contain the IP address 10.9.1.3");
    }

    #[test]
    fn ip_range_limits_dynamic_but_not_static() {
        let mut t = txn();
        let ipam = NativeIpam;
        let p =
            block_on(ipam.request_pool(&mut t, &req(Some("172.30.0.0/16"), Some("172.30.1.0/24"))))
                .unwrap();
        assert_eq!(p.pool_id, "LocalDefault/172.30.0.0/16/172.30.1.0/24");
        addr(&ipam, &mut t, &p.pool_id, Some("172.30.1.254")).unwrap();
        let a = addr(&ipam, &mut t, &p.pool_id, None).unwrap();
        assert!(
            "172.30.1.0/24"
                .parse::<IpNetwork>()
                .unwrap()
                .contains(a.ip()),
            "{a}"
        );
        assert_eq!(a.prefix(), 16);
        // A static address outside the range but inside the subnet is fine (Docker does the same).
        assert_eq!(
            addr(&ipam, &mut t, &p.pool_id, Some("172.30.7.7"))
                .unwrap()
                .to_string(),
            "172.30.7.7/16"
        );
    }

    #[test]
    fn slash8_is_cheap_and_v6_works() {
        let mut t = txn();
        let ipam = NativeIpam;
        let p = block_on(ipam.request_pool(&mut t, &req(Some("10.0.0.0/8"), None))).unwrap();
        for _ in 0..10_000 {
            addr(&ipam, &mut t, &p.pool_id, None).unwrap();
        }
        // 10 000 addresses → 3 chunks of 4096 bits stored, not a 2 MiB bitmap.
        assert_eq!(bitmap::stored_chunks(&t, &p.pool_id).unwrap(), 3);
        let v6 = block_on(ipam.request_pool(&mut t, &req(Some("fd00::/64"), None))).unwrap();
        assert_eq!(
            addr(&ipam, &mut t, &v6.pool_id, None).unwrap().to_string(),
            "fd00::1/64"
        );
        let mut r = req(None, None);
        r.v6 = true;
        let d6 = block_on(ipam.request_pool(&mut t, &r)).unwrap();
        assert_eq!(d6.pool.prefix(), 64);
        assert!(d6.pool.is_ipv6());
    }
}
