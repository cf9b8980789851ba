"""The WUI's pure parts: password hashes, Basic headers, sessions, CSRF, the login limiter,
the peer token, forms and the pair's icons."""

from __future__ import annotations

import base64

import pytest

from carpool.config.document import DocumentError, Problem, parse_document
from carpool.web.auth import (
    LoginLimiter,
    Sessions,
    csrf_ok,
    fixed_salt_hash,
    hash_password,
    parse_basic,
    peer_token,
    peer_token_ok,
    verify_password,
)
from carpool.web.forms import FormErrors, vs_from_form, vs_problems
from carpool.web.view import icon, pair


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_password_hash_verifies_only_the_password():
    h = hash_password("s3cret")
    assert h.startswith("$argon2id$") and "s3cret" not in h
    users = {"admin": h}
    assert verify_password(users, "admin", "s3cret")
    assert not verify_password(users, "admin", "S3cret")
    assert not verify_password(users, "root", "s3cret")
    assert not verify_password({"admin": "not a hash"}, "admin", "s3cret")
    with pytest.raises(ValueError):
        hash_password("")


def test_fixed_salt_hash_is_reproducible_and_verifiable():
    a, b = (
        fixed_salt_hash("carpool-lab", b"some-salt-16byte"),
        fixed_salt_hash("carpool-lab", b"some-salt-16byte"),
    )
    assert a == b
    assert verify_password({"admin": a}, "admin", "carpool-lab")


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Basic " + base64.b64encode(b"admin:pa:ss").decode(), ("admin", "pa:ss")),
        ("basic " + base64.b64encode(b"admin:").decode(), ("admin", "")),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        (None, None),
        ("", None),
    ],
)
def test_parse_basic(header, expected):
    assert parse_basic(header) == expected


def test_sessions_expire_and_end_per_user():
    clock = Clock()
    sessions = Sessions(lifetime=60, clock=clock)
    token, session = sessions.create("admin")
    other, _ = sessions.create("bob")
    assert sessions.get(token) is session and sessions.get("forged") is None
    assert (
        csrf_ok(session, session.csrf)
        and not csrf_ok(session, "")
        and not csrf_ok(session, None)
        and not csrf_ok(session, session.csrf + "x")
    )
    sessions.drop_user("admin")
    assert sessions.get(token) is None and sessions.get(other) is not None
    clock.now += 61
    assert sessions.get(other) is None


