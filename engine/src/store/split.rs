//! The split store: the embedded store for this host's state, the cluster store (etcd, through
//! [`crate::cluster::Cluster`]'s mirror) for global state, behind the one [`Store`] trait — so
//! every operation (network create and remove, connect, IPAM) works cluster-wide unchanged.
//!
//! Where a row lives:
//! - global: a global-scope network's record and name, its endpoints (bound to the lease of the
//!   host that made them, so they go with that host), pools and allocations of the
//!   `GlobalDefault` address space, `Meta` keys under `cluster/` (VNI claims, the usage of
//!   cluster-wide plugin kv spaces) and the keys of those spaces (`kv-global`);
//! - local: everything else — sandboxes, ownership records of kernel objects, journals, local
//!   networks — and a shadow copy of each endpoint this host published (`Meta`
//!   `shadow/ep/<net>/<ep>`), from which it publishes them again when its lease was lost.
//!
//! Reads come from the mirror (global, no round trip) or the embedded store. A commit checks
//! each read where it came from: a global value by an etcd compare, an absent key in both
//! stores, a scan of a global table by "nothing under the prefix changed since the snapshot's
//! revision" (plus the values of up to [`SCAN_ROW_CHECKS`] rows, so a deletion is caught too).
//!
//! **One transaction across both stores is not possible.** A change with global writes commits
//! to etcd first, then to the embedded store; if the embedded commit fails, the etcd writes
//! are undone by a second transaction (conditional on nothing having changed them since). If
//! the process dies between the two, what etcd holds and this host's records disagree in one
//! of two ways, and both are settled from this host's records: an endpoint this host published
//! but never recorded (its kernel objects rolled back by the journal) is withdrawn by the
//! reconciliation at start (`Engine::cluster_reconcile`), its address released; a global row
//! removed whose local records remain (a removal interrupted) is finished by the journal's
//! replay, as for local removals. A network made in etcd whose local kernel objects were rolled
//! back is simply realized on this host at its next connect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Changes, Read, ReadTxn, Rows, Store, StoreError, Table};
use crate::cluster::{table_key, table_prefix, Check, Cluster, Mirror, Write};
use crate::error::Result;

/// Rows of a scanned global range whose values a commit also checks (a deletion under the
/// prefix is caught for scans up to this size).
pub const SCAN_ROW_CHECKS: usize = 32;

/// Where the shadow copies of this host's endpoints are (`Meta`, local).
pub const SHADOW_PREFIX: &[u8] = b"shadow/ep/";

/// The local key of an endpoint's shadow copy.
pub fn shadow_key(key: &[u8]) -> Vec<u8> {
    let mut k = SHADOW_PREFIX.to_vec();
    k.extend_from_slice(key);
    k
}

/// Global state in etcd, local state in `local`.
pub struct SplitStore {
    local: Arc<dyn Store>,
    cluster: Arc<Cluster>,
    /// The engine's failpoints: `crash:cluster-committed` dies between the two halves.
    fp: Arc<crate::net::failpoint::Failpoints>,
}

impl SplitStore {
    pub fn new(
        local: Arc<dyn Store>,
        cluster: Arc<Cluster>,
        fp: Arc<crate::net::failpoint::Failpoints>,
    ) -> SplitStore {
        SplitStore { local, cluster, fp }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

/// Can rows of `table` under `key` be global at all?
fn may_be_global(table: Table, key: &[u8]) -> bool {
    match table {
        Table::Networks | Table::NetworkNames | Table::Endpoints => true,
        Table::IpamPools | Table::IpamState | Table::IpamBits => {
            key.starts_with(crate::ipam::GLOBAL_SPACE.as_bytes())
                || crate::ipam::GLOBAL_SPACE.as_bytes().starts_with(key)
        }
        Table::Meta => key.starts_with(b"cluster/") || b"cluster/".starts_with(key),
        // A plugin's cluster-wide kv space (`kv-global`): keys that start with NUL.
        Table::PluginKv => key.first().is_none_or(|b| *b == 0),
        _ => false,
    }
}

/// Is a network record global-scope?
fn global_network(value: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| {
            v.get("scope")
                .and_then(|s| s.as_str())
                .map(|s| s == "global")
        })
        .unwrap_or(false)
}

/// The ids of global networks: in the mirror, and written global by this change.
fn global_networks(m: &Mirror, changes: &Changes) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = m
        .scan(&table_prefix(Table::Networks))
        .map(|(k, _)| {
            String::from_utf8_lossy(&k[table_prefix(Table::Networks).len()..]).into_owned()
        })
        .collect();
    for ((t, k), v) in &changes.writes {
        if *t == Table::Networks {
            let id = String::from_utf8_lossy(k).into_owned();
            match v {
                Some(v) if global_network(v) => {
                    ids.insert(id);
                }
                Some(_) => {
                    ids.remove(&id);
                }
                None => {}
            }
        }
    }
    ids
}

