//! weft as a CNI plugin: when `CNI_COMMAND` is set, the `weft` binary speaks the CNI protocol
//! (spec 1.1.0, and the 0.3.0, 0.3.1, 0.4.0 and 1.0.0 that runtimes still send) — ADD, DEL,
//! CHECK, STATUS, VERSION and GC — as a drop-in for the reference `bridge` plugin: the
//! config's `name` is the weft network (created on first use from the bridge plugin's keys
//! and the `ipam` section), a container is a weft sandbox in the runtime's namespace
//! (`CNI_NETNS`), its interface is `CNI_IFNAME`. Another door, like `cli` and `api`: it
//! parses, calls the engine, and maps weft's errors to CNI's codes here.

mod config;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::error::Error;
use crate::model::{ConnectOptions, Endpoint, Network, NetworkCreate, SandboxCreate};
use crate::{Config, Engine};

pub use config::NetConf;

/// The versions this plugin speaks, oldest first.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The label that records which CNI container a sandbox is for (GC removes only these).
pub const CONTAINER_LABEL: &str = "cni.containerID";

/// A CNI error: the spec's code, a message, details.
#[derive(Debug)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }
}

/// Well-known codes (CNI spec, "Error" section).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Anything else (the reference plugins' "internal" code).
    pub const INTERNAL: u32 = 999;
}

/// weft's errors as CNI codes: the message is weft's own user message.
fn from_weft(e: Error) -> CniError {
    let c = match &e {
        Error::InvalidArgument(_)
        | Error::InvalidEndpointSettings(_)
        | Error::PoolOverlap
        | Error::NetworkNameExists(_)
        | Error::PredefinedCreate(_) => code::INVALID_CONFIG,
        Error::SandboxNotFound(_) => code::UNKNOWN_CONTAINER,
        Error::Unavailable(_) => code::TRY_AGAIN,
        Error::Store(_) => code::IO,
        _ => code::INTERNAL,
    };
    CniError::new(c, e.to_string())
}

type R<T> = std::result::Result<T, CniError>;

/// The CNI environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Env {
    pub fn from_process() -> Env {
        let v = |k: &str| std::env::var(k).unwrap_or_default();
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
        }
    }

    fn require(&self, what: &[&str]) -> R<()> {
        for w in what {
            let (name, val) = match *w {
                "CNI_CONTAINERID" => (w, &self.container_id),
                "CNI_NETNS" => (w, &self.netns),
                "CNI_IFNAME" => (w, &self.ifname),
                _ => continue,
            };
            if val.is_empty() {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("required env variable {name} missing"),
                ));
            }
        }
        Ok(())
    }
}

/// `weft` run as a CNI plugin (`CNI_COMMAND` set): the exit code. The result, or the error
/// JSON, goes to stdout.
pub fn main() -> i32 {
    let env = Env::from_process();
    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    let (out, code, version) = run(&env, &input);
    match out {
        Ok(Some(v)) => {
            println!("{v}");
            code
        }
        Ok(None) => code,
        Err(e) => {
            println!(
                "{}",
                json!({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details})
            );
            1
        }
    }
}

/// One call: the result (none for DEL, CHECK, STATUS, GC), the exit code, and the version to
/// answer errors in.
pub fn run(env: &Env, input: &[u8]) -> (R<Option<Value>>, i32, String) {
    if env.command == "VERSION" {
        let asked = serde_json::from_slice::<Value>(input)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .filter(|v| SUPPORTED.contains(&v.as_str()))
            .unwrap_or_else(|| "1.1.0".into());
        return (
            Ok(Some(
                json!({"cniVersion": asked, "supportedVersions": SUPPORTED}),
            )),
            0,
            asked,
        );
    }
    let conf = match NetConf::parse(input) {
        Ok(c) => c,
        Err(e) => return (Err(e), 1, "1.1.0".into()),
    };
    let version = conf.cni_version.clone();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (Err(CniError::new(code::IO, e.to_string())), 1, version),
    };
    let r = rt.block_on(async {
        match env.command.as_str() {
            "ADD" => add(env, &conf).await.map(Some),
            "DEL" => del(env, &conf).await.map(|_| None),
            "CHECK" => check(env, &conf).await.map(|_| None),
            "STATUS" => status(&conf).await.map(|_| None),
            "GC" => gc(&conf).await.map(|_| None),
            "" => Err(CniError::new(
                code::INVALID_ENV,
                "required env variable CNI_COMMAND missing",
            )),
            other => Err(CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND: {other}"),
            )),
        }
    });
    let code = if r.is_ok() { 0 } else { 1 };
    (r, code, version)
}

