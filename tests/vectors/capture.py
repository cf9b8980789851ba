#!/usr/bin/env python3
"""Re-capture the golden vectors of tests/vectors from the real peers (ucarp, keepalived).

    sudo python3 tests/vectors/capture.py                      # all seven, into a fresh temp dir
    sudo python3 tests/vectors/capture.py --only carp --only vrrp3
    sudo python3 tests/vectors/capture.py --out tests/vectors  # replace the committed vectors

Each capture builds its own little network, runs one peer in it and records what the peer
sends, as README.md describes:

    cpvec-<pid>-peer                       cpvec-<pid>-obs
    eth0 198.18.0.11/24  <---- veth ---->  port0 -- bridge cpvec-<pid> 198.18.0.12/24
    (the peer: ucarp or keepalived)        (tcpdump on the bridge, Ethernet link type)

The IPv6 captures (vrrp3-ipv6, na-ka) enable IPv6 in both namespaces (no DAD, no router
advertisements or SLAAC): the peer speaks from its link-local address, derived from its MAC.
The peer's interface gets the MAC of the committed captures (--mac), so keepalived's frames come
out as before (IP ids, timestamps and ucarp's counter/HMAC aside). tcpdump listens before the
peer starts and stops after a fixed number of packets; every wait has a deadline (--timeout
per capture). A pcap is written to --out (default: a new temp dir, so running this never
overwrites the committed vectors unless asked) only when it holds exactly the expected packets.

Only what this process made is touched: the two namespaces and the bridge named after its pid
(refused if they exist already), and the processes it started, stopped by their pid (any
process left inside its own namespaces is killed by pid too). All of it is removed again, also
when a capture fails or the script is interrupted. Needs root, ip, tcpdump, ucarp, keepalived.
Standard library only: it imports nothing from the project.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PEER_ADDR = "198.18.0.11/24"  # the peer (every vector's source)
OBS_ADDR = "198.18.0.12/24"  # the observer: the bridge itself
SHARED = "198.18.0.10"  # the shared address
SHARED6 = "2001:2::10"  # the IPv6 captures' shared address (a /64)
GROUP6 = "ff02::12"
ALL_NODES = "ff02::1"
PEER_MAC = "fe:35:d8:23:49:53"  # the peer's MAC in the committed captures
OBS_MAC = "02:00:c6:12:00:0c"  # locally administered, 198.18.0.12 in hex
GROUP = "224.0.0.18"
PROTO_VRRP = 112  # CARP and VRRP alike
POLL = 0.05
CMD_TIMEOUT = 10.0  # any single ip/sysctl command
READY_TIMEOUT = 5.0  # links up, tcpdump listening
STOP_GRACE = 5.0  # SIGTERM -> SIGKILL


class CaptureError(Exception):
    pass


@dataclass(frozen=True)
class Capture:
    """One golden vector: which peer, with what parameters, and what it must hold."""

    name: str  # file name in tests/vectors
    peer: str  # "ucarp" or "keepalived"
    kind: str  # "advert" (IP proto 112), "garp" (gratuitous ARP request), "na" (unsolicited NA)
    count: int  # packets recorded (what the unit tests expect)
    vrrp_version: int = 0
    advert_int: float = 1.0
    what: str = ""
    family: int = 4  # 6: an IPv6 instance, IPv6 on in the namespaces


# The README table, one line each; `count` is what tests/unit expects of each file.
UCARP_ARGS = [
    "-v",
    "10",
    "-p",
    "secret",
    "-a",
    SHARED,
    "-s",
    PEER_ADDR.split("/")[0],
    "-b",
    "1",
    "-k",
    "0",
]
CAPTURES = {
    c.name: c
    for c in (
        Capture(
            "carp.pcap",
            "ucarp",
            "advert",
            4,
            what="ucarp " + " ".join(UCARP_ARGS) + ", master: CARP adverts",
        ),
        Capture(
            "vrrp2.pcap",
            "keepalived",
            "advert",
            3,
            vrrp_version=2,
            advert_int=1.0,
            what="keepalived VRRPv2, VRID 51, priority 150, advert_int 1: adverts",
        ),
        Capture(
            "vrrp3.pcap",
            "keepalived",
            "advert",
            4,
            vrrp_version=3,
            advert_int=0.1,
            what="keepalived VRRPv3, VRID 51, priority 150, advert 10 cs: adverts",
        ),
        Capture(
            "garp-ucarp.pcap",
            "ucarp",
            "garp",
            2,
            what="ucarp (as carp.pcap) taking over: its gratuitous ARPs",
        ),
        Capture(
            "garp-ka.pcap",
            "keepalived",
            "garp",
            2,
            vrrp_version=3,
            advert_int=0.1,
            what="keepalived (as vrrp3.pcap) taking over: its gratuitous ARPs",
        ),
        Capture(
            "vrrp3-ipv6.pcap",
            "keepalived",
            "advert",
            4,
            vrrp_version=3,
            advert_int=0.1,
            what="keepalived VRRPv3 over IPv6, VRID 51, priority 150, advert 10 cs, "
            "2001:2::10/64: adverts from the link-local address to ff02::12",
            family=6,
        ),
        Capture(
            "na-ka.pcap",
            "keepalived",
            "na",
            2,
            vrrp_version=3,
            advert_int=0.1,
            what="keepalived (as vrrp3-ipv6.pcap) taking over: its unsolicited neighbour "
            "advertisements",
            family=6,
        ),
    )
}

# tcpdump filters: the peer's adverts / its gratuitous ARP requests for the shared address
# (ARP request, sender address = target address = SHARED).
_SHARED_HEX = "0x" + ipaddress.IPv4Address(SHARED).packed.hex()
FILTERS = {
    "advert": f"ip proto {PROTO_VRRP} and src host {PEER_ADDR.split('/')[0]} and dst host {GROUP}",
    "garp": f"arp and arp[6:2] = 1 and arp[14:4] = {_SHARED_HEX} and arp[24:4] = {_SHARED_HEX}",
    # IPv6: the fixed header is 40 bytes, the upper layer follows (no extension headers here)
    "advert6": f"ip6 and ip6[6] = {PROTO_VRRP} and dst host {GROUP6}",
    "na": f"ip6 and ip6[6] = 58 and ip6[40] = 136 and dst host {ALL_NODES}",
}


def _filter(capture: Capture) -> str:
    return FILTERS["advert6" if capture.kind == "advert" and capture.family == 6 else capture.kind]


# -- small helpers ------------------------------------------------------------------------------
def say(text: str) -> None:
    print(f"capture: {text}", file=sys.stderr, flush=True)


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise CaptureError(f"{shlex.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def wait_for(predicate, timeout: float, what: str):
    """Poll predicate until truthy (returned) or the deadline (CaptureError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise CaptureError(f"{what}: not within {timeout:g} s")
        time.sleep(POLL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


# -- pcap ---------------------------------------------------------------------------------------
def read_pcap(path: Path) -> list[bytes]:
    """The frames of a classic pcap file with Ethernet link type."""
    data = path.read_bytes()
    if len(data) < 24:
        raise CaptureError(f"{path}: not a pcap file")
    magic = struct.unpack_from("<I", data)[0]
    order = {0xA1B2C3D4: "<", 0xA1B23C4D: "<", 0xD4C3B2A1: ">", 0x4D3CB2A1: ">"}.get(magic)
    if order is None:
        raise CaptureError(f"{path}: bad pcap magic {magic:#010x}")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype != 1:
        raise CaptureError(f"{path}: link type {linktype}, expected 1 (Ethernet)")
    frames, offset = [], 24
    while offset < len(data):
        if offset + 16 > len(data):
            raise CaptureError(f"{path}: truncated record header at {offset}")
        incl = struct.unpack_from(order + "I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + incl]
        if len(frame) != incl:
            raise CaptureError(f"{path}: truncated record at {offset}")
        frames.append(frame)
        offset += 16 + incl
    return frames


def _ipv6_frame(capture: Capture, f: bytes) -> bool:
    """An IPv6 vector's frame: hop limit 255, an advert to ff02::12 from the peer's
    link-local address, or an unsolicited NA for the shared address from it to ff02::1."""
    if len(f) < 78 or struct.unpack_from("!H", f, 12)[0] != 0x86DD or f[21] != 255:
        return False
    src, dst = ipaddress.IPv6Address(f[22:38]), ipaddress.IPv6Address(f[38:54])
    if capture.kind == "advert":
        return f[20] == PROTO_VRRP and src.is_link_local and dst == ipaddress.IPv6Address(GROUP6)
    shared = ipaddress.IPv6Address(SHARED6)
    return (
        f[20] == 58
        and f[54] == 136
        and dst == ipaddress.IPv6Address(ALL_NODES)
        and ipaddress.IPv6Address(f[62:78]) == shared
    )


def check_frames(capture: Capture, frames: list[bytes]) -> None:
    """What every frame of a vector must be (the unit tests check the protocol fields)."""
    if len(frames) != capture.count:
        raise CaptureError(f"{capture.name}: {len(frames)} packets, expected {capture.count}")
    src = ipaddress.IPv4Address(PEER_ADDR.split("/")[0]).packed
    shared = ipaddress.IPv4Address(SHARED).packed
    for n, f in enumerate(frames):
        ethertype = struct.unpack_from("!H", f, 12)[0] if len(f) >= 14 else None
        if capture.family == 6:
            ok = _ipv6_frame(capture, f)
        elif capture.kind == "advert":
            ok = (
                ethertype == 0x0800
                and len(f) >= 34
                and f[14 + 9] == PROTO_VRRP
                and f[26:30] == src
                and f[30:34] == ipaddress.IPv4Address(GROUP).packed
            )
        else:
            ok = (
                ethertype == 0x0806
                and len(f) >= 42
                and f[:6] == b"\xff" * 6
                and struct.unpack_from("!H", f, 20)[0] == 1
                and f[28:32] == shared
                and f[38:42] == shared
            )
        if not ok:
            raise CaptureError(
                f"{capture.name}: frame {n} is not a {capture.kind} of the peer: {f[:42].hex()}"
            )


# -- the network --------------------------------------------------------------------------------
class Network:
    """Two namespaces and a bridge named after this process; removed by close()."""

    def __init__(self, tag: str, mac: str, ipv6: bool = False):
        self.peer_ns, self.obs_ns, self.bridge = f"{tag}-peer", f"{tag}-obs", tag
        self.mac = mac
        self.ipv6 = ipv6
        self.created: list[str] = []  # namespaces this object made, in order
        self.bridge_made = False

    def up(self) -> None:
        existing = set(run(["ip", "netns", "list"]).stdout.split())
        clash = {self.peer_ns, self.obs_ns} & existing
        if clash:
            raise CaptureError(f"namespaces {sorted(clash)} exist already (not ours: left alone)")
        for ns in (self.obs_ns, self.peer_ns):
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
            # IPv4 only: no link-local chatter on the wire; IPv6 without DAD, RAs or SLAAC
            ipv6 = (
                [
                    f"net.ipv6.conf.{w}.{k}={v}"
                    for w in ("all", "default")
                    for k, v in (("disable_ipv6", 0), ("accept_dad", 0), ("accept_ra", 0))
                ]
                if self.ipv6
                else ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
            )
            run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *ipv6], check=False)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(
            [
                "ip",
                "-n",
                self.obs_ns,
                "link",
                "add",
                "name",
                self.bridge,
                "address",
                OBS_MAC,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ]
        )
        self.bridge_made = True
        run(
            [
                "ip",
                "-n",
                self.peer_ns,
                "link",
                "add",
                "eth0",
                "address",
                self.mac,
                "type",
                "veth",
                "peer",
                "name",
                "port0",
                "netns",
                self.obs_ns,
            ]
        )
        run(["ip", "-n", self.obs_ns, "link", "set", "port0", "master", self.bridge, "up"])
        run(["ip", "-n", self.obs_ns, "addr", "add", OBS_ADDR, "dev", self.bridge])
        run(["ip", "-n", self.obs_ns, "link", "set", self.bridge, "up"])
        run(["ip", "-n", self.peer_ns, "addr", "add", PEER_ADDR, "dev", "eth0"])
        run(["ip", "-n", self.peer_ns, "link", "set", "eth0", "up"])

        def operational() -> bool:  # until then the kernel drops frames (no carrier yet)
            return (
                self._operstate(self.peer_ns, "eth0") == "UP"
                and self._operstate(self.obs_ns, "port0") == "UP"
                and self._operstate(self.obs_ns, self.bridge) == "UP"
            )

        wait_for(operational, READY_TIMEOUT, "links eth0, port0 and the bridge up")

    @staticmethod
    def _operstate(ns: str, link: str) -> str | None:
        out = run(["ip", "-n", ns, "-j", "link", "show", "dev", link], check=False).stdout
        try:
            return json.loads(out)[0].get("operstate")
        except (ValueError, IndexError):
            return None

    def close(self) -> list[str]:
        """Kill (by pid) whatever still runs in our namespaces, delete the bridge and the
        namespaces this object made. Returns the problems met (cleaning goes on)."""
        problems = []
        for ns in self.created:
            pids = self._pids(ns)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                wait_for(
                    lambda pids=pids: not any(alive(p) for p in pids),
                    STOP_GRACE,
                    f"processes {pids} in {ns} gone",
                )
            except CaptureError as e:
                problems.append(str(e))
        if self.bridge_made:
            proc = run(["ip", "-n", self.obs_ns, "link", "del", self.bridge], check=False)
            if proc.returncode != 0:
                problems.append(f"deleting bridge {self.bridge}: {proc.stderr.strip()}")
            self.bridge_made = False
        for ns in reversed(self.created):
            proc = run(["ip", "netns", "delete", ns], check=False)
            if proc.returncode != 0:
                problems.append(f"deleting namespace {ns}: {proc.stderr.strip()}")
        self.created = []
        return problems

    @staticmethod
    def _pids(ns: str) -> list[int]:
        out = run(["ip", "netns", "pids", ns], check=False).stdout
        return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


# -- processes ----------------------------------------------------------------------------------
class Proc:
    """A process started in a namespace (`ip netns exec` execs it: the pid is its own)."""

    def __init__(self, name: str, ns: str, argv: list[str], log: Path):
        self.name, self.ns, self.log = name, ns, log
        self.argv = ["ip", "netns", "exec", ns, *argv]
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, extra_pids: tuple[int, ...] = ()) -> int | None:
        """sig to the pid, SIGKILL after STOP_GRACE; also waits for extra_pids (children that
        leave with it) and SIGKILLs those left. Returns the exit status."""
        if self.running():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_GRACE)
        rest = [p for p in extra_pids if p and p != self.pid]
        try:
            wait_for(
                lambda: not any(alive(p) for p in rest),
                STOP_GRACE,
                f"{self.name} children {rest} gone",
            )
        except CaptureError:
            for pid in rest:
                if alive(pid) and _in_ns(pid, self.ns):
                    os.kill(pid, signal.SIGKILL)
        return self.popen.returncode


