//! nf_tables over netlink for the attach path, without starting an `nft` process (~3 ms a
//! time): an endpoint's ICC elements (its bridge port in the `noicc` and `selves` sets of
//! weft's bridge table) and a sandbox's published ports (its `pt-<id>` chain of DNAT rules and
//! the verdict-map elements that jump to it) are added or deleted in one nfnetlink batch, all
//! or nothing. Tables, base chains, network chains and legacy links' elements still go through
//! `nft -j`, and so does this when the netlink path cannot serve (a table or map missing: its
//! first use, a flushed ruleset).
//!
//! The rules are the bytecode `nft` makes for the same rules (`nft --debug=netlink`), dependency
//! matches included, so they list back exactly as the ones `nft` made and `system check`
//! compares like with like.
//!
//! Hand-encoded: the messages are small and fixed (NFT_MSG_NEWCHAIN/NEWRULE/NEWSETELEM and
//! their deletions between NFNL_MSG_BATCH_BEGIN and END), and no maintained Rust crate encodes
//! nf_tables under a licence that fits (rustables is GPL-3.0; nftnl-rs binds libnftnl,
//! GPL-2.0).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use netlink_sys::{protocols, Socket, SocketAddr};

use super::{IccRules, PortRules};
use crate::net::NetError;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFPROTO_BRIDGE: u8 = 7;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NFT_NAT_DNAT: u32 = 1;
/// NF_NAT_RANGE_PROTO_SPECIFIED: the rule gives a port.
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
/// The 16-byte registers `nft` uses (NFT_REG_1, NFT_REG_2).
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const NLM_F_APPEND: u16 = 0x800;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
/// IFNAMSIZ: an `ifname` key is the name, zero-padded to 16 bytes.
const IFNAMSIZ: usize = 16;

/// One attribute: length, type, value, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + value.len() + 3);
    v.extend(((4 + value.len()) as u16).to_ne_bytes());
    v.extend(kind.to_ne_bytes());
    v.extend(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink message: header, nfgenmsg (family, version 0, resource id), attributes.
fn msg(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut v = Vec::with_capacity(len);
    v.extend((len as u32).to_ne_bytes());
    v.extend(ty.to_ne_bytes());
    v.extend(flags.to_ne_bytes());
    v.extend(seq.to_ne_bytes());
    v.extend(0u32.to_ne_bytes());
    v.push(family);
    v.push(0);
    v.extend(res_id.to_be_bytes());
    v.extend(attrs);
    v
}

/// An `ifname` key.
fn ifname(name: &str) -> Result<[u8; IFNAMSIZ], NetError> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= IFNAMSIZ || b.contains(&0) {
        return Err(NetError::other(
            "nftables",
            format!("{name:?} is not an interface name"),
        ));
    }
    let mut k = [0u8; IFNAMSIZ];
    k[..b.len()].copy_from_slice(b);
    Ok(k)
}

/// A u32 attribute (nf_tables sends them big-endian).
fn u32a(kind: u16, v: u32) -> Vec<u8> {
    nla(kind, &v.to_be_bytes())
}

/// One nfnetlink transaction being built: BATCH_BEGIN, messages numbered from `seq`, END.
struct Batch {
    out: Vec<u8>,
    seq: u32,
    /// Messages that want an answer.
    n: u32,
}

impl Batch {
    fn new(seq: u32) -> Batch {
        Batch {
            out: msg(
                NFNL_MSG_BATCH_BEGIN,
                NLM_F_REQUEST,
                seq,
                0,
                NFNL_SUBSYS_NFTABLES,
                &[],
            ),
            seq,
            n: 0,
        }
    }

    fn push(&mut self, ty: u16, flags: u16, family: u8, attrs: &[u8]) {
        self.n += 1;
        self.out.extend(msg(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq + self.n,
            family,
            0,
            attrs,
        ));
    }

