"""Interop with foreign HA daemons, on real packets in the lab: carpool unit a (cp-a) against
ucarp 1.5 (CARP, HMAC-SHA1) or keepalived 2.2 (VRRPv3) running in cp-b instead of carpool unit b.

Both sides share exactly one address, 198.18.0.10/24 on eth0 (ucarp signs exactly one), so
unit a is configured with eth0 only (the lab's `interface.<name>: None` override removes eth1
and eth2). Every scenario runs against each peer (protocol carp vs ucarp, vrrp3 vs keepalived),
and the first two against keepalived over IPv6 too (2001:2::10/64: VRRPv3 from the link-local
addresses to ff02::12, RFC 9568):

- started together with equal rank, they elect exactly one master, which stays;
- carpool master, peer backup: carpool stopped (SIGTERM of `carpool run`, or SIGKILL of its
  worker daemon: the supervisor bows out) -> the peer takes the address, having seen the
  bow-out; carpool back -> it stays backup under the peer; the peer stopped by its pid ->
  carpool takes the address;
- a stronger, preempting peer takes over from carpool, and carpool yields;
- carpool with `preferred = first` preempts a master peer, and the peer yields.

"Holds the address" is the kernel's view (`ip -o addr show dev eth0` in each namespace);
exactly one namespace may hold it once settled, and the states both daemons report must
agree with that. Steady windows are longer than the other side's master-down interval, so
staying backup proves that side accepted the master's adverts (HMAC, checksum, interval).
carpool must never drop a peer advert (`drops` in its status stays empty).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from carpool.lab import LabError, LabTimeout
from carpool.lab.peers import Peer, keepalived, ucarp
from carpool.lab.topology import SHARED_LAN, SHARED_LAN6
from carpool.lab.units import SECRET, VHID

IFACE = "eth0"
ONLY_ETH0 = {"interface.eth1": None, "interface.eth2": None, "interface.eth0.shared": [SHARED_LAN]}
LAB_OPTIONS = {"start_units": False, "servers": 0, "overrides": ONLY_ETH0}
TAKEOVER = 10.0  # s: the longest master-down here (3.8 s) + start-up and scripts, loaded machine
SETTLE = 1.6  # s a sole holder must last before it counts (> one advert interval, 1.4 s)
STEADY = 4.2  # s: longer than every master-down here (carp 3-3.4 s, vrrp3 3.6-3.8 s)


# -- the peers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerKind:
    """A foreign daemon and the carpool protocol that talks to it. Strength is the peer's rank
    against carpool's defaults (CARP advskew 0, VRRP priority 100): equal, weaker (never takes
    over from a live carpool master) or stronger (and preempting)."""

    name: str
    protocol: str
    vip: str = SHARED_LAN  # the one shared address

    @property
    def family(self) -> str:
        return "-6" if ":" in self.vip else "-4"

    def make(self, lab, strength: str) -> Peer:
        if self.name == "ucarp":
            # CARP: lower advskew wins. "stronger" = carpool advertises advskew 100 (below).
            return ucarp(
                lab,
                "b",
                vhid=VHID,
                secret=SECRET,
                address=self.vip,
                iface=IFACE,
                advbase=1,
                advskew=100 if strength == "weaker" else 0,
                preempt=strength == "stronger",
            )
        priority = {"equal": 100, "weaker": 50, "stronger": 150}[strength]
        return keepalived(
            lab, "b", vrid=VHID, address=self.vip, iface=IFACE, priority=priority, advert_int=1
        )

    def carpool_overrides(self, strength: str) -> dict:
        extra = {"ha.advskew": 100} if self.protocol == "carp" and strength == "stronger" else {}
        if self.protocol == "carp":  # ucarp speaks CARP's own HMAC, not the carpool advert
            extra["ha.auth"] = "carp"
        return {
            **ONLY_ETH0,
            "interface.eth0.shared": [self.vip],
            "ha.protocol": self.protocol,
            "ha.ha_timeout": 3,
            **extra,
        }

    def bow_out_seen(self, output: str) -> bool:
        """The peer's own words for "the master bowed out / resigned, take over now"."""
        if self.name == "ucarp":
            return "Putting MASTER DOWN (going to time out)" in output
        return "received priority 0 advertisement" in output

    def preempted(self, output: str) -> bool:
        if self.name == "ucarp":
            return "Putting MASTER down - preemption" in output
        return "Entering MASTER STATE" in output


