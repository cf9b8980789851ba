"""The fence's refresh (node/fence.py) as one raw nf_tables netlink batch: for each family's
@live set, flush it and add the held addresses with their timeout, in one transaction.

libnftables did the same from text: it parsed the commands and rebuilt its cache of the tables
on every call (90 system calls a second at default timers, and four fifths of a fast profile's
idle CPU). The batch here is built from bytes kept per (addresses, timeout) and costs one send
and one receive. Any error is raised (OSError) and the caller falls back to libnftables.

Blocking; called from the event loop (a netlink round trip to the kernel, no process)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from . import netlink as nl

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT = 1, 4
NFTA_DATA_VALUE = 1
FAMILY = {"ip": socket.AF_INET, "ip6": socket.AF_INET6, "arp": 3}  # NFPROTO_ARP = 3

_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian on the wire)


def _message(kind: int, flags: int, seq: int, family: int, attrs: bytes, res_id: int = 0) -> bytes:
    body = _NFGENMSG.pack(family, 0, socket.htons(res_id)) + attrs
    return nl.NLMSGHDR.pack(nl.NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def batch(table: str, name: str, live: dict[str, list[bytes]], timeout_ms: int, seq: int) -> bytes:
    """The transaction: per family in `live` (nft family -> keys), flush set `name` of `table`
    and add each key with the timeout. Messages numbered from seq (pure)."""
    nft = NFNL_SUBSYS_NFTABLES << 8
    ids = [table.encode() + b"\0", name.encode() + b"\0"]
    where = nl.attr(NFTA_SET_ELEM_LIST_TABLE, ids[0]) + nl.attr(NFTA_SET_ELEM_LIST_SET, ids[1])
    out = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, b"", NFNL_SUBSYS_NFTABLES)]
    n = seq
    timeout = nl.attr(NFTA_SET_ELEM_TIMEOUT, struct.pack(">Q", timeout_ms))
    for family, keys in live.items():
        n += 1
        flags = NLM_F_REQUEST | NLM_F_ACK
        out.append(_message(nft | NFT_MSG_DELSETELEM, flags, n, FAMILY[family], where))
        if not keys:
            continue
        elements = b"".join(
            nl.attr(
                NFTA_LIST_ELEM,
                nl.attr(NFTA_SET_ELEM_KEY, nl.attr(NFTA_DATA_VALUE, key), nested=True) + timeout,
                nested=True,
            )
            for key in keys
        )
        n += 1
        attrs = where + nl.attr(NFTA_SET_ELEM_LIST_ELEMENTS, elements, nested=True)
        out.append(
            _message(nft | NFT_MSG_NEWSETELEM, flags | NLM_F_CREATE, n, FAMILY[family], attrs)
        )
    out.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, n + 1, 0, b"", NFNL_SUBSYS_NFTABLES))
    return b"".join(out)


def keys(addresses, family: str) -> list[bytes]:
    """The packed keys of one family's table (ip and arp: IPv4, ip6: IPv6)."""
    version = 6 if family == "ip6" else 4
    return [ipaddress.ip_address(a).packed for a in addresses if a.version == version]


class SetRefresher:
    """One kept NETLINK_NETFILTER socket; refresh() sends a batch and checks every answer. A
    socket in doubt (a timeout, an error) is closed: no late answer is ever read as a new one,
    so the batch keeps the same numbers and is built once per (addresses, timeout)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._made: tuple[tuple, bytes, int] | None = None  # (what, batch, its last number)

    def refresh(self, table: str, name: str, live: dict[str, list[bytes]], timeout_ms: int) -> None:
        what = (table, name, tuple((f, tuple(k)) for f, k in live.items()), timeout_ms)
        if self._made is None or self._made[0] != what:
            self._made = (what, batch(table, name, live, timeout_ms, 1), 1 + _acks(live))
        _, data, last = self._made
        sock = self._socket()
        try:
            sock.send(data)
            self._answers(2, last)
        except OSError as e:
            self.close()
            if isinstance(e, TimeoutError | BlockingIOError | ConnectionError):
                raise OSError(errno.ETIMEDOUT, f"nf_tables: {e}") from None
            raise

    def _answers(self, first: int, last: int) -> None:
        """Every message asked an ACK: wait for each (an error stops at once)."""
        assert self._sock is not None
        waiting = set(range(first, last + 1))
        while waiting:
            for seq, code in nl.answers(self._sock.recv(65536)):
                if seq in waiting:
                    if code:
                        raise OSError(code, f"nf_tables: {errno.errorcode.get(code, code)}")
                    waiting.discard(seq)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
            )
            sock.settimeout(1.0)
            sock.bind((0, 0))
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _acks(live: dict[str, list[bytes]]) -> int:
    return sum(2 if keys else 1 for keys in live.values())
