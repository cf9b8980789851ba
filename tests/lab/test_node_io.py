"""Node I/O adapters on real packets: two namespaces joined by veth pairs.

    cp-t-node-a                         cp-t-node-b
    va  198.18.9.1/24   <---- veth ---->  vb  198.18.9.2/24
    va2 198.18.10.1/24  <---- veth ---->  vb2 198.18.10.2/24   (second link: per-interface checks)

The code under test runs inside the namespaces (`ip netns exec NS python -c SNIPPET`); a snippet
prints JSON lines. Only these two namespaces are made and removed (by name).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from ipaddress import IPv4Address, IPv4Interface

import pytest

from carpool.ha.ipv4 import parse_ipv4
from carpool.lab.ns import LabTimeout, wait_for
from carpool.node.addresses import build_garp, vmac_for, vmac_ifname
from carpool.node.rawsock import destinations

NS_A, NS_B = "cp-t-node-a", "cp-t-node-b"
A1, B1 = "198.18.9.1", "198.18.9.2"
A2, B2 = "198.18.10.1", "198.18.10.2"
SHARED = "198.18.9.10"
SILENT = "198.18.9.77"
VMAC = vmac_for(7)
PY = sys.executable

PRELUDE = """
import asyncio, json, os, select, socket, struct, subprocess, sys, time
def out(**kw):
    print(json.dumps(kw), flush=True)
