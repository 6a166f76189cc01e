//! Network drivers: the one [`NetworkDriver`] trait that native drivers (bridge, host, null,
//! macvlan) and Wasm plugin drivers (through `plugin::`) implement alike, and the registry.
//!
//! The calls are libnetwork's driver calls. A driver changes the kernel only through the
//! operation's [`Tx`] — so everything it does is recorded, undone on failure, and removed
//! again on teardown — and it never configures the sandbox's insides itself: `join` says which
//! link is (or should be moved) in the sandbox and which gateway to use; the engine does the
//! addresses, the move and the routes.

pub mod bridge;
pub mod macvlan;
pub mod modes;
pub mod overlay;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use ipnetwork::IpNetwork;

use crate::error::Result;
use crate::model::{Network, Scope};
use crate::net::{NsRef, Tx};
use crate::store::WriteTxn;

/// What a driver call works with: the operation's kernel transaction (every kernel change
/// goes through it) and its store transaction (plugins keep their kv space there, so their
/// writes commit or vanish with the operation).
pub struct Ctx<'a> {
    pub tx: &'a mut Tx,
    pub store: &'a mut dyn WriteTxn,
}

/// What a sandbox on a network of this driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Sandboxes connect and disconnect; each gets an endpoint with an interface.
    Endpoints,
    /// A sandbox mode: the sandbox *is* the host's namespace (`host`). Chosen at creation;
    /// nothing connects to it and the sandbox joins nothing else.
    HostNamespace,
    /// A sandbox mode: loopback only (`none`). Chosen at creation, never left, exclusive.
    LoopbackOnly,
}

/// What a driver is.
#[derive(Debug, Clone)]
pub struct DriverCapabilities {
    pub scope: Scope,
    /// Networks of this driver get IPAM pools and endpoints get addresses.
    pub needs_ipam: bool,
    pub attachment: Attachment,
    /// Wants program/revoke-external-connectivity (the sandbox's published ports).
    pub external_connectivity: bool,
    /// Its calls may last as long as a deadline of seconds (a Wasm plugin): the engine does
    /// not hold the lock on choices across networks while it creates a network (the commit's
    /// check of what was read still refuses a clashing name or pool).
    pub long_calls: bool,
}

/// The endpoint as the driver sees it.
#[derive(Debug, Clone)]
pub struct EndpointInfo {
    pub id: String,
    /// The engine proposes a MAC (from the IPv4 address, Docker-style); the driver may change it.
    pub mac: String,
    pub ipv4: Option<IpNetwork>,
    pub ipv6: Option<IpNetwork>,
    pub options: BTreeMap<String, String>,
    pub context: EndpointContext,
}

/// Who an endpoint is for (what an IPAM registers as the holder of an address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointContext {
    pub sandbox_id: String,
    pub sandbox_name: String,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Where the endpoint goes.
#[derive(Debug, Clone)]
pub struct JoinTarget {
    pub ns: NsRef,
    /// The interface name inside the sandbox (eth0, eth1…).
    pub ifname: String,
    /// Legacy links from this endpoint to others on the network: what a driver that filters
    /// traffic between endpoints (the bridge with ICC off) lets through.
    pub links: Vec<LinkedPeer>,
}

/// A linked endpoint on the same network and the ports it exposes (proto, container port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedPeer {
    pub endpoint_id: String,
    pub ports: Vec<(String, u16)>,
}

/// How the sandbox's interface came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinLink {
    /// The driver created it directly inside the sandbox, named `ifname`.
    Placed,
    /// A host link the engine moves into the sandbox and renames to `ifname`.
    Move { name: String },
}

/// join's answer.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    pub link: JoinLink,
    /// For a moved link: the interface name prefix inside the sandbox (default "eth").
    pub ifname_prefix: Option<String>,
    pub gateway4: Option<IpAddr>,
    pub gateway6: Option<IpAddr>,
    /// Extra routes inside the sandbox: destination, optional next hop.
    pub routes: Vec<(IpNetwork, Option<IpAddr>)>,
    pub mtu: Option<u32>,
    /// The gateway is not on the endpoint's subnet (e.g. 169.254.1.1): route it on-link.
    pub gateway_onlink: bool,
}

