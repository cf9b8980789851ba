"""config/edit.py: each operation, each typed error, compare-and-set, inputs never changed, and
the JSON both cross the control socket in."""

from __future__ import annotations

import copy

import pytest

from carpool.config import edit as E
from carpool.config.document import Problem, parse_document

VS = {
    "name": "web",
    "address": "198.18.0.10",
    "port": 80,
    "real_server": [
        {"address": "198.18.2.101", "port": 80},
        {"address": "198.18.2.102", "port": 80, "weight": 2},
    ],
}
# well-formed argon2id hashes (the document checks the form and the costs, not the password)
OLD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$vjwApBddXvtWmIgFyECOpQ$TG3F6SNbh6kZyZVOpRVL7L6I0BCOcnOsvr+iC0KDEys"
HASH = "$argon2id$v=19$m=65536,t=3,p=4$gM1PWOCzGmdr+dJwQkYkTA$oCtS6BxdTZcWiTQULGgvuaBrTYPJMP7ZcFpRhcV/WNs"
DOC = {
    "interface": [
        {
            "name": "eth0",
            "first": "198.18.0.11",
            "second": "198.18.0.12",
            "shared": ["198.18.0.10/24"],
        },
        {"name": "eth0.100", "first": "10.0.0.1", "second": "10.0.0.2"},
    ],
    "virtual_service": [VS],
    "user": [{"name": "admin", "password_hash": OLD_HASH}],
}


def applied(op: E.Op, doc: dict = DOC) -> dict:
    """op applied to a copy; asserts the input is left as it was, and the result is valid."""
    before = copy.deepcopy(doc)
    out = op.apply(doc)
    assert doc == before and out is not doc
    parse_document(out)
    return out


def servers(doc: dict, n: int = 0) -> list[tuple]:
    return [
        (r["address"], r["port"], r.get("weight", 1), r.get("enabled", True))
        for r in doc["virtual_service"][n]["real_server"]
    ]


# -- operations ----------------------------------------------------------------------------
def test_add_virtual_service_appends_a_copy():
    service = {"name": "shop", "address": "198.18.0.10", "port": 443}
    op = E.AddVirtualService(service)
    out = applied(op)
    assert [v["name"] for v in out["virtual_service"]] == ["web", "shop"]
    out["virtual_service"][1]["port"] = 1  # the result shares nothing with the operation
    assert op.service["port"] == 443
    assert op.subject(DOC) == ("virtual_service", 1)
    assert applied(op, {"interface": DOC["interface"]})["virtual_service"][0]["name"] == "shop"


def test_replace_set_and_remove_virtual_service():
    out = applied(E.ReplaceVirtualService("web", {**VS, "name": "www", "scheduler": "sh"}))
    assert [(v["name"], v["scheduler"]) for v in out["virtual_service"]] == [("www", "sh")]
    out = applied(E.SetVirtualService("web", "check.type", "https"))
    assert out["virtual_service"][0]["check"] == {"type": "https"}
    out = applied(E.SetVirtualService("web", "persistence", 300))
    assert out["virtual_service"][0]["persistence"] == 300
    assert E.SetVirtualService("web", "port", 81).subject(DOC) == ("virtual_service", 0)
    assert applied(E.RemoveVirtualService("web"))["virtual_service"] == []


def test_real_server_operations():
    out = applied(E.AddRealServer("web", {"address": "198.18.2.103", "port": 80, "weight": 3}))
    assert servers(out)[-1] == ("198.18.2.103", 80, 3, True)
    assert E.AddRealServer("web", {"address": "198.18.2.103", "port": 80}).subject(DOC) == (
        "virtual_service",
        0,
        "real_server",
        2,
    )
    out = applied(
        E.ReplaceRealServer("web", "198.18.2.102", 80, {"address": "198.18.2.102", "port": 8080})
    )
    assert servers(out)[1] == ("198.18.2.102", 8080, 1, True)
    out = applied(E.SetRealServer("web", "198.18.2.101", 80, "enabled", False))
    assert servers(out)[0] == ("198.18.2.101", 80, 1, False)
    assert E.SetRealServer("web", "198.18.2.102", 80, "weight", 7).subject(DOC) == (
        "virtual_service",
        0,
        "real_server",
        1,
    )
    out = applied(E.RemoveRealServer("web", "198.18.2.101", 80))
    assert servers(out) == [("198.18.2.102", 80, 2, True)]


def test_set_password_changes_a_user_or_adds_one():
    out = applied(E.SetPassword("admin", HASH))
    assert out["user"] == [{"name": "admin", "password_hash": HASH}]
    out = applied(E.SetPassword("ops", HASH))
    assert [u["name"] for u in out["user"]] == ["admin", "ops"]