/// Where a write goes.
fn write_is_global(
    m: &Mirror,
    nets: &BTreeSet<String>,
    table: Table,
    key: &[u8],
    value: Option<&[u8]>,
) -> bool {
    if !may_be_global(table, key) {
        return false;
    }
    match (table, value) {
        (Table::Networks, Some(v)) => global_network(v),
        (Table::NetworkNames, Some(v)) => nets.contains(String::from_utf8_lossy(v).as_ref()),
        (Table::Endpoints, _) => {
            let net = key.split(|b| *b == b'/').next().unwrap_or_default();
            nets.contains(String::from_utf8_lossy(net).as_ref())
        }
        (Table::Networks | Table::NetworkNames, None) => m.get(&table_key(table, key)).is_some(),
        // GlobalDefault pools and cluster/ meta keys.
        _ => true,
    }
}

/// A consistent view: the embedded store's snapshot and the mirror as of one revision.
struct SplitRead {
    local: Box<dyn ReadTxn>,
    mirror: Arc<Mirror>,
}

impl ReadTxn for SplitRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if may_be_global(table, key) {
            if let Some(r) = self.mirror.get(&table_key(table, key)) {
                return Ok(Some(r.value.clone()));
            }
        }
        self.local.get(table, key)
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Rows> {
        let local = self.local.scan(table, prefix)?;
        if !may_be_global(table, prefix) {
            return Ok(local);
        }
        let tp = table_prefix(table);
        let full = table_key(table, prefix);
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = local.into_iter().collect();
        for (k, r) in self.mirror.scan(&full) {
            rows.insert(k[tp.len()..].to_vec(), r.value.clone());
        }
        Ok(rows.into_iter().collect())
    }

    fn revision(&self) -> Option<i64> {
        Some(self.mirror.rev)
    }
}

impl Store for SplitStore {
    fn read(&self) -> Result<Box<dyn ReadTxn>> {
        Ok(Box::new(SplitRead {
            local: self.local.read()?,
            mirror: self.cluster.mirror(),
        }))
    }

    fn apply(&self, changes: &Changes) -> std::result::Result<(), StoreError> {
        let m = self.cluster.mirror();
        let nets = global_networks(&m, changes);
        let mut local = Changes {
            reads: vec![],
            writes: BTreeMap::new(),
            revision: None,
        };
        let mut writes = Vec::new();
        for ((t, k), v) in &changes.writes {
            if write_is_global(&m, &nets, *t, k, v.as_deref()) {
                let leased = *t == Table::Endpoints;
                writes.push(Write {
                    key: table_key(*t, k),
                    value: v.clone(),
                    leased,
                });
                if leased {
                    local.writes.insert((Table::Meta, shadow_key(k)), v.clone());
                }
            } else {
                local.writes.insert((*t, k.clone()), v.clone());
            }
        }
        // A change with no global write is checked and committed locally only (so local work
        // goes on while etcd is unreachable); what it read of the mirror was a snapshot.
        let mut checks = Vec::new();
        for r in &changes.reads {
            match r {
                Read::Key { table, key, value } => {
                    let gk = table_key(*table, key);
                    match value {
                        Some(_) if m.get(&gk).is_some() => checks.push(Check::Value {
                            key: gk,
                            value: value.clone(),
                        }),
                        Some(_) => local.reads.push(r.clone()),
                        None => {
                            if may_be_global(*table, key) {
                                checks.push(Check::Value {
                                    key: gk,
                                    value: None,
                                });
                            }
                            local.reads.push(r.clone());
                        }
                    }
                }
                Read::Scan {
                    table,
                    prefix,
                    rows,
                } => {
                    if !may_be_global(*table, prefix) {
                        local.reads.push(r.clone());
                        continue;
                    }
                    let (global, own): (Vec<_>, Vec<_>) = rows
                        .iter()
                        .cloned()
                        .partition(|(k, _)| m.get(&table_key(*table, k)).is_some());
                    local.reads.push(Read::Scan {
                        table: *table,
                        prefix: prefix.clone(),
                        rows: own,
                    });
                    if let Some(rev) = changes.revision {
                        checks.push(Check::Unchanged {
                            prefix: table_key(*table, prefix),
                            rev,
                        });
                    }
                    for (k, v) in global.into_iter().take(SCAN_ROW_CHECKS) {
                        checks.push(Check::Value {
                            key: table_key(*table, &k),
                            value: Some(v),
                        });
                    }
                }
            }
        }
        if writes.is_empty() {
            return self.local.apply(&local);
        }
        // Undo, should the local commit fail: each written key back to what the mirror had,
        // if nothing changed it since this commit.
        let before: Vec<Write> = writes
            .iter()
            .map(|w| Write {
                key: w.key.clone(),
                value: m.get(&w.key).map(|r| r.value.clone()),
                leased: w.leased,
            })
            .collect();
        let rev = self.cluster.commit(&checks, &writes)?;
        self.fp.point("cluster-committed");
        let _ = self.fp.before("cluster-committed");
        match self.local.apply(&local) {
            Ok(()) => {
                self.cluster.notify();
                Ok(())
            }
            Err(e) => {
                let unchanged: Vec<Check> = writes
                    .iter()
                    .map(|w| Check::Value {
                        key: w.key.clone(),
                        value: w.value.clone(),
                    })
                    .collect();
                if let Err(u) = self.cluster.commit(&unchanged, &before) {
                    tracing::warn!(revision = rev, "a cluster commit whose local half failed ({e}) could not be undone ({u}): the start-up reconciliation settles it");
                }
                Err(e)
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} and the cluster store {}",
            self.local.describe(),
            self.cluster.config().describe()
        )
    }

