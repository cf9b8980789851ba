"""Link state from netlink: a monitor that calls back at once on every change, and lookups of an
interface's state, first IPv4 address and MAC.

Plain AF_NETLINK sockets and a tiny parser (ifinfomsg/ifaddrmsg), no pyroute2: pyroute2 ≥ 0.9's
sync IPRoute cannot be used inside a running asyncio loop, and a bare socket is exactly what
loop.add_reader wants. Lookups are synchronous netlink round trips (well under a millisecond) and
may be called from anywhere, loop or not.

"Up" means admin up AND carrier: IFF_UP and IFF_LOWER_UP. The kernel computes IFF_LOWER_UP
from the carrier at the moment it answers; IFF_RUNNING and operstate are only updated by the
kernel's linkwatch worker, which batches non-urgent events up to one second apart, and the
RTM_NEWLINK notification of a carrier change is sent from that same worker. So a carrier loss
(cable pulled) is notified up to ~1 s late, while an admin change (`ip link set dev X down`) is
notified at once. Not for every device: linkwatch sends a stacked device's events at once (one
whose IFLA_LINK names another device: veth, macvlan, vlan), and a LAG's. LinkMonitor therefore
waits on events only, and reads the carrier (CarrierPolls: one pread of sysfs, else an
RTM_GETLINK; every `poll_interval`, default 0.1 s) of just the watched links whose driver may be
late: a physical NIC's, or a veth whose peer has the same index in another namespace (as the
kernel judges it; the lab's heartbeat cable). `carrier()` says which link is which.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable

from .. import events
from . import netlink as nl

log = events.logger("carpool.links", events.Kind.LINK)

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_OPERSTATE, IFLA_EXT_MASK = 1, 3, 5, 16, 29
RTEXT_FILTER_SKIP_STATS = 1 << 3  # a carrier read needs the flags, not the counters
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_SECONDARY = 0x01
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000

_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RCVBUF = 1 << 20
NEVER = float("-inf")

LinkCallback = Callable[[str, bool], None]


# -- requests (the plumbing: node/netlink.py) --------------------------------------------------
_seq_lock = threading.Lock()
_seq = [0]


_local = threading.local()


def _socket(timeout: float) -> socket.socket:
    """This thread's request socket, kept: the carrier poll asks several times a second, and a
    socket made, bound and closed per question is most of its cost. Replies are matched by
    sequence number, so a late reply to an earlier question is skipped."""
    s = getattr(_local, "sock", None)
    if s is None or s.fileno() < 0:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        s.bind((0, 0))
        _local.sock = s
    s.settimeout(timeout)
    return s


def _request(kind: int, flags: int, body: bytes, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """One netlink request on this thread's socket; the (type, body) replies. Raises OSError
    (and then drops the socket: the next request starts clean)."""
    with _seq_lock:
        _seq[0] = (_seq[0] + 1) & 0x7FFFFFFF
        seq = _seq[0]
    try:
        return _ask(_socket(timeout), kind, flags, body, seq)
    except _KernelError:
        raise
    except OSError:
        s = getattr(_local, "sock", None)
        if s is not None:
            s.close()
            _local.sock = None
        raise


class _KernelError(OSError):
    """The kernel's answer was an error (no such device...): the socket itself is fine."""


