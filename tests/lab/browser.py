"""Chromium for the WUI tests: Debian's, driven by Playwright (no browser download). The
`browser` and `pages` fixtures are in conftest.py; a module using them sets
`pytestmark = needs_chromium`."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not shutil.which("chromium"),
    reason=f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)",
)


def executable() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
