"""Which unit holds which shared address, sampled every few milliseconds from outside the daemons.

One process (the chaos campaign runs it in the client namespace, so a fault that kills every
process of a unit does not kill it) enters each unit's namespace in turn (setns) and reads
(from a second thread: setns moves only the calling thread, and /proc/PID/ns/net shows the main
thread's, which stays home, so the lab never counts the sampler among a unit's processes):
  - the addresses (IPv4 and IPv6) and links over rtnetlink (a raw socket per namespace: a dump costs tens
    of microseconds, pyroute2's parsing would cost a millisecond);
  - only when a shared address is configured there: the fence sets (`ip carpool_fence` and,
    for IPv6 addresses, `ip6 carpool_fence`, set `live`) through libnftables, created inside
    the namespace.
A unit holds an address when it is configured on a link with carrier (an address on a link that
is down reaches nobody) and, if the namespace has the fence table, the address is a live
(unexpired) element of its set `live`; without the table a configured address counts as held.

Prints JSON lines with CLOCK_MONOTONIC times (system wide, so comparable with the campaign's
fault times): {"ev": "start"}, one {"ev": "held", "unit", "addr", "held", "configured",
"fence", "prev": the unit's sample before} per change, {"ev": "tick", "samples", "max_gap"} every second, {"ev": "end"}.
Bounded by --duration and stopped early by --stop-file.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import struct
import sys
import threading
import time

CLONE_NEWNET = 0x40000000
NLMSG_DONE, NLMSG_ERROR = 3, 2
RTM_GETLINK, RTM_NEWLINK, RTM_GETADDR, RTM_NEWADDR = 18, 16, 22, 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
FENCE_TABLE = "carpool_fence"

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Rtnl:
    """A minimal rtnetlink dumper bound to the namespace it was created in."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def _dump(self, kind: int, body: bytes):
        self.seq += 1
        msg = (
            struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
            + body
        )
        self.sock.send(msg)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    return
                if seq == self.seq:
                    if mtype in (NLMSG_DONE, NLMSG_ERROR):
                        return
                    yield mtype, data[off + 16 : off + length]
                off += (length + 3) & ~3

    def addresses(self, family: int = socket.AF_INET) -> dict[str, int]:
        """address -> ifindex, of one family (AF_UNSPEC: both), as inet_ntop writes it (for
        IPv6 the same as str(ipaddress.IPv6Address))."""
        found: dict[str, int] = {}
        for mtype, msg in self._dump(RTM_GETADDR, struct.pack("=BBBBI", family, 0, 0, 0, 0)):
            if mtype != RTM_NEWADDR:
                continue
            index = struct.unpack_from("=I", msg, 4)[0]
            af, size = (socket.AF_INET6, 16) if msg[0] == socket.AF_INET6 else (socket.AF_INET, 4)
            off, local, address = 8, None, None
            while off + 4 <= len(msg):
                alen, atype = struct.unpack_from("=HH", msg, off)
                if alen < 4:
                    break
                if atype == IFA_LOCAL:
                    local = socket.inet_ntop(af, msg[off + 4 : off + 4 + size])
                elif atype == IFA_ADDRESS:
                    address = socket.inet_ntop(af, msg[off + 4 : off + 4 + size])
                off += (alen + 3) & ~3
            key = local or address
            if key:
                found[key] = index
        return found

    def carriers(self) -> set[int]:
        """ifindexes that are up with carrier."""
        up = set()
        for mtype, msg in self._dump(
            RTM_GETLINK, struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0)
        ):
            if mtype == RTM_NEWLINK:
                _fam, _pad, _type, index, flags, _change = struct.unpack_from("=BBHiII", msg)
                if flags & IFF_UP and flags & IFF_LOWER_UP:
                    up.add(index)
        return up


class Fence:
    """The fence set of one namespace through libnftables (created inside it)."""

    def __init__(self):
        try:
            import nftables

            self.nft = nftables.Nftables()
            self.nft.set_json_output(True)
        except Exception:  # no library: the sampler says so in its start line
            self.nft = None

    def live(self, families: tuple[str, ...] = ("ip",)) -> set[str] | None:
        """The live elements of the families' sets; None if there is no fence table (or no
        library)."""
        if self.nft is None:
            return None
        found: set[str] = set()
        tables = 0
        for family in families:
            elements = self._live(family)
            if elements is not None:
                found |= elements
                tables += 1
        return found if tables else None

    def _live(self, family: str) -> set[str] | None:
        assert self.nft is not None
        rc, out, _err = self.nft.cmd(f"list set {family} {FENCE_TABLE} live")
        if rc != 0:
            return None
        found = set()
        for item in json.loads(out).get("nftables", []):
            for elem in item.get("set", {}).get("elem", []) or []:
                # the kernel leaves expired elements out of a dump; JSON rounds "expires" to
                # whole seconds, so 0 says nothing here
                if isinstance(elem, dict):
                    found.add(str(elem.get("elem", {}).get("val")))
                else:
                    found.add(str(elem))
        return found