def _in_ns(pid: int, ns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def peer_argv(capture: Capture, work: Path) -> tuple[list[str], Path | None]:
    """The peer's command line (its files written into work) and, for keepalived, the file
    with the pid of its VRRP child."""
    prefix = PEER_ADDR.split("/")[1]
    shared = f"{SHARED}/{prefix}" if capture.family == 4 else f"{SHARED6}/64"
    if capture.peer == "ucarp":
        up, down = work / "up.sh", work / "down.sh"
        up.write_text(f'#!/bin/sh\nexec ip addr add "$2/{prefix}" dev "$1"\n')
        down.write_text(f'#!/bin/sh\nip addr del "$2/{prefix}" dev "$1" 2>/dev/null || true\n')
        for script in (up, down):
            script.chmod(0o755)
        return ["ucarp", "-i", "eth0", *UCARP_ARGS, "-u", str(up), "-d", str(down)], None
    conf = work / "keepalived.conf"
    conf.write_text(
        "\n".join(
            [
                "global_defs {",
                "    router_id carpool-vectors",
                f"    vrrp_version {capture.vrrp_version}",
                "}",
                "vrrp_instance vectors {",
                "    state BACKUP",
                "    interface eth0",
                "    virtual_router_id 51",
                "    priority 150",
                f"    advert_int {capture.advert_int:g}",
                f"    version {capture.vrrp_version}",
                "    virtual_ipaddress {",
                f"        {shared} dev eth0",
                "    }",
                "}",
                "",
            ]
        )
    )
    vrrp_pid = work / "vrrp.pid"
    return [
        "keepalived",
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--vrrp",
        "--use-file",
        str(conf),
        "--pid",
        str(work / "keepalived.pid"),
        "--vrrp_pid",
        str(vrrp_pid),
    ], vrrp_pid


# -- one capture --------------------------------------------------------------------------------
def capture_one(capture: Capture, out_dir: Path, tag: str, mac: str, timeout: float) -> Path:
    """Build the network, record `capture`, tear everything down; the pcap's path in out_dir."""
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-", suffix="-" + capture.name.split(".")[0]))
    net = Network(tag, mac, ipv6=capture.family == 6)
    tcpdump = peer = None
    vrrp_pid_file = None
    raw = work / capture.name
    try:
        net.up()
        tcpdump = Proc(
            "tcpdump",
            net.obs_ns,
            [
                "tcpdump",
                "-i",
                net.bridge,
                "-nn",
                "-U",
                "--immediate-mode",
                "-y",
                "EN10MB",
                "-s",
                "262144",
                "-Z",
                "root",
                "-c",
                str(capture.count),
                "-w",
                str(raw),
                _filter(capture),
            ],
            work / "tcpdump.log",
        )
        wait_for(lambda: _listening(tcpdump), READY_TIMEOUT, "tcpdump listening")
        argv, vrrp_pid_file = peer_argv(capture, work)
        peer = Proc(capture.peer, net.peer_ns, argv, work / "peer.log")

        def done() -> bool:
            if not peer.running():
                raise CaptureError(
                    f"{capture.peer} exited with {peer.popen.returncode}:\n{tail(peer.log)}"
                )
            return not tcpdump.running()

        try:
            wait_for(done, timeout, f"{capture.count} packets for {capture.name}")
        except CaptureError as e:
            tcpdump.stop(signal.SIGINT)  # flushes what it has, for the message below
            got = len(read_pcap(raw)) if raw.exists() and raw.stat().st_size >= 24 else 0
            raise CaptureError(
                f"{e} (got {got})\n--- {capture.peer}:\n{tail(peer.log)}\n"
                f"--- tcpdump:\n{tail(tcpdump.log)}"
            ) from None
        if tcpdump.popen.returncode != 0:
            raise CaptureError(
                f"tcpdump exited with {tcpdump.popen.returncode}:\n{tail(tcpdump.log)}"
            )
        check_frames(capture, read_pcap(raw))
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / capture.name
        partial = out_dir / f".{capture.name}.{os.getpid()}.tmp"
        shutil.copyfile(raw, partial)
        os.replace(partial, target)  # the old file stays until a whole new one is there
        return target
    finally:
        for proc, sig in ((peer, signal.SIGTERM), (tcpdump, signal.SIGINT)):
            if proc is not None:
                extra = (_read_pid(vrrp_pid_file),) if proc is peer and vrrp_pid_file else ()
                try:
                    proc.stop(sig, tuple(p for p in extra if p))
                except (OSError, subprocess.SubprocessError) as e:
                    say(f"stopping {proc.name} (pid {proc.pid}): {e}")
        for problem in net.close():
            say(f"clean-up: {problem}")
        shutil.rmtree(work, ignore_errors=True)


def _listening(tcpdump: Proc) -> bool:
    if not tcpdump.running():
        raise CaptureError(f"tcpdump exited with {tcpdump.popen.returncode}:\n{tail(tcpdump.log)}")
    return "listening on" in tail(tcpdump.log, 5)


# -- main ---------------------------------------------------------------------------------------
def _name(text: str) -> str:
    name = text if text.endswith(".pcap") else f"{text}.pcap"
    if name not in CAPTURES:
        raise argparse.ArgumentTypeError(
            f"unknown vector {text!r}: {', '.join(n[:-5] for n in CAPTURES)}"
        )
    return name


def _raise_exit(signum, _frame):
    raise SystemExit(128 + signum)  # so that every finally: runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(f"  {c.name:16} {c.what}" for c in CAPTURES.values()),
    )
    p.add_argument(
        "--out",
        type=Path,
        help="where the pcaps go (default: a new temp dir; "
        "tests/vectors replaces the committed ones)",
    )
    p.add_argument(
        "--only",
        type=_name,
        action="append",
        metavar="NAME",
        help="capture only this vector (repeatable): " + ", ".join(n[:-5] for n in CAPTURES),
    )
    p.add_argument(
        "--timeout", type=float, default=20.0, help="seconds one capture may take (default 20)"
    )
    p.add_argument("--mac", default=PEER_MAC, help=f"the peer's MAC (default {PEER_MAC})")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (network namespaces, tcpdump)")
    missing = [t for t in ("ip", "tcpdump", "ucarp", "keepalived") if shutil.which(t) is None]
    if missing:
        p.error(f"missing tools: {', '.join(missing)}")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="carpool-vectors-"))
    names = list(dict.fromkeys(args.only or CAPTURES))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    tag = f"cpvec-{os.getpid()}"
    failed = 0
    for name in names:
        capture = CAPTURES[name]
        say(f"{name}: {capture.what}")
        started = time.monotonic()
        try:
            path = capture_one(capture, out_dir, tag, args.mac, args.timeout)
        except CaptureError as e:
            failed += 1
            say(f"{name}: FAILED: {e}")
            continue
        say(f"{name}: {capture.count} packets in {time.monotonic() - started:.1f} s -> {path}")
    say(f"{len(names) - failed} of {len(names)} captured into {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
