//! Watching the host's kernel for changes to weft's own objects: deletions of (and links set
//! down among) the links weft made — known by their group mark, [`super::kernel::WEFT_GROUP`],
//! not by name — addresses and routes deleted on those links, from rtnetlink's multicast
//! groups; and changes to weft's nftables table (NFNLGRP_NFTABLES, by the table named in each
//! message). Changes to other links, other routes and other tables (Docker's, firewalld's,
//! Kubernetes') are not reported, so a host where others churn does not keep weft checking.
//! Each [`Change`] names what it touched when the kernel's message says: the link (by name),
//! the chain (a rule's or a chain's message); the daemon checks those objects against the
//! records — or everything, when the change names nothing more precise (the table, a set or
//! map, their elements, a message that did not decode).
//! Messages are decoded with netlink-packet-route (rtnetlink) and netlink-packet-core's
//! attribute iterator (nf_tables: no maintained crate decodes its notifications); a message
//! that does not decode is reported, as a change that may be weft's.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, NlasIterator};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::RouteAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols, Socket, SocketAddr};

use super::kernel::is_weft_group;
use super::{ns, NetError};

/// What kind of change the kernel announced, and what it touched when the message says (a
/// link's name; the chain a chain's or rule's message names). `None`: it did not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One of weft's links was deleted or set down.
    Link(Option<String>),
    /// An address on one of weft's links was deleted (the link's name).
    Address(Option<String>),
    /// A route through one of weft's links was deleted (the link's name).
    Route(Option<String>),
    /// Something in weft's nftables table changed: a chain or its rules (the chain's name), or
    /// `None` — the table, a set or map, its elements, anything else.
    Firewall(Option<String>),
    /// The watch itself broke (an error its socket should never give): nothing more will be
    /// reported. Whoever follows it starts another.
    Lost,
}

// rtnetlink multicast groups (legacy bitmask form).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// NFNLGRP_NFTABLES = 7, as a bitmask.
const NFT_GROUP: u32 = 1 << (7 - 1);
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
/// NFTA_CHAIN_NAME; a rule's chain is NFTA_RULE_CHAIN.
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_CHAIN: u16 = 2;
/// The table's name is attribute 1 of every nf_tables object message (NFTA_TABLE_NAME,
/// NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, …).
const NFTA_TABLE: u16 = 1;

/// Which links are weft's (by index, with their names), kept from the link messages the watch
/// sees and a dump at its start: an address or route message names only its link's index.
#[derive(Default)]
struct Links {
    ours: HashMap<u32, Option<String>>,
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Does the kernel's description of a link carry weft's mark?
fn marked(m: &LinkMessage) -> bool {
    m.attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::Group(g) if is_weft_group(*g)))
}

impl Links {
    /// A link as the kernel describes it (a dump's answer or a notification): is it weft's?
    fn learn(&mut self, m: &LinkMessage) -> bool {
        if marked(m) {
            self.ours.insert(m.header.index, link_name(m));
            true
        } else {
            self.ours.remove(&m.header.index);
            false
        }
    }

