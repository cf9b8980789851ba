"""Notify hooks: `SCRIPT NEW OLD REASON` on every state change, time-limited, never awaited by
the election (like keepalived's notify_master/backup/fault)."""

from __future__ import annotations

import asyncio

from .. import events

log = events.logger("carpool.notify", events.Kind.DAEMON)


async def run_notify(script: str, new: str, old: str, reason: str, timeout: float) -> int | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            script,
            new,
            old,
            reason,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        log.error("notify %s: cannot start: %s", script, e)
        return None
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.error("notify %s %s: killed after %.1f s", script, new, timeout)
        return None
    if proc.returncode:
        log.warning(
            "notify %s %s: exit %d: %s",
            script,
            new,
            proc.returncode,
            err.decode(errors="replace").strip()[:200],
        )
    return proc.returncode
