"""The REST API, /metrics and the HTTPS server of both units' real daemons: auth, validation,
every endpoint, changes on the active unit synced to the standby, refused on the standby."""

from __future__ import annotations

import ssl
import textwrap
import time

import httpx
import pytest
from webclient import AUTH, client, other, pair_icons, wui_ready

from carpool.lab.topology import CLIENT
from carpool.lab.units import WUI_PASSWORD, lab_password_hash, wui_url

ROLE = {"a": "first", "b": "second"}
VS = {
    "name": "api-test",
    "address": "198.18.0.10",
    "port": 9000,
    "real_server": [{"address": "198.18.2.101", "port": 80}],
}


@pytest.fixture(scope="module")
def pair(lab):
    """The module's lab with both WUIs answering; returns the active unit."""
    active = lab.wait_for_master()
    wui_ready(lab)
    return active


def test_https_with_the_self_signed_certificate_made_at_first_start(lab, pair):
    for unit in ("a", "b"):
        cert = lab.state_dir(unit) / "web" / "cert.pem"
        assert (
            cert.exists() and (lab.state_dir(unit) / "web" / "key.pem").stat().st_mode & 0o77 == 0
        )
        served = ssl.get_server_certificate((wui_url(unit)[8:-1], 443), timeout=5)
        assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_no_or_wrong_credentials_get_401_and_the_openapi_document_needs_a_login(lab, pair):
    with client(pair, auth=None) as c:
        r = c.get("/api/v1/status")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert c.get("/metrics").status_code == 401
        assert c.get("/api/v1/status", auth=("admin", "wrong")).status_code == 401
        assert c.get("/api/v1/status", auth=("nobody", "carpool-lab")).status_code == 401
        assert c.get("/api/v1/status", auth=AUTH).json()["state"] == "master"
        assert c.get("/api/openapi.json").status_code == 401
        spec = c.get("/api/openapi.json", auth=AUTH).json()
        for path in (
            "/api/v1/status",
            "/api/v1/config",
            "/api/v1/config/rollback",
            "/api/v1/virtual-services/{name}/real-servers",
            "/api/v1/failover",
            "/api/v1/events",
        ):
            assert path in spec["paths"], path
        assert c.get("/api/v1/peer/status").status_code == 401  # units only (partner secret)


def test_failed_logins_are_rate_limited_per_source_address(lab, pair):
    # From the client namespace, so the host's own address is not blocked for the other tests.
    script = textwrap.dedent(f"""
        import httpx
        codes = [httpx.get("{wui_url(pair)}api/v1/status", auth=("admin", "guess%d" % n),
                           verify=False, timeout=5).status_code for n in range(6)]
        codes.append(httpx.get("{wui_url(pair)}api/v1/status", auth={AUTH!r}, verify=False,
                               timeout=5).status_code)
        print(codes)""")
    out = lab.exec(CLIENT, [lab.python(), "-c", script], check=True).stdout.strip()
    assert out == str([401] * 5 + [429, 429]), out  # even the right password waits
    with client(pair) as c:  # another address is not affected
        assert c.get("/api/v1/status").status_code == 200
        events = c.get("/api/v1/events", params={"kind": "login"}).json()
        assert any("failed login" in e["text"] and "198.18.0.100" in e["text"] for e in events)


def test_status_pair_and_event_log(lab, pair):
    for unit in ("a", "b"):
        with client(unit) as c:
            status = c.get("/api/v1/status").json()
            assert status["role"] == ROLE[unit]
            assert status["state"] == ("master" if unit == pair else "backup")
        # each unit shows both, the partner fetched from its WUI (cached for a second)
        want = {ROLE[pair]: "active", ROLE[other(pair)]: "standby"}
        lab.wait_for(
            lambda unit=unit, want=want: pair_icons(unit) == want,
            10,
            interval=0.2,
            what=f"unit {unit} shows {want}",
        )
    with client(pair) as c:
        events = c.get("/api/v1/events").json()
        assert any(e["kind"] == "transition" and "-> master" in e["text"] for e in events)
        since = events[-1]["id"]
        assert all(e["id"] > since for e in c.get("/api/v1/events", params={"since": since}).json())
        assert c.get("/api/v1/events", params={"limit": 0}).status_code == 422


def test_doctor_over_the_api(lab, pair):
    with client(other(pair)) as c:
        answer = c.get("/api/v1/doctor", timeout=30).json()
    assert answer["ok"] is True, [x for x in answer["checks"] if not x["ok"]]
    assert any(x["name"].startswith("heartbeat") for x in answer["checks"])


def _wait_on_standby(lab, standby: str, predicate, what: str):
    with client(standby) as c:
        return lab.wait_for(lambda: predicate(c), 10, interval=0.1, what=what)


