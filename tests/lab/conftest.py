"""Fixtures for lab tests: the namespace lab of DESIGN §5, built per test module.

    LAB_OPTIONS = dict(start_units=False)      # in a test module: options for Lab.up()

    def test_x(lab): ...                        # the module's lab (torn down after the module)
    def test_y(healed_lab): ...                 # same lab; heal() after the test

or per test module with indirect parametrization: @pytest.mark.parametrize("lab", [dict(fast=True)],
indirect=True). The lab's names are fixed (cp-a, cp-b, ...), so one lab exists at a time on the
machine: the session holds the lab lock (/run/carpool-lab.lock) and waits for another test run
holding it. Lab tests are skipped when not root. Every test under tests/lab is marked `lab`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from carpool.lab import Lab, LabError, machine_lock

LAB_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if LAB_TESTS in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab_lock():
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces)")
    missing = [tool for tool in ("ip", "nft", "ping", "sysctl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"lab tests need {', '.join(missing)}")
    try:
        with machine_lock(timeout=900):
            yield
    except LabError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def lab(request, lab_lock):
    """The module's lab, built with the module's LAB_OPTIONS (or an indirect param); torn down
    when the module is done, also when a test or the build failed."""
    options = getattr(request, "param", None) or getattr(request.module, "LAB_OPTIONS", {})
    the_lab = Lab()
    try:
        the_lab.up(**options)
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def healed_lab(lab):
    """The module's lab; every fault undone after the test."""
    try:
        yield lab
    finally:
        lab.heal()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing lab test shows the lab's state and the tail of the units' logs."""
    outcome = yield
    report = outcome.get_result()
    the_lab = getattr(item, "funcargs", {}).get("lab") or getattr(item, "funcargs", {}).get(
        "healed_lab"
    )
    if report.failed and isinstance(the_lab, Lab):
        try:
            from carpool.lab.cli import format_summary

            text = [format_summary(the_lab.summary())]
            for unit in ("a", "b"):
                if the_lab.log_path(unit).exists():
                    text.append(
                        f"--- {the_lab.log_path(unit)} (tail)\n{the_lab.log_tail(unit, 30)}"
                    )
            report.sections.append(("carpool lab", "\n".join(text)))
        except Exception as e:  # reporting must never hide the failure itself
            report.sections.append(("carpool lab", f"(no lab summary: {e})"))


@pytest.fixture(scope="module")
def browser():
    """Chromium (Playwright), one per module."""
    from browser import executable
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable())
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def pages(browser, lab):
    """new_page(unit) -> a page in its own context (own cookies), logged in to unit X's WUI at
    the URL this lab answers on; closed after the test."""
    from webclient import login

    contexts = []

    def new_page(unit: str | None = None, log_in: bool = True):
        context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1400, "height": 900}
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        if unit and log_in:
            login(page, lab.wui_url(unit))
        return page

    yield new_page
    for context in contexts:
        context.close()
