//! Watching the host's kernel for changes: link, address and route deletions (and links set
//! down) from rtnetlink's multicast groups, and every nftables change (NFNLGRP_NFTABLES).
//! Each is reported as a bare [`Change`]; the daemon answers with a check, which compares the
//! kernel with the records — the watch itself decides nothing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{protocols, Socket, SocketAddr};

use super::{ns, NetError};

/// What kind of change the kernel announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A link was deleted or set down.
    Link,
    /// An address was deleted.
    Address,
    /// A route was deleted.
    Route,
    /// Something in nftables changed (a table, chain, rule or set).
    Firewall,
    /// The watch itself broke (an error its socket should never give): nothing more will be
    /// reported. Whoever follows it starts another.
    Lost,
}

// rtnetlink multicast groups (legacy bitmask form) and message types.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_DELADDR: u16 = 21;
const RTM_DELROUTE: u16 = 25;
const IFF_UP: u32 = 0x1;
/// NFNLGRP_NFTABLES = 7, as a bitmask.
const NFT_GROUP: u32 = 1 << (7 - 1);

/// What one rtnetlink datagram announces (several messages may share one).
fn classify_route(buf: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
        if len < 16 || off + len > buf.len() {
            break;
        }
        let body = &buf[off + 16..off + len];
        match ty {
            RTM_DELLINK => out.push(Change::Link),
            // ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
            RTM_NEWLINK if body.len() >= 16 => {
                let flags = u32::from_ne_bytes(body[8..12].try_into().unwrap());
                let change = u32::from_ne_bytes(body[12..16].try_into().unwrap());
                if flags & IFF_UP == 0 && change & IFF_UP != 0 {
                    out.push(Change::Link);
                }
            }
            RTM_DELADDR => out.push(Change::Address),
            RTM_DELROUTE => out.push(Change::Route),
            _ => {}
        }
        off += (len + 3) & !3;
    }
    out
}

fn set_timeout(s: &Socket, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
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
}

/// A socket opened inside `host` (the socket stays bound to that namespace).
fn open(host: &File, proto: isize, groups: u32) -> Result<Socket, NetError> {
    ns::run_in(Some(host), || -> Result<Socket, NetError> {
        let mut s = Socket::new(proto).map_err(|e| NetError::io("open a netlink socket", e))?;
        s.bind(&SocketAddr::new(0, groups))
            .map_err(|e| NetError::io("join netlink groups", e))?;
        let _ = s.set_rx_buf_sz(4 << 20);
        set_timeout(&s, Duration::from_millis(500));
        Ok(s)
    })?
}

/// Watch the namespace `host`: changes arrive on the returned channel until it is dropped.
/// Overruns (ENOBUFS) are reported as a change of every kind: something was missed.
pub fn watch(host: &File) -> Result<tokio::sync::mpsc::Receiver<Change>, NetError> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let route = open(
        host,
        protocols::NETLINK_ROUTE,
        RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV6_ROUTE,
    )?;
    let nft = open(host, protocols::NETLINK_NETFILTER, NFT_GROUP)?;
    for (sock, is_nft) in [(route, false), (nft, true)] {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(
                if is_nft {
                    "weft-watch-nft"
                } else {
                    "weft-watch-rt"
                }
                .into(),
            )
            .spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    if tx.is_closed() {
                        return;
                    }
                    // SAFETY: reading into our own buffer.
                    let n = unsafe {
                        libc::recv(
                            sock.as_raw_fd(),
                            buf.as_mut_ptr() as *mut libc::c_void,
                            buf.len(),
                            0,
                        )
                    };
                    let changes = if n < 0 {
                        let e = std::io::Error::last_os_error();
                        match e.raw_os_error() {
                            Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                            Some(libc::ENOBUFS) => vec![Change::Link, Change::Firewall],
                            _ => {
                                tracing::error!("the kernel watch broke: {e}");
                                let _ = tx.blocking_send(Change::Lost);
                                return;
                            }
                        }
                    } else if is_nft {
                        vec![Change::Firewall]
                    } else {
                        classify_route(&buf[..n as usize])
                    };
                    for c in changes {
                        if tx.try_send(c).is_err() && tx.is_closed() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| NetError::io("start a watch thread", e))?;
    }
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(((16 + body.len()) as u32).to_ne_bytes());
        m.extend(ty.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn deletions_and_links_going_down_are_changes() {
        let mut ifi = vec![0u8; 16];
        ifi[12..16].copy_from_slice(&IFF_UP.to_ne_bytes()); // change: UP, flags: down
        let mut dg = msg(RTM_DELLINK, &[0; 16]);
        dg.extend(msg(RTM_NEWLINK, &ifi));
        dg.extend(msg(RTM_DELADDR, &[0; 8]));
        dg.extend(msg(RTM_DELROUTE, &[0; 12]));
        assert_eq!(
            classify_route(&dg),
            [Change::Link, Change::Link, Change::Address, Change::Route]
        );
        // A link coming up, or a new address, is no change to mend.
        let mut up = vec![0u8; 16];
        up[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        up[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
        let mut dg = msg(RTM_NEWLINK, &up);
        dg.extend(msg(20, &[0; 8]));
        assert!(classify_route(&dg).is_empty());
    }
}
