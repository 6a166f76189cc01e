//! NetBox as weft's IPAM: an external-IPAM plugin (the Infoblox driver's kind of job) that
//! runs sandboxed and reaches only the NetBox it was granted, over wasi:http.
//!
//! - `request-pool`: the NetBox prefix for the requested subnet (found, or created and then
//!   owned by weft), or a child of a parent prefix from NetBox's `available-prefixes` when no
//!   subnet is given; `--ip-range` becomes a NetBox IP range that dynamic allocation draws from.
//! - `request-address`: NetBox's next free address (`available-ips`) or the one asked for;
//!   NetBox records who holds it: `description` names the sandbox (name and id), the pool and
//!   the host, `dns_name` the sandbox's host name.
//! - `release-*`: deletes the addresses; a prefix or range only when weft created it.
//! - After weft restarts it requests every pool and address again (`requires-request-replay`):
//!   the plugin's kv records, which commit with weft's own, are the truth. Addresses NetBox lost
//!   are created again; addresses marked as this weft's that weft no longer holds (a crash
//!   between NetBox's answer and weft's commit) are deleted.
//!
//! Configuration (`weft plugin install … --config key=value`):
//! `url` (http://host:port, required; grant its authority with `--grant http=host:port`),
//! `token` (required, a secret: `--config token=@FILE`; a v2 `nbt_…` token or a v1 token),
//! `parent` / `parent6` (prefixes to carve networks from when `--subnet` is not given),
//! `prefix-length` (24; 64 for IPv6), `host` (this host's name), `owner` (the marker that
//! starts every description this weft writes, `[weft@HOST]` or `[weft]` by default: weft
//! hosts sharing one NetBox need distinct ones, as reconciling deletes stray addresses that
//! carry its own), `dns-zone` (appended to `dns_name`).
//! IPAM options (`--ipam-opt`): `parent`, `prefix-length`, as the config keys, per network.

use std::net::IpAddr;

use serde_json::{json, Value};
use weft_plugin_sdk as sdk;

wit_bindgen::generate!({
    path: "../../wit",
    world: "ipam-plugin",
    with: { "weft:plugin/types@0.2.0": weft_plugin_sdk::types },
});

use exports::weft::plugin::ipam::{
    AddressRequest, AddressSpaces, Guest as Ipam, IpamCapabilities, PoolRequest, PoolResponse,
};
use exports::weft::plugin::plugin::{Guest as Plugin, PluginMetadata, RequestedGrants};
use sdk::types::{Error, IpAddress, IpPrefix};
use weft::plugin::{config, kv, log};

struct NetBox;

/// Where NetBox is and how to speak to it.
struct Conn {
    tls: bool,
    authority: String,
    auth: String,
    owner: String,
}

fn conn() -> Result<Conn, Error> {
    let url = config::get("url").ok_or_else(|| {
        sdk::invalid("the netbox plugin needs NetBox's address: install it with --config url=http://HOST:PORT")
    })?;
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(sdk::invalid(format!(
            "url {url:?} must start with http:// or https://"
        )));
    };
    let authority = rest.trim_end_matches('/').to_string();
    if authority.is_empty() || authority.contains('/') {
        return Err(sdk::invalid(format!(
            "url {url:?} must be http://HOST:PORT, without a path"
        )));
    }
    let token = config::get("token").ok_or_else(|| {
        sdk::invalid("the netbox plugin needs an API token: install it with --config token=@FILE")
    })?;
    let token = token.trim();
    // v2 tokens (nbt_KEY.SECRET) are Bearer tokens; v1 tokens use the Token keyword.
    let auth = if token.starts_with("nbt_") {
        format!("Bearer {token}")
    } else {
        format!("Token {token}")
    };
    Ok(Conn {
        tls,
        authority,
        auth,
        // Which weft this is, in every description it writes: reconciling deletes only
        // addresses with its own marker, so weft hosts sharing a NetBox need distinct ones.
        owner: config::get("owner").unwrap_or_else(|| match config::get("host") {
            Some(h) => format!("weft@{h}"),
            None => "weft".into(),
        }),
    })
}

