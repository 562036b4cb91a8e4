"""The browser example's own web server, started by `make run`.

The page (examples/browser/) imports the JS client by relative URL, so both must come from
one origin: this server's, on a loopback port of its own, which `make run` tells the
gateway to allow by CORS. It serves those two folders only, not the checkout, which also
holds the broker's Erlang cookie and the job store.

    python examples/browser/serve.py --port 8001 --gateway http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parents[2]


def create_app(gateway_url: str) -> Starlette:
    """The page under /examples/browser/, the client under /clients/js/src/ (the paths
    app.js expects); `/` opens the page pointed at `gateway_url`."""

    async def home(request: Request) -> RedirectResponse:
        return RedirectResponse(f"/examples/browser/index.html?gateway={quote(gateway_url)}")

    return Starlette(
        routes=[
            Route("/", home),
            Mount("/examples/browser", StaticFiles(directory=ROOT / "examples" / "browser")),
            Mount("/clients/js/src", StaticFiles(directory=ROOT / "clients" / "js" / "src")),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the browser example.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000", help="the gateway's URL")
    args = parser.parse_args()
    uvicorn.run(create_app(args.gateway), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
