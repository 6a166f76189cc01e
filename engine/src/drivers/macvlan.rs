//! The macvlan driver (issue 3): each endpoint is a macvlan link on the network's parent.

use async_trait::async_trait;

use super::{DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver};
use crate::error::{Error, Result};
use crate::model::{Network, Scope};
use crate::net::Tx;

pub struct Macvlan;

#[async_trait]
impl NetworkDriver for Macvlan {
    fn name(&self) -> &str {
        "macvlan"
    }
    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: true,
            connectable: true,
        }
    }
    fn validate(&self, _net: &Network, _existing: &[Network]) -> Result<()> {
        Err(Error::invalid("macvlan networks are not available yet"))
    }
    async fn create_network(&self, _tx: &mut Tx<'_>, _net: &mut Network) -> Result<()> {
        Err(Error::invalid("macvlan networks are not available yet"))
    }
    async fn join(
        &self,
        _: &mut Tx<'_>,
        _: &Network,
        _: &EndpointInfo,
        _: &JoinTarget,
    ) -> Result<JoinInfo> {
        Err(Error::invalid("macvlan networks are not available yet"))
    }
}
