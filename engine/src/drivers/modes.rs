//! The drivers of the predefined `host` and `none` networks. They are sandbox modes, not
//! datapaths (their [`Attachment`] says which): a `--network host` sandbox is the host's own
//! namespace, a `--network none` sandbox a namespace with only `lo`; both are chosen when the
//! sandbox is created, nothing can be connected to them, and only one network of each exists.

use async_trait::async_trait;

use super::{
    Attachment, Ctx, DriverCapabilities, EndpointInfo, JoinInfo, JoinTarget, NetworkDriver,
};
use crate::error::{Error, Result};
use crate::model::{Network, Scope};

/// The `host` driver.
pub const HOST: Mode = Mode {
    driver: "host",
    attachment: Attachment::HostNamespace,
};
/// The `null` driver (the `none` network).
pub const NULL: Mode = Mode {
    driver: "null",
    attachment: Attachment::LoopbackOnly,
};

pub struct Mode {
    driver: &'static str,
    attachment: Attachment,
}

#[async_trait]
impl NetworkDriver for Mode {
    fn name(&self) -> &str {
        self.driver
    }
    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            scope: Scope::Local,
            needs_ipam: false,
            attachment: self.attachment,
            external_connectivity: false,
            long_calls: false,
        }
    }
    fn validate(&self, _net: &Network, existing: &[Network]) -> Result<()> {
        if existing.iter().any(|n| n.driver == self.driver) {
            return Err(Error::Forbidden(format!(
                "only one instance of \"{}\" network is allowed",
                self.driver
            )));
        }
        Ok(())
    }
    async fn create_network(&self, _ctx: &mut Ctx<'_>, _net: &mut Network) -> Result<()> {
        Ok(())
    }
    async fn join(
        &self,
        _: &mut Ctx<'_>,
        _: &Network,
        _: &EndpointInfo,
        _: &JoinTarget,
    ) -> Result<JoinInfo> {
        // The engine never joins a sandbox mode; say so if it is asked to.
        Err(match self.attachment {
            Attachment::LoopbackOnly => Error::NoneMode,
            _ => Error::ConnectToHost,
        })
    }
}
