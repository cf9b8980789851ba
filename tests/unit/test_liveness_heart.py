"""The liveness thread (node/liveness.py's Heart) on loopback: a fault of its own is counted
and the thread starts over; it never goes silent for good."""

from __future__ import annotations

import socket
import time

from carpool.ha import liveness as lv
from carpool.node.liveness import Heart

KEY = lv.liveness_key(b"partner-secret-1")


def test_a_fault_in_the_thread_is_counted_and_the_thread_starts_over():
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.bind(("127.0.0.1", 0))
    listen.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    delivered: list[int] = []

    def deliver(frame: lv.Frame, path: str) -> None:
        if not delivered:
            delivered.append(-1)
            raise ValueError("a bug in the loop-side callback")
        delivered.append(frame.seq)

    heart = Heart([listen], KEY, 1, 0.1, None, {"127.0.0.1": "lo"}, deliver)
    heart.start()
    try:
        deadline = time.monotonic() + 5
        seq = 0
        while delivered[1:] == [] and time.monotonic() < deadline:
            seq += 1
            hello = lv.encode(KEY, lv.Frame(lv.Kind.HELLO, 7, seq))
            sender.sendto(hello, listen.getsockname())
            time.sleep(0.05)
        assert heart.faults == 1 and delivered[0] == -1 and len(delivered) >= 2, delivered
        assert heart._thread.is_alive()
    finally:
        heart.stop()
        listen.close()
        sender.close()


def test_while_quiet_the_thread_tells_the_loop_of_a_silence_and_nothing_sooner():
    """The standby's loop sleeps while hellos come (the Heart takes them); the Heart tells it
    once they stop for `silence` s."""
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.bind(("127.0.0.1", 0))
    listen.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    told: list[float] = []
    heart = Heart([listen], KEY, 1, 0.05, None, {"127.0.0.1": "lo"}, lambda f, p: None)
    heart.silence, heart.on_silence = 0.3, lambda: told.append(time.monotonic())
    heart.heard_at, heart.quiet = time.monotonic(), True
    heart.start()
    try:
        for seq in range(1, 21):  # a second of hellos, one every 0.05 s
            sender.sendto(lv.encode(KEY, lv.Frame(lv.Kind.HELLO, 7, seq)), listen.getsockname())
            time.sleep(0.05)
        assert told == [] and heart.hellos == 20
        stopped = time.monotonic()
        deadline = stopped + 5
        while not told and time.monotonic() < deadline:
            time.sleep(0.01)
        assert told and 0.2 < told[0] - stopped < 1.0, told
    finally:
        heart.stop()
        listen.close()
        sender.close()


def test_the_thread_runs_real_time_like_the_loop():
    """SCHED_RR at the unit's rt_priority (root here, as the daemon): a normal task can wait
    half a second for a CPU on a busy machine, and half a second of silence is a verdict."""
    import os

    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.bind(("127.0.0.1", 0))
    listen.setblocking(False)
    heart = Heart([listen], KEY, 1, 0.1, None, {"127.0.0.1": "lo"}, lambda f, p: None)
    heart.rt_priority = 10
    heart.start()
    try:
        tid = None
        deadline = time.monotonic() + 5
        while tid is None and time.monotonic() < deadline:  # bounded: the thread starts
            tid = heart._thread.native_id
            time.sleep(0.01)
        policy = None
        while time.monotonic() < deadline:  # set by the thread itself, once it runs
            policy = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
            if policy == os.SCHED_RR:
                break
            time.sleep(0.01)
        assert policy == os.SCHED_RR
        assert os.sched_getparam(tid).sched_priority == 10
    finally:
        heart.stop()
        listen.close()