async fn open() -> R<Engine> {
    crate::cli::remote::open_beside_daemon(Config::from_env())
        .await
        .map_err(|e| CniError::new(code::TRY_AGAIN, format!("weft cannot serve: {e}")))
}

/// A sandbox name for a container id (ids are 64 hex digits; names allow more).
fn sandbox_name(container_id: &str) -> R<String> {
    let ok = !container_id.is_empty()
        && container_id.len() <= 128
        && container_id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && container_id.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_CONTAINERID {container_id:?} must be letters, digits, '_', '.' or '-', starting with a letter or digit"),
        ));
    }
    Ok(format!("cni-{container_id}"))
}

/// Whether the records say this sandbox was made for this CNI container.
fn is_for(sb: &crate::model::Sandbox, container_id: &str) -> bool {
    sb.labels.get(CONTAINER_LABEL).map(String::as_str) == Some(container_id)
}

/// The network for this config: found (its subnets must be the config's), or created from it.
async fn network(e: &Engine, conf: &NetConf) -> R<Network> {
    for _ in 0..3 {
        match e.network_named(&conf.name) {
            Ok(n) => {
                conf.matches(&n)?;
                return Ok(n);
            }
            Err(Error::NetworkNotFound(_)) => {}
            Err(x) => return Err(from_weft(x)),
        }
        let req: NetworkCreate = conf.network_create();
        match e.create_network(req).await {
            Ok(_) => {}
            // Another ADD made it meanwhile: take it.
            Err(Error::NetworkNameExists(_)) => {}
            Err(x) => return Err(from_weft(x)),
        }
    }
    e.network_named(&conf.name).map_err(from_weft)
}

fn endpoint_on(e: &Engine, sandbox_id: &str, net: &Network) -> R<Option<Endpoint>> {
    Ok(e.sandbox_endpoints(sandbox_id)
        .map_err(from_weft)?
        .into_iter()
        .find(|ep| ep.network_id == net.id))
}

async fn add(env: &Env, conf: &NetConf) -> R<Value> {
    env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
    let name = sandbox_name(&env.container_id)?;
    let netns = PathBuf::from(&env.netns);
    if !netns.exists() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {} does not exist", env.netns),
        ));
    }
    let e = open().await?;
    let net = network(&e, conf).await?;
    let connect = ConnectOptions {
        ifname: Some(env.ifname.clone()),
        ipv4: conf.args_ip.filter(|a| a.is_ipv4()),
        ipv6: conf.args_ip.filter(|a| a.is_ipv6()),
        ..Default::default()
    };
    let sb = match e.sandbox_named(&name) {
        Ok(sb) => {
            if !is_for(&sb, &env.container_id) {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("a weft sandbox named {name} exists that is not container {}'s: remove or rename it", env.container_id),
                ));
            }
            if sb.key != netns {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "container {} is already attached in namespace {}, not {}",
                        env.container_id,
                        sb.key.display(),
                        env.netns
                    ),
                ));
            }
            if let Some(ep) = endpoint_on(&e, &sb.id, &net)? {
                if ep.ifname == env.ifname {
                    // ADD again for what exists: the same answer.
                    return Ok(result(conf, &net, &ep, &env.netns));
                }
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "container {} is already on network {} (as {})",
                        env.container_id, conf.name, ep.ifname
                    ),
                ));
            }
            e.connect(&net.id, &sb.id, connect)
                .await
                .map_err(from_weft)?;
            sb
        }
        Err(Error::SandboxNotFound(_)) => {
            let mut labels = BTreeMap::new();
            labels.insert(CONTAINER_LABEL.to_string(), env.container_id.clone());
            e.create_sandbox(SandboxCreate {
                name: name.clone(),
                network: Some(net.name.clone()),
                connect,
                netns: Some(netns),
                ports: conf.ports.clone(),
                labels,
                ..Default::default()
            })
            .await
            .map_err(from_weft)?
        }
        Err(x) => return Err(from_weft(x)),
    };
    let ep = endpoint_on(&e, &sb.id, &net)?
        .ok_or_else(|| CniError::new(code::INTERNAL, "the endpoint vanished"))?;
    Ok(result(conf, &net, &ep, &env.netns))
}

