"""The browser rig: one Debian Chromium per test run, driven by Playwright, with a new context
per test; one `jobledger serve` (its own database, the Docker executor) shared by the browser
tests, with tokens of each role; screenshots saved where the README shows them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobledger.store.embedded import EmbeddedPostgres
from tests.conftest import ADMIN_TOKEN, fresh_database
from tests.e2e.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
#: Where each page's screenshot goes, a test artifact (git ignores the folder, so a test run
#: leaves the tree clean). The README's are refreshed with
#: `JOBLEDGER_SCREENSHOTS=docs/screenshots scripts/test tests/browser`.
SCREENSHOTS = Path(os.environ.get("JOBLEDGER_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
PROJECT = "web"
#: A narrow phone's CSS width (an iPhone 12-15's).
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def _no_browser(reason: str) -> None:
    """Skip when the machine has no browser; under CI that is a failure: CI installs it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the browser tests: scripts/test installs Chromium)")
    pytest.skip(f"{reason}: run scripts/test as root to have it installed")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the whole run (it takes about a second to start)."""
    executable = shutil.which("chromium")
    if executable is None:
        _no_browser("no Chromium on this machine (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _no_browser("Playwright for Python is not installed (pip install -e '.[test]')")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=executable,
            # Tests run as root, where Chromium's sandbox cannot start.
            args=["--no-sandbox"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def call(url: str, method: str, path: str, token: str = ADMIN_TOKEN, body: Any = None) -> Any:
    """A JSON request to the server; the decoded answer (HTTPError for a 4xx/5xx)."""
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


@dataclass
class Web:
    """The served dashboard: its URL, database, and a token of each role in `PROJECT`."""

    url: str
    dsn: str
    admin: str
    operator: str
    viewer: str
    server: Server

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        return call(self.url, method, path, token or self.admin, body)

    async def submit(self, image: str, script: str, **extra: Any) -> dict[str, Any]:
        """Submit `sh -c script` in `PROJECT` (as the operator); the job as answered."""
        body = {"image": image, "command": ["sh", "-c", script], "project": PROJECT, **extra}
        job: dict[str, Any] = await asyncio.to_thread(
            self.api, "POST", "/api/v1/jobs", body, self.operator
        )
        return job


def _account_token(url: str, name: str, role: str) -> str:
    body = {"name": name, "role": role}
    call(url, "POST", f"/api/v1/projects/{PROJECT}/service-accounts", body=body)
    issued = call(
        url, "POST", f"/api/v1/projects/{PROJECT}/service-accounts/{name}/tokens", body={}
    )
    token: str = issued["token"]
    return token


@pytest.fixture(scope="session")
async def web(
    pg_cluster: EmbeddedPostgres, template_dsn: str, test_image: str
) -> AsyncIterator[Web]:
    """`jobledger serve` with the Docker executor on a database of its own, shared by the
    browser tests (each works on its own jobs); fast usage samples so charts fill quickly."""
    async with fresh_database(pg_cluster) as dsn:
        server = await asyncio.to_thread(
            Server, "--database-url", dsn, "--executor", "docker", "--sample-interval", "0.25"
        )
        try:
            await asyncio.to_thread(call, server.url, "POST", "/api/v1/projects", ADMIN_TOKEN,
                                    {"name": PROJECT})  # fmt: skip
            operator = await asyncio.to_thread(_account_token, server.url, "ops", "operator")
            viewer = await asyncio.to_thread(_account_token, server.url, "watcher", "viewer")
            yield Web(server.url, dsn, ADMIN_TOKEN, operator, viewer, server)
        finally:
            if server.proc.poll() is None:
                server.stop()


@pytest.fixture
async def context(browser: Any, web: Web) -> AsyncIterator[Any]:
    """A fresh browser context (no storage shared with other tests) on the served app."""
    ctx = await browser.new_context(base_url=web.url, viewport=DESKTOP)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: Any) -> AsyncIterator[Any]:
    """A page whose uncaught script errors and Content-Security-Policy violations fail the
    test (a violation is a console error naming the policy)."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            msg.type == "error"
            and "Content Security Policy" in msg.text
            and errors.append(msg.text)
        ),
    )
    yield page
    assert not errors, f"errors on the page: {errors}"


async def sign_in_as(page: Any, token: str) -> None:
    """Sign in the way a user does when the sign-in form itself is not under test: the token
    in the tab's session storage before the app loads."""
    await page.add_init_script(f"sessionStorage.setItem('jobledger.token', {json.dumps(token)})")


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
