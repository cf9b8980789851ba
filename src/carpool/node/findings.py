"""The doctor's findings: pure functions from the observations of carpool.node.doctor to a list
of checks, each with its name (naming its topic: multicast, icmp, 6973, secret, mac, heartbeat,
vhid, ha-check, version, clock, latency), ok or not, what was observed and how to fix it.

The heartbeat link is judged once, by the `heartbeat` check (its adverts, its pings, its link),
so a pulled cable fails that check and nothing else; every other path gets its own checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import certs
from ..terms import Warn

MAX_LATENCY_MS = 100.0  # LoadMaster's requirement for the units' round trip
MAX_CLOCK_OFFSET = 1.0  # s: logs, history and certificates of the two units line up

HINT_MULTICAST = (
    "Adverts ({transport}, IP protocol 112{group}) do not get through on {iface}. "
    "Likely: IGMP snooping without a querier, a cloud or hypervisor network that "
    "drops multicast, or a firewall between the units. Fix: allow IP protocol 112 "
    "to 224.0.0.18 on this segment (or an IGMP querier), or set ha.transport = "
    '"unicast".'
)
HINT_MULTICAST6 = (
    "IPv6 adverts ({transport}, next header 112{group}) do not get through on {iface}. "
    "Likely: MLD snooping without a querier (the IPv6 twin of IGMP snooping), a cloud or "
    "hypervisor network that drops IPv6 multicast, or a firewall between the units. Fix: "
    "allow next header 112 to ff02::12 on this segment (or an MLD querier), or set "
    'ha.transport = "unicast". The other family\'s adverts keep the pair together meanwhile.'
)
HINT_ICMP6 = (
    "ICMPv6 echo between the units is filtered on {iface}: the doctor cannot see whether "
    "IPv6 reaches the partner. Fix: allow ICMPv6 echo request/reply (and neighbour "
    "discovery) between the units' IPv6 addresses."
)
HINT_SHARED6 = (
    "IPv6 shared address {cidr} is {state} on the active unit: clients cannot reach it. "
    "Likely: another host claims it (duplicate address detection), or it was removed by "
    "hand. Fix: find the other holder (ip -6 neigh on a client), then `carpool failover` "
    "twice or restart the unit to add it afresh."
)
HINT_WRONG_MAC = (
    "From the standby, a node on the clients' link, {address} resolves to {mac}, not to the "
    "active unit's {want}: clients with that entry send to the wrong host. Likely: another "
    "host answers ARP / neighbour discovery for the address (an address conflict), or an "
    "entry that neither the gratuitous ARP nor the unsolicited NA replaced (a static entry, "
    "or a switch dropping them). Fix: find {mac} (the switch's MAC table, `ip neigh` on a "
    "client) and remove the address or the entry there."
)
HINT_UNRESOLVED = (
    "From the standby, {address} did not resolve (no ARP / neighbour discovery answer): "
    "clients on that link cannot reach it either. Likely: the active unit does not hold it, "
    "or a filter drops ARP / ICMPv6 neighbour discovery. Fix: `carpool status` on the active "
    "unit, and allow ARP and ICMPv6 types 135/136 on the link."
)
HINT_ACTIVE_MAC = (
    "The active unit's MAC on the link of {address} is unknown here (its own addresses did not "
    "resolve), so the MAC clients use cannot be checked. Fix the ICMP checks first."
)
HINT_ICMP = (
    "ICMP echo between the units is filtered on {iface}: the partner's status in the "
    "WUI and the ping checks go blind. Fix: allow ICMP echo request/reply between the "
    "units' addresses."
)
HINT_6973 = (
    "TCP {port} to the partner is not reachable: configuration changes do not reach "
    "it. Likely: a firewall or security group between the units. Fix: allow TCP {port} "
    "both ways between the units' addresses."
)
HINT_SECRET = (
    "The partner does not accept our secret (sync and adverts): the units never "
    "trust each other's adverts, and both may become active. Fix: set the same "
    "unit.secret on both units."
)
HINT_MAC = (
    "Frames sent from the virtual MAC {vmac} do not arrive on {iface}: a switch or "
    "hypervisor refuses forged source MACs. Fix: allow MAC address changes and forged "
    "transmits (VMware), MAC address spoofing (Hyper-V), or turn ha.vmac off and rely on "
    "gratuitous ARP."
)
HINT_HEARTBEAT = (
    "The heartbeat link {iface} does not carry adverts both ways. With it, one cut "
    "path never makes two active units. Fix: check the cable between the units' "
    "{iface} and that both ends are up."
)
HINT_NO_HEARTBEAT = (
    "No heartbeat link is configured: a single cut path can make both units "
    "active. Fix: cable the units' spare ports directly and set "
    "heartbeat = true on that interface."
)
HINT_VHID = (
    "Another CARP/VRRP speaker ({who}) uses VHID {vhid} on {iface}: its adverts and "
    "ours fight over the same virtual router (and virtual MAC). Fix: give this pair or "
    "the other device a VHID unique on the segment (ha.vhid)."
)
HINT_HA_CHECK = (
    "{iface} carries shared addresses but is not used for HA checks: if it fails, "
    "the active unit stays active and the addresses become unreachable. Fix: set "
    "check = true on {iface}."
)
HINT_VERSION = "The units run different {what}. Fix: {fix}."
HINT_CLOCK = (
    "The units' clocks are {offset:.1f} s apart: logs, configuration history and "
    "certificates do not line up. Fix: run NTP (chrony, systemd-timesyncd) on both."
)
HINT_LATENCY = (
    "The units are {rtt:.0f} ms apart (round trip); an HA pair needs < "
    f"{MAX_LATENCY_MS:.0f} ms or adverts arrive too late. Fix: put the units on the "
    "same site or a faster link."
)


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(o: dict) -> list[Finding]:
    out: list[Finding] = []
    ifaces = {n: i for n, i in o["interfaces"].items() if i["socket"]}
    reports = o.get("reports") or {}
    # Over 6973 the report is sent once all our probes are in: the fullest count of them.
    partner_report = o.get("relayed_report") or next(iter(reports.values()), None)
    heartbeat = [n for n, i in ifaces.items() if i["heartbeat"]]
    for name, iface in ifaces.items():
        if iface["heartbeat"]:
            out.append(_heartbeat(o, name, iface, reports, partner_report))
            continue
        out += _paths(o, name, iface, reports, partner_report)
    if not heartbeat:
        out.append(
            Finding("heartbeat link", False, "no interface has heartbeat = true", HINT_NO_HEARTBEAT)
        )
    out += _shared6(o)
    out += _neighbours(o)
    out += _certificates(o)
    out += _detection(o)
    out += _vhid(o, ifaces)
    out += _auth(o)
    out += _ha_checks(o)
    out += _sync(o, partner_report)
    out += _versions(o, partner_report)
    out += _clock_latency(o, partner_report)
    return out


def _transport_words(o: dict, name: str = "") -> tuple[str, str]:
    transport = o.get("transport", "multicast")
    group = "ff02::12" if name.endswith("/ipv6") else "224.0.0.18"
    return transport, f" to {group}" if transport == "multicast" else ""


def _shared6(o: dict) -> list[Finding]:
    """The active unit's IPv6 shared addresses as its kernel holds them."""
    state = o.get("shared6") or {}
    if not state:
        return []
    bad = {cidr: s for cidr, s in state.items() if s != "ok"}
    detail = ", ".join(f"{cidr} {s}" for cidr, s in state.items())
    hint = " ".join(HINT_SHARED6.format(cidr=c, state=s) for c, s in bad.items())
    return [Finding("ipv6 shared addresses", not bad, detail, hint)]


