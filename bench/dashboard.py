"""The dashboard's first load on a large log: load N jobs (about 3 events each, as scale.py
does), then open the jobs page and a job's page in Debian's Chromium (Playwright) and read
the browser's own timings: when the list's API call answered, when its first 50 rows were
in the DOM and the gap between the two (the page's own work), when the counts per state
came; cold (a new browser context) and warm.

    .venv/bin/python bench/dashboard.py [--jobs 340000] [--data-dir DIR]

Needs `chromium` (scripts/test installs it as root) and Playwright (the test extras).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from harness import ADMIN_TOKEN, machine, server, summary
from scale import load

# What the page's Performance API says about one load of /jobs (ms from navigation start).
JOBS_TIMING = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const api = performance.getEntriesByType('resource')
    .find((r) => r.name.includes('/api/v1/jobs?'));
  const counts = performance.getEntriesByType('resource')
    .find((r) => r.name.includes('/api/v1/jobs/counts'));
  const mark = performance.getEntriesByName('jobledger:jobs-rendered')[0];
  const bytes = performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize, 0);
  return {
    dom_content_loaded: nav.domContentLoadedEventEnd,
    api_request_start: api.requestStart, api_answered: api.responseEnd,
    rows_rendered: mark.startTime, render_after_answer: mark.startTime - api.responseEnd,
    counts_answered: counts ? counts.responseEnd : -1,
    transferred_bytes: bytes + nav.transferSize,
  };
}"""


async def measure(url: str, samples: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    exe = shutil.which("chromium")
    if exe is None:
        raise SystemExit("no chromium: apt-get install chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        runs: list[dict[str, float]] = []
        for n in range(samples):
            # A new context each time: a cold cache, as a first visit.
            ctx = await browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
            page = await ctx.new_page()
            await page.add_init_script(
                f"sessionStorage.setItem('jobledger.token', {json.dumps(ADMIN_TOKEN)})"
            )
            await page.goto("/jobs")
            await page.wait_for_selector("tbody tr:nth-child(50)", timeout=60_000)
            await page.wait_for_function(
                "performance.getEntriesByName('jobledger:jobs-rendered').length > 0"
            )
            await page.wait_for_selector("ul.counts")
            cold = await page.evaluate(JOBS_TIMING)
            await page.reload()
            await page.wait_for_selector("tbody tr:nth-child(50)", timeout=60_000)
            await page.wait_for_function(
                "performance.getEntriesByName('jobledger:jobs-rendered').length > 0"
            )
            await page.wait_for_selector("ul.counts")
            warm = await page.evaluate(JOBS_TIMING)
            job_id = await page.get_attribute("tbody tr:first-child", "data-job-id")
            await page.evaluate("performance.mark('open-job')")
            await page.click("tbody tr:first-child a")
            await page.wait_for_selector("table.events tbody tr")
            detail = await page.evaluate(
                "performance.now() - performance.getEntriesByName('open-job')[0].startTime"
            )
            run = {f"cold_{k}": v for k, v in cold.items()}
            run |= {f"warm_{k}": v for k, v in warm.items()}
            runs.append({**run, "job_page_shown": detail})
            await ctx.close()
            print(f"run {n + 1}/{samples}: job {job_id}", file=sys.stderr)
        await browser.close()
    return {key: summary([r[key] for r in runs], scale=1.0) for key in runs[0]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=340_000, help="jobs to load (~3 events each)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per append")
    parser.add_argument("--writers", type=int, default=2, help="concurrent loading batches")
    parser.add_argument("--samples", type=int, default=5, help="page loads measured")
    parser.add_argument("--data-dir", type=Path, help="keep the database here (see scale.py)")
    args = parser.parse_args()
    async with server("--no-scheduler", data_dir=args.data_dir) as served:
        loaded = await load(served.dsn, args.jobs, args.batch, args.writers)
        print(f"loaded {loaded}", file=sys.stderr)
        timings = await measure(served.url, args.samples)
    report = {"benchmark": "dashboard", "load": loaded, "ms": timings, "machine": machine()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
