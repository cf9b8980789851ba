"""The receive path never raises: every decoder of untrusted bytes (doctor probes, sync frames,
control requests, config values) turns any input into its one typed error."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import httpx
import pytest
from edits import Unit
from hypothesis import given, settings
from hypothesis import strategies as st

from carpool import untrusted
from carpool.config.document import DocumentError, parse_document
from carpool.ha import probe
from carpool.node import control
from carpool.web.partner import PartnerView

KEY = probe.probe_key(b"secret")


def signed_probe(body: bytes, key: bytes = KEY) -> bytes:
    """A probe with any body bytes, signed as encode() would sign it."""
    signed = probe.MAGIC + body
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


# -- doctor probes ---------------------------------------------------------------------------
def test_a_deeply_nested_probe_is_a_probe_error_not_a_recursion_error():
    # the finding: CPDOCTOR then ~1150 "[" raised RecursionError out of the receive callback
    for payload in (probe.MAGIC + b"[" * 1150, signed_probe(b"[" * 1150)):
        with pytest.raises(probe.ProbeError):
            probe.decode(KEY, payload)


@given(st.integers(min_value=17, max_value=1100), st.sampled_from("[{"), st.booleans())
def test_probe_nesting_beyond_the_limit_is_refused(depth, bracket, sign):
    body = (b'{"a":' * depth + b"1" + b"}" * depth) if bracket == "{" else b"[" * depth
    payload = signed_probe(body) if sign else probe.MAGIC + body + b"\0" * probe.MAC_LEN
    with pytest.raises(probe.ProbeError):
        probe.decode(KEY, payload)


def test_probe_nesting_within_the_limit_decodes():
    body = {"k": "probe", "id": "x", "deep": [[[[[[[[1]]]]]]]]}
    assert probe.decode(KEY, probe.encode(KEY, body)).body == body


@given(st.integers(min_value=0, max_value=2000))
def test_probe_of_any_size_raises_only_probe_error(size):
    try:
        probe.decode(KEY, signed_probe(b"1" * size))
    except probe.ProbeError:
        pass


@pytest.mark.parametrize(
    "body",
    [
        b"9" * 1100,  # a huge integer (beyond int_max_str_digits: ValueError inside json)
        b'{"n":' + b"9" * 1000 + b"}",
        b"1e999999",
        b'{"n":NaN}',
        b'{"n":-Infinity}',
        b"[1,2,3]",
        b'"text"',
        b"null",
        b"true",
        b"\xff\xfe{}",
        b'{"a":"\xed\xa0\x80"}',  # a lone surrogate, not UTF-8
        b'{"a":1,"a":2',
        b"{" * 600,
        b'["' + b"\\" * 500 + b'"]',
    ],
)
def test_probe_bodies_of_the_wrong_kind_are_probe_errors(body):
    with pytest.raises(probe.ProbeError):
        probe.decode(KEY, signed_probe(body))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=40,
)


@settings(max_examples=300)
@given(JSON)
def test_probe_decoder_takes_any_json_value_and_returns_a_dict_or_raises_probe_error(value):
    try:
        body = json.dumps(value).encode()
    except ValueError:
        return
    try:
        p = probe.decode(KEY, signed_probe(body))
    except probe.ProbeError:
        return
    assert isinstance(p.body, dict) and p.authentic


@given(st.binary(min_size=0, max_size=1300))
def test_probe_decoder_raises_only_probe_error_for_any_bytes(data):
    for payload in (probe.MAGIC + data, signed_probe(data), data):
        try:
            probe.decode(KEY, payload)
        except probe.ProbeError:
            pass


# -- the one parser of untrusted JSON --------------------------------------------------------
def test_the_depth_scan_skips_brackets_inside_strings():
    assert untrusted.depth(b'{"a": "[[[[{{{{", "b": ["]]]\\"[[["]}') == 2
    assert untrusted.loads(b'{"d": "' + b"[" * 100 + b'"}', max_size=1000, max_depth=2)


def value_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(value_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(value_depth, value), default=0)
    return 0


TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\n/', max_size=8)
TRICKY_JSON = st.recursive(
    st.none() | st.integers() | TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=500)
@given(TRICKY_JSON, st.booleans())
def test_the_depth_scan_is_exact_for_any_json(value, ascii_only):
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert untrusted.depth(data) == value_depth(value)


@given(st.integers(min_value=0, max_value=3000))
def test_nesting_is_bounded_before_parsing(n):
    data = b"[" * n + b"0" + b"]" * n
    if n <= untrusted.MAX_DEPTH:
        assert untrusted.depth(data) == n
        untrusted.loads(data, max_size=10_000)
    else:
        with pytest.raises(untrusted.UntrustedJSON) as e:
            untrusted.loads(data, max_size=10_000)
        assert e.value.reason == "too_deep"


@given(st.binary(max_size=500) | st.text(max_size=200))
def test_loads_raises_only_untrusted_json(data):
    try:
        untrusted.loads(data, max_size=400)
    except untrusted.UntrustedJSON:
        pass


def test_size_and_object_limits():
    with pytest.raises(untrusted.UntrustedJSON) as e:
        untrusted.loads(b"[" + b"1," * 100 + b"1]", max_size=100)
    assert e.value.reason == "too_large"
    with pytest.raises(untrusted.UntrustedJSON) as e:
        untrusted.loads_object(b"[]", max_size=100)
    assert e.value.reason == "not_object"
    assert untrusted.loads(b'{"n": 18446744073709551615, "f": 1.5}', max_size=100) == {
        "n": 2**64 - 1,
        "f": 1.5,
    }


def test_check_depth_walks_any_depth_without_recursion():
    value: object = 1
    for _ in range(100_000):
        value = [value]
    with pytest.raises(untrusted.UntrustedJSON):
        untrusted.check_depth(value, 32)
    untrusted.check_depth({"a": [{"b": (1, 2)}]}, 4)
    with pytest.raises(untrusted.UntrustedJSON):
        untrusted.check_depth({"a": [{"b": (1, 2)}]}, 3)


# -- config handlers: deep values are a typed refusal -----------------------------------------
def nest(n: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [40, 600, 900])
@pytest.mark.parametrize(
    "command, request_of",
    [
        ("config.set", lambda v: {"key": "sync.interval", "value": v}),
        ("config.set", lambda v: {"key": "appliance.description", "value": {"a": v}}),
        ("config.apply", lambda v: {"document": {"interface": v}}),
        ("config.edit", lambda v: {"ops": [{"op": "set", "key": "ha.vhid", "value": v}]}),
        ("config.edit", lambda v: {"ops": v}),
        (
            "config.edit",
            lambda v: {"ops": [{"op": "vs.add", "service": {"name": "x", "real_server": v}}]},
        ),
    ],
)
def test_deeply_nested_config_requests_are_refused_as_invalid(tmp_path, command, request_of, depth):
    unit = Unit(tmp_path)
    before = unit.version
    answer = unit.call(command, **request_of(nest(depth)))
    assert answer.get("code") == "invalid", answer
    assert unit.version == before


def test_a_document_nested_too_deep_is_a_document_error():
    with pytest.raises(DocumentError) as e:
        parse_document({"interface": nest(5000)})
    assert "nested deeper" in str(e.value)


def test_the_control_socket_refuses_nested_and_oversized_requests(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "MAX_REQUEST", 10_000)

    async def main() -> list[dict]:
        path = str(tmp_path / "control.sock")
        server = await control.serve(path, {"status": lambda _r: {"ok": True}})
        answers = []
        for line in [
            b"[" * 5000 + b"\n",
            b'{"command": "status", "x": ' + b"[" * 5000 + b"}\n",
            b'{"command": "status", "n": ' + b"9" * 5000 + b"}\n",
            b'{"command": "status", "pad": "' + b"x" * 20_000 + b'"}\n',
            b'{"command": "status"}\n',
        ]:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(line)
            await writer.drain()
            answers.append(json.loads(await asyncio.wait_for(reader.readline(), 10) or b"{}"))
            writer.close()
        server.close()
        return answers

    *refused, ok = asyncio.run(main())
    assert ok == {"ok": True}
    assert all("bad request" in a.get("error", "") for a in refused), refused


# -- the partner's status (its WUI answers over an unverified TLS connection) -----------------
@pytest.mark.parametrize(
    "body", [b'{"state": ' + b"[" * 5000 + b"}", b"[" * 5000, b'{"n": ' + b"9" * 5000 + b"}"]
)
def test_a_partner_status_nested_too_deep_is_an_error_not_an_exception(body):
    view = PartnerView(lambda: "https://198.18.0.12/", b"secret")
    view._client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, content=body))
    )
    answer = asyncio.run(view.get())
    assert answer["status"] is None and "unreachable" not in answer["error"]
    assert "partner WUI" in answer["error"]
