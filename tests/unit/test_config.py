"""The HA configuration file: defaults, derived parameters, and clear refusals."""

import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from carpool.config.ha import ConfigError, load_config

GOOD = """
[unit]
role = "second"
secret = "unit-test-secret"
state_dir = "/tmp/x"

[ha]
vhid = 7
ha_timeout = 6
preferred = "first"

[[interface]]
name = "eth0"
shared = ["198.18.0.10/24"]
first = "198.18.0.11"
second = "198.18.0.12"
ping_target = "198.18.0.100"

[[interface]]
name = "eth1"
heartbeat = true
first = "198.18.1.1"
second = "198.18.1.2"
"""


def write(tmp_path, text):
    path = tmp_path / "carpool.toml"
    path.write_text(text)
    return path


def test_good_file_and_derived_parameters(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.role == "second" and cfg.vhid == 7 and cfg.secret == b"unit-test-secret"
    assert cfg.advbase == 2  # ha_timeout 6 s → advbase 2
    assert not cfg.preempt and cfg.advskew == 100 and cfg.priority == 100
    assert cfg.protocol == "carp" and cfg.transport == "multicast"
    eth0, eth1 = cfg.interfaces
    assert eth0.own("second") == IPv4Address("198.18.0.12")
    assert eth0.partner("second") == IPv4Address("198.18.0.11")
    assert eth1.heartbeat and eth1.check and not eth1.shared
    assert cfg.vmac_address == "00:00:5e:00:01:07"


def test_preferred_unit_preempts(tmp_path):
    cfg = load_config(write(tmp_path, GOOD.replace('role = "second"', 'role = "first"')))
    assert cfg.preempt and cfg.advskew == 0 and cfg.priority == 200


def test_fast_profile_keeps_the_protocol_and_its_authentication(tmp_path):
    cfg = load_config(write(tmp_path, GOOD.replace("vhid = 7", "vhid = 7\nfast = true")))
    assert (cfg.protocol, cfg.auth, cfg.fast, cfg.fast_interval_ms) == ("carp", "carpool", True, 20)
    plain = GOOD.replace("vhid = 7", 'vhid = 7\nauth = "carp"')
    assert load_config(write(tmp_path, plain)).auth == "carp"
    with pytest.raises(ConfigError, match='fast needs auth = "carpool"'):
        load_config(write(tmp_path, plain.replace('auth = "carp"', 'auth = "carp"\nfast = true')))
    vrrp = GOOD.replace("vhid = 7", 'vhid = 7\nprotocol = "vrrp3"\nfast = true')
    assert load_config(write(tmp_path, vrrp)).protocol == "vrrp3"


@pytest.mark.parametrize(
    "change, message",
    [
        (("vhid = 7", "vhid = 300"), "ha.vhid: must be <= 255, not 300"),
        (("vhid = 7", "vhid = true"), "ha.vhid: expected an integer, got a boolean"),
        (
            ("ha_timeout = 6", "ha_timeout = 4"),
            "ha.ha_timeout: must be one of 3, 6, 9, 12 or 15, not 4",
        ),
        (('preferred = "first"', 'preferred = "third"'), "ha.preferred: must be one of"),
        (("vhid = 7", "vhid = 7\nbogus = 1"), "ha.bogus: unknown key"),
        (
            ('secret = "unit-test-secret"', 'secret = "' + "x" * 21 + '"'),
            "unit.secret: at most 20 bytes",
        ),
        (('role = "second"', ""), "unit.role: required key is missing"),
        (
            ('"198.18.0.10/24"', '"198.18.0.10"'),
            "interface[0].shared[0]: '198.18.0.10' needs a prefix",
        ),
        (('"198.18.0.10/24"', '"198.18.0.11/24"'), "is a unit's own address"),
        (('second = "198.18.0.12"', 'second = "198.18.0.300"'), "interface[0].second: not an IPv4"),
        (("vhid = 7", "vhid = 7\nfast_interval_ms = 15"), "must be a multiple of 10"),
        (
            ("heartbeat = true", 'heartbeat = true\nshared = ["198.18.1.5/29"]'),
            "heartbeat interface",
        ),
    ],
)
def test_bad_values_are_refused_with_file_key_and_why(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(err.value).startswith(str(path))


@pytest.mark.parametrize("secret", ["s", "x" * 11, "é" * 11])
def test_short_secret_is_refused_naming_file_and_key(tmp_path, secret):
    path = write(tmp_path, GOOD.replace("unit-test-secret", secret))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: unit.secret: at least 12 characters")


@pytest.mark.parametrize("secret", ["x" * 12, "x" * 20, "é" * 8 + "x" * 4])
def test_secret_of_12_characters_to_20_bytes_is_accepted(tmp_path, secret):
    cfg = load_config(write(tmp_path, GOOD.replace("unit-test-secret", secret)))
    assert cfg.secret == secret.encode()


def test_a_long_secret_in_many_bytes_is_refused_by_its_bytes(tmp_path):
    path = write(tmp_path, GOOD.replace("unit-test-secret", "é" * 12))  # 12 characters, 24 bytes
    with pytest.raises(ConfigError, match="unit.secret: at most 20 bytes"):
        load_config(path)


def test_the_example_file_and_the_labs_configs_follow_the_secret_policy():
    from carpool.config.ha import parse_config
    from carpool.lab.units import SECRET, base_config

    example = load_config(Path(__file__).resolve().parents[2] / "docs" / "example.toml")
    assert 12 <= len(example.secret) <= 20
    for unit in ("a", "b"):
        cfg = parse_config(base_config(unit, Path("/tmp/cp-unit")))
        assert cfg.secret == SECRET.encode()  # parsed: within the policy


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("vhid = 7", "vhid = 0").replace("ha_timeout = 6", "ha_timeout = 5")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert "ha.vhid" in str(err.value) and "ha.ha_timeout" in str(err.value)


def test_no_checked_interface_is_refused(tmp_path):
    text = GOOD.replace('ping_target = "198.18.0.100"', "check = false").replace(
        "heartbeat = true", "check = false"
    )
    with pytest.raises(ConfigError, match="at least one interface needs check = true"):
        load_config(write(tmp_path, text))


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[unit\nrole="))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_run_with_bad_file_exits_2_and_changes_nothing(tmp_path):
    state_dir = tmp_path / "state"
    path = write(tmp_path, GOOD.replace("/tmp/x", str(state_dir)).replace("vhid = 7", "vhid = 0"))
    proc = subprocess.run(
        [sys.executable, "-m", "carpool.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "ha.vhid: must be >= 1, not 0" in proc.stderr
    assert not state_dir.exists()


def test_rt_priority_default_range_and_kind(tmp_path):
    assert load_config(write(tmp_path, GOOD)).rt_priority == 10
    text = GOOD.replace('state_dir = "/tmp/x"', 'state_dir = "/tmp/x"\nrt_priority = 0')
    assert load_config(write(tmp_path, text)).rt_priority == 0
    for bad, words in (("100", "between 0 and 99"), ("2.5", "expected int"), ("true", "boolean")):
        text = GOOD.replace('state_dir = "/tmp/x"', f'state_dir = "/tmp/x"\nrt_priority = {bad}')
        with pytest.raises(ConfigError, match=f"unit.rt_priority.*{words}"):
            load_config(write(tmp_path, text))


def test_control_group_default_none_a_name_or_a_number(tmp_path):
    assert load_config(write(tmp_path, GOOD)).control_gid is None
    for value, gid in (('"root"', 0), ('"4242"', 4242)):
        text = GOOD.replace(
            'state_dir = "/tmp/x"', f'state_dir = "/tmp/x"\ncontrol_group = {value}'
        )
        cfg = load_config(write(tmp_path, text))
        assert cfg.control_gid == gid and cfg.control_group == value.strip('"')


@pytest.mark.parametrize(
    "value, why",
    [('"no-such-group-here"', "no such group 'no-such-group-here'"), ("0", "expected str")],
)
def test_bad_control_group_is_refused_naming_file_and_key(tmp_path, value, why):
    path = write(tmp_path, GOOD.replace('state_dir = "/tmp/x"', f"control_group = {value}"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: unit.control_group: {why}" in str(err.value)
