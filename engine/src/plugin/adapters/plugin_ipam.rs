//! An IPAM component as an [`Ipam`]: pools and addresses asked of the component (0.2 or 0.1),
//! what it grants checked before the engine uses it.

use super::*;

// =========================================================================== IPAM

#[derive(Clone)]
enum IpamPre {
    V2(ipam::IpamPluginPre<HostState>),
    V1(v01::ipam::IpamPluginPre<HostState>),
}

/// An IPAM component as an [`Ipam`].
pub struct PluginIpam {
    loaded: Loaded<IpamPre>,
}

impl PluginIpam {
    pub fn new(host: Arc<crate::plugin::PluginHost>, rec: PluginRecord) -> Self {
        PluginIpam {
            loaded: Loaded::new(host, rec),
        }
    }

    async fn loaded(&self) -> Result<(Arc<Runtime>, IpamPre)> {
        let rec = &self.loaded.rec;
        self.loaded
            .get(|rt, c| {
                if rec.contract == "0.2.0" {
                    let pre = rt
                        .ipam_linker
                        .instantiate_pre(c)
                        .map_err(|e| link_err(rt, c, rec, e))?;
                    Ok(IpamPre::V2(ipam::IpamPluginPre::new(pre).map_err(wt)?))
                } else {
                    let pre = rt
                        .ipam01_linker
                        .instantiate_pre(c)
                        .map_err(|e| link_err(rt, c, rec, e))?;
                    Ok(IpamPre::V1(v01::ipam::IpamPluginPre::new(pre).map_err(wt)?))
                }
            })
            .await
    }

    /// SAFETY (of the lending inside): as for [`PluginDriver::store`].
    fn store(&self, rt: &Runtime, txn: &mut dyn WriteTxn) -> Result<Store<HostState>> {
        let kv = unsafe { lend::store(txn) };
        new_store(
            rt,
            &self.loaded.rec,
            HostState::new(
                self.loaded.rec.clone(),
                self.loaded.slots.clone(),
                Lent::none(),
                kv,
                Scope::default(),
            ),
        )
    }
}

