"""The HA configuration: TOML in, a validated frozen Config out (docs/config.md is the reference).

Validation collects every problem before refusing, so one run tells the operator all that is
wrong; nothing is applied from a file that has any.
"""

from __future__ import annotations

import grp
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack, overload

from . import document
from .document import LIVENESS_AUTO

ROLES = ("first", "second")
TRANSPORTS = ("multicast", "unicast", "broadcast")
LOG_LEVELS = ("debug", "info", "warning")
VMAC_PREFIX = "00:00:5e:00:01:"
SECRET_MIN = 12  # characters: unit.secret keys the adverts' HMAC, the sync and the doctor's probes
SECRET_MAX = 20  # bytes: the CARP HMAC key (ucarp's -p) is 20 bytes, zero-padded


def vmac_for(vhid: int) -> str:
    """The VRRP/CARP virtual MAC of a vhid: 00:00:5e:00:01:<vhid>."""
    if not 1 <= vhid <= 255:
        raise ValueError(f"vhid {vhid} out of 1..255")
    return f"{VMAC_PREFIX}{vhid:02x}"


class ConfigError(Exception):
    """One or more `FILE: KEY: why` lines."""


@dataclass(frozen=True)
class WebSettings:
    """The local [web] table: the unit's WUI, REST API and /metrics (not synced)."""

    enabled: bool = True
    bind: str = ""  # "" = the unit's own address (Config.own_address)
    port: int = 443
    cert: str = ""  # "" = <state_dir>/web/cert.pem (self-signed at first start)
    key: str = ""  # "" = <state_dir>/web/key.pem
    partner_url: str = ""  # "" = https://<Config.partner_address>:<port>/


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Interface:
    """One link. `first`/`second`: the address that names each unit on it, its IPv4 one when
    it has one, else (an IPv6-only link) its IPv6 one; `first6`/`second6`: the IPv6 ones."""

    name: str
    first: Address
    second: Address
    check: bool = True
    heartbeat: bool = False
    shared: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    ping_target: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    ping_interval: float = 1.0
    first6: ipaddress.IPv6Address | None = None  # a dual-stack link's IPv6 unit addresses
    second6: ipaddress.IPv6Address | None = None

    def own(self, role: str) -> Address:
        return self.first if role == "first" else self.second

    def partner(self, role: str) -> Address:
        return self.second if role == "first" else self.first

    def own4(self, role: str) -> ipaddress.IPv4Address | None:
        own = self.own(role)
        return own if isinstance(own, ipaddress.IPv4Address) else None

    def partner4(self, role: str) -> ipaddress.IPv4Address | None:
        partner = self.partner(role)
        return partner if isinstance(partner, ipaddress.IPv4Address) else None

    def owns(self, role: str) -> list[Address]:
        """The unit's addresses on this link, both families."""
        own6 = self.own6(role)
        return [self.own(role)] + ([own6] if own6 is not None and own6 != self.own(role) else [])

    def own6(self, role: str) -> ipaddress.IPv6Address | None:
        return self.first6 if role == "first" else self.second6

    def partner6(self, role: str) -> ipaddress.IPv6Address | None:
        return self.second6 if role == "first" else self.first6

    @property
    def shared4(self) -> tuple[ipaddress.IPv4Interface, ...]:
        return tuple(c for c in self.shared if isinstance(c, ipaddress.IPv4Interface))

    @property
    def shared6(self) -> tuple[ipaddress.IPv6Interface, ...]:
        return tuple(c for c in self.shared if isinstance(c, ipaddress.IPv6Interface))


