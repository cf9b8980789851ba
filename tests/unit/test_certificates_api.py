"""Certificates through the REST API and `config` (issue 15, point 1): upload, list, renew,
remove; the private key never comes back (API, config show, diff), a document sent back with
the key's digest keeps the stored key, an expired certificate is refused at upload naming the
key, a certificate in use cannot be removed."""

from __future__ import annotations

import pytest
from edits import DOC, Unit, unit_view
from fastapi.testclient import TestClient

from carpool.lab.pki import LabCA
from carpool.web.app import create_app
from carpool.web.auth import hash_password
from carpool.web.context import WebContext

AUTH = ("admin", "right-password")
CA = LabCA()
WWW = CA.issue("www.example.test", "198.18.0.10")
RENEWED = CA.issue("www.example.test", "198.18.0.10", days=365)
HTTPS = {
    "name": "site",
    "address": "198.18.0.10",
    "port": 443,
    "type": "https",
    "certificate": ["www"],
    "real_server": [{"address": "198.18.2.101", "port": 80}],
}


@pytest.fixture
def unit(tmp_path) -> Unit:
    users = [{"name": "admin", "password_hash": hash_password(AUTH[1])}]
    return Unit(tmp_path / "store", {**DOC, "user": users})


@pytest.fixture
def rest(unit):
    ctx = WebContext(unit_view(unit))

    async def no_partner() -> dict:
        return {"url": "https://198.18.0.12/", "status": None, "error": "not asked"}

    ctx.partner.get = no_partner
    with TestClient(create_app(ctx), base_url="https://testserver") as c:
        c.auth = AUTH
        yield c


def no_key_in(text: str) -> bool:
    return "PRIVATE KEY" not in text and WWW.key.splitlines()[1] not in text


def test_upload_list_use_renew_and_remove(rest, unit):
    r = rest.post("/api/v1/certificates", json={"name": "www", "chain": WWW.chain, "key": WWW.key})
    assert r.status_code == 201, r.text
    [row] = rest.get("/api/v1/certificates").json()
    assert row["name"] == "www" and row["names"] == ["www.example.test", "198.18.0.10"]
    assert row["state"] == "ok" and 88 < row["days_left"] < 90 and row["key"].startswith("(stored)")
    assert unit.document["certificate"][0]["key"] == WWW.key  # stored as uploaded
    assert rest.post("/api/v1/virtual-services", json=HTTPS).status_code == 201
    assert rest.get("/api/v1/certificates/www").json()["used_by"] == ["site"]
    # renewed with the same key: the key is not sent again
    r = rest.put("/api/v1/certificates/www", json={"chain": RENEWED.leaf + CA.pem})
    assert r.status_code == 422  # another key: the renewal's key must come with it
    assert r.json()["detail"][0]["msg"].startswith("is not the key of the chain's first")
    r = rest.put("/api/v1/certificates/www", json={"chain": RENEWED.chain, "key": RENEWED.key})
    assert r.status_code == 200, r.text
    assert rest.get("/api/v1/certificates/www").json()["days_left"] > 360
    r = rest.delete("/api/v1/certificates/www")
    assert r.status_code == 400 and "used by site" in r.json()["detail"]
    assert rest.delete("/api/v1/virtual-services/site").status_code == 200
    assert rest.delete("/api/v1/certificates/www").status_code == 200
    assert rest.get("/api/v1/certificates").json() == []


def test_the_key_never_comes_back_and_a_shown_document_keeps_it(rest, unit):
    rest.post("/api/v1/certificates", json={"name": "www", "chain": WWW.chain, "key": WWW.key})
    rest.post("/api/v1/virtual-services", json=HTTPS)
    shown = rest.get("/api/v1/config").json()
    assert no_key_in(str(shown)), "config show returned the private key"
    diff = rest.get("/api/v1/config/diff", params={"a": 1}).json()
    assert no_key_in(str(diff)) and any("certificate[www].key" in line for line in diff["diff"])
    document = shown["document"]
    document["appliance"]["description"] = "edited from config show"
    r = rest.put("/api/v1/config", json={"document": document})
    assert r.status_code == 200, r.text
    assert unit.document["certificate"][0]["key"] == WWW.key  # kept, not the digest
    document["certificate"][0]["key"] = "(stored) sha256:0000000000000000"
    r = rest.put("/api/v1/config", json={"document": document})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "certificate", 0, "key"]


def test_an_expired_or_broken_upload_is_refused_naming_the_key(rest, unit):
    old = CA.issue("old.example.test", days=1, start_days=-2)
    r = rest.post("/api/v1/certificates", json={"name": "old", "chain": old.chain, "key": old.key})
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert problem["loc"] == ["body", "chain"] and problem["msg"].startswith("old: expired on")
    r = rest.post("/api/v1/certificates", json={"name": "x", "chain": WWW.chain, "key": old.key})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "key"]
    assert unit.version == 1  # nothing stored
