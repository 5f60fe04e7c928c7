"""Debian's Chromium driven by Playwright, for the dashboard's tests.

``make test`` installs the Debian package (as root) when it is missing, and
the dev extra installs Playwright, which drives the system's Chromium (no
browser download). Outside CI a missing one skips these tests with the
reason; with ``CI=true`` it fails them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.databases import IN_CI

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".ui-screenshots"  # gitignored
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message + " — in CI it must be there")
    pytest.skip(message)


def chromium_path() -> str:
    found = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.access(p, os.X_OK)),
                 None)
    if found is None:
        _missing("chromium is not installed (`make test` installs Debian's package when run as root)")
    assert found is not None
    return found


def launch() -> tuple[Any, Any]:
    """(playwright, browser): one headless Chromium for a test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
    except Exception:
        playwright.stop()
        raise
    return playwright, browser
