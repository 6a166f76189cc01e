//! `weft network …`: create (the docker CLI's client-side checks included), ls, inspect,
//! rm, prune, connect, disconnect.

use std::io::{BufRead, Write};
use std::net::IpAddr;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::output::{err_line, format_rows, kv_list, natural_cmp, parse_net, print_inspect, Exit};
use crate::model::*;
use crate::{view, Engine, Error};

#[derive(Subcommand, Debug, Clone)]
pub enum NetworkCmd {
    /// Create a network.
    Create(NetCreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(NetLsArgs),
    /// Display detailed information on one or more networks.
    Inspect {
        #[arg(short = 'f', long)]
        format: Option<String>,
        #[arg(short = 'v', long)]
        verbose: bool,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        /// Do not error if the network does not exist; remove it even if its driver or IPAM
        /// plugin refuses (saying what it refused).
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all unused networks.
    Prune {
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(long = "filter")]
        filter: Vec<String>,
    },
    /// Connect a sandbox to a network.
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network.
    Disconnect {
        #[arg(short = 'f', long)]
        force: bool,
        network: String,
        sandbox: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct NetCreateArgs {
    /// Driver to manage the network.
    #[arg(short = 'd', long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment.
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Allocate container IPs from a sub-range.
    #[arg(long = "ip-range")]
    pub ip_range: Vec<String>,
    /// Gateway for the master subnet.
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Auxiliary addresses used by the network driver (name=IP).
    #[arg(long = "aux-address")]
    pub aux_address: Vec<String>,
    /// IP address management driver.
    #[arg(long = "ipam-driver", default_value = "default")]
    pub ipam_driver: String,
    /// Set IPAM driver specific options.
    #[arg(long = "ipam-opt")]
    pub ipam_opt: Vec<String>,
    /// Set metadata on a network.
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options.
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Restrict external access to the network.
    #[arg(long)]
    pub internal: bool,
    /// Enable manual container attachment.
    #[arg(long)]
    pub attachable: bool,
    /// Enable or disable IPv4 address assignment.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipv4: Option<bool>,
    /// Enable or disable IPv6 address assignment.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipv6: Option<bool>,
    /// Control the network's scope.
    #[arg(long)]
    pub scope: Option<String>,
    pub name: String,
}

#[derive(Args, Debug, Clone)]
pub struct NetLsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// IPv4 address (e.g., 172.30.100.104).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// IPv6 address (e.g., 2001:db8::33).
    #[arg(long)]
    pub ip6: Option<IpAddr>,
    /// Add network-scoped alias for the sandbox.
    #[arg(long)]
    pub alias: Vec<String>,
    /// Add link to another sandbox (name:alias).
    #[arg(long)]
    pub link: Vec<String>,
    /// Driver options for the network.
    #[arg(long = "driver-opt")]
    pub driver_opt: Vec<String>,
    /// Gateway priority: the highest becomes the default route.
    #[arg(long = "gw-priority", default_value_t = 0)]
    pub gw_priority: i64,
    pub network: String,
    pub sandbox: String,
}

/// Build the create request the way the docker CLI does (its client-side checks included).
/// `network prune` without `-f` asks first, on the terminal of the command (in a daemon's
/// client, before the request is sent).
pub fn confirm_prune() -> bool {
    print!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes")
}

pub fn create_request(a: &NetCreateArgs) -> Result<NetworkCreate, Error> {
    let subnets: Vec<ipnetwork::IpNetwork> = a
        .subnet
        .iter()
        .map(|s| parse_net(s, "subnet"))
        .collect::<Result<_, _>>()?;
    let mut cfgs: Vec<IpamConfigRequest> = subnets
        .iter()
        .map(|s| IpamConfigRequest {
            subnet: Some(*s),
            ..Default::default()
        })
        .collect();
    for r in &a.ip_range {
        let r = parse_net(r, "ip-range")?;
        let c = cfgs
            .iter_mut()
            .find(|c| {
                c.subnet
                    .is_some_and(|s| s.contains(r.network()) && s.is_ipv4() == r.is_ipv4())
            })
            .ok_or_else(|| Error::invalid(format!("no matching subnet for range {r}")))?;
        if c.ip_range.is_some() {
            return Err(Error::invalid(
                "cannot configure multiple ranges on the same subnet",
            ));
        }
        c.ip_range = Some(r);
    }
    for g in &a.gateway {
        let g: IpAddr = g
            .parse()
            .map_err(|_| Error::invalid(format!("invalid gateway {g:?}: use an IP address")))?;
        let c = cfgs
            .iter_mut()
            .find(|c| c.subnet.is_some_and(|s| s.contains(g)))
            .ok_or_else(|| Error::invalid(format!("no matching subnet for gateway {g}")))?;
        if let Some(old) = c.gateway {
            return Err(Error::invalid(format!(
                "cannot configure multiple gateways ({g}, {old}) for the same subnet ({})",
                c.subnet.unwrap()
            )));
        }
        c.gateway = Some(g);
    }
    for (name, ip) in kv_list(&a.aux_address, "aux-address")? {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| Error::invalid(format!("invalid aux-address {name}={ip}")))?;
        let c = cfgs
            .iter_mut()
            .find(|c| c.subnet.is_some_and(|s| s.contains(ip)))
            .ok_or_else(|| Error::invalid(format!("no matching subnet for aux-address {ip}")))?;
        c.aux_addresses.insert(name, ip);
    }
    if cfgs.is_empty()
        && (!a.ip_range.is_empty() || !a.gateway.is_empty() || !a.aux_address.is_empty())
    {
        return Err(Error::invalid(
            "every ip-range or gateway must have a corresponding subnet",
        ));
    }
    crate::engine::validate_ipam_config(&cfgs)?;
    Ok(NetworkCreate {
        name: a.name.clone(),
        driver: Some(a.driver.clone()),
        scope: a.scope.clone(),
        internal: a.internal,
        attachable: a.attachable,
        enable_ipv4: a.ipv4,
        enable_ipv6: a.ipv6,
        ipam_driver: Some(a.ipam_driver.clone()),
        ipam_options: kv_list(&a.ipam_opt, "ipam-opt")?,
        ipam_config: cfgs,
        options: kv_list(&a.opt, "option")?,
        labels: kv_list(&a.label, "label")?,
        ..Default::default()
    })
}

/// The row a `network ls` template sees.
fn ls_row(n: &Network, no_trunc: bool) -> Value {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let created =
        time::OffsetDateTime::parse(&n.created, &time::format_description::well_known::Rfc3339)
            .map(|t| {
                let f = time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:9] +0000 UTC"
                );
                t.format(&f).unwrap_or_default()
            })
            .unwrap_or_default();
    json!({
        "CreatedAt": created,
        "Driver": n.driver,
        "ID": if no_trunc { n.id.clone() } else { n.id[..12].to_string() },
        "IPv4": n.enable_ipv4.to_string(),
        "IPv6": n.enable_ipv6.to_string(),
        "Internal": n.internal.to_string(),
        "Labels": labels.join(","),
        "Name": n.name,
        "Scope": n.scope.as_str(),
    })
}

