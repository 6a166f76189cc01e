//! The wasmtime side: one engine (component model, epoch ticks for deadlines, fuel when a
//! plugin is granted a budget, no component-model-async overhead), linkers for the worlds of
//! every contract this engine speaks, the WASI a plugin gets (no sockets, no files, no
//! environment; wasi:http only towards granted hosts), an on-disk cache of compiled components
//! that is trusted only when its hash matches the one recorded at install, and the check of
//! which contract a component speaks.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine};

use super::bindings::{driver, ipam, v01};
use super::host::HostState;
use super::Kind;
use crate::error::{Error, Result};

/// The WIT package this engine speaks.
pub const WIT_PACKAGE: &str = "weft:plugin";
pub const WIT_VERSION: &str = "0.2.0";

/// Bytes of each linear memory kept resident (zeroed with memset) between instances.
const KEEP_RESIDENT: usize = 64 << 10;

/// Slots whose memory is given back to the kernel together (one madvise round and one TLB
/// shootdown for many instances). A slot is always zeroed before it is used again.
const DECOMMIT_BATCH: usize = 16;

/// How often the epoch ticks: the granularity of per-call deadlines.
pub const TICK: Duration = Duration::from_millis(5);

/// A component's kind and the contract version it was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaks {
    pub kind: Kind,
    pub version: &'static str,
}

/// The wasmtime engine and everything shared by all plugins.
pub struct Runtime {
    pub engine: Engine,
    pub driver_linker: Linker<HostState>,
    pub ipam_linker: Linker<HostState>,
    pub driver01_linker: Linker<HostState>,
    pub ipam01_linker: Linker<HostState>,
    cache_dir: PathBuf,
    fingerprint: String,
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// The WASI a plugin gets: streams and poll, clocks, random, the cli basics (its stdio goes
/// to a bounded buffer; no environment, no arguments), a filesystem with nothing in it, and
/// wasi:http (every request checked against the plugin's grants). No sockets: a component
/// that imports them cannot be installed.
fn link_wasi(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::WasiView;
    use wasmtime_wasi_io::bindings::wasi::io;
    io::error::add_to_linker::<HostState, HasIo>(l, |t| t.ctx().table)?;
    io::poll::add_to_linker::<HostState, HasIo>(l, |t| t.ctx().table)?;
    io::streams::add_to_linker::<HostState, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    filesystem::types::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)?;
    Ok(())
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
            .total_core_instances(512)
            .total_memories(32)
            .total_tables(256)
            .total_stacks(32)
            .max_memory_size(4 << 30)
            // Reset a slot's first pages with memset rather than madvise: a fresh instance
            // per call would otherwise pay a system call and page faults each time.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .decommit_batch_size(DECOMMIT_BATCH);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| Error::internal(format!("wasmtime: {e}")))?;
        let linker = |add: &dyn Fn(&mut Linker<HostState>) -> wasmtime::Result<()>| {
            let mut l = Linker::new(&engine);
            link_wasi(&mut l).map_err(wt)?;
            add(&mut l).map_err(wt)?;
            Ok::<_, Error>(l)
        };
        let driver_linker =
            linker(&|l| driver::DriverPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s))?;
        let ipam_linker = linker(&|l| ipam::IpamPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s))?;
        let driver01_linker =
            linker(&|l| v01::driver::DriverPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s))?;
        let ipam01_linker =
            linker(&|l| v01::ipam::IpamPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s))?;
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
        private_dir(cache_dir)?;
        Ok(Arc::new(Runtime {
            engine,
            driver_linker,
            ipam_linker,
            driver01_linker,
            ipam01_linker,
            cache_dir: cache_dir.to_path_buf(),
            fingerprint,
        }))
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    /// Compile a component (its source hash is `sha256`), keep the result in the cache, and
    /// return it with the hash of the compiled form (to record, so the cache can be checked).
    pub fn compile(&self, bytes: &[u8], sha256: &str) -> Result<(Component, (String, String))> {
        let started = std::time::Instant::now();
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| Error::invalid(format!("not a valid WebAssembly component: {e}")))?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "compiled plugin component"
        );
        let hash = hex::encode(Sha256::digest(&compiled));
        if let Err(e) = write_private(&self.cache_path(sha256), &compiled) {
            tracing::debug!("compile cache not written: {e}");
        }
        // SAFETY: `compiled` was produced by this very engine just now.
        let c = unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(wt)?;
        Ok((c, (hash, self.fingerprint.clone())))
    }

    /// Load an installed component: from the cache when the compiled file there still has
    /// the hash recorded at install (for this engine build), else by compiling it again.
    pub fn load(
        &self,
        bytes: &[u8],
        sha256: &str,
        recorded: Option<&(String, String)>,
    ) -> Result<Component> {
        if let Some(c) = self.load_cached(sha256, recorded) {
            return Ok(c);
        }
        Ok(self.compile(bytes, sha256)?.0)
    }

    /// An installed component from the cache, if the compiled file there still has the hash
    /// recorded at install for this engine build (the component itself is not read: a large
    /// one, CPython's 18 MB, would cost a read and a hash for nothing).
    pub fn load_cached(
        &self,
        sha256: &str,
        recorded: Option<&(String, String)>,
    ) -> Option<Component> {
        let (hash, _) = recorded.filter(|(_, fp)| *fp == self.fingerprint)?;
        let compiled = std::fs::read(self.cache_path(sha256)).ok()?;
        if hex::encode(Sha256::digest(&compiled)) != *hash {
            tracing::warn!(
                "the compiled plugin in the cache does not match what was installed: compiling it again"
            );
            return None;
        }
        // SAFETY: these are the exact bytes this engine configuration produced at install
        // (their hash is in weft's store, which only root writes).
        unsafe { Component::deserialize(&self.engine, &compiled) }.ok()
    }

    /// Remove a component's compiled forms from the cache.
    pub fn forget(cache_dir: &Path, sha256: &str) {
        if let Ok(rd) = std::fs::read_dir(cache_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(sha256) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Which world and contract a component implements; other versions are refused by name.
    pub fn speaks(&self, c: &Component) -> Result<Speaks> {
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
            let Some(v) = super::CONTRACTS.iter().find(|v| **v == version) else {
                return Err(Error::invalid(format!(
                    "this plugin was built for {WIT_PACKAGE}@{version}, but this engine speaks {}: rebuild it against weft's wit/ directory",
                    super::CONTRACTS
                        .iter()
                        .map(|v| format!("{WIT_PACKAGE}@{v}"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            };
            found = Some(Speaks { kind, version: v });
        }
        found.ok_or_else(|| {
            Error::invalid(format!(
                "not a weft plugin: the component exports neither {WIT_PACKAGE}/network-driver nor {WIT_PACKAGE}/ipam (of {WIT_PACKAGE}@{WIT_VERSION} or 0.1.0)"
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

/// A directory only root reads (plugins and their compiled forms).
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))
}

/// Write a file through a new temporary file (exclusive, never through a symlink, 0600) and
/// rename it into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(r)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let r = f.write_all(bytes).and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

pub fn wt(e: wasmtime::Error) -> Error {
    Error::internal(format!("wasmtime: {e}"))
}
