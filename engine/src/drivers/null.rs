//! The null driver: the predefined `none` network. A sandbox created with `--network none`
//! gets a namespace of its own with only `lo`, and cannot join any other network.

use async_trait::async_trait;

use super::Ctx;
use super::{DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver};
use crate::error::{Error, Result};
use crate::model::{Network, Scope};

pub struct Null;

#[async_trait]
impl NetworkDriver for Null {
    fn name(&self) -> &str {
        "null"
    }
    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: false,
            connectable: false,
        }
    }
    fn validate(&self, _net: &Network, existing: &[Network]) -> Result<()> {
        if existing.iter().any(|n| n.driver == "null") {
            return Err(Error::Forbidden(
                "only one instance of \"null\" network is allowed".into(),
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
        Err(Error::NoneMode)
    }
}
