#!/usr/bin/env bash
# Install what weft's tests and demo need on a fresh Debian machine: podman, runc,
# busybox-static and containerd (the Podman and CNI runtime tests), nftables (weft's
# firewall), iproute2, iputils-ping and procps's sysctl (the demo's and tests' own eyes and
# hands), protoc (the etcd client compiles etcd's protocol at build time), etcd (the cluster
# store the multi-host tests start, each its own, inside their namespaces), the Rust target
# for Wasm plugins. Idempotent; quiet when everything is there.
set -euo pipefail
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v sysctl >/dev/null 2>&1 || missing+=(procps)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# The Podman backend's tests drive the real podman (runc: crun 1.8 refuses these VMs'
# cgroup layout), with a busybox image made from busybox-static.
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
# containerd 1.6's `ctr run --cni` drives weft as a CNI plugin in a test.
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2 >&2
fi
# docker-py drives the Docker API test (the docker CLI itself, 28.x, comes with the machine;
# the tests say so when it is missing).
if ! command -v python3 >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
# venvs: componentize-py (the Python plugin's build) and NetBox (its tests) live in their own.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
command -v curl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
if ! python3 -c 'import docker' >/dev/null 2>&1; then
  echo "installing docker-py (PyPI docker==7.1.0)" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  python3 -m pip install -q docker==7.1.0 2>/dev/null \
    || python3 -m pip install -q --break-system-packages docker==7.1.0
fi
