//! The command tree (`weft network …`, `weft sandbox …`, `weft system …`), with Docker's flags
//! and output: tables laid out like the docker CLI's tabwriter, `--format` templates, inspect
//! JSON printed as dockerd sends it. Every command runs the same [`Engine`] in-process.

pub mod template;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::model::*;
use crate::{view, Config, Engine, Error};

#[derive(Parser, Debug)]
#[command(
    name = "weft",
    version,
    about = "A container network engine: Docker's networking, with sandboxed Wasm drivers and IPAM"
)]
pub struct Cli {
    /// State root (the embedded store).
    #[arg(
        long,
        global = true,
        env = "WEFT_ROOT",
        default_value = "/var/lib/weft"
    )]
    pub root: PathBuf,
    /// Run dir (namespace pins, journals).
    #[arg(
        long = "run-root",
        global = true,
        env = "WEFT_RUN_ROOT",
        default_value = "/run/weft"
    )]
    pub run_root: PathBuf,
    /// Log level (error, warn, info, debug, trace).
    #[arg(
        long = "log-level",
        global = true,
        env = "WEFT_LOG",
        default_value = "warn"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes (network namespaces: what a container sees).
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Manage Wasm plugins (network drivers and IPAM).
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Engine-wide commands.
    #[command(subcommand)]
    System(SystemCmd),
}

#[derive(Subcommand, Debug)]
pub enum PluginCmd {
    /// Install a plugin component (.wasm) under a name; shows what it asks for and what it gets.
    Install {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// Grant a power: link-prefix=P, parent=IF, sysctl=S, kv=SPACE, kv-global=BOOL,
        /// http=HOST[:PORT], memory=64M, deadline=500ms, fuel=N. Repeatable.
        #[arg(long = "grant")]
        grant: Vec<String>,
        /// Grant everything the plugin asks for (then --grant items on top).
        #[arg(long = "grant-requested")]
        grant_requested: bool,
    },
    /// List installed plugins.
    #[command(alias = "list")]
    Ls,
    /// Show a plugin's record: what it is, what it asked for, what it was granted.
    Inspect { name: String },
    /// Remove a plugin (refused while a network uses it).
    #[command(alias = "remove")]
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network.
    Create(NetCreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(NetLsArgs),
    /// Display detailed information on one or more networks.
    Inspect {
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(short = 'v', long)]
        verbose: bool,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        /// Do not error if the network does not exist.
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all unused networks.
    Prune {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(long = "filter")]
        filter: Vec<String>,
    },
    /// Connect a sandbox to a network.
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network.
    Disconnect {
        #[arg(short = 'f', long)]
        force: bool,
        network: String,
        sandbox: String,
    },
}

#[derive(Args, Debug)]
pub struct NetCreateArgs {
    /// Driver to manage the network.
    #[arg(short = 'd', long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment.
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Allocate container IPs from a sub-range.
    #[arg(long = "ip-range")]
    pub ip_range: Vec<String>,
    /// Gateway for the master subnet.
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Auxiliary addresses used by the network driver (name=IP).
    #[arg(long = "aux-address")]
    pub aux_address: Vec<String>,
    /// IP address management driver.
    #[arg(long = "ipam-driver", default_value = "default")]
    pub ipam_driver: String,
    /// Set IPAM driver specific options.
    #[arg(long = "ipam-opt")]
    pub ipam_opt: Vec<String>,
    /// Set metadata on a network.
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options.
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Restrict external access to the network.
    #[arg(long)]
    pub internal: bool,
    /// Enable manual container attachment.
    #[arg(long)]
    pub attachable: bool,
    /// Enable or disable IPv4 address assignment.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipv4: Option<bool>,
    /// Enable or disable IPv6 address assignment.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipv6: Option<bool>,
    /// Control the network's scope.
    #[arg(long)]
    pub scope: Option<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NetLsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// IPv4 address (e.g., 172.30.100.104).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// IPv6 address (e.g., 2001:db8::33).
    #[arg(long)]
    pub ip6: Option<IpAddr>,
    /// Add network-scoped alias for the sandbox.
    #[arg(long)]
    pub alias: Vec<String>,
    /// Add link to another sandbox (name:alias).
    #[arg(long)]
    pub link: Vec<String>,
    /// Driver options for the network.
    #[arg(long = "driver-opt")]
    pub driver_opt: Vec<String>,
    /// Gateway priority: the highest becomes the default route.
    #[arg(long = "gw-priority", default_value_t = 0)]
    pub gw_priority: i64,
    pub network: String,
    pub sandbox: String,
}

