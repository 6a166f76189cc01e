//! A hostile IPAM for weft's tests. The pool options (`--ipam-opt`) choose what it does:
//! `hostile=<what>` makes dynamic address requests misbehave (memory bomb, endless loop, an
//! address outside the pool, the wrong prefix length, one handed out twice, the gateway, the
//! network or broadcast address, a huge answer) or the pool request return another subnet
//! (`wrong-pool`) or sleep (`pool-sleep`);
//! without `--subnet`, `pool=<cidr>` is the pool it picks (0.0.0.0/0, loopback, another
//! network's subnet…), and `http-pool=<host:port>` fetches the pool over wasi:http from
//! `http://<host:port>/pool`, as an external IPAM asks NetBox. Static requests (the
//! gateway) behave, so a network can be made and the misbehaviour meets a connect.
//!
//! `http-attack=<what>` (with `http-target=<host:port>`, `n=<count>`) makes request-pool
//! attack the host through wasi:http first: `leak` puts its `token` config value everywhere
//! a string can leave (an authority, userinfo, log lines at every level, stderr, its error);
//! `flood` starts `n` requests at once and waits on them; `log-flood` makes `n` requests one
//! after another that fail (to a port nobody listens on, or with no path); `drain` reads the
//! answer's body to its end (then the pool comes from `pool=`) or to the first error.

use weft_plugin_sdk as sdk;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "ipam-plugin",
    with: { "weft:plugin/types@0.2.0": weft_plugin_sdk::types },
});

use exports::weft::plugin::ipam::{
    AddressRequest, AddressSpaces, Guest as Ipam, IpamCapabilities, PoolRequest, PoolResponse,
};
use exports::weft::plugin::plugin::{Guest as Plugin, PluginMetadata, RequestedGrants};
use sdk::types::{Error, IpAddress, IpPrefix};
use weft::plugin::{config, kv, log};

struct Hostile;

impl Plugin for Hostile {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "hostile-ipam".into(),
            version: "0.0.1".into(),
            description: "misbehaves on purpose (tests)".into(),
            grants: RequestedGrants {
                link_prefix: None,
                parents: vec![],
                sysctls: vec![],
                http_hosts: vec![],
                memory_mib: None,
                gateways: vec![],
                vni_ranges: vec![],
                vxlan_ports: vec![],
                macvlan_passthru: false,
                config_keys: vec![],
            },
        }
    }
}

fn mode(pool_id: &str) -> Result<String, Error> {
    Ok(kv::get(&format!("mode/{pool_id}"))?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default())
}

/// How many times request-pool was called for a pool.
fn asked(pool_id: &str) -> Result<u32, Error> {
    Ok(kv::get(&format!("asked/{pool_id}"))?
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(0))
}

fn subnet(pool_id: &str) -> IpPrefix {
    sdk::parse_prefix(&pool_id.trim_start_matches("hx-").replace('_', "/")).unwrap()
}

/// The next address after the last one handed out (from .10), within the pool.
fn next(subnet: &IpPrefix) -> Result<IpPrefix, Error> {
    let (base, _) = sdk::span(subnet);
    let n: u128 = kv::get("next")?
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(10);
    kv::put("next", (n + 1).to_string().as_bytes())?;
    Ok(sdk::prefix(
        sdk::from_u128(base + n, false),
        subnet.prefix_len,
    ))
}

impl Ipam for Hostile {
    fn capabilities() -> IpamCapabilities {
        IpamCapabilities {
            requires_mac_address: false,
            // So a reboot test sees its pools asked for again (counted in `asked/<pool>`).
            requires_request_replay: true,
        }
    }

    fn default_address_spaces() -> Result<AddressSpaces, Error> {
        Ok(AddressSpaces {
            local: "L".into(),
            global: "G".into(),
        })
    }

