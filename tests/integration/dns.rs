//! Embedded DNS: sandboxes on user-defined networks find each other by name, alias and short
//! id through the daemon's resolver on the network's gateway; other names are forwarded to a
//! resolver in the test's "outside" namespace; the default bridge has no name resolution.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::harness::*;

const OUTSIDE_NAME: &str = "outside.test.";
const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// A resolver in the outside namespace: `outside.test` → 192.0.2.53, NXDOMAIN otherwise;
/// UDP and TCP on port 53. Runs until the test process ends.
fn outside_resolver(out: &std::path::Path, addr: Ipv4Addr) {
    let answer = |q: &[u8]| -> Vec<u8> {
        let req = Message::from_vec(q).unwrap();
        let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        m.add_queries(req.queries.iter().cloned());
        let q0 = &req.queries[0];
        if q0.name().to_ascii() == OUTSIDE_NAME && q0.query_type() == RecordType::A {
            m.add_answer(Record::from_rdata(
                q0.name().clone(),
                60,
                RData::A(A(OUTSIDE_ADDR)),
            ));
        } else {
            m.metadata.response_code = ResponseCode::NXDomain;
        }
        m.to_vec().unwrap()
    };
    let (udp, tcp) = in_ns(out, move || {
        (
            UdpSocket::bind((addr, 53)).unwrap(),
            std::net::TcpListener::bind((addr, 53)).unwrap(),
        )
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&answer(&buf[..n]), peer);
        }
    });
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for c in tcp.incoming() {
            let Ok(mut c) = c else { continue };
            let mut len = [0u8; 2];
            if c.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            if c.read_exact(&mut q).is_err() {
                continue;
            }
            let a = answer(&q);
            let _ = c.write_all(&(a.len() as u16).to_be_bytes());
            let _ = c.write_all(&a);
        }
    });
}

/// Ask `server` for `name` from inside `ns` (UDP, or TCP); the answer's code and addresses
/// in order.
fn ask(ns: &std::path::Path, server: IpAddr, name: &str, tcp: bool) -> (ResponseCode, Vec<IpAddr>) {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let q = m.to_vec().unwrap();
    let raw = in_ns(ns, move || -> Vec<u8> {
        if tcp {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect_timeout(
                &SocketAddr::new(server, 53),
                Duration::from_secs(5),
            )
            .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
            c.write_all(&q).unwrap();
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
            c.read_exact(&mut b).unwrap();
            b
        } else {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.send_to(&q, (server, 53)).unwrap();
            let mut b = vec![0u8; 4096];
            let n = s.recv(&mut b).unwrap();
            b.truncate(n);
            b
        }
    })
    .join()
    .unwrap();
    let r = Message::from_vec(&raw).unwrap();
    let addrs = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    (r.metadata.response_code, addrs)
}

/// The host's resolv.conf the test gives weft (`WEFT_RESOLV_CONF`).
fn host_resolv(h: &TestHost) -> String {
    h.dir.join("host-resolv.conf").to_str().unwrap().to_string()
}

/// `weft sandbox exec SB -- ARGS`, with the test's host resolv.conf.
fn exec(h: &TestHost, sb: &str, args: &[&str]) -> std::process::Output {
    let mut a = vec!["sandbox", "exec", sb, "--"];
    a.extend_from_slice(args);
    h.weft_env(&a, &[("WEFT_RESOLV_CONF", &host_resolv(h))])
}

fn getent(h: &TestHost, sb: &str, name: &str) -> Option<String> {
    let o = exec(h, sb, &["getent", "hosts", name]);
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    })
}

