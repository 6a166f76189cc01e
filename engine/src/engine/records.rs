//! Typed records over the store: load, save and resolve networks, sandboxes and endpoints;
//! the index tables kept beside them; and the ownership records ([`Owned`]) of what weft made
//! in the kernel for each of them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Endpoint, Network, NsMode, Sandbox};
use crate::net::Step;
use crate::store::{get_json, get_str, put_json, ReadTxn, Table, WriteTxn};

/// What weft made in the kernel for one object (its undo log), and which operation wrote it
/// (recovery's evidence that the operation committed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub op: String,
    pub steps: Vec<Step>,
}

/// Owner keys in [`Table::Owned`].
pub fn net_key(id: &str) -> String {
    format!("net/{id}")
}
pub fn ep_key(net: &str, ep: &str) -> String {
    format!("ep/{net}/{ep}")
}
pub fn sb_key(id: &str) -> String {
    format!("sb/{id}")
}
pub fn peer_key(ip: &std::net::IpAddr) -> String {
    format!("peer/{ip}")
}

pub fn owned(r: &(impl ReadTxn + ?Sized), key: &str) -> Result<Vec<Step>> {
    Ok(get_json::<Owned>(r, Table::Owned, key)?
        .map(|o| o.steps)
        .unwrap_or_default())
}

pub fn own(w: &mut (impl WriteTxn + ?Sized), key: &str, op: &str, steps: Vec<Step>) -> Result<()> {
    put_json(
        w,
        Table::Owned,
        key,
        &Owned {
            op: op.to_string(),
            steps,
        },
    )
}

pub fn disown(w: &mut (impl WriteTxn + ?Sized), key: &str) -> Result<()> {
    w.delete(Table::Owned, key.as_bytes())?;
    Ok(())
}

/// Has this host made the network's kernel objects? A local network's record says so; a
/// global network's record is shared by every host, so this host's ownership record does.
pub fn realized(r: &(impl ReadTxn + ?Sized), n: &Network) -> Result<bool> {
    if n.scope == crate::model::Scope::Global {
        Ok(r.get(Table::Owned, net_key(&n.id).as_bytes())?.is_some())
    } else {
        Ok(n.realized)
    }
}

pub fn load_network(r: &(impl ReadTxn + ?Sized), id: &str) -> Result<Option<Network>> {
    get_json(r, Table::Networks, id)
}

pub fn save_network(w: &mut (impl WriteTxn + ?Sized), n: &Network) -> Result<()> {
    put_json(w, Table::Networks, &n.id, n)?;
    w.put(Table::NetworkNames, n.name.as_bytes(), n.id.as_bytes())
}

pub fn delete_network(w: &mut (impl WriteTxn + ?Sized), n: &Network) -> Result<()> {
    w.delete(Table::Networks, n.id.as_bytes())?;
    w.delete(Table::NetworkNames, n.name.as_bytes())?;
    disown(w, &net_key(&n.id))
}

pub fn load_sandbox(r: &(impl ReadTxn + ?Sized), id: &str) -> Result<Option<Sandbox>> {
    get_json(r, Table::Sandboxes, id)
}

pub fn save_sandbox(w: &mut (impl WriteTxn + ?Sized), s: &Sandbox) -> Result<()> {
    put_json(w, Table::Sandboxes, &s.id, s)?;
    if let NsMode::Container { id } = &s.mode {
        w.put(
            Table::SandboxSharers,
            format!("{id}/{}", s.id).as_bytes(),
            b"",
        )?;
    }
    w.put(Table::SandboxNames, s.name.as_bytes(), s.id.as_bytes())
}

pub fn delete_sandbox(w: &mut (impl WriteTxn + ?Sized), s: &Sandbox) -> Result<()> {
    w.delete(Table::Sandboxes, s.id.as_bytes())?;
    w.delete(Table::SandboxNames, s.name.as_bytes())?;
    if let NsMode::Container { id } = &s.mode {
        w.delete(Table::SandboxSharers, format!("{id}/{}", s.id).as_bytes())?;
    }
    disown(w, &sb_key(&s.id))
}

/// The sandboxes sharing `owner`'s namespace (`container:` mode).
pub fn sharers(r: &(impl ReadTxn + ?Sized), owner: &str) -> Result<Vec<String>> {
    Ok(
        r.scan(Table::SandboxSharers, format!("{owner}/").as_bytes())?
            .into_iter()
            .filter_map(|(k, _)| {
                String::from_utf8_lossy(&k)
                    .split('/')
                    .nth(1)
                    .map(str::to_string)
            })
            .collect(),
    )
}

