//! `weft plugin …`: install (showing what a plugin asks for and what it is granted), ls,
//! inspect, rm.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{pretty, table, Exit};
use crate::{Engine, Error};

#[derive(Subcommand, Debug, Clone)]
pub enum PluginCmd {
    /// Install a plugin component (.wasm) under a name; shows what it asks for and what it gets.
    Install {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// Grant a power: link-prefix=P, parent=IF, sysctl=S, gateway=IP, vni=A-B,
        /// vxlan-port=N, macvlan-passthru=BOOL, kv=SPACE, kv-quota=4M, http=HOST[:PORT],
        /// memory=64M, deadline=500ms, fuel=N. Repeatable.
        #[arg(long = "grant")]
        grant: Vec<String>,
        /// Grant everything the plugin asks for (then --grant items on top).
        #[arg(long = "grant-requested")]
        grant_requested: bool,
        /// Configuration the plugin reads: key=value, or key=@FILE for a secret (never shown
        /// by `plugin inspect` or logged). Repeatable.
        #[arg(long = "config")]
        config: Vec<String>,
    },
    /// List installed plugins.
    #[command(alias = "list")]
    Ls,
    /// Show a plugin's record: what it is, what it asked for, what it was granted.
    Inspect { name: String },
    /// Remove a plugin (refused while a network uses it; with -f, those networks and their
    /// sandboxes' endpoints go first, whatever the plugin says).
    #[command(alias = "remove")]
    Rm {
        #[arg(short = 'f', long)]
        force: bool,
        name: String,
    },
}

fn asked_text(a: &crate::plugin::Asked) -> String {
    let list = |v: &Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let gws: Vec<String> = a.gateways.iter().map(|g| g.to_string()).collect();
    let vnis: Vec<String> = a
        .vni_ranges
        .iter()
        .map(|(x, y)| format!("{x}-{y}"))
        .collect();
    let ports: Vec<String> = a.vxlan_ports.iter().map(|p| p.to_string()).collect();
    format!(
        "  link-prefix  {}\n  parents      {}\n  sysctls      {}\n  gateways     {}\n  vni          {}\n  vxlan ports  {}\n  passthru     {}\n  http         {}\n  config keys  {}\n  memory       {}",
        a.link_prefix.as_deref().unwrap_or("none"),
        list(&a.parents),
        list(&a.sysctls),
        list(&gws),
        list(&vnis),
        list(&ports),
        if a.macvlan_passthru { "yes" } else { "no" },
        list(&a.http_hosts),
        list(&a.config_keys),
        a.memory_mib.map(|m| format!("{m} MiB")).unwrap_or_else(|| "default".into())
    )
}

pub async fn run(engine: &Engine, cmd: PluginCmd) -> Result<Exit, Error> {
    match cmd {
        PluginCmd::Install {
            file,
            name,
            grant,
            grant_requested,
            config,
        } => {
            let rec = engine
                .install_plugin_with(&file, &name, &grant, grant_requested, &config)
                .await?;
            outln!(
                "Installed {} ({} {}, speaks weft:plugin@{}{}): {}",
                rec.name,
                rec.kind.as_str(),
                rec.version,
                rec.contract,
                if rec.contract == crate::plugin::CONTRACTS[0] {
                    ""
                } else {
                    ", run through the adapter for older plugins"
                },
                rec.description
            );
            outln!("It asks for:\n{}", asked_text(&rec.asked));
            outln!("It was granted:\n{}", rec.grants);
            if rec.asked.link_prefix.is_some() && rec.grants.link_prefix.is_none() {
                errln!("note: it asked for host links but was granted none; add --grant link-prefix=… or --grant-requested");
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
            out!("{}", table(&rows));
            Ok(0)
        }
        PluginCmd::Inspect { name } => {
            let p = engine.plugin(&name)?.redacted();
            outln!(
                "{}",
                pretty(&serde_json::to_value(&p).map_err(Error::internal)?)
            );
            Ok(0)
        }
        PluginCmd::Rm { force, name } => {
            for w in engine.remove_plugin_with(&name, force).await? {
                errln!("Warning: {w}");
            }
            outln!("{name}");
            Ok(0)
        }
    }
}