#[test]
fn sandboxes_find_each_other_by_name_and_other_names_are_forwarded() {
    let h = TestHost::new("dns");
    let out = h.outside("dnsout", "10.72.9.1", "10.72.9.2");
    outside_resolver(&out, "10.72.9.2".parse().unwrap());
    let resolv = std::path::PathBuf::from(host_resolv(&h));
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.53\nnameserver 10.72.9.2\nsearch example.internal\n",
    )
    .unwrap();
    let resolv_s = resolv.to_str().unwrap();
    let _d = h.daemon_env(&[("WEFT_RESOLV_CONF", resolv_s)]);
    h.weft_ok(&["network", "create", "--subnet", "10.72.0.0/24", "web"]);
    h.weft_ok(&["network", "create", "--subnet", "10.72.1.0/24", "other"]);
    for (name, net, alias) in [
        ("a", "web", None),
        ("b", "web", None),
        ("c", "web", Some("db")),
        ("d", "web", Some("db")),
        ("e", "web", Some("db")),
        ("x", "other", None),
        ("y", "other", None),
    ] {
        let mut args = vec!["sandbox", "create", "--network", net];
        if let Some(a) = alias {
            args.extend(["--alias", a]);
        }
        args.push(name);
        h.weft_ok(&args);
    }
    let gw: IpAddr = "10.72.0.1".parse().unwrap();
    let ka = key(&h, "a");
    let ip = |n: &str| sandbox_ip(&h, n);

    // The sandbox's resolv.conf names the resolver.
    let rc =
        String::from_utf8_lossy(&exec(&h, "a", &["cat", "/etc/resolv.conf"]).stdout).into_owned();
    assert!(
        rc.contains("nameserver 10.72.0.1\n") && rc.contains("options ndots:0"),
        "{rc}"
    );
    // By name, by name.network, by short id, by reverse lookup.
    assert_eq!(getent(&h, "a", "b"), Some(format!("{} b", ip("b"))));
    assert_eq!(getent(&h, "a", "b.web"), Some(format!("{} b.web", ip("b"))));
    let b_id = h.engine().sandbox("b").unwrap().id;
    assert_eq!(ask(&ka, gw, &b_id[..12], false).1, vec![ip("b")]);
    assert_eq!(
        getent(&h, "a", &ip("b").to_string()),
        Some(format!("{} b.web", ip("b")))
    );
    // An alias three sandboxes hold: all three, each first in turn.
    let holders: std::collections::BTreeSet<IpAddr> = [ip("c"), ip("d"), ip("e")].into();
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let (code, addrs) = ask(&ka, gw, "db", false);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(
            addrs
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            holders
        );
        firsts.insert(addrs[0]);
    }
    assert_eq!(firsts, holders, "round robin: each holder first once");
    // Over TCP too.
    assert_eq!(ask(&ka, gw, "b", true).1, vec![ip("b")]);
    // A TCP connection by name.
    let server = tcp_server(&key(&h, "b"), SocketAddr::new(ip("b"), 8080));
    std::thread::sleep(Duration::from_millis(100));
    let o = h.weft(&[
        "sandbox",
        "exec",
        "a",
        "--",
        "bash",
        "-c",
        "echo hi >/dev/tcp/b/8080",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(server.join().unwrap().map(|p| p.ip()), Some(ip("a")));

    // A name on a network the asker is not on: not answered from records (forwarded, and
    // the outside resolver does not know it); the positive control on its own network.
    assert_eq!(getent(&h, "a", "x"), None);
    assert_eq!(getent(&h, "y", "x"), Some(format!("{} x", ip("x"))));
    assert_eq!(ask(&ka, gw, "x", false).0, ResponseCode::NXDomain);
    // A legacy link on a user-defined network: its alias resolves for the linking sandbox
    // only (asked of the resolver directly, not through /etc/hosts).
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "--link",
        "b:pal",
        "lk",
    ]);
    assert_eq!(ask(&key(&h, "lk"), gw, "pal", false).1, vec![ip("b")]);
    assert_eq!(ask(&ka, gw, "pal", false).0, ResponseCode::NXDomain);
    h.weft_ok(&["sandbox", "rm", "lk"]);

    // Forwarded: a name only the outside resolver knows, UDP and TCP, loopback servers of
    // the host's resolv.conf skipped.
    assert_eq!(
        getent(&h, "a", "outside.test"),
        Some(format!("{OUTSIDE_ADDR} outside.test"))
    );
    assert_eq!(
        ask(&ka, gw, "outside.test", true).1,
        vec![IpAddr::V4(OUTSIDE_ADDR)]
    );
    // The host's resolv.conf is followed when it changes (read again by the resolver task,
    // not on every query): a server with nothing on port 53 (the host's own end of the
    // outside link) makes the same query fail, and the old file makes it work again.
    let restored = std::fs::read_to_string(&resolv).unwrap();
    std::fs::write(&resolv, "nameserver 10.72.9.1\n").unwrap();
    let t = Instant::now();
    while ask(&ka, gw, "outside.test", false).0 != ResponseCode::ServFail {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the changed resolv.conf was not followed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&resolv, restored).unwrap();
    let t = Instant::now();
    while ask(&ka, gw, "outside.test", false).1 != vec![IpAddr::V4(OUTSIDE_ADDR)] {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the restored resolv.conf was not followed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only the network's own sandboxes are answered (the query above is the control): a
    // sandbox on another network and a machine on the LAN asking this resolver are refused,
    // so it is no open resolver.
    assert_eq!(
        ask(&key(&h, "x"), gw, "outside.test", false).0,
        ResponseCode::Refused
    );
    run_ok(
        &out,
        "ip",
        &["route", "add", "10.72.0.0/24", "via", "10.72.9.1"],
    );
    assert_eq!(
        ask(&out, gw, "outside.test", false).0,
        ResponseCode::Refused
    );
    assert_eq!(ask(&out, gw, "a", true).0, ResponseCode::Refused);

    // An internal network: its sandboxes find each other, but outside names are not
    // forwarded (no way out, no outside names).
    h.weft_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.72.2.0/24",
        "inner",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "inner", "i1"]);
    h.weft_ok(&["sandbox", "create", "--network", "inner", "i2"]);
    let igw: IpAddr = "10.72.2.1".parse().unwrap();
    assert_eq!(ask(&key(&h, "i1"), igw, "i2", false).1, vec![ip("i2")]);
    assert_eq!(
        ask(&key(&h, "i1"), igw, "outside.test", false).0,
        ResponseCode::ServFail
    );

    // A removed sandbox stops resolving at once.
    h.weft_ok(&["sandbox", "rm", "b"]);
    let t = Instant::now();
    let ka2 = ka.clone();
    let r = std::panic::catch_unwind(move || ask(&ka2, gw, "b", false));
    let Ok(r) = r else {
        panic!(
            "no answer after the removal; daemon log:\n{}",
            _d.log_text()
        );
    };
    assert_eq!(r.0, ResponseCode::NXDomain);
    assert!(t.elapsed() < Duration::from_secs(1));

    // The default bridge network: no name resolution; resolv.conf is the host's without its
    // loopback server, with --dns / --dns-search / --dns-option as given.
    h.weft_ok(&["sandbox", "create", "p"]);
    h.weft_ok(&["sandbox", "create", "q"]);
    let rc =
        String::from_utf8_lossy(&exec(&h, "p", &["cat", "/etc/resolv.conf"]).stdout).into_owned();
    assert_eq!(
        rc,
        "# Generated by weft.\nnameserver 10.72.9.2\nsearch example.internal\n"
    );
    assert_eq!(
        getent(&h, "p", "q"),
        None,
        "the default bridge resolves no names"
    );
    assert_eq!(
        getent(&h, "p", "outside.test"),
        Some(format!("{OUTSIDE_ADDR} outside.test"))
    );
    h.weft_ok(&[
        "sandbox",
        "create",
        "--dns",
        "10.72.9.2",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "r",
    ]);
    let rc =
        String::from_utf8_lossy(&exec(&h, "r", &["cat", "/etc/resolv.conf"]).stdout).into_owned();
    assert_eq!(
        rc,
        "# Generated by weft.\nnameserver 10.72.9.2\nsearch corp.example\noptions ndots:2\n"
    );
    // The hostname (default: the short id) and /etc/hosts, as Docker writes them.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "--hostname",
        "web1.corp",
        "named",
    ]);
    let out = |sb: &str, args: &[&str]| {
        String::from_utf8_lossy(&exec(&h, sb, args).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(out("named", &["hostname"]), "web1.corp");
    let hosts = out("named", &["cat", "/etc/hosts"]);
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(
        hosts.ends_with(&format!("{}\tweb1.corp", ip("named"))),
        "{hosts}"
    );
    assert_eq!(
        getent(&h, "named", "web1.corp"),
        Some(format!("{} web1.corp", ip("named")))
    );
    let a_id = h.engine().sandbox("a").unwrap().id;
    assert_eq!(out("a", &["hostname"]), a_id[..12]);
    assert!(h
        .weft_err(&["sandbox", "create", "--hostname", "bad_name!", "bad"])
        .contains("invalid hostname \"bad_name!\""));
    let hc = &json(&h.weft_ok(&["sandbox", "inspect", "r"]))[0]["HostConfig"];
    assert_eq!(hc["Dns"], serde_json::json!(["10.72.9.2"]));
    assert_eq!(hc["DnsSearch"], serde_json::json!(["corp.example"]));
    assert_eq!(hc["DnsOptions"], serde_json::json!(["ndots:2"]));
    // The same files on the host, for a runtime to bind into its container (Docker's
    // ResolvConfPath, HostsPath, HostnamePath); they go with the sandbox.
    let v = &json(&h.weft_ok(&["sandbox", "inspect", "named"]))[0];
    let path = |k: &str| std::path::PathBuf::from(v[k].as_str().unwrap());
    let read = |k: &str| std::fs::read_to_string(path(k)).unwrap();
    let cat =
        |f: &str| String::from_utf8_lossy(&exec(&h, "named", &["cat", f]).stdout).into_owned();
    assert_eq!(read("ResolvConfPath"), cat("/etc/resolv.conf"));
    let gw = h.engine().network("web").unwrap().pools[0].gateway.unwrap();
    assert!(read("ResolvConfPath").contains(&format!("nameserver {gw}\n")));
    assert_eq!(read("HostsPath"), cat("/etc/hosts"));
    assert_eq!(read("HostnamePath"), "web1.corp\n");
    let dir = path("HostsPath").parent().unwrap().to_path_buf();
    h.weft_ok(&["sandbox", "rm", "named"]);
    assert!(!dir.exists(), "{} outlived its sandbox", dir.display());
    h.weft_ok(&["system", "check"]);
}

#[test]
fn legacy_links_give_hosts_entries_and_environment() {
    let h = TestHost::new("links");
    h.weft_ok(&[
        "sandbox", "create", "--expose", "5432", "--expose", "9000/udp", "db",
    ]);
    h.weft_ok(&["sandbox", "create", "--link", "db:pg", "web"]);
    let db_ip = sandbox_ip(&h, "db");
    let db_id = h.engine().sandbox("db").unwrap().id;
    let out = |args: &[&str]| {
        String::from_utf8_lossy(&exec(&h, "web", args).stdout)
            .trim()
            .to_string()
    };
    let hosts = out(&["cat", "/etc/hosts"]);
    assert!(
        hosts.ends_with(&format!("{db_ip}\tpg {} db", &db_id[..12])),
        "{hosts}"
    );
    assert_eq!(
        getent(&h, "web", "pg"),
        Some(format!("{db_ip} pg {} db", &db_id[..12]))
    );
    assert_eq!(
        out(&["sh", "-c", "echo $PG_NAME $PG_PORT $PG_PORT_5432_TCP_ADDR $PG_PORT_5432_TCP_PORT $PG_PORT_9000_UDP"]),
        format!("/web/pg tcp://{db_ip}:5432 {db_ip} 5432 udp://{db_ip}:9000")
    );
    // Without a link, none of it.
    h.weft_ok(&["sandbox", "create", "plain"]);
    assert_eq!(
        String::from_utf8_lossy(&exec(&h, "plain", &["sh", "-c", "echo x$PG_NAME"]).stdout).trim(),
        "x"
    );
    // A link to a sandbox that does not exist: Docker's message, nothing made.
    assert_eq!(
        h.weft_err(&["sandbox", "create", "--link", "nosuch", "web2"]),
        "Error: could not get container for nosuch: No such container: nosuch"
    );
    assert!(h.engine().sandbox("web2").is_err());
    // On the default bridge, a target elsewhere: dockerd's message.
    h.weft_ok(&["network", "create", "elsewhere"]);
    h.weft_ok(&["sandbox", "create", "--network", "elsewhere", "far"]);
    assert_eq!(
        h.weft_err(&["sandbox", "create", "--link", "far", "web3"]),
        "Error: Cannot link to /far, as it does not belong to the default network"
    );
    assert!(h.engine().sandbox("web3").is_err());
    h.weft_ok(&["system", "check"]);
}

#[test]
fn default_bridge_with_icc_off_lets_only_links_through() {
    // dockerd --icc=false: the default bridge's sandboxes do not talk, but a legacy link
    // opens the target's exposed ports to the linking sandbox.
    let h = TestHost::new("deficc");
    let icc = |h: &TestHost| {
        h.engine().network("bridge").unwrap().options["com.docker.network.bridge.enable_icc"]
            .clone()
    };
    assert_eq!(icc(&h), "true");
    let d = h.daemon_env(&[("WEFT_ICC", "false")]);
    assert_eq!(icc(&h), "false");
    h.weft_ok(&["sandbox", "create", "--expose", "5432", "db"]);
    h.weft_ok(&["sandbox", "create", "--link", "db:pg", "web"]);
    h.weft_ok(&["sandbox", "create", "other"]);
    let db = SocketAddr::new(sandbox_ip(&h, "db"), 5432);
    let (kdb, kweb, kother) = (key(&h, "db"), key(&h, "web"), key(&h, "other"));
    assert!(tcp_exchange(&kweb, &kdb, db).is_some(), "web → pg:5432");
    assert!(tcp_exchange(&kother, &kdb, db).is_none(), "other → db:5432");
    // Asked to turn it on while sandboxes are on the bridge: it stays off (and says so).
    d.stop();
    let d = h.daemon_env(&[("WEFT_ICC", "true")]);
    assert_eq!(icc(&h), "false");
    assert!(d.log_text().contains("ICC stays false"), "{}", d.log_text());
    assert!(tcp_exchange(&kother, &kdb, db).is_none());
    h.weft_ok(&["sandbox", "rm", "db", "web", "other"]);
    d.stop();
    let _d = h.daemon_env(&[("WEFT_ICC", "true")]);
    assert_eq!(
        icc(&h),
        "true",
        "an empty default bridge takes the new setting"
    );
    h.weft_ok(&["system", "check"]);
}

#[test]
fn a_sandbox_cannot_exhaust_the_resolver() {
    // Held TCP connections and a flood of queries to a dead upstream must not take the
    // daemon's descriptors: the resolver keeps MAX_TCP_PER_PEER connections from one address
    // and MAX_FORWARDS forwards at once, answering the rest at once.
    let h = TestHost::new("dnsflood");
    let _d = h.daemon();
    h.weft_ok(&["network", "create", "--subnet", "10.73.0.0/24", "web"]);
    h.weft_ok(&["sandbox", "create", "--network", "web", "a"]);
    // 10.73.0.250 answers nothing (no one has it): every forward waits its whole timeout.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "--dns",
        "10.73.0.250",
        "flood",
    ]);
    let gw: IpAddr = "10.73.0.1".parse().unwrap();
    let kf = key(&h, "flood");
    // 40 connections held open: the resolver keeps 8 and closes the rest.
    let open = in_ns(&kf, move || {
        use std::io::Read;
        let conns: Vec<std::net::TcpStream> = (0..40)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddr::new(gw, 53),
                    Duration::from_secs(2),
                )
                .ok()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        conns
            .into_iter()
            .filter_map(|mut c| {
                c.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut b = [0u8; 1];
                // Closed by the server: end of stream (or a reset); open: a timeout.
                match c.read(&mut b) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        Some(c)
                    }
                    _ => None,
                }
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(open.len(), weft::dns::MAX_TCP_PER_PEER, "connections kept");
    // Another sandbox is still served over TCP while they are held.
    assert_eq!(
        ask(&key(&h, "a"), gw, "flood", true).1,
        vec![sandbox_ip(&h, "flood")]
    );
    drop(open);
    // 400 outside names at once to the dead upstream: beyond MAX_FORWARDS, SERVFAIL at once.
    let servfails = in_ns(&kf, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..400u16 {
            let mut m = Message::query();
            m.metadata.id = i;
            m.add_query(Query::query(
                Name::from_ascii(format!("n{i}.example.")).unwrap(),
                RecordType::A,
            ));
            s.send_to(&m.to_vec().unwrap(), (gw, 53)).unwrap();
            // Paced, so that no socket buffer on the way drops any.
            std::thread::sleep(Duration::from_micros(500));
        }
        s.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        let mut n = 0;
        let mut b = [0u8; 4096];
        while let Ok(k) = s.recv(&mut b) {
            if Message::from_vec(&b[..k])
                .is_ok_and(|r| r.metadata.response_code == ResponseCode::ServFail)
            {
                n += 1;
            }
        }
        n
    })
    .join()
    .unwrap();
    assert!(
        servfails >= 400 - weft::dns::MAX_FORWARDS,
        "{servfails} immediate SERVFAILs"
    );
    assert!(
        servfails < 400,
        "the first {} wait for the upstream",
        weft::dns::MAX_FORWARDS
    );
    // Names of the network still resolve meanwhile.
    assert_eq!(
        ask(&key(&h, "a"), gw, "flood", false).1,
        vec![sandbox_ip(&h, "flood")]
    );
}

