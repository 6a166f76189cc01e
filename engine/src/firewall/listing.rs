//! Reading weft's nftables tables back: a listing (`nft -j list table …`) compared with what
//! [`super::render`] writes — a network's chains and dispatch elements, published ports, ICC
//! elements, the base chains, rule by rule by content — and batches that purge what a listing
//! holds for one network, sandbox or bridge port, whatever state it is in.

use serde_json::{json, Value};

use super::render::{
    add_network, base, bridge_base, chain_name, elem, port_slot_data, port_slot_key, BFAM, FAM,
    TABLE,
};
use super::{NetRules, PortElem, PORT_MAPS};

/// Is an endpoint's ICC state in a listed bridge table: its port in `noicc`, each link in
/// both sets?
pub fn has_icc(items: &[Value], i: &super::IccRules) -> bool {
    let elems = |set: &str| -> Vec<Value> {
        maps(items)
            .filter(|(n, _)| *n == set)
            .flat_map(|(_, e)| e.iter().cloned())
            .collect()
    };
    let key = |a: &str, b: &str, l: &super::IccLink| json!({"concat": [a, b, l.proto, l.port]});
    let (links, replies) = (elems("links"), elems("replies"));
    elems("noicc").contains(&json!(i.port))
        && elems("selves").contains(&json!({"concat": [i.port, i.port]}))
        && i.links.iter().all(|l| {
            links.contains(&key(&i.port, &l.peer, l)) && replies.contains(&key(&l.peer, &i.port, l))
        })
}

/// The jump target of a map element `[key, {"jump": {"target": T}}]`, and its key.
fn jump_elem(e: &Value) -> Option<(&Value, &str)> {
    let pair = e.as_array()?;
    let target = pair.get(1)?.get("jump")?.get("target")?.as_str()?;
    Some((pair.first()?, target))
}

fn maps(items: &[Value]) -> impl Iterator<Item = (&str, &[Value])> {
    items.iter().filter_map(|i| {
        let m = i.get("map").or_else(|| i.get("set"))?;
        let name = m.get("name")?.as_str()?;
        let elems = m
            .get("elem")
            .and_then(|e| e.as_array())
            .map(|v| v.as_slice());
        Some((name, elems.unwrap_or(&[])))
    })
}

fn chains(items: &[Value]) -> impl Iterator<Item = &str> {
    items
        .iter()
        .filter_map(|i| i.get("chain")?.get("name")?.as_str())
}

/// Network ids (12 hex digits) that have chains in a listed table.
pub fn chain_ids(items: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = chains(items)
        .filter_map(|c| c.strip_prefix("nw-")?.strip_suffix("-in"))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Does a listed table hold a network's rules (its chains and its dispatch element)?
/// The expressions of the rules `batch` adds to `chain` of `family`, in order.
fn added_rules<'a>(batch: &'a [Value], family: &str, chain: &str) -> Vec<&'a Value> {
    batch
        .iter()
        .filter_map(|c| {
            let r = c.get("add")?.get("rule")?;
            (r.get("family")?.as_str()? == family && r.get("chain")?.as_str()? == chain)
                .then(|| r.get("expr"))
                .flatten()
        })
        .collect()
}

/// The expressions of the rules of `chain` in a listing of a `family` table, in order.
fn listed_rules<'a>(items: &'a [Value], family: &str, chain: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter_map(|i| {
            let r = i.get("rule")?;
            (r.get("family")?.as_str()? == family && r.get("chain")?.as_str()? == chain)
                .then(|| r.get("expr"))
                .flatten()
        })
        .collect()
}

/// Does `chain` hold exactly the rules `batch` puts there — the same expressions in the same
/// order, nothing missing, changed or added? (nft lists a rule's expressions in the form weft
/// writes them.) A flushed chain, a `drop` rewritten to `accept`, an `accept` inserted before
/// the rest: each is a difference.
fn chain_as_made(items: &[Value], batch: &[Value], family: &str, chain: &str) -> bool {
    let norm = |v: Vec<&Value>| v.into_iter().map(canonical).collect::<Vec<_>>();
    norm(listed_rules(items, family, chain)) == norm(added_rules(batch, family, chain))
}

