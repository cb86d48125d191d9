"""One server, three doors: plain HTTP/JSON (/v1), MCP (/gradio_api/mcp/) and gradio_client, on the
real app started with `python app.py`, giving one answer."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from cxr.doors import DoorError, McpDoor, data_uri, tool_answer
from cxr.hub import DEFAULT_MODEL
from tests.conftest import EXAMPLES, running_app, true_class

pytestmark = pytest.mark.slow  # starts the app


def http_predict(url: str, path, **fields) -> httpx.Response:
    with open(path, "rb") as handle:
        return httpx.post(f"{url}v1/predict", files={"file": (path.name, handle)}, data=fields, timeout=120)


def mcp_call(url: str, arguments: dict) -> tuple[list, object]:
    """The tools the MCP door lists and the result of calling its one tool (official mcp client)."""
    door = McpDoor(url)
    try:
        return door.tools(), door.call(arguments)
    finally:
        door.close()


def test_health_and_models(app_url):
    assert httpx.get(f"{app_url}v1/health", timeout=30).json() == {"status": "ok", "model": DEFAULT_MODEL, "page": True}
    models = httpx.get(f"{app_url}v1/models", timeout=30).json()
    assert models[0]["name"] == DEFAULT_MODEL and models[0]["default"] is True
    assert all(set(m) == {"name", "architecture", "threshold", "sha256", "default"} for m in models)


@pytest.mark.parametrize("example", [EXAMPLES[0], EXAMPLES[-1]], ids=lambda p: p.name)
def test_the_same_answer_through_every_door(app_url, example):
    label, _, gradio_answer = Client(app_url, verbose=False).predict(handle_file(str(example)), api_name="/predict")
    http_answer = http_predict(app_url, example).json()
    with_map = http_predict(app_url, example, cam="true").json()
    _, result = mcp_call(app_url, {"upload": data_uri(example)})
    answers = [gradio_answer, http_answer, with_map, tool_answer(result)]
    assert {a["decision"] for a in answers} == {true_class(example)} == {label["label"]}
    for answer in answers[1:]:
        assert answer["probability"] == pytest.approx(gradio_answer["probability"], abs=1e-6)
    overlay = Image.open(io.BytesIO(base64.b64decode(with_map["overlay_jpeg_base64"])))
    assert overlay.format == "JPEG" and overlay.size == Image.open(example).size
    assert "overlay_jpeg_base64" not in http_answer and http_answer["sha256"] == gradio_answer["sha256"]


def test_a_picture_that_is_not_a_chest_xray_is_not_assessed_on_every_door(app_url, not_xrays):
    photo = not_xrays["photo_temple"]
    assert http_predict(app_url, photo, cam="true").json()["decision"] == "NOT_ASSESSED"
    assert "overlay_jpeg_base64" not in http_predict(app_url, photo, cam="true").json()  # no map for no decision
    _, result = mcp_call(app_url, {"upload": data_uri(photo)})
    assert tool_answer(result)["decision"] == "NOT_ASSESSED"


def test_the_mcp_door_offers_only_the_screening_tool_and_says_what_it_is(app_url):
    tools, _ = mcp_call(app_url, {"upload": data_uri(EXAMPLES[0])})
    assert [tool.name for tool in tools] == ["screen_chest_xray"]
    description = tools[0].description
    for words in ("not a diagnostic device", "ages 1-5", "NOT_ASSESSED", "unusual", "uncertain"):
        assert words in description, words


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254"])
def test_the_mcp_door_refuses_to_fetch_loopback_and_private_addresses(app_url, host):
    port = httpx.URL(app_url).port
    _, result = mcp_call(app_url, {"upload": f"http://{host}:{port}/v1/models"})
    assert result.isError


def test_http_errors_are_json_with_their_status(app_url, tmp_path):
    text = tmp_path / "scan.jpg"
    text.write_text("not an image\n" * 10)
    cases = {
        415: lambda: http_predict(app_url, text),
        404: lambda: http_predict(app_url, EXAMPLES[0], model="no-such-model"),
        422: lambda: httpx.post(f"{app_url}v1/predict", data={"cam": "true"}, timeout=30),
    }
    for status, send in cases.items():
        response = send()
        assert response.status_code == status and set(response.json()) == {"error"}, response.text
    assert "JPEG, PNG" in cases[415]().json()["error"]


def test_an_oversized_upload_is_refused_while_it_is_read(app_url):
    """413 whether the size is declared up front or only discovered while the chunks arrive."""
    big = b"\xff\xd8" + b"\0" * (52 * 2**20)
    declared = httpx.post(f"{app_url}v1/predict", files={"file": ("big.jpg", big)}, timeout=120)
    assert declared.status_code == 413 and "50 MB" in declared.json()["error"]

    boundary = "cxrboundary"

    def chunks():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'.encode()
        for _ in range(60):
            yield b"\0" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    try:
        streamed = httpx.post(f"{app_url}v1/predict", content=chunks(), headers=headers, timeout=120)
        assert streamed.status_code == 413
    except httpx.RemoteProtocolError:
        pass  # the server answered 413 and closed before the client finished sending: refused while reading
    assert httpx.get(f"{app_url}v1/health", timeout=30).status_code == 200


def mcp_outcome(url: str) -> str:
    """ "ok" or the MCP tool's error text, for one call with its own session."""
    door = McpDoor(url)
    try:
        door.screen(EXAMPLES[0])
        return "ok"
    except DoorError as error:
        return str(error)
    finally:
        door.close()


def test_a_full_server_answers_503_with_retry_after_and_mcp_says_so():
    """With room for one waiting request, a burst on HTTP is partly turned away, each with Retry-After, and
    so is a burst on the MCP tool (answered outside Gradio's queue, so bounded by the app's own capacity);
    none fails otherwise."""
    with running_app({"CXR_QUEUE_SIZE": "1"}) as url, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: http_predict(url, EXAMPLES[0], cam="true"), range(8)))
        outcomes = list(pool.map(lambda _: mcp_outcome(url), range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses and set(statuses) == {200, 503}, statuses
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
    refused = [outcome for outcome in outcomes if outcome != "ok"]
    assert "ok" in outcomes and refused and all("server is full" in o for o in refused), outcomes


def test_the_openapi_schema_documents_the_routes(app_url):
    schema = httpx.get(f"{app_url}openapi.json", timeout=30).json()
    assert {"/v1/predict", "/v1/models", "/v1/health"} <= set(schema["paths"])
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["required"] == ["file"] and "example" in body
    assert httpx.get(f"{app_url}docs", timeout=30).status_code == 200