def _ask(s: socket.socket, kind: int, flags: int, body: bytes, seq: int) -> list[tuple[int, bytes]]:
    s.send(
        nl.NLMSGHDR.pack(nl.NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body
    )
    out: list[tuple[int, bytes]] = []
    while True:
        data = s.recv(1 << 16)
        for mtype, _mflags, mseq, mbody in nl.messages(data):
            if mseq != seq:
                continue  # a late reply to an earlier question on this socket
            if mtype == NLMSG_DONE:
                return out
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", mbody)[0]
                if code:
                    raise _KernelError(code, os.strerror(code))
                return out
            out.append((mtype, mbody))
            if not flags & NLM_F_DUMP:
                return out


# -- link records -------------------------------------------------------------------------------
class Link:
    """One interface as netlink describes it."""

    __slots__ = ("index", "name", "flags", "operstate", "mac", "stacked")

    def __init__(
        self,
        index: int,
        name: str,
        flags: int,
        operstate: int | None,
        mac: str | None,
        stacked: bool = False,
    ):
        self.index, self.name, self.flags, self.operstate, self.mac = (
            index,
            name,
            flags,
            operstate,
            mac,
        )
        # on another device (IFLA_LINK): linkwatch reports its carrier at once
        self.stacked = stacked

    @property
    def up(self) -> bool:
        need = IFF_UP | IFF_LOWER_UP
        return self.flags & need == need

    def __repr__(self) -> str:
        return f"Link({self.index}, {self.name!r}, up={self.up}, mac={self.mac})"


def _parse_link(body: bytes) -> Link | None:
    if len(body) < _IFINFOMSG.size:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    attrs = nl.attrs(body, _IFINFOMSG.size)
    name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
    operstate = attrs[IFLA_OPERSTATE][0] if IFLA_OPERSTATE in attrs else None
    raw_mac = attrs.get(IFLA_ADDRESS)
    mac = ":".join(f"{b:02x}" for b in raw_mac) if raw_mac else None
    under = attrs.get(IFLA_LINK, b"")
    stacked = len(under) >= 4 and struct.unpack_from("=i", under)[0] != index
    return Link(index, name, flags, operstate, mac, stacked)


def get_link(ifname: str) -> Link | None:
    """The interface called ifname (fresh from the kernel), None if there is none."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + nl.attr(
        IFLA_IFNAME, ifname.encode() + b"\0"
    )
    try:
        replies = _request(RTM_GETLINK, 0, body)
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            return None
        raise
    for mtype, mbody in replies:
        if mtype == RTM_NEWLINK:
            return _parse_link(mbody)
    return None


def all_links() -> list[Link]:
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return [
        link
        for mtype, mbody in _request(RTM_GETLINK, NLM_F_DUMP, body)
        if mtype == RTM_NEWLINK and (link := _parse_link(mbody)) is not None
    ]


def link_up(ifname: str) -> bool:
    """Admin up and carrier (IFF_UP and IFF_LOWER_UP); False for a missing interface."""
    link = get_link(ifname)
    return bool(link and link.up)


def carrier(ifname: str) -> bool:
    """link_up() for a poll: the counters left out of the answer, the flags read, nothing
    parsed. False for a missing interface."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _carrier_attrs(ifname)
    try:
        replies = _request(RTM_GETLINK, 0, body)
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            return False
        raise
    for mtype, mbody in replies:
        if mtype == RTM_NEWLINK and len(mbody) >= _IFINFOMSG.size:
            flags = _IFINFOMSG.unpack_from(mbody)[3]
            return flags & (IFF_UP | IFF_LOWER_UP) == IFF_UP | IFF_LOWER_UP
    return False


_carrier_cache: dict[str, bytes] = {}


def _carrier_attrs(ifname: str) -> bytes:
    attrs = _carrier_cache.get(ifname)
    if attrs is None:
        attrs = nl.attr(IFLA_IFNAME, ifname.encode() + b"\0") + nl.attr(
            IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS)
        )
        if len(_carrier_cache) < 64:
            _carrier_cache[ifname] = attrs
    return attrs


def mac_address(ifname: str) -> str | None:
    """The interface's MAC as "aa:bb:cc:dd:ee:ff", None if missing (or it has none)."""
    link = get_link(ifname)
    return link.mac if link else None


