"""Foreign HA peers for interop tests: ucarp (CARP) and keepalived (VRRPv3), run in a lab unit's
namespace instead of that unit's carpool daemon.

    peer = ucarp(lab, "b", vhid=1, secret=SECRET, address="198.18.0.10/24", advskew=100)
    # SECRET: lab.units.SECRET, the units' own (ucarp -p and unit.secret must be equal)
    peer.start()
    ...
    peer.stop()                  # SIGTERM by pid (checked against the namespace), SIGKILL late

Each peer gets a directory <lab dir>/peers/<kind>-<unit> with its configuration (keepalived.conf,
or ucarp's up/down scripts), pid files and `output.log` (the peer's stdout + stderr; ucarp's
scripts append `up ARGS` / `down ARGS` lines to `scripts.log`). The process runs in the
foreground under `ip netns exec`, which execs it, so the Popen pid is the peer's own pid; the
lab's down() sweeps the namespace anyway. Nothing here is ever stopped by name.

ucarp facts that matter (ucarp 1.5.2): it signs exactly one address (so the carpool unit must
have a single shared address on that link), its key is the passphrase zero-padded to 20 bytes
like carpool's, it exits when its interface goes down, and with -z it runs the down script when
it stops. keepalived (-n) keeps its parent in the foreground; the VRRP child is a separate pid
(-r file); SIGTERM to the parent makes the child resign (priority 0) and drop its addresses.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .ns import LabError, alive, in_namespace, read_pid, wait_for, write_file
from .topology import UNIT_ADDR, unit_ns


class Peer:
    """One foreign daemon in a lab unit's namespace, owned by pid."""

    kind = "peer"
    state_pattern: re.Pattern | None = None  # what it prints on a state change (group 1)

    def __init__(self, lab, unit: str, argv: list[str], directory: Path):
        self.lab = lab
        self.unit = lab.unit(unit)
        self.ns = unit_ns(self.unit)
        self.argv = argv
        self.dir = directory
        self.proc: subprocess.Popen | None = None

    # -- where things are -----------------------------------------------------------------
    @property
    def output_path(self) -> Path:
        return self.dir / "output.log"

    @property
    def pid(self) -> int | None:
        """The peer's pid while it runs (our unreaped child: the pid cannot be recycled)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def running(self) -> bool:
        return self.pid is not None

    def output(self, lines: int = 30) -> str:
        try:
            text = self.output_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output yet)"

    def state(self) -> str | None:
        """The last state the peer announced in its output ("master", "backup", ...)."""
        if self.state_pattern is None:
            return None
        found = self.state_pattern.findall(self.output(10_000))
        return found[-1].lower() if found else None

    def describe(self, lines: int = 30) -> str:
        state = (
            f"running, pid {self.pid}"
            if self.running()
            else "not started"
            if self.proc is None
            else f"exited {self.proc.returncode}"
        )
        return (
            f"--- {self.kind} in {self.ns} ({state}): {shlex.join(self.argv)}\n{self.output(lines)}"
        )

    # -- life cycle -----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Peer:
        """Start the peer in its namespace; return once it runs there and is ready."""
        if self.running():
            raise LabError(f"{self.kind} in {self.ns} already runs (pid {self.pid})")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_path, "ab") as out:
            out.write(f"--- lab: starting {self.kind} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = self.lab.spawn(
                self.unit, self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def ready():
            if self.proc.poll() is not None:
                raise LabError(
                    f"{self.kind} in {self.ns} exited with {self.proc.returncode}:\n{self.output()}"
                )
            return in_namespace(self.proc.pid, self.ns) and self._ready()

        try:
            wait_for(ready, timeout, what=f"{self.kind} runs in {self.ns}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        return True

    def _pids(self) -> list[int]:
        """Every pid that has to be gone before the peer counts as stopped."""
        return [self.pid] if self.pid else []

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int | None:
        """Send sig to the peer's pid (only while it runs in its namespace), SIGKILL it after
        `grace` seconds; wait until it (and its children) are gone. Returns its exit status
        (None if it never ran)."""
        proc = self.proc
        if proc is None:
            return None
        pids = self._pids()
        if self.pid and in_namespace(self.pid, self.ns):
            os.kill(self.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            if in_namespace(proc.pid, self.ns):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5.0)
        # Children (keepalived's VRRP process) leave with their parent; make sure of it.
        wait_for(
            lambda: not any(alive(p) for p in pids if p != proc.pid),
            5.0,
            what=f"{self.kind} children {pids} gone",
        )
        self.lab._children.pop(proc.pid, None)
        return proc.returncode

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _own_address(unit: str, iface: str) -> str:
    try:
        return UNIT_ADDR[unit][iface].split("/")[0]
    except KeyError:
        raise LabError(f"unit {unit} has no lab address on {iface}") from None


def _fresh_dir(lab, name: str) -> Path:
    directory = Path(lab.dir) / "peers" / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _script(path: Path, text: str) -> Path:
    write_file(path, text)
    path.chmod(0o755)
    return path


# -- ucarp ------------------------------------------------------------------------------------
class Ucarp(Peer):
    kind = "ucarp"
    state_pattern = re.compile(r"Switching to state: (\w+)")

    @property
    def scripts_log(self) -> Path:
        return self.dir / "scripts.log"

    def script_runs(self) -> list[str]:
        """`up ...` / `down ...` lines, one per run of ucarp's scripts, oldest first."""
        try:
            return self.scripts_log.read_text().splitlines()
        except OSError:
            return []

    def _ready(self) -> bool:
        # Printed (as a warning, so also without -D) once its sockets are open and it runs.
        return "switching to state" in self.output(200).lower()

    def describe(self, lines: int = 30) -> str:
        return super().describe(lines) + f"\n--- ucarp scripts: {self.script_runs()[-10:]}"


