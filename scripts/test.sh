#!/usr/bin/env bash
# The test command: builds the Wasm guests (plugins), then runs the unit tests and the
# integration tests that build real namespaces, bridges, veths and nftables rules inside
# throwaway namespaces (root required: they fail, not skip, without it). Extra arguments go
# to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "weft's tests create network namespaces and nftables rules: run them as root" >&2
  exit 1
fi
./scripts/deps.sh
echo "Building the Wasm guests, then the tests (a first build compiles wasmtime: minutes)…" >&2
./scripts/build-guests.sh >/dev/null
cargo test --workspace --features weft/failpoints "$@"
# What the tests do not run must still build: the engine without the Wasm host (an embedder's
# build) and the benchmarks (release; the first time compiles wasmtime again: minutes).
echo "Building weft without the wasm feature, and the benchmarks…" >&2
cargo build -p weft --no-default-features --lib
cargo bench --workspace --no-run
