//! The one transaction type: every change the engine makes is an [`Op`].
//!
//! An op holds its locks, an optimistic store transaction ([`Txn`]) and a kernel transaction
//! ([`Tx`]) whose journal says what the op is and how to tell whether it committed
//! ([`Intent`]). It ends in exactly one of three ways:
//!
//! - [`Op::commit`]: the store commit (off the async threads, durable), then the journal goes.
//! - [`Op::abort`]: the kernel work is undone — or, for a removal that already removed
//!   something, finished (a half-removed object is worse than a removed one: removals roll
//!   forward, creations roll back).
//! - dropped unfinished (a cancelled request, a panic): the same as abort, run by a task the
//!   drop spawns, still holding the op's locks; without a runtime, before the next op begins.
//!   A process killed outright leaves the journal, which the next [`crate::Engine::open`]
//!   settles the same way.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::locks::Held;
use super::records::{self, Owned};
use super::Engine;
use crate::drivers::Ctx;
use crate::error::{Error, Result};
use crate::model::new_id;
use crate::net::tx::JournalSpec;
use crate::net::{Journal, Step, Tx};
use crate::store::{get_json, StoreError, Table, Txn};

/// How recovery tells whether an op committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Witness {
    /// Committed iff the ownership record `key` was written by this op.
    Owned { key: String },
    /// Committed iff none of these records exist any more.
    Absent { table: String, keys: Vec<String> },
}

/// How to finish an interrupted removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Replay {
    NetworkRm { id: String },
    SandboxRm { ids: Vec<String> },
    Disconnect { network: String, sandbox: String },
    PeerRm { peer: IpAddr },
}

/// What an op is, as its journal records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    pub what: String,
    pub witness: Option<Witness>,
    /// Removals: how to finish them. Creations (None) are rolled back.
    pub replay: Option<Replay>,
    /// The lock keys the op holds (recovery takes them again).
    pub keys: Vec<String>,
}

impl Intent {
    pub fn new(what: impl Into<String>, keys: Vec<String>) -> Intent {
        Intent {
            what: what.into(),
            witness: None,
            replay: None,
            keys,
        }
    }
    pub fn owned(mut self, key: String) -> Intent {
        self.witness = Some(Witness::Owned { key });
        self
    }
    pub fn removes(mut self, table: Table, keys: Vec<String>, replay: Replay) -> Intent {
        self.witness = Some(Witness::Absent {
            table: table.name().into(),
            keys,
        });
        self.replay = Some(replay);
        self
    }
}

/// The journal's first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub op: String,
    pub pid: u32,
    pub intent: Intent,
}

struct Parts {
    w: Txn,
    tx: Tx,
}

/// One change in progress.
pub struct Op {
    pub id: String,
    parts: Option<Parts>,
    pub intent: Intent,
    held: Option<Held>,
    engine: Engine,
    /// What a forced removal went past (a plugin's refusal): reported to the caller.
    pub warnings: Vec<String>,
    /// What giving up must take back outside weft (see [`Compensation`]), in order made.
    compensations: Vec<Compensation>,
    _active: Active,
}

/// An allocation an IPAM made in a system of its own (a NetBox): the store's rollback
/// takes back the IPAM's records in weft, not the allocation there, so an op that gives up
/// releases it through the IPAM. (A crash skips this; such an IPAM asks for a replay at the
/// next start and reconciles then.)
pub(crate) enum Compensation {
    Pool {
        ipam: std::sync::Arc<dyn crate::ipam::Ipam>,
        pool_id: String,
    },
    Address {
        ipam: std::sync::Arc<dyn crate::ipam::Ipam>,
        pool_id: String,
        addr: IpAddr,
    },
}

