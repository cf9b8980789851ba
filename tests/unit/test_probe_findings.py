"""Doctor probes (codec) and findings (pure evaluation of observations)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carpool.ha import probe
from carpool.node import findings

KEY = probe.probe_key(b"unit-test-secret")


def test_probe_round_trip_and_authenticity():
    payload = probe.encode(KEY, {"k": "probe", "id": "ab12"})
    assert probe.is_probe(payload)
    assert probe.decode(KEY, payload) == probe.Probe({"k": "probe", "id": "ab12"}, True)
    other = probe.decode(probe.probe_key(b"other"), payload)
    assert other.body["id"] == "ab12" and other.authentic is False


def test_probe_magic_reads_as_a_version_no_advert_decoder_takes():
    assert probe.MAGIC[0] >> 4 == 4  # CARP is version 2, VRRP 2 or 3


def test_oversized_probe_body_is_refused():
    with pytest.raises(probe.ProbeError):
        probe.encode(KEY, {"pad": "x" * 2000})


@given(st.binary(max_size=300))
def test_probe_decoder_raises_only_probe_error(data):
    try:
        probe.decode(KEY, probe.MAGIC + data)
    except probe.ProbeError:
        pass


HEALTHY = {
    "role": "first",
    "state": "master",
    "version": "0.1.0",
    "config": [3, "ab" * 32],
    "transport": "multicast",
    "vmac": False,
    "vhid": 1,
    "sync_port": 6973,
    "vmac_sender": None,
    "vmac_sent": {},
    "vmac_heard": {},
    "sent": {"eth0": 3, "eth1": 3},
    "report_authentic": True,
    "report_received": 1000.0,
    "reports": {
        "eth0": {
            "heard": {"eth0": 3, "eth1": 3},
            "ping": {"eth0": True, "eth1": True},
            "authentic": True,
            "version": "0.1.0",
            "config": [3, "ab" * 32],
            "time": 1000.0,
            "vmac_heard": {},
        },
        "eth1": {},
    },
    "pings": {"eth0": 1.2, "eth1": 0.9},
    "interfaces": {
        "eth0": {
            "check": True,
            "heartbeat": False,
            "shared": ["198.18.0.10/24"],
            "link_up": True,
            "socket": True,
        },
        "eth1": {"check": True, "heartbeat": True, "shared": [], "link_up": True, "socket": True},
    },
    "sync": {
        "reachable": True,
        "authenticated": True,
        "connect_ms": 0.5,
        "carpool": "0.1.0",
        "current": [3, "ab" * 32],
        "clock_offset": 0.002,
    },
    "foreign": [],
}


def bad(observed) -> list[str]:
    return [f.name for f in findings.evaluate(observed) if not f.ok]


def test_healthy_observations_pass():
    assert bad(HEALTHY) == []


def test_a_lost_report_path_fails_only_that_direction():
    o = copy.deepcopy(HEALTHY)
    o["reports"] = {"eth1": o["reports"]["eth0"]}  # the report came back on eth1 only
    assert bad(o) == ["multicast eth0: partner -> us"]


def test_one_way_loss_on_every_path_is_named_by_the_report_over_6973():
    """The partner's probes-report comes back over the sync port only: each path's
    partner -> us direction fails, us -> partner passes, and the detail says where it came."""
    o = copy.deepcopy(HEALTHY)
    o["relayed_report"], o["reports"] = o["reports"]["eth0"], {}
    assert bad(o) == ["multicast eth0: partner -> us", "heartbeat eth1"]
    eth0 = next(f for f in findings.evaluate(o) if f.name == "multicast eth0: partner -> us")
    assert "came over the sync port" in eth0.detail
    # and the other direction: the partner heard none of our probes, said so over 6973
    o = copy.deepcopy(HEALTHY)
    o["relayed_report"] = o["reports"]["eth0"] | {"heard": {}}
    assert bad(o) == ["multicast eth0: us -> partner", "heartbeat eth1"]


def test_wrong_secret_with_the_sync_port_closed_is_judged_by_the_probes():
    o = copy.deepcopy(HEALTHY)
    o["sync"] = {"reachable": False, "authenticated": None, "error": "timeout", "connect_ms": None}
    o["report_authentic"] = False
    assert bad(o) == ["6973 sync port reachable", "6973 secret (partner shared secret)"]


def test_unchecked_shared_interface_and_missing_heartbeat():
    o = copy.deepcopy(HEALTHY)
    o["interfaces"]["eth0"]["check"] = False
    o["interfaces"]["eth1"]["heartbeat"] = False
    assert set(bad(o)) == {"ha-check eth0", "heartbeat link"}


def test_clock_and_latency_limits():
    o = copy.deepcopy(HEALTHY)
    o["sync"]["clock_offset"] = 4.0
    o["pings"] = {"eth0": 150.0, "eth1": 180.0}
    o["sync"]["connect_ms"] = 140.0
    assert set(bad(o)) == {"clock offset", "latency"}


def test_master_master_warning_names_the_silent_paths():
    status = {
        "state": "master",
        "vhid": 1,
        "partner": {
            "eth0": {"ping_ok": True, "advert_alive": False},
            "eth1": {"ping_ok": True, "advert_alive": False},
        },
    }
    [w] = findings.warnings(status, {"state": "master", "at": 100.0}, [], now=105.0)
    assert w.startswith("master-master") and "eth0, eth1" in w
    assert findings.warnings(status, {"state": "master", "at": 10.0}, [], now=105.0) == []
    assert findings.warnings(status, {"state": "backup", "at": 100.0}, [], now=105.0) == []


def test_report_shape_guards_the_findings():
    from carpool.node.doctor import _report_shape

    good = HEALTHY["reports"]["eth0"] | {"config": [3, "ab" * 32]}
    assert _report_shape(good)
    for key, value in (
        ("heard", [1]),
        ("heard", {"eth0": "3"}),
        ("config", [3]),
        ("time", "now"),
        ("ping", None),
    ):
        assert not _report_shape(good | {key: value}), key


def dual_stack() -> dict:
    """HEALTHY with eth0's IPv6 path (`eth0/ipv6`) probed too."""
    o = copy.deepcopy(HEALTHY)
    o["sent"]["eth0/ipv6"] = 3
    o["reports"]["eth0/ipv6"] = {}
    o["reports"]["eth0"]["heard"]["eth0/ipv6"] = 3
    o["pings"]["eth0/ipv6"] = 1.0
    o["interfaces"]["eth0/ipv6"] = {**o["interfaces"]["eth0"], "family": 6}
    o["shared6"] = {"2001:2::10/64": "ok"}
    return o