impl JoinInfo {
    pub fn placed() -> Self {
        JoinInfo {
            link: JoinLink::Placed,
            ifname_prefix: None,
            gateway4: None,
            gateway6: None,
            routes: vec![],
            mtu: None,
            gateway_onlink: false,
        }
    }
}

/// The driver contract (libnetwork's, typed).
#[async_trait]
pub trait NetworkDriver: Send + Sync {
    fn name(&self) -> &str;
    fn capabilities(&self) -> DriverCapabilities;
    /// Check a network about to be created (options, parents, conflicts with `existing`),
    /// before anything is allocated. Errors say what to change.
    fn validate(&self, _net: &Network, _existing: &[Network]) -> Result<()> {
        Ok(())
    }
    /// Make the network's kernel objects. The driver may record data in `net.driver_data`.
    async fn create_network(&self, ctx: &mut Ctx<'_>, net: &mut Network) -> Result<()>;
    /// Driver-side cleanup before the engine replays the network's undo log.
    async fn delete_network(&self, _ctx: &mut Ctx<'_>, _net: &Network) -> Result<()> {
        Ok(())
    }
    async fn create_endpoint(
        &self,
        _ctx: &mut Ctx<'_>,
        _net: &Network,
        _ep: &mut EndpointInfo,
    ) -> Result<()> {
        Ok(())
    }
    async fn delete_endpoint(
        &self,
        _ctx: &mut Ctx<'_>,
        _net: &Network,
        _ep: &EndpointInfo,
    ) -> Result<()> {
        Ok(())
    }
    async fn join(
        &self,
        ctx: &mut Ctx<'_>,
        net: &Network,
        ep: &EndpointInfo,
        target: &JoinTarget,
    ) -> Result<JoinInfo>;
    async fn leave(&self, _ctx: &mut Ctx<'_>, _net: &Network, _ep: &EndpointInfo) -> Result<()> {
        Ok(())
    }
    /// The endpoint's sandbox reaches the outside through it and publishes `ports`
    /// (libnetwork's ProgramExternalConnectivity; called for the endpoint that holds the
    /// sandbox's default route, when the driver's capabilities ask for it).
    async fn program_external_connectivity(
        &self,
        _ctx: &mut Ctx<'_>,
        _net: &Network,
        _ep: &EndpointInfo,
        _ports: &[crate::model::PortMapping],
    ) -> Result<()> {
        Ok(())
    }
    async fn revoke_external_connectivity(
        &self,
        _ctx: &mut Ctx<'_>,
        _net: &Network,
        _ep: &EndpointInfo,
    ) -> Result<()> {
        Ok(())
    }
    /// A cluster peer appeared / went away (multi-host drivers).
    async fn discover_new(&self, _ctx: &mut Ctx<'_>, _peer: IpAddr) -> Result<()> {
        Ok(())
    }
    async fn discover_delete(&self, _ctx: &mut Ctx<'_>, _peer: IpAddr) -> Result<()> {
        Ok(())
    }
}

/// Drivers by name.
#[derive(Clone, Default)]
pub struct Registry {
    drivers: BTreeMap<String, Arc<dyn NetworkDriver>>,
}

impl Registry {
    /// The native drivers.
    pub fn native() -> Self {
        let mut r = Registry::default();
        r.add(Arc::new(bridge::Bridge));
        r.add(Arc::new(modes::HOST));
        r.add(Arc::new(modes::NULL));
        r.add(Arc::new(macvlan::Macvlan));
        r
    }
    pub fn add(&mut self, d: Arc<dyn NetworkDriver>) {
        self.drivers.insert(d.name().to_string(), d);
    }
    pub fn remove(&mut self, name: &str) {
        self.drivers.remove(name);
    }
    pub fn get(&self, name: &str) -> Option<Arc<dyn NetworkDriver>> {
        self.drivers.get(name).cloned()
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.drivers.keys().map(String::as_str)
    }
}

/// Docker's generic options that every driver accepts.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// Parse the MTU option (68..=65535), if given.
pub fn mtu_option(net: &Network) -> Result<Option<u32>> {
    match net.option(OPT_MTU) {
        None => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(m) if (68..=65535).contains(&m) => Ok(Some(m)),
            _ => Err(crate::Error::invalid(format!(
                "invalid MTU {v:?} in option {OPT_MTU}: use a number between 68 and 65535"
            ))),
        },
    }
}