    fn request_pool(req: PoolRequest) -> Result<PoolResponse, Error> {
        if let Some(a) = sdk::option(&req.options, "http-attack") {
            attack(a, &req.options)?;
        }
        let m = sdk::option(&req.options, "hostile")
            .unwrap_or("")
            .to_string();
        if m == "pool-sleep" {
            // A WASI sleep the epoch deadline cannot interrupt; the log line says the call
            // is under way.
            log::log(log::Level::Warn, "request-pool: sleeping");
            std::thread::sleep(std::time::Duration::from_secs(3600));
            return Err(sdk::internal("LEAK: slept an hour"));
        }
        let pool = match (
            &req.pool,
            sdk::option(&req.options, "pool"),
            sdk::option(&req.options, "http-pool"),
        ) {
            (Some(p), _, _) => *p,
            (None, Some(p), _) => {
                sdk::parse_prefix(p).ok_or_else(|| sdk::invalid("pool=<cidr>"))?
            }
            (None, None, Some(authority)) => {
                let r = sdk::http::get(authority, "/pool")
                    .map_err(|e| sdk::internal(format!("asking {authority} for a pool: {e}")))?;
                let text = String::from_utf8_lossy(&r.body).trim().to_string();
                if r.status != 200 {
                    return Err(sdk::internal(format!(
                        "{authority} answered {}: {text}",
                        r.status
                    )));
                }
                sdk::parse_prefix(&text).ok_or_else(|| {
                    sdk::internal(format!("{authority} sent {text:?}, not a subnet"))
                })?
            }
            (None, None, None) => return Err(sdk::invalid("give --subnet, pool= or http-pool=")),
        };
        let id = format!("hx-{}", sdk::fmt_prefix(&pool).replace('/', "_"));
        kv::put(&format!("mode/{id}"), m.as_bytes())?;
        let asked = asked(&id)? + 1;
        kv::put(&format!("asked/{id}"), asked.to_string().as_bytes())?;
        let pool = match m.as_str() {
            "wrong-pool" => sdk::parse_prefix("192.0.2.0/24").unwrap(),
            _ => pool,
        };
        let data = if m == "big-data" {
            // An answer as large as its memory allows: the engine must not take it whole.
            (0..200_000)
                .map(|i| (format!("k{i}"), "v".repeat(64)))
                .collect()
        } else {
            vec![]
        };
        Ok(PoolResponse {
            pool_id: id,
            pool,
            data,
        })
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        kv::delete(&format!("mode/{pool_id}"))?;
        Ok(())
    }

    fn request_address(req: AddressRequest) -> Result<IpPrefix, Error> {
        let m = mode(&req.pool_id)?;
        let subnet = subnet(&req.pool_id);
        if let Some(p) = &req.preferred {
            return Ok(sdk::prefix(sdk::ip(p), subnet.prefix_len));
        }
        let (base, size) = sdk::span(&subnet);
        let at = |n: u128| sdk::prefix(sdk::from_u128(n, false), subnet.prefix_len);
        match m.as_str() {
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    core::hint::black_box(&hoard);
                }
            }
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = x.wrapping_mul(31).wrapping_add(7);
                    core::hint::black_box(x);
                }
            }
            "outside" => Ok(sdk::prefix(
                "203.0.113.7".parse().unwrap(),
                subnet.prefix_len,
            )),
            "wrong-len" => {
                let mut a = next(&subnet)?;
                a.prefix_len = 1;
                Ok(a)
            }
            // The same address every time.
            "dup" => Ok(at(base + 10)),
            // .1: the network's gateway.
            "gateway" => Ok(at(base + 1)),
            "network-address" => Ok(at(base)),
            "broadcast" => Ok(at(base + size - 1)),
            "count" => Err(sdk::not_found(format!(
                "pool {} was asked for {} times",
                req.pool_id,
                asked(&req.pool_id)?
            ))),
            // Who asks: the context, returned as the error a user sees.
            "context" => {
                let c = req.context.ok_or_else(|| sdk::invalid("no context"))?;
                Err(sdk::not_found(format!(
                    "context: sandbox {} id {} hostname {:?} labels {:?}",
                    c.sandbox_name,
                    sdk::short(&c.sandbox_id, 12),
                    c.hostname,
                    c.labels
                )))
            }
            _ => next(&subnet),
        }
    }

    fn release_address(_pool_id: String, _address: IpAddress) -> Result<(), Error> {
        Ok(())
    }
}

