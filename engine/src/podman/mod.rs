//! weft as Podman's network backend: run under the name `netavark` (a symlink to the weft
//! binary in the directory containers.conf's `helper_binaries_dir` names), it speaks
//! netavark's protocol — `netavark [--config DIR] [--rootless=B] [--aardvark-binary=P]
//! setup|teardown NETNS` with the container's networks as JSON on stdin, a status block per
//! network on stdout, `{"error": …}` and exit 1 on failure. Podman's networks become weft
//! networks (made on first use from the `network_info` Podman sends, labelled with Podman's
//! id, removed when their last container goes), a container a weft sandbox in Podman's
//! namespace with Podman's static addresses, aliases (answered by weft's DNS, in the daemon)
//! and port mappings. Another door, like `cli`, `api` and `cni`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::Error;
use crate::model::{
    ConnectOptions, Endpoint, IpamConfigRequest, Network, NetworkCreate, PortMapping, SandboxCreate,
};
use crate::{Config, Engine};

/// The netavark version whose protocol this speaks (Podman 4.3's).
pub const NETAVARK_VERSION: &str = "1.4.0";
/// The label recording Podman's id of a network weft made for it.
pub const NETWORK_LABEL: &str = "weft.podman.id";
/// The label recording the Podman container a sandbox is for.
pub const CONTAINER_LABEL: &str = "podman.containerID";

#[derive(Debug, Deserialize)]
pub struct NetworkOptions {
    pub container_id: String,
    pub container_name: String,
    #[serde(default)]
    pub container_hostname: Option<String>,
    pub networks: HashMap<String, PerNetwork>,
    pub network_info: HashMap<String, PodmanNetwork>,
    #[serde(default)]
    pub port_mappings: Option<Vec<PodmanPort>>,
}

#[derive(Debug, Deserialize)]
pub struct PerNetwork {
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    pub interface_name: String,
    #[serde(default)]
    pub static_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub static_mac: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PodmanNetwork {
    pub name: String,
    pub id: String,
    pub driver: String,
    #[serde(default)]
    pub network_interface: Option<String>,
    #[serde(default)]
    pub subnets: Option<Vec<PodmanSubnet>>,
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub dns_enabled: bool,
    #[serde(default)]
    pub options: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
pub struct PodmanSubnet {
    pub subnet: IpNetwork,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
pub struct PodmanPort {
    pub container_port: u16,
    #[serde(default)]
    pub host_ip: String,
    pub host_port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub range: u16,
}

/// Whether this process was started as `netavark`.
pub fn invoked_as_netavark() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "netavark"))
        .unwrap_or(false)
}

/// `weft` run as `netavark`: the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut file: Option<String> = None;
    let mut rest = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--version" | "-V" | "version" => {
                println!(
                    "netavark {NETAVARK_VERSION} (weft {})",
                    env!("CARGO_PKG_VERSION")
                );
                return 0;
            }
            "-f" | "--file" => file = it.next().cloned(),
            // What netavark takes that weft does not need: aardvark's config dir, rootless,
            // the aardvark binary (weft's daemon answers DNS), firewall driver.
            "-c" | "--config" | "-r" | "--rootless" | "-a" | "--aardvark-binary"
            | "--firewall-driver" => {
                it.next();
            }
            s if s.starts_with("--") && s.contains('=') => {}
            s => rest.push(s.to_string()),
        }
    }
    let r = (|| {
        let (cmd, netns) = match rest.as_slice() {
            [c, ns] => (c.as_str(), ns.clone()),
            _ => {
                return Err(format!(
                    "usage: netavark [options] setup|teardown NETNS (weft's Podman backend; got {rest:?})"
                ))
            }
        };
        let mut input = Vec::new();
        match &file {
            Some(f) if f != "/dev/stdin" && f != "-" => {
                input = std::fs::read(f).map_err(|e| format!("cannot read {f}: {e}"))?
            }
            _ => {
                std::io::stdin()
                    .read_to_end(&mut input)
                    .map_err(|e| format!("reading stdin: {e}"))?;
            }
        }
        let opts: NetworkOptions = serde_json::from_slice(&input)
            .map_err(|e| format!("failed to decode the network options: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let e = crate::cli::remote::open_beside_daemon(Config::from_env())
                .await
                .map_err(|e| e.to_string())?;
            match cmd {
                "setup" => setup(&e, &netns, &opts).await.map(Some),
                "teardown" => teardown(&e, &opts).await.map(|_| None),
                other => Err(format!("unknown command {other}: setup or teardown")),
            }
        })
    })();
    match r {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(msg) => {
            println!("{}", json!({ "error": msg }));
            1
        }
    }
}

fn weft_err(e: Error) -> String {
    e.to_string()
}

