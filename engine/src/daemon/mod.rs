//! `weft daemon`: one long-lived [`Engine`] serving the Docker API ([`crate::api`]) on unix
//! sockets, until SIGTERM or SIGINT. State lives in the store and the kernel, not in the
//! process: stopping the daemon leaves every network and sandbox working, and a restart picks
//! them up (the engine's open settles whatever a crash left). A pid file, held locked while
//! the daemon runs, keeps two daemons off one state. [`heal`] mends what others change in
//! the kernel.

pub mod heal;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::api::{self, Api};
use crate::error::{Error, Result};
use crate::{Config, Engine};

/// Raise this process's soft limit on open descriptors to its hard limit, as dockerd's
/// `LimitNOFILE` does for it: the default soft limit (1 024) is few for a daemon holding API
/// connections, DNS listeners and plugins' HTTP. Plugins get a quarter of what results
/// ([`crate::plugin::egress`]); the rest stays weft's. Returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::debug!("cannot raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Run the task `f` makes for the daemon's life: whenever it panics or ends, log it, count it
/// (`system info`'s `TaskRestarts`) and start it again (after 100 ms, doubling to 5 s while it
/// keeps dying fast). Aborting the returned handle stops it.
pub fn supervise<F, Fut>(engine: Engine, name: &'static str, f: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Engine) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            let mut task = AbortOnDrop(tokio::spawn(f(engine.clone())));
            match (&mut task.0).await {
                Ok(()) => tracing::warn!(task = name, "ended: starting it again"),
                Err(e) if e.is_panic() => {
                    let p = e.into_panic();
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    tracing::error!(task = name, "died ({msg}): starting it again");
                }
                Err(_) => return,
            }
            engine.note_restart(name);
            if started.elapsed() > std::time::Duration::from_secs(10) {
                backoff = std::time::Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
    })
}

/// Where and to whom the daemon answers.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// weft's own socket (the `weft` CLI's door): `<run root>/weft.sock`.
    pub socket: PathBuf,
    /// The Docker API socket (`DOCKER_HOST=unix://…`): `<run root>/docker.sock`.
    pub docker_socket: PathBuf,
    /// The group allowed on the sockets besides root (mode 0660); `None`: root only.
    pub group: Option<String>,
}

impl DaemonOptions {
    /// The defaults under `run_root`.
    pub fn under(run_root: &Path) -> DaemonOptions {
        DaemonOptions {
            socket: run_root.join("weft.sock"),
            docker_socket: run_root.join("docker.sock"),
            group: None,
        }
    }
}