def test_virtual_service_and_real_server_crud_syncs_to_the_standby(lab, pair):
    standby = other(pair)
    with client(pair) as c:
        r = c.post("/api/v1/virtual-services", json=VS)
        assert r.status_code == 201, r.text
        assert c.post("/api/v1/virtual-services", json=VS).status_code == 409  # exists
        _wait_on_standby(
            lab,
            standby,
            lambda s: s.get("/api/v1/virtual-services/api-test").status_code == 200,
            "the new service on the standby",
        )
        r = c.post(
            "/api/v1/virtual-services/api-test/real-servers",
            json={"address": "198.18.2.102", "port": 80, "weight": 3},
        )
        assert r.status_code == 201, r.text
        r = c.put(
            "/api/v1/virtual-services/api-test/real-servers/198.18.2.102/80",
            json={"address": "198.18.2.102", "port": 80, "weight": 7, "enabled": False},
        )
        assert r.status_code == 200, r.text
        servers = c.get("/api/v1/virtual-services/api-test/real-servers").json()
        assert [(s["address"], s["weight"], s["enabled"]) for s in servers] == [
            ("198.18.2.101", 1, True),
            ("198.18.2.102", 7, False),
        ]
        lab.wait_for(
            lambda: (
                (c.get("/api/v1/virtual-services/api-test").json()["health"] or [{}])[0].get("up")
                is True
            ),
            10,
            what="r1 checked up",
        )
        assert (
            c.delete("/api/v1/virtual-services/api-test/real-servers/198.18.2.102/80").status_code
            == 200
        )
        assert (
            c.delete("/api/v1/virtual-services/api-test/real-servers/198.18.2.102/80").status_code
            == 404
        )
        r = c.put("/api/v1/virtual-services/api-test", json={**VS, "scheduler": "sh"})
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        _wait_on_standby(
            lab,
            standby,
            lambda s: s.get("/api/v1/config").json()["version"] == version,
            f"the standby at version {version}",
        )
        with client(standby) as s:
            assert s.get("/api/v1/virtual-services/api-test").json()["scheduler"] == "sh"
        assert c.delete("/api/v1/virtual-services/api-test").status_code == 200
        assert c.get("/api/v1/virtual-services/api-test").status_code == 404
        assert c.delete("/api/v1/virtual-services/api-test").status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({**VS, "colour": "red"}, ["body", "colour"]),  # unknown field
        ({**VS, "port": "9000"}, ["body", "port"]),  # wrong type (strict)
        ({**VS, "port": 70000}, ["body", "port"]),  # out of range
        ({k: v for k, v in VS.items() if k != "address"}, ["body", "address"]),  # missing
        ({**VS, "address": "198.18.0.99"}, ["body", "address"]),  # not a shared address
        (
            {**VS, "real_server": [{"address": "198.18.2.101", "port": 0}]},
            ["body", "real_server", 0, "port"],
        ),
    ],
)
def test_invalid_input_gets_422_naming_the_field(lab, pair, body, field):
    with client(pair) as c:
        before = c.get("/api/v1/config").json()["version"]
        r = c.post("/api/v1/virtual-services", json=body)
        assert r.status_code == 422, r.text
        assert field in [e["loc"] for e in r.json()["detail"]], r.json()
        assert c.get("/api/v1/config").json()["version"] == before  # nothing half-applied


def test_config_show_set_apply_history_diff_rollback(lab, pair):
    with client(pair) as c:
        start = c.get("/api/v1/config").json()
        r = c.patch("/api/v1/config", json={"key": "appliance.description", "value": "via api"})
        assert r.status_code == 200 and r.json()["version"] == start["version"] + 1, r.text
        assert c.patch("/api/v1/config", json={"key": "ha.vhid", "value": 300}).json()["detail"][0][
            "loc"
        ] == ["body", "ha", "vhid"]
        assert c.patch("/api/v1/config", json={"key": "ha.vhid"}).status_code == 200  # default
        document = c.get("/api/v1/config").json()["document"]
        document["appliance"]["description"] = "whole document"
        r = c.put("/api/v1/config", json={"document": document})
        assert r.status_code == 200 and r.json()["what"] == ["appliance.description"], r.text
        assert (
            c.put("/api/v1/config", json={"document": {**document, "unit": {}}}).status_code == 400
        )
        assert c.put("/api/v1/config", json={"doc": document}).status_code == 422
        history = c.get("/api/v1/config/history").json()["history"]
        assert history[-1]["who"].startswith("api (admin)")
        diff = c.get("/api/v1/config/diff").json()["diff"]
        assert any("whole document" in line for line in diff), diff
        assert c.get("/api/v1/config/diff", params={"b": 99999}).status_code == 404
        r = c.post("/api/v1/config/rollback", json={"version": start["version"]})
        assert r.status_code == 200, r.text
        assert c.get("/api/v1/config").json()["hash"] == start["hash"]
        assert c.post("/api/v1/config/rollback", json={"version": 99999}).status_code == 404
        assert c.post("/api/v1/config/rollback", json={"version": "1"}).status_code == 422