/// Counts ops in flight in this process and when the last one ended, so that a watcher can
/// tell the kernel changes weft makes from the ones others make.
#[derive(Default)]
pub(crate) struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `epoch` to the end of the last op.
    last_end_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl Activity {
    fn epoch(&self) -> std::time::Instant {
        *self.epoch.get_or_init(std::time::Instant::now)
    }

    /// `None` while an op runs; otherwise how long since the last one ended.
    pub(crate) fn quiet_for(&self) -> Option<std::time::Duration> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.in_flight.load(SeqCst) > 0 {
            return None;
        }
        let since = self.epoch().elapsed();
        Some(since.saturating_sub(std::time::Duration::from_millis(
            self.last_end_ms.load(SeqCst),
        )))
    }
}

/// One op's share of [`Activity`].
struct Active(std::sync::Arc<Activity>);

impl Active {
    fn new(a: &std::sync::Arc<Activity>) -> Active {
        a.epoch();
        a.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Active(a.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        let ms = self.0.epoch().elapsed().as_millis() as u64;
        self.0.last_end_ms.store(ms, SeqCst);
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

/// An op that ended without commit, waiting to be settled.
pub(crate) struct Orphan {
    pub tx: Tx,
    pub intent: Intent,
    pub held: Option<Held>,
}

/// Locks for [`Engine::begin`].
#[derive(Clone, Copy)]
pub enum Locking {
    /// Take the engine-wide lock shared and the intent's keys.
    Keys,
    /// The caller holds the engine-wide lock exclusively (recovery, reset, repair).
    Inherited,
}

impl Engine {
    fn journal_path(&self, id: &str) -> PathBuf {
        self.inner
            .cfg
            .run_root
            .join("journal")
            .join(format!("{id}.json"))
    }

    /// Start an op.
    pub(crate) async fn begin(&self, intent: Intent, locking: Locking) -> Result<Op> {
        if self.has_orphans() {
            self.settle_orphans().await;
        }
        let held = match locking {
            Locking::Keys => Some(self.inner.locks.acquire(&intent.keys, false).await?),
            Locking::Inherited => None,
        };
        let id = new_id();
        let header = Header {
            op: id.clone(),
            pid: std::process::id(),
            intent: intent.clone(),
        };
        let tx = Tx::new(
            self.inner.kernel.clone(),
            Some(JournalSpec {
                path: self.journal_path(&id),
                header: serde_json::to_value(&header).map_err(Error::internal)?,
                pool: Some(self.inner.journals.clone()),
            }),
            self.inner.fp.clone(),
        )?;
        let w = Txn::new(self.inner.store.clone())?;
        Ok(Op {
            id,
            parts: Some(Parts { w, tx }),
            intent,
            held,
            engine: self.clone(),
            warnings: vec![],
            compensations: vec![],
            _active: Active::new(&self.inner.activity),
        })
    }

    /// Continue an interrupted op from its journal (recovery), under locks already held.
    pub(crate) fn resume(
        &self,
        header: Header,
        journal: Journal,
        undo: Vec<Step>,
        held: Option<Held>,
    ) -> Result<Op> {
        let tx = Tx::resume(
            self.inner.kernel.clone(),
            journal,
            undo,
            self.inner.fp.clone(),
        )?;
        let w = Txn::new(self.inner.store.clone())?;
        Ok(Op {
            id: header.op,
            parts: Some(Parts { w, tx }),
            intent: header.intent,
            held,
            engine: self.clone(),
            warnings: vec![],
            compensations: vec![],
            _active: Active::new(&self.inner.activity),
        })
    }

    pub(crate) fn orphan(&self, o: Orphan) {
        self.inner.orphans.lock().unwrap().push(o);
    }

    fn has_orphans(&self) -> bool {
        !self.inner.orphans.lock().unwrap().is_empty()
    }

    /// Settle ops that ended without commit: roll creations back, finish removals.
    pub(crate) async fn settle_orphans(&self) {
        loop {
            let next = self.inner.orphans.lock().unwrap().pop();
            let Some(o) = next else { break };
            match (&o.intent.replay, o.tx.touched()) {
                (Some(replay), true) => {
                    let replay = replay.clone();
                    let (undo, journal) = o.tx.finish();
                    let Some(journal) = journal else { continue };
                    let header = match journal.read() {
                        Ok((h, _)) => serde_json::from_value::<Header>(h).ok(),
                        Err(_) => None,
                    };
                    let Some(header) = header else {
                        journal.remove();
                        continue;
                    };
                    tracing::warn!(op = %header.intent.what, "finishing an interrupted removal");
                    match self.resume(header, journal, undo, o.held) {
                        Ok(op) => {
                            if let Err(e) = Box::pin(self.replay(op, replay)).await {
                                tracing::warn!("finishing an interrupted removal: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("finishing an interrupted removal: {e}"),
                    }
                }
                _ => {
                    if o.tx.touched() {
                        tracing::warn!(op = %o.intent.what, "rolling back an unfinished operation");
                    }
                    o.tx.rollback().await;
                    drop(o.held);
                }
            }
        }
    }

    /// Run `f` again while its commit finds that what it read changed meanwhile.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Err(Error::Store(StoreError::Conflict)) if attempt < 16 => {
                    attempt += 1;
                    tracing::debug!(attempt, "store conflict: running the operation again");
                    tokio::time::sleep(std::time::Duration::from_micros(200 << attempt.min(6)))
                        .await;
                }
                Err(Error::Store(StoreError::Conflict)) => {
                    return Err(Error::Unavailable(
                        "the state kept changing under this operation: try again".into(),
                    ))
                }
                r => return r,
            }
        }
    }
}

impl Op {
    fn parts(&mut self) -> &mut Parts {
        self.parts.as_mut().expect("op used after it ended")
    }

    /// Let go of one of the intent's keys early: what the op read under it is still checked
    /// at commit, so a clash made meanwhile makes the op run again (or refuse), not corrupt.
    pub(crate) fn release(&mut self, key: &str) {
        if let Some(h) = self.held.as_mut() {
            h.release(key);
        }
    }

    /// What a removal's teardown could not remove, even tried again: without `force` the
    /// removal fails (nothing is committed: the records keep describing what is still there,
    /// and `system check` or the daemon's healer mends what did go), with `force` it is logged
    /// and the removal goes on (`what` names it).
    pub(crate) fn teardown_result(
        &mut self,
        errors: Vec<crate::net::NetError>,
        force: bool,
        what: &str,
    ) -> Result<()> {
        let mut errors = errors.into_iter();
        let Some(first) = errors.next() else {
            return Ok(());
        };
        if !force {
            return Err(first.into());
        }
        for e in std::iter::once(first).chain(errors) {
            self.warn(format!("{what}: {e}"));
        }
        Ok(())
    }

    /// The store transaction.
    pub fn w(&mut self) -> &mut Txn {
        &mut self.parts().w
    }

    /// The store transaction, for reading.
    pub fn r(&self) -> &Txn {
        &self.parts.as_ref().expect("op used after it ended").w
    }

    /// The kernel transaction.
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.parts().tx
    }

    /// Both, for a driver call.
    pub fn ctx(&mut self) -> Ctx<'_> {
        let p = self.parts();
        Ctx {
            tx: &mut p.tx,
            store: &mut p.w,
        }
    }

