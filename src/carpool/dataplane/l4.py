"""Apply the L4 ruleset with `nft -j -f -` (one atomic transaction), keeping the last good one.

A failed apply changes nothing in the kernel (nft's transaction is all or nothing); the daemon
logs why and reports it in status, and the previous data plane keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from .. import events
from ..config.document import Document
from . import nft
from .drain import Drain

log = events.logger("carpool.l4", events.Kind.DATAPLANE)
FORWARD = {"ip": "/proc/sys/net/ipv4/ip_forward", "ip6": "/proc/sys/net/ipv6/conf/all/forwarding"}


_COUNTER = re.compile(r"^\s*(.*?)\s*counter packets (\d+) bytes (\d+)")


def parse_counters(listing: str) -> list[tuple[str, int, int]]:
    """(rule, packets, bytes) of every rule with a counter in an `nft list table` listing."""
    found = []
    for line in listing.splitlines():
        m = _COUNTER.match(line)
        if m:
            found.append((m[1][:120] or "rule", int(m[2]), int(m[3])))
    return found


_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_COMMENT = re.compile(r'comment "([^"]*)"\s*$')


def new_connections(listing: str) -> list[tuple[str, int]]:
    """(service, packets) of each counted rule of chain prerouting: nat rules see only a
    connection's first packet, so these are the services' new connections."""
    found, chain = [], ""
    for line in listing.splitlines():
        m = _CHAIN.match(line)
        if m:
            chain = m[1]
            continue
        counted, named = _COUNTER.match(line), _COMMENT.search(line)
        if chain == "prerouting" and counted and named:
            found.append((named[1], int(counted[2])))
    return found


# conntrack -L: "tcp 6 431999 ESTABLISHED src=C dst=VIP sport=.. dport=P src=RS dst=C sport=RP .."
_FLOW = re.compile(
    r"^(tcp|udp)\s+\d+\s+\d+\s+(?:([A-Z_]+)\s+)?src=\S+ dst=(\S+) sport=\d+ dport=(\d+)"
    r"(?: \[UNREPLIED\])? src=(\S+) dst=\S+ sport=(\d+)"
)
MAX_FLOWS = 100_000  # a larger table is not listed for the statistics (its gauge is left out)
COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"


def parse_flows(listing: str) -> dict[tuple[str, str, int, str, int], int]:
    """Open flows by (protocol, original destination, port, reply source, port) in a
    `conntrack -L` listing: TCP established ones, UDP all."""
    found: dict[tuple[str, str, int, str, int], int] = {}
    for line in listing.splitlines():
        m = _FLOW.match(line)
        if m and (m[1] == "udp" or m[2] == "ESTABLISHED"):
            key = (m[1], m[3], int(m[4]), m[5], int(m[6]))
            found[key] = found.get(key, 0) + 1
    return found


class L4Dataplane:
    def __init__(self) -> None:
        self.applied: dict | None = None
        self.stats_applied: dict | None = None
        self._stats_doc: Document | None = None  # the document the counters were made for
        self.last_error = ""
        self.applies = 0
        self.failures = 0
        self.last_apply: float | None = None
        self._lock = asyncio.Lock()

    async def apply(self, doc: Document, healthy, cut: frozenset[Drain] = frozenset()) -> bool:
        """cut: draining servers whose flows are reset (their drain timeout ran out)."""
        ruleset = nft.ruleset(doc, healthy, cut)
        async with self._lock:
            if ruleset == self.applied:
                await self._apply_stats(doc)
                return True
            for family in {nft.family_of(v.address) for v in doc.virtual_service if v.type == "l4"}:
                enable_forwarding(family)
            batch = nft.carry_over(ruleset, await self._persisted(ruleset))
            error = await _load(batch)
            if error:
                self.failures += 1
                self.last_error = error
                log.error("nft apply failed, the previous data plane stays: %s", self.last_error)
                return False
            self.applied, self.last_error = ruleset, ""
            self.applies += 1
            self.last_apply = time.time()
            await self._apply_stats(doc)
            return True

    async def _apply_stats(self, doc: Document) -> None:
        """The counters' tables, when the services' servers changed (a failure costs the
        statistics only: logged, tried again with the next change)."""
        if doc is self._stats_doc:
            return  # a health flip: the same document, the same counters
        wanted = nft.stats_ruleset(doc)
        if wanted == self.stats_applied:
            self._stats_doc = doc
            return
        error = await _load(wanted)
        if error:
            log.error("nft: the traffic counters were not loaded: %s", error)
            return
        self.stats_applied, self._stats_doc = wanted, doc

    async def counters(self) -> list[tuple[str, int, int]]:
        """(rule, packets, bytes) of the rules with a counter in our table ([] if it is not
        there or nft does not answer in time)."""
        return [c for f in nft.FAMILIES for c in parse_counters(await _list_table(family=f))]

    async def connections(self) -> list[tuple[str, int]]:
        """(service, new connections) from both families' tables ([] if nft does not answer)."""
        return [c for f in nft.FAMILIES for c in new_connections(await _list_table(family=f))]

    async def traffic_counters(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(family, counter name) -> (packets, bytes) of the named counters of both tables."""
        found = {}
        for f in nft.FAMILIES:
            listing = await _run(["nft", "-j", "list", "counters", "table", f, nft.STATS_TABLE])
            try:
                items = json.loads(listing).get("nftables", []) if listing else []
            except ValueError:
                continue
            for item in items:
                c = item.get("counter") if isinstance(item, dict) else None
                if isinstance(c, dict) and isinstance(c.get("name"), str):
                    found[(f, c["name"])] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
        return found

    async def flows(self) -> dict[tuple[str, str, int, str, int], int] | None:
        """The open flows through the services (parse_flows); None when the table holds more
        than MAX_FLOWS (listing it every few seconds would cost too much) or cannot be read."""
        try:
            with open(COUNT) as f:
                if int(f.read().strip() or 0) > MAX_FLOWS:
                    return None
        except (OSError, ValueError):
            return None
        found: dict[tuple[str, str, int, str, int], int] = {}
        # conntrack filters (in C) what is counted: a busy table is mostly TIME_WAIT, and a
        # Python parse of 100,000 lines every few seconds took the CPU from the traffic
        for family in ("ipv4", "ipv6"):
            for which in (["-p", "tcp", "--state", "ESTABLISHED"], ["-p", "udp"]):
                listing = await _run(["conntrack", "-L", "-f", family, *which], timeout=5.0)
                if listing is None:
                    return None
                found |= parse_flows(listing)
        return found

    async def _persisted(self, ruleset: dict) -> dict:
        """The running table's persistent clients, when the new ruleset has persistence sets
        (a client that arrives between this read and the load is scheduled anew: harmless)."""
        if not any("set" in c.get("add", {}) for c in ruleset["nftables"]):
            return {}
        found: dict = {}
        for family in nft.FAMILIES:
            listing = await _list_table("-j", timeout=10.0, family=family)  # the apply waits
            if not listing:
                continue  # no table yet
            try:
                found |= nft.persisted(json.loads(listing))
            except ValueError as e:
                log.warning("cannot read the persistent clients, they are scheduled anew: %s", e)
        return found

    async def clear(self) -> None:
        for family in nft.FAMILIES:
            for table in (nft.TABLE, nft.STATS_TABLE):
                proc = await asyncio.create_subprocess_exec(
                    "nft",
                    "delete",
                    "table",
                    family,
                    table,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await proc.wait()
        self.applied = self.stats_applied = self._stats_doc = None

    def status(self) -> dict:
        return {
            "applies": self.applies,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_apply": self.last_apply,
        }


async def _load(document: dict) -> str:
    """`nft -j -f -` of an nft JSON document (one transaction); "" or nft's error."""
    proc = await asyncio.create_subprocess_exec(
        "nft",
        "-j",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(json.dumps(document).encode())
    return "" if proc.returncode == 0 else err.decode(errors="replace").strip()[:500] or "failed"


def enable_forwarding(
    family: str, why: str = "virtual services are NATed to the real servers"
) -> None:
    name = "IPv6" if family == "ip6" else "IPv4"
    try:
        with open(FORWARD[family]) as f:
            if f.read().strip() == "1":
                return
        with open(FORWARD[family], "w") as f:
            f.write("1")
        log.info("enabled %s forwarding (%s)", name, why)
    except OSError as e:
        log.error("cannot enable %s forwarding: %s", name, e)


async def _list_table(*options: str, timeout: float = 2.0, family: str = nft.FAMILY) -> str:
    """`nft [options] list table` of our table; "" when it is not there or nft fails or does
    not answer within timeout."""
    out = await _run(["nft", *options, "list", "table", family, nft.TABLE], timeout)
    return out or ""


async def _run(argv: list[str], timeout: float = 2.0) -> str | None:
    """argv's output; None when it cannot run, fails or does not answer within timeout."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out.decode(errors="replace") if proc.returncode == 0 else None
