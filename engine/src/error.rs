//! Errors: one typed enum for the whole engine, and the one place where each error gets its
//! user-facing message (Docker's text where Docker has one) and its HTTP status.
//!
//! Lower layers have their own typed errors — [`crate::net::NetError`] (kernel and nftables,
//! with a [`crate::net::NetErrorKind`] callers branch on), [`crate::store::StoreError`] — that
//! convert into [`Error`] here, so that the CLI and the API print the same line. Nothing
//! above those layers looks at message text.

use std::fmt;

/// The result type of the engine's public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which kind of object a lookup was for (used in "not found" and "ambiguous" messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Network,
    Sandbox,
    Plugin,
}

/// Everything that can go wrong in a weft operation.
///
/// The `Display` text is what a user sees (CLI: one line on stderr; API: the `message` field).
/// [`Error::status`] is the HTTP status dockerd uses for the same situation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- lookups ----
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("No such container: {0}")]
    SandboxNotFound(String),
    #[error("plugin \"{0}\" not found")]
    PluginNotFound(String),
    #[error("{kind} {name} is ambiguous ({count} matches found based on {basis})")]
    Ambiguous {
        kind: &'static str,
        name: String,
        count: usize,
        basis: &'static str,
    },

    // ---- network create / remove ----
    #[error("network with name {0} already exists")]
    NetworkNameExists(String),
    #[error("operation is not permitted on predefined {0} network ")]
    PredefinedCreate(String),
    #[error("{0} is a pre-defined network and cannot be removed")]
    PredefinedRemove(String),
    #[error("error while removing network: network {name} has active endpoints ({endpoints})")]
    ActiveEndpoints { name: String, endpoints: String },
    #[error("invalid pool request: Pool overlaps with other one on this address space")]
    PoolOverlap,
    #[error("could not find an available, non-overlapping IPv{0} address pool among the defaults to assign to the network")]
    NoDefaultPool(u8),

    // ---- sandboxes ----
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    SandboxNameExists { name: String, id: String },
    #[error("cannot remove sandbox {name}: sandbox {users} shares its network namespace (use --force to remove them too)")]
    SandboxShared { name: String, users: String },

    // ---- connect / disconnect ----
    #[error(
        "cannot connect container to host network - container must be created in host network mode"
    )]
    ConnectToHost,
    #[error("cannot disconnect container from host network - container was created in host network mode")]
    DisconnectFromHost,
    #[error("container sharing network namespace with another container or host cannot be connected to any other network")]
    SharedNamespace,
    #[error("container cannot be connected to multiple networks with one of the networks in private (none) mode")]
    NoneMode,
    #[error("container cannot be disconnected from the none network it was created in")]
    DisconnectFromNone,
    #[error("endpoint with name {sandbox} already exists in network {network}")]
    EndpointExists { sandbox: String, network: String },
    #[error("container {sandbox_id} is not connected to network {network}")]
    NotConnected { sandbox_id: String, network: String },
    #[error("invalid endpoint settings:\n{0}")]
    InvalidEndpointSettings(String),
    #[error("Address already in use")]
    AddressInUse,
    #[error("no available addresses on this pool")]
    PoolExhausted,
    #[error("Bind for {host_ip}:{port} failed: port is already allocated")]
    PortAllocated { host_ip: String, port: u16 },

    // ---- generic classes, with a message that says what to change ----
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),

    // ---- below the engine ----
    #[error("{0}")]
    Kernel(#[from] crate::net::NetError),
    #[error("state store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("plugin {plugin}: {message}")]
    Plugin {
        plugin: String,
        kind: PluginErrorKind,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
}

/// The class of a plugin failure (mirrors the WIT `error` variant, plus host-side failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    InvalidArgument,
    NotFound,
    Conflict,
    Exhausted,
    Unsupported,
    Denied,
    Internal,
    /// The plugin trapped, ran past its deadline or out of memory/fuel.
    Trapped,
    /// The plugin returned a value the engine refused (address outside the pool, foreign link…).
    BadReturn,
}

impl Error {
    /// The HTTP status dockerd answers for this situation (../shared/DOCKER-API.md §2).
    pub fn status(&self) -> u16 {
        use Error::*;
        match self {
            NetworkNotFound(_) | SandboxNotFound(_) | PluginNotFound(_) | NotFound(_) => 404,
            Ambiguous { .. } => 400,
            NetworkNameExists(_)
            | SandboxNameExists { .. }
            | Conflict(_)
            | PortAllocated { .. } => 409,
            PredefinedCreate(_) | PredefinedRemove(_) | ActiveEndpoints { .. } | PoolOverlap => 403,
            SandboxShared { .. } => 409,
            NoDefaultPool(_) => 403,
            ConnectToHost | DisconnectFromHost | SharedNamespace | NoneMode
            | DisconnectFromNone => 400,
            EndpointExists { .. } | AddressInUse | Forbidden(_) => 403,
            NotConnected { .. } => 500,
            InvalidEndpointSettings(_) | InvalidArgument(_) => 400,
            PoolExhausted | Unavailable(_) => 503,
            Plugin { kind, .. } => match kind {
                PluginErrorKind::InvalidArgument => 400,
                PluginErrorKind::NotFound => 404,
                PluginErrorKind::Conflict => 409,
                PluginErrorKind::Exhausted => 503,
                PluginErrorKind::Unsupported => 400,
                PluginErrorKind::Denied => 403,
                _ => 500,
            },
            Store(crate::store::StoreError::Conflict) => 409,
            Kernel(_) | Store(_) | Internal(_) => 500,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::InvalidArgument(msg.to_string())
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(msg: impl fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Store(crate::store::StoreError::Corrupt(e.to_string()))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.to_string())
    }
}