UCARP = PeerKind("ucarp", "carp")
KEEPALIVED = PeerKind("keepalived", "vrrp3")
KEEPALIVED6 = PeerKind("keepalived", "vrrp3", SHARED_LAN6)


# -- the pair ---------------------------------------------------------------------------------
class Pair:
    """carpool unit a + one foreign peer in cp-b, with the checks every test uses. Every
    failure message carries the carpool status and log tail and the peer's output."""

    def __init__(self, lab, kind: PeerKind):
        self.lab = lab
        self.kind = kind
        self.peer: Peer | None = None

    # set-up
    def configure(self, strength: str, preferred: str = "none") -> None:
        self.lab.write_configs(preferred=preferred, overrides=self.kind.carpool_overrides(strength))
        doc = self.lab.unit_config("a")
        assert [i["name"] for i in doc["interface"]] == [IFACE], doc["interface"]
        assert doc["interface"][0]["shared"] == [self.kind.vip]

    def start_peer(self, strength: str) -> Peer:
        assert self.peer is None or not self.peer.running()
        self.peer = self.kind.make(self.lab, strength)
        return self.peer.start()

    def stop_peer(self) -> int | None:
        """SIGTERM the peer by its pid; its exit status."""
        return self.peer.stop() if self.peer is not None else None

    # facts
    def holders(self) -> set[str]:
        """The units whose namespace has the shared address on eth0."""
        found = set()
        for unit in ("a", "b"):
            out = self.lab.exec(
                unit, ["ip", "-o", self.kind.family, "addr", "show", "dev", IFACE], check=True
            ).stdout
            if f" {self.kind.vip} " in out:
                found.add(unit)
        return found

    def carpool(self) -> dict:
        return self.lab.unit_status("a")

    def consistent(self, holder: str) -> str | None:
        """None when `holder` alone holds the address and both daemons say so, else why not."""
        holders = self.holders()
        if holders != {holder}:
            return f"holders {sorted(holders)}"
        carpool = self.carpool().get("state")
        running = self.lab.daemon_pid("a") is not None
        want = "master" if holder == "a" else ("backup" if running else None)
        if carpool != want:
            return f"carpool state {carpool}, want {want}"
        if self.peer is not None and self.peer.running():
            peer_want = "master" if holder == "b" else "backup"
            if self.peer.state() != peer_want:
                return f"{self.kind.name} state {self.peer.state()}, want {peer_want}"
        elif holder == "b":
            return f"{self.kind.name} is not running"
        return None

    def context(self) -> str:
        status = self.carpool()
        brief = {k: status.get(k) for k in ("state", "reason", "drops", "counters", "error")}
        try:
            holders = sorted(self.holders())
        except LabError as e:
            holders = f"? ({e})"
        peer = self.peer.describe(40) if self.peer else f"--- {self.kind.name}: not started"
        return (
            f"holders of {self.kind.vip}: {holders}\ncarpool a status: {json.dumps(brief)}\n"
            f"--- carpool a log (tail):\n{self.lab.log_tail('a', 30)}\n{peer}"
        )

    # waits
    def wait(self, predicate, timeout: float, what: str):
        try:
            return self.lab.wait_for(predicate, timeout, interval=0.1, what=what)
        except LabTimeout as e:
            pytest.fail(f"{e}\n{self.context()}", pytrace=False)

    def wait_holder(self, holder: str | None = None, timeout: float = TAKEOVER) -> str:
        """Wait until one unit (`holder`, or either) alone holds the address, agreed by both
        daemons, for SETTLE seconds; return it."""
        seen = [None, 0.0]

        def sole():
            candidates = [holder] if holder else ["a", "b"]
            now = time.monotonic()
            who = next((u for u in candidates if self.consistent(u) is None), None)
            if who != seen[0]:
                seen[:] = [who, now]
            return who if who and now - seen[1] >= SETTLE else None

        name = (
            f"unit {holder} ({'carpool' if holder == 'a' else self.kind.name})"
            if holder
            else "one unit"
        )
        return self.wait(sole, timeout + SETTLE, f"{name} alone holds {self.kind.vip}")

    def steady(self, holder: str, seconds: float = STEADY) -> None:
        """`holder` keeps the address alone, agreed by both daemons, for `seconds`; fails at
        the first sample that says otherwise."""
        end = time.monotonic() + seconds

        def held_throughout():
            why = self.consistent(holder)
            if why is not None:
                pytest.fail(
                    f"unit {holder} should keep {self.kind.vip} alone for {seconds:g}s: {why}\n"
                    f"{self.context()}",
                    pytrace=False,
                )
            return time.monotonic() >= end

        self.wait(held_throughout, seconds + 10.0, f"unit {holder} keeps {self.kind.vip}")

    def no_drops(self) -> None:
        status = self.carpool()
        assert status.get("drops") == {}, (
            f"carpool dropped {self.kind.name} adverts: {status.get('drops')}\n{self.context()}"
        )

    # clean-up
    def close(self) -> None:
        """Peer stopped by pid, carpool unit stopped, no shared address left anywhere."""
        errors = []
        try:
            self.stop_peer()
        except Exception as e:  # keep cleaning
            errors.append(f"stopping {self.kind.name}: {e}")
        try:
            self.lab.stop_unit("a")
        except Exception as e:
            errors.append(f"stopping carpool a: {e}")
        for unit in ("a", "b"):
            self.lab.exec(unit, ["ip", "addr", "del", self.kind.vip, "dev", IFACE])  # absent: fine
        if errors:
            raise LabError("; ".join(errors))


