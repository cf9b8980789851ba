"""The WUI in real Chromium (Debian's, driven by Playwright; no browser download) against both
units' real daemons: log in, both units with their roles, a service added on the active unit
shown by the standby, the standby read-only, force failover flipping the icons, a failed login."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import needs_chromium
from webclient import client, login, other, wui_ready

from carpool.lab.units import wui_url

ROLE = {"a": "first", "b": "second"}
DOCS = Path(__file__).resolve().parents[2] / "docs"
WAIT_MS = 10_000
pytestmark = needs_chromium


@pytest.fixture(scope="module")
def pair(lab):
    active = lab.wait_for_master()
    wui_ready(lab)
    return active


def test_a_failed_login_shows_an_error(pair, pages):
    from playwright.sync_api import expect

    page = pages()
    login(page, wui_url(pair), password="not-the-password")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    page.goto(wui_url(pair))  # no session: back to the login page
    assert page.url.endswith("/login")


def test_log_in_and_see_both_units_with_their_roles(lab, pair, pages, tmp_path_factory):
    from playwright.sync_api import expect

    for unit in ("a", "b"):
        page = pages(unit)
        for u, icon, label in ((pair, "active", "Active"), (other(pair), "standby", "Standby")):
            card = page.locator(f"#unit-{ROLE[u]}")
            expect(card).to_have_attribute("data-icon", icon)
            expect(card.locator("[data-role-state]")).to_have_text(label)
        expect(page.locator(f"#unit-{ROLE[unit]} h2")).to_contain_text("(this unit)")
        expect(page.locator("#unit-first table.ifaces")).to_contain_text("eth1 (heartbeat)")
        if unit == pair:
            # the live part refreshes without a reload: wait for one refresh, then keep a picture
            expect(page.locator("#live[data-updated]")).to_have_count(1)
            # docs/dashboard.png is refreshed on request only (a CI run leaves the tree clean)
            shot = (
                DOCS / "dashboard.png"
                if os.environ.get("CARPOOL_SCREENSHOT")
                else tmp_path_factory.mktemp("shot") / "dashboard.png"
            )
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_add_a_service_on_the_active_unit_and_see_it_on_the_standby(lab, pair, pages):
    from playwright.sync_api import expect

    page = pages(pair)
    page.goto(wui_url(pair) + "services")
    page.click("#add-vs")
    page.fill("input[name=name]", "web-ui")
    page.fill("input[name=address]", "198.18.0.99")  # not a shared address
    page.fill("input[name=port]", "eighty")
    page.fill("textarea[name=real_servers]", "198.18.2.101:80\n198.18.2.102:80 2")
    page.click("#save-vs")
    expect(page.locator(".field-error[data-field=port]")).to_contain_text("whole number")
    page.fill("input[name=port]", "9100")
    page.click("#save-vs")
    expect(page.locator(".field-error[data-field=address]")).to_contain_text("not a shared address")
    page.fill("input[name=address]", "198.18.0.10")
    page.click("#save-vs")
    expect(page.locator("#done")).to_contain_text("vs add web-ui")
    expect(page.locator("tr[data-vs=web-ui]")).to_contain_text("198.18.2.102:80 weight 2")

    standby = pages(other(pair))
    standby.goto(wui_url(other(pair)) + "services")

    def shown_on_standby():
        standby.reload()
        return standby.locator("tr[data-vs=web-ui]").count() == 1

    lab.wait_for(shown_on_standby, 10, interval=0.3, what="web-ui on the standby's WUI")
    with client(pair) as c:  # leave the lab as found
        assert c.delete("/api/v1/virtual-services/web-ui").status_code == 200


def test_the_standby_is_read_only_and_links_to_the_active_unit(lab, pair, pages):
    from playwright.sync_api import expect

    page = pages(other(pair))
    page.goto(wui_url(other(pair)) + "services")
    expect(page.locator("#readonly-banner")).to_contain_text("read-only")
    expect(page.locator("#active-link")).to_have_attribute("href", wui_url(pair))
    assert page.locator("#add-vs").count() == 0
    page.goto(wui_url(other(pair)) + "services/new")
    expect(page.locator("#save-vs")).to_be_disabled()
    # a hand-made submission is refused by the daemon too, naming the active unit
    answer = page.evaluate("""async () => {
        const csrf = document.querySelector('input[name=csrf]').value;
        const body = new URLSearchParams({csrf, name: 'sneaky', address: '198.18.0.10',
                                          port: '9200'});
        const r = await fetch('/services/new', {method: 'POST', body});
        return [r.status, await r.text()];
    }""")
    assert answer[0] == 422 and "standby" in answer[1] and wui_url(pair)[8:-1] in answer[1]


def test_upload_a_certificate_and_serve_an_https_service_with_it(lab, pair, pages, tmp_path):
    """Certificates page: the chain and key as files; the service form: type https naming it;
    a client verifying against the lab CA gets that certificate's answer."""
    from playwright.sync_api import expect

    from carpool.lab.pki import LabCA
    from carpool.lab.topology import CLIENT

    ca = LabCA()
    cert = ca.issue("www.lab.test", "198.18.0.10")
    for name, text in (("chain.pem", cert.chain), ("key.pem", cert.key), ("ca.pem", ca.pem)):
        (tmp_path / name).write_text(text)
    page = pages(pair)
    page.goto(wui_url(pair) + "certificates")
    page.fill("#cert-form input[name=name]", "www-ui")
    page.set_input_files("input[name=chain_file]", str(tmp_path / "chain.pem"))
    page.set_input_files("input[name=key_file]", str(tmp_path / "key.pem"))
    page.click("#save-cert")
    expect(page.locator("#done")).to_contain_text("cert add www-ui")
    row = page.locator("tr[data-cert=www-ui]")
    expect(row).to_contain_text("CN=www.lab.test")
    expect(row).to_contain_text("key stored")
    assert "PRIVATE KEY" not in page.content()
    page.goto(wui_url(pair) + "services/new")
    page.fill("input[name=name]", "site-ui")
    page.fill("input[name=address]", "198.18.0.10")
    page.fill("input[name=port]", "443")
    page.select_option("select[name=type]", "https")
    page.fill("input[name=certificate]", "www-ui")
    page.fill("textarea[name=real_servers]", "198.18.2.101:80\n198.18.2.102:80")
    page.click("#save-vs")
    expect(page.locator("#done")).to_contain_text("vs add site-ui")
    try:
        url = "https://www.lab.test/"
        argv = ["curl", "-sS", "--max-time", "3", "--cacert", str(tmp_path / "ca.pem")]
        argv += ["--resolve", "www.lab.test:443:198.18.0.10", url]
        lab.wait_for(
            lambda: lab.exec(CLIENT, argv).stdout.strip() in ("cp-r1", "cp-r2"),
            15,
            what="site-ui answers over https, verified against the lab CA",
        )
    finally:
        with client(pair) as c:  # leave the lab as found
            assert c.delete("/api/v1/virtual-services/site-ui").status_code == 200
            assert c.delete("/api/v1/certificates/www-ui").status_code == 200


