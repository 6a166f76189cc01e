//! A hostile IPAM for weft's tests: the pool option `hostile=<what>` (from --ipam-opt) makes
//! dynamic address requests misbehave (memory bomb, endless loop, an address outside the
//! pool) or the pool request return another subnet. Static requests (the gateway) behave,
//! so the network can be created and the misbehaviour meets a connect.

use weft_plugin_sdk as sdk;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "ipam-plugin",
    with: { "weft:plugin/types@0.1.0": weft_plugin_sdk::types },
});

use exports::weft::plugin::ipam::{
    AddressRequest, AddressSpaces, Guest as Ipam, IpamCapabilities, PoolRequest, PoolResponse,
};
use exports::weft::plugin::plugin::{Guest as Plugin, PluginMetadata, RequestedGrants};
use sdk::types::{Error, IpAddress, IpPrefix};
use weft::plugin::kv;

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
            },
        }
    }
}

impl Ipam for Hostile {
    fn capabilities() -> IpamCapabilities {
        IpamCapabilities {
            requires_mac_address: false,
        }
    }

    fn default_address_spaces() -> Result<AddressSpaces, Error> {
        Ok(AddressSpaces {
            local: "L".into(),
            global: "G".into(),
        })
    }

    fn request_pool(req: PoolRequest) -> Result<PoolResponse, Error> {
        let pool = req.pool.ok_or_else(|| sdk::invalid("give --subnet"))?;
        let m = sdk::option(&req.options, "hostile")
            .unwrap_or("")
            .to_string();
        let id = format!("hx-{}", sdk::fmt_prefix(&pool).replace('/', "_"));
        kv::put(&format!("mode/{id}"), m.as_bytes())?;
        let pool = if m == "wrong-pool" {
            sdk::parse_prefix("192.0.2.0/24").unwrap()
        } else {
            pool
        };
        Ok(PoolResponse {
            pool_id: id,
            pool,
            data: vec![],
        })
    }

    fn release_pool(pool_id: String) -> Result<(), Error> {
        kv::delete(&format!("mode/{pool_id}"))?;
        Ok(())
    }

    fn request_address(req: AddressRequest) -> Result<IpPrefix, Error> {
        let m = kv::get(&format!("mode/{}", req.pool_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        let subnet =
            sdk::parse_prefix(&req.pool_id.trim_start_matches("hx-").replace('_', "/")).unwrap();
        if let Some(p) = &req.preferred {
            return Ok(sdk::prefix(sdk::ip(p), subnet.prefix_len));
        }
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
            _ => {
                let (base, _) = sdk::span(&subnet);
                let n: u128 = kv::get("next")?
                    .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
                    .unwrap_or(10);
                kv::put("next", (n + 1).to_string().as_bytes())?;
                Ok(sdk::prefix(
                    sdk::from_u128(base + n, false),
                    subnet.prefix_len,
                ))
            }
        }
    }

    fn release_address(_pool_id: String, _address: IpAddress) -> Result<(), Error> {
        Ok(())
    }
}

export!(Hostile);
