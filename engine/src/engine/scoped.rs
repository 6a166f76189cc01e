//! The daemon healer's check of what kernel changes touched ([`HealScope`]): the records that
//! own the host links a change named (a deleted veth, a bridge set down, an address or route
//! gone from it) and the networks whose chains it named (`nw-<id>-…` flushed or rewritten),
//! checked against the kernel and mended under those objects' locks only — the network's, its
//! sandboxes', and the lock on every network's names and pools when a network may be made again;
//! a chain that is no network's (a base chain flushed, a chain weft does not make) gets the
//! check of the base chains and of what weft's tables hold, under that last lock.
//! The engine-wide lock stays shared, so operations on other networks go on meanwhile, and a
//! long operation elsewhere (a plugin call of seconds) does not hold the mending up.
//!
//! What a scoped check cannot judge goes to the whole check ([`Engine::heal`]): a change that
//! names nothing more precise (weft's table, a map or set, their elements, an overrun),
//! a chain of a network no record has, global networks (whose check waits for the cluster
//! view), a sandbox's own records, and sandboxes whose namespace is gone.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::check::{Finding, World};
use super::endpoint::sb_lock;
use super::network::{net_lock, NETWORKS};
use super::op::{Intent, Locking};
use super::records;
use super::Engine;
use crate::error::Result;
use crate::model::*;
use crate::net::watch::Change;
use crate::net::{NsRef, Step};
use crate::store::{decode, list_json, ReadTxn, Table};

/// What kernel changes touched, as far as their messages said: weft's host links by name,
/// networks' chains by the 12 digits of the network id, a chain of weft's tables that is no
/// network's (a base chain, or one weft does not make) — or anything (`whole`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HealScope {
    links: BTreeSet<String>,
    chains: BTreeSet<String>,
    base: bool,
    whole: bool,
}

impl HealScope {
    /// Everything: a change that named nothing more precise, or a check at start.
    pub fn whole() -> HealScope {
        HealScope {
            whole: true,
            ..HealScope::default()
        }
    }

    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// Widen the scope by what `change` touched.
    pub fn add(&mut self, change: &Change) {
        match change {
            Change::Link(Some(l)) | Change::Address(Some(l)) | Change::Route(Some(l)) => {
                self.links.insert(l.clone());
            }
            Change::Firewall(Some(chain)) => match network_chain(chain) {
                Some(id12) => {
                    self.chains.insert(id12.to_string());
                }
                None => self.base = true,
            },
            _ => self.whole = true,
        }
    }
}

/// The 12 digits of a network chain's name (`nw-<id12>-in`, `-out`, `-nat`).
fn network_chain(chain: &str) -> Option<&str> {
    let (id12, _) = chain.strip_prefix("nw-")?.split_once('-')?;
    (id12.len() == 12 && id12.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id12)
}

/// Does an undo step remove something on one of the host links named?
fn on_host_link(s: &Step, links: &BTreeSet<String>) -> bool {
    let host = |ns: &NsRef| matches!(ns, NsRef::Host);
    match s {
        Step::DelLink { ns, name, peer } => {
            (host(ns) && links.contains(name))
                || peer
                    .as_ref()
                    .is_some_and(|(pns, p)| host(pns) && links.contains(p))
        }
        Step::DelAddress { ns, link, .. } | Step::DelNeigh { ns, link, .. } => {
            host(ns) && links.contains(link)
        }
        Step::DelRoute { ns, dev, .. } => host(ns) && links.contains(dev),
        Step::DelRouteEx { ns, dev, .. } => {
            host(ns) && dev.as_ref().is_some_and(|d| links.contains(d))
        }
        Step::DelFdb { link, .. } => links.contains(link),
        Step::LinkUp { ns, name } | Step::LinkDown { ns, name } => host(ns) && links.contains(name),
        _ => false,
    }
}

/// What a scope concerns in the records.
struct Concerned {
    /// The ownership records to check (key, undo steps).
    owned: Vec<(String, Vec<Step>)>,
    /// Some network has nftables rules (so the base chains should be there).
    has_rules: bool,
    /// The locks that keep every operation that could change them away.
    locks: BTreeSet<String>,
    /// The sandboxes whose kernel objects a mend could make again.
    sandboxes: BTreeSet<String>,
}

