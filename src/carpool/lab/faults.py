"""Faults the lab injects (DESIGN §5), and heal() that undoes them all.

Process faults: kill (SIGKILL of the worker daemon only: the supervisor cleans up), term (SIGTERM
to the supervisor: a clean stop), crash (power loss: supervisor and worker frozen, every link
of the unit down, then both SIGKILLed, so nothing reacts and nothing is cleaned up).
Link faults: link_down / link_up of one unit interface; pull_cable (the switch port facing it
down: the unit's link loses carrier); cut_heartbeat (both ends of eth1 down).
Unit faults: block_adverts (an input filter in both units, table inet carpool_lab); one_way (the
same table in one unit only, dropping the partner's adverts on chosen paths).
Chaos faults (issue 11): freeze (SIGSTOP of the worker or of every process of the unit; the pids
are recorded in <lab dir>/frozen.json so a `heal` from another process thaws them), killall
(SIGKILL of every process in the unit's namespace; heal restarts it without tidying its
leftovers, so a campaign sees what the kernel and the restarted daemon do), flap, partition
(heartbeat cable down and the switch dropping every frame between the units' ports), reboot.
FAULTS at the end is the one table of every fault (name, target, inject, heal, help, how the
chaos campaign draws it, its name in the failover benchmark): `carpool lab fault`, the chaos
campaign and bench/failover.py are built from it.
Switch faults: one nftables table `bridge carpool_lab` in cp-sw, chain `forward` on the bridge
forward hook, one rule per fault, tagged with a comment naming the fault. The chain sees the
frames of every bridge in cp-sw, which holds exactly lan and srv. (Matching the bridge by name,
`meta ibrname`, needs nft_meta_bridge, which this kernel lacks: "Operation not supported".)
A Linux bridge floods 224.0.0.18 even with snooping on, so block_multicast stands in for a
switch whose IGMP snooping eats CARP/VRRP adverts.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import LabBase
from .ns import LabError, alive, ip, pids_in, sh, signal_pid, wait_for, write_file
from .topology import (
    HEARTBEAT,
    SWITCH,
    UNIT_ADDR,
    UNIT_ADDR6,
    UNIT_BRIDGE,
    UNITS,
    base_addresses,
    lab_namespaces,
    link_local_for,
    links,
    unit_ns,
)

TABLE = "carpool_lab"
CHAIN = "forward"  # a chain name; the hook keyword is spelled the same but is not a name here
SYNC_PORT = 6973
RULES = {
    "block-multicast": ["ip daddr 224.0.0.18", "ip6 daddr ff02::12"],
    # echo only in IPv6: neighbour discovery is ICMPv6 too, and no switch drops it
    "block-icmp": ["ip protocol icmp", "icmpv6 type { echo-request, echo-reply }"],
    "block-sync": [f"tcp dport {SYNC_PORT}", f"tcp sport {SYNC_PORT}"],
}
PATHS = ("eth0", HEARTBEAT, "eth2")  # the advert paths between the units
FLAP_MAX = 20  # flaps and reboots are bounded, whatever is asked
REBOOT_MAX = 5


def partner(unit: str) -> str:
    return "b" if unit == "a" else "a"


class FaultsMixin(LabBase):
    """Part of Lab: uses what Lab.__init__ sets and methods of Lab and of UnitsMixin (declared
    in base.LabBase)."""

    struck_at: float | None = None  # CLOCK_MONOTONIC of the last freeze/killall's first signal

    # -- processes ----------------------------------------------------------------------------
    def kill(self, unit: str) -> int:
        """SIGKILL the worker daemon only (its supervisor sees it die). Returns its pid."""
        return self._signal_unit(unit, signal.SIGKILL, "daemon")

    def term(self, unit: str) -> int:
        """SIGTERM the supervisor (it forwards to the worker, which bows out). Returns its pid."""
        return self._signal_unit(unit, signal.SIGTERM, "supervisor")

    def crash(self, unit: str) -> list[int]:
        """Power loss: supervisor and worker frozen FIRST, then every link of the unit down at
        once, then both SIGKILLed. The unit keeps whatever it held (no bow-out reaches anyone).
        Frozen first because the links go down one netlink request at a time: a running daemon
        would see the first one go and advertise (hand over) on the others, which a real power
        loss never does. One `ip -batch` takes them all down within microseconds, as a power
        loss does; a process per link put ~1.5 ms between one link and the next. Returns the
        killed pids."""
        unit = self.unit(unit)
        ns = unit_ns(unit)
        for pid in (self.supervisor_pid(unit), self.daemon_pid(unit)):
            signal_pid(pid, signal.SIGSTOP, None)
        names = [link["ifname"] for link in links(ns) if link["ifname"] != "lo"]
        # -force: a link gone meanwhile (a macvlan a helper process removed) stops nothing
        batch = "".join(f"link set {n} down\n" for n in names)
        sh(["ip", "-n", ns, "-force", "-batch", "-"], input=batch, check=False)
        return self._kill_now(unit)

    def freeze(self, unit: str, whole: bool = False) -> list[int]:
        """SIGSTOP the worker daemon (a hung event loop; the supervisor still waits on it), or
        with whole every process of the unit (supervisor, worker, HAProxy, conntrackd...).
        The pids are recorded so thaw()/heal() (from any process) SIGCONT them. Returns them."""
        unit = self.unit(unit)
        ns = unit_ns(unit)
        if whole:
            pids: list[int] = []
            self.struck_at = time.monotonic()
            for _ in range(3):  # a process forked while we listed is caught by the next round
                fresh = [p for p in pids_in([ns]).get(ns, []) if p not in pids]
                if not fresh:
                    break
                pids += [p for p in fresh if signal_pid(p, signal.SIGSTOP, ns)]
        else:
            pid = self.daemon_pid(unit)
            self.struck_at = time.monotonic()
            if pid is None or not signal_pid(pid, signal.SIGSTOP, None):
                raise LabError(f"unit {unit}: no daemon process running")
            pids = [pid]
        frozen = self._frozen()
        frozen[unit] = sorted(set(frozen.get(unit, [])) | set(pids))
        self._save_frozen(frozen)
        return pids

    def thaw(self, unit: str | None = None) -> list[int]:
        """SIGCONT what freeze() stopped (one unit, or all). Returns the pids woken."""
        frozen = self._frozen()
        woken = []
        for name in [self.unit(unit)] if unit else list(frozen):
            for pid in frozen.pop(name, []):
                if signal_pid(pid, signal.SIGCONT, unit_ns(name)):
                    woken.append(pid)
        self._save_frozen(frozen)
        return woken

    def frozen(self) -> dict[str, list[int]]:
        """unit -> pids stopped by freeze() and not thawed yet."""
        return self._frozen()

    @property
    def _frozen_path(self):
        return self.dir / "frozen.json"

    def _frozen(self) -> dict[str, list[int]]:
        try:
            return {
                u: [int(p) for p in pids]
                for u, pids in json.loads(self._frozen_path.read_text()).items()
            }
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_frozen(self, frozen: dict[str, list[int]]) -> None:
        if frozen:
            write_file(self._frozen_path, json.dumps(frozen) + "\n")
        else:
            self._frozen_path.unlink(missing_ok=True)

    def killall(self, unit: str) -> list[int]:
        """SIGKILL every process in the unit's namespace (`systemctl kill -s KILL`, a cgroup
        OOM kill): nobody cleans up, the links stay up. All are stopped first so none sees
        another die and reacts. heal() restarts the unit without removing what it left."""
        unit = self.unit(unit)
        ns = unit_ns(unit)
        killed: list[int] = []
        for _ in range(3):
            fresh = [p for p in pids_in([ns]).get(ns, []) if p not in killed]
            if not fresh:
                break
            if not killed:
                self.struck_at = time.monotonic()  # when it stopped being live (campaign)
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in fresh:
                    signal_pid(pid, sig, ns)
            killed += fresh
        if not killed:
            raise LabError(f"unit {unit}: no process running")
        wait_for(lambda: not any(alive(p) for p in killed), 5.0, what=f"unit {unit} killed")
        self._mark_killall(unit)
        return killed

    @property
    def _killall_path(self):
        return self.dir / "killall.json"

    def _killall_units(self) -> set[str]:
        try:
            return set(json.loads(self._killall_path.read_text())) & set(UNITS)
        except (OSError, ValueError, TypeError):
            return set()

    def _mark_killall(self, unit: str) -> None:
        write_file(self._killall_path, json.dumps(sorted(self._killall_units() | {unit})))

    def reboot(self, unit: str, times: int = 3, timeout: float = 15.0) -> list[list[float]]:
        """Restart the unit `times` times in a row (SIGTERM, then start; each start waits until
        the daemon answers). Returns the [stopped at, answers at] CLOCK_MONOTONIC windows, when
        the unit had no live daemon."""
        unit = self.unit(unit)
        windows = []
        for _ in range(max(1, min(int(times), REBOOT_MAX))):
            start = time.monotonic()
            self.stop_unit(unit)
            self.start_unit(unit, wait=True, timeout=timeout)
            windows.append([start, time.monotonic()])
        return windows

    def stop_server(self, server: str) -> None:
        """Stop a real server's HTTP service (rN or cp-rN); heal() starts it again."""
        name = server if server.startswith("cp-") else f"cp-{server}"
        if name not in self.server_pids():
            raise LabError(f"no real server {server} (lab has {', '.join(self.server_pids())})")
        self.stop_http(name)

    # -- links --------------------------------------------------------------------------------
    def link_down(self, unit: str, iface: str) -> None:
        ip("link", "set", iface, "down", ns=unit_ns(self.unit(unit)))

    def link_up(self, unit: str, iface: str) -> None:
        ns = unit_ns(self.unit(unit))
        ip("link", "set", iface, "up", ns=ns)
        self._wait_not_down({ns: [iface]})

    @staticmethod
    def _wait_not_down(names: dict[str, list[str]], timeout: float = 3.0) -> None:
        """Wait until the kernel has brought these links out of operstate DOWN (UP, or
        LOWERLAYERDOWN when the other end is down): until then frames are dropped."""

        def ready():
            return all(
                link["operstate"] != "DOWN"
                for ns, wanted in names.items()
                for link in links(ns)
                if link["ifname"] in wanted
            )

        wait_for(ready, timeout, what=f"links {names} operational")

    def pull_cable(self, unit: str, iface: str) -> None:
        """The switch port facing the unit's link down: the unit's link loses carrier, as when
        a cable is pulled (an admin down, link_down, is another event to the daemon)."""
        unit = self.unit(unit)
        if iface not in UNIT_BRIDGE:
            raise LabError(f"pull-cable: {iface} has no switch port: {', '.join(UNIT_BRIDGE)}")
        ip("link", "set", f"{unit}-{iface}", "down", ns=SWITCH)

    def cut_heartbeat(self) -> None:
        """The heartbeat cable pulled: eth1 down at both ends."""
        for unit in UNITS:
            self.link_down(unit, HEARTBEAT)

    def flap(
        self, unit: str, iface: str, times: int = 5, rng: random.Random | None = None
    ) -> list[list[float]]:
        """The link goes down and up `times` times (at most FLAP_MAX), each state held a random
        10-500 ms; it ends up. Returns the [down, up] CLOCK_MONOTONIC windows."""
        rng = rng or random.Random()
        ns = unit_ns(self.unit(unit))
        windows = []
        for _ in range(max(1, min(int(times), FLAP_MAX))):
            down = time.monotonic()
            ip("link", "set", iface, "down", ns=ns)
            time.sleep(rng.uniform(0.01, 0.5))
            ip("link", "set", iface, "up", ns=ns)
            windows.append([down, time.monotonic()])
            time.sleep(rng.uniform(0.01, 0.5))
        self._wait_not_down({ns: [iface]})
        return windows

    def partition(self) -> None:
        """Every path between the units cut: the heartbeat cable down at both ends and the
        switch dropping every frame from one unit's port to the other's (multicast and ARP
        too); the client and the real servers still reach each unit."""
        self.cut_heartbeat()
        matches = []
        for port in UNIT_BRIDGE:
            matches += [
                f'iifname "a-{port}" oifname "b-{port}"',
                f'iifname "b-{port}" oifname "a-{port}"',
            ]
        self._block("partition", matches)

    # -- the switch ---------------------------------------------------------------------------
    def _block(self, fault: str, matches: list[str]) -> None:
        if fault in self.switch_faults():
            return
        script = [
            f"table bridge {TABLE} {{ chain {CHAIN} {{ type filter hook forward "
            f"priority 0; policy accept; }} ; }}"
        ]
        script += [
            f'add rule bridge {TABLE} {CHAIN} {m} counter drop comment "{fault}"' for m in matches
        ]
        sh(["nft", "-f", "-"], ns=SWITCH, input="\n".join(script) + "\n")

    def block_multicast(self) -> None:
        """Drop 224.0.0.18 and ff02::12 (CARP/VRRP adverts) on both bridges."""
        self._block("block-multicast", RULES["block-multicast"])

    def block_icmp(self) -> None:
        """Drop all ICMP and ICMPv6 echo on both bridges (ARP, neighbour discovery and TCP
        still pass)."""
        self._block("block-icmp", RULES["block-icmp"])

    def block_sync(self) -> None:
        """Drop TCP to or from port 6973 (config sync) on both bridges."""
        self._block("block-sync", RULES["block-sync"])

    def block_mac(self, mac: str) -> None:
        """Drop frames sent from `mac` (a switch rejecting forged transmits)."""
        self._block(f"block-mac {mac.lower()}", [f"ether saddr {mac.lower()}"])

    def block_vmac(self, vhid: int = 1) -> None:
        """Drop frames from the virtual MAC 00:00:5e:00:01:<vhid>."""
        self.block_mac(f"00:00:5e:00:01:{vhid:02x}")

    def block_adverts(self) -> None:
        """Both units drop IP protocol 112 (adverts, doctor probes) arriving on any interface,
        the heartbeat cable included, which no switch rule reaches; ICMP and TCP pass. The
        master-master picture: the partner answers ping, its adverts never arrive."""
        for unit in UNITS:
            sh(
                ["nft", "-f", "-"],
                ns=unit_ns(unit),
                input=(
                    f"table inet {TABLE} {{ chain input {{ type filter hook input priority -300; "
                    f"policy accept; meta l4proto 112 counter drop "
                    f'comment "block-adverts"; }} ; }}\n'
                ),
            )

    def one_way(self, to_unit: str, ifaces: list[str] | tuple[str, ...] | None = None) -> None:
        """Adverts (IP protocol 112) from the partner dropped at `to_unit`'s input on the given
        paths (default all: eth0, eth1, eth2); the other direction, ICMP and TCP pass. Matched
        on the partner's address on each path (its adverts' source), so a virtual MAC's
        macvlan is covered too."""
        unit = self.unit(to_unit)
        other = partner(unit)
        chosen = [ifaces] if isinstance(ifaces, str) else list(ifaces or PATHS)
        unknown = [i for i in chosen if i not in PATHS]
        if unknown:
            raise LabError(f"one-way: unknown path {unknown}: {', '.join(PATHS)}")
        # in IPv6 from its address or its link-local one (VRRPv3's source)
        rules = " ".join(
            f"{family} saddr {source} meta l4proto 112 counter drop "
            f'comment "one-way {other}>{unit} {i}";'
            for i in chosen
            for family, source in (
                ("ip", UNIT_ADDR[other][i].split("/")[0]),
                ("ip6", UNIT_ADDR6[other][i].split("/")[0]),
                ("ip6", link_local_for(UNIT_ADDR[other][i])),
            )
        )
        sh(
            ["nft", "-f", "-"],
            ns=unit_ns(unit),
            input=(
                f"table inet {TABLE} {{ chain oneway {{ type filter hook input priority -300; "
                f"policy accept; {rules} }} ; }}\n"
            ),
        )

    def switch_faults(self) -> list[str]:
        """The faults active on the switch (the comments of the table's rules), in order."""
        proc = sh(["nft", "-j", "list", "table", "bridge", TABLE], ns=SWITCH, check=False)
        if proc.returncode != 0:
            return []
        found = []
        for item in json.loads(proc.stdout).get("nftables", []):
            comment = item.get("rule", {}).get("comment")
            if comment and comment not in found:
                found.append(comment)
        return found

    def unblock(self) -> bool:
        """Remove every switch fault (the whole table) and the units' advert filters. True
        when there was one."""
        present = lab_namespaces()
        removed = False
        if SWITCH in present:
            proc = sh(["nft", "delete", "table", "bridge", TABLE], ns=SWITCH, check=False)
            removed |= proc.returncode == 0
        for unit in UNITS:  # block_adverts, one_way
            if unit_ns(unit) in present:
                proc = sh(["nft", "delete", "table", "inet", TABLE], ns=unit_ns(unit), check=False)
                removed |= proc.returncode == 0
        return removed

    def links_down(self) -> dict[str, list[str]]:
        """Lab-made links that are administratively down, by namespace."""
        down = {}
        for ns in lab_namespaces():
            names = [
                link["ifname"]
                for link in links(ns)
                if "UP" not in link.get("flags", []) and self._lab_link(ns, link)
            ]
            if names:
                down[ns] = names
        return down

    @staticmethod
    def _lab_link(ns: str, link: dict) -> bool:
        """Links the lab made: lo, the addressed interfaces, the switch ports and bridges."""
        return ns == SWITCH or link["ifname"] == "lo" or link["ifname"] in base_addresses(ns)

    # -- heal ---------------------------------------------------------------------------------
    def heal(self, timeout: float | None = None, wait: bool = True) -> str | None:
        """Undo every fault: remove the switch table, reset crashed units to a power-on state,
        set all lab links up, restart the wanted units whose daemon is not running. With wait:
        until exactly one unit is master (both wanted; returned) or the restarted unit answers
        status (one wanted; None). Frozen processes are woken first; a unit killed by killall()
        is restarted on what it left (its daemon must clean that up itself)."""
        changed = bool(self.thaw())
        changed |= self.unblock()
        self._wait_signalled()
        for ns, pid in self.server_pids().items():  # stopped real servers serve again
            if pid is None:
                self.serve_real_server(ns)
                changed = True
        restart = [u for u in UNITS if u in self.wanted and not self.unit_running(u)]
        killed = self._killall_units()
        self._killall_path.unlink(missing_ok=True)
        for unit in restart:
            self._stop_remnants(unit)
            if unit not in killed:
                self._power_on(unit)
        down = self.links_down()
        for ns, names in down.items():
            for name in names:
                ip("link", "set", name, "up", ns=ns)
        self._wait_not_down(down)
        for unit in restart:
            self._launch(unit)
        if not wait:
            return None
        if set(UNITS) <= self.wanted:
            # Nothing was undone and one unit is master: the pair stands as it was, no need to
            # watch it settle (a test that moved it waits for its master itself). Something
            # undone: watched for a while, so the checks it upset (pings, paths) recover too.
            if not (changed or restart or down or killed) and (master := self.master()):
                return master
            return self.wait_for_master(timeout, watch=True)
        for unit in restart:
            self._wait_answers(unit, 15.0 if timeout is None else timeout)
        return None

    def _power_on(self, unit: str) -> None:
        """What a power cycle leaves of a unit's network: the lab's own links and addresses
        only (a crashed daemon leaves shared addresses and its macvlan behind)."""
        ns = unit_ns(unit)
        own = UNIT_ADDR[unit]
        for link in links(ns):
            name = link["ifname"]
            if name != "lo" and name not in own:
                ip("link", "del", name, ns=ns, check=False)
        out = ip("-j", "-4", "addr", "show", ns=ns).stdout
        for link in json.loads(out) if out.strip() else []:
            name = link["ifname"]
            for addr in link.get("addr_info", []):
                cidr = f"{addr['local']}/{addr['prefixlen']}"
                if name in own and cidr != own[name]:
                    ip("addr", "del", cidr, "dev", name, ns=ns, check=False)


