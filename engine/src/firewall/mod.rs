//! nftables, in weft's own tables (`inet weft`, `bridge weft`): masquerade, ICC, isolation
//! between networks, internal networks. Nothing else's rules are read, flushed or edited.
//!
//! Rules are rendered as nft JSON ([`render`]) — pure functions, unit-tested against expected
//! rulesets — and applied with one `nft -j -f -` per operation, run in the engine's host
//! namespace. Per-network state lives in per-network chains reached through verdict maps, so
//! adding or removing a network never touches another network's rules. A sandbox's own
//! changes on the attach path — its published ports and its endpoints' ICC elements — go as
//! one nfnetlink batch weft encodes itself ([`nl`]: the same rules, no `nft` process).
//!
//! The `nftables` crate's typed schema was considered; its helper spawns `nft` in the caller's
//! namespace only, and the JSON written here with `serde_json::json!` is shorter to read next
//! to the nft documentation. So the JSON is built here and handed to `nft -j`.

pub mod listing;
mod nl;
pub mod render;

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::process::Stdio;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::net::{NetError, NetErrorKind};

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

/// The published ports of one sandbox: DNAT from host ports to its IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRules {
    /// First 12 hex digits of the sandbox id (what the records say, and logs).
    pub id: String,
    pub addr: std::net::Ipv4Addr,
    /// Its IPv6 address, when it has one: ports without a host address, or with an IPv6
    /// one, are published to it too.
    #[serde(default)]
    pub addr6: Option<std::net::Ipv6Addr>,
    pub maps: Vec<crate::model::PortMapping>,
}

/// The port maps (see [`render`]): on one host address, keyed by address . protocol . port
/// (`dnat_at4`, `dnat_at6` give the sandbox's address, `dnat_at4_port`, `dnat_at6_port` its
/// port); on every address, keyed by protocol . port (`dnat_any4`, `dnat_any6`,
/// `dnat_any_port`). Address and port are two maps because nft 1.0.6 cannot declare a map
/// whose data is a concatenation in JSON (it crashes). Each: its name, the host address type
/// that begins its key (none: the key is protocol . port), its data type.
pub(crate) const PORT_MAPS: [(&str, Option<&str>, &str); 7] = [
    ("dnat_at4", Some("ipv4_addr"), "ipv4_addr"),
    ("dnat_at4_port", Some("ipv4_addr"), "inet_service"),
    ("dnat_at6", Some("ipv6_addr"), "ipv6_addr"),
    ("dnat_at6_port", Some("ipv6_addr"), "inet_service"),
    ("dnat_any4", None, "ipv4_addr"),
    ("dnat_any6", None, "ipv6_addr"),
    ("dnat_any_port", None, "inet_service"),
];

/// What one port-map element sends a connection to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortTarget {
    Addr(std::net::IpAddr),
    Port(u16),
}

/// One element a sandbox's published ports put in a port map, before it is written as nft
/// JSON ([`render`]) or nf_tables netlink ([`nl`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortSlot<'a> {
    pub map: &'static str,
    /// The host address of the key (none: the key is protocol . port).
    pub host: Option<std::net::IpAddr>,
    pub proto: &'a str,
    pub port: u16,
    pub to: PortTarget,
}

impl PortRules {
    /// Every element its ports put in the port maps: per mapping, the sandbox's address and
    /// port, for each family it has (only the host address's family when one is given).
    pub(crate) fn slots(&self) -> Vec<PortSlot<'_>> {
        use std::net::IpAddr;
        let mut v = Vec::new();
        for m in &self.maps {
            let slot = |map, host, to| PortSlot {
                map,
                host,
                proto: &m.proto,
                port: m.host_port,
                to,
            };
            let port = PortTarget::Port(m.container_port);
            match m.host_ip.filter(|h| !h.is_unspecified()) {
                Some(h @ IpAddr::V4(_)) => {
                    v.push(slot(
                        "dnat_at4",
                        Some(h),
                        PortTarget::Addr(self.addr.into()),
                    ));
                    v.push(slot("dnat_at4_port", Some(h), port));
                }
                Some(h @ IpAddr::V6(_)) => {
                    if let Some(a6) = self.addr6 {
                        v.push(slot("dnat_at6", Some(h), PortTarget::Addr(a6.into())));
                        v.push(slot("dnat_at6_port", Some(h), port));
                    }
                }
                None => {
                    v.push(slot("dnat_any4", None, PortTarget::Addr(self.addr.into())));
                    if let Some(a6) = self.addr6 {
                        v.push(slot("dnat_any6", None, PortTarget::Addr(a6.into())));
                    }
                    v.push(slot("dnat_any_port", None, port));
                }
            }
        }
        v
    }

    /// The keys its ports hold in the port maps.
    pub fn elems(&self) -> Vec<PortElem> {
        self.slots().iter().map(PortElem::of).collect()
    }
}

