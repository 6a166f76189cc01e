//! The wasmtime side: one engine (component model, epoch interruption for deadlines, fuel
//! when a plugin is granted a budget, no component-model-async overhead), linkers for the two
//! worlds, an on-disk cache of compiled components keyed by content hash and engine
//! configuration, and the check that a component speaks this engine's WIT version.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{driver, ipam};
use super::host::HostState;
use super::Kind;
use crate::error::{Error, Result};

/// The WIT package this engine speaks.
pub const WIT_PACKAGE: &str = "weft:plugin";
pub const WIT_VERSION: &str = "0.1.0";

/// How often the epoch ticks: the granularity of per-call deadlines.
pub const TICK: Duration = Duration::from_millis(5);

/// The wasmtime engine and everything shared by all plugins.
pub struct Runtime {
    pub engine: Engine,
    pub driver_linker: Linker<HostState>,
    pub ipam_linker: Linker<HostState>,
    cache_dir: PathBuf,
    fingerprint: String,
}

impl Runtime {
    pub fn new(cache_dir: &Path) -> Result<Arc<Runtime>> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        cfg.consume_fuel(true);
        cfg.concurrency_support(false);
        // Instances come from a pool of pre-reserved slots: a fresh instance per call then
        // costs microseconds and reuses warm memory instead of mapping new memory each time.
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(32)
            .total_core_instances(64)
            .total_memories(32)
            .total_tables(64)
            .total_stacks(32)
            .max_memory_size(4 << 30);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| Error::internal(format!("wasmtime: {e}")))?;
        let mut driver_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut driver_linker).map_err(wt)?;
        driver::DriverPlugin::add_to_linker::<_, HasSelf<_>>(&mut driver_linker, |s| s)
            .map_err(wt)?;
        let mut ipam_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut ipam_linker).map_err(wt)?;
        ipam::IpamPlugin::add_to_linker::<_, HasSelf<_>>(&mut ipam_linker, |s| s).map_err(wt)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("{:016x}", h.finish());
        // Deadlines: a ticker advances the epoch; it stops when the engine is gone.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| {
                Error::internal(format!("cannot start the plugin deadline ticker: {e}"))
            })?;
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| Error::internal(format!("{}: {e}", cache_dir.display())))?;
        Ok(Arc::new(Runtime {
            engine,
            driver_linker,
            ipam_linker,
            cache_dir: cache_dir.to_path_buf(),
            fingerprint,
        }))
    }

    /// Compile a component, or load it from the cache (keyed by content hash and engine
    /// configuration, so a cache written by another engine build is never used).
    pub fn load(&self, bytes: &[u8], sha256: &str) -> Result<Component> {
        let path = self
            .cache_dir
            .join(format!("{sha256}-{}.cwasm", self.fingerprint));
        if path.exists() {
            // SAFETY: the file is one this engine configuration wrote (the name carries the
            // content hash and the engine fingerprint) into weft's own state directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!("ignoring unusable compiled plugin {}: {e}", path.display())
                }
            }
        }
        let started = std::time::Instant::now();
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| Error::invalid(format!("not a valid WebAssembly component: {e}")))?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "compiled plugin component"
        );
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &compiled)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
        // SAFETY: `compiled` was produced by this very engine just now.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(wt)
    }

    /// Which world a component implements, refusing other WIT versions by name.
    pub fn kind_of(&self, c: &Component) -> Result<Kind> {
        let ty = c.component_type();
        let mut found = None;
        for (name, _) in ty.exports(&self.engine) {
            let Some(rest) = name.strip_prefix(&format!("{WIT_PACKAGE}/")) else {
                continue;
            };
            let (iface, version) = rest.split_once('@').unwrap_or((rest, "unversioned"));
            let kind = match iface {
                "network-driver" => Kind::Driver,
                "ipam" => Kind::Ipam,
                _ => continue,
            };
            if version != WIT_VERSION {
                return Err(Error::invalid(format!(
                    "this plugin was built for {WIT_PACKAGE}@{version}, but this engine speaks {WIT_PACKAGE}@{WIT_VERSION}: rebuild it against weft's wit/ directory"
                )));
            }
            found = Some(kind);
        }
        found.ok_or_else(|| {
            Error::invalid(format!(
                "not a weft plugin: the component exports neither {WIT_PACKAGE}/network-driver@{WIT_VERSION} nor {WIT_PACKAGE}/ipam@{WIT_VERSION}"
            ))
        })
    }

    /// Names of the component's imports (to explain a failed link in plain words).
    pub fn imports_of(&self, c: &Component) -> Vec<String> {
        c.component_type()
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect()
    }
}

pub fn wt(e: wasmtime::Error) -> Error {
    Error::internal(format!("wasmtime: {e}"))
}