/// One IPAM call; `$v2`/`$v1` get the instance (typed exports) and the raw instance.
macro_rules! ipam_call {
    ($self:ident, $txn:ident, $call:literal, |$store:ident| v2: |$i2:ident, $r2:ident| $b2:expr, v1: |$i1:ident, $r1:ident| $b1:expr) => {{
        let (rt, pre) = $self.loaded().await?;
        let mut $store = $self.store(&rt, $txn)?;
        let limit = host_limit(&$self.loaded.rec);
        let r = match tokio::time::timeout(limit, async {
            match &pre {
                IpamPre::V2(p) => match p.instance_pre().instantiate_async(&mut $store).await {
                    Ok($r2) => match ipam::IpamPlugin::new(&mut $store, &$r2) {
                        Ok(w) => {
                            let $i2 = w.weft_plugin_ipam();
                            $b2
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                IpamPre::V1(p) => match p.instance_pre().instantiate_async(&mut $store).await {
                    Ok($r1) => match v01::ipam::IpamPlugin::new(&mut $store, &$r1) {
                        Ok(w) => {
                            let $i1 = w.weft_plugin_ipam();
                            $b1
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
            }
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(wasmtime::Trap::Interrupt.into()),
        };
        (r, $store)
    }};
}

#[async_trait]
impl Ipam for PluginIpam {
    fn name(&self) -> &str {
        &self.loaded.rec.name
    }

    fn capabilities(&self) -> IpamCapabilities {
        IpamCapabilities {
            requires_mac_address: self.loaded.rec.requires_mac,
            requires_request_replay: self.loaded.rec.requires_replay,
        }
    }

    async fn request_pool(&self, txn: &mut dyn WriteTxn, req: &PoolRequest) -> Result<PoolGrant> {
        let rec = self.loaded.rec.clone();
        let r2 = wi::PoolRequest {
            address_space: req.address_space.clone(),
            pool: req.pool.map(host::wit_prefix),
            sub_pool: req.sub_pool.map(host::wit_prefix),
            options: opts(&req.options),
            v6: req.v6,
        };
        let r1 = wi1::PoolRequest {
            address_space: req.address_space.clone(),
            pool: req.pool.map(crate::plugin::v01::wit_prefix),
            sub_pool: req.sub_pool.map(crate::plugin::v01::wit_prefix),
            options: opts(&req.options),
            v6: req.v6,
        };
        let (r, store) = ipam_call!(self, txn, "request-pool", |store|
            v2: |i, _inst| e2(i.call_request_pool(&mut store, &r2).await)
                .map(|x| x.and_then(|p| Ok((p.pool_id, host::prefix(&p.pool)?, p.data)))),
            v1: |i, _inst| e1(i.call_request_pool(&mut store, &r1).await)
                .map(|x| x.and_then(|p| Ok((p.pool_id, crate::plugin::v01::prefix(&p.pool)?, p.data)))));
        let read = |(id, pool, data): (String, IpNetwork, Vec<(String, String)>)| {
            let id = bounded(&rec, &id, "the pool id", 256)?;
            if data.len() > MAX_LIST {
                return Err(HostError::InvalidArgument(format!(
                    "request-pool returned {} data entries, over the {MAX_LIST} allowed",
                    data.len()
                )));
            }
            let mut d = BTreeMap::new();
            for (k, v) in &data {
                d.insert(
                    bounded(&rec, k, "a data key", 256)?,
                    bounded(&rec, v, "a data value", 1024)?,
                );
            }
            Ok((id, pool, d))
        };
        let g = settle(&rec, "request-pool", &store, r.map(|x| x.and_then(read)))?;
        drop(store);
        let (pool_id, pool, data) = g;
        let pool = IpNetwork::new(pool.network(), pool.prefix()).unwrap();
        if pool.is_ipv6() != req.v6 {
            return Err(bad_return(
                &rec,
                format!(
                    "request-pool returned {pool} for an IPv{} request",
                    if req.v6 { 6 } else { 4 }
                ),
            ));
        }
        if let Some(want) = req.pool {
            let want = IpNetwork::new(want.network(), want.prefix()).unwrap();
            if want != pool {
                return Err(bad_return(
                    &rec,
                    format!("request-pool returned {pool}, but {want} was asked for"),
                ));
            }
        }
        if pool_id.is_empty() {
            return Err(bad_return(
                &rec,
                "request-pool returned an empty pool id".into(),
            ));
        }
        Ok(PoolGrant {
            pool_id,
            pool,
            data,
        })
    }

    async fn release_pool(&self, txn: &mut dyn WriteTxn, pool_id: &str) -> Result<()> {
        let rec = self.loaded.rec.clone();
        let id = pool_id.to_string();
        let (r, store) = ipam_call!(self, txn, "release-pool", |store|
            v2: |i, _inst| e2(i.call_release_pool(&mut store, &id).await),
            v1: |i, _inst| e1(i.call_release_pool(&mut store, &id).await));
        settle(&rec, "release-pool", &store, r)
    }

    async fn request_address(
        &self,
        txn: &mut dyn WriteTxn,
        req: &AddressRequest,
    ) -> Result<IpNetwork> {
        let rec = self.loaded.rec.clone();
        let r2 = wi::AddressRequest {
            pool_id: req.pool_id.clone(),
            preferred: req.preferred.map(host::wit_ip),
            options: opts(&req.options),
            context: req.context.as_ref().map(wit_context),
        };
        let r1 = wi1::AddressRequest {
            pool_id: req.pool_id.clone(),
            preferred: req.preferred.map(crate::plugin::v01::wit_ip),
            options: opts(&req.options),
        };
        let (r, store) = ipam_call!(self, txn, "request-address", |store|
            v2: |i, _inst| e2(i.call_request_address(&mut store, &r2).await).map(|x| x.and_then(|p| host::prefix(&p))),
            v1: |i, _inst| e1(i.call_request_address(&mut store, &r1).await).map(|x| x.and_then(|p| crate::plugin::v01::prefix(&p))));
        let a = settle(&rec, "request-address", &store, r)?;
        if let Some(p) = req.preferred {
            if a.ip() != p {
                return Err(bad_return(
                    &rec,
                    format!("request-address returned {a}, but {p} was asked for"),
                ));
            }
        }
        Ok(a)
    }

    async fn release_address(
        &self,
        txn: &mut dyn WriteTxn,
        pool_id: &str,
        addr: IpAddr,
    ) -> Result<()> {
        let rec = self.loaded.rec.clone();
        let id = pool_id.to_string();
        let (a, a1) = (host::wit_ip(addr), crate::plugin::v01::wit_ip(addr));
        let (r, store) = ipam_call!(self, txn, "release-address", |store|
            v2: |i, _inst| e2(i.call_release_address(&mut store, &id, a).await),
            v1: |i, _inst| e1(i.call_release_address(&mut store, &id, a1).await));
        settle(&rec, "release-address", &store, r)
    }
}
