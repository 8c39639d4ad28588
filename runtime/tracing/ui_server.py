"""The tracing UI over HTTP: ``tether ui`` serves it alone; ``tether serve`` mounts it at ``/ui``.

Everything the page needs comes from here (no CDN, no web fonts)::

    GET /ui/                      the page (ui/index.html, app.js, app.css)
    GET /ui/api/runs              the runs in the store, newest first
    GET /ui/api/runs/{run}        one run arranged for drawing (``view.build_view``)

Example::

    app = FastAPI(); app.include_router(ui_router(Path("~/.cache/tether/traces").expanduser()))
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response

from tether.runtime.tracing.store import SUFFIX, list_runs, read_run
from tether.runtime.tracing.view import build_view

STATIC = Path(__file__).parent / "ui"
_FILES = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}


class _Cache:
    """The last view built per run, rebuilt when a span file of the run changes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._views: dict[Path, tuple[tuple, bytes]] = {}

    def get(self, run_dir: Path) -> bytes:
        stamp = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.glob(f"*{SUFFIX}")))
        with self._lock:
            hit = self._views.get(run_dir)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        body = json.dumps(build_view(read_run(run_dir), run_dir.name).to_json(), separators=(",", ":")).encode()
        with self._lock:
            self._views[run_dir] = (stamp, body)
        return body


def ui_router(root: Path, prefix: str = "/ui") -> APIRouter:
    """Routes serving the UI for the trace store at ``root`` (a store root, or one run folder)."""
    root = Path(root).expanduser()
    router = APIRouter(prefix=prefix)
    cache = _Cache()

    def runs() -> dict[str, Path]:
        return {p.name: p for p in list_runs(root)}

    @router.get("", include_in_schema=False)
    async def _index_redirect() -> Response:
        return RedirectResponse(prefix + "/")

    @router.get("/", include_in_schema=False)
    async def _index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @router.get("/static/{name}", include_in_schema=False)
    async def _static(name: str) -> Response:
        if name not in _FILES:
            raise HTTPException(404, f"no UI file {name!r}")
        return FileResponse(STATIC / name, media_type=_FILES[name])

    @router.get("/api/runs")
    async def _runs() -> dict:
        return {"root": str(root), "runs": [{"name": name, "files": len(list(p.glob(f"*{SUFFIX}")))}
                                            for name, p in runs().items()]}

    @router.get("/api/runs/{run}")
    async def _run(run: str) -> Response:
        path = runs().get(run)
        if path is None:
            raise HTTPException(404, f"no trace run {run!r} under {root}; GET {prefix}/api/runs lists them")
        import anyio
        body = await anyio.to_thread.run_sync(cache.get, path)
        return Response(body, media_type="application/json")

    return router


def create_ui_app(root: Path):
    """A FastAPI app with only the UI (``tether ui``); ``/`` leads to ``/ui/``."""
    from fastapi import FastAPI
    app = FastAPI(title="tether traces", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(ui_router(root))

    @app.get("/", include_in_schema=False)
    async def _home() -> Response:
        return RedirectResponse("/ui/")
    return app


def serve_ui(root: Path, host: str = "127.0.0.1", port: int = 8321) -> None:
    """Serve the UI until interrupted (blocks)."""
    import uvicorn
    uvicorn.run(create_ui_app(root), host=host, port=port, log_level="warning")
