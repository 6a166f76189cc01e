//! Pure rendering of weft's nftables changes as nft JSON (reading a listing back against it
//! is [`super::listing`]). The base table is re-asserted in
//! every batch (add is idempotent; the fixed base-chain rules are flushed and re-added), so
//! any batch works on a host with or without weft's table.
//!
//! ```text
//! table inet weft {
//!   map fwd_in  { type ifname : verdict }            # iifname → jump nw-<id>-in
//!   map fwd_out { type ifname : verdict }            # oifname → jump nw-<id>-out
//!   set nets    { type ifname }                      # every weft network's interface
//!   map masq4   { type ipv4_addr : verdict; flags interval }   # saddr → jump nw-<id>-nat
//!   map masq6   { type ipv6_addr : verdict; flags interval }
//!   chain guard       { hook prerouting, raw:  iifname != "lo" ip daddr 127.0.0.0/8 drop }
//!   chain forward     { hook forward, filter:  iifname vmap @fwd_in; oifname vmap @fwd_out }
//!   chain postrouting { hook postrouting, srcnat: ip saddr vmap @masq4; ip6 saddr vmap @masq6 }
//!   chain nw-<id>-in  { oifname "<if>" accept; [internal: drop]; oifname @nets drop; accept }
//!   chain nw-<id>-out { [internal: drop]; ct state established,related accept;
//!                       ct status dnat accept; drop }
//!   chain nw-<id>-nat { ct status dnat oifname @nets masquerade        # hairpin
//!                       [masquerade on:] oifname != "<if>" masquerade }
//!   map dnat_at4      { type ipv4_addr . inet_proto . inet_service : ipv4_addr }    # on one
//!   map dnat_at4_port { type ipv4_addr . inet_proto . inet_service : inet_service } # address
//!   map dnat_at6, dnat_at6_port                       # (the same, keyed by an IPv6 address)
//!   map dnat_any4     { type inet_proto . inet_service : ipv4_addr }    # on every address
//!   map dnat_any6     { type inet_proto . inet_service : ipv6_addr }
//!   map dnat_any_port { type inet_proto . inet_service : inet_service }
//!   chain prerouting  { hook prerouting, dstnat: fib daddr type local
//!                         dnat ip to ip daddr . l4proto . dport map @dnat_at4
//!                                  : ip daddr . l4proto . dport map @dnat_at4_port;
//!                         (ip6: @dnat_at6 : @dnat_at6_port);
//!                         nfproto ipv4 dnat ip to l4proto . dport map @dnat_any4
//!                                                : l4proto . dport map @dnat_any_port;
//!                         (ipv6: @dnat_any6 : @dnat_any_port) }
//!   chain output      { hook output, dstnat: the same }
//!   (postrouting also: ct status dnat, from loopback: masquerade — the host reaching
//!    127.0.0.1:PORT)
//! }
//! ```
//! A published port is elements in data maps — the sandbox's address in one, its port in the
//! other — and nothing else: no rule, no chain, no jump. The lookups stay hash probes however
//! many ports are published, and so does publishing: a commit that adds a rule with a NAT
//! expression or a verdict-map jump makes nf_tables validate the whole table again (every
//! element of every verdict map and the chains they jump to), a cost that grew with every
//! port published (`cargo bench --bench ports`); data-map elements need no validation. The
//! same port may be published on two host addresses by two sandboxes; the engine refuses
//! overlaps (a port on every address meets all of them), as Docker's allocator does.
//!
//! ICC off, and the legacy links that pierce it, are bridged traffic, filtered in a bridge-family
//! table (no br_netfilter needed; no conntrack either, so links are allowed both ways
//! statelessly, as Docker's iptables rules do):
//!
//! ```text
//! table bridge weft {
//!   set noicc   { type ifname }                                  # ports of ICC-off networks
//!   set selves  { type ifname . ifname }                         # port . port (hairpin)
//!   set links   { type ifname . ifname . inet_proto . inet_service }   # from . to . proto . dport
//!   set replies { type ifname . ifname . inet_proto . inet_service }   # to . from . proto . sport
//!   chain forward { hook forward: iifname @noicc oifname @noicc meta protocol {ip, ip6} jump noicc }
//!   chain noicc   { iifname . oifname @selves accept;              # back where it came from
//!                   icmpv6 type {nd-neighbor-solicit, nd-neighbor-advert} accept;
//!                   iifname . oifname . meta l4proto . th dport @links accept;
//!                   iifname . oifname . meta l4proto . th sport @replies accept; drop }
//! }
//! ```
//! Ports are matched by name: a bridge port is one endpoint's veth, named from its id. (Bridge
//! port isolation was used before; it cannot let a linked pair through.)

use ipnetwork::IpNetwork;
use serde_json::{json, Value};

use super::{FwChange, NetRules};

