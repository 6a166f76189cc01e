//! Docker-shaped JSON views: `docker network inspect` / `network ls` objects and the
//! `NetworkSettings` of `docker inspect`, with dockerd's key names and order (the docker CLI
//! prints inspect output verbatim, so the key order is what users see).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::model::{Endpoint, Network, Sandbox};

fn ipam_config(net: &Network) -> Value {
    if net.pools.is_empty() && net.predefined {
        return Value::Null;
    }
    let cfgs: Vec<Value> = net
        .pools
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("Subnet".into(), json!(p.subnet.to_string()));
            if let Some(r) = p.ip_range {
                m.insert("IPRange".into(), json!(r.to_string()));
            }
            if let Some(g) = p.gateway {
                m.insert("Gateway".into(), json!(g.to_string()));
            }
            if !p.aux_addresses.is_empty() {
                let aux: BTreeMap<&String, String> = p
                    .aux_addresses
                    .iter()
                    .map(|(k, v)| (k, v.to_string()))
                    .collect();
                m.insert("AuxiliaryAddresses".into(), json!(aux));
            }
            Value::Object(m)
        })
        .collect();
    json!(cfgs)
}

/// The Network object of `GET /networks/{id}` (and, with `containers: None`, of the list).
pub fn network(net: &Network, containers: Option<&[Endpoint]>) -> Value {
    let mut ctrs = Map::new();
    if let Some(eps) = containers {
        let mut eps: Vec<&Endpoint> = eps.iter().collect();
        eps.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        for e in eps {
            ctrs.insert(
                e.sandbox_id.clone(),
                json!({
                    "Name": e.name,
                    "EndpointID": e.id,
                    "MacAddress": e.mac,
                    "IPv4Address": e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                    "IPv6Address": e.ipv6.map(|a| a.to_string()).unwrap_or_default(),
                }),
            );
        }
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope.as_str(),
        "Driver": net.driver,
        "EnableIPv4": net.enable_ipv4,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {
            "Driver": net.ipam_driver,
            "Options": if net.predefined { Value::Null } else { json!(net.ipam_options) },
            "Config": ipam_config(net),
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": net.ingress,
        "ConfigFrom": { "Network": net.config_from.clone().unwrap_or_default() },
        "ConfigOnly": net.config_only,
        "Containers": ctrs,
        "Options": net.options,
        "Labels": net.labels,
    })
}

/// One entry of `NetworkSettings.Networks` (an EndpointSettings).
pub fn endpoint_settings(ep: &Endpoint, net: &Network) -> Value {
    let ipam_cfg = if ep.requested_v4.is_some() || ep.requested_v6.is_some() {
        let mut m = Map::new();
        if let Some(a) = ep.requested_v4 {
            m.insert("IPv4Address".into(), json!(a.to_string()));
        }
        if let Some(a) = ep.requested_v6 {
            m.insert("IPv6Address".into(), json!(a.to_string()));
        }
        Value::Object(m)
    } else {
        Value::Null
    };
    let dns_names = if net.predefined {
        Value::Null
    } else {
        let mut v = vec![ep.name.clone()];
        v.extend(ep.aliases.iter().cloned());
        v.push(ep.sandbox_id[..12].to_string());
        json!(v)
    };
    json!({
        "IPAMConfig": ipam_cfg,
        "Links": if ep.links.is_empty() { Value::Null } else { json!(ep.links) },
        "Aliases": if ep.aliases.is_empty() { Value::Null } else { json!(ep.aliases) },
        "MacAddress": ep.mac,
        "DriverOpts": if ep.driver_opts.is_empty() { Value::Null } else { json!(ep.driver_opts) },
        "GwPriority": ep.gw_priority,
        "NetworkID": net.id,
        "EndpointID": ep.id,
        "Gateway": ep.gateway_v4.map(|g| g.to_string()).unwrap_or_default(),
        "IPAddress": ep.ipv4.map(|a| a.ip().to_string()).unwrap_or_default(),
        "IPPrefixLen": ep.ipv4.map(|a| a.prefix()).unwrap_or(0),
        "IPv6Gateway": ep.gateway_v6.map(|g| g.to_string()).unwrap_or_default(),
        "GlobalIPv6Address": ep.ipv6.map(|a| a.ip().to_string()).unwrap_or_default(),
        "GlobalIPv6PrefixLen": ep.ipv6.map(|a| a.prefix()).unwrap_or(0),
        "DNSNames": dns_names,
    })
}

/// `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
fn ports(sb: &Sandbox) -> Value {
    let mut m = Map::new();
    for p in &sb.ports {
        let k = format!("{}/{}", p.container_port, p.proto);
        let v = json!({
            "HostIp": p.host_ip_text(),
            "HostPort": p.host_port.to_string(),
        });
        match m.get_mut(&k) {
            Some(Value::Array(a)) => a.push(v),
            _ => {
                m.insert(k, json!([v]));
            }
        }
    }
    Value::Object(m)
}