/// What a scoped heal came to.
pub(super) enum Scoped {
    /// Checked (and mended: what is returned).
    Healed(Vec<Finding>),
    /// The objects' locks are taken now: later.
    Busy,
    /// Only the whole check can judge it.
    Whole,
}

impl Engine {
    /// The records a scope concerns, and their locks; `None` if only the whole check can
    /// judge it.
    fn concerned(
        &self,
        r: &(impl ReadTxn + ?Sized),
        scope: &HealScope,
    ) -> Result<Option<Concerned>> {
        let nets: Vec<Network> = list_json(r, Table::Networks)?;
        let mut want: BTreeSet<String> = BTreeSet::new();
        for id12 in &scope.chains {
            match nets.iter().find(|n| n.id.starts_with(id12.as_str())) {
                Some(n) => want.insert(records::net_key(&n.id)),
                // Chains no network has: an orphan for the whole check.
                None => return Ok(None),
            };
        }
        let mut out = Concerned {
            owned: Vec::new(),
            has_rules: false,
            locks: BTreeSet::new(),
            sandboxes: BTreeSet::new(),
        };
        if scope.base {
            // The base chains and what is in weft's tables: changed by network creates and
            // removals (the table made, or removed with the last network), which hold this.
            out.locks.insert(NETWORKS.to_string());
        }
        for (k, v) in r.scan(Table::Owned, b"")? {
            let key = String::from_utf8_lossy(&k).into_owned();
            if scope.base && !out.has_rules && key.starts_with("net/") {
                out.has_rules = decode::<records::Owned>(&v)?
                    .steps
                    .iter()
                    .any(|s| matches!(s, Step::Firewall { .. }));
            }
            // Only records whose text holds a name are decoded (a thousand sandboxes' records
            // decoded cost ms, the search µs); the steps then say whether it is that link.
            let names_one = scope
                .links
                .iter()
                .any(|l| v.windows(l.len()).any(|w| w == l.as_bytes()));
            if !names_one && !want.contains(&key) {
                continue;
            }
            let steps = decode::<records::Owned>(&v)?.steps;
            if !want.contains(&key) && !steps.iter().any(|s| on_host_link(s, &scope.links)) {
                continue;
            }
            let parts: Vec<&str> = key.split('/').collect();
            let net = match parts.as_slice() {
                ["net", id] | ["ep", id, _] => *id,
                // A removal's links waiting for the reaper: settled work, nothing to mend.
                ["gone", _] => continue,
                // A sandbox's own records, remote endpoints, peers: the whole check's.
                _ => return Ok(None),
            };
            let Some(n) = nets.iter().find(|n| n.id == net) else {
                continue; // a record of a network removed meanwhile
            };
            if n.scope == Scope::Global {
                return Ok(None);
            }
            out.locks.insert(net_lock(net));
            match parts.as_slice() {
                ["net", _] => {
                    // Made again, a network brings all its endpoints back with it.
                    out.locks.insert(NETWORKS.to_string());
                    let eps = records::network_endpoints(r, net)?;
                    out.sandboxes.extend(eps.into_iter().map(|e| e.sandbox_id));
                }
                [_, _, ep] => {
                    if let Some(e) = records::load_endpoint(r, net, ep)? {
                        out.sandboxes.insert(e.sandbox_id);
                    }
                }
                _ => {}
            }
            out.owned.push((key, steps));
        }
        out.locks.extend(out.sandboxes.iter().map(|s| sb_lock(s)));
        Ok(Some(out))
    }

