//! The Docker Engine API's network subset, served over HTTP/1.1 on a unix socket, so the real
//! `docker` CLI and docker-py drive weft (../shared/DOCKER-API.md is what they send and expect).
//!
//! - [`serve`]: the accept loop (one task per connection, bounded header and body times);
//! - [`Api::handle`]: version prefix, routing, the JSON answers; errors become
//!   `{"message"}` with the status [`crate::Error::status`] gives — the one place messages are
//!   made stays `error.rs`;
//! - [`body`]: the request bodies, typed, with unknown fields refused.

pub mod body;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::UnixListener;

use crate::error::{Error, Result};
use crate::model::{NetworkFilters, Sandbox};
use crate::{view, Engine};

/// The newest API version weft speaks (docker CLI 28.2.2's).
pub const API_VERSION: &str = "1.50";
/// The oldest (dockerd's minimum).
pub const MIN_API_VERSION: &str = "1.24";
/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// A client has this long to send its headers, and again its body.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one socket serves at once.
pub const MAX_CONNECTIONS: usize = 512;

type Body = BoxBody<Bytes, Infallible>;

/// The API: an engine and what the answers need to say about the server.
pub struct Api {
    engine: Engine,
    /// This socket is weft's own: it also runs `weft` commands for the CLI.
    weft_door: bool,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn reply(status: StatusCode, body: Body, content_type: Option<&'static str>) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("weft/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Body> {
    let mut s = serde_json::to_vec(v).unwrap_or_default();
    s.push(b'\n');
    reply(status, full(s), Some("application/json"))
}

fn error_reply(e: &Error) -> Response<Body> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_reply(status, &json!({ "message": e.to_string() }))
}

fn page_not_found() -> Error {
    Error::NotFound("page not found".into())
}