    fn end(mut self) -> (Vec<u8>, u32) {
        self.out.extend(msg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.seq + self.n + 1,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        ));
        (self.out, self.n)
    }

    /// Add (or delete) these ports' `selves` and `noicc` elements in weft's bridge table.
    fn icc(&mut self, add: bool, table: &str, ports: &[&IccRules]) -> Result<(), NetError> {
        let (ty, flags) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
        } else {
            (NFT_MSG_DELSETELEM, 0)
        };
        for p in ports {
            let port = ifname(&p.port)?;
            let mut selves = port.to_vec();
            selves.extend(port);
            // Added: `selves` before `noicc`; deleted: `noicc` first (nothing dropped mid-way).
            let mut sets: Vec<(&str, Vec<u8>)> = vec![("selves", selves), ("noicc", port.to_vec())];
            if !add {
                sets.reverse();
            }
            for (set, key) in sets {
                self.push(ty, flags, NFPROTO_BRIDGE, &elements(table, set, &key, None));
            }
        }
        Ok(())
    }

    /// Add a sandbox's published ports (its chain, flushed, its DNAT rules, the map elements
    /// that jump to it), or delete them (elements first, then the chain).
    fn ports(&mut self, add: bool, table: &str, p: &PortRules) -> Result<(), NetError> {
        let chain = super::render::port_chain(p);
        let mut named = nla(NFTA_CHAIN_TABLE, &cstr(table));
        named.extend(nla(NFTA_CHAIN_NAME, &cstr(&chain)));
        let mut of_chain = nla(NFTA_RULE_TABLE, &cstr(table));
        of_chain.extend(nla(NFTA_RULE_CHAIN, &cstr(&chain)));
        if add {
            self.push(NFT_MSG_NEWCHAIN, NLM_F_CREATE, NFPROTO_INET, &named);
            // Flushed first: applying the same ports again (a repair) leaves one rule each.
            self.push(NFT_MSG_DELRULE, 0, NFPROTO_INET, &of_chain);
            for m in &p.maps {
                for expr in port_rules(p, m)? {
                    let mut attrs = of_chain.clone();
                    attrs.extend(nla(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &expr));
                    self.push(
                        NFT_MSG_NEWRULE,
                        NLM_F_CREATE | NLM_F_APPEND,
                        NFPROTO_INET,
                        &attrs,
                    );
                }
                let (map, key) = port_key(m)?;
                self.push(
                    NFT_MSG_NEWSETELEM,
                    NLM_F_CREATE,
                    NFPROTO_INET,
                    &elements(table, map, &key, Some(&chain)),
                );
            }
        } else {
            for m in &p.maps {
                let (map, key) = port_key(m)?;
                self.push(
                    NFT_MSG_DELSETELEM,
                    0,
                    NFPROTO_INET,
                    &elements(table, map, &key, None),
                );
            }
            self.push(NFT_MSG_DELRULE, 0, NFPROTO_INET, &of_chain);
            self.push(NFT_MSG_DELCHAIN, 0, NFPROTO_INET, &named);
        }
        Ok(())
    }
}

