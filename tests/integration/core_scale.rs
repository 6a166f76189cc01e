//! 200 sandboxes on one network: distinct addresses, all removed, nothing left behind.

use std::collections::HashSet;

use crate::harness::*;
use weft::model::{NetworkCreate, SandboxCreate};

#[test]
fn two_hundred_sandboxes_then_nothing_left() {
    let h = TestHost::new("scale");
    let e = h.engine();
    let links_before = h.host_links();
    let nft_before = h.nft_ruleset();
    h.block_on(e.create_network(NetworkCreate {
        name: "big".into(),
        ..Default::default()
    }))
    .unwrap();
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    for i in 0..200 {
        let sb = h
            .block_on(e.create_sandbox(SandboxCreate {
                name: format!("s{i}"),
                network: Some("big".into()),
                ..Default::default()
            }))
            .unwrap();
        let ep = &e.sandbox_endpoints(&sb.id).unwrap()[0];
        assert!(
            ips.insert(ep.ipv4.unwrap().ip()),
            "duplicate address {:?}",
            ep.ipv4
        );
        assert!(macs.insert(ep.mac.clone()), "duplicate MAC {}", ep.mac);
    }
    assert_eq!(
        e.network_endpoints(&e.network("big").unwrap().id)
            .unwrap()
            .len(),
        200
    );
    let veths = h
        .host_links()
        .iter()
        .filter(|l| l.starts_with("veth"))
        .count();
    assert_eq!(veths, 200);
    // Spot-check the datapath at both ends of the allocation.
    let first = e.sandbox("s0").unwrap();
    let last = e.sandbox("s199").unwrap();
    let last_ip = e.sandbox_endpoints(&last.id).unwrap()[0].ipv4.unwrap().ip();
    assert!(ping(&first.key, last_ip));

    let names: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    h.block_on(e.remove_sandboxes(&refs, false)).unwrap();
    // Every address went back: the check finds no address allocated that nothing holds
    // (while the network, and so its pool, still exists; removing the pool forgets all).
    let found = h.block_on(e.check()).unwrap();
    assert!(found.is_empty(), "{found:#?}");
    h.block_on(e.remove_network("big")).unwrap();

    assert_eq!(
        h.host_links(),
        links_before,
        "links left in the host namespace"
    );
    assert_eq!(
        h.nft_ruleset().replace(char::is_whitespace, ""),
        nft_before.replace(char::is_whitespace, ""),
        "nft rules left"
    );
    assert!(
        h.run_dir_files().is_empty(),
        "left under the run dir: {:?}",
        h.run_dir_files()
    );
    assert!(e.sandboxes().unwrap().is_empty());
    assert!(h.block_on(e.check()).unwrap().is_empty());
}