def _id(kind: PeerKind) -> str:
    return kind.name + ("6" if kind.family == "-6" else "")


# keepalived over IPv6 runs the scenarios where the advert's family matters (each side takes
# the other's adverts and bow-out); preemption is the same election code in either family
EVERY_PEER = pytest.mark.parametrize(
    "pair", [UCARP, KEEPALIVED, KEEPALIVED6], indirect=True, ids=_id
)
IPV4_PEERS = pytest.mark.parametrize("pair", [UCARP, KEEPALIVED], indirect=True, ids=_id)


@pytest.fixture
def pair(request, lab):
    the_pair = Pair(lab, request.param)
    try:
        yield the_pair
    finally:
        the_pair.close()


def _carpool_alone_is_master(pair: Pair, strength: str, preferred: str = "none") -> None:
    pair.configure(strength, preferred)
    pair.lab.start_unit("a")
    pair.wait_holder("a")


# -- the tests --------------------------------------------------------------------------------
@EVERY_PEER
def test_started_together_one_master(pair):
    """Equal rank, started at the same moment: exactly one master, and it stays."""
    lab = pair.lab
    pair.configure("equal")
    lab.start_unit("a", wait=False)
    pair.start_peer("equal")
    holder = pair.wait_holder()
    pair.steady(holder)
    pair.no_drops()
    if holder == "b":
        assert pair.carpool()["counters"]["adverts_received"] >= 3, pair.context()