/// The daemon's claim on a state: a pid file locked for the daemon's life.
pub struct PidLock {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl PidLock {
    /// Take the lock, or say which daemon holds it.
    pub fn take(run_root: &Path) -> Result<PidLock> {
        std::fs::create_dir_all(run_root)?;
        let path = run_root.join("weft-daemon.pid");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let mut lock = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            Ok(l) => l,
            Err((_, _)) => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::Conflict(format!(
                    "another weft daemon (pid {}) already serves the state under {}: stop it first",
                    pid.trim(),
                    run_root.display()
                )));
            }
        };
        lock.set_len(0)?;
        writeln!(&mut *lock, "{}", std::process::id())?;
        Ok(PidLock { path, _lock: lock })
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind a unix socket at `path`, root-only (0660 root:root, or root:`group`). A file left at
/// `path` by a dead daemon is replaced (the pid lock proves no daemon is using it).
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(Error::Conflict(format!(
                "{} exists and is not a socket: remove it or choose another path",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path)
        .map_err(|e| Error::internal(format!("cannot listen on {}: {e}", path.display())))?;
    let gid = match group {
        None => nix::unistd::Gid::from_raw(0),
        Some(g) => {
            nix::unistd::Group::from_name(g)
                .map_err(|e| Error::internal(format!("cannot look up group {g}: {e}")))?
                .ok_or_else(|| {
                    Error::invalid(format!("no such group {g:?}: name an existing group"))
                })?
                .gid
        }
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid))
        .map_err(|e| Error::internal(format!("cannot chown {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Run the daemon until SIGTERM/SIGINT. Must run on a multi-threaded tokio runtime.
pub async fn run(cfg: Config, opts: DaemonOptions) -> Result<()> {
    let _pid = PidLock::take(&cfg.run_root)?;
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    #[cfg(feature = "wasm")]
    tracing::info!(
        "open-files limit {nofile}: plugins' outbound connections get at most {} of it",
        crate::plugin::egress::socket_cap()
    );
    #[cfg(not(feature = "wasm"))]
    tracing::info!("open-files limit {nofile}");
    let engine = Engine::open(cfg.clone()).await?;
    // IPAMs that keep their state far away (NetBox) hear again of what weft holds, and
    // reconcile; meanwhile the daemon serves (each network is locked while it is replayed).
    {
        let e = engine.clone();
        tokio::spawn(async move {
            match e.replay_ipam().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("IPAM replay: {n} network(s) requested again"),
                Err(e) => tracing::warn!("IPAM replay: {e}"),
            }
        });
    }
    if let Some(c) = engine.cluster() {
        // Global state before the first request, if etcd answers soon; local work does not
        // wait longer than that for it.
        if !c.wait_synced(std::time::Duration::from_secs(5)).await {
            tracing::warn!("{}: serving local networks meanwhile", c.unreachable());
        }
    }
    if opts.socket == opts.docker_socket {
        return Err(Error::invalid(
            "--socket and --docker-socket must differ: weft's socket also runs weft commands",
        ));
    }
    let paths = [opts.docker_socket.clone(), opts.socket.clone()];
    let resolv = std::env::var_os("WEFT_RESOLV_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/resolv.conf".into());
    // The daemon's own tasks run for its life: each is started again if it dies or ends.
    let dns = supervise(engine.clone(), "dns", move |e| {
        crate::dns::run(e, resolv.clone())
    });
    let first_watch = engine.watch_kernel()?;
    // What changed while no daemon ran is mended before the first request (and after the
    // watch began, which sees what changes from here on): now the check costs what the state
    // holds; made later, under load, it would stop every client for as long. If something
    // holds the engine (another process), the healer checks when it is free. In a cluster,
    // global networks are left to the healer, once the cluster task has brought this host's
    // view of the global records up to date (checked against a stale view, a removal another
    // process finished in etcd would be made again here).
    let mut checked = false;
    if first_watch.is_some() {
        match engine.heal(false, &crate::engine::HealScope::whole()).await {
            Ok(Some(h)) => {
                for f in &h.fixed {
                    tracing::warn!("restored {f} (changed while no daemon ran)");
                }
                checked = !h.global_left;
                engine.note_heal_check();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("check at start failed: {e}"),
        }
    }
    let healer =
        first_watch.map(|first| {
            let first = std::sync::Mutex::new(Some(first));
            // The healer's first run starts with a check unless the one above was made; a
            // run after one that died always does (what changed while it was down).
            let start_check = std::sync::Mutex::new(Some(!checked));
            supervise(engine.clone(), "healer", move |e| {
                // The first watch was made at start (an error there stops the daemon); a new one
                // each time after.
                let rx =
                    first.lock().unwrap().take().map(Ok).unwrap_or_else(|| {
                        e.watch_kernel().map(|r| r.expect("this kernel watches"))
                    });
                let start_check = start_check.lock().unwrap().take().unwrap_or(true);
                async move {
                    match rx {
                        Ok(rx) => heal::heal(e, rx, start_check).await,
                        Err(err) => tracing::error!("cannot watch the kernel: {err}"),
                    }
                }
            })
        });
    // Host links of removed sandboxes are deleted in batches, off the removals' path.
    let reaper = supervise(engine.clone(), "reaper", |e| e.run_reaper());
    let follower = engine.cluster().is_some().then(|| {
        supervise(engine.clone(), "cluster", |e| async move {
            e.follow_cluster().await
        })
    });
    let docker_api = Arc::new(Api::new(engine.clone()));
    let weft_api = Arc::new(Api::with_weft_door(engine.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (p, api) in paths.iter().zip([docker_api, weft_api]) {
        let l = bind(p, opts.group.as_deref())?;
        tracing::info!(socket = %p.display(), api = api::API_VERSION, "serving");
        servers.spawn(api::serve(l, api, stop_rx.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping (state kept)"),
        _ = int.recv() => tracing::info!("SIGINT: stopping (state kept)"),
    }
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    if let Some(h) = healer {
        h.abort();
    }
    if let Some(f) = follower {
        f.abort();
    }
    dns.abort();
    // What the reaper had not deleted yet (the records would also let the next start do it).
    // Stopped between reaps, not in one (whose operation would be left to roll back).
    let between = engine.reaper_paused().await;
    reaper.abort();
    drop(between);
    engine.stop_reaper();
    if let Err(e) = engine.reap_links().await {
        tracing::warn!("deleting removed sandboxes' links: {e} (left for the next start)");
    }
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("stopped");
    Ok(())
}
