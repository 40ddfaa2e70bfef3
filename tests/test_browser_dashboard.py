"""The dashboard in a real browser: Debian's chromium and chromedriver, driven by Selenium.

One uvicorn server on 127.0.0.1 serves two apps over one Warden with a
StaticProbe: ``/open/`` without a token and ``/secured/`` with one (both mounted
under a prefix, so the page's relative URLs are exercised). One headless browser
session serves every test in this module. Set ``MEMWARDEN_SCREENSHOT`` to a path
to save a screenshot of the dashboard there (docs/img/dashboard.png is made so).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
        "apt-get install -y --no-install-recommends chromium chromium-driver",
        allow_module_level=True,
    )

import anyio.from_thread  # noqa: E402
import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from memwarden import Warden, WardenConfig  # noqa: E402
from memwarden._serve import bind, format_url  # noqa: E402
from memwarden.budget import Allocation  # noqa: E402
from memwarden.http import create_app  # noqa: E402
from memwarden.probes import MemorySample  # noqa: E402
from memwarden.testing import StaticProbe  # noqa: E402
from memwarden.units import MiB  # noqa: E402

TOKEN = "s3cret-dashboard-token"
LIMIT = 4096 * MiB
BACKFILL = 90
WAIT = 15.0


class BackdatedProbe(StaticProbe):
    """A StaticProbe whose samples can be stamped ``backdate`` seconds in the past.

    The history backfill then spans minutes, as a service's would, without waiting.
    """

    backdate = 0.0

    def sample(self) -> MemorySample:
        sample = super().sample()
        return replace(sample, timestamp=sample.timestamp - self.backdate)


@dataclass
class Served:
    """The running server: its URL, the Warden and its probe, and the event loop's portal."""

    url: str
    warden: Warden
    probe: BackdatedProbe
    portal: anyio.from_thread.BlockingPortal
    history_points: int

    def sample_now(self) -> None:
        """Take a sample in the Warden's event loop, as the monitor's own loop would."""
        self.portal.call(self.warden.monitor.sample_now)


