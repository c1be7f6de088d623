"""The web UI in a real browser: Playwright driving Debian's chromium against a live server.

Screenshots of every page go to a temporary directory, or to ``docs/ui/`` with
``PIXELGATE_UI_SHOTS=docs``. Without chromium (or Playwright) the tests
are skipped with the reason shown in the summary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import ADMIN_KEY, Launcher, Server

CHROMIUM = "/usr/bin/chromium"
#: where the screenshots go: docs/ui/ only when asked (PIXELGATE_UI_SHOTS=docs), so a test
#: run never rewrites the repository; else a directory of the run's own
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "ui"
    if os.environ.get("PIXELGATE_UI_SHOTS") == "docs"
    else Path(tempfile.gettempdir()) / f"pixelgate-ui-shots-{os.getpid()}"
)
CONFIG = """
[providers.placeholder]
kind = "placeholder"
latency_ms = 1500

[providers.backup]
kind = "placeholder"

[routing]
default = ["placeholder", "backup"]
"""

pytestmark = pytest.mark.xdist_group("ui-browser")


def _browser_or_skip() -> Any:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): browser tests off")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]'): browser tests skipped")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _browser_or_skip()
    launcher = Launcher(tmp_path_factory.mktemp("ui-browser"))
    try:
        yield launcher.start(config=CONFIG)
    finally:
        launcher.close()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Session:
    """One browser context signed in with a key; remembers every URL it requested."""

    def __init__(self, browser: Any, server: Server, key: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.urls: list[str] = []
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.base = server.base_url
        self.key = key
        self.csp_errors: list[str] = []
        self.page.on("console", lambda m: self.csp_errors.append(m.text)
                     if "Content Security Policy" in m.text else None)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def sign_in(self, shot: str | None = None) -> None:
        self.goto("/ui/login")
        self.page.fill("#api_key", self.key)
        if shot:
            self.shot(shot)
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_url("**/ui/generate")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        assert not any(self.key in url for url in self.urls), "the API key appeared in a URL"
        assert not self.csp_errors, self.csp_errors
        self.context.close()


def wait_until(page: Any, script: str, arg: Any = None, timeout: float = 15.0) -> None:
    """Poll ``script`` (a function) until true. ``page.wait_for_function`` evaluates a
    string in the page, which the UI's CSP (no ``unsafe-eval``) rightly refuses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(script, arg):
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {script}")


def _plain_key(server: Server) -> str:
    admin = server.client()
    assert admin.post("/admin/accounts", json={"name": "viewer", "credits": 100}).status_code == 201
    made = admin.post("/admin/accounts/viewer/keys", json={})
    return str(made.json()["key"])


def test_generate_watch_progress_gallery_trace_and_approve(browser: Any, server: Server) -> None:
    s = Session(browser, server, ADMIN_KEY)
    s.sign_in(shot="login")
    page = s.page
    page.fill("#prompt", "a lighthouse at dusk, oil painting")
    page.select_option("#provider", "placeholder")
    wait_until(page, "() => document.getElementById('estimate').textContent.includes('credits')")
    s.shot("generate")
    page.click("#submit")
    page.fill("#prompt", "a second one, at dawn")
    page.click("#submit")  # several at once
    page.wait_for_selector("#jobs .job progress")
    wait_until(
        page,
        "() => [...document.querySelectorAll('#jobs .job')].some("
        "j => j.querySelector('progress').value > 0 && j.querySelector('progress').value < 100)",
    )
    s.shot("generate-progress")
    wait_until(page, "() => document.getElementById('jobs').dataset.finished === '2'", timeout=30)
    jobs = page.locator("#jobs .job")
    assert jobs.count() == 2
    for i in range(2):
        assert jobs.nth(i).locator(".percent").inner_text() == "100 %"
        assert jobs.nth(i).locator(".badge").inner_text() == "SUCCEEDED"
        img = jobs.nth(i).locator("img.result")
        img.wait_for()
        assert page.evaluate("(el) => el.naturalWidth", img.element_handle()) > 0
    gen_id = jobs.nth(0).get_attribute("data-generation")
    s.shot("generate-done")

    s.goto("/ui/gallery")
    tile = page.locator(f"a[data-generation='{gen_id}']")
    tile.wait_for()
    thumb = tile.locator("img")
    wait_until(page, "(el) => el.complete && el.naturalWidth > 0", thumb.element_handle())
    s.shot("gallery")
    tile.click()
    page.wait_for_url(f"**/ui/generations/{gen_id}")
    assert page.locator("#trace tr").count() > 1
    assert page.locator("#timeline li").count() >= 3
    assert "sha256" in page.locator("#images").inner_text()
    s.shot("generation")
    page.locator("#images button.approved").first.click()
    page.wait_for_url(f"**/ui/generations/{gen_id}*")
    assert page.locator(".approval").first.inner_text() == "approved"

    s.goto("/ui/account")
    balance = page.inner_text("#balance")
    assert "credits" in balance or "unmetered" in balance
    s.shot("account")
    s.close()


def test_admin_resets_a_breaker_refuses_bad_config_and_rolls_back(
    browser: Any, server: Server
) -> None:
    s = Session(browser, server, ADMIN_KEY)
    s.sign_in()
    page = s.page
    s.goto("/ui/admin")
    s.shot("admin")
    page.click("button.reset-breaker[data-provider='backup']")
    page.wait_for_selector("#admin-notice")
    assert "breaker reset: backup" in page.inner_text("#admin-notice")

    page.fill("#config-text", '{"routing": {"retry": {"attempts": 2}}}')
    page.click("#config-form button[type=submit]")
    page.wait_for_selector("#admin-notice")
    page.fill("#config-text", '{"routing": {"retry": {"attempts": 3}}}')
    page.click("#config-form button[type=submit]")
    page.wait_for_selector("#admin-notice")
    page.fill("#config-text", '{"routing": {"retry": {"attempts": -5}}}')
    page.click("#config-form button[type=submit]")
    page.wait_for_selector("#admin-error")
    assert "routing.retry.attempts" in page.inner_text("#admin-error")
    s.shot("admin-config-refused")
    api = server.client()
    assert api.get("/admin/config").json()["version"] == 2  # the old config stays

    page.click("button.rollback[data-version='1']")
    page.wait_for_selector("#admin-notice")
    config = api.get("/admin/config").json()
    assert config["version"] == 3
    assert config["overrides"] == {"routing": {"retry": {"attempts": 2}}}
    s.goto("/ui/admin?diff_from=2&diff_to=3")
    assert "version 2" in page.inner_text("#config-diff")
    s.close()


def test_a_plain_key_gets_403_on_admin_pages(browser: Any, server: Server) -> None:
    s = Session(browser, server, _plain_key(server))
    s.sign_in()
    assert s.page.locator("nav a[href='/ui/admin']").count() == 0
    answer = s.goto("/ui/admin")
    assert answer.status == 403
    assert "admin key" in s.page.inner_text("main")
    s.shot("admin-403")
    s.close()


def test_a_form_posted_without_its_csrf_token_is_refused(browser: Any, server: Server) -> None:
    s = Session(browser, server, ADMIN_KEY)
    s.sign_in()
    s.goto("/ui/admin")
    s.page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    s.page.click("button.reset-breaker[data-provider='backup']")
    s.page.wait_for_load_state()
    assert "csrf_failed" in s.page.inner_text("main")
    s.shot("csrf-refused")
    s.close()
    assert httpx.get(server.base_url + "/ui/admin", follow_redirects=False).status_code == 303
