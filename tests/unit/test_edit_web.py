"""The REST API and the WUI's forms send operations to the daemon; its typed refusals become
HTTP statuses by one table (404 not found, 409 exists/conflict/standby, 422 invalid, 400 other)."""

from __future__ import annotations

import re

import pytest
from edits import DOC, Unit, unit_view
from fastapi.testclient import TestClient

from carpool.config import edit as E
from carpool.config.document import Problem
from carpool.web import api
from carpool.web.app import create_app
from carpool.web.auth import hash_password
from carpool.web.context import COOKIE, WebContext

AUTH = ("admin", "right-password")
HASH = hash_password(AUTH[1])
VS = {
    "name": "api-test",
    "address": "198.18.0.10",
    "port": 9000,
    "real_server": [{"address": "198.18.2.101", "port": 80}],
}


@pytest.fixture
def unit(tmp_path) -> Unit:
    return Unit(tmp_path / "store", {**DOC, "user": [{"name": "admin", "password_hash": HASH}]})


@pytest.fixture
def ctx(unit) -> WebContext:
    ctx = WebContext(unit_view(unit))

    async def no_partner() -> dict:
        return {"url": "https://198.18.0.12/", "status": None, "error": "not asked"}

    ctx.partner.get = no_partner
    return ctx


@pytest.fixture
def rest(ctx):
    with TestClient(create_app(ctx), base_url="https://testserver") as c:
        c.auth = AUTH
        yield c


# -- the table -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error, status",
    [
        (E.NotFound("k", "m"), 404),
        (E.AlreadyExists("k", "m"), 409),
        (E.Conflict(1, 2), 409),
        (E.Standby("m"), 409),
        (E.Invalid([]), 422),
        (E.Refused("", "m"), 400),
    ],
)
def test_status_by_error_type(error, status):
    assert api.status_of(error) == status
    assert api.http_error(error, "https://a/").status_code == status


def test_http_error_details():
    invalid = E.Invalid(
        [
            Problem(("virtual_service", 2, "address"), "not shared"),
            Problem(("interface",), "elsewhere"),
        ],
        subject=("virtual_service", 2),
    )
    assert api.http_error(invalid, "").detail == [
        {"loc": ["body", "address"], "msg": "not shared", "type": "value_error"},
        {"loc": ["body", "interface"], "msg": "elsewhere", "type": "value_error"},
    ]
    standby = api.http_error(E.Standby("the standby; active at 198.18.0.12"), "https://b/")
    assert standby.detail == {
        "message": "the standby; active at 198.18.0.12",
        "active": "https://b/",
    }
    assert api.http_error(E.Conflict(3, 4), "").detail["current_version"] == 4


# -- REST ----------------------------------------------------------------------------------
def test_virtual_service_and_real_server_crud(rest, unit):
    assert rest.post("/api/v1/virtual-services", json=VS).status_code == 201
    assert rest.post("/api/v1/virtual-services", json=VS).status_code == 409  # exists
    base = "/api/v1/virtual-services/api-test/real-servers"
    assert rest.post(base, json={"address": "198.18.2.102", "port": 80}).status_code == 201
    assert rest.post(base, json={"address": "198.18.2.102", "port": 80}).status_code == 409
    r = rest.put(
        f"{base}/198.18.2.102/80",
        json={"address": "198.18.2.102", "port": 80, "weight": 7, "enabled": False},
    )
    assert r.status_code == 200, r.text
    assert [(s["address"], s["weight"], s["enabled"]) for s in rest.get(base).json()] == [
        ("198.18.2.101", 1, True),
        ("198.18.2.102", 7, False),
    ]
    assert rest.delete(f"{base}/198.18.2.102/80").status_code == 200
    assert rest.delete(f"{base}/198.18.2.102/80").status_code == 404
    r = rest.put("/api/v1/virtual-services/api-test", json={**VS, "scheduler": "sh"})
    assert r.status_code == 200 and unit.document["virtual_service"][1]["scheduler"] == "sh"
    assert unit.store.history()[-1].who == "api (admin): vs set api-test"
    assert rest.delete("/api/v1/virtual-services/api-test").status_code == 200
    assert rest.delete("/api/v1/virtual-services/api-test").status_code == 404
    assert rest.put("/api/v1/virtual-services/api-test", json=VS).status_code == 404