# -- the fault table --------------------------------------------------------------------------
Arg = tuple[str, dict]  # (flag, argparse add_argument keywords); its dest is a key of args
UNIT_ARG: Arg = ("--unit", {"required": True, "help": "a or b (cp-a / cp-b accepted)"})
IFACE_ARG: Arg = ("--iface", {"required": True, "help": "eth0, eth1 or eth2"})


@dataclass(frozen=True)
class Target:
    """What a fault applies to: the arguments naming it, the one that takes the unit (the
    chaos campaign fills it in by role) and the role a campaign mostly aims at."""

    name: str
    args: tuple[Arg, ...] = ()
    unit: str | None = None
    aim: str = "active"


UNIT = Target("unit", (UNIT_ARG,), unit="unit")
LINK = Target("link", (UNIT_ARG, IFACE_ARG), unit="unit")
LISTENER = Target(
    "listener",
    (
        ("--to", {"required": True, "help": "the unit that stops hearing its partner"}),
        (
            "--iface",
            {
                "action": "append",
                "choices": PATHS,
                "help": "a path (repeatable; default eth0, eth1 and eth2)",
            },
        ),
    ),
    unit="to",
    aim="standby",
)  # mostly the standby deaf to the active unit's adverts
PAIR = Target("pair")  # the switch and the paths between the units
PORT = Target(
    "switch port",
    (
        UNIT_ARG,
        (
            "--iface",
            {
                "required": True,
                "choices": tuple(UNIT_BRIDGE),
                "help": "eth0 or eth2 (eth1, the heartbeat, is a direct cable: cut-heartbeat)",
            },
        ),
    ),
    unit="unit",
)
SERVER = Target("server", (("--server", {"required": True, "help": "r1, r2, ... (or cp-r1)"}),))


