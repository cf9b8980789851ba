"""Real-time scheduling for the threads that keep the advert timer.

In the fast profile (adverts every 20 ms, master-down 72 ms) a loop thread that waits half a
second for a CPU is a failover: chaos campaigns on a busy two-core machine measured 0.5–2.5 s
stalls of a runnable loop (a thread start waited 0.5 s to be scheduled), and every one of them
cost adverts. Like keepalived's vrrp_rt_priority, the event loop's thread, the netlink
thread that adds the shared addresses and the fast detector's thread (its hellos and answers
are judged within half a second) run SCHED_RR at a low real-time priority. With
SCHED_RESET_ON_FORK nothing they start inherits it: HAProxy, conntrackd, nft and the worker
threads stay normal tasks. The kernel's RT throttling (95 % of a CPU by default) bounds a loop
that would spin.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("carpool.sched")


def realtime(priority: int, what: str) -> int:
    """Make the calling thread SCHED_RR at `priority` (0: leave it alone). Returns the priority
    in force; a refusal (no CAP_SYS_NICE, a container) is logged once and is not fatal."""
    if priority <= 0:
        return 0
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
        return priority
    except (OSError, AttributeError) as e:
        log.warning(
            "%s stays a normal task (unit.rt_priority = %d refused: %s); adverts may be "
            "late on a busy machine",
            what,
            priority,
            e,
        )
        return 0
