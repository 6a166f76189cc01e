#!/usr/bin/env bash
# The demo: weft's main job on the embedded store, inside a throwaway "host" namespace (so
# the machine's own interfaces and firewall are never touched). Networks and sandboxes are
# created, connectivity, isolation and masquerade are shown, and everything is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the demo creates network namespaces: run it as root" >&2
  exit 1
fi
./scripts/deps.sh
BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/weft"
if [ ! -x "$BIN" ]; then
  echo "Building weft. The first build compiles wasmtime (the Wasm plugin host): about 4–8 minutes on 2 cores; later builds take seconds." >&2
fi
cargo build --bin weft --bin weft-engine
echo "Building the example Wasm plugins (wasm32-wasip2)…" >&2
GUESTS="$(./scripts/build-guests.sh)"

TAG="weftdemo$$"
HOST="$TAG-host"
OUT="$TAG-out"
DIR="$(mktemp -d /tmp/weft-demo.XXXXXX)"
bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
weft() { nsenter --net="/run/netns/$HOST" "$BIN" --root "$DIR/root" --run-root "$DIR/run" "$@"; }
show() { printf '\033[36m$ weft %s\033[0m\n' "$*"; weft "$@"; }

cleanup() {
  set +e
  weft system reset --force >/dev/null 2>&1
  ip netns del "$HOST" 2>/dev/null
  ip netns del "$OUT" 2>/dev/null
  # Anything still pinned under the demo's run dir (only after a failure).
  grep -o "$DIR[^ ]*" /proc/mounts | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

bold "A throwaway host namespace ($HOST), linked to an 'outside' namespace ($OUT) that knows no route to containers"
ip netns add "$HOST"
ip netns add "$OUT"
ip -n "$HOST" link set lo up
ip -n "$HOST" link add wan0 type veth peer name wan0 netns "$OUT"
ip -n "$HOST" addr add 203.0.113.1/24 dev wan0
ip -n "$OUT" addr add 203.0.113.2/24 dev wan0
ip -n "$HOST" link set wan0 up
ip -n "$OUT" link set wan0 up

bold "Networks"
show network create --subnet=172.30.0.0/16 --ip-range=172.30.1.0/24 --gateway=172.30.1.254 \
  --label=trial-bridge --opt com.docker.network.driver.mtu=9000 your-bridge
show network create --internal backend
show network create other
show network ls
show network inspect -f '{{json .IPAM.Config}} mtu={{index .Options "com.docker.network.driver.mtu"}}' your-bridge

bold "Sandboxes (network namespaces) on them"
show sandbox create --network your-bridge web
show sandbox create --network your-bridge db
show network connect --alias search backend db
show sandbox create --network other intruder
show sandbox ls
show sandbox exec db ip -br addr
show sandbox exec db ip route

WEB_IP="$(weft sandbox inspect -f '{{.NetworkSettings.IPAddress}}' web)"
bold "web and db share your-bridge: they talk"
show sandbox exec db ping -c 2 -W 1 "$WEB_IP"

bold "intruder is on another network: isolated"
if weft sandbox exec intruder ping -c 2 -W 1 "$WEB_IP" >/dev/null 2>&1; then
  echo "UNEXPECTED: intruder reached web" >&2
  exit 1
fi
echo "intruder → $WEB_IP: no reply (dropped by weft's nftables isolation)"

bold "web reaches the outside through masquerade (the outside has no route back to 172.30.0.0/16)"
show sandbox exec web ping -c 2 -W 1 203.0.113.2

bold "weft's own nftables table in the host namespace"
nsenter --net="/run/netns/$HOST" nft list table inet weft | sed -n '/chain nw-.*-nat/,/}/p' | head -8

bold "Records and kernel agree; someone deletes a bridge weft made; check sees it, repair mends it"
show system check
BR="$(ip -n "$HOST" -o link show | awk -F': ' '{print $2}' | grep '^br-' | head -1)"
echo "\$ ip link del $BR"
ip -n "$HOST" link del "$BR"
show system check || echo "(exit $?: they disagree)"
show system check --repair
show sandbox exec db ping -c 1 -W 1 "$WEB_IP"

bold "A third-party driver as a sandboxed Wasm plugin: Calico-style routing, no bridge"
show plugin install "$GUESTS/weft_plugin_routed.wasm" --name routed --grant-requested
show network create -d routed --subnet 10.88.0.0/24 routed-net
show sandbox create --network routed-net r1
show sandbox create --network routed-net r2
show sandbox exec r1 ip route
R2_IP="$(weft sandbox inspect -f '{{.NetworkSettings.IPAddress}}' r2)"
show sandbox exec r1 ping -c 2 -W 1 "$R2_IP"
echo "host routes the plugin made (through its checked host-net calls):"
ip -n "$HOST" route show | grep ' dev rt' || true

bold "Disconnect, remove, and check that nothing is left"
show network disconnect backend db
show sandbox rm web db intruder r1 r2
show network rm your-bridge backend other routed-net
show plugin rm routed
show system reset --force
echo "host links now:  $(ip -n "$HOST" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')"
echo "host nft tables: $(nsenter --net="/run/netns/$HOST" nft list tables | tr '\n' ' ')(none from weft)"
echo "pinned namespaces under the run dir: $(find "$DIR/run/netns" -type f | wc -l)"
bold "Demo done."
