"""A lab real server: a small HTTP/1.1 server that says who it is.

    GET /          -> "<name>\\n"            (e.g. "cp-r1\\n"), header X-Server: <name>
    GET /bytes/N   -> N bytes of "x" (N <= 64 MiB), for throughput runs
    GET /slow/N    -> "<name>\\n" after N seconds (N <= 30): a request still in flight
    anything else  -> 404

Run inside a namespace as `python -m carpool.lab.servers --name cp-r1 --pid-file F`; the pid file
is written once the sockets listen, so the lab knows when the server is ready. With --tls-port
(and --cert/--key) the same process also serves HTTPS, so stopping it stops both.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import files

MAX_BYTES = 64 * 1024 * 1024
MAX_SLOW = 30


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "carpool-lab"
    # headers and body are two writes: with Nagle on, the body waits for the client's delayed
    # ACK (40 ms) and a keep-alive connection manages ~23 requests/s
    disable_nagle_algorithm = True
    name = "server"

    def _reply(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        status, body = 200, b""
        if path == "/":
            body = f"{self.name}\n".encode()
        elif path.startswith("/slow/") and path[6:].isdigit() and int(path[6:]) <= MAX_SLOW:
            time.sleep(int(path[6:]))
            body = f"{self.name}\n".encode()
        elif path.startswith("/bytes/") and path[7:].isdigit() and int(path[7:]) <= MAX_BYTES:
            body = b"x" * int(path[7:])
        else:
            status, body = 404, b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Server", self.name)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(True)

    def do_HEAD(self) -> None:
        self._reply(False)

    def log_message(self, *_args) -> None:  # quiet: benchmarks send many requests
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class Server6(Server):
    """Both families on one socket ("::" with IPV6_V6ONLY off: IPv4 clients as mapped)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def listen(bind: str, port: int) -> Server:
    """A server on bind:port; "::" falls back to IPv4 only where IPv6 is off."""
    if ":" not in bind:
        return Server((bind, port), Handler)
    try:
        return Server6((bind, port), Handler)
    except OSError:
        if bind != "::":
            raise
        return Server(("0.0.0.0", port), Handler)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--bind", default="::", help="default: both families")
    p.add_argument("--pid-file", help="written once listening")
    p.add_argument("--tls-port", type=int, help="also serve HTTPS on this port")
    p.add_argument("--cert", help="PEM certificate for --tls-port")
    p.add_argument("--key", help="PEM key for --tls-port")
    args = p.parse_args(argv)
    Handler.name = args.name
    server = listen(args.bind, args.port)
    if args.tls_port:
        tls = listen(args.bind, args.tls_port)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    if args.pid_file:
        files.write_private(args.pid_file, f"{os.getpid()}\n", mode=0o644)
    print(f"{args.name}: listening on {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
