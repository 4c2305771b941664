"""The explorer served by Voilà, driven in headless Chromium: change a control, see the metrics re-render."""

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from lab.ui.app import voila_command

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and Path(p).exists()), None)
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no Chromium and ChromeDriver on this machine (Debian: chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app():
    port = _free_port()
    server = subprocess.Popen(voila_command(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"Voila did not come up on {url}: {server.stdout.read().decode()[-2000:]}")
            time.sleep(0.5)
    yield url
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _metrics_text(driver) -> str:
    """Text of the metrics table (the one with a cache_hit_rate column), or '' before it renders."""
    return driver.execute_script(
        "const t = [...document.querySelectorAll('table')].find(t => t.textContent.includes('cache_hit_rate'));"
        "return t ? t.textContent : '';")


def _wait(predicate, timeout=120, poll=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out waiting for the page")


def test_changing_a_control_rerenders_the_metrics(app, browser, tmp_path, capsys):
    from selenium.webdriver.common.keys import Keys

    browser.get(app)
    first = _wait(lambda: (t := _metrics_text(browser)) and "Belady" in t and t)
    layers = _wait(lambda: browser.find_elements(
        "xpath", "//div[contains(@class,'widget-text')][label[normalize-space()='layers']]//input"))[0]
    layers.send_keys(Keys.CONTROL, "a")
    layers.send_keys("3", Keys.TAB)
    second = _wait(lambda: (t := _metrics_text(browser)) and t != first and "Belady" in t and t)
    screenshot = tmp_path / "explorer.png"
    browser.save_screenshot(str(screenshot))
    with capsys.disabled():  # shown in the test output, not captured
        print(f"\nexplorer screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert "LRU" in second and second != first
    assert "Traceback" not in browser.page_source
