//! A host-local IPAM, as a weft plugin, with CNI host-local's semantics: a range with a
//! start and an end inside the subnet, reserved addresses never handed out, and sequential
//! allocation that goes on after the last address it gave and wraps around. State lives in
//! the plugin's kv space (so it commits with the endpoint that uses the address); like CNI's
//! host-local, each address in use records the sandbox id that holds it.
//!
//! IPAM options (`--ipam-opt`): `range-start`, `range-end`, `exclude` (comma-separated).

use std::net::IpAddr;

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
use weft::plugin::kv;

struct HostLocal;

/// A pool as stored: "subnet start end excluded…".
struct Pool {
    subnet: IpPrefix,
    v6: bool,
    start: u128,
    end: u128,
    exclude: Vec<u128>,
}

fn load(pool_id: &str) -> Result<Pool, Error> {
    let raw = kv::get(&format!("pool/{pool_id}"))?
        .ok_or_else(|| sdk::not_found(format!("pool {pool_id} is unknown")))?;
    let s = String::from_utf8_lossy(&raw).into_owned();
    let mut it = s.split_whitespace();
    let subnet = it
        .next()
        .and_then(sdk::parse_prefix)
        .ok_or_else(|| sdk::internal("corrupt pool record"))?;
    let v6 = sdk::ip(&subnet.address).is_ipv6();
    let num = |x: Option<&str>| {
        x.and_then(|v| v.parse::<u128>().ok())
            .ok_or_else(|| sdk::internal("corrupt pool record"))
    };
    let start = num(it.next())?;
    let end = num(it.next())?;
    let exclude = it.filter_map(|v| v.parse().ok()).collect();
    Ok(Pool {
        subnet,
        v6,
        start,
        end,
        exclude,
    })
}

fn used_key(pool_id: &str, a: u128) -> String {
    format!("used/{pool_id}/{a}")
}

/// Who holds an address: the sandbox id, or "network" for a gateway or aux address.
fn holder(req: &AddressRequest) -> String {
    match &req.context {
        Some(c) => c.sandbox_id.clone(),
        None => "network".into(),
    }
}

fn parse_ip(v: &str, what: &str) -> Result<IpAddr, Error> {
    v.trim()
        .parse()
        .map_err(|_| sdk::invalid(format!("{what} {v:?} is not an IP address")))
}

impl Plugin for HostLocal {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "host-local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "CNI host-local semantics: a range with start and end, reserved addresses, sequential allocation with wrap-around".into(),
            grants: RequestedGrants {
                link_prefix: None,
                parents: vec![],
                sysctls: vec![],
                http_hosts: vec![],
                memory_mib: Some(16),
                gateways: vec![],
                vni_ranges: vec![],
                vxlan_ports: vec![],
                macvlan_passthru: false,
                config_keys: vec![],
            },
        }
    }
}

impl Ipam for HostLocal {
    fn capabilities() -> IpamCapabilities {
        IpamCapabilities {
            requires_mac_address: false,
            requires_request_replay: false,
        }
    }

    fn default_address_spaces() -> Result<AddressSpaces, Error> {
        Ok(AddressSpaces {
            local: "HostLocal".into(),
            global: "HostLocalGlobal".into(),
        })
    }

