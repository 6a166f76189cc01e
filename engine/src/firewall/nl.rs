//! nf_tables over netlink for the attach path: an endpoint's ICC elements (its bridge port in
//! the `noicc` and `selves` sets of weft's bridge table) added or deleted in one nfnetlink
//! batch, without starting an `nft` process (~3 ms of an ICC-off attach). Everything else —
//! tables, chains, rules, maps, legacy links' elements — still goes through `nft -j`, and so
//! does this when the netlink path cannot serve (the table is not there yet: its first use).
//!
//! Hand-encoded: the messages are small and fixed (NFT_MSG_NEWSETELEM/DELSETELEM between
//! NFNL_MSG_BATCH_BEGIN and END), and no maintained Rust crate encodes nf_tables under a
//! licence that fits (rustables is GPL-3.0; nftnl-rs binds libnftnl, GPL-2.0).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use netlink_sys::{protocols, Socket, SocketAddr};

use super::IccRules;
use crate::net::NetError;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_BRIDGE: u8 = 7;
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

/// The batch that adds (or deletes) these ports' `selves` and `noicc` elements in weft's
/// bridge table `table`, its messages numbered from `seq`; and how many want an answer.
fn batch(
    add: bool,
    table: &str,
    ports: &[&IccRules],
    seq: u32,
) -> Result<(Vec<u8>, u32), NetError> {
    let mut out = msg(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let mut n = 0;
    let (ty, flags) = if add {
        (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
    } else {
        (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
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
            let elem = nla(
                NFTA_LIST_ELEM | NLA_F_NESTED,
                &nla(
                    NFTA_SET_ELEM_KEY | NLA_F_NESTED,
                    &nla(NFTA_DATA_VALUE, &key),
                ),
            );
            let mut attrs = nla(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
            attrs.extend(nla(NFTA_SET_ELEM_LIST_SET, &cstr(set)));
            attrs.extend(nla(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &elem));
            n += 1;
            out.extend(msg(
                (NFNL_SUBSYS_NFTABLES << 8) | ty,
                flags,
                seq + n,
                NFPROTO_BRIDGE,
                0,
                &attrs,
            ));
        }
    }
    out.extend(msg(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + n + 1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    ));
    Ok((out, n))
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

    /// Add (or delete) the ports' ICC elements in one transaction: all or nothing. An error
    /// carries the kernel's errno (ENOENT: the table or a set is missing; on delete, an
    /// element already gone).
    pub fn icc(&self, add: bool, table: &str, ports: &[&IccRules]) -> Result<(), NetError> {
        let mut guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let sock = guard.as_ref().expect("opened above");
        let seq = self.seq.fetch_add(64, Ordering::Relaxed);
        let (req, want) = batch(add, table, ports, seq)?;
        let what = if add {
            "add ICC elements"
        } else {
            "delete ICC elements"
        };
        if let Err(e) = sock.send(&req, 0) {
            *guard = None;
            return Err(NetError::io(what, e));
        }
        // One answer per element message (errors stop the batch); answers to an earlier,
        // abandoned batch (other sequence numbers) are skipped.
        let mut acked = 0;
        let mut buf = vec![0u8; 8192];
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
        let (b, n) = batch(true, "weft", &[&p], 100).unwrap();
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
}