/// The weft network for Podman's: found (it must be the one made for this Podman network),
/// or made from what Podman sent.
async fn network(e: &Engine, p: &PodmanNetwork) -> Result<Network, String> {
    for _ in 0..3 {
        match e.network_named(&p.name) {
            Ok(n) => {
                return match n.labels.get(NETWORK_LABEL) {
                    Some(id) if *id == p.id => Ok(n),
                    Some(_) if e.network_endpoints(&n.id).map_err(weft_err)?.is_empty() => {
                        // Podman's network of that name was made again (a new id): so is ours.
                        e.remove_network(&n.id).await.map_err(weft_err)?;
                        continue;
                    }
                    _ => Err(format!(
                        "a weft network named {} exists that weft did not make for this Podman network: rename one of them",
                        p.name
                    )),
                };
            }
            Err(Error::NetworkNotFound(_)) => {}
            Err(x) => return Err(weft_err(x)),
        }
        match e.create_network(create_request(p)?).await {
            Ok(_) | Err(Error::NetworkNameExists(_)) => {}
            Err(x) => return Err(weft_err(x)),
        }
    }
    e.network_named(&p.name).map_err(weft_err)
}

fn create_request(p: &PodmanNetwork) -> Result<NetworkCreate, String> {
    let mut options = BTreeMap::new();
    let popts = p.options.clone().unwrap_or_default();
    let driver = match p.driver.as_str() {
        "bridge" => {
            if let Some(i) = &p.network_interface {
                options.insert("com.docker.network.bridge.name".into(), i.clone());
            }
            "bridge"
        }
        "macvlan" => {
            if let Some(i) = &p.network_interface {
                options.insert("parent".into(), i.clone());
            }
            if let Some(m) = popts.get("mode") {
                options.insert("macvlan_mode".into(), m.clone());
            }
            "macvlan"
        }
        other => {
            return Err(format!(
                "driver {other} is not supported by weft's Podman backend (bridge, macvlan)"
            ))
        }
    };
    if let Some(m) = popts.get("mtu") {
        options.insert("com.docker.network.driver.mtu".into(), m.clone());
    }
    let mut labels = BTreeMap::new();
    labels.insert(NETWORK_LABEL.to_string(), p.id.clone());
    Ok(NetworkCreate {
        name: p.name.clone(),
        driver: Some(driver.into()),
        internal: p.internal,
        enable_ipv6: Some(p.ipv6_enabled),
        ipam_config: p
            .subnets
            .iter()
            .flatten()
            .map(|s| IpamConfigRequest {
                subnet: Some(s.subnet),
                gateway: s.gateway,
                ..Default::default()
            })
            .collect(),
        options,
        labels,
        ..Default::default()
    })
}

fn ports(opts: &NetworkOptions) -> Result<Vec<PortMapping>, String> {
    let mut out = vec![];
    for p in opts.port_mappings.iter().flatten() {
        let host_ip = match p.host_ip.as_str() {
            "" => None,
            h => Some(
                h.parse::<IpAddr>()
                    .map_err(|_| format!("port mapping host ip {h:?}"))?,
            ),
        };
        let protos = if p.protocol.is_empty() {
            "tcp"
        } else {
            p.protocol.as_str()
        };
        for proto in protos.split(',') {
            for k in 0..p.range.max(1) {
                out.push(PortMapping {
                    proto: proto.trim().to_string(),
                    host_ip,
                    host_port: p.host_port.checked_add(k).ok_or("port range past 65535")?,
                    container_port: p
                        .container_port
                        .checked_add(k)
                        .ok_or("port range past 65535")?,
                });
            }
        }
    }
    Ok(out)
}

