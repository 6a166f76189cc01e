//! Deferred teardown: the host links that removals leave for later, deleted in batches off
//! the caller's path.
//!
//! Deleting a veth makes the kernel wait for an RCU grace period (~20 ms here) before the
//! call returns; a removal holding its network's lock through that wait serializes every
//! removal on the network behind it. So a sandbox removal whose namespace weft destroys
//! takes its veth's host end down (it forwards nothing from then on: its address can be
//! given again at once) and commits, with the namespace's unpin (an unmount, which waits for
//! an expedited grace period too) and the host end's deletion recorded as owned under
//! `gone/<op id>` in the same commit. [`Engine::reap_links`] unpins the namespaces — the
//! kernel then dismantles them, veth pairs included — and deletes what is left, many links in
//! one netlink message (one grace period for all), and drops the records. The
//! records survive `kill -9`: a reap after the restart finishes the job. In the daemon a
//! supervised task reaps ([`Engine::run_reaper`]); elsewhere the removal reaps itself once
//! it has committed and let go of its locks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::op::{Intent, Locking};
use super::records::Owned;
use super::Engine;
use crate::error::Result;
use crate::net::Step;
use crate::store::{decode, ReadTxn, Table, WriteTxn};

/// Owner keys of deferred deletions in [`Table::Owned`].
pub(crate) const GONE: &str = "gone/";

pub(crate) fn gone_key(op: &str) -> String {
    format!("{GONE}{op}")
}

/// How long the background reaper lets removals accumulate before a batch.
const GATHER: Duration = Duration::from_millis(5);

/// The background reaper's state.
#[derive(Default)]
pub(crate) struct Reaper {
    /// A background task reaps (the daemon's); otherwise removals reap themselves.
    background: AtomicBool,
    wake: tokio::sync::Notify,
    /// Held by the background reaper while it reaps.
    busy: tokio::sync::Mutex<()>,
    /// Wakes another process's reaper (a daemon on the same state) and says whether it did.
    handoff: std::sync::Mutex<Option<Handoff>>,
}

type Handoff = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

impl Engine {
    /// A removal committed deferred deletions: reap them now, or wake the reaper.
    pub(crate) async fn reap_soon(&self) {
        if self.inner.reaper.background.load(Ordering::SeqCst) {
            self.inner.reaper.wake.notify_one();
            return;
        }
        let handoff = self.inner.reaper.handoff.lock().unwrap().clone();
        if let Some(wake) = handoff {
            // (Nothing left for later: nothing to wake another process for.)
            if self.pending_reaps().is_ok_and(|p| p.is_empty()) {
                return;
            }
            if tokio::task::spawn_blocking(move || wake())
                .await
                .unwrap_or(false)
            {
                return;
            }
        }
        if let Err(e) = self.reap_links().await {
            tracing::warn!("deleting removed sandboxes' links: {e} (tried again later)");
        }
    }

    /// Leave the deletions this process's removals defer to another process's reaper — a
    /// daemon serving the same state — which `wake` wakes, saying whether it did; when it
    /// does not, the removal deletes its links itself, as without a hand-off. (Podman's and
    /// CNI's doors, a process per call, hand theirs to a running `weft daemon`: the kernel's
    /// wait of ~20 ms a deletion is then off the runtime's path too.)
    pub fn hand_reaps_to(&self, wake: impl Fn() -> bool + Send + Sync + 'static) {
        *self.inner.reaper.handoff.lock().unwrap() = Some(std::sync::Arc::new(wake));
    }

    /// Wake this process's background reaper (another process deferred deletions to it).
    /// Whether there is one.
    pub fn wake_reaper(&self) -> bool {
        let on = self.inner.reaper.background.load(Ordering::SeqCst);
        if on {
            self.inner.reaper.wake.notify_one();
        }
        on
    }

    /// Delete every host link a removal left for later, in one batch, and drop their
    /// records; how many records were settled. What cannot be deleted stays recorded (and
    /// `system check` shows it).
    pub async fn reap_links(&self) -> Result<usize> {
        self.reap_links_with(Locking::Keys).await
    }

    pub(crate) async fn reap_links_with(&self, locking: Locking) -> Result<usize> {
        if self.pending_reaps()?.is_empty() {
            return Ok(0);
        }
        self.retrying(|| async {
            let mut op = self
                .begin(Intent::new("delete removed links", vec![]), locking)
                .await?;
            // The records seen now, read again one by one in the op: removals recording
            // more meanwhile do not make it conflict (a scan would), another reaper taking
            // the same ones does.
            let mut pending: Vec<(Vec<u8>, Vec<Step>)> = Vec::new();
            for (k, _) in self.pending_reaps()? {
                if let Some(v) = op.r().get(Table::Owned, k.as_bytes())? {
                    pending.push((k.into_bytes(), decode::<Owned>(&v)?.steps));
                }
            }
            if pending.is_empty() {
                op.abort().await;
                return Ok(0);
            }
            let logs: Vec<(&[Step], Option<&std::path::Path>)> =
                pending.iter().map(|(_, s)| (s.as_slice(), None)).collect();
            let errors = op.tx().teardown_many(&logs).await;
            if let Some(e) = errors.into_iter().next() {
                op.abort().await;
                return Err(e.into());
            }
            for (k, _) in &pending {
                op.w().delete(Table::Owned, k)?;
            }
            op.commit().await?;
            Ok(pending.len())
        })
        .await
    }

    /// The deferred deletions recorded and not yet done.
    pub(crate) fn pending_reaps(&self) -> Result<Vec<(String, Vec<Step>)>> {
        self.inner
            .store
            .read()?
            .scan(Table::Owned, GONE.as_bytes())?
            .into_iter()
            .map(|(k, v)| {
                decode::<Owned>(&v).map(|o| (String::from_utf8_lossy(&k).into_owned(), o.steps))
            })
            .collect()
    }

    /// The daemon's reaper: from now on removals leave their deferred deletions to it. It
    /// reaps what is pending at once, then a batch each time removals wake it (gathering
    /// for a few milliseconds first). Runs until aborted; meant to be supervised.
    pub async fn run_reaper(self) {
        self.inner.reaper.background.store(true, Ordering::SeqCst);
        self.failpoint_panic("reaper");
        let mut backoff = Duration::from_millis(250);
        loop {
            let busy = self.inner.reaper.busy.lock().await;
            let r = self.reap_links().await;
            drop(busy);
            match r {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(records = n, "deleted removed sandboxes' links");
                    }
                    backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    tracing::warn!(
                        "deleting removed sandboxes' links: {e} (tried again in {backoff:?})"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            self.inner.reaper.wake.notified().await;
            tokio::time::sleep(GATHER).await;
        }
    }

    /// Wait for the background reaper's reap in flight, if any, and keep it from starting
    /// another while the guard lives (so it can be stopped between two).
    pub async fn reaper_paused(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.reaper.busy.lock().await
    }

    /// Removals reap for themselves again (the daemon is stopping; its reaper is gone).
    pub fn stop_reaper(&self) {
        self.inner.reaper.background.store(false, Ordering::SeqCst);
    }
}
