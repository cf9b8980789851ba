"""The golden vectors in tests/vectors: each file that tests/vectors/capture.py re-captures is
committed, listed in the README, an Ethernet pcap holding exactly the packets the script records,
and the gratuitous ARPs match carpool's own frame. The adverts themselves are decoded by the
CARP and VRRP codecs in test_carp.py and test_vrrp.py. No root needed: nothing is captured here.
"""

import importlib.util
import sys

import pytest
from pcap import VECTORS, read_pcap

from carpool.node.addresses import build_garp


def _load_capture_script():
    spec = importlib.util.spec_from_file_location("vectors_capture", VECTORS / "capture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


capture = _load_capture_script()


def frames(name: str) -> list[bytes]:
    return [frame for _ts, frame in read_pcap(VECTORS / name)]


def test_every_vector_is_committed_listed_and_made_by_the_capture_script():
    assert {p.name for p in VECTORS.glob("*.pcap")} == set(capture.CAPTURES)
    readme = (VECTORS / "README.md").read_text()
    for name in capture.CAPTURES:
        assert name in readme, name
    assert "capture.py" in readme


@pytest.mark.parametrize("name", sorted(capture.CAPTURES))
def test_vector_holds_what_the_capture_script_records(name):
    spec = capture.CAPTURES[name]
    capture.check_frames(spec, capture.read_pcap(VECTORS / name))  # the script's own check
    assert len(frames(name)) == spec.count  # and the tests' reader


def test_garp_frame_matches_captured_peers():
    ka, ucarp = frames("garp-ka.pcap"), frames("garp-ucarp.pcap")
    assert ka and ucarp
    mac = ":".join(f"{b:02x}" for b in ka[0][6:12])
    ours = build_garp(mac, "198.18.0.10")
    for frame in ka:
        assert frame[:42] == ours  # keepalived: identical, byte for byte
    for frame in ucarp:  # ucarp: the target MAC differs only
        assert frame[:32] == ours[:32] and frame[38:42] == ours[38:]


def test_unsolicited_na_matches_keepalived_byte_for_byte():
    """keepalived's unsolicited NA on takeover (na-ka.pcap) and carpool's, for the same MAC and
    address on an interface that does not forward: the same 86 bytes."""
    from carpool.node.addresses import build_unsolicited_na

    frames_ = frames("na-ka.pcap")
    assert frames_
    for frame in frames_:
        mac = ":".join(f"{b:02x}" for b in frame[6:12])
        assert frame[:86] == build_unsolicited_na(mac, "2001:2::10")
