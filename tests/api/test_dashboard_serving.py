"""The dashboard's serving (issue 17): pages answer index.html under a strict CSP, static
files are versioned and cached, and the API under /api/v1 is left as it was."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.web.serving import CSP

Client = TestClient[web.Request, web.Application]


async def test_pages_answer_the_app_under_a_strict_csp(client: Client) -> None:
    for path in ("/", "/jobs", "/jobs/0192", "/audit", "/workflows/x"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Security-Policy"] == CSP
        assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-cache"
        html = await resp.text()
        assert '<script type="module" src="/static/' in html
        assert "<script>" not in html and "style=" not in html  # nothing inline


async def test_static_files_are_served_under_the_version_the_page_names(client: Client) -> None:
    html = await (await client.get("/")).text()
    src = re.search(r'src="(/static/[0-9a-f]+/js/app\.js)"', html)
    assert src is not None
    resp = await client.get(src[1])
    assert resp.status == 200
    assert resp.content_type == "text/javascript"
    assert "immutable" in resp.headers["Cache-Control"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    vendored = src[1].replace("js/app.js", "vendor/uplot/uPlot.esm.js")
    big = await client.get(vendored, headers={"Accept-Encoding": "gzip"})
    assert big.status == 200 and big.headers["Content-Encoding"] == "gzip"
    assert "uPlot" in await big.text()
    # An older version's URL still answers, but is not cached for long.
    old = await client.get("/static/000000000000/js/app.js")
    assert old.status == 200 and old.headers["Cache-Control"] == "no-cache"


async def test_an_unknown_static_file_is_404(client: Client) -> None:
    for path in ("/static/x/nope.js", "/static/x/../../serving.py", "/static/x/%2e%2e/app.py"):
        resp = await client.get(path)
        assert resp.status == 404, path


async def test_the_api_is_untouched(client: Client) -> None:
    resp = await client.get("/api/v1/jobs")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert "Content-Security-Policy" not in resp.headers
    missing = await client.get("/api/v1/no-such-route")
    assert missing.status == 404 and missing.content_type == "application/json"
    assert (await missing.json())["error"]["code"] == "not_found"
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json()) == {"status": "ok"}
