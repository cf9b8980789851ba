"""Lab methods that need no lab (nothing is started: spawning is refused)."""

from __future__ import annotations

import pytest

from carpool.lab.core import Lab
from carpool.lab.ns import LabError


def test_http_servers_run_in_lab_nodes_not_on_the_host(tmp_path, monkeypatch):
    # The host has no namespace (Lab.ns("host") is None): a server there once started as
    # `--name None` and failed in Popen with a TypeError.
    def spawn(*_args, **_kwargs):
        pytest.fail("a server was spawned on the host")

    monkeypatch.setattr(Lab, "spawn", spawn)
    lab = Lab(tmp_path)
    with pytest.raises(LabError, match="host"):
        lab.serve_http("host", 8080)
    with pytest.raises(LabError, match="host"):
        lab.stop_http("host", 8080)