#[derive(Subcommand, Debug)]
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

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Remove every sandbox and custom network, the default bridge and weft's nftables table.
    Reset {
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Print where state lives and what drivers exist.
    Info,
    /// Tell the drivers that a cluster peer (its underlay address) appeared or went away.
    Peer {
        #[arg(value_parser = ["add", "rm"])]
        action: String,
        address: IpAddr,
    },
}

/// The CLI's result: an exit code (errors are already printed).
pub type Exit = i32;

fn err_line(e: impl std::fmt::Display) {
    eprintln!("Error: {e}");
}

fn kv_list(items: &[String], what: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut m = BTreeMap::new();
    for i in items {
        match i.split_once('=') {
            Some((k, v)) => m.insert(k.to_string(), v.to_string()),
            None if what == "label" => m.insert(i.to_string(), String::new()),
            None => {
                return Err(Error::invalid(format!(
                    "invalid {what} {i:?}: use key=value"
                )))
            }
        };
    }
    Ok(m)
}

fn parse_net(s: &str, what: &str) -> Result<ipnetwork::IpNetwork, Error> {
    s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} {s:?}: use CIDR notation such as 172.30.0.0/16"
        ))
    })
}

/// Build the create request the way the docker CLI does (its client-side checks included).
pub fn create_request(a: &NetCreateArgs) -> Result<NetworkCreate, Error> {
    let subnets: Vec<ipnetwork::IpNetwork> = a
        .subnet
        .iter()
        .map(|s| parse_net(s, "subnet"))
        .collect::<Result<_, _>>()?;
    let mut cfgs: Vec<IpamConfigRequest> = subnets
        .iter()
        .map(|s| IpamConfigRequest {
            subnet: Some(*s),
            ..Default::default()
        })
        .collect();
    for r in &a.ip_range {
        let r = parse_net(r, "ip-range")?;
        let c = cfgs
            .iter_mut()
            .find(|c| {
                c.subnet
                    .is_some_and(|s| s.contains(r.network()) && s.is_ipv4() == r.is_ipv4())
            })
            .ok_or_else(|| Error::invalid(format!("no matching subnet for range {r}")))?;
        if c.ip_range.is_some() {
            return Err(Error::invalid(
                "cannot configure multiple ranges on the same subnet",
            ));
        }
        c.ip_range = Some(r);
    }
    for g in &a.gateway {
        let g: IpAddr = g
            .parse()
            .map_err(|_| Error::invalid(format!("invalid gateway {g:?}: use an IP address")))?;
        let c = cfgs
            .iter_mut()
            .find(|c| c.subnet.is_some_and(|s| s.contains(g)))
            .ok_or_else(|| Error::invalid(format!("no matching subnet for gateway {g}")))?;
        if let Some(old) = c.gateway {
            return Err(Error::invalid(format!(
                "cannot configure multiple gateways ({g}, {old}) for the same subnet ({})",
                c.subnet.unwrap()
            )));
        }
        c.gateway = Some(g);
    }
    for (name, ip) in kv_list(&a.aux_address, "aux-address")? {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| Error::invalid(format!("invalid aux-address {name}={ip}")))?;
        let c = cfgs
            .iter_mut()
            .find(|c| c.subnet.is_some_and(|s| s.contains(ip)))
            .ok_or_else(|| Error::invalid(format!("no matching subnet for aux-address {ip}")))?;
        c.aux_addresses.insert(name, ip);
    }
    if cfgs.is_empty()
        && (!a.ip_range.is_empty() || !a.gateway.is_empty() || !a.aux_address.is_empty())
    {
        return Err(Error::invalid(
            "every ip-range or gateway must have a corresponding subnet",
        ));
    }
    crate::engine::validate_ipam_config(&cfgs)?;
    Ok(NetworkCreate {
        name: a.name.clone(),
        driver: Some(a.driver.clone()),
        scope: a.scope.clone(),
        internal: a.internal,
        attachable: a.attachable,
        enable_ipv4: a.ipv4,
        enable_ipv6: a.ipv6,
        ipam_driver: Some(a.ipam_driver.clone()),
        ipam_options: kv_list(&a.ipam_opt, "ipam-opt")?,
        ipam_config: cfgs,
        options: kv_list(&a.opt, "option")?,
        labels: kv_list(&a.label, "label")?,
        ..Default::default()
    })
}