/// The ADD result, in the config's version, after the previous plugin's (chaining).
fn result(conf: &NetConf, net: &Network, ep: &Endpoint, netns: &str) -> Value {
    let old = conf.cni_version.starts_with("0.");
    let mut prev = conf.prev_result.clone().unwrap_or_else(|| json!({}));
    let mut interfaces: Vec<Value> = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let mut ips: Vec<Value> = prev["ips"].as_array().cloned().unwrap_or_default();
    let mut routes: Vec<Value> = prev["routes"].as_array().cloned().unwrap_or_default();
    if net.driver == "bridge" {
        interfaces.push(json!({"name": crate::drivers::bridge::bridge_name(net)}));
        interfaces.push(json!({"name": crate::drivers::bridge::host_veth(&ep.id)}));
    }
    interfaces.push(json!({"name": ep.ifname, "mac": ep.mac, "sandbox": netns}));
    let index = interfaces.len() - 1;
    for (addr, gw) in [(ep.ipv4, ep.gateway_v4), (ep.ipv6, ep.gateway_v6)] {
        let Some(a) = addr else { continue };
        let gw = gw.or_else(|| {
            net.pools
                .iter()
                .find(|p| p.subnet.contains(a.ip()))
                .and_then(|p| p.gateway)
        });
        let mut ip = json!({"address": a.to_string(), "interface": index});
        if let Some(g) = gw {
            ip["gateway"] = json!(g.to_string());
            if !net.internal {
                let dst = if a.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                let r = json!({"dst": dst, "gw": g.to_string()});
                if !routes.contains(&r) {
                    routes.push(r);
                }
            }
        }
        if old {
            ip["version"] = json!(if a.is_ipv4() { "4" } else { "6" });
        }
        ips.push(ip);
    }
    prev["cniVersion"] = json!(conf.cni_version);
    prev["interfaces"] = json!(interfaces);
    prev["ips"] = json!(ips);
    prev["routes"] = json!(routes);
    if prev.get("dns").is_none() {
        prev["dns"] = conf.dns.clone().unwrap_or_else(|| json!({}));
    }
    prev
}

async fn del(env: &Env, conf: &NetConf) -> R<()> {
    env.require(&["CNI_CONTAINERID", "CNI_IFNAME"])?;
    let name = sandbox_name(&env.container_id)?;
    let e = open().await?;
    // Idempotent: whatever is gone already is fine.
    let Ok(net) = e.network_named(&conf.name) else {
        return Ok(());
    };
    // Only a sandbox whose record says it is this container's (not one that has its name).
    let Some(sb) = e
        .sandbox_named(&name)
        .ok()
        .filter(|sb| is_for(sb, &env.container_id))
    else {
        return Ok(());
    };
    let Some(ep) = endpoint_on(&e, &sb.id, &net)? else {
        return Ok(());
    };
    if ep.ifname != env.ifname {
        return Ok(());
    }
    let eps = e.sandbox_endpoints(&sb.id).map_err(from_weft)?;
    if eps.len() <= 1 {
        remove_sandbox(&e, &sb.id).await
    } else {
        match e.disconnect(&net.id, &sb.id, false).await {
            Ok(()) => Ok(()),
            Err(_) => e.disconnect(&net.id, &sb.id, true).await.map_err(from_weft),
        }
    }
}

