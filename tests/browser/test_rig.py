"""The browser rig itself: Chromium driven by Playwright reaches the served app."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Web


async def test_the_browser_reaches_the_server(page: Any, web: Web) -> None:
    response = await page.goto("/healthz")
    assert response.status == 200
    assert '"status":"ok"' in (await page.text_content("body") or "").replace(" ", "")
