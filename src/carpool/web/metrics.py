"""/metrics: the daemon's status as Prometheus metrics, read at scrape time (own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..terms import SyncState

STATES = ("init", "backup", "master")


class StatusCollector:
    """Collects from a snapshot taken just before the scrape (status, nft counters, HAProxy
    stats), so nothing blocking runs inside generate_latest()."""

    def __init__(self) -> None:
        self.snapshot: tuple[dict, list, list] | None = None

    def collect(self):
        if self.snapshot is None:
            return
        s, nft, haproxy = self.snapshot
        state = GaugeMetricFamily(
            "carpool_state", "1 for the unit's current HA state", labels=["state"]
        )
        for name in STATES:
            state.add_metric([name], 1.0 if s["state"] == name else 0.0)
        yield state
        yield _gauge(
            "carpool_active", "1 if this unit holds the shared addresses", s["state"] == "master"
        )
        c = s["counters"]
        yield _counter("carpool_transitions", "HA state changes", c["transitions"])
        yield _counter("carpool_adverts_sent", "adverts sent", c["adverts_sent"])
        yield _counter("carpool_adverts_received", "valid adverts received", c["adverts_received"])
        yield _counter(
            "carpool_adverts_stale",
            "valid adverts of an older round than one heard on another path (not re-applied)",
            c.get("adverts_stale", 0),
        )
        yield _counter(
            "carpool_adverts_again",
            "valid adverts of a round already heard on another path (a sign of life of theirs)",
            c.get("adverts_again", 0),
        )
        yield _counter(
            "carpool_advert_send_errors", "adverts that could not be sent", c["send_errors"]
        )
        drops = CounterMetricFamily(
            "carpool_adverts_dropped", "adverts dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(s["drops"].items()):
            drops.add_metric([reason], n)
        yield drops
        for name, doc, counts in (
            (
                "carpool_sync_events",
                "config sync events (frames, refusals, drops), by kind",
                s["sync"].get("counters", {}),
            ),
            (
                "carpool_relay_events",
                "adverts relayed over 6973 and what was dropped",
                s.get("relay", {}).get("counters", {}),
            ),
            ("carpool_doctor_events", "doctor probes and reports, by kind", s.get("doctor", {})),
        ):
            family = CounterMetricFamily(name, doc, labels=["kind"])
            for kind, n in sorted(counts.items()):
                family.add_metric([kind], n)
            yield family
        yield _counter(
            "carpool_control_refused",
            "control socket connections refused (neither root nor unit.control_group)",
            s.get("control", {}).get("refused", 0),
        )
        yield _gauge("carpool_demote", "failed HA checks (the demotion counter)", s["demote"])
        partner = GaugeMetricFamily(
            "carpool_partner_ping_ok",
            "1 if the partner answers ICMP on the interface",
            labels=["interface"],
        )
        alive = GaugeMetricFamily(
            "carpool_partner_advert_alive",
            "1 if the partner's adverts are heard on the interface",
            labels=["interface"],
        )
        link = GaugeMetricFamily(
            "carpool_link_up", "1 if the interface's link is up", labels=["interface"]
        )
        for name, p in s["partner"].items():
            partner.add_metric([name], 1.0 if p["ping_ok"] else 0.0)
            alive.add_metric([name], 1.0 if p["advert_alive"] else 0.0)
            link.add_metric([name], 1.0 if p["link_up"] else 0.0)
        yield partner
        yield alive
        yield link
        y = s["sync"]
        yield _gauge(
            "carpool_config_version", "configuration version in use", s["config"]["version"]
        )
        if y.get("partner_version") is not None:
            yield _gauge(
                "carpool_sync_partner_version",
                "the partner's configuration version",
                y["partner_version"],
            )
        if y.get("lag") is not None:
            yield _gauge("carpool_sync_lag", "our version minus the partner's", y["lag"])
        yield _gauge(
            "carpool_sync_ok",
            "1 if the last sync with the partner succeeded",
            y.get("state") == SyncState.IN_SYNC,
        )
        servers = GaugeMetricFamily(
            "carpool_real_server_up",
            "1 if the real server passes its health check",
            labels=["service", "address", "port"],
        )
        for r in s["dataplane"]["servers"]:
            servers.add_metric(
                [r["service"], r["address"], str(r["port"])], 1.0 if r["up"] else 0.0
            )
        yield servers
        l4, l7 = s["dataplane"]["l4"], s["dataplane"]["l7"]
        yield _counter("carpool_l4_applies", "nftables rule set loads", l4["applies"])
        yield _counter("carpool_l4_apply_failures", "nftables loads that failed", l4["failures"])
        yield _counter("carpool_l7_reloads", "HAProxy reloads", l7["reloads"])
        yield _gauge("carpool_l7_running", "1 if the managed HAProxy runs", l7["running"])
        packets = CounterMetricFamily(
            "carpool_l4_packets",
            "packets counted by nftables rules of the carpool table",
            labels=["counter"],
        )
        octets = CounterMetricFamily(
            "carpool_l4_bytes", "bytes counted by nftables rules", labels=["counter"]
        )
        for name, p, b in nft:
            packets.add_metric([name], p)
            octets.add_metric([name], b)
        yield packets
        yield octets
        sessions = CounterMetricFamily(
            "carpool_l7_sessions", "HAProxy sessions (show stat stot)", labels=["proxy", "server"]
        )
        current = GaugeMetricFamily(
            "carpool_l7_current_sessions", "HAProxy current sessions", labels=["proxy", "server"]
        )
        bytes_out = CounterMetricFamily(
            "carpool_l7_bytes_out", "HAProxy bytes sent to clients", labels=["proxy", "server"]
        )
        bytes_in = CounterMetricFamily(
            "carpool_l7_bytes_in", "HAProxy bytes received from clients", labels=["proxy", "server"]
        )
        requests = CounterMetricFamily(
            "carpool_l7_requests", "HTTP requests (frontends)", labels=["proxy"]
        )
        answers = CounterMetricFamily(
            "carpool_l7_responses",
            "HTTP answers by status class",
            labels=["proxy", "server", "class"],
        )
        response = GaugeMetricFamily(
            "carpool_l7_response_time_ms",
            "average response time of the last 1024 requests (backends and servers)",
            labels=["proxy", "server"],
        )
        for row in haproxy:
            labels = [row["pxname"], row["svname"]]
            sessions.add_metric(labels, _num(row.get("stot")))
            current.add_metric(labels, _num(row.get("scur")))
            bytes_out.add_metric(labels, _num(row.get("bout")))
            bytes_in.add_metric(labels, _num(row.get("bin")))
            if row["svname"] == "FRONTEND":
                requests.add_metric([row["pxname"]], _num(row.get("req_tot")))
            else:
                response.add_metric(labels, _num(row.get("rtime")))
            for c in "12345":
                if row.get(f"hrsp_{c}xx"):
                    answers.add_metric([*labels, f"{c}xx"], _num(row.get(f"hrsp_{c}xx")))
        yield sessions
        yield current
        yield bytes_out
        yield bytes_in
        yield requests
        yield answers
        yield response
        expiry = GaugeMetricFamily(
            "carpool_certificate_expiry_timestamp_seconds",
            "when a certificate (the earliest in its chain) stops being valid",
            labels=["name"],
        )
        for cert in s.get("certificates", ()):
            expiry.add_metric([cert["name"]], cert["not_after"])
        yield expiry


def _num(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def _gauge(name: str, doc: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))


class Metrics:
    """One per daemon: its own registry (never the global one)."""

    def __init__(self):
        self.collector = StatusCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def render(self, status: dict, nft: list, haproxy: list) -> bytes:
        self.collector.snapshot = (status, nft, haproxy)
        try:
            return generate_latest(self.registry)
        finally:
            self.collector.snapshot = None
