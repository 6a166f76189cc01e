#!/usr/bin/env bash
# Build the Wasm guests (drivers/, ipam-plugins/, tests/plugins/) for wasm32-wasip2; the
# output is already a component. Prints the directory holding the .wasm files.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-$PWD/target}/guests"
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
  cargo build --manifest-path guests/Cargo.toml --release --target wasm32-wasip2 --target-dir "$TARGET" >&2
echo "$TARGET/wasm32-wasip2/release"