def _backfill(warden: Warden, probe: BackdatedProbe) -> list[Allocation]:
    """Record BACKFILL samples, one a second in the past: a load that rises and falls."""
    manager = warden.manager
    thumbnails: Any = warden.caches.create_lru_cache("thumbnails", max_bytes=256 * MiB)
    held: list[Allocation] = []
    for i in range(BACKFILL):
        phase = i / BACKFILL
        wave = 0.5 - 0.5 * math.cos(2 * math.pi * phase * 1.5)
        want = int((500 + 1900 * wave) * MiB)
        reserved = sum(a.nbytes for a in held)
        while reserved < want - 64 * MiB:
            allocation = manager.try_acquire(64 * MiB)
            if allocation is None:
                break
            held.append(allocation)
            reserved += allocation.nbytes
        while held and reserved > want:
            allocation = held.pop()
            reserved -= allocation.nbytes
            allocation.release()
        if i % 2 == 0:
            thumbnails[f"t{i % 30}"] = b"x" * (8 * MiB)
        probe.backdate = float(BACKFILL - i)
        unmanaged = int((1200 + 150 * math.sin(i / 7)) * MiB)
        probe.set(used=manager.get_stats().current_usage + unmanaged)
        warden.monitor.sample_now()
    probe.backdate = 0.0
    return held


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """Two apps over one Warden on a real uvicorn server at 127.0.0.1 on a free port."""
    probe = BackdatedProbe(used=900 * MiB, limit=LIMIT)
    probe.backdate = float(BACKFILL + 1)
    config = WardenConfig(
        monitor_use_psi=False,
        monitor_interval=0.5,
        monitor_min_dwell=0.0,
        allocator_tuning=False,
        gc_optimization_enabled=False,
        monitor_history=500,
        medium_threshold=0.6,
        high_threshold=0.8,
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        warden = portal.call(lambda: Warden(config, probe=probe))
        held = portal.call(_backfill, warden, probe)
        with portal.wrap_async_context_manager(warden):
            pool = warden.create_pool("db", object, max_size=8)
            leases = [portal.call(pool.acquire) for _ in range(3)]
            for _ in range(4):
                portal.call(lambda: warden.sessions.create_session(cart=b"x" * 200_000))
            warden.record_shed("pressure")
            root = Starlette(
                routes=[
                    Mount("/open", create_app(warden)),
                    Mount("/secured", create_app(warden, token=TOKEN)),
                ]
            )
            sock = bind("127.0.0.1", 0)
            server = uvicorn.Server(
                uvicorn.Config(
                    root,
                    log_level="warning",
                    lifespan="off",
                    timeout_graceful_shutdown=1,
                )
            )
            apps = [route.app for route in root.routes if isinstance(route, Mount)]
            done = portal.start_task_soon(server.serve, [sock])
            try:
                yield Served(
                    format_url(*sock.getsockname()[:2]),
                    warden,
                    probe,
                    portal,
                    len(warden.memory_history()),
                )
            finally:
                for app in apps:
                    app.state.events.close()
                server.should_exit = True
                done.result(timeout=WAIT)
                sock.close()
                for lease in leases:
                    portal.call(pool.release, lease)
                for allocation in held:
                    allocation.release()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless chromium for the module, with its console log readable."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1200",
        "--force-device-scale-factor=1",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        # Selenium Manager stays offline: the driver is Debian's, given explicitly.
        patch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _errors(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _points(driver: WebDriver) -> int:
    return int(driver.find_element(By.ID, "chart").get_attribute("data-points") or 0)


def _painted_pixels(driver: WebDriver) -> int:
    count = driver.execute_script(
        """
        const c = document.getElementById("chart");
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n += 1;
        return n;
        """
    )
    return int(count)


def _open(driver: WebDriver, url: str) -> None:
    driver.get(url)
    driver.get_log("browser")  # start from this page's messages only


def test_page_loads_without_console_errors_and_draws_the_backfill(
    served: Served, browser: WebDriver
) -> None:
    browser.get("about:blank")
    browser.get_log("browser")
    browser.get(served.url + "open/")
    wait = WebDriverWait(browser, WAIT)
    wait.until(lambda d: _points(d) >= served.history_points)
    assert _painted_pixels(browser) > 10_000
    wait.until(lambda d: d.find_element(By.ID, "level").get_attribute("data-level") != "")
    assert browser.find_element(By.ID, "level").text.lower() in ("low", "medium", "high")
    # The panels are filled from the API.
    wait.until(lambda d: "db" in d.find_element(By.ID, "pools").text)
    assert "thumbnails" in browser.find_element(By.ID, "caches").text
    wait.until(lambda d: "pressure" in d.find_element(By.ID, "shed").text)
    assert browser.find_element(By.ID, "budget").text
    # The chart is shaded at this Warden's thresholds, not the defaults.
    legend = browser.find_element(By.CSS_SELECTOR, ".legend.levels").text
    assert "medium ≥ 60%" in legend and "high ≥ 80%" in legend
    assert "critical ≥ 95%, sheds" in legend
    wait.until(lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live")
    assert _errors(browser) == []


def test_the_level_reaches_the_page_when_pressure_turns_critical(
    served: Served, browser: WebDriverWait
) -> None:
    if not browser.current_url.endswith("/open/"):
        browser.get(served.url + "open/")
    wait = WebDriverWait(browser, WAIT)
    wait.until(lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live")
    before = _points(browser)
    served.probe.set(used=int(LIMIT * 0.97))
    served.sample_now()
    wait.until(lambda d: d.find_element(By.ID, "level").get_attribute("data-level") == "critical")
    wait.until(lambda d: "critical" in d.find_element(By.ID, "events").text.lower())
    wait.until(lambda d: d.find_element(By.ID, "ready").text.lower() == "not ready")
    wait.until(lambda d: _points(d) > before)
    screenshot = os.environ.get("MEMWARDEN_SCREENSHOT")
    if screenshot:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(screenshot)
    served.probe.set(used=900 * MiB)
    served.sample_now()
    wait.until(lambda d: d.find_element(By.ID, "level").get_attribute("data-level") == "low")
    assert _errors(browser) == []


def test_with_a_token_the_page_asks_once_and_keeps_it_out_of_urls(
    served: Served, browser: WebDriver
) -> None:
    browser.get(served.url + "secured/")
    wait = WebDriverWait(browser, WAIT)
    wait.until(lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open") is not None)
    browser.find_element(By.ID, "token-input").send_keys(TOKEN)
    browser.find_element(By.ID, "token-submit").click()
    wait.until(lambda d: _points(d) >= served.history_points)
    wait.until(lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live")
    stored = browser.execute_script("return Object.values(sessionStorage)")
    assert stored == [TOKEN]
    # The only errors are the first requests' 401s, before the token was given.
    assert all("401" in entry["message"] for entry in _errors(browser))
    # Reloaded, the page reuses the token without asking again.
    browser.refresh()
    wait.until(lambda d: _points(d) >= served.history_points)
    assert browser.find_element(By.ID, "token-dialog").get_attribute("open") is None
    urls: list[str] = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls and not any(TOKEN in url for url in urls)
    assert _errors(browser) == []


def _read_url(process: subprocess.Popen[str]) -> str:
    """The URL ``memwarden serve`` prints first, read within WAIT seconds."""
    found: list[str] = []
    reader = threading.Thread(
        target=lambda: found.append(process.stdout.readline() if process.stdout else ""),
        daemon=True,
    )
    reader.start()
    reader.join(WAIT)
    if not found or not found[0].startswith("http://"):
        process.kill()
        raise AssertionError(f"memwarden serve printed no URL: {found!r}")
    return found[0].strip()


def test_memwarden_serve_page_draws_live_memory(browser: WebDriver) -> None:
    # This machine's real figures: only the drawing is checked, never a value.
    process = subprocess.Popen(
        [sys.executable, "-m", "memwarden", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "MEMWARDEN_MONITOR_INTERVAL": "0.25"},
    )
    try:
        url = _read_url(process)
        browser.get(url)
        wait = WebDriverWait(browser, WAIT)
        wait.until(lambda d: _points(d) >= 1)
        first = _points(browser)
        wait.until(lambda d: _points(d) > first)
        assert _painted_pixels(browser) > 1_000
        assert _errors(browser) == []
    finally:
        process.terminate()
        process.wait(timeout=WAIT)
    assert process.returncode == 0