    /// What one rtnetlink datagram announces about weft's objects (several messages may
    /// share one).
    fn classify(&mut self, buf: &[u8]) -> Vec<Change> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let Ok(nb) = NetlinkBuffer::new_checked(&buf[off..]) else {
                out.push(Change::Link(None));
                break;
            };
            let len = nb.length() as usize;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]);
            off += (len + 3) & !3;
            let inner = match msg.map(|m| m.payload) {
                Ok(NetlinkPayload::InnerMessage(m)) => m,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!("an rtnetlink message did not decode ({e}): checking");
                    out.push(Change::Link(None));
                    continue;
                }
            };
            match inner {
                RouteNetlinkMessage::DelLink(m) => {
                    let known = self.ours.remove(&m.header.index);
                    if known.is_some() || marked(&m) {
                        out.push(Change::Link(link_name(&m).or(known.flatten())))
                    }
                }
                RouteNetlinkMessage::NewLink(m) => {
                    // A link just made comes with every bit "changed": not one going down.
                    let known = self.ours.contains_key(&m.header.index);
                    let going_down = !m.header.flags.contains(LinkFlags::Up)
                        && m.header.change_mask.contains(LinkFlags::Up);
                    if self.learn(&m) && known && going_down {
                        out.push(Change::Link(link_name(&m)));
                    }
                }
                RouteNetlinkMessage::DelAddress(m) => {
                    if let Some(n) = self.ours.get(&m.header.index) {
                        out.push(Change::Address(n.clone()))
                    }
                }
                RouteNetlinkMessage::DelRoute(m) => {
                    let on = m.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => self.ours.get(i),
                        _ => None,
                    });
                    if let Some(n) = on {
                        out.push(Change::Route(n.clone()))
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// What one nf_tables datagram changes in the table `table` (any family: weft has an inet and a
/// bridge table of that name): a chain's or rule's message names its chain; any other message
/// (the table, a set or map, its elements) names nothing more precise. Nothing for messages of
/// other tables; a message that does not decode may be weft's.
fn nft_changes(buf: &[u8], table: &str) -> Vec<Change> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let Ok(nb) = NetlinkBuffer::new_checked(&buf[off..]) else {
            out.push(Change::Firewall(None));
            break;
        };
        let len = nb.length() as usize;
        let ty = nb.message_type();
        let body = &buf[off + 16..off + len];
        off += (len + 3) & !3;
        if ty >> 8 != NFNL_SUBSYS_NFTABLES || ty & 0xff == NFT_MSG_NEWGEN {
            continue;
        }
        // The attribute naming the chain, for a chain's or a rule's message.
        let chain_attr = match ty & 0xff {
            NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN => Some(NFTA_CHAIN_NAME),
            NFT_MSG_NEWRULE | NFT_MSG_DELRULE => Some(NFTA_RULE_CHAIN),
            _ => None,
        };
        // nfgenmsg (family, version, resource id), then the attributes.
        let Some(attrs) = body.get(4..) else {
            out.push(Change::Firewall(None));
            continue;
        };
        let (mut ours, mut chain, mut broken) = (false, None, false);
        for nla in NlasIterator::new(attrs) {
            let Ok(nla) = nla else {
                broken = true;
                break;
            };
            let v = nla.value();
            let text = v.split(|b| *b == 0).next().unwrap_or(v);
            match nla.kind() & 0x3fff {
                NFTA_TABLE => ours = text == table.as_bytes(),
                k if Some(k) == chain_attr => {
                    chain = std::str::from_utf8(text).ok().map(str::to_string)
                }
                _ => {}
            }
        }
        let change = if broken {
            Change::Firewall(None)
        } else if ours {
            Change::Firewall(chain)
        } else {
            continue;
        };
        if !out.contains(&change) {
            out.push(change);
        }
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

/// The links of the namespace the socket lives in, as weft's or not (a dump).
fn dump_links(s: &Socket, links: &mut Links) -> Result<(), NetError> {
    use netlink_packet_core::{NetlinkHeader, NLM_F_DUMP, NLM_F_REQUEST};
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = 1;
    req.finalize();
    let mut out = vec![0u8; req.buffer_len()];
    req.serialize(&mut out);
    s.send(&out, 0)
        .map_err(|e| NetError::io("ask for the host's links", e))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = s
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| NetError::io("read the host's links", e))?;
        let mut off = 0;
        while off < n {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..n])
                .map_err(|e| NetError::other("read the host's links", format!("{e}")))?;
            off += (m.header.length as usize + 3) & !3;
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    links.learn(&l);
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(NetError::other("read the host's links", format!("{e}")))
                }
                _ => {}
            }
        }
    }
}

/// Watch the namespace `host` for changes to weft's links and to its nftables table named
/// `table`: changes arrive on the returned channel until it is dropped. Overruns (ENOBUFS)
/// are reported as a change of every kind: something was missed (and the links are dumped
/// again).
pub fn watch(host: &File, table: &str) -> Result<tokio::sync::mpsc::Receiver<Change>, NetError> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    // Joined before the dump, so no link made meanwhile goes unseen.
    let route = open(
        host,
        protocols::NETLINK_ROUTE,
        RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV6_ROUTE,
    )?;
    let dumper = open(host, protocols::NETLINK_ROUTE, 0)?;
    let mut links = Links::default();
    dump_links(&dumper, &mut links)?;
    let nft = open(host, protocols::NETLINK_NETFILTER, NFT_GROUP)?;
    let table = table.to_string();
    // An overrun is read as `None`: something was missed.
    reader("weft-watch-rt", route, tx.clone(), move |buf| match buf {
        Some(b) => links.classify(b),
        None => {
            if let Err(e) = dump_links(&dumper, &mut links) {
                tracing::warn!("after an overrun: {e}");
            }
            vec![Change::Link(None)]
        }
    })?;
    reader("weft-watch-nft", nft, tx, move |buf| match buf {
        Some(b) => nft_changes(b, &table),
        None => vec![Change::Firewall(None)],
    })?;
    Ok(rx)
}