def fresh_bridge(name, up=True):  # a link with no stacked parent: its carrier is polled
    subprocess.run(["ip", "link", "del", name], stderr=subprocess.DEVNULL)  # a rerun's
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    if up:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
"""


# -- plumbing ---------------------------------------------------------------------------------
def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def _delete_namespaces() -> None:
    existing = ip("netns", "list", check=False).stdout.split()
    for ns in (NS_A, NS_B):
        if ns in existing:
            ip("netns", "delete", ns, check=False)


class Snippet:
    """A python snippet running in a namespace; reads its JSON lines with deadlines."""

    def __init__(self, ns: str, code: str):
        self.ns = ns
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, PY, "-c", PRELUDE + textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buf = b""

    def read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(
                    f"{self.ns}: no output within {timeout}s; "
                    f"stderr: {self.proc.stderr.read().decode()}"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise AssertionError(
                        f"{self.ns}: snippet exited ({self.proc.returncode}); "
                        f"stderr: {self.proc.stderr.read().decode()}"
                    )
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def finish(self, timeout: float) -> dict:
        """The last JSON line; the snippet must exit with status 0."""
        try:
            rest, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.ns}: snippet still running after {timeout}s") from None
        lines = [ln for ln in (self._buf + rest).decode().splitlines() if ln.strip()]
        assert self.proc.returncode == 0, f"{self.ns}: exit {self.proc.returncode}: {err.decode()}"
        assert lines, f"{self.ns}: no output; stderr: {err.decode()}"
        return json.loads(lines[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def run_in(ns: str, code: str, timeout: float = 15) -> dict:
    snippet = Snippet(ns, code)
    try:
        return snippet.finish(timeout)
    finally:
        snippet.kill()


def _operational(ns: str, *links: str) -> bool:
    out = ip("-n", ns, "-j", "link", "show", check=False).stdout
    state = {link["ifname"]: link.get("operstate") for link in json.loads(out or "[]")}
    return all(state.get(link) == "UP" for link in links)


def wait_operational(timeout: float = 5.0) -> None:
    """Until both ends of both veth pairs are operational: a link just set up has no carrier
    for a moment, and what is sent then is dropped."""
    wait_for(
        lambda: _operational(NS_A, "va", "va2") and _operational(NS_B, "vb", "vb2"),
        timeout,
        what="the veth links operational",
    )


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, raw sockets)")
    _delete_namespaces()  # leftovers of an interrupted run, by name
    try:
        ip("netns", "add", NS_A)
        ip("netns", "add", NS_B)
        for a, b, aa, ba in (("va", "vb", A1, B1), ("va2", "vb2", A2, B2)):
            ip("link", "add", a, "netns", NS_A, "type", "veth", "peer", "name", b, "netns", NS_B)
            ip("-n", NS_A, "addr", "add", f"{aa}/24", "dev", a)
            ip("-n", NS_B, "addr", "add", f"{ba}/24", "dev", b)
        for ns, links in ((NS_A, ("lo", "va", "va2")), (NS_B, ("lo", "vb", "vb2"))):
            for link in links:
                ip("-n", ns, "link", "set", link, "up")
        wait_operational()
        yield
    finally:
        _delete_namespaces()


@pytest.fixture
def clean(lab):
    """Each test starts with no shared address, no macvlan and empty neighbour tables."""

    def reset():
        run_in(
            NS_A,
            f"""
            from carpool.node import addresses
            addresses.remove_stale("va", ["{SHARED}/24"], "{VMAC}")
            out(ok=True)
        """,
        )
        ip("-n", NS_A, "link", "set", "va", "up")
        ip("-n", NS_B, "link", "set", "vb", "up")
        wait_operational()
        ip("-n", NS_B, "neigh", "flush", "dev", "vb", check=False)

    reset()
    yield
    reset()


def _ip_facts(hexdata: str) -> tuple[str, str, int, int, bytes]:
    pkt = parse_ipv4(bytes.fromhex(hexdata))
    return str(pkt.src), str(pkt.dst), pkt.ttl, pkt.protocol, pkt.payload


# -- pure checks --------------------------------------------------------------------------------
def test_destinations_and_names():
    # the one `destinations` (the one the daemon sends with): broadcast is the limited one
    assert destinations("multicast", IPv4Address(B1)) == [IPv4Address("224.0.0.18")]
    assert destinations("unicast", IPv4Address(B1)) == [IPv4Address(B1)]
    assert destinations("broadcast", IPv4Address(B1)) == [IPv4Address("255.255.255.255")]
    with pytest.raises(ValueError):
        destinations("anycast", IPv4Address(B1))
    assert vmac_for(7) == "00:00:5e:00:01:07" and vmac_for(255) == "00:00:5e:00:01:ff"
    assert vmac_ifname("eth0", vmac_for(1)) == "cv1-eth0"
    assert vmac_ifname("enp0s31f6xyz", vmac_for(200), ifindex=12) == "cv200-i12"


# -- raw advert sockets -------------------------------------------------------------------------
@pytest.mark.lab
@pytest.mark.parametrize("transport", ["multicast", "unicast", "broadcast", "limited-broadcast"])
def test_advert_reaches_partner_on_its_interface_only(lab, transport):
    if transport == "limited-broadcast":  # 255.255.255.255 instead of the subnet's broadcast
        transport = "broadcast"
        dst_va = dst_va2 = dst_back = "255.255.255.255"
    else:
        # the socket also carries a subnet's directed broadcast (the lab's links are /24s)
        directed = {
            "va": "198.18.9.255",
            "va2": str(IPv4Interface(f"{A2}/24").network.broadcast_address),
        }
        dst_va = (
            str(destinations(transport, IPv4Address(B1))[0])
            if transport != "broadcast"
            else directed["va"]
        )
        dst_va2 = (
            str(destinations(transport, IPv4Address(B2))[0])
            if transport != "broadcast"
            else directed["va2"]
        )
        dst_back = (
            str(destinations(transport, IPv4Address(A1))[0])
            if transport != "broadcast"
            else directed["va"]
        )
    b = Snippet(
        NS_B,
        f"""
        from carpool.node.rawsock import AdvertSocket
        b1 = AdvertSocket("vb", "{B1}", "{transport}")
        b2 = AdvertSocket("vb2", "{B2}", "{transport}")
        out(ready=True)
        got = {{"vb": [], "vb2": []}}
        deadline = time.monotonic() + 5
        while not (got["vb"] and got["vb2"]) and time.monotonic() < deadline:
            ready, _, _ = select.select([b1, b2], [], [], max(0, deadline - time.monotonic()))
            for s in ready:
                got[s.ifname] += [d.hex() for d in s.recv_all()]
        for s in (b1, b2):
            got[s.ifname] += [d.hex() for d in s.recv_all()]
        answered = b1.send(b"B-ANSWER", "{dst_back}")
        out(got=got, answered=answered, foreign=b1.foreign_dropped + b2.foreign_dropped)
    """,
    )
    try:
        assert b.read(10) == {"ready": True}
        a = run_in(
            NS_A,
            f"""
            from carpool.node.rawsock import AdvertSocket
            a1 = AdvertSocket("va", "{A1}", "{transport}")
            a2 = AdvertSocket("va2", "{A2}", "{transport}")
            sent = [a1.send(b"ADVERT-ON-VA", "{dst_va}"), a2.send(b"ADVERT-ON-VA2", "{dst_va2}")]
            got = []
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                if select.select([a1], [], [], max(0, deadline - time.monotonic()))[0]:
                    got += [d.hex() for d in a1.recv_all()]
            out(sent=sent, got=got, got2=[d.hex() for d in a2.recv_all()], own=a1.own_dropped)
        """,
        )
        res = b.finish(10)
    finally:
        b.kill()
    assert a["sent"] == [True, True]
    assert res["answered"] is True
    # B: exactly the advert of its own link on each socket, TTL 255, protocol 112
    assert [_ip_facts(h) for h in res["got"]["vb"]] == [(A1, dst_va, 255, 112, b"ADVERT-ON-VA")]
    assert [_ip_facts(h) for h in res["got"]["vb2"]] == [(A2, dst_va2, 255, 112, b"ADVERT-ON-VA2")]
    # A: only B's answer, never its own advert looped back
    assert [_ip_facts(h) for h in a["got"]] == [(B1, dst_back, 255, 112, b"B-ANSWER")]
    assert a["got2"] == []
    # the kernel loops broadcasts back to the sender whatever IP_MULTICAST_LOOP says: dropped
    assert a["own"] == (1 if transport == "broadcast" else 0)


@pytest.mark.lab
def test_send_error_returns_false_and_socket_survives_link_flap(clean):
    a = Snippet(
        NS_A,
        f"""
        from carpool.node import links
        from carpool.node.rawsock import AdvertSocket
        s = AdvertSocket("va", "{A1}", "multicast")
        subprocess.run(["ip", "link", "set", "dev", "va", "down"], check=True)
        try:
            failed = s.send(b"x", "224.0.0.18")
            err = s.last_error.errno if s.last_error else None
        finally:
            subprocess.run(["ip", "link", "set", "dev", "va", "up"], check=True)
        deadline = time.monotonic() + 5
        while not links.link_up("va") and time.monotonic() < deadline:
            time.sleep(0.01)
        out(failed=failed, err=err)
        got = []
        deadline = time.monotonic() + 10   # B sends once both ends are operational again
        while not got and time.monotonic() < deadline:
            if select.select([s], [], [], max(0, deadline - time.monotonic()))[0]:
                got += [d.hex() for d in s.recv_all()]
        out(got=got, sent_again=s.send(b"y", "224.0.0.18"))
    """,
    )
    try:
        first = a.read(10)
        assert first["failed"] is False and first["err"] is not None
        wait_operational()  # vb lost its carrier with va: one advert sent before is dropped
        b = run_in(
            NS_B,
            f"""
            from carpool.node.rawsock import AdvertSocket
            out(sent=AdvertSocket("vb", "{B1}", "multicast").send(b"AFTER-FLAP", "224.0.0.18"))
        """,
        )
        assert b["sent"] is True
        res = a.finish(15)
    finally:
        a.kill()
    assert [_ip_facts(h)[4] for h in res["got"]] == [b"AFTER-FLAP"]
    assert res["sent_again"] is True


@pytest.mark.lab
def test_advert_socket_needs_an_interface(lab):
    res = run_in(
        NS_A,
        f"""
        from carpool.node.rawsock import AdvertSocket
        try:
            AdvertSocket("nosuch0", "{A1}", "multicast")
            out(raised=None)
        except OSError as e:
            out(raised=type(e).__name__)
    """,
    )
    assert res["raised"] is not None


# -- shared addresses ---------------------------------------------------------------------------
def _ping_from_b(address: str, timeout: float = 1.0) -> float | None:
    return run_in(
        NS_B,
        f"""
        from carpool.node.icmp import ping
        out(rtt=asyncio.run(ping("{address}", {timeout})))
    """,
    )["rtt"]


def _reaches_from_b(address: str, timeout: float = 5.0) -> bool:
    """Echo from B until one is answered (True) or the deadline (False): presence is never
    judged on one echo (the first may wait for ARP)."""
    try:
        return wait_for(
            lambda: _ping_from_b(address, 0.5) is not None, timeout, what=f"{address} answers B"
        )
    except LabTimeout:
        return False


@pytest.mark.lab
def test_shared_address_add_remove_idempotent(clean):
    res = run_in(
        NS_A,
        f"""
        from carpool.node import addresses as ad
        before = ad.present("va", "{SHARED}/24")
        ad.add_shared("va", "{SHARED}/24", None)
        ad.add_shared("va", "{SHARED}/24", None)   # again: not an error
        out(before=before, after=ad.present("va", "{SHARED}/24"))
    """,
    )
    assert res == {"before": False, "after": True}
    shown = ip("-n", NS_A, "-4", "-o", "addr", "show", "dev", "va").stdout
    assert f"{SHARED}/24" in shown and shown.count(SHARED) == 1
    assert _reaches_from_b(SHARED)
    res = run_in(
        NS_A,
        f"""
        from carpool.node import addresses as ad
        ad.remove_stale("va", ["{SHARED}/24"], None)
        ad.remove_stale("va", ["{SHARED}/24"], None)   # again: not an error
        ad.remove_stale("nosuch0", ["{SHARED}/24"], None)
        out(after=ad.present("va", "{SHARED}/24"), own=ad.present("va", "{A1}/24"))
    """,
    )
    assert res == {"after": False, "own": True}
    assert _ping_from_b(SHARED, 0.3) is None


@pytest.mark.lab
def test_a_raw_renewal_keeps_the_address_as_the_first_add_made_it(clean):
    """rtaddr.renew (one RTM_NEWADDR replace, each second while active) leaves each family's
    shared address as addresses.add_shared made it (IPv6: nodad, deprecated), with the new
    lifetime, and puts back an address that went."""
    res = run_in(
        NS_A,
        f"""
        import json, subprocess
        from carpool.node import addresses as ad, rtaddr
        def shown():
            out = subprocess.run(["ip", "-j", "addr", "show", "dev", "va"],
                                 capture_output=True, text=True).stdout
            return {{a["local"]: a for link in json.loads(out) for a in link["addr_info"]}}
        ad.add_shared("va", "{SHARED}/24", None, 3)
        ad.add_shared("va", "2001:2:0:77::10/64", None, 3)
        first = shown()
        rtaddr.renew("va", "{SHARED}/24", 7)
        rtaddr.renew("va", "2001:2:0:77::10/64", 7)
        renewed = shown()
        ad.withdraw("va", ["{SHARED}/24"])
        rtaddr.renew("va", "{SHARED}/24", 7)   # gone: put back
        back = shown()
        try:
            rtaddr.renew("nosuch0", "{SHARED}/24", 7)
            missing = None
        except OSError as e:
            missing = e.errno
        ad.withdraw("va", ["{SHARED}/24", "2001:2:0:77::10/64"])
        keep = ("prefixlen", "broadcast", "nodad", "deprecated", "valid_life_time",
                "preferred_life_time", "scope")
        pick = lambda a: {{k: a.get(k) for k in keep}}
        out(first4=pick(first["{SHARED}"]), renewed4=pick(renewed["{SHARED}"]),
            first6=pick(first["2001:2:0:77::10"]), renewed6=pick(renewed["2001:2:0:77::10"]),
            back="{SHARED}" in back, missing=missing)
    """,
    )
    for family in ("4", "6"):
        first, renewed = res[f"first{family}"], res[f"renewed{family}"]
        assert first["valid_life_time"] <= 3 and renewed["valid_life_time"] > 3, res
        same = {k: v for k, v in first.items() if not k.endswith("life_time")}
        assert {k: v for k, v in renewed.items() if k in same} == same, res
    assert res["renewed6"]["nodad"] and res["renewed6"]["preferred_life_time"] == 0, res
    assert res["renewed4"]["broadcast"] and res["back"] and res["missing"] == 19, res


@pytest.mark.lab
def test_add_shared_from_inside_an_event_loop(clean):
    res = run_in(
        NS_A,
        f"""
        from carpool.node import addresses as ad
        async def main():
            ad.add_shared("va", "{SHARED}/24", "{VMAC}")
            here = ad.present("va", "{SHARED}/24", "{VMAC}")
            gone = ad.remove_stale("va", ["{SHARED}/24"], "{VMAC}")
            return here, gone, ad.present("va", "{SHARED}/24")
        here, gone, after = asyncio.run(main())
        out(here=here, gone=gone, after=after)
    """,
    )
    assert res["here"] is True and res["after"] is False
    assert any("cv7-va" in g for g in res["gone"])


@pytest.mark.lab
def test_vmac_macvlan_reachable_from_partner(clean):
    res = run_in(
        NS_A,
        f"""
        from carpool.node import addresses as ad, links
        ad.add_shared("va", "{SHARED}/24", "{VMAC}")
        ad.add_shared("va", "{SHARED}/24", "{VMAC}")
        link = links.get_link("cv7-va")
        out(mac=link.mac, up=link.up, on_vmac=ad.present("va", "{SHARED}/24", "{VMAC}"),
            anywhere=ad.present("va", "{SHARED}/24"),
            vmac_addrs=links.ipv4_addresses("cv7-va"), va_addrs=links.ipv4_addresses("va"))
    """,
    )
    assert res["mac"] == VMAC and res["up"] is True
    assert res["on_vmac"] is True and res["anywhere"] is True
    assert res["vmac_addrs"] == [[SHARED, 24]] and res["va_addrs"] == [[A1, 24]]
    detail = ip("-n", NS_A, "-d", "link", "show", "cv7-va").stdout
    assert "macvlan" in detail and "cv7-va@va" in detail
    # A's own traffic keeps its own route and source address
    route = ip("-n", NS_A, "route", "get", B1).stdout
    assert "dev va" in route and f"src {A1}" in route
    # B reaches the shared address, and only the virtual MAC answers ARP for it
    res = run_in(
        NS_B,
        f"""
        from carpool.node.icmp import ping
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        s.bind(("vb", 0x0806))
        rtt, deadline = None, time.monotonic() + 5
        while rtt is None and time.monotonic() < deadline:  # echo until one is answered
            rtt = asyncio.run(ping("{SHARED}", 1.0))
        replies = []
        while select.select([s], [], [], 0)[0]:
            f = s.recv(2048)
            if f[20:22] == b"\\0\\2" and f[28:32] == socket.inet_aton("{SHARED}"):
                replies.append(":".join(f"{{b:02x}}" for b in f[22:28]))
        out(rtt=rtt, replies=replies)
    """,
    )
    assert res["rtt"] is not None
    assert res["replies"] and set(res["replies"]) == {VMAC}
    neigh = ip("-n", NS_B, "neigh", "show", SHARED, "dev", "vb").stdout
    assert VMAC in neigh
    run_in(
        NS_A,
        f"""
        from carpool.node import addresses as ad
        ad.remove_stale("va", ["{SHARED}/24"], "{VMAC}")
        ad.remove_stale("va", ["{SHARED}/24"], "{VMAC}")
        out(ok=True)
    """,
    )
    assert ip("-n", NS_A, "link", "show", "cv7-va", check=False).returncode != 0
    assert _ping_from_b(SHARED, 0.3) is None


@pytest.mark.lab
@pytest.mark.parametrize("vmac", [None, VMAC])
def test_gratuitous_arp_reaches_partner(clean, vmac):
    ip("netns", "exec", NS_B, "sysctl", "-qw", "net.ipv4.conf.vb.arp_accept=1")
    b = Snippet(
        NS_B,
        f"""
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        s.bind(("vb", 0x0806))
        out(ready=True)
        frames = []
        deadline = time.monotonic() + 5
        while len(frames) < 2 and time.monotonic() < deadline:
            if select.select([s], [], [], max(0, deadline - time.monotonic()))[0]:
                f = s.recv(2048)
                if f[28:32] == socket.inet_aton("{SHARED}"):
                    frames.append(f.hex())
        neigh = ""
        while time.monotonic() < deadline:   # the kernel learns it from the same frame
            neigh = subprocess.run(["ip", "neigh", "show", "{SHARED}", "dev", "vb"],
                                   capture_output=True, text=True).stdout
            if "lladdr" in neigh:
                break
            time.sleep(0.01)
        out(frames=frames, neigh=neigh)
    """,
    )
    try:
        assert b.read(10) == {"ready": True}
        a = run_in(
            NS_A,
            f"""
            from carpool.node import addresses as ad, links
            vmac = {vmac!r}
            ad.add_shared("va", "{SHARED}/24", vmac)
            n = ad.send_garp("va", "{SHARED}", vmac, count=2)
            out(n=n, mac=vmac or links.mac_address("va"))
        """,
        )
        res = b.finish(10)
    finally:
        b.kill()
    assert a["n"] == 2
    expected = build_garp(a["mac"], SHARED)
    frames = [bytes.fromhex(f) for f in res["frames"]]
    assert len(frames) == 2
    for frame in frames:
        assert frame[:42] == expected and frame[42:].strip(b"\0") == b""
    assert a["mac"] in res["neigh"]


@pytest.mark.lab
def test_send_garp_errors_are_oserror(lab):
    res = run_in(
        NS_A,
        f"""
        from carpool.node import addresses as ad
        try:
            ad.send_garp("nosuch0", "{SHARED}")
            out(raised=None)
        except OSError as e:
            out(raised=type(e).__name__)
    """,
    )
    assert res["raised"] is not None


# -- links -------------------------------------------------------------------------------------
@pytest.mark.lab
def test_link_monitor_reports_changes_at_once(clean):
    """Carrier from netlink events (the veth's come at once), a poll only where they may not."""
    res = run_in(
        NS_A,
        f"""
        from carpool.node import links
        async def main():
            events = asyncio.Queue()
            mon = links.LinkMonitor(lambda name, up: events.put_nowait((name, up, time.monotonic())),
                                    watch=("va",))
            mon.attach(asyncio.get_running_loop())
            fresh_bridge("cpdum0", up=False)
            physical = links.LinkMonitor(None, watch=("cpdum0", "nosuch0"))
            physical.attach(asyncio.get_running_loop())
            physical.gated["cpdum0"] = 0.021  # (a fast profile's standby: node/heartbeat_read.py)
            facts = dict(state=mon.state("va"), missing=mon.state("nosuch0"),
                         carrier=mon.carrier(), polls=mon._timer is not None,
                         physical=physical.carrier(), physical_polls=physical._timer is not None,
                         addr=links.ipv4_address("va"), mac=links.mac_address("va"),
                         nomac=links.mac_address("nosuch0"), noaddr=links.ipv4_address("nosuch0"))
            async def expect(name, up, timeout):
                deadline = time.monotonic() + timeout
                while True:
                    n, u, t = await asyncio.wait_for(events.get(), max(0, deadline - time.monotonic()))
                    if n == name:
                        assert u == up, (n, u)
                        return t
            def run(*cmd):
                t0 = time.monotonic()
                subprocess.run(cmd, check=True)
                return t0
            delays = {{}}
            t0 = run("ip", "link", "set", "dev", "va", "down")
            delays["admin_down"] = await expect("va", False, 2) - t0
            facts["state_down"] = mon.state("va")
            t0 = run("ip", "link", "set", "dev", "va", "up")
            delays["admin_up"] = await expect("va", True, 3) - t0
            t0 = run("ip", "-n", "{NS_B}", "link", "set", "dev", "vb", "down")
            delays["carrier_down"] = await expect("va", False, 2) - t0
            t0 = run("ip", "-n", "{NS_B}", "link", "set", "dev", "vb", "up")
            delays["carrier_up"] = await expect("va", True, 3) - t0
            facts["state_up"] = mon.state("va")
            facts["known"] = mon.known().get("va")
            mon.close()
            physical.close()
            subprocess.run(["ip", "link", "del", "cpdum0"], check=True)
            return facts, delays
        facts, delays = asyncio.run(main())
        out(facts=facts, delays=delays)
    """,
    )
    facts, delays = res["facts"], res["delays"]
    assert facts["state"] is True and facts["missing"] is False
    assert facts["addr"] == [A1, 24] and facts["noaddr"] is None
    assert facts["mac"] in ip("-n", NS_A, "link", "show", "va").stdout and facts["nomac"] is None
    assert facts["state_down"] is False and facts["state_up"] is True and facts["known"] is True
    # a stacked device's carrier events come at once (linkwatch's urgent path: its IFLA_LINK is
    # another index); a veth whose peer in another namespace has its own index number, a
    # device on no other (dummy, a NIC) or a missing one is polled — as the kernel judges it
    (va,) = json.loads(ip("-n", NS_A, "-j", "link", "show", "va").stdout)
    urgent = va.get("link_index", va["ifindex"]) != va["ifindex"]
    assert facts["carrier"] == {"va": "events" if urgent else "polled every 0.1 s"}
    assert facts["polls"] is not urgent
    # (a fast profile's heartbeat link: also read when its adverts are late)
    assert facts["physical"] == {
        "cpdum0": "polled every 0.1 s, and when its adverts are 0.021 s late",
        "nosuch0": "polled every 0.1 s",
    }
    assert facts["physical_polls"] is True
    assert delays["admin_down"] < 0.2, delays
    assert delays["carrier_down"] < 0.2, delays
    assert delays["admin_up"] < 0.5 and delays["carrier_up"] < 0.5, delays


@pytest.mark.lab
def test_carrier_polls_read_late_links_off_the_loop(clean):
    """The late links' carrier read on another thread's wake-ups (the Heart's): the loop's
    timer is off, a reading that differs from the monitor's view turns the loop once (which
    reads the link afresh and fires), a link is read at most every half interval and at least
    every 1.25 intervals. An admin-down link reads as down from sysfs (the kernel's EINVAL)."""
    res = run_in(
        NS_A,
        """
        from carpool.node import links
        async def main():
            loop = asyncio.get_running_loop()
            fresh_bridge("cpdum0")
            fired, posted = [], []
            mon = links.LinkMonitor(lambda name, up: fired.append((name, up)),
                                    watch=("cpdum0",), poll_interval=0.02)
            mon.attach(loop)
            facts = dict(timer_before=mon._timer is not None, late=list(mon.late_now),
                         view=mon.up_view.get("cpdum0"), carrier=links.carrier("cpdum0"),
                         missing=links.carrier("nosuch0"))
            def post(name):
                posted.append(name)
                loop.call_soon_threadsafe(mon.recheck, name)
            polls = mon.delegate(post)
            facts["timer_after"] = mon._timer is not None
            now = time.monotonic()
            facts["wait_first"] = polls.wait(now)
            facts["later_wait"] = round(polls.wait(now + 10) or 0, 3)  # nothing read yet: 0
            # a view gone stale (its event not read yet, as a late one): the read differs, the
            # loop reads the link afresh and fires once
            loop.remove_reader(mon.fileno())
            subprocess.run(["ip", "link", "set", "cpdum0", "down"], check=True)
            facts["stale"] = mon.up_view.get("cpdum0")
            t0 = time.monotonic()
            await loop.run_in_executor(None, polls.run, t0)
            deadline = time.monotonic() + 2
            while not fired and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            facts["posted"], facts["fired"] = list(posted), list(fired)
            facts["sysfs"] = polls.files.sysfs("cpdum0")  # read with one pread
            index, mac = mon.idents["cpdum0"]
            facts["foreign"] = links._sysfs_carrier("cpdum0", (index, "02:00:00:00:00:01"))
            # read just now: not again within half an interval, then read
            posted.clear()
            subprocess.run(["ip", "link", "set", "cpdum0", "up"], check=True)  # stale again
            await loop.run_in_executor(None, polls.run, t0 + 0.005)
            facts["again_at_once"] = list(posted)
            facts["wait"] = round(polls.wait(t0 + 0.005), 3)
            await loop.run_in_executor(None, polls.run, t0 + 0.011)
            facts["read_when_due"] = list(posted)
            mon.delegate(None)
            facts["timer_back"] = mon._timer is not None
            mon.close()
            subprocess.run(["ip", "link", "del", "cpdum0"], check=True)
            return facts
        out(facts=asyncio.run(main()))
    """,
    )
    f = res["facts"]
    assert f["timer_before"] and not f["timer_after"] and f["timer_back"], f
    assert f["late"] == ["cpdum0"] and f["view"] is True, f
    assert f["carrier"] is True and f["missing"] is False, f
    assert f["wait_first"] == 0.0 and f["later_wait"] == 0.0, f
    assert f["stale"] is True, f
    # sysfs is read where it shows this link (index and MAC as netlink has them), not otherwise
    assert f["sysfs"] is True and f["foreign"] is None, f
    assert f["posted"] == ["cpdum0"] and f["fired"] == [["cpdum0", False]], f
    assert f["again_at_once"] == [], f
    # delegated, a read is due 1.25 intervals after the last
    assert f["wait"] == 0.02, f
    assert f["read_when_due"] == ["cpdum0"], f


@pytest.mark.lab
def test_a_fast_standby_reads_the_heartbeat_only_when_its_adverts_are_late(clean):
    """node/heartbeat_read.py: nothing is read while adverts come over the link; once they stop
    it is read LATE intervals after the last one, and a loss the monitor's view missed fires
    within about one interval; a link that reads down is not read again until an advert; the
    active unit reads nothing."""
    res = run_in(
        NS_A,
        """
        from carpool.node import links
        from carpool.node.heartbeat_read import HeartbeatRead
        async def main():
            loop = asyncio.get_running_loop()
            fresh_bridge("cpdum0")
            fired = []
            # (the monitor's own reads every 10 s: only the advert-gated read can see the loss)
            mon = links.LinkMonitor(lambda name, up: fired.append((name, up, loop.time())),
                                    watch=("cpdum0",), poll_interval=10)
            mon.attach(loop)
            read = HeartbeatRead(mon, "cpdum0", 0.02, loop)
            read.set_standby(True)
            facts = dict(carrier=mon.carrier()["cpdum0"])
            for _ in range(20):  # adverts every 10 ms for 0.2 s
                read.heard(loop.time())
                await asyncio.sleep(0.01)
            facts["reads_while_heard"] = read.reads
            await asyncio.sleep(0.1)  # no advert: read every interval (up: nothing fires)
            facts["reads_silent"] = read.reads
            # the loss as a late driver tells it: the monitor's events are not read
            loop.remove_reader(mon.fileno())
            read.heard(loop.time())
            last = loop.time()
            subprocess.run(["ip", "link", "set", "cpdum0", "down"], check=True)
            deadline = time.monotonic() + 2
            while not fired and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            facts["fired"] = [(n, up) for n, up, _ in fired]
            facts["after_last"] = fired[0][2] - last if fired else None
            facts["reads_to_see_it"] = read.reads - facts["reads_silent"]
            reads_down = read.reads
            await asyncio.sleep(0.1)
            facts["reads_while_down"] = read.reads - reads_down
            read.set_standby(False)
            subprocess.run(["ip", "link", "set", "cpdum0", "up"], check=True)
            reads_active = read.reads
            read.heard(loop.time())
            await asyncio.sleep(0.1)
            facts["reads_active"] = read.reads - reads_active
            read.close()
            facts["carrier_after"] = mon.carrier()["cpdum0"]
            mon.close()
            subprocess.run(["ip", "link", "del", "cpdum0"], check=True)
            return facts
        out(facts=asyncio.run(main()))
    """,
    )
    f = res["facts"]
    assert f["carrier"] == "polled every 10 s, and when its adverts are 0.021 s late", f
    assert f["reads_while_heard"] == 0, f
    assert 3 <= f["reads_silent"] <= 6, f  # 0.1 s at one read per 20 ms
    assert f["fired"] == [["cpdum0", False]], f
    assert 0.021 <= f["after_last"] < 0.1 and f["reads_to_see_it"] >= 1, f
    assert f["reads_while_down"] == 0 and f["reads_active"] == 0, f
    assert f["carrier_after"] == "polled every 10 s", f


# -- ICMP ----------------------------------------------------------------------------------------
@pytest.mark.lab
def test_ping_live_and_silent(lab):
    res = run_in(
        NS_B,
        f"""
        from carpool.node.icmp import Pinger, ping
        async def main():
            deadline = time.monotonic() + 5   # first both live: links up, neighbours resolved
            while not all([await ping(a, 0.5) is not None for a in ("{A1}", "{A2}")]) \
                    and time.monotonic() < deadline:
                pass
            with Pinger() as p:
                t0 = time.monotonic()
                many = await p.ping_many(["{A1}", "{SILENT}", "{A2}"], 0.5)
                elapsed = time.monotonic() - t0
                burst = await asyncio.gather(*(p.ping("{A1}", 1.0) for _ in range(20)))
                via = await p.ping("{A1}", 1.0, ifname="vb")
                via2 = await p.ping("{A2}", 1.0, ifname="vb2")
            one = await ping("{A1}", 1.0)
            t0 = time.monotonic()
            silent = await ping("{SILENT}", 0.3)
            silent_elapsed = time.monotonic() - t0
            return dict(many=many, elapsed=elapsed, burst=burst, via=via, via2=via2,
                        one=one, silent=silent, silent_elapsed=silent_elapsed)
        out(**asyncio.run(main()))
    """,
    )
    assert isinstance(res["many"][A1], float) and 0 < res["many"][A1] < 0.5
    assert isinstance(res["many"][A2], float)
    assert res["many"][SILENT] is None
    assert 0.45 <= res["elapsed"] < 1.0
    assert all(isinstance(r, float) for r in res["burst"])
    assert isinstance(res["via"], float) and isinstance(res["one"], float)
    assert isinstance(res["via2"], float)
    assert res["silent"] is None and 0.25 <= res["silent_elapsed"] < 0.8


# -- HAProxy -------------------------------------------------------------------------------------
@pytest.mark.lab
def test_haproxy_reload_returns_once_the_new_worker_serves(lab, tmp_path):
    """A reload is over (and counted) when the new worker answers, also when the old
    configuration had no persistence tables to hand over: a request sent right after
    `apply` must meet the new configuration, not the old worker's."""
    res = run_in(
        NS_A,
        f"""
        from types import SimpleNamespace
        from carpool.config.document import parse_document
        from carpool.dataplane.haproxy import HaproxyDataplane
        def doc(persistence):
            return parse_document({{
                "interface": [{{"name": "va", "first": "{A1}", "second": "{B1}",
                                "shared": ["{SHARED}/24"]}}],
                "virtual_service": [{{"name": "app", "address": "{SHARED}", "port": 8080,
                    "type": "http", "persistence": persistence,
                    "real_server": [{{"address": "{B1}", "port": 80}}]}}]}})
        def cfg(d):
            return SimpleNamespace(document=d, heartbeats=[], role="first",
                                   partner_role="second")
        async def main():
            hp = HaproxyDataplane("{tmp_path}")
            try:
                await hp.apply(cfg(doc(0)), lambda *k: True)
                deadline = time.monotonic() + 5
                while not (first := await hp._worker_pid()) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                pids = []
                for n, persistence in enumerate((300, 0, 60)):
                    await hp.apply(cfg(doc(persistence)), lambda *k: True)
                    pids.append(await hp._worker_pid())
                tables = await hp.runtime("show table")
                return dict(first=first, pids=pids, reloads=hp.reloads, tables=tables)
            finally:
                await hp.stop()
        out(**asyncio.run(main()))
    """,
        timeout=40,
    )
    assert res["first"] and res["reloads"] == 3, res
    # each reload answered by a new worker: none by the one before it
    assert len({res["first"], *res["pids"]}) == 4, res
    assert "be_app" in res["tables"], res
