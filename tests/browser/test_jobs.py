"""The dashboard against a real server running real containers: live states, live logs
that resume after a cut, usage charts, cancel by role, time travel, inert hostile text, a
tampered history, the keyboard, and a phone's width."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from jobledger.replay.archiving import archive_before
from tests.browser.conftest import DESKTOP, PHONE, Web, screenshot, sign_in_as
from tests.browser.test_pages import tab_to

# Records every state a job's row or page shows, in order, as the page changes it.
RECORD_STATES = """(selector) => {
  window.seenStates = [];
  const note = () => {
    const el = document.querySelector(selector);
    const s = el && el.dataset.state;
    if (s && window.seenStates[window.seenStates.length - 1] !== s) window.seenStates.push(s);
  };
  new MutationObserver(note).observe(document.body,
    { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  note();
}"""


async def wait_state(page: Any, selector: str, state: str) -> None:
    await page.wait_for_selector(f"{selector}[data-state={state}]")


async def test_a_submitted_job_appears_and_goes_queued_running_succeeded_live(
    page: Any, web: Web, test_image: str
) -> None:
    await sign_in_as(page, web.viewer)
    await page.goto("/jobs?label=test=lifecycle")
    await page.wait_for_selector("text=No jobs match")
    await page.wait_for_selector(".live[data-live=live]")
    # Queued for a moment on purpose, so the page has a queued state to show.
    later = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    job = await web.submit(test_image, "sleep 1; echo done", labels={"test": "lifecycle"},
                           scheduled_for=later)  # fmt: skip
    row = f"tr[data-job-id='{job['id']}']"
    await page.wait_for_selector(row)
    await page.evaluate(RECORD_STATES, row)
    await page.wait_for_selector(f"{row}[data-state=succeeded]", timeout=30_000)
    assert await page.evaluate("window.seenStates") == ["queued", "running", "succeeded"]
    # The counts follow (read again after each change).
    await page.wait_for_selector("a.count[data-state=succeeded] .n:text-is('1')")
    assert await page.locator("a.count[data-state=running] .n").text_content() == "0"


async def test_live_logs_resume_after_the_websocket_is_cut(
    page: Any, web: Web, test_image: str
) -> None:
    script = "for i in $(seq 1 16); do echo line $i; sleep 0.2; done; echo bye >&2"
    job = await web.submit(test_image, script)
    log_sockets: list[str] = []
    page.on("websocket", lambda ws: "/logs/ws" in ws.url and log_sockets.append(ws.url))
    await sign_in_as(page, web.viewer)
    await page.goto(f"/jobs/{job['id']}")
    await page.wait_for_selector(".log .line[data-seq='3']", timeout=30_000)
    # Cut the page's log connection the way a network drop does: the page did not ask.
    cut = await page.evaluate("""() => {
      const ws = [...window.jobledger.sockets].find((s) => s.url.includes('/logs/ws'));
      ws.close(); return true; }""")
    assert cut
    await page.wait_for_selector(".logs .live[data-status=ended]", timeout=30_000)
    texts = await page.locator(".log .line .text").all_text_contents()
    expected = [f"line {i}" for i in range(1, 17)] + ["bye"]
    if texts != expected:  # seen once in CI (the tail missing): the page's fault or the store's?
        stored = await asyncio.to_thread(web.api, "GET", f"/api/v1/jobs/{job['id']}/logs")
        status = await page.locator(".logs .live").get_attribute("data-status")
        # The job's end says whether it printed everything (a container killed from outside
        # ends 137: another install's worker recovering under the same worker id did that).
        end = await asyncio.to_thread(web.api, "GET", f"/api/v1/jobs/{job['id']}")
        pytest.fail(
            f"the page shows {texts} (status {status}, sockets {log_sockets}); the server "
            f"stored {[line['text'] for line in stored['lines']]}; the job ended "
            f"{end['state']} (exit code {end['exit_code']})"
        )
    assert await page.locator(".log .line.stream-stderr .text").all_text_contents() == ["bye"]
    assert len(log_sockets) >= 2, log_sockets
    assert "after=0" not in log_sockets[-1]  # the second connection resumed where it was
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Download as text").click()
    path = await (await download.value).path()
    text = await asyncio.to_thread(path.read_text)
    assert text == "".join(f"line {i}\n" for i in range(1, 17)) + "bye\n"
    # Search within the output.
    await page.fill("#log-search", "line 1")
    assert await page.locator(".log .line").count() == 8  # line 1, line 10..16
    await wait_state(page, "article.job", "succeeded")
    await screenshot(page, "job")


async def test_the_charts_draw_points_for_a_job_that_burns_cpu(
    page: Any, web: Web, test_image: str
) -> None:
    burn = "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo burnt"
    job = await web.submit(test_image, burn)
    await sign_in_as(page, web.viewer)
    await page.goto(f"/jobs/{job['id']}")
    await page.wait_for_function(
        """() => {
          const charts = [...document.querySelectorAll('figure.chart')];
          return charts.length === 2 && charts.every((f) => Number(f.dataset.points) >= 2);
        }""",
        timeout=60_000,
    )
    assert await page.locator("figure.chart canvas").count() == 2
    cpu = await web_usage(web, job["id"])
    assert max(s["cpu_percent"] for s in cpu) > 10  # it did burn


async def web_usage(web: Web, job_id: str) -> list[dict[str, Any]]:
    usage = await asyncio.to_thread(web.api, "GET", f"/api/v1/jobs/{job_id}/usage")
    samples: list[dict[str, Any]] = usage["samples"]
    return samples


async def test_a_viewer_has_no_cancel_and_an_operator_cancels_from_the_keyboard(
    browser: Any, page: Any, web: Web, test_image: str
) -> None:
    job = await web.submit(test_image, "echo started; sleep 60")
    await sign_in_as(page, web.viewer)
    await page.goto(f"/jobs/{job['id']}")
    await page.wait_for_selector(".log .line[data-seq='1']", timeout=30_000)  # it runs
    assert await page.get_by_role("button", name="Cancel job").count() == 0
    ctx = await browser.new_context(base_url=web.url, viewport=DESKTOP)
    try:
        operator = await ctx.new_page()
        await sign_in_as(operator, web.operator)
        await operator.goto(f"/jobs/{job['id']}")
        await wait_state(operator, "article.job", "running")
        await tab_to(operator, "button.cancel")
        await operator.keyboard.press("Enter")
        # The confirmation takes the focus.
        await operator.wait_for_function(
            "() => document.activeElement.textContent === 'Yes, cancel it'"
        )
        await operator.keyboard.press("Enter")
        await wait_state(operator, "article.job", "cancelled")
        # Once ended, it can be run again: a new job, linked to this one.
        await operator.get_by_role("button", name="Rerun").click()
        await operator.get_by_role("button", name="Yes, rerun").click()
        await operator.wait_for_url(lambda url: job["id"] not in url)
        rerun_id = operator.url.rsplit("/", 1)[1]
        await operator.wait_for_selector(f"a[href='/jobs/{job['id']}']")  # "Rerun of"
        await asyncio.to_thread(web.api, "POST", f"/api/v1/jobs/{rerun_id}/cancel")
    finally:
        await ctx.close()
    # The viewer's page saw it too, pushed, without a reload.
    await wait_state(page, "article.job", "cancelled")


async def test_an_answer_that_arrives_late_does_not_take_the_page_back(
    page: Any, web: Web, test_image: str
) -> None:
    # The cancel's answer (the job `cancelling`) reaching the page after the watch pushed
    # `cancelled`, as under load: the page went back to the older state and stayed there,
    # a cancel button on an ended job (a way the operator's cancel test can fail).
    job = await web.submit(test_image, "sleep 60", stop_grace_seconds=1)
    await sign_in_as(page, web.operator)
    await page.goto(f"/jobs/{job['id']}")
    await wait_state(page, "article.job", "running")

    async def answer_late(route: Any) -> None:
        answer = await route.fetch()  # the job as the cancel left it: cancelling
        await wait_state(page, "article.job", "cancelled")  # pushed meanwhile
        await route.fulfill(response=answer)

    await page.route(f"**/api/v1/jobs/{job['id']}/cancel", answer_late)
    await page.get_by_role("button", name="Cancel job").click()
    async with page.expect_response(f"**/api/v1/jobs/{job['id']}/cancel") as answered:
        await page.get_by_role("button", name="Yes, cancel it").click()
    assert (await (await answered.value).json())["state"] == "cancelling"
    # Let the page handle the answer (its tasks, then a frame) before looking.
    await page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r)))")
    assert await page.get_attribute("article.job", "data-state") == "cancelled"
    assert await page.get_by_role("button", name="Cancel job").count() == 0


async def test_a_list_read_that_answers_late_does_not_take_a_row_back(
    page: Any, web: Web, test_image: str
) -> None:
    # The list read (the job `running`) answering after the watch pushed `cancelled`, as
    # under load: the list replaced its rows with the older ones and kept them.
    label = f"late-{datetime.now(UTC).timestamp()}"
    job = await web.submit(test_image, "sleep 60", stop_grace_seconds=1, labels={"test": label})
    async with asyncio.timeout(30):
        while (await asyncio.to_thread(web.api, "GET", f"/api/v1/jobs/{job['id']}"))[
            "state"
        ] != "running":
            await asyncio.sleep(0.1)
    held: list[Any] = []  # the list reads made, each answered once released
    answered: list[Any] = []
    release = asyncio.Event()

    async def answer_late(route: Any) -> None:
        answer = await route.fetch()  # the list as it stands: the job running
        held.append(route)
        await release.wait()
        await route.fulfill(response=answer)
        answered.append(route)

    await page.route(lambda url: urlsplit(url).path == "/api/v1/jobs", answer_late)
    await sign_in_as(page, web.viewer)
    await page.goto(f"/jobs?label=test={label}")
    await page.wait_for_selector(".live[data-live=live]")
    async with asyncio.timeout(30):
        while not held:
            await asyncio.sleep(0.05)
    await asyncio.to_thread(web.api, "POST", f"/api/v1/jobs/{job['id']}/cancel", {})
    row = f"tr[data-job-id='{job['id']}']"
    await wait_state(page, row, "cancelled")  # pushed by the watch while the reads wait
    release.set()
    async with asyncio.timeout(30):
        while len(answered) < len(held):
            await asyncio.sleep(0.05)
    # Let the page handle the answers (their tasks, then a frame) before looking.
    await page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r)))")
    assert await page.get_attribute(row, "data-state") == "cancelled"


async def test_the_time_slider_shows_the_job_queued_before_it_started(
    page: Any, web: Web, test_image: str
) -> None:
    job = await web.submit(test_image, "true")
    await sign_in_as(page, web.viewer)
    await page.goto(f"/jobs/{job['id']}")
    await wait_state(page, "article.job", "succeeded")
    await page.wait_for_selector("#travel")
    await page.focus("#travel")
    await page.keyboard.press("Home")  # the first event: the submit
    await page.wait_for_selector(".travel .past-state[data-state=queued]")
    shown = await page.text_content(".travel-at") or ""
    events = await asyncio.to_thread(web.api, "GET", f"/api/v1/jobs/{job['id']}/events")
    first = events["events"][0]
    assert first["type"] == "JobSubmitted"
    final = await asyncio.to_thread(web.api, "GET", f"/api/v1/jobs/{job['id']}")
    assert first["recorded_at"] < final["started_at"]  # a time before it started
    assert "JobSubmitted" in shown
    # The list travels too: at the submit's instant the job was queued.
    await page.goto(f"/jobs?project=web&at={first['recorded_at'].replace('+', '%2B')}")
    await page.wait_for_selector(f"tr[data-job-id='{job['id']}'][data-state=queued]")
    assert await page.text_content(".live") == "not live: showing the past"


HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


async def test_script_in_output_and_labels_is_shown_as_text(
    page: Any, web: Web, test_image: str
) -> None:
    job = await web.submit(test_image, f"echo '{HOSTILE}'", labels={"note": HOSTILE})
    await sign_in_as(page, web.viewer)
    response = await page.goto(f"/jobs/{job['id']}")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    await page.wait_for_selector(".logs .live[data-status=ended]", timeout=30_000)
    assert await page.locator(".log .line .text").all_text_contents() == [HOSTILE]
    assert HOSTILE in (await page.locator(".facts .label").all_text_contents())[0]
    await page.goto(f"/jobs?project={job['project']}")
    await page.wait_for_selector(f"tr[data-job-id='{job['id']}'] .label")
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("img[src=x]").count() == 0


async def test_a_job_whose_event_was_altered_shows_not_verified(
    page: Any, web: Web, test_image: str
) -> None:
    honest = await web.submit(test_image, "true")
    altered = await web.submit(test_image, "true")
    await sign_in_as(page, web.viewer)
    await page.goto(f"/jobs/{honest['id']}")
    await page.wait_for_selector(".verify[data-verified=true]")
    conn = await asyncpg.connect(web.dsn)
    try:
        async with conn.transaction():
            # Behind the append-only guard, as the replay verify tests do.
            await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
            await conn.execute(
                "UPDATE events SET data = jsonb_set(data, '{spec,command}', '[\"false\"]') "
                "WHERE stream_id = $1::uuid AND version = 1",
                altered["id"],
            )
            await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update")
    finally:
        await conn.close()
    await page.goto(f"/jobs/{altered['id']}")
    mark = page.locator(".verify[data-verified=false]")
    await mark.wait_for()
    assert "not verified" in (await mark.text_content() or "")


async def test_an_archived_job_says_where_its_events_went(
    page: Any, web: Web, test_image: str, tmp_path: Path
) -> None:
    job = await web.submit(test_image, "true")
    await sign_in_as(page, web.viewer)
    await page.goto(f"/jobs/{job['id']}")
    await wait_state(page, "article.job", "succeeded")
    pool = await asyncpg.create_pool(web.dsn, min_size=1, max_size=2)
    try:
        cutoff = await pool.fetchval("SELECT clock_timestamp()")
        report = await archive_before(pool, cutoff, tmp_path)
    finally:
        await pool.close()
    await page.reload()
    mark = page.locator(".verify[data-archived=true][data-verified=true]")
    await mark.wait_for()
    text = await mark.text_content() or ""
    assert "archived in" in text and any(f in text for f in report.files), text
    file = await page.locator(".archived[data-archived-file]").get_attribute("data-archived-file")
    assert file in report.files
    assert await page.locator("table.events").count() == 0
    assert await page.locator("#timeline-title").count() == 0


async def test_a_phone_shows_the_jobs_list_without_sideways_scrolling(
    page: Any, web: Web, test_image: str
) -> None:
    await web.submit(test_image, "true", labels={"a-rather-long-label-key": "x" * 120})
    await page.set_viewport_size(PHONE)
    await sign_in_as(page, web.viewer)
    await page.goto("/jobs")
    await page.wait_for_selector("tr[data-job-id]")
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    await screenshot(page, "jobs-phone")
