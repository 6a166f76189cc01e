//! The command tree (`weft network …`, `weft sandbox …`, `weft plugin …`, `weft system …`),
//! with Docker's flags and output. Every command runs the same [`Engine`] in-process.
//!
//! - [`network`], [`sandbox`], [`plugin`], [`system`]: the subcommands;
//! - [`front`]: the small `weft` binary (the daemon's door, else it runs `weft-engine`);
//! - [`remote`]: a command sent to the daemon on weft's socket;
//! - [`output`]: docker's tabwriter tables, `--format` rendering, inspect printing;
//! - [`template`]: the Go-template subset `--format`/`-f` take.

/// Print to the command's stdout: the terminal, or the buffer a daemon sends back.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::output::write_out(&format!($($t)*)) };
}
/// [`out!`] with a newline.
macro_rules! outln {
    () => { $crate::cli::output::write_out("\n") };
    ($($t:tt)*) => { $crate::cli::output::write_out(&format!("{}\n", format_args!($($t)*))) };
}
/// A line on the command's stderr.
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::output::write_err(&format!("{}\n", format_args!($($t)*))) };
}

pub mod front;
pub mod network;
pub mod output;
pub mod plugin;
pub mod remote;
pub mod sandbox;
pub mod system;
pub mod template;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{Config, Engine, Error};
pub use network::{create_request, NetCreateArgs};
use output::{err_line, Exit};
pub use output::{natural_cmp, table};

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

#[derive(Subcommand, Debug, Clone)]
pub enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage sandboxes (network namespaces: what a container sees).
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCmd),
    /// Manage Wasm plugins (network drivers and IPAM).
    #[command(subcommand)]
    Plugin(plugin::PluginCmd),
    /// Engine-wide commands.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Run the long-lived engine: the Docker Engine API on a unix socket, until SIGTERM.
    Daemon(DaemonArgs),
    /// List a sandbox's published ports (`docker port`).
    Port { sandbox: String },
}

/// `weft daemon`.
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// weft's own socket [default: <run-root>/weft.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The Docker API socket, for DOCKER_HOST=unix://PATH [default: <run-root>/docker.sock].
    #[arg(long = "docker-socket")]
    pub docker_socket: Option<PathBuf>,
    /// A group allowed on the sockets besides root (mode 0660).
    #[arg(long)]
    pub group: Option<String>,
    /// Log lines as text or JSON.
    #[arg(long = "log-format", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Inter-container traffic on the default bridge (dockerd's --icc); with false, only
    /// legacy links' ports pass. Changes while the default bridge has no sandboxes.
    #[arg(long, value_name = "BOOL")]
    pub icc: Option<bool>,
    /// The cluster store: global-scope networks (overlay), their addresses and endpoints are
    /// shared with every host naming the same etcd (etcd://HOST:PORT[,HOST:PORT…]).
    #[arg(long = "cluster-store", value_name = "URL", env = "WEFT_CLUSTER_STORE")]
    pub cluster_store: Option<String>,
    /// This host's address on the network the hosts share: its VXLAN endpoint.
    #[arg(
        long = "advertise-addr",
        value_name = "IP",
        env = "WEFT_ADVERTISE_ADDR"
    )]
    pub advertise_addr: Option<String>,
    /// Seconds this host's registration lives without a keep-alive: a dead host is dropped
    /// everywhere within it.
    #[arg(long = "cluster-ttl", value_name = "SECONDS", default_value_t = 10)]
    pub cluster_ttl: u64,
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Exit {
    if let Cmd::Sandbox(sandbox::SandboxCmd::Exec { sandbox, command }) = &cli.cmd {
        return sandbox::exec(
            &cli.root,
            &cli.run_root,
            remote::socket_for(&cli),
            sandbox,
            command,
        );
    }
    if let Cmd::Daemon(a) = &cli.cmd {
        return daemon(&cli, a);
    }
    if let Some(sock) = remote::socket_for(&cli) {
        if let Some(code) = remote::try_run(&sock, &cli.cmd) {
            return code;
        }
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
            cluster: Config::from_env().cluster,
            ..Config::default()
        };
        let engine = match Engine::open(cfg).await {
            Ok(e) => e,
            Err(e) => {
                err_line(e);
                return 1;
            }
        };
        // In-process with a cluster store (WEFT_CLUSTER_STORE): its global state, if etcd
        // answers soon.
        if let Some(c) = engine.cluster() {
            c.wait_synced(std::time::Duration::from_secs(3)).await;
        }
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
        Cmd::Network(n) => network::run(engine, n).await,
        Cmd::Sandbox(s) => sandbox::run(engine, s).await,
        Cmd::Plugin(p) => plugin::run(engine, p).await,
        Cmd::System(s) => system::run(engine, s).await,
        Cmd::Port { sandbox } => sandbox::port(engine, &sandbox),
        Cmd::Daemon(_) => Err(Error::invalid(
            "a daemon is already running: `weft daemon` cannot run inside it",
        )),
    }
}

