//! IPAM: the [`Ipam`] trait (libnetwork's IPAM calls, typed), which the native allocator
//! and Wasm IPAM plugins implement alike, plus the native allocator itself.
//!
//! Every call runs inside the caller's store write transaction, so an address is allocated
//! in the same commit that records the endpoint using it, or not at all.

pub mod bitmap;
pub mod native;

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use ipnetwork::IpNetwork;

use crate::error::Result;
use crate::store::WriteTxn;

/// Address spaces, as libnetwork names them.
pub const LOCAL_SPACE: &str = "LocalDefault";
pub const GLOBAL_SPACE: &str = "GlobalDefault";

/// What an IPAM driver can do.
#[derive(Debug, Clone, Default)]
pub struct IpamCapabilities {
    /// The driver wants the endpoint's MAC address with every request-address.
    pub requires_mac_address: bool,
    /// The driver wants its pools and addresses requested again after a restart.
    pub requires_request_replay: bool,
}

/// request-pool's arguments.
#[derive(Debug, Clone, Default)]
pub struct PoolRequest {
    pub address_space: String,
    /// The subnet the user asked for; `None` means "pick one from the defaults".
    pub pool: Option<IpNetwork>,
    /// The sub-range dynamic allocation is limited to (`--ip-range`).
    pub sub_pool: Option<IpNetwork>,
    pub options: BTreeMap<String, String>,
    pub v6: bool,
    /// Prefixes a default pool must not overlap (the host's routes). Filled by the engine;
    /// plugins do not see it.
    pub avoid: Vec<IpNetwork>,
}

/// request-pool's answer.
#[derive(Debug, Clone)]
pub struct PoolGrant {
    pub pool_id: String,
    pub pool: IpNetwork,
    pub data: BTreeMap<String, String>,
}

/// request-address's arguments.
#[derive(Debug, Clone, Default)]
pub struct AddressRequest {
    pub pool_id: String,
    pub preferred: Option<IpAddr>,
    pub options: BTreeMap<String, String>,
    /// Who the address is for (none: the network's gateway or aux addresses).
    pub context: Option<crate::drivers::EndpointContext>,
}

/// The IPAM contract. `txn` is the operation's store transaction: native IPAM keeps its
/// bitmaps there, plugins their kv space.
#[async_trait]
pub trait Ipam: Send + Sync {
    fn name(&self) -> &str;
    fn capabilities(&self) -> IpamCapabilities {
        IpamCapabilities::default()
    }
    /// (local, global) address space names.
    async fn default_address_spaces(&self) -> Result<(String, String)> {
        Ok((LOCAL_SPACE.into(), GLOBAL_SPACE.into()))
    }
    async fn request_pool(&self, txn: &mut dyn WriteTxn, req: &PoolRequest) -> Result<PoolGrant>;
    async fn release_pool(&self, txn: &mut dyn WriteTxn, pool_id: &str) -> Result<()>;
    /// Returns the address with the pool's prefix length (e.g. 172.18.0.2/16).
    async fn request_address(
        &self,
        txn: &mut dyn WriteTxn,
        req: &AddressRequest,
    ) -> Result<IpNetwork>;
    async fn release_address(
        &self,
        txn: &mut dyn WriteTxn,
        pool_id: &str,
        addr: IpAddr,
    ) -> Result<()>;
}
