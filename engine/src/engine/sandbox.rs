//! Sandboxes: create (a namespace weft makes and pins, one a runtime gives by path, or a
//! mode: the host's namespace, loopback only, another sandbox's namespace) and remove
//! (several at once: their host links go in one batch).

use std::collections::BTreeSet;

use super::endpoint::{bare_endpoint, sb_lock};
use super::network::{net_lock, NETWORKS};
use super::op::{Intent, Locking, Op, Replay};
use super::records::{self, ep_key, sb_key};
use super::Engine;
use crate::drivers::Attachment;
use crate::error::{Error, Result};
use crate::model::*;
use crate::net::Step;
use crate::store::{get_str, StoreError, Table};

/// What a sandbox create asks for, resolved.
enum Target {
    Network(Network),
    HostMode(Option<Network>),
    NoneMode(Option<Network>),
    Container(Sandbox),
}

/// The lock every host-port allocation holds (see [`Engine::publish_in`]).
pub(crate) const PORTS: &str = "ports";

impl Engine {
    fn target(&self, r: &dyn crate::store::ReadTxn, mode_req: &str) -> Result<Target> {
        if let Some(other) = mode_req.strip_prefix("container:") {
            let o = records::resolve_sandbox(r, other)?;
            let root = match &o.mode {
                NsMode::Container { id } => records::load_sandbox(r, id)?.unwrap_or(o),
                _ => o,
            };
            return Ok(Target::Container(root));
        }
        let net = records::resolve_network(r, mode_req)?;
        Ok(match self.attachment(&net)? {
            Attachment::Endpoints => Target::Network(net),
            Attachment::HostNamespace => Target::HostMode(Some(net)),
            Attachment::LoopbackOnly => Target::NoneMode(Some(net)),
        })
    }

