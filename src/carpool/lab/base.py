"""What the parts of the Lab expect of one another: core.Lab is built from units.UnitsMixin and
faults.FaultsMixin, whose methods use the attributes Lab.__init__ sets and call methods of the
other parts. Both mixins derive from LabBase, which declares those for the type checker (which
then also checks that each part's definition matches its declaration). At run time LabBase
holds nothing but the attributes' annotations."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

# s a stopping unit gets before SIGKILL: an active one's HAProxy finishes its HTTP connections
# first (ha.handover_drain, 10 s by default)
STOP_GRACE = 15.0


class LabBase:
    # set by Lab.__init__
    dir: Path
    options: dict
    servers: int
    wanted: set[str]  # units that should be running (heal restarts them)
    _children: dict[int, subprocess.Popen]
    _signalled: dict[str, int]  # unit -> supervisor pid, after kill()/term()
    unit_src: dict[str, str]  # unit -> the source tree its daemon runs, when not this one

    if TYPE_CHECKING:
        # -- core.Lab ----------------------------------------------------------------------
        @staticmethod
        def unit(name: str) -> str: ...

        def _save(self) -> None: ...

        def serve_real_server(self, ns: str) -> int: ...

        def stop_http(self, node: str, port: int = 80) -> None: ...

        def server_pids(self) -> dict[str, int | None]: ...

        # -- units.UnitsMixin (the faults use these) -----------------------------------------
        def supervisor_pid(self, unit: str) -> int | None: ...

        def daemon_pid(self, unit: str) -> int | None: ...

        def unit_running(self, unit: str) -> bool: ...

        def start_unit(self, unit: str, wait: bool = True, timeout: float = 15.0) -> int: ...

        def stop_unit(self, unit: str, timeout: float = STOP_GRACE) -> None: ...

        def wait_for_master(
            self, timeout: float | None = None, settle: float | None = None, watch: bool = False
        ) -> str: ...

        def master(self) -> str | None: ...

        def _launch(self, unit: str) -> subprocess.Popen: ...

        def _wait_answers(self, unit: str, timeout: float = 15.0) -> str: ...

        def _stop_remnants(self, unit: str, timeout: float = STOP_GRACE) -> None: ...

        def _signal_unit(self, unit: str, sig: int, who: str) -> int: ...

        def _wait_signalled(self, timeout: float = 5.0) -> None: ...

        def _kill_now(self, unit: str) -> list[int]: ...