    fn request_pool(req: PoolRequest) -> Result<PoolResponse, Error> {
        let subnet = req.pool.ok_or_else(|| {
            sdk::invalid("host-local allocates from a subnet you give: add --subnet")
        })?;
        let (base, size) = sdk::span(&subnet);
        let v6 = sdk::ip(&subnet.address).is_ipv6();
        // Network address and (IPv4) broadcast are never handed out.
        let (mut start, mut end) = if size <= 2 {
            (base, base + size - 1)
        } else {
            (base + 1, base + size - if v6 { 1 } else { 2 })
        };
        if let Some(r) = &req.sub_pool {
            let (rb, rs) = sdk::span(r);
            start = start.max(rb);
            end = end.min(rb + rs - 1);
        }
        if let Some(s) = sdk::option(&req.options, "range-start") {
            start = sdk::to_u128(parse_ip(s, "range-start")?);
        }
        if let Some(e) = sdk::option(&req.options, "range-end") {
            end = sdk::to_u128(parse_ip(e, "range-end")?);
        }
        if start > end || start < base || end >= base + size {
            return Err(sdk::invalid(format!(
                "range {}–{} is not inside {}",
                sdk::from_u128(start, v6),
                sdk::from_u128(end, v6),
                sdk::fmt_prefix(&subnet)
            )));
        }
        let mut exclude = Vec::new();
        if let Some(list) = sdk::option(&req.options, "exclude") {
            for a in list.split(',').filter(|s| !s.trim().is_empty()) {
                exclude.push(sdk::to_u128(parse_ip(a, "exclude")?));
            }
        }
        let canonical = sdk::prefix(sdk::from_u128(base, v6), subnet.prefix_len);
        let pool_id = format!("hl-{}", sdk::fmt_prefix(&canonical).replace('/', "_"));
        let key = format!("pool/{pool_id}");
        let mut rec = format!("{} {start} {end}", sdk::fmt_prefix(&canonical));
        for x in &exclude {
            rec.push_str(&format!(" {x}"));
        }
        if !kv::compare_and_swap(&key, None, Some(rec.as_bytes()))? {
            return Err(sdk::conflict(format!(
                "{} is already a host-local pool",
                sdk::fmt_prefix(&canonical)
            )));
        }
        Ok(PoolResponse {
            pool_id,
            pool: canonical,
            data: vec![],
        })
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        for (k, _) in kv::list_prefix(&format!("used/{pool_id}/"))? {
            kv::delete(&k)?;
        }
        kv::delete(&format!("last/{pool_id}"))?;
        kv::delete(&format!("pool/{pool_id}"))?;
        Ok(())
    }

    fn request_address(req: AddressRequest) -> Result<IpPrefix, Error> {
        let p = load(&req.pool_id)?;
        let len = p.subnet.prefix_len;
        if let Some(want) = &req.preferred {
            let ip = sdk::ip(want);
            if !sdk::contains(&p.subnet, ip) {
                return Err(sdk::invalid(format!(
                    "{ip} is not in {}",
                    sdk::fmt_prefix(&p.subnet)
                )));
            }
            let n = sdk::to_u128(ip);
            if !kv::compare_and_swap(
                &used_key(&req.pool_id, n),
                None,
                Some(holder(&req).as_bytes()),
            )? {
                return Err(sdk::conflict(format!("{ip} is already allocated")));
            }
            return Ok(sdk::prefix(ip, len));
        }
        // Sequential: from after the last address handed out, wrapping to the start.
        let last: Option<u128> = kv::get(&format!("last/{}", req.pool_id))?
            .and_then(|v| String::from_utf8_lossy(&v).parse().ok());
        let first = match last {
            Some(l) if l >= p.start && l < p.end => l + 1,
            _ => p.start,
        };
        let count = p.end - p.start + 1;
        for i in 0..count {
            let n = p.start + (first - p.start + i) % count;
            if p.exclude.contains(&n) {
                continue;
            }
            if kv::compare_and_swap(
                &used_key(&req.pool_id, n),
                None,
                Some(holder(&req).as_bytes()),
            )? {
                kv::put(&format!("last/{}", req.pool_id), n.to_string().as_bytes())?;
                return Ok(sdk::prefix(sdk::from_u128(n, p.v6), len));
            }
        }
        Err(sdk::exhausted(format!(
            "no free address left in {}",
            sdk::fmt_prefix(&p.subnet)
        )))
    }

    fn release_address(pool_id: String, address: IpAddress) -> Result<(), Error> {
        kv::delete(&used_key(&pool_id, sdk::to_u128(sdk::ip(&address))))?;
        Ok(())
    }
}

export!(HostLocal);
