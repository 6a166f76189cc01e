//! The daemon's healer: kernel changes others make — `nft flush ruleset`, a deleted bridge,
//! a sandbox's veth gone — are mended from the records, usually within a few hundred
//! milliseconds. The kernel watch ([`crate::net::watch`]) reports only changes to weft's own
//! objects (its marked links, what is on them, its nftables table), so others' churn costs no
//! check, and names what each change touched where the kernel's message says (a link, a
//! network's chain).
//!
//! What changes named is checked alone ([`crate::engine::HealScope`]): the records that own
//! those links and chains, under their networks' and sandboxes' locks, the engine-wide lock
//! shared — operations elsewhere go on, and a long one elsewhere (a plugin call of seconds)
//! does not hold the mending up; a base chain's change, the base chains and what weft's tables
//! hold, under the lock on every network's names and pools. A change that names nothing more
//! precise (the table, a map or set, their elements) is checked whole, comparing every record
//! with the kernel under the engine-wide lock held exclusively.
//!
//! weft's own operations change the kernel too. For a whole check, a change that arrives while
//! this process has an operation in flight (or just finished one) may be its own: it is
//! checked once the engine has been quiet for a moment, or after [`MAX_DEFER`] under constant
//! load, so a busy daemon is not checking everything after every request. A change while the
//! engine is idle is someone else's and is checked at once. A scoped check is made at once
//! whoever made the change, once its objects' locks are free: it costs little and stops
//! nothing else.
//! Either way the check starts only when its locks are free (this process's operations and
//! another's): waiting for them behind a long operation would hold up every operation that
//! comes after. Only a check of someone else's change overdue by [`MAX_DEFER`] waits for
//! them; one that may be of this process's own changes waits for a moment when they are free,
//! however long the load lasts (a whole check holds the engine for seconds with a thousand
//! sandboxes: made in the middle of the load, it would stop every client for as long).
//!
//! In a cluster, global networks are checked only while this host's view of the global
//! records is current ([`Engine::cluster_view_current`]); a check made before leaves them
//! out, and they are checked again once it is.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;

use crate::engine::HealScope;
use crate::net::watch::Change;
use crate::Engine;

/// Quiet needed after the last change before checking (changes come in bursts).
pub const SETTLE: Duration = Duration::from_millis(100);
/// An engine idle this long did not make the change.
pub const OURS_GRACE: Duration = Duration::from_millis(150);
/// The longest a change waits for the engine to be free before its check is tried anyway
/// (for someone else's change: waiting for the engine's lock).
pub const MAX_DEFER: Duration = Duration::from_secs(5);

/// Mend drift until the watch ends. With `start_check`, starts with one check (drift while
/// no daemon ran, or while the healer was down, or of global networks not checked yet).
pub async fn heal(engine: Engine, mut rx: Receiver<Change>, start_check: bool) {
    engine.failpoint_panic("healer");
    // (first change seen, some change was surely someone else's, a check of it may wait for
    // its locks, what the changes touched). The first check never waits: a daemon busy from
    // its start would otherwise stop for it after MAX_DEFER.
    let mut pending: Option<(Instant, bool, bool, HealScope)> =
        start_check.then(|| (Instant::now(), true, false, HealScope::whole()));
    // A check left global networks out: check again once the cluster view is current.
    let mut global_left = false;
    loop {
        let next = match pending {
            None => rx.recv().await.map(Some),
            Some(_) => match tokio::time::timeout(SETTLE, rx.recv()).await {
                Ok(c) => c.map(Some),
                Err(_) => Some(None),
            },
        };
        match next {
            None => return,
            Some(Some(Change::Lost)) => {
                tracing::warn!("the kernel watch was lost: the healer starts again with a new one");
                return;
            }
            Some(Some(change)) => {
                // A new change is checked now, whatever the cluster view (local networks at
                // least): a check only of the global networks left out waits for the view.
                global_left = false;
                let foreign = engine.quiet_for().is_some_and(|q| q >= OURS_GRACE);
                tracing::debug!(?change, foreign, "kernel change");
                let p = pending.get_or_insert((Instant::now(), false, false, Default::default()));
                p.1 |= foreign;
                p.2 |= foreign;
                p.3.add(&change);
            }
            Some(None) => {
                let (first, foreign, may_wait, scope) = pending.as_ref().expect("pending");
                let (first, foreign, may_wait) = (*first, *foreign, *may_wait);
                let quiet = engine.quiet_for();
                let idle = quiet.is_some_and(|q| q >= OURS_GRACE);
                let overdue = first.elapsed() >= MAX_DEFER;
                // What changes named is checked at once, whoever made them, if its objects'
                // locks are free (costs a read of the ownership records and a question per
                // object, and holds up nothing else). For a whole check: someone else's
                // change at once — once no operation of this process runs: the check's
                // engine-wide lock would wait for it and hold up every operation asked for
                // meanwhile; one that may be this process's own, once the engine has been
                // quiet for a moment, or after MAX_DEFER.
                let ready = if !scope.is_whole() {
                    true
                } else if foreign {
                    quiet.is_some() || overdue
                } else {
                    idle || overdue
                };
                if !ready || (global_left && !engine.cluster_view_current()) {
                    continue;
                }
                let t = Instant::now();
                // Only someone else's change is worth making operations wait for: a check
                // under load that may only find this process's own work would stall every
                // client for as long as it takes (seconds, with a thousand sandboxes).
                // Another process's operation may hold the engine too: not now, then.
                let r = match engine.heal(overdue && may_wait, scope).await {
                    Ok(None) => continue,
                    Ok(Some(h)) => {
                        global_left = h.global_left;
                        Ok(h.fixed)
                    }
                    Err(e) => Err(e),
                };
                pending = global_left.then(|| (Instant::now(), false, false, HealScope::whole()));
                // Counted once done (`system info`'s HealerChecks: checks the healer ran).
                engine.note_heal_check();
                match r {
                    Ok(fixed) => {
                        for f in &fixed {
                            tracing::warn!(
                                took_ms = t.elapsed().as_millis() as u64,
                                "restored {f}"
                            );
                        }
                    }
                    Err(e) => tracing::warn!("check after a kernel change failed: {e}"),
                }
            }
        }
    }
}
