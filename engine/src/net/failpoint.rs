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
//! - `random:P` (0 < P ≤ 1): each kernel step fails with probability P, half of them before
//!   touching the kernel and half right after (faults under load);
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
    /// Each step fails with this probability (in millionths).
    Random(u64),
}

/// The failpoints of one engine.
#[derive(Default)]
pub struct Failpoints {
    #[cfg(feature = "failpoints")]
    spec: Mutex<Option<Spec>>,
    #[cfg(feature = "failpoints")]
    count: AtomicUsize,
    /// xorshift state for `random:P`.
    #[cfg(feature = "failpoints")]
    rng: std::sync::atomic::AtomicU64,
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
            } else if let Some(p) = s.strip_prefix("random:") {
                let p: f64 = p.parse().expect("random:P takes a probability");
                Spec::Random((p.clamp(0.0, 1.0) * 1e6) as u64)
            } else {
                Spec::Fail(s.into())
            }
        });
        *self.spec.lock().unwrap() = parsed;
        self.count.store(0, Ordering::SeqCst);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        self.rng.store(seed, Ordering::SeqCst);
    }

    /// With `random:P`, does this step fail (and before the kernel, or after)?
    #[cfg(feature = "failpoints")]
    fn roll(&self) -> Option<bool> {
        let Some(Spec::Random(p)) = &*self.spec.lock().unwrap() else {
            return None;
        };
        let mut x = self.rng.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::SeqCst);
        ((x >> 1) % 1_000_000 < *p).then_some(x & 1 == 0)
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
            Some(Spec::Random(_)) => {}
            _ => return Ok(()),
        }
        #[cfg(feature = "failpoints")]
        if self.roll() == Some(true) {
            return Err(NetError::other(
                format!("{_kind} step"),
                "injected random failure (WEFT_FAILPOINT)",
            ));
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
            if self.roll() == Some(false) {
                return Err(NetError::other(
                    format!("{_kind} step"),
                    "injected random failure after the change (WEFT_FAILPOINT)",
                ));
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
