//! The kernel layer. Everything weft does to links, addresses, routes, neighbours, sysctls,
//! namespaces and nftables is a typed [`Step`] applied by one executor ([`Tx`]), which records
//! the inverse of each step, journals it, and rolls back on failure.
//!
//! - [`step`]: the steps and their inverses (pure data);
//! - [`tx`]: the executor — apply, roll back, tear down an undo log, journal;
//! - [`journal`]: the on-disk journal of an operation in flight;
//! - [`kernel`]: the [`Kernel`] trait the executor drives, with two implementations:
//!   [`linux`] (rtnetlink, nft, /proc) and [`fake`] (an in-memory kernel that records what
//!   it was asked, for tests without root);
//! - [`link`], [`ns`], [`sysctl`]: the Linux primitives.
//!
//! Drivers — native or Wasm — decide *what* to change; this module is the only one that
//! changes it (with `firewall/` for the nftables text).

pub mod failpoint;
pub mod fake;
pub mod journal;
pub mod kernel;
pub mod link;
pub mod linux;
pub mod ns;
pub mod step;
pub mod sysctl;
pub mod tx;
pub mod watch;

pub use journal::Journal;
pub use kernel::{Kernel, Session};
pub use link::{LinkState, MacvlanMode, RouteState};
pub use step::{NsRef, Step};
pub use tx::Tx;

/// The class of a kernel failure: what callers branch on (never the message text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetErrorKind {
    /// The object is not there (already deleted, never created).
    NotFound,
    /// The object exists already.
    Exists,
    /// The object is in use or the kernel is busy with it.
    Busy,
    /// Not allowed (permissions, a read-only namespace).
    Permission,
    /// The kernel refused the arguments.
    Invalid,
    /// This kernel lacks the feature (a link type, a module).
    Unsupported,
    Other,
}

/// A kernel operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {reason}")]
pub struct NetError {
    /// What weft was doing, naming the object ("create link veth1a2b3c").
    pub op: String,
    pub kind: NetErrorKind,
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
        let kind = match code {
            libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL | libc::ENXIO => {
                NetErrorKind::NotFound
            }
            libc::EEXIST => NetErrorKind::Exists,
            libc::EBUSY => NetErrorKind::Busy,
            libc::EPERM | libc::EACCES => NetErrorKind::Permission,
            libc::EINVAL | libc::ERANGE | libc::E2BIG => NetErrorKind::Invalid,
            libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => {
                NetErrorKind::Unsupported
            }
            _ => NetErrorKind::Other,
        };
        NetError {
            op: op.into(),
            kind,
            errno: Some(code),
            reason,
        }
    }
    pub fn io(op: impl Into<String>, e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => Self::errno(op, code),
            None => NetError {
                op: op.into(),
                kind: NetErrorKind::Other,
                errno: None,
                reason: e.to_string(),
            },
        }
    }
    pub fn new(op: impl Into<String>, kind: NetErrorKind, reason: impl Into<String>) -> Self {
        NetError {
            op: op.into(),
            kind,
            errno: None,
            reason: reason.into(),
        }
    }
    pub fn other(op: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(op, NetErrorKind::Other, reason)
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == NetErrorKind::NotFound
    }
    pub fn is_exists(&self) -> bool {
        self.kind == NetErrorKind::Exists
    }
}