HINT_DETECTION = (
    "Only the advert timer tells the standby that the partner is gone ({why}). Fix: a "
    "heartbeat cable with heartbeat = true, another checked link, ha.liveness_ms unset (automatic) or above 0."
)


def _detection(o: dict) -> list[Finding]:
    """Which detector tells the standby the partner is gone (status "detection"): the fast one
    on the heartbeat link, or the advert timer alone."""
    lv = o.get("liveness")
    if lv is None:
        return []
    shown = "; ".join(o.get("detection") or [])
    if lv.get("off_reason"):
        hint = HINT_DETECTION.format(why=lv["off_reason"])
        return [Finding("fast detection", False, shown, hint)]
    if lv.get("state") in ("blind", "gone"):
        return [Finding("fast detection", False, f"{lv.get('reason')}; {shown}", "")]
    return [Finding("fast detection", True, f"{lv.get('state')}: {shown}")]


def _certificates(o: dict) -> list[Finding]:
    """The TLS certificates of https services: none expired or expiring within 30 days."""
    dates = o.get("certificates") or []
    if not dates:
        return []
    now = o.get("time") or 0.0
    late = certs.warnings(dates, now)
    shown = ", ".join(
        f"{c['name']} {max(0.0, (c['not_after'] - now) / 86400):.0f} days left" for c in dates
    )
    return [Finding("certificates", not late, shown, " ".join(late))]


