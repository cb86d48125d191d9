"""The queue's per-session bookkeeping stays bounded: finished sessions are pruned (cxr.sessions)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from cxr.launch import free_port
from cxr.sessions import prune_finished_sessions, session_pruner


def test_only_sessions_with_nothing_pending_are_pruned():
    pending = {"done": set(), "waiting": {"event-1"}, "also done": set()}
    assert prune_finished_sessions(pending) == 2
    assert pending == {"waiting": {"event-1"}}
    assert prune_finished_sessions(pending) == 0


def test_the_pruner_runs_on_the_servers_loop_until_the_lifespan_ends():
    pending: dict[str, set] = {}

    async def serve() -> list[int]:
        sizes = []
        async with session_pruner(lambda: pending, every=0.05):
            for visitor in range(3):
                pending[f"visitor{visitor}"] = set()  # answered: nothing pending
                pending["busy"] = {"event"}
                await asyncio.sleep(0.12)
                sizes.append(len(pending))
        pending["after"] = set()
        await asyncio.sleep(0.12)  # the lifespan is over: nothing prunes any more
        return sizes

    assert asyncio.run(serve()) == [1, 1, 1]
    assert pending == {"busy": {"event"}, "after": set()}


@pytest.fixture
def gradio_server():
    """A small real Gradio app (queued event, API name) behind FastAPI with the pruner, as app.py serves it."""
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    with gr.Blocks(analytics_enabled=False) as demo:
        number = gr.Number()
        gr.Button().click(lambda x: x + 1, number, number, api_name="inc")
    demo.queue()
    server = FastAPI(lifespan=lambda _: session_pruner(lambda: demo._queue.pending_event_ids_session, every=0.2))
    server = gr.mount_gradio_app(server, demo, path="/")
    port = free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(server, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    while not uvicorn_server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", demo
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


def test_new_visitors_leave_no_session_behind_in_the_queue(gradio_server, caplog):
    """Gradio empties each answered session's set of pending events but keeps its key; the pruner drops it."""
    from gradio_client import Client

    url, demo = gradio_server
    caplog.set_level(logging.DEBUG, logger="cxr.sessions")
    for visitor in range(4):  # each a new client: a new Gradio session
        client = Client(url, verbose=False)
        assert client.predict(visitor, api_name="/inc") == visitor + 1
        client.close()
    deadline = time.time() + 10
    while demo._queue.pending_event_ids_session and time.time() < deadline:
        time.sleep(0.1)
    assert demo._queue.pending_event_ids_session == {}
    pruned = sum(record.args[0] for record in caplog.records if record.name == "cxr.sessions")
    assert pruned >= 4  # Gradio had left every visitor's emptied entry: the pruner had work to do
