"""Namespace plumbing for the lab: run commands, find namespaces and the processes inside them,
signal processes by PID (only after checking that the PID lives in the namespace we expect, so a
recycled PID is never hit), wait on conditions with deadlines, and a machine-wide lab lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeGuard, TypeVar

from .. import files

T = TypeVar("T")

LAB_DIR = Path(os.environ.get("CARPOOL_LAB_DIR", "/run/carpool-lab"))
LOCK_FILE = Path(str(LAB_DIR) + ".lock")
NETNS_DIR = Path("/run/netns")
POLL = 0.05  # seconds between polls of a condition


class LabError(RuntimeError):
    """Anything the lab could not do; the message says what and why."""


class LabTimeout(LabError, TimeoutError):
    """A condition did not become true before its deadline."""


# -- commands ---------------------------------------------------------------------------------
def sh(
    argv: list[str],
    *,
    ns: str | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float = 30.0,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run argv (in namespace `ns` if given), capture its output; raise LabError on failure."""
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, input=input, timeout=timeout, env=env
        )
    except FileNotFoundError:
        raise LabError(
            f"{argv[0]}: command not found (the lab needs iproute2, nftables, iputils-ping)"
        ) from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{shlex.join(argv)}` still running after {timeout}s") from None
    if check and proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise LabError(
            f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {' | '.join(why[-5:])}"
        )
    return proc


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`ip [-n NS] ARGS...`"""
    return sh(["ip", *(("-n", ns) if ns else ()), *args], check=check)


def venv_bin() -> Path:
    """The bin directory of the Python running the lab (the project venv)."""
    return Path(sys.executable).parent


def src_dir() -> str:
    """The source tree this lab was imported from: daemons and servers run the same code."""
    import carpool

    return str(Path(carpool.__file__).resolve().parents[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{venv_bin()}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["PYTHONPATH"] = src_dir() + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# -- namespaces -------------------------------------------------------------------------------
def namespaces() -> list[str]:
    """Names of the named network namespaces (what `ip netns list` shows)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _ns_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(names: Iterable[str]) -> dict[str, list[int]]:
    """The processes living in each named namespace (like `ip netns pids`)."""
    wanted = {}
    for name in names:
        ident = _ns_id(NETNS_DIR / name)
        if ident is not None:
            wanted[ident] = name
    found: dict[str, list[int]] = {name: [] for name in wanted.values()}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            ident = _ns_id(f"/proc/{entry}/ns/net")
            if ident in wanted and alive(int(entry)):
                found[wanted[ident]].append(int(entry))
    return found


def in_namespace(pid: int, ns: str) -> bool:
    ident = _ns_id(NETNS_DIR / ns)
    return ident is not None and _ns_id(f"/proc/{pid}/ns/net") == ident


# -- processes --------------------------------------------------------------------------------
def _reap(pid: int) -> None:
    """Collect the exit status if pid is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def alive(pid: int | None) -> TypeGuard[int]:
    """True while pid runs (a zombie counts as dead). True also tells the type checker that
    pid is an int, not None."""
    if not pid or pid <= 0:
        return False
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomic write: temp file (created by us alone, never through a symlink) + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_private(path, text, mode=mode)


def signal_pid(pid: int | None, sig: int, ns: str | None) -> bool:
    """Send sig to pid, only if pid is alive inside namespace ns (ns None: the caller has
    checked the pid otherwise). True when sent."""
    if not pid or not alive(pid) or (ns is not None and not in_namespace(pid, ns)):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_pids(pids: dict[int, str | None], grace: float = 3.0) -> list[int]:
    """SIGTERM each pid (checked against its namespace), SIGKILL what is left after `grace`
    seconds, wait until all are gone. Returns the pids that had to be killed."""
    for pid, ns in pids.items():
        signal_pid(pid, signal.SIGTERM, ns)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(POLL / 2)
    killed = [p for p, ns in pids.items() if signal_pid(p, signal.SIGKILL, ns)]
    deadline = time.monotonic() + 5.0
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            left = [p for p in pids if alive(p)]
            raise LabError(f"processes {left} survived SIGKILL for 5 s")
        time.sleep(POLL / 2)
    return killed


# -- waiting ----------------------------------------------------------------------------------
def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = POLL, what: str | None = None
) -> T:
    """Poll predicate until it returns something truthy (returned) or the deadline passes
    (LabTimeout naming `what` and the last value seen). Exceptions from predicate propagate."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            name = what or getattr(predicate, "__name__", "condition")
            raise LabTimeout(f"{name}: not true within {timeout:g}s (last: {value!r})")
        time.sleep(min(interval, left))


# -- one lab per machine ----------------------------------------------------------------------
@contextlib.contextmanager
def machine_lock(timeout: float | None = 900.0, path: Path = LOCK_FILE):
    """Exclusive lock on the lab's fixed names (cp-a, cp-b, ...) for one user at a time.

    timeout None: do not wait (LabError if held). The holder's pid is written into the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + (timeout or 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise LabError(f"the lab is in use by pid {holder} ({path})") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def cmdline(pid: int) -> str:
    """The command line of pid, arguments joined by spaces ("" if gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
