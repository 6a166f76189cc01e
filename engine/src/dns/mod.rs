//! Embedded DNS for user-defined networks, served by the daemon.
//!
//! One listener (UDP and TCP, port 53) per user-defined bridge network, on its IPv4 gateway
//! address in the host namespace — not Docker's 127.0.0.11 with a DNAT rule inside every
//! container: a gateway listener needs no rule in any sandbox namespace, works for namespaces
//! weft did not make, and keeps every query visible as coming from the sandbox's own address.
//! That address tells who asks: the answer covers the names on every network the asking
//! sandbox is on (and nothing else — a name on a network it is not on does not resolve).
//!
//! Names: a sandbox's name, its network-scoped aliases and its short (12-character) id, alone
//! or followed by `.<network>`; A, AAAA and PTR. A name several sandboxes hold answers with
//! all their addresses, rotated per query (round robin). Everything else is forwarded, as
//! received, to the asking sandbox's `--dns` servers or the host's (its resolv.conf without
//! loopback servers), over the transport it came on. The records come from a snapshot of the
//! store that the resolver task builds again after every change this process makes (and every
//! 250 ms while queries come, for changes other processes make), off the query path; a query
//! that arrives between a commit and that rebuild builds it itself, one build at a time, so a
//! removed sandbox stops resolving at once. The host's resolv.conf is read again only when
//! the file changed (looked at by the same task).
//! The protocol is hickory-proto's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::{Endpoint, Network};
use crate::Engine;

/// How long a forwarded query may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// Docker's fallback when the host has no usable nameserver.
pub const FALLBACK: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)),
];
const TTL: u32 = 600;

/// Does `net` get a resolver? User-defined bridge networks with an IPv4 gateway (Docker's
/// rule: the default `bridge` network has no name resolution).
pub fn serves(net: &Network) -> bool {
    !net.predefined && matches!(net.driver.as_str(), "bridge" | "overlay") && gateway(net).is_some()
}

/// The address the resolver of `net` listens on.
pub fn gateway(net: &Network) -> Option<IpAddr> {
    net.pools_v4().find_map(|p| p.gateway)
}

/// The nameservers of a resolv.conf text, loopback ones dropped (Docker's rule).
pub fn upstreams_of(resolv: &str) -> Vec<IpAddr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().split('%').next()?.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

/// The resolver state the daemon shares between listeners.
pub struct Resolver {
    engine: Engine,
    host_resolv: PathBuf,
    turn: AtomicUsize,
    snap: std::sync::Mutex<Option<Arc<Snapshot>>>,
    /// Queries being forwarded at once (each holds a socket until its answer or timeout):
    /// beyond [`MAX_FORWARDS`] a query gets SERVFAIL at once, as dockerd's resolver caps them.
    forwards: Arc<tokio::sync::Semaphore>,
    /// Held while a snapshot is built: one build at a time, the others wait for its result.
    building: std::sync::Mutex<()>,
    /// The host's nameservers, as last read, and what the file was then.
    hosts: std::sync::Mutex<HostResolv>,
    /// Snapshots built so far (by the refresher, or by a query that found it stale).
    pub builds: AtomicUsize,
    /// A query took the snapshot since the refresher last looked.
    asked: std::sync::atomic::AtomicBool,
}

/// The host's resolv.conf as last read: nameservers, the file's (inode, mtime, length), when.
#[derive(Default)]
struct HostResolv {
    stamp: Option<(u64, i64, i64, u64)>,
    read_at: Option<std::time::Instant>,
    ups: Vec<IpAddr>,
}

fn stamp(path: &Path) -> Option<(u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// The most queries forwarded at once, all networks together.
pub const MAX_FORWARDS: usize = 256;
/// The most TCP connections a network's resolver holds at once, and from one address.
pub const MAX_TCP: usize = 128;
pub const MAX_TCP_PER_PEER: usize = 8;

/// The records the answers come from, read at once. Valid until this process commits a
/// change to the store, and for [`SNAPSHOT_AGE`] at most (another process's changes).
struct Snapshot {
    at: std::time::Instant,
    commits: u64,
    nets: std::collections::HashMap<String, Network>,
    eps_by_net: std::collections::HashMap<String, Vec<Endpoint>>,
    /// sandbox id → (the networks it is on that have a resolver, its --dns servers)
    sandboxes: std::collections::HashMap<String, (Vec<String>, Vec<IpAddr>)>,
}

/// The longest a snapshot is used without a local commit (a change another process made
/// shows within this).
pub const SNAPSHOT_AGE: Duration = Duration::from_millis(250);

/// What the asker is: its sandbox's endpoints, with their networks.
struct Asker<'s> {
    sandbox: &'s str,
    nets: Vec<&'s Network>,
    dns: &'s [IpAddr],
}

