//! The CLI's second door: while a daemon serves this state, a command goes to it — its
//! arguments as typed, and the directory they were typed in, as JSON on weft's socket — and
//! what it printed comes back and is printed as is. The daemon parses the arguments with the
//! same clap definition (every check clap makes runs there too: nothing reaches a command
//! that the command line would refuse) and runs the very code the CLI runs in-process
//! ([`super::run_request`]), so both doors print the same.
//!
//! The exchange is one HTTP/1.1 request on a blocking unix socket, written here rather than
//! with hyper's client: the CLI then needs no async runtime and no store open, which is most
//! of what a command costs (see the attach benchmark).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::output::{err_line, write_err, write_out, Captured, Exit};
use super::{Cli, Cmd};

/// A command for the daemon: the arguments after the program's name, and where relative paths
/// in them start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub args: Vec<String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

impl Request {
    /// This process's own command line (`None` when an argument is not UTF-8: such a command
    /// runs in-process).
    pub fn of_process() -> Option<Request> {
        let args = std::env::args_os()
            .skip(1)
            .map(|a| a.into_string().ok())
            .collect::<Option<Vec<String>>>()?;
        Some(Request {
            args,
            cwd: std::env::current_dir().ok(),
        })
    }
}

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

/// Paths in a command, made absolute from the client's directory (the daemon does not share
/// it).
pub(super) fn absolutize(cmd: &mut Cmd, cwd: Option<&Path>) {
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            if let Some(cwd) = cwd {
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

/// Send the command `cmd` was parsed from to the daemon at `sock`. `None` when no daemon
/// listens there (a socket file left by one that is gone), or the command line cannot be sent
/// (an argument that is not UTF-8): the caller runs the command in-process.
pub fn try_run(sock: &Path, cmd: &Cmd) -> Option<Exit> {
    Some(match ask(sock, cmd, Request::of_process()?)? {
        Ok(c) => {
            write_out(&c.stdout);
            write_err(&c.stderr);
            c.code
        }
        Err(code) => code,
    })
}

/// [`try_run`] for `req` (the command line `cmd` was parsed from), with what the daemon printed
/// returned rather than printed (errors of the exchange itself are printed, and are
/// `Err(exit code)`).
pub fn ask(sock: &Path, cmd: &Cmd, mut req: Request) -> Option<Result<Captured, Exit>> {
    let s = match connect(sock)? {
        Ok(s) => s,
        Err(code) => return Some(Err(code)),
    };
    // Questions are asked here, on the user's terminal, before anything is sent (and only
    // once a daemon is there to send it to: else the command runs in-process, and asks).
    if let Cmd::Network(super::network::NetworkCmd::Prune { force: false, .. }) = cmd {
        if !super::network::confirm_prune() {
            return Some(Err(0));
        }
        req.args.push("--force".into());
    }
    let body = serde_json::to_vec(&req).expect("a request serializes");
    Some(post(s, sock, "/weft/v1/run", &body).and_then(|body| decode(&body)))
}

/// How to run a command in `sandbox` (`sandbox exec`), from the daemon: `None` when no daemon
/// listens at `sock`; errors are printed, and are `Err(exit code)`.
pub fn exec_plan(sock: &Path, sandbox: &str) -> Option<Result<crate::ExecPlan, Exit>> {
    let s = match connect(sock)? {
        Ok(s) => s,
        Err(code) => return Some(Err(code)),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "sandbox": sandbox }))
        .expect("a request serializes");
    Some(post(s, sock, "/weft/v1/exec", &body).and_then(|body| decode(&body)))
}

/// A daemon's answer, decoded; a broken one is said.
fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, Exit> {
    serde_json::from_str(body).map_err(|e| {
        err_line(format!("the weft daemon sent a broken answer: {e}"));
        1
    })
}

/// A connection to the daemon at `sock`: `None` when no daemon listens there (a socket file
/// left by one that is gone); another failure is printed, and is `Err(exit code)`.
fn connect(sock: &Path) -> Option<Result<UnixStream, Exit>> {
    match UnixStream::connect(sock) {
        Ok(s) => Some(Ok(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            None
        }
        Err(e) => {
            err_line(format!(
                "cannot reach the weft daemon at {}: {e}",
                sock.display()
            ));
            Some(Err(1))
        }
    }
}

/// One POST on `s` (to the daemon at `sock`), its answer's body when it is 200; the daemon's
/// refusals and errors of the exchange are printed, and are `Err(exit code)`.
fn post(mut s: UnixStream, sock: &Path, path: &str, body: &[u8]) -> Result<String, Exit> {
    // A daemon that stopped answering must not hang every CLI with it.
    let limit = client_timeout();
    let _ = s.set_read_timeout(Some(limit));
    let _ = s.set_write_timeout(Some(limit));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: weft\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut reply = Vec::new();
    let r = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
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
        return Err(1);
    }
    let text = String::from_utf8_lossy(&reply);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        err_line(format!(
            "the weft daemon at {} sent a broken answer",
            sock.display()
        ));
        return Err(1);
    };
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let msg = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        err_line(msg);
        return Err(1);
    }
    Ok(body.to_string())
}