/// One key of a port map, as a listing names it: what a purge deletes, what `system check`
/// compares with the records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortElem {
    pub map: String,
    /// The key as nft JSON text (`{"concat":["tcp",8080]}`).
    pub key: String,
}

impl PortElem {
    fn of(s: &PortSlot) -> PortElem {
        PortElem {
            map: s.map.to_string(),
            key: render::port_slot_key(s).to_string(),
        }
    }
}

impl std::fmt::Display for PortElem {
    /// `dnat_any4 element tcp . 8080`, as nft writes a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Value = serde_json::from_str(&self.key).unwrap_or(Value::Null);
        let part = |p: &Value| p.as_str().map_or_else(|| p.to_string(), str::to_string);
        let key = match v.get("concat").and_then(Value::as_array) {
            Some(parts) => parts.iter().map(part).collect::<Vec<_>>().join(" . "),
            None => part(&v),
        };
        write!(f, "{} element {key}", self.map)
    }
}

/// ICC off for one endpoint: its bridge port, and the ports of linked endpoints it may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IccRules {
    /// The endpoint's bridge port (its host-side veth).
    pub port: String,
    /// Legacy links: what this port may open on another port (and be answered from).
    #[serde(default)]
    pub links: Vec<IccLink>,
}

/// One linked service: `peer`'s `proto`/`port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IccLink {
    pub peer: String,
    pub proto: String,
    pub port: u16,
}

/// One change to weft's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "lowercase")]
pub enum FwChange {
    Add(NetRules),
    Remove(NetRules),
    #[serde(rename = "add-ports")]
    AddPorts(PortRules),
    #[serde(rename = "remove-ports")]
    RemovePorts(PortRules),
    #[serde(rename = "add-icc")]
    AddIcc(IccRules),
    #[serde(rename = "remove-icc")]
    RemoveIcc(IccRules),
}

impl FwChange {
    pub fn inverse(&self) -> FwChange {
        match self {
            FwChange::Add(r) => FwChange::Remove(r.clone()),
            FwChange::Remove(r) => FwChange::Add(r.clone()),
            FwChange::AddPorts(p) => FwChange::RemovePorts(p.clone()),
            FwChange::RemovePorts(p) => FwChange::AddPorts(p.clone()),
            FwChange::AddIcc(i) => FwChange::RemoveIcc(i.clone()),
            FwChange::RemoveIcc(i) => FwChange::AddIcc(i.clone()),
        }
    }

    /// Does it only add?
    pub fn is_addition(&self) -> bool {
        matches!(
            self,
            FwChange::Add(_) | FwChange::AddPorts(_) | FwChange::AddIcc(_)
        )
    }

    /// What it is about, in words (logs, `system check`).
    pub fn describe(&self) -> String {
        match self {
            FwChange::Add(r) | FwChange::Remove(r) => {
                format!("nftables rules of {} (chains nw-{}-*)", r.iface, r.id)
            }
            FwChange::AddPorts(p) | FwChange::RemovePorts(p) => {
                format!("published ports of {} (sandbox {})", p.addr, p.id)
            }
            FwChange::AddIcc(i) | FwChange::RemoveIcc(i) => format!(
                "ICC-off rules of bridge port {} ({} linked ports)",
                i.port,
                i.links.len()
            ),
        }
    }
}

/// weft's tables as listed at one moment.
pub struct Listing {
    inet: Option<Vec<Value>>,
    bridge: Option<Vec<Value>>,
}

impl Listing {
    /// Is what a firewall removal would remove in place: a network's chains and dispatch
    /// element, a sandbox's port-map elements (by content), an endpoint's ICC elements?
    pub fn has(&self, change: &FwChange) -> bool {
        match change {
            FwChange::Remove(r) | FwChange::Add(r) => self
                .inet
                .as_ref()
                .is_some_and(|i| listing::has_network(i, r)),
            FwChange::RemovePorts(p) | FwChange::AddPorts(p) => {
                self.inet.as_ref().is_some_and(|i| listing::has_ports(i, p))
            }
            FwChange::RemoveIcc(c) | FwChange::AddIcc(c) => {
                self.bridge.as_ref().is_some_and(|b| listing::has_icc(b, c))
            }
        }
    }

    /// The network ids (12 hex digits) with chains in the inet table; `None` without one.
    pub fn networks(&self) -> Option<Vec<String>> {
        self.inet.as_deref().map(listing::chain_ids)
    }