def _neighbours(o: dict) -> list[Finding]:
    """What the standby (as a client on the link) resolves each shared address to."""
    seen = o.get("neighbours") or {}
    if not seen:
        return []
    words, hints = [], []
    for cidr, n in seen.items():
        mac, expected = n.get("mac"), n.get("expected") or []
        address = cidr.split("/")[0]
        if mac is not None and mac in expected:
            words.append(f"{address} -> {mac}")
            continue
        if mac is None:
            words.append(f"{address} unresolved")
            hints.append(HINT_UNRESOLVED.format(address=address))
        elif not expected:
            words.append(f"{address} -> {mac} (the active unit's MAC unknown)")
            hints.append(HINT_ACTIVE_MAC.format(address=address))
        else:
            words.append(f"{address} -> {mac}, not {'/'.join(expected)}")
            hints.append(HINT_WRONG_MAC.format(address=address, mac=mac, want="/".join(expected)))
    return [
        Finding("mac the shared addresses resolve to", not hints, ", ".join(words), " ".join(hints))
    ]


def _delivery(
    o: dict, name: str, reports: dict, partner_report
) -> tuple[tuple[str, bool], tuple[str, bool]]:
    """((detail, ok) us -> partner, (detail, ok) partner -> us) for one path."""
    sent = o.get("sent", {}).get(name, 0)
    if partner_report is None:
        nothing = (
            f"sent {sent} probes; no report from the partner on any path (its daemon "
            "down, or our probes reach it nowhere)",
            False,
        )
        return nothing, nothing
    heard = partner_report.get("heard", {}).get(name, 0)
    back = name in reports
    came = (
        ""
        if back or not o.get("relayed_report")
        else " (it came over the sync port: this direction drops IP protocol 112)"
    )
    return (
        (f"partner heard {heard} of our {sent} probes", heard > 0),
        (
            f"the partner's report on this path {'arrived' if back else 'did not arrive'} "
            f"here{came}",
            back,
        ),
    )


def _paths(o, name, iface, reports, partner_report) -> list[Finding]:
    transport, group = _transport_words(o, name)
    ipv6 = iface.get("family") == 6
    (out_detail, out_ok), (back_detail, back_ok) = _delivery(o, name, reports, partner_report)
    hint = (HINT_MULTICAST6 if ipv6 else HINT_MULTICAST).format(
        transport=transport, group=group, iface=name
    )
    found = [
        Finding(f"{transport} {name}: us -> partner", out_ok, out_detail, "" if out_ok else hint),
        Finding(
            f"{transport} {name}: partner -> us", back_ok, back_detail, "" if back_ok else hint
        ),
    ]
    rtt = o.get("pings", {}).get(name)
    theirs = (partner_report or {}).get("ping", {}).get(name)
    ok = rtt is not None and theirs is not False
    detail = (
        f"our echo: {'no reply' if rtt is None else f'{rtt:.2f} ms'}; "
        f"partner's echo to us: "
        f"{ {True: 'ok', False: 'no reply', None: 'unknown'}[theirs] }"
    )
    icmp_hint = (HINT_ICMP6 if ipv6 else HINT_ICMP).format(iface=name)
    found.append(
        Finding(f"{'icmpv6' if ipv6 else 'icmp'} {name}", ok, detail, "" if ok else icmp_hint)
    )
    if not ipv6 and o.get("vmac") and iface["shared"] and o.get("vmac_sender"):
        found.append(_mac(o, name, partner_report))
    return found


