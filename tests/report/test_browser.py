"""Render a report in headless Chromium: no console errors, tables and images present."""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from robustkit import report

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000")


def _binaries() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("headless browser test needs Chromium and chromedriver "
                    "(Debian: apt-get install chromium chromium-driver)")
    return chrome, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome, driver_path = _binaries()
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    profile = tmp_path_factory.mktemp("chromium-profile")  # fresh: no state from other runs
    for flag in CHROME_FLAGS + (f"--user-data-dir={profile}",):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def _screenshot(drv, path: Path) -> Path:
    """Full-page PNG through the DevTools protocol (the page may be taller than the window)."""
    height = drv.execute_script("return document.documentElement.scrollHeight")
    shot = drv.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_report_renders_in_chromium(browser, built_report: Path, tmp_path: Path) -> None:
    browser.get(built_report.resolve().as_uri())
    logs = browser.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == []

    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 5)])")
    # 2 curve plots + ROC, 8 UAP rows of 7 tiles, 3 DeepFool rows of 1 + 8 x 2 tiles.
    assert len(images) >= 3 + 8 * 7 + 3 * 17
    assert all(done and width > 0 and src == "data:" for done, width, src in images)
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('table')).map(t => t.tBodies[0].rows.length)")
    assert len(rows) >= 4 and min(rows) > 0
    sections = browser.execute_script(
        "return Array.from(document.querySelectorAll('main section')).map(s => s.id)")
    assert sections == ["summary", "curves", "universal", "deepfool", "defenses", "failures", "meta"]
    assert browser.execute_script("return document.querySelectorAll('td.best').length") > 0
    # Nothing was fetched: data: images do not count as resources, so the list is empty.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    shot = _screenshot(browser, tmp_path / "report.png")
    assert shot.stat().st_size > 10_000


def test_partial_report_renders_in_chromium(browser, run_factory, tmp_path: Path) -> None:
    out = run_factory(tmp_path / "partial", defenses=False, artifacts=False, failures=False)
    browser.get(report.build(out).resolve().as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    sections = browser.execute_script(
        "return Array.from(document.querySelectorAll('main section')).map(s => s.id)")
    assert sections == ["summary", "curves", "universal", "meta"]