class Unit:
    def __init__(self, name: str, ns: str):
        self.name = name
        self.fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        setns(self.fd)
        self.rtnl = Rtnl()
        self.fence = Fence()

    def sample(self, shared: list[str]) -> dict[str, tuple[bool, bool, bool | None]]:
        """address -> (held, configured on a link with carrier, in the fence or None)."""
        setns(self.fd)  # libnftables may open its socket per command
        ipv6 = any(":" in a for a in shared)
        addrs = self.rtnl.addresses(socket.AF_UNSPEC if ipv6 else socket.AF_INET)
        present = [a for a in shared if a in addrs]
        if not present:
            return {a: (False, False, None) for a in shared}
        up = self.rtnl.carriers()
        live = self.fence.live(("ip", "ip6") if ipv6 else ("ip",))
        out = {}
        for a in shared:
            configured = a in addrs and addrs[a] in up
            fenced = None if live is None else a in live
            out[a] = (configured and fenced is not False, configured, fenced)
        return out


def run(
    units: dict[str, str],
    shared: list[str],
    period: float,
    duration: float,
    stop_file: str | None,
    out,
) -> None:
    failed = []

    def work():
        try:
            _sample(units, shared, period, duration, stop_file, out)
        except BaseException as e:  # reported by the main thread
            failed.append(e)

    thread = threading.Thread(target=work, name="sampler", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _sample(
    units: dict[str, str],
    shared: list[str],
    period: float,
    duration: float,
    stop_file: str | None,
    out,
) -> None:
    samplers = [Unit(name, ns) for name, ns in units.items()]

    def emit(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    start = time.monotonic()
    emit(
        {
            "ev": "start",
            "t": start,
            "units": units,
            "shared": shared,
            "period": period,
            "nftables": all(s.fence.nft is not None for s in samplers),
        }
    )
    last: dict[tuple[str, str], tuple] = {}
    seen_at = {unit.name: start for unit in samplers}  # each unit's previous sample
    samples, max_gap, prev, next_tick = 0, 0.0, start, start + 1.0
    limit = int(duration / period) + 1
    while samples < limit:
        now = time.monotonic()
        if now - start > duration:
            break
        for unit in samplers:
            try:
                seen = unit.sample(shared)
            except OSError as e:  # a namespace removed under us: the lab is going down
                emit({"ev": "error", "t": time.monotonic(), "unit": unit.name, "error": str(e)})
                return
            t, before = time.monotonic(), seen_at[unit.name]
            seen_at[unit.name] = t
            for addr, state in seen.items():
                if last.get((unit.name, addr)) != state:
                    last[(unit.name, addr)] = state
                    emit(
                        {
                            "ev": "held",
                            "t": t,
                            "prev": before,
                            "unit": unit.name,
                            "addr": addr,
                            "held": state[0],
                            "configured": state[1],
                            "fence": state[2],
                        }
                    )
        samples += 1
        t = time.monotonic()
        max_gap, prev = max(max_gap, t - prev), t
        if t >= next_tick:
            next_tick += 1.0
            emit({"ev": "tick", "t": t, "samples": samples, "max_gap": round(max_gap, 4)})
            max_gap = 0.0
            if stop_file and os.path.exists(stop_file):
                break
        time.sleep(max(0.0, period - (time.monotonic() - now)))
    emit({"ev": "end", "t": time.monotonic(), "samples": samples})


def held_intervals(
    lines: list[dict], end: float, surely: bool = False
) -> dict[tuple[str, str], list[tuple]]:
    """(unit, address) -> [(start, end), ...] from the sampler's change lines.

    A change is seen at a sample ("t") and happened after the unit's sample before it ("prev"):
    the time between is a gap when the sampler was starved. `surely`: only the time the address
    was seen held (from the sample that saw it taken to the last one that saw it still held);
    else all it may have been held (from just after the sample before it was seen, to the sample
    that saw it gone). Double holders and stale addresses are judged on the first, missing
    holders on the second: a starved sampler never counts against the pair."""
    spans: dict[tuple[str, str], list] = {}
    since: dict[tuple[str, str], float] = {}
    for line in lines:
        if line.get("ev") != "held":
            continue
        key = (line["unit"], line["addr"])
        seen, before = line["t"], line.get("prev", line["t"])
        if line["held"] and key not in since:
            since[key] = seen if surely else before
        elif not line["held"] and key in since:
            start, stop = since.pop(key), before if surely else seen
            spans.setdefault(key, []).append((start, max(start, stop)))
    for key, t in since.items():
        spans.setdefault(key, []).append((t, end))
    return spans


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unit", action="append", required=True, metavar="NAME=NETNS")
    p.add_argument("--addr", action="append", required=True, help="a shared address")
    p.add_argument("--period", type=float, default=0.01)
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--stop-file")
    args = p.parse_args(argv)
    units = dict(u.split("=", 1) for u in args.unit)
    run(units, args.addr, args.period, args.duration, args.stop_file, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
