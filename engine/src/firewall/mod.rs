//! nftables, in weft's own tables (`inet weft`, `bridge weft`): masquerade, ICC, isolation
//! between networks, internal networks. Nothing else's rules are read, flushed or edited.
//!
//! Rules are rendered as nft JSON ([`render`]) — pure functions, unit-tested against expected
//! rulesets — and applied with one `nft -j -f -` per operation, run in the engine's host
//! namespace. Per-network state lives in per-network chains reached through verdict maps, so
//! adding or removing a network never touches another network's rules.
//!
//! The `nftables` crate's typed schema was considered; its helper spawns `nft` in the caller's
//! namespace only, and the JSON written here with `serde_json::json!` is shorter to read next
//! to the nft documentation. So the JSON is built here and handed to `nft -j`.

pub mod render;

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::process::Stdio;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// nft failed (its stderr is the reason).
#[derive(Debug, Clone, thiserror::Error)]
#[error("nftables: {0}")]
pub struct FirewallError(pub String);

/// The firewall state of one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRules {
    /// First 12 hex digits of the network id (chain names).
    pub id: String,
    /// The interface the network's traffic uses on the host (the bridge).
    pub iface: String,
    pub subnets: Vec<IpNetwork>,
    pub internal: bool,
    pub masquerade: bool,
}

/// One change to weft's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "lowercase")]
pub enum FwChange {
    Add(NetRules),
    Remove(NetRules),
}

impl FwChange {
    pub fn inverse(&self) -> FwChange {
        match self {
            FwChange::Add(r) => FwChange::Remove(r.clone()),
            FwChange::Remove(r) => FwChange::Add(r.clone()),
        }
    }
}

/// Runs nft in one namespace.
pub struct Firewall {
    netns: Option<RawFd>,
    nft: String,
}

impl Firewall {
    /// `netns`: the host namespace (kept open by the caller for the firewall's lifetime).
    pub fn new(netns: Option<&File>) -> Firewall {
        let nft = std::env::var("WEFT_NFT").unwrap_or_else(|_| "nft".to_string());
        Firewall {
            netns: netns.map(|f| f.as_raw_fd()),
            nft,
        }
    }

    /// Apply changes in one nft transaction: all or nothing.
    pub async fn apply(&self, changes: &[FwChange]) -> Result<(), FirewallError> {
        let doc = render::batch(changes);
        self.run(&["-j", "-f", "-"], Some(doc.to_string()))
            .await
            .map(|_| ())
    }

    /// The current ruleset of weft's tables as nft JSON (for tests and `weft debug`).
    pub async fn list(&self) -> Result<serde_json::Value, FirewallError> {
        let mut all = Vec::new();
        for fam in ["inet", "bridge"] {
            match self
                .run(&["-j", "list", "table", fam, render::TABLE], None)
                .await
            {
                Ok(out) => {
                    let v: serde_json::Value = serde_json::from_str(&out)
                        .map_err(|e| FirewallError(format!("nft output: {e}")))?;
                    if let Some(items) = v.get("nftables").and_then(|x| x.as_array()) {
                        all.extend(items.iter().cloned());
                    }
                }
                Err(e) if e.0.contains("No such file or directory") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(serde_json::json!({ "nftables": all }))
    }

    /// Delete weft's tables (system reset).
    pub async fn reset(&self) -> Result<(), FirewallError> {
        let doc = render::delete_tables();
        match self.run(&["-j", "-f", "-"], Some(doc.to_string())).await {
            Ok(_) => Ok(()),
            Err(e) if e.0.contains("No such file or directory") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn run(&self, args: &[&str], stdin: Option<String>) -> Result<String, FirewallError> {
        let mut cmd = tokio::process::Command::new(&self.nft);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(fd) = self.netns {
            // SAFETY: setns is async-signal-safe; the fd stays open in the parent.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            FirewallError(format!(
                "cannot run {}: {e} (install the nftables package)",
                self.nft
            ))
        })?;
        if let Some(input) = stdin {
            let mut si = child.stdin.take().unwrap();
            si.write_all(input.as_bytes())
                .await
                .map_err(|e| FirewallError(e.to_string()))?;
            drop(si);
        } else {
            drop(child.stdin.take());
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| FirewallError(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(FirewallError(if err.is_empty() {
                format!("nft exited with {}", out.status)
            } else {
                err
            }));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