/// The first line of a NetBox answer, short: for error messages.
fn gist(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    s.trim().to_string()
}

impl Conn {
    fn marker(&self) -> String {
        format!("[{}]", self.owner)
    }

    /// One call; `Ok((status, body))` for any answer, an error naming NetBox when none came.
    fn call(&self, verb: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), Error> {
        let data = body.map(|b| b.to_string());
        let mut headers = vec![
            ("authorization", self.auth.as_str()),
            ("accept", "application/json"),
        ];
        if data.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let r = sdk::http::request(
            self.tls,
            verb,
            &self.authority,
            path,
            &headers,
            data.as_deref().map(str::as_bytes),
        )
        .map_err(|e| {
            sdk::internal(format!(
                "NetBox at {} cannot be reached ({verb} {}): {e}",
                self.authority,
                path.split('?').next().unwrap_or(path)
            ))
        })?;
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(gist(&r.body)))
        };
        match r.status {
            401 | 403 => Err(Error::Denied(format!(
                "NetBox at {} refused the API token ({}): give a valid one with --config token=@FILE",
                self.authority, r.status
            ))),
            s if s >= 500 => Err(sdk::internal(format!(
                "NetBox at {} failed ({s}) on {verb} {}: {}",
                self.authority,
                path.split('?').next().unwrap_or(path),
                gist(v.to_string().as_bytes())
            ))),
            s => Ok((s, v)),
        }
    }

    /// A call that must answer `want`; anything else becomes an error about `what`.
    fn expect(
        &self,
        verb: &str,
        path: &str,
        body: Option<&Value>,
        want: u16,
        what: &str,
    ) -> Result<Value, Error> {
        let (s, v) = self.call(verb, path, body)?;
        if s == want {
            return Ok(v);
        }
        Err(self.refusal(s, &v, what))
    }

    fn refusal(&self, status: u16, v: &Value, what: &str) -> Error {
        let detail = match v.get("detail").and_then(Value::as_str) {
            Some(d) => d.to_string(),
            None => gist(v.to_string().as_bytes()),
        };
        let msg = format!("NetBox refused to {what} ({status}): {detail}");
        match status {
            404 => sdk::not_found(msg),
            409 => sdk::exhausted(msg),
            400 if detail.contains("Duplicate") => sdk::conflict(msg),
            400 => sdk::invalid(msg),
            _ => sdk::internal(msg),
        }
    }

    /// The id of the prefix `cidr`, if NetBox has it.
    fn find_prefix(&self, cidr: &str) -> Result<Option<u64>, Error> {
        let v = self.expect(
            "GET",
            &format!("/api/ipam/prefixes/?prefix={cidr}&limit=2&brief=1"),
            None,
            200,
            &format!("look up prefix {cidr}"),
        )?;
        Ok(v["results"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|p| p["id"].as_u64()))
    }

    fn exists(&self, kind: &str, id: u64) -> Result<bool, Error> {
        let (s, v) = self.call("GET", &format!("/api/ipam/{kind}/{id}/?brief=1"), None)?;
        match s {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refusal(s, &v, &format!("look up {kind} {id}"))),
        }
    }

    fn delete(&self, kind: &str, id: u64) -> Result<(), Error> {
        let (s, v) = self.call("DELETE", &format!("/api/ipam/{kind}/{id}/"), None)?;
        match s {
            204 | 404 => Ok(()),
            _ => Err(self.refusal(s, &v, &format!("delete {kind} {id}"))),
        }
    }
}

/// A pool as the plugin's kv keeps it.
struct Pool {
    cidr: String,
    subnet: IpPrefix,
    prefix_id: u64,
    /// weft created the prefix (and so deletes it with the pool).
    created: bool,
    /// The IP range `--ip-range` became (weft's own).
    range_id: Option<u64>,
}

impl Pool {
    fn to_json(&self) -> Value {
        json!({"cidr": self.cidr, "prefix": self.prefix_id, "created": self.created, "range": self.range_id})
    }