    /// What the tables hold for sandboxes: the port maps' keys and the bridge ports with ICC
    /// elements.
    pub fn sandbox_objects(&self) -> (Vec<PortElem>, Vec<String>) {
        (
            self.inet
                .as_deref()
                .map(listing::port_elems)
                .unwrap_or_default(),
            self.bridge
                .as_deref()
                .map(listing::icc_ports)
                .unwrap_or_default(),
        )
    }

    /// The objects in weft's tables weft does not make (see [`listing::strangers`]), as
    /// `chain inet weft pt-…`.
    pub fn strangers(&self) -> Vec<String> {
        [("inet", &self.inet), ("bridge", &self.bridge)]
            .into_iter()
            .flat_map(|(fam, items)| {
                items
                    .as_deref()
                    .map(|i| listing::strangers(i, fam))
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |(kind, name)| format!("{kind} {fam} {} {name}", render::TABLE))
            })
            .collect()
    }

    /// Are the base chains whole (`None`: no inet table)?
    pub fn base_intact(&self) -> Option<bool> {
        let bridge = self
            .bridge
            .as_deref()
            .is_none_or(listing::bridge_base_intact);
        self.inet
            .as_deref()
            .map(|i| listing::base_intact(i) && bridge)
    }
}

/// Runs nft in one namespace (and, for an endpoint's ICC elements, nf_tables netlink).
pub struct Firewall {
    netns: Option<RawFd>,
    nft: String,
    nl: nl::Nl,
}

impl Firewall {
    /// `netns`: the host namespace (kept open by the caller for the firewall's lifetime).
    pub fn new(netns: Option<&File>) -> Firewall {
        let nft = std::env::var("WEFT_NFT").unwrap_or_else(|_| "nft".to_string());
        let netns = netns.map(|f| f.as_raw_fd());
        Firewall {
            netns,
            nft,
            nl: nl::Nl::new(netns),
        }
    }

