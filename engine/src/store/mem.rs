//! An in-memory store with the same transactional behaviour as the embedded one (a write
//! works on a private copy that replaces the shared map on commit). For unit tests and for
//! embedders that want no state on disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use super::{ReadTxn, Store, Table, WriteTxn};
use crate::error::Result;

type Map = BTreeMap<(&'static str, Vec<u8>), Vec<u8>>;

/// In-memory [`Store`].
#[derive(Default, Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Map>>,
    /// Serialises writers, like redb's single write transaction.
    writer: Arc<(Mutex<bool>, Condvar)>,
}

/// Held by the one live write transaction.
struct WriterSlot(Arc<(Mutex<bool>, Condvar)>);

impl WriterSlot {
    fn take(slot: &Arc<(Mutex<bool>, Condvar)>) -> WriterSlot {
        let (m, c) = &**slot;
        let mut busy = m.lock().unwrap();
        while *busy {
            busy = c.wait(busy).unwrap();
        }
        *busy = true;
        WriterSlot(slot.clone())
    }
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        let (m, c) = &*self.0;
        *m.lock().unwrap() = false;
        c.notify_one();
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn scan_map(map: &Map, table: Table, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    map.range((table.name(), prefix.to_vec())..)
        .take_while(|((t, k), _)| *t == table.name() && k.starts_with(prefix))
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect()
}

struct MemRead(Map);

impl ReadTxn for MemRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(&(table.name(), key.to_vec())).cloned())
    }
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(scan_map(&self.0, table, prefix))
    }
}

struct MemWrite<'a> {
    shared: &'a Mutex<Map>,
    copy: Map,
    _slot: WriterSlot,
}

impl ReadTxn for MemWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.copy.get(&(table.name(), key.to_vec())).cloned())
    }
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(scan_map(&self.copy, table, prefix))
    }
}

impl WriteTxn for MemWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.copy
            .insert((table.name(), key.to_vec()), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool> {
        Ok(self.copy.remove(&(table.name(), key.to_vec())).is_some())
    }
    fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        *this.shared.lock().unwrap() = this.copy;
        Ok(())
    }
    fn as_read(&self) -> &dyn ReadTxn {
        self
    }
}

impl Store for MemStore {
    fn read(&self) -> Result<Box<dyn ReadTxn + '_>> {
        Ok(Box::new(MemRead(self.inner.lock().unwrap().clone())))
    }
    fn write(&self) -> Result<Box<dyn WriteTxn + '_>> {
        let slot = WriterSlot::take(&self.writer);
        let copy = self.inner.lock().unwrap().clone();
        Ok(Box::new(MemWrite {
            shared: &self.inner,
            copy,
            _slot: slot,
        }))
    }
    fn describe(&self) -> String {
        "in-memory".into()
    }
}