    fn from_json(v: &Value) -> Option<Pool> {
        let cidr = v["cidr"].as_str()?.to_string();
        Some(Pool {
            subnet: sdk::parse_prefix(&cidr)?,
            cidr,
            prefix_id: v["prefix"].as_u64()?,
            created: v["created"].as_bool()?,
            range_id: v["range"].as_u64(),
        })
    }
}

fn pool_key(pool_id: &str) -> String {
    format!("pool/{pool_id}")
}
fn addr_key(pool_id: &str, ip: IpAddr) -> String {
    format!("addr/{pool_id}/{ip}")
}

fn load_json(key: &str) -> Result<Option<Value>, Error> {
    Ok(match kv::get(key)? {
        Some(raw) => Some(
            serde_json::from_slice(&raw)
                .map_err(|_| sdk::internal(format!("the plugin's record {key} is corrupt")))?,
        ),
        None => None,
    })
}

fn save_json(key: &str, v: &Value) -> Result<(), Error> {
    kv::put(key, v.to_string().as_bytes())
}

fn load_pool(pool_id: &str) -> Result<Pool, Error> {
    let v = load_json(&pool_key(pool_id))?
        .ok_or_else(|| sdk::not_found(format!("pool {pool_id} is unknown")))?;
    Pool::from_json(&v)
        .ok_or_else(|| sdk::internal(format!("the record of pool {pool_id} is corrupt")))
}

/// "10.88.0.0/24", canonical (host bits cleared).
fn canonical(p: &IpPrefix) -> IpPrefix {
    let (base, _) = sdk::span(p);
    let v6 = sdk::ip(&p.address).is_ipv6();
    sdk::prefix(sdk::from_u128(base, v6), p.prefix_len)
}

fn parse_addr(v: &Value) -> Option<(IpAddr, u8)> {
    let s = v["address"].as_str()?;
    let (a, l) = s.split_once('/')?;
    Some((a.parse().ok()?, l.parse().ok()?))
}

/// A label NetBox accepts as `dns_name`: letters, digits, `-`, `_`, dots between labels.
fn dns_label(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.trim_matches('.').chars().take(200).collect()
}

/// Who holds an address, as kv keeps it, and what NetBox records.
struct Holder {
    id: String,
    description: String,
    dns_name: String,
}

fn holder(c: &Conn, pool: &Pool, req: &AddressRequest) -> Holder {
    match &req.context {
        Some(ctx) => {
            let name = ctx.hostname.as_deref().unwrap_or(&ctx.sandbox_name);
            let mut dns = dns_label(name);
            if let Some(zone) = config::get("dns-zone") {
                dns = format!("{dns}.{}", zone.trim_matches('.'));
            }
            Holder {
                id: ctx.sandbox_id.clone(),
                description: format!(
                    "{} sandbox {} ({}) in {}",
                    c.marker(),
                    ctx.sandbox_name,
                    sdk::short(&ctx.sandbox_id, 12),
                    pool.cidr
                ),
                dns_name: dns,
            }
        }
        None => Holder {
            id: "network".into(),
            description: format!("{} network address of {}", c.marker(), pool.cidr),
            dns_name: String::new(),
        },
    }
}

fn ip_body(address: Option<String>, h: &Holder) -> Value {
    let mut b = json!({"status": "active", "description": h.description, "dns_name": h.dns_name});
    if let Some(a) = address {
        b["address"] = Value::String(a);
    }
    b
}

