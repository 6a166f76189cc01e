//! Networks: create (validation, IPAM pools, the driver's kernel objects), realize (the
//! predefined bridge on first use, every network after a reboot), remove and prune.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::op::{Compensation, Intent, Locking, Op, Replay};
use super::records::{self, net_key};
use super::{filters, Created, Engine};
use crate::drivers::Attachment;
use crate::error::{Error, Result};
use crate::ipam::{AddressRequest, Ipam, PoolRequest, GLOBAL_SPACE, LOCAL_SPACE};
use crate::model::*;
use crate::net::NsRef;
use crate::store::{get_str, list_json, Table};

/// The lock key of the set of networks: pools, names, realization, weft's nft table.
pub(crate) const NETWORKS: &str = "networks";

pub(crate) fn net_lock(id: &str) -> String {
    format!("net:{id}")
}

/// The first host address of a subnet (Docker's default gateway).
pub fn first_host(n: &IpNetwork) -> IpAddr {
    use crate::ipam::native::{ip_u128, u128_ip};
    let base = ip_u128(n.network());
    let host_bits = if n.is_ipv4() { 32 } else { 128 } - n.prefix() as u32;
    if host_bits <= 1 {
        return n.network();
    }
    u128_ip(base + 1, n.is_ipv6())
}

pub(crate) fn gateway_opts() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "RequestAddressType".into(),
        "com.docker.network.gateway".into(),
    );
    m
}

/// A network record with nothing allocated yet.
pub(crate) fn blank_network(name: &str, driver: &str) -> Network {
    Network::blank(name, driver)
}

impl Engine {
    /// Prefixes a default pool must not overlap: the host's routes.
    pub(crate) async fn host_routes(&self, op: &mut Op) -> Result<Vec<IpNetwork>> {
        Ok(op
            .tx()
            .routes(&NsRef::Host)
            .await?
            .into_iter()
            .map(|r| r.dst)
            .filter(|d| d.prefix() > 0)
            .collect())
    }