def _mac(o, name, partner_report) -> Finding:
    vmac = o.get("vmac_address", "the virtual MAC")
    if o["vmac_sender"] == "us":
        sent = o.get("vmac_sent", {}).get(name, 0)
        heard = (partner_report or {}).get("vmac_heard", {}).get(name) if partner_report else None
        detail = f"we sent {sent} frames from the virtual MAC; the partner heard " + (
            "nothing (no report)" if heard is None else str(heard)
        )
        ok = bool(heard)
    else:
        heard = o.get("vmac_heard", {}).get(name, 0)
        detail = f"frames from the partner's virtual MAC heard here: {heard}"
        ok = heard > 0
    return Finding(
        f"mac {name}: frames from the virtual MAC",
        ok,
        detail,
        "" if ok else HINT_MAC.format(vmac=vmac, iface=name),
    )


def _heartbeat(o, name, iface, reports, partner_report) -> Finding:
    (out_detail, out_ok), (back_detail, back_ok) = _delivery(o, name, reports, partner_report)
    detail = out_detail if out_detail == back_detail else f"{out_detail}; {back_detail}"
    rtt = o.get("pings", {}).get(name)
    ok = iface["link_up"] and out_ok and back_ok
    detail = (
        f"link {'up' if iface['link_up'] else 'DOWN'}; {detail}; echo "
        f"{'no reply' if rtt is None else f'{rtt:.2f} ms'}"
    )
    return Finding(f"heartbeat {name}", ok, detail, "" if ok else HINT_HEARTBEAT.format(iface=name))


def _vhid(o, ifaces) -> list[Finding]:
    out = []
    foreign = o.get("foreign", [])
    for name in ifaces:
        here = [f for f in foreign if f["interface"] == name]
        if here:
            who = ", ".join(
                f"{f['source']} ({f['kind']}, {f['count']} adverts, last {f['last_ago']:g} s ago)"
                for f in here
            )
            out.append(
                Finding(
                    f"vhid {name}: unique",
                    False,
                    f"foreign speaker: {who}",
                    HINT_VHID.format(who=who, vhid=o.get("vhid", "?"), iface=name),
                )
            )
        else:
            out.append(Finding(f"vhid {name}: unique", True, "no other speaker of our VHID heard"))
    return out


def _auth(o) -> list[Finding]:
    auth = o.get("auth")
    if not auth:
        return []
    notes = auth_notes(auth)
    if not notes:
        return [
            Finding(
                "advert authentication",
                True,
                "carpool adverts: every field authenticated, replays refused",
            )
        ]
    return [Finding("advert authentication", False, str(kind), text) for kind, text in notes]


def _ha_checks(o) -> list[Finding]:
    out = []
    for name, iface in o["interfaces"].items():
        if iface["shared"]:
            ok = iface["check"]
            out.append(
                Finding(
                    f"ha-check {name}",
                    ok,
                    f"shared {', '.join(iface['shared'])}; {'checked' if ok else 'NOT checked'}",
                    "" if ok else HINT_HA_CHECK.format(iface=name),
                )
            )
    return out


def _sync(o, partner_report) -> list[Finding]:
    s = o.get("sync") or {}
    port = o.get("sync_port", 6973)
    reachable = Finding(
        f"{port} sync port reachable",
        bool(s.get("reachable")),
        f"TCP connect {s['connect_ms']:.2f} ms"
        if s.get("reachable")
        else s.get("error", "not tried"),
        "" if s.get("reachable") else HINT_6973.format(port=port),
    )
    if s.get("authenticated") is not None:
        ok = bool(s["authenticated"])
        detail = (
            f"the sync handshake (port {port}) authenticated both ways"
            if ok
            else s.get("error", "authentication failed")
        )
    elif o.get("report_authentic") is not None:  # the sync port is closed: judge by the probes
        ok = bool(o["report_authentic"]) and bool((partner_report or {}).get("authentic", True))
        detail = "sync port closed; the partner's probes " + (
            "carry a valid HMAC" if ok else "fail our HMAC (or ours fail its)"
        )
    else:
        ok, detail = True, "not testable: neither the sync port nor probes reach the partner"
    secret = Finding(
        f"{port} secret (partner shared secret)", ok, detail, "" if ok else HINT_SECRET
    )
    return [reachable, secret]


