//! State: one small transactional key/value trait ([`Store`]) and typed helpers over it.
//!
//! The embedded store ([`redb_store::RedbStore`], the default) keeps everything in one ACID
//! file under the state root. A cluster store (etcd) implements the same trait with optimistic
//! transactions. Everything above this module speaks only [`ReadTxn`]/[`WriteTxn`], so IPAM
//! allocations, records and plugin kv writes of one operation commit (or vanish) together.

pub mod mem;
pub mod redb_store;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;

/// The tables ("buckets") of weft's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// IPAM pool id → pool state (native IPAM)
    IpamPools,
    /// (pool id, chunk index) → allocation bitmap chunk (native IPAM)
    IpamBits,
    /// plugin name → installed plugin record
    Plugins,
    /// (plugin name, key) → value: each plugin's private kv space
    PluginKv,
    /// engine metadata (schema version, boot id…)
    Meta,
}

impl Table {
    pub const ALL: [Table; 12] = [
        Table::Networks,
        Table::NetworkNames,
        Table::Endpoints,
        Table::SandboxEndpoints,
        Table::SandboxSharers,
        Table::Sandboxes,
        Table::SandboxNames,
        Table::IpamPools,
        Table::IpamBits,
        Table::Plugins,
        Table::PluginKv,
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
            Table::IpamBits => "ipam_bits",
            Table::Plugins => "plugins",
            Table::PluginKv => "plugin_kv",
            Table::Meta => "meta",
        }
    }
}

/// A consistent read view.
pub trait ReadTxn {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// A read-write transaction: nothing is visible to others until [`WriteTxn::commit`].
/// Dropping it without commit aborts it.
pub trait WriteTxn: ReadTxn + Send {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Returns whether the key existed.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool>;
    fn commit(self: Box<Self>) -> Result<()>;
    /// Upcast, so helpers written for reads work inside a write.
    fn as_read(&self) -> &dyn ReadTxn;
}

/// A transactional store.
pub trait Store: Send + Sync + 'static {
    fn read(&self) -> Result<Box<dyn ReadTxn + '_>>;
    fn write(&self) -> Result<Box<dyn WriteTxn + '_>>;
    /// A short description for logs and `weft info` (e.g. the file path).
    fn describe(&self) -> String;
    /// Total time spent committing (durability: fsync), for measurements.
    fn commit_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
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
        Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
    }
}

pub fn put_json<T: Serialize>(
    txn: &mut (impl WriteTxn + ?Sized),
    table: Table,
    key: &str,
    value: &T,
) -> Result<()> {
    let v = serde_json::to_vec(value)?;
    txn.put(table, key.as_bytes(), &v)
}

pub fn list_json<T: DeserializeOwned>(
    txn: &(impl ReadTxn + ?Sized),
    table: Table,
) -> Result<Vec<T>> {
    txn.scan(table, b"")?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(Into::into))
        .collect()
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
}