/// Make NetBox agree with the plugin's records for one pool: create the addresses it lost,
/// delete the ones marked as ours that weft no longer holds.
fn reconcile(c: &Conn, pool_id: &str, pool: &Pool) -> Result<(), Error> {
    let listed = c.expect(
        "GET",
        &format!("/api/ipam/ip-addresses/?parent={}&limit=1000", pool.cidr),
        None,
        200,
        &format!("list the addresses in {}", pool.cidr),
    )?;
    let listed = listed["results"].as_array().cloned().unwrap_or_default();
    let mut kept = std::collections::HashSet::new();
    let (mut created, mut deleted) = (0, 0);
    for (key, raw) in kv::list_prefix(&format!("addr/{pool_id}/"))? {
        let Ok(mut rec) = serde_json::from_slice::<Value>(&raw) else {
            continue;
        };
        let id = rec["id"].as_u64().unwrap_or(0);
        let ip = key.rsplit('/').next().unwrap_or_default().to_string();
        let present = listed.iter().any(|a| {
            a["id"].as_u64() == Some(id)
                && parse_addr(a).map(|(x, _)| x.to_string()) == Some(ip.clone())
        });
        if present {
            kept.insert(id);
            continue;
        }
        let h = Holder {
            id: rec["holder"].as_str().unwrap_or_default().into(),
            description: rec["description"].as_str().unwrap_or_default().into(),
            dns_name: rec["dns_name"].as_str().unwrap_or_default().into(),
        };
        let body = ip_body(Some(format!("{ip}/{}", pool.subnet.prefix_len)), &h);
        match c.expect(
            "POST",
            "/api/ipam/ip-addresses/",
            Some(&body),
            201,
            &format!("record {ip} again"),
        ) {
            Ok(v) => {
                let nid = v["id"].as_u64().unwrap_or(0);
                rec["id"] = json!(nid);
                save_json(&key, &rec)?;
                kept.insert(nid);
                created += 1;
            }
            Err(e) => log::log(
                log::Level::Warn,
                &format!("{ip} could not be recorded in NetBox again: {e:?}"),
            ),
        }
    }
    let ours = format!("{} ", c.marker());
    for a in &listed {
        let Some(id) = a["id"].as_u64() else { continue };
        let desc = a["description"].as_str().unwrap_or_default();
        if desc.starts_with(&ours)
            && desc.contains(&format!(" {}", pool.cidr))
            && !kept.contains(&id)
        {
            c.delete("ip-addresses", id)?;
            deleted += 1;
        }
    }
    if created + deleted > 0 {
        log::log(
            log::Level::Info,
            &format!(
                "pool {}: {created} address(es) recorded in NetBox again, {deleted} no longer held by weft deleted",
                pool.cidr
            ),
        );
    }
    Ok(())
}

fn usable_bounds(subnet: &IpPrefix) -> (u128, u128) {
    let (base, size) = sdk::span(subnet);
    let v6 = sdk::ip(&subnet.address).is_ipv6();
    if size <= 2 {
        (base, base + size - 1)
    } else if v6 {
        (base + 1, base + size - 1)
    } else {
        (base + 1, base + size - 2)
    }
}

/// The NetBox IP range for `--ip-range`, within the subnet's usable addresses.
fn make_range(c: &Conn, subnet: &IpPrefix, sub: &IpPrefix) -> Result<u64, Error> {
    let v6 = sdk::ip(&subnet.address).is_ipv6();
    let (lo, hi) = usable_bounds(subnet);
    let (rb, rs) = sdk::span(sub);
    let (start, end) = (rb.max(lo), (rb + rs - 1).min(hi));
    if start > end {
        return Err(sdk::invalid(format!(
            "the ip range {} has no usable address in {}",
            sdk::fmt_prefix(sub),
            sdk::fmt_prefix(subnet)
        )));
    }
    let len = subnet.prefix_len;
    let body = json!({
        "start_address": format!("{}/{len}", sdk::from_u128(start, v6)),
        "end_address": format!("{}/{len}", sdk::from_u128(end, v6)),
        "status": "active",
        "description": format!("{} ip range of {}", c.marker(), sdk::fmt_prefix(subnet)),
    });
    let v = c.expect(
        "POST",
        "/api/ipam/ip-ranges/",
        Some(&body),
        201,
        "create the ip range",
    )?;
    v["id"]
        .as_u64()
        .ok_or_else(|| sdk::internal("NetBox's answer has no range id"))
}

fn option_or_config(req: &PoolRequest, key: &str) -> Option<String> {
    sdk::option(&req.options, key)
        .map(str::to_string)
        .or_else(|| config::get(key))
}