def ucarp(
    lab,
    unit: str,
    *,
    vhid: int,
    secret: str,
    address: str,
    iface: str = "eth0",
    advbase: int = 1,
    advskew: int = 0,
    preempt: bool = False,
    shutdown_script: bool = True,
    extra: list[str] | None = None,
) -> Ucarp:
    """A ucarp peer in unit X's namespace sharing `address` (with prefix) on iface. Its up/down
    scripts add/remove the address with `ip addr` and log their runs; -z (shutdown_script) runs
    the down script when ucarp stops."""
    cidr = ipaddress.IPv4Interface(address)
    directory = _fresh_dir(lab, f"ucarp-{lab.unit(unit)}")
    log = directory / "scripts.log"
    up = _script(
        directory / "up.sh",
        (
            "#!/bin/sh\n# ucarp: $1 = interface, $2 = virtual address\n"
            f'echo "up $*" >> {shlex.quote(str(log))}\n'
            f'exec ip addr add "$2/{cidr.network.prefixlen}" dev "$1"\n'
        ),
    )
    down = _script(
        directory / "down.sh",
        (
            "#!/bin/sh\n"
            f'echo "down $*" >> {shlex.quote(str(log))}\n'
            f'ip addr del "$2/{cidr.network.prefixlen}" dev "$1" 2>/dev/null || true\n'
        ),
    )
    argv = [
        "ucarp",
        "-i",
        iface,
        "-s",
        _own_address(lab.unit(unit), iface),
        "-v",
        str(vhid),
        "-p",
        secret,
        "-a",
        str(cidr.ip),
        "-b",
        str(advbase),
        "-k",
        str(advskew),
        "-u",
        str(up),
        "-d",
        str(down),
    ]
    if preempt:
        argv.append("-P")
    if shutdown_script:
        argv.append("-z")
    return Ucarp(lab, unit, argv + list(extra or ()), directory)


# -- keepalived -------------------------------------------------------------------------------
class Keepalived(Peer):
    kind = "keepalived"
    state_pattern = re.compile(r"Entering (\w+) STATE")

    @property
    def pid_file(self) -> Path:
        return self.dir / "keepalived.pid"

    @property
    def vrrp_pid_file(self) -> Path:
        return self.dir / "vrrp.pid"

    def vrrp_pid(self) -> int | None:
        pid = read_pid(self.vrrp_pid_file)
        return pid if alive(pid) and in_namespace(pid, self.ns) else None

    def _ready(self) -> bool:
        return (
            self.proc is not None
            and read_pid(self.pid_file) == self.proc.pid
            and self.vrrp_pid() is not None
        )

    def _pids(self) -> list[int]:
        return [p for p in (self.pid, self.vrrp_pid()) if p]


def keepalived(
    lab,
    unit: str,
    *,
    vrid: int,
    address: str,
    priority: int = 100,
    iface: str = "eth0",
    advert_int: float = 1,
    preempt: bool = True,
    state: str = "BACKUP",
) -> Keepalived:
    """A keepalived (VRRPv3, multicast) peer in unit X's namespace: one vrrp_instance on iface
    holding `address` (with prefix; an IPv6 one makes it an IPv6 instance: from the link-local
    address to ff02::12). Runs with -n (foreground), VRRP only, logging to stdout."""
    cidr = ipaddress.ip_interface(address)
    directory = _fresh_dir(lab, f"keepalived-{lab.unit(unit)}")
    conf = directory / "keepalived.conf"
    write_file(
        conf,
        "\n".join(
            [
                "global_defs {",
                f"    router_id carpool-lab-{lab.unit(unit)}",
                "    vrrp_version 3",
                "}",
                "vrrp_instance carpool_lab {",
                f"    state {state}",
                f"    interface {iface}",
                f"    virtual_router_id {vrid}",
                f"    priority {priority}",
                f"    advert_int {advert_int:g}",
                "    version 3",
                *([] if preempt else ["    nopreempt"]),
                "    virtual_ipaddress {",
                f"        {cidr.with_prefixlen} dev {iface}",
                "    }",
                "}",
                "",
            ]
        ),
    )
    argv = [
        "keepalived",
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--vrrp",
        "--use-file",
        str(conf),
        "--pid",
        str(directory / "keepalived.pid"),
        "--vrrp_pid",
        str(directory / "vrrp.pid"),
    ]
    return Keepalived(lab, unit, argv, directory)
