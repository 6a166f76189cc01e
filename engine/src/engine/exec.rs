//! `sandbox exec`: what a command needs to run as a sandbox's processes do — its network
//! namespace, its resolv.conf and hosts bound over /etc's, its hostname, its legacy links'
//! environment — worked out by the engine ([`Engine::exec_plan`] in a daemon,
//! [`Engine::exec_plan_at`] without one) and carried out by [`ExecPlan::exec`] in the calling
//! process (the command is the caller's: its terminal, its exit status).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::{Error, Result};
use crate::model::{NsMode, Sandbox};
use crate::net::ns::ExecSetup;
use crate::store::Store;

/// How to run a command in a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecPlan {
    /// The sandbox's namespace (its pin, or the path a runtime gave).
    pub netns: PathBuf,
    pub setup: ExecSetup,
}

impl ExecPlan {
    /// Enter the sandbox and replace this process with `cmd`; returns only on failure, with
    /// what went wrong.
    pub fn exec(&self, cmd: &[String]) -> crate::net::NetError {
        crate::net::ns::exec_in(&self.netns, &self.setup, cmd)
    }

    fn of(sb: &Sandbox, resolv: PathBuf, hosts: PathBuf, env: Vec<(String, String)>) -> Self {
        let setup = if matches!(sb.mode, NsMode::Host) {
            // The host's own namespace: its /etc and hostname stay.
            ExecSetup::default()
        } else {
            ExecSetup {
                resolv: Some(resolv),
                hosts: Some(hosts),
                hostname: Some(hostname(sb)),
                env,
            }
        };
        ExecPlan {
            netns: sb.key.clone(),
            setup,
        }
    }
}

fn hostname(sb: &Sandbox) -> String {
    sb.hostname
        .clone()
        .unwrap_or_else(|| sb.id[..12].to_string())
}

impl Engine {
    /// The plan for `sandbox` (a name or id), its /etc files written now from the records (a
    /// daemon keeps them current after each change; this makes sure the latest is there).
    pub fn exec_plan(&self, sandbox: &str) -> Result<ExecPlan> {
        let sb = self.sandbox(sandbox)?;
        let files = self.sandbox_files(&sb)?;
        let env = Engine::link_env_in(&*self.inner.store, &sb)?;
        Ok(ExecPlan::of(&sb, files.resolv_conf, files.hosts, env))
    }

    /// The plan for `sandbox` without opening an engine (no daemon runs: nothing to recover,
    /// no lock to take for a read), from the store under `root`; its /etc files written as
    /// [`Engine::sandbox_files`] writes them, under `run_root` (removed with the sandbox).
    pub fn exec_plan_at(root: &Path, run_root: &Path, sandbox: &str) -> Result<ExecPlan> {
        let path = root.join("weft.redb");
        if !path.exists() {
            // No state yet: no sandbox either (and none is made by asking).
            return Err(Error::SandboxNotFound(sandbox.to_string()));
        }
        let store = crate::store::redb_store::RedbStore::open(&path)?;
        let sb = Engine::resolve_sandbox_in(&store, sandbox)?;
        let files = Engine::write_sandbox_files(&store, run_root, &sb)?;
        let env = Engine::link_env_in(&store as &dyn Store, &sb)?;
        Ok(ExecPlan::of(&sb, files.resolv_conf, files.hosts, env))
    }
}