def test_invalid_input_gets_422_naming_the_field_and_nothing_changes(rest, unit):
    for body, loc in (
        ({**VS, "address": "198.18.0.99"}, ["body", "address"]),
        ({**VS, "port": 80}, ["body", "port"]),  # web has 198.18.0.10:80
        (
            {**VS, "real_server": [{"address": "198.18.2.101", "port": 0}]},
            ["body", "real_server", 0, "port"],
        ),
    ):
        r = rest.post("/api/v1/virtual-services", json=body)
        assert r.status_code == 422 and loc in [e["loc"] for e in r.json()["detail"]], r.text
    r = rest.post(
        "/api/v1/virtual-services/web/real-servers",
        json={"address": "198.18.2.102", "port": 80, "weight": 300},
    )
    assert r.status_code == 422 and ["body", "weight"] in [e["loc"] for e in r.json()["detail"]]
    assert rest.patch("/api/v1/config", json={"key": "ha.vhid", "value": 300}).json()["detail"][0][
        "loc"
    ] == ["body", "ha", "vhid"]
    assert unit.version == 1


def test_config_set_apply_rollback_diff(rest, unit):
    r = rest.patch("/api/v1/config", json={"key": "appliance.description", "value": "via api"})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert unit.store.history()[-1].who == "api (admin): set appliance.description"
    assert rest.patch("/api/v1/config", json={"key": "ha.vhid"}).status_code == 200
    document = rest.get("/api/v1/config").json()["document"]
    assert (
        rest.put("/api/v1/config", json={"document": {**document, "unit": {}}}).status_code == 400
    )
    assert rest.get("/api/v1/config/diff", params={"b": 99999}).status_code == 404
    assert rest.post("/api/v1/config/rollback", json={"version": 99999}).status_code == 404
    assert rest.post("/api/v1/config/rollback", json={"version": 1}).status_code == 200


def test_expect_version_conflict_is_409(rest, unit):
    r = rest.patch(
        "/api/v1/config",
        params={"expect_version": 5},
        json={"key": "appliance.description", "value": "x"},
    )
    assert r.status_code == 409 and r.json()["detail"]["current_version"] == 1
    r = rest.delete("/api/v1/virtual-services/web", params={"expect_version": 1})
    assert r.status_code == 200 and unit.version == 2


def test_the_standby_refuses_with_409_naming_the_active_unit(rest, unit):
    unit.active = False
    for method, path, body in (
        ("POST", "/api/v1/virtual-services", VS),
        ("DELETE", "/api/v1/virtual-services/web", None),
        ("PATCH", "/api/v1/config", {"key": "appliance.description", "value": "x"}),
        ("POST", "/api/v1/config/rollback", {"version": 1}),
    ):
        r = rest.request(method, path, json=body)
        assert r.status_code == 409 and "198.18.0.12" in r.text, (path, r.text)
    assert unit.version == 1


# -- WUI -----------------------------------------------------------------------------------
@pytest.fixture
def browser(ctx):
    token, session = ctx.sessions.create("admin", HASH)
    with TestClient(create_app(ctx), base_url="https://testserver", follow_redirects=False) as c:
        c.cookies.set(COOKIE, token)
        c.csrf = session.csrf
        yield c


