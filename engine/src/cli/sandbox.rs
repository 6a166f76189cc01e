//! `weft sandbox …`: create, ls, inspect (like `docker inspect` for a container), rm, exec.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use super::output::{err_line, print_inspect, table, Exit};
use crate::model::*;
use crate::{view, Engine, Error};

#[derive(Subcommand, Debug, Clone)]
// One command per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum SandboxCmd {
    /// Create a sandbox (a network namespace) and connect it.
    Create {
        /// bridge (default), host, none, container:NAME, or a network.
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        ip: Option<IpAddr>,
        #[arg(long)]
        ip6: Option<IpAddr>,
        #[arg(long)]
        alias: Vec<String>,
        #[arg(long = "mac-address")]
        mac_address: Option<String>,
        /// Use this existing namespace (e.g. /proc/PID/ns/net) instead of creating one.
        #[arg(long)]
        netns: Option<PathBuf>,
        /// A DNS server for names that are not sandboxes' (repeatable).
        #[arg(long)]
        dns: Vec<IpAddr>,
        /// A DNS search domain (repeatable).
        #[arg(long = "dns-search")]
        dns_search: Vec<String>,
        /// A resolver option, e.g. ndots:2 (repeatable).
        #[arg(long = "dns-option")]
        dns_option: Vec<String>,
        /// The sandbox's hostname (default: its short id).
        #[arg(long)]
        hostname: Option<String>,
        /// Publish a port: [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp|sctp] (repeatable).
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Publish every --expose'd port on a free host port.
        #[arg(short = 'P', long = "publish-all")]
        publish_all: bool,
        /// A port the sandbox serves: PORT[-END][/tcp|udp|sctp] (repeatable; published by -P).
        #[arg(long)]
        expose: Vec<String>,
        /// A legacy link to another sandbox: NAME[:ALIAS] (repeatable): /etc/hosts and
        /// environment for `sandbox exec`.
        #[arg(long)]
        link: Vec<String>,
        name: String,
    },
    /// List sandboxes.
    Ls {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Show a sandbox like `docker inspect` shows a container.
    Inspect {
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(required = true)]
        sandboxes: Vec<String>,
    },
    /// Remove sandboxes.
    Rm {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        sandboxes: Vec<String>,
    },
    /// Run a command inside a sandbox's network namespace.
    Exec {
        sandbox: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

fn sandbox_view(engine: &Engine, sb: &Sandbox) -> Result<Value, Error> {
    let mut eps = Vec::new();
    for ep in engine.sandbox_endpoints(&sb.id)? {
        let net = engine.network(&ep.network_id)?;
        eps.push((ep, net));
    }
    let files = engine.sandbox_file_paths(&sb.id);
    Ok(view::sandbox(sb, &eps, Some(&files)))
}

/// `weft sandbox exec SANDBOX CMD…` (never returns on success): the engine says how — the
/// daemon, while one serves the state (it keeps the sandbox's files current and sees every
/// network, global ones included), else [`Engine::exec_plan_at`] from the store — and this
/// process runs it.
pub fn exec(
    root: &std::path::Path,
    run_root: &std::path::Path,
    sock: Option<std::path::PathBuf>,
    sandbox: &str,
    cmd: &[String],
) -> Exit {
    let plan = match sock.and_then(|s| super::remote::exec_plan(&s, sandbox)) {
        Some(Ok(p)) => p,
        Some(Err(code)) => return code,
        None => match Engine::exec_plan_at(root, run_root, sandbox) {
            Ok(p) => p,
            Err(e) => {
                err_line(e);
                return 1;
            }
        },
    };
    err_line(plan.exec(cmd));
    127
}

/// `weft port NAME`: a sandbox's published ports, as `docker port` prints them.
pub fn port(engine: &Engine, name: &str) -> Result<Exit, Error> {
    for p in &engine.sandbox(name)?.ports {
        outln!(
            "{}/{} -> {}:{}",
            p.container_port,
            p.proto,
            p.host_ip_text(),
            p.host_port
        );
    }
    Ok(0)
}

pub async fn run(engine: &Engine, cmd: SandboxCmd) -> Result<Exit, Error> {
    match cmd {
        SandboxCmd::Create {
            network,
            ip,
            ip6,
            alias,
            mac_address,
            netns,
            dns,
            dns_search,
            dns_option,
            hostname,
            publish,
            publish_all,
            expose,
            link,
            name,
        } => {
            let mut ports = publish
                .iter()
                .map(|p| PortMapping::parse(p))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            let mut exposed = Vec::new();
            for m in expose
                .iter()
                .map(|e| {
                    let ms = PortMapping::parse(e)?;
                    if ms.iter().any(|m| m.host_port != 0 || m.host_ip.is_some()) {
                        return Err(Error::invalid(format!(
                            "invalid --expose {e:?}: give a port or a range, PORT[-END][/tcp|udp|sctp]"
                        )));
                    }
                    Ok(ms)
                })
                .collect::<Result<Vec<_>, Error>>()?
                .into_iter()
                .flatten()
            {
                exposed.push(m.clone());
                let already = ports
                    .iter()
                    .any(|p| p.container_port == m.container_port && p.proto == m.proto);
                if publish_all && !already {
                    ports.push(m);
                }
            }
            let req = SandboxCreate {
                name,
                network,
                connect: ConnectOptions {
                    ipv4: ip,
                    ipv6: ip6,
                    aliases: alias,
                    mac: mac_address,
                    links: link,
                    ..Default::default()
                },
                netns,
                dns,
                dns_search,
                dns_options: dns_option,
                hostname,
                ports,
                exposed,
                labels: Default::default(),
            };
            if req.network.as_deref() == Some("host") && !req.ports.is_empty() {
                errln!("WARNING: Published ports are discarded when using host network mode");
            }
            let sb = engine.create_sandbox(req).await?;
            outln!("{}", sb.id);
            Ok(0)
        }
        SandboxCmd::Ls { quiet } => {
            let sbs = engine.sandboxes()?;
            if quiet {
                for s in &sbs {
                    outln!("{}", &s.id[..12]);
                }
                return Ok(0);
            }
            let mut rows = vec![vec![
                "SANDBOX ID".to_string(),
                "NAME".into(),
                "NETWORK MODE".into(),
                "NETWORKS".into(),
                "SANDBOX KEY".into(),
            ]];
            for s in sbs {
                let mut nets = Vec::new();
                for ep in engine.sandbox_endpoints(&s.id)? {
                    let n = engine.network(&ep.network_id)?;
                    nets.push(format!(
                        "{}:{}",
                        n.name,
                        ep.ipv4.map(|a| a.ip().to_string()).unwrap_or_default()
                    ));
                }
                rows.push(vec![
                    s.id[..12].to_string(),
                    s.name.clone(),
                    s.network_mode.clone(),
                    if nets.is_empty() {
                        "-".into()
                    } else {
                        nets.join(",")
                    },
                    s.key.display().to_string(),
                ]);
            }
            out!("{}", table(&rows));
            Ok(0)
        }
        SandboxCmd::Inspect { format, sandboxes } => {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for n in sandboxes {
                match engine.sandbox(&n) {
                    Ok(sb) => found.push(sandbox_view(engine, &sb)?),
                    Err(e) => errors.push(e),
                }
            }
            Ok(print_inspect(found, errors, format.as_deref()))
        }
        SandboxCmd::Rm { force, sandboxes } => {
            // Missing names are reported one by one; the rest go in one batched operation.
            let mut code = 0;
            let mut found = Vec::new();
            for n in &sandboxes {
                match engine.sandbox(n) {
                    Ok(_) => found.push(n.as_str()),
                    Err(e) => {
                        err_line(e);
                        code = 1;
                    }
                }
            }
            if !found.is_empty() {
                for w in engine.remove_sandboxes_with(&found, force).await? {
                    errln!("Warning: {w}");
                }
                for n in found {
                    outln!("{n}");
                }
            }
            Ok(code)
        }
        SandboxCmd::Exec { .. } => unreachable!("handled before the runtime starts"),
    }
}