    fn commit_time(&self) -> std::time::Duration {
        self.local.commit_time()
    }

    fn commit_counts(&self) -> (u64, u64) {
        self.local.commit_counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Row;

    fn mirror(keys: &[(&[u8], &[u8])]) -> Mirror {
        let mut m = Mirror::default();
        for (k, v) in keys {
            m.rows.insert(
                k.to_vec(),
                Row {
                    value: v.to_vec(),
                    mod_rev: 1,
                },
            );
        }
        m
    }

    #[test]
    fn rows_are_routed_by_scope_space_and_prefix() {
        let m = mirror(&[(b"/weft/t/networks/g1", br#"{"scope":"global"}"#)]);
        let mut c = Changes::default();
        c.writes.insert(
            (Table::Networks, b"g2".to_vec()),
            Some(br#"{"scope":"global","name":"o"}"#.to_vec()),
        );
        c.writes.insert(
            (Table::Networks, b"l1".to_vec()),
            Some(br#"{"scope":"local"}"#.to_vec()),
        );
        let nets = global_networks(&m, &c);
        assert_eq!(
            nets.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["g1", "g2"]
        );
        let g = |t, k: &[u8], v: Option<&[u8]>| write_is_global(&m, &nets, t, k, v);
        assert!(g(Table::Networks, b"g2", Some(br#"{"scope":"global"}"#)));
        assert!(!g(Table::Networks, b"l1", Some(br#"{"scope":"local"}"#)));
        assert!(g(Table::Networks, b"g1", None), "a delete of a global row");
        assert!(!g(Table::Networks, b"l1", None));
        assert!(g(Table::NetworkNames, b"o", Some(b"g2")));
        assert!(!g(Table::NetworkNames, b"b", Some(b"l1")));
        assert!(g(Table::Endpoints, b"g1/e1", Some(b"{}")));
        assert!(!g(Table::Endpoints, b"l1/e1", Some(b"{}")));
        assert!(g(
            Table::IpamBits,
            b"GlobalDefault/10.0.0.0/24/0",
            Some(b"x")
        ));
        assert!(!g(
            Table::IpamBits,
            b"LocalDefault/10.0.0.0/24/0",
            Some(b"x")
        ));
        assert!(g(Table::Meta, b"cluster/vni/4096", Some(b"g2")));
        assert!(!g(Table::Meta, b"boot_id", Some(b"x")));
        assert!(!g(Table::Owned, b"net/g1", Some(b"[]")));
        assert!(!g(Table::Sandboxes, b"s", Some(b"{}")));
        assert!(g(Table::PluginKv, b"\0mesh\0peer/x", Some(b"")));
        assert!(!g(Table::PluginKv, b"mesh\0peer/x", Some(b"")));
    }
}