/// An expression in the one form nft lists it: an anonymous set's members come back in the
/// order of their values (`{udp, tcp}` is listed `{tcp, udp}`), so members are sorted.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = match (k.as_str(), x) {
                        ("set", Value::Array(a)) => {
                            let mut a: Vec<Value> = a.iter().map(canonical).collect();
                            a.sort_by_key(|e| e.to_string());
                            Value::Array(a)
                        }
                        _ => canonical(x),
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

pub fn has_network(items: &[Value], r: &NetRules) -> bool {
    let names: Vec<&str> = chains(items).collect();
    let made = add_network(r);
    let have_chains = ["in", "out", "nat"].iter().all(|p| {
        let c = chain_name(r, p);
        names.contains(&c.as_str()) && chain_as_made(items, &made, FAM, &c)
    });
    let cin = chain_name(r, "in");
    let dispatched = maps(items)
        .filter(|(n, _)| *n == "fwd_in")
        .flat_map(|(_, e)| e.iter())
        .filter_map(jump_elem)
        .any(|(k, t)| t == cin && k.as_str() == Some(r.iface.as_str()));
    have_chains && dispatched
}

/// One batch deleting whatever a listed table holds for network `id12`: the map elements that
/// jump to its chains, its interface in `nets`, then the chains.
pub fn purge(items: &[Value], id12: &str) -> Value {
    let prefix = format!("nw-{id12}-");
    let mut v = Vec::new();
    let mut ifaces = Vec::new();
    for (name, elems) in maps(items) {
        for e in elems {
            if let Some((key, target)) = jump_elem(e) {
                if target.starts_with(&prefix) {
                    if name == "fwd_in" {
                        ifaces.push(key.clone());
                    }
                    v.push(json!({"delete": {"element": elem(name, key.clone(), None)}}));
                }
            }
        }
    }
    for (name, elems) in maps(items) {
        if name == "nets" {
            for e in elems {
                if ifaces.contains(e) {
                    v.push(json!({"delete": {"element": elem("nets", e.clone(), None)}}));
                }
            }
        }
    }
    for c in chains(items).filter(|c| c.starts_with(&prefix)) {
        let c = json!({"family": FAM, "table": TABLE, "name": c});
        v.push(json!({"flush": {"chain": c.clone()}}));
        v.push(json!({"delete": {"chain": c}}));
    }
    json!({"nftables": v})
}

/// Does every element `p`'s ports put in the port maps hold what it was given — the key in
/// its map, mapping to the sandbox's address or port? (An element pointing elsewhere is as
/// missing as one deleted.)
pub fn has_ports(items: &[Value], p: &super::PortRules) -> bool {
    p.slots().iter().all(|s| {
        let want = json!([port_slot_key(s), port_slot_data(s)]);
        maps(items)
            .filter(|(name, _)| *name == s.map)
            .any(|(_, elems)| elems.contains(&want))
    })
}

/// Do the base chains of a listed inet table hold exactly the rules
/// [`super::render::batch`] puts there? A flushed `guard` or `forward` chain leaves the table
/// and the maps in place; a rule rewritten or added is as much a change.
pub fn base_intact(items: &[Value]) -> bool {
    let base = base();
    ["guard", "prerouting", "output", "forward", "postrouting"]
        .iter()
        .all(|c| chain_as_made(items, &base, FAM, c))
}

/// The same for the bridge table's chains (ICC off: a flushed `noicc` chain lets every frame
/// between the ports through).
pub fn bridge_base_intact(items: &[Value]) -> bool {
    let base = bridge_base();
    ["forward", "noicc"]
        .iter()
        .all(|c| chain_as_made(items, &base, BFAM, c))
}

/// Every key in a listed table's port maps.
pub fn port_elems(items: &[Value]) -> Vec<PortElem> {
    maps(items)
        .filter(|(name, _)| PORT_MAPS.iter().any(|(n, ..)| n == name))
        .flat_map(|(name, elems)| {
            elems.iter().filter_map(move |e| {
                Some(PortElem {
                    map: name.to_string(),
                    key: e.as_array()?.first()?.to_string(),
                })
            })
        })
        .collect()
}

