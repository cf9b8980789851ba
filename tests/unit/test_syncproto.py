"""Sync protocol, pure: framing, authentication, sealed frames, the merge plan."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carpool.config import syncproto as sp

KEY = sp.sync_key(b"unit-test-secret")


HS = sp.Handshake("second", "first", "c" * 32, "s" * 32)


def pair(hs: sp.Handshake = HS):
    s = hs.session_key(KEY)
    return sp.Session(s, True), sp.Session(s, False)


def test_frames_split_anywhere_come_back_whole():
    data = sp.frame(b"one") + sp.frame(b"") + sp.frame(b"three" * 1000)
    d = sp.Deframer()
    out = []
    for i in range(0, len(data), 7):
        out += d.feed(data[i : i + 7])
    assert out == [b"one", b"", b"three" * 1000]


def test_oversized_length_is_refused_before_reading():
    with pytest.raises(sp.FrameError) as e:
        sp.Deframer(limit=1000).feed(b"\x00\x01\x00\x00")
    assert e.value.reason == "oversized"


def test_proofs_differ_by_side_secret_nonce_and_roles():
    proof = HS.proof(KEY, "server")
    assert proof != HS.proof(KEY, "client")
    assert proof != HS.proof(sp.sync_key(b"other"), "server")
    assert proof != sp.Handshake("second", "first", "c" * 32, "t" * 32).proof(KEY, "server")
    # the finding: a unit's own handshake reflected at it (same nonces, its role twice, or the
    # roles the other way round) proves nothing
    assert proof != sp.Handshake("first", "first", "c" * 32, "s" * 32).proof(KEY, "server")
    assert proof != sp.Handshake("first", "second", "c" * 32, "s" * 32).proof(KEY, "server")
    assert HS.session_key(KEY) != sp.Handshake("first", "second", "c" * 32, "s" * 32).session_key(
        KEY
    )


def test_sealed_frames_are_secret():
    client, _ = pair()
    frame = client.seal({"type": "push", "hash": "$argon2id$v=19$m=65536,t=3,p=4$secretsalt"})
    assert b"argon2" not in frame and b"push" not in frame


def test_sealed_messages_round_trip_in_order():
    client, server = pair()
    d = sp.Deframer()
    for n in range(3):
        [body] = d.feed(client.seal({"type": "state", "n": n}))
        assert server.open(body) == {"type": "state", "n": n}
    [body] = d.feed(server.seal({"type": "ack"}))
    assert client.open(body) == {"type": "ack"}


def test_a_welcome_whose_tag_starts_with_a_brace_is_not_taken_for_a_refusal():
    for n in range(5000):  # ciphertext starts with "{" once in 256 sessions
        client, server = pair(sp.Handshake("second", "first", f"{n:032x}", "s" * 32))
        welcome = {"type": "welcome", "n": n}
        body = sp.Deframer().feed(server.seal(welcome))[0]
        if body.startswith(b"{"):
            break
    else:
        pytest.fail("no tag starting with '{' in 5000 tries")
    assert sp.open_welcome(client, body) == (welcome, None)


def test_an_unsealed_refusal_says_why_and_other_garbage_raises():
    client, _ = pair()
    refusal = sp.Deframer().feed(sp.frame(sp.dumps({"type": "error", "error": "wrong secret"})))[0]
    assert sp.open_welcome(client, refusal) == ({}, "wrong secret")
    with pytest.raises(sp.FrameError):
        sp.open_welcome(client, b"\x00" * 40)


@pytest.mark.parametrize("attack", ["replay", "reflect", "tamper", "truncate"])
def test_replayed_reflected_or_tampered_frames_fail(attack):
    client, server = pair()
    body = sp.Deframer().feed(client.seal({"type": "push"}))[0]
    server.open(body)
    if attack == "replay":
        bad, victim = body, server
    elif attack == "reflect":  # our own frame sent back to us
        bad, victim = body, client
    elif attack == "tamper":
        bad, victim = body[:-2] + bytes([body[-2] ^ 1]) + body[-1:], server
    else:
        bad, victim = body[:10], server
    with pytest.raises(sp.FrameError):
        victim.open(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_only_ever_raises_frame_error(data):
    _, server = pair()
    try:
        for body in sp.Deframer(limit=1 << 16).feed(data):
            server.open(body)
    except sp.FrameError:
        pass
    try:
        sp.parse_json(data)
    except sp.FrameError:
        pass


A = [(1, "h1"), (2, "h2")]


@pytest.mark.parametrize(
    "ours, theirs, role, preferred, expect",
    [
        (A, A, "first", "none", sp.Plan("in_sync")),
        (A + [(3, "h3")], A, "first", "none", sp.Plan("push", push=((3, "h3"),))),
        (A, A + [(3, "h3")], "first", "none", sp.Plan("pull", pull=((3, "h3"),))),
        (A, [], "first", "none", sp.Plan("push", push=tuple(A))),
        # both moved: the first unit wins when none is preferred ...
        (
            A + [(3, "x")],
            A + [(3, "y"), (4, "z")],
            "first",
            "none",
            sp.Plan("resolve", push=((3, "x"),), theirs_lost=((3, "y"), (4, "z")), winner="first"),
        ),
        (
            A + [(3, "x")],
            A + [(3, "y")],
            "second",
            "none",
            sp.Plan("resolve", pull=((3, "y"),), ours_lost=((3, "x"),), winner="first"),
        ),
        # ... the preferred unit's side otherwise
        (
            A + [(3, "x")],
            A + [(3, "y")],
            "first",
            "second",
            sp.Plan("resolve", pull=((3, "y"),), ours_lost=((3, "x"),), winner="second"),
        ),
    ],
)
def test_plan(ours, theirs, role, preferred, expect):
    assert sp.plan(ours, theirs, role, preferred) == expect
