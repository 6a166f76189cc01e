//! `weft plugin …`: install (showing what a plugin asks for and what it is granted), ls,
//! inspect, rm.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{pretty, table, Exit};
use crate::{Engine, Error};

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

pub async fn run(engine: &Engine, cmd: PluginCmd) -> Result<Exit, Error> {
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
