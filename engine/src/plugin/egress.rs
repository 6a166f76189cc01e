//! What crosses from weft into a plugin's world, bounded: outbound HTTP (wasi:http) and the
//! bytes weft hands a plugin.
//!
//! - [`HttpGate`] decides each request before anything is sent: only to an authority the
//!   plugin was granted; at most `http-requests` started per call; at most `http-inflight`
//!   open at once per plugin; and all plugins together at most a quarter of the process's
//!   descriptors ([`Sockets`]), so a plugin never takes the descriptors weft needs for its own
//!   sockets. A refusal costs no socket.
//! - [`Inbound`] counts what weft hands the plugin in one call — kv reads, config values, HTTP
//!   response headers and bodies — against the `inbound` grant: an endless body stops there.
//! - The HTTP layer's own per-failure log lines are replaced by the gate's counts, told in one
//!   summary line per call ([`HttpGate::summary`]) and in the call's error.
//!
//! Everything a plugin chose (an authority, an error text) is scrubbed of its secrets here,
//! before it is formatted, kept or logged.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use super::PluginRecord;

/// How many authorities refused for not being granted are named in an error.
const NAMED: usize = 4;

/// The share of the process's descriptors (its soft limit) that all plugins' outbound
/// connections together may hold; the rest is weft's own (its sockets, the store, namespaces,
/// DNS). Bounded above: no plugin needs thousands of connections.
pub fn socket_cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        usize::try_from(soft / 4).unwrap_or(4096).clamp(16, 4096)
    })
}

/// Open outbound connections of this process's plugins: per plugin, and in all.
#[derive(Default)]
pub struct Sockets {
    all: Arc<AtomicUsize>,
    per_plugin: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl Sockets {
    /// The counters one plugin's calls share.
    pub fn of(&self, plugin: &str) -> Slots {
        let mine = self
            .per_plugin
            .lock()
            .unwrap()
            .entry(plugin.to_string())
            .or_default()
            .clone();
        Slots {
            mine,
            all: self.all.clone(),
            cap: socket_cap(),
        }
    }

    /// Connections open now, all plugins together.
    pub fn open(&self) -> usize {
        self.all.load(Ordering::Relaxed)
    }
}

/// A plugin's share of [`Sockets`].
#[derive(Clone)]
pub struct Slots {
    mine: Arc<AtomicUsize>,
    all: Arc<AtomicUsize>,
    cap: usize,
}

impl Slots {
    /// Slots for a call that may open no connection (install-time calls).
    pub fn none() -> Slots {
        Slots {
            mine: Arc::default(),
            all: Arc::default(),
            cap: 0,
        }
    }

    fn take(&self, max_mine: usize) -> Result<Permit, Refused> {
        if self.mine.fetch_add(1, Ordering::AcqRel) >= max_mine {
            self.mine.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Open);
        }
        if self.all.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.all.fetch_sub(1, Ordering::AcqRel);
            self.mine.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::AllPlugins);
        }
        Ok(Permit(self.clone()))
    }
}

/// One open request's slot, given back when its connection closes (or never opened).
struct Permit(Slots);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.mine.fetch_sub(1, Ordering::AcqRel);
        self.0.all.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy)]
enum Refused {
    /// Its `http-inflight` requests are open.
    Open,
    /// All plugins' connections hold their share of the process's descriptors.
    AllPlugins,
}

/// The bytes weft has handed a plugin in this call, against its `inbound` grant.
pub struct Inbound {
    used: AtomicU64,
    limit: u64,
    exceeded: AtomicBool,
}

impl Inbound {
    pub fn new(limit: u64) -> Arc<Inbound> {
        Arc::new(Inbound {
            used: AtomicU64::new(0),
            limit,
            exceeded: AtomicBool::new(false),
        })
    }