pub const TABLE: &str = "weft";
pub(super) const FAM: &str = "inet";
pub(super) const BFAM: &str = "bridge";

pub(super) fn chain_name(r: &NetRules, part: &str) -> String {
    format!("nw-{}-{}", r.id, part)
}

pub(super) fn base() -> Vec<Value> {
    let mut v = Vec::new();
    let maps = [
        ("fwd_in", "ifname", "verdict", false),
        ("fwd_out", "ifname", "verdict", false),
        ("masq4", "ipv4_addr", "verdict", true),
        ("masq6", "ipv6_addr", "verdict", true),
    ];
    for (name, ty, map, interval) in maps {
        let mut m = json!({"family": FAM, "table": TABLE, "name": name, "type": ty, "map": map});
        if interval {
            m["flags"] = json!(["interval"]);
        }
        v.push(json!({"add": {"map": m}}));
    }
    v.push(
        json!({"add": {"set": {"family": FAM, "table": TABLE, "name": "nets", "type": "ifname"}}}),
    );
    for (name, key, data) in super::PORT_MAPS {
        let ty: Vec<&str> = key
            .into_iter()
            .chain(["inet_proto", "inet_service"])
            .collect();
        v.push(
            json!({"add": {"map": {"family": FAM, "table": TABLE, "name": name,
            "type": ty, "map": data}}}),
        );
    }
    for (name, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        v.push(
            json!({"add": {"chain": {"family": FAM, "table": TABLE, "name": name,
            "type": "nat", "hook": hook, "prio": -100, "policy": "accept"}}}),
        );
        v.push(json!({"flush": {"chain": {"family": FAM, "table": TABLE, "name": name}}}));
        let dport = json!({"payload": {"protocol": "th", "field": "dport"}});
        let local = || {
            eq(
                json!({"fib": {"result": "type", "flags": ["daddr"]}}),
                json!("local"),
            )
        };
        // A sandbox asking its network's resolver (the gateway, port 53) is never DNATed: a
        // port 53 published on every address would otherwise take every network's DNS.
        if name == "prerouting" {
            v.push(rule(
                name,
                vec![
                    eq(meta("iifname"), json!("@nets")),
                    eq(meta("l4proto"), json!({"set": ["udp", "tcp"]})),
                    eq(
                        json!({"payload": {"protocol": "th", "field": "dport"}}),
                        json!(53),
                    ),
                    eq(
                        json!({"fib": {"result": "type", "flags": ["daddr", "iif"]}}),
                        json!("local"),
                    ),
                    json!({"accept": null}),
                ],
            ));
        }
        // Ports on one host address first, then ports on every address: the sandbox's
        // address from one map, its port from the other, under the same key. (`ip daddr`
        // carries its family; the rules without it say theirs, as nft lists them.)
        let lookup =
            |key: &Value, map: &str| json!({"map": {"key": key, "data": format!("@{map}")}});
        for (fam, at, nfproto, any) in [
            ("ip", "dnat_at4", "ipv4", "dnat_any4"),
            ("ip6", "dnat_at6", "ipv6", "dnat_any6"),
        ] {
            let key = json!({"concat": [
                {"payload": {"protocol": fam, "field": "daddr"}}, meta("l4proto"), dport.clone()]});
            v.push(rule(
                name,
                vec![
                    local(),
                    json!({"dnat": {"family": fam,
                        "addr": lookup(&key, at), "port": lookup(&key, &format!("{at}_port"))}}),
                ],
            ));
            let key = json!({"concat": [meta("l4proto"), dport.clone()]});
            v.push(rule(
                name,
                vec![
                    local(),
                    eq(meta("nfproto"), json!(nfproto)),
                    json!({"dnat": {"family": fam,
                        "addr": lookup(&key, any), "port": lookup(&key, "dnat_any_port")}}),
                ],
            ));
        }
    }
    v.push(
        json!({"add": {"chain": {"family": FAM, "table": TABLE, "name": "forward",
        "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}}),
    );
    // Nothing arriving from outside the host is for its loopback addresses. Bridges let
    // loopback-sourced packets out (route_localnet, for 127.0.0.1:PORT): without this a
    // sandbox forging a packet to 127.0.0.1 reached the host's loopback services
    // (CVE-2020-8558), and a machine on the LAN sending to 127.0.0.1 through the host's MAC
    // reached ports published on 127.0.0.1 (their DNAT runs before routing; moby#45610).
    v.push(
        json!({"add": {"chain": {"family": FAM, "table": TABLE, "name": "guard",
        "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}}}),
    );
    v.push(json!({"flush": {"chain": {"family": FAM, "table": TABLE, "name": "guard"}}}));
    v.push(rule(
        "guard",
        vec![
            ne(meta("iifname"), json!("lo")),
            eq(
                json!({"payload": {"protocol": "ip", "field": "daddr"}}),
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            ),
            json!({"drop": null}),
        ],
    ));
    v.push(
        json!({"add": {"chain": {"family": FAM, "table": TABLE, "name": "postrouting",
        "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}}),
    );
    v.push(json!({"flush": {"chain": {"family": FAM, "table": TABLE, "name": "forward"}}}));
    v.push(json!({"flush": {"chain": {"family": FAM, "table": TABLE, "name": "postrouting"}}}));
    let vmap = |key: Value, map: &str| json!({"vmap": {"key": key, "data": format!("@{map}")}});
    v.push(rule(
        "forward",
        vec![vmap(json!({"meta": {"key": "iifname"}}), "fwd_in")],
    ));
    v.push(rule(
        "forward",
        vec![vmap(json!({"meta": {"key": "oifname"}}), "fwd_out")],
    ));
    // Published ports: the host reaching one through loopback is answered to the host, not
    // directly (a sandbox reaching one: its network's `nat` chain).
    v.push(rule(
        "postrouting",
        vec![
            has_bits(json!({"ct": {"key": "status"}}), json!("dnat")),
            eq(
                json!({"payload": {"protocol": "ip", "field": "saddr"}}),
                json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
            ),
            json!({"masquerade": null}),
        ],
    ));
    v.push(rule(
        "postrouting",
        vec![vmap(
            json!({"payload": {"protocol": "ip", "field": "saddr"}}),
            "masq4",
        )],
    ));
    v.push(rule(
        "postrouting",
        vec![vmap(
            json!({"payload": {"protocol": "ip6", "field": "saddr"}}),
            "masq6",
        )],
    ));
    v
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": FAM, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn eq(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn ne(left: Value, right: Value) -> Value {
    json!({"match": {"op": "!=", "left": left, "right": right}})
}

/// Bitmask test (nft's implicit `in` for flags: `ct state established,related`).
fn has_bits(left: Value, right: Value) -> Value {
    json!({"match": {"op": "in", "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn prefix(n: &IpNetwork) -> Value {
    json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix()}})
}

pub(super) fn elem(map: &str, key: Value, jump: Option<String>) -> Value {
    let e = match jump {
        Some(target) => json!([[key, {"jump": {"target": target}}]]),
        None => json!([key]),
    };
    json!({"family": FAM, "table": TABLE, "name": map, "elem": e})
}

fn network_chains(r: &NetRules) -> Vec<Value> {
    ["in", "out", "nat"]
        .iter()
        .map(|p| json!({"add": {"chain": {"family": FAM, "table": TABLE, "name": chain_name(r, p)}}}))
        .collect()
}

pub(super) fn add_network(r: &NetRules) -> Vec<Value> {
    let mut v = Vec::new();
    let (cin, cout, cnat) = (
        chain_name(r, "in"),
        chain_name(r, "out"),
        chain_name(r, "nat"),
    );
    let ifname = json!(r.iface);
    // Leaving the network through routing.
    v.push(rule(
        &cin,
        vec![eq(meta("oifname"), ifname.clone()), json!({"accept": null})],
    ));
    if r.internal {
        v.push(rule(&cin, vec![json!({"drop": null})]));
    }
    v.push(rule(
        &cin,
        vec![eq(meta("oifname"), json!("@nets")), json!({"drop": null})],
    ));
    v.push(rule(&cin, vec![json!({"accept": null})]));
    // Entering the network through routing.
    if r.internal {
        v.push(rule(&cout, vec![json!({"drop": null})]));
    }
    v.push(rule(
        &cout,
        vec![
            has_bits(
                json!({"ct": {"key": "state"}}),
                json!(["established", "related"]),
            ),
            json!({"accept": null}),
        ],
    ));
    v.push(rule(
        &cout,
        vec![
            has_bits(json!({"ct": {"key": "status"}}), json!("dnat")),
            json!({"accept": null}),
        ],
    ));
    v.push(rule(&cout, vec![json!({"drop": null})]));
    // A sandbox reaching a published port, its own or a neighbour's, through the host's
    // address (hairpin) is answered through the host. Matched by source subnet (this chain)
    // and not by input interface: with br_netfilter the DNAT happens on the bridge, and
    // bridged packets reach postrouting with no input interface. (An internal network's
    // sandboxes are never masqueraded: they publish nothing reachable from elsewhere.)
    if !r.internal {
        v.push(rule(
            &cnat,
            vec![
                has_bits(json!({"ct": {"key": "status"}}), json!("dnat")),
                eq(meta("oifname"), json!("@nets")),
                json!({"masquerade": null}),
            ],
        ));
    }
    // Source NAT for traffic that leaves through another interface.
    if r.masquerade && !r.internal {
        v.push(rule(
            &cnat,
            vec![
                ne(meta("oifname"), ifname.clone()),
                json!({"masquerade": null}),
            ],
        ));
    }
    v.push(json!({"add": {"element": elem("fwd_in", ifname.clone(), Some(cin))}}));
    v.push(json!({"add": {"element": elem("fwd_out", ifname.clone(), Some(cout))}}));
    v.push(json!({"add": {"element": elem("nets", ifname, None)}}));
    for s in &r.subnets {
        let map = if s.is_ipv4() { "masq4" } else { "masq6" };
        v.push(json!({"add": {"element": elem(map, prefix(s), Some(cnat.clone()))}}));
    }
    v
}

fn remove_network(r: &NetRules) -> Vec<Value> {
    let mut v = Vec::new();
    let ifname = json!(r.iface);
    v.push(json!({"delete": {"element": elem("fwd_in", ifname.clone(), None)}}));
    v.push(json!({"delete": {"element": elem("fwd_out", ifname.clone(), None)}}));
    v.push(json!({"delete": {"element": elem("nets", ifname, None)}}));
    for s in &r.subnets {
        let map = if s.is_ipv4() { "masq4" } else { "masq6" };
        v.push(json!({"delete": {"element": elem(map, prefix(s), None)}}));
    }
    for part in ["in", "out", "nat"] {
        let c = json!({"family": FAM, "table": TABLE, "name": chain_name(r, part)});
        v.push(json!({"flush": {"chain": c.clone()}}));
        v.push(json!({"delete": {"chain": c}}));
    }
    v
}

/// One nft transaction: the table, the chains new networks need, the base objects, then the
/// changes in order. (nft 1.0.6 refuses, with ENOENT, a jump element into an interval map
/// when the target chain is created after the map in the same batch: chains come first.)
pub fn batch(changes: &[FwChange]) -> Value {
    let mut v = vec![json!({"add": {"table": {"family": FAM, "name": TABLE}}})];
    for c in changes {
        if let FwChange::Add(r) = c {
            v.extend(network_chains(r));
        }
    }
    v.extend(base());
    if changes
        .iter()
        .any(|c| matches!(c, FwChange::AddIcc(_) | FwChange::RemoveIcc(_)))
    {
        v.extend(bridge_base());
    }
    v.extend(changes.iter().flat_map(change_items));
    json!({"nftables": v})
}

/// The commands of one change, after the tables and base objects.
fn change_items(c: &FwChange) -> Vec<Value> {
    match c {
        FwChange::Add(r) => add_network(r),
        FwChange::Remove(r) => remove_network(r),
        FwChange::AddPorts(p) => add_ports(p),
        FwChange::RemovePorts(p) => remove_ports(p),
        FwChange::AddIcc(i) => icc_elements("add", i),
        FwChange::RemoveIcc(i) => icc_elements("delete", i),
    }
}

/// A batch of sandbox-level changes alone (published ports, ICC elements), with no table,
/// base chain or base rule: `None` when a network changes too. It fails with ENOENT where
/// the tables are not there yet; then [`batch`] does it all.
pub fn sandbox_batch(changes: &[FwChange]) -> Option<Value> {
    if changes
        .iter()
        .any(|c| matches!(c, FwChange::Add(_) | FwChange::Remove(_)))
    {
        return None;
    }
    let v: Vec<Value> = changes.iter().flat_map(change_items).collect();
    Some(json!({"nftables": v}))
}

/// The bridge-family table (ICC off and links), re-asserted like the inet one.
pub(super) fn bridge_base() -> Vec<Value> {
    let obj = |name: &str| json!({"family": BFAM, "table": TABLE, "name": name});
    let mut v = vec![json!({"add": {"table": {"family": BFAM, "name": TABLE}}})];
    v.push(json!({"add": {"set": {"family": BFAM, "table": TABLE, "name": "noicc", "type": "ifname"}}}));
    v.push(json!({"add": {"set": {"family": BFAM, "table": TABLE, "name": "selves", "type": ["ifname", "ifname"]}}}));
    for name in ["links", "replies"] {
        v.push(
            json!({"add": {"set": {"family": BFAM, "table": TABLE, "name": name,
            "type": ["ifname", "ifname", "inet_proto", "inet_service"]}}}),
        );
    }
    v.push(json!({"add": {"chain": obj("noicc")}}));
    v.push(
        json!({"add": {"chain": {"family": BFAM, "table": TABLE, "name": "forward",
        "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}}),
    );
    for c in ["noicc", "forward"] {
        v.push(json!({"flush": {"chain": obj(c)}}));
    }
    let brule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": BFAM, "table": TABLE, "chain": chain, "expr": expr}}});
    v.push(brule(
        "forward",
        vec![
            eq(meta("iifname"), json!("@noicc")),
            eq(meta("oifname"), json!("@noicc")),
            eq(meta("protocol"), json!({"set": ["ip", "ip6"]})),
            json!({"jump": {"target": "noicc"}}),
        ],
    ));
    // A sandbox's own traffic sent back to it (hairpin to its own published port).
    v.push(brule(
        "noicc",
        vec![
            eq(
                json!({"concat": [meta("iifname"), meta("oifname")]}),
                json!("@selves"),
            ),
            json!({"accept": null}),
        ],
    ));
    // Neighbour discovery between linked sandboxes on IPv6 (ARP is never filtered).
    v.push(brule(
        "noicc",
        vec![
            eq(
                json!({"payload": {"protocol": "icmpv6", "field": "type"}}),
                json!({"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]}),
            ),
            json!({"accept": null}),
        ],
    ));
    for (set, field) in [("links", "dport"), ("replies", "sport")] {
        v.push(brule(
            "noicc",
            vec![
                eq(
                    json!({"concat": [meta("iifname"), meta("oifname"), meta("l4proto"),
                        {"payload": {"protocol": "th", "field": field}}]}),
                    json!(format!("@{set}")),
                ),
                json!({"accept": null}),
            ],
        ));
    }
    v.push(brule("noicc", vec![json!({"drop": null})]));
    v
}

/// Add or delete one endpoint's elements: its port in `noicc`, its links both ways.
fn icc_elements(verb: &str, i: &super::IccRules) -> Vec<Value> {
    let el = |set: &str, e: Value| json!({verb: {"element": {"family": BFAM, "table": TABLE, "name": set, "elem": [e]}}});
    let mut v = Vec::new();
    for l in &i.links {
        v.push(el(
            "links",
            json!({"concat": [i.port, l.peer, l.proto, l.port]}),
        ));
        v.push(el(
            "replies",
            json!({"concat": [l.peer, i.port, l.proto, l.port]}),
        ));
    }
    v.push(el("selves", json!({"concat": [i.port, i.port]})));
    v.push(el("noicc", json!(i.port)));
    if verb == "delete" {
        // The port leaves `noicc` first: nothing is dropped mid-change.
        v.rotate_right(1);
    }
    v
}

/// A port-map element's key: [host address .] protocol . port.
pub(super) fn port_slot_key(s: &super::PortSlot) -> Value {
    match s.host {
        Some(h) => json!({"concat": [h.to_string(), s.proto, s.port]}),
        None => json!({"concat": [s.proto, s.port]}),
    }
}

/// A port-map element's data: the sandbox's address, or its port.
pub(super) fn port_slot_data(s: &super::PortSlot) -> Value {
    match s.to {
        super::PortTarget::Addr(a) => json!(a.to_string()),
        super::PortTarget::Port(p) => json!(p),
    }
}

pub(super) fn add_ports(p: &super::PortRules) -> Vec<Value> {
    p.slots()
        .iter()
        .map(|s| {
            let e = json!([[port_slot_key(s), port_slot_data(s)]]);
            json!({"add": {"element": {"family": FAM, "table": TABLE, "name": s.map, "elem": e}}})
        })
        .collect()
}

fn remove_ports(p: &super::PortRules) -> Vec<Value> {
    p.slots()
        .iter()
        .map(|s| json!({"delete": {"element": elem(s.map, port_slot_key(s), None)}}))
        .collect()
}

/// Remove weft's table entirely.
pub fn delete_tables() -> Value {
    // Added first, so the batch succeeds whichever of them exists.
    let mut v = Vec::new();
    for fam in [FAM, BFAM] {
        v.push(json!({"add": {"table": {"family": fam, "name": TABLE}}}));
        v.push(json!({"delete": {"table": {"family": fam, "name": TABLE}}}));
    }
    json!({"nftables": v})
}

/// The base objects again: the inet table's, and the bridge table's when there is one.
pub fn base_batch(bridge: bool) -> Value {
    let mut v = vec![json!({"add": {"table": {"family": FAM, "name": TABLE}}})];
    v.extend(base());
    if bridge {
        v.extend(bridge_base());
    }
    json!({"nftables": v})
}

#[cfg(test)]
mod tests {
    use super::super::listing::*;
    use super::*;

    fn net(internal: bool) -> NetRules {
        NetRules {
            id: "0123456789ab".into(),
            iface: "br-0123456789ab".into(),
            subnets: vec![
                "172.30.0.0/16".parse().unwrap(),
                "fd00::/64".parse().unwrap(),
            ],
            internal,
            masquerade: true,
        }
    }

    /// The rules of a chain, as compact strings, for readable expectations.
    fn chain_rules(doc: &Value, chain: &str) -> Vec<String> {
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("add").and_then(|a| a.get("rule")))
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].to_string())
            .collect()
    }

    #[test]
    fn normal_network_rules() {
        let doc = batch(&[FwChange::Add(net(false))]);
        assert_eq!(
            chain_rules(&doc, "nw-0123456789ab-in"),
            [
                r#"[{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"br-0123456789ab"}},{"accept":null}]"#,
                r#"[{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"@nets"}},{"drop":null}]"#,
                r#"[{"accept":null}]"#,
            ]
        );
        assert_eq!(
            chain_rules(&doc, "nw-0123456789ab-nat"),
            [
                r#"[{"match":{"op":"in","left":{"ct":{"key":"status"}},"right":"dnat"}},{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"@nets"}},{"masquerade":null}]"#,
                r#"[{"match":{"op":"!=","left":{"meta":{"key":"oifname"}},"right":"br-0123456789ab"}},{"masquerade":null}]"#
            ]
        );
        assert_eq!(chain_rules(&doc, "nw-0123456789ab-out").len(), 3);
        let s = doc.to_string();
        assert!(s.contains(r#"{"addr":"172.30.0.0","len":16}"#));
        assert!(s.contains(r#""name":"masq6""#));
    }

    #[test]
    fn internal_network_drops_both_ways_and_never_masquerades() {
        let doc = batch(&[FwChange::Add(net(true))]);
        assert_eq!(
            chain_rules(&doc, "nw-0123456789ab-in")[1],
            r#"[{"drop":null}]"#
        );
        assert_eq!(
            chain_rules(&doc, "nw-0123456789ab-out")[0],
            r#"[{"drop":null}]"#
        );
        assert!(chain_rules(&doc, "nw-0123456789ab-nat").is_empty());
    }

    #[test]
    fn listed_tables_are_read_back_and_purged() {
        // What `nft -j list table inet weft` prints for one network (trimmed).
        let items: Vec<Value> = serde_json::from_str(
            r#"[
            {"table": {"family": "inet", "name": "weft"}},
            {"map": {"family": "inet", "name": "fwd_in", "table": "weft", "type": "ifname", "map": "verdict",
                     "elem": [["br-0123456789ab", {"jump": {"target": "nw-0123456789ab-in"}}]]}},
            {"map": {"family": "inet", "name": "masq4", "table": "weft", "type": "ipv4_addr", "map": "verdict", "flags": ["interval"],
                     "elem": [[{"prefix": {"addr": "172.30.0.0", "len": 16}}, {"jump": {"target": "nw-0123456789ab-nat"}}]]}},
            {"set": {"family": "inet", "name": "nets", "table": "weft", "type": "ifname", "elem": ["br-0123456789ab"]}},
            {"chain": {"family": "inet", "table": "weft", "name": "nw-0123456789ab-in"}},
            {"chain": {"family": "inet", "table": "weft", "name": "nw-0123456789ab-out"}},
            {"chain": {"family": "inet", "table": "weft", "name": "nw-0123456789ab-nat"}}
        ]"#,
        )
        .unwrap();
        // Chains with no rules are not a network's rules.
        assert!(!has_network(&items, &net(false)));
        // Its rules as nft lists them: each added rule, with a handle.
        let mut items = items;
        for (n, r) in add_network(&net(false))
            .iter()
            .filter_map(|c| c.get("add")?.get("rule"))
            .enumerate()
        {
            let mut r = r.clone();
            r["handle"] = json!(n + 10);
            items.push(json!({ "rule": r }));
        }
        assert_eq!(chain_ids(&items), ["0123456789ab"]);
        assert!(has_network(&items, &net(false)));
        // One rule gone, or one rewritten, and it is not.
        let gone: Vec<Value> = items
            .iter()
            .filter(|i| i["rule"]["handle"] != json!(11))
            .cloned()
            .collect();
        assert!(!has_network(&gone, &net(false)));
        let mut rewritten = items.clone();
        for i in rewritten.iter_mut() {
            if i["rule"]["handle"] == json!(11) {
                i["rule"]["expr"][1] = json!({"accept": null});
            }
        }
        assert!(!has_network(&rewritten, &net(false)));
        let mut other = net(false);
        other.iface = "br-other".into();
        assert!(!has_network(&items, &other));
        let doc = purge(&items, "0123456789ab");
        let deletes: Vec<String> = doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("delete"))
            .map(|d| d.to_string())
            .collect();
        assert_eq!(deletes.len(), 6, "{deletes:?}"); // fwd_in, masq4, nets, 3 chains
        assert!(deletes[2].contains(r#""name":"nets""#));
        assert_eq!(purge(&items, "ffffffffffff")["nftables"], json!([]));
    }

    #[test]
    fn icc_off_elements_and_their_removal() {
        let i = super::super::IccRules {
            port: "vethaaaa".into(),
            links: vec![super::super::IccLink {
                peer: "vethbbbb".into(),
                proto: "tcp".into(),
                port: 5432,
            }],
        };
        let add = batch(&[FwChange::AddIcc(i.clone())]);
        let s = add.to_string();
        assert!(s.contains(r#"{"add":{"table":{"family":"bridge","name":"weft"}}}"#));
        assert!(
            s.contains(r#""name":"links","elem":[{"concat":["vethaaaa","vethbbbb","tcp",5432]}]"#)
        );
        assert!(s.contains(
            r#""name":"replies","elem":[{"concat":["vethbbbb","vethaaaa","tcp",5432]}]"#
        ));
        let noicc = |doc: &Value| -> Vec<String> {
            doc["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["add"]["rule"]["chain"] == "noicc")
                .map(|c| c["add"]["rule"]["expr"].to_string())
                .collect()
        };
        assert_eq!(noicc(&add).last().unwrap(), r#"[{"drop":null}]"#);
        // Removal takes the port out of `noicc` before its links.
        let del = batch(&[FwChange::RemoveIcc(i.clone())]);
        let deletes: Vec<&Value> = del["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("delete"))
            .collect();
        assert_eq!(deletes.len(), 4);
        assert_eq!(deletes[0]["element"]["name"], "noicc");
        // Read back from a listing.
        let items: Vec<Value> = serde_json::from_str(
            r#"[{"set": {"family": "bridge", "name": "noicc", "table": "weft", "type": "ifname", "elem": ["vethaaaa"]}},
                {"set": {"family": "bridge", "name": "selves", "table": "weft", "elem": [{"concat": ["vethaaaa", "vethaaaa"]}]}},
                {"set": {"family": "bridge", "name": "links", "table": "weft", "elem": [{"concat": ["vethaaaa", "vethbbbb", "tcp", 5432]}]}},
                {"set": {"family": "bridge", "name": "replies", "table": "weft", "elem": [{"concat": ["vethbbbb", "vethaaaa", "tcp", 5432]}]}}]"#,
        )
        .unwrap();
        assert!(has_icc(&items, &i));
        assert!(
            !has_icc(&items[..3], &i),
            "a missing reply element is missed"
        );
        // Deleting the tables works whether or not they exist.
        assert_eq!(delete_tables()["nftables"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn base_chains_read_back_whole_or_not() {
        // What `nft -j list table inet weft` (nftables 1.0.6) printed on a real kernel after
        // `weft network create x`: the listing's own form (handles, "tcp dport"-style
        // expressions nft chose), not what weft sent.
        let doc: Value = serde_json::from_str(include_str!("testdata/inet-listing.json")).unwrap();
        let listed: Vec<Value> = doc["nftables"].as_array().unwrap().clone();
        assert!(base_intact(&listed), "the real listing reads as intact");
        let flushed: Vec<Value> = listed
            .iter()
            .filter(|r| r["rule"]["chain"] != "guard")
            .cloned()
            .collect();
        assert!(flushed.len() < listed.len());
        assert!(!base_intact(&flushed), "a flushed guard chain is missed");
        // A drop rewritten to accept, in place.
        let text = serde_json::to_string(&listed).unwrap();
        let guard_drop = listed
            .iter()
            .position(|r| r["rule"]["chain"] == "guard" && r.to_string().contains("\"drop\""))
            .expect("the guard chain drops");
        let mut rewritten = listed.clone();
        let r = serde_json::to_string(&rewritten[guard_drop])
            .unwrap()
            .replace("\"drop\"", "\"accept\"");
        rewritten[guard_drop] = serde_json::from_str(&r).unwrap();
        assert_ne!(serde_json::to_string(&rewritten).unwrap(), text);
        assert!(
            !base_intact(&rewritten),
            "a rule rewritten to accept is missed"
        );
        // A rule added at the end of a base chain.
        let mut added = listed.clone();
        let mut extra = listed[guard_drop].clone();
        extra["rule"]["handle"] = json!(999);
        added.push(extra);
        assert!(!base_intact(&added), "an added rule is missed");
    }

    #[test]
    fn published_ports_read_back_by_content() {
        // `nft -j list table inet weft` (nftables 1.0.6) after `weft network create x` and
        // `weft sandbox create --network x -p 8080:80 -p 127.0.0.1:9090:90/udp s1`.
        let doc: Value =
            serde_json::from_str(include_str!("testdata/inet-listing-ports.json")).unwrap();
        let listed: Vec<Value> = doc["nftables"].as_array().unwrap().clone();
        let m = |host: Option<&str>, proto: &str, port: u16, to: u16| crate::model::PortMapping {
            host_ip: host.map(|h| h.parse().unwrap()),
            host_port: port,
            container_port: to,
            proto: proto.into(),
        };
        let s1 = super::super::PortRules {
            id: "0123456789ab".into(),
            addr: "172.18.0.2".parse().unwrap(),
            addr6: None,
            maps: vec![
                m(None, "tcp", 8080, 80),
                m(Some("127.0.0.1"), "udp", 9090, 90),
            ],
        };
        assert!(
            base_intact(&listed),
            "the ports' rules are the base chains'"
        );
        assert!(
            has_ports(&listed, &s1),
            "the real listing reads as published"
        );
        let mut elems = port_elems(&listed);
        elems.sort();
        let mut want = s1.elems();
        want.sort();
        assert_eq!(elems, want, "the listing's keys are the ones weft makes");
        assert_eq!(
            want.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "dnat_any4 element tcp . 8080",
                "dnat_any_port element tcp . 8080",
                "dnat_at4 element 127.0.0.1 . udp . 9090",
                "dnat_at4_port element 127.0.0.1 . udp . 9090",
            ]
        );
        // Content, not presence: the same keys pointing at another address, or another port.
        for (map, to) in [
            ("dnat_any4", json!("172.18.0.99")),
            ("dnat_at4_port", json!(91)),
        ] {
            let mut moved = listed.clone();
            let data = moved
                .iter_mut()
                .find(|i| i["map"]["name"] == map)
                .map(|i| &mut i["map"]["elem"][0][1])
                .unwrap();
            assert_ne!(*data, Value::Null);
            *data = to.clone();
            assert!(!has_ports(&moved, &s1), "{map} → {to} is missed");
            assert_eq!(port_elems(&moved).len(), 4, "the keys are all there still");
        }
        // A sandbox with another port, or the same port on another address, is not there.
        let mut other = s1.clone();
        other.maps[0].host_port = 8081;
        assert!(!has_ports(&listed, &other));
        // A purge deletes the keys it is given that are there, and nothing else.
        let purge = purge_ports(&listed, &[want[0].clone(), other.elems()[0].clone()]);
        assert_eq!(
            purge["nftables"].to_string(),
            json!([{"delete": {"element": {"family": "inet", "table": "weft",
                "name": "dnat_any4", "elem": [{"concat": ["tcp", 8080]}]}}}])
            .to_string()
        );
    }

    #[test]
    fn what_weft_does_not_make_is_found_and_purged_maps_first() {
        let doc: Value = serde_json::from_str(include_str!("testdata/inet-listing.json")).unwrap();
        let mut listed: Vec<Value> = doc["nftables"].as_array().unwrap().clone();
        // Control: the real listing of a network holds nothing weft does not make.
        assert_eq!(strangers(&listed, FAM), vec![]);
        assert!(listed
            .iter()
            .any(|i| i["chain"]["name"] == "nw-689b0f9c674c-in"));
        // An older weft's layout: a verdict map jumping to a sandbox's port chain.
        let obj = |kind: &str, name: &str| json!({kind: {"family": "inet", "table": "weft", "name": name}});
        listed.push(obj("chain", "pt-0123456789ab"));
        listed.push(
            json!({"map": {"family": "inet", "table": "weft", "name": "ports",
            "type": ["inet_proto", "inet_service"], "map": "verdict",
            "elem": [[{"concat": ["tcp", 80]}, {"jump": {"target": "pt-0123456789ab"}}]]}}),
        );
        assert_eq!(
            strangers(&listed, FAM),
            vec![
                ("chain".to_string(), "pt-0123456789ab".to_string()),
                ("map".to_string(), "ports".to_string())
            ]
        );
        assert_eq!(
            purge_strangers(&listed, FAM)["nftables"],
            json!([
                {"delete": obj("map", "ports")},
                {"flush": obj("chain", "pt-0123456789ab")},
                {"delete": obj("chain", "pt-0123456789ab")},
            ])
        );
        // The bridge table's own objects are known there.
        let bridge: Vec<Value> = bridge_base()
            .iter()
            .filter_map(|c| c.get("add").cloned())
            .filter(|a| a.get("rule").is_none() && a.get("table").is_none())
            .collect();
        assert!(bridge.len() >= 6, "{bridge:?}");
        assert_eq!(strangers(&bridge, BFAM), vec![]);
        // …and not in the inet table.
        assert!(strangers(&bridge, FAM).contains(&("set".to_string(), "noicc".to_string())));
    }

    #[test]
    fn remove_deletes_elements_before_chains() {
        let doc = batch(&[FwChange::Remove(net(false))]);
        let items = doc["nftables"].as_array().unwrap();
        let first_chain_delete = items
            .iter()
            .position(|c| c.get("delete").is_some_and(|d| d.get("chain").is_some()));
        let last_elem_delete = items
            .iter()
            .rposition(|c| c.get("delete").is_some_and(|d| d.get("element").is_some()));
        assert!(last_elem_delete.unwrap() < first_chain_delete.unwrap());
        // Nothing outside weft's table is ever named.
        for c in items {
            let s = c.to_string();
            assert!(
                s.contains(r#""table":"weft""#) || s.contains(r#""name":"weft""#),
                "{s}"
            );
        }
    }
}