@dataclass(frozen=True)
class Config:
    path: str
    role: str
    secret: bytes
    state_dir: str = "/run/carpool"
    config_dir: str = ""  # the versioned document store; "" = state_dir
    document: document.Document | None = None
    notify: str = ""
    notify_timeout: float = 5.0
    log_level: str = "info"
    restart_limit: int = 3  # more restarts in 5 min: pacified (0 = no protection)
    watchdog: float = -1.0  # s of a silent worker loop before the supervisor kills it;
    # -1 = automatic (watchdog_timeout), 0 = off
    rt_priority: int = 10  # SCHED_RR priority of the election's loop (node/sched.py); 0 off
    control_group: str = ""  # unit.control_group as written: its members may use the control
    control_gid: int | None = None  # socket besides root (its gid; None: root only)
    protocol: str = "carp"
    auth: str = "carpool"  # ha.auth: the carpool advert, or CARP's HMAC (protocol carp)
    vhid: int = 1
    ha_timeout: int = 3
    fast: bool = False
    fast_interval_ms: int = 20
    liveness_ms: int = LIVENESS_AUTO[0]  # ha.liveness_ms resolved (unset: automatic)
    liveness_multiplier: int = LIVENESS_AUTO[1]
    preferred: str = "none"
    initial_wait: float = 0.0
    transport: str = "multicast"
    vmac: bool = False
    garp_count: int = 3
    advskew_none: int = 0
    priority_none: int = 100
    interfaces: tuple[Interface, ...] = field(default_factory=tuple)
    web: WebSettings = WebSettings()

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
        return vmac_for(self.vhid)

    @property
    def checked(self) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces if i.check)

    @property
    def heartbeats(self) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces if i.heartbeat)

    @property
    def primary(self) -> Interface:
        """The interface whose addresses name the units as a whole — the one rule for "the
        partner's address": where sync connects, what the WUI binds and links to, what ranks
        compare. The first checked interface with shared addresses (the client LAN), else
        the first checked one, else the first."""
        checked = self.checked
        return next((i for i in checked if i.shared), checked[0] if checked else self.interfaces[0])

    @property
    def own_address(self) -> Address:
        return self.primary.own(self.role)

    @property
    def partner_address(self) -> Address:
        return self.primary.partner(self.role)

    @property
    def unit_name(self) -> str:
        """`units.<role>.name`, else the role: what status and the WUI call this unit."""
        return _unit_name(self.document, self.role)

    @property
    def partner_name(self) -> str:
        return _unit_name(self.document, self.partner_role)

    @property
    def partner_role(self) -> str:
        return "second" if self.role == "first" else "first"

    @property
    def socket_path(self) -> str:
        return str(Path(self.state_dir) / "carpool.sock")

    # -- the WUI (local [web] table, defaults resolved) ------------------------------------
    @property
    def web_bind(self) -> str:
        return self.web.bind or str(self.own_address)

    @property
    def web_cert(self) -> str:
        return self.web.cert or str(Path(self.state_dir) / "web" / "cert.pem")

    @property
    def web_key(self) -> str:
        return self.web.key or str(Path(self.state_dir) / "web" / "key.pem")

    @property
    def partner_url(self) -> str:
        if self.web.partner_url:
            return self.web.partner_url.rstrip("/") + "/"
        address = self.partner_address
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"https://{host}/" if self.web.port == 443 else f"https://{host}:{self.web.port}/"


def _unit_name(doc: document.Document | None, role: str) -> str:
    name = getattr(doc.units, role).name if doc is not None else ""
    return name or role


T = TypeVar("T")