    /// Apply changes in one nft transaction: all or nothing.
    ///
    /// A sandbox's changes (ports, ICC) go alone first, without re-asserting the base chains:
    /// replacing a base chain's rules makes the kernel wait for an RCU grace period, 10–20 ms
    /// of wall time per operation. If the tables they need are missing (a first use, a
    /// flushed ruleset), the whole batch follows. A network's changes always re-assert the
    /// base.
    pub async fn apply(&self, changes: &[FwChange]) -> Result<(), NetError> {
        // A sandbox's own changes — its endpoints' ICC elements (no legacy links), its
        // published ports — all adding or all removing: one netlink batch, no process. A
        // missing table or map (its first use) goes the nft way, which makes it.
        let mut icc: Vec<&IccRules> = Vec::new();
        let mut ports: Vec<&PortRules> = Vec::new();
        for c in changes {
            match c {
                FwChange::AddIcc(i) | FwChange::RemoveIcc(i) if i.links.is_empty() => icc.push(i),
                FwChange::AddPorts(p) | FwChange::RemovePorts(p) => ports.push(p),
                _ => {}
            }
        }
        let add = changes.first().is_some_and(FwChange::is_addition);
        if !changes.is_empty()
            && icc.len() + ports.len() == changes.len()
            && changes.iter().all(|c| c.is_addition() == add)
        {
            match self.nl.sandbox(add, render::TABLE, &icc, &ports) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() && !add => return Err(e),
                Err(e) => tracing::debug!("{e}: through nft instead"),
            }
        }
        if let Some(doc) = render::sandbox_batch(changes) {
            match self.run(&["-j", "-f", "-"], Some(doc.to_string())).await {
                Err(e) if e.is_not_found() && changes.iter().all(FwChange::is_addition) => {}
                other => return other.map(|_| ()),
            }
        }
        let doc = render::batch(changes);
        self.run(&["-j", "-f", "-"], Some(doc.to_string()))
            .await
            .map(|_| ())
    }

    /// weft's `inet` table as nft JSON objects; `None` when it does not exist.
    pub async fn list(&self) -> Result<Option<Vec<Value>>, NetError> {
        self.list_table("inet").await
    }

    /// One of weft's tables (`inet`, `bridge`) as nft JSON objects; `None` when it does not
    /// exist.
    async fn list_table(&self, family: &str) -> Result<Option<Vec<Value>>, NetError> {
        match self
            .run(&["-j", "list", "table", family, render::TABLE], None)
            .await
        {
            Ok(out) => {
                let v: Value = serde_json::from_str(&out)
                    .map_err(|e| NetError::other("nft list", format!("nft output: {e}")))?;
                Ok(Some(
                    v.get("nftables")
                        .and_then(|x| x.as_array())
                        .cloned()
                        .unwrap_or_default(),
                ))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Both of weft's tables, read once: what a `system check` asks (about every network,
    /// sandbox and endpoint, the orphans and the base chains) is answered from one listing.
    pub async fn listing(&self) -> Result<Listing, NetError> {
        Ok(Listing {
            inet: self.list_table("inet").await?,
            bridge: self.list_table("bridge").await?,
        })
    }

    /// Does weft's table exist and hold no network's and no sandbox's rules?
    pub async fn unused(&self) -> Result<bool, NetError> {
        Ok(self.list().await?.is_some_and(|items| {
            listing::chain_ids(&items).is_empty() && listing::port_elems(&items).is_empty()
        }))
    }

    /// Remove whatever weft's table holds for network `id12`, whatever state it is in.
    pub async fn purge(&self, id12: &str) -> Result<(), NetError> {
        let items = self.list().await?.unwrap_or_default();
        self.run_nonempty(listing::purge(&items, id12)).await
    }

    /// Remove an endpoint's ICC elements one by one, skipping those already gone.
    pub async fn remove_icc_each(&self, i: &IccRules) -> Result<(), NetError> {
        let doc = render::batch(&[FwChange::RemoveIcc(i.clone())]);
        let deletes = doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c.get("delete").is_some());
        for d in deletes {
            let one = serde_json::json!({"nftables": [d]});
            match self.run(&["-j", "-f", "-"], Some(one.to_string())).await {
                Err(e) if e.is_not_found() => {}
                other => other.map(|_| ())?,
            }
        }
        Ok(())
    }

    /// Put the base chains' rules back (the table, maps and per-network state stay).
    pub async fn reassert_base(&self) -> Result<(), NetError> {
        let bridge = self.list_table("bridge").await?.is_some();
        let doc = render::base_batch(bridge);
        self.run(&["-j", "-f", "-"], Some(doc.to_string()))
            .await
            .map(|_| ())
    }

    /// Remove these keys from the port maps, whatever they map to; those not there are
    /// skipped.
    pub async fn purge_ports(&self, elems: &[PortElem]) -> Result<(), NetError> {
        let items = self.list_table("inet").await?.unwrap_or_default();
        self.run_nonempty(listing::purge_ports(&items, elems)).await
    }

    /// Remove what weft's tables hold that weft does not make.
    pub async fn purge_strangers(&self) -> Result<(), NetError> {
        for fam in ["inet", "bridge"] {
            let items = self.list_table(fam).await?.unwrap_or_default();
            self.run_nonempty(listing::purge_strangers(&items, fam))
                .await?;
        }
        Ok(())
    }

    /// Remove every ICC element naming `port`.
    pub async fn purge_icc(&self, port: &str) -> Result<(), NetError> {
        let items = self.list_table("bridge").await?.unwrap_or_default();
        self.run_nonempty(listing::purge_icc(&items, port)).await
    }

    async fn run_nonempty(&self, doc: Value) -> Result<(), NetError> {
        if doc["nftables"].as_array().is_none_or(|a| a.is_empty()) {
            return Ok(());
        }
        self.run(&["-j", "-f", "-"], Some(doc.to_string()))
            .await
            .map(|_| ())
    }

    /// Delete weft's tables (nothing of weft's left in the host's ruleset).
    pub async fn reset(&self) -> Result<(), NetError> {
        let doc = render::delete_tables();
        match self.run(&["-j", "-f", "-"], Some(doc.to_string())).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Run nft; its failures become typed errors here, once (nft says "No such file or
    /// directory" for a missing table, chain or element).
    async fn run(&self, args: &[&str], stdin: Option<String>) -> Result<String, NetError> {
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
            NetError::new(
                "nftables",
                NetErrorKind::Unsupported,
                format!(
                    "cannot run {}: {e} (install the nftables package)",
                    self.nft
                ),
            )
        })?;
        if let Some(input) = stdin {
            let mut si = child.stdin.take().unwrap();
            si.write_all(input.as_bytes())
                .await
                .map_err(|e| NetError::io("nftables", e))?;
            drop(si);
        } else {
            drop(child.stdin.take());
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| NetError::io("nftables", e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let kind = if err.contains("No such file or directory") {
                NetErrorKind::NotFound
            } else if err.contains("File exists") {
                NetErrorKind::Exists
            } else if err.contains("Operation not permitted") {
                NetErrorKind::Permission
            } else {
                NetErrorKind::Other
            };
            return Err(NetError::new(
                "nftables",
                kind,
                if err.is_empty() {
                    format!("nft exited with {}", out.status)
                } else {
                    err
                },
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
