//! The kernel layer. Everything weft does to links, addresses, routes, neighbours, sysctls
//! and namespaces goes through here (and nftables through `firewall/`), as typed [`Step`]s
//! applied by one executor ([`Tx`]) that records the inverse of each step, rolls back on
//! failure, and journals the inverses so a crash mid-operation is cleaned up on restart.
//!
//! Drivers — native or Wasm — decide *what* to change; this module is the only one that
//! changes it.

pub mod link;
pub mod ns;
pub mod plan;
pub mod sysctl;

pub use link::{LinkState, MacvlanMode, Netlink, RouteState};
pub use plan::{Journal, Kernel, NsRef, Step, Tx};

/// A kernel operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {reason}")]
pub struct NetError {
    /// What weft was doing ("create link veth1a2b3c").
    pub op: String,
    /// The errno, when the kernel gave one.
    pub errno: Option<i32>,
    pub reason: String,
}

impl NetError {
    pub fn errno(op: impl Into<String>, code: i32) -> Self {
        let reason = std::io::Error::from_raw_os_error(code).to_string();
        let reason = match reason.find(" (os error") {
            Some(i) => reason[..i].to_string(),
            None => reason,
        };
        NetError {
            op: op.into(),
            errno: Some(code),
            reason,
        }
    }
    pub fn io(op: impl Into<String>, e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => Self::errno(op, code),
            None => NetError {
                op: op.into(),
                errno: None,
                reason: e.to_string(),
            },
        }
    }
    pub fn other(op: impl Into<String>, reason: impl Into<String>) -> Self {
        NetError {
            op: op.into(),
            errno: None,
            reason: reason.into(),
        }
    }
    /// The object is not there (already deleted, never created).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENODEV)
                | Some(libc::ENOENT)
                | Some(libc::ESRCH)
                | Some(libc::EADDRNOTAVAIL)
                | Some(libc::ENXIO)
        )
    }
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }
}