def _partner_facts(o, partner_report) -> dict:
    s = o.get("sync") or {}
    if s.get("authenticated") and s.get("carpool"):
        return {
            "version": s.get("carpool"),
            "config": s.get("current"),
            "clock_offset": s.get("clock_offset"),
            "via": "sync",
        }
    if partner_report:
        offset = None
        if isinstance(partner_report.get("time"), (int, float)) and o.get("report_received"):
            offset = round(partner_report["time"] - o["report_received"], 3)
        return {
            "version": partner_report.get("version"),
            "config": partner_report.get("config"),
            "clock_offset": offset,
            "via": "probe report",
        }
    return {}


def _versions(o, partner_report) -> list[Finding]:
    facts = _partner_facts(o, partner_report)
    if not facts:
        detail = "the partner answers neither on the sync port nor to probes"
        return [
            Finding("version carpool", False, detail, "Start the partner's daemon."),
            Finding("version config", False, detail, "Start the partner's daemon."),
        ]
    ok = facts["version"] == o["version"]
    out = [
        Finding(
            "version carpool",
            ok,
            f"ours {o['version']}, partner's {facts['version']}",
            ""
            if ok
            else HINT_VERSION.format(
                what="carpool versions", fix="upgrade both units to the same release"
            ),
        )
    ]
    ours, theirs = o.get("config"), facts.get("config")
    ok = list(ours) == list(theirs) if theirs else False
    detail = f"ours {ours[0]} ({ours[1][:12]}), partner's " + (
        f"{theirs[0]} ({theirs[1][:12]})" if theirs else "none"
    )
    out.append(
        Finding(
            "version config",
            ok,
            detail,
            ""
            if ok
            else HINT_VERSION.format(
                what="configuration versions",
                fix="check `carpool config sync` on the active unit (the sync port and the secret)",
            ),
        )
    )
    return out


def _clock_latency(o, partner_report) -> list[Finding]:
    out = []
    facts = _partner_facts(o, partner_report)
    offset = facts.get("clock_offset")
    if offset is None:
        out.append(
            Finding(
                "clock offset",
                False,
                "no clock reading from the partner",
                "Make the sync port or the probes reach the partner.",
            )
        )
    else:
        ok = abs(offset) <= MAX_CLOCK_OFFSET
        out.append(
            Finding(
                "clock offset",
                ok,
                f"partner's clock {offset:+.3f} s from ours (via {facts['via']})",
                "" if ok else HINT_CLOCK.format(offset=abs(offset)),
            )
        )
    rtts = [r for n, r in (o.get("pings") or {}).items() if r is not None]
    s = o.get("sync") or {}
    if s.get("connect_ms") is not None:
        rtts.append(s["connect_ms"])
    if not rtts:
        out.append(
            Finding(
                "latency",
                False,
                "no round trip measured (no echo, no TCP connect)",
                "Allow ICMP or TCP 6973 between the units.",
            )
        )
    else:
        rtt = min(rtts)
        ok = rtt < MAX_LATENCY_MS
        out.append(
            Finding(
                "latency",
                ok,
                f"best round trip {rtt:.2f} ms (< {MAX_LATENCY_MS:.0f} ms needed)",
                "" if ok else HINT_LATENCY.format(rtt=rtt),
            )
        )
    return out


def relayed_only(status: dict, heard: list[str]) -> bool:
    """The partner's adverts reach us over 6973 (node/relay.py) and on no path."""
    ago = (status.get("relay") or {}).get("heard_ago")
    master_down = (status.get("timers") or {}).get("master_down") or 3.0
    return not heard and ago is not None and ago <= master_down


class StatusWarning(str):
    """A warning's text, with its kind."""

    kind: Warn

    def __new__(cls, kind: Warn, text: str) -> StatusWarning:
        self = super().__new__(cls, text)
        self.kind = kind
        return self


WEAK_AUTH = {
    "carp": 'ha.auth = "carp": adverts carry CARP\'s HMAC, which leaves advskew, advbase and '
    "demote unauthenticated and accepts a replayed advert: a host on the segment can keep both "
    'units standby or force a failover. Use ha.auth = "carpool" unless a ucarp or BSD CARP peer '
    "needs it",
    "none": 'protocol = "vrrp3": adverts are not authenticated at all (VRRPv3, for keepalived): '
    "a host on the segment can keep both units standby or force a failover. carpool units "
    'need no VRRP: use protocol = "carp" (ha.auth = "carpool")',
}


