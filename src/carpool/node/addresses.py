"""Shared addresses: add/remove them with netlink (pyroute2), optionally on a virtual-MAC macvlan,
and announce them with gratuitous ARP through an AF_PACKET socket.

Every function is synchronous and fast (a few netlink round trips). pyroute2 ≥ 0.9's IPRoute runs
its own event loop, which cannot start inside a running asyncio loop, so when called from a thread
that runs one, the netlink work is done on a private worker thread and waited for (it still blocks
the caller for those few milliseconds). All failures surface as OSError (netlink errors are
converted), so callers need only catch OSError.

Idempotent: adding an address that is there, or removing one that is not, is not an error.

Virtual MAC. With `vmac="00:00:5e:00:01:<vhid>"` the shared addresses live on a macvlan
(mode bridge) on top of the interface, named `cv<vhid>-<ifname>` (or `cv<vhid>-i<ifindex>` when
that would pass the 15-character limit). To make ARP answer with the virtual MAC only:
- the parent gets `arp_ignore=1` (answer only for addresses configured on the parent itself)
  and `arp_announce=2` (its ARP requests name its own address, never the shared one);
- the macvlan gets `arp_ignore=1`, `arp_announce=2`, `rp_filter=2` (loose: replies to clients go
  out through the parent's connected route), and no IPv6 address of its own: no link-local
  (addr_gen_mode 1), no SLAAC, no router advertisements taken.
When the parent already has an address in the shared address's subnet, the shared address is
added to the macvlan with `noprefixroute`, so the unit's own traffic keeps the parent's route and
source address. Removing the last shared address deletes the macvlan.

IPv6 shared addresses are added with `nodad` (the partner held the address a moment ago: DAD
would refuse it, and waiting a second for DAD is a second without service) and a preferred
lifetime of 0 (deprecated: never the unit's own source address), and announced with unsolicited
Neighbor Advertisements (RFC 4861 §7.2.6) where IPv4 has gratuitous ARP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from .. import events, family
from ..config.ha import VMAC_PREFIX, vmac_for  # noqa: F401  (vmac_for: the tests name it here)
from ..ha import ipv6
from ..ha.ipv4 import internet_checksum
from .links import mac_address
from .threads import name_os_thread

log = events.logger("carpool.addresses", events.Kind.ADDRESSES)

VMAC_IFNAME_PREFIX = "cv"
IFNAMSIZ = 15
IFA_F_NODAD = 0x02
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
IFA_F_NOPREFIXROUTE = 0x200
FOREVER = 0xFFFFFFFF  # an address lifetime that never ends
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST_MAC = b"\xff" * 6
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # ff02::1 mapped (RFC 2464 §7)
ICMPV6, NEIGHBOR_ADVERT = 58, 136
NA_ROUTER, NA_OVERRIDE = 0x80000000, 0x20000000
NETLINK_TIMEOUT = 10.0

T = TypeVar("T")
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


# -- helpers ----------------------------------------------------------------------------------


def _norm_mac(mac: str) -> str:
    parts = mac.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return ":".join(f"{int(p, 16):02x}" for p in parts)


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(p, 16) for p in _norm_mac(mac).split(":"))


def vmac_ifname(ifname: str, vmac: str, ifindex: int | None = None) -> str:
    """Name of the macvlan carrying `vmac` on `ifname`: cv<vhid>-<ifname>, ≤ 15 characters."""
    vhid = int(_norm_mac(vmac).split(":")[-1], 16)
    name = f"{VMAC_IFNAME_PREFIX}{vhid}-{ifname}"
    if len(name) <= IFNAMSIZ:
        return name
    if ifindex is None:
        ifindex = socket.if_nametoindex(ifname)
    return f"{VMAC_IFNAME_PREFIX}{vhid}-i{ifindex}"


Shared = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _interface(cidr: str) -> Shared:
    return ipaddress.ip_interface(cidr)  # a bare address means /32 (/128)


def _same(a: str, b: str) -> bool:
    """One address in two spellings (the kernel's and the configuration's)."""
    return a == b or ipaddress.ip_address(a) == ipaddress.ip_address(b)


def _on_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


_routes = threading.local()  # per thread: {netns inode: IPRoute}, kept open


def _iproute():
    """This thread's IPRoute for the caller's network namespace, kept open: opening one costs
    ~3 ms, paid on every takeover before the first gratuitous ARP otherwise."""
    from pyroute2 import IPRoute

    try:
        key = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        key = 0
    cache = getattr(_routes, "by_ns", None)
    if cache is None:
        cache = _routes.by_ns = {}
    if key not in cache:
        cache[key] = IPRoute()
    return key, cache


def _netlink(fn: Callable[..., T]) -> T:
    """Run fn(ipr) with this thread's IPRoute, on a worker thread if an event loop runs here."""

    def job() -> T:
        from pyroute2.netlink.exceptions import NetlinkError

        key, cache = _iproute()
        try:
            return fn(cache[key])
        except NetlinkError as e:
            raise OSError(e.code, f"netlink: {os.strerror(e.code)}") from None
        except OSError:  # the socket itself failed: start afresh next time
            cache.pop(key).close()
            raise

    if not _on_loop_thread():
        return job()
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="carpool-nl", initializer=name_os_thread
            )
    try:
        return _executor.submit(job).result(timeout=NETLINK_TIMEOUT)
    except concurrent.futures.TimeoutError:
        raise OSError(errno.ETIMEDOUT, "netlink request timed out") from None


