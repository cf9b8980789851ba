"""The L7 data plane: a managed HAProxy (master-worker) for the http virtual services.

carpool writes the configuration from the document, runs `haproxy -W -db` as its child, reloads
it hitlessly (SIGUSR2 to the master: new workers take the listeners, old ones finish their
connections) when the configuration changes, sets real-server state through the runtime API
(`set server BACKEND/SERVER state ready|maint`) when a health check flips, and restarts HAProxy
when it dies. Both units run it: the listeners bind the shared address with
`ip_nonlocal_bind`, so a takeover only moves the address.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from ..config.document import Document, VirtualService

log = logging.getLogger("carpool.haproxy")
HAPROXY = "/usr/sbin/haproxy"
BALANCE = {"rr": "roundrobin", "wrr": "roundrobin", "lc": "leastconn", "sh": "source"}
NONLOCAL = "/proc/sys/net/ipv4/ip_nonlocal_bind"


def server_name(n: int) -> str:
    return f"rs{n + 1}"


def _backend(vs: VirtualService, healthy) -> list[str]:
    balance = "source" if vs.persistence and not vs.cookie else BALANCE[vs.scheduler]
    lines = [f"backend be_{vs.name}", f"    balance {balance}"]
    if vs.x_forwarded_for:
        lines.append("    option forwardfor")
    if vs.cookie:
        lines.append("    cookie CARPOOL insert indirect nocache")
    for n, rs in enumerate(vs.real_server):
        line = f"    server {server_name(n)} {rs.address}:{rs.port} weight {rs.weight}"
        if vs.cookie:
            line += f" cookie {server_name(n)}"
        if not rs.enabled or not healthy(vs.name, rs.address, rs.port):
            line += " disabled"
        lines.append(line)
    if vs.when_down == "sorry" and vs.sorry_server:
        lines.append(f"    server sorry {vs.sorry_server}:{vs.port} backup")
    return lines


def config_text(doc: Document, run_dir: Path, healthy=lambda *k: True) -> str:
    lines = ["# written by carpool from the configuration document; do not edit", "global",
             "    maxconn 4000", f"    stats socket {run_dir / 'haproxy.sock'} mode 600 level admin",
             # a reload lets idle keep-alive clients send their next request to the old worker,
             # which answers it with Connection: close, instead of closing under them (a race
             # the client sees as a failed request); old workers are gone after a minute.
             "    hard-stop-after 60s",
             "    tune.bufsize 65536", "", "defaults", "    mode http",
             "    option idle-close-on-response", "    timeout connect 2s",
             "    timeout client 30s", "    timeout server 30s", "    option dontlognull", ""]
    for vs in doc.virtual_service:
        if vs.type != "http":
            continue
        lines += [f"frontend fe_{vs.name}", f"    bind {vs.address}:{vs.port}",
                  f"    default_backend be_{vs.name}", ""]
        lines += _backend(vs, healthy) + [""]
    return "\n".join(lines)


class HaproxyDataplane:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.cfg_path = self.dir / "haproxy.cfg"
        self.proc: asyncio.subprocess.Process | None = None
        self.text: str | None = None
        self.restarts = 0
        self.reloads = 0
        self.last_error = ""
        self._watch: asyncio.Task | None = None
        self._stopping = False

    def wanted(self, doc: Document) -> bool:
        return any(vs.type == "http" for vs in doc.virtual_service)

    async def apply(self, doc: Document, healthy) -> bool:
        """Write the configuration; start HAProxy or reload it. A configuration HAProxy
        refuses (`haproxy -c`) is not applied: the running one stays."""
        if not self.wanted(doc):
            await self.stop()
            return True
        text = config_text(doc, self.dir, healthy)
        if text == self.text and self.running:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        candidate = self.dir / "haproxy.cfg.new"
        candidate.write_text(text)
        check = await asyncio.create_subprocess_exec(
            HAPROXY, "-c", "-q", "-f", str(candidate), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await check.communicate()
        if check.returncode != 0:
            self.last_error = out.decode(errors="replace").strip()[-500:]
            log.error("HAProxy refused the new configuration, the running one stays: %s",
                      self.last_error)
            return False
        os.replace(candidate, self.cfg_path)
        self.text, self.last_error = text, ""
        _nonlocal_bind()
        if self.running:
            self.proc.send_signal(signal.SIGUSR2)  # master-worker: hitless reload
            self.reloads += 1
            log.info("HAProxy reloaded")
        else:
            await self._start()
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def _start(self) -> None:
        self._stopping = False
        self.proc = await asyncio.create_subprocess_exec(
            HAPROXY, "-W", "-db", "-f", str(self.cfg_path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        log.info("HAProxy started (pid %d)", self.proc.pid)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        """Restart HAProxy when it dies (a crash, a killed master), at most once a second."""
        while not self._stopping:
            proc = self.proc
            err = await proc.stderr.read()
            await proc.wait()
            if self._stopping or proc is not self.proc:
                return
            self.restarts += 1
            self.last_error = f"exited with {proc.returncode}: " + \
                err.decode(errors="replace").strip()[-300:]
            log.error("HAProxy died (%s); restarting", self.last_error)
            await asyncio.sleep(1.0)
            if not self._stopping:
                await self._start()
                return

    async def set_server(self, vs: VirtualService, address: str, port: int, up: bool) -> None:
        """Health flip through the runtime API (no reload)."""
        for n, rs in enumerate(vs.real_server):
            if (rs.address, rs.port) == (address, port):
                state = "ready" if up and rs.enabled else "maint"
                await self.runtime(f"set server be_{vs.name}/{server_name(n)} state {state}")

    async def runtime(self, command: str) -> str:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.dir / "haproxy.sock")), 2)
            writer.write(command.encode() + b"\n")
            await writer.drain()
            out = await asyncio.wait_for(reader.read(), 2)
            writer.close()
            return out.decode(errors="replace")
        except (OSError, asyncio.TimeoutError) as e:
            log.warning("HAProxy runtime API: %s: %s", command, e)
            return ""

    async def stop(self) -> None:
        self._stopping = True
        if self.running:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.text = None

    def status(self) -> dict:
        return {"running": self.running, "pid": self.proc.pid if self.running else None,
                "reloads": self.reloads, "restarts": self.restarts,
                "last_error": self.last_error}


def _nonlocal_bind() -> None:
    try:
        with open(NONLOCAL, "w") as f:
            f.write("1")
    except OSError as e:
        log.error("cannot enable ip_nonlocal_bind: %s", e)
