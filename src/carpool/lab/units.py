"""The two units of the lab: their configuration files, their daemons, their status.

Unit X (a or b) lives in namespace cp-X with state dir <lab dir>/X:
    carpool.toml      the configuration (docs/config.md), written by the lab
    carpool.log       stdout + stderr of `carpool run`
    lab-run.pid       the pid of `carpool run` (the supervisor), written by the lab
    daemon.pid        the worker's pid, written by the supervisor
    carpool.sock      the daemon's control socket (`carpool status`)
"""

from __future__ import annotations

import copy
import functools
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ..config import tomlw
from .base import STOP_GRACE, LabBase
from .ns import (
    LabError,
    LabTimeout,
    alive,
    child_env,
    cmdline,
    read_pid,
    signal_pid,
    stop_pids,
    venv_bin,
    wait_for,
    write_file,
)
from .topology import (
    HEARTBEAT,
    ROLES,
    SHARED_LAN,
    SHARED_LAN6,
    SHARED_SRV,
    SHARED_SRV6,
    UNIT_ADDR,
    UNIT_ADDR6,
    UNITS,
    server_addr,
    server_addr6,
    unit_ns,
)

SECRET = "carpool-lab-secret"  # 12-20 characters (docs/config.md); ucarp peers use it too
VHID = 1
WUI_USER, WUI_PASSWORD = "admin", "carpool-lab"  # published: the lab is no production install
WUI_PORT = 443


def wui_url(unit: str, ipv6_only: bool = False) -> str:
    if ipv6_only:  # the host's end reaches it from 2001:2::fe
        return f"https://[{UNIT_ADDR6[unit]['eth0'].split('/')[0]}]/"
    return f"https://{UNIT_ADDR[unit]['eth0'].split('/')[0]}/"


@functools.lru_cache(maxsize=1)
def lab_password_hash() -> str:
    """argon2id of the lab password with a fixed salt: every run writes the same document
    (a fresh salt would make each rewrite of the files a new configuration version)."""
    from ..web.auth import fixed_salt_hash

    return fixed_salt_hash(WUI_PASSWORD, b"carpool-lab-salt")


# -- configuration ----------------------------------------------------------------------------
def base_config(
    unit: str,
    state_dir: Path,
    fast: bool = False,
    vmac: bool = False,
    preferred: str = "none",
    servers: int = 0,
    ipv6_only: bool = False,
) -> dict:
    """The lab's configuration document of one unit, as a dict (before overrides): dual-stack,
    or with ipv6_only IPv6 addresses only."""

    def own(unit_, ifname):
        six = UNIT_ADDR6[unit_][ifname].split("/")[0]
        return six if ipv6_only else [UNIT_ADDR[unit_][ifname].split("/")[0], six]

    def shared(*cidrs: str) -> list[str]:
        return [c for c in cidrs if ":" in c or not ipv6_only]

    vip = (SHARED_LAN6 if ipv6_only else SHARED_LAN).split("/")[0]
    backend = server_addr6 if ipv6_only else server_addr

    return {
        # The lab restarts units on purpose, far more often than reboot-loop protection allows.
        "unit": {
            "role": ROLES[unit],
            "secret": SECRET,
            "state_dir": str(state_dir),
            "restart_limit": 0,
        },
        # the unit's WUI on its own LAN address (the host reaches the lab's LAN directly)
        "web": {
            "bind": UNIT_ADDR6[unit]["eth0"].split("/")[0] if ipv6_only else own(unit, "eth0")[0],
            "port": WUI_PORT,
        },
        "ha": {"vhid": VHID, "fast": fast, "vmac": vmac, "preferred": preferred},
        "interface": [
            {
                "name": "eth0",
                "shared": shared(SHARED_LAN, SHARED_LAN6),
                "first": own("a", "eth0"),
                "second": own("b", "eth0"),
            },
            {
                "name": HEARTBEAT,
                "heartbeat": True,
                "first": own("a", HEARTBEAT),
                "second": own("b", HEARTBEAT),
            },
            {
                "name": "eth2",
                "shared": shared(SHARED_SRV, SHARED_SRV6),
                "first": own("a", "eth2"),
                "second": own("b", "eth2"),
            },
        ],
        # the lab's default service: L4 on the shared address, port 80, over cp-r1..N
        "virtual_service": [
            {
                "name": "web-l4",
                "address": vip,
                "port": 80,
                "check": {"type": "http", "interval": 0.5, "timeout": 0.5, "rise": 2, "fall": 2},
                "real_server": [{"address": backend(i), "port": 80} for i in range(1, servers + 1)],
            },
            {
                "name": "web-http",
                "address": vip,
                "port": 8080,
                "type": "http",
                "check": {"type": "http", "interval": 0.5, "timeout": 0.5, "rise": 2, "fall": 2},
                "real_server": [{"address": backend(i), "port": 80} for i in range(1, servers + 1)],
            },
        ]
        if servers
        else [],
        "user": [{"name": WUI_USER, "password_hash": lab_password_hash()}],
    }


