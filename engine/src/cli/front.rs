//! The `weft` command's front: a small binary that parses the command line and, while a daemon
//! serves the state, hands the command to it ([`super::remote`]); anything else — no daemon,
//! `weft daemon` itself, `sandbox exec`, weft run as Podman's `netavark` or as a CNI plugin —
//! it replaces itself with the engine binary, `weft-engine`, installed next to it, which runs
//! the same command line in-process.
//!
//! Why two binaries: a process pays at every start for the code it maps. `weft-engine` holds
//! the engine, wasmtime and cranelift, and its loader writes ~1 MB of relocated pointers
//! (`.data.rel.ro`, `.got`) before `main`; the front holds clap, serde_json and a unix socket,
//! and starts in about two thirds of the time (`perf stat -r 300 weft --version`: see the
//! README's Speed section). The daemon door is the one a process-per-operation runtime takes on every
//! attach, so that half is most of what a CLI attach costs beyond the daemon's own work.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use clap::Parser;

use super::output::err_line;
use super::{remote, sandbox::SandboxCmd, Cli, Cmd};

/// The engine binary's file name, looked for next to the running `weft`.
pub const ENGINE_BIN: &str = "weft-engine";

/// Where the engine binary is: `WEFT_ENGINE`, else `weft-engine` in the directory of the
/// running executable (symlinks resolved, so a `weft` linked elsewhere still finds it).
pub fn engine_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_ENGINE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(ENGINE_BIN)))
        .unwrap_or_else(|| PathBuf::from(ENGINE_BIN))
}

/// The front's `main`: never returns.
pub fn main() -> ! {
    // Podman's and CNI's doors are the engine's (the README links them to `weft-engine`
    // directly; a link to `weft` still works, one exec later).
    if crate::podman::invoked_as_netavark() || std::env::var_os("CNI_COMMAND").is_some() {
        exec_engine();
    }
    let cli = Cli::parse();
    if matches!(
        cli.cmd,
        Cmd::Daemon(_) | Cmd::Sandbox(SandboxCmd::Exec { .. })
    ) {
        exec_engine();
    }
    if let Some(sock) = remote::socket_for(&cli) {
        if let Some(code) = remote::try_run(&sock, &cli.cmd) {
            std::process::exit(code);
        }
    }
    exec_engine()
}

/// Replace this process with the engine binary, given this process's arguments as they came
/// (its name included: Podman's door answers to `netavark`).
fn exec_engine() -> ! {
    let engine = engine_path();
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("weft"));
    let e = std::process::Command::new(&engine)
        .arg0(argv0)
        .args(args)
        .exec();
    err_line(format!(
        "cannot run weft's engine {}: {e} (it is installed next to `weft`: `cargo install --path engine` installs both; WEFT_ENGINE names another path)",
        engine.display()
    ));
    std::process::exit(127)
}
