"""The unsolicited Neighbor Advertisement (issue 14): the frame the IPv6 takeover announces
with, checked field by field against RFC 4861 §4.4 and its checksum computed independently."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

from carpool.ha.ipv4 import internet_checksum
from carpool.node.addresses import build_unsolicited_na

MAC, VIP = "00:00:5e:00:02:07", IPv6Address("2001:2::10")


def test_an_unsolicited_na_overrides_with_the_mac_to_all_nodes():
    frame = build_unsolicited_na(MAC, str(VIP))
    assert len(frame) == 14 + 40 + 32
    assert frame[:6] == bytes.fromhex("333300000001") and frame[6:12] == bytes.fromhex(
        MAC.replace(":", "")
    )
    assert frame[12:14] == b"\x86\xdd"
    ip, icmp = frame[14:54], frame[54:]
    version, length, next_header, hop_limit = struct.unpack("!IHBB", ip[:8])
    assert (version >> 28, length, next_header, hop_limit) == (6, 32, 58, 255)
    assert IPv6Address(ip[8:24]) == VIP and IPv6Address(ip[24:40]) == IPv6Address("ff02::1")
    kind, code, _checksum, flags = struct.unpack("!BBHI", icmp[:8])
    assert (kind, code) == (136, 0)
    assert flags == 0x20000000  # Override; not Solicited; not Router (the unit does not route)
    assert IPv6Address(icmp[8:24]) == VIP
    assert icmp[24:26] == b"\x02\x01" and icmp[26:32] == frame[6:12]  # target link-layer option
    pseudo = ip[8:40] + struct.pack("!I", 32) + b"\0\0\0" + bytes([58])
    assert internet_checksum(pseudo + icmp) == 0


def test_the_router_flag_follows_forwarding():
    frame = build_unsolicited_na(MAC, str(VIP), router=True)
    assert struct.unpack("!I", frame[58:62])[0] == 0x80000000 | 0x20000000
