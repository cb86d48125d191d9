"""Clients for the server's three doors, each giving the answer record (a dict) for one file.

Used by the benchmark, the soak and the tests, so every measurement and check calls the doors the
same way: :class:`HttpDoor` (one keep-alive connection to ``/v1/predict``), :class:`GradioDoor`
(``gradio_client``) and :class:`McpDoor` (the official ``mcp`` client over streamable HTTP, one
session kept open).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import mimetypes
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


DOORS = {"http": HttpDoor, "http_cam": lambda url: HttpDoor(url, cam=True), "gradio_client": GradioDoor, "mcp": McpDoor}
