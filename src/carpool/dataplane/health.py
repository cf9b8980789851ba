"""Real-server health checks (asyncio): TCP connect, HTTP(S) GET, ICMP echo, with rise/fall.

A server starts up (so a fresh unit serves at once); `fall` failed checks in a row take it out,
`rise` good ones bring it back. Every change is logged and reported through `on_change`, which
the daemon turns into a new data plane. One task per (service, server); `update(doc)` starts and
stops tasks to match a new configuration version, keeping the state of servers that stay.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import events
from ..config.document import Document, HealthCheck

log = events.logger("carpool.health", events.Kind.HEALTH)
Key = tuple[str, str, int]  # (virtual service name, server address, server port)
SPREAD_FROM = 100  # new checks in one update beyond which their first checks are spread


@dataclass
class ServerState:
    up: bool = True
    successes: int = 0
    failures: int = 0
    last_error: str = ""
    changed: float = 0.0
    checks: int = 0
    flips: int = 0  # up -> down and back, counted


async def check_tcp(address: str, port: int, timeout: float) -> str | None:
    """None if the server accepts a TCP connection, else why not."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (TimeoutError, OSError) as e:
        return f"tcp connect: {e.__class__.__name__} {e}".strip()
    writer.close()
    return None


def tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def check_http(address: str, port: int, check: HealthCheck) -> str | None:
    """GET check.path (over TLS for type https); None if the status is check.status."""
    host = check.host or address
    context = tls_context(check.verify) if check.type == "https" else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address, port, ssl=context, server_hostname=host if context is not None else None
            ),
            check.timeout,
        )
    except (TimeoutError, OSError, ssl.SSLError) as e:
        return f"{check.type} connect: {e.__class__.__name__} {e}".strip()
    try:
        header = f"[{host}]" if ":" in host else host  # an IPv6 literal (RFC 3986 §3.2.2)
        writer.write(
            f"GET {check.path} HTTP/1.0\r\nHost: {header}\r\n"
            f"User-Agent: carpool-health\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), check.timeout)
        parts = line.decode("latin-1").split()
        if len(parts) < 2 or not parts[1].isdigit():
            return f"{check.type}: not an HTTP answer: {line[:40]!r}"
        if int(parts[1]) != check.status:
            return f"{check.type}: status {parts[1]}, expected {check.status}"
        return None
    except (TimeoutError, OSError) as e:
        return f"{check.type}: {e.__class__.__name__} {e}".strip()
    finally:
        writer.close()


class HealthChecker:
    def __init__(self, on_change: Callable[[Key, bool], None], pinger=None):
        self.on_change = on_change
        self.pinger = pinger
        self.state: dict[Key, ServerState] = {}
        self._tasks: dict[Key, asyncio.Task] = {}
        self._checks: dict[Key, HealthCheck] = {}

    def healthy(self, vs: str, address: str, port: int) -> bool:
        st = self.state.get((vs, address, port))
        return st is None or st.up

    def update(self, doc: Document) -> None:
        wanted: dict[Key, HealthCheck] = {}
        for vs in doc.virtual_service:
            for name, group in vs.groups():  # the service's servers, then each pool's
                for rs in group.real_server:
                    if rs.enabled and group.check.type != "none":
                        wanted[(name, rs.address, rs.port)] = group.check
        for key in [k for k in self._tasks if wanted.get(k) != self._checks.get(k)]:
            self._tasks.pop(key).cancel()
            self._checks.pop(key, None)
            if key not in wanted:
                self.state.pop(key, None)
        loop = asyncio.get_running_loop()
        new = [(k, c) for k, c in wanted.items() if k not in self._tasks]
        for n, (key, check) in enumerate(new):
            self.state.setdefault(key, ServerState(changed=time.time()))
            self._checks[key] = check
            # many at once (a big document): their first checks spread over one interval, as
            # HAProxy spreads its own, not thousands of connects in one loop turn
            start = check.interval * n / len(new) if len(new) > SPREAD_FROM else 0.0
            self._tasks[key] = loop.create_task(self._run(key, check, start))

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _once(self, key: Key, check: HealthCheck) -> str | None:
        _, address, port = key
        if check.type == "tcp":
            return await check_tcp(address, port, check.timeout)
        if check.type in ("http", "https"):
            return await check_http(address, port, check)
        if self.pinger is None:
            return None
        rtt = await self.pinger.ping(address, check.timeout)
        return None if rtt is not None else "icmp: no echo reply"

    async def _run(self, key: Key, check: HealthCheck, start: float = 0.0) -> None:
        st = self.state[key]
        if start:
            await asyncio.sleep(start)
        while True:
            try:
                error = await self._once(key, check)
            except Exception as e:  # a check must never kill the checker
                error = f"check failed: {e}"
            st.checks += 1
            if error is None:
                st.successes, st.failures = st.successes + 1, 0
                if not st.up and st.successes >= check.rise:
                    self._flip(key, st, True, "")
            else:
                st.successes, st.failures, st.last_error = 0, st.failures + 1, error
                if st.up and st.failures >= check.fall:
                    self._flip(key, st, False, error)
            await asyncio.sleep(check.interval)

    def _flip(self, key: Key, st: ServerState, up: bool, why: str) -> None:
        st.up, st.changed = up, time.time()
        st.flips += 1
        vs, address, port = key
        if up:
            log.info("real server %s:%d of %s is up again", address, port, vs)
        else:
            log.warning("real server %s:%d of %s is down: %s", address, port, vs, why)
        self.on_change(key, up)

    def status(self) -> list[dict]:
        return [
            {
                "service": vs,
                "address": a,
                "port": p,
                "up": st.up,
                "checks": st.checks,
                "last_error": st.last_error,
                "changed": st.changed,
                "flips": st.flips,
            }
            for (vs, a, p), st in sorted(self.state.items())
        ]