/// A thread reading datagrams from `sock` and sending what `f` makes of them.
fn reader(
    name: &str,
    sock: Socket,
    tx: tokio::sync::mpsc::Sender<Change>,
    mut f: impl FnMut(Option<&[u8]>) -> Vec<Change> + Send + 'static,
) -> Result<(), NetError> {
    std::thread::Builder::new()
        .name(name.into())
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
                        Some(libc::ENOBUFS) => f(None),
                        _ => {
                            tracing::error!("the kernel watch broke: {e}");
                            let _ = tx.blocking_send(Change::Lost);
                            return;
                        }
                    }
                } else {
                    f(Some(&buf[..n as usize]))
                };
                // Waits while the channel is full (the healer in a check): a change dropped would
                // be a change never checked. Meanwhile the kernel queues what comes, and an
                // overrun is reported as a change that names nothing (checks everything).
                for c in changes {
                    if tx.blocking_send(c).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| NetError::io("start a watch thread", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DefaultNla, Emitable, NetlinkHeader};
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::route::RouteMessage;

    /// Messages as the kernel sends them, made by netlink-packet-route's own encoder (not
    /// this module's idea of the layout).
    fn dgram(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut nm = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
            nm.finalize();
            let mut b = vec![0u8; nm.buffer_len()];
            nm.serialize(&mut b);
            out.extend(b);
        }
        out
    }

    fn link(index: u32, group: u32, flags: LinkFlags, change: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.header.change_mask = change;
        m.attributes = vec![
            LinkAttribute::IfName(format!("if{index}")),
            LinkAttribute::Group(group),
        ];
        m
    }

    fn addr(index: u32) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m
    }

    fn route(oif: u32) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.attributes = vec![RouteAttribute::Oif(oif)];
        m
    }

    const WEFT: u32 = super::super::kernel::WEFT_GROUP;

    #[test]
    fn only_weft_links_and_what_is_on_them_are_changes() {
        use RouteNetlinkMessage::*;
        let mut l = Links::default();
        let up = LinkFlags::Up;
        let none = LinkFlags::empty();
        // Learned: 5 is weft's (a dump's answer or a new link), 6 is someone else's.
        let learned = l.classify(&dgram(vec![
            NewLink(link(5, WEFT, none, LinkFlags::all())),
            NewLink(link(6, 0, up, none)),
        ]));
        assert!(learned.is_empty(), "{learned:?}");
        // Someone else's link going down or away, its addresses and routes: nothing.
        let foreign = l.classify(&dgram(vec![
            NewLink(link(6, 0, none, up)),
            DelAddress(addr(6)),
            DelRoute(route(6)),
            DelRoute(RouteMessage::default()),
            DelLink(link(6, 0, none, none)),
        ]));
        assert!(foreign.is_empty(), "{foreign:?}");
        // weft's: an address, a route, set down, deleted (several in one datagram).
        assert_eq!(
            l.classify(&dgram(vec![
                DelAddress(addr(5)),
                DelRoute(route(5)),
                NewLink(link(5, WEFT, none, up)),
                DelLink(link(5, WEFT, none, none)),
            ])),
            [
                Change::Address(Some("if5".into())),
                Change::Route(Some("if5".into())),
                Change::Link(Some("if5".into())),
                Change::Link(Some("if5".into()))
            ]
        );
        // Gone: a later address message on index 5 is someone else's link by then.
        assert!(l.classify(&dgram(vec![DelAddress(addr(5))])).is_empty());
        // A weft link coming up, or a new address on it, is no change to mend.
        let mut n = AddressMessage::default();
        n.header.index = 7;
        assert!(l
            .classify(&dgram(vec![
                NewLink(link(7, WEFT | 3, up, up)),
                NewAddress(n)
            ]))
            .is_empty());
        assert!(
            l.ours.contains_key(&7),
            "a batch-deletion group is weft's too"
        );
        // A deletion of a weft link never learned (made before a dump missed it) still is.
        assert_eq!(
            l.classify(&dgram(vec![DelLink(link(9, WEFT, none, none))])),
            [Change::Link(Some("if9".into()))]
        );
        // A deletion message without a name is named by what the watch learned.
        let mut m = link(7, WEFT, none, none);
        m.attributes
            .retain(|a| !matches!(a, LinkAttribute::IfName(_)));
        assert_eq!(
            l.classify(&dgram(vec![DelLink(m)])),
            [Change::Link(Some("if7".into()))]
        );
        // What does not decode may be weft's.
        let mut bad = dgram(vec![DelAddress(addr(6))]);
        bad.truncate(bad.len() - 2);
        let n = bad.len() as u32;
        bad[0..4].copy_from_slice(&n.to_ne_bytes());
        assert_eq!(l.classify(&bad), [Change::Link(None)]);
    }

    /// An nf_tables notification: nlmsghdr, nfgenmsg, then attributes.
    fn nft_msg(msg: u16, attrs: &[DefaultNla]) -> Vec<u8> {
        let mut body = vec![1u8, 0, 0, 0]; // NFPROTO_INET, version 0, resource 0
        let len: usize = attrs.iter().map(|a| a.buffer_len()).sum();
        let mut a = vec![0u8; len];
        attrs.emit(&mut a);
        body.extend(a);
        let mut h = NetlinkHeader::default();
        h.length = (16 + body.len()) as u32;
        h.message_type = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        let mut out = vec![0u8; 16];
        h.emit(&mut out);
        out.extend(body);
        out
    }

    fn name(kind: u16, s: &str) -> DefaultNla {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        DefaultNla::new(kind, v)
    }

    #[test]
    fn only_weft_tables_are_changes_named_by_chain_where_the_message_says() {
        const DELTABLE: u16 = 2;
        const NEWSETELEM: u16 = 12;
        let gen = nft_msg(
            NFT_MSG_NEWGEN,
            &[DefaultNla::new(1, 7u32.to_be_bytes().to_vec())],
        );
        // firewalld's or Docker's rule, then the generation message every batch ends with.
        let mut d = nft_msg(
            NFT_MSG_NEWRULE,
            &[name(1, "firewalld"), name(2, "filter_INPUT")],
        );
        d.extend(&gen);
        assert!(nft_changes(&d, "weft").is_empty());
        // A rule in weft's table names its chain; a chain's message too (attribute 3; its
        // attribute 2 is the handle).
        assert_eq!(
            nft_changes(
                &nft_msg(
                    NFT_MSG_DELRULE,
                    &[name(1, "weft"), name(2, "nw-0123456789ab-in")]
                ),
                "weft"
            ),
            [Change::Firewall(Some("nw-0123456789ab-in".into()))]
        );
        assert_eq!(
            nft_changes(
                &nft_msg(
                    NFT_MSG_DELCHAIN,
                    &[
                        name(1, "weft"),
                        DefaultNla::new(2, 9u64.to_be_bytes().to_vec()),
                        name(3, "forward")
                    ]
                ),
                "weft"
            ),
            [Change::Firewall(Some("forward".into()))]
        );
        // Three rules of one chain in one batch: one change.
        let mut three = Vec::new();
        for _ in 0..3 {
            three.extend(nft_msg(
                NFT_MSG_DELRULE,
                &[name(1, "weft"), name(2, "guard")],
            ));
        }
        assert_eq!(
            nft_changes(&three, "weft"),
            [Change::Firewall(Some("guard".into()))]
        );
        // An element (its attribute 2 is the set's name, not a chain) names nothing precise,
        // and `nft flush ruleset` deleting weft's table among others neither.
        assert_eq!(
            nft_changes(
                &nft_msg(NEWSETELEM, &[name(1, "weft"), name(2, "dnat_any4")]),
                "weft"
            ),
            [Change::Firewall(None)]
        );
        let mut flush = nft_msg(DELTABLE, &[name(1, "docker")]);
        flush.extend(nft_msg(DELTABLE, &[name(1, "weft")]));
        flush.extend(&gen);
        assert_eq!(nft_changes(&flush, "weft"), [Change::Firewall(None)]);
        // A table whose name only starts with weft's is someone else's.
        assert!(nft_changes(&nft_msg(DELTABLE, &[name(1, "weft2")]), "weft").is_empty());
        // What does not decode may be weft's.
        let mut bad = nft_msg(NFT_MSG_NEWRULE, &[name(1, "other")]);
        bad[0..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(nft_changes(&bad, "weft"), [Change::Firewall(None)]);
    }
}
