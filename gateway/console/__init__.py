"""The console: the page people use to see and drive the gateway (operations and their
live figures, a form for each from its contract, jobs live, topics), served by the
gateway itself at /console/ from the static files beside this module.

No build step and nothing from a CDN: plain ES modules built on the project's own JS
client (`static/client` is `clients/js/src`) and Ajv's browser bundle (`static/vendor`).
Every path of a page (`/console/jobs/<id>`, a link people share) gets the one document,
with a `<base href>` that leads back to /console/ relatively, so the console also works
under whatever prefix a proxy puts the gateway at.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
PAGES = frozenset({"", "ops", "jobs", "topics"})
"""First path segments that are pages of the console (the router in js/app.js); any
other path under /console/ is one of its files."""

# The page's own rules: its scripts and styles come from here only (Ajv compiles schemas
# into functions, hence 'unsafe-eval'), it talks to this gateway only, and no other site
# may frame it. The files are public; a key only ever travels in requests the page makes.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Console:
    """The console's routes: the document for every page path, the files for the rest."""

    def __init__(self, static: Path = STATIC) -> None:
        # follow_symlink: `client` leads to the JS client's own sources (clients/js/src).
        self.files = StaticFiles(directory=static, follow_symlink=True)
        self.document = (static / "index.html").read_text(encoding="utf-8")

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX, self.to_slash, methods=["GET", "HEAD"]),
            Route(PREFIX + "/{path:path}", self.serve, methods=["GET", "HEAD"]),
        ]

    async def to_slash(self, request: Request) -> Response:
        return RedirectResponse(request.url.path + "/", status_code=308)

    async def serve(self, request: Request) -> Response:
        path: str = request.path_params["path"]
        if path.split("/", 1)[0] in PAGES:
            return self.page(path)
        response = await self.files.get_response(path, request.scope)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    def page(self, path: str) -> Response:
        """The document, its `<base href>` climbing from `path` back to /console/."""
        base = "../" * path.count("/") or "./"
        html = self.document.replace('<base href="./">', f'<base href="{base}">', 1)
        return HTMLResponse(html, headers=PAGE_HEADERS)
