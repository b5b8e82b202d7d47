"""The report page in a real browser: Debian's Chromium (headless) driven by Playwright, with
what the page says wrong collected. Playwright's own browser download is not used (it needs
the network): ``make install`` gets ``chromium`` from apt and ``playwright`` from pip where it
can; without them the tests that use ``browser`` skip, saying why."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install playwright"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium is not installed: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def clock(seconds: float) -> str:
    """The page's clock: ``H:MM:SS.mmm`` (``M:SS.mmm`` under an hour)."""
    ms = round(seconds * 1000)
    hours, minutes, rest = ms // 3_600_000, ms // 60_000 % 60, ms % 60_000 / 1000
    return (f"{hours}:{minutes:02d}" if hours else f"{minutes}") + f":{rest:06.3f}"


class Page:
    """A page with its console errors, uncaught exceptions and alert() calls collected."""

    def __init__(self, browser, url: str, viewport: dict | None = None, **options) -> None:
        self.problems: list[str] = []
        self.page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900}, **options)
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        self.page.add_init_script(
            "window.alerts = []; window.alert = (m) => window.alerts.push(m);"
            "window.longest = 0; new PerformanceObserver(l => l.getEntries().forEach(e =>"
            " window.longest = Math.max(window.longest, e.duration))).observe({type: 'longtask'});"
        )
        started = time.monotonic()
        self.page.goto(url)
        self.page.evaluate("window.vidcapReport.ready")
        self.load_seconds = time.monotonic() - started
        # the first cards are drawn at `ready`, the rest of those in view over later frames
        # (a loaded machine takes more of them): tests read the page as a user sees it
        self.page.evaluate("window.vidcapReport.drawn()")

    def __getattr__(self, name: str):
        return getattr(self.page, name)

    def screenshot_to(self, tmp_path: Path, name: str) -> Path:
        shot = tmp_path / name
        self.page.screenshot(path=str(shot), full_page=False)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / name)
        return shot


def checked_page(browser, url: str) -> Iterator[Page]:
    """A fixture's ``Page`` of ``url``: after the test, nothing went wrong on it, and it is
    closed (``yield from checked_page(browser, url)``)."""
    page = Page(browser, url)
    yield page
    assert page.problems == []
    page.close()
