"""Answer first, page after: serve a FastAPI app from a thread while the rest of the app is still built.

Importing Gradio alone takes about 3 s, as long as torch and timm together (docs/speed.md), and the
plain HTTP door needs none of it. :class:`ApiFirst` starts uvicorn in a background thread as soon as
the model and the ``/v1`` routes exist; the main thread goes on importing Gradio and building the page,
then hands it over with :meth:`ApiFirst.attach_page`, which mounts it on the server's own event loop in
one step (no request sees it half started). Until then ``/`` answers 503 with a page that reloads
itself. This module does not import Gradio: the caller mounts the page and names its Blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.routing import Mount, Route

log = logging.getLogger(__name__)

STARTING_PAGE = (
    '<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">'
    "<title>Starting</title></head><body><p>The page is starting; it reloads itself in a moment. "
    "The HTTP API at /v1 already answers.</p></body></html>"
)


def _starting(_request: Any) -> HTMLResponse:
    return HTMLResponse(STARTING_PAGE, status_code=503, headers={"Retry-After": "2"})


class ApiFirst:
    """``server`` served from a background thread before its page exists; ``page_ready`` is set once
    the page is mounted and started (health checks report it)."""

    def __init__(self, server: FastAPI, host: str, port: int, page_ready: threading.Event):
        self.server, self.page_ready = server, page_ready
        self._uvicorn = uvicorn.Server(uvicorn.Config(server, host=host, port=port, log_level="warning"))
        # A daemon: if the main thread dies while building the page, the process ends instead of serving
        # a page that never comes. On the normal path wait() joins it after a graceful shutdown.
        self._thread = threading.Thread(target=self._uvicorn.run, name="api-server", daemon=True)
        self._placeholder = Route("/", _starting, methods=["GET", "HEAD"])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._page: asyncio.Future | None = None
        own_lifespan = server.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            async with own_lifespan(app) as state:
                try:
                    yield state
                finally:  # the page's own lifespan ends inside the task that entered it
                    self._stopping.set()
                    if self._page is not None:
                        await asyncio.wrap_future(self._page)

        server.router.lifespan_context = lifespan

    def start(self) -> ApiFirst:
        """Start serving (the placeholder at ``/``) and return once the server listens; SystemExit if it
        cannot (uvicorn has logged why, e.g. the port is taken)."""
        self.server.router.routes.append(self._placeholder)
        self._thread.start()
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                raise SystemExit(f"Cannot start: the server could not listen on port {self._uvicorn.config.port}.")
            time.sleep(0.01)
        return self

    def attach_page(self, mount: Callable[[], Any], blocks: Any) -> None:
        """Mount the page (``mount()``, e.g. ``gr.mount_gradio_app``) and start ``blocks`` (its queue, its
        MCP session manager) on the server's loop; returns once the page answers."""
        started = threading.Event()
        self._page = asyncio.run_coroutine_threadsafe(self._serve_page(mount, blocks, started), self._loop)
        try:
            while not started.wait(0.05):
                if self._page.done():
                    self._page.result()  # raises what went wrong
                    return  # the server stopped before the page was up
        except BaseException:
            self._uvicorn.should_exit = True  # no half-started app left serving
            raise

    async def _serve_page(self, mount: Callable[[], Any], blocks: Any, started: threading.Event) -> None:
        if self._stopping.is_set():
            return
        # One task mounts and starts the page; health reports the page only once both are done.
        self.server.router.routes.remove(self._placeholder)
        mount()
        (page,) = [r.app for r in self.server.router.routes if isinstance(r, Mount) and hasattr(r.app, "get_blocks")]
        async with page.router.lifespan_context(page):
            blocks.run_startup_events()
            await blocks.run_extra_startup_events()
            self.page_ready.set()
            started.set()
            log.info("page ready")
            await self._stopping.wait()

    def wait(self) -> None:
        """Serve until SIGTERM or SIGINT (uvicorn's own graceful shutdown), then return."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._uvicorn.handle_exit)
        self._thread.join()
