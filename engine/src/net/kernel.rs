//! The kernel as the executor sees it: a [`Kernel`] hands out one [`Session`] per operation
//! (its netlink connections and caches), and a session executes [`Step`]s and answers the
//! few questions drivers and the consistency check ask. [`super::linux`] is the real one;
//! [`super::fake`] an in-memory one for tests that run without root.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use super::link::{LinkState, RouteState};
use super::step::{NsRef, Step};
use super::NetError;
use crate::firewall::PortElem;

/// Marks every host link weft creates (IFLA_GROUP): the kernel's own evidence that a link
/// came from weft, so a link no record owns can be recognised as weft's leak without guessing
/// from its name. Batched deletion uses groups 0x5ef7_0001.. for the moment of deletion.
pub const WEFT_GROUP: u32 = 0x5ef7_0000;

/// Is a link group one of weft's?
pub fn is_weft_group(g: u32) -> bool {
    g & 0xffff_0000 == WEFT_GROUP
}

/// A host kernel (or a stand-in for one).
pub trait Kernel: Send + Sync + 'static {
    /// The namespace that plays the host, as a path (host-mode sandboxes record it).
    fn host_path(&self) -> &Path;
    /// Connections for one operation.
    fn session(&self) -> Result<Box<dyn Session>, NetError>;
    /// Is `path` a network namespace file (a pin, /proc/PID/ns/net)?
    fn is_netns(&self, path: &Path) -> bool;
    /// Does a socket in the host namespace hold `proto` port `port` on `ip` (a bind test:
    /// something on the host listens there)? The fake kernel has no sockets: never.
    fn host_port_in_use(&self, _proto: &str, _ip: std::net::IpAddr, _port: u16) -> bool {
        false
    }
    /// Changes others make to the host's links, addresses, routes and nftables, if this
    /// kernel can report them (the fake kernel cannot).
    fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<super::watch::Change>>, NetError> {
        Ok(None)
    }
    /// Total time spent in kernel steps since open (the rest of an operation's time is
    /// weft's own work and the store's fsync).
    fn time_in_kernel(&self) -> Duration;
    /// Account time spent in a step of a kind.
    fn add_busy(&self, kind: &'static str, d: Duration);
    /// Time spent per step kind since open: (kind, total, count). For measurements.
    fn time_by_kind(&self) -> Vec<(&'static str, Duration, u64)> {
        vec![]
    }
}

/// One operation's view of the kernel.
#[async_trait]
pub trait Session: Send {
    /// Make the change.
    async fn exec(&mut self, step: &Step) -> Result<(), NetError>;
    /// A sysctl's current value (slash-separated key under /proc/sys).
    async fn read_sysctl(&mut self, ns: &NsRef, key: &str) -> Result<String, NetError>;
    async fn link(&mut self, ns: &NsRef, name: &str) -> Result<Option<LinkState>, NetError>;
    async fn links(&mut self, ns: &NsRef) -> Result<Vec<LinkState>, NetError>;
    async fn routes(&mut self, ns: &NsRef) -> Result<Vec<RouteState>, NetError>;
    /// The addresses of a link (none if it does not exist).
    async fn addresses(
        &mut self,
        ns: &NsRef,
        link: &str,
    ) -> Result<Vec<ipnetwork::IpNetwork>, NetError>;
    /// Delete many host links in one go (one RCU grace period for all, where the kernel
    /// allows). Missing links are fine; other failures are returned.
    async fn delete_host_links(&mut self, names: &[String]) -> Vec<NetError>;
    /// Several firewall removals (`Step::Firewall` steps) in one go where the backend can:
    /// removing nftables elements waits for an RCU grace period per transaction. Missing
    /// objects are fine. The default runs them one by one.
    async fn firewall_removals(&mut self, steps: &[Step]) -> Vec<NetError> {
        remove_each(self, steps).await
    }
    /// Does the object a removal step (`Del*`, a firewall removal) would remove exist now?
    async fn present(&mut self, step: &Step) -> Result<bool, NetError>;
    /// From now on answer questions about links, addresses and routes from one listing of
    /// each namespace (a check's read-only pass over a thousand sandboxes: three dumps a
    /// namespace instead of a query per object; of the host, only its links: its routing
    /// table may be a router's). `namespaces` are listed at once, now; any
    /// other when first asked about. A change this session makes drops the listings.
    async fn survey(&mut self, _namespaces: &[NsRef]) {}
    /// The network ids (first 12 hex digits) that have chains in weft's nftables table;
    /// `None` when weft's table does not exist.
    async fn firewall_networks(&mut self) -> Result<Option<Vec<String>>, NetError>;
    /// Remove whatever weft's table holds for a network id (a leak with no record).
    async fn firewall_purge(&mut self, id12: &str) -> Result<(), NetError>;
    /// Remove weft's table: the host's ruleset is left as it was before weft.
    async fn firewall_reset(&mut self) -> Result<(), NetError>;
    /// What weft's tables hold for sandboxes: the keys in the port maps, and the bridge ports
    /// with ICC elements.
    async fn firewall_sandbox_objects(&mut self) -> Result<(Vec<PortElem>, Vec<String>), NetError>;
    /// Remove these keys from the port maps (a leak with no record, or a sandbox's ports about
    /// to be made again), whatever they map to.
    async fn firewall_purge_ports(&mut self, elems: &[PortElem]) -> Result<(), NetError>;
    /// Remove every ICC element naming a bridge port (a leak with no record).
    async fn firewall_purge_icc(&mut self, port: &str) -> Result<(), NetError>;
    /// What weft's tables hold that weft does not make (an older weft's objects, anyone's),
    /// in words; none where there are no tables (the fake has none).
    async fn firewall_strangers(&mut self) -> Result<Vec<String>, NetError> {
        Ok(vec![])
    }
    /// Remove them.
    async fn firewall_purge_strangers(&mut self) -> Result<(), NetError> {
        Ok(())
    }
    /// Are the base chains of weft's table whole (`None`: no table)? The fake has none.
    async fn firewall_base_intact(&mut self) -> Result<Option<bool>, NetError> {
        Ok(None)
    }
    /// Put the base chains' rules back.
    async fn firewall_reassert_base(&mut self) -> Result<(), NetError> {
        Ok(())
    }
}

/// Removal steps one by one; what is gone already is fine, other failures are returned.
pub(crate) async fn remove_each<S: Session + ?Sized>(s: &mut S, steps: &[Step]) -> Vec<NetError> {
    let mut errors = Vec::new();
    for step in steps {
        match s.exec(step).await {
            Err(e) if !e.is_not_found() => errors.push(e),
            _ => {}
        }
    }
    errors
}
