"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver, against a real `mso up -d` app.

A person's path: a bad token is refused; the login link opens the overview; a canary
is started (manifest edited, `mso deploy`) under load and its charts fill in live; the
promote button is clicked and the phase changes; a second canary is aborted (confirming
the dialog). A screenshot of each page goes to $MSO_ARTIFACTS (default test-artifacts/).

Without chromium and chromedriver installed (scripts/setup.sh installs them) the tests
are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.dashboard import SECRET, base_of, dashboard_url, write
from tests.e2e.harness import ROOT, MsoApp, wait_for
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("MSO_ARTIFACTS", ROOT / "test-artifacts"))

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("the browser tests need Debian's chromium and chromium-driver "
                f"(chromium: {CHROMIUM}, chromedriver: {CHROMEDRIVER}); "
                "scripts/setup.sh installs them", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))


def text_of(driver: webdriver.Chrome, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def phase_shown(driver: webdriver.Chrome) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, "#phase [data-phase]")
    return found[0].get_attribute("data-phase") or "" if found else ""


def test_bad_token_is_refused(app: MsoApp, browser: webdriver.Chrome) -> None:
    write(app)
    app.up()
    base = base_of(dashboard_url(app))
    browser.get(f"{base}/login?token=not-the-token")
    assert "401" in browser.page_source
    assert "echo" not in browser.page_source
    browser.get(f"{base}/")
    assert "401" in browser.page_source and "echo" not in browser.page_source
    assert browser.get_cookies() == []
    shot(browser, "refused")


def test_watch_a_canary_promote_it_and_abort_the_next(app: MsoApp,
                                                      browser: webdriver.Chrome) -> None:
    write(app)
    app.up()
    url = dashboard_url(app)
    base = base_of(url)
    browser.get(url)
    wait_for(lambda: browser.current_url == f"{base}/", message="the overview after login")
    assert [c["name"] for c in browser.get_cookies()] == ["mso_session"]
    assert browser.get_cookies()[0]["httpOnly"] is True
    wait_for(lambda: "2 READY" in text_of(browser, 'tr[data-service="echo"]'),
             message="the service row")
    wait_for(lambda: "on" in (browser.find_element(By.ID, "live").get_attribute("class") or ""),
             message="the live stream connected")

    with Load(app.gateway_port, rate=50):
        # The overview's figures follow the traffic without a reload.
        wait_for(lambda: text_of(browser, 'tr[data-service="echo"] td:nth-child(6)')
                 not in ("", "–", "0.0"), timeout=30, message="a request rate on the overview")
        shot(browser, "overview")

        write(app, "v2")
        app.cli("deploy")
        browser.get(f"{base}/services/echo/rollout")
        wait_for(lambda: phase_shown(browser) == "Paused", timeout=60,
                 message="the canary paused, on the page")
        charts = browser.find_elements(By.CSS_SELECTOR, ".chart")
        assert len(charts) == 4

        def points() -> int:
            return int(browser.find_element(By.ID, "chart-rate").get_attribute("data-points")
                       or 0)
        start = points()
        wait_for(lambda: points() >= start + 3, timeout=30, message="the charts moving")
        # uPlot drew canvases with a legend naming both subsets.
        legend = text_of(browser, "#chart-rate .u-legend")
        assert "stable" in legend and "canary" in legend, legend
        assert "canary weight 30%" in text_of(browser, "#phase")
        shot(browser, "rollout-paused")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        panel = browser.find_element(By.CSS_SELECTOR, ".charts")
        browser.execute_script("arguments[0].scrollIntoView()", panel)
        panel.screenshot(str(ARTIFACTS / "dashboard-rollout-charts.png"))

        browser.find_element(By.ID, "action-promote").click()
        wait_for(lambda: phase_shown(browser) == "Promoted", timeout=60,
                 message="the phase changed to Promoted")
        assert "promote: echo is now" in text_of(browser, ".flash.ok")
        assert browser.find_elements(By.ID, "action-promote") == []
        shot(browser, "rollout-promoted")

        # A second canary, aborted: the button asks first.
        write(app, "v3")
        app.cli("deploy")
        wait_for(lambda: phase_shown(browser) == "Paused", timeout=60,
                 message="the second canary paused (live, without a reload)")
        browser.find_element(By.ID, "action-abort").click()
        wait_for(lambda: _accept_alert(browser), timeout=10, message="the confirm dialog")
        wait_for(lambda: phase_shown(browser) == "RolledBack", timeout=60,
                 message="the phase changed to RolledBack")
        shot(browser, "rollout-aborted")

    browser.get(f"{base}/services/echo")
    wait_for(lambda: "listening on" in text_of(browser, "#logs"), message="replica logs")
    shot(browser, "service")
    browser.get(f"{base}/events?service=echo&kind=rollout")
    rows = browser.find_elements(By.CSS_SELECTOR, "#event-rows tr")
    assert rows and all((r.get_attribute("data-kind") or "").startswith("rollout")
                        for r in rows)
    shot(browser, "events")
    for page in ("/", "/services/echo", "/services/echo/rollout", "/events"):
        browser.get(base + page)
        assert SECRET not in browser.page_source


def _accept_alert(driver: webdriver.Chrome) -> bool:
    from selenium.common.exceptions import NoAlertPresentException
    try:
        driver.switch_to.alert.accept()
    except NoAlertPresentException:
        return False
    return True


def test_the_traces_page_draws_a_waterfall(app: MsoApp, browser: webdriver.Chrome) -> None:
    write(app)
    app.manifest.write_text(app.manifest.read_text() + "tracing: {sample: 100%}\n")
    app.up()
    for _ in range(3):
        assert app.get("/traced")[0] == 200
    url = dashboard_url(app)
    base = base_of(url)
    browser.get(url)
    wait_for(lambda: browser.current_url == f"{base}/", message="the overview after login")

    def drawn() -> bool:
        browser.get(f"{base}/traces")
        return bool(browser.find_elements(By.CSS_SELECTOR, "section.trace"))
    wait_for(drawn, timeout=30, message="a trace on the Traces page")
    trace = browser.find_elements(By.CSS_SELECTOR, "section.trace")[0]
    assert "GET /traced" in trace.text and "try 1" in trace.text
    server, client = trace.find_elements(By.CSS_SELECTOR, ".bar")[:2]
    axis = trace.find_elements(By.CSS_SELECTOR, "td.axis")[0]
    # Real layout: the request's bar spans its axis; the try's lies within it.
    assert abs(server.size["width"] - axis.size["width"]) <= 2
    assert 0 < client.size["width"] <= server.size["width"]
    assert server.location["x"] <= client.location["x"]
    assert SECRET not in browser.page_source
    shot(browser, "traces")
