"""Every page of the dashboard opens without a script error, signed in as the server admin,
and leaves a screenshot for the README; sign-in works from the keyboard."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.browser.conftest import PROJECT, Web, screenshot, sign_in_as


async def tab_to(page: Any, selector: str, presses: int = 30) -> None:
    """Press Tab until the element matching `selector` has the focus (keyboard users' way)."""
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} not reached by {presses} presses of Tab")


async def test_sign_in_with_a_token_from_the_keyboard(page: Any, web: Web) -> None:
    await page.goto("/")
    await page.wait_for_selector("form[aria-labelledby=signin-title]")
    await screenshot(page, "sign-in")
    await tab_to(page, "#token")
    await page.keyboard.type("jl_not_a_token")
    await page.keyboard.press("Enter")
    await page.get_by_role("alert").filter(has_text="refused").wait_for()
    await page.fill("#token", web.operator)
    await tab_to(page, "button[type=submit]")
    await page.keyboard.press("Enter")
    await page.get_by_role("navigation", name="Pages").wait_for()
    assert await page.evaluate("sessionStorage.getItem('jobledger.token')") == web.operator
    assert web.operator not in page.url  # the token never goes into a URL
    who = await page.text_content("header .who") or ""
    assert "operator" in who
    # Signing out forgets the token.
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_selector("#token")
    assert await page.evaluate("sessionStorage.getItem('jobledger.token')") is None


async def test_every_page_opens_and_is_captured(page: Any, web: Web, test_image: str) -> None:
    step = {"image": test_image, "command": ["echo", "step"]}
    run = await asyncio.to_thread(web.api, "POST", "/api/v1/workflows", {
        "project": PROJECT,
        "steps": [
            {"name": "extract", "spec": step},
            {"name": "transform", "spec": step, "needs": ["extract"]},
            {"name": "load", "spec": step, "needs": ["transform"]},
        ],
    })  # fmt: skip
    await sign_in_as(page, web.admin)
    # A run's steps with their states, once all have run.
    await page.goto(f"/workflows/{run['id']}")
    await page.wait_for_function(
        "() => document.querySelectorAll('.steps li[data-state=succeeded]').length === 3",
        timeout=60_000,
    )
    # Shown as the API and CLI label it: the run's first 8 hex digits, its steps' RUN.N.
    assert run["id"][:8] in await page.locator("h1").inner_text()
    assert f"{run['id'][:8]}.3" in await page.locator(".steps").inner_text()
    await screenshot(page, "workflow")
    for path, name, ready in [
        ("/jobs", "jobs", "table.jobs-table"),
        ("/audit", "audit", "table.audit"),
        ("/projects", "projects", f"text={PROJECT}"),
        (f"/projects/{PROJECT}", "project", "text=Service accounts"),
        (f"/schedules?project={PROJECT}", "schedules", "text=No schedules"),
        ("/workflows", "workflows", "h1:has-text('Workflow runs')"),
        (f"/definitions?project={PROJECT}", "definitions", "text=No definitions"),
    ]:
        await page.goto(path)
        await page.wait_for_selector(ready)
        assert await page.locator(".error").count() == 0, (path, await page.content())
        await screenshot(page, name)