impl Plugin for NetBox {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "netbox".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "External IPAM: pools and addresses live in NetBox (its REST API over wasi:http)"
                    .into(),
            grants: RequestedGrants {
                link_prefix: None,
                parents: vec![],
                sysctls: vec![],
                http_hosts: config::get("url")
                    .and_then(|u| {
                        u.split_once("://")
                            .map(|(_, r)| r.trim_end_matches('/').to_string())
                    })
                    .into_iter()
                    .collect(),
                memory_mib: Some(32),
                gateways: vec![],
                vni_ranges: vec![],
                vxlan_ports: vec![],
                macvlan_passthru: false,
                config_keys: [
                    "url",
                    "token",
                    "parent",
                    "parent6",
                    "prefix-length",
                    "owner",
                    "host",
                    "dns-zone",
                ]
                .map(String::from)
                .to_vec(),
            },
        }
    }
}

impl Ipam for NetBox {
    fn capabilities() -> IpamCapabilities {
        IpamCapabilities {
            requires_mac_address: false,
            requires_request_replay: true,
        }
    }

    fn default_address_spaces() -> Result<AddressSpaces, Error> {
        Ok(AddressSpaces {
            local: "NetBoxLocal".into(),
            global: "NetBoxGlobal".into(),
        })
    }

    fn request_pool(req: PoolRequest) -> Result<PoolResponse, Error> {
        let c = conn()?;
        let (subnet, prefix_id, created) = match &req.pool {
            Some(p) => {
                let subnet = canonical(p);
                let cidr = sdk::fmt_prefix(&subnet);
                match c.find_prefix(&cidr)? {
                    Some(id) => (subnet, id, false),
                    None => {
                        let body = json!({"prefix": cidr, "status": "active",
                            "description": format!("{} network pool", c.marker())});
                        let v = c.expect(
                            "POST",
                            "/api/ipam/prefixes/",
                            Some(&body),
                            201,
                            &format!("create prefix {cidr}"),
                        )?;
                        let id = v["id"]
                            .as_u64()
                            .ok_or_else(|| sdk::internal("NetBox's answer has no prefix id"))?;
                        (subnet, id, true)
                    }
                }
            }
            None => {
                let key = if req.v6 { "parent6" } else { "parent" };
                let parent = option_or_config(&req, key).ok_or_else(|| {
                    sdk::invalid(format!(
                        "netbox needs a subnet: add --subnet, or give a NetBox prefix to carve one from (--ipam-opt {key}=CIDR or --config {key}=CIDR at install)"
                    ))
                })?;
                let parent_id = c.find_prefix(&parent)?.ok_or_else(|| {
                    sdk::not_found(format!(
                        "NetBox has no prefix {parent} to carve a subnet from"
                    ))
                })?;
                let len: u8 = match option_or_config(&req, "prefix-length") {
                    Some(l) => l.parse().map_err(|_| {
                        sdk::invalid(format!("prefix-length {l:?} is not a number"))
                    })?,
                    None if req.v6 => 64,
                    None => 24,
                };
                let body = json!({"prefix_length": len, "status": "active",
                    "description": format!("{} network pool", c.marker())});
                let v = c.expect(
                    "POST",
                    &format!("/api/ipam/prefixes/{parent_id}/available-prefixes/"),
                    Some(&body),
                    201,
                    &format!("carve a /{len} from {parent}"),
                )?;
                let got = v["prefix"].as_str().and_then(sdk::parse_prefix);
                let (Some(subnet), Some(id)) = (got, v["id"].as_u64()) else {
                    return Err(sdk::internal("NetBox's answer has no prefix"));
                };
                (subnet, id, true)
            }
        };
        let cidr = sdk::fmt_prefix(&subnet);
        let pool_id = format!("nb-{}", cidr.replace('/', "_").replace(':', "."));
        let key = pool_key(&pool_id);
        let existing = load_json(&key)?.as_ref().and_then(Pool::from_json);
        let mut pool = Pool {
            cidr,
            subnet,
            prefix_id,
            created: created || existing.as_ref().is_some_and(|p| p.created),
            range_id: None,
        };
        match existing {
            // Requested again after a restart: reconcile with what NetBox has now.
            Some(old) => {
                pool.range_id = match (old.range_id, &req.sub_pool) {
                    (Some(r), _) if c.exists("ip-ranges", r)? => Some(r),
                    (_, Some(sub)) => Some(make_range(&c, &subnet, sub)?),
                    _ => None,
                };
                save_json(&key, &pool.to_json())?;
                reconcile(&c, &pool_id, &pool)?;
            }
            None => {
                if let Some(sub) = &req.sub_pool {
                    pool.range_id = Some(make_range(&c, &subnet, sub)?);
                }
                save_json(&key, &pool.to_json())?;
            }
        }
        Ok(PoolResponse {
            pool_id,
            pool: subnet,
            data: vec![("netbox-prefix-id".into(), prefix_id.to_string())],
        })
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        let c = conn()?;
        let Some(pool) = load_json(&pool_key(&pool_id))?
            .as_ref()
            .and_then(Pool::from_json)
        else {
            return Ok(());
        };
        for (key, raw) in kv::list_prefix(&format!("addr/{pool_id}/"))? {
            if let Some(id) = serde_json::from_slice::<Value>(&raw)
                .ok()
                .and_then(|v| v["id"].as_u64())
            {
                c.delete("ip-addresses", id)?;
            }
            kv::delete(&key)?;
        }
        if let Some(r) = pool.range_id {
            c.delete("ip-ranges", r)?;
        }
        if pool.created {
            c.delete("prefixes", pool.prefix_id)?;
        }
        kv::delete(&pool_key(&pool_id))?;
        Ok(())
    }