/// A GET of `path` on `authority` (no path at all when `path` is None), sent but not awaited.
fn start(
    authority: &str,
    path: Option<&str>,
) -> Result<wasip2::http::types::FutureIncomingResponse, String> {
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|_| "scheme".to_string())?;
    req.set_authority(Some(authority))
        .map_err(|_| format!("authority {authority}"))?;
    if let Some(p) = path {
        req.set_path_with_query(Some(p))
            .map_err(|_| format!("path {p}"))?;
    }
    wasip2::http::outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))
}

/// Wait for a response; its error, if any, as text.
fn wait(
    f: &wasip2::http::types::FutureIncomingResponse,
) -> Result<wasip2::http::types::IncomingResponse, String> {
    f.subscribe().block();
    match f.get() {
        Some(Ok(Ok(r))) => Ok(r),
        Some(Ok(Err(e))) => Err(format!("{e:?}")),
        _ => Err("no response".into()),
    }
}

fn attack(what: &str, opts: &sdk::types::Options) -> Result<(), Error> {
    let target = sdk::option(opts, "http-target").unwrap_or("127.0.0.1:1");
    let n: u32 = sdk::option(opts, "n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    match what {
        "leak" => {
            let token = config::get("token").unwrap_or_default();
            for l in [
                log::Level::Trace,
                log::Level::Debug,
                log::Level::Info,
                log::Level::Warn,
                log::Level::Error,
            ] {
                log::log(l, &format!("my token is {token}"));
            }
            eprintln!("stderr: my token is {token}");
            let mut errs = vec![];
            for a in [
                format!("{token}:1"),
                token.clone(),
                format!("user:{token}@{target}"),
                format!("{target}.{token}"),
            ] {
                if let Err(e) = start(&a, Some("/")).and_then(|f| wait(&f)) {
                    errs.push(e);
                }
            }
            // The token where it belongs: in a header to the granted host.
            let _ = sdk::http::request(
                false,
                "GET",
                target,
                "/",
                &[("authorization", &format!("Token {token}"))],
                None,
            );
            Err(sdk::internal(format!(
                "leak: token {token} ({})",
                errs.join("; ")
            )))
        }
        "flood" => {
            let mut started = vec![];
            let mut refused = 0;
            for _ in 0..n {
                match start(target, Some("/")) {
                    Ok(f) => started.push(f),
                    Err(_) => refused += 1,
                }
            }
            let mut failed = 0;
            for f in &started {
                if wait(f).is_err() {
                    failed += 1;
                }
            }
            Err(sdk::internal(format!(
                "flood: {} started, {failed} failed, {refused} refused at once",
                started.len()
            )))
        }
        "log-flood" => {
            let mut failed = 0;
            for i in 0..n {
                let path = if i % 2 == 0 { Some("/") } else { None };
                if start(target, path).and_then(|f| wait(&f)).is_err() {
                    failed += 1;
                }
            }
            Err(sdk::internal(format!("log-flood: {failed} of {n} failed")))
        }
        "drain" => {
            let f = start(target, Some("/")).map_err(sdk::internal)?;
            let r = wait(&f).map_err(|e| sdk::internal(format!("drain: {e}")))?;
            let body = r.consume().map_err(|_| sdk::internal("drain: no body"))?;
            let stream = body
                .stream()
                .map_err(|_| sdk::internal("drain: no body stream"))?;
            let mut got: u64 = 0;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => got += chunk.len() as u64,
                    Err(wasip2::io::streams::StreamError::Closed) => return Ok(()),
                    Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                        return Err(sdk::internal(format!(
                            "drain: read {got} bytes, then: {}",
                            e.to_debug_string()
                        )))
                    }
                }
            }
        }
        other => Err(sdk::invalid(format!("http-attack={other}?"))),
    }
}

export!(Hostile);
