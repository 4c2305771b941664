"""The explorer served by Voilà: its configuration culls idle kernels; driven in headless Chromium, a change of
control re-renders the metrics, every tab and the capacity sweep draw a figure, and a closed page's kernel is
shut down."""

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lab.ui.app import CULL_IDLE_TIMEOUT_S, CULL_INTERVAL_S, EXPLORER, voila_command

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and Path(p).exists()), None)
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="no Chromium and ChromeDriver on this machine (Debian: chromium chromium-driver)")
TABS = ["top evictions", "occupancy", "timeline", "traffic vs capacity", "validation"]


def test_the_app_culls_idle_kernels():
    """The kernel manager Voilà builds from ``voila_command`` shuts down kernels idle with no page connected."""
    from voila.app import Voila
    from voila.configuration import VoilaConfiguration
    from voila.voila_kernel_manager import voila_kernel_manager_factory

    command = voila_command(8866)
    app = Voila()
    app.parse_command_line(command[3:])  # after "python -m voila", as Voilà itself parses it
    manager_class = voila_kernel_manager_factory(VoilaConfiguration(parent=app).multi_kernel_manager_class, False, 0)
    manager = manager_class(parent=app)
    assert manager.cull_idle_timeout == CULL_IDLE_TIMEOUT_S > 0
    assert manager.cull_interval == CULL_INTERVAL_S > 0
    assert manager.cull_connected is False and manager.cull_busy is False  # a visitor's open page is not culled
    assert "--MappingKernelManager.cull_idle_timeout=30" in voila_command(8866, cull_idle_timeout_s=30)
    with pytest.raises(ValueError, match="culling"):
        voila_command(8866, cull_idle_timeout_s=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(**cull):
    port = _free_port()
    server = subprocess.Popen(voila_command(port, **cull), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:  # polls a static path: rendering the page would start a kernel
        try:
            with urllib.request.urlopen(url + "voila/static/", timeout=5):
                break
        except urllib.error.HTTPError:  # the server answers
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"Voila did not come up on {url}: {server.stdout.read().decode()[-2000:]}")
            time.sleep(0.5)
    return server, url


def _stop(server) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def server():
    """One Voila server for the module's tests, culling idle kernels with no page connected after 5 s (the last
    test checks that a closed page's kernel goes; an open page's is never culled)."""
    served, url = _serve(cull_idle_timeout_s=5, cull_interval_s=1)
    yield served, url
    _stop(served)


@pytest.fixture
def app(server):
    return server[1]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's tests (each starts with ``get`` of the page it needs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    options.page_load_strategy = "none"  # get() returns at once: Voila sends the page after running the notebook,
    # which on a busy machine takes longer than the driver's 120 s; the tests wait for what they need instead
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _metrics_text(driver) -> str:
    """Text of the metrics table (the one with a DRAM traffic (MB) column), or '' before it renders."""
    return driver.execute_script(
        "const t = [...document.querySelectorAll('table')].find(t => t.textContent.includes('DRAM traffic (MB)'));"
        "return t ? t.textContent : '';")


PAGE_TIMEOUT_S = 420  # the notebook's first run: a kernel, the imports, the first update


@pytest.fixture
def page(app, browser) -> str:
    """The explorer's page in the browser, its metrics rendered; returns their text. One page (one kernel) serves
    the module's tests in turn: it is loaded only when the browser does not show it already."""
    shown = _metrics_text(browser)
    if "Belady" in shown:
        return shown
    browser.get(app)
    return _wait(lambda: (t := _metrics_text(browser)) and "Belady" in t and t, timeout=PAGE_TIMEOUT_S)


def _wait(predicate, timeout=120, poll=0.5, what="the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def _visible_figures(driver) -> list:
    """Sizes of the figures shown in the explorer's tabs: images and plotly plots at least 100 px each way (hidden
    tabs measure 0; toolbar icons are smaller)."""
    return driver.execute_script("""
        const tabs = document.querySelector('.jupyter-widget-tab, .widget-tab');
        if (!tabs) return [];
        const shown = [...tabs.querySelectorAll('img, .js-plotly-plot .main-svg')].map(e => {
            const r = e.getBoundingClientRect();
            return [e.tagName, Math.round(r.width), Math.round(r.height)];
        });
        return shown.filter(([tag, w, h]) => w >= 100 && h >= 100);""")


def _click_tab(driver, title):
    tab = _wait(lambda: [t for t in driver.find_elements("css selector", ".lm-TabBar-tab")
                         if t.text.strip() == title], what=f"the tab {title!r}")[0]
    tab.click()


@needs_browser
@pytest.mark.slow  # the four browser tests: one page, loaded once (slow tests run first, in file order)
def test_changing_a_control_rerenders_the_metrics(page, browser, tmp_path, capsys):
    from selenium.webdriver.common.keys import Keys

    first = page
    headline = _wait(lambda: (t := browser.execute_script("return document.body.innerText")) and
                     "best online policy" in t and t, timeout=30, what="the headline")
    assert "byte hit rate" in headline and "DRAM traffic" in headline
    # the app only, in words for its users: its title and help, no tutorial, no code
    assert "Memory-hierarchy explorer" in headline and "Which eviction policy moves the least data" in headline
    assert "Tutorial" not in headline and "grown up" not in headline and "import" not in headline
    assert "vs optimum (%)" in first and "dram_traffic_mb" not in browser.page_source
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


@needs_browser
@pytest.mark.slow
def test_every_tab_and_the_sweep_draw_a_figure(page, browser, tmp_path, capsys):
    from selenium.webdriver.common.action_chains import ActionChains

    drawn = {}
    for title in TABS:
        _click_tab(browser, title)
        if title == "traffic vs capacity":
            assert not _visible_figures(browser)  # nothing until the sweep runs
            button = browser.find_element("xpath", "//button[normalize-space()='sweep capacity']")
            button.click()
            drawn[title] = _wait(lambda: _visible_figures(browser), timeout=180, what="the sweep's figure")
            assert "capacities from" in browser.page_source
            button.click()  # a second sweep draws again, in the same place
            time.sleep(1)
            drawn[title] = _wait(lambda: browser.find_element("xpath", "//button[normalize-space()='sweep capacity']")
                                 .is_enabled() and _visible_figures(browser), timeout=180, what="the second sweep")
            assert len(drawn[title]) == 1
        else:
            drawn[title] = _wait(lambda: _visible_figures(browser), what=f"a figure in the tab {title!r}")
        browser.save_screenshot(str(tmp_path / f"{title.replace(' ', '-')}.png"))
    with capsys.disabled():
        print(f"\nexplorer tabs: {drawn}; screenshots in {tmp_path}")
    _click_tab(browser, "timeline")  # hovering a band of the timeline names the tensor, its op and layer
    plot = _wait(lambda: [e for e in browser.find_elements("css selector", ".js-plotly-plot .nsewdrag")
                          if e.size["width"] > 100])[0]
    hovered = ""
    for x in range(-plot.size["width"] // 2 + 20, plot.size["width"] // 2 - 20, 40):
        ActionChains(browser).move_to_element_with_offset(plot, x, plot.size["height"] // 2 - 15).perform()
        time.sleep(0.2)
        hovered = browser.execute_script(
            "const h = document.querySelector('.hoverlayer .hovertext'); return h ? h.textContent : '';")
        if "in at access" in hovered:
            break
    assert "in at access" in hovered and "layer" in hovered, hovered
    assert "Traceback" not in browser.page_source


def _kernels(server) -> list:
    """The server's live kernel processes (a shut-down kernel is gone, or a zombie until reaped)."""
    import psutil

    kernels = []
    for process in psutil.Process(server.pid).children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and any("ipykernel" in p for p in process.cmdline()):
                kernels.append(process)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return kernels


@needs_browser
@pytest.mark.slow
def test_a_captured_preset_in_the_app(page, browser):
    """Switching the workload to a captured model (gpt2's forward pass, captured in the page's kernel) re-renders
    the metrics and the timeline, and clears the synthetic model's capacity sweep, saying why."""
    first = page
    _click_tab(browser, "traffic vs capacity")
    browser.find_element("xpath", "//button[normalize-space()='sweep capacity']").click()
    _wait(lambda: _visible_figures(browser), timeout=180, what="the sweep's figure")
    browser.find_element("xpath", "//button[normalize-space()='captured']").click()
    _wait(lambda: (t := _metrics_text(browser)) and t != first and "Belady" in t and t, timeout=PAGE_TIMEOUT_S,
          what="the captured model's metrics")
    text = browser.execute_script("return document.body.innerText")
    assert "preset" in text
    assert "The capacity sweep was cleared: the workload changed since it ran" in text
    assert not _visible_figures(browser)  # the synthetic model's curves are gone
    _click_tab(browser, "timeline")
    _wait(lambda: _visible_figures(browser), what="the captured model's timeline")
    assert "Cannot run" not in browser.page_source and "Traceback" not in browser.page_source


@needs_browser
@pytest.mark.slow
def test_a_closed_pages_kernel_is_culled(server, page, browser):
    """The page's kernel lives while the page is open (the server culls idle kernels with no page connected after
    5 s); once the visitor leaves, it is shut down."""
    served, _ = server
    assert len(_kernels(served)) == 1
    time.sleep(3)  # a culling pass or more while the page is open: its kernel stays
    assert len(_kernels(served)) == 1
    browser.get("about:blank")  # the visitor leaves: the kernel's connection closes
    _wait(lambda: not _kernels(served), timeout=60, what="the idle kernel to be culled")


def test_the_served_page_is_the_app_only():
    """The page Voila serves is its own notebook: a title and help in words for its users, then the explorer; the
    tutorial (notebooks/02-explorer.ipynb) is not served."""
    import nbformat

    command = voila_command(8866)
    assert command[3] == str(EXPLORER) and EXPLORER.parent.name == "pages" and EXPLORER.exists()
    assert [p.name for p in EXPLORER.parent.iterdir()] == ["explorer.ipynb"]  # no module beside the kernel's cwd
    notebook = nbformat.read(EXPLORER, as_version=4)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds == ["markdown", "code"]
    text = notebook.cells[0].source
    assert text.startswith("# Memory-hierarchy explorer\n") and "Which eviction policy" in text
    for word in ("Tutorial", "grown up", "seed", "`lab.", "lab.ui", "import"):
        assert word not in text, word
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    namespace = {}
    exec(compile(notebook.cells[1].source.replace("\nExplorer()", "\nexplorer = Explorer(debounce_s=0)"),
                 str(EXPLORER), "exec"), namespace)
    assert namespace["explorer"].error is None and namespace["explorer"].table is not None
