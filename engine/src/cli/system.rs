//! `weft system …`: info, reset, check (and repair), cluster peers.

use std::net::IpAddr;

use clap::Subcommand;
use serde_json::json;

use super::output::{pretty, Exit};
use crate::{Engine, Error};

#[derive(Subcommand, Debug, Clone)]
pub enum SystemCmd {
    /// Remove every sandbox and custom network, the default bridge and weft's nftables table.
    Reset {
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Print where state lives and what drivers exist.
    Info,
    /// List every disagreement between weft's records and the kernel (exit 1 if any).
    Check {
        /// Mend what is found (then check again).
        #[arg(long)]
        repair: bool,
        /// Print the findings as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Tell the drivers that a cluster peer (its underlay address) appeared or went away.
    Peer {
        #[arg(value_parser = ["add", "rm"])]
        action: String,
        address: IpAddr,
    },
}

pub async fn run(engine: &Engine, cmd: SystemCmd) -> Result<Exit, Error> {
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
        SystemCmd::Check { repair, json } => {
            let show = |f: &crate::engine::Finding| {
                if json {
                    outln!("{}", serde_json::to_string(f).unwrap_or_default());
                } else {
                    outln!("{f}");
                }
            };
            if repair {
                for f in engine.repair().await? {
                    if !json {
                        out!("repaired ");
                    }
                    show(&f);
                }
            }
            let left = engine.check().await?;
            for f in &left {
                show(f);
            }
            if left.is_empty() && !json {
                outln!("weft's records and the kernel agree");
            }
            Ok(i32::from(!left.is_empty()))
        }
        SystemCmd::Info => {
            let info = json!({
                "Root": engine.config().root.display().to_string(),
                "RunRoot": engine.config().run_root.display().to_string(),
                "Store": engine.store().describe(),
                "Drivers": engine.driver_names(),
                "PluginContracts": crate::plugin::CONTRACTS
                    .iter()
                    .map(|v| format!("weft:plugin@{v}"))
                    .collect::<Vec<_>>(),
                "HostNetns": engine.kernel().host_path().display().to_string(),
                "Cluster": engine.cluster().map(|c| serde_json::to_value(c.status()).unwrap_or_default()),
                "TaskRestarts": engine.restarts(),
                "HealerChecks": engine.heal_checks(),
            });
            outln!("{}", pretty(&info));
            Ok(0)
        }
    }
}
