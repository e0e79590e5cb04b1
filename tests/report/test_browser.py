"""Render a report in headless Chromium: no console errors, tables and images present, the
ranking first and within a 1024-pixel window, legends whole, detectors' eps 0 = clean.

Full-page screenshots at 1400 and 1024 pixels go to $ROBUSTKIT_SCREENSHOTS (else tmp).
"""
from __future__ import annotations

import base64
import os
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


def _screenshot(drv, path: Path, width: int) -> Path:
    """Full-page PNG through the DevTools protocol (the page may be taller than the window)."""
    height = drv.execute_script("return document.documentElement.scrollHeight")
    shot = drv.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $ROBUSTKIT_SCREENSHOTS when set (to look at them), else tmp."""
    out = Path(os.environ.get("ROBUSTKIT_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


# Every plot legend lies inside its figure and shows all its entries (none cut off or
# scrolled away); returns the offending legend texts.
CLIPPED_LEGENDS = """
return Array.from(document.querySelectorAll('ul.legend')).filter(ul => {
  const fig = ul.closest('figure').getBoundingClientRect(), r = ul.getBoundingClientRect();
  const items = Array.from(ul.children).map(li => li.getBoundingClientRect());
  return ul.scrollWidth > ul.clientWidth + 1 || r.right > fig.right + 1 || r.left < fig.left - 1
    || items.some(i => i.right > r.right + 1 || i.width === 0);
}).map(ul => ul.textContent);
"""


def _cells(drv, row_label: str) -> dict[str, str]:
    """``data-col`` -> text of the defense table's row ``row_label``."""
    return drv.execute_script("""
      const out = {};
      for (const th of document.querySelectorAll('#defenses tbody th')) {
        if (th.textContent !== arguments[0]) continue;
        for (const td of th.parentElement.querySelectorAll('td[data-col]'))
          out[td.dataset.col] = td.textContent;
      }
      return out;""", row_label)


def test_report_renders_in_chromium(browser, built_report: Path, tmp_path: Path) -> None:
    browser.set_window_size(1400, 1000)
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
    assert sections == ["ranking", "summary", "curves", "universal", "deepfool", "defenses",
                        "failures", "meta"]
    assert browser.execute_script("return document.querySelectorAll('td.best').length") > 0
    # Nothing was fetched: data: images do not count as resources, so the list is empty.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    # The answer first: every model and defended system ranked, adaptive numbers for detectors.
    ranked = browser.execute_script(
        "return Array.from(document.querySelectorAll('#ranking-table tbody th')).map(t => t.textContent)")
    assert len(ranked) == 13 and "cnn + detector defended" in ranked
    det_rank = browser.execute_script("""
      const th = Array.from(document.querySelectorAll('#ranking-table tbody th'))
        .find(t => t.textContent.startsWith('cnn + detector'));
      return Array.from(th.parentElement.querySelectorAll('td[data-col]')).map(t => t.innerText);""")
    assert all("pgd (adaptive)" in text for text in det_rank[1:])
    # A detector rejecting clean inputs pays for it: its eps-0 column is its clean column.
    det = _cells(browser, "cnn + detector")
    assert det["pgd|0.0"] == det["clean|"] == "95.0"
    assert browser.execute_script("return document.querySelectorAll('td.outranked.best').length") == 0
    assert browser.execute_script("return document.querySelectorAll('ul.legend li').length") >= 8
    assert browser.execute_script(CLIPPED_LEGENDS) == []
    shot = _screenshot(browser, _shots_dir(tmp_path) / "report-1400.png", 1400)
    assert shot.stat().st_size > 10_000


def test_report_fits_a_1024_pixel_window(browser, built_report: Path, tmp_path: Path) -> None:
    browser.set_window_size(1024, 900)
    try:
        browser.get(built_report.resolve().as_uri())
        width = browser.execute_script("return document.documentElement.clientWidth")
        first = browser.execute_script("""
          const t = document.querySelector('main table'), w = t.closest('.table-wrap');
          return [t.id, t.getBoundingClientRect().right, w.scrollWidth - w.clientWidth];""")
        assert first[0] == "ranking-table"
        assert first[1] <= width and first[2] <= 0  # the first table needs no sideways scroll
        assert browser.execute_script(CLIPPED_LEGENDS) == []
        shot = _screenshot(browser, _shots_dir(tmp_path) / "report-1024.png", 1024)
        assert shot.stat().st_size > 10_000
    finally:
        browser.set_window_size(1400, 1000)


def test_partial_report_renders_in_chromium(browser, run_factory, tmp_path: Path) -> None:
    out = run_factory(tmp_path / "partial", defenses=False, artifacts=False, failures=False)
    browser.get(report.build(out).resolve().as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    sections = browser.execute_script(
        "return Array.from(document.querySelectorAll('main section')).map(s => s.id)")
    assert sections == ["ranking", "summary", "curves", "universal", "meta"]
