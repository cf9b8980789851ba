"""Real-time scheduling of the loop thread (node/sched.py): on, for the calling thread only, and
never inherited by what it starts."""

import os
import subprocess
import sys
import threading

import pytest

from carpool.node.sched import realtime

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_RR needs CAP_SYS_NICE")


@needs_root
def test_the_calling_thread_only_and_nothing_it_starts():
    seen = {}

    def thread():
        seen["set"] = realtime(7, "test")
        seen["policy"] = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
        seen["priority"] = os.sched_getparam(0).sched_priority
        inner = threading.Thread(target=lambda: seen.update(inner=os.sched_getscheduler(0)))
        inner.start()
        inner.join()
        seen["child"] = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert seen["set"] == 7 and seen["policy"] == os.SCHED_RR and seen["priority"] == 7
    assert seen["inner"] == os.SCHED_OTHER  # threads it starts: normal
    assert seen["child"] == str(os.SCHED_OTHER)  # processes it starts: normal
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this (the test's) thread: untouched


def test_zero_leaves_the_thread_alone():
    assert realtime(0, "test") == 0
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
