//! The embedded store: one redb file (`<root>/weft.redb`), ACID, opened in multi-writer mode
//! so several `weft` processes (CLI invocations, a daemon) can share it; each write
//! transaction is exclusive and every commit is durable before it returns.

use std::path::{Path, PathBuf};

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{ReadTxn, Store, Table, WriteTxn};
use crate::error::{Error, Result};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn def(t: Table) -> Def {
    TableDefinition::new(t.name())
}

/// The embedded (default) store.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    commit_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RedbStore {
    /// Open or create the store file, creating every table.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", path.display())))?;
        // Create missing tables (first open only: a write here would cost every CLI call
        // a commit).
        let missing = {
            let r = db.begin_read()?;
            Table::ALL.iter().any(|t| r.open_table(def(*t)).is_err())
        };
        if missing {
            let txn = db.begin_write()?;
            for t in Table::ALL {
                txn.open_table(def(t))?;
            }
            txn.commit()?;
        }
        Ok(RedbStore {
            db,
            path: path.to_owned(),
            commit_ns: Default::default(),
        })
    }
}

fn scan_table<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for item in table.range::<&[u8]>(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

struct RedbRead(redb::ReadTransaction);

impl ReadTxn for RedbRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.0.open_table(def(table))?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.0.open_table(def(table))?;
        scan_table(&t, prefix)
    }
}

struct RedbWrite(
    redb::WriteTransaction,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
);

impl ReadTxn for RedbWrite {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.0.open_table(def(table))?;
        let v = t.get(key)?.map(|v| v.value().to_vec());
        Ok(v)
    }
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.0.open_table(def(table))?;
        scan_table(&t, prefix)
    }
}

impl WriteTxn for RedbWrite {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let mut t = self.0.open_table(def(table))?;
        t.insert(key, value)?;
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool> {
        let mut t = self.0.open_table(def(table))?;
        let existed = t.remove(key)?.is_some();
        Ok(existed)
    }
    fn commit(self: Box<Self>) -> Result<()> {
        let t = std::time::Instant::now();
        self.0.commit()?;
        let took = t.elapsed();
        self.1
            .fetch_add(took.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(us = took.as_micros() as u64, "store commit");
        Ok(())
    }
    fn as_read(&self) -> &dyn ReadTxn {
        self
    }
}

impl Store for RedbStore {
    fn read(&self) -> Result<Box<dyn ReadTxn + '_>> {
        Ok(Box::new(RedbRead(self.db.begin_read()?)))
    }
    fn write(&self) -> Result<Box<dyn WriteTxn + '_>> {
        Ok(Box::new(RedbWrite(
            self.db.begin_write()?,
            self.commit_ns.clone(),
        )))
    }
    fn describe(&self) -> String {
        format!("embedded ({})", self.path.display())
    }
    fn commit_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.commit_ns.load(std::sync::atomic::Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{get_json, put_json};

    #[test]
    fn write_commit_read_scan_abort() {
        let dir = std::env::temp_dir().join(format!("weft-store-{}", crate::model::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = RedbStore::open(&dir.join("s.redb")).unwrap();
        let mut w = s.write().unwrap();
        put_json(&mut *w, Table::Meta, "a/1", &1u32).unwrap();
        put_json(&mut *w, Table::Meta, "a/2", &2u32).unwrap();
        put_json(&mut *w, Table::Meta, "b/1", &3u32).unwrap();
        w.commit().unwrap();
        let r = s.read().unwrap();
        assert_eq!(r.scan(Table::Meta, b"a/").unwrap().len(), 2);
        assert_eq!(get_json::<u32>(&*r, Table::Meta, "b/1").unwrap(), Some(3));
        drop(r);
        // An uncommitted write is not visible.
        let mut w = s.write().unwrap();
        assert!(w.delete(Table::Meta, b"a/1").unwrap());
        drop(w);
        assert_eq!(
            get_json::<u32>(&*s.read().unwrap(), Table::Meta, "a/1").unwrap(),
            Some(1)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