@pytest.mark.parametrize(
    "key, value, path, expected",
    [
        ("appliance.description", "rack 4", ("appliance", "description"), "rack 4"),
        ("ha.vhid", 12, ("ha", "vhid"), 12),
        (
            "interface[eth0].ping_target",
            "198.18.0.1",
            ("interface", 0, "ping_target"),
            "198.18.0.1",
        ),
        ("interface[1].check", False, ("interface", 1, "check"), False),
        ("interface[eth0.100].check", False, ("interface", 1, "check"), False),  # a dot in a name
        (
            "virtual_service[web].real_server[198.18.2.102:80].weight",
            5,
            ("virtual_service", 0, "real_server", 1, "weight"),
            5,
        ),
        (
            "user",
            [{"name": "root", "password_hash": HASH}],
            ("user",),
            [{"name": "root", "password_hash": HASH}],
        ),
    ],
)
def test_set_key(key, value, path, expected):
    node = applied(E.SetKey(key, value))
    for step in path:
        node = node[step]
    assert node == expected


def test_set_key_without_a_value_removes_it_so_the_default_applies():
    doc = applied(E.SetKey("ha.vhid", 7))
    assert "vhid" not in applied(E.SetKey("ha.vhid"), doc)["ha"]


def test_an_edit_applies_every_operation_in_order_or_none():
    edit = E.Edit((E.SetKey("ha.vhid", 3), E.SetVirtualService("web", "port", 81)))
    out = edit.apply(DOC, version=4)
    assert out["ha"]["vhid"] == 3 and out["virtual_service"][0]["port"] == 81
    with pytest.raises(E.NotFound):
        E.Edit((E.SetKey("ha.vhid", 3), E.RemoveVirtualService("nope"))).apply(DOC, 4)
    assert "ha" not in DOC
    assert edit.describe() == "set ha.vhid, vs set web port"


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op, key",
    [
        (E.ReplaceVirtualService("nope", VS), "virtual_service[nope]"),
        (E.SetVirtualService("nope", "port", 1), "virtual_service[nope]"),
        (E.RemoveVirtualService("nope"), "virtual_service[nope]"),
        (E.AddRealServer("nope", {"address": "198.18.2.1", "port": 80}), "virtual_service[nope]"),
        (
            E.ReplaceRealServer("web", "198.18.2.109", 80, {}),
            "virtual_service[web].real_server[198.18.2.109:80]",
        ),
        (
            E.SetRealServer("web", "198.18.2.101", 81, "weight", 1),
            "virtual_service[web].real_server[198.18.2.101:81]",
        ),
        (
            E.RemoveRealServer("web", "198.18.2.109", 80),
            "virtual_service[web].real_server[198.18.2.109:80]",
        ),
        (E.SetKey("interface[eth9].check", True), "interface[eth9]"),
        (E.SetKey("interface[7].check", True), "interface[7]"),
    ],
)
def test_not_found_names_the_key(op, key):
    with pytest.raises(E.NotFound) as e:
        op.apply(DOC)
    assert e.value.key == key


def test_not_found_service_lists_the_services():
    with pytest.raises(E.NotFound, match=r"no virtual service 'nope' \(there are: web\)"):
        E.RemoveVirtualService("nope").apply(DOC)


@pytest.mark.parametrize(
    "op, key",
    [
        (E.AddVirtualService({**VS, "port": 81}), "virtual_service[web]"),
        (
            E.AddRealServer("web", {"address": "198.18.2.101", "port": 80, "weight": 9}),
            "virtual_service[web].real_server[198.18.2.101:80]",
        ),
    ],
)
def test_already_exists(op, key):
    with pytest.raises(E.AlreadyExists) as e:
        op.apply(DOC)
    assert e.value.key == key


@pytest.mark.parametrize(
    "op, loc, words",
    [
        (E.SetKey("interface[eth0]", {}), ("interface", 0), "not the whole item"),
        (E.SetKey("ha.vhid.x", 1), ("ha", "vhid"), "cannot be set inside it"),
        (E.SetKey("ha[0].x", 1), ("ha",), "not a list"),
        (E.SetKey("ha..vhid", 1), (), "no dotted key"),
        (E.SetKey("", 1), (), "no dotted key"),
        (
            E.SetVirtualService("web", "port.x", 1),
            ("virtual_service", 0, "port"),
            "a value, not a table",
        ),
        (E.SetPassword("admin", "clear text"), ("user",), "argon2"),
    ],
)
def test_invalid_names_the_place(op, loc, words):
    with pytest.raises(E.Invalid) as e:
        op.apply(copy.deepcopy(DOC) | {"ha": {"vhid": 1}})
    [problem] = e.value.problems
    assert problem.loc == loc and words in problem.why
    assert e.value.key == problem.key and e.value.message.startswith(E.INVALID)


def test_compare_and_set():
    edit = E.Edit((E.SetKey("ha.vhid", 9),), expect_version=4)
    assert edit.apply(DOC, version=4)["ha"]["vhid"] == 9
    with pytest.raises(E.Conflict) as e:
        edit.apply(DOC, version=5)
    assert (e.value.expected_version, e.value.current_version) == (4, 5)
    assert e.value.key == "expect_version" and "nothing changed" in e.value.message
    assert E.Edit((E.SetKey("ha.vhid", 9),)).apply(DOC, version=5)["ha"]["vhid"] == 9


