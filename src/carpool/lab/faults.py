"""Faults the lab injects (DESIGN §5), and heal() that undoes them all.

Process faults: kill (SIGKILL of the worker daemon only: the supervisor cleans up), term (SIGTERM
to the supervisor: a clean stop), crash (power loss: supervisor and worker frozen, every link
of the unit down, then both SIGKILLed, so nothing reacts and nothing is cleaned up).
Link faults: link_down / link_up of one unit interface; cut_heartbeat (both ends of eth1 down).
Unit faults: block_adverts (an input filter in both units, table ip carpool_lab).
Switch faults: one nftables table `bridge carpool_lab` in cp-sw, chain `forward` on the bridge
forward hook, one rule per fault, tagged with a comment naming the fault. The chain sees the
frames of every bridge in cp-sw, which holds exactly lan and srv. (Matching the bridge by name,
`meta ibrname`, needs nft_meta_bridge, which this kernel lacks: "Operation not supported".)
A Linux bridge floods 224.0.0.18 even with snooping on, so block_multicast stands in for a
switch whose IGMP snooping eats CARP/VRRP adverts.
"""
from __future__ import annotations

import json
import signal

from .ns import LabError, ip, sh, signal_pid, wait_for
from .topology import (HEARTBEAT, SWITCH, UNIT_ADDR, UNITS, base_addresses,
                       lab_namespaces, links, unit_ns)

TABLE = "carpool_lab"
CHAIN = "forward"   # a chain name; the hook keyword is spelled the same but is not a name here
SYNC_PORT = 6973
RULES = {
    "block-multicast": ["ip daddr 224.0.0.18"],
    "block-icmp": ["ip protocol icmp"],
    "block-sync": [f"tcp dport {SYNC_PORT}", f"tcp sport {SYNC_PORT}"],
}


class FaultsMixin:
    """Part of Lab (needs UnitsMixin)."""

    # -- processes ----------------------------------------------------------------------------
    def kill(self, unit: str) -> int:
        """SIGKILL the worker daemon only (its supervisor sees it die). Returns its pid."""
        return self._signal_unit(unit, signal.SIGKILL, "daemon")

    def term(self, unit: str) -> int:
        """SIGTERM the supervisor (it forwards to the worker, which bows out). Returns its pid."""
        return self._signal_unit(unit, signal.SIGTERM, "supervisor")

    def crash(self, unit: str) -> list[int]:
        """Power loss: supervisor and worker frozen FIRST, then every link of the unit down,
        then both SIGKILLed. The unit keeps whatever it held (no bow-out reaches anyone).
        Frozen first because the links go down one `ip` command at a time: a running daemon
        sees the first one go and advertises (hands over) on the others before they follow,
        which a real power loss never does. Returns the killed pids."""
        unit = self.unit(unit)
        ns = unit_ns(unit)
        for pid in (self.supervisor_pid(unit), self.daemon_pid(unit)):
            signal_pid(pid, signal.SIGSTOP, None)
        for link in links(ns):
            if link["ifname"] != "lo":
                ip("link", "set", link["ifname"], "down", ns=ns)
        return self._kill_now(unit)

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
            return all(l["operstate"] != "DOWN" for ns, wanted in names.items()
                       for l in links(ns) if l["ifname"] in wanted)
        wait_for(ready, timeout, what=f"links {names} operational")

    def cut_heartbeat(self) -> None:
        """The heartbeat cable pulled: eth1 down at both ends."""
        for unit in UNITS:
            self.link_down(unit, HEARTBEAT)

    # -- the switch ---------------------------------------------------------------------------
    def _block(self, fault: str, matches: list[str]) -> None:
        if fault in self.switch_faults():
            return
        script = [f"table bridge {TABLE} {{ chain {CHAIN} {{ type filter hook forward "
                  f"priority 0; policy accept; }} ; }}"]
        script += [f'add rule bridge {TABLE} {CHAIN} {m} counter drop '
                   f'comment "{fault}"' for m in matches]
        sh(["nft", "-f", "-"], ns=SWITCH, input="\n".join(script) + "\n")

    def block_multicast(self) -> None:
        """Drop IPv4 to 224.0.0.18 (CARP/VRRP adverts) on both bridges."""
        self._block("block-multicast", RULES["block-multicast"])

    def block_icmp(self) -> None:
        """Drop all ICMP on both bridges (ARP and TCP still pass)."""
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
            sh(["nft", "-f", "-"], ns=unit_ns(unit), input=(
                f"table ip {TABLE} {{ chain input {{ type filter hook input priority -300; "
                f'policy accept; ip protocol 112 counter drop comment "block-adverts"; }} ; }}\n'))

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

    def unblock(self) -> None:
        """Remove every switch fault (the whole table)."""
        present = lab_namespaces()
        if SWITCH in present:
            sh(["nft", "delete", "table", "bridge", TABLE], ns=SWITCH, check=False)
        for unit in UNITS:  # block_adverts
            if unit_ns(unit) in present:
                sh(["nft", "delete", "table", "ip", TABLE], ns=unit_ns(unit), check=False)

    def links_down(self) -> dict[str, list[str]]:
        """Lab-made links that are administratively down, by namespace."""
        down = {}
        for ns in lab_namespaces():
            names = [l["ifname"] for l in links(ns)
                     if "UP" not in l.get("flags", []) and self._lab_link(ns, l)]
            if names:
                down[ns] = names
        return down

    @staticmethod
    def _lab_link(ns: str, link: dict) -> bool:
        """Links the lab made: lo, the addressed interfaces, the switch ports and bridges."""
        return (ns == SWITCH or link["ifname"] == "lo" or link["ifname"] in base_addresses(ns))

    # -- heal ---------------------------------------------------------------------------------
    def heal(self, timeout: float | None = None, wait: bool = True) -> str | None:
        """Undo every fault: remove the switch table, reset crashed units to a power-on state,
        set all lab links up, restart the wanted units whose daemon is not running. With wait:
        until exactly one unit is master (both wanted; returned) or the restarted unit answers
        status (one wanted; None)."""
        self.unblock()
        self._wait_signalled()
        for ns, pid in self.server_pids().items():  # stopped real servers serve again
            if pid is None:
                self.serve_real_server(ns)
        restart = [u for u in UNITS if u in self.wanted and not self.unit_running(u)]
        for unit in restart:
            self._stop_remnants(unit)
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
            return self.wait_for_master(timeout)
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
