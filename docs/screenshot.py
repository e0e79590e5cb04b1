"""Regenerate the README's report screenshot from the current demo report.

    make demo                                  # writes reports/demo/index.html
    .venv/bin/python docs/screenshot.py        # -> docs/report-screenshot.png

Opens the report in headless Chromium (Debian: ``apt-get install chromium chromium-driver``;
``pip install selenium``) at the given window width and saves the top of the page (header,
contents and the ranking). ``--full`` saves the whole page instead, to look at every part.
"""
from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def screenshot(page: Path, out: Path, *, width: int, height: int | None) -> Path:
    """Save a PNG of ``page`` rendered ``width`` pixels wide: its top ``height`` pixels, or
    all of it when ``height`` is None."""
    from selenium import webdriver

    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
        "google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        raise SystemExit("needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*FLAGS, f"--window-size={width},1000", f"--user-data-dir={profile}"):
            opts.add_argument(flag)
        drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver),
                               options=opts)
        try:
            drv.get(page.resolve().as_uri())
            full = drv.execute_script("return document.documentElement.scrollHeight")
            shot = drv.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(height or full, full),
                         "scale": 1}})
        finally:
            drv.quit()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    tmp.write_bytes(base64.b64decode(shot["data"]))
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", default="reports/demo/index.html", type=Path)
    parser.add_argument("--out", default=Path("docs/report-screenshot.png"), type=Path)
    parser.add_argument("--width", default=1280, type=int)
    parser.add_argument("--height", default=1100, type=int)
    parser.add_argument("--full", action="store_true", help="the whole page, not its top")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"{args.page} not found: run `make demo` first", file=sys.stderr)
        return 1
    print(screenshot(args.page, args.out, width=args.width, height=None if args.full else args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
