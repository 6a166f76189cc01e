//! Fault injection for tests, compiled in only with the `failpoints` cargo feature (the test
//! command enables it; release and demo builds have none of it: every call here is a no-op).
//!
//! `WEFT_FAILPOINT` (or [`Failpoints::set`]) takes one of:
//! - `fail:KIND` (or just `KIND`): every step of that kind fails before touching the kernel;
//! - `fail-after:KIND`: every step of that kind fails right after the kernel made the change
//!   (so its inverse runs in the rollback);
//! - `crash:KIND`: the process dies (SIGKILL) right before the first step of that kind;
//! - `panic:NAME`: the first time the named point is reached it panics (a supervised task:
//!   `healer`, `dns`, `resolver`);
//! - `crash-after:N`: the process dies right after its N-th crash point: every kernel step
//!   applied or removed is one, and so are `commit` (before the store commit) and `committed`
//!   (after it, before the journal goes). Walking N from 1 kills an operation at each of them.

#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "failpoints")]
use std::sync::Mutex;

use super::NetError;

#[cfg(feature = "failpoints")]
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    Fail(String),
    FailAfter(String),
    Crash(String),
    CrashAfter(usize),
    /// Panic, the first time, at the point of this name (a supervised task dies).
    Panic(String),
}

/// The failpoints of one engine.
#[derive(Default)]
pub struct Failpoints {
    #[cfg(feature = "failpoints")]
    spec: Mutex<Option<Spec>>,
    #[cfg(feature = "failpoints")]
    count: AtomicUsize,
}

#[cfg(feature = "failpoints")]
fn die(what: &str) -> ! {
    eprintln!("weft: WEFT_FAILPOINT: killed {what}");
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL did not kill")
}

impl Failpoints {
    /// From `WEFT_FAILPOINT` (nothing without the `failpoints` feature).
    pub fn from_env() -> Failpoints {
        let f = Failpoints::default();
        #[cfg(feature = "failpoints")]
        if let Ok(v) = std::env::var("WEFT_FAILPOINT") {
            f.set(Some(&v));
        }
        f
    }

    /// Set or clear the failpoint (and restart the crash-point count).
    #[cfg(feature = "failpoints")]
    pub fn set(&self, spec: Option<&str>) {
        let parsed = spec.filter(|s| !s.is_empty()).map(|s| {
            if let Some(k) = s.strip_prefix("fail-after:") {
                Spec::FailAfter(k.into())
            } else if let Some(k) = s.strip_prefix("fail:") {
                Spec::Fail(k.into())
            } else if let Some(n) = s.strip_prefix("crash-after:") {
                Spec::CrashAfter(n.parse().expect("crash-after:N takes a number"))
            } else if let Some(k) = s.strip_prefix("crash:") {
                Spec::Crash(k.into())
            } else if let Some(k) = s.strip_prefix("panic:") {
                Spec::Panic(k.into())
            } else {
                Spec::Fail(s.into())
            }
        });
        *self.spec.lock().unwrap() = parsed;
        self.count.store(0, Ordering::SeqCst);
    }

    /// Before a step of `kind` touches the kernel.
    #[inline]
    pub fn before(&self, _kind: &str) -> Result<(), NetError> {
        #[cfg(feature = "failpoints")]
        match &*self.spec.lock().unwrap() {
            Some(Spec::Fail(k)) if k == _kind => {
                return Err(NetError::other(
                    format!("{_kind} step"),
                    "injected failure (WEFT_FAILPOINT)",
                ))
            }
            Some(Spec::Crash(k)) if k == _kind => die(&format!("before a {_kind} step")),
            _ => {}
        }
        Ok(())
    }

    /// After a step of `kind` changed the kernel.
    #[inline]
    pub fn after(&self, _kind: &str) -> Result<(), NetError> {
        #[cfg(feature = "failpoints")]
        {
            self.point(_kind);
            if let Some(Spec::FailAfter(k)) = &*self.spec.lock().unwrap() {
                if k == _kind {
                    return Err(NetError::other(
                        format!("{_kind} step"),
                        "injected failure after the change (WEFT_FAILPOINT)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A named panic point: with `panic:NAME`, the first time it is reached it panics (the
    /// spec is then cleared: the task restarted by its supervisor runs on).
    #[inline]
    pub fn panic_point(&self, _name: &str) {
        #[cfg(feature = "failpoints")]
        {
            let mut g = self.spec.lock().unwrap();
            if matches!(&*g, Some(Spec::Panic(k)) if k == _name) {
                *g = None;
                drop(g);
                panic!("WEFT_FAILPOINT: panic at {_name}");
            }
        }
    }

    /// A named crash point (`commit`, `committed`).
    #[inline]
    pub fn point(&self, _name: &str) {
        #[cfg(feature = "failpoints")]
        {
            let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(Spec::CrashAfter(k)) = &*self.spec.lock().unwrap() {
                if *k == n {
                    die(&format!("at crash point {n} ({_name})"));
                }
            }
        }
    }
}