pub fn save_endpoint(w: &mut (impl WriteTxn + ?Sized), e: &Endpoint) -> Result<()> {
    put_json(
        w,
        Table::Endpoints,
        &format!("{}/{}", e.network_id, e.id),
        e,
    )?;
    w.put(
        Table::SandboxEndpoints,
        format!("{}/{}", e.sandbox_id, e.network_id).as_bytes(),
        e.id.as_bytes(),
    )
}

pub fn delete_endpoint(w: &mut (impl WriteTxn + ?Sized), e: &Endpoint) -> Result<()> {
    w.delete(
        Table::Endpoints,
        format!("{}/{}", e.network_id, e.id).as_bytes(),
    )?;
    w.delete(
        Table::SandboxEndpoints,
        format!("{}/{}", e.sandbox_id, e.network_id).as_bytes(),
    )?;
    disown(w, &ep_key(&e.network_id, &e.id))
}

pub fn network_endpoints(r: &(impl ReadTxn + ?Sized), network_id: &str) -> Result<Vec<Endpoint>> {
    r.scan(Table::Endpoints, format!("{network_id}/").as_bytes())?
        .into_iter()
        .map(|(k, v)| crate::store::decode_record(Table::Endpoints, &k, &v))
        .collect()
}

/// One endpoint by its network and id.
pub fn load_endpoint(
    r: &(impl ReadTxn + ?Sized),
    network_id: &str,
    id: &str,
) -> Result<Option<Endpoint>> {
    get_json(r, Table::Endpoints, &format!("{network_id}/{id}"))
}

pub fn sandbox_endpoints(r: &(impl ReadTxn + ?Sized), sandbox_id: &str) -> Result<Vec<Endpoint>> {
    let mut out = Vec::new();
    for (k, ep_id) in r.scan(Table::SandboxEndpoints, format!("{sandbox_id}/").as_bytes())? {
        let k = String::from_utf8_lossy(&k);
        let net_id = k.split('/').nth(1).unwrap_or_default();
        let key = format!("{net_id}/{}", String::from_utf8_lossy(&ep_id));
        if let Some(ep) = get_json::<Endpoint>(r, Table::Endpoints, &key)? {
            out.push(ep);
        }
    }
    out.sort_by_key(|e| e.order);
    Ok(out)
}

/// The endpoint joining a sandbox to a network, if any.
pub fn endpoint_of(
    r: &(impl ReadTxn + ?Sized),
    sandbox_id: &str,
    network_id: &str,
) -> Result<Option<Endpoint>> {
    let Some(ep_id) = get_str(
        r,
        Table::SandboxEndpoints,
        &format!("{sandbox_id}/{network_id}"),
    )?
    else {
        return Ok(None);
    };
    match get_json(r, Table::Endpoints, &format!("{network_id}/{ep_id}"))? {
        Some(ep) => Ok(Some(ep)),
        None => Err(Error::internal(format!(
            "endpoint {ep_id} is indexed but has no record"
        ))),
    }
}

/// Resolve in dockerd's order: full id, exact name, unique id prefix.
fn resolve<T: serde::de::DeserializeOwned>(
    r: &(impl ReadTxn + ?Sized),
    table: Table,
    names: Table,
    key: &str,
    not_found: impl Fn() -> Error,
    kind: &'static str,
) -> Result<T> {
    if key.is_empty() {
        return Err(not_found());
    }
    if key.len() == 64 {
        if let Some(v) = get_json(r, table, key)? {
            return Ok(v);
        }
    }
    if let Some(id) = get_str(r, names, key)? {
        if let Some(v) = get_json(r, table, &id)? {
            return Ok(v);
        }
    }
    if key.bytes().all(|c| c.is_ascii_hexdigit()) {
        let hits = r.scan(table, key.to_ascii_lowercase().as_bytes())?;
        match hits.len() {
            0 => {}
            1 => return crate::store::decode_record(table, &hits[0].0, &hits[0].1),
            n => {
                return Err(Error::Ambiguous {
                    kind,
                    name: key.to_string(),
                    count: n,
                    basis: "ID prefix",
                })
            }
        }
    }
    Err(not_found())
}

pub fn resolve_network(r: &(impl ReadTxn + ?Sized), key: &str) -> Result<Network> {
    resolve(
        r,
        Table::Networks,
        Table::NetworkNames,
        key,
        || Error::NetworkNotFound(key.to_string()),
        "network",
    )
}

pub fn resolve_sandbox(r: &(impl ReadTxn + ?Sized), key: &str) -> Result<Sandbox> {
    resolve(
        r,
        Table::Sandboxes,
        Table::SandboxNames,
        key,
        || Error::SandboxNotFound(key.to_string()),
        "container",
    )
}