/// The row a `network ls` template sees.
fn ls_row(n: &Network, no_trunc: bool) -> Value {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let created =
        time::OffsetDateTime::parse(&n.created, &time::format_description::well_known::Rfc3339)
            .map(|t| {
                let f = time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:9] +0000 UTC"
                );
                t.format(&f).unwrap_or_default()
            })
            .unwrap_or_default();
    json!({
        "CreatedAt": created,
        "Driver": n.driver,
        "ID": if no_trunc { n.id.clone() } else { n.id[..12].to_string() },
        "IPv4": n.enable_ipv4.to_string(),
        "IPv6": n.enable_ipv6.to_string(),
        "Internal": n.internal.to_string(),
        "Labels": labels.join(","),
        "Name": n.name,
        "Scope": n.scope.as_str(),
    })
}

/// docker's tabwriter: minwidth 10, padding 3, last column unpadded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Render rows with a docker `--format` (`table …`, `json`, or a template).
fn format_rows(format: &str, rows: &[Value], headers: &[(&str, &str)]) -> Result<String, String> {
    if format == "json" {
        return Ok(rows.iter().map(|r| format!("{r}\n")).collect());
    }
    let (is_table, tpl) = match format.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
            (true, rest.trim_start())
        }
        _ => (false, format),
    };
    let tpl = tpl.replace("\\t", "\t").replace("\\n", "\n");
    let t = template::Template::parse(&tpl)?;
    let mut lines: Vec<Vec<String>> = Vec::new();
    if is_table {
        let mut h = tpl.clone();
        for (field, title) in headers {
            h = h.replace(&format!("{{{{.{field}}}}}"), title);
        }
        lines.push(h.split('\t').map(str::to_string).collect());
    }
    let mut plain = String::new();
    for r in rows {
        let s = t.render(r)?;
        if is_table {
            lines.push(s.split('\t').map(str::to_string).collect());
        } else {
            plain.push_str(&s);
            plain.push('\n');
        }
    }
    Ok(if is_table { table(&lines) } else { plain })
}

/// Docker sorts names naturally (web2 before web10).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let mut n1 = String::new();
                while let Some(c) = x.peek().copied().filter(char::is_ascii_digit) {
                    n1.push(c);
                    x.next();
                }
                let mut n2 = String::new();
                while let Some(c) = y.peek().copied().filter(char::is_ascii_digit) {
                    n2.push(c);
                    y.next();
                }
                let o = n1
                    .trim_start_matches('0')
                    .len()
                    .cmp(&n2.trim_start_matches('0').len())
                    .then(n1.trim_start_matches('0').cmp(n2.trim_start_matches('0')));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(&d);
                }
                x.next();
                y.next();
            }
        }
    }
}

fn pretty(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser).unwrap();
    String::from_utf8(buf).unwrap()
}

/// Print inspect results like the docker CLI: the array (or per-item template output), then
/// the errors; exit 1 if anything was missing.
fn print_inspect(found: Vec<Value>, errors: Vec<Error>, format: Option<&str>) -> Exit {
    match format {
        None => println!("{}", pretty(&Value::Array(found))),
        Some(f) => match template::Template::parse(f) {
            Ok(t) => {
                for v in &found {
                    match t.render(v) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            err_line(format!("template: {e}"));
                            return 1;
                        }
                    }
                }
            }
            Err(e) => {
                err_line(e);
                return 1;
            }
        },
    }
    for e in &errors {
        err_line(e);
    }
    i32::from(!errors.is_empty())
}

