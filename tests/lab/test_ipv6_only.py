"""An IPv6-only pair (`carpool lab up --ipv6-only`): no IPv4 address on any lab link, and the
pair still elects one active unit, syncs its configuration on 6973, serves L4 and http
virtual services, runs conntrackd and HAProxy's peers, answers the WUI and /metrics, passes
the doctor and fails over — all of it over IPv6. The WUI in Chromium at the units' IPv6
addresses (the host reaches the lab from 2001:2::fe) takes an IPv6 service."""

from __future__ import annotations

import json
import sys

from browser import needs_chromium
from webclient import client, wui_ready

from carpool.lab.topology import CLIENT, SHARED_LAN6, SHARED_SRV6, UNIT_ADDR6
from carpool.lab.units import WUI_PASSWORD, WUI_USER

LAB_OPTIONS = {"ipv6_only": True, "servers": 3}
SHARED6 = {SHARED_LAN6, SHARED_SRV6}
VIP6 = SHARED_LAN6.split("/")[0]
SERVERS = {f"cp-r{i}" for i in range(1, 4)}
ROLE = {"a": "first", "b": "second"}
TAKEOVER = 10.0

_GET = (
    "import base64, ssl, sys, urllib.request\n"
    "ctx = ssl.create_default_context(); ctx.check_hostname = False\n"
    "ctx.verify_mode = ssl.CERT_NONE\n"
    "req = urllib.request.Request(sys.argv[1])\n"
    "req.add_header('Authorization', 'Basic ' + base64.b64encode(sys.argv[2].encode()).decode())\n"
    "sys.stdout.write(urllib.request.urlopen(req, timeout=5, context=ctx).read().decode())\n"
)


def other(unit: str) -> str:
    return "b" if unit == "a" else "a"


def held(lab, unit: str) -> set[str]:
    out = lab.exec(unit, ["ip", "-j", "addr", "show"], check=True).stdout
    return {
        f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"]
    } & SHARED6


def test_no_ipv4_on_the_links_and_one_active_unit_holds_the_ipv6_addresses(healed_lab):
    lab = healed_lab
    for node in ("a", "b", CLIENT):
        out = lab.exec(node, ["ip", "-j", "-4", "addr", "show"], check=True).stdout
        assert [link["ifname"] for link in json.loads(out) if link["addr_info"]] == ["lo"]
    master = lab.wait_for_master()
    lab.wait_for(
        lambda: held(lab, master) == SHARED6 and not held(lab, other(master)),
        TAKEOVER,
        what=f"{master} holds {sorted(SHARED6)}",
    )
    status = lab.unit_status(other(master))
    assert all(p["advert_alive"] for p in status["partner"].values()), status["partner"]
    assert status["drops"] == {}, status["drops"]
    assert lab.reaches(CLIENT, VIP6)


def test_sync_state_sync_and_the_wui_run_over_ipv6(healed_lab):
    lab = healed_lab
    master = lab.wait_for_master()
    standby = other(master)
    lab.exec(master, ["carpool", "config", "set", "appliance.description", "v6 only"], check=True)
    lab.wait_for(
        lambda: (
            lab.unit_status(standby)["config"] == lab.unit_status(master)["config"]
            and lab.unit_status(master)["sync"]["state"] == "in sync"
        ),
        15,
        what="the standby has the new version over 6973 (IPv6)",
    )
    for unit in ("a", "b"):
        dataplane = lab.unit_status(unit)["dataplane"]
        assert dataplane["state_sync"]["running"], dataplane["state_sync"]  # conntrackd
        assert dataplane["l7"]["pid"], dataplane["l7"]  # HAProxy, peers over the heartbeat
    address = UNIT_ADDR6[master]["eth0"].split("/")[0]
    metrics = lab.exec(
        CLIENT,
        [
            sys.executable,
            "-I",
            "-c",
            _GET,
            f"https://[{address}]/metrics",
            f"{WUI_USER}:{WUI_PASSWORD}",
        ],
        timeout=20,
    )
    assert metrics.returncode == 0, metrics.stderr
    assert "carpool_" in metrics.stdout


def test_virtual_services_spread_over_ipv6_servers_and_survive_a_failover(healed_lab):
    lab = healed_lab
    master = lab.wait_for_master()
    urls = (f"http://[{VIP6}]/", f"http://[{VIP6}]:8080/")

    def served(url: str, tries: int = 12) -> set[str]:
        return {(lab.http_get(CLIENT, url) or "").strip() or "(failed)" for _ in range(tries)}

    for url in urls:
        lab.wait_for(lambda url=url: served(url) == SERVERS, 15, what=f"{url} spread")
    lab.term(master)
    lab.wait_for(
        lambda: lab.unit_status(other(master))["state"] == "master",
        TAKEOVER,
        what="the partner takes over",
    )
    for url in urls:
        lab.wait_for(lambda url=url: served(url, 6) <= SERVERS, TAKEOVER, what=f"{url} served")


def test_the_doctor_passes_over_ipv6(healed_lab):
    lab = healed_lab
    lab.wait_for_master()
    for unit in ("a", "b"):
        proc = lab.exec(unit, ["carpool", "doctor", "--json"], timeout=60)
        checks = json.loads(proc.stdout)["checks"]
        assert proc.returncode == 0, [c for c in checks if not c["ok"]]
        names = {c["name"] for c in checks}
        assert {"multicast eth0/ipv6: us -> partner", "icmpv6 eth0/ipv6"} <= names, names
        assert not any(n.startswith("multicast eth0:") for n in names), names  # no IPv4 path


@needs_chromium
def test_the_wui_over_ipv6_shows_the_pair_and_takes_an_ipv6_service(lab, pages):
    from playwright.sync_api import expect

    active = lab.wait_for_master()
    standby = other(active)
    wui_ready(lab)
    page = pages(active)
    # the first unit's links, each with its partner's (the second unit's) IPv6 address
    for ifname in ("eth0", "eth2"):
        partner = UNIT_ADDR6["b"][ifname].split("/")[0]
        expect(page.locator("#unit-first table.ifaces")).to_contain_text(partner)
    expect(page.locator(f"#unit-{ROLE[active]}")).to_have_attribute("data-icon", "active")
    page.goto(lab.wui_url(active) + "services")
    page.click("#add-vs")
    page.fill("input[name=name]", "web6-ui")
    page.fill("input[name=address]", VIP6)
    page.fill("input[name=port]", "9100")
    page.fill("textarea[name=real_servers]", "[2001:2:0:2::101]:80\n[2001:2:0:2::102]:80 2")
    page.click("#save-vs")
    expect(page.locator("#done")).to_contain_text("vs add web6-ui")
    row = page.locator("tr[data-vs=web6-ui]")
    expect(row).to_contain_text(f"[{VIP6}]:9100/tcp")
    expect(row).to_contain_text("[2001:2:0:2::102]:80 weight 2")
    try:
        view = pages(standby)
        view.goto(lab.wui_url(standby) + "services")
        expect(view.locator("#active-link")).to_have_attribute("href", lab.wui_url(active))

        def shown_on_standby():
            view.reload()
            return view.locator("tr[data-vs=web6-ui]").count() == 1

        lab.wait_for(shown_on_standby, 10, interval=0.3, what="web6-ui on the standby's WUI")
    finally:
        with client(active, lab=lab) as c:  # leave the lab as found
            assert c.delete("/api/v1/virtual-services/web6-ui").status_code == 200