def test_a_dual_stack_path_is_judged_per_family_with_ipv6_words():
    assert bad(dual_stack()) == []
    o = dual_stack()
    o["reports"]["eth0"]["heard"]["eth0/ipv6"] = 0  # ff02::12 dropped, 224.0.0.18 not
    del o["reports"]["eth0/ipv6"]
    o["pings"]["eth0/ipv6"] = None
    found = {f.name: f for f in findings.evaluate(o) if not f.ok}
    assert sorted(found) == [
        "icmpv6 eth0/ipv6",
        "multicast eth0/ipv6: partner -> us",
        "multicast eth0/ipv6: us -> partner",
    ]
    hint = found["multicast eth0/ipv6: us -> partner"].hint
    assert "MLD snooping" in hint and "ff02::12" in hint and "IGMP" in hint
    assert "ICMPv6" in found["icmpv6 eth0/ipv6"].hint


def test_an_ipv6_shared_address_that_failed_dad_is_named():
    o = dual_stack()
    o["shared6"] = {"2001:2::10/64": "dadfailed", "2001:2:0:2::1/64": "ok"}
    [finding] = [f for f in findings.evaluate(o) if not f.ok]
    assert finding.name == "ipv6 shared addresses"
    assert "2001:2::10/64 is dadfailed" in finding.hint and "2001:2:0:2::1/64" not in finding.hint


def test_the_mac_the_standby_resolves_a_shared_address_to_is_judged():
    mac, other = "02:00:00:00:00:0b", "02:00:00:00:00:99"
    o = dual_stack()
    o["neighbours"] = {
        "198.18.0.10/24": {"mac": mac, "expected": [mac]},
        "2001:2::10/64": {"mac": mac, "expected": [mac]},
    }
    [ok] = [f for f in findings.evaluate(o) if f.name == "mac the shared addresses resolve to"]
    assert ok.ok and ok.detail == f"198.18.0.10 -> {mac}, 2001:2::10 -> {mac}"
    o["neighbours"]["2001:2::10/64"]["mac"] = other  # a client kept (or got) a wrong entry
    o["neighbours"]["198.18.0.10/24"]["mac"] = None
    [finding] = [f for f in findings.evaluate(o) if not f.ok]
    assert finding.name == "mac the shared addresses resolve to"
    assert f"2001:2::10 -> {other}, not {mac}" in finding.detail
    assert "198.18.0.10 unresolved" in finding.detail
    assert f"find {other}" in finding.hint and "198.18.0.10 did not resolve" in finding.hint
    o["neighbours"] = {"2001:2::10/64": {"mac": other, "expected": []}}
    [finding] = [f for f in findings.evaluate(o) if not f.ok]
    assert "unknown" in finding.detail and "ICMP checks first" in finding.hint


def test_certificates_near_their_end_fail_the_doctor_with_the_renewal_named():
    o = dual_stack()
    o["time"] = 1_000_000.0
    o["certificates"] = [{"name": "www", "not_after": 1_000_000.0 + 90 * 86400, "used_by": []}]
    [ok] = [f for f in findings.evaluate(o) if f.name == "certificates"]
    assert ok.ok and ok.detail == "www 90 days left"
    o["certificates"][0]["not_after"] = 1_000_000.0 + 5 * 86400
    [late] = [f for f in findings.evaluate(o) if not f.ok]
    assert late.name == "certificates" and "expires in 5 days" in late.hint
    assert "carpool cert replace" in late.hint


def test_the_doctor_says_which_detector_tells_the_standby_the_partner_is_gone():
    o = dict(HEALTHY)
    detection = ["carrier of eth1 (events), confirmed on eth0", "adverts: master down after 3 s"]
    o["detection"] = detection
    o["liveness"] = {"off_reason": "", "state": "alive", "reason": "heard"}
    [ok] = [f for f in findings.evaluate(o) if f.name == "fast detection"]
    assert ok.ok and ok.detail == "alive: " + "; ".join(detection)
    o["liveness"] = {"off_reason": "no heartbeat link", "state": "waiting", "reason": ""}
    [off] = [f for f in findings.evaluate(o) if not f.ok]
    assert off.name == "fast detection" and "(no heartbeat link)" in off.hint
    o["liveness"] = {"off_reason": "", "state": "blind", "reason": "no other path up"}
    [blind] = [f for f in findings.evaluate(o) if not f.ok]
    assert "no other path up" in blind.detail
