"""One bound on the server's work, shared by its doors: so many answers at once, so many waiting.

The HTTP door and the Gradio API (its MCP tool and ``gradio_client``) run every answer through one
:class:`Capacity`, so a crowd on one door cannot starve the others, and past ``max_waiting``
waiting requests a new one is turned away at once with :class:`ServerBusyError` instead of
queueing without end. It lives on the event loop: the waiting count needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

BUSY_MESSAGE = "The server is full; try again shortly."


class ServerBusyError(RuntimeError):
    """Too many requests are already waiting; the caller should retry shortly."""


class Capacity:
    """At most ``workers`` answers at once (each in a worker thread) and ``max_waiting`` requests waiting."""

    def __init__(self, workers: int, max_waiting: int):
        self.limiter = anyio.CapacityLimiter(workers)
        self.limit = workers + max_waiting  # answers running plus requests waiting for a worker
        self.in_flight = 0

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in a worker thread once one is free; ServerBusyError if too many wait."""
        if self.in_flight >= self.limit:
            raise ServerBusyError(BUSY_MESSAGE)
        self.in_flight += 1
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter)
        finally:
            self.in_flight -= 1