    /// Check and mend what `scope` concerns under its objects' locks (the engine-wide lock
    /// shared). With `wait` false, only if those locks are free now.
    pub(super) async fn heal_scoped(&self, wait: bool, scope: &HealScope) -> Result<Scoped> {
        if scope.is_whole() {
            return Ok(Scoped::Whole);
        }
        // Which locks: from the records as they are now, read again under the locks (an
        // operation may have changed them in between).
        let Some(want) = self.concerned(&*self.inner.store.read()?, scope)? else {
            return Ok(Scoped::Whole);
        };
        if want.owned.is_empty() && !scope.base {
            return Ok(Scoped::Healed(Vec::new()));
        }
        let locks: Vec<String> = want.locks.iter().cloned().collect();
        let _held = if wait {
            self.inner.locks.acquire(&locks, false).await?
        } else {
            match self.inner.locks.try_acquire(&locks)? {
                Some(h) => h,
                None => return Ok(Scoped::Busy),
            }
        };
        let mut op = self
            .begin(Intent::new("system check", vec![]), Locking::Inherited)
            .await?;
        let found: Result<Option<Vec<Finding>>> = async {
            let Some(now) = self.concerned(op.r(), scope)? else {
                return Ok(None);
            };
            if !now.locks.is_subset(&want.locks) {
                return Ok(None); // more to lock than held (rare): the whole check
            }
            let sandboxes: Vec<Sandbox> = now
                .sandboxes
                .iter()
                .filter_map(|id| records::load_sandbox(op.r(), id).transpose())
                .collect::<Result<_>>()?;
            // A sandbox whose namespace is gone is removed, which takes more than these locks.
            if sandboxes.iter().any(|s| {
                !matches!(s.mode, NsMode::Host | NsMode::Container { .. })
                    && !self.inner.kernel.is_netns(&s.key)
            }) {
                return Ok(None);
            }
            let nets: Vec<Network> = list_json(op.r(), Table::Networks)?;
            let nets_by_id: BTreeMap<&str, &Network> =
                nets.iter().map(|n| (n.id.as_str(), n)).collect();
            let by_id: BTreeMap<&str, &Sandbox> =
                sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
            let dead_ns = HashSet::new();
            let world = World {
                nets_by_id: &nets_by_id,
                by_id: &by_id,
                dead_ns: &dead_ns,
                global: true,
            };
            let mut out = Vec::new();
            self.check_owned(&mut op, &now.owned, &world, &mut out)
                .await?;
            if scope.base {
                self.check_base(&mut op, now.has_rules, &mut out).await?;
            }
            Ok(Some(out))
        }
        .await;
        op.abort().await;
        match found? {
            Some(found) => Ok(Scoped::Healed(self.mend(found).await)),
            None => Ok(Scoped::Whole),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_names_links_and_network_chains_and_nothing_else() {
        let mut s = HealScope::default();
        s.add(&Change::Link(Some("veth1".into())));
        s.add(&Change::Address(Some("br-0123456789ab".into())));
        s.add(&Change::Route(Some("veth1".into())));
        s.add(&Change::Firewall(Some("nw-0123456789ab-in".into())));
        s.add(&Change::Firewall(Some("nw-0123456789ab-nat".into())));
        assert!(!s.is_whole());
        assert_eq!(
            s.links.iter().map(String::as_str).collect::<Vec<_>>(),
            ["br-0123456789ab", "veth1"]
        );
        assert_eq!(
            s.chains.iter().map(String::as_str).collect::<Vec<_>>(),
            ["0123456789ab"]
        );
        // A base chain, or a chain named like a network's but not one: the base check.
        for c in ["guard", "forward", "nw-xyz-in", "pt-0123456789ab"] {
            let mut s = HealScope::default();
            s.add(&Change::Firewall(Some(c.into())));
            assert!(s.base && !s.is_whole(), "{c}");
        }
        // A change that names nothing: everything.
        for c in [Change::Firewall(None), Change::Link(None), Change::Lost] {
            let mut s = HealScope::default();
            s.add(&c);
            assert!(s.is_whole(), "{c:?}");
        }
    }

    #[test]
    fn a_step_is_on_a_host_link_by_its_name_in_the_host_namespace() {
        let links: BTreeSet<String> = ["vethA".to_string()].into();
        let pin = NsRef::Path("/run/weft/netns/x".into());
        let veth = |ns: NsRef, name: &str, peer: Option<(NsRef, &str)>| Step::DelLink {
            ns,
            name: name.into(),
            peer: peer.map(|(n, p)| (n, p.to_string())),
        };
        assert!(on_host_link(&veth(NsRef::Host, "vethA", None), &links));
        assert!(on_host_link(
            &veth(pin.clone(), "eth0", Some((NsRef::Host, "vethA"))),
            &links
        ));
        // The same name inside a sandbox's namespace is another link.
        assert!(!on_host_link(&veth(pin.clone(), "vethA", None), &links));
        assert!(!on_host_link(&veth(NsRef::Host, "vethB", None), &links));
        let addr = |ns: NsRef| Step::DelAddress {
            ns,
            link: "vethA".into(),
            addr: "10.0.0.1/24".parse().unwrap(),
        };
        assert!(on_host_link(&addr(NsRef::Host), &links));
        assert!(!on_host_link(&addr(pin), &links));
    }
}
