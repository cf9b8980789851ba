"""A client-side connection probe: a few keep-alive HTTP/1.1 connections sending requests
back to back, to show whether a change on the load balancer breaks established connections.

Run inside the client namespace until --duration passes or --stop-file appears; prints one JSON
object: per connection the requests answered, the failures (with the first few errors) and the
reconnects (the TCP connection was closed by the other side and had to be opened again).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


def run_connection(
    host: str,
    port: int,
    path: str,
    duration: float,
    stop_file: str | None,
    limit: int,
    pause: float = 0.0,
) -> dict:
    requests = failures = reconnects = 0
    errors: list[str] = []
    servers: dict[str, int] = {}
    last_ok: float | None = None  # CLOCK_MONOTONIC (system wide: the caller can compare)
    conn = http.client.HTTPConnection(host, port, timeout=2.0)
    local = None
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline and requests < limit:
        if stop_file and os.path.exists(stop_file):
            break
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise OSError(f"status {response.status}")
            server = response.getheader("X-Server", "?")
            servers[server] = servers.get(server, 0) + 1
            now = conn.sock.getsockname() if conn.sock else None
            if local is not None and now != local:
                reconnects += 1
            local = now
            if response.will_close:  # the server said Connection: close; the next is a reconnect
                conn.close()
            requests += 1
            last_ok = time.monotonic()
            if pause:
                time.sleep(pause)
        except (OSError, http.client.HTTPException) as e:
            failures += 1
            if len(errors) < 5:
                errors.append(f"{e.__class__.__name__}: {e}")
            conn.close()
            time.sleep(0.05)
    conn.close()
    return {
        "requests": requests,
        "failures": failures,
        "reconnects": reconnects,
        "errors": errors,
        "servers": servers,
        "last_ok": last_ok,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="http://HOST:PORT/PATH")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--limit", type=int, default=200000, help="requests per connection at most")
    p.add_argument("--stop-file")
    p.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds between requests (a steady load that leaves CPU to the units)",
    )
    args = p.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)  # an IPv6 host in brackets too
    host, port, path = url.hostname or "", url.port or 80, url.path or "/"
    results: list[dict] = [{} for _ in range(args.connections)]

    def worker(i: int) -> None:
        results[i] = run_connection(
            host, port, path, args.duration, args.stop_file, args.limit, args.pause
        )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + 30)
    json.dump({"connections": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