def ipv4_addresses(ifname: str) -> list[tuple[str, int]]:
    """The interface's IPv4 (address, prefixlen) pairs, primaries first, in kernel order."""
    link = get_link(ifname)
    if link is None:
        return []
    body = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
    primary: list[tuple[str, int]] = []
    secondary: list[tuple[str, int]] = []
    for mtype, mbody in _request(RTM_GETADDR, NLM_F_DUMP, body):
        if mtype != RTM_NEWADDR or len(mbody) < _IFADDRMSG.size:
            continue
        family, prefixlen, flags8, _scope, index = _IFADDRMSG.unpack_from(mbody)
        if family != socket.AF_INET or index != link.index:
            continue
        attrs = nl.attrs(mbody, _IFADDRMSG.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if not raw or len(raw) != 4:
            continue
        flags = struct.unpack("=I", attrs[IFA_FLAGS][:4])[0] if IFA_FLAGS in attrs else flags8
        (secondary if flags & IFA_F_SECONDARY else primary).append(
            (socket.inet_ntoa(raw), prefixlen)
        )
    return primary + secondary


def ipv4_address(ifname: str) -> tuple[str, int] | None:
    """The interface's first (primary) IPv4 address and prefix length, or None."""
    found = ipv4_addresses(ifname)
    return found[0] if found else None


# -- the monitor --------------------------------------------------------------------------------
class LinkMonitor:
    """Subscribes to RTMGRP_LINK; `on_change(ifname, up)` runs at once for every change of "up".

    Usage in a loop: `mon = LinkMonitor(cb); mon.attach(loop)` … `mon.close()`. Without a loop,
    call `poll()` whenever `fileno()` is readable (and `refresh()` now and then for carrier).
    Callbacks run inside the loop's reader / timer (or poll()/refresh()); an exception in one is
    logged, never propagated. A new interface that shows up is reported as it is; a deleted one
    as down. `watch`: the links whose carrier matters; those of them whose driver may report
    late (not stacked) are re-read every `poll_interval` (None: never, events only).
    """

    def __init__(
        self,
        on_change: LinkCallback | None = None,
        poll_interval: float | None = 0.1,
        watch: tuple[str, ...] = (),
    ):
        self.on_change = on_change
        self.poll_interval = poll_interval
        self.watch = watch
        # name -> s: also read when its adverts are that late (node/heartbeat_read.py)
        self.gated: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        # read by another thread (CarrierPolls): each replaced whole, never changed in place
        self.up_view: dict[str, bool] = {}
        self.idents: dict[str, tuple[int, str | None]] = {}  # name -> (index, MAC)
        self.late_now: tuple[str, ...] = ()
        self._delegated = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE
        )
        try:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            except OSError:
                pass
            self._sock.bind((0, RTMGRP_LINK))
            self._known: dict[int, Link] = {}
            self._resync(notify=False)
            self.late_now = tuple(self.late())
            self.polls = CarrierPolls(self, self.recheck)  # the late links' reads
        except BaseException:
            self._sock.close()
            raise

    # state
    def state(self, ifname: str) -> bool:
        """Up right now (asks the kernel; no callback runs). False for a missing interface."""
        return link_up(ifname)

    def known(self) -> dict[str, bool]:
        """The monitor's view (as of the last processed event): ifname -> up."""
        return {link.name: link.up for link in self._known.values()}

    # event plumbing
    def fileno(self) -> int:
        return self._sock.fileno()

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch the netlink socket from the loop (default: the running one)."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self.poll)
        self.poll()  # anything that changed between construction and now
        self._arm()

    def late(self) -> list[str]:
        """The watched links whose carrier events may come late (polled); a missing one too
        (it may come back as anything)."""
        by_name = {link.name: link for link in self._known.values()}
        return [n for n in self.watch if n not in by_name or not by_name[n].stacked]

    def carrier(self) -> dict[str, str]:
        """How each watched link's carrier is followed: "events", or "polled every N s"."""
        late = self.late()
        out = {}
        for n in self.watch:
            every = self.poll_interval
            polled = f"polled every {every:g} s" if every else "events (late)"
            if n in self.gated:
                polled += f", and when its adverts are {self.gated[n]:.3g} s late"
            out[n] = polled if n in late else "events"
        return out

    def set_poll_interval(self, every: float | None) -> None:
        """A new version's late-link read interval (node/liveness.py link_poll)."""
        self.poll_interval = every
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm()

    def delegate(self, post: Callable[[str], object] | None) -> CarrierPolls:
        """Let another thread's wake-ups read the late links, `post(name)` bringing a change
        back into the loop (None: the loop's timer reads them again). Returns the reads."""
        self._delegated = post is not None
        self.polls.post = post or self.recheck
        self.polls.slack = 1.25 if post is not None else 1.0
        if post is not None and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm()
        return self.polls

    def recheck(self, name: str) -> None:
        """Read one link afresh and fire what changed (CarrierPolls saw it differ)."""
        if self._loop is None:
            return
        self.poll()
        try:
            link = get_link(name)
        except OSError as e:
            log.error("link refresh of %s failed: %s", name, e)
            return
        gone = [k for k in self._known.values() if k.name == name]
        if link is not None:
            self._update(link, deleted=False)
        elif gone:
            self._update(gone[0], deleted=True)
        self._arm()

    def _arm(self) -> None:
        self.late_now = tuple(self.late())
        if self._loop is None or not self.poll_interval or self._delegated:
            return
        now = self._loop.time()
        wait = self.polls.wait(now)
        if wait is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        when = now + wait
        if self._timer is not None and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.poll()
        if self._loop is not None:
            self.polls.run(self._loop.time())  # a reading that differs: recheck
        self._arm()

    def refresh(self) -> None:
        """Read queued notifications, then re-read every link (catches carrier changes that
        linkwatch has not notified yet); fires callbacks for what changed. Never raises."""
        self.poll()
        try:
            self._resync(notify=True)
        except OSError as e:
            log.error("link refresh failed: %s", e)

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None:
            try:
                self._loop.remove_reader(self._sock.fileno())
            except (ValueError, RuntimeError):
                pass
            self._loop = None

    def poll(self) -> None:
        """Read every queued notification and fire the callbacks; never blocks, never raises."""
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # notifications were lost: ask for the full picture
                    log.warning("netlink link notifications overflowed; resynchronising")
                    try:
                        self._resync(notify=True)
                    except OSError as e2:
                        log.error("link resync failed: %s", e2)
                    continue
                if e.errno == errno.EBADF:
                    return
                log.error("netlink receive error: %s", e)
                return
            for mtype, _flags, _seq, body in nl.messages(data):
                if mtype in (RTM_NEWLINK, RTM_DELLINK):
                    link = _parse_link(body)
                    if link is not None:
                        self._update(link, deleted=mtype == RTM_DELLINK)
                        self._arm()  # a watched link gone or replaced may now need the poll

    def _resync(self, notify: bool) -> None:
        fresh = {link.index: link for link in all_links()}
        if notify:
            for index in list(self._known):
                if index not in fresh:
                    self._update(self._known[index], deleted=True)
            for link in fresh.values():
                self._update(link, deleted=False)
        else:
            self._known = fresh
            self._publish()

    def _publish(self) -> None:
        links = list(self._known.values())
        self.up_view = {link.name: link.up for link in links}
        self.idents = {link.name: (link.index, link.mac) for link in links}

    def _update(self, link: Link, deleted: bool) -> None:
        old = self._known.get(link.index)
        if deleted:
            self._known.pop(link.index, None)
            self._publish()
            if old is not None and old.up:
                self._fire(old.name, False)
            return
        self._known[link.index] = link
        if old is None or (old.up, old.name, old.mac) != (link.up, link.name, link.mac):
            self._publish()
        if old is not None and old.name != link.name:  # renamed: the old name is gone
            if old.up:
                self._fire(old.name, False)
            old = None
        if old is None or old.up != link.up:
            self._fire(link.name, link.up)

    def _fire(self, ifname: str, up: bool) -> None:
        log.debug("link %s %s", ifname, "up" if up else "down")
        if self.on_change is None:
            return
        try:
            self.on_change(ifname, up)
        except Exception:
            log.exception("link callback failed for %s", ifname)

    def close(self) -> None:
        self.detach()
        self._sock.close()
        self.polls.close()

    def __enter__(self) -> LinkMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CarrierFiles:
    """Carrier reads: one pread of a link's sysfs `carrier` where that file is this link's
    (the netlink round trip costs several system calls), else netlink. The open files are the
    reader's own: one per thread that reads."""

    def __init__(self, monitor: LinkMonitor):
        self.monitor = monitor
        self._files: dict[str, tuple[int | None, tuple[int, str | None] | None]] = {}

    def read(self, name: str) -> bool:
        ident = self.monitor.idents.get(name)
        fd, opened_for = self._files.get(name, (None, None))
        if opened_for != ident:
            self._close(name)
            fd = _sysfs_carrier(name, ident) if ident is not None else None
            self._files[name] = (fd, ident)
        if fd is None:
            return carrier(name)
        try:
            return os.pread(fd, 8, 0)[:1] == b"1"
        except OSError as e:
            if e.errno == errno.EINVAL:  # the kernel's answer for a link that is admin down
                return False
            self._close(name)  # gone or replaced: netlink says what it is now
            return carrier(name)

    def sysfs(self, name: str) -> bool:
        """Whether `name` is read from sysfs (else netlink)."""
        return self._files.get(name, (None, None))[0] is not None

    def _close(self, name: str) -> None:
        fd = self._files.pop(name, (None, None))[0]
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for name in list(self._files):
            self._close(name)


