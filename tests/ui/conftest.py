"""Fixtures for the dashboard's browser tests: one gateway (with its fake
upstreams) and one Chromium per module, a fresh browser context per test,
and a screenshot of every open page when a test fails."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Stack, running_stack
from tests.ui.browser import SCREENSHOTS, launch


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "report_" + report.when, report)


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("ui")
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gateway.db") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright, chromium = launch()
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()


@pytest.fixture
def context(browser: Any, ui_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Any]:
    ctx = browser.new_context(base_url=ui_stack.url, viewport={"width": 1280, "height": 800},
                              accept_downloads=True)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            folder = SCREENSHOTS / "failures"
            folder.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            for i, page in enumerate(ctx.pages):
                path = folder / f"{name}-{i}.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                    print(f"screenshot of the failed test's page {page.url}: {path}")
                except Exception as exc:
                    print(f"could not take a screenshot of {page.url}: {exc}")
        ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()
