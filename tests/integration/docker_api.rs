//! The Docker Engine API: the real `docker` CLI (and docker-py) against `weft daemon` in a
//! throwaway host namespace — the commands of Docker's network guide with the output dockerd
//! gives, each error of the table in ../shared/DOCKER-API.md, and malformed requests.

use std::process::Command;

use crate::harness::*;

fn is_id(s: &str) -> bool {
    let s = s.trim();
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

#[test]
fn the_docker_cli_drives_the_network_guide() {
    let h = TestHost::new("dkguide");
    let d = h.daemon();
    let tag = unique("g");
    let lan = format!("lan{}", &tag[tag.len() - 6..]);
    h.ip(
        &h.host_ns,
        &[
            "link",
            "add",
            &lan,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{lan}p"),
        ],
    );
    h.ip(&h.host_ns, &["link", "set", &lan, "up"]);

    // `docker network ls` on a fresh engine: the three predefined networks.
    let ls = d.docker_ok(&["network", "ls"]);
    let rows: Vec<&str> = ls.lines().collect();
    assert_eq!(rows[0], "NETWORK ID     NAME      DRIVER    SCOPE", "{ls}");
    let names: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(names, ["bridge", "host", "none"], "{ls}");

    let dev = d.docker_ok(&["network", "create", "dev"]);
    assert!(is_id(&dev), "{dev}");
    let yb = d.docker_ok(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet=172.30.0.0/16",
        "--ip-range=172.30.1.0/24",
        "--gateway=172.30.1.254",
        "--label=trial-bridge",
        "--opt",
        "com.docker.network.driver.mtu=9000",
        "your-bridge",
    ]);
    assert!(is_id(&yb));
    assert_eq!(
        d.docker_ok(&["network", "inspect", "-f", "{{json .IPAM}}", "your-bridge"])
            .trim(),
        r#"{"Driver":"default","Options":{},"Config":[{"Subnet":"172.30.0.0/16","IPRange":"172.30.1.0/24","Gateway":"172.30.1.254"}]}"#
    );
    assert_eq!(
        d.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.Driver}} {{.Scope}} {{json .Labels}} {{json .Options}} {{.Internal}}",
            "your-bridge"
        ])
        .trim(),
        r#"your-bridge bridge local {"trial-bridge":""} {"com.docker.network.driver.mtu":"9000"} false"#
    );
    // Same object, by full id, id prefix and name; `docker inspect` finds it too.
    let by_id = d.docker_ok(&["network", "inspect", yb.trim()]);
    let by_prefix = d.docker_ok(&["network", "inspect", &yb[..12]]);
    assert_eq!(by_id, by_prefix);
    assert_eq!(json(&by_id)[0]["Id"], yb.trim());
    assert_eq!(
        d.docker_ok(&["inspect", "-f", "{{.Id}}", "your-bridge"])
            .trim(),
        yb.trim()
    );
    // The kernel has the bridge with the gateway, at MTU 9000.
    let br = format!("br-{}", &yb[..12]);
    let show = h
        .ip_lines(&h.host_ns, &["-o", "addr", "show", "dev", &br])
        .join("\n");
    assert!(show.contains("172.30.1.254/16"), "{show}");

    // Sandboxes made with weft are the containers docker sees.
    h.weft_ok(&["sandbox", "create", "--network", "dev", "busybox-1"]);
    h.weft_ok(&["sandbox", "create", "--network", "dev", "busybox-2"]);
    let ps = d.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    let mut ps: Vec<&str> = ps.lines().collect();
    ps.sort();
    assert_eq!(ps, ["busybox-1 Up", "busybox-2 Up"]);

    d.docker_ok(&[
        "network",
        "connect",
        "--alias",
        "search",
        "--ip",
        "172.30.1.9",
        "your-bridge",
        "busybox-1",
    ]);
    let k1 = key(&h, "busybox-1");
    let addrs = h.ip_lines(&k1, &["-o", "-4", "addr"]).join("\n");
    assert!(addrs.contains("172.30.1.9/16"), "{addrs}");
    let nets = json(&d.docker_ok(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        "busybox-1",
    ]));
    assert_eq!(nets["your-bridge"]["IPAddress"], "172.30.1.9");
    assert_eq!(
        nets["your-bridge"]["IPAMConfig"]["IPv4Address"],
        "172.30.1.9"
    );
    assert_eq!(
        nets["your-bridge"]["Aliases"],
        serde_json::json!(["search"])
    );
    assert_eq!(nets["your-bridge"]["Gateway"], "172.30.1.254");
    assert!(nets["dev"]["IPAddress"]
        .as_str()
        .unwrap()
        .starts_with("172."));
    // Published ports as `docker port` reads them.
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "dev",
        "-p",
        "8088:80",
        "web-1",
    ]);
    assert_eq!(d.docker_ok(&["port", "web-1"]), "80/tcp -> 0.0.0.0:8088\n");
    assert_eq!(d.docker_ok(&["port", "web-1", "80"]), "0.0.0.0:8088\n");
    h.weft_ok(&["sandbox", "rm", "web-1"]);
    let whole = json(&d.docker_ok(&["inspect", "busybox-1"]));
    assert_eq!(whole[0]["Name"], "/busybox-1");
    assert_eq!(whole[0]["State"]["Running"], true);
    let rc = d.docker_ok(&["inspect", "-f", "{{.ResolvConfPath}}", "busybox-1"]);
    let rc = std::fs::read_to_string(rc.trim()).unwrap();
    assert!(rc.starts_with("# Generated by weft.\nnameserver "), "{rc}");
    assert_eq!(
        d.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
            "your-bridge"
        ])
        .trim(),
        "busybox-1 172.30.1.9/16"
    );

    d.docker_ok(&["network", "disconnect", "your-bridge", "busybox-1"]);
    let addrs = h.ip_lines(&k1, &["-o", "-4", "addr"]).join("\n");
    assert!(!addrs.contains("172.30.1.9"), "{addrs}");
    assert_eq!(
        d.docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{len .Containers}}",
            "your-bridge"
        ])
        .trim(),
        "0"
    );
    assert_eq!(
        d.docker_ok(&["network", "rm", "your-bridge"]),
        "your-bridge\n"
    );
    assert!(
        !h.host_links().iter().any(|l| l == &br),
        "the bridge stayed"
    );

    // Internal and macvlan networks, then prune: the unused ones go, dev (in use) stays.
    let internal = d.docker_ok(&["network", "create", "--internal", "isolated"]);
    assert!(is_id(&internal));
    assert_eq!(
        d.docker_ok(&["network", "inspect", "-f", "{{.Internal}}", "isolated"])
            .trim(),
        "true"
    );
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.93.0/24",
        "-o",
        &format!("parent={lan}"),
        "my-macvlan",
    ]);
    assert_eq!(
        d.docker_ok(&[
            "network",
            "ls",
            "--filter",
            "driver=macvlan",
            "--format",
            "{{.Name}}"
        ]),
        "my-macvlan\n"
    );
    assert_eq!(
        d.docker_ok(&["network", "prune", "-f"]),
        "Deleted Networks:\nisolated\nmy-macvlan\n\n"
    );
    let ls = d.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls, "bridge\ndev\nhost\nnone\n");
    // docker's -f on rm forgives a missing network (404), not other errors.
    let o = d.docker(&["network", "rm", "-f", "nosuch"]);
    assert!(o.status.success(), "{o:?}");
    h.weft_ok(&["system", "check"]);
}