async fn setup(e: &Engine, netns: &str, opts: &NetworkOptions) -> Result<Value, String> {
    let mut names: Vec<&String> = opts.networks.keys().collect();
    names.sort();
    let mut out = serde_json::Map::new();
    let name = opts.container_name.clone();
    let mut sandbox_id: Option<String> = None;
    // A sandbox of that name left by a container Podman no longer has (its teardown never
    // came): it goes, if its namespace is gone too.
    if let Ok(old) = e.sandbox_named(&name) {
        if old.labels.get(CONTAINER_LABEL) == Some(&opts.container_id) {
            sandbox_id = Some(old.id.clone());
        } else if old.labels.contains_key(CONTAINER_LABEL) && !old.key.exists() {
            e.remove_sandboxes_with(&[&old.id], true)
                .await
                .map_err(weft_err)?;
        } else {
            return Err(format!(
                "a weft sandbox named {name} exists that is not this container's"
            ));
        }
    }
    for (i, netname) in names.iter().enumerate() {
        let per = &opts.networks[*netname];
        let info = opts
            .network_info
            .get(*netname)
            .ok_or_else(|| format!("network {netname} has no network_info"))?;
        let net = network(e, info).await?;
        let mut connect = ConnectOptions {
            ifname: Some(per.interface_name.clone()),
            mac: per.static_mac.clone(),
            aliases: if info.dns_enabled {
                per.aliases.clone().unwrap_or_default()
            } else {
                vec![]
            },
            ..Default::default()
        };
        for ip in per.static_ips.iter().flatten() {
            if ip.is_ipv4() {
                connect.ipv4 = Some(*ip);
            } else {
                connect.ipv6 = Some(*ip);
            }
        }
        let r = match &sandbox_id {
            None if i == 0 => {
                let mut labels = BTreeMap::new();
                labels.insert(CONTAINER_LABEL.to_string(), opts.container_id.clone());
                e.create_sandbox(SandboxCreate {
                    name: name.clone(),
                    network: Some(net.name.clone()),
                    connect,
                    netns: Some(PathBuf::from(netns)),
                    hostname: opts.container_hostname.clone(),
                    ports: ports(opts)?,
                    labels,
                    ..Default::default()
                })
                .await
                .map(|sb| sandbox_id = Some(sb.id))
            }
            _ => {
                let sb = sandbox_id.clone().unwrap_or_else(|| name.clone());
                e.connect(&net.id, &sb, connect).await.map(|_| ())
            }
        };
        if let Err(x) = r {
            // What this setup did goes, as netavark's does on failure.
            let _ = teardown(e, opts).await;
            return Err(weft_err(x));
        }
        let sb = sandbox_id.clone().unwrap_or_default();
        let ep = e
            .sandbox_endpoints(&sb)
            .map_err(weft_err)?
            .into_iter()
            .find(|ep| ep.network_id == net.id)
            .ok_or("the endpoint vanished")?;
        out.insert(net.name.clone(), status_block(&net, &ep, info.dns_enabled));
    }
    Ok(Value::Object(out))
}

fn status_block(net: &Network, ep: &Endpoint, dns: bool) -> Value {
    let mut subnets = vec![];
    for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
        let gw = net
            .pools
            .iter()
            .find(|p| p.subnet.contains(a.ip()))
            .and_then(|p| p.gateway)
            .filter(|_| !net.internal);
        subnets.push(json!({"ipnet": a.to_string(), "gateway": gw}));
    }
    // weft's resolver listens on the network's gateway (in the daemon).
    let dns_ips: Vec<IpAddr> = if dns {
        net.pools.iter().filter_map(|p| p.gateway).collect()
    } else {
        vec![]
    };
    json!({
        // No `dns.podman` search domain (aardvark's zone): weft's resolver answers the names
        // themselves (NAME, NAME.NETWORK), and a search domain it does not serve would have
        // every lookup of a name try it first.
        "dns_search_domains": Vec::<String>::new(),
        "dns_server_ips": dns_ips,
        "interfaces": { ep.ifname.clone(): {"mac_address": ep.mac, "subnets": subnets} },
    })
}

async fn teardown(e: &Engine, opts: &NetworkOptions) -> Result<(), String> {
    let name = &opts.container_name;
    let Ok(sb) = e.sandbox_named(name) else {
        return cleanup(e, opts).await;
    };
    if sb.labels.get(CONTAINER_LABEL) != Some(&opts.container_id) {
        return cleanup(e, opts).await;
    }
    let eps = e.sandbox_endpoints(&sb.id).map_err(weft_err)?;
    let leaving: Vec<&Endpoint> = eps
        .iter()
        .filter(|ep| {
            opts.networks.keys().any(|n| {
                e.network_named(n)
                    .map(|net| net.id == ep.network_id)
                    .unwrap_or(false)
            })
        })
        .collect();
    if leaving.len() == eps.len() {
        if let Err(x) = e.remove_sandboxes(&[&sb.id], false).await {
            tracing::warn!("removing {name}: {x}: forcing it");
            e.remove_sandboxes_with(&[&sb.id], true)
                .await
                .map_err(weft_err)?;
        }
    } else {
        for ep in leaving {
            let net = e.network(&ep.network_id).map_err(weft_err)?;
            e.disconnect(&net.id, &sb.id, true)
                .await
                .map_err(weft_err)?;
        }
    }
    cleanup(e, opts).await
}

/// Networks weft made for Podman that have no container left are removed (Podman makes them
/// again, from its own config, at the next setup).
async fn cleanup(e: &Engine, opts: &NetworkOptions) -> Result<(), String> {
    for n in opts.networks.keys() {
        let Ok(net) = e.network_named(n) else {
            continue;
        };
        if !net.labels.contains_key(NETWORK_LABEL) {
            continue;
        }
        if e.network_endpoints(&net.id).map_err(weft_err)?.is_empty() {
            match e.remove_network(&net.id).await {
                Ok(()) | Err(Error::NetworkNotFound(_)) => {}
                // Another container joined meanwhile.
                Err(Error::Conflict(_)) => {}
                Err(x) => tracing::warn!("removing network {}: {x}", net.name),
            }
        }
    }
    Ok(())
}