    /// Count `n` more bytes; false (and remembered) when that goes past the limit.
    pub fn take(&self, n: usize) -> bool {
        let n = n as u64;
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.limit {
            self.exceeded.store(true, Ordering::Release);
            return false;
        }
        true
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    /// What the limit's refusal says (to the plugin, and in the call's error).
    pub fn refusal(&self) -> String {
        format!(
            "weft hands a plugin at most {} in one call (kv reads, config, HTTP answers): grant inbound=SIZE for more",
            size(self.limit)
        )
    }
}

fn size(b: u64) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

/// A response body that counts its bytes against the call's [`Inbound`], and fails — ending
/// the read, so nothing more is pulled from the connection — past it.
struct Counted {
    inner: WasiBody,
    inbound: Arc<Inbound>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.inbound.exceeded() {
            return Poll::Ready(Some(Err(body_too_big(&self.inbound))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                let n = f.data_ref().map(|d| d.len()).unwrap_or(0);
                if self.inbound.take(n) {
                    Poll::Ready(Some(Ok(f)))
                } else {
                    Poll::Ready(Some(Err(body_too_big(&self.inbound))))
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn body_too_big(inbound: &Inbound) -> wasmtime_wasi_http::Error {
    wasmtime_wasi_http::Error::InternalError(Some(inbound.refusal()))
}

/// One call's outbound HTTP: the decision on each request, and what happened, for the
/// call's error and its one summary log line.
pub struct HttpGate {
    rec: Arc<PluginRecord>,
    slots: Slots,
    inbound: Arc<Inbound>,
    /// Requests that went out (a socket each).
    started: u32,
    /// Authorities refused for not being granted: the first few, scrubbed; and how many.
    ungranted: Vec<String>,
    ungranted_n: u32,
    /// Refused for the call's `http-requests`, the plugin's `http-inflight`, all plugins' share.
    over_call: u32,
    over_open: u32,
    over_all: u32,
    /// Requests that failed once sent (connect, TLS, protocol), and the first reason.
    failed: u32,
    first_failure: Option<String>,
}

impl HttpGate {
    pub fn new(rec: Arc<PluginRecord>, slots: Slots, inbound: Arc<Inbound>) -> HttpGate {
        HttpGate {
            rec,
            slots,
            inbound,
            started: 0,
            ungranted: vec![],
            ungranted_n: 0,
            over_call: 0,
            over_open: 0,
            over_all: 0,
            failed: 0,
            first_failure: None,
        }
    }

    /// Does a grant (host or host:port) cover this authority (scheme default port applied)?
    fn allows(&self, authority: &str, default_port: u16) -> bool {
        allows(&self.rec.grants.http_hosts, authority, default_port)
    }

    fn failure(&mut self, what: &str, err: &dyn std::fmt::Display) {
        self.failed += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(self.rec.tell(&format!("{what}: {err}"), 200));
        }
    }

    /// What the call's error adds (empty when nothing was refused).
    pub fn error_suffix(&self) -> String {
        let g = &self.rec.grants;
        let mut out = String::new();
        if !self.ungranted.is_empty() {
            let more = self.ungranted_n as usize - self.ungranted.len();
            out.push_str(&format!(
                " (it tried to reach {}{}, which it was not granted: grant http=HOST[:PORT])",
                self.ungranted.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if self.over_call > 0 {
            out.push_str(&format!(
                " (it tried to start more than {} HTTP requests in one call: grant http-requests=N)",
                g.http_requests
            ));
        }
        if self.over_open > 0 {
            out.push_str(&format!(
                " (it tried to have more than {} HTTP requests open at once: grant http-inflight=N)",
                g.http_inflight
            ));
        }
        if self.over_all > 0 {
            out.push_str(&format!(
                " (weft's plugins together hold their most outbound connections, {}: the rest of the process's descriptors are weft's)",
                self.slots.cap
            ));
        }
        if self.inbound.exceeded() {
            out.push_str(&format!(" ({})", self.inbound.refusal()));
        }
        out
    }

    /// One line for the log about the call's outbound HTTP, when anything was refused or
    /// failed (the HTTP layer logs nothing per request: this line says it all).
    pub fn summary(&self) -> Option<String> {
        let refused = self.ungranted_n + self.over_call + self.over_open + self.over_all;
        if refused == 0 && self.failed == 0 && !self.inbound.exceeded() {
            return None;
        }
        let mut s = format!("outbound HTTP: {} sent", self.started);
        if self.failed > 0 {
            s.push_str(&format!(
                ", {} failed (first: {})",
                self.failed,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        for (n, why) in [
            (self.ungranted_n, "to hosts not granted"),
            (self.over_call, "over the requests per call"),
            (self.over_open, "over the requests open at once"),
            (self.over_all, "over all plugins' share of descriptors"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {n} refused {why}"));
            }
        }
        if self.inbound.exceeded() {
            s.push_str(&format!(
                ", stopped at {} handed to it",
                size(self.inbound.limit)
            ));
        }
        Some(s)
    }
}

/// Does one of `grants` (host or host:port) cover `authority` (scheme default port applied)?
fn allows(grants: &[String], authority: &str, default_port: u16) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => (authority, default_port),
        },
        _ => (authority, default_port),
    };
    grants.iter().any(|g| match g.rsplit_once(':') {
        Some((gh, gp)) if gp.parse::<u16>().is_ok() => {
            gh.eq_ignore_ascii_case(host) && gp.parse::<u16>() == Ok(port)
        }
        _ => g.eq_ignore_ascii_case(host) && port == default_port,
    })
}

type IoFuture = Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;
type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<(http::Response<WasiBody>, IoFuture), wasmtime_wasi_http::Error>,
        > + Send,
>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: IoFuture,
    ) -> SendFuture {
        drop(fut);
        let default_port = match request.uri().scheme_str() {
            Some("http") => 80,
            _ => 443,
        };
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        if authority.is_empty() || !self.allows(authority, default_port) {
            let shown = self.rec.tell(authority, 256);
            self.ungranted_n += 1;
            if self.ungranted.len() < NAMED && !self.ungranted.contains(&shown) {
                self.ungranted.push(shown);
            }
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let g = &self.rec.grants;
        if self.started >= g.http_requests {
            self.over_call += 1;
            return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
        }
        let permit = match self.slots.take(g.http_inflight as usize) {
            Ok(p) => p,
            Err(r) => {
                match r {
                    Refused::Open => self.over_open += 1,
                    Refused::AllPlugins => self.over_all += 1,
                }
                return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
            }
        };
        self.started += 1;
        let inbound = self.inbound.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let head: usize = res
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum();
            if !inbound.take(head) {
                return Err(body_too_big(&inbound));
            }
            let res = res.map(|b| {
                Counted {
                    inner: b.boxed_unsync(),
                    inbound,
                }
                .boxed_unsync()
            });
            // The connection (its socket) lives in `io`: the slot goes when it ends.
            let io: IoFuture = Box::new(async move {
                let _permit = permit;
                io.await
            });
            Ok((res, io))
        })
    }

    // The HTTP layer's default hooks log a WARN line per failed request; these count them
    // for the call's one summary line instead, with the same error codes.
    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        self.failure("HTTP", err);
        ErrorCode::HttpProtocolError
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        self.failure("connect", err);
        ErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        self.failure("TLS", err);
        ErrorCode::TlsProtocolError
    }

    fn p2_error_from_dns(&mut self, err: &rustls_pki_types::InvalidDnsNameError) -> ErrorCode {
        self.failure("TLS name", err);
        ErrorCode::DnsError(
            wasmtime_wasi_http::p2::bindings::http::types::DnsErrorPayload {
                rcode: Some("invalid dns name".to_string()),
                info_code: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_grants_match_host_and_port() {
        let g = vec!["netbox.lan:8000".to_string(), "ipam.example".to_string()];
        assert!(allows(&g, "netbox.lan:8000", 443));
        assert!(allows(&g, "NetBox.lan:8000", 80));
        assert!(!allows(&g, "netbox.lan:8001", 80));
        assert!(!allows(&g, "netbox.lan", 80));
        assert!(allows(&g, "ipam.example", 443));
        assert!(allows(&g, "ipam.example:443", 443));
        assert!(!allows(&g, "ipam.example:8443", 443));
        assert!(!allows(&g, "169.254.169.254", 80));
    }

    #[test]
    fn slots_bound_a_plugin_and_all_plugins() {
        let s = Sockets::default();
        let a = s.of("a");
        let held: Vec<Permit> = (0..3).map(|_| a.take(3).ok().unwrap()).collect();
        assert!(matches!(a.take(3), Err(Refused::Open)));
        assert_eq!(s.open(), 3);
        drop(held);
        assert_eq!(s.open(), 0, "slots are given back");
        let mut b = s.of("b");
        b.cap = 2;
        let _p = (b.take(10).ok().unwrap(), b.take(10).ok().unwrap());
        assert!(matches!(b.take(10), Err(Refused::AllPlugins)));
        assert_eq!(
            s.of("b").mine.load(Ordering::Relaxed),
            2,
            "a refusal keeps no slot"
        );
    }

    #[test]
    fn inbound_counts_to_its_limit() {
        let i = Inbound::new(10);
        assert!(i.take(6) && !i.exceeded());
        assert!(!i.take(5) && i.exceeded());
        assert!(i.refusal().contains("grant inbound=SIZE"));
    }
}
