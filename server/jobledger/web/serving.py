"""Serving the dashboard: `index.html` for every page path (the app routes in the browser),
`/static/<version>/...` for its files, and a strict Content-Security-Policy on all of them.

The files are read once at start (a few hundred KiB) and kept with their gzip form. Their
URLs carry a version made from their contents, so they are cached for a year and a new
release is fetched at once: `index.html` (never cached) names the version, and the modules'
relative imports inherit it."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
#: The placeholder in index.html replaced by `/static/<version>`.
STATIC_MARK = "{{static}}"

#: No inline script or style, nothing from another origin, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The paths the app draws in the browser; each answers index.html.
PAGES = (
    "/", "/jobs", "/jobs/{id}", "/audit", "/projects", "/projects/{name}", "/schedules",
    "/workflows", "/workflows/{id}", "/definitions",
)  # fmt: skip
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain"}
#: Worth compressing (the rest, e.g. PNG, is compressed already).
_TEXT = {"text/javascript", "text/css", "text/html", "text/plain", "image/svg+xml"}
WEB_FILES = web.AppKey("web_files", "WebFiles")


@dataclass(frozen=True)
class File:
    body: bytes
    gzipped: bytes | None
    content_type: str


@dataclass(frozen=True)
class WebFiles:
    """Every static file by its path under static/, the version of the set, and the page."""

    files: dict[str, File]
    version: str
    index: File

    @classmethod
    def load(cls, root: Path = STATIC_DIR) -> WebFiles:
        raw = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }
        digest = hashlib.sha256()
        for name, body in raw.items():
            digest.update(name.encode() + b"\0" + body + b"\0")
        version = digest.hexdigest()[:12]
        files = {name: _file(name, body) for name, body in raw.items() if name != "index.html"}
        page = raw["index.html"].decode().replace(STATIC_MARK, f"/static/{version}")
        return cls(files, version, _file("index.html", page.encode()))


def _file(name: str, body: bytes) -> File:
    suffix = Path(name).suffix
    ctype = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    gz = gzip.compress(body, 9, mtime=0) if ctype in _TEXT and len(body) > 1024 else None
    return File(body, gz, ctype)


def _respond(request: web.Request, f: File, cache: str) -> web.Response:
    headers = {"Cache-Control": cache, "Vary": "Accept-Encoding"}
    body = f.body
    if f.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = f.gzipped, "gzip"
    charset = "utf-8" if f.content_type.startswith("text/") else None
    return web.Response(body=body, content_type=f.content_type, charset=charset, headers=headers)


async def page(request: web.Request) -> web.Response:
    """Any page of the app: the one HTML document (always revalidated: it names the version)."""
    return _respond(request, request.app[WEB_FILES].index, "no-cache")


async def static(request: web.Request) -> web.Response:
    """A file of the app; a year's caching under the current version, none under another
    (an old page still loads, and does not pin an old file)."""
    files = request.app[WEB_FILES]
    f = files.files.get(request.match_info["path"])
    if f is None:
        raise web.HTTPNotFound(reason="no such file")
    current = request.match_info["version"] == files.version
    return _respond(request, f, "public, max-age=31536000, immutable" if current else "no-cache")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The dashboard's headers on every answer outside the API (its 404s too)."""
    if request.path.startswith("/api/") or request.path == "/healthz":
        return
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def setup(app: web.Application) -> None:
    """Serve the dashboard from `app` (the API's application)."""
    app[WEB_FILES] = WebFiles.load()
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/static/{version}/{path:.+}", static)
    app.on_response_prepare.append(_security_headers)
