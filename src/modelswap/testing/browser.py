"""Debian's headless Chromium driven by its ChromeDriver (Selenium), for the UI's browser test
and the README's screenshot. `make install` installs both packages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# As root and on a closed network: no sandbox, and none of Chromium's own calls home.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chrome(profile: Path, width: int = 1280, height: int = 1600) -> Any:
    """A started webdriver.Chrome with a fresh profile in `profile`, logging the console."""
    from selenium import webdriver  # noqa: PLC0415 - a dev dependency, not the package's
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        raise RuntimeError(f"{missing} missing: `make install` installs Debian's chromium")
    os.environ["SE_AVOID_STATS"] = "true"  # Selenium's usage statistics: off
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
