//! nf_tables over netlink for the attach path, without starting an `nft` process (~3 ms a
//! time): an endpoint's ICC elements (its bridge port in the `noicc` and `selves` sets of
//! weft's bridge table) and a sandbox's published ports (its elements in the port maps) are
//! added or deleted in one nfnetlink batch, all or nothing. Tables, base chains, network chains and legacy links' elements still go through
//! `nft -j`, and so does this when the netlink path cannot serve (a table or map missing: its
//! first use, a flushed ruleset).
//!
//! The elements are the bytes `nft` sends for the same elements (`nft --debug=netlink`), so
//! they list back exactly as the ones `nft` made and `system check` compares like with like.
//!
//! Hand-encoded: the messages are small and fixed (NFT_MSG_NEWSETELEM and DELSETELEM between
//! NFNL_MSG_BATCH_BEGIN and END), and no maintained Rust crate encodes
//! nf_tables under a licence that fits (rustables is GPL-3.0; nftnl-rs binds libnftnl,
//! GPL-2.0).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use netlink_sys::{protocols, Socket, SocketAddr};

use super::{IccRules, PortRules, PortSlot, PortTarget};
use crate::net::NetError;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;
const NFTA_SET_ELEM_DATA: u16 = 2;
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

    /// Add (or delete) a sandbox's published ports: its elements in the port maps.
    fn ports(&mut self, add: bool, table: &str, p: &PortRules) -> Result<(), NetError> {
        let (ty, flags) = if add {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
        } else {
            (NFT_MSG_DELSETELEM, 0)
        };
        for slot in p.slots() {
            let key = slot_key(&slot)?;
            let data = add.then(|| slot_data(&slot));
            self.push(
                ty,
                flags,
                NFPROTO_INET,
                &elements(table, slot.map, &key, data.as_deref()),
            );
        }
        Ok(())
    }
}

/// A set-element list with one element: its key, and for a map its data.
fn elements(table: &str, set: &str, key: &[u8], data: Option<&[u8]>) -> Vec<u8> {
    let mut e = nla(NFTA_SET_ELEM_KEY | NLA_F_NESTED, &nla(NFTA_DATA_VALUE, key));
    if let Some(data) = data {
        e.extend(nla(
            NFTA_SET_ELEM_DATA | NLA_F_NESTED,
            &nla(NFTA_DATA_VALUE, data),
        ));
    }
    let elem = nla(NFTA_LIST_ELEM | NLA_F_NESTED, &e);
    let mut attrs = nla(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attrs.extend(nla(NFTA_SET_ELEM_LIST_SET, &cstr(set)));
    attrs.extend(nla(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &elem));
    attrs
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

/// A port-map element's key, as [`super::render::port_slot_key`] writes it: [address .]
/// protocol . port, each part of the concatenation padded to 4 bytes.
fn slot_key(s: &PortSlot) -> Result<Vec<u8>, NetError> {
    let pad = |b: &[u8]| {
        let mut v = b.to_vec();
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    };
    let mut key = match s.host {
        Some(std::net::IpAddr::V4(a)) => a.octets().to_vec(),
        Some(std::net::IpAddr::V6(a)) => a.octets().to_vec(),
        None => Vec::new(),
    };
    key.extend(pad(&[l4proto(s.proto)?]));
    key.extend(pad(&s.port.to_be_bytes()));
    Ok(key)
}

/// A port-map element's data: the sandbox's address (4 or 16 bytes) or its port (2 bytes,
/// the map's data length).
fn slot_data(s: &PortSlot) -> Vec<u8> {
    match s.to {
        PortTarget::Addr(std::net::IpAddr::V4(a)) => a.octets().to_vec(),
        PortTarget::Addr(std::net::IpAddr::V6(a)) => a.octets().to_vec(),
        PortTarget::Port(p) => p.to_be_bytes().to_vec(),
    }
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
    fn port_elements_are_the_bytes_nft_sends() {
        // `nft --debug=netlink` for `add element inet t m { tcp . 8080 : 172.17.0.2 }` and the
        // like: `tcp . 8080` is 00000006 0000901f; `127.0.0.1 . udp . 9090` is 0100007f
        // 00000011 00008223 (each part padded to 4 bytes, values in network order); an
        // address as data is its bytes, a port (inet_service) its two.
        let m = |host: Option<&str>, proto: &str, port: u16| crate::model::PortMapping {
            host_ip: host.map(|h| h.parse().unwrap()),
            host_port: port,
            container_port: 80,
            proto: proto.into(),
        };
        let p = |maps| PortRules {
            id: "0123456789ab".into(),
            addr: "172.17.0.2".parse().unwrap(),
            addr6: Some("fd00::2".parse().unwrap()),
            maps,
        };
        let bytes = |p: &PortRules| -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
            p.slots()
                .iter()
                .map(|s| (s.map, slot_key(s).unwrap(), slot_data(s)))
                .collect()
        };
        let any = p(vec![m(None, "tcp", 8080)]);
        assert_eq!(
            bytes(&any),
            vec![
                (
                    "dnat_any4",
                    vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0],
                    vec![172, 17, 0, 2]
                ),
                (
                    "dnat_any6",
                    vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0],
                    "fd00::2"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets()
                        .to_vec()
                ),
                (
                    "dnat_any_port",
                    vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0],
                    vec![0, 80]
                ),
            ]
        );
        assert_eq!(
            bytes(&p(vec![m(Some("0.0.0.0"), "tcp", 8080)])),
            bytes(&any)
        );
        assert_eq!(
            bytes(&p(vec![m(Some("127.0.0.1"), "udp", 9090)])),
            vec![
                (
                    "dnat_at4",
                    vec![127, 0, 0, 1, 17, 0, 0, 0, 0x23, 0x82, 0, 0],
                    vec![172, 17, 0, 2]
                ),
                (
                    "dnat_at4_port",
                    vec![127, 0, 0, 1, 17, 0, 0, 0, 0x23, 0x82, 0, 0],
                    vec![0, 80]
                ),
            ]
        );
        let v6 = bytes(&p(vec![m(Some("fd00::1"), "sctp", 1)]));
        assert_eq!(
            v6.iter()
                .map(|(m, k, d)| (*m, k.len(), k[16], k[20..22].to_vec(), d.len()))
                .collect::<Vec<_>>(),
            vec![
                ("dnat_at6", 24, 132, vec![0, 1], 16),
                ("dnat_at6_port", 24, 132, vec![0, 1], 2)
            ]
        );
        // Without an IPv6 address of its own, a sandbox's port on an IPv6 host address has
        // nowhere to go: no element.
        let mut no6 = p(vec![m(Some("fd00::1"), "tcp", 1)]);
        no6.addr6 = None;
        assert!(no6.slots().is_empty());
        assert!(slot_key(&p(vec![m(None, "icmp", 1)]).slots()[0]).is_err());
    }
}