def field_errors(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-field="(\w+)">([^<]*)<', html))


def test_service_form_adds_and_edits_through_operations(browser, unit):
    form = {
        "csrf": browser.csrf,
        "name": "web-ui",
        "address": "198.18.0.99",
        "port": "9100",
        "real_servers": "198.18.2.101:80\n198.18.2.102:80 2",
    }
    r = browser.post("/services/new", data=form)
    assert r.status_code == 422 and "not a shared address" in field_errors(r.text)["address"]
    r = browser.post("/services/new", data={**form, "name": "web", "address": "198.18.0.10"})
    assert r.status_code == 422 and "exists already" in field_errors(r.text)["name"]
    r = browser.post("/services/new", data={**form, "address": "198.18.0.10"})
    assert r.status_code == 303 and "vs%20add%20web-ui" in r.headers["location"]
    unit.call(
        "config.edit", **E.Edit((E.SetVirtualService("web-ui", "cookie", True),)).to_json()
    )  # a change the form does not show
    r = browser.post(
        "/services/web-ui/edit", data={**form, "address": "198.18.0.10", "port": "9200"}
    )
    assert r.status_code == 303, r.text
    vs = unit.document["virtual_service"][1]
    assert (vs["port"], vs["cookie"], [s["weight"] for s in vs["real_server"]]) == (
        9200,
        True,
        [1, 2],
    )
    assert browser.post("/services/gone/edit", data=form).status_code == 404
    assert browser.post("/services/web-ui/delete", data={"csrf": browser.csrf}).status_code == 303
    assert browser.post("/services/web-ui/delete", data={"csrf": browser.csrf}).status_code == 404


def test_the_standby_form_is_refused_with_422_naming_the_active_unit(browser, unit):
    unit.active = False
    r = browser.post(
        "/services/new",
        data={"csrf": browser.csrf, "name": "sneaky", "address": "198.18.0.10", "port": "9200"},
    )
    assert r.status_code == 422 and "standby" in r.text and "198.18.0.12" in r.text


def test_ha_form_sets_its_keys_and_places_problems(browser, unit):
    form = {
        "csrf": browser.csrf,
        "ha_timeout": "6",
        "vhid": "300",
        "initial_wait": "0",
        "preferred": "first",
    }
    r = browser.post("/ha", data=form)
    assert r.status_code == 422 and "255" in field_errors(r.text)["vhid"]
    r = browser.post("/ha", data={**form, "vhid": "ten"})
    assert r.status_code == 422 and "a number" in field_errors(r.text)["vhid"]
    r = browser.post("/ha", data={**form, "vhid": "12", "check_eth0": "on"})
    assert r.status_code == 303, r.text
    ha = unit.document["ha"]
    assert (ha["vhid"], ha["ha_timeout"], ha["preferred"]) == (12, 6, "first")
    assert unit.store.history()[-1].who.startswith("wui (admin): HA parameters: set ha.")


def test_a_file_in_the_csrf_field_is_refused_not_a_server_error(browser, unit):
    # A multipart form may carry a file under any name: the token must be a plain field.
    r = browser.post("/services/web/delete", files={"csrf": ("csrf.txt", browser.csrf.encode())})
    assert r.status_code == 403 and "CSRF" in r.text
    assert unit.version == 1


def test_the_service_form_takes_and_shows_ipv6_real_servers_in_brackets():
    from carpool.web.forms import parse_servers, servers_text

    errors: dict = {}
    text = "198.18.2.101:80\n[2001:2:0:2::101]:8080 2\n[2001:2:0:2::102]:80 weight 3"
    servers = parse_servers(text, errors)
    assert errors == {}
    assert servers == [
        {"address": "198.18.2.101", "port": 80},
        {"address": "2001:2:0:2::101", "port": 8080, "weight": 2},
        {"address": "2001:2:0:2::102", "port": 80, "weight": 3},
    ]
    assert servers_text({"real_server": servers}) == text.replace("weight 3", "3")
    # an IPv6 address without brackets is ambiguous (its last group or the port?): named
    parse_servers("2001:2:0:2::101:80", errors)
    assert errors["real_servers"] == [
        "line 1: write ADDRESS:PORT [WEIGHT] (an IPv6 address in brackets: [ADDRESS]:PORT), "
        "not '2001:2:0:2::101:80'"
    ]


def test_certificates_page_uploads_files_and_an_https_service_uses_them(browser, unit):
    from carpool.lab.pki import LabCA

    ca = LabCA()
    www = ca.issue("www.example.test")
    files = {"chain_file": ("www.pem", www.chain), "key_file": ("www.key", www.key)}
    r = browser.post("/certificates", data={"csrf": browser.csrf, "name": "www"}, files=files)
    assert r.status_code == 303 and "cert%20add%20www" in r.headers["location"], r.text
    page = browser.get("/certificates").text
    assert 'data-cert="www"' in page and "CN=www.example.test" in page
    assert "PRIVATE KEY" not in page and www.key.splitlines()[1] not in page
    # a wrong key is placed at its field
    other = ca.issue("other.example.test")
    r = browser.post(
        "/certificates",
        data={"csrf": browser.csrf, "name": "www", "chain": www.chain, "key": other.key},
    )
    assert r.status_code == 422 and "is not the key" in field_errors(r.text)["key"]
    form = {
        "csrf": browser.csrf,
        "name": "site",
        "address": "198.18.0.10",
        "port": "443",
        "type": "https",
        "certificate": "nope",
        "hsts": "600",
        "redirect_http": "on",
        "real_servers": "198.18.2.101:80",
    }
    r = browser.post("/services/new", data=form)
    assert (
        r.status_code == 422
        and "no certificate &#39;nope&#39;" in field_errors(r.text)["certificate"]
    )
    r = browser.post("/services/new", data={**form, "certificate": "www"})
    assert r.status_code == 422  # web holds 198.18.0.10:80
    assert "another service" in field_errors(r.text)["redirect_http"]
    del form["redirect_http"]
    r = browser.post("/services/new", data={**form, "certificate": "www"})
    assert r.status_code == 303, r.text
    vs = unit.document["virtual_service"][1]
    assert (vs["type"], vs["certificate"], vs["hsts"], vs["redirect_http"]) == (
        "https",
        ["www"],
        600,
        False,
    )
    edit = browser.get("/services/site/edit").text
    assert 'name="certificate" value="www"' in edit
    r = browser.post("/certificates/www/delete", data={"csrf": browser.csrf})
    assert r.status_code == 409 and "used by site" in r.text


def test_the_service_form_edits_content_rules_and_pools_as_toml(browser, unit):
    content = """
[[pool]]
name = "api"
real_server = [{address = "198.18.2.103", port = 8080}]

[[rule]]
path_prefix = ["/api/"]
pool = "nope"
"""
    form = {
        "csrf": browser.csrf,
        "name": "app",
        "address": "198.18.0.10",
        "port": "8080",
        "type": "http",
        "real_servers": "198.18.2.101:80",
        "content": content,
    }
    r = browser.post("/services/new", data=form)
    assert r.status_code == 422
    assert "rule[0].pool: no pool" in field_errors(r.text)["content"]
    r = browser.post("/services/new", data={**form, "content": "[x]\na = 1"})
    assert r.status_code == 422 and "only [[pool]] and [[rule]]" in field_errors(r.text)["content"]
    r = browser.post("/services/new", data={**form, "content": content.replace("nope", "api")})
    assert r.status_code == 303, r.text
    vs = unit.document["virtual_service"][1]
    assert vs["rule"][0]["pool"] == "api" and vs["pool"][0]["real_server"][0]["port"] == 8080
    page = browser.get("/services").text
    assert 'data-pool="api"' in page and "1 content rule" in page
    edit = browser.get("/services/app/edit").text  # shown back without the defaults
    assert "path_prefix = [&#34;/api/&#34;]" in edit and "redirect_code" not in edit


def test_statistics_page_and_api_show_the_rings(browser, rest, unit):
    unit.stats.add(100.0, {"web": {"connections": 0.0}, "web/198.18.2.101:80": {"up": 1.0}})
    unit.stats.add(105.0, {"web": {"connections": 50.0}, "web/198.18.2.101:80": {"up": 1.0}})
    data = rest.get("/api/v1/stats", params={"key": "web"}).json()
    assert data["step"] == 5.0 and data["series"]["web"] == [[105.0, {"connections": 10.0}]]
    latest = rest.get("/api/v1/stats").json()["latest"]
    assert latest == {"web": {"connections": 10.0}, "web/198.18.2.101:80": {"up": 1.0}}
    assert rest.get("/api/v1/stats", params={"range": "7d"}).status_code == 422
    page = browser.get("/stats").text
    assert 'data-vs="web"' in page and "new connections/s" in page and "<svg" in page
    assert 'data-server="web/198.18.2.101:80"' in page and 'id="ha-timeline"' in page


def test_a_service_with_pools_and_rules_round_trips_through_the_rest_api(rest, unit):
    """The API's service body is dumped whole (defaults too) into the document: an unset
    rule header ("") must pass there as it does when left out."""
    vs = {
        **VS,
        "type": "http",
        "pool": [{"name": "api", "real_server": [{"address": "198.18.2.102", "port": 80}]}],
        "rule": [
            {"host": ["api.lab.test"], "pool": "api"},
            {"path_prefix": ["/old/"], "redirect": "/new/"},
        ],
    }
    r = rest.post("/api/v1/virtual-services", json=vs)
    assert r.status_code == 201, r.text
    got = rest.get(f"/api/v1/virtual-services/{VS['name']}").json()
    assert [r_["pool"] for r_ in got["rule"]] == ["api", ""] and got["pool"][0]["name"] == "api"
    r = rest.put(f"/api/v1/virtual-services/{VS['name']}", json={**vs, "rule": [{"pool": "gone"}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rule", 0, "pool"]
