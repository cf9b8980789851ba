#!/usr/bin/env python3
"""The floor of a Python advert pair: an asyncio program that does only the adverts' wire work
of a unit's configuration, nothing else (no election, fence, detector, rides, pulse or status).

    python bench/advert_floor.py send CONFIG [--links eth0,eth2] [--seconds S]
    python bench/advert_floor.py listen CONFIG --report FILE [--links ...] [--seconds S]

send: every advert interval, one carpool advert per checked IPv4 link (the same codec, counter
and HMAC as the daemon's), on the daemon's advert socket. listen: the same sockets read when
readable, each datagram judged by the daemon's classifier (HMAC checked); at SIGTERM (or after
--seconds) the counts go to FILE as JSON. --links: only these paths (keepalived's pair speaks
on two links, carpool's on three: the heartbeat cable is one). bench/idle_cpu.py runs it in the lab's namespaces
beside the daemon and keepalived: what carpool costs above it is its own work, what the floor
costs above keepalived is the interpreter and the third path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from carpool.config.ha import load_config
from carpool.ha.classify import Kind, classify
from carpool.node.advert import advertised_addresses, make_profile
from carpool.node.rawsock import AdvertSocket, destinations


def _links(cfg, only: list[str] | None):
    """(interface, own address, partner address, carried addresses) of each IPv4 advert path."""
    role = cfg.role
    for iface in cfg.checked:
        own, partner = iface.own4(role), iface.partner4(role)
        if own is not None and partner is not None and (not only or iface.name in only):
            yield iface, own, partner, advertised_addresses(cfg, iface)


def send(cfg, only: list[str] | None, stop: asyncio.Event, interval: float) -> None:
    loop = asyncio.get_running_loop()
    profile = make_profile(cfg)
    paths = [
        (AdvertSocket(i.name, str(own), cfg.transport), own, str(dst), dst, carried)
        for i, own, partner, carried in _links(cfg, only)
        for dst in destinations(cfg.transport, partner)
    ]
    state = {"counter": 1 << 40, "next": loop.time()}

    def tick() -> None:
        state["counter"] += 1
        for sock, own, dst_text, dst, carried in paths:
            sock.send(profile.encode(False, 0, state["counter"], carried, own, dst), dst_text)
        state["next"] += interval
        if not stop.is_set():
            loop.call_at(state["next"], tick)

    loop.call_soon(tick)


def listen(cfg, only: list[str] | None, counts: dict) -> None:
    loop = asyncio.get_running_loop()
    profile = make_profile(cfg)
    for iface, own, partner, carried in _links(cfg, only):
        sock = AdvertSocket(iface.name, str(own), cfg.transport)

        def readable(sock=sock, partner=partner, carried=carried) -> None:
            for datagram in sock.recv_all():
                verdict = classify(
                    datagram, partner=partner, vhid=cfg.vhid, decoder=profile, addresses=carried
                )
                counts["valid" if verdict.kind is Kind.ADVERT else "dropped"] += 1

        loop.add_reader(sock.fileno(), readable)


async def main_async(args) -> int:
    cfg = load_config(args.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts = {"valid": 0, "dropped": 0}
    only = [x for x in args.links.split(",") if x] if args.links else None
    if args.mode == "send":
        send(cfg, only, stop, cfg.fast_interval_ms / 1000 if cfg.fast else float(cfg.advbase))
    else:
        listen(cfg, only, counts)
    try:
        await asyncio.wait_for(stop.wait(), args.seconds)
    except TimeoutError:
        pass
    if args.report:
        Path(args.report).write_text(json.dumps(counts))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("send", "listen"))
    p.add_argument("config")
    p.add_argument("--report", metavar="FILE", help="listen: the counts, written at the end")
    p.add_argument("--links", help="comma-separated interfaces (default: every IPv4 path)")
    p.add_argument("--seconds", type=float, default=3600.0, help="ends by itself after this")
    return asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