def _code(e: Exception) -> int | None:
    return getattr(e, "code", None)


def _lookup(ipr, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _kind(link) -> str | None:
    try:
        return link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    except Exception:
        return None


def _our_macvlans(ipr, parent: int, vmac: str | None = None) -> list[tuple[int, str, str]]:
    """(index, name, mac) of carpool macvlans on parent (optionally only the one with vmac)."""
    out = []
    for link in ipr.get_links():
        if link.get("IFLA_LINK") != parent or _kind(link) != "macvlan":
            continue
        mac = (link.get("IFLA_ADDRESS") or "").lower()
        name = link.get("IFLA_IFNAME") or ""
        if not (mac.startswith(VMAC_PREFIX) and name.startswith(VMAC_IFNAME_PREFIX)):
            continue
        if vmac is not None and mac != _norm_mac(vmac):
            continue
        out.append((link["index"], name, mac))
    return out


def _addresses(ipr, index: int, family: int = socket.AF_UNSPEC) -> list[tuple[str, int]]:
    """(address, prefix length) of the interface's addresses, IPv4 and IPv6 by default."""
    return [
        (a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"), a["prefixlen"])
        for a in ipr.get_addr(family=family, index=index)
    ]


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        log.warning("cannot set %s=%s: %s", path, value, e)


def _add_address(
    ipr, index: int, iface: Shared, flags: int = 0, lifetime: int | None = None
) -> None:
    address = str(iface.ip)
    kwargs: dict[str, str | int] = {}
    if iface.version == 6:
        flags |= IFA_F_NODAD
        # preferred 0: deprecated from the start, so never chosen as the unit's own source
        lifetime = FOREVER if lifetime is None else lifetime
    elif iface.network.prefixlen < 31:
        kwargs["broadcast"] = str(iface.network.broadcast_address)
    if flags:
        kwargs["IFA_FLAGS"] = flags
    # Added straight away, no dump first: this is the takeover path. A leftover of the same
    # address with another prefix is removed before (remove_stale at start, and the daemon
    # withdraws a shared address whose prefix a new configuration version changed).
    command = "add"
    if lifetime is not None:
        # "replace" adds or renews: the same call takes the address and keeps it alive.
        command, kwargs["valid_lft"] = "replace", lifetime
        kwargs["preferred_lft"] = 0 if iface.version == 6 else lifetime
    try:
        ipr.addr(command, index=index, address=address, prefixlen=iface.network.prefixlen, **kwargs)
    except Exception as e:
        if _code(e) != errno.EEXIST:
            raise


def ipv6_flags(address: ipaddress.IPv6Address, index: int) -> int | None:
    """The kernel's IFA_F_* flags of an IPv6 address on interface `index` (None: not there),
    from /proc/net/if_inet6: one small file read where a netlink dump would cost pyroute2's
    parsing on every renewal."""
    want = address.packed.hex()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 6 and fields[0] == want and int(fields[1], 16) == index:
                    return int(fields[4], 16)
    except OSError:
        pass
    return None


def dad_pending(ifname: str, cidr: str) -> bool:
    """An IPv6 shared address on ifname that duplicate address detection holds (tentative) or
    failed: it serves nobody until added afresh (_heal_dad). False for IPv4."""
    iface = _interface(cidr)
    if iface.version != 6:
        return False
    try:
        index = socket.if_nametoindex(ifname)
    except OSError:
        return False
    state = ipv6_flags(ipaddress.IPv6Address(iface.ip), index)
    return state is not None and bool(state & (IFA_F_DADFAILED | IFA_F_TENTATIVE))


def _heal_dad(ipr, index: int, iface: Shared, flags: int, lifetime: int | None) -> None:
    """An IPv6 shared address left tentative or failed by duplicate address detection (added
    before without nodad, by hand or by an older release) serves nobody, and a replace keeps
    those flags: delete it and add it afresh, nodad."""
    state = ipv6_flags(ipaddress.IPv6Address(iface.ip), index)
    if state is None or not state & (IFA_F_DADFAILED | IFA_F_TENTATIVE):
        return
    log.warning(
        "IPv6 shared address %s: duplicate address detection %s; added again (nodad)",
        iface,
        "failed" if state & IFA_F_DADFAILED else "not finished",
    )
    _del_address(ipr, index, str(iface.ip), iface.network.prefixlen)
    _add_address(ipr, index, iface, flags, lifetime)


def _del_address(ipr, index: int, address: str, prefixlen: int) -> bool:
    try:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        return True
    except Exception as e:
        if _code(e) in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
            return False
        raise


def _remove_from(ipr, index: int, address: str) -> bool:
    removed = False
    for have, prefixlen in _addresses(ipr, index):
        if _same(have, address):
            removed |= _del_address(ipr, index, have, prefixlen)
    return removed


def _delete_link(ipr, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except Exception as e:
        if _code(e) not in (errno.ENODEV, errno.ENOENT):
            raise


def _parent_covers(ipr, parent: int, iface: Shared) -> bool:
    """Does the parent hold an address of its own in iface's subnet (so a connected route)?"""
    family = socket.AF_INET6 if iface.version == 6 else socket.AF_INET
    for address, prefixlen in _addresses(ipr, parent, family):
        own = ipaddress.ip_interface(f"{address}/{prefixlen}")
        if own.ip != iface.ip and own.network == iface.network and prefixlen < own.max_prefixlen:
            return True
    return False


def _ensure_macvlan(ipr, ifname: str, parent: int, vmac: str) -> int:
    vmac = _norm_mac(vmac)
    name = vmac_ifname(ifname, vmac, parent)
    # The parent must not answer ARP for the shared address with its own MAC (it would by
    # default: Linux answers for any local address on any interface), nor announce it in its
    # own ARP requests (replies to clients leave through the parent with the shared source).
    _sysctl(f"/proc/sys/net/ipv4/conf/{ifname}/arp_ignore", "1")
    _sysctl(f"/proc/sys/net/ipv4/conf/{ifname}/arp_announce", "2")
    mine = _our_macvlans(ipr, parent, vmac)
    if mine:
        index = mine[0][0]
    else:
        stale = _lookup(ipr, name)
        if stale is not None:  # our name, wrong parent or MAC: an old one of ours
            _delete_link(ipr, stale)
        try:
            ipr.link(
                "add", ifname=name, kind="macvlan", link=parent, macvlan_mode="bridge", address=vmac
            )
        except Exception as e:
            if _code(e) != errno.EEXIST:
                raise
        created = _lookup(ipr, name)
        if created is None:
            raise OSError(errno.ENODEV, f"macvlan {name} vanished after creation")
        index = created
        for key, value in (
            ("ipv4/conf/{}/arp_ignore", "1"),
            ("ipv4/conf/{}/arp_announce", "2"),
            ("ipv4/conf/{}/rp_filter", "2"),
            # IPv6 shared addresses only: no link-local copied from the parent's MAC rule, no
            # SLAAC, no DAD (before the link goes up, which is when a link-local is made)
            ("ipv6/conf/{}/addr_gen_mode", "1"),
            ("ipv6/conf/{}/accept_ra", "0"),
            ("ipv6/conf/{}/autoconf", "0"),
            ("ipv6/conf/{}/accept_dad", "0"),
        ):
            path = "/proc/sys/net/" + key.format(name)
            if os.path.exists(path):
                _sysctl(path, value)
        log.info("created macvlan %s on %s with MAC %s", name, ifname, vmac)
    ipr.link("set", index=index, state="up")
    return index


def _parent(ipr, ifname: str) -> int:
    try:  # an ioctl: far cheaper than a netlink link dump, and on the takeover path
        return socket.if_nametoindex(ifname)
    except OSError:
        raise OSError(errno.ENODEV, f"no interface {ifname}") from None


# -- the API ----------------------------------------------------------------------------------
def warm_up() -> None:
    """Open the netlink and packet sockets now (from the daemon's loop), so that the first
    takeover does not pay for creating them (~100 ms measured, most of it pyroute2 set-up)."""
    _netlink(lambda ipr: None)
    _packet_socket()


def add_shared(
    ifname: str, cidr: str, vmac: str | None = None, lifetime: int | None = None
) -> None:
    """Put the shared address `cidr` (e.g. "198.18.0.10/24") on ifname, or on its vmac macvlan.

    With lifetime (seconds) the kernel removes the address that long after the last call
    unless it is called again: a dead daemon's addresses go away without it (see node/fence.py
    for the millisecond part). Calling again renews it, or puts it back if it vanished."""
    iface = _interface(cidr)

    def work(ipr) -> None:
        parent = _parent(ipr, ifname)
        index, flags = parent, 0
        if vmac is not None:
            index = _ensure_macvlan(ipr, ifname, parent, vmac)
            flags = IFA_F_NOPREFIXROUTE if _parent_covers(ipr, parent, iface) else 0
        _add_address(ipr, index, iface, flags, lifetime)
        if iface.version == 6:
            _heal_dad(ipr, index, iface, flags, lifetime)

    _netlink(work)


def present(ifname: str, cidr: str, vmac: str | None = None) -> bool:
    """Is the shared address (compared by address, not prefix) held on ifname?

    With vmac: only its macvlan counts; without: ifname itself or any carpool macvlan on it."""
    address = str(_interface(cidr).ip)

    def work(ipr) -> bool:
        parent = _lookup(ipr, ifname)
        if parent is None:
            return False
        indexes = [] if vmac is not None else [parent]
        indexes += [m[0] for m in _our_macvlans(ipr, parent, vmac)]
        return any(_same(a, address) for i in indexes for a, _p in _addresses(ipr, i))

    return _netlink(work)


def _withdraw_from(ipr, index: int, addresses: list[str]) -> list[str]:
    return [a for a in addresses if _remove_from(ipr, index, a)]


def withdraw(ifname: str, cidrs) -> list[str]:
    """Remove the listed shared addresses from ifname and its carpool macvlans, and nothing
    else: each a quick RTM_DELADDR, where deleting a link waits for the kernel's RCU grace
    period (~20 ms measured) while the address would still answer. Returns what went."""
    addresses = [str(_interface(c).ip) for c in cidrs]

    def work(ipr) -> list[str]:
        parent = _lookup(ipr, ifname)
        if parent is None:
            return []
        indexes = [parent] + [m[0] for m in _our_macvlans(ipr, parent)]
        return [a for index in indexes for a in _withdraw_from(ipr, index, addresses)]

    return _netlink(work)


def remove_stale(ifname: str, cidrs, vmac: str | None = None) -> list[str]:
    """At start (or after a crash): remove the listed shared addresses from ifname and delete every
    carpool macvlan (cv*, MAC 00:00:5e:00:01:*) on it, whatever its vhid. Returns what went."""
    addresses = [str(_interface(c).ip) for c in cidrs]
    del vmac  # every carpool macvlan on the interface goes, this vhid's or an older one's

    def work(ipr) -> list[str]:
        parent = _lookup(ipr, ifname)
        if parent is None:
            return []
        gone = []
        for address in addresses:
            if _remove_from(ipr, parent, address):
                gone.append(f"{address} on {ifname}")
        macvlans = _our_macvlans(ipr, parent)
        taken = {index: _withdraw_from(ipr, index, addresses) for index, _n, _m in macvlans}
        for index, name, _mac in macvlans:
            held = taken[index] + [a for a, _p in _addresses(ipr, index)]
            _delete_link(ipr, index)
            gone.append(f"macvlan {name}" + (f" ({', '.join(held)})" if held else ""))
        if gone:
            log.info("removed stale shared state: %s", "; ".join(gone))
        return gone

    return _netlink(work)


# neighbour states (NUD_*) that hold no usable link-layer address
_NUD_UNRESOLVED = 0x01 | 0x20  # INCOMPLETE, FAILED


def neighbours(ifname: str) -> dict[str, str]:
    """The kernel's neighbour entries on ifname, both families: address -> MAC (entries still
    resolving or failed left out). Blocking: call it off the event loop."""

    def work(ipr) -> dict[str, str]:
        index = _lookup(ipr, ifname)
        if index is None:
            raise OSError(errno.ENODEV, f"no interface {ifname}")
        out = {}
        for msg in ipr.get_neighbours(ifindex=index):
            dst, mac = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
            if dst and mac and not msg["state"] & _NUD_UNRESOLVED:
                out[str(ipaddress.ip_address(dst))] = _norm_mac(mac)
        return out

    return _netlink(work)


def build_garp(mac: str, address: str) -> bytes:
    """A gratuitous ARP request (42 bytes, like keepalived's): broadcast, sender = target = address.

    Ethernet: dst ff:ff:ff:ff:ff:ff, src mac, type 0x0806. ARP: htype 1, ptype 0x0800, hlen 6,
    plen 4, op 1 (request), sha mac, spa address, tha ff:ff:ff:ff:ff:ff, tpa address.
    """
    hw = _mac_bytes(mac)
    ip = ipaddress.IPv4Address(address).packed
    return (
        BROADCAST_MAC
        + hw
        + struct.pack("!H", ETH_P_ARP)
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        + hw
        + ip
        + BROADCAST_MAC
        + ip
    )


def build_unsolicited_na(mac: str, address: str, router: bool = False) -> bytes:
    """An unsolicited Neighbor Advertisement (RFC 4861 §7.2.6; 86 bytes, like keepalived's),
    the IPv6 twin of the gratuitous ARP: from the shared address to all nodes (ff02::1), hop
    limit 255, Override set (the cached link-layer address is replaced), Solicited clear,
    Router as the interface forwards or not, the target link-layer option = `mac`."""
    hw = _mac_bytes(mac)
    target = ipaddress.IPv6Address(address)
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0)
    body = struct.pack("!BBHI", NEIGHBOR_ADVERT, 0, 0, flags) + target.packed
    body += bytes((2, 1)) + hw  # option: target link-layer address, 8 bytes
    checksum = internet_checksum(
        ipv6.pseudo_header(target, ipv6.ALL_NODES, ICMPV6, len(body)) + body
    )
    body = body[:2] + checksum.to_bytes(2, "big") + body[4:]
    header = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, ipv6.HOP_LIMIT)
    header += target.packed + ipv6.ALL_NODES.packed
    return ALL_NODES_MAC + hw + struct.pack("!H", ETH_P_IPV6) + header + body


def forwarding(ifname: str) -> bool:
    """Does the interface forward IPv6 (a router: the Router flag of its advertisements)?"""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/forwarding") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def send_garp(ifname: str, address: str, mac: str | None = None, count: int = 1) -> int:
    """Send `count` gratuitous ARPs for `address` (unsolicited Neighbor Advertisements for an
    IPv6 one), back to back; returns how many went out.

    mac=None: from ifname with its own MAC. mac=<vmac>: from the vmac macvlan on ifname when it
    exists (else from ifname itself, with mac as the source). Raises OSError (ENODEV, ENETDOWN…).
    """
    out_if = ifname
    src: str | None
    if mac is not None:
        name = vmac_ifname(ifname, mac)
        if _exists(name):
            out_if = name
        src = _norm_mac(mac)
    else:
        src = mac_address(ifname)
        if src is None:
            raise OSError(errno.ENODEV, f"no interface {ifname}")
    if family.of(address) is family.IPV6:
        frame, ethertype = build_unsolicited_na(src, address, forwarding(ifname)), ETH_P_IPV6
    else:
        frame, ethertype = build_garp(src, address), ETH_P_ARP
    s = _packet_socket()
    sent = 0
    for _ in range(max(1, count)):
        s.sendto(frame, (out_if, ethertype))
        sent += 1
    return sent


def send_frame(ifname: str, dst_mac: str, src_mac: str, ethertype: int, payload: bytes) -> None:
    """One Ethernet frame with the given source MAC (the doctor's virtual-MAC probe)."""
    frame = _mac_bytes(dst_mac) + _mac_bytes(src_mac) + ethertype.to_bytes(2, "big") + payload
    _packet_socket().sendto(frame, (ifname, ethertype))


_packet_sockets: dict[int, socket.socket] = {}
_packet_lock = threading.Lock()


def _packet_socket() -> socket.socket:
    """The send-only AF_PACKET socket of the caller's network namespace, kept open.

    A packet socket with a protocol registers a receive hook on creation/bind, and bind() and
    close() each wait for an RCU grace period (synchronize_net): 8-25 ms apiece measured here,
    paid on every takeover before the first gratuitous ARP left. Protocol 0 receives nothing,
    and sendto() names the interface, so one socket serves every interface, unbound."""
    try:
        key = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        key = 0
    with _packet_lock:
        s = _packet_sockets.get(key)
        if s is None:
            s = _packet_sockets[key] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        return s
