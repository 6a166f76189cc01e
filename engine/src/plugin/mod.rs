//! Wasm plugins: third-party network drivers and IPAM as sandboxed WebAssembly components.
//! The records and grants are always here; the wasmtime host is the `wasm` cargo feature (on
//! by default; an embedder that wants no plugins builds without wasmtime).
//!
//! - [`runtime`]: the wasmtime engine, the compile cache, the WIT version check;
//! - [`host`]: what the plugin's imports do (checked `host-net`, private `kv`, `log`);
//! - [`adapters`]: make a component a [`crate::drivers::NetworkDriver`] or an
//!   [`crate::ipam::Ipam`] like any native one, and validate what it returns;
//! - [`egress`]: outbound HTTP and what weft hands a plugin, bounded;
//! - [`grants`]: what a plugin may do;
//! - [`lend`]: how an operation's transactions reach a plugin call.
//!
//! Every call gets a fresh instance (from an `InstancePre`: microseconds), a memory ceiling,
//! a deadline (epoch interruption) and optional fuel. A plugin that traps, loops, allocates
//! without end or asks for what it was not granted fails that one operation, which the
//! engine rolls back; the next call starts from a clean instance.

#[cfg(feature = "wasm")]
pub mod adapters;
#[cfg(feature = "wasm")]
pub mod bindings;
#[cfg(feature = "wasm")]
pub mod egress;
pub mod grants;
#[cfg(feature = "wasm")]
pub mod host;
#[cfg(feature = "wasm")]
pub mod lend;
#[cfg(feature = "wasm")]
pub mod runtime;
#[cfg(feature = "wasm")]
pub mod v01;

#[cfg(feature = "wasm")]
use std::path::Path;
use std::path::PathBuf;
#[cfg(feature = "wasm")]
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
#[cfg(feature = "wasm")]
use sha2::{Digest, Sha256};

#[cfg(feature = "wasm")]
use crate::error::{Error, Result};
use crate::model::Scope;
pub use grants::Grants;
#[cfg(feature = "wasm")]
use runtime::Runtime;

/// What a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Driver,
    Ipam,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Driver => "network driver",
            Kind::Ipam => "IPAM",
        }
    }
}

/// What a plugin asked for (its metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    pub link_prefix: Option<String>,
    pub parents: Vec<String>,
    pub sysctls: Vec<String>,
    pub http_hosts: Vec<String>,
    pub memory_mib: Option<u32>,
    #[serde(default)]
    pub gateways: Vec<std::net::IpAddr>,
    #[serde(default)]
    pub vni_ranges: Vec<(u32, u32)>,
    #[serde(default)]
    pub vxlan_ports: Vec<u16>,
    #[serde(default)]
    pub macvlan_passthru: bool,
    #[serde(default)]
    pub config_keys: Vec<String>,
}

/// One configuration value given at install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    pub value: String,
    /// Read from a file (`--config key=@FILE`): never shown or logged.
    pub secret: bool,
}

/// The contract versions this engine speaks, newest first (older ones through an adapter).
pub const CONTRACTS: [&str; 2] = ["0.2.0", "0.1.0"];

/// An installed plugin, as the store records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub kind: Kind,
    /// Where weft keeps its copy of the component.
    pub file: PathBuf,
    pub sha256: String,
    pub version: String,
    pub description: String,
    pub asked: Asked,
    pub grants: Grants,
    /// Drivers: the scope of their networks.
    pub scope: Scope,
    /// IPAM: wants the endpoint's MAC with each request.
    pub requires_mac: bool,
    /// IPAM: wants its pools and addresses requested again after a restart.
    #[serde(default)]
    pub requires_replay: bool,
    /// Driver: wants program/revoke-external-connectivity calls.
    #[serde(default)]
    pub external_connectivity: bool,
    pub installed: String,
    /// The contract it was built for (`weft:plugin@<this>`).
    #[serde(default = "v01")]
    pub contract: String,
    /// Configuration and secrets given at install.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, ConfigValue>,
    /// The SHA-256 of its compiled form, and the engine build that compiled it: the compile
    /// cache is used only when the file there still has this hash.
    #[serde(default)]
    pub compiled: Option<(String, String)>,
}