impl Resolver {
    pub fn new(engine: Engine, host_resolv: &Path) -> Resolver {
        Resolver {
            engine,
            host_resolv: host_resolv.to_path_buf(),
            turn: AtomicUsize::new(0),
            snap: Default::default(),
            forwards: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)),
            building: Default::default(),
            hosts: Default::default(),
            builds: AtomicUsize::new(0),
            asked: Default::default(),
        }
    }

    /// What makes a snapshot stale: a local commit, or a change in the cluster store.
    fn commits(&self) -> u64 {
        self.engine.store().commit_counts().0
            + self
                .engine
                .cluster()
                .map_or(0, |c| c.mirror().rev.unsigned_abs() << 32)
    }

    fn fresh(&self, commits: u64, age: Duration) -> Option<Arc<Snapshot>> {
        let s = self.snap.lock().unwrap();
        s.as_ref()
            .filter(|s| s.commits == commits && s.at.elapsed() < age)
            .cloned()
    }

    /// The snapshot a query answers from. The refresher ([`Resolver::refresh`]) builds it
    /// after each change and every [`SNAPSHOT_AGE`], so a query normally only takes it; one
    /// that finds it stale (a commit the refresher has not caught up with yet) builds it, one
    /// build at a time: the other queries wait for that build instead of each making one.
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        // Another process's change shows within SNAPSHOT_AGE through the refresher; a query
        // rebuilds for age only if the refresher is late by far.
        self.asked.store(true, Ordering::Relaxed);
        let commits = self.commits();
        if let Some(s) = self.fresh(commits, SNAPSHOT_AGE * 4) {
            return Some(s);
        }
        self.build(SNAPSHOT_AGE * 4)
    }

    /// Build the snapshot again if it is older than `age` or a commit came since (off the
    /// query path: the daemon's resolver task calls it after each change and every tick), and
    /// look at the host's resolv.conf again.
    pub fn refresh(&self) {
        let commits = self.commits();
        let changed = self
            .snap
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|s| s.commits != commits);
        // For age (another process's change) only while queries come: an idle daemon does
        // not decode its tables four times a second for no one.
        if changed || self.asked.swap(false, Ordering::Relaxed) {
            self.build(SNAPSHOT_AGE);
        }
        self.reload_host_resolv();
    }

    fn build(&self, age: Duration) -> Option<Arc<Snapshot>> {
        let _one = self.building.lock().unwrap();
        let commits = self.commits();
        if let Some(s) = self.fresh(commits, age) {
            return Some(s);
        }
        self.builds.fetch_add(1, Ordering::Relaxed);
        let r = self.engine.store().read().ok()?;
        let nets: Vec<Network> =
            crate::store::list_json(&*r, crate::store::Table::Networks).ok()?;
        let eps: Vec<Endpoint> =
            crate::store::list_json(&*r, crate::store::Table::Endpoints).ok()?;
        let sbs: Vec<crate::model::Sandbox> =
            crate::store::list_json(&*r, crate::store::Table::Sandboxes).ok()?;
        let nets: std::collections::HashMap<String, Network> =
            nets.into_iter().map(|n| (n.id.clone(), n)).collect();
        let mut eps_by_net: std::collections::HashMap<String, Vec<Endpoint>> = Default::default();
        let mut sandboxes: std::collections::HashMap<String, (Vec<String>, Vec<IpAddr>)> = sbs
            .into_iter()
            .map(|sb| (sb.id, (vec![], sb.dns)))
            .collect();
        let mut eps = eps;
        eps.sort_by_key(|e| e.order);
        for ep in eps {
            if let Some(n) = nets.get(&ep.network_id) {
                if serves(n) {
                    if let Some(sb) = sandboxes.get_mut(&ep.sandbox_id) {
                        sb.0.push(n.id.clone());
                    }
                }
            }
            eps_by_net
                .entry(ep.network_id.clone())
                .or_default()
                .push(ep);
        }
        let s = Arc::new(Snapshot {
            at: std::time::Instant::now(),
            commits,
            nets,
            eps_by_net,
            sandboxes,
        });
        *self.snap.lock().unwrap() = Some(s.clone());
        Some(s)
    }

    /// Read the host's resolv.conf again if the file changed (another inode, time or length).
    fn reload_host_resolv(&self) {
        let now = stamp(&self.host_resolv);
        let mut h = self.hosts.lock().unwrap();
        if h.read_at.is_some() && h.stamp == now {
            h.read_at = Some(std::time::Instant::now());
            return;
        }
        h.ups = upstreams_of(&std::fs::read_to_string(&self.host_resolv).unwrap_or_default());
        h.stamp = now;
        h.read_at = Some(std::time::Instant::now());
    }

    /// The host's nameservers (its resolv.conf as the refresher last saw it: the host may
    /// change them, and a change shows within a tick), or Docker's fallback.
    pub fn host_upstreams(&self) -> Vec<IpAddr> {
        let stale = self
            .hosts
            .lock()
            .unwrap()
            .read_at
            .is_none_or(|t| t.elapsed() > SNAPSHOT_AGE * 4);
        if stale {
            self.reload_host_resolv();
        }
        let ups = self.hosts.lock().unwrap().ups.clone();
        if ups.is_empty() {
            FALLBACK.to_vec()
        } else {
            ups
        }
    }

    fn asker<'s>(&self, snap: &'s Snapshot, net: &Network, src: IpAddr) -> Option<Asker<'s>> {
        let me =
            snap.eps_by_net.get(&net.id)?.iter().find(|e| {
                e.ipv4.map(|a| a.ip()) == Some(src) || e.ipv6.map(|a| a.ip()) == Some(src)
            })?;
        let (nets, dns) = snap.sandboxes.get(&me.sandbox_id)?;
        Some(Asker {
            sandbox: &me.sandbox_id,
            nets: nets.iter().filter_map(|id| snap.nets.get(id)).collect(),
            dns,
        })
    }

    /// The answer to `query` from `src` on `net`'s listener, or `None`: forward it to these
    /// servers.
    pub(crate) fn answer(
        &self,
        net_id: &str,
        src: IpAddr,
        query: &[u8],
    ) -> Result<Vec<u8>, Vec<IpAddr>> {
        let Ok(req) = Message::from_vec(query) else {
            return Ok(Vec::new()); // not DNS: no answer at all
        };
        let Some(snap) = self.snapshot() else {
            return Ok(self.reply(&req, ResponseCode::ServFail, vec![]));
        };
        let Some(net) = snap.nets.get(net_id) else {
            tracing::debug!(
                network = net_id,
                "query on a network the snapshot does not have"
            );
            return Ok(Vec::new());
        };
        let Some(q) = req.queries.first().cloned() else {
            return Ok(self.reply(&req, ResponseCode::FormErr, vec![]));
        };
        // Only sandboxes on this network are answered at all: anyone else who can reach the
        // gateway (another network's sandboxes, the LAN through the host) would otherwise
        // have an open resolver forwarding for them.
        let Some(asker) = self.asker(&snap, net, src) else {
            return Ok(self.reply(&req, ResponseCode::Refused, vec![]));
        };
        // Where other names go: nowhere from internal networks (no way out means no
        // outside names either), else the sandbox's --dns servers or the host's.
        let upstream = || {
            if !asker.nets.iter().any(|n| !n.internal) {
                vec![]
            } else if !asker.dns.is_empty() {
                asker.dns.to_vec()
            } else {
                self.host_upstreams()
            }
        };
        let (nets, me) = (&asker.nets, asker.sandbox);
        let qname = q.name().to_ascii().to_lowercase();
        let qname = qname.trim_end_matches('.');
        match q.query_type() {
            RecordType::PTR => {
                let Some(ip) = ptr_ip(qname) else {
                    return Err(upstream());
                };
                for n in nets {
                    for ep in snap.eps_by_net.get(&n.id).into_iter().flatten() {
                        if ep.ipv4.map(|a| a.ip()) == Some(ip)
                            || ep.ipv6.map(|a| a.ip()) == Some(ip)
                        {
                            let target = Name::from_ascii(format!("{}.{}.", ep.name, n.name));
                            if let Ok(t) = target {
                                let rec =
                                    Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(t)));
                                return Ok(self.reply(&req, ResponseCode::NoError, vec![rec]));
                            }
                        }
                    }
                }
                Err(upstream())
            }
            RecordType::A | RecordType::AAAA => {
                let mut found = false;
                let mut addrs: Vec<IpAddr> = Vec::new();
                for n in nets {
                    let suffix = format!(".{}", n.name.to_lowercase());
                    let bare = qname.strip_suffix(suffix.as_str()).unwrap_or(qname);
                    let eps = snap.eps_by_net.get(&n.id).map(Vec::as_slice).unwrap_or(&[]);
                    // The asker's legacy links on this network: ALIAS names the target, for
                    // the asker only (Docker's links on user-defined networks).
                    let linked: Vec<&str> = eps
                        .iter()
                        .filter(|e| e.sandbox_id == me)
                        .flat_map(|e| e.links.iter())
                        .filter_map(|l| {
                            let (name, alias) = l.split_once(':').unwrap_or((l, l));
                            alias.eq_ignore_ascii_case(bare).then_some(name)
                        })
                        .collect();
                    for ep in eps {
                        if holds(ep, bare)
                            || linked.iter().any(|t| names(ep, t) || ep.sandbox_id == *t)
                        {
                            found = true;
                            let a = match q.query_type() {
                                RecordType::A => ep.ipv4.map(|a| a.ip()),
                                _ => ep.ipv6.map(|a| a.ip()),
                            };
                            if let Some(a) = a {
                                if !addrs.contains(&a) {
                                    addrs.push(a);
                                }
                            }
                        }
                    }
                }
                if !found {
                    return Err(upstream());
                }
                if addrs.len() > 1 {
                    let k = self.turn.fetch_add(1, Ordering::Relaxed) % addrs.len();
                    addrs.rotate_left(k);
                }
                let recs = addrs
                    .into_iter()
                    .map(|a| {
                        let data = match a {
                            IpAddr::V4(v) => RData::A(A(v)),
                            IpAddr::V6(v) => RData::AAAA(AAAA(v)),
                        };
                        Record::from_rdata(q.name().clone(), TTL, data)
                    })
                    .collect();
                Ok(self.reply(&req, ResponseCode::NoError, recs))
            }
            _ => Err(upstream()),
        }
    }

    fn reply(&self, req: &Message, code: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
        m.metadata.response_code = code;
        m.metadata.recursion_desired = req.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.authoritative = true;
        m.add_queries(req.queries.iter().cloned());
        m.add_answers(answers);
        m.to_vec().unwrap_or_default()
    }
}