def test_the_statistics_graphs_fill_while_a_client_sends_requests(lab, pair, pages):
    from playwright.sync_api import expect

    from carpool.lab.topology import CLIENT

    page = pages(pair)
    chart = page.locator("section[data-vs=web-http] svg.chart").first

    def filled() -> bool:
        for _ in range(10):
            lab.http_get(CLIENT, "http://198.18.0.10:8080/", timeout=1.0)
        page.goto(wui_url(pair) + "stats")
        return int(chart.get_attribute("data-points") or 0) >= 2

    lab.wait_for(filled, 30, interval=0.5, what="the web-http graph has points")
    expect(chart.locator("polyline")).to_have_count(1)
    expect(page.locator("#ha-timeline svg rect").first).to_be_visible()
    page.goto(wui_url(pair))  # the dashboard shows the traffic too
    expect(page.locator("tr[data-vs=web-http] td.traffic")).to_contain_text("req/s")


def test_force_failover_flips_the_icons(healed_lab, pair, pages):
    from playwright.sync_api import expect

    lab = healed_lab
    active = lab.wait_for_master()
    page = pages(active)
    page.goto(wui_url(active) + "failover")
    page.click("#confirm-failover")
    page.wait_for_url(wui_url(active) + "?done=failover")
    # no reload from here on: the live refresh shows the switch
    expect(page.locator(f"#unit-{ROLE[other(active)]}")).to_have_attribute(
        "data-icon", "active", timeout=WAIT_MS
    )
    expect(page.locator(f"#unit-{ROLE[active]}")).to_have_attribute(
        "data-icon", "standby", timeout=WAIT_MS
    )
    assert lab.master() == other(active)
