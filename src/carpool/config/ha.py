"""The HA configuration: TOML in, a validated frozen Config out (docs/config.md is the reference).

Validation collects every problem before refusing, so one run tells the operator all that is
wrong; nothing is applied from a file that has any.
"""
from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("first", "second")
PROTOCOLS = ("carp", "vrrp3")
TRANSPORTS = ("multicast", "unicast", "broadcast")
HA_TIMEOUTS = (3, 6, 9, 12, 15)
LOG_LEVELS = ("debug", "info", "warning")


class ConfigError(Exception):
    """One or more `FILE: KEY: why` lines."""


@dataclass(frozen=True)
class Interface:
    name: str
    first: ipaddress.IPv4Address
    second: ipaddress.IPv4Address
    check: bool = True
    heartbeat: bool = False
    shared: tuple[ipaddress.IPv4Interface, ...] = ()
    ping_target: ipaddress.IPv4Address | None = None
    ping_interval: float = 1.0

    def own(self, role: str) -> ipaddress.IPv4Address:
        return self.first if role == "first" else self.second

    def partner(self, role: str) -> ipaddress.IPv4Address:
        return self.second if role == "first" else self.first


@dataclass(frozen=True)
class Config:
    path: str
    role: str
    secret: bytes
    state_dir: str = "/run/carpool"
    notify: str = ""
    notify_timeout: float = 5.0
    log_level: str = "info"
    protocol: str = "carp"
    vhid: int = 1
    ha_timeout: int = 3
    fast: bool = False
    fast_interval_ms: int = 20
    preferred: str = "none"
    initial_wait: float = 0.0
    transport: str = "multicast"
    vmac: bool = False
    garp_count: int = 3
    advskew_none: int = 0
    priority_none: int = 100
    interfaces: tuple[Interface, ...] = field(default_factory=tuple)

    # -- derived HA parameters -------------------------------------------------------------
    @property
    def advbase(self) -> int:
        return self.ha_timeout // 3

    @property
    def preempt(self) -> bool:
        return self.preferred == self.role

    @property
    def advskew(self) -> int:
        if self.preferred == "none":
            return self.advskew_none
        return 0 if self.preempt else 100

    @property
    def priority(self) -> int:
        if self.preferred == "none":
            return self.priority_none
        return 200 if self.preempt else 100

    @property
    def vmac_address(self) -> str:
        return f"00:00:5e:00:01:{self.vhid:02x}"

    @property
    def checked(self) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces if i.check)

    @property
    def socket_path(self) -> str:
        return str(Path(self.state_dir) / "carpool.sock")


