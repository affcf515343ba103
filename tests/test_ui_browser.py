"""`modelswap ui` in a real browser: Debian's headless Chromium, driven by its ChromeDriver
(`make test` installs both), loads every page with no console error (a CSP violation is one)
and saves a screenshot of the model page."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from modelswap.testing.browser import chrome
from tests.test_ui import PAGES
from tests.ui_helpers import SCRIPT, hostile_registry, serving


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = chrome(tmp_path_factory.mktemp("chromium"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("ui-browser") / "reg"
    hostile_registry(root, events=30)
    with serving(root) as url:
        yield url


def _errors(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


@pytest.mark.parametrize("path", PAGES)
def test_each_page_loads_with_no_console_error(
    browser: webdriver.Chrome, site: str, path: str
) -> None:
    browser.get(site + path)
    assert browser.title.endswith("- modelswap")
    assert browser.find_element(By.TAG_NAME, "h1").text
    assert _errors(browser) == []


def test_the_model_page_draws_and_is_saved_as_a_screenshot(
    browser: webdriver.Chrome, site: str, tmp_path: Path
) -> None:
    browser.get(site + "/models/clf")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 2
    assert all(c.size["width"] > 500 and c.size["height"] > 100 for c in charts)
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart circle")) >= 4
    # The stylesheet applied (CSP allows 'self'): the header is dark, not the default white.
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") == "rgba(17, 24, 39, 1)"
    shot = Path(os.environ.get("MODELSWAP_UI_SCREENSHOT", tmp_path / "model-page.png"))
    assert browser.save_screenshot(str(shot))
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])  # the PNG's IHDR
    assert (width, height) == (1280, browser.execute_script("return window.innerHeight"))
    assert _errors(browser) == []


def test_hostile_text_stays_text_in_the_browser(browser: webdriver.Chrome, site: str) -> None:
    browser.get(site + "/models/clf/versions/v2")
    notes = browser.find_element(By.CSS_SELECTOR, "dd.notes")
    assert notes.text == SCRIPT  # shown as the characters it is, never run
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert _errors(browser) == []
