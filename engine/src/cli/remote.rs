//! The CLI's second door: while a daemon serves this state, a command goes to it — the parsed
//! command as JSON on weft's socket — and what it printed comes back and is printed as is.
//! The daemon runs the very code the CLI runs in-process ([`super::run_captured`]), so both
//! doors print the same.
//!
//! The exchange is one HTTP/1.1 request on a blocking unix socket, written here rather than
//! with hyper's client: the CLI then needs no async runtime and no store open, which is most
//! of what a command costs (see the attach benchmark).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::output::{err_line, write_err, write_out, Captured, Exit};
use super::{Cli, Cmd};

/// The path of weft's socket for this CLI: `WEFT_SOCKET`, or `<run-root>/weft.sock`. `None`
/// with `WEFT_NO_DAEMON=1` (always in-process).
pub fn socket_for(cli: &Cli) -> Option<PathBuf> {
    socket_in(&cli.run_root)
}

/// weft's socket for a state whose run dir is `run_root`, if there is one: `WEFT_SOCKET`, or
/// `<run_root>/weft.sock` (for the doors that run in-process: Podman's, CNI's).
pub fn socket_in(run_root: &Path) -> Option<PathBuf> {
    if std::env::var_os("WEFT_NO_DAEMON").is_some_and(|v| v != "0") {
        return None;
    }
    let p = std::env::var_os("WEFT_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| run_root.join("weft.sock"));
    p.exists().then_some(p)
}

/// Ask the daemon at `sock` to reap the link deletions this process's removals left for
/// later (see `Engine::hand_reaps_to`): whether it took them (answered 200 within a second).
pub fn wake_reaper(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let limit = Some(std::time::Duration::from_secs(1));
    let _ = s.set_read_timeout(limit);
    let _ = s.set_write_timeout(limit);
    let mut reply = [0u8; 12];
    s.write_all(
        b"POST /weft/v1/reap HTTP/1.1\r\nHost: weft\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .and_then(|_| s.read_exact(&mut reply))
    .is_ok()
        && reply.starts_with(b"HTTP/1.1 200")
}

/// Open the engine on `cfg` for a door that runs in-process (Podman's, CNI's): when a daemon
/// serves the state, the link deletions removals defer are left to its reaper (see
/// `Config::reaps_elsewhere`, `Engine::hand_reaps_to`).
pub async fn open_beside_daemon(mut cfg: crate::Config) -> crate::Result<crate::Engine> {
    let sock = socket_in(&cfg.run_root);
    cfg.reaps_elsewhere = sock.is_some();
    let e = crate::Engine::open(cfg).await?;
    if let Some(sock) = sock {
        e.hand_reaps_to(move || wake_reaper(&sock));
    }
    Ok(e)
}

/// How long the CLI waits for the daemon's answer: `WEFT_CLIENT_TIMEOUT` seconds, default 120
/// (a plugin's first compile or a large batch removal takes seconds, not minutes).
fn client_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(
        std::env::var("WEFT_CLIENT_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|s| *s > 0)
            .unwrap_or(120),
    )
}

/// Paths in a command, made absolute (the daemon does not share the client's directory).
fn absolutize(cmd: &mut Cmd) {
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            if let Ok(cwd) = std::env::current_dir() {
                *p = cwd.join(&*p);
            }
        }
    };
    match cmd {
        Cmd::Plugin(super::plugin::PluginCmd::Install { file, config, .. }) => {
            abs(file);
            for c in config.iter_mut() {
                if let Some((k, v)) = c.split_once("=@") {
                    let mut p = PathBuf::from(v);
                    abs(&mut p);
                    *c = format!("{k}=@{}", p.display());
                }
            }
        }
        Cmd::Sandbox(super::sandbox::SandboxCmd::Create { netns: Some(p), .. }) => abs(p),
        _ => {}
    }
}

/// Send `cmd` to the daemon at `sock`. `None` when no daemon listens there (a socket file
/// left by one that is gone): the caller runs the command in-process.
pub fn try_run(sock: &Path, cmd: Cmd) -> Option<Exit> {
    Some(match ask(sock, cmd)? {
        Ok(c) => {
            write_out(&c.stdout);
            write_err(&c.stderr);
            c.code
        }
        Err(code) => code,
    })
}

/// [`try_run`], with what the daemon printed returned rather than printed (errors of the
/// exchange itself are printed, and are `Err(exit code)`).
pub fn ask(sock: &Path, mut cmd: Cmd) -> Option<Result<Captured, Exit>> {
    let mut s = match UnixStream::connect(sock) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return None
        }
        Err(e) => {
            err_line(format!(
                "cannot reach the weft daemon at {}: {e}",
                sock.display()
            ));
            return Some(Err(1));
        }
    };
    // Questions are asked here, on the user's terminal, before anything is sent.
    if let Cmd::Network(super::network::NetworkCmd::Prune { force, .. }) = &mut cmd {
        if !*force {
            if !super::network::confirm_prune() {
                return Some(Err(0));
            }
            *force = true;
        }
    }
    absolutize(&mut cmd);
    // A daemon that stopped answering must not hang every CLI with it.
    let limit = client_timeout();
    let _ = s.set_read_timeout(Some(limit));
    let _ = s.set_write_timeout(Some(limit));
    let body = serde_json::to_vec(&cmd).expect("a command serializes");
    let head = format!(
        "POST /weft/v1/run HTTP/1.1\r\nHost: weft\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut reply = Vec::new();
    let r = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(&body))
        .and_then(|_| s.read_to_end(&mut reply));
    if let Err(e) = r {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            err_line(format!(
                "the weft daemon at {} did not answer within {} s (WEFT_CLIENT_TIMEOUT): is it stuck? WEFT_NO_DAEMON=1 runs a command without it",
                sock.display(),
                limit.as_secs()
            ));
        } else {
            err_line(format!(
                "the weft daemon at {} did not answer: {e}",
                sock.display()
            ));
        }
        return Some(Err(1));
    }
    let text = String::from_utf8_lossy(&reply);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        err_line(format!(
            "the weft daemon at {} sent a broken answer",
            sock.display()
        ));
        return Some(Err(1));
    };
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let msg = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        err_line(msg);
        return Some(Err(1));
    }
    match serde_json::from_str::<Captured>(body) {
        Ok(c) => Some(Ok(c)),
        Err(e) => {
            err_line(format!("the weft daemon sent a broken answer: {e}"));
            Some(Err(1))
        }
    }
}
