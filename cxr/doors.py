"""Clients for the server's three doors, each giving the answer record (a dict) for one file.

Used by the benchmark, the soak and the tests, so every measurement and check calls the doors the
same way: :class:`HttpDoor` (one keep-alive connection to ``/v1/predict``), :class:`GradioDoor`
(``gradio_client``), :class:`McpDoor` (the official ``mcp`` client over streamable HTTP, one
session kept open) and :class:`UiDoor` (what the page sends: the upload and its own queued event).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import mimetypes
import uuid
from pathlib import Path

import httpx

MCP_PATH = "gradio_api/mcp/"
TOOL = "screen_chest_xray"


class DoorError(RuntimeError):
    """A door refused or failed a request; the message is the server's."""


class HttpDoor:
    name = "http"

    def __init__(self, url: str, cam: bool = False):
        self.http, self.cam = httpx.Client(base_url=url, timeout=120), cam

    def screen(self, path: Path) -> dict:
        with open(path, "rb") as handle:
            files, fields = {"file": (Path(path).name, handle)}, {"cam": str(self.cam)}
            response = self.http.post("v1/predict", files=files, data=fields)
        if response.status_code != 200:
            raise DoorError(f"{response.status_code}: {response.text[:200]}")
        return response.json()

    def close(self) -> None:
        self.http.close()


class GradioDoor:
    name = "gradio_client"

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False)

    def screen(self, path: Path) -> dict:
        from gradio_client import handle_file

        try:
            return self.client.predict(handle_file(str(path)), api_name="/predict")[2]
        except Exception as error:  # gradio_client's AppError and transport errors alike
            raise DoorError(str(error)) from error

    def close(self) -> None:
        self.client.close()


class UiDoor:
    """What the page itself sends, one new visitor per call: the upload, the Analyze button's event in
    Gradio's queue (its own, private event, not the API's /predict) and the page's render step after it,
    read from the queue's event stream as the browser reads it."""

    name = "ui"

    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=120)
        config = self.http.get("config").json()
        ids = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c["props"].get("elem_id")}
        events = {tuple(d["targets"][0]): d for d in config["dependencies"]}
        self.analyze = events[(ids["analyze"], "click")]
        self.render = events[(ids["answer"], "change")]
        self.model = next(c["props"]["value"] for c in config["components"] if c["id"] == ids["model"])

    def _run(self, event: dict, data: list, session: str) -> list:
        body = {"data": data, "fn_index": event["id"], "trigger_id": event["targets"][0][0], "session_hash": session}
        joined = self.http.post("gradio_api/queue/join", json=body)
        if joined.status_code != 200:
            raise DoorError(f"{joined.status_code}: {joined.text[:200]}")
        with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    if not message.get("success"):
                        raise DoorError(str(message.get("output", {}).get("error") or message)[:300])
                    return message["output"]["data"]
        raise DoorError("the event stream ended without an answer")

    def screen(self, path: Path) -> dict:
        session = uuid.uuid4().hex
        with open(path, "rb") as handle:
            uploaded = self.http.post("gradio_api/upload", files={"files": (Path(path).name, handle)})
        if uploaded.status_code != 200:
            raise DoorError(f"{uploaded.status_code}: {uploaded.text[:200]}")
        file = {"path": uploaded.json()[0], "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}
        record = self._run(self.analyze, [file, self.model], session)[2]
        self._run(self.render, [record], session)  # the page puts the answer into words
        return record

    def close(self) -> None:
        self.http.close()


def data_uri(path: Path) -> str:
    """A file as the base64 data URI the MCP tool accepts (no URL to fetch)."""
    kind = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return f"data:{kind};base64," + base64.b64encode(Path(path).read_bytes()).decode()


def tool_answer(result) -> dict:
    """The answer record from the tool's content: Gradio prints each output as Python text (the overlay
    comes as an image and its URL); the record is the dict that has a decision."""
    texts = [item.text for item in result.content if item.type == "text"]
    if result.isError:
        raise DoorError("".join(texts)[:300] or f"the tool failed without a message: {result!r}"[:300])
    for text in texts:
        with contextlib.suppress(ValueError, SyntaxError):
            output = ast.literal_eval(text)
            if isinstance(output, dict) and "decision" in output:
                return output
    raise DoorError(f"no answer record in the tool's result: {texts!r}"[:300])


class McpDoor:
    """One MCP session kept open on a background event loop (anyio's blocking portal)."""

    name = "mcp"

    def __init__(self, url: str):
        import anyio.from_thread
        from mcp import ClientSession
        from mcp.client.streamable_http import streamablehttp_client

        self._stack = contextlib.ExitStack()
        portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        transport = streamablehttp_client(url + MCP_PATH)
        read, write, _ = self._stack.enter_context(portal.wrap_async_context_manager(transport))
        self.session = self._stack.enter_context(portal.wrap_async_context_manager(ClientSession(read, write)))
        self.portal = portal
        portal.call(self.session.initialize)

    def tools(self) -> list:
        return self.portal.call(self.session.list_tools).tools

    def call(self, arguments: dict):
        return self.portal.call(self.session.call_tool, TOOL, arguments)

    def screen(self, path: Path) -> dict:
        return tool_answer(self.call({"upload": data_uri(path)}))

    def close(self) -> None:
        self._stack.close()


DOORS = {
    "http": HttpDoor,
    "http_cam": lambda url: HttpDoor(url, cam=True),
    "gradio_client": GradioDoor,
    "mcp": McpDoor,
    "ui": UiDoor,
}
