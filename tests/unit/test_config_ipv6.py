"""Dual-stack configuration: `first`/`second` one address or one per family, IPv6 shared
prefixes, and refusals that name the key."""

from ipaddress import IPv4Address, IPv6Address, IPv6Interface

import pytest

from carpool.config import document
from carpool.config.ha import ConfigError, parse_config

UNIT = {"role": "first", "secret": "unit-test-secret"}


def iface(**over):
    base = {
        "name": "eth0",
        "first": ["198.18.0.11", "2001:2::11"],
        "second": ["198.18.0.12", "2001:2::12"],
        "shared": ["198.18.0.10/24", "2001:2::10/64"],
    }
    return base | over


def test_dual_stack_interface_gives_both_families_at_run_time():
    cfg = parse_config({"unit": UNIT, "interface": [iface()]})
    (eth0,) = cfg.interfaces
    assert eth0.own("first") == IPv4Address("198.18.0.11")
    assert eth0.own6("first") == IPv6Address("2001:2::11")
    assert eth0.partner6("first") == IPv6Address("2001:2::12")
    assert eth0.shared6 == (IPv6Interface("2001:2::10/64"),)
    assert [str(c) for c in eth0.shared4] == ["198.18.0.10/24"]
    assert cfg.own_address == IPv4Address("198.18.0.11")  # the primary stays IPv4


def test_an_ipv4_only_document_keeps_its_hash_and_form():
    """A document written before IPv6 hashes as it did (the store's check, the partner's)."""
    doc = document.parse_document(
        {"interface": [{"name": "eth0", "first": "198.18.0.11", "second": "198.18.0.12"}]}
    )
    # the hash this document had before IPv6 (computed on 4937c93)
    assert doc.hash == "3c714eef8583388dd8eb6bec696a69d9203e28198349ceb62280aaa60e20e120"
    plain = document.to_plain(doc)["interface"][0]
    assert plain["first"] == "198.18.0.11" and b'"first":"198.18.0.11"' in doc.canonical()


def test_a_list_round_trips_as_a_list():
    doc = document.parse_document({"interface": [iface()]})
    assert document.to_plain(doc)["interface"][0]["first"] == ["198.18.0.11", "2001:2::11"]
    assert document.parse_document(document.to_plain(doc)).hash == doc.hash


@pytest.mark.parametrize(
    ("over", "key", "why"),
    [
        ({"first": ["198.18.0.11", "198.18.0.13"]}, "interface[0].first", "one address per family"),
        ({"first": ["198.18.0.11", "fe80::1"]}, "interface[0].first", "link-local"),
        (
            {"first": ["198.18.0.11", "2001:2::11", "2001:2::13"]},
            "interface[0].first",
            "3 addresses",
        ),
        ({"first": 5}, "interface[0].first", "list of one IPv4 and one IPv6"),
        ({"first": ["198.18.0.11", "ff02::1"]}, "interface[0].first", "multicast"),
        (
            {"first": "2001:2::11", "second": ["198.18.0.12", "2001:2::12"], "shared": []},
            "interface[0].second",
            "the units need addresses of the same families on eth0",
        ),
        ({"second": "198.18.0.12"}, "interface[0].shared[1]", "both units need an IPv6 address"),
        (
            {"shared": ["198.18.0.10/24", "2001:3::10/64"]},
            "interface[0].shared[1]",
            "outside the subnet",
        ),
        (
            {"shared": ["198.18.0.10/24", "2001:2::/64"]},
            "interface[0].shared[1]",
            "Subnet-Router anycast",
        ),
        (
            {"shared": ["198.18.0.10/24", "2001:2::10"]},
            "interface[0].shared[1]",
            "needs a prefix length",
        ),
        (
            {"shared": ["198.18.0.10/24", "2001:2::10/32"]},
            "interface[0].shared[1]",
            "shorter than /48",
        ),
        ({"shared": ["198.18.0.10/24", "fe80::10/64"]}, "interface[0].shared[1]", "link-local"),
        (
            {"shared": ["198.18.0.10/24", "2001:2::12/64"]},
            "interface[0].shared[1]",
            "a unit's own address",
        ),
        ({"second": ["198.18.0.12", "2001:2::11"]}, "interface[0]", "different addresses"),
    ],
)
def test_bad_dual_stack_values_name_the_key(over, key, why):
    with pytest.raises(ConfigError) as e:
        parse_config({"unit": UNIT, "interface": [iface(**over)]}, "f.toml")
    lines = [line for line in str(e.value).splitlines() if line.startswith(f"f.toml: {key}")]
    assert any(why in line for line in lines), str(e.value)


def test_an_ipv6_address_shared_twice_is_refused():
    doc = {
        "interface": [
            iface(),
            iface(
                name="eth2",
                first=["198.18.2.11", "2001:2::21"],
                second=["198.18.2.12", "2001:2::22"],
                shared=["198.18.2.10/24", "2001:2::10/64"],
            ),
        ]
    }
    with pytest.raises(document.DocumentError) as e:
        document.parse_document(doc)
    assert "shared address 2001:2::10 is listed twice" in str(e.value)


def test_an_ipv6_only_link_names_the_units_by_their_ipv6_addresses():
    cfg = parse_config(
        {
            "unit": UNIT,
            "interface": [iface(first="2001:2::11", second="2001:2::12", shared=["2001:2::10/64"])],
        }
    )
    (eth0,) = cfg.interfaces
    assert eth0.own("first") == eth0.own6("first") == IPv6Address("2001:2::11")
    assert eth0.own4("first") is None and eth0.partner4("first") is None
    assert cfg.partner_address == IPv6Address("2001:2::12")
    assert cfg.partner_url == "https://[2001:2::12]/"
    assert eth0.owns("first") == [IPv6Address("2001:2::11")]