class _Checker:
    """Reads typed values out of a TOML table and records every problem."""

    def __init__(self, path: str):
        self.path = path
        self.errors: list[str] = []

    def fail(self, key: str, why: str) -> None:
        self.errors.append(f"{self.path}: {key}: {why}")

    def unknown(self, table: dict, known: set[str], prefix: str) -> None:
        for key in sorted(set(table) - known):
            self.fail(f"{prefix}{key}", "unknown key")

    def get(self, table: dict, key: str, kind: type | tuple, default: Any, prefix: str,
            required: bool = False) -> Any:
        if key not in table:
            if required:
                self.fail(prefix + key, "required key is missing")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML bools are ints in Python: refuse them where a number is meant.
        if isinstance(value, bool) and bool not in kinds:
            self.fail(prefix + key, f"expected {kinds[0].__name__}, got a boolean")
            return default
        if not isinstance(value, kinds):
            self.fail(prefix + key, f"expected {kinds[0].__name__}, got {type(value).__name__}")
            return default
        return value

    def choice(self, table, key, choices, default, prefix):
        value = self.get(table, key, type(choices[0]), default, prefix)
        if value not in choices:
            self.fail(prefix + key, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
            return default
        return value

    def number(self, table, key, lo, hi, default, prefix, kind=(int, float)):
        value = self.get(table, key, kind, default, prefix)
        if not lo <= value <= hi:
            self.fail(prefix + key, f"must be between {lo} and {hi}, not {value}")
            return default
        return value

    def address(self, value, key) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address(value)
        except (ipaddress.AddressValueError, ValueError):
            self.fail(key, f"not an IPv4 address: {value!r}")
            return None


_UNIT_KEYS = {"role", "secret", "state_dir", "notify", "notify_timeout", "log_level"}
_HA_KEYS = {"protocol", "vhid", "ha_timeout", "fast", "fast_interval_ms", "preferred",
            "initial_wait", "transport", "vmac", "garp_count", "advskew", "priority"}
_IF_KEYS = {"name", "check", "heartbeat", "shared", "first", "second", "ping_target",
            "ping_interval"}


def _interface(c: _Checker, raw: Any, n: int) -> Interface | None:
    prefix = f"interface[{n}]."
    if not isinstance(raw, dict):
        c.fail(prefix[:-1], "must be a table")
        return None
    c.unknown(raw, _IF_KEYS, prefix)
    name = c.get(raw, "name", str, "", prefix, required=True)
    if name and (len(name) > 15 or "/" in name or " " in name):
        c.fail(prefix + "name", f"not a valid interface name: {name!r}")
    first = c.address(c.get(raw, "first", str, "0.0.0.0", prefix, required=True), prefix + "first")
    second = c.address(c.get(raw, "second", str, "0.0.0.0", prefix, required=True),
                       prefix + "second")
    if first is not None and first == second:
        c.fail(prefix + "second", "the two units need different addresses")
    heartbeat = c.get(raw, "heartbeat", bool, False, prefix)
    shared = []
    for value in c.get(raw, "shared", list, [], prefix):
        try:
            cidr = ipaddress.IPv4Interface(value)
        except (ipaddress.AddressValueError, ValueError, TypeError):
            c.fail(prefix + "shared", f"not an IPv4 address with prefix: {value!r}")
            continue
        if "/" not in str(value):
            c.fail(prefix + "shared", f"{value!r} needs a prefix length, e.g. {value}/24")
        if cidr.ip in (first, second):
            c.fail(prefix + "shared", f"{cidr.ip} is a unit's own address")
        shared.append(cidr)
    if heartbeat and shared:
        c.fail(prefix + "shared", "the heartbeat interface carries no shared addresses")
    target = c.get(raw, "ping_target", str, "", prefix)
    return Interface(
        name=name, first=first, second=second,
        check=c.get(raw, "check", bool, True, prefix) or heartbeat,
        heartbeat=heartbeat, shared=tuple(shared),
        ping_target=c.address(target, prefix + "ping_target") if target else None,
        ping_interval=float(c.number(raw, "ping_interval", 0.2, 60, 1.0, prefix)),
    )


def parse_config(doc: dict, path: str = "<config>") -> Config:
    c = _Checker(path)
    c.unknown(doc, {"unit", "ha", "interface"}, "")
    unit = doc.get("unit", {})
    ha = doc.get("ha", {})
    if not isinstance(unit, dict) or not isinstance(ha, dict):
        raise ConfigError(f"{path}: unit/ha: must be tables")
    c.unknown(unit, _UNIT_KEYS, "unit.")
    c.unknown(ha, _HA_KEYS, "ha.")
    role = c.choice(unit, "role", ROLES, "first", "unit.") if "role" in unit else None
    if role is None:
        c.fail("unit.role", "required key is missing (first or second)")
    secret = c.get(unit, "secret", str, "", "unit.", required=True).encode()
    if "secret" in unit and not secret:
        c.fail("unit.secret", "must not be empty")
    if len(secret) > 20:
        c.fail("unit.secret", "at most 20 bytes (the CARP HMAC key is 20 bytes)")
    fast = c.get(ha, "fast", bool, False, "ha.")
    interval = c.number(ha, "fast_interval_ms", 10, 990, 20, "ha.", kind=int)
    if interval % 10:
        c.fail("ha.fast_interval_ms", f"must be a multiple of 10 (VRRPv3 counts centiseconds), not {interval}")
    protocol = c.choice(ha, "protocol", PROTOCOLS, "carp", "ha.")
    raw_ifaces = doc.get("interface", [])
    if not isinstance(raw_ifaces, list):
        c.fail("interface", "must be an array of tables ([[interface]])")
        raw_ifaces = []
    ifaces = [i for n, raw in enumerate(raw_ifaces) if (i := _interface(c, raw, n))]
    if not any(i.check for i in ifaces):
        c.fail("interface", "at least one interface needs check = true")
    names = [i.name for i in ifaces]
    for name in {n for n in names if names.count(n) > 1}:
        c.fail("interface", f"{name} is listed twice")
    all_shared = [s.ip for i in ifaces for s in i.shared]
    if len(all_shared) != len(set(all_shared)):
        c.fail("interface", "a shared address is listed twice")
    cfg = Config(
        path=path, role=role or "first", secret=secret,
        state_dir=c.get(unit, "state_dir", str, "/run/carpool", "unit."),
        notify=c.get(unit, "notify", str, "", "unit."),
        notify_timeout=float(c.number(unit, "notify_timeout", 0.1, 60, 5.0, "unit.")),
        log_level=c.choice(unit, "log_level", LOG_LEVELS, "info", "unit."),
        protocol="vrrp3" if fast else protocol,
        vhid=c.number(ha, "vhid", 1, 255, 1, "ha.", kind=int),
        ha_timeout=c.choice(ha, "ha_timeout", HA_TIMEOUTS, 3, "ha."),
        fast=fast, fast_interval_ms=interval,
        preferred=c.choice(ha, "preferred", ("none",) + ROLES, "none", "ha."),
        initial_wait=float(c.number(ha, "initial_wait", 0, 180, 0, "ha.")),
        transport=c.choice(ha, "transport", TRANSPORTS, "multicast", "ha."),
        vmac=c.get(ha, "vmac", bool, False, "ha."),
        garp_count=c.number(ha, "garp_count", 1, 10, 3, "ha.", kind=int),
        advskew_none=c.number(ha, "advskew", 0, 254, 0, "ha.", kind=int),
        priority_none=c.number(ha, "priority", 1, 254, 100, "ha.", kind=int),
        interfaces=tuple(ifaces),
    )
    if c.errors:
        raise ConfigError("\n".join(c.errors))
    return cfg


def load_config(path: str | Path) -> Config:
    path = str(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot read: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(doc, path)
