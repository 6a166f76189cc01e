//! The host driver: the predefined `host` network. A sandbox created with `--network host`
//! is the host's own namespace; nothing is created, and nothing can be connected to it.

use async_trait::async_trait;

use super::Ctx;
use super::{DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver};
use crate::error::{Error, Result};
use crate::model::{Network, Scope};

pub struct Host;

#[async_trait]
impl NetworkDriver for Host {
    fn name(&self) -> &str {
        "host"
    }
    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: false,
            connectable: false,
        }
    }
    fn validate(&self, _net: &Network, existing: &[Network]) -> Result<()> {
        if existing.iter().any(|n| n.driver == "host") {
            return Err(Error::Forbidden(
                "only one instance of \"host\" network is allowed".into(),
            ));
        }
        Ok(())
    }
    async fn create_network(&self, _ctx: &mut Ctx<'_, '_>, _net: &mut Network) -> Result<()> {
        Ok(())
    }
    async fn join(
        &self,
        _: &mut Ctx<'_, '_>,
        _: &Network,
        _: &EndpointInfo,
        _: &JoinTarget,
    ) -> Result<JoinInfo> {
        Err(Error::ConnectToHost)
    }
}