    /// `sandbox create`. As with dockerd, published ports are discarded in host network mode
    /// (the CLI warns) and refused in `container:` mode.
    pub async fn create_sandbox(&self, mut req: SandboxCreate) -> Result<Sandbox> {
        if !valid_sandbox_name(&req.name) {
            return Err(Error::invalid(format!(
                "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        if let Some(h) = req.hostname.as_deref().filter(|h| !valid_hostname(h)) {
            return Err(Error::invalid(format!(
                "invalid hostname {h:?}: use letters, digits and hyphens in dot-separated labels of at most 63 characters"
            )));
        }
        if let Some(p) = &req.netns {
            if !self.inner.kernel.is_netns(p) {
                return Err(Error::invalid(format!(
                    "{} is not a network namespace: give a namespace file such as /proc/PID/ns/net",
                    p.display()
                )));
            }
        }
        let mode_req = req.network.clone().unwrap_or_else(|| "bridge".into());
        // dockerd's rules for ports in the shared-namespace modes.
        if !req.ports.is_empty() {
            if mode_req.starts_with("container:") {
                return Err(Error::invalid(
                    "conflicting options: port publishing and the container type network mode",
                ));
            }
            if mode_req == "host" {
                tracing::debug!("published ports are discarded in host network mode");
                req.ports.clear();
            }
        }
        let sb = self
            .retrying(|| async {
                let target = self.target(&*self.inner.store.read()?, &mode_req)?;
                let mut keys = vec![format!("sbname:{}", req.name)];
                if !req.ports.is_empty() {
                    keys.push(PORTS.into());
                }
                match &target {
                    Target::Network(n) => {
                        keys.push(net_lock(&n.id));
                        if !records::realized(&*self.inner.store.read()?, n)? {
                            keys.push(NETWORKS.into());
                        }
                    }
                    Target::Container(o) => keys.push(sb_lock(&o.id)),
                    _ => {}
                }
                let id = new_id();
                let mut op = self
                    .begin(
                        Intent::new(format!("sandbox create {}", req.name), keys.clone())
                            .owned(sb_key(&id)),
                        Locking::Keys,
                    )
                    .await?;
                let r = self
                    .create_sandbox_in(&mut op, &req, &mode_req, id, &keys)
                    .await;
                op.settle(r).await
            })
            .await?;
        tracing::info!(sandbox = %sb.name, "sandbox created");
        self.refresh_sandbox_files(&sb.id);
        for net in self.endpoint_events(&sb.id) {
            self.emit("connect", Some(&net), Some(&sb.id));
        }
        Ok(sb)
    }

    async fn create_sandbox_in(
        &self,
        op: &mut Op,
        req: &SandboxCreate,
        mode_req: &str,
        id: String,
        keys: &[String],
    ) -> Result<Sandbox> {
        if let Some(id) = get_str(op.r(), Table::SandboxNames, &req.name)? {
            return Err(Error::SandboxNameExists {
                name: req.name.clone(),
                id,
            });
        }
        // Again under the locks: what was resolved before may have changed.
        let target = self.target(op.r(), mode_req)?;
        let locked = |k: String| keys.contains(&k);
        match &target {
            Target::Network(n)
                if !locked(net_lock(&n.id))
                    || (!records::realized(op.r(), n)? && !locked(NETWORKS.into())) =>
            {
                return Err(StoreError::Conflict.into())
            }
            Target::Container(o) if !locked(sb_lock(&o.id)) => {
                return Err(StoreError::Conflict.into())
            }
            _ => {}
        }
        let mut sb = Sandbox {
            id,
            name: req.name.clone(),
            created: now_rfc3339(),
            network_mode: mode_req.to_string(),
            mode: NsMode::Owned,
            key: self.inner.cfg.run_root.join("netns").join(&req.name),
            next_order: 0,
            dns: req.dns.clone(),
            dns_search: req.dns_search.clone(),
            dns_options: req.dns_options.clone(),
            hostname: req.hostname.clone(),
            ports: vec![],
            exposed: req.exposed.clone(),
            labels: req.labels.clone(),
        };
        match &target {
            Target::HostMode(_) => {
                sb.mode = NsMode::Host;
                sb.key = self.inner.kernel.host_path().to_path_buf();
                sb.network_mode = "host".into();
            }
            Target::NoneMode(_) => {
                sb.mode = NsMode::None;
                sb.network_mode = "none".into();
            }
            Target::Container(root) => {
                sb.mode = NsMode::Container {
                    id: root.id.clone(),
                };
                sb.key = root.key.clone();
                sb.network_mode = format!("container:{}", root.id);
            }
            Target::Network(_) => {}
        }
        if let Some(p) = &req.netns {
            if !matches!(sb.mode, NsMode::Owned) {
                return Err(Error::invalid(
                    "--netns cannot be combined with host, none or container: modes",
                ));
            }
            sb.mode = NsMode::External;
            sb.key = p.clone();
        }
        let mark = op.tx().mark();
        if matches!(sb.mode, NsMode::Owned | NsMode::None) {
            op.tx()
                .apply(Step::Netns {
                    pin: sb.key.clone(),
                })
                .await?;
        }
        let steps = op.tx().undo_since(mark);
        op.own(&sb_key(&sb.id), steps)?;
        match target {
            Target::Network(mut net) => {
                self.connect_in(op, &mut net, &mut sb, req.connect.clone(), new_id())
                    .await?;
            }
            // Like Docker, a host- or none-mode sandbox shows up on that network, with no
            // interface or address of its own.
            Target::HostMode(Some(net)) | Target::NoneMode(Some(net)) => {
                let ep = bare_endpoint(&net, &sb);
                records::save_endpoint(op.w(), &ep)?;
                sb.next_order += 1;
            }
            _ => {}
        }
        if !req.ports.is_empty() {
            self.publish_in(op, &mut sb, &req.ports).await?;
        }
        records::save_sandbox(op.w(), &sb)?;
        Ok(sb)
    }

    /// Publish `ports` (under the `ports` key) on the sandbox's default-route address: host ports allocated (never
    /// one another sandbox holds, `0` → a free one from the ephemeral range), DNAT rules
    /// added, and their removal recorded with the sandbox's.
    async fn publish_in(&self, op: &mut Op, sb: &mut Sandbox, ports: &[PortMapping]) -> Result<()> {
        let (addr, addr6, net_id) = publish_target(op, &sb.id)?.ok_or_else(|| {
            Error::invalid("published ports need the sandbox on a network with IPv4: connect it to one, or leave out -p")
        })?;
        // Read unchecked: every allocation holds the `ports` key (taken before the op's
        // snapshot), so no other can commit between this read and this op's commit, and a
        // checked read of the whole table would conflict with every other sandbox's change.
        let mut taken: Vec<PortMapping> =
            crate::store::list_json::<Sandbox>(op.r().unchecked(), crate::store::Table::Sandboxes)?
                .into_iter()
                .flat_map(|s| s.ports)
                .collect();
        // Docker's rule: one port, one holder per host address; a mapping on every address
        // (no host address, or 0.0.0.0/::) meets all of them.
        let clash = |taken: &[PortMapping], m: &PortMapping, port: u16| {
            let host = |x: &PortMapping| x.host_ip.filter(|h| !h.is_unspecified());
            taken.iter().any(|t| {
                t.proto == m.proto
                    && t.host_port == port
                    && match (host(t), host(m)) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }
            })
        };
        // The network's host_binding_ipv4 (a bridge option): the host address of mappings
        // that name none.
        let binding = records::load_network(op.r(), &net_id)?
            .and_then(|n| {
                n.option(crate::drivers::bridge::OPT_HOST_BINDING)
                    .map(str::to_string)
            })
            .and_then(|h| h.parse::<std::net::IpAddr>().ok())
            .filter(|h| !h.is_unspecified());
        // A host socket on the port (sshd on 22, the daemon's resolver on 53…).
        let kernel = self.inner.kernel.clone();
        let host_busy = |m: &PortMapping, port: u16| {
            let ips: Vec<std::net::IpAddr> = match m.host_ip.filter(|h| !h.is_unspecified()) {
                Some(h) => vec![h],
                None if addr6.is_some() => vec![
                    std::net::Ipv4Addr::UNSPECIFIED.into(),
                    std::net::Ipv6Addr::UNSPECIFIED.into(),
                ],
                None => vec![std::net::Ipv4Addr::UNSPECIFIED.into()],
            };
            ips.into_iter()
                .any(|ip| kernel.host_port_in_use(&m.proto, ip, port))
        };
        let mut maps = Vec::new();
        for p in ports {
            let mut m = p.clone();
            if m.host_ip.is_none() {
                m.host_ip = binding;
            }
            if m.host_port == 0 {
                // Docker's ephemeral range, from a point that differs per sandbox.
                let (lo, hi) = (32768u32, 60999u32);
                let start = u32::from_str_radix(&sb.id[..4], 16).unwrap_or(0) % (hi - lo + 1);
                m.host_port = (0..=hi - lo)
                    .map(|i| (lo + (start + i) % (hi - lo + 1)) as u16)
                    .find(|hp| !clash(&taken, &m, *hp) && !host_busy(&m, *hp))
                    .ok_or_else(|| Error::Unavailable("no free host port in 32768-60999".into()))?;
            } else if clash(&taken, &m, m.host_port) {
                return Err(Error::PortAllocated {
                    host_ip: m.host_ip_text(),
                    port: m.host_port,
                });
            } else if host_busy(&m, m.host_port) {
                // DNAT would take the port from under whatever listens there.
                return Err(Error::Conflict(format!(
                    "Bind for {}:{} failed: address already in use (something on the host listens there: stop it or choose another host port)",
                    m.host_ip_text(),
                    m.host_port
                )));
            }
            taken.push(m.clone());
            maps.push(m);
        }
        let mark = op.tx().mark();
        op.tx()
            .apply(Step::Firewall {
                change: crate::firewall::FwChange::AddPorts(crate::firewall::PortRules {
                    id: sb.id[..12].to_string(),
                    addr,
                    addr6,
                    maps: maps.clone(),
                }),
            })
            .await?;
        let mut steps = records::owned(op.r(), &sb_key(&sb.id))?;
        steps.extend(op.tx().undo_since(mark));
        op.own(&sb_key(&sb.id), steps)?;
        sb.ports = maps;
        Ok(())
    }

    /// Published ports follow the sandbox: after a connect or disconnect changed which
    /// endpoint they would be published on, their rules move there (or go, when no endpoint
    /// with IPv4 is left; the host ports stay the sandbox's and come back with one).
    pub(crate) async fn repoint_ports(&self, op: &mut Op, sb_id: &str) -> Result<()> {
        use crate::firewall::{FwChange, PortRules};
        let Some(sb) = records::load_sandbox(op.r(), sb_id)? else {
            return Ok(());
        };
        if sb.ports.is_empty() {
            return Ok(());
        }
        let key = sb_key(&sb.id);
        let mut log = records::owned(op.r(), &key)?;
        let current = log.iter().enumerate().find_map(|(i, s)| match s {
            Step::Firewall {
                change: FwChange::RemovePorts(p),
            } => Some((i, p.clone())),
            _ => None,
        });
        let target = publish_target(op, &sb.id)?.map(|(a, a6, _)| (a, a6));
        if current.as_ref().map(|(_, p)| (p.addr, p.addr6)) == target {
            return Ok(());
        }
        if let Some((i, p)) = current {
            op.tx()
                .remove(Step::Firewall {
                    change: FwChange::RemovePorts(p),
                })
                .await?;
            log.remove(i);
        }
        if let Some((addr, addr6)) = target {
            let mark = op.tx().mark();
            op.tx()
                .apply(Step::Firewall {
                    change: FwChange::AddPorts(PortRules {
                        id: sb.id[..12].to_string(),
                        addr,
                        addr6,
                        maps: sb.ports.clone(),
                    }),
                })
                .await?;
            log.extend(op.tx().undo_since(mark));
        }
        op.own(&key, log)
    }

    /// `sandbox rm`: disconnect everything, remove the namespace weft made. With `force`,
    /// sandboxes sharing this one's namespace (`container:`) go too.
    pub async fn remove_sandbox(&self, name_or_id: &str, force: bool) -> Result<()> {
        self.remove_sandboxes(&[name_or_id], force).await
    }

    /// Remove several sandboxes in one operation.
    pub async fn remove_sandboxes(&self, names: &[&str], force: bool) -> Result<()> {
        self.remove_sandboxes_with(names, force).await.map(|_| ())
    }

    /// Remove several sandboxes; with `force` (also: their `container:` sharers), whatever
    /// the drivers and IPAM say (their refusals come back as warnings).
    pub async fn remove_sandboxes_with(&self, names: &[&str], force: bool) -> Result<Vec<String>> {
        // What to tell subscribers afterwards: each endpoint that goes.
        let mut leaving = Vec::new();
        if self.watched() {
            for n in names {
                if let Ok(sb) = self.sandbox(n) {
                    for net in self.endpoint_events(&sb.id) {
                        leaving.push((net, sb.id.clone()));
                    }
                }
            }
        }
        let r = match names {
            [name] if !force => self.remove_combined(name).await.map(|()| Vec::new()),
            _ => self.remove_sandboxes_retrying(names, force).await,
        };
        if r.is_ok() {
            for (net, sb) in &leaving {
                self.emit("disconnect", Some(net), Some(sb));
            }
        }
        // The links it left for later, now that its locks are free (or by the reaper).
        self.reap_soon().await;
        r
    }

    /// Remove one sandbox, together with the removals of others on the same networks that
    /// are waiting meanwhile: they would queue on those networks' locks one after the other
    /// (each holding them for its kernel steps and its commit); one operation removes them
    /// all, with one commit. Should that operation fail, each is tried on its own, so every
    /// caller gets the answer a removal of its sandbox alone gets.
    async fn remove_combined(&self, name: &str) -> Result<()> {
        let (id, group) = {
            let r = self.inner.store.read()?;
            let id = records::resolve_sandbox(&*r, name)?.id;
            let nets: Vec<String> = self
                .sandbox_locks(&*r, std::slice::from_ref(&id))?
                .into_iter()
                .filter(|k| *k != sb_lock(&id))
                .collect();
            (id, self.inner.combiner.group(&nets.join(" ")))
        };
        loop {
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            group.queue.lock().unwrap().push((id.clone(), tx));
            let _leader = group.leader.lock().await;
            match rx.try_recv() {
                Ok(r) => return r, // an earlier leader carried it
                // That leader was cancelled before it answered: once more.
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => continue,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            self.lead_removals(&group).await;
            return rx
                .try_recv()
                .unwrap_or_else(|_| Err(Error::internal("a combined removal lost its answer")));
        }
    }

    /// Run what is queued in `group`: all in one operation, else one by one.
    async fn lead_removals(&self, group: &Group) {
        let batch = std::mem::take(&mut *group.queue.lock().unwrap());
        if let [(id, _)] = batch.as_slice() {
            // Alone (no one else was waiting): as if never queued.
            let r = self.remove_sandboxes_retrying(&[id.as_str()], false).await;
            let (_, tx) = batch.into_iter().next().expect("one");
            let _ = tx.send(r.map(|_| ()));
            return;
        }
        // The same sandbox asked twice, or removed since it was asked for: alone, after (to
        // be told it is gone), not failing the others' operation.
        let present: BTreeSet<String> = match self.inner.store.read() {
            Ok(r) => batch
                .iter()
                .filter(|(id, _)| matches!(records::load_sandbox(&*r, id), Ok(Some(_))))
                .map(|(id, _)| id.clone())
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        let mut seen = BTreeSet::new();
        let (first, again): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(id, _)| present.contains(id) && seen.insert(id.clone()));
        let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
        let together = !ids.is_empty() && self.remove_sandboxes_retrying(&ids, false).await.is_ok();
        for (id, tx) in first.into_iter().chain(again) {
            let r = if together && seen.remove(&id) {
                Ok(())
            } else {
                self.remove_sandboxes_retrying(&[id.as_str()], false)
                    .await
                    .map(|_| ())
            };
            let _ = tx.send(r);
        }
    }

    async fn remove_sandboxes_retrying(&self, names: &[&str], force: bool) -> Result<Vec<String>> {
        self.retrying(|| async {
            let (ids, keys) = {
                let r = self.inner.store.read()?;
                let mut ids: Vec<String> = Vec::new();
                for n in names {
                    ids.push(records::resolve_sandbox(&*r, n)?.id);
                }
                for sb_id in ids.clone() {
                    let others: Vec<String> = records::sharers(&*r, &sb_id)?
                        .into_iter()
                        .filter(|s| !ids.contains(s))
                        .collect();
                    if others.is_empty() {
                        continue;
                    }
                    if !force {
                        let mut users = Vec::new();
                        for o in &others {
                            if let Some(s) = records::load_sandbox(&*r, o)? {
                                users.push(s.name);
                            }
                        }
                        let name = records::load_sandbox(&*r, &sb_id)?
                            .map(|s| s.name)
                            .unwrap_or_default();
                        return Err(Error::SandboxShared {
                            name,
                            users: users.join(", "),
                        });
                    }
                    ids.extend(others);
                }
                let keys = self.sandbox_locks(&*r, &ids)?;
                (ids, keys)
            };
            let mut op = self
                .begin(
                    Intent::new(format!("sandbox rm {}", names.join(" ")), keys.clone()).removes(
                        Table::Sandboxes,
                        ids.clone(),
                        Replay::SandboxRm { ids: ids.clone() },
                    ),
                    Locking::Keys,
                )
                .await?;
            let r = async {
                if self
                    .sandbox_locks(op.r(), &ids)?
                    .iter()
                    .any(|k| !keys.contains(k))
                {
                    // Connected somewhere new since the locks were chosen.
                    return Err(StoreError::Conflict.into());
                }
                self.remove_sandboxes_in(&mut op, &ids, force).await
            }
            .await;
            let warnings = std::mem::take(&mut op.warnings);
            op.settle(r).await?;
            Ok(warnings)
        })
        .await
    }

    /// The locks removing these sandboxes takes: theirs and their networks'.
    fn sandbox_locks(&self, r: &dyn crate::store::ReadTxn, ids: &[String]) -> Result<Vec<String>> {
        let mut keys = BTreeSet::new();
        for id in ids {
            keys.insert(sb_lock(id));
            for ep in records::sandbox_endpoints(r, id)? {
                keys.insert(net_lock(&ep.network_id));
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// The body of sandbox rm (missing sandboxes are skipped: a replay may find some gone).
    pub(crate) async fn remove_sandboxes_in(
        &self,
        op: &mut Op,
        ids: &[String],
        force: bool,
    ) -> Result<()> {
        let mut todo = Vec::new();
        for id in ids {
            if let Some(sb) = records::load_sandbox(op.r(), id)? {
                todo.push(sb);
            }
        }
        // What may refuse comes first (driver hooks, IPAM): a refusal changes nothing.
        let mut logs = Vec::new();
        for sb in &todo {
            let gone = matches!(sb.mode, NsMode::Owned | NsMode::None).then(|| sb.key.clone());
            for ep in records::sandbox_endpoints(op.r(), &sb.id)? {
                let Some(net) = records::load_network(op.r(), &ep.network_id)? else {
                    records::delete_endpoint(op.w(), &ep)?;
                    continue;
                };
                self.endpoint_hooks(op, &net, &ep, force).await?;
                self.release_endpoint(op, &net, &ep, force).await?;
                logs.push((
                    records::owned(op.r(), &ep_key(&net.id, &ep.id))?,
                    gone.clone(),
                ));
                records::delete_endpoint(op.w(), &ep)?;
            }
        }
        // Endpoints first, all sandboxes' together: their host links go in one batch.
        let refs: Vec<(&[Step], Option<&std::path::Path>)> = logs
            .iter()
            .map(|(u, g)| (u.as_slice(), g.as_deref()))
            .collect();
        // Host ends of veths into namespaces that go are taken down now and deleted later
        // (see `reap_links`): the records say so in this commit.
        let (errors, mut later) = op.tx().teardown_deferring(&refs).await;
        op.teardown_result(errors, force, "removing sandboxes")?;
        for sb in &todo {
            // The namespace's unpin goes with its links' deletion (see `reap_links`): an
            // unmount waits for the kernel (an expedited RCU grace period), and nothing
            // reaches the namespace any more (its host ends are down).
            let (unpin, log): (Vec<Step>, Vec<Step>) = records::owned(op.r(), &sb_key(&sb.id))?
                .into_iter()
                .partition(|s| matches!(s, Step::DelNetns { .. }));
            later.extend(unpin);
            let errors = op.tx().teardown(&log, None).await;
            op.teardown_result(errors, force, &format!("removing sandbox {}", sb.name))?;
            records::delete_sandbox(op.w(), sb)?;
            // Its /etc files, if someone asked for them (derived from the records: a failure
            // after this point only means they are written again when asked).
            let _ = std::fs::remove_dir_all(self.sandbox_files_dir(&sb.id));
            tracing::info!(sandbox = %sb.name, "sandbox removed");
        }
        if !later.is_empty() {
            let key = super::reap::gone_key(&op.id);
            op.own(&key, later)?;
        }
        Ok(())
    }
}

/// Sandbox removals waiting to go together, grouped by the networks they lock (removals on
/// other networks never wait for a group's leader).
#[derive(Default)]
pub(crate) struct Combiner {
    groups: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<Group>>>,
}

#[derive(Default)]
pub(crate) struct Group {
    /// Held by the removal that runs the queue.
    leader: tokio::sync::Mutex<()>,
    queue: std::sync::Mutex<Vec<(String, tokio::sync::oneshot::Sender<Result<()>>)>>,
}

impl Combiner {
    fn group(&self, key: &str) -> std::sync::Arc<Group> {
        super::locks::shared(&self.groups, key)
    }
}

/// Where a sandbox's ports are published: the IPv4 (and IPv6) address of its default-route
/// endpoint, else of its first endpoint with IPv4; and that endpoint's network.
fn publish_target(
    op: &Op,
    sb_id: &str,
) -> Result<Option<(std::net::Ipv4Addr, Option<std::net::Ipv6Addr>, String)>> {
    let eps = records::sandbox_endpoints(op.r(), sb_id)?;
    Ok(eps
        .iter()
        .filter(|e| e.default_route)
        .chain(eps.iter())
        .find_map(|e| match e.ipv4.map(|a| a.ip()) {
            Some(std::net::IpAddr::V4(a)) => Some((
                a,
                match e.ipv6.map(|a| a.ip()) {
                    Some(std::net::IpAddr::V6(v6)) => Some(v6),
                    _ => None,
                },
                e.network_id.clone(),
            )),
            _ => None,
        }))
}
