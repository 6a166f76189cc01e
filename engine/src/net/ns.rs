//! Network namespaces: create one pinned by a bind mount, pin the caller's own, open one by
//! path, enter one for the length of a closure (per thread, restored afterwards), run a
//! program inside one, and remove a pin.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::NetError;

/// The calling thread's current network namespace.
pub fn current() -> Result<File, NetError> {
    File::open("/proc/thread-self/ns/net")
        .map_err(|e| NetError::io("open /proc/thread-self/ns/net", e))
}

/// A UDP socket and a TCP listener bound to `addr` inside the namespace `ns` (the kernel
/// keeps a socket in the namespace it was made in), for tokio.
pub fn bind_in(
    ns: &Path,
    addr: std::net::SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), NetError> {
    let f = open(ns)?;
    let (u, t) = run_in(Some(&f), || {
        let u = std::net::UdpSocket::bind(addr);
        let t = std::net::TcpListener::bind(addr);
        (u, t)
    })?;
    let u = u.map_err(|e| NetError::io(format!("bind udp {addr}"), e))?;
    let t = t.map_err(|e| NetError::io(format!("bind tcp {addr}"), e))?;
    u.set_nonblocking(true)
        .and_then(|_| t.set_nonblocking(true))
        .map_err(|e| NetError::io("set non-blocking", e))?;
    Ok((
        tokio::net::UdpSocket::from_std(u).map_err(|e| NetError::io("register udp", e))?,
        tokio::net::TcpListener::from_std(t).map_err(|e| NetError::io("register tcp", e))?,
    ))
}

/// Is `proto` (tcp, udp) port `port` on `ip` held by a socket in `ns`? Tried by binding it
/// (and letting go at once); anything but "in use" counts as free.
pub fn port_in_use(ns: &File, proto: &str, ip: std::net::IpAddr, port: u16) -> bool {
    let addr = std::net::SocketAddr::new(ip, port);
    run_in(Some(ns), || {
        let r = match proto {
            "tcp" => std::net::TcpListener::bind(addr).map(drop),
            "udp" => std::net::UdpSocket::bind(addr).map(drop),
            _ => Ok(()),
        };
        matches!(r, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
    })
    .unwrap_or(false)
}

/// Open a namespace by path (a pin, or /proc/PID/ns/net).
pub fn open(path: &Path) -> Result<File, NetError> {
    File::open(path)
        .map_err(|e| NetError::io(format!("open network namespace {}", path.display()), e))
}

/// While alive, the calling thread is inside another namespace; dropping it returns.
///
/// Only hold it across synchronous code: an `.await` could move the task to another thread.
pub struct NsGuard {
    orig: File,
}

impl NsGuard {
    pub fn enter(target: &File) -> Result<NsGuard, NetError> {
        let orig = current()?;
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::errno("enter network namespace", e as i32))?;
        Ok(NsGuard { orig })
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.orig.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A thread stuck in the wrong namespace would corrupt every later operation.
            eprintln!("weft: fatal: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Run `f` with the calling thread inside `ns` (or where it is, for `None`).
pub fn run_in<T>(ns: Option<&File>, f: impl FnOnce() -> T) -> Result<T, NetError> {
    let _g = match ns {
        Some(ns) => Some(NsGuard::enter(ns)?),
        None => None,
    };
    Ok(f())
}

/// Create a fresh network namespace pinned at `pin` (a bind mount of the namespace file),
/// and run `inside` in it before returning to the caller's namespace. `inside` is where a
/// netlink socket for the new namespace can be opened.
pub fn create_pinned<T>(pin: &Path, inside: impl FnOnce() -> T) -> Result<T, NetError> {
    let orig = current()?;
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(pin)
        .map_err(|e| NetError::io(format!("create namespace pin {}", pin.display()), e))?;
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        let _ = std::fs::remove_file(pin);
        return Err(NetError::errno("unshare network namespace", e as i32));
    }
    let restore = || {
        if let Err(e) = setns(orig.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("weft: fatal: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    };
    if let Err(e) = mount(
        Some("/proc/thread-self/ns/net"),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        restore();
        let _ = std::fs::remove_file(pin);
        return Err(NetError::errno(
            format!("pin namespace at {}", pin.display()),
            e as i32,
        ));
    }
    let out = inside();
    restore();
    Ok(out)
}

/// Unpin a namespace created by [`create_pinned`]. The kernel destroys it (and every link
/// in it) once nothing else holds it. Missing pins are fine.
pub fn remove_pinned(pin: &Path) -> Result<(), NetError> {
    match umount2(pin, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetError::errno(
                format!("unmount {}", pin.display()),
                e as i32,
            ))
        }
    }
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(format!("remove {}", pin.display()), e)),
    }
}

/// The namespace inode of a path (to tell whether two paths are the same namespace).
pub fn inode(path: &Path) -> Result<u64, NetError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| NetError::io(format!("stat {}", path.display()), e))
}