fn sandbox_view(engine: &Engine, sb: &Sandbox) -> Result<Value, Error> {
    let mut eps = Vec::new();
    for ep in engine.sandbox_endpoints(&sb.id)? {
        let net = engine.network(&ep.network_id)?;
        eps.push((ep, net));
    }
    Ok(view::sandbox(sb, &eps))
}

/// Enter a sandbox's namespace and exec a command there (never returns on success).
fn exec_in(root: &std::path::Path, sandbox: &str, cmd: &[String]) -> Exit {
    use std::os::unix::process::CommandExt;
    let store = match crate::store::redb_store::RedbStore::open(&root.join("weft.redb")) {
        Ok(s) => s,
        Err(e) => {
            err_line(e);
            return 1;
        }
    };
    let sb = match Engine::resolve_sandbox_in(&store, sandbox) {
        Ok(s) => s,
        Err(e) => {
            err_line(e);
            return 1;
        }
    };
    drop(store);
    let f = match crate::net::ns::open(&sb.key) {
        Ok(f) => f,
        Err(e) => {
            err_line(e);
            return 1;
        }
    };
    if let Err(e) = nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET) {
        err_line(format!("enter {}: {e}", sb.key.display()));
        return 1;
    }
    let e = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    err_line(format!("exec {}: {e}", cmd[0]));
    127
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Exit {
    if let Cmd::Sandbox(SandboxCmd::Exec { sandbox, command }) = &cli.cmd {
        return exec_in(&cli.root, sandbox, command);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err_line(e);
            return 1;
        }
    };
    rt.block_on(async move {
        let cfg = Config {
            root: cli.root.clone(),
            run_root: cli.run_root.clone(),
            host_netns: None,
        };
        let engine = match Engine::open(cfg).await {
            Ok(e) => e,
            Err(e) => {
                err_line(e);
                return 1;
            }
        };
        let code = match run_cmd(&engine, cli.cmd).await {
            Ok(code) => code,
            Err(e) => {
                err_line(e);
                1
            }
        };
        code
    })
}

async fn run_cmd(engine: &Engine, cmd: Cmd) -> Result<Exit, Error> {
    match cmd {
        Cmd::Network(n) => network_cmd(engine, n).await,
        Cmd::Sandbox(s) => sandbox_cmd(engine, s).await,
        Cmd::Plugin(p) => plugin_cmd(engine, p).await,
        Cmd::System(s) => system_cmd(engine, s).await,
    }
}

fn asked_text(a: &crate::plugin::Asked) -> String {
    let list = |v: &Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "  link-prefix  {}\n  parents      {}\n  sysctls      {}\n  http         {}\n  memory       {}",
        a.link_prefix.as_deref().unwrap_or("none"),
        list(&a.parents),
        list(&a.sysctls),
        list(&a.http_hosts),
        a.memory_mib.map(|m| format!("{m} MiB")).unwrap_or_else(|| "default".into())
    )
}

async fn plugin_cmd(engine: &Engine, cmd: PluginCmd) -> Result<Exit, Error> {
    match cmd {
        PluginCmd::Install {
            file,
            name,
            grant,
            grant_requested,
        } => {
            let rec = engine
                .install_plugin(&file, &name, &grant, grant_requested)
                .await?;
            println!(
                "Installed {} ({} {}): {}",
                rec.name,
                rec.kind.as_str(),
                rec.version,
                rec.description
            );
            println!("It asks for:\n{}", asked_text(&rec.asked));
            println!("It was granted:\n{}", rec.grants);
            if rec.asked.link_prefix.is_some() && rec.grants.link_prefix.is_none() {
                eprintln!("note: it asked for host links but was granted none; add --grant link-prefix=… or --grant-requested");
            }
            Ok(0)
        }
        PluginCmd::Ls => {
            let mut rows = vec![vec![
                "NAME".to_string(),
                "KIND".into(),
                "VERSION".into(),
                "LINK PREFIX".into(),
                "DESCRIPTION".into(),
            ]];
            for p in engine.plugins()? {
                rows.push(vec![
                    p.name.clone(),
                    p.kind.as_str().to_string(),
                    p.version.clone(),
                    p.grants.link_prefix.clone().unwrap_or_else(|| "-".into()),
                    p.description.clone(),
                ]);
            }
            print!("{}", table(&rows));
            Ok(0)
        }
        PluginCmd::Inspect { name } => {
            let p = engine.plugin(&name)?;
            println!(
                "{}",
                pretty(&serde_json::to_value(&p).map_err(Error::internal)?)
            );
            Ok(0)
        }
        PluginCmd::Rm { name } => {
            engine.remove_plugin(&name).await?;
            println!("{name}");
            Ok(0)
        }
    }
}

