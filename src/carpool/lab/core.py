"""The Lab: build the namespace picture of DESIGN §1 on one machine, run the units' daemons and
the real servers in it, inject faults, and remove it all again.

    lab = Lab()
    lab.up(fast=True)            # topology, real servers, both units; waits for one master
    lab.crash("a"); lab.wait_for(lambda: lab.unit_status("b")["state"] == "master", 5)
    lab.heal()
    lab.down()

Files live under the lab dir (default /run/carpool-lab, env CARPOOL_LAB_DIR):
    lab.json                     what this lab is (options, number of servers, wanted units)
    a/, b/                       the units' state dirs (see carpool.lab.units)
    servers/cp-r1-80.pid|.log    real servers (pid written by the server once it listens)
    tls/server.pem|.key          the real servers' self-signed certificate (HTTPS on 443)
Every process the lab starts lives in a lab namespace; down() stops exactly those (by pid,
checked against the namespace) and deletes the namespaces and the host veth.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..tlscert import ensure_self_signed
from .faults import FaultsMixin
from .ns import (
    LAB_DIR,
    LabError,
    LabTimeout,
    alive,
    child_env,
    cmdline,
    in_namespace,
    ip,
    pids_in,
    read_pid,
    sh,
    stop_pids,
    venv_bin,
    wait_for,
    write_file,
)
from .topology import (
    CLIENT,
    HOST_IF,
    SWITCH,
    UNITS,
    build,
    lab_namespaces,
    remove_network,
    server_addr,
    server_ns,
    unit_ns,
)
from .units import UnitsMixin

T = TypeVar("T")
REAL_TLS_PORT = 443
DEFAULT_OPTIONS = {"fast": False, "vmac": False, "preferred": "none", "overrides": None}


class Lab(UnitsMixin, FaultsMixin):
    def __init__(self, directory: str | Path = LAB_DIR):
        self.dir = Path(directory)
        self.options: dict = dict(DEFAULT_OPTIONS)
        self.servers = 0
        self.wanted: set[str] = set()  # units that should be running (heal restarts them)
        self._children: dict[int, subprocess.Popen] = {}
        self._signalled: dict[str, int] = {}  # unit -> supervisor pid, after kill()/term()
        # unit -> another source tree its daemon runs (a rolling-upgrade test: an older
        # release against this one); this process's only, not recorded
        self.unit_src: dict[str, str] = {}
        self._load()

    # -- record -------------------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.dir / "lab.json"

    def _load(self) -> None:
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return
        self.options.update(record.get("options", {}))
        self.servers = int(record.get("servers", 0))
        self.wanted = set(record.get("wanted", [])) & set(UNITS)

    def _save(self) -> None:
        write_file(
            self.record_path,
            json.dumps(
                {"options": self.options, "servers": self.servers, "wanted": sorted(self.wanted)},
                indent=2,
            )
            + "\n",
        )

    # -- names ----------------------------------------------------------------------------------
    @staticmethod
    def unit(name: str) -> str:
        """a / b (accepts cp-a, A, ...)."""
        unit = name.lower().removeprefix("cp-")
        if unit not in UNITS:
            raise LabError(f"unknown unit {name!r}: a or b")
        return unit

    def ns(self, node: str) -> str | None:
        """The namespace of a node: a, b, sw, c1, r1.. (with or without cp-); host: None."""
        name = node.lower()
        if name in ("host", "root"):
            return None
        name = name if name.startswith("cp-") else f"cp-{name}"
        if not re.fullmatch(r"cp-(a|b|sw|c1|r[0-9]+)", name):
            raise LabError(f"unknown lab node {node!r}: a, b, sw, c1, r1..rN or host")
        return name

    def _http_ns(self, node: str) -> str:
        """The namespace of an HTTP server's node: a lab node, never the host."""
        ns = self.ns(node)
        if ns is None:
            raise LabError(f"HTTP servers run in a lab node (a, b, sw, c1, r1..rN), not {node!r}")
        return ns

    def exists(self) -> bool:
        return (
            bool(lab_namespaces())
            or ip("link", "show", "dev", HOST_IF, check=False).returncode == 0
        )

    # -- up / down ------------------------------------------------------------------------------
    def up(
        self,
        fast: bool = False,
        vmac: bool = False,
        servers: int = 3,
        start_units: bool = True,
        overrides: dict | None = None,
        preferred: str = "none",
        timeout: float | None = None,
        ipv6_only: bool = False,
    ) -> Lab:
        """Build the lab (tearing down any existing one first), start the real servers and,
        with start_units, both units, waiting until exactly one is master. On any failure the
        half-built lab is torn down and the error raised."""
        if self.exists():
            self.down(keep_logs=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.options = {
            "fast": fast,
            "vmac": vmac,
            "preferred": preferred,
            "overrides": overrides or None,
            "ipv6_only": ipv6_only,
        }
        self.servers = servers
        self.wanted = set()
        try:
            self._save()
            self.write_configs()
            build(servers, ipv6_only)
            for i in range(1, servers + 1):
                self.serve_real_server(server_ns(i))
            if start_units:
                self.start_units(timeout)
        except BaseException:
            try:
                self.down()
            except LabError as e:
                print(f"carpool lab: tear-down after a failed up also failed: {e}", file=sys.stderr)
            raise
        return self

    def down(self, keep_logs: bool = True, grace: float = 3.0) -> list[str]:
        """Stop every process in the lab namespaces (and the lab's recorded processes), delete
        the namespaces and the host veth, remove the lab's files (logs stay with keep_logs).
        Works on a half-built or absent lab. Returns what was removed."""
        targets: dict[int, str | None] = {}
        for ns, pids in pids_in(lab_namespaces()).items():
            targets.update({pid: ns for pid in pids})
        for pid in self._recorded_pids():
            targets.setdefault(pid, None)
        stop_pids(targets, grace)
        self._children.clear()
        removed = remove_network()
        if self.dir.exists():
            for path in sorted(self.dir.rglob("*"), reverse=True):
                if path.is_dir():
                    if not any(path.iterdir()):
                        path.rmdir()
                elif not (keep_logs and path.suffix == ".log"):
                    path.unlink(missing_ok=True)
            if not any(self.dir.iterdir()):
                self.dir.rmdir()
        self.wanted = set()
        return removed

    def _recorded_pids(self) -> list[int]:
        """pids from the lab's pid files that are alive and whose command line names the lab
        dir (so a recycled pid is never taken): processes whose namespace is already gone."""
        found = []
        if self.dir.exists():
            for path in self.dir.rglob("*.pid"):
                pid = read_pid(path)
                if pid and alive(pid) and str(self.dir) in cmdline(pid):
                    found.append(pid)
        return found

    # -- running things in the lab --------------------------------------------------------------
    def _argv(self, node: str, argv: list[str]) -> tuple[list[str], dict]:
        ns = self.ns(node)
        extra = {}
        if ns in tuple(unit_ns(u) for u in UNITS):
            extra["CARPOOL_CONFIG"] = str(self.config_path(ns[3:]))
        full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
        return full, child_env(extra)

    def exec(
        self,
        node: str,
        argv: list[str],
        check: bool = False,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run argv in a node's namespace (a unit: with CARPOOL_CONFIG=<its config>, so
        `carpool status` addresses that unit; the venv's bin first on PATH). Captures text."""
        full, env = self._argv(node, argv)
        return sh(full, check=check, timeout=timeout, input=input, env=env)

    def spawn(self, node: str, argv: list[str], **popen) -> subprocess.Popen:
        """Start argv in a node's namespace in the background (down() stops it)."""
        full, env = self._argv(node, argv)
        popen.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(full, env={**env, **popen.pop("env", {})}, **popen)
        self._children[proc.pid] = proc
        return proc

    def python(self) -> str:
        return str(venv_bin() / "python")

    def serve_real_server(self, ns: str) -> int:
        """A real server: HTTP on 80 and HTTPS on 443 (the lab's self-signed certificate)."""
        cert, key = self.dir / "tls" / "server.pem", self.dir / "tls" / "server.key"
        ensure_self_signed(cert, key, "carpool-lab-server")
        return self.serve_http(
            ns, extra=["--tls-port", str(REAL_TLS_PORT), "--cert", str(cert), "--key", str(key)]
        )

    def serve_http(
        self,
        node: str,
        port: int = 80,
        name: str | None = None,
        timeout: float = 10.0,
        extra: list[str] | None = None,
    ) -> int:
        """Start the lab HTTP server (carpool.lab.servers) in a node; returns its pid once it
        listens. The real servers are serve_real_server("cp-rN")."""
        ns = self._http_ns(node)
        name = name or ns
        base = self.dir / "servers" / f"{ns}-{port}"
        base.parent.mkdir(parents=True, exist_ok=True)
        pid_file = base.with_suffix(".pid")
        pid_file.unlink(missing_ok=True)
        with open(base.with_suffix(".log"), "ab") as log:
            proc = self.spawn(
                node,
                [
                    self.python(),
                    "-m",
                    "carpool.lab.servers",
                    "--name",
                    name,
                    "--port",
                    str(port),
                    "--pid-file",
                    str(pid_file),
                    *(extra or []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def listening():
            if proc.poll() is not None:
                raise LabError(
                    f"HTTP server {name} in {ns} exited with {proc.returncode}: "
                    f"{base.with_suffix('.log').read_text(errors='replace')[-500:]}"
                )
            return read_pid(pid_file) == proc.pid

        wait_for(listening, timeout, what=f"HTTP server {name} in {ns} listens on {port}")
        return proc.pid

    def stop_http(self, node: str, port: int = 80) -> None:
        """Stop a server started with serve_http (SIGTERM, SIGKILL after 3 s)."""
        ns = self._http_ns(node)
        pid_file = self.dir / "servers" / f"{ns}-{port}.pid"
        pid = read_pid(pid_file)
        if pid and alive(pid) and in_namespace(pid, ns):
            stop_pids({pid: ns})
        pid_file.unlink(missing_ok=True)

    def server_pids(self) -> dict[str, int | None]:
        """cp-rN -> pid of its HTTP server on port 80 (None if not running)."""
        found = {}
        for i in range(1, self.servers + 1):
            ns = server_ns(i)
            pid = read_pid(self.dir / "servers" / f"{ns}-80.pid")
            found[ns] = pid if alive(pid) and in_namespace(pid, ns) else None
        return found

    # -- probes (tests use them) ----------------------------------------------------------------
    def ping(self, node: str, address: str, count: int = 1, timeout: float = 1.0) -> bool:
        """True if `address` answers ICMP echo from node (each echo waits up to timeout)."""
        proc = self.exec(
            node,
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", f"{timeout:g}", address],
            timeout=count * timeout + 10,
        )
        return proc.returncode == 0

    def reaches(self, node: str, address: str, timeout: float = 5.0) -> bool:
        """Ping until an answer (True) or the deadline (False). Tests check presence this way,
        never with one echo: right after the lab comes up or a link comes back, the first echo
        may be lost (a link not yet operational, an ARP retry after 1 s)."""
        try:
            return self.wait_for(
                lambda: self.ping(node, address, timeout=0.5),
                timeout,
                what=f"{address} answers ping from {node}",
            )
        except LabTimeout:
            return False

    _HTTP_GET = (
        "import sys, urllib.request\n"
        "r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n"
        "sys.stdout.write(r.read().decode())\n"
    )
    _TCP = (
        "import socket, sys\n"
        "socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()\n"
    )

    def http_get(self, node: str, url: str, timeout: float = 2.0) -> str | None:
        """The body of GET url fetched from node, or None on any failure."""
        proc = self.exec(
            node,
            [sys.executable, "-I", "-c", self._HTTP_GET, url, str(timeout)],
            timeout=timeout + 10,
        )
        return proc.stdout if proc.returncode == 0 else None

    def neighbour_mac(self, node: str, address: str) -> str | None:
        """The MAC in node's neighbour entry for address, or None (no entry, or unresolved)."""
        out = self.exec(node, ["ip", "-j", "neigh", "show", address], check=True).stdout
        entries = json.loads(out) if out.strip() else []
        return entries[0].get("lladdr") if entries else None

    def tcp_connect(self, node: str, host: str, port: int, timeout: float = 2.0) -> bool:
        """True if a TCP connection from node to host:port is accepted."""
        proc = self.exec(
            node,
            [sys.executable, "-I", "-c", self._TCP, host, str(port), str(timeout)],
            timeout=timeout + 10,
        )
        return proc.returncode == 0

    @staticmethod
    def wait_for(
        predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str | None = None
    ) -> T:
        """Poll predicate every `interval` s until truthy (returned) or LabTimeout."""
        return wait_for(predicate, timeout, interval, what)

    # -- status ---------------------------------------------------------------------------------
    def summary(self) -> dict:
        """What is there: namespaces, units, servers, active faults (for `lab status`)."""
        present = lab_namespaces()
        units = {}
        for unit in UNITS:
            status = self.unit_status(unit) if unit_ns(unit) in present else {"state": None}
            units[unit] = {
                "namespace": unit_ns(unit) if unit_ns(unit) in present else None,
                "wanted": unit in self.wanted,
                "supervisor_pid": self.supervisor_pid(unit),
                "daemon_pid": self.daemon_pid(unit),
                "state": status.get("state"),
                "reason": status.get("reason"),
                "shared_held": status.get("shared_held"),
                "error": status.get("error"),
                "config": str(self.config_path(unit)),
                "log": str(self.log_path(unit)),
            }
        faults = {
            "switch": self.switch_faults() if SWITCH in present else [],
            "links_down": self.links_down() if present else {},
        }
        return {
            "dir": str(self.dir),
            "namespaces": present,
            "options": self.options,
            "units": units,
            "faults": faults,
            "servers": {
                ns: {"address": server_addr(int(ns[4:])), "pid": pid}
                for ns, pid in self.server_pids().items()
            },
            "client": CLIENT if CLIENT in present else None,
        }