/// Does `ep` answer to `name` (its sandbox's name, an alias, its short id)?
fn holds(ep: &Endpoint, name: &str) -> bool {
    ep.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)) || names(ep, name)
}

/// Is `ep` the endpoint of the sandbox `name` names (its name or its short id)?
fn names(ep: &Endpoint, name: &str) -> bool {
    ep.name.eq_ignore_ascii_case(name) || (name.len() == 12 && ep.sandbox_id.starts_with(name))
}

/// The address of a reverse name (`4.3.2.1.in-addr.arpa`, nibbles `.ip6.arpa`).
fn ptr_ip(q: &str) -> Option<IpAddr> {
    if let Some(v4) = q.strip_suffix(".in-addr.arpa") {
        let mut o: Vec<u8> = v4
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if o.len() != 4 {
            return None;
        }
        o.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])));
    }
    let v6 = q.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = v6
        .split('.')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|n| *n < 16))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, n) in nibbles.iter().rev().enumerate() {
        b[i / 2] |= if i % 2 == 0 { n << 4 } else { *n };
    }
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}

/// Forward a query over UDP to the first server that answers.
async fn forward_udp(servers: &[IpAddr], query: &[u8]) -> Option<Vec<u8>> {
    tracing::debug!(?servers, "forwarding a query over UDP");
    for s in servers {
        let bind: SocketAddr = if s.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, (*s, 53)).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(FORWARD_TIMEOUT, sock.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// Forward a query over TCP (length-prefixed) to the first server that answers.
async fn forward_tcp(servers: &[IpAddr], query: &[u8]) -> Option<Vec<u8>> {
    for s in servers {
        let r = tokio::time::timeout(FORWARD_TIMEOUT, async {
            let mut c = tokio::net::TcpStream::connect((*s, 53)).await?;
            c.write_all(&(query.len() as u16).to_be_bytes()).await?;
            c.write_all(query).await?;
            let n = c.read_u16().await? as usize;
            let mut buf = vec![0u8; n];
            c.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await;
        if let Ok(Ok(b)) = r {
            return Some(b);
        }
    }
    None
}

fn servfail(query: &[u8]) -> Vec<u8> {
    match Message::from_vec(query) {
        Ok(req) => {
            let mut m = Message::error_msg(
                req.metadata.id,
                req.metadata.op_code,
                ResponseCode::ServFail,
            );
            m.add_queries(req.queries.iter().cloned());
            m.to_vec().unwrap_or_default()
        }
        Err(_) => Vec::new(),
    }
}

async fn resolve(r: &Resolver, net_id: &str, src: IpAddr, query: &[u8], tcp: bool) -> Vec<u8> {
    match r.answer(net_id, src, query) {
        Ok(reply) => reply,
        Err(servers) => {
            let Ok(_permit) = r.forwards.clone().try_acquire_owned() else {
                return servfail(query);
            };
            let got = if tcp {
                forward_tcp(&servers, query).await
            } else {
                forward_udp(&servers, query).await
            };
            got.unwrap_or_else(|| servfail(query))
        }
    }
}

/// Serve one network's resolver on `addr:53` (sockets made by the caller in the host
/// namespace) until the task is aborted.
pub async fn serve_network(
    r: Arc<Resolver>,
    net_id: String,
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
) {
    r.engine.failpoint_panic("resolver");
    let udp = Arc::new(udp);
    let tcp_task = {
        let r = r.clone();
        let net_id = net_id.clone();
        tokio::spawn(async move {
            // A sandbox holding connections open must not take the daemon's descriptors:
            // at most MAX_TCP at once, MAX_TCP_PER_PEER from one address; more are closed.
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
            let per_peer: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>> =
                Default::default();
            loop {
                let (mut conn, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, say: do not spin.
                        tracing::debug!("DNS over TCP: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                {
                    let mut m = per_peer.lock().unwrap();
                    let n = m.entry(peer.ip()).or_default();
                    if *n >= MAX_TCP_PER_PEER {
                        continue;
                    }
                    *n += 1;
                }
                let r = r.clone();
                let net_id = net_id.clone();
                let per_peer = per_peer.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let _count = PeerCount(per_peer, peer.ip());
                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                        loop {
                            let n = conn.read_u16().await? as usize;
                            let mut q = vec![0u8; n];
                            conn.read_exact(&mut q).await?;
                            let a = resolve(&r, &net_id, peer.ip(), &q, true).await;
                            conn.write_all(&(a.len() as u16).to_be_bytes()).await?;
                            conn.write_all(&a).await?;
                        }
                        #[allow(unreachable_code)]
                        Ok::<_, std::io::Error>(())
                    })
                    .await;
                });
            }
        })
    };
    let _guard = AbortOnDrop(tcp_task);
    // One receive loop per core on the same socket: answers are computed inline.
    let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut others = Vec::new();
    for _ in 1..loops {
        others.push(AbortOnDrop(tokio::spawn(udp_loop(
            r.clone(),
            net_id.clone(),
            udp.clone(),
        ))));
    }
    udp_loop(r, net_id, udp).await;
}

async fn udp_loop(r: Arc<Resolver>, net_id: String, udp: Arc<tokio::net::UdpSocket>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        match r.answer(&net_id, peer.ip(), &buf[..n]) {
            Ok(a) => {
                if !a.is_empty() {
                    let _ = udp.send_to(&a, peer).await;
                }
            }
            Err(servers) => {
                let Ok(permit) = r.forwards.clone().try_acquire_owned() else {
                    let _ = udp.send_to(&servfail(&buf[..n]), peer).await;
                    continue;
                };
                // Forwarding waits on another server: off this loop.
                let q = buf[..n].to_vec();
                let udp = udp.clone();
                tokio::spawn(async move {
                    let a = forward_udp(&servers, &q)
                        .await
                        .unwrap_or_else(|| servfail(&q));
                    drop(permit);
                    if !a.is_empty() {
                        let _ = udp.send_to(&a, peer).await;
                    }
                });
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One TCP connection counted against its peer's limit, for as long as it lives.
struct PeerCount(
    Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
    IpAddr,
);

impl Drop for PeerCount {
    fn drop(&mut self) {
        let mut m = self.0.lock().unwrap();
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Keep one resolver per network that [`serves`]: started for the networks there are and
/// those created later, stopped with their networks. Runs until its task is aborted.
pub async fn run(engine: Engine, host_resolv: PathBuf) {
    engine.failpoint_panic("dns");
    let r = Arc::new(Resolver::new(engine.clone(), &host_resolv));
    let mut events = engine.subscribe();
    let mut running: std::collections::BTreeMap<String, AbortOnDrop> = Default::default();
    // A global network has a resolver on the hosts where it is realized (its gateway address
    // is on this host's bridge there).
    let here = |n: &Network| {
        engine
            .store()
            .read()
            .ok()
            .and_then(|r| crate::engine::records::realized(&*r, n).ok())
            .unwrap_or(false)
    };
    let sync = |running: &mut std::collections::BTreeMap<String, AbortOnDrop>| {
        let nets: Vec<Network> = engine
            .networks(&Default::default())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.scope != crate::model::Scope::Global || here(n))
            .collect();
        running.retain(|id, t| {
            let wanted = nets.iter().any(|n| &n.id == id && serves(n));
            if wanted && t.0.is_finished() {
                // A network's resolver died: it is started again below.
                tracing::error!(network = %id, "DNS resolver died: starting it again");
                engine.note_restart("resolver");
                return false;
            }
            wanted
        });
        for n in nets.iter().filter(|n| serves(n)) {
            if running.contains_key(&n.id) {
                continue;
            }
            let gw = gateway(n).expect("serves() checked");
            match engine.bind_dns(SocketAddr::new(gw, 53)) {
                Ok((udp, tcp)) => {
                    tracing::info!(network = %n.name, address = %gw, "DNS resolver listening");
                    let t = tokio::spawn(serve_network(r.clone(), n.id.clone(), udp, tcp));
                    running.insert(n.id.clone(), AbortOnDrop(t));
                }
                Err(e) => tracing::warn!(network = %n.name, "no DNS resolver: {e}"),
            }
        }
    };
    sync(&mut running);
    r.refresh();
    let mut cluster = engine.cluster().map(|c| c.subscribe());
    // Also every few seconds: a resolver that died is noticed without waiting for a change.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    // The snapshot and the host's resolv.conf are kept current here, off the query path.
    let mut fresh = tokio::time::interval(SNAPSHOT_AGE / 2);
    fresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = async {
            match cluster.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) if matches!(ev.action, "create" | "destroy" | "prune" | "connect" | "disconnect") => {
                    sync(&mut running);
                    r.refresh();
                }
                Ok(_) => r.refresh(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => sync(&mut running),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            ok = changed => {
                if ok {
                    sync(&mut running);
                    r.refresh();
                } else {
                    cluster = None;
                }
            }
            _ = tick.tick() => sync(&mut running),
            _ = fresh.tick() => r.refresh(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_and_upstreams() {
        assert_eq!(
            ptr_ip("9.1.30.172.in-addr.arpa"),
            Some("172.30.1.9".parse().unwrap())
        );
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(ptr_ip(v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(ptr_ip("example.com"), None);
        assert_eq!(
            upstreams_of("# c\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch x\n"),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
        );
    }
}
