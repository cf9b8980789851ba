"""The managed processes' (HAProxy's, conntrackd's) stop: a signal, a grace period, SIGKILL."""

from __future__ import annotations

import asyncio
import signal


async def stop_process(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within grace seconds; returns once reaped."""
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()
