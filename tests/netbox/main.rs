//! weft against a real NetBox (`scripts/netbox.sh`: the NetBox server from PyPI, PostgreSQL
//! and Redis on loopback, started once for this test binary and reused across runs), and the
//! plugin written in Python. Each test runs weft in its own throwaway host namespace; the
//! NetBox IPAM plugin reaches NetBox through a [`Proxy`] the test owns inside that namespace,
//! which is also how a test stops NetBox or makes it hang without disturbing the others.
//! Every test uses its own subnet and checks NetBox's own API for what weft did.

#[cfg(not(feature = "failpoints"))]
compile_error!("the NetBox tests need weft's `failpoints` feature: run them with `--features weft/failpoints` (scripts/test.sh does)");

#[path = "../integration/harness.rs"]
#[allow(dead_code)]
mod harness;

mod python;
mod support;
mod tests;
