"""Keep the web server's per-visitor bookkeeping bounded: a pruner for the queue's finished sessions.

Gradio's queue (6.31) keeps, for every session that ever joined it, the set of that session's pending
event ids. A delivered answer takes its id out of the set, but the emptied set stays under the
session's key, and every ``gradio_client`` client and every page visit is a new session: one entry
per visitor, for as long as the server runs (measured: docs/operations.md, "Memory per door"). Gradio
also walks that dict to find a session by event id, so it costs time as well as memory.

The pruner drops the empty sets on the server's own event loop, the only thread that touches the
dict, between two of its steps: a session whose set is empty has nothing pending, and the queue
makes a new set when the same session sends again. This module does not import Gradio: the app
hands it the dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)


def prune_finished_sessions(pending: dict[str, set]) -> int:
    """Remove the sessions with no pending event from ``pending`` (session → pending event ids);
    returns how many went. Synchronous, so no other task on the loop sees the dict half-pruned."""
    finished = [session for session, events in pending.items() if not events]
    for session in finished:
        del pending[session]
    return len(finished)


@contextlib.asynccontextmanager
async def session_pruner(pending: Callable[[], dict[str, set]], every: float) -> AsyncIterator[None]:
    """A server lifespan: while it runs, prune ``pending()`` every ``every`` seconds on its event loop."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            if pruned := prune_finished_sessions(pending()):
                log.debug("pruned %d finished queue session(s)", pruned)

    task = asyncio.create_task(loop(), name="session-pruner")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