    fn request_address(req: AddressRequest) -> Result<IpPrefix, Error> {
        let c = conn()?;
        let pool = load_pool(&req.pool_id)?;
        let len = pool.subnet.prefix_len;
        let h = holder(&c, &pool, &req);
        let ip = match &req.preferred {
            Some(want) => {
                let ip = sdk::ip(want);
                if !sdk::contains(&pool.subnet, ip) {
                    return Err(sdk::invalid(format!("{ip} is not in {}", pool.cidr)));
                }
                let key = addr_key(&req.pool_id, ip);
                if let Some(rec) = load_json(&key)? {
                    // Asked again for what it already holds (weft replaying after a restart).
                    if rec["holder"].as_str() == Some(h.id.as_str()) {
                        return Ok(sdk::prefix(ip, len));
                    }
                    return Err(sdk::conflict(format!("{ip} is already allocated")));
                }
                let body = ip_body(Some(format!("{ip}/{len}")), &h);
                let v = c.expect(
                    "POST",
                    "/api/ipam/ip-addresses/",
                    Some(&body),
                    201,
                    &format!("allocate {ip}"),
                )?;
                (ip, v["id"].as_u64())
            }
            None => {
                let path = match pool.range_id {
                    Some(r) => format!("/api/ipam/ip-ranges/{r}/available-ips/"),
                    None => format!("/api/ipam/prefixes/{}/available-ips/", pool.prefix_id),
                };
                let body = ip_body(None, &h);
                let v = c.expect(
                    "POST",
                    &path,
                    Some(&body),
                    201,
                    &format!("allocate an address in {}", pool.cidr),
                )?;
                let (ip, _) = parse_addr(&v)
                    .ok_or_else(|| sdk::internal("NetBox's answer has no address"))?;
                if !sdk::contains(&pool.subnet, ip) {
                    return Err(sdk::internal(format!(
                        "NetBox gave {ip}, outside {}",
                        pool.cidr
                    )));
                }
                (ip, v["id"].as_u64())
            }
        };
        let (ip, id) = (
            ip.0,
            ip.1.ok_or_else(|| sdk::internal("NetBox's answer has no id"))?,
        );
        save_json(
            &addr_key(&req.pool_id, ip),
            &json!({"id": id, "holder": h.id, "description": h.description, "dns_name": h.dns_name}),
        )?;
        Ok(sdk::prefix(ip, len))
    }

    fn release_address(pool_id: String, address: IpAddress) -> Result<(), Error> {
        let key = addr_key(&pool_id, sdk::ip(&address));
        let Some(rec) = load_json(&key)? else {
            return Ok(());
        };
        if let Some(id) = rec["id"].as_u64() {
            conn()?.delete("ip-addresses", id)?;
        }
        kv::delete(&key)?;
        Ok(())
    }
}

export!(NetBox);