def ipv4_only() -> dict:
    """Overrides that make the lab's document IPv4-only (the addresses stay on the links): what
    a release before IPv6 understands, for the rolling-upgrade test."""
    out: dict[str, Any] = {}
    for ifname, shared in (("eth0", [SHARED_LAN]), (HEARTBEAT, None), ("eth2", [SHARED_SRV])):
        for unit in UNITS:
            out[f"interface.{ifname}.{ROLES[unit]}"] = UNIT_ADDR[unit][ifname].split("/")[0]
        if shared:
            out[f"interface.{ifname}.shared"] = shared
    return out


def _flatten(prefix: tuple, value: Any):
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _flatten(prefix + tuple(str(key).split(".")), sub)
    else:
        yield prefix, value


def _set(table: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        table = table.setdefault(key, {})
    if value is None:
        table.pop(path[-1], None)
    else:
        table[path[-1]] = copy.deepcopy(value)


def apply_overrides(doc: dict, overrides: dict | None, unit: str) -> dict:
    """A copy of doc with overrides applied. Keys are nested dicts or dotted paths:
    {"ha": {"ha_timeout": 6}}, {"ha.preferred": "first"}, {"unit.log_level": "debug"};
    interfaces by name: {"interface.eth0.ping_target": "198.18.0.100"} (an unknown name adds
    one), {"interface.eth2": None} removes one, {"interface": [...]} replaces the list.
    A value None removes the key. Keys under "a" / "b" apply to that unit only, after the
    common ones: {"b": {"unit.secret": "other"}} or {"b.unit.secret": "other"}."""
    doc = copy.deepcopy(doc)
    flat = list(_flatten((), overrides or {}))
    common = [(path, value) for path, value in flat if path[0] not in UNITS]
    own = [(path[1:], value) for path, value in flat if path[0] == unit and len(path) > 1]
    for path, value in common + own:
        if path[0] == "interface" and len(path) >= 2:
            ifaces = doc.setdefault("interface", [])
            match = [i for i in ifaces if i.get("name") == path[1]]
            if len(path) == 2 and value is None:
                ifaces[:] = [i for i in ifaces if i.get("name") != path[1]]
                continue
            if not match:
                match = [{"name": path[1]}]
                ifaces.append(match[0])
            if len(path) > 2:
                _set(match[0], path[2:], value)
        else:
            _set(doc, path, value)
    return doc


def to_toml(doc: dict) -> str:
    try:
        return tomlw.dumps(doc)
    except TypeError as e:
        raise LabError(str(e)) from None


# -- the units' daemons -----------------------------------------------------------------------
class UnitsMixin(LabBase):
    """Part of Lab: uses what Lab.__init__ sets (self.dir, self.options, self.wanted...) and
    self.unit(), self._save() (declared in base.LabBase)."""

    # where things are
    def wui_url(self, unit: str) -> str:
        """Unit X's WUI as the host reaches it (over IPv6 in an IPv6-only lab)."""
        return wui_url(self.unit(unit), bool(self.options.get("ipv6_only")))

    def state_dir(self, unit: str) -> Path:
        return self.dir / unit

    def _private_state_dir(self, unit: str) -> Path:
        """Unit X's state dir, 0700 as carpool makes its own (an older lab's tightened: the
        daemon warns about a state dir open to others)."""
        sdir = self.state_dir(unit)
        sdir.mkdir(parents=True, exist_ok=True)
        sdir.chmod(0o700)
        return sdir

    def config_path(self, unit: str) -> Path:
        return self.state_dir(unit) / "carpool.toml"

    def log_path(self, unit: str) -> Path:
        return self.state_dir(unit) / "carpool.log"

    def socket_path(self, unit: str) -> Path:
        return self.state_dir(unit) / "carpool.sock"

    def _unit_pid(self, unit: str, pid_file: str) -> int | None:
        # Alive and running this unit's configuration: never a recycled pid. (Not checked by
        # namespace: `ip netns exec` enters cp-X only just after it starts.)
        pid = read_pid(self.state_dir(unit) / pid_file)
        return pid if alive(pid) and str(self.config_path(unit)) in cmdline(pid) else None

    def _exited(self, unit: str) -> bool:
        """Has `carpool run` of unit X exited? A process this Lab started counts as running
        until it is reaped: its /proc cmdline can read empty for a moment while it execs."""
        if self.supervisor_pid(unit) is not None:
            return False
        proc = self._children.get(read_pid(self.state_dir(unit) / "lab-run.pid") or -1)
        return proc is None or proc.poll() is not None

    def supervisor_pid(self, unit: str) -> int | None:
        """pid of `carpool run` of unit X (from <state_dir>/lab-run.pid), if it is alive."""
        return self._unit_pid(self.unit(unit), "lab-run.pid")

    def daemon_pid(self, unit: str) -> int | None:
        """pid of the worker daemon (from <state_dir>/daemon.pid), if it is alive."""
        return self._unit_pid(self.unit(unit), "daemon.pid")

    def unit_running(self, unit: str) -> bool:
        unit = self.unit(unit)
        return self.supervisor_pid(unit) is not None and self.daemon_pid(unit) is not None

    # configuration
    def unit_config(self, unit: str, options: dict | None = None) -> dict:
        """Unit X's configuration document under the lab's (or the given) options."""
        unit = self.unit(unit)
        o = self.options if options is None else options
        doc = base_config(
            unit,
            self.state_dir(unit),
            o.get("fast", False),
            o.get("vmac", False),
            o.get("preferred", "none"),
            self.servers,
            o.get("ipv6_only", False),
        )
        return apply_overrides(doc, o.get("overrides"), unit)

    def write_configs(self, **options) -> None:
        """Rewrite both units' configuration files; options as for up() (fast, vmac,
        preferred, overrides) replace the current ones. Running daemons are not restarted."""
        unknown = set(options) - {"fast", "vmac", "preferred", "overrides", "ipv6_only"}
        if unknown:
            raise LabError(f"write_configs: unknown options {sorted(unknown)}")
        merged = {**self.options, **options}
        docs = {unit: self.unit_config(unit, merged) for unit in UNITS}
        for unit, doc in docs.items():
            if doc.get("unit", {}).get("state_dir") != str(self.state_dir(unit)):
                raise LabError(
                    f"unit.state_dir is the lab's ({self.state_dir(unit)}): not an override"
                )
        self.options = merged
        for unit, doc in docs.items():
            self._private_state_dir(unit)
            write_file(self.config_path(unit), to_toml(doc), mode=0o600)  # holds unit.secret
        self._save()

    # life cycle
    def _run_argv(self, unit: str) -> list[str]:
        carpool = venv_bin() / "carpool"
        cmd = (
            [str(carpool)]
            if carpool.exists()
            else [str(venv_bin() / "python"), "-m", "carpool.cli"]
        )
        return [
            "ip",
            "netns",
            "exec",
            unit_ns(unit),
            *cmd,
            "run",
            "--config",
            str(self.config_path(unit)),
        ]

    def start_unit(self, unit: str, wait: bool = True, timeout: float = 15.0) -> int:
        """Start `carpool run` in cp-X in the background; with wait, until its daemon answers
        `status` with a state. Returns the supervisor pid. A running unit is left alone."""
        unit = self.unit(unit)
        self.wanted.add(unit)
        self._save()
        pid = self.supervisor_pid(unit)
        if pid is not None and self.daemon_pid(unit) is not None:
            return pid
        if pid is not None:
            self._stop_remnants(unit)
        proc = self._launch(unit)
        if wait:
            self._wait_answers(unit, timeout)
        return proc.pid

    def _launch(self, unit: str) -> subprocess.Popen:
        sdir = self._private_state_dir(unit)
        for stale in ("daemon.pid", "lab-run.pid"):
            (sdir / stale).unlink(missing_ok=True)
        if not self.config_path(unit).exists():
            self.write_configs()
        with open(self.log_path(unit), "ab") as log:
            log.write(f"--- lab: starting unit {unit} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self._run_argv(unit),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=child_env(
                    {
                        "CARPOOL_CONFIG": str(self.config_path(unit)),
                        **({"PYTHONPATH": self.unit_src[unit]} if unit in self.unit_src else {}),
                    }
                ),
            )
        self._children[proc.pid] = proc
        write_file(sdir / "lab-run.pid", f"{proc.pid}\n")
        return proc

    def _wait_answers(self, unit: str, timeout: float = 15.0) -> str:
        """Wait until the unit's daemon answers status with a state (returned)."""

        def answers():
            if self._exited(unit):
                raise LabError(
                    f"unit {unit}: `carpool run` exited; log {self.log_path(unit)}:"
                    f"\n{self.log_tail(unit)}"
                )
            return self.unit_status(unit).get("state")

        try:
            return wait_for(answers, timeout, what=f"unit {unit} answers status")
        except LabTimeout as e:
            raise LabTimeout(f"{e}; log {self.log_path(unit)}:\n{self.log_tail(unit)}") from None

    def stop_unit(self, unit: str, timeout: float = STOP_GRACE) -> None:
        """SIGTERM the unit's supervisor (the daemon bows out), SIGKILL after timeout."""
        unit = self.unit(unit)
        self.wanted.discard(unit)
        self._save()
        self._stop_remnants(unit, timeout)

    def _stop_remnants(self, unit: str, timeout: float = STOP_GRACE) -> None:
        pids: dict[int, str | None] = {
            p: None for p in (self.supervisor_pid(unit), self.daemon_pid(unit)) if p
        }
        if pids:
            stop_pids(pids, grace=timeout)

    def start_units(self, timeout: float | None = None) -> str:
        """Start both units; wait until both report a state and exactly one is master."""
        for unit in UNITS:
            self.start_unit(unit, wait=False)
        return self.wait_for_master(timeout)

    def default_timeout(self) -> float:
        """Long enough for a first election under the current configuration."""
        a = self.unit_config("a").get("ha", {})
        fast = bool(a.get("fast"))
        master_down = 1.0 if fast else 3.0 * int(a.get("ha_timeout", 3))
        return 10.0 + master_down + float(a.get("initial_wait", 0))

    # status
    def unit_status(self, unit: str, timeout: float = 1.0) -> dict:
        """The daemon's status object; {"state": None, "error": why} when none answers."""
        unit = self.unit(unit)
        path = self.socket_path(unit)
        if not path.exists():
            return {"state": None, "error": f"no control socket {path}"}
        try:
            from ..node import control

            answer = control.request(str(path), "status", timeout=timeout)
        except (OSError, ValueError) as e:
            return {"state": None, "error": f"{path}: {e}"}
        if not isinstance(answer, dict) or "state" not in answer:
            return {"state": None, "error": f"{path}: unexpected answer {answer!r}"}
        return answer

    def states(self) -> dict[str, str | None]:
        return {unit: self.unit_status(unit).get("state") for unit in UNITS}

    def master(self) -> str | None:
        """The unit that is master if exactly one is and both answer, else None."""
        states = self.states()
        if None in states.values():
            return None
        masters = [u for u, s in states.items() if s == "master"]
        return masters[0] if len(masters) == 1 else None

    def advert_interval(self) -> float:
        """Seconds between adverts under the current configuration (unit a's)."""
        ha = self.unit_config("a").get("ha", {})
        if ha.get("fast"):
            return int(ha.get("fast_interval_ms", 20)) / 1000
        return int(ha.get("ha_timeout", 3)) // 3 + int(ha.get("advskew", 0)) / 256

    def wait_for_master(
        self, timeout: float | None = None, settle: float | None = None, watch: bool = False
    ) -> str:
        """Wait until both units answer and exactly one is master, the same one for `settle`
        seconds (default: one advert interval + 0.1 s, so that a unit whose master-down timer
        fires just after the other's has had its say): watched here, or (unless `watch`) both
        units in their state that long already by their own account. Returns that unit."""
        timeout = self.default_timeout() if timeout is None else timeout
        settle = self.advert_interval() + 0.1 if settle is None else settle
        seen: list = [None, 0.0]  # master, since

        def one_master():
            for unit in UNITS:
                if self._exited(unit):
                    raise LabError(
                        f"unit {unit} is not running; log {self.log_path(unit)}:\n"
                        f"{self.log_tail(unit)}"
                    )
            status = {unit: self.unit_status(unit) for unit in UNITS}
            masters = [u for u, st in status.items() if st.get("state") == "master"]
            # both decided: a unit still in init (starting) may yet preempt
            answered = all(st.get("state") in ("master", "backup") for st in status.values())
            master = masters[0] if answered and len(masters) == 1 else None
            now = time.monotonic()
            if master != seen[0]:
                seen[:] = [master, now]
            # settled: watched for `settle` s, or both units in their state that long already
            steady = (
                not watch
                and master is not None
                and all((st.get("since_ago") or 0) >= settle for st in status.values())
            )
            return master if master and (steady or now - seen[1] >= settle) else None

        try:
            return wait_for(
                one_master,
                timeout + settle,
                what=f"both units answer, exactly one master for {settle:g}s",
            )
        except LabTimeout as e:
            tails = "\n".join(
                f"unit {u} ({self.unit_status(u).get('state')}):\n{self.log_tail(u)}" for u in UNITS
            )
            raise LabTimeout(f"{e}\n{tails}") from None

    def log_tail(self, unit: str, lines: int = 20) -> str:
        try:
            text = self.log_path(self.unit(unit)).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # signals (the faults use these)
    def _signal_unit(self, unit: str, sig: int, who: str) -> int:
        unit = self.unit(unit)
        pid = self.daemon_pid(unit) if who == "daemon" else self.supervisor_pid(unit)
        supervisor = self.supervisor_pid(unit)
        if pid is None or not signal_pid(pid, sig, None):
            raise LabError(f"unit {unit}: no {who} process running")
        if supervisor:  # it exits after withdrawing: heal() waits for that before restarting
            self._signalled[unit] = supervisor
        return pid

    def _wait_signalled(self, timeout: float = 5.0) -> None:
        """Let units stopped by kill()/term() finish exiting (so heal() restarts them)."""
        pids = dict(self._signalled)
        self._signalled.clear()
        if pids:
            wait_for(
                lambda: not any(alive(p) for p in pids.values()),
                timeout,
                what=f"signalled units {sorted(pids)} exit",
            )

    def _kill_now(self, unit: str) -> list[int]:
        """Freeze supervisor and worker, then SIGKILL both: neither gets to clean up."""
        unit = self.unit(unit)
        pids = [p for p in (self.supervisor_pid(unit), self.daemon_pid(unit)) if p]
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                signal_pid(pid, sig, None)
        wait_for(lambda: not any(alive(p) for p in pids), 5.0, what=f"unit {unit} killed")
        return pids