/// `docker inspect <container>`, the parts a network engine owns; `files`: where its
/// resolv.conf, hosts and hostname are (empty paths when they could not be written).
pub fn sandbox(
    sb: &Sandbox,
    eps: &[(Endpoint, Network)],
    files: Option<&crate::engine::SandboxFiles>,
) -> Value {
    let path = |f: fn(&crate::engine::SandboxFiles) -> &std::path::PathBuf| {
        files
            .map(|x| f(x).display().to_string())
            .unwrap_or_default()
    };
    let mut nets = Map::new();
    for (ep, net) in eps {
        nets.insert(net.name.clone(), endpoint_settings(ep, net));
    }
    let primary = eps.iter().find(|(e, _)| e.default_route).or(eps.first());
    json!({
        "Id": sb.id,
        "Created": sb.created,
        "Name": format!("/{}", sb.name),
        "State": { "Status": "running", "Running": true },
        "ResolvConfPath": path(|f| &f.resolv_conf),
        "HostnamePath": path(|f| &f.hostname),
        "HostsPath": path(|f| &f.hosts),
        "HostConfig": {
            "NetworkMode": sb.network_mode,
            "Dns": sb.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "DnsSearch": sb.dns_search,
            "DnsOptions": sb.dns_options,
            "PortBindings": ports(sb),
        },
        "NetworkSettings": {
            "SandboxID": sb.id,
            "SandboxKey": sb.key.display().to_string(),
            "Ports": ports(sb),
            "Gateway": primary.and_then(|(e, _)| e.gateway_v4).map(|g| g.to_string()).unwrap_or_default(),
            "IPAddress": primary.and_then(|(e, _)| e.ipv4).map(|a| a.ip().to_string()).unwrap_or_default(),
            "MacAddress": primary.map(|(e, _)| e.mac.clone()).unwrap_or_default(),
            "Networks": nets,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NsMode, Pool};

    fn net() -> Network {
        let mut n = crate::engine::network::blank_network("web", "bridge");
        n.id = "n".repeat(64);
        n.created = "2026-01-01T00:00:00.000000000Z".into();
        n.pools = vec![Pool {
            pool_id: "p".into(),
            subnet: "172.30.0.0/16".parse().unwrap(),
            ip_range: Some("172.30.1.0/24".parse().unwrap()),
            gateway: Some("172.30.1.254".parse().unwrap()),
            aux_addresses: BTreeMap::new(),
            user_subnet: true,
        }];
        n.labels = [("trial-bridge".to_string(), String::new())].into();
        n.realized = true;
        n
    }

    fn ep(sandbox: &str, ip: &str, default_route: bool) -> Endpoint {
        Endpoint {
            id: format!("{sandbox}ep"),
            network_id: "n".repeat(64),
            sandbox_id: format!("{sandbox:0<64}"),
            name: sandbox.into(),
            ifname: "eth0".into(),
            mac: "02:42:ac:1e:01:02".into(),
            ipv4: Some(ip.parse().unwrap()),
            ipv6: None,
            pool_v4: Some("p".into()),
            pool_v6: None,
            gateway_v4: Some("172.30.1.254".parse().unwrap()),
            gateway_v6: None,
            gateway_onlink: false,
            requested_v4: None,
            requested_v6: None,
            aliases: vec!["search".into()],
            links: vec![],
            driver_opts: BTreeMap::new(),
            gw_priority: 0,
            order: 0,
            default_route,
            host: None,
        }
    }

    #[test]
    fn network_inspect_has_dockerds_keys_in_dockerds_order() {
        let eps = [
            ep("b", "172.30.1.3/16", true),
            ep("a", "172.30.1.2/16", true),
        ];
        let v = network(&net(), Some(&eps));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "Name",
                "Id",
                "Created",
                "Scope",
                "Driver",
                "EnableIPv4",
                "EnableIPv6",
                "IPAM",
                "Internal",
                "Attachable",
                "Ingress",
                "ConfigFrom",
                "ConfigOnly",
                "Containers",
                "Options",
                "Labels"
            ]
        );
        assert_eq!(
            v["IPAM"]["Config"],
            json!([{"Subnet": "172.30.0.0/16", "IPRange": "172.30.1.0/24", "Gateway": "172.30.1.254"}])
        );
        // Containers keyed by sandbox id, in id order, with the prefix length.
        let c: Vec<&String> = v["Containers"].as_object().unwrap().keys().collect();
        assert!(c[0].starts_with('a') && c[1].starts_with('b'));
        assert_eq!(v["Containers"][c[0]]["IPv4Address"], "172.30.1.2/16");
        // The list view has no containers at all.
        assert_eq!(network(&net(), None)["Containers"], json!({}));
    }

    #[test]
    fn sandbox_inspect_takes_the_default_route_endpoint_as_primary() {
        let sb = Sandbox {
            id: "s".repeat(64),
            name: "api".into(),
            created: String::new(),
            network_mode: "web".into(),
            mode: NsMode::Owned,
            key: "/run/weft/netns/api".into(),
            next_order: 2,
            dns: vec![],
            dns_search: vec![],
            dns_options: vec![],
            hostname: None,
            ports: vec![],
            exposed: vec![],
            labels: Default::default(),
        };
        let mut other = net();
        other.name = "back".into();
        let eps = vec![
            (ep("s", "10.0.0.5/24", false), other),
            (ep("s", "172.30.1.2/16", true), net()),
        ];
        let v = sandbox(&sb, &eps, None);
        assert_eq!(v["Name"], "/api");
        assert_eq!(v["ResolvConfPath"], "");
        assert_eq!(v["NetworkSettings"]["IPAddress"], "172.30.1.2");
        assert_eq!(v["NetworkSettings"]["SandboxKey"], "/run/weft/netns/api");
        let web = &v["NetworkSettings"]["Networks"]["web"];
        assert_eq!(web["IPPrefixLen"], 16);
        assert_eq!(web["Aliases"], json!(["search"]));
        assert_eq!(web["DNSNames"], json!(["s", "search", "s00000000000"]));
    }
}
