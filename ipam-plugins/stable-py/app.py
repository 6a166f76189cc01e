"""A weft IPAM plugin written in Python (componentize-py, the `ipam-plugin` world of wit/):
each sandbox gets a stable address, the same one every time its name asks (a hash of the
name, FNV-1a, probing forward past addresses in use), so a sandbox re-created under the
same name comes back on the same address. State lives in the plugin's kv space and commits
with weft's own records: it survives restarts and crashes like a native IPAM's.

kv: pool/<id> = "subnet", used/<id>/<address> = holder (sandbox name, or "network").
"""

import ipaddress

import wit_world
from componentize_py_types import Err
from wit_world.exports import ipam, plugin
from wit_world.imports import kv, log, types

FNV_OFFSET, FNV_PRIME = 0x811C9DC5, 0x01000193


def fnv1a(s: str) -> int:
    h = FNV_OFFSET
    for b in s.encode():
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def to_ip(a: types.IpAddress):
    if isinstance(a, types.IpAddress_V4):
        return ipaddress.IPv4Address(".".join(str(x) for x in a.value))
    return ipaddress.IPv6Address(":".join("%x" % x for x in a.value))


def from_ip(ip) -> types.IpAddress:
    if ip.version == 4:
        return types.IpAddress_V4(tuple(ip.packed))
    p = ip.packed
    return types.IpAddress_V6(tuple((p[i] << 8) | p[i + 1] for i in range(0, 16, 2)))


def fail(kind, msg: str):
    raise Err(kind(msg))


def load_pool(pool_id: str):
    raw = kv.get("pool/" + pool_id)
    if raw is None:
        fail(types.Error_NotFound, "pool %s is unknown" % pool_id)
    return ipaddress.ip_network(raw.decode())


def usable(net):
    """First and last address handed out: not the network address nor IPv4's broadcast."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses > 2:
        first += 1
        if net.version == 4:
            last -= 1
    return first, last


def take(pool_id: str, ip, holder: str) -> bool:
    return kv.compare_and_swap("used/%s/%s" % (pool_id, ip), None, holder.encode())


class Plugin(wit_world.exports.Plugin):
    def metadata(self) -> plugin.PluginMetadata:
        return plugin.PluginMetadata(
            name="stable-py",
            version="0.1.0",
            description="Stable addresses: a hash of the sandbox name picks its address (a plugin in Python)",
            grants=plugin.RequestedGrants(
                link_prefix=None, parents=[], sysctls=[], http_hosts=[], memory_mib=64,
                gateways=[], vni_ranges=[], vxlan_ports=[], macvlan_passthru=False, config_keys=[],
            ),
        )


class Ipam(wit_world.exports.Ipam):
    def capabilities(self) -> ipam.IpamCapabilities:
        return ipam.IpamCapabilities(requires_mac_address=False, requires_request_replay=False)

    def default_address_spaces(self) -> ipam.AddressSpaces:
        return ipam.AddressSpaces(local="StableLocal", global_="StableGlobal")

    def request_pool(self, req: ipam.PoolRequest) -> ipam.PoolResponse:
        if req.pool is None:
            fail(types.Error_InvalidArgument, "stable-py allocates from a subnet you give: add --subnet")
        net = ipaddress.ip_network("%s/%d" % (to_ip(req.pool.address), req.pool.prefix_len), strict=False)
        pool_id = "st-" + str(net).replace("/", "_").replace(":", ".")
        if not kv.compare_and_swap("pool/" + pool_id, None, str(net).encode()):
            fail(types.Error_Conflict, "%s is already a stable-py pool" % net)
        log.log(log.Level.INFO, "pool %s" % net)
        return ipam.PoolResponse(
            pool_id=pool_id,
            pool=types.IpPrefix(address=from_ip(net.network_address), prefix_len=net.prefixlen),
            data=[],
        )

    def release_pool(self, pool_id: str) -> None:
        for key, _ in kv.list_prefix("used/%s/" % pool_id):
            kv.delete(key)
        kv.delete("pool/" + pool_id)

    def request_address(self, req: ipam.AddressRequest) -> types.IpPrefix:
        net = load_pool(req.pool_id)
        holder = req.context.sandbox_name if req.context is not None else "network"
        if req.preferred is not None:
            ip = to_ip(req.preferred)
            if ip not in net:
                fail(types.Error_InvalidArgument, "%s is not in %s" % (ip, net))
            if not take(req.pool_id, ip, holder):
                fail(types.Error_Conflict, "%s is already allocated" % ip)
            return types.IpPrefix(address=from_ip(ip), prefix_len=net.prefixlen)
        first, last = usable(net)
        count = last - first + 1
        start = fnv1a(holder) % count
        for i in range(count):
            ip = ipaddress.ip_address(first + (start + i) % count)
            if take(req.pool_id, ip, holder):
                return types.IpPrefix(address=from_ip(ip), prefix_len=net.prefixlen)
        fail(types.Error_Exhausted, "no free address left in %s" % net)

    def release_address(self, pool_id: str, address: types.IpAddress) -> None:
        kv.delete("used/%s/%s" % (pool_id, to_ip(address)))