class _Checker:
    """Reads typed values out of a TOML table and records every problem."""

    def __init__(self, path: str):
        self.path = path
        self.errors: list[str] = []

    def fail(self, key: str, why: str) -> None:
        self.errors.append(f"{self.path}: {key}: {why}")

    def unknown(self, table: dict[str, Any], known: set[str], prefix: str) -> None:
        for key in sorted(set(table) - known):
            self.fail(f"{prefix}{key}", "unknown key")

    def get(
        self,
        table: dict[str, Any],
        key: str,
        kind: type[T] | tuple[type[T], ...],
        default: T,
        prefix: str,
        required: bool = False,
    ) -> T:
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

    def choice(
        self, table: dict[str, Any], key: str, choices: tuple[str, ...], default: str, prefix: str
    ) -> str:
        value = self.get(table, key, str, default, prefix)
        if value not in choices:
            self.fail(prefix + key, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
            return default
        return value

    @overload
    def number(
        self,
        table: dict[str, Any],
        key: str,
        lo: int,
        hi: int,
        default: int,
        prefix: str,
        kind: type[int],
    ) -> int: ...

    @overload
    def number(
        self, table: dict[str, Any], key: str, lo: float, hi: float, default: float, prefix: str
    ) -> float: ...

    def number(
        self,
        table: dict[str, Any],
        key: str,
        lo: float,
        hi: float,
        default: float,
        prefix: str,
        kind: type[float] | tuple[type[int], type[float]] = (int, float),
    ) -> float:
        """A number in lo..hi: an int or a float, or with kind=int an int only."""
        value = self.get(table, key, kind, default, prefix)
        if not lo <= value <= hi:
            self.fail(prefix + key, f"must be between {lo} and {hi}, not {value}")
            return default
        return value

    def address(self, value: str, key: str) -> Address | None:
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            self.fail(key, f"not an IPv4 or IPv6 address: {value!r}")
            return None


_UNIT_KEYS = {
    "role",
    "secret",
    "state_dir",
    "config_dir",
    "notify",
    "notify_timeout",
    "log_level",
    "restart_limit",
    "watchdog",
    "rt_priority",
    "control_group",
}
_WEB_KEYS = {"enabled", "bind", "port", "cert", "key", "partner_url"}
LOCAL_TABLES = ("unit", "web")  # a unit's own file only; never part of the synced document


def _web(c: _Checker, table: Any) -> WebSettings:
    if not isinstance(table, dict):
        c.fail("web", "must be a table")
        return WebSettings()
    c.unknown(table, _WEB_KEYS, "web.")
    bind = c.get(table, "bind", str, "", "web.")
    if bind:
        c.address(bind, "web.bind")
    url = c.get(table, "partner_url", str, "", "web.")
    if url and not url.startswith(("https://", "http://")):
        c.fail("web.partner_url", f"must start with https://, not {url!r}")
    return WebSettings(
        enabled=c.get(table, "enabled", bool, True, "web."),
        bind=bind,
        port=c.number(table, "port", 1, 65535, 443, "web.", kind=int),
        cert=c.get(table, "cert", str, "", "web."),
        key=c.get(table, "key", str, "", "web."),
        partner_url=url,
    )


def _of_family(addresses: tuple[Any, ...], version: int) -> Any:
    return next((a for a in addresses if a.version == version), None)


def _iface(i: document.Interface) -> Interface:
    first, second = i.addresses("first"), i.addresses("second")
    return Interface(
        name=i.name,
        first=_of_family(first, 4) or first[0],  # IPv4 when it has one
        second=_of_family(second, 4) or second[0],
        first6=_of_family(first, 6),
        second6=_of_family(second, 6),
        check=i.check or i.heartbeat,
        heartbeat=i.heartbeat,
        shared=tuple(ipaddress.ip_interface(c) for c in i.shared),
        ping_target=ipaddress.ip_address(i.ping_target) if i.ping_target else None,
        ping_interval=float(i.ping_interval),
    )


class _ControlGroup(TypedDict):
    control_group: str
    control_gid: int | None


def _control_group(c: _Checker, unit: dict[str, Any]) -> _ControlGroup:
    """unit.control_group: a group name, or a number (its gid); "" = none (root only)."""
    name = c.get(unit, "control_group", str, "", "unit.")
    gid: int | None = None
    if name.isdigit():
        gid = int(name)
    elif name:
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            c.fail("unit.control_group", f"no such group {name!r}")
    return _ControlGroup(control_group=name, control_gid=gid)


class _Local(TypedDict, total=False):
    """A unit's local settings (the [unit] and [web] tables) as config_from takes them."""

    state_dir: str
    config_dir: str
    notify: str
    notify_timeout: float
    log_level: str
    restart_limit: int
    watchdog: float
    rt_priority: int
    control_group: str
    control_gid: int | None
    web: WebSettings


def parse_config(doc: dict[str, Any], path: str = "<config>") -> Config:
    """The local [unit] table plus the appliance document (every other table)."""
    c = _Checker(path)
    unit = doc.get("unit", {})
    if not isinstance(unit, dict):
        raise ConfigError(f"{path}: unit: must be a table")
    c.unknown(unit, _UNIT_KEYS, "unit.")
    role = c.choice(unit, "role", ROLES, "first", "unit.") if "role" in unit else None
    if role is None:
        c.fail("unit.role", "required key is missing (first or second)")
    text = c.get(unit, "secret", str, "", "unit.", required=True)
    secret = text.encode()
    if "secret" in unit and len(text) < SECRET_MIN:
        c.fail(
            "unit.secret",
            f"at least {SECRET_MIN} characters, not {len(text)} (the partner shared secret: "
            "the same on both units)",
        )
    if len(secret) > SECRET_MAX:
        c.fail("unit.secret", f"at most {SECRET_MAX} bytes (the CARP HMAC key is 20 bytes)")
    local = _Local(
        state_dir=c.get(unit, "state_dir", str, "/run/carpool", "unit."),
        config_dir=c.get(unit, "config_dir", str, "", "unit."),
        notify=c.get(unit, "notify", str, "", "unit."),
        notify_timeout=float(c.number(unit, "notify_timeout", 0.1, 60, 5.0, "unit.")),
        log_level=c.choice(unit, "log_level", LOG_LEVELS, "info", "unit."),
        restart_limit=int(c.number(unit, "restart_limit", 0, 1000, 3, "unit.")),
        watchdog=float(c.number(unit, "watchdog", 0, 600, 0, "unit."))
        if "watchdog" in unit
        else -1.0,
        rt_priority=int(c.number(unit, "rt_priority", 0, 99, 10, "unit.", kind=int)),
        **_control_group(c, unit),
        web=_web(c, doc.get("web", {})),
    )
    try:
        appliance = document.parse_document({k: v for k, v in doc.items() if k not in LOCAL_TABLES})
    except document.DocumentError as e:
        c.errors += [f"{path}: {p}" for p in e.problems]
        appliance = None
    if c.errors or role is None or appliance is None:  # either is None only with an error
        raise ConfigError("\n".join(c.errors))
    return config_from(appliance, path=path, role=role, secret=secret, **local)


def with_document(cfg: Config, doc: document.Document) -> Config:
    """cfg's local settings with another appliance document."""
    return config_from(
        doc,
        path=cfg.path,
        role=cfg.role,
        secret=cfg.secret,
        state_dir=cfg.state_dir,
        config_dir=cfg.config_dir,
        notify=cfg.notify,
        notify_timeout=cfg.notify_timeout,
        log_level=cfg.log_level,
        restart_limit=cfg.restart_limit,
        watchdog=cfg.watchdog,
        rt_priority=cfg.rt_priority,
        control_group=cfg.control_group,
        control_gid=cfg.control_gid,
        web=cfg.web,
    )


def config_from(
    doc: document.Document, *, path: str, role: str, secret: bytes, **local: Unpack[_Local]
) -> Config:
    """The runtime view of one unit: its local settings and the appliance document."""
    ha = doc.ha
    local["config_dir"] = local.get("config_dir") or local.get("state_dir", "/run/carpool")
    return Config(
        path=path,
        role=role,
        secret=secret,
        **local,
        document=doc,
        protocol=ha.protocol,  # ha.fast never changes it: carpool adverts stay authenticated
        auth=ha.auth,
        vhid=ha.vhid,
        ha_timeout=ha.ha_timeout,
        fast=ha.fast,
        fast_interval_ms=ha.fast_interval_ms,
        liveness_ms=LIVENESS_AUTO[0] if ha.liveness_ms is None else ha.liveness_ms,
        liveness_multiplier=(
            LIVENESS_AUTO[1] if ha.liveness_multiplier is None else ha.liveness_multiplier
        ),
        preferred=ha.preferred,
        initial_wait=float(ha.initial_wait),
        transport=ha.transport,
        vmac=ha.vmac,
        garp_count=ha.garp_count,
        advskew_none=ha.advskew,
        priority_none=ha.priority,
        interfaces=tuple(_iface(i) for i in doc.interface),
    )


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
