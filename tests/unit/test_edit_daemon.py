"""Edits applied in the daemon (config.edit: compare-and-set, concurrent editors, typed refusals)
and the CLI's `vs`, `rs`, `passwd`, `config set` sending them, with exit codes by error type."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import pytest
from edits import Unit

from carpool import cli
from carpool.config import edit as E
from carpool.web.auth import verify_password


@pytest.fixture
def unit(tmp_path) -> Unit:
    return Unit(tmp_path / "store")


def add(name: str, port: int) -> dict:
    return E.Edit(
        (E.AddVirtualService({"name": name, "address": "198.18.0.10", "port": port}),)
    ).to_json()


# -- the daemon ----------------------------------------------------------------------------
def test_two_editors_adding_at_once_both_land(unit):
    """Each edit is applied to whatever is current when its turn comes (the old CLI sent back
    the document it had read: the second add removed the first)."""

    async def both():
        return await asyncio.gather(
            *(unit.config.edit({**add(f"s{n}", 81 + n), "who": "t"}) for n in range(5))
        )

    answers = asyncio.run(both())
    assert all("error" not in a for a in answers), answers
    assert sorted(a["version"] for a in answers) == [2, 3, 4, 5, 6]
    assert [v["name"] for v in unit.document["virtual_service"]] == [
        "web",
        "s0",
        "s1",
        "s2",
        "s3",
        "s4",
    ]


def test_expect_version_is_compare_and_set(unit):
    answer = unit.call("config.edit", **{**add("a", 81), "expect_version": unit.version})
    assert answer["version"] == 2
    before = unit.document
    answer = unit.call("config.edit", **{**add("b", 82), "expect_version": 1})
    error = E.error_of(answer)
    assert isinstance(error, E.Conflict) and (error.expected_version, error.current_version) == (
        1,
        2,
    )
    assert unit.document == before and unit.version == 2


def test_refusals_are_typed_and_change_nothing(unit):
    cases = [
        (add("web", 81), E.AlreadyExists),
        (E.Edit((E.RemoveVirtualService("nope"),)).to_json(), E.NotFound),
        (add("bad", 0), E.Invalid),
        ({"ops": [{"op": "vs.explode"}]}, E.Invalid),
    ]
    for request, kind in cases:
        assert isinstance(E.error_of(unit.call("config.edit", **request)), kind), request
    assert isinstance(E.error_of(unit.call("config.rollback", version=99)), E.NotFound)
    assert isinstance(E.error_of(unit.call("config.diff", b=99)), E.NotFound)
    assert isinstance(E.error_of(unit.call("config.apply", document={"unit": {}})), E.Refused)
    unit.active = False
    error = E.error_of(unit.call("config.edit", **add("c", 83)))
    assert isinstance(error, E.Standby) and "standby" in error.message
    assert error.active == "198.18.0.12" and "198.18.0.12" in error.message
    assert unit.version == 1


def test_a_document_problem_is_placed_relative_to_the_edited_item(unit):
    error = E.error_of(
        unit.call(
            "config.edit",
            **E.Edit(
                (E.AddVirtualService({"name": "x", "address": "198.18.0.99", "port": 81}),)
            ).to_json(),
        )
    )
    assert isinstance(error, E.Invalid) and error.subject == ("virtual_service", 1)
    assert [p.loc for p in error.problems] == [("virtual_service", 1, "address")]
    assert "is not a shared address" in error.message


def test_config_set_is_one_set_key_and_history_names_who(unit):
    answer = unit.call("config.set", key="appliance.description", value="rack 4", who="chaos")
    assert answer["what"] == ["appliance.description"]
    assert unit.store.history()[-1].who == "chaos: set appliance.description"
    error = E.error_of(unit.call("config.set", key="ha.vhid", value=300))
    assert isinstance(error, E.Invalid) and error.problems[0].loc == ("ha", "vhid")
    assert "ha.vhid: must be <= 255" in error.message


# -- the CLI -------------------------------------------------------------------------------
@pytest.fixture
def carpool(unit, monkeypatch, capsys):
    """Runs `carpool ARGS` against the unit; returns (exit status, stdout, stderr)."""
    from carpool.node import control

    monkeypatch.setattr(cli, "_load", lambda _args: SimpleNamespace(socket_path="unit.sock"))
    monkeypatch.setattr(
        control,
        "request",
        lambda _path, command, timeout=3.0, **fields: unit.call(command, **fields),
    )

    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_vs_and_rs_commands_send_operations(carpool, unit):
    assert carpool("vs", "add", "extra", "198.18.0.10", "81")[0] == 0
    assert carpool("rs", "add", "extra", "198.18.2.101:80", "--weight", "2")[0] == 0
    assert carpool("rs", "disable", "extra", "198.18.2.101:80")[0] == 0
    assert carpool("rs", "set", "extra", "198.18.2.101:80", "weight", "3")[0] == 0
    code, out, _ = carpool("vs", "set", "extra", "check.type", "https")
    assert code == 0 and "virtual_service[extra].check.type" in out
    vs = unit.document["virtual_service"][1]
    assert (
        vs["check"]["type"],
        vs["real_server"][0]["weight"],
        vs["real_server"][0]["enabled"],
    ) == ("https", 3, False)
    assert unit.store.history()[-1].who.endswith(": vs set extra check.type")
    code, out, _ = carpool("vs", "list")
    assert code == 0 and "extra: 198.18.0.10:81/tcp" in out and "disabled" in out
    assert carpool("rs", "rm", "extra", "198.18.2.101:80")[0] == 0
    assert carpool("vs", "rm", "extra")[0] == 0
    assert [v["name"] for v in unit.document["virtual_service"]] == ["web"]


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (("vs", "add", "nope", "198.18.0.99", "81"), 2, "is not a shared address"),
        (("config", "set", "ha.vhid", "300"), 2, "ha.vhid: must be <= 255"),
        (("vs", "rm", "nope"), 3, "no virtual service 'nope' (there are: web)"),
        (("vs", "show", "nope"), 3, "no virtual service 'nope'"),
        (("rs", "rm", "web", "198.18.2.109:80"), 3, "web has no real server 198.18.2.109:80"),
        (("config", "rollback", "99"), 3, "version 99 is not in the history"),
        (("vs", "add", "web", "198.18.0.10", "81"), 4, "exists already"),
        (("rs", "add", "web", "198.18.2.101:80"), 4, "web has 198.18.2.101:80 already"),
        (("vs", "rm", "web", "--expect-version", "7"), 5, "expected version 7, current is 1"),
    ],
)
def test_exit_status_by_error_type(carpool, unit, argv, code, words):
    got, _, err = carpool(*argv)
    assert (got, words in err) == (code, True), err
    assert unit.version == 1


def test_the_standby_refuses_with_status_1_naming_the_active_unit(carpool, unit):
    unit.active = False
    for argv in (("config", "set", "appliance.description", "x"), ("vs", "rm", "web")):
        code, _, err = carpool(*argv)
        assert code == 1 and "standby" in err and "198.18.0.12" in err
    code, _, err = carpool("passwd", "--password-stdin", stdin="long-enough\n")
    assert code == 1 and "standby" in err


def test_passwd_hashes_here_and_sets_the_user(carpool, unit):
    assert carpool("passwd", "--password-stdin", stdin="short\n")[0] == 1
    assert carpool("passwd", "ops", "--password-stdin", stdin="new-secret-1\n")[0] == 0
    users = {u["name"]: u["password_hash"] for u in unit.document["user"]}
    assert verify_password(users, "ops", "new-secret-1")
    assert unit.store.history()[-1].who.endswith(": passwd ops")


def test_exit_code_table():
    assert cli.exit_code(E.Invalid([])) == 2
    assert cli.exit_code(E.NotFound("k", "m")) == 3
    assert cli.exit_code(E.AlreadyExists("k", "m")) == 4
    assert cli.exit_code(E.Conflict(1, 2)) == 5
    assert cli.exit_code(E.Standby("m")) == 1 and cli.exit_code(E.Refused("", "m")) == 1
