"""The unit's own files: `carpool run` works under umask 077, its directories are created 0700,
and every file written through a temp file (then renamed over) is created by this process alone:
O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600 unless said otherwise. A file or a symlink already at the
temp path (a killed writer's, or planted) is removed, never followed or written through.

Temp files are `.<name>.<pid>.tmp` beside the file: one writer of a file per process at a time
(the store writes on one thread, the state file on another, each its own files).
Imports nothing of carpool, like events.py: every layer may use it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("carpool.files")
PRIVATE_UMASK = 0o077
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_warned: set[str] = set()  # what private_dir warned about, once per process


def private_umask() -> int:
    """umask 077 for this process and what it starts; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: str | Path, group: int | None = None) -> Path:
    """`path` as a directory. Missing ones (parents too) are created 0700, or with a `group`
    0710 owned by that group (its members may pass through, e.g. to the control socket, but
    not list it). An existing one is left as it is, with a warning (once) when group or
    others may read or write it, or when `group` cannot pass through it."""
    path = Path(path)
    mode = 0o700 if group is None else 0o710
    missing = [p for p in (path, *path.parents) if not p.exists()]
    created = set()
    for d in reversed(missing):
        try:
            d.mkdir(mode)
        except FileExistsError:
            continue  # made meanwhile by another process: judged below like any existing one
        os.chmod(d, mode)  # mkdir's mode went through the umask
        if group is not None:
            os.chown(d, -1, group)
        created.add(d)
    if path not in created:
        _judge(path, group)
    return path


def _judge(path: Path, group: int | None) -> None:
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} is not a directory")
    perm = stat.S_IMODE(st.st_mode)
    if perm & 0o067 and _once(f"{path} mode {perm:o}"):
        log.warning(
            "%s is open to group or others (mode %04o); carpool creates its directories 0700: "
            "chmod g-rw,o-rwx %s",
            path,
            perm,
            path,
        )
    if group is not None and (st.st_gid != group or not perm & 0o010) and _once(f"{path} {group}"):
        log.warning(
            "members of group %d cannot pass through %s to the control socket: "
            "chgrp %d %s && chmod g+x %s",
            group,
            path,
            group,
            path,
            path,
        )


def _once(what: str) -> bool:
    """True the first time `what` is asked about in this process."""
    if what in _warned:
        return False
    _warned.add(what)
    return True


def temp_path(path: str | Path) -> Path:
    """The temp file a write of `path` goes through: `.<name>.<pid>.tmp` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def create(path: str | Path, mode: int = 0o600) -> int:
    """A new file at `path` created by this call (O_EXCL|O_NOFOLLOW, `mode` through the
    umask), opened for writing: its descriptor. Whatever is at `path` already (a stale
    file, a symlink) is unlinked first, never followed."""
    try:
        return os.open(path, _FLAGS, mode)
    except FileExistsError:
        os.unlink(path)  # unlinks a symlink itself; one more racing it makes the open fail
        return os.open(path, _FLAGS, mode)


def write_new(
    path: str | Path, data: bytes | str, mode: int = 0o600, durable: bool = False
) -> None:
    """`data` into a new file at `path` (see create); fsynced with durable."""
    if isinstance(data, str):
        data = data.encode()
    fd = create(path, mode)
    with open(fd, "wb", closefd=True) as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def write_private(
    path: str | Path, data: bytes | str, mode: int = 0o600, durable: bool = False
) -> None:
    """Atomically replace `path` with `data`: written to its temp file (see create), renamed
    over. A reader finds the old file or the new one. With durable, the file and then its
    directory are fsynced (a crash right after leaves the new one)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write_new(tmp, data, mode, durable)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