@pytest.mark.parametrize(
    ("pair", "how"),
    [
        # ucarp sees the supervisor's bow-out (a killed worker); a worker's own bow-out on
        # SIGTERM is keepalived's case below, and carpool's partner's in test_failover
        (UCARP, "sigkill-daemon"),
        # keepalived's IPv4 instance takes carpool's adverts and yields in the preemption
        # tests; the failover both ways runs over IPv6 (a 25 s test less in make test)
        (KEEPALIVED6, "sigterm"),
    ],
    indirect=["pair"],
    ids=lambda v: _id(v) if isinstance(v, PeerKind) else v,
)
def test_failover_both_ways(pair, how):
    lab = pair.lab
    _carpool_alone_is_master(pair, "weaker")
    pair.start_peer("weaker")
    pair.steady("a")  # past the peer's master-down: it accepts carpool's adverts

    # carpool goes away: the peer takes the address, prompted by carpool's bow-out
    supervisor = lab.supervisor_pid("a")
    log_start = lab.log_path("a").stat().st_size
    if how == "sigterm":
        lab.term("a")  # `carpool run` forwards it; the worker bows out and cleans up
    else:
        lab.kill("a")  # the worker dies; the supervisor withdraws and bows out
    pair.wait(lambda: lab.supervisor_pid("a") is None, 10.0, "carpool a exited")
    assert supervisor is not None
    pair.wait_holder("b")
    assert pair.kind.bow_out_seen(pair.peer.output(10_000)), (
        f"{pair.kind.name} took over without seeing carpool's bow-out\n{pair.context()}"
    )
    with open(lab.log_path("a"), "rb") as f:
        f.seek(log_start)
        log = f.read().decode(errors="replace")
    if how == "sigkill-daemon":
        assert "daemon died (signal 9)" in log, pair.context()
    else:
        assert "daemon stopped cleanly" in log, pair.context()

    # carpool back: it hears the peer's adverts and stays backup past its own master-down
    lab.start_unit("a")
    before = pair.carpool()["counters"]["adverts_received"]
    pair.wait(
        lambda: pair.carpool()["counters"]["adverts_received"] >= before + 2,
        TAKEOVER,
        f"carpool a hears {pair.kind.name}'s adverts",
    )
    pair.steady("b")
    pair.no_drops()

    # the peer goes away (SIGTERM by pid): carpool takes the address
    code = pair.stop_peer()
    assert code == 0, f"{pair.kind.name} exited with {code}\n{pair.context()}"
    holder = pair.wait_holder("a")
    assert holder == "a"
    reason = pair.carpool()["reason"]
    if pair.kind.name == "keepalived":  # keepalived resigns with priority 0; ucarp just stops
        assert "bowed out" in reason, f"{reason}\n{pair.context()}"
    else:
        assert "master down" in reason, f"{reason}\n{pair.context()}"
    pair.no_drops()


@IPV4_PEERS
def test_stronger_peer_preempts_carpool(pair):
    """carpool yields to a better-ranked master's adverts."""
    lab = pair.lab
    _carpool_alone_is_master(pair, "stronger")
    pair.start_peer("stronger")
    pair.wait_holder("b")
    assert pair.kind.preempted(pair.peer.output(10_000)), pair.context()
    assert "beats us" in pair.carpool()["reason"], pair.context()
    pair.steady("b")
    pair.no_drops()
    # init -> backup -> master -> backup, and nothing since
    assert lab.unit_status("a")["counters"]["transitions"] == 3, pair.context()


@IPV4_PEERS
def test_preferred_carpool_preempts_peer(pair):
    """carpool with preferred = first takes over from a weaker master peer, which yields."""
    lab = pair.lab
    pair.configure("weaker", preferred="first")
    pair.start_peer("weaker")
    pair.wait_holder("b")  # the peer alone: master after its master-down
    lab.start_unit("a")
    pair.wait_holder("a")
    assert "preempting" in pair.carpool()["reason"], pair.context()
    pair.steady("a")
    pair.no_drops()
    assert pair.peer.state() == "backup", pair.context()
    if pair.kind.name == "ucarp":  # its down script removed the address
        assert pair.peer.script_runs()[-1].startswith("down "), pair.context()
