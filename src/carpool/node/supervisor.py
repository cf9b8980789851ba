"""`carpool run`: a minimal parent that runs the daemon as a child and cleans up after it.

keepalived and ucarp both leave the shared address on a node whose daemon was SIGKILLed (measured
in the lab), so the partner's takeover makes a duplicate. The parent does nothing but wait: when
the worker dies uncleanly it withdraws the shared addresses and sends one bow-out advert, so the
partner takes over at once instead of after master-down. If the parent itself is killed, the
kernel sends the worker SIGTERM (PR_SET_PDEATHSIG) and the worker bows out by itself. A worker
that stops answering (SIGSTOP, a hung loop) is SIGKILLed by the watchdog (node/watchdog.py) and
cleaned up after the same way. When both are killed at once, the kernel takes the addresses
away by itself: the fence within a few adverts, their lifetime within seconds (node/fence.py).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from .. import files
from ..config.ha import Config
from . import fence, watchdog
from .advert import bow_out_once, election_params
from .holder import remove_shared_addresses
from .sched import realtime

log = logging.getLogger("carpool.supervisor")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died between fork and prctl: then nobody would clean up after us.
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(cfg: Config) -> int:
    state_dir = Path(cfg.state_dir)
    # 0700, or 0710 with unit.control_group: its members reach the control socket in it
    files.private_dir(state_dir, cfg.control_gid)
    files.write_private(state_dir / "supervisor.pid", f"{os.getpid()}\n")
    params = election_params(cfg)
    timeout = watchdog.watchdog_timeout(params.master_down, params.advert_interval, cfg.watchdog)
    # Real-time too: it forwards SIGTERM (the bow-out) and cleans up after a dead worker, both
    # against the clock; the worker starts as a normal task (reset on fork) and sets its own.
    realtime(cfg.rt_priority, "the supervisor")
    pulse_r, pulse_w = os.pipe()
    worker = subprocess.Popen(
        [sys.executable, "-m", "carpool.cli", "run", "--worker", "--config", cfg.path],
        preexec_fn=_die_with_parent,
        pass_fds=(pulse_w,),
        env={**os.environ, watchdog.ENV: str(pulse_w)},
    )
    os.close(pulse_w)
    files.write_private(state_dir / "daemon.pid", f"{worker.pid}\n")

    def forward(signum, _frame):
        try:
            worker.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal must not fail the pair over
    try:  # the kernel says when the worker ends (a killed worker's addresses go at once)
        ended: int | None = os.pidfd_open(worker.pid)
    except (OSError, AttributeError):  # (a kernel before 5.3: asked 20 times a second)
        ended = None
    hung = watchdog.watch(pulse_r, timeout, lambda: worker.poll() is not None, ended_fd=ended)
    if ended is not None:
        os.close(ended)
    if hung:
        log.error("daemon %d hung: %s; killing it", worker.pid, hung)
        worker.kill()
    code = worker.wait()
    os.close(pulse_r)
    if code == 0:
        log.info("daemon stopped cleanly")
        return 0
    why = f"signal {-code}" if code < 0 else f"exit status {code}"
    log.error("daemon died (%s): withdrawing shared addresses and bowing out", why)
    # Dark first (no address of ours answers from here on), then the bow-out: the partner takes
    # over at once, while the netlink removal (a fresh pyroute2, dumps per interface and
    # family: tenths of a second on a dual-stack unit) follows behind it.
    fence.darken()
    bow_out_once(cfg)
    remove_shared_addresses(cfg)
    files.write_private(state_dir / "state", "init\n")
    return 1