#[test]
fn a_published_port_53_does_not_take_the_networks_dns() {
    // A sandbox publishing port 53 on every address (made before the daemon, so nothing held
    // the port then) must not receive its neighbours' queries to the gateway's resolver.
    let h = TestHost::new("dns53");
    let out = h.outside("d53out", "10.74.9.1", "10.74.9.2");
    h.weft_ok(&["network", "create", "--subnet", "10.74.0.0/24", "web"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "web",
        "-p",
        "53:53/udp",
        "evil",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "web", "victim"]);
    let _d = h.daemon();
    let gw: IpAddr = "10.74.0.1".parse().unwrap();
    let evil = in_ns(&key(&h, "evil"), || {
        let s = UdpSocket::bind("0.0.0.0:53").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut from = Vec::new();
        let mut b = [0u8; 512];
        while let Ok((_, p)) = s.recv_from(&mut b) {
            from.push(p.ip());
        }
        from
    });
    std::thread::sleep(Duration::from_millis(100));
    let (code, addrs) = ask(&key(&h, "victim"), gw, "evil", false);
    assert_eq!(code, ResponseCode::NoError);
    assert_eq!(
        addrs,
        vec![sandbox_ip(&h, "evil")],
        "weft's resolver answered"
    );
    // Control: the published port itself works, from outside.
    in_ns(&out, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"hello", ("10.74.9.1", 53)).unwrap();
    })
    .join()
    .unwrap();
    let from = evil.join().unwrap();
    assert!(
        from.iter()
            .all(|ip| *ip != sandbox_ip(&h, "victim") && *ip != gw),
        "the victim's query reached the sandbox: {from:?}"
    );
    assert_eq!(
        from.len(),
        1,
        "control: the outside datagram arrives: {from:?}"
    );
}