@dataclass(frozen=True)
class Chaos:
    """How the chaos campaign draws and runs a fault."""

    weight: int  # among the kinds drawn
    draw: Callable[[random.Random], dict] = lambda rng: {}  # its args, after the role
    log: Callable[[Any, dict], dict] = lambda result, args: {}  # kept of inject's result
    vmac: bool = False  # only on a lab with the virtual MAC
    load: bool = False  # under keep-alive client load
    split: bool = False  # both sides take over: each makes its own config change
    thawed: bool = False  # its dead units are live again at the thaw, heal's first step


def _heal_all(lab, args: dict) -> Any:
    return lab.heal()


def _nothing(lab, args: dict) -> None:
    """The fault undoes itself (thaw, link-up; a flap ends up)."""


@dataclass(frozen=True)
class Fault:
    """One fault. inject(lab, args) and heal(lab, args) call Lab methods by name (the failover
    benchmark hands them a keepalived pair with the same ones); args holds the dests of the
    target's arguments and the options, as `carpool lab fault NAME` spells them. Lab.heal()
    undoes every fault at once; heal is narrower where the lab can be."""

    name: str
    target: Target
    inject: Callable[[Any, dict], Any]
    heal: Callable[[Any, dict], Any]
    help: str
    options: tuple[Arg, ...] = ()
    effect: Callable[[dict], dict] = lambda a: {}
    chaos: Chaos | None = None
    bench: str | None = None  # its name in bench/failover.py (on the master, its eth0)

    @property
    def arguments(self) -> tuple[Arg, ...]:
        return self.target.args + self.options

    @property
    def dests(self) -> list[str]:
        return [kw.get("dest") or flag.lstrip("-").replace("-", "_") for flag, kw in self.arguments]