/// Is `path` a network namespace file (a pin or /proc/PID/ns/net)?
pub fn is_netns(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    // NS_GET_NSTYPE ioctl: _IO(0xb7, 0x3)
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    use std::os::fd::AsRawFd;
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    t == libc::CLONE_NEWNET
}

/// Pin the calling thread's namespace at `pin` (a bind mount), so it has a path that outlives
/// the process. Re-pinned when the caller runs in another namespace than the one pinned.
pub fn pin_current(pin: &Path) -> Result<std::path::PathBuf, NetError> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| NetError::io("stat /proc/thread-self/ns/net", e))?
        .ino();
    if std::fs::metadata(pin).map(|m| m.ino()).ok() == Some(own) {
        return Ok(pin.to_path_buf());
    }
    // Processes starting at once on a fresh run dir: one pins, the others wait and find it
    // pinned (unlocked, one could unlink the pin while another mounts on it: EBUSY).
    let dir = pin.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
    let _lock = std::fs::File::open(dir)
        .map_err(|e| NetError::io(format!("open {}", dir.display()), e))
        .and_then(|d| {
            nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| NetError::errno(format!("lock {}", dir.display()), e as i32))
        })?;
    if std::fs::metadata(pin).map(|m| m.ino()).ok() == Some(own) {
        return Ok(pin.to_path_buf());
    }
    remove_pinned(pin)?;
    std::fs::File::create(pin).map_err(|e| NetError::io(format!("create {}", pin.display()), e))?;
    mount(
        Some("/proc/thread-self/ns/net"),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        NetError::errno(
            format!("pin the host namespace at {}", pin.display()),
            e as i32,
        )
    })?;
    Ok(pin.to_path_buf())
}

/// Bring `lo` up in the calling thread's namespace (an ioctl: no netlink connection needed).
pub fn set_lo_up() -> Result<(), NetError> {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(NetError::io("socket", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let r = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        libc::close(fd);
        r.map_err(|e| NetError::io("bring up lo", e))
    }
}

/// Replace the calling process with `cmd` running inside the namespace at `path` (what
/// `weft sandbox exec` does). Returns only on failure.
/// What `exec_in` sets up around the command: files bound over /etc's, a hostname (each in
/// namespaces of the command's own).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExecSetup {
    pub resolv: Option<std::path::PathBuf>,
    pub hosts: Option<std::path::PathBuf>,
    pub hostname: Option<String>,
    /// Extra environment (legacy links' variables).
    pub env: Vec<(String, String)>,
}

pub fn exec_in(path: &Path, setup: &ExecSetup, cmd: &[String]) -> NetError {
    use std::os::unix::process::CommandExt;
    let f = match open(path) {
        Ok(f) => f,
        Err(e) => return e,
    };
    if let Err(e) = setns(f.as_fd(), CloneFlags::CLONE_NEWNET) {
        return NetError::errno(format!("enter {}", path.display()), e as i32);
    }
    // The sandbox's resolv.conf and hosts over /etc's, in a mount namespace of this process
    // alone (as `ip netns exec` does with /etc/netns/NAME), and its hostname in a UTS
    // namespace of its own.
    let binds: Vec<(&Path, &str)> = [
        (setup.resolv.as_deref(), "/etc/resolv.conf"),
        (setup.hosts.as_deref(), "/etc/hosts"),
    ]
    .into_iter()
    .filter_map(|(f, at)| f.map(|f| (f, at)))
    .collect();
    if !binds.is_empty() {
        use nix::mount::{mount, MsFlags};
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNS) {
            return NetError::errno("unshare the mount namespace", e as i32);
        }
        let none: Option<&str> = None;
        if let Err(e) = mount(none, "/", none, MsFlags::MS_SLAVE | MsFlags::MS_REC, none) {
            return NetError::errno("make / a slave mount", e as i32);
        }
        for (f, at) in binds {
            if let Err(e) = mount(Some(f), at, none, MsFlags::MS_BIND, none) {
                return NetError::errno(format!("bind {} on {at}", f.display()), e as i32);
            }
        }
    }
    if let Some(h) = &setup.hostname {
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUTS) {
            return NetError::errno("unshare the UTS namespace", e as i32);
        }
        if let Err(e) = nix::unistd::sethostname(h) {
            return NetError::errno("set the hostname", e as i32);
        }
    }
    let Some((prog, args)) = cmd.split_first() else {
        return NetError::other("exec", "no command given");
    };
    let e = std::process::Command::new(prog)
        .args(args)
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .exec();
    NetError::io(format!("exec {prog}"), e)
}
