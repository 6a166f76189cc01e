#!/usr/bin/env bash
# Build the stable-py IPAM plugin (app.py) into a Wasm component with componentize-py 0.25.1,
# against weft's WIT package. componentize-py lives in a venv reused across runs
# (WEFT_COMPONENTIZE_VENV, default /var/tmp/weft-componentize/venv). Usage: build.sh OUT.wasm
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/stable_py.wasm}
venv=${WEFT_COMPONENTIZE_VENV:-/var/tmp/weft-componentize/venv}
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q '0\.25\.1'; then
  echo "installing componentize-py 0.25.1 into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check componentize-py==0.25.1
fi
# --stub-wasi: the component imports only weft's interfaces (weft links no WASI sockets into a
# plugin, and this one needs no clock, file or random source either).
# Rebuild only when the source or the WIT changed (a build takes ~20 s).
stamp=$( (cat "$here/app.py" "$0"; cat "$here"/../../wit/*.wit) | sha256sum | cut -c1-16)
if [[ -f $out && -f $out.stamp && $(cat "$out.stamp") == "$stamp" ]]; then
  exit 0
fi
cd "$here"
"$venv/bin/componentize-py" -d ../../wit -w ipam-plugin componentize --stub-wasi app -o "$out.tmp" >&2
mv "$out.tmp" "$out"
echo "$stamp" >"$out.stamp"
