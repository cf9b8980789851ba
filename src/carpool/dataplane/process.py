"""The managed processes' (HAProxy's, conntrackd's) stop: a signal, a grace period, SIGKILL."""

from __future__ import annotations

import asyncio
import shutil
import signal

SETPRIV = shutil.which("setpriv")  # util-linux


def dies_with_us(argv: list[str]) -> list[str]:
    """argv run under `setpriv --pdeathsig TERM`: the process (it execs, same PID) gets SIGTERM
    when the daemon dies, however it dies (a SIGKILL, the supervisor's watchdog), and does not
    serve on with a configuration nobody manages; the next worker starts its own."""
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv] if SETPRIV else argv


async def stop_process(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within grace seconds; returns once reaped."""
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()