/// Run a client's command line in a daemon ([`remote`]): parsed as the CLI parses it (clap's
/// checks and all; a refusal is clap's message and exit code), relative paths from the
/// client's directory, its output captured as the CLI would print it. The global flags
/// (`--root`, …) are the daemon's own.
pub async fn run_request(engine: &Engine, req: remote::Request) -> output::Captured {
    let argv = std::iter::once("weft".to_string()).chain(req.args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => {
            let mut cmd = cli.cmd;
            remote::absolutize(&mut cmd, req.cwd.as_deref());
            run_captured(engine, cmd).await
        }
        Err(e) => {
            let text = e.render().to_string();
            let mut c = output::Captured {
                code: e.exit_code(),
                ..Default::default()
            };
            if e.use_stderr() {
                c.stderr = text;
            } else {
                c.stdout = text;
            }
            c
        }
    }
}

/// Run a command for a daemon's client: its output captured, as the CLI would print it.
async fn run_captured(engine: &Engine, cmd: Cmd) -> output::Captured {
    let cell = std::cell::RefCell::new(output::Captured::default());
    output::CAPTURE
        .scope(cell, async move {
            let code = match cmd {
                Cmd::Sandbox(sandbox::SandboxCmd::Exec { .. }) => {
                    err_line("sandbox exec runs in the client, not in the daemon");
                    1
                }
                cmd => match run_cmd(engine, cmd).await {
                    Ok(c) => c,
                    Err(e) => {
                        err_line(e);
                        1
                    }
                },
            };
            let mut c = output::CAPTURE.with(|c| c.take());
            c.code = code;
            c
        })
        .await
}

/// `weft daemon`: a multi-threaded runtime, one engine, until SIGTERM.
fn daemon(cli: &Cli, a: &DaemonArgs) -> Exit {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err_line(e);
            return 1;
        }
    };
    let mut cfg = Config {
        root: cli.root.clone(),
        run_root: cli.run_root.clone(),
        // docker inspect's ResolvConfPath, sandbox exec's /etc files: kept current.
        keep_sandbox_files: true,
        // docker events --since: dockerd's 256.
        event_history: 256,
        ..Config::from_env()
    };
    if a.icc.is_some() {
        cfg.default_bridge_icc = a.icc;
    }
    cfg.cluster = match (&a.cluster_store, &a.advertise_addr) {
        (None, None) => None,
        (Some(_), None) => {
            err_line("--cluster-store needs --advertise-addr: this host's address on the network the hosts share");
            return 1;
        }
        (None, Some(_)) => {
            err_line(
                "--advertise-addr is for a cluster: give --cluster-store etcd://HOST:2379 too",
            );
            return 1;
        }
        (Some(s), Some(adv)) => {
            match crate::cluster::ClusterConfig::parse(
                s,
                adv,
                Some(std::time::Duration::from_secs(a.cluster_ttl)),
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    err_line(e);
                    return 1;
                }
            }
        }
    };
    let mut opts = crate::daemon::DaemonOptions::under(&cli.run_root);
    if let Some(s) = &a.socket {
        opts.socket = s.clone();
    }
    if let Some(s) = &a.docker_socket {
        opts.docker_socket = s.clone();
    }
    opts.group = a.group.clone();
    match rt.block_on(crate::daemon::run(cfg, opts)) {
        Ok(()) => 0,
        Err(e) => {
            err_line(e);
            1
        }
    }
}
