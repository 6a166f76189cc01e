//! weft: a container network engine with Docker's model (networks, endpoints, sandboxes),
//! native drivers (bridge, host, null, macvlan, VXLAN overlay across hosts on etcd), native
//! IPAM, nftables firewalling, and
//! third-party drivers and IPAM running as sandboxed WebAssembly components.
//!
//! The [`Engine`] is the one facade. A short example (needs root):
//!
//! ```no_run
//! use weft::{Config, Engine, model::{NetworkCreate, SandboxCreate}};
//!
//! # async fn demo() -> weft::Result<()> {
//! let engine = Engine::open(Config::from_env()).await?;
//! let net = engine
//!     .create_network(NetworkCreate { name: "web".into(), ..Default::default() })
//!     .await?;
//! let sb = engine
//!     .create_sandbox(SandboxCreate { name: "api".into(), network: Some("web".into()), ..Default::default() })
//!     .await?;
//! let eps = engine.sandbox_endpoints(&sb.id)?;
//! println!("{} got {:?} on {}", sb.name, eps[0].ipv4, net.id);
//! engine.remove_sandbox("api", false).await?;
//! engine.remove_network("web").await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod daemon;
pub mod dns;
pub mod drivers;
pub mod engine;
pub mod error;
pub mod firewall;
pub mod ipam;
pub mod model;
pub mod net;
pub mod plugin;
pub mod podman;
pub mod store;
pub mod view;

pub use engine::exec::ExecPlan;
pub use engine::{Config, Created, Engine, SandboxFiles};

/// The README's code compiles (it is tested as a doctest).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
pub use error::{Error, Result};