def test_the_standby_refuses_changes_and_names_the_active_unit(lab, pair):
    # the earlier tests' last change may still be on its way to the standby
    lab.wait_for(
        lambda: lab.unit_status(other(pair))["config"] == lab.unit_status(pair)["config"],
        10,
        what="the standby has the active unit's version",
    )
    with client(other(pair)) as s:
        before = s.get("/api/v1/config").json()["version"]
        for method, path, body in (
            ("POST", "/api/v1/virtual-services", VS),
            ("PATCH", "/api/v1/config", {"key": "appliance.description", "value": "x"}),
            ("POST", "/api/v1/config/rollback", {"version": before}),
        ):
            r = s.request(method, path, json=body)
            assert r.status_code == 409, (path, r.text)
            assert wui_url(pair)[8:-1] in r.text  # the active unit's address
        r = s.post("/api/v1/failover")
        assert r.status_code == 409 and "not active" in r.text
        assert s.get("/api/v1/config").json()["version"] == before


def test_metrics(lab, pair):
    with client(pair) as c:
        text = c.get("/metrics").text
    assert 'carpool_state{state="master"} 1.0' in text
    assert "carpool_adverts_sent_total" in text and "carpool_transitions_total" in text
    assert 'carpool_real_server_up{address="198.18.2.101",port="80",service="web-l4"} 1.0' in text
    assert "carpool_config_version" in text and "carpool_partner_ping_ok" in text
    assert "carpool_l4_packets_total" in text and "carpool_l7_sessions_total" in text
    with client(other(pair)) as s:
        assert 'carpool_state{state="backup"} 1.0' in s.get("/metrics").text


def test_carpool_passwd_sets_the_password_on_both_units(lab, pair):
    pair = lab.wait_for_master()
    browsers = {unit: client(unit, auth=None) for unit in ("a", "b")}
    try:
        for browser in browsers.values():  # a logged-in browser on each unit
            login = browser.post("/login", data={"username": "admin", "password": WUI_PASSWORD})
            assert login.status_code == 303, login.text
            assert browser.get("/api/v1/status").status_code == 200
        out = lab.exec(pair, ["carpool", "passwd", "--password-stdin"], input="new-secret-1\n")
        assert out.returncode == 0, out.stderr
        refused = lab.exec(
            other(pair), ["carpool", "passwd", "--password-stdin"], input="other-secret\n"
        )
        assert refused.returncode == 1 and "standby" in refused.stderr
        for unit in ("a", "b"):  # synced: the new one works on both, the old one on neither
            with client(unit, auth=("admin", "new-secret-1")) as c:
                lab.wait_for(
                    lambda: c.get("/api/v1/status").status_code == 200,
                    10,
                    what=f"the new password on unit {unit}",
                )
            with client(unit) as c:
                assert c.get("/api/v1/status").status_code == 401
            # the sessions opened with the old password end too, also on the partner
            assert browsers[unit].get("/api/v1/status").status_code == 401, unit
    finally:
        for browser in browsers.values():
            browser.close()
        with client(pair, auth=("admin", "new-secret-1")) as c:
            c.patch(
                "/api/v1/config",
                json={
                    "key": "user",
                    "value": [{"name": "admin", "password_hash": lab_password_hash()}],
                },
            )


def test_force_failover_via_the_api(healed_lab, pair):
    lab = healed_lab
    active = lab.wait_for_master()
    wui_ready(lab)
    with client(active) as c:
        r = c.post("/api/v1/failover")
        assert r.status_code == 200, r.text
    lab.wait_for(lambda: lab.master() == other(active), 5, what="the partner takes over")
    # the partner's part comes from its WUI, cached for a second: wait for the new picture
    want = {ROLE[other(active)]: "active", ROLE[active]: "standby"}
    lab.wait_for(
        lambda: pair_icons(other(active)) == want,
        10,
        interval=0.2,
        what=f"unit {other(active)} shows {want}",
    )
    with client(active) as c:
        events = c.get("/api/v1/events", params={"kind": "transition"}).json()
        assert any("forced failover" in e["text"] for e in events)


def test_sigterm_still_bows_out_with_the_wui_running(healed_lab):
    lab = healed_lab
    active = lab.wait_for_master()
    wui_ready(lab)
    master_down = lab.unit_status(active)["timers"]["master_down"]
    start = time.monotonic()
    lab.term(active)
    lab.wait_for(
        lambda: lab.unit_status(other(active))["state"] == "master",
        master_down,
        what="the partner takes over on the bow-out",
    )
    assert time.monotonic() - start < master_down * 0.7  # the bow-out, not the timeout
    assert "bowing out" in lab.log_tail(active, 40)


def test_a_wui_that_cannot_listen_leaves_the_election_running(lab):
    """Last in the module: restarts unit b with a port already taken, then restores."""
    try:
        # the sync service listens on 6973 (all addresses): the WUI's bind fails
        lab.write_configs(overrides={"b.web.port": 6973})
        lab.stop_unit("b")
        lab.start_unit("b")
        lab.wait_for_master()
        lab.wait_for(
            lambda: "WUI cannot listen" in lab.log_tail("b", 40), 10, what="b logs the failure"
        )
        assert lab.unit_status("b")["state"] in ("backup", "master")
        assert "WUI not available; retrying" in lab.log_tail("b", 40)
        with pytest.raises(httpx.HTTPError):
            httpx.get("https://198.18.0.12:6973/", verify=False, timeout=1.0)
    finally:
        lab.write_configs(overrides={})
        lab.stop_unit("b")
        lab.start_unit("b")
        lab.wait_for_master()
