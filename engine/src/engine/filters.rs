//! Filters and request checks that need no kernel: `network ls/prune --filter` (Docker's
//! keys: driver, id, name, scope, type, label, label!, dangling, until) and the IPAM config
//! checks the docker CLI makes before it sends a create request.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{parse_bool, IpamConfigRequest, Network, NetworkFilters};
use crate::store::{list_json, ReadTxn, Table};

use super::records::network_endpoints;

/// All networks matching `f`, sorted by name.
pub fn networks(r: &dyn ReadTxn, f: &NetworkFilters) -> Result<Vec<Network>> {
    let mut keep = Vec::new();
    for n in list_json::<Network>(r, Table::Networks)? {
        if network_matches(r, &n, f)? {
            keep.push(n);
        }
    }
    keep.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(keep)
}

/// The filters `network prune` takes.
pub fn check_prune_filters(f: &NetworkFilters) -> Result<()> {
    for k in f.filters.keys() {
        if !["label", "label!", "until"].contains(&k.as_str()) {
            return Err(Error::invalid(format!("invalid filter '{k}'")));
        }
    }
    Ok(())
}

/// Does an unused network match `network prune`'s filters?
pub fn prunable(n: &Network, f: &NetworkFilters) -> Result<bool> {
    Ok(labels_match(&n.labels, f) && until_matches(&n.created, f)?)
}

