//! Locks: who may change what at the same time.
//!
//! Every operation holds the engine-wide lock *shared* and the keys of the objects it changes
//! (`net:<id>`, `sb:<id>`, `sbname:<name>`, `networks` for choices across networks such as
//! pools and names, `ipam:<plugin>` while a network create asks an IPAM plugin for pools,
//! `ports` for host-port allocations, `plugins`, `peers`) *exclusively*. Recovery, reset and
//! the consistency check hold the engine-wide lock exclusively. Keys are taken in sorted order, so two
//! operations never wait on each other in a circle.
//!
//! Each lock is two locks: an async mutex for the tasks of this process, and an OFD byte-range
//! lock (`F_OFD_SETLK`) on `<run root>/weft.lock` for other weft processes sharing the state —
//! byte 0 for the engine-wide lock, byte `1 + hash(key)` for a key. The kernel drops a dead
//! process's locks, so a killed CLI never leaves a lock behind. Waiting for another process
//! polls (2 ms): with a daemon up, CLIs go through it and never contend here.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::error::{Error, Result};

pub(crate) struct Locks {
    file: Arc<File>,
    global: Arc<RwLock<()>>,
    /// How many tasks of this process hold the global lock shared (the OFD read lock is
    /// taken by the first and released by the last: it belongs to the open file, not a task).
    shared: Arc<Mutex<usize>>,
    keys: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

enum Global {
    Shared(
        #[allow(dead_code)] OwnedRwLockReadGuard<()>,
        Arc<Mutex<usize>>,
    ),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// Locks held by one operation; released when dropped.
pub(crate) struct Held {
    file: Arc<File>,
    global: Option<Global>,
    keys: Vec<(OwnedMutexGuard<()>, i64)>,
}

#[cfg(test)]
impl Held {
    pub fn exclusive(&self) -> bool {
        matches!(self.global, Some(Global::Exclusive(_)))
    }
}

fn offset(key: &str) -> i64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    1 + (h.finish() >> 2) as i64
}

/// Try an OFD lock on one byte: Ok(false) if another process holds it.
fn ofd(file: &File, at: i64, kind: libc::c_int) -> std::io::Result<bool> {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = at;
    fl.l_len = 1;
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

async fn ofd_wait(file: &File, at: i64, kind: libc::c_int) -> Result<()> {
    loop {
        match ofd(file, at, kind) {
            Ok(true) => return Ok(()),
            Ok(false) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => return Err(Error::internal(format!("cannot lock weft's state: {e}"))),
        }
    }
}

fn unlock(file: &File, at: i64) {
    let _ = ofd(file, at, libc::F_UNLCK);
}

impl Locks {
    pub fn open(path: &Path) -> Result<Locks> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
        Ok(Locks {
            file: Arc::new(file),
            global: Arc::new(RwLock::new(())),
            shared: Arc::new(Mutex::new(0)),
            keys: Mutex::new(HashMap::new()),
        })
    }

    fn key_mutex(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        shared(&self.keys, key)
    }

    /// Take the engine-wide lock (shared, or exclusive) and `keys`.
    pub async fn acquire(&self, keys: &[String], exclusive: bool) -> Result<Held> {
        let mut held = Held {
            file: self.file.clone(),
            global: None,
            keys: Vec::new(),
        };
        if exclusive {
            let g = self.global.clone().write_owned().await;
            ofd_wait(&self.file, 0, libc::F_WRLCK).await?;
            held.global = Some(Global::Exclusive(g));
        } else {
            let g = self.global.clone().read_owned().await;
            loop {
                {
                    let mut n = self.shared.lock().unwrap();
                    if *n > 0 {
                        *n += 1;
                        break;
                    }
                    match ofd(&self.file, 0, libc::F_RDLCK) {
                        Ok(true) => {
                            *n = 1;
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            return Err(Error::internal(format!("cannot lock weft's state: {e}")))
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            held.global = Some(Global::Shared(g, self.shared.clone()));
        }
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let g = self.key_mutex(k).lock_owned().await;
            let at = offset(k);
            // `held` unlocks what it has if this fails.
            ofd_wait(&self.file, at, libc::F_WRLCK).await?;
            held.keys.push((g, at));
        }
        Ok(held)
    }

    /// The engine-wide lock shared and `keys`, if no one (task or process) holds them or an
    /// exclusive hold of the engine waits now; `None` otherwise (nothing is kept).
    pub fn try_acquire(&self, keys: &[String]) -> Result<Option<Held>> {
        let Ok(g) = self.global.clone().try_read_owned() else {
            return Ok(None);
        };
        let mut held = Held {
            file: self.file.clone(),
            global: None,
            keys: Vec::new(),
        };
        {
            let mut n = self.shared.lock().unwrap();
            if *n == 0 {
                match ofd(&self.file, 0, libc::F_RDLCK) {
                    Ok(true) => {}
                    Ok(false) => return Ok(None),
                    Err(e) => {
                        return Err(Error::internal(format!("cannot lock weft's state: {e}")))
                    }
                }
            }
            *n += 1;
        }
        held.global = Some(Global::Shared(g, self.shared.clone()));
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            // `held` lets go of what it has when dropped.
            let Ok(g) = self.key_mutex(k).try_lock_owned() else {
                return Ok(None);
            };
            let at = offset(k);
            match ofd(&self.file, at, libc::F_WRLCK) {
                Ok(true) => held.keys.push((g, at)),
                Ok(false) => return Ok(None),
                Err(e) => return Err(Error::internal(format!("cannot lock weft's state: {e}"))),
            }
        }
        Ok(Some(held))
    }

    /// The engine-wide lock exclusively, if no one (task or process) holds it or waits for it
    /// now; `None` otherwise. For work that must not queue behind operations in flight (and
    /// so, with a fair lock, hold up every operation that comes after it).
    pub fn try_exclusive(&self) -> Result<Option<Held>> {
        let Ok(g) = self.global.clone().try_write_owned() else {
            return Ok(None);
        };
        match ofd(&self.file, 0, libc::F_WRLCK) {
            Ok(true) => Ok(Some(Held {
                file: self.file.clone(),
                global: Some(Global::Exclusive(g)),
                keys: Vec::new(),
            })),
            Ok(false) => Ok(None),
            Err(e) => Err(Error::internal(format!("cannot lock weft's state: {e}"))),
        }
    }
}

/// The one `T` under `key` while anyone holds it: a map of weak references, whose dead
/// entries are dropped now and then.
pub(super) fn shared<T: Default>(map: &Mutex<HashMap<String, Weak<T>>>, key: &str) -> Arc<T> {
    let mut m = map.lock().unwrap();
    if let Some(k) = m.get(key).and_then(Weak::upgrade) {
        return k;
    }
    if m.len() > 1024 {
        m.retain(|_, w| w.strong_count() > 0);
    }
    let k = Arc::new(T::default());
    m.insert(key.to_string(), Arc::downgrade(&k));
    k
}

impl Held {
    /// Let go of one key before the others (an operation past the part that needed it).
    pub fn release(&mut self, key: &str) {
        let at = offset(key);
        if let Some(i) = self.keys.iter().position(|(_, a)| *a == at) {
            let (g, at) = self.keys.remove(i);
            unlock(&self.file, at);
            drop(g);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (_, at) in self.keys.drain(..).rev() {
            unlock(&self.file, at);
        }
        match self.global.take() {
            Some(Global::Exclusive(g)) => {
                unlock(&self.file, 0);
                drop(g);
            }
            Some(Global::Shared(g, count)) => {
                let mut n = count.lock().unwrap();
                *n -= 1;
                if *n == 0 {
                    unlock(&self.file, 0);
                }
                drop(n);
                drop(g);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_exclude_each_other_and_exclusive_waits_for_shared() {
        let dir = std::env::temp_dir().join(format!("weft-locks-{}", crate::model::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = Arc::new(Locks::open(&dir.join("weft.lock")).unwrap());
            let a = l.acquire(&["net:a".into()], false).await.unwrap();
            // Another key is free; the same key waits.
            let b = l.acquire(&["net:b".into()], false).await.unwrap();
            let l2 = l.clone();
            let waiter =
                tokio::spawn(async move { l2.acquire(&["net:a".into()], false).await.map(|_| ()) });
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(!waiter.is_finished());
            drop(a);
            waiter.await.unwrap().unwrap();
            // Exclusive waits for b (shared) to go.
            let l3 = l.clone();
            let ex =
                tokio::spawn(async move { l3.acquire(&[], true).await.map(|h| h.exclusive()) });
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(!ex.is_finished());
            drop(b);
            assert!(ex.await.unwrap().unwrap());
            // try_acquire: keys held elsewhere, or the engine held exclusively, give None and
            // keep nothing; free keys are taken.
            let a = l.acquire(&["net:a".into()], false).await.unwrap();
            assert!(l
                .try_acquire(&["net:a".into(), "net:b".into()])
                .unwrap()
                .is_none());
            let b = l
                .try_acquire(&["net:b".into()])
                .unwrap()
                .expect("net:b is free");
            assert!(l.try_acquire(&["net:b".into()]).unwrap().is_none());
            drop((a, b));
            let both = l.try_acquire(&["net:a".into(), "net:b".into()]).unwrap();
            assert!(both.is_some(), "the failed try kept nothing");
            drop(both);
            let ex = l.acquire(&[], true).await.unwrap();
            assert!(l.try_acquire(&["net:c".into()]).unwrap().is_none());
            drop(ex);
            // The OFD lock on byte 0 is free again (another open file can take it).
            let other = File::options()
                .read(true)
                .write(true)
                .open(dir.join("weft.lock"))
                .unwrap();
            assert!(ofd(&other, 0, libc::F_WRLCK).unwrap());
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
