//! A minimal container runtime on weft's library: start a program in a new network
//! namespace, attach that namespace to a network, let the program run, wait for it, detach.
//!
//! ```text
//! cargo run --example runtime -- [--network NAME] [--name NAME] -- COMMAND [ARGS…]
//! cargo run --example runtime -- --network web -- ip -br addr
//! ```
//!
//! The child is held at a pipe between `unshare(CLONE_NEWNET)` and `exec`, so it starts its
//! program only once its interface, addresses and routes are in place — the way a real
//! runtime hands a container its network before the entrypoint runs. State goes where the
//! `weft` CLI keeps it (`WEFT_ROOT`, `WEFT_RUN_ROOT`), so `weft sandbox ls` shows the
//! sandbox while the program runs.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use nix::sys::wait::WaitStatus;
use nix::unistd::ForkResult;

use weft::model::{NetworkCreate, SandboxCreate};
use weft::{Config, Engine, Error};

fn usage() -> ExitCode {
    eprintln!("usage: runtime [--network NAME] [--name NAME] -- COMMAND [ARGS…]");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        return usage();
    };
    let (opts, cmd) = (&args[..split], &args[split + 1..]);
    if cmd.is_empty() {
        return usage();
    }
    let mut network = "bridge".to_string();
    let mut name = format!("run-{}", std::process::id());
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match (o.as_str(), it.next()) {
            ("--network", Some(v)) => network = v.clone(),
            ("--name", Some(v)) => name = v.clone(),
            _ => return usage(),
        }
    }
    match run(&network, &name, cmd).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("runtime: {e}");
            ExitCode::from(125)
        }
    }
}

async fn run(network: &str, name: &str, cmd: &[String]) -> Result<u8, Error> {
    let engine = Engine::open(Config::from_env()).await?;
    if network != "bridge" && engine.network(network).is_err() {
        engine
            .create_network(NetworkCreate {
                name: network.into(),
                ..Default::default()
            })
            .await?;
    }
    // The child waits on this pipe after entering its new namespace. (Not `Command`'s
    // pre_exec: spawn() waits for the exec, which waits for us.)
    let (rd, wr) = nix::unistd::pipe().map_err(|e| Error::internal(format!("pipe: {e}")))?;
    let argv: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(Error::invalid))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (rd_fd, wr_fd) = (rd.as_raw_fd(), wr.as_raw_fd());
    // SAFETY: between fork and exec the child only makes async-signal-safe calls (no
    // allocation: everything it needs was built above).
    let child = match unsafe { nix::unistd::fork() }.map_err(Error::internal)? {
        ForkResult::Child => unsafe {
            libc::close(wr_fd);
            let mut b = 0u8;
            if libc::unshare(libc::CLONE_NEWNET) == 0
                && libc::read(rd_fd, &mut b as *mut u8 as *mut libc::c_void, 1) == 1
            {
                libc::execvp(ptrs[0], ptrs.as_ptr());
            }
            libc::_exit(127)
        },
        ForkResult::Parent { child } => child,
    };
    drop(rd);
    let netns = format!("/proc/{child}/ns/net");
    // Wait until the child is in its own namespace.
    let own = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    while std::fs::metadata(&netns).map(|m| m.ino()).ok() == own {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let attached = engine
        .create_sandbox(SandboxCreate {
            name: name.into(),
            network: Some(network.into()),
            netns: Some(netns.into()),
            ..Default::default()
        })
        .await;
    if let Err(e) = attached {
        drop(wr); // the child's read returns 0: it exits without running the program
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(e);
    }
    let go: OwnedFd = wr;
    nix::unistd::write(&go, b"g").map_err(|e| Error::internal(format!("pipe: {e}")))?;
    drop(go);
    let status = tokio::task::spawn_blocking(move || nix::sys::wait::waitpid(child, None))
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)?;
    engine.remove_sandbox(name, true).await?;
    Ok(match status {
        WaitStatus::Exited(_, code) => code.clamp(0, 255) as u8,
        _ => 128,
    })
}