def auth_notes(auth: dict | None) -> list[tuple[Warn, str]]:
    """What the adverts' authentication (status["auth"]) leaves open, for status and the
    doctor."""
    if not auth:
        return []
    out = []
    if auth.get("auth") in WEAK_AUTH:
        out.append((Warn.WEAK_AUTH, WEAK_AUTH[auth["auth"]]))
    if len(auth.get("sending") or ()) > 1:
        out.append(
            (
                Warn.ADVERT_FORM,
                f"the partner speaks the older {auth.get('partner_form')} advert form (a release "
                "before this one): answered in it too, as weak as that form, until the partner "
                "is upgraded",
            )
        )
    if auth.get("downgrades"):
        out.append(
            (
                Warn.ADVERT_FORM,
                f"{auth['downgrades']} adverts in the older form dropped from the partner's "
                "address after it spoke the carpool form: a replay by a host on the segment, or "
                "the partner was rolled back to an older release (then restart this unit)",
            )
        )
    return out


def warnings(
    status: dict, partner_ha: dict | None, foreign: list[dict], now: float, fresh: float = 20.0
) -> list[StatusWarning]:
    """The cheap checks the daemon keeps running, for `carpool status` and the WUI."""
    out: list[StatusWarning] = []

    def warn(kind: Warn, text: str) -> None:
        out.append(StatusWarning(kind, text))

    partner = status.get("partner", {})
    answers = [n for n, p in partner.items() if p.get("ping_ok")]
    silent = [n for n in answers if not partner[n].get("advert_alive")]
    heard = [n for n, p in partner.items() if p.get("advert_alive")]
    partner_master = bool(
        partner_ha
        and partner_ha.get("state") == "master"
        and now - partner_ha.get("at", 0) <= fresh
    )
    if status.get("state") == "master" and partner_master:
        warn(
            Warn.MASTER_MASTER,
            "master-master: the partner is active too (it says so on the sync port) "
            + (
                f"and answers ping on {', '.join(answers)}, but none of its adverts "
                f"arrive on {', '.join(silent)}: those paths drop IP protocol 112 "
                "(multicast filtering, IGMP snooping, a firewall)"
                if silent and not heard
                else "- check the secret (bad_hmac drops) and the adverts' paths"
            ),
        )
    elif relayed_only(status, heard):
        warn(
            Warn.ADVERTS_LOST,
            f"adverts lost: none of the partner's adverts arrive on "
            f"{', '.join(partner) or 'any path'}, only over the sync port (6973), "
            f"which keeps this unit {status.get('state')}: those paths drop IP protocol "
            f"112 from the partner to us (a filter, multicast filtering); without 6973 "
            f"both units would be active",
        )
    elif (
        status.get("state") == "master"
        and (status.get("relay") or {}).get("partner_state") == "backup"
    ):
        warn(
            Warn.ADVERTS_LOST,
            f"adverts lost: the partner hears none of our adverts on "
            f"{', '.join(partner) or 'any path'} and takes them over the sync port "
            f"(6973): those paths drop IP protocol 112 from us to the partner; without "
            f"6973 both units would be active",
        )
    elif status.get("state") == "backup" and heard and silent:
        warn(
            Warn.PATH_DROPS,
            f"adverts from the active unit arrive on {', '.join(heard)} but not on "
            f"{', '.join(silent)}, where the partner answers ping: that path drops IP "
            f"protocol 112; if the others fail, both units become active",
        )
    out += [StatusWarning(kind, text) for kind, text in auth_notes(status.get("auth"))]
    for f in foreign:
        warn(
            Warn.FOREIGN_VHID,
            f"vhid {status.get('vhid')} is also used by {f['source']} on "
            f"{f['interface']} ({f['kind']}, last heard {f['last_ago']:g} s ago)",
        )
    for text in certs.warnings(status.get("certificates") or [], now):
        warn(Warn.CERTIFICATE, text)
    return out