def test_login_limiter_blocks_an_address_after_failures_then_forgives():
    clock = Clock()
    limiter = LoginLimiter(failures=3, window=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("198.18.0.100") == 0
        limiter.failed("198.18.0.100")
    assert limiter.retry_after("198.18.0.100") == pytest.approx(60)
    assert limiter.retry_after("198.18.0.101") == 0  # per source address
    clock.now += 30
    assert limiter.retry_after("198.18.0.100") == pytest.approx(30)
    clock.now += 30.001
    assert limiter.retry_after("198.18.0.100") == 0


def test_peer_token_needs_the_secret_and_a_fresh_time():
    key = b"unit-test-secret"
    token = peer_token(key, now=5000)
    assert peer_token_ok(key, token, now=5010)
    assert not peer_token_ok(b"not-the-pair-secret", token, now=5010)
    assert not peer_token_ok(key, token, now=5000 + 61)
    assert not peer_token_ok(key, None) and not peer_token_ok(key, "x:y")


DOC = {
    "interface": [
        {
            "name": "eth0",
            "first": "198.18.0.11",
            "second": "198.18.0.12",
            "shared": ["198.18.0.10/24"],
        }
    ]
}


def test_vs_form_converts_text_and_names_bad_fields():
    vs = vs_from_form(
        {
            "name": "web",
            "address": "198.18.0.10",
            "port": "80",
            "real_servers": "198.18.2.101:80\n\n198.18.2.102:8080 5\n",
        }
    )
    assert vs["port"] == 80 and vs["persistence"] == 0
    assert vs["real_server"] == [
        {"address": "198.18.2.101", "port": 80},
        {"address": "198.18.2.102", "port": 8080, "weight": 5},
    ]
    parse_document({**DOC, "virtual_service": [vs]})  # what the form makes is a valid service
    with pytest.raises(FormErrors) as e:
        vs_from_form(
            {
                "name": "web",
                "address": "198.18.0.10",
                "port": "eighty",
                "real_servers": "198.18.2.101",
            }
        )
    assert set(e.value.errors) == {"port", "real_servers"}


def test_document_problems_land_next_to_their_field():
    bad = vs_from_form(
        {
            "name": "web",
            "address": "198.18.0.99",
            "port": "70000",
            "real_servers": "198.18.2.101:80",
        }
    )
    with pytest.raises(DocumentError) as e:
        parse_document({**DOC, "virtual_service": [bad]})
    errors = vs_problems(e.value.problems, 0)
    assert "port" in errors and "65535" in errors["port"][0]
    assert vs_problems(
        [
            Problem(("virtual_service", 0, "address"), "not shared"),
            Problem(("ha", "vhid"), "bad"),
            Problem(("virtual_service", 0, "real_server", 1, "port"), "too big"),
        ],
        0,
    ) == {"address": ["not shared"], "general": ["ha.vhid: bad"], "real_servers": ["too big"]}


@pytest.mark.parametrize(
    "mine, theirs, expected",
    [
        ({"state": "master"}, {"state": "backup"}, "active"),
        ({"state": "master"}, {"state": "master"}, "master-master"),
        ({"state": "master"}, None, "active"),
        ({"state": "backup", "reason": "198.18.0.11 beats us"}, {"state": "master"}, "standby"),
        ({"state": "backup", "reason": "forced failover by admin"}, None, "standby"),
        ({"state": "backup", "pacified": "restarted 4 times in 5 min"}, None, "pacified"),
        (
            {
                "state": "master",
                "warnings": ["master-master: the partner is active too"],
                "warning_kinds": ["master-master"],
            },
            None,
            "master-master",
        ),
        ({"state": "init"}, {"state": "master"}, "not-operational"),
        (None, {"state": "master"}, "not-operational"),
    ],
)
def test_icons(mine, theirs, expected):
    assert icon(mine, theirs) == expected


def test_pair_lists_the_first_unit_first_with_urls():
    units = pair(
        {"role": "second", "state": "backup", "reason": ""},
        "https://b/",
        {"url": "https://a/", "status": {"role": "first", "state": "master"}},
    )
    assert [(u["role"], u["icon"], u["url"], u["this"]) for u in units] == [
        ("first", "active", "https://a/", False),
        ("second", "standby", "https://b/", True),
    ]


def test_web_table_is_local_with_defaults_and_checked():
    from carpool.config.ha import ConfigError, parse_config

    base = {"unit": {"role": "second", "secret": "unit-test-secret", "state_dir": "/tmp/x"}, **DOC}
    cfg = parse_config(base)
    assert (cfg.web.enabled, cfg.web_bind, cfg.web.port) == (True, "198.18.0.12", 443)
    assert cfg.web_cert == "/tmp/x/web/cert.pem" and cfg.partner_url == "https://198.18.0.11/"
    cfg = parse_config({**base, "web": {"port": 8443, "bind": "0.0.0.0"}})
    assert cfg.partner_url == "https://198.18.0.11:8443/" and cfg.web_bind == "0.0.0.0"
    assert "web" not in cfg.document.model_dump()  # never synced
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "web": {"port": 0, "bind": "nowhere", "colour": "red"}})
    assert all(k in str(e.value) for k in ("web.port", "web.bind", "web.colour"))


def test_haproxy_show_stat_parses():
    from carpool.dataplane.haproxy import parse_show_stat

    rows = parse_show_stat("# pxname,svname,scur,stot,bout\nfe_web,FRONTEND,1,7,900\n\n")
    assert rows == [
        {"pxname": "fe_web", "svname": "FRONTEND", "scur": "1", "stot": "7", "bout": "900"}
    ]
    assert parse_show_stat("") == [] and parse_show_stat("Unknown command") == []


def test_pair_names_each_unit_by_units_name_else_its_role():
    named = pair(
        {"role": "first", "name": "lb-east", "partner_name": "lb-west", "state": "master"},
        "https://a/",
        {"url": "https://b/", "status": None, "error": "unreachable"},
    )
    assert [(u["role"], u["name"]) for u in named] == [("first", "lb-east"), ("second", "lb-west")]
    plain = pair({"role": "second", "state": "backup"}, "https://b/", {"url": "https://a/"})
    assert [u["name"] for u in plain] == ["first", "second"]