#[test]
fn every_error_of_the_table_reaches_the_docker_cli_as_dockerd_says_it() {
    let h = TestHost::new("dkerr");
    let d = h.daemon();
    d.docker_ok(&["network", "create", "dev"]);
    d.docker_ok(&["network", "create", "--subnet", "172.31.0.0/24", "yb"]);
    h.weft_ok(&["sandbox", "create", "--network", "dev", "busybox-1"]);
    h.weft_ok(&["sandbox", "create", "--network", "host", "hostbox"]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "yb",
        "--ip",
        "172.31.0.9",
        "holder",
    ]);
    let b1 = h.engine().sandbox("busybox-1").unwrap().id;
    let e = "Error response from daemon: ";
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["network", "rm", "nosuch"], format!("{e}network nosuch not found\nexit status 1")),
        (vec!["network", "create", "dev"], format!("{e}network with name dev already exists")),
        (vec!["network", "create", "bridge"], format!("{e}operation is not permitted on predefined bridge network")),
        (vec!["network", "create", "-d", "nosuchdriver", "x"], format!("{e}plugin \"nosuchdriver\" not found")),
        (vec!["network", "create", "--subnet", "172.31.0.128/25", "x"], format!("{e}invalid pool request: Pool overlaps with other one on this address space")),
        (vec!["network", "rm", "bridge"], format!("{e}bridge is a pre-defined network and cannot be removed\nexit status 1")),
        (vec!["network", "rm", "dev"], format!("{e}error while removing network: network dev has active endpoints (busybox-1)\nexit status 1")),
        (vec!["network", "connect", "dev", "nosuchctr"], format!("{e}No such container: nosuchctr")),
        (vec!["network", "connect", "host", "busybox-1"], format!("{e}cannot connect container to host network - container must be created in host network mode")),
        (vec!["network", "connect", "yb", "hostbox"], format!("{e}container sharing network namespace with another container or host cannot be connected to any other network")),
        (vec!["network", "connect", "--ip", "172.18.5.5", "dev", "holder"], format!("{e}invalid endpoint settings:\nuser specified IP address is supported only when connecting to networks with user configured subnets")),
        (vec!["network", "connect", "--ip", "10.0.0.1", "yb", "busybox-1"], format!("{e}invalid endpoint settings:\nno configured subnet or ip-range contain the IP address 10.0.0.1")),
        (vec!["network", "connect", "--ip", "172.17.0.9", "bridge", "busybox-1"], format!("{e}invalid endpoint settings:\nuser specified IP address is supported on user defined networks only")),
        (vec!["network", "connect", "--alias", "a", "bridge", "busybox-1"], format!("{e}invalid endpoint settings:\nnetwork-scoped alias is supported only for containers in user defined networks")),
        (vec!["network", "connect", "dev", "busybox-1"], format!("{e}endpoint with name busybox-1 already exists in network dev")),
        (vec!["network", "connect", "--ip", "172.31.0.9", "yb", "busybox-1"], format!("{e}Address already in use")),
        (vec!["network", "disconnect", "yb", "busybox-1"], format!("{e}container {b1} is not connected to network yb")),
        (vec!["network", "disconnect", "host", "hostbox"], format!("{e}cannot disconnect container from host network - container was created in host network mode")),
        (vec!["network", "ls", "--filter", "foo=bar"], format!("{e}invalid filter 'foo'")),
        (vec!["network", "prune", "-f", "--filter", "foo=bar"], format!("{e}invalid filter 'foo'")),
    ];
    let before = h.weft_ok(&["network", "ls"]);
    let mut wrong = vec![];
    for (args, want) in &cases {
        let got = d.docker_err(args);
        if &got != want {
            wrong.push(format!(
                "docker {}:\n  got  {got:?}\n  want {want:?}",
                args.join(" ")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        h.weft_ok(&["network", "ls"]),
        before,
        "an error changed something"
    );
    // The statuses the CLI acts on: 404 for missing objects (so `rm -f` and `inspect` go on).
    for (path, status) in [
        ("/v1.50/networks/nosuch", 404),
        ("/v1.50/containers/nosuch/json", 404),
        ("/v1.50/images/nosuch/json", 404),
        ("/v1.50/networks/dev", 200),
    ] {
        let (s, head, body) = d.http(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(s, status, "{path}: {head}\n{body}");
        if s == 404 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/json\r\n")
                    || head
                        .to_ascii_lowercase()
                        .ends_with("content-type: application/json"),
                "{head}"
            );
        }
    }
    assert_eq!(
        d.docker_err(&["inspect", "nosuch"]),
        "Error: No such object: nosuch"
    );
    // An ambiguous ID prefix: among 17 networks two share a first hex digit (pigeonhole).
    let mut firsts = std::collections::BTreeMap::<char, usize>::new();
    let mut made = 0;
    let dup = loop {
        let ids = d.docker_ok(&["network", "ls", "-q", "--no-trunc"]);
        for id in ids.lines() {
            *firsts.entry(id.chars().next().unwrap()).or_default() += 1;
        }
        if let Some((c, n)) = firsts.iter().find(|(_, n)| **n > 1) {
            break (*c, *n);
        }
        firsts.clear();
        d.docker_ok(&["network", "create", &format!("amb{made}")]);
        made += 1;
        assert!(made <= 17, "no shared first digit among {ids}");
    };
    let prefix = dup.0.to_string();
    assert_eq!(
        d.docker_err(&["network", "inspect", &prefix]).lines().last().unwrap(),
        format!("Error response from daemon: network {prefix} is ambiguous ({} matches found based on ID prefix)", dup.1)
    );
    let (s, _, _) =
        d.http(format!("GET /v1.50/networks/{prefix} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(s, 400);
    for i in 0..made {
        d.docker_ok(&["network", "rm", &format!("amb{i}")]);
    }
    h.weft_ok(&["system", "check"]);
}

#[test]
fn docker_py_drives_the_same_api() {
    let h = TestHost::new("dkpy");
    let d = h.daemon();
    h.weft_ok(&["sandbox", "create", "pybox"]);
    let script = r#"
import sys, docker
c = docker.DockerClient(base_url="unix://" + sys.argv[1])
ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.77.0.0/24", gateway="10.77.0.1")])
n = c.networks.create("pynet", driver="bridge", ipam=ipam, labels={"team": "py"})
print("created", len(n.id))
print("by label", [x.name for x in c.networks.list(filters={"label": "team=py"})])
print("by name", [x.name for x in c.networks.list(names=["pynet"])])
c.api.connect_container_to_network("pybox", "pynet", aliases=["db"], ipv4_address="10.77.0.50")
n.reload()
print("containers", [v["IPv4Address"] for v in n.attrs["Containers"].values()])
c.api.disconnect_container_from_network("pybox", "pynet")
n.reload()
print("after", len(n.attrs["Containers"]))
n.remove()
try:
    c.networks.get("pynet")
except docker.errors.NotFound as e:
    print("gone", e.explanation)
print("pruned", c.networks.prune())
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&d.sock)
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "docker-py failed (is the `docker` package installed? scripts/deps.sh installs it): {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out,
        "created 64\nby label ['pynet']\nby name ['pynet']\ncontainers ['10.77.0.50/24']\nafter 0\ngone network pynet not found\npruned {'NetworksDeleted': []}\n"
    );
}

#[test]
fn malformed_requests_get_a_4xx_change_nothing_and_the_daemon_serves_on() {
    let h = TestHost::new("dkbad");
    let d = h.daemon();
    d.docker_ok(&["network", "create", "--subnet", "10.66.0.0/24", "dev"]);
    h.weft_ok(&["sandbox", "create", "--network", "dev", "c1"]);
    let before = (
        h.weft_ok(&["network", "ls"]),
        h.host_links(),
        h.nft_ruleset(),
    );
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let long = "n".repeat(300);
    let big = format!(
        r#"{{"Name":"big","Labels":{{"x":"{}"}}}}"#,
        "a".repeat(2 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad JSON", post("/v1.50/networks/create", "{\"Name\":"), 400, "invalid JSON body"),
        ("not an object", post("/v1.50/networks/create", "[1,2]"), 400, "invalid JSON body"),
        ("wrong type", post("/v1.50/networks/create", r#"{"Name":5}"#), 400, "invalid type"),
        ("wrong type deep", post("/v1.50/networks/create", r#"{"Name":"x","Internal":"yes"}"#), 400, "invalid type"),
        ("unknown field", post("/v1.50/networks/create", r#"{"Name":"x","Colour":"red"}"#), 400, "unknown field `Colour`"),
        ("no name", post("/v1.50/networks/create", r#"{"Driver":"bridge"}"#), 400, "missing field `Name`"),
        ("empty body", post("/v1.50/networks/create", ""), 400, "a JSON request body is required"),
        ("too large", post("/v1.50/networks/create", &big), 400, "request body too large"),
        ("bad CIDR", post("/v1.50/networks/create", r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"10.0.0.0/33"}]}}"#), 400, "invalid subnet \"10.0.0.0/33\""),
        ("IPv6 zone", post("/v1.50/networks/create", r#"{"Name":"x","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fe80::/64%eth0"}]}}"#), 400, "zones"),
        ("gateway zone", post("/v1.50/networks/create", r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","Gateway":"10.9.0.1%lo"}]}}"#), 400, "zones"),
        ("name with /", post("/v1.50/networks/create", r#"{"Name":"a/b"}"#), 400, "invalid network name"),
        ("name of 300", post("/v1.50/networks/create", &format!(r#"{{"Name":"{long}"}}"#)), 400, "invalid network name"),
        ("option with newline", post("/v1.50/networks/create", r#"{"Name":"x","Options":{"com.docker.network.bridge.name":"br\nx"}}"#), 400, "control character"),
        ("label with newline", post("/v1.50/networks/create", r#"{"Name":"x","Labels":{"a\nb":"c"}}"#), 400, "control character"),
        ("unknown filter", b"GET /v1.50/networks?filters=%7B%22foo%22%3A%7B%22x%22%3Atrue%7D%7D HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "invalid filter 'foo'"),
        ("filters not JSON", b"GET /v1.50/networks?filters=%7B HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "invalid filters"),
        ("wrong content type", b"POST /v1.50/networks/create HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n{\"Name\":\"x\"}".to_vec(), 400, "Content-Type"),
        ("connect bad ip", post("/v1.50/networks/dev/connect", r#"{"Container":"c1","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.66.0.300"}}}"#), 400, "invalid IPv4 address"),
        ("connect unknown field", post("/v1.50/networks/dev/connect", r#"{"Container":"c1","Nope":1}"#), 400, "unknown field `Nope`"),
        ("disconnect wrong type", post("/v1.50/networks/dev/disconnect", r#"{"Container":"c1","Force":"yes"}"#), 400, "invalid type"),
        ("version too new", b"GET /v1.51/networks HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "client version 1.51 is too new. Maximum supported API version is 1.50"),
        ("version too old", b"GET /v1.12/networks HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400, "is too old. Minimum supported API version is 1.24"),
        ("unknown route", b"GET /v1.50/swarm HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404, "page not found"),
        ("wrong method", b"PUT /v1.50/networks/dev HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 404, "page not found"),
    ];
    let mut wrong = vec![];
    for (what, req, status, msg) in &cases {
        let (s, head, body) = d.http(req);
        let ok = s == *status
            && head
                .to_ascii_lowercase()
                .contains("content-type: application/json")
            && serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(|m| m.contains(msg)))
                == Some(true);
        if !ok {
            wrong.push(format!("{what}: want {status} {msg:?}, got {s} {body:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A slow client that never finishes its body holds only itself: others are served, and
    // it is cut off.
    let mut slow = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    use std::io::Write;
    slow.write_all(b"POST /v1.50/networks/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Na")
        .unwrap();
    let t = std::time::Instant::now();
    assert!(d.docker_ok(&["network", "ls"]).contains("dev"));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // And one that never finishes its headers.
    let mut slow2 = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    slow2
        .write_all(b"GET /v1.50/networks HTTP/1.1\r\nHo")
        .unwrap();
    assert!(d.docker_ok(&["network", "ls"]).contains("dev"));
    use std::io::Read;
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut got = String::new();
    let _ = slow.read_to_string(&mut got);
    assert!(
        got.starts_with("HTTP/1.1 400"),
        "the slow body got: {got:?}"
    );
    assert!(got.contains("did not arrive within"), "{got}");
    slow2
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut got2 = Vec::new();
    let r = slow2.read_to_end(&mut got2);
    assert!(r.is_ok(), "the slow header client was not cut off: {r:?}");

    assert_eq!(
        (
            h.weft_ok(&["network", "ls"]),
            h.host_links(),
            h.nft_ruleset()
        ),
        before,
        "a bad request changed something"
    );
    // Positive control: the same daemon still creates from a good request.
    let (s, _, body) = d.http(&post("/v1.50/networks/create", r#"{"Name":"good"}"#));
    assert_eq!(s, 201, "{body}");
    d.docker_ok(&["network", "rm", "good"]);
    h.weft_ok(&["system", "check"]);
}

#[test]
fn the_daemon_socket_is_root_only_one_daemon_per_state_and_state_survives_a_restart() {
    let h = TestHost::new("dkd");
    let d = h.daemon();
    let m = std::fs::metadata(&d.sock).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert_eq!((m.uid(), m.gid()), (0, 0));
    // A second daemon on the same state is refused, naming the first.
    let o = h.weft(&[
        "daemon",
        "--docker-socket",
        h.dir.join("other.sock").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another weft daemon (pid "), "{err}");
    assert!(!h.dir.join("other.sock").exists());

    d.docker_ok(&["network", "create", "--subnet", "10.67.0.0/24", "keep"]);
    h.weft_ok(&["sandbox", "create", "--network", "keep", "k1"]);
    h.weft_ok(&["sandbox", "create", "--network", "keep", "k2"]);
    let before = h.weft_ok(&["network", "inspect", "keep"]);
    let st = d.stop();
    assert!(st.success(), "the daemon's exit on SIGTERM: {st}");
    // Stopped: sandboxes keep working; the socket is gone.
    let ip2 = sandbox_ip(&h, "k2");
    assert!(
        ping(&key(&h, "k1"), ip2),
        "the sandboxes lost each other with the daemon stopped"
    );
    let d = h.daemon();
    let after = d.docker_ok(&["network", "inspect", "keep"]);
    assert_eq!(json(&after), json(&before));
    let events = std::thread::spawn({
        let sock = d.sock.clone();
        move || {
            Command::new(docker_cli())
                .args([
                    "events",
                    "--filter",
                    "type=network",
                    "--format",
                    "{{.Action}} {{.Actor.Attributes.name}}",
                    "--until",
                    &format!(
                        "{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs()
                            + 6
                    ),
                ])
                .env("DOCKER_HOST", format!("unix://{}", sock.display()))
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    d.docker_ok(&["network", "create", "ev"]);
    d.docker_ok(&["network", "connect", "ev", "k1"]);
    d.docker_ok(&["network", "disconnect", "ev", "k1"]);
    // A sandbox made on the network, then removed: connect, disconnect (as a container's
    // start and removal are on Docker).
    h.weft_ok(&["sandbox", "create", "--network", "ev", "k3"]);
    h.weft_ok(&["sandbox", "rm", "k3"]);
    d.docker_ok(&["network", "rm", "ev"]);
    let o = events.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "create ev\nconnect ev\ndisconnect ev\nconnect ev\ndisconnect ev\ndestroy ev\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(d);
    h.weft_ok(&["system", "check"]);
}

/// Poll `f` every 20 ms for up to 5 s; how long it took to become true.
fn until(what: &str, mut f: impl FnMut() -> bool) -> std::time::Duration {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{what}: not restored within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t.elapsed()
}

#[test]
fn the_daemon_restores_what_others_break_in_the_kernel() {
    let h = TestHost::new("dkheal");
    let d = h.daemon();
    let id = d.docker_ok(&["network", "create", "--subnet", "10.68.0.0/24", "heal"]);
    let br = format!("br-{}", &id[..12]);
    h.weft_ok(&[
        "sandbox",
        "create",
        "--network",
        "heal",
        "-p",
        "8080:80",
        "s1",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "heal", "s2"]);
    h.weft_ok(&["sandbox", "create", "--network", "heal", "s3"]);
    let (k1, ip2) = (key(&h, "s1"), sandbox_ip(&h, "s2"));
    assert!(ping(&k1, ip2), "positive control: s1 reaches s2");
    std::thread::sleep(std::time::Duration::from_millis(400));
    let rules = h.nft_ruleset();
    assert!(
        rules.contains("table inet weft") && rules.contains("tcp . 8080 : 80"),
        "{rules}"
    );

    // Someone flushes the whole ruleset.
    run_ok(&h.host_ns, "nft", &["flush", "ruleset"]);
    // The same content: each chain, set and map the same, wherever nft lists it (it lists
    // objects in the order they were made, and a repair makes them in its own order).
    let blocks = |r: &str| {
        let body: Vec<&str> = r.lines().filter(|l| *l != "}").collect();
        let mut b: Vec<String> = body
            .join("\n")
            .split("\n\n")
            .map(|x| x.trim().to_string())
            .collect();
        b.sort();
        b
    };
    let t_nft = until("the nftables ruleset", || {
        blocks(&h.nft_ruleset()) == blocks(&rules)
    });
    // Someone deletes the bridge (and it was there to delete: else the wait below proves
    // nothing).
    run_ok(&h.host_ns, "ip", &["link", "del", &br]);
    let t_br = until("the bridge", || {
        String::from_utf8_lossy(
            &h.ip(&h.host_ns, &["-o", "-4", "addr", "show", "dev", &br])
                .stdout,
        )
        .contains("10.68.0.1/24")
            && ping(&k1, ip2)
    });
    // Someone deletes s2's veth (its host end).
    let s2_id = h.engine().sandbox("s2").unwrap().id;
    let ep = h.engine().sandbox_endpoints(&s2_id).unwrap().remove(0);
    let veth = format!("veth{}", &ep.id[..11]);
    assert!(h.host_links().contains(&veth), "{:?}", h.host_links());
    run_ok(&h.host_ns, "ip", &["link", "del", &veth]);
    let t_veth = until("s2's veth", || ping(&k1, ip2));
    // s3's namespace goes away (its pin unmounted, no process in it): its endpoint goes.
    let k3 = key(&h, "s3");
    nix::mount::umount2(&k3, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let t_ns = until("s3's endpoint removed", || {
        h.engine().sandbox("s3").is_err()
    });
    eprintln!(
        "restored: nft flush in {t_nft:?}, bridge in {t_br:?}, veth in {t_veth:?}; dead sandbox removed in {t_ns:?}"
    );
    assert!(
        d.log_text().contains("restored missing: network heal"),
        "{}",
        d.log_text()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    h.weft_ok(&["system", "check"]);

    // Control: with the daemon stopped, the same break stays broken.
    assert!(d.stop().success());
    run_ok(&h.host_ns, "ip", &["link", "del", &br]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !h.host_links().contains(&br),
        "something else restored the bridge"
    );
    let o = h.weft(&["system", "check"]);
    assert!(!o.status.success(), "check should see the missing bridge");
    h.weft_ok(&["system", "check", "--repair"]);
}

/// stdout, stderr and exit code of `weft ARGS` with `input` on stdin; in-process when
/// `embedded`, else through the daemon if one serves this host.
fn weft_run(h: &TestHost, args: &[&str], input: &str, embedded: bool) -> (String, String, i32) {
    use std::io::Write;
    let mut cmd = h.weft_cmd(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if embedded {
        cmd.env("WEFT_NO_DAEMON", "1");
    }
    let mut c = cmd.spawn().unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

#[test]
fn the_cli_prints_the_same_through_the_daemon_as_in_process() {
    let h = TestHost::new("dkdoor");
    h.weft_ok(&[
        "network",
        "create",
        "--subnet",
        "10.69.0.0/24",
        "--label",
        "a=b",
        "n1",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "n1", "s1"]);
    let commands: Vec<(Vec<&str>, &str)> = vec![
        (vec!["network", "ls"], ""),
        (vec!["network", "ls", "-q", "--no-trunc"], ""),
        (
            vec![
                "network",
                "ls",
                "--format",
                "{{.Name}} {{.Driver}} {{.Labels}}",
            ],
            "",
        ),
        (vec!["network", "ls", "--filter", "label=a=b"], ""),
        (vec!["network", "inspect", "n1"], ""),
        (
            vec!["network", "inspect", "-f", "{{json .IPAM}}", "n1", "nosuch"],
            "",
        ),
        (vec!["sandbox", "ls"], ""),
        (vec!["sandbox", "inspect", "s1"], ""),
        (vec!["system", "check"], ""),
        (vec!["plugin", "ls"], ""),
        (vec!["network", "create", "n1"], ""),
        (vec!["network", "rm", "bridge", "nosuch"], ""),
        (vec!["network", "connect", "n1", "nosuch"], ""),
        (
            vec!["network", "create", "--subnet", "10.0.0.0/33", "x"],
            "",
        ),
        (
            vec!["network", "create", "--subnet", "10.69.0.0/25", "x"],
            "",
        ),
        (vec!["network", "ls", "--filter", "foo=bar"], ""),
        (vec!["network", "prune"], "n\n"),
        (vec!["sandbox", "rm", "nosuch"], ""),
    ];
    let embedded: Vec<_> = commands
        .iter()
        .map(|(a, i)| weft_run(&h, a, i, true))
        .collect();
    let d = h.daemon();
    let mut differ = vec![];
    for ((a, i), want) in commands.iter().zip(&embedded) {
        let got = weft_run(&h, a, i, false);
        if &got != want {
            differ.push(format!(
                "weft {}:\n  in-process {want:?}\n  daemon     {got:?}",
                a.join(" ")
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Changes, both ways: the same answers (ids aside), the same state.
    for embedded in [true, false] {
        let (out, err, code) = weft_run(&h, &["network", "create", "n2"], "", embedded);
        assert!(is_id(&out) && err.is_empty() && code == 0, "{out}{err}");
        assert_eq!(
            weft_run(&h, &["network", "rm", "n2"], "", embedded),
            ("n2\n".to_string(), String::new(), 0)
        );
    }
    // The daemon answered them: one request per command, but for the prune answered "n" at
    // the client's prompt (nothing sent), plus the create and rm.
    let served = d.log_text().matches("path=/weft/v1/run").count();
    assert_eq!(served, commands.len() - 1 + 2, "{}", d.log_text());
    // A socket left by a daemon that is gone: the CLI works in-process.
    drop(d);
    let sock = h.dir.join("run/weft.sock");
    let _stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(_stale);
    assert!(sock.exists());
    assert_eq!(weft_run(&h, &["network", "ls"], "", false), embedded[0]);
}

/// `.data.rel.ro` + `.got` of an executable: what its loader relocates (writes) at every start.
fn relocated_bytes(bin: &str) -> u64 {
    let o = std::process::Command::new("readelf")
        .args(["-S", "-W", bin])
        .output()
        .expect("readelf (binutils, which the Rust toolchain's linker needs)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let sum: u64 = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(']').nth(1)?.split_whitespace().collect();
            (f.first() == Some(&".data.rel.ro") || f.first() == Some(&".got"))
                .then(|| u64::from_str_radix(f[4], 16).unwrap())
        })
        .sum();
    assert!(sum > 0, "no .data.rel.ro/.got in {bin}:\n{text}");
    sum
}

#[test]
fn the_weft_front_serves_through_the_daemon_alone_and_runs_the_engine_otherwise() {
    let h = TestHost::new("front");
    let nowhere = h.dir.join("no-such-engine");
    let nowhere = nowhere.to_str().unwrap();
    // No daemon: the front runs the engine binary — so a missing one is the error, said so.
    let o = h.weft_env(&["network", "ls", "-q"], &[("WEFT_ENGINE", nowhere)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(127), "{err}");
    assert!(
        err.contains(&format!("cannot run weft's engine {nowhere}")) && err.contains("WEFT_ENGINE"),
        "{err}"
    );
    // Control: the engine next to the front runs it.
    assert_eq!(h.weft_ok(&["network", "ls", "-q"]).lines().count(), 3);
    // With a daemon, the front alone carries a command there and back: no engine needed.
    let d = h.daemon();
    let o = h.weft_env(
        &["network", "create", "viafront"],
        &[("WEFT_ENGINE", nowhere)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(h.weft_ok(&["network", "ls"]).contains("viafront"));
    assert_eq!(d.log_text().matches("path=/weft/v1/run").count(), 2);
    // The daemon parses what it is sent as the command line is parsed: what clap refuses
    // never reaches a command, and clap's structs as JSON (the door's old form, which skipped
    // clap's checks) are no command at all.
    let weft_sock = h.dir.join("run/weft.sock");
    let post = |body: &str| {
        let raw = format!(
            "POST /weft/v1/run HTTP/1.1\r\nHost: weft\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, _, body) = http_on(&weft_sock, raw.as_bytes()).expect("weft's socket");
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (status, c) = post(r#"{"args": ["network", "rm"]}"#);
    assert_eq!(status, 200, "{c}");
    assert!(
        c["code"] == 2 && c["stderr"].as_str().unwrap().contains("required") && c["stdout"] == "",
        "{c}"
    );
    let (status, c) = post(r#"{"Network": {"Rm": {"networks": []}}}"#);
    assert_eq!(status, 400, "{c}");
    // Control: the same door runs a command it is sent whole.
    let (status, c) = post(r#"{"args": ["network", "rm", "viafront"], "cwd": "/"}"#);
    assert!(
        status == 200 && c["code"] == 0 && c["stdout"] == "viafront\n",
        "{c}"
    );
    assert!(!h.weft_ok(&["network", "ls"]).contains("viafront"));
    // What only the engine does still goes to it, daemon or not.
    let o = h.weft_env(
        &["sandbox", "exec", "nosuch", "true"],
        &[("WEFT_ENGINE", nowhere)],
    );
    assert_eq!(o.status.code(), Some(127));
    drop(d);
    // What it is for: the front relocates a small part of what the engine binary does at start.
    let (front, engine) = (
        relocated_bytes(env!("CARGO_BIN_EXE_weft")),
        relocated_bytes(env!("CARGO_BIN_EXE_weft-engine")),
    );
    assert!(
        front * 8 < engine,
        "the front relocates {front} bytes at start, the engine {engine}: the front links engine code it should not"
    );
}

#[test]
fn a_plugin_installed_through_either_door_is_seen_by_the_other() {
    let h = TestHost::new("dkplug");
    let d = h.daemon();
    let routed = guest("routed");
    // In-process, beside the running daemon.
    let (out, err, code) = weft_run(
        &h,
        &[
            "plugin",
            "install",
            routed.to_str().unwrap(),
            "--name",
            "calico",
            "--grant-requested",
        ],
        "",
        true,
    );
    assert_eq!(code, 0, "{out}{err}");
    // The daemon uses it without a restart.
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "calico",
        "--subnet",
        "10.70.0.0/24",
        "r1",
    ]);
    h.weft_ok(&["sandbox", "create", "--network", "r1", "p1"]);
    d.docker_ok(&["network", "disconnect", "r1", "p1"]);
    d.docker_ok(&["network", "rm", "r1"]);
    // Removed in-process: the daemon no longer offers it.
    let (_, err, code) = weft_run(&h, &["plugin", "rm", "calico"], "", true);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        d.docker_err(&["network", "create", "-d", "calico", "r2"]),
        "Error response from daemon: plugin \"calico\" not found"
    );
    // And the other way: installed through the daemon, seen in-process.
    h.weft_ok(&[
        "plugin",
        "install",
        routed.to_str().unwrap(),
        "--name",
        "calico2",
        "--grant-requested",
    ]);
    let (out, err, code) = weft_run(
        &h,
        &[
            "network",
            "create",
            "-d",
            "calico2",
            "--subnet",
            "10.70.1.0/24",
            "r3",
        ],
        "",
        true,
    );
    assert!(code == 0 && is_id(&out), "{out}{err}");
    h.weft_ok(&["network", "rm", "r3"]);
    h.weft_ok(&["system", "check"]);
}

#[test]
fn inspect_writes_nothing_and_a_change_rewrites_the_sandboxs_files() {
    let h = TestHost::new("getfiles");
    let d = h.daemon();
    h.weft_ok(&["network", "create", "--subnet", "10.67.0.0/24", "gf"]);
    h.weft_ok(&["network", "create", "--subnet", "10.68.0.0/24", "gf2"]);
    h.weft_ok(&["sandbox", "create", "--network", "gf", "s1"]);
    let v = json(&d.docker_ok(&["inspect", "s1"]));
    let resolv = std::path::PathBuf::from(v[0]["ResolvConfPath"].as_str().unwrap());
    let hosts = std::path::PathBuf::from(v[0]["HostsPath"].as_str().unwrap());
    // Written when the sandbox was made (just after its answer).
    let soon = |f: &dyn Fn(&str) -> bool| {
        let t = std::time::Instant::now();
        while !f(&std::fs::read_to_string(&hosts).unwrap_or_default()) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(2),
                "{:?}",
                std::fs::read_to_string(&hosts)
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    soon(&|t| t.contains("10.67.0."));
    // A GET changes nothing on disk.
    std::fs::remove_file(&resolv).unwrap();
    std::fs::remove_file(&hosts).unwrap();
    d.docker_ok(&["inspect", "s1"]);
    let (status, _, _) = d.http(b"GET /v1.50/containers/s1/json HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(!resolv.exists() && !hosts.exists(), "a GET wrote the files");
    // A change writes them again, as they are now.
    h.weft_ok(&["network", "connect", "gf2", "s1"]);
    soon(&|t| t.contains("10.67.0.") && t.contains("10.68.0."));
    assert!(resolv.exists());
    h.weft_ok(&["network", "disconnect", "gf2", "s1"]);
    soon(&|t| t.contains("10.67.0.") && !t.contains("10.68.0."));
}

#[test]
fn a_hung_daemon_fails_the_cli_within_its_timeout() {
    let h = TestHost::new("hungd");
    // Something that accepts on weft's socket and never answers.
    let sock = h.dir.join("run").join("weft.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let held = std::thread::spawn(move || {
        let mut keep = vec![];
        for s in l.incoming().take(2) {
            keep.push(s);
        }
        std::thread::sleep(std::time::Duration::from_secs(8));
    });
    let run = |secs: &str| {
        let t = std::time::Instant::now();
        let o = h.weft_env(&["network", "ls"], &[("WEFT_CLIENT_TIMEOUT", secs)]);
        (o, t.elapsed())
    };
    let (o, took) = run("1");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did not answer within 1 s"), "{err}");
    assert!(took < std::time::Duration::from_secs(4), "took {took:?}");
    // Control: it is the timeout that ends the wait.
    let (_, took) = run("3");
    assert!(took >= std::time::Duration::from_secs(3), "took {took:?}");
    held.join().unwrap();
}

#[test]
fn a_flood_of_connections_is_bounded_per_socket_and_the_other_door_answers() {
    let h = TestHost::new("connflood");
    let d = h.daemon();
    let base = d.open_fds();
    let mut held = vec![];
    for _ in 0..700 {
        held.push(std::os::unix::net::UnixStream::connect(&d.sock).unwrap());
    }
    // Wait until the daemon took what it takes.
    let t = std::time::Instant::now();
    let mut most = 0;
    while t.elapsed() < std::time::Duration::from_secs(2) {
        most = most.max(d.open_fds().saturating_sub(base));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        (500..=512 + 8).contains(&most),
        "the daemon holds {most} descriptors more for 700 idle connections (512 per socket)"
    );
    let t = std::time::Instant::now();
    h.weft_ok(&["network", "ls"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "weft's socket waited {:?}",
        t.elapsed()
    );
    drop(held);
}

/// `system info`'s restart count of a supervised task.
fn restarts(h: &TestHost, task: &str) -> u64 {
    json(&h.weft_ok(&["system", "info"]))["TaskRestarts"][task]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn the_daemons_tasks_are_started_again_when_they_die_and_counted() {
    let h = TestHost::new("supervise");
    h.weft_ok(&["network", "create", "--subnet", "10.69.0.0/24", "sv"]);
    h.weft_ok(&["sandbox", "create", "--network", "sv", "a"]);
    h.weft_ok(&["sandbox", "create", "--network", "sv", "b"]);
    let br = {
        let v = json(&h.weft_ok(&["network", "inspect", "sv"]));
        format!("br-{}", &v[0]["Id"].as_str().unwrap()[..12])
    };
    for task in ["healer", "dns", "resolver", "reaper"] {
        let d = h.daemon_env(&[("WEFT_FAILPOINT", &format!("panic:{task}"))]);
        until(&format!("{task} restarted"), || restarts(&h, task) >= 1);
        assert!(
            d.log_text()
                .contains(&format!("WEFT_FAILPOINT: panic at {task}")),
            "control: the failpoint fired\n{}",
            d.log_text()
        );
        // And the work goes on: names resolve, what others break is restored.
        until(&format!("names resolve after the {task} restart"), || {
            h.weft(&["sandbox", "exec", "a", "--", "getent", "hosts", "b"])
                .status
                .success()
        });
        run_ok(&h.host_ns, "ip", &["link", "del", &br]);
        until(
            &format!("the bridge is back after the {task} restart"),
            || links(&h.host_ns).contains(&br) && h.weft(&["system", "check"]).status.success(),
        );
        // A removed sandbox's veth is deleted (its namespace kept alive by a process, so the
        // kernel does not do it: the reaper must).
        let before = links(&h.host_ns);
        let c = format!("c-{task}");
        h.weft_ok(&["sandbox", "create", "--network", "sv", &c]);
        let veth: Vec<String> = links(&h.host_ns)
            .into_iter()
            .filter(|l| !before.contains(l))
            .collect();
        assert_eq!(veth.len(), 1, "{veth:?}");
        let mut holder = cmd_in_ns(&key(&h, &c), "sleep")
            .arg("60")
            .spawn()
            .expect("sleep in the namespace");
        h.weft_ok(&["sandbox", "rm", &c]);
        until(
            &format!("the veth is deleted after the {task} restart"),
            || !links(&h.host_ns).contains(&veth[0]),
        );
        let _ = holder.kill();
        let _ = holder.wait();
        drop(d);
    }
}

#[test]
fn events_since_replays_the_kept_history() {
    let h = TestHost::new("evsince");
    let d = h.daemon();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    let start = now();
    d.docker_ok(&["network", "create", "past1"]);
    h.weft_ok(&["sandbox", "create", "--network", "past1", "p1"]);
    d.docker_ok(&["network", "create", "past2"]);
    let mid = now();
    std::thread::sleep(std::time::Duration::from_millis(50));
    d.docker_ok(&["network", "create", "past3"]);
    let end = now() + std::time::Duration::from_secs(1);
    let ts = |t: std::time::Duration| format!("{}.{:09}", t.as_secs(), t.subsec_nanos());
    let events = |since: &str, until: &str| {
        d.docker_ok(&[
            "events",
            "--filter",
            "type=network",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
            "--since",
            since,
            "--until",
            until,
        ])
    };
    // Everything since the start, in order, and the stream ends at `until`.
    let all = events(&ts(start), &ts(end));
    assert_eq!(
        all.lines().collect::<Vec<_>>(),
        [
            "create past1",
            "connect past1",
            "create past2",
            "create past3"
        ],
        "{all}"
    );
    // Only what came after `mid`; nothing before `start`.
    assert_eq!(events(&ts(mid), &ts(end)).trim(), "create past3");
    let before = start - std::time::Duration::from_secs(60);
    assert_eq!(
        events(&ts(before), &ts(start - std::time::Duration::from_secs(1))).trim(),
        ""
    );
    // Docker's relative form (the CLI turns it into a time).
    assert!(events("1m", &ts(end)).contains("create past3"));
}
