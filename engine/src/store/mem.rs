//! An in-memory store with the same behaviour as the embedded one (snapshots, checked atomic
//! commits). For unit tests and for embedders that want no state on disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Changes, ReadTxn, Store, StoreError, Table};
use crate::error::Result;

type Map = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

/// In-memory [`Store`].
#[derive(Default, Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Arc<Map>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn scan_map(map: &Map, table: Table, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    map.range((table, prefix.to_vec())..)
        .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect()
}

struct MemRead(Arc<Map>);

impl ReadTxn for MemRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(&(table, key.to_vec())).cloned())
    }
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(scan_map(&self.0, table, prefix))
    }
}

impl Store for MemStore {
    fn read(&self) -> Result<Box<dyn ReadTxn>> {
        Ok(Box::new(MemRead(self.inner.lock().unwrap().clone())))
    }
    fn apply(&self, changes: &Changes) -> std::result::Result<(), StoreError> {
        let mut shared = self.inner.lock().unwrap();
        let now: &Map = &shared;
        changes.validate(
            |t, k| Ok(now.get(&(t, k.to_vec())).cloned()),
            |t, p| Ok(scan_map(now, t, p)),
        )?;
        let mut next = (**shared).clone();
        for ((t, k), v) in &changes.writes {
            match v {
                Some(v) => next.insert((*t, k.clone()), v.clone()),
                None => next.remove(&(*t, k.clone())),
            };
        }
        *shared = Arc::new(next);
        Ok(())
    }
    fn describe(&self) -> String {
        "in-memory".into()
    }
}