    /// Note what a forced removal went past (logged, and returned to the caller).
    pub fn warn(&mut self, m: String) {
        tracing::warn!("{m}");
        self.warnings.push(m);
    }

    /// Record `steps` as what weft made in the kernel for `key`.
    pub fn own(&mut self, key: &str, steps: Vec<Step>) -> Result<()> {
        let id = self.id.clone();
        records::own(self.w(), key, &id, steps)
    }

    /// Settle with `r`: commit on success, abort on failure.
    pub async fn settle<T>(self, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => {
                self.commit().await?;
                Ok(v)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Commit the store transaction, then drop the journal.
    pub async fn commit(mut self) -> Result<()> {
        let Parts { w, tx } = self.parts.take().expect("op ended twice");
        let fp = tx.failpoints().clone();
        fp.point("commit");
        // Kept for the compensations, should the commit fail.
        let view = if self.compensations.is_empty() {
            None
        } else {
            w.fork().ok()
        };
        let changes = w.into_changes();
        let r = if changes.is_empty() {
            Ok(())
        } else {
            let store = self.engine.inner.store.clone();
            tokio::task::spawn_blocking(move || store.apply(&changes))
                .await
                .unwrap_or_else(|e| Err(StoreError::Io(format!("commit: {e}"))))
        };
        match r {
            Ok(()) => {
                fp.point("committed");
                let (_, j) = tx.finish();
                if let Some(j) = j {
                    j.remove();
                }
                Ok(())
            }
            Err(e) => {
                if let Some(mut w) = view {
                    self.compensate(&mut w).await;
                }
                self.end_unfinished(tx).await;
                Err(e.into())
            }
        }
    }

    /// Take back, outside weft, what this op must if it gives up.
    pub(crate) fn on_abort(&mut self, c: Compensation) {
        self.compensations.push(c);
    }

    /// Release what IPAMs allocated outside weft in this op, last first, within the op's
    /// own view of the store (which holds the IPAM's records of them); failures are logged.
    async fn compensate(&mut self, w: &mut Txn) {
        while let Some(c) = self.compensations.pop() {
            let (what, r) = match c {
                Compensation::Address {
                    ipam,
                    pool_id,
                    addr,
                } => (
                    format!("{addr} from {}", ipam.name()),
                    ipam.release_address(w, &pool_id, addr).await,
                ),
                Compensation::Pool { ipam, pool_id } => (
                    format!("pool {pool_id} of {}", ipam.name()),
                    ipam.release_pool(w, &pool_id).await,
                ),
            };
            match r {
                Ok(()) => {
                    tracing::debug!(op = %self.intent.what, "released {what}: the operation failed")
                }
                Err(e) => {
                    tracing::warn!(op = %self.intent.what, "cannot release {what} after the operation failed: {e}")
                }
            }
        }
    }

    /// Give up: undo a creation; finish a removal that has begun.
    pub async fn abort(mut self) {
        if let Some(Parts { mut w, tx }) = self.parts.take() {
            if !self.compensations.is_empty() {
                self.compensate(&mut w).await;
            }
            self.end_unfinished(tx).await;
        }
    }

    async fn end_unfinished(&mut self, tx: Tx) {
        if self.intent.replay.is_some() && tx.touched() {
            self.engine.orphan(Orphan {
                tx,
                intent: self.intent.clone(),
                held: self.held.take(),
            });
            self.engine.settle_orphans().await;
        } else {
            tx.rollback().await;
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let Some(Parts { tx, .. }) = self.parts.take() else {
            return;
        };
        // Cancelled or panicking: hand the kernel work, with the locks, to whoever settles it.
        self.engine.orphan(Orphan {
            tx,
            intent: self.intent.clone(),
            held: self.held.take(),
        });
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let e = self.engine.clone();
            h.spawn(async move { e.settle_orphans().await });
        }
    }
}

/// Did the op with this header commit? (Recovery.)
pub(crate) fn committed(r: &Txn, header: &Header) -> Result<bool> {
    Ok(match &header.intent.witness {
        Some(Witness::Owned { key }) => {
            get_json::<Owned>(r, Table::Owned, key)?.is_some_and(|o| o.op == header.op)
        }
        Some(Witness::Absent { table, keys }) => {
            let Some(t) = Table::from_name(table) else {
                return Ok(false);
            };
            let mut gone = true;
            for k in keys {
                if crate::store::ReadTxn::get(r, t, k.as_bytes())?.is_some() {
                    gone = false;
                }
            }
            gone
        }
        None => false,
    })
}
