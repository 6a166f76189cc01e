//! The executor: one operation's kernel work.
//!
//! [`Tx::apply`] applies a step and records its inverse — first in the operation's journal
//! (a file, so a crash right after the kernel acted can be undone), then in memory. A failed
//! operation runs the inverses newest first ([`Tx::rollback`]); a successful one hands them
//! to the engine as the undo log of what it made ([`Tx::finish`]), which the store keeps as
//! the record of ownership and [`Tx::teardown`] replays to remove exactly that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::failpoint::Failpoints;
use super::journal::Journal;
use super::kernel::{Kernel, Session};
use super::link::{LinkState, RouteState};
use super::step::{NsRef, Step};
use super::NetError;

/// The name a veth's end in a namespace that stays takes while it waits for its deletion:
/// `gone` and the end of its host end's name (unique on the host, so in the namespace too),
/// within the kernel's 15 characters.
pub fn parked_name(host_end: &str) -> String {
    let tail: String = host_end
        .chars()
        .rev()
        .take(11)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("gone{tail}")
}

/// Where an operation's journal goes and what its first line says.
pub struct JournalSpec {
    pub path: PathBuf,
    pub header: serde_json::Value,
    /// The process's spare journal files (see [`crate::net::journal::JournalPool`]).
    pub pool: Option<Arc<crate::net::journal::JournalPool>>,
}

enum JournalSlot {
    None,
    /// Not created until the first step (operations that touch nothing write nothing).
    Pending(JournalSpec),
    Open(Journal),
}

/// One operation's kernel work in progress.
pub struct Tx {
    kernel: Arc<dyn Kernel>,
    s: Box<dyn Session>,
    undo: Vec<Step>,
    removed: Vec<Step>,
    journal: JournalSlot,
    fp: Arc<Failpoints>,
    /// Undo read back from a journal (recovery): a link is deleted only if it carries weft's
    /// mark (its link group, set in the message that created it). A journal can hold the
    /// inverse of a create that failed — EEXIST: the name was someone else's — whose retraction
    /// could not be written before the process died; that link is not weft's to delete.
    verify_owner: bool,
}

/// The waits before a failed removal is tried again (then its error is returned).
const REMOVE_RETRIES: [Duration; 3] = [
    Duration::from_millis(2),
    Duration::from_millis(8),
    Duration::from_millis(32),
];

impl Tx {
    pub fn new(
        kernel: Arc<dyn Kernel>,
        journal: Option<JournalSpec>,
        fp: Arc<Failpoints>,
    ) -> Result<Tx, NetError> {
        let s = kernel.session()?;
        Ok(Tx {
            kernel,
            s,
            undo: Vec::new(),
            removed: Vec::new(),
            journal: match journal {
                Some(j) => JournalSlot::Pending(j),
                None => JournalSlot::None,
            },
            fp,
            verify_owner: false,
        })
    }

