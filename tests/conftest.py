"""Shared test settings: small, deterministic, and quick on two CPU cores."""

from __future__ import annotations

import shutil

import pytest
import torch

# Two cores are shared by everyone running tests; more threads only add contention.
torch.set_num_threads(1)


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded generator, so every random input of a test is the same on every run."""
    return torch.Generator().manual_seed(1234)


# Debian's chromium and chromium-driver, installed by `make test` (tests/install_chromium.sh) where it can.
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no headless Chromium: /usr/bin/chromium and chromedriver are missing (make test installs "
                    "Debian's chromium and chromium-driver when it runs as root with apt-get)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: "
                                    "pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--window-size=1200,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
