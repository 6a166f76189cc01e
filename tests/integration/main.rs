//! weft's integration tests: real kernel objects (namespaces, bridges, veths, nftables) in
//! throwaway namespaces. They need root; without it they fail, they do not skip.

mod harness;

mod core_bridge;
mod core_errors;
mod core_scale;
mod core_tx;
mod macvlan;
mod modes;
mod plugins;