/// The checks the docker CLI makes before it sends a create request (and dockerd repeats).
pub fn validate_ipam_config(cfgs: &[IpamConfigRequest]) -> Result<()> {
    for (i, c) in cfgs.iter().enumerate() {
        let Some(s) = c.subnet else {
            if c.ip_range.is_some() || c.gateway.is_some() || !c.aux_addresses.is_empty() {
                return Err(Error::invalid(
                    "every ip-range or gateway must have a corresponding subnet",
                ));
            }
            continue;
        };
        if let Some(r) = c.ip_range {
            if !s.contains(r.network()) || r.prefix() < s.prefix() || r.is_ipv4() != s.is_ipv4() {
                return Err(Error::invalid(format!("no matching subnet for range {r}")));
            }
        }
        if let Some(g) = c.gateway {
            if !s.contains(g) || g.is_ipv4() != s.is_ipv4() {
                return Err(Error::invalid(format!(
                    "no matching subnet for gateway {g}"
                )));
            }
        }
        for ip in c.aux_addresses.values() {
            if !s.contains(*ip) || ip.is_ipv4() != s.is_ipv4() {
                return Err(Error::invalid(format!(
                    "no matching subnet for aux-address {ip}"
                )));
            }
        }
        for other in &cfgs[..i] {
            if let Some(o) = other.subnet {
                if crate::ipam::native::overlaps(&o, &s) {
                    return Err(Error::invalid(
                        "multiple overlapping subnet configuration is not supported",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn labels_match(labels: &BTreeMap<String, String>, f: &NetworkFilters) -> bool {
    let m = |spec: &str| match spec.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(spec),
    };
    f.filters
        .get("label")
        .is_none_or(|v| v.iter().all(|s| m(s)))
        && f.filters
            .get("label!")
            .is_none_or(|v| v.iter().all(|s| !m(s)))
}

fn until_matches(created: &str, f: &NetworkFilters) -> Result<bool> {
    let Some(untils) = f.filters.get("until") else {
        return Ok(true);
    };
    let c = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::internal(format!("bad Created {created}: {e}")))?;
    for u in untils {
        let limit = parse_until(u)?;
        if c >= limit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `until=` takes a timestamp (RFC 3339 or Unix seconds) or a Go duration ago ("10m", "24h").
fn parse_until(u: &str) -> Result<time::OffsetDateTime> {
    let now = time::OffsetDateTime::now_utc();
    if let Ok(t) = time::OffsetDateTime::parse(u, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    if let Ok(secs) = u.parse::<i64>() {
        return time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| Error::invalid(e.to_string()));
    }
    let (num, unit) = u.split_at(
        u.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(u.len()),
    );
    let n: f64 = num.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid until filter {u:?}: use a timestamp or a duration like 24h"
        ))
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(Error::invalid(format!(
                "invalid until filter {u:?}: use a timestamp or a duration like 24h"
            )))
        }
    };
    Ok(now - time::Duration::seconds_f64(secs))
}

pub fn network_matches(r: &dyn ReadTxn, n: &Network, f: &NetworkFilters) -> Result<bool> {
    for (k, vals) in &f.filters {
        let ok = match k.as_str() {
            "driver" => vals.contains(&n.driver),
            "id" => vals.iter().any(|v| n.id.contains(v.as_str())),
            "name" => vals.iter().any(|v| n.name.contains(v.as_str())),
            "scope" => vals.iter().any(|v| v == n.scope.as_str()),
            "type" => {
                for v in vals {
                    if v != "custom" && v != "builtin" {
                        return Err(Error::invalid(format!("invalid filter 'type={v}'")));
                    }
                }
                vals.iter().any(|v| (v == "builtin") == n.predefined)
            }
            "label" | "label!" => labels_match(&n.labels, f),
            "dangling" => {
                let unused = !n.predefined && network_endpoints(r, &n.id)?.is_empty();
                vals.iter().any(|v| match parse_bool(v) {
                    Some(b) => b == unused,
                    None => false,
                })
            }
            other => return Err(Error::invalid(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{mem::MemStore, put_json, Store, Txn};
    use std::sync::Arc;

    fn net(name: &str, driver: &str, labels: &[(&str, &str)], created: &str) -> Network {
        let mut n = crate::engine::network::blank_network(name, driver);
        n.created = created.into();
        n.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n
    }

    #[test]
    fn docker_filters() {
        let s: Arc<dyn Store> = Arc::new(MemStore::new());
        let mut w = Txn::new(s.clone()).unwrap();
        let mut a = net(
            "alpha",
            "bridge",
            &[("env", "prod")],
            "2020-01-01T00:00:00.000000000Z",
        );
        a.id = format!("a{}", "0".repeat(63));
        let mut b = net(
            "beta",
            "macvlan",
            &[("env", "dev"), ("x", "")],
            "2999-01-01T00:00:00.000000000Z",
        );
        b.id = format!("b{}", "0".repeat(63));
        put_json(&mut w, Table::Networks, &a.id, &a).unwrap();
        put_json(&mut w, Table::Networks, &b.id, &b).unwrap();
        s.apply(&w.into_changes()).unwrap();
        let r = s.read().unwrap();
        let names = |items: &[&str]| -> Vec<String> {
            networks(&*r, &NetworkFilters::parse(items.iter().copied()).unwrap())
                .unwrap()
                .into_iter()
                .map(|n| n.name)
                .collect()
        };
        assert_eq!(names(&[]), ["alpha", "beta"]);
        assert_eq!(names(&["driver=macvlan"]), ["beta"]);
        assert_eq!(names(&["label=env=prod"]), ["alpha"]);
        assert_eq!(names(&["label=x"]), ["beta"]);
        assert_eq!(names(&["label!=x"]), ["alpha"]);
        assert_eq!(names(&["name=et"]), ["beta"]);
        assert_eq!(names(&["id=a000"]), ["alpha"]);
        assert_eq!(names(&["dangling=true"]), ["alpha", "beta"]);
        assert_eq!(names(&["type=custom", "driver=bridge"]), ["alpha"]);
        assert_eq!(
            networks(&*r, &NetworkFilters::parse(["bogus=1"]).unwrap())
                .unwrap_err()
                .to_string(),
            "invalid filter 'bogus'"
        );
        let f = NetworkFilters::parse(["until=24h"]).unwrap();
        assert!(prunable(&a, &f).unwrap());
        assert!(!prunable(&b, &f).unwrap());
        assert!(check_prune_filters(&NetworkFilters::parse(["driver=x"]).unwrap()).is_err());
    }
}