class CarrierPolls:
    """The late links' carrier reads, run by the monitor's timer or another thread's wake-ups.

    A read is one CarrierFiles read; only a reading that differs from the monitor's view reads
    the link afresh and fires (`post(name)`: LinkMonitor.recheck). The monitor's timer runs
    them, or, delegated, the fast detector's thread (node/liveness.py's Heart): it wakes for
    every hello anyway, so the reads cost no turn of the event loop, which at default timers
    was its most frequent wake-up.

    `wait(now)`: seconds until a read is due; `run(now)`: read what is due. A link is read at
    most every half interval, at least every `slack` intervals (on the Heart 1.25: a hello
    every interval then always comes first and takes the read along)."""

    def __init__(self, monitor: LinkMonitor, post: Callable[[str], object]):
        self.monitor, self.post = monitor, post
        self.slack = 1.0
        self.errors = 0
        self.files = CarrierFiles(monitor)
        self._read: dict[str, float] = {}

    def wait(self, now: float) -> float | None:
        every = self.monitor.poll_interval
        if not every or not self.monitor.late_now:
            return None
        due = min(self._read.get(name, NEVER) for name in self.monitor.late_now)
        return max(0.0, due + every * self.slack - now)

    def run(self, now: float) -> None:
        every = self.monitor.poll_interval
        if not every:
            return
        for name in self.monitor.late_now:
            if now - self._read.get(name, NEVER) < every / 2:
                continue
            self._read[name] = now
            try:
                up = self.files.read(name)
            except OSError:
                self.errors += 1
                continue
            if up != self.monitor.up_view.get(name, False):
                self.post(name)

    def close(self) -> None:
        self.files.close()


def _sysfs_carrier(name: str, ident: tuple[int, str | None]) -> int | None:
    """An open /sys/class/net/<name>/carrier, if sysfs shows this namespace's link (a unit run
    in a namespace without its own sysfs sees another one's links there): its index and MAC
    must be the ones netlink gave."""
    if "/" in name or name in (".", ".."):
        return None
    base = f"/sys/class/net/{name}/"
    try:
        with open(base + "ifindex") as f:
            index = int(f.read())
        with open(base + "address") as f:
            mac = f.read().strip()
        if (index, mac) != ident:
            return None
        return os.open(base + "carrier", os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