fn v01() -> String {
    "0.1.0".into()
}

impl PluginRecord {
    /// The record as shown to users: secrets replaced.
    pub fn redacted(&self) -> PluginRecord {
        let mut r = self.clone();
        for v in r.config.values_mut() {
            if v.secret {
                v.value = "<secret>".into();
            }
        }
        r
    }

    /// Text from the plugin (a log line, an error) with every secret's value replaced, so a
    /// plugin that echoes its token does not print it.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.config.values() {
            if v.secret && !v.value.is_empty() && out.contains(v.value.as_str()) {
                out = out.replace(v.value.as_str(), "<secret>");
            }
        }
        out
    }

    /// Anything the plugin chose, made fit to leave its world — an error, a log line, an
    /// authority it tried, a name it returned: secrets replaced first (before any formatting
    /// could escape them past the scrub), then control characters, then bounded to `max`
    /// characters. Every such string passes here before weft shows, logs or keeps it.
    pub fn tell(&self, text: &str, max: usize) -> String {
        clean(&self.scrub(text), max)
    }
}

/// Text made safe to show: no control characters, at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// The lazily created wasmtime runtime shared by all plugins of an engine.
#[cfg(feature = "wasm")]
pub struct PluginHost {
    dir: PathBuf,
    runtime: OnceLock<Arc<Runtime>>,
    /// Plugins' open outbound connections, per plugin and in all.
    pub sockets: egress::Sockets,
}

#[cfg(feature = "wasm")]
impl PluginHost {
    pub fn new(root: &Path) -> PluginHost {
        PluginHost {
            dir: root.join("plugins"),
            runtime: OnceLock::new(),
            sockets: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where compiled components are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// The runtime, created on first use (about a millisecond), so commands that use no
    /// plugin pay nothing.
    pub fn runtime(&self) -> Result<Arc<Runtime>> {
        if let Some(r) = self.runtime.get() {
            return Ok(r.clone());
        }
        let r = Runtime::new(&self.dir.join("cache"))?;
        Ok(self.runtime.get_or_init(|| r).clone())
    }

    /// Read a component file, compile it (or load it from the cache), and ask it what it is.
    pub async fn examine(&self, file: &Path, name: &str) -> Result<(PluginRecord, Vec<u8>)> {
        let bytes = std::fs::read(file)
            .map_err(|e| Error::invalid(format!("cannot read {}: {e}", file.display())))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let rt = self.runtime()?;
        let (component, compiled) = {
            // Compiling takes tens of milliseconds or more: not on an async thread.
            let (rt, bytes, sha) = (rt.clone(), bytes.clone(), sha256.clone());
            tokio::task::spawn_blocking(move || rt.compile(&bytes, &sha))
                .await
                .map_err(|e| Error::internal(format!("compile: {e}")))??
        };
        let speaks = rt.speaks(&component)?;
        let mut rec = PluginRecord {
            name: name.to_string(),
            kind: speaks.kind,
            file: self.dir.join(format!("{name}.wasm")),
            sha256,
            version: String::new(),
            description: String::new(),
            asked: Asked::default(),
            grants: Grants::minimal(name),
            scope: Scope::Local,
            requires_mac: false,
            requires_replay: false,
            external_connectivity: false,
            installed: crate::model::now_rfc3339(),
            contract: speaks.version.to_string(),
            config: Default::default(),
            compiled: Some(compiled),
        };
        adapters::describe(&rt, &component, &mut rec).await?;
        Ok((rec, bytes))
    }
}

/// Plugin names: they become driver names (`-d NAME`) and file names.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
        && n.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}
