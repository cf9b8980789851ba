"""The fence: a shared address serves only while its holder's daemon keeps saying so.

A killed (every process SIGKILLed) or frozen (SIGSTOP, a hung loop) unit cannot withdraw its
shared addresses, and the partner takes them over: two holders. The kernel must end that on its
own. Address lifetimes (valid_lft) do, but only to the second: IPv4 lifetimes are whole seconds
and the kernel checks them at most once a second (devinet.c check_lifetime), too coarse for
the fast profile. An nftables set with a timeout is exact to the millisecond (an element stops
matching the moment it expires, checked at lookup), so:

    table ip carpool_fence   prerouting: drop to a shared address that is not in @live
                             output:     drop from a shared address that is not in @live
    table arp carpool_fence  input:  no ARP answer for a shared address not in @live
                             output: no ARP sent from a shared address not in @live
    table ip6 carpool_fence  as ip, for IPv6 shared addresses; its output rule also stops the
                             kernel's Neighbor Advertisements for them (sent from the target)

After a planned failover the old unit finishes its HTTP connections (dataplane/handover.py):
their listeners (address . port) are in @finishing for the handover period, and pass both ways
except a new connection's SYN. A client whose ARP entry still names the old unit would open it
on the old unit's new HAProxy worker, which the finishing does not wait for: the connection
would lose its address mid-use. Dropped, the SYN is sent again and meets the new active unit.

The active unit keeps the addresses it holds in @live with a timeout of a few adverts,
refreshed as it advertises; when the daemon dies or stops, the elements expire and the
addresses go dark within that timeout, while the kernel lifetime (node/addresses.py) removes
them a few seconds later. The tables outlive the daemon on purpose. Refreshing flushes and
re-adds the set in one transaction: re-adding an element does not renew its timeout on every
kernel, and the flush drops addresses no longer held.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from .. import events
from ..family import IPV4, IPV6
from .nfset import SetRefresher, keys
from .nft import NftCommands

log = events.logger("carpool.fence", events.Kind.ADDRESSES)
TABLE = "carpool_fence"
FAMILY_TABLES = (IPV4, IPV6)
FAMILIES = (IPV4.nft, IPV6.nft, "arp")
Address = IPv4Address | IPv6Address
FAST_BOUND = 0.08  # fast profiles: dark within 80 ms of the last refresh (the target is 100 ms)


def fence_timeout(advert_interval: float) -> float:
    """How long a held address stays live without a refresh: past 1.75 adverts (a late advert
    must not darken a healthy master), within two (the stale-address bound); fast profiles
    get FAST_BOUND, which leaves room for a few late adverts."""
    return max(1.75 * advert_interval, min(FAST_BOUND, 4 * advert_interval))


def _of(table: str, addresses: Iterable[Address]) -> list[Address]:
    """The addresses a table holds: IPv6 ones in ip6, IPv4 ones in ip and arp."""
    version = IPV6.version if table == IPV6.nft else IPV4.version
    return sorted({a for a in addresses if a.version == version}, key=int)


def _elements(addresses: list[Address], timeout_ms: int | None = None) -> str:
    suffix = f" timeout {timeout_ms}ms" if timeout_ms is not None else ""
    return ", ".join(f"{a}{suffix}" for a in addresses)


def _ip_rules(match: str) -> str:
    return (
        "chain prerouting { type filter hook prerouting priority -400; policy accept; "
        f"{match} daddr . tcp dport @finishing tcp flags & (syn | ack) != syn accept ; "
        f"{match} daddr @shared {match} daddr != @live counter drop ; }} ; "
        "chain output { type filter hook output priority -400; policy accept; "
        f"{match} saddr . tcp sport @finishing accept ; "
        f"{match} saddr @shared {match} saddr != @live counter drop ; }} ;"
    )


def install_commands(shared: list[Address]) -> str:
    """The fence tables, replaced as a whole: every configured shared address, none live."""
    arp_rules = (
        "chain input { type filter hook input priority 0; policy accept; "
        "arp daddr ip @shared arp daddr ip != @live counter drop ; } ; "
        "chain output { type filter hook output priority 0; policy accept; "
        "arp saddr ip @shared arp saddr ip != @live counter drop ; } ;"
    )
    lines = []
    tables = [(f.nft, _ip_rules(f.nft), f.nft_type) for f in FAMILY_TABLES]
    for family, rules, kind in [*tables, ("arp", arp_rules, IPV4.nft_type)]:
        mine = _of(family, shared)
        elements = f" elements = {{ {_elements(mine)} }} ;" if mine else ""
        lines.append(f"table {family} {TABLE} {{ }}")
        lines.append(f"delete table {family} {TABLE}")
        finishing = (
            f"set finishing {{ type {kind} . inet_service ; flags timeout ; }} ; "
            if family != "arp"
            else ""
        )
        lines.append(
            f"table {family} {TABLE} {{ "
            f"set shared {{ type {kind} ;{elements} }} ; "
            f"set live {{ type {kind} ; flags timeout ; }} ; {finishing}{rules} }}"
        )
    return "\n".join(lines) + "\n"


def refresh_commands(live: list[Address], timeout: float) -> str:
    """One transaction: @live becomes exactly `live`, each element for `timeout` seconds."""
    ms = max(1, round(timeout * 1000))
    lines = []
    for family in FAMILIES:
        lines.append(f"flush set {family} {TABLE} live")
        mine = _of(family, live)
        if mine:
            lines.append(f"add element {family} {TABLE} live {{ {_elements(mine, ms)} }}")
    return "\n".join(lines) + "\n"


class Fence:
    """The daemon's handle on the fence tables (libnftables in process: a refresh costs
    ~0.3 ms, a `nft` subprocess ~5 ms). Never raises: a fence that cannot be set is logged,
    counted and shown in status, and the unit goes on without it."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.live: tuple[Address, ...] = ()
        self._asked: list[Address] | None = None  # the last list hold() had, and its set:
        self._wanted: tuple[Address, ...] = ()
        self.installed = False
        self.refreshes = 0
        self._last_refresh = float("-inf")
        self._nft = NftCommands(log, "fence")
        self._raw = SetRefresher()  # the refresh's own netlink batch; libnftables if it fails
        self._keys: tuple[tuple[Address, ...], dict[str, list[bytes]]] | None = None
        self.raw_failures = 0
        self.raw_error = ""

    def _run(self, commands: str) -> bool:
        return self._nft.run(commands)

    def install(self, shared: list[Address]) -> None:
        """At start and when the configured shared addresses change; nothing is live after."""
        self.installed = self._run(install_commands(shared))
        self.live, self._last_refresh = (), float("-inf")

    def hold(self, live: list[Address], now: float, force: bool = False) -> None:
        """Keep `live` serving for another timeout. Called with each advert; refreshes once a
        third of the timeout has passed (or at once with force: a takeover, a new set)."""
        if not self.installed:
            return
        if live is not self._asked:  # the holder's list is built once per configuration
            self._asked = live
            self._wanted = tuple(sorted(set(live), key=lambda a: (a.version, int(a))))
        wanted = self._wanted
        if not force and wanted == self.live and now - self._last_refresh < self.timeout / 3:
            return
        if self._refresh(wanted):
            self.live, self._last_refresh = wanted, now
            self.refreshes += 1

    def _refresh(self, live: tuple[Address, ...]) -> bool:
        """@live becomes `live`, each element for the timeout: one raw nf_tables batch (tens
        of microseconds), or libnftables when that fails (counted, shown in status)."""
        if self._keys is None or self._keys[0] != live:
            self._keys = (live, {f: keys(live, f) for f in FAMILIES})
        try:
            self._raw.refresh(TABLE, "live", self._keys[1], max(1, round(self.timeout * 1000)))
            return True
        except OSError as e:
            self.raw_failures += 1
            self.raw_error = str(e)[:200]
            return self._run(refresh_commands(list(live), self.timeout))

    def finish(self, listeners: list[tuple[Address, int]], seconds: float) -> bool:
        """A planned failover: these (address, port) pass both ways for `seconds` (or until
        finished()), whatever @live says; the addresses stay dark to ARP and NDP."""
        if not self.installed:
            return False
        ms = max(1, round(seconds * 1000))
        lines = []
        for family in (IPV4, IPV6):
            mine = [
                f"{a} . {p} timeout {ms}ms" for a, p in listeners if a.version == family.version
            ]
            if mine:
                lines.append(f"add element {family.nft} {TABLE} finishing {{ {', '.join(mine)} }}")
        return not lines or self._run("\n".join(lines) + "\n")

    def finished(self) -> None:
        if self.installed:
            self._run("".join(f"flush set {f.nft} {TABLE} finishing\n" for f in FAMILY_TABLES))

    def release(self) -> None:
        """Dark at once: before the addresses are removed (removing takes a few netlink calls)."""
        if self.installed and self._refresh(()):
            self.live, self._last_refresh = (), float("-inf")

    def remove(self) -> None:
        """A clean stop: the addresses are gone already, the tables may go too."""
        self._run("".join(f"table {f} {TABLE} {{ }}\ndelete table {f} {TABLE}\n" for f in FAMILIES))
        self.installed, self.live = False, ()

    def status(self) -> dict:
        return {
            "installed": self.installed,
            "timeout": self.timeout,
            "live": [str(a) for a in self.live],
            "refreshes": self.refreshes,
            "failures": self._nft.failures,
            "last_error": self._nft.last_error,
            "raw_failures": self.raw_failures,  # fell back to libnftables
            "raw_error": self.raw_error,
        }


def darken() -> None:
    """The supervisor, after its worker died: nothing held serves from now on."""
    f = Fence(0.0)
    f.installed = True
    f.release()
