"""A client-side outage probe: ICMP echo (ICMPv6 for an IPv6 target) to a shared address every
few milliseconds.

Run inside the client namespace; prints one JSON object when done: the monotonic times of the
gaps in the replies (CLOCK_MONOTONIC is system wide, so the caller can line a gap up with the
moment it injected a fault). Bounded by --duration and by --count.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time

from ..family import IPV4, IPV6
from ..ha.ipv4 import internet_checksum


def _echo(ident: int, seq: int, ipv6: bool = False) -> bytes:
    if ipv6:  # the kernel fills in an ICMPv6 checksum
        return struct.pack("!BBHHH", IPV6.echo_request, 0, 0, ident, seq)
    header = struct.pack("!BBHHH", IPV4.echo_request, 0, 0, ident, seq)
    return struct.pack("!BBHHH", IPV4.echo_request, 0, internet_checksum(header), ident, seq)


def probe(target: str, interval: float, duration: float, stop_file: str | None) -> dict:
    ipv6 = ":" in target
    if ipv6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    start = time.monotonic()
    end = start + duration
    seq = sent = received = 0
    last_reply = None
    gaps = []
    next_send = start
    max_count = int(duration / interval) + 1
    while time.monotonic() < end and sent < max_count:
        now = time.monotonic()
        if now >= next_send:
            seq = (seq + 1) & 0xFFFF
            try:
                sock.sendto(_echo(ident, seq, ipv6), (target, 0))
            except OSError:
                pass  # no route / neighbour failure during a takeover is part of the outage
            sent += 1
            next_send += interval
            if stop_file and sent % 50 == 0 and os.path.exists(stop_file):
                break
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if not ready:
            continue
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            start_at = 0 if ipv6 else (data[0] & 0x0F) * 4  # raw IPv6: no header
            if len(data) < start_at + 8:
                continue
            kind, _, _, rid, _ = struct.unpack("!BBHHH", data[start_at : start_at + 8])
            if kind != (IPV6 if ipv6 else IPV4).echo_reply or rid != ident:
                continue
            t = time.monotonic()
            received += 1
            if last_reply is not None and t - last_reply > 3 * interval:
                gaps.append([last_reply, t])
            last_reply = t
    sock.close()
    return {
        "target": target,
        "interval": interval,
        "sent": sent,
        "received": received,
        "start": start,
        "end": time.monotonic(),
        "last_reply": last_reply,
        "gaps": gaps,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", required=True)
    p.add_argument("--interval", type=float, default=0.002)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--stop-file", help="stop early once this file exists")
    args = p.parse_args(argv)
    json.dump(probe(args.target, args.interval, args.duration, args.stop_file), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
