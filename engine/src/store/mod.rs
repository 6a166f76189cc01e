//! State: one small key/value trait ([`Store`]), the optimistic transaction every operation
//! works in ([`Txn`]), and typed helpers over both.
//!
//! An operation reads through a [`Txn`] (a snapshot plus its own buffered writes) for as long
//! as it likes — plugin calls, kernel work — without holding the store's writer. At commit the
//! store checks that everything the operation read is still what it read (optimistic
//! concurrency, like etcd's compare-and-swap transactions) and applies the writes atomically
//! and durably; a changed read is a [`StoreError::Conflict`] and the operation runs again.
//! So many operations can be in flight at once, in one process or several, and a cluster store
//! (etcd) fits the same trait.
//!
//! The embedded store ([`redb_store::RedbStore`], the default) keeps everything in one ACID
//! file under the state root; [`mem::MemStore`] is the same in memory.
//!
//! Durability: every commit is durable (fsync) before it returns. Networks, pools and plugins
//! must outlive a reboot; endpoint and sandbox records would only need to outlive a crash of
//! weft, but they share commits with the address leases and records that must be durable, so
//! a separate cheaper class would save nothing per operation today (measured: one commit per
//! attach either way).

pub mod mem;
pub mod redb_store;
pub mod split;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;

/// The tables ("buckets") of weft's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// network id → [`crate::model::Network`]
    Networks,
    /// network name → network id
    NetworkNames,
    /// "network id/endpoint id" → [`crate::model::Endpoint`]
    Endpoints,
    /// "sandbox id/network id" → endpoint id
    SandboxEndpoints,
    /// "owner sandbox id/sharer sandbox id" → "" (sandboxes in `container:` mode)
    SandboxSharers,
    /// sandbox id → [`crate::model::Sandbox`]
    Sandboxes,
    /// sandbox name → sandbox id
    SandboxNames,
    /// IPAM pool id → pool definition (native IPAM; written when a pool is made or released)
    IpamPools,
    /// IPAM pool id → allocation cursor and free count (native IPAM; written per allocation)
    IpamState,
    /// (pool id, chunk index) → allocation bitmap chunk (native IPAM)
    IpamBits,
    /// plugin name → installed plugin record
    Plugins,
    /// (plugin name, key) → value: each plugin's private kv space
    PluginKv,
    /// owner ("net/<id>", "ep/<net>/<ep>", "sb/<id>", "peer/<ip>") → what weft made in the
    /// kernel for it: the undo log ([`crate::engine::Owned`]). Ownership of host objects is
    /// proved by these records, never inferred from names.
    Owned,
    /// engine metadata (schema version, boot id, cluster peers…)
    Meta,
}

impl Table {
    pub const ALL: [Table; 14] = [
        Table::Networks,
        Table::NetworkNames,
        Table::Endpoints,
        Table::SandboxEndpoints,
        Table::SandboxSharers,
        Table::Sandboxes,
        Table::SandboxNames,
        Table::IpamPools,
        Table::IpamState,
        Table::IpamBits,
        Table::Plugins,
        Table::PluginKv,
        Table::Owned,
        Table::Meta,
    ];

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Table::Networks => "networks",
            Table::NetworkNames => "network_names",
            Table::Endpoints => "endpoints",
            Table::SandboxEndpoints => "sandbox_endpoints",
            Table::SandboxSharers => "sandbox_sharers",
            Table::Sandboxes => "sandboxes",
            Table::SandboxNames => "sandbox_names",
            Table::IpamPools => "ipam_pools",
            Table::IpamState => "ipam_state",
            Table::IpamBits => "ipam_bits",
            Table::Plugins => "plugins",
            Table::PluginKv => "plugin_kv",
            Table::Owned => "owned",
            Table::Meta => "meta",
        }
    }
}

/// What can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Something this operation read changed before it committed: run it again.
    #[error("the state changed while this operation ran")]
    Conflict,
    /// The store cannot be read or written (disk, permissions, a lock held too long…).
    #[error("{0}")]
    Io(String),
    /// A record does not parse.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Key/value rows, as scans return them.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// A consistent read view.
pub trait ReadTxn: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The cluster store's revision this view was taken at (a split store's snapshot).
    fn revision(&self) -> Option<i64> {
        None
    }
}

/// What operations write through (IPAM allocations, records, plugin kv): writes stay private
/// to the operation until it commits, and vanish if it does not.
pub trait WriteTxn: ReadTxn {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Returns whether the key existed.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool>;
    /// Upcast, so helpers written for reads work inside a write.
    fn as_read(&self) -> &dyn ReadTxn;
}