def _rng(a: dict) -> random.Random:
    return random.Random(a.get("seed"))


# effect(args): what the fault does to the pair while it lasts, for the chaos invariants:
#   dead: units without a live, responsive daemon;
#   cut: channels between the units that carry nothing: "eth0:a>b" (adverts from a reach b
#        on eth0), ..., and "sync" (TCP 6973; it runs between the eth0 addresses);
#   client_down: units whose client link (eth0) is down;
#   links_down: [unit, iface] pairs of another link down (a shared address on it cannot be
#        held there: eth2 carries the real servers' gateway).
def _both(*paths: str) -> list[str]:
    return [f"{p}:{x}>{partner(x)}" for p in paths for x in UNITS]


def _dead(a: dict) -> dict:
    return {"dead": [a["unit"]]}


def _link(a: dict) -> dict:
    eth0 = a["iface"] == "eth0"
    return {
        "cut": _both(a["iface"]) + (["sync"] if eth0 else []),
        "client_down": [a["unit"]] if eth0 else [],
        "links_down": [] if eth0 else [[a["unit"], a["iface"]]],
    }


def _one_way(a: dict) -> dict:
    to = a["to"].lower().removeprefix("cp-")
    paths = a.get("iface") or PATHS
    return {
        "cut": [f"{p}:{partner(to)}>{to}" for p in ([paths] if isinstance(paths, str) else paths)]
    }