/// A set-element list with one element: its key, and for a verdict map a jump to `jump`.
fn elements(table: &str, set: &str, key: &[u8], jump: Option<&str>) -> Vec<u8> {
    let mut e = nla(NFTA_SET_ELEM_KEY | NLA_F_NESTED, &nla(NFTA_DATA_VALUE, key));
    if let Some(chain) = jump {
        let mut v = nla(NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
        v.extend(nla(NFTA_VERDICT_CHAIN, &cstr(chain)));
        e.extend(nla(
            NFTA_SET_ELEM_DATA | NLA_F_NESTED,
            &nla(NFTA_DATA_VERDICT | NLA_F_NESTED, &v),
        ));
    }
    let elem = nla(NFTA_LIST_ELEM | NLA_F_NESTED, &e);
    let mut attrs = nla(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attrs.extend(nla(NFTA_SET_ELEM_LIST_SET, &cstr(set)));
    attrs.extend(nla(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &elem));
    attrs
}

/// One expression of a rule.
fn expr(name: &str, data: &[u8]) -> Vec<u8> {
    let mut e = nla(NFTA_EXPR_NAME, &cstr(name));
    e.extend(nla(NFTA_EXPR_DATA | NLA_F_NESTED, data));
    nla(NFTA_LIST_ELEM | NLA_F_NESTED, &e)
}

fn meta(key: u32) -> Vec<u8> {
    let mut d = u32a(NFTA_META_DREG, REG_1);
    d.extend(u32a(NFTA_META_KEY, key));
    expr("meta", &d)
}

fn cmp_eq(value: &[u8]) -> Vec<u8> {
    let mut d = u32a(NFTA_CMP_SREG, REG_1);
    d.extend(u32a(NFTA_CMP_OP, NFT_CMP_EQ));
    d.extend(nla(
        NFTA_CMP_DATA | NLA_F_NESTED,
        &nla(NFTA_DATA_VALUE, value),
    ));
    expr("cmp", &d)
}

fn payload(base: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut d = u32a(NFTA_PAYLOAD_DREG, REG_1);
    d.extend(u32a(NFTA_PAYLOAD_BASE, base));
    d.extend(u32a(NFTA_PAYLOAD_OFFSET, offset));
    d.extend(u32a(NFTA_PAYLOAD_LEN, len));
    expr("payload", &d)
}

fn immediate(reg: u32, value: &[u8]) -> Vec<u8> {
    let mut d = u32a(NFTA_IMMEDIATE_DREG, reg);
    d.extend(nla(
        NFTA_IMMEDIATE_DATA | NLA_F_NESTED,
        &nla(NFTA_DATA_VALUE, value),
    ));
    expr("immediate", &d)
}

fn l4proto(proto: &str) -> Result<u8, NetError> {
    match proto {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "sctp" => Ok(132),
        other => Err(NetError::other(
            "nftables",
            format!("{other:?} is not a protocol ports are published for"),
        )),
    }
}

/// The rules of one mapping, as [`super::render::add_ports`] writes them for `nft`: one per
/// address family the sandbox has (only the host address's family when one is given).
fn port_rules(p: &PortRules, m: &crate::model::PortMapping) -> Result<Vec<Vec<u8>>, NetError> {
    use std::net::IpAddr;
    let host = m.host_ip.filter(|h| !h.is_unspecified());
    let proto = l4proto(&m.proto)?;
    let mut rules = Vec::new();
    let targets = [Some(IpAddr::V4(p.addr)), p.addr6.map(IpAddr::V6)];
    for to in targets.into_iter().flatten() {
        if host.is_some_and(|h| h.is_ipv4() != to.is_ipv4()) {
            continue;
        }
        let nfproto = if to.is_ipv4() {
            NFPROTO_IPV4
        } else {
            NFPROTO_IPV6
        };
        let mut r = Vec::new();
        // What `nft` makes of `[meta nfproto X] P dport N [ip daddr H] dnat to A:C`, the
        // dependencies it adds (l4proto before a port, nfproto before an address) included.
        if host.is_none() {
            r.extend(meta(NFT_META_NFPROTO));
            r.extend(cmp_eq(&[nfproto]));
        }
        r.extend(meta(NFT_META_L4PROTO));
        r.extend(cmp_eq(&[proto]));
        r.extend(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
        r.extend(cmp_eq(&m.host_port.to_be_bytes()));
        if let Some(h) = host {
            r.extend(meta(NFT_META_NFPROTO));
            r.extend(cmp_eq(&[nfproto]));
            match h {
                IpAddr::V4(a) => {
                    r.extend(payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4));
                    r.extend(cmp_eq(&a.octets()));
                }
                IpAddr::V6(a) => {
                    r.extend(payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16));
                    r.extend(cmp_eq(&a.octets()));
                }
            }
        }
        match to {
            IpAddr::V4(a) => r.extend(immediate(REG_1, &a.octets())),
            IpAddr::V6(a) => r.extend(immediate(REG_1, &a.octets())),
        }
        r.extend(immediate(REG_2, &m.container_port.to_be_bytes()));
        let mut nat = u32a(NFTA_NAT_TYPE, NFT_NAT_DNAT);
        nat.extend(u32a(NFTA_NAT_FAMILY, nfproto as u32));
        nat.extend(u32a(NFTA_NAT_REG_ADDR_MIN, REG_1));
        nat.extend(u32a(NFTA_NAT_REG_PROTO_MIN, REG_2));
        nat.extend(u32a(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED));
        r.extend(expr("nat", &nat));
        rules.push(r);
    }
    Ok(rules)
}

/// A mapping's map and key, as [`super::render::port_key`] has them: on one host address,
/// `ports4`/`ports6` keyed by address . proto . port; else `ports` by proto . port (each
/// part of a concatenation padded to 4 bytes).
fn port_key(m: &crate::model::PortMapping) -> Result<(&'static str, Vec<u8>), NetError> {
    let pad = |b: &[u8]| {
        let mut v = b.to_vec();
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    };
    let mut tail = pad(&[l4proto(&m.proto)?]);
    tail.extend(pad(&m.host_port.to_be_bytes()));
    Ok(match m.host_ip.filter(|h| !h.is_unspecified()) {
        Some(std::net::IpAddr::V4(a)) => ("ports4", [a.octets().to_vec(), tail].concat()),
        Some(std::net::IpAddr::V6(a)) => ("ports6", [a.octets().to_vec(), tail].concat()),
        None => ("ports", tail),
    })
}

/// A netlink socket for nf_tables in one namespace, opened on first use.
pub(super) struct Nl {
    netns: Option<RawFd>,
    sock: Mutex<Option<Socket>>,
    seq: AtomicU32,
}

impl Nl {
    pub fn new(netns: Option<RawFd>) -> Nl {
        Nl {
            netns,
            sock: Mutex::new(None),
            seq: AtomicU32::new(1),
        }
    }

    fn open(&self) -> Result<Socket, NetError> {
        let netns = self.netns;
        // A socket belongs to the namespace it was made in: make it on a thread that enters
        // the host's (this one stays where it is).
        std::thread::spawn(move || -> Result<Socket, NetError> {
            if let Some(fd) = netns {
                // SAFETY: a namespace fd the firewall's owner keeps open.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(NetError::io(
                        "enter the host namespace",
                        std::io::Error::last_os_error(),
                    ));
                }
            }
            let mut s = Socket::new(protocols::NETLINK_NETFILTER)
                .map_err(|e| NetError::io("open an nf_tables socket", e))?;
            s.bind(&SocketAddr::new(0, 0))
                .map_err(|e| NetError::io("bind an nf_tables socket", e))?;
            // One answer per message: without NETLINK_CAP_ACK each echoes its whole request,
            // and a batch of a few hundred (a batched removal) overflowed the default receive
            // buffer — answers lost (the batch itself applied), the wait ran into its timeout,
            // and the fallback found everything gone and went one `nft` at a time (20 s for
            // 400 sandboxes). Answers without payloads, and room for many of them.
            let one: libc::c_int = 1;
            let room: libc::c_int = 4 << 20;
            // SAFETY: a valid socket and ints of the right size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_NETLINK,
                    libc::NETLINK_CAP_ACK,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
                if libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &room as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ) != 0
                {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUF,
                        &room as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            }
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            // SAFETY: a valid socket and a timeval of the right size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            Ok(s)
        })
        .join()
        .map_err(|_| NetError::other("nftables", "the socket thread panicked"))?
    }

    /// Add (or delete) endpoints' ICC elements and sandboxes' published ports in one
    /// transaction: all or nothing. An error carries the kernel's errno (ENOENT: a table, set
    /// or map is missing; on delete, something is gone already).
    pub fn sandbox(
        &self,
        add: bool,
        table: &str,
        icc: &[&IccRules],
        ports: &[&PortRules],
    ) -> Result<(), NetError> {
        let what = match (add, icc.is_empty()) {
            (true, true) => "publish ports",
            (false, true) => "withdraw published ports",
            (true, false) => "add ICC elements",
            (false, false) => "delete ICC elements",
        };
        self.send(what, |b| {
            if !icc.is_empty() {
                b.icc(add, table, icc)?;
            }
            for p in ports {
                b.ports(add, table, p)?;
            }
            Ok(())
        })
    }

    fn send(
        &self,
        what: &str,
        build: impl FnOnce(&mut Batch) -> Result<(), NetError>,
    ) -> Result<(), NetError> {
        let mut guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let sock = guard.as_ref().expect("opened above");
        let seq = self.seq.fetch_add(4096, Ordering::Relaxed);
        let mut b = Batch::new(seq);
        build(&mut b)?;
        let (req, want) = b.end();
        if want >= 4096 {
            return Err(NetError::other(what, "too many changes for one batch"));
        }
        if let Err(e) = sock.send(&req, 0) {
            *guard = None;
            return Err(NetError::io(what, e));
        }
        // One answer per message (errors stop the batch); answers to an earlier, abandoned
        // batch (other sequence numbers) are skipped.
        let mut acked = 0;
        let mut buf = vec![0u8; 65536];
        let started = std::time::Instant::now();
        while acked < want {
            let n = match sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) => {
                    *guard = None;
                    return Err(NetError::io(what, e));
                }
            };
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                let s = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
                if len < 16 || off + len > n {
                    break;
                }
                if ty == NLMSG_ERROR && s > seq && s <= seq + want && len >= 20 {
                    let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                    if code != 0 {
                        return Err(NetError::errno(what, -code));
                    }
                    acked += 1;
                }
                off += (len + 3) & !3;
            }
            if started.elapsed() > Duration::from_secs(5) {
                return Err(NetError::other(what, "no answer from nf_tables"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_begin_elements_end_with_padded_keys() {
        let p = IccRules {
            port: "veth0123456789a".into(),
            links: vec![],
        };
        let mut bt = Batch::new(100);
        bt.icc(true, "weft", &[&p]).unwrap();
        let (b, n) = bt.end();
        assert_eq!(n, 2);
        // begin (20 bytes), two element messages, end (20 bytes).
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), NFNL_MSG_BATCH_BEGIN);
        let first = u32::from_ne_bytes(b[20..24].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(b[24..26].try_into().unwrap());
        assert_eq!(ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM);
        let body = &b[20..20 + first];
        assert!(body.windows(6).any(|w| w == b"selves"));
        // The key: the name and a zero to 16 bytes, twice (a concatenation).
        let mut key = p.port.as_bytes().to_vec();
        key.push(0);
        let twice = [key.clone(), key].concat();
        assert!(body.windows(32).any(|w| w == twice.as_slice()));
        let end = &b[b.len() - 20..];
        assert_eq!(u16::from_ne_bytes([end[4], end[5]]), NFNL_MSG_BATCH_END);
        assert!(ifname("").is_err() && ifname("a-name-too-long-for-linux").is_err());
    }

    #[test]
    fn port_keys_are_padded_concatenations_as_nft_lists_them() {
        // `nft --debug=netlink`: `tcp . 8080` is 00000006 0000901f; `127.0.0.1 . udp . 9090`
        // is 0100007f 00000011 00008223 (each part padded to 4 bytes, values in network order).
        let m = |host: Option<&str>, proto: &str, port: u16| crate::model::PortMapping {
            host_ip: host.map(|h| h.parse().unwrap()),
            host_port: port,
            container_port: 80,
            proto: proto.into(),
        };
        assert_eq!(
            port_key(&m(None, "tcp", 8080)).unwrap(),
            ("ports", vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0])
        );
        assert_eq!(
            port_key(&m(Some("0.0.0.0"), "tcp", 8080)).unwrap().0,
            "ports"
        );
        assert_eq!(
            port_key(&m(Some("127.0.0.1"), "udp", 9090)).unwrap(),
            ("ports4", vec![127, 0, 0, 1, 17, 0, 0, 0, 0x23, 0x82, 0, 0])
        );
        let (map, key) = port_key(&m(Some("fd00::1"), "sctp", 1)).unwrap();
        assert_eq!(
            (map, key.len(), key[16], key[20..22].to_vec()),
            ("ports6", 24, 132, vec![0, 1])
        );
        assert!(port_key(&m(None, "icmp", 1)).is_err());
    }
}