pub async fn run(engine: &Engine, cmd: NetworkCmd) -> Result<Exit, Error> {
    match cmd {
        NetworkCmd::Create(a) => {
            let req = create_request(&a)?;
            let c = engine.create_network(req).await?;
            outln!("{}", c.id);
            if !c.warning.is_empty() {
                errln!("{}", c.warning);
            }
            Ok(0)
        }
        NetworkCmd::Ls(a) => {
            let filters = NetworkFilters::parse(a.filter.iter().map(String::as_str))?;
            let mut nets = engine.networks(&filters)?;
            nets.sort_by(|x, y| natural_cmp(&x.name, &y.name));
            if a.quiet {
                for n in &nets {
                    outln!("{}", if a.no_trunc { &n.id[..] } else { &n.id[..12] });
                }
                return Ok(0);
            }
            let rows: Vec<Value> = nets.iter().map(|n| ls_row(n, a.no_trunc)).collect();
            let format = a
                .format
                .unwrap_or_else(|| "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}".into());
            let headers = [
                ("ID", "NETWORK ID"),
                ("Name", "NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
                ("IPv4", "IPV4"),
                ("IPv6", "IPV6"),
                ("Internal", "INTERNAL"),
                ("Labels", "LABELS"),
                ("CreatedAt", "CREATED AT"),
            ];
            match format_rows(&format, &rows, &headers) {
                Ok(s) => {
                    out!("{s}");
                    Ok(0)
                }
                Err(e) => Err(Error::invalid(e)),
            }
        }
        NetworkCmd::Inspect {
            format,
            verbose: _,
            networks,
        } => {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for n in networks {
                match engine.network(&n) {
                    Ok(net) => {
                        let eps = engine.network_endpoints(&net.id)?;
                        found.push(view::network(&net, Some(&eps)));
                    }
                    Err(e) => errors.push(e),
                }
            }
            Ok(print_inspect(found, errors, format.as_deref()))
        }
        NetworkCmd::Rm { force, networks } => {
            let mut code = 0;
            for n in networks {
                match engine.remove_network_with(&n, force).await {
                    Ok(warnings) => {
                        for w in warnings {
                            errln!("Warning: {w}");
                        }
                        outln!("{n}")
                    }
                    // -f: a network that does not exist is not an error (and nothing else is
                    // forgiven: a driver's "not found" while removing is still reported).
                    Err(Error::NetworkNotFound(_)) if force => {}
                    Err(e) => {
                        err_line(e);
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkCmd::Prune { force, filter } => {
            let filters = NetworkFilters::parse(filter.iter().map(String::as_str))?;
            if !force && super::output::capturing() {
                return Err(Error::invalid(
                    "network prune needs -f when it runs in the daemon (the client asks first)",
                ));
            }
            if !force && !confirm_prune() {
                return Ok(0);
            }
            let removed = engine.prune_networks(&filters).await?;
            if !removed.is_empty() {
                outln!("Deleted Networks:");
                for n in removed {
                    outln!("{n}");
                }
                outln!();
            }
            Ok(0)
        }
        NetworkCmd::Connect(a) => {
            let opts = ConnectOptions {
                ipv4: a.ip,
                ipv6: a.ip6,
                aliases: a.alias,
                links: a.link,
                mac: None,
                driver_opts: kv_list(&a.driver_opt, "driver-opt")?,
                gw_priority: a.gw_priority,
                ifname: None,
            };
            engine.connect(&a.network, &a.sandbox, opts).await?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            sandbox,
        } => {
            engine.disconnect(&network, &sandbox, force).await?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn create_request_like_docker_cli() {
        let a = NetCreateArgs::parse_from_for_test(&[
            "--subnet=172.30.0.0/16",
            "--ip-range=172.30.1.0/24",
            "--gateway=172.30.1.254",
            "--label=trial-bridge",
            "--opt",
            "com.docker.network.driver.mtu=9000",
            "your-bridge",
        ]);
        let r = create_request(&a).unwrap();
        assert_eq!(r.labels.get("trial-bridge").map(String::as_str), Some(""));
        assert_eq!(
            r.ipam_config[0].gateway.unwrap().to_string(),
            "172.30.1.254"
        );
        let bad = NetCreateArgs::parse_from_for_test(&[
            "--subnet=10.0.0.0/24",
            "--gateway=10.1.0.1",
            "x",
        ]);
        assert_eq!(
            create_request(&bad).unwrap_err().to_string(),
            "no matching subnet for gateway 10.1.0.1"
        );
        let bad = NetCreateArgs::parse_from_for_test(&["--ip-range=10.0.0.0/24", "x"]);
        assert_eq!(
            create_request(&bad).unwrap_err().to_string(),
            "no matching subnet for range 10.0.0.0/24"
        );
        let bad = NetCreateArgs::parse_from_for_test(&[
            "--subnet=10.0.0.0/16",
            "--subnet=10.0.1.0/24",
            "x",
        ]);
        assert_eq!(
            create_request(&bad).unwrap_err().to_string(),
            "multiple overlapping subnet configuration is not supported"
        );
    }

    /// Subnets, ranges, gateways, aux addresses, options and port specs as a user may type
    /// them: each is parsed and checked, or refused with an error — none makes weft panic (a
    /// bounded run here; `WEFT_PROPTEST_CASES` for a long one).
    #[test]
    fn no_address_option_or_port_spec_makes_it_panic() {
        use proptest::prelude::*;
        let cases = std::env::var("WEFT_PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(3000);
        let piece = prop_oneof![
            prop::sample::select(vec![
                "10.1.0.0/16",
                "10.1.0.0/24",
                "10.1.1.0/24",
                "10.1.0.1",
                "10.1.0.255",
                "0.0.0.0/0",
                "::/0",
                "fd00::/64",
                "fd00::1",
                "fd00::/128",
                "10.1.0.0/33",
                "10.1.0.0/-1",
                "256.1.1.1/8",
                "10.1.0.0/",
                "/24",
                "a=10.1.0.5",
                "b=fd00::5",
                "=",
                "==",
                "k=",
                "=v",
                "x",
                "",
                " ",
                "10.1.0.0/16\n",
                "1.2.3.4/32",
                "255.255.255.255/32",
                "com.docker.network.driver.mtu=0",
                "com.docker.network.driver.mtu=99999999999",
                "com.docker.network.bridge.name=",
                "com.docker.network.bridge.enable_icc=maybe",
                "parent=eth0.99999",
                "macvlan_mode=nope",
                "80",
                "8080:80",
                "127.0.0.1:80:80/udp",
                "::1:80:80",
                "[::1]:80:80",
                "1-65535:1-65535",
                "65536:1",
                "0:0",
                "80/sctp",
                ":",
                "::",
                "-1:80",
                "1.2.3.4::80",
                "70000-70010:80",
                "80-70:80-70",
            ])
            .prop_map(str::to_string),
            "[0-9a-f.:/=\\[\\]-]{0,24}",
            ".{0,12}",
        ];
        let many = prop::collection::vec(piece.clone(), 0..4);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &(
                    many.clone(),
                    many.clone(),
                    many.clone(),
                    many.clone(),
                    many,
                    piece,
                ),
                |(subnet, ip_range, gateway, aux, opt, port)| {
                    let mut args = vec!["x".to_string()];
                    for (flag, vals) in [
                        ("--subnet", &subnet),
                        ("--ip-range", &ip_range),
                        ("--gateway", &gateway),
                        ("--aux-address", &aux),
                        ("-o", &opt),
                        ("--ipam-opt", &opt),
                    ] {
                        for v in vals {
                            args.push(format!("{flag}={v}"));
                        }
                    }
                    #[derive(Parser)]
                    struct W {
                        #[command(flatten)]
                        a: NetCreateArgs,
                    }
                    if let Ok(w) = W::try_parse_from(&args) {
                        if let Ok(req) = create_request(&w.a) {
                            let _ = crate::engine::filters::validate_ipam_config(&req.ipam_config);
                        }
                    }
                    let _ = crate::model::PortMapping::parse(&port);
                    let _ = crate::model::parse_mac(&port);
                    let _ = crate::model::NetworkFilters::parse([port.as_str()]);
                    Ok(())
                },
            )
            .unwrap();
    }

    impl NetCreateArgs {
        fn parse_from_for_test(args: &[&str]) -> NetCreateArgs {
            #[derive(Parser)]
            struct W {
                #[command(flatten)]
                a: NetCreateArgs,
            }
            let mut v = vec!["x"];
            v.extend_from_slice(args);
            W::parse_from(v).a
        }
    }
}