def _one_path(rng: random.Random) -> dict:
    path = rng.choice([None, None, "eth0", "eth1", "eth2"])
    return {"iface": [path] if path else None}


# The order is the chaos campaign's: it draws kinds in this order, so a seed keeps its plan.
ALL_CUT = _both(*PATHS) + ["sync"]
FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            "kill",
            UNIT,
            lambda lab, a: lab.kill(a["unit"]),
            _heal_all,
            "SIGKILL the worker daemon (the supervisor cleans up)",
            effect=_dead,
            chaos=Chaos(3),
            bench="kill",
        ),
        Fault(
            "term",
            UNIT,
            lambda lab, a: lab.term(a["unit"]),
            _heal_all,
            "SIGTERM the supervisor (clean stop, bow-out)",
            effect=_dead,
            chaos=Chaos(2),
            bench="term",
        ),
        Fault(
            "crash",
            UNIT,
            lambda lab, a: lab.crash(a["unit"]),
            _heal_all,
            "power loss: all links down, then SIGKILL supervisor+worker",
            effect=lambda a: {"dead": [a["unit"]], "cut": ALL_CUT, "client_down": [a["unit"]]},
            chaos=Chaos(3),
            bench="crash",
        ),
        Fault(
            "killall",
            UNIT,
            lambda lab, a: lab.killall(a["unit"]),
            _heal_all,
            "SIGKILL every process of the unit, no cleanup, links stay up",
            effect=_dead,
            chaos=Chaos(4),
        ),
        Fault(
            "freeze",
            UNIT,
            lambda lab, a: lab.freeze(a["unit"], a.get("whole", False)),
            lambda lab, a: lab.thaw(a["unit"]),
            "SIGSTOP the worker (--whole: every process of the unit); heal thaws",
            (
                (
                    "--whole",
                    {
                        "action": "store_true",
                        "help": "every process of the unit, not the worker only",
                    },
                ),
            ),
            effect=_dead,
            chaos=Chaos(4, lambda rng: {"whole": rng.random() < 0.5}, thawed=True),
        ),
        Fault(
            "thaw",
            UNIT,
            lambda lab, a: lab.thaw(a["unit"]),
            _nothing,
            "SIGCONT what freeze stopped (heal does it too)",
        ),
        Fault(
            "reboot",
            UNIT,
            lambda lab, a: lab.reboot(a["unit"], a.get("times", 3)),
            _heal_all,
            "restart the unit several times in a row",
            (("--times", {"type": int, "default": 3, "help": f"restarts (at most {REBOOT_MAX})"}),),
            effect=_dead,
            chaos=Chaos(
                2,
                lambda rng: {"times": rng.randint(2, 3)},
                log=lambda result, a: {"dead_windows": {a["unit"]: result}},
            ),
        ),
        Fault(
            "link-down",
            LINK,
            lambda lab, a: lab.link_down(a["unit"], a["iface"]),
            lambda lab, a: lab.link_up(a["unit"], a["iface"]),
            "set one unit interface down",
            effect=_link,
            chaos=Chaos(4, lambda rng: {"iface": rng.choice(PATHS)}),
            bench="link",
        ),
        Fault(
            "link-up",
            LINK,
            lambda lab, a: lab.link_up(a["unit"], a["iface"]),
            _nothing,
            "set one unit interface up",
        ),
        Fault(
            "flap",
            LINK,
            lambda lab, a: lab.flap(a["unit"], a["iface"], a.get("times", 5), _rng(a)),
            _nothing,
            "a unit interface down and up several times, 10-500 ms apart; ends up",
            (
                ("--times", {"type": int, "default": 5, "help": f"flaps (at most {FLAP_MAX})"}),
                ("--seed", {"type": int, "help": "random intervals from this seed"}),
            ),
            effect=_link,
            chaos=Chaos(
                3,
                lambda rng: {
                    "iface": rng.choice(PATHS),
                    "times": rng.randint(2, 6),
                    "seed": rng.randrange(2**31),
                },
                log=lambda result, a: {"windows": result},
            ),
        ),
        Fault(
            "block-multicast",
            PAIR,
            lambda lab, a: lab.block_multicast(),
            lambda lab, a: lab.unblock(),
            "switch drops 224.0.0.18 (CARP/VRRP adverts)",
            effect=lambda a: {"cut": _both("eth0", "eth2")},
            chaos=Chaos(2),
        ),
        Fault(
            "block-icmp",
            PAIR,
            lambda lab, a: lab.block_icmp(),
            lambda lab, a: lab.unblock(),
            "switch drops ICMP",
            chaos=Chaos(1),
        ),
        Fault(
            "block-sync",
            PAIR,
            lambda lab, a: lab.block_sync(),
            lambda lab, a: lab.unblock(),
            "switch drops TCP port 6973 (config sync)",
            effect=lambda a: {"cut": ["sync"]},
            chaos=Chaos(1),
        ),
        Fault(
            "block-vmac",
            PAIR,
            lambda lab, a: lab.block_vmac(a.get("vhid", 1)),
            lambda lab, a: lab.unblock(),
            "switch drops frames from the virtual MAC",
            (("--vhid", {"type": int, "default": 1}),),
            effect=lambda a: {"cut": _both("eth0", "eth2")},
            chaos=Chaos(1, vmac=True),
        ),
        Fault(
            "block-adverts",
            PAIR,
            lambda lab, a: lab.block_adverts(),
            lambda lab, a: lab.unblock(),
            "both units drop IP protocol 112 on every interface (heartbeat too); ICMP and sync "
            "pass",
            effect=lambda a: {"cut": _both(*PATHS)},
            chaos=Chaos(2),
        ),
        Fault(
            "one-way",
            LISTENER,
            lambda lab, a: lab.one_way(a["to"], a.get("iface") or None),
            lambda lab, a: lab.unblock(),
            "adverts from the partner dropped at --to's input (one direction), on the given "
            "paths (default all)",
            effect=_one_way,
            chaos=Chaos(4, _one_path),
        ),
        Fault(
            "cut-heartbeat",
            PAIR,
            lambda lab, a: lab.cut_heartbeat(),
            _heal_all,
            "the heartbeat cable (eth1) pulled at both ends",
            effect=lambda a: {"cut": _both(HEARTBEAT)},
            chaos=Chaos(2),
        ),
        Fault(
            "partition",
            PAIR,
            lambda lab, a: lab.partition(),
            _heal_all,
            "every path between the units cut (heartbeat down, switch drops unit-to-unit "
            "frames); client and servers reach both",
            effect=lambda a: {"cut": ALL_CUT},
            chaos=Chaos(3, split=True),
        ),
        Fault(
            "stop-server",
            SERVER,
            lambda lab, a: lab.stop_server(a["server"]),
            _heal_all,
            "stop a real server's HTTP service (heal restarts it)",
            chaos=Chaos(2, lambda rng: {"server": f"r{rng.randint(1, 3)}"}, load=True),
        ),
        Fault(
            "pull-cable",
            PORT,
            lambda lab, a: lab.pull_cable(a["unit"], a["iface"]),
            _heal_all,
            "the switch port facing a unit's link down: the link loses carrier",
            effect=_link,
            bench="carrier",
        ),
    )
}