/// Every file under `dir` whose path names `id`.
/// A sandbox in a namespace a runtime gave (`--netns`: Podman, a CNI runtime) gets its /etc
/// files from that runtime, as with netavark: the daemon writes none for it until they are
/// asked for (`sandbox exec`), and keeps them current from then on. Its own sandboxes get
/// theirs at once.
#[test]
fn a_runtime_s_namespace_gets_weft_s_etc_files_only_once_asked() {
    let h = TestHost::new("rtfiles");
    let _d = h.daemon();
    h.weft_ok(&["network", "create", "--subnet", "10.65.0.0/24", "rf"]);
    h.weft_ok(&["network", "create", "--subnet", "10.64.0.0/24", "rf2"]);
    let ns = h.make_ns("given");
    let ns = ns.to_str().unwrap();
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "rf",
        "--netns",
        ns,
        "given",
    ]);
    h.weft_ok(&["network", "connect", "rf2", "given"]);
    h.weft_ok(&["sandbox", "create", "--network", "rf", "own"]);
    let given = h.engine().sandbox("given").unwrap().id;
    let own = h.engine().sandbox("own").unwrap().id;
    let hosts_of = |id: &str| {
        files_naming(&h.dir, id)
            .into_iter()
            .find(|p| p.ends_with("hosts"))
            .and_then(|p| std::fs::read_to_string(p).ok())
    };
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Control: the daemon writes the files of a sandbox in a namespace of its own (made after
    // the given one's create and connect, whose writes would have come first).
    until("own's files were not written", &|| {
        hosts_of(&own).is_some_and(|t| t.contains("10.65.0."))
    });
    assert_eq!(
        files_naming(&h.dir, &given),
        Vec::<std::path::PathBuf>::new(),
        "files written for a runtime's namespace"
    );
    // Asked for, they are written, then kept current.
    let o = exec(&h, "given", &["cat", "/etc/hosts"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("10.65.0.") && text.contains("10.64.0."),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    h.weft_ok(&["network", "disconnect", "rf2", "given"]);
    until("given's hosts not kept current", &|| {
        hosts_of(&given).is_some_and(|t| t.contains("10.65.0.") && !t.contains("10.64.0."))
    });
    h.weft_ok(&["sandbox", "rm", "given", "own"]);
    assert_eq!(
        files_naming(&h.dir, &given),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(files_naming(&h.dir, &own), Vec::<std::path::PathBuf>::new());
}

fn files_naming(dir: &std::path::Path, id: &str) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            if p.to_string_lossy().contains(id) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_sandboxs_etc_files_go_with_it() {
    let h = TestHost::new("etcfiles");
    h.weft_ok(&["network", "create", "--subnet", "10.66.0.0/24", "ef"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "ef",
        "--hostname",
        "one",
        "s1",
    ]);
    let id = h.engine().sandbox("s1").unwrap().id;
    // exec writes them (in-process), inspect writes them (Docker's ResolvConfPath…).
    let o = exec(&h, "s1", &["cat", "/etc/resolv.conf", "/etc/hosts"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    h.weft_ok(&["sandbox", "inspect", "s1"]);
    let written = files_naming(&h.dir, &id);
    assert!(
        written.iter().any(|p| p.ends_with("resolv.conf"))
            && written.iter().any(|p| p.ends_with("hosts")),
        "control: the files were written: {written:?}"
    );
    h.weft_ok(&["sandbox", "rm", "s1"]);
    assert_eq!(
        files_naming(&h.dir, &id),
        Vec::<std::path::PathBuf>::new(),
        "left behind"
    );
}