async fn network_cmd(engine: &Engine, cmd: NetworkCmd) -> Result<Exit, Error> {
    match cmd {
        NetworkCmd::Create(a) => {
            let req = create_request(&a)?;
            let c = engine.create_network(req).await?;
            println!("{}", c.id);
            if !c.warning.is_empty() {
                eprintln!("{}", c.warning);
            }
            Ok(0)
        }
        NetworkCmd::Ls(a) => {
            let filters = NetworkFilters::parse(a.filter.iter().map(String::as_str))?;
            let mut nets = engine.networks(&filters)?;
            nets.sort_by(|x, y| natural_cmp(&x.name, &y.name));
            if a.quiet {
                for n in &nets {
                    println!("{}", if a.no_trunc { &n.id[..] } else { &n.id[..12] });
                }
                return Ok(0);
            }
            let rows: Vec<Value> = nets.iter().map(|n| ls_row(n, a.no_trunc)).collect();
            let format = a
                .format
                .unwrap_or_else(|| "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}".into());
            let headers = [
                ("ID", "NETWORK ID"),
                ("Name", "NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
                ("IPv4", "IPV4"),
                ("IPv6", "IPV6"),
                ("Internal", "INTERNAL"),
                ("Labels", "LABELS"),
                ("CreatedAt", "CREATED AT"),
            ];
            match format_rows(&format, &rows, &headers) {
                Ok(s) => {
                    print!("{s}");
                    Ok(0)
                }
                Err(e) => Err(Error::invalid(e)),
            }
        }
        NetworkCmd::Inspect {
            format,
            verbose: _,
            networks,
        } => {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for n in networks {
                match engine.network(&n) {
                    Ok(net) => {
                        let eps = engine.network_endpoints(&net.id)?;
                        found.push(view::network(&net, Some(&eps)));
                    }
                    Err(e) => errors.push(e),
                }
            }
            Ok(print_inspect(found, errors, format.as_deref()))
        }
        NetworkCmd::Rm { force, networks } => {
            let mut code = 0;
            for n in networks {
                match engine.remove_network(&n).await {
                    Ok(()) => println!("{n}"),
                    Err(e) if force && e.is_not_found() => {}
                    Err(e) => {
                        err_line(e);
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkCmd::Prune { force, filter } => {
            let filters = NetworkFilters::parse(filter.iter().map(String::as_str))?;
            if !force {
                print!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                std::io::stdout().flush().ok();
                let mut line = String::new();
                if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
                    return Ok(0);
                }
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let removed = engine.prune_networks(&filters).await?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
                println!();
            }
            Ok(0)
        }
        NetworkCmd::Connect(a) => {
            let opts = ConnectOptions {
                ipv4: a.ip,
                ipv6: a.ip6,
                aliases: a.alias,
                links: a.link,
                mac: None,
                driver_opts: kv_list(&a.driver_opt, "driver-opt")?,
                gw_priority: a.gw_priority,
            };
            engine.connect(&a.network, &a.sandbox, opts).await?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            sandbox,
        } => {
            engine.disconnect(&network, &sandbox, force).await?;
            Ok(0)
        }
    }
}

async fn sandbox_cmd(engine: &Engine, cmd: SandboxCmd) -> Result<Exit, Error> {
    match cmd {
        SandboxCmd::Create {
            network,
            ip,
            ip6,
            alias,
            mac_address,
            netns,
            name,
        } => {
            let req = SandboxCreate {
                name,
                network,
                connect: ConnectOptions {
                    ipv4: ip,
                    ipv6: ip6,
                    aliases: alias,
                    mac: mac_address,
                    ..Default::default()
                },
                netns,
            };
            let sb = engine.create_sandbox(req).await?;
            println!("{}", sb.id);
            Ok(0)
        }
        SandboxCmd::Ls { quiet } => {
            let sbs = engine.sandboxes()?;
            if quiet {
                for s in &sbs {
                    println!("{}", &s.id[..12]);
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
            print!("{}", table(&rows));
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
                engine.remove_sandboxes(&found, force).await?;
                for n in found {
                    println!("{n}");
                }
            }
            Ok(code)
        }
        SandboxCmd::Exec { .. } => unreachable!("handled before the runtime starts"),
    }
}

async fn system_cmd(engine: &Engine, cmd: SystemCmd) -> Result<Exit, Error> {
    match cmd {
        SystemCmd::Reset { force } => {
            if !force {
                return Err(Error::invalid(
                    "system reset removes every sandbox and custom network weft made: add --force to confirm",
                ));
            }
            engine.reset().await?;
            Ok(0)
        }
        SystemCmd::Peer { action, address } => {
            engine.cluster_peer(address, action == "add").await?;
            Ok(0)
        }
        SystemCmd::Info => {
            let info = json!({
                "Root": engine.config().root.display().to_string(),
                "RunRoot": engine.config().run_root.display().to_string(),
                "Store": engine.store().describe(),
                "Drivers": engine.driver_names(),
                "HostNetns": engine.kernel().host_path().display().to_string(),
            });
            println!("{}", pretty(&info));
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_matches_docker() {
        let t = table(&[
            vec![
                "NETWORK ID".into(),
                "NAME".into(),
                "DRIVER".into(),
                "SCOPE".into(),
            ],
            vec![
                "0123456789ab".into(),
                "bridge".into(),
                "bridge".into(),
                "local".into(),
            ],
        ]);
        assert_eq!(
            t,
            "NETWORK ID     NAME      DRIVER    SCOPE\n0123456789ab   bridge    bridge    local\n"
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["web10", "web2", "api", "web1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["api", "web1", "web2", "web10"]);
    }

    #[test]
    fn create_request_like_docker_cli() {
        let a = NetCreateArgs::parse_from_for_test(&[
            "--subnet=172.30.0.0/16",
            "--ip-range=172.30.1.0/24",
            "--gateway=172.30.1.254",
            "--label=trial-bridge",
            "--opt",
            "com.docker.network.driver.mtu=9000",
            "your-bridge",
        ]);
        let r = create_request(&a).unwrap();
        assert_eq!(r.labels.get("trial-bridge").map(String::as_str), Some(""));
        assert_eq!(
            r.ipam_config[0].gateway.unwrap().to_string(),
            "172.30.1.254"
        );
        let bad = NetCreateArgs::parse_from_for_test(&[
            "--subnet=10.0.0.0/24",
            "--gateway=10.1.0.1",
            "x",
        ]);
        assert_eq!(
            create_request(&bad).unwrap_err().to_string(),
            "no matching subnet for gateway 10.1.0.1"
        );
        let bad = NetCreateArgs::parse_from_for_test(&["--ip-range=10.0.0.0/24", "x"]);
        assert_eq!(
            create_request(&bad).unwrap_err().to_string(),
            "no matching subnet for range 10.0.0.0/24"
        );
        let bad = NetCreateArgs::parse_from_for_test(&[
            "--subnet=10.0.0.0/16",
            "--subnet=10.0.1.0/24",
            "x",
        ]);
        assert_eq!(
            create_request(&bad).unwrap_err().to_string(),
            "multiple overlapping subnet configuration is not supported"
        );
    }

    impl NetCreateArgs {
        fn parse_from_for_test(args: &[&str]) -> NetCreateArgs {
            #[derive(Parser)]
            struct W {
                #[command(flatten)]
                a: NetCreateArgs,
            }
            let mut v = vec!["x"];
            v.extend_from_slice(args);
            W::parse_from(v).a
        }
    }
}