    /// Continue an operation whose journal already exists (recovery): `undo` is what the
    /// journal says it made.
    pub fn resume(
        kernel: Arc<dyn Kernel>,
        journal: Journal,
        undo: Vec<Step>,
        fp: Arc<Failpoints>,
    ) -> Result<Tx, NetError> {
        let mut tx = Tx::new(kernel, None, fp)?;
        tx.journal = JournalSlot::Open(journal);
        tx.undo = undo;
        tx.verify_owner = true;
        Ok(tx)
    }

    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.kernel
    }

    pub fn failpoints(&self) -> &Arc<Failpoints> {
        &self.fp
    }

    /// Did the operation change the kernel (made or removed something that stays so)? A
    /// journal opened for a step that then failed, or a change put back at once (a parked
    /// link brought back when its rename failed), is no change: a removal that failed that
    /// way is rolled back (nothing to roll), not finished.
    pub fn touched(&self) -> bool {
        !self.undo.is_empty() || !self.removed.is_empty()
    }

    fn journal(&mut self) -> Result<Option<&mut Journal>, NetError> {
        if let JournalSlot::Pending(spec) = &self.journal {
            let j = Journal::create_in(spec.pool.as_ref(), spec.path.clone(), &spec.header)
                .map_err(|e| NetError::io(format!("write journal {}", spec.path.display()), e))?;
            self.journal = JournalSlot::Open(j);
        }
        Ok(match &mut self.journal {
            JournalSlot::Open(j) => Some(j),
            _ => None,
        })
    }

    /// Apply one step and remember its inverse.
    pub async fn apply(&mut self, step: Step) -> Result<(), NetError> {
        self.apply_inner(step, false, None).await
    }

    /// Like [`Tx::apply`], but an object that exists already counts as made (replays of an
    /// interrupted operation meet what it made before it died).
    pub async fn apply_idempotent(&mut self, step: Step) -> Result<(), NetError> {
        self.apply_inner(step, true, None).await
    }

    /// Apply a step whose undo the caller knows (removing something another object owns,
    /// which a rollback must put back).
    pub async fn apply_undoable(&mut self, step: Step, inverse: Step) -> Result<(), NetError> {
        self.apply_inner(step, false, Some(inverse)).await
    }

    async fn apply_inner(
        &mut self,
        step: Step,
        exists_ok: bool,
        given: Option<Step>,
    ) -> Result<(), NetError> {
        self.fp.before(step.kind())?;
        let inverse = match &step {
            _ if given.is_some() => given,
            // Engine-wide settings others may rely on are never undone.
            Step::Sysctl { keep: true, .. } => None,
            // A setting of a link this operation made needs no undo: the link goes.
            Step::Sysctl { .. } if self.made_here(&step) => None,
            Step::SetMac { ns, name, .. } => {
                let old = self
                    .s
                    .link(ns, name)
                    .await?
                    .and_then(|l| l.mac)
                    .ok_or_else(|| {
                        NetError::errno(format!("read the MAC of {name}"), libc::ENODEV)
                    })?;
                Some(Step::SetMac {
                    ns: ns.clone(),
                    name: name.clone(),
                    mac: old
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                })
            }
            Step::Sysctl { ns, key, .. } => {
                let old = self.s.read_sysctl(ns, key).await?;
                Some(Step::Sysctl {
                    ns: ns.clone(),
                    key: key.clone(),
                    value: old,
                    keep: false,
                })
            }
            s => s.inverse(),
        };
        // Journal the inverse first: if we die right after the kernel acted, recovery finds it.
        if let Some(inv) = &inverse {
            let blocked = self.fp.before("journal-write");
            if let Some(j) = self.journal()? {
                let written = match blocked {
                    Err(e) => Err(std::io::Error::other(e.reason)),
                    Ok(()) => j.append(inv),
                };
                written.map_err(|e| {
                    NetError::io(format!("write journal {}", j.path().display()), e)
                })?;
            }
        }
        let started = std::time::Instant::now();
        let mut result = self.s.exec(&step).await;
        if exists_ok && result.as_ref().is_err_and(|e| e.is_exists()) {
            result = Ok(());
        }
        let took = started.elapsed();
        self.kernel.add_busy(step.kind(), took);
        tracing::trace!(
            step = step.kind(),
            us = took.as_micros() as u64,
            ok = result.is_ok(),
            "kernel step"
        );
        if let Err(e) = result {
            if inverse.is_some() {
                if let JournalSlot::Open(j) = &mut self.journal {
                    // The inverse journaled above is void: the step did nothing. If that cannot
                    // be written, a crash before this operation ends leaves it for recovery,
                    // which deletes only links that carry weft's mark (`verify_owner`): a
                    // create refused with EEXIST names someone else's link.
                    let retracted = self
                        .fp
                        .before("journal-retract")
                        .map_err(|f| std::io::Error::other(f.reason))
                        .and_then(|()| j.retract());
                    if let Err(r) = retracted {
                        tracing::error!(
                            journal = %j.path().display(),
                            "cannot void the journaled undo of a failed {} step: {r}",
                            step.kind()
                        );
                    }
                }
            }
            return Err(e);
        }
        if inverse.is_none() && step.is_removal() {
            self.removed.push(step.clone());
        }
        if let Some(inv) = inverse {
            // Restoring a sysctl to the value it already had is no change at all.
            let noop = matches!((&step, &inv), (Step::Sysctl { value: a, .. }, Step::Sysctl { value: b, .. }) if a == b);
            if !noop {
                self.undo.push(inv);
            }
        }
        self.fp.after(step.kind())?;
        Ok(())
    }

    /// Apply a removal (`Del*`) as part of an operation that removes things: an object that
    /// is gone already is fine. Recorded in [`Tx::removed`].
    pub async fn remove(&mut self, step: Step) -> Result<(), NetError> {
        self.fp.before(step.kind())?;
        // The journal exists before anything is removed: a crash from here on is finished
        // by recovery.
        self.journal()?;
        let started = std::time::Instant::now();
        let r = self.s.exec(&step).await;
        self.kernel.add_busy(step.kind(), started.elapsed());
        match r {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.removed.push(step.clone());
        self.fp.after(step.kind())
    }

    /// The removals this operation applied.
    pub fn removed(&self) -> &[Step] {
        &self.removed
    }

    /// Undo everything this operation did, newest first. Failures are logged, not fatal:
    /// the rest still gets undone. The journal goes once everything was tried.
    pub async fn rollback(mut self) {
        let undo = std::mem::take(&mut self.undo);
        for e in self.run_teardown(&undo, None, &[], false).await {
            tracing::warn!("rollback: {e}");
        }
        if let JournalSlot::Open(j) = std::mem::replace(&mut self.journal, JournalSlot::None) {
            j.remove();
        }
    }

    /// Does `step` act on a link this operation created (and will delete on undo)?
    fn made_here(&self, step: &Step) -> bool {
        let Some((ns, link)) = step.target_link() else {
            return false;
        };
        self.undo.iter().any(|u| match u {
            Step::DelLink { ns: n, name, peer } => {
                (n == ns && name == link)
                    || peer.as_ref().is_some_and(|(pn, pl)| pn == ns && pl == link)
            }
            _ => false,
        })
    }

    /// A position in the undo log, to split it between the objects an operation made.
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// The inverses recorded since `mark`.
    pub fn undo_since(&self, mark: usize) -> Vec<Step> {
        self.undo[mark..].to_vec()
    }

    /// The operation succeeded: its undo log (apply order), and the journal to remove once
    /// the outcome is committed to the store.
    pub fn finish(mut self) -> (Vec<Step>, Option<Journal>) {
        let j = match std::mem::replace(&mut self.journal, JournalSlot::None) {
            JournalSlot::Open(j) => Some(j),
            _ => None,
        };
        (std::mem::take(&mut self.undo), j)
    }

    // ------------------------------------------------------------------ reads

    pub async fn link(&mut self, ns: &NsRef, name: &str) -> Result<Option<LinkState>, NetError> {
        self.s.link(ns, name).await
    }

    pub async fn links(&mut self, ns: &NsRef) -> Result<Vec<LinkState>, NetError> {
        self.s.links(ns).await
    }

    pub async fn routes(&mut self, ns: &NsRef) -> Result<Vec<RouteState>, NetError> {
        self.s.routes(ns).await
    }

    pub async fn addresses(
        &mut self,
        ns: &NsRef,
        link: &str,
    ) -> Result<Vec<ipnetwork::IpNetwork>, NetError> {
        self.s.addresses(ns, link).await
    }

    /// See [`Session::survey`].
    pub async fn survey(&mut self, namespaces: &[NsRef]) {
        self.s.survey(namespaces).await
    }

    /// Does the object a removal step would remove exist?
    pub async fn present(&mut self, step: &Step) -> Result<bool, NetError> {
        self.s.present(step).await
    }

    pub async fn firewall_networks(&mut self) -> Result<Option<Vec<String>>, NetError> {
        self.s.firewall_networks().await
    }

    pub async fn firewall_purge(&mut self, id12: &str) -> Result<(), NetError> {
        self.s.firewall_purge(id12).await
    }

    /// See [`Session::firewall_sandbox_objects`].
    pub async fn firewall_sandbox_objects(
        &mut self,
    ) -> Result<(Vec<crate::firewall::PortElem>, Vec<String>), NetError> {
        self.s.firewall_sandbox_objects().await
    }

    /// Remove keys from the port maps, whatever they map to (see
    /// [`Session::firewall_purge_ports`]).
    pub async fn firewall_purge_ports(
        &mut self,
        elems: &[crate::firewall::PortElem],
    ) -> Result<(), NetError> {
        self.s.firewall_purge_ports(elems).await
    }

    /// See [`Session::firewall_base_intact`].
    pub async fn firewall_base_intact(&mut self) -> Result<Option<bool>, NetError> {
        self.s.firewall_base_intact().await
    }

    /// See [`Session::firewall_strangers`].
    pub async fn firewall_strangers(&mut self) -> Result<Vec<String>, NetError> {
        self.s.firewall_strangers().await
    }

    /// Remove what weft's tables hold that weft does not make.
    pub async fn firewall_purge_strangers(&mut self) -> Result<(), NetError> {
        self.s.firewall_purge_strangers().await
    }

    /// Put weft's base chains' rules back.
    pub async fn firewall_reassert_base(&mut self) -> Result<(), NetError> {
        self.s.firewall_reassert_base().await
    }

    /// Remove the ICC elements of a bridge port no record owns.
    pub async fn firewall_purge_icc(&mut self, port: &str) -> Result<(), NetError> {
        self.s.firewall_purge_icc(port).await
    }

    pub async fn firewall_reset(&mut self) -> Result<(), NetError> {
        self.s.firewall_reset().await
    }

    /// Delete host links (not recorded anywhere: for leaks no record owns).
    pub async fn delete_host_links(&mut self, names: &[String]) -> Vec<NetError> {
        self.s.delete_host_links(names).await
    }

    // --------------------------------------------------------------- teardown

    /// Replay an undo log (apply order; it is run newest first), best effort: objects
    /// already gone are fine, other failures are returned after everything else was tried.
    ///
    /// Steps subsumed by a later link deletion (an address or route on a link that is deleted
    /// anyway) are skipped, and so is everything inside `gone_ns` (a namespace being
    /// destroyed), so tearing down an endpoint costs one netlink message, not one per object.
    pub async fn teardown(&mut self, undo: &[Step], gone_ns: Option<&Path>) -> Vec<NetError> {
        self.run_teardown(undo, gone_ns, &[], true).await
    }

    /// Replay several undo logs at once. Host links they delete are deleted together at the
    /// end, in one netlink message (a link group): the kernel then waits for one RCU grace
    /// period for all of them instead of one per link, which is what makes tearing down many
    /// sandboxes cheap.
    pub async fn teardown_many(&mut self, logs: &[(&[Step], Option<&Path>)]) -> Vec<NetError> {
        self.teardown_batch(logs, false).await.0
    }

    /// Like [`Tx::teardown_many`], but a veth with a host end is not deleted: its host end is
    /// taken down — at once, so it forwards nothing from here on — and its deletion is
    /// returned instead of done: the kernel's wait for an RCU grace period (~20 ms a link) is
    /// then paid later, in one batch, off the caller's path (see `Engine::reap_links`). The
    /// caller records what is returned as owned. A veth's other end inside a namespace being
    /// destroyed (`gone`) goes with it; one inside a namespace that stays (a runtime's, or a
    /// sandbox's that another network keeps) is taken down and renamed out of the way
    /// ([`parked_name`]: its name, `eth0`, is free for the next attach at once), and goes with
    /// its host end when that is deleted. A veth that cannot be parked is deleted now.
    pub async fn teardown_deferring(
        &mut self,
        logs: &[(&[Step], Option<&Path>)],
    ) -> (Vec<NetError>, Vec<Step>) {
        self.teardown_batch(logs, true).await
    }

    /// Take a veth's end in a namespace that stays down and rename it to `parked`, then delete
    /// the addresses weft gave it (`addrs`: their removals; nothing in the namespace answers to
    /// them from here on, as after Docker's disconnect — one that cannot be deleted goes with
    /// the link). When the rename fails, the end is brought up again (the caller deletes the
    /// pair instead, and if that fails too, the endpoint stays as it was).
    async fn park(
        &mut self,
        ns: &NsRef,
        name: &str,
        parked: &str,
        addrs: &[Step],
    ) -> Result<(), NetError> {
        self.remove(Step::LinkDown {
            ns: ns.clone(),
            name: name.to_string(),
        })
        .await?;
        let renamed = self
            .remove(Step::RenameLink {
                ns: ns.clone(),
                name: name.to_string(),
                new_name: parked.to_string(),
            })
            .await;
        if let Err(e) = renamed {
            let up = Step::LinkUp {
                ns: ns.clone(),
                name: name.to_string(),
            };
            match self.s.exec(&up).await {
                // As it was: the link's taking down is no removal of this operation.
                Ok(()) => {
                    self.removed.pop();
                }
                Err(e) => {
                    tracing::warn!(link = %name, "brought back up after a failed rename: {e}")
                }
            }
            return Err(e);
        }
        for a in addrs {
            let mut a = a.clone();
            if let Step::DelAddress { link, .. } = &mut a {
                *link = parked.to_string();
            }
            if let Err(e) = self.remove(a).await {
                tracing::debug!(link = %parked, "an address left to go with the link: {e}");
            }
        }
        Ok(())
    }

    async fn teardown_batch(
        &mut self,
        logs: &[(&[Step], Option<&Path>)],
        defer: bool,
    ) -> (Vec<NetError>, Vec<Step>) {
        let mut errors = Vec::new();
        let mut links = Vec::new();
        let mut firewall = Vec::new();
        let mut deferred = Vec::new();
        for (undo, gone) in logs {
            let (host_links, rest): (Vec<Step>, Vec<Step>) = undo.iter().cloned().partition(|s| {
                matches!(
                    s,
                    Step::DelLink {
                        ns: NsRef::Host,
                        ..
                    }
                )
            });
            let (later, mut now): (Vec<Step>, Vec<Step>) =
                host_links.iter().cloned().partition(|s| {
                    defer
                        && matches!(
                            s,
                            Step::DelLink {
                                peer: Some((NsRef::Path(_), _)),
                                ..
                            }
                        )
                });
            for step in later {
                let Step::DelLink {
                    name,
                    peer: Some((pns, pname)),
                    ..
                } = &step
                else {
                    continue;
                };
                let goes = matches!((pns, gone), (NsRef::Path(p), Some(g)) if p == g);
                let step = if goes {
                    step.clone()
                } else {
                    let parked = parked_name(name);
                    let addrs: Vec<Step> = undo
                        .iter()
                        .filter(|s| {
                            matches!(s, Step::DelAddress { ns, link, .. } if ns == pns && link == pname)
                        })
                        .cloned()
                        .collect();
                    match self.park(pns, pname, &parked, &addrs).await {
                        Ok(()) => Step::DelLink {
                            ns: NsRef::Host,
                            name: name.clone(),
                            peer: Some((pns.clone(), parked)),
                        },
                        Err(e) => {
                            tracing::debug!(link = %pname, "not parked, deleted now: {e}");
                            now.push(step.clone());
                            continue;
                        }
                    }
                };
                let down = Step::LinkDown {
                    ns: NsRef::Host,
                    name: name.clone(),
                };
                // The step is a removal's: journaled like one, gone already is fine.
                if let Err(e) = self.remove(down).await {
                    errors.push(e);
                }
                deferred.push(step);
            }
            // An endpoint's ICC elements: one nftables transaction for the batch.
            let (fw, rest): (Vec<Step>, Vec<Step>) = rest.into_iter().partition(|s| {
                matches!(
                    s,
                    Step::Firewall {
                        change: crate::firewall::FwChange::RemoveIcc(_)
                    }
                )
            });
            // Steps on links that go with the batch (or later) are subsumed as usual.
            errors.extend(self.run_teardown(&rest, *gone, &host_links, true).await);
            links.extend(now);
            firewall.extend(fw);
        }
        // The journal exists before anything is removed: a crash from here on is finished by
        // recovery.
        if !(firewall.is_empty() && links.is_empty()) {
            if let Err(e) = self.journal() {
                errors.push(e);
                return (errors, deferred);
            }
        }
        // (A batch that failed is not counted as removed: a failpoint or the kernel refused
        // it whole, and what the kernel took of it `system check` sees.)
        if !firewall.is_empty() {
            let failed = self.remove_batch("firewall", &firewall, &[]).await;
            if failed.is_empty() {
                self.removed.extend(firewall);
            }
            errors.extend(failed);
        }
        if links.is_empty() {
            return (errors, deferred);
        }
        let names: Vec<String> = links
            .iter()
            .filter_map(|s| match s {
                Step::DelLink { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        let failed = self.remove_batch("del-link", &[], &names).await;
        if failed.is_empty() {
            self.removed.extend(links);
        }
        errors.extend(failed);
        (errors, deferred)
    }

    /// One batched removal — firewall steps, or host links by name — tried again while it
    /// fails, as single removals are (what is gone already is fine the second time); the
    /// errors of the last try.
    async fn remove_batch(
        &mut self,
        kind: &'static str,
        firewall: &[Step],
        links: &[String],
    ) -> Vec<NetError> {
        let mut last = Vec::new();
        for (i, wait) in std::iter::once(Duration::ZERO)
            .chain(REMOVE_RETRIES)
            .enumerate()
        {
            if i > 0 {
                tokio::time::sleep(wait).await;
            }
            if let Err(e) = self.fp.before(kind) {
                last = vec![e];
                continue;
            }
            let started = std::time::Instant::now();
            last = if links.is_empty() {
                self.s.firewall_removals(firewall).await
            } else {
                self.s.delete_host_links(links).await
            };
            self.kernel.add_busy(kind, started.elapsed());
            if let Err(e) = self.fp.after(kind) {
                last.push(e);
            }
            if last.is_empty() {
                break;
            }
        }
        last
    }

    /// `also_deleted`: link deletions that happen elsewhere (batched) and subsume steps here.
    /// `counted`: part of the operation proper (failpoints apply). A rollback (`!counted`)
    /// runs every inverse, subsumed or not: it may put back something another object owns
    /// (a default route this operation took over), which must not meet what this operation
    /// made still in place.
    async fn run_teardown(
        &mut self,
        undo: &[Step],
        gone_ns: Option<&Path>,
        also_deleted: &[Step],
        counted: bool,
    ) -> Vec<NetError> {
        let deleted: Vec<(NsRef, String)> = undo
            .iter()
            .chain(also_deleted)
            .flat_map(|s| match s {
                Step::DelLink { ns, name, peer } => {
                    let mut v = vec![(ns.clone(), name.clone())];
                    v.extend(peer.clone());
                    v
                }
                _ => vec![],
            })
            .collect();
        let in_gone = |ns: &NsRef| matches!((ns, gone_ns), (NsRef::Path(p), Some(g)) if p == g);
        let mut errors = Vec::new();
        for step in undo.iter().rev() {
            if step.ns().is_some_and(in_gone) {
                continue;
            }
            let subsumed = counted
                && match step {
                    // A veth's peer goes with it: deleting it again would only fail.
                    Step::DelLink { ns, name, .. } => undo
                        .iter()
                        .chain(also_deleted)
                        .filter(|s| *s != step)
                        .filter_map(|s| match s {
                            Step::DelLink { peer: Some(p), .. } => Some(p),
                            _ => None,
                        })
                        .any(|(n, l)| n == ns && l == name),
                    // Addresses, routes, neighbours on a link that is deleted anyway.
                    other => other.target_link().is_some_and(|(ns, link)| {
                        deleted.iter().any(|(n, l)| n == ns && l == link)
                    }),
                };
            if subsumed {
                continue;
            }
            if self.verify_owner {
                if let Step::DelLink { ns, name, .. } = step {
                    match self.s.link(ns, name).await {
                        Ok(Some(l)) if !super::kernel::is_weft_group(l.group) => {
                            tracing::warn!(link = %name, "left as it is: the journal says weft made it, but it has no weft mark (the journaled undo of a create that was refused: the name was taken)");
                            continue;
                        }
                        _ => {}
                    }
                }
            }
            let r = if counted {
                // A removal that fails for a reason other than "gone" is tried again (netlink
                // can refuse for a moment: ENOBUFS, EBUSY); what still fails is returned.
                let mut r = self.remove(step.clone()).await;
                for wait in REMOVE_RETRIES {
                    if r.is_ok() {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    r = self.remove(step.clone()).await;
                }
                r
            } else {
                match self.s.exec(step).await {
                    Err(e) if e.is_not_found() => Ok(()),
                    r => r,
                }
            };
            if let Err(e) = r {
                errors.push(e);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::fake::FakeKernel;

    fn tx(k: &Arc<FakeKernel>) -> Tx {
        Tx::new(k.clone(), None, Arc::new(Failpoints::default())).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A create refused with EEXIST (the name is someone else's), its journaled undo not
    /// voided (the write failed), the process killed: recovery reads that undo back and must
    /// not delete the link that was never weft's — while it does delete what weft made.
    #[test]
    fn recovery_never_deletes_a_link_weft_did_not_make() {
        let k = Arc::new(FakeKernel::new("/host"));
        k.add_host_link("theirs");
        let dir = std::env::temp_dir().join(format!("weft-tx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("op.json");
        let fp = Arc::new(Failpoints::default());
        #[cfg(feature = "failpoints")]
        fp.set(Some("fail:journal-retract"));
        block_on(async {
            let mut t = Tx::new(
                k.clone(),
                Some(JournalSpec {
                    path: path.clone(),
                    header: serde_json::json!({"op": "test"}),
                    pool: None,
                }),
                fp.clone(),
            )
            .unwrap();
            t.apply(Step::Bridge {
                name: "ours".into(),
                mtu: None,
                mac: None,
            })
            .await
            .unwrap();
            let e = t
                .apply(Step::Bridge {
                    name: "theirs".into(),
                    mtu: None,
                    mac: None,
                })
                .await
                .unwrap_err();
            assert!(e.is_exists(), "{e}");
            // Killed here: nothing more runs, the journal file is what is left (dropping a Tx
            // runs nothing; it closes the journal, as the process's death would).
            drop(t);
        });
        let (_, undo) = crate::net::journal::read(&path).unwrap();
        #[cfg(feature = "failpoints")]
        assert!(
            undo.iter()
                .any(|s| matches!(s, Step::DelLink { name, .. } if name == "theirs")),
            "control: the stale undo is in the journal: {undo:?}"
        );
        block_on(async {
            let j = crate::net::journal::Journal::claim(&path).unwrap().unwrap();
            let t = Tx::resume(k.clone(), j, undo, Arc::new(Failpoints::default())).unwrap();
            t.rollback().await;
        });
        let names = k.link_names("host");
        assert!(
            names.contains(&"theirs".to_string()),
            "recovery deleted someone else's link: {names:?}"
        );
        assert!(
            !names.contains(&"ours".to_string()),
            "recovery left weft's own link: {names:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rollback_undoes_in_reverse_and_teardown_subsumes() {
        let k = Arc::new(FakeKernel::new("/host"));
        k.add_namespace(Path::new("/sb"));
        block_on(async {
            let mut t = tx(&k);
            t.apply(Step::Bridge {
                name: "br0".into(),
                mtu: None,
                mac: None,
            })
            .await
            .unwrap();
            t.apply(Step::Veth {
                name: "vh".into(),
                peer: "eth0".into(),
                peer_ns: NsRef::Path("/sb".into()),
                master: Some("br0".into()),
                mtu: None,
                peer_mac: None,
                group: None,
                peer_ipv6: false,
            })
            .await
            .unwrap();
            t.apply(Step::Address {
                ns: NsRef::Path("/sb".into()),
                link: "eth0".into(),
                addr: "10.0.0.2/24".parse().unwrap(),
            })
            .await
            .unwrap();
            // The next step fails (no such link): rolling back leaves the host as it was.
            k.with(|s| s.fail = Some("route".into()));
            let e = t
                .apply(Step::Route {
                    ns: NsRef::Path("/sb".into()),
                    dst: "0.0.0.0/0".parse().unwrap(),
                    via: Some("10.0.0.1".parse().unwrap()),
                    dev: "eth0".into(),
                    metric: None,
                    onlink: false,
                })
                .await
                .unwrap_err();
            assert!(e.reason.contains("injected"));
            t.rollback().await;
        });
        assert_eq!(k.link_names("host"), ["lo"]);
        assert_eq!(k.link_names("/sb"), ["lo"]);
        // A rollback runs every inverse, newest first.
        let kinds = k.kinds();
        assert_eq!(
            kinds,
            [
                "bridge",
                "veth",
                "address",
                "del-address",
                "del-link",
                "del-link"
            ],
            "{kinds:?}"
        );
    }
}