def test_no_operation_changes_its_input():
    ops = [
        E.AddVirtualService({"name": "x", "address": "198.18.0.10", "port": 1}),
        E.ReplaceVirtualService("web", {**VS, "port": 2}),
        E.SetVirtualService("web", "check.path", "/health"),
        E.RemoveVirtualService("web"),
        E.AddRealServer("web", {"address": "198.18.2.9", "port": 9}),
        E.ReplaceRealServer("web", "198.18.2.101", 80, {"address": "198.18.2.9", "port": 9}),
        E.SetRealServer("web", "198.18.2.101", 80, "weight", 4),
        E.RemoveRealServer("web", "198.18.2.101", 80),
        E.SetPassword("admin", HASH),
        E.SetKey("interface[eth0].check", False),
        E.AddCertificate("www", "CHAIN", "KEY"),
        E.ReplaceCertificate("ca", "RENEWED"),
        E.RemoveCertificate("ca"),
    ]
    assert {type(op) for op in ops} == set(E.OPS.values())
    doc = {**DOC, "certificate": [{"name": "ca", "chain": "CHAIN"}]}
    frozen = copy.deepcopy(doc)
    for op in ops:
        out = op.apply(doc)
        assert frozen == doc, op
        assert out != doc, op
    assert "KEY" not in repr(E.AddCertificate("www", "CHAIN", "KEY"))  # logs never show it


# -- on the wire ---------------------------------------------------------------------------
def test_operations_round_trip_through_json():
    edit = E.Edit(
        (
            E.AddVirtualService(VS),
            E.SetRealServer("web", "198.18.2.101", 80, "enabled", False),
            E.SetKey("ha.vhid"),
        ),
        expect_version=3,
    )
    assert E.Edit.from_json(edit.to_json()) == edit


@pytest.mark.parametrize(
    "data, loc",
    [
        ({"ops": []}, ("ops",)),
        ({"ops": [{"op": "vs.explode"}]}, ("op",)),
        ({"ops": [{"op": "vs.remove", "name": "web", "force": True}]}, ("force",)),
        ({"ops": [{"op": "rs.remove", "service": "web", "address": "198.18.2.101"}]}, ("port",)),
        ({"ops": [{"op": "rs.remove", "service": "web", "address": "x", "port": "80"}]}, ("port",)),
        ({"ops": [{"op": "vs.add", "service": "web"}]}, ("service",)),
        ({"ops": [{"op": "vs.remove", "name": "web"}], "expect_version": "3"}, ("expect_version",)),
    ],
)
def test_a_malformed_request_is_invalid(data, loc):
    with pytest.raises(E.Invalid) as e:
        E.Edit.from_json(data)
    assert e.value.problems[0].loc == loc


@pytest.mark.parametrize(
    "error",
    [
        E.NotFound("virtual_service[x]", "no virtual service 'x'"),
        E.AlreadyExists("virtual_service[x]", "exists"),
        E.Invalid(
            [Problem(("virtual_service", 1, "port"), "too big"), Problem((), "and more")],
            subject=("virtual_service", 1),
        ),
        E.Conflict(3, 4),
        E.Standby("this unit is the standby", "198.18.0.11"),
        E.Refused("", "cannot store"),
    ],
)
def test_errors_round_trip_through_json(error):
    back = E.error_of(error.to_json())
    assert type(back) is type(error) and back.key == error.key and back.message == error.message
    assert vars(back) == vars(error)


def test_an_answer_without_a_known_code_is_refused_and_a_success_is_no_error():
    assert E.error_of({"version": 3}) is None
    for answer in (
        {"error": "status failed: boom"},
        {"error": "x", "code": "new-kind"},
        {"error": "x", "code": "conflict"},
    ):  # a conflict without its versions
        error = E.error_of(answer)
        assert type(error) is E.Refused and error.message == answer["error"]


@pytest.mark.parametrize(
    "bad, later, loc",
    [
        ("x", E.AddVirtualService({**VS, "name": "new"}), ("virtual_service",)),
        ("x", E.RemoveVirtualService("web"), ("virtual_service",)),
        (["x"], E.RemoveVirtualService("web"), ("virtual_service", 0)),
        ({"real_server": "x"}, E.AddRealServer("web", {"address": "198.18.2.103"}), None),
    ],
)
def test_an_operation_after_a_malformed_one_is_invalid_not_a_crash(bad, later, loc):
    """An earlier step may leave virtual_service (or a service's real_server) malformed: the
    later step names the place (Invalid), it does not raise AttributeError/TypeError."""
    if isinstance(bad, dict):  # the service itself keeps its name, its servers go bad
        first: E.Op = E.SetVirtualService("web", "real_server", bad["real_server"])
        loc = ("virtual_service", 0, "real_server")
    else:
        first = E.SetKey("virtual_service", bad)
    with pytest.raises(E.Invalid) as e:
        E.Edit((first, later)).apply(DOC, version=4)
    assert tuple(e.value.problems[0].loc) == loc
