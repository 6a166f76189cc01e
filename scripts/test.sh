#!/usr/bin/env bash
# The test command: builds the Wasm guests (plugins, the Python one too) and brings up a
# NetBox on loopback, then runs the unit tests, the integration tests that build real
# namespaces, bridges, veths and nftables rules inside throwaway namespaces, and the NetBox
# tests (root required: they fail, not skip, without it). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "weft's tests create network namespaces and nftables rules: run them as root" >&2
  exit 1
fi
./scripts/deps.sh
echo "Building the Wasm guests, then the tests (a first build compiles wasmtime: minutes)…" >&2
./scripts/build-guests.sh >/dev/null
# The NetBox tests (tests/netbox) need a real NetBox: scripts/netbox.sh brings one up on
# loopback (the first time on a machine installs PostgreSQL, Redis and NetBox and migrates:
# ~6 min; later ~30 s). One these tests started is stopped when they end.
if ! ./scripts/netbox.sh status >/dev/null 2>&1; then
  trap './scripts/netbox.sh down' EXIT
fi
echo "Bringing up NetBox for the NetBox IPAM tests…" >&2
./scripts/netbox.sh up
# The Python plugin (ipam-plugins/stable-py) is built with componentize-py.
./ipam-plugins/stable-py/build.sh "${CARGO_TARGET_DIR:-$PWD/target}/guests/weft_plugin_stable_py.wasm"
cargo test --workspace --features weft/failpoints "$@"
# What the tests do not run must still build: the engine without the Wasm host (an embedder's
# build) and the benchmarks (release; the first time compiles wasmtime again: minutes).
echo "Building weft without the wasm feature, and the benchmarks…" >&2
cargo build -p weft --no-default-features --lib
cargo bench --workspace --no-run