    /// `network create`.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<Created> {
        let name = req.name.trim().to_string();
        if name.is_empty() {
            return Err(Error::invalid("network name is required"));
        }
        if PREDEFINED.contains(&name.as_str()) {
            return Err(Error::PredefinedCreate(name));
        }
        if !valid_network_name(&name) {
            return Err(Error::invalid(format!(
                "invalid network name {name:?}: use printable characters without spaces, '/', '\\\\' or ':'"
            )));
        }
        for (what, m) in [
            ("option", &req.options),
            ("label", &req.labels),
            ("IPAM option", &req.ipam_options),
        ] {
            for (k, v) in m {
                if k.chars().chain(v.chars()).any(char::is_control) {
                    return Err(Error::invalid(format!(
                        "invalid {what} {k:?}: keys and values may not contain a control character (newline, tab, …)"
                    )));
                }
            }
        }
        // A plugin installed or removed by another process since this one last looked.
        self.sync_plugins()?;
        let driver_name = req
            .driver
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "bridge".into());
        let driver = self.driver(&driver_name)?;
        let caps = driver.capabilities();
        let scope = match req.scope.as_deref() {
            None | Some("") => caps.scope,
            Some("local") => Scope::Local,
            Some("global") => Scope::Global,
            Some("swarm") => Scope::Swarm,
            Some(s) => {
                return Err(Error::invalid(format!(
                    "invalid scope {s:?}: use local, global or swarm"
                )))
            }
        };
        if scope != caps.scope {
            return Err(Error::invalid(format!(
                "driver {driver_name} makes {} networks, not {}",
                caps.scope.as_str(),
                scope.as_str()
            )));
        }
        let has_v6_subnet = req
            .ipam_config
            .iter()
            .any(|c| c.subnet.is_some_and(|s| s.is_ipv6()));
        let enable_ipv6 = req.enable_ipv6.unwrap_or(false);
        let enable_ipv4 = req.enable_ipv4.unwrap_or(true);
        if has_v6_subnet && !enable_ipv6 {
            return Err(Error::invalid(
                "an IPv6 subnet was given but IPv6 is not enabled: add --ipv6, or remove the IPv6 subnet",
            ));
        }
        if !enable_ipv4 && !enable_ipv6 && caps.needs_ipam {
            return Err(Error::invalid(
                "a network needs IPv4 or IPv6: do not disable both",
            ));
        }
        if !enable_ipv4
            && req
                .ipam_config
                .iter()
                .any(|c| c.subnet.is_some_and(|s| s.is_ipv4()))
        {
            return Err(Error::invalid(
                "an IPv4 subnet was given but IPv4 is disabled: drop --ipv4=false or the subnet",
            ));
        }
        filters::validate_ipam_config(&req.ipam_config)?;
        let ipam_name = req
            .ipam_driver
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "default".into());
        self.ipam(&ipam_name)?;
        let mut net = blank_network(&name, &driver_name);
        net.scope = scope;
        net.enable_ipv4 = enable_ipv4;
        net.enable_ipv6 = enable_ipv6;
        net.internal = req.internal;
        net.attachable = req.attachable;
        net.ingress = req.ingress;
        net.config_only = req.config_only;
        net.config_from = req.config_from.clone().filter(|s| !s.is_empty());
        net.ipam_driver = ipam_name;
        net.ipam_options = req.ipam_options.clone();
        net.options = req.options.clone();
        net.labels = req.labels.clone();

        let mut warning = String::new();
        if scope == Scope::Global {
            match self.cluster() {
                Some(c) if !c.connected() => return Err(Error::Unavailable(c.unreachable())),
                Some(_) => {}
                None => {
                    warning = format!(
                        "network {name} is global-scope but weft has no cluster store: it works on this host alone (start the daemon with --cluster-store etcd://HOST:2379 --advertise-addr IP)"
                    );
                }
            }
        }
        let created = self
            .retrying(|| {
                let mut net = net.clone();
                net.id = new_id();
                let cfgs = req.ipam_config.clone();
                async move {
                    // An IPAM plugin's pools are asked for one network at a time (its own
                    // lock), without the lock on every network's names and pools (see
                    // `create_network_in`).
                    let mut keys = vec![NETWORKS.to_string()];
                    if net.ipam_driver != "default" {
                        keys.push(format!("ipam:{}", net.ipam_driver));
                    }
                    keys.sort();
                    let mut op = self
                        .begin(
                            Intent::new(format!("network create {}", net.name), keys)
                                .owned(net_key(&net.id)),
                            Locking::Keys,
                        )
                        .await?;
                    let r = self.create_network_in(&mut op, &mut net, &cfgs).await;
                    op.settle(r).await?;
                    Ok(net)
                }
            })
            .await?;
        tracing::info!(network = %created.name, id = %created.id, driver = %created.driver, "network created");
        self.emit("create", Some(&created), None);
        Ok(Created {
            id: created.id,
            warning,
        })
    }

    async fn create_network_in(
        &self,
        op: &mut Op,
        net: &mut Network,
        cfgs: &[IpamConfigRequest],
    ) -> Result<()> {
        if get_str(op.r(), Table::NetworkNames, &net.name)?.is_some() {
            return Err(Error::NetworkNameExists(net.name.clone()));
        }
        let driver = self.driver(&net.driver)?;
        if driver.capabilities().needs_ipam {
            if self.ipam(&net.ipam_driver)?.name() != "default" {
                // An IPAM plugin may take its whole deadline (or wait on NetBox): other
                // networks' creates and removals go on meanwhile (another create on the same
                // IPAM waits: the op holds the IPAM's lock). The name read above, and the
                // other networks' pools its pools are checked against, are checked again at
                // commit (a clash makes this create run again).
                op.release(NETWORKS);
            }
            self.allocate_pools(op, net, cfgs).await?;
        }
        // With the pools known, the driver checks the network against the others (shared
        // parents, overlapping subnets…).
        let existing: Vec<Network> = list_json(op.r(), Table::Networks)?;
        driver.validate(net, &existing)?;
        if driver.capabilities().long_calls {
            // A plugin may take its whole deadline: other networks' creates and removals go on
            // meanwhile. The name and pools read above are checked again at commit.
            op.release(NETWORKS);
        }
        self.realize_network(op, net).await
    }

    /// Ask the network's IPAM for its pools, gateways and aux addresses.
    pub(crate) async fn allocate_pools(
        &self,
        op: &mut Op,
        net: &mut Network,
        cfgs: &[IpamConfigRequest],
    ) -> Result<()> {
        let ipam = self.ipam(&net.ipam_driver)?;
        let space = if net.scope == Scope::Local {
            LOCAL_SPACE
        } else {
            GLOBAL_SPACE
        };
        let mut wanted: Vec<(bool, Option<&IpamConfigRequest>)> = Vec::new();
        for v6 in [false, true] {
            if (v6 && !net.enable_ipv6) || (!v6 && !net.enable_ipv4) {
                continue;
            }
            let mine: Vec<&IpamConfigRequest> = cfgs
                .iter()
                .filter(|c| c.subnet.is_some_and(|s| s.is_ipv6() == v6))
                .collect();
            if mine.is_empty() {
                wanted.push((v6, None));
            } else {
                wanted.extend(mine.into_iter().map(|c| (v6, Some(c))));
            }
        }
        let avoid = if wanted.iter().any(|(_, c)| c.is_none()) {
            self.host_routes(op).await?
        } else {
            vec![]
        };
        for (v6, cfg) in wanted {
            let preq = PoolRequest {
                address_space: space.into(),
                pool: cfg.and_then(|c| c.subnet),
                sub_pool: cfg.and_then(|c| c.ip_range),
                options: net.ipam_options.clone(),
                v6,
                avoid: avoid.clone(),
            };
            let grant = ipam.request_pool(op.w(), &preq).await?;
            let external = ipam.name() != "default";
            if external {
                op.on_abort(Compensation::Pool {
                    ipam: ipam.clone(),
                    pool_id: grant.pool_id.clone(),
                });
            }
            check_pool(&grant.pool, &*ipam, cfg.is_none(), &avoid, op.r(), &net.id)?;
            let gw = cfg
                .and_then(|c| c.gateway)
                .unwrap_or_else(|| first_host(&grant.pool));
            let gw_addr = ipam
                .request_address(
                    op.w(),
                    &AddressRequest {
                        pool_id: grant.pool_id.clone(),
                        preferred: Some(gw),
                        options: gateway_opts(),
                        context: None,
                    },
                )
                .await
                .map_err(|e| match e {
                    Error::AddressInUse | Error::InvalidEndpointSettings(_) => Error::invalid(
                        format!("gateway {gw} cannot be used in {}: {e}", grant.pool),
                    ),
                    e => e,
                })?;
            if external {
                op.on_abort(Compensation::Address {
                    ipam: ipam.clone(),
                    pool_id: grant.pool_id.clone(),
                    addr: gw_addr.ip(),
                });
            }
            let mut aux = BTreeMap::new();
            if let Some(c) = cfg {
                for (k, ip) in &c.aux_addresses {
                    ipam.request_address(
                        op.w(),
                        &AddressRequest {
                            pool_id: grant.pool_id.clone(),
                            preferred: Some(*ip),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| Error::invalid(format!("aux address {k}={ip}: {e}")))?;
                    if external {
                        op.on_abort(Compensation::Address {
                            ipam: ipam.clone(),
                            pool_id: grant.pool_id.clone(),
                            addr: *ip,
                        });
                    }
                    aux.insert(k.clone(), *ip);
                }
            }
            net.pools.push(Pool {
                pool_id: grant.pool_id,
                subnet: grant.pool,
                ip_range: cfg.and_then(|c| c.ip_range),
                gateway: Some(gw_addr.ip()),
                aux_addresses: aux,
                user_subnet: cfg.is_some(),
            });
        }
        Ok(())
    }

    /// Make the network's kernel objects (the driver's create-network) and record them.
    pub(crate) async fn realize_network(&self, op: &mut Op, net: &mut Network) -> Result<()> {
        let driver = self.driver(&net.driver)?;
        let mark = op.tx().mark();
        driver.create_network(&mut op.ctx(), net).await?;
        let steps = op.tx().undo_since(mark);
        op.own(&net_key(&net.id), steps)?;
        if net.scope == Scope::Global {
            // Shared by every host: realized here is this host's ownership record, and the
            // record is written once, by the host that creates the network.
            if records::load_network(op.r(), &net.id)?.is_some() {
                return Ok(());
            }
        } else {
            net.realized = true;
        }
        records::save_network(op.w(), net)
    }

    /// `network rm`.
    pub async fn remove_network(&self, name_or_id: &str) -> Result<()> {
        self.remove_network_with(name_or_id, false)
            .await
            .map(|_| ())
    }

    /// `network rm`; with `force`, the network goes whatever its driver or IPAM plugin says
    /// (what they refused comes back as warnings).
    pub async fn remove_network_with(&self, name_or_id: &str, force: bool) -> Result<Vec<String>> {
        let net = self.network(name_or_id)?;
        let w = self
            .retrying(|| self.remove_network_once(&net.id, force))
            .await?;
        tracing::info!(network = %net.name, "network removed");
        self.emit("destroy", Some(&net), None);
        Ok(w)
    }

    async fn remove_network_once(&self, id: &str, force: bool) -> Result<Vec<String>> {
        let mut op = self
            .begin(
                Intent::new(
                    format!("network rm {id}"),
                    vec![NETWORKS.into(), net_lock(id)],
                )
                .removes(
                    Table::Networks,
                    vec![id.to_string()],
                    Replay::NetworkRm { id: id.to_string() },
                ),
                Locking::Keys,
            )
            .await?;
        let r = match records::load_network(op.r(), id)? {
            Some(net) => self.remove_network_in(&mut op, &net, force).await,
            None => Err(Error::NetworkNotFound(id.to_string())),
        };
        let warnings = std::mem::take(&mut op.warnings);
        op.settle(r).await?;
        Ok(warnings)
    }

    /// The body of network rm. `force` (replays, reset): plugin refusals are logged, not fatal.
    pub(crate) async fn remove_network_in(
        &self,
        op: &mut Op,
        net: &Network,
        force: bool,
    ) -> Result<()> {
        if net.predefined && !force {
            return Err(Error::PredefinedRemove(net.name.clone()));
        }
        let eps = records::network_endpoints(op.r(), &net.id)?;
        if !eps.is_empty() {
            let mut names: Vec<String> = eps.iter().map(|e| e.name.clone()).collect();
            names.sort();
            return Err(Error::ActiveEndpoints {
                name: net.name.clone(),
                endpoints: names.join(", "),
            });
        }
        // What may refuse comes first (driver hook, IPAM), so a refusal changes nothing. (A
        // global network's hook runs on whichever host removes it: it releases what the
        // network holds cluster-wide.)
        if net.realized || net.scope == Scope::Global {
            let driver = self.driver(&net.driver)?;
            let mark = op.tx().mark();
            if let Err(e) = driver.delete_network(&mut op.ctx(), net).await {
                if !force {
                    return Err(e);
                }
                op.warn(format!("network {}: removed although {e}", net.name));
            }
            // Whatever the hook added has no owner once the network is gone.
            self.drop_transient(op, mark).await;
        }
        self.release_pools(op, net, force).await?;
        let log = records::owned(op.r(), &net_key(&net.id))?;
        let errors = op.tx().teardown(&log, None).await;
        op.teardown_result(errors, force, &format!("removing network {}", net.name))?;
        records::delete_network(op.w(), net)
    }

    pub(crate) async fn release_pools(
        &self,
        op: &mut Op,
        net: &Network,
        force: bool,
    ) -> Result<()> {
        let ipam = self.ipam(&net.ipam_driver)?;
        for p in &net.pools {
            let mut addrs: Vec<IpAddr> = p.gateway.into_iter().collect();
            addrs.extend(p.aux_addresses.values());
            for a in addrs {
                if let Err(e) = ipam.release_address(op.w(), &p.pool_id, a).await {
                    if !force {
                        return Err(e);
                    }
                    op.warn(format!("network {}: {a} released although {e}", net.name));
                }
            }
            if let Err(e) = ipam.release_pool(op.w(), &p.pool_id).await {
                if !force {
                    return Err(e);
                }
                op.warn(format!(
                    "network {}: pool {} released although {e}",
                    net.name, p.subnet
                ));
            }
        }
        Ok(())
    }

    /// Undo the additive steps made since `mark` (a removal hook's leftovers).
    pub(crate) async fn drop_transient(&self, op: &mut Op, mark: usize) {
        let extra = op.tx().undo_since(mark);
        if !extra.is_empty() {
            for e in op.tx().teardown(&extra, None).await {
                tracing::warn!("undoing a removal hook's changes: {e}");
            }
        }
    }

    /// `network prune`: remove unused custom networks; returns their names.
    pub async fn prune_networks(&self, f: &NetworkFilters) -> Result<Vec<String>> {
        filters::check_prune_filters(f)?;
        let r = self.inner.store.read()?;
        let mut candidates = Vec::new();
        for n in list_json::<Network>(&*r, Table::Networks)? {
            if n.predefined || !records::network_endpoints(&*r, &n.id)?.is_empty() {
                continue;
            }
            if filters::prunable(&n, f)? {
                candidates.push(n);
            }
        }
        drop(r);
        let mut removed = Vec::new();
        for n in candidates {
            match self
                .retrying(|| self.remove_network_once(&n.id, false))
                .await
            {
                Ok(_) => {
                    self.emit("destroy", Some(&n), None);
                    removed.push(n.name)
                }
                // In use again, or gone, since the list was made: not prunable after all.
                Err(Error::ActiveEndpoints { .. }) | Err(Error::NetworkNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        removed.sort();
        self.emit("prune", None, None);
        Ok(removed)
    }

    /// The attachment kind of a network's driver.
    pub(crate) fn attachment(&self, net: &Network) -> Result<Attachment> {
        Ok(self.driver(&net.driver)?.capabilities().attachment)
    }

    /// The default (native) IPAM, and any other by name.
    pub(crate) fn ipam_of(&self, net: &Network) -> Result<std::sync::Arc<dyn Ipam>> {
        self.ipam(&net.ipam_driver)
    }
}

/// Ranges no network may have: loopback, link-local, multicast, reserved, "this network".
pub(crate) fn reserved_range(n: &IpNetwork) -> Option<&'static str> {
    let v4: [(&str, &str); 6] = [
        ("0.0.0.0/8", "\"this network\""),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "broadcast"),
    ];
    let v6: [(&str, &str); 4] = [
        ("::/127", "unspecified/loopback"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
        ("::ffff:0:0/96", "IPv4-mapped"),
    ];
    let list: &[(&str, &str)] = if n.is_ipv4() { &v4 } else { &v6 };
    list.iter()
        .find(|(r, _)| crate::ipam::native::overlaps(&r.parse().unwrap(), n))
        .map(|(_, what)| *what)
}

/// What an IPAM answered to request-pool must be a pool a network can have: not everything
/// (a /0), not a reserved range, and — from a plugin — not overlapping another network, nor
/// (for a pool it chose itself) the host's own routes.
fn check_pool(
    pool: &IpNetwork,
    ipam: &dyn Ipam,
    chosen: bool,
    avoid: &[IpNetwork],
    r: &dyn crate::store::ReadTxn,
    net_id: &str,
) -> Result<()> {
    let native = ipam.name() == "default";
    let bad = |m: String| -> Error {
        if native {
            Error::invalid(m)
        } else {
            Error::Plugin {
                plugin: ipam.name().to_string(),
                kind: crate::error::PluginErrorKind::BadReturn,
                message: format!("request-pool returned {m}"),
            }
        }
    };
    if pool.prefix() == 0 || (pool.is_ipv4() && pool.prefix() < 8) {
        return Err(bad(format!("{pool}, which is too broad for a network")));
    }
    if let Some(what) = reserved_range(pool) {
        return Err(bad(format!("{pool}, which is in the {what} range")));
    }
    if native {
        return Ok(());
    }
    for n in list_json::<Network>(r, Table::Networks)? {
        if n.id == net_id {
            continue;
        }
        if let Some(p) = n
            .pools
            .iter()
            .find(|p| crate::ipam::native::overlaps(&p.subnet, pool))
        {
            return Err(bad(format!(
                "{pool}, which overlaps network {}'s {}",
                n.name, p.subnet
            )));
        }
    }
    if chosen {
        if let Some(a) = avoid
            .iter()
            .find(|a| crate::ipam::native::overlaps(a, pool))
        {
            return Err(bad(format!(
                "{pool}, which overlaps the host's route to {a}"
            )));
        }
    }
    Ok(())
}
