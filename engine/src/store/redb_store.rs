//! The embedded store: one redb file (`<root>/weft.redb`), ACID, opened in multi-writer mode
//! so several `weft` processes (CLI invocations, a daemon) can share it. A commit takes redb's
//! one write transaction only for as long as it checks the operation's reads and applies its
//! writes; every commit is durable before it returns. redb's types stay in this file.

use std::path::{Path, PathBuf};

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Changes, ReadTxn, Store, StoreError, Table};
use crate::error::Result;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn def(t: Table) -> Def {
    TableDefinition::new(t.name())
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// The embedded (default) store.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    commit_ns: std::sync::atomic::AtomicU64,
}

impl RedbStore {
    /// Open or create the store file, creating every table.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        // Create missing tables (first open only: a write here would cost every CLI call
        // a commit).
        let missing = {
            let r = db.begin_read().map_err(io)?;
            Table::ALL.iter().any(|t| r.open_table(def(*t)).is_err())
        };
        if missing {
            let txn = db.begin_write().map_err(io)?;
            for t in Table::ALL {
                txn.open_table(def(t)).map_err(io)?;
            }
            txn.commit().map_err(io)?;
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
) -> std::result::Result<super::Rows, StoreError> {
    let mut out = Vec::new();
    for item in table.range::<&[u8]>(prefix..).map_err(io)? {
        let (k, v) = item.map_err(io)?;
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
        let t = self.0.open_table(def(table)).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.0.open_table(def(table)).map_err(io)?;
        Ok(scan_table(&t, prefix)?)
    }
}

impl Store for RedbStore {
    fn read(&self) -> Result<Box<dyn ReadTxn>> {
        Ok(Box::new(RedbRead(self.db.begin_read().map_err(io)?)))
    }

    fn apply(&self, changes: &Changes) -> std::result::Result<(), StoreError> {
        if changes.writes.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let txn = self.db.begin_write().map_err(io)?;
        changes.validate(
            |t, k| {
                let table = txn.open_table(def(t)).map_err(io)?;
                let v = table.get(k).map_err(io)?.map(|v| v.value().to_vec());
                Ok(v)
            },
            |t, p| scan_table(&txn.open_table(def(t)).map_err(io)?, p),
        )?;
        type Open<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
        let mut current: Option<(Table, Open<'_>)> = None;
        for ((t, k), v) in &changes.writes {
            if current.as_ref().map(|(ct, _)| ct) != Some(t) {
                current = Some((*t, txn.open_table(def(*t)).map_err(io)?));
            }
            let table = &mut current.as_mut().unwrap().1;
            match v {
                Some(v) => {
                    table.insert(k.as_slice(), v.as_slice()).map_err(io)?;
                }
                None => {
                    table.remove(k.as_slice()).map_err(io)?;
                }
            }
        }
        drop(current);
        txn.commit().map_err(io)?;
        let took = started.elapsed();
        self.commit_ns
            .fetch_add(took.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(us = took.as_micros() as u64, "store commit");
        Ok(())
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
    use std::sync::Arc;

    use super::*;
    use crate::store::{get_json, put_json, Txn, WriteTxn};

    #[test]
    fn write_commit_read_scan_abort() {
        let dir = std::env::temp_dir().join(format!("weft-store-{}", crate::model::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.join("s.redb")).unwrap());
        let mut w = Txn::new(s.clone()).unwrap();
        put_json(&mut w, Table::Meta, "a/1", &1u32).unwrap();
        put_json(&mut w, Table::Meta, "a/2", &2u32).unwrap();
        put_json(&mut w, Table::Meta, "b/1", &3u32).unwrap();
        s.apply(&w.into_changes()).unwrap();
        let r = s.read().unwrap();
        assert_eq!(r.scan(Table::Meta, b"a/").unwrap().len(), 2);
        assert_eq!(get_json::<u32>(&*r, Table::Meta, "b/1").unwrap(), Some(3));
        drop(r);
        // An uncommitted write is not visible.
        let mut w = Txn::new(s.clone()).unwrap();
        assert!(w.delete(Table::Meta, b"a/1").unwrap());
        drop(w);
        assert_eq!(
            get_json::<u32>(&*s.read().unwrap(), Table::Meta, "a/1").unwrap(),
            Some(1)
        );
        // A stale read is refused.
        let mut x = Txn::new(s.clone()).unwrap();
        let mut y = Txn::new(s.clone()).unwrap();
        x.get(Table::Meta, b"a/1").unwrap();
        y.get(Table::Meta, b"a/1").unwrap();
        x.put(Table::Meta, b"a/1", b"9").unwrap();
        y.put(Table::Meta, b"a/1", b"8").unwrap();
        s.apply(&x.into_changes()).unwrap();
        assert!(matches!(
            s.apply(&y.into_changes()),
            Err(StoreError::Conflict)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