/// Remove a CNI sandbox: the runtime's namespace may be gone already (containerd's DEL after
/// the container died), so a removal that cannot reach it is forced.
async fn remove_sandbox(e: &Engine, name: &str) -> R<()> {
    match e.remove_sandboxes(&[name], false).await {
        Ok(()) => Ok(()),
        Err(Error::SandboxNotFound(_)) => Ok(()),
        Err(_) => e
            .remove_sandboxes_with(&[name], true)
            .await
            .map(|_| ())
            .map_err(from_weft),
    }
}

async fn check(env: &Env, conf: &NetConf) -> R<()> {
    env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult: the result of the ADD",
        )
    })?;
    let name = sandbox_name(&env.container_id)?;
    let e = open().await?;
    let net = e.network_named(&conf.name).map_err(from_weft)?;
    conf.matches(&net)?;
    let sb = e
        .sandbox_named(&name)
        .ok()
        .filter(|sb| is_for(sb, &env.container_id))
        .ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!("container {} is not attached by weft", env.container_id),
            )
        })?;
    if sb.key.as_path() != std::path::Path::new(&env.netns) {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "container {} is in {}, not {}",
                env.container_id,
                sb.key.display(),
                env.netns
            ),
        ));
    }
    let ep = endpoint_on(&e, &sb.id, &net)?.ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "container {} is not on network {}",
                env.container_id, conf.name
            ),
        )
    })?;
    if ep.ifname != env.ifname {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("the interface is {}, not {}", ep.ifname, env.ifname),
        ));
    }
    // The addresses the runtime was told are the ones weft holds.
    let told: Vec<String> = prev["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
        if !told.contains(&a.to_string()) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("weft holds {a} for this container, which prevResult does not list"),
            ));
        }
    }
    // The kernel as the records say, as `weft system check` compares it.
    let findings = e.check().await.map_err(from_weft)?;
    let veth = crate::drivers::bridge::host_veth(&ep.id);
    let mine: Vec<String> = findings
        .iter()
        .filter(|f| {
            f.object.contains(&name) || f.object.contains(&veth) || f.object.contains(&net.name)
        })
        .map(|f| format!("{}: {}", f.object, f.detail))
        .collect();
    if !mine.is_empty() {
        return Err(CniError::new(
            code::INTERNAL,
            format!("the kernel differs from weft's records: {}", mine[0]),
        )
        .details(mine.join("; ")));
    }
    Ok(())
}

async fn status(conf: &NetConf) -> R<()> {
    let e = Engine::open(Config::from_env())
        .await
        .map_err(|x| CniError::new(code::NOT_AVAILABLE, format!("weft cannot serve: {x}")))?;
    if let Some(ipam) = &conf.ipam_driver {
        if !e.has_ipam(ipam) {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!("IPAM {ipam} is not installed in weft (weft plugin install …)"),
            ));
        }
    }
    Ok(())
}

async fn gc(conf: &NetConf) -> R<()> {
    let valid: Vec<(String, String)> = conf
        .valid_attachments
        .clone()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "GC needs cni.dev/valid-attachments"))?;
    let e = open().await?;
    let Ok(net) = e.network_named(&conf.name) else {
        return Ok(());
    };
    let mut stale = vec![];
    for ep in e.network_endpoints(&net.id).map_err(from_weft)? {
        let Ok(sb) = e.sandbox(&ep.sandbox_id) else {
            continue;
        };
        // Only what a CNI ADD made is GC's to remove.
        let Some(cid) = sb.labels.get(CONTAINER_LABEL) else {
            continue;
        };
        if !valid.iter().any(|(c, i)| c == cid && *i == ep.ifname) {
            stale.push((
                sb.id.clone(),
                e.sandbox_endpoints(&sb.id).map_err(from_weft)?.len(),
            ));
        }
    }
    for (name, count) in stale {
        if count <= 1 {
            remove_sandbox(&e, &name).await?;
        } else {
            e.disconnect(&net.id, &name, true)
                .await
                .map_err(from_weft)?;
        }
    }
    Ok(())
}

/// An IP a runtime asked for in `CNI_ARGS` (`IP=…`) or the config's `args.cni.ips`.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.parse().ok()
}
