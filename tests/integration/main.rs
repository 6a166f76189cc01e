//! weft's integration tests: real kernel objects (namespaces, bridges, veths, nftables) in
//! throwaway namespaces. They need root; without it they fail, they do not skip.

#[cfg(not(feature = "failpoints"))]
compile_error!("the integration tests need weft's `failpoints` feature: run them with `--features weft/failpoints` (scripts/test.sh does)");

mod harness;

mod cluster;
mod cni;
mod containerd;
mod contract;
mod core_bridge;
mod core_errors;
mod core_scale;
mod core_tx;
mod crash;
mod dns;
mod docker_api;
mod drift;
mod escapes;
mod load;
mod macvlan;
mod modes;
mod plugin_http;
mod plugins;
mod podman;
mod ports;
mod teardown;
