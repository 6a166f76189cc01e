//! The embedded store: one redb file (`<root>/weft.redb`), ACID, opened in multi-writer mode
//! so several `weft` processes (CLI invocations, a daemon) can share it. A commit takes redb's
//! one write transaction only for as long as it checks the operation's reads and applies its
//! writes; every commit is durable before it returns. Concurrent commits of one process are
//! grouped: one durable write transaction carries every change queued while the previous one
//! was being written. redb's types stay in this file.
//!
//! After a failed write (a full disk, an I/O error) redb refuses every later transaction
//! ("Previous I/O error occurred") until the database is opened again: a failed commit opens
//! it again at once, so weft goes on by itself once there is room.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// The open database; replaced by a fresh open after a failed write.
    db: std::sync::RwLock<Arc<Database>>,
    /// Databases replaced after a failed write, kept while read transactions may use them.
    retired: Mutex<Vec<Arc<Database>>>,
    path: PathBuf,
    commit_ns: std::sync::atomic::AtomicU64,
    commits: std::sync::atomic::AtomicU64,
    applied: std::sync::atomic::AtomicU64,
    queue: Mutex<Vec<Arc<Slot>>>,
    commit_lock: Mutex<()>,
}

impl RedbStore {
    /// Open or create the store file, creating every table.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Self::open_db(path)?;
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
            db: std::sync::RwLock::new(Arc::new(db)),
            retired: Default::default(),
            path: path.to_owned(),
            commit_ns: Default::default(),
            commits: Default::default(),
            applied: Default::default(),
            queue: Default::default(),
            commit_lock: Default::default(),
        })
    }
}

impl RedbStore {
    fn open_db(path: &Path) -> std::result::Result<Database, StoreError> {
        Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))
    }

    fn db(&self) -> Arc<Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a failed write: open the database again (redb refuses everything on a handle
    /// that met an I/O error). If that fails too, the next failure tries again.
    fn reopen(&self) {
        match Self::open_db(&self.path) {
            Ok(db) => {
                let old = std::mem::replace(
                    &mut *self.db.write().unwrap_or_else(|e| e.into_inner()),
                    Arc::new(db),
                );
                self.retired
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(old);
                tracing::warn!(path = %self.path.display(), "the store was opened again after a failed write");
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// The error of a failed write, saying what to do when it is a full disk.
    fn explain(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Io(m) if m.contains("No space left on device") => StoreError::Io(format!(
                "{}: the disk is full (No space left on device): free space on it, then try again",
                self.path.display()
            )),
            e => e,
        }
    }
}

/// One change waiting for a group commit, and its outcome.
struct Slot {
    changes: Changes,
    result: Mutex<Option<std::result::Result<(), StoreError>>>,
}

impl RedbStore {
    /// One write transaction for a batch: each change is checked against the state its
    /// predecessors in the batch left (so the batch is serializable in queue order), applied
    /// if its reads still hold, refused with a conflict otherwise; then one durable commit.
    fn commit_batch(
        &self,
        batch: &[Arc<Slot>],
    ) -> std::result::Result<Vec<std::result::Result<(), StoreError>>, StoreError> {
        let db = self.db();
        let txn = db.begin_write().map_err(io)?;
        let mut out = Vec::with_capacity(batch.len());
        for slot in batch {
            let changes = &slot.changes;
            let valid = changes.validate(
                |t, k| {
                    let table = txn.open_table(def(t)).map_err(io)?;
                    let v = table.get(k).map_err(io)?.map(|v| v.value().to_vec());
                    Ok(v)
                },
                |t, p| scan_table(&txn.open_table(def(t)).map_err(io)?, p),
            );
            match valid {
                Err(StoreError::Conflict) => {
                    out.push(Err(StoreError::Conflict));
                    continue;
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            }
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
            out.push(Ok(()));
        }
        txn.commit().map_err(io)?;
        Ok(out)
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
        let db = self.db();
        match db.begin_read() {
            Ok(r) => Ok(Box::new(RedbRead(r))),
            Err(e) => {
                // A handle that met an I/O error refuses reads too: open it again, once.
                self.reopen();
                Ok(Box::new(RedbRead(
                    self.db().begin_read().map_err(|_| io(e))?,
                )))
            }
        }
    }

    fn apply(&self, changes: &Changes) -> std::result::Result<(), StoreError> {
        if changes.writes.is_empty() {
            return Ok(());
        }
        // Group commit: queue this change; whoever holds the commit lock commits everything
        // queued in one durable write transaction. Each caller returns only after the commit
        // that carried its change.
        let slot = Arc::new(Slot {
            changes: changes.clone(),
            result: Mutex::new(None),
        });
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot.clone());
        let _leader = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = slot.result.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return r; // a leader before us carried it
        }
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let started = std::time::Instant::now();
        let results = match self.commit_batch(&batch) {
            Ok(each) => each,
            Err(e) => {
                self.reopen();
                let e = self.explain(e);
                batch.iter().map(|_| Err(e.clone())).collect()
            }
        };
        let took = started.elapsed();
        self.commit_ns
            .fetch_add(took.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.applied
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(
            us = took.as_micros() as u64,
            batch = batch.len(),
            "store commit"
        );
        let mut own = None;
        for (s, r) in batch.iter().zip(results) {
            if Arc::ptr_eq(s, &slot) {
                own = Some(r);
            } else {
                *s.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            }
        }
        own.expect("the leader's own change is in its batch")
    }

    fn describe(&self) -> String {
        format!("embedded ({})", self.path.display())
    }

    fn commit_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.commit_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn commit_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.commits.load(Relaxed), self.applied.load(Relaxed))
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

    #[test]
    fn concurrent_commits_are_grouped_and_stay_serializable() {
        let dir = std::env::temp_dir().join(format!("weft-store-{}", crate::model::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Arc::new(RedbStore::open(&dir.join("s.redb")).unwrap());
        let dynstore: Arc<dyn Store> = s.clone();
        let mut w = Txn::new(dynstore.clone()).unwrap();
        put_json(&mut w, Table::Meta, "counter", &0u32).unwrap();
        s.apply(&w.into_changes()).unwrap();
        // 32 threads each add one to a counter (read-modify-write, retried on conflict) and
        // write a key of their own.
        let threads: Vec<_> = (0..32u32)
            .map(|i| {
                let st = dynstore.clone();
                std::thread::spawn(move || loop {
                    let mut t = Txn::new(st.clone()).unwrap();
                    let c: u32 = get_json(&t, Table::Meta, "counter").unwrap().unwrap();
                    put_json(&mut t, Table::Meta, "counter", &(c + 1)).unwrap();
                    put_json(&mut t, Table::Meta, &format!("own/{i}"), &i).unwrap();
                    match st.apply(&t.into_changes()) {
                        Ok(()) => return,
                        Err(StoreError::Conflict) => continue,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let r = s.read().unwrap();
        assert_eq!(
            get_json::<u32>(&*r, Table::Meta, "counter").unwrap(),
            Some(32)
        );
        assert_eq!(r.scan(Table::Meta, b"own/").unwrap().len(), 32);
        let (commits, applied) = s.commit_counts();
        assert!(applied >= 33, "{applied}");
        assert!(
            commits < applied,
            "no grouping: {commits} commits for {applied} changes"
        );
        eprintln!("{applied} changes (conflicts included) in {commits} commits");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