/// One read an operation made, to be checked at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Key {
        table: Table,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Scan {
        table: Table,
        prefix: Vec<u8>,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

/// An operation's outcome for the store: what it read (checked) and what it writes.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub reads: Vec<Read>,
    /// `None`: delete.
    pub writes: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    /// The cluster store's revision of the snapshot the reads came from, if any.
    pub revision: Option<i64>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
    /// Check every read against the state now (`get`, `scan`: inside the store's write
    /// transaction).
    pub fn validate(
        &self,
        get: impl Fn(Table, &[u8]) -> std::result::Result<Option<Vec<u8>>, StoreError>,
        scan: impl Fn(Table, &[u8]) -> std::result::Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>,
    ) -> std::result::Result<(), StoreError> {
        for r in &self.reads {
            let same = match r {
                Read::Key { table, key, value } => get(*table, key)? == *value,
                Read::Scan {
                    table,
                    prefix,
                    rows,
                } => scan(*table, prefix)? == *rows,
            };
            if !same {
                return Err(StoreError::Conflict);
            }
        }
        Ok(())
    }
}

/// A transactional store.
pub trait Store: Send + Sync + 'static {
    /// A snapshot of the committed state.
    fn read(&self) -> Result<Box<dyn ReadTxn>>;
    /// Check `changes.reads` and apply `changes.writes`, atomically and durably. Blocking
    /// (disk): call it off the async threads.
    fn apply(&self, changes: &Changes) -> std::result::Result<(), StoreError>;
    /// A short description for logs and `weft system info` (e.g. the file path).
    fn describe(&self) -> String;
    /// Total time spent committing (durability: fsync), for measurements.
    fn commit_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Durable commits made, and the changes they carried (more changes than commits: group
    /// commit at work), for measurements.
    fn commit_counts(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// An operation's view of the store: a snapshot, the operation's own writes on top, and the
/// list of what it read (for the commit-time check).
pub struct Txn {
    store: Arc<dyn Store>,
    snap: Box<dyn ReadTxn>,
    writes: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    reads: Mutex<Reads>,
}

#[derive(Default)]
struct Reads {
    keys: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    scans: BTreeMap<(Table, Vec<u8>), Rows>,
}

impl Txn {
    pub fn new(store: Arc<dyn Store>) -> Result<Txn> {
        let snap = store.read()?;
        Ok(Txn {
            store,
            snap,
            writes: BTreeMap::new(),
            reads: Mutex::new(Reads::default()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This view's writes on a fresh snapshot: what the clean-up after a failed commit reads.
    pub fn fork(&self) -> Result<Txn> {
        let mut t = Txn::new(self.store.clone())?;
        t.writes = self.writes.clone();
        Ok(t)
    }

    /// Nothing was written.
    pub fn is_clean(&self) -> bool {
        self.writes.is_empty()
    }

    /// The committed state the operation started from, read without being checked at commit
    /// (and without the operation's own writes). Only for what a lock the operation holds
    /// keeps every other writer from changing (the host ports, under the `ports` key): a
    /// checked read of a whole table conflicts with every write to it.
    pub fn unchecked(&self) -> &dyn ReadTxn {
        &*self.snap
    }

    /// What the operation read and writes.
    pub fn into_changes(self) -> Changes {
        let reads = self.reads.into_inner().unwrap();
        let mut out: Vec<Read> = reads
            .keys
            .into_iter()
            .map(|((table, key), value)| Read::Key { table, key, value })
            .collect();
        out.extend(
            reads
                .scans
                .into_iter()
                .map(|((table, prefix), rows)| Read::Scan {
                    table,
                    prefix,
                    rows,
                }),
        );
        Changes {
            reads: out,
            revision: self.snap.revision(),
            writes: self.writes,
        }
    }
}

impl ReadTxn for Txn {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(&(table, key.to_vec())) {
            return Ok(v.clone());
        }
        let v = self.snap.get(table, key)?;
        self.reads
            .lock()
            .unwrap()
            .keys
            .entry((table, key.to_vec()))
            .or_insert_with(|| v.clone());
        Ok(v)
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let base = self.snap.scan(table, prefix)?;
        self.reads
            .lock()
            .unwrap()
            .scans
            .entry((table, prefix.to_vec()))
            .or_insert_with(|| base.clone());
        let mine: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = self
            .writes
            .range((table, prefix.to_vec())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k, v))
            .collect();
        if mine.is_empty() {
            return Ok(base);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
        for (k, v) in mine {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }
}

impl WriteTxn for Txn {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.writes
            .insert((table, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool> {
        let existed = self.get(table, key)?.is_some();
        self.writes.insert((table, key.to_vec()), None);
        Ok(existed)
    }
    fn as_read(&self) -> &dyn ReadTxn {
        self
    }
}

/// Typed helpers: records are JSON (readable with any redb/etcd tool, tolerant to new fields).
pub fn get_json<T: DeserializeOwned>(
    txn: &(impl ReadTxn + ?Sized),
    table: Table,
    key: &str,
) -> Result<Option<T>> {
    match txn.get(table, key.as_bytes())? {
        None => Ok(None),
        Some(v) => Ok(Some(decode_record(table, key.as_bytes(), &v)?)),
    }
}

pub fn put_json<T: Serialize>(
    txn: &mut (impl WriteTxn + ?Sized),
    table: Table,
    key: &str,
    value: &T,
) -> Result<()> {
    let v = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    txn.put(table, key.as_bytes(), &v)
}

pub fn list_json<T: DeserializeOwned>(
    txn: &(impl ReadTxn + ?Sized),
    table: Table,
) -> Result<Vec<T>> {
    scan_json(txn, table, "")
}

pub fn scan_json<T: DeserializeOwned>(
    txn: &(impl ReadTxn + ?Sized),
    table: Table,
    prefix: &str,
) -> Result<Vec<T>> {
    txn.scan(table, prefix.as_bytes())?
        .into_iter()
        .map(|(k, v)| decode_record(table, &k, &v))
        .collect()
}

/// A record of `table` under `key`; a record that does not parse is an error naming it (so
/// `weft system check` and the user can find it), never a panic.
pub fn decode_record<T: DeserializeOwned>(table: Table, key: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| {
        StoreError::Corrupt(format!("{table:?} {:?}: {e}", String::from_utf8_lossy(key))).into()
    })
}

pub fn decode<T: DeserializeOwned>(v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(e.to_string()).into())
}

pub fn get_str(txn: &(impl ReadTxn + ?Sized), table: Table, key: &str) -> Result<Option<String>> {
    Ok(txn
        .get(table, key.as_bytes())?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

impl<T: ReadTxn + ?Sized> ReadTxn for Box<T> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(table, key)
    }
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        (**self).scan(table, prefix)
    }
    fn revision(&self) -> Option<i64> {
        (**self).revision()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_private_until_commit_and_stale_reads_conflict() {
        let s: Arc<dyn Store> = Arc::new(mem::MemStore::new());
        let mut a = Txn::new(s.clone()).unwrap();
        put_json(&mut a, Table::Meta, "x", &1u32).unwrap();
        put_json(&mut a, Table::Meta, "y/1", &1u32).unwrap();
        assert_eq!(get_json::<u32>(&a, Table::Meta, "x").unwrap(), Some(1));
        assert_eq!(a.scan(Table::Meta, b"y/").unwrap().len(), 1);
        assert_eq!(
            get_json::<u32>(&*s.read().unwrap(), Table::Meta, "x").unwrap(),
            None
        );
        s.apply(&a.into_changes()).unwrap();
        assert_eq!(
            get_json::<u32>(&*s.read().unwrap(), Table::Meta, "x").unwrap(),
            Some(1)
        );

        // Two operations read x; the first to commit wins, the second must run again.
        let mut b = Txn::new(s.clone()).unwrap();
        let mut c = Txn::new(s.clone()).unwrap();
        let vb: u32 = get_json(&b, Table::Meta, "x").unwrap().unwrap();
        let vc: u32 = get_json(&c, Table::Meta, "x").unwrap().unwrap();
        put_json(&mut b, Table::Meta, "x", &(vb + 1)).unwrap();
        put_json(&mut c, Table::Meta, "x", &(vc + 1)).unwrap();
        s.apply(&b.into_changes()).unwrap();
        assert!(matches!(
            s.apply(&c.into_changes()),
            Err(StoreError::Conflict)
        ));
        assert_eq!(
            get_json::<u32>(&*s.read().unwrap(), Table::Meta, "x").unwrap(),
            Some(2)
        );

        // A scan conflicts with a key added under its prefix; unrelated writes do not.
        let d = Txn::new(s.clone()).unwrap();
        d.scan(Table::Meta, b"y/").unwrap();
        let mut e = Txn::new(s.clone()).unwrap();
        put_json(&mut e, Table::Meta, "z", &0u32).unwrap();
        s.apply(&e.into_changes()).unwrap();
        let mut d2 = d;
        put_json(&mut d2, Table::Meta, "w", &0u32).unwrap();
        s.apply(&d2.into_changes()).unwrap();
        let f = Txn::new(s.clone()).unwrap();
        f.scan(Table::Meta, b"y/").unwrap();
        let mut g = Txn::new(s.clone()).unwrap();
        put_json(&mut g, Table::Meta, "y/2", &0u32).unwrap();
        s.apply(&g.into_changes()).unwrap();
        let mut f2 = f;
        f2.delete(Table::Meta, b"w").unwrap();
        assert!(matches!(
            s.apply(&f2.into_changes()),
            Err(StoreError::Conflict)
        ));
    }
}