/// One batch deleting those of `elems` a listed table holds, whatever they map to.
pub fn purge_ports(items: &[Value], elems: &[PortElem]) -> Value {
    let listed = port_elems(items);
    let v: Vec<Value> = elems
        .iter()
        .filter(|e| listed.contains(e))
        .filter_map(|e| {
            let key: Value = serde_json::from_str(&e.key).ok()?;
            Some(json!({"delete": {"element": elem(&e.map, key, None)}}))
        })
        .collect();
    json!({"nftables": v})
}

/// The bridge ports an ICC element names: itself (`noicc`), or the first two parts of a
/// concatenation (`selves`, `links`, `replies`).
fn elem_ports(e: &Value) -> Vec<&str> {
    match e.get("concat").and_then(Value::as_array) {
        Some(parts) => parts.iter().take(2).filter_map(Value::as_str).collect(),
        None => e.as_str().into_iter().collect(),
    }
}

/// The bridge ports in a listed bridge table's sets (`noicc`, and either end of a link).
pub fn icc_ports(items: &[Value]) -> Vec<String> {
    let mut ports: Vec<String> = maps(items)
        .filter(|(n, _)| ["noicc", "selves", "links", "replies"].contains(n))
        .flat_map(|(_, elems)| elems.iter())
        .flat_map(elem_ports)
        .map(str::to_string)
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// One batch deleting every element of a listed bridge table that names `port`.
pub fn purge_icc(items: &[Value], port: &str) -> Value {
    let mut v = Vec::new();
    for (name, elems) in maps(items) {
        for e in elems {
            if elem_ports(e).contains(&port) {
                v.push(
                    json!({"delete": {"element": {"family": BFAM, "table": TABLE,
                    "name": name, "elem": [e]}}}),
                );
            }
        }
    }
    json!({"nftables": v})
}

/// The names of the objects (chains, maps, sets) of a table as `batch` makes them.
fn made_objects(batch: &[Value]) -> Vec<(&str, &str)> {
    batch
        .iter()
        .filter_map(|c| {
            let (kind, o) = c
                .get("add")?
                .as_object()?
                .iter()
                .find(|(k, _)| ["chain", "map", "set"].contains(&k.as_str()))?;
            Some((kind.as_str(), o.get("name")?.as_str()?))
        })
        .collect()
}

/// The objects of a listed table of `family` (`inet`, `bridge`) that weft does not make: not
/// its base objects, not a network's chains (`nw-<id>-*`, checked against the records on
/// their own). An older weft's (a published-port chain `pt-<id>`, the verdict maps that
/// jumped to them) or anyone's. As (kind, name).
pub fn strangers(items: &[Value], family: &str) -> Vec<(String, String)> {
    let base = if family == BFAM {
        bridge_base()
    } else {
        base()
    };
    let known = made_objects(&base);
    items
        .iter()
        .filter_map(|i| {
            let (kind, o) = i
                .as_object()?
                .iter()
                .find(|(k, _)| ["chain", "map", "set"].contains(&k.as_str()))?;
            let name = o.get("name")?.as_str()?;
            let network = family == FAM && kind == "chain" && name.starts_with("nw-");
            (!network && !known.contains(&(kind.as_str(), name)))
                .then(|| (kind.clone(), name.to_string()))
        })
        .collect()
}

/// One batch deleting [`strangers`] from a listed table: maps and sets first (their elements
/// may jump to the chains), then the chains, flushed (their rules may jump to each other).
pub fn purge_strangers(items: &[Value], family: &str) -> Value {
    let found = strangers(items, family);
    let obj =
        |kind: &str, name: &str| json!({ kind: {"family": family, "table": TABLE, "name": name} });
    let mut v: Vec<Value> = found
        .iter()
        .filter(|(k, _)| k != "chain")
        .map(|(k, n)| json!({"delete": obj(k, n)}))
        .collect();
    let chains: Vec<&String> = found
        .iter()
        .filter(|(k, _)| k == "chain")
        .map(|(_, n)| n)
        .collect();
    v.extend(chains.iter().map(|n| json!({"flush": obj("chain", n)})));
    v.extend(chains.iter().map(|n| json!({"delete": obj("chain", n)})));
    json!({"nftables": v})
}
