"""The kernel's name for a worker thread, so that `top -H`, `ps -L` and /proc tell them apart
(CPython leaves every thread named after the process)."""

from __future__ import annotations

import threading

COMM_MAX = 15  # bytes the kernel keeps of a thread's name


def name_os_thread(name: str | None = None) -> None:
    """Name the calling thread (default: its Python name). Best effort: a kernel without
    /proc/thread-self or a read-only /proc leaves the name as it was."""
    text = (name or threading.current_thread().name).encode()[:COMM_MAX]
    try:
        with open("/proc/thread-self/comm", "wb") as f:
            f.write(text)
    except OSError:
        pass