/// `(major, minor)` of "1.50".
fn version_tuple(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Strip `/vX.Y` and check X.Y is one weft speaks.
fn strip_version(path: &str) -> Result<&str> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (v, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some(t) = version_tuple(v) else {
        return Ok(path);
    };
    if t > version_tuple(API_VERSION).unwrap() {
        return Err(Error::invalid(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if t < version_tuple(MIN_API_VERSION).unwrap() {
        return Err(Error::invalid(format!(
            "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(tail)
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Docker's `filters` query: `{"key":{"value":true}}`, or the older `{"key":["value"]}`.
pub fn parse_filters(q: &BTreeMap<String, String>) -> Result<NetworkFilters> {
    let mut f = NetworkFilters::default();
    let Some(raw) = q.get("filters").filter(|s| !s.is_empty()) else {
        return Ok(f);
    };
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| Error::invalid(format!("invalid filters {raw:?}: {e}")))?;
    let Value::Object(m) = v else {
        return Err(Error::invalid(format!(
            "invalid filters {raw:?}: expected an object such as {{\"name\":{{\"dev\":true}}}}"
        )));
    };
    for (k, vals) in m {
        let list = f.filters.entry(k.to_lowercase()).or_default();
        match vals {
            Value::Object(set) => {
                for (val, on) in set {
                    if on != Value::Bool(true) {
                        return Err(Error::invalid(format!(
                            "invalid filter value for {k}: {val} must map to true"
                        )));
                    }
                    list.push(val);
                }
            }
            Value::Array(a) => {
                for val in a {
                    match val {
                        Value::String(s) => list.push(s),
                        other => {
                            return Err(Error::invalid(format!(
                                "invalid filter value for {k}: {other} is not a string"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(Error::invalid(format!(
                    "invalid filter value for {k}: {other} is neither a set nor a list"
                )))
            }
        }
    }
    Ok(f)
}

/// Read a JSON body of at most [`MAX_BODY`] bytes within [`CLIENT_TIMEOUT`].
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
        {
            return Err(Error::invalid(format!(
                "unsupported Content-Type header ({ct}): must be 'application/json'"
            )));
        }
    }
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(CLIENT_TIMEOUT, body.collect()).await {
        Err(_) => {
            return Err(Error::invalid(format!(
                "the request body did not arrive within {} s",
                CLIENT_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(e)) => {
            return Err(if e.is::<http_body_util::LengthLimitError>() {
                Error::invalid(format!(
                    "request body too large: at most {} KiB",
                    MAX_BODY >> 10
                ))
            } else {
                Error::invalid(format!("cannot read the request body: {e}"))
            })
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid("a JSON request body is required"));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}

/// The architecture as Go (and so dockerd) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        a => a,
    }
}

fn unix_seconds(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

impl Api {
    /// The Docker API alone.
    pub fn new(engine: Engine) -> Api {
        Api {
            engine,
            weft_door: false,
        }
    }

    /// The Docker API and the `weft` CLI's door (`POST /weft/v1/run`).
    pub fn with_weft_door(engine: Engine) -> Api {
        Api {
            engine,
            weft_door: true,
        }
    }

    /// Answer one request. Never fails: every error is a `{"message"}` answer.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let started = std::time::Instant::now();
        let r = self.route(req).await;
        let resp = r.unwrap_or_else(|e| error_reply(&e));
        tracing::debug!(%method, %path, status = resp.status().as_u16(), took_us = started.elapsed().as_micros() as u64, "api");
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>> {
        let full_path = req.uri().path().to_string();
        let path = strip_version(&full_path)?;
        let q = query(&req);
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let m = req.method().clone();
        let ok = |v: Value| Ok(json_reply(StatusCode::OK, &v));
        match (&m, segs.as_slice()) {
            (&Method::GET | &Method::HEAD, ["_ping"]) => {
                let mut r = reply(
                    StatusCode::OK,
                    if m == Method::HEAD {
                        full("")
                    } else {
                        full("OK")
                    },
                    Some("text/plain; charset=utf-8"),
                );
                let h = r.headers_mut();
                h.insert("Builder-Version", HeaderValue::from_static("2"));
                h.insert("Swarm", HeaderValue::from_static("inactive"));
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache, no-store, must-revalidate"),
                );
                h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                Ok(r)
            }
            (&Method::GET, ["version"]) => ok(self.version()),
            (&Method::GET, ["info"]) => ok(self.info()?),
            (&Method::GET, ["networks"]) => {
                let f = parse_filters(&q)?;
                let nets = self.engine.networks(&f)?;
                ok(Value::Array(
                    nets.iter().map(|n| view::network(n, None)).collect(),
                ))
            }
            (&Method::POST, ["networks", "create"]) => {
                let b: body::CreateBody = read_json(req).await?;
                let c = self.engine.create_network(b.into_request()?).await?;
                Ok(json_reply(
                    StatusCode::CREATED,
                    &json!({ "Id": c.id, "Warning": c.warning }),
                ))
            }
            (&Method::POST, ["networks", "prune"]) => {
                let f = parse_filters(&q)?;
                let removed = self.engine.prune_networks(&f).await?;
                ok(json!({ "NetworksDeleted": removed }))
            }
            (&Method::GET, ["networks", id]) => {
                let net = self.engine.network(id)?;
                if let Some(s) = q.get("scope").filter(|s| !s.is_empty()) {
                    if s != net.scope.as_str() {
                        return Err(Error::NetworkNotFound(id.to_string()));
                    }
                }
                let eps = self.engine.network_endpoints(&net.id)?;
                ok(view::network(&net, Some(&eps)))
            }
            (&Method::DELETE, ["networks", id]) => {
                let id = id.to_string();
                self.engine.remove_network(&id).await?;
                Ok(reply(StatusCode::NO_CONTENT, full(""), None))
            }
            (&Method::POST, ["networks", id, "connect"]) => {
                let id = id.to_string();
                let b: body::ConnectBody = read_json(req).await?;
                let opts = b.endpoint_config.unwrap_or_default().into_options()?;
                self.engine.connect(&id, &b.container, opts).await?;
                Ok(reply(StatusCode::OK, full(""), None))
            }
            (&Method::POST, ["networks", id, "disconnect"]) => {
                let id = id.to_string();
                let b: body::DisconnectBody = read_json(req).await?;
                self.engine
                    .disconnect(&id, &b.container, b.force.unwrap_or(false))
                    .await?;
                Ok(reply(StatusCode::OK, full(""), None))
            }
            (&Method::GET, ["containers", "json"]) => {
                let mut out = Vec::new();
                for sb in self.engine.sandboxes()? {
                    out.push(self.container_summary(&sb)?);
                }
                ok(Value::Array(out))
            }
            (&Method::GET, ["containers", id, "json"]) => {
                let sb = self.engine.sandbox(id)?;
                ok(self.container(&sb)?)
            }
            (&Method::GET, ["events"]) => self.events(&q),
            // Another process (Podman's or CNI's door) deferred link deletions to this
            // daemon's reaper.
            (&Method::POST, ["weft", "v1", "reap"]) if self.weft_door => {
                if self.engine.wake_reaper() {
                    ok(json!({}))
                } else {
                    Err(Error::Unavailable("this daemon runs no reaper".into()))
                }
            }
            // `sandbox exec`: how to run a command in a sandbox (the client runs it).
            (&Method::POST, ["weft", "v1", "exec"]) if self.weft_door => {
                #[derive(serde::Deserialize)]
                struct ExecBody {
                    sandbox: String,
                }
                let b: ExecBody = read_json(req).await?;
                let e = self.engine.clone();
                let plan = tokio::task::spawn_blocking(move || e.exec_plan(&b.sandbox))
                    .await
                    .map_err(Error::internal)??;
                ok(serde_json::to_value(plan).map_err(Error::internal)?)
            }
            (&Method::POST, ["weft", "v1", "run"]) if self.weft_door => {
                let r: crate::cli::remote::Request = read_json(req).await?;
                let c = crate::cli::run_request(&self.engine, r).await;
                ok(serde_json::to_value(c).map_err(Error::internal)?)
            }
            _ => Err(page_not_found()),
        }
    }

    fn endpoints_of(
        &self,
        sb: &Sandbox,
    ) -> Result<Vec<(crate::model::Endpoint, crate::model::Network)>> {
        let mut eps = Vec::new();
        for ep in self.engine.sandbox_endpoints(&sb.id)? {
            let net = self.engine.network(&ep.network_id)?;
            eps.push((ep, net));
        }
        Ok(eps)
    }

    /// `GET /containers/{id}/json`: a sandbox is a running container with no image.
    fn container(&self, sb: &Sandbox) -> Result<Value> {
        // Where its files are; written by the changes that made them what they are (a GET
        // writes nothing).
        let files = self.engine.sandbox_file_paths(&sb.id);
        let mut v = view::sandbox(sb, &self.endpoints_of(sb)?, Some(&files));
        let o = v.as_object_mut().expect("an object");
        o.insert("Path".into(), json!(""));
        o.insert("Args".into(), json!([]));
        o.insert("Image".into(), json!(""));
        let hostname = sb
            .hostname
            .clone()
            .unwrap_or_else(|| sb.id[..12].to_string());
        o.insert(
            "Config".into(),
            json!({ "Hostname": hostname, "Image": "", "Labels": {} }),
        );
        o.insert("Mounts".into(), json!([]));
        Ok(v)
    }

    /// One row of `GET /containers/json` (`docker ps`).
    fn container_summary(&self, sb: &Sandbox) -> Result<Value> {
        let mut nets = serde_json::Map::new();
        for (ep, net) in self.endpoints_of(sb)? {
            nets.insert(net.name.clone(), view::endpoint_settings(&ep, &net));
        }
        Ok(json!({
            "Id": sb.id,
            "Names": [format!("/{}", sb.name)],
            "Image": "",
            "ImageID": "",
            "Command": "",
            "Created": unix_seconds(&sb.created),
            "Ports": [],
            "Labels": {},
            "State": "running",
            "Status": "Up",
            "HostConfig": { "NetworkMode": sb.network_mode },
            "NetworkSettings": { "Networks": nets },
            "Mounts": [],
        }))
    }

    fn version(&self) -> Value {
        json!({
            "Platform": { "Name": "weft" },
            "Components": [{
                "Name": "Engine",
                "Version": env!("CARGO_PKG_VERSION"),
                "Details": { "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": go_arch() },
            }],
            "Version": env!("CARGO_PKG_VERSION"),
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        })
    }

    fn info(&self) -> Result<Value> {
        let sandboxes = self.engine.sandboxes()?.len();
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(json!({
            "ID": "",
            "Containers": sandboxes,
            "ContainersRunning": sandboxes,
            "ContainersPaused": 0,
            "ContainersStopped": 0,
            "Images": 0,
            "Driver": "",
            "Name": host,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "OperatingSystem": "weft",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "Plugins": { "Network": self.engine.driver_names(), "Volume": [], "Log": [] },
            "Swarm": { "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null },
        }))
    }

    /// `GET /events`: network events — the kept ones since `since`, then live ones — one JSON
    /// object per line, as long as the client stays (or until `until`, a Unix time).
    fn events(&self, q: &BTreeMap<String, String>) -> Result<Response<Body>> {
        let f = parse_filters(q)?;
        for k in f.filters.keys() {
            if !["type", "network", "event", "scope"].contains(&k.as_str()) {
                return Err(Error::invalid(format!("invalid filter '{k}'")));
            }
        }
        // Docker's times: Unix seconds, with an optional fraction ("1700000000.123456789").
        let time = |k: &str| -> Result<Option<i128>> {
            q.get(k)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
                    let bad =
                        || Error::invalid(format!("invalid {k} {s:?}: use a Unix time in seconds"));
                    let secs: i128 = secs.parse().map_err(|_| bad())?;
                    let digits: String = frac.chars().take(9).collect();
                    let nanos: i128 = if digits.is_empty() {
                        0
                    } else {
                        format!("{digits:0<9}").parse().map_err(|_| bad())?
                    };
                    Ok(secs * 1_000_000_000 + nanos)
                })
                .transpose()
        };
        let since = time("since")?;
        let until = time("until")?;
        let wants = move |key: &str, val: &str| -> bool {
            f.filters
                .get(key)
                .is_none_or(|vs| vs.iter().any(|v| v == val))
        };
        let type_ok = wants("type", "network") && wants("scope", "local");
        // The kept events since `since` first (dockerd keeps its last 256), then live ones.
        let (past, rx) = match since {
            Some(t) => self.engine.subscribe_since(t),
            None => (vec![], self.engine.subscribe()),
        };
        let past: std::collections::VecDeque<crate::engine::Event> = past
            .into_iter()
            .filter(|e| until.is_none_or(|u| e.time_nano <= u))
            .collect();
        let stream = futures::stream::unfold(
            (rx, past, f_network_matcher(wants), type_ok, until),
            |(mut rx, mut past, matches, type_ok, until)| async move {
                loop {
                    if let Some(ev) = past.pop_front() {
                        if !type_ok || !matches(&ev) {
                            continue;
                        }
                        let mut line = serde_json::to_vec(&event_json(&ev)).unwrap_or_default();
                        line.push(b'\n');
                        return Some((
                            Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
                            (rx, past, matches, type_ok, until),
                        ));
                    }
                    let deadline = until.map(|u| {
                        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
                        Duration::from_nanos(u.saturating_sub(now).max(0) as u64)
                    });
                    let ev = match deadline {
                        Some(d) => match tokio::time::timeout(d, rx.recv()).await {
                            Ok(r) => r,
                            Err(_) => return None,
                        },
                        None => rx.recv().await,
                    };
                    match ev {
                        Ok(ev) => {
                            if !type_ok || !matches(&ev) {
                                continue;
                            }
                            let mut line = serde_json::to_vec(&event_json(&ev)).unwrap_or_default();
                            line.push(b'\n');
                            return Some((
                                Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
                                (rx, past, matches, type_ok, until),
                            ));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        );
        Ok(reply(
            StatusCode::OK,
            BoxBody::new(StreamBody::new(stream)),
            Some("application/json"),
        ))
    }
}

type Matcher = Box<dyn Fn(&crate::engine::Event) -> bool + Send + Sync>;

fn f_network_matcher(wants: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Matcher {
    Box::new(move |ev: &crate::engine::Event| {
        let name = ev.attributes.get("name").map(String::as_str).unwrap_or("");
        wants("event", ev.action) && (wants("network", &ev.network_id) || wants("network", name))
    })
}

fn event_json(ev: &crate::engine::Event) -> Value {
    json!({
        "Type": "network",
        "Action": ev.action,
        "Actor": { "ID": ev.network_id, "Attributes": ev.attributes },
        "scope": "local",
        "time": (ev.time_nano / 1_000_000_000) as i64,
        "timeNano": ev.time_nano as i64,
    })
}

/// Serve `api` on `listener` until `stop` turns true; then stop accepting and give the
/// requests in flight up to 5 s.
pub async fn serve(
    listener: UnixListener,
    api: Arc<Api>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    // At most MAX_CONNECTIONS at once on this socket: the rest wait in the kernel's backlog,
    // holding no descriptor of the daemon's (each socket has its own, so a flood on the Docker
    // socket leaves weft's own door open).
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = slots.clone().acquire_owned() => p.expect("never closed"),
        };
        tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => {
                let (stream, _) = match a {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let api = api.clone();
                let mut stop = stop.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let svc = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(CLIENT_TIMEOUT)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!("connection: {e}");
                            }
                        }
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                        }
                    }
                });
            }
        }
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_filters() {
        assert_eq!(strip_version("/v1.50/networks").unwrap(), "/networks");
        assert_eq!(strip_version("/v1.41/networks").unwrap(), "/networks");
        assert_eq!(strip_version("/networks").unwrap(), "/networks");
        assert_eq!(
            strip_version("/v1.51/networks").unwrap_err().to_string(),
            "client version 1.51 is too new. Maximum supported API version is 1.50"
        );
        assert!(strip_version("/v1.12/networks")
            .unwrap_err()
            .to_string()
            .contains("too old"));
        let mut q = BTreeMap::new();
        q.insert(
            "filters".to_string(),
            r#"{"name":{"dev":true},"type":["custom"]}"#.to_string(),
        );
        let f = parse_filters(&q).unwrap();
        assert_eq!(f.filters["name"], vec!["dev"]);
        assert_eq!(f.filters["type"], vec!["custom"]);
        q.insert("filters".into(), "[1]".into());
        assert!(parse_filters(&q).is_err());
    }
}
