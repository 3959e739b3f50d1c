"""A headless Chromium driven by Selenium, for the report's browser test, benchmark and
screenshots. Uses Debian's ``chromium`` and ``chromium-driver`` (see ``.ci/run``)."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def find_browser() -> tuple[str, str] | None:
    """``(browser, driver)`` executables, or None where either is not installed."""
    browser = next((p for name in CHROMIUM if (p := shutil.which(name))), None)
    driver = next((p for name in DRIVER if (p := shutil.which(name))), None)
    return (browser, driver) if browser and driver else None


def start_chromium(download_dir: Path | None = None, width: int = 1300, height: int = 1000):  # noqa: ANN201
    """A headless Chromium WebDriver that keeps the page's console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError("chromium and chromedriver are not installed")
    options = Options()
    options.binary_location = found[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if download_dir is not None:
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(download_dir),
                "download.prompt_for_download": False,
            },
        )
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    if download_dir is not None:
        driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
        )
    return driver


def console_errors(driver) -> list[dict]:  # noqa: ANN001
    """The page's console entries at level SEVERE (errors, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
